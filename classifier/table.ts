// An exact-match hash table over fixed-width keys of 32-bit words: open
// addressing with linear probing in typed arrays, and backward-shift deletion
// (no tombstones, so lookups stay short after churn). It maps a key to an
// int32 value; callers keep per-entry records in their own typed arrays
// indexed by that value, which never moves when slots do.
//
// Trade-off: capacity is fixed at construction (a power of two, load kept at
// or below 1/2 by `maxEntries`); growing would mean rehashing on the data
// path, so a full table refuses inserts and the caller counts it.

/** Hashes `width` words starting at `off`: a multiply-xor per word and a murmur3-style finalizer; no allocation. */
export function hashWords(words: Uint32Array, off: number, width: number): number {
  let h = 0x9e3779b9 ^ width
  for (let i = 0; i < width; i++) {
    h = Math.imul(h ^ words[off + i], 0x85ebca6b)
    h ^= h >>> 15
  }
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d)
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b)
  return (h ^ (h >>> 16)) >>> 0
}

export class ExactTable {
  readonly width: number
  readonly capacity: number
  readonly maxEntries: number
  private readonly mask: number
  /**
   * One slot is `stride` words, [value + 1 (0 = empty), hash, key...], so a
   * probe touches one place in memory (one or two cache lines) instead of
   * separate used/hash/key/value arrays.
   */
  private readonly slots: Uint32Array
  private readonly stride: number
  private count = 0

  constructor(width: number, maxEntries: number) {
    let capacity = 16
    while (capacity < maxEntries * 2) capacity *= 2
    this.width = width
    this.capacity = capacity
    this.maxEntries = maxEntries
    this.mask = capacity - 1
    this.stride = width + 2
    this.slots = new Uint32Array(capacity * this.stride)
  }

  get size(): number {
    return this.count
  }

  /** The value stored for the key at `key[off..off+width)`, or -1. */
  get(key: Uint32Array, off: number): number {
    const slot = this.find(key, off, hashWords(key, off, this.width))
    return slot < 0 ? -1 : this.slots[slot * this.stride] - 1
  }

  /** Like get, with the key's hashWords value already computed (batch lookups hash first, probe later). */
  getHashed(key: Uint32Array, off: number, hash: number): number {
    const slot = this.find(key, off, hash)
    return slot < 0 ? -1 : this.slots[slot * this.stride] - 1
  }

  /**
   * Reads the first word of the key's home slot and returns it. Batch
   * lookups call this for every key of a batch before probing any: the reads
   * are independent, so their cache misses overlap instead of queueing one
   * after another (a software prefetch; JavaScript has no prefetch hint).
   */
  touch(hash: number): number {
    return this.slots[(hash & this.mask) * this.stride]
  }

  private find(key: Uint32Array, off: number, hash: number): number {
    const width = this.width
    const stride = this.stride
    const slots = this.slots
    let slot = hash & this.mask
    for (;;) {
      const base = slot * stride
      if (slots[base] === 0) return -1
      if (slots[base + 1] === hash) {
        let i = 0
        while (i < width && slots[base + 2 + i] === key[off + i]) i++
        if (i === width) return slot
      }
      slot = (slot + 1) & this.mask
    }
  }

  /**
   * Inserts or replaces (values 0 .. 2^32 - 2). Returns the previous value
   * (or -1 when new), or -2 when the table is full and the key was not present.
   */
  set(key: Uint32Array, off: number, value: number): number {
    const hash = hashWords(key, off, this.width)
    const existing = this.find(key, off, hash)
    const stride = this.stride
    if (existing >= 0) {
      const previous = this.slots[existing * stride] - 1
      this.slots[existing * stride] = value + 1
      return previous
    }
    if (this.count >= this.maxEntries) return -2
    let slot = hash & this.mask
    while (this.slots[slot * stride] !== 0) slot = (slot + 1) & this.mask
    const base = slot * stride
    this.slots[base] = value + 1
    this.slots[base + 1] = hash
    for (let i = 0; i < this.width; i++) this.slots[base + 2 + i] = key[off + i]
    this.count++
    return -1
  }

  /** Removes the key; returns its value or -1 when absent. */
  delete(key: Uint32Array, off: number): number {
    let slot = this.find(key, off, hashWords(key, off, this.width))
    if (slot < 0) return -1
    const stride = this.stride
    const slots = this.slots
    const value = slots[slot * stride] - 1
    // Backward-shift deletion (Knuth 6.4 algorithm R): move later entries of
    // the probe run into the hole when their home slot allows it.
    let next = (slot + 1) & this.mask
    while (slots[next * stride] !== 0) {
      const home = slots[next * stride + 1] & this.mask
      const distanceNext = (next - home) & this.mask
      const distanceHole = (slot - home) & this.mask
      if (distanceHole <= distanceNext) {
        slots.copyWithin(slot * stride, next * stride, next * stride + stride)
        slot = next
      }
      next = (next + 1) & this.mask
    }
    slots[slot * stride] = 0
    this.count--
    return value
  }

  clear(): void {
    this.slots.fill(0)
    this.count = 0
  }

  /** Calls fn(words, off, value) for every entry (the key is words[off..off+width)); do not mutate the table inside fn. */
  forEach(fn: (keys: Uint32Array, off: number, value: number) => void): void {
    const stride = this.stride
    for (let slot = 0; slot < this.capacity; slot++) {
      const base = slot * stride
      if (this.slots[base] !== 0) fn(this.slots, base + 2, this.slots[base] - 1)
    }
  }
}
