// Two flowstack stacks talking TCP, next to the kernel's loopback TCP through
// node:net measured in the same run (issue 4):
//   1. bulk throughput, one connection (Gbit/s of payload);
//   2. 64-byte request/response, one connection, one message in flight
//      (round trips/s);
//   3. connections per second (connect, 1 byte each way, close; a few in
//      flight);
// each with both stacks in this thread on one memory wire, and with each
// stack in its own worker thread (the wire's pump stays in this thread, as
// in the runtime); and
//   4. TCP through a TUN port with the kernel as the peer, next to the kernel
//      talking to itself over a veth pair (stack-tun.ts; needs root, skipped
//      with a printed note otherwise).
// The workloads are the same JavaScript for node:net and stack.net
// (stack-roles.ts).
import * as nodeNet from 'node:net'
import type { Worker } from 'node:worker_threads'
import { startWorker } from '../common/worker-url.js'
import { createMemoryWire, type MemoryPort } from '../nexus/ports/memory.js'
import { createStack, type Stack } from '../stacks/sockets/stack.js'
import { runBulk, runConnections, runPingPong, startServers, type NetLike } from './stack-roles.js'
import { measureTun } from './stack-tun.js'
import type { StackWorkerCommand, StackWorkerData, StackWorkerReply } from './stack-worker.js'
import type { BenchOptions, BenchResult } from './types.js'

const SERVER_ADDRESS = '198.51.100.1'
const CLIENT_ADDRESS = '198.51.100.2'
const LOOPBACK = '127.0.0.1'

interface Plan {
  bulkBytes: number
  pingPongMs: number
  warmupMs: number
  connectionsMs: number
  concurrency: number
  maxConnections: number
}

const FULL: Plan = { bulkBytes: 64 << 20, pingPongMs: 1000, warmupMs: 200, connectionsMs: 1000, concurrency: 4, maxConnections: 20_000 }
const QUICK: Plan = { bulkBytes: 4 << 20, pingPongMs: 200, warmupMs: 50, connectionsMs: 200, concurrency: 4, maxConnections: 2_000 }
const MAX_ROUNDS = 1_000_000
/** A transfer slower than this is a stall, reported as an error rather than a figure. */
const BULK_TIMEOUT_MS = 30_000

interface Figures {
  bulkGbps: number
  roundTripsPerSecond: number
  connectionsPerSecond: number
}

/** Runs the three workloads from `client` against servers already listening on `host`. */
async function measure(client: NetLike, host: string, plan: Plan): Promise<Figures> {
  // A short transfer first: JIT warm-up and congestion window growth are not what we measure.
  await runBulk(client, host, Math.min(plan.bulkBytes, 2 << 20), BULK_TIMEOUT_MS)
  const bulkGbps = await runBulk(client, host, plan.bulkBytes, BULK_TIMEOUT_MS)
  const roundTripsPerSecond = await runPingPong(client, host, plan.pingPongMs, plan.warmupMs, MAX_ROUNDS)
  const connectionsPerSecond = await runConnections(client, host, plan.connectionsMs, plan.concurrency, plan.maxConnections)
  return { bulkGbps, roundTripsPerSecond, connectionsPerSecond }
}

async function kernelLoopback(plan: Plan): Promise<Figures> {
  const net = nodeNet as unknown as NetLike
  const servers = await startServers(net, LOOPBACK)
  try {
    return await measure(net, LOOPBACK, plan)
  } finally {
    await servers.close()
  }
}

async function stacksInThisThread(plan: Plan): Promise<Figures> {
  const [serverPort, clientPort] = createMemoryWire({ linkType: 'ethernet' })
  let server: Stack | null = null
  let client: Stack | null = null
  try {
    server = await createStack({ port: serverPort, addresses: [`${SERVER_ADDRESS}/24`], dad: false })
    client = await createStack({ port: clientPort, addresses: [`${CLIENT_ADDRESS}/24`], dad: false })
    const servers = await startServers(server.net as unknown as NetLike, SERVER_ADDRESS)
    try {
      return await measure(client.net as unknown as NetLike, SERVER_ADDRESS, plan)
    } finally {
      await servers.close()
    }
  } finally {
    await client?.close()
    await server?.close()
    await clientPort.close()
    await serverPort.close()
  }
}

/** A stack in a worker thread, driven by one command at a time. */
class StackWorker {
  private readonly worker: Worker
  private waiting: { resolve(value: number): void; reject(err: Error): void } | null = null
  private failure: Error | null = null
  readonly ready: Promise<number>

