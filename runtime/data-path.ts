// The data path of a runtime (DESIGN.md §2): the configured ports and host
// TAPs, the classifier and the switch, with the control operations the
// runtime asks for. It lives in the switch worker (switch-worker.ts): native
// ports are opened here because their doorbell (a threadsafe function) is
// bound to the thread that opens them, and the memory wires' pumps run here
// too; only the far end of each memory wire is handed to the runtime.
import { execFileSync } from 'node:child_process'
import { create, toBinary } from '@bufbuild/protobuf'
import {
  CounterSchema,
  FlowsResponseSchema,
  InstanceStatsSchema,
  PortStatsSchema,
  StatResponseSchema,
  type Config,
  type StatResponse,
} from '../proto/gen/flowstack_pb.js'
import { classifierFromConfig, classifierStats, compileRules, flowRecords, type Classifier } from '../classifier/index.js'
import { createMemoryWire, type MemoryPort } from '../nexus/ports/memory.js'
import type { NexusPort } from '../nexus/ports/port.js'
import { FlowstackError } from '../common/errors.js'
import { Switch, SWITCH_DROP_NAMES, type SwitchPortSpec, type TrafficCounters } from './switch.js'
import { HostTapFallback } from './host-tap.js'
import { instanceLinks, instancePortIndexes } from './topology.js'
import type { ConnectionReport } from './host/messages.js'
import type { DetachAnswer, OpenedPort, ReleaseAnswer, StartAnswer, StatAnswer, SwitchCounters, TrafficSnapshot } from './switch-protocol.js'

/** Puts the kernel's side of a TUN/TAP port on the device (`kernelAddresses` in the config). */
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

interface OpenedPorts {
  ports: NexusPort[]
  hosts: (HostTapFallback | undefined)[]
  /** The far end of each memory wire, by wire name. */
  peers: Map<string, MemoryPort>
}

