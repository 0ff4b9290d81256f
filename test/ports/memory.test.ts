import { afterEach, describe, expect, it } from 'vitest'
import { attachMemoryPort, createMemorySwitch, createMemoryWire, formatMac, type MemoryPort, type MemorySwitch } from '../../nexus/ports/memory.js'
import { ports } from '../../nexus/ports/index.js'
import { drain, poolsFull, sendOne, startWorker, until, writeFrame, type Received } from './memory-helpers.js'

const BROADCAST = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
const open: { close(): Promise<void> }[] = []

function track<T extends { close(): Promise<void> }>(thing: T): T {
  open.push(thing)
  return thing
}

afterEach(async () => {
  // Whatever a test left open is closed; each test asserts its own pools.
  await Promise.all(open.splice(0).map((t) => t.close()))
})

async function closeAndCheckPools(...all: MemoryPort[]): Promise<void> {
  await Promise.all(all.map((p) => p.close()))
  for (const p of all) expect(poolsFull(p.poolReport()), `${p.info.name}: ${JSON.stringify(p.poolReport())}`).toBe(true)
}

/** Sends `count` frames from `from` to `to`, `burst` at a time, collecting at `to`. */
async function pushFrames(from: MemoryPort, to: MemoryPort, count: number, burst: number, length = 200): Promise<Received[]> {
  const got: Received[] = []
  const tx = from.queues[0]
  const rx = to.queues[0]
  const dst = to.info.mac ?? BROADCAST
  const src = from.info.mac ?? new Uint8Array(6)
  let sent = 0
  const deadline = Date.now() + 20_000
  while (got.length < count) {
    if (Date.now() > deadline) throw new Error(`only ${got.length}/${count} frames arrived`)
    for (let i = 0; i < burst && sent < count; i++) {
      if (!sendOne(tx, (buf) => writeFrame(buf, dst, src, sent, length))) break
      sent++
    }
    tx.flush()
    await rx.waitForWork(50)
    drain(rx, got)
  }
  return got
}

