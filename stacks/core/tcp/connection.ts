import type { ResolvedTcpConfig } from './config.js'
import { resolveKeepAlive } from './config.js'
import type { CongestionControl } from './congestion/types.js'
import { ReorderRanges } from './reorder.js'
import { ByteRing } from './ring.js'
import { seqAdd, seqDiff, seqGe, seqGt, seqInWindow, seqLe, seqLt, seqMax } from './seq.js'
import {
  FLAG_ACK,
  FLAG_FIN,
  FLAG_PSH,
  FLAG_RST,
  FLAG_SYN,
  TcpError,
  type IpAddress,
  type KeepAliveOptions,
  type TcpConnectionEvents,
  type TcpCounters,
  type TcpErrorCode,
  type TcpOutput,
  type TcpPayload,
  type TcpSegment,
} from './types.js'

export enum TcpState {
  Closed = 0,
  Listen = 1,
  SynSent = 2,
  SynReceived = 3,
  Established = 4,
  FinWait1 = 5,
  FinWait2 = 6,
  CloseWait = 7,
  Closing = 8,
  LastAck = 9,
  TimeWait = 10,
}

export const TCP_STATE_NAMES = [
  'CLOSED',
  'LISTEN',
  'SYN-SENT',
  'SYN-RECEIVED',
  'ESTABLISHED',
  'FIN-WAIT-1',
  'FIN-WAIT-2',
  'CLOSE-WAIT',
  'CLOSING',
  'LAST-ACK',
  'TIME-WAIT',
] as const
export type TcpStateName = (typeof TCP_STATE_NAMES)[number]

export interface TcpConnectionInfo {
  state: TcpStateName
  sndMss: number
  advertisedMss: number
  srttMs: number
  rttvarMs: number
  rtoMs: number
  cwnd: number
  ssthresh: number
  congestionControl: string
  sendWindow: number
  receiveWindow: number
  sendWindowShift: number
  receiveWindowShift: number
  timestamps: boolean
  sack: boolean
  bytesInFlight: number
  unsentBytes: number
  readableBytes: number
  outOfOrderBytes: number
  inRecovery: boolean
  retries: number
}

/** What a connection needs from its layer (the TcpLayer implements it). */
export interface ConnectionHost {
  readonly cfg: ResolvedTcpConfig
  readonly counters: TcpCounters
  readonly output: TcpOutput
  /** Shared scratch for outgoing segments: filled, handed to output, forgotten. */
  readonly scratch: OutgoingScratch
  /** RFC 5961 §7 global challenge-ACK budget. */
  allowChallengeAck(now: number): boolean
  /** The connection reached CLOSED: forget it. */
  connectionClosed(conn: TcpConnection): void
  /** A passive open completed the handshake: hand it to its listener. */
  connectionEstablished(conn: TcpConnection): void
  /** Timers of `conn` may have moved earlier. */
  reschedule(conn: TcpConnection): void
  /** `conn` queued data with `more`: call its pushPending() at the next poll. */
  pushLater(conn: TcpConnection): void
}

/** One reusable outgoing segment, options and SACK tuples per layer: no allocation per segment. */
export class OutgoingScratch {
  readonly timestamp: [number, number] = [0, 0]
  readonly sackPool: [number, number][] = [
    [0, 0],
    [0, 0],
    [0, 0],
    [0, 0],
  ]
  readonly sack: [number, number][] = []
  readonly segment: TcpSegment = { srcPort: 0, dstPort: 0, seq: 0, ack: 0, flags: 0, window: 0, urgentPointer: 0, options: {} }
  readonly reorderIndices = new Int32Array(4)
}

/** A TcpPayload reading straight out of a send ring. */
class RingPayload implements TcpPayload {
  ring: ByteRing | null = null
  skip = 0
  length = 0
  copyTo(dst: Uint8Array, offset: number): void {
    this.ring!.peek(dst, offset, this.length, this.skip)
  }
}

const NONE = Number.POSITIVE_INFINITY
const MAX_WINDOW_SHIFT = 14
const MAX_SACKED = 8
const OUT_OF_WINDOW_ACK_INTERVAL_MS = 500

/** IPv4 / IPv6 fixed header sizes, for MSS from the MTU (RFC 6691: MSS = MTU - fixed IP - fixed TCP header). */
function ipHeaderLength(a: IpAddress): number {
  return a.version === 4 ? 20 : 40
}

/**
 * One TCP connection: the RFC 9293 state machine with its buffers and
 * timers. Pure: every entry point gets `now` (or reads the injected clock),
 * output goes through the host.
 */
export class TcpConnection {
  state: TcpState = TcpState.Closed
  readonly local: IpAddress
  readonly localPort: number
  readonly remote: IpAddress
  readonly remotePort: number
  events: TcpConnectionEvents = {}
  /** Set while a passive open is in SYN-RECEIVED: the listener that spawned it. */
  listenerToken: unknown = null
  /** The error that ended the connection, if any. */
  error: TcpErrorCode | null = null
  /** The deadline of this connection's live entry in the layer's timer heap. */
  scheduledAt = NONE
  /** Owned by the TcpOutput (e.g. the transport's header template). */
  outputState: unknown = null

  // Send sequence space (RFC 9293 §3.3.1). sndMax is the highest sequence
  // sent so far: after a timeout sndNxt goes back to sndUna (go-back-N) while
  // ACKs up to sndMax stay acceptable.
  iss = 0
  sndUna = 0
  sndNxt = 0
  sndMax = 0
  sndWnd = 0
  sndWl1 = 0
  sndWl2 = 0
  maxSndWnd = 0
  // Receive sequence space.
  irs = 0
  rcvNxt = 0
  /** RCV.NXT + RCV.WND as last advertised; never moves left (RFC 9293 3.8.6: shrinking the window is "strongly discouraged"). */
  rcvAdvEdge = 0

  sndWndShift = 0
  rcvWndShift = 0
  /** The MSS we announced. */
  advertisedMss = 0
  /** The peer's MSS option, or the RFC 9293 default. */
  peerMss = 0
  /** Payload bytes per full-sized segment we send (peer MSS, PMTU and option space). */
  sndMss = 536
  private pmtu = 0

  tsEnabled = false
  private tsOffset = 0
  private tsRecent = 0
  private tsRecentAt = 0
  private lastAckSent = 0
  sackEnabled = false
  private peerOfferedSack = false
  private peerOfferedTs = false
  private peerWindowShift = -1

  readonly sendBuffer: ByteRing
  readonly receiveBuffer: ByteRing
  private readonly reorder: ReorderRanges
  private readonly payload = new RingPayload()

  /** shutdownWrite() called: a FIN follows the queued data. */
  finQueued = false
  /** Sequence number our FIN occupies (valid once finQueued). */
  finSeq = 0
  /** The peer's FIN was processed (RCV.NXT covers it). */
  peerFinReceived = false
  /** A FIN arrived ahead of missing data, at this sequence. */
  private peerFinPending = false
  private peerFinSeq = 0
  noDelay = false
  /** The application closed the socket: it reads nothing more (see close()). */
  private appClosed = false
  keepAlive: KeepAliveOptions
  private closedEventSent = false

  // Timers: absolute deadlines in ms, NONE when off.
  rtoAt = NONE
  delayedAckAt = NONE
  persistAt = NONE
  keepAliveAt = NONE
  timeWaitAt = NONE

  // RFC 6298 state.
  rto: number
  srtt = 0
  rttvar = 0
  private hasRttSample = false
  /** Consecutive timeouts (SYN or data): backoff exponent and retry limit. */
  retries = 0
  private rttTiming = false
  private rttSeq = 0
  private rttStart = 0
  /** When the oldest unacknowledged data was first sent (user timeout). */
  private unackedSince = NONE
  private persistBackoff = 0
  private persistProbes = 0
  private keepAliveProbesSent = 0
  private lastReceivedAt = 0

  readonly cc: CongestionControl
  inRecovery = false
  recover = 0
  dupAcks = 0
  /** Highest sequence retransmitted during this recovery (SACK hole filling). */
  private retransmitHigh = 0
  // The peer's SACK scoreboard: sorted, disjoint [start, end) sequence ranges above SND.UNA.
  private readonly sackedStart = new Float64Array(MAX_SACKED)
  private readonly sackedEnd = new Float64Array(MAX_SACKED)
  private sackedCount = 0

  // Receiver ACK policy.
  private bytesSinceAck = 0
  private largestSegmentSeen = 536
  private ackNow = false
  /** send() accepted less than offered: announce onWritable when room frees up. */
  private wantWritable = false
  /** Data queued with send(..., more): the layer calls pushPending() at its next poll. */
  pushQueued = false
  private softError: TcpErrorCode | null = null
  private lastOutOfWindowAckAt = -Infinity
  /** Counted in counters.currEstab (synchronized, not yet TIME-WAIT/CLOSED). */
  private estabCounted = false

