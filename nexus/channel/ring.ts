// A single-producer single-consumer descriptor ring over a region of a
// SharedArrayBuffer (layout in layout.ts). The same object type is used by
// the producer thread and by the consumer thread, each on its own attachment;
// the producer-local and consumer-local fields never mix.
//
// Ordering: descriptors are plain (non-atomic) stores; the producer publishes
// them with Atomics.store(head) and the consumer reads head with Atomics.load,
// which in the JS memory model makes the descriptor writes happen-before the
// consumer's reads. The consumer frees slots the same way with tail. Native
// code must use release stores / acquire loads (or stronger) on head and tail.
//
// Doorbell protocol (no lost wake-up)
// -----------------------------------
// Consumer, finding the ring empty:
//   1. store WAITERS = 1              ("I am going to sleep")
//   2. seq = load SEQUENCE
//   3. re-check head != tail; if work appeared: store WAITERS = 0, return
//   4. wait on SEQUENCE while it still equals seq  (Atomics.waitAsync / futex)
// Producer, after publishing head:
//   5. if exchange(WAITERS, 0) != 0: add(SEQUENCE, 1); notify(SEQUENCE)
//
// Race closed: the consumer checks "empty" and then sleeps; a producer that
// publishes between the check and the sleep must not be missed. Steps 1/3 and
// the head store/step 5 are sequentially consistent (Dekker's pattern): either
// the producer's load of WAITERS sees 1 (and it rings), or the consumer's
// re-check at 3 sees the new head (and it does not sleep). A ring that lands
// between 2 and 4 changed SEQUENCE, so the wait at 4 returns at once
// ("not-equal"). A busy ring never has WAITERS set, so it costs no notify.
// Native code needs seq_cst (__ATOMIC_SEQ_CST) on steps 1, 3 and on the
// head store / WAITERS exchange, not just release/acquire.
//
// Native peers: Atomics.notify only wakes waiters in V8's own waiter list; a
// futex(FUTEX_WAKE) from C++ on the same address does not wake a JS
// Atomics.waitAsync, nor does Atomics.notify wake a C++ futex sleeper. So the
// ring accepts a `notifier` hook that replaces Atomics.notify at step 5 (a JS
// producer facing a native consumer calls into the addon to futex-wake it), and
// the JS sleeper can be woken by `wake()` (a native producer facing a JS
// consumer bumps SEQUENCE and signals JS through a threadsafe function, whose
// callback calls wake()). The word protocol is identical in both cases.
import {
  D_AUX,
  D_BUFFER_INDEX,
  D_FLAGS,
  D_LENGTH,
  DESCRIPTOR_WORDS,
  RING_CONTROL_BYTES,
  RING_HEAD,
  RING_SEQUENCE,
  RING_TAIL,
  RING_WAITERS,
  ringBytes,
} from './layout.js'
import { FlowstackError } from '../../common/errors.js'

/** Longest a timer may wait (2^31 - 1 ms); the keep-alive is re-armed by the caller's loop. */
const KEEP_ALIVE_MS = 0x7fffffff

export type DescriptorVisitor = (bufferIndex: number, length: number, flags: number, aux: number) => void

export interface SpscRingOptions {
  /** Called instead of Atomics.notify when the doorbell rings (native consumers). */
  notifier?: () => void
}

export class SpscRing {
  readonly capacity: number
  readonly byteOffset: number
  private readonly mask: number
  private readonly words: Int32Array
  private readonly headWord: number
  private readonly tailWord: number
  private readonly waitersWord: number
  private readonly sequenceWord: number
  private readonly descWord: number
  private readonly notifier: (() => void) | undefined

  // Producer-local: next slot to write, and the last tail we saw (saves a
  // shared load per push while there is room).
  private producerHead = 0
  private cachedTail = 0
  // Consumer-local: next slot to read, and the last head we saw.
  private consumerTail = 0
  private committedTail = 0
  private cachedHead = 0

  /** Times this ring rang its doorbell (producer side). */
  doorbellsRung = 0
  /** Times the consumer slept and was woken (consumer side). */
  wakeups = 0

  private wakeResolve: (() => void) | null = null
  /**
   * The other side's object for this same ring when both sides are attached
   * in this thread (ChannelEnd pairs them): its doorbell is then a direct
   * call and the consumer sleeps on a plain promise, with no V8 waiter, no
   * posted task and no event-loop turn per wake-up.
   */
  private localPeer: SpscRing | null = null
  /**
   * Whether a consumer sleeping on this ring keeps its thread alive (the
   * default: a worker that only waits for packets must not exit). An owner
   * with its own notion of "in use", like a stack whose sockets hold refs,
   * turns it off so an idle stack lets the process end, as node:net does.
   */
  keepsThreadAlive = true

