// Test harness for the stack core (gVisor style): a fake clock, a seeded
// random source, an in-memory link that records every transmitted frame,
// frame builders (using stacks/wire emitters) and a packet checker that
// parses what the stack sent.
import type { Clock, LinkDevice, LinkType, Random, TxBuffer } from '../../stacks/core/contracts.js'
import { createStackCore, type StackCore, type StackCoreOptions } from '../../stacks/core/stack.js'
import { parseIpAddress, parseMac } from '../../stacks/wire/address.js'
import { ARP_OPERATION_REQUEST, emitArp, parseArp, type ArpRepr } from '../../stacks/wire/arp.js'
import { checksumAccumulate, checksumFold, pseudoHeaderSumIpv6 } from '../../stacks/wire/checksum.js'
import { WireError } from '../../stacks/wire/error.js'
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, emitEthernet, parseEthernet, type EthernetRepr } from '../../stacks/wire/ethernet.js'
import { emitIcmpv4, parseIcmpv4, type Icmpv4Repr } from '../../stacks/wire/icmpv4.js'
import { parseIcmpv6, type Icmpv6Repr } from '../../stacks/wire/icmpv6.js'
import { emitIpv4, parseIpv4, type Ipv4Repr } from '../../stacks/wire/ipv4.js'
import { parseIpv6, type Ipv6Repr } from '../../stacks/wire/ipv6.js'
import { emitUdp, parseUdp, type UdpRepr } from '../../stacks/wire/udp.js'

export class FakeClock implements Clock {
  constructor(public t = 1_000_000) {}
  now(): number {
    return this.t
  }
  advance(ms: number): void {
    this.t += ms
  }
}

/** xorshift32, seeded: the same seed gives the same run. */
export class SeededRandom implements Random {
  constructor(private state = 0x9e3779b9) {}
  nextUint32(): number {
    let x = this.state
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    this.state = x >>> 0
    return this.state
  }
}

/** A LinkDevice over a fixed pool; transmitted frames are copied into `sent`. */
export class MemoryLink implements LinkDevice {
  readonly sent: Uint8Array[] = []
  private readonly buffers: TxBuffer[] = []
  private readonly free: number[] = []
  /** When set, acquireTx fails (pool exhausted). */
  starve = false
  flushes = 0

  constructor(
    readonly linkType: LinkType,
    readonly mtu: number,
    readonly mac?: Uint8Array,
    poolSize = 64,
    bufferSize = 2048,
  ) {
    for (let i = 0; i < poolSize; i++) {
      this.buffers.push({ bytes: new Uint8Array(bufferSize), index: i })
      this.free.push(i)
    }
  }

  acquireTx(): TxBuffer | null {
    if (this.starve) return null
    const i = this.free.pop()
    return i === undefined ? null : this.buffers[i]
  }

  transmit(index: number, length: number): void {
    this.sent.push(this.buffers[index].bytes.slice(0, length))
    this.free.push(index)
  }

  abortTx(index: number): void {
    this.free.push(index)
  }

  flush(): void {
    this.flushes++
  }

  get poolFree(): number {
    return this.free.length
  }

  /** Take (and forget) everything sent so far. */
  take(): Uint8Array[] {
    return this.sent.splice(0, this.sent.length)
  }
}

export const OUR_MAC = parseMac('02:00:00:00:00:02')!
export const PEER_MAC = parseMac('02:00:00:00:00:01')!
export const BROADCAST = parseMac('ff:ff:ff:ff:ff:ff')!

export function ip(text: string) {
  const a = parseIpAddress(text)
  if (a === null) throw new Error(`bad address ${text}`)
  return a
}

export function v4(text: string): number {
  const a = ip(text)
  if (a.version !== 4) throw new Error(text)
  return a.v4
}

export function v6(text: string): Uint8Array {
  const a = ip(text)
  if (a.version !== 6) throw new Error(text)
  return a.v6
}

export interface TestStack {
  core: StackCore
  link: MemoryLink
  clock: FakeClock
}

