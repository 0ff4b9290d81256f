// Operator rules compiled for tuple-space search (Srinivasan et al., as used
// by Open vSwitch's classifier and Skywalk's flow manager): rules are grouped
// by their mask (which fields they constrain, prefix lengths, exact ports);
// each group is one exact-match table keyed by the packet's key under that
// mask. A lookup probes only the masks that actually occur, highest
// priority first, and stops once no remaining group can beat the best match.
// Port ranges that are not a single port are checked after the hash hit.
import { Direction, KEY_WORDS, W_META, W_PORTS, keyLocalPort, keyProtocol, keyRemotePort, prefixMask, protocolHasPorts, type Prefix } from './key.js'
import { ExactTable } from './table.js'

/** Owners: an instance index (>= 0), the kernel or drop. */
export const OWNER_KERNEL = -1
export const OWNER_DROP = -2

export interface PortRangeSpec {
  from: number
  to: number
}

/** One rule, resolved against the config (names turned into indexes). */
export interface RuleSpec {
  name: string
  priority: number
  port?: number
  direction?: Direction
  ipVersion?: 4 | 6
  protocol?: number
  localPrefix?: Prefix
  remotePrefix?: Prefix
  localPorts?: PortRangeSpec
  remotePorts?: PortRangeSpec
  /** Instance index, OWNER_KERNEL or OWNER_DROP. */
  owner: number
}

/** Key words plus one word for the direction. */
const TUPLE_WORDS = KEY_WORDS + 1

interface Tuple {
  mask: Uint32Array
  table: ExactTable
  /** Rule indexes per table value: listStart[v] .. listStart[v] + listLength[v] in `members`. */
  listStart: Int32Array
  listLength: Int32Array
  members: Int32Array
  maxPriority: number
}

export class RuleSet {
  readonly rules: readonly RuleSpec[]
  /** Hits per rule, by index; counted by the classifier. */
  readonly hits: Float64Array
  readonly tupleCount: number
  private readonly tuples: Tuple[]
  private readonly priority: Int32Array
  /** -1 when the rule has no such range or the range is an exact port folded into the mask. */
  private readonly localFrom: Int32Array
  private readonly localTo: Int32Array
  private readonly remoteFrom: Int32Array
  private readonly remoteTo: Int32Array
  /** 1 when the rule names ports, so only TCP/UDP packets can match. */
  private readonly needsPorts: Uint8Array
  private readonly scratch = new Uint32Array(TUPLE_WORDS)

