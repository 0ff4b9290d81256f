// TCP payload kernel -> JavaScript through vnet_hdr TUNs (issue 3's 10 Gbit/s
// target), all in the same run, next to the kernel's own TCP over a veth pair.
//
// 1. JavaScript as the TCP receiver (the direct reading of the target): a
//    kernel TCP sender (bench/c/nexus_loop.c tcp-send) in namespace A writes
//    to 203.0.113.1, routed into vnet_hdr TUN fsnta (TSO on, so reads are
//    64 KiB super-packets). The nexus reads them (one I/O thread) and a JS
//    thread runs bench/native-tcp-sink.ts: a minimal receiver that counts
//    in-order payload and writes ACKs built from a header template back
//    through the same TUN. The baseline is nexus_loop.c tun-sink: the same
//    receiver and ACK policy in one C thread on the same TUN.
// 2. JavaScript as a relay (a different, longer path): an iperf3 client in
//    namespace A sends to a server in namespace B; A routes B's prefix into
//    TUN fsnta, B routes A's prefix into TUN fsntb. A relay reads A's
//    super-packets and writes them to B (and B's ACKs back to A), so a kernel
//    receiver ACKs. The relay is first the C loop (nexus_loop.c tun-relay:
//    read, write the same buffer), then the nexus with a JS pump (read
//    descriptor, copy into the other channel's buffer, send). iperf3's
//    receiver figure is reported too, as a cross-check.
//
// Receivers are measured with the sender's default congestion control (BBR
// on these machines) and with CUBIC (TCP_CONGESTION on the sender socket):
// BBR, not the receiver, bounds this path (nexus/native/README.md). Quick
// mode measures only the receivers with CUBIC.
//
// The figure is TCP payload bytes (IP and TCP headers excluded) counted by the
// reader (JS, resp. C) in what it read from A, divided by the time from the
// first to the last payload-carrying read. The receivers check that they
// counted every byte the sender wrote (a warning otherwise).
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { readdirSync } from 'node:fs'
import { DESC_VNET_HDR, type ChannelEnd } from '../nexus/channel/index.js'
import { copyPacket, VIRTIO_HDR } from '../nexus/ports/native.js'
import { openTun } from '../nexus/ports/tun.js'
import type { BenchOptions, BenchResult } from './types.js'
import { REPLY_NONE, TcpAckSink, type SinkReply } from './native-tcp-sink.js'
import { packageRoot, run, sh } from './native-procs.js'

const PREFIX = 'fs-ntcp-'

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

/** TCP payload bytes of one vnet_hdr packet (12-byte header, then IPv4 or IPv6); 0 for anything else. */
export function tcpPayloadBytes(bytes: Uint8Array, length: number): number {
  const ip = VIRTIO_HDR
  const version = bytes[ip] >> 4
  let l3: number
  if (version === 4 && length >= ip + 20 && bytes[ip + 9] === 6) l3 = (bytes[ip] & 15) * 4
  else if (version === 6 && length >= ip + 40 && bytes[ip + 6] === 6) l3 = 40
  else return 0
  if (ip + l3 + 20 > length) return 0
  const l4 = (bytes[ip + l3 + 12] >> 4) * 4
  const payload = length - ip - l3 - l4
  return payload > 0 ? payload : 0
}

