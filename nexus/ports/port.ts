// The NexusPort contract: what every port (tun, tap, afpacket, memory, pcap)
// offers to the switch or to a stack created with createStack. A port moves
// packets through one shared-memory channel (nexus/channel): the port's side
// ("device" side, A) produces received packets into the channel's RX ring and
// consumes transmitted ones from its TX ring; the user of the port holds the
// other end (side B), possibly in another thread.
import type { ChannelEnd } from '../channel/index.js'

export type PortKind = 'tun' | 'tap' | 'afpacket' | 'memory' | 'pcap'
/** L2 ports carry Ethernet frames; L3 ports carry bare IPv4/IPv6 packets. */
export type LinkType = 'ethernet' | 'ip'

export interface PortOffloads {
  /** Each packet buffer starts with a struct virtio_net_hdr (IFF_VNET_HDR). */
  vnetHdr: boolean
  tso4: boolean
  tso6: boolean
  /** The device accepts packets with partial checksums (VIRTIO_NET_HDR_F_NEEDS_CSUM). */
  checksum: boolean
}

export interface PortInfo {
  readonly name: string
  readonly kind: PortKind
  readonly linkType: LinkType
  readonly mtu: number
  /** The port's MAC address on L2 ports. */
  readonly mac?: Uint8Array
  readonly offloads: PortOffloads
  readonly queues: number
}

/** Drop reasons counted on every port. */
export interface PortDropCounters {
  ringFull: number
  poolEmpty: number
  oversize: number
}

export interface PortQueueCounters {
  rxPackets: number
  rxBytes: number
  txPackets: number
  txBytes: number
  drops: PortDropCounters
  syscalls: number
  doorbells: number
}

export interface PortCounters extends PortQueueCounters {
  queues: PortQueueCounters[]
}

/** A port's counters: the sum of its queues' (at least one), with the queues kept alongside. */
export function sumQueueCounters(queues: PortQueueCounters[]): PortCounters {
  const total: PortCounters = { ...queues[0], drops: { ...queues[0].drops }, queues }
  for (let q = 1; q < queues.length; q++) {
    const c = queues[q]
    total.rxPackets += c.rxPackets
    total.rxBytes += c.rxBytes
    total.txPackets += c.txPackets
    total.txBytes += c.txBytes
    total.drops.ringFull += c.drops.ringFull
    total.drops.poolEmpty += c.drops.poolEmpty
    total.drops.oversize += c.drops.oversize
    total.syscalls += c.syscalls
    total.doorbells += c.doorbells
  }
  return total
}

export interface NexusPort {
  readonly info: PortInfo
  /** Side B of each queue's channel: receive() yields packets from the wire, send() transmits. */
  readonly queues: readonly ChannelEnd[]
  counters(): PortCounters
  /**
   * Stops the I/O, returns every buffer to its pool and releases the device.
   * A second close resolves; any other use after close throws PORT_CLOSED.
   */
  close(): Promise<void>
}
