// Loader for the nexus addon and the port implementation shared by the
// kernel-facing ports (tun, tap, afpacket). The addon opens the device and
// runs one I/O thread per queue as side A of that queue's channel; this file
// holds side B (the ChannelEnds users see), the counters block the I/O
// threads write, and the doorbells in both directions:
//   native -> JS: the I/O thread bumps the rx/txReturn doorbell sequence and
//     calls a threadsafe function, whose callback calls ChannelEnd.wake()
//     (V8's Atomics.waitAsync is not woken by a native futex wake);
//   JS -> native: the channel's notifier hook calls kick(), which writes the
//     queue's eventfd that the I/O thread polls next to the device.
// Side B therefore lives in the thread that opened the port.
import { createRequire } from 'node:module'
import { channel as diagnosticsChannel } from 'node:diagnostics_channel'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { constants as osConstants } from 'node:os'
import { FlowstackError } from '../../common/errors.js'
import { attachChannel, createChannel, type ChannelEnd, type CreateChannelOptions } from '../channel/index.js'
import { sumQueueCounters, type LinkType, type NexusPort, type PortCounters, type PortInfo, type PortKind, type PortQueueCounters } from './port.js'

/** Per-queue counter slots written by the I/O thread (mirror of nexus/native/nexus.h `Counter`). */
export const COUNTER_SLOTS = 16
export const C_RX_PACKETS = 0
export const C_RX_BYTES = 1
export const C_TX_PACKETS = 2
export const C_TX_BYTES = 3
export const C_DROP_RING_FULL = 4
export const C_DROP_POOL_EMPTY = 5
export const C_DROP_OVERSIZE = 6
export const C_SYSCALLS = 7
export const C_DOORBELLS = 8
export const C_WAKEUPS = 9
export const C_TX_ERRORS = 10
export const C_CORRUPT = 11
export const C_OWNED_FREE = 12
export const C_RX_STALLS = 13
export const C_KERNEL_DROPS = 14

interface NativeDeviceInfo {
  name: string
  ifindex: number
  mtu: number
  queues: number
  vnetHdr: boolean
  tso4: boolean
  tso6: boolean
  csum: boolean
  mac?: Uint8Array
}

export interface NativeOpenOptions {
  kind: 'tun' | 'tap' | 'afpacket'
  name: string
  netnsPath?: string
  attach?: boolean
  vnetHdr?: boolean
  multiQueue?: boolean
  queues?: number
  mtu?: number
  txQueueLen?: number
  up?: boolean
  promiscuous?: boolean
  blockSize?: number
  blockCount?: number
  blockTimeoutMs?: number
  fanoutGroup?: number
  dropOnOverflow?: boolean
}

export interface NativeDevice {
  info(): NativeDeviceInfo
  startQueue(queue: number, channel: Uint8Array, counters: Uint8Array, doorbell: () => void): void
  kick(queue: number): void
  stopQueues(): void
  close(): void
}

interface NativeAddon {
  NativeDevice: { open(options: NativeOpenOptions): NativeDevice }
  counterSlots: number
  layoutVersion: number
  /** memcpy between two Uint8Array views (absent in an addon built before it). */
  copyBytes?: (dst: Uint8Array, src: Uint8Array, length: number) => void
  /** The classifier's native fast path (absent in an addon built before it); see NativeFlowPath. */
  allocHugeBuffer?: NativeFlowPath['allocHugeBuffer']
  flowLookupBatch?: NativeFlowPath['flowLookupBatch']
  flowSlotWords?: number
}

/**
 * The classifier's exact-match fast path in the addon
 * (nexus/native/flow_table.cc; DESIGN.md §2, Open vSwitch's split).
 */
export interface NativeFlowPath {
  /** Zeroed, 2 MiB aligned memory advised for transparent huge pages; freed when the buffer is collected. */
  allocHugeBuffer(bytes: number): ArrayBuffer
  /**
   * Parses the fast-path headers of packets i < n, hashes their flow keys and
   * probes the flow table `slots` (classifier/flow-table.ts layout): out[i] is
   * the slot index, -1 for a flow not in the table, -2 for the slow path.
   * Returns the number of hits. Reads only.
   */
  flowLookupBatch(slots: Uint32Array, buf: Uint8Array, offsets: Int32Array, lengths: Int32Array, n: number, link: number, portIndex: number, inbound: boolean, out: Int32Array): number
  /** Words per flow-table slot the addon was built for. */
  flowSlotWords: number
}

