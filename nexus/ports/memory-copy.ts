// Copying a packet from one channel's buffer into another's without creating
// a view per packet (`subarray` allocates). Large packets are copied with one
// `set` of the whole source buffer (memcpy, and the bytes past `length` are
// harmless); small packets in big buffers by 32-bit words, so a 60-byte frame
// in a 64 KiB GSO buffer does not cost a 64 KiB copy.
import type { ChannelEnd } from '../channel/index.js'

/** A channel end plus an Int32Array over its whole SharedArrayBuffer, for word copies. */
export interface CopyEnd {
  readonly end: ChannelEnd
  readonly words: Int32Array
}

export function copyEndOf(end: ChannelEnd): CopyEnd {
  return { end, words: new Int32Array(end.sab) }
}

/**
 * Copies `length` bytes from buffer `srcIndex` of `from` to buffer `dstIndex`
 * of `to`. The caller has checked length <= to.end.bufferSize. Buffers are
 * 64-byte aligned and sized, so rounding up to whole words stays inside both.
 */
export function copyPacket(from: CopyEnd, srcIndex: number, to: CopyEnd, dstIndex: number, length: number): void {
  const src = from.end.buffer(srcIndex)
  const dst = to.end.buffer(dstIndex)
  if (length * 4 >= src.length && src.length <= dst.length) {
    dst.set(src)
    return
  }
  const sw = from.words
  const dw = to.words
  let s = src.byteOffset >> 2
  let d = dst.byteOffset >> 2
  const end = s + ((length + 3) >> 2)
  while (s < end) dw[d++] = sw[s++]
}
