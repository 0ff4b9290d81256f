// TAP port: an L2 kernel interface (IFF_TAP | IFF_NO_PI) carrying Ethernet
// frames; the same options as TUN (vnet_hdr offloads, multi-queue). The port's
// info carries the interface's MAC address.
import type { NexusPort } from './port.js'
import { NativePort, netnsPath } from './native.js'
import { validateKernelDeviceOptions, type KernelDeviceOptions } from './tun.js'

/** Ethernet header bytes a frame adds to the MTU (no VLAN tag). */
const ETHERNET_HEADER = 14

export type TapOptions = KernelDeviceOptions

export async function openTap(options: TapOptions = {}): Promise<NexusPort & NativePort> {
  const channel = validateKernelDeviceOptions(options, ETHERNET_HEADER)
  const queues = options.queues ?? 1
  return NativePort.open(
    {
      kind: 'tap',
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
    'tap',
    'ethernet',
    channel,
    `open tap ${options.name ?? ''}`.trim(),
  )
}
