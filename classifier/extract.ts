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

/**
 * The common case read at fixed offsets, without the views: an unfragmented
 * IPv4 packet (any protocol, options allowed) or an IPv6 packet whose next
 * header is TCP or UDP, on an IP link or untagged Ethernet. Writes the flow
 * key to `key[keyOff..keyOff+KEY_WORDS)` and returns true; returns false for
 * anything else (VLAN tags, extension headers, fragments, ARP, malformed
 * lengths), and the caller takes the full path (extractFlowKey), which
 * decides those cases. For every packet it accepts, it writes the same key
 * as extractFlowKey.
 */
export function extractFlowKeyFast(
  buf: Uint8Array,
  off: number,
  len: number,
  link: LinkKind,
  portIndex: number,
  direction: Direction,
  key: Uint32Array,
  keyOff: number,
): boolean {
  let at = off
  const end = off + len
  if (off < 0 || len < 0 || end > buf.length) return false
  if (link === LinkKind.Ethernet) {
    if (len < 14) return false
    const ethertype = (buf[off + 12] << 8) | buf[off + 13]
    at += 14
    if (ethertype === ETHERTYPE_IPV4) {
      if (at >= end || buf[at] >>> 4 !== 4) return false
    } else if (ethertype === ETHERTYPE_IPV6) {
      if (at >= end || buf[at] >>> 4 !== 6) return false
    } else return false
  } else if (at >= end) return false
  const first = buf[at]
  const inbound = direction === Direction.In
  if (first >>> 4 === 4) {
    const headerLength = (first & 0x0f) << 2
    if (headerLength < 20 || at + headerLength > end) return false
    const totalLength = (buf[at + 2] << 8) | buf[at + 3]
    if (totalLength < headerLength || at + totalLength > end) return false
    // More-fragments flag or a fragment offset: the full path tracks datagrams.
    if ((((buf[at + 6] << 8) | buf[at + 7]) & 0x3fff) !== 0) return false
    const protocol = buf[at + 9]
    const src = ((buf[at + 12] << 24) | (buf[at + 13] << 16) | (buf[at + 14] << 8) | buf[at + 15]) >>> 0
    const dst = ((buf[at + 16] << 24) | (buf[at + 17] << 16) | (buf[at + 18] << 8) | buf[at + 19]) >>> 0
    let ports = 0
    if (protocol === 6 || protocol === 17) {
      const l4 = at + headerLength
      if (l4 + 4 > at + totalLength) return false
      const sport = (buf[l4] << 8) | buf[l4 + 1]
      const dport = (buf[l4 + 2] << 8) | buf[l4 + 3]
      ports = inbound ? ((dport << 16) | sport) >>> 0 : ((sport << 16) | dport) >>> 0
    }
    key[keyOff + W_META] = ((4 << 24) | (protocol << 16) | (portIndex & 0xffff)) >>> 0
    key[keyOff + W_LOCAL] = inbound ? dst : src
    key[keyOff + W_LOCAL + 1] = 0
    key[keyOff + W_LOCAL + 2] = 0
    key[keyOff + W_LOCAL + 3] = 0
    key[keyOff + W_REMOTE] = inbound ? src : dst
    key[keyOff + W_REMOTE + 1] = 0
    key[keyOff + W_REMOTE + 2] = 0
    key[keyOff + W_REMOTE + 3] = 0
    key[keyOff + W_PORTS] = ports
    return true
  }
  if (first >>> 4 !== 6 || at + 40 > end) return false
  const protocol = buf[at + 6]
  if (protocol !== 6 && protocol !== 17) return false
  const payloadEnd = at + 40 + ((buf[at + 4] << 8) | buf[at + 5])
  // Fewer than 4 payload bytes (or a jumbogram's zero length): the full path reports it.
  if (payloadEnd > end || payloadEnd < at + 44) return false
  const localAt = inbound ? at + 24 : at + 8
  const remoteAt = inbound ? at + 8 : at + 24
  for (let i = 0; i < 4; i++) {
    const l = localAt + 4 * i
    const r = remoteAt + 4 * i
    key[keyOff + W_LOCAL + i] = ((buf[l] << 24) | (buf[l + 1] << 16) | (buf[l + 2] << 8) | buf[l + 3]) >>> 0
    key[keyOff + W_REMOTE + i] = ((buf[r] << 24) | (buf[r + 1] << 16) | (buf[r + 2] << 8) | buf[r + 3]) >>> 0
  }
  const sport = (buf[at + 40] << 8) | buf[at + 41]
  const dport = (buf[at + 42] << 8) | buf[at + 43]
  key[keyOff + W_META] = ((6 << 24) | (protocol << 16) | (portIndex & 0xffff)) >>> 0
  key[keyOff + W_PORTS] = inbound ? ((dport << 16) | sport) >>> 0 : ((sport << 16) | dport) >>> 0
  return true
}
