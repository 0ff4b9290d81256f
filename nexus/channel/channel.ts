// A channel end: one side's view of a channel (layout.ts), with the side's
// buffer ownership, its free list, and bounds checks on everything the other
// side produces. One ChannelEnd per side per thread.
//
// Trust: every descriptor and every return from the peer is checked against
// this side's own record of who owns each buffer, so a hostile or broken peer
// can neither make us read outside the pool nor get one buffer handed out
// twice. The bytes of a buffer, however, stay writable by the peer after it
// sent them (it is shared memory): a consumer that must not be raced (the
// switch facing an instance) parses once into locals or copies first.
import { channel as diagnosticsChannel } from 'node:diagnostics_channel'
import { FlowstackError } from '../../common/errors.js'
import {
  BUFFER_ALIGN,
  CHANNEL_MAGIC,
  computeGeometry,
  CORRUPT_DOUBLE_DELIVERY,
  CORRUPT_INDEX_OUT_OF_RANGE,
  CORRUPT_LENGTH_TOO_LARGE,
  CORRUPT_NOT_OWNED_BY_SENDER,
  CORRUPT_REASON_NAMES,
  CORRUPT_RESERVED_FLAGS,
  CORRUPT_VNET_HDR_SHORT,
  CORRUPT_RING_OVERRUN,
  DEFAULT_BUFFER_COUNT,
  DEFAULT_BUFFER_SIZE,
  DEFAULT_RING_CAPACITY,
  DESC_KNOWN_FLAGS,
  DESC_VNET_HDR,
  VIRTIO_NET_HDR_BYTES,
  H_ATTACHED,
  H_BUFFER_COUNT,
  H_BUFFER_SIZE,
  H_CLOSED,
  H_CORRUPT_COUNT,
  H_ERROR,
  H_ERROR_DETAIL,
  H_HEADER_SIZE,
  H_MAGIC,
  H_POOL_OFFSET,
  H_RING_CAPACITY,
  H_RING_COUNT,
  H_RING_OFFSET0,
  H_RX_BUFFER_COUNT,
  H_TOTAL_SIZE,
  H_VERSION,
  HEADER_BYTES,
  LAYOUT_VERSION,
  MAX_BUFFER_COUNT,
  MAX_BUFFER_SIZE,
  MAX_CHANNEL_BYTES,
  MAX_RING_CAPACITY,
  RING_COUNT,
  RING_NAMES,
  RING_RX,
  RING_RX_RETURN,
  RING_TX,
  RING_TX_RETURN,
  SIDE_A,
  SIDE_B,
  type RingId,
} from './layout.js'
import { SpscRing, type DescriptorVisitor } from './ring.js'

export type ChannelSide = 'a' | 'b'

export interface CreateChannelOptions {
  /** Bytes per pool buffer, a multiple of 64 (default 2048; 65536 + headroom for GSO). */
  bufferSize?: number
  /** Number of pool buffers (default 1024). */
  bufferCount?: number
  /** Descriptors per ring, a power of two (default 1024). */
  ringCapacity?: number
  /** Fraction of the pool that starts owned by side A for rx (default 0.5). */
  rxBufferShare?: number
}

export interface CorruptDescriptorInfo {
  /** Ring the descriptor was read from. */
  ring: (typeof RING_NAMES)[number]
  /** CORRUPT_* code, also stored in the header error word of the detecting side. */
  reason: number
  reasonName: string
  bufferIndex: number
  length: number
  flags: number
}

export interface AttachOptions {
  /** Called for every corrupt descriptor the peer produced (after it is counted and skipped). */
  onCorrupt?: (info: CorruptDescriptorInfo) => void
  /**
   * Replaces Atomics.notify when this end rings a doorbell, for a peer that
   * sleeps natively (futex) and cannot be woken by Atomics.notify. Receives the
   * ring whose consumer must be woken.
   */
  notifier?: (ring: RingId) => void
  /**
   * Polls of the ring before waitForWork/waitForBuffers go to sleep on the
   * doorbell (default 0). Spinning buys latency and throughput with CPU time.
   */
  spinPolls?: number
}

