/**
 * TCP segments (RFC 9293) with options: MSS (2), window scale (3, RFC 7323),
 * SACK-permitted (4) and SACK blocks (5, RFC 2018), timestamps (8, RFC 7323),
 * NOP (1) and end of list (0). Unknown options are skipped by their length.
 */
import { inBounds, readU16, readU32, writeU16, writeU32 } from './bytes.js'
import { checksumAccumulate, checksumFold, pseudoHeaderSum, type IpPseudoHeader } from './checksum.js'
import { DEFAULT_PARSE_OPTIONS, WireError, type ParseOptions } from './error.js'
import { IP_PROTOCOL_TCP } from './ipv4.js'

export const TCP_FIN = 0x01
export const TCP_SYN = 0x02
export const TCP_RST = 0x04
export const TCP_PSH = 0x08
export const TCP_ACK = 0x10
export const TCP_URG = 0x20
export const TCP_ECE = 0x40
export const TCP_CWR = 0x80

/** Flag names in bit order, for printing. */
export const TCP_FLAG_NAMES: readonly (readonly [number, string])[] = [
  [TCP_FIN, 'FIN'],
  [TCP_SYN, 'SYN'],
  [TCP_RST, 'RST'],
  [TCP_PSH, 'PSH'],
  [TCP_ACK, 'ACK'],
  [TCP_URG, 'URG'],
  [TCP_ECE, 'ECE'],
  [TCP_CWR, 'CWR'],
]

export const TCP_HEADER_LENGTH = 20
export const TCP_MAX_HEADER_LENGTH = 60

export const TCP_OPTION_END = 0
export const TCP_OPTION_NOP = 1
export const TCP_OPTION_MSS = 2
export const TCP_OPTION_WINDOW_SCALE = 3
export const TCP_OPTION_SACK_PERMITTED = 4
export const TCP_OPTION_SACK = 5
export const TCP_OPTION_TIMESTAMP = 8

/** RFC 7323 2.3: a shift above 14 is used as 14. Parse reports the value as sent. */
export const TCP_MAX_WINDOW_SCALE = 14

export interface TcpOptions {
  mss?: number
  windowScale?: number
  sackPermitted?: boolean
  /** [left, right) edges, at most 4 blocks. */
  sack?: [number, number][]
  /** [TSval, TSecr]. */
  timestamp?: [number, number]
}

export interface TcpRepr {
  srcPort: number
  dstPort: number
  seq: number
  ack: number
  /** Bitmask of TCP_FIN ... TCP_CWR. */
  flags: number
  window: number
  urgentPointer: number
  /** Data offset * 4. Emit computes it from the options (tcpHeaderLength). */
  headerLength: number
  options: TcpOptions
  /** null when not checked (no pseudo-header, ChecksumMode 'ignore'). */
  checksumValid: boolean | null
  payloadOffset: number
  payloadLength: number
}

export type TcpEmitRepr = Pick<TcpRepr, 'srcPort' | 'dstPort' | 'seq' | 'ack' | 'flags' | 'window' | 'urgentPointer' | 'options' | 'payloadLength'>

/**
 * Option bytes as emitTcp lays them out: Linux's layout (tcp_options_write),
 * every option 4-byte aligned with NOPs, so segments look like the kernel's:
 * MSS; SACK-permitted folded into the timestamp's leading NOPs; window scale
 * after one NOP; SACK blocks after two NOPs.
 */
export function tcpOptionsLength(options: TcpOptions): number {
  let n = 0
  if (options.mss !== undefined) n += 4
  if (options.timestamp !== undefined) n += 12
  else if (options.sackPermitted === true) n += 4
  if (options.windowScale !== undefined) n += 4
  if (options.sack !== undefined && options.sack.length > 0) n += 4 + 8 * options.sack.length
  return n
}

export function tcpHeaderLength(repr: Pick<TcpRepr, 'options'>): number {
  return TCP_HEADER_LENGTH + tcpOptionsLength(repr.options)
}

export function tcpBufferLength(repr: TcpEmitRepr): number {
  return tcpHeaderLength(repr) + repr.payloadLength
}

