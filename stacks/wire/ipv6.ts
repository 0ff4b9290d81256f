/**
 * IPv6 (RFC 8200) with its extension-header chain: hop-by-hop options (0),
 * routing (43), fragment (44), destination options (60); the walk stops at
 * the first other header (the upper layer), at no-next-header (59), or at
 * a non-first fragment (whose data is not a header).
 */
import { inBounds, readU16, readU32, writeU16, writeU32 } from './bytes.js'
import { DEFAULT_PARSE_OPTIONS, WireError, type ParseOptions } from './error.js'

export const IPV6_HEADER_LENGTH = 40
export const IPV6_MIN_MTU = 1280
export const IPV6_FRAGMENT_HEADER_LENGTH = 8

export const IPV6_EXT_HOP_BY_HOP = 0
export const IPV6_EXT_ROUTING = 43
export const IPV6_EXT_FRAGMENT = 44
export const IPV6_EXT_ESP = 50
export const IPV6_EXT_AH = 51
export const IPV6_NO_NEXT_HEADER = 59
export const IPV6_EXT_DESTINATION_OPTIONS = 60

/** At most this many extension headers are walked; more is 'malformed' (bounds the work per packet). */
export const IPV6_MAX_EXTENSION_HEADERS = 8

export interface Ipv6Fragment {
  /** In bytes (the field times 8). */
  offset: number
  moreFragments: boolean
  id: number
}

export interface Ipv6Routing {
  type: number
  segmentsLeft: number
  /** Offset of the routing header from the start of the IPv6 header (ICMPv6 parameter problem pointers). */
  offset: number
}

/**
 * The first option in a hop-by-hop or destination options header that this
 * layer does not recognize and whose action bits (RFC 8200 4.2: the two
 * high-order bits of the type) say not to skip it: 1 discard, 2 discard and
 * send parameter problem, 3 the same unless the destination is multicast.
 */
export interface Ipv6UnrecognizedOption {
  type: number
  action: number
  /** Offset of the option from the start of the IPv6 header. */
  pointer: number
}

export interface Ipv6Repr {
  readonly version: 6
  src: Uint8Array
  dst: Uint8Array
  /** Next header of the fixed header. */
  nextHeader: number
  hopLimit: number
  /** The payload length field: bytes after the fixed header. */
  payloadLength: number
  flowLabel: number
  trafficClass: number
  /** Extension header numbers in the order they appear. */
  extensions: number[]
  fragment?: Ipv6Fragment
  routing?: Ipv6Routing
  /** Set when an option asks for the packet to be discarded (see Ipv6UnrecognizedOption). */
  unrecognizedOption?: Ipv6UnrecognizedOption
  /** The protocol after the last extension header (for a non-first fragment, the fragment header's next header). */
  upperProtocol: number
  /** Absolute offset of the upper-layer header (or fragment data). */
  upperOffset: number
  /** Bytes from upperOffset to the end of the datagram (clipped when allowTruncated). */
  upperLength: number
  /** Absolute offset just after the fixed header. */
  payloadOffset: number
}

/** What emitIpv6 writes: the 40-byte fixed header only (extension headers belong to the payload). */
export type Ipv6EmitRepr = Pick<Ipv6Repr, 'src' | 'dst' | 'nextHeader' | 'hopLimit' | 'payloadLength' | 'flowLabel' | 'trafficClass'>

export function ipv6HeaderLength(_repr?: Ipv6EmitRepr): number {
  return IPV6_HEADER_LENGTH
}

export function ipv6BufferLength(repr: Ipv6EmitRepr): number {
  return IPV6_HEADER_LENGTH + repr.payloadLength
}

function isExtensionHeader(n: number): boolean {
  return n === IPV6_EXT_HOP_BY_HOP || n === IPV6_EXT_ROUTING || n === IPV6_EXT_FRAGMENT || n === IPV6_EXT_DESTINATION_OPTIONS || n === IPV6_EXT_AH
}

/** Option types this layer understands: Pad1, PadN, router alert (RFC 2711). */
function isKnownTlvOption(type: number): boolean {
  return type === 0 || type === 1 || type === 5
}

/**
 * Checks the TLV options of a hop-by-hop or destination options header (RFC
 * 8200 4.2) and returns the first unrecognized option whose action bits are
 * not "skip" (00), or null. `headerStart` is where the IPv6 header begins, so
 * the pointer is ready for an ICMPv6 parameter problem (code 2).
 */
