// The switch (DESIGN.md §2): moves packets between port channels and instance
// channels, in batches, through the classifier. Every packet is copied into
// a buffer of the destination's own pool, so no instance ever sees another
// instance's memory or a port's; every instance TX packet passes
// anti-spoofing first. Decisions are counted by the classifier; what the
// switch itself drops is counted here by reason.
//
// It runs in the switch worker (switch-worker.ts, data-path.ts), the thread
// that opened the ports, so native doorbells wake this loop directly. Packets
// from a port are classified a ring batch per call (Classifier.classifyBatch);
// instance TX stays one packet at a time, since flow learning and
// anti-spoofing decide between its packets.
//
// On Ethernet ports, ARP and neighbour solicitations/advertisements are
// steered by the address they are about, and unclaimed frames between
// instances by destination MAC.
//
// Kernel fallback per packet (DESIGN.md §5): a port that owns a wire
// (AF_PACKET) may have a host TAP carrying the kernel's addresses and MAC.
// Frames decided `kernel` are copied into it; what the kernel writes into it
// is its own traffic and leaves on the wire unclassified (or goes to an
// instance by MAC / neighbour target). Neighbour frames about an address an
// instance shares with the kernel go to both, so both keep their caches.
//
// Flow registration: an instance's TCP SYN (connect) and SYN-ACK (accept)
// register its flow before the anti-spoofing check, from an address the
// instance owns only; listeners arrive from the instance worker, and flows
// are released when the worker's periodic report no longer lists them or
// when the instance stops.
import { attachChannel, DESC_VNET_HDR, VIRTIO_NET_HDR_BYTES, type ChannelEnd } from '../nexus/channel/index.js'
import { HAIRPIN_TOKEN, OWNER_DROP, OWNER_HELD, OWNER_WIRE, PacketBatch, SPOOF_REASON_NAMES, SpoofReason, type Classifier } from '../classifier/index.js'
import { Direction, PROTO_TCP, PROTO_UDP, readKey, type FlowKeyFields } from '../classifier/key.js'
import { extractFlowKey, LinkKind, PacketInfo, ParseStatus } from '../classifier/extract.js'
import { formatIpAddress, parseIpAddress } from '../stacks/wire/address.js'
import { completePartialChecksum } from '../stacks/wire/checksum.js'
import type { ConnectionReport } from './host/messages.js'
import { tcpOffset, writeTcpSegment } from './resets.js'

/** Descriptors taken from one ring before looking at the next. */
const BATCH = 64
/** Idle sleep bound: the loop re-checks every ring at least this often (ms). */
const IDLE_WAIT_MS = 20

const TCP_FIN = 0x01
const TCP_SYN = 0x02
const TCP_RST = 0x04
const TCP_ACK = 0x10

export const SWITCH_DROP_NAMES = ['spoofed', 'instance-down', 'pool-empty', 'ring-full', 'no-kernel', 'offload', 'oversize', 'flow-limit'] as const
export const enum SwitchDrop {
  Spoofed = 0,
  InstanceDown = 1,
  PoolEmpty = 2,
  RingFull = 3,
  NoKernel = 4,
  Offload = 5,
  Oversize = 6,
  /** An instance's new flow refused: it holds its `limits.maxFlows`. */
  FlowLimit = 7,
}

/** Per port or instance: rx/tx packets and bytes as seen by the switch. */
export class TrafficCounters {
  rxPackets = 0
  rxBytes = 0
  txPackets = 0
  txBytes = 0
}

export interface SwitchPortSpec {
  name: string
  /** Side B of the port's queue 0. */
  end: ChannelEnd
  link: 'ip' | 'ethernet'
  /** Packets carry a virtio_net_hdr (TUN/TAP with IFF_VNET_HDR). */
  vnetHdr: boolean
  /** Kernel fallback per packet (DESIGN.md §5): the host TAP of an Ethernet port that owns a wire. */
  host?: SwitchHostSpec
}

export interface SwitchHostSpec {
  /** Side B of the host TAP's queue 0 (plain Ethernet frames, no virtio_net_hdr). */
  end: ChannelEnd
  /** The kernel's MAC on the TAP. */
  mac: Uint8Array
  /** The kernel's addresses (with or without prefix length). */
  addresses: readonly string[]
}

export interface SwitchInstanceSpec {
  name: string
  /** The instance's MAC on an Ethernet port. */
  mac?: Uint8Array
  /** Index of the port the instance is attached to. */
  port: number
  /** Addresses the instance owns, with or without prefix length. */
  addresses: readonly string[]
}

/** How long the switch keeps answering for a stopped instance's flows (ms). */
const RESET_WINDOW_MS = 10000

