// The stack core below TCP: one interface (Ethernet or bare IP link) with
// ARP / NDP, IPv4 / IPv6 input and output (+ fragmentation and reassembly),
// ICMP / ICMPv6, routing, PMTU and transport dispatch. Pure: no Node APIs;
// time comes from the injected clock (or the `now` passed to poll), output
// goes to the injected LinkDevice. Malformed input is counted and dropped,
// never thrown.
import type {
  Clock,
  DestinationKind,
  FrameWriter,
  IcmpErrorInfo,
  IcmpErrorKind,
  IpAddress,
  IpOutput,
  IpPacketInfo,
  LinkDevice,
  Path,
  PathResult,
  PayloadWriter,
  QuotedPacket,
  Random,
  SendOptions,
  SendResult,
  TransportProtocol,
} from './contracts.js'
import {
  arpCounters,
  icmpCounters,
  ipCounters,
  linkCounters,
  udpCounters,
  type StackCounters,
} from './counters.js'
import {
  commonPrefixLength,
  ipv4Broadcast,
  ipv4MulticastMac,
  ipv6MulticastMac,
  isIpv4Multicast,
  isIpv6LinkLocal,
  isIpv6Multicast,
  isIpv6Unspecified,
  linkLocalFromMac,
  prefixMatches,
  sameAddress,
  solicitedNodeAddress,
} from './ip-util.js'
import { NeighborCache, DEFAULT_NEIGHBOR_CONFIG, type NeighborConfig, type NeighborEntry } from './neighbor.js'
import { PmtuCache, DEFAULT_PMTU_CONFIG, type PmtuConfig } from './pmtu.js'
import { Reassembler, type ReassemblyLimits, type ReassemblyTimeout } from './reassembly.js'
import { RoutingTable, type Route } from './routing.js'
import { TokenBucket } from './rate-limit.js'
import { UdpLayer, broadcastCheckFor } from './udp.js'
import { parseCidr, parseIpAddress } from '../wire/address.js'
import { ARP_OPERATION_REPLY, ARP_OPERATION_REQUEST, emitArp, parseArp, type ArpRepr } from '../wire/arp.js'
import { checksumAccumulate, checksumFold, internetChecksum, pseudoHeaderSumIpv6 } from '../wire/checksum.js'
import { WireError } from '../wire/error.js'
import { ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, EthernetView } from '../wire/ethernet.js'
import {
  ICMPV4_DEST_UNREACHABLE,
  ICMPV4_ECHO_REPLY,
  ICMPV4_ECHO_REQUEST,
  ICMPV4_PARAMETER_PROBLEM,
  ICMPV4_REDIRECT,
  ICMPV4_TIME_EXCEEDED,
  ICMPV4_UNREACH_FRAG_NEEDED,
  emitIcmpv4,
  parseIcmpv4,
} from '../wire/icmpv4.js'
import { IP_PROTOCOL_ICMP, IP_PROTOCOL_ICMPV6, IP_PROTOCOL_TCP, IP_PROTOCOL_UDP, Ipv4View } from '../wire/ipv4.js'

// ------------------------------------------------------------------ options

export interface RouteSpec {
  /** 'default' (version taken from `via`), or a CIDR such as '203.0.113.0/24' / '::/0'. */
  to: string
  via?: string
  metric?: number
}

export interface StackCoreOptions {
  link: LinkDevice
  /** CIDR strings: '198.51.100.2/24', '2001:db8::2/64'. */
  addresses?: string[]
  routes?: RouteSpec[]
  clock: Clock
  random: Random
  /** IPv6 link-local address from the MAC (Ethernet links). Default true. */
  linkLocal?: boolean
  /** RFC 4862 DAD before IPv6 addresses become usable (Ethernet links). Default true. */
  dad?: boolean
  /** Learn default routers and on-link prefixes from RAs. Default true. */
  acceptRouterAdvertisements?: boolean
  /** RFC 4862 SLAAC from RA prefixes with the A flag (Ethernet links). Default true. */
  slaac?: boolean
  /** Default TTL / hop limit. */
  hopLimit?: number
  /** ICMP errors per second and burst (per IP version). Default 1000/s, burst 50 (Linux's icmp_msgs_per_sec/burst). */
  icmpRate?: { perSecond: number; burst: number }
  reassembly?: Partial<ReassemblyLimits>
  neighbor?: Partial<NeighborConfig>
  pmtu?: Partial<PmtuConfig>
}

export type AddressState = 'tentative' | 'preferred' | 'duplicate'

export interface LocalAddress {
  readonly address: IpAddress
  readonly prefixLength: number
  state: AddressState
  /** DAD: solicitations sent, and when the next step is due. */
  dadSent: number
  dadTimer: number
  /** Solicited-node multicast group (IPv6). */
  readonly solicitedNode: Uint8Array | null
  /** When the address stops being valid (SLAAC lifetimes); Infinity for configured ones. */
  validUntil: number
  /** Made by SLAAC from a router advertisement. */
  autoconfigured: boolean
}

export interface StackCoreEvents {
  /** An address changed state (DAD finished or failed). */
  onAddressState?(address: LocalAddress): void
}

// ---------------------------------------------------------------- constants

const MAX_IPV4_PACKET = 65535
const IPV6_MIN_MTU = 1280
const BROADCAST_MAC = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
const ALL_NODES = new Uint8Array([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1])
const ALL_ROUTERS = new Uint8Array([0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2])
const UNSPECIFIED6 = new Uint8Array(16)

const ICMPV6_DEST_UNREACHABLE = 1
const ICMPV6_PACKET_TOO_BIG = 2
const ICMPV6_TIME_EXCEEDED = 3
const ICMPV6_PARAMETER_PROBLEM = 4
const ICMPV6_ECHO_REQUEST = 128
const ICMPV6_ECHO_REPLY = 129
const NDP_ROUTER_SOLICIT = 133
const NDP_ROUTER_ADVERT = 134
const NDP_NEIGHBOR_SOLICIT = 135
const NDP_NEIGHBOR_ADVERT = 136
const NDP_REDIRECT = 137
const NDP_OPT_SOURCE_LL = 1
const NDP_OPT_TARGET_LL = 2
const NDP_OPT_PREFIX = 3
const NDP_OPT_MTU = 5

const EXT_HOP_BY_HOP = 0
const EXT_ROUTING = 43
const EXT_FRAGMENT = 44
const EXT_NO_NEXT = 59
const EXT_DEST_OPTS = 60
const MAX_EXTENSION_HEADERS = 8

const ICMP4_QUOTE_MAX = 576 - 20 - 8
const ICMP6_QUOTE_MAX = IPV6_MIN_MTU - 40 - 8

type MutableV4 = { version: 4; v4: number }
type MutableV6 = { version: 6; v6: Uint8Array }

export function createStackCore(options: StackCoreOptions, events: StackCoreEvents = {}): StackCore {
  return new StackCore(options, events)
}

export class StackCore implements IpOutput {
  readonly link: LinkDevice
  readonly routes = new RoutingTable()
  readonly neighbors: NeighborCache
  readonly pmtu: PmtuCache
  readonly reassembly: Reassembler
  readonly counters: StackCounters = {
    link: linkCounters(),
    arp: arpCounters(),
    ip: ipCounters(),
    ip6: ipCounters(),
    icmp: icmpCounters(),
    icmp6: icmpCounters(),
    udp: udpCounters(),
    udp6: udpCounters(),
  }
  /** Parse failures by wire layer and reason: `malformed['ipv4:bad-checksum']`. */
  readonly malformed: Record<string, number> = {}
  /** The keys above, built once per (layer, reason) rather than per malformed packet. */
  private readonly malformedKeys: Record<string, Record<string, string>> = {}
  readonly addresses: LocalAddress[] = []
  /** The UDP transport, registered from the start. */
  readonly udp: UdpLayer

  private readonly clock: Clock
  private readonly random: Random
  private readonly events: StackCoreEvents
  private readonly hopLimit: number
  private readonly dad: boolean
  private readonly acceptRa: boolean
  private readonly slaac: boolean
  private readonly mac: Uint8Array
  private readonly ethernet: boolean
  private linkMtu: number
  private readonly transports: (TransportProtocol | undefined)[] = new Array(256)
  /**
   * The same transports, dense: poll() and nextTimeout() run after every
   * batch and every write, and walking the 256 protocol slots cost about a
   * microsecond each time (a fifth of a ping-pong round trip's CPU).
   */
  private readonly registeredTransports: TransportProtocol[] = []
  private readonly icmpLimit4: TokenBucket
  private readonly icmpLimit6: TokenBucket
  private ipv4Id: number

  // Scratch state reused for every packet (no allocation per packet).
  private readonly ethView = new EthernetView()
  private readonly ip4View = new Ipv4View()
  private readonly src4: MutableV4 = { version: 4, v4: 0 }
  private readonly dst4: MutableV4 = { version: 4, v4: 0 }
  private readonly src6: MutableV6 = { version: 6, v6: new Uint8Array(16) }
  private readonly dst6: MutableV6 = { version: 6, v6: new Uint8Array(16) }
  private readonly info4: PacketInfo
  private readonly info6: PacketInfo
  private readonly macScratch = new Uint8Array(6)
  /** Packets built before they can go straight to the link (fragmentation, ARP/NDP queue). */
  private readonly scratch = new Uint8Array(MAX_IPV4_PACKET + 64)
  /** One fragment at a time while fragmenting (never larger than the link MTU). */
  private readonly fragmentScratch = new Uint8Array(MAX_IPV4_PACKET + 1)
  /** Set per received frame: it arrived as a link-layer broadcast/multicast. */
  private rxLinkMulticast = false
  /** Packets to ourselves, delivered on the next poll (never re-entrantly). */
  private readonly loopback: Uint8Array[] = []
  private nextRouterSolicit = Infinity
  private routerSolicitsSent = 0

  constructor(options: StackCoreOptions, events: StackCoreEvents) {
    const now = options.clock.now()
    this.link = options.link
    this.clock = options.clock
    this.random = options.random
    this.events = events
    this.hopLimit = options.hopLimit ?? 64
    this.ethernet = options.link.linkType === 'ethernet'
    this.mac = this.ethernet ? (options.link.mac ?? new Uint8Array(6)).slice(0, 6) : new Uint8Array(6)
    this.linkMtu = options.link.mtu
    this.dad = this.ethernet && options.dad !== false
    this.acceptRa = options.acceptRouterAdvertisements !== false
    this.slaac = options.slaac !== false
    const rate = options.icmpRate ?? { perSecond: 1000, burst: 50 }
    this.icmpLimit4 = new TokenBucket(rate.perSecond, rate.burst, now)
    this.icmpLimit6 = new TokenBucket(rate.perSecond, rate.burst, now)
    this.ipv4Id = this.random.nextUint32() & 0xffff
    this.neighbors = new NeighborCache(
      { ...DEFAULT_NEIGHBOR_CONFIG, ...options.neighbor },
      {
        solicit: (e, unicast, t) => this.solicit(e, unicast, t),
        resolved: (e) => this.flushPending(e),
        failed: (e, t) => this.resolutionFailed(e, t),
        random: () => this.random.nextUint32() / 0x1_0000_0000,
      },
    )
    this.pmtu = new PmtuCache({ ...DEFAULT_PMTU_CONFIG, ...options.pmtu })
    this.reassembly = new Reassembler({
      maxDatagrams: 64,
      maxBytes: 4 * 1024 * 1024,
      maxFragmentsPerDatagram: 64,
      // One timeout for both versions: RFC 8200 §4.5 says 60 s for IPv6, and
      // RFC 1122 §3.3.2 recommends "between 60 seconds and 120 seconds" for IPv4.
      timeoutMs: 60_000,
      ...options.reassembly,
    })
    this.info4 = new PacketInfo(4, this.src4, this.dst4)
    this.info6 = new PacketInfo(6, this.src6, this.dst6)

    if (this.ethernet && options.linkLocal !== false) this.addAddressInternal({ version: 6, v6: linkLocalFromMac(this.mac) }, 64, now)
    for (const text of options.addresses ?? []) {
      const cidr = parseCidr(text)
      if (cidr === null) throw new TypeError(`not an address/prefix: ${text}`)
      this.addAddressInternal(cidr.address, cidr.prefixLength, now)
    }
    for (const r of options.routes ?? []) this.addRoute(r)
    this.udp = new UdpLayer(this, this.random, { udp: this.counters.udp, udp6: this.counters.udp6 }, broadcastCheckFor(() => this.addresses))
    this.registerTransport(this.udp)
  }

