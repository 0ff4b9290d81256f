// An instance's TLS identity comes from its config: the runtime reads the
// certificate files once and hands them to the instance worker, where
// stack.https serves with them. A peer on the wire verifies the chain against
// the test CA and sees the configured ALPN.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { loadConfig } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import { makeTestCerts, type TestCerts } from '../fixtures/tls/certs.js'

const app = fileURLToPath(new URL('./apps/https-web.js', import.meta.url))
let dir = ''
let certs: TestCerts
let runtime: Runtime
let peer: Stack

beforeAll(async () => {
  certs = makeTestCerts()
  dir = mkdtempSync(join(tmpdir(), 'fs-runtime-tls-'))
  const configFile = join(dir, 'tls.json')
  writeFileSync(
    configFile,
    JSON.stringify({
      ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true }, defaultAction: { drop: {} } }],
      instances: [
        {
          name: 'secure',
          app,
          port: 'p0',
          addresses: ['198.51.100.2/24'],
          tls: { certificate: { certFile: certs.server.certFile, keyFile: certs.server.keyFile }, alpn: ['http/1.1'], minVersion: 'TLS1_3' },
        },
      ],
      rules: [{ name: 'https', priority: 10, match: { protocol: 'TCP', localPorts: { from: 443, to: 443 } }, action: { instance: 'secure' } }],
    }),
  )
  runtime = await Runtime.start(await loadConfig(configFile), { log: () => {}, reportIntervalMs: 100 })
  peer = await createStack({ port: runtime.memoryPeers.get('w')!, addresses: ['198.51.100.1/24'], dad: false })
  await runtime.whenRunning()
}, 30_000)

afterAll(async () => {
  await peer?.close()
  await runtime?.stop()
  certs?.cleanup()
  if (dir !== '') rmSync(dir, { recursive: true, force: true })
})

describe('TLS configured per instance', () => {
  it('serves https with the configured chain, minimum version and ALPN; the peer verifies it against the CA', async () => {
    const socket = peer.net.connect({ host: '198.51.100.2', port: 443 })
    const secure: TLSSocket = tlsConnect({ socket, ca: certs.ca.cert, servername: 'server.test', ALPNProtocols: ['h2', 'http/1.1'] })
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve())
      secure.once('error', reject)
    })
    expect(secure.authorized).toBe(true)
    expect(secure.getProtocol()).toBe('TLSv1.3')
    expect(secure.alpnProtocol).toBe('http/1.1')
    expect(secure.getPeerCertificate().subject.CN).toBe('server.test')
    const response = await new Promise<string>((resolve, reject) => {
      let text = ''
      secure.setEncoding('utf8')
      secure.on('data', (chunk: string) => (text += chunk))
      secure.on('end', () => resolve(text))
      secure.on('error', reject)
      secure.end('GET / HTTP/1.1\r\nHost: server.test\r\nConnection: close\r\n\r\n')
    })
    expect(response).toMatch(/^HTTP\/1\.1 200 OK/)
    expect(response).toMatch(/secure secure http\/1\.1$/)
  })

  it('refuses a TLS 1.2-only client (the configured minimum is 1.3)', async () => {
    const socket = peer.net.connect({ host: '198.51.100.2', port: 443 })
    const secure = tlsConnect({ socket, ca: certs.ca.cert, servername: 'server.test', maxVersion: 'TLSv1.2' })
    const err = await new Promise<NodeJS.ErrnoException>((resolve) => secure.once('error', resolve))
    expect(String(err.code)).toMatch(/ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION|ERR_SSL_UNSUPPORTED_PROTOCOL|ECONNRESET/)
  })
})
