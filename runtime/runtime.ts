// The runtime (DESIGN.md §2, §4): loads and validates the config, starts the
// switch worker (which opens the configured ports and runs the classifier and
// the switch: runtime/switch-worker.ts), hosts one instance per configured
// app, and answers the control requests (stat, flows, reload). The main
// thread keeps supervision only: instances, restarts, kernel port
// reservations, the control socket, signals and logs.
import { loadTlsDefaults, type TlsConfigLike } from '../stacks/sockets/tls-config.js'
import { create, fromBinary, toBinary } from '@bufbuild/protobuf'
import {
  ConfigSchema,
  CounterFamilySchema,
  CounterSchema,
  FlowsResponseSchema,
  ReloadResponseSchema,
  StatResponseSchema,
  ConfigProblemSchema,
  type Config,
  type FlowsResponse,
  type ReloadResponse,
  type StatResponse,
} from '../proto/gen/flowstack_pb.js'
import { compileRules, type RuleSpec } from '../classifier/index.js'
import { attachMemoryPort, type AttachedMemoryPort } from '../nexus/ports/memory.js'
import type { PortInfo } from '../nexus/ports/port.js'
import { FlowstackError } from '../common/errors.js'
import { ConfigError, loadConfig, type LoadedConfig } from './config/index.js'
import { InstanceHost } from './host/instance.js'
import type { CounterFamilies } from './host/messages.js'
import { KernelPorts } from './kernel-ports.js'
import { runRestorePlan, type HostRestorePlan } from './host-tap.js'
import { SwitchHost } from './switch-host.js'
import type { StartAnswer, StatAnswer, SwitchCounters } from './switch-protocol.js'
import { addressOnly, instancePortIndexes, sameTopology } from './topology.js'

export { instanceMac } from './topology.js'

export type RuntimeLog = (source: string, level: 'info' | 'warn' | 'error', message: string) => void

export interface RuntimeOptions {
  log?: RuntimeLog
  /** Instance worker connection/stats report interval (ms). */
  reportIntervalMs?: number
  /** Network namespace (`ip netns` name) to open TUN devices in; default: the runtime's own. */
  netns?: string
}

/** A memory wire's pool after stop: `whole` when every buffer is back on a free list. */
export interface MemoryWirePool {
  name: string
  total: number
  free: number
  held: number
  whole: boolean
}

/** Bound on opening the ports in the switch worker (devices, `ip` commands, host TAPs). */
const START_TIMEOUT_MS = 30000

export class Runtime {
  readonly instances: InstanceHost[]
  /** The switch worker's control proxy (ports, classifier, switch loop live there). */
  readonly dataPath: SwitchHost
  /** The far end of each memory port's wire, by wire name: where a test or the demo plugs a peer. */
  readonly memoryPeers = new Map<string, AttachedMemoryPort>()
  private readonly startedAt = Date.now()
  private readonly families: CounterFamilies[]
  private loaded: LoadedConfig
  /** The rules as compiled here, for the instances' per-socket kernel fallback (the switch compiles its own copy). */
  private rules: RuleSpec[]
  /** How to give owned interfaces back to the kernel if the switch worker cannot. */
  private readonly hostRestore: HostRestorePlan[]
  private stopping: Promise<void> | undefined
  private pools: MemoryWirePool[] = []
  /** The switch's last counters, kept when it stopped (stat after stop). */
  private finalStat: StatAnswer | undefined
  private readonly log: RuntimeLog
  private failure: string | undefined
  private readonly failed: Promise<string>
  private fail: (reason: string) => void = () => {}

  /** Kernel sockets reserving instance ports on shared addresses, when a host TAP shares any. */
  private readonly kernelPorts: KernelPorts | undefined
  /** Per instance: "address port" reservations it holds. */
  private readonly reservations: Set<string>[]