let flowPath: NativeFlowPath | null | undefined

/**
 * The addon's flow-table functions, or undefined when the addon is not built
 * (or predates them). Never throws: the classifier then runs in TypeScript alone.
 */
export function nativeFlowPath(): NativeFlowPath | undefined {
  if (flowPath === undefined) {
    flowPath = null
    try {
      const native = loadNative()
      if (native.allocHugeBuffer !== undefined && native.flowLookupBatch !== undefined && native.flowSlotWords !== undefined) {
        flowPath = { allocHugeBuffer: native.allocHugeBuffer, flowLookupBatch: native.flowLookupBatch, flowSlotWords: native.flowSlotWords }
      }
    } catch {
      // Not built, not Linux, or a layout mismatch: the TypeScript path serves.
    }
  }
  return flowPath ?? undefined
}

let addon: NativeAddon | undefined

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'binding.gyp')) || existsSync(join(dir, 'prebuilds'))) return dir
    const parent = dirname(dir)
    if (parent === dir) break
    dir = parent
  }
  throw new FlowstackError('PORT_NATIVE_MISSING', 'cannot find the flowstack package root (binding.gyp) to load the nexus addon')
}

/** The addon, loaded once with node-gyp-build. Throws PORT_NATIVE_MISSING when it was not built. */
export function loadNative(): NativeAddon {
  if (addon !== undefined) return addon
  if (process.platform !== 'linux') throw new FlowstackError('PORT_UNSUPPORTED', 'kernel ports need Linux')
  const require = createRequire(import.meta.url)
  try {
    const load = require('node-gyp-build') as (dir: string) => NativeAddon
    addon = load(packageRoot())
  } catch (err) {
    if (err instanceof FlowstackError) throw err
    throw new FlowstackError('PORT_NATIVE_MISSING', `the nexus addon is not built (run: node scripts/build-native.mjs): ${(err as Error).message}`, { cause: err })
  }
  if (addon.counterSlots !== COUNTER_SLOTS) throw new FlowstackError('PORT_NATIVE_MISMATCH', 'nexus addon counter layout differs from this build')
  return addon
}

const errnoNames = new Map<number, string>(Object.entries(osConstants.errno).map(([name, value]) => [value, name]))

/**
 * Below this many bytes V8's own copy beats the call into the addon
 * (measured: the call costs ~0.1 µs, V8 copies SharedArrayBuffer bytes at
 * 5-12 GB/s).
 */
const NATIVE_COPY_MIN = 2048

/**
 * Copies `length` bytes of `src` to the start of `dst`: for moving a packet
 * from one channel's buffer to another's (a relay, a bridge), where buffers
 * cannot change hands. V8 copies between SharedArrayBuffer-backed arrays with
 * relaxed per-word atomics, 2-4x slower than memcpy; once a kernel port has
 * loaded the addon, large copies go through its memcpy instead.
 */
export function copyPacket(dst: Uint8Array, src: Uint8Array, length: number): void {
  const native = addon?.copyBytes
  if (native !== undefined && length >= NATIVE_COPY_MIN) native(dst, src, length)
  else dst.set(length === src.length ? src : src.subarray(0, length))
}

/** Maps an addon open failure (errno + syscall) to a stable port error code. */
export function portOpenError(err: unknown, what: string): Error {
  const e = err as { errno?: number; syscall?: string; message?: string }
  if (typeof e?.errno !== 'number') return err instanceof Error ? err : new Error(String(err))
  const errnoName = errnoNames.get(e.errno) ?? `errno ${e.errno}`
  const syscall = e.syscall ?? 'open'
  let code = 'PORT_OPEN_FAILED'
  if (errnoName === 'EPERM' || errnoName === 'EACCES') code = 'PORT_PERMISSION'
  else if (errnoName === 'ENODEV' || errnoName === 'ENXIO' || (errnoName === 'ENOENT' && syscall.startsWith('open(netns'))) code = 'PORT_NO_DEVICE'
  else if (errnoName === 'EBUSY' || errnoName === 'EEXIST') code = 'PORT_BUSY'
  else if (errnoName === 'EINVAL' && syscall.includes('SIOCSIFMTU')) code = 'PORT_BAD_MTU'
  const error = new FlowstackError(code, `${what}: ${syscall} failed with ${errnoName}`, { cause: err })
  Object.assign(error, { errno: -e.errno, syscall })
  return error
}

