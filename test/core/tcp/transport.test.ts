import { describe, expect, it } from 'vitest'
import type { IpOutput, IpPacketInfo, PayloadWriter, SendOptions } from '../../../stacks/core/contracts.js'
import { TcpTransport } from '../../../stacks/core/tcp/transport.js'
import { WireError } from '../../../stacks/wire/error.js'
import { TCP_ACK, TCP_RST, TCP_SYN, emitTcp, parseTcp, tcpHeaderLength } from '../../../stacks/wire/tcp.js'
import type { IpAddress } from '../../../stacks/core/tcp/types.js'
import { LOCAL, REMOTE, seededRandom } from './harness.js'

interface Sent {
  src: IpAddress
  dst: IpAddress
  protocol: number
  bytes: Uint8Array
  options?: SendOptions
}

function fakeIp(): IpOutput & { sent: Sent[] } {
  const sent: Sent[] = []
  return {
    sent,
    sendIp(src, dst, protocol, payloadLength, fill: PayloadWriter, options) {
      const bytes = new Uint8Array(payloadLength + 8).fill(0xee)
      fill(bytes, 4)
      sent.push({ src, dst, protocol, bytes: bytes.subarray(4, 4 + payloadLength), options })
      return 'sent'
    },
    selectSource: () => LOCAL,
    isLocalAddress: () => true,
    pathMtu: () => 1500,
    resolvePath: () => 'unreachable',
    pathGeneration: () => 0,
    transmitFrame: () => false,
    nextIpv4Id: () => 0,
  }
}

function packet(dstKind: 'unicast' | 'broadcast' = 'unicast'): IpPacketInfo {
  return { version: 4, src: REMOTE, dst: LOCAL, hopLimit: 64, protocol: 6, dstKind, ecn: 0, dscp: 0, ipPacket: new Uint8Array(0) }
}

const pseudoIn = { version: 4 as const, src: REMOTE.version === 4 ? REMOTE.v4 : 0, dst: LOCAL.version === 4 ? LOCAL.v4 : 0 }
const pseudoOut = { version: 4 as const, src: pseudoIn.dst, dst: pseudoIn.src }

function segmentBytes(flags: number, seq: number, ack: number, payload = new Uint8Array(0), options = {}): Uint8Array {
  const repr = { srcPort: 33000, dstPort: 80, seq, ack, flags, window: 65535, urgentPointer: 0, options, payloadLength: payload.length }
  const hl = tcpHeaderLength(repr)
  const bytes = new Uint8Array(hl + payload.length)
  bytes.set(payload, hl)
  emitTcp(repr, bytes, 0, pseudoIn)
  return bytes
}

describe('TcpTransport (TCP over the IP layer contract)', () => {
  it('a SYN leaves with a valid checksum, DF, and options laid out as Linux sends them', () => {
    const ip = fakeIp()
    const t = new TcpTransport({ ip, random: seededRandom(3), clock: () => 0 })
    t.layer.connect({ local: LOCAL, remote: REMOTE, remotePort: 80, localPort: 40000 })
    expect(ip.sent.length).toBe(1)
    const s = ip.sent[0]
    expect(s.protocol).toBe(6)
    expect(s.options?.dontFragment).toBe(true)
    const repr = parseTcp(s.bytes, 0, s.bytes.length, pseudoOut)
    expect(repr).not.toBeInstanceOf(WireError)
    if (repr instanceof WireError) return
    expect(repr.checksumValid).toBe(true)
    expect(repr.flags).toBe(TCP_SYN)
    // MSS, SACK-permitted, timestamps, NOP, window scale: 02 04 05b4 | 04 02 | 08 0a <8 bytes> | 01 | 03 03 03
    const o = s.bytes.subarray(20, repr.headerLength)
    expect([...o.subarray(0, 6)]).toEqual([2, 4, 0x05, 0xb4, 4, 2])
    expect([...o.subarray(6, 8)]).toEqual([8, 10])
    expect([...o.subarray(16, 20)]).toEqual([1, 3, 3, 3])
  })

  it('answers a SYN to a closed port with RST,ACK and drops bad checksums and broadcasts', () => {
    const ip = fakeIp()
    const t = new TcpTransport({ ip, random: seededRandom(4), clock: () => 0 })
    const syn = segmentBytes(TCP_SYN, 1000, 0)
    expect(t.receive(packet(), syn, 0)).toBe(true)
    expect(ip.sent.length).toBe(1)
    const rst = parseTcp(ip.sent[0].bytes, 0, ip.sent[0].bytes.length, pseudoOut)
    if (rst instanceof WireError) throw new Error(rst.toString())
    expect(rst.flags).toBe(TCP_RST | TCP_ACK)
    expect(rst.ack).toBe(1001)
    expect(rst.dstPort).toBe(33000)

    const bad = segmentBytes(TCP_SYN, 1000, 0)
    bad[17] ^= 0xff
    t.receive(packet(), bad, 0)
    t.receive(packet('broadcast'), syn, 0)
    t.receive(packet(), syn.subarray(0, 10), 0)
    expect(ip.sent.length).toBe(1)
    expect(t.layer.counters.inErrs).toBe(3)
  })

  it('carries data end to end through parse and emit', () => {
    const ip = fakeIp()
    const t = new TcpTransport({ ip, random: seededRandom(5), clock: () => 0 })
    const received: number[] = []
    t.layer.listen(null, 80, 4, (conn) => {
      conn.events = {
        onReadable: () => {
          const buf = new Uint8Array(100)
          const n = conn.read(buf)
          received.push(...buf.subarray(0, n))
          conn.send(buf.subarray(0, n))
        },
      }
    })
    t.receive(packet(), segmentBytes(TCP_SYN, 1000, 0, undefined, { mss: 1460 }), 0)
    const synAck = parseTcp(ip.sent[0].bytes, 0, ip.sent[0].bytes.length, pseudoOut)
    if (synAck instanceof WireError) throw new Error(synAck.toString())
    t.receive(packet(), segmentBytes(TCP_ACK, 1001, synAck.seq + 1), 0)
    t.receive(packet(), segmentBytes(TCP_ACK, 1001, synAck.seq + 1, Uint8Array.from([1, 2, 3])), 0)
    expect(received).toEqual([1, 2, 3])
    const echo = ip.sent[ip.sent.length - 1]
    const r = parseTcp(echo.bytes, 0, echo.bytes.length, pseudoOut)
    if (r instanceof WireError) throw new Error(r.toString())
    expect(r.checksumValid).toBe(true)
    expect([...echo.bytes.subarray(r.payloadOffset)]).toEqual([1, 2, 3])
    expect(r.ack).toBe(1004)
  })

  it('connect() without a local address asks the IP layer for a source; none → EADDRNOTAVAIL', () => {
    const ip = fakeIp()
    const t = new TcpTransport({ ip, random: seededRandom(6), clock: () => 0 })
    const conn = t.connect({ remote: REMOTE, remotePort: 80 })
    expect(conn.local).toEqual(LOCAL)
    expect(ip.sent.length).toBe(1)
    ip.selectSource = () => null
    expect(() => t.connect({ remote: REMOTE, remotePort: 80 })).toThrow(expect.objectContaining({ code: 'EADDRNOTAVAIL' }))
  })
})
