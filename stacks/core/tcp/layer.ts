import { resolveConfig, resolveKeepAlive, type ResolvedTcpConfig } from './config.js'
import { OutgoingScratch, TcpConnection, TcpState, type ConnectionHost } from './connection.js'
import { seqAdd } from './seq.js'
import { SipKey, sipHash24 } from './siphash.js'
import { TimerHeap } from './timer-heap.js'
import {
  FLAG_ACK,
  FLAG_FIN,
  FLAG_RST,
  FLAG_SYN,
  TcpError,
  cloneIpAddress,
  ipAddressEqual,
  newCounters,
  type ConnectOptions,
  type IpAddress,
  type TcpConfig,
  type TcpCounters,
  type TcpErrorCode,
  type TcpOutput,
  type TcpSegment,
} from './types.js'

/** A listening endpoint (the LISTEN state lives here, not in a TcpConnection). */
export class TcpListener {
  readonly local: IpAddress | null
  readonly port: number
  backlog: number
  /** Children still in SYN-RECEIVED. */
  pending = 0
  closed = false
  onConnection: (conn: TcpConnection) => void
  constructor(local: IpAddress | null, port: number, backlog: number, onConnection: (conn: TcpConnection) => void) {
    this.local = local
    this.port = port
    this.backlog = backlog
    this.onConnection = onConnection
  }
}

/** The 4-tuple table key: both ports in one number; addresses compared in the bucket. */
function portKey(localPort: number, remotePort: number): number {
  return localPort * 65536 + remotePort
}

/**
 * The TCP layer of one stack: demultiplexing (exact 4-tuple, then a listener
 * on the exact local address, then one on any address), listen/connect,
 * timers, RST for closed ports, ISNs and ephemeral ports. Pure: time comes as
 * arguments or from the injected clock, output goes to TcpOutput.
 */
export class TcpLayer implements ConnectionHost {
  readonly cfg: ResolvedTcpConfig
  readonly counters: TcpCounters = newCounters()
  readonly output: TcpOutput
  readonly scratch = new OutgoingScratch()
  private readonly connections = new Map<number, TcpConnection[]>()
  private readonly listeners = new Map<number, TcpListener[]>()
  private count = 0
  private readonly timers = new TimerHeap<TcpConnection>()
  /** Connections with data queued by send(..., more), pushed at the next poll. */
  private readonly pushes: TcpConnection[] = []
  private readonly isnKey: SipKey
  private readonly portKeyHash: SipKey
  private readonly hashInput = new Uint8Array(40)
  private nextEphemeral: number
  // RFC 5961 §7 challenge-ACK budget: a token bucket refilled every second.
  private challengeTokens: number
  private challengeWindowStart = -Infinity

  constructor(config: TcpConfig) {
    this.cfg = resolveConfig(config)
    this.output = this.cfg.output
    this.isnKey = new SipKey(this.cfg.secret)
    // A second key for ports, derived so ISNs and ports do not reveal each other.
    const derived = this.cfg.secret.slice()
    for (let i = 0; i < 16; i++) derived[i] ^= 0x5c
    this.portKeyHash = new SipKey(derived)
    this.nextEphemeral = this.cfg.random() >>> 0
    this.challengeTokens = this.cfg.challengeAckLimit
  }

  /** Connections in the table (SYN-SENT … TIME-WAIT). */
  get connectionCount(): number {
    return this.count
  }

  get listenerCount(): number {
    let n = 0
    for (const list of this.listeners.values()) n += list.length
    return n
  }

  /** All connections, for diagnostics (`flowstack flows`). */
  *allConnections(): IterableIterator<TcpConnection> {
    for (const list of this.connections.values()) yield* list
  }

  // ------------------------------------------------------------ user API

  listen(local: IpAddress | null, port: number, backlog: number, onConnection: (conn: TcpConnection) => void): TcpListener {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TcpError('ERR_SOCKET_BAD_PORT', `port ${port} is not in 1..65535`)
    const existing = this.listeners.get(port)
    if (existing) {
      for (const l of existing) {
        if (l.local === null || local === null || ipAddressEqual(l.local, local)) {
          throw new TcpError('EADDRINUSE', `address already in use: port ${port}`)
        }
      }
    }
    const listener = new TcpListener(local ? cloneIpAddress(local) : null, port, Math.max(1, backlog), onConnection)
    if (existing) existing.push(listener)
    else this.listeners.set(port, [listener])
    return listener
  }

