// Segment-by-segment test harness (gVisor's "context" style): a TcpLayer on
// a fake clock whose output is recorded, plus helpers to inject segments
// from a scripted peer and to inspect what the layer sent, field by field.
import { TcpLayer } from '../../../stacks/core/tcp/layer.js'
import {
  FLAG_ACK,
  type IpAddress,
  type TcpConfig,
  type TcpOptions,
  type TcpOutput,
  type TcpPayload,
  type TcpSegment,
} from '../../../stacks/core/tcp/types.js'

export const LOCAL: IpAddress = { version: 4, v4: 0xc6336402 } // 198.51.100.2
export const REMOTE: IpAddress = { version: 4, v4: 0xc6336401 } // 198.51.100.1
export const LOCAL6: IpAddress = { version: 6, v6: Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]) }
export const REMOTE6: IpAddress = { version: 6, v6: Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]) }

/** A deterministic PRNG (mulberry32) so every run replays. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** A segment as the layer sent it, deep-copied. */
export interface SentSegment {
  local: IpAddress
  remote: IpAddress
  srcPort: number
  dstPort: number
  seq: number
  ack: number
  flags: number
  window: number
  options: TcpOptions
  payload: Uint8Array
}

export function copyOptions(o: TcpOptions): TcpOptions {
  const c: TcpOptions = {}
  if (o.mss !== undefined) c.mss = o.mss
  if (o.windowScale !== undefined) c.windowScale = o.windowScale
  if (o.sackPermitted) c.sackPermitted = true
  if (o.sack) c.sack = o.sack.map((b) => [b[0], b[1]] as [number, number])
  if (o.timestamp) c.timestamp = [o.timestamp[0], o.timestamp[1]]
  return c
}

export class RecordingOutput implements TcpOutput {
  sent: SentSegment[] = []
  mtu = 1500
  /** When false, sendSegment reports failure (no route / no buffer). */
  up = true
  sendSegment(local: IpAddress, remote: IpAddress, s: TcpSegment, payload: TcpPayload | null): boolean {
    const bytes = new Uint8Array(payload ? payload.length : 0)
    if (payload) payload.copyTo(bytes, 0)
    this.sent.push({ local, remote, srcPort: s.srcPort, dstPort: s.dstPort, seq: s.seq, ack: s.ack, flags: s.flags, window: s.window, options: copyOptions(s.options), payload: bytes })
    return this.up
  }
  pathMtu(): number {
    return this.mtu
  }
}

export interface PeerSegment {
  seq: number
  ack?: number
  flags: number
  window?: number
  options?: TcpOptions
  payload?: Uint8Array
  srcPort?: number
  dstPort?: number
}

export class Harness {
  now = 1_000_000
  readonly out = new RecordingOutput()
  readonly layer: TcpLayer
  local: IpAddress = LOCAL
  remote: IpAddress = REMOTE
  localPort = 40000
  remotePort = 80

  constructor(config: Partial<TcpConfig> = {}, seed = 1) {
    this.layer = new TcpLayer({
      secret: Uint8Array.from({ length: 16 }, (_, i) => i * 7 + 1),
      random: seededRandom(seed),
      clock: () => this.now,
      output: this.out,
      ...config,
    })
  }

  /** Everything sent since the last take(). */
  take(): SentSegment[] {
    const s = this.out.sent
    this.out.sent = []
    return s
  }

  /** Exactly one segment was sent; return it. */
  one(): SentSegment {
    const s = this.take()
    if (s.length !== 1) throw new Error(`expected exactly one segment, got ${s.length}: ${JSON.stringify(s.map(describe))}`)
    return s[0]
  }

  none(): void {
    const s = this.take()
    if (s.length !== 0) throw new Error(`expected no segment, got ${JSON.stringify(s.map(describe))}`)
  }

  /** Deliver a segment from the peer. */
  inject(p: PeerSegment): void {
    const seg: TcpSegment = {
      srcPort: p.srcPort ?? this.remotePort,
      dstPort: p.dstPort ?? this.localPort,
      seq: p.seq >>> 0,
      ack: (p.ack ?? 0) >>> 0,
      flags: p.flags,
      window: p.window ?? 65535,
      urgentPointer: 0,
      options: p.options ?? {},
    }
    this.layer.input(this.remote, this.local, seg, p.payload ?? new Uint8Array(0), this.now)
  }

