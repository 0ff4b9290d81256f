// TCP through a TUN port with the kernel as the peer, for bench/stack.bench.ts:
// our stack runs in this thread on a TUN port whose kernel side lives in
// a namespace this benchmark creates (fs-sbench-*), and sends to a python3
// sink there (the same protocol as stack-roles.ts' sink: count to EOF, answer
// one byte), and receives from a python3 source there into its own sink.
// The baseline is the kernel talking to itself: iperf3 between two
// namespaces over a veth pair, in the same run. Needs root.
import { once } from 'node:events'
import { performance } from 'node:perf_hooks'
import { openTun } from '../nexus/ports/tun.js'
import type { NexusPort } from '../nexus/ports/port.js'
import { createStack, type Stack } from '../stacks/sockets/stack.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, ip, runIn, spawnIn } from './stack-netns.js'
import { runBulk, SINK_PORT, startServers, type BenchServers, type NetLike } from './stack-roles.js'

const KERNEL_ADDRESS = '192.0.2.1'
const OUR_ADDRESS = '192.0.2.2'
const VETH_A = '203.0.113.1'
const VETH_B = '203.0.113.2'

const SINK_SCRIPT = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4); print('ready', flush=True)
while True:
    c, _ = s.accept()
    while c.recv(1 << 20): pass
    c.sendall(b'\\x01'); c.close()
`

// Sends argv[3] bytes to our sink and times it up to the sink's byte at EOF,
// the same protocol as stack-roles.ts' runBulk; prints Gbit/s.
const SOURCE_SCRIPT = `
import socket, sys, time
total = int(sys.argv[3])
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30)
chunk = memoryview(bytes(1 << 20))
start = time.perf_counter(); sent = 0
while sent < total:
    n = min(len(chunk), total - sent)
    c.sendall(chunk[:n]); sent += n
