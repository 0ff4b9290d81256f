import { describe, expect, it } from 'vitest'
import { TcpState } from '../../../stacks/core/tcp/connection.js'
import { FLAG_ACK, FLAG_RST, FLAG_SYN, TcpError } from '../../../stacks/core/tcp/types.js'
import { Harness, LOCAL, LOCAL6, REMOTE, REMOTE6 } from './harness.js'

const PEER_ISS = 5000
const PEER_TS = 777

function activeOpen(h: Harness) {
  const conn = h.layer.connect({ local: h.local, remote: h.remote, remotePort: h.remotePort, localPort: h.localPort })
  const syn = h.one()
  return { conn, syn }
}

describe('three-way handshake (RFC 9293 3.5)', () => {
  it('active open sends SYN with MSS, SACK-permitted, timestamps and window scale, and no data', () => {
    const h = new Harness()
    const { conn, syn } = activeOpen(h)
    expect(conn.state).toBe(TcpState.SynSent)
    expect(syn.flags).toBe(FLAG_SYN)
    expect(syn.seq).toBe(conn.iss)
    expect(syn.payload.length).toBe(0)
    // RFC 6691: MSS = MTU - 20 (IPv4) - 20 (TCP).
    expect(syn.options.mss).toBe(1460)
    expect(syn.options.sackPermitted).toBe(true)
    expect(syn.options.timestamp?.[1]).toBe(0)
    // 256 KiB buffer: shift 3 so that 262144 >> 3 fits in 16 bits.
    expect(syn.options.windowScale).toBe(3)
    // RFC 7323 §2.2: "The window field in a segment where the SYN bit is set ... MUST NOT be scaled".
    expect(syn.window).toBe(65535)
  })

  it('SYN-SENT + SYN,ACK → ESTABLISHED with an ACK <SEQ=SND.NXT><ACK=RCV.NXT>', () => {
    const h = new Harness()
    let connected = 0
    const { conn, syn } = activeOpen(h)
    conn.events = { onConnected: () => connected++ }
    h.now += 30
    h.inject({ seq: PEER_ISS, ack: conn.iss + 1, flags: FLAG_SYN | FLAG_ACK, window: 1000, options: { mss: 1400, windowScale: 2, sackPermitted: true, timestamp: [PEER_TS, syn.options.timestamp![0]] } })
    const ack = h.one()
    expect(conn.state).toBe(TcpState.Established)
    expect(connected).toBe(1)
    expect(ack.flags).toBe(FLAG_ACK)
    expect(ack.seq).toBe(conn.iss + 1)
    expect(ack.ack).toBe(PEER_ISS + 1)
    expect(ack.options.timestamp?.[1]).toBe(PEER_TS)
    // The peer's window is scaled by its shift from now on; MSS: min(1400, 1460) - 12 (timestamps).
    expect(conn.sndWnd).toBe(1000)
    expect(conn.sndMss).toBe(1388)
    expect(h.layer.counters.activeOpens).toBe(1)
    expect(h.layer.counters.currEstab).toBe(1)
    // RFC 7323 RTTM: the echoed timestamp gives a 30 ms sample; RTO = max(minRto 200, 30 + 4*15).
    expect(conn.srtt).toBe(30)
    expect(conn.rto).toBe(200)
  })

  it('options the peer did not offer stay off (RFC 7323 §2.2, RFC 2018 §2)', () => {
    const h = new Harness()
    const { conn } = activeOpen(h)
    h.inject({ seq: PEER_ISS, ack: conn.iss + 1, flags: FLAG_SYN | FLAG_ACK, window: 65535 })
    const ack = h.one()
    expect(ack.options.timestamp).toBeUndefined()
    expect(conn.sackEnabled).toBe(false)
    expect(conn.tsEnabled).toBe(false)
    // "If an MSS Option is not received at connection setup, TCP implementations MUST assume a default send MSS of 536".
    expect(conn.sndMss).toBe(536)
    // Without the peer's window scale option neither side scales.
    expect(conn.rcvWndShift).toBe(0)
    expect(ack.window).toBe(65535)
  })

  it('IPv6: MSS is MTU - 60 and the default send MSS is 1220', () => {
    const h = new Harness()
    h.local = LOCAL6
    h.remote = REMOTE6
    const { conn, syn } = activeOpen(h)
    expect(syn.options.mss).toBe(1440)
    h.inject({ seq: PEER_ISS, ack: conn.iss + 1, flags: FLAG_SYN | FLAG_ACK })
    expect(conn.state).toBe(TcpState.Established)
    expect(conn.sndMss).toBe(1220)
  })

  it('the MSS is clamped to the path MTU (RFC 6691)', () => {
    const h = new Harness()
    h.out.mtu = 1280
    const { conn, syn } = activeOpen(h)
    expect(syn.options.mss).toBe(1240)
    h.inject({ seq: PEER_ISS, ack: conn.iss + 1, flags: FLAG_SYN | FLAG_ACK, options: { mss: 9000 } })
    expect(conn.sndMss).toBe(1240)
  })

  it('passive open: SYN → SYN,ACK echoing only offered options; ACK → ESTABLISHED and the listener gets it', () => {
    const h = new Harness()
    const accepted: unknown[] = []
    h.layer.listen(null, h.localPort, 8, (c) => accepted.push(c))
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN, window: 29200, options: { mss: 1460, sackPermitted: true, timestamp: [PEER_TS, 0], windowScale: 7 } })
    const synAck = h.one()
    expect(synAck.flags).toBe(FLAG_SYN | FLAG_ACK)
    expect(synAck.ack).toBe(PEER_ISS + 1)
    expect(synAck.options.mss).toBe(1460)
    expect(synAck.options.sackPermitted).toBe(true)
    expect(synAck.options.windowScale).toBe(3)
    expect(synAck.options.timestamp?.[1]).toBe(PEER_TS)
    expect(accepted.length).toBe(0)
    expect(h.layer.connectionCount).toBe(1)
    h.inject({ seq: PEER_ISS + 1, ack: synAck.seq + 1, flags: FLAG_ACK, window: 229, options: { timestamp: [PEER_TS + 1, synAck.options.timestamp![0]] } })
    h.none()
    expect(accepted.length).toBe(1)
    expect(h.layer.counters.passiveOpens).toBe(1)
    // Window 229 << 7.
    expect((accepted[0] as { sndWnd: number }).sndWnd).toBe(229 * 128)
  })

  it('a SYN,ACK only carries options the SYN had', () => {
    const h = new Harness()
    h.layer.listen(LOCAL, h.localPort, 8, () => {})
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN, options: { mss: 1000 } })
    const synAck = h.one()
    expect(synAck.options).toEqual({ mss: 1460 })
  })

  it('a duplicate SYN in SYN-RECEIVED is answered with the SYN,ACK again', () => {
    const h = new Harness()
    h.layer.listen(null, h.localPort, 8, () => {})
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN })
    const first = h.one()
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN })
    const again = h.one()
    expect(again.flags).toBe(FLAG_SYN | FLAG_ACK)
    expect(again.seq).toBe(first.seq)
  })

  it('SYN-RECEIVED: an unacceptable ACK gets <SEQ=SEG.ACK><CTL=RST>', () => {
    const h = new Harness()
    h.layer.listen(null, h.localPort, 8, () => {})
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN })
    const synAck = h.one()
    h.inject({ seq: PEER_ISS + 1, ack: synAck.seq + 50, flags: FLAG_ACK })
    const rst = h.one()
    expect(rst.flags).toBe(FLAG_RST)
    expect(rst.seq).toBe(synAck.seq + 50)
  })

  it('half-open connections hold no buffer memory until data flows', () => {
    const h = new Harness()
    h.layer.listen(null, h.localPort, 8, () => {})
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN })
    const conn = [...h.layer.allConnections()][0]
    expect(conn.receiveBuffer.allocated).toBe(false)
    expect(conn.sendBuffer.allocated).toBe(false)
  })

  it('a full backlog drops further SYNs (counted)', () => {
    const h = new Harness()
    h.layer.listen(null, h.localPort, 2, () => {})
    for (let i = 0; i < 3; i++) h.inject({ seq: PEER_ISS, flags: FLAG_SYN, srcPort: 1000 + i })
    expect(h.take().length).toBe(2)
    expect(h.layer.counters.listenOverflows).toBe(1)
  })

  it('a listener ignores RST and answers a bare ACK with <SEQ=SEG.ACK><CTL=RST>', () => {
    const h = new Harness()
    h.layer.listen(null, h.localPort, 8, () => {})
    h.inject({ seq: 1, ack: 99, flags: FLAG_RST })
    h.none()
    h.inject({ seq: 1, ack: 99, flags: FLAG_ACK })
    const rst = h.one()
    expect(rst.flags).toBe(FLAG_RST)
    expect(rst.seq).toBe(99)
  })

  it('EADDRINUSE on a second listener for the same port', () => {
    const h = new Harness()
    h.layer.listen(null, 80, 8, () => {})
    expect(() => h.layer.listen(LOCAL, 80, 8, () => {})).toThrow(TcpError)
    try {
      h.layer.listen(null, 80, 8, () => {})
    } catch (e) {
      expect((e as TcpError).code).toBe('EADDRINUSE')
    }
  })

  it('simultaneous open: SYN-SENT + SYN → SYN-RECEIVED → ESTABLISHED (RFC 9293 Figure 8)', () => {
    const h = new Harness()
    let connected = 0
    const { conn } = activeOpen(h)
    conn.events = { onConnected: () => connected++ }
    h.inject({ seq: PEER_ISS, flags: FLAG_SYN })
    const synAck = h.one()
    expect(conn.state).toBe(TcpState.SynReceived)
    expect(synAck.flags).toBe(FLAG_SYN | FLAG_ACK)
    expect(synAck.seq).toBe(conn.iss)
    expect(synAck.ack).toBe(PEER_ISS + 1)
    // The peer's SYN,ACK repeats its ISN: not acceptable in SYN-RECEIVED → we ACK.
    h.inject({ seq: PEER_ISS, ack: conn.iss + 1, flags: FLAG_SYN | FLAG_ACK })
    const ack = h.one()
    expect(ack.flags).toBe(FLAG_ACK)
    // The peer's ACK of our SYN completes it.
    h.inject({ seq: PEER_ISS + 1, ack: conn.iss + 1, flags: FLAG_ACK })
    expect(conn.state).toBe(TcpState.Established)
    expect(connected).toBe(1)
  })
})