  // ----------------------------------------------------------- configuration

  registerTransport(transport: TransportProtocol): void {
    const previous = this.transports[transport.protocol]
    this.transports[transport.protocol] = transport
    const at = previous === undefined ? -1 : this.registeredTransports.indexOf(previous)
    if (at >= 0) this.registeredTransports[at] = transport
    else this.registeredTransports.push(transport)
  }

  addAddress(cidr: string): LocalAddress {
    const parsed = parseCidr(cidr)
    if (parsed === null) throw new TypeError(`not an address/prefix: ${cidr}`)
    return this.addAddressInternal(parsed.address, parsed.prefixLength, this.clock.now())
  }

  /** Remove an address (and its on-link route); false when it was not ours. */
  removeAddress(cidr: string): boolean {
    const parsed = parseCidr(cidr)
    if (parsed === null) throw new TypeError(`not an address/prefix: ${cidr}`)
    const local = this.addresses.find((a) => sameAddress(a.address, parsed.address))
    if (local === undefined) return false
    this.removeLocal(local)
    return true
  }

  private removeLocal(local: LocalAddress): void {
    const i = this.addresses.indexOf(local)
    if (i === -1) return
    this.addresses.splice(i, 1)
    const stillOnLink = this.addresses.some((a) => a.prefixLength === local.prefixLength && prefixMatches(a.address, local.address, local.prefixLength))
    if (!stillOnLink) this.routes.remove(local.address, local.prefixLength, null, 'connected')
    this.routes.generation++
  }

  addRoute(spec: RouteSpec): Route {
    const via = spec.via === undefined ? null : parseIpAddress(spec.via)
    if (spec.via !== undefined && via === null) throw new TypeError(`not an address: ${spec.via}`)
    if (spec.to === 'default') {
      if (via === null) throw new TypeError('a default route needs `via`')
      const prefix: IpAddress = via.version === 4 ? { version: 4, v4: 0 } : { version: 6, v6: new Uint8Array(16) }
      return this.routes.add({ prefix, prefixLength: 0, via, metric: spec.metric })
    }
    const cidr = parseCidr(spec.to)
    if (cidr === null) throw new TypeError(`not a prefix: ${spec.to}`)
    if (via !== null && via.version !== cidr.address.version) throw new TypeError(`route ${spec.to} via ${spec.via}: versions differ`)
    return this.routes.add({ prefix: cidr.address, prefixLength: cidr.prefixLength, via, metric: spec.metric })
  }

  get mtu(): number {
    return this.linkMtu
  }

  private addAddressInternal(address: IpAddress, prefixLength: number, now: number): LocalAddress {
    const v6 = address.version === 6
    const local: LocalAddress = {
      address,
      prefixLength,
      state: v6 && this.dad ? 'tentative' : 'preferred',
      dadSent: 0,
      // RFC 4862 §5.4.2: delay the first DAD solicitation by a random 0..MAX_RTR_SOLICITATION_DELAY (1 s).
      dadTimer: v6 && this.dad ? now + (this.random.nextUint32() % 1000) : Infinity,
      solicitedNode: v6 ? solicitedNodeAddress(address.v6) : null,
      validUntil: Infinity,
      autoconfigured: false,
    }
    this.addresses.push(local)
    // The on-link prefix of the address (a /32 or /128 adds nothing useful).
    if (!(address.version === 4 ? prefixLength >= 32 : prefixLength >= 128)) {
      this.routes.add({ prefix: address, prefixLength, source: 'connected' })
    }
    if (address.version === 4 && this.ethernet) this.sendGratuitousArp(address.v4)
    if (local.state === 'preferred') this.addressUsable(local, now)
    return local
  }

  private addressUsable(local: LocalAddress, now: number): void {
    // RFC 4861 §6.3.7: a host sends Router Solicitations once it has a usable link-local address.
    if (local.address.version === 6 && this.ethernet && this.acceptRa && isIpv6LinkLocal(local.address.v6) && this.routerSolicitsSent === 0) {
      this.nextRouterSolicit = now
    }
  }

  // ------------------------------------------------------------------ input

  /** One received frame (Ethernet) or packet (IP link). `frame` is only read during the call. */
  input(frame: Uint8Array, now: number = this.clock.now()): void {
    this.counters.link.InFrames++
    this.rxLinkMulticast = false
    if (!this.ethernet) {
      if (frame.length < 1) {
        this.counters.link.InErrors++
        return
      }
      const version = frame[0] >>> 4
      if (version === 4) this.ipv4Input(frame, 0, frame.length, now)
      else if (version === 6) this.ipv6Input(frame, 0, frame.length, now, false)
      else this.counters.link.InErrors++
      return
    }
    const eth = this.ethView
    if (!eth.reset(frame)) {
      this.counters.link.InErrors++
      this.countMalformed('ethernet', 'truncated')
      return
    }
    if (eth.isMulticastDst()) {
      this.rxLinkMulticast = true
    } else {
      for (let i = 0; i < 6; i++) {
        if (frame[i] !== this.mac[i]) {
          this.counters.link.InOtherHost++
          return
        }
      }
    }
    if (eth.tagged) {
      // 802.1Q frames belong to a VLAN we are not a member of.
      this.counters.link.InUnknownEthertype++
      return
    }
    const type = eth.ethertype
    const offset = eth.payloadOffset
    const length = eth.payloadLength
    if (type === ETHERTYPE_IPV4) this.ipv4Input(frame, offset, length, now)
    else if (type === ETHERTYPE_IPV6) this.ipv6Input(frame, offset, length, now, false)
    else if (type === ETHERTYPE_ARP) this.arpInput(frame, offset, length, now)
    else this.counters.link.InUnknownEthertype++
  }

  /** Run timers due at `now`. */
  poll(now: number = this.clock.now()): void {
    // Nothing polled arrived as a link-layer broadcast (ICMP errors may be due).
    this.rxLinkMulticast = false
    while (this.loopback.length > 0) {
      const packet = this.loopback.shift()!
      if (packet[0] >>> 4 === 4) this.ipv4Input(packet, 0, packet.length, now)
      else this.ipv6Input(packet, 0, packet.length, now, false)
    }
    this.neighbors.poll(now)
    this.reassemblyNow = now
    this.reassembly.expire(now, this.onReassemblyTimeout)
    this.routes.expire(now)
    this.pmtu.expire(now)
    for (const local of this.addresses) if (local.dadTimer <= now) this.dadStep(local, now)
    for (let i = this.addresses.length - 1; i >= 0; i--) {
      const local = this.addresses[i]
      // RFC 4862 §5.5.4: an address whose valid lifetime ends is removed.
      if (local.validUntil <= now) this.removeLocal(local)
    }
    if (this.nextRouterSolicit <= now) this.sendRouterSolicit(now)
    const transports = this.registeredTransports
    for (let i = 0; i < transports.length; i++) transports[i].poll?.(now)
    this.link.flush?.()
  }

  /** The `now` of the poll() running reassembly.expire (one callback, made once). */
  private reassemblyNow = 0
  private readonly onReassemblyTimeout = (t: ReassemblyTimeout): void => {
    const now = this.reassemblyNow
    if (t.version === 4) {
      this.counters.ip.ReasmTimeout++
      this.counters.ip.ReasmFails++
      // RFC 792: code 1 "fragment reassembly time exceeded" (needs the first fragment to quote).
      if (t.firstFragment !== null) this.sendIcmp4Error(ICMPV4_TIME_EXCEEDED, 1, 0, t.firstFragment, 0, t.firstFragment.length, 'unicast', now)
    } else {
      this.counters.ip6.ReasmTimeout++
      this.counters.ip6.ReasmFails++
      // RFC 8200 §4.5: "an ICMP Time Exceeded -- Fragment Reassembly Time Exceeded message should be sent".
      if (t.firstFragment !== null) this.sendIcmp6Error(ICMPV6_TIME_EXCEEDED, 1, 0, t.firstFragment, 0, t.firstFragment.length, 'unicast', now)
    }
  }

  /** The earliest time poll() has work to do (ms); Infinity when idle. */
  nextTimeout(): number {
    let next = this.loopback.length > 0 ? this.clock.now() : Infinity
    next = Math.min(next, this.neighbors.nextTimeout(), this.reassembly.nextTimeout(), this.pmtu.nextTimeout(), this.nextRouterSolicit)
    for (const r of this.routes.list()) if (r.expiresAt < next) next = r.expiresAt
    for (const a of this.addresses) next = Math.min(next, a.dadTimer, a.validUntil)
    const transports = this.registeredTransports
    for (let i = 0; i < transports.length; i++) {
      const t = transports[i]
      if (t.nextTimeout !== undefined) {
        const at = t.nextTimeout()
        if (at < next) next = at
      }
    }
    return next
  }

  // -------------------------------------------------------------------- ARP

  private arpInput(frame: Uint8Array, offset: number, length: number, now: number): void {
    const arp = parseArp(frame, offset, length)
    if (arp instanceof WireError) {
      this.counters.arp.InErrors++
      this.countMalformed('arp', arp.reason)
      return
    }
    const c = this.counters.arp
    if (arp.operation === ARP_OPERATION_REQUEST) c.InRequests++
    else if (arp.operation === ARP_OPERATION_REPLY) c.InReplies++
    else {
      c.InErrors++
      return
    }
    const sender: IpAddress = { version: 4, v4: arp.senderIp }
    if (this.findLocal(sender) !== null) {
      // Someone else claims one of our addresses (RFC 5227 §2.4 calls it a conflict); never learn it.
      if (!macEq(arp.senderMac, this.mac)) c.AddressConflicts++
      return
    }
    const target = this.findLocal({ version: 4, v4: arp.targetIp })
    // RFC 826: "If the pair <protocol type, sender protocol address> is already
    // in my translation table, update the sender hardware address field ...
    // Am I the target protocol address? If Merge_flag is false, add the triplet".
    // A reply to our request confirms reachability; anything else is only a hint.
    if (arp.senderIp !== 0) {
      const solicited = arp.operation === ARP_OPERATION_REPLY && target !== null
      this.neighbors.learn(sender, arp.senderMac, solicited, true, target !== null, now)
    }
    if (target === null || arp.operation !== ARP_OPERATION_REQUEST) return
    // "Swap hardware and protocol fields, putting the local hardware and protocol addresses in the sender fields."
    const reply: ArpRepr = { operation: ARP_OPERATION_REPLY, senderMac: this.mac, senderIp: arp.targetIp, targetMac: arp.senderMac, targetIp: arp.senderIp }
    if (this.sendArp(reply, arp.senderMac)) c.OutReplies++
  }

  private sendArp(repr: ArpRepr, dstMac: Uint8Array): boolean {
    const tx = this.link.acquireTx()
    if (tx === null) {
      this.counters.link.OutNoBuffer++
      return false
    }
    const bytes = tx.bytes
    // Copy the target MAC first: it may alias the received frame.
    const l2 = this.writeEthernetHeader(bytes, dstMac, ETHERTYPE_ARP)
    emitArp(repr, bytes, l2)
    let length = l2 + 28
    while (length < 60) bytes[length++] = 0 // Ethernet minimum frame, padded
    this.link.transmit(tx.index, length)
    this.counters.link.OutFrames++
    return true
  }

