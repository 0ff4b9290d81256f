import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { afterEach, describe, expect, it } from 'vitest'
import { createMemoryWire } from '../../nexus/ports/memory.js'
import type { NexusPort } from '../../nexus/ports/port.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import type { StackSocket } from '../../stacks/sockets/net.js'

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

/** Two stacks on a memory wire. DAD is off unless asked for: it costs about a second per stack. */
async function pair(options: { dad?: boolean } = {}): Promise<[Stack, Stack]> {
  const [portA, portB] = createMemoryWire({ linkType: 'ethernet' })
  const dad = options.dad ?? false
  const a = await createStack({ port: portA, addresses: ['198.51.100.1/24', '2001:db8::1/64'], dad })
  const b = await createStack({ port: portB, addresses: ['198.51.100.2/24', '2001:db8::2/64'], dad })
  cleanups.push(async () => {
    await a.close()
    await b.close()
    await closePort(portA)
    await closePort(portB)
  })
  return [a, b]
}

async function closePort(port: NexusPort): Promise<void> {
  await port.close()
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A server on `port` of `stack` that hands over its first connection (closed at cleanup). */
function acceptOne(stack: Stack, port: number): Promise<StackSocket> {
  return new Promise((resolve) => {
    const server = stack.net.createServer((socket) => resolve(socket))
    server.listen(port)
    cleanups.push(async () => void server.close())
  })
}

async function readAll(socket: StackSocket): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of socket) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

