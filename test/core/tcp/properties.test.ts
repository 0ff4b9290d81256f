import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { ReorderRanges } from '../../../stacks/core/tcp/reorder.js'
import { ByteRing } from '../../../stacks/core/tcp/ring.js'
import { seqAdd, seqDiff, seqGe, seqGt, seqInWindow, seqLe, seqLt, seqMax, seqMin } from '../../../stacks/core/tcp/seq.js'

const u32 = fc.integer({ min: 0, max: 0xffffffff })
const smallDelta = fc.integer({ min: -(2 ** 31) + 1, max: 2 ** 31 - 1 })

describe('sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4)', () => {
  it('a + d compares to a like d compares to 0, across the wrap', () => {
    fc.assert(
      fc.property(u32, smallDelta, (a, d) => {
        const b = seqAdd(a, d)
        expect(b).toBeGreaterThanOrEqual(0)
        expect(b).toBeLessThanOrEqual(0xffffffff)
        expect(seqDiff(b, a)).toBe(d)
        expect(seqLt(a, b)).toBe(d > 0)
        expect(seqGt(a, b)).toBe(d < 0)
        expect(seqLe(a, b)).toBe(d >= 0)
        expect(seqGe(a, b)).toBe(d <= 0)
        expect(seqMax(a, b)).toBe(d >= 0 ? b : a)
        expect(seqMin(a, b)).toBe(d >= 0 ? a : b)
      }),
      { numRuns: 2000 },
    )
  })

  it('window membership is translation invariant (so it holds across the wrap)', () => {
    fc.assert(
      fc.property(u32, u32, fc.integer({ min: 0, max: 2 ** 30 }), fc.integer({ min: -(2 ** 30), max: 2 ** 30 }), (shift, lo, size, off) => {
        const x = seqAdd(lo, off)
        const plain = off >= 0 && off < size
        expect(seqInWindow(x, lo, seqAdd(lo, size))).toBe(plain)
        expect(seqInWindow(seqAdd(x, shift), seqAdd(lo, shift), seqAdd(lo, size + shift))).toBe(plain)
      }),
      { numRuns: 2000 },
    )
  })

  it('concrete wraparound cases', () => {
    expect(seqLt(0xfffffff0, 0x10)).toBe(true)
    expect(seqAdd(0xffffffff, 1)).toBe(0)
    expect(seqDiff(5, 0xfffffffb)).toBe(10)
    expect(seqInWindow(2, 0xfffffffe, 10)).toBe(true)
  })
})

describe('ReorderRanges against a byte-set reference', () => {
  const op = fc.record({ start: fc.integer({ min: 0, max: 400 }), len: fc.integer({ min: 1, max: 60 }) })

  it('holds exactly the bytes added, merged, sorted and disjoint; takeFront delivers the in-order prefix', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 80 }), fc.integer({ min: 1, max: 12 }), (ops, maxRanges) => {
        const r = new ReorderRanges(maxRanges)
        const ref = new Set<number>()
        let base = 0
        for (const { start, len } of ops) {
          const rel = start - base
          const from = Math.max(rel, 0)
          const to = rel + len
          if (to <= from) continue
          const before = new Set(ref)
          const ok = r.add(from, to)
          if (ok) {
            for (let i = from; i < to; i++) ref.add(i + base)
          } else {
            // Refused only when it needed a new slot and all were in use; nothing changed.
            expect(r.count).toBe(maxRanges)
            expect(ref).toEqual(before)
          }
          const n = r.takeFront()
          let prefixHeld = true
          for (let i = 0; i < n; i++) {
            prefixHeld &&= ref.has(base + i)
            ref.delete(base + i)
          }
          expect(prefixHeld).toBe(true)
          base += n
          expect(ref.has(base)).toBe(false)
          // Structure: sorted, disjoint, non-adjacent, matching the reference.
          let total = 0
          for (let i = 0; i < r.count; i++) {
            expect(r.end(i)).toBeGreaterThan(r.start(i))
            if (i > 0) expect(r.start(i)).toBeGreaterThan(r.end(i - 1))
            let held = true
            for (let b = r.start(i); b < r.end(i); b++) held &&= ref.has(base + b)
            expect(held).toBe(true)
            total += r.end(i) - r.start(i)
          }
          expect(total).toBe(ref.size)
        }
      }),
      { numRuns: 300 },
    )
  })

  it('SACK order: the most recently grown range first, each range once (RFC 2018 §4)', () => {
    fc.assert(
      fc.property(fc.array(op, { minLength: 1, maxLength: 30 }), (ops) => {
        const r = new ReorderRanges(64)
        let last = -1
        for (const { start, len } of ops) {
          r.add(start + 1, start + 1 + len)
          last = start + 1
        }
        const out = new Int32Array(4)
        const n = r.mostRecent(out, 4)
        expect(n).toBe(Math.min(4, r.count))
        // The first block contains the last segment added.
        expect(r.start(out[0])).toBeLessThanOrEqual(last)
        expect(r.end(out[0])).toBeGreaterThan(last)
        expect(new Set(Array.from(out.subarray(0, n))).size).toBe(n)
      }),
      { numRuns: 500 },
    )
  })
})

describe('ByteRing against an array reference', () => {
  it('write / read / peek / discard / writeAt+commit keep FIFO content across the wrap', () => {
    const action = fc.oneof(
      fc.record({ kind: fc.constant('write' as const), n: fc.integer({ min: 0, max: 50 }) }),
      fc.record({ kind: fc.constant('read' as const), n: fc.integer({ min: 0, max: 50 }) }),
      fc.record({ kind: fc.constant('peek' as const), n: fc.integer({ min: 0, max: 50 }), skip: fc.integer({ min: 0, max: 40 }) }),
      fc.record({ kind: fc.constant('gap' as const), n: fc.integer({ min: 1, max: 20 }), gap: fc.integer({ min: 0, max: 20 }) }),
    )
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.array(action, { maxLength: 100 }), (capacity, actions) => {
        const ring = new ByteRing(capacity)
        const ref: number[] = []
        let counter = 0
        for (const a of actions) {
          if (a.kind === 'write') {
            const src = Uint8Array.from({ length: a.n }, () => counter++ & 0xff)
            const n = ring.write(src)
            expect(n).toBe(Math.min(a.n, capacity - ref.length))
            ref.push(...src.subarray(0, n))
          } else if (a.kind === 'read') {
            const dst = new Uint8Array(a.n)
            const n = ring.read(dst, 0, a.n)
            expect(n).toBe(Math.min(a.n, ref.length))
            expect([...dst.subarray(0, n)]).toEqual(ref.splice(0, n))
          } else if (a.kind === 'peek') {
            const dst = new Uint8Array(a.n)
            const n = ring.peek(dst, 0, a.n, a.skip)
            expect([...dst.subarray(0, n)]).toEqual(ref.slice(a.skip, a.skip + a.n))
          } else {
            // Place bytes beyond the tail, then the gap before them, then commit both (receiver reassembly).
            if (a.gap + a.n > ring.free) continue
            const later = Uint8Array.from({ length: a.n }, () => counter++ & 0xff)
            const first = Uint8Array.from({ length: a.gap }, () => counter++ & 0xff)
            expect(ring.writeAt(a.gap, later, 0, a.n)).toBe(a.n)
            expect(ring.writeAt(0, first, 0, a.gap)).toBe(a.gap)
            ring.commit(a.gap + a.n)
            ref.push(...first, ...later)
          }
          expect(ring.length).toBe(ref.length)
          expect(ring.free).toBe(capacity - ref.length)
        }
      }),
      { numRuns: 500 },
    )
  })
})
