// The benchmark's minimal TCP receiver (bench/native-tcp-sink.ts), packet by
// packet: every reply is parsed back with the wire layer (checksums verified),
// and sequence arithmetic is checked across the 2^32 wrap.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  REPLY_ACK,
  REPLY_FIN_ACK,
  REPLY_NONE,
  REPLY_SYN_ACK,
  SINK_ISS,
  SINK_MAX_REPLY,
  SINK_MSS,
  SINK_WINDOW_SCALE,
  TcpAckSink,
  type SinkReply,
} from '../../bench/native-tcp-sink.js'
import { VIRTIO_HDR } from '../../nexus/ports/native.js'
import {
  emitIpv4,
  emitTcp,
  IP_PROTOCOL_TCP,
  IP_PROTOCOL_UDP,
  IPV4_HEADER_LENGTH,
  parseIpv4,
  parseTcp,
  TCP_ACK,
  TCP_FIN,
  TCP_PSH,
  TCP_RST,
  TCP_SYN,
  WireError,
  type TcpOptions,
  type TcpRepr,
} from '../../stacks/wire/index.js'

const SENDER = 0xc6336401 // 198.51.100.1
const SINK = 0xcb007101 // 203.0.113.1
const SPORT = 40000
const DPORT = 5001

interface Segment {
  seq: number
  flags: number
  payload?: number
  options?: TcpOptions
  src?: number
  srcPort?: number
  protocol?: number
}

/** A vnet_hdr packet as the TUN hands it over: 12 zero header bytes, IPv4, TCP, payload. */
function packet(s: Segment): Uint8Array {
  const payload = s.payload ?? 0
  const options = s.options ?? {}
  const tcpLength = 20 + (options.mss !== undefined ? 4 : 0) + (options.windowScale !== undefined ? 4 : 0) + payload
  const out = new Uint8Array(VIRTIO_HDR + IPV4_HEADER_LENGTH + tcpLength)
  out.fill(0x5a, out.length - payload)
  const src = s.src ?? SENDER
  emitTcp(
    { srcPort: s.srcPort ?? SPORT, dstPort: DPORT, seq: s.seq >>> 0, ack: 0, flags: s.flags, window: 1024, urgentPointer: 0, options, payloadLength: payload },
    out,
    VIRTIO_HDR + IPV4_HEADER_LENGTH,
    { version: 4, src, dst: SINK },
  )
  emitIpv4(
    { src, dst: SINK, protocol: s.protocol ?? IP_PROTOCOL_TCP, ttl: 64, id: 1, dontFragment: true, moreFragments: false, fragmentOffset: 0, dscp: 0, ecn: 0, payloadLength: tcpLength },
    out,
    VIRTIO_HDR,
  )
  return out
}

/** Emits `reply`, checks the virtio header, IPv4 and TCP (both checksums), and returns the TCP Repr. */
function emitted(sink: TcpAckSink, reply: SinkReply): TcpRepr {
  const out = new Uint8Array(SINK_MAX_REPLY + 8).fill(0xee)
  const length = sink.emitReply(reply, out)
  expect(length).toBeGreaterThan(VIRTIO_HDR + IPV4_HEADER_LENGTH)
  expect(length).toBeLessThanOrEqual(SINK_MAX_REPLY)
  expect([...out.subarray(0, VIRTIO_HDR)]).toEqual(new Array(VIRTIO_HDR).fill(0)) // gso_type NONE, no NEEDS_CSUM
  const ip = parseIpv4(out, VIRTIO_HDR, length - VIRTIO_HDR)
  if (ip instanceof WireError) throw new Error(`bad IPv4: ${ip.toString()}`)
  expect(ip.src).toBe(SINK)
  expect(ip.dst).toBe(SENDER)
  expect(ip.protocol).toBe(IP_PROTOCOL_TCP)
  const tcp = parseTcp(out, ip.payloadOffset, ip.payloadLength, ip)
  if (tcp instanceof WireError) throw new Error(`bad TCP: ${tcp.toString()}`)
  expect(tcp.checksumValid).toBe(true)
  expect(tcp.srcPort).toBe(DPORT)
  expect(tcp.dstPort).toBe(SPORT)
  expect(tcp.payloadLength).toBe(0)
  return tcp
}

function connect(sink: TcpAckSink, isn: number, windowScale = true): TcpRepr {
  const reply = sink.receive(...args(packet({ seq: isn, flags: TCP_SYN, options: windowScale ? { mss: 1460, windowScale: 7 } : { mss: 1460 } })))
  expect(reply).toBe(REPLY_SYN_ACK)
  return emitted(sink, reply)
}

