// No rules at all: two instances on one port both listen on any:80, and the
// listeners they register (per owned address) route each peer to the right one.
import { afterAll, describe, expect, it } from 'vitest'
import { fileURLToPath } from 'node:url'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'

const web = fileURLToPath(new URL('../../examples/demo/web.js', import.meta.url))
let runtime: Runtime | undefined
let peer: Stack | undefined

afterAll(async () => {
  await peer?.close()
  await runtime?.stop()
})

describe('listener registration', () => {
  it('routes by the listeners instances open, without rules', async () => {
    runtime = await Runtime.start(
      parseConfigJson({
        ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true }, defaultAction: { drop: {} } }],
        instances: [
          { name: 'one', app: web, port: 'p0', addresses: ['198.51.100.11/24', '2001:db8::11/64'], settings: { httpPort: 80 } },
          { name: 'two', app: web, port: 'p0', addresses: ['198.51.100.12/24'], settings: { httpPort: 80 } },
        ],
      }),
      { log: () => {} },
    )
    await runtime.whenRunning()
    peer = await createStack({ port: runtime.memoryPeers.get('w')!, addresses: ['198.51.100.1/24', '2001:db8::1/64'], dad: false })
    const instanceAt = async (url: string): Promise<string | null> => {
      const res = await peer!.fetch(url)
      await res.arrayBuffer()
      return res.headers.get('x-instance')
    }
    // The worker posts 'listen' before 'ready' on the same port, so whenRunning() implies registration.
    expect(await instanceAt('http://198.51.100.11/')).toBe('one')
    expect(await instanceAt('http://198.51.100.12/')).toBe('two')
    expect(await instanceAt('http://[2001:db8::11]/')).toBe('one')
    const reasons = (await runtime.stat()).classifier!.reasons
    expect(Number(reasons.find((r) => r.name === 'listener')!.value)).toBeGreaterThanOrEqual(3)
    expect(Number(reasons.find((r) => r.name === 'rule')!.value)).toBe(0)
  }, 20000)
})
