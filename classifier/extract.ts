// Packet -> flow key, reading the headers in place (no views, no copies, no
// allocation). Only what classification needs is read: link type, IP version,
// addresses, the upper-layer protocol after IPv6 extension headers, fragment
// fields and the TCP/UDP ports. Full validation (checksums, options) is the
// stack's job (stacks/wire, stacks/core); anything that would make these
// fields unreliable is a parse error here.
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

const IPV6_HOP_BY_HOP = 0
const IPV6_ROUTING = 43
const IPV6_FRAGMENT = 44
const IPV6_AH = 51
const IPV6_DESTINATION = 60
/** Extension headers followed before giving up (RFC 8200 recommends each appear at most once or twice). */
const MAX_IPV6_EXTENSIONS = 8

/** The reused result of parsing one packet. */
export class PacketInfo {
  readonly key = new Uint32Array(KEY_WORDS)
  fragment: FragmentKind = FragmentKind.None
  /** IPv4 identification or IPv6 fragment header identification. */
  fragmentId = 0
  /** ARP frames: the sender protocol address (IPv4), for anti-spoofing; -1 when not ARP. */
  arpSenderAddress = -1
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
  if (at + 20 > end) return ParseStatus.ParseError
  const headerLength = (buf[at] & 0x0f) * 4
  const totalLength = u16(buf, at + 2)
  if (headerLength < 20 || totalLength < headerLength || at + totalLength > end) return ParseStatus.ParseError
  const protocol = buf[at + 9]
  const flagsOffset = u16(buf, at + 6)
  const fragmentOffset = flagsOffset & 0x1fff
  const moreFragments = (flagsOffset & 0x2000) !== 0
  const key = info.key
  key[W_META] = ((4 << 24) | (protocol << 16) | (portIndex & 0xffff)) >>> 0
  const src = u32(buf, at + 12)
  const dst = u32(buf, at + 16)
  const local = direction === Direction.In ? dst : src
  const remote = direction === Direction.In ? src : dst
  key[W_LOCAL] = local
  key[W_LOCAL + 1] = 0
  key[W_LOCAL + 2] = 0
  key[W_LOCAL + 3] = 0
  key[W_REMOTE] = remote
  key[W_REMOTE + 1] = 0
  key[W_REMOTE + 2] = 0
  key[W_REMOTE + 3] = 0
  key[W_PORTS] = 0
  if (fragmentOffset !== 0 || moreFragments) {
    info.fragment = fragmentOffset !== 0 ? FragmentKind.Later : FragmentKind.First
    info.fragmentId = u16(buf, at + 4)
    if (fragmentOffset !== 0) return ParseStatus.Ok
  }
  return readPorts(buf, at + headerLength, at + totalLength, protocol, direction, key)
}

function parseIPv6(buf: Uint8Array, at: number, end: number, portIndex: number, direction: Direction, info: PacketInfo): ParseStatus {
  if (at + 40 > end) return ParseStatus.ParseError
  const payloadEnd = at + 40 + u16(buf, at + 4)
  // A zero payload length means a jumbogram (RFC 2675), which no port here carries.
  if (payloadEnd > end || payloadEnd === at + 40 && buf[at + 6] !== 59) return ParseStatus.ParseError
  const key = info.key
  const localAt = direction === Direction.In ? at + 24 : at + 8
  const remoteAt = direction === Direction.In ? at + 8 : at + 24
  for (let i = 0; i < 4; i++) {
    key[W_LOCAL + i] = u32(buf, localAt + 4 * i)
    key[W_REMOTE + i] = u32(buf, remoteAt + 4 * i)
  }
  key[W_PORTS] = 0
  let next = buf[at + 6]
  let cursor = at + 40
  let laterFragment = false
  for (let n = 0; n <= MAX_IPV6_EXTENSIONS; n++) {
    if (next === IPV6_HOP_BY_HOP || next === IPV6_ROUTING || next === IPV6_DESTINATION) {
      if (cursor + 8 > payloadEnd) return ParseStatus.ParseError
      next = buf[cursor]
      cursor += (buf[cursor + 1] + 1) * 8
    } else if (next === IPV6_AH) {
      if (cursor + 8 > payloadEnd) return ParseStatus.ParseError
      next = buf[cursor]
      cursor += (buf[cursor + 1] + 2) * 4
    } else if (next === IPV6_FRAGMENT) {
      if (cursor + 8 > payloadEnd) return ParseStatus.ParseError
      next = buf[cursor]
      const offsetFlags = u16(buf, cursor + 2)
      const fragmentOffset = offsetFlags >>> 3
      const moreFragments = (offsetFlags & 1) !== 0
      cursor += 8
      if (fragmentOffset !== 0 || moreFragments) {
        info.fragment = fragmentOffset !== 0 ? FragmentKind.Later : FragmentKind.First
        info.fragmentId = u32(buf, cursor - 4)
        // A later fragment's payload is the middle of the datagram: the next
        // header value names the datagram's protocol, nothing more is readable.
        if (fragmentOffset !== 0) {
          laterFragment = true
          break
        }
      }
    } else {
      break
    }
    if (cursor > payloadEnd) return ParseStatus.ParseError
    if (n === MAX_IPV6_EXTENSIONS) return ParseStatus.ParseError
  }
  key[W_META] = ((6 << 24) | (next << 16) | (portIndex & 0xffff)) >>> 0
  if (laterFragment) return ParseStatus.Ok
  return readPorts(buf, cursor, payloadEnd, next, direction, key)
}

function readPorts(buf: Uint8Array, at: number, end: number, protocol: number, direction: Direction, key: Uint32Array): ParseStatus {
  if (!protocolHasPorts(protocol)) return ParseStatus.Ok
  if (at + 4 > end) return ParseStatus.ParseError
  const src = u16(buf, at)
  const dst = u16(buf, at + 2)
  key[W_PORTS] = direction === Direction.In ? ((dst << 16) | src) >>> 0 : ((src << 16) | dst) >>> 0
  return ParseStatus.Ok
}
