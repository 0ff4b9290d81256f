// Issue 4: two stacks on a memory wire through the impairment middleware, in
// virtual time. One TCP connection carries BYTES_EACH_WAY in both directions
// at once, over IPv4 and over IPv6, at 0 %, 1 % and 5 % loss, always with
// reordering and duplication. Both streams are checked by SHA-256, the
// simulated time is held under a bound derived from the link (below), the
// connection closes through TIME-WAIT, and every buffer pool is full again.
import { createHash, type Hash } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { TcpConnection } from '../../stacks/core/tcp/connection.js'
import { TcpState } from '../../stacks/core/tcp/connection.js'
import { parseIpAddress } from '../../stacks/wire/address.js'
import { VirtualNet } from './virtual-net.js'
import { poolsFull } from '../ports/memory-helpers.js'

/** Bytes each way per run: the issue's 50 MB. */
const BYTES_EACH_WAY = 50 * 1024 * 1024
const RATE_BITS_PER_SECOND = 1e9
const ONE_WAY_DELAY_MS = 1
const REORDER = 0.02
const REORDER_DELAY_MS = 3
const DUPLICATE = 0.01
const MSL_MS = 500
/** Payload per full segment on a 1500-byte MTU with timestamps (IPv6: 20 bytes less). */
const MSS_V4 = 1500 - 20 - 20 - 12
const MSS_V6 = 1500 - 40 - 20 - 12

/**
 * The simulated-time bound. Two limits on how fast one direction can go:
 * - serialisation: every segment is mss + at most 90 bytes on the wire
 *   (Ethernet 14, IP 20/40, TCP 20, timestamps 12, padding) at the link rate;
 * - congestion control: the Mathis et al. steady state of a Reno-style
 *   sender with delayed ACKs (b = 2), rate <= (MSS / RTT) * sqrt(3 / (2 b p)),
 *   RTT = 2 x one-way delay. p counts the losses and the reorderings: a
 *   packet held REORDER_DELAY_MS at 1 Gbit/s is overtaken by ~250 others,
 *   which is three duplicate ACKs, so the sender takes it for a loss and halves
 *   its window (the core has no DSACK undo), exactly as it does for a loss.
 * The larger of the two is what an ideal sender needs; the bound allows 4x that
 * (slow start, retransmission timeouts of at least 200 ms, recovery episodes
 * that overlap) plus 3 s for the handshake, the close and TIME-WAIT
 * (2 x MSL = 1 s). A transfer that gets near it has stalled.
 */
function simulatedTimeBoundMs(bytes: number, loss: number, mss: number): number {
  const segments = Math.ceil(bytes / mss)
  const serialisationMs = ((segments * (mss + 90) * 8) / RATE_BITS_PER_SECOND) * 1000
  const rttMs = 2 * ONE_WAY_DELAY_MS
  const p = loss + REORDER
  const mathisMs = bytes / ((mss / rttMs) * Math.sqrt(3 / (2 * 2 * p)))
  return 4 * Math.max(serialisationMs, mathisMs) + 3000
}

/** A fixed pseudo-random pattern of prime length, so stream positions are distinguishable across chunk boundaries. */
const PATTERN_LENGTH = 1_048_573
function makePattern(seed: number): Uint8Array {
  const out = new Uint8Array(PATTERN_LENGTH)
  let x = seed >>> 0 || 1
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}
const PATTERNS = [makePattern(0x1234567), makePattern(0x7654321)]

/** One side of the bulk exchange: writes its stream with backpressure, reads the other, hashes both. */
class BulkEnd {
  sent = 0
  received = 0
  peerClosed = false
  closed = false
  errors: string[] = []
  private readonly sentHash: Hash = createHash('sha256')
  private readonly receivedHash: Hash = createHash('sha256')
  private readonly sink = new Uint8Array(64 * 1024)
  private readonly pattern: Uint8Array