/** Opens every configured port (and host TAP); on any failure closes what opened and throws. */
async function openPorts(config: Config, netns: string | undefined): Promise<OpenedPorts> {
  const ports: NexusPort[] = []
  const hosts: (HostTapFallback | undefined)[] = []
  const peers = new Map<string, MemoryPort>()
  try {
    for (const port of config.ports) {
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
          const opened = await openTun({ name: tun.device || undefined, netns, mtu: port.mtu || undefined, txQueueLen: tun.txqueuelen || 4096, vnetHdr: false })
          ports.push(opened)
          addKernelAddresses(opened.info.name, tun.kernelAddresses, netns)
          break
        }
        case 'tap': {
          const { openTap } = await import('../nexus/ports/tap.js')
          const tap = port.kind.value
          const opened = await openTap({ name: tap.device || undefined, netns, mtu: port.mtu || undefined, txQueueLen: tap.txqueuelen || 4096, vnetHdr: false })
          ports.push(opened)
          addKernelAddresses(opened.info.name, tap.kernelAddresses, netns)
          break
        }
        case 'afpacket': {
          const { openAfPacket } = await import('../nexus/ports/afpacket.js')
          const af = port.kind.value
          const opened = await openAfPacket({
            name: af.interface,
            netns,
            mtu: port.mtu || undefined,
            promiscuous: af.promiscuous,
            blockSize: af.blockSize || undefined,
            blockCount: af.blockCount || undefined,
            blockTimeoutMs: af.blockTimeoutMs || undefined,
          })
          ports.push(opened)
          if (af.host !== undefined) {
            hosts[ports.length - 1] = await HostTapFallback.open({ wireInterface: af.interface, wireMac: opened.info.mac, config: af.host, netns, mtu: port.mtu || opened.info.mtu })
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
  return { ports, hosts, peers }
}

function snapshot(t: TrafficCounters): TrafficSnapshot {
  return { rxPackets: t.rxPackets, rxBytes: t.rxBytes, txPackets: t.txPackets, txBytes: t.txBytes }
}

export interface DataPathEvents {
  /** An instance's channel is corrupt: the runtime must stop that instance. */
  fault(instance: number, generation: number, reason: string): void
}

export class DataPath {
  readonly classifier: Classifier
  readonly switch: Switch
  /** Per instance: the generation of its attached channel (faults name it, so a stale one is ignored). */
  private readonly generations: number[]
  private readonly idleSweep: NodeJS.Timeout
  private stopped = false
  private stopping: Promise<void> | undefined
  private released = false

  private constructor(
    private config: Config,
    private readonly ports: NexusPort[],
    private readonly hosts: (HostTapFallback | undefined)[],
    private readonly peers: Map<string, MemoryPort>,
    private readonly macs: Uint8Array[],
    readonly shared: string[][],
    events: DataPathEvents,
  ) {
    this.classifier = classifierFromConfig(config)
    const specs: SwitchPortSpec[] = ports.map((port, i) => ({
      name: config.ports[i].name,
      end: port.queues[0],
      link: port.info.linkType,
      vnetHdr: port.info.offloads.vnetHdr,
      ...(hosts[i] !== undefined ? { host: { end: hosts[i].port.queues[0], mac: hosts[i].mac, addresses: hosts[i].addresses } } : {}),
    }))
    const portIndexes = instancePortIndexes(config)
    this.switch = new Switch(
      this.classifier,
      specs,
      config.instances.map((inst, i) => ({ name: inst.name, port: portIndexes[i], addresses: inst.addresses, mac: macs[i] })),
    )
    this.generations = config.instances.map(() => 0)
    this.switch.onInstanceFault = (index, reason) => events.fault(index, this.generations[index], reason)
    // Flows created by decisions (not registered by an instance) go when idle.
    const idleMs = (config.classifier?.flowIdleSeconds || 300) * 1000
    this.idleSweep = setInterval(() => this.classifier.expireIdleFlows(idleMs), Math.min(idleMs, 1000))
    this.idleSweep.unref()
  }

  /** Opens the ports and starts the switch loop. */
  static async start(config: Config, netns: string | undefined, events: DataPathEvents): Promise<DataPath> {
    const { ports, hosts, peers } = await openPorts(config, netns)
    let path: DataPath | undefined
    try {
      const { shared, macs } = instanceLinks(config, hosts)
      path = new DataPath(config, ports, hosts, peers, macs, shared, events)
      path.switch.start()
      return path
    } catch (err) {
      // Opened but not running (the classifier's table, the switch): nothing may stay open.
      if (path !== undefined) clearInterval(path.idleSweep)
      for (const host of hosts) await host?.close()
      for (const port of ports) await port.close().catch(() => {})
      for (const peer of peers.values()) await peer.close().catch(() => {})
      throw err
    }
  }

  /** What the runtime needs to host the instances; the memory wires' far ends go with it (transfer). */
  describe(): StartAnswer {
    const opened: OpenedPort[] = this.ports.map((port, i) => ({
      name: this.config.ports[i].name,
      kind: port.info.kind,
      linkType: port.info.linkType,
      mtu: port.info.mtu,
      ...(this.hosts[i] !== undefined ? { host: { mac: [...this.hosts[i].mac], addresses: [...this.hosts[i].addresses] } } : {}),
    }))
    const linkTypes = this.config.instances.map((_, i) => this.ports[instancePortIndexes(this.config)[i]].info.linkType)
    return {
      ports: opened,
      macs: this.macs.map((mac, i) => (linkTypes[i] === 'ethernet' ? [...mac] : null)),
      shared: this.shared,
      memoryPeers: [...this.peers].map(([name, peer]) => [name, peer.transfer()]),
      hostRestore: this.hosts.flatMap((host) => (host === undefined ? [] : [host.restorePlan()])),
    }
  }

  attach(instance: number, generation: number, channel: SharedArrayBuffer): void {
    this.generations[instance] = generation
    this.switch.attachInstance(instance, channel)
  }

  detach(instance: number, reset: boolean): DetachAnswer {
    // Probes first: detachInstance forgets the flows they are about.
    const probes = reset ? this.switch.resetFlowsOf(instance) : 0
    return { probes, released: this.switch.detachInstance(instance) }
  }

  listen(instance: number, open: boolean, ipVersion: 4 | 6, localAddress: string, localPort: number): void {
    if (open) this.switch.registerListener(instance, ipVersion, localAddress, localPort)
    else this.switch.releaseListener(instance, ipVersion, localAddress, localPort)
  }

  reconcile(instance: number, open: readonly ConnectionReport[], graceMs: number): void {
    this.switch.reconcile(instance, open, graceMs)
  }

  /** New rules (from a config the runtime validated), keeping every flow. */
  reload(config: Config): number {
    this.classifier.replaceRules(compileRules(config))
    this.config = config
    return this.classifier.ruleGeneration
  }

  counters(): SwitchCounters {
    const sw = this.switch
    return {
      portTraffic: sw.portTraffic.map(snapshot),
      hostTraffic: sw.hostTraffic.map((t) => (t === undefined ? null : snapshot(t))),
      instanceTraffic: sw.instanceTraffic.map(snapshot),
      drops: Object.fromEntries(SWITCH_DROP_NAMES.map((name, d) => [name, sw.drops[d]])),
      resetProbes: sw.resetProbes,
      resetsSent: sw.resetsSent,
    }
  }

  /** Ports (host TAPs after them), per instance traffic and flows, and the classifier's counters. */
  stat(): StatResponse {
    const config = this.config
    const sw = this.switch
    const flowsOf = this.classifier.countFlowsByInstance()
    const classifier = classifierStats(this.classifier)
    // The switch's own drops join the classifier's reasons, so every packet not delivered has a reason.
    for (let d = 0; d < SWITCH_DROP_NAMES.length; d++) classifier.reasons.push(create(CounterSchema, { name: `switch-${SWITCH_DROP_NAMES[d]}`, value: BigInt(sw.drops[d]) }))
    return create(StatResponseSchema, {
      ports: this.ports
        .map((port, i) => {
          const traffic = sw.portTraffic[i]
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
        })
        .concat(
          // Host TAPs follow the ports, named after theirs: rx = what the kernel sent, tx = what it was given.
          this.hosts.flatMap((host, i) => {
            const traffic = sw.hostTraffic[i]
            if (host === undefined || traffic === undefined) return []
            return [create(PortStatsSchema, { name: `${config.ports[i].name}/host`, kind: 'tap', rxPackets: BigInt(traffic.rxPackets), rxBytes: BigInt(traffic.rxBytes), txPackets: BigInt(traffic.txPackets), txBytes: BigInt(traffic.txBytes) })]
          }),
        ),
      instances: config.instances.map((inst, i) =>
        create(InstanceStatsSchema, { name: inst.name, rxPackets: BigInt(sw.instanceTraffic[i].rxPackets), txPackets: BigInt(sw.instanceTraffic[i].txPackets), flows: BigInt(flowsOf[i]) }),
      ),
      classifier,
    })
  }

  statAnswer(): StatAnswer {
    return { stat: toBinary(StatResponseSchema, this.stat()), counters: this.counters() }
  }

  flows(owner: string, limit: number): Uint8Array {
    const flows = flowRecords(this.classifier, { owner, limit })
    return toBinary(FlowsResponseSchema, create(FlowsResponseSchema, { flows, total: BigInt(this.classifier.flowCount) }))
  }

  /**
   * Stops the loop and closes the host TAPs and ports. The memory wires' far
   * ends stay open until release(), so the runtime can drain its side first.
   * Answers the final counters.
   */
  async stop(): Promise<StatAnswer> {
    // One stop, however many ask (a timed-out `stop` followed by `release`):
    // host TAPs and ports are closed once.
    this.stopping ??= (async () => {
      clearInterval(this.idleSweep)
      await this.switch.stop()
      this.stopped = true
      for (const host of this.hosts) await host?.close()
      for (const port of this.ports) await port.close()
    })()
    await this.stopping
    return this.statAnswer()
  }

  /** Closes the memory wires' far ends; reports where their buffers are. */
  async release(): Promise<ReleaseAnswer> {
    const pools: ReleaseAnswer['pools'] = []
    // A stop that failed (a port's close) was reported to its own request; the wires still go home.
    await this.stop().catch(() => {})
    if (!this.released) {
      this.released = true
      for (const [name, peer] of this.peers) {
        await peer.close()
        const report = peer.poolReport()
        pools.push({ name, total: report.total, device: report.device })
      }
    }
    return { pools }
  }
}
