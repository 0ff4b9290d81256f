// Classic pcap and pcapng: streaming writers and a pull reader.
//
// Formats: classic pcap is draft-ietf-opsawg-pcap (24-byte file header, 16-byte
// record headers; micro- or nanosecond magic, either byte order). pcapng is
// draft-ietf-opsawg-pcapng: a file is a sequence of blocks `type, total length,
// body, total length`, grouped in sections that each start with a Section
// Header Block whose byte-order magic decides the byte order of that section.
//
// Reading never allocates per packet: the reader fills one reused
// `CapturedPacket` whose bytes are a window into the reader's buffer, valid
// until the next call to `next()`. Malformed input raises a `CaptureFormatError`
// (code `PCAP_MALFORMED`) naming the byte offset; it never reads out of bounds.
import { closeSync, openSync, readSync, writeSync } from 'node:fs'
import type { Writable } from 'node:stream'
import { FlowstackError } from '../../common/errors.js'

/** LINKTYPE_ETHERNET: Ethernet II frames. */
export const LINKTYPE_ETHERNET = 1
/** LINKTYPE_RAW: bare IPv4 or IPv6 packets; the version nibble tells which. */
export const LINKTYPE_RAW = 101
export const LINKTYPE_IPV4 = 228
export const LINKTYPE_IPV6 = 229

export const PCAP_MAGIC_MICROSECONDS = 0xa1b2c3d4
export const PCAP_MAGIC_NANOSECONDS = 0xa1b23c4d
export const PCAPNG_BLOCK_SHB = 0x0a0d0d0a
export const PCAPNG_BLOCK_IDB = 0x00000001
export const PCAPNG_BLOCK_OPB = 0x00000002
export const PCAPNG_BLOCK_SPB = 0x00000003
export const PCAPNG_BLOCK_NRB = 0x00000004
export const PCAPNG_BLOCK_ISB = 0x00000005
export const PCAPNG_BLOCK_EPB = 0x00000006
export const PCAPNG_BLOCK_DSB = 0x0000000a
const PCAPNG_BYTE_ORDER_MAGIC = 0x1a2b3c4d
/** DSB secrets type 'TLSK': an NSS key log. */
export const DSB_SECRETS_TLS_KEY_LOG = 0x544c534b

const OPT_ENDOFOPT = 0
const OPT_IF_NAME = 2
const OPT_IF_TSRESOL = 9
const OPT_IF_TSOFFSET = 14
const OPT_SHB_USERAPPL = 4
const OPT_EPB_FLAGS = 2

/** Largest packet we accept in a record; tshark's own limit for most link types is 256 KiB. */
export const MAX_CAPTURED_PACKET = 16 * 1024 * 1024
/** Largest pcapng block we accept (a packet plus generous options). */
const MAX_BLOCK_LENGTH = MAX_CAPTURED_PACKET + 64 * 1024
const DEFAULT_SNAPLEN = 262144

export type ByteOrder = 'le' | 'be'
export type CaptureFormat = 'pcap' | 'pcapng'
/** epb_flags bits 0-1: 0 unknown, 1 inbound, 2 outbound. */
export type PacketDirection = 'unknown' | 'inbound' | 'outbound'

export type CaptureMalformedReason =
  | 'bad-magic'
  | 'unsupported-version'
  | 'truncated'
  | 'bad-length'
  | 'length-mismatch'
  | 'no-section-header'
  | 'unknown-interface'
  | 'bad-option'
  | 'packet-too-large'

/** A capture file that is not what it claims to be; `offset` is where in the file. */
export class CaptureFormatError extends FlowstackError {
  readonly offset: number
  readonly reason: CaptureMalformedReason
  constructor(reason: CaptureMalformedReason, offset: number, detail: string) {
    super('PCAP_MALFORMED', `malformed capture at byte offset ${offset}: ${detail}`)
    this.name = 'CaptureFormatError'
    this.offset = offset
    this.reason = reason
  }
}

// ---------------------------------------------------------------------------
// Byte helpers: explicit byte order, no DataView (the window buffer can be
// replaced when it grows, and a DataView would have to follow it).

