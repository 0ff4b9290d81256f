// TUN port: an L3 kernel interface (IFF_TUN | IFF_NO_PI); each read or write
// is one bare IPv4/IPv6 packet. With `vnetHdr`, every packet starts with a
// 12-byte struct virtio_net_hdr_v1 and TSO4/TSO6/checksum offload is enabled
// (TUNSETOFFLOAD), so one read can carry a 64 KiB TCP super-packet; such a
// port uses channel buffers of GSO_BUFFER_SIZE. With `queues` > 1 the device
// is opened with IFF_MULTI_QUEUE and each queue gets its own I/O thread and
// channel (the kernel spreads flows over the queues).
import type { CreateChannelOptions } from '../channel/index.js'
import { FlowstackError } from '../../common/errors.js'
import type { NexusPort } from './port.js'
import { channelDefaults, checkInterfaceName, checkMtu, NativePort, netnsPath, VIRTIO_HDR } from './native.js'

/** Ethernet header bytes a TAP frame adds to the MTU (no VLAN tag). */
const ETHERNET_HEADER = 14

export interface KernelDeviceOptions {
  /** Interface name; a `%d` template (`fs%d`) lets the kernel pick. Default `fs%d`. */
  name?: string
  /** Attach to an existing device instead of creating one (PORT_NO_DEVICE if missing). */
  attach?: boolean
  /** `ip netns` name (or /proc/.../ns/net path) to create the device in. Default: this process's namespace. */
  netns?: string
  /** Set the interface MTU (68..65535, and it must fit the channel's buffers). */
  mtu?: number
  /** Kernel queue length towards us (the default 500 overflows under load). */
  txQueueLen?: number
  /** Bring the interface up (default true). */
  up?: boolean
  /** IFF_VNET_HDR with TSO4/TSO6/checksum offload. */
  vnetHdr?: boolean
  /** Number of queues (IFF_MULTI_QUEUE when > 1). Default 1. */
  queues?: number
  /**
   * When side B has not returned buffers: false (default) pauses reading so
   * the kernel's queue (txQueueLen) absorbs the burst and drops beyond it;
   * true keeps reading and drops here, counted as drops.poolEmpty/ringFull.
   */
  dropOnOverflow?: boolean
  /** Channel geometry per queue (defaults: 2048 x 2 KiB buffers, or 256 x 64 KiB with vnetHdr). */
  channel?: CreateChannelOptions
}

export function validateKernelDeviceOptions(options: KernelDeviceOptions, linkHeader: number): CreateChannelOptions {
  const queues = options.queues ?? 1
  if (!Number.isInteger(queues) || queues < 1 || queues > 64) throw new FlowstackError('PORT_BAD_OPTIONS', `queues must be 1..64, got ${queues}`)
  if (options.name !== undefined) checkInterfaceName(options.name)
  if (options.attach === true && (options.name === undefined || options.name.includes('%'))) {
    throw new FlowstackError('PORT_BAD_OPTIONS', 'attach needs the exact name of an existing device')
  }
  const vnet = options.vnetHdr === true
  const channel = channelDefaults(vnet, options.channel)
  const bufferSize = channel.bufferSize ?? 2048
  if (vnet && bufferSize < 65536 + VIRTIO_HDR) {
    throw new FlowstackError('PORT_BAD_OPTIONS', `a vnetHdr port needs channel buffers of at least ${65536 + VIRTIO_HDR} bytes`)
  }
  checkMtu(options.mtu, bufferSize - linkHeader - (vnet ? VIRTIO_HDR : 0), `channel buffers of ${bufferSize} bytes`)
  return channel
}

export async function openTun(options: KernelDeviceOptions = {}): Promise<NexusPort & NativePort> {
  return openKernelDevice('tun', options)
}

/** Opens a TUN (L3) or TAP (L2) device: the two differ only in kind and link header. */
export async function openKernelDevice(kind: 'tun' | 'tap', options: KernelDeviceOptions): Promise<NexusPort & NativePort> {
  const channel = validateKernelDeviceOptions(options, kind === 'tap' ? ETHERNET_HEADER : 0)
  const queues = options.queues ?? 1
  return NativePort.open(
    {
      kind,
      name: options.name ?? 'fs%d',
      netnsPath: netnsPath(options.netns),
      attach: options.attach === true,
      vnetHdr: options.vnetHdr === true,
      multiQueue: queues > 1,
      queues,
      mtu: options.mtu,
      txQueueLen: options.txQueueLen,
      up: options.up ?? true,
      dropOnOverflow: options.dropOnOverflow === true,
    },
    kind,
    kind === 'tap' ? 'ethernet' : 'ip',
    channel,
    `open ${kind} ${options.name ?? ''}`.trim(),
  )
}
