import type { IpAddress } from '../contracts.js'
import type { CongestionControlFactory } from './congestion/types.js'

export type { IpAddress }

// Flag bits and options as the wire layer defines them (RFC 9293 §3.1).
export { TCP_FIN as FLAG_FIN, TCP_SYN as FLAG_SYN, TCP_RST as FLAG_RST, TCP_PSH as FLAG_PSH, TCP_ACK as FLAG_ACK, TCP_URG as FLAG_URG } from '../../wire/tcp.js'
export type { TcpOptions } from '../../wire/tcp.js'
import type { TcpOptions } from '../../wire/tcp.js'

/**
 * A parsed segment header: structurally a subset of the wire layer's
 * TcpRepr, so a TcpRepr can be passed directly. The payload travels
 * separately as a view.
 */
export interface TcpSegment {
  srcPort: number
  dstPort: number
  seq: number
  ack: number
  flags: number
  window: number
  urgentPointer: number
  options: TcpOptions
}

/** Per-connection state an output may keep (see TcpOutput.sendSegment). */
export interface SegmentOwner {
  outputState: unknown
}

/** Payload of an outgoing segment: copied by the output, straight from the send ring. */
export interface TcpPayload {
  readonly length: number
  copyTo(dst: Uint8Array, offset: number): void
}

/**
 * Where segments go. The adapter to the IP layer (transport.ts) builds the
 * header with the wire layer's emitTcp; tests record segments. `segment` and
 * `payload` are reused objects valid only during the call.
 */
export interface TcpOutput {
  /**
   * Returns false when the segment could not leave (no route, no buffer): it
   * counts as lost. `owner` is the connection sending (null for resets the
   * layer sends on behalf of no connection): an output may cache per
   * connection state in `owner.outputState` (header templates).
   */
  sendSegment(local: IpAddress, remote: IpAddress, segment: TcpSegment, payload: TcpPayload | null, owner?: SegmentOwner | null): boolean
  /**
   * Optional: an ACK of new data arrived from remote, which proves the path
   * works (RFC 4861 7.3.1 upper-layer reachability confirmation; Linux's
   * dst_confirm), so the next hop stays REACHABLE without NUD probes.
   */
  confirmReachable?(local: IpAddress, remote: IpAddress): void
  /** Path MTU (IP packet size) towards remote. */
  pathMtu(local: IpAddress, remote: IpAddress): number
}

export type TcpErrorCode = 'ECONNREFUSED' | 'ECONNRESET' | 'ETIMEDOUT' | 'EPIPE' | 'EHOSTUNREACH' | 'ENETUNREACH'

/** Callbacks a connection's owner (the socket facade) installs. All optional. */
export interface TcpConnectionEvents {
  /** Three-way handshake done (active open). Passive opens are announced by the listener instead. */
  onConnected?(): void
  /** In-order bytes are available to read(). */
  onReadable?(): void
  /** Send-buffer space became free after send() had accepted less than offered. */
  onWritable?(): void
  /** The peer's FIN arrived and every byte before it has been queued for reading. */
  onPeerClosed?(): void
  /** Fatal error; `onClosed` follows. */
  onError?(code: TcpErrorCode): void
  /** The connection is finished for its user (CLOSED, or TIME-WAIT where only the layer still holds it). */
  onClosed?(): void
}

export interface KeepAliveOptions {
  enabled: boolean
  /** Idle time before the first probe (ms). */
  idleMs: number
  intervalMs: number
  /** Unanswered probes before ETIMEDOUT. */
  count: number
}

