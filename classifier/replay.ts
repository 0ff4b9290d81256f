// Classifying a recorded capture (`flowstack classify`), possibly split into
// chunks classified in parallel by separate classifiers. Every decision a
// classifier makes depends on packets before it (flows created by earlier
// decisions, first fragments), so each chunk reports what crosses its
// borders, and ChunkMerger, run in frame order, makes the result identical
// to classifying the whole capture in one pass:
//  - a frame that created a flow in its chunk becomes a "flow" hit when an
//    earlier chunk created the same flow;
//  - a later fragment that its chunk had to hold takes the decision of a
//    first fragment from an earlier chunk (if recent enough), or of one in a
//    later chunk (if it arrives within the hold time), or expires.
// Known difference: the bound on held fragments applies per chunk.
import { Direction, KEY_WORDS } from './key.js'
import { LinkKind, FragmentKind } from './extract.js'
import { Classifier, Reason } from './classifier.js'

/** Link kind value for frames of a link type the classifier cannot read. */
export const LINK_UNSUPPORTED = 255

export interface ReplayChunk {
  /** Frame number (1-based) of the chunk's first frame. */
  firstFrame: number
  count: number
  /** LinkKind per frame, or LINK_UNSUPPORTED. */
  link: Uint8Array
  timeMs: Float64Array
  /** Frame i is data[offsets[i], offsets[i + 1]). */
  offsets: Uint32Array
  data: Uint8Array
}

export const enum HoldState {
  None = 0,
  /** Held, then released by a first fragment in the same chunk. */
  Released = 1,
  /** Held, then expired within the chunk. */
  Expired = 2,
  /** Still held when the chunk ended. */
  Open = 3,
}

export interface ChunkResult {
  owner: Int32Array
  rule: Int32Array
  reason: Uint8Array
  /** Chunk-relative index of the first fragment whose decision the frame took, or -1. */
  dependsOn: Int32Array
  hold: Uint8Array
  /** Frames whose decision created a flow, and their keys (KEY_WORDS each). */
  newFlows: Int32Array
  newFlowKeys: Uint32Array
  /** First fragments and their datagram keys (KEY_WORDS each). */
  firstFragments: Int32Array
  firstFragmentKeys: Uint32Array
  /** Frames that were held, and their datagram keys. */
  heldFrames: Int32Array
  heldKeys: Uint32Array
}

class GrowableU32 {
  data = new Uint32Array(1024)
  length = 0
  pushWords(words: Uint32Array, count: number): void {
    if (this.length + count > this.data.length) {
      const grown = new Uint32Array(Math.max(this.data.length * 2, this.length + count))
      grown.set(this.data.subarray(0, this.length))
      this.data = grown
    }
    for (let i = 0; i < count; i++) this.data[this.length++] = words[i]
  }
  push(value: number): void {
    if (this.length === this.data.length) {
      const grown = new Uint32Array(this.data.length * 2)
      grown.set(this.data)
      this.data = grown
    }
    this.data[this.length++] = value
  }
  toArray(): Uint32Array {
    return this.data.slice(0, this.length)
  }
}

/**
 * Classifies one chunk, as inbound packets on `portIndex`, with a classifier
 * that has seen nothing before (see ChunkMerger for stitching chunks).
 * `clock.now` is driven from the capture's timestamps.
 */
