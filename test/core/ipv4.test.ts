import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import type { IcmpErrorInfo, IpPacketInfo, QuotedPacket, TransportProtocol } from '../../stacks/core/contracts.js'
import {
  ETHERTYPE_IPV4,
  OUR_MAC,
  PEER_MAC,
  arpRequestFrame,
  concat,
  decode,
  ethernet,
  fill,
  icmpv4Echo,
  icmpv4Message,
  ip,
  ipv4Packet,
  makeStack,
  udpDatagram,
  v4,
} from './harness.js'

const PEER = v4('198.51.100.1')
const US = v4('198.51.100.2')

/** A stack that already knows the peer's MAC (learned from its ARP request). */
function ready(options: Parameters<typeof makeStack>[0] = {}) {
  const s = makeStack({ linkLocal: false, addresses: ['198.51.100.2/24'], ...options })
  s.core.input(arpRequestFrame(PEER_MAC, PEER, US))
  s.link.take()
  return s
}

const frame4 = (packet: Uint8Array) => ethernet(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, packet)

class RecordingTransport implements TransportProtocol {
  received: { info: IpPacketInfo; payload: Uint8Array }[] = []
  errors: { error: IcmpErrorInfo; quoted: QuotedPacket }[] = []
  accept = true
  constructor(readonly protocol: number) {}
  receive(info: IpPacketInfo, payload: Uint8Array): boolean {
    this.received.push({ info: { ...info }, payload: payload.slice() })
    return this.accept
  }
  receiveIcmpError(error: IcmpErrorInfo, quoted: QuotedPacket): void {
    this.errors.push({ error, quoted: { ...quoted, transportHeader: quoted.transportHeader.slice() } })
  }
}