export function makeStack(options: Partial<StackCoreOptions> & { linkType?: LinkType; mtu?: number } = {}): TestStack {
  const clock = new FakeClock()
  const link = new MemoryLink(options.linkType ?? 'ethernet', options.mtu ?? 1500, (options.linkType ?? 'ethernet') === 'ethernet' ? OUR_MAC : undefined)
  const core = createStackCore({
    link,
    clock,
    random: new SeededRandom(),
    addresses: ['198.51.100.2/24', '2001:db8::2/64'],
    ...options,
  })
  return { core, link, clock }
}

// ---------------------------------------------------------------- builders

export function ethernet(dst: Uint8Array, src: Uint8Array, ethertype: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(14 + payload.length)
  emitEthernet({ dst, src, ethertype }, frame, 0)
  frame.set(payload, 14)
  return frame
}

export function arpPacket(repr: ArpRepr): Uint8Array {
  const b = new Uint8Array(28)
  emitArp(repr, b, 0)
  return b
}

export function arpRequestFrame(senderMac: Uint8Array, senderIp: number, targetIp: number): Uint8Array {
  return ethernet(BROADCAST, senderMac, ETHERTYPE_ARP, arpPacket({ operation: ARP_OPERATION_REQUEST, senderMac, senderIp, targetMac: new Uint8Array(6), targetIp }))
}

export interface Ipv4Fields {
  src: number
  dst: number
  protocol: number
  ttl?: number
  id?: number
  dontFragment?: boolean
  moreFragments?: boolean
  fragmentOffset?: number
}

export function ipv4Packet(f: Ipv4Fields, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(20 + payload.length)
  emitIpv4(
    {
      src: f.src,
      dst: f.dst,
      protocol: f.protocol,
      ttl: f.ttl ?? 64,
      id: f.id ?? 1,
      dontFragment: f.dontFragment ?? false,
      moreFragments: f.moreFragments ?? false,
      fragmentOffset: f.fragmentOffset ?? 0,
      dscp: 0,
      ecn: 0,
      payloadLength: payload.length,
    },
    p,
    0,
  )
  p.set(payload, 20)
  return p
}

export function icmpv4Echo(type: number, identifier: number, sequence: number, data: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + data.length)
  m.set(data, 8)
  emitIcmpv4({ type, code: 0, identifier, sequence, payloadLength: data.length }, m, 0)
  return m
}

export function icmpv4Message(type: number, code: number, rest: number, body: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + body.length)
  m.set(body, 8)
  emitIcmpv4({ type, code, restOfHeader: rest, nextHopMtu: rest & 0xffff, pointer: rest >>> 24, gateway: rest, payloadLength: body.length }, m, 0)
  return m
}

export function udpDatagram(src: { version: 4; v4: number } | { version: 6; v6: Uint8Array }, dst: typeof src, srcPort: number, dstPort: number, data: Uint8Array): Uint8Array {
  const d = new Uint8Array(8 + data.length)
  d.set(data, 8)
  const pseudo = src.version === 4 && dst.version === 4 ? { version: 4 as const, src: src.v4, dst: dst.v4 } : { version: 6 as const, src: (src as { v6: Uint8Array }).v6, dst: (dst as { v6: Uint8Array }).v6 }
  emitUdp({ srcPort, dstPort, payloadLength: data.length }, d, 0, pseudo)
  return d
}

export function ipv6Packet(src: Uint8Array, dst: Uint8Array, nextHeader: number, payload: Uint8Array, hopLimit = 64): Uint8Array {
  const p = new Uint8Array(40 + payload.length)
  p[0] = 0x60
  p[4] = payload.length >> 8
  p[5] = payload.length & 0xff
  p[6] = nextHeader
  p[7] = hopLimit
  p.set(src, 8)
  p.set(dst, 24)
  p.set(payload, 40)
  return p
}