  private sendGratuitousArp(v4: number): void {
    // RFC 5227 §3 / RFC 826: an announcement is a request with sender = target = our address.
    const ok = this.sendArp({ operation: ARP_OPERATION_REQUEST, senderMac: this.mac, senderIp: v4, targetMac: new Uint8Array(6), targetIp: v4 }, BROADCAST_MAC)
    if (ok) this.counters.arp.OutGratuitous++
  }

  // ------------------------------------------------------------------- IPv4

  private ipv4Input(bytes: Uint8Array, offset: number, length: number, now: number): void {
    const c = this.counters.ip
    c.InReceives++
    const ip = this.ip4View
    if (!ip.reset(bytes, offset, length)) {
      c.InHdrErrors++
      this.countMalformed('ipv4', length < 20 ? 'truncated' : 'bad-length')
      return
    }
    const headerLength = ip.headerLength
    const totalLength = ip.totalLength
    if (totalLength < headerLength) {
      c.InHdrErrors++
      this.countMalformed('ipv4', 'bad-length')
      return
    }
    if (totalLength > length) {
      c.InTruncatedPkts++
      this.countMalformed('ipv4', 'truncated')
      return
    }
    // RFC 1122 §3.2.1.2: "A host MUST verify the IP header checksum on every received datagram".
    if (internetChecksum(bytes, offset, headerLength) !== 0) {
      c.InHdrErrors++
      c.InCsumErrors++
      this.countMalformed('ipv4', 'bad-checksum')
      return
    }
    const src = ip.src
    const dst = ip.dst
    // RFC 1122 §3.2.1.3: discard datagrams whose source is a broadcast or multicast address.
    if (isIpv4Multicast(src) || src === 0xffffffff || this.isIpv4BroadcastAddress(src)) {
      c.InAddrErrors++
      return
    }
    const dstKind = this.ipv4DestinationKind(dst)
    if (dstKind === null) {
      // We are a host: not ours means not forwarded (RFC 1122 §3.3.4.2).
      c.InAddrErrors++
      return
    }
    const protocol = ip.protocol
    if (ip.isFragment) {
      c.ReasmReqds++
      const fragmentOffset = ip.fragmentOffset
      const more = ip.moreFragments
      const dataLength = totalLength - headerLength
      // RFC 791: every fragment but the last carries a multiple of 8 data bytes.
      if (more && (dataLength & 7) !== 0) {
        c.ReasmFails++
        c.InHdrErrors++
        return
      }
      const packet = offset === 0 && totalLength === bytes.length ? bytes : bytes.subarray(offset, offset + totalLength)
      const outcome = this.reassembly.add(4, packet, headerLength, dataLength, src, dst, null, null, ip.id, protocol, fragmentOffset, more, now)
      if (outcome === 'incomplete' || outcome === 'duplicate') return
      if (outcome !== 'complete') {
        c.ReasmFails++
        if (outcome === 'overlap') c.ReasmOverlaps++
        return
      }
      c.ReasmOKs++
      const whole = this.reassembly.completed
      this.ipv4Input(whole, 0, whole.length, now)
      return
    }
    const info = this.info4
    this.src4.v4 = src
    this.dst4.v4 = dst
    info.hopLimit = ip.ttl
    info.protocol = protocol
    info.dstKind = dstKind
    const tos = bytes[offset + 1]
    info.dscp = tos >>> 2
    info.ecn = tos & 3
    info.setPacket(bytes, offset, offset + totalLength)
    const payloadOffset = offset + headerLength
    const payloadLength = totalLength - headerLength
    if (protocol === IP_PROTOCOL_ICMP) {
      c.InDelivers++
      this.icmpv4Input(bytes, payloadOffset, payloadLength, dstKind, now)
      return
    }
    const transport = this.transports[protocol]
    if (transport === undefined) {
      c.InUnknownProtos++
      // RFC 1122 §3.2.2.1: protocol unreachable (code 2) for an unknown protocol.
      this.sendIcmp4Error(ICMPV4_DEST_UNREACHABLE, 2, 0, bytes, offset, totalLength, dstKind, now)
      return
    }
    c.InDelivers++
    const accepted = transport.receive(info, bytes.subarray(payloadOffset, payloadOffset + payloadLength), now)
    if (!accepted) this.sendIcmp4Error(ICMPV4_DEST_UNREACHABLE, 3, 0, bytes, offset, totalLength, dstKind, now)
  }

  /** How `dst` relates to us, or null when the packet is not for us. */
  private ipv4DestinationKind(dst: number): DestinationKind | null {
    if (dst === 0xffffffff) return 'broadcast'
    // RFC 1122 §3.2.2.6-ish: 224.0.0.1 (all hosts) is always joined; other groups are not.
    if (isIpv4Multicast(dst)) return dst === 0xe0000001 ? 'multicast' : null
    for (const a of this.addresses) {
      if (a.address.version !== 4) continue
      if (a.address.v4 === dst) return 'unicast'
      if (a.prefixLength < 31 && ipv4Broadcast(a.address.v4, a.prefixLength) === dst) return 'broadcast'
    }
    return null
  }

  private isIpv4BroadcastAddress(v4: number): boolean {
    if (v4 === 0xffffffff) return true
    for (const a of this.addresses) {
      if (a.address.version === 4 && a.prefixLength < 31 && ipv4Broadcast(a.address.v4, a.prefixLength) === v4) return true
    }
    return false
  }

  // ------------------------------------------------------------------ ICMPv4

  private icmpv4Input(bytes: Uint8Array, offset: number, length: number, dstKind: DestinationKind, now: number): void {
    const c = this.counters.icmp
    c.InMsgs++
    const icmp = parseIcmpv4(bytes, offset, length)
    if (icmp instanceof WireError) {
      c.InErrors++
      if (icmp.reason === 'bad-checksum') c.InCsumErrors++
      this.countMalformed('icmpv4', icmp.reason)
      return
    }
    switch (icmp.type) {
      case ICMPV4_ECHO_REQUEST: {
        c.InEchos++
        // RFC 1122 §3.2.2.6: an echo request to a broadcast/multicast address MAY be silently discarded (Linux default).
        if (dstKind !== 'unicast') return
        const reqSrc = this.src4.v4
        const reqDst = this.dst4.v4
        const dataOffset = icmp.payloadOffset
        const dataLength = icmp.payloadLength
        // "The data received in the echo message must be returned in the echo reply message."
        const result = this.sendIp({ version: 4, v4: reqDst }, { version: 4, v4: reqSrc }, IP_PROTOCOL_ICMP, 8 + dataLength, (out, at) => {
          out.set(bytes.subarray(dataOffset, dataOffset + dataLength), at + 8)
          emitIcmpv4({ type: ICMPV4_ECHO_REPLY, code: 0, identifier: icmp.identifier, sequence: icmp.sequence, payloadLength: dataLength }, out, at)
        })
        if (result === 'sent' || result === 'queued') {
          c.OutMsgs++
          c.OutEchoReps++
        }
        return
      }
      case ICMPV4_ECHO_REPLY:
        c.InEchoReps++
        this.transports[IP_PROTOCOL_ICMP]?.receive(this.info4, bytes.subarray(offset, offset + length), now)
        return
      case ICMPV4_DEST_UNREACHABLE:
        c.InDestUnreachs++
        this.icmpErrorToTransport4(icmp.type, icmp.code, icmp.nextHopMtu ?? 0, bytes, icmp.payloadOffset, icmp.payloadLength, now)
        return
      case ICMPV4_TIME_EXCEEDED:
        c.InTimeExcds++
        this.icmpErrorToTransport4(icmp.type, icmp.code, 0, bytes, icmp.payloadOffset, icmp.payloadLength, now)
        return
      case ICMPV4_PARAMETER_PROBLEM:
        c.InParmProbs++
        this.icmpErrorToTransport4(icmp.type, icmp.code, 0, bytes, icmp.payloadOffset, icmp.payloadLength, now)
        return
      case ICMPV4_REDIRECT:
        this.counters.icmp.InRedirects++
        this.redirect4(icmp.gateway ?? 0, bytes, icmp.payloadOffset, icmp.payloadLength, now)
        return
      default:
        // Timestamps, source quench (deprecated, RFC 6633) ...: counted, ignored.
        return
    }
  }

  /**
   * RFC 1122 §3.2.2.2: "A host receiving a Redirect message MUST update its
   * routing information accordingly" — as a host route, accepted only from
   * the gateway we currently use for that destination and only towards a
   * gateway on a directly connected network (RFC 1122 §3.3.1.2).
   */
  private redirect4(gateway: number, bytes: Uint8Array, offset: number, length: number, now: number): void {
    if (length < 28 || bytes[offset] >>> 4 !== 4) return
    const destination: IpAddress = { version: 4, v4: readU32(bytes, offset + 16) }
    const current = this.routes.lookup(destination)
    const from = this.src4.v4
    if (current === null || current.via === null || current.via.version !== 4 || current.via.v4 !== from) return
    const newGateway: IpAddress = { version: 4, v4: gateway }
    const onLink = this.routes.lookup(newGateway)
    if (onLink === null || onLink.via !== null || this.findLocal(newGateway) !== null) return
    this.routes.add({ prefix: destination, prefixLength: 32, via: newGateway, source: 'redirect', expiresAt: now + REDIRECT_LIFETIME_MS })
  }

  private icmpErrorToTransport4(type: number, code: number, mtu: number, bytes: Uint8Array, offset: number, length: number, now: number): void {
    // The quoted datagram: its header and at least 8 bytes of its payload (RFC 792).
    if (length < 28 || bytes[offset] >>> 4 !== 4) {
      this.counters.icmp.InErrors++
      return
    }
    const quotedHeaderLength = (bytes[offset] & 0x0f) * 4
    if (quotedHeaderLength < 20 || length < quotedHeaderLength + 8) {
      this.counters.icmp.InErrors++
      return
    }
    const quotedSrc = readU32(bytes, offset + 12)
    const quotedDst = readU32(bytes, offset + 16)
    // Only errors about packets we sent are of interest.
    if (this.findLocal({ version: 4, v4: quotedSrc }) === null) return
    const protocol = bytes[offset + 9]
    const remote: IpAddress = { version: 4, v4: quotedDst }
    let kind: IcmpErrorKind
    let newMtu: number | undefined
    if (type === ICMPV4_DEST_UNREACHABLE) {
      if (code === ICMPV4_UNREACH_FRAG_NEEDED) {
        kind = 'packet-too-big'
        // RFC 1191 §6.1: "When a Datagram Too Big message is received, it reduces its estimate of the PMTU".
        const totalLength = readU16(bytes, offset + 2)
        this.pmtu.update(remote, mtu, this.linkMtu, totalLength, now)
        newMtu = this.pmtu.get(remote, this.linkMtu)
      } else kind = unreachableKind4(code)
    } else if (type === ICMPV4_TIME_EXCEEDED) kind = code === 1 ? 'reassembly-time-exceeded' : 'time-exceeded'
    else kind = 'parameter-problem'
    const info: IcmpErrorInfo = {
      kind,
      version: 4,
      type,
      code,
      from: { version: 4, v4: this.src4.v4 },
      hard: kind === 'protocol-unreachable' || kind === 'port-unreachable',
    }
    if (newMtu !== undefined) info.mtu = newMtu
    const quoted: QuotedPacket = {
      version: 4,
      src: { version: 4, v4: quotedSrc },
      dst: remote,
      protocol,
      transportHeader: bytes.subarray(offset + quotedHeaderLength, offset + length),
    }
    this.transports[protocol]?.receiveIcmpError(info, quoted, now)
  }