  constructor(sab: SharedArrayBuffer, byteOffset: number, capacity: number, options: SpscRingOptions = {}) {
    if (!Number.isInteger(capacity) || capacity < 1 || (capacity & (capacity - 1)) !== 0) {
      throw new FlowstackError('CHANNEL_BAD_LAYOUT', `ring capacity ${capacity} is not a power of two`)
    }
    if (byteOffset % 64 !== 0 || byteOffset < 0 || byteOffset + ringBytes(capacity) > sab.byteLength) {
      throw new FlowstackError('CHANNEL_BAD_LAYOUT', `ring at ${byteOffset} (capacity ${capacity}) does not fit a ${sab.byteLength}-byte buffer`)
    }
    this.capacity = capacity
    this.byteOffset = byteOffset
    this.mask = capacity - 1
    this.words = new Int32Array(sab, byteOffset, ringBytes(capacity) / 4)
    this.headWord = RING_HEAD / 4
    this.tailWord = RING_TAIL / 4
    this.waitersWord = RING_WAITERS / 4
    this.sequenceWord = RING_SEQUENCE / 4
    this.descWord = RING_CONTROL_BYTES / 4
    this.notifier = options.notifier
    // Pick up where the shared counters are (a ring may be attached after use).
    const head = Atomics.load(this.words, this.headWord) >>> 0
    const tail = Atomics.load(this.words, this.tailWord) >>> 0
    this.producerHead = head
    this.cachedTail = tail
    this.consumerTail = tail
    this.committedTail = tail
    this.cachedHead = head
  }

  /** Bytes a ring of this capacity occupies. */
  static bytes(capacity: number): number {
    return ringBytes(capacity)
  }

  /** Zeroes a ring's control block (fresh channel). */
  static initialize(sab: SharedArrayBuffer, byteOffset: number): void {
    new Int32Array(sab, byteOffset, RING_CONTROL_BYTES / 4).fill(0)
  }

  // ---------------------------------------------------------------- producer

  /** Free slots the producer can fill now (one shared load; call per batch, not per packet). */
  freeSlots(): number {
    this.cachedTail = Atomics.load(this.words, this.tailWord) >>> 0
    const free = this.capacity - ((this.producerHead - this.cachedTail) >>> 0)
    // A garbage tail from a broken peer could make this exceed capacity or go
    // negative; clamp so the producer never writes over unconsumed slots.
    return free < 0 ? 0 : free > this.capacity ? 0 : free
  }

  /** Writes one descriptor into the next slot, unpublished. False when full. */
  push(bufferIndex: number, length: number, flags: number, aux: number): boolean {
    if ((this.producerHead - this.cachedTail) >>> 0 >= this.capacity) {
      this.cachedTail = Atomics.load(this.words, this.tailWord) >>> 0
      const used = (this.producerHead - this.cachedTail) >>> 0
      if (used >= this.capacity) return false
    }
    const at = this.descWord + (this.producerHead & this.mask) * DESCRIPTOR_WORDS
    const w = this.words
    w[at + D_BUFFER_INDEX] = bufferIndex
    w[at + D_LENGTH] = length
    w[at + D_FLAGS] = flags
    w[at + D_AUX] = aux
    this.producerHead = (this.producerHead + 1) >>> 0
    return true
  }

  /** Descriptors pushed but not yet published. */
  unpublished(): number {
    return (this.producerHead - (Atomics.load(this.words, this.headWord) >>> 0)) >>> 0
  }

  /**
   * Publishes every pushed descriptor and rings the doorbell if the consumer
   * announced it sleeps (step 5 of the protocol). Returns true if it rang.
   */
  publish(): boolean {
    const published = Atomics.load(this.words, this.headWord) >>> 0
    if (published === this.producerHead) return false
    Atomics.store(this.words, this.headWord, this.producerHead | 0)
    if (Atomics.load(this.words, this.waitersWord) === 0) return false
    if (Atomics.exchange(this.words, this.waitersWord, 0) === 0) return false
    this.ring()
    return true
  }

  /** Rings the doorbell unconditionally (close, shutdown). */
  ring(): void {
    Atomics.add(this.words, this.sequenceWord, 1)
    this.doorbellsRung++
    if (this.notifier !== undefined) this.notifier()
    else if (this.localPeer !== null) this.localPeer.wakeNextTurn()
    else Atomics.notify(this.words, this.sequenceWord)
  }

