// Kernel fallback per packet (DESIGN.md §5, issue 6): an AF_PACKET port owns
// one end of a veth, a host TAP carries the kernel's address and MAC. From
// the peer namespace on the other end: curl to the host address on the
// instance's port reaches the instance, curl to another port reaches a
// kernel server in the host namespace, ping is answered by the kernel. One
// port namespace: the instance's port is reserved in the kernel, and the
// kernel's port is refused to the instance with EADDRINUSE.
// Needs root (network namespaces): fails, never skips, without it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { cleanupNamespaces, createNamespace, createVethPair, deleteNamespace, execIn, ip, runIn, spawnIn } from '../helpers/netns.js'

const apps = fileURLToPath(new URL('../runtime/apps/', import.meta.url))
const HOST = '198.51.100.1'
const PEER = '198.51.100.9'
let hostNs = ''
let peerNs = ''
let runtime: Runtime | undefined
let kernelServer: ChildProcess | undefined
let served = ''
const logs: string[] = []
let loaded: ReturnType<typeof parseConfigJson>

beforeAll(async () => {
  cleanupNamespaces('fs-rtaf-')
  hostNs = createNamespace('rtaf')
  peerNs = createNamespace('rtaf')
  createVethPair(hostNs, 'fsaf0', 'fsap0', peerNs)
  // The host namespace's kernel starts with its address on the wire, as a machine would.
  ip('-n', hostNs, 'addr', 'add', `${HOST}/24`, 'dev', 'fsaf0')
  ip('-n', hostNs, 'link', 'set', 'fsaf0', 'up')
  ip('-n', peerNs, 'addr', 'add', `${PEER}/24`, 'dev', 'fsap0')
  ip('-n', peerNs, 'link', 'set', 'fsap0', 'up')
  // The peer's veth keeps its default offloads: its frames arrive with
  // checksums left to be filled in (CHECKSUM_PARTIAL, a vnet header on the
  // AF_PACKET ring), and the switch completes them for instance and kernel.
  // A kernel server in the host namespace, on every address (so also the one the TAP will carry).
  served = mkdtempSync(join(tmpdir(), 'fs-rtaf-'))
  writeFileSync(join(served, 'index.html'), 'served by the kernel\n')
  kernelServer = spawnIn(hostNs, ['python3', '-m', 'http.server', '8080', '--bind', '0.0.0.0', '--directory', served])
  const deadline = Date.now() + 10000
  while (Date.now() < deadline && !execIn(hostNs, ['ss', '-ltnH', 'sport = :8080']).stdout.includes('8080')) await new Promise((r) => setTimeout(r, 100))
  loaded = parseConfigJson(
    {
      ports: [
        {
          name: 'wire',
          afpacket: { interface: 'fsaf0', promiscuous: true, host: { device: 'fsah0', addresses: [`${HOST}/24`] } },
          defaultAction: { kernel: {} },
        },
      ],
      // The instance shares the kernel's address; its listener claims port 80.
      instances: [{ name: 'web', app: join(apps, 'shared-web.js'), port: 'wire', addresses: [`${HOST}/24`], settings: { httpPort: 80, kernelPort: 8080 } }],
    },
    { baseDir: apps },
  )
  runtime = await Runtime.start(loaded, { netns: hostNs, log: (_source, _level, message) => logs.push(message) })
  await runtime.whenRunning()
}, 40000)

afterAll(async () => {
  kernelServer?.kill()
  await runtime?.stop()
  if (peerNs !== '') deleteNamespace(peerNs)
  if (hostNs !== '') deleteNamespace(hostNs)
  if (served !== '') rmSync(served, { recursive: true, force: true })
})

async function curl(url: string): Promise<{ status: number; instance: string; body: string; stderr: string }> {
  const r = await runIn(peerNs, ['curl', '-sS', '--max-time', '8', '-i', url], 15000)
  const [head, ...rest] = r.stdout.split('\r\n\r\n')
  return {
    status: Number(/^HTTP\/1\.[01] (\d+)/.exec(head)?.[1] ?? 0),
    instance: /^x-instance: (\S+)/im.exec(head)?.[1] ?? '',
    body: rest.join('\r\n\r\n'),
    stderr: r.stderr,
  }
}