export interface FlowLearned {
  fields: FlowKeyFields
  since: number
}

export class Switch {
  readonly portTraffic: TrafficCounters[]
  readonly instanceTraffic: TrafficCounters[]
  /** Per port with a host TAP: rx = frames the kernel sent, tx = frames written to it. */
  readonly hostTraffic: (TrafficCounters | undefined)[]
  readonly drops = new Float64Array(SWITCH_DROP_NAMES.length)
  /** Flows registered per instance from its handshakes, by key text. */
  readonly learned: Map<string, FlowLearned>[]
  private readonly spoofSnapshot = new Float64Array(SPOOF_REASON_NAMES.length)
  private readonly instanceEnds: (ChannelEnd | undefined)[]
  private readonly linkKinds: LinkKind[]
  /** Where the IP header starts on each port's frames (Ethernet: after 14 bytes; VLAN-tagged frames are not steered). */
  private readonly l3Offsets: number[]
  /** Instance by "port address" (canonical text): neighbour discovery steering. */
  private readonly addressOwners = new Map<string, number>()
  /** Instance by MAC (48-bit number): frames between instances on one Ethernet port. */
  private readonly macOwners = new Map<number, number>()
  private readonly ownedAddresses: Set<string>[]
  /** "port address" of addresses an instance shares with the kernel's host TAP: their neighbour frames go to both. */
  private readonly sharedWithKernel = new Set<string>()
  /** The "port address" key the last neighbourOwner() call looked at ('' when none). */
  private neighbourKey = ''
  private readonly hostMacs: number[]
  private readonly info = new PacketInfo()
  /** The port packets of one receive() call waiting for classification, and their buffer indices. */
  private readonly portBatch = new PacketBatch(BATCH)
  private readonly portBatchIndex = new Int32Array(BATCH)
  /** Per port: its whole channel as one view, so a batch's packets are offsets into one buffer. */
  private readonly portViews: Uint8Array[]
  /**
   * Per port, per buffer index: bytes of vnet header in front of the packet
   * (its descriptor's DESC_VNET_HDR), kept for routing after the batch or a
   * fragment hold. AF_PACKET mixes bare frames and frames with a header.
   */
  private readonly rxHeaderBytes: Uint8Array[]
  /** The port whose batch is being classified, or -1. */
  private batchPort = -1
  /** Held fragments released during a batch: their token, their first fragment's token, the decision (arrays reused). */
  private readonly releasedTokens: number[] = []
  private readonly releasedFirsts: number[] = []
  private readonly releasedOwners: number[] = []
  private running = false
  private loopDone: Promise<void> = Promise.resolve()
  private readonly wakers: (() => void)[] = []
  private readonly now: () => number

  /** Flows of stopped instances whose peers are being reset, by key text (instance's view). */
  private readonly resetting = new Map<string, { fields: FlowKeyFields; instance: number; until: number }>()
  private readonly scratch = new Uint8Array(128)
  /** Probes and RSTs sent on behalf of stopped instances. */
  resetProbes = 0
  resetsSent = 0

  /** Called when an instance's channel shows corruption (the instance must be stopped). */
  onInstanceFault: (instance: number, reason: string) => void = () => {}

  constructor(
    readonly classifier: Classifier,
    readonly ports: readonly SwitchPortSpec[],
    readonly instances: readonly SwitchInstanceSpec[],
    options: { now?: () => number } = {},
  ) {
    this.now = options.now ?? (() => performance.now())
    this.portTraffic = ports.map(() => new TrafficCounters())
    this.instanceTraffic = instances.map(() => new TrafficCounters())
    this.hostTraffic = ports.map((port) => (port.host !== undefined ? new TrafficCounters() : undefined))
    this.hostMacs = ports.map((port) => (port.host !== undefined ? macKey(port.host.mac, 0) : -1))
    this.instanceEnds = instances.map(() => undefined)
    this.learned = instances.map(() => new Map())
    this.ownedAddresses = instances.map((inst) => new Set(inst.addresses.map(canonicalAddress)))
    this.linkKinds = ports.map((port) => (port.link === 'ethernet' ? LinkKind.Ethernet : LinkKind.Ip))
    this.l3Offsets = ports.map((port) => (port.link === 'ethernet' ? ETHERNET_HEADER : 0))
    this.portViews = ports.map((port) => new Uint8Array(port.end.sab))
    this.rxHeaderBytes = ports.map(() => new Uint8Array(65536)) // buffer indexes are 16-bit (tokens: port * 65536 + index)
    instances.forEach((inst, i) => {
      if (inst.mac !== undefined) this.macOwners.set(macKey(inst.mac, 0), i)
      for (const address of this.ownedAddresses[i]) this.addressOwners.set(`${inst.port} ${address}`, i)
    })
    ports.forEach((port, p) => {
      for (const address of port.host?.addresses ?? []) {
        const key = `${p} ${canonicalAddress(address)}`
        if (this.addressOwners.has(key)) this.sharedWithKernel.add(key)
      }
    })
    // A later fragment whose first fragment had not arrived: classify it when it does.
    classifier.onFragmentRelease = (token, decision) => {
      // An instance's own later fragment, held by a hairpin lookup: already dropped here.
      if (token === HAIRPIN_TOKEN) return
      // During a batch, a fragment released by its first fragment waits for
      // that packet's turn, so it leaves just before it, as one at a time would.
      if (this.batchPort >= 0 && decision.fragmentOf >= 0) {
        this.releasedTokens.push(token)
        this.releasedFirsts.push(decision.fragmentOf)
        this.releasedOwners.push(decision.owner)
      } else this.routeFromPort(Math.floor(token / 65536), token % 65536, decision.owner, -1)
    }
  }

