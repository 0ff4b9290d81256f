// The flow classifier (DESIGN.md §3). For each packet, in this order:
//   1. a packet of an established flow goes to the flow's owner: flows are
//      registered by instances (connect, accept) or created by an earlier
//      decision, which is how decisions for new flows are cached;
//   2. otherwise the matching rule with the highest priority (ties: the rule
//      listed first) decides;
//   3. otherwise a listener (protocol, local address or any, local port);
//   4. otherwise the ingress port's default action.
// Non-IP frames and packets that fail to parse take the default action with
// their reason counted. Later fragments follow their datagram's first
// fragment; outbound packets from instances are checked against spoofing.
//
// Everything on the data path works on preallocated typed arrays and one
// reused Decision; time is injected so tests and captures replay exactly.
// Established flows live in one 64-byte slot each (flow-table.ts); with the
// addon built, classifyBatch looks a whole batch up natively in the same
// table (nexus/native/flow_table.cc) and everything else stays here.
import { Direction, KEY_WORDS, W_LOCAL, W_META, W_PORTS, W_REMOTE, keyIpVersion, keyProtocol, type FlowKeyFields, type Prefix, writeKey, readKey, PROTO_ICMP, PROTO_ICMPV6 } from './key.js'
import { extractFlowKey, extractFlowKeyFast, FragmentKind, LinkKind, PacketInfo, ParseStatus } from './extract.js'
import { OWNER_DROP, OWNER_KERNEL, RuleSet, type RuleSpec } from './rules.js'
import { ExactTable, hashWords } from './table.js'
import { FLOW_SLOT_WORDS, FS_BYTES, FS_KEY, FS_LAST_SEEN, FS_OWNER, FS_PACKETS, FS_RECORD, FS_RULE, FlowTable, type FlowTableMemory } from './flow-table.js'
import { nativeFlowPath, type NativeFlowPath } from '../nexus/ports/native.js'

export const enum Reason {
  Flow = 0,
  Rule = 1,
  Listener = 2,
  Default = 3,
  NotIp = 4,
  ParseError = 5,
  FragmentExpired = 6,
  FragmentOverflow = 7,
}
export const REASON_NAMES = ['flow', 'rule', 'listener', 'default', 'not-ip', 'parse-error', 'fragment-expired', 'fragment-overflow'] as const
export type ReasonName = (typeof REASON_NAMES)[number]

export const enum SpoofReason {
  Address = 0,
  Flow = 1,
  NotIp = 2,
  ParseError = 3,
}
export const SPOOF_REASON_NAMES = ['address', 'flow', 'not-ip', 'parse-error'] as const

/** The reused answer of a classification. Read it before the next call. */
export class Decision {
  /** Instance index, OWNER_KERNEL, OWNER_DROP or (hairpin only) OWNER_WIRE. */
  owner = OWNER_KERNEL
  /** Global id of the rule that decided (see Classifier.ruleName), or -1. */
  rule = -1
  reason: Reason = Reason.Default
  /** True when a later fragment is being held; its decision arrives through onFragmentRelease. */
  held = false
  /** For a later fragment: the token of the first fragment whose decision it took; otherwise -1. */
  fragmentOf = -1
}

/** classifyBatch's owner for a later fragment that is being held (its decision comes through onFragmentRelease). */
export const OWNER_HELD = -3

/**
 * The owner classifyHairpin gives an instance's packet that no flow, rule or
 * listener claims: it leaves on its port. Not an action a config can name.
 * Cached as the flow's owner, so the instance's sends are neither counted
 * nor listed as the port's default action (kernel, drop).
 */
export const OWNER_WIRE = -4

/** The token classifyHairpin holds a later fragment under: onFragmentRelease callers skip it. */
export const HAIRPIN_TOKEN = -1

/** ownerCounts' slot for an owner: 0 kernel, 1 drop, 2 wire, 3 + i instance i. */
function ownerSlot(owner: number): number {
  return owner >= 0 ? owner + 3 : owner === OWNER_WIRE ? 2 : -1 - owner
}

/**
 * Descriptors in and decisions out for Classifier.classifyBatch: packets at
 * `offsets[i]`, `lengths[i]` of one buffer (a port arena or pool), and per
 * packet the owner (instance index, OWNER_KERNEL, OWNER_DROP or OWNER_HELD),
 * the deciding rule's global id (-1 when none) and the Reason. Allocate one
 * per ring and reuse it; nothing here allocates per packet.
 */
export class PacketBatch {
  readonly capacity: number
  count = 0
  readonly offsets: Int32Array
  readonly lengths: Int32Array
  /** Identifies a held later fragment in onFragmentRelease (a buffer index, a frame number). */
  readonly tokens: Float64Array
  readonly owners: Int32Array
  readonly rules: Int32Array
  readonly reasons: Uint8Array

  constructor(capacity = 256) {
    this.capacity = capacity
    this.offsets = new Int32Array(capacity)
    this.lengths = new Int32Array(capacity)
    this.tokens = new Float64Array(capacity)
    this.owners = new Int32Array(capacity)
    this.rules = new Int32Array(capacity)
    this.reasons = new Uint8Array(capacity)
  }