  /** Stops listening; children still in SYN-RECEIVED are reset. */
  closeListener(listener: TcpListener): void {
    if (listener.closed) return
    listener.closed = true
    const list = this.listeners.get(listener.port)
    if (list) {
      const i = list.indexOf(listener)
      if (i >= 0) list.splice(i, 1)
      if (list.length === 0) this.listeners.delete(listener.port)
    }
    if (listener.pending > 0) {
      for (const conn of [...this.allConnections()]) {
        if (conn.listenerToken === listener) conn.abort()
      }
    }
  }

  /** Active open. The SYN leaves before this returns. */
  connect(options: ConnectOptions): TcpConnection {
    const now = this.cfg.clock()
    const { local, remote, remotePort } = options
    if (!Number.isInteger(remotePort) || remotePort < 1 || remotePort > 65535) {
      throw new TcpError('ERR_SOCKET_BAD_PORT', `remote port ${remotePort} is not in 1..65535`)
    }
    if (local.version !== remote.version) throw new TcpError('EAFNOSUPPORT', 'local and remote address families differ')
    let localPort = options.localPort ?? 0
    if (localPort === 0) {
      localPort = this.pickEphemeralPort(local, remote, remotePort)
    } else if (this.lookup(local, localPort, remote, remotePort)) {
      throw new TcpError('EADDRINUSE', `4-tuple in use: local port ${localPort}`)
    }
    const iss = this.initialSequenceNumber(local, localPort, remote, remotePort, now)
    const conn = new TcpConnection(this, cloneIpAddress(local), localPort, cloneIpAddress(remote), remotePort, iss, now)
    if (options.noDelay) conn.noDelay = true
    if (options.keepAlive) conn.keepAlive = resolveKeepAlive(conn.keepAlive, options.keepAlive)
    if (options.events) conn.events = options.events
    this.insert(conn)
    conn.openActive(now)
    this.reschedule(conn)
    return conn
  }

  // ------------------------------------------------------------ input

  /**
   * A segment addressed to us: `src`/`dst` are the IP source (remote) and
   * destination (local). Checksums were checked by the caller. The addresses
   * and segment may be reused scratch objects: nothing keeps them. The data
   * is payload[payloadOffset, payloadOffset + payloadLength) (default: all of it).
   */
  input(src: IpAddress, dst: IpAddress, seg: TcpSegment, payload: Uint8Array, now: number, payloadOffset = 0, payloadLength = payload.length - payloadOffset): void {
    this.counters.inSegs++
    if (seg.srcPort === 0 || seg.dstPort === 0) {
      // Port 0 is reserved (RFC 6335 §6): never a valid endpoint.
      this.counters.inErrs++
      return
    }
    const conn = this.lookup(dst, seg.dstPort, src, seg.srcPort)
    if (conn) {
      if (
        conn.state === TcpState.TimeWait &&
        seg.flags & FLAG_SYN &&
        !(seg.flags & FLAG_ACK) &&
        conn.acceptsReopen(seg) &&
        this.findListener(dst, seg.dstPort) !== undefined
      ) {
        // RFC 1122 4.2.2.13 / RFC 6191: a new SYN with a higher sequence number
        // (or timestamp) may end TIME-WAIT early and open a new incarnation.
        this.counters.timeWaitReused++
        conn.finish(null, now)
      } else {
        conn.receive(seg, payload, now, payloadOffset, payloadLength)
        this.reschedule(conn)
        return
      }
    }
    const listener = this.findListener(dst, seg.dstPort)
    if (listener) {
      this.inputListen(listener, src, dst, seg, now)
      return
    }
    this.replyClosed(src, dst, seg, payloadLength)
  }

  /** RFC 9293 3.10.7.2, LISTEN STATE. */
  private inputListen(listener: TcpListener, src: IpAddress, dst: IpAddress, seg: TcpSegment, now: number): void {
    const flags = seg.flags
    // "First, check for a RST: An incoming RST segment could not be valid ... it should be ignored."
    if (flags & FLAG_RST) return
    // "Second, check for an ACK: ... form a reset segment <SEQ=SEG.ACK><CTL=RST>"
    if (flags & FLAG_ACK) {
      this.sendReset(dst, src, seg.dstPort, seg.srcPort, seg.ack, 0, false)
      return
    }
    if (!(flags & FLAG_SYN)) return
    if (listener.pending >= listener.backlog) {
      // A full queue drops the SYN; the peer retries (Linux counts ListenOverflows).
      this.counters.listenOverflows++
      return
    }
    const iss = this.initialSequenceNumber(dst, seg.dstPort, src, seg.srcPort, now)
    const conn = new TcpConnection(this, cloneIpAddress(dst), seg.dstPort, cloneIpAddress(src), seg.srcPort, iss, now)
    conn.listenerToken = listener
    listener.pending++
    this.insert(conn)
    // Data on a SYN is not kept (`payload` is ignored): the peer retransmits it after the handshake.
    conn.openPassive(seg, now)
    this.reschedule(conn)
  }

