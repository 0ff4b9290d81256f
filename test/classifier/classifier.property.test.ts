// The classifier against the linear-scan reference on random rule sets
// (every match field, overlapping prefixes and ranges, equal priorities),
// random packets, flow and listener registrations and atomic rule swaps.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { Classifier, LinearRuleScan, Direction, LinkKind, OWNER_DROP, OWNER_KERNEL, PacketBatch, REASON_NAMES, RuleSet, parsePrefix, writeKey, KEY_WORDS, type RuleSpec } from '../../classifier/index.js'
import { ReferenceClassifier, type RefOwner, type RefPacket, type RefRule } from './reference.js'
import { buildPacket } from './packets.js'

const V4 = ['198.51.100.1', '198.51.100.2', '198.51.100.130', '203.0.113.7', '203.0.113.200', '192.0.2.1', '192.0.2.255']
const V6 = ['2001:db8::1', '2001:db8::2', '2001:db8:1::5', '2001:db8:ffff::1', '2001:db8::8000:1', '2001:db8:0:1::1']
const V4_LENGTHS = [0, 8, 16, 23, 24, 25, 30, 32]
const V6_LENGTHS = [0, 16, 32, 33, 48, 64, 112, 127, 128]
const PORTS = [1, 53, 80, 443, 1024, 8080, 40000, 65535]
const PROTOCOLS = [6, 17, 1, 58, 47]
const INSTANCES = 3
const PORT_COUNT = 2

const family = fc.constantFrom<4 | 6>(4, 6)
const portNumber = fc.oneof(fc.constantFrom(...PORTS), fc.integer({ min: 0, max: 65535 }))
const range = fc.tuple(portNumber, portNumber).map(([a, b]) => ({ from: Math.min(a, b), to: Math.max(a, b) }))
const exactOrRange = fc.oneof(range, portNumber.map((p) => ({ from: p, to: p })))
const owner = fc.constantFrom<RefOwner>(0, 1, 2, 'kernel', 'drop')

function prefixOf(f: 4 | 6): fc.Arbitrary<string> {
  return fc.tuple(fc.constantFrom(...(f === 4 ? V4 : V6)), fc.constantFrom(...(f === 4 ? V4_LENGTHS : V6_LENGTHS))).map(([address, length]) => {
    const prefix = parsePrefix(`${address}/${length}`)!
    // Written as its network address, so both sides read the same prefix.
    const words = prefix.words
    const network = f === 4 ? `${words[0] >>> 24}.${(words[0] >>> 16) & 255}.${(words[0] >>> 8) & 255}.${words[0] & 255}` : Array.from({ length: 8 }, (_, i) => ((i % 2 === 0 ? words[i >> 1] >>> 16 : words[i >> 1] & 0xffff)).toString(16)).join(':')
    return `${network}/${length}`
  })
}

const rule = (index: number): fc.Arbitrary<RefRule> =>
  fc
    .record({
      priority: fc.constantFrom(0, 1, 5, 10, -3),
      port: fc.option(fc.integer({ min: 0, max: PORT_COUNT - 1 }), { nil: undefined }),
      direction: fc.option(fc.constantFrom<'in' | 'out'>('in', 'out'), { nil: undefined }),
      family: fc.option(family, { nil: undefined }),
      explicitVersion: fc.boolean(),
      protocol: fc.option(fc.constantFrom(...PROTOCOLS), { nil: undefined }),
      localPorts: fc.option(exactOrRange, { nil: undefined }),
      remotePorts: fc.option(exactOrRange, { nil: undefined }),
      owner,
      wantLocal: fc.boolean(),
      wantRemote: fc.boolean(),
      local4: prefixOf(4),
      local6: prefixOf(6),
      remote4: prefixOf(4),
      remote6: prefixOf(6),
    })
    .map((r) => {
      const out: RefRule = { name: `r${index}`, priority: r.priority, owner: r.owner }
      if (r.port !== undefined) out.port = r.port
      if (r.direction !== undefined) out.direction = r.direction
      if (r.protocol !== undefined) out.protocol = r.protocol
      if (r.localPorts !== undefined) out.localPorts = r.localPorts
      if (r.remotePorts !== undefined) out.remotePorts = r.remotePorts
      if (r.family !== undefined) {
        if (r.explicitVersion || (!r.wantLocal && !r.wantRemote)) out.ipVersion = r.family
        if (r.wantLocal) out.localPrefix = r.family === 4 ? r.local4 : r.local6
        if (r.wantRemote) out.remotePrefix = r.family === 4 ? r.remote4 : r.remote6
      }
      return out
    })

