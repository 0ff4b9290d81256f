// Packets held by the impairment shell until their departure time: a binary
// min-heap over preallocated typed arrays (no allocation per packet), ordered
// by departure time and then by insertion order, so equal departures keep
// FIFO order.

export class DepartureQueue {
  readonly capacity: number
  private readonly departure: Float64Array
  private readonly order: Float64Array
  private readonly bufferIndex: Int32Array
  private readonly length: Int32Array
  private readonly flags: Uint32Array
  private readonly aux: Uint32Array
  private count = 0
  private nextOrder = 0

  // The entry most recently removed by pop(); read it before the next pop.
  poppedIndex = -1
  poppedLength = 0
  poppedFlags = 0
  poppedAux = 0

  constructor(capacity: number) {
    this.capacity = capacity
    this.departure = new Float64Array(capacity)
    this.order = new Float64Array(capacity)
    this.bufferIndex = new Int32Array(capacity)
    this.length = new Int32Array(capacity)
    this.flags = new Uint32Array(capacity)
    this.aux = new Uint32Array(capacity)
  }

  get size(): number {
    return this.count
  }

  /** Departure time of the earliest entry, or Infinity when empty. */
  peekDeparture(): number {
    return this.count === 0 ? Infinity : this.departure[0]
  }

  /** False when full (the caller drops and counts). */
  push(departure: number, bufferIndex: number, length: number, flags: number, aux: number): boolean {
    if (this.count === this.capacity) return false
    let i = this.count++
    const order = this.nextOrder++
    // Sift up: move parents down until the new entry's place is found.
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.keyBeforeSlot(departure, order, parent)) break
      this.move(parent, i)
      i = parent
    }
    this.departure[i] = departure
    this.order[i] = order
    this.bufferIndex[i] = bufferIndex
    this.length[i] = length
    this.flags[i] = flags
    this.aux[i] = aux
    return true
  }

  /** Removes the earliest entry into the popped* fields; false when empty. */
  pop(): boolean {
    if (this.count === 0) return false
    this.poppedIndex = this.bufferIndex[0]
    this.poppedLength = this.length[0]
    this.poppedFlags = this.flags[0]
    this.poppedAux = this.aux[0]
    const last = --this.count
    if (last === 0) return true
    const dep = this.departure[last]
    const ord = this.order[last]
    const idx = this.bufferIndex[last]
    const len = this.length[last]
    const fl = this.flags[last]
    const ax = this.aux[last]
    let i = 0
    for (;;) {
      const left = 2 * i + 1
      if (left >= last) break
      const right = left + 1
      let child = left
      if (right < last && this.lessThan(right, left)) child = right
      if (!this.slotBeforeKey(child, dep, ord)) break
      this.move(child, i)
      i = child
    }
    this.departure[i] = dep
    this.order[i] = ord
    this.bufferIndex[i] = idx
    this.length[i] = len
    this.flags[i] = fl
    this.aux[i] = ax
    return true
  }

  /** Buffer index of the i-th held entry in storage order, for draining at close. */
  heldBufferAt(i: number): number {
    return this.bufferIndex[i]
  }

  clear(): void {
    this.count = 0
  }

  private keyBeforeSlot(dep: number, ord: number, slot: number): boolean {
    return dep < this.departure[slot] || (dep === this.departure[slot] && ord < this.order[slot])
  }

  private slotBeforeKey(slot: number, dep: number, ord: number): boolean {
    return this.departure[slot] < dep || (this.departure[slot] === dep && this.order[slot] < ord)
  }

  private lessThan(a: number, b: number): boolean {
    return this.departure[a] < this.departure[b] || (this.departure[a] === this.departure[b] && this.order[a] < this.order[b])
  }

  private move(from: number, to: number): void {
    this.departure[to] = this.departure[from]
    this.order[to] = this.order[from]
    this.bufferIndex[to] = this.bufferIndex[from]
    this.length[to] = this.length[from]
    this.flags[to] = this.flags[from]
    this.aux[to] = this.aux[from]
  }
}