function readU16(b: Uint8Array, i: number, le: boolean): number {
  return le ? b[i] | (b[i + 1] << 8) : (b[i] << 8) | b[i + 1]
}
function readU32(b: Uint8Array, i: number, le: boolean): number {
  return le
    ? (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0
    : ((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0
}
function writeU16(b: Uint8Array, i: number, v: number, le: boolean): void {
  if (le) {
    b[i] = v & 0xff
    b[i + 1] = (v >>> 8) & 0xff
  } else {
    b[i] = (v >>> 8) & 0xff
    b[i + 1] = v & 0xff
  }
}
function writeU32(b: Uint8Array, i: number, v: number, le: boolean): void {
  if (le) {
    b[i] = v & 0xff
    b[i + 1] = (v >>> 8) & 0xff
    b[i + 2] = (v >>> 16) & 0xff
    b[i + 3] = (v >>> 24) & 0xff
  } else {
    b[i] = (v >>> 24) & 0xff
    b[i + 1] = (v >>> 16) & 0xff
    b[i + 2] = (v >>> 8) & 0xff
    b[i + 3] = v & 0xff
  }
}
const pad4 = (n: number): number => (n + 3) & ~3

// ---------------------------------------------------------------------------
// 64-bit timestamps without BigInt (which would allocate per packet).
// A pcapng timestamp is a 64-bit count of units, `unitsPerSecond` per second.

const TWO_32 = 0x1_0000_0000

/** Writes `seconds * unitsPerSecond + fraction` as (high, low) 32-bit words into `out`. */
function unitsToWords(seconds: number, fractionUnits: number, unitsPerSecond: number, out: Uint32Array): void {
  // seconds < 2^32 and unitsPerSecond <= 1e9 < 2^30: split seconds into 16-bit
  // halves so every product stays below 2^53 and is exact.
  const secondsHigh = Math.floor(seconds / 65536)
  const secondsLow = seconds % 65536
  const a = secondsHigh * unitsPerSecond // times 2^16 below
  const b = secondsLow * unitsPerSecond + fractionUnits
  let low = (a % 65536) * 65536 + (b % TWO_32)
  let high = Math.floor(a / 65536) + Math.floor(b / TWO_32)
  if (low >= TWO_32) {
    low -= TWO_32
    high += 1
  }
  out[0] = high
  out[1] = low
}

/** Splits a (high, low) unit count into whole seconds and the remainder in units, exactly. */
function wordsToUnits(high: number, low: number, unitsPerSecond: number, out: Float64Array): void {
  // Long division in base 2^16 keeps every intermediate below 2^53.
  const q1 = Math.floor(high / unitsPerSecond)
  let r = high % unitsPerSecond
  let t = r * 65536 + (low >>> 16)
  const q2 = Math.floor(t / unitsPerSecond)
  r = t % unitsPerSecond
  t = r * 65536 + (low & 0xffff)
  const q3 = Math.floor(t / unitsPerSecond)
  r = t % unitsPerSecond
  out[0] = q1 * TWO_32 + q2 * 65536 + q3
  out[1] = r
}

// ---------------------------------------------------------------------------
// Reading

export interface CaptureInterface {
  readonly id: number
  readonly linkType: number
  readonly snaplen: number
  readonly name: string | undefined
  /** Timestamp units per second (if_tsresol); 1e6 by default in pcapng. */
  readonly unitsPerSecond: number
  /** if_tsoffset, added to every timestamp. */
  readonly offsetSeconds: number
}

/** One packet, reused by the reader: valid until the next `next()`. */
export class CapturedPacket {
  /** 1-based frame number, as tshark counts. */
  index = 0
  interfaceId = 0
  linkType = 0
  seconds = 0
  nanoseconds = 0
  capturedLength = 0
  originalLength = 0
  direction: PacketDirection = 'unknown'
  /** Byte offset of the record or block in the file. */
  fileOffset = 0
  /** The reader's buffer; the packet is `bytes[dataOffset, dataOffset + capturedLength)`. */
  bytes: Uint8Array = new Uint8Array(0)
  dataOffset = 0

  /** Copies the packet into `target` at `offset` without making a view; returns the bytes copied. */
  copyTo(target: Uint8Array, offset = 0): number {
    copyBytes(this.bytes, this.dataOffset, this.capturedLength, target, offset)
    return this.capturedLength
  }

  /** A view of the packet bytes (allocates a view object; hot paths use bytes/dataOffset or copyTo). */
  get data(): Uint8Array {
    // A plain Uint8Array (not a Buffer, even when the reader's window is one).
    return new Uint8Array(this.bytes.buffer, this.bytes.byteOffset + this.dataOffset, this.capturedLength)
  }
}

/**
 * Where the reader's bytes come from. `request(offset, length)` makes bytes
 * `[offset, offset + length)` of the input available in `window` starting at
 * `offset - windowOffset`, and returns how many are (fewer only at end of input).
 */
export interface CaptureSource {
  readonly window: Uint8Array
  readonly windowOffset: number
  request(offset: number, length: number): number
  close(): void
}

export class BufferCaptureSource implements CaptureSource {
  readonly windowOffset = 0
  constructor(readonly window: Uint8Array) {}
  request(offset: number, length: number): number {
    return Math.max(0, Math.min(length, this.window.length - offset))
  }
  close(): void {}
}

/** Reads a file through a sliding window with synchronous reads: bounded memory for any file size. */
export class FileCaptureSource implements CaptureSource {
  window: Uint8Array
  windowOffset = 0
  private filled = 0
  private fd: number | undefined
  private eof = false

  constructor(path: string, windowSize = 1 << 20) {
    this.fd = openSync(path, 'r')
    this.window = Buffer.allocUnsafe(windowSize)
  }

  request(offset: number, length: number): number {
    const end = offset + length
    if (offset >= this.windowOffset && end <= this.windowOffset + this.filled) return length
    if (this.fd === undefined) return 0
    // Slide: keep the bytes from `offset` on, move them to the front, grow if one block is larger.
    const keepFrom = Math.min(Math.max(offset - this.windowOffset, 0), this.filled)
    const kept = this.filled - keepFrom
    if (length > this.window.length) {
      const grown = Buffer.allocUnsafe(Math.max(length, this.window.length * 2))
      grown.set(this.window.subarray(keepFrom, this.filled), 0)
      this.window = grown
    } else if (keepFrom > 0) {
      this.window.copyWithin(0, keepFrom, this.filled)
    }
    this.windowOffset += keepFrom
    this.filled = kept
    while (!this.eof && this.filled < this.window.length) {
      const n = readSync(this.fd, this.window, this.filled, this.window.length - this.filled, this.windowOffset + this.filled)
      if (n === 0) this.eof = true
      this.filled += n
      if (offset + length <= this.windowOffset + this.filled) break
    }
    return Math.max(0, Math.min(length, this.windowOffset + this.filled - offset))
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd)
    this.fd = undefined
  }
}

export class CaptureReader {
  format: CaptureFormat | undefined
  byteOrder: ByteOrder = 'le'
  /** Classic pcap: true for the nanosecond magic. */
  nanosecondTimestamps = false
  /** Interfaces of the current pcapng section (one implicit interface for classic pcap). */
  interfaces: CaptureInterface[] = []
  /** Blocks skipped on read, by pcapng block type (NRB, ISB, DSB, custom, unknown). */
  readonly skippedBlocks = new Map<number, number>()
  /** Application that wrote the current section (shb_userappl), when given. */
  application: string | undefined

  private offset = 0
  private le = true
  private packetCount = 0
  private readonly packet = new CapturedPacket()
  private readonly timeScratch = new Float64Array(2)

  constructor(private readonly source: CaptureSource) {}

  static fromBuffer(bytes: Uint8Array): CaptureReader {
    // A Buffer view (no copy), so packets can be copied out with Buffer#copy and no per-packet view.
    const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    return new CaptureReader(new BufferCaptureSource(buffer))
  }

  static fromFile(path: string): CaptureReader {
    return new CaptureReader(new FileCaptureSource(path))
  }

  close(): void {
    this.source.close()
  }

  /** Reads the file header (done by the first `next()` when not called). */
  open(): void {
    if (this.format !== undefined) return
    const got = this.source.request(0, 12)
    if (got < 4) throw new CaptureFormatError('truncated', 0, 'file shorter than a capture header')
    const w = this.source.window
    const magicLe = readU32(w, 0, true)
    const magicBe = readU32(w, 0, false)
    if (magicLe === PCAPNG_BLOCK_SHB) {
      this.format = 'pcapng'
      this.readSectionHeader()
      return
    }
    for (const [magic, le] of [[magicLe, true], [magicBe, false]] as const) {
      if (magic === PCAP_MAGIC_MICROSECONDS || magic === PCAP_MAGIC_NANOSECONDS) {
        this.format = 'pcap'
        this.le = le
        this.byteOrder = le ? 'le' : 'be'
        this.nanosecondTimestamps = magic === PCAP_MAGIC_NANOSECONDS
        this.readPcapHeader()
        return
      }
    }
    throw new CaptureFormatError('bad-magic', 0, `unknown magic 0x${magicBe.toString(16).padStart(8, '0')}: not pcap or pcapng`)
  }

  /** The next packet, or null at the end of the file. Throws CaptureFormatError on malformed input. */
  next(): CapturedPacket | null {
    this.open()
    return this.format === 'pcap' ? this.nextPcapRecord() : this.nextPcapngPacket()
  }

  // --- classic pcap ---------------------------------------------------------

  private readPcapHeader(): void {
    if (this.source.request(0, 24) < 24) throw new CaptureFormatError('truncated', 0, 'pcap file header needs 24 bytes')
    const w = this.source.window
    const major = readU16(w, 4, this.le)
    const minor = readU16(w, 6, this.le)
    if (major !== 2) throw new CaptureFormatError('unsupported-version', 4, `pcap version ${major}.${minor}, expected 2.x`)
    const snaplen = readU32(w, 16, this.le)
    // The link-type field's upper bits carry FCS information; the type is the low 16 bits.
    const linkType = readU32(w, 20, this.le) & 0xffff
    this.interfaces = [
      { id: 0, linkType, snaplen, name: undefined, unitsPerSecond: this.nanosecondTimestamps ? 1e9 : 1e6, offsetSeconds: 0 },
    ]
    this.offset = 24
  }

  private nextPcapRecord(): CapturedPacket | null {
    const start = this.offset
    const got = this.source.request(start, 16)
    if (got === 0) return null
    if (got < 16) throw new CaptureFormatError('truncated', start, `record header cut short (${got} of 16 bytes)`)
    let w = this.source.window
    let at = start - this.source.windowOffset
    const seconds = readU32(w, at, this.le)
    const fraction = readU32(w, at + 4, this.le)
    const captured = readU32(w, at + 8, this.le)
    const original = readU32(w, at + 12, this.le)
    if (captured > MAX_CAPTURED_PACKET) {
      throw new CaptureFormatError('packet-too-large', start + 8, `captured length ${captured} exceeds ${MAX_CAPTURED_PACKET}`)
    }
    const have = this.source.request(start, 16 + captured)
    if (have < 16 + captured) {
      throw new CaptureFormatError('truncated', start, `packet cut short: ${have - 16} of ${captured} captured bytes present`)
    }
    w = this.source.window
    at = start - this.source.windowOffset
    const p = this.packet
    p.index = ++this.packetCount
    p.interfaceId = 0
    p.linkType = this.interfaces[0].linkType
    p.seconds = seconds
    p.nanoseconds = this.nanosecondTimestamps ? fraction : fraction * 1000
    p.capturedLength = captured
    p.originalLength = original
    p.direction = 'unknown'
    p.fileOffset = start
    p.bytes = w
    p.dataOffset = at + 16
    this.offset = start + 16 + captured
    return p
  }

  // --- pcapng ---------------------------------------------------------------

  /** Reads the SHB at `this.offset`, setting the section's byte order. */
  private readSectionHeader(): void {
    const start = this.offset
    if (this.source.request(start, 28) < 28) throw new CaptureFormatError('truncated', start, 'section header block cut short')
    let w = this.source.window
    let at = start - this.source.windowOffset
    const magic = readU32(w, at + 8, true)
    if (magic === PCAPNG_BYTE_ORDER_MAGIC) this.le = true
    else if (readU32(w, at + 8, false) === PCAPNG_BYTE_ORDER_MAGIC) this.le = false
    else throw new CaptureFormatError('bad-magic', start + 8, `section byte-order magic 0x${magic.toString(16)} is not 0x1a2b3c4d`)
    this.byteOrder = this.le ? 'le' : 'be'
    const major = readU16(w, at + 12, this.le)
    if (major !== 1) throw new CaptureFormatError('unsupported-version', start + 12, `pcapng version ${major}, expected 1`)
    const length = this.checkedBlockLength(start, readU32(w, at + 4, this.le), 28)
    w = this.source.window
    at = start - this.source.windowOffset
    this.interfaces = []
    this.application = undefined
    this.forEachOption(w, at + 24, at + length - 4, (code, valueAt, valueLength) => {
      if (code === OPT_SHB_USERAPPL) this.application = Buffer.from(w.buffer, w.byteOffset + valueAt, valueLength).toString('utf8')
    })
    this.offset = start + length
  }

  /** Validates a block's total length and makes the whole block available; returns the length. */
  private checkedBlockLength(start: number, length: number, minimum: number): number {
    if (length < minimum || length % 4 !== 0 || length > MAX_BLOCK_LENGTH) {
      throw new CaptureFormatError('bad-length', start + 4, `block total length ${length} (minimum ${minimum}, multiple of 4)`)
    }
    const have = this.source.request(start, length)
    if (have < length) throw new CaptureFormatError('truncated', start, `block cut short: ${have} of ${length} bytes present`)
    const w = this.source.window
    const at = start - this.source.windowOffset
    const trailer = readU32(w, at + length - 4, this.le)
    if (trailer !== length) {
      throw new CaptureFormatError('length-mismatch', start + length - 4, `trailing block length ${trailer} differs from leading ${length}`)
    }
    return length
  }

  /** Walks the options in [from, to) of the window (offsets are window offsets; errors report file offsets). */
  private forEachOption(
    w: Uint8Array,
    from: number,
    to: number,
    visit: (code: number, valueAt: number, valueLength: number) => void,
  ): void {
    let at = from
    while (at + 4 <= to) {
      const code = readU16(w, at, this.le)
      const length = readU16(w, at + 2, this.le)
      if (code === OPT_ENDOFOPT) return
      if (at + 4 + length > to) {
        throw new CaptureFormatError('bad-option', this.source.windowOffset + at, `option ${code} of length ${length} overruns its block`)
      }
      visit(code, at + 4, length)
      at += 4 + pad4(length)
    }
  }

  private nextPcapngPacket(): CapturedPacket | null {
    for (;;) {
      const start = this.offset
      const got = this.source.request(start, 8)
      if (got === 0) return null
      if (got < 8) throw new CaptureFormatError('truncated', start, `block header cut short (${got} of 8 bytes)`)
      let w = this.source.window
      let at = start - this.source.windowOffset
      const type = readU32(w, at, this.le)
      if (type === PCAPNG_BLOCK_SHB) {
        this.readSectionHeader()
        continue
      }
      const length = readU32(w, at + 4, this.le)
      this.checkedBlockLength(start, length, 12)
      w = this.source.window
      at = start - this.source.windowOffset
      const bodyEnd = at + length - 4
      switch (type) {
        case PCAPNG_BLOCK_IDB:
          this.readInterface(w, at, bodyEnd, start)
          break
        case PCAPNG_BLOCK_EPB:
        case PCAPNG_BLOCK_OPB:
          this.offset = start + length
          return this.readEnhancedPacket(type, w, at, bodyEnd, start)
        case PCAPNG_BLOCK_SPB:
          this.offset = start + length
          return this.readSimplePacket(w, at, bodyEnd, start)
        default:
          // NRB, ISB, DSB, custom and unknown blocks: the total length lets us skip them.
          this.skippedBlocks.set(type, (this.skippedBlocks.get(type) ?? 0) + 1)
      }
      this.offset = start + length
    }
  }

  private readInterface(w: Uint8Array, at: number, bodyEnd: number, start: number): void {
    if (bodyEnd - at < 16) throw new CaptureFormatError('bad-length', start + 4, 'interface description block shorter than 20 bytes')
    const linkType = readU16(w, at + 8, this.le)
    const snaplen = readU32(w, at + 12, this.le)
    let name: string | undefined
    let unitsPerSecond = 1e6
    let offsetSeconds = 0
    this.forEachOption(w, at + 16, bodyEnd, (code, valueAt, valueLength) => {
      if (code === OPT_IF_NAME) {
        name = Buffer.from(w.buffer, w.byteOffset + valueAt, valueLength).toString('utf8').replace(/\0+$/, '')
      } else if (code === OPT_IF_TSRESOL) {
        if (valueLength !== 1) throw new CaptureFormatError('bad-option', this.source.windowOffset + valueAt, 'if_tsresol must be 1 byte')
        const v = w[valueAt]
        // MSB clear: negative power of 10; set: negative power of 2.
        unitsPerSecond = v & 0x80 ? 2 ** (v & 0x7f) : 10 ** v
        if (!Number.isFinite(unitsPerSecond) || unitsPerSecond > 2 ** 52) {
          throw new CaptureFormatError('bad-option', this.source.windowOffset + valueAt, `if_tsresol ${v} out of range`)
        }
      } else if (code === OPT_IF_TSOFFSET) {
        if (valueLength !== 8) throw new CaptureFormatError('bad-option', this.source.windowOffset + valueAt, 'if_tsoffset must be 8 bytes')
        const lowWord = readU32(w, valueAt + (this.le ? 0 : 4), this.le)
        const highWord = readU32(w, valueAt + (this.le ? 4 : 0), this.le) | 0
        offsetSeconds = highWord * TWO_32 + lowWord
      }
    })
    this.interfaces.push({ id: this.interfaces.length, linkType, snaplen, name, unitsPerSecond, offsetSeconds })
  }

  private setTimestamp(p: CapturedPacket, iface: CaptureInterface, high: number, low: number): void {
    wordsToUnits(high, low, iface.unitsPerSecond, this.timeScratch)
    const units = this.timeScratch[1]
    p.seconds = this.timeScratch[0] + iface.offsetSeconds
    p.nanoseconds = iface.unitsPerSecond === 1e9 ? units : Math.floor((units * 1e9) / iface.unitsPerSecond)
  }

  private readEnhancedPacket(type: number, w: Uint8Array, at: number, bodyEnd: number, start: number): CapturedPacket {
    if (bodyEnd - at < 28) throw new CaptureFormatError('bad-length', start + 4, 'packet block shorter than 32 bytes')
    // The obsolete Packet Block has a 16-bit interface id and a 16-bit drop count.
    const interfaceId = type === PCAPNG_BLOCK_EPB ? readU32(w, at + 8, this.le) : readU16(w, at + 8, this.le)
    const iface = this.interfaces[interfaceId]
    if (iface === undefined) {
      throw new CaptureFormatError('unknown-interface', start + 8, `packet names interface ${interfaceId}, section has ${this.interfaces.length}`)
    }
    const captured = readU32(w, at + 20, this.le)
    const original = readU32(w, at + 24, this.le)
    const dataAt = at + 28
    if (captured > bodyEnd - dataAt) {
      throw new CaptureFormatError('bad-length', start + 20, `captured length ${captured} overruns its block`)
    }
    const p = this.packet
    p.index = ++this.packetCount
    p.interfaceId = interfaceId
    p.linkType = iface.linkType
    this.setTimestamp(p, iface, readU32(w, at + 12, this.le), readU32(w, at + 16, this.le))
    p.capturedLength = captured
    p.originalLength = original
    p.direction = 'unknown'
    p.fileOffset = start
    p.bytes = w
    p.dataOffset = dataAt
    // Options walked inline (no closure): this runs once per packet.
    for (let at = dataAt + pad4(captured); at + 4 <= bodyEnd; ) {
      const code = readU16(w, at, this.le)
      const length = readU16(w, at + 2, this.le)
      if (code === OPT_ENDOFOPT) break
      if (at + 4 + length > bodyEnd) {
        throw new CaptureFormatError('bad-option', this.source.windowOffset + at, `option ${code} of length ${length} overruns its block`)
      }
      if (code === OPT_EPB_FLAGS && length === 4) {
        const direction = readU32(w, at + 4, this.le) & 3
        p.direction = direction === 1 ? 'inbound' : direction === 2 ? 'outbound' : 'unknown'
      }
      at += 4 + pad4(length)
    }
    return p
  }

  private readSimplePacket(w: Uint8Array, at: number, bodyEnd: number, start: number): CapturedPacket {
    const iface = this.interfaces[0]
    if (iface === undefined) throw new CaptureFormatError('unknown-interface', start, 'simple packet block before any interface')
    if (bodyEnd - at < 12) throw new CaptureFormatError('bad-length', start + 4, 'simple packet block shorter than 16 bytes')
    const original = readU32(w, at + 8, this.le)
    // "the captured length is the minimum of the original length, the snaplen and the space in the block"
    let captured = Math.min(original, bodyEnd - (at + 12))
    if (iface.snaplen !== 0) captured = Math.min(captured, iface.snaplen)
    const p = this.packet
    p.index = ++this.packetCount
    p.interfaceId = 0
    p.linkType = iface.linkType
    p.seconds = 0
    p.nanoseconds = 0
    p.capturedLength = captured
    p.originalLength = original
    p.direction = 'unknown'
    p.fileOffset = start
    p.bytes = w
    p.dataOffset = at + 12
    return p
  }
}

/** Reads every packet of a capture held in memory, copying each (for tests and small files). */
export function readAllPackets(bytes: Uint8Array): Array<{
  interfaceId: number
  linkType: number
  seconds: number
  nanoseconds: number
  originalLength: number
  direction: PacketDirection
  data: Uint8Array
}> {
  const reader = CaptureReader.fromBuffer(bytes)
  const out = []
  for (let p = reader.next(); p !== null; p = reader.next()) {
    out.push({
      interfaceId: p.interfaceId,
      linkType: p.linkType,
      seconds: p.seconds,
      nanoseconds: p.nanoseconds,
      originalLength: p.originalLength,
      direction: p.direction,
      data: new Uint8Array(p.data),
    })
  }
  return out
}

// ---------------------------------------------------------------------------
// Writing

/**
 * Where a writer's bytes go. `write` must be done with the bytes before it
 * returns (copy them if it keeps them): writers reuse their staging buffer.
 */
export interface CaptureSink {
  write(bytes: Uint8Array): void
  close(): Promise<void>
}

/** Synchronous writes to a file descriptor (the caller's, or one opened from a path). */
export class FileCaptureSink implements CaptureSink {
  private fd: number | undefined
  private readonly ownsFd: boolean
  constructor(target: string | number) {
    this.ownsFd = typeof target === 'string'
    this.fd = typeof target === 'string' ? openSync(target, 'w') : target
  }
  write(bytes: Uint8Array): void {
    if (this.fd === undefined) throw new FlowstackError('PCAP_CLOSED', 'capture sink is closed')
    let done = 0
    while (done < bytes.length) done += writeSync(this.fd, bytes, done, bytes.length - done)
  }
  async close(): Promise<void> {
    if (this.fd !== undefined && this.ownsFd) closeSync(this.fd)
    this.fd = undefined
  }
}

/** Writes to a Node Writable; `close()` ends the stream and waits for it to finish. */
export class StreamCaptureSink implements CaptureSink {
  constructor(private readonly stream: Writable) {}
  /** False when the stream's buffer is above its high-water mark (wait for 'drain'). */
  get writable(): boolean {
    return !this.stream.writableNeedDrain
  }
  write(bytes: Uint8Array): void {
    // The stream keeps the chunk until it is flushed; the writer will reuse `bytes`.
    this.stream.write(Buffer.from(bytes))
  }
  close(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.stream.once('error', reject)
      this.stream.end(() => resolve())
    })
  }
}

