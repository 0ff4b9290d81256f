// A two-endpoint simulation: two TcpLayers joined by an in-memory link with
// seeded loss, duplication, reordering (random extra delay) and a fixed
// propagation delay, all on one fake clock. Events run in time order; the
// loop is bounded in steps and simulated time.
import { TcpLayer } from '../../../stacks/core/tcp/layer.js'
import type { IpAddress, TcpConfig, TcpOutput, TcpPayload, TcpSegment } from '../../../stacks/core/tcp/types.js'
import { copyOptions, seededRandom } from './harness.js'

export interface Impairment {
  loss: number
  duplicate: number
  /** Probability that a packet gets an extra random delay of up to `reorderDelayMs`. */
  reorder: number
  reorderDelayMs: number
  delayMs: number
}

interface InFlight {
  at: number
  order: number
  to: 0 | 1
  src: IpAddress
  dst: IpAddress
  seg: TcpSegment
  payload: Uint8Array
}

export class Simulation {
  now = 0
  readonly layers: [TcpLayer, TcpLayer]
  private queue: InFlight[] = []
  private order = 0
  private readonly rnd: () => number
  delivered = 0
  dropped = 0
  /** Application timers: (time, callback), run in time order with the network events. */
  private appTimers: { at: number; fn: () => void }[] = []

  schedule(at: number, fn: () => void): void {
    this.appTimers.push({ at, fn })
    this.appTimers.sort((a, b) => a.at - b.at)
  }

  constructor(
    readonly impairment: Impairment,
    seed: number,
    config: Partial<TcpConfig> = {},
  ) {
    this.rnd = seededRandom(seed ^ 0x9e3779b9)
    const make = (index: 0 | 1): TcpLayer => {
      const output: TcpOutput = {
        sendSegment: (local, remote, s, payload) => this.transmit((1 - index) as 0 | 1, local, remote, s, payload),
        pathMtu: () => 1500,
      }
      return new TcpLayer({
        secret: Uint8Array.from({ length: 16 }, (_, i) => i + index * 16),
        random: seededRandom(seed + index),
        clock: () => this.now,
        output,
        ...config,
      })
    }
    this.layers = [make(0), make(1)]
  }

  private uniform(): number {
    return this.rnd() / 4294967296
  }

  private transmit(to: 0 | 1, src: IpAddress, dst: IpAddress, s: TcpSegment, payload: TcpPayload | null): boolean {
    const imp = this.impairment
    if (this.uniform() < imp.loss) {
      this.dropped++
      return true
    }
    const copies = this.uniform() < imp.duplicate ? 2 : 1
    for (let c = 0; c < copies; c++) {
      const bytes = new Uint8Array(payload ? payload.length : 0)
      if (payload) payload.copyTo(bytes, 0)
      const extra = this.uniform() < imp.reorder ? this.uniform() * imp.reorderDelayMs : 0
      const seg: TcpSegment = { ...s, options: copyOptions(s.options) }
      this.enqueue({ at: this.now + imp.delayMs + extra, order: this.order++, to, src, dst, seg, payload: bytes })
    }
    return true
  }

  private enqueue(p: InFlight): void {
    // Sorted insert from the back (most packets go to the end).
    let i = this.queue.length
    while (i > 0 && (this.queue[i - 1].at > p.at || (this.queue[i - 1].at === p.at && this.queue[i - 1].order > p.order))) i--
    this.queue.splice(i, 0, p)
  }

  /** Runs events until `done()` or the limits; returns whether done() became true. */
  run(done: () => boolean, maxTimeMs: number, maxSteps = 5_000_000): boolean {
    for (let step = 0; step < maxSteps; step++) {
      if (done()) return true
      const nextPacket = this.queue.length > 0 ? this.queue[0].at : Infinity
      const nextApp = this.appTimers.length > 0 ? this.appTimers[0].at : Infinity
      const next = Math.min(nextPacket, nextApp, this.layers[0].nextTimeout(), this.layers[1].nextTimeout())
      if (next === Infinity || next > maxTimeMs) return done()
      this.now = Math.max(this.now, next)
      while (this.appTimers.length > 0 && this.appTimers[0].at <= this.now) this.appTimers.shift()!.fn()
      while (this.queue.length > 0 && this.queue[0].at <= this.now) {
        const p = this.queue.shift()!
        this.delivered++
        this.layers[p.to].input(p.src, p.dst, p.seg, p.payload, this.now)
      }
      this.layers[0].poll(this.now)
      this.layers[1].poll(this.now)
    }
    return done()
  }
}

/** The byte at position i of a direction's stream: position-dependent so reordering or loss shows. */
export function streamByte(direction: number, i: number): number {
  return (Math.imul(i, 2654435761) >>> 24) ^ (i & 0xff) ^ (direction * 0x5a)
}
