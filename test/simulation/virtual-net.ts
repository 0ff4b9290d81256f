// A deterministic, virtual-time network of two stack cores: each core sits on
// one end of a memory wire (nexus/ports/memory.ts), and each wire end is
// wrapped by the impairment middleware (nexus/middleware/impair.ts). One
// VirtualClock is the time of everything: both cores' clocks and the
// impairment departure timers. Nothing sleeps in real time.
//
// The middleware and the wire pump are asynchronous (they wake on channel
// doorbells), so the driver is a loop that alternates:
//   1. service both cores: channel receive -> core.input, core.poll, flush;
//   2. while any packet is somewhere between the two cores (counted from the
//      channel and middleware counters, see inFlight()), yield to the event
//      loop so the pumps move it — time does not advance while packets move;
//   3. when the network is quiet, advance the clock to the earliest deadline
//      (a core's nextTimeout() or an impairment departure), which fires the
//      middleware's timer and releases the packets due then.
// Every loop is bounded in iterations and simulated time; a stall throws with
// the state of both sides.
import { setImmediate as tick } from 'node:timers/promises'
import { createMemoryWire, type MemoryPort } from '../../nexus/ports/memory.js'
import { impair, type ImpairedPort } from '../../nexus/middleware/impair.js'
import type { ImpairDirectionOptions } from '../../nexus/middleware/impair-model.js'
import { VirtualClock } from '../../nexus/middleware/impair-clock.js'
import type { ChannelEnd } from '../../nexus/channel/index.js'
import { createStackCore, type StackCore } from '../../stacks/core/stack.js'
import { TcpTransport, type TcpTransportOptions } from '../../stacks/core/tcp/transport.js'
import type { Random } from '../../stacks/core/contracts.js'
import { ChannelLink } from '../core/channel-link.js'

export interface VirtualNetOptions {
  /** Impairment applied to what each side transmits (so each direction is impaired once). */
  link: ImpairDirectionOptions
  seed: number
  addresses: [string[], string[]]
  /** TCP options for both stacks (buffer sizes, MSL ...). */
  tcp?: Partial<Omit<TcpTransportOptions, 'ip' | 'random' | 'clock'>>
  /**
   * When the network is quiet, the clock moves to the earliest deadline plus
   * at most this much (never past a core timer). 0 = exact event order;
   * a small quantum lets one advance release several rate-limited packets,
   * delivering each up to `quantumMs` late. Default 0.
   */
  quantumMs?: number
  mtu?: number
}

export interface RunLimits {
  /** Give up when the virtual clock would pass this (ms since the start of the run). */
  maxSimulatedMs: number
  maxIterations: number
  what: string
}

/** Deterministic xorshift32 for ISNs, ephemeral ports and secrets. */
class SeededRandom implements Random {
  private state: number
  constructor(seed: number) {
    this.state = seed >>> 0 || 0x9e3779b9
  }
  nextUint32(): number {
    let x = this.state
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    this.state = x >>> 0
    return this.state
  }
}

export interface SimNode {
  readonly name: string
  readonly core: StackCore
  readonly tcp: TcpTransport
  readonly link: ChannelLink
  readonly end: ChannelEnd
  readonly port: ImpairedPort
  /** Frames handed to core.input. */
  framesIn: number
}

export class VirtualNet {
  readonly clock = new VirtualClock(0)
  readonly nodes: [SimNode, SimNode]
  readonly wire: [MemoryPort, MemoryPort]
  iterations = 0
  yields = 0
  advances = 0
  private readonly quantumMs: number
  private closed = false

  constructor(readonly options: VirtualNetOptions) {
    this.quantumMs = options.quantumMs ?? 0
    const mtu = options.mtu ?? 1500
    // Rings and pools deep enough for a full congestion window sent in one
    // poll: a refused buffer would be an output failure the simulation did not ask for.
    const channel = { bufferCount: 8192, ringCapacity: 4096 }
    this.wire = createMemoryWire({ linkType: 'ethernet', mtu, name: 'sim', channel })
    const clock = { now: () => this.clock.now() }
    const make = (i: 0 | 1): SimNode => {
      // Impair only the transmit direction of each end: every packet crosses
      // exactly one impairment, so the configured loss is the path's loss.
      const port = impair(this.wire[i], { seed: options.seed * 2 + i, clock: this.clock, tx: options.link, rx: {}, bufferCount: channel.bufferCount })
      const end = port.queues[0]
      const link = new ChannelLink(end, 'ethernet', mtu, port.info.mac)
      const random = new SeededRandom(options.seed * 7919 + i + 1)
      const core = createStackCore({ link, clock, random, addresses: options.addresses[i], dad: false })
      const tcp = new TcpTransport({ ...options.tcp, ip: core, random: () => random.nextUint32(), clock: () => this.clock.now() })
      core.registerTransport(tcp)
      return { name: i === 0 ? 'A' : 'B', core, tcp, link, end, port, framesIn: 0 }
    }
    this.nodes = [make(0), make(1)]
  }