/** An ICMPv6 message (type, code, 4 bytes, body) with its checksum. */
export function icmpv6Message(src: Uint8Array, dst: Uint8Array, type: number, code: number, rest: number, body: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + body.length)
  m[0] = type
  m[1] = code
  m[4] = rest >>> 24
  m[5] = (rest >>> 16) & 0xff
  m[6] = (rest >>> 8) & 0xff
  m[7] = rest & 0xff
  m.set(body, 8)
  const sum = checksumFold(checksumAccumulate(m, 0, m.length, pseudoHeaderSumIpv6(src, dst, 58, m.length)))
  m[2] = sum >> 8
  m[3] = sum & 0xff
  return m
}

/** An Ethernet frame carrying an IPv6 packet with an ICMPv6 message. */
export function icmpv6Frame(dstMac: Uint8Array, src: Uint8Array, dst: Uint8Array, type: number, code: number, rest: number, body: Uint8Array, hopLimit = 255): Uint8Array {
  return ethernet(dstMac, PEER_MAC, ETHERTYPE_IPV6, ipv6Packet(src, dst, 58, icmpv6Message(src, dst, type, code, rest, body), hopLimit))
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

export function fill(n: number, seed = 0): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (i * 7 + seed) & 0xff
  return b
}

// ------------------------------------------------------------------ checker

export interface Decoded {
  eth: EthernetRepr | null
  arp?: ArpRepr
  ip4?: Ipv4Repr
  ip6?: Ipv6Repr
  icmp4?: Icmpv4Repr
  icmp6?: Icmpv6Repr
  udp?: UdpRepr
  /** The IP packet bytes. */
  ip: Uint8Array
  frame: Uint8Array
}

function ok<T>(x: T | WireError, what: string): T {
  if (x instanceof WireError) throw new Error(`${what}: ${x.toString()}`)
  return x
}

/** Parse a transmitted frame fully, verifying every checksum; throws on anything malformed. */
export function decode(frame: Uint8Array, linkType: LinkType = 'ethernet'): Decoded {
  let eth: EthernetRepr | null = null
  let ipBytes = frame
  if (linkType === 'ethernet') {
    eth = ok(parseEthernet(frame), 'ethernet')
    ipBytes = frame.subarray(eth.payloadOffset)
    if (eth.ethertype === ETHERTYPE_ARP) return { eth, arp: ok(parseArp(ipBytes), 'arp'), ip: ipBytes, frame }
  }
  const d: Decoded = { eth, ip: ipBytes, frame }
  if (ipBytes[0] >> 4 === 4) {
    if (eth !== null && eth.ethertype !== ETHERTYPE_IPV4) throw new Error('ethertype')
    const ip4 = ok(parseIpv4(ipBytes), 'ipv4')
    d.ip4 = ip4
    const isFragment = ip4.moreFragments || ip4.fragmentOffset !== 0
    if (ip4.protocol === 1 && !isFragment) d.icmp4 = ok(parseIcmpv4(ipBytes, ip4.payloadOffset, ip4.payloadLength), 'icmpv4')
    if (ip4.protocol === 17 && !isFragment) d.udp = ok(parseUdp(ipBytes, ip4.payloadOffset, ip4.payloadLength, { version: 4, src: ip4.src, dst: ip4.dst }), 'udp')
  } else {
    if (eth !== null && eth.ethertype !== ETHERTYPE_IPV6) throw new Error('ethertype')
    const ip6 = ok(parseIpv6(ipBytes), 'ipv6')
    d.ip6 = ip6
    const pseudo = { version: 6 as const, src: ip6.src, dst: ip6.dst }
    if (ip6.fragment === undefined || (ip6.fragment.offset === 0 && !ip6.fragment.moreFragments)) {
      if (ip6.upperProtocol === 58) d.icmp6 = ok(parseIcmpv6(ipBytes, ip6.upperOffset, ip6.upperLength, pseudo), 'icmpv6')
      if (ip6.upperProtocol === 17) d.udp = ok(parseUdp(ipBytes, ip6.upperOffset, ip6.upperLength, pseudo), 'udp')
    }
  }
  return d
}

export { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6 }
