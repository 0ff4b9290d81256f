// Randomised end-to-end runs: seeded impairments (up to 20% loss, duplication,
// reordering), small buffers, readers that pause, and sometimes an abort at a
// random moment. Whatever happens: nothing throws, delivered bytes are a
// correct prefix of what was sent, and once the timers have run out both
// connection tables are empty.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { TcpConnection } from '../../../stacks/core/tcp/connection.js'
import { LOCAL, REMOTE } from './harness.js'
import { Simulation, streamByte } from './sim.js'

interface Side {
  conn: TcpConnection | null
  sent: number
  received: number
  corrupt: number
  errors: string[]
}

function attach(sim: Simulation, side: Side, conn: TcpConnection, direction: number, total: number, pauseMs: number): () => void {
  side.conn = conn
  const buf = new Uint8Array(4096)
  let paused = false
  const pump = () => {
    while (side.sent < total) {
      const n = Math.min(buf.length, total - side.sent)
      for (let i = 0; i < n; i++) buf[i] = streamByte(direction, side.sent + i)
      let accepted = 0
      try {
        accepted = conn.send(buf, 0, n)
      } catch {
        return
      }
      side.sent += accepted
      if (accepted < n) return
    }
    if (conn.stateName === 'ESTABLISHED' || conn.stateName === 'CLOSE-WAIT') conn.shutdownWrite()
  }
  const drain = () => {
    if (paused) return
    for (let n = conn.read(buf); n > 0; n = conn.read(buf)) {
      for (let i = 0; i < n; i++) if (buf[i] !== streamByte(1 - direction, side.received + i)) side.corrupt++
      side.received += n
    }
    if (pauseMs > 0) {
      paused = true
      sim.schedule(sim.now + pauseMs, () => {
        paused = false
        drain()
      })
    }
  }
  conn.events = {
    onConnected: pump,
    onWritable: pump,
    onReadable: drain,
    onPeerClosed: drain,
    onError: (e) => side.errors.push(e),
  }
  return pump
}

describe('chaos: random impairments and application behaviour', () => {
  it('never throws, never corrupts, always cleans up', () => {
    fc.assert(
      fc.property(
        fc.record({
          seed: fc.integer({ min: 1, max: 1_000_000 }),
          loss: fc.double({ min: 0, max: 0.2, noNaN: true }),
          duplicate: fc.double({ min: 0, max: 0.1, noNaN: true }),
          reorder: fc.double({ min: 0, max: 0.2, noNaN: true }),
          size: fc.integer({ min: 0, max: 96 * 1024 }),
          buffer: fc.integer({ min: 1024, max: 32 * 1024 }),
          pauseMs: fc.constantFrom(0, 0, 20, 300),
          abortAt: fc.option(fc.integer({ min: 0, max: 3000 }), { nil: null }),
          abortClient: fc.boolean(),
        }),
        (p) => {
          const sim = new Simulation({ loss: p.loss, duplicate: p.duplicate, reorder: p.reorder, reorderDelayMs: 20, delayMs: 3 }, p.seed, {
            sendBufferSize: p.buffer,
            receiveBufferSize: p.buffer,
            mslMs: 500,
            maxRetransmits: 8,
            synRetries: 4,
            // A peer that vanished (its RST lost) is only noticed by keepalive when we have nothing to send.
            keepAlive: { enabled: true, idleMs: 2000, intervalMs: 500, count: 3 },
          })
          const [a, b] = sim.layers
          const client: Side = { conn: null, sent: 0, received: 0, corrupt: 0, errors: [] }
          const server: Side = { conn: null, sent: 0, received: 0, corrupt: 0, errors: [] }
          // A passive open is announced by the listener, not by onConnected: start sending there.
          b.listen(null, 80, 4, (conn) => attach(sim, server, conn, 1, p.size, p.pauseMs)())
          attach(sim, client, a.connect({ local: LOCAL, remote: REMOTE, remotePort: 80 }), 0, p.size, p.pauseMs)
          if (p.abortAt !== null) {
            sim.schedule(p.abortAt, () => {
              const side = p.abortClient ? client : server
              side.conn?.abort()
            })
          }
          // Long enough for every retry limit (8 backed-off RTOs up to 60 s each) and TIME-WAIT.
          sim.run(() => a.connectionCount === 0 && b.connectionCount === 0 && sim.now > (p.abortAt ?? 0), 2_000_000, 200_000)
          expect(client.corrupt + server.corrupt).toBe(0)
          expect(client.received).toBeLessThanOrEqual(p.size)
          expect(server.received).toBeLessThanOrEqual(p.size)
          expect(a.connectionCount).toBe(0)
          expect(b.connectionCount).toBe(0)
          expect(a.nextTimeout()).toBe(Infinity)
          expect(b.nextTimeout()).toBe(Infinity)
          if (p.abortAt === null && p.loss < 0.1) {
            // Without an abort and with moderate loss, everything arrives.
            expect(client.errors).toEqual([])
            expect(server.received).toBe(p.size)
            expect(client.received).toBe(p.size)
          }
        },
      ),
      { numRuns: 40, seed: 4242 },
    )
  }, 120_000)
})