/** Collects everything in memory (tests, small captures). */
export class MemoryCaptureSink implements CaptureSink {
  private readonly chunks: Buffer[] = []
  write(bytes: Uint8Array): void {
    this.chunks.push(Buffer.from(bytes))
  }
  async close(): Promise<void> {}
  bytes(): Buffer {
    return Buffer.concat(this.chunks)
  }
}

const STAGING_SIZE = 64 * 1024

/**
 * Copies without allocating a view: Buffer#copy takes offsets; a SharedArrayBuffer
 * pool buffer is wrapped once per underlying buffer and cached.
 */
const bufferViews = new WeakMap<ArrayBufferLike, Buffer>()
export function copyBytes(from: Uint8Array, fromOffset: number, length: number, to: Uint8Array, toOffset: number): void {
  let source = Buffer.isBuffer(from) ? from : undefined
  let base = fromOffset
  if (source === undefined) {
    source = bufferViews.get(from.buffer)
    if (source === undefined) {
      source = Buffer.from(from.buffer, 0, from.buffer.byteLength)
      bufferViews.set(from.buffer, source)
    }
    base = from.byteOffset + fromOffset
  }
  source.copy(to, toOffset, base, base + length)
}

/** Common staging: blocks are assembled in one reused buffer and handed to the sink when it fills. */
abstract class StagedWriter {
  protected readonly staging = Buffer.allocUnsafe(STAGING_SIZE)
  protected used = 0
  protected closed = false
  packetsWritten = 0

