// TLS inside an instance against Debian's OpenSSL, through a TUN port in a
// network namespace this test creates: openssl s_client against stack.tls
// servers (TLS 1.3 / 1.2, chain, ALPN, 10 MB body, client certificates), our
// client against openssl s_server (verification with Node's error codes),
// and a tcpdump capture on the kernel side decrypted by tshark with the
// instance's key log. Needs root (namespaces, TUN): without it this FAILS.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import type { ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type * as tls from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { NexusPort } from '../../nexus/ports/port.js'
import { openTun } from '../../nexus/ports/tun.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import type { TlsDefaults } from '../../stacks/sockets/tls.js'
import { makeTestCerts, type TestCerts } from '../fixtures/tls/certs.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, ip, runIn, spawnIn, waitForOutput } from '../helpers/netns.js'

const DEVICE = 'fstls0'
const KERNEL = '198.51.100.1'
const OURS = '198.51.100.2'

let ns = ''
let port: NexusPort | null = null
let stack: Stack
let certs: TestCerts
let keyLogFile = ''
const children: ChildProcess[] = []

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  const exited = once(child, 'exit').then(() => undefined)
  child.kill('SIGINT')
  const timer = setTimeout(() => child.kill('SIGKILL'), 3_000)
  return exited.finally(() => clearTimeout(timer))
}

function settle(socket: tls.TLSSocket): Promise<{ ok: true } | { ok: false; code: string | undefined }> {
  return new Promise((resolve) => {
    socket.once('secureConnect', () => resolve({ ok: true }))
    socket.once('error', (err: NodeJS.ErrnoException) => resolve({ ok: false, code: err.code }))
  })
}

beforeAll(async () => {
  cleanupNamespaces('fs-tls-')
  ns = createNamespace('tls')
  certs = makeTestCerts()
  keyLogFile = join(certs.dir, 'instance-keys.log')
  port = await openTun({ name: DEVICE, netns: ns, txQueueLen: 4096 })
  ip('-n', ns, 'addr', 'add', `${KERNEL}/24`, 'dev', DEVICE)
  const defaults: TlsDefaults = {
    identity: { cert: certs.server.cert, key: certs.server.key },
    ca: [certs.ca.cert],
    alpn: ['h2', 'http/1.1'],
    minVersion: 'TLSv1.2',
    keyLogFile,
  }
  stack = await createStack({ port, addresses: [`${OURS}/24`], dad: false, tls: defaults })
}, 30_000)

afterAll(async () => {
  for (const child of children) await stop(child)
  await stack?.close()
  await port?.close()
  if (ns !== '') deleteNamespace(ns)
  certs?.cleanup()
}, 30_000)

