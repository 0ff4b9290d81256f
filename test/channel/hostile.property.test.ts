// Fuzzing the trust boundary: a hostile side A scribbles arbitrary words over
// every ring (descriptors, head, tail, doorbell) while an honest side B keeps
// working. B must never throw, never hand out a buffer outside the pool or one
// it already holds, and its ownership bookkeeping must stay consistent.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { attachChannel, createChannel, layout, readLayout, RING_RX, RING_TX_RETURN, SpscRing } from '../../nexus/channel/index.js'

type Op =
  | { kind: 'scribble'; ring: number; control: boolean; word: number; value: number }
  | { kind: 'hostileSend'; index: number; length: number; flags: number }
  | { kind: 'hostileReturn'; index: number }
  | { kind: 'receive'; max: number }
  | { kind: 'release'; n: number }
  | { kind: 'send'; n: number }
  | { kind: 'flush' }
  | { kind: 'reclaim' }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant('scribble' as const),
      ring: fc.integer({ min: 0, max: 3 }),
      // Control words (head, tail, waiters, sequence) or descriptor words.
      control: fc.boolean(),
      word: fc.nat(),
      // Mostly small values (plausible indices and lengths), sometimes anything.
      value: fc.oneof(fc.integer({ min: -2, max: 40 }), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 })),
    }),
  },
  {
    weight: 4,
    // Plausible descriptors, some out of range, too long, with reserved flags,
    // or naming buffers A does not own.
    arbitrary: fc.record({
      kind: fc.constant('hostileSend' as const),
      index: fc.integer({ min: 0, max: 19 }),
      length: fc.integer({ min: 0, max: 140 }),
      flags: fc.constantFrom(0, 0, 0, 1, 2),
    }),
  },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('hostileReturn' as const), index: fc.integer({ min: 0, max: 19 }) }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('receive' as const), max: fc.integer({ min: 1, max: 16 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('release' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('send' as const), n: fc.integer({ min: 1, max: 8 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'reclaim' as const }) },
)

describe('channel end facing a hostile peer', () => {
  it('never throws, never delivers an invalid or duplicate buffer, never double-allocates', () => {
    // Coverage: the fuzz must really reach deliveries, corruption and returns.
    let runsDelivering = 0
    let runsCorrupt = 0
    let runsReclaiming = 0
    fc.assert(
      fc.property(fc.array(opArb, { maxLength: 250 }), (ops) => {
        const bufferCount = 16
        const bufferSize = 128
        const sab = createChannel({ bufferSize, bufferCount, ringCapacity: 8, rxBufferShare: 0.5 })
        const g = readLayout(sab)
        const words = new Int32Array(sab)
        const controlWords = [layout.RING_HEAD / 4, layout.RING_TAIL / 4, layout.RING_WAITERS / 4, layout.RING_SEQUENCE / 4]
        const descriptorWords = (8 * layout.DESCRIPTOR_BYTES) / 4
        let corruptSeen = 0
        const b = attachChannel(sab, 'b', { onCorrupt: () => corruptSeen++ })
        // Side A is never attached: these raw producers play it.
        const rx = new SpscRing(sab, g.ringOffsets[RING_RX], g.ringCapacity)
        const txReturn = new SpscRing(sab, g.ringOffsets[RING_TX_RETURN], g.ringCapacity)
        const holds = new Set<number>()
        let reclaimed = 0
        const received: number[] = []
        const visit = (index: number, length: number, flags: number) => {
          expect(index).toBeLessThan(bufferCount)
          expect(length).toBeLessThanOrEqual(bufferSize)
          expect(flags & ~1).toBe(0)
          expect(holds.has(index)).toBe(false)
          holds.add(index)
          received.push(index)
        }
        for (const op of ops) {
          switch (op.kind) {
            case 'scribble':
            {
              const at =
                g.ringOffsets[op.ring] / 4 +
                (op.control ? controlWords[op.word % 4] : layout.RING_CONTROL_BYTES / 4 + (op.word % descriptorWords))
              // Counters are mostly nudged (plausible lies), sometimes replaced.
              words[at] = op.control && op.value >= -2 && op.value <= 40 ? words[at] + (op.value % 10) : op.value
            }
              break
            case 'hostileSend':
              rx.push(op.index, op.length, op.flags, 0)
              rx.publish()
              break
            case 'hostileReturn':
              txReturn.push(op.index, 0, 0, 0)
              txReturn.publish()
              break
            case 'receive':
              b.receive(op.max, visit)
              break
            case 'release':
              for (const index of received.splice(0, op.n)) {
                holds.delete(index)
                b.release(index)
              }
              break
            case 'send':
              for (let k = 0; k < op.n; k++) {
                const index = b.alloc()
                if (index < 0) break
                expect(index).toBeLessThan(bufferCount)
                expect(holds.has(index)).toBe(false)
                if (!b.send(index, 10)) {
                  b.free(index)
                  break
                }
              }
              break
            case 'flush':
              b.flush()
              break
            case 'reclaim':
              reclaimed += b.reclaim()
              break
          }
          const accounting = b.poolAccounting() // throws if the books do not balance
          expect(accounting.held).toBe(holds.size)
          expect(b.counters().corrupt).toBe(corruptSeen)
        }
        // Whatever happened, the recorded error agrees with the count.
        const recorded = b.recordedError()
        expect(recorded.count).toBe(corruptSeen)
        expect(recorded.reason === 0).toBe(corruptSeen === 0)
        if (b.counters().received > 0) runsDelivering++
        if (corruptSeen > 0) runsCorrupt++
        if (reclaimed > 0) runsReclaiming++
      }),
      { numRuns: 400 },
    )
    expect(runsDelivering).toBeGreaterThan(20)
    expect(runsCorrupt).toBeGreaterThan(20)
    expect(runsReclaiming).toBeGreaterThan(5)
  })
})