function checkTlvOptions(bytes: Uint8Array, start: number, end: number, headerStart: number): WireError | Ipv6UnrecognizedOption | null {
  let unrecognized: Ipv6UnrecognizedOption | null = null
  for (let at = start; at < end; ) {
    const type = bytes[at]
    if (type === 0) {
      at++
      continue
    }
    if (at + 1 >= end) return new WireError('ipv6', 'option-overrun', `option ${type}`)
    const next = at + 2 + bytes[at + 1]
    if (next > end) return new WireError('ipv6', 'option-overrun', `option ${type}`)
    if (unrecognized === null && !isKnownTlvOption(type) && type >>> 6 !== 0) {
      unrecognized = { type, action: type >>> 6, pointer: at - headerStart }
    }
    at = next
  }
  return unrecognized
}

export function parseIpv6(
  bytes: Uint8Array,
  offset = 0,
  length = bytes.length - offset,
  options: ParseOptions = DEFAULT_PARSE_OPTIONS,
): Ipv6Repr | WireError {
  return parseIpv6Into(bytes, offset, length, options, null, null)
}

interface Ipv6ReuseStore {
  readonly fragment: Ipv6Fragment
  readonly routing: Ipv6Routing
}

/**
 * parseIpv6 into one reused Repr: no allocation per packet except on errors
 * (and the rare unrecognized option). `src`/`dst` are copies held by the
 * parser, not views into the packet. Valid until the next call.
 */
export class Ipv6Parser {
  readonly repr: Ipv6Repr = {
    version: 6, src: new Uint8Array(16), dst: new Uint8Array(16), nextHeader: 0, hopLimit: 0, payloadLength: 0, flowLabel: 0,
    trafficClass: 0, extensions: [], fragment: undefined, routing: undefined, unrecognizedOption: undefined, upperProtocol: 0,
    upperOffset: 0, upperLength: 0, payloadOffset: 0,
  }
  private readonly store: Ipv6ReuseStore = { fragment: { offset: 0, moreFragments: false, id: 0 }, routing: { type: 0, segmentsLeft: 0, offset: 0 } }
  parse(bytes: Uint8Array, offset = 0, length = bytes.length - offset, options: ParseOptions = DEFAULT_PARSE_OPTIONS): Ipv6Repr | WireError {
    return parseIpv6Into(bytes, offset, length, options, this.repr, this.store)
  }
}

