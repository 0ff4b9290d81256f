// The switch in its own worker thread: the runtime talks to it by messages
// only. A port that cannot be opened fails Runtime.start with the port's
// error (the worker is ended first); a switch worker that exits or throws is
// logged and stops the runtime (and `flowstack run` exits 1); a normal stop
// gives every memory-wire buffer back.
import { afterAll, describe, expect, it } from 'vitest'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { threadId } from 'node:worker_threads'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { runCommand } from '../../runtime/commands/run.js'
import { createStack } from '../../stacks/sockets/stack.js'
import { InstanceState } from '../../proto/gen/flowstack_pb.js'

const web = fileURLToPath(new URL('../../examples/demo/web.js', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'fs-runtime-switch-'))
const started: Runtime[] = []

afterAll(async () => {
  for (const runtime of started) await runtime.stop()
  rmSync(dir, { recursive: true, force: true })
})

function webConfig() {
  return {
    ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true }, defaultAction: { drop: {} } }],
    instances: [{ name: 'web', app: web, port: 'p0', addresses: ['198.51.100.2/24'], settings: { httpPort: 80, bodyBytes: 4000 } }],
  }
}

async function startWeb(logs: string[]): Promise<Runtime> {
  const runtime = await Runtime.start(parseConfigJson(webConfig()), { log: (source, level, message) => logs.push(`${source} ${level} ${message}`) })
  started.push(runtime)
  await runtime.whenRunning()
  return runtime
}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what}: nothing after ${ms} ms`)), ms))])
}

describe('the switch worker', () => {
  it('runs off the main thread, and a stop after traffic gives every memory-wire buffer back', async () => {
    const runtime = await startWeb([])
    expect(runtime.dataPath.threadId).not.toBe(threadId)
    const peer = await createStack({ port: runtime.memoryPeers.get('w')!, addresses: ['198.51.100.1/24'], dad: false })
    for (let i = 0; i < 3; i++) {
      const res = await peer.fetch('http://198.51.100.2/')
      expect((await res.arrayBuffer()).byteLength).toBe(4000)
    }
    const counters = await runtime.switchCounters()
    expect(counters.instanceTraffic[0].rxPackets).toBeGreaterThan(0)
    expect(counters.portTraffic[0].rxPackets).toBe(counters.instanceTraffic[0].rxPackets) // every packet from the wire went to web
    await peer.close()
    await runtime.stop()
    expect(runtime.dataPath.deathReason).toMatch(/exited with code 0/)
    const pools = runtime.memoryPools()
    expect(pools.map((p) => p.name)).toEqual(['w'])
    expect(pools[0]).toMatchObject({ held: 0, whole: true })
    expect(pools[0].free).toBe(pools[0].total)
    // Counters stay readable after stop (the last ones the switch reported).
    const stat = await runtime.stat()
    expect(Number(stat.instances[0].rxPackets)).toBeGreaterThanOrEqual(counters.instanceTraffic[0].rxPackets)
    await expect(runtime.flows()).rejects.toMatchObject({ code: 'RUNTIME_STOPPED' })
  }, 30000)

  it("fails Runtime.start with the port's FlowstackError when a port cannot be opened, without hanging", async () => {
    const loaded = parseConfigJson({
      ports: [
        { name: 'p0', memory: { wire: 'w', ipOnly: true } },
        { name: 'missing', afpacket: { interface: 'fsnoiface0' } },
      ],
      instances: [{ name: 'web', app: web, port: 'p0', addresses: ['198.51.100.2/24'] }],
    })
    const error = await within(Runtime.start(loaded, { log: () => {} }).then(
      (runtime) => {
        started.push(runtime)
        return null
      },
      (err: unknown) => err as { code?: string; message: string; name: string },
    ), 20000, 'Runtime.start')
    expect(error).not.toBeNull()
    expect(error!.name).toBe('FlowstackError')
    // As root: no such device; without privileges: AF_PACKET is refused. Either way, the port's code.
    expect(error!.code).toMatch(/^PORT_/)
    expect(error!.message).toMatch(/fsnoiface0|permission|EPERM|EACCES/i)
  }, 30000)

  it('stops the runtime with the reason when the worker exits', async () => {
    const logs: string[] = []
    const runtime = await startWeb(logs)
    const failed = runtime.whenFailed()
    await runtime.dataPath.terminate()
    const reason = await within(failed, 15000, 'whenFailed')
    expect(reason).toMatch(/exited with code 1/)
    expect(logs.some((l) => /^runtime error switch worker died: .*exited with code 1; stopping$/.test(l))).toBe(true)
    expect(runtime.instances.map((i) => i.state)).toEqual([InstanceState.STOPPED])
    await expect(runtime.flows()).rejects.toMatchObject({ code: 'RUNTIME_STOPPED' })
    // stop() after that resolves at once (it already ran).
    await within(runtime.stop(), 1000, 'a second stop')
  }, 30000)

  it('stops the runtime with the reason when the worker throws', async () => {
    const logs: string[] = []
    const runtime = await startWeb(logs)
    const failed = runtime.whenFailed()
    runtime.dataPath.postRaw({ type: 'no-such-message' })
    const reason = await within(failed, 15000, 'whenFailed')
    expect(reason).toMatch(/FlowstackError: unknown switch message "no-such-message"/)
    expect(logs.some((l) => l.includes('switch worker died: FlowstackError: unknown switch message'))).toBe(true)
    expect(runtime.instances[0].state).toBe(InstanceState.STOPPED)
  }, 30000)

  it('makes `flowstack run` exit 1 when the switch worker dies', async () => {
    const file = join(dir, 'run.json')
    writeFileSync(file, JSON.stringify({ ...webConfig(), control: { path: join(dir, 'ctl.sock') } }))
    let stdout = ''
    let stderr = ''
    const out = { write: (chunk: string) => ((stdout += chunk), true) } as unknown as NodeJS.WritableStream
    const err = { write: (chunk: string) => ((stderr += chunk), true) } as unknown as NodeJS.WritableStream
    const code = await within(
      runCommand(file, { stdout: out, stderr: err, onStarted: (runtime) => void runtime.whenRunning().then(() => runtime.dataPath.terminate()) }),
      20000,
      'runCommand',
    )
    expect(code).toBe(1)
    expect(stderr).toMatch(/\[runtime\] error: switch worker died: the switch worker exited with code 1; stopping/)
    expect(stderr).toMatch(/flowstack: stopped: the switch failed: the switch worker exited with code 1/)
    expect(stdout).not.toMatch(/flowstack: stopped\n/)
  }, 30000)
})
