// Issue 7: "two instances with different certificates on different addresses
// behind the same port each present their own" — through the runtime, as an
// operator runs it: one TUN port, two instances on their own addresses, each
// with a TLS identity from its config section, each serving https on 443.
// From the kernel namespace, openssl s_client and curl (Debian's) reach each
// over IPv4 and IPv6 and see that instance's chain and body. alpha's leaf is
// signed by the test CA directly; beta's by an intermediate it sends along,
// so the chains differ in shape as well as in name. Needs root (namespaces,
// TUN): without it this FAILS, never skips.
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { makeTestCerts, type TestCerts } from '../fixtures/tls/certs.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, runIn } from '../helpers/netns.js'

const app = fileURLToPath(new URL('../runtime/apps/tls-greeting.js', import.meta.url))

interface Site {
  instance: string
  serverName: string
  ipv4: string
  ipv6: string
  bodyBytes: number
  /** The chain s_client must see: subjects from the leaf up, and the leaf's issuer. */
  leafIssuer: string
  chainDepth: number
}

const ALPHA: Site = { instance: 'alpha', serverName: 'alpha.test', ipv4: '198.51.100.2', ipv6: '2001:db8::2', bodyBytes: 50_000, leafIssuer: 'flowstack test CA', chainDepth: 1 }
const BETA: Site = { instance: 'beta', serverName: 'beta.test', ipv4: '198.51.100.3', ipv6: '2001:db8::3', bodyBytes: 120_000, leafIssuer: 'beta intermediate CA', chainDepth: 2 }

let ns = ''
let certs: TestCerts | undefined
let runtime: Runtime | undefined

function openssl(args: string[], cwd: string, input?: string): string {
  return execFileSync('openssl', args, { cwd, input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], timeout: 20_000 })
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']

/** A key and a certificate for `cn`, signed by `issuer` (files `<issuer>.pem`/`.key` in `dir`). */
function signed(dir: string, name: string, issuer: string, cn: string, extensions: string): void {
  openssl(['req', ...EC, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir)
  writeFileSync(join(dir, `${name}.ext`), extensions)
  openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', `${issuer}.pem`, '-CAkey', `${issuer}.key`, '-CAcreateserial', '-days', '2', '-extfile', `${name}.ext`, '-out', `${name}.pem`], dir)
}

function serverExtensions(site: Site): string {
  return `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:${site.serverName},IP:${site.ipv4},IP:${site.ipv6}\n`
}

function expectedBody(site: Site): Buffer {
  return Buffer.alloc(site.bodyBytes, `greetings from ${site.instance}\n`)
}

/** An IPv6 address as openssl prints it in a SAN: eight groups, no zero compression, upper case. */
function opensslIpv6(address: string): string {
  const [head = '', tail = ''] = address.split('::')
  const left = head === '' ? [] : head.split(':')
  const right = tail === '' ? [] : tail.split(':')
  const groups = [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right]
  return groups.map((g) => Number.parseInt(g, 16).toString(16).toUpperCase()).join(':')
}

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

// A setup failure (no root: no namespace, no TUN) is rethrown by every test,
// so each one is reported FAILED with the reason rather than skipped.
let setupError: unknown
function ready(): void {
  if (setupError !== undefined) throw setupError
}

beforeAll(async () => {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('setup (namespace, certificates, runtime start) took over 25 s')), 25_000)
  })
  try {
    await Promise.race([setUp(), deadline])
  } catch (err) {
    setupError = err
  } finally {
    clearTimeout(timer)
  }
}, 30_000)

