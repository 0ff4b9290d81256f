// An exact-match hash table over fixed-width keys of 32-bit words: open
// addressing with linear probing in typed arrays, and backward-shift deletion
// (no tombstones, so lookups stay short after churn). It maps a key to an
// int32 value; callers keep per-entry records in their own typed arrays
// indexed by that value, which never moves when slots do.
//
// Trade-off: capacity is fixed at construction (a power of two, load kept at
// or below 1/2 by `maxEntries`); growing would mean rehashing on the data
// path, so a full table refuses inserts and the caller counts it.

/** Hashes `width` words of `words` starting at `off` (a murmur3-style mix, no allocation). */
export function hashWords(words: Uint32Array, off: number, width: number): number {
  let h = 0x811c9dc5 ^ width
  for (let i = 0; i < width; i++) {
    let k = Math.imul(words[off + i], 0xcc9e2d51)
    k = (k << 15) | (k >>> 17)
    h ^= Math.imul(k, 0x1b873593)
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

export class ExactTable {
  readonly width: number
  readonly capacity: number
  readonly maxEntries: number
  private readonly mask: number
  private readonly keys: Uint32Array
  private readonly hashes: Uint32Array
  private readonly values: Int32Array
  /** 1 when the slot holds an entry. */
  private readonly used: Uint8Array
  private count = 0

  constructor(width: number, maxEntries: number) {
    let capacity = 16
    while (capacity < maxEntries * 2) capacity *= 2
    this.width = width
    this.capacity = capacity
    this.maxEntries = maxEntries
    this.mask = capacity - 1
    this.keys = new Uint32Array(capacity * width)
    this.hashes = new Uint32Array(capacity)
    this.values = new Int32Array(capacity)
    this.used = new Uint8Array(capacity)
  }

  get size(): number {
    return this.count
  }

  /** The value stored for the key at `key[off..off+width)`, or -1. */
  get(key: Uint32Array, off: number): number {
    const slot = this.find(key, off, hashWords(key, off, this.width))
    return slot < 0 ? -1 : this.values[slot]
  }

  /** Like get, with the hash already computed (several tables can share one hash). */
  getHashed(key: Uint32Array, off: number, hash: number): number {
    const slot = this.find(key, off, hash)
    return slot < 0 ? -1 : this.values[slot]
  }

  private find(key: Uint32Array, off: number, hash: number): number {
    const width = this.width
    const keys = this.keys
    let slot = hash & this.mask
    for (;;) {
      if (this.used[slot] === 0) return -1
      if (this.hashes[slot] === hash) {
        const base = slot * width
        let i = 0
        while (i < width && keys[base + i] === key[off + i]) i++
        if (i === width) return slot
      }
      slot = (slot + 1) & this.mask
    }
  }

  /**
   * Inserts or replaces. Returns the previous value (or -1 when new), or -2
   * when the table is full and the key was not present.
   */
  set(key: Uint32Array, off: number, value: number): number {
    const hash = hashWords(key, off, this.width)
    const existing = this.find(key, off, hash)
    if (existing >= 0) {
      const previous = this.values[existing]
      this.values[existing] = value
      return previous
    }
    if (this.count >= this.maxEntries) return -2
    let slot = hash & this.mask
    while (this.used[slot] !== 0) slot = (slot + 1) & this.mask
    this.used[slot] = 1
    this.hashes[slot] = hash
    this.values[slot] = value
    this.keys.set(key.subarray(off, off + this.width), slot * this.width)
    this.count++
    return -1
  }

  /** Removes the key; returns its value or -1 when absent. */
  delete(key: Uint32Array, off: number): number {
    let slot = this.find(key, off, hashWords(key, off, this.width))
    if (slot < 0) return -1
    const value = this.values[slot]
    // Backward-shift deletion (Knuth 6.4 algorithm R): move later entries of
    // the probe run into the hole when their home slot allows it.
    const width = this.width
    let next = (slot + 1) & this.mask
    while (this.used[next] !== 0) {
      const home = this.hashes[next] & this.mask
      const distanceNext = (next - home) & this.mask
      const distanceHole = (slot - home) & this.mask
      if (distanceHole <= distanceNext) {
        this.hashes[slot] = this.hashes[next]
        this.values[slot] = this.values[next]
        this.keys.copyWithin(slot * width, next * width, next * width + width)
        slot = next
      }
      next = (next + 1) & this.mask
    }
    this.used[slot] = 0
    this.count--
    return value
  }

  clear(): void {
    this.used.fill(0)
    this.count = 0
  }

  /** Calls fn(keys, off, value) for every entry; do not mutate the table inside fn. */
  forEach(fn: (keys: Uint32Array, off: number, value: number) => void): void {
    for (let slot = 0; slot < this.capacity; slot++) {
      if (this.used[slot] !== 0) fn(this.keys, slot * this.width, this.values[slot])
    }
  }
}
