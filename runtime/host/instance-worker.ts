// One instance, hosted as a long-lived piscina task: builds the instance's
// stack over its channel, runs the app module, reports listeners and open
// connections to the runtime, and resolves only when told to stop. The
// task's promise is the instance's life: a rejection (the app threw) or the
// worker dying (an uncaught error, process.exit) is what the supervisor sees.
import * as kernelNet from 'node:net'
import { pathToFileURL } from 'node:url'
import { createStack } from '../../stacks/sockets/stack.js'
import { formatIpAddress, type IpAddress } from '../../stacks/wire/address.js'
import { channelPort } from './channel-port.js'
import { ConnectPolicy } from './connect-policy.js'
import { kernelListens } from '../kernel-ports.js'
import { TcpError } from '../../stacks/core/tcp/types.js'
import type { ConnectionReport, CounterFamilies, InstanceTask, RuntimeMessage, WorkerMessage } from './messages.js'

export interface AppContext {
  name: string
  config: unknown
  log: (message: string) => void
  /** Aborted when the runtime stops the instance (drain, then return). */
  signal: AbortSignal
}

export default async function hostInstance(task: InstanceTask): Promise<{ stopped: true }> {
  const post = (message: WorkerMessage): void => task.control.postMessage(message)
  const port = channelPort(task.channel, task.portInfo)
  const stack = await createStack({ port, addresses: task.addresses, routes: task.routes, tcp: task.tcp, tls: task.tls, dad: false })

  // Per-socket kernel fallback (DESIGN.md §5): a connect the instance cannot
  // serve (loopback, a rule says kernel, no route through its port) is served
  // by the kernel behind the same connect() API (http agents and fetch use
  // stack.net.connect too), counted by reason.
  const policy = new ConnectPolicy(task.connectPolicy)
  const net = stack.net as { connect: (...args: unknown[]) => unknown; createConnection: (...args: unknown[]) => unknown }
  const stackConnect = net.connect.bind(stack.net)
  const connect = (...args: unknown[]): unknown => {
    const first = args[0]
    const options = typeof first === 'object' && first !== null ? (first as { host?: unknown; port?: unknown; path?: unknown }) : undefined
    const host = options !== undefined ? options.host : args[1]
    const port = Number(options !== undefined ? options.port : first)
    // An IPC path has no host: not ours to decide.
    const reason = options?.path === undefined && typeof host === 'string' ? policy.decide(host, port) : null
    if (reason !== null) {
      policy.counts[reason]++
      return (kernelNet.connect as (...a: unknown[]) => unknown)(...args)
    }
    return stackConnect(...args)
  }
  net.connect = connect
  net.createConnection = connect

  // Listeners are registered with the switch as they open (DESIGN.md §3, 2).
  const layer = stack.shell.tcp.layer
  const listen = layer.listen.bind(layer)
  const closeListener = layer.closeListener.bind(layer)
  const announce = (type: 'listen' | 'unlisten', local: IpAddress | null, localPort: number): void => {
    if (local === null) {
      post({ type, ipVersion: 4, localAddress: '0.0.0.0', localPort })
      post({ type, ipVersion: 6, localAddress: '::', localPort })
    } else {
      post({ type, ipVersion: local.version === 6 ? 6 : 4, localAddress: formatIpAddress(local), localPort })
    }
  }
  // One port namespace (DESIGN.md §5): on an address shared with the kernel,
  // a port the kernel listens on is the kernel's.
  const shared = task.kernelPorts?.shared ?? []
  layer.listen = (local, localPort, backlog, onConnection) => {
    if (task.kernelPorts !== undefined && shared.length > 0) {
      const candidates = local === null ? shared : shared.filter((a) => a === formatIpAddress(local))
      for (const address of candidates) {
        if (kernelListens(task.kernelPorts.procNet, address.includes(':') ? 6 : 4, address, localPort)) {
          throw new TcpError('EADDRINUSE', `port ${localPort} on ${address} belongs to the kernel`)
        }
      }
    }
    const listener = listen(local, localPort, backlog, onConnection)
    announce('listen', local, localPort)
    return listener
  }
  layer.closeListener = (listener) => {
    const wasOpen = !listener.closed
    closeListener(listener)
    if (wasOpen) announce('unlisten', listener.local, listener.port)
  }

  // Open connections, batched: the switch releases flows that vanished.
  const report = (): void => {
    const open: ConnectionReport[] = []
    for (const conn of layer.allConnections()) {
      open.push({
        ipVersion: conn.local.version === 6 ? 6 : 4,
        localAddress: formatIpAddress(conn.local),
        localPort: conn.localPort,
        remoteAddress: formatIpAddress(conn.remote),
        remotePort: conn.remotePort,
      })
    }
    const stats = stack.stats()
    const families: CounterFamilies = {
      Ip: numbers(stats.ip.ip),
      Ip6: numbers(stats.ip.ip6),
      Icmp: numbers(stats.ip.icmp),
      Icmp6: numbers(stats.ip.icmp6),
      Tcp: { ...numbers(stats.tcp), CurrEstab: stats.tcpConnections },
      Udp: numbers(stats.ip.udp),
      Udp6: numbers(stats.ip.udp6),
      Fallback: { ...policy.counts },
    }
    post({ type: 'connections', open, families })
  }
  const reporter = setInterval(report, task.reportIntervalMs)
  reporter.unref()

  const abort = new AbortController()
  const stopped = new Promise<void>((resolve) => {
    task.control.on('message', (message: RuntimeMessage) => {
      if (message.type === 'stop') resolve()
      else if (message.type === 'rules') policy.replaceRules(message.rules)
    })
  })
  const context: AppContext = {
    name: task.name,
    config: task.config,
    log: (message: string) => post({ type: 'log', level: 'info', message }),
    signal: abort.signal,
  }
  if (task.appPath !== '') {
    const app = (await import(pathToFileURL(task.appPath).href)) as { default?: unknown }
    if (typeof app.default !== 'function') throw new TypeError(`${task.appPath} has no default export function`)
    await (app.default as (stack: unknown, context: AppContext) => unknown)(stack, context)
  }
  post({ type: 'ready' })
  await stopped
  abort.abort()
  clearInterval(reporter)
  await stack.close()
  await port.close()
  task.control.close()
  return { stopped: true }
}

/** The numeric fields of a counters object (nested objects are skipped). */
function numbers(counters: object): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, value] of Object.entries(counters)) if (typeof value === 'number') out[name] = value
  return out
}
