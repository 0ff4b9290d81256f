// Impairment middleware: wraps any NexusPort and degrades the traffic through
// it — loss, duplication, reordering, delay with jitter, a rate limit with a
// bounded queue, bit corruption — in either or both directions. Decisions come
// from impair-model.ts, a pure function of (seed, packet sequence, virtual
// time), so the same seed and the same packet sequence give the same run.
//
// Shape: for each queue of the wrapped port the wrapper makes a new channel.
// The caller gets side B of it (`impaired.queues[i]`); the wrapper holds side
// A and the wrapped port's side B, and moves packets between them:
//
//   user  <-B- outer channel -A->  [rx: wrapped.queues[i].receive -> impair -> outer A send]
//                                  [tx: outer A receive -> impair -> wrapped.queues[i] send]
//
// A packet is copied into a buffer of the destination channel as soon as it
// arrives (so the source buffer goes straight back to its pool) and waits in a
// departure heap until its time. The wrapper never loses a packet it was not
// told to: when the destination has no free buffer it stops taking packets
// from the source (backpressure) instead of dropping. The only timer is one
// per direction, armed for the earliest departure (never one per packet), on
// an injected clock, so simulations run on a VirtualClock.
import { channel as diagnosticsChannel } from 'node:diagnostics_channel'
import { FlowstackError } from '../../common/errors.js'
import type { ChannelEnd, PoolAccounting } from '../channel/index.js'
import type { NexusPort, PortCounters, PortInfo, PortQueueCounters } from '../ports/port.js'
import { copyPacket, type CopyEnd } from '../ports/memory-copy.js'
import { realClock, type TimerClock, type TimerHandle } from './impair-clock.js'
import { ImpairModel, VERDICT_LOST, VERDICT_QUEUE_FULL, type ImpairDirectionOptions } from './impair-model.js'
import { DepartureQueue } from './impair-queue.js'
import { mix32 } from './impair-random.js'
import { drainWrapperQueues, openWrapperQueues, refillStash, runPumpLoop, totalCounters } from './wrapper.js'

export interface ImpairOptions extends ImpairDirectionOptions {
  /** Seed for every decision (default 1). The same seed replays the same run. */
  seed?: number
  /** Overrides for packets from the wire to the user (merged over the top-level options). */
  rx?: ImpairDirectionOptions
  /** Overrides for packets from the user to the wire (merged over the top-level options). */
  tx?: ImpairDirectionOptions
  /** Time source and timers (default: performance.now and Node timers). */
  clock?: TimerClock
  /** Packets taken from a source per step (default 64). */
  batchSize?: number
  /** Buffers in each outer channel (default: the wrapped queue's count, at least 256). */
  bufferCount?: number
}

/** What one direction did, since the wrapper was created. */
export interface ImpairDirectionCounters {
  /** Packets taken from the source (each one got a sequence number). */
  arrived: number
  /** Copies handed to the destination, duplicates included. */
  delivered: number
  deliveredBytes: number
  lost: number
  duplicated: number
  reordered: number
  corrupted: number
  /** Dropped because `queueLimit` packets were already held. */
  queueFull: number
  /** Larger than the destination's buffers. */
  oversize: number
  /** The destination ring was full at departure time. */
  ringFull: number
  /** A duplicate found no free destination buffer. */
  poolEmpty: number
  /** Packets held right now (delayed or queued behind the rate limit). */
  held: number
}

function emptyDirectionCounters(): ImpairDirectionCounters {
  return { arrived: 0, delivered: 0, deliveredBytes: 0, lost: 0, duplicated: 0, reordered: 0, corrupted: 0, queueFull: 0, oversize: 0, ringFull: 0, poolEmpty: 0, held: 0 }
}

const impairErrorChannel = diagnosticsChannel('flowstack:impair:error')

const DIRECTION_RX = 0
const DIRECTION_TX = 1

/** One direction of one queue: source end -> model -> departure heap -> destination end. */
class ImpairDirection {
  readonly counters = emptyDirectionCounters()
  private readonly queue: DepartureQueue
  private readonly stash: Int32Array
  private stashCount = 0
  private sequence = 0
  private timer: TimerHandle | undefined
  private timerDeadline = Infinity
  private stopped = false
  private readonly perPacketBuffers: number
  private now = 0
  private readonly done: Promise<void>

