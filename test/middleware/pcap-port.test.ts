// The pcap port (replay + record) and the pcapng tap middleware.
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { ChannelEnd } from '../../nexus/channel/index.js'
import { FileCaptureSink, LINKTYPE_ETHERNET, LINKTYPE_RAW, MemoryCaptureSink, PcapngWriter, PcapWriter, readAllPackets } from '../../nexus/middleware/pcap.js'
import { pcapTap } from '../../nexus/middleware/pcap-tap.js'
import { createMemoryWire } from '../../nexus/ports/memory.js'
import { openPcapPort } from '../../nexus/ports/pcap.js'

const FIXTURES = new URL('../fixtures/captures/', import.meta.url).pathname
const TRAFFIC = join(FIXTURES, 'traffic.pcapng')
const work = mkdtempSync(join(tmpdir(), 'fs-pcap-port-test-'))
afterAll(() => rmSync(work, { recursive: true, force: true }))

/** Receives `count` packets (copies), releasing each; bounded by `timeoutMs`. */
async function receiveAll(end: ChannelEnd, count: number, timeoutMs = 10_000, perWake = Infinity): Promise<Uint8Array[]> {
  const got: Uint8Array[] = []
  const deadline = Date.now() + timeoutMs
  while (got.length < count && Date.now() < deadline) {
    end.receive(Math.min(end.ringCapacity, perWake), (index, length) => {
      got.push(end.buffer(index).slice(0, length))
      end.release(index)
    })
    end.flush()
    if (got.length < count) await end.waitForWork(50)
  }
  return got
}

function sendFrames(end: ChannelEnd, frames: Uint8Array[]): void {
  for (const frame of frames) {
    const index = end.alloc()
    expect(index).toBeGreaterThanOrEqual(0)
    end.buffer(index).set(frame)
    expect(end.send(index, frame.length)).toBe(true)
  }
  end.flush()
}

function arpRequest(n: number): Uint8Array {
  return new Uint8Array(Buffer.from(`ffffffffffff020000000001080600010800060400010200000000 01c6336401000000000000c63364${n.toString(16).padStart(2, '0')}`.replace(/ /g, ''), 'hex'))
}

function expectPoolWhole(report: { device: { free: number; held: number; total: number }; user: { free: number; held: number } }): void {
  expect(report.device.held).toBe(0)
  expect(report.user.held).toBe(0)
  expect(report.device.free + report.user.free).toBe(report.device.total)
}