/** User+system CPU seconds of one thread from its /proc stat file. */
function statCpuSeconds(path: string): number {
  try {
    const stat = readFileSync(path, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return (Number(fields[11]) + Number(fields[12])) / 100 // clock ticks; USER_HZ is 100 on Linux
  } catch {
    return 0 // the thread exited
  }
}

/** CPU seconds of the calling thread (the JS thread). */
const threadCpuSeconds = (): number => statCpuSeconds('/proc/thread-self/stat')

/** CPU seconds of every thread of this process, by thread id. */
function taskCpuSeconds(): Map<string, number> {
  const out = new Map<string, number>()
  for (const tid of readdirSync('/proc/self/task')) out.set(tid, statCpuSeconds(`/proc/self/task/${tid}/stat`))
  return out
}

/** The largest CPU delta among threads other than the calling one: the port's I/O thread during a transfer. */
function busiestOtherThread(before: Map<string, number>, after: Map<string, number>): number {
  const self = readFileSync('/proc/thread-self/stat', 'utf8').split(' ')[0]
  let best = 0
  for (const [tid, cpu] of after) if (tid !== self) best = Math.max(best, cpu - (before.get(tid) ?? 0))
  return best
}

const SINK_ADDRESS = '203.0.113.1'
const SINK_PORT = '5001'

/**
 * Runs the JS receiver on side B of `end` until the connection is closed by
 * the sender (our FIN sent) or `stopAt` passes. ACKs go out through the same
 * queue; a reply that finds no free buffer is retried at the end of the batch.
 */
async function runJsSink(end: ChannelEnd, sink: TcpAckSink, stopAt: number, times: { first: number; last: number }): Promise<number> {
  let unsent = 0
  const send = (reply: SinkReply): void => {
    let out = end.alloc()
    if (out < 0) {
      end.reclaim()
      out = end.alloc()
    }
    if (out < 0) {
      unsent++
      return
    }
    const length = sink.emitReply(reply, end.buffer(out))
    if (length === 0 || !end.send(out, length, DESC_VNET_HDR)) end.free(out)
  }
  const visit = (index: number, length: number): void => {
    const reply = sink.receive(end.buffer(index), length)
    end.release(index)
    if (reply !== REPLY_NONE) send(reply)
  }
  let finishedAt = 0
  while (performance.now() < stopAt) {
    const before = sink.payloadBytes
    const moved = end.receive(256, visit)
    const tail = sink.endBatch()
    if (tail !== REPLY_NONE) send(tail)
    end.flush()
    if (sink.payloadBytes !== before) {
      times.last = performance.now()
      if (times.first === 0) times.first = times.last
    }
    // Closed: our FIN is out. Linger briefly for a retransmitted FIN, then stop.
    if (finishedAt === 0 && sink.finished) finishedAt = performance.now()
    if (finishedAt !== 0 && performance.now() - finishedAt > 50) break
    if (moved === 0) await end.waitForWork(10)
  }
  return unsent
}

const gbps = (bytes: number, seconds: number): number => (seconds > 0 ? (bytes * 8) / seconds / 1e9 : 0)
const round2 = (x: number): number => Number(x.toFixed(2))

interface ReceiverRun {
  /** In-order TCP payload the receiver counted. */
  payload: number
  /** Bytes the sender wrote (all of them are counted once the FIN is in). */
  written: number
  gbps: number
  /** Receiver process CPU seconds (C: the loop; nexus: JS thread + I/O thread + the rest of this process). */
  cpu: number
  senderCpu: number
  acks: number
  reads: number
  jsThreadCpu: number
  ioThreadCpu: number
  doorbells: number
  wakeups: number
}

interface ReceiverFigures {
  c: ReceiverRun
  js: ReceiverRun
}

const numbers = (line: string): number[] => line.trim().split(/\s+/).map(Number)

/**
 * One kernel TCP transfer into the C receiver, then one into the JS receiver,
 * on TUN fsnta in `ns`, the sender using congestion control `cc`.
 */
async function measureReceivers(loop: string, ns: string, cc: string, seconds: number): Promise<ReceiverFigures> {
  const timeoutMs = (seconds + 20) * 1000
  const send = (): ReturnType<typeof run> => run(ns, [loop, 'tcp-send', SINK_ADDRESS, SINK_PORT, String(seconds), cc], timeoutMs)

  const cProc = run(ns, [loop, 'tun-sink', 'fsnta', String(seconds + 3)], timeoutMs)
  await cProc.printed('ready')
  const [cWritten, cSenderCpu] = numbers(await send().done)
  const [cPayload, cActive, cCpu, cAcks, cReads] = numbers((await cProc.done).trim().split('\n').pop() ?? '')
  const c: ReceiverRun = { payload: cPayload, written: cWritten, gbps: gbps(cPayload, cActive), cpu: cCpu, senderCpu: cSenderCpu, acks: cAcks, reads: cReads, jsThreadCpu: 0, ioThreadCpu: 0, doorbells: 0, wakeups: 0 }

  const port = await openTun({ name: 'fsnta', attach: true, netns: ns, vnetHdr: true })
  const sink = new TcpAckSink()
  const times = { first: 0, last: 0 }
  let js: ReceiverRun
  let unsent = 0
  try {
    const countersBefore = port.counters()
    const wakeBefore = port.errorCounters().wakeups
    const cpuBefore = process.cpuUsage()
    const jsBefore = threadCpuSeconds()
    const tasksBefore = taskCpuSeconds()
    const receiving = runJsSink(port.queues[0], sink, performance.now() + (seconds + 3) * 1000, times)
    const [written, senderCpu] = numbers(await send().done)
    unsent = await receiving
    const cpu = process.cpuUsage(cpuBefore)
    const countersAfter = port.counters()
    js = {
      payload: sink.payloadBytes,
      written,
      gbps: gbps(sink.payloadBytes, (times.last - times.first) / 1000),
      cpu: (cpu.user + cpu.system) / 1e6,
      senderCpu,
      acks: sink.repliesEmitted,
      reads: countersAfter.rxPackets - countersBefore.rxPackets,
      jsThreadCpu: threadCpuSeconds() - jsBefore,
      ioThreadCpu: busiestOtherThread(tasksBefore, taskCpuSeconds()),
      doorbells: countersAfter.doorbells - countersBefore.doorbells,
      wakeups: port.errorCounters().wakeups - wakeBefore,
    }
  } finally {
    await port.close()
  }
  // Consistency: both sides close with FIN, so every byte written must have
  // been counted; a difference means the figure is not the whole stream.
  if (js.payload !== js.written || c.payload !== c.written || unsent > 0 || sink.malformedPackets > 0) {
    process.emitWarning(
      `native-tcp receiver (${cc}): JS counted ${js.payload} of ${js.written} written (out of order ${sink.outOfOrderPackets}, duplicates ${sink.duplicatePackets}, malformed ${sink.malformedPackets}, unsent replies ${unsent}); C counted ${c.payload} of ${c.written}`,
    )
  }
  return { c, js }
}

export default async function runBench(opts: BenchOptions): Promise<BenchResult[]> {
  // iperf3 takes whole seconds; the receivers run for fractions.
  const tcpSeconds = opts.quick ? 1 : 2
  const receiverSeconds = opts.quick ? 0.3 : 1.5
  const results: BenchResult[] = []
  const dir = mkdtempSync(join(tmpdir(), 'flowstack-ntcp-'))
  const loop = join(dir, 'nexus_loop')
  sh('cc', '-O2', '-o', loop, join(packageRoot(), 'bench', 'c', 'nexus_loop.c'))
  for (const name of sh('ip', 'netns', 'list').split('\n').map((l) => l.split(' ')[0])) {
    if (name.startsWith(PREFIX)) sh('ip', 'netns', 'del', name)
  }
  const nsA = createNs('a')
  const nsB = createNs('b')
  try {
    // Kernel TCP over a veth pair: the kernel's own figure on this machine.
    sh('ip', '-n', nsA, 'link', 'add', 'fsnva', 'type', 'veth', 'peer', 'name', 'fsnvb', 'netns', nsB)
    sh('ip', '-n', nsA, 'addr', 'add', '192.0.2.1/24', 'dev', 'fsnva')
    sh('ip', '-n', nsB, 'addr', 'add', '192.0.2.2/24', 'dev', 'fsnvb')
    sh('ip', '-n', nsA, 'link', 'set', 'fsnva', 'up')
    sh('ip', '-n', nsB, 'link', 'set', 'fsnvb', 'up')
    // Persistent vnet_hdr TUNs that the C relay and the nexus attach to in turn.
    sh('ip', '-n', nsA, 'tuntap', 'add', 'dev', 'fsnta', 'mode', 'tun', 'vnet_hdr')
    sh('ip', '-n', nsB, 'tuntap', 'add', 'dev', 'fsntb', 'mode', 'tun', 'vnet_hdr')
    sh('ip', '-n', nsA, 'link', 'set', 'fsnta', 'txqueuelen', '1000', 'up')
    sh('ip', '-n', nsB, 'link', 'set', 'fsntb', 'txqueuelen', '1000', 'up')
    sh('ip', '-n', nsA, 'addr', 'add', '198.51.100.1/24', 'dev', 'fsnta')
    sh('ip', '-n', nsA, 'route', 'add', '203.0.113.0/24', 'dev', 'fsnta')
    sh('ip', '-n', nsB, 'addr', 'add', '203.0.113.1/24', 'dev', 'fsntb')
    sh('ip', '-n', nsB, 'route', 'add', '198.51.100.0/24', 'dev', 'fsntb')

    const iperf = async (server: string, cc?: string): Promise<number> => {
      const s = run(nsB, ['iperf3', '-s', '-1', '--forceflush', '-B', server])
      await s.printed('listening')
      const c = run(nsA, ['iperf3', '-c', server, '-t', String(tcpSeconds), '-J', ...(cc !== undefined ? ['-C', cc] : [])], (tcpSeconds + 20) * 1000)
      const json = await c.done
      s.child.kill('SIGKILL')
      const parsed = JSON.parse(json) as { end?: { sum_received?: { bits_per_second?: number } } }
      return (parsed.end?.sum_received?.bits_per_second ?? 0) / 1e9
    }

    // Quick mode (a smoke run under ~3 s) measures only the receivers with CUBIC.
    const kernelGbps = opts.quick ? 0 : await iperf('192.0.2.2')

    // 1. The receivers, with the system's default congestion control and
    // with CUBIC: the sender's congestion control turned out to bound this
    // path (see nexus/native/README.md), so both are reported.
    const defaultCc = sh('ip', 'netns', 'exec', nsA, 'cat', '/proc/sys/net/ipv4/tcp_congestion_control').trim()
    const ccs = opts.quick || defaultCc === 'cubic' ? ['cubic'] : [defaultCc, 'cubic']
    const perGB = (cpu: number, bytes: number): number => round2(bytes > 0 ? cpu / (bytes / 1e9) : 0)
    let cubic: ReceiverFigures | undefined
    for (const cc of ccs) {
      const f = await measureReceivers(loop, nsA, cc, receiverSeconds)
      if (cc === 'cubic') cubic = f
      results.push({ name: `TCP payload kernel -> JS (tun vnet_hdr, JS receiver, ${cc} sender)`, value: round2(f.js.gbps), unit: 'Gbit/s', baseline: 'C receiver loop (tun-sink), same TUN', baselineValue: round2(f.c.gbps), higherIsBetter: true })
      results.push({ name: `receiver CPU per GB of TCP payload (nexus+JS, ${cc})`, value: perGB(f.js.cpu, f.js.payload), unit: 's/GB', baseline: 'C receiver loop, same TUN', baselineValue: perGB(f.c.cpu, f.c.payload), higherIsBetter: false })
    }
    const kernelCubicGbps = !opts.quick && defaultCc === 'cubic' ? kernelGbps : await iperf('192.0.2.2', 'cubic')
    if (cubic !== undefined) {
      const f = cubic
      results.push({ name: 'TCP payload kernel -> JS receiver vs kernel (cubic)', value: round2(f.js.gbps), unit: 'Gbit/s', baseline: 'kernel TCP over veth, iperf3 cubic', baselineValue: round2(kernelCubicGbps), higherIsBetter: true })
      results.push({ name: 'receiver JS thread CPU per GB (cubic)', value: perGB(f.js.jsThreadCpu, f.js.payload), unit: 's/GB', baseline: 'its I/O thread', baselineValue: perGB(f.js.ioThreadCpu, f.js.payload), higherIsBetter: false })
      results.push({ name: 'kernel sender CPU per GB (JS receiver, cubic)', value: perGB(f.js.senderCpu, f.js.payload), unit: 's/GB', baseline: 'same sender, C receiver run', baselineValue: perGB(f.c.senderCpu, f.c.payload), higherIsBetter: false })
      results.push({ name: 'JS receiver: reads per doorbell (cubic)', value: f.js.doorbells > 0 ? round2(f.js.reads / f.js.doorbells) : f.js.reads, unit: 'reads', baseline: 'reads per I/O-thread wakeup', baselineValue: f.js.wakeups > 0 ? round2(f.js.reads / f.js.wakeups) : f.js.reads, higherIsBetter: true })
      results.push({ name: 'JS receiver: payload per ACK (cubic)', value: f.js.acks > 0 ? Math.round(f.js.payload / f.js.acks) : 0, unit: 'bytes', baseline: 'C receiver', baselineValue: f.c.acks > 0 ? Math.round(f.c.payload / f.c.acks) : 0, higherIsBetter: true })
    }

    if (opts.quick) return results

    // 2. Relays. C relay on the same TUNs.
    const relayC = run(nsA, [loop, 'tun-relay', 'fsnta', `/var/run/netns/${nsB}`, 'fsntb', String(tcpSeconds + 1.5)], (tcpSeconds + 20) * 1000)
    await new Promise((r) => setTimeout(r, 100))
    const cIperfGbps = await iperf('203.0.113.1')
    const [cPayload, cActive, cCpu] = (await relayC.done).trim().split(/\s+/).map(Number)
    const cGbps = gbps(cPayload, cActive)

    // The nexus with a JS pump.
    const portA = await openTun({ name: 'fsnta', attach: true, netns: nsA, vnetHdr: true })
    const portB = await openTun({ name: 'fsntb', attach: true, netns: nsB, vnetHdr: true })
    let jsPayload = 0
    let first = 0
    let last = 0
    let running = true
    try {
      const a = portA.queues[0]
      const b = portB.queues[0]
      const forward = (from: ChannelEnd, to: ChannelEnd, count: boolean): number => {
        let batchPayload = 0
        const moved = from.receive(256, (index, length, flags) => {
          const bytes = from.buffer(index)
          if (count) batchPayload += tcpPayloadBytes(bytes, length)
          let out = to.alloc()
          if (out < 0) {
            to.reclaim()
            out = to.alloc()
          }
          if (out >= 0) {
            copyPacket(to.buffer(out), bytes, length)
            if (!to.send(out, length, flags)) to.free(out)
          }
          from.release(index)
        })
        to.flush()
        from.flush()
        if (batchPayload > 0) {
          last = performance.now()
          if (first === 0) first = last
          jsPayload += batchPayload
        }
        return moved
      }
      const rxBefore = portA.counters()
      const cpuBefore = process.cpuUsage()
      const jsThreadBefore = threadCpuSeconds()
      const wakeBefore = portA.errorCounters().wakeups
      const pump = (async () => {
        while (running) {
          if (forward(a, b, true) + forward(b, a, false) === 0) await Promise.race([a.waitForWork(10), b.waitForWork(10)])
        }
      })()
      const jsIperfGbps = await iperf('203.0.113.1')
      running = false
      await pump
      const rxAfter = portA.counters()
      const cpu = process.cpuUsage(cpuBefore)
      const jsCpu = (cpu.user + cpu.system) / 1e6
      const jsThreadCpu = threadCpuSeconds() - jsThreadBefore
      const wakeAfter = portA.errorCounters().wakeups
      const jsGbps = gbps(jsPayload, (last - first) / 1000)
      const reads = rxAfter.rxPackets - rxBefore.rxPackets
      const wakeups = wakeAfter - wakeBefore
      const doorbells = rxAfter.doorbells - rxBefore.doorbells
      results.push({ name: 'TCP payload kernel -> JS (tun vnet_hdr, relay)', value: round2(jsGbps), unit: 'Gbit/s', baseline: 'C relay loop, same TUNs, payload read', baselineValue: round2(cGbps), higherIsBetter: true })
      results.push({ name: 'TCP via nexus+JS relay, iperf3 receiver', value: round2(jsIperfGbps), unit: 'Gbit/s', baseline: 'kernel TCP over veth, iperf3', baselineValue: round2(kernelGbps), higherIsBetter: true })
      results.push({ name: 'TCP via C relay, iperf3 receiver', value: round2(cIperfGbps), unit: 'Gbit/s', baseline: 'kernel TCP over veth, iperf3', baselineValue: round2(kernelGbps), higherIsBetter: true })
      // CPU seconds spent per GB of payload relayed: the process's own time
      // (JS thread + I/O threads + the kernel work done in their syscalls),
      // which does not depend on how many cores the machine's other load left us.
      results.push({ name: 'relay CPU per GB of TCP payload (nexus+JS)', value: round2(jsPayload > 0 ? jsCpu / (jsPayload / 1e9) : 0), unit: 's/GB', baseline: 'C relay loop, same TUNs', baselineValue: round2(cPayload > 0 ? cCpu / (cPayload / 1e9) : 0), higherIsBetter: false })
      results.push({ name: 'JS thread CPU per GB of TCP payload', value: round2(jsPayload > 0 ? jsThreadCpu / (jsPayload / 1e9) : 0), unit: 's/GB', baseline: 'whole nexus process (JS + I/O threads)', baselineValue: round2(jsPayload > 0 ? jsCpu / (jsPayload / 1e9) : 0), higherIsBetter: false })
      results.push({ name: 'TCP payload per nexus read (tun vnet_hdr)', value: reads > 0 ? Math.round(jsPayload / reads) : 0, unit: 'bytes', baseline: 'per C relay read: n/a, 64 KiB max', baselineValue: 65536, higherIsBetter: true })
      results.push({ name: 'nexus reads per doorbell (tun vnet_hdr)', value: doorbells > 0 ? round2(reads / doorbells) : reads, unit: 'reads', baseline: 'reads per I/O-thread wakeup', baselineValue: wakeups > 0 ? round2(reads / wakeups) : reads, higherIsBetter: true })
    } finally {
      running = false
      await portA.close()
      await portB.close()
    }
  } finally {
    for (const ns of [nsA, nsB]) {
      try {
        sh('ip', 'netns', 'del', ns)
      } catch {
        // already gone
      }
    }
    rmSync(dir, { recursive: true, force: true })
  }
  return results
}
