// IPv4 (RFC 791 §3.2, RFC 1122 §3.3.2) and IPv6 (RFC 8200 §4.5, RFC 5722)
// fragment reassembly, bounded in datagrams, bytes, fragments per datagram
// and time. Reassembly buffers come from a small pool (allocated once, on
// first use) so a flood of fragments never allocates per packet.
//
// A completed datagram is laid out in its buffer as a whole IP packet
// (header rebuilt from the first fragment, then the data) so the IP layer
// can feed it back through its normal input path.

export interface ReassemblyLimits {
  /** Datagrams being reassembled at once (= pooled buffers). */
  maxDatagrams: number
  /** Data bytes held across all datagrams. */
  maxBytes: number
  /** Distinct fragments per datagram (bounds the work per fragment). */
  maxFragmentsPerDatagram: number
  /** Reassembly timeout (ms). */
  timeoutMs: number
}

export type FragmentOutcome =
  | 'incomplete'
  | 'complete'
  | 'duplicate'
  /** Overlap with data already held: the whole datagram is discarded (RFC 5722 §4). */
  | 'overlap'
  /** Datagram, byte or fragment-count limit reached. */
  | 'limit'
  /** Beyond the largest datagram, or inconsistent ends. */
  | 'bad-length'

/** Offset of the data in a reassembly buffer: room for the largest header in front. */
const HEADROOM = 60
const MAX_DATA = 65535
/** Kept of the first fragment for an ICMP error quote (IPv6 minimum MTU minus headers). */
const QUOTE_MAX = 1232

interface Datagram {
  version: 4 | 6
  srcV4: number
  dstV4: number
  src6: Uint8Array
  dst6: Uint8Array
  id: number
  protocol: number
  buffer: Uint8Array
  /** Received ranges [start, end) of the data, sorted, as pairs. */
  ranges: number[]
  /** Data length once the last fragment (MF = 0) arrived, else -1. */
  totalLength: number
  receivedBytes: number
  expiresAt: number
  /** Copy of the first fragment (offset 0), for the rebuilt header and ICMP quotes. */
  first: Uint8Array | null
  firstLength: number
  firstHeaderLength: number
}

/** What expire() reports for each timed-out datagram. */
export interface ReassemblyTimeout {
  version: 4 | 6
  /**
   * The first fragment (IP header + start of data) to quote in ICMP time
   * exceeded, or null when it never arrived (then no ICMP is sent).
   */
  firstFragment: Uint8Array | null
}

export class Reassembler {
  private datagrams: Datagram[] = []
  private freeBuffers: Uint8Array[] = []
  private buffersMade = 0
  private heldBytes = 0
  /** After 'complete': the rebuilt packet (a view into a pooled buffer, valid until the next call). */
  completed: Uint8Array = new Uint8Array(0)

  constructor(readonly limits: ReassemblyLimits) {}

  get activeDatagrams(): number {
    return this.datagrams.length
  }

  get bytesHeld(): number {
    return this.heldBytes
  }

  /**
   * Add one fragment. `packet` is the whole fragment (IP header first),
   * `headerLength` the bytes before the fragmentable data (IPv4 header; for
   * IPv6 the fixed header + unfragmentable extensions + Fragment header),
   * `offset` the fragment offset in bytes, `nextHeader` the IPv6 Fragment
   * header's Next Header (ignored for IPv4).
   */
  add(
    version: 4 | 6,
    packet: Uint8Array,
    headerLength: number,
    dataLength: number,
    srcV4: number,
    dstV4: number,
    src6: Uint8Array | null,
    dst6: Uint8Array | null,
    id: number,
    protocol: number,
    offset: number,
    moreFragments: boolean,
    now: number,
  ): FragmentOutcome {
    const start = offset
    const end = offset + dataLength
    if (end > MAX_DATA - (version === 4 ? 20 : 0) || dataLength === 0) return 'bad-length'
    let d = this.find(version, srcV4, dstV4, src6, dst6, id, protocol)
    if (d === null) {
      if (this.datagrams.length >= this.limits.maxDatagrams) return 'limit'
      d = this.open(version, srcV4, dstV4, src6, dst6, id, protocol, now)
      if (d === null) return 'limit'
    }
    // Ends must agree: a last fragment fixes the length, nothing may lie beyond it.
    if (!moreFragments) {
      if ((d.totalLength !== -1 && d.totalLength !== end) || this.maxEnd(d) > end) return this.discard(d, 'bad-length')
      d.totalLength = end
    } else if (d.totalLength !== -1 && end > d.totalLength) {
      return this.discard(d, 'bad-length')
    }
    // RFC 5722 §4: "When reassembling an IPv6 datagram, if one or more of its
    // constituent fragments is determined to be an overlapping fragment, the
    // entire datagram (and any constituent fragments, including those not yet
    // received) MUST be silently discarded." We apply it to IPv4 as well, as
    // Linux does; exact duplicates are dropped alone.
    const r = d.ranges
    let insertAt = r.length
    for (let i = 0; i < r.length; i += 2) {
      if (r[i] === start && r[i + 1] === end) return 'duplicate'
      if (start < r[i + 1] && end > r[i]) return this.discard(d, 'overlap')
      if (start < r[i] && insertAt === r.length) insertAt = i
    }
    if (r.length / 2 >= this.limits.maxFragmentsPerDatagram || this.heldBytes + dataLength > this.limits.maxBytes) {
      return this.discard(d, 'limit')
    }
    r.splice(insertAt, 0, start, end)
    d.buffer.set(packet.subarray(headerLength, headerLength + dataLength), HEADROOM + start)
    d.receivedBytes += dataLength
    this.heldBytes += dataLength
    if (start === 0) {
      // RFC 8200 §4.5: "Only the value from the Offset zero fragment packet is used for reassembly."
      if (version === 6) d.protocol = protocol
      const keep = Math.min(packet.length, headerLength + dataLength, QUOTE_MAX + headerLength)
      d.first = packet.slice(0, keep)
      d.firstLength = keep
      d.firstHeaderLength = headerLength
    }
    if (d.totalLength === -1 || d.receivedBytes !== d.totalLength || d.first === null) return 'incomplete'
    // Non-overlapping ranges whose sizes sum to the total cover it exactly.
    this.finish(d)
    return 'complete'
  }

