// fast-check generators for valid Reprs of every wire format.
import fc from 'fast-check'
import {
  ETHERTYPE_VLAN,
  ICMPV4_DEST_UNREACHABLE,
  ICMPV4_ECHO_REPLY,
  ICMPV4_ECHO_REQUEST,
  ICMPV4_PARAMETER_PROBLEM,
  ICMPV4_REDIRECT,
  ICMPV4_TIME_EXCEEDED,
  ICMPV4_UNREACH_FRAG_NEEDED,
  ICMPV6_DEST_UNREACHABLE,
  ICMPV6_ECHO_REPLY,
  ICMPV6_ECHO_REQUEST,
  ICMPV6_NEIGHBOR_ADVERTISEMENT,
  ICMPV6_NEIGHBOR_SOLICITATION,
  ICMPV6_PACKET_TOO_BIG,
  ICMPV6_PARAMETER_PROBLEM,
  ICMPV6_REDIRECT,
  ICMPV6_ROUTER_ADVERTISEMENT,
  ICMPV6_ROUTER_SOLICITATION,
  ICMPV6_TIME_EXCEEDED,
  tcpOptionsLength,
  type ArpRepr,
  type EthernetEmitRepr,
  type Icmpv4EmitRepr,
  type Icmpv6EmitRepr,
  type IpPseudoHeader,
  type Ipv4EmitRepr,
  type Ipv6EmitRepr,
  type NdpOptions,
  type TcpEmitRepr,
  type TcpOptions,
} from '../../stacks/wire/index.js'

export const u8 = fc.integer({ min: 0, max: 0xff })
export const u16 = fc.integer({ min: 0, max: 0xffff })
export const u32 = fc.integer({ min: 0, max: 0xffffffff })
export const mac = fc.uint8Array({ minLength: 6, maxLength: 6 })
export const ipv6Address = fc.uint8Array({ minLength: 16, maxLength: 16 })
export const payload = (max = 64) => fc.uint8Array({ minLength: 0, maxLength: max })

export const ethernetRepr: fc.Arbitrary<EthernetEmitRepr> = fc.record(
  {
    dst: mac,
    src: mac,
    ethertype: fc.integer({ min: 0x0600, max: 0xffff }).filter((t) => t !== ETHERTYPE_VLAN),
    vlan: fc.record({ pcp: fc.integer({ min: 0, max: 7 }), dei: fc.boolean(), id: fc.integer({ min: 0, max: 4095 }) }),
  },
  { requiredKeys: ['dst', 'src', 'ethertype'] },
)

export const arpRepr: fc.Arbitrary<ArpRepr> = fc.record({ operation: u16, senderMac: mac, senderIp: u32, targetMac: mac, targetIp: u32 })

export const ipv4Repr: fc.Arbitrary<Ipv4EmitRepr> = fc.record({
  src: u32,
  dst: u32,
  protocol: u8,
  ttl: u8,
  id: u16,
  dontFragment: fc.boolean(),
  moreFragments: fc.boolean(),
  fragmentOffset: fc.integer({ min: 0, max: 8191 }).map((n) => n * 8),
  dscp: fc.integer({ min: 0, max: 63 }),
  ecn: fc.integer({ min: 0, max: 3 }),
  payloadLength: fc.integer({ min: 0, max: 128 }),
})

/** Upper-layer protocols only: a random payload behind an extension header number would not be a valid chain. */
const upperProtocol = u8.filter((n) => ![0, 43, 44, 50, 51, 59, 60].includes(n))

export const ipv6Repr: fc.Arbitrary<Ipv6EmitRepr> = fc.record({
  src: ipv6Address,
  dst: ipv6Address,
  nextHeader: upperProtocol,
  hopLimit: u8,
  payloadLength: fc.integer({ min: 0, max: 128 }),
  flowLabel: fc.integer({ min: 0, max: 0xfffff }),
  trafficClass: u8,
})

export const pseudoHeader: fc.Arbitrary<IpPseudoHeader> = fc.oneof(
  fc.record({ version: fc.constant(4 as const), src: u32, dst: u32 }),
  fc.record({ version: fc.constant(6 as const), src: ipv6Address, dst: ipv6Address }),
)

const sackBlock = fc.tuple(u32, u32)

export const tcpOptions: fc.Arbitrary<TcpOptions> = fc
  .record(
    {
      mss: u16,
      windowScale: u8,
      sackPermitted: fc.constant(true),
      sack: fc.array(sackBlock, { minLength: 1, maxLength: 4 }),
      timestamp: fc.tuple(u32, u32),
    },
    { requiredKeys: [] },
  )
  .filter((o) => tcpOptionsLength(o) <= 40)