  /**
   * Pairs the two objects of one ring when its producer and its consumer are
   * both in this thread. Only for the two sides of one channel, each attached
   * once (H_ATTACHED): a third party sharing the words would never be woken.
   */
  static pairLocal(a: SpscRing, b: SpscRing): void {
    if (a.words.buffer !== b.words.buffer || a.byteOffset !== b.byteOffset || a === b) {
      throw new FlowstackError('CHANNEL_BAD_LAYOUT', 'only the two ends of one ring pair up')
    }
    a.localPeer = b
    b.localPeer = a
  }

  /**
   * Producer side, once the consumer closed for good: takes back every
   * descriptor pushed and never consumed (oldest first) and moves the shared
   * tail past them. Safe only then: a closed consumer never touches the ring
   * again, so the producer is its only user. Returns how many (0 if the
   * shared counters are corrupt).
   */
  takeBackUnconsumed(visit: (bufferIndex: number) => void): number {
    const tail = Atomics.load(this.words, this.tailWord) >>> 0
    const end = this.producerHead
    const n = (end - tail) >>> 0
    if (n > this.capacity) return 0
    for (let k = 0; k < n; k++) visit(this.words[this.descWord + ((tail + k) & this.mask) * DESCRIPTOR_WORDS + D_BUFFER_INDEX] >>> 0)
    Atomics.store(this.words, this.headWord, end | 0)
    Atomics.store(this.words, this.tailWord, end | 0)
    this.cachedTail = end
    return n
  }

  // ---------------------------------------------------------------- consumer

  /**
   * Descriptors published and not yet consumed, as seen by the consumer; -1
   * when head - tail exceeds the capacity (a corrupt producer counter).
   */
  available(): number {
    this.cachedHead = Atomics.load(this.words, this.headWord) >>> 0
    const n = (this.cachedHead - this.consumerTail) >>> 0
    return n > this.capacity ? -1 : n
  }

  /** Descriptor `k` positions past the consumer's tail (k < available()). */
  bufferIndexAt(k: number): number {
    return this.words[this.descWord + ((this.consumerTail + k) & this.mask) * DESCRIPTOR_WORDS + D_BUFFER_INDEX] >>> 0
  }
  lengthAt(k: number): number {
    return this.words[this.descWord + ((this.consumerTail + k) & this.mask) * DESCRIPTOR_WORDS + D_LENGTH] >>> 0
  }
  flagsAt(k: number): number {
    return this.words[this.descWord + ((this.consumerTail + k) & this.mask) * DESCRIPTOR_WORDS + D_FLAGS] >>> 0
  }
  auxAt(k: number): number {
    return this.words[this.descWord + ((this.consumerTail + k) & this.mask) * DESCRIPTOR_WORDS + D_AUX] >>> 0
  }

  /** Marks `n` descriptors consumed (locally; commit() publishes the tail). */
  advance(n: number): void {
    this.consumerTail = (this.consumerTail + n) >>> 0
  }

  /** Publishes the consumer's tail, freeing the consumed slots for the producer. */
  commit(): void {
    if (this.consumerTail === this.committedTail) return
    this.committedTail = this.consumerTail
    Atomics.store(this.words, this.tailWord, this.consumerTail | 0)
  }

  /**
   * Consumes up to `max` descriptors, calling `visit` for each, and commits the
   * tail. Returns the number consumed (0 when empty or when the producer's
   * counter is corrupt: check available() for -1).
   */
  pop(max: number, visit: DescriptorVisitor): number {
    const avail = this.available()
    if (avail <= 0) {
      this.commit()
      return 0
    }
    const n = max >= avail ? avail : max > 0 ? Math.floor(max) : 0
    let k = 0
    try {
      for (; k < n; k++) visit(this.bufferIndexAt(k), this.lengthAt(k), this.flagsAt(k), this.auxAt(k))
    } finally {
      // A visitor that throws still consumed the descriptors before it.
      this.advance(k < n ? k + 1 : n)
      this.commit()
    }
    return n
  }

  // ---------------------------------------------------------------- doorbell