/** /var/run/netns/NAME for `ip netns` names; absolute paths pass through. */
export function netnsPath(netns: string | undefined): string | undefined {
  if (netns === undefined) return undefined
  if (netns.startsWith('/')) return netns
  if (netns.includes('/') || netns === '.' || netns === '..' || netns.length === 0) {
    throw new FlowstackError('PORT_BAD_OPTIONS', `invalid network namespace name ${JSON.stringify(netns)}`)
  }
  return `/var/run/netns/${netns}`
}

export function checkInterfaceName(name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > 15 || /[\s/]/.test(name)) {
    throw new FlowstackError('PORT_BAD_OPTIONS', `invalid interface name ${JSON.stringify(name)} (1..15 bytes, no spaces or '/')`)
  }
}

/** Smallest MTU an IPv4 link may have (RFC 791: every host must accept 68-byte datagrams). */
export const MIN_MTU = 68
export const MAX_MTU = 65535

export function checkMtu(mtu: number | undefined, limit: number, why: string): void {
  if (mtu === undefined) return
  if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu > MAX_MTU) {
    throw new FlowstackError('PORT_BAD_MTU', `MTU ${mtu} is out of range [${MIN_MTU}, ${MAX_MTU}]`)
  }
  if (mtu > limit) throw new FlowstackError('PORT_BAD_MTU', `MTU ${mtu} does not fit ${why} (at most ${limit})`)
}

/** Channel buffers for a GSO super-packet: 64 KiB + the virtio header, rounded to 64. */
export const GSO_BUFFER_SIZE = 65600
/** Bytes of struct virtio_net_hdr_v1 in front of each packet on a vnet_hdr port. */
export const VIRTIO_HDR = 12

export function channelDefaults(vnetHdr: boolean, options: CreateChannelOptions | undefined): CreateChannelOptions {
  const base: CreateChannelOptions = vnetHdr
    ? { bufferSize: GSO_BUFFER_SIZE, bufferCount: 256, ringCapacity: 256 }
    : { bufferSize: 2048, bufferCount: 2048, ringCapacity: 1024 }
  return { ...base, ...options }
}

const portOpened = diagnosticsChannel('flowstack:port:open')
const portClosed = diagnosticsChannel('flowstack:port:close')

export interface PoolCheck {
  /** Buffers free on either side (native free list + side B free list). */
  free: number
  /** Buffers side B holds (received or allocated, not released/sent). */
  heldByUser: number
  total: number
  /** True when every buffer of every queue is free again. */
  full: boolean
}

/** A port backed by the addon: kernel device + one channel and I/O thread per queue. */
export class NativePort implements NexusPort {
  readonly info: PortInfo
  readonly queues: readonly ChannelEnd[]
  private readonly device: NativeDevice
  private readonly counterWords: BigUint64Array
  private closed = false
  private closing: Promise<void> | undefined
  private finalCheck: PoolCheck | undefined

  private constructor(device: NativeDevice, kind: PortKind, linkType: LinkType, channelOptions: CreateChannelOptions) {
    const native = device.info()
    this.device = device
    const queueCount = native.queues
    const countersSab = new SharedArrayBuffer(queueCount * COUNTER_SLOTS * 8)
    this.counterWords = new BigUint64Array(countersSab)
    const ends: ChannelEnd[] = []
    try {
      for (let q = 0; q < queueCount; q++) {
        const sab = createChannel(channelOptions)
        const end = attachChannel(sab, 'b', { notifier: () => device.kick(q) })
        device.startQueue(q, new Uint8Array(sab), new Uint8Array(countersSab, q * COUNTER_SLOTS * 8, COUNTER_SLOTS * 8), () => end.wake())
        ends.push(end)
      }
    } catch (err) {
      device.stopQueues()
      device.close()
      throw err
    }
    this.queues = ends
    this.info = {
      name: native.name,
      kind,
      linkType,
      mtu: native.mtu,
      ...(native.mac !== undefined ? { mac: native.mac } : {}),
      offloads: { vnetHdr: native.vnetHdr, tso4: native.tso4, tso6: native.tso6, checksum: native.csum },
      queues: queueCount,
    }
    if (portOpened.hasSubscribers) portOpened.publish({ port: this.info })
  }