const ruleSet = fc.integer({ min: 0, max: 30 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => rule(i))))

const packet: fc.Arbitrary<RefPacket> = fc
  .record({
    ipVersion: family,
    protocol: fc.constantFrom(...PROTOCOLS),
    local: fc.nat(100),
    remote: fc.nat(100),
    localPort: portNumber,
    remotePort: portNumber,
    port: fc.integer({ min: 0, max: PORT_COUNT - 1 }),
    direction: fc.constantFrom<'in' | 'out'>('in', 'out'),
  })
  .map((p) => {
    const pool = p.ipVersion === 4 ? V4 : V6
    const ports = p.protocol === 6 || p.protocol === 17
    return {
      ipVersion: p.ipVersion,
      protocol: p.protocol,
      localAddress: pool[p.local % pool.length],
      remoteAddress: pool[p.remote % pool.length],
      localPort: ports ? p.localPort : 0,
      remotePort: ports ? p.remotePort : 0,
      port: p.port,
      direction: p.direction,
    }
  })

type Op =
  | { op: 'packet'; packet: RefPacket; viaBytes: boolean; ethernet: boolean }
  | { op: 'flow'; packet: RefPacket; owner: number }
  | { op: 'listener'; packet: RefPacket; any: boolean; owner: number }
  | { op: 'swap'; rules: RefRule[] }