  private constructor(loaded: LoadedConfig, dataPath: SwitchHost, opened: StartAnswer, kernelPorts: KernelPorts | undefined, options: RuntimeOptions) {
    this.loaded = loaded
    this.dataPath = dataPath
    this.kernelPorts = kernelPorts
    this.failed = new Promise((resolve) => (this.fail = resolve))
    this.reservations = loaded.config.instances.map(() => new Set())
    this.log = options.log ?? ((source, level, message) => console.error(`[${source}] ${level}: ${message}`))
    const config = loaded.config
    this.rules = [...compileRules(config).rules]
    this.hostRestore = opened.hostRestore
    const portIndexes = instancePortIndexes(config)
    this.families = config.instances.map(() => ({}))
    // Certificates and keys are read here, once, and handed to the workers as
    // PEM text; all of them before any instance's pool exists, so a file that
    // vanished since loadConfig fails start with nothing to clean up but the switch.
    const tls = config.instances.map((inst, index) => (inst.tls !== undefined ? loadTlsDefaults(inst.tls as TlsConfigLike, loaded.baseDir, { path: `instances[${index}].tls` }) : undefined))
    this.instances = config.instances.map((inst, index) => {
      const port = opened.ports[portIndexes[index]]
      const mac = opened.macs[index]
      const portInfo: PortInfo = {
        name: inst.name,
        kind: 'memory',
        linkType: port.linkType,
        ...(port.linkType === 'ethernet' && mac !== null ? { mac: Uint8Array.from(mac) } : {}),
        mtu: port.mtu,
        offloads: { vnetHdr: false, tso4: false, tso6: false, checksum: false },
        queues: 1,
      }
      const shared = opened.shared[index]
      return new InstanceHost({
        index,
        config: inst,
        appPath: loaded.appPaths.get(inst.name) ?? '',
        ...(tls[index] !== undefined ? { tls: tls[index] } : {}),
        portInfo,
        dataPath,
        log: this.log,
        reportIntervalMs: options.reportIntervalMs,
        portIndex: portIndexes[index],
        kernelRules: port.kind === 'afpacket',
        ...(kernelPorts !== undefined && shared.length > 0 ? { kernelPorts: { procNet: kernelPorts.procNet, shared } } : {}),
        onListener: (ipVersion, localAddress, localPort, open) => this.reserveInKernel(index, shared, ipVersion, localAddress, localPort, open),
        rules: () => [...this.rules],
        onFailure: (i) => this.releaseReservations(i),
        onStats: (families) => {
          this.families[index] = families
        },
      })
    })
    for (const [name, handle] of opened.memoryPeers) this.memoryPeers.set(name, attachMemoryPort(handle))
  }

  /** An instance listener on an address shared with the kernel: hold the port in the kernel too. */
  private reserveInKernel(instance: number, shared: readonly string[], ipVersion: 4 | 6, localAddress: string, localPort: number, open: boolean): void {
    const kernelPorts = this.kernelPorts
    if (kernelPorts === undefined || shared.length === 0) return
    const any = localAddress === '0.0.0.0' || localAddress === '::'
    const name = this.instances[instance].name
    for (const address of shared) {
      if (address.includes(':') !== (ipVersion === 6) || (!any && address !== addressOnly(localAddress))) continue
      const key = `${address} ${localPort}`
      if (open) {
        this.reservations[instance].add(key)
        void kernelPorts.reserve(address, localPort).then((answer) => {
          // The worker checked before listening; the kernel may have taken it since.
          if (answer !== 'ok') this.log(name, 'warn', `cannot reserve ${address}:${localPort} in the kernel: ${answer}`)
        })
      } else if (this.reservations[instance].delete(key)) {
        void kernelPorts.release(address, localPort)
      }
    }
  }

  private releaseReservations(instance: number): void {
    for (const key of this.reservations[instance]) {
      const [address, port] = key.split(' ')
      void this.kernelPorts?.release(address, Number(port))
    }
    this.reservations[instance].clear()
  }

  /** Kernel reservations held, as "address port" (for stat and tests). */
  kernelReservations(instance: number): string[] {
    return [...this.reservations[instance]]
  }

