// Model-based property test of a channel's two ends driven from one thread:
// random interleavings of alloc/send/flush/receive/release/reclaim in both
// directions. Whatever the order, a buffer is never held by both sides at
// once, every packet arrives exactly once and in order, and once everything
// is drained both pools are whole again.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { attachChannel, createChannel, type ChannelEnd } from '../../nexus/channel/index.js'

type Who = 'a' | 'b'
type Op =
  | { kind: 'send'; who: Who; n: number }
  | { kind: 'flush'; who: Who }
  | { kind: 'receive'; who: Who; max: number }
  | { kind: 'release'; who: Who; n: number }
  | { kind: 'reclaim'; who: Who }

const who = fc.constantFrom<Who>('a', 'b')
const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({ kind: fc.constant('send' as const), who, n: fc.integer({ min: 1, max: 6 }) }),
  fc.record({ kind: fc.constant('flush' as const), who }),
  fc.record({ kind: fc.constant('receive' as const), who, max: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('release' as const), who, n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('reclaim' as const), who }),
)

describe('channel ends (model-based)', () => {
  it('keeps ownership exclusive, delivery exactly-once in order, and pools whole', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 12 }),
        fc.constantFrom(1, 2, 4, 8),
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.array(opArb, { maxLength: 200 }),
        (bufferCount, ringCapacity, share, ops) => {
          const sab = createChannel({ bufferSize: 64, bufferCount, ringCapacity, rxBufferShare: share })
          const ends: Record<Who, ChannelEnd> = { a: attachChannel(sab, 'a'), b: attachChannel(sab, 'b') }
          // What the test knows each side holds (received and not yet released).
          const held: Record<Who, number[]> = { a: [], b: [] }
          const nextSeq: Record<Who, number> = { a: 0, b: 0 }
          const received: Record<Who, number[]> = { a: [], b: [] }
          const holder = new Map<number, Who>()
          const take = (w: Who, index: number) => {
            expect(holder.has(index), `buffer ${index} handed to ${w} while ${holder.get(index)} holds it`).toBe(false)
            holder.set(index, w)
          }
          const visitFor = (w: Who) => (index: number, _length: number, _flags: number, aux: number) => {
            take(w, index)
            held[w].push(index)
            received[w].push(aux)
            expect(ends[w].buffer(index)[0]).toBe(aux & 0xff)
          }
          const drain = (w: Who) => {
            const visit = visitFor(w)
            for (let i = 0; i < 64 && ends[w].receive(Number.MAX_SAFE_INTEGER, visit) > 0; i++);
            for (const index of held[w].splice(0)) {
              holder.delete(index)
              ends[w].release(index)
            }
          }
          for (const op of ops) {
            const end = ends[op.who]
            switch (op.kind) {
              case 'send':
                for (let k = 0; k < op.n; k++) {
                  const index = end.alloc()
                  if (index < 0) break
                  take(op.who, index)
                  const seq = nextSeq[op.who]
                  end.buffer(index)[0] = seq & 0xff
                  if (end.send(index, 1, 0, seq)) {
                    holder.delete(index)
                    nextSeq[op.who]++
                  } else {
                    holder.delete(index)
                    end.free(index)
                    break
                  }
                }
                break
              case 'flush':
                end.flush()
                break
              case 'receive':
                end.receive(op.max, visitFor(op.who))
                break
              case 'release':
                for (const index of held[op.who].splice(0, op.n)) {
                  holder.delete(index)
                  end.release(index)
                }
                break
              case 'reclaim':
                end.reclaim()
                break
            }
            const pa = ends.a.poolAccounting()
            const pb = ends.b.poolAccounting()
            expect(pa.held).toBe(held.a.length)
            expect(pb.held).toBe(held.b.length)
            expect(pa.free + pb.free + pa.held + pb.held).toBeLessThanOrEqual(bufferCount)
          }
          // Drain everything; backlogs need the owner to reclaim in between.
          for (let round = 0; round < 4 * bufferCount + 8; round++) {
            ends.a.flush()
            ends.b.flush()
            drain('a')
            drain('b')
            ends.a.flush()
            ends.b.flush()
            ends.a.reclaim()
            ends.b.reclaim()
          }
          expect(received.b).toEqual(Array.from({ length: nextSeq.a }, (_, i) => i))
          expect(received.a).toEqual(Array.from({ length: nextSeq.b }, (_, i) => i))
          expect(ends.a.returnBacklog() + ends.b.returnBacklog()).toBe(0)
          expect(ends.a.freeCount() + ends.b.freeCount()).toBe(bufferCount)
          expect(ends.a.counters().corrupt + ends.b.counters().corrupt).toBe(0)
        },
      ),
      { numRuns: 200 },
    )
  })
})
