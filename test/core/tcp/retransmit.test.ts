import { describe, expect, it } from 'vitest'
import { FLAG_ACK } from '../../../stacks/core/tcp/types.js'
import { Harness, bytes, establish } from './harness.js'

describe('retransmission timer (RFC 6298)', () => {
  it('retransmits the earliest unacknowledged segment at RTO and backs off (5.4, 5.5)', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    // No timestamps, SYN timed at 0 ms: the handshake gave a 0 ms sample → RTO = minRtoMs.
    expect(c.rto).toBe(200)
    c.send(bytes(3 * 1460))
    const first = h.take()
    expect(first.length).toBe(3)
    const start = h.now
    const times: number[] = []
    for (let i = 0; i < 200; i++) {
      h.advance(10)
      for (const s of h.take()) {
        expect(s.seq).toBe(first[0].seq)
        expect(s.payload.length).toBe(1460)
        times.push(h.now - start)
      }
    }
    expect(times).toEqual([200, 600, 1400])
    // RFC 5681 §3.1: after a timeout cwnd is one segment.
    expect(c.cc.cwnd).toBe(c.sndMss)
    expect(h.layer.counters.rtoTimeouts).toBe(3)
  })

  it("Karn's rule: an ACK for a retransmitted segment gives no RTT sample", () => {
    const h = new Harness({ initialRtoMs: 1000 })
    const peer = establish(h)
    const c = peer.conn
    const srttBefore = c.srtt
    c.send(bytes(100))
    h.take()
    h.advance(250)
    expect(h.take().length).toBe(1)
    h.advance(100)
    peer.ack(c.sndNxt)
    expect(c.srtt).toBe(srttBefore)
  })

  it('an RTT sample updates SRTT and RTTVAR (2.3) and the RTO', () => {
    const h = new Harness({ minRtoMs: 10 })
    const peer = establish(h)
    const c = peer.conn
    c.send(bytes(100))
    h.take()
    h.now += 80
    peer.ack(c.sndNxt)
    // First sample of the handshake was 0: SRTT=0, RTTVAR=0; now R=80:
    // RTTVAR = 3/4*0 + 1/4*80 = 20, SRTT = 7/8*0 + 1/8*80 = 10, RTO = 10 + 4*20 = 90.
    expect(c.rttvar).toBe(20)
    expect(c.srtt).toBe(10)
    expect(c.rto).toBe(90)
  })

  it('timestamps give RTT samples (RFC 7323 §4 RTTM)', () => {
    const h = new Harness({ minRtoMs: 10 })
    const peer = establish(h, { timestamps: true })
    const c = peer.conn
    c.send(bytes(100))
    peer.saw(h.take())
    h.now += 40
    peer.ack(c.sndNxt)
    expect(c.srtt).toBeGreaterThan(0)
  })

  it('gives up with ETIMEDOUT after maxRetransmits', () => {
    const h = new Harness({ maxRetransmits: 3 })
    const peer = establish(h)
    const errors: string[] = []
    peer.conn.events = { onError: (e) => errors.push(e) }
    peer.conn.send(bytes(10))
    h.advance(60_000)
    expect(errors).toEqual(['ETIMEDOUT'])
    expect(h.take().length).toBe(4)
    expect(h.layer.connectionCount).toBe(0)
  })

  it('the user timeout ends a connection whose data stays unacknowledged', () => {
    const h = new Harness({ userTimeoutMs: 1000 })
    const peer = establish(h)
    const errors: string[] = []
    peer.conn.events = { onError: (e) => errors.push(e) }
    peer.conn.send(bytes(10))
    h.advance(1000)
    expect(errors).toEqual([])
    h.advance(1000)
    expect(errors).toEqual(['ETIMEDOUT'])
  })
})

describe('fast retransmit and NewReno (RFC 5681 §3.2, RFC 6582, RFC 3042)', () => {
  it('limited transmit on the first two duplicate ACKs, fast retransmit on the third, partial ACK, full ACK', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    const mss = c.sndMss
    c.send(bytes(40 * mss))
    const win = h.take()
    expect(win.length).toBe(10)
    const base = win[0].seq
    // Segment 0 is lost; the peer ACKs base for each of segments 1..9.
    peer.ack(base)
    // RFC 3042: "a TCP sender SHOULD send a new data segment in response to each of the first two duplicate acknowledgments".
    let out = h.take()
    expect(out.length).toBe(1)
    expect(out[0].seq).toBe(base + 10 * mss)
    peer.ack(base)
    out = h.take()
    expect(out.length).toBe(1)
    expect(out[0].seq).toBe(base + 11 * mss)
    peer.ack(base)
    out = h.take()
    // Third duplicate: retransmit the first unacknowledged segment.
    expect(out[0].seq).toBe(base)
    expect(c.inRecovery).toBe(true)
    expect(c.recover).toBe(base + 12 * mss)
    // ssthresh = max(FlightSize/2, 2*SMSS) = 6 segments; cwnd = ssthresh + 3*SMSS.
    expect(c.cc.ssthresh).toBe(6 * mss)
    expect(c.cc.cwnd).toBe(9 * mss)
    expect(h.layer.counters.fastRetransmits).toBe(1)
    // Partial ACK up to segment 5 (segment 5 lost too): retransmit it at once.
    peer.ack(base + 5 * mss)
    out = h.take()
    expect(out[0].seq).toBe(base + 5 * mss)
    expect(h.layer.counters.partialAcks).toBe(1)
    // Full ACK of recover ends recovery: cwnd = min(ssthresh, max(FlightSize, SMSS) + SMSS).
    peer.ack(base + 12 * mss)
    expect(c.inRecovery).toBe(false)
    expect(c.cc.cwnd).toBeLessThanOrEqual(6 * mss)
  })

  it('RFC 5827 early retransmit: with 3 segments outstanding and nothing unsent, 2 duplicate ACKs suffice', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    const mss = c.sndMss
    c.send(bytes(3 * mss))
    const win = h.take()
    expect(win.length).toBe(3)
    peer.ack(win[0].seq)
    h.none()
    peer.ack(win[0].seq)
    const out = h.one()
    expect(out.seq).toBe(win[0].seq)
    expect(c.inRecovery).toBe(true)
  })

  it('with SACK, holes below the highest SACKed byte are retransmitted during recovery', () => {
    const h = new Harness()
    const peer = establish(h, { sack: true })
    const c = peer.conn
    const mss = c.sndMss
    c.send(bytes(10 * mss))
    const win = h.take()
    const base = win[0].seq
    // Segments 0 and 2 lost; 1, 3, 4 arrive.
    const sackOf = (...ranges: [number, number][]) => ({ sack: ranges.map(([a, b]) => [base + a * mss, base + b * mss] as [number, number]) })
    peer.ack(base, 65535, sackOf([1, 2]))
    peer.ack(base, 65535, sackOf([3, 4], [1, 2]))
    h.take()
    peer.ack(base, 65535, sackOf([3, 5], [1, 2]))
    const out = h.take()
    const seqs = out.map((s) => (s.seq - base) / mss)
    // Fast retransmit of segment 0, and the hole at segment 2 in the same round.
    expect(seqs).toContain(0)
    expect(seqs).toContain(2)
    expect(h.layer.counters.sackRetransmits).toBeGreaterThanOrEqual(1)
    for (const s of out) expect(s.flags & FLAG_ACK).toBe(FLAG_ACK)
  })
})