  constructor(
    protected readonly sink: CaptureSink,
    protected readonly le: boolean,
  ) {}

  /** Makes room for `n` contiguous bytes in the staging buffer, or returns false if `n` never fits. */
  protected reserve(n: number): boolean {
    if (this.closed) throw new FlowstackError('PCAP_CLOSED', 'capture writer is closed')
    if (this.used + n <= STAGING_SIZE) return true
    this.flush()
    return n <= STAGING_SIZE
  }

  protected put(bytes: Uint8Array, from: number, length: number): void {
    if (this.used + length <= STAGING_SIZE) {
      copyBytes(bytes, from, length, this.staging, this.used)
      this.used += length
    } else {
      this.flush()
      if (length <= STAGING_SIZE) {
        copyBytes(bytes, from, length, this.staging, 0)
        this.used = length
      } else {
        this.sink.write(bytes.subarray(from, from + length))
      }
    }
  }

  protected putZeros(n: number): void {
    if (n === 0) return
    this.reserve(n)
    this.staging.fill(0, this.used, this.used + n)
    this.used += n
  }

  /** Hands staged bytes to the sink. */
  flush(): void {
    if (this.used > 0) this.sink.write(this.staging.subarray(0, this.used))
    this.used = 0
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    // The sink is closed (its descriptor released) even when the last flush fails (disk full).
    let failure: unknown
    try {
      this.flush()
    } catch (err) {
      failure = err
    }
    await this.sink.close()
    if (failure !== undefined) throw failure
  }
}

