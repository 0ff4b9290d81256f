/**
 * ICMPv6 (RFC 4443) and Neighbor Discovery (RFC 4861): echo, destination
 * unreachable, packet too big, time exceeded, parameter problem, router
 * solicitation/advertisement, neighbor solicitation/advertisement, redirect,
 * with the NDP options source/target link-layer address, prefix information,
 * MTU, redirected header and nonce (RFC 3971). Unknown options are skipped
 * by length. The checksum covers the IPv6 pseudo-header.
 */
import { inBounds, readU16, readU32, writeU16, writeU32 } from './bytes.js'
import { checksumAccumulate, checksumFold, pseudoHeaderSum, type IpPseudoHeader } from './checksum.js'
import { DEFAULT_PARSE_OPTIONS, WireError, type ParseOptions } from './error.js'
import { IP_PROTOCOL_ICMPV6 } from './ipv4.js'

export const ICMPV6_DEST_UNREACHABLE = 1
export const ICMPV6_PACKET_TOO_BIG = 2
export const ICMPV6_TIME_EXCEEDED = 3
export const ICMPV6_PARAMETER_PROBLEM = 4
export const ICMPV6_ECHO_REQUEST = 128
export const ICMPV6_ECHO_REPLY = 129
export const ICMPV6_ROUTER_SOLICITATION = 133
export const ICMPV6_ROUTER_ADVERTISEMENT = 134
export const ICMPV6_NEIGHBOR_SOLICITATION = 135
export const ICMPV6_NEIGHBOR_ADVERTISEMENT = 136
export const ICMPV6_REDIRECT = 137

/** Destination unreachable codes. */
export const ICMPV6_UNREACH_NO_ROUTE = 0
export const ICMPV6_UNREACH_ADMIN_PROHIBITED = 1
export const ICMPV6_UNREACH_ADDRESS = 3
export const ICMPV6_UNREACH_PORT = 4

export const NDP_OPTION_SOURCE_LINK_LAYER_ADDRESS = 1
export const NDP_OPTION_TARGET_LINK_LAYER_ADDRESS = 2
export const NDP_OPTION_PREFIX_INFORMATION = 3
export const NDP_OPTION_REDIRECTED_HEADER = 4
export const NDP_OPTION_MTU = 5
export const NDP_OPTION_NONCE = 14

export const ICMPV6_HEADER_LENGTH = 8

export interface NdpPrefixInformation {
  prefixLength: number
  onLink: boolean
  autonomous: boolean
  validLifetime: number
  preferredLifetime: number
  /** 16 bytes. */
  prefix: Uint8Array
}

export interface NdpOptions {
  /** 6 bytes (Ethernet). */
  sourceLinkLayerAddress?: Uint8Array
  targetLinkLayerAddress?: Uint8Array
  prefixInformation?: NdpPrefixInformation[]
  mtu?: number
  /** The bytes of the redirected packet (zero padding to 8 bytes included). */
  redirectedHeader?: Uint8Array
  /** RFC 3971 nonce, as Linux sends in duplicate address detection. */
  nonce?: Uint8Array
  /** Options skipped because their type is unknown (parse only). */
  unknownCount?: number
}

export interface RouterAdvertisement {
  curHopLimit: number
  managed: boolean
  other: boolean
  /** Seconds. */
  routerLifetime: number
  /** Milliseconds. */
  reachableTime: number
  /** Milliseconds. */
  retransTimer: number
}

export interface NeighborAdvertisementFlags {
  router: boolean
  solicited: boolean
  override: boolean
}

export interface Icmpv6Repr {
  type: number
  code: number
  /** null when not checked (no pseudo-header, or ChecksumMode 'ignore'). */
  checksumValid: boolean | null
  identifier?: number
  sequence?: number
  /** Packet too big. */
  mtu?: number
  /** Parameter problem. */
  pointer?: number
  /** The 4 bytes after the checksum for types not decoded otherwise (destination unreachable, time exceeded, MLD ...). */
  restOfHeader?: number
  routerAdvertisement?: RouterAdvertisement
  /** NS, NA, redirect: 16 bytes. */
  targetAddress?: Uint8Array
  neighborAdvertisement?: NeighborAdvertisementFlags
  /** Redirect: 16 bytes. */
  destinationAddress?: Uint8Array
  /** Present for RS, RA, NS, NA and redirect (possibly empty). */
  ndpOptions?: NdpOptions
  /**
   * Echo data or the invoking packet of an error. NDP messages have no
   * payload: their body and options belong to the header.
   */
  payloadOffset: number
  payloadLength: number
}

export type Icmpv6EmitRepr = Omit<Icmpv6Repr, 'checksumValid' | 'payloadOffset'>

