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
import { Direction, KEY_WORDS, W_LOCAL, W_META, W_PORTS, W_REMOTE, keyIpVersion, keyProtocol, type FlowKeyFields, type Prefix, writeKey, readKey, PROTO_ICMP, PROTO_ICMPV6 } from './key.js'
import { extractFlowKey, extractFlowKeyFast, FragmentKind, LinkKind, PacketInfo, ParseStatus } from './extract.js'
import { OWNER_DROP, OWNER_KERNEL, RuleSet } from './rules.js'
import { ExactTable, hashWords } from './table.js'

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
  /** Instance index, OWNER_KERNEL or OWNER_DROP. */
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
  /** Later fragments held while their first fragment has not arrived. Default 64. */
  fragmentHoldPackets?: number
  /** How long a held fragment, or a first fragment's decision, stays. Default 5000 ms. */
  fragmentHoldMs?: number
  /** Milliseconds; injected so replays are deterministic. */
  now?: () => number
  /** Called when a held fragment is decided (its first fragment arrived, it expired, or the hold overflowed). */
  onFragmentRelease?: (token: number, decision: Decision) => void
}

const RECORD_WORDS = 6
const R_OWNER = 0
const R_RULE = 1
const R_KIND = 2
const R_PACKETS = 3
const R_BYTES = 4
const R_LAST_SEEN = 5
const FLOW_REGISTERED = 1
const FLOW_DECIDED = 2
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

  // Flow table: key -> record index; records in parallel arrays.
  private readonly flows: ExactTable
  /**
   * Flow records, RECORD_WORDS numbers each (owner, rule, kind, packets,
   * bytes, last seen) side by side, so a hit touches one cache line or two.
   */
  private readonly records: Float64Array
  private readonly freeRecords: Int32Array
  private freeCount: number

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
  /** Decisions by owner: index 0 kernel, 1 drop, 2 + i instance i. */
  readonly ownerCounts: Float64Array
  readonly spoofCounts = new Float64Array(SPOOF_REASON_NAMES.length)
  /** Decisions that could not be cached because the flow table was full. */
  flowTableFull = 0

  /** Bumped whenever flows are removed, so batch lookups know their prefetched record indexes still hold. */
  private flowRemovals = 0
  // Batch scratch (see classifyBatch), grown to the largest batch seen.
  private batchKeys = new Uint32Array(256 * KEY_WORDS)
  private batchHashes = new Uint32Array(256)
  private batchRecords = new Int32Array(256)
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
    this.flows = new ExactTable(KEY_WORDS, maxFlows)
    this.records = new Float64Array(maxFlows * RECORD_WORDS)
    this.freeRecords = new Int32Array(maxFlows)
    for (let i = 0; i < maxFlows; i++) this.freeRecords[i] = maxFlows - 1 - i
    this.freeCount = maxFlows
    this.listeners = new ExactTable(KEY_WORDS, 4096)
    this.instanceAddresses = options.instances.map(() => [])
    this.instancePort = new Int32Array(options.instances.length).fill(-1)
    this.ownerCounts = new Float64Array(2 + options.instances.length)

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
   */
  replaceRules(rules: RuleSet): void {
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

  // -------------------------------------------------------------------------
  // Registration by instances
  // -------------------------------------------------------------------------

  /** The instance's port and the addresses it owns (anti-spoofing). */
  setInstance(instance: number, port: number, addresses: readonly Prefix[]): void {
    this.instancePort[instance] = port
    this.instanceAddresses[instance] = [...addresses]
  }

  /** Registers an established flow (connect/accept). Returns false when the table is full. */
  registerFlow(fields: FlowKeyFields, instance: number): boolean {
    writeKey(fields, this.scratch)
    return this.insertFlow(this.scratch, instance, -1, FLOW_REGISTERED)
  }

  releaseFlow(fields: FlowKeyFields): boolean {
    writeKey(fields, this.scratch)
    const record = this.flows.delete(this.scratch, 0)
    if (record < 0) return false
    this.freeRecords[this.freeCount++] = record
    this.flowRemovals++
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
    this.flows.forEach((keys, off, record) => {
      if (this.records[record * RECORD_WORDS + R_OWNER] === instance) doomed.push(keys.slice(off, off + KEY_WORDS))
    })
    for (const key of doomed) this.freeRecords[this.freeCount++] = this.flows.delete(key, 0)
    this.flowRemovals++
    const listeners: Uint32Array[] = []
    this.listeners.forEach((keys, off, owner) => {
      if (owner === instance) listeners.push(keys.slice(off, off + KEY_WORDS))
    })
    for (const key of listeners) this.listeners.delete(key, 0)
    return doomed.length
  }

  /** Removes flows created by decisions that saw no packet for idleMs. Registered flows stay. */
  expireIdleFlows(idleMs: number): number {
    const cutoff = this.now() - idleMs
    const doomed: Uint32Array[] = []
    this.flows.forEach((keys, off, record) => {
      if (this.records[record * RECORD_WORDS + R_KIND] === FLOW_DECIDED && this.records[record * RECORD_WORDS + R_LAST_SEEN] < cutoff) doomed.push(keys.slice(off, off + KEY_WORDS))
    })
    for (const key of doomed) this.freeRecords[this.freeCount++] = this.flows.delete(key, 0)
    this.flowRemovals++
    return doomed.length
  }

  /** Visits every flow (for `flowstack flows`); allocates, not for the data path. */
  listFlows(): Array<{ key: FlowKeyFields; owner: number; rule: string | null; state: 'established' | 'decided'; packets: number; bytes: number }> {
    const out: ReturnType<Classifier['listFlows']> = []
    this.flows.forEach((keys, off, record) => {
      out.push({
        key: readKey(keys, off),
        owner: this.records[record * RECORD_WORDS + R_OWNER],
        rule: this.ruleName(this.records[record * RECORD_WORDS + R_RULE]),
        state: this.records[record * RECORD_WORDS + R_KIND] === FLOW_REGISTERED ? 'established' : 'decided',
        packets: this.records[record * RECORD_WORDS + R_PACKETS],
        bytes: this.records[record * RECORD_WORDS + R_BYTES],
      })
    })
    return out
  }

  private insertFlow(key: Uint32Array, owner: number, rule: number, kind: number): boolean {
    const existing = this.flows.get(key, 0)
    let record = existing
    if (record < 0) {
      if (this.freeCount === 0) return false
      record = this.freeRecords[--this.freeCount]
      if (this.flows.set(key, 0, record) === -2) {
        this.freeCount++
        return false
      }
      this.records[record * RECORD_WORDS + R_PACKETS] = 0
      this.records[record * RECORD_WORDS + R_BYTES] = 0
    }
    this.records[record * RECORD_WORDS + R_OWNER] = owner
    this.records[record * RECORD_WORDS + R_RULE] = rule
    this.records[record * RECORD_WORDS + R_KIND] = kind
    this.records[record * RECORD_WORDS + R_LAST_SEEN] = this.now()
    return true
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
    const record = this.flows.get(key, 0)
    if (record >= 0) {
      const records = this.records
      const at = record * RECORD_WORDS
      decision.owner = records[at + R_OWNER]
      decision.rule = records[at + R_RULE]
      decision.reason = Reason.Flow
      records[at + R_PACKETS]++
      records[at + R_BYTES] += bytes
      records[at + R_LAST_SEEN] = this.now()
      return this.count(decision)
    }
    this.decideNewFlow(key, direction, decision)
    if (!this.insertFlow(key, decision.owner, decision.rule, FLOW_DECIDED)) this.flowTableFull++
    else {
      const inserted = this.flows.get(key, 0)
      this.records[inserted * RECORD_WORDS + R_PACKETS] = 1
      this.records[inserted * RECORD_WORDS + R_BYTES] = bytes
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
    decision.owner = this.ports[key[W_META] & 0xffff].defaultOwner
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
    this.ownerCounts[decision.owner === OWNER_KERNEL ? 0 : decision.owner === OWNER_DROP ? 1 : 2 + decision.owner]++
    return decision
  }

  private defaultDecision(portIndex: number, reason: Reason, decision: Decision): Decision {
    decision.owner = this.ports[portIndex].defaultOwner
    decision.rule = -1
    decision.reason = reason
    decision.held = false
    decision.fragmentOf = -1
    return decision
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
   * The stages: read every packet's first byte; parse and hash every key
   * and read its home slot; find every record and read it; then decide in
   * order. With 100 000 flows the table and records are far larger than the
   * caches and one packet's lookup is a chain of dependent misses; staging
   * makes the misses of a batch independent so they can overlap. Measured on
   * the shared 2-core VM (Nov 2026) this was neutral at 100 000 flows and
   * slower than classifyPacket when the table fits in cache (the extra passes
   * cost more than they save); keep it for the single call per ring batch,
   * and measure again before relying on the staging.
   * The clock is read once per batch. Packets the fast parser does not take
   * (fragments, VLAN tags, extension headers, non-IP, malformed) and new
   * flows go through the one-packet path at their place in the order.
   */
  classifyBatch(buf: Uint8Array, batch: PacketBatch, link: LinkKind, portIndex: number, direction: Direction): void {
    const n = batch.count
    if (this.batchHashes.length < n) {
      // Grown once to the largest batch, never per packet.
      this.batchKeys = new Uint32Array(n * KEY_WORDS)
      this.batchHashes = new Uint32Array(n)
      this.batchRecords = new Int32Array(n)
    }
    const offsets = batch.offsets
    const lengths = batch.lengths
    const keys = this.batchKeys
    const hashes = this.batchHashes
    const found = this.batchRecords
    const flows = this.flows
    const records = this.records
    let sink = 0
    const size = buf.length
    for (let i = 0; i < n; i++) {
      const offset = offsets[i]
      if (offset >= 0 && offset < size) sink |= buf[offset]
    }
    for (let i = 0; i < n; i++) {
      if (extractFlowKeyFast(buf, offsets[i], lengths[i], link, portIndex, direction, keys, i * KEY_WORDS)) {
        const hash = hashWords(keys, i * KEY_WORDS, KEY_WORDS)
        hashes[i] = hash
        sink |= flows.touch(hash)
        found[i] = -1
      } else found[i] = -2
    }
    for (let i = 0; i < n; i++) {
      if (found[i] === -2) continue
      const record = flows.getHashed(keys, i * KEY_WORDS, hashes[i])
      found[i] = record
      if (record >= 0) sink |= records[record * RECORD_WORDS + R_PACKETS]
    }
    this.prefetchSink = sink

    const now = this.now()
    const removals = this.flowRemovals
    const owners = batch.owners
    const rules = batch.rules
    const reasons = batch.reasons
    const ownerCounts = this.ownerCounts
    let flowHits = 0
    for (let i = 0; i < n; i++) {
      let record = found[i]
      if (record === -2) {
        const decision = this.classifyPacket(buf, offsets[i], lengths[i], link, portIndex, direction, batch.tokens[i])
        owners[i] = decision.held ? OWNER_HELD : decision.owner
        rules[i] = decision.rule
        reasons[i] = decision.reason
        continue
      }
      // A miss may have become a hit (an earlier packet of this batch opened
      // the flow), and a hit may be stale if a callback removed flows.
      if (record < 0 || this.flowRemovals !== removals) record = flows.getHashed(keys, i * KEY_WORDS, hashes[i])
      if (record < 0) {
        const key = this.missKey
        for (let w = 0; w < KEY_WORDS; w++) key[w] = keys[i * KEY_WORDS + w]
        const decision = this.classifyKey(key, direction, lengths[i])
        owners[i] = decision.owner
        rules[i] = decision.rule
        reasons[i] = decision.reason
        continue
      }
      const at = record * RECORD_WORDS
      const owner = records[at + R_OWNER]
      owners[i] = owner
      rules[i] = records[at + R_RULE]
      reasons[i] = Reason.Flow
      records[at + R_PACKETS]++
      records[at + R_BYTES] += lengths[i]
      records[at + R_LAST_SEEN] = now
      ownerCounts[owner >= 0 ? owner + 2 : -1 - owner]++
      flowHits++
    }
    this.reasonCounts[Reason.Flow] += flowHits
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
    const record = this.flows.get(key, 0)
    if (record >= 0 && this.records[record * RECORD_WORDS + R_OWNER] === instance) return true
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
