/**
 * A binary min-heap of (deadline, item) in two parallel arrays: pushing
 * allocates nothing once the arrays have grown. Entries are never removed
 * when a deadline changes; the owner marks them stale instead (see
 * TcpLayer.reschedule) and they are skipped when they reach the top. That
 * trades a few spurious wake-ups and some memory for O(log n) updates and no
 * per-update allocation.
 */
export class TimerHeap<T> {
  private readonly times: number[] = []
  private readonly items: T[] = []

  get size(): number {
    return this.times.length
  }

  push(at: number, item: T): void {
    const times = this.times
    const items = this.items
    let i = times.length
    times.push(at)
    items.push(item)
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (times[parent] <= at) break
      times[i] = times[parent]
      items[i] = items[parent]
      i = parent
    }
    times[i] = at
    items[i] = item
  }

  peekTime(): number {
    return this.times.length > 0 ? this.times[0] : Infinity
  }

  peekItem(): T | undefined {
    return this.items[0]
  }

  pop(): void {
    const times = this.times
    const items = this.items
    const lastTime = times.pop()!
    const lastItem = items.pop()!
    const n = times.length
    if (n === 0) return
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && times[r] < times[l] ? r : l
      if (times[c] >= lastTime) break
      times[i] = times[c]
      items[i] = items[c]
      i = c
    }
    times[i] = lastTime
    items[i] = lastItem
  }

  clear(): void {
    this.times.length = 0
    this.items.length = 0
  }
}