  /** Appends a packet; returns false when the batch is full. */
  add(offset: number, length: number, token = 0): boolean {
    if (this.count === this.capacity) return false
    const i = this.count++
    this.offsets[i] = offset
    this.lengths[i] = length
    this.tokens[i] = token
    return true
  }

  clear(): void {
    this.count = 0
  }
}

export interface ClassifierPort {
  name: string
  /** Owner for packets nothing else claims. */
  defaultOwner: number
}

export interface ClassifierOptions {
  ports: readonly ClassifierPort[]
  instances: readonly string[]
  rules: RuleSet
  /** Flow table capacity (registered plus cached flows). Default 262144. */
  maxFlows?: number
  /** Per instance: flows it may hold (config `limits.maxFlows`); 0 or absent = no limit but the table's. */
  instanceMaxFlows?: readonly number[]
  /** Later fragments held while their first fragment has not arrived. Default 64. */
  fragmentHoldPackets?: number
  /** How long a held fragment, or a first fragment's decision, stays. Default 5000 ms. */
  fragmentHoldMs?: number
  /** Milliseconds; injected so replays are deterministic. */
  now?: () => number
  /** Called when a held fragment is decided (its first fragment arrived, it expired, or the hold overflowed). */
  onFragmentRelease?: (token: number, decision: Decision) => void
  /**
   * Use the addon (when it is built) for the flow table's memory (huge
   * pages) and classifyBatch's exact-match lookups. Default true; false keeps
   * everything in TypeScript. Decisions are the same either way.
   */
  native?: boolean
  /**
   * With the addon: back the flow table with transparent huge pages (default
   * true). False keeps 4 KiB pages, for measuring what huge pages give.
   */
  hugePages?: boolean
}

const FLOW_REGISTERED = 1
const FLOW_DECIDED = 2
/** Registered by an instance's datagram (UDP has no close to release it): expires when idle, like a decision. */
const FLOW_DATAGRAM = 3
/** Datagram key: key words 0..8 (no ports) plus the fragment id. */
const DATAGRAM_WORDS = KEY_WORDS

export class Classifier {
  readonly ports: readonly ClassifierPort[]
  readonly instances: readonly string[]
  private rules: RuleSet
  private ruleBase = 0
  private readonly ruleNames: string[] = []
  private generation = 0
  private readonly now: () => number

  // Flow table: key -> one 64-byte slot with the fields every packet of the
  // flow reads or writes (flow-table.ts); per record id, the cold fields.
  private readonly flows: FlowTable
  private readonly slots: Uint32Array
  private readonly signedSlots: Int32Array
  private readonly flowKind: Uint8Array
  /** Multiples of 2^32 carried out of a slot's 32-bit packet and byte counters. */
  private readonly packetsCarry: Float64Array
  private readonly bytesCarry: Float64Array
  private readonly freeRecords: Int32Array
  private freeCount: number
  /** The addon's exact-match batch lookup, when it is built and enabled. */
  private readonly native: NativeFlowPath | undefined

  // Listeners: [meta, local addr (zero = any), zero remote, localPort << 16] -> instance.
  private readonly listeners: ExactTable
  private readonly instanceAddresses: Prefix[][]
  private readonly instancePort: Int32Array

  // Fragments.
  private readonly datagrams: ExactTable
  private readonly datagramOwner: Int32Array
  private readonly datagramRule: Int32Array
  private readonly datagramReason: Uint8Array
  private readonly datagramExpires: Float64Array
  private readonly datagramKeys: Uint32Array
  private readonly datagramToken: Float64Array
  private datagramNext = 0
  private readonly holdKeys: Uint32Array
  private readonly holdToken: Float64Array
  private readonly holdSince: Float64Array
  private readonly holdPort: Int32Array
  private readonly holdUsed: Uint8Array
  private heldCount = 0
  private readonly holdMs: number
  onFragmentRelease: ((token: number, decision: Decision) => void) | undefined

  // Counters.
  readonly reasonCounts = new Float64Array(REASON_NAMES.length)
  /** Decisions by owner: index 0 kernel, 1 drop, 2 wire (hairpin), 3 + i instance i. */
  readonly ownerCounts: Float64Array
  /** Per instance: registrations refused because it held its limit of flows. */
  readonly flowLimitRefusals: Float64Array
  private readonly heldFlows: Int32Array
  private readonly instanceFlowLimit: Int32Array
  /** Set only during classifyHairpin: unclaimed means OWNER_WIRE, not the port's default. */
  private hairpin = false
  readonly spoofCounts = new Float64Array(SPOOF_REASON_NAMES.length)
  /** Decisions that could not be cached because the flow table was full. */
  flowTableFull = 0

  /** Bumped whenever flows are removed, so batch lookups know their prefetched record indexes still hold. */
  private flowRemovals = 0
  // Batch scratch (see classifyBatch), grown to the largest batch seen.
  private batchKeys = new Uint32Array(256 * KEY_WORDS)
  private batchHashes = new Uint32Array(256)
  private batchSlots = new Int32Array(256)
  private readonly missKey = new Uint32Array(KEY_WORDS)
  /** Keeps the batch prefetch reads observable, so the JIT cannot drop them. */
  prefetchSink = 0

