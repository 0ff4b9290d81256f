import { describe, expect, it } from 'vitest'
import { FLAG_ACK, FLAG_PSH } from '../../../stacks/core/tcp/types.js'
import { Harness, bytes, establish } from './harness.js'

describe('receiving data: delayed ACK (RFC 5681 §4.2, RFC 9293 3.8.6.3)', () => {
  it('one segment is acknowledged after the delayed-ACK timeout, not before', () => {
    const h = new Harness({ delayedAckMs: 40 })
    const peer = establish(h)
    let readable = 0
    peer.conn.events = { onReadable: () => readable++ }
    peer.data(bytes(1000))
    h.none()
    expect(readable).toBe(1)
    h.advance(39)
    h.none()
    h.advance(1)
    const ack = h.one()
    expect(ack.flags).toBe(FLAG_ACK)
    expect(ack.ack).toBe(peer.seq)
    expect(h.layer.counters.delayedAcks).toBe(1)
    const got = new Uint8Array(1000)
    expect(peer.conn.read(got)).toBe(1000)
    expect(got).toEqual(bytes(1000))
  })

  it('"an ACK SHOULD be generated for at least every second full-sized segment"', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.data(bytes(1460))
    h.none()
    peer.data(bytes(1460, 1460))
    const ack = h.one()
    expect(ack.ack).toBe(peer.seq)
  })

  it('out-of-order data is acknowledged at once with a SACK block (RFC 2018 §4); filling the hole too', () => {
    const h = new Harness()
    const peer = establish(h, { sack: true })
    const base = peer.seq
    peer.data(bytes(500, 500), { at: base + 500 })
    let ack = h.one()
    expect(ack.ack).toBe(base)
    expect(ack.options.sack).toEqual([[base + 500, base + 1000]])
    peer.data(bytes(500, 1500), { at: base + 1500 })
    ack = h.one()
    // "The first SACK block ... MUST specify the contiguous block of data containing the segment which triggered this ACK"
    expect(ack.options.sack).toEqual([
      [base + 1500, base + 2000],
      [base + 500, base + 1000],
    ])
    peer.data(bytes(500, 0), { at: base })
    ack = h.one()
    expect(ack.ack).toBe(base + 1000)
    expect(ack.options.sack).toEqual([[base + 1500, base + 2000]])
    peer.data(bytes(500, 1000), { at: base + 1000 })
    ack = h.one()
    expect(ack.ack).toBe(base + 2000)
    expect(ack.options.sack).toBeUndefined()
    const got = new Uint8Array(2000)
    expect(peer.conn.read(got)).toBe(2000)
    expect(got).toEqual(bytes(2000))
  })

  it('a duplicate of old data is acknowledged at once and not delivered twice', () => {
    const h = new Harness()
    const peer = establish(h)
    const base = peer.seq
    peer.data(bytes(100))
    h.advance(100)
    h.take()
    peer.data(bytes(100), { at: base })
    expect(h.one().ack).toBe(base + 100)
    expect(peer.conn.readableBytes).toBe(100)
  })

  it('data beyond the window is not accepted: "an acknowledgment should be sent in reply"', () => {
    const h = new Harness({ receiveBufferSize: 8192 })
    const peer = establish(h)
    peer.data(bytes(100), { at: peer.seq + 9000 })
    const ack = h.one()
    expect(ack.ack).toBe(peer.seq)
    expect(peer.conn.readableBytes).toBe(0)
    expect(h.layer.counters.outOfWindowDrops).toBe(1)
  })

  it('a paused reader closes the window; reading reopens it with a window update', () => {
    const h = new Harness({ receiveBufferSize: 8192 })
    const peer = establish(h)
    for (let i = 0; i < 8192; i += 1024) peer.data(bytes(1024, i))
    h.advance(50)
    const acks = h.take()
    const last = acks[acks.length - 1]
    expect(last.ack).toBe(peer.seq)
    expect(last.window).toBe(0)
    // A zero-window probe: "If the RCV.WND is zero, no segments will be acceptable, but special allowance should be made to accept valid ACKs".
    peer.data(bytes(1, 99), { at: peer.seq })
    const probeAck = h.one()
    expect(probeAck.ack).toBe(peer.seq)
    expect(probeAck.window).toBe(0)
    // Receiver SWS avoidance: reading 100 bytes does not announce a 100-byte window.
    const sink = new Uint8Array(8192)
    peer.conn.read(sink, 0, 100)
    h.none()
    peer.conn.read(sink, 100, 4000)
    const update = h.one()
    expect(update.window).toBe(4100)
    expect(update.ack).toBe(peer.seq)
  })

  it('the advertised window is scaled by our shift once both sides sent the option', () => {
    const h = new Harness()
    const peer = establish(h, { windowScale: 2 })
    peer.data(bytes(10))
    h.advance(100)
    const ack = h.one()
    expect(ack.window).toBe((262144 - 10) >> 3)
    peer.ack(peer.conn.sndNxt, 100)
    expect(peer.conn.sndWnd).toBe(400)
  })
})

