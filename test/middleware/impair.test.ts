import { afterEach, describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { createMemorySwitch, createMemoryWire, type MemoryPort } from '../../nexus/ports/memory.js'
import { impair, type ImpairedPort, type ImpairOptions } from '../../nexus/middleware/impair.js'
import { ImpairModel, VERDICT_DELIVER, VERDICT_LOST } from '../../nexus/middleware/impair-model.js'
import { VirtualClock } from '../../nexus/middleware/impair-clock.js'
import { DepartureQueue } from '../../nexus/middleware/impair-queue.js'
import { Xoshiro128, decisionUnit } from '../../nexus/middleware/impair-random.js'
import { drain, poolsFull, sendOne, until, writeFrame, type Received } from '../ports/memory-helpers.js'

const SEED = 0x5eed
const BROADCAST = new Uint8Array(6).fill(0xff)

interface Rig {
  impaired: ImpairedPort
  far: MemoryPort
  near: MemoryPort
}
const rigs: Rig[] = []

afterEach(async () => {
  await Promise.all(rigs.splice(0).map((r) => Promise.all([r.impaired.close(), r.far.close()])))
})

const BROADCAST_FOR_CLOSE = new Uint8Array(6).fill(0xff)

/** near --wire-- far, with `near` wrapped by impair(): the test talks through impaired.queues[0] and far.queues[0]. */
function rig(options: ImpairOptions, wire: Parameters<typeof createMemoryWire>[0] = {}): Rig {
  const [near, far] = createMemoryWire(wire)
  const r = { impaired: impair(near, options), far, near }
  rigs.push(r)
  return r
}

async function closeRig(r: Rig): Promise<void> {
  rigs.splice(rigs.indexOf(r), 1)
  await Promise.all([r.impaired.close(), r.far.close()])
  for (const report of r.impaired.poolReport()) {
    expect(report.device.held + report.user.held).toBe(0)
    expect(report.device.free + report.user.free).toBe(report.total)
  }
  expect(poolsFull(r.near.poolReport())).toBe(true)
  expect(poolsFull(r.far.poolReport())).toBe(true)
}

/**
 * Sends frames 0..count-1 from the impaired side and collects at the far side
 * until `done(received)` holds; frames are paced by buffer availability.
 */
async function transfer(r: Rig, count: number, length: number, done: (got: Received[]) => boolean, timeoutMs = 30_000): Promise<Received[]> {
  const tx = r.impaired.queues[0]
  const rx = r.far.queues[0]
  const got: Received[] = []
  let sent = 0
  const deadline = Date.now() + timeoutMs
  while (!(sent === count && done(got))) {
    if (Date.now() > deadline) throw new Error(`sent ${sent}/${count}, received ${got.length}`)
    while (sent < count && sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, sent, length))) sent++
    tx.flush()
    await rx.waitForWork(5)
    drain(rx, got)
  }
  return got
}

function missing(got: Received[], count: number): number[] {
  const seen = new Uint8Array(count)
  for (const r of got) seen[r.sequence] = 1
  const out: number[] = []
  for (let i = 0; i < count; i++) if (seen[i] === 0) out.push(i)
  return out
}

describe('seeded randomness', () => {
  it('xoshiro128** replays from its seed and is roughly uniform', () => {
    const a = new Xoshiro128(42)
    const b = new Xoshiro128(42)
    const c = new Xoshiro128(43)
    const sa = Array.from({ length: 1000 }, () => a.nextU32())
    expect(Array.from({ length: 1000 }, () => b.nextU32())).toEqual(sa)
    expect(Array.from({ length: 1000 }, () => c.nextU32())).not.toEqual(sa)
    const buckets = new Array<number>(10).fill(0)
    const r = new Xoshiro128(7)
    for (let i = 0; i < 100_000; i++) buckets[r.nextBelow(10)]++
    for (const n of buckets) expect(Math.abs(n - 10_000)).toBeLessThan(500)
  })

  it('decision streams are independent of each other', () => {
    let both = 0
    for (let i = 0; i < 100_000; i++) if (decisionUnit(1, 1, i) < 0.5 && decisionUnit(1, 2, i) < 0.5) both++
    expect(Math.abs(both - 25_000)).toBeLessThan(800)
  })
})