  /** Advance the fake clock, running timers at each deadline on the way. */
  advance(ms: number): void {
    const end = this.now + ms
    for (let guard = 0; guard < 100_000; guard++) {
      const t = this.layer.nextTimeout()
      if (t > end) break
      this.now = Math.max(this.now, t)
      this.layer.poll(this.now)
    }
    this.now = end
  }
}

export function describe(s: SentSegment): string {
  const names = ['FIN', 'SYN', 'RST', 'PSH', 'ACK', 'URG']
  const f = names.filter((_, i) => s.flags & (1 << i)).join(',')
  return `<SEQ=${s.seq}><ACK=${s.ack}><CTL=${f}><WND=${s.window}><LEN=${s.payload.length}>${JSON.stringify(s.options)}`
}

export function bytes(n: number, start = 0): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (start + i) & 0xff)
}

export const ACK = FLAG_ACK

export const PEER_ISS = 5000

/** The scripted remote end of one connection: tracks its own sequence number. */
export class Peer {
  seq: number
  tsVal = 100
  constructor(
    readonly h: Harness,
    readonly conn: import('../../../stacks/core/tcp/connection.js').TcpConnection,
    seq: number,
    readonly timestamps: boolean,
  ) {
    this.seq = seq
  }
  private opts(extra: TcpOptions = {}): TcpOptions {
    const o: TcpOptions = { ...extra }
    if (this.timestamps) o.timestamp = [++this.tsVal, this.lastTsVal()]
    return o
  }
  /** Our (the stack's) latest TSval, to echo. */
  lastTsVal(): number {
    return this.echo
  }
  echo = 0
  /** Send data from the peer (advances the peer's sequence unless `at` is given). */
  data(payload: Uint8Array, opts: { at?: number; ack?: number; window?: number; fin?: boolean; options?: TcpOptions } = {}): void {
    const seq = opts.at ?? this.seq
    this.h.inject({
      seq,
      ack: opts.ack ?? this.conn.sndNxt,
      flags: FLAG_ACK | (opts.fin ? 0x01 : 0),
      window: opts.window ?? 65535,
      payload,
      options: this.opts(opts.options),
    })
    if (opts.at === undefined) this.seq = (this.seq + payload.length + (opts.fin ? 1 : 0)) >>> 0
  }
  /** A pure ACK from the peer. */
  ack(ack: number, window = 65535, options: TcpOptions = {}): void {
    this.h.inject({ seq: this.seq, ack, flags: FLAG_ACK, window, options: this.opts(options) })
  }
  fin(ack = this.conn.sndNxt): void {
    this.h.inject({ seq: this.seq, ack, flags: FLAG_ACK | 0x01, window: 65535, options: this.opts() })
    this.seq = (this.seq + 1) >>> 0
  }
  /** Record our TSval from segments the stack sent. */
  saw(segments: SentSegment[]): SentSegment[] {
    for (const s of segments) if (s.options.timestamp) this.echo = s.options.timestamp[0]
    return segments
  }
}

export interface EstablishOptions {
  timestamps?: boolean
  sack?: boolean
  windowScale?: number
  mss?: number
  window?: number
}

/** Active open completed against a scripted peer; the SYN and final ACK are consumed. */
export function establish(h: Harness, o: EstablishOptions = {}): Peer {
  const conn = h.layer.connect({ local: h.local, remote: h.remote, remotePort: h.remotePort, localPort: h.localPort })
  const syn = h.one()
  const options: TcpOptions = { mss: o.mss ?? 1460 }
  if (o.sack) options.sackPermitted = true
  if (o.timestamps) options.timestamp = [100, syn.options.timestamp![0]]
  if (o.windowScale !== undefined) options.windowScale = o.windowScale
  h.inject({ seq: PEER_ISS, ack: conn.iss + 1, flags: 0x12, window: o.window ?? 65535, options })
  const peer = new Peer(h, conn, PEER_ISS + 1, o.timestamps === true)
  peer.saw(h.take())
  return peer
}
