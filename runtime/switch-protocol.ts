// The control plane between the runtime (main thread) and the switch worker
// (DESIGN.md §2: "switch: classify, validate, count (TS, its own worker)").
// Packets never travel here: they move through shared-memory channels. One
// worker postMessage queue carries everything in order, so a one-way message
// (attach, listen, reconcile) is applied before any request posted after it;
// a request answers once everything before it was applied (see `barrier`).
//
// Request/response (the runtime waits, each with a timeout):
//   start     open the ports and host TAPs, build the classifier and the switch, run it
//   detach    stop serving an instance (with `reset`: RST its peers first, on its behalf)
//   barrier   nothing: answers after every earlier message was applied
//   reload    swap the rules (the runtime validated the config first)
//   stat      counters snapshot; flows: the flow table
//   stop      stop the loop, close host TAPs and ports (memory peers stay open)
//   release   close the memory wires' far ends (after the runtime closed its side), pool report
// One-way, runtime -> switch: attach, listen, unlisten, reconcile.
// One-way, switch -> runtime: fault (a corrupt instance channel), log.
import type { LinkType } from '../nexus/ports/port.js'
import type { MemoryPortHandle } from '../nexus/ports/memory.js'
import type { PoolAccounting } from '../nexus/channel/index.js'
import type { ConnectionReport } from './host/messages.js'
import type { HostRestorePlan } from './host-tap.js'

/** What the switch worker reports of each opened port. */
export interface OpenedPort {
  /** The config's port name. */
  name: string
  kind: 'tun' | 'tap' | 'afpacket' | 'memory' | 'pcap'
  linkType: LinkType
  mtu: number
  /** The port's host TAP (kernel fallback per packet): the kernel's MAC and addresses on it. */
  host?: { mac: number[]; addresses: string[] }
}

export interface StartRequest {
  type: 'start'
  /** The validated config, binary (ConfigSchema). */
  config: Uint8Array
  netns?: string
}

export interface StartAnswer {
  ports: OpenedPort[]
  /** Per instance: its MAC on an Ethernet port (the switch steers frames by it). */
  macs: (number[] | null)[]
  /** Per instance: its addresses it shares with its port's host TAP (canonical text, no length). */
  shared: string[][]
  /** The far end of each memory wire, by wire name, for the runtime to attach (attachMemoryPort). */
  memoryPeers: [string, MemoryPortHandle][]
  /** Per host TAP: how to give its interface back to the kernel if this worker dies before it can. */
  hostRestore: HostRestorePlan[]
}

/** Per port, instance or host TAP: what the switch moved. */
export interface TrafficSnapshot {
  rxPackets: number
  rxBytes: number
  txPackets: number
  txBytes: number
}

/** The switch's own counters (documented accessor: Runtime.switchCounters()). */
export interface SwitchCounters {
  portTraffic: TrafficSnapshot[]
  /** Per port: its host TAP's traffic (rx = what the kernel sent), or null without one. */
  hostTraffic: (TrafficSnapshot | null)[]
  instanceTraffic: TrafficSnapshot[]
  /** Packets the switch itself dropped, by reason (SWITCH_DROP_NAMES). */
  drops: Record<string, number>
  /** Probes and RSTs sent on behalf of stopped instances. */
  resetProbes: number
  resetsSent: number
}

export interface StatAnswer {
  /** StatResponse, binary: ports (with host TAPs), classifier, and per instance name, rx/tx packets and flows. */
  stat: Uint8Array
  counters: SwitchCounters
}

export interface DetachAnswer {
  /** Peers probed so their answer meets an exact RST. */
  probes: number
  /** Flows and listeners released. */
  released: number
}

export interface ReleaseAnswer {
  /** Per memory wire far end: its pool accounting after close (device side). */
  pools: { name: string; total: number; device: PoolAccounting }[]
}

export type SwitchRequest =
  | StartRequest
  | { type: 'detach'; instance: number; reset: boolean }
  | { type: 'barrier' }
  | { type: 'reload'; config: Uint8Array }
  | { type: 'stat' }
  | { type: 'flows'; owner: string; limit: number }
  | { type: 'stop' }
  | { type: 'release' }

/** Answers by request type. */
export interface SwitchAnswers {
  start: StartAnswer
  detach: DetachAnswer
  barrier: null
  reload: { generation: number }
  stat: StatAnswer
  /** FlowsResponse, binary. */
  flows: Uint8Array
  /** The last counters, taken after the loop stopped. */
  stop: StatAnswer
  release: ReleaseAnswer
}

export type SwitchOneWay =
  | { type: 'attach'; instance: number; generation: number; channel: SharedArrayBuffer }
  | { type: 'listen' | 'unlisten'; instance: number; ipVersion: 4 | 6; localAddress: string; localPort: number }
  | { type: 'reconcile'; instance: number; open: ConnectionReport[]; graceMs: number }

export type ToSwitch = ({ id: number } & SwitchRequest) | SwitchOneWay

export type FromSwitch =
  | { type: 'answer'; id: number; ok: true; value: unknown }
  | { type: 'answer'; id: number; ok: false; code: string; message: string }
  | { type: 'fault'; instance: number; generation: number; reason: string }
  | { type: 'log'; level: 'info' | 'warn' | 'error'; message: string }