export interface ChannelCounters {
  /** Descriptors queued on the outgoing packet ring. */
  sent: number
  /** Valid descriptors delivered from the incoming packet ring. */
  received: number
  /** send() calls refused because the outgoing ring was full. */
  ringFull: number
  /** alloc() calls that found no free buffer even after draining the return ring. */
  poolEmpty: number
  /** Corrupt descriptors detected (incoming and return rings), never delivered. */
  corrupt: number
  /** Doorbells this end rang for a sleeping peer. */
  doorbellsRung: number
  /** Times this end slept in waitForWork/waitForBuffers and was woken. */
  wakeups: number
}

/** This side's view of where its buffers are. */
export interface PoolAccounting {
  /** Owned and on this side's free list. */
  free: number
  /** Owned and handed to the user (alloc'ed or received, not yet sent/freed/released). */
  held: number
  /** Released but not yet published on the return ring (ring was full). */
  returnBacklog: number
  /** Owned by the peer or in flight on a ring, from this side's point of view. */
  peer: number
  total: number
}

// Ownership of each buffer as this side sees it. One byte per buffer.
const OWN_FREE = 0
const OWN_HELD = 1
/** Owned by the peer or travelling on a ring. */
const PEER = 2
/**
 * Released by us, still in our return backlog (not yet on the return ring):
 * the owner cannot have it back yet, so a descriptor naming it is refused.
 */
const IN_BACKLOG = 3

const corruptChannel = diagnosticsChannel('flowstack:channel:corrupt')

/** The first side of each channel attached in this thread (without a notifier), until its peer attaches here. */
const endsInThisThread = new WeakMap<SharedArrayBuffer, ChannelEnd>()

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0
}

/** Allocates and initialises a channel; both sides then attachChannel() it. */
export function createChannel(options: CreateChannelOptions = {}): SharedArrayBuffer {
  const bufferSize = options.bufferSize ?? DEFAULT_BUFFER_SIZE
  const bufferCount = options.bufferCount ?? DEFAULT_BUFFER_COUNT
  const ringCapacity = options.ringCapacity ?? DEFAULT_RING_CAPACITY
  const share = options.rxBufferShare ?? 0.5
  if (!Number.isInteger(bufferSize) || bufferSize < BUFFER_ALIGN || bufferSize > MAX_BUFFER_SIZE || bufferSize % BUFFER_ALIGN !== 0) {
    throw new FlowstackError('CHANNEL_BAD_OPTIONS', `bufferSize ${bufferSize} must be a multiple of ${BUFFER_ALIGN} in [${BUFFER_ALIGN}, ${MAX_BUFFER_SIZE}]`)
  }
  if (!Number.isInteger(bufferCount) || bufferCount < 1 || bufferCount > MAX_BUFFER_COUNT) {
    throw new FlowstackError('CHANNEL_BAD_OPTIONS', `bufferCount ${bufferCount} must be an integer in [1, ${MAX_BUFFER_COUNT}]`)
  }
  if (!isPowerOfTwo(ringCapacity) || ringCapacity > MAX_RING_CAPACITY) {
    throw new FlowstackError('CHANNEL_BAD_OPTIONS', `ringCapacity ${ringCapacity} must be a power of two <= ${MAX_RING_CAPACITY}`)
  }
  if (!(share >= 0 && share <= 1)) {
    throw new FlowstackError('CHANNEL_BAD_OPTIONS', `rxBufferShare ${share} must be in [0, 1]`)
  }
  const rxBufferCount = Math.round(bufferCount * share)
  const g = computeGeometry(bufferSize, bufferCount, ringCapacity, rxBufferCount)
  if (g.totalSize > MAX_CHANNEL_BYTES) {
    throw new FlowstackError('CHANNEL_BAD_OPTIONS', `a channel of ${g.totalSize} bytes exceeds ${MAX_CHANNEL_BYTES} (offsets are 31-bit header words)`)
  }
  const sab = new SharedArrayBuffer(g.totalSize)
  const h = new Int32Array(sab, 0, HEADER_BYTES / 4)
  h[H_VERSION] = LAYOUT_VERSION
  h[H_HEADER_SIZE] = HEADER_BYTES
  h[H_BUFFER_SIZE] = bufferSize
  h[H_BUFFER_COUNT] = bufferCount
  h[H_POOL_OFFSET] = g.poolOffset
  h[H_RING_COUNT] = RING_COUNT
  h[H_RING_CAPACITY] = ringCapacity
  for (let r = 0; r < RING_COUNT; r++) h[H_RING_OFFSET0 + r] = g.ringOffsets[r]
  h[H_RX_BUFFER_COUNT] = rxBufferCount
  h[H_TOTAL_SIZE] = g.totalSize
  // Magic last: a reader that sees it sees a complete header.
  Atomics.store(h, H_MAGIC, CHANNEL_MAGIC)
  return sab
}