describe('sending data', () => {
  it('sends immediately when idle, with PSH on the last segment of a write', () => {
    const h = new Harness()
    const peer = establish(h)
    const iss = peer.conn.iss
    expect(peer.conn.send(bytes(1000))).toBe(1000)
    const s = h.one()
    expect(s.seq).toBe(iss + 1)
    expect(s.flags).toBe(FLAG_ACK | FLAG_PSH)
    expect(s.payload).toEqual(bytes(1000))
    expect(s.ack).toBe(peer.seq)
  })

  it('info() reports the negotiated options, windows and timers', () => {
    const h = new Harness()
    const peer = establish(h, { sack: true, timestamps: true, windowScale: 7 })
    peer.conn.send(bytes(5000))
    const i = peer.conn.info()
    expect(i.state).toBe('ESTABLISHED')
    expect(i.sack).toBe(true)
    expect(i.timestamps).toBe(true)
    expect(i.sendWindowShift).toBe(7)
    expect(i.sndMss).toBe(1448)
    expect(i.cwnd).toBe(14480)
    // Three full segments; Nagle holds the 656-byte tail while they are unacknowledged.
    expect(i.bytesInFlight).toBe(3 * 1448)
    expect(i.unsentBytes).toBe(656)
    expect(i.congestionControl).toBe('newreno')
  })

  it('segments from or to port 0 are dropped and counted', () => {
    const h = new Harness()
    h.inject({ seq: 1, flags: 0x02, srcPort: 0 })
    h.none()
    expect(h.layer.counters.inErrs).toBe(1)
  })

  it('initial window of 10 segments (RFC 6928), then slow start grows it per ACK', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.send(bytes(100_000))
    const first = h.take()
    expect(first.length).toBe(10)
    expect(first.every((s) => s.payload.length === 1460)).toBe(true)
    expect(peer.conn.cc.cwnd).toBe(14600)
    peer.ack(first[1].seq + 1460)
    // cwnd += min(N, SMSS) → 16060: 2 acked + 2 more allowed → 3 new segments.
    expect(peer.conn.cc.cwnd).toBe(16060)
    expect(h.take().length).toBe(3)
  })

  it('Nagle: a small write waits while data is unacknowledged; setNoDelay sends it', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.send(bytes(100))
    expect(h.one().payload.length).toBe(100)
    peer.conn.send(bytes(50))
    h.none()
    peer.ack(peer.conn.sndNxt)
    const next = h.one()
    expect(next.payload.length).toBe(50)
    peer.conn.setNoDelay(true)
    peer.conn.send(bytes(10))
    expect(h.one().payload.length).toBe(10)
  })

  it('send(..., more) waits for the next poll: writes of one turn leave as one segment (MSG_MORE / autocork)', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.setNoDelay(true)
    const iss = peer.conn.iss
    expect(peer.conn.send(bytes(168), 0, 168, true)).toBe(168)
    expect(peer.conn.send(bytes(1024, 168), 0, 1024, true)).toBe(1024)
    h.none()
    // Queued pushes are due at once: a shell arms its timer for now.
    expect(h.layer.nextTimeout()).toBeLessThanOrEqual(h.now)
    h.layer.poll(h.now)
    const s = h.one()
    expect(s.seq).toBe(iss + 1)
    expect(s.flags).toBe(FLAG_ACK | FLAG_PSH)
    expect(s.payload).toEqual(Uint8Array.from([...bytes(168), ...bytes(1024, 168)]))
    // Nothing left queued: the next poll sends nothing, and the layer has no timer due at once.
    h.layer.poll(h.now)
    h.none()
    expect(h.layer.nextTimeout()).toBeGreaterThan(h.now)
  })

  it('data queued with more leaves early when something else flushes (an ACK, a plain send, shutdownWrite)', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.send(bytes(100), 0, 100, true)
    peer.conn.send(bytes(50, 100))
    expect(h.one().payload).toEqual(bytes(150))
    peer.ack(peer.conn.sndNxt)
    h.none()
    peer.conn.send(bytes(20), 0, 20, true)
    peer.conn.shutdownWrite()
    const last = h.one()
    expect(last.payload.length).toBe(20)
    expect(last.flags & 0x01).toBe(0x01)
    // The push the layer still holds finds nothing to send.
    h.layer.poll(h.now)
    h.none()
  })

  it('the Nagle-held tail leaves with the FIN at shutdownWrite', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.send(bytes(3000))
    expect(h.take().map((s) => s.payload.length)).toEqual([1460, 1460])
    peer.conn.shutdownWrite()
    const last = h.one()
    expect(last.payload.length).toBe(80)
    expect(last.flags & 0x01).toBe(0x01)
  })

  it('sender SWS avoidance: no runt segment into a small remaining window', () => {
    const h = new Harness()
    const peer = establish(h, { window: 3000 })
    peer.conn.send(bytes(10_000))
    const sent = h.take()
    // Two full segments fit in 3000; an 80-byte remainder is neither a full segment nor half the window.
    expect(sent.map((s) => s.payload.length)).toEqual([1460, 1460])
  })

  it('backpressure: send() takes what fits; onWritable fires when ACKs free room', () => {
    const h = new Harness({ sendBufferSize: 4096 })
    const peer = establish(h)
    let writable = 0
    peer.conn.events = { onWritable: () => writable++ }
    expect(peer.conn.send(bytes(10_000))).toBe(4096)
    expect(peer.conn.writableBytes).toBe(0)
    const sent = h.take()
    peer.ack(sent[0].seq + 1460)
    expect(writable).toBe(1)
    expect(peer.conn.writableBytes).toBe(1460)
  })

  it('zero window: the persist timer probes with one byte, backing off, until the window opens (RFC 9293 3.8.6.1)', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.send(bytes(1000))
    const first = h.one()
    peer.ack(first.seq + 1000, 0)
    peer.conn.send(bytes(500, 1000))
    h.none()
    // RTO is 200 ms here (a 0 ms RTT sample, floored by minRtoMs): probes at
    // 200, then backing off 400, 800 ms after each other.
    const start = h.now
    const probeTimes: number[] = []
    for (let step = 0; step < 1400; step += 10) {
      h.advance(10)
      for (const probe of h.take()) {
        expect(probe.payload).toEqual(bytes(1, 1000))
        expect(probe.seq).toBe(first.seq + 1000)
        probeTimes.push(h.now - start)
        // The peer still has no room: it acknowledges without taking the byte.
        peer.ack(first.seq + 1000, 0)
      }
    }
    expect(probeTimes).toEqual([200, 600, 1400])
    expect(h.layer.counters.persistProbes).toBe(3)
    expect(peer.conn.stateName).toBe('ESTABLISHED')
    // The window opens: all 500 bytes go.
    peer.ack(first.seq + 1000, 10000)
    const resumed = h.one()
    expect(resumed.seq).toBe(first.seq + 1000)
    expect(resumed.payload).toEqual(bytes(500, 1000))
  })

  it('a write after shutdownWrite is EPIPE', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.shutdownWrite()
    expect(() => peer.conn.send(bytes(1))).toThrow(expect.objectContaining({ code: 'EPIPE' }))
  })

  it('PMTU drops shrink the segments (RFC 1191/8201)', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.send(bytes(3000))
    h.take()
    h.layer.icmpError(h.local, h.localPort, h.remote, h.remotePort, 'packet-too-big', 'EHOSTUNREACH', 1280, h.now)
    const resent = h.take()
    expect(peer.conn.sndMss).toBe(1240)
    expect(resent[0].payload.length).toBe(1240)
    expect(resent[0].seq).toBe(peer.conn.iss + 1)
  })
})

