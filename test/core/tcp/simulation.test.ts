import { describe, expect, it } from 'vitest'
import type { TcpConnection } from '../../../stacks/core/tcp/connection.js'
import { TcpState } from '../../../stacks/core/tcp/connection.js'
import { LOCAL, LOCAL6, REMOTE, REMOTE6 } from './harness.js'
import { Simulation, streamByte } from './sim.js'

const CHUNK = 16 * 1024

/** One side of a bulk transfer: writes `total` bytes with backpressure, reads and checks the other direction. */
class Endpoint {
  sent = 0
  received = 0
  mismatches = 0
  peerClosed = false
  closed = false
  errors: string[] = []
  /** A paused reader leaves data in the receive buffer (the window shrinks). */
  paused = false
  private readonly chunk = new Uint8Array(CHUNK)
  private readonly sink = new Uint8Array(CHUNK)
  constructor(
    readonly conn: TcpConnection,
    readonly direction: number,
    readonly total: number,
  ) {
    conn.events = {
      onReadable: () => this.drain(),
      onWritable: () => this.pump(),
      onPeerClosed: () => {
        this.drain()
        this.peerClosed = true
      },
      onError: (e) => this.errors.push(e),
      onClosed: () => {
        this.closed = true
      },
    }
  }
  pump(): void {
    while (this.sent < this.total) {
      const n = Math.min(CHUNK, this.total - this.sent)
      for (let i = 0; i < n; i++) this.chunk[i] = streamByte(this.direction, this.sent + i)
      const accepted = this.conn.send(this.chunk, 0, n)
      this.sent += accepted
      if (accepted < n) return
    }
    if (this.conn.state === TcpState.Established || this.conn.state === TcpState.CloseWait) this.conn.shutdownWrite()
  }
  drain(): void {
    if (this.paused) return
    for (;;) {
      const n = this.conn.read(this.sink, 0, CHUNK)
      if (n === 0) return
      for (let i = 0; i < n; i++) if (this.sink[i] !== streamByte(1 - this.direction, this.received + i)) this.mismatches++
      this.received += n
    }
  }
}

function bulk(loss: number, seed: number, bytesEachWay: number, v6 = false) {
  const sim = new Simulation({ loss, duplicate: loss > 0 ? 0.01 : 0, reorder: loss > 0 ? 0.02 : 0, reorderDelayMs: 8, delayMs: 5 }, seed)
  const [client, server] = sim.layers
  const local = v6 ? LOCAL6 : LOCAL
  const remote = v6 ? REMOTE6 : REMOTE
  let serverEnd: Endpoint | null = null
  server.listen(null, 8080, 16, (conn) => {
    serverEnd = new Endpoint(conn, 1, bytesEachWay)
    serverEnd.pump()
  })
  const conn = client.connect({ local, remote, remotePort: 8080 })
  const clientEnd = new Endpoint(conn, 0, bytesEachWay)
  conn.events.onConnected = () => clientEnd.pump()
  const finished = sim.run(() => {
    const s = serverEnd as Endpoint | null
    return clientEnd.received === bytesEachWay && s !== null && s.received === bytesEachWay && clientEnd.peerClosed && s.peerClosed
  }, 600_000)
  return { sim, client, server, clientEnd, serverEnd: serverEnd as Endpoint | null, finished }
}