describe('memory wire', () => {
  it('carries frames both ways, in order and intact, with MACs from the locally administered range', async () => {
    const [a, b] = createMemoryWire({ linkType: 'ethernet' })
    track(a)
    track(b)
    expect(a.info.kind).toBe('memory')
    expect(a.info.linkType).toBe('ethernet')
    expect(a.info.mac?.[0]).toBe(0x02)
    expect(formatMac(a.info.mac as Uint8Array)).not.toBe(formatMac(b.info.mac as Uint8Array))

    const ab = await pushFrames(a, b, 3000, 40)
    const ba = await pushFrames(b, a, 3000, 40)
    expect(ab.map((r) => r.sequence)).toEqual(Array.from({ length: 3000 }, (_, i) => i))
    expect(ba.map((r) => r.sequence)).toEqual(Array.from({ length: 3000 }, (_, i) => i))
    expect(ab.every((r) => r.intact && r.length === 200)).toBe(true)

    const ca = a.counters()
    const cb = b.counters()
    expect(ca.txPackets).toBe(3000)
    expect(ca.txBytes).toBe(3000 * 200)
    expect(ca.rxPackets).toBe(3000)
    expect(cb.rxPackets).toBe(3000)
    expect(cb.drops).toEqual({ ringFull: 0, poolEmpty: 0, oversize: 0 })
    expect(cb.queues).toHaveLength(1)
    await closeAndCheckPools(a, b)
  })

  it('an ip wire drops and counts packets above the MTU', async () => {
    const [a, b] = createMemoryWire({ linkType: 'ip', mtu: 1280 })
    track(a)
    track(b)
    expect(a.info.mac).toBeUndefined()
    const tx = a.queues[0]
    expect(sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, 1, 1281))).toBe(true)
    expect(sendOne(tx, (buf) => writeFrame(buf, BROADCAST, BROADCAST, 2, 1280))).toBe(true)
    tx.flush()
    const got: Received[] = []
    await until(() => (drain(b.queues[0], got), got.length === 1 && a.counters().drops.oversize === 1), 'one packet and one oversize drop')
    expect(got[0].sequence).toBe(2)
    await closeAndCheckPools(a, b)
  })

  it('rejects an MTU the buffers cannot hold, and use after close', async () => {
    expect(() => createMemoryWire({ mtu: 4000 })).toThrow(expect.objectContaining({ code: 'PORT_MTU_OUT_OF_RANGE' }))
    expect(() => createMemoryWire({ mtu: 20 })).toThrow(expect.objectContaining({ code: 'PORT_MTU_OUT_OF_RANGE' }))
    const [a, b] = createMemoryWire({ mtu: 9000, channel: { bufferSize: 9216, bufferCount: 64 } })
    expect(a.info.mtu).toBe(9000)
    await a.close()
    await a.close()
    expect(() => a.queues).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
    await b.close()
  })

  it('applies backpressure instead of dropping when the receiver lags', async () => {
    const [a, b] = createMemoryWire({ channel: { bufferCount: 64, ringCapacity: 64 } })
    track(a)
    track(b)
    const tx = a.queues[0]
    let sent = 0
    // The receiver reads nothing: the sender runs out of buffers once both pools are full.
    for (let round = 0; round < 50; round++) {
      while (sendOne(tx, (buf) => writeFrame(buf, b.info.mac as Uint8Array, a.info.mac as Uint8Array, sent, 100))) sent++
      tx.flush()
      await new Promise((r) => setTimeout(r, 1))
    }
    expect(sent).toBeLessThanOrEqual(64)
    expect(sent).toBeGreaterThan(32)
    const got: Received[] = []
    await until(() => (drain(b.queues[0], got), got.length === sent), 'every queued frame')
    expect(got.map((r) => r.sequence)).toEqual(Array.from({ length: sent }, (_, i) => i))
    expect(b.counters().drops.poolEmpty).toBe(0)
    await closeAndCheckPools(a, b)
  })

  it('drops and counts when the receiver lags in overflow: drop mode', async () => {
    const [a, b] = createMemoryWire({ overflow: 'drop', channel: { bufferCount: 64, ringCapacity: 64 } })
    track(a)
    track(b)
    const tx = a.queues[0]
    let sent = 0
    for (let round = 0; round < 20; round++) {
      while (sendOne(tx, (buf) => writeFrame(buf, b.info.mac as Uint8Array, a.info.mac as Uint8Array, sent, 100))) sent++
      tx.flush()
      await new Promise((r) => setTimeout(r, 1))
    }
    await until(() => a.counters().txPackets === sent, 'the wire to consume everything')
    const got: Received[] = []
    drain(b.queues[0], got)
    expect(got.length).toBe(32)
    expect(b.counters().drops.poolEmpty).toBe(sent - 32)
    await closeAndCheckPools(a, b)
  })

  it('works with the user side in a worker thread (echo)', async () => {
    const [local, remote] = createMemoryWire()
    track(local)
    track(remote)
    const total = 5000
    const worker = startWorker('./memory-echo-worker.js', import.meta.url, { workerData: { handle: remote.transfer(), total } })
    expect(() => remote.queues).toThrow(expect.objectContaining({ code: 'PORT_TRANSFERRED' }))
    const result = new Promise<{ echoed: number; accounting: { free: number; held: number; total: number } }>((resolve, reject) => {
      worker.once('message', resolve)
      worker.once('error', reject)
    })
    try {
      // local -> worker -> back to local: send on local's TX and collect on local's RX.
      const echoes = await pushFrames(local, local, total, 32, 300)
      expect(echoes.map((r) => r.sequence)).toEqual(Array.from({ length: total }, (_, i) => i))
      expect(echoes.every((r) => r.intact)).toBe(true)
      const { echoed, accounting } = await result
      expect(echoed).toBe(total)
      expect(remote.counters().rxPackets).toBe(total)
      expect(remote.counters().txPackets).toBe(total)
      await Promise.all([local.close(), remote.close()])
      expect(() => remote.counters()).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
      const report = remote.poolReport()
      expect(report.device.held).toBe(0)
      expect(accounting.held).toBe(0)
      expect(report.device.free + accounting.free).toBe(report.total)
      expect(poolsFull(local.poolReport())).toBe(true)
    } finally {
      await worker.terminate()
    }
  })
})