  private readonly decision = new Decision()
  private readonly releaseDecision = new Decision()
  private readonly info = new PacketInfo()
  private readonly scratch = new Uint32Array(KEY_WORDS)
  /** After classifyPacket on a fragment: its datagram key (key words without ports, plus the fragment id). */
  readonly lastDatagram = new Uint32Array(DATAGRAM_WORDS)

  /** What the last classifyPacket parsed (flow key, fragment kind); valid until the next call. */
  get lastPacket(): PacketInfo {
    return this.info
  }

  constructor(options: ClassifierOptions) {
    this.ports = options.ports
    this.instances = options.instances
    this.rules = options.rules
    this.adoptRuleNames(options.rules)
    this.now = options.now ?? (() => performance.now())
    const maxFlows = options.maxFlows ?? 262144
    const native = options.native === false ? undefined : nativeFlowPath()
    this.native = native !== undefined && native.flowSlotWords === FLOW_SLOT_WORDS ? native : undefined
    this.flows = new FlowTable(maxFlows, options.hugePages === false ? undefined : this.native?.allocHugeBuffer)
    this.slots = this.flows.slots
    this.signedSlots = this.flows.signedSlots
    this.flowKind = new Uint8Array(maxFlows)
    this.packetsCarry = new Float64Array(maxFlows)
    this.bytesCarry = new Float64Array(maxFlows)
    this.freeRecords = new Int32Array(maxFlows)
    for (let i = 0; i < maxFlows; i++) this.freeRecords[i] = maxFlows - 1 - i
    this.freeCount = maxFlows
    this.listeners = new ExactTable(KEY_WORDS, 4096)
    this.instanceAddresses = options.instances.map(() => [])
    this.instancePort = new Int32Array(options.instances.length).fill(-1)
    this.ownerCounts = new Float64Array(3 + options.instances.length)
    this.flowLimitRefusals = new Float64Array(options.instances.length)
    this.heldFlows = new Int32Array(options.instances.length)
    this.instanceFlowLimit = Int32Array.from(options.instances, (_, i) => options.instanceMaxFlows?.[i] ?? 0)

    const hold = options.fragmentHoldPackets ?? 64
    const datagramCapacity = 1024
    this.datagrams = new ExactTable(DATAGRAM_WORDS, datagramCapacity)
    this.datagramOwner = new Int32Array(datagramCapacity)
    this.datagramRule = new Int32Array(datagramCapacity)
    this.datagramReason = new Uint8Array(datagramCapacity)
    this.datagramExpires = new Float64Array(datagramCapacity)
    this.datagramKeys = new Uint32Array(datagramCapacity * DATAGRAM_WORDS)
    this.datagramToken = new Float64Array(datagramCapacity)
    this.holdKeys = new Uint32Array(hold * DATAGRAM_WORDS)
    this.holdToken = new Float64Array(hold)
    this.holdSince = new Float64Array(hold)
    this.holdPort = new Int32Array(hold)
    this.holdUsed = new Uint8Array(hold)
    this.holdMs = options.fragmentHoldMs ?? 5000
    this.onFragmentRelease = options.onFragmentRelease
  }

  private adoptRuleNames(rules: RuleSet): void {
    this.ruleBase = this.ruleNames.length
    for (const rule of rules.rules) this.ruleNames.push(rule.name)
  }

  /** Name of a rule by the global id found in Decision.rule (ids stay valid across replacements). */
  ruleName(id: number): string | null {
    return id < 0 ? null : this.ruleNames[id] ?? null
  }

  /**
   * Replaces the rules in one step: the next packet sees only the new set.
   * Established flows, registered or created by earlier decisions, are kept.
   * A rule that comes back unchanged (same name, priority, match and action)
   * keeps its hit count, as Open vSwitch's replace-flows keeps an unchanged
   * flow's statistics: `stat` after a reload still adds up for it.
   */
  replaceRules(rules: RuleSet): void {
    const previous = new Map<string, number>()
    this.rules.rules.forEach((rule, i) => previous.set(ruleIdentity(rule), i))
    rules.rules.forEach((rule, i) => {
      const old = previous.get(ruleIdentity(rule))
      if (old !== undefined) rules.hits[i] += this.rules.hits[old]
    })
    this.adoptRuleNames(rules)
    this.rules = rules
    this.generation++
  }

  get ruleSet(): RuleSet {
    return this.rules
  }

  get ruleGeneration(): number {
    return this.generation
  }

  get flowCount(): number {
    return this.flows.size
  }

  /** Where the flow table lives, and whether classifyBatch looks flows up in the addon. */
  get flowPath(): { memory: FlowTableMemory; nativeLookup: boolean } {
    return { memory: this.flows.memory, nativeLookup: this.native !== undefined }
  }

  // -------------------------------------------------------------------------
  // Registration by instances
  // -------------------------------------------------------------------------

  /** The instance's port and the addresses it owns (anti-spoofing). */
  setInstance(instance: number, port: number, addresses: readonly Prefix[]): void {
    this.instancePort[instance] = port
    this.instanceAddresses[instance] = [...addresses]
  }