describe('two stacks over an impaired in-memory link', () => {
  for (const [loss, seed] of [
    [0, 1],
    [0.01, 2],
    [0.05, 3],
  ] as const) {
    it(`transfers 3 MB each way at ${loss * 100}% loss (with duplication and reordering), content intact`, () => {
      const size = 3 * 1024 * 1024
      const r = bulk(loss, seed, size)
      expect(r.finished).toBe(true)
      expect(r.clientEnd.errors).toEqual([])
      expect(r.serverEnd!.errors).toEqual([])
      expect(r.clientEnd.mismatches).toBe(0)
      expect(r.serverEnd!.mismatches).toBe(0)
      expect(r.clientEnd.received).toBe(size)
      expect(r.serverEnd!.received).toBe(size)
      // Bounded simulated time: generous, but a stall (RTO spiral) would blow it.
      console.log(`loss ${loss}: ${r.sim.now.toFixed(0)} ms simulated, retransmitted ${r.client.counters.retransSegs + r.server.counters.retransSegs}, rto ${r.client.counters.rtoTimeouts + r.server.counters.rtoTimeouts}, fast ${r.client.counters.fastRetransmits + r.server.counters.fastRetransmits}, sack ${r.client.counters.sackRetransmits + r.server.counters.sackRetransmits}`)
      expect(r.sim.now).toBeLessThan(loss === 0 ? 2_000 : 60_000)
      if (loss > 0) {
        expect(r.sim.dropped).toBeGreaterThan(0)
        expect(r.client.counters.retransSegs + r.server.counters.retransSegs).toBeGreaterThan(0)
      }
      // Both closed their side: after 2*MSL nothing is left.
      const end = r.sim.now + 61_000
      r.sim.run(() => r.client.connectionCount === 0 && r.server.connectionCount === 0, end)
      expect(r.client.connectionCount).toBe(0)
      expect(r.server.connectionCount).toBe(0)
      expect(r.client.counters.currEstab).toBe(0)
      expect(r.server.counters.currEstab).toBe(0)
    })
  }

  it('a reader that pauses (zero windows, persist probes, window updates) at 2% loss still gets every byte', () => {
    const sim = new Simulation({ loss: 0.02, duplicate: 0.01, reorder: 0.02, reorderDelayMs: 8, delayMs: 5 }, 77, { receiveBufferSize: 16 * 1024, sendBufferSize: 32 * 1024 })
    const [client, server] = sim.layers
    const size = 512 * 1024
    let serverEnd: Endpoint | null = null
    server.listen(null, 9000, 4, (conn) => {
      const e = new Endpoint(conn, 1, 0)
      serverEnd = e
      e.paused = true
      // The application reads in bursts every 50 ms: the window closes in between.
      const tick = (): void => {
        e.paused = false
        e.drain()
        e.paused = true
        if (e.received < size) sim.schedule(sim.now + 50, tick)
      }
      sim.schedule(sim.now + 50, tick)
      e.pump()
    })
    const conn = client.connect({ local: LOCAL, remote: REMOTE, remotePort: 9000 })
    const clientEnd = new Endpoint(conn, 0, size)
    conn.events.onConnected = () => clientEnd.pump()
    const ok = sim.run(() => (serverEnd as Endpoint | null)?.received === size, 300_000)
    expect(ok).toBe(true)
    const s = serverEnd as unknown as Endpoint
    expect(s.mismatches).toBe(0)
    expect(clientEnd.errors).toEqual([])
    console.log(`paused reader: ${sim.now.toFixed(0)} ms, persist probes ${client.counters.persistProbes}, rto ${client.counters.rtoTimeouts}, retrans ${client.counters.retransSegs}`)
    expect(client.counters.persistProbes + client.counters.rtoTimeouts).toBeGreaterThan(0)
  })

  it('IPv6 at 5% loss, 1 MB each way', () => {
    const r = bulk(0.05, 9, 1024 * 1024, true)
    expect(r.finished).toBe(true)
    expect(r.clientEnd.mismatches + r.serverEnd!.mismatches).toBe(0)
  })

  it('10 000 sequential connections leave no state behind once TIME-WAIT expires', () => {
    const sim = new Simulation({ loss: 0, duplicate: 0, reorder: 0, reorderDelayMs: 0, delayMs: 1 }, 42, { mslMs: 1000, sendBufferSize: 4096, receiveBufferSize: 4096 })
    const [client, server] = sim.layers
    const request = new TextEncoder().encode('GET / HTTP/1.0\r\n\r\n')
    const sink = new Uint8Array(4096)
    let served = 0
    server.listen(null, 80, 128, (conn) => {
      conn.events = {
        onReadable: () => {
          conn.read(sink)
          conn.send(request)
          conn.shutdownWrite()
        },
        onClosed: () => served++,
      }
    })
    let completed = 0
    for (let i = 0; i < 10_000; i++) {
      let done = false
      const conn = client.connect({ local: LOCAL, remote: REMOTE, remotePort: 80 })
      conn.events = {
        onConnected: () => conn.send(request),
        onPeerClosed: () => {
          conn.read(sink)
          conn.shutdownWrite()
        },
        onClosed: () => {
          done = true
        },
      }
      sim.run(() => done, sim.now + 10_000, 1000)
      if (done) completed++
    }
    expect(completed).toBe(10_000)
    // The server closes first, so it holds the TIME-WAIT state.
    expect(server.connectionCount).toBeGreaterThan(0)
    sim.run(() => client.connectionCount === 0 && server.connectionCount === 0, sim.now + 3_000)
    expect(served).toBe(10_000)
    expect(client.connectionCount).toBe(0)
    expect(server.connectionCount).toBe(0)
    expect(client.nextTimeout()).toBe(Infinity)
    expect(server.nextTimeout()).toBe(Infinity)
    expect(client.counters.activeOpens).toBe(10_000)
    expect(server.counters.passiveOpens).toBe(10_000)
  })
})