function parseIpv6Into(
  bytes: Uint8Array,
  offset: number,
  length: number,
  options: ParseOptions,
  out: Ipv6Repr | null,
  store: Ipv6ReuseStore | null,
): Ipv6Repr | WireError {
  if (!inBounds(bytes, offset, length) || length < 1) return new WireError('ipv6', 'truncated', `${length} bytes`)
  const version = bytes[offset] >>> 4
  if (version !== 6) return new WireError('ipv6', 'bad-version', `version ${version}`)
  if (length < IPV6_HEADER_LENGTH) return new WireError('ipv6', 'truncated', `${length} bytes`)
  const payloadLength = readU16(bytes, offset + 4)
  const nextHeader = bytes[offset + 6]
  if (payloadLength === 0 && nextHeader === IPV6_EXT_HOP_BY_HOP) {
    // Probably a jumbogram (RFC 2675); never on our links.
    return new WireError('ipv6', 'unsupported', 'zero payload length with hop-by-hop (jumbogram)')
  }
  let end = offset + IPV6_HEADER_LENGTH + payloadLength
  if (payloadLength > length - IPV6_HEADER_LENGTH) {
    if (options.allowTruncated !== true) {
      return new WireError('ipv6', 'truncated', `payload length ${payloadLength} > ${length - IPV6_HEADER_LENGTH} bytes`)
    }
    end = offset + length
  }
  const first = readU32(bytes, offset)
  const extensions: number[] = out === null ? [] : out.extensions
  extensions.length = 0
  let fragment: Ipv6Fragment | undefined
  let routing: Ipv6Routing | undefined
  let unrecognizedOption: Ipv6UnrecognizedOption | undefined
  let protocol = nextHeader
  let at = offset + IPV6_HEADER_LENGTH
  while (isExtensionHeader(protocol)) {
    if (extensions.length === IPV6_MAX_EXTENSION_HEADERS) return new WireError('ipv6', 'malformed', 'too many extension headers')
    // RFC 8200 4.1: hop-by-hop "is restricted to appear immediately after an IPv6 header".
    if (protocol === IPV6_EXT_HOP_BY_HOP && extensions.length !== 0) {
      return new WireError('ipv6', 'malformed', 'hop-by-hop options not first')
    }
    if (at + 8 > end) return new WireError('ipv6', 'truncated', `extension header ${protocol}`)
    const headerNext = bytes[at]
    let headerLength: number
    if (protocol === IPV6_EXT_FRAGMENT) {
      headerLength = IPV6_FRAGMENT_HEADER_LENGTH
      if (fragment !== undefined) return new WireError('ipv6', 'malformed', 'two fragment headers')
      const field = readU16(bytes, at + 2)
      fragment = store === null ? { offset: 0, moreFragments: false, id: 0 } : store.fragment
      fragment.offset = field & 0xfff8
      fragment.moreFragments = (field & 1) !== 0
      fragment.id = readU32(bytes, at + 4)
    } else if (protocol === IPV6_EXT_AH) {
      // RFC 4302: length in 4-octet units minus 2.
      headerLength = (bytes[at + 1] + 2) * 4
    } else {
      headerLength = (bytes[at + 1] + 1) * 8
    }
    if (at + headerLength > end) return new WireError('ipv6', 'option-overrun', `extension header ${protocol} length ${headerLength}`)
    if (protocol === IPV6_EXT_HOP_BY_HOP || protocol === IPV6_EXT_DESTINATION_OPTIONS) {
      const checked = checkTlvOptions(bytes, at + 2, at + headerLength, offset)
      if (checked instanceof WireError) return checked
      if (checked !== null && unrecognizedOption === undefined) unrecognizedOption = checked
    } else if (protocol === IPV6_EXT_ROUTING) {
      if (routing !== undefined) return new WireError('ipv6', 'malformed', 'two routing headers')
      routing = store === null ? { type: 0, segmentsLeft: 0, offset: 0 } : store.routing
      routing.type = bytes[at + 2]
      routing.segmentsLeft = bytes[at + 3]
      routing.offset = at - offset
    }
    extensions.push(protocol)
    protocol = headerNext
    at += headerLength
    // The data of a non-first fragment is not a header: stop here.
    if (fragment !== undefined && fragment.offset !== 0) break
  }
  if (out !== null) {
    for (let i = 0; i < 16; i++) {
      out.src[i] = bytes[offset + 8 + i]
      out.dst[i] = bytes[offset + 24 + i]
    }
    out.nextHeader = nextHeader
    out.hopLimit = bytes[offset + 7]
    out.payloadLength = payloadLength
    out.flowLabel = first & 0xfffff
    out.trafficClass = (first >>> 20) & 0xff
    out.fragment = fragment
    out.routing = routing
    out.unrecognizedOption = unrecognizedOption
    out.upperProtocol = protocol
    out.upperOffset = at
    out.upperLength = end - at
    out.payloadOffset = offset + IPV6_HEADER_LENGTH
    return out
  }
  const repr: Ipv6Repr = {
    version: 6,
    src: bytes.subarray(offset + 8, offset + 24),
    dst: bytes.subarray(offset + 24, offset + 40),
    nextHeader,
    hopLimit: bytes[offset + 7],
    payloadLength,
    flowLabel: first & 0xfffff,
    trafficClass: (first >>> 20) & 0xff,
    extensions,
    upperProtocol: protocol,
    upperOffset: at,
    upperLength: end - at,
    payloadOffset: offset + IPV6_HEADER_LENGTH,
  }
  if (fragment !== undefined) repr.fragment = fragment
  if (routing !== undefined) repr.routing = routing
  if (unrecognizedOption !== undefined) repr.unrecognizedOption = unrecognizedOption
  return repr
}

/** Writes the 40-byte fixed header at `offset`; returns 40. */
export function emitIpv6(repr: Ipv6EmitRepr, bytes: Uint8Array, offset = 0): number {
  writeU32(bytes, offset, (0x60000000 | ((repr.trafficClass & 0xff) << 20) | (repr.flowLabel & 0xfffff)) >>> 0)
  writeU16(bytes, offset + 4, repr.payloadLength)
  bytes[offset + 6] = repr.nextHeader
  bytes[offset + 7] = repr.hopLimit
  bytes.set(repr.src.subarray(0, 16), offset + 8)
  bytes.set(repr.dst.subarray(0, 16), offset + 24)
  return IPV6_HEADER_LENGTH
}

