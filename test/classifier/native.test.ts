// The addon's exact-match fast path (nexus/native/flow_table.cc) against the
// TypeScript it mirrors: the fixed-offset parser (what it accepts and the key
// it writes), the hash and the probe of the same table memory; the huge-page
// table memory; and the flow slot's 32-bit counters and last-seen word.
// These tests need the addon built (npm install / build:native) and fail
// without it.
import { readFileSync } from 'node:fs'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { Classifier, Direction, extractFlowKeyFast, FlowTable, KEY_WORDS, LinkKind, OWNER_KERNEL, RuleSet, writeKey } from '../../classifier/index.js'
import { nativeFlowPath } from '../../nexus/ports/native.js'
import { arpRequest, buildPacket, fragmentPair, type PacketSpec } from './packets.js'

const V4 = ['198.51.100.1', '198.51.100.2', '203.0.113.7', '192.0.2.1']
const V6 = ['2001:db8::1', '2001:db8::2', '2001:db8:1::5']

const spec: fc.Arbitrary<PacketSpec> = fc
  .record({
    ipVersion: fc.constantFrom<4 | 6>(4, 6),
    protocol: fc.constantFrom(6, 17, 1, 58, 47),
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

// Everything the fast parser must take or refuse exactly as the TypeScript
// one does, on one link kind (a batch comes from one port).
const frameOn = (ethernet: boolean): fc.Arbitrary<Frame> => {
  const on = spec.map((s) => ({ ...s, ethernet }))
  return fc.oneof(
    { weight: 8, arbitrary: on.map((s) => ({ bytes: buildPacket(s), ethernet })) },
    { weight: 1, arbitrary: fc.tuple(on, fc.integer({ min: 1, max: 60000 }), fc.nat(1)).map(([s, id, which]) => ({ bytes: fragmentPair(s, id)[which], ethernet })) },
    { weight: 1, arbitrary: fc.constant({ bytes: arpRequest('198.51.100.1', '198.51.100.2'), ethernet }) },
    { weight: 2, arbitrary: fc.tuple(on, fc.nat(70)).map(([s, cut]) => { const b = buildPacket(s); return { bytes: b.subarray(0, Math.min(cut, b.length)), ethernet } }) },
    // One byte changed somewhere in the headers: versions, lengths, flags, protocols.
    { weight: 2, arbitrary: fc.tuple(on, fc.nat(60), fc.nat(255)).map(([s, at, value]) => { const b = buildPacket(s).slice(); b[at % b.length] = value; return { bytes: b, ethernet } }) },
    { weight: 1, arbitrary: fc.uint8Array({ minLength: 0, maxLength: 80 }).map((bytes) => ({ bytes, ethernet })) },
  )
}
const frames = fc.boolean().chain((ethernet) => fc.array(frameOn(ethernet), { minLength: 16, maxLength: 64 }))

function flowPath() {
  const native = nativeFlowPath()
  if (native === undefined) throw new Error('the nexus addon is not built or lacks flowLookupBatch: run node scripts/build-native.mjs')
  return native
}

describe('native flow lookup', () => {
  it('is what a default classifier uses, on huge-page table memory', () => {
    flowPath()
    const c = new Classifier({ ports: [{ name: 'p0', defaultOwner: OWNER_KERNEL }], instances: [], rules: new RuleSet([]), maxFlows: 1000 })
    expect(c.flowPath).toEqual({ memory: 'hugepage', nativeLookup: true })
    expect(new Classifier({ ports: [{ name: 'p0', defaultOwner: OWNER_KERNEL }], instances: [], rules: new RuleSet([]), maxFlows: 1000, native: false }).flowPath.nativeLookup).toBe(false)
  })

  it('gets transparent huge pages for the table when the kernel allows them (smaps)', () => {
    const mode = /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1]
    const anonHuge = (): number => Number(/AnonHugePages:\s+(\d+) kB/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? NaN)
    const before = anonHuge()
    const table = new Uint32Array(flowPath().allocHugeBuffer(8 << 20))
    // Touch one word per 4 KiB page, as inserts would.
    for (let i = 0; i < table.length; i += 1024) table[i] = i
    const after = anonHuge()
    expect(table.length).toBe(2 << 20)
    expect(table[1024]).toBe(1024)
    expect(table[1]).toBe(0)
    // "madvise" and "always" give huge pages to a MADV_HUGEPAGE range; "never" gives none.
    if (mode === 'never') expect(after - before).toBe(0)
    else expect(after - before).toBeGreaterThanOrEqual(4096)
  })

  it('agrees with extractFlowKeyFast and the TypeScript probe on every packet', () => {
    const native = flowPath()
    const keyOut = new Uint32Array(KEY_WORDS)
    let hits = 0
    let slow = 0
    fc.assert(
      fc.property(
        frames,
        fc.array(fc.boolean(), { minLength: 64, maxLength: 64 }),
        fc.constantFrom(Direction.In, Direction.Out),
        fc.nat(3),
        (frames, insert, direction, portIndex) => {
          const link = frames[0].ethernet ? LinkKind.Ethernet : LinkKind.Ip
          const table = new FlowTable(64)
          const arena = new Uint8Array(frames.length * 128 + 7)
          const offsets = new Int32Array(frames.length)
          const lengths = new Int32Array(frames.length)
          // Odd offsets: the native parser reads bytes, never aligned words.
          frames.forEach((f, i) => {
            arena.set(f.bytes, i * 128 + 7)
            offsets[i] = i * 128 + 7
            lengths[i] = f.bytes.length
          })
          // Some of the parsable flows go into the table, then some come out
          // again (backward-shift deletion moves their neighbours).
          const inserted: Uint32Array[] = []
          frames.forEach((_, i) => {
            if (!extractFlowKeyFast(arena, offsets[i], lengths[i], link, portIndex, direction, keyOut, 0) || !insert[i]) return
            if (table.find(keyOut, 0) < 0 && table.insert(keyOut, 0, i) >= 0) inserted.push(keyOut.slice())
          })
          inserted.forEach((key, i) => {
            if (i % 3 === 0) table.delete(key, 0)
          })
          const out = new Int32Array(frames.length)
          const reported = native.flowLookupBatch(table.slots, arena, offsets, lengths, frames.length, link, portIndex, direction === Direction.In, out)
          let expectedHits = 0
          frames.forEach((_, i) => {
            const parsed = extractFlowKeyFast(arena, offsets[i], lengths[i], link, portIndex, direction, keyOut, 0)
            const expected = parsed ? table.find(keyOut, 0) : -2
            expect(out[i]).toBe(expected)
            if (expected >= 0) expectedHits++
            if (!parsed) slow++
          })
          expect(reported).toBe(expectedHits)
          hits += expectedHits
        },
      ),
      { numRuns: 300, seed: 5 },
    )
    expect(hits).toBeGreaterThan(1_000)
    expect(slow).toBeGreaterThan(1_000)
  })

  it('refuses malformed arguments with NEXUS_BAD_ARGS instead of reading out of bounds', () => {
    const native = flowPath()
    const slots = new Uint32Array(16 * 16)
    const buf = new Uint8Array(64)
    const descriptors = new Int32Array(4)
    const out = new Int32Array(4)
    expect(() => native.flowLookupBatch(new Uint32Array(16 * 3), buf, descriptors, descriptors, 1, 1, 0, true, out)).toThrow(expect.objectContaining({ code: 'NEXUS_BAD_ARGS' }))
    expect(() => native.flowLookupBatch(slots, buf, descriptors, descriptors, 5, 1, 0, true, out)).toThrow(expect.objectContaining({ code: 'NEXUS_BAD_ARGS' }))
    expect(() => native.flowLookupBatch(slots, buf, descriptors, new Uint32Array(4) as unknown as Int32Array, 1, 1, 0, true, out)).toThrow(expect.objectContaining({ code: 'NEXUS_BAD_ARGS' }))
    // Node cannot wrap 4 GiB or more in one ArrayBuffer (and would free the mapping itself): refused up front.
    expect(() => native.allocHugeBuffer(2 ** 33)).toThrow(expect.objectContaining({ code: 'NEXUS_BAD_ARGS' }))
    expect(() => native.allocHugeBuffer(0)).toThrow(expect.objectContaining({ code: 'NEXUS_BAD_ARGS' }))
    // Descriptors pointing outside the buffer are the slow path, not a read.
    const offsets = Int32Array.of(-1, 60, 2_000_000_000, 0)
    const lengths = Int32Array.of(20, 20, 40, 100)
    expect(native.flowLookupBatch(slots, buf, offsets, lengths, 4, 1, 0, true, out)).toBe(0)
    expect(Array.from(out)).toEqual([-2, -2, -2, -2])
  })
})

describe('flow slot counters', () => {
  const flow = { ipVersion: 4 as const, protocol: 6, localAddress: '198.51.100.1', localPort: 443, remoteAddress: '203.0.113.9', remotePort: 40000, port: 0 }

  it('carry bytes past 32 bits', () => {
    for (const native of [true, false]) {
      const c = new Classifier({ ports: [{ name: 'p0', defaultOwner: OWNER_KERNEL }], instances: ['a'], rules: new RuleSet([]), maxFlows: 16, now: () => 0, native })
      const key = new Uint32Array(KEY_WORDS)
      writeKey(flow, key)
      expect(c.registerFlow(flow, 0)).toBe(true)
      for (let i = 0; i < 3; i++) c.classifyKey(key, Direction.In, 3_000_000_000)
      expect(c.listFlows()).toEqual([expect.objectContaining({ packets: 3, bytes: 9_000_000_000, owner: 0, state: 'established' })])
    }
  })

  it('expire idle decided flows across the 2^32 ms wrap of the last-seen word', () => {
    let now = 2 ** 32 - 10
    const c = new Classifier({ ports: [{ name: 'p0', defaultOwner: OWNER_KERNEL }], instances: ['a'], rules: new RuleSet([]), maxFlows: 16, now: () => now })
    const key = new Uint32Array(KEY_WORDS)
    writeKey(flow, key)
    c.classifyKey(key, Direction.In, 60) // decided by the default action, cached
    now = 2 ** 32 + 100 // 110 ms later, past the wrap
    expect(c.expireIdleFlows(200)).toBe(0)
    expect(c.expireIdleFlows(110)).toBe(0)
    expect(c.expireIdleFlows(109)).toBe(1)
    expect(c.flowCount).toBe(0)
  })
})
