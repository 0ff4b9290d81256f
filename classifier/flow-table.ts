// The classifier's exact-match flow table: open addressing with linear
// probing and backward-shift deletion, like ExactTable, but one slot is one
// 64-byte cache line holding the flow key AND the fields a packet of an
// established flow reads and writes (owner, rule, packets, bytes, last seen).
// With 100 000 flows the table is far larger than the caches and a packet's
// lookup is a cache miss; keeping the record in the slot makes a hit cost one
// line instead of a slot plus a record elsewhere. Fields no packet touches
// (the flow's kind, counter carries) live in the caller's side arrays indexed
// by the record id stored in the slot, which never changes when slots move.
//
// Slot layout (FLOW_SLOT_WORDS 32-bit words), mirrored by
// nexus/native/flow_table.cc:
//   [0]      record id + 1 (0 = empty)
//   [1..10]  flow key (key.ts)
//   [11]     owner (int32)
//   [12]     rule global id (int32, -1 none)
//   [13]     packets, low 32 bits (the caller carries overflow)
//   [14]     bytes, low 32 bits
//   [15]     last seen, whole milliseconds modulo 2^32
//
// No hash is stored: a probe compares the ports word and the first remote
// address word first (they differ first between flows), and deletion
// recomputes the home slot from the key. Capacity is fixed (a power of two,
// load at most 1/2); a full table refuses inserts and the caller counts it.
import { KEY_WORDS, W_PORTS, W_REMOTE } from './key.js'
import { hashWords } from './table.js'

export const FLOW_SLOT_WORDS = 16
export const FS_RECORD = 0
export const FS_KEY = 1
export const FS_OWNER = 11
export const FS_RULE = 12
export const FS_PACKETS = 13
export const FS_BYTES = 14
export const FS_LAST_SEEN = 15

const SLOT_BYTES = FLOW_SLOT_WORDS * 4

/** Where a FlowTable's memory came from. */
export type FlowTableMemory = 'hugepage' | 'aligned' | 'heap'

/**
 * Memory for `bytes` of slots, 64-byte aligned when it can be: from the
 * addon (2 MiB aligned, huge pages advised), else a WebAssembly.Memory
 * (V8 maps those page-aligned; a plain ArrayBuffer large enough to be
 * malloc'd by mmap starts 16 bytes into its page, so every slot would span
 * two cache lines), else a plain ArrayBuffer.
 * Huge pages trade resident memory for fewer TLB misses: a sparse table is
 * resident in 2 MiB units, so with a few flows spread over the table its RSS
 * approaches the whole table (32 MiB at the default 262 144 flows).
 */
function allocateSlots(bytes: number, hugeAlloc: ((bytes: number) => ArrayBuffer) | undefined): { buffer: ArrayBuffer; memory: FlowTableMemory } {
  if (hugeAlloc !== undefined) {
    try {
      return { buffer: hugeAlloc(bytes), memory: 'hugepage' }
    } catch {
      // mmap refused (address space limits): fall through to V8's memory.
    }
  }
  const WASM_PAGE = 65536
  try {
    // The global exists in Node; this project's type libraries do not declare it as a value.
    const wasm = (globalThis as unknown as { WebAssembly: { Memory: new (descriptor: { initial: number; maximum: number }) => { buffer: ArrayBuffer } } }).WebAssembly
    const memory = new wasm.Memory({ initial: Math.ceil(bytes / WASM_PAGE), maximum: Math.ceil(bytes / WASM_PAGE) })
    return { buffer: memory.buffer, memory: 'aligned' }
  } catch {
    // WebAssembly disabled (--jitless) or out of address space.
    return { buffer: new ArrayBuffer(bytes), memory: 'heap' }
  }
}

export class FlowTable {
  readonly capacity: number
  readonly maxEntries: number
  readonly mask: number
  /** The slots (see the layout above); the native fast path probes the same memory. */
  readonly slots: Uint32Array
  /** The same memory read as signed words (owner, rule). */
  readonly signedSlots: Int32Array
  readonly memory: FlowTableMemory
  private count = 0