  /**
   * Registers an established flow (connect/accept), kept until released; with
   * `expiresWhenIdle` (a datagram flow, which no close will release) it goes
   * with the idle decisions in expireIdleFlows. Returns false when the table is full.
   */
  registerFlow(fields: FlowKeyFields, instance: number, expiresWhenIdle = false): boolean {
    writeKey(fields, this.scratch)
    const limit = this.instanceFlowLimit[instance]
    if (limit > 0 && this.heldFlows[instance] >= limit) {
      // At its limit, an instance keeps what it holds (a decision of ours
      // for this very flow becomes its registration) but gets nothing new.
      const slot = this.flows.find(this.scratch, 0)
      if (slot < 0 || this.signedSlots[slot * FLOW_SLOT_WORDS + FS_OWNER] !== instance) {
        this.flowLimitRefusals[instance]++
        return false
      }
    }
    return this.insertFlow(this.scratch, instance, -1, expiresWhenIdle ? FLOW_DATAGRAM : FLOW_REGISTERED) >= 0
  }

  /** Whether the instance holds as many flows as its limit allows (a refused registration is why). */
  atFlowLimit(instance: number): boolean {
    const limit = this.instanceFlowLimit[instance]
    return limit > 0 && this.heldFlows[instance] >= limit
  }

  /** Flows instance i holds (registered, or decided for it), kept as flows come and go. */
  flowsHeldBy(instance: number): number {
    return this.heldFlows[instance]
  }

  releaseFlow(fields: FlowKeyFields): boolean {
    writeKey(fields, this.scratch)
    if (!this.deleteFlow(this.scratch)) return false
    this.flowRemovals++
    return true
  }

  /** Removes one flow: its record back on the free list, its owner's count down. */
  private deleteFlow(key: Uint32Array): boolean {
    const slot = this.flows.find(key, 0)
    if (slot < 0) return false
    const owner = this.signedSlots[slot * FLOW_SLOT_WORDS + FS_OWNER]
    this.freeRecords[this.freeCount++] = this.flows.delete(key, 0)
    if (owner >= 0) this.heldFlows[owner]--
    return true
  }

  /** Registers a listener; localAddress "0.0.0.0" or "::" means any address of that family. */
  registerListener(fields: { ipVersion: 4 | 6; protocol: number; localAddress: string; localPort: number; port: number }, instance: number): boolean {
    writeKey({ ...fields, remoteAddress: fields.ipVersion === 4 ? '0.0.0.0' : '::', remotePort: 0 }, this.scratch)
    return this.listeners.set(this.scratch, 0, instance) !== -2
  }

  releaseListener(fields: { ipVersion: 4 | 6; protocol: number; localAddress: string; localPort: number; port: number }): boolean {
    writeKey({ ...fields, remoteAddress: fields.ipVersion === 4 ? '0.0.0.0' : '::', remotePort: 0 }, this.scratch)
    return this.listeners.delete(this.scratch, 0) >= 0
  }

  /** Drops every flow and listener of an instance (it stopped or crashed). Not for the data path. */
  releaseInstance(instance: number): number {
    const doomed: Uint32Array[] = []
    this.flows.forEach((_, base) => {
      if (this.signedSlots[base + FS_OWNER] === instance) doomed.push(this.slots.slice(base + FS_KEY, base + FS_KEY + KEY_WORDS))
    })
    for (const key of doomed) this.deleteFlow(key)
    this.flowRemovals++
    const listeners: Uint32Array[] = []
    this.listeners.forEach((keys, off, owner) => {
      if (owner === instance) listeners.push(keys.slice(off, off + KEY_WORDS))
    })
    for (const key of listeners) this.listeners.delete(key, 0)
    return doomed.length
  }

  /**
   * Removes flows created by decisions, and datagram flows, that saw no
   * packet for more than idleMs (an instance's next datagram registers its
   * flow again). Flows registered by connect/accept stay until released. Last-seen times are whole milliseconds
   * modulo 2^32 (one word in the flow's slot), so ages are exact to a
   * millisecond and idleMs must stay below 2^32 ms (49 days).
   */
  expireIdleFlows(idleMs: number): number {
    const nowTick = this.now() >>> 0
    const doomed: Uint32Array[] = []
    this.flows.forEach((_, base) => {
      const age = (nowTick - this.slots[base + FS_LAST_SEEN]) >>> 0
      if (this.flowKind[this.slots[base + FS_RECORD] - 1] !== FLOW_REGISTERED && age > idleMs) doomed.push(this.slots.slice(base + FS_KEY, base + FS_KEY + KEY_WORDS))
    })
    for (const key of doomed) this.deleteFlow(key)
    this.flowRemovals++
    return doomed.length
  }

  /** Flows per instance (index i), counted in place: for stat, which must not build a record per flow. */
  countFlowsByInstance(): number[] {
    const counts = new Array<number>(this.instances.length).fill(0)
    this.flows.forEach((_, base) => {
      const owner = this.signedSlots[base + FS_OWNER]
      if (owner >= 0 && owner < counts.length) counts[owner]++
    })
    return counts
  }

