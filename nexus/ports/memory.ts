// Memory ports: in-process virtual wires and a learning L2 switch. No
// privileges, no kernel: the embedded default for the demo and for tests.
//
// Every memory port owns one channel (nexus/channel). The port's user holds
// side B (`port.queues[0]`), in this thread or, after `transfer()`, in a
// worker (`attachMemoryPort(handle)`). Side A of every port stays in the
// thread that created the wire or switch, where a pump moves packets between
// ports: it consumes a port's TX ring and copies each packet into a buffer
// of the destination port's own pool (channels never share buffers, so one
// port's user can never see or scribble on another's memory), in batches,
// and sleeps on the channel doorbells (`waitForWork`) when there is nothing
// to do — no busy loop, no timer per packet.
//
// Counters live in a small SharedArrayBuffer next to the channel so a worker
// holding side B reads the same numbers the pump writes.
import { threadId } from 'node:worker_threads'
import { channel as diagnosticsChannel } from 'node:diagnostics_channel'
import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import { FlowstackError } from '../../common/errors.js'
import { attachChannel, createChannel, drainChannelEnds, type ChannelEnd, type CreateChannelOptions, type PoolAccounting } from '../channel/index.js'
import type { LinkType, NexusPort, PortCounters, PortInfo, PortQueueCounters } from './port.js'
import { copyEndOf, copyPacket, type CopyEnd } from './memory-copy.js'
import { MacTable, NO_PORT, isGroupAddress, macKey, type MacTableCounters, type MacTableEntry } from './memory-mac-table.js'

// ------------------------------------------------------------------ options

export interface MemoryChannelOptions {
  /** Bytes per pool buffer (default 2048). Must hold mtu + link header. */
  bufferSize?: number
  /** Pool buffers per port channel (default 1024, half for each direction). */
  bufferCount?: number
  /** Descriptors per ring (default 1024). */
  ringCapacity?: number
}

interface CommonOptions {
  /** IP MTU; the largest frame is mtu + 14 (+ 4 with an 802.1Q tag) on Ethernet. Default 1500. */
  mtu?: number
  channel?: MemoryChannelOptions
  /** Most packets the pump moves per ingress port before looking at the others (default 64). */
  batchSize?: number
  /** Name prefix in PortInfo.name. */
  name?: string
}

export interface MemoryWireOptions extends CommonOptions {
  /** 'ethernet' (default): frames with MACs; 'ip': bare IPv4/IPv6 packets. */
  linkType?: LinkType
  /** MACs of the two ends (Ethernet only); default from the locally administered range 02:…. */
  macs?: [Uint8Array | undefined, Uint8Array | undefined]
  /**
   * What the wire does when the receiving port's pool is exhausted (its user
   * is not keeping up): 'backpressure' (default) leaves packets in the
   * sender's TX ring until buffers come back, so the wire itself never loses
   * a packet (loss is the impairment middleware's job, seeded); 'drop'
   * drops and counts them like a NIC would.
   */
  overflow?: 'backpressure' | 'drop'
}

export interface MemorySwitchOptions extends CommonOptions {
  /** MAC table entries not refreshed for this long are forgotten (default 300 000 ms, 802.1D). */
  agingMs?: number
  /** MAC table capacity (default 4096). */
  tableCapacity?: number
  /** Time source for aging (milliseconds, monotonic); default performance.now. */
  clock?: { now(): number }
}

export interface MemorySwitchPortOptions {
  mac?: Uint8Array
  name?: string
}

// ----------------------------------------------------------------- counters

// Float64 slots in the shared counters buffer. One writer (the pump thread).
const C_RX_PACKETS = 0
const C_RX_BYTES = 1
const C_TX_PACKETS = 2
const C_TX_BYTES = 3
const C_DROP_RING_FULL = 4
const C_DROP_POOL_EMPTY = 5
const C_DROP_OVERSIZE = 6
const C_DOORBELLS = 7
const COUNTER_SLOTS = 8

