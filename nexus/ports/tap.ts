// TAP port: an L2 kernel interface (IFF_TAP | IFF_NO_PI) carrying Ethernet
// frames; the same options as TUN (vnet_hdr offloads, multi-queue). The port's
// info carries the interface's MAC address.
import type { NexusPort } from './port.js'
import type { NativePort } from './native.js'
import { openKernelDevice, type KernelDeviceOptions } from './tun.js'

export type TapOptions = KernelDeviceOptions

export async function openTap(options: TapOptions = {}): Promise<NexusPort & NativePort> {
  return openKernelDevice('tap', options)
}