export interface PcapWriterOptions {
  linkType: number
  snaplen?: number
  /** Nanosecond magic (0xa1b23c4d) instead of microseconds. */
  nanosecond?: boolean
  byteOrder?: ByteOrder
}

/** Classic pcap writer. */
export class PcapWriter extends StagedWriter {
  readonly snaplen: number
  readonly nanosecond: boolean

  constructor(sink: CaptureSink, options: PcapWriterOptions) {
    super(sink, (options.byteOrder ?? 'le') === 'le')
    this.snaplen = options.snaplen ?? DEFAULT_SNAPLEN
    this.nanosecond = options.nanosecond ?? false
    this.reserve(24)
    const b = this.staging
    writeU32(b, 0, this.nanosecond ? PCAP_MAGIC_NANOSECONDS : PCAP_MAGIC_MICROSECONDS, this.le)
    writeU16(b, 4, 2, this.le)
    writeU16(b, 6, 4, this.le)
    writeU32(b, 8, 0, this.le) // thiszone: always UTC
    writeU32(b, 12, 0, this.le) // sigfigs
    writeU32(b, 16, this.snaplen, this.le)
    writeU32(b, 20, options.linkType, this.le)
    this.used = 24
  }

  /** Appends one record; packets longer than the snaplen are cut, keeping their original length. */
  writePacket(data: Uint8Array, seconds: number, nanoseconds: number, originalLength = data.length): void {
    const captured = Math.min(data.length, this.snaplen)
    this.reserve(16)
    const b = this.staging
    const at = this.used
    writeU32(b, at, seconds, this.le)
    writeU32(b, at + 4, this.nanosecond ? nanoseconds : Math.floor(nanoseconds / 1000), this.le)
    writeU32(b, at + 8, captured, this.le)
    writeU32(b, at + 12, Math.max(originalLength, captured), this.le)
    this.used += 16
    this.put(data, 0, captured)
    this.packetsWritten++
  }
}

