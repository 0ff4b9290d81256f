import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { Reassembler, type ReassemblyLimits } from '../../stacks/core/reassembly.js'

const LIMITS: ReassemblyLimits = { maxDatagrams: 4, maxBytes: 200_000, maxFragmentsPerDatagram: 64, timeoutMs: 30_000 }
const SRC = 0xc6336402
const DST = 0xc6336401

/** An IPv4 fragment: a 20-byte header (id, offset, MF) + data. */
function v4Fragment(data: Uint8Array, offset: number, more: boolean, id = 7): Uint8Array {
  const p = new Uint8Array(20 + data.length)
  p[0] = 0x45
  p[2] = (20 + data.length) >> 8
  p[3] = (20 + data.length) & 0xff
  p[4] = id >> 8
  p[5] = id & 0xff
  const field = (more ? 0x2000 : 0) | (offset / 8)
  p[6] = field >> 8
  p[7] = field & 0xff
  p[8] = 64
  p[9] = 17
  p.set([198, 51, 100, 2], 12)
  p.set([198, 51, 100, 1], 16)
  p.set(data, 20)
  return p
}

function payload(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff
  return b
}

function addV4(r: Reassembler, frag: Uint8Array, offset: number, more: boolean, now = 0, id = 7) {
  return r.add(4, frag, 20, frag.length - 20, SRC, DST, null, null, id, 17, offset, more, now)
}

function headerChecksumOk(p: Uint8Array): boolean {
  let sum = 0
  for (let i = 0; i < 20; i += 2) sum += (p[i] << 8) | p[i + 1]
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return sum === 0xffff
}

describe('Reassembler (IPv4)', () => {
  it('reassembles in order and rebuilds a valid header', () => {
    const r = new Reassembler(LIMITS)
    const data = payload(3000)
    expect(addV4(r, v4Fragment(data.subarray(0, 1480), 0, true), 0, true)).toBe('incomplete')
    expect(addV4(r, v4Fragment(data.subarray(1480, 2960), 1480, true), 1480, true)).toBe('incomplete')
    expect(addV4(r, v4Fragment(data.subarray(2960), 2960, false), 2960, false)).toBe('complete')
    const out = r.completed
    expect(out.length).toBe(3020)
    expect((out[2] << 8) | out[3]).toBe(3020)
    expect(out[6] & 0x3f).toBe(0)
    expect(out[7]).toBe(0)
    expect(headerChecksumOk(out)).toBe(true)
    expect(out.subarray(20)).toEqual(data)
    expect(r.activeDatagrams).toBe(0)
    expect(r.bytesHeld).toBe(0)
  })

  it('reassembles any split in any order (property)', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 9, max: 4000 }),
        fc.array(fc.integer({ min: 1, max: 200 }), { minLength: 1, maxLength: 20 }),
        fc.integer(),
        (size, cuts, seed) => {
          const data = payload(size, seed)
          // Cut points at multiples of 8.
          const points = [...new Set(cuts.map((c) => (c * 8) % size).filter((c) => c > 0))].sort((a, b) => a - b)
          const bounds = [0, ...points, size]
          const frags = bounds.slice(0, -1).map((s, i) => ({ s, e: bounds[i + 1] }))
          const order = frags.map((f, i) => ({ f, k: (i * 7919 + seed) >>> 0 })).sort((a, b) => a.k - b.k)
          const r = new Reassembler(LIMITS)
          let last = ''
          for (const { f } of order) last = addV4(r, v4Fragment(data.subarray(f.s, f.e), f.s, f.e !== size), f.s, f.e !== size)
          expect(last).toBe('complete')
          expect(r.completed.subarray(20)).toEqual(data)
        },
      ),
      { numRuns: 60 },
    )
  })

  it('drops exact duplicates alone but discards the whole datagram on overlap', () => {
    const r = new Reassembler(LIMITS)
    const data = payload(2000)
    addV4(r, v4Fragment(data.subarray(0, 1000), 0, true), 0, true)
    expect(addV4(r, v4Fragment(data.subarray(0, 1000), 0, true), 0, true)).toBe('duplicate')
    expect(r.activeDatagrams).toBe(1)
    expect(addV4(r, v4Fragment(data.subarray(992, 2000), 992, false), 992, false)).toBe('overlap')
    expect(r.activeDatagrams).toBe(0)
    expect(r.bytesHeld).toBe(0)
  })

  it('rejects datagrams beyond 65535 bytes and inconsistent last fragments', () => {
    const r = new Reassembler(LIMITS)
    expect(addV4(r, v4Fragment(payload(800), 65000, false), 65000, false)).toBe('bad-length')
    addV4(r, v4Fragment(payload(800), 800, false), 800, false)
    expect(addV4(r, v4Fragment(payload(800), 1600, true), 1600, true)).toBe('bad-length')
    expect(r.activeDatagrams).toBe(0)
  })

  it('limits concurrent datagrams, held bytes and fragments per datagram', () => {
    const r = new Reassembler({ ...LIMITS, maxDatagrams: 2, maxBytes: 3000, maxFragmentsPerDatagram: 3 })
    expect(addV4(r, v4Fragment(payload(8), 0, true), 0, true, 0, 1)).toBe('incomplete')
    expect(addV4(r, v4Fragment(payload(8), 0, true), 0, true, 0, 2)).toBe('incomplete')
    expect(addV4(r, v4Fragment(payload(8), 0, true), 0, true, 0, 3)).toBe('limit')
    expect(addV4(r, v4Fragment(payload(8), 8, true), 8, true, 0, 1)).toBe('incomplete')
    expect(addV4(r, v4Fragment(payload(8), 16, true), 16, true, 0, 1)).toBe('incomplete')
    expect(addV4(r, v4Fragment(payload(8), 24, true), 24, true, 0, 1)).toBe('limit') // 4th fragment
    expect(addV4(r, v4Fragment(payload(3000), 8, true), 8, true, 0, 2)).toBe('limit') // bytes
    expect(r.activeDatagrams).toBe(0)
    expect(r.bytesHeld).toBe(0)
  })

  it('times out, reporting only datagrams whose first fragment arrived', () => {
    const r = new Reassembler(LIMITS)
    addV4(r, v4Fragment(payload(800), 0, true, 1), 0, true, 1000, 1)
    addV4(r, v4Fragment(payload(800), 800, true, 2), 800, true, 2000, 2)
    expect(r.nextTimeout()).toBe(31_000)
    const timedOut: (Uint8Array | null)[] = []
    r.expire(30_999, (t) => timedOut.push(t.firstFragment))
    expect(timedOut).toHaveLength(0)
    r.expire(32_000, (t) => timedOut.push(t.firstFragment))
    expect(timedOut).toHaveLength(2)
    expect(timedOut.filter((f) => f !== null).map((f) => f![5])).toEqual([1]) // only id 1 had its offset-0 fragment
    expect(r.activeDatagrams).toBe(0)
    expect(r.nextTimeout()).toBe(Infinity)
  })
})

