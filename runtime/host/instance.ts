// Supervision of one instance (DESIGN.md §4): a piscina pool of exactly one
// worker runs the instance as a long-lived task. A failed task (the app threw,
// the worker died, the switch found its channel corrupt) stops the instance
// with a logged reason, releases its flows and listeners, and restarts it
// with exponential backoff per its restart policy; nothing is shared with
// other instances, so they carry on.
import { MessageChannel, type MessagePort, type ResourceLimits } from 'node:worker_threads'
import { toJson } from '@bufbuild/protobuf'
import { Piscina } from 'piscina'
import { createChannel } from '../../nexus/channel/index.js'
import { workerEntry } from '../../common/worker-url.js'
import { FlowstackError } from '../../common/errors.js'
import { InstanceSchema, InstanceState, RestartPolicy, type Instance } from '../../proto/gen/flowstack_pb.js'
import type { PortInfo } from '../../nexus/ports/port.js'
import type { RouteSpec } from '../../stacks/core/stack.js'
import type { StackTcpOptions } from '../../stacks/sockets/shell.js'
import type { InstanceDataPath } from '../switch-host.js'
import type { RuleSpec } from '../../classifier/rules.js'
import type { CounterFamilies, InstanceTask, RuntimeMessage, WorkerMessage } from './messages.js'
import type { TlsDefaults } from '../../stacks/sockets/tls-config.js'

export interface InstanceHostOptions {
  index: number
  config: Instance
  appPath: string
  /** Loaded from the instance's `tls` section by the runtime. */
  tls?: TlsDefaults
  portInfo: PortInfo
  /** The switch (in its worker): channels, listeners, flow reports. */
  dataPath: InstanceDataPath
  log: (instance: string, level: 'info' | 'warn' | 'error', message: string) => void
  /** Worker connection reports (ms, default 250). */
  reportIntervalMs?: number
  /** How long a stopping instance may drain before its worker is terminated (default 2000 ms). */
  stopTimeoutMs?: number
  /** Called when the instance failed, before the switch resets its peers and releases its flows. */
  onFailure?: (index: number, reason: string) => void
  /** The instance's latest netstat-style counters. */
  onStats?: (families: CounterFamilies) => void
  /** Index of the instance's port in the config (per-socket fallback rules). */
  portIndex?: number
  /** The classifier's current rules, for the per-socket kernel fallback in the worker. */
  rules?: () => RuleSpec[]
  /** The port owns a wire (AF_PACKET): connects a rule gives to the kernel go to node:net. */
  kernelRules?: boolean
  /** Addresses shared with the kernel and where its listeners show (one port namespace). */
  kernelPorts?: { procNet: string; shared: string[] }
  /** A listener opened (true) or closed (false) in the instance. */
  onListener?: (ipVersion: 4 | 6, localAddress: string, localPort: number, open: boolean) => void
}

export function restartDelay(policy: { backoffInitialMs: number; backoffMaxMs: number }, attempt: number): number {
  const initial = policy.backoffInitialMs > 0 ? policy.backoffInitialMs : 100
  const max = policy.backoffMaxMs > 0 ? policy.backoffMaxMs : 30000
  return Math.min(max, initial * 2 ** Math.min(attempt, 30))
}

function resourceLimits(config: Instance): ResourceLimits {
  const l = config.limits
  const limits: ResourceLimits = {}
  if (l === undefined) return limits
  if (l.maxOldGenerationMb > 0) limits.maxOldGenerationSizeMb = l.maxOldGenerationMb
  if (l.maxYoungGenerationMb > 0) limits.maxYoungGenerationSizeMb = l.maxYoungGenerationMb
  if (l.codeRangeMb > 0) limits.codeRangeSizeMb = l.codeRangeMb
  if (l.stackMb > 0) limits.stackSizeMb = l.stackMb
  return limits
}