  /** Receive -> input -> poll -> flush on both cores; returns frames input. */
  serviceNodes(): number {
    let moved = 0
    for (const node of this.nodes) {
      const now = this.clock.now()
      const n = node.end.receive(256, (index, length) => {
        node.core.input(node.end.buffer(index).subarray(0, length), now)
        node.end.release(index)
      })
      node.framesIn += n
      moved += n
      node.core.poll(now)
      node.end.flush()
    }
    return moved
  }

  /**
   * Packets between the cores right now that will arrive without the clock
   * moving: on the sender's outer ring, in the wire, on the receiver's outer
   * ring. Packets the middleware holds for a later departure are not counted:
   * they are the clock's deadlines.
   */
  inFlight(): number {
    let total = 0
    for (let i = 0; i < 2; i++) {
      const from = this.nodes[i]
      const to = this.nodes[1 - i]
      const tx = from.port.impairCounters().tx
      const rx = to.port.impairCounters().rx
      const onSenderRing = from.end.counters().sent - tx.arrived
      const inWire = tx.delivered - rx.arrived
      const onReceiverRing = rx.delivered - to.end.counters().received
      // What the wire dropped never arrives (with the default backpressure, only oversize frames).
      const drops = this.wire[i].counters().drops
      total += onSenderRing + inWire + onReceiverRing - (drops.oversize + drops.poolEmpty + drops.ringFull)
    }
    return total
  }

  /** Earliest core timer or impairment departure. */
  nextDeadline(): number {
    const impairNext = this.clock.nextDeadline() ?? Infinity
    return Math.min(this.nodes[0].core.nextTimeout(), this.nodes[1].core.nextTimeout(), impairNext)
  }

  /** Runs until `done()` holds; throws a SimulationStall when a limit is hit. */
  async run(done: () => boolean, limits: RunLimits, describe: () => string = () => ''): Promise<void> {
    const start = this.clock.now()
    const endTime = start + limits.maxSimulatedMs
    // Consecutive event-loop turns with packets counted in flight but none
    // arriving: the pumps are stuck, which no amount of waiting fixes.
    let fruitlessYields = 0
    for (let i = 0; i < limits.maxIterations; i++) {
      this.iterations++
      if (done()) return
      const moved = this.serviceNodes()
      if (done()) return
      if (moved > 0) fruitlessYields = 0
      if (this.inFlight() > 0) {
        if (++fruitlessYields > 10_000) throw this.stall(limits.what, 'packets in flight never arrived', describe)
        this.yields++
        await tick()
        continue
      }
      if (moved > 0) continue // inputs may have queued output: service again before moving time
      const next = this.nextDeadline()
      if (next === Infinity) throw this.stall(limits.what, 'nothing left to happen (no timers, nothing in flight)', describe)
      if (next > endTime) throw this.stall(limits.what, `simulated time limit ${limits.maxSimulatedMs} ms reached`, describe)
      const coreNext = Math.min(this.nodes[0].core.nextTimeout(), this.nodes[1].core.nextTimeout())
      const target = Math.max(this.clock.now(), Math.min(next + this.quantumMs, coreNext))
      this.advances++
      this.clock.advanceTo(target)
      // The middleware timers ran synchronously and sent to the wire; let the pump carry it.
      if (this.inFlight() > 0) {
        this.yields++
        await tick()
      }
    }
    throw this.stall(limits.what, `iteration limit ${limits.maxIterations} reached`, describe)
  }

  private stall(what: string, why: string, describe: () => string): Error {
    return new Error(`simulation stalled (${what}): ${why} at t=${this.clock.now().toFixed(3)} ms\n${this.report()}\n${describe()}`)
  }

  /** Counters of both sides, for failure messages and logs. */
  report(): string {
    const lines = [`iterations=${this.iterations} yields=${this.yields} advances=${this.advances} inFlight=${this.closed ? '-' : this.inFlight()}`]
    for (const node of this.nodes) {
      const tcp = node.tcp.layer
      const conns = [...tcp.allConnections()].map((c) => `${c.state}`).join(',')
      lines.push(
        `${node.name}: framesIn=${node.framesIn} nextTimeout=${node.core.nextTimeout()} conns=[${conns}] tcp=${JSON.stringify(tcp.counters)} link=${JSON.stringify(node.core.counters.link)} ip=${JSON.stringify(node.core.counters.ip)} ip6=${JSON.stringify(node.core.counters.ip6)} impair=${JSON.stringify(
          node.port.impairCounters(),
        )} ringFullDrops=${node.link.ringFullDrops}`,
      )
    }
    return lines.join('\n')
  }

  /** Closes both impaired ports (and the wire under them). */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.all(this.nodes.map((n) => n.port.close()))
  }
}