describe('Reassembler (IPv6)', () => {
  const src = new Uint8Array(16).fill(1)
  const dst = new Uint8Array(16).fill(2)
  /** Fixed header (40) + Fragment header (8) + data. */
  function v6Fragment(data: Uint8Array): Uint8Array {
    const p = new Uint8Array(48 + data.length)
    p[0] = 0x60
    p[6] = 44
    p[7] = 64
    p.set(src, 8)
    p.set(dst, 24)
    p[40] = 58
    p.set(data, 48)
    return p
  }
  const add = (r: Reassembler, data: Uint8Array, offset: number, more: boolean, next = 58) =>
    r.add(6, v6Fragment(data), 48, data.length, 0, 0, src, dst, 0x1234, next, offset, more, 0)

  it('rebuilds a packet with the first fragment’s Next Header and rejects overlaps (RFC 5722)', () => {
    const r = new Reassembler(LIMITS)
    const data = payload(2500)
    expect(add(r, data.subarray(1232), 1232, false, 99)).toBe('incomplete')
    expect(add(r, data.subarray(0, 1232), 0, true, 58)).toBe('complete')
    const out = r.completed
    expect(out[6]).toBe(58)
    expect((out[4] << 8) | out[5]).toBe(2500)
    expect(out.subarray(40)).toEqual(data)

    expect(add(r, data.subarray(0, 1000), 0, true)).toBe('incomplete')
    expect(add(r, data.subarray(8, 1008), 8, true)).toBe('overlap')
    // "including those not yet received": a later fragment starts a new datagram.
    expect(r.activeDatagrams).toBe(0)
  })
})
