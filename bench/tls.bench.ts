// TLS inside an instance: bulk throughput and full handshakes per second
// between two stacks on a memory wire (stack.tls over user-space TCP, both in
// this thread), next to node:tls over kernel loopback TCP in the same process
// and the same run. TLS 1.3, P-256 certificate made with openssl at start.
import { execFileSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import * as tls from 'node:tls'
import { createMemoryWire } from '../nexus/ports/memory.js'
import { createStack } from '../stacks/sockets/stack.js'
import type { BenchOptions, BenchResult } from './types.js'

interface Identity {
  cert: string
  key: string
}

function makeIdentity(): Identity {
  const dir = mkdtempSync(join(tmpdir(), 'fs-tls-bench-'))
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', 'key.pem', '-out', 'cert.pem',
      '-subj', '/CN=bench.test', '-days', '1', '-addext', 'subjectAltName=DNS:bench.test'], { cwd: dir, stdio: 'ignore', timeout: 20_000 })
    return { cert: readFileSync(join(dir, 'cert.pem'), 'utf8'), key: readFileSync(join(dir, 'key.pem'), 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

interface Side {
  createServer(options: tls.TlsOptions, listener: (socket: tls.TLSSocket) => void): tls.Server
  connect(options: tls.ConnectionOptions): tls.TLSSocket
  host: string
  close(): Promise<void>
}

async function stackSide(identity: Identity): Promise<Side> {
  const [portA, portB] = createMemoryWire({ linkType: 'ethernet' })
  const server = await createStack({ port: portA, addresses: ['198.51.100.1/24'], dad: false, tls: { identity, minVersion: 'TLSv1.3' } })
  const client = await createStack({ port: portB, addresses: ['198.51.100.2/24'], dad: false, tls: { ca: [identity.cert] } })
  return {
    createServer: (options, listener) => server.tls.createServer(options, listener),
    connect: (options) => client.tls.connect(options),
    host: '198.51.100.1',
    close: async () => {
      await client.close()
      await server.close()
      await portA.close()
      await portB.close()
    },
  }
}

function kernelSide(identity: Identity): Side {
  return {
    createServer: (options, listener) => tls.createServer({ ...options, cert: identity.cert, key: identity.key, minVersion: 'TLSv1.3' }, listener),
    connect: (options) => tls.connect({ ...options, ca: [identity.cert] }),
    host: '127.0.0.1',
    close: async () => {},
  }
}

async function listen(server: tls.Server, host: string): Promise<number> {
  server.listen(0, host)
  await once(server, 'listening')
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no address')
  return address.port
}

/** Server sends `bytes` in 64 KiB writes; returns Gbit/s as seen by the client. */
async function bulk(side: Side, bytes: number, port: number): Promise<number> {
  const chunk = Buffer.alloc(65536, 0x5a)
  const server = side.createServer({}, (socket) => {
    socket.on('error', () => {})
    let sent = 0
    const pump = (): void => {
      while (sent < bytes) {
        sent += chunk.length
        if (!socket.write(chunk)) {
          socket.once('drain', pump)
          return
        }
      }
      socket.end()
    }
    pump()
  })
  const listenPort = port === 0 ? await listen(server, side.host) : (server.listen(port, side.host), await once(server, 'listening'), port)
  const client = side.connect({ host: side.host, port: listenPort, servername: 'bench.test' })
  client.on('error', () => {})
  await once(client, 'secureConnect')
  const start = performance.now()
  let received = 0
  client.on('data', (d: Buffer) => (received += d.length))
  await once(client, 'end')
  const seconds = (performance.now() - start) / 1000
  client.destroy()
  server.close()
  if (received !== bytes) throw new Error(`bulk: received ${received} of ${bytes}`)
  return (bytes * 8) / seconds / 1e9
}

/** Sequential full handshakes (no resumption) for `ms`; returns handshakes/s. */
async function handshakes(side: Side, ms: number, port: number): Promise<number> {
  const server = side.createServer({}, (socket) => {
    socket.on('error', () => {})
    socket.end()
  })
  const listenPort = port === 0 ? await listen(server, side.host) : (server.listen(port, side.host), await once(server, 'listening'), port)
  const start = performance.now()
  let count = 0
  while (performance.now() - start < ms && count < 100_000) {
    const client = side.connect({ host: side.host, port: listenPort, servername: 'bench.test' })
    client.on('error', () => {})
    await once(client, 'secureConnect')
    client.destroy()
    count++
  }
  const seconds = (performance.now() - start) / 1000
  server.close()
  return count / seconds
}

export default async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const identity = makeIdentity()
  const bytes = opts.quick ? 8 * 1024 * 1024 : 128 * 1024 * 1024
  const handshakeMs = opts.quick ? 400 : 3_000
  const stack = await stackSide(identity)
  const kernel = kernelSide(identity)
  try {
    // Warm-up (JIT, OpenSSL contexts), then measure.
    await bulk(stack, 2 * 1024 * 1024, 9001)
    await bulk(kernel, 2 * 1024 * 1024, 0)
    const stackBulk = await bulk(stack, bytes, 9002)
    const kernelBulk = await bulk(kernel, bytes, 0)
    const stackHandshakes = await handshakes(stack, handshakeMs, 9003)
    const kernelHandshakes = await handshakes(kernel, handshakeMs, 0)
    return [
      {
        name: 'TLS 1.3 bulk, stack.tls between two stacks on a memory wire (one thread)',
        value: stackBulk,
        unit: 'Gbit/s',
        baseline: 'node:tls over kernel loopback TCP (one process)',
        baselineValue: kernelBulk,
        higherIsBetter: true,
      },
      {
        name: 'TLS 1.3 full handshakes, stack.tls on a memory wire (sequential)',
        value: stackHandshakes,
        unit: 'handshakes/s',
        baseline: 'node:tls over kernel loopback TCP (sequential)',
        baselineValue: kernelHandshakes,
        higherIsBetter: true,
      },
    ]
  } finally {
    await stack.close()
  }
}