  constructor(
    private readonly source: CopyEnd,
    private readonly destination: CopyEnd,
    private readonly model: ImpairModel,
    private readonly clock: TimerClock,
    batch: number,
  ) {
    this.queue = new DepartureQueue(model.options.queueLimit)
    this.perPacketBuffers = model.options.duplicate > 0 ? 2 : 1
    this.stash = new Int32Array(batch * this.perPacketBuffers)
    // A direction that throws stops and says why (diagnostics_channel
    // flowstack:impair:error) instead of becoming an unhandled rejection.
    this.done = runPumpLoop(() => this.step(), source.end, destination.end, () => this.stopped).catch((err: unknown) => {
      this.stopped = true
      if (impairErrorChannel.hasSubscribers) impairErrorChannel.publish({ error: err })
    })
  }

  /**
   * Sends what is due, takes one batch from the source, sends what of it is
   * due at once, publishes, re-arms the timer. Returns packets taken (> 0),
   * 0 when the source was empty, -1 when blocked on destination buffers.
   */
  step(): number {
    if (this.stopped) return 0
    const now = this.clock.now()
    this.now = now
    this.releaseDue(now)
    const dst = this.destination.end
    this.stashCount = refillStash(dst, this.stash, this.stashCount)
    const budget = Math.floor(this.stashCount / this.perPacketBuffers)
    let taken = 0
    if (budget > 0) {
      taken = this.source.end.receive(budget, this.visit)
      this.releaseDue(now)
    }
    dst.flush()
    this.source.end.flush()
    this.armTimer(now)
    if (budget === 0) return -1
    return taken
  }

  private readonly visit = (index: number, length: number, flags: number, aux: number): void => {
    const c = this.counters
    const src = this.source.end
    c.arrived++
    // Packets already due leave first: the queue limit counts packets really
    // held (departing later), so it cannot depend on where a batch ends.
    this.releaseDue(this.now)
    const plan = this.model.decide(this.sequence++, length, this.now, this.queue.size)
    if (plan.verdict === VERDICT_LOST) {
      c.lost++
    } else if (plan.verdict === VERDICT_QUEUE_FULL) {
      c.queueFull++
    } else if (length > this.destination.end.bufferSize) {
      c.oversize++
    } else {
      const out = this.stash[--this.stashCount]
      copyPacket(this.source, index, this.destination, out, length)
      if (plan.corruptBit >= 0) {
        this.destination.end.buffer(out)[plan.corruptBit >>> 3] ^= 0x80 >>> (plan.corruptBit & 7)
        c.corrupted++
      }
      if (plan.reordered) c.reordered++
      // The model already refused packets past queueLimit, so these pushes
      // fit; if one did not, the buffer goes back rather than leaking.
      if (!this.queue.push(plan.departure, out, length, flags, aux)) {
        this.destination.end.free(out)
        c.queueFull++
      }
      if (plan.duplicateDeparture >= 0) {
        if (this.stashCount > 0) {
          const copy = this.stash[--this.stashCount]
          // The duplicate is copied from the source, so it is clean even when the original was corrupted.
          copyPacket(this.source, index, this.destination, copy, length)
          if (this.queue.push(plan.duplicateDeparture, copy, length, flags, aux)) c.duplicated++
          else {
            this.destination.end.free(copy)
            c.queueFull++
          }
        } else {
          c.poolEmpty++
        }
      }
    }
    src.release(index)
  }

  private releaseDue(now: number): void {
    const queue = this.queue
    const dst = this.destination.end
    const c = this.counters
    while (queue.peekDeparture() <= now) {
      queue.pop()
      if (dst.send(queue.poppedIndex, queue.poppedLength, queue.poppedFlags, queue.poppedAux)) {
        c.delivered++
        c.deliveredBytes += queue.poppedLength
      } else {
        dst.free(queue.poppedIndex)
        c.ringFull++
      }
    }
    c.held = queue.size
  }

  private armTimer(now: number): void {
    const next = this.queue.peekDeparture()
    if (next === this.timerDeadline) return
    if (this.timer !== undefined) {
      this.clock.clearTimer(this.timer)
      this.timer = undefined
    }
    this.timerDeadline = next
    if (next === Infinity) return
    this.timer = this.clock.setTimer(next - now, this.onTimer)
  }

  private readonly onTimer = (): void => {
    this.timer = undefined
    this.timerDeadline = Infinity
    try {
      this.step()
    } catch (err) {
      this.stopped = true
      if (impairErrorChannel.hasSubscribers) impairErrorChannel.publish({ error: err })
    }
  }

