// The state transitions the other files do not walk through (RFC 9293 Figure 5).
import { describe, expect, it } from 'vitest'
import { TcpState } from '../../../stacks/core/tcp/connection.js'
import { FLAG_ACK, FLAG_FIN, FLAG_RST, FLAG_SYN } from '../../../stacks/core/tcp/types.js'
import { Harness, PEER_ISS, bytes, establish } from './harness.js'

describe('remaining state transitions', () => {
  it('SYN-RECEIVED (passive) + RST → the connection is dropped and the listener takes new SYNs (RFC 9293: "return this connection to LISTEN")', () => {
    const h = new Harness()
    const listener = h.layer.listen(null, h.localPort, 1, () => {})
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN })
    h.one()
    expect(listener.pending).toBe(1)
    h.inject({ seq: PEER_ISS + 1, flags: FLAG_RST })
    h.none()
    expect(h.layer.connectionCount).toBe(0)
    expect(listener.pending).toBe(0)
    h.inject({ seq: PEER_ISS + 10, flags: FLAG_SYN })
    expect(h.one().flags).toBe(FLAG_SYN | FLAG_ACK)
  })

  it('SYN-RECEIVED + shutdownWrite: the FIN waits for ESTABLISHED, then FIN-WAIT-1', () => {
    const h = new Harness()
    const conn = h.layer.connect({ local: h.local, remote: h.remote, remotePort: h.remotePort, localPort: h.localPort })
    h.take()
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN })
    h.take()
    expect(conn.state).toBe(TcpState.SynReceived)
    conn.shutdownWrite()
    h.none()
    h.inject({ seq: PEER_ISS + 1, ack: conn.iss + 1, flags: FLAG_ACK })
    const fin = h.one()
    expect(fin.flags).toBe(FLAG_FIN | FLAG_ACK)
    expect(fin.seq).toBe(conn.iss + 1)
    expect(conn.state).toBe(TcpState.FinWait1)
  })

  it('SYN-SENT: shutdownWrite or abort closes without sending anything', () => {
    const h = new Harness()
    const a = h.layer.connect({ local: h.local, remote: h.remote, remotePort: 80, localPort: 1111 })
    const b = h.layer.connect({ local: h.local, remote: h.remote, remotePort: 80, localPort: 2222 })
    h.take()
    a.shutdownWrite()
    b.abort()
    h.none()
    expect(a.state).toBe(TcpState.Closed)
    expect(b.state).toBe(TcpState.Closed)
    expect(h.layer.connectionCount).toBe(0)
  })

  it('CLOSE-WAIT + RST → ECONNRESET; LAST-ACK + RST → CLOSED without an error', () => {
    const h = new Harness()
    const peer = establish(h)
    const errors: string[] = []
    peer.conn.events = { onError: (e) => errors.push(e) }
    peer.fin()
    h.take()
    h.inject({ seq: peer.seq, flags: FLAG_RST })
    expect(errors).toEqual(['ECONNRESET'])

    const h2 = new Harness()
    const p2 = establish(h2)
    const errors2: string[] = []
    p2.conn.events = { onError: (e) => errors2.push(e) }
    p2.fin()
    p2.conn.shutdownWrite()
    h2.take()
    expect(p2.conn.state).toBe(TcpState.LastAck)
    h2.inject({ seq: p2.seq, flags: FLAG_RST })
    expect(p2.conn.state).toBe(TcpState.Closed)
    expect(errors2).toEqual([])
  })

  it('data after the peer FIN is ignored ("This should not occur since a FIN has been received")', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.fin()
    h.take()
    peer.data(bytes(10))
    expect(peer.conn.readableBytes).toBe(0)
  })

  it('an ACK piggybacks on data: no separate delayed ACK', () => {
    const h = new Harness()
    const peer = establish(h)
    peer.data(bytes(100))
    peer.conn.send(bytes(50))
    const s = h.one()
    expect(s.ack).toBe(peer.seq)
    expect(s.payload.length).toBe(50)
    // Past the 40 ms delayed-ACK timeout, before the 200 ms RTO.
    h.advance(150)
    h.none()
  })

  it('RFC 6298 5.7: after a SYN timeout the RTO starts data transmission at 3 s', () => {
    const h = new Harness()
    const conn = h.layer.connect({ local: h.local, remote: h.remote, remotePort: h.remotePort, localPort: h.localPort })
    h.take()
    h.advance(1000)
    expect(h.take().length).toBe(1)
    h.inject({ seq: PEER_ISS, ack: conn.iss + 1, flags: FLAG_SYN | FLAG_ACK })
    expect(conn.state).toBe(TcpState.Established)
    expect(conn.rto).toBe(3000)
  })
})
