// `flowstack demo` (what `npm start` runs): the example config on memory
// ports, no privileges. A web instance serves HTTP, a client instance
// requests it through the switch over IPv4 and IPv6; a rule sends port 8080
// to the "kernel" side of the port (here a small stack on the far end of the
// memory wire stands in for the host), another drops a blocked network.
// Prints progress and a short report; exit 0 when everything went as the
// config says it should.
import { fileURLToPath } from 'node:url'
import { createStack, type Stack } from '../../stacks/sockets/stack.js'
import { InstanceState } from '../../proto/gen/flowstack_pb.js'
import { Runtime } from '../runtime.js'

export function demoConfigFile(): string {
  const up = import.meta.url.endsWith('.ts') ? '../../examples/demo/demo.json' : '../../../examples/demo/demo.json'
  return fileURLToPath(new URL(up, import.meta.url))
}

interface ClientResult {
  requests: number
  failed: number
  bytes: number
  kernelRequests: number
  kernelBytes: number
  blockedTimedOut: number
  refusedRetries: number
  errors: string[]
  fatal?: string
}

export interface DemoOptions {
  config?: string
  timeoutMs?: number
  out?: (line: string) => void
}

export async function demoCommand(options: DemoOptions = {}): Promise<number> {
  const out = options.out ?? ((line: string) => process.stdout.write(`${line}\n`))
  const started = performance.now()
  const elapsed = (): string => `${((performance.now() - started) / 1000).toFixed(2)}s`
  let resolveResult: (r: ClientResult) => void = () => {}
  const resultArrived = new Promise<ClientResult>((resolve) => (resolveResult = resolve))
  const runtime = await Runtime.start(options.config ?? demoConfigFile(), {
    log: (source, level, message) => {
      if (source === 'client' && message.startsWith('result ')) {
        resolveResult(JSON.parse(message.slice('result '.length)) as ClientResult)
        return
      }
      out(`${elapsed()} [${source}] ${level === 'info' ? '' : `${level}: `}${message}`)
    },
  })
  let host: Stack | null = null
  let code = 1
  try {
    out(`${elapsed()} runtime up: ${runtime.instances.length} instances on ${runtime.config.ports.length} memory port(s)`)
    // The far end of the wire: stands in for the kernel behind the port.
    const peer = runtime.memoryPeers.get('demo')
    if (peer === undefined) throw new Error('the demo config has no memory wire "demo"')
    host = await createStack({ port: peer, addresses: ['198.51.100.1/24', '2001:db8::1/64'], dad: false })
    const kernelServer = host.http.createServer((_req, res) => res.end('kernel side of wire0\n'))
    await new Promise<void>((resolve) => kernelServer.listen(8080, () => resolve()))
    const startLimit = new Promise<'late'>((resolve) => setTimeout(() => resolve('late'), options.timeoutMs ?? 15000).unref())
    if ((await Promise.race([runtime.whenRunning().then(() => 'up' as const, () => 'late' as const), startLimit])) === 'late') {
      out(`${elapsed()} the instances did not start: ${runtime.instances.map((i) => `${i.name} ${i.lastError || 'starting'}`).join('; ')}`)
      out('demo: FAILED')
      return 1
    }
    out(`${elapsed()} instances running; the client starts its requests`)
    // From the wire into an instance, too: the host asks the web instance once.
    const fromWire = await host.fetch('http://198.51.100.2/').then(async (res) => (await res.arrayBuffer()).byteLength)
    out(`${elapsed()} [wire peer] GET http://198.51.100.2/ -> ${fromWire} bytes`)

    const timeout = new Promise<null>((resolve) => setTimeout(() => resolve(null), options.timeoutMs ?? 15000).unref())
    const result = await Promise.race([resultArrived, timeout])
    // One more report cycle so the instances' counters are current.
    await new Promise((resolve) => setTimeout(resolve, 300))
    const stat = await runtime.stat()
    out('')
    out('--- report ---')
    if (result === null) {
      out('the client did not finish in time')
    } else {
      out(`requests done: ${result.requests} (failed ${result.failed}), ${result.bytes} bytes from web`)
      out(`kernel side: ${result.kernelRequests} requests, ${result.kernelBytes} bytes; blocked network: ${result.blockedTimedOut === 1 ? 'dropped (timed out)' : 'NOT dropped'}`)
      if (result.refusedRetries > 0) out(`retried ${result.refusedRetries} connection(s) refused while the web instance was starting`)
      if (result.errors.length > 0) out(`errors: ${result.errors.join(', ')}`)
    }
    for (const inst of stat.instances) {
      const tcp = inst.families.find((f) => f.name === 'Tcp')
      const segs = tcp === undefined ? '' : ` tcp in/out segs ${tcp.counters.find((c) => c.name === 'inSegs')?.value ?? '?'}/${tcp.counters.find((c) => c.name === 'outSegs')?.value ?? '?'}`
      out(`instance ${inst.name.padEnd(8)} ${InstanceState[inst.state].toLowerCase().padEnd(8)} rx ${inst.rxPackets} tx ${inst.txPackets} packets, restarts ${inst.restarts}${segs}`)
    }
    for (const port of stat.ports) out(`port ${port.name.padEnd(12)} rx ${port.rxPackets} tx ${port.txPackets} packets`)
    const c = stat.classifier!
    out(`decisions by reason: ${c.reasons.filter((r) => r.value > 0n).map((r) => `${r.name} ${r.value}`).join(', ')}`)
    out(`decisions by action: ${c.actions.map((r) => `${r.name} ${r.value}`).join(', ')}`)
    out(`rule hits: ${c.rules.map((r) => `${r.name} ${r.value}`).join(', ')}`)
    out(`flows in table: ${c.flows}; took ${elapsed()}`)
    const clientSettings = runtime.config.instances.find((i) => i.name === 'client')?.settings
    const expected = typeof clientSettings?.requests === 'number' ? clientSettings.requests : 0
    const ok = result !== null && result.fatal === undefined && result.requests === expected && result.failed === 0 && result.kernelRequests > 0 && result.blockedTimedOut === 1 && fromWire > 0
    out(ok ? 'demo: OK' : 'demo: FAILED')
    code = ok ? 0 : 1
  } finally {
    await host?.close()
    await runtime.stop()
  }
  return code
}
