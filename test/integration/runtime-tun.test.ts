// Two instances behind one TUN port, each with its own app; the kernel's
// curl, in a namespace the test made, reaches each by its address over IPv4
// and IPv6. Needs root (network namespaces): fails, never skips, without it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fileURLToPath } from 'node:url'
import { join } from 'node:path'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, runIn, spawnIn } from '../helpers/netns.js'

const examples = fileURLToPath(new URL('../../examples/demo/', import.meta.url))
let ns = ''
let runtime: Runtime | undefined

beforeAll(async () => {
  cleanupNamespaces('fs-rtun-')
  ns = createNamespace('rtun')
  const web = join(examples, 'web.js')
  const loaded = parseConfigJson(
    {
      ports: [{ name: 'tun0', tun: { device: 'fsrt0', kernelAddresses: ['198.51.100.1/24', '2001:db8::1/64'] }, defaultAction: { kernel: {} } }],
      instances: [
        { name: 'alpha', app: web, port: 'tun0', addresses: ['198.51.100.2/24', '2001:db8::2/64'], settings: { httpPort: 80, bodyBytes: 2000 } },
        { name: 'beta', app: web, port: 'tun0', addresses: ['198.51.100.3/24', '2001:db8::3/64'], settings: { httpPort: 8000, bodyBytes: 70000 } },
        {
          name: 'fragile',
          app: web,
          port: 'tun0',
          addresses: ['198.51.100.4/24'],
          restart: { policy: 'ON_FAILURE', backoffInitialMs: 50, backoffMaxMs: 200 },
          settings: { httpPort: 80, bodyBytes: 100, crashAfter: 1 },
        },
      ],
      rules: [
        { name: 'alpha', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.2/32' }, action: { instance: 'alpha' } },
        { name: 'alpha6', priority: 10, match: { protocol: 'TCP', localPrefix: '2001:db8::2/128' }, action: { instance: 'alpha' } },
        { name: 'beta', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.3/32' }, action: { instance: 'beta' } },
        { name: 'beta6', priority: 10, match: { protocol: 'TCP', localPrefix: '2001:db8::3/128' }, action: { instance: 'beta' } },
        { name: 'fragile', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.4/32' }, action: { instance: 'fragile' } },
      ],
    },
    { baseDir: examples },
  )
  runtime = await Runtime.start(loaded, { netns: ns, log: () => {} })
  await runtime.whenRunning()
}, 30000)

afterAll(async () => {
  await runtime?.stop()
  if (ns !== '') deleteNamespace(ns)
})

async function curl(url: string, allowFailure = false): Promise<{ status: number; instance: string; bytes: number }> {
  const r = await runIn(ns, ['curl', '-sS', '--max-time', '8', '-D', '-', '-o', '/dev/null', '-w', 'BYTES=%{size_download}\\n', url], 15000)
  if (!allowFailure) expect(r.stderr).toBe('')
  const status = Number(/^HTTP\/1\.1 (\d+)/m.exec(r.stdout)?.[1] ?? 0)
  const instance = /^x-instance: (\S+)/im.exec(r.stdout)?.[1] ?? ''
  const bytes = Number(/BYTES=(\d+)/.exec(r.stdout)?.[1] ?? -1)
  return { status, instance, bytes }
}

describe('runtime on a TUN port', () => {
  it('serves two instances to the kernel over IPv4 and IPv6', async () => {
    expect(await curl('http://198.51.100.2/')).toEqual({ status: 200, instance: 'alpha', bytes: 2000 })
    expect(await curl('http://[2001:db8::2]/')).toEqual({ status: 200, instance: 'alpha', bytes: 2000 })
    expect(await curl('http://198.51.100.3:8000/')).toEqual({ status: 200, instance: 'beta', bytes: 70000 })
    expect(await curl('http://[2001:db8::3]:8000/')).toEqual({ status: 200, instance: 'beta', bytes: 70000 })
    const stat = await runtime!.stat()
    expect(Number(stat.ports[0].rxPackets)).toBeGreaterThan(0)
    expect(stat.instances.map((i) => i.restarts)).toEqual([0, 0, 0])
    // Anything else the kernel sends (IPv6 neighbour discovery, MLD) is counted, not delivered.
    expect(Number(stat.classifier!.actions.find((a) => a.name === 'instance')!.value)).toBeGreaterThan(0)
  }, 60000)

  it('restarts an app that throws after its first request; the other instances serve every request meanwhile', async () => {
    expect(await curl('http://198.51.100.4/')).toEqual({ status: 200, instance: 'fragile', bytes: 100 })
    const fragile = runtime!.instances[2]
    // An idle kernel connection to the fragile app: when the app dies, the switch resets it on its behalf.
    const idle = spawnIn(ns, ['sh', '-c', 'sleep 8 | socat -d - TCP:198.51.100.4:80'])
    let idleErr = ''
    idle.stderr!.on('data', (d: Buffer) => (idleErr += d.toString()))
    const idleExit = new Promise<number | null>((resolve) => idle.once('exit', (code) => resolve(code)))
    await runIn(ns, ['sh', '-c', 'for i in $(seq 50); do ss -Htn state established dst 198.51.100.4 | grep -q . && exit 0; sleep 0.05; done; exit 1'])
    // The second request makes the app throw (its response may or may not get out).
    const crashing = curl('http://198.51.100.4/', true)
    const others = Promise.all(Array.from({ length: 6 }, (_, i) => curl(i % 2 === 0 ? 'http://198.51.100.2/' : 'http://[2001:db8::3]:8000/')))
    await crashing
    for (const r of await others) expect(r.status).toBe(200)
    const deadline = Date.now() + 8000
    while (!(fragile.restarts >= 1 && fragile.lastError !== '') && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25))
    expect(fragile.restarts).toBe(1)
    expect(fragile.lastError).toMatch(/deliberate crash/)
    // The idle connection was reset (socat reports it as a warning), and the RST came from the switch.
    const resetDeadline = Date.now() + 5000
    while (!/Connection reset by peer/.test(idleErr) && Date.now() < resetDeadline) await new Promise((resolve) => setTimeout(resolve, 25))
    expect(idleErr).toMatch(/Connection reset by peer/)
    expect((await runtime!.switchCounters()).resetsSent).toBeGreaterThanOrEqual(1)
    idle.kill()
    await idleExit
    await fragile.whenRunning()
    expect(await curl('http://198.51.100.4/')).toEqual({ status: 200, instance: 'fragile', bytes: 100 })
    expect(runtime!.instances[0].restarts + runtime!.instances[1].restarts).toBe(0)
    // The flow table names the owners of what curl opened; its counters add up.
    const flows = (await runtime!.flows()).flows
    expect(flows.some((f) => f.owner === 'alpha' && f.key?.localAddress === '198.51.100.2' && f.key.localPort === 80)).toBe(true)
    const stat = await runtime!.stat()
    const delivered = stat.instances.reduce((sum, i) => sum + Number(i.rxPackets), 0)
    expect(Number(stat.ports[0].rxPackets)).toBeGreaterThanOrEqual(delivered)
  }, 60000)
})