  // ------------------------------------------------------------ instances

  /** Attaches side A of a (fresh) instance channel; the worker attaches side B. */
  attachInstance(instance: number, sab: SharedArrayBuffer): void {
    this.instanceEnds[instance] = attachChannel(sab, 'a', {
      onCorrupt: (info) => this.onInstanceFault(instance, `channel corrupt: ${info.reasonName} on ${info.ring} (buffer ${info.bufferIndex})`),
    })
    this.wake()
  }

  /** Stops moving packets for an instance and releases its flows and listeners. */
  detachInstance(instance: number): number {
    const end = this.instanceEnds[instance]
    this.instanceEnds[instance] = undefined
    end?.close()
    this.learned[instance].clear()
    return this.classifier.releaseInstance(instance)
  }

  /**
   * A listener opened in the instance. "Any address" means any address of
   * that instance: it is registered once per owned address, so two instances
   * on one port may both listen on any:80 without taking each other's traffic.
   */
  registerListener(instance: number, ipVersion: 4 | 6, localAddress: string, localPort: number): void {
    for (const address of this.listenerAddresses(instance, ipVersion, localAddress)) {
      this.classifier.registerListener({ ipVersion, protocol: PROTO_TCP, localAddress: address, localPort, port: this.instances[instance].port }, instance)
    }
  }

  releaseListener(instance: number, ipVersion: 4 | 6, localAddress: string, localPort: number): void {
    for (const address of this.listenerAddresses(instance, ipVersion, localAddress)) {
      this.classifier.releaseListener({ ipVersion, protocol: PROTO_TCP, localAddress: address, localPort, port: this.instances[instance].port })
    }
  }

  private listenerAddresses(instance: number, ipVersion: 4 | 6, localAddress: string): string[] {
    const canonical = canonicalAddress(localAddress)
    const owned = [...this.ownedAddresses[instance]].filter((a) => a.includes(':') === (ipVersion === 6))
    if (canonical === '0.0.0.0' || canonical === '::') return owned
    return owned.includes(canonical) ? [canonical] : []
  }

  /**
   * The worker's report of its open connections: flows learned earlier and
   * no longer open (and not brand new, to cover a SYN the report raced) are
   * released.
   */
  reconcile(instance: number, open: readonly ConnectionReport[], graceMs: number): number {
    const openKeys = new Set(open.map((c) => flowText(c.ipVersion, c.localAddress, c.localPort, c.remoteAddress, c.remotePort)))
    const cutoff = this.now() - graceMs
    let released = 0
    for (const [text, flow] of this.learned[instance]) {
      if (flow.fields.protocol !== PROTO_TCP || openKeys.has(text) || flow.since > cutoff) continue
      this.learned[instance].delete(text)
      this.classifier.releaseFlow(flow.fields)
      released++
    }
    return released
  }

  // ------------------------------------------------------------ the loop

  start(): void {
    if (this.running) return
    this.running = true
    this.loopDone = this.loop()
  }

  async stop(): Promise<void> {
    this.running = false
    this.wake()
    await this.loopDone
    for (const port of this.ports) {
      port.end.flush()
      port.host?.end.flush()
    }
  }