describe('stack.net over a memory wire', () => {
  for (const [family, serverHost] of [['IPv4', '198.51.100.1'], ['IPv6', '2001:db8::1']] as const) {
    it(`echoes 2 MB over ${family} with content intact and Node-shaped socket fields`, async () => {
      // IPv6 runs with DAD: createStack resolves only once the addresses are usable.
      const [a, b] = await pair({ dad: family === 'IPv6' })
      if (family === 'IPv6') expect(a.shell.core.addresses.every((address) => address.state === 'preferred')).toBe(true)
      const server = a.net.createServer((socket) => socket.pipe(socket))
      server.listen(7000, serverHost)
      await once(server, 'listening')
      expect(server.address()).toEqual({ address: serverHost, family, port: 7000 })

      const payload = randomBytes(2 * 1024 * 1024)
      const client = b.net.connect({ host: serverHost, port: 7000 })
      await once(client, 'connect')
      expect(client.remoteAddress).toBe(serverHost)
      expect(client.remotePort).toBe(7000)
      expect(client.remoteFamily).toBe(family)
      expect(client.localPort).toBeGreaterThanOrEqual(1024)
      const closed = once(client, 'close')
      const received = readAll(client)
      client.end(payload)
      const echoed = await received
      expect(echoed.length).toBe(payload.length)
      expect(sha256(echoed)).toBe(sha256(payload))
      expect(client.bytesWritten).toBe(payload.length)
      expect(client.bytesRead).toBe(payload.length)
      const [hadError] = (await closed) as [boolean]
      expect(hadError).toBe(false)
      expect(client.bytesRead).toBe(payload.length) // still readable after destroy
      server.close()
      await once(server, 'close')
    })
  }

  it('refuses a connection to a closed port with ECONNREFUSED shaped like node:net', async () => {
    const [, b] = await pair()
    const client = b.net.connect(7001, '198.51.100.1')
    const [err] = (await once(client, 'error')) as [NodeJS.ErrnoException & { address: string; port: number }]
    expect(err.code).toBe('ECONNREFUSED')
    expect(err.errno).toBe(-111)
    expect(err.syscall).toBe('connect')
    expect(err.address).toBe('198.51.100.1')
    expect(err.port).toBe(7001)
    expect(err.message).toBe('connect ECONNREFUSED 198.51.100.1:7001')
  })

  it('reports EADDRINUSE for a second listener on the same port', async () => {
    const [a] = await pair()
    const first = a.net.createServer().listen(7002)
    await once(first, 'listening')
    const second = a.net.createServer().listen(7002)
    const [err] = (await once(second, 'error')) as [NodeJS.ErrnoException]
    expect(err.code).toBe('EADDRINUSE')
    expect(err.syscall).toBe('listen')
    first.close()
  })

  it('listen(0) picks a free port from the ephemeral range, different for each server', async () => {
    const [a] = await pair()
    const servers = [a.net.createServer().listen(0), a.net.createServer().listen(0), a.net.createServer().listen(0)]
    await Promise.all(servers.map((server) => once(server, 'listening')))
    const ports = servers.map((server) => server.address()!.port)
    for (const port of ports) {
      expect(port).toBeGreaterThanOrEqual(49152)
      expect(port).toBeLessThanOrEqual(65535)
    }
    expect(new Set(ports).size).toBe(3)
    for (const server of servers) server.close()
  })

  it('half-closes with allowHalfOpen and delivers the reply after our FIN', async () => {
    const [a, b] = await pair()
    const server = a.net.createServer({ allowHalfOpen: true }, (socket) => {
      const parts: Buffer[] = []
      socket.on('data', (d: Buffer) => parts.push(d))
      // Our read side ended (the client's FIN); our write side is still open.
      socket.on('end', () => socket.end(Buffer.concat([Buffer.from('got '), ...parts])))
    })
    server.listen(7003)
    await once(server, 'listening')
    const client = b.net.connect({ host: '198.51.100.1', port: 7003, allowHalfOpen: true })
    await once(client, 'connect')
    client.end('hello')
    expect((await readAll(client)).toString()).toBe('got hello')
    server.close()
  })

  it('applies backpressure: a paused reader stops the sender and resuming delivers everything', async () => {
    const [a, b] = await pair()
    let serverSocket: StackSocket | null = null
    const server = a.net.createServer((socket) => {
      serverSocket = socket
      socket.pause()
    })
    server.listen(7004)
    await once(server, 'listening')
    const client = b.net.connect(7004, '198.51.100.1')
    await once(client, 'connect')
    const chunk = Buffer.alloc(64 * 1024, 7)
    let writes = 0
    while (client.write(chunk) && writes < 1000) writes++
    expect(writes).toBeLessThan(1000) // write() returned false: the window closed
    await new Promise((r) => setTimeout(r, 50))
    const before = client.bytesWritten
    await new Promise((r) => setTimeout(r, 100))
    expect(client.bytesWritten).toBe(before) // nothing moves while paused
    const total = (writes + 1) * chunk.length
    client.end()
    const received = await readAll(serverSocket!.resume() as StackSocket)
    expect(received.length).toBe(total)
    server.close()
  })

  it('runs node:http and fetch over the stack', async () => {
    const [a, b] = await pair()
    const server = a.http.createServer((req, res) => {
      res.setHeader('content-type', 'text/plain')
      res.end(`hello ${req.method} ${req.url}`)
    })
    server.listen(8080)
    await once(server, 'listening')

    const body = await new Promise<string>((resolve, reject) => {
      b.http
        .get('http://198.51.100.1:8080/a', (res) => {
          let text = ''
          res.setEncoding('utf8')
          res.on('data', (d: string) => (text += d))
          res.on('end', () => resolve(text))
        })
        .on('error', reject)
    })
    expect(body).toBe('hello GET /a')

    const response = await b.fetch('http://[2001:db8::1]:8080/b', { method: 'POST', body: 'x' })
    expect(response.status).toBe(200)
    expect(await response.text()).toBe('hello POST /b')
    server.close()
  })

  it('writes of one turn share a segment: a node:http response (header, then body) is one segment, even with noDelay', async () => {
    const [a, b] = await pair()
    const body = Buffer.alloc(1024, 'flowstack ')
    const server = a.http.createServer((_req, res) => {
      res.setHeader('content-type', 'text/plain')
      res.end(body)
    })
    server.on('connection', (socket: StackSocket) => socket.setNoDelay(true))
    server.listen(8081)
    await once(server, 'listening')
    const client = b.net.connect({ host: '198.51.100.1', port: 8081 })
    client.setNoDelay(true)
    await once(client, 'connect')
    let received = ''
    const request = async (): Promise<void> => {
      received = ''
      const done = new Promise<void>((resolve) => {
        const onData = (d: Buffer): void => {
          received += d.toString('latin1')
          if (received.endsWith(body.toString('latin1'))) {
            client.off('data', onData)
            resolve()
          }
        }
        client.on('data', onData)
      })
      client.write('GET / HTTP/1.1\r\nhost: a\r\n\r\n')
      await done
    }
    await request() // the first exchange also carries the handshake's leftovers
    const before = a.stats().tcp.outSegs
    await request()
    expect(received.startsWith('HTTP/1.1 200 OK\r\n')).toBe(true)
    expect(a.stats().tcp.outSegs - before).toBe(1)

    // Three writes in one turn on a noDelay socket: one segment of 3 bytes.
    const serverSide = new Promise<StackSocket>((resolve) => {
      const raw = a.net.createServer((socket) => resolve(socket))
      raw.listen(8082)
      cleanups.push(async () => void raw.close())
    })
    const other = b.net.connect({ host: '198.51.100.1', port: 8082 })
    other.setNoDelay(true)
    await once(other, 'connect')
    const peer = await serverSide
    const segmentsBefore = b.stats().tcp.outSegs
    other.write('a')
    other.write('b')
    other.write('c')
    const [first] = (await once(peer, 'data')) as [Buffer]
    expect(first.toString()).toBe('abc')
    expect(b.stats().tcp.outSegs - segmentsBefore).toBe(1)
    other.destroy()
    client.destroy()
    server.close()
  })

  it('destroy(err) closes with FIN after what was written, as node:net does; data arriving afterwards is answered with RST', async () => {
    const [a, b] = await pair()
    const accepted = acceptOne(a, 8090)
    const client = b.net.connect({ host: '198.51.100.1', port: 8090, allowHalfOpen: true })
    await once(client, 'connect')
    const serverSide = await accepted
    serverSide.on('error', () => {})
    const body = randomBytes(200_000)
    serverSide.write(body)
    serverSide.destroy(new Error('handler failed'))
    // The peer reads every byte, then a clean end: no ECONNRESET.
    const received: Buffer[] = []
    client.on('data', (chunk: Buffer) => received.push(chunk))
    await once(client, 'end')
    expect(sha256(Buffer.concat(received))).toBe(sha256(body))
    // Still writing to the socket its peer destroyed: RFC 1122 4.2.2.13, an RST, and the writer learns it.
    const failed = once(client, 'error') as Promise<[NodeJS.ErrnoException]>
    client.write(randomBytes(1000))
    const [err] = await failed
    expect(err.code).toBe('ECONNRESET')
    expect(a.stats().tcp.abortOnData).toBe(1)
  })

  it("stack.http's Agent sets TCP_NODELAY on its sockets, as Node's Agent does (fetch, whose connector sets it too, still works)", async () => {
    const [a, b] = await pair()
    const server = a.http.createServer((_req, res) => res.end('ok'))
    server.listen(8091)
    await once(server, 'listening')
    cleanups.push(async () => void server.close())
    const sockets: StackSocket[] = []
    const agent = new b.http.Agent({ keepAlive: true })
    const req = b.http.get('http://198.51.100.1:8091/', { agent }, (res) => res.resume())
    req.on('socket', (socket) => sockets.push(socket as unknown as StackSocket))
    await once(req, 'close')
    expect((sockets[0] as unknown as { noDelay: boolean }).noDelay).toBe(true)
    agent.destroy()
    const before = b.stats().tcp.activeOpens
    expect(await (await b.fetch('http://198.51.100.1:8091/')).text()).toBe('ok')
    expect(b.stats().tcp.activeOpens - before).toBe(1)
  })

  it("stack.http's server closes as node:http's does: 'close' and the callback after in-flight responses, one listener per event across listen retries, ref/unref", async () => {
    const [a, b] = await pair()
    const order: string[] = []
    let release: () => void = () => {}
    const server = a.http.createServer((_req, res) => {
      release = () => res.end('late')
    })
    // A retry after EADDRINUSE: the second attempt's events fire once each.
    const blocker = a.net.createServer().listen(8092)
    await once(blocker, 'listening')
    let errors = 0
    let listening = 0
    server.on('error', () => errors++)
    server.on('listening', () => listening++)
    server.listen(8092)
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(errors).toBe(1)
    blocker.close()
    server.listen(8092)
    await once(server, 'listening')
    expect([errors, listening]).toEqual([1, 1])
    expect(server.unref()).toBe(server)
    server.ref()

    const agent = new b.http.Agent({ keepAlive: true })
    const response = new Promise<string>((resolve) => {
      b.http.get('http://198.51.100.1:8092/', { agent }, (res) => {
        let body = ''
        res.on('data', (chunk: Buffer) => (body += chunk.toString()))
        res.on('end', () => {
          order.push('response')
          resolve(body)
        })
      })
    })
    await new Promise((resolve) => setTimeout(resolve, 50))
    server.on('close', () => order.push('close event'))
    const closed = new Promise<Error | undefined>((resolve) => server.close((err) => resolve(err)))
    expect(server.listening).toBe(false)
    await new Promise((resolve) => setTimeout(resolve, 30))
    expect(order).toEqual([]) // the request is still in flight: no 'close' yet
    release()
    expect(await response).toBe('late')
    agent.destroy()
    expect(await closed).toBeUndefined()
    expect(order).toEqual(['response', 'close event'])
    // Closing a server that is not running: ERR_SERVER_NOT_RUNNING, as node:http.
    await expect(new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve(undefined))))).rejects.toMatchObject({ code: 'ERR_SERVER_NOT_RUNNING' })
  })

  it('listens again after close() while an old connection drains, and accepts new connections (net.Server does)', async () => {
    const [a, b] = await pair()
    const server = a.net.createServer((socket) => {
      socket.on('error', () => {}) // the test resets its clients at the end
      socket.end('hi')
    })
    server.listen(8093)
    await once(server, 'listening')
    const old = b.net.connect({ host: '198.51.100.1', port: 8093, allowHalfOpen: true })
    // The server has it (closing a listener resets connections it has not accepted yet, as Linux does).
    await Promise.all([once(old, 'connect'), once(server, 'connection')])
    server.close()
    server.listen(8093)
    await once(server, 'listening')
    const fresh = b.net.connect({ host: '198.51.100.1', port: 8093 })
    const [greeting] = (await once(fresh, 'data')) as [Buffer]
    expect(greeting.toString()).toBe('hi')
    old.destroy()
    fresh.destroy()
    server.close()
  })

  it('fails a connect with no route at once with ENETUNREACH, as connect(2) does (no SYN retried into the void)', async () => {
    const [, b] = await pair()
    for (const host of ['203.0.113.7', '127.0.0.1']) {
      const socket = b.net.connect({ host, port: 80 })
      const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException]
      expect(err).toMatchObject({ code: 'ENETUNREACH', syscall: 'connect', address: host, port: 80 })
    }
  })

  it('bytesWritten counts what write() took, queued or not, as net.Socket does', async () => {
    const [a, b] = await pair()
    const accepted = acceptOne(a, 8094)
    const client = b.net.connect({ host: '198.51.100.1', port: 8094 })
    await once(client, 'connect')
    const peer = await accepted
    peer.pause() // nobody reads: most of it stays queued
    client.write(Buffer.alloc(1_000_000))
    client.write('abc')
    expect(client.bytesWritten).toBe(1_000_003)
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(client.bytesWritten).toBe(1_000_003)
    client.destroy()
    peer.destroy()
  })
})
