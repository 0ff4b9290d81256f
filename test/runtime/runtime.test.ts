// The runtime with real instance workers on a memory port: a main-thread
// stack on the far end of the wire plays the network. Crash and restart,
// the other instance untouched; the control socket (stat, flows, reload).
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { IncomingMessage } from 'node:http'
import { loadConfig } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { serveControl } from '../../runtime/control.js'
import { flowsCommand, reloadCommand, statCommand } from '../../runtime/commands/ops.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import { InstanceState } from '../../proto/gen/flowstack_pb.js'

const examples = fileURLToPath(new URL('../../examples/demo/', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'fs-runtime-'))

function configJson(extraRules: object[] = []) {
  return {
    ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true }, defaultAction: { drop: {} } }],
    instances: [
      {
        name: 'fragile',
        app: join(examples, 'web.js'),
        port: 'p0',
        addresses: ['198.51.100.2/24'],
        restart: { policy: 'ON_FAILURE', backoffInitialMs: 50, backoffMaxMs: 200 },
        settings: { httpPort: 80, bodyBytes: 100, crashAfter: 1 },
      },
      { name: 'steady', app: join(examples, 'web.js'), port: 'p0', addresses: ['198.51.100.4/24'], settings: { httpPort: 80, bodyBytes: 3000 } },
      { name: 'bulk', app: join(examples, 'web.js'), port: 'p0', addresses: ['198.51.100.5/24'], settings: { httpPort: 80, bodyBytes: 6000000 } },
    ],
    rules: [
      { name: 'to-fragile', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.2/32' }, action: { instance: 'fragile' } },
      { name: 'to-steady', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.4/32' }, action: { instance: 'steady' } },
      { name: 'to-bulk', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.5/32' }, action: { instance: 'bulk' } },
      ...extraRules,
    ],
  }
}

const configFile = join(dir, 'runtime.json')
const socket = join(dir, 'control.sock')
let runtime: Runtime
let peer: Stack
const logs: string[] = []

function get(url: string, agent: unknown): Promise<{ status: number; body: string; instance: string }> {
  return new Promise((resolve, reject) => {
    const req = peer.http.get(url, { agent: agent as never }, (res: IncomingMessage) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => (body += chunk))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, instance: String(res.headers['x-instance']) }))
      res.on('error', reject)
    })
    const timer = setTimeout(() => {
      req.destroy()
      reject(new Error(`timeout ${url}`))
    }, 3000)
    req.on('close', () => clearTimeout(timer))
    req.on('error', reject)
  })
}

async function until(what: string, check: () => boolean, ms = 8000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}

function capture(): { stream: NodeJS.WritableStream; text: () => string } {
  let text = ''
  return { stream: { write: (chunk: string) => ((text += chunk), true) } as unknown as NodeJS.WritableStream, text: () => text }
}

beforeAll(async () => {
  writeFileSync(configFile, JSON.stringify(configJson()))
  runtime = await Runtime.start(await loadConfig(configFile), { log: (s, l, m) => logs.push(`${s} ${l} ${m}`), reportIntervalMs: 100 })
  await serveControl(runtime, socket)
  peer = await createStack({ port: runtime.memoryPeers.get('w')!, addresses: ['198.51.100.1/24'], dad: false })
  await runtime.whenRunning()
}, 20000)

afterAll(async () => {
  await peer?.close()
  await runtime?.stop()
  rmSync(dir, { recursive: true, force: true })
})