  constructor(port: MemoryPort, address: string) {
    const data: StackWorkerData = { handle: port.transfer(), address }
    this.worker = startWorker('./stack-worker.js', import.meta.url, { workerData: data })
    this.ready = this.next()
    this.worker.on('message', (reply: StackWorkerReply) => {
      const waiting = this.waiting
      this.waiting = null
      if (waiting === null) return
      if (reply.ok) waiting.resolve(reply.value)
      else waiting.reject(new Error(`stack worker ${address}: ${reply.error}`))
    })
    const fail = (err: Error): void => {
      this.failure = err
      this.waiting?.reject(err)
      this.waiting = null
    }
    this.worker.on('error', fail)
    this.worker.on('exit', (code) => fail(new Error(`stack worker ${address} exited (code ${code})`)))
  }

  private next(): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      if (this.failure !== null) reject(this.failure)
      else this.waiting = { resolve, reject }
    })
  }

  run(command: StackWorkerCommand): Promise<number> {
    const reply = this.next()
    this.worker.postMessage(command)
    return reply
  }

  async close(): Promise<void> {
    await this.run({ cmd: 'close' }).catch(() => 0)
    await this.worker.terminate()
  }
}

async function stacksInTwoWorkers(plan: Plan): Promise<Figures> {
  const [serverPort, clientPort] = createMemoryWire({ linkType: 'ethernet' })
  const server = new StackWorker(serverPort, `${SERVER_ADDRESS}/24`)
  const client = new StackWorker(clientPort, `${CLIENT_ADDRESS}/24`)
  try {
    await Promise.all([server.ready, client.ready])
    await server.run({ cmd: 'serve' })
    const host = SERVER_ADDRESS
    await client.run({ cmd: 'bulk', host, bytes: Math.min(plan.bulkBytes, 2 << 20), timeoutMs: BULK_TIMEOUT_MS })
    const bulkGbps = await client.run({ cmd: 'bulk', host, bytes: plan.bulkBytes, timeoutMs: BULK_TIMEOUT_MS })
    const roundTripsPerSecond = await client.run({ cmd: 'pingpong', host, durationMs: plan.pingPongMs, warmupMs: plan.warmupMs, maxRounds: MAX_ROUNDS })
    const connectionsPerSecond = await client.run({
      cmd: 'connections',
      host,
      durationMs: plan.connectionsMs,
      concurrency: plan.concurrency,
      maxConnections: plan.maxConnections,
    })
    return { bulkGbps, roundTripsPerSecond, connectionsPerSecond }
  } finally {
    await client.close()
    await server.close()
    await clientPort.close()
    await serverPort.close()
  }
}

export default async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const plan = opts.quick ? QUICK : FULL
  const kernel = await kernelLoopback(plan)
  const sameThread = await stacksInThisThread(plan)
  const twoWorkers = await stacksInTwoWorkers(plan)
  const loopback = 'node:net over kernel loopback'
  const results: BenchResult[] = []
  for (const [where, figures] of [['same thread', sameThread], ['two workers', twoWorkers]] as const) {
    results.push(
      {
        name: `stack TCP bulk, memory wire, ${where}`,
        value: figures.bulkGbps,
        unit: 'Gbit/s',
        baseline: loopback,
        baselineValue: kernel.bulkGbps,
        higherIsBetter: true,
      },
      {
        name: `stack TCP 64 B ping-pong, memory wire, ${where}`,
        value: figures.roundTripsPerSecond,
        unit: 'round trips/s',
        baseline: loopback,
        baselineValue: kernel.roundTripsPerSecond,
        higherIsBetter: true,
      },
      {
        name: `stack TCP connections (${plan.concurrency} in flight), memory wire, ${where}`,
        value: figures.connectionsPerSecond,
        unit: 'connections/s',
        baseline: loopback,
        baselineValue: kernel.connectionsPerSecond,
        higherIsBetter: true,
      },
    )
  }
  const tun = await measureTun(opts.quick)
  if (tun !== null) {
    const veth = 'kernel to kernel over veth (iperf3)'
    results.push(
      {
        name: 'stack TCP bulk to a kernel socket through TUN',
        value: tun.stackToKernelGbps,
        unit: 'Gbit/s',
        baseline: veth,
        baselineValue: tun.kernelVethGbps,
        higherIsBetter: true,
      },
      {
        name: 'stack TCP bulk from a kernel socket through TUN',
        value: tun.kernelToStackGbps,
        unit: 'Gbit/s',
        baseline: veth,
        baselineValue: tun.kernelVethGbps,
        higherIsBetter: true,
      },
    )
  }
  return results
}
