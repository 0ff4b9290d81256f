// The runtime (DESIGN.md §2, §4): opens the configured ports, builds the
// classifier and the switch, hosts one instance per configured app, and
// answers the control requests (stat, flows, reload).
import { loadTlsDefaults, type TlsConfigLike } from '../stacks/sockets/tls-config.js'
import { execFileSync } from 'node:child_process'
import { formatIpAddress, parseIpAddress } from '../stacks/wire/address.js'
import { create } from '@bufbuild/protobuf'
import {
  CounterFamilySchema,
  CounterSchema,
  FlowsResponseSchema,
  InstanceStatsSchema,
  PortStatsSchema,
  ReloadResponseSchema,
  StatResponseSchema,
  ConfigProblemSchema,
  type Config,
  type FlowsResponse,
  type ReloadResponse,
  type StatResponse,
} from '../proto/gen/flowstack_pb.js'
import { classifierFromConfig, classifierStats, compileRules, flowRecords, type Classifier } from '../classifier/index.js'
import { createMemoryWire, type MemoryPort } from '../nexus/ports/memory.js'
import type { NexusPort, PortInfo } from '../nexus/ports/port.js'
import { FlowstackError } from '../common/errors.js'
import { ConfigError, loadConfig, type LoadedConfig } from './config/index.js'
import { InstanceHost } from './host/instance.js'
import type { CounterFamilies } from './host/messages.js'
import { Switch, SWITCH_DROP_NAMES, type SwitchPortSpec } from './switch.js'
import { HostTapFallback } from './host-tap.js'
import { KernelPorts } from './kernel-ports.js'

export type RuntimeLog = (source: string, level: 'info' | 'warn' | 'error', message: string) => void

export interface RuntimeOptions {
  log?: RuntimeLog
  /** Instance worker connection/stats report interval (ms). */
  reportIntervalMs?: number
  /** Network namespace (`ip netns` name) to open TUN devices in; default: the runtime's own. */
  netns?: string
}

/**
 * An instance's MAC on an Ethernet port: the configured one, or a locally
 * administered unicast address derived from its name and index (stable
 * across restarts, so peers' neighbour caches stay right).
 */
export function instanceMac(configured: string, name: string, index: number, sharedMac?: Uint8Array): Uint8Array {
  if (configured === '' && sharedMac !== undefined) return sharedMac
  if (configured !== '') return Uint8Array.from(configured.split(/[:-]/).map((byte) => Number.parseInt(byte, 16)))
  let hash = 0x811c9dc5
  for (let i = 0; i < name.length; i++) hash = Math.imul(hash ^ name.charCodeAt(i), 0x01000193) >>> 0
  return Uint8Array.of(0x02, 0x66, 0x73, (hash >>> 8) & 0xff, hash & 0xff, index & 0xff)
}

/** Puts the kernel's side of a TUN port on the device (`kernelAddresses` in the config). */
function addKernelAddresses(device: string, addresses: readonly string[], netns: string | undefined): void {
  for (const address of addresses) {
    const args = [...(netns === undefined ? [] : ['-n', netns]), address.includes(':') ? '-6' : '-4', 'addr', 'add', address, 'dev', device]
    // No duplicate address detection: the other end of a TUN is us.
    if (address.includes(':')) args.push('nodad')
    try {
      execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 10000 })
    } catch (err) {
      const stderr = String((err as { stderr?: Buffer }).stderr ?? '').trim()
      if (!stderr.includes('File exists')) throw new FlowstackError('RUNTIME_KERNEL_ADDRESS', `cannot add ${address} to ${device}: ${stderr}`)
    }
  }
}

export class Runtime {
  readonly classifier: Classifier
  readonly switch: Switch
  readonly instances: InstanceHost[]
  /** The far end of each memory port's wire, by wire name: where a test or the demo plugs a peer. */
  readonly memoryPeers = new Map<string, MemoryPort>()
  private readonly ports: NexusPort[]
  /** Per port: its host TAP (kernel fallback per packet), if it has one. */
  private readonly hosts: (HostTapFallback | undefined)[]
  private readonly startedAt = Date.now()
  private readonly families: CounterFamilies[]
  private loaded: LoadedConfig
  private stopped = false
  private readonly log: RuntimeLog

