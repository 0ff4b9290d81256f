/**
 * The Internet checksum (RFC 1071) and its incremental update (RFC 1624).
 *
 * Speed: the sum is taken over aligned 32-bit little-endian loads through a
 * Uint32Array view of the whole underlying buffer (cached per buffer, so no
 * view is allocated per packet) with four independent accumulators, then
 * byte-swapped once at the end. RFC 1071 section 2(B): the one's complement
 * sum is byte-order independent, so summing little-endian words and swapping
 * the folded result equals the big-endian sum. An odd start address is
 * handled with the same property (2(B) again): the bytes from the next even
 * address are summed with the pairing shifted by one, which equals the
 * byte-swapped sum of the correctly paired words.
 */

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** Below this many bytes a plain byte loop beats setting up the word loop. */
const SMALL = 64

let cachedBuffer: ArrayBufferLike | null = null
let cachedWords: Uint32Array | null = null
const wordViews = new WeakMap<ArrayBufferLike, Uint32Array>()

/**
 * A Uint32Array over the whole buffer, reused across calls (a view per call
 * would be an allocation per packet). `endWord` guards against a buffer that
 * grew (resizable ArrayBuffer / growable SharedArrayBuffer) after its view
 * was cached: the view is then rebuilt.
 */
function wordsOf(buffer: ArrayBufferLike, endWord: number): Uint32Array {
  if (buffer === cachedBuffer && endWord <= cachedWords!.length) return cachedWords!
  let words = wordViews.get(buffer)
  if (words === undefined || endWord > words.length) {
    words = new Uint32Array(buffer, 0, buffer.byteLength >>> 2)
    wordViews.set(buffer, words)
  }
  cachedBuffer = buffer
  cachedWords = words
  return words
}

function swap16(x: number): number {
  return ((x & 0xff) << 8) | (x >>> 8)
}

function fold16(sum: number): number {
  // Two folds suffice for sums below 2^32; larger (double) sums loop.
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000)
  return sum
}

/** Big-endian word sum by bytes: the reference path for short or unaligned data. */
function sumBytes(bytes: Uint8Array, offset: number, length: number): number {
  let sum = 0
  const end = offset + length - 1
  let i = offset
  for (; i < end; i += 2) sum += (bytes[i] << 8) | bytes[i + 1]
  if (i === end) sum += bytes[i] << 8
  return sum
}

/**
 * Sum of 16-bit little-endian words starting at an even absolute byte
 * position `abs` of the underlying buffer; the result is the byte-swapped
 * (still unfolded) big-endian sum.
 */
function sumLittleEndianFromEven(bytes: Uint8Array, offset: number, length: number): number {
  let abs = bytes.byteOffset + offset
  let sum = 0
  let i = offset
  let remaining = length
  if ((abs & 2) !== 0 && remaining >= 2) {
    sum += bytes[i] | (bytes[i + 1] << 8)
    i += 2
    abs += 2
    remaining -= 2
  }
  let w = abs >>> 2
  const wordCount = remaining >>> 2
  const words = wordsOf(bytes.buffer, w + wordCount)
  const endUnrolled = w + (wordCount & ~3)
  let a0 = 0
  let a1 = 0
  let a2 = 0
  let a3 = 0
  for (; w < endUnrolled; w += 4) {
    const x0 = words[w]
    const x1 = words[w + 1]
    const x2 = words[w + 2]
    const x3 = words[w + 3]
    a0 += (x0 & 0xffff) + (x0 >>> 16)
    a1 += (x1 & 0xffff) + (x1 >>> 16)
    a2 += (x2 & 0xffff) + (x2 >>> 16)
    a3 += (x3 & 0xffff) + (x3 >>> 16)
  }
  const endWords = (abs >>> 2) + wordCount
  for (; w < endWords; w++) {
    const x = words[w]
    a0 += (x & 0xffff) + (x >>> 16)
  }
  sum += a0 + a1 + a2 + a3
  i += wordCount << 2
  remaining -= wordCount << 2
  if (remaining >= 2) {
    sum += bytes[i] | (bytes[i + 1] << 8)
    i += 2
    remaining -= 2
  }
  if (remaining === 1) sum += bytes[i]
  return sum
}

/**
 * Partial (not complemented) one's complement sum of `length` bytes at
 * `offset`, added to `sum`. The result is congruent modulo 0xffff to the
 * sum of big-endian 16-bit words and stays small enough to be passed back in
 * as `sum`. An odd `length` pads with a zero byte, so only the last piece of
 * a chained computation may have odd length.
 */