  /**
   * Starts the switch worker, which opens every port, then the instances.
   * Config errors throw before anything opens; a port that cannot be opened,
   * or a switch worker that dies or does not answer, throws a FlowstackError
   * with nothing left open.
   */
  static async start(source: string | LoadedConfig, options: RuntimeOptions = {}): Promise<Runtime> {
    const loaded = typeof source === 'string' ? await loadConfig(source) : source
    let runtime: Runtime | undefined
    const early: string[] = []
    const dataPath = new SwitchHost({
      fault: (instance, generation, reason) => runtime?.instances[instance]?.fail(reason, generation),
      log: (level, message) => (options.log ?? ((s, l, m) => console.error(`[${s}] ${l}: ${m}`)))('switch', level, message),
      death: (reason) => {
        if (runtime === undefined) early.push(reason)
        else runtime.switchDied(reason)
      },
    })
    let opened: StartAnswer
    try {
      opened = await dataPath.request({ type: 'start', config: toBinary(ConfigSchema, loaded.config), ...(options.netns !== undefined ? { netns: options.netns } : {}) }, START_TIMEOUT_MS)
    } catch (err) {
      await dataPath.dispose()
      throw err
    }
    let kernelPorts: KernelPorts | undefined
    if (opened.ports.some((port) => port.host !== undefined)) {
      try {
        kernelPorts = await KernelPorts.start(options.netns)
      } catch (err) {
        await dataPath.request({ type: 'release' }).catch(() => {})
        await dataPath.dispose()
        throw err
      }
    }
    try {
      runtime = new Runtime(loaded, dataPath, opened, kernelPorts, options)
    } catch (err) {
      kernelPorts?.close()
      const stopped = await dataPath.request({ type: 'release' }).then(
        () => true,
        () => false,
      )
      await dataPath.dispose()
      if (!stopped) for (const plan of opened.hostRestore) runRestorePlan(plan)
      throw err
    }
    if (early.length > 0) {
      // Died between its answer and here: nothing is running yet.
      await runtime.stop()
      throw new FlowstackError('RUNTIME_SWITCH_DIED', `switch worker died while starting: ${early[0]}`)
    }
    for (const host of runtime.instances) host.start()
    return runtime
  }

  /** The switch worker died: log it, stop everything else, and report the failure (see whenFailed). */
  private switchDied(reason: string): void {
    if (this.failure !== undefined) return
    this.failure = reason
    this.log('runtime', 'error', `switch worker died: ${reason}; stopping`)
    void this.stop().then(
      () => this.fail(reason),
      (err: unknown) => this.fail(`${reason} (and stopping failed: ${(err as Error).message})`),
    )
  }

  /** Resolves with the reason if the runtime stopped by itself (its switch worker died), once it has stopped. */
  whenFailed(): Promise<string> {
    return this.failed
  }

  get config(): Config {
    return this.loaded.config
  }

  /** Resolves when every instance's app has started. */
  async whenRunning(): Promise<void> {
    await Promise.all(this.instances.map((host) => host.whenRunning()))
  }

  private async switchStat(): Promise<StatAnswer> {
    if (this.finalStat !== undefined) return this.finalStat
    return this.dataPath.request({ type: 'stat' })
  }

  /** The switch's own counters (traffic per port, host TAP and instance, drops, resets on behalf of stopped instances). */
  async switchCounters(): Promise<SwitchCounters> {
    return (await this.switchStat()).counters
  }

  /** Counters per port, instance and classifier reason (the switch's from its worker, the instances' from here). */
  async stat(): Promise<StatResponse> {
    const fromSwitch = fromBinary(StatResponseSchema, (await this.switchStat()).stat)
    const stat = create(StatResponseSchema, {
      uptimeMs: BigInt(Date.now() - this.startedAt),
      ports: fromSwitch.ports,
      instances: fromSwitch.instances,
      ...(fromSwitch.classifier !== undefined ? { classifier: fromSwitch.classifier } : {}),
    })
    this.instances.forEach((host, i) => {
      const inst = stat.instances[i]
      inst.state = host.state
      inst.restarts = host.restarts
      inst.lastError = host.lastError
      inst.families = Object.entries(this.families[i]).map(([name, counters]) =>
        create(CounterFamilySchema, { name, counters: Object.entries(counters).map(([n, v]) => create(CounterSchema, { name: n, value: BigInt(Math.max(0, Math.trunc(v))) })) }),
      )
    })
    return stat
  }

  async flows(owner = '', limit = 0): Promise<FlowsResponse> {
    if (this.finalStat !== undefined) throw new FlowstackError('RUNTIME_STOPPED', 'the runtime is stopped: its flow table is gone')
    return fromBinary(FlowsResponseSchema, await this.dataPath.request({ type: 'flows', owner, limit }))
  }