describe('IPv4 input and ICMP (RFC 791, 792, 1122)', () => {
  it('answers an echo request with the same identifier, sequence and data', () => {
    const s = ready()
    const data = fill(56)
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 1, id: 99 }, icmpv4Echo(8, 0x1234, 7, data))))
    const [reply] = s.link.take().map((f) => decode(f))
    expect(reply.eth!.dst).toEqual(PEER_MAC)
    expect(reply.ip4!.src).toBe(US)
    expect(reply.ip4!.dst).toBe(PEER)
    expect(reply.icmp4!.type).toBe(0)
    expect(reply.icmp4!.identifier).toBe(0x1234)
    expect(reply.icmp4!.sequence).toBe(7)
    expect(reply.ip.subarray(reply.icmp4!.payloadOffset)).toEqual(data)
    expect(s.core.counters.icmp.InEchos).toBe(1)
    expect(s.core.counters.icmp.OutEchoReps).toBe(1)
  })

  it('does not answer echo requests sent to a broadcast address', () => {
    const s = ready()
    s.core.input(ethernet(new Uint8Array(6).fill(0xff), PEER_MAC, ETHERTYPE_IPV4, ipv4Packet({ src: PEER, dst: v4('198.51.100.255'), protocol: 1 }, icmpv4Echo(8, 1, 1, fill(8)))))
    expect(s.link.take()).toHaveLength(0)
    expect(s.core.counters.icmp.InEchos).toBe(1)
  })

  it('answers UDP to a closed port with port unreachable quoting the header + 8 bytes, and counts NoPorts', () => {
    const s = ready()
    const dgram = udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: US }, 40000, 9999, fill(20))
    const packet = ipv4Packet({ src: PEER, dst: US, protocol: 17 }, dgram)
    s.core.input(frame4(packet))
    const [err] = s.link.take().map((f) => decode(f))
    expect(err.icmp4!.type).toBe(3)
    expect(err.icmp4!.code).toBe(3)
    const quoted = err.ip.subarray(err.icmp4!.payloadOffset)
    expect(quoted.subarray(0, 28)).toEqual(packet.subarray(0, 28))
    expect(s.core.counters.udp.NoPorts).toBe(1)
    expect(s.core.counters.icmp.OutDestUnreachs).toBe(1)
  })

  it('delivers UDP broadcasts to every endpoint on the port (SO_REUSEADDR) and never answers them with ICMP', () => {
    const s = ready()
    const got: string[] = []
    const one = s.core.udp.bind({ family: 4, port: 67, reuseAddress: true }, { message: (_p, r) => got.push(`one:${r.dstKind}`) })
    const two = s.core.udp.bind({ family: 4, port: 67, reuseAddress: true }, { message: (_p, r) => got.push(`two:${r.dstKind}`) })
    expect(typeof one).not.toBe('string')
    expect(typeof two).not.toBe('string')
    expect(s.core.udp.bind({ family: 4, port: 67 }, { message: () => {} })).toBe('EADDRINUSE')
    const bcast = new Uint8Array(6).fill(0xff)
    for (const dst of ['198.51.100.255', '255.255.255.255']) {
      const d = udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: v4(dst) }, 68, 67, fill(10))
      s.core.input(ethernet(bcast, PEER_MAC, ETHERTYPE_IPV4, ipv4Packet({ src: PEER, dst: v4(dst), protocol: 17 }, d)))
    }
    expect(got).toEqual(['one:broadcast', 'two:broadcast', 'one:broadcast', 'two:broadcast'])
    const closed = udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: v4('198.51.100.255') }, 68, 999, fill(10))
    s.core.input(ethernet(bcast, PEER_MAC, ETHERTYPE_IPV4, ipv4Packet({ src: PEER, dst: v4('198.51.100.255'), protocol: 17 }, closed)))
    expect(s.link.take()).toHaveLength(0)
    expect(s.core.counters.udp.NoPorts).toBe(1)
  })

  it('accepts datagrams with TTL 1 and never sends TTL 0 (RFC 1122 §3.2.1.7)', () => {
    const s = ready()
    const got: number[] = []
    s.core.udp.bind({ family: 4, port: 9 }, { message: (p) => got.push(p.length) })
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 17, ttl: 1 }, udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: US }, 5, 9, fill(3)))))
    expect(got).toEqual([3])
    s.core.sendIp(ip('198.51.100.2'), ip('198.51.100.1'), 253, 4, (b, at) => b.fill(0, at, at + 4), { hopLimit: 0 })
    const [d] = s.link.take().map((f) => decode(f))
    expect(d.ip4!.ttl).toBe(1)
  })

  it('answers an unknown protocol with protocol unreachable', () => {
    const s = ready()
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 132 }, fill(12))))
    const [err] = s.link.take().map((f) => decode(f))
    expect([err.icmp4!.type, err.icmp4!.code]).toEqual([3, 2])
    expect(s.core.counters.ip.InUnknownProtos).toBe(1)
  })

  it('delivers to a registered transport with the packet info', () => {
    const s = ready()
    const t = new RecordingTransport(6)
    s.core.registerTransport(t)
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 6, ttl: 33 }, fill(20))))
    expect(t.received).toHaveLength(1)
    expect(t.received[0].info.hopLimit).toBe(33)
    expect(t.received[0].info.dstKind).toBe('unicast')
    expect(t.received[0].payload).toEqual(fill(20))
    expect(s.link.take()).toHaveLength(0)
  })

  it('drops and counts bad headers, wrong destinations and martian sources; never throws', () => {
    const s = ready()
    const good = ipv4Packet({ src: PEER, dst: US, protocol: 17 }, udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: US }, 1, 2, fill(4)))
    const badSum = good.slice()
    badSum[10] ^= 0xff
    s.core.input(frame4(badSum))
    const badLen = good.slice()
    badLen[3] = 10 // total length < header length
    badLen[10] = badLen[11] = 0
    s.core.input(frame4(badLen))
    s.core.input(frame4(good.subarray(0, 12)))
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: v4('192.0.2.1'), protocol: 17 }, fill(8))))
    s.core.input(frame4(ipv4Packet({ src: v4('224.0.0.5'), dst: US, protocol: 17 }, fill(8))))
    expect(s.core.counters.ip.InHdrErrors).toBe(3)
    expect(s.core.counters.ip.InCsumErrors).toBe(1)
    expect(s.core.counters.ip.InAddrErrors).toBe(2)
    expect(s.core.malformed).toEqual({ 'ipv4:bad-checksum': 1, 'ipv4:bad-length': 1, 'ipv4:truncated': 1 })
    expect(s.link.take()).toHaveLength(0)
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), fc.nat(200), fc.integer({ min: 0, max: 255 }), (noise, at, value) => {
        const mutated = frame4(good)
        mutated[14 + (at % good.length)] = value
        s.core.input(mutated)
        s.core.input(noise)
        s.core.input(frame4(noise))
      }),
      { numRuns: 300 },
    )
  })

  it('reassembles fragments in and out of order and delivers the datagram once', () => {
    const s = ready()
    const got: Uint8Array[] = []
    const e = s.core.udp.bind({ family: 4, port: 7000 }, { message: (p) => got.push(p.slice()) })
    expect(typeof e).not.toBe('string')
    const dgram = udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: US }, 1234, 7000, fill(3000, 3))
    const piece = (offset: number, end: number, more: boolean, id: number) =>
      frame4(ipv4Packet({ src: PEER, dst: US, protocol: 17, id, moreFragments: more, fragmentOffset: offset }, dgram.subarray(offset, end)))
    s.core.input(piece(0, 1480, true, 1))
    s.core.input(piece(1480, 2960, true, 1))
    s.core.input(piece(2960, dgram.length, false, 1))
    s.core.input(piece(2960, dgram.length, false, 2))
    s.core.input(piece(1480, 2960, true, 2))
    s.core.input(piece(1480, 2960, true, 2)) // duplicate
    s.core.input(piece(0, 1480, true, 2))
    expect(got).toEqual([fill(3000, 3), fill(3000, 3)])
    expect(s.core.counters.ip.ReasmReqds).toBe(7)
    expect(s.core.counters.ip.ReasmOKs).toBe(2)
    expect(s.core.reassembly.activeDatagrams).toBe(0)
  })

  it('times out an incomplete datagram with ICMP time exceeded code 1 (only when the first fragment came)', () => {
    const s = ready({ reassembly: { timeoutMs: 30_000 } })
    const dgram = udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: US }, 1234, 7000, fill(3000))
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 17, id: 5, moreFragments: true }, dgram.subarray(0, 1480))))
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 17, id: 6, moreFragments: true, fragmentOffset: 1480 }, dgram.subarray(1480, 2960))))
    expect(s.core.nextTimeout()).toBe(s.clock.t + 30_000)
    s.clock.advance(30_000)
    s.core.poll()
    const sent = s.link.take().map((f) => decode(f))
    expect(sent).toHaveLength(1)
    expect([sent[0].icmp4!.type, sent[0].icmp4!.code]).toEqual([11, 1])
    const quotedId = (sent[0].ip[sent[0].icmp4!.payloadOffset + 4] << 8) | sent[0].ip[sent[0].icmp4!.payloadOffset + 5]
    expect(quotedId).toBe(5)
    expect(s.core.counters.ip.ReasmTimeout).toBe(2)
    expect(s.core.counters.ip.ReasmFails).toBe(2)
  })

  it('drops a datagram whose fragments overlap, and one beyond 65535 bytes', () => {
    const s = ready()
    const got: Uint8Array[] = []
    s.core.udp.bind({ family: 4, port: 7000 }, { message: (p) => got.push(p.slice()) })
    const dgram = udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: US }, 1234, 7000, fill(2000))
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 17, id: 9, moreFragments: true }, dgram.subarray(0, 1000))))
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 17, id: 9, fragmentOffset: 992 }, dgram.subarray(992))))
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 17, id: 10, fragmentOffset: 65528 }, fill(100))))
    expect(got).toHaveLength(0)
    expect(s.core.counters.ip.ReasmOverlaps).toBe(1)
    expect(s.core.counters.ip.ReasmFails).toBe(2)
  })
})

