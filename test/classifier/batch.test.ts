// classifyBatch against classifyPacket, and the fixed-offset parser against
// the full one: the batch path must give the same decisions, counters and
// cached flows as classifying the same packets one by one, on a mix of
// established and new flows, fragments (first, later, held), ARP, VLAN-less
// Ethernet, truncated and garbage packets.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  Classifier,
  Direction,
  extractFlowKey,
  extractFlowKeyFast,
  KEY_WORDS,
  LinkKind,
  OWNER_DROP,
  OWNER_HELD,
  OWNER_KERNEL,
  PacketBatch,
  PacketInfo,
  ParseStatus,
  RuleSet,
  parsePrefix,
  type RuleSpec,
} from '../../classifier/index.js'
import { arpRequest, buildPacket, fragmentPair, type PacketSpec } from './packets.js'

const V4 = ['198.51.100.1', '198.51.100.2', '203.0.113.7', '192.0.2.1']
const V6 = ['2001:db8::1', '2001:db8::2', '2001:db8:1::5']

const spec: fc.Arbitrary<PacketSpec> = fc
  .record({
    ipVersion: fc.constantFrom<4 | 6>(4, 6),
    protocol: fc.constantFrom(6, 17, 1, 58),
    src: fc.nat(10),
    dst: fc.nat(10),
    srcPort: fc.constantFrom(53, 443, 40000, 1),
    dstPort: fc.constantFrom(53, 80, 443),
    ethernet: fc.boolean(),
  })
  .map((p) => {
    const pool = p.ipVersion === 4 ? V4 : V6
    return { ipVersion: p.ipVersion, protocol: p.protocol, src: pool[p.src % pool.length], dst: pool[p.dst % pool.length], srcPort: p.srcPort, dstPort: p.dstPort, ethernet: p.ethernet }
  })

type Frame = { bytes: Uint8Array; ethernet: boolean }

const frames: fc.Arbitrary<Frame[]> = fc.array(
  fc.oneof(
    { weight: 10, arbitrary: spec.map((s) => [{ bytes: buildPacket(s), ethernet: s.ethernet === true }]) },
    { weight: 2, arbitrary: fc.tuple(spec, fc.integer({ min: 1, max: 60000 }), fc.boolean()).map(([s, id, laterFirst]) => {
      const [first, later] = fragmentPair(s, id)
      const pair = [{ bytes: first, ethernet: s.ethernet === true }, { bytes: later, ethernet: s.ethernet === true }]
      return laterFirst ? pair.reverse() : pair
    }) },
    { weight: 1, arbitrary: fc.constant([{ bytes: arpRequest('198.51.100.1', '198.51.100.2'), ethernet: true }]) },
    // Truncated copies and random bytes: parse errors or not-IP on either path.
    { weight: 2, arbitrary: fc.tuple(spec, fc.nat(60)).map(([s, cut]) => { const b = buildPacket(s); return [{ bytes: b.subarray(0, Math.min(cut, b.length)), ethernet: s.ethernet === true }] }) },
    { weight: 1, arbitrary: fc.tuple(fc.uint8Array({ minLength: 0, maxLength: 80 }), fc.boolean()).map(([bytes, ethernet]) => [{ bytes, ethernet }]) },
  ),
  { minLength: 1, maxLength: 120 },
).map((groups) => groups.flat())

const rules: RuleSpec[] = [
  { name: 'dns', priority: 10, protocol: 17, localPorts: { from: 53, to: 53 }, owner: 0 },
  { name: 'web', priority: 5, protocol: 6, localPorts: { from: 80, to: 443 }, owner: 1 },
  { name: 'block', priority: 20, remotePrefix: parsePrefix('203.0.113.0/24')!, owner: OWNER_DROP },
  { name: 'v6', priority: 1, ipVersion: 6, owner: 0 },
]

function makeClassifier(released: Array<[number, number]>, native = true): Classifier {
  return new Classifier({
    ports: [{ name: 'p0', defaultOwner: OWNER_KERNEL }],
    instances: ['a', 'b'],
    rules: new RuleSet(rules),
    maxFlows: 256,
    now: () => 0,
    onFragmentRelease: (token, d) => released.push([token, d.owner]),
    native,
  })
}