  private readonly host: ConnectionHost

  constructor(host: ConnectionHost, local: IpAddress, localPort: number, remote: IpAddress, remotePort: number, iss: number, now: number) {
    this.host = host
    const cfg = host.cfg
    this.local = local
    this.localPort = localPort
    this.remote = remote
    this.remotePort = remotePort
    this.iss = iss
    this.sndUna = iss
    this.sndNxt = iss
    this.sndMax = iss
    this.sendBuffer = new ByteRing(cfg.sendBufferSize)
    this.receiveBuffer = new ByteRing(cfg.receiveBufferSize)
    this.reorder = new ReorderRanges(cfg.maxReorderRanges)
    this.payload.ring = this.sendBuffer
    this.rto = cfg.initialRtoMs
    this.cc = cfg.congestionControl()
    this.keepAlive = { ...cfg.keepAlive }
    // RFC 7323 §5.4: a random offset per connection for TSval.
    this.tsOffset = cfg.random() >>> 0
    this.lastReceivedAt = now
    this.pmtu = host.output.pathMtu(local, remote)
    // RFC 6691 / 9293 3.7.1: announce MTU minus the fixed IP and TCP headers.
    this.advertisedMss = Math.max(536, Math.min(65495, this.pmtu - ipHeaderLength(local) - 20))
    // An operator's MSS (TCP_MAXSEG) caps what we announce, below the path's if it asks.
    if (cfg.mss > 0) this.advertisedMss = Math.min(this.advertisedMss, cfg.mss)
    this.noDelay = cfg.noDelay
    // RFC 7323 §2.3: the smallest shift that lets the whole buffer be advertised.
    let shift = 0
    while (shift < MAX_WINDOW_SHIFT && cfg.receiveBufferSize >> shift > 65535) shift++
    this.rcvWndShift = cfg.windowScaling ? shift : 0
  }

  get stateName(): TcpStateName {
    return TCP_STATE_NAMES[this.state]
  }

  /** Bytes in flight: sent (SYN and FIN included) and not acknowledged. */
  get flightSize(): number {
    return seqDiff(this.sndMax, this.sndUna)
  }

