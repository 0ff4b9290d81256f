// Test helper: runs the wire parsers over a whole Ethernet frame, layer by
// layer, the way the stack and `flowstack decode` do, and keeps every Repr.
import {
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  ICMPV4_DEST_UNREACHABLE,
  ICMPV4_PARAMETER_PROBLEM,
  ICMPV4_REDIRECT,
  ICMPV4_TIME_EXCEEDED,
  icmpv6IsError,
  IP_PROTOCOL_ICMP,
  IP_PROTOCOL_ICMPV6,
  IP_PROTOCOL_TCP,
  IP_PROTOCOL_UDP,
  ipv4IsFragment,
  parseArp,
  parseEthernet,
  parseIcmpv4,
  parseIcmpv6,
  parseIpv4,
  parseIpv6,
  parseTcp,
  parseUdp,
  WireError,
  type ArpRepr,
  type EthernetRepr,
  type Icmpv4Repr,
  type Icmpv6Repr,
  type IpPseudoHeader,
  type Ipv4Repr,
  type Ipv6Repr,
  type ParseOptions,
  type TcpRepr,
  type UdpRepr,
} from '../../stacks/wire/index.js'

export interface IpLayers {
  ipv4?: Ipv4Repr
  ipv6?: Ipv6Repr
  icmpv4?: Icmpv4Repr
  icmpv6?: Icmpv6Repr
  udp?: UdpRepr
  tcp?: TcpRepr
  /** The packet quoted by an ICMP error. */
  inner?: IpLayers
  error?: WireError
}

export interface Dissected extends IpLayers {
  ethernet?: EthernetRepr
  arp?: ArpRepr
}

const STRICT: ParseOptions = { checksum: 'verify' }
const QUOTED: ParseOptions = { checksum: 'report', allowTruncated: true }
const QUOTED_TRANSPORT: ParseOptions = { checksum: 'ignore', allowTruncated: true }

function isIcmpv4Error(type: number): boolean {
  return type === ICMPV4_DEST_UNREACHABLE || type === ICMPV4_TIME_EXCEEDED || type === ICMPV4_REDIRECT || type === ICMPV4_PARAMETER_PROBLEM
}

/** Parses an IP packet at offset; `quoted` relaxes the rules for the truncated copy inside an ICMP error. */
export function dissectIp(bytes: Uint8Array, offset: number, length: number, quoted = false): IpLayers {
  const out: IpLayers = {}
  const version = length > 0 ? bytes[offset] >>> 4 : 0
  let protocol: number
  let at: number
  let upperLength: number
  let pseudo: IpPseudoHeader
  let fragment: boolean
  if (version === 6) {
    const ip = parseIpv6(bytes, offset, length, quoted ? QUOTED : STRICT)
    if (ip instanceof WireError) return { error: ip }
    out.ipv6 = ip
    protocol = ip.upperProtocol
    at = ip.upperOffset
    upperLength = ip.upperLength
    pseudo = ip
    fragment = ip.fragment !== undefined
  } else {
    const ip = parseIpv4(bytes, offset, length, quoted ? QUOTED : STRICT)
    if (ip instanceof WireError) return { error: ip }
    out.ipv4 = ip
    protocol = ip.protocol
    at = ip.payloadOffset
    upperLength = ip.payloadLength
    pseudo = ip
    fragment = ipv4IsFragment(ip)
  }
  // Only a first fragment carries the transport header, and its checksum
  // covers the whole datagram: parse the header, leave the checksum unchecked.
  const firstFragment = fragment && (out.ipv4 !== undefined ? out.ipv4.fragmentOffset === 0 : out.ipv6!.fragment!.offset === 0)
  if (fragment && !firstFragment) return out
  const transportOptions = quoted || firstFragment ? QUOTED_TRANSPORT : STRICT
  if (protocol === IP_PROTOCOL_TCP) {
    if ((quoted || firstFragment) && upperLength < 20) return out
    const tcp = parseTcp(bytes, at, upperLength, pseudo, transportOptions)
    if (tcp instanceof WireError) out.error = tcp
    else out.tcp = tcp
  } else if (protocol === IP_PROTOCOL_UDP) {
    const udp = parseUdp(bytes, at, upperLength, pseudo, transportOptions)
    if (udp instanceof WireError) out.error = udp
    else out.udp = udp
  } else if (protocol === IP_PROTOCOL_ICMP) {
    const icmp = parseIcmpv4(bytes, at, upperLength, transportOptions)
    if (icmp instanceof WireError) out.error = icmp
    else {
      out.icmpv4 = icmp
      if (isIcmpv4Error(icmp.type) && !quoted) out.inner = dissectIp(bytes, icmp.payloadOffset, icmp.payloadLength, true)
    }
  } else if (protocol === IP_PROTOCOL_ICMPV6) {
    const icmp = parseIcmpv6(bytes, at, upperLength, pseudo, transportOptions)
    if (icmp instanceof WireError) out.error = icmp
    else {
      out.icmpv6 = icmp
      if (icmpv6IsError(icmp.type) && !quoted) out.inner = dissectIp(bytes, icmp.payloadOffset, icmp.payloadLength, true)
      const redirected = icmp.ndpOptions?.redirectedHeader
      if (redirected !== undefined && !quoted) {
        out.inner = dissectIp(bytes, redirected.byteOffset - bytes.byteOffset, redirected.length, true)
      }
    }
  }
  return out
}

export function dissectFrame(bytes: Uint8Array): Dissected {
  const ethernet = parseEthernet(bytes)
  if (ethernet instanceof WireError) return { error: ethernet }
  if (ethernet.ethertype === ETHERTYPE_ARP) {
    const arp = parseArp(bytes, ethernet.payloadOffset, ethernet.payloadLength)
    return arp instanceof WireError ? { ethernet, error: arp } : { ethernet, arp }
  }
  if (ethernet.ethertype === ETHERTYPE_IPV4 || ethernet.ethertype === ETHERTYPE_IPV6) {
    return { ethernet, ...dissectIp(bytes, ethernet.payloadOffset, ethernet.payloadLength) }
  }
  return { ethernet }
}

export function fromHex(hex: string): Uint8Array {
  return Uint8Array.from(Buffer.from(hex, 'hex'))
}