function badLayout(message: string): FlowstackError {
  return new FlowstackError('CHANNEL_BAD_LAYOUT', message)
}

/** Validates a channel header and returns its geometry; throws CHANNEL_BAD_LAYOUT. */
export function readLayout(sab: SharedArrayBuffer): ReturnType<typeof computeGeometry> {
  if (!(sab instanceof SharedArrayBuffer)) throw badLayout('a channel is a SharedArrayBuffer')
  if (sab.byteLength < HEADER_BYTES) throw badLayout(`${sab.byteLength} bytes is shorter than the ${HEADER_BYTES}-byte header`)
  const h = new Int32Array(sab, 0, HEADER_BYTES / 4)
  const magic = Atomics.load(h, H_MAGIC) >>> 0
  if (magic !== CHANNEL_MAGIC) throw badLayout(`bad magic 0x${magic.toString(16)}`)
  if (h[H_VERSION] !== LAYOUT_VERSION) throw badLayout(`layout version ${h[H_VERSION]}, expected ${LAYOUT_VERSION}`)
  if (h[H_HEADER_SIZE] !== HEADER_BYTES) throw badLayout(`header size ${h[H_HEADER_SIZE]}, expected ${HEADER_BYTES}`)
  if (h[H_RING_COUNT] !== RING_COUNT) throw badLayout(`ring count ${h[H_RING_COUNT]}, expected ${RING_COUNT}`)
  const bufferSize = h[H_BUFFER_SIZE]
  const bufferCount = h[H_BUFFER_COUNT]
  const ringCapacity = h[H_RING_CAPACITY]
  const rxBufferCount = h[H_RX_BUFFER_COUNT]
  if (bufferSize < BUFFER_ALIGN || bufferSize > MAX_BUFFER_SIZE || bufferSize % BUFFER_ALIGN !== 0) throw badLayout(`buffer size ${bufferSize}`)
  if (bufferCount < 1 || bufferCount > MAX_BUFFER_COUNT) throw badLayout(`buffer count ${bufferCount}`)
  if (!isPowerOfTwo(ringCapacity) || ringCapacity > MAX_RING_CAPACITY) throw badLayout(`ring capacity ${ringCapacity}`)
  if (rxBufferCount < 0 || rxBufferCount > bufferCount) throw badLayout(`rx buffer count ${rxBufferCount} of ${bufferCount}`)
  // The offsets must be exactly the ones this version computes: the other
  // side (possibly C++) computes them the same way, and anything else means a
  // foreign or damaged buffer.
  const g = computeGeometry(bufferSize, bufferCount, ringCapacity, rxBufferCount)
  if (g.totalSize > MAX_CHANNEL_BYTES) throw badLayout(`a ${g.totalSize}-byte layout exceeds ${MAX_CHANNEL_BYTES} bytes`)
  for (let r = 0; r < RING_COUNT; r++) {
    if (h[H_RING_OFFSET0 + r] !== g.ringOffsets[r]) throw badLayout(`ring ${RING_NAMES[r]} at ${h[H_RING_OFFSET0 + r]}, expected ${g.ringOffsets[r]}`)
  }
  if (h[H_POOL_OFFSET] !== g.poolOffset) throw badLayout(`pool at ${h[H_POOL_OFFSET]}, expected ${g.poolOffset}`)
  if (h[H_TOTAL_SIZE] !== g.totalSize) throw badLayout(`total size ${h[H_TOTAL_SIZE]}, expected ${g.totalSize}`)
  if (sab.byteLength < g.totalSize) throw badLayout(`buffer is ${sab.byteLength} bytes, layout needs ${g.totalSize}`)
  return g
}