/**
 * Fills `options` from the option bytes. With a `sackStore` (the reusing
 * TcpParser) the SACK blocks and the timestamp pair are written into
 * preallocated tuples; otherwise fresh arrays are made.
 */
function parseOptionsInto(bytes: Uint8Array, start: number, end: number, options: TcpOptions, store: ReuseStore | null): WireError | null {
  let at = start
  while (at < end) {
    const kind = bytes[at]
    if (kind === TCP_OPTION_END) break
    if (kind === TCP_OPTION_NOP) {
      at++
      continue
    }
    if (at + 1 >= end) return new WireError('tcp', 'option-overrun', `option ${kind}`)
    const length = bytes[at + 1]
    if (length < 2) return new WireError('tcp', 'bad-option', `option ${kind} length ${length}`)
    if (at + length > end) return new WireError('tcp', 'option-overrun', `option ${kind} length ${length}`)
    switch (kind) {
      case TCP_OPTION_MSS:
        if (length !== 4) return new WireError('tcp', 'bad-option', `mss length ${length}`)
        options.mss = readU16(bytes, at + 2)
        break
      case TCP_OPTION_WINDOW_SCALE:
        if (length !== 3) return new WireError('tcp', 'bad-option', `window scale length ${length}`)
        options.windowScale = bytes[at + 2]
        break
      case TCP_OPTION_SACK_PERMITTED:
        if (length !== 2) return new WireError('tcp', 'bad-option', `sack-permitted length ${length}`)
        options.sackPermitted = true
        break
      case TCP_OPTION_SACK: {
        // At most 4 blocks fit in 40 bytes of options (RFC 2018 section 3).
        if ((length - 2) % 8 !== 0 || length === 2 || length > 34) return new WireError('tcp', 'bad-option', `sack length ${length}`)
        const count = (length - 2) / 8
        let blocks: [number, number][]
        if (store === null) {
          blocks = []
          for (let i = 0; i < count; i++) blocks.push([readU32(bytes, at + 2 + 8 * i), readU32(bytes, at + 6 + 8 * i)])
        } else {
          blocks = store.blocks
          blocks.length = count
          for (let i = 0; i < count; i++) {
            const block = store.sackTuples[i]
            block[0] = readU32(bytes, at + 2 + 8 * i)
            block[1] = readU32(bytes, at + 6 + 8 * i)
            blocks[i] = block
          }
        }
        options.sack = blocks
        break
      }
      case TCP_OPTION_TIMESTAMP: {
        if (length !== 10) return new WireError('tcp', 'bad-option', `timestamp length ${length}`)
        const pair: [number, number] = store === null ? [0, 0] : store.timestamp
        pair[0] = readU32(bytes, at + 2)
        pair[1] = readU32(bytes, at + 6)
        options.timestamp = pair
        break
      }
      default:
        // Unknown: skipped by length (RFC 9293 3.2: "must be prepared to handle an illegal option length").
        break
    }
    at += length
  }
  return null
}

interface ReuseStore {
  readonly blocks: [number, number][]
  readonly sackTuples: [number, number][]
  readonly timestamp: [number, number]
}

