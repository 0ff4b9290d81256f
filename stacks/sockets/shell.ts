// The imperative shell around the pure stack core (netstack3's split): it
// binds the core's LinkDevice to one queue of a NexusPort, pumps received
// packets into the core in batches, runs the core's timers on one Node timer,
// and flushes transmitted packets once per batch of work.
import { randomFillSync } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { DESC_VNET_HDR, VIRTIO_NET_HDR_BYTES, type ChannelEnd } from '../../nexus/channel/index.js'
import type { NexusPort } from '../../nexus/ports/port.js'
import { FlowstackError } from '../../common/errors.js'
import { formatIpAddress } from '../wire/address.js'
import { completePartialChecksum } from '../wire/checksum.js'
import type { Clock, LinkDevice, Random, TxBuffer } from '../core/contracts.js'
import { StackCore, type RouteSpec } from '../core/stack.js'
import { TcpTransport } from '../core/tcp/transport.js'
import type { TcpConfig } from '../core/tcp/types.js'

/** virtio_net_hdr flags: the checksum still has to be completed (include/uapi/linux/virtio_net.h). */

/** Packets taken from the RX ring before the shell yields to the event loop. */
const RX_BATCH = 64
/** RX batches handled back to back before yielding (keeps app code responsive under load). */
const RX_BATCHES_PER_TURN = 4

export type StackTcpOptions = Partial<Omit<TcpConfig, 'output' | 'random' | 'clock'>>

export interface StackShellOptions {
  port: NexusPort
  addresses?: string[]
  routes?: RouteSpec[]
  tcp?: StackTcpOptions
  /** Injected for tests; default performance.now(). */
  clock?: Clock
  random?: Random
  dad?: boolean
}

/** Cryptographically random 32-bit values, drawn from a refilled pool (no syscall per value). */
export class PooledRandom implements Random {
  private readonly pool = new Uint32Array(256)
  private next = this.pool.length
  nextUint32(): number {
    if (this.next === this.pool.length) {
      randomFillSync(this.pool)
      this.next = 0
    }
    return this.pool[this.next++]
  }
}

const realClock: Clock = { now: () => performance.now() }

/** A LinkDevice over side B of a channel. One TxBuffer object per pool buffer, made once. */
class ChannelLink implements LinkDevice {
  readonly linkType: 'ethernet' | 'ip'
  readonly mtu: number
  readonly mac?: Uint8Array
  droppedRingFull = 0
  private readonly txBuffers: (TxBuffer | undefined)[]
  /** Bytes in front of every frame: the virtio_net_hdr on vnet_hdr ports. */
  private readonly headroom: number
  private readonly flags: number

  constructor(
    private readonly end: ChannelEnd,
    port: NexusPort,
  ) {
    this.linkType = port.info.linkType
    this.mtu = port.info.mtu
    if (port.info.mac !== undefined) this.mac = port.info.mac
    this.txBuffers = new Array(end.bufferCount)
    this.headroom = port.info.offloads.vnetHdr ? VIRTIO_NET_HDR_BYTES : 0
    this.flags = port.info.offloads.vnetHdr ? DESC_VNET_HDR : 0
  }

  acquireTx(): TxBuffer | null {
    const index = this.end.alloc()
    if (index < 0) return null
    let tx = this.txBuffers[index]
    if (tx === undefined) {
      const whole = this.end.buffer(index)
      if (this.headroom > 0) whole.fill(0, 0, this.headroom) // virtio_net_hdr: no offload requested
      tx = { bytes: whole.subarray(this.headroom), index }
      this.txBuffers[index] = tx
    }
    return tx
  }

  transmit(index: number, length: number): void {
    if (!this.end.send(index, length + this.headroom, this.flags)) {
      this.droppedRingFull++
      this.end.free(index)
    }
  }

  abortTx(index: number): void {
    this.end.free(index)
  }

  flush(): void {
    this.end.flush()
  }
}

/**
 * Owns one stack instance's core, its transports and the loop that feeds
 * them. Everything the sockets layer does ends in `kick()`, which runs the
 * core's due timers and flushes TX once per microtask, not once per call.
 */
export class StackShell {
  readonly core: StackCore
  readonly tcp: TcpTransport
  readonly clock: Clock
  readonly end: ChannelEnd
  readonly link: ChannelLink
  private readonly rxHeadroomFlag = DESC_VNET_HDR
  private running = true
  private kickScheduled = false
  private timer: NodeJS.Timeout | null = null
  private timerDeadline = Infinity
  /** Handles (sockets, servers) that keep the process alive, like libuv's ref'd handles. */
  private refs = 0
  private keepAlive: NodeJS.Timeout | null = null
  private rxLoopDone: Promise<void>
  private addressWaiters: (() => void)[] = []
  /** Received packets whose virtio_net_hdr points outside the packet. */
  rxOffloadDrops = 0