  /**
   * Resolves when the ring has work (at once if it has), when the doorbell
   * rings, when wake() is called, or after `timeoutMs`. May resolve
   * spuriously; callers re-check.
   */
  waitForWork(timeoutMs?: number, extraCondition?: () => boolean, spinPolls = 0): Promise<void> {
    if (this.available() !== 0 || (extraCondition !== undefined && extraCondition())) return Promise.resolve()
    // Optional short spin: a wake-up through the doorbell costs microseconds
    // (DESIGN.md: ~7 us vs ~0.25 us for a spinning hand-off), so a consumer
    // expecting more work soon may poll a little first. Trades CPU time on a
    // shared core for latency; 0 (the default) never spins.
    for (let i = 0; i < spinPolls; i++) {
      if (Atomics.load(this.words, this.headWord) >>> 0 !== this.consumerTail) return Promise.resolve()
    }
    const w = this.words
    Atomics.store(w, this.waitersWord, 1) // step 1
    const seq = Atomics.load(w, this.sequenceWord) // step 2
    if (this.available() !== 0 || (extraCondition !== undefined && extraCondition())) {
      Atomics.store(w, this.waitersWord, 0) // step 3
      return Promise.resolve()
    }
    if (this.localPeer !== null) return this.sleepLocally(timeoutMs)
    const result = Atomics.waitAsync(w, this.sequenceWord, seq, timeoutMs) // step 4
    if (!result.async) {
      Atomics.store(w, this.waitersWord, 0)
      return Promise.resolve()
    }
    return new Promise<void>((resolve) => {
      let done = false
      let waiterSettled = false
      // A pending Atomics.waitAsync does not keep Node's event loop alive, so
      // a worker whose only job is to wait for packets would exit. A ref'd
      // timer does (like an open socket: close() or wake() releases it), and
      // doubles as the timeout.
      const keepAlive = setTimeout(() => finish(), timeoutMs ?? KEEP_ALIVE_MS)
      if (!this.keepsThreadAlive) keepAlive.unref()
      const finish = (): void => {
        if (done) return
        done = true
        clearTimeout(keepAlive)
        this.wakeResolve = null
        Atomics.store(w, this.waitersWord, 0)
        // Woken by wake() or the timer: V8 still holds our waiter, and a
        // native peer never calls Atomics.notify, so one would pile up per
        // sleep. Only this ring's consumer (us) waits on this word, so
        // notifying it cancels exactly our own stale waiter.
        if (!waiterSettled) Atomics.notify(w, this.sequenceWord)
        this.wakeups++
        resolve()
      }
      this.wakeResolve = finish
      void result.value.then(() => {
        waiterSettled = true
        finish()
      })
    })
  }

  private wakeScheduled = false
  private readonly wakeNow = (): void => {
    this.wakeScheduled = false
    this.wake()
  }

  /**
   * A local producer's doorbell: wakes the consumer on the event loop's next
   * check phase, not in the producer's microtask queue, so that what one
   * side sends reaches the other in a later macrotask, as kernel I/O does
   * (code awaiting a connect may attach its listeners before the reply).
   * Still no syscall, no V8 task and no epoll wake-up.
   */
  private wakeNextTurn(): void {
    if (this.wakeScheduled) return
    this.wakeScheduled = true
    setImmediate(this.wakeNow)
  }

  /** Step 4 when the producer is in this thread: its ring() wakes us (wakeNextTurn). */
  private sleepLocally(timeoutMs: number | undefined): Promise<void> {
    return new Promise<void>((resolve) => {
      let done = false
      // Ref'd like the waitAsync path's timer: a sleeping consumer keeps the
      // thread alive until it is woken, closed or times out.
      const keepAlive = setTimeout(() => finish(), timeoutMs ?? KEEP_ALIVE_MS)
      if (!this.keepsThreadAlive) keepAlive.unref()
      const finish = (): void => {
        if (done) return
        done = true
        clearTimeout(keepAlive)
        this.wakeResolve = null
        Atomics.store(this.words, this.waitersWord, 0)
        this.wakeups++
        resolve()
      }
      this.wakeResolve = finish
    })
  }

  /**
   * Wakes a pending waitForWork from this thread: the hook a native producer's
   * threadsafe-function callback calls. The V8 waiter left behind by an
   * abandoned waitAsync resolves on the next ring or timeout and is harmless.
   */
  wake(): void {
    const resolve = this.wakeResolve
    if (resolve !== null) resolve()
  }

  /** True while the consumer has announced it sleeps (for tests and stats). */
  consumerSleeping(): boolean {
    return Atomics.load(this.words, this.waitersWord) !== 0
  }

  /** Shared head and tail as the peers last published them. */
  counters(): { head: number; tail: number } {
    return { head: Atomics.load(this.words, this.headWord) >>> 0, tail: Atomics.load(this.words, this.tailWord) >>> 0 }
  }
}
