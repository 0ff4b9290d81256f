// AF_PACKET port: attaches to an existing interface (a veth end, a NIC) with
// a TPACKET_V3 mmap receive ring. The kernel fills blocks of frames and hands
// a block over when it is full or when `blockTimeoutMs` expires; the I/O
// thread copies each block's frames into the channel and publishes one batch
// per block. Transmit uses sendmmsg straight from the channel's buffers.
// Several queues join one PACKET_FANOUT group (flow hash), one I/O thread each.
//
// Frames the kernel has not finished — a peer with tx checksum offload (a
// veth end, a local sender) leaves the TCP/UDP checksum partial
// (TP_STATUS_CSUMNOTREADY) — arrive with DESC_VNET_HDR and a 12-byte
// virtio_net_hdr in front (NEEDS_CSUM, csum_start, csum_offset), exactly as
// on a vnet_hdr TUN: the consumer completes the checksum (the stack shell
// does). All other frames arrive bare, so a port mixes both: check the flag
// per descriptor. `info.offloads.vnetHdr` stays false (transmit is plain).
// A peer with TSO/GSO on (a veth end's default) sends super-frames up to
// 64 KiB: with the default 2 KiB channel buffers they are dropped and counted
// as drops.oversize; with `channel: { bufferSize: GSO_BUFFER_SIZE }` they
// arrive whole, gso_type set, and the stack shell takes them like GRO output.
import { randomInt } from 'node:crypto'
import { VIRTIO_NET_HDR_BYTES, type CreateChannelOptions } from '../channel/index.js'
import { FlowstackError } from '../../common/errors.js'
import type { NexusPort } from './port.js'
import { channelDefaults, checkInterfaceName, checkMtu, NativePort, netnsPath } from './native.js'

export interface AfPacketOptions {
  /** The interface to attach to (must exist: PORT_NO_DEVICE otherwise). */
  name: string
  /** `ip netns` name (or path) the interface lives in. */
  netns?: string
  /** Receive frames not addressed to the interface (PACKET_MR_PROMISC). */
  promiscuous?: boolean
  /** Sockets in one PACKET_FANOUT group, one I/O thread each. Default 1. */
  queues?: number
  /** TPACKET_V3 block size in bytes (a multiple of the page size). Default 1 MiB. */
  blockSize?: number
  /** Blocks in the ring. Default 8. */
  blockCount?: number
  /**
   * Longest a partly filled block waits before the kernel hands it over (ms).
   * Bounds latency at low load; larger values batch more. Default 1.
   */
  blockTimeoutMs?: number
  /** Set the interface MTU. */
  mtu?: number
  /** Bring the interface up (default true). */
  up?: boolean
  /**
   * When side B has not returned buffers: false (default) stops taking frames
   * out of the TPACKET ring (the kernel drops when the ring is full and counts
   * it); true drops here, counted as drops.poolEmpty/ringFull.
   */
  dropOnOverflow?: boolean
  channel?: CreateChannelOptions
}

const ETHERNET_HEADER = 14

export async function openAfPacket(options: AfPacketOptions): Promise<NexusPort & NativePort> {
  if (options === undefined || typeof options.name !== 'string') throw new FlowstackError('PORT_BAD_OPTIONS', 'openAfPacket needs the name of an interface')
  checkInterfaceName(options.name)
  if (options.name.includes('%')) throw new FlowstackError('PORT_BAD_OPTIONS', 'AF_PACKET attaches to an existing interface; no name templates')
  const queues = options.queues ?? 1
  if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new FlowstackError('PORT_BAD_OPTIONS', `queues must be 1..64, got ${queues}`)
  const blockSize = options.blockSize ?? 1 << 20
  const blockCount = options.blockCount ?? 8
  if (!Number.isInteger(blockSize) || blockSize < 4096 || blockSize % 4096 !== 0 || blockSize > 1 << 26) {
    throw new FlowstackError('PORT_BAD_OPTIONS', `blockSize must be a multiple of 4096 up to 64 MiB, got ${blockSize}`)
  }
  if (!Number.isInteger(blockCount) || blockCount < 2 || blockCount > 1024) throw new FlowstackError('PORT_BAD_OPTIONS', `blockCount must be 2..1024, got ${blockCount}`)
  const blockTimeoutMs = options.blockTimeoutMs ?? 1
  if (!Number.isInteger(blockTimeoutMs) || blockTimeoutMs < 1 || blockTimeoutMs > 1000) {
    throw new FlowstackError('PORT_BAD_OPTIONS', `blockTimeoutMs must be 1..1000, got ${blockTimeoutMs}`)
  }
  const channel = channelDefaults(false, options.channel)
  // A frame with a partial checksum arrives behind a virtio_net_hdr in the same buffer: leave it room.
  checkMtu(options.mtu, (channel.bufferSize ?? 2048) - ETHERNET_HEADER - VIRTIO_NET_HDR_BYTES, `channel buffers of ${channel.bufferSize ?? 2048} bytes`)
  return NativePort.open(
    {
      kind: 'afpacket',
      name: options.name,
      netnsPath: netnsPath(options.netns),
      queues,
      mtu: options.mtu,
      up: options.up ?? true,
      promiscuous: options.promiscuous === true,
      blockSize,
      blockCount,
      blockTimeoutMs,
      // Fanout groups are per network namespace; a random id keeps two ports
      // on the same interface from joining each other's group by accident.
      fanoutGroup: queues > 1 ? randomInt(1, 0xffff) : 0,
      dropOnOverflow: options.dropOnOverflow === true,
    },
    'afpacket',
    'ethernet',
    channel,
    `open afpacket ${options.name}`,
  )
}