  constructor(rules: readonly RuleSpec[]) {
    this.rules = rules
    const n = rules.length
    this.hits = new Float64Array(n)
    this.priority = new Int32Array(n)
    this.localFrom = new Int32Array(n).fill(-1)
    this.localTo = new Int32Array(n).fill(-1)
    this.remoteFrom = new Int32Array(n).fill(-1)
    this.remoteTo = new Int32Array(n).fill(-1)
    this.needsPorts = new Uint8Array(n)

    const groups = new Map<string, { mask: Uint32Array; entries: Map<string, { value: Uint32Array; rules: number[] }> }>()
    rules.forEach((rule, index) => {
      this.priority[index] = rule.priority
      const mask = new Uint32Array(TUPLE_WORDS)
      const value = new Uint32Array(TUPLE_WORDS)
      const ipVersion = rule.ipVersion ?? rule.localPrefix?.ipVersion ?? rule.remotePrefix?.ipVersion
      let metaMask = 0
      let meta = 0
      if (ipVersion !== undefined) {
        metaMask |= 0xff000000
        meta |= ipVersion << 24
      }
      if (rule.protocol !== undefined) {
        metaMask |= 0x00ff0000
        meta |= rule.protocol << 16
      }
      if (rule.port !== undefined) {
        metaMask |= 0xffff
        meta |= rule.port
      }
      mask[W_META] = metaMask >>> 0
      value[W_META] = meta >>> 0
      for (const [prefix, base] of [[rule.localPrefix, 1], [rule.remotePrefix, 5]] as const) {
        if (prefix === undefined) continue
        prefixMask(prefix.ipVersion === 4 ? Math.min(prefix.length, 32) : prefix.length, mask, base)
        if (prefix.ipVersion === 4) {
          mask[base + 1] = 0
          mask[base + 2] = 0
          mask[base + 3] = 0
        }
        for (let i = 0; i < 4; i++) value[base + i] = (prefix.words[i] & mask[base + i]) >>> 0
      }
      let portsMask = 0
      let ports = 0
      if (rule.localPorts !== undefined) {
        this.needsPorts[index] = 1
        if (rule.localPorts.from === rule.localPorts.to) {
          portsMask |= 0xffff0000
          ports |= rule.localPorts.from << 16
        } else {
          this.localFrom[index] = rule.localPorts.from
          this.localTo[index] = rule.localPorts.to
        }
      }
      if (rule.remotePorts !== undefined) {
        this.needsPorts[index] = 1
        if (rule.remotePorts.from === rule.remotePorts.to) {
          portsMask |= 0xffff
          ports |= rule.remotePorts.from
        } else {
          this.remoteFrom[index] = rule.remotePorts.from
          this.remoteTo[index] = rule.remotePorts.to
        }
      }
      mask[W_PORTS] = portsMask >>> 0
      value[W_PORTS] = ports >>> 0
      if (rule.direction !== undefined) {
        mask[KEY_WORDS] = 0xff
        value[KEY_WORDS] = rule.direction
      }
      const maskId = mask.join(',')
      let group = groups.get(maskId)
      if (group === undefined) {
        group = { mask, entries: new Map() }
        groups.set(maskId, group)
      }
      const valueId = value.join(',')
      let entry = group.entries.get(valueId)
      if (entry === undefined) {
        entry = { value, rules: [] }
        group.entries.set(valueId, entry)
      }
      entry.rules.push(index)
    })

    const byPriorityThenOrder = (a: number, b: number): number => rules[b].priority - rules[a].priority || a - b
    this.tuples = []
    for (const group of groups.values()) {
      const table = new ExactTable(TUPLE_WORDS, Math.max(1, group.entries.size))
      const listStart = new Int32Array(group.entries.size)
      const listLength = new Int32Array(group.entries.size)
      const members: number[] = []
      let maxPriority = -Infinity
      let v = 0
      for (const entry of group.entries.values()) {
        entry.rules.sort(byPriorityThenOrder)
        listStart[v] = members.length
        listLength[v] = entry.rules.length
        members.push(...entry.rules)
        maxPriority = Math.max(maxPriority, rules[entry.rules[0]].priority)
        table.set(entry.value, 0, v)
        v++
      }
      this.tuples.push({ mask: group.mask, table, listStart, listLength, members: Int32Array.from(members), maxPriority })
    }
    this.tuples.sort((a, b) => b.maxPriority - a.maxPriority)
    this.tupleCount = this.tuples.length
  }

  /** The index of the best matching rule for the key seen in this direction, or -1. */
  lookup(key: Uint32Array, direction: Direction): number {
    const scratch = this.scratch
    const tuples = this.tuples
    let best = -1
    let bestPriority = 0
    for (let t = 0; t < tuples.length; t++) {
      const tuple = tuples[t]
      if (best >= 0 && tuple.maxPriority < bestPriority) break
      const mask = tuple.mask
      for (let i = 0; i < KEY_WORDS; i++) scratch[i] = key[i] & mask[i]
      scratch[KEY_WORDS] = direction & mask[KEY_WORDS]
      const list = tuple.table.get(scratch, 0)
      if (list < 0) continue
      const start = tuple.listStart[list]
      const stop = start + tuple.listLength[list]
      for (let j = start; j < stop; j++) {
        const rule = tuple.members[j]
        const priority = this.priority[rule]
        // Lists are sorted by priority, then config order: nothing further can win.
        if (best >= 0 && (priority < bestPriority || (priority === bestPriority && rule > best))) break
        if (this.rangesMatch(rule, key)) {
          best = rule
          bestPriority = priority
          break
        }
      }
    }
    return best
  }

  private rangesMatch(rule: number, key: Uint32Array): boolean {
    if (this.needsPorts[rule] === 0) return true
    if (!protocolHasPorts(keyProtocol(key))) return false
    const localFrom = this.localFrom[rule]
    if (localFrom >= 0) {
      const port = keyLocalPort(key)
      if (port < localFrom || port > this.localTo[rule]) return false
    }
    const remoteFrom = this.remoteFrom[rule]
    if (remoteFrom >= 0) {
      const port = keyRemotePort(key)
      if (port < remoteFrom || port > this.remoteTo[rule]) return false
    }
    return true
  }
}
