/** IPv4 (RFC 791). Options are validated for length and skipped; emit never writes options. */
import { inBounds, readU16, readU32, writeU16, writeU32 } from './bytes.js'
import { checksumAccumulate, checksumFold, internetChecksum } from './checksum.js'
import { DEFAULT_PARSE_OPTIONS, WireError, type ParseOptions } from './error.js'

export const IP_PROTOCOL_ICMP = 1
export const IP_PROTOCOL_IGMP = 2
export const IP_PROTOCOL_TCP = 6
export const IP_PROTOCOL_UDP = 17
export const IP_PROTOCOL_ICMPV6 = 58

export const IPV4_HEADER_LENGTH = 20
export const IPV4_MIN_MTU = 68

export interface Ipv4Repr {
  readonly version: 4
  src: number
  dst: number
  protocol: number
  ttl: number
  /** The header's total length field. */
  totalLength: number
  /** IHL * 4; emit always writes 20. */
  headerLength: number
  id: number
  dontFragment: boolean
  moreFragments: boolean
  /** Fragment offset in bytes (the header field times 8). */
  fragmentOffset: number
  dscp: number
  ecn: number
  /** Header checksum result; null when not checked (ChecksumMode 'ignore'). */
  checksumValid: boolean | null
  /** Absolute offset of the payload in the parsed bytes. */
  payloadOffset: number
  /** totalLength - headerLength, clipped to the bytes present when allowTruncated. */
  payloadLength: number
}

/** What emitIpv4 needs; totalLength is written as 20 + payloadLength. */
export type Ipv4EmitRepr = Pick<
  Ipv4Repr,
  'src' | 'dst' | 'protocol' | 'ttl' | 'id' | 'dontFragment' | 'moreFragments' | 'fragmentOffset' | 'dscp' | 'ecn' | 'payloadLength'
>

export function ipv4HeaderLength(_repr?: Ipv4EmitRepr): number {
  return IPV4_HEADER_LENGTH
}

export function ipv4BufferLength(repr: Ipv4EmitRepr): number {
  return IPV4_HEADER_LENGTH + repr.payloadLength
}

/** True for any fragment except a whole datagram (MF clear and offset 0). */
export function ipv4IsFragment(repr: Pick<Ipv4Repr, 'moreFragments' | 'fragmentOffset'>): boolean {
  return repr.moreFragments || repr.fragmentOffset !== 0
}

/**
 * Parses the header at `offset` of a datagram of `length` bytes (trailing
 * link-layer padding beyond totalLength is ignored).
 */
export function parseIpv4(
  bytes: Uint8Array,
  offset = 0,
  length = bytes.length - offset,
  options: ParseOptions = DEFAULT_PARSE_OPTIONS,
): Ipv4Repr | WireError {
  return parseIpv4Into(bytes, offset, length, options, null)
}

/** parseIpv4 into one reused Repr: no allocation per packet except on errors. Valid until the next call. */
export class Ipv4Parser {
  readonly repr: Ipv4Repr = {
    version: 4, src: 0, dst: 0, protocol: 0, ttl: 0, totalLength: 0, headerLength: 0, id: 0, dontFragment: false,
    moreFragments: false, fragmentOffset: 0, dscp: 0, ecn: 0, checksumValid: null, payloadOffset: 0, payloadLength: 0,
  }
  parse(bytes: Uint8Array, offset = 0, length = bytes.length - offset, options: ParseOptions = DEFAULT_PARSE_OPTIONS): Ipv4Repr | WireError {
    return parseIpv4Into(bytes, offset, length, options, this.repr)
  }
}