function parseTcpInto(
  bytes: Uint8Array,
  offset: number,
  length: number,
  ip: IpPseudoHeader | null,
  options: ParseOptions,
  out: TcpRepr,
  store: ReuseStore | null,
): TcpRepr | WireError {
  if (!inBounds(bytes, offset, length) || length < TCP_HEADER_LENGTH) return new WireError('tcp', 'truncated', `${length} bytes`)
  const headerLength = (bytes[offset + 12] >>> 4) * 4
  if (headerLength < TCP_HEADER_LENGTH) return new WireError('tcp', 'bad-length', `data offset ${headerLength / 4}`)
  if (headerLength > length) return new WireError('tcp', 'truncated', `header ${headerLength} > ${length} bytes`)
  const parsedOptions = out.options
  if (store !== null) {
    // Reused object: clear what the previous segment set (assigning undefined keeps its shape).
    parsedOptions.mss = undefined
    parsedOptions.windowScale = undefined
    parsedOptions.sackPermitted = undefined
    parsedOptions.sack = undefined
    parsedOptions.timestamp = undefined
  }
  const error = parseOptionsInto(bytes, offset + TCP_HEADER_LENGTH, offset + headerLength, parsedOptions, store)
  if (error !== null) return error
  let checksumValid: boolean | null = null
  const mode = options.checksum ?? 'verify'
  if (ip !== null && mode !== 'ignore') {
    checksumValid = checksumFold(checksumAccumulate(bytes, offset, length, pseudoHeaderSum(ip, IP_PROTOCOL_TCP, length))) === 0
    if (!checksumValid && mode === 'verify') return new WireError('tcp', 'bad-checksum')
  }
  out.srcPort = readU16(bytes, offset)
  out.dstPort = readU16(bytes, offset + 2)
  out.seq = readU32(bytes, offset + 4)
  out.ack = readU32(bytes, offset + 8)
  out.flags = bytes[offset + 13]
  out.window = readU16(bytes, offset + 14)
  out.urgentPointer = readU16(bytes, offset + 18)
  out.headerLength = headerLength
  out.checksumValid = checksumValid
  out.payloadOffset = offset + headerLength
  out.payloadLength = length - headerLength
  return out
}

function emptyTcpRepr(): TcpRepr {
  return { srcPort: 0, dstPort: 0, seq: 0, ack: 0, flags: 0, window: 0, urgentPointer: 0, headerLength: 0, options: {}, checksumValid: null, payloadOffset: 0, payloadLength: 0 }
}

/**
 * Parses the segment at `offset`; `length` is the IP payload length. With
 * `ip` (an Ipv4Repr/Ipv6Repr or any pseudo-header) the checksum is checked
 * per `options.checksum`. Returns a fresh Repr whose options hold only what
 * the segment carries; TcpParser is the allocation-free variant.
 */
export function parseTcp(
  bytes: Uint8Array,
  offset = 0,
  length = bytes.length - offset,
  ip: IpPseudoHeader | null = null,
  options: ParseOptions = DEFAULT_PARSE_OPTIONS,
): TcpRepr | WireError {
  return parseTcpInto(bytes, offset, length, ip, options, emptyTcpRepr(), null)
}

/**
 * The same checks as parseTcp into one reused Repr (options object, SACK
 * tuples and timestamp pair included): no allocation per segment except on
 * errors. The Repr is valid until the next call; copy what must outlive it.
 * Absent options read as undefined.
 */
export class TcpParser {
  readonly repr: TcpRepr = emptyTcpRepr()
  private readonly store: ReuseStore = { blocks: [], sackTuples: [[0, 0], [0, 0], [0, 0], [0, 0]], timestamp: [0, 0] }

  parse(bytes: Uint8Array, offset = 0, length = bytes.length - offset, ip: IpPseudoHeader | null = null, options: ParseOptions = DEFAULT_PARSE_OPTIONS): TcpRepr | WireError {
    return parseTcpInto(bytes, offset, length, ip, options, this.repr, this.store)
  }
}

function writeOptions(options: TcpOptions, bytes: Uint8Array, at: number): number {
  if (options.mss !== undefined) {
    bytes[at] = TCP_OPTION_MSS
    bytes[at + 1] = 4
    writeU16(bytes, at + 2, options.mss)
    at += 4
  }
  if (options.timestamp !== undefined) {
    if (options.sackPermitted === true) {
      bytes[at] = TCP_OPTION_SACK_PERMITTED
      bytes[at + 1] = 2
    } else {
      bytes[at] = TCP_OPTION_NOP
      bytes[at + 1] = TCP_OPTION_NOP
    }
    bytes[at + 2] = TCP_OPTION_TIMESTAMP
    bytes[at + 3] = 10
    writeU32(bytes, at + 4, options.timestamp[0])
    writeU32(bytes, at + 8, options.timestamp[1])
    at += 12
  } else if (options.sackPermitted === true) {
    bytes[at] = TCP_OPTION_NOP
    bytes[at + 1] = TCP_OPTION_NOP
    bytes[at + 2] = TCP_OPTION_SACK_PERMITTED
    bytes[at + 3] = 2
    at += 4
  }
  if (options.windowScale !== undefined) {
    bytes[at] = TCP_OPTION_NOP
    bytes[at + 1] = TCP_OPTION_WINDOW_SCALE
    bytes[at + 2] = 3
    bytes[at + 3] = options.windowScale
    at += 4
  }
  if (options.sack !== undefined && options.sack.length > 0) {
    bytes[at] = TCP_OPTION_NOP
    bytes[at + 1] = TCP_OPTION_NOP
    bytes[at + 2] = TCP_OPTION_SACK
    bytes[at + 3] = 2 + 8 * options.sack.length
    at += 4
    for (const [left, right] of options.sack) {
      writeU32(bytes, at, left)
      writeU32(bytes, at + 4, right)
      at += 8
    }
  }
  return at
}