describe('interface configuration', () => {
  it('removes an address with its on-link route', () => {
    const s = ready()
    expect(s.core.removeAddress('198.51.100.2/24')).toBe(true)
    expect(s.core.isLocalAddress(ip('198.51.100.2'))).toBe(false)
    expect(s.core.routes.lookup(ip('198.51.100.1'))).toBeNull()
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 1 }, icmpv4Echo(8, 1, 1, fill(8)))))
    expect(s.link.take()).toHaveLength(0)
    expect(s.core.counters.ip.InAddrErrors).toBe(1)
    expect(s.core.removeAddress('198.51.100.2/24')).toBe(false)
  })

  it('drops 802.1Q-tagged frames (no VLAN membership) and frames for other MACs', () => {
    const s = ready()
    const packet = ipv4Packet({ src: PEER, dst: US, protocol: 1 }, icmpv4Echo(8, 1, 1, fill(8)))
    const tagged = concat(OUR_MAC, PEER_MAC, new Uint8Array([0x81, 0x00, 0x00, 0x05, 0x08, 0x00]), packet)
    s.core.input(tagged)
    s.core.input(ethernet(new Uint8Array([2, 9, 9, 9, 9, 9]), PEER_MAC, ETHERTYPE_IPV4, packet))
    expect(s.link.take()).toHaveLength(0)
    expect(s.core.counters.link.InUnknownEthertype).toBe(1)
    expect(s.core.counters.link.InOtherHost).toBe(1)
  })
})