export interface PcapngInterfaceOptions {
  linkType: number
  name?: string
  snaplen?: number
  /** if_tsresol as a power of ten: 9 = nanoseconds (default), 6 = microseconds. */
  timestampDecimals?: number
}

export interface PcapngWriterOptions {
  byteOrder?: ByteOrder
  /** shb_userappl. */
  application?: string
}

/** pcapng writer: one section, interfaces added as needed, Enhanced Packet Blocks. */
export class PcapngWriter extends StagedWriter {
  private readonly interfaceUnits: number[] = []
  private readonly interfaceSnaplen: number[] = []
  private readonly tsWords = new Uint32Array(2)

  constructor(sink: CaptureSink, options: PcapngWriterOptions = {}) {
    super(sink, (options.byteOrder ?? 'le') === 'le')
    const appl = options.application === undefined ? undefined : Buffer.from(options.application, 'utf8')
    const optionsLength = appl === undefined ? 0 : 4 + pad4(appl.length) + 4
    const total = 28 + optionsLength
    this.reserve(total)
    const b = this.staging
    writeU32(b, 0, PCAPNG_BLOCK_SHB, this.le)
    writeU32(b, 4, total, this.le)
    writeU32(b, 8, PCAPNG_BYTE_ORDER_MAGIC, this.le)
    writeU16(b, 12, 1, this.le)
    writeU16(b, 14, 0, this.le)
    // Section length -1: not specified (we stream).
    writeU32(b, 16, 0xffffffff, this.le)
    writeU32(b, 20, 0xffffffff, this.le)
    this.used = 24
    if (appl !== undefined) this.putOption(OPT_SHB_USERAPPL, appl)
    if (optionsLength > 0) this.putEndOfOptions()
    this.reserve(4)
    writeU32(b, this.used, total, this.le)
    this.used += 4
  }

