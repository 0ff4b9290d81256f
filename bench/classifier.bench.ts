// Flow classification rate: the classifier (exact flow table + tuple-space
// rules) on packets of 100 000 established flows (20 000 in quick mode), and
// its rule lookup for new flows, each next to a linear scan of the same rules
// over the same packets in the same run. Rule sets of 10, 1 000 and 10 000
// rules mix the shapes operators write (blocked remote prefixes, service
// ports, local prefixes with port ranges), with random priorities.
// Addresses are numbers in memory only, drawn from the documentation ranges.
//
// Which memory the packets come from (the rows say which):
// - "packets in a trace": all packets lie one after another in one buffer
//   (64 bytes apart, 6.4 MB for 100k flows) in arrival order, flows arriving
//   at random; the classifier reads each packet's bytes from memory for the
//   first time, as from a ring it has never touched. Rows with no note are
//   this model.
// - "headers in a port arena": before each batch, its packets' 64 header
//   bytes are copied into a batch-sized arena (256 buffers of 2 KiB, as a
//   port's pool) and only the classification is timed: the switch classifies
//   packets the I/O thread has just written into the port's arena.
// The flow table is probed at random in both (flows arrive at random).
// Batch rows use the addon's exact-match lookup when it is built (and say
// so); "TypeScript only" rows are the same classifier without the addon.
import { Classifier, Direction, LinearRuleScan, LinkKind, OWNER_DROP, OWNER_KERNEL, PacketBatch, PacketInfo, RuleSet, extractFlowKey, parsePrefix, type RuleSpec } from '../classifier/index.js'
import type { BenchOptions, BenchResult } from './types.js'

const V4_BASES = [0xc6336400, 0xcb007100, 0xc0000200] // 198.51.100.0, 203.0.113.0, 192.0.2.0
const STRIDE = 64

function rng(seed: number): (n: number) => number {
  let s = seed >>> 0
  return (n) => {
    s ^= s << 13
    s >>>= 0
    s ^= s >>> 17
    s ^= s << 5
    s >>>= 0
    return s % n
  }
}

function v4(random: (n: number) => number): string {
  return `${['198.51.100', '203.0.113', '192.0.2'][random(3)]}.${random(256)}`
}

function v6(random: (n: number) => number): string {
  return `2001:db8:${random(65536).toString(16)}:${random(65536).toString(16)}::${random(65536).toString(16)}`
}

function makeRules(count: number, random: (n: number) => number): RuleSpec[] {
  const rules: RuleSpec[] = []
  for (let i = 0; i < count; i++) {
    const shape = random(10)
    const ipv6 = random(2) === 0
    const priority = random(100)
    const owner = [0, 1, OWNER_KERNEL, OWNER_DROP][random(4)]
    const name = `r${i}`
    if (shape < 4) {
      const prefix = ipv6 ? `${v6(random)}/${[48, 64, 128][random(3)]}` : `${v4(random)}/${[24, 32][random(2)]}`
      rules.push({ name, priority, remotePrefix: parsePrefix(prefix)!, owner })
    } else if (shape < 7) {
      rules.push({ name, priority, protocol: random(2) === 0 ? 6 : 17, localPorts: { from: 1 + random(65535), to: 0 }, owner })
      const last = rules[rules.length - 1]
      last.localPorts!.to = last.localPorts!.from
    } else if (shape < 9) {
      const prefix = ipv6 ? `${v6(random)}/64` : `${v4(random)}/24`
      const from = 1 + random(60000)
      rules.push({ name, priority, protocol: 6, localPrefix: parsePrefix(prefix)!, localPorts: { from, to: from + random(1000) }, owner })
    } else {
      const prefix = ipv6 ? `${v6(random)}/56` : `${v4(random)}/28`
      rules.push({ name, priority, direction: Direction.In, remotePrefix: parsePrefix(prefix)!, remotePorts: { from: 53, to: 53 }, protocol: 17, owner })
    }
  }
  return rules
}

/** Writes `flows` inbound TCP/UDP packets (IPv4 and IPv6, headers only) into one buffer, STRIDE bytes apart. */
function makePackets(flows: number, random: (n: number) => number): { buffer: Uint8Array; lengths: Uint16Array } {
  const buffer = new Uint8Array(flows * STRIDE)
  const lengths = new Uint16Array(flows)
  const view = new DataView(buffer.buffer)
  for (let f = 0; f < flows; f++) {
    const at = f * STRIDE
    const tcp = random(4) !== 0
    const protocol = tcp ? 6 : 17
    const l4 = tcp ? 20 : 8
    if (random(2) === 0) {
      buffer[at] = 0x45
      view.setUint16(at + 2, 20 + l4)
      buffer[at + 8] = 64
      buffer[at + 9] = protocol
      view.setUint32(at + 12, V4_BASES[random(3)] + random(256))
      view.setUint32(at + 16, V4_BASES[random(3)] + random(256))
      view.setUint16(at + 20, 1024 + random(64000))
      view.setUint16(at + 22, [443, 80, 53, 8080][random(4)])
      lengths[f] = 20 + l4
    } else {
      buffer[at] = 0x60
      view.setUint16(at + 4, l4)
      buffer[at + 6] = protocol
      buffer[at + 7] = 64
      for (const off of [8, 24]) {
        view.setUint32(at + off, 0x20010db8)
        view.setUint32(at + off + 4, random(0x10000) * 0x10000 + random(0x10000))
        view.setUint32(at + off + 8, 0)
        view.setUint32(at + off + 12, random(0x10000))
      }
      view.setUint16(at + 40, 1024 + random(64000))
      view.setUint16(at + 42, [443, 80, 53, 8080][random(4)])
      lengths[f] = 40 + l4
    }
  }
  return { buffer, lengths }
}