export function checksumAccumulate(bytes: Uint8Array, offset: number, length: number, sum = 0): number {
  if (length <= 0) return sum
  if (length < SMALL || !LITTLE_ENDIAN) return fold16(sum + sumBytes(bytes, offset, length))
  const abs = bytes.byteOffset + offset
  if ((abs & 1) === 0) {
    return fold16(sum + swap16(fold16(sumLittleEndianFromEven(bytes, offset, length))))
  }
  // Odd start: the first byte is the high half of the first word; the rest
  // summed from the next (even) address with shifted pairing is the correct
  // sum byte-swapped, and a little-endian sum is byte-swapped once more.
  const shifted = fold16(sumLittleEndianFromEven(bytes, offset + 1, length - 1))
  return fold16(sum + (bytes[offset] << 8) + shifted)
}

/** Folds a partial sum and complements it: the value to put in a header (0 means the sum was 0xffff). */
export function checksumFold(sum: number): number {
  return ~fold16(sum) & 0xffff
}

export function internetChecksum(bytes: Uint8Array, offset: number, length: number, initial = 0): number {
  return checksumFold(checksumAccumulate(bytes, offset, length, initial))
}

/** Partial sum of the IPv4 pseudo-header (RFC 793 / RFC 768): src, dst, zero, protocol, length. */
export function pseudoHeaderSumIpv4(src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length
}

/** Partial sum of the IPv6 pseudo-header (RFC 8200 8.1): src, dst, 32-bit length, zeros, next header. */
export function pseudoHeaderSumIpv6(src: Uint8Array, dst: Uint8Array, nextHeader: number, length: number): number {
  let sum = nextHeader + (length >>> 16) + (length & 0xffff)
  for (let i = 0; i < 16; i += 2) sum += ((src[i] << 8) | src[i + 1]) + ((dst[i] << 8) | dst[i + 1])
  return sum
}

/**
 * RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changing from
 * `oldWord` (m) to `newWord` (m'). Unlike eqn. 2 it never produces 0x0000
 * from a non-zero sum, so it agrees with a full recomputation.
 */
export function checksumUpdate16(oldChecksum: number, oldWord: number, newWord: number): number {
  const sum = (~oldChecksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)
  return ~fold16(sum) & 0xffff
}

/** RFC 1624 eqn. 3 for a 32-bit field (sequence number, IPv4 address) changing from oldValue to newValue. */
export function checksumUpdate32(oldChecksum: number, oldValue: number, newValue: number): number {
  const sum =
    (~oldChecksum & 0xffff) +
    (~(oldValue >>> 16) & 0xffff) +
    (~oldValue & 0xffff) +
    ((newValue >>> 16) & 0xffff) +
    (newValue & 0xffff)
  return ~fold16(sum) & 0xffff
}

/**
 * What a transport checksum needs from the IP layer. Ipv4Repr and Ipv6Repr
 * satisfy it directly (they carry `version`, `src` and `dst`).
 */
export type IpPseudoHeader =
  | { readonly version: 4; readonly src: number; readonly dst: number }
  | { readonly version: 6; readonly src: Uint8Array; readonly dst: Uint8Array }

export function pseudoHeaderSum(ip: IpPseudoHeader, protocol: number, length: number): number {
  return ip.version === 4 ? pseudoHeaderSumIpv4(ip.src, ip.dst, protocol, length) : pseudoHeaderSumIpv6(ip.src, ip.dst, protocol, length)
}

/** struct virtio_net_hdr flag: the checksum from csum_start to the end is left to the device. */
export const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1

/**
 * Finishes what the kernel left to the "device" in a packet behind a
 * struct virtio_net_hdr (little-endian: flags u8, gso_type u8, hdr_len u16,
 * gso_size u16, csum_start u16, csum_offset u16) of `headerBytes`.
 * VIRTIO_NET_HDR_F_NEEDS_CSUM (Linux CHECKSUM_PARTIAL): the field at
 * csum_start + csum_offset holds the folded pseudo-header sum; the checksum
 * over [csum_start, end) goes there. The header is left as it is. Returns
 * false for a header that points outside the packet.
 */
export function completePartialChecksum(buffer: Uint8Array, length: number, headerBytes: number): boolean {
  if ((buffer[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) === 0) return true
  const packetLength = length - headerBytes
  const start = buffer[6] | (buffer[7] << 8)
  const field = start + (buffer[8] | (buffer[9] << 8))
  if (field + 2 > packetLength || start >= packetLength) return false
  // Offsets into `buffer` itself: no view per packet on the switch's path.
  let checksum = checksumFold(checksumAccumulate(buffer, headerBytes + start, packetLength - start))
  // RFC 768: a computed UDP checksum of zero is sent as all ones (UDP's field sits at offset 6).
  if (checksum === 0 && field - start === 6) checksum = 0xffff
  buffer[headerBytes + field] = checksum >>> 8
  buffer[headerBytes + field + 1] = checksum & 0xff
  return true
}
