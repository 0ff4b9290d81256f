// `flowstack run` as an operator runs it, inside a network namespace the test
// made, on a TUN port: the kernel's curl is the client. A blue/green move:
// two instances own the same address, a rule sends it to blue; while curl's
// long (rate-limited) download from blue runs, `flowstack reload` puts a
// higher-priority rule to green in place. The download completes from blue;
// new connections are served by green. `flowstack stat --json` and `flows
// --json` agree with the traffic. Needs root: fails, never skips, without it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cleanupNamespaces, createNamespace, deleteNamespace, runIn, spawnIn, waitForOutput } from '../helpers/netns.js'

const root = fileURLToPath(new URL('../../', import.meta.url))
const web = join(root, 'examples/demo/web.js')
const dir = mkdtempSync(join(tmpdir(), 'fs-rcli-'))
const socket = join(dir, 'ctl.sock')
const configFile = join(dir, 'config.json')
const DOWNLOAD_BYTES = 6_000_000
const RATE = '1500K' // curl --limit-rate: the download lasts ~4 s, the reload lands inside it

let ns = ''
let child: ChildProcess | undefined
let output = ''

function config(extraRules: object[] = []): string {
  return JSON.stringify({
    ports: [{ name: 'tun0', tun: { device: 'fsrc0', kernelAddresses: ['198.51.100.1/24', '2001:db8::1/64'] }, defaultAction: { drop: {} } }],
    instances: [
      { name: 'blue', app: web, port: 'tun0', addresses: ['198.51.100.2/24', '2001:db8::2/64'], settings: { httpPort: 80, bodyBytes: DOWNLOAD_BYTES } },
      { name: 'green', app: web, port: 'tun0', addresses: ['198.51.100.2/24', '2001:db8::2/64'], settings: { httpPort: 80, bodyBytes: 5000 } },
    ],
    rules: [
      { name: 'to-blue', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.2/32' }, action: { instance: 'blue' } },
      { name: 'to-blue6', priority: 10, match: { protocol: 'TCP', localPrefix: '2001:db8::2/128' }, action: { instance: 'blue' } },
      ...extraRules,
    ],
    control: { path: socket },
  })
}

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'runtime/cli.ts', ...args], { cwd: root, encoding: 'utf8', timeout: 20000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

interface CurlResult {
  code: number
  status: number
  instance: string
  bytes: number
  stderr: string
}

async function curl(url: string, extra: string[] = [], timeoutMs = 15000): Promise<CurlResult> {
  const r = await runIn(ns, ['curl', '-sS', '--max-time', '12', ...extra, '-D', '-', '-o', '/dev/null', '-w', 'BYTES=%{size_download}\\n', url], timeoutMs)
  return {
    code: r.status ?? -1,
    status: Number(/^HTTP\/1\.1 (\d+)/m.exec(r.stdout)?.[1] ?? 0),
    instance: /^x-instance: (\S+)/im.exec(r.stdout)?.[1] ?? '',
    bytes: Number(/BYTES=(\d+)/.exec(r.stdout)?.[1] ?? -1),
    stderr: r.stderr,
  }
}

type Counter = { name: string; value?: string }
interface StatJson {
  ports: { name: string; rxPackets?: string; txPackets?: string }[]
  instances: { name: string; state: string; rxPackets?: string; txPackets?: string; families: { name: string; counters: Counter[] }[] }[]
  classifier: { ruleGeneration?: string; rules: Counter[]; reasons: Counter[]; actions: Counter[] }
}
interface FlowsJson {
  flows?: { key: { protocol: number; localAddress: string; localPort: number; remoteAddress: string; remotePort: number }; owner: string; state: string; packets?: string; bytes?: string }[]
}

function stat(): StatJson {
  const r = cli('stat', '--json', '--socket', socket)
  expect(r.stderr).toBe('')
  expect(r.status).toBe(0)
  return JSON.parse(r.stdout) as StatJson
}

function flows(): FlowsJson {
  const r = cli('flows', '--json', '--socket', socket)
  expect(r.status).toBe(0)
  return JSON.parse(r.stdout) as FlowsJson
}

const value = (counters: Counter[], name: string): number => Number(counters.find((c) => c.name === name)?.value ?? 0)

beforeAll(async () => {
  cleanupNamespaces('fs-rcli-')
  ns = createNamespace('rcli')
  writeFileSync(configFile, config())
  // The whole runtime runs in the namespace, as `ip netns exec NS flowstack run` would.
  child = spawnIn(ns, [process.execPath, '--import', 'tsx', join(root, 'runtime/cli.ts'), 'run', configFile])
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()))
  await waitForOutput(child, 'flowstack: running', 30000)
}, 40000)