  /** Kernel sockets reserving instance ports on shared addresses, when a host TAP shares any. */
  private readonly kernelPorts: KernelPorts | undefined
  /** Per instance: "address port" reservations it holds. */
  private readonly reservations: Set<string>[]

  private constructor(loaded: LoadedConfig, ports: NexusPort[], hosts: (HostTapFallback | undefined)[], kernelPorts: KernelPorts | undefined, options: RuntimeOptions) {
    this.loaded = loaded
    this.ports = ports
    this.hosts = hosts
    this.kernelPorts = kernelPorts
    this.reservations = loaded.config.instances.map(() => new Set())
    this.log = options.log ?? ((source, level, message) => console.error(`[${source}] ${level}: ${message}`))
    const config = loaded.config
    this.classifier = classifierFromConfig(config)
    const specs: SwitchPortSpec[] = ports.map((port, i) => ({
      name: config.ports[i].name,
      end: port.queues[0],
      link: port.info.linkType,
      vnetHdr: port.info.offloads.vnetHdr,
      ...(hosts[i] !== undefined ? { host: { end: hosts[i].port.queues[0], mac: hosts[i].mac, addresses: hosts[i].addresses } } : {}),
    }))
    const portIndex = new Map(config.ports.map((p, i) => [p.name, i]))
    // An instance on an address it shares with the kernel (a host TAP's) takes
    // the kernel's MAC too, unless configured: a peer's neighbour cache holds
    // one MAC per address, and the classifier sorts kernel from instance.
    const sharedAddresses = config.instances.map((inst) => {
      const host = hosts[portIndex.get(inst.port) ?? 0]
      const hostAddresses = new Set((host?.addresses ?? []).map(addressOnly))
      return inst.addresses.map(addressOnly).filter((a) => hostAddresses.has(a))
    })
    const macs = config.instances.map((inst, i) => {
      const host = hosts[portIndex.get(inst.port) ?? 0]
      return instanceMac(inst.mac, inst.name, i, sharedAddresses[i].length > 0 ? host?.mac : undefined)
    })
    this.switch = new Switch(
      this.classifier,
      specs,
      config.instances.map((inst, i) => ({ name: inst.name, port: portIndex.get(inst.port) ?? 0, addresses: inst.addresses, mac: macs[i] })),
    )
    this.families = config.instances.map(() => ({}))
    this.instances = config.instances.map((inst, index) => {
      const port = ports[portIndex.get(inst.port) ?? 0]
      const portInfo: PortInfo = {
        name: inst.name,
        kind: 'memory',
        linkType: port.info.linkType,
        ...(port.info.linkType === 'ethernet' ? { mac: macs[index] } : {}),
        mtu: port.info.mtu,
        offloads: { vnetHdr: false, tso4: false, tso6: false, checksum: false },
        queues: 1,
      }
      return new InstanceHost({
        index,
        config: inst,
        appPath: loaded.appPaths.get(inst.name) ?? '',
        // Certificates and keys are read here, once, and handed to the worker as PEM text.
        ...(inst.tls !== undefined ? { tls: loadTlsDefaults(inst.tls as TlsConfigLike, loaded.baseDir, { path: `instances[${index}].tls` }) } : {}),
        portInfo,
        sw: this.switch,
        log: this.log,
        reportIntervalMs: options.reportIntervalMs,
        portIndex: portIndex.get(inst.port) ?? 0,
        kernelRules: port.info.kind === 'afpacket',
        ...(kernelPorts !== undefined && sharedAddresses[index].length > 0 ? { kernelPorts: { procNet: kernelPorts.procNet, shared: sharedAddresses[index] } } : {}),
        onListener: (ipVersion, localAddress, localPort, open) => this.reserveInKernel(index, sharedAddresses[index], ipVersion, localAddress, localPort, open),
        rules: () => [...this.classifier.ruleSet.rules],
        onFailure: (i) => {
          this.releaseReservations(i)
          const probes = this.switch.resetFlowsOf(i)
          if (probes > 0) this.log(inst.name, 'warn', `resetting the peers of ${probes} connection(s)`)
        },
        onStats: (families) => {
          this.families[index] = families
        },
      })
    })
    this.switch.onInstanceFault = (index, reason) => this.instances[index].fail(reason)
    // Flows created by decisions (not registered by an instance) go when idle.
    const idleMs = (config.classifier?.flowIdleSeconds || 300) * 1000
    this.idleSweep = setInterval(() => this.classifier.expireIdleFlows(idleMs), Math.min(idleMs, 1000))
    this.idleSweep.unref()
  }