describe('ICMP redirects (RFC 1122 §3.2.2.2)', () => {
  it('install a host route via the new gateway, only when sent by our current gateway towards an on-link one', () => {
    const s = ready({ routes: [{ to: 'default', via: '198.51.100.1' }] })
    const quoted = ipv4Packet({ src: US, dst: v4('203.0.113.9'), protocol: 17 }, fill(8))
    const redirect = (from: string, gateway: string) =>
      frame4(ipv4Packet({ src: v4(from), dst: US, protocol: 1 }, icmpv4Message(5, 1, v4(gateway), quoted)))
    s.core.input(redirect('198.51.100.7', '198.51.100.254')) // not our gateway
    s.core.input(redirect('198.51.100.1', '192.0.2.1')) // new gateway not on-link
    expect(s.core.routes.lookup(ip('203.0.113.9'))!.prefixLength).toBe(0)
    s.core.input(redirect('198.51.100.1', '198.51.100.254'))
    const r = s.core.routes.lookup(ip('203.0.113.9'))!
    expect([r.prefixLength, r.source, r.via !== null && r.via.version === 4 && r.via.v4]).toEqual([32, 'redirect', v4('198.51.100.254')])
    expect(s.core.routes.lookup(ip('203.0.113.10'))!.prefixLength).toBe(0)
    expect(s.core.counters.icmp.InRedirects).toBe(3)
    s.clock.advance(600_000)
    s.core.poll()
    expect(s.core.routes.lookup(ip('203.0.113.9'))!.prefixLength).toBe(0)
  })
})

describe('IPv4 output', () => {
  it('fragments a large datagram when DF is clear, and refuses it when DF is set', () => {
    const s = ready()
    const e = s.core.udp.bind({ family: 4, port: 6000 }, { message: () => {} })
    if (typeof e === 'string') throw new Error(e)
    const data = fill(4000, 1)
    expect(e.send(data, 0, data.length, ip('198.51.100.1'), 9)).toBe('sent')
    const frags = s.link.take().map((f) => decode(f))
    expect(frags).toHaveLength(3)
    expect(frags.map((f) => f.ip4!.fragmentOffset)).toEqual([0, 1480, 2960])
    expect(frags.map((f) => f.ip4!.moreFragments)).toEqual([true, true, false])
    expect(new Set(frags.map((f) => f.ip4!.id)).size).toBe(1)
    expect(frags.every((f) => f.ip4!.totalLength <= 1500)).toBe(true)
    const whole = concat(...frags.map((f) => f.ip.subarray(20, f.ip4!.totalLength)))
    expect(whole.subarray(8)).toEqual(data)
    expect(s.core.counters.ip.FragCreates).toBe(3)
    expect(s.core.counters.ip.FragOKs).toBe(1)
    const big = s.core.sendIp(ip('198.51.100.2'), ip('198.51.100.1'), 17, 3000, () => {}, { dontFragment: true })
    expect(big).toBe('too-big')
  })

  it('reports no route when there is no matching route', () => {
    const s = ready()
    expect(s.core.sendIp(ip('198.51.100.2'), ip('203.0.113.1'), 17, 8, () => {})).toBe('no-route')
    expect(s.core.counters.ip.OutNoRoutes).toBe(1)
  })

  it('sends to the limited broadcast only with SO_BROADCAST, to the broadcast MAC', () => {
    const s = ready()
    const e = s.core.udp.bind({ family: 4, port: 6000 }, { message: () => {} })
    if (typeof e === 'string') throw new Error(e)
    expect(e.send(fill(4), 0, 4, ip('255.255.255.255'), 67)).toBe('EACCES')
    expect(e.send(fill(4), 0, 4, ip('198.51.100.255'), 67)).toBe('EACCES')
    e.broadcast = true
    expect(e.send(fill(4), 0, 4, ip('198.51.100.255'), 67)).toBe('sent')
    const [d] = s.link.take().map((f) => decode(f))
    expect(d.eth!.dst).toEqual(new Uint8Array(6).fill(0xff))
  })
})