/** Attaches one side of a channel. Each side may be attached once. */
export function attachChannel(sab: SharedArrayBuffer, side: ChannelSide, options: AttachOptions = {}): ChannelEnd {
  return new ChannelEnd(sab, side, options)
}

export class ChannelEnd {
  readonly side: ChannelSide
  readonly bufferSize: number
  readonly bufferCount: number
  readonly ringCapacity: number
  readonly sab: SharedArrayBuffer

  private readonly header: Int32Array
  private readonly sideIndex: number
  private readonly peerIndex: number
  private readonly poolOffset: number
  private readonly views: (Uint8Array | undefined)[]
  private readonly ownership: Uint8Array
  /** Stack of free buffer indices this side owns. */
  private readonly freeList: Int32Array
  private freeTop = 0
  private heldCount = 0
  /** Released buffers waiting for room on the return ring. */
  private readonly backlog: Int32Array
  private backlogCount = 0

  /** Packets out: rx for A, tx for B. */
  private readonly outRing: SpscRing
  /** Packets in: tx for A, rx for B. */
  private readonly inRing: SpscRing
  /** Where this side gives back buffers it received: txReturn for A, rxReturn for B. */
  private readonly returnOutRing: SpscRing
  /** Where this side gets its own buffers back: rxReturn for A, txReturn for B. */
  private readonly returnInRing: SpscRing
  private readonly inRingId: RingId
  private readonly returnInRingId: RingId
  private readonly onCorrupt: ((info: CorruptDescriptorInfo) => void) | undefined
  private readonly spinPolls: number

  private sentCount = 0
  private receivedCount = 0
  private ringFullCount = 0
  private poolEmptyCount = 0
  private corruptCount = 0
  private closed = false
  /** Set when a ring's producer counter is garbage: that ring is never read again. */
  private poisoned = [false, false, false, false]

  constructor(sab: SharedArrayBuffer, side: ChannelSide, options: AttachOptions = {}) {
    if (side !== 'a' && side !== 'b') throw new FlowstackError('CHANNEL_BAD_SIDE', `side must be 'a' or 'b', got ${String(side)}`)
    const g = readLayout(sab)
    this.sab = sab
    this.side = side
    this.bufferSize = g.bufferSize
    this.bufferCount = g.bufferCount
    this.ringCapacity = g.ringCapacity
    this.poolOffset = g.poolOffset
    this.header = new Int32Array(sab, 0, HEADER_BYTES / 4)
    this.sideIndex = side === 'a' ? SIDE_A : SIDE_B
    this.peerIndex = side === 'a' ? SIDE_B : SIDE_A
    if (Atomics.compareExchange(this.header, H_ATTACHED + this.sideIndex, 0, 1) !== 0) {
      throw new FlowstackError('CHANNEL_SIDE_IN_USE', `side ${side} of this channel is already attached`)
    }
    this.onCorrupt = options.onCorrupt
    this.spinPolls = options.spinPolls ?? 0
    const notifier = options.notifier
    const ring = (id: RingId): SpscRing =>
      new SpscRing(sab, g.ringOffsets[id], g.ringCapacity, notifier === undefined ? {} : { notifier: () => notifier(id) })
    if (side === 'a') {
      this.outRing = ring(RING_RX)
      this.inRing = ring(RING_TX)
      this.returnOutRing = ring(RING_TX_RETURN)
      this.returnInRing = ring(RING_RX_RETURN)
      this.inRingId = RING_TX
      this.returnInRingId = RING_RX_RETURN
    } else {
      this.outRing = ring(RING_TX)
      this.inRing = ring(RING_RX)
      this.returnOutRing = ring(RING_RX_RETURN)
      this.returnInRing = ring(RING_TX_RETURN)
      this.inRingId = RING_RX
      this.returnInRingId = RING_TX_RETURN
    }
    if (notifier === undefined) this.pairWithLocalPeer(sab)
    this.views = new Array<Uint8Array | undefined>(g.bufferCount).fill(undefined)
    this.ownership = new Uint8Array(g.bufferCount)
    this.freeList = new Int32Array(g.bufferCount)
    this.backlog = new Int32Array(g.bufferCount)
    const mineFrom = side === 'a' ? 0 : g.rxBufferCount
    const mineTo = side === 'a' ? g.rxBufferCount : g.bufferCount
    this.ownership.fill(PEER)
    // Push in reverse so alloc() hands out the lowest index first.
    for (let i = mineTo - 1; i >= mineFrom; i--) {
      this.ownership[i] = OWN_FREE
      this.freeList[this.freeTop++] = i
    }
  }