/** The instance's TcpSettings as the stack's TCP options (plain data: it crosses to the worker). */
export function tcpOptions(config: Instance): StackTcpOptions {
  const t = config.tcp
  const out: StackTcpOptions = {}
  if (t === undefined) return out
  if (t.receiveBuffer > 0) out.receiveBufferSize = t.receiveBuffer
  if (t.sendBuffer > 0) out.sendBufferSize = t.sendBuffer
  if (t.sack !== undefined) out.sack = t.sack
  if (t.timestamps !== undefined) out.timestamps = t.timestamps
  if (t.windowScaling !== undefined) out.windowScaling = t.windowScaling
  if (t.synRetries > 0) out.synRetries = t.synRetries
  if (t.maxRetransmits > 0) out.maxRetransmits = t.maxRetransmits
  if (t.mss > 0) out.mss = t.mss
  if (t.initialWindow > 0) out.initialWindow = t.initialWindow
  if (t.noDelay) out.noDelay = true
  // A default keep-alive for every connection: first probe after this idle time.
  if (t.keepaliveSeconds > 0) out.keepAlive = { enabled: true, idleMs: t.keepaliveSeconds * 1000 }
  // TIME-WAIT lasts 2 MSL (RFC 9293 3.4.2).
  if (t.timeWaitMs > 0) out.mslMs = Math.max(1, t.timeWaitMs / 2)
  if (t.ephemeralPorts !== undefined) {
    if (t.ephemeralPorts.from !== undefined) out.ephemeralPortMin = t.ephemeralPorts.from
    if (t.ephemeralPorts.to !== undefined) out.ephemeralPortMax = t.ephemeralPorts.to
  }
  return out
}

function routes(config: Instance): RouteSpec[] {
  return config.routes.map((r) => {
    const route: RouteSpec = { to: r.destination === '' ? 'default' : r.destination }
    if (r.gateway !== '') route.via = r.gateway
    if (r.metric > 0) route.metric = r.metric
    return route
  })
}

export class InstanceHost {
  readonly name: string
  state: InstanceState = InstanceState.STOPPED
  restarts = 0
  lastError = ''
  private readonly pool: Piscina
  private abort: AbortController | null = null
  private control: MessagePort | null = null
  private task: Promise<unknown> | null = null
  private stopping = false
  private restartTimer: NodeJS.Timeout | null = null
  private readonly restartTimes: number[] = []
  private readyWaiters: { resolve: () => void; reject: (err: Error) => void }[] = []
  /** The switch's detach of the last ended launch. */
  private detached: Promise<void> = Promise.resolve()
  private readonly reportIntervalMs: number
  /** Counts launches: names the current channel, so a fault about an earlier one is ignored. */
  private generation = 0

  constructor(private readonly options: InstanceHostOptions) {
    this.name = options.config.name
    this.reportIntervalMs = options.reportIntervalMs ?? 250
    const entry = workerEntry('./instance-worker.js', import.meta.url)
    this.pool = new Piscina({
      filename: entry.url.href,
      execArgv: entry.execArgv,
      minThreads: 1,
      maxThreads: 1,
      concurrentTasksPerWorker: 1,
      idleTimeout: 2 ** 31 - 1,
      resourceLimits: resourceLimits(options.config),
      name: 'default',
    })
    // An aborted or crashed task's worker is replaced by piscina; errors are seen through the task.
    this.pool.on('error', () => {})
  }

  /**
   * Resolves once the app's default export returned (the instance is
   * RUNNING); rejects with RUNTIME_INSTANCE_FAILED once it will not run
   * (failed with no restart left) or RUNTIME_STOPPED when it is stopped first.
   */
  whenRunning(): Promise<void> {
    if (this.state === InstanceState.RUNNING) return Promise.resolve()
    if (this.state === InstanceState.FAILED) return Promise.reject(this.failedError())
    if (this.stopping && this.state === InstanceState.STOPPED) return Promise.reject(new FlowstackError('RUNTIME_STOPPED', `instance ${this.name} is stopped`))
    return new Promise((resolve, reject) => this.readyWaiters.push({ resolve, reject }))
  }

