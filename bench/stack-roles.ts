// The workloads of bench/stack.bench.ts, written once against the subset of
// the node:net API that both `node:net` and `stack.net` offer, so the kernel
// baseline and our stack run exactly the same JavaScript:
//   - bulk: the client writes `bytes` zeros (respecting backpressure) and
//     ends; the server's sink counts them and answers one byte at EOF, so the
//     client's clock stops only once every byte has arrived;
//   - ping-pong: the client sends a 64-byte message, the server echoes it,
//     the client waits for all 64 bytes before the next one;
//   - connections: connect, 1 byte each way, close, with a small number of
//     connections in flight.
// Every loop is bounded in count and in time.
import { once, type EventEmitter } from 'node:events'
import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'

/** What the workloads need of a socket: a Duplex with setNoDelay. */
export type BenchSocket = Duplex & { setNoDelay(noDelay?: boolean): unknown }

export interface BenchServer extends EventEmitter {
  listen(port: number, host: string): unknown
  close(): unknown
}

/** node:net and stack.net both satisfy this. */
export interface NetLike {
  createServer(connectionListener: (socket: BenchSocket) => void): BenchServer
  connect(options: { host: string; port: number }): BenchSocket
}

export const SINK_PORT = 5001
export const ECHO_PORT = 5002
export const ACCEPT_PORT = 5003
export const MESSAGE_BYTES = 64
const CHUNK_BYTES = 64 * 1024
const CONNECT_TIMEOUT_MS = 10_000

export interface BenchServers {
  close(): Promise<void>
}

/** Listens on the sink, echo and accept ports of `host`. */
export async function startServers(net: NetLike, host: string): Promise<BenchServers> {
  const servers: BenchServer[] = []
  const sink = net.createServer((socket) => {
    socket.on('data', () => {})
    socket.on('error', () => {})
    socket.on('end', () => socket.end(Buffer.of(1)))
  })
  const echo = net.createServer((socket) => {
    socket.setNoDelay(true)
    socket.on('error', () => {})
    socket.on('data', (data: Buffer) => socket.write(data))
    socket.on('end', () => socket.end())
  })
  const accept = net.createServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', () => socket.end(Buffer.of(2)))
    socket.on('data', () => {})
  })
  for (const [server, port] of [[sink, SINK_PORT], [echo, ECHO_PORT], [accept, ACCEPT_PORT]] as const) {
    const listening = once(server, 'listening')
    server.listen(port, host)
    await listening
    servers.push(server)
  }
  return {
    async close() {
      for (const server of servers) {
        const closed = once(server, 'close')
        server.close()
        await closed
      }
    },
  }
}

async function connected(net: NetLike, host: string, port: number): Promise<BenchSocket> {
  const socket = net.connect({ host, port })
  try {
    await deadline(
      Promise.race([
        once(socket, 'connect'),
        once(socket, 'error').then(([err]) => {
          throw err
        }),
      ]),
      CONNECT_TIMEOUT_MS,
      `connect to ${host}:${port}`,
    )
  } catch (err) {
    socket.destroy()
    throw err
  }
  return socket
}

function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)
    }),
  ]).finally(() => clearTimeout(timer))
}

/**
 * Sends `bytes` to the sink in 64 KiB writes and waits for its byte at EOF.
 * Returns Gbit/s of payload. Fails (rather than reporting a figure) when the
 * transfer stalls past `timeoutMs`.
 */
export async function runBulk(net: NetLike, host: string, bytes: number, timeoutMs: number): Promise<number> {
  const socket = await connected(net, host, SINK_PORT)
  socket.on('error', () => {})
  const chunk = Buffer.alloc(CHUNK_BYTES)
  const answered = once(socket, 'data')
  const start = performance.now()
  const work = (async () => {
    let sent = 0
    while (sent < bytes) {
      const size = Math.min(CHUNK_BYTES, bytes - sent)
      sent += size
      if (!socket.write(size === CHUNK_BYTES ? chunk : chunk.subarray(0, size))) await once(socket, 'drain')
    }
    socket.end()
    await answered
  })()
  try {
    await deadline(work, timeoutMs, `bulk transfer of ${bytes} bytes`)
  } finally {
    socket.destroy()
  }
  const seconds = (performance.now() - start) / 1000
  return (bytes * 8) / seconds / 1e9
}

/**
 * One connection, one 64-byte message in flight: round trips per second over
 * `durationMs` (after `warmupMs` of the same traffic), at most `maxRounds`.
 */
export async function runPingPong(net: NetLike, host: string, durationMs: number, warmupMs: number, maxRounds: number): Promise<number> {
  const socket = await connected(net, host, ECHO_PORT)
  socket.setNoDelay(true)
  socket.on('error', () => {})
  const message = Buffer.alloc(MESSAGE_BYTES, 0x61)
  let pending = 0
  let wake: (() => void) | null = null
  socket.on('data', (data: Buffer) => {
    pending -= data.length
    if (pending <= 0 && wake !== null) {
      const w = wake
      wake = null
      w()
    }
  })
  const roundTrip = (): Promise<void> =>
    new Promise<void>((resolve) => {
      wake = resolve
      pending += MESSAGE_BYTES
      socket.write(message)
    })
  const work = (async () => {
    const warmEnd = performance.now() + warmupMs
    let rounds = 0
    while (performance.now() < warmEnd && rounds < maxRounds) {
      await roundTrip()
      rounds++
    }
    const start = performance.now()
    const end = start + durationMs
    let counted = 0
    while (counted < maxRounds) {
      await roundTrip()
      counted++
      // Reading the clock costs ~50 ns; every 16th round keeps it out of the figure.
      if ((counted & 15) === 0 && performance.now() >= end) break
    }
    return counted / ((performance.now() - start) / 1000)
  })()
  try {
    return await deadline(work, durationMs + warmupMs + 10_000, 'ping-pong')
  } finally {
    socket.destroy()
  }
}

/**
 * Connections per second: each connects to the accept server, writes one
 * byte, reads its byte, ends, and waits for close; `concurrency` in flight,
 * until `durationMs` has passed or `maxConnections` were made.
 */
export async function runConnections(net: NetLike, host: string, durationMs: number, concurrency: number, maxConnections: number): Promise<number> {
  let started = 0
  let completed = 0
  const start = performance.now()
  const end = start + durationMs
  const oneConnection = async (): Promise<void> => {
    const socket = await connected(net, host, ACCEPT_PORT)
    const closed = once(socket, 'close')
    socket.on('data', () => socket.end())
    socket.write(Buffer.of(1))
    await closed
  }
  const lane = async (): Promise<void> => {
    while (started < maxConnections && performance.now() < end) {
      started++
      await oneConnection()
      completed++
    }
  }
  const lanes: Promise<void>[] = []
  for (let i = 0; i < concurrency; i++) lanes.push(lane())
  await deadline(Promise.all(lanes), durationMs + 10_000, 'connection loop')
  return completed / ((performance.now() - start) / 1000)
}