  /** A snapshot for diagnostics (`flowstack flows`, like Linux's TCP_INFO / ss -ti). */
  info(): TcpConnectionInfo {
    return {
      state: this.stateName,
      sndMss: this.sndMss,
      advertisedMss: this.advertisedMss,
      srttMs: this.srtt,
      rttvarMs: this.rttvar,
      rtoMs: this.rto,
      cwnd: this.cc.cwnd,
      ssthresh: this.cc.ssthresh,
      congestionControl: this.cc.name,
      sendWindow: this.sndWnd,
      receiveWindow: Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt)),
      sendWindowShift: this.sndWndShift,
      receiveWindowShift: this.rcvWndShift,
      timestamps: this.tsEnabled,
      sack: this.sackEnabled,
      bytesInFlight: this.flightSize,
      unsentBytes: Math.max(0, this.sendBuffer.length - seqDiff(this.sndNxt, this.sndUna)),
      readableBytes: this.receiveBuffer.length,
      outOfOrderBytes: this.reorder.bytes,
      inRecovery: this.inRecovery,
      retries: this.retries,
    }
  }

  /** The earliest pending timer. */
  nextDeadline(): number {
    return Math.min(this.rtoAt, this.delayedAckAt, this.persistAt, this.keepAliveAt, this.timeWaitAt)
  }

  private isSynchronized(): boolean {
    return this.state >= TcpState.Established
  }

  // ------------------------------------------------------------- open

  /** Active open: send SYN (RFC 9293 3.10.1 OPEN call, CLOSED → SYN-SENT). */
  openActive(now: number): void {
    this.state = TcpState.SynSent
    this.sendSyn(now)
  }

  /** Passive open: a SYN arrived at a listener (RFC 9293 3.10.7.2, LISTEN → SYN-RECEIVED). */
  openPassive(seg: TcpSegment, now: number): void {
    this.state = TcpState.SynReceived
    this.irs = seg.seq
    this.rcvNxt = seqAdd(seg.seq, 1)
    this.negotiateOptions(seg)
    this.sndWnd = seg.window // RFC 7323 §2.2: the window of a SYN is never scaled.
    this.sndWl1 = seg.seq
    this.sndWl2 = seg.ack
    this.maxSndWnd = this.sndWnd
    if (seg.options.timestamp) {
      this.tsRecent = seg.options.timestamp[0]
      this.tsRecentAt = now
    }
    this.sendSyn(now)
  }

  private negotiateOptions(seg: TcpSegment): void {
    const o = seg.options
    const cfg = this.host.cfg
    // RFC 9293 3.7.1 (MUST-15): without an MSS option assume 536 (IPv4) or 1220 (IPv6).
    this.peerMss = o.mss !== undefined && o.mss > 0 ? o.mss : this.local.version === 4 ? 536 : 1220
    this.peerOfferedSack = o.sackPermitted === true
    this.peerOfferedTs = o.timestamp !== undefined
    this.peerWindowShift = o.windowScale !== undefined ? Math.min(o.windowScale, MAX_WINDOW_SHIFT) : -1
    // RFC 7323 §2.2: scaling is in effect only if both sides sent the option.
    if (cfg.windowScaling && this.peerWindowShift >= 0) {
      this.sndWndShift = this.peerWindowShift
    } else {
      this.sndWndShift = 0
      this.rcvWndShift = 0
    }
    this.tsEnabled = cfg.timestamps && this.peerOfferedTs
    this.sackEnabled = cfg.sack && this.peerOfferedSack
    this.recomputeSendMss()
  }

  /** Bytes of SACK option the next ACK-bearing segment carries (NOP, NOP, kind, length, 8 per block), which the payload must make room for. */
  private sackOptionBytes(): number {
    if (!this.sackEnabled || this.reorder.count === 0) return 0
    return 4 + 8 * Math.min(this.reorder.count, this.tsEnabled ? 3 : 4)
  }

  private recomputeSendMss(): void {
    const fromPath = this.pmtu - ipHeaderLength(this.local) - 20
    // RFC 6691: "the TCP sender should reduce the data length by the length of TCP options".
    const options = this.tsEnabled ? 12 : 0
    const old = this.sndMss
    const cap = this.host.cfg.mss > 0 ? this.host.cfg.mss : fromPath
    this.sndMss = Math.max(64, Math.min(this.peerMss, fromPath, cap) - options)
    if (this.state >= TcpState.Established && old !== this.sndMss) this.cc.onMssChange(old, this.sndMss)
  }

  private sendSyn(now: number): void {
    const flags = this.state === TcpState.SynSent ? FLAG_SYN : FLAG_SYN | FLAG_ACK
    this.transmit(this.iss, 0, flags, now)
    if (this.sndNxt === this.iss) this.sndNxt = seqAdd(this.iss, 1)
    this.sndMax = seqMax(this.sndMax, this.sndNxt)
    if (this.retries === 0 && !this.rttTiming) {
      this.rttTiming = true
      this.rttSeq = this.iss
      this.rttStart = now
    }
    this.rtoAt = now + this.rto
  }

  // ------------------------------------------------------------- user calls

  /**
   * Queue bytes for sending: as many as the send buffer has room for
   * (backpressure); returns the count. After it returns less than offered,
   * onWritable fires when room frees up.
   */
  send(bytes: Uint8Array, offset = 0, length = bytes.length - offset, more = false): number {
    if (this.finQueued || this.state === TcpState.Closed || this.state >= TcpState.FinWait1 && this.state !== TcpState.CloseWait) {
      throw new TcpError('EPIPE', 'This socket has been ended by the other party or shut down for writing')
    }
    const n = this.sendBuffer.write(bytes, offset, length)
    if (n < length) this.wantWritable = true
    if (n > 0 && this.isSynchronized()) {
      // `more` is Linux's MSG_MORE / autocork: several writes of one turn
      // (node:http's header and body) leave as one segment at the layer's
      // next poll instead of one segment each, which halves the packets of
      // a small request/response exchange and lets the peer delay its ACK.
      if (!more) this.flush(this.host.cfg.clock(), 0)
      else if (!this.pushQueued) {
        this.pushQueued = true
        this.host.pushLater(this)
      }
    }
    this.host.reschedule(this)
    return n
  }

  /** Sends what send(..., more) queued (the layer's poll calls this). */
  pushPending(now: number): void {
    this.pushQueued = false
    if (this.isSynchronized()) this.flush(now, 0)
  }

  /** Free room in the send buffer. */
  get writableBytes(): number {
    return this.sendBuffer.free
  }

  /** In-order bytes ready to read. */
  get readableBytes(): number {
    return this.receiveBuffer.length
  }

  /** Copy up to max readable bytes into dst without consuming them. */
  peek(dst: Uint8Array, offset = 0, max = dst.length - offset): number {
    return this.receiveBuffer.peek(dst, offset, max)
  }

  /** Consume up to max bytes into dst; opens the advertised window (and announces it when that matters). */
  read(dst: Uint8Array, offset = 0, max = dst.length - offset): number {
    const n = this.receiveBuffer.read(dst, offset, max)
    if (n > 0) this.afterRead()
    return n
  }

  /** Drop up to max readable bytes (a reader that does not need a copy). */
  skip(max: number): number {
    const n = Math.min(max, this.receiveBuffer.length)
    this.receiveBuffer.discard(n)
    if (n > 0) this.afterRead()
    return n
  }

  private afterRead(): void {
    if (!this.isSynchronized() || this.state === TcpState.TimeWait || this.peerFinReceived) return
    const old = seqDiff(this.rcvAdvEdge, this.rcvNxt)
    const next = this.windowCandidate()
    // Announce the window when it at least doubled and grew by a segment:
    // this reopens a closed window at once, while a reader keeping up lets
    // the window ride on ordinary ACKs (receiver SWS avoidance, RFC 9293 3.8.6.2.2).
    if (next >= 2 * old && next - old >= Math.min(this.advertisedMss, this.receiveBuffer.capacity >> 1)) {
      this.sendAck(this.host.cfg.clock())
      this.host.reschedule(this)
    }
  }

  /** Half-close: FIN after the queued data (RFC 9293 3.10.4 CLOSE). */
  shutdownWrite(): void {
    if (this.finQueued) return
    const now = this.host.cfg.clock()
    switch (this.state) {
      case TcpState.SynSent:
        // "Delete the TCB and return 'error: closing' responses to any queued SENDs."
        this.finish(null, now)
        return
      case TcpState.SynReceived:
      case TcpState.Established:
      case TcpState.CloseWait:
        break
      default:
        return
    }
    this.finQueued = true
    // The send ring starts at the first unacknowledged data byte.
    const dataStart = seqAdd(this.iss, 1)
    this.finSeq = seqAdd(seqGt(this.sndUna, dataStart) ? this.sndUna : dataStart, this.sendBuffer.length)
    if (this.state === TcpState.Established) this.state = TcpState.FinWait1
    else if (this.state === TcpState.CloseWait) this.state = TcpState.LastAck
    // SYN-RECEIVED: RFC 9293 "queue for processing after entering ESTABLISHED state".
    if (this.isSynchronized()) this.flush(now, 0)
    this.host.reschedule(this)
  }

  /**
   * The application closed the socket (close(2), net.Socket#destroy): FIN
   * after the queued data, as shutdownWrite, and nobody will read again. RFC
   * 1122 4.2.2.13: "if new data is received after CLOSE is called, its TCP
   * SHOULD send a RST to show that data was lost" (Linux: TCPAbortOnData),
   * so a peer still writing learns it at once instead of filling our buffer.
   */
  close(): void {
    this.appClosed = true
    this.shutdownWrite()
  }

  /** Abort: RST to the peer in synchronized states, then CLOSED (RFC 9293 3.10.5 ABORT). */
  abort(): void {
    const now = this.host.cfg.clock()
    if (this.state === TcpState.Closed) return
    if (this.state === TcpState.SynReceived || (this.isSynchronized() && this.state !== TcpState.TimeWait)) {
      // "Send a reset segment: <SEQ=SND.NXT><CTL=RST>"
      this.transmit(this.sndNxt, 0, FLAG_RST, now)
      this.host.counters.outRsts++
    }
    this.finish(null, now)
  }

  setNoDelay(noDelay = true): void {
    this.noDelay = noDelay
    if (noDelay && this.isSynchronized()) this.flush(this.host.cfg.clock(), 0)
    this.host.reschedule(this)
  }

  setKeepAlive(enabled: boolean, options: Partial<Omit<KeepAliveOptions, 'enabled'>> = {}): void {
    this.keepAlive = resolveKeepAlive(this.keepAlive, { ...options, enabled })
    this.keepAliveProbesSent = 0
    this.armKeepAlive(this.host.cfg.clock())
    this.host.reschedule(this)
  }

  private armKeepAlive(now: number): void {
    const keepable = this.state === TcpState.Established || this.state === TcpState.CloseWait || this.state === TcpState.FinWait2
    this.keepAliveAt = this.keepAlive.enabled && keepable ? now + this.keepAlive.idleMs : NONE
  }

  // ------------------------------------------------------------- ICMP

  /** The path MTU fell (RFC 1191/8201): future segments get smaller. */
  updatePathMtu(mtu: number, now: number): void {
    if (mtu >= this.pmtu) return
    this.pmtu = Math.max(mtu, this.local.version === 4 ? 68 : 1280)
    this.recomputeSendMss()
    // The segment that was too big is lost: resend from SND.UNA now, in smaller pieces.
    if (this.isSynchronized() && this.flightSize > 0) {
      this.sndNxt = this.sndUna
      this.flush(now, 0)
    }
    this.host.reschedule(this)
  }

  /** RFC 1122 4.2.3.9: hard errors abort a connection still in SYN-SENT; the rest are soft. */
  icmpError(code: TcpErrorCode, hard: boolean, now: number): void {
    if (this.state === TcpState.SynSent && hard) {
      this.host.counters.attemptFails++
      this.finish(code, now)
      return
    }
    this.softError = code
  }

  // ------------------------------------------------------------- timers

  poll(now: number): void {
    if (now >= this.timeWaitAt) {
      this.finish(null, now)
      return
    }
    if (now >= this.rtoAt) this.onRetransmitTimeout(now)
    if (this.state === TcpState.Closed) return
    if (now >= this.persistAt) this.onPersistTimeout(now)
    if (now >= this.keepAliveAt) this.onKeepAliveTimeout(now)
    if ((this.state as TcpState) === TcpState.Closed) return
    if (now >= this.delayedAckAt) {
      this.host.counters.delayedAcks++
      this.sendAck(now)
    }
  }

  private backoffRto(): void {
    // RFC 6298 5.5: "The host MUST set RTO <- RTO * 2 ("back off the timer")".
    this.rto = Math.min(this.rto * 2, this.host.cfg.maxRtoMs)
  }

  private onRetransmitTimeout(now: number): void {
    const cfg = this.host.cfg
    this.rtoAt = NONE
    this.host.counters.rtoTimeouts++
    if (this.state === TcpState.SynSent || this.state === TcpState.SynReceived) {
      if (this.retries >= cfg.synRetries) {
        this.host.counters.attemptFails++
        this.finish(this.state === TcpState.SynSent ? (this.softError ?? 'ETIMEDOUT') : null, now)
        return
      }
      this.retries++
      this.backoffRto()
      // Karn: a retransmitted SYN gives no RTT sample.
      this.rttTiming = false
      this.host.counters.retransSegs++
      this.sendSyn(now)
      return
    }
    if (this.flightSize === 0) return
    const userTimeout = cfg.userTimeoutMs > 0 && now - this.unackedSince >= cfg.userTimeoutMs
    if (this.retries >= cfg.maxRetransmits || userTimeout) {
      this.finish(this.softError ?? 'ETIMEDOUT', now)
      return
    }
    this.retries++
    // RFC 6582 §3.2 step 4 / RFC 5681: after a timeout, recover = highest sent.
    this.cc.onTimeout(this.flightSize, this.sndMss, now)
    this.recover = this.sndMax
    this.inRecovery = false
    this.dupAcks = 0
    this.backoffRto()
    // RFC 6298 5.4 + Karn: retransmit the earliest segment; no RTT sample from it.
    this.rttTiming = false
    // RFC 2018 §8: "the data sender MUST ignore prior SACK information" after a timeout.
    this.sackedCount = 0
    this.sndNxt = this.sndUna
    this.flush(now, 0)
    if (this.rtoAt === NONE && this.flightSize > 0) this.rtoAt = now + this.rto
  }

  private onPersistTimeout(now: number): void {
    this.persistAt = NONE
    if (!this.isSynchronized() || this.state === TcpState.TimeWait) return
    const offset = seqDiff(this.sndNxt, this.sndUna)
    // Only while nothing but an earlier probe byte is outstanding.
    if (this.sendBuffer.length - offset <= 0 || offset > 0) return
    if (this.persistProbes >= this.host.cfg.maxRetransmits) {
      this.finish(this.softError ?? 'ETIMEDOUT', now)
      return
    }
    // RFC 9293 3.8.6.1: "the sending TCP peer must regularly transmit at
    // least one octet of new data (if available)" into a zero window. The
    // probe byte does not advance SND.NXT: if the peer takes it, its ACK
    // moves SND.UNA past it.
    this.persistProbes++
    this.host.counters.persistProbes++
    this.transmit(this.sndNxt, 1, FLAG_ACK, now)
    this.sndMax = seqMax(this.sndMax, seqAdd(this.sndNxt, 1))
    this.persistBackoff = Math.min(this.persistBackoff + 1, 16)
    this.armPersist(now)
  }

  private armPersist(now: number): void {
    const base = Math.max(this.rto, this.host.cfg.minRtoMs)
    this.persistAt = now + Math.min(base * 2 ** this.persistBackoff, this.host.cfg.maxRtoMs)
  }

  private onKeepAliveTimeout(now: number): void {
    this.keepAliveAt = NONE
    if (!this.keepAlive.enabled) return
    if (this.flightSize > 0 || this.sendBuffer.length > 0) {
      // Data in flight has its own timer; keepalive waits for idleness.
      this.armKeepAlive(now)
      return
    }
    if (this.keepAliveProbesSent >= this.keepAlive.count) {
      this.finish('ETIMEDOUT', now)
      return
    }
    // RFC 9293 3.8.4: a keep-alive is "a segment with SEG.SEQ = SND.NXT-1",
    // which the peer must acknowledge.
    this.keepAliveProbesSent++
    this.host.counters.keepAliveProbes++
    this.transmit(seqAdd(this.sndUna, -1), 0, FLAG_ACK, now)
    this.keepAliveAt = now + this.keepAlive.intervalMs
  }

  // ------------------------------------------------------------- output

  private windowCandidate(): number {
    const free = this.receiveBuffer.free
    const max = 65535 * 2 ** this.rcvWndShift
    const scaled = Math.floor(Math.min(free, max) / 2 ** this.rcvWndShift) * 2 ** this.rcvWndShift
    return scaled
  }

  /** The window to put in the next segment (already shifted), moving the edge per receiver SWS avoidance. */
  private windowField(): number {
    const current = seqDiff(this.rcvAdvEdge, this.rcvNxt)
    const candidate = this.windowCandidate()
    // RFC 9293 3.8.6.2.2: keep RCV.NXT+RCV.WND fixed until the window can
    // grow by min(Fr * RCV.BUFF, Eff.snd.MSS), Fr = 1/2.
    const threshold = Math.min(this.receiveBuffer.capacity >> 1, this.advertisedMss)
    if (candidate - Math.max(current, 0) >= threshold || (candidate > current && candidate === this.windowCandidateMax())) {
      this.rcvAdvEdge = seqAdd(this.rcvNxt, candidate)
    } else if (current < 0) {
      this.rcvAdvEdge = this.rcvNxt
    }
    return Math.floor(seqDiff(this.rcvAdvEdge, this.rcvNxt) / 2 ** this.rcvWndShift)
  }

  private windowCandidateMax(): number {
    const max = 65535 * 2 ** this.rcvWndShift
    return Math.floor(Math.min(this.receiveBuffer.capacity, max) / 2 ** this.rcvWndShift) * 2 ** this.rcvWndShift
  }

  /**
   * Emit one segment. `seq`..`seq+len` of data come from the send ring
   * (which starts at the first unacknowledged data byte).
   */
  private transmit(seq: number, len: number, flags: number, now: number): boolean {
    const s = this.host.scratch
    const seg = s.segment
    const o = seg.options
    seg.srcPort = this.localPort
    seg.dstPort = this.remotePort
    seg.seq = seq
    seg.flags = flags
    seg.urgentPointer = 0
    o.mss = undefined
    o.windowScale = undefined
    o.sackPermitted = undefined
    o.sack = undefined
    o.timestamp = undefined
    const cfg = this.host.cfg
    const tsNow = (Math.floor(now) + this.tsOffset) >>> 0
    if (flags & FLAG_SYN) {
      // RFC 7323 §2.2: "The window field in a segment where the SYN bit is set ... MUST NOT be scaled".
      seg.window = Math.min(this.receiveBuffer.free, 65535)
      this.rcvAdvEdge = seqAdd(this.rcvNxt, seg.window)
      const active = this.state === TcpState.SynSent
      o.mss = this.advertisedMss
      if (cfg.sack && (active || this.peerOfferedSack)) o.sackPermitted = true
      if (cfg.timestamps && (active || this.peerOfferedTs)) {
        s.timestamp[0] = tsNow
        s.timestamp[1] = active ? 0 : this.tsRecent
        o.timestamp = s.timestamp
      }
      if (cfg.windowScaling && (active || this.peerWindowShift >= 0)) o.windowScale = this.rcvWndShift
    } else {
      seg.window = flags & FLAG_RST && !(flags & FLAG_ACK) ? 0 : this.windowField()
      if (this.tsEnabled) {
        s.timestamp[0] = tsNow
        s.timestamp[1] = this.tsRecent
        o.timestamp = s.timestamp
      }
      if (this.sackEnabled && this.reorder.count > 0 && flags & FLAG_ACK) {
        // RFC 2018 §3: at most 3 blocks next to timestamps, 4 without (40 bytes of options).
        const max = this.tsEnabled ? 3 : 4
        const count = this.reorder.mostRecent(s.reorderIndices, max)
        s.sack.length = 0
        for (let k = 0; k < count; k++) {
          const i = s.reorderIndices[k]
          const pair = s.sackPool[k]
          pair[0] = seqAdd(this.rcvNxt, this.reorder.start(i))
          pair[1] = seqAdd(this.rcvNxt, this.reorder.end(i))
          s.sack.push(pair)
        }
        o.sack = s.sack
      }
    }
    if (flags & FLAG_ACK) {
      seg.ack = this.rcvNxt
      this.lastAckSent = this.rcvNxt
      this.bytesSinceAck = 0
      this.delayedAckAt = NONE
      this.ackNow = false
    } else {
      seg.ack = 0
    }
    let payload: TcpPayload | null = null
    if (len > 0) {
      const dataStart = seqAdd(this.iss, 1)
      const base = seqGt(this.sndUna, dataStart) ? this.sndUna : dataStart
      this.payload.skip = seqDiff(seq, base)
      this.payload.length = len
      payload = this.payload
    }
    this.host.counters.outSegs++
    const ok = this.host.output.sendSegment(this.local, this.remote, seg, payload, this)
    if (!ok) this.host.counters.outputFailures++
    return ok
  }

  private sendAck(now: number): void {
    // After a timeout SND.NXT goes back to SND.UNA; a pure ACK must still
    // carry the next new sequence number, or the peer finds it below RCV.NXT,
    // unacceptable, and answers with an ACK of its own (BSD tcp_output uses
    // snd_max for the same reason). A pending zero-window probe byte is not
    // "sent" yet.
    const seq = this.persistAt === NONE ? this.sndMax : this.sndNxt
    this.transmit(seq, 0, FLAG_ACK, now)
  }

  /**
   * ACK an unacceptable segment. For segments without data (nor SYN/FIN) at
   * most once per 500 ms per connection: two ends that each find the other's
   * pure ACKs out of window would otherwise ping-pong ACKs forever (Linux's
   * tcp_oow_rate_limited / tcp_invalid_ratelimit; data segments are never
   * limited, "not likely part of an ACK loop").
   */
  private ackUnacceptable(segLen: number, now: number): void {
    if (segLen > 0) {
      this.ackNow = true
      return
    }
    if (now - this.lastOutOfWindowAckAt < OUT_OF_WINDOW_ACK_INTERVAL_MS) {
      this.host.counters.outOfWindowAcksSuppressed++
      return
    }
    this.lastOutOfWindowAckAt = now
    this.ackNow = true
  }

  /** RFC 5961 §7: challenge ACKs share a per-stack budget. */
  private sendChallengeAck(now: number): void {
    if (this.host.allowChallengeAck(now)) {
      this.host.counters.challengeAcks++
      this.sendAck(now)
    } else {
      this.host.counters.challengeAcksSuppressed++
    }
  }

  /**
   * Send what the windows, Nagle and sender SWS avoidance allow.
   * `extra` is the RFC 3042 limited-transmit allowance beyond cwnd.
   */
  private flush(now: number, extra: number): void {
    if (this.state < TcpState.Established || this.state === TcpState.FinWait2 || this.state === TcpState.TimeWait) return
    const dataStart = seqAdd(this.iss, 1)
    for (let guard = 0; guard < 100_000; guard++) {
      if (seqLt(this.sndNxt, this.sndUna)) this.sndNxt = this.sndUna
      const base = seqGt(this.sndUna, dataStart) ? this.sndUna : dataStart
      const offset = seqDiff(this.sndNxt, base)
      const unsent = this.sendBuffer.length - offset
      const finToSend = this.finQueued && this.sndNxt === this.finSeq
      if (unsent <= 0 && !finToSend) break
      const inFlight = seqDiff(this.sndNxt, this.sndUna)
      const window = Math.min(this.sndWnd, this.cc.cwnd + extra)
      const usable = window - inFlight
      const segMss = this.sndMss - this.sackOptionBytes()
      let len = Math.max(0, Math.min(unsent, segMss, usable))
      if (unsent > 0 && len === 0) {
        // RFC 9293 3.8.6.1: a zero window with nothing in flight needs the persist timer.
        if (this.sndWnd <= inFlight && inFlight === 0 && this.persistAt === NONE) {
          this.persistBackoff = 0
          this.armPersist(now)
        }
        break
      }
      if (len > 0 && len < segMss) {
        const allRemaining = len === unsent
        const nothingInFlight = inFlight === 0
        // Sender SWS avoidance (RFC 9293 3.8.6.2.1) and Nagle (RFC 9293 3.7.4,
        // RFC 896): send a short segment only when it carries all the queued
        // data and either nothing is unacknowledged or Nagle is off, or when it
        // is at least half the largest window the peer offered.
        // After shutdownWrite nothing more will be coalesced: the tail goes with the FIN (Linux pushes on close too).
        const nagleOk = allRemaining && (this.noDelay || nothingInFlight || this.finQueued)
        const halfWindow = len >= (this.maxSndWnd >> 1) && this.maxSndWnd > 0 && (this.noDelay || nothingInFlight)
        if (!nagleOk && !halfWindow) {
          if (nothingInFlight && this.persistAt === NONE && this.sndWnd < unsent) {
            // RFC 9293 3.8.6.2.1 "override timeout": probe with what fits rather than wait forever.
            this.persistBackoff = 0
            this.armPersist(now)
          }
          break
        }
      }
      const fin = this.finQueued && offset + len === this.sendBuffer.length && seqAdd(this.sndNxt, len) === this.finSeq
      let flags = FLAG_ACK
      if (fin) flags |= FLAG_FIN
      if (len > 0 && offset + len === this.sendBuffer.length) flags |= FLAG_PSH
      const retransmission = seqLt(this.sndNxt, this.sndMax)
      if (retransmission) this.host.counters.retransSegs++
      else if (!this.rttTiming && !this.tsEnabled && len > 0) {
        this.rttTiming = true
        this.rttSeq = this.sndNxt
        this.rttStart = now
      }
      if (this.flightSize === 0) this.unackedSince = now
      this.transmit(this.sndNxt, len, flags, now)
      this.sndNxt = seqAdd(this.sndNxt, len + (fin ? 1 : 0))
      this.sndMax = seqMax(this.sndMax, this.sndNxt)
      this.persistAt = NONE
      // RFC 6298 5.1: start the timer if it is not running.
      if (this.rtoAt === NONE) this.rtoAt = now + this.rto
      if (fin) break
    }
  }

  /** Retransmit one segment starting at seq (fast retransmit, partial ACK, SACK hole). */
  private retransmitAt(seq: number, maxLen: number, now: number): number {
    const dataStart = seqAdd(this.iss, 1)
    const base = seqGt(this.sndUna, dataStart) ? this.sndUna : dataStart
    const offset = seqDiff(seq, base)
    const available = Math.max(0, Math.min(this.sendBuffer.length - offset, seqDiff(this.sndMax, seq)))
    const len = Math.min(available, this.sndMss - this.sackOptionBytes(), maxLen)
    const fin = this.finQueued && seqAdd(seq, len) === this.finSeq && seqGt(this.sndMax, this.finSeq)
    if (len === 0 && !fin) return 0
    this.host.counters.retransSegs++
    this.transmit(seq, len, FLAG_ACK | (fin ? FLAG_FIN : 0), now)
    // Karn's rule: the timed segment may have been retransmitted.
    if (this.rttTiming && seqLe(seq, this.rttSeq) && seqLt(this.rttSeq, seqAdd(seq, len + 1))) this.rttTiming = false
    return len + (fin ? 1 : 0)
  }

  // ------------------------------------------------------------- input

  /**
   * A segment for this connection (any state but LISTEN/CLOSED). Its data is
   * payload[payloadOffset, payloadOffset + payloadLength), copied before return.
   */
  receive(seg: TcpSegment, payload: Uint8Array, now: number, payloadOffset = 0, payloadLength = payload.length - payloadOffset): void {
    this.lastReceivedAt = now
    if (this.keepAliveAt !== NONE) {
      this.keepAliveProbesSent = 0
      this.keepAliveAt = now + this.keepAlive.idleMs
    }
    if (this.state === TcpState.SynSent) {
      // Data on a SYN,ACK is not kept: the peer retransmits it after our ACK.
      this.receiveInSynSent(seg, now)
      return
    }
    this.receiveSynchronizedOrSynReceived(seg, payload, payloadOffset, payloadLength, now)
    if (this.state === TcpState.Closed) return
    if (this.isSynchronized()) this.flush(now, this.limitedTransmitAllowance())
    if (this.ackNow) this.sendAck(now)
    else if (this.bytesSinceAck > 0 && this.delayedAckAt === NONE) this.delayedAckAt = now + this.host.cfg.delayedAckMs
  }

  private limitedTransmitAllowance(): number {
    // RFC 3042 §2: on the first two duplicate ACKs send new data if "the
    // receiver's advertised window allows" and FlightSize <= cwnd + 2*SMSS.
    return !this.inRecovery && this.dupAcks > 0 && this.dupAcks < 3 ? this.dupAcks * this.sndMss : 0
  }

  /** RFC 9293 3.10.7.3, SYN-SENT STATE. */
  private receiveInSynSent(seg: TcpSegment, now: number): void {
    const flags = seg.flags
    let ackAcceptable = false
    if (flags & FLAG_ACK) {
      // "If SEG.ACK =< ISS or SEG.ACK > SND.NXT, send a reset (unless the RST
      // bit is set, if so drop the segment and return) <SEQ=SEG.ACK><CTL=RST>"
      if (seqLe(seg.ack, this.iss) || seqGt(seg.ack, this.sndMax)) {
        if (!(flags & FLAG_RST)) this.sendBareReset(seg.ack)
        return
      }
      ackAcceptable = true
    }
    if (flags & FLAG_RST) {
      // RFC 5961 §3.2 / RFC 9293: "If the ACK was acceptable, then signal to
      // the user 'error: connection reset', drop the segment, enter CLOSED
      // state" — for a connect() that is ECONNREFUSED. Without ACK: drop.
      if (ackAcceptable) {
        this.host.counters.attemptFails++
        this.finish('ECONNREFUSED', now)
      }
      return
    }
    if (!(flags & FLAG_SYN)) return
    this.irs = seg.seq
    this.rcvNxt = seqAdd(seg.seq, 1)
    // The peer was told our SYN's (unscaled) window.
    this.rcvAdvEdge = seqAdd(this.rcvNxt, Math.min(this.receiveBuffer.free, 65535))
    this.negotiateOptions(seg)
    if (seg.options.timestamp) {
      this.tsRecent = seg.options.timestamp[0]
      this.tsRecentAt = now
    }
    if (ackAcceptable) {
      // "If SND.UNA > ISS (our SYN has been ACKed), change the connection state to ESTABLISHED"
      this.sndUna = seg.ack
      this.sndWnd = seg.window // unscaled in a SYN
      this.sndWl1 = seg.seq
      this.sndWl2 = seg.ack
      this.maxSndWnd = this.sndWnd
      this.takeSynRttSample(seg, now)
      this.establish(now)
      this.host.counters.activeOpens++
      // "form an ACK segment <SEQ=SND.NXT><ACK=RCV.NXT><CTL=ACK> and send it"
      this.ackNow = true
      this.flush(now, 0)
      if (this.ackNow) this.sendAck(now)
      this.events.onConnected?.()
      return
    }
    // Simultaneous open: "Otherwise, enter SYN-RECEIVED, form a SYN,ACK segment <SEQ=ISS><ACK=RCV.NXT><CTL=SYN,ACK> and send it."
    this.state = TcpState.SynReceived
    this.sndWnd = seg.window
    this.sndWl1 = seg.seq
    this.maxSndWnd = this.sndWnd
    this.transmit(this.iss, 0, FLAG_SYN | FLAG_ACK, now)
    this.rtoAt = now + this.rto
  }

  private takeSynRttSample(seg: TcpSegment, now: number): void {
    if (this.tsEnabled && seg.options.timestamp && seg.options.timestamp[1] !== 0) {
      this.rttSample((Math.floor(now) + this.tsOffset - seg.options.timestamp[1]) >>> 0)
    } else if (this.rttTiming && this.retries === 0) {
      this.rttSample(now - this.rttStart)
    } else if (this.retries > 0 && !this.hasRttSample) {
      // RFC 6298 5.7: "If the timer expires awaiting the ACK of a SYN segment
      // and the TCP implementation is using an RTO less than 3 seconds, the
      // RTO MUST be re-initialized to 3 seconds when data transmission begins".
      this.rto = Math.min(this.host.cfg.maxRtoMs, 3000)
    }
    this.rttTiming = false
    this.retries = 0
  }

  private establish(now: number): void {
    this.state = TcpState.Established
    this.host.counters.currEstab++
    this.estabCounted = true
    this.rtoAt = NONE
    this.retries = 0
    this.cc.init(this.sndMss, now)
    this.armKeepAlive(now)
    if (this.finQueued) this.state = TcpState.FinWait1
  }

  /** Sequence-number acceptability (RFC 9293 3.10.7.4, "first check sequence number"). */
  private acceptable(seq: number, segLen: number): boolean {
    const wnd = seqDiff(this.rcvAdvEdge, this.rcvNxt)
    if (segLen === 0) {
      if (wnd <= 0) return seq === this.rcvNxt
      return seqInWindow(seq, this.rcvNxt, this.rcvAdvEdge)
    }
    if (wnd <= 0) return false
    const last = seqAdd(seq, segLen - 1)
    return seqInWindow(seq, this.rcvNxt, this.rcvAdvEdge) || seqInWindow(last, this.rcvNxt, this.rcvAdvEdge)
  }

  private receiveSynchronizedOrSynReceived(seg: TcpSegment, payload: Uint8Array, payloadOffset: number, payloadLength: number, now: number): void {
    const counters = this.host.counters
    const flags = seg.flags
    let dataLen = payloadLength
    let hasFin = (flags & FLAG_FIN) !== 0
    const ts = seg.options.timestamp

    // A retransmitted SYN while our SYN-ACK is unanswered: answer it again.
    if (this.state === TcpState.SynReceived && flags & FLAG_SYN && !(flags & FLAG_ACK) && seg.seq === this.irs) {
      this.transmit(this.iss, 0, FLAG_SYN | FLAG_ACK, now)
      counters.retransSegs++
      return
    }

    // RFC 7323 §5.3 PAWS: "If ... SEG.TSval < TS.Recent ... then the segment
    // is not acceptable ... an acknowledgment is sent in reply" (not for RST).
    if (this.tsEnabled && ts && !(flags & FLAG_RST) && seqLt(ts[0], this.tsRecent)) {
      // RFC 7323 §5.5: TS.Recent older than 24 days is invalid.
      if (now - this.tsRecentAt <= 24 * 24 * 3600 * 1000) {
        counters.pawsDrops++
        this.sendAck(now)
        return
      }
    }

    const segLen = dataLen + (flags & FLAG_SYN ? 1 : 0) + (hasFin ? 1 : 0)
    if (!this.acceptable(seg.seq, segLen)) {
      // RFC 9293: "If the RCV.WND is zero, no segments will be acceptable,
      // but special allowance should be made to accept valid ACKs, URGs, and RSTs."
      const zeroWindowAtEdge = seqDiff(this.rcvAdvEdge, this.rcvNxt) <= 0 && seg.seq === this.rcvNxt && !(flags & FLAG_SYN)
      if (!zeroWindowAtEdge) {
        counters.outOfWindowDrops++
        // "If an incoming segment is not acceptable, an acknowledgment should
        // be sent in reply (unless the RST bit is set, if so drop the segment and return)"
        if (!(flags & FLAG_RST)) {
          if (this.state === TcpState.TimeWait && hasFin) this.timeWaitAt = now + 2 * this.host.cfg.mslMs
          this.ackUnacceptable(segLen, now)
        }
        return
      }
      dataLen = 0
      hasFin = false
      this.ackNow = true
    }

    // Second: RST (RFC 5961 §3.2).
    if (flags & FLAG_RST) {
      if (this.state === TcpState.TimeWait) {
        // RFC 1337: "ignore RST segments in TIME-WAIT state".
        counters.rfc1337Ignored++
        return
      }
      if (seg.seq !== this.rcvNxt) {
        // "If the RST bit is set and the sequence number does not exactly
        // match the next expected sequence value, yet is within the current
        // receive window, TCP MUST send an acknowledgment (challenge ACK)".
        this.sendChallengeAck(now)
        return
      }
      this.onResetReceived(now)
      return
    }

    // Fourth: SYN in a synchronized state (RFC 5961 §4.2): "send a 'challenge
    // ACK' ... regardless of the sequence number" and drop.
    if (flags & FLAG_SYN) {
      if (this.state === TcpState.SynReceived && this.listenerToken !== null) {
        // RFC 9293: passive SYN-RECEIVED "return this connection to the LISTEN state".
        this.finish(null, now)
        return
      }
      this.sendChallengeAck(now)
      return
    }

    // Fifth: ACK.
    if (!(flags & FLAG_ACK)) return
    if (ts && this.tsEnabled && seqGe(ts[0], this.tsRecent) && seqLe(seg.seq, this.lastAckSent)) {
      // RFC 7323 §4.3: "If SEG.TSval >= TS.Recent and SEG.SEQ <= Last.ACK.sent then SEG.TSval is copied to TS.Recent".
      this.tsRecent = ts[0]
      this.tsRecentAt = now
    }
    if (this.state === TcpState.SynReceived) {
      // "If SND.UNA < SEG.ACK =< SND.NXT, then enter ESTABLISHED state ... If
      // the segment acknowledgment is not acceptable, form a reset segment <SEQ=SEG.ACK><CTL=RST>"
      if (!(seqLt(this.sndUna, seg.ack) && seqLe(seg.ack, this.sndMax))) {
        this.sendBareReset(seg.ack)
        return
      }
      this.sndUna = seg.ack
      this.sndWnd = seg.window * 2 ** this.sndWndShift
      this.sndWl1 = seg.seq
      this.sndWl2 = seg.ack
      this.maxSndWnd = Math.max(this.maxSndWnd, this.sndWnd)
      this.takeSynRttSample(seg, now)
      const passive = this.listenerToken !== null
      this.establish(now)
      if (passive) {
        this.host.counters.passiveOpens++
        this.host.connectionEstablished(this)
        this.listenerToken = null
      } else {
        this.host.counters.activeOpens++
        this.events.onConnected?.()
      }
      if ((this.state as TcpState) === TcpState.Closed) return
    } else if (!this.processAck(seg, dataLen, now)) {
      return
    }
    if (this.state === TcpState.Closed) return

    // Seventh: segment text.
    if (dataLen > 0) {
      if (this.state === TcpState.Established || this.state === TcpState.FinWait1 || this.state === TcpState.FinWait2) {
        this.receiveData(seg.seq, payload, payloadOffset, dataLen, now)
      } else {
        // CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: "This should not occur since
        // a FIN has been received from the remote side. Ignore the segment text."
        this.ackNow = true
      }
    }

    // An event handler may have aborted the connection meanwhile.
    if ((this.state as TcpState) === TcpState.Closed) return

    // Eighth: FIN.
    if (hasFin) {
      const finAt = seqAdd(seg.seq, dataLen)
      if (finAt === this.rcvNxt) this.processFin(now)
      else if (seqGt(finAt, this.rcvNxt) && seqDiff(finAt, this.rcvNxt) <= this.receiveBuffer.free) {
        this.peerFinPending = true
        this.peerFinSeq = finAt
      }
    }
  }

  private onResetReceived(now: number): void {
    const counters = this.host.counters
    switch (this.state) {
      case TcpState.SynReceived:
        // Passive: "return this connection to LISTEN"; active: "connection refused".
        counters.attemptFails++
        this.finish(this.listenerToken !== null ? null : 'ECONNREFUSED', now)
        return
      case TcpState.Established:
      case TcpState.FinWait1:
      case TcpState.FinWait2:
      case TcpState.CloseWait:
        counters.estabResets++
        this.finish('ECONNRESET', now)
        return
      default:
        // CLOSING, LAST-ACK: "enter the CLOSED state, delete the TCB, and return".
        this.finish(null, now)
    }
  }

  /** The ACK field in synchronized states. Returns false when the segment is dropped. */
  private processAck(seg: TcpSegment, dataLen: number, now: number): boolean {
    const ack = seg.ack
    // "If the ACK acks something not yet sent (SEG.ACK > SND.NXT) then send an ACK, drop the segment, and return."
    if (seqGt(ack, this.sndMax)) {
      this.ackNow = true
      return false
    }
    // RFC 5961 §5.2: acceptable only if "(SND.UNA - MAX.SND.WND) =< SEG.ACK";
    // otherwise a challenge ACK and drop.
    if (seqLt(ack, seqAdd(this.sndUna, -Math.max(this.maxSndWnd, 1)))) {
      this.sendChallengeAck(now)
      return false
    }
    if (this.state === TcpState.TimeWait) {
      // The only thing that can arrive is a retransmission of the remote FIN:
      // "Acknowledge it, and restart the 2 MSL timeout."
      if (seg.flags & FLAG_FIN) {
        this.ackNow = true
        this.timeWaitAt = now + 2 * this.host.cfg.mslMs
      }
      return false
    }
    const scaledWindow = seg.window * 2 ** this.sndWndShift
    const acked = seqDiff(ack, this.sndUna)
    if (this.sackEnabled && seg.options.sack) this.recordSack(seg.options.sack)
    if (acked > 0) {
      this.onNewAck(ack, acked, seg, now)
    } else if (
      acked === 0 &&
      dataLen === 0 &&
      !(seg.flags & (FLAG_SYN | FLAG_FIN)) &&
      scaledWindow === this.sndWnd &&
      // RFC 5681 §2 (a) "outstanding data" — a zero-window probe byte is not:
      // the answers to probes repeat the same ACK without signalling loss.
      scaledWindow > 0 &&
      seqGt(this.sndNxt, this.sndUna)
    ) {
      this.onDuplicateAck(now)
    }
    // "If SND.WL1 < SEG.SEQ or (SND.WL1 = SEG.SEQ and SND.WL2 =< SEG.ACK), set
    // SND.WND <- SEG.WND, set SND.WL1 <- SEG.SEQ, and set SND.WL2 <- SEG.ACK."
    if (seqLe(this.sndUna, ack) && (seqLt(this.sndWl1, seg.seq) || (this.sndWl1 === seg.seq && seqLe(this.sndWl2, ack)))) {
      const wasZero = this.sndWnd === 0
      this.sndWnd = scaledWindow
      this.sndWl1 = seg.seq
      this.sndWl2 = ack
      if (scaledWindow > this.maxSndWnd) this.maxSndWnd = scaledWindow
      if (scaledWindow > 0 && (wasZero || this.persistAt !== NONE)) {
        this.persistAt = NONE
        this.persistBackoff = 0
        this.persistProbes = 0
        // Data already "sent" as a probe beyond a closed window goes again now.
        if (seqGt(this.sndMax, this.sndNxt) && this.rtoAt === NONE) this.sndNxt = this.sndUna
      }
    }
    // RFC 9293 3.8.6.1: while the peer keeps answering probes the connection stays open.
    if (this.persistAt !== NONE || this.sndWnd === 0) this.persistProbes = 0
    return true
  }

  private onNewAck(ack: number, acked: number, seg: TcpSegment, now: number): void {
    const counters = this.host.counters
    // Bytes of data covered: SYN and FIN occupy sequence space but not the ring.
    let dataAcked = acked
    const finAcked = this.finQueued && seqGt(ack, this.finSeq)
    if (finAcked) dataAcked -= 1
    dataAcked = Math.min(dataAcked, this.sendBuffer.length)
    this.sendBuffer.discard(dataAcked)
    this.sndUna = ack
    if (seqLt(this.sndNxt, this.sndUna)) this.sndNxt = this.sndUna
    this.host.output.confirmReachable?.(this.local, this.remote)
    this.retries = 0
    this.persistProbes = 0
    this.softError = null
    this.dropSackedBelow(ack)

    // RTT measurement: RFC 7323 §4.1 RTTM from the echoed timestamp,
    // otherwise one timed segment at a time (Karn's rule: never a retransmitted one).
    const ts = seg.options.timestamp
    if (this.tsEnabled && ts && ts[1] !== 0) {
      this.rttSample((Math.floor(now) + this.tsOffset - ts[1]) >>> 0)
    } else if (this.rttTiming && seqGt(ack, this.rttSeq)) {
      this.rttTiming = false
      this.rttSample(now - this.rttStart)
    }

    const mss = this.sndMss
    if (this.inRecovery) {
      if (seqGe(ack, this.recover)) {
        // RFC 6582 §3.2 step 6: full acknowledgment.
        this.inRecovery = false
        this.cc.onRecoveryExit(this.flightSize, mss, now)
      } else {
        // Step 5: partial acknowledgment — "retransmit the first unacknowledged segment".
        counters.partialAcks++
        this.cc.onPartialAck(acked, mss, now)
        if (seqGe(this.sndUna, this.retransmitHigh) || !this.sackEnabled) {
          const sent = this.retransmitAt(this.sndUna, mss, now)
          this.retransmitHigh = seqMax(this.retransmitHigh, seqAdd(this.sndUna, sent))
        }
        this.fillSackHole(now)
        // "reset the retransmit timer" (only for the first partial ACK per RFC 6582 'Impatient' variant; we reset on each).
        this.rtoAt = now + this.rto
      }
    } else {
      this.cc.onAck(acked, mss, now)
    }
    this.dupAcks = 0

    // RFC 6298 5.2/5.3: all data acknowledged → stop the timer; else restart it.
    if (this.flightSize === 0) {
      this.rtoAt = NONE
      this.unackedSince = NONE
    } else if (!this.inRecovery) {
      this.rtoAt = now + this.rto
      this.unackedSince = now
    }

    if (finAcked) {
      switch (this.state) {
        case TcpState.FinWait1:
          // "if the FIN segment is now acknowledged, then enter FIN-WAIT-2"
          this.state = TcpState.FinWait2
          this.armKeepAlive(now)
          break
        case TcpState.Closing:
          this.enterTimeWait(now)
          return
        case TcpState.LastAck:
          this.finish(null, now)
          return
      }
    }
    if (this.wantWritable && this.sendBuffer.free > 0 && !this.finQueued) {
      this.wantWritable = false
      this.events.onWritable?.()
    }
  }

  private onDuplicateAck(now: number): void {
    const counters = this.host.counters
    const mss = this.sndMss
    this.dupAcks++
    if (this.inRecovery) {
      this.cc.onRecoveryDupAck(mss, now)
      this.fillSackHole(now)
      return
    }
    if (this.dupAcks === this.duplicateAckThreshold()) {
      // RFC 6582 §3.2 step 2: enter fast retransmit only if "the Cumulative
      // Acknowledgment field covers more than recover" (no second reduction for
      // losses of one window). We also accept equality, so losing the first
      // segment after `recover` does not need a timeout.
      if (seqGe(this.sndUna, this.recover)) {
        counters.fastRetransmits++
        this.recover = this.sndMax
        this.inRecovery = true
        this.cc.onFastRetransmit(this.flightSize, mss, now)
        const sent = this.retransmitAt(this.sndUna, mss, now)
        this.retransmitHigh = seqAdd(this.sndUna, sent)
        this.fillSackHole(now)
        this.rtoAt = now + this.rto
      }
    }
  }

  /**
   * Three duplicate ACKs (RFC 5681), or fewer when so little is outstanding
   * that three can never arrive: RFC 5827 early retransmit, "if the
   * connection does not have unsent data ... and oseg < 4 ... ER_thresh =
   * oseg - 1".
   */
  private duplicateAckThreshold(): number {
    const dataStart = seqAdd(this.iss, 1)
    const base = seqGt(this.sndUna, dataStart) ? this.sndUna : dataStart
    const unsent = this.sendBuffer.length - seqDiff(this.sndNxt, base)
    if (unsent > 0) return 3
    const outstandingSegments = Math.ceil(seqDiff(this.sndNxt, this.sndUna) / this.sndMss)
    return outstandingSegments < 4 ? Math.max(1, outstandingSegments - 1) : 3
  }

  // -------------------------------------------------------- SACK scoreboard

  private recordSack(blocks: [number, number][]): void {
    for (let b = 0; b < blocks.length; b++) {
      let start = blocks[b][0] >>> 0
      let end = blocks[b][1] >>> 0
      // RFC 2018 / RFC 5961: ignore blocks outside (SND.UNA, SND.MAX].
      if (!seqLt(start, end) || !seqGe(start, this.sndUna) || seqGt(end, this.sndMax)) continue
      // Merge into the sorted scoreboard (kept small: MAX_SACKED ranges).
      let i = 0
      while (i < this.sackedCount && seqLt(this.sackedEnd[i], start)) i++
      let j = i
      while (j < this.sackedCount && seqLe(this.sackedStart[j], end)) j++
      if (j > i) {
        if (seqLt(this.sackedStart[i], start)) start = this.sackedStart[i]
        if (seqGt(this.sackedEnd[j - 1], end)) end = this.sackedEnd[j - 1]
        const removed = j - i
        for (let k = j; k < this.sackedCount; k++) {
          this.sackedStart[k - removed] = this.sackedStart[k]
          this.sackedEnd[k - removed] = this.sackedEnd[k]
        }
        this.sackedCount -= removed
      }
      if (this.sackedCount === MAX_SACKED) {
        // Full: keep the lower ranges (holes near SND.UNA matter most).
        if (i >= MAX_SACKED) continue
        this.sackedCount--
      }
      for (let k = this.sackedCount; k > i; k--) {
        this.sackedStart[k] = this.sackedStart[k - 1]
        this.sackedEnd[k] = this.sackedEnd[k - 1]
      }
      this.sackedStart[i] = start
      this.sackedEnd[i] = end
      this.sackedCount++
    }
  }

  private dropSackedBelow(ack: number): void {
    let drop = 0
    while (drop < this.sackedCount && seqLe(this.sackedEnd[drop], ack)) drop++
    if (drop > 0) {
      for (let k = drop; k < this.sackedCount; k++) {
        this.sackedStart[k - drop] = this.sackedStart[k]
        this.sackedEnd[k - drop] = this.sackedEnd[k]
      }
      this.sackedCount -= drop
    }
    if (this.sackedCount > 0 && seqLt(this.sackedStart[0], ack)) this.sackedStart[0] = ack
  }

  /**
   * During recovery with SACK: retransmit the next hole below the highest
   * SACKed byte that this recovery has not retransmitted yet, at most one
   * segment per ACK (a conservative use of RFC 6675's NextSeg rule 1).
   */
  private fillSackHole(now: number): void {
    if (!this.sackEnabled || this.sackedCount === 0) return
    let cursor = seqMax(this.retransmitHigh, this.sndUna)
    for (let i = 0; i < this.sackedCount; i++) {
      const s = this.sackedStart[i]
      const e = this.sackedEnd[i]
      if (seqLt(cursor, s)) {
        const sent = this.retransmitAt(cursor, seqDiff(s, cursor), now)
        if (sent > 0) {
          this.host.counters.sackRetransmits++
          this.retransmitHigh = seqAdd(cursor, sent)
        }
        return
      }
      if (seqLt(cursor, e)) cursor = e
    }
  }

  // ------------------------------------------------------------- data

  private receiveData(seq: number, payload: Uint8Array, payloadOffset: number, dataLen: number, now: number): void {
    const counters = this.host.counters
    let skip = 0
    let rel = seqDiff(seq, this.rcvNxt)
    if (rel < 0) {
      skip = -rel
      rel = 0
    }
    let len = dataLen - skip
    if (len <= 0) {
      this.ackNow = true
      return
    }
    if (this.appClosed) {
      // New data for a socket the application closed: RST (see close()).
      counters.abortOnData++
      this.abort()
      return
    }
    if (dataLen > this.largestSegmentSeen) this.largestSegmentSeen = dataLen
    // Trim to the space behind the advertised edge (RFC 9293: "segments with
    // higher beginning sequence numbers ... should be held for later processing").
    const room = Math.min(this.receiveBuffer.free, Math.max(0, seqDiff(this.rcvAdvEdge, this.rcvNxt)))
    if (rel + len > room) len = room - rel
    if (len <= 0) {
      this.ackNow = true
      return
    }
    const hadHoles = this.reorder.count > 0
    if (!this.reorder.add(rel, rel + len)) {
      counters.reorderDrops++
      this.ackNow = true
      return
    }
    this.receiveBuffer.writeAt(rel, payload, payloadOffset + skip, len)
    const inOrder = this.reorder.takeFront()
    if (inOrder > 0) {
      this.receiveBuffer.commit(inOrder)
      this.rcvNxt = seqAdd(this.rcvNxt, inOrder)
      this.bytesSinceAck += inOrder
      if (this.peerFinPending && this.rcvNxt === this.peerFinSeq) {
        this.peerFinPending = false
        this.processFin(now)
      }
    }
    // RFC 5681 §4.2 / RFC 9293 3.8.6.3: ACK at once for out-of-order data and
    // for data that fills a hole; otherwise at least every second full-sized
    // segment, else within the delayed-ACK timeout.
    if (rel > 0 || hadHoles) this.ackNow = true
    else if (this.bytesSinceAck >= 2 * this.largestSegmentSeen) this.ackNow = true
    if (inOrder > 0) this.events.onReadable?.()
  }

  private processFin(now: number): void {
    if (this.peerFinReceived) {
      this.ackNow = true
      return
    }
    this.peerFinReceived = true
    // "advance RCV.NXT over the FIN, and send an acknowledgment for the FIN"
    this.rcvNxt = seqAdd(this.rcvNxt, 1)
    this.rcvAdvEdge = seqMax(this.rcvAdvEdge, this.rcvNxt)
    this.ackNow = true
    switch (this.state) {
      case TcpState.SynReceived:
      case TcpState.Established:
        this.state = TcpState.CloseWait
        break
      case TcpState.FinWait1:
        // "If our FIN has been ACKed ... enter TIME-WAIT; otherwise, enter the CLOSING state."
        if (seqGt(this.sndUna, this.finSeq)) {
          this.events.onPeerClosed?.()
          this.enterTimeWait(now)
          return
        }
        this.state = TcpState.Closing
        break
      case TcpState.FinWait2:
        this.events.onPeerClosed?.()
        this.enterTimeWait(now)
        return
    }
    this.events.onPeerClosed?.()
  }

  private enterTimeWait(now: number): void {
    this.sendAck(now)
    this.uncountEstablished()
    this.state = TcpState.TimeWait
    this.rtoAt = NONE
    this.persistAt = NONE
    this.keepAliveAt = NONE
    this.delayedAckAt = NONE
    // RFC 9293: "Start the time-wait timer" of 2 MSL; mslMs has a floor, so never zero.
    this.timeWaitAt = now + 2 * this.host.cfg.mslMs
    this.announceClosed()
  }

  private uncountEstablished(): void {
    if (!this.estabCounted) return
    this.estabCounted = false
    this.host.counters.currEstab--
  }

  /** Whether a SYN for this TIME-WAIT 4-tuple may reopen it (RFC 6191 / RFC 1122 4.2.2.13). */
  acceptsReopen(seg: TcpSegment): boolean {
    if (this.state !== TcpState.TimeWait) return false
    const ts = seg.options.timestamp
    if (this.tsEnabled && ts) return seqGt(ts[0], this.tsRecent)
    return seqGt(seg.seq, this.rcvNxt)
  }

  private sendBareReset(seq: number): void {
    const s = this.host.scratch.segment
    s.srcPort = this.localPort
    s.dstPort = this.remotePort
    s.seq = seq
    s.ack = 0
    s.flags = FLAG_RST
    s.window = 0
    s.urgentPointer = 0
    const o = s.options
    o.mss = undefined
    o.windowScale = undefined
    o.sackPermitted = undefined
    o.sack = undefined
    o.timestamp = undefined
    this.host.counters.outSegs++
    this.host.counters.outRsts++
    this.host.output.sendSegment(this.local, this.remote, s, null, this)
  }

  private rttSample(sample: number): void {
    const cfg = this.host.cfg
    const r = Math.max(sample, 0)
    if (!this.hasRttSample) {
      // RFC 6298 2.2: "SRTT <- R, RTTVAR <- R/2, RTO <- SRTT + max (G, K*RTTVAR)"
      this.srtt = r
      this.rttvar = r / 2
      this.hasRttSample = true
    } else {
      // RFC 6298 2.3, alpha = 1/8, beta = 1/4.
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r)
      this.srtt = 0.875 * this.srtt + 0.125 * r
    }
    // 2.4: "Whenever RTO is computed, if it is less than 1 second, then the
    // RTO SHOULD be rounded up to 1 second" — configurable floor (minRtoMs, Linux uses 200 ms).
    this.rto = Math.min(cfg.maxRtoMs, Math.max(cfg.minRtoMs, this.srtt + Math.max(1, 4 * this.rttvar)))
  }

  /** Ends the connection: CLOSED, timers off, removed from the layer, events delivered. */
  finish(code: TcpErrorCode | null, _now?: number): void {
    if (this.state === TcpState.Closed) return
    this.uncountEstablished()
    this.state = TcpState.Closed
    this.rtoAt = NONE
    this.delayedAckAt = NONE
    this.persistAt = NONE
    this.keepAliveAt = NONE
    this.timeWaitAt = NONE
    this.reorder.clear()
    this.host.connectionClosed(this)
    if (code !== null) {
      this.error = code
      this.events.onError?.(code)
    }
    this.announceClosed()
  }

  private announceClosed(): void {
    if (this.closedEventSent) return
    this.closedEventSent = true
    this.events.onClosed?.()
  }
}