  private wake(): void {
    for (const port of this.ports) {
      port.end.wake()
      port.host?.end.wake()
    }
    for (const end of this.instanceEnds) end?.wake()
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const moved = this.pass()
      if (moved > 0) {
        // Let timers, control messages and the control socket run between passes.
        await new Promise<void>((resolve) => setImmediate(resolve))
        continue
      }
      if (!this.running) break
      // A ring whose peer closed answers waitForWork at once; waiting on it
      // would spin in microtasks and starve the event loop, so it is skipped.
      const waits: Promise<void>[] = []
      for (const port of this.ports) {
        if (!port.end.peerClosed) waits.push(port.end.waitForWork(IDLE_WAIT_MS))
        if (port.host !== undefined && !port.host.end.peerClosed) waits.push(port.host.end.waitForWork(IDLE_WAIT_MS))
      }
      for (const end of this.instanceEnds) if (end !== undefined && !end.peerClosed) waits.push(end.waitForWork(IDLE_WAIT_MS))
      if (waits.length === 0) waits.push(new Promise((resolve) => setTimeout(resolve, IDLE_WAIT_MS)))
      await Promise.race(waits)
    }
  }

  /** One round over every ring; returns the packets moved. Public for tests with a manual clock. */
  pass(): number {
    let moved = 0
    this.classifier.expireFragments()
    for (let p = 0; p < this.ports.length; p++) {
      this.currentPort = p
      moved += this.ports[p].end.receive(BATCH, this.onPortPacket)
      this.classifyPortBatch(p)
      const host = this.ports[p].host
      if (host !== undefined) moved += host.end.receive(BATCH, this.onHostPacket)
    }
    for (let i = 0; i < this.instanceEnds.length; i++) {
      const end = this.instanceEnds[i]
      if (end === undefined) continue
      this.currentInstance = i
      moved += end.receive(BATCH, this.onInstancePacket)
    }
    this.flushAll()
    return moved
  }

  private currentPort = 0
  private currentInstance = 0

  // ------------------------------------------------------------ port -> instances

  private readonly onPortPacket = (index: number, length: number, flags: number): void => {
    const p = this.currentPort
    const port = this.ports[p]
    const traffic = this.portTraffic[p]
    traffic.rxPackets++
    traffic.rxBytes += length
    const buf = port.end.buffer(index)
    const off = (flags & DESC_VNET_HDR) !== 0 ? VIRTIO_NET_HDR_BYTES : 0
    // Instances take plain packets: a partial checksum (an AF_PACKET peer on a
    // veth with tx checksum offload, the default) is completed here, once,
    // for whoever gets the packet; a GSO super-frame is not split: dropped.
    if (off !== 0 && (buf[1] !== 0 || !completePartialChecksum(buf, length, VIRTIO_NET_HDR_BYTES))) {
      this.drops[SwitchDrop.Offload]++
      port.end.release(index)
      return
    }
    if (port.link === 'ethernet') {
      // ARP requests and IPv6 neighbour solicitations name the address they
      // ask about in their payload, not in a flow key: steer them by it.
      const owner = this.neighbourOwner(p, buf, off, length - off)
      if (owner >= 0) {
        // Packets before it in this batch go first: order on the wire is kept.
        this.classifyPortBatch(p)
        this.deliver(owner, buf, off, length - off)
        // An address the instance shares with the kernel: both keep their neighbour caches.
        if (port.host !== undefined && this.sharedWithKernel.has(this.neighbourKey)) this.toHost(p, buf, off, length - off)
        port.end.release(index)
        return
      }
    }
    // receive() hands at most BATCH descriptors per call, the batch's capacity.
    this.rxHeaderBytes[p][index] = off
    this.portBatchIndex[this.portBatch.count] = index
    this.portBatch.add(buf.byteOffset + off, length - off, p * 65536 + index)
  }

  /** Classifies the port packets gathered so far in one call, then routes each in order. */
  private classifyPortBatch(p: number): void {
    const batch = this.portBatch
    const n = batch.count
    if (n === 0) return
    this.batchPort = p
    try {
      this.classifier.classifyBatch(this.portViews[p], batch, this.linkKinds[p], p, Direction.In)
    } finally {
      this.batchPort = -1
    }
    const owners = batch.owners
    const released = this.releasedTokens.length
    for (let i = 0; i < n; i++) {
      if (released > 0) this.routeReleased(batch.tokens[i])
      // A held later fragment's buffer stays held until onFragmentRelease.
      if (owners[i] !== OWNER_HELD) this.routeFromPort(p, this.portBatchIndex[i], owners[i], batch.lengths[i])
    }
    if (released > 0) this.routeReleased(-1)
    batch.clear()
  }

  /** Routes the fragments a batch released that wait for `first` (-1: every one left). */
  private routeReleased(first: number): void {
    const tokens = this.releasedTokens
    let kept = 0
    for (let r = 0; r < tokens.length; r++) {
      const token = tokens[r]
      if (first < 0 || this.releasedFirsts[r] === first) {
        this.routeFromPort(Math.floor(token / 65536), token % 65536, this.releasedOwners[r], -1)
      } else {
        tokens[kept] = token
        this.releasedFirsts[kept] = this.releasedFirsts[r]
        this.releasedOwners[kept] = this.releasedOwners[r]
        kept++
      }
    }
    tokens.length = kept
    this.releasedFirsts.length = kept
    this.releasedOwners.length = kept
  }

  /**
   * The instance on port `p` that a neighbour-discovery frame is about: the
   * target of an ARP request or reply (RFC 826) or of an IPv6 neighbour
   * solicitation, or the destination of a neighbour advertisement (RFC 4861
   * §4.3, §4.4). -1 for anything else. Allocates only for such frames.
   */
  private neighbourOwner(p: number, buf: Uint8Array, off: number, length: number): number {
    this.neighbourKey = ''
    if (length < ETHERNET_HEADER + 28) return -1
    const ethertype = (buf[off + 12] << 8) | buf[off + 13]
    const at = off + ETHERNET_HEADER
    if (ethertype === 0x0806) {
      const target = ((buf[at + 24] << 24) | (buf[at + 25] << 16) | (buf[at + 26] << 8) | buf[at + 27]) >>> 0
      this.neighbourKey = `${p} ${formatIpAddress({ version: 4, v4: target })}`
    } else {
      if (ethertype !== 0x86dd || length < ETHERNET_HEADER + 40 + 24 || buf[at + 6] !== 58) return -1
      const type = buf[at + 40]
      if (type === 135) this.neighbourKey = `${p} ${formatIpAddress({ version: 6, v6: buf.slice(at + 48, at + 64) })}`
      else if (type === 136) this.neighbourKey = `${p} ${formatIpAddress({ version: 6, v6: buf.slice(at + 24, at + 40) })}`
      else return -1
    }
    return this.addressOwners.get(this.neighbourKey) ?? -1
  }

  /** `length` is the IP packet's length, or -1 for a released held fragment (re-read from its header). */
  private routeFromPort(p: number, index: number, owner: number, ipLength: number): void {
    const port = this.ports[p]
    // A wire packet that hit an instance's hairpin flow (its reverse: from an
    // instance's address to a wire peer) is nobody's: the port's default.
    if (owner === OWNER_WIRE) owner = this.classifier.ports[p].defaultOwner
    const buf = port.end.buffer(index)
    const off = this.rxHeaderBytes[p][index]
    const l3 = this.l3Offsets[p]
    const length = ipLength >= 0 ? ipLength : Math.min(l3 + ipPacketLength(buf, off + l3), buf.length - off)
    if (owner >= 0) {
      if (length > 0) this.deliver(owner, buf, off, length)
    } else if (owner !== OWNER_DROP) {
      // kernel: handed to the host TAP when the port has one. Without one, on
      // an IP port the packet came from the kernel (TUN) or from the far end
      // of a memory wire, and there is nobody to hand it to.
      if (port.host !== undefined && length > 0) this.toHost(p, buf, off, length)
      else this.drops[SwitchDrop.NoKernel]++
    }
    port.end.release(index)
  }

  /** Copies a packet into the instance's own pool and queues it on its RX ring. */
  private deliver(instance: number, src: Uint8Array, off: number, length: number): void {
    const end = this.instanceEnds[instance]
    if (end === undefined) {
      this.drops[SwitchDrop.InstanceDown]++
      if (this.resetting.size > 0) this.answerForStopped(src, off, length)
      return
    }
    if (length > end.bufferSize) {
      this.drops[SwitchDrop.Oversize]++
      return
    }
    const index = end.alloc()
    if (index < 0) {
      this.drops[SwitchDrop.PoolEmpty]++
      return
    }
    end.buffer(index).set(src.subarray(off, off + length))
    if (!end.send(index, length)) {
      end.free(index)
      this.drops[SwitchDrop.RingFull]++
      return
    }
    const traffic = this.instanceTraffic[instance]
    traffic.rxPackets++
    traffic.rxBytes += length
  }

  /** Copies a frame from the wire into port `p`'s host TAP (the kernel). */
  private toHost(p: number, src: Uint8Array, off: number, length: number): void {
    const end = this.ports[p].host!.end
    if (length > end.bufferSize) {
      this.drops[SwitchDrop.Oversize]++
      return
    }
    const index = end.alloc()
    if (index < 0) {
      this.drops[SwitchDrop.PoolEmpty]++
      return
    }
    end.buffer(index).set(src.subarray(off, off + length))
    if (!end.send(index, length)) {
      end.free(index)
      this.drops[SwitchDrop.RingFull]++
      return
    }
    const traffic = this.hostTraffic[p]!
    traffic.txPackets++
    traffic.txBytes += length
  }

  // ------------------------------------------------------------ host TAP -> wire or instance

  /**
   * A frame the kernel sent through a host TAP. It is the kernel's own
   * traffic (its address, its MAC), so it is not classified: it leaves on
   * the wire, except neighbour discovery about an instance's address and
   * frames addressed to an instance's MAC, which go to that instance.
   */
  private readonly onHostPacket = (index: number, length: number): void => {
    const p = this.currentPort
    const host = this.ports[p].host!
    const buf = host.end.buffer(index)
    const traffic = this.hostTraffic[p]!
    traffic.rxPackets++
    traffic.rxBytes += length
    let owner = this.neighbourOwner(p, buf, 0, length)
    // Shared addresses: the kernel asks or answers for itself; that is for the wire.
    if (owner >= 0 && this.sharedWithKernel.has(this.neighbourKey)) owner = -1
    if (owner < 0 && length >= ETHERNET_HEADER) {
      const byMac = this.macOwners.get(macKey(buf, 0))
      // An instance sharing the kernel's MAC is reached through the wire's classifier, not here.
      if (byMac !== undefined && macKey(buf, 0) !== this.hostMacs[p]) owner = byMac
    }
    if (owner >= 0) this.deliver(owner, buf, 0, length)
    else this.transmit(p, buf, length)
    host.end.release(index)
  }

  // ------------------------------------------------------------ instance -> port or instance

  private readonly onInstancePacket = (index: number, length: number): void => {
    const i = this.currentInstance
    const end = this.instanceEnds[i]!
    const buf = end.buffer(index)
    const traffic = this.instanceTraffic[i]
    traffic.txPackets++
    traffic.txBytes += length
    const portIndex = this.instances[i].port
    const link = this.linkKinds[portIndex]
    const l3 = this.l3Offsets[portIndex]
    const tcpFlags = l3 === 0 || isIpFrame(buf) ? tcpFlagsOf(buf, length, l3) : -1
    if (tcpFlags >= 0 && (tcpFlags & TCP_SYN) !== 0 && (tcpFlags & TCP_RST) === 0) this.learnFlow(i, buf, length)
    const spoofCounts = this.classifier.spoofCounts
    const flowRefusals = spoofCounts[SpoofReason.Flow]
    if (!this.classifier.checkOutbound(buf, 0, length, link, i) && !this.learnDatagramFlow(i, buf, length)) {
      // A registration the limit refused: a SYN, or a datagram (not TCP).
      const registering = tcpFlags < 0 || (tcpFlags & TCP_SYN) !== 0
      if (registering && spoofCounts[SpoofReason.Flow] > flowRefusals && this.classifier.atFlowLimit(i)) {
        // Its own address, a flow it could not register: its limit, not spoofing.
        spoofCounts[SpoofReason.Flow] = flowRefusals
        this.drops[SwitchDrop.FlowLimit]++
      } else this.drops[SwitchDrop.Spoofed]++
      end.release(index)
      return
    }
    if (link === LinkKind.Ethernet) {
      const neighbour = this.neighbourOwner(portIndex, buf, 0, length)
      if (neighbour >= 0 && neighbour !== i) {
        this.deliver(neighbour, buf, 0, length)
        end.release(index)
        return
      }
    }
    // Hairpin: see Classifier.classifyHairpin.
    const decision = this.classifier.classifyHairpin(buf, 0, length, link, portIndex)
    // Only a rule drops what an instance sends; the port's default action is
    // for traffic arriving from the wire, so unclaimed traffic leaves on the port.
    // (A held later fragment of our own is not worth the bookkeeping: dropped.)
    if (decision.held || (decision.owner === OWNER_DROP && decision.rule >= 0)) {
      end.release(index)
      return
    }
    let owner = decision.owner >= 0 && decision.owner !== i ? decision.owner : -1
    if (owner < 0 && decision.rule < 0 && link === LinkKind.Ethernet) {
      // Unclaimed by flows and rules but addressed to another instance's MAC
      // (ICMP, an answer to its ARP): deliver it there rather than to the wire.
      const byMac = this.macOwners.get(macKey(buf, 0))
      if (byMac !== undefined && byMac !== i) owner = byMac
    }
    if (owner >= 0) this.deliver(owner, buf, 0, length)
    else this.transmit(portIndex, buf, length)
    end.release(index)
  }

  private transmit(p: number, src: Uint8Array, length: number): void {
    const port = this.ports[p]
    const headroom = port.vnetHdr ? VIRTIO_NET_HDR_BYTES : 0
    if (length + headroom > port.end.bufferSize) {
      this.drops[SwitchDrop.Oversize]++
      return
    }
    const index = port.end.alloc()
    if (index < 0) {
      this.drops[SwitchDrop.PoolEmpty]++
      return
    }
    const dst = port.end.buffer(index)
    if (headroom !== 0) dst.fill(0, 0, headroom) // virtio_net_hdr: no offload asked
    dst.set(src.subarray(0, length), headroom)
    if (!port.end.send(index, length + headroom, headroom !== 0 ? DESC_VNET_HDR : 0)) {
      port.end.free(index)
      this.drops[SwitchDrop.RingFull]++
      return
    }
    const traffic = this.portTraffic[p]
    traffic.txPackets++
    traffic.txBytes += length
  }

  // ------------------------------------------------------------ resets for a stopped instance

  /**
   * The instance stopped (crashed): probe the peer of each flow it held so
   * the peer's answer can be met with an exact RST (see resets.ts). Call
   * before detachInstance, which forgets the flows.
   */
  resetFlowsOf(instance: number): number {
    const now = this.now()
    for (const [text, entry] of this.resetting) if (entry.until < now) this.resetting.delete(text)
    let probes = 0
    for (const [text, flow] of this.learned[instance]) {
      const f = flow.fields
      if (f.protocol !== PROTO_TCP) continue
      this.resetting.set(text, { fields: f, instance, until: now + RESET_WINDOW_MS })
      // A sequence number half the space away from anything plausible: outside any window.
      const length = writeTcpSegment(this.scratch, { ipVersion: f.ipVersion, src: f.localAddress, dst: f.remoteAddress, srcPort: f.localPort, dstPort: f.remotePort, seq: 0x80000000, ack: 0, flags: TCP_ACK })
      if (length > 0 && this.forward(instance, this.scratch, length)) probes++
    }
    this.resetProbes += probes
    this.flushAll()
    return probes
  }

  /** A packet for a stopped instance: if it belongs to a flow being reset, answer with an RST. */
  private answerForStopped(buf: Uint8Array, off: number, length: number): void {
    const tcp = tcpOffset(buf, off, length)
    if (tcp < 0 || (buf[tcp + 13] & TCP_RST) !== 0 || (buf[tcp + 13] & TCP_ACK) === 0) return
    const v4 = buf[off] >>> 4 === 4
    const ipVersion: 4 | 6 = v4 ? 4 : 6
    const src = formatIpAddress(v4 ? { version: 4, v4: ((buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15]) >>> 0 } : { version: 6, v6: buf.slice(off + 8, off + 24) })
    const dst = formatIpAddress(v4 ? { version: 4, v4: ((buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19]) >>> 0 } : { version: 6, v6: buf.slice(off + 24, off + 40) })
    const srcPort = (buf[tcp] << 8) | buf[tcp + 1]
    const dstPort = (buf[tcp + 2] << 8) | buf[tcp + 3]
    const text = flowText(ipVersion, dst, dstPort, src, srcPort)
    const entry = this.resetting.get(text)
    if (entry === undefined) return
    this.resetting.delete(text)
    // Past its window the 4-tuple may be a new connection of the peer's: no RST for it.
    if (entry.until < this.now()) return
    const ack = ((buf[tcp + 8] << 24) | (buf[tcp + 9] << 16) | (buf[tcp + 10] << 8) | buf[tcp + 11]) >>> 0
    const rst = writeTcpSegment(this.scratch, { ipVersion, src: dst, dst: src, srcPort: dstPort, dstPort: srcPort, seq: ack, ack: 0, flags: TCP_RST })
    if (rst > 0 && this.forward(entry.instance, this.scratch, rst)) this.resetsSent++
  }

  /** Sends a packet made by the switch for `fromInstance` (no anti-spoofing: we wrote it). */
  private forward(fromInstance: number, packet: Uint8Array, length: number): boolean {
    const portIndex = this.instances[fromInstance].port
    // Segments made here are bare IP; on an Ethernet port they would need the
    // peer's MAC, which the switch does not keep: there the restarted
    // instance's stack answers the peer's next segment with an RST instead.
    if (this.linkKinds[portIndex] !== LinkKind.Ip) return false
    const decision = this.classifier.classifyHairpin(packet, 0, length, LinkKind.Ip, portIndex)
    if (decision.held || (decision.owner === OWNER_DROP && decision.rule >= 0)) return false
    if (decision.owner >= 0 && decision.owner !== fromInstance) {
      if (this.instanceEnds[decision.owner] === undefined) return false
      this.deliver(decision.owner, packet, 0, length)
    } else {
      this.transmit(portIndex, packet, length)
    }
    return true
  }

  private flushAll(): void {
    for (const port of this.ports) {
      port.end.flush()
      port.host?.end.flush()
    }
    for (const end of this.instanceEnds) end?.flush()
  }

  /**
   * UDP has no handshake: the first datagram of a flow from an owned address
   * registers it (a connected or sending dgram socket), and the refusal the
   * check just counted is taken back. Datagram flows expire when idle (the
   * classifier's sweep), so an instance sending from ever new ports (a DNS
   * client) cannot fill the table shared by all. Returns whether the packet may now go.
   */
  private learnDatagramFlow(instance: number, buf: Uint8Array, length: number): boolean {
    const port = this.instances[instance].port
    const l3 = this.l3Offsets[port]
    if (l3 !== 0 && !isIpFrame(buf)) return false
    const version = buf[l3] >>> 4
    const protocol = version === 4 ? buf[l3 + 9] : version === 6 && length >= l3 + 40 ? buf[l3 + 6] : -1
    if (protocol !== PROTO_UDP) return false
    const counts = this.classifier.spoofCounts
    this.spoofSnapshot.set(counts)
    this.learnFlow(instance, buf, length, true)
    const allowed = this.classifier.checkOutbound(buf, 0, length, this.linkKinds[port], instance)
    // The second check is not a second refusal: one packet, one count.
    counts.set(this.spoofSnapshot)
    if (!allowed) return false
    counts[SpoofReason.Flow]-- // the first check's refusal is withdrawn: the flow is learned now
    return true
  }

  /**
   * A SYN or SYN-ACK from an instance (or its first datagram of a flow:
   * `datagram`): register its flow (allocates; handshakes and new flows only).
   * Datagram flows are not tracked here: nothing reconciles or resets them.
   */
  private learnFlow(instance: number, buf: Uint8Array, length: number, datagram = false): void {
    const port = this.instances[instance].port
    if (extractFlowKey(buf, 0, length, this.linkKinds[port], port, Direction.Out, this.info) !== ParseStatus.Ok) return
    const fields = readKey(this.info.key)
    if (!this.ownedAddresses[instance].has(fields.localAddress)) return // anti-spoofing will refuse it
    if (datagram) {
      this.classifier.registerFlow(fields, instance, true)
      return
    }
    const text = flowText(fields.ipVersion, fields.localAddress, fields.localPort, fields.remoteAddress, fields.remotePort)
    if (this.classifier.registerFlow(fields, instance)) this.learned[instance].set(text, { fields, since: this.now() })
  }
}

