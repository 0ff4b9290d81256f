import { describe, expect, it } from 'vitest'
import { TcpState } from '../../../stacks/core/tcp/connection.js'
import { FLAG_ACK, FLAG_FIN, FLAG_PSH, FLAG_RST, FLAG_SYN } from '../../../stacks/core/tcp/types.js'
import { Harness, PEER_ISS, bytes, establish } from './harness.js'

describe('closing (RFC 9293 3.6)', () => {
  it('active close: FIN-WAIT-1 → FIN-WAIT-2 → TIME-WAIT → CLOSED after 2*MSL', () => {
    const h = new Harness({ mslMs: 1000 })
    const peer = establish(h)
    const c = peer.conn
    let closed = 0
    let peerClosed = 0
    c.events = { onClosed: () => closed++, onPeerClosed: () => peerClosed++ }
    c.send(bytes(10))
    c.shutdownWrite()
    const segs = h.take()
    // Data and FIN may share a segment: "FIN after the queued data".
    const fin = segs[segs.length - 1]
    expect(fin.flags & FLAG_FIN).toBe(FLAG_FIN)
    expect(fin.seq + fin.payload.length).toBe(c.iss + 1 + 10)
    expect(c.state).toBe(TcpState.FinWait1)
    peer.ack(c.iss + 12)
    expect(c.state).toBe(TcpState.FinWait2)
    h.none()
    peer.fin()
    const ack = h.one()
    expect(ack.flags).toBe(FLAG_ACK)
    expect(ack.ack).toBe(PEER_ISS + 2)
    expect(c.state).toBe(TcpState.TimeWait)
    expect(peerClosed).toBe(1)
    expect(closed).toBe(1)
    expect(h.layer.connectionCount).toBe(1)
    h.advance(1999)
    expect(c.state).toBe(TcpState.TimeWait)
    h.advance(1)
    expect(c.state).toBe(TcpState.Closed)
    expect(h.layer.connectionCount).toBe(0)
    expect(h.layer.counters.currEstab).toBe(0)
  })

  it('passive close with half-close: CLOSE-WAIT still sends data, then LAST-ACK → CLOSED', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    let peerClosed = 0
    c.events = { onPeerClosed: () => peerClosed++ }
    peer.fin()
    // The FIN is acknowledged at once.
    expect(h.one().ack).toBe(PEER_ISS + 2)
    expect(c.state).toBe(TcpState.CloseWait)
    expect(peerClosed).toBe(1)
    c.send(bytes(300))
    const data = h.one()
    expect(data.payload.length).toBe(300)
    peer.ack(data.seq + 300)
    c.shutdownWrite()
    const fin = h.one()
    expect(fin.flags).toBe(FLAG_FIN | FLAG_ACK)
    expect(c.state).toBe(TcpState.LastAck)
    peer.ack(fin.seq + 1)
    expect(c.state).toBe(TcpState.Closed)
    expect(h.layer.connectionCount).toBe(0)
  })

  it('simultaneous close: FIN-WAIT-1 + FIN → CLOSING → TIME-WAIT', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    c.shutdownWrite()
    const fin = h.one()
    // The peer's FIN crosses ours: it does not acknowledge our FIN.
    peer.fin(fin.seq)
    expect(c.state).toBe(TcpState.Closing)
    expect(h.one().ack).toBe(PEER_ISS + 2)
    peer.ack(fin.seq + 1)
    expect(c.state).toBe(TcpState.TimeWait)
  })

  it('FIN-WAIT-1 + FIN,ACK of our FIN → TIME-WAIT directly', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    c.shutdownWrite()
    const fin = h.one()
    peer.fin(fin.seq + 1)
    expect(c.state).toBe(TcpState.TimeWait)
  })

  it('a FIN ahead of missing data waits for the data (reassembly)', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    const base = peer.seq
    peer.data(bytes(100, 100), { at: base + 100, fin: true })
    expect(c.state).toBe(TcpState.Established)
    peer.data(bytes(100), { at: base })
    expect(c.state).toBe(TcpState.CloseWait)
    const acks = h.take()
    expect(acks[acks.length - 1].ack).toBe(base + 201)
    expect(c.readableBytes).toBe(200)
  })

  it('TIME-WAIT: a retransmitted FIN is acknowledged and restarts the 2 MSL timer', () => {
    const h = new Harness({ mslMs: 1000 })
    const peer = establish(h)
    const c = peer.conn
    c.shutdownWrite()
    const fin = h.one()
    peer.fin(fin.seq + 1)
    h.take()
    h.advance(1500)
    h.inject({ seq: PEER_ISS + 1, ack: fin.seq + 1, flags: FLAG_FIN | FLAG_ACK })
    expect(h.one().ack).toBe(PEER_ISS + 2)
    h.advance(1500)
    expect(c.state).toBe(TcpState.TimeWait)
    h.advance(500)
    expect(c.state).toBe(TcpState.Closed)
  })

  it('TIME-WAIT ignores RST (RFC 1337)', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    c.shutdownWrite()
    const fin = h.one()
    peer.fin(fin.seq + 1)
    h.take()
    h.inject({ seq: PEER_ISS + 2, flags: FLAG_RST })
    expect(c.state).toBe(TcpState.TimeWait)
    expect(h.layer.counters.rfc1337Ignored).toBe(1)
  })

  it('a new SYN with a higher sequence number may reopen a TIME-WAIT 4-tuple (RFC 1122 4.2.2.13)', () => {
    const h = new Harness()
    let accepted = 0
    const peer = establish(h)
    const c = peer.conn
    h.layer.listen(null, h.localPort, 4, () => accepted++)
    c.shutdownWrite()
    const fin = h.one()
    peer.fin(fin.seq + 1)
    h.take()
    h.inject({ seq: PEER_ISS + 100_000, flags: FLAG_SYN })
    const synAck = h.one()
    expect(synAck.flags).toBe(FLAG_SYN | FLAG_ACK)
    expect(synAck.ack).toBe(PEER_ISS + 100_001)
    expect(c.state).toBe(TcpState.Closed)
    expect(h.layer.counters.timeWaitReused).toBe(1)
  })

  it('without a listener, a SYN in TIME-WAIT is answered inside TIME-WAIT (challenge ACK), not by ending it', () => {
    const h = new Harness()
    const peer = establish(h)
    const c = peer.conn
    c.shutdownWrite()
    const fin = h.one()
    peer.fin(fin.seq + 1)
    h.take()
    h.inject({ seq: PEER_ISS + 100_000, flags: FLAG_SYN })
    const reply = h.one()
    expect(reply.flags).toBe(FLAG_ACK)
    expect(reply.ack).toBe(PEER_ISS + 2)
    expect(c.state).toBe(TcpState.TimeWait)
  })

  it('abort() sends <SEQ=SND.NXT><CTL=RST> and closes', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.conn.abort()
    const rst = h.one()
    expect(rst.flags & FLAG_RST).toBe(FLAG_RST)
    expect(rst.seq).toBe(peer.conn.sndNxt)
    expect(h.layer.connectionCount).toBe(0)
  })
})