describe('stack.tls against openssl through a TUN port', () => {
  it('s_client: TLS 1.3 and 1.2 handshakes, the configured chain and ALPN, a 10 MB body with matching SHA-256', async () => {
    const body = randomBytes(10 * 1024 * 1024)
    const server = stack.tls.createServer((socket) => {
      socket.on('error', () => {})
      socket.end(body)
    })
    server.listen(8443, OURS)
    await once(server, 'listening')
    try {
      for (const version of ['-tls1_3', '-tls1_2'] as const) {
        // Handshake details: protocol, verified chain, ALPN.
        const info = await runIn(ns, ['openssl', 's_client', '-connect', `${OURS}:8443`, version, '-servername', 'server.test', '-CAfile', certs.ca.certFile,
          '-verify_return_error', '-showcerts', '-alpn', 'h2,http/1.1', '-ign_eof'], 30_000)
        expect(info.stdout).toMatch(version === '-tls1_3' ? /New, TLSv1\.3, Cipher is/ : /New, TLSv1\.2, Cipher is/)
        expect(info.stdout).toMatch(/ALPN protocol: h2/)
        expect(info.stdout).toMatch(/Verify return code: 0 \(ok\)/)
        expect(info.stdout).toMatch(/0 s:CN = server\.test\s+i:CN = flowstack test CA/)

        // The body, alone on stdout (-quiet).
        const bulk = await runIn(ns, ['openssl', 's_client', '-connect', `${OURS}:8443`, version, '-servername', 'server.test', '-CAfile', certs.ca.certFile,
          '-verify_return_error', '-quiet'], 60_000)
        expect(bulk.stdoutBytes.length).toBe(body.length)
        expect(sha256(bulk.stdoutBytes)).toBe(sha256(body))
      }
    } finally {
      server.close()
    }
  }, 120_000)

  it('client certificates required: s_client without one is refused, with one from the configured CA succeeds', async () => {
    const server = stack.tls.createServer({ requestCert: true, rejectUnauthorized: true }, (socket) => {
      socket.on('error', () => {})
      socket.end(`hello ${(socket.getPeerCertificate() as { subject?: { CN?: string } }).subject?.CN}\n`)
    })
    server.on('tlsClientError', () => {})
    server.listen(8444, OURS)
    await once(server, 'listening')
    try {
      const base = ['openssl', 's_client', '-connect', `${OURS}:8444`, '-servername', 'server.test', '-CAfile', certs.ca.certFile, '-quiet']
      const without = await runIn(ns, base, 30_000)
      expect(without.stdout).not.toContain('hello')
      // TLS 1.3: s_client finishes its side first; the server then refuses and closes (the
      // certificate_required alert may be cut off by the close, so either shows).
      expect(without.status).not.toBe(0)
      expect(without.stderr).toMatch(/alert certificate required|alert handshake failure|unexpected eof/)
      const withCert = await runIn(ns, [...base, '-cert', certs.client.certFile, '-key', certs.client.keyFile], 30_000)
      expect(withCert.stdout).toBe('hello client.test\n')
      const rogue = await runIn(ns, [...base, '-cert', certs.rogueClient.certFile, '-key', certs.rogueClient.keyFile], 30_000)
      expect(rogue.stdout).not.toContain('hello')
    } finally {
      server.close()
    }
  }, 60_000)

  it("our client verifies openssl s_server against the configured CA, with Node's codes for a wrong name and an untrusted chain", async () => {
    const good = spawnIn(ns, ['openssl', 's_server', '-accept', `${KERNEL}:4433`, '-cert', certs.server.certFile, '-key', certs.server.keyFile, '-www'])
    const rogue = spawnIn(ns, ['openssl', 's_server', '-accept', `${KERNEL}:4434`, '-cert', certs.untrusted.certFile, '-key', certs.untrusted.keyFile, '-www'])
    children.push(good, rogue)
    await Promise.all([waitForOutput(good, 'ACCEPT', 10_000), waitForOutput(rogue, 'ACCEPT', 10_000)])

    const ok = stack.tls.connect({ host: KERNEL, port: 4433, servername: 'server.test' })
    expect(await settle(ok)).toEqual({ ok: true })
    expect(ok.authorized).toBe(true)
    expect(ok.getPeerCertificate().subject.CN).toBe('server.test')
    ok.destroy()

    const wrongName = stack.tls.connect({ host: KERNEL, port: 4433, servername: 'wrong.test' })
    expect(await settle(wrongName)).toEqual({ ok: false, code: 'ERR_TLS_CERT_ALTNAME_INVALID' })
    wrongName.destroy()

    const untrusted = stack.tls.connect({ host: KERNEL, port: 4434, servername: 'server.test' })
    expect(await settle(untrusted)).toEqual({ ok: false, code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' })
    untrusted.destroy()

    // fetch over the same defaults: s_server -www answers with its status page.
    const response = await stack.fetch(`https://${KERNEL}:4433/`)
    expect(response.status).toBe(200)
    expect(await response.text()).toMatch(/s_server/)
    await Promise.all([stop(good), stop(rogue)])
  }, 60_000)

  it("tshark decrypts a kernel-side capture of the instance's HTTPS traffic with its key log", async () => {
    const capture = join(certs.dir, 'https.pcap')
    const server = stack.https.createServer((req, res) => {
      res.setHeader('content-type', 'text/plain')
      res.end(`flowstack says hi to ${req.url}\n`)
    })
    server.listen(443, OURS)
    await once(server, 'listening')
    const dump = spawnIn(ns, ['tcpdump', '-i', DEVICE, '-Z', 'root', '--immediate-mode', '-U', '-n', '-w', capture, 'tcp port 443'])
    children.push(dump)
    await waitForOutput(dump, 'listening on', 10_000)
    // Let the capture settle before traffic starts (--immediate-mode: nothing waits in an unretired ring block at exit).
    await new Promise((resolve) => setTimeout(resolve, 300))
    try {
      const curl = await runIn(ns, ['curl', '-sS', '--http1.1', '--cacert', certs.ca.certFile, `https://${OURS}/decrypt-me`], 30_000)
      expect(curl.stderr).toBe('')
      expect(curl.stdout).toBe('flowstack says hi to /decrypt-me\n')
    } finally {
      await stop(dump)
      server.close()
    }
    expect(existsSync(capture)).toBe(true)
    // The key log is written by a stream: give it its turn.
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(readFileSync(keyLogFile, 'utf8')).toMatch(/CLIENT_TRAFFIC_SECRET_0 /)
    const decoded = await runIn(ns, ['tshark', '-r', capture, '-o', `tls.keylog_file:${keyLogFile}`, '-Y', 'http', '-T', 'fields',
      '-e', 'http.request.uri', '-e', 'http.response.code', '-e', 'http.file_data'], 30_000)
    expect(decoded.status).toBe(0)
    expect(decoded.stdout).toMatch(/\/decrypt-me/)
    expect(decoded.stdout).toMatch(/200/)
    expect(decoded.stdout).toMatch(/flowstack says hi|666c6f77737461636b/)
  }, 60_000)
})