  /**
   * RFC 1122 §3.2.2: "An ICMP error message MUST NOT be sent as the result of
   * receiving: an ICMP error message, a datagram destined to an IP broadcast
   * or IP multicast address, a datagram sent as a link-layer broadcast, a
   * non-initial fragment, a datagram whose source address does not define a
   * single host". Rate limited (RFC 1812 §4.3.2.8).
   */
  private sendIcmp4Error(
    type: number,
    code: number,
    restOfHeader: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    dstKind: DestinationKind,
    now: number,
  ): void {
    if (dstKind !== 'unicast' || this.rxLinkMulticast || length < 20) return
    const headerLength = (bytes[offset] & 0x0f) * 4
    const protocol = bytes[offset + 9]
    if (protocol === IP_PROTOCOL_ICMP && length > headerLength) {
      const t = bytes[offset + headerLength]
      if (t !== ICMPV4_ECHO_REQUEST && t !== ICMPV4_ECHO_REPLY && t !== 13 && t !== 14) return
    }
    if ((readU16(bytes, offset + 6) & 0x1fff) !== 0) return
    const origSrc = readU32(bytes, offset + 12)
    if (origSrc === 0 || isIpv4Multicast(origSrc) || this.isIpv4BroadcastAddress(origSrc) || origSrc >>> 24 === 127) return
    const c = this.counters.icmp
    if (!this.icmpLimit4.take(now)) {
      c.OutRateLimited++
      return
    }
    const quoteLength = Math.min(length, ICMP4_QUOTE_MAX)
    const origDst = readU32(bytes, offset + 16)
    const dst: IpAddress = { version: 4, v4: origSrc }
    const src: IpAddress | null = this.findLocal({ version: 4, v4: origDst }) !== null ? { version: 4, v4: origDst } : this.selectSource(dst)
    if (src === null) return
    const result = this.sendIp(src, dst, IP_PROTOCOL_ICMP, 8 + quoteLength, (out, at) => {
      out.set(bytes.subarray(offset, offset + quoteLength), at + 8)
      emitIcmpv4({ type, code, restOfHeader, nextHopMtu: restOfHeader, pointer: restOfHeader, payloadLength: quoteLength }, out, at)
    })
    if (result === 'sent' || result === 'queued') {
      c.OutMsgs++
      c.OutErrors++
      if (type === ICMPV4_DEST_UNREACHABLE) c.OutDestUnreachs++
      else if (type === ICMPV4_TIME_EXCEEDED) c.OutTimeExcds++
      else if (type === ICMPV4_PARAMETER_PROBLEM) c.OutParmProbs++
    }
  }

  // ------------------------------------------------------------------- IPv6

  private ipv6Input(bytes: Uint8Array, offset: number, length: number, now: number, reassembled: boolean): void {
    const c = this.counters.ip6
    c.InReceives++
    if (length < 40 || bytes[offset] >>> 4 !== 6) {
      c.InHdrErrors++
      this.countMalformed('ipv6', length < 40 ? 'truncated' : 'bad-version')
      return
    }
    const payloadLength = readU16(bytes, offset + 4)
    if (payloadLength === 0 && bytes[offset + 6] === EXT_HOP_BY_HOP) {
      // Jumbograms (RFC 2675) never fit our links.
      c.InHdrErrors++
      this.countMalformed('ipv6', 'unsupported')
      return
    }
    if (40 + payloadLength > length) {
      c.InTruncatedPkts++
      this.countMalformed('ipv6', 'truncated')
      return
    }
    const src = this.src6.v6
    const dst = this.dst6.v6
    for (let i = 0; i < 16; i++) {
      src[i] = bytes[offset + 8 + i]
      dst[i] = bytes[offset + 24 + i]
    }
    // RFC 4291 §2.7: "Multicast addresses must not be used as source addresses".
    if (isIpv6Multicast(src)) {
      c.InAddrErrors++
      return
    }
    const target = this.ipv6DestinationKind(dst)
    if (target === null) {
      c.InAddrErrors++
      return
    }
    const dstKind = target.kind
    const end = offset + 40 + payloadLength
    let next = bytes[offset + 6]
    let nextFieldAt = offset + 6
    let at = offset + 40
    let extensions = 0
    for (;;) {
      if (next === EXT_HOP_BY_HOP || next === EXT_DEST_OPTS || next === EXT_ROUTING) {
        // RFC 8200 §4.3: Hop-by-Hop "is restricted to appear immediately after an IPv6 header".
        if (next === EXT_HOP_BY_HOP && at !== offset + 40) {
          c.InHdrErrors++
          this.sendIcmp6Error(ICMPV6_PARAMETER_PROBLEM, 1, nextFieldAt - offset, bytes, offset, 40 + payloadLength, dstKind, now)
          return
        }
        if (at + 8 > end || ++extensions > MAX_EXTENSION_HEADERS) {
          c.InHdrErrors++
          this.countMalformed('ipv6', 'truncated')
          return
        }
        const extLength = (bytes[at + 1] + 1) * 8
        if (at + extLength > end) {
          c.InHdrErrors++
          this.countMalformed('ipv6', 'truncated')
          return
        }
        if (next === EXT_ROUTING) {
          // RFC 8200 §4.4: with Segments Left non-zero a host (which routes
          // nothing) "must discard the packet and send an ICMP Parameter
          // Problem, Code 0 ... pointing to the unrecognized Routing Type".
          if (bytes[at + 3] !== 0) {
            c.InHdrErrors++
            this.sendIcmp6Error(ICMPV6_PARAMETER_PROBLEM, 0, at + 2 - offset, bytes, offset, 40 + payloadLength, dstKind, now)
            return
          }
        } else if (!this.ipv6Options(bytes, offset, at, extLength, payloadLength, dstKind, now)) {
          return
        }
        nextFieldAt = at
        next = bytes[at]
        at += extLength
        continue
      }
      if (next === EXT_FRAGMENT) {
        if (at + 8 > end) {
          c.InHdrErrors++
          this.countMalformed('ipv6', 'truncated')
          return
        }
        if (reassembled) {
          // A fragment inside a reassembled packet: nested fragmentation is never legitimate.
          c.InHdrErrors++
          return
        }
        this.ipv6Fragment(bytes, offset, at, end, payloadLength, dstKind, now)
        return
      }
      if (next === EXT_NO_NEXT) return
      break
    }
    if (target.tentative && next !== IP_PROTOCOL_ICMPV6) {
      // RFC 4862 §5.4: packets to a tentative address other than DAD's NS/NA are silently discarded.
      c.InAddrErrors++
      return
    }
    const info = this.info6
    info.hopLimit = bytes[offset + 7]
    info.protocol = next
    info.dstKind = dstKind
    const trafficClass = ((bytes[offset] & 0x0f) << 4) | (bytes[offset + 1] >>> 4)
    info.dscp = trafficClass >>> 2
    info.ecn = trafficClass & 3
    info.setPacket(bytes, offset, end)
    if (next === IP_PROTOCOL_ICMPV6) {
      c.InDelivers++
      this.icmpv6Input(bytes, offset, at, end - at, dstKind, target.tentative, now)
      return
    }
    const transport = this.transports[next]
    if (transport === undefined) {
      c.InUnknownProtos++
      // RFC 8200 §4: an unrecognized Next Header → Parameter Problem code 1, pointer at that field.
      this.sendIcmp6Error(ICMPV6_PARAMETER_PROBLEM, 1, nextFieldAt - offset, bytes, offset, 40 + payloadLength, dstKind, now)
      return
    }
    c.InDelivers++
    const accepted = transport.receive(info, bytes.subarray(at, end), now)
    // RFC 4443 §3.1: port unreachable (code 4) "if the transport protocol has no listener".
    if (!accepted) this.sendIcmp6Error(ICMPV6_DEST_UNREACHABLE, 4, 0, bytes, offset, 40 + payloadLength, dstKind, now)
  }

  /** Hop-by-hop / destination options; false when the packet must be dropped (RFC 8200 §4.2). */
  private ipv6Options(bytes: Uint8Array, offset: number, at: number, extLength: number, payloadLength: number, dstKind: DestinationKind, now: number): boolean {
    const end = at + extLength
    let p = at + 2
    while (p < end) {
      const type = bytes[p]
      if (type === 0) {
        p++
        continue
      }
      if (p + 2 > end || p + 2 + bytes[p + 1] > end) {
        this.counters.ip6.InHdrErrors++
        this.countMalformed('ipv6', 'option-overrun')
        return false
      }
      // PadN (1) and Router Alert (5) are understood; everything else is unknown to us.
      if (type !== 1 && type !== 5) {
        // "The highest-order two bits of the Option Type specify the action".
        const action = type >>> 6
        if (action !== 0) {
          this.counters.ip6.InHdrErrors++
          if (action === 2 || (action === 3 && dstKind === 'unicast')) {
            this.sendIcmp6Error(ICMPV6_PARAMETER_PROBLEM, 2, p - offset, bytes, offset, 40 + payloadLength, dstKind, now, action === 2)
          }
          return false
        }
      }
      p += 2 + bytes[p + 1]
    }
    return true
  }

  private ipv6Fragment(bytes: Uint8Array, offset: number, at: number, end: number, payloadLength: number, dstKind: DestinationKind, now: number): void {
    const c = this.counters.ip6
    c.ReasmReqds++
    const nextHeader = bytes[at]
    const field = readU16(bytes, at + 2)
    const fragmentOffset = field & 0xfff8
    const more = (field & 1) !== 0
    const id = readU32(bytes, at + 4)
    const dataStart = at + 8
    const dataLength = end - dataStart
    if (!more && fragmentOffset === 0) {
      // RFC 6946: an "atomic fragment" is processed as a whole packet, not reassembled.
      c.ReasmOKs++
      const whole = this.scratch
      whole.set(bytes.subarray(offset, offset + 40), 0)
      whole.set(bytes.subarray(dataStart, end), 40)
      whole[4] = dataLength >>> 8
      whole[5] = dataLength & 0xff
      whole[6] = nextHeader
      const copy = whole.slice(0, 40 + dataLength)
      this.ipv6Input(copy, 0, copy.length, now, true)
      return
    }
    // RFC 8200 §4.5: "If the length of a fragment ... is not a multiple of 8
    // octets and the M flag of that fragment is 1, then that fragment must be
    // discarded and an ICMP Parameter Problem, Code 0, message should be sent
    // ..., pointing to the Payload Length field".
    if (more && (dataLength & 7) !== 0) {
      c.ReasmFails++
      c.InHdrErrors++
      this.sendIcmp6Error(ICMPV6_PARAMETER_PROBLEM, 0, 4, bytes, offset, 40 + payloadLength, dstKind, now)
      return
    }
    if (fragmentOffset === 0 && !this.headerChainComplete(bytes, dataStart, end, nextHeader)) {
      // RFC 7112 §5: "If the first fragment does not include all headers through an Upper-Layer
      // header, then that fragment should be discarded and an ICMP Parameter Problem, Code 3".
      c.ReasmFails++
      c.InHdrErrors++
      this.sendIcmp6Error(ICMPV6_PARAMETER_PROBLEM, 3, 0, bytes, offset, 40 + payloadLength, dstKind, now)
      return
    }
    const packet = bytes.subarray(offset, end)
    const outcome = this.reassembly.add(6, packet, dataStart - offset, dataLength, 0, 0, this.src6.v6, this.dst6.v6, id, nextHeader, fragmentOffset, more, now)
    if (outcome === 'incomplete' || outcome === 'duplicate') return
    if (outcome !== 'complete') {
      c.ReasmFails++
      if (outcome === 'overlap') c.ReasmOverlaps++
      return
    }
    c.ReasmOKs++
    const whole = this.reassembly.completed
    this.ipv6Input(whole, 0, whole.length, now, true)
  }

  /** Whether [at, end) starts with extension headers up to and including a whole upper-layer header. */
  private headerChainComplete(bytes: Uint8Array, at: number, end: number, next: number): boolean {
    for (let n = 0; n < MAX_EXTENSION_HEADERS; n++) {
      if (next === EXT_DEST_OPTS || next === EXT_ROUTING || next === EXT_HOP_BY_HOP) {
        if (at + 2 > end) return false
        const len = (bytes[at + 1] + 1) * 8
        next = bytes[at]
        at += len
        continue
      }
      if (next === EXT_NO_NEXT) return true
      const need = next === IP_PROTOCOL_TCP ? 20 : next === IP_PROTOCOL_UDP || next === IP_PROTOCOL_ICMPV6 ? 8 : 0
      return at + need <= end
    }
    return false
  }

