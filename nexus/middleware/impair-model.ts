// The impairment decisions as a pure function of (seed, packet sequence,
// packet length, virtual time, queue occupancy). No buffers, no timers: the
// shell in impair.ts moves packets; this decides what happens to them, so a
// run is replayed exactly by feeding the same inputs.
//
// Pipeline for one packet arriving at time t (netem's order, simplified):
//   1. loss            -> dropped, nothing else is decided
//   2. queue bound     -> tail drop when `queueLimit` packets are already held
//   3. rate limit      -> serialised behind the previous packet on a link of
//                         `rateBitsPerSecond`: leaves at max(t, linkFree) + bits/rate
//   4. delay, jitter   -> + delayMs + uniform(-jitterMs, +jitterMs), never before
//                         it left the rate stage; unless `jitterReorders`, a packet
//                         never departs before the one ahead of it (netem's rate/
//                         pfifo behaviour), so jitter alone does not reorder
//   5. reorder         -> with probability `reorder`, held `reorderDelayMs` longer,
//                         letting later packets overtake it
//   6. duplication     -> with probability `duplicate`, a second (clean) copy departs
//                         right behind the original
//   7. corruption      -> with probability `corrupt`, one bit of the original, chosen
//                         uniformly over its length, is flipped
import { FlowstackError } from '../../common/errors.js'
import { decisionHash, decisionUnit } from './impair-random.js'

export interface ImpairDirectionOptions {
  /** Probability in [0, 1] that a packet is dropped. */
  loss?: number
  /** Probability in [0, 1] that a packet is delivered twice. */
  duplicate?: number
  /** Probability in [0, 1] that a packet is held back `reorderDelayMs` so later packets overtake it. */
  reorder?: number
  /** Extra hold for a reordered packet; default 1 ms. */
  reorderDelayMs?: number
  /** Fixed one-way delay in ms. */
  delayMs?: number
  /** Uniform jitter in ms around the delay (delay ± jitter, never below zero). */
  jitterMs?: number
  /** Let jitter reorder packets (default false: departures stay in arrival order). */
  jitterReorders?: boolean
  /** Link rate in bits per second; unset means unlimited. */
  rateBitsPerSecond?: number
  /** Most packets held at once (delayed or queued for the rate limit); beyond it, tail drop. Default 1000, like netem. */
  queueLimit?: number
  /** Probability in [0, 1] that a packet gets one bit flipped. */
  corrupt?: number
}

export const VERDICT_DELIVER = 0
export const VERDICT_LOST = 1
export const VERDICT_QUEUE_FULL = 2
export type Verdict = typeof VERDICT_DELIVER | typeof VERDICT_LOST | typeof VERDICT_QUEUE_FULL

/** The decision for one packet. One instance is reused for every packet (no allocation on the data path). */
export interface ImpairPlan {
  verdict: Verdict
  /** When the packet leaves, in clock milliseconds. */
  departure: number
  /** When the duplicate leaves, or -1 when there is none. */
  duplicateDeparture: number
  /** Bit to flip (byte = bit >>> 3, mask = 0x80 >>> (bit & 7)), or -1. */
  corruptBit: number
  reordered: boolean
}

// Decision streams: independent random numbers per kind of decision.
const STREAM_LOSS = 1
const STREAM_DUPLICATE = 2
const STREAM_REORDER = 3
const STREAM_JITTER = 4
const STREAM_CORRUPT = 5
const STREAM_CORRUPT_BIT = 6

interface ResolvedOptions {
  loss: number
  duplicate: number
  reorder: number
  reorderDelayMs: number
  delayMs: number
  jitterMs: number
  jitterReorders: boolean
  rateBitsPerMs: number
  queueLimit: number
  corrupt: number
}