  /** Discard timed-out datagrams, reporting each. */
  expire(now: number, onTimeout: (timeout: ReassemblyTimeout) => void): void {
    for (let i = this.datagrams.length - 1; i >= 0; i--) {
      const d = this.datagrams[i]
      if (d.expiresAt > now) continue
      const first = d.first
      this.close(d)
      // RFC 8200 §4.5: time exceeded (code 1) only "if the first fragment
      // (i.e., the one with a Fragment Offset of zero) has been received".
      onTimeout({ version: d.version, firstFragment: first })
    }
  }

  nextTimeout(): number {
    let next = Infinity
    for (const d of this.datagrams) if (d.expiresAt < next) next = d.expiresAt
    return next
  }

  private finish(d: Datagram): void {
    const first = d.first!
    const total = d.totalLength
    const buf = d.buffer
    let headerLength: number
    if (d.version === 4) {
      headerLength = d.firstHeaderLength
      const start = HEADROOM - headerLength
      buf.set(first.subarray(0, headerLength), start)
      const totalLength = headerLength + total
      buf[start + 2] = totalLength >>> 8
      buf[start + 3] = totalLength & 0xff
      // Keep DF, clear MF and the offset.
      buf[start + 6] &= 0x40
      buf[start + 7] = 0
      buf[start + 10] = 0
      buf[start + 11] = 0
      const sum = headerChecksum(buf, start, headerLength)
      buf[start + 10] = sum >>> 8
      buf[start + 11] = sum & 0xff
      this.completed = buf.subarray(start, start + totalLength)
    } else {
      // The unfragmentable part is reduced to the fixed header whose Next
      // Header is the Fragment header's (RFC 8200 §4.5 reassembly rules,
      // minus hop-by-hop/routing headers, which we have already processed).
      headerLength = 40
      const start = HEADROOM - 40
      buf.set(first.subarray(0, 40), start)
      buf[start + 4] = total >>> 8
      buf[start + 5] = total & 0xff
      buf[start + 6] = d.protocol
      this.completed = buf.subarray(start, start + 40 + total)
    }
    this.close(d)
  }

  private maxEnd(d: Datagram): number {
    return d.ranges.length === 0 ? 0 : d.ranges[d.ranges.length - 1]
  }

  private discard(d: Datagram, outcome: FragmentOutcome): FragmentOutcome {
    this.close(d)
    return outcome
  }

  private close(d: Datagram): void {
    const i = this.datagrams.indexOf(d)
    if (i !== -1) this.datagrams.splice(i, 1)
    this.heldBytes -= d.receivedBytes
    this.freeBuffers.push(d.buffer)
    d.first = null
  }

  private open(
    version: 4 | 6,
    srcV4: number,
    dstV4: number,
    src6: Uint8Array | null,
    dst6: Uint8Array | null,
    id: number,
    protocol: number,
    now: number,
  ): Datagram | null {
    let buffer = this.freeBuffers.pop()
    if (buffer === undefined) {
      if (this.buffersMade >= this.limits.maxDatagrams) return null
      buffer = new Uint8Array(HEADROOM + MAX_DATA)
      this.buffersMade++
    }
    const d: Datagram = {
      version,
      srcV4,
      dstV4,
      src6: src6 === null ? EMPTY : src6.slice(),
      dst6: dst6 === null ? EMPTY : dst6.slice(),
      id,
      protocol,
      buffer,
      ranges: [],
      totalLength: -1,
      receivedBytes: 0,
      expiresAt: now + this.limits.timeoutMs,
      first: null,
      firstLength: 0,
      firstHeaderLength: 0,
    }
    this.datagrams.push(d)
    return d
  }

  private find(
    version: 4 | 6,
    srcV4: number,
    dstV4: number,
    src6: Uint8Array | null,
    dst6: Uint8Array | null,
    id: number,
    protocol: number,
  ): Datagram | null {
    for (const d of this.datagrams) {
      if (d.version !== version || d.id !== id) continue
      if (version === 4) {
        // RFC 791: fragments belong together by (source, destination, protocol, identification).
        if (d.srcV4 === srcV4 && d.dstV4 === dstV4 && d.protocol === protocol) return d
      } else if (equal16(d.src6, src6!) && equal16(d.dst6, dst6!)) {
        // RFC 8200: by source, destination and Fragment Identification.
        return d
      }
    }
    return null
  }
}

const EMPTY = new Uint8Array(0)

function equal16(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false
  return true
}

/** RFC 1071 over an IPv4 header (checksum field zeroed by the caller). */
function headerChecksum(bytes: Uint8Array, offset: number, length: number): number {
  let sum = 0
  for (let i = 0; i < length; i += 2) sum += (bytes[offset + i] << 8) | bytes[offset + i + 1]
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}