export function classifyChunk(classifier: Classifier, clock: { now: number }, chunk: ReplayChunk, portIndex: number): ChunkResult {
  const n = chunk.count
  const result: ChunkResult = {
    owner: new Int32Array(n),
    rule: new Int32Array(n),
    reason: new Uint8Array(n),
    dependsOn: new Int32Array(n).fill(-1),
    hold: new Uint8Array(n),
    newFlows: new Int32Array(0),
    newFlowKeys: new Uint32Array(0),
    firstFragments: new Int32Array(0),
    firstFragmentKeys: new Uint32Array(0),
    heldFrames: new Int32Array(0),
    heldKeys: new Uint32Array(0),
  }
  const newFlows = new GrowableU32()
  const newFlowKeys = new GrowableU32()
  const firsts = new GrowableU32()
  const firstKeys = new GrowableU32()
  const held = new GrowableU32()
  const heldKeys = new GrowableU32()
  classifier.onFragmentRelease = (token, decision) => {
    result.owner[token] = decision.owner
    result.rule[token] = decision.rule
    result.reason[token] = decision.reason
    result.dependsOn[token] = decision.fragmentOf
    result.hold[token] = decision.reason === Reason.FragmentExpired ? HoldState.Expired : HoldState.Released
  }
  for (let i = 0; i < n; i++) {
    clock.now = chunk.timeMs[i]
    const start = chunk.offsets[i]
    const length = chunk.offsets[i + 1] - start
    const link = chunk.link[i]
    const decision = link === LINK_UNSUPPORTED
      ? classifier.classifyPacket(chunk.data, start, 0, LinkKind.Ip, portIndex, Direction.In, i)
      : classifier.classifyPacket(chunk.data, start, length, link as LinkKind, portIndex, Direction.In, i)
    const info = classifier.lastPacket
    if (decision.held) {
      held.push(i)
      heldKeys.pushWords(classifier.lastDatagram, KEY_WORDS)
      continue
    }
    result.owner[i] = decision.owner
    result.rule[i] = decision.rule
    result.reason[i] = decision.reason
    result.dependsOn[i] = decision.fragmentOf
    const created = decision.reason === Reason.Rule || decision.reason === Reason.Listener || decision.reason === Reason.Default
    if (created && decision.fragmentOf < 0) {
      newFlows.push(i)
      newFlowKeys.pushWords(info.key, KEY_WORDS)
    }
    if (info.fragment === FragmentKind.First && decision.reason !== Reason.NotIp && decision.reason !== Reason.ParseError) {
      firsts.push(i)
      firstKeys.pushWords(classifier.lastDatagram, KEY_WORDS)
    }
  }
  // Whatever is still held waits for the merger, which can see later chunks.
  const stillHeld = new Set<number>()
  for (let j = 0; j < held.length; j++) if (result.hold[held.data[j]] === HoldState.None) stillHeld.add(held.data[j])
  classifier.onFragmentRelease = (token) => {
    result.hold[token] = HoldState.Open
  }
  classifier.flushHeldFragments()
  for (const frame of stillHeld) result.hold[frame] = HoldState.Open
  result.newFlows = Int32Array.from(newFlows.toArray())
  result.newFlowKeys = newFlowKeys.toArray()
  result.firstFragments = Int32Array.from(firsts.toArray())
  result.firstFragmentKeys = firstKeys.toArray()
  result.heldFrames = Int32Array.from(held.toArray())
  result.heldKeys = heldKeys.toArray()
  return result
}

function keyText(words: Uint32Array, at: number): string {
  let text = ''
  for (let i = 0; i < KEY_WORDS; i++) text += `${words[at + i]},`
  return text
}

interface FinalDecision {
  owner: number
  rule: number
  reason: number
}

interface PendingChunk {
  chunk: ReplayChunk
  result: ChunkResult
}

/** One frame's final decision, as handed to the emitter. */
export interface FrameDecision {
  frame: number
  owner: number
  rule: number
  reason: Reason
}

/**
 * Stitches chunk results, fed in frame order, into the one-pass answer and
 * emits frames in order as soon as no earlier frame can still change.
 */
export class ChunkMerger {
  private readonly flows = new Map<string, FinalDecision>()
  private readonly firsts = new Map<string, FinalDecision & { time: number }>()
  private readonly pending = new Map<string, Array<{ chunk: PendingChunk; index: number; time: number }>>()
  private readonly queue: PendingChunk[] = []
  private emittedInHead = 0
  private readonly out: FrameDecision = { frame: 0, owner: 0, rule: -1, reason: Reason.Default }

  constructor(
    private readonly holdMs: number,
    private readonly defaultOwner: number,
  ) {}