/**
 * Writes header and options at `offset`; returns the header length. With
 * `ip`, the payload must already be in place after the header and the
 * checksum is filled; without it the checksum is left 0 (checksum offload).
 * Unchecked: options that do not fit in 40 bytes make a wrong header.
 */
export function emitTcp(repr: TcpEmitRepr, bytes: Uint8Array, offset = 0, ip: IpPseudoHeader | null = null): number {
  const headerLength = tcpHeaderLength(repr)
  writeU16(bytes, offset, repr.srcPort)
  writeU16(bytes, offset + 2, repr.dstPort)
  writeU32(bytes, offset + 4, repr.seq)
  writeU32(bytes, offset + 8, repr.ack)
  bytes[offset + 12] = (headerLength >>> 2) << 4
  bytes[offset + 13] = repr.flags & 0xff
  writeU16(bytes, offset + 14, repr.window)
  writeU16(bytes, offset + 16, 0)
  writeU16(bytes, offset + 18, repr.urgentPointer)
  writeOptions(repr.options, bytes, offset + TCP_HEADER_LENGTH)
  if (ip !== null) {
    const length = headerLength + repr.payloadLength
    writeU16(bytes, offset + 16, checksumFold(checksumAccumulate(bytes, offset, length, pseudoHeaderSum(ip, IP_PROTOCOL_TCP, length))))
  }
  return headerLength
}

/**
 * Zero-allocation view for the classifier and header templates: getters and
 * setters over the buffer. `reset` checks that the fixed header and the
 * data offset fit. Setters do not touch the checksum (use checksumUpdate16/32).
 */
export class TcpView {
  bytes: Uint8Array = new Uint8Array(0)
  offset = 0
  reset(bytes: Uint8Array, offset = 0, length = bytes.length - offset): boolean {
    this.bytes = bytes
    this.offset = offset
    if (length < TCP_HEADER_LENGTH || !inBounds(bytes, offset, length)) return false
    const headerLength = (bytes[offset + 12] >>> 4) * 4
    return headerLength >= TCP_HEADER_LENGTH && headerLength <= length
  }
  get srcPort(): number {
    return readU16(this.bytes, this.offset)
  }
  get dstPort(): number {
    return readU16(this.bytes, this.offset + 2)
  }
  get seq(): number {
    return readU32(this.bytes, this.offset + 4)
  }
  set seq(v: number) {
    writeU32(this.bytes, this.offset + 4, v)
  }
  get ack(): number {
    return readU32(this.bytes, this.offset + 8)
  }
  set ack(v: number) {
    writeU32(this.bytes, this.offset + 8, v)
  }
  get headerLength(): number {
    return (this.bytes[this.offset + 12] >>> 4) * 4
  }
  get flags(): number {
    return this.bytes[this.offset + 13]
  }
  set flags(v: number) {
    this.bytes[this.offset + 13] = v
  }
  get window(): number {
    return readU16(this.bytes, this.offset + 14)
  }
  set window(v: number) {
    writeU16(this.bytes, this.offset + 14, v)
  }
  get checksum(): number {
    return readU16(this.bytes, this.offset + 16)
  }
  set checksum(v: number) {
    writeU16(this.bytes, this.offset + 16, v)
  }
  get urgentPointer(): number {
    return readU16(this.bytes, this.offset + 18)
  }
}