describe('virtual clock', () => {
  it('fires due timers in deadline order, each at its own time, and never goes back', () => {
    const clock = new VirtualClock(100)
    const fired: string[] = []
    clock.setTimer(5, () => fired.push(`b@${clock.now()}`))
    clock.setTimer(1, () => {
      fired.push(`a@${clock.now()}`)
      clock.setTimer(1, () => fired.push(`c@${clock.now()}`))
    })
    const cancelled = clock.setTimer(3, () => fired.push('never'))
    clock.clearTimer(cancelled)
    clock.advance(4)
    expect(fired).toEqual(['a@101', 'c@102'])
    expect(clock.nextDeadline()).toBe(105)
    clock.advance(10)
    expect(fired).toEqual(['a@101', 'c@102', 'b@105'])
    expect(clock.now()).toBe(114)
    expect(() => clock.advanceTo(50)).toThrow(RangeError)
  })
})

describe('impairment model (pure)', () => {
  it('loss 10% drops 10% ± 1% of 100 000 packets, the same ones for the same seed', () => {
    const drops = (seed: number): number[] => {
      const m = new ImpairModel(seed, { loss: 0.1 })
      const out: number[] = []
      for (let i = 0; i < 100_000; i++) if (m.decide(i, 100, 0, 0).verdict === VERDICT_LOST) out.push(i)
      return out
    }
    const first = drops(SEED)
    expect(first.length).toBeGreaterThanOrEqual(9_000)
    expect(first.length).toBeLessThanOrEqual(11_000)
    expect(drops(SEED)).toEqual(first)
    expect(drops(SEED + 1)).not.toEqual(first)
  })

  it('enabling another impairment does not change which packets are lost', () => {
    const lost = (options: object): number[] => {
      const m = new ImpairModel(9, { loss: 0.2, ...options })
      const out: number[] = []
      for (let i = 0; i < 10_000; i++) if (m.decide(i, 100, i, 0).verdict === VERDICT_LOST) out.push(i)
      return out
    }
    expect(lost({ duplicate: 0.3, corrupt: 0.1, jitterMs: 5, delayMs: 10 })).toEqual(lost({}))
  })

  it('rate limit serialises packets at the configured rate and tail-drops past the queue bound', () => {
    // 8 Mbit/s = 1000 bytes per ms.
    const m = new ImpairModel(1, { rateBitsPerSecond: 8_000_000, queueLimit: 10 })
    const departures: number[] = []
    let held = 0
    let dropped = 0
    for (let i = 0; i < 15; i++) {
      const plan = m.decide(i, 1000, 0, held)
      if (plan.verdict === VERDICT_DELIVER) {
        departures.push(plan.departure)
        held++
      } else dropped++
    }
    expect(departures).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(dropped).toBe(5)
  })

  it('jitter stays within bounds and, unless allowed, never reorders', () => {
    const inOrder = new ImpairModel(3, { delayMs: 10, jitterMs: 4 })
    const reordering = new ImpairModel(3, { delayMs: 10, jitterMs: 4, jitterReorders: true })
    let last = -Infinity
    let inversions = 0
    let lastFree = -Infinity
    for (let i = 0; i < 1000; i++) {
      const t = i * 0.5
      const d = inOrder.decide(i, 100, t, 0).departure
      expect(d).toBeGreaterThanOrEqual(last)
      last = d
      const f = reordering.decide(i, 100, t, 0).departure
      expect(f - t).toBeGreaterThanOrEqual(6)
      expect(f - t).toBeLessThanOrEqual(14)
      if (f < lastFree) inversions++
      lastFree = f
    }
    expect(inversions).toBeGreaterThan(100)
  })

  it('duplication, reordering and corruption happen at their probabilities', () => {
    const m = new ImpairModel(11, { duplicate: 0.2, reorder: 0.05, corrupt: 0.03 })
    let dup = 0
    let reorder = 0
    let corrupt = 0
    for (let i = 0; i < 100_000; i++) {
      const plan = m.decide(i, 64, 0, 0)
      if (plan.duplicateDeparture >= 0) dup++
      if (plan.reordered) reorder++
      if (plan.corruptBit >= 0) {
        corrupt++
        expect(plan.corruptBit).toBeLessThan(64 * 8)
      }
    }
    expect(Math.abs(dup - 20_000)).toBeLessThan(1_000)
    expect(Math.abs(reorder - 5_000)).toBeLessThan(500)
    expect(Math.abs(corrupt - 3_000)).toBeLessThan(400)
  })

  it('rejects nonsense options with a stable code', () => {
    expect(() => new ImpairModel(1, { loss: 1.5 })).toThrow(expect.objectContaining({ code: 'IMPAIR_BAD_OPTION' }))
    expect(() => new ImpairModel(1, { rateBitsPerSecond: -1 })).toThrow(expect.objectContaining({ code: 'IMPAIR_BAD_OPTION' }))
    expect(() => new ImpairModel(1, { queueLimit: 0 })).toThrow(expect.objectContaining({ code: 'IMPAIR_BAD_OPTION' }))
  })
})