  private putOption(code: number, value: Uint8Array): void {
    this.reserve(4)
    writeU16(this.staging, this.used, code, this.le)
    writeU16(this.staging, this.used + 2, value.length, this.le)
    this.used += 4
    this.put(value, 0, value.length)
    this.putZeros(pad4(value.length) - value.length)
  }

  private putEndOfOptions(): void {
    this.putZeros(4)
  }

  /** Adds an Interface Description Block; returns the interface id to write packets with. */
  addInterface(options: PcapngInterfaceOptions): number {
    const decimals = options.timestampDecimals ?? 9
    if (!Number.isInteger(decimals) || decimals < 0 || decimals > 9) {
      throw new FlowstackError('ERR_INVALID_ARG_VALUE', `timestampDecimals ${decimals} must be 0..9`)
    }
    const snaplen = options.snaplen ?? DEFAULT_SNAPLEN
    const name = options.name === undefined ? undefined : Buffer.from(options.name, 'utf8')
    let optionsLength = 8 + 4 // if_tsresol (header + 1 byte padded to 4) + opt_endofopt
    if (name !== undefined) optionsLength += 4 + pad4(name.length)
    const total = 20 + optionsLength
    this.reserve(16)
    const b = this.staging
    writeU32(b, this.used, PCAPNG_BLOCK_IDB, this.le)
    writeU32(b, this.used + 4, total, this.le)
    writeU16(b, this.used + 8, options.linkType, this.le)
    writeU16(b, this.used + 10, 0, this.le)
    writeU32(b, this.used + 12, snaplen, this.le)
    this.used += 16
    if (name !== undefined) this.putOption(OPT_IF_NAME, name)
    this.putOption(OPT_IF_TSRESOL, Uint8Array.of(decimals))
    this.putEndOfOptions()
    this.reserve(4)
    writeU32(this.staging, this.used, total, this.le)
    this.used += 4
    this.interfaceUnits.push(10 ** decimals)
    this.interfaceSnaplen.push(snaplen)
    return this.interfaceUnits.length - 1
  }