  /** `hugeAlloc`: the addon's allocHugeBuffer, when it is loaded. */
  constructor(maxEntries: number, hugeAlloc?: (bytes: number) => ArrayBuffer) {
    let capacity = 16
    while (capacity < maxEntries * 2) capacity *= 2
    this.capacity = capacity
    this.maxEntries = maxEntries
    this.mask = capacity - 1
    const { buffer, memory } = allocateSlots(capacity * SLOT_BYTES, hugeAlloc)
    this.memory = memory
    this.slots = new Uint32Array(buffer, 0, capacity * FLOW_SLOT_WORDS)
    this.signedSlots = new Int32Array(buffer, 0, capacity * FLOW_SLOT_WORDS)
  }

  get size(): number {
    return this.count
  }

  /** The slot holding the key at `key[off..off+KEY_WORDS)`, or -1. */
  find(key: Uint32Array, off: number): number {
    return this.findHashed(key, off, hashWords(key, off, KEY_WORDS))
  }

  /** Like find, with the key's hashWords value already computed. */
  findHashed(key: Uint32Array, off: number, hash: number): number {
    const slots = this.slots
    const mask = this.mask
    const ports = key[off + W_PORTS]
    const remote = key[off + W_REMOTE]
    let slot = hash & mask
    for (;;) {
      const base = slot * FLOW_SLOT_WORDS
      if (slots[base] === 0) return -1
      if (slots[base + FS_KEY + W_PORTS] === ports && slots[base + FS_KEY + W_REMOTE] === remote) {
        let i = 0
        while (i < KEY_WORDS && slots[base + FS_KEY + i] === key[off + i]) i++
        if (i === KEY_WORDS) return slot
      }
      slot = (slot + 1) & mask
    }
  }

  /** Reads the key's home slot (a prefetch for batch lookups in TypeScript). */
  touch(hash: number): number {
    return this.slots[(hash & this.mask) * FLOW_SLOT_WORDS]
  }

  /** The record id in a slot found by find. */
  record(slot: number): number {
    return this.slots[slot * FLOW_SLOT_WORDS + FS_RECORD] - 1
  }

  /**
   * Inserts a key that is not in the table with record id `record`; the hot
   * fields start at zero. Returns its slot, or -1 when the table is full.
   */
  insert(key: Uint32Array, off: number, record: number): number {
    if (this.count >= this.maxEntries) return -1
    const slots = this.slots
    const mask = this.mask
    let slot = hashWords(key, off, KEY_WORDS) & mask
    while (slots[slot * FLOW_SLOT_WORDS] !== 0) slot = (slot + 1) & mask
    const base = slot * FLOW_SLOT_WORDS
    slots[base + FS_RECORD] = record + 1
    for (let i = 0; i < KEY_WORDS; i++) slots[base + FS_KEY + i] = key[off + i]
    for (let w = FS_OWNER; w < FLOW_SLOT_WORDS; w++) slots[base + w] = 0
    this.count++
    return slot
  }

  /**
   * Removes the entry in `slot` (from find) and returns its record id. Later
   * entries of the probe run move back into the hole (Knuth 6.4 algorithm R),
   * hot fields and all, so any slot index held across a removal is stale.
   */
  removeSlot(slot: number): number {
    const slots = this.slots
    const mask = this.mask
    const record = slots[slot * FLOW_SLOT_WORDS] - 1
    let hole = slot
    let next = (slot + 1) & mask
    while (slots[next * FLOW_SLOT_WORDS] !== 0) {
      const home = hashWords(slots, next * FLOW_SLOT_WORDS + FS_KEY, KEY_WORDS) & mask
      if (((hole - home) & mask) <= ((next - home) & mask)) {
        slots.copyWithin(hole * FLOW_SLOT_WORDS, next * FLOW_SLOT_WORDS, next * FLOW_SLOT_WORDS + FLOW_SLOT_WORDS)
        hole = next
      }
      next = (next + 1) & mask
    }
    slots[hole * FLOW_SLOT_WORDS] = 0
    this.count--
    return record
  }

  /** Removes the key; returns its record id or -1 when absent. */
  delete(key: Uint32Array, off: number): number {
    const slot = this.find(key, off)
    return slot < 0 ? -1 : this.removeSlot(slot)
  }

  /** Calls fn(slot, base) for every occupied slot, where base = slot * FLOW_SLOT_WORDS; do not mutate the table inside fn. */
  forEach(fn: (slot: number, base: number) => void): void {
    const slots = this.slots
    for (let slot = 0; slot < this.capacity; slot++) {
      const base = slot * FLOW_SLOT_WORDS
      if (slots[base] !== 0) fn(slot, base)
    }
  }
}
