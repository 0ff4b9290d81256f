// Copying a packet from one channel's buffer into another's without creating
// a view per packet (`subarray` allocates). Each source buffer gets, lazily
// and once, prefix views of 128, 256, 512, ... bytes up to its full size; a
// packet is copied with one `set` (memcpy) of the smallest prefix that holds
// it, so at most twice its length is moved and a 60-byte frame in a 64 KiB
// GSO buffer does not cost a 64 KiB copy. Copying past `length` inside the
// destination buffer is harmless: those bytes are not part of the packet.
import type { ChannelEnd } from '../channel/index.js'

const SMALLEST_PREFIX_LOG2 = 7 // 128 bytes

/** A channel end plus its cache of prefix views, one array per size class. */
export interface CopyEnd {
  readonly end: ChannelEnd
  /** prefixes[c][index]: the first 128 << c bytes of buffer `index`. */
  readonly prefixes: (Uint8Array | undefined)[][]
}

export function copyEndOf(end: ChannelEnd): CopyEnd {
  const classes: (Uint8Array | undefined)[][] = []
  for (let size = 1 << SMALLEST_PREFIX_LOG2; size < end.bufferSize; size <<= 1) {
    classes.push(new Array<Uint8Array | undefined>(end.bufferCount).fill(undefined))
  }
  return { end, prefixes: classes }
}

function sizeClass(length: number): number {
  if (length <= 1 << SMALLEST_PREFIX_LOG2) return 0
  return 32 - Math.clz32(length - 1) - SMALLEST_PREFIX_LOG2
}

/**
 * Copies `length` bytes from buffer `srcIndex` of `from` to buffer `dstIndex`
 * of `to`. The caller has checked length <= to.end.bufferSize.
 */
export function copyPacket(from: CopyEnd, srcIndex: number, to: CopyEnd, dstIndex: number, length: number): void {
  const dst = to.end.buffer(dstIndex)
  const cls = sizeClass(length)
  let src: Uint8Array
  if (cls >= from.prefixes.length) {
    src = from.end.buffer(srcIndex)
  } else {
    const views = from.prefixes[cls]
    const cached = views[srcIndex]
    if (cached === undefined) {
      const full = from.end.buffer(srcIndex)
      src = new Uint8Array(full.buffer, full.byteOffset, 1 << (cls + SMALLEST_PREFIX_LOG2))
      views[srcIndex] = src
    } else {
      src = cached
    }
  }
  if (src.length <= dst.length) {
    dst.set(src)
  } else {
    // Destination buffers smaller than the source's prefix: copy exactly.
    for (let i = 0; i < length; i++) dst[i] = src[i]
  }
}