  /**
   * Appends a Decryption Secrets Block with TLS key log lines (NSS key log
   * format, as Node's `tlsSocket.on('keylog')` gives them), so Wireshark can
   * decrypt the TLS sessions in this capture. Write it before the packets it unlocks.
   */
  writeTlsKeyLog(keyLog: string | Uint8Array): void {
    const secrets = typeof keyLog === 'string' ? Buffer.from(keyLog, 'utf8') : keyLog
    const total = 20 + pad4(secrets.length)
    this.reserve(16)
    const b = this.staging
    writeU32(b, this.used, PCAPNG_BLOCK_DSB, this.le)
    writeU32(b, this.used + 4, total, this.le)
    writeU32(b, this.used + 8, DSB_SECRETS_TLS_KEY_LOG, this.le)
    writeU32(b, this.used + 12, secrets.length, this.le)
    this.used += 16
    this.put(secrets, 0, secrets.length)
    this.putZeros(pad4(secrets.length) - secrets.length)
    this.reserve(4)
    writeU32(this.staging, this.used, total, this.le)
    this.used += 4
  }

  /** Appends an Enhanced Packet Block, with epb_flags when the direction is known. */
  writePacket(
    interfaceId: number,
    data: Uint8Array,
    seconds: number,
    nanoseconds: number,
    direction: PacketDirection = 'unknown',
    originalLength = data.length,
  ): void {
    this.writePacketBytes(interfaceId, data, 0, data.length, seconds, nanoseconds, direction, originalLength)
  }

  /** writePacket for `bytes[offset, offset + length)`, without making a view (for pool buffers on data paths). */
  writePacketBytes(
    interfaceId: number,
    bytes: Uint8Array,
    offset: number,
    length: number,
    seconds: number,
    nanoseconds: number,
    direction: PacketDirection = 'unknown',
    originalLength = length,
  ): void {
    const units = this.interfaceUnits[interfaceId]
    if (units === undefined) throw new FlowstackError('ERR_INVALID_ARG_VALUE', `no interface ${interfaceId} in this pcapng section`)
    const snaplen = this.interfaceSnaplen[interfaceId]
    const captured = snaplen === 0 ? length : Math.min(length, snaplen)
    const padded = pad4(captured)
    const optionsLength = direction === 'unknown' ? 0 : 8 + 4
    const total = 32 + padded + optionsLength
    unitsToWords(seconds, Math.floor((nanoseconds * units) / 1e9), units, this.tsWords)
    this.reserve(28)
    const b = this.staging
    const at = this.used
    writeU32(b, at, PCAPNG_BLOCK_EPB, this.le)
    writeU32(b, at + 4, total, this.le)
    writeU32(b, at + 8, interfaceId, this.le)
    writeU32(b, at + 12, this.tsWords[0], this.le)
    writeU32(b, at + 16, this.tsWords[1], this.le)
    writeU32(b, at + 20, captured, this.le)
    writeU32(b, at + 24, Math.max(originalLength, captured), this.le)
    this.used += 28
    this.put(bytes, offset, captured)
    this.putZeros(padded - captured)
    this.reserve(optionsLength + 4)
    if (optionsLength > 0) {
      writeU16(b, this.used, OPT_EPB_FLAGS, this.le)
      writeU16(b, this.used + 2, 4, this.le)
      writeU32(b, this.used + 4, direction === 'inbound' ? 1 : 2, this.le)
      writeU32(b, this.used + 8, 0, this.le) // opt_endofopt
      this.used += 12
    }
    writeU32(b, this.used, total, this.le)
    this.used += 4
    this.packetsWritten++
  }
}