  /** The pool buffer `index` as a view, created once and cached. */
  buffer(index: number): Uint8Array {
    let view = this.views[index]
    if (view === undefined) {
      if (!Number.isInteger(index) || index < 0 || index >= this.bufferCount) {
        throw new FlowstackError('CHANNEL_BAD_INDEX', `buffer index ${index} is outside [0, ${this.bufferCount})`)
      }
      view = new Uint8Array(this.sab, this.poolOffset + index * this.bufferSize, this.bufferSize)
      this.views[index] = view
    }
    return view
  }

  /** A free buffer this side owns, or -1. Drains the return ring when the free list is empty. */
  alloc(): number {
    if (this.freeTop === 0) {
      this.reclaim()
      if (this.freeTop === 0) {
        this.poolEmptyCount++
        return -1
      }
    }
    const index = this.freeList[--this.freeTop]
    this.ownership[index] = OWN_HELD
    this.heldCount++
    return index
  }

  /** Gives back a buffer this side holds (alloc'ed and not sent) to its free list. */
  free(index: number): void {
    this.takeHeld(index, 'free')
    this.ownership[index] = OWN_FREE
    this.freeList[this.freeTop++] = index
  }

  /**
   * Queues a held buffer on the outgoing packet ring (rx for A, tx for B);
   * flush() publishes it. False when the ring is full (the buffer stays held).
   */
  send(index: number, length: number, flags = 0, aux = 0): boolean {
    this.assertOpen()
    if (!(length >= 0 && length <= this.bufferSize)) {
      throw new FlowstackError('CHANNEL_BAD_LENGTH', `length ${length} is outside [0, ${this.bufferSize}]`)
    }
    if (this.ownershipOf(index) !== OWN_HELD) this.notHeld(index, 'send')
    if (!this.outRing.push(index, length, flags, aux)) {
      this.ringFullCount++
      return false
    }
    this.ownership[index] = PEER
    this.heldCount--
    this.sentCount++
    return true
  }

  /** Free slots on the outgoing packet ring. */
  sendCapacity(): number {
    return this.outRing.freeSlots()
  }

  /** Publishes queued descriptors and returns, ringing the peer's doorbell if it sleeps. */
  flush(): void {
    this.flushReturns()
    this.outRing.publish()
  }

  /**
   * Consumes up to `max` descriptors from the incoming packet ring. Every
   * descriptor is checked before it is trusted; valid ones are passed to
   * `visit` and the buffer becomes held by this side (release() it when
   * done); corrupt ones are counted, recorded and skipped. Also publishes
   * pending releases. Returns the number of packets delivered.
   */
  receive(max: number, visit: DescriptorVisitor): number {
    this.flushReturns()
    if (this.closed || this.poisoned[this.inRingId]) return 0
    const ring = this.inRing
    const avail = ring.available()
    if (avail < 0) {
      this.ringOverrun(this.inRingId)
      return 0
    }
    // Any max: Number.MAX_SAFE_INTEGER (everything), fractions, 0 or less (nothing).
    const n = max >= avail ? avail : max > 0 ? Math.floor(max) : 0
    let delivered = 0
    let k = 0
    try {
      for (; k < n; k++) {
        const index = ring.bufferIndexAt(k)
        const length = ring.lengthAt(k)
        const flags = ring.flagsAt(k)
        const reason = this.checkIncoming(index, length, flags)
        if (reason !== 0) {
          this.corrupt(this.inRingId, reason, index, length, flags)
          continue
        }
        this.ownership[index] = OWN_HELD
        this.heldCount++
        delivered++
        this.receivedCount++
        visit(index, length, flags, ring.auxAt(k))
      }
    } finally {
      ring.advance(k < n ? k + 1 : n)
      ring.commit()
    }
    return delivered
  }