function readCounters(stats: Float64Array): PortCounters {
  const queue: PortQueueCounters = {
    rxPackets: stats[C_RX_PACKETS],
    rxBytes: stats[C_RX_BYTES],
    txPackets: stats[C_TX_PACKETS],
    txBytes: stats[C_TX_BYTES],
    drops: { ringFull: stats[C_DROP_RING_FULL], poolEmpty: stats[C_DROP_POOL_EMPTY], oversize: stats[C_DROP_OVERSIZE] },
    // A memory port never enters the kernel.
    syscalls: 0,
    doorbells: stats[C_DOORBELLS],
  }
  return { ...queue, drops: { ...queue.drops }, queues: [queue] }
}

// --------------------------------------------------------------------- MACs

let macCounter = 0

/** A fresh locally administered unicast MAC: 02:<thread id>:<32-bit counter>, unique per process. */
export function nextLocalMac(): Uint8Array {
  const n = ++macCounter
  return Uint8Array.of(0x02, threadId & 0xff, (n >>> 24) & 0xff, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff)
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':')
}

function checkMac(mac: Uint8Array, where: string): Uint8Array {
  if (!(mac instanceof Uint8Array) || mac.length !== 6) throw new FlowstackError('PORT_BAD_MAC', `${where}: a MAC is 6 bytes`)
  if ((mac[0] & 1) !== 0) throw new FlowstackError('PORT_BAD_MAC', `${where}: ${formatMac(mac)} is a group address`)
  return Uint8Array.from(mac)
}

const ETHERNET_HEADER = 14
const VLAN_TAG = 4
const ETHERTYPE_VLAN = 0x8100
const MIN_MTU = 68 // RFC 791: every IPv4 host must handle 68-byte datagrams

function linkHeaderBytes(linkType: LinkType): number {
  return linkType === 'ethernet' ? ETHERNET_HEADER + VLAN_TAG : 0
}

function resolveChannelOptions(mtu: number, linkType: LinkType, options: MemoryChannelOptions | undefined): CreateChannelOptions {
  const bufferSize = options?.bufferSize ?? 2048
  if (!Number.isInteger(mtu) || mtu < MIN_MTU || mtu + linkHeaderBytes(linkType) > bufferSize) {
    throw new FlowstackError(
      'PORT_MTU_OUT_OF_RANGE',
      `mtu ${mtu} is out of range [${MIN_MTU}, ${bufferSize - linkHeaderBytes(linkType)}] for ${bufferSize}-byte buffers`,
    )
  }
  return { bufferSize, bufferCount: options?.bufferCount ?? 1024, ringCapacity: options?.ringCapacity ?? 1024, rxBufferShare: 0.5 }
}

// ------------------------------------------------------------ handle, ports

/** What another thread needs to open a memory port's user side: structured-clone it (postMessage / workerData). */
export interface MemoryPortHandle {
  readonly channel: SharedArrayBuffer
  readonly counters: SharedArrayBuffer
  readonly info: { name: string; linkType: LinkType; mtu: number; mac?: number[] }
}

export interface MemoryPoolReport {
  total: number
  /** The pump's side (A). */
  device: PoolAccounting
  /** The user's side (B) when it lives in this thread; undefined after transfer(). */
  user?: PoolAccounting
}

function portInfo(name: string, linkType: LinkType, mtu: number, mac: Uint8Array | undefined): PortInfo {
  return {
    name,
    kind: 'memory',
    linkType,
    mtu,
    ...(mac !== undefined ? { mac } : {}),
    offloads: { vnetHdr: false, tso4: false, tso6: false, checksum: false },
    queues: 1,
  }
}

function closedError(name: string): FlowstackError {
  return new FlowstackError('PORT_CLOSED', `port ${name} is closed`)
}

/**
 * The user-facing side of a memory port, created by a wire or switch. Side B
 * is attached on first use of `queues`, in this thread, unless `transfer()`
 * hands it to another thread first.
 */
export class MemoryPort implements NexusPort {
  readonly info: PortInfo
  private userEnd: ChannelEnd | undefined
  private userQueues: readonly ChannelEnd[] | undefined
  private transferred = false
  private closed = false
  private closing: Promise<void> | undefined
  private finalReport: MemoryPoolReport | undefined