describe('closed ports and refused connections', () => {
  it('CLOSED: a SYN gets <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>', () => {
    const h = new Harness()
    h.inject({ seq: 0xfffffff0, flags: FLAG_SYN, payload: new Uint8Array(20) })
    const rst = h.one()
    expect(rst.flags).toBe(FLAG_RST | FLAG_ACK)
    expect(rst.seq).toBe(0)
    expect(rst.ack).toBe((0xfffffff0 + 21) >>> 0)
    expect(rst.srcPort).toBe(h.localPort)
    expect(rst.dstPort).toBe(h.remotePort)
    expect(h.layer.counters.outRsts).toBe(1)
  })

  it('CLOSED: an ACK gets <SEQ=SEG.ACK><CTL=RST>; a RST gets nothing', () => {
    const h = new Harness()
    h.inject({ seq: 10, ack: 1234, flags: FLAG_ACK })
    const rst = h.one()
    expect(rst.flags).toBe(FLAG_RST)
    expect(rst.seq).toBe(1234)
    h.inject({ seq: 10, ack: 1234, flags: FLAG_RST | FLAG_ACK })
    h.none()
  })

  it('SYN-SENT + RST with an acceptable ACK → ECONNREFUSED and CLOSED', () => {
    const h = new Harness()
    const errors: string[] = []
    let closed = 0
    const { conn } = activeOpen(h)
    conn.events = { onError: (c) => errors.push(c), onClosed: () => closed++ }
    h.inject({ seq: 0, ack: conn.iss + 1, flags: FLAG_RST | FLAG_ACK })
    expect(errors).toEqual(['ECONNREFUSED'])
    expect(closed).toBe(1)
    expect(conn.state).toBe(TcpState.Closed)
    expect(h.layer.connectionCount).toBe(0)
  })

  it('SYN-SENT: "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset" — and a RST with such an ACK is dropped', () => {
    const h = new Harness()
    const { conn } = activeOpen(h)
    h.inject({ seq: PEER_ISS, ack: conn.iss + 100, flags: FLAG_SYN | FLAG_ACK })
    const rst = h.one()
    expect(rst.flags).toBe(FLAG_RST)
    expect(rst.seq).toBe(conn.iss + 100)
    expect(conn.state).toBe(TcpState.SynSent)
    h.inject({ seq: 0, ack: conn.iss + 100, flags: FLAG_RST | FLAG_ACK })
    h.none()
    expect(conn.state).toBe(TcpState.SynSent)
  })

  it('SYN retries with exponential backoff, then ETIMEDOUT (RFC 6298 5.5)', () => {
    const h = new Harness({ synRetries: 3 })
    const errors: string[] = []
    const { conn, syn } = activeOpen(h)
    conn.events = { onError: (c) => errors.push(c) }
    const times: number[] = []
    const start = h.now
    for (let i = 0; i < 20 && conn.state !== TcpState.Closed; i++) {
      h.advance(h.layer.nextTimeout() - h.now)
      for (const s of h.take()) {
        expect(s.flags).toBe(FLAG_SYN)
        expect(s.seq).toBe(syn.seq)
        times.push(h.now - start)
      }
    }
    // Initial RTO 1 s, doubled at each retransmission.
    expect(times).toEqual([1000, 3000, 7000])
    expect(errors).toEqual(['ETIMEDOUT'])
    expect(h.now - start).toBe(15000)
    expect(h.layer.connectionCount).toBe(0)
  })

  it('ISNs follow RFC 6528: a keyed hash of the 4-tuple plus a 4 µs clock', () => {
    const h = new Harness()
    const a = h.layer.initialSequenceNumber(LOCAL, 1000, REMOTE, 80, 0)
    const b = h.layer.initialSequenceNumber(LOCAL, 1001, REMOTE, 80, 0)
    expect(a).not.toBe(b)
    // 1 ms later the clock part advanced by 250 ticks of 4 µs.
    expect(h.layer.initialSequenceNumber(LOCAL, 1000, REMOTE, 80, 1)).toBe((a + 250) >>> 0)
    const other = new Harness({ secret: new Uint8Array(16).fill(9) })
    expect(other.layer.initialSequenceNumber(LOCAL, 1000, REMOTE, 80, 0)).not.toBe(a)
  })

  it('ephemeral ports (RFC 6056 algorithm 3) stay in range and never repeat a live 4-tuple', () => {
    const h = new Harness({ ephemeralPortMin: 50000, ephemeralPortMax: 50099 })
    const ports = new Set<number>()
    for (let i = 0; i < 100; i++) {
      const c = h.layer.connect({ local: LOCAL, remote: REMOTE, remotePort: 80 })
      expect(c.localPort).toBeGreaterThanOrEqual(50000)
      expect(c.localPort).toBeLessThanOrEqual(50099)
      ports.add(c.localPort)
    }
    expect(ports.size).toBe(100)
    expect(() => h.layer.connect({ local: LOCAL, remote: REMOTE, remotePort: 80 })).toThrow(/ephemeral/)
    // Another destination still has all its ports.
    expect(h.layer.connect({ local: LOCAL, remote: REMOTE, remotePort: 443 }).localPort).toBeGreaterThanOrEqual(50000)
  })

  it('the configuration refuses a zero TIME-WAIT and a delayed ACK above 200 ms', () => {
    expect(() => new Harness({ mslMs: 0 })).toThrow(/mslMs/)
    expect(() => new Harness({ delayedAckMs: 500 })).toThrow(/delayedAckMs/)
  })
})
