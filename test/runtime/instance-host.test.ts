// An instance host talks to the switch only through InstanceDataPath (in the
// runtime: SwitchHost, messages to the switch worker). With a recording fake
// in its place: the order of attach / listen / barrier / detach, RUNNING only
// after the barrier, and a fault about an earlier launch's channel ignored.
import { afterEach, describe, expect, it } from 'vitest'
import { fileURLToPath } from 'node:url'
import { parseConfigJson } from '../../runtime/config/index.js'
import { InstanceHost } from '../../runtime/host/instance.js'
import type { InstanceDataPath } from '../../runtime/switch-host.js'
import type { ConnectionReport } from '../../runtime/host/messages.js'
import { InstanceState } from '../../proto/gen/flowstack_pb.js'

const web = fileURLToPath(new URL('../../examples/demo/web.js', import.meta.url))

class RecordingDataPath implements InstanceDataPath {
  readonly calls: string[] = []
  private releaseBarrier: (() => void)[] = []
  holdBarriers = false

  attach(instance: number, generation: number, channel: SharedArrayBuffer): void {
    expect(channel).toBeInstanceOf(SharedArrayBuffer)
    this.calls.push(`attach ${instance} ${generation}`)
  }
  async detach(instance: number, reset: boolean): Promise<{ probes: number; released: number }> {
    this.calls.push(`detach ${instance} ${reset ? 'reset' : 'quiet'}`)
    return { probes: reset ? 2 : 0, released: 3 }
  }
  listen(instance: number, open: boolean, ipVersion: 4 | 6, localAddress: string, localPort: number): void {
    this.calls.push(`${open ? 'listen' : 'unlisten'} ${instance} ${ipVersion} ${localAddress} ${localPort}`)
  }
  reconcile(instance: number, open: ConnectionReport[]): void {
    expect(Array.isArray(open)).toBe(true)
    this.calls.push(`reconcile ${instance}`)
  }
  barrier(): Promise<void> {
    this.calls.push('barrier')
    if (!this.holdBarriers) return Promise.resolve()
    return new Promise((resolve) => this.releaseBarrier.push(resolve))
  }
  openBarriers(): void {
    this.holdBarriers = false
    for (const release of this.releaseBarrier.splice(0)) release()
  }
}

let host: InstanceHost | undefined
afterEach(async () => {
  await host?.stop()
  host = undefined
})

async function until(what: string, check: () => boolean, ms = 10000): Promise<void> {
  const deadline = Date.now() + ms
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

function makeHost(dataPath: InstanceDataPath, logs: string[]): InstanceHost {
  const config = parseConfigJson({
    ports: [{ name: 'p0', memory: { wire: 'ih', ipOnly: true } }],
    instances: [{ name: 'web', app: web, port: 'p0', addresses: ['198.51.100.2/24'], restart: { policy: 'ON_FAILURE', backoffInitialMs: 20, backoffMaxMs: 40 }, settings: { httpPort: 80 } }],
  }).config
  return new InstanceHost({
    index: 0,
    config: config.instances[0],
    appPath: web,
    portInfo: { name: 'web', kind: 'memory', linkType: 'ip', mtu: 1500, offloads: { vnetHdr: false, tso4: false, tso6: false, checksum: false }, queues: 1 },
    dataPath,
    log: (source, level, message) => logs.push(`${source} ${level} ${message}`),
    reportIntervalMs: 50,
  })
}

describe('InstanceHost and the data path', () => {
  it('attaches, forwards listeners, is RUNNING only after the barrier, and detaches quietly on stop', async () => {
    const dataPath = new RecordingDataPath()
    dataPath.holdBarriers = true
    host = makeHost(dataPath, [])
    host.start()
    await until('the barrier after ready', () => dataPath.calls.includes('barrier'))
    // The app is up, but the switch has not confirmed its listeners yet.
    expect(host.state).toBe(InstanceState.STARTING)
    dataPath.openBarriers()
    await host.whenRunning()
    expect(host.state).toBe(InstanceState.RUNNING)
    // A dual-stack listen registers both families before the barrier.
    expect(dataPath.calls.slice(0, 4)).toEqual(['attach 0 1', 'listen 0 4 0.0.0.0 80', 'listen 0 6 :: 80', 'barrier'])
    await until('a connection report', () => dataPath.calls.includes('reconcile 0'))
    await host.stop()
    expect(host.state).toBe(InstanceState.STOPPED)
    expect(dataPath.calls.at(-1)).toBe('detach 0 quiet')
  }, 20000)

  it('ignores a fault about an earlier launch; a current one resets its peers, releases its flows and restarts it', async () => {
    const dataPath = new RecordingDataPath()
    const logs: string[] = []
    host = makeHost(dataPath, logs)
    host.start()
    await host.whenRunning()
    host.fail('channel corrupt: stale', 0) // a generation that is not running
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(host.state).toBe(InstanceState.RUNNING)
    expect(host.restarts).toBe(0)
    host.fail('channel corrupt: index-out-of-range on tx (buffer 9999)', 1)
    await until('the restart', () => host!.restarts === 1 && host!.state === InstanceState.RUNNING)
    expect(host.lastError).toBe('channel corrupt: index-out-of-range on tx (buffer 9999)')
    const detach = dataPath.calls.indexOf('detach 0 reset')
    expect(detach).toBeGreaterThan(0)
    // The next launch's channel is attached after the detach, with the next generation.
    expect(dataPath.calls.indexOf('attach 0 2')).toBeGreaterThan(detach)
    expect(logs).toContain('web warn resetting the peers of 2 connection(s)')
    expect(logs).toContain('web warn released 3 flow(s)')
    expect(logs.some((l) => l === 'web error stopped: channel corrupt: index-out-of-range on tx (buffer 9999)')).toBe(true)
  }, 20000)

  it('rejects whenRunning with RUNTIME_INSTANCE_FAILED when an app fails with no restart left, and with RUNTIME_STOPPED when stopped first', async () => {
    const config = parseConfigJson({
      ports: [{ name: 'p0', memory: { wire: 'ih', ipOnly: true } }],
      instances: [{ name: 'web', app: web, port: 'p0', addresses: ['198.51.100.2/24'], restart: { policy: 'NEVER' }, settings: { httpPort: 70000 } }],
    }).config
    const logs: string[] = []
    host = new InstanceHost({
      index: 0,
      config: config.instances[0],
      appPath: web,
      portInfo: { name: 'web', kind: 'memory', linkType: 'ip', mtu: 1500, offloads: { vnetHdr: false, tso4: false, tso6: false, checksum: false }, queues: 1 },
      dataPath: new RecordingDataPath(),
      log: (source, level, message) => logs.push(`${source} ${level} ${message}`),
      reportIntervalMs: 50,
    })
    const waiting = host.whenRunning()
    host.start()
    await expect(waiting).rejects.toMatchObject({ code: 'RUNTIME_INSTANCE_FAILED' })
    expect(host.state).toBe(InstanceState.FAILED)
    // Asked again afterwards: the same answer at once.
    await expect(host.whenRunning()).rejects.toMatchObject({ code: 'RUNTIME_INSTANCE_FAILED', message: expect.stringMatching(/^instance web failed/) })

    const stopped = makeHost(new RecordingDataPath(), [])
    const early = expect(stopped.whenRunning()).rejects.toMatchObject({ code: 'RUNTIME_STOPPED' })
    await stopped.stop()
    await early
    // Asked after the stop: at once, not never.
    await expect(stopped.whenRunning()).rejects.toMatchObject({ code: 'RUNTIME_STOPPED' })
  }, 20000)
})