  constructor(
    readonly conn: TcpConnection,
    direction: 0 | 1,
    readonly total: number,
  ) {
    this.pattern = PATTERNS[direction]
    conn.events = {
      onConnected: () => this.write(),
      onWritable: () => this.write(),
      onReadable: () => this.read(),
      onPeerClosed: () => {
        this.read()
        this.peerClosed = true
      },
      onError: (e) => this.errors.push(String(e)),
      onClosed: () => {
        this.closed = true
      },
    }
  }

  write(): void {
    while (this.sent < this.total) {
      const offset = this.sent % PATTERN_LENGTH
      const n = Math.min(PATTERN_LENGTH - offset, this.total - this.sent)
      const accepted = this.conn.send(this.pattern, offset, n)
      if (accepted > 0) this.sentHash.update(this.pattern.subarray(offset, offset + accepted))
      this.sent += accepted
      if (accepted < n) return
    }
    if (this.conn.state === TcpState.Established || this.conn.state === TcpState.CloseWait) this.conn.shutdownWrite()
  }

  read(): void {
    for (;;) {
      const n = this.conn.read(this.sink, 0, this.sink.length)
      if (n === 0) return
      this.receivedHash.update(this.sink.subarray(0, n))
      this.received += n
    }
  }

  sentDigest(): string {
    return this.sentHash.digest('hex')
  }
  receivedDigest(): string {
    return this.receivedHash.digest('hex')
  }
}

const nets: VirtualNet[] = []
afterEach(async () => {
  await Promise.all(nets.splice(0).map((n) => n.close()))
})

async function bulk(family: 4 | 6, loss: number, seed: number) {
  const addresses: [string[], string[]] = family === 4 ? [['198.51.100.1/24'], ['198.51.100.2/24']] : [['2001:db8::1/64'], ['2001:db8::2/64']]
  const net = new VirtualNet({
    seed,
    addresses,
    link: {
      loss,
      duplicate: DUPLICATE,
      reorder: REORDER,
      reorderDelayMs: REORDER_DELAY_MS,
      delayMs: ONE_WAY_DELAY_MS,
      rateBitsPerSecond: RATE_BITS_PER_SECOND,
    },
    tcp: { mslMs: MSL_MS },
    quantumMs: QUANTUM_MS,
  })
  nets.push(net)
  const [a, b] = net.nodes
  let server: BulkEnd | null = null
  b.tcp.layer.listen(null, 5001, 4, (conn) => {
    server = new BulkEnd(conn, 1, BYTES_EACH_WAY)
    server.write()
  })
  const clientConn = a.tcp.layer.connect({
    local: parseIpAddress(addresses[0][0].split('/')[0])!,
    remote: parseIpAddress(addresses[1][0].split('/')[0])!,
    remotePort: 5001,
  })
  const client = new BulkEnd(clientConn, 0, BYTES_EACH_WAY)
  const serverEnd = (): BulkEnd | null => server
  const describe = () => {
    const s = serverEnd()
    return `client sent=${client.sent} received=${client.received} peerClosed=${client.peerClosed} errors=${client.errors}; server ${
      s === null ? 'not accepted' : `sent=${s.sent} received=${s.received} peerClosed=${s.peerClosed} errors=${s.errors}`
    }`
  }
  const mss = family === 4 ? MSS_V4 : MSS_V6
  const boundMs = simulatedTimeBoundMs(BYTES_EACH_WAY, loss, mss)
  const realStart = performance.now()
  // Until both streams are in and both FINs seen, then until TIME-WAIT is over and both tables are empty.
  await net.run(
    () => {
      const s = serverEnd()
      return s !== null && client.received === BYTES_EACH_WAY && s.received === BYTES_EACH_WAY && client.peerClosed && s.peerClosed
    },
    { maxSimulatedMs: boundMs, maxIterations: 20_000_000, what: `IPv${family} ${loss * 100}% loss transfer` },
    describe,
  )
  const transferMs = net.clock.now()
  await net.run(() => a.tcp.layer.connectionCount === 0 && b.tcp.layer.connectionCount === 0, {
    maxSimulatedMs: 4 * MSL_MS + 2000,
    maxIterations: 100_000,
    what: 'close and TIME-WAIT',
  }, describe)
  const realMs = performance.now() - realStart
  const s = serverEnd()!
  const counters = net.nodes.map((n) => n.port.impairCounters().tx)
  console.log(
    `IPv${family} loss ${loss * 100}%: ${BYTES_EACH_WAY} B each way in ${transferMs.toFixed(0)} simulated ms (bound ${boundMs.toFixed(0)}), ` +
      `${realMs.toFixed(0)} real ms; lost ${counters[0].lost}+${counters[1].lost}, dup ${counters[0].duplicated}+${counters[1].duplicated}, ` +
      `reordered ${counters[0].reordered}+${counters[1].reordered}; retransmits ${a.tcp.layer.counters.retransSegs}+${b.tcp.layer.counters.retransSegs}; ` +
      `iterations ${net.iterations}, advances ${net.advances}`,
  )
  return { net, a, b, client, server: s, transferMs, boundMs, counters }
}