  private ipv6DestinationKind(dst: Uint8Array): { kind: DestinationKind; tentative: boolean } | null {
    if (isIpv6Multicast(dst)) {
      if (equal16(dst, ALL_NODES) || (dst[1] === 1 && dst[15] === 1 && isAllZeroBetween(dst, 2, 15))) return MULTICAST_OK
      for (const a of this.addresses) if (a.solicitedNode !== null && a.state !== 'duplicate' && equal16(a.solicitedNode, dst)) return MULTICAST_OK
      return null
    }
    for (const a of this.addresses) {
      if (a.address.version === 6 && equal16(a.address.v6, dst)) {
        if (a.state === 'preferred') return UNICAST_OK
        if (a.state === 'tentative') return UNICAST_TENTATIVE
        return null
      }
    }
    return null
  }

  // ------------------------------------------------------------------ ICMPv6

  private icmpv6Input(bytes: Uint8Array, ipOffset: number, at: number, length: number, dstKind: DestinationKind, tentative: boolean, now: number): void {
    const c = this.counters.icmp6
    c.InMsgs++
    if (length < 4) {
      c.InErrors++
      this.countMalformed('icmpv6', 'truncated')
      return
    }
    // RFC 4443 §2.3: the checksum covers the pseudo-header and the message.
    const sum = checksumAccumulate(bytes, at, length, pseudoHeaderSumIpv6(this.src6.v6, this.dst6.v6, IP_PROTOCOL_ICMPV6, length))
    if (checksumFold(sum) !== 0) {
      c.InErrors++
      c.InCsumErrors++
      this.countMalformed('icmpv6', 'bad-checksum')
      return
    }
    const type = bytes[at]
    const code = bytes[at + 1]
    if (tentative && type !== NDP_NEIGHBOR_SOLICIT && type !== NDP_NEIGHBOR_ADVERT) return
    switch (type) {
      case ICMPV6_ECHO_REQUEST: {
        c.InEchos++
        if (length < 8) {
          c.InErrors++
          return
        }
        // RFC 4443 §4.2: replies to multicast echo requests are optional; like Linux, we answer only unicast.
        if (dstKind !== 'unicast') return
        const src: IpAddress = { version: 6, v6: this.dst6.v6.slice() }
        const dst: IpAddress = { version: 6, v6: this.src6.v6.slice() }
        const result = this.sendIp(src, dst, IP_PROTOCOL_ICMPV6, length, (out, o) => {
          out.set(bytes.subarray(at, at + length), o)
          out[o] = ICMPV6_ECHO_REPLY
          out[o + 1] = 0
          fillIcmpv6Checksum(out, o, length, src.v6, dst.v6)
        })
        if (result === 'sent' || result === 'queued') {
          c.OutMsgs++
          c.OutEchoReps++
        }
        return
      }
      case ICMPV6_ECHO_REPLY:
        c.InEchoReps++
        this.transports[IP_PROTOCOL_ICMPV6]?.receive(this.info6, bytes.subarray(at, at + length), now)
        return
      case ICMPV6_DEST_UNREACHABLE:
      case ICMPV6_PACKET_TOO_BIG:
      case ICMPV6_TIME_EXCEEDED:
      case ICMPV6_PARAMETER_PROBLEM:
        if (type === ICMPV6_DEST_UNREACHABLE) c.InDestUnreachs++
        else if (type === ICMPV6_PACKET_TOO_BIG) c.InPktTooBigs++
        else if (type === ICMPV6_TIME_EXCEEDED) c.InTimeExcds++
        else c.InParmProbs++
        this.icmpErrorToTransport6(type, code, length >= 8 ? readU32(bytes, at + 4) : 0, bytes, at + 8, length - 8, now)
        return
      case NDP_ROUTER_SOLICIT:
        c.InRouterSolicits++
        return // hosts ignore RS (RFC 4861 §6.2.6 is for routers)
      case NDP_ROUTER_ADVERT:
        c.InRouterAdvertisements++
        this.routerAdvertisement(bytes, ipOffset, at, length, now)
        return
      case NDP_NEIGHBOR_SOLICIT:
        c.InNeighborSolicits++
        this.neighborSolicitation(bytes, ipOffset, at, length, now)
        return
      case NDP_NEIGHBOR_ADVERT:
        c.InNeighborAdvertisements++
        this.neighborAdvertisement(bytes, ipOffset, at, length, now)
        return
      case NDP_REDIRECT:
        c.InRedirects++
        this.redirect6(bytes, ipOffset, at, length, now)
        return
      default:
        // RFC 4443 §2.4(b): unknown informational messages are silently discarded; unknown errors go up.
        if (type < 128) this.icmpErrorToTransport6(type, code, 0, bytes, at + 8, length - 8, now)
        return
    }
  }

  private icmpErrorToTransport6(type: number, code: number, param: number, bytes: Uint8Array, offset: number, length: number, now: number): void {
    if (length < 48 || bytes[offset] >>> 4 !== 6) {
      this.counters.icmp6.InErrors++
      return
    }
    const quotedSrc = bytes.slice(offset + 8, offset + 24)
    const quotedDst = bytes.slice(offset + 24, offset + 40)
    const local: IpAddress = { version: 6, v6: quotedSrc }
    if (this.findLocal(local) === null) return
    // Walk the quoted packet's extension headers to find the transport header.
    let next = bytes[offset + 6]
    let at = offset + 40
    const end = offset + length
    for (let n = 0; n < MAX_EXTENSION_HEADERS && (next === EXT_HOP_BY_HOP || next === EXT_DEST_OPTS || next === EXT_ROUTING || next === EXT_FRAGMENT); n++) {
      if (at + 8 > end) return
      const len = next === EXT_FRAGMENT ? 8 : (bytes[at + 1] + 1) * 8
      next = bytes[at]
      at += len
    }
    if (at + 8 > end) return
    const remote: IpAddress = { version: 6, v6: quotedDst }
    let kind: IcmpErrorKind
    let mtu: number | undefined
    if (type === ICMPV6_PACKET_TOO_BIG) {
      kind = 'packet-too-big'
      // RFC 8201 §4: "the node MUST reduce the size of the packets it is sending along the path".
      this.pmtu.update(remote, param, this.linkMtu, 0, now)
      mtu = this.pmtu.get(remote, this.linkMtu)
    } else if (type === ICMPV6_DEST_UNREACHABLE) kind = unreachableKind6(code)
    else if (type === ICMPV6_TIME_EXCEEDED) kind = code === 1 ? 'reassembly-time-exceeded' : 'time-exceeded'
    else kind = 'parameter-problem'
    const info: IcmpErrorInfo = {
      kind,
      version: 6,
      type,
      code,
      from: { version: 6, v6: this.src6.v6.slice() },
      hard: kind === 'port-unreachable' || (type === ICMPV6_PARAMETER_PROBLEM && code === 1),
    }
    if (mtu !== undefined) info.mtu = mtu
    this.transports[next]?.receiveIcmpError(info, { version: 6, src: local, dst: remote, protocol: next, transportHeader: bytes.subarray(at, end) }, now)
  }

  /**
   * RFC 4443 §2.4(e): no error "as a result of receiving ... an ICMPv6 error
   * message, ... a packet destined to an IPv6 multicast address" (except
   * Packet Too Big and Parameter Problem code 2 for unrecognized options with
   * the 10 action bits), "a packet sent as a link-layer multicast", or "a
   * packet whose source address does not uniquely identify a single node".
   */
  private sendIcmp6Error(
    type: number,
    code: number,
    param: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    dstKind: DestinationKind,
    now: number,
    multicastAllowed = false,
  ): void {
    if ((dstKind !== 'unicast' || this.rxLinkMulticast) && !multicastAllowed) return
    if (length < 40) return
    const origSrc = bytes.slice(offset + 8, offset + 24)
    if (isIpv6Multicast(origSrc) || isIpv6Unspecified(origSrc)) return
    if (bytes[offset + 6] === IP_PROTOCOL_ICMPV6 && length >= 41 && bytes[offset + 40] < 128) return
    const c = this.counters.icmp6
    // RFC 4443 §2.4(f): "an IPv6 node MUST limit the rate of ICMPv6 error messages it originates".
    if (!this.icmpLimit6.take(now)) {
      c.OutRateLimited++
      return
    }
    const dst: IpAddress = { version: 6, v6: origSrc }
    const origDst: IpAddress = { version: 6, v6: bytes.slice(offset + 24, offset + 40) }
    const src = this.findLocal(origDst) !== null ? origDst : this.selectSource(dst)
    if (src === null || src.version !== 6) return
    // "as much of invoking packet as possible without the ICMPv6 packet exceeding the minimum IPv6 MTU".
    const quote = Math.min(length, ICMP6_QUOTE_MAX)
    const messageLength = 8 + quote
    const result = this.sendIp(src, dst, IP_PROTOCOL_ICMPV6, messageLength, (out, o) => {
      out[o] = type
      out[o + 1] = code
      out[o + 2] = 0
      out[o + 3] = 0
      writeU32(out, o + 4, param)
      out.set(bytes.subarray(offset, offset + quote), o + 8)
      fillIcmpv6Checksum(out, o, messageLength, src.v6, dst.v6)
    })
    if (result === 'sent' || result === 'queued') {
      c.OutMsgs++
      c.OutErrors++
      if (type === ICMPV6_DEST_UNREACHABLE) c.OutDestUnreachs++
      else if (type === ICMPV6_TIME_EXCEEDED) c.OutTimeExcds++
      else if (type === ICMPV6_PARAMETER_PROBLEM) c.OutParmProbs++
      else if (type === ICMPV6_PACKET_TOO_BIG) c.OutPktTooBigs++
    }
  }

  // -------------------------------------------------------------------- NDP

  /** RFC 4861 §7.1.1/§7.1.2/§6.1.2: hop limit 255 (never forwarded) and code 0, else silently drop. */
  private ndpValid(bytes: Uint8Array, ipOffset: number, at: number, length: number, minLength: number): boolean {
    if (bytes[ipOffset + 7] !== 255 || bytes[at + 1] !== 0 || length < minLength) {
      this.counters.icmp6.InErrors++
      return false
    }
    return true
  }

  /**
   * Walk NDP options: returns the source/target link-layer address option
   * (type `llType`) or null; false when the options are malformed ("Nodes
   * MUST silently discard an ND packet that contains an option with length zero").
   */
  private ndpOptions(bytes: Uint8Array, from: number, end: number, visit: (type: number, at: number, length: number) => void): boolean {
    let p = from
    while (p < end) {
      if (p + 2 > end) return false
      const len = bytes[p + 1] * 8
      if (len === 0 || p + len > end) {
        this.counters.icmp6.InErrors++
        this.countMalformed('icmpv6', 'bad-option')
        return false
      }
      visit(bytes[p], p, len)
      p += len
    }
    return true
  }

  private neighborSolicitation(bytes: Uint8Array, ipOffset: number, at: number, length: number, now: number): void {
    if (!this.ndpValid(bytes, ipOffset, at, length, 24)) return
    const target = bytes.slice(at + 8, at + 24)
    if (isIpv6Multicast(target)) return
    let sourceLl: Uint8Array | null = null
    const ok = this.ndpOptions(bytes, at + 24, at + length, (type, p, len) => {
      if (type === NDP_OPT_SOURCE_LL && len >= 8) sourceLl = bytes.slice(p + 2, p + 8)
    })
    if (!ok) return
    const srcUnspecified = isIpv6Unspecified(this.src6.v6)
    // RFC 4861 §7.1.1: from the unspecified address, the destination must be a
    // solicited-node address and there must be no source link-layer option.
    if (srcUnspecified && (this.dst6.v6[0] !== 0xff || sourceLl !== null)) return
    const local = this.findLocalAny({ version: 6, v6: target })
    if (local === null) return
    if (local.state === 'tentative') {
      // RFC 4862 §5.4.3: an NS for our tentative address from the unspecified
      // address means another node is doing DAD for it: "the address is a duplicate".
      if (srcUnspecified) this.addressDuplicate(local, now)
      return
    }
    if (local.state !== 'preferred') return
    const requester: IpAddress = { version: 6, v6: this.src6.v6.slice() }
    // RFC 4861 §7.2.3: record the source link-layer address (a new entry is STALE).
    if (!srcUnspecified && sourceLl !== null) this.neighbors.learn(requester, sourceLl, false, true, true, now)
    // RFC 4861 §7.2.4: unicast reply with S=1, or to all-nodes with S=0 when the source was unspecified.
    this.sendNeighborAdvert(local.address, srcUnspecified ? { version: 6, v6: ALL_NODES } : requester, !srcUnspecified, true, now)
  }