export function icmpv6IsError(type: number): boolean {
  return type < 128
}

export function icmpv6IsNdp(type: number): boolean {
  return type >= ICMPV6_ROUTER_SOLICITATION && type <= ICMPV6_REDIRECT
}

/** Where the options of an NDP message start, counted from the start of the message (RFC 4861 section 4). */
function ndpOptionsStart(type: number): number {
  switch (type) {
    case ICMPV6_ROUTER_SOLICITATION:
      return 8
    case ICMPV6_ROUTER_ADVERTISEMENT:
      return 16
    case ICMPV6_NEIGHBOR_SOLICITATION:
    case ICMPV6_NEIGHBOR_ADVERTISEMENT:
      return 24
    case ICMPV6_REDIRECT:
      return 40
    default:
      return ICMPV6_HEADER_LENGTH
  }
}

export function ndpOptionsLength(options: NdpOptions | undefined): number {
  if (options === undefined) return 0
  let n = 0
  if (options.sourceLinkLayerAddress !== undefined) n += 8
  if (options.targetLinkLayerAddress !== undefined) n += 8
  if (options.prefixInformation !== undefined) n += 32 * options.prefixInformation.length
  if (options.mtu !== undefined) n += 8
  if (options.nonce !== undefined) n += (Math.ceil((options.nonce.length + 2) / 8)) * 8
  if (options.redirectedHeader !== undefined) n += 8 + Math.ceil(options.redirectedHeader.length / 8) * 8
  return n
}

/** Header bytes emitIcmpv6 writes: 8, or for NDP the body plus its options. */
export function icmpv6HeaderLength(repr: Pick<Icmpv6EmitRepr, 'type' | 'ndpOptions'>): number {
  return icmpv6IsNdp(repr.type) ? ndpOptionsStart(repr.type) + ndpOptionsLength(repr.ndpOptions) : ICMPV6_HEADER_LENGTH
}

export function icmpv6BufferLength(repr: Icmpv6EmitRepr): number {
  return icmpv6HeaderLength(repr) + repr.payloadLength
}

function parseNdpOptions(bytes: Uint8Array, start: number, end: number): NdpOptions | WireError {
  const options: NdpOptions = {}
  let at = start
  while (at < end) {
    if (at + 2 > end) return new WireError('icmpv6', 'option-overrun', 'option header')
    const type = bytes[at]
    const length = bytes[at + 1] * 8
    // RFC 4861 4.6: "Nodes MUST silently discard an ND packet that contains an option with length zero."
    if (length === 0) return new WireError('icmpv6', 'bad-option', `option ${type} length 0`)
    if (at + length > end) return new WireError('icmpv6', 'option-overrun', `option ${type} length ${length}`)
    switch (type) {
      case NDP_OPTION_SOURCE_LINK_LAYER_ADDRESS:
      case NDP_OPTION_TARGET_LINK_LAYER_ADDRESS:
        // Ethernet: 8 bytes, 6 of address (RFC 2464 section 8).
        if (length !== 8) return new WireError('icmpv6', 'bad-option', `link-layer address length ${length}`)
        if (type === NDP_OPTION_SOURCE_LINK_LAYER_ADDRESS) options.sourceLinkLayerAddress = bytes.subarray(at + 2, at + 8)
        else options.targetLinkLayerAddress = bytes.subarray(at + 2, at + 8)
        break
      case NDP_OPTION_PREFIX_INFORMATION: {
        if (length !== 32) return new WireError('icmpv6', 'bad-option', `prefix information length ${length}`)
        const prefixLength = bytes[at + 2]
        if (prefixLength > 128) return new WireError('icmpv6', 'bad-option', `prefix length ${prefixLength}`)
        ;(options.prefixInformation ??= []).push({
          prefixLength,
          onLink: (bytes[at + 3] & 0x80) !== 0,
          autonomous: (bytes[at + 3] & 0x40) !== 0,
          validLifetime: readU32(bytes, at + 4),
          preferredLifetime: readU32(bytes, at + 8),
          prefix: bytes.subarray(at + 16, at + 32),
        })
        break
      }
      case NDP_OPTION_MTU:
        if (length !== 8) return new WireError('icmpv6', 'bad-option', `mtu length ${length}`)
        options.mtu = readU32(bytes, at + 4)
        break
      case NDP_OPTION_REDIRECTED_HEADER:
        options.redirectedHeader = bytes.subarray(at + 8, at + length)
        break
      case NDP_OPTION_NONCE:
        options.nonce = bytes.subarray(at + 2, at + length)
        break
      default:
        options.unknownCount = (options.unknownCount ?? 0) + 1
    }
    at += length
  }
  return options
}