  private readonly idleSweep: NodeJS.Timeout

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

  /** Opens every port, then starts the switch and the instances. Config errors throw before anything opens. */
  static async start(source: string | LoadedConfig, options: RuntimeOptions = {}): Promise<Runtime> {
    const loaded = typeof source === 'string' ? await loadConfig(source) : source
    const ports: NexusPort[] = []
    const hosts: (HostTapFallback | undefined)[] = []
    const peers = new Map<string, MemoryPort>()
    try {
      for (const port of loaded.config.ports) {
        switch (port.kind.case) {
          case 'memory': {
            const memory = port.kind.value
            const [ours, peer] = createMemoryWire({ linkType: memory.ipOnly ? 'ip' : 'ethernet', mtu: port.mtu || undefined, name: port.name })
            ports.push(ours)
            peers.set(memory.wire === '' ? port.name : memory.wire, peer)
            break
          }
          case 'tun': {
            const { openTun } = await import('../nexus/ports/tun.js')
            const tun = port.kind.value
            const opened = await openTun({ name: tun.device || undefined, netns: options.netns, mtu: port.mtu || undefined, txQueueLen: tun.txqueuelen || 4096, vnetHdr: false })
            ports.push(opened)
            addKernelAddresses(opened.info.name, tun.kernelAddresses, options.netns)
            break
          }
          case 'tap': {
            const { openTap } = await import('../nexus/ports/tap.js')
            const tap = port.kind.value
            const opened = await openTap({ name: tap.device || undefined, netns: options.netns, mtu: port.mtu || undefined, txQueueLen: tap.txqueuelen || 4096, vnetHdr: false })
            ports.push(opened)
            addKernelAddresses(opened.info.name, tap.kernelAddresses, options.netns)
            break
          }
          case 'afpacket': {
            const { openAfPacket } = await import('../nexus/ports/afpacket.js')
            const af = port.kind.value
            const opened = await openAfPacket({
              name: af.interface,
              netns: options.netns,
              mtu: port.mtu || undefined,
              promiscuous: af.promiscuous,
              blockSize: af.blockSize || undefined,
              blockCount: af.blockCount || undefined,
              blockTimeoutMs: af.blockTimeoutMs || undefined,
            })
            ports.push(opened)
            if (af.host !== undefined) {
              hosts[ports.length - 1] = await HostTapFallback.open({
                wireInterface: af.interface,
                wireMac: opened.info.mac,
                config: af.host,
                netns: options.netns,
                mtu: port.mtu || opened.info.mtu,
              })
            }
            break
          }
          default:
            throw new FlowstackError('RUNTIME_UNSUPPORTED', `port ${port.name}: ${port.kind.case ?? 'no kind'} ports are not hosted by the runtime yet`)
        }
      }
    } catch (err) {
      for (const host of hosts) await host?.close()
      for (const port of ports) await port.close().catch(() => {})
      for (const peer of peers.values()) await peer.close().catch(() => {})
      throw err
    }
    while (hosts.length < ports.length) hosts.push(undefined)
    let kernelPorts: KernelPorts | undefined
    if (hosts.some((host) => host !== undefined)) {
      try {
        kernelPorts = await KernelPorts.start(options.netns)
      } catch (err) {
        for (const host of hosts) await host?.close()
        for (const port of ports) await port.close().catch(() => {})
        throw err
      }
    }
    const runtime = new Runtime(loaded, ports, hosts, kernelPorts, options)
    for (const [name, peer] of peers) runtime.memoryPeers.set(name, peer)
    runtime.switch.start()
    for (const host of runtime.instances) host.start()
    return runtime
  }

  get config(): Config {
    return this.loaded.config
  }

  /** Resolves when every instance's app has started. */
  async whenRunning(): Promise<void> {
    await Promise.all(this.instances.map((host) => host.whenRunning()))
  }