const operation: fc.Arbitrary<Op> = fc.oneof(
  { weight: 12, arbitrary: fc.record({ op: fc.constant('packet' as const), packet, viaBytes: fc.boolean(), ethernet: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('flow' as const), packet, owner: fc.integer({ min: 0, max: INSTANCES - 1 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('listener' as const),
      packet: packet.filter((p) => p.protocol === 6 || p.protocol === 17),
      any: fc.boolean(),
      owner: fc.integer({ min: 0, max: INSTANCES - 1 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('swap' as const), rules: ruleSet }) },
)

function ownerIndex(owner: RefOwner): number {
  return owner === 'kernel' ? OWNER_KERNEL : owner === 'drop' ? OWNER_DROP : owner
}

function toSpec(rule: RefRule): RuleSpec {
  return {
    name: rule.name,
    priority: rule.priority,
    port: rule.port,
    direction: rule.direction === undefined ? undefined : rule.direction === 'in' ? Direction.In : Direction.Out,
    ipVersion: rule.ipVersion,
    protocol: rule.protocol,
    localPrefix: rule.localPrefix === undefined ? undefined : parsePrefix(rule.localPrefix)!,
    remotePrefix: rule.remotePrefix === undefined ? undefined : parsePrefix(rule.remotePrefix)!,
    localPorts: rule.localPorts,
    remotePorts: rule.remotePorts,
    owner: ownerIndex(rule.owner),
  }
}

function hasPortsProtocol(protocol: number): boolean {
  return protocol === 6 || protocol === 17
}

function packetBytes(p: RefPacket, ethernet: boolean): Uint8Array {
  const inbound = p.direction === 'in'
  return buildPacket({
    ipVersion: p.ipVersion,
    protocol: p.protocol,
    src: inbound ? p.remoteAddress : p.localAddress,
    dst: inbound ? p.localAddress : p.remoteAddress,
    srcPort: inbound ? p.remotePort : p.localPort,
    dstPort: inbound ? p.localPort : p.remotePort,
    ethernet,
  })
}

describe('classifier vs linear-scan reference', () => {
  it('agrees on every packet, across registrations and atomic rule swaps', () => {
    const defaults: RefOwner[] = ['kernel', 'drop']
    const key = new Uint32Array(KEY_WORDS)
    let decisions = 0
    fc.assert(
      fc.property(ruleSet, fc.array(operation, { minLength: 50, maxLength: 150 }), (rules, ops) => {
        const reference = new ReferenceClassifier(rules, defaults)
        const classifier = new Classifier({
          ports: defaults.map((d, i) => ({ name: `p${i}`, defaultOwner: ownerIndex(d) })),
          instances: ['a', 'b', 'c'],
          rules: new RuleSet(rules.map(toSpec)),
          maxFlows: 4096,
          now: () => 0,
        })
        for (const op of ops) {
          if (op.op === 'swap') {
            reference.replaceRules(op.rules)
            classifier.replaceRules(new RuleSet(op.rules.map(toSpec)))
            continue
          }
          const p = op.packet
          switch (op.op) {
            case 'flow':
              reference.registerFlow(p, op.owner)
              expect(classifier.registerFlow(p, op.owner)).toBe(true)
              break
            case 'listener':
              reference.registerListener({ ...p, localAddress: op.any ? null : p.localAddress }, op.owner)
              classifier.registerListener({ ...p, localAddress: op.any ? (p.ipVersion === 4 ? '0.0.0.0' : '::') : p.localAddress }, op.owner)
              break
            case 'packet': {
              const expected = reference.classify(p)
              const direction = p.direction === 'in' ? Direction.In : Direction.Out
              let decision
              if (op.viaBytes) {
                const bytes = packetBytes(p, op.ethernet)
                decision = classifier.classifyPacket(bytes, 0, bytes.length, op.ethernet ? LinkKind.Ethernet : LinkKind.Ip, p.port, direction)
              } else {
                writeKey(p, key)
                decision = classifier.classifyKey(key, direction)
              }
              const actual = { owner: decision.owner, rule: classifier.ruleName(decision.rule), reason: REASON_NAMES[decision.reason] }
              expect(actual).toEqual({ owner: ownerIndex(expected.owner), rule: expected.rule, reason: expected.reason })
              decisions++
            }
          }
        }
      }),
      { numRuns: 300, seed: 20261122 },
    )
    expect(decisions).toBeGreaterThan(8_000)
  })

  it('agrees through classifyBatch, with the addon\'s exact-match lookup and in TypeScript alone, across releases and rule swaps', () => {
    type BatchOp =
      | { op: 'batch'; port: number; direction: 'in' | 'out'; ethernet: boolean; packets: RefPacket[] }
      | { op: 'flow'; packet: RefPacket; owner: number }
      | { op: 'release'; packet: RefPacket }
      | { op: 'swap'; rules: RefRule[] }
    // Few distinct flows, so batches repeat flows (a new flow's second packet
    // in the same batch is a hit) and releases hit flows that exist.
    const smallPacket: fc.Arbitrary<RefPacket> = fc
      .record({ ipVersion: family, protocol: fc.constantFrom(6, 17, 6, 17, 1), local: fc.nat(1), remote: fc.nat(2), localPort: fc.constantFrom(53, 443), remotePort: fc.constantFrom(40000, 1) })
      .map((p) => {
        const pool = p.ipVersion === 4 ? V4 : V6
        const ports = p.protocol === 6 || p.protocol === 17
        return { ipVersion: p.ipVersion, protocol: p.protocol, localAddress: pool[p.local], remoteAddress: pool[3 + p.remote], localPort: ports ? p.localPort : 0, remotePort: ports ? p.remotePort : 0, port: 0, direction: 'in' as const }
      })
    const batchOp: fc.Arbitrary<BatchOp> = fc.oneof(
      {
        weight: 8,
        arbitrary: fc.record({
          op: fc.constant('batch' as const),
          port: fc.integer({ min: 0, max: PORT_COUNT - 1 }),
          direction: fc.constantFrom<'in' | 'out'>('in', 'out'),
          ethernet: fc.boolean(),
          packets: fc.array(smallPacket, { minLength: 1, maxLength: 40 }),
        }),
      },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('flow' as const), packet: smallPacket, owner: fc.integer({ min: 0, max: INSTANCES - 1 }) }) },
      { weight: 2, arbitrary: fc.record({ op: fc.constant('release' as const), packet: smallPacket }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('swap' as const), rules: ruleSet }) },
    )
    const defaults: RefOwner[] = ['kernel', 'drop']
    let decisions = 0
    let nativeHits = 0
    fc.assert(
      fc.property(ruleSet, fc.array(batchOp, { minLength: 10, maxLength: 40 }), (rules, ops) => {
        const reference = new ReferenceClassifier(rules, defaults)
        const make = (native: boolean): Classifier =>
          new Classifier({
            ports: defaults.map((d, i) => ({ name: `p${i}`, defaultOwner: ownerIndex(d) })),
            instances: ['a', 'b', 'c'],
            rules: new RuleSet(rules.map(toSpec)),
            maxFlows: 512,
            now: () => 0,
            native,
          })
        const withAddon = make(true)
        const tsOnly = make(false)
        // Fails, rather than passing on the TypeScript path twice, when the addon is not built.
        expect(withAddon.flowPath.nativeLookup).toBe(true)
        expect(tsOnly.flowPath.nativeLookup).toBe(false)
        const arena = new Uint8Array(40 * 128)
        const batch = new PacketBatch(40)
        for (const op of ops) {
          switch (op.op) {
            case 'swap':
              reference.replaceRules(op.rules)
              withAddon.replaceRules(new RuleSet(op.rules.map(toSpec)))
              tsOnly.replaceRules(new RuleSet(op.rules.map(toSpec)))
              break
            case 'flow':
              reference.registerFlow(op.packet, op.owner)
              expect(withAddon.registerFlow(op.packet, op.owner)).toBe(true)
              expect(tsOnly.registerFlow(op.packet, op.owner)).toBe(true)
              break
            case 'release': {
              const p = hasPortsProtocol(op.packet.protocol) ? op.packet : { ...op.packet, localPort: 0, remotePort: 0 }
              reference.releaseFlow(p)
              expect(withAddon.releaseFlow(p)).toBe(tsOnly.releaseFlow(p))
              break
            }
            case 'batch': {
              batch.clear()
              const packets = op.packets.map((p) => ({ ...p, port: op.port, direction: op.direction }))
              packets.forEach((p, i) => {
                const bytes = packetBytes(p, op.ethernet)
                arena.set(bytes, i * 128)
                batch.add(i * 128, bytes.length, i)
              })
              const link = op.ethernet ? LinkKind.Ethernet : LinkKind.Ip
              const direction = op.direction === 'in' ? Direction.In : Direction.Out
              const flowsBefore = withAddon.reasonCounts[0]
              const results: Array<Array<{ owner: number; rule: string | null; reason: string }>> = []
              for (const c of [withAddon, tsOnly]) {
                c.classifyBatch(arena, batch, link, op.port, direction)
                results.push(packets.map((_, i) => ({ owner: batch.owners[i], rule: c.ruleName(batch.rules[i]), reason: REASON_NAMES[batch.reasons[i]] })))
              }
              nativeHits += withAddon.reasonCounts[0] - flowsBefore
              const expected = packets.map((p) => {
                const d = reference.classify(p)
                return { owner: ownerIndex(d.owner), rule: d.rule, reason: d.reason }
              })
              expect(results[0]).toEqual(expected)
              expect(results[1]).toEqual(expected)
              decisions += packets.length
            }
          }
        }
        const flows = (c: Classifier): string[] => c.listFlows().map((f) => JSON.stringify(f)).sort()
        expect(flows(withAddon)).toEqual(flows(tsOnly))
        expect(Array.from(withAddon.reasonCounts)).toEqual(Array.from(tsOnly.reasonCounts))
        expect(Array.from(withAddon.ownerCounts)).toEqual(Array.from(tsOnly.ownerCounts))
        // The per-instance held counts (limits.maxFlows) follow every insert, owner change and removal.
        for (const c of [withAddon, tsOnly]) {
          const counted = c.countFlowsByInstance()
          expect(counted.map((_, i) => c.flowsHeldBy(i))).toEqual(counted)
        }
      }),
      { numRuns: 100, seed: 1123 },
    )
    expect(decisions).toBeGreaterThan(5_000)
    expect(nativeHits).toBeGreaterThan(1_000)
  })

  it('agrees on large rule sets that exercise many tuples', () => {
    const big = fc.integer({ min: 200, max: 600 }).chain((n) => fc.tuple(...Array.from({ length: n }, (_, i) => rule(i))))
    fc.assert(
      fc.property(big, fc.array(packet, { minLength: 200, maxLength: 200 }), (rules, packets) => {
        const reference = new ReferenceClassifier(rules, ['kernel', 'kernel'])
        const specs = rules.map(toSpec)
        const set = new RuleSet(specs)
        const linear = new LinearRuleScan(specs)
        const classifier = new Classifier({ ports: [{ name: 'p0', defaultOwner: OWNER_KERNEL }, { name: 'p1', defaultOwner: OWNER_KERNEL }], instances: ['a', 'b', 'c'], rules: set, now: () => 0, maxFlows: 1024 })
        const key = new Uint32Array(KEY_WORDS)
        for (const p of packets) {
          const expected = reference.classify(p)
          writeKey(p, key)
          const direction = p.direction === 'in' ? Direction.In : Direction.Out
          const scanned = linear.lookup(key, direction)
          expect(scanned).toBe(set.lookup(key, direction))
          const decision = classifier.classifyKey(key, direction)
          expect({ owner: decision.owner, rule: classifier.ruleName(decision.rule), reason: REASON_NAMES[decision.reason] }).toEqual({ owner: ownerIndex(expected.owner), rule: expected.rule, reason: expected.reason })
        }
        expect(set.tupleCount).toBeGreaterThan(1)
      }),
      { numRuns: 15, seed: 7 },
    )
  })
})