describe('departure queue', () => {
  it('pops in (departure, insertion) order: model-based against a sorted array', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.integer({ min: 0, max: 20 }), fc.constant(-1)), { maxLength: 200 }), (ops) => {
        const q = new DepartureQueue(64)
        const model: { dep: number; order: number; id: number }[] = []
        let order = 0
        for (const op of ops) {
          if (op >= 0) {
            const ok = q.push(op, order, 0, 0, 0)
            expect(ok).toBe(model.length < 64)
            if (ok) model.push({ dep: op, order, id: order })
            order++
          } else {
            model.sort((a, b) => a.dep - b.dep || a.order - b.order)
            const expected = model.shift()
            expect(q.pop()).toBe(expected !== undefined)
            if (expected !== undefined) expect(q.poppedIndex).toBe(expected.id)
          }
          expect(q.size).toBe(model.length)
        }
      }),
      { seed: 1234, numRuns: 300 },
    )
  })
})

describe('impair() around a memory wire', () => {
  it('the queue limit counts packets really held, whatever the batch size (no delay: nothing is held, nothing tail-dropped)', async () => {
    for (const batchSize of [64, 8, 1]) {
      const r = rig({ seed: 7, queueLimit: 8, batchSize, clock: new VirtualClock() })
      const got = await transfer(r, 64, 100, (received) => received.length === 64)
      expect(got.map((f) => f.sequence)).toEqual(Array.from({ length: 64 }, (_, i) => i))
      expect(r.impaired.impairCounters().tx.queueFull).toBe(0)
      await closeRig(r)
    }
  })

  it('every buffer comes home when its user closed its side first with frames on the way to it', async () => {
    const r = rig({ delayMs: 2 })
    r.impaired.queues[0].close()
    let sent = 0
    for (let i = 0; i < 100 && sendOne(r.far.queues[0], (buf) => writeFrame(buf, BROADCAST_FOR_CLOSE, r.far.info.mac as Uint8Array, i, 100)); i++) sent++
    r.far.queues[0].flush()
    expect(sent).toBe(100)
    await new Promise((resolve) => setTimeout(resolve, 30))
    await closeRig(r)
  })

  it('loss 10%: 100 000 frames, 10% ± 1% dropped, the same frames for the same seed', async () => {
    const count = 100_000
    const run = async (seed: number): Promise<number[]> => {
      const r = rig({ seed, tx: { loss: 0.1 } })
      const got = await transfer(r, count, 64, (g) => g.length === r.impaired.impairCounters().tx.delivered && r.impaired.impairCounters().tx.arrived === count)
      const lost = missing(got, count)
      expect(lost.length).toBe(r.impaired.impairCounters().tx.lost)
      expect(got.length + lost.length).toBe(count)
      // Loss is the only change: no duplicates, nothing reordered.
      expect(got.every((g, i) => i === 0 || g.sequence > got[i - 1].sequence)).toBe(true)
      await closeRig(r)
      return lost
    }
    const first = await run(SEED)
    expect(first.length).toBeGreaterThanOrEqual(9_000)
    expect(first.length).toBeLessThanOrEqual(11_000)
    const again = await run(SEED)
    expect(again).toEqual(first)
  })

  it('duplication: each duplicated frame arrives exactly twice, the others once', async () => {
    const count = 5_000
    const r = rig({ seed: SEED, tx: { duplicate: 0.1 } })
    const got = await transfer(r, count, 100, (g) => g.length === count + r.impaired.impairCounters().tx.duplicated)
    const times = new Uint8Array(count)
    for (const g of got) times[g.sequence]++
    const twice = times.filter((t) => t === 2).length
    expect(times.every((t) => t === 1 || t === 2)).toBe(true)
    expect(twice).toBe(r.impaired.impairCounters().tx.duplicated)
    expect(Math.abs(twice - 500)).toBeLessThan(100)
    expect(got.every((g) => g.intact)).toBe(true)
    const counters = r.impaired.counters()
    expect(counters.txPackets).toBe(count + twice)
    expect(counters.rxPackets).toBe(0)
    expect(counters.drops).toEqual({ ringFull: 0, poolEmpty: 0, oversize: 0 })
    await closeRig(r)
    expect(() => r.impaired.counters()).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
  })

  it('corruption flips exactly one bit in the chosen frames and leaves the rest intact', async () => {
    const count = 4_000
    const r = rig({ seed: SEED, tx: { corrupt: 0.05 } })
    const tx = r.impaired.queues[0]
    const rx = r.far.queues[0]
    let sent = 0
    let flipped = 0
    let clean = 0
    const deadline = Date.now() + 20_000
    const expected = new Uint8Array(2048)
    while (flipped + clean < count) {
      if (Date.now() > deadline) throw new Error('timed out')
      while (sent < count && sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, sent, 128))) sent++
      tx.flush()
      await rx.waitForWork(5)
      rx.receive(1024, (index, length) => {
        // Corruption neither drops nor reorders: the n-th frame received is frame n.
        const bits = countBitsApart(rx.buffer(index), flipped + clean, length, expected)
        if (bits === 1) flipped++
        else if (bits === 0) clean++
        else throw new Error(`frame ${flipped + clean} differs by ${bits} bits`)
        rx.release(index)
      })
    }
    expect(flipped).toBe(r.impaired.impairCounters().tx.corrupted)
    expect(Math.abs(flipped - 200)).toBeLessThan(60)
    await closeRig(r)
  })

  it('delay with jitter on a virtual clock: nothing early, nothing late, order kept, one timer per batch', async () => {
    const clock = new VirtualClock()
    let timersSet = 0
    const setTimer = clock.setTimer.bind(clock)
    clock.setTimer = (delayMs, callback) => {
      timersSet++
      return setTimer(delayMs, callback)
    }
    const r = rig({ seed: SEED, clock, rx: { delayMs: 10, jitterMs: 4 } })
    // rx direction: far sends, the impaired side receives.
    const tx = r.far.queues[0]
    const rx = r.impaired.queues[0]
    for (let i = 0; i < 200; i++) expect(sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, i, 100))).toBe(true)
    tx.flush()
    await until(() => r.impaired.impairCounters().rx.arrived === 200, 'all 200 frames to reach the impairment')
    const got: Received[] = []
    clock.advance(5.99)
    await new Promise((res) => setTimeout(res, 10))
    drain(rx, got)
    expect(got).toHaveLength(0)
    clock.advance(14 - 5.99)
    await until(() => (drain(rx, got), got.length === 200), 'every delayed frame')
    expect(got.map((g) => g.sequence)).toEqual(Array.from({ length: 200 }, (_, i) => i))
    expect(clock.pendingTimers).toBe(0)
    // The timer follows the earliest departure: re-armed per batch at most, never per packet.
    expect(timersSet).toBeLessThan(200 / 4)
    await closeRig(r)
  })

  it('delays on real time with the default clock', async () => {
    const r = rig({ seed: SEED, tx: { delayMs: 30 } })
    const started = performance.now()
    const got = await transfer(r, 50, 100, (g) => g.length === 50)
    expect(performance.now() - started).toBeGreaterThanOrEqual(29)
    expect(got.map((g) => g.sequence)).toEqual(Array.from({ length: 50 }, (_, i) => i))
    await closeRig(r)
  })

  it('reordering holds the chosen frames back so later ones overtake them', async () => {
    const clock = new VirtualClock()
    const r = rig({ seed: SEED, clock, tx: { reorder: 0.1, reorderDelayMs: 5 } })
    const count = 300
    const tx = r.impaired.queues[0]
    for (let i = 0; i < count; i++) expect(sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, i, 80))).toBe(true)
    tx.flush()
    await until(() => r.impaired.impairCounters().tx.arrived === count, 'all frames to reach the impairment')
    const held = r.impaired.impairCounters().tx.reordered
    expect(held).toBeGreaterThan(10)
    const got: Received[] = []
    await until(() => (drain(r.far.queues[0], got), got.length === count - held), 'the frames not held back')
    clock.advance(5)
    await until(() => (drain(r.far.queues[0], got), got.length === count), 'the held-back frames')
    const early = got.slice(0, count - held).map((g) => g.sequence)
    const late = got.slice(count - held).map((g) => g.sequence)
    expect(early).toEqual([...early].sort((a, b) => a - b))
    expect(late).toEqual([...late].sort((a, b) => a - b))
    expect(late[0]).toBeLessThan(early[early.length - 1])
    expect(new Set([...early, ...late]).size).toBe(count)
    await closeRig(r)
  })

  it('rate limit with a queue bound: the excess is tail-dropped, the rest leaves at the link rate', async () => {
    const clock = new VirtualClock()
    // 8 Mbit/s: one 1000-byte frame per virtual millisecond; at most 20 held.
    const r = rig({ seed: SEED, clock, tx: { rateBitsPerSecond: 8_000_000, queueLimit: 20 } })
    const tx = r.impaired.queues[0]
    for (let i = 0; i < 50; i++) expect(sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, i, 1000))).toBe(true)
    tx.flush()
    await until(() => r.impaired.impairCounters().tx.arrived === 50, 'all frames to reach the impairment')
    expect(r.impaired.impairCounters().tx.queueFull).toBe(30)
    const got: Received[] = []
    for (let ms = 1; ms <= 20; ms++) {
      clock.advance(1)
      await until(() => (drain(r.far.queues[0], got), got.length === ms), `frame ${ms} at ${ms} ms`)
    }
    expect(got.map((g) => g.sequence)).toEqual(Array.from({ length: 20 }, (_, i) => i))
    await closeRig(r)
  })

  it('wraps a switch port too: seeded loss on what one station receives, the others untouched', async () => {
    const sw = createMemorySwitch()
    const lossy = impair(sw.addPort(), { seed: SEED, rx: { loss: 0.5 } })
    const [sender, clean] = [sw.addPort(), sw.addPort()]
    expect(lossy.info.mac).toEqual(lossy.inner.info.mac)
    expect(lossy.info.linkType).toBe('ethernet')
    const gotLossy: Received[] = []
    const gotClean: Received[] = []
    let sent = 0
    try {
      for (let round = 0; round < 200 && (sent < 400 || gotClean.length < 400); round++) {
        while (sent < 400 && sendOne(sender.queues[0], (buf) => writeFrame(buf, BROADCAST, sender.info.mac as Uint8Array, sent, 64))) sent++
        sender.queues[0].flush()
        await new Promise((res) => setTimeout(res, 1))
        drain(lossy.queues[0], gotLossy)
        drain(clean.queues[0], gotClean)
      }
      await until(() => (drain(lossy.queues[0], gotLossy), gotLossy.length + lossy.impairCounters().rx.lost === 400), 'the lossy port to settle')
      expect(gotClean).toHaveLength(400)
      expect(Math.abs(gotLossy.length - 200)).toBeLessThan(40)
    } finally {
      await Promise.all([lossy.close(), sender.close(), clean.close()])
      await sw.close()
    }
    for (const report of lossy.poolReport()) expect(report.device.free + report.user.free).toBe(report.total)
    expect(poolsFull(sender.poolReport()) && poolsFull(clean.poolReport())).toBe(true)
    expect(poolsFull((lossy.inner as MemoryPort).poolReport())).toBe(true)
  })

  it('closing while frames are held returns every buffer', async () => {
    const clock = new VirtualClock()
    const r = rig({ seed: SEED, clock, delayMs: 1000 })
    const tx = r.impaired.queues[0]
    for (let i = 0; i < 100; i++) sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, i, 500))
    tx.flush()
    await until(() => r.impaired.impairCounters().tx.held === 100, '100 held frames')
    await closeRig(r)
    expect(() => r.impaired.queues).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
  })
})

/** Bits by which `buf` differs from the frame writeFrame would build for `sequence` (0 = identical). */
function countBitsApart(buf: Uint8Array, sequence: number, length: number, scratch: Uint8Array): number {
  writeFrame(scratch, BROADCAST, BROADCAST, sequence, length)
  let bits = 0
  for (let i = 0; i < length; i++) {
    let x = buf[i] ^ scratch[i]
    while (x !== 0) {
      bits += x & 1
      x >>>= 1
    }
  }
  return bits
}