  /** @internal */
  constructor(
    info: PortInfo,
    /** @internal */ readonly device: DevicePort,
    private readonly closeDevice: (port: MemoryPort) => Promise<void>,
  ) {
    this.info = info
  }

  get queues(): readonly ChannelEnd[] {
    if (this.closed) throw closedError(this.info.name)
    if (this.transferred) throw new FlowstackError('PORT_TRANSFERRED', `port ${this.info.name} was transferred to another thread`)
    if (this.userQueues === undefined) {
      this.userEnd = attachChannel(this.device.channel, 'b')
      this.userQueues = Object.freeze([this.userEnd])
    }
    return this.userQueues
  }

  /** Counters of this port. Like every use but close() and poolReport(), throws PORT_CLOSED after close. */
  counters(): PortCounters {
    if (this.closed) throw closedError(this.info.name)
    return readCounters(this.device.stats)
  }

  /**
   * Hands the user side to another thread: post the handle and call
   * `attachMemoryPort(handle)` there. `queues` is unusable here afterwards.
   */
  transfer(): MemoryPortHandle {
    if (this.closed) throw closedError(this.info.name)
    if (this.userEnd !== undefined) {
      throw new FlowstackError('PORT_TRANSFERRED', `port ${this.info.name}: its user side is already open in this thread`)
    }
    this.transferred = true
    return handleOf(this.info, this.device)
  }

  /** Pool accounting of both sides (live while open, as left at close afterwards). */
  poolReport(): MemoryPoolReport {
    if (this.finalReport !== undefined) return this.finalReport
    const report: MemoryPoolReport = { total: this.device.channelEnd.bufferCount, device: this.device.channelEnd.poolAccounting() }
    if (this.userEnd !== undefined && !this.userEnd.isClosed) report.user = this.userEnd.poolAccounting()
    return report
  }

  close(): Promise<void> {
    if (this.closing === undefined) {
      this.closing = (async () => {
        // First stop deliveries into this port, then consume what is still
        // queued for the user, so every one of those buffers goes home (a user
        // side never opened here is opened now just for that).
        this.device.open = false
        if (!this.transferred && this.userEnd === undefined) this.userEnd = attachChannel(this.device.channel, 'b')
        const user = this.userEnd
        // Both ends in this thread: take turns until every buffer is home
        // (rings smaller than a side's share of the pool leave return backlogs).
        if (user !== undefined) drainChannelEnds(user, this.device.channelEnd)
        await this.closeDevice(this)
        if (user !== undefined) user.reclaim()
        const report: MemoryPoolReport = { total: this.device.channelEnd.bufferCount, device: this.device.poolAtClose ?? this.device.channelEnd.poolAccounting() }
        if (user !== undefined) report.user = user.poolAccounting()
        this.finalReport = report
        user?.close()
        this.closed = true
      })()
    }
    return this.closing
  }
}

function handleOf(info: PortInfo, device: DevicePort): MemoryPortHandle {
  return {
    channel: device.channel,
    counters: device.stats.buffer as SharedArrayBuffer,
    info: { name: info.name, linkType: info.linkType, mtu: info.mtu, ...(info.mac !== undefined ? { mac: Array.from(info.mac) } : {}) },
  }
}

/** A memory port's user side opened from a handle, typically in a worker thread. */
export interface AttachedMemoryPort extends NexusPort {
  /** Pool accounting of this (user) side; after close, as left at close. */
  poolAccounting(): PoolAccounting
}

/**
 * Opens the user side of a memory port in this thread from a handle made by
 * `MemoryPort.transfer()`. Its close() gives back what it holds and closes
 * side B; the wire or switch itself is closed by the thread that created it.
 */