  stat(): StatResponse {
    const config = this.loaded.config
    return create(StatResponseSchema, {
      uptimeMs: BigInt(Date.now() - this.startedAt),
      ports: this.ports.map((port, i) => {
        const traffic = this.switch.portTraffic[i]
        const counters = this.stopped ? undefined : port.counters()
        return create(PortStatsSchema, {
          name: config.ports[i].name,
          kind: port.info.kind,
          rxPackets: BigInt(traffic.rxPackets),
          rxBytes: BigInt(traffic.rxBytes),
          txPackets: BigInt(traffic.txPackets),
          txBytes: BigInt(traffic.txBytes),
          drops: counters === undefined ? [] : Object.entries(counters.drops).map(([name, value]) => create(CounterSchema, { name, value: BigInt(value) })),
        })
      }).concat(
        // Host TAPs follow the ports, named after theirs: rx = what the kernel sent, tx = what it was given.
        this.hosts.flatMap((host, i) => {
          const traffic = this.switch.hostTraffic[i]
          if (host === undefined || traffic === undefined) return []
          return [create(PortStatsSchema, { name: `${config.ports[i].name}/host`, kind: 'tap', rxPackets: BigInt(traffic.rxPackets), rxBytes: BigInt(traffic.rxBytes), txPackets: BigInt(traffic.txPackets), txBytes: BigInt(traffic.txBytes) })]
        }),
      ),
      instances: this.instances.map((host, i) => {
        const traffic = this.switch.instanceTraffic[i]
        return create(InstanceStatsSchema, {
          name: host.name,
          state: host.state,
          restarts: host.restarts,
          lastError: host.lastError,
          rxPackets: BigInt(traffic.rxPackets),
          txPackets: BigInt(traffic.txPackets),
          flows: BigInt(this.classifier.listFlows().filter((f) => f.owner === i).length),
          families: Object.entries(this.families[i]).map(([name, counters]) =>
            create(CounterFamilySchema, { name, counters: Object.entries(counters).map(([n, v]) => create(CounterSchema, { name: n, value: BigInt(Math.max(0, Math.trunc(v))) })) }),
          ),
        })
      }),
      classifier: (() => {
        const stats = classifierStats(this.classifier)
        // The switch's own drops join the classifier's reasons, so every packet not delivered has a reason.
        for (let d = 0; d < SWITCH_DROP_NAMES.length; d++) stats.reasons.push(create(CounterSchema, { name: `switch-${SWITCH_DROP_NAMES[d]}`, value: BigInt(this.switch.drops[d]) }))
        return stats
      })(),
    })
  }

  flows(owner = '', limit = 0): FlowsResponse {
    const flows = flowRecords(this.classifier, { owner, limit })
    return create(FlowsResponseSchema, { flows, total: BigInt(this.classifier.flowCount) })
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
    this.classifier.replaceRules(compileRules(next.config))
    // Instances decide their per-socket kernel fallback from the same rules.
    for (const host of this.instances) host.updateRules([...this.classifier.ruleSet.rules])
    this.loaded = { ...this.loaded, config: next.config }
    this.log('runtime', 'info', `reloaded ${next.config.rules.length} rule(s) from ${file} (generation ${this.classifier.ruleGeneration})`)
    return create(ReloadResponseSchema, { applied: true, rules: next.config.rules.length })
  }

  /** Drains and stops the instances, then the switch, then the ports. */
  async stop(): Promise<void> {
    if (this.stopped) return
    clearInterval(this.idleSweep)
    await Promise.all(this.instances.map((host) => host.stop()))
    this.kernelPorts?.close()
    await this.switch.stop()
    this.stopped = true
    for (const host of this.hosts) await host?.close()
    for (const port of this.ports) await port.close()
    for (const peer of this.memoryPeers.values()) await peer.close()
  }
}

/** The address of "addr/len", canonical (as the stacks format it). */
function addressOnly(cidr: string): string {
  const slash = cidr.indexOf('/')
  const text = slash < 0 ? cidr : cidr.slice(0, slash)
  const address = parseIpAddress(text)
  return address === null ? text : formatIpAddress(address)
}

/** The path of the first port/instance difference, or null when only rules (and others) differ. */
function sameTopology(a: Config, b: Config): string | null {
  if (a.ports.length !== b.ports.length) return 'ports'
  for (let i = 0; i < a.ports.length; i++) if (a.ports[i].name !== b.ports[i].name) return `ports[${i}].name`
  if (a.instances.length !== b.instances.length) return 'instances'
  for (let i = 0; i < a.instances.length; i++) if (a.instances[i].name !== b.instances[i].name) return `instances[${i}].name`
  return null
}