export const tcpRepr: fc.Arbitrary<TcpEmitRepr> = fc.record({
  srcPort: u16,
  dstPort: u16,
  seq: u32,
  ack: u32,
  flags: u8,
  window: u16,
  urgentPointer: u16,
  options: tcpOptions,
  payloadLength: fc.integer({ min: 0, max: 64 }),
})

export const icmpv4Repr: fc.Arbitrary<Icmpv4EmitRepr> = fc.oneof(
  fc.record({ type: fc.constantFrom(ICMPV4_ECHO_REQUEST, ICMPV4_ECHO_REPLY), code: u8, identifier: u16, sequence: u16, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constant(ICMPV4_DEST_UNREACHABLE), code: fc.constant(ICMPV4_UNREACH_FRAG_NEEDED), nextHopMtu: u16, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constant(ICMPV4_DEST_UNREACHABLE), code: u8.filter((c) => c !== ICMPV4_UNREACH_FRAG_NEEDED), restOfHeader: u32, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constant(ICMPV4_REDIRECT), code: u8, gateway: u32, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constant(ICMPV4_PARAMETER_PROBLEM), code: u8, pointer: u8, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constantFrom(ICMPV4_TIME_EXCEEDED, 13, 14, 200), code: u8, restOfHeader: u32, payloadLength: fc.integer({ min: 0, max: 64 }) }),
)

const prefixInformation = fc.record({
  prefixLength: fc.integer({ min: 0, max: 128 }),
  onLink: fc.boolean(),
  autonomous: fc.boolean(),
  validLifetime: u32,
  preferredLifetime: u32,
  prefix: ipv6Address,
})

export const ndpOptions: fc.Arbitrary<NdpOptions> = fc.record(
  {
    sourceLinkLayerAddress: mac,
    targetLinkLayerAddress: mac,
    prefixInformation: fc.array(prefixInformation, { minLength: 1, maxLength: 2 }),
    mtu: u32,
    // Whole 8-byte units, as parse returns them (padding included).
    redirectedHeader: fc.integer({ min: 1, max: 6 }).chain((n) => fc.uint8Array({ minLength: 8 * n, maxLength: 8 * n })),
    nonce: fc.uint8Array({ minLength: 6, maxLength: 6 }),
  },
  { requiredKeys: [] },
)

export const icmpv6Repr: fc.Arbitrary<Icmpv6EmitRepr> = fc.oneof(
  fc.record({ type: fc.constantFrom(ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY), code: u8, identifier: u16, sequence: u16, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constant(ICMPV6_PACKET_TOO_BIG), code: u8, mtu: u32, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constant(ICMPV6_PARAMETER_PROBLEM), code: u8, pointer: u32, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constantFrom(ICMPV6_DEST_UNREACHABLE, ICMPV6_TIME_EXCEEDED, 130, 143, 200), code: u8, restOfHeader: u32, payloadLength: fc.integer({ min: 0, max: 64 }) }),
  fc.record({ type: fc.constant(ICMPV6_ROUTER_SOLICITATION), code: u8, ndpOptions, payloadLength: fc.constant(0) }),
  fc.record({
    type: fc.constant(ICMPV6_ROUTER_ADVERTISEMENT),
    code: u8,
    routerAdvertisement: fc.record({ curHopLimit: u8, managed: fc.boolean(), other: fc.boolean(), routerLifetime: u16, reachableTime: u32, retransTimer: u32 }),
    ndpOptions,
    payloadLength: fc.constant(0),
  }),
  fc.record({ type: fc.constant(ICMPV6_NEIGHBOR_SOLICITATION), code: u8, targetAddress: ipv6Address, ndpOptions, payloadLength: fc.constant(0) }),
  fc.record({
    type: fc.constant(ICMPV6_NEIGHBOR_ADVERTISEMENT),
    code: u8,
    targetAddress: ipv6Address,
    neighborAdvertisement: fc.record({ router: fc.boolean(), solicited: fc.boolean(), override: fc.boolean() }),
    ndpOptions,
    payloadLength: fc.constant(0),
  }),
  fc.record({ type: fc.constant(ICMPV6_REDIRECT), code: u8, targetAddress: ipv6Address, destinationAddress: ipv6Address, ndpOptions, payloadLength: fc.constant(0) }),
)