export function attachMemoryPort(handle: MemoryPortHandle): AttachedMemoryPort {
  const end = attachChannel(handle.channel, 'b')
  const stats = new Float64Array(handle.counters)
  const mac = handle.info.mac === undefined ? undefined : Uint8Array.from(handle.info.mac)
  const info = portInfo(handle.info.name, handle.info.linkType, handle.info.mtu, mac)
  const queues = Object.freeze([end])
  let closed = false
  let finalAccounting: PoolAccounting | undefined
  return {
    info,
    get queues(): readonly ChannelEnd[] {
      if (closed) throw closedError(info.name)
      return queues
    },
    counters: () => {
      if (closed) throw closedError(info.name)
      return readCounters(stats)
    },
    poolAccounting: () => finalAccounting ?? end.poolAccounting(),
    async close() {
      if (closed) return
      closed = true
      drainIncoming(end)
      end.flush()
      end.reclaim()
      finalAccounting = end.poolAccounting()
      end.close()
    },
  }
}

/** Consumes and releases everything waiting on an end's incoming ring (bounded by the ring size). */
function drainIncoming(end: ChannelEnd): void {
  for (let round = 0; round < 64; round++) {
    if (end.receive(end.ringCapacity, (index) => end.release(index)) === 0) break
  }
}

// -------------------------------------------------------------- device side

/** The pump's view of one port: side A of its channel, its counters, its limits. */
export class DevicePort {
  readonly channel: SharedArrayBuffer
  readonly channelEnd: ChannelEnd
  readonly copy: CopyEnd
  readonly stats: Float64Array
  /** Largest packet accepted from this port's user (mtu + link header). */
  readonly maxPacket: number
  readonly linkType: LinkType
  /** Buffers allocated ahead on this port's pool for backpressured delivery into it. */
  readonly stash: Int32Array
  stashCount = 0
  /** False once the port is closing: nothing is delivered into it or forwarded from it. */
  open = true
  private isShutDown = false
  poolAtClose: PoolAccounting | undefined
  /** Set while this port has sent packets not yet flushed to its user. */
  dirty = false

  constructor(linkType: LinkType, mtu: number, channelOptions: CreateChannelOptions, stashSize: number) {
    this.linkType = linkType
    this.channel = createChannel(channelOptions)
    this.channelEnd = attachChannel(this.channel, 'a')
    // The pump serves the ports' users; they (their sockets, servers,
    // workers) decide whether the process lives, not a pump waiting for them.
    this.channelEnd.setWaitsKeepAlive(false)
    this.copy = copyEndOf(this.channelEnd)
    this.stats = new Float64Array(new SharedArrayBuffer(COUNTER_SLOTS * 8))
    this.maxPacket = linkType === 'ethernet' ? mtu + ETHERNET_HEADER : mtu
    this.stash = new Int32Array(stashSize)
  }

  /** Frames may carry one 802.1Q tag on top of mtu + 14. */
  oversize(bytes: Uint8Array, length: number): boolean {
    if (length <= this.maxPacket) return false
    if (this.linkType === 'ethernet' && length <= this.maxPacket + VLAN_TAG && length >= ETHERNET_HEADER + VLAN_TAG) {
      return ((bytes[12] << 8) | bytes[13]) !== ETHERTYPE_VLAN
    }
    return true
  }

  /**
   * Copies a packet into this port's pool and queues it for its user (flushed
   * by the caller once per batch). `bufferIndex` is taken from the stash when
   * >= 0, else allocated here. Returns false (and counts) when it was dropped.
   */
  deliver(from: DevicePort, srcIndex: number, length: number, flags: number, aux: number, bufferIndex: number): boolean {
    const end = this.channelEnd
    if (this.userGone()) {
      // The user closed its side (perhaps in the middle of this batch):
      // nowhere to put the packet, and a stash buffer taken for it goes back.
      if (bufferIndex >= 0) end.free(bufferIndex)
      this.stats[C_DROP_POOL_EMPTY]++
      return false
    }
    let index = bufferIndex
    if (index < 0) {
      index = end.alloc()
      if (index < 0) {
        this.stats[C_DROP_POOL_EMPTY]++
        return false
      }
    }
    copyPacket(from.copy, srcIndex, this.copy, index, length)
    if (!end.send(index, length, flags, aux)) {
      end.free(index)
      this.stats[C_DROP_RING_FULL]++
      return false
    }
    this.stats[C_RX_PACKETS]++
    this.stats[C_RX_BYTES] += length
    this.dirty = true
    return true
  }