describe('RST and SYN validation (RFC 5961)', () => {
  it('"If the RST bit is set and the sequence number exactly matches the next expected sequence number (RCV.NXT), then TCP MUST reset the connection"', () => {
    const h = new Harness()
    const peer = establish(h)
    const errors: string[] = []
    peer.conn.events = { onError: (e) => errors.push(e) }
    h.inject({ seq: peer.seq, flags: FLAG_RST })
    expect(errors).toEqual(['ECONNRESET'])
    expect(peer.conn.state).toBe(TcpState.Closed)
    expect(h.layer.counters.estabResets).toBe(1)
  })

  it('an in-window RST that does not match exactly gets a challenge ACK and changes nothing', () => {
    const h = new Harness()
    const peer = establish(h)
    h.inject({ seq: peer.seq + 1000, flags: FLAG_RST })
    const ack = h.one()
    expect(ack.flags).toBe(FLAG_ACK)
    expect(ack.seq).toBe(peer.conn.sndNxt)
    expect(ack.ack).toBe(peer.seq)
    expect(peer.conn.state).toBe(TcpState.Established)
    expect(h.layer.counters.challengeAcks).toBe(1)
  })

  it('an out-of-window RST is dropped silently', () => {
    const h = new Harness()
    const peer = establish(h)
    h.inject({ seq: peer.seq + 10_000_000, flags: FLAG_RST })
    h.none()
    expect(peer.conn.state).toBe(TcpState.Established)
  })

  it('a SYN in a synchronized state gets a challenge ACK "regardless of the sequence number"; the budget is rate limited', () => {
    const h = new Harness({ challengeAckLimit: 2 })
    const peer = establish(h)
    for (const seq of [peer.seq, peer.seq + 5, 12345]) h.inject({ seq, flags: FLAG_SYN })
    const acks = h.take()
    expect(acks.length).toBe(2)
    for (const a of acks) {
      expect(a.flags).toBe(FLAG_ACK)
      expect(a.ack).toBe(peer.seq)
    }
    expect(h.layer.counters.challengeAcksSuppressed).toBe(1)
    expect(peer.conn.state).toBe(TcpState.Established)
    h.advance(1000)
    h.take()
    h.inject({ seq: peer.seq, flags: FLAG_SYN })
    expect(h.one().flags).toBe(FLAG_ACK)
  })

  it('"If the ACK acks something not yet sent (SEG.ACK > SND.NXT) then send an ACK, drop the segment"', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.data(bytes(10), { ack: peer.conn.sndNxt + 5000 })
    const ack = h.one()
    expect(ack.ack).toBe(peer.seq - 10)
    expect(peer.conn.readableBytes).toBe(0)
  })

  it('RFC 5961 §5: an ACK older than SND.UNA - MAX.SND.WND is challenged', () => {
    const h = new Harness()
    const peer = establish(h, { window: 1000 })
    h.take()
    peer.ack(peer.conn.sndUna - 5000)
    expect(h.one().flags).toBe(FLAG_ACK)
    expect(h.layer.counters.challengeAcks).toBe(1)
  })

  it('out-of-window pure ACKs get at most one ACK per 500 ms (no ACK ping-pong); data is always answered', () => {
    const h = new Harness()
    const peer = establish(h)
    h.inject({ seq: peer.seq - 100_000, ack: peer.conn.sndNxt, flags: FLAG_ACK })
    expect(h.one().ack).toBe(peer.seq)
    h.inject({ seq: peer.seq - 100_000, ack: peer.conn.sndNxt, flags: FLAG_ACK })
    h.none()
    expect(h.layer.counters.outOfWindowAcksSuppressed).toBe(1)
    peer.data(bytes(10), { at: peer.seq - 100_000 })
    expect(h.one().ack).toBe(peer.seq)
    h.now += 500
    h.inject({ seq: peer.seq - 100_000, ack: peer.conn.sndNxt, flags: FLAG_ACK })
    expect(h.one().ack).toBe(peer.seq)
  })

  it('out-of-window data is acknowledged and dropped', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.data(bytes(10), { at: peer.seq - 100_000 })
    expect(h.one().ack).toBe(peer.seq)
  })

  it('PAWS (RFC 7323 §5.3): an older TSval is dropped and acknowledged', () => {
    const h = new Harness()
    const peer = establish(h, { timestamps: true })
    peer.data(bytes(10))
    h.advance(100)
    peer.saw(h.take())
    h.inject({ seq: peer.seq, ack: peer.conn.sndNxt, flags: FLAG_ACK | FLAG_PSH, payload: bytes(10), options: { timestamp: [50, 0] } })
    const ack = h.one()
    expect(ack.ack).toBe(peer.seq)
    expect(peer.conn.readableBytes).toBe(10)
    expect(h.layer.counters.pawsDrops).toBe(1)
  })
})

describe('keepalive (RFC 9293 3.8.4, RFC 1122 4.2.3.6)', () => {
  it('probes with SEG.SEQ = SND.NXT-1 after the idle time and times out after `count` unanswered probes', () => {
    const h = new Harness()
    const peer = establish(h)
    const errors: string[] = []
    peer.conn.events = { onError: (e) => errors.push(e) }
    peer.conn.setKeepAlive(true, { idleMs: 1000, intervalMs: 100, count: 3 })
    h.advance(999)
    h.none()
    h.advance(1)
    const probe = h.one()
    expect(probe.seq).toBe(peer.conn.sndNxt - 1)
    expect(probe.payload.length).toBe(0)
    // An answer resets the count and the idle time.
    peer.ack(peer.conn.sndNxt)
    h.advance(999)
    h.none()
    h.advance(1 + 100 + 100)
    expect(h.take().length).toBe(3)
    h.advance(100)
    expect(errors).toEqual(['ETIMEDOUT'])
    expect(h.layer.connectionCount).toBe(0)
  })
})