const args = (p: Uint8Array): [Uint8Array, number] => [p, p.length]

describe('TcpAckSink (benchmark TCP receiver)', () => {
  it('answers a SYN with a SYN-ACK carrying MSS and window scale, and leaves scaling out when the peer did not offer it', () => {
    const sink = new TcpAckSink()
    const synAck = connect(sink, 1000)
    expect(synAck.flags).toBe(TCP_SYN | TCP_ACK)
    expect(synAck.seq).toBe(SINK_ISS)
    expect(synAck.ack).toBe(1001)
    expect(synAck.options.mss).toBe(SINK_MSS)
    expect(synAck.options.windowScale).toBe(SINK_WINDOW_SCALE)
    expect(synAck.options.sackPermitted).toBeUndefined()
    expect(synAck.options.timestamp).toBeUndefined()
    expect(sink.connected).toBe(true)

    const plain = new TcpAckSink()
    const noScale = connect(plain, 5, false)
    expect(noScale.options.mss).toBe(SINK_MSS)
    expect(noScale.options.windowScale).toBeUndefined()
  })

  it('counts in-order data, ACKs every second packet and at the end of a batch, with a valid incrementally updated checksum', () => {
    const sink = new TcpAckSink()
    connect(sink, 1000)
    expect(sink.receive(...args(packet({ seq: 1001, flags: TCP_ACK, payload: 64000 })))).toBe(REPLY_NONE)
    expect(sink.receive(...args(packet({ seq: 65001, flags: TCP_ACK | TCP_PSH, payload: 1000 })))).toBe(REPLY_ACK)
    const ack = emitted(sink, REPLY_ACK)
    expect(ack.flags).toBe(TCP_ACK)
    expect(ack.seq).toBe(SINK_ISS + 1)
    expect(ack.ack).toBe(66001)
    expect(ack.window).toBe(65535)
    expect(sink.endBatch()).toBe(REPLY_NONE)
    expect(sink.receive(...args(packet({ seq: 66001, flags: TCP_ACK, payload: 10 })))).toBe(REPLY_NONE)
    expect(sink.endBatch()).toBe(REPLY_ACK)
    expect(emitted(sink, REPLY_ACK).ack).toBe(66011)
    expect(sink.payloadBytes).toBe(65010)
    expect(sink.inOrderPackets).toBe(3)
    expect(sink.repliesEmitted).toBe(3)
  })

  it('sends an immediate duplicate ACK for out-of-order and duplicate data without counting it; an overlap counts only new bytes', () => {
    const sink = new TcpAckSink()
    connect(sink, 0)
    sink.receive(...args(packet({ seq: 1, flags: TCP_ACK, payload: 100 })))
    // A gap: 101..200 missing.
    expect(sink.receive(...args(packet({ seq: 201, flags: TCP_ACK, payload: 100 })))).toBe(REPLY_ACK)
    expect(emitted(sink, REPLY_ACK).ack).toBe(101)
    // An old retransmission.
    expect(sink.receive(...args(packet({ seq: 1, flags: TCP_ACK, payload: 100 })))).toBe(REPLY_ACK)
    expect(emitted(sink, REPLY_ACK).ack).toBe(101)
    expect(sink.payloadBytes).toBe(100)
    expect(sink.outOfOrderPackets).toBe(1)
    expect(sink.duplicatePackets).toBe(1)
    // 51..250 overlaps 51..100: 150 new bytes.
    sink.receive(...args(packet({ seq: 51, flags: TCP_ACK, payload: 200 })))
    expect(sink.payloadBytes).toBe(250)
    expect(sink.receiveNext).toBe(251)
  })

  it('answers an in-order FIN with FIN+ACK once, then ACKs from the advanced sequence number; a FIN beyond a gap gets a duplicate ACK', () => {
    const sink = new TcpAckSink()
    connect(sink, 7)
    sink.receive(...args(packet({ seq: 8, flags: TCP_ACK, payload: 10 })))
    expect(sink.receive(...args(packet({ seq: 30, flags: TCP_ACK | TCP_FIN })))).toBe(REPLY_ACK)
    expect(emitted(sink, REPLY_ACK).ack).toBe(18)
    const reply = sink.receive(...args(packet({ seq: 18, flags: TCP_ACK | TCP_FIN, payload: 2 })))
    expect(reply).toBe(REPLY_FIN_ACK)
    const finAck = emitted(sink, reply)
    expect(finAck.flags).toBe(TCP_FIN | TCP_ACK)
    expect(finAck.seq).toBe(SINK_ISS + 1)
    expect(finAck.ack).toBe(21)
    expect(sink.payloadBytes).toBe(12)
    // The peer retransmits its FIN: a plain ACK, from SND.NXT past our FIN.
    const again = sink.receive(...args(packet({ seq: 20, flags: TCP_ACK | TCP_FIN })))
    expect(again).toBe(REPLY_ACK)
    const ack = emitted(sink, again)
    expect(ack.flags).toBe(TCP_ACK)
    expect(ack.seq).toBe(SINK_ISS + 2)
  })

  it('ignores other connections and non-TCP, forgets the connection on RST, and starts over on a new SYN', () => {
    const sink = new TcpAckSink()
    connect(sink, 100)
    expect(sink.receive(...args(packet({ seq: 101, flags: TCP_ACK, payload: 10, srcPort: SPORT + 1 })))).toBe(REPLY_NONE)
    expect(sink.receive(...args(packet({ seq: 101, flags: TCP_ACK, payload: 10, src: SENDER + 1 })))).toBe(REPLY_NONE)
    expect(sink.receive(...args(packet({ seq: 101, flags: TCP_ACK, payload: 10, protocol: IP_PROTOCOL_UDP })))).toBe(REPLY_NONE)
    expect(sink.receive(...args(packet({ seq: 0, flags: TCP_SYN | TCP_ACK })))).toBe(REPLY_NONE)
    expect(sink.ignoredPackets).toBe(4)
    expect(sink.payloadBytes).toBe(0)
    expect(sink.receive(...args(packet({ seq: 101, flags: TCP_RST })))).toBe(REPLY_NONE)
    expect(sink.connected).toBe(false)
    expect(sink.endBatch()).toBe(REPLY_NONE)
    expect(sink.emitReply(REPLY_ACK, new Uint8Array(SINK_MAX_REPLY))).toBe(0)
    expect(sink.receive(...args(packet({ seq: 101, flags: TCP_ACK, payload: 10 })))).toBe(REPLY_NONE)
    expect(sink.ignoredPackets).toBe(5)
    connect(sink, 9000)
    expect(sink.connections).toBe(2)
    expect(sink.receiveNext).toBe(9001)
  })

  it('property: in-order data across the 2^32 wrap is counted exactly and every ACK carries RCV.NXT mod 2^32 with a valid checksum', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.array(fc.integer({ min: 1, max: 65535 - 40 }) /* an IPv4 total length holds at most 65535 */, { minLength: 1, maxLength: 12 }), (isn, sizes) => {
        const sink = new TcpAckSink()
        connect(sink, isn)
        let seq = (isn + 1) >>> 0
        let total = 0
        for (const size of sizes) {
          const reply = sink.receive(...args(packet({ seq, flags: TCP_ACK, payload: size })))
          seq = (seq + size) >>> 0
          total += size
          if (reply !== REPLY_NONE) expect(emitted(sink, reply).ack).toBe(seq)
        }
        const tail = sink.endBatch()
        if (tail !== REPLY_NONE) expect(emitted(sink, tail).ack).toBe(seq)
        expect(sink.endBatch()).toBe(REPLY_NONE)
        expect(sink.payloadBytes).toBe(total)
        expect(sink.receiveNext).toBe(seq)
      }),
      { numRuns: 100 },
    )
  })

  it('property: arbitrary bytes and truncations never throw; short or inconsistent headers are counted as malformed', () => {
    const sink = new TcpAckSink()
    connect(sink, 1)
    const good = packet({ seq: 2, flags: TCP_ACK, payload: 40 })
    for (const cut of [0, 5, VIRTIO_HDR, VIRTIO_HDR + 19, VIRTIO_HDR + 20, VIRTIO_HDR + 39]) {
      expect(sink.receive(good, cut)).toBe(REPLY_NONE)
    }
    // Data offset 15 (60 bytes) in a 60-byte datagram with a 20-byte IP header: does not fit.
    const badOffset = good.slice()
    badOffset[VIRTIO_HDR + IPV4_HEADER_LENGTH + 12] = 0xf0
    expect(sink.receive(badOffset, VIRTIO_HDR + 60)).toBe(REPLY_NONE)
    expect(sink.malformedPackets).toBeGreaterThanOrEqual(3)
    expect(sink.payloadBytes).toBe(0)
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 200 }), (bytes) => {
        const reply = sink.receive(bytes, bytes.length)
        const out = new Uint8Array(SINK_MAX_REPLY)
        sink.emitReply(reply, out)
      }),
      { numRuns: 500 },
    )
  })
})
