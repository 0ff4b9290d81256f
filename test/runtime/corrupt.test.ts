// An instance that corrupts its channel is stopped by the switch with the
// reason logged (here restart NEVER: it stays FAILED); the other instance
// keeps serving.
import { afterAll, describe, expect, it } from 'vitest'
import { fileURLToPath } from 'node:url'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import { InstanceState } from '../../proto/gen/flowstack_pb.js'

const web = fileURLToPath(new URL('../../examples/demo/web.js', import.meta.url))
const hostile = fileURLToPath(new URL('./apps/corrupt-channel.js', import.meta.url))
let runtime: Runtime | undefined
let peer: Stack | undefined

afterAll(async () => {
  await peer?.close()
  await runtime?.stop()
})

describe('a corrupt instance channel', () => {
  it('stops that instance with the reason, and only that one', async () => {
    const logs: string[] = []
    runtime = await Runtime.start(
      parseConfigJson({
        ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true }, defaultAction: { drop: {} } }],
        instances: [
          { name: 'hostile', app: hostile, port: 'p0', addresses: ['198.51.100.20/24'], restart: { policy: 'NEVER' } },
          { name: 'web', app: web, port: 'p0', addresses: ['198.51.100.21/24'], settings: { httpPort: 80 } },
        ],
      }),
      { log: (source, level, message) => logs.push(`${source} ${level} ${message}`) },
    )
    const hostileHost = runtime.instances[0]
    const deadline = Date.now() + 8000
    while (hostileHost.state !== InstanceState.FAILED && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 25))
    expect(hostileHost.state).toBe(InstanceState.FAILED)
    expect(hostileHost.lastError).toMatch(/channel corrupt: index-out-of-range|channel corrupt: .*index/i)
    expect(logs.some((l) => l.startsWith('hostile error stopped: channel corrupt'))).toBe(true)
    await runtime.instances[1].whenRunning()
    peer = await createStack({ port: runtime.memoryPeers.get('w')!, addresses: ['198.51.100.1/24'], dad: false })
    const res = await peer.fetch('http://198.51.100.21/')
    expect(res.status).toBe(200)
    expect((await res.arrayBuffer()).byteLength).toBe(1024)
    expect(runtime.instances[1].restarts).toBe(0)
  }, 20000)
})