describe('pcap port', () => {
  const original = readAllPackets(readFileSync(TRAFFIC))

  it('replays a capture as received traffic, byte for byte and in order', async () => {
    const port = openPcapPort({ replay: TRAFFIC, name: 'replay0' })
    expect(port.info).toMatchObject({ name: 'replay0', kind: 'pcap', linkType: 'ethernet', mtu: 1500, queues: 1 })
    const got = await receiveAll(port.queues[0], original.length)
    const report = await port.replayDone
    expect(report).toMatchObject({ replayed: original.length, skippedLinkType: 0, oversize: 0, ringFull: 0 })
    expect(got.length).toBe(original.length)
    got.forEach((data, i) => expect(data).toEqual(original[i].data))
    expect(port.counters()).toMatchObject({ rxPackets: original.length, rxBytes: original.reduce((n, p) => n + p.data.length, 0) })
    await port.close()
    expectPoolWhole(port.poolReport())
    expect(() => port.queues).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
    await port.close() // a second close resolves
  })

  it('waits for the user when the pool runs dry instead of dropping', async () => {
    const port = openPcapPort({ replay: readFileSync(TRAFFIC), bufferCount: 16, ringCapacity: 16 })
    const got = await receiveAll(port.queues[0], original.length, 10_000, 3)
    expect(got.length).toBe(original.length)
    expect((await port.replayDone).replayed).toBe(original.length)
    expect(port.counters().drops).toEqual({ ringFull: 0, poolEmpty: 0, oversize: 0 })
    await port.close()
    expectPoolWhole(port.poolReport())
  })

  it('replays at the capture timing when asked', async () => {
    const file = join(work, 'paced.pcap')
    const w = new PcapWriter(new FileCaptureSink(file), { linkType: LINKTYPE_ETHERNET })
    for (let i = 0; i < 3; i++) w.writePacket(arpRequest(i), 1_700_000_000, i * 150_000_000)
    await w.close()
    const port = openPcapPort({ replay: file, pace: 'capture' })
    const start = performance.now()
    const got = await receiveAll(port.queues[0], 3)
    const elapsed = performance.now() - start
    expect(got.map((g) => g[41])).toEqual([0, 1, 2])
    // The last packet was captured 300 ms after the first: it cannot arrive sooner.
    expect(elapsed).toBeGreaterThanOrEqual(290)
    await port.close()
  })

  it('closes at once while waiting out a long gap in the capture', async () => {
    const file = join(work, 'gap.pcap')
    const w = new PcapWriter(new FileCaptureSink(file), { linkType: LINKTYPE_ETHERNET })
    w.writePacket(arpRequest(1), 1_700_000_000, 0)
    w.writePacket(arpRequest(2), 1_700_003_600, 0) // an hour later
    await w.close()
    const port = openPcapPort({ replay: file, pace: 'capture' })
    expect((await receiveAll(port.queues[0], 1)).length).toBe(1)
    await port.close() // would hang for an hour if the wait were not cut short
    expect((await port.replayDone).replayed).toBe(1)
    expectPoolWhole(port.poolReport())
  })

  it('records what the user sends to a pcapng that tshark reads cleanly', async () => {
    const file = join(work, 'recorded.pcapng')
    const port = openPcapPort({ record: file, name: 'rec0' })
    const frames = Array.from({ length: 20 }, (_, i) => arpRequest(i))
    sendFrames(port.queues[0], frames)
    await port.close()
    expectPoolWhole(port.poolReport())
    expect(port.recorded).toBe(20)
    const packets = readAllPackets(readFileSync(file))
    expect(packets.map((p) => p.data)).toEqual(frames)
    expect(packets.every((p) => p.direction === 'outbound')).toBe(true)
    const fields = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.p2p_dir', '-e', 'frame.interface_name', '-e', 'arp.dst.proto_ipv4'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    expect(fields.trim().split('\n')).toEqual(frames.map((_, i) => `0\trec0\t198.51.100.${i}`))
    expect(execFileSync('tshark', ['-r', file, '-q', '-z', 'expert'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })).not.toMatch(/Errors|Warns/)
  })

  it('keeps taking packets when its recording fails (disk full), and close reports it with every buffer home', async () => {
    const port = openPcapPort({ record: '/dev/full', name: 'full0' })
    const frames = Array.from({ length: 40 }, (_, i) => new Uint8Array(1500).fill(i))
    // 3 x 40 x 1.5 KB is more than the writer's 64 KiB staging: a write reaches /dev/full.
    for (let round = 0; round < 3; round++) {
      sendFrames(port.queues[0], frames)
      await new Promise((resolve) => setTimeout(resolve, 30))
    }
    expect(port.counters().txPackets).toBe(120)
    await expect(port.close()).rejects.toMatchObject({ code: 'PCAP_WRITE_FAILED', message: expect.stringMatching(/ENOSPC/) })
    expectPoolWhole(port.poolReport())
    expect(() => port.counters()).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
  })

  it('closes when its user closed its end first (no spin on a closed peer)', async () => {
    const port = openPcapPort({ replay: TRAFFIC, bufferCount: 16, ringCapacity: 16 })
    port.queues[0].close()
    // The event loop still runs: a timer fires, then the port closes.
    await new Promise((resolve) => setTimeout(resolve, 20))
    await port.close()
  })

  it('a pcapng tap whose sink fails stops recording, not the traffic; close reports it with every buffer home', async () => {
    const [near, far] = createMemoryWire()
    const tap = pcapTap(near, { output: '/dev/full' })
    const frames = Array.from({ length: 40 }, (_, i) => new Uint8Array(1500).fill(i))
    let got = 0
    for (let round = 0; round < 3; round++) {
      sendFrames(tap.queues[0], frames)
      got += (await receiveAll(far.queues[0], 40)).length
    }
    expect(got).toBe(120)
    expect(tap.tapCounters().writeError).toMatch(/ENOSPC/)
    await expect(tap.close()).rejects.toMatchObject({ code: 'PCAP_WRITE_FAILED' })
    for (const pool of tap.poolReport()) expectPoolWhole({ device: { ...pool.device }, user: pool.user })
    await far.close()
  })

  it('reports a malformed replay file after replaying what came before the fault', async () => {
    const bytes = readFileSync(join(FIXTURES, 'traffic-tcpdump.pcap')).subarray(0, 3000)
    const port = openPcapPort({ replay: bytes })
    const report = await port.replayDone
    expect(report.replayed).toBeGreaterThan(0)
    expect(report.error).toMatchObject({ code: 'PCAP_MALFORMED' })
    await port.close()
    expectPoolWhole(port.poolReport())
  })

  it('skips packets of another link type than the port', async () => {
    const file = join(work, 'mixed.pcapng')
    const w = new PcapngWriter(new FileCaptureSink(file))
    const eth = w.addInterface({ linkType: LINKTYPE_ETHERNET, name: 'eth' })
    const raw = w.addInterface({ linkType: LINKTYPE_RAW, name: 'tun' })
    for (let i = 0; i < 6; i++) w.writePacket(i % 2 === 0 ? eth : raw, arpRequest(i), 1, i)
    await w.close()
    const port = openPcapPort({ replay: file, linkType: 'ip' })
    expect(port.info.linkType).toBe('ip')
    const got = await receiveAll(port.queues[0], 3)
    expect(got.map((g) => g[41])).toEqual([1, 3, 5])
    expect(await port.replayDone).toMatchObject({ replayed: 3, skippedLinkType: 3 })
    await port.close()
    expectPoolWhole(port.poolReport())
  })

  it('refuses a file that is not a capture', () => {
    expect(() => openPcapPort({ replay: Buffer.from('definitely not a capture') })).toThrow(expect.objectContaining({ code: 'PCAP_MALFORMED' }))
  })
})