  /**
   * Returns a received buffer to its owner through the return ring. Batched:
   * published at the next flush() or receive().
   */
  release(index: number): void {
    this.takeHeld(index, 'release')
    if (this.backlogCount !== 0 || !this.returnOutRing.push(index, 0, 0, 0)) {
      this.ownership[index] = IN_BACKLOG
      this.backlog[this.backlogCount++] = index
    } else this.ownership[index] = PEER
  }

  /**
   * Moves buffers the peer gave back (return ring) onto the free list.
   * Returns how many were reclaimed.
   */
  reclaim(): number {
    if (this.closed || this.poisoned[this.returnInRingId]) return 0
    const ring = this.returnInRing
    const avail = ring.available()
    if (avail < 0) {
      this.ringOverrun(this.returnInRingId)
      return 0
    }
    let reclaimed = 0
    for (let k = 0; k < avail; k++) {
      const index = ring.bufferIndexAt(k)
      let reason = 0
      if (index >= this.bufferCount) reason = CORRUPT_INDEX_OUT_OF_RANGE
      else if (this.ownership[index] !== PEER) reason = CORRUPT_NOT_OWNED_BY_SENDER
      if (reason !== 0) {
        this.corrupt(this.returnInRingId, reason, index, ring.lengthAt(k), ring.flagsAt(k))
        continue
      }
      this.ownership[index] = OWN_FREE
      this.freeList[this.freeTop++] = index
      reclaimed++
    }
    ring.advance(avail)
    ring.commit()
    return reclaimed
  }

  /**
   * After the peer closed its side: takes back the buffers this side sent it
   * that it never received (still on the outgoing packet ring) onto the free
   * list. A side that closes second calls it before its pool accounting, or
   * those buffers stay counted as the peer's. Returns how many.
   */
  reclaimUnreceived(): number {
    if (this.closed || !this.peerClosed) return 0
    let taken = 0
    this.outRing.takeBackUnconsumed((index) => {
      // Only our own buffers travel on our outgoing ring; anything else is not ours to take.
      if (index >= this.bufferCount || this.ownership[index] !== PEER) return
      this.ownership[index] = OWN_FREE
      this.freeList[this.freeTop++] = index
      taken++
    })
    return taken
  }

  /**
   * Resolves when packets are waiting on the incoming ring, the peer closed,
   * the doorbell rang, wake() was called, or after `timeoutMs`. At once if
   * work is pending. May resolve with nothing to do: call receive() and loop.
   */
  waitForWork(timeoutMs?: number): Promise<void> {
    this.flush()
    return this.inRing.waitForWork(timeoutMs, this.peerClosedCheck, this.spinPolls)
  }

  /** Like waitForWork, for buffers coming back on the return ring (a producer out of buffers). */
  waitForBuffers(timeoutMs?: number): Promise<void> {
    this.flush()
    return this.returnInRing.waitForWork(timeoutMs, this.peerClosedCheck, this.spinPolls)
  }

  /** Whether this end's waitForWork/waitForBuffers keep the thread alive while they sleep (default true). */
  setWaitsKeepAlive(keep: boolean): void {
    this.inRing.keepsThreadAlive = keep
    this.returnInRing.keepsThreadAlive = keep
  }

  /**
   * Wakes pending waitForWork/waitForBuffers calls: what a threadsafe-function
   * callback from a native peer calls after it bumped the doorbell sequence.
   */
  wake(): void {
    this.inRing.wake()
    this.returnInRing.wake()
  }

  private readonly peerClosedCheck = (): boolean => this.closed || Atomics.load(this.header, H_CLOSED + this.peerIndex) !== 0

  /** True once the other side closed its end. */
  get peerClosed(): boolean {
    return Atomics.load(this.header, H_CLOSED + this.peerIndex) !== 0
  }