describe('memory switch', () => {
  function switchWith(n: number, options: Parameters<typeof createMemorySwitch>[0] = {}): { sw: MemorySwitch; ports: MemoryPort[] } {
    const sw = track(createMemorySwitch(options))
    return { sw, ports: Array.from({ length: n }, () => sw.addPort()) }
  }

  async function settle(all: MemoryPort[], got: Received[][], expected: number[]): Promise<void> {
    await until(() => {
      all.forEach((p, i) => drain(p.queues[0], got[i]))
      return got.every((g, i) => g.length === expected[i])
    }, `deliveries ${JSON.stringify(expected)}`)
    // Nothing more than expected arrives.
    await new Promise((r) => setTimeout(r, 20))
    all.forEach((p, i) => drain(p.queues[0], got[i]))
    expect(got.map((g) => g.length)).toEqual(expected)
  }

  it('floods broadcast to all other ports, then forwards unicast to the learned port only', async () => {
    const n = 5
    const { sw, ports } = switchWith(n)
    const got: Received[][] = ports.map(() => [])
    // Every port announces itself with a broadcast: each one reaches the n-1 others.
    ports.forEach((p, i) => {
      expect(sendOne(p.queues[0], (buf) => writeFrame(buf, BROADCAST, p.info.mac as Uint8Array, 1000 + i, 64))).toBe(true)
      p.queues[0].flush()
    })
    await settle(ports, got, ports.map(() => n - 1))
    for (let i = 0; i < n; i++) expect(got[i].some((r) => r.sequence === 1000 + i)).toBe(false)
    expect(sw.macTable()).toHaveLength(n)

    // Unicast from every port to every other port: exactly one copy, at the addressee.
    got.forEach((g) => (g.length = 0))
    let seq = 0
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        if (i === j) continue
        expect(sendOne(ports[i].queues[0], (buf) => writeFrame(buf, ports[j].info.mac as Uint8Array, ports[i].info.mac as Uint8Array, j * 100 + seq++, 80))).toBe(true)
      }
      ports[i].queues[0].flush()
    }
    await settle(ports, got, ports.map(() => n - 1))
    for (let j = 0; j < n; j++) {
      expect(got[j].every((r) => r.dst === formatMac(ports[j].info.mac as Uint8Array))).toBe(true)
      expect(got[j].every((r) => Math.floor(r.sequence / 100) === j)).toBe(true)
    }
    const c = sw.counters()
    expect(c.flooded).toBe(n)
    expect(c.forwarded).toBe(n * (n - 1))
    expect(c.learned).toBe(n)
    await closeAndCheckPools(...ports)
  })

  it('floods unknown unicast and multicast, filters frames for the ingress port, drops runts', async () => {
    const { sw, ports } = switchWith(3)
    const got: Received[][] = ports.map(() => [])
    const [p0, p1] = ports
    const unknown = Uint8Array.of(0x02, 0xee, 0, 0, 0, 1)
    const multicast = Uint8Array.of(0x01, 0x00, 0x5e, 0, 0, 0xfb)
    sendOne(p0.queues[0], (buf) => writeFrame(buf, unknown, p0.info.mac as Uint8Array, 1, 64))
    sendOne(p0.queues[0], (buf) => writeFrame(buf, multicast, p0.info.mac as Uint8Array, 2, 64))
    sendOne(p0.queues[0], () => 10) // runt
    // p1 claims the MAC it then addresses from p1 itself: filtered, not sent back.
    sendOne(p1.queues[0], (buf) => writeFrame(buf, BROADCAST, unknown, 3, 64))
    p0.queues[0].flush()
    await until(() => sw.counters().runts === 1, 'the runt to be counted')
    p1.queues[0].flush()
    await settle(ports, got, [1, 2, 3])
    sendOne(p1.queues[0], (buf) => writeFrame(buf, unknown, p1.info.mac as Uint8Array, 4, 64))
    p1.queues[0].flush()
    await until(() => sw.counters().filtered === 1, 'the frame to the ingress port to be filtered')
    const c = sw.counters()
    expect(c.unknownUnicast).toBe(1)
    expect(c.flooded).toBe(3)
    await closeAndCheckPools(...ports)
  })

  it('ages MAC entries on the injected clock, and forgets a closed port', async () => {
    let now = 0
    const { sw, ports } = switchWith(3, { agingMs: 1000, clock: { now: () => now } })
    const got: Received[][] = ports.map(() => [])
    const [p0, p1, p2] = ports
    sendOne(p1.queues[0], (buf) => writeFrame(buf, BROADCAST, p1.info.mac as Uint8Array, 1, 64))
    p1.queues[0].flush()
    await settle(ports, got, [1, 0, 1])
    now = 500
    sendOne(p0.queues[0], (buf) => writeFrame(buf, p1.info.mac as Uint8Array, p0.info.mac as Uint8Array, 2, 64))
    p0.queues[0].flush()
    await settle(ports, got, [1, 1, 1])
    now = 2000 // p1's entry is older than 1000 ms: unknown again, flooded
    sendOne(p0.queues[0], (buf) => writeFrame(buf, p1.info.mac as Uint8Array, p0.info.mac as Uint8Array, 3, 64))
    p0.queues[0].flush()
    await settle(ports, got, [1, 2, 2])
    expect(sw.counters().aged).toBeGreaterThanOrEqual(1)

    await p2.close()
    expect(poolsFull(p2.poolReport())).toBe(true)
    expect(sw.macTable().some((e) => e.port === 2)).toBe(false)
    sendOne(p0.queues[0], (buf) => writeFrame(buf, BROADCAST, p0.info.mac as Uint8Array, 4, 64))
    p0.queues[0].flush()
    await settle(ports.slice(0, 2), got.slice(0, 2), [1, 3])
    await closeAndCheckPools(p0, p1)
  })

  it('a lagging port loses its own frames without stalling the others', async () => {
    const { ports } = switchWith(3, { channel: { bufferCount: 64, ringCapacity: 64 } })
    const [p0, p1, p2] = ports
    const got: Received[] = []
    // Nobody reads p2; p1 reads. 200 broadcasts from p0.
    let sent = 0
    for (let round = 0; round < 100 && sent < 200; round++) {
      while (sent < 200 && sendOne(p0.queues[0], (buf) => writeFrame(buf, BROADCAST, p0.info.mac as Uint8Array, sent, 64))) sent++
      p0.queues[0].flush()
      await p1.queues[0].waitForWork(20)
      drain(p1.queues[0], got)
    }
    await until(() => (drain(p1.queues[0], got), got.length === 200), 'p1 to get every broadcast')
    expect(p2.counters().drops.poolEmpty).toBe(200 - 32)
    expect(p2.counters().rxPackets).toBe(32)
    await closeAndCheckPools(p0, p1, p2)
  })

  it('is reachable through the ports namespace', async () => {
    const sw = track(ports.memorySwitch())
    const p = sw.addPort({ mac: Uint8Array.of(0x02, 0, 0, 0, 0, 0x42) })
    expect(formatMac(p.info.mac as Uint8Array)).toBe('02:00:00:00:00:42')
    expect(() => sw.addPort({ mac: BROADCAST })).toThrow(expect.objectContaining({ code: 'PORT_BAD_MAC' }))
    const [a, b] = ports.memoryWire({ linkType: 'ip' })
    await Promise.all([a.close(), b.close()])
    await sw.close()
    expect(() => sw.addPort()).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
  })
})