export interface TcpConfig {
  /** 16 random bytes: the RFC 6528 / RFC 6056 secret of this stack. */
  secret: Uint8Array
  /** Random unsigned 32-bit integers. */
  random: () => number
  /** The injected clock (ms) used by user calls (send, read, connect ...); input/poll get `now` explicitly. */
  clock: () => number
  output: TcpOutput
  /** Maximum segment lifetime; TIME-WAIT lasts 2*MSL. Default 30 000 ms. */
  mslMs?: number
  sendBufferSize?: number
  receiveBufferSize?: number
  /** Delayed-ACK timeout; at most 200 (RFC 9293 3.8.6.3 "MUST be less than 0.5 seconds", RFC 5681 200 ms). Default 40. */
  delayedAckMs?: number
  initialRtoMs?: number
  minRtoMs?: number
  maxRtoMs?: number
  /** SYN (or SYN-ACK) retransmissions before ETIMEDOUT. Default 6. */
  synRetries?: number
  /** Data retransmissions before ETIMEDOUT. Default 15 (Linux tcp_retries2). */
  maxRetransmits?: number
  /** RFC 5482-style user timeout: unacknowledged data older than this → ETIMEDOUT. 0 = off. */
  userTimeoutMs?: number
  keepAlive?: Partial<KeepAliveOptions>
  /** RFC 5961 §7 challenge ACKs per second, per stack. Default 1000. */
  challengeAckLimit?: number
  windowScaling?: boolean
  timestamps?: boolean
  sack?: boolean
  congestionControl?: CongestionControlFactory
  /** Initial congestion window in segments for the default NewReno; 0 or absent = RFC 6928 (10, bounded by 14 600 bytes). */
  initialWindow?: number
  /** Caps the MSS we announce and the segments we send, like TCP_MAXSEG; 0 or absent = from the path MTU. */
  mss?: number
  /** setNoDelay's value for new connections (accepted and connected). Default false: Nagle on. */
  noDelay?: boolean
  ephemeralPortMin?: number
  ephemeralPortMax?: number
  /** Out-of-order ranges held per connection. Default 32. */
  maxReorderRanges?: number
}

export interface ConnectOptions {
  local: IpAddress
  remote: IpAddress
  remotePort: number
  /** 0 or absent: an ephemeral port (RFC 6056). */
  localPort?: number
  noDelay?: boolean
  keepAlive?: Partial<KeepAliveOptions>
  events?: TcpConnectionEvents
}

/** netstat -s "Tcp:" and "TcpExt:" style counters. */
export interface TcpCounters {
  activeOpens: number
  passiveOpens: number
  attemptFails: number
  estabResets: number
  currEstab: number
  inSegs: number
  outSegs: number
  retransSegs: number
  inErrs: number
  outRsts: number
  /** Connections reset because data arrived after the application closed them (Linux TCPAbortOnData). */
  abortOnData: number
  listenOverflows: number
  challengeAcks: number
  challengeAcksSuppressed: number
  pawsDrops: number
  outOfWindowDrops: number
  outOfWindowAcksSuppressed: number
  reorderDrops: number
  rtoTimeouts: number
  fastRetransmits: number
  partialAcks: number
  sackRetransmits: number
  delayedAcks: number
  persistProbes: number
  keepAliveProbes: number
  timeWaitReused: number
  rfc1337Ignored: number
  outputFailures: number
}

export function newCounters(): TcpCounters {
  return {
    activeOpens: 0,
    passiveOpens: 0,
    attemptFails: 0,
    estabResets: 0,
    currEstab: 0,
    inSegs: 0,
    outSegs: 0,
    retransSegs: 0,
    inErrs: 0,
    outRsts: 0,
    abortOnData: 0,
    listenOverflows: 0,
    challengeAcks: 0,
    challengeAcksSuppressed: 0,
    pawsDrops: 0,
    outOfWindowDrops: 0,
    outOfWindowAcksSuppressed: 0,
    reorderDrops: 0,
    rtoTimeouts: 0,
    fastRetransmits: 0,
    partialAcks: 0,
    sackRetransmits: 0,
    delayedAcks: 0,
    persistProbes: 0,
    keepAliveProbes: 0,
    timeWaitReused: 0,
    rfc1337Ignored: 0,
    outputFailures: 0,
  }
}

export function ipAddressEqual(a: IpAddress, b: IpAddress): boolean {
  if (a.version === 4) return b.version === 4 && a.v4 === b.v4
  if (b.version !== 6) return false
  const x = a.v6
  const y = b.v6
  for (let i = 0; i < 16; i++) if (x[i] !== y[i]) return false
  return true
}

export function cloneIpAddress(a: IpAddress): IpAddress {
  return a.version === 4 ? { version: 4, v4: a.v4 } : { version: 6, v6: a.v6.slice() }
}

/** A core-level error with a stable code (the socket facade turns it into a Node-shaped error). */
export class TcpError extends Error {
  readonly code: string
  constructor(code: string, message: string) {
    super(message)
    this.name = 'TcpError'
    this.code = code
  }
}
