// Packet -> flow key, reading the headers in place through the wire layer's
// reused views (no copies, no allocation). Only what classification needs is
// read: link type, IP version, addresses, the upper-layer protocol after IPv6
// extension headers, fragment fields and the TCP/UDP ports. Full validation (checksums, options) is the
// stack's job (stacks/wire, stacks/core); anything that would make these
// fields unreliable is a parse error here.
import { Ipv4View, Ipv6View } from '../stacks/wire/index.js'
import { Direction, KEY_WORDS, W_LOCAL, W_META, W_PORTS, W_REMOTE, protocolHasPorts } from './key.js'

export const enum ParseStatus {
  Ok = 0,
  NotIp = 1,
  ParseError = 2,
}

export const enum FragmentKind {
  None = 0,
  /** Offset 0 with more fragments: carries the ports for the whole datagram. */
  First = 1,
  /** Offset > 0: no transport header; classified like its first fragment. */
  Later = 2,
}

export const enum LinkKind {
  Ethernet = 0,
  Ip = 1,
}

const ETHERTYPE_IPV4 = 0x0800
const ETHERTYPE_IPV6 = 0x86dd
const ETHERTYPE_ARP = 0x0806
const ETHERTYPE_VLAN = 0x8100
const ETHERTYPE_QINQ = 0x88a8


/** The reused result of parsing one packet. */
export class PacketInfo {
  readonly key = new Uint32Array(KEY_WORDS)
  fragment: FragmentKind = FragmentKind.None
  /** IPv4 identification or IPv6 fragment header identification. */
  fragmentId = 0
  /** ARP frames: the sender protocol address (IPv4), for anti-spoofing; -1 when not ARP. */
  arpSenderAddress = -1
  /** Reused zero-allocation header views from the wire layer. */
  readonly ipv4 = new Ipv4View()
  readonly ipv6 = new Ipv6View()
}

function u16(b: Uint8Array, i: number): number {
  return (b[i] << 8) | b[i + 1]
}

function u32(b: Uint8Array, i: number): number {
  return ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0
}

/**
 * Fills `info` from the packet at `buf[off..off+len)`. Direction decides
 * which side is local: inbound packets are addressed to us (local =
 * destination), outbound ones come from us (local = source).
 */
export function extractFlowKey(
  buf: Uint8Array,
  off: number,
  len: number,
  link: LinkKind,
  portIndex: number,
  direction: Direction,
  info: PacketInfo,
): ParseStatus {
  info.fragment = FragmentKind.None
  info.fragmentId = 0
  info.arpSenderAddress = -1
  if (off < 0 || len < 0 || off + len > buf.length) return ParseStatus.ParseError
  let at = off
  const end = off + len
  if (link === LinkKind.Ethernet) {
    if (len < 14) return ParseStatus.ParseError
    let ethertype = u16(buf, at + 12)
    at += 14
    for (let tags = 0; (ethertype === ETHERTYPE_VLAN || ethertype === ETHERTYPE_QINQ) && tags < 2; tags++) {
      if (at + 4 > end) return ParseStatus.ParseError
      ethertype = u16(buf, at + 2)
      at += 4
    }
    if (ethertype === ETHERTYPE_ARP) {
      // RFC 826 for Ethernet/IPv4: htype 1, ptype 0x0800, hlen 6, plen 4; sender IP at 14.
      if (at + 28 <= end && u16(buf, at) === 1 && u16(buf, at + 2) === ETHERTYPE_IPV4 && buf[at + 4] === 6 && buf[at + 5] === 4) {
        info.arpSenderAddress = u32(buf, at + 14)
      }
      return ParseStatus.NotIp
    }
    if (ethertype !== ETHERTYPE_IPV4 && ethertype !== ETHERTYPE_IPV6) return ParseStatus.NotIp
    if (at >= end) return ParseStatus.ParseError
    const version = buf[at] >>> 4
    if ((ethertype === ETHERTYPE_IPV4) !== (version === 4)) return ParseStatus.ParseError
  }
  if (at >= end) return ParseStatus.ParseError
  const version = buf[at] >>> 4
  if (version === 4) return parseIPv4(buf, at, end, portIndex, direction, info)
  if (version === 6) return parseIPv6(buf, at, end, portIndex, direction, info)
  return link === LinkKind.Ip ? ParseStatus.ParseError : ParseStatus.NotIp
}