  private failedError(): FlowstackError {
    return new FlowstackError('RUNTIME_INSTANCE_FAILED', `instance ${this.name} failed and will not be restarted: ${this.lastError}`)
  }

  /** Ends the waiters of whenRunning: resolved (running) or rejected (failed, stopped). */
  private settleWaiters(err?: Error): void {
    for (const waiter of this.readyWaiters.splice(0)) {
      if (err === undefined) waiter.resolve()
      else waiter.reject(err)
    }
  }

  start(): void {
    this.stopping = false
    this.launch()
  }

  private launch(): void {
    const { config, dataPath, index } = this.options
    this.state = this.restarts === 0 ? InstanceState.STARTING : InstanceState.RESTARTING
    const sab = createChannel({ bufferCount: config.limits?.bufferCount || 1024 })
    const generation = ++this.generation
    dataPath.attach(index, generation, sab)
    const { port1, port2 } = new MessageChannel()
    this.control = port1
    port1.on('message', (message: WorkerMessage) => this.onMessage(message, generation))
    const abort = new AbortController()
    this.abort = abort
    const task: InstanceTask = {
      name: config.name,
      channel: sab,
      portInfo: this.options.portInfo,
      addresses: [...config.addresses],
      routes: routes(config),
      tcp: tcpOptions(config),
      ...(this.options.tls !== undefined ? { tls: this.options.tls } : {}),
      appPath: this.options.appPath,
      config: toJson(InstanceSchema, config),
      control: port2,
      reportIntervalMs: this.reportIntervalMs,
      connectPolicy: { addresses: [...config.addresses], routes: routes(config), rules: this.options.rules?.() ?? [], portIndex: this.options.portIndex ?? 0, kernelRules: this.options.kernelRules === true },
      ...(this.options.kernelPorts !== undefined ? { kernelPorts: this.options.kernelPorts } : {}),
    }
    const run = this.pool.run(task, { transferList: [port2] as never, signal: abort.signal })
    this.task = run
    run.then(
      () => this.ended(null, port1),
      (err: unknown) => this.ended(err, port1),
    )
  }

  private onMessage(message: WorkerMessage, generation: number): void {
    const { dataPath, index, log } = this.options
    switch (message.type) {
      case 'log':
        log(this.name, message.level, message.message)
        break
      case 'ready':
        // The worker posted its listeners before 'ready'; they were forwarded
        // to the switch in order, so once the switch answers the barrier a
        // peer's first SYN finds them (RUNNING means reachable).
        void dataPath.barrier().then(
          () => this.running(generation),
          () => this.running(generation), // the switch is gone: the runtime is stopping anyway
        )
        break
      case 'listen':
        dataPath.listen(index, true, message.ipVersion, message.localAddress, message.localPort)
        this.options.onListener?.(message.ipVersion, message.localAddress, message.localPort, true)
        break
      case 'unlisten':
        dataPath.listen(index, false, message.ipVersion, message.localAddress, message.localPort)
        this.options.onListener?.(message.ipVersion, message.localAddress, message.localPort, false)
        break
      case 'connections':
        dataPath.reconcile(index, message.open, this.reportIntervalMs * 4)
        this.options.onStats?.(message.families)
        break
    }
  }

  private running(generation: number): void {
    if (generation !== this.generation || this.task === null || this.stopping) return
    this.state = InstanceState.RUNNING
    this.settleWaiters()
  }

  /**
   * Stops the instance from outside (the switch found its channel corrupt):
   * terminate its worker. A fault about an earlier launch's channel is ignored.
   */
  fail(reason: string, generation = this.generation): void {
    if (generation !== this.generation || this.abort === null || this.stopping) return
    this.lastError = reason
    this.abort.abort(new Error(reason))
  }