describe('memory port users that go away', () => {
  it('frames to a port whose user closed its side are dropped and counted, and the pump does not spin', async () => {
    const [a, b] = createMemoryWire({ channel: { bufferCount: 64, ringCapacity: 64 } })
    track(a)
    track(b)
    const remote = attachMemoryPort(b.transfer())
    await remote.close()
    const tx = a.queues[0]
    let sent = 0
    for (let round = 0; round < 20; round++) {
      while (sendOne(tx, (buf) => writeFrame(buf, BROADCAST, a.info.mac as Uint8Array, sent, 100))) sent++
      tx.flush()
      // A timer firing proves the event loop is not starved by the pump.
      await new Promise((r) => setTimeout(r, 1))
    }
    await until(() => b.counters().drops.poolEmpty === sent, 'every frame to be counted as dropped')
    expect(sent).toBeGreaterThan(64)
    await Promise.all([a.close(), b.close()])
    const report = b.poolReport()
    expect(report.device.held).toBe(0)
    expect(report.device.free + remote.poolAccounting().free).toBe(report.total)
    expect(poolsFull(a.poolReport())).toBe(true)
  })

  it('a user that closes with frames still queued for it, and rings smaller than the pool: every buffer comes home', async () => {
    // 256 buffers, 16-slot rings: releases pile up in a return backlog.
    const [a, b] = createMemoryWire({ channel: { bufferCount: 256, ringCapacity: 16 } })
    track(a)
    track(b)
    const tx = a.queues[0]
    const rx = b.queues[0]
    const got: Received[] = []
    let sent = 0
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 10 && sendOne(tx, (buf) => writeFrame(buf, BROADCAST, a.info.mac as Uint8Array, sent, 100)); i++) sent++
      tx.flush()
      await until(() => (drain(rx, got), got.length === sent), 'the round to arrive')
    }
    expect(rx.returnBacklog()).toBeGreaterThan(0) // the case that needs several turns at close
    // Then frames b's user never reads, and b's user closes its side first.
    for (let i = 0; i < 8 && sendOne(tx, (buf) => writeFrame(buf, BROADCAST, a.info.mac as Uint8Array, sent, 100)); i++) sent++
    tx.flush()
    await until(() => b.counters().rxPackets === sent, 'the unread frames to be queued for b')
    rx.close()
    await closeAndCheckPools(a, b)
  })
})
