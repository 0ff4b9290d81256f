/**
 * A fixed-capacity byte ring (the send and receive buffers of a connection).
 * One allocation for the connection's life; every operation copies with
 * `Uint8Array.set` over at most two spans. (Each span is a `subarray` view:
 * a small short-lived object, far cheaper than a byte loop for MSS-sized
 * copies.)
 *
 * `writeAt` lets the receiver place out-of-order data beyond the committed
 * tail (in the free space the advertised window promises) and `commit` makes
 * it readable once the hole before it is filled — smoltcp's
 * `write_unallocated` / `enqueue_unallocated` idea.
 */
export class ByteRing {
  readonly capacity: number
  /**
   * Allocated on the first write: a connection that never carries data (a
   * half-open SYN-RECEIVED from a SYN flood, a refused connect) costs no
   * buffer memory.
   */
  private buffer: Uint8Array | null = null
  private head = 0
  private used = 0

  constructor(capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError(`ring capacity ${capacity} is not a positive integer`)
    this.capacity = capacity
  }

  /** Whether the backing store has been allocated (for tests and memory accounting). */
  get allocated(): boolean {
    return this.buffer !== null
  }

  get length(): number {
    return this.used
  }

  get free(): number {
    return this.capacity - this.used
  }

  /** Appends as much of src[offset, offset+length) as fits; returns the count. */
  write(src: Uint8Array, offset = 0, length = src.length - offset): number {
    const n = Math.min(length, this.free)
    this.copyIn(this.used, src, offset, n)
    this.used += n
    return n
  }

  /** Copies into the free space at `gap` bytes past the tail without committing. Returns bytes placed. */
  writeAt(gap: number, src: Uint8Array, offset: number, length: number): number {
    if (gap < 0 || gap >= this.free) return 0
    const n = Math.min(length, this.free - gap)
    this.copyIn(this.used + gap, src, offset, n)
    return n
  }

  /** Makes `n` bytes previously placed with writeAt(0..) readable. */
  commit(n: number): void {
    if (n < 0 || n > this.free) throw new RangeError(`commit ${n} exceeds free space ${this.free}`)
    this.used += n
  }

  /** Copies up to `max` bytes from `skip` bytes past the head into dst, without consuming. */
  peek(dst: Uint8Array, dstOffset: number, max: number, skip = 0): number {
    if (skip >= this.used || this.buffer === null) return 0
    const n = Math.min(max, this.used - skip)
    let start = this.head + skip
    if (start >= this.capacity) start -= this.capacity
    const first = Math.min(n, this.capacity - start)
    dst.set(this.buffer.subarray(start, start + first), dstOffset)
    if (n > first) dst.set(this.buffer.subarray(0, n - first), dstOffset + first)
    return n
  }

  /** Copies up to `max` bytes into dst and consumes them. */
  read(dst: Uint8Array, dstOffset: number, max: number): number {
    const n = this.peek(dst, dstOffset, max)
    this.discard(n)
    return n
  }

  discard(n: number): void {
    if (n < 0 || n > this.used) throw new RangeError(`discard ${n} exceeds length ${this.used}`)
    this.head += n
    if (this.head >= this.capacity) this.head -= this.capacity
    this.used -= n
    // No "reset head when empty": bytes placed with writeAt beyond the tail
    // must stay where they are.
  }

  private copyIn(tailOffset: number, src: Uint8Array, offset: number, n: number): void {
    if (n <= 0) return
    if (this.buffer === null) this.buffer = new Uint8Array(this.capacity)
    let start = this.head + tailOffset
    if (start >= this.capacity) start -= this.capacity
    const first = Math.min(n, this.capacity - start)
    this.buffer.set(src.subarray(offset, offset + first), start)
    if (n > first) this.buffer.set(src.subarray(offset + first, offset + n), 0)
  }
}
