/** ICMP for IPv4 (RFC 792, RFC 1191 next-hop MTU). */
import { inBounds, readU16, readU32, writeU16, writeU32 } from './bytes.js'
import { checksumAccumulate, checksumFold } from './checksum.js'
import { DEFAULT_PARSE_OPTIONS, WireError, type ParseOptions } from './error.js'

export const ICMPV4_ECHO_REPLY = 0
export const ICMPV4_DEST_UNREACHABLE = 3
/** Deprecated (RFC 6633), still an error message to recognize. */
export const ICMPV4_SOURCE_QUENCH = 4
export const ICMPV4_REDIRECT = 5
export const ICMPV4_ECHO_REQUEST = 8
export const ICMPV4_TIME_EXCEEDED = 11
export const ICMPV4_PARAMETER_PROBLEM = 12

/** Destination unreachable codes. */
export const ICMPV4_UNREACH_NET = 0
export const ICMPV4_UNREACH_HOST = 1
export const ICMPV4_UNREACH_PROTOCOL = 2
export const ICMPV4_UNREACH_PORT = 3
export const ICMPV4_UNREACH_FRAG_NEEDED = 4
export const ICMPV4_UNREACH_ADMIN_PROHIBITED = 13
/** Time exceeded codes. */
export const ICMPV4_TIME_EXCEEDED_TTL = 0
export const ICMPV4_TIME_EXCEEDED_REASSEMBLY = 1

export const ICMPV4_HEADER_LENGTH = 8

export interface Icmpv4Repr {
  type: number
  code: number
  /** null when not checked (ChecksumMode 'ignore'). */
  checksumValid: boolean | null
  /** Echo request/reply. */
  identifier?: number
  sequence?: number
  /** Destination unreachable, fragmentation needed (code 4): the next-hop MTU (RFC 1191). */
  nextHopMtu?: number
  /** Redirect: the gateway address. */
  gateway?: number
  /** Parameter problem: the offending octet. */
  pointer?: number
  /** The 4 bytes after the checksum, for types not decoded above (0 for unused fields). */
  restOfHeader?: number
  /** Echo data, or the invoking datagram of an error. */
  payloadOffset: number
  payloadLength: number
}

export type Icmpv4EmitRepr = Omit<Icmpv4Repr, 'checksumValid' | 'payloadOffset'>

export function icmpv4HeaderLength(_repr?: Icmpv4EmitRepr): number {
  return ICMPV4_HEADER_LENGTH
}

export function icmpv4BufferLength(repr: Icmpv4EmitRepr): number {
  return ICMPV4_HEADER_LENGTH + repr.payloadLength
}

export function icmpv4IsError(type: number): boolean {
  return type === ICMPV4_DEST_UNREACHABLE || type === ICMPV4_REDIRECT || type === ICMPV4_TIME_EXCEEDED || type === ICMPV4_PARAMETER_PROBLEM || type === ICMPV4_SOURCE_QUENCH
}

/** Parses the message at `offset`; `length` is the IP payload length (the checksum covers all of it). */
export function parseIcmpv4(
  bytes: Uint8Array,
  offset = 0,
  length = bytes.length - offset,
  options: ParseOptions = DEFAULT_PARSE_OPTIONS,
): Icmpv4Repr | WireError {
  if (!inBounds(bytes, offset, length) || length < ICMPV4_HEADER_LENGTH) return new WireError('icmpv4', 'truncated', `${length} bytes`)
  let checksumValid: boolean | null = null
  const mode = options.checksum ?? 'verify'
  if (mode !== 'ignore') {
    checksumValid = checksumFold(checksumAccumulate(bytes, offset, length)) === 0
    if (!checksumValid && mode === 'verify') return new WireError('icmpv4', 'bad-checksum')
  }
  const type = bytes[offset]
  const code = bytes[offset + 1]
  const repr: Icmpv4Repr = {
    type,
    code,
    checksumValid,
    payloadOffset: offset + ICMPV4_HEADER_LENGTH,
    payloadLength: length - ICMPV4_HEADER_LENGTH,
  }
  switch (type) {
    case ICMPV4_ECHO_REQUEST:
    case ICMPV4_ECHO_REPLY:
      repr.identifier = readU16(bytes, offset + 4)
      repr.sequence = readU16(bytes, offset + 6)
      break
    case ICMPV4_DEST_UNREACHABLE:
      if (code === ICMPV4_UNREACH_FRAG_NEEDED) repr.nextHopMtu = readU16(bytes, offset + 6)
      else repr.restOfHeader = readU32(bytes, offset + 4)
      break
    case ICMPV4_REDIRECT:
      repr.gateway = readU32(bytes, offset + 4)
      break
    case ICMPV4_PARAMETER_PROBLEM:
      repr.pointer = bytes[offset + 4]
      break
    default:
      repr.restOfHeader = readU32(bytes, offset + 4)
  }
  return repr
}

/** Writes the header at `offset` and fills the checksum over header + payload (already in place). Returns 8. */
export function emitIcmpv4(repr: Icmpv4EmitRepr, bytes: Uint8Array, offset = 0): number {
  bytes[offset] = repr.type
  bytes[offset + 1] = repr.code
  writeU16(bytes, offset + 2, 0)
  writeU32(bytes, offset + 4, 0)
  switch (repr.type) {
    case ICMPV4_ECHO_REQUEST:
    case ICMPV4_ECHO_REPLY:
      writeU16(bytes, offset + 4, repr.identifier ?? 0)
      writeU16(bytes, offset + 6, repr.sequence ?? 0)
      break
    case ICMPV4_DEST_UNREACHABLE:
      if (repr.code === ICMPV4_UNREACH_FRAG_NEEDED) writeU16(bytes, offset + 6, repr.nextHopMtu ?? 0)
      else writeU32(bytes, offset + 4, repr.restOfHeader ?? 0)
      break
    case ICMPV4_REDIRECT:
      writeU32(bytes, offset + 4, repr.gateway ?? 0)
      break
    case ICMPV4_PARAMETER_PROBLEM:
      bytes[offset + 4] = repr.pointer ?? 0
      break
    default:
      writeU32(bytes, offset + 4, repr.restOfHeader ?? 0)
  }
  writeU16(bytes, offset + 2, checksumFold(checksumAccumulate(bytes, offset, ICMPV4_HEADER_LENGTH + repr.payloadLength)))
  return ICMPV4_HEADER_LENGTH
}

/** Zero-allocation view over an ICMPv4 or ICMPv6 header (same first 8 bytes for echo). */
export class IcmpView {
  bytes: Uint8Array = new Uint8Array(0)
  offset = 0
  reset(bytes: Uint8Array, offset = 0, length = bytes.length - offset): boolean {
    this.bytes = bytes
    this.offset = offset
    return length >= 8 && inBounds(bytes, offset, length)
  }
  get type(): number {
    return this.bytes[this.offset]
  }
  get code(): number {
    return this.bytes[this.offset + 1]
  }
  get checksum(): number {
    return readU16(this.bytes, this.offset + 2)
  }
  /** Echo identifier (meaningful for echo request/reply only). */
  get identifier(): number {
    return readU16(this.bytes, this.offset + 4)
  }
  get sequence(): number {
    return readU16(this.bytes, this.offset + 6)
  }
  /** Where the invoking packet of an error message starts. */
  get innerOffset(): number {
    return this.offset + 8
  }
}