describe('Runtime', () => {
  it('restarts an instance that crashed after its first request; the other keeps serving every request', async () => {
    const fragileAgent = new peer.http.Agent({ keepAlive: false })
    const steadyAgent = new peer.http.Agent({ keepAlive: true })
    const first = await get('http://198.51.100.2/', fragileAgent)
    expect(first).toMatchObject({ status: 200, instance: 'fragile' })
    const fragile = runtime.instances[0]
    // An idle connection to the fragile instance: when it dies, the switch resets it on its behalf.
    const idle = peer.net.connect(80, '198.51.100.2')
    await new Promise<void>((resolve, reject) => {
      idle.once('connect', () => resolve())
      idle.once('error', reject)
    })
    const idleEnded = new Promise<string>((resolve) => {
      idle.once('error', (err: NodeJS.ErrnoException) => resolve(String(err.code)))
      idle.once('close', () => resolve('closed'))
    })
    let steadyServed = 0
    // Steady traffic while the fragile instance dies and comes back.
    const steadyLoop = (async () => {
      for (let i = 0; i < 30; i++) {
        const r = await get('http://198.51.100.4/', steadyAgent)
        expect(r.status).toBe(200)
        expect(r.body.length).toBe(3000)
        steadyServed++
      }
    })()
    // The second request triggers the crash (the response may or may not make it out).
    await get('http://198.51.100.2/', fragileAgent).catch(() => null)
    await until('a restart', () => fragile.restarts >= 1 && fragile.state === InstanceState.RUNNING)
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('still open'), 3000))
    expect(await Promise.race([idleEnded, timeout])).toBe('ECONNRESET')
    const counters = await runtime.switchCounters()
    expect(counters.resetProbes).toBeGreaterThanOrEqual(1)
    expect(counters.resetsSent).toBeGreaterThanOrEqual(1) // the exact RST came from the switch, not the restarted stack
    await steadyLoop
    expect(steadyServed).toBe(30)
    expect(runtime.instances[1].restarts).toBe(0)
    expect(runtime.instances[2].restarts).toBe(0)
    expect(runtime.instances[1].state).toBe(InstanceState.RUNNING)
    expect(fragile.lastError).toMatch(/deliberate crash/)
    expect(logs.some((l) => /fragile error stopped: .*deliberate crash/.test(l))).toBe(true)
    // Restarted and serving again (on a fresh channel).
    const again = await get('http://198.51.100.2/', fragileAgent)
    expect(again).toMatchObject({ status: 200, instance: 'fragile' })
    fragileAgent.destroy()
    steadyAgent.destroy()
  }, 30000)

  it('reports stat and flows over the control socket, consistent with the traffic', async () => {
    const agent = new peer.http.Agent({ keepAlive: true })
    for (let i = 0; i < 5; i++) expect((await get('http://198.51.100.4/', agent)).status).toBe(200)
    await new Promise((resolve) => setTimeout(resolve, 250)) // one worker report
    const out = capture()
    expect(await statCommand({ socket, json: true, stdout: out.stream })).toBe(0)
    const stat = JSON.parse(out.text()) as {
      ports: { name: string; rxPackets: string; txPackets: string }[]
      instances: { name: string; state: string; restarts?: number; rxPackets: string; families: { name: string; counters: { name: string; value: string }[] }[] }[]
      classifier: { reasons: { name: string; value?: string }[]; rules: { name: string; value?: string }[] }
    }
    const steady = stat.instances.find((i) => i.name === 'steady')!
    expect(steady.state).toBe('RUNNING')
    const tcp = steady.families.find((f) => f.name === 'Tcp')!
    const inSegs = Number(tcp.counters.find((c) => c.name === 'inSegs')!.value)
    // Every segment the steady stack received came through the switch from the port.
    expect(inSegs).toBeGreaterThan(0)
    expect(Number(steady.rxPackets)).toBeGreaterThanOrEqual(inSegs)
    expect(stat.instances.find((i) => i.name === 'fragile')!.restarts).toBeGreaterThanOrEqual(1)
    expect(Number(stat.ports[0].rxPackets)).toBeGreaterThanOrEqual(Number(steady.rxPackets))
    expect(Number(stat.classifier.rules.find((r) => r.name === 'to-steady')!.value)).toBeGreaterThan(0)

    const flowsOut = capture()
    expect(await flowsCommand({ socket, json: true, owner: 'steady', stdout: flowsOut.stream })).toBe(0)
    const flows = JSON.parse(flowsOut.text()) as { flows: { key: { localAddress: string; localPort: number; remoteAddress: string }; owner: string; packets?: string }[] }
    // The keep-alive connection is in the table, owned by steady, with packets counted.
    const mine = flows.flows.filter((f) => f.key.localAddress === '198.51.100.4' && f.key.remoteAddress === '198.51.100.1')
    expect(mine.length).toBeGreaterThanOrEqual(1)
    expect(mine.every((f) => f.owner === 'steady' && f.key.localPort === 80)).toBe(true)
    expect(Math.max(...mine.map((f) => Number(f.packets ?? 0)))).toBeGreaterThanOrEqual(10)
    agent.destroy()

    const text = capture()
    expect(await statCommand({ socket, stdout: text.stream })).toBe(0)
    expect(text.text()).toMatch(/steady: running/)
  }, 20000)

  it('reloads rules without dropping an established flow; new connections follow the new rules', async () => {
    const agent = new peer.http.Agent({ keepAlive: true, maxSockets: 1 })
    expect((await get('http://198.51.100.4/', agent)).instance).toBe('steady')
    // New rule, higher priority: new connections to 198.51.100.4 are dropped.
    writeFileSync(configFile, JSON.stringify(configJson([{ name: 'close-steady', priority: 50, match: { protocol: 'TCP', localPrefix: '198.51.100.4/32' }, action: { drop: {} } }])))
    const out = capture()
    expect(await reloadCommand({ socket, stdout: out.stream })).toBe(0)
    expect(out.text()).toMatch(/reloaded 4 rule/)
    // The established keep-alive connection still works...
    expect((await get('http://198.51.100.4/', agent)).status).toBe(200)
    // ...a new one is dropped by the new rule.
    const fresh = new peer.http.Agent({ keepAlive: false })
    await expect(get('http://198.51.100.4/', fresh)).rejects.toThrow(/timeout/)
    expect(Number((await runtime.stat()).classifier!.ruleGeneration)).toBe(1)
    // A broken config is refused with check's messages; nothing changes.
    writeFileSync(configFile, '{"ports": 3}')
    const err = capture()
    expect(await reloadCommand({ socket, stderr: err.stream })).toBe(1)
    expect(err.text()).toMatch(/ports/)
    expect(Number((await runtime.stat()).classifier!.ruleGeneration)).toBe(1)
    agent.destroy()
    fresh.destroy()
  }, 20000)

  it('keeps a long download running across a reload that sends new connections elsewhere', async () => {
    writeFileSync(configFile, JSON.stringify(configJson()))
    expect(await reloadCommand({ socket, stdout: capture().stream })).toBe(0)
    const agent = new peer.http.Agent({ keepAlive: false })
    let received = 0
    let reloaded = false
    const download = new Promise<number>((resolve, reject) => {
      const req = peer.http.get('http://198.51.100.5/', { agent: agent as never }, (res: IncomingMessage) => {
        res.on('data', (chunk: Buffer) => {
          received += chunk.length
          if (!reloaded && received > 200000) {
            reloaded = true
            // Mid-download: new connections to the bulk address now go to steady.
            writeFileSync(configFile, JSON.stringify(configJson([{ name: 'bulk-moved', priority: 50, match: { protocol: 'TCP', localPrefix: '198.51.100.5/32' }, action: { instance: 'steady' } }])))
            reloadCommand({ socket, stdout: capture().stream }).then((code) => expect(code).toBe(0), reject)
          }
        })
        res.on('end', () => resolve(received))
        res.on('error', reject)
      })
      req.on('error', reject)
    })
    expect(await download).toBe(6000000)
    expect(reloaded).toBe(true)
    // A new connection to the same address follows the new rule to steady,
    // whose stack does not own that address and ignores it: no answer.
    const steadyBefore = (await runtime.switchCounters()).instanceTraffic[1].rxPackets
    const ruleHits = async (name: string): Promise<bigint> => (await runtime.stat()).classifier!.rules.find((r) => r.name === name)?.value ?? -1n
    const toBulkBefore = await ruleHits('to-bulk')
    const fresh = new peer.http.Agent({ keepAlive: false })
    await expect(get('http://198.51.100.5/', fresh)).rejects.toThrow(/timeout/)
    expect((await runtime.switchCounters()).instanceTraffic[1].rxPackets).toBeGreaterThan(steadyBefore)
    expect(await ruleHits('to-bulk')).toBe(toBulkBefore) // the SYN was not decided by the old rule
    expect((await runtime.stat()).classifier!.rules.find((r) => r.name === 'bulk-moved')?.value).toBeGreaterThanOrEqual(1n)
    agent.destroy()
    fresh.destroy()
  }, 30000)
})
