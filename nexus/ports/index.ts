// The `ports` namespace exported from the package root: one factory per kind
// of NexusPort. Memory ports need no privileges; tun, tap, afPacket and pcap
// (nexus/ports/{tun,tap,afpacket,pcap}.ts) join this object as they land.
import {
  attachMemoryPort,
  createMemorySwitch,
  createMemoryWire,
  type MemorySwitch,
  type MemorySwitchOptions,
  type MemoryPort,
  type MemoryWireOptions,
} from './memory.js'

export type { NexusPort, PortInfo, PortCounters, PortQueueCounters, PortDropCounters, PortOffloads, PortKind, LinkType } from './port.js'
export {
  attachMemoryPort,
  createMemorySwitch,
  createMemoryWire,
  formatMac,
  MemoryPort,
  type AttachedMemoryPort,
  type MemoryChannelOptions,
  type MemoryPoolReport,
  type MemoryPortHandle,
  type MemorySwitch,
  type MemorySwitchCounters,
  type MemorySwitchOptions,
  type MemorySwitchPortOptions,
  type MemoryWireOptions,
} from './memory.js'

export const ports = {
  /** A point-to-point virtual wire: two memory ports, L2 ('ethernet', default) or L3 ('ip'). */
  memoryWire(options?: MemoryWireOptions): [MemoryPort, MemoryPort] {
    return createMemoryWire(options)
  },
  /** A learning L2 switch; `addPort()` plugs in a memory port. */
  memorySwitch(options?: MemorySwitchOptions): MemorySwitch {
    return createMemorySwitch(options)
  },
  /** Opens, in this thread, the user side of a memory port handed over with `port.transfer()`. */
  attachMemory: attachMemoryPort,
}