c.shutdown(socket.SHUT_WR)
if c.recv(1) != b'\x01': sys.exit('sink did not answer')
print(total * 8 / (time.perf_counter() - start) / 1e9, flush=True)
`

export interface TunFigures {
  /** Our stack -> kernel through the TUN port, Gbit/s of payload. */
  stackToKernelGbps: number
  /** Kernel -> our stack through the TUN port, Gbit/s of payload. */
  kernelToStackGbps: number
  /** Kernel -> kernel over veth (iperf3), Gbit/s. */
  kernelVethGbps: number
}

function waitForLine(child: ReturnType<typeof spawnIn>, text: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = ''
    const timer = setTimeout(() => reject(new Error(`timed out waiting for "${text}": ${seen.slice(-400)}`)), timeoutMs)
    const onData = (d: Buffer): void => {
      seen += d.toString()
      if (seen.includes(text)) {
        clearTimeout(timer)
        resolve()
      }
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', () => {
      clearTimeout(timer)
      reject(new Error(`exited before printing "${text}": ${seen.slice(-400)}`))
    })
  })
}

async function kernelSource(ns: string, bytes: number): Promise<number> {
  const result = await runIn(ns, ['python3', '-c', SOURCE_SCRIPT, OUR_ADDRESS, String(SINK_PORT), String(bytes)], 40_000)
  const gbps = Number.parseFloat(result.stdout)
  if (result.status !== 0 || !(gbps > 0)) throw new Error(`kernel source failed (exit ${result.status}): ${result.stderr.slice(-400)}`)
  return gbps
}

/** Both directions over a TUN port: `bytes` of payload between our stack and a kernel socket. */
async function stackThroughTun(bytes: number): Promise<{ stackToKernelGbps: number; kernelToStackGbps: number }> {
  const ns = createNamespace()
  let port: NexusPort | null = null
  let stack: Stack | null = null
  let sink: ReturnType<typeof spawnIn> | null = null
  let servers: BenchServers | null = null
  try {
    // Plain TUN, one packet per read/write: on a vnet_hdr TUN the kernel hands
    // us its TCP segments with VIRTIO_NET_HDR_F_NEEDS_CSUM, which the stack
    // shell drops (rxOffloadDrops), so no connection could be made there yet.
    port = await openTun({ name: 'fssbench0', netns: ns, txQueueLen: 4096 })
    ip('-n', ns, 'addr', 'add', `${KERNEL_ADDRESS}/24`, 'dev', 'fssbench0')
    sink = spawnIn(ns, ['python3', '-u', '-c', SINK_SCRIPT, KERNEL_ADDRESS, String(SINK_PORT)])
    stack = await createStack({ port, addresses: [`${OUR_ADDRESS}/24`], dad: false })
    await waitForLine(sink, 'ready', 10_000)
    const net = stack.net as unknown as NetLike
    // A short first transfer each way warms the JIT; it is not measured.
    await runBulk(net, KERNEL_ADDRESS, Math.min(bytes, 4 << 20), 15_000)
    const stackToKernelGbps = await runBulk(net, KERNEL_ADDRESS, bytes, 30_000)
    servers = await startServers(net, OUR_ADDRESS)
    await kernelSource(ns, Math.min(bytes, 4 << 20))
    const kernelToStackGbps = await kernelSource(ns, bytes)
    return { stackToKernelGbps, kernelToStackGbps }
  } finally {
    sink?.kill('SIGKILL')
    await servers?.close()
    await stack?.close()
    await port?.close()
    deleteNamespace(ns)
  }
}

/** Kernel -> kernel: iperf3 across a veth pair between two namespaces for `seconds`. */
async function kernelOverVeth(seconds: number): Promise<number> {
  const nsA = createNamespace()
  const nsB = createNamespace()
  let server: ReturnType<typeof spawnIn> | null = null
  try {
    ip('-n', nsA, 'link', 'add', 'fssbencha', 'type', 'veth', 'peer', 'name', 'fssbenchb', 'netns', nsB)
    ip('-n', nsA, 'addr', 'add', `${VETH_A}/24`, 'dev', 'fssbencha')
    ip('-n', nsB, 'addr', 'add', `${VETH_B}/24`, 'dev', 'fssbenchb')
    ip('-n', nsA, 'link', 'set', 'fssbencha', 'up')
    ip('-n', nsB, 'link', 'set', 'fssbenchb', 'up')
    server = spawnIn(nsA, ['iperf3', '-s', '-1', '-B', VETH_A])
    // iperf3 -s prints nothing until a client arrives; wait for its socket.
    const listening = performance.now() + 5_000
    while (performance.now() < listening) {
      const ss = await runIn(nsA, ['ss', '-ltn'], 5_000)
      if (ss.stdout.includes(`${VETH_A}:5201`)) break
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const result = await runIn(nsB, ['iperf3', '-c', VETH_A, '-t', String(seconds), '-J'], (seconds + 15) * 1000)
    if (result.status !== 0) throw new Error(`iperf3 failed: ${result.stderr || result.stdout.slice(-400)}`)
    const report = JSON.parse(result.stdout) as { error?: string; end?: { sum_received?: { bits_per_second?: number } } }
    const bps = report.end?.sum_received?.bits_per_second
    if (typeof bps !== 'number' || !(bps > 0)) throw new Error(`iperf3 reported no throughput${report.error ? `: ${report.error}` : ''}`)
    return bps / 1e9
  } finally {
    if (server !== null && server.exitCode === null) {
      const exited = once(server, 'exit')
      server.kill('SIGKILL')
      await exited
    }
    deleteNamespace(nsA)
    deleteNamespace(nsB)
  }
}

/**
 * Both figures, or null with a printed reason when namespaces cannot be
 * created here (not root): benchmarks are not tests, so only this entry is
 * skipped.
 */
export async function measureTun(quick: boolean): Promise<TunFigures | null> {
  try {
    cleanupNamespaces()
    deleteNamespace(createNamespace())
  } catch (err) {
    console.log(`stack.bench: skipping the TUN entry, network namespaces are unavailable (needs root): ${(err as Error).message}`)
    return null
  }
  const { stackToKernelGbps, kernelToStackGbps } = await stackThroughTun(quick ? 8 << 20 : 64 << 20)
  const kernelVethGbps = await kernelOverVeth(quick ? 1 : 3)
  return { stackToKernelGbps, kernelToStackGbps, kernelVethGbps }
}
