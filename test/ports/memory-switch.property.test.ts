// The learning switch against a reference model: random frames from random
// ports to random addresses (known stations, unknown ones, broadcast,
// multicast); after every frame, what each port received must be exactly
// what a plain learning bridge would deliver.
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { createMemorySwitch } from '../../nexus/ports/memory.js'
import { drain, poolsFull, sendOne, until, writeFrame, type Received } from './memory-helpers.js'

const BROADCAST = Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
const MULTICAST = Uint8Array.of(0x33, 0x33, 0, 0, 0, 1)

/** Station s (0..5) has MAC 02:00:00:00:00:s+1; a station may send from any port (it moves). */
function station(s: number): Uint8Array {
  return Uint8Array.of(0x02, 0, 0, 0, 0, s + 1)
}

interface FrameSpec {
  port: number
  from: number
  /** -1 broadcast, -2 multicast, else a station number. */
  to: number
}

function reference(portCount: number, frames: FrameSpec[]): number[][] {
  const learned = new Map<number, number>()
  const delivered: number[][] = Array.from({ length: portCount }, () => [])
  frames.forEach((f, seq) => {
    learned.set(f.from, f.port)
    const egress = f.to >= 0 ? learned.get(f.to) : undefined
    if (egress === f.port) return
    const targets = egress !== undefined ? [egress] : Array.from({ length: portCount }, (_, p) => p).filter((p) => p !== f.port)
    for (const p of targets) delivered[p].push(seq)
  })
  return delivered
}

describe('memory switch (model-based)', () => {
  it('delivers exactly what a reference learning bridge delivers', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 5 }).chain((portCount) =>
          fc.tuple(
            fc.constant(portCount),
            fc.array(
              fc.record({ port: fc.integer({ min: 0, max: portCount - 1 }), from: fc.integer({ min: 0, max: 5 }), to: fc.integer({ min: -2, max: 5 }) }),
              { minLength: 1, maxLength: 30 },
            ),
          ),
        ),
        async ([portCount, frames]) => {
          const sw = createMemorySwitch()
          const ports = Array.from({ length: portCount }, () => sw.addPort())
          const got: Received[][] = ports.map(() => [])
          try {
            const processed = (): number => {
              const c = sw.counters()
              return c.forwarded + c.flooded + c.filtered
            }
            for (let seq = 0; seq < frames.length; seq++) {
              const f = frames[seq]
              const dst = f.to === -1 ? BROADCAST : f.to === -2 ? MULTICAST : station(f.to)
              expect(sendOne(ports[f.port].queues[0], (buf) => writeFrame(buf, dst, station(f.from), seq, 60))).toBe(true)
              ports[f.port].queues[0].flush()
              await until(() => processed() === seq + 1, `frame ${seq} to be switched`)
            }
            const expected = reference(portCount, frames)
            const total = expected.reduce((n, d) => n + d.length, 0)
            await until(() => {
              ports.forEach((p, i) => drain(p.queues[0], got[i]))
              return got.reduce((n, g) => n + g.length, 0) === total
            }, 'every delivery')
            expect(got.map((g) => g.map((r) => r.sequence))).toEqual(expected)
          } finally {
            await sw.close()
          }
          for (const p of ports) expect(poolsFull(p.poolReport())).toBe(true)
        },
      ),
      { seed: 0x5717c4, numRuns: 40 },
    )
  })
})
