import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type * as tls from 'node:tls'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createMemorySwitch, createMemoryWire } from '../../nexus/ports/memory.js'
import type { StackSocket } from '../../stacks/sockets/net.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import { keyLogErrorChannel, loadTlsDefaults, type TlsConfigError, type TlsDefaults } from '../../stacks/sockets/tls.js'
import { makeTestCerts, type TestCerts } from '../fixtures/tls/certs.js'

let certs: TestCerts
beforeAll(() => {
  certs = makeTestCerts()
})
afterAll(() => certs.cleanup())

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!()
})

const SERVER = '198.51.100.1'
const SERVER6 = '2001:db8::1'

/** Server stack a (198.51.100.1) and client stack b (198.51.100.2) on a memory wire. */
async function pair(serverTls: TlsDefaults, clientTls: TlsDefaults = { ca: [certs.ca.cert] }): Promise<[Stack, Stack]> {
  const [portA, portB] = createMemoryWire({ linkType: 'ethernet' })
  const a = await createStack({ port: portA, addresses: [`${SERVER}/24`, `${SERVER6}/64`], dad: false, tls: serverTls })
  const b = await createStack({ port: portB, addresses: ['198.51.100.2/24', '2001:db8::2/64'], dad: false, tls: clientTls })
  cleanups.push(async () => {
    await a.close()
    await b.close()
    await portA.close()
    await portB.close()
  })
  return [a, b]
}

function serverDefaults(extra: TlsDefaults = {}): TlsDefaults {
  return { identity: { cert: certs.server.cert, key: certs.server.key }, ca: [certs.ca.cert], ...extra }
}

async function listen(server: tls.Server, port: number, host = SERVER): Promise<void> {
  // Resets when the stacks close at the end of a test are expected.
  server.on('secureConnection', (socket: tls.TLSSocket) => socket.on('error', () => {}))
  server.listen(port, host)
  await once(server, 'listening')
  // Not awaited: open connections are aborted by the stacks' close() that runs next.
  cleanups.push(async () => void server.close())
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

/** Resolves with the socket once connected, or with the error that ended it. */
function settle(socket: tls.TLSSocket): Promise<{ ok: true } | { ok: false; err: NodeJS.ErrnoException }> {
  return new Promise((resolve) => {
    socket.once('secureConnect', () => resolve({ ok: true }))
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, err }))
    socket.once('close', () => resolve({ ok: false, err: Object.assign(new Error('closed before the handshake finished'), { code: 'CLOSED' }) }))
  })
}

/** Round trip of one line: with TLS 1.3 a refused client certificate shows only on the first read. */
function echoOnce(socket: tls.TLSSocket): Promise<string | NodeJS.ErrnoException> {
  return new Promise((resolve) => {
    socket.once('data', (d: Buffer) => resolve(d.toString()))
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err))
    socket.once('close', () => resolve(Object.assign(new Error('closed without data'), { code: 'CLOSED' })))
    socket.write('ping')
  })
}