  counters(): ChannelCounters {
    return {
      sent: this.sentCount,
      received: this.receivedCount,
      ringFull: this.ringFullCount,
      poolEmpty: this.poolEmptyCount,
      corrupt: this.corruptCount,
      doorbellsRung: this.outRing.doorbellsRung + this.returnOutRing.doorbellsRung,
      wakeups: this.inRing.wakeups + this.returnInRing.wakeups,
    }
  }

  /** Buffers on this side's free list (not counting ones waiting on the return ring). */
  freeCount(): number {
    return this.freeTop
  }

  /**
   * Released buffers still waiting for room on the return ring (only when the
   * ring is smaller than the pool). flush() moves them as the peer reclaims;
   * a side that stops must flush until this is 0 or those buffers stay lost.
   */
  returnBacklog(): number {
    return this.backlogCount
  }

  /** Where this side's view of the pool stands; free + held + peer = total always. */
  poolAccounting(): PoolAccounting {
    let peer = 0
    for (let i = 0; i < this.bufferCount; i++) if (this.ownership[i] === PEER || this.ownership[i] === IN_BACKLOG) peer++
    const accounting = { free: this.freeTop, held: this.heldCount, returnBacklog: this.backlogCount, peer, total: this.bufferCount }
    if (accounting.free + accounting.held + accounting.peer !== accounting.total) {
      throw new FlowstackError('CHANNEL_ACCOUNTING', `pool accounting broken on side ${this.side}: ${JSON.stringify(accounting)}`)
    }
    return accounting
  }

  /** Descriptors published and not yet consumed on each ring, from the shared counters (for stats). */
  ringOccupancy(): { rx: number; rxReturn: number; tx: number; txReturn: number } {
    const occupancy = (ring: SpscRing): number => {
      const { head, tail } = ring.counters()
      return (head - tail) >>> 0
    }
    const a = this.side === 'a'
    return {
      rx: occupancy(a ? this.outRing : this.inRing),
      rxReturn: occupancy(a ? this.returnInRing : this.returnOutRing),
      tx: occupancy(a ? this.inRing : this.outRing),
      txReturn: occupancy(a ? this.returnOutRing : this.returnInRing),
    }
  }

  /** The first corruption reason this side recorded in the header (0 = none), and its buffer index. */
  recordedError(): { reason: number; reasonName: string; bufferIndex: number; count: number } {
    const reason = Atomics.load(this.header, H_ERROR + this.sideIndex)
    return {
      reason,
      reasonName: CORRUPT_REASON_NAMES[reason] ?? 'none',
      bufferIndex: Atomics.load(this.header, H_ERROR_DETAIL + this.sideIndex) >>> 0,
      count: Atomics.load(this.header, H_CORRUPT_COUNT + this.sideIndex) >>> 0,
    }
  }

  get isClosed(): boolean {
    return this.closed
  }

  /**
   * Publishes what is pending, marks this side closed and wakes the peer's
   * sleepers. Idempotent.
   */
  close(): void {
    if (this.closed) return
    this.flush()
    this.closed = true
    Atomics.store(this.header, H_CLOSED + this.sideIndex, 1)
    this.outRing.ring()
    this.returnOutRing.ring()
    // Our own sleepers resolve too.
    this.wake()
  }

  // ------------------------------------------------------------------ private

  /**
   * When the other side of this channel is attached in this thread too (a
   * memory port used where its wire lives, a test), the rings' doorbells
   * become direct calls (SpscRing.pairLocal). Safe because each side is
   * attached once: the peer found here is the only producer and consumer on
   * the other end of every ring.
   */
  private pairWithLocalPeer(sab: SharedArrayBuffer): void {
    const peer = endsInThisThread.get(sab)
    if (peer === undefined) {
      endsInThisThread.set(sab, this)
      return
    }
    endsInThisThread.delete(sab)
    if (peer.side === this.side) return
    SpscRing.pairLocal(this.outRing, peer.inRing)
    SpscRing.pairLocal(this.inRing, peer.outRing)
    SpscRing.pairLocal(this.returnOutRing, peer.returnInRing)
    SpscRing.pairLocal(this.returnInRing, peer.returnOutRing)
  }

