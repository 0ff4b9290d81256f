// The learning switch's MAC address table (IEEE 802.1D filtering database,
// reduced to what a virtual switch needs): source addresses are learned per
// port, entries not refreshed within `agingMs` expire (802.1D's default
// ageing time is 300 s), and the table has a fixed capacity — when it is full
// new addresses are not learned and their frames are flooded, which is what
// hardware switches do rather than evicting live entries.
//
// Time is injected (`now` arguments), so aging is tested on a virtual clock.
// A MAC is held as a 48-bit integer in a JS number; refreshing a known
// address allocates nothing.

export interface MacTableEntry {
  mac: string
  port: number
  lastSeen: number
}

export const NO_PORT = -1

/** The 48-bit address at bytes[offset..offset+6) as an integer (exact in a double). */
export function macKey(bytes: Uint8Array, offset: number): number {
  return (
    (bytes[offset] * 0x10000 + (bytes[offset + 1] << 8) + bytes[offset + 2]) * 0x1000000 +
    ((bytes[offset + 3] << 16) | (bytes[offset + 4] << 8) | bytes[offset + 5])
  )
}

/** "02:00:00:00:00:01" for a macKey. */
export function formatMacKey(key: number): string {
  const parts: string[] = []
  let rest = key
  for (let i = 0; i < 6; i++) {
    parts.unshift((rest % 256).toString(16).padStart(2, '0'))
    rest = Math.floor(rest / 256)
  }
  return parts.join(':')
}

/** I/G bit (first byte, bit 0): group (broadcast or multicast) addresses are never learned and always flooded. */
export function isGroupAddress(bytes: Uint8Array, offset: number): boolean {
  return (bytes[offset] & 1) !== 0
}

export interface MacTableCounters {
  learned: number
  moved: number
  aged: number
  /** New addresses not learned because the table was full. */
  tableFull: number
}

export class MacTable {
  readonly capacity: number
  readonly agingMs: number
  private readonly slotOf = new Map<number, number>()
  private readonly keys: Float64Array
  private readonly ports: Int32Array
  private readonly lastSeen: Float64Array
  private readonly freeSlots: Int32Array
  private freeTop: number
  private nextSweep = -Infinity
  readonly counters: MacTableCounters = { learned: 0, moved: 0, aged: 0, tableFull: 0 }

  constructor(capacity = 4096, agingMs = 300_000) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`MAC table capacity ${capacity} must be a positive integer`)
    if (!(agingMs > 0)) throw new RangeError(`MAC aging time ${agingMs} must be positive`)
    this.capacity = capacity
    this.agingMs = agingMs
    this.keys = new Float64Array(capacity)
    this.ports = new Int32Array(capacity)
    this.lastSeen = new Float64Array(capacity)
    this.freeSlots = new Int32Array(capacity)
    for (let i = 0; i < capacity; i++) this.freeSlots[i] = capacity - 1 - i
    this.freeTop = capacity
  }

  get size(): number {
    return this.slotOf.size
  }

  /** Records that `key` was seen as a source on `port` at `now`. */
  learn(key: number, port: number, now: number): void {
    const slot = this.slotOf.get(key)
    if (slot !== undefined) {
      if (this.ports[slot] !== port) {
        // The station moved (or a loop / spoofer): the latest port wins, like 802.1D.
        this.ports[slot] = port
        this.counters.moved++
      }
      this.lastSeen[slot] = now
      return
    }
    if (this.freeTop === 0) {
      this.sweep(now)
      if (this.freeTop === 0) {
        this.counters.tableFull++
        return
      }
    }
    const fresh = this.freeSlots[--this.freeTop]
    this.keys[fresh] = key
    this.ports[fresh] = port
    this.lastSeen[fresh] = now
    this.slotOf.set(key, fresh)
    this.counters.learned++
  }

  /** The port `key` was learned on, or NO_PORT when unknown or aged out. */
  lookup(key: number, now: number): number {
    const slot = this.slotOf.get(key)
    if (slot === undefined) return NO_PORT
    if (now - this.lastSeen[slot] > this.agingMs) {
      this.remove(key, slot)
      this.counters.aged++
      return NO_PORT
    }
    return this.ports[slot]
  }

  /**
   * Drops entries older than the aging time. Cheap to call once per batch:
   * it scans at most every agingMs / 4.
   */
  maybeSweep(now: number): void {
    if (now >= this.nextSweep) this.sweep(now)
  }

  sweep(now: number): void {
    this.nextSweep = now + this.agingMs / 4
    for (const [key, slot] of this.slotOf) {
      if (now - this.lastSeen[slot] > this.agingMs) {
        this.remove(key, slot)
        this.counters.aged++
      }
    }
  }

  /** Forgets every address learned on `port` (the port went away). */
  forgetPort(port: number): void {
    for (const [key, slot] of this.slotOf) if (this.ports[slot] === port) this.remove(key, slot)
  }

  entries(): MacTableEntry[] {
    const out: MacTableEntry[] = []
    for (const [key, slot] of this.slotOf) out.push({ mac: formatMacKey(key), port: this.ports[slot], lastSeen: this.lastSeen[slot] })
    return out
  }

  private remove(key: number, slot: number): void {
    this.slotOf.delete(key)
    this.freeSlots[this.freeTop++] = slot
  }
}