  /**
   * RFC 9293 3.10.7.1, CLOSED: "If the ACK bit is off, sequence number zero is
   * used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. If the ACK bit is on,
   * <SEQ=SEG.ACK><CTL=RST>". An incoming RST is discarded.
   */
  private replyClosed(src: IpAddress, dst: IpAddress, seg: TcpSegment, payloadLength: number): void {
    if (seg.flags & FLAG_RST) return
    if (seg.flags & FLAG_ACK) {
      this.sendReset(dst, src, seg.dstPort, seg.srcPort, seg.ack, 0, false)
    } else {
      const segLen = payloadLength + (seg.flags & FLAG_SYN ? 1 : 0) + (seg.flags & FLAG_FIN ? 1 : 0)
      this.sendReset(dst, src, seg.dstPort, seg.srcPort, 0, seqAdd(seg.seq, segLen), true)
    }
  }

  private sendReset(local: IpAddress, remote: IpAddress, localPort: number, remotePort: number, seq: number, ack: number, withAck: boolean): void {
    const s = this.scratch.segment
    s.srcPort = localPort
    s.dstPort = remotePort
    s.seq = seq >>> 0
    s.ack = withAck ? ack >>> 0 : 0
    s.flags = FLAG_RST | (withAck ? FLAG_ACK : 0)
    s.window = 0
    s.urgentPointer = 0
    const o = s.options
    o.mss = undefined
    o.windowScale = undefined
    o.sackPermitted = undefined
    o.sack = undefined
    o.timestamp = undefined
    this.counters.outSegs++
    this.counters.outRsts++
    if (!this.output.sendSegment(local, remote, s, null)) this.counters.outputFailures++
  }

  /** An ICMP error about a segment we sent (quoted ports as in our header). */
  icmpError(local: IpAddress, localPort: number, remote: IpAddress, remotePort: number, kind: 'packet-too-big' | 'hard' | 'soft', code: TcpErrorCode, mtu: number, now: number): void {
    const conn = this.lookup(local, localPort, remote, remotePort)
    if (!conn) return
    if (kind === 'packet-too-big') conn.updatePathMtu(mtu, now)
    else conn.icmpError(code, kind === 'hard', now)
  }

  // ------------------------------------------------------------ timers

  /** Pushes data queued with send(..., more), then runs every timer due at `now`. */
  poll(now: number): void {
    const pushes = this.pushes
    // Bounded by the list as it stands: a push never queues another.
    for (let i = 0, n = pushes.length; i < n; i++) {
      const conn = pushes[i]
      if (conn.pushQueued && conn.state !== TcpState.Closed) {
        conn.pushPending(now)
        this.reschedule(conn)
      }
      conn.pushQueued = false
    }
    pushes.length = 0
    const heap = this.timers
    for (let guard = heap.size + 1; guard > 0 && heap.peekTime() <= now; guard--) {
      const at = heap.peekTime()
      const conn = heap.peekItem()!
      heap.pop()
      // Stale: the connection has rescheduled (earlier) or is closed.
      if (conn.scheduledAt !== at || conn.state === TcpState.Closed) continue
      conn.scheduledAt = Infinity
      if (conn.nextDeadline() <= now) conn.poll(now)
      this.reschedule(conn)
    }
  }

  /**
   * The time (ms) poll() should next run, Infinity when no timer is armed.
   * It may be earlier than the real deadline (a timer pushed later since):
   * polling then is harmless.
   */
  nextTimeout(): number {
    // Queued pushes are due at once (any time in the past will do).
    if (this.pushes.length > 0) return 0
    const heap = this.timers
    while (heap.size > 0) {
      const conn = heap.peekItem()!
      if (conn.scheduledAt === heap.peekTime() && conn.state !== TcpState.Closed) return heap.peekTime()
      heap.pop()
    }
    return Infinity
  }

  /**
   * Keeps the heap entry of a connection no later than its earliest timer.
   * Only a deadline moving EARLIER needs a new entry: a later one is found
   * by the spurious wake-up of the existing entry.
   */
  pushLater(conn: TcpConnection): void {
    this.pushes.push(conn)
  }

  reschedule(conn: TcpConnection): void {
    const d = conn.nextDeadline()
    if (d < conn.scheduledAt && conn.state !== TcpState.Closed) {
      conn.scheduledAt = d
      this.timers.push(d, conn)
    }
  }