  /** Stops the loop and the timer and frees every held or stashed buffer. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.timer !== undefined) this.clock.clearTimer(this.timer)
    this.timer = undefined
    this.source.end.wake()
    this.destination.end.wake()
    await this.done
    const dst = this.destination.end
    for (let i = 0; i < this.queue.size; i++) dst.free(this.queue.heldBufferAt(i))
    this.queue.clear()
    this.counters.held = 0
    while (this.stashCount > 0) dst.free(this.stash[--this.stashCount])
    dst.flush()
  }
}

export interface ImpairPoolReport {
  total: number
  device: PoolAccounting
  user: PoolAccounting
}

export interface ImpairedPort extends NexusPort {
  readonly inner: NexusPort
  /** Per direction, summed over queues. */
  impairCounters(): { rx: ImpairDirectionCounters; tx: ImpairDirectionCounters }
  /** Pool accounting of each outer channel (live while open, as left at close afterwards). */
  poolReport(): ImpairPoolReport[]
}

function sumDirection(directions: ImpairDirection[]): ImpairDirectionCounters {
  const total = emptyDirectionCounters()
  for (const d of directions) {
    for (const key of Object.keys(total) as (keyof ImpairDirectionCounters)[]) total[key] += d.counters[key]
  }
  return total
}

/**
 * Wraps `port` so its traffic is impaired as `options` say. The returned port
 * owns the wrapped one: closing it closes both.
 */
export function impair(port: NexusPort, options: ImpairOptions = {}): ImpairedPort {
  const seed = (options.seed ?? 1) >>> 0
  const clock = options.clock ?? realClock()
  const batch = options.batchSize ?? 64
  if (!Number.isInteger(batch) || batch < 1 || batch > 4096) throw new FlowstackError('IMPAIR_BAD_OPTION', `batchSize ${batch} must be in [1, 4096]`)
  const { rx: rxOverrides, tx: txOverrides, seed: _seed, clock: _clock, batchSize: _batch, bufferCount, ...both } = options
  const rxOptions: ImpairDirectionOptions = { ...both, ...rxOverrides }
  const txOptions: ImpairDirectionOptions = { ...both, ...txOverrides }

  const wrapped = openWrapperQueues(port, bufferCount)
  const rxDirections: ImpairDirection[] = []
  const txDirections: ImpairDirection[] = []
  wrapped.forEach(({ innerCopy, deviceCopy }, q) => {
    // Each direction and queue decides from its own stream of the seed.
    const rxSeed = mix32(seed ^ mix32((q << 1) | DIRECTION_RX))
    const txSeed = mix32(seed ^ mix32((q << 1) | DIRECTION_TX))
    rxDirections.push(new ImpairDirection(innerCopy, deviceCopy, new ImpairModel(rxSeed, rxOptions, 'impair.rx'), clock, batch))
    txDirections.push(new ImpairDirection(deviceCopy, innerCopy, new ImpairModel(txSeed, txOptions, 'impair.tx'), clock, batch))
  })

  const info: PortInfo = { ...port.info, name: `${port.info.name}+impair` }
  const queues: readonly ChannelEnd[] = Object.freeze(wrapped.map((w) => w.user))
  let closing: Promise<void> | undefined
  let closed = false
  let finalReport: ImpairPoolReport[] | undefined

  const queueCounters = (q: number): PortQueueCounters => {
    const rx = rxDirections[q].counters
    const tx = txDirections[q].counters
    return {
      rxPackets: rx.delivered,
      rxBytes: rx.deliveredBytes,
      txPackets: tx.delivered,
      txBytes: tx.deliveredBytes,
      drops: { ringFull: rx.ringFull + tx.ringFull, poolEmpty: rx.poolEmpty + tx.poolEmpty, oversize: rx.oversize + tx.oversize },
      syscalls: 0,
      doorbells: wrapped[q].device.counters().wakeups,
    }
  }
  const report = (): ImpairPoolReport[] =>
    wrapped.map(({ device, user }) => ({ total: device.bufferCount, device: device.poolAccounting(), user: user.poolAccounting() }))

  return {
    info,
    inner: port,
    get queues(): readonly ChannelEnd[] {
      if (closed) throw new FlowstackError('PORT_CLOSED', `port ${info.name} is closed`)
      return queues
    },
    counters(): PortCounters {
      if (closed) throw new FlowstackError('PORT_CLOSED', `port ${info.name} is closed`)
      return totalCounters(port.queues.map((_, q) => queueCounters(q)), port)
    },
    impairCounters: () => ({ rx: sumDirection(rxDirections), tx: sumDirection(txDirections) }),
    poolReport: () => finalReport ?? report(),
    close(): Promise<void> {
      closing ??= (async () => {
        await Promise.all([...rxDirections, ...txDirections].map((d) => d.stop()))
        drainWrapperQueues(wrapped)
        finalReport = report()
        for (const { user, device } of wrapped) {
          user.close()
          device.close()
        }
        closed = true
        await port.close()
      })()
      return closing
    },
  }
}
