// Kernel ports through the nexus addon, next to plain C loops on the same
// devices in the same run (bench/c/nexus_loop.c, compiled here with cc -O2):
//   - packets/s kernel -> JS and JS -> kernel for TUN, TUN with vnet_hdr, TAP
//     and AF_PACKET (TPACKET_V3), small UDP packets;
// (TCP payload Gbit/s through vnet_hdr TUNs is bench/native-tcp.bench.ts.)
// The benchmark creates its own network namespaces (fs-nbench-*) and deletes
// them; it needs root. Kernel -> reader figures are bounded by the one flood
// sender (a C sendmmsg loop) sharing the machine's cores with the reader, for
// the C loop and the nexus alike: compare them with each other, not with
// the DESIGN.md §8 per-call costs.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChannelEnd } from '../nexus/channel/index.js'
import { openAfPacket } from '../nexus/ports/afpacket.js'
import type { NativePort } from '../nexus/ports/native.js'
import { openTap } from '../nexus/ports/tap.js'
import { openTun } from '../nexus/ports/tun.js'
import type { BenchOptions, BenchResult } from './types.js'
import { packageRoot, run, sh, type Proc } from './native-procs.js'

const PREFIX = 'fs-nbench-'
const PAYLOAD = 18 // 18-byte UDP payload: 46-byte IPv4 packets, 60-byte frames

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function checksum(bytes: Uint8Array, start: number, end: number, initial = 0): number {
  let sum = initial
  for (let i = start; i < end; i += 2) sum += (bytes[i] << 8) | (i + 1 < end ? bytes[i + 1] : 0)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

/** A 46-byte IPv4/UDP packet 198.51.100.2:7000 -> 198.51.100.1:9 (nobody listens: the kernel drops it). */
function udpPacket(): Uint8Array {
  const p = new Uint8Array(20 + 8 + PAYLOAD)
  const v = new DataView(p.buffer)
  p[0] = 0x45
  v.setUint16(2, p.length)
  p[8] = 64
  p[9] = 17
  p.set([198, 51, 100, 2], 12)
  p.set([198, 51, 100, 1], 16)
  v.setUint16(10, checksum(p, 0, 20))
  v.setUint16(20, 7000)
  v.setUint16(22, 9)
  v.setUint16(24, 8 + PAYLOAD)
  return p // UDP checksum 0: "not computed", legal over IPv4
}

function frame(dst: Uint8Array, src: Uint8Array, packet: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + packet.length)
  f.set(dst, 0)
  f.set(src, 6)
  f[12] = 0x08
  f[13] = 0x00
  f.set(packet, 14)
  return f
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const macOf = (ns: string, dev: string): Uint8Array =>
  Uint8Array.from(sh('ip', 'netns', 'exec', ns, 'cat', `/sys/class/net/${dev}/address`).trim().split(':').map((h) => parseInt(h, 16)))

/** Packets/s the port delivers to JS while a kernel flood runs. */
async function jsReceiveRate(port: NativePort, seconds: number): Promise<number> {
  const end = port.queues[0]
  let count = 0
  const visit = (index: number): void => {
    count++
    end.release(index)
  }
  const warm = Date.now() + 100
  while (Date.now() < warm) {
    if (end.receive(1024, visit) === 0) await end.waitForWork(5)
  }
  count = 0
  const t0 = performance.now()
  const deadline = t0 + seconds * 1000
  while (performance.now() < deadline) {
    if (end.receive(1024, visit) === 0) await end.waitForWork(5)
  }
  return count / ((performance.now() - t0) / 1000)
}

/** Packets/s JS hands to the kernel (as counted by the I/O thread). */
async function jsTransmitRate(port: NativePort, packet: Uint8Array, seconds: number): Promise<number> {
  const end: ChannelEnd = port.queues[0]
  const fill = async (until: number): Promise<void> => {
    while (performance.now() < until) {
      let k = 0
      for (; k < 256; k++) {
        const index = end.alloc()
        if (index < 0) break
        end.buffer(index).set(packet)
        if (!end.send(index, packet.length)) {
          end.free(index)
          break
        }
      }
      end.flush()
      if (k === 0) await end.waitForBuffers(5)
    }
  }
  await fill(performance.now() + 100)
  const before = port.counters().txPackets
  const t0 = performance.now()
  await fill(t0 + seconds * 1000)
  const sent = port.counters().txPackets - before
  return sent / ((performance.now() - t0) / 1000)
}

function createNs(tag: string): string {
  const ns = `${PREFIX}${tag}`
  try {
    sh('ip', 'netns', 'del', ns)
  } catch {
    // not there
  }
  sh('ip', 'netns', 'add', ns)
  sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
  return ns
}

export default async function runBench(opts: BenchOptions): Promise<BenchResult[]> {
  const seconds = opts.quick ? 0.2 : 0.5
  const results: BenchResult[] = []
  const dir = mkdtempSync(join(tmpdir(), 'flowstack-nbench-'))
  const loop = join(dir, 'nexus_loop')
  sh('cc', '-O2', '-o', loop, join(packageRoot(), 'bench', 'c', 'nexus_loop.c'))
  for (const name of sh('ip', 'netns', 'list').split('\n').map((l) => l.split(' ')[0])) {
    if (name.startsWith(PREFIX)) sh('ip', 'netns', 'del', name)
  }
  const namespaces: string[] = []
  const packet = udpPacket()
  const flood = (ns: string, dst: string): Proc => run(ns, [loop, 'flood-udp', dst, '9', String(seconds + 0.5), String(PAYLOAD)])
  const cCount = async (proc: Proc): Promise<number> => Number((await proc.done).trim()) / seconds

  const pps = (name: string, value: number, baseline: number): void => {
    results.push({ name, value: Math.round(value), unit: 'packets/s', baseline: 'C loop, same device', baselineValue: Math.round(baseline), higherIsBetter: true })
  }

  try {
    // ---- TUN, with and without vnet_hdr, and TAP: persistent devices the C loop and the port attach to in turn.
    for (const variant of ['tun', 'tun+vnet', 'tap'] as const) {
      const ns = createNs(variant.replace('+', '-'))
      namespaces.push(ns)
      const tap = variant === 'tap'
      const vnet = variant === 'tun+vnet'
      const dev = 'fsbench0'
      sh('ip', '-n', ns, 'tuntap', 'add', 'dev', dev, 'mode', tap ? 'tap' : 'tun', ...(vnet ? ['vnet_hdr'] : []))
      sh('ip', '-n', ns, 'link', 'set', dev, 'txqueuelen', '4096', 'up')
      sh('ip', '-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', dev)
      const peerMac = Uint8Array.from([0x02, 0, 0x5e, 0, 0x53, 2])
      if (tap) sh('ip', '-n', ns, 'neigh', 'add', '198.51.100.2', 'lladdr', '02:00:5e:00:53:02', 'dev', dev)
      const wire = tap ? frame(macOf(ns, dev), peerMac, packet) : packet
      const flags = [vnet ? '1' : '0', tap ? '1' : '0']

      // kernel -> reader
      const f1 = flood(ns, '198.51.100.2')
      const cRx = await cCount(run(ns, [loop, 'tun-read', dev, String(seconds), ...flags]))
      await f1.done
      const port = tap ? await openTap({ name: dev, attach: true, netns: ns, vnetHdr: vnet }) : await openTun({ name: dev, attach: true, netns: ns, vnetHdr: vnet })
      try {
        const f2 = flood(ns, '198.51.100.2')
        const jsRx = await jsReceiveRate(port, seconds)
        await f2.done
        pps(`${variant} kernel -> JS`, jsRx, cRx)
      } finally {
        await port.close()
      }
      // writer -> kernel
      const cTx = await cCount(run(ns, [loop, 'tun-write', dev, String(seconds), ...flags, hex(wire)]))
      const port2 = tap ? await openTap({ name: dev, attach: true, netns: ns, vnetHdr: vnet }) : await openTun({ name: dev, attach: true, netns: ns, vnetHdr: vnet })
      try {
        pps(`${variant} JS -> kernel`, await jsTransmitRate(port2, wire, seconds), cTx)
      } finally {
        await port2.close()
      }
    }

    // ---- AF_PACKET on a veth end; the other end's kernel floods / receives.
    {
      const nsA = createNs('pkt-a')
      const nsB = createNs('pkt-b')
      namespaces.push(nsA, nsB)
      sh('ip', '-n', nsA, 'link', 'add', 'fsbpa', 'type', 'veth', 'peer', 'name', 'fsbpb', 'netns', nsB)
      sh('ip', '-n', nsA, 'link', 'set', 'fsbpa', 'up')
      sh('ip', '-n', nsB, 'link', 'set', 'fsbpb', 'up')
      sh('ip', '-n', nsB, 'addr', 'add', '198.51.100.2/24', 'dev', 'fsbpb')
      const macA = macOf(nsA, 'fsbpa')
      const macB = macOf(nsB, 'fsbpb')
      sh('ip', '-n', nsB, 'neigh', 'add', '198.51.100.1', 'lladdr', hex(macA).match(/../g)!.join(':'), 'dev', 'fsbpb')
      const floodB = (): Proc => run(nsB, [loop, 'flood-udp', '198.51.100.1', '9', String(seconds + 0.5), String(PAYLOAD)])
      const f1 = floodB()
      const cRx = await cCount(run(nsA, [loop, 'pkt-read', 'fsbpa', String(seconds)]))
      await f1.done
      const port = await openAfPacket({ name: 'fsbpa', netns: nsA })
      try {
        const f2 = floodB()
        pps('afpacket kernel -> JS', await jsReceiveRate(port, seconds), cRx)
        await f2.done
      } finally {
        await port.close()
      }
      // Frames to the peer: 198.51.100.1 -> 198.51.100.2:9, dropped by its UDP layer.
      const out = udpPacket()
      out.set([198, 51, 100, 1], 12)
      out.set([198, 51, 100, 2], 16)
      out[10] = 0
      out[11] = 0
      new DataView(out.buffer).setUint16(10, checksum(out, 0, 20))
      const wire = frame(macB, macA, out)
      const cTx = await cCount(run(nsA, [loop, 'pkt-write', 'fsbpa', String(seconds), hex(wire)]))
      const port2 = await openAfPacket({ name: 'fsbpa', netns: nsA })
      try {
        pps('afpacket JS -> kernel', await jsTransmitRate(port2, wire, seconds), cTx)
      } finally {
        await port2.close()
      }
    }
  } finally {
    for (const ns of namespaces) {
      try {
        sh('ip', 'netns', 'del', ns)
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true })
  }
  await sleep(0)
  return results
}