  add(chunk: ReplayChunk, result: ChunkResult, emit: (d: FrameDecision) => void): void {
    const entry: PendingChunk = { chunk, result }
    const r = result
    // 1. Flows an earlier chunk already created.
    for (let j = 0; j < r.newFlows.length; j++) {
      const i = r.newFlows[j]
      const key = keyText(r.newFlowKeys, j * KEY_WORDS)
      const known = this.flows.get(key)
      if (known !== undefined) {
        r.owner[i] = known.owner
        r.rule[i] = known.rule
        r.reason[i] = Reason.Flow
      } else {
        this.flows.set(key, { owner: r.owner[i], rule: r.rule[i], reason: r.reason[i] })
      }
    }
    // 2. Held fragments whose first fragment came in an earlier chunk.
    const open: Array<{ index: number; key: string }> = []
    for (let j = 0; j < r.heldFrames.length; j++) {
      const i = r.heldFrames[j]
      const key = keyText(r.heldKeys, j * KEY_WORDS)
      const first = this.firsts.get(key)
      if (first !== undefined && first.time + this.holdMs >= chunk.timeMs[i]) {
        r.owner[i] = first.owner
        r.rule[i] = first.rule
        r.reason[i] = first.reason
        r.dependsOn[i] = -1
        r.hold[i] = HoldState.None
      } else if (r.hold[i] === HoldState.Open) {
        open.push({ index: i, key })
      }
    }
    // 3. Later fragments take their first fragment's (now final) decision.
    for (let i = 0; i < chunk.count; i++) {
      const source = r.dependsOn[i]
      if (source < 0) continue
      r.owner[i] = r.owner[source]
      r.rule[i] = r.rule[source]
      r.reason[i] = r.reason[source]
    }
    // 4. This chunk's first fragments release fragments held in earlier chunks.
    for (let j = 0; j < r.firstFragments.length; j++) {
      const i = r.firstFragments[j]
      const key = keyText(r.firstFragmentKeys, j * KEY_WORDS)
      const time = chunk.timeMs[i]
      const waiting = this.pending.get(key)
      if (waiting !== undefined) {
        for (const w of waiting) {
          if (time - w.time < this.holdMs) {
            w.chunk.result.owner[w.index] = r.owner[i]
            w.chunk.result.rule[w.index] = r.rule[i]
            w.chunk.result.reason[w.index] = r.reason[i]
          } else {
            this.expire(w.chunk.result, w.index)
          }
          w.chunk.result.hold[w.index] = HoldState.None
        }
        this.pending.delete(key)
      }
      this.firsts.set(key, { owner: r.owner[i], rule: r.rule[i], reason: r.reason[i], time })
    }
    // 5. Still open: wait for later chunks.
    for (const { index, key } of open) {
      let list = this.pending.get(key)
      if (list === undefined) this.pending.set(key, (list = []))
      list.push({ chunk: entry, index, time: chunk.timeMs[index] })
    }
    this.queue.push(entry)
    this.drain(emit, false)
  }

  /** Emits everything left; fragments still waiting expire. */
  finish(emit: (d: FrameDecision) => void): void {
    for (const list of this.pending.values()) {
      for (const w of list) {
        this.expire(w.chunk.result, w.index)
        w.chunk.result.hold[w.index] = HoldState.None
      }
    }
    this.pending.clear()
    this.drain(emit, true)
  }

  private expire(r: ChunkResult, index: number): void {
    r.owner[index] = this.defaultOwner
    r.rule[index] = -1
    r.reason[index] = Reason.FragmentExpired
  }

  private drain(emit: (d: FrameDecision) => void, all: boolean): void {
    const out = this.out
    while (this.queue.length > 0) {
      const head = this.queue[0]
      const r = head.result
      while (this.emittedInHead < head.chunk.count) {
        const i = this.emittedInHead
        if (!all && r.hold[i] === HoldState.Open) return
        out.frame = head.chunk.firstFrame + i
        out.owner = r.owner[i]
        out.rule = r.rule[i]
        out.reason = r.reason[i]
        emit(out)
        this.emittedInHead++
      }
      this.queue.shift()
      this.emittedInHead = 0
    }
  }
}