  private ended(err: unknown, control: { close(): void }): void {
    control.close()
    const { dataPath, index, log, config } = this.options
    this.abort = null
    this.task = null
    if (this.stopping) {
      this.detached = dataPath.detach(index, false).then(
        () => {},
        () => {}, // the switch is gone: nothing left to detach from
      )
      this.state = InstanceState.STOPPED
      return
    }
    const reason = err === null ? 'the instance task ended without being stopped' : describe(err, this.lastError)
    this.lastError = reason
    log(this.name, 'error', `stopped: ${reason}`)
    this.options.onFailure?.(index, reason)
    // Applied by the switch before the next launch's attach (one ordered queue).
    this.detached = dataPath.detach(index, true).then(
      ({ probes, released }) => {
        if (probes > 0) log(this.name, 'warn', `resetting the peers of ${probes} connection(s)`)
        if (released > 0) log(this.name, 'warn', `released ${released} flow(s)`)
      },
      (err: unknown) => log(this.name, 'warn', `could not release its flows: ${(err as Error).message}`),
    )
    const restart = config.restart
    const policy = restart?.policy ?? RestartPolicy.RESTART_POLICY_UNSPECIFIED
    if (policy === RestartPolicy.NEVER) {
      this.state = InstanceState.FAILED
      this.settleWaiters(this.failedError())
      return
    }
    const now = Date.now()
    const windowMs = (restart?.windowSeconds || 60) * 1000
    while (this.restartTimes.length > 0 && this.restartTimes[0] < now - windowMs) this.restartTimes.shift()
    if (restart !== undefined && restart.maxRestarts > 0 && this.restartTimes.length >= restart.maxRestarts) {
      log(this.name, 'error', `not restarted: ${restart.maxRestarts} restarts within ${windowMs / 1000} s`)
      this.state = InstanceState.FAILED
      this.settleWaiters(this.failedError())
      return
    }
    const delay = restartDelay({ backoffInitialMs: restart?.backoffInitialMs ?? 0, backoffMaxMs: restart?.backoffMaxMs ?? 0 }, this.restartTimes.length)
    this.restartTimes.push(now)
    this.restarts++
    this.state = InstanceState.RESTARTING
    log(this.name, 'warn', `restarting in ${delay} ms (restart ${this.restarts})`)
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null
      if (!this.stopping) this.launch()
    }, delay)
  }

  /** Asks the app to drain and stop; terminates the worker after the timeout. */
  /** New rules after a reload: the worker's per-socket fallback follows them. */
  updateRules(rules: RuleSpec[]): void {
    this.control?.postMessage({ type: 'rules', rules } satisfies RuntimeMessage)
  }

  async stop(): Promise<void> {
    this.stopping = true
    if (this.restartTimer !== null) clearTimeout(this.restartTimer)
    this.restartTimer = null
    const task = this.task
    if (task !== null) {
      this.control?.postMessage({ type: 'stop' })
      const timeout = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), this.options.stopTimeoutMs ?? 2000).unref())
      const outcome = await Promise.race([task.then(() => 'done', () => 'done'), timeout])
      if (outcome === 'timeout') {
        this.abort?.abort(new Error('stop timeout'))
        await task.catch(() => {})
      }
    } else {
      this.detached = this.options.dataPath.detach(this.options.index, false).then(
        () => {},
        () => {},
      )
    }
    await this.detached
    this.state = InstanceState.STOPPED
    this.settleWaiters(new FlowstackError('RUNTIME_STOPPED', `instance ${this.name} was stopped before it ran`))
    await this.pool.destroy()
  }
}

function describe(err: unknown, hint: string): string {
  if (hint !== '' && (err as { name?: string })?.name === 'AbortError') return hint
  if (err instanceof Error) return `${err.name}: ${err.message}`
  return String(err)
}