function parseIPv4(buf: Uint8Array, at: number, end: number, portIndex: number, direction: Direction, info: PacketInfo): ParseStatus {
  const ip = info.ipv4
  if (!ip.reset(buf, at, end - at)) return ParseStatus.ParseError
  const headerLength = ip.headerLength
  const totalLength = ip.totalLength
  if (totalLength < headerLength || at + totalLength > end) return ParseStatus.ParseError
  const protocol = ip.protocol
  const key = info.key
  key[W_META] = ((4 << 24) | (protocol << 16) | (portIndex & 0xffff)) >>> 0
  const src = ip.src
  const dst = ip.dst
  key[W_LOCAL] = direction === Direction.In ? dst : src
  key[W_LOCAL + 1] = 0
  key[W_LOCAL + 2] = 0
  key[W_LOCAL + 3] = 0
  key[W_REMOTE] = direction === Direction.In ? src : dst
  key[W_REMOTE + 1] = 0
  key[W_REMOTE + 2] = 0
  key[W_REMOTE + 3] = 0
  key[W_PORTS] = 0
  if (ip.isFragment) {
    const later = ip.fragmentOffset !== 0
    info.fragment = later ? FragmentKind.Later : FragmentKind.First
    info.fragmentId = ip.id
    if (later) return ParseStatus.Ok
  }
  return readPorts(buf, at + headerLength, at + totalLength, protocol, direction, key)
}

function parseIPv6(buf: Uint8Array, at: number, end: number, portIndex: number, direction: Direction, info: PacketInfo): ParseStatus {
  const ip = info.ipv6
  // The view walks the extension header chain (bounded) to the upper layer.
  if (!ip.reset(buf, at, end - at)) return ParseStatus.ParseError
  const payloadEnd = at + 40 + ip.payloadLength
  // A zero payload length means a jumbogram (RFC 2675), which no port here carries.
  if (payloadEnd > end || (payloadEnd === at + 40 && ip.nextHeader !== 59)) return ParseStatus.ParseError
  const key = info.key
  const localAt = direction === Direction.In ? at + 24 : at + 8
  const remoteAt = direction === Direction.In ? at + 8 : at + 24
  for (let i = 0; i < 4; i++) {
    key[W_LOCAL + i] = u32(buf, localAt + 4 * i)
    key[W_REMOTE + i] = u32(buf, remoteAt + 4 * i)
  }
  key[W_PORTS] = 0
  const protocol = ip.upperProtocol
  key[W_META] = ((6 << 24) | (protocol << 16) | (portIndex & 0xffff)) >>> 0
  if (ip.fragmentOffset > 0 || (ip.fragmentOffset === 0 && ip.moreFragments)) {
    const later = ip.fragmentOffset > 0
    info.fragment = later ? FragmentKind.Later : FragmentKind.First
    info.fragmentId = ip.fragmentId
    // A later fragment's payload is the middle of the datagram: the next
    // header value names the datagram's protocol, nothing more is readable.
    if (later) return ParseStatus.Ok
  }
  return readPorts(buf, ip.upperOffset, payloadEnd, protocol, direction, key)
}

function readPorts(buf: Uint8Array, at: number, end: number, protocol: number, direction: Direction, key: Uint32Array): ParseStatus {
  if (!protocolHasPorts(protocol)) return ParseStatus.Ok
  if (at + 4 > end) return ParseStatus.ParseError
  const src = u16(buf, at)
  const dst = u16(buf, at + 2)
  key[W_PORTS] = direction === Direction.In ? ((dst << 16) | src) >>> 0 : ((src << 16) | dst) >>> 0
  return ParseStatus.Ok
}
