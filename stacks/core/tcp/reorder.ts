/**
 * The set of out-of-order byte ranges a receiver holds beyond RCV.NXT, as
 * offsets relative to RCV.NXT (the bytes themselves sit in the receive ring's
 * free space). Fixed capacity, preallocated, sorted and never overlapping;
 * adjacent ranges are merged.
 *
 * Each range remembers when it last grew, because RFC 2018 §4 orders SACK
 * blocks by recency: "The first SACK block ... MUST specify the contiguous
 * block of data containing the segment which triggered this ACK" and the
 * following ones repeat the most recently reported blocks.
 */
export class ReorderRanges {
  readonly maxRanges: number
  private readonly starts: Float64Array
  private readonly ends: Float64Array
  private readonly touched: Float64Array
  private clock = 0
  private n = 0

  constructor(maxRanges = 32) {
    this.maxRanges = maxRanges
    this.starts = new Float64Array(maxRanges)
    this.ends = new Float64Array(maxRanges)
    this.touched = new Float64Array(maxRanges)
  }

  get count(): number {
    return this.n
  }

  start(i: number): number {
    return this.starts[i]
  }

  end(i: number): number {
    return this.ends[i]
  }

  /** Total bytes held. */
  get bytes(): number {
    let total = 0
    for (let i = 0; i < this.n; i++) total += this.ends[i] - this.starts[i]
    return total
  }

  clear(): void {
    this.n = 0
  }

  /**
   * Adds [start, end). Returns false (and changes nothing) when the range
   * would need a new slot and all slots are in use: the caller drops the
   * segment, and the sender retransmits it later.
   */
  add(start: number, end: number): boolean {
    if (end <= start) return true
    const stamp = ++this.clock
    // First range whose end reaches start (touching counts as overlap).
    let i = 0
    while (i < this.n && this.ends[i] < start) i++
    // Last range whose start is <= end.
    let j = i
    while (j < this.n && this.starts[j] <= end) j++
    // Ranges i..j-1 merge with the new one.
    if (j === i) {
      if (this.n === this.maxRanges) return false
      for (let k = this.n; k > i; k--) {
        this.starts[k] = this.starts[k - 1]
        this.ends[k] = this.ends[k - 1]
        this.touched[k] = this.touched[k - 1]
      }
      this.starts[i] = start
      this.ends[i] = end
      this.touched[i] = stamp
      this.n++
      return true
    }
    const mergedStart = Math.min(start, this.starts[i])
    const mergedEnd = Math.max(end, this.ends[j - 1])
    this.starts[i] = mergedStart
    this.ends[i] = mergedEnd
    this.touched[i] = stamp
    const removed = j - i - 1
    if (removed > 0) {
      for (let k = i + 1; k + removed < this.n; k++) {
        this.starts[k] = this.starts[k + removed]
        this.ends[k] = this.ends[k + removed]
        this.touched[k] = this.touched[k + removed]
      }
      this.n -= removed
    }
    return true
  }

  /**
   * If a range starts at offset 0, removes it and returns its length (the
   * bytes that just became in-order); otherwise 0. All remaining offsets are
   * shifted down by the returned amount.
   */
  takeFront(): number {
    if (this.n === 0 || this.starts[0] > 0) return 0
    const len = this.ends[0]
    for (let k = 1; k < this.n; k++) {
      this.starts[k - 1] = this.starts[k] - len
      this.ends[k - 1] = this.ends[k] - len
      this.touched[k - 1] = this.touched[k]
    }
    this.n--
    return len
  }

  /** Shifts all offsets down by n (RCV.NXT advanced by n without a range at 0). */
  shift(n: number): void {
    if (n === 0) return
    let drop = 0
    for (let k = 0; k < this.n; k++) {
      this.starts[k] -= n
      this.ends[k] -= n
      if (this.ends[k] <= 0) drop++
      else if (this.starts[k] < 0) this.starts[k] = 0
    }
    if (drop > 0) {
      for (let k = drop; k < this.n; k++) {
        this.starts[k - drop] = this.starts[k]
        this.ends[k - drop] = this.ends[k]
        this.touched[k - drop] = this.touched[k]
      }
      this.n -= drop
    }
  }

  /**
   * Writes the indices of up to `max` ranges, most recently grown first,
   * into `out`; returns how many.
   */
  mostRecent(out: Int32Array, max: number): number {
    const count = Math.min(max, this.n, out.length)
    let lastStamp = Infinity
    for (let k = 0; k < count; k++) {
      let best = -1
      for (let i = 0; i < this.n; i++) {
        if (this.touched[i] < lastStamp && (best < 0 || this.touched[i] > this.touched[best])) best = i
      }
      if (best < 0) return k
      out[k] = best
      lastStamp = this.touched[best]
    }
    return count
  }
}