/** Runs `step(i)` over the packet indexes in `order` until `budgetMs` or `maxOps`; returns operations per second. */
function rate(order: Uint32Array, budgetMs: number, maxOps: number, step: (i: number) => void): number {
  // Warm-up, so the JIT has compiled the path before the clock starts;
  // bounded in time too (a linear scan of 10 000 rules takes ~0.1 ms a packet).
  const warmStart = performance.now()
  for (let k = 0; k < Math.min(maxOps, 30_000); k++) {
    step(order[(order.length - 1 - k) % order.length])
    if ((k & 255) === 255 && performance.now() - warmStart > budgetMs / 2) break
  }
  let ops = 0
  const start = performance.now()
  let elapsed = 0
  while (ops < maxOps) {
    for (let k = 0; k < 1024 && ops < maxOps; k++, ops++) step(order[ops % order.length])
    elapsed = performance.now() - start
    if (elapsed > budgetMs) break
  }
  return (ops / elapsed) * 1000
}

const BATCH = 256
const ARENA_STRIDE = 2048

/**
 * Like batchRate, but each batch's packets are first copied into a
 * batch-sized arena (BATCH buffers of ARENA_STRIDE bytes, as a port pool),
 * outside the timed part, and classified from there.
 */
function arenaBatchRate(trace: Uint8Array, order: Uint32Array, lengths: Uint16Array, budgetMs: number, maxPackets: number, classify: (arena: Uint8Array, batch: PacketBatch) => void): number {
  const batch = new PacketBatch(BATCH)
  const arena = new Uint8Array(BATCH * ARENA_STRIDE)
  let cursor = 0
  const fill = (): void => {
    batch.clear()
    for (let k = 0; k < BATCH; k++) {
      const f = order[cursor]
      cursor = cursor + 1 === order.length ? 0 : cursor + 1
      arena.set(trace.subarray(f * STRIDE, f * STRIDE + STRIDE), k * ARENA_STRIDE)
      batch.add(k * ARENA_STRIDE, lengths[f], f)
    }
  }
  for (let warm = 0; warm < Math.min(maxPackets, 30_000); warm += BATCH) {
    fill()
    classify(arena, batch)
  }
  let packets = 0
  let timed = 0
  const start = performance.now()
  while (packets < maxPackets && performance.now() - start < budgetMs) {
    for (let k = 0; k < 8; k++, packets += BATCH) {
      fill()
      const before = performance.now()
      classify(arena, batch)
      timed += performance.now() - before
    }
  }
  return (packets / timed) * 1000
}

/**
 * Classifies the packets in `order` in batches of BATCH descriptors (as the
 * switch takes them off a ring) until `budgetMs` or `maxPackets`; returns
 * packets per second.
 */
function batchRate(order: Uint32Array, lengths: Uint16Array, budgetMs: number, maxPackets: number, classify: (batch: PacketBatch) => void): number {
  const batch = new PacketBatch(BATCH)
  let cursor = 0
  const fill = (): void => {
    batch.clear()
    for (let k = 0; k < BATCH; k++) {
      const f = order[cursor]
      cursor = cursor + 1 === order.length ? 0 : cursor + 1
      batch.add(f * STRIDE, lengths[f], f)
    }
  }
  for (let warm = 0; warm < Math.min(maxPackets, 30_000); warm += BATCH) {
    fill()
    classify(batch)
  }
  let packets = 0
  const start = performance.now()
  let elapsed = 0
  while (packets < maxPackets) {
    for (let k = 0; k < 8; k++, packets += BATCH) {
      fill()
      classify(batch)
    }
    elapsed = performance.now() - start
    if (elapsed > budgetMs) break
  }
  return (packets / elapsed) * 1000
}