  constructor(options: StackShellOptions) {
    const end = options.port.queues[0]
    if (end === undefined) throw new TypeError('the port has no queue')
    this.end = end
    // Whether the process stays alive is for the stack's sockets and servers
    // to say (ref()/unref(), as in node:net), not for an idle receive loop.
    end.setWaitsKeepAlive(false)
    this.clock = options.clock ?? realClock
    const random = options.random ?? new PooledRandom()
    this.link = new ChannelLink(end, options.port)
    this.core = new StackCore(
      { link: this.link, addresses: options.addresses, routes: options.routes, clock: this.clock, random, dad: options.dad },
      { onAddressState: () => this.addressStateChanged() },
    )
    this.tcp = new TcpTransport({
      ...options.tcp,
      ip: this.core,
      random: () => random.nextUint32(),
      clock: () => this.clock.now(),
    })
    this.core.registerTransport(this.tcp)
    this.rxLoopDone = this.rxLoop()
    this.kick()
  }

  private readonly onPacket = (index: number, length: number, flags: number): void => {
    const buffer = this.end.buffer(index)
    if ((flags & this.rxHeadroomFlag) !== 0) {
      if (length < VIRTIO_NET_HDR_BYTES || !this.completeOffloads(buffer, length)) {
        this.rxOffloadDrops++
      } else {
        this.core.input(buffer.subarray(VIRTIO_NET_HDR_BYTES, length), this.clock.now())
      }
    } else {
      this.core.input(buffer.subarray(0, length), this.clock.now())
    }
    this.end.release(index)
  }

  /**
   * Finishes a checksum the kernel left to the "device" on a vnet_hdr port. A
   * GSO super-packet needs no splitting here: its IP and TCP headers describe
   * the whole payload, which the stack takes as one large in-window segment
   * (receive offload, like GRO). Returns false for a header that points
   * outside the packet.
   */
  private completeOffloads(buffer: Uint8Array, length: number): boolean {
    return completePartialChecksum(buffer, length, VIRTIO_NET_HDR_BYTES)
  }

  private async rxLoop(): Promise<void> {
    while (this.running) {
      let batches = 0
      while (batches < RX_BATCHES_PER_TURN && this.end.receive(RX_BATCH, this.onPacket) > 0) batches++
      if (batches > 0) {
        this.runTimersAndFlush()
        // Let the app run before the next batches (fairness under load).
        await new Promise<void>((resolve) => setImmediate(resolve))
        continue
      }
      if (!this.running) break
      await this.end.waitForWork()
    }
  }

  /** Run due timers and flush TX soon: once per microtask however many calls asked. */
  kick(): void {
    if (this.kickScheduled || !this.running) return
    this.kickScheduled = true
    queueMicrotask(this.runKick)
  }

  private readonly runKick = (): void => {
    this.kickScheduled = false
    if (this.running) this.runTimersAndFlush()
  }

  private runTimersAndFlush(): void {
    const now = this.clock.now()
    this.core.poll(now) // also polls transports and flushes the link
    this.armTimer(this.core.nextTimeout())
  }

  private armTimer(deadline: number): void {
    if (deadline === this.timerDeadline && this.timer !== null) return
    if (this.timer !== null) {
      clearTimeout(this.timer)
      this.timer = null
    }
    this.timerDeadline = deadline
    if (!Number.isFinite(deadline) || !this.running) return
    const delay = Math.max(0, Math.ceil(deadline - this.clock.now()))
    // The stack's timers alone never keep the process alive; ref'd sockets do.
    this.timer = setTimeout(this.onTimer, delay)
    this.timer.unref()
  }

  private readonly onTimer = (): void => {
    this.timer = null
    this.timerDeadline = Infinity
    if (this.running) this.runTimersAndFlush()
  }

  private addressStateChanged(): void {
    const waiters = this.addressWaiters
    this.addressWaiters = []
    for (const wake of waiters) wake()
  }

  /**
   * Resolves when no address is tentative any more (DAD done); rejects with
   * EADDRINUSE-like FlowstackError when one turned out to be a duplicate.
   */
  async addressesSettled(): Promise<void> {
    for (;;) {
      const duplicate = this.core.addresses.find((a) => a.state === 'duplicate')
      if (duplicate !== undefined) {
        throw new FlowstackError('STACK_DUPLICATE_ADDRESS', `duplicate address detected: ${formatIpAddress(duplicate.address)} is in use on the link`)
      }
      if (!this.core.addresses.some((a) => a.state === 'tentative')) return
      await new Promise<void>((resolve) => this.addressWaiters.push(resolve))
    }
  }

  ref(): void {
    if (this.refs++ === 0 && this.running) {
      this.keepAlive = setInterval(() => {}, 1 << 30)
    }
  }

  unref(): void {
    if (this.refs === 0) return
    if (--this.refs === 0 && this.keepAlive !== null) {
      clearInterval(this.keepAlive)
      this.keepAlive = null
    }
  }

  get isRunning(): boolean {
    return this.running
  }

  /** Stops the loop and the timers; the port stays open (its owner closes it). */
  async close(): Promise<void> {
    if (!this.running) return
    this.running = false
    if (this.timer !== null) clearTimeout(this.timer)
    if (this.keepAlive !== null) clearInterval(this.keepAlive)
    this.keepAlive = null
    this.refs = 0
    this.end.wake()
    await this.rxLoopDone
    this.end.flush()
  }
}