  /**
   * Swaps the rules for those of the config file (default: the one running),
   * keeping every established flow. Nothing changes when the file has a
   * problem, or changes more than the rules.
   */
  async reload(path = ''): Promise<ReloadResponse> {
    const file = path !== '' ? path : this.loaded.file
    if (file === undefined) {
      return create(ReloadResponseSchema, { applied: false, problems: [create(ConfigProblemSchema, { path: '', message: 'the runtime was started without a config file; give one' })] })
    }
    let next: LoadedConfig
    try {
      next = await loadConfig(file)
    } catch (err) {
      const problems = err instanceof ConfigError ? err.problems : [{ path: '', message: (err as Error).message }]
      return create(ReloadResponseSchema, { applied: false, problems: problems.map((p) => create(ConfigProblemSchema, p)) })
    }
    const mismatch = sameTopology(this.loaded.config, next.config)
    if (mismatch !== null) {
      return create(ReloadResponseSchema, { applied: false, problems: [create(ConfigProblemSchema, { path: mismatch, message: 'reload changes rules only; restart the runtime to change ports or instances' })] })
    }
    const { generation } = await this.dataPath.request({ type: 'reload', config: toBinary(ConfigSchema, next.config) })
    // Instances decide their per-socket kernel fallback from the same rules.
    this.rules = [...compileRules(next.config).rules]
    for (const host of this.instances) host.updateRules([...this.rules])
    this.loaded = { ...this.loaded, config: next.config }
    this.log('runtime', 'info', `reloaded ${next.config.rules.length} rule(s) from ${file} (generation ${generation})`)
    return create(ReloadResponseSchema, { applied: true, rules: next.config.rules.length })
  }

  /**
   * Drains and stops the instances, then the switch and its ports, then the
   * memory wires (their far ends here first, so every buffer goes home).
   * Bounded: a switch that died or stops answering does not hold it up.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await Promise.all(this.instances.map((host) => host.stop()))
      this.kernelPorts?.close()
      let switchStopped = false
      try {
        this.finalStat = await this.dataPath.request({ type: 'stop' })
        switchStopped = true
      } catch (err) {
        if (this.failure === undefined) this.log('runtime', 'error', `stopping the switch: ${(err as Error).message}`)
        this.finalStat = await this.lastStat()
      }
      for (const peer of this.memoryPeers.values()) await peer.close()
      try {
        const { pools } = await this.dataPath.request({ type: 'release' })
        this.pools = pools.map(({ name, total, device }) => {
          const user = this.memoryPeers.get(name)!.poolAccounting()
          // Whole: nobody holds a buffer, and the two sides' free lists hold them all.
          const whole = device.held === 0 && user.held === 0 && device.free + user.free === total
          if (!whole) this.log('runtime', 'warn', `memory wire ${name}: pool not whole at close (device free ${device.free} held ${device.held}, user free ${user.free} held ${user.held}, of ${total})`)
          return { name, total, free: device.free + user.free, held: device.held + user.held, whole }
        })
      } catch (err) {
        if (this.failure === undefined) this.log('runtime', 'error', `releasing the memory wires: ${(err as Error).message}`)
      }
      await this.dataPath.close()
      if (!switchStopped) {
        // The worker died or stopped answering before it gave the owned
        // interfaces back: do it from here, or the host keeps ARP off and
        // its addresses on a TAP nobody reads.
        for (const plan of this.hostRestore) runRestorePlan(plan)
        if (this.hostRestore.length > 0) this.log('runtime', 'warn', `gave ${this.hostRestore.length} owned interface(s) back to the kernel from the main thread`)
      }
    })()
    return this.stopping
  }

  /** After stop: where each memory wire's buffers ended up (both sides). */
  memoryPools(): MemoryWirePool[] {
    return this.pools.map((pool) => ({ ...pool }))
  }

  /** Counters for stat after the switch is gone: zeros with the names (nothing can be asked any more). */
  private async lastStat(): Promise<StatAnswer> {
    const config = this.loaded.config
    const empty = { rxPackets: 0, rxBytes: 0, txPackets: 0, txBytes: 0 }
    const stat = create(StatResponseSchema, {
      ports: config.ports.map((port) => ({ name: port.name, kind: port.kind.case ?? '' })),
      instances: config.instances.map((inst) => ({ name: inst.name })),
    })
    return {
      stat: toBinary(StatResponseSchema, stat),
      counters: { portTraffic: config.ports.map(() => ({ ...empty })), hostTraffic: config.ports.map(() => null), instanceTraffic: config.instances.map(() => ({ ...empty })), drops: {}, resetProbes: 0, resetsSent: 0 },
    }
  }
}
