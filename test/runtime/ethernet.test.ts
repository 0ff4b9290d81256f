// The runtime on an Ethernet memory port: ARP and IPv6 neighbour discovery
// are steered to the instance that owns the address asked about, frames
// between instances go by MAC, and the whole demo runs over Ethernet too.
import { afterAll, describe, expect, it } from 'vitest'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'
import { demoCommand } from '../../runtime/commands/demo.js'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'

const examples = fileURLToPath(new URL('../../examples/demo/', import.meta.url))
const dir = mkdtempSync(join(tmpdir(), 'fs-runtime-eth-'))
let runtime: Runtime | undefined
let peer: Stack | undefined

afterAll(async () => {
  await peer?.close()
  await runtime?.stop()
  rmSync(dir, { recursive: true, force: true })
})

describe('Ethernet ports', () => {
  it('resolves each instance by ARP and NDP and serves it over IPv4 and IPv6', async () => {
    runtime = await Runtime.start(
      parseConfigJson({
        ports: [{ name: 'eth0', memory: { wire: 'w' }, defaultAction: { drop: {} } }],
        instances: [
          { name: 'one', app: join(examples, 'web.js'), port: 'eth0', addresses: ['198.51.100.11/24', '2001:db8::11/64'], settings: { httpPort: 80, bodyBytes: 5000 } },
          { name: 'two', app: join(examples, 'web.js'), port: 'eth0', addresses: ['198.51.100.12/24', '2001:db8::12/64'], settings: { httpPort: 80, bodyBytes: 6000 } },
        ],
      }),
      { log: () => {} },
    )
    await runtime.whenRunning()
    peer = await createStack({ port: runtime.memoryPeers.get('w')!, addresses: ['198.51.100.1/24', '2001:db8::1/64'], dad: false })
    for (const [url, instance, bytes] of [
      ['http://198.51.100.11/', 'one', 5000],
      ['http://198.51.100.12/', 'two', 6000],
      ['http://[2001:db8::11]/', 'one', 5000],
      ['http://[2001:db8::12]/', 'two', 6000],
    ] as const) {
      const res = await peer.fetch(url)
      expect(res.headers.get('x-instance')).toBe(instance)
      expect((await res.arrayBuffer()).byteLength).toBe(bytes)
    }
    // No TCP or UDP packet was refused as not belonging to a flow of its instance.
    expect((await runtime.stat()).classifier!.spoofed.find((s) => s.name === 'flow')!.value).toBe(0n)
  }, 20000)

  it('runs the demo with both instances on an Ethernet wire', async () => {
    const demo = JSON.parse(readFileSync(join(examples, 'demo.json'), 'utf8')) as { ports: { memory: { ipOnly?: boolean } }[]; instances: { app: string }[] }
    delete demo.ports[0].memory.ipOnly
    for (const instance of demo.instances) instance.app = join(examples, instance.app)
    const file = join(dir, 'demo-ethernet.json')
    writeFileSync(file, JSON.stringify(demo))
    const lines: string[] = []
    expect(await demoCommand({ config: file, out: (line) => lines.push(line) })).toBe(0)
    expect(lines.join('\n')).toMatch(/requests done: 60 \(failed 0\)/)
  }, 30000)
})