afterAll(async () => {
  if (child !== undefined && child.exitCode === null) {
    const exited = new Promise((resolve) => child!.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }
  if (ns !== '') deleteNamespace(ns)
  rmSync(dir, { recursive: true, force: true })
})

describe('flowstack run in a namespace, driven by the CLI', () => {
  it('serves blue over IPv4 and IPv6 before the reload', async () => {
    expect(await curl('http://198.51.100.2/')).toMatchObject({ code: 0, status: 200, instance: 'blue', bytes: DOWNLOAD_BYTES })
    expect(await curl('http://[2001:db8::2]/')).toMatchObject({ code: 0, status: 200, instance: 'blue', bytes: DOWNLOAD_BYTES })
  }, 30000)

  it('keeps a long download on blue across a reload that sends new connections to green', async () => {
    const download = curl('http://198.51.100.2/', ['--limit-rate', RATE], 30000)
    // Let the download get going, then look at its flow while it runs.
    await new Promise((resolve) => setTimeout(resolve, 1200))
    const during = flows().flows ?? []
    const mine = during.filter((f) => f.key.localAddress === '198.51.100.2' && f.key.localPort === 80 && f.key.remoteAddress === '198.51.100.1')
    expect(mine.length).toBe(1)
    expect(mine[0].owner).toBe('blue')
    expect(Number(mine[0].packets ?? 0)).toBeGreaterThan(10)

    writeFileSync(configFile, config([
      { name: 'to-green', priority: 50, match: { protocol: 'TCP', localPrefix: '198.51.100.2/32' }, action: { instance: 'green' } },
      { name: 'to-green6', priority: 50, match: { protocol: 'TCP', localPrefix: '2001:db8::2/128' }, action: { instance: 'green' } },
    ]))
    const reload = cli('reload', configFile, '--socket', socket)
    expect(reload.stderr).toBe('')
    expect(reload.status).toBe(0)
    expect(reload.stdout).toMatch(/reloaded 4 rule/)

    // New connections, both families, follow the new rule while the download runs.
    const fresh4 = await curl('http://198.51.100.2/')
    const fresh6 = await curl('http://[2001:db8::2]/')
    expect(fresh4).toMatchObject({ code: 0, status: 200, instance: 'green', bytes: 5000 })
    expect(fresh6).toMatchObject({ code: 0, status: 200, instance: 'green', bytes: 5000 })

    const done = await download
    expect(done.stderr).toBe('')
    expect(done).toMatchObject({ code: 0, status: 200, instance: 'blue', bytes: DOWNLOAD_BYTES })
  }, 60000)

  it('reports stat and flows consistent with the traffic', async () => {
    // A keep-alive connection to green, held open after its one request: it is in the table.
    const held = spawnIn(ns, ['sh', '-c', "(printf 'GET / HTTP/1.1\\r\\nHost: blue-green\\r\\n\\r\\n'; sleep 3) | socat - TCP:198.51.100.2:80"])
    let answer = ''
    held.stdout!.on('data', (d: Buffer) => (answer += d.toString()))
    const heldExit = new Promise((resolve) => held.once('exit', resolve))
    await waitForOutput(held, 'x-instance: green', 10000)
    // Its port, from the kernel's side (earlier, closed connections' flows may still await release).
    const established = (await runIn(ns, ['ss', '-Htn', 'state', 'established', 'dst', '198.51.100.2'])).stdout
    const heldPort = Number(/198\.51\.100\.1:(\d+)/.exec(established)?.[1] ?? -1)
    const table = flows().flows ?? []
    const open = table.filter((f) => f.key.localAddress === '198.51.100.2' && f.key.localPort === 80 && f.key.remotePort === heldPort)
    expect(open).toHaveLength(1)
    expect(open[0]).toMatchObject({ owner: 'green', state: 'established', key: { remoteAddress: '198.51.100.1' } })
    expect(Number(open[0].packets)).toBeGreaterThanOrEqual(3) // SYN, ACK, request
    expect(Number(open[0].bytes)).toBeGreaterThan(60)
    // What the instances sent to the kernel left on the port: listed as "wire", never as the port's default (drop).
    expect(table.filter((f) => f.owner === 'drop' && f.key.protocol === 6)).toEqual([])
    expect(table.filter((f) => f.owner === 'wire').length).toBeGreaterThanOrEqual(1)
    await heldExit
    expect(answer).toMatch(/^HTTP\/1\.1 200/)

    const s = stat()
    expect(s.classifier.ruleGeneration).toBe('1')
    const blue = s.instances.find((i) => i.name === 'blue')!
    const green = s.instances.find((i) => i.name === 'green')!
    expect(blue.state).toBe('RUNNING')
    expect(green.state).toBe('RUNNING')
    // blue sent three 6 MB bodies (two before the reload, the long one across it);
    // its TCP counters say so, and every segment it took came through the port.
    const blueTcp = blue.families.find((f) => f.name === 'Tcp')!.counters
    expect(value(blueTcp, 'outSegs')).toBeGreaterThan((3 * DOWNLOAD_BYTES) / 65536)
    expect(value(blueTcp, 'passiveOpens')).toBe(3)
    const greenTcp = green.families.find((f) => f.name === 'Tcp')!.counters
    expect(value(greenTcp, 'passiveOpens')).toBe(3)
    // Nothing was dropped: the port default (drop) saw only the kernel's own chatter (NDP, MLD).
    const actions = s.classifier.actions
    expect(value(actions, 'wire')).toBeGreaterThan(3 * DOWNLOAD_BYTES / 65536)
    expect(value(actions, 'drop')).toBeLessThan(50)
    const portRx = Number(s.ports[0].rxPackets ?? 0)
    expect(portRx).toBeGreaterThanOrEqual(Number(blue.rxPackets ?? 0) + Number(green.rxPackets ?? 0))
    expect(Number(blue.rxPackets ?? 0)).toBeGreaterThanOrEqual(value(blueTcp, 'inSegs'))
    // Each connection's SYN was decided by its family's rule (a closed flow's
    // last segments can be decided by a rule again, hence at least).
    expect(value(s.classifier.rules, 'to-blue')).toBeGreaterThanOrEqual(2)
    expect(value(s.classifier.rules, 'to-blue6')).toBeGreaterThanOrEqual(1)
    expect(value(s.classifier.rules, 'to-green')).toBeGreaterThanOrEqual(2)
    expect(value(s.classifier.rules, 'to-green6')).toBeGreaterThanOrEqual(1)
    expect(value(s.classifier.reasons, 'flow')).toBeGreaterThan(portRx / 2)
  }, 60000)

  it('stops cleanly on SIGTERM and removes its control socket', async () => {
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)))
    child!.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(output).toMatch(/flowstack: stopped/)
    expect(existsSync(socket)).toBe(false)
    const link = spawnSync('ip', ['-n', ns, 'link', 'show', 'fsrc0'], { encoding: 'utf8' })
    expect(link.status).not.toBe(0) // the TUN it created is gone
  }, 30000)
})
