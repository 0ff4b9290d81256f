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
import type { NexusPort } from './port.js'
import { openTun, type KernelDeviceOptions } from './tun.js'
import { openTap, type TapOptions } from './tap.js'
import { openAfPacket, type AfPacketOptions } from './afpacket.js'
import type { NativePort } from './native.js'
import { openPcapPort, type PcapPort, type PcapPortOptions } from './pcap.js'

export { openTun, type KernelDeviceOptions } from './tun.js'
export { openTap, type TapOptions } from './tap.js'
export { openAfPacket, type AfPacketOptions } from './afpacket.js'
export { NativePort, type PoolCheck } from './native.js'
export { openPcapPort, type PcapPort, type PcapPortOptions, type PcapReplayReport } from './pcap.js'

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
  /** A TUN device (L3), created or attached by name; needs CAP_NET_ADMIN. */
  tun(options?: KernelDeviceOptions): Promise<NexusPort & NativePort> {
    return openTun(options)
  },
  /** A TAP device (L2), created or attached by name; needs CAP_NET_ADMIN. */
  tap(options?: TapOptions): Promise<NexusPort & NativePort> {
    return openTap(options)
  },
  /** AF_PACKET with a TPACKET_V3 ring on an existing interface; needs CAP_NET_RAW. */
  afPacket(options: AfPacketOptions): Promise<NexusPort & NativePort> {
    return openAfPacket(options)
  },
  /** Replays a pcap/pcapng file as received traffic and records what is sent. */
  pcap(options?: PcapPortOptions): PcapPort {
    return openPcapPort(options)
  },
}