/**
 * Parses the message at `offset`; `length` is the upper-layer length. With
 * `ip` the checksum (over the IPv6 pseudo-header) is checked per options.
 * NDP bodies are checked for length; hop limit 255 and code 0 (RFC 4861
 * validity rules) are for the caller, which has the IP header.
 */
export function parseIcmpv6(
  bytes: Uint8Array,
  offset = 0,
  length = bytes.length - offset,
  ip: IpPseudoHeader | null = null,
  options: ParseOptions = DEFAULT_PARSE_OPTIONS,
): Icmpv6Repr | WireError {
  if (!inBounds(bytes, offset, length) || length < ICMPV6_HEADER_LENGTH) return new WireError('icmpv6', 'truncated', `${length} bytes`)
  let checksumValid: boolean | null = null
  const mode = options.checksum ?? 'verify'
  if (ip !== null && mode !== 'ignore') {
    checksumValid = checksumFold(checksumAccumulate(bytes, offset, length, pseudoHeaderSum(ip, IP_PROTOCOL_ICMPV6, length))) === 0
    if (!checksumValid && mode === 'verify') return new WireError('icmpv6', 'bad-checksum')
  }
  const type = bytes[offset]
  const code = bytes[offset + 1]
  const end = offset + length
  const repr: Icmpv6Repr = { type, code, checksumValid, payloadOffset: offset + ICMPV6_HEADER_LENGTH, payloadLength: length - ICMPV6_HEADER_LENGTH }
  if (icmpv6IsNdp(type)) {
    const optionsStart = offset + ndpOptionsStart(type)
    if (optionsStart > end) return new WireError('icmpv6', 'truncated', `ndp type ${type} body`)
    switch (type) {
      case ICMPV6_ROUTER_ADVERTISEMENT:
        repr.routerAdvertisement = {
          curHopLimit: bytes[offset + 4],
          managed: (bytes[offset + 5] & 0x80) !== 0,
          other: (bytes[offset + 5] & 0x40) !== 0,
          routerLifetime: readU16(bytes, offset + 6),
          reachableTime: readU32(bytes, offset + 8),
          retransTimer: readU32(bytes, offset + 12),
        }
        break
      case ICMPV6_NEIGHBOR_ADVERTISEMENT:
        repr.neighborAdvertisement = {
          router: (bytes[offset + 4] & 0x80) !== 0,
          solicited: (bytes[offset + 4] & 0x40) !== 0,
          override: (bytes[offset + 4] & 0x20) !== 0,
        }
        repr.targetAddress = bytes.subarray(offset + 8, offset + 24)
        break
      case ICMPV6_NEIGHBOR_SOLICITATION:
        repr.targetAddress = bytes.subarray(offset + 8, offset + 24)
        break
      case ICMPV6_REDIRECT:
        repr.targetAddress = bytes.subarray(offset + 8, offset + 24)
        repr.destinationAddress = bytes.subarray(offset + 24, offset + 40)
        break
    }
    const ndpOptions = parseNdpOptions(bytes, optionsStart, end)
    if (ndpOptions instanceof WireError) return ndpOptions
    repr.ndpOptions = ndpOptions
    repr.payloadOffset = end
    repr.payloadLength = 0
    return repr
  }
  switch (type) {
    case ICMPV6_ECHO_REQUEST:
    case ICMPV6_ECHO_REPLY:
      repr.identifier = readU16(bytes, offset + 4)
      repr.sequence = readU16(bytes, offset + 6)
      break
    case ICMPV6_PACKET_TOO_BIG:
      repr.mtu = readU32(bytes, offset + 4)
      break
    case ICMPV6_PARAMETER_PROBLEM:
      repr.pointer = readU32(bytes, offset + 4)
      break
    default:
      repr.restOfHeader = readU32(bytes, offset + 4)
  }
  return repr
}

