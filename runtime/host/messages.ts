// Messages between an instance worker and the runtime (one MessagePort per
// instance). Control path only: packets never travel here.
import type { PortInfo } from '../../nexus/ports/port.js'
import type { RouteSpec } from '../../stacks/core/stack.js'
import type { StackTcpOptions } from '../../stacks/sockets/shell.js'
import type { TlsDefaults } from '../../stacks/sockets/tls-config.js'
import type { MessagePort } from 'node:worker_threads'
import type { RuleSpec } from '../../classifier/rules.js'
import type { ConnectPolicySpec } from './connect-policy.js'

/** What the runtime hands to the piscina task that hosts one instance. */
export interface InstanceTask {
  name: string
  channel: SharedArrayBuffer
  portInfo: PortInfo
  addresses: string[]
  routes: RouteSpec[]
  tcp: StackTcpOptions
  /** The instance's TLS identity and policy (files already read), when it has a `tls` section. */
  tls?: TlsDefaults
  /** Absolute path of the app module, or '' for an instance without an app. */
  appPath: string
  /** The instance's config as JSON (context.config). */
  config: unknown
  control: MessagePort
  /** How often the worker reports its open connections (ms). */
  reportIntervalMs: number
  /** What the worker needs to decide which connects the kernel serves (DESIGN.md §5). */
  connectPolicy: ConnectPolicySpec
  /** Addresses the instance shares with the kernel, and where to see the kernel's listeners (one port namespace). */
  kernelPorts?: { procNet: string; shared: string[] }
}

/** A connection as the worker reports it; addresses in text form. */
export interface ConnectionReport {
  ipVersion: 4 | 6
  localAddress: string
  localPort: number
  remoteAddress: string
  remotePort: number
}

/** `netstat -s` style families (Ip, Ip6, Icmp, Icmp6, Tcp, Udp, Udp6) of the instance's stack. */
export type CounterFamilies = Record<string, Record<string, number>>

export type WorkerMessage =
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }
  | { type: 'ready' }
  | { type: 'listen' | 'unlisten'; ipVersion: 4 | 6; localAddress: string; localPort: number }
  | { type: 'connections'; open: ConnectionReport[]; families: CounterFamilies }

export type RuntimeMessage = { type: 'stop' } | { type: 'rules'; rules: RuleSpec[] }