/** Writes a fragment header (RFC 8200 4.5) at `offset`; returns 8. */
export function emitIpv6FragmentHeader(fragment: Ipv6Fragment, nextHeader: number, bytes: Uint8Array, offset = 0): number {
  bytes[offset] = nextHeader
  bytes[offset + 1] = 0
  writeU16(bytes, offset + 2, (fragment.offset & 0xfff8) | (fragment.moreFragments ? 1 : 0))
  writeU32(bytes, offset + 4, fragment.id)
  return IPV6_FRAGMENT_HEADER_LENGTH
}

/**
 * Zero-allocation view. `reset` checks the version and fixed header, then
 * walks the extension chain (bounded) and fills `upperProtocol`,
 * `upperOffset`, `fragmentOffset` (-1 when not a fragment) and `valid`.
 */
export class Ipv6View {
  bytes: Uint8Array = new Uint8Array(0)
  offset = 0
  length = 0
  upperProtocol = -1
  upperOffset = -1
  /** Byte offset of the fragment, or -1 when there is no fragment header. */
  fragmentOffset = -1
  fragmentId = 0
  moreFragments = false
  valid = false

  reset(bytes: Uint8Array, offset = 0, length = bytes.length - offset): boolean {
    this.bytes = bytes
    this.offset = offset
    this.length = length
    this.upperProtocol = -1
    this.upperOffset = -1
    this.fragmentOffset = -1
    this.fragmentId = 0
    this.moreFragments = false
    this.valid = false
    if (length < IPV6_HEADER_LENGTH || !inBounds(bytes, offset, length) || bytes[offset] >>> 4 !== 6) return false
    const end = offset + Math.min(length, IPV6_HEADER_LENGTH + readU16(bytes, offset + 4))
    let protocol = bytes[offset + 6]
    let at = offset + IPV6_HEADER_LENGTH
    for (let count = 0; isExtensionHeader(protocol); count++) {
      if (count === IPV6_MAX_EXTENSION_HEADERS || at + 8 > end) return false
      const next = bytes[at]
      let headerLength: number
      if (protocol === IPV6_EXT_FRAGMENT) {
        headerLength = 8
        const field = readU16(bytes, at + 2)
        this.fragmentOffset = field & 0xfff8
        this.moreFragments = (field & 1) !== 0
        this.fragmentId = readU32(bytes, at + 4)
      } else if (protocol === IPV6_EXT_AH) {
        headerLength = (bytes[at + 1] + 2) * 4
      } else {
        headerLength = (bytes[at + 1] + 1) * 8
      }
      if (at + headerLength > end) return false
      protocol = next
      at += headerLength
      if (this.fragmentOffset > 0) break
    }
    this.upperProtocol = protocol
    this.upperOffset = at
    this.valid = true
    return true
  }
  get payloadLength(): number {
    return readU16(this.bytes, this.offset + 4)
  }
  get nextHeader(): number {
    return this.bytes[this.offset + 6]
  }
  get hopLimit(): number {
    return this.bytes[this.offset + 7]
  }
  get flowLabel(): number {
    return readU32(this.bytes, this.offset) & 0xfffff
  }
  /** Offset of the 16 source address bytes. */
  get srcOffset(): number {
    return this.offset + 8
  }
  get dstOffset(): number {
    return this.offset + 24
  }
  get isFragment(): boolean {
    return this.fragmentOffset >= 0 && (this.fragmentOffset !== 0 || this.moreFragments)
  }
  /** Bytes from upperOffset to the end of the datagram (clipped to what is present). */
  get upperLength(): number {
    return this.offset + Math.min(this.length, IPV6_HEADER_LENGTH + this.payloadLength) - this.upperOffset
  }
  copySrc(out: Uint8Array, at = 0): void {
    for (let i = 0; i < 16; i++) out[at + i] = this.bytes[this.offset + 8 + i]
  }
  copyDst(out: Uint8Array, at = 0): void {
    for (let i = 0; i < 16; i++) out[at + i] = this.bytes[this.offset + 24 + i]
  }
}