async function setUp(): Promise<void> {
  cleanupNamespaces('fs-tlsrt-')
  ns = createNamespace('tlsrt')
  certs = makeTestCerts()
  const dir = certs.dir
  signed(dir, 'alpha', 'ca', ALPHA.serverName, serverExtensions(ALPHA))
  signed(dir, 'beta-ica', 'ca', 'beta intermediate CA', 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n')
  signed(dir, 'beta', 'beta-ica', BETA.serverName, serverExtensions(BETA))
  // The configured chain file carries the intermediate after the leaf; clients trust only the root.
  writeFileSync(join(dir, 'beta-chain.pem'), readFileSync(join(dir, 'beta.pem'), 'utf8') + readFileSync(join(dir, 'beta-ica.pem'), 'utf8'))

  const instance = (site: Site, certFile: string, keyFile: string): object => ({
    name: site.instance,
    app,
    port: 'tun0',
    addresses: [`${site.ipv4}/24`, `${site.ipv6}/64`],
    settings: { bodyBytes: site.bodyBytes },
    tls: { certificate: { certFile, keyFile }, alpn: ['http/1.1'] },
  })
  const rules = [ALPHA, BETA].flatMap((site) => [
    { name: site.instance, priority: 10, match: { protocol: 'TCP', localPrefix: `${site.ipv4}/32` }, action: { instance: site.instance } },
    { name: `${site.instance}6`, priority: 10, match: { protocol: 'TCP', localPrefix: `${site.ipv6}/128` }, action: { instance: site.instance } },
  ])
  const loaded = parseConfigJson(
    {
      ports: [{ name: 'tun0', tun: { device: 'fstlsrt0', kernelAddresses: ['198.51.100.1/24', '2001:db8::1/64'] }, defaultAction: { kernel: {} } }],
      instances: [instance(ALPHA, join(dir, 'alpha.pem'), join(dir, 'alpha.key')), instance(BETA, join(dir, 'beta-chain.pem'), join(dir, 'beta.key'))],
      rules,
    },
    { baseDir: dir },
  )
  runtime = await Runtime.start(loaded, { netns: ns, log: () => {} })
  await runtime.whenRunning()
}

afterAll(async () => {
  await runtime?.stop()
  if (ns !== '') deleteNamespace(ns)
  certs?.cleanup()
})

/** The PEM blocks of a `-showcerts` transcript, leaf first. */
function pemBlocks(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
}

/** What a certificate says about itself: subject and SAN, as openssl x509 prints them. */
function describeCertificate(pem: string): { subject: string; san: string } {
  const subject = openssl(['x509', '-noout', '-subject', '-nameopt', 'oneline'], certs!.dir, pem).trim()
  const san = openssl(['x509', '-noout', '-ext', 'subjectAltName'], certs!.dir, pem).replace(/\s+/g, ' ').trim()
  return { subject, san }
}

const families = [
  { family: 'IPv4', target: (s: Site) => `${s.ipv4}:443`, address: (s: Site) => s.ipv4, bracketed: (s: Site) => s.ipv4 },
  { family: 'IPv6', target: (s: Site) => `[${s.ipv6}]:443`, address: (s: Site) => s.ipv6, bracketed: (s: Site) => `[${s.ipv6}]` },
] as const

describe('two TLS instances behind one TUN port (runtime)', () => {
  for (const { family, target, address } of families) {
    it(`openssl s_client over ${family}: each address presents its own instance's chain, verified against the root`, async () => {
      ready()
      for (const site of [ALPHA, BETA]) {
        const request = `GET / HTTP/1.1\r\nHost: ${site.serverName}\r\nConnection: close\r\n\r\n`
        const r = await runIn(ns, ['openssl', 's_client', '-connect', target(site), '-servername', site.serverName, '-CAfile', certs!.ca.certFile,
          '-verify_hostname', site.serverName, '-verify_ip', address(site), '-verify_return_error', '-showcerts', '-alpn', 'http/1.1', '-ign_eof'],
        20_000, Buffer.from(request))
        expect(r.status, r.stderr).toBe(0)
        expect(r.stdout).toMatch(/Verify return code: 0 \(ok\)/)
        expect(r.stdout).toMatch(/ALPN protocol: http\/1\.1/)
        expect(r.stdout).toContain(`0 s:CN = ${site.serverName}`)
        expect(r.stdout).toMatch(new RegExp(`0 s:CN = ${site.serverName.replace('.', '\\.')}\\s+i:CN = ${site.leafIssuer}`))
        // The instance sends exactly its configured chain: the leaf, plus beta's intermediate.
        const sent = pemBlocks(r.stdout)
        expect(sent.length).toBe(site.chainDepth)
        const leaf = describeCertificate(sent[0]!)
        expect(leaf.subject).toBe(`subject=CN = ${site.serverName}`)
        expect(leaf.san).toBe(`X509v3 Subject Alternative Name: DNS:${site.serverName}, IP Address:${site.ipv4}, IP Address:${opensslIpv6(site.ipv6)}`)
        if (site.chainDepth === 2) expect(describeCertificate(sent[1]!).subject).toBe('subject=CN = beta intermediate CA')
        // And the https app answered inside the session.
        expect(r.stdout).toMatch(/HTTP\/1\.1 200 OK/)
        expect(r.stdout).toMatch(new RegExp(`x-instance: ${site.instance}`, 'i'))
      }
    }, 60_000)
  }

  it('each instance presents only its own certificate: asking alpha for beta.test is a host name mismatch', async () => {
    ready()
    for (const { target } of families) {
      const r = await runIn(ns, ['openssl', 's_client', '-connect', target(ALPHA), '-servername', BETA.serverName, '-CAfile', certs!.ca.certFile,
        '-verify_hostname', BETA.serverName], 20_000)
      // The chain itself still verifies; only the name does not (X509_V_ERR_HOSTNAME_MISMATCH).
      expect(r.stdout).toMatch(/Verify return code: 62 \(hostname mismatch\)/)
      expect(r.stdout).toContain(`0 s:CN = ${ALPHA.serverName}`)
      expect(r.stdout).not.toContain(`s:CN = ${BETA.serverName}`)
    }
  }, 60_000)

  for (const { family, bracketed } of families) {
    it(`curl --cacert over ${family}: each instance's body, whole and matching`, async () => {
      ready()
      for (const site of [ALPHA, BETA]) {
        const headerFile = join(certs!.dir, `${site.instance}-${family}.headers`)
        const r = await runIn(ns, ['curl', '-sS', '--max-time', '10', '--cacert', certs!.ca.certFile, '--resolve', `${site.serverName}:443:${bracketed(site)}`,
          '-D', headerFile, `https://${site.serverName}/`], 20_000)
        expect(r.status, r.stderr).toBe(0)
        const headers = readFileSync(headerFile, 'utf8')
        expect(headers).toMatch(/^HTTP\/1\.1 200/m)
        expect(headers).toMatch(new RegExp(`^x-instance: ${site.instance}\\r?$`, 'im'))
        expect(r.stdoutBytes.length).toBe(site.bodyBytes)
        expect(sha256(r.stdoutBytes)).toBe(sha256(expectedBody(site)))
      }
      // The connections were steered by address to their owners, on the one port.
      const flows = (await runtime!.flows()).flows
      for (const site of [ALPHA, BETA]) {
        expect(flows.some((f) => f.owner === site.instance && f.key?.localAddress === (family === 'IPv4' ? site.ipv4 : site.ipv6) && f.key.localPort === 443)).toBe(true)
      }
      expect(runtime!.instances.map((i) => i.restarts)).toEqual([0, 0])
      // One port carried both: every packet an instance received came in through it.
      const stat = await runtime!.stat()
      expect(stat.ports.length).toBe(1)
      const received = stat.instances.map((i) => Number(i.rxPackets))
      for (const packets of received) expect(packets).toBeGreaterThan(0)
      expect(Number(stat.ports[0]!.rxPackets)).toBeGreaterThanOrEqual(received[0]! + received[1]!)
    }, 60_000)
  }
})