describe('classifyBatch', () => {
  it.each([
    ['the addon\'s exact-match lookup', true],
    ['TypeScript alone', false],
  ])('decides, counts and caches exactly like classifyPacket on each packet in turn (%s)', (_, native) => {
    let packets = 0
    fc.assert(
      fc.property(frames, fc.integer({ min: 1, max: 64 }), fc.constantFrom(Direction.In, Direction.Out), (list, batchSize, direction) => {
        // All frames of one list share a link kind per frame; the batch call takes one link, so split by it.
        const releasedOne: Array<[number, number]> = []
        const releasedBatch: Array<[number, number]> = []
        const one = makeClassifier(releasedOne)
        const batched = makeClassifier(releasedBatch, native)
        expect(batched.flowPath.nativeLookup).toBe(native)
        one.registerFlow({ ipVersion: 4, protocol: 6, localAddress: '198.51.100.1', localPort: 443, remoteAddress: '198.51.100.2', remotePort: 40000, port: 0 }, 1)
        batched.registerFlow({ ipVersion: 4, protocol: 6, localAddress: '198.51.100.1', localPort: 443, remoteAddress: '198.51.100.2', remotePort: 40000, port: 0 }, 1)
        // Each frame at its own place in one arena, 128 bytes apart, as in a pool.
        const arena = new Uint8Array(list.length * 128)
        list.forEach((f, i) => arena.set(f.bytes, i * 128))
        const batch = new PacketBatch(batchSize)
        let i = 0
        // Two passes: the second sees the flows the first cached.
        for (let pass = 0; pass < 2; pass++) {
          i = 0
          while (i < list.length) {
            batch.clear()
            const link = list[i].ethernet ? LinkKind.Ethernet : LinkKind.Ip
            while (i < list.length && batch.count < batchSize && (list[i].ethernet ? LinkKind.Ethernet : LinkKind.Ip) === link) {
              batch.add(i * 128, list[i].bytes.length, pass * 1000 + i)
              i++
            }
            const expected: Array<[number, number | null, number]> = []
            for (let k = 0; k < batch.count; k++) {
              const d = one.classifyPacket(arena, batch.offsets[k], batch.lengths[k], link, 0, direction, batch.tokens[k])
              expected.push([d.held ? OWNER_HELD : d.owner, d.rule, d.reason])
            }
            batched.classifyBatch(arena, batch, link, 0, direction)
            const actual: Array<[number, number | null, number]> = []
            for (let k = 0; k < batch.count; k++) actual.push([batch.owners[k], batch.rules[k], batch.reasons[k]])
            expect(actual).toEqual(expected)
            packets += batch.count
          }
        }
        expect(Array.from(batched.reasonCounts)).toEqual(Array.from(one.reasonCounts))
        expect(Array.from(batched.ownerCounts)).toEqual(Array.from(one.ownerCounts))
        expect(batched.flowTableFull).toBe(one.flowTableFull)
        expect(releasedBatch).toEqual(releasedOne)
        const flows = (c: Classifier): string[] => c.listFlows().map((f) => JSON.stringify(f)).sort()
        expect(flows(batched)).toEqual(flows(one))
      }),
      { numRuns: 100, seed: 1122 },
    )
    expect(packets).toBeGreaterThan(1_000)
  })

  it('takes a batch larger than its scratch and an empty batch', () => {
    const c = makeClassifier([])
    const packet = buildPacket({ ipVersion: 4, protocol: 17, src: '192.0.2.1', dst: '198.51.100.1', srcPort: 5353, dstPort: 53 })
    const arena = new Uint8Array(1000 * 64)
    const batch = new PacketBatch(1000)
    for (let i = 0; i < 1000; i++) {
      arena.set(packet, i * 64)
      batch.add(i * 64, packet.length, i)
    }
    c.classifyBatch(arena, new PacketBatch(4), LinkKind.Ip, 0, Direction.In)
    c.classifyBatch(arena, batch, LinkKind.Ip, 0, Direction.In)
    expect(batch.owners.every((o) => o === 0)).toBe(true)
    expect(c.reasonCounts[0]).toBe(999) // the first packet decided by the rule, the rest by its cached flow
    expect(c.reasonCounts[1]).toBe(1)
    expect(c.ruleName(batch.rules[0])).toBe('dns')
    expect(batch.add(0, 1)).toBe(false)
  })
})

describe('extractFlowKeyFast', () => {
  it('writes the same key as extractFlowKey whenever it accepts a packet, and accepts the common shapes', () => {
    const info = new PacketInfo()
    const fast = new Uint32Array(KEY_WORDS + 3)
    let accepted = 0
    fc.assert(
      fc.property(frames, fc.constantFrom(Direction.In, Direction.Out), fc.nat(7), (list, direction, portIndex) => {
        for (const f of list) {
          const link = f.ethernet ? LinkKind.Ethernet : LinkKind.Ip
          const ok = extractFlowKeyFast(f.bytes, 0, f.bytes.length, link, portIndex, direction, fast, 3)
          if (!ok) continue
          accepted++
          expect(extractFlowKey(f.bytes, 0, f.bytes.length, link, portIndex, direction, info)).toBe(ParseStatus.Ok)
          expect(info.fragment).toBe(0)
          expect(Array.from(fast.subarray(3))).toEqual(Array.from(info.key))
        }
      }),
      { numRuns: 200, seed: 99 },
    )
    expect(accepted).toBeGreaterThan(400)
    const tcp4 = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.1', dst: '198.51.100.1', srcPort: 1, dstPort: 2 })
    const udp6 = buildPacket({ ipVersion: 6, protocol: 17, src: '2001:db8::1', dst: '2001:db8::2', srcPort: 1, dstPort: 2, ethernet: true })
    expect(extractFlowKeyFast(tcp4, 0, tcp4.length, LinkKind.Ip, 0, Direction.In, fast, 0)).toBe(true)
    expect(extractFlowKeyFast(udp6, 0, udp6.length, LinkKind.Ethernet, 0, Direction.In, fast, 0)).toBe(true)
    const [first] = fragmentPair({ ipVersion: 4, protocol: 6, src: '192.0.2.1', dst: '198.51.100.1', srcPort: 1, dstPort: 2 }, 7)
    expect(extractFlowKeyFast(first, 0, first.length, LinkKind.Ip, 0, Direction.In, fast, 0)).toBe(false)
  })
})