  /** True once this port's user closed side B (one shared load). */
  userGone(): boolean {
    return this.channelEnd.peerClosed
  }

  countTx(length: number): void {
    this.stats[C_TX_PACKETS]++
    this.stats[C_TX_BYTES] += length
  }

  countOversize(): void {
    this.stats[C_DROP_OVERSIZE]++
  }

  countDoorbell(): void {
    this.stats[C_DOORBELLS]++
  }

  /** Fills the stash from the pool up to `want`; returns how many are stashed. */
  fillStash(want: number): number {
    const end = this.channelEnd
    while (this.stashCount < want) {
      const index = end.alloc()
      if (index < 0) break
      this.stash[this.stashCount++] = index
    }
    return this.stashCount
  }

  takeStash(): number {
    return this.stash[--this.stashCount]
  }

  /**
   * Gives every buffer back: consumes and releases what the user transmitted,
   * frees the stash, publishes, and reclaims what came back. Then closes side A.
   */
  shutdown(): void {
    if (this.isShutDown) return
    this.isShutDown = true
    this.open = false
    const end = this.channelEnd
    drainIncoming(end)
    while (this.stashCount > 0) end.free(this.takeStash())
    end.flush()
    end.reclaim()
    // A user that closed first never received these: they come home here.
    end.reclaimUnreceived()
    this.poolAtClose = end.poolAccounting()
    end.close()
  }
}

// -------------------------------------------------------------------- pump

/**
 * One pump loop: run `step` while it moves packets (yielding to the event loop
 * every few batches so a busy wire cannot starve timers and I/O), and sleep on
 * a doorbell when it does not. `step` returns > 0 when it moved packets, 0
 * when idle (sleep until the source has work), < 0 when blocked on the
 * destination's pool (sleep until buffers come back).
 */
class PumpLoop {
  private stopped = false
  private readonly done: Promise<void>

  /** Why the loop stopped by itself, if it did (also published on flowstack:memory:pump-error). */
  failure: unknown

  constructor(
    private readonly step: () => number,
    private readonly source: DevicePort,
    private readonly blockedOn: () => DevicePort | undefined,
  ) {
    // A pump that throws must not become an unhandled rejection that takes
    // the process down: it stops, says why, and close() still cleans up.
    this.done = this.run().catch((err: unknown) => {
      this.failure = err
      if (pumpErrorChannel.hasSubscribers) pumpErrorChannel.publish({ port: this.source, error: err })
    })
  }