  // ------------------------------------------------------------ host hooks

  allowChallengeAck(now: number): boolean {
    if (now - this.challengeWindowStart >= 1000) {
      this.challengeWindowStart = now
      this.challengeTokens = this.cfg.challengeAckLimit
    }
    if (this.challengeTokens <= 0) return false
    this.challengeTokens--
    return true
  }

  connectionClosed(conn: TcpConnection): void {
    const key = portKey(conn.localPort, conn.remotePort)
    const list = this.connections.get(key)
    if (list) {
      const i = list.indexOf(conn)
      if (i >= 0) {
        list.splice(i, 1)
        this.count--
      }
      if (list.length === 0) this.connections.delete(key)
    }
    const listener = conn.listenerToken as TcpListener | null
    if (listener) {
      listener.pending--
      conn.listenerToken = null
    }
  }

  connectionEstablished(conn: TcpConnection): void {
    const listener = conn.listenerToken as TcpListener
    listener.pending--
    conn.listenerToken = null
    if (listener.closed) {
      conn.abort()
      return
    }
    listener.onConnection(conn)
  }

  // ------------------------------------------------------------ tables

  lookup(local: IpAddress, localPort: number, remote: IpAddress, remotePort: number): TcpConnection | undefined {
    const list = this.connections.get(portKey(localPort, remotePort))
    if (!list) return undefined
    for (let i = 0; i < list.length; i++) {
      const c = list[i]
      if (ipAddressEqual(c.remote, remote) && ipAddressEqual(c.local, local)) return c
    }
    return undefined
  }

  private findListener(local: IpAddress, port: number): TcpListener | undefined {
    const list = this.listeners.get(port)
    if (!list) return undefined
    let any: TcpListener | undefined
    for (let i = 0; i < list.length; i++) {
      const l = list[i]
      if (l.local === null) {
        if (any === undefined) any = l
      } else if (ipAddressEqual(l.local, local)) {
        return l
      }
    }
    return any
  }

  private insert(conn: TcpConnection): void {
    const key = portKey(conn.localPort, conn.remotePort)
    const list = this.connections.get(key)
    if (list) list.push(conn)
    else this.connections.set(key, [conn])
    this.count++
  }

  private writeTuple(local: IpAddress, localPort: number, remote: IpAddress, remotePort: number): number {
    const b = this.hashInput
    let n = 0
    const put = (a: IpAddress): void => {
      if (a.version === 4) {
        b[n++] = a.v4 >>> 24
        b[n++] = (a.v4 >>> 16) & 0xff
        b[n++] = (a.v4 >>> 8) & 0xff
        b[n++] = a.v4 & 0xff
      } else {
        b.set(a.v6, n)
        n += 16
      }
    }
    put(local)
    put(remote)
    b[n++] = localPort >>> 8
    b[n++] = localPort & 0xff
    b[n++] = remotePort >>> 8
    b[n++] = remotePort & 0xff
    return n
  }

  /**
   * RFC 6528 §3: "ISN = M + F(localip, localport, remoteip, remoteport, secretkey)
   * where M is the 4 microsecond timer", F here SipHash-2-4 keyed with the stack secret.
   */
  initialSequenceNumber(local: IpAddress, localPort: number, remote: IpAddress, remotePort: number, now: number): number {
    const length = this.writeTuple(local, localPort, remote, remotePort)
    const f = sipHash24(this.isnKey, this.hashInput, length)
    const m = Math.floor(now * 250) % 4294967296
    return (m + f) >>> 0
  }

  /**
   * RFC 6056 §3.3.3, Algorithm 3 ("Simple Hash-Based Port Selection"):
   * port = min + (next_ephemeral + F(local, remote, remote port, secret)) % num,
   * trying successive ports until a free 4-tuple (that is not a listener's port).
   */
  private pickEphemeralPort(local: IpAddress, remote: IpAddress, remotePort: number): number {
    const min = this.cfg.ephemeralPortMin
    const num = this.cfg.ephemeralPortMax - min + 1
    const length = this.writeTuple(local, 0, remote, remotePort)
    const offset = sipHash24(this.portKeyHash, this.hashInput, length)
    for (let count = num; count > 0; count--) {
      const port = min + ((this.nextEphemeral + offset) >>> 0) % num
      this.nextEphemeral = (this.nextEphemeral + 1) >>> 0
      if (this.listeners.has(port)) continue
      if (!this.lookup(local, port, remote, remotePort)) return port
    }
    throw new TcpError('EADDRNOTAVAIL', 'no free ephemeral port for this destination')
  }
}