describe('operator tunables (TcpSettings: mss, initial_window, no_delay)', () => {
  it('mss caps the MSS option we announce and the segments we send, below the peer\'s', () => {
    const h = new Harness({ mss: 1000 })
    h.layer.connect({ local: h.local, remote: h.remote, remotePort: h.remotePort, localPort: h.localPort })
    expect(h.one().options.mss).toBe(1000)
    const h2 = new Harness({ mss: 1000 })
    const peer = establish(h2, { mss: 1460, window: 65535 })
    peer.conn.send(bytes(3000))
    const sizes = h2.take().map((s) => s.payload.length)
    expect(sizes).toEqual([1000, 1000, 1000])
  })

  it('initialWindow sets the first flight in segments (RFC 6928\'s 10 otherwise)', () => {
    const flight = (config: { initialWindow?: number }): number => {
      const h = new Harness(config)
      const peer = establish(h, { mss: 1000, window: 65535 })
      peer.conn.send(bytes(30_000))
      return h.take().length
    }
    expect(flight({})).toBe(10)
    expect(flight({ initialWindow: 4 })).toBe(4)
    expect(flight({ initialWindow: 20 })).toBe(20)
  })

  it('noDelay is the default of new connections: a second small write does not wait for the first ACK', () => {
    const sent = (noDelay: boolean): number => {
      const h = new Harness({ noDelay })
      const peer = establish(h)
      peer.conn.send(bytes(100))
      peer.conn.send(bytes(100, 100))
      return h.take().length
    }
    expect(sent(false)).toBe(1) // Nagle: the second waits for the first's ACK
    expect(sent(true)).toBe(2)
  })
})