  /** Visits every flow (for `flowstack flows`); allocates, not for the data path. */
  listFlows(): Array<{ key: FlowKeyFields; owner: number; rule: string | null; state: 'established' | 'decided'; packets: number; bytes: number }> {
    const out: ReturnType<Classifier['listFlows']> = []
    this.flows.forEach((_, base) => {
      const record = this.slots[base + FS_RECORD] - 1
      out.push({
        key: readKey(this.slots, base + FS_KEY),
        owner: this.signedSlots[base + FS_OWNER],
        rule: this.ruleName(this.signedSlots[base + FS_RULE]),
        state: this.flowKind[record] === FLOW_DECIDED ? 'decided' : 'established',
        packets: this.slots[base + FS_PACKETS] + this.packetsCarry[record],
        bytes: this.slots[base + FS_BYTES] + this.bytesCarry[record],
      })
    })
    return out
  }

  /** Registers or updates a flow; returns its slot, or -1 when the table is full. */
  private insertFlow(key: Uint32Array, owner: number, rule: number, kind: number): number {
    let slot = this.flows.find(key, 0)
    let record: number
    if (slot < 0) {
      if (this.freeCount === 0) return -1
      record = this.freeRecords[--this.freeCount]
      slot = this.flows.insert(key, 0, record)
      if (slot < 0) {
        this.freeCount++
        return -1
      }
      this.packetsCarry[record] = 0
      this.bytesCarry[record] = 0
      if (owner >= 0) this.heldFlows[owner]++
    } else {
      record = this.flows.record(slot)
      const previous = this.signedSlots[slot * FLOW_SLOT_WORDS + FS_OWNER]
      if (previous !== owner) {
        if (previous >= 0) this.heldFlows[previous]--
        if (owner >= 0) this.heldFlows[owner]++
      }
    }
    const base = slot * FLOW_SLOT_WORDS
    this.signedSlots[base + FS_OWNER] = owner
    this.signedSlots[base + FS_RULE] = rule
    this.slots[base + FS_LAST_SEEN] = this.now() >>> 0
    this.flowKind[record] = kind
    return slot
  }

  // -------------------------------------------------------------------------
  // Data path
  // -------------------------------------------------------------------------

  /**
   * Classifies a flow key (KEY_WORDS words, see key.ts) seen in `direction`.
   * The decision for a new flow is cached as a flow.
   */
  classifyKey(key: Uint32Array, direction: Direction, bytes = 0): Decision {
    const decision = this.decision
    decision.held = false
    decision.fragmentOf = -1
    const slot = this.flows.find(key, 0)
    if (slot >= 0) {
      const base = slot * FLOW_SLOT_WORDS
      decision.owner = this.signedSlots[base + FS_OWNER]
      decision.rule = this.signedSlots[base + FS_RULE]
      decision.reason = Reason.Flow
      // Counted here rather than in a helper: the hit path is hot enough that
      // V8's inlining budget (measured: the helper stayed a call) matters.
      const slots = this.slots
      const packets = slots[base + FS_PACKETS] + 1
      slots[base + FS_PACKETS] = packets
      if (packets > 0xffffffff) this.packetsCarry[slots[base + FS_RECORD] - 1] += 0x100000000
      const total = slots[base + FS_BYTES] + bytes
      slots[base + FS_BYTES] = total
      if (total > 0xffffffff) this.bytesCarry[slots[base + FS_RECORD] - 1] += 0x100000000
      slots[base + FS_LAST_SEEN] = this.now() >>> 0
      return this.count(decision)
    }
    this.decideNewFlow(key, direction, decision)
    const inserted = this.insertFlow(key, decision.owner, decision.rule, FLOW_DECIDED)
    if (inserted < 0) this.flowTableFull++
    else {
      const base = inserted * FLOW_SLOT_WORDS
      this.slots[base + FS_PACKETS] = 1
      this.slots[base + FS_BYTES] = bytes
    }
    return this.count(decision)
  }

  private decideNewFlow(key: Uint32Array, direction: Direction, decision: Decision): void {
    const rules = this.rules
    const rule = rules.lookup(key, direction)
    if (rule >= 0) {
      rules.hits[rule]++
      decision.owner = rules.rules[rule].owner
      decision.rule = this.ruleBase + rule
      decision.reason = Reason.Rule
      return
    }
    const listener = this.findListener(key)
    if (listener >= 0) {
      decision.owner = listener
      decision.rule = -1
      decision.reason = Reason.Listener
      return
    }
    decision.owner = this.hairpin ? OWNER_WIRE : this.ports[key[W_META] & 0xffff].defaultOwner
    decision.rule = -1
    decision.reason = Reason.Default
  }

  private findListener(key: Uint32Array): number {
    if (this.listeners.size === 0) return -1
    const s = this.scratch
    s[W_META] = key[W_META]
    for (let i = 0; i < 4; i++) {
      s[W_LOCAL + i] = key[W_LOCAL + i]
      s[W_REMOTE + i] = 0
    }
    s[W_PORTS] = key[W_PORTS] & 0xffff0000
    const exact = this.listeners.get(s, 0)
    if (exact >= 0) return exact
    for (let i = 0; i < 4; i++) s[W_LOCAL + i] = 0
    return this.listeners.get(s, 0)
  }