function parseIpv4Into(bytes: Uint8Array, offset: number, length: number, options: ParseOptions, out: Ipv4Repr | null): Ipv4Repr | WireError {
  if (!inBounds(bytes, offset, length) || length < 1) return new WireError('ipv4', 'truncated', `${length} bytes`)
  const version = bytes[offset] >>> 4
  if (version !== 4) return new WireError('ipv4', 'bad-version', `version ${version}`)
  if (length < IPV4_HEADER_LENGTH) return new WireError('ipv4', 'truncated', `${length} bytes`)
  const headerLength = (bytes[offset] & 0x0f) * 4
  if (headerLength < IPV4_HEADER_LENGTH) return new WireError('ipv4', 'bad-length', `IHL ${headerLength / 4}`)
  if (headerLength > length) return new WireError('ipv4', 'truncated', `header ${headerLength} > ${length} bytes`)
  const totalLength = readU16(bytes, offset + 2)
  if (totalLength < headerLength) return new WireError('ipv4', 'bad-length', `total length ${totalLength} < header ${headerLength}`)
  let available = totalLength
  if (totalLength > length) {
    if (options.allowTruncated !== true) return new WireError('ipv4', 'truncated', `total length ${totalLength} > ${length} bytes`)
    available = length
  }
  // Options: RFC 791 types 0 (end) and 1 (no-op) are one byte; the rest are TLVs.
  for (let at = offset + IPV4_HEADER_LENGTH, end = offset + headerLength; at < end; ) {
    const type = bytes[at]
    if (type === 0) break
    if (type === 1) {
      at++
      continue
    }
    if (at + 1 >= end) return new WireError('ipv4', 'option-overrun', `option ${type}`)
    const optionLength = bytes[at + 1]
    if (optionLength < 2) return new WireError('ipv4', 'bad-option', `option ${type} length ${optionLength}`)
    if (at + optionLength > end) return new WireError('ipv4', 'option-overrun', `option ${type}`)
    at += optionLength
  }
  let checksumValid: boolean | null = null
  const mode = options.checksum ?? 'verify'
  if (mode !== 'ignore') {
    checksumValid = internetChecksum(bytes, offset, headerLength) === 0
    if (!checksumValid && mode === 'verify') return new WireError('ipv4', 'bad-checksum')
  }
  const flagsFragment = readU16(bytes, offset + 6)
  if (out !== null) {
    out.src = readU32(bytes, offset + 12)
    out.dst = readU32(bytes, offset + 16)
    out.protocol = bytes[offset + 9]
    out.ttl = bytes[offset + 8]
    out.totalLength = totalLength
    out.headerLength = headerLength
    out.id = readU16(bytes, offset + 4)
    out.dontFragment = (flagsFragment & 0x4000) !== 0
    out.moreFragments = (flagsFragment & 0x2000) !== 0
    out.fragmentOffset = (flagsFragment & 0x1fff) * 8
    out.dscp = bytes[offset + 1] >>> 2
    out.ecn = bytes[offset + 1] & 3
    out.checksumValid = checksumValid
    out.payloadOffset = offset + headerLength
    out.payloadLength = available - headerLength
    return out
  }
  return {
    version: 4,
    src: readU32(bytes, offset + 12),
    dst: readU32(bytes, offset + 16),
    protocol: bytes[offset + 9],
    ttl: bytes[offset + 8],
    totalLength,
    headerLength,
    id: readU16(bytes, offset + 4),
    dontFragment: (flagsFragment & 0x4000) !== 0,
    moreFragments: (flagsFragment & 0x2000) !== 0,
    fragmentOffset: (flagsFragment & 0x1fff) * 8,
    dscp: bytes[offset + 1] >>> 2,
    ecn: bytes[offset + 1] & 3,
    checksumValid,
    payloadOffset: offset + headerLength,
    payloadLength: available - headerLength,
  }
}

/** Writes a 20-byte header with its checksum at `offset`; returns 20. */
export function emitIpv4(repr: Ipv4EmitRepr, bytes: Uint8Array, offset = 0): number {
  bytes[offset] = 0x45
  bytes[offset + 1] = ((repr.dscp & 0x3f) << 2) | (repr.ecn & 3)
  writeU16(bytes, offset + 2, IPV4_HEADER_LENGTH + repr.payloadLength)
  writeU16(bytes, offset + 4, repr.id)
  writeU16(
    bytes,
    offset + 6,
    (repr.dontFragment ? 0x4000 : 0) | (repr.moreFragments ? 0x2000 : 0) | ((repr.fragmentOffset >>> 3) & 0x1fff),
  )
  bytes[offset + 8] = repr.ttl
  bytes[offset + 9] = repr.protocol
  bytes[offset + 10] = 0
  bytes[offset + 11] = 0
  writeU32(bytes, offset + 12, repr.src)
  writeU32(bytes, offset + 16, repr.dst)
  writeU16(bytes, offset + 10, checksumFold(checksumAccumulate(bytes, offset, IPV4_HEADER_LENGTH)))
  return IPV4_HEADER_LENGTH
}

/** Zero-allocation view; `reset` checks version, IHL and that the header fits. */
export class Ipv4View {
  bytes: Uint8Array = new Uint8Array(0)
  offset = 0
  length = 0
  reset(bytes: Uint8Array, offset = 0, length = bytes.length - offset): boolean {
    this.bytes = bytes
    this.offset = offset
    this.length = length
    if (length < IPV4_HEADER_LENGTH || !inBounds(bytes, offset, length)) return false
    const first = bytes[offset]
    const headerLength = (first & 0x0f) * 4
    return first >>> 4 === 4 && headerLength >= IPV4_HEADER_LENGTH && headerLength <= length
  }
  get headerLength(): number {
    return (this.bytes[this.offset] & 0x0f) * 4
  }
  get totalLength(): number {
    return readU16(this.bytes, this.offset + 2)
  }
  get id(): number {
    return readU16(this.bytes, this.offset + 4)
  }
  get dontFragment(): boolean {
    return (this.bytes[this.offset + 6] & 0x40) !== 0
  }
  get moreFragments(): boolean {
    return (this.bytes[this.offset + 6] & 0x20) !== 0
  }
  /** In bytes. */
  get fragmentOffset(): number {
    return (readU16(this.bytes, this.offset + 6) & 0x1fff) * 8
  }
  get isFragment(): boolean {
    return (readU16(this.bytes, this.offset + 6) & 0x3fff) !== 0
  }
  get ttl(): number {
    return this.bytes[this.offset + 8]
  }
  get protocol(): number {
    return this.bytes[this.offset + 9]
  }
  get checksum(): number {
    return readU16(this.bytes, this.offset + 10)
  }
  get src(): number {
    return readU32(this.bytes, this.offset + 12)
  }
  get dst(): number {
    return readU32(this.bytes, this.offset + 16)
  }
  get payloadOffset(): number {
    return this.offset + this.headerLength
  }
  /** From the total length field, clipped to the bytes present (0 when the field is below the header length). */
  get payloadLength(): number {
    return Math.max(0, Math.min(this.totalLength, this.length) - this.headerLength)
  }
  headerChecksumValid(): boolean {
    return internetChecksum(this.bytes, this.offset, this.headerLength) === 0
  }
}