export function resolveImpairOptions(options: ImpairDirectionOptions, where: string): ResolvedOptions {
  const probability = (name: keyof ImpairDirectionOptions): number => {
    const v = options[name] ?? 0
    if (typeof v !== 'number' || !(v >= 0 && v <= 1)) {
      throw new FlowstackError('IMPAIR_BAD_OPTION', `${where}.${name}: ${String(v)} is not a probability in [0, 1]`)
    }
    return v
  }
  const nonNegative = (name: keyof ImpairDirectionOptions, fallback: number): number => {
    const v = options[name] ?? fallback
    if (typeof v !== 'number' || !(v >= 0) || !Number.isFinite(v)) {
      throw new FlowstackError('IMPAIR_BAD_OPTION', `${where}.${name}: ${String(v)} is not a finite number >= 0`)
    }
    return v
  }
  const rate = options.rateBitsPerSecond
  if (rate !== undefined && !(rate > 0 && Number.isFinite(rate))) {
    throw new FlowstackError('IMPAIR_BAD_OPTION', `${where}.rateBitsPerSecond: ${String(rate)} is not a positive rate`)
  }
  const queueLimit = nonNegative('queueLimit', 1000)
  if (!Number.isInteger(queueLimit) || queueLimit < 1) {
    throw new FlowstackError('IMPAIR_BAD_OPTION', `${where}.queueLimit: ${queueLimit} is not a positive integer`)
  }
  return {
    loss: probability('loss'),
    duplicate: probability('duplicate'),
    reorder: probability('reorder'),
    reorderDelayMs: nonNegative('reorderDelayMs', 1),
    delayMs: nonNegative('delayMs', 0),
    jitterMs: nonNegative('jitterMs', 0),
    jitterReorders: options.jitterReorders === true,
    rateBitsPerMs: rate === undefined ? 0 : rate / 1000,
    queueLimit,
    corrupt: probability('corrupt'),
  }
}

/** One direction's impairment state: the link's busy-until time and the last departure. */
export class ImpairModel {
  readonly options: ResolvedOptions
  readonly plan: ImpairPlan = { verdict: VERDICT_DELIVER, departure: 0, duplicateDeparture: -1, corruptBit: -1, reordered: false }
  private readonly seed: number
  private linkFreeAt = -Infinity
  private lastDeparture = -Infinity

  /** `seed` is the user's seed already folded with the direction, so rx and tx decide independently. */
  constructor(seed: number, options: ImpairDirectionOptions, where = 'impair') {
    this.seed = seed >>> 0
    this.options = resolveImpairOptions(options, where)
  }

  /** True when this direction changes nothing (the shell may then skip the queue entirely). */
  get isIdentity(): boolean {
    const o = this.options
    return o.loss === 0 && o.duplicate === 0 && o.reorder === 0 && o.delayMs === 0 && o.jitterMs === 0 && o.rateBitsPerMs === 0 && o.corrupt === 0
  }

  /**
   * Decides the fate of packet number `sequence` (counted from 0 in arrival
   * order, lost ones included) of `length` bytes arriving at `now`, when
   * `held` packets are currently held by the shell. Returns the shared plan.
   */
  decide(sequence: number, length: number, now: number, held: number): ImpairPlan {
    const o = this.options
    const plan = this.plan
    plan.duplicateDeparture = -1
    plan.corruptBit = -1
    plan.reordered = false
    if (o.loss > 0 && decisionUnit(this.seed, STREAM_LOSS, sequence) < o.loss) {
      plan.verdict = VERDICT_LOST
      plan.departure = now
      return plan
    }
    const duplicate = o.duplicate > 0 && decisionUnit(this.seed, STREAM_DUPLICATE, sequence) < o.duplicate
    if (held + (duplicate ? 2 : 1) > o.queueLimit) {
      plan.verdict = VERDICT_QUEUE_FULL
      plan.departure = now
      return plan
    }
    plan.verdict = VERDICT_DELIVER

    let leaves = now
    if (o.rateBitsPerMs > 0) {
      const start = this.linkFreeAt > now ? this.linkFreeAt : now
      leaves = start + (length * 8) / o.rateBitsPerMs
      this.linkFreeAt = leaves
    }
    let departure = leaves + o.delayMs
    if (o.jitterMs > 0) {
      const u = decisionUnit(this.seed, STREAM_JITTER, sequence)
      departure += (u * 2 - 1) * o.jitterMs
      if (departure < leaves) departure = leaves
    }
    if (!o.jitterReorders && departure < this.lastDeparture) departure = this.lastDeparture
    this.lastDeparture = departure
    if (o.reorder > 0 && decisionUnit(this.seed, STREAM_REORDER, sequence) < o.reorder) {
      // The held-back packet does not move lastDeparture: later packets go at their own time and overtake it.
      departure += o.reorderDelayMs
      plan.reordered = true
    }
    plan.departure = departure
    if (duplicate) plan.duplicateDeparture = departure
    if (o.corrupt > 0 && length > 0 && decisionUnit(this.seed, STREAM_CORRUPT, sequence) < o.corrupt) {
      plan.corruptBit = decisionHash(this.seed, STREAM_CORRUPT_BIT, sequence) % (length * 8)
    }
    return plan
  }
}