  private count(decision: Decision): Decision {
    this.reasonCounts[decision.reason]++
    this.ownerCounts[ownerSlot(decision.owner)]++
    return decision
  }

  private defaultDecision(portIndex: number, reason: Reason, decision: Decision): Decision {
    decision.owner = this.hairpin ? OWNER_WIRE : this.ports[portIndex].defaultOwner
    decision.rule = -1
    decision.reason = reason
    decision.held = false
    decision.fragmentOf = -1
    return decision
  }

  /**
   * Classifies a packet an instance sent as if it arrived on its port, so an
   * instance reaches another behind the same port through the same flows and
   * rules as a peer on the wire would. What nothing claims gets OWNER_WIRE
   * (it leaves on the port) instead of the port's default action, which is
   * for traffic arriving from the wire.
   */
  classifyHairpin(buf: Uint8Array, off: number, len: number, link: LinkKind, portIndex: number): Decision {
    // Expired wire fragments get the port's default, not OWNER_WIRE: expire them first.
    if (this.heldCount > 0 || this.datagrams.size > 0) this.expireFragments()
    this.hairpin = true
    try {
      // Token HAIRPIN_TOKEN: a later fragment held here belongs to no port
      // buffer (the caller drops it); its release must name none.
      return this.classifyPacket(buf, off, len, link, portIndex, Direction.In, HAIRPIN_TOKEN)
    } finally {
      this.hairpin = false
    }
  }

  /**
   * Classifies one packet. `token` identifies a held later fragment when its
   * decision is released later (a buffer index, a frame number).
   */
  classifyPacket(buf: Uint8Array, off: number, len: number, link: LinkKind, portIndex: number, direction: Direction, token = 0): Decision {
    const info = this.info
    if (extractFlowKeyFast(buf, off, len, link, portIndex, direction, info.key, 0)) {
      info.fragment = FragmentKind.None
      info.fragmentId = 0
      info.arpSenderAddress = -1
      return this.classifyKey(info.key, direction, len)
    }
    const status = extractFlowKey(buf, off, len, link, portIndex, direction, info)
    if (status !== ParseStatus.Ok) {
      return this.count(this.defaultDecision(portIndex, status === ParseStatus.NotIp ? Reason.NotIp : Reason.ParseError, this.decision))
    }
    if (info.fragment === FragmentKind.None) return this.classifyKey(info.key, direction, len)
    if (this.heldCount > 0 || this.datagrams.size > 0) this.expireFragments()
    const datagram = this.datagramKey(info)
    if (info.fragment === FragmentKind.First) {
      const decision = this.classifyKey(info.key, direction, len)
      this.rememberDatagram(datagram, decision, token)
      if (this.heldCount > 0) this.releaseHeld(datagram, decision, token)
      return decision
    }
    // A later fragment: RFC 791 / RFC 8200 put the transport header only in
    // the first fragment, so the datagram's decision is the first's.
    const entry = this.datagrams.get(datagram, 0)
    const decision = this.decision
    if (entry >= 0 && this.datagramExpires[entry] >= this.now()) {
      decision.owner = this.datagramOwner[entry]
      decision.rule = this.datagramRule[entry]
      decision.reason = this.datagramReason[entry]
      decision.held = false
      decision.fragmentOf = this.datagramToken[entry]
      return this.count(decision)
    }
    for (let slot = 0; slot < this.holdUsed.length; slot++) {
      if (this.holdUsed[slot] !== 0) continue
      this.holdUsed[slot] = 1
      this.holdKeys.set(datagram, slot * DATAGRAM_WORDS)
      this.holdToken[slot] = token
      this.holdSince[slot] = this.now()
      this.holdPort[slot] = portIndex
      this.heldCount++
      decision.held = true
      decision.fragmentOf = -1
      decision.owner = OWNER_DROP
      decision.rule = -1
      decision.reason = Reason.Default
      return decision
    }
    return this.count(this.defaultDecision(portIndex, Reason.FragmentOverflow, decision))
  }

