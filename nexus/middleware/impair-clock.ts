// Injected time for the impairment middleware. Middleware never calls
// setTimeout or performance.now directly, so a simulation can run the whole
// data path on a virtual clock and replay it exactly.

/** Milliseconds, monotonic, plus one-shot timers. */
export interface TimerClock {
  now(): number
  /** Calls `callback` once, no earlier than `delayMs` from now. */
  setTimer(delayMs: number, callback: () => void): TimerHandle
  clearTimer(handle: TimerHandle): void
}

export type TimerHandle = { readonly id: number }

/** The default: performance.now() and Node timers (unref'd: a pending impairment timer never keeps a process alive). */
export function realClock(): TimerClock {
  const handles = new Map<number, NodeJS.Timeout>()
  let nextId = 1
  return {
    now: () => performance.now(),
    setTimer(delayMs, callback) {
      const id = nextId++
      const timer = setTimeout(() => {
        handles.delete(id)
        callback()
      }, Math.max(0, delayMs))
      timer.unref()
      handles.set(id, timer)
      return { id }
    },
    clearTimer(handle) {
      const timer = handles.get(handle.id)
      if (timer !== undefined) {
        clearTimeout(timer)
        handles.delete(handle.id)
      }
    },
  }
}

interface PendingTimer {
  id: number
  at: number
  order: number
  callback: () => void
}

/**
 * A clock that moves only when told to. `advance(ms)` fires every timer that
 * falls due, in deadline order (ties in creation order), each seeing `now()`
 * equal to its own deadline, which is what a discrete-event simulation needs.
 */
export class VirtualClock implements TimerClock {
  private current: number
  private pending: PendingTimer[] = []
  private nextId = 1
  private nextOrder = 0

  constructor(startMs = 0) {
    this.current = startMs
  }

  now(): number {
    return this.current
  }

  setTimer(delayMs: number, callback: () => void): TimerHandle {
    const timer: PendingTimer = {
      id: this.nextId++,
      at: this.current + Math.max(0, delayMs),
      order: this.nextOrder++,
      callback,
    }
    this.pending.push(timer)
    return { id: timer.id }
  }

  clearTimer(handle: TimerHandle): void {
    const index = this.pending.findIndex((t) => t.id === handle.id)
    if (index >= 0) this.pending.splice(index, 1)
  }

  /** Number of timers not yet fired. */
  get pendingTimers(): number {
    return this.pending.length
  }

  /** Deadline of the earliest pending timer, or undefined. */
  nextDeadline(): number | undefined {
    const next = this.earliest()
    return next === undefined ? undefined : this.pending[next].at
  }

  /** Moves time forward by `ms`, firing due timers (including ones they set that also fall due). */
  advance(ms: number): void {
    this.advanceTo(this.current + ms)
  }

  advanceTo(targetMs: number): void {
    if (targetMs < this.current) throw new RangeError(`virtual clock cannot go back from ${this.current} to ${targetMs}`)
    // Bounded: a callback that keeps re-arming a zero-delay timer cannot spin forever.
    for (let fired = 0; fired < 1_000_000; fired++) {
      const next = this.earliest()
      if (next === undefined || this.pending[next].at > targetMs) break
      const timer = this.pending[next]
      this.pending.splice(next, 1)
      this.current = Math.max(this.current, timer.at)
      timer.callback()
    }
    this.current = targetMs
  }

  private earliest(): number | undefined {
    let best: number | undefined
    for (let i = 0; i < this.pending.length; i++) {
      const t = this.pending[i]
      if (best === undefined) {
        best = i
        continue
      }
      const b = this.pending[best]
      if (t.at < b.at || (t.at === b.at && t.order < b.order)) best = i
    }
    return best
  }
}