  private neighborAdvertisement(bytes: Uint8Array, ipOffset: number, at: number, length: number, now: number): void {
    if (!this.ndpValid(bytes, ipOffset, at, length, 24)) return
    const flags = bytes[at + 4]
    const router = (flags & 0x80) !== 0
    const solicited = (flags & 0x40) !== 0
    const override = (flags & 0x20) !== 0
    const target = bytes.slice(at + 8, at + 24)
    // RFC 4861 §7.1.2: "If the IP Destination Address is a multicast address the Solicited flag is zero."
    if (isIpv6Multicast(target) || (solicited && isIpv6Multicast(this.dst6.v6))) return
    let targetLl: Uint8Array | null = null
    if (!this.ndpOptions(bytes, at + 24, at + length, (type, p, len) => {
      if (type === NDP_OPT_TARGET_LL && len >= 8) targetLl = bytes.slice(p + 2, p + 8)
    })) return
    const targetAddress: IpAddress = { version: 6, v6: target }
    const local = this.findLocalAny(targetAddress)
    if (local !== null) {
      // RFC 4862 §5.4.4: an NA for our tentative address means it is a duplicate.
      if (local.state === 'tentative') this.addressDuplicate(local, now)
      return
    }
    this.neighbors.learn(targetAddress, targetLl, solicited, override, false, now)
    const e = this.neighbors.get(targetAddress)
    if (e !== null) e.isRouter = router
  }

  private routerAdvertisement(bytes: Uint8Array, ipOffset: number, at: number, length: number, now: number): void {
    if (!this.acceptRa) return
    if (!this.ndpValid(bytes, ipOffset, at, length, 16)) return
    // RFC 4861 §6.1.2: "IP Source Address is a link-local address".
    if (!isIpv6LinkLocal(this.src6.v6)) return
    const router: IpAddress = { version: 6, v6: this.src6.v6.slice() }
    const routerLifetime = readU16(bytes, at + 6)
    let sourceLl: Uint8Array | null = null
    const prefixes: { prefix: Uint8Array; length: number; onLink: boolean; autonomous: boolean; valid: number; preferred: number }[] = []
    let mtu = 0
    if (!this.ndpOptions(bytes, at + 16, at + length, (type, p, len) => {
      if (type === NDP_OPT_SOURCE_LL && len >= 8) sourceLl = bytes.slice(p + 2, p + 8)
      else if (type === NDP_OPT_MTU && len >= 8) mtu = readU32(bytes, p + 4)
      else if (type === NDP_OPT_PREFIX && len >= 32) {
        prefixes.push({
          prefix: bytes.slice(p + 16, p + 32),
          length: bytes[p + 2],
          onLink: (bytes[p + 3] & 0x80) !== 0,
          autonomous: (bytes[p + 3] & 0x40) !== 0,
          valid: readU32(bytes, p + 4),
          preferred: readU32(bytes, p + 8),
        })
      }
    })) return
    this.nextRouterSolicit = Infinity // solicited or not, we have heard a router
    if (sourceLl !== null) {
      this.neighbors.learn(router, sourceLl, false, true, true, now)
      const e = this.neighbors.get(router)
      if (e !== null) e.isRouter = true
    }
    // RFC 4861 §6.3.4: a lifetime of zero removes the router from the default router list.
    const defaultPrefix: IpAddress = { version: 6, v6: UNSPECIFIED6 }
    if (routerLifetime === 0) this.routes.remove(defaultPrefix, 0, router, 'ra')
    else this.routes.add({ prefix: defaultPrefix, prefixLength: 0, via: router, source: 'ra', expiresAt: now + routerLifetime * 1000 })
    for (const p of prefixes) {
      // RFC 4861 §6.3.4: "If the prefix is the link-local prefix, silently ignore the Prefix Information option".
      if (isIpv6LinkLocal(p.prefix) || p.length > 128) continue
      const prefix: IpAddress = { version: 6, v6: p.prefix }
      if (p.onLink) {
        if (p.valid === 0) this.routes.remove(prefix, p.length, null, 'ra')
        else this.routes.add({ prefix, prefixLength: p.length, source: 'ra', expiresAt: lifetimeEnd(p.valid, now) })
      }
      if (p.autonomous && this.slaac) this.autoconfigure(p.prefix, p.length, p.valid, p.preferred, now)
    }
    // RFC 4861 §6.3.4: an MTU option smaller than the link MTU and at least 1280 sets the link MTU.
    if (mtu >= IPV6_MIN_MTU && mtu < this.link.mtu && mtu !== this.linkMtu) {
      this.linkMtu = mtu
      this.pmtu.generation++
    }
  }

  /**
   * Stateless address autoconfiguration (RFC 4862 §5.5.3) from a Prefix
   * Information option with the A flag: prefix + our modified EUI-64
   * interface identifier, through DAD like any other address.
   */
  private autoconfigure(prefixBytes: Uint8Array, prefixLength: number, valid: number, preferred: number, now: number): void {
    // "b) If the prefix is the link-local prefix, silently ignore" (done by the caller).
    // "c) If the preferred lifetime is greater than the valid lifetime, silently ignore".
    if (preferred > valid || !this.ethernet) return
    // "the sum of the prefix length and interface identifier length [64 on Ethernet] MUST equal 128".
    if (prefixLength !== 64) return
    const v6 = linkLocalFromMac(this.mac)
    v6.set(prefixBytes.subarray(0, 8), 0)
    const address: IpAddress = { version: 6, v6 }
    const existing = this.findLocalAny(address)
    if (existing === null) {
      if (valid === 0) return
      const local = this.addAddressInternal(address, prefixLength, now)
      local.validUntil = lifetimeEnd(valid, now)
      local.autoconfigured = true
      return
    }
    if (existing.validUntil === Infinity && existing.autoconfigured === false) return // configured by hand: not ours to age
    // "e) ... If the received Valid Lifetime is greater than 2 hours or greater
    // than RemainingLifetime, set the valid lifetime ... to the advertised
    // Valid Lifetime"; otherwise keep at least two hours (a forged RA cannot
    // cut an address short).
    const remaining = existing.validUntil - now
    const advertised = valid === 0xffffffff ? Infinity : valid * 1000
    if (advertised > TWO_HOURS || advertised > remaining) existing.validUntil = now + advertised
    else if (remaining > TWO_HOURS) existing.validUntil = now + TWO_HOURS
  }

  /**
   * RFC 4861 §8: a Redirect tells us a better first hop (Target) for a
   * Destination, or that the Destination is on-link (Target == Destination).
   * §8.1 validity: link-local source, hop limit 255, code 0, at least 40
   * bytes, the source is our current first hop for the destination, the
   * destination is not multicast, and the target is link-local or the destination.
   */
  private redirect6(bytes: Uint8Array, ipOffset: number, at: number, length: number, now: number): void {
    if (!this.ndpValid(bytes, ipOffset, at, length, 40)) return
    if (!isIpv6LinkLocal(this.src6.v6)) return
    const target = bytes.slice(at + 8, at + 24)
    const destinationBytes = bytes.slice(at + 24, at + 40)
    if (isIpv6Multicast(destinationBytes)) return
    const toDestination = equal16(target, destinationBytes)
    if (!toDestination && !isIpv6LinkLocal(target)) return
    const destination: IpAddress = { version: 6, v6: destinationBytes }
    const current = this.routeFor(destination)
    if (current === undefined || current === null || current.via === null || current.via.version !== 6 || !equal16(current.via.v6, this.src6.v6)) return
    let targetLl: Uint8Array | null = null
    if (!this.ndpOptions(bytes, at + 40, at + length, (type, p, len) => {
      if (type === NDP_OPT_TARGET_LL && len >= 8) targetLl = bytes.slice(p + 2, p + 8)
    })) return
    const targetAddress: IpAddress = { version: 6, v6: target }
    // §8.3: with a target link-layer option the neighbour entry is created or updated STALE.
    if (targetLl !== null) this.neighbors.learn(targetAddress, targetLl, false, true, true, now)
    this.routes.add({ prefix: destination, prefixLength: 128, via: toDestination ? null : targetAddress, source: 'redirect', expiresAt: now + REDIRECT_LIFETIME_MS })
  }

  private sendNeighborAdvert(target: IpAddress, dst: IpAddress, solicited: boolean, override: boolean, now: number): void {
    if (target.version !== 6 || dst.version !== 6) return
    const length = 32
    const result = this.sendIp(target, dst, IP_PROTOCOL_ICMPV6, length, (out, o) => {
      out[o] = NDP_NEIGHBOR_ADVERT
      out[o + 1] = 0
      out[o + 2] = 0
      out[o + 3] = 0
      out[o + 4] = (solicited ? 0x40 : 0) | (override ? 0x20 : 0)
      out[o + 5] = 0
      out[o + 6] = 0
      out[o + 7] = 0
      out.set(target.v6, o + 8)
      out[o + 24] = NDP_OPT_TARGET_LL
      out[o + 25] = 1
      out.set(this.mac, o + 26)
      fillIcmpv6Checksum(out, o, length, target.v6, dst.v6)
    }, { hopLimit: NDP_HOP_LIMIT })
    if (result === 'sent' || result === 'queued') {
      this.counters.icmp6.OutMsgs++
      this.counters.icmp6.OutNeighborAdvertisements++
    }
  }

  /** NS: DAD (from ::, no option), multicast resolution, or a unicast NUD probe. */
  private sendNeighborSolicit(target: Uint8Array, src: Uint8Array, dst: Uint8Array, dstMac: Uint8Array | null): void {
    const withOption = !isIpv6Unspecified(src)
    const length = withOption ? 32 : 24
    const srcAddress: IpAddress = { version: 6, v6: src }
    const dstAddress: IpAddress = { version: 6, v6: dst }
    const write: PayloadWriter = (out, o) => {
      out[o] = NDP_NEIGHBOR_SOLICIT
      out.fill(0, o + 1, o + 8)
      out.set(target, o + 8)
      if (withOption) {
        out[o + 24] = NDP_OPT_SOURCE_LL
        out[o + 25] = 1
        out.set(this.mac, o + 26)
      }
      fillIcmpv6Checksum(out, o, length, src, dst)
    }
    // Multicast (or a known MAC for a probe): never goes through resolution itself.
    const ok = this.sendDirect(6, srcAddress, dstAddress, IP_PROTOCOL_ICMPV6, length, write, NDP_HOP_LIMIT, dstMac)
    if (ok) {
      this.counters.icmp6.OutMsgs++
      this.counters.icmp6.OutNeighborSolicits++
    }
  }

  private sendRouterSolicit(now: number): void {
    const ll = this.addresses.find((a) => a.state === 'preferred' && a.address.version === 6 && isIpv6LinkLocal(a.address.v6))
    if (ll === undefined || ll.address.version !== 6) {
      this.nextRouterSolicit = Infinity
      return
    }
    const src = ll.address.v6
    const write: PayloadWriter = (out, o) => {
      out[o] = NDP_ROUTER_SOLICIT
      out.fill(0, o + 1, o + 8)
      out[o + 8] = NDP_OPT_SOURCE_LL
      out[o + 9] = 1
      out.set(this.mac, o + 10)
      fillIcmpv6Checksum(out, o, 16, src, ALL_ROUTERS)
    }
    if (this.sendDirect(6, ll.address, { version: 6, v6: ALL_ROUTERS }, IP_PROTOCOL_ICMPV6, 16, write, NDP_HOP_LIMIT, null)) {
      this.counters.icmp6.OutMsgs++
      this.counters.icmp6.OutRouterSolicits++
    }
    // RFC 4861 §10: MAX_RTR_SOLICITATIONS 3, RTR_SOLICITATION_INTERVAL 4 s.
    this.routerSolicitsSent++
    this.nextRouterSolicit = this.routerSolicitsSent < 3 ? now + 4000 : Infinity
  }