/** Clock slack per advance (see VirtualNetOptions.quantumMs): 20 µs, under two 1514-byte frames at 1 Gbit/s. */
const QUANTUM_MS = 0.02

describe(`simulation: ${BYTES_EACH_WAY} bytes each way, two stacks, memory wire + impairment, virtual time`, () => {
  const cases = [
    [4, 0],
    [4, 0.01],
    [4, 0.05],
    [6, 0],
    [6, 0.01],
    [6, 0.05],
  ] as const
  for (const [family, loss] of cases) {
    it(`IPv${family}, ${loss * 100}% loss, ${REORDER * 100}% reordering, ${DUPLICATE * 100}% duplication`, async () => {
      const { net, a, b, client, server, transferMs, boundMs, counters } = await bulk(family, loss, 1000 + family * 10 + loss * 100)
      expect(client.errors).toEqual([])
      expect(server.errors).toEqual([])
      expect(client.received).toBe(BYTES_EACH_WAY)
      expect(server.received).toBe(BYTES_EACH_WAY)
      expect(server.receivedDigest()).toBe(client.sentDigest())
      expect(client.receivedDigest()).toBe(server.sentDigest())
      expect(transferMs).toBeLessThan(boundMs)
      // The impairments really happened, in both directions.
      for (const c of counters) {
        expect(c.duplicated).toBeGreaterThan(0)
        expect(c.reordered).toBeGreaterThan(0)
        if (loss > 0) expect(c.lost / c.arrived).toBeGreaterThan(loss / 2)
        else expect(c.lost).toBe(0)
      }
      if (loss > 0) expect(a.tcp.layer.counters.retransSegs + b.tcp.layer.counters.retransSegs).toBeGreaterThan(0)
      // Both closed cleanly: TIME-WAIT expired, the tables are empty.
      expect(client.closed).toBe(true)
      expect(a.tcp.layer.connectionCount + b.tcp.layer.connectionCount).toBe(0)
      // Nothing was ever refused for lack of ring room on the stacks' side.
      expect(a.link.ringFullDrops + b.link.ringFullDrops).toBe(0)
      // Nothing is held by the stacks' channel ends, and after close every pool is full.
      for (const node of net.nodes) expect(node.end.poolAccounting().held).toBe(0)
      await net.close()
      for (const node of net.nodes) {
        for (const report of node.port.poolReport()) {
          expect(report.device.held + report.user.held).toBe(0)
          expect(report.device.free + report.user.free).toBe(report.total)
        }
      }
      for (const port of net.wire) expect(poolsFull(port.poolReport())).toBe(true)
      // ~15 s of real time each on an idle 2-core VM; the margin is for a loaded one.
    }, 240_000)
  }
})