describe('ICMP errors to transports, PMTU and rate limiting', () => {
  it('lowers the path MTU on fragmentation-needed, bumps the path generation and tells the transport', () => {
    const s = ready({ routes: [{ to: 'default', via: '198.51.100.1' }] })
    const t = new RecordingTransport(6)
    s.core.registerTransport(t)
    const remote = ip('203.0.113.7')
    const local = ip('198.51.100.2')
    const path = s.core.resolvePath(local, remote)
    if (typeof path === 'string') throw new Error(path)
    expect(path.mtu).toBe(1500)
    expect(path.linkHeader!.subarray(0, 6)).toEqual(PEER_MAC)
    // The TCP segment we "sent", quoted by a router with next-hop MTU 1400.
    const offending = ipv4Packet({ src: US, dst: v4('203.0.113.7'), protocol: 6, dontFragment: true }, fill(1480))
    const quote = offending.subarray(0, 28)
    offending[2] = 1500 >> 8
    s.core.input(frame4(ipv4Packet({ src: v4('198.51.100.1'), dst: US, protocol: 1 }, icmpv4Message(3, 4, 1400, quote))))
    expect(s.core.pathMtu(local, remote)).toBe(1400)
    expect(s.core.pathGeneration()).not.toBe(path.generation)
    expect(t.errors).toHaveLength(1)
    expect(t.errors[0].error.kind).toBe('packet-too-big')
    expect(t.errors[0].error.mtu).toBe(1400)
    expect(t.errors[0].quoted.transportHeader.length).toBe(8)
    // RFC 1191: reports never raise the estimate; silly values are floored (552).
    s.core.input(frame4(ipv4Packet({ src: v4('198.51.100.1'), dst: US, protocol: 1 }, icmpv4Message(3, 4, 1450, quote))))
    expect(s.core.pathMtu(local, remote)).toBe(1400)
    s.core.input(frame4(ipv4Packet({ src: v4('198.51.100.1'), dst: US, protocol: 1 }, icmpv4Message(3, 4, 100, quote))))
    expect(s.core.pathMtu(local, remote)).toBe(552)
    // Aged out after 10 minutes (RFC 1191 §6.3).
    s.clock.advance(600_000)
    s.core.poll()
    expect(s.core.pathMtu(local, remote)).toBe(1500)
  })

  it('passes port unreachable for a connected UDP endpoint up as ECONNREFUSED', () => {
    const s = ready()
    const errors: string[] = []
    const e = s.core.udp.bind({ family: 4, port: 6001 }, { message: () => {}, error: (c) => errors.push(c) })
    if (typeof e === 'string') throw new Error(e)
    e.connect(ip('198.51.100.1'), 53)
    e.send(fill(10))
    const [sent] = s.link.take().map((f) => decode(f))
    s.core.input(frame4(ipv4Packet({ src: PEER, dst: US, protocol: 1 }, icmpv4Message(3, 3, 0, sent.ip.subarray(0, 28)))))
    expect(errors).toEqual(['ECONNREFUSED'])
    expect(s.core.counters.icmp.InDestUnreachs).toBe(1)
  })

  it('rate limits ICMP errors with a token bucket on the injected clock', () => {
    const s = ready({ icmpRate: { perSecond: 10, burst: 5 } })
    const closed = ipv4Packet({ src: PEER, dst: US, protocol: 17 }, udpDatagram({ version: 4, v4: PEER }, { version: 4, v4: US }, 1, 9, fill(4)))
    for (let i = 0; i < 20; i++) s.core.input(frame4(closed))
    expect(s.link.take()).toHaveLength(5)
    expect(s.core.counters.icmp.OutRateLimited).toBe(15)
    s.clock.advance(100)
    for (let i = 0; i < 20; i++) s.core.input(frame4(closed))
    expect(s.link.take()).toHaveLength(1)
    expect(s.core.counters.udp.NoPorts).toBe(40)
  })
})

describe('IP (TUN-like) links', () => {
  it('works without Ethernet or ARP: echo reply goes straight out as an IP packet', () => {
    const s = makeStack({ linkType: 'ip', addresses: ['198.51.100.2/24'] })
    expect(s.link.take()).toHaveLength(0) // no gratuitous ARP on L3 links
    s.core.input(ipv4Packet({ src: PEER, dst: US, protocol: 1 }, icmpv4Echo(8, 3, 4, fill(16))))
    const [reply] = s.link.take().map((f) => decode(f, 'ip'))
    expect(reply.icmp4!.type).toBe(0)
    expect(reply.ip4!.dst).toBe(PEER)
    const path = s.core.resolvePath(ip('198.51.100.2'), ip('198.51.100.1'))
    expect(typeof path === 'string' ? path : path.linkHeader).toBeNull()
  })
})