  private dadStep(local: LocalAddress, now: number): void {
    if (local.state !== 'tentative' || local.address.version !== 6) {
      local.dadTimer = Infinity
      return
    }
    // RFC 4862 §5.1: DupAddrDetectTransmits defaults to 1, RetransTimer 1 s.
    if (local.dadSent >= 1) {
      local.state = 'preferred'
      local.dadTimer = Infinity
      this.events.onAddressState?.(local)
      this.addressUsable(local, now)
      return
    }
    this.sendNeighborSolicit(local.address.v6, UNSPECIFIED6, local.solicitedNode!, null)
    local.dadSent++
    local.dadTimer = now + this.neighbors.config.retransTimerMs
  }

  private addressDuplicate(local: LocalAddress, now: number): void {
    // RFC 4862 §5.4.5: "the address MUST NOT be assigned to the interface".
    local.state = 'duplicate'
    local.dadTimer = Infinity
    this.events.onAddressState?.(local)
  }

  // ------------------------------------------------ neighbour cache hooks

  private solicit(e: NeighborEntry, unicast: boolean, now: number): void {
    const addr = e.address
    if (addr.version === 4) {
      // RFC 5227 §2.1.1-style sender: our address on that link (never 0 unless we have none).
      const src = this.selectSource(addr)
      if (src === null || src.version !== 4) return
      const ok = this.sendArp(
        { operation: ARP_OPERATION_REQUEST, senderMac: this.mac, senderIp: src.v4, targetMac: new Uint8Array(6), targetIp: addr.v4 },
        unicast ? e.mac : BROADCAST_MAC,
      )
      if (ok) this.counters.arp.OutRequests++
    } else {
      const src = this.selectSource(addr)
      if (src === null || src.version !== 6) return
      const dst = unicast ? addr.v6 : solicitedNodeAddress(addr.v6)
      this.sendNeighborSolicit(addr.v6, src.v6, dst, unicast ? e.mac : null)
    }
  }

  private flushPending(e: NeighborEntry): void {
    const ethertype = e.address.version === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6
    for (const packet of e.pending) this.transmitPacket(packet, packet.length, e.mac, ethertype)
  }

  private resolutionFailed(e: NeighborEntry, now: number): void {
    // RFC 4861 §7.2.2: for each queued packet, "the node SHOULD send an ICMP
    // destination unreachable" (address unreachable). The packets are our own,
    // so the error goes straight to the transport that sent them.
    for (const packet of e.pending) {
      const version = packet[0] >>> 4
      if (version === 4) {
        const headerLength = (packet[0] & 0x0f) * 4
        const protocol = packet[9]
        const info: IcmpErrorInfo = { kind: 'host-unreachable', version: 4, type: 3, code: 1, from: e.address, hard: false }
        const quoted: QuotedPacket = {
          version: 4,
          src: { version: 4, v4: readU32(packet, 12) },
          dst: { version: 4, v4: readU32(packet, 16) },
          protocol,
          transportHeader: packet.subarray(headerLength),
        }
        this.transports[protocol]?.receiveIcmpError(info, quoted, now)
      } else {
        const protocol = packet[6]
        const info: IcmpErrorInfo = { kind: 'address-unreachable', version: 6, type: 1, code: 3, from: e.address, hard: false }
        const quoted: QuotedPacket = {
          version: 6,
          src: { version: 6, v6: packet.slice(8, 24) },
          dst: { version: 6, v6: packet.slice(24, 40) },
          protocol,
          transportHeader: packet.subarray(40),
        }
        this.transports[protocol]?.receiveIcmpError(info, quoted, now)
      }
    }
  }

  // ------------------------------------------------------------------ output

  selectSource(dst: IpAddress): IpAddress | null {
    let best: LocalAddress | null = null
    let bestScore = -1
    for (const a of this.addresses) {
      if (a.address.version !== dst.version || a.state !== 'preferred') continue
      // RFC 6724 lite: an address whose prefix covers the destination, then
      // matching scope (link-local for link-local destinations, global
      // otherwise), then the longest common prefix.
      let score = commonPrefixLength(a.address, dst)
      if (prefixMatches(dst, a.address, a.prefixLength)) score += 1000
      if (dst.version === 6 && a.address.version === 6) {
        const dstLinkLocal = isIpv6LinkLocal(dst.v6) || (isIpv6Multicast(dst.v6) && (dst.v6[1] & 0x0f) <= 2)
        if (isIpv6LinkLocal(a.address.v6) === dstLinkLocal) score += 500
      }
      if (score > bestScore) {
        best = a
        bestScore = score
      }
    }
    return best === null ? null : best.address
  }

  isLocalAddress(address: IpAddress): boolean {
    const local = this.findLocal(address)
    return local !== null
  }

  /** Whether sendIp has a way to `dst`: one of our addresses, a link-scoped destination, or a route. */
  canReach(dst: IpAddress): boolean {
    return this.findLocal(dst) !== null || this.routeFor(dst) !== undefined
  }

  pathMtu(local: IpAddress, remote: IpAddress): number {
    return this.pmtu.get(remote, this.linkMtu)
  }

  pathGeneration(): number {
    return this.routes.generation + this.neighbors.generation + this.pmtu.generation
  }

  confirmReachable(local: IpAddress, remote: IpAddress): void {
    if (!this.ethernet || local.version !== remote.version) return
    const route = this.routeFor(remote)
    if (route === undefined) return
    const entry = this.neighbors.get(route?.via ?? remote)
    // Only an entry with a MAC is refreshed (an INCOMPLETE one still needs its
    // answer); a REACHABLE one gets a fresh ReachableTime, as Linux's
    // neigh_confirm does, so a busy connection never drops to STALE/PROBE.
    if (entry !== null && entry.hasMac) this.neighbors.confirm(entry.address, this.clock.now())
  }

  nextIpv4Id(): number {
    this.ipv4Id = (this.ipv4Id + 1) & 0xffff
    return this.ipv4Id
  }

  resolvePath(local: IpAddress, remote: IpAddress): PathResult {
    if (local.version !== remote.version) return 'unreachable'
    const now = this.clock.now()
    const generation = this.pathGeneration()
    const mtu = this.pmtu.get(remote, this.linkMtu)
    if (!this.ethernet) return { version: remote.version, local, remote, mtu, linkHeader: null, generation }
    const route = this.routeFor(remote)
    if (route === undefined) return 'unreachable'
    const mac = this.nextHopMac(remote, route, now)
    if (mac === null) {
      if (this.neighbors.resolve(this.resolveTarget!, null, now) === 'no-buffer') return 'unreachable'
      return 'pending'
    }
    const header = new Uint8Array(14)
    this.writeEthernetHeader(header, mac, remote.version === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6)
    const path: Path = { version: remote.version, local, remote, mtu, linkHeader: header, generation }
    return path
  }

  transmitFrame(fill: FrameWriter): boolean {
    const tx = this.link.acquireTx()
    if (tx === null) {
      this.counters.link.OutNoBuffer++
      return false
    }
    const length = fill(tx.bytes)
    if (length <= 0) {
      this.link.abortTx(tx.index)
      return false
    }
    const ipAt = this.ethernet ? 14 : 0
    if (tx.bytes[ipAt] >>> 4 === 6) this.counters.ip6.OutRequests++
    else this.counters.ip.OutRequests++
    this.link.transmit(tx.index, length)
    this.counters.link.OutFrames++
    return true
  }

  sendIp(src: IpAddress, dst: IpAddress, protocol: number, payloadLength: number, fill: PayloadWriter, options?: SendOptions): SendResult {
    const now = this.clock.now()
    const v4 = dst.version === 4
    const c = v4 ? this.counters.ip : this.counters.ip6
    c.OutRequests++
    if (src.version !== dst.version) {
      c.OutNoRoutes++
      return 'no-route'
    }
    // RFC 1122 §3.2.1.7: "A host MUST NOT send a datagram with a Time-to-Live (TTL) value of zero."
    const hopLimit = Math.min(255, Math.max(1, options?.hopLimit ?? this.hopLimit))
    const tos = options?.tos ?? 0
    const headerLength = v4 ? 20 : 40
    const total = headerLength + payloadLength
    if (v4 ? total > MAX_IPV4_PACKET : payloadLength > 65535) {
      c.OutDiscards++
      return 'too-big'
    }
    // To ourselves: looped back and delivered on the next poll.
    if (this.findLocal(dst) !== null) {
      const packet = new Uint8Array(total)
      this.writeIpHeader(packet, 0, src, dst, protocol, payloadLength, hopLimit, tos, options?.dontFragment === true, false, 0, v4 ? this.nextIpv4Id() : 0)
      fill(packet, headerLength)
      this.loopback.push(packet)
      return 'sent'
    }
    const route = this.routeFor(dst)
    if (route === undefined) {
      c.OutNoRoutes++
      return 'no-route'
    }
    const mtu = this.pmtu.get(dst, this.linkMtu)
    if (total > mtu) {
      // RFC 8200 §5: IPv6 "fragmentation ... is performed only by source nodes", so we fragment
      // our own too-large packets unless told not to (TCP keeps to the PMTU by itself).
      if (options?.dontFragment === true) {
        c.FragFails++
        c.OutDiscards++
        return 'too-big'
      }
      return this.sendFragmented(src, dst, route, protocol, payloadLength, fill, hopLimit, tos, mtu, now)
    }
    const mac = this.ethernet ? this.nextHopMac(dst, route, now) : null
    const ethertype = v4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6
    const id = v4 ? this.nextIpv4Id() : 0
    if (this.ethernet && mac === null) {
      const packet = this.scratch
      this.writeIpHeader(packet, 0, src, dst, protocol, payloadLength, hopLimit, tos, options?.dontFragment === true, false, 0, id)
      fill(packet, headerLength)
      const queued = this.neighbors.resolve(this.resolveTarget!, packet.subarray(0, total), now)
      if (queued === 'no-buffer') c.OutDiscards++
      return queued
    }
    const tx = this.link.acquireTx()
    if (tx === null) {
      this.counters.link.OutNoBuffer++
      c.OutDiscards++
      return 'no-buffer'
    }
    const bytes = tx.bytes
    const l2 = mac === null ? 0 : this.writeEthernetHeader(bytes, mac, ethertype)
    if (l2 + total > bytes.length) {
      this.link.abortTx(tx.index)
      c.OutDiscards++
      return 'too-big'
    }
    this.writeIpHeader(bytes, l2, src, dst, protocol, payloadLength, hopLimit, tos, options?.dontFragment === true, false, 0, id)
    fill(bytes, l2 + headerLength)
    this.link.transmit(tx.index, l2 + total)
    this.counters.link.OutFrames++
    return 'sent'
  }