describe('pcapng tap', () => {
  it('records both directions of a memory wire with direction flags, and delivers everything', async () => {
    const [a, b] = createMemoryWire({ name: 'wire' })
    const file = join(work, 'tap.pcapng')
    const tapped = pcapTap(a, { output: file })
    const outgoing = Array.from({ length: 30 }, (_, i) => arpRequest(i))
    const incoming = Array.from({ length: 20 }, (_, i) => arpRequest(100 + i))
    sendFrames(tapped.queues[0], outgoing)
    sendFrames(b.queues[0], incoming)
    const [atB, atA] = await Promise.all([receiveAll(b.queues[0], outgoing.length), receiveAll(tapped.queues[0], incoming.length)])
    expect(atB).toEqual(outgoing)
    expect(atA).toEqual(incoming)
    expect(tapped.tapCounters()).toEqual({ recordedInbound: 20, recordedOutbound: 30, oversize: 0, ringFull: 0 })
    expect(tapped.counters()).toMatchObject({ rxPackets: 20, txPackets: 30 })
    await tapped.close()
    await b.close()
    for (const pool of tapped.poolReport()) expectPoolWhole(pool)
    const packets = readAllPackets(readFileSync(file))
    expect(packets.filter((p) => p.direction === 'outbound').map((p) => p.data)).toEqual(outgoing)
    expect(packets.filter((p) => p.direction === 'inbound').map((p) => p.data)).toEqual(incoming)
    const dirs = execFileSync('tshark', ['-r', file, '-T', 'fields', '-e', 'frame.p2p_dir'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
    const counts = dirs.trim().split('\n').reduce<Record<string, number>>((m, d) => ((m[d] = (m[d] ?? 0) + 1), m), {})
    expect(counts).toEqual({ '0': 30, '1': 20 })
  })

  it('taps a pcap port: the replay is recorded inbound, in order', async () => {
    const sink = new MemoryCaptureSink()
    const original = readAllPackets(readFileSync(TRAFFIC))
    const tapped = pcapTap(openPcapPort({ replay: TRAFFIC, name: 'replay' }), { output: sink })
    const got = await receiveAll(tapped.queues[0], original.length)
    expect(got.length).toBe(original.length)
    await tapped.close()
    const recorded = readAllPackets(sink.bytes())
    expect(recorded.map((p) => p.data)).toEqual(original.map((p) => p.data))
    expect(recorded.every((p) => p.direction === 'inbound')).toBe(true)
  })
})