function writeNdpOptions(options: NdpOptions, bytes: Uint8Array, at: number): number {
  const linkLayer = (type: number, mac: Uint8Array): void => {
    bytes[at] = type
    bytes[at + 1] = 1
    bytes.set(mac.subarray(0, 6), at + 2)
    at += 8
  }
  if (options.sourceLinkLayerAddress !== undefined) linkLayer(NDP_OPTION_SOURCE_LINK_LAYER_ADDRESS, options.sourceLinkLayerAddress)
  if (options.targetLinkLayerAddress !== undefined) linkLayer(NDP_OPTION_TARGET_LINK_LAYER_ADDRESS, options.targetLinkLayerAddress)
  for (const prefix of options.prefixInformation ?? []) {
    bytes[at] = NDP_OPTION_PREFIX_INFORMATION
    bytes[at + 1] = 4
    bytes[at + 2] = prefix.prefixLength
    bytes[at + 3] = (prefix.onLink ? 0x80 : 0) | (prefix.autonomous ? 0x40 : 0)
    writeU32(bytes, at + 4, prefix.validLifetime)
    writeU32(bytes, at + 8, prefix.preferredLifetime)
    writeU32(bytes, at + 12, 0)
    bytes.set(prefix.prefix.subarray(0, 16), at + 16)
    at += 32
  }
  if (options.mtu !== undefined) {
    bytes[at] = NDP_OPTION_MTU
    bytes[at + 1] = 1
    writeU16(bytes, at + 2, 0)
    writeU32(bytes, at + 4, options.mtu)
    at += 8
  }
  if (options.nonce !== undefined) {
    const length = Math.ceil((options.nonce.length + 2) / 8) * 8
    bytes.fill(0, at, at + length)
    bytes[at] = NDP_OPTION_NONCE
    bytes[at + 1] = length / 8
    bytes.set(options.nonce, at + 2)
    at += length
  }
  if (options.redirectedHeader !== undefined) {
    const length = 8 + Math.ceil(options.redirectedHeader.length / 8) * 8
    bytes.fill(0, at, at + length)
    bytes[at] = NDP_OPTION_REDIRECTED_HEADER
    bytes[at + 1] = length / 8
    bytes.set(options.redirectedHeader, at + 8)
    at += length
  }
  return at
}

/**
 * Writes the header (for NDP: body and options too) at `offset`; returns
 * icmpv6HeaderLength(repr). With `ip`, the payload must be in place and the
 * checksum is filled; without it the checksum is left 0.
 */
export function emitIcmpv6(repr: Icmpv6EmitRepr, bytes: Uint8Array, offset = 0, ip: IpPseudoHeader | null = null): number {
  bytes[offset] = repr.type
  bytes[offset + 1] = repr.code
  writeU16(bytes, offset + 2, 0)
  writeU32(bytes, offset + 4, 0)
  let headerLength = ICMPV6_HEADER_LENGTH
  switch (repr.type) {
    case ICMPV6_ECHO_REQUEST:
    case ICMPV6_ECHO_REPLY:
      writeU16(bytes, offset + 4, repr.identifier ?? 0)
      writeU16(bytes, offset + 6, repr.sequence ?? 0)
      break
    case ICMPV6_PACKET_TOO_BIG:
      writeU32(bytes, offset + 4, repr.mtu ?? 0)
      break
    case ICMPV6_PARAMETER_PROBLEM:
      writeU32(bytes, offset + 4, repr.pointer ?? 0)
      break
    case ICMPV6_ROUTER_SOLICITATION:
      break
    case ICMPV6_ROUTER_ADVERTISEMENT: {
      const ra = repr.routerAdvertisement
      if (ra !== undefined) {
        bytes[offset + 4] = ra.curHopLimit
        bytes[offset + 5] = (ra.managed ? 0x80 : 0) | (ra.other ? 0x40 : 0)
        writeU16(bytes, offset + 6, ra.routerLifetime)
        writeU32(bytes, offset + 8, ra.reachableTime)
        writeU32(bytes, offset + 12, ra.retransTimer)
      } else {
        bytes.fill(0, offset + 8, offset + 16)
      }
      break
    }
    case ICMPV6_NEIGHBOR_SOLICITATION:
    case ICMPV6_NEIGHBOR_ADVERTISEMENT:
    case ICMPV6_REDIRECT: {
      const na = repr.neighborAdvertisement
      if (repr.type === ICMPV6_NEIGHBOR_ADVERTISEMENT && na !== undefined) {
        bytes[offset + 4] = (na.router ? 0x80 : 0) | (na.solicited ? 0x40 : 0) | (na.override ? 0x20 : 0)
      }
      if (repr.targetAddress !== undefined) bytes.set(repr.targetAddress.subarray(0, 16), offset + 8)
      else bytes.fill(0, offset + 8, offset + 24)
      if (repr.type === ICMPV6_REDIRECT) {
        if (repr.destinationAddress !== undefined) bytes.set(repr.destinationAddress.subarray(0, 16), offset + 24)
        else bytes.fill(0, offset + 24, offset + 40)
      }
      break
    }
    default:
      writeU32(bytes, offset + 4, repr.restOfHeader ?? 0)
  }
  if (icmpv6IsNdp(repr.type)) {
    headerLength = writeNdpOptions(repr.ndpOptions ?? {}, bytes, offset + ndpOptionsStart(repr.type)) - offset
  }
  if (ip !== null) {
    const length = headerLength + repr.payloadLength
    writeU16(bytes, offset + 2, checksumFold(checksumAccumulate(bytes, offset, length, pseudoHeaderSum(ip, IP_PROTOCOL_ICMPV6, length))))
  }
  return headerLength
}