  private async run(): Promise<void> {
    let burst = 0
    let lookAgain = false
    while (!this.stopped) {
      const moved = this.step()
      if (moved > 0) {
        lookAgain = true
        if (++burst >= 16) {
          burst = 0
          await yieldToEventLoop()
        }
        continue
      }
      burst = 0
      if (lookAgain) {
        // Just went idle after moving packets: look once more after one
        // event-loop turn before sleeping. A producer mid-stream usually has
        // the next batch ready by then, which saves a futex sleep and wake-up
        // (~7 us, far more on a loaded machine). Bounded: one turn, then sleep.
        lookAgain = false
        await yieldToEventLoop()
        continue
      }
      // The user of the source port closed its side: nothing more will come,
      // and its doorbell would now answer at once forever. What is left in
      // the ring is drained when the port closes.
      if (this.source.userGone()) break
      if (moved < 0) {
        const target = this.blockedOn()
        if (target === undefined) await this.source.channelEnd.waitForWork()
        else await target.channelEnd.waitForBuffers()
      } else {
        await this.source.channelEnd.waitForWork()
      }
      if (this.stopped) break
      this.source.countDoorbell()
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    this.source.channelEnd.wake()
    const target = this.blockedOn()
    target?.channelEnd.wake()
    await this.done
  }
}

const DEFAULT_BATCH = 64
const pumpErrorChannel = diagnosticsChannel('flowstack:memory:pump-error')

function resolveBatch(batchSize: number | undefined): number {
  const batch = batchSize ?? DEFAULT_BATCH
  if (!Number.isInteger(batch) || batch < 1 || batch > 4096) throw new FlowstackError('PORT_BAD_OPTIONS', `batchSize ${batch} must be in [1, 4096]`)
  return batch
}

// -------------------------------------------------------------------- wire

/**
 * A point-to-point virtual wire: what one port transmits, the other receives.
 * Closing either port takes the link down (both pumps stop); close both to
 * get every buffer back.
 */
export function createMemoryWire(options: MemoryWireOptions = {}): [MemoryPort, MemoryPort] {
  const linkType = options.linkType ?? 'ethernet'
  if (linkType !== 'ethernet' && linkType !== 'ip') throw new FlowstackError('PORT_BAD_OPTIONS', `linkType ${String(linkType)} is not 'ethernet' or 'ip'`)
  const mtu = options.mtu ?? 1500
  const channelOptions = resolveChannelOptions(mtu, linkType, options.channel)
  const batch = resolveBatch(options.batchSize)
  const backpressure = (options.overflow ?? 'backpressure') === 'backpressure'
  const name = options.name ?? 'wire'
  const devices = [0, 1].map(() => new DevicePort(linkType, mtu, channelOptions, batch)) as [DevicePort, DevicePort]
  const macs =
    linkType === 'ethernet'
      ? [0, 1].map((i) => (options.macs?.[i] !== undefined ? checkMac(options.macs[i] as Uint8Array, `${name}.macs[${i}]`) : nextLocalMac()))
      : [undefined, undefined]

  const forward = (from: DevicePort, to: DevicePort): number => {
    if (!from.open || !to.open) return 0
    const fromEnd = from.channelEnd
    let budget = batch
    // Backpressure only makes sense towards a user that is still there.
    const stashed = backpressure && !to.userGone()
    if (stashed) {
      budget = to.fillStash(batch)
      // No buffer to copy into: sleep until the receiver gives some back. If
      // the sender had nothing queued anyway, the next step finds that out
      // and sleeps on the sender's doorbell instead.
      if (budget === 0) return -1
    }
    const moved = fromEnd.receive(budget, (index, length, flags, aux) => {
      const bytes = fromEnd.buffer(index)
      if (from.oversize(bytes, length)) {
        from.countOversize()
      } else {
        from.countTx(length)
        to.deliver(from, index, length, flags, aux, stashed ? to.takeStash() : -1)
      }
      fromEnd.release(index)
    })
    if (moved > 0) {
      to.channelEnd.flush()
      to.dirty = false
      fromEnd.flush()
    }
    return moved
  }

  const loops = [
    new PumpLoop(() => forward(devices[0], devices[1]), devices[0], () => (backpressure ? devices[1] : undefined)),
    new PumpLoop(() => forward(devices[1], devices[0]), devices[1], () => (backpressure ? devices[0] : undefined)),
  ]
  let linkDown: Promise<void> | undefined
  const takeLinkDown = (): Promise<void> => {
    linkDown ??= Promise.all(loops.map((l) => l.stop())).then(() => undefined)
    return linkDown
  }
  const ports = devices.map(
    (device, i) =>
      new MemoryPort(portInfo(`${name}.${i}`, linkType, mtu, macs[i]), device, async () => {
        await takeLinkDown()
        device.shutdown()
      }),
  ) as [MemoryPort, MemoryPort]
  return ports
}

// ------------------------------------------------------------------ switch

export interface MemorySwitchCounters extends MacTableCounters {
  /** Unicast frames sent to the one learned port. */
  forwarded: number
  /** Frames flooded (broadcast, multicast, unknown unicast). */
  flooded: number
  /** Of those, unicast frames to a destination not (or no longer) in the table. */
  unknownUnicast: number
  /** Unicast frames whose destination was learned on the ingress port: not sent back out. */
  filtered: number
  /** Frames shorter than an Ethernet header. */
  runts: number
  /** Frames with a group (multicast) source address: invalid, dropped. */
  badSource: number
}

export interface MemorySwitch {
  addPort(options?: MemorySwitchPortOptions): MemoryPort
  readonly ports: readonly MemoryPort[]
  counters(): MemorySwitchCounters
  macTable(): MacTableEntry[]
  close(): Promise<void>
}

/**
 * A learning L2 switch (IEEE 802.1D in spirit): learns source MACs per port,
 * forwards known unicast to the learned port only, floods broadcast,
 * multicast and unknown unicast to every other port, ages entries. A port
 * whose user is not keeping up loses frames (counted poolEmpty on that port)
 * without stalling the others.
 */
export function createMemorySwitch(options: MemorySwitchOptions = {}): MemorySwitch {
  const mtu = options.mtu ?? 1500
  const channelOptions = resolveChannelOptions(mtu, 'ethernet', options.channel)
  const batch = resolveBatch(options.batchSize)
  const name = options.name ?? 'switch'
  const clock = options.clock ?? performance
  const table = new MacTable(options.tableCapacity ?? 4096, options.agingMs ?? 300_000)
  const devices: (DevicePort | undefined)[] = []
  const ports: MemoryPort[] = []
  const loops: (PumpLoop | undefined)[] = []
  const counters = { forwarded: 0, flooded: 0, unknownUnicast: 0, filtered: 0, runts: 0, badSource: 0 }
  let closed = false

  const flood = (ingress: number, from: DevicePort, index: number, length: number, flags: number, aux: number): void => {
    counters.flooded++
    for (let p = 0; p < devices.length; p++) {
      const to = devices[p]
      if (p !== ingress && to !== undefined && to.open) to.deliver(from, index, length, flags, aux, -1)
    }
  }

  const forwardFrom = (ingress: number): number => {
    const from = devices[ingress]
    if (from === undefined || !from.open) return 0
    const end = from.channelEnd
    const now = clock.now()
    table.maybeSweep(now)
    const moved = end.receive(batch, (index, length, flags, aux) => {
      const bytes = end.buffer(index)
      if (length < ETHERNET_HEADER) {
        counters.runts++
      } else if (from.oversize(bytes, length)) {
        from.countOversize()
      } else if (isGroupAddress(bytes, 6)) {
        counters.badSource++
      } else {
        from.countTx(length)
        table.learn(macKey(bytes, 6), ingress, now)
        if (isGroupAddress(bytes, 0)) {
          flood(ingress, from, index, length, flags, aux)
        } else {
          const egress = table.lookup(macKey(bytes, 0), now)
          const to = egress === NO_PORT ? undefined : devices[egress]
          if (egress === ingress) {
            counters.filtered++
          } else if (to === undefined || !to.open) {
            counters.unknownUnicast++
            flood(ingress, from, index, length, flags, aux)
          } else {
            counters.forwarded++
            to.deliver(from, index, length, flags, aux, -1)
          }
        }
      }
      end.release(index)
    })
    if (moved > 0) {
      for (const to of devices) {
        if (to !== undefined && to.dirty) {
          to.dirty = false
          to.channelEnd.flush()
        }
      }
      end.flush()
    }
    return moved
  }

  const closePort = async (portNumber: number): Promise<void> => {
    const device = devices[portNumber]
    if (device === undefined) return
    await loops[portNumber]?.stop()
    loops[portNumber] = undefined
    table.forgetPort(portNumber)
    device.shutdown()
  }

  return {
    addPort(portOptions: MemorySwitchPortOptions = {}): MemoryPort {
      if (closed) throw new FlowstackError('PORT_CLOSED', `switch ${name} is closed`)
      const portNumber = devices.length
      const mac = portOptions.mac !== undefined ? checkMac(portOptions.mac, `${name}.addPort.mac`) : nextLocalMac()
      const device = new DevicePort('ethernet', mtu, channelOptions, 0)
      devices.push(device)
      loops.push(new PumpLoop(() => forwardFrom(portNumber), device, () => undefined))
      const port = new MemoryPort(portInfo(portOptions.name ?? `${name}.${portNumber}`, 'ethernet', mtu, mac), device, () => closePort(portNumber))
      ports.push(port)
      return port
    },
    get ports(): readonly MemoryPort[] {
      return ports
    },
    counters(): MemorySwitchCounters {
      return { ...counters, ...table.counters }
    },
    macTable: () => table.entries(),
    async close(): Promise<void> {
      closed = true
      await Promise.all(ports.map((p) => p.close()))
    },
  }
}