describe('runtime on an AF_PACKET port with a host TAP', () => {
  it('moves the kernel to the host TAP with the wire MAC', () => {
    const tap = execIn(hostNs, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'fsah0'])
    expect(tap.stdout).toContain(`${HOST}/24`)
    expect(execIn(hostNs, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'fsaf0']).stdout).toBe('')
    const mac = (dev: string) => /link\/ether (\S+)/.exec(execIn(hostNs, ['ip', 'link', 'show', 'dev', dev]).stdout)?.[1]
    expect(mac('fsah0')).toBe(mac('fsaf0'))
  })

  it('serves the instance port from the instance, another port from the kernel, and ping from the kernel', async () => {
    const toInstance = await curl(`http://${HOST}/`)
    expect(toInstance.stderr).toBe('')
    expect(toInstance.status).toBe(200)
    expect(toInstance.instance).toBe('web')
    expect(toInstance.body).toBe('served by the instance\n')

    const toKernel = await curl(`http://${HOST}:8080/`)
    expect(toKernel.stderr).toBe('')
    expect(toKernel.status).toBe(200)
    expect(toKernel.instance).toBe('')
    expect(toKernel.body).toBe('served by the kernel\n')

    const ping = await runIn(peerNs, ['ping', '-c', '3', '-i', '0.2', '-W', '2', HOST], 15000)
    expect(ping.stdout).toMatch(/3 received/)

    const stat = await runtime!.stat()
    const host = stat.ports.find((p) => p.name === 'wire/host')!
    // The kernel got the ARP, TCP :8080 and ICMP frames, and answered through the TAP.
    expect(Number(host.txPackets)).toBeGreaterThanOrEqual(3 + 3)
    expect(Number(host.rxPackets)).toBeGreaterThanOrEqual(3 + 3)
    expect(Number(stat.instances[0].rxPackets)).toBeGreaterThan(0)
    // The instance's listener: exactly one TCP flow family went to it, none to the kernel on port 80.
    const kernelTcp = execIn(hostNs, ['nstat', '-az', 'TcpPassiveOpens']).stdout
    expect(Number(/TcpPassiveOpens\s+(\d+)/.exec(kernelTcp)?.[1] ?? -1)).toBe(1)
  }, 60000)

  it('reserves the instance port in the kernel and refuses the kernel port to the instance', async () => {
    expect(logs).toContain('listen 8080: EADDRINUSE')
    expect(runtime!.kernelReservations(0)).toEqual([`${HOST} 80`])
    // The reservation is a kernel socket: a kernel program cannot take the port.
    const deadline = Date.now() + 5000
    while (Date.now() < deadline && !execIn(hostNs, ['ss', '-ltnH', 'sport = :80']).stdout.includes(`${HOST}:80`)) await new Promise((r) => setTimeout(r, 50))
    const bind = execIn(hostNs, ['python3', '-c', `import socket; s = socket.socket(); s.bind(('${HOST}', 80))`])
    expect(bind.status).not.toBe(0)
    expect(bind.stderr).toMatch(/Address already in use/)
    // Another port on the shared address is the kernel's to take.
    expect(execIn(hostNs, ['python3', '-c', `import socket; s = socket.socket(); s.bind(('${HOST}', 81))`]).status).toBe(0)
  })

  it('gives the interface back to the kernel when it stops', async () => {
    await runtime!.stop()
    runtime = undefined
    expect(execIn(hostNs, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'fsaf0']).stdout).toContain(`${HOST}/24`)
    expect(execIn(hostNs, ['ip', 'link', 'show', 'dev', 'fsah0']).status).not.toBe(0)
    const ping = await runIn(peerNs, ['ping', '-c', '1', '-W', '2', HOST], 10000)
    expect(ping.stdout).toMatch(/1 received/)
  }, 30000)

  it('gives the interface back from the main thread when the switch worker dies', async () => {
    const dying = await Runtime.start(loaded, { netns: hostNs, log: (_source, _level, message) => logs.push(message) })
    await dying.whenRunning()
    expect(execIn(hostNs, ['ip', '-o', 'link', 'show', 'dev', 'fsaf0']).stdout).toContain('NOARP')
    // The worker is killed: it never runs its own close.
    await dying.dataPath.terminate()
    expect(await dying.whenFailed()).toMatch(/exit|terminated/)
    expect(logs).toContain('gave 1 owned interface(s) back to the kernel from the main thread')
    expect(execIn(hostNs, ['ip', '-o', 'link', 'show', 'dev', 'fsaf0']).stdout).not.toContain('NOARP')
    expect(execIn(hostNs, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'fsaf0']).stdout).toContain(`${HOST}/24`)
    expect(execIn(hostNs, ['ip', 'link', 'show', 'dev', 'fsah0']).status).not.toBe(0)
    expect(execIn(hostNs, ['sysctl', '-n', 'net.ipv6.conf.fsaf0.disable_ipv6']).stdout.trim()).toBe('0')
    const ping = await runIn(peerNs, ['ping', '-c', '1', '-W', '2', HOST], 10000)
    expect(ping.stdout).toMatch(/1 received/)
  }, 40000)
})
