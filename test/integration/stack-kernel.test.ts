// A whole flowstack stack (createStack: IP core + TCP + the net/http/fetch
// facades) against the Linux kernel in a network namespace this test creates,
// once through a TUN port (L3) and once through a TAP port (L2, with ARP and
// NDP): curl downloads from a node:http server on our stack, our fetch
// downloads from a kernel HTTP server, ping gets echo replies, a closed port
// refuses, and a peer that vanishes mid-transfer leads to ETIMEDOUT.
// Needs root (namespaces, TUN/TAP): without it these tests FAIL.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { NexusPort } from '../../nexus/ports/port.js'
import { openTap } from '../../nexus/ports/tap.js'
import { openTun } from '../../nexus/ports/tun.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, ip, runIn, spawnIn, waitForOutput } from '../helpers/netns.js'

const SIZE = 20 * 1024 * 1024
const body = randomBytes(SIZE)
const bodyDigest = createHash('sha256').update(body).digest('hex')

function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex')
}

interface Setup {
  kind: 'tun' | 'tap' | 'tunvnet'
  kernel4: string
  ours4: string
  kernel6: string
  ours6: string
}

for (const setup of [
  { kind: 'tun', kernel4: '192.0.2.1', ours4: '192.0.2.2', kernel6: '2001:db8:41::1', ours6: '2001:db8:41::2' },
  { kind: 'tap', kernel4: '198.51.100.1', ours4: '198.51.100.2', kernel6: '2001:db8:42::1', ours6: '2001:db8:42::2' },
  // vnet_hdr with TSO/checksum offload: the kernel hands us partial checksums and 64 KiB super-packets.
  { kind: 'tunvnet', kernel4: '203.0.113.1', ours4: '203.0.113.2', kernel6: '2001:db8:43::1', ours6: '2001:db8:43::2' },
] satisfies Setup[]) {
  describe(`createStack against the kernel over ${setup.kind === 'tunvnet' ? 'TUN with vnet_hdr offloads' : setup.kind.toUpperCase()}`, () => {
    const device = `fsstk${setup.kind}0`
    let ns = ''
    let port: NexusPort | null = null
    let stack: Stack
    let webRoot = ''
    let kernelHttp: ChildProcess | null = null

    beforeAll(async () => {
      cleanupNamespaces(`fs-stk${setup.kind}-`)
      ns = createNamespace(`stk${setup.kind}`)
      port =
        setup.kind === 'tap'
          ? await openTap({ name: device, netns: ns, txQueueLen: 4096 })
          : await openTun({ name: device, netns: ns, txQueueLen: 4096, vnetHdr: setup.kind === 'tunvnet' })
      ip('-n', ns, 'addr', 'add', `${setup.kernel4}/24`, 'dev', device)
      ip('-n', ns, 'addr', 'add', `${setup.kernel6}/64`, 'dev', device, 'nodad')
      // DAD off on our side too: the kernel's own DAD probes would otherwise race ours.
      // userTimeoutMs bounds how long unacknowledged data may wait (the ETIMEDOUT test).
      stack = await createStack({ port, addresses: [`${setup.ours4}/24`, `${setup.ours6}/64`], dad: false, tcp: { userTimeoutMs: 8_000 } })
      webRoot = mkdtempSync(join(tmpdir(), 'fs-stack-web-'))
      writeFileSync(join(webRoot, 'body.bin'), body)
      kernelHttp = spawnIn(ns, ['python3', '-u', '-m', 'http.server', '--bind', '::', '--directory', webRoot, '8000'])
      await waitForOutput(kernelHttp, 'Serving HTTP', 10_000)
    }, 30_000)

    afterAll(async () => {
      kernelHttp?.kill('SIGKILL')
      await stack?.close()
      await port?.close()
      if (ns !== '') deleteNamespace(ns)
      if (webRoot !== '') rmSync(webRoot, { recursive: true, force: true })
    })

    it('answers the kernel’s ping over IPv4 and IPv6', async () => {
      const v4 = await runIn(ns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', setup.ours4], 15_000)
      expect(v4.stdout).toMatch(/3 packets transmitted, 3 received/)
      const v6 = await runIn(ns, ['ping', '-6', '-c', '3', '-i', '0.2', '-W', '2', setup.ours6], 15_000)
      expect(v6.stdout).toMatch(/3 packets transmitted, 3 received/)
    })

    it('serves 20 MB over node:http to the kernel’s curl, IPv4 and IPv6, SHA-256 equal', async () => {
      const server = stack.http.createServer((_req, res) => {
        res.setHeader('content-length', SIZE)
        res.end(body)
      })
      server.listen(8080)
      await once(server, 'listening')
      try {
        for (const url of [`http://${setup.ours4}:8080/`, `http://[${setup.ours6}]:8080/`]) {
          const result = await runIn(ns, ['curl', '-sS', '--max-time', '60', '-o', '-', url], 70_000)
          expect(result.stderr).toBe('')
          expect(result.stdoutBytes.length).toBe(SIZE)
          expect(sha256(result.stdoutBytes)).toBe(bodyDigest)
        }
      } finally {
        server.close()
      }
    }, 150_000)

    it('downloads 20 MB from a kernel HTTP server with fetch, IPv4 and IPv6, SHA-256 equal', async () => {
      for (const host of [setup.kernel4, `[${setup.kernel6}]`]) {
        const response = await stack.fetch(`http://${host}:8000/body.bin`)
        expect(response.status).toBe(200)
        const data = new Uint8Array(await response.arrayBuffer())
        expect(data.length).toBe(SIZE)
        expect(sha256(data)).toBe(bodyDigest)
      }
    }, 150_000)

    it('echoes UDP both ways with the kernel over IPv4 and IPv6', async () => {
      // Kernel -> us: our dgram echo servers (one per family: udp6 sockets
      // are IPv6-only here), the kernel's socat as the client.
      const echoes = (['udp4', 'udp6'] as const).map((type) => {
        const echo = stack.dgram.createSocket(type)
        echo.on('message', (msg, rinfo) => echo.send(msg, rinfo.port, rinfo.address))
        echo.bind(5353)
        return echo
      })
      await Promise.all(echoes.map((echo) => once(echo, 'listening')))
      // Us -> kernel: a kernel echo server, our socket as the client.
      const kernelEcho = spawnIn(ns, ['socat', 'UDP6-RECVFROM:5400,fork,ipv6only=0', 'EXEC:cat'])
      try {
        for (const ours of [setup.ours4, setup.ours6]) {
          const reply = await runIn(ns, ['sh', '-c', `printf 'ping-${setup.kind}' | socat -t 1 - UDP:${ours.includes(':') ? `[${ours}]` : ours}:5353`], 10_000)
          expect(reply.stdout).toBe(`ping-${setup.kind}`)
        }
        for (const [type, kernel] of [['udp4', setup.kernel4], ['udp6', setup.kernel6]] as const) {
          const client = stack.dgram.createSocket(type)
          try {
            const got = new Promise<Buffer>((resolve) => client.once('message', (msg: Buffer) => resolve(msg)))
            // socat may take a moment to bind: resend until the echo arrives (bounded).
            let reply: Buffer | null = null
            for (let attempt = 0; attempt < 20 && reply === null; attempt++) {
              client.send(Buffer.from(`hello ${type}`), 5400, kernel)
              reply = await Promise.race([got, new Promise<null>((r) => setTimeout(() => r(null), 250))])
            }
            expect(reply?.toString()).toBe(`hello ${type}`)
          } finally {
            client.close()
          }
        }
      } finally {
        kernelEcho.kill('SIGKILL')
        for (const echo of echoes) echo.close()
      }
    }, 30_000)

    it('gets ECONNREFUSED from a closed kernel port', async () => {
      const socket = stack.net.connect({ host: setup.kernel4, port: 9 })
      const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException]
      expect(err.code).toBe('ECONNREFUSED')
      expect(err.syscall).toBe('connect')
    })

    // Last in this describe: it takes the kernel's side of the device down.
    it('times out with ETIMEDOUT when the kernel peer vanishes mid-transfer', async () => {
      // A kernel sink that reads forever; then its address disappears, so our
      // retransmissions go unanswered until the user timeout fires.
      const sink = spawnIn(ns, ['python3', '-u', '-c', `
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('${setup.kernel4}', 9100)); s.listen(1); print('ready', flush=True)
c, _ = s.accept()
while c.recv(65536): pass
`])
      try {
        await waitForOutput(sink, 'ready', 10_000)
        const socket = stack.net.connect({ host: setup.kernel4, port: 9100 })
        await once(socket, 'connect')
        socket.setKeepAlive(false)
        socket.on('error', () => {})
        const chunk = Buffer.alloc(64 * 1024, 1)
        const pump = setInterval(() => socket.write(chunk), 5)
        await new Promise((r) => setTimeout(r, 300))
        // The peer's interface goes down: nothing we send is answered. (Our
        // neighbour entry stays reachable for at least 15 s, longer than the
        // 8 s user timeout, so the error is ETIMEDOUT and not EHOSTUNREACH.)
        ip('-n', ns, 'link', 'set', 'dev', device, 'down')
        const started = Date.now()
        const [err] = (await once(socket, 'error')) as [NodeJS.ErrnoException]
        clearInterval(pump)
        expect(err.code).toBe('ETIMEDOUT')
        // Bounded by the stack's user timeout (8 s) plus one RTO of slack.
        expect(Date.now() - started).toBeLessThan(30_000)
      } finally {
        sink.kill('SIGKILL')
      }
    }, 60_000)
  })
}
