// Per-socket kernel fallback: an instance's connect() to loopback is served
// by the kernel (node:net) behind the same API, and counted by reason.
import { afterAll, describe, expect, it } from 'vitest'
import { createServer, type Server } from 'node:net'
import { fileURLToPath } from 'node:url'
import { parseConfigJson } from '../../runtime/config/index.js'
import { Runtime } from '../../runtime/runtime.js'

let runtime: Runtime | undefined
let server: Server | undefined

afterAll(async () => {
  await runtime?.stop()
  server?.close()
})

describe('kernel fallback per socket', () => {
  it('hands a loopback connect to node:net and counts it', async () => {
    server = createServer((socket) => {
      let got = ''
      socket.setEncoding('utf8')
      socket.on('data', (chunk: string) => (got += chunk))
      socket.on('end', () => socket.end(`kernel got: ${got}`))
    })
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', () => resolve()))
    const port = (server.address() as { port: number }).port
    const logs: string[] = []
    let replied: (line: string) => void = () => {}
    const reply = new Promise<string>((resolve) => (replied = resolve))
    const app = fileURLToPath(new URL('./apps/loopback-client.js', import.meta.url))
    const loaded = parseConfigJson({
      ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true } }],
      instances: [{ name: 'lo-user', app, port: 'p0', addresses: ['198.51.100.7/24'], settings: { port } }],
    })
    runtime = await Runtime.start(loaded, {
      reportIntervalMs: 50,
      log: (_source, _level, message) => {
        logs.push(message)
        if (message.startsWith('reply ') || message.startsWith('error ')) replied(message)
      },
    })
    const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('no reply'), 8000))
    expect(await Promise.race([reply, timeout])).toBe('reply kernel got: hello from lo-user')
    await new Promise((resolve) => setTimeout(resolve, 200))
    const fallback = (await runtime.stat()).instances[0].families.find((f) => f.name === 'Fallback')
    expect(fallback?.counters.find((c) => c.name === 'loopback')?.value).toBe(1n)
    // Every reason is reported, the ones that did not happen as 0.
    expect(fallback?.counters.map((c) => [c.name, c.value])).toEqual([['loopback', 1n], ['rule', 0n], ['no-route', 0n]])
    // Nothing of it went through the switch.
    expect((await runtime.switchCounters()).instanceTraffic[0].txPackets).toBe(0)
  }, 20000)
})