  private flushReturns(): void {
    if (this.backlogCount !== 0) {
      const ring = this.returnOutRing
      let moved = 0
      while (moved < this.backlogCount && ring.push(this.backlog[moved], 0, 0, 0)) this.ownership[this.backlog[moved++]] = PEER
      if (moved !== 0) {
        this.backlog.copyWithin(0, moved, this.backlogCount)
        this.backlogCount -= moved
      }
    }
    this.returnOutRing.publish()
  }

  private checkIncoming(index: number, length: number, flags: number): number {
    if (index >= this.bufferCount) return CORRUPT_INDEX_OUT_OF_RANGE
    if (length > this.bufferSize) return CORRUPT_LENGTH_TOO_LARGE
    if ((flags & ~DESC_KNOWN_FLAGS) !== 0) return CORRUPT_RESERVED_FLAGS
    if ((flags & DESC_VNET_HDR) !== 0 && length < VIRTIO_NET_HDR_BYTES) return CORRUPT_VNET_HDR_SHORT
    const state = this.ownership[index]
    if (state === OWN_HELD) return CORRUPT_DOUBLE_DELIVERY
    if (state !== PEER) return CORRUPT_NOT_OWNED_BY_SENDER
    return 0
  }

  private ringOverrun(ringId: RingId): void {
    // Nothing on this ring can be trusted any more; stop reading it.
    this.poisoned[ringId] = true
    this.corrupt(ringId, CORRUPT_RING_OVERRUN, 0, 0, 0)
  }

  private corrupt(ringId: RingId, reason: number, index: number, length: number, flags: number): void {
    this.corruptCount++
    const h = this.header
    if (Atomics.compareExchange(h, H_ERROR + this.sideIndex, 0, reason) === 0) {
      Atomics.store(h, H_ERROR_DETAIL + this.sideIndex, index | 0)
    }
    Atomics.add(h, H_CORRUPT_COUNT + this.sideIndex, 1)
    if (this.onCorrupt !== undefined || corruptChannel.hasSubscribers) {
      const info: CorruptDescriptorInfo = {
        ring: RING_NAMES[ringId],
        reason,
        reasonName: CORRUPT_REASON_NAMES[reason] ?? 'unknown',
        bufferIndex: index,
        length,
        flags,
      }
      if (corruptChannel.hasSubscribers) corruptChannel.publish({ side: this.side, ...info })
      if (this.onCorrupt !== undefined) this.onCorrupt(info)
    }
  }

  private ownershipOf(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.bufferCount) {
      throw new FlowstackError('CHANNEL_BAD_INDEX', `buffer index ${index} is outside [0, ${this.bufferCount})`)
    }
    return this.ownership[index]
  }

  private takeHeld(index: number, operation: string): void {
    if (this.ownershipOf(index) !== OWN_HELD) this.notHeld(index, operation)
    this.heldCount--
  }

  private notHeld(index: number, operation: string): never {
    throw new FlowstackError('CHANNEL_NOT_OWNED', `${operation}(${index}): side ${this.side} does not hold buffer ${index}`)
  }

  private assertOpen(): void {
    if (this.closed) throw new FlowstackError('CHANNEL_CLOSED', `side ${this.side} of this channel is closed`)
  }
}

/**
 * Gives every buffer of one channel whose two ends live in this thread back
 * to its owner's free list: receives and releases what is queued, publishes
 * returns and reclaims them in turns until nothing moves and no return
 * backlog is left (a ring smaller than a side's share of the pool needs
 * several turns), and takes back what an end that closed first never
 * received. Bounded rounds.
 */
export function drainChannelEnds(user: ChannelEnd, device: ChannelEnd): void {
  for (let round = 0; round < 1024; round++) {
    let moved = 0
    for (const end of [user, device]) {
      moved += end.receive(end.ringCapacity, (i) => end.release(i))
      end.flush()
    }
    moved += device.reclaim() + user.reclaim() + device.reclaimUnreceived() + user.reclaimUnreceived()
    if (moved === 0 && device.returnBacklog() === 0 && user.returnBacklog() === 0) break
  }
}