  /**
   * Classifies a batch of packets of one buffer, in order, with the same
   * decisions, counters and flow caching as classifyPacket on each in turn;
   * results land in `batch.owners`, `batch.rules` and `batch.reasons`.
   *
   * Two stages. First every packet's flow is looked up: with the addon, one
   * call parses the fast-path headers, hashes and probes the same table
   * memory for the whole batch, prefetching a chunk of home slots before
   * probing any, so the cache misses of a batch overlap (Open vSwitch's
   * exact-match cache in front of its classifier); without it, the same in
   * TypeScript (parse and hash all, read every home slot, then probe). Then,
   * in order, hits are counted on their slot (already in cache) and
   * everything else takes the one-packet path at its place: packets the fast
   * parser does not take (fragments, VLAN tags, extension headers, non-IP,
   * malformed) and flows not yet in the table (new flows; an earlier packet
   * of the same batch may have opened one). The clock is read once per batch.
   */
  classifyBatch(buf: Uint8Array, batch: PacketBatch, link: LinkKind, portIndex: number, direction: Direction): void {
    const n = batch.count
    if (this.batchSlots.length < n) {
      // Grown once to the largest batch, never per packet.
      this.batchKeys = new Uint32Array(n * KEY_WORDS)
      this.batchHashes = new Uint32Array(n)
      this.batchSlots = new Int32Array(n)
    }
    const offsets = batch.offsets
    const lengths = batch.lengths
    const found = this.batchSlots
    if (this.native !== undefined) {
      this.native.flowLookupBatch(this.slots, buf, offsets, lengths, n, link, portIndex, direction === Direction.In, found)
    } else this.lookupBatch(buf, offsets, lengths, n, link, portIndex, direction, found)

    const nowTick = this.now() >>> 0
    const removals = this.flowRemovals
    const slots = this.slots
    const signedSlots = this.signedSlots
    const owners = batch.owners
    const rules = batch.rules
    const reasons = batch.reasons
    const ownerCounts = this.ownerCounts
    const key = this.missKey
    let flowHits = 0
    for (let i = 0; i < n; i++) {
      let slot = found[i]
      if (slot === -2 || ((slot < 0 || this.flowRemovals !== removals) && !extractFlowKeyFast(buf, offsets[i], lengths[i], link, portIndex, direction, key, 0))) {
        // The slow path, or (should the two parsers ever disagree) a packet the
        // fast parser refuses now: never decide on the previous packet's key.
        const decision = this.classifyPacket(buf, offsets[i], lengths[i], link, portIndex, direction, batch.tokens[i])
        owners[i] = decision.held ? OWNER_HELD : decision.owner
        rules[i] = decision.rule
        reasons[i] = decision.reason
        continue
      }
      if (slot < 0 || this.flowRemovals !== removals) {
        // A miss may have become a hit (an earlier packet of this batch
        // opened the flow), and a hit is stale if a callback removed flows
        // (removal moves slots): look again. The fast parser took this
        // packet in the first stage, so it took it again just above (into key).
        slot = this.flows.find(key, 0)
        if (slot < 0) {
          const decision = this.classifyKey(key, direction, lengths[i])
          owners[i] = decision.owner
          rules[i] = decision.rule
          reasons[i] = decision.reason
          continue
        }
      }
      const base = slot * FLOW_SLOT_WORDS
      const owner = signedSlots[base + FS_OWNER]
      owners[i] = owner
      rules[i] = signedSlots[base + FS_RULE]
      reasons[i] = Reason.Flow
      const packets = slots[base + FS_PACKETS] + 1
      slots[base + FS_PACKETS] = packets
      if (packets > 0xffffffff) this.packetsCarry[slots[base + FS_RECORD] - 1] += 0x100000000
      const bytes = slots[base + FS_BYTES] + lengths[i]
      slots[base + FS_BYTES] = bytes
      if (bytes > 0xffffffff) this.bytesCarry[slots[base + FS_RECORD] - 1] += 0x100000000
      slots[base + FS_LAST_SEEN] = nowTick
      ownerCounts[ownerSlot(owner)]++
      flowHits++
    }
    this.reasonCounts[Reason.Flow] += flowHits
  }

  /**
   * classifyBatch's first stage in TypeScript (no addon): found[i] = the
   * flow's slot, -1 when not in the table, -2 when the fast parser refuses
   * the packet. Parses and hashes every packet and reads each home slot
   * before probing any, so the reads are independent and their misses can
   * overlap (JavaScript has no prefetch hint).
   */
  private lookupBatch(buf: Uint8Array, offsets: Int32Array, lengths: Int32Array, n: number, link: LinkKind, portIndex: number, direction: Direction, found: Int32Array): void {
    const keys = this.batchKeys
    const hashes = this.batchHashes
    const flows = this.flows
    let sink = 0
    for (let i = 0; i < n; i++) {
      if (extractFlowKeyFast(buf, offsets[i], lengths[i], link, portIndex, direction, keys, i * KEY_WORDS)) {
        const hash = hashWords(keys, i * KEY_WORDS, KEY_WORDS)
        hashes[i] = hash
        sink |= flows.touch(hash)
        found[i] = -1
      } else found[i] = -2
    }
    this.prefetchSink = sink
    for (let i = 0; i < n; i++) {
      if (found[i] !== -2) found[i] = flows.findHashed(keys, i * KEY_WORDS, hashes[i])
    }
  }

  private datagramKey(info: PacketInfo): Uint32Array {
    const d = this.lastDatagram
    for (let i = 0; i < W_PORTS; i++) d[i] = info.key[i]
    d[W_PORTS] = info.fragmentId >>> 0
    return d
  }

  private rememberDatagram(datagram: Uint32Array, decision: Decision, token: number): void {
    let entry = this.datagrams.get(datagram, 0)
    if (entry < 0) {
      // Round-robin over a fixed pool: the oldest datagram record is reused.
      entry = this.datagramNext
      this.datagramNext = (this.datagramNext + 1) % this.datagramOwner.length
      if (this.datagramExpires[entry] !== 0) this.datagrams.delete(this.datagramKeys, entry * DATAGRAM_WORDS)
      this.datagrams.set(datagram, 0, entry)
      this.datagramKeys.set(datagram, entry * DATAGRAM_WORDS)
    }
    this.datagramOwner[entry] = decision.owner
    this.datagramRule[entry] = decision.rule
    this.datagramReason[entry] = decision.reason
    this.datagramExpires[entry] = this.now() + this.holdMs
    this.datagramToken[entry] = token
  }

