// Model-based property test of SpscRing: random sequences of producer and
// consumer operations against a plain array model, with the free-running
// counters starting anywhere in u32 space so wrap-around is exercised.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { SpscRing, layout } from '../../nexus/channel/index.js'

type Op =
  | { kind: 'push'; bufferIndex: number; length: number; flags: number; aux: number }
  | { kind: 'publish' }
  | { kind: 'pop'; max: number }
  | { kind: 'advance'; n: number }
  | { kind: 'commit' }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.record({
      kind: fc.constant('push' as const),
      bufferIndex: fc.nat(),
      length: fc.nat({ max: 0xffff }),
      flags: fc.nat({ max: 7 }),
      aux: fc.integer({ min: 0, max: 0xffffffff }),
    }),
  },
  { weight: 2, arbitrary: fc.constant({ kind: 'publish' as const }) },
  { weight: 2, arbitrary: fc.record({ kind: fc.constant('pop' as const), max: fc.integer({ min: 1, max: 40 }) }) },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant('advance' as const), n: fc.nat({ max: 20 }) }) },
  { weight: 1, arbitrary: fc.constant({ kind: 'commit' as const }) },
)

type Desc = [number, number, number, number]

describe('SpscRing (model-based)', () => {
  it('behaves like a bounded FIFO with separate publish and commit points', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2, 4, 8, 16, 32),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.array(opArb, { maxLength: 300 }),
        (capacity, start, ops) => {
          const sab = new SharedArrayBuffer(64 + SpscRing.bytes(capacity))
          const words = new Int32Array(sab, 64)
          // Both counters start at `start`: an empty ring about to wrap.
          words[layout.RING_HEAD / 4] = start | 0
          words[layout.RING_TAIL / 4] = start | 0
          const ring = new SpscRing(sab, 64, capacity)
          const unpublished: Desc[] = []
          const published: Desc[] = []
          let consumedUncommitted = 0
          for (const op of ops) {
            switch (op.kind) {
              case 'push': {
                const fits = unpublished.length + published.length + consumedUncommitted < capacity
                expect(ring.push(op.bufferIndex, op.length, op.flags, op.aux)).toBe(fits)
                if (fits) unpublished.push([op.bufferIndex, op.length, op.flags, op.aux])
                break
              }
              case 'publish':
                ring.publish()
                published.push(...unpublished.splice(0))
                break
              case 'pop': {
                const got: Desc[] = []
                const n = ring.pop(op.max, (b, l, f, a) => got.push([b, l, f, a]))
                const want = published.splice(0, Math.min(op.max, published.length))
                expect(n).toBe(want.length)
                expect(got).toEqual(want)
                consumedUncommitted = 0
                break
              }
              case 'advance': {
                const n = Math.min(op.n, published.length)
                expect(ring.available()).toBe(published.length)
                for (let k = 0; k < n; k++) {
                  const [b, l, f, a] = published[k]
                  expect([ring.bufferIndexAt(k), ring.lengthAt(k), ring.flagsAt(k), ring.auxAt(k)]).toEqual([b, l, f, a])
                }
                ring.advance(n)
                published.splice(0, n)
                consumedUncommitted += n
                break
              }
              case 'commit':
                ring.commit()
                consumedUncommitted = 0
                break
            }
            expect(ring.available()).toBe(published.length)
            expect(ring.unpublished()).toBe(unpublished.length)
            expect(ring.freeSlots()).toBe(capacity - unpublished.length - published.length - consumedUncommitted)
          }
        },
      ),
      { numRuns: 300 },
    )
  })

  it('rings the doorbell only for an announced sleeper, and never loses one', async () => {
    const sab = new SharedArrayBuffer(SpscRing.bytes(8))
    const producer = new SpscRing(sab, 0, 8)
    const consumer = new SpscRing(sab, 0, 8)
    // Busy ring: no sleeper, so publishing rings nothing.
    producer.push(1, 1, 0, 0)
    expect(producer.publish()).toBe(false)
    expect(producer.doorbellsRung).toBe(0)
    // Work pending: the wait resolves at once without announcing a sleep.
    await consumer.waitForWork()
    expect(consumer.consumerSleeping()).toBe(false)
    consumer.pop(8, () => {})
    // Empty: the consumer announces itself and sleeps; the next publish rings.
    const sleeping = consumer.waitForWork()
    expect(consumer.consumerSleeping()).toBe(true)
    producer.push(2, 2, 0, 0)
    expect(producer.publish()).toBe(true)
    expect(consumer.consumerSleeping()).toBe(false)
    await sleeping
    expect(consumer.wakeups).toBe(1)
    // A second publish while nobody sleeps rings nothing more.
    producer.push(3, 3, 0, 0)
    expect(producer.publish()).toBe(false)
    expect(producer.doorbellsRung).toBe(1)
  })

  it('closes the check-then-sleep race: a publish between the re-check and the wait is not lost', async () => {
    const sab = new SharedArrayBuffer(SpscRing.bytes(4))
    const words = new Int32Array(sab)
    const producer = new SpscRing(sab, 0, 4)
    const consumer = new SpscRing(sab, 0, 4)
    // Emulate a producer that rang after the consumer read the sequence but
    // before Atomics.waitAsync: the sequence no longer matches, so the wait
    // returns at once ('not-equal') instead of sleeping forever.
    const seqWord = layout.RING_SEQUENCE / 4
    const seq = Atomics.load(words, seqWord)
    Atomics.add(words, seqWord, 1)
    expect(Atomics.waitAsync(words, seqWord, seq).value).toBe('not-equal')
    // And through the ring: with the sleeper announced, a publish rings.
    const wait = consumer.waitForWork()
    producer.push(7, 7, 0, 0)
    producer.publish()
    await wait
    expect(consumer.pop(4, () => {})).toBe(1)
  })

  it('calls the notifier hook instead of Atomics.notify, and wake() ends the wait', async () => {
    const sab = new SharedArrayBuffer(SpscRing.bytes(4))
    let notified = 0
    const producer = new SpscRing(sab, 0, 4, { notifier: () => notified++ })
    const consumer = new SpscRing(sab, 0, 4)
    const wait = consumer.waitForWork()
    producer.push(1, 1, 0, 0)
    expect(producer.publish()).toBe(true)
    expect(notified).toBe(1)
    // The native peer's threadsafe function would now call wake().
    consumer.wake()
    await wait
    expect(consumer.available()).toBe(1)
  })

  it('leaves no stale V8 waiter behind when woken by wake() or a timeout', async () => {
    const sab = new SharedArrayBuffer(SpscRing.bytes(4))
    const words = new Int32Array(sab)
    const consumer = new SpscRing(sab, 0, 4)
    for (let i = 0; i < 100; i++) {
      const wait = consumer.waitForWork()
      consumer.wake()
      await wait
    }
    await consumer.waitForWork(1)
    // Let V8 settle the cancelled waiters, then nobody may be left waiting.
    await new Promise((resolve) => setTimeout(resolve, 5))
    expect(Atomics.notify(words, layout.RING_SEQUENCE / 4)).toBe(0)
    expect(consumer.wakeups).toBe(101)
  })

  it('rejects a capacity that is not a power of two or a region that does not fit', () => {
    const sab = new SharedArrayBuffer(4096)
    expect(() => new SpscRing(sab, 0, 12)).toThrow(expect.objectContaining({ code: 'CHANNEL_BAD_LAYOUT' }))
    expect(() => new SpscRing(sab, 0, 1024)).toThrow(expect.objectContaining({ code: 'CHANNEL_BAD_LAYOUT' }))
    expect(() => new SpscRing(sab, 32, 4)).toThrow(expect.objectContaining({ code: 'CHANNEL_BAD_LAYOUT' }))
  })
})
