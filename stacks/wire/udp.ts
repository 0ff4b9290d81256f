/** UDP (RFC 768) with its checksum over the IPv4/IPv6 pseudo-header. */
import { inBounds, readU16, writeU16 } from './bytes.js'
import { checksumAccumulate, checksumFold, pseudoHeaderSum, type IpPseudoHeader } from './checksum.js'
import { DEFAULT_PARSE_OPTIONS, WireError, type ParseOptions } from './error.js'
import { IP_PROTOCOL_UDP } from './ipv4.js'

export const UDP_HEADER_LENGTH = 8

export interface UdpRepr {
  srcPort: number
  dstPort: number
  /** The length field: header plus payload. */
  length: number
  /**
   * null when the checksum could not be checked: no pseudo-header given,
   * ChecksumMode 'ignore', a truncated capture, or checksum 0 over IPv4
   * ("no checksum computed", RFC 768).
   */
  checksumValid: boolean | null
  payloadOffset: number
  payloadLength: number
}

export type UdpEmitRepr = Pick<UdpRepr, 'srcPort' | 'dstPort' | 'payloadLength'>

export function udpHeaderLength(_repr?: UdpEmitRepr): number {
  return UDP_HEADER_LENGTH
}

export function udpBufferLength(repr: UdpEmitRepr): number {
  return UDP_HEADER_LENGTH + repr.payloadLength
}

/**
 * Parses the datagram at `offset`; `length` is the IP payload length (bytes
 * beyond the UDP length field are ignored). `ip` enables the checksum check.
 */
export function parseUdp(
  bytes: Uint8Array,
  offset = 0,
  length = bytes.length - offset,
  ip: IpPseudoHeader | null = null,
  options: ParseOptions = DEFAULT_PARSE_OPTIONS,
): UdpRepr | WireError {
  return parseUdpInto(bytes, offset, length, ip, options, null)
}

/** parseUdp into one reused Repr: no allocation per datagram except on errors. Valid until the next call. */
export class UdpParser {
  readonly repr: UdpRepr = { srcPort: 0, dstPort: 0, length: 0, checksumValid: null, payloadOffset: 0, payloadLength: 0 }
  parse(bytes: Uint8Array, offset = 0, length = bytes.length - offset, ip: IpPseudoHeader | null = null, options: ParseOptions = DEFAULT_PARSE_OPTIONS): UdpRepr | WireError {
    return parseUdpInto(bytes, offset, length, ip, options, this.repr)
  }
}

function parseUdpInto(bytes: Uint8Array, offset: number, length: number, ip: IpPseudoHeader | null, options: ParseOptions, out: UdpRepr | null): UdpRepr | WireError {
  if (!inBounds(bytes, offset, length) || length < UDP_HEADER_LENGTH) return new WireError('udp', 'truncated', `${length} bytes`)
  const udpLength = readU16(bytes, offset + 4)
  if (udpLength < UDP_HEADER_LENGTH) return new WireError('udp', 'bad-length', `length field ${udpLength}`)
  let present = udpLength
  let truncated = false
  if (udpLength > length) {
    if (options.allowTruncated !== true) return new WireError('udp', 'truncated', `length field ${udpLength} > ${length} bytes`)
    present = length
    truncated = true
  }
  const checksum = readU16(bytes, offset + 6)
  let checksumValid: boolean | null = null
  const mode = options.checksum ?? 'verify'
  if (ip !== null && mode !== 'ignore' && !truncated) {
    if (checksum === 0) {
      // RFC 8200 8.1: zero is not allowed over IPv6; over IPv4 it means "not computed".
      if (ip.version === 6) checksumValid = false
    } else {
      checksumValid = checksumFold(checksumAccumulate(bytes, offset, udpLength, pseudoHeaderSum(ip, IP_PROTOCOL_UDP, udpLength))) === 0
    }
    if (checksumValid === false && mode === 'verify') {
      return new WireError('udp', 'bad-checksum', checksum === 0 ? 'zero checksum over IPv6' : undefined)
    }
  }
  if (out !== null) {
    out.srcPort = readU16(bytes, offset)
    out.dstPort = readU16(bytes, offset + 2)
    out.length = udpLength
    out.checksumValid = checksumValid
    out.payloadOffset = offset + UDP_HEADER_LENGTH
    out.payloadLength = present - UDP_HEADER_LENGTH
    return out
  }
  return {
    srcPort: readU16(bytes, offset),
    dstPort: readU16(bytes, offset + 2),
    length: udpLength,
    checksumValid,
    payloadOffset: offset + UDP_HEADER_LENGTH,
    payloadLength: present - UDP_HEADER_LENGTH,
  }
}

/**
 * Writes the header at `offset`. With `ip`, the payload must already be in
 * place at offset + 8 and the checksum is filled (0 is sent as 0xffff,
 * RFC 768); without it the checksum is left 0 (legal over IPv4 only).
 */
export function emitUdp(repr: UdpEmitRepr, bytes: Uint8Array, offset = 0, ip: IpPseudoHeader | null = null): number {
  const length = UDP_HEADER_LENGTH + repr.payloadLength
  writeU16(bytes, offset, repr.srcPort)
  writeU16(bytes, offset + 2, repr.dstPort)
  writeU16(bytes, offset + 4, length)
  writeU16(bytes, offset + 6, 0)
  if (ip !== null) {
    const checksum = checksumFold(checksumAccumulate(bytes, offset, length, pseudoHeaderSum(ip, IP_PROTOCOL_UDP, length)))
    writeU16(bytes, offset + 6, checksum === 0 ? 0xffff : checksum)
  }
  return UDP_HEADER_LENGTH
}

/** Zero-allocation view; `reset` checks only that 8 bytes are there. */
export class UdpView {
  bytes: Uint8Array = new Uint8Array(0)
  offset = 0
  reset(bytes: Uint8Array, offset = 0, length = bytes.length - offset): boolean {
    this.bytes = bytes
    this.offset = offset
    return length >= UDP_HEADER_LENGTH && inBounds(bytes, offset, length)
  }
  get srcPort(): number {
    return readU16(this.bytes, this.offset)
  }
  get dstPort(): number {
    return readU16(this.bytes, this.offset + 2)
  }
  get length(): number {
    return readU16(this.bytes, this.offset + 4)
  }
  get checksum(): number {
    return readU16(this.bytes, this.offset + 6)
  }
}