  private releaseHeld(datagram: Uint32Array, decision: Decision, firstToken: number): void {
    const release = this.releaseDecision
    for (let slot = 0; slot < this.holdUsed.length; slot++) {
      if (this.holdUsed[slot] === 0) continue
      const base = slot * DATAGRAM_WORDS
      let i = 0
      while (i < DATAGRAM_WORDS && this.holdKeys[base + i] === datagram[i]) i++
      if (i !== DATAGRAM_WORDS) continue
      this.holdUsed[slot] = 0
      this.heldCount--
      release.owner = decision.owner
      release.rule = decision.rule
      release.reason = decision.reason
      release.held = false
      release.fragmentOf = firstToken
      this.count(release)
      this.onFragmentRelease?.(this.holdToken[slot], release)
    }
  }

  /** Releases held fragments older than the hold time with the default action, and forgets stale datagrams. */
  expireFragments(): void {
    const now = this.now()
    if (this.heldCount > 0) {
      for (let slot = 0; slot < this.holdUsed.length; slot++) {
        if (this.holdUsed[slot] === 0 || now - this.holdSince[slot] < this.holdMs) continue
        this.holdUsed[slot] = 0
        this.heldCount--
        const release = this.count(this.defaultDecision(this.holdPort[slot], Reason.FragmentExpired, this.releaseDecision))
        this.onFragmentRelease?.(this.holdToken[slot], release)
      }
    }
  }

  /** Releases every held fragment as expired (end of a capture, shutdown). */
  flushHeldFragments(): void {
    for (let slot = 0; slot < this.holdUsed.length; slot++) {
      if (this.holdUsed[slot] === 0) continue
      this.holdUsed[slot] = 0
      this.heldCount--
      const release = this.count(this.defaultDecision(this.holdPort[slot], Reason.FragmentExpired, this.releaseDecision))
      this.onFragmentRelease?.(this.holdToken[slot], release)
    }
  }

  get heldFragments(): number {
    return this.heldCount
  }

  // -------------------------------------------------------------------------
  // Anti-spoofing (TX from an instance)
  // -------------------------------------------------------------------------

  /**
   * Whether an instance may send this packet: it must come from an address
   * the instance owns and belong to a flow (or listener) it holds. ICMP and
   * ICMPv6 (errors, neighbour discovery) need only the owned source address;
   * ARP needs an owned sender address. Refusals are counted by reason.
   */
  checkOutbound(buf: Uint8Array, off: number, len: number, link: LinkKind, instance: number): boolean {
    const info = this.info
    const port = this.instancePort[instance]
    const status = extractFlowKey(buf, off, len, link, port < 0 ? 0 : port, Direction.Out, info)
    if (status === ParseStatus.NotIp) {
      if (info.arpSenderAddress >= 0 && this.ownsIPv4(instance, info.arpSenderAddress)) return true
      this.spoofCounts[info.arpSenderAddress >= 0 ? SpoofReason.Address : SpoofReason.NotIp]++
      return false
    }
    if (status === ParseStatus.ParseError) {
      this.spoofCounts[SpoofReason.ParseError]++
      return false
    }
    const key = info.key
    if (!this.ownsAddress(instance, key)) {
      this.spoofCounts[SpoofReason.Address]++
      return false
    }
    const protocol = keyProtocol(key)
    if (protocol === PROTO_ICMP || protocol === PROTO_ICMPV6 || info.fragment === FragmentKind.Later) return true
    const slot = this.flows.find(key, 0)
    if (slot >= 0 && this.signedSlots[slot * FLOW_SLOT_WORDS + FS_OWNER] === instance) return true
    if (this.findListener(key) === instance) return true
    this.spoofCounts[SpoofReason.Flow]++
    return false
  }

  private ownsIPv4(instance: number, address: number): boolean {
    for (const prefix of this.instanceAddresses[instance]) {
      if (prefix.ipVersion === 4 && prefix.addressWords[0] === address) return true
    }
    return false
  }

  private ownsAddress(instance: number, key: Uint32Array): boolean {
    const version = keyIpVersion(key)
    for (const prefix of this.instanceAddresses[instance]) {
      if (prefix.ipVersion !== version) continue
      const a = prefix.addressWords
      if (a[0] === key[W_LOCAL] && a[1] === key[W_LOCAL + 1] && a[2] === key[W_LOCAL + 2] && a[3] === key[W_LOCAL + 3]) return true
    }
    return false
  }
}

/** A rule's whole definition as one string (typed arrays as plain lists), to find unchanged rules. */
function ruleIdentity(rule: RuleSpec): string {
  return JSON.stringify(rule, (_key, value: unknown) => (ArrayBuffer.isView(value) ? Array.from(value as Uint32Array) : value))
}