  private sendFragmented(
    src: IpAddress,
    dst: IpAddress,
    route: Route | null,
    protocol: number,
    payloadLength: number,
    fill: PayloadWriter,
    hopLimit: number,
    tos: number,
    mtu: number,
    now: number,
  ): SendResult {
    const v4 = dst.version === 4
    const c = v4 ? this.counters.ip : this.counters.ip6
    // Build the payload once in the scratch buffer, after room for one header.
    const base = 64
    fill(this.scratch, base)
    const perFragment = v4 ? (mtu - 20) & ~7 : (mtu - 48) & ~7
    if (perFragment < 8) {
      c.FragFails++
      return 'too-big'
    }
    // RFC 7739: unpredictable IPv6 fragment identifications.
    const id = v4 ? this.nextIpv4Id() : this.random.nextUint32()
    const mac = this.ethernet ? this.nextHopMac(dst, route, now) : null
    const ethertype = v4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6
    let result: SendResult = 'sent'
    const fragment = this.fragmentScratch
    for (let offset = 0; offset < payloadLength; offset += perFragment) {
      const chunk = Math.min(perFragment, payloadLength - offset)
      const more = offset + chunk < payloadLength
      let length: number
      if (v4) {
        this.writeIpHeader(fragment, 0, src, dst, protocol, chunk, hopLimit, tos, false, more, offset, id)
        fragment.set(this.scratch.subarray(base + offset, base + offset + chunk), 20)
        length = 20 + chunk
      } else {
        this.writeIpHeader(fragment, 0, src, dst, EXT_FRAGMENT, chunk + 8, hopLimit, tos, false, false, 0, 0)
        fragment[40] = protocol
        fragment[41] = 0
        fragment[42] = offset >>> 8
        fragment[43] = (offset & 0xf8) | (more ? 1 : 0)
        writeU32(fragment, 44, id)
        fragment.set(this.scratch.subarray(base + offset, base + offset + chunk), 48)
        length = 48 + chunk
      }
      c.FragCreates++
      if (this.ethernet && mac === null) {
        result = this.neighbors.resolve(this.resolveTarget!, fragment.subarray(0, length), now)
        if (result === 'no-buffer') break
      } else if (!this.transmitPacket(fragment, length, mac, ethertype)) {
        result = 'no-buffer'
        break
      }
    }
    if (result === 'no-buffer') {
      c.FragFails++
      c.OutDiscards++
    } else c.FragOKs++
    return result
  }

  /**
   * Send without neighbour resolution: multicast destinations, or a unicast
   * NUD probe with a known MAC. Used by NDP itself.
   */
  private sendDirect(version: 4 | 6, src: IpAddress, dst: IpAddress, protocol: number, payloadLength: number, fill: PayloadWriter, hopLimit: number, dstMac: Uint8Array | null): boolean {
    const tx = this.link.acquireTx()
    if (tx === null) {
      this.counters.link.OutNoBuffer++
      return false
    }
    const bytes = tx.bytes
    let l2 = 0
    if (this.ethernet) {
      let mac = dstMac
      if (mac === null) {
        if (dst.version === 6) ipv6MulticastMac(dst.v6, this.macScratch)
        else this.macScratch.set(BROADCAST_MAC)
        mac = this.macScratch
      }
      l2 = this.writeEthernetHeader(bytes, mac, version === 4 ? ETHERTYPE_IPV4 : ETHERTYPE_IPV6)
    }
    const headerLength = version === 4 ? 20 : 40
    this.writeIpHeader(bytes, l2, src, dst, protocol, payloadLength, hopLimit, 0, false, false, 0, version === 4 ? this.nextIpv4Id() : 0)
    fill(bytes, l2 + headerLength)
    ;(version === 4 ? this.counters.ip : this.counters.ip6).OutRequests++
    this.link.transmit(tx.index, l2 + headerLength + payloadLength)
    this.counters.link.OutFrames++
    return true
  }

  /** Copy an IP packet into a TX buffer behind a link header. */
  private transmitPacket(packet: Uint8Array, length: number, mac: Uint8Array | null, ethertype: number): boolean {
    const tx = this.link.acquireTx()
    if (tx === null) {
      this.counters.link.OutNoBuffer++
      return false
    }
    const l2 = this.ethernet && mac !== null ? this.writeEthernetHeader(tx.bytes, mac, ethertype) : 0
    if (l2 + length > tx.bytes.length) {
      this.link.abortTx(tx.index)
      return false
    }
    tx.bytes.set(length === packet.length ? packet : packet.subarray(0, length), l2)
    this.link.transmit(tx.index, l2 + length)
    this.counters.link.OutFrames++
    return true
  }

  /** Next-hop address of the last nextHopMac() call that returned null (the one to resolve). */
  private resolveTarget: IpAddress | null = null

  /**
   * The destination MAC for `dst` via `route`, or null when the next hop
   * must be resolved first (`resolveTarget` says which address).
   */
  private nextHopMac(dst: IpAddress, route: Route | null, now: number): Uint8Array | null {
    if (dst.version === 4) {
      if (dst.v4 === 0xffffffff || this.isIpv4BroadcastAddress(dst.v4)) return BROADCAST_MAC
      if (isIpv4Multicast(dst.v4)) {
        ipv4MulticastMac(dst.v4, this.macScratch)
        return this.macScratch
      }
    } else if (isIpv6Multicast(dst.v6)) {
      ipv6MulticastMac(dst.v6, this.macScratch)
      return this.macScratch
    }
    const nextHop = route?.via ?? dst
    const entry = this.neighbors.lookupForSend(nextHop, now)
    if (entry !== null) return entry.mac
    this.resolveTarget = nextHop
    return null
  }

  /** The route for `dst`; null for link-scoped destinations (broadcast, multicast, link-local); undefined = none. */
  private routeFor(dst: IpAddress): Route | null | undefined {
    if (dst.version === 4) {
      if (dst.v4 === 0xffffffff || isIpv4Multicast(dst.v4)) return null
    } else if (isIpv6Multicast(dst.v6) || isIpv6LinkLocal(dst.v6)) {
      return null
    }
    return this.routes.lookup(dst) ?? undefined
  }

  private writeEthernetHeader(bytes: Uint8Array, dstMac: Uint8Array, ethertype: number): number {
    for (let i = 0; i < 6; i++) bytes[i] = dstMac[i]
    for (let i = 0; i < 6; i++) bytes[6 + i] = this.mac[i]
    bytes[12] = ethertype >>> 8
    bytes[13] = ethertype & 0xff
    return 14
  }

  private writeIpHeader(
    bytes: Uint8Array,
    at: number,
    src: IpAddress,
    dst: IpAddress,
    protocol: number,
    payloadLength: number,
    hopLimit: number,
    tos: number,
    dontFragment: boolean,
    moreFragments: boolean,
    fragmentOffset: number,
    id: number,
  ): void {
    if (src.version === 4 && dst.version === 4) {
      const total = 20 + payloadLength
      bytes[at] = 0x45
      bytes[at + 1] = tos
      bytes[at + 2] = total >>> 8
      bytes[at + 3] = total & 0xff
      bytes[at + 4] = id >>> 8
      bytes[at + 5] = id & 0xff
      const field = (dontFragment ? 0x4000 : 0) | (moreFragments ? 0x2000 : 0) | (fragmentOffset >>> 3)
      bytes[at + 6] = field >>> 8
      bytes[at + 7] = field & 0xff
      bytes[at + 8] = hopLimit
      bytes[at + 9] = protocol
      bytes[at + 10] = 0
      bytes[at + 11] = 0
      writeU32(bytes, at + 12, src.v4)
      writeU32(bytes, at + 16, dst.v4)
      const sum = checksumFold(checksumAccumulate(bytes, at, 20))
      bytes[at + 10] = sum >>> 8
      bytes[at + 11] = sum & 0xff
    } else if (src.version === 6 && dst.version === 6) {
      bytes[at] = 0x60 | (tos >>> 4)
      bytes[at + 1] = (tos & 0x0f) << 4
      bytes[at + 2] = 0
      bytes[at + 3] = 0
      bytes[at + 4] = payloadLength >>> 8
      bytes[at + 5] = payloadLength & 0xff
      bytes[at + 6] = protocol
      bytes[at + 7] = hopLimit
      for (let i = 0; i < 16; i++) {
        bytes[at + 8 + i] = src.v6[i]
        bytes[at + 24 + i] = dst.v6[i]
      }
    }
  }

  // ------------------------------------------------------------------ misc

  /** A usable (preferred) local address equal to `address`. */
  private findLocal(address: IpAddress): LocalAddress | null {
    for (const a of this.addresses) if (a.state === 'preferred' && sameAddress(a.address, address)) return a
    return null
  }

  /** Any local address, tentative included. */
  private findLocalAny(address: IpAddress): LocalAddress | null {
    for (const a of this.addresses) if (sameAddress(a.address, address)) return a
    return null
  }

  private countMalformed(layer: string, reason: string): void {
    const keys = (this.malformedKeys[layer] ??= {})
    const key = (keys[reason] ??= `${layer}:${reason}`)
    this.malformed[key] = (this.malformed[key] ?? 0) + 1
  }
}

/**
 * The per-version IpPacketInfo the IP layer refills for every packet. The
 * `ipPacket` view is made only when a transport asks for it (ICMP quoting,
 * mostly), so the common path allocates no view for it.
 */
class PacketInfo implements IpPacketInfo {
  hopLimit = 0
  protocol = 0
  dstKind: DestinationKind = 'unicast'
  ecn = 0
  dscp = 0
  private bytes: Uint8Array = EMPTY_BYTES
  private start = 0
  private end = 0
  private view: Uint8Array | null = null

  constructor(
    readonly version: 4 | 6,
    readonly src: IpAddress,
    readonly dst: IpAddress,
  ) {}

  setPacket(bytes: Uint8Array, start: number, end: number): void {
    this.bytes = bytes
    this.start = start
    this.end = end
    this.view = null
  }

  get ipPacket(): Uint8Array {
    if (this.view === null) this.view = this.start === 0 && this.end === this.bytes.length ? this.bytes : this.bytes.subarray(this.start, this.end)
    return this.view
  }
}

const EMPTY_BYTES = new Uint8Array(0)
const NDP_HOP_LIMIT = 255
const TWO_HOURS = 2 * 3600 * 1000
/** Redirect-learned host routes are forgotten after 10 minutes (then the router redirects again if still needed). */
const REDIRECT_LIFETIME_MS = 600_000

/** Absolute end of an NDP lifetime in seconds (0xffffffff = infinity). */
function lifetimeEnd(seconds: number, now: number): number {
  return seconds === 0xffffffff ? Infinity : now + seconds * 1000
}
const UNICAST_OK = { kind: 'unicast' as DestinationKind, tentative: false }
const UNICAST_TENTATIVE = { kind: 'unicast' as DestinationKind, tentative: true }
const MULTICAST_OK = { kind: 'multicast' as DestinationKind, tentative: false }

function unreachableKind4(code: number): IcmpErrorKind {
  switch (code) {
    case 0:
      return 'net-unreachable'
    case 1:
      return 'host-unreachable'
    case 2:
      return 'protocol-unreachable'
    case 3:
      return 'port-unreachable'
    case 5:
      return 'source-route-failed'
    case 9:
    case 10:
    case 13:
      return 'admin-prohibited'
    default:
      return 'host-unreachable'
  }
}

function unreachableKind6(code: number): IcmpErrorKind {
  switch (code) {
    case 0:
      return 'net-unreachable'
    case 1:
      return 'admin-prohibited'
    case 3:
      return 'address-unreachable'
    case 4:
      return 'port-unreachable'
    default:
      return 'host-unreachable'
  }
}

function fillIcmpv6Checksum(bytes: Uint8Array, at: number, length: number, src: Uint8Array, dst: Uint8Array): void {
  bytes[at + 2] = 0
  bytes[at + 3] = 0
  const sum = checksumFold(checksumAccumulate(bytes, at, length, pseudoHeaderSumIpv6(src, dst, IP_PROTOCOL_ICMPV6, length)))
  bytes[at + 2] = sum >>> 8
  bytes[at + 3] = sum & 0xff
}

function readU16(b: Uint8Array, at: number): number {
  return (b[at] << 8) | b[at + 1]
}

function readU32(b: Uint8Array, at: number): number {
  return ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0
}

function writeU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24
  b[at + 1] = (v >>> 16) & 0xff
  b[at + 2] = (v >>> 8) & 0xff
  b[at + 3] = v & 0xff
}

function equal16(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false
  return true
}

function isAllZeroBetween(a: Uint8Array, from: number, to: number): boolean {
  for (let i = from; i < to; i++) if (a[i] !== 0) return false
  return true
}

function macEq(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false
  return true
}