describe('stack.tls over a memory wire', () => {
  for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
    it(`${version} handshake with the configured chain, ALPN and verified name; echo intact`, async () => {
      const [a, b] = await pair(serverDefaults({ alpn: ['h2', 'http/1.1'], minVersion: 'TLSv1.2' }))
      const server = a.tls.createServer({ maxVersion: version }, (socket) => socket.pipe(socket))
      await listen(server, 8443)
      const secured = once(server, 'secureConnection')
      const client = b.tls.connect({ host: SERVER, port: 8443, servername: 'server.test', ALPNProtocols: ['x-unknown', 'http/1.1'] })
      const result = await settle(client)
      expect(result).toEqual({ ok: true })
      expect(client.getProtocol()).toBe(version)
      expect(client.authorized).toBe(true)
      expect(client.alpnProtocol).toBe('http/1.1')
      const peer = client.getPeerCertificate(true)
      expect(peer.subject.CN).toBe('server.test')
      expect(peer.issuerCertificate.subject.CN).toBe('flowstack test CA')
      expect(client.remoteAddress).toBe(SERVER)
      expect(client.remotePort).toBe(8443)
      const [serverSocket] = (await secured) as [tls.TLSSocket]
      expect(serverSocket.remoteAddress).toBe('198.51.100.2')
      expect(serverSocket.alpnProtocol).toBe('http/1.1')

      const payload = randomBytes(300_000)
      const chunks: Buffer[] = []
      client.on('data', (d: Buffer) => chunks.push(d))
      client.end(payload)
      await once(client, 'end')
      expect(Buffer.concat(chunks).length).toBe(payload.length)
      expect(sha256(Buffer.concat(chunks))).toBe(sha256(payload))
    })
  }

  it('verifies an IPv6 literal against the IP SANs (no servername)', async () => {
    const [a, b] = await pair(serverDefaults())
    const server = a.tls.createServer((socket) => socket.end('v6'))
    await listen(server, 8443, SERVER6)
    const client = b.tls.connect({ host: SERVER6, port: 8443 })
    expect(await settle(client)).toEqual({ ok: true })
    expect(client.servername).toBeFalsy()
    expect(client.remoteFamily).toBe('IPv6')
    client.destroy()
  })

  it('two instances with different certificates on different addresses, same TCP port, one segment: each presents its own', async () => {
    const segment = createMemorySwitch()
    const one = await createStack({ port: segment.addPort(), addresses: ['198.51.100.1/24'], dad: false, tls: serverDefaults() })
    const two = await createStack({ port: segment.addPort(), addresses: ['198.51.100.4/24'], dad: false, tls: { identity: { cert: certs.other.cert, key: certs.other.key } } })
    const client = await createStack({ port: segment.addPort(), addresses: ['198.51.100.2/24'], dad: false, tls: { ca: [certs.ca.cert] } })
    cleanups.push(async () => {
      await client.close()
      await one.close()
      await two.close()
      await segment.close()
    })
    await listen(one.tls.createServer((socket) => socket.end('one')), 443, '198.51.100.1')
    await listen(two.tls.createServer((socket) => socket.end('two')), 443, '198.51.100.4')
    // Verified by IP SAN (no servername): each certificate names its own address only.
    for (const [host, cn, greeting] of [['198.51.100.1', 'server.test', 'one'], ['198.51.100.4', 'other.test', 'two']] as const) {
      const socket = client.tls.connect({ host, port: 443 })
      expect(await settle(socket)).toEqual({ ok: true })
      expect(socket.getPeerCertificate().subject.CN).toBe(cn)
      const chunks: Buffer[] = []
      socket.on('data', (d: Buffer) => chunks.push(d))
      await once(socket, 'end')
      expect(Buffer.concat(chunks).toString()).toBe(greeting)
    }
  })

  it('selects the SNI certificate by server name, the default otherwise', async () => {
    const [a, b] = await pair(serverDefaults({ sni: [{ serverName: 'other.test', cert: certs.other.cert, key: certs.other.key }] }))
    const server = a.tls.createServer((socket) => socket.end())
    await listen(server, 8443)
    for (const [servername, expected] of [['other.test', 'other.test'], ['server.test', 'server.test'], ['x.apps.test', 'server.test']] as const) {
      const client = b.tls.connect({ host: SERVER, port: 8443, servername })
      expect(await settle(client)).toEqual({ ok: true })
      expect(client.getPeerCertificate().subject.CN).toBe(expected)
      client.destroy()
    }
  })

  it('client certificates: none, request, require', async () => {
    const clientIdentity = { ca: [certs.ca.cert], identity: { cert: certs.client.cert, key: certs.client.key } }
    const rogueIdentity = { ca: [certs.ca.cert], identity: { cert: certs.rogueClient.cert, key: certs.rogueClient.key } }
    for (const policy of ['none', 'request', 'require'] as const) {
      const [a, b] = await pair(serverDefaults({ clientCertificates: policy }))
      const seen: { authorized: boolean; cn: string | undefined }[] = []
      const server = a.tls.createServer((socket) => {
        seen.push({ authorized: socket.authorized, cn: (socket.getPeerCertificate() as Partial<tls.PeerCertificate>).subject?.CN as string | undefined })
        socket.pipe(socket)
      })
      await listen(server, 8443)
      const port = 8443

      const withCert = b.tls.connect({ host: SERVER, port, servername: 'server.test', ...clientTlsOptions(clientIdentity) })
      expect(await settle(withCert)).toEqual({ ok: true })
      expect(await echoOnce(withCert)).toBe('ping')
      withCert.destroy()

      const without = b.tls.connect({ host: SERVER, port, servername: 'server.test', cert: undefined, key: undefined })
      await settle(without)
      const withoutResult = await echoOnce(without)
      without.destroy()

      const rogue = b.tls.connect({ host: SERVER, port, servername: 'server.test', ...clientTlsOptions(rogueIdentity) })
      await settle(rogue)
      const rogueResult = await echoOnce(rogue)
      rogue.destroy()

      if (policy === 'none') {
        expect(seen.map((s) => s.cn)).toEqual([undefined, undefined, undefined])
        expect(withoutResult).toBe('ping')
        expect(rogueResult).toBe('ping')
      } else if (policy === 'request') {
        expect(seen).toEqual([
          { authorized: true, cn: 'client.test' },
          { authorized: false, cn: undefined },
          { authorized: false, cn: 'rogue-client.test' },
        ])
        expect(withoutResult).toBe('ping')
        expect(rogueResult).toBe('ping')
      } else {
        expect(seen).toEqual([{ authorized: true, cn: 'client.test' }])
        expect(withoutResult).toMatchObject({ code: 'ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED' })
        // As with node:tls over kernel TCP: the TLS 1.3 handshake finished on the client before the
        // server checked its certificate, so the server just closes and the client sees the end.
        expect(rogueResult).toMatchObject({ code: 'CLOSED' })
      }
    }
  })

  it("verification failures carry Node's error codes", async () => {
    const [a, b] = await pair(serverDefaults())
    const cases: [string, TlsDefaults['identity'], string | undefined, string][] = [
      ['wrong name', { cert: certs.server.cert, key: certs.server.key }, 'wrong.test', 'ERR_TLS_CERT_ALTNAME_INVALID'],
      ['unknown issuer', { cert: certs.untrusted.cert, key: certs.untrusted.key }, 'server.test', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'],
      ['untrusted root in chain', { cert: certs.untrusted.cert + certs.rogueCa.cert, key: certs.untrusted.key }, 'server.test', 'SELF_SIGNED_CERT_IN_CHAIN'],
      ['self-signed leaf', { cert: certs.selfSigned.cert, key: certs.selfSigned.key }, 'server.test', 'DEPTH_ZERO_SELF_SIGNED_CERT'],
      ['expired', { cert: certs.expired.cert, key: certs.expired.key }, 'server.test', 'CERT_HAS_EXPIRED'],
    ]
    let port = 9000
    for (const [what, identity, servername, code] of cases) {
      const server = a.tls.createServer({ cert: identity!.cert, key: identity!.key }, (socket) => socket.end())
      await listen(server, ++port)
      const client = b.tls.connect({ host: SERVER, port, servername })
      const result = await settle(client)
      expect({ what, code: result.ok ? 'connected' : result.err.code }).toEqual({ what, code })
      client.destroy()
    }
    // The same failures are ignorable on request, as with node:tls.
    const client = b.tls.connect({ host: SERVER, port, servername: 'server.test', rejectUnauthorized: false })
    expect(await settle(client)).toEqual({ ok: true })
    expect(client.authorized).toBe(false)
    expect(client.authorizationError).toBe('CERT_HAS_EXPIRED')
    client.destroy()
  })

  it('a refused TCP connection is the TLS socket error (ECONNREFUSED)', async () => {
    const [, b] = await pair(serverDefaults())
    const client = b.tls.connect({ host: SERVER, port: 9999 })
    const result = await settle(client)
    expect(result.ok).toBe(false)
    expect(result.ok === false && result.err.code).toBe('ECONNREFUSED')
  })

  it('https.get and fetch carry a 10 MB body intact (SHA-256) with the instance defaults', async () => {
    const [a, b] = await pair(serverDefaults())
    const body = randomBytes(10 * 1024 * 1024)
    const server = a.https.createServer((req, res) => {
      res.setHeader('content-type', 'application/octet-stream')
      res.setHeader('x-remote', req.socket.remoteAddress ?? '')
      res.end(body)
    })
    server.listen(443, SERVER)
    await once(server, 'listening')
    cleanups.push(async () => void server.close())

    const viaHttps = await new Promise<{ status: number; remote: string; hash: string }>((resolve, reject) => {
      b.https
        .get(`https://${SERVER}/`, { servername: 'server.test', headers: { host: 'server.test' } }, (res) => {
          const hash = createHash('sha256')
          res.on('data', (d: Buffer) => hash.update(d))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, remote: String(res.headers['x-remote']), hash: hash.digest('hex') }))
          res.on('error', reject)
        })
        .on('error', reject)
    })
    expect(viaHttps).toEqual({ status: 200, remote: '198.51.100.2', hash: sha256(body) })

    const response = await b.fetch(`https://${SERVER}/`)
    expect(response.status).toBe(200)
    expect(sha256(new Uint8Array(await response.arrayBuffer()))).toBe(sha256(body))
  })

  it('fetch fails with the verification error for an untrusted server', async () => {
    const [a, b] = await pair({ identity: { cert: certs.untrusted.cert, key: certs.untrusted.key } })
    const server = a.https.createServer((_req, res) => res.end('nope'))
    server.listen(443, SERVER)
    await once(server, 'listening')
    cleanups.push(async () => void server.close())
    const err = (await b.fetch(`https://${SERVER}/`).then(() => null, (e: Error) => e)) as (Error & { cause?: NodeJS.ErrnoException }) | null
    expect(err).not.toBeNull()
    expect(err!.cause?.code).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE')
  })

  it('writes NSS key log lines for the instance connections to the configured file', async () => {
    const keyLogFile = join(certs.dir, `keys-${process.pid}.log`)
    const [a, b] = await pair(serverDefaults({ keyLogFile }), { ca: [certs.ca.cert], keyLogFile: join(certs.dir, `client-keys-${process.pid}.log`) })
    const lines: string[] = []
    a.tls.onKeyLog((line) => lines.push(line.toString()))
    const server = a.tls.createServer((socket) => socket.end('bye'))
    await listen(server, 8443)
    for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
      const client = b.tls.connect({ host: SERVER, port: 8443, maxVersion })
      expect(await settle(client)).toEqual({ ok: true })
      client.resume()
      await once(client, 'end')
    }
    await a.close()
    await b.close()
    const serverLog = readFileSync(keyLogFile, 'utf8').trim().split('\n')
    const clientLog = readFileSync(join(certs.dir, `client-keys-${process.pid}.log`), 'utf8').trim().split('\n')
    for (const log of [serverLog, clientLog]) {
      for (const line of log) expect(line).toMatch(/^[A-Z_0-9]+ [0-9a-f]{64} [0-9a-f]{64,96}$/)
      const labels = new Set(log.map((l) => l.split(' ')[0]))
      // TLS 1.3 secrets (RFC 8446 labels) and the TLS 1.2 master secret.
      for (const label of ['CLIENT_HANDSHAKE_TRAFFIC_SECRET', 'SERVER_HANDSHAKE_TRAFFIC_SECRET', 'CLIENT_TRAFFIC_SECRET_0', 'SERVER_TRAFFIC_SECRET_0', 'CLIENT_RANDOM']) expect(labels).toContain(label)
    }
    // Both ends log the same secrets: the file of either decrypts the capture.
    expect(new Set(serverLog)).toEqual(new Set(clientLog))
    expect(lines.map((l) => l.trim())).toEqual(serverLog)
  })

  it('an unwritable key log file is published on diagnostics_channel, connections unaffected', async () => {
    const keyLogFile = join(certs.dir, 'no-such-dir', 'keys.log')
    const [a, b] = await pair(serverDefaults({ keyLogFile }))
    const published: { file: string; error: NodeJS.ErrnoException }[] = []
    const onError = (message: unknown): void => {
      published.push(message as { file: string; error: NodeJS.ErrnoException })
    }
    keyLogErrorChannel.subscribe(onError)
    try {
      const server = a.tls.createServer((socket) => socket.end('fine'))
      await listen(server, 8443)
      const client = b.tls.connect({ host: SERVER, port: 8443 })
      expect(await settle(client)).toEqual({ ok: true })
      client.resume()
      await once(client, 'end')
      for (let i = 0; i < 50 && published.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
      expect(published[0]?.file).toBe(keyLogFile)
      expect(published[0]?.error.code).toBe('ENOENT')
    } finally {
      keyLogErrorChannel.unsubscribe(onError)
    }
  })

  it('sizes records to the connection: one-MSS records first, 16 KiB once the window has grown', async () => {
    const [a, b] = await pair(serverDefaults())
    const total = 2 * 1024 * 1024
    let serverSocket: tls.TLSSocket | null = null
    const server = a.tls.createServer({ maxVersion: 'TLSv1.2' }, (socket) => {
      serverSocket = socket
      const chunk = Buffer.alloc(65536, 7)
      let sent = 0
      const pump = (): void => {
        while (sent < total) {
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
    await listen(server, 8443)
    const raw = b.net.connect({ host: SERVER, port: 8443 })
    const records = tapRecords(raw)
    const client = b.tls.connect({ socket: raw, servername: 'server.test' })
    let received = 0
    client.on('data', (d: Buffer) => (received += d.length))
    await once(client, 'end')
    expect(received).toBe(total)

    const mss = raw.tcpSendMss
    expect(mss).toBeGreaterThan(1000)
    const appData = records.filter((r) => r.type === 23).map((r) => r.length)
    // TLS 1.2 AES-GCM: record length = fragment + 8 (explicit nonce) + 16 (tag).
    expect(appData[0]).toBeLessThanOrEqual(mss - 5)
    expect(appData.slice(0, 4).every((len) => len <= mss - 5)).toBe(true)
    expect(appData.filter((len) => len === 16384 + 24).length).toBeGreaterThan(100)
    // Small records until the switch, then full ones for the rest of the bulk transfer: the only
    // other record is the tail of the 64 KiB write during which the switch happened.
    const firstFull = appData.indexOf(16384 + 24)
    expect(appData.slice(0, firstFull).every((len) => len === mss - 5)).toBe(true)
    expect(appData.slice(firstFull).filter((len) => len !== 16384 + 24).length).toBeLessThanOrEqual(1)
    const sizer = a.tls.recordSizer(serverSocket!)
    expect(sizer?.fragment).toBe(16384)
    expect(sizer?.changes).toBe(2)
    expect(sizer?.smallRecords).toBe(firstFull)
  })

  for (const enabled of [true, false]) {
    it(`session tickets ${enabled ? 'on: a second connection resumes' : 'off: no resumption'} (TLS 1.3 and 1.2)`, async () => {
      const [a, b] = await pair(serverDefaults({ sessionTickets: { enabled, rotationSeconds: 3600 } }))
      const server = a.tls.createServer((socket) => socket.end('x'))
      await listen(server, 8443)
      expect(server.getTicketKeys().length).toBe(48)
      for (const maxVersion of ['TLSv1.3', 'TLSv1.2'] as const) {
        const first = b.tls.connect({ host: SERVER, port: 8443, servername: 'server.test', maxVersion })
        let session: Buffer | undefined
        first.on('session', (s: Buffer) => (session = s))
        first.resume()
        await once(first, 'end')
        const second = b.tls.connect({ host: SERVER, port: 8443, servername: 'server.test', maxVersion, session })
        expect(await settle(second)).toEqual({ ok: true })
        expect({ maxVersion, reused: second.isSessionReused() }).toEqual({ maxVersion, reused: enabled })
        second.destroy()
      }
    })
  }

  it('rotates the ticket keys every rotation period, and stops when the server closes', async () => {
    const [a] = await pair(serverDefaults({ sessionTickets: { enabled: true, rotationSeconds: 1 } }))
    const server = a.tls.createServer((socket) => socket.end())
    await listen(server, 8443)
    const before = server.getTicketKeys()
    // The 1 s timer may run late on a loaded machine: poll, bounded.
    let after = before
    for (let i = 0; i < 60 && after.equals(before); i++) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      after = server.getTicketKeys()
    }
    expect(after.equals(before)).toBe(false)
    await new Promise<void>((resolve) => server.close(() => resolve()))
    await new Promise((resolve) => setTimeout(resolve, 1_100))
    expect(server.getTicketKeys().equals(after)).toBe(true)
  })

  it('returns to one-MSS records after the connection was idle longer than the RTO', async () => {
    const [a, b] = await pair(serverDefaults())
    const first = 1024 * 1024
    const second = 256 * 1024
    let serverSocket: tls.TLSSocket | null = null
    const server = a.tls.createServer({ maxVersion: 'TLSv1.2' }, (socket) => {
      serverSocket = socket
      socket.write(Buffer.alloc(first, 1))
    })
    await listen(server, 8443)
    const raw = b.net.connect({ host: SERVER, port: 8443 })
    const records = tapRecords(raw)
    const client = b.tls.connect({ socket: raw, servername: 'server.test' })
    let received = 0
    const phaseOne = new Promise<void>((resolve) => {
      client.on('data', (d: Buffer) => {
        received += d.length
        if (received === first) resolve()
      })
    })
    await phaseOne
    const recordsBeforeIdle = records.filter((r) => r.type === 23).length
    const sizer = a.tls.recordSizer(serverSocket!)!
    expect(sizer.fragment).toBe(16384)
    // Idle for longer than the RTO (and the floor), then write again.
    const idleMs = Math.max(raw.tcpRetransmitTimeout, 200) + 150
    await new Promise((resolve) => setTimeout(resolve, idleMs))
    serverSocket!.end(Buffer.alloc(second, 2))
    await once(client, 'end')
    expect(received).toBe(first + second)
    const afterIdle = records.filter((r) => r.type === 23).slice(recordsBeforeIdle).map((r) => r.length)
    const mss = raw.tcpSendMss
    expect(afterIdle[0]).toBe(mss - 5)
    expect(afterIdle.slice(0, 10).every((len) => len === mss - 5)).toBe(true)
    // ...and full records again once the restart allowance has been sent.
    expect(afterIdle).toContain(16384 + 24)
  })

  it('backpressure reaches through TLS to the TCP window, then the stream completes intact', async () => {
    const [a, b] = await pair(serverDefaults())
    const chunk = randomBytes(64 * 1024)
    const hash = createHash('sha256')
    let accepted = 0
    // Set only by the 400 ms timer, which 'drain' cancels: TLS stayed stalled that long.
    // (Date.now() differences can read 399 for a 400 ms timer, so the flag is what is checked.)
    let stalled = false
    let serverRawWritable = -1
    const done = new Promise<void>((resolve) => {
      const server = a.tls.createServer((socket) => {
        socket.on('error', () => {})
        const deadline = Date.now() + 5_000
        const pump = (): void => {
          // Write until TLS refuses (write() false), then wait for 'drain'. The reader is paused,
          // so drain must stop coming: TCP's window closed, TCP's send buffer filled, TLS stopped.
          while (accepted < 64 * 1024 * 1024 && Date.now() < deadline) {
            hash.update(chunk)
            accepted += chunk.length
            if (!socket.write(chunk)) {
              const timer = setTimeout(() => {
                stalled = true
                const raw = (socket as unknown as { _handle: { _parentWrap: { stream: StackSocket } } })._handle._parentWrap.stream
                serverRawWritable = raw.writableLength
                socket.removeListener('drain', onDrain)
                socket.end()
                resolve()
              }, 400)
              const onDrain = (): void => {
                clearTimeout(timer)
                pump()
              }
              socket.once('drain', onDrain)
              return
            }
          }
          socket.end()
          resolve()
        }
        pump()
      })
      server.listen(8443, SERVER)
      cleanups.push(async () => void server.close())
    })
    const client = b.tls.connect({ host: SERVER, port: 8443, servername: 'server.test' })
    // A reset during teardown is expected; a real error mid-stream fails the byte count and hash below.
    client.on('error', () => {})
    await once(client, 'secureConnect')
    client.pause()
    await done
    expect(stalled).toBe(true)
    // Far less than attempted: bounded by TCP's windows and buffers plus the stream high-water marks.
    expect(accepted).toBeLessThan(16 * 1024 * 1024)
    expect(serverRawWritable).toBeGreaterThan(0)
    const received = createHash('sha256')
    let receivedBytes = 0
    client.on('data', (d: Buffer) => {
      received.update(d)
      receivedBytes += d.length
    })
    client.resume()
    await once(client, 'end')
    expect(receivedBytes).toBe(accepted)
    expect(received.digest('hex')).toBe(hash.digest('hex'))
  })
})

function clientTlsOptions(d: TlsDefaults): tls.ConnectionOptions {
  return { ca: d.ca, cert: d.identity?.cert, key: d.identity?.key }
}

/** Records the TLS record headers arriving on a raw socket, before TLS reads them. */
function tapRecords(raw: StackSocket): { type: number; length: number }[] {
  const records: { type: number; length: number }[] = []
  const header = Buffer.alloc(5)
  let headerFill = 0
  let bodyLeft = 0
  const push = raw.push.bind(raw)
  raw.push = (chunk: Buffer | null): boolean => {
    if (chunk !== null) {
      let i = 0
      while (i < chunk.length) {
        if (bodyLeft > 0) {
          const n = Math.min(bodyLeft, chunk.length - i)
          bodyLeft -= n
          i += n
          continue
        }
        header[headerFill++] = chunk[i++]!
        if (headerFill === 5) {
          headerFill = 0
          bodyLeft = header.readUInt16BE(3)
          records.push({ type: header[0]!, length: bodyLeft })
        }
      }
    }
    return push(chunk)
  }
  return records
}

describe('loadTlsDefaults', () => {
  it('loads files and inline PEM, resolving paths against the base dir', () => {
    const defaults = loadTlsDefaults(
      {
        certificate: { chain: { case: 'certFile', value: 'server.pem' }, key: { case: 'keyFile', value: 'server.key' } },
        sni: [{ serverName: 'other.test', certificate: { chain: { case: 'certPem', value: certs.other.cert }, key: { case: 'keyPem', value: certs.other.key } } }],
        ca: [{ source: { case: 'file', value: certs.ca.certFile } }],
        alpn: ['h2', 'http/1.1'],
        minVersion: 2,
        clientCertificates: 'REQUIRE',
        sessionTickets: { enabled: false, rotationSeconds: 0 },
        keyLogFile: 'keys.log',
      },
      certs.dir,
    )
    expect(defaults).toEqual({
      identity: { cert: certs.server.cert, key: certs.server.key },
      sni: [{ serverName: 'other.test', cert: certs.other.cert, key: certs.other.key }],
      ca: [certs.ca.cert],
      alpn: ['h2', 'http/1.1'],
      minVersion: 'TLSv1.3',
      clientCertificates: 'require',
      sessionTickets: { enabled: false, rotationSeconds: 43200 },
      keyLogFile: join(certs.dir, 'keys.log'),
    })
  })

  it('reports every problem with the path of its field', () => {
    writeFileSync(join(certs.dir, 'garbage.pem'), 'not a certificate')
    let error: TlsConfigError | null = null
    try {
      loadTlsDefaults(
        {
          certificate: { chain: { case: 'certFile', value: 'missing.pem' }, key: { case: 'keyFile', value: 'server.key' } },
          sni: [
            { serverName: 'other.test', certificate: { chain: { case: 'certFile', value: 'other.pem' }, key: { case: 'keyFile', value: 'server.key' } } },
            { serverName: 'old.test', certificate: { chain: { case: 'certFile', value: 'expired.pem' }, key: { case: 'keyFile', value: 'expired.key' } } },
          ],
          ca: [{ source: { case: 'file', value: 'garbage.pem' } }],
          alpn: [''],
          minVersion: 'TLS1_1',
          clientCertificates: 7,
        },
        certs.dir,
        { path: 'instances[0].tls' },
      )
    } catch (err) {
      error = err as TlsConfigError
    }
    expect(error).not.toBeNull()
    expect(error!.code).toBe('CONFIG_INVALID')
    const byPath = Object.fromEntries(error!.problems.map((p) => [p.path, p.message]))
    expect(Object.keys(byPath).sort()).toEqual(
      [
        'instances[0].tls.certificate.certFile',
        'instances[0].tls.sni[0].certificate.keyFile',
        'instances[0].tls.sni[1].certificate.certFile',
        'instances[0].tls.ca[0].file',
        'instances[0].tls.alpn[0]',
        'instances[0].tls.minVersion',
        'instances[0].tls.clientCertificates',
      ].sort(),
    )
    expect(byPath['instances[0].tls.certificate.certFile']).toMatch(/cannot read .*missing\.pem: ENOENT/)
    expect(byPath['instances[0].tls.sni[0].certificate.keyFile']).toMatch(/key does not match the certificate/)
    expect(byPath['instances[0].tls.sni[1].certificate.certFile']).toMatch(/expired on/)
    expect(byPath['instances[0].tls.ca[0].file']).toMatch(/no PEM certificate/)
    expect(byPath['instances[0].tls.minVersion']).toMatch(/unknown TLS version "TLS1_1"/)
    expect(existsSync(join(certs.dir, 'missing.pem'))).toBe(false)
  })
})
