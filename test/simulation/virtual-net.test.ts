// The virtual-time driver itself: it replays a run exactly from its seed, it
// never sleeps in real time, and a transfer that cannot finish fails with the
// state of both sides instead of hanging.
import { createHash } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { TcpConnection } from '../../stacks/core/tcp/connection.js'
import { parseIpAddress } from '../../stacks/wire/address.js'
import { VirtualNet } from './virtual-net.js'

const nets: VirtualNet[] = []
afterEach(async () => {
  await Promise.all(nets.splice(0).map((n) => n.close()))
})

const SIZE = 256 * 1024
const DATA = Uint8Array.from({ length: SIZE }, (_, i) => (Math.imul(i, 2654435761) >>> 23) & 0xff)

/** A one-way upload of SIZE bytes from A to B; returns what a replay must reproduce. */
async function upload(seed: number, loss: number, maxSimulatedMs = 60_000) {
  const net = new VirtualNet({
    seed,
    addresses: [['192.0.2.1/24'], ['192.0.2.2/24']],
    link: { loss, duplicate: 0.02, reorder: 0.05, reorderDelayMs: 2, delayMs: 1, rateBitsPerSecond: 100e6 },
    quantumMs: 0.05,
  })
  nets.push(net)
  const [a, b] = net.nodes
  const hash = createHash('sha256')
  let received = 0
  const sink = new Uint8Array(16384)
  b.tcp.layer.listen(null, 7000, 2, (conn) => {
    conn.events = {
      onReadable: () => {
        for (let n = conn.read(sink, 0, sink.length); n > 0; n = conn.read(sink, 0, sink.length)) {
          hash.update(sink.subarray(0, n))
          received += n
        }
      },
    }
  })
  let sent = 0
  const conn: TcpConnection = a.tcp.layer.connect({ local: parseIpAddress('192.0.2.1')!, remote: parseIpAddress('192.0.2.2')!, remotePort: 7000 })
  const push = () => {
    while (sent < SIZE) {
      const n = conn.send(DATA, sent, SIZE - sent)
      if (n === 0) return
      sent += n
    }
  }
  conn.events = { onConnected: push, onWritable: push }
  const realStart = performance.now()
  await net.run(() => received === SIZE, { maxSimulatedMs, maxIterations: 1_000_000, what: 'upload' }, () => `sent=${sent} received=${received}`)
  return {
    simulatedMs: net.clock.now(),
    realMs: performance.now() - realStart,
    digest: hash.digest('hex'),
    impair: a.port.impairCounters().tx,
    tcp: { ...a.tcp.layer.counters },
    framesIn: [a.framesIn, b.framesIn],
  }
}

describe('VirtualNet', () => {
  it('replays a lossy transfer exactly from its seed; another seed takes another path to the same bytes', async () => {
    const first = await upload(7, 0.03)
    const again = await upload(7, 0.03)
    const other = await upload(8, 0.03)
    const expected = createHash('sha256').update(DATA).digest('hex')
    expect(first.digest).toBe(expected)
    expect(other.digest).toBe(expected)
    expect(first.impair.lost).toBeGreaterThan(0)
    expect(again.simulatedMs).toBe(first.simulatedMs)
    expect(again.impair).toEqual(first.impair)
    expect(again.tcp).toEqual(first.tcp)
    expect(again.framesIn).toEqual(first.framesIn)
    expect(other.impair).not.toEqual(first.impair)
  })

  it('jumps over retransmission timeouts: 15 % loss each way, seconds of backoff, the bytes still arrive intact', async () => {
    const r = await upload(3, 0.15, 600_000)
    expect(r.digest).toBe(createHash('sha256').update(DATA).digest('hex'))
    expect(r.tcp.rtoTimeouts).toBeGreaterThan(0)
    expect(r.simulatedMs).toBeGreaterThan(1000)
    console.log(`15% loss: ${SIZE} B in ${r.simulatedMs.toFixed(0)} simulated ms, ${r.realMs.toFixed(0)} real ms, ${r.tcp.rtoTimeouts} RTOs`)
  })

  it('fails with both sides\' state when a transfer cannot finish within the simulated-time bound', async () => {
    const error = await upload(5, 1, 5_000).then(
      () => null,
      (e: unknown) => e as Error,
    )
    expect(error).toBeInstanceOf(Error)
    expect(error!.message).toMatch(/simulation stalled \(upload\): simulated time limit 5000 ms reached/)
    // A is still in SYN-SENT (state 2), every one of its frames was lost, B never heard of it.
    expect(error!.message).toMatch(/^A: framesIn=0 .*conns=\[2\].*"tx":\{"arrived":(\d+),"delivered":0,"deliveredBytes":0,"lost":\1,/m)
    expect(error!.message).toMatch(/^B: framesIn=0 .*conns=\[\]/m)
    expect(error!.message).toContain('sent=0 received=0')
  })
})