function canonicalAddress(text: string): string {
  const slash = text.indexOf('/')
  const address = parseIpAddress(slash < 0 ? text : text.slice(0, slash))
  return address === null ? text : formatIpAddress(address)
}

export function flowText(ipVersion: number, localAddress: string, localPort: number, remoteAddress: string, remotePort: number): string {
  return `${ipVersion} ${localAddress} ${localPort} ${remoteAddress} ${remotePort}`
}

/** TCP flags of a bare IPv4/IPv6 packet, or -1 when it is not a first-fragment TCP segment. */
export function tcpFlagsOf(buf: Uint8Array, length: number, l3 = 0): number {
  const tcp = tcpOffset(buf, l3, length - l3)
  return tcp < 0 ? -1 : buf[tcp + 13]
}

const ETHERNET_HEADER = 14

/** An untagged Ethernet frame carrying IPv4 or IPv6. */
function isIpFrame(buf: Uint8Array): boolean {
  const ethertype = (buf[12] << 8) | buf[13]
  return ethertype === 0x0800 || ethertype === 0x86dd
}

/** The destination MAC at `off` as a 48-bit number (exact in a double). */
function macKey(buf: Uint8Array, off: number): number {
  return (buf[off] * 2 ** 40) + (buf[off + 1] * 2 ** 32) + (((buf[off + 2] << 24) | (buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5]) >>> 0)
}

/** Total length from the IP header (bare packet at `off`), or 0. */
function ipPacketLength(buf: Uint8Array, off: number): number {
  const version = buf[off] >>> 4
  if (version === 4) return (buf[off + 2] << 8) | buf[off + 3]
  if (version === 6) return 40 + ((buf[off + 4] << 8) | buf[off + 5])
  return 0
}

export const TCP_FLAGS = { FIN: TCP_FIN, SYN: TCP_SYN, RST: TCP_RST, ACK: TCP_ACK } as const