  /** Opens the device through the addon and starts its queues. */
  static open(options: NativeOpenOptions, kind: PortKind, linkType: LinkType, channelOptions: CreateChannelOptions, what: string): NativePort {
    const { NativeDevice } = loadNative()
    let device: NativeDevice
    try {
      device = NativeDevice.open(options)
    } catch (err) {
      throw portOpenError(err, what)
    }
    return new NativePort(device, kind, linkType, channelOptions)
  }

  private assertOpen(): void {
    if (this.closed) throw new FlowstackError('PORT_CLOSED', `port ${this.info.name} is closed`)
  }

  private queueCounters(q: number): PortQueueCounters {
    const w = this.counterWords
    const at = (slot: number): number => Number(w[q * COUNTER_SLOTS + slot])
    return {
      rxPackets: at(C_RX_PACKETS),
      rxBytes: at(C_RX_BYTES),
      txPackets: at(C_TX_PACKETS),
      txBytes: at(C_TX_BYTES),
      drops: { ringFull: at(C_DROP_RING_FULL), poolEmpty: at(C_DROP_POOL_EMPTY), oversize: at(C_DROP_OVERSIZE) },
      syscalls: at(C_SYSCALLS),
      doorbells: at(C_DOORBELLS),
    }
  }

  /** Read straight from the shared counters block: no call into the addon. */
  counters(): PortCounters {
    this.assertOpen()
    const queues: PortQueueCounters[] = []
    for (let q = 0; q < this.queues.length; q++) queues.push(this.queueCounters(q))
    return sumQueueCounters(queues)
  }

  /** Transmit errors the kernel reported (EINVAL, EIO ...) and corrupt descriptors, per port. */
  /**
   * Beyond the NexusPort counters: transmit errors the kernel reported
   * (EINVAL, EIO ...), corrupt descriptors side B produced, I/O thread
   * wake-ups, and rx stalls (reading paused because side B had not returned
   * buffers; the kernel's queue held the packets meanwhile), and on AF_PACKET
   * the frames the kernel dropped for want of ring space (PACKET_STATISTICS).
   */
  errorCounters(): { txErrors: number; corrupt: number; wakeups: number; rxStalls: number; kernelDrops: number } {
    this.assertOpen()
    const sum = (slot: number): number => {
      let total = 0
      for (let q = 0; q < this.queues.length; q++) total += Number(this.counterWords[q * COUNTER_SLOTS + slot])
      return total
    }
    return { txErrors: sum(C_TX_ERRORS), corrupt: sum(C_CORRUPT), wakeups: sum(C_WAKEUPS), rxStalls: sum(C_RX_STALLS), kernelDrops: sum(C_KERNEL_DROPS) }
  }

  /**
   * Pool accounting across both sides of every queue. Also valid after
   * close() (it then reports the state close() left): the way tests check
   * that closing returned every buffer.
   */
  poolCheck(): PoolCheck {
    return this.finalCheck ?? this.countPool()
  }

  private countPool(): PoolCheck {
    let free = 0
    let held = 0
    let total = 0
    for (let q = 0; q < this.queues.length; q++) {
      const b = this.queues[q].poolAccounting()
      free += b.free + Number(this.counterWords[q * COUNTER_SLOTS + C_OWNED_FREE])
      held += b.held
      total += b.total
    }
    return { free, heldByUser: held, total, full: free === total }
  }

  close(): Promise<void> {
    if (this.closing !== undefined) return this.closing
    this.closed = true
    this.closing = Promise.resolve().then(() => this.shutdown())
    return this.closing
  }

  private shutdown(): void {
    // 1. Join the I/O threads; they hand pending tx buffers back and drain rxReturn.
    this.device.stopQueues()
    // 2. Side B gives back what is still in flight towards it.
    for (const end of this.queues) {
      end.receive(Number.MAX_SAFE_INTEGER, (index) => end.release(index))
      end.reclaim()
      end.flush()
    }
    // 3. The addon takes the returned rx buffers in and releases the device.
    this.device.close()
    this.finalCheck = this.countPool()
    for (const end of this.queues) end.close()
    if (portClosed.hasSubscribers) portClosed.publish({ port: this.info, pool: this.finalCheck })
  }
}