export default async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const random = rng(20261122)
  // Quick mode keeps the shape with fewer flows, to stay within its time budget.
  const flows = opts.quick ? 20_000 : 100_000
  const flowsLabel = `${flows / 1000}k`
  const { buffer, lengths } = makePackets(flows, random)
  const order = new Uint32Array(flows)
  for (let i = 0; i < flows; i++) order[i] = i
  for (let i = flows - 1; i > 0; i--) {
    const j = random(i + 1)
    const t = order[i]
    order[i] = order[j]
    order[j] = t
  }
  // The traffic as a ring presents it: packets one after another in memory,
  // in arrival order, with the flows arriving in random order (`order`), so
  // the flow table is probed at random while the packet bytes are read in
  // sequence, as the switch reads a port ring.
  const trace = new Uint8Array(flows * STRIDE)
  const traceLengths = new Uint16Array(flows)
  const arrival = new Uint32Array(flows)
  for (let k = 0; k < flows; k++) {
    trace.set(buffer.subarray(order[k] * STRIDE, order[k] * STRIDE + STRIDE), k * STRIDE)
    traceLengths[k] = lengths[order[k]]
    arrival[k] = k
  }
  const results: BenchResult[] = []
  const budget = opts.quick ? 50 : 700
  const info = new PacketInfo()
  for (const count of [10, 1000, 10_000]) {
    const specs = makeRules(count, random)
    const rules = new RuleSet(specs)
    const linear = new LinearRuleScan(specs)
    const make = (native: boolean, hugePages = true): Classifier => {
      const classifier = new Classifier({ ports: [{ name: 'wire0', defaultOwner: OWNER_KERNEL }], instances: ['a', 'b'], rules, maxFlows: flows + 1024, now: () => 0, native, hugePages })
      // Establish the flows: each flow's first packet is decided (rule, or
      // the default) and cached, as on a running switch.
      for (let f = 0; f < flows; f++) classifier.classifyPacket(buffer, f * STRIDE, lengths[f], LinkKind.Ip, 0, Direction.In)
      return classifier
    }
    const classifier = make(true)
    const path = classifier.flowPath
    const memoryLabel = path.memory === 'hugepage' ? 'huge-page table' : path.memory === 'aligned' ? '4 KiB-page table' : 'heap table'
    const pathLabel = path.nativeLookup ? `addon lookup, ${memoryLabel}` : 'TypeScript only, no addon'
    let sink = 0
    const established = rate(arrival, budget, opts.quick ? 2_000_000 : 50_000_000, (f) => {
      sink += classifier.classifyPacket(trace, f * STRIDE, traceLengths[f], LinkKind.Ip, 0, Direction.In).owner
    })
    const classifyTrace = (c: Classifier) => (batch: PacketBatch): void => {
      c.classifyBatch(trace, batch, LinkKind.Ip, 0, Direction.In)
      sink += batch.owners[0]
    }
    const establishedBatch = batchRate(arrival, traceLengths, budget, opts.quick ? 2_000_000 : 100_000_000, classifyTrace(classifier))
    const arenaBatch = arenaBatchRate(trace, arrival, traceLengths, budget, opts.quick ? 2_000_000 : 100_000_000, (arena, batch) => {
      classifier.classifyBatch(arena, batch, LinkKind.Ip, 0, Direction.In)
      sink += batch.owners[0]
    })
    // The same classifier without the addon: what the TypeScript path alone does.
    const tsBatch = path.nativeLookup ? batchRate(arrival, traceLengths, budget, opts.quick ? 2_000_000 : 100_000_000, classifyTrace(make(false))) : establishedBatch
    // Huge pages alone, at the target's rule count: the addon's lookup on a table of 4 KiB pages.
    const smallPages = path.memory === 'hugepage' && count === 10_000 ? batchRate(arrival, traceLengths, budget, opts.quick ? 2_000_000 : 100_000_000, classifyTrace(make(true, false))) : -1
    const ruleLookup = rate(arrival, budget, opts.quick ? 500_000 : 20_000_000, (f) => {
      extractFlowKey(trace, f * STRIDE, traceLengths[f], LinkKind.Ip, 0, Direction.In, info)
      sink += rules.lookup(info.key, Direction.In)
    })
    const scan = rate(arrival, budget, opts.quick ? 200_000 : 5_000_000, (f) => {
      extractFlowKey(trace, f * STRIDE, traceLengths[f], LinkKind.Ip, 0, Direction.In, info)
      sink += linear.lookup(info.key, Direction.In)
    })
    if (sink === 0.5) console.log(sink) // keeps the loops observable
    const row = (name: string, value: number): BenchResult => ({
      name,
      value: Math.round(value),
      unit: 'packets/s',
      baseline: `linear scan of the ${count} rules`,
      baselineValue: Math.round(scan),
      higherIsBetter: true,
    })
    results.push(row(`classify packets one at a time, ${flowsLabel} established flows, ${count} rules (TypeScript, ${memoryLabel})`, established))
    results.push(row(`classify batches of ${BATCH}, ${flowsLabel} established flows, ${count} rules (${pathLabel})`, establishedBatch))
    results.push(row(`classify batches of ${BATCH}, headers in a port arena, ${flowsLabel} established flows, ${count} rules (${pathLabel})`, arenaBatch))
    if (path.nativeLookup) results.push(row(`classify batches of ${BATCH}, ${flowsLabel} established flows, ${count} rules (TypeScript only, no addon)`, tsBatch))
    if (smallPages >= 0) results.push(row(`classify batches of ${BATCH}, ${flowsLabel} established flows, ${count} rules (addon lookup, 4 KiB-page table)`, smallPages))
    results.push(row(`new-flow rule lookup (tuple space, ${rules.tupleCount} masks), ${count} rules`, ruleLookup))
  }
  return results
}
