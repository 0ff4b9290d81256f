// net.Socket and net.Server over a flowstack TCP connection. The shapes,
// events and errors follow Node's lib/net.js so that node:http, node:tls and
// undici run over these sockets unchanged.
import { randomInt } from 'node:crypto'
import { EventEmitter } from 'node:events'
import { lookup as dnsLookup } from 'node:dns'
import { isIP } from 'node:net'
import { Duplex } from 'node:stream'
import { systemError, type StackSystemError } from '../../common/errors.js'
import { formatIpAddress, parseIpAddress, type IpAddress } from '../wire/address.js'
import { TcpState, type TcpConnection } from '../core/tcp/connection.js'
import type { TcpListener } from '../core/tcp/layer.js'
import { TcpError, type TcpConnectionEvents, type TcpErrorCode } from '../core/tcp/types.js'
import type { StackShell } from './shell.js'

/** The IANA dynamic port range (RFC 6335), also what listen(0) picks from. */
const EPHEMERAL_FIRST = 49152
const EPHEMERAL_LAST = 65535

/** Largest chunk pushed to the readable side at once. */
const READ_CHUNK = 64 * 1024

export interface SocketAddressInfo {
  address: string
  family: 'IPv4' | 'IPv6'
  port: number
}

export interface StackSocketOptions {
  allowHalfOpen?: boolean
  /** Node's `net.Socket` option names, accepted for compatibility. */
  readable?: boolean
  writable?: boolean
  noDelay?: boolean
  keepAlive?: boolean
  keepAliveInitialDelay?: number
}

export interface StackConnectOptions extends StackSocketOptions {
  port: number | string
  host?: string
  localAddress?: string
  localPort?: number
  family?: 0 | 4 | 6
  timeout?: number
  lookup?: typeof dnsLookup
}

const MESSAGES: Record<TcpErrorCode, string> = {
  ECONNREFUSED: 'connect ECONNREFUSED',
  ECONNRESET: 'read ECONNRESET',
  ETIMEDOUT: 'connect ETIMEDOUT',
  EPIPE: 'write EPIPE',
  EHOSTUNREACH: 'connect EHOSTUNREACH',
  ENETUNREACH: 'connect ENETUNREACH',
}

function familyName(address: IpAddress): 'IPv4' | 'IPv6' {
  return address.version === 4 ? 'IPv4' : 'IPv6'
}

function toPort(value: number | string | undefined, what: string): number {
  const port = typeof value === 'string' && value.trim() !== '' ? Number(value) : value
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535) {
    const err = new RangeError(`${what} should be >= 0 and < 65536. Received ${String(value)}.`) as RangeError & { code: string }
    err.code = 'ERR_SOCKET_BAD_PORT'
    throw err
  }
  return port
}

/**
 * A `net.Socket`-compatible Duplex over a TCP connection of a flowstack
 * stack. Backpressure is the TCP window: when the reader stops, the receive
 * buffer fills and the advertised window closes; when the send buffer is
 * full, write() returns false until the peer acknowledges.
 */
export class StackSocket extends Duplex {
  connecting = false
  bytesRead = 0
  private written = 0
  private conn: TcpConnection | null = null
  private readonly shell: StackShell
  private pendingWrite: { data: Uint8Array; offset: number; callback: (err?: Error | null) => void } | null = null
  private pendingFinal: ((err?: Error | null) => void) | null = null
  private readWanted = false
  private peerEnded = false
  private eventsScheduled = false
  private connectedPending = false
  private errorPending: TcpErrorCode | null = null
  private closedPending = false
  private hadError = false
  private refed = true
  private holdsRef = false
  private idleTimeout = 0
  private idleTimer: NodeJS.Timeout | null = null
  private noDelay = false
  private keepAliveSetting: { enabled: boolean; initialDelay: number } | null = null
  private addressCache: { local: SocketAddressInfo | null; remote: SocketAddressInfo | null } = { local: null, remote: null }
  private connectAddress: string | undefined
  private connectPort: number | undefined

  constructor(shell: StackShell, options: StackSocketOptions = {}) {
    super({ allowHalfOpen: options.allowHalfOpen ?? false, emitClose: false, decodeStrings: true, autoDestroy: true })
    this.shell = shell
    if (options.noDelay) this.noDelay = true
    if (options.keepAlive) this.keepAliveSetting = { enabled: true, initialDelay: options.keepAliveInitialDelay ?? 0 }
  }

  // ------------------------------------------------------------ attach

  /** @internal Wraps an accepted (ESTABLISHED) connection. */
  attachAccepted(conn: TcpConnection): void {
    this.attach(conn)
    this.takeRef()
    this.applySocketOptions()
    if (conn.readableBytes > 0) this.scheduleEvents()
    if (conn.state !== TcpState.Established && conn.state !== TcpState.CloseWait) this.scheduleEvents()
  }

  private attach(conn: TcpConnection): void {
    this.conn = conn
    conn.events = this.tcpEvents
    this.addressCache = { local: null, remote: null }
  }

  private readonly tcpEvents: TcpConnectionEvents = {
    onConnected: () => {
      this.connectedPending = true
      this.scheduleEvents()
    },
    onReadable: () => this.scheduleEvents(),
    onWritable: () => this.scheduleEvents(),
    onPeerClosed: () => this.scheduleEvents(),
    onError: (code) => {
      this.errorPending = code
      this.scheduleEvents()
    },
    onClosed: () => {
      this.closedPending = true
      this.scheduleEvents()
    },
  }

  /**
   * Core callbacks arrive in the middle of packet processing; everything they
   * cause (reads, pushes, user callbacks that write again) runs on the next
   * tick instead, so the core is never re-entered.
   */
  private scheduleEvents(): void {
    if (this.eventsScheduled) return
    this.eventsScheduled = true
    process.nextTick(this.runEvents)
  }

  private readonly runEvents = (): void => {
    this.eventsScheduled = false
    const conn = this.conn
    if (conn === null || this.destroyed) return
    if (this.connectedPending) {
      this.connectedPending = false
      this.connecting = false
      this.applySocketOptions()
      this.refreshIdle()
      this.emit('connect')
      this.emit('ready')
      // Writes and end() queued while connecting go out now.
      this.continueWrite()
    }
    if (this.errorPending !== null) {
      const code = this.errorPending
      this.errorPending = null
      // Data that arrived before the RST is read before the error, as a
      // kernel socket hands it over (libuv reads it, then gets ECONNRESET):
      // a TLS alert followed by a reset in the same batch must still reach
      // the TLS layer.
      this.pumpReadable()
      this.destroy(this.errorFor(code))
      return
    }
    this.pumpReadable()
    this.continueWrite()
    if (this.closedPending && conn.readableBytes === 0) {
      this.closedPending = false
      // Closed without an error: the peer's FIN arrived, or we are done.
      if (!this.peerEnded) this.pushEndOfStream()
      if (this.pendingWrite !== null) {
        const { callback } = this.pendingWrite
        this.pendingWrite = null
        callback(this.errorFor('EPIPE'))
      }
      if (this.pendingFinal !== null) {
        const cb = this.pendingFinal
        this.pendingFinal = null
        cb()
      }
      // autoDestroy closes the socket once the buffered data is consumed and
      // our side finished, as with net.Socket.
    }
  }

  private errorFor(code: TcpErrorCode): StackSystemError {
    const syscall = code === 'EPIPE' ? 'write' : code === 'ECONNRESET' ? 'read' : 'connect'
    const remote = this.conn ? formatIpAddress(this.conn.remote) : this.connectAddress
    const port = this.conn ? this.conn.remotePort : this.connectPort
    if (syscall === 'connect') return systemError(code, { syscall, address: remote, port })
    return systemError(code, { syscall, message: MESSAGES[code] })
  }

  // ------------------------------------------------------------ reading

  private pumpReadable(): void {
    const conn = this.conn
    if (conn === null) return
    while (this.readWanted && conn.readableBytes > 0) {
      const chunk = Buffer.allocUnsafe(Math.min(conn.readableBytes, READ_CHUNK))
      const n = conn.read(chunk)
      this.bytesRead += n
      this.refreshIdle()
      this.readWanted = this.push(n === chunk.length ? chunk : chunk.subarray(0, n))
    }
    if (conn.readableBytes === 0 && this.peerFinished(conn) && !this.peerEnded) this.pushEndOfStream()
    this.shell.kick() // a read may have opened the window
  }

  /**
   * The peer's FIN as end-of-stream. Duplex then ends our side too unless
   * allowHalfOpen, as net.Socket does. When data is still buffered, EOF
   * follows on a later turn, as libuv delivers UV_EOF in its own read
   * callback: consumers such as undici finish (and destroy) on the data and
   * do not expect 'end' in the same tick.
   */
  private pushEndOfStream(): void {
    this.peerEnded = true
    // push(null) then read(0), as net.Socket does on EOF: with nothing
    // buffered, 'end' comes even if nobody reads (and, unless allowHalfOpen,
    // our side ends and the socket closes and lets its ref go).
    if (this.readableLength === 0) {
      this.push(null)
      this.read(0)
      return
    }
    setImmediate(() => {
      if (this.destroyed) return
      this.push(null)
      this.read(0)
    })
  }

  private peerFinished(conn: TcpConnection): boolean {
    switch (conn.state) {
      case TcpState.CloseWait:
      case TcpState.LastAck:
      case TcpState.Closing:
      case TcpState.TimeWait:
        return true
      case TcpState.Closed:
        return this.closedPending || conn.error === null
      default:
        return false
    }
  }

  override _read(): void {
    this.readWanted = true
    if (this.conn !== null && !this.connecting) this.pumpReadable()
  }

  // ------------------------------------------------------------ writing

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.pendingWrite = { data: chunk, offset: 0, callback }
    if (!this.connecting) this.continueWrite()
  }

  private continueWrite(): void {
    const conn = this.conn
    if (conn === null || this.connecting) return
    const pending = this.pendingWrite
    if (pending !== null) {
      let n: number
      try {
        // `more`: the segment leaves at the shell's kick (once per microtask),
        // so the writes of one turn (node:http's header, then body) share it.
        n = conn.send(pending.data, pending.offset, pending.data.length - pending.offset, true)
      } catch (err) {
        this.pendingWrite = null
        pending.callback(err instanceof TcpError ? this.errorFor('EPIPE') : (err as Error))
        return
      }
      if (n > 0) {
        this.written += n
        this.refreshIdle()
        this.shell.kick()
      }
      pending.offset += n
      if (pending.offset < pending.data.length) return // onWritable continues
      this.pendingWrite = null
      pending.callback()
    }
    if (this.pendingFinal !== null && this.pendingWrite === null) {
      const cb = this.pendingFinal
      this.pendingFinal = null
      conn.shutdownWrite()
      this.shell.kick()
      cb()
    }
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.pendingFinal = callback
    if (!this.connecting) this.continueWrite()
  }

  /** As net.Socket: bytes handed to TCP plus those still queued in the stream (write() counts at once). */
  get bytesWritten(): number {
    return this.written + this.writableLength - (this.pendingWrite?.offset ?? 0)
  }

  // ------------------------------------------------------------ lifecycle

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const conn = this.conn
    this.clearIdle()
    if (conn !== null && conn.state !== TcpState.Closed) {
      // Like close(2), which is what Node's destroy(err) does too: unread
      // data means RST, otherwise FIN after what was written; data arriving
      // later is answered with RST (TcpConnection.close). An error passed to
      // destroy() is this side's business, not the peer's.
      if (conn.readableBytes > 0) this.abortAfterQueued(conn)
      else conn.close()
      this.shell.kick()
    }
    let lingering = false
    if (conn !== null) {
      // Keep the addresses readable after destroy, as net.Socket does.
      this.address()
      this.remoteInfo()
      // A kernel finishes a closed socket's data and FIN after the process
      // exits; our stack lives in the process, so a socket that still has
      // them to send keeps its ref until the connection is done with them.
      lingering = conn.state !== TcpState.Closed && conn.state !== TcpState.TimeWait
      conn.events = lingering ? { onClosed: () => this.dropRef() } : {}
    }
    this.connecting = false
    this.hadError = err !== null
    if (!lingering) this.dropRef()
    callback(err)
    process.nextTick(() => this.emit('close', this.hadError))
  }

  /** Sends RST and destroys the socket (net.Socket#resetAndDestroy). */
  resetAndDestroy(): this {
    const conn = this.conn
    if (conn !== null && conn.state !== TcpState.Closed) {
      this.abortAfterQueued(conn)
      this.shell.kick()
    }
    this.destroy()
    return this
  }

  /**
   * RST, after what write() already accepted: a net.Socket's writes reach
   * the kernel (and the wire) at once, so a TLS alert written just before
   * destroy() is seen by the peer before the reset. Ours wait for the
   * shell's kick (send(..., more)), so push them first.
   */
  private abortAfterQueued(conn: TcpConnection): void {
    if (conn.pushQueued) conn.pushPending(this.shell.clock.now())
    conn.abort()
  }

  destroySoon(): void {
    if (this.writable) this.end()
    if (this.writableFinished) this.destroy()
    else this.once('finish', () => this.destroy())
  }

  // ------------------------------------------------------------ connect

  /** @internal */
  startConnect(options: StackConnectOptions, listener?: () => void): this {
    if (listener) this.once('connect', listener)
    const port = toPort(options.port, 'Port')
    this.connectPort = port
    const host = options.host ?? 'localhost'
    this.connecting = true
    this.takeRef()
    if (options.timeout !== undefined) this.setTimeout(options.timeout)
    if (options.noDelay) this.noDelay = true
    if (options.keepAlive) this.keepAliveSetting = { enabled: true, initialDelay: options.keepAliveInitialDelay ?? 0 }
    const literal = parseIpAddress(host)
    if (literal !== null) {
      process.nextTick(() => this.connectTo(literal, port, options))
      return this
    }
    const lookup = options.lookup ?? dnsLookup
    this.emit('lookup-start')
    lookup(host, { family: options.family ?? 0 }, (err, address, family) => {
      this.emit('lookup', err, address, family, host)
      if (this.destroyed) return
      if (err) {
        this.destroy(err)
        return
      }
      const parsed = parseIpAddress(String(address))
      if (parsed === null) {
        this.destroy(systemError('EINVAL', { syscall: 'connect', address: String(address), port }))
        return
      }
      this.connectTo(parsed, port, options)
    })
    return this
  }

  private connectTo(remote: IpAddress, port: number, options: StackConnectOptions): void {
    if (this.destroyed) return
    this.connectAddress = formatIpAddress(remote)
    const core = this.shell.core
    let local: IpAddress | null
    if (options.localAddress !== undefined) {
      local = parseIpAddress(options.localAddress)
      if (local === null || !core.isLocalAddress(local) || local.version !== remote.version) {
        this.destroy(systemError('EADDRNOTAVAIL', { syscall: 'bind', address: options.localAddress, port: options.localPort ?? 0 }))
        return
      }
    } else {
      local = core.selectSource(remote)
    }
    // No source address, or no route (an off-link address without a gateway,
    // 127.0.0.1 on a stack without it): connect(2) fails at once with
    // ENETUNREACH; SYNs the IP layer drops as no-route would time out instead.
    if (local === null || !core.canReach(remote)) {
      this.destroy(systemError('ENETUNREACH', { syscall: 'connect', address: this.connectAddress, port }))
      return
    }
    try {
      const conn = this.shell.tcp.layer.connect({
        local,
        remote,
        remotePort: port,
        localPort: options.localPort,
        noDelay: this.noDelay,
        events: this.tcpEvents,
      })
      this.attach(conn)
      this.shell.kick()
    } catch (err) {
      const code = err instanceof TcpError ? err.code : 'EINVAL'
      this.destroy(systemError(code, { syscall: code === 'EADDRINUSE' ? 'bind' : 'connect', address: this.connectAddress, port }))
    }
  }

  /** `socket.connect(...)` on an unconnected socket, like net.Socket#connect. */
  connect(options: StackConnectOptions, listener?: () => void): this
  connect(port: number, host?: string, listener?: () => void): this
  connect(a: StackConnectOptions | number, b?: string | (() => void), c?: () => void): this {
    if (typeof a === 'object') return this.startConnect(a, typeof b === 'function' ? b : undefined)
    if (typeof b === 'function') return this.startConnect({ port: a }, b)
    return this.startConnect({ port: a, host: b }, c)
  }

  // ------------------------------------------------------------ options

  private applySocketOptions(): void {
    const conn = this.conn
    if (conn === null) return
    if (this.noDelay) conn.setNoDelay(true)
    if (this.keepAliveSetting !== null) {
      const { enabled, initialDelay } = this.keepAliveSetting
      conn.setKeepAlive(enabled, initialDelay > 0 ? { idleMs: initialDelay } : {})
    }
  }

  setNoDelay(noDelay = true): this {
    this.noDelay = noDelay
    if (this.conn !== null && !this.connecting) {
      this.conn.setNoDelay(noDelay)
      this.shell.kick()
    }
    return this
  }

  setKeepAlive(enable = false, initialDelay = 0): this {
    this.keepAliveSetting = { enabled: enable, initialDelay: Math.max(0, Math.floor(initialDelay)) }
    if (this.conn !== null && !this.connecting) this.applySocketOptions()
    return this
  }

  /** Emits 'timeout' after `timeout` ms without activity, like net.Socket#setTimeout. */
  setTimeout(timeout: number, callback?: () => void): this {
    this.idleTimeout = timeout
    if (callback) {
      if (timeout === 0) this.removeListener('timeout', callback)
      else this.once('timeout', callback)
    }
    this.refreshIdle()
    return this
  }

  get timeout(): number | undefined {
    return this.idleTimeout === 0 ? undefined : this.idleTimeout
  }

  private refreshIdle(): void {
    if (this.idleTimeout <= 0 || this.destroyed) {
      this.clearIdle()
      return
    }
    if (this.idleTimer !== null) {
      this.idleTimer.refresh()
      return
    }
    this.idleTimer = setTimeout(() => {
      this.idleTimer = null
      this.emit('timeout')
    }, this.idleTimeout)
    if (!this.refed) this.idleTimer.unref()
  }

  private clearIdle(): void {
    if (this.idleTimer !== null) {
      clearTimeout(this.idleTimer)
      this.idleTimer = null
    }
  }

  private takeRef(): void {
    if (this.refed && !this.holdsRef) {
      this.holdsRef = true
      this.shell.ref()
    }
  }

  private dropRef(): void {
    if (this.holdsRef) {
      this.holdsRef = false
      this.shell.unref()
    }
  }

  ref(): this {
    this.refed = true
    if (!this.destroyed && (this.conn !== null || this.connecting)) this.takeRef()
    this.idleTimer?.ref()
    return this
  }

  unref(): this {
    this.refed = false
    this.dropRef()
    this.idleTimer?.unref()
    return this
  }

  // ------------------------------------------------------------ addresses

  address(): SocketAddressInfo | Record<string, never> {
    if (this.addressCache.local === null && this.conn !== null) {
      this.addressCache.local = { address: formatIpAddress(this.conn.local), family: familyName(this.conn.local), port: this.conn.localPort }
    }
    return this.addressCache.local ?? {}
  }

  private remoteInfo(): SocketAddressInfo | null {
    if (this.addressCache.remote === null && this.conn !== null) {
      this.addressCache.remote = { address: formatIpAddress(this.conn.remote), family: familyName(this.conn.remote), port: this.conn.remotePort }
    }
    return this.addressCache.remote
  }

  get localAddress(): string | undefined {
    return (this.address() as Partial<SocketAddressInfo>).address
  }
  get localPort(): number | undefined {
    return (this.address() as Partial<SocketAddressInfo>).port
  }
  get localFamily(): string | undefined {
    return (this.address() as Partial<SocketAddressInfo>).family
  }
  get remoteAddress(): string | undefined {
    return this.remoteInfo()?.address
  }
  get remotePort(): number | undefined {
    return this.remoteInfo()?.port
  }
  get remoteFamily(): string | undefined {
    return this.remoteInfo()?.family
  }

  get pending(): boolean {
    return this.conn === null || this.connecting
  }

  get readyState(): 'opening' | 'open' | 'readOnly' | 'writeOnly' | 'closed' {
    if (this.connecting) return 'opening'
    if (this.readable && this.writable) return 'open'
    if (this.readable && !this.writable) return 'readOnly'
    if (!this.readable && this.writable) return 'writeOnly'
    return 'closed'
  }

  /** The TCP state of the underlying connection, for diagnostics. */
  get tcpState(): string {
    return this.conn?.stateName ?? 'CLOSED'
  }

  /** Read-only: the connection's congestion window in bytes (0 before connect); used by TLS record sizing. */
  get tcpCongestionWindow(): number {
    return this.conn?.cc.cwnd ?? 0
  }

  /** Read-only: the connection's effective send MSS in bytes (0 before connect). */
  get tcpSendMss(): number {
    return this.conn?.sndMss ?? 0
  }

  /** Read-only: the connection's current retransmission timeout in ms (0 before connect). */
  get tcpRetransmitTimeout(): number {
    return this.conn?.rto ?? 0
  }
}

export interface StackServerOptions {
  allowHalfOpen?: boolean
  noDelay?: boolean
  keepAlive?: boolean
  keepAliveInitialDelay?: number
  pauseOnConnect?: boolean
}

export interface ListenOptions {
  port?: number | string
  host?: string
  backlog?: number
  ipv6Only?: boolean
}

/** A `net.Server`-compatible listener on a flowstack stack. */
export class StackServer extends EventEmitter {
  maxConnections = Infinity
  private readonly shell: StackShell
  private readonly options: StackServerOptions
  private listener: TcpListener | null = null
  private readonly sockets = new Set<StackSocket>()
  private closing = false
  private refed = true
  private holdsRef = false
  private boundAddress: SocketAddressInfo | null = null

  constructor(shell: StackShell, options: StackServerOptions = {}, connectionListener?: (socket: StackSocket) => void) {
    super()
    this.shell = shell
    this.options = options
    if (connectionListener) this.on('connection', connectionListener)
  }

  get listening(): boolean {
    return this.listener !== null
  }

  listen(port?: number, host?: string, backlog?: number, callback?: () => void): this
  listen(port?: number, host?: string, callback?: () => void): this
  listen(port?: number, callback?: () => void): this
  listen(options: ListenOptions, callback?: () => void): this
  listen(...args: unknown[]): this {
    const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as () => void) : undefined
    let options: ListenOptions
    if (typeof args[0] === 'object' && args[0] !== null) options = args[0] as ListenOptions
    else options = { port: args[0] as number | undefined, host: typeof args[1] === 'string' ? args[1] : undefined, backlog: typeof args[2] === 'number' ? args[2] : typeof args[1] === 'number' ? args[1] : undefined }
    if (callback) this.once('listening', callback)
    if (this.listener !== null) {
      const err = new Error('Listen method has been called more than once without closing.') as Error & { code: string }
      err.code = 'ERR_SERVER_ALREADY_LISTEN'
      throw err
    }
    const requested = toPort(options.port ?? 0, 'options.port')
    const host = options.host
    let local: IpAddress | null = null
    if (host !== undefined && host !== '' && host !== '0.0.0.0' && host !== '::') {
      local = parseIpAddress(host)
      if (local === null || !this.shell.core.isLocalAddress(local)) {
        process.nextTick(() => this.emit('error', systemError('EADDRNOTAVAIL', { syscall: 'listen', address: host, port: requested })))
        return this
      }
    }
    const port = requested === 0 ? this.pickPort(local) : requested
    if (port < 0) {
      // As on Linux when no ephemeral port is left for bind(0).
      process.nextTick(() => this.emit('error', systemError('EADDRINUSE', { syscall: 'listen', address: host ?? '::', port: 0 })))
      return this
    }
    try {
      this.listener = this.shell.tcp.layer.listen(local, port, options.backlog ?? 511, (conn) => this.accept(conn))
    } catch (err) {
      const code = err instanceof TcpError ? err.code : 'EINVAL'
      process.nextTick(() => this.emit('error', systemError(code, { syscall: 'listen', address: host ?? '::', port })))
      return this
    }
    // Listening again after close(), while its old connections drain: new
    // ones are accepted (as net.Server does), and the old close() never ends.
    this.closing = false
    const anyFamily = host !== undefined && isIP(host) === 4 ? 'IPv4' : 'IPv6'
    this.boundAddress = local !== null ? { address: formatIpAddress(local), family: familyName(local), port } : { address: host === '0.0.0.0' ? '0.0.0.0' : '::', family: anyFamily, port }
    if (this.refed) this.takeRef()
    process.nextTick(() => this.emit('listening'))
    return this
  }

  /**
   * A free port for listen(0): from a random point of the ephemeral range,
   * the first one no listener holds; -1 when the range is exhausted.
   */
  private pickPort(local: IpAddress | null): number {
    const layer = this.shell.tcp.layer
    const first = randomInt(EPHEMERAL_FIRST, EPHEMERAL_LAST + 1)
    const span = EPHEMERAL_LAST - EPHEMERAL_FIRST + 1
    for (let i = 0; i < span; i++) {
      const port = EPHEMERAL_FIRST + ((first - EPHEMERAL_FIRST + i) % span)
      try {
        layer.closeListener(layer.listen(local, port, 1, () => {}))
        return port
      } catch {
        // in use: try the next
      }
    }
    return -1
  }


  private accept(conn: TcpConnection): void {
    if (this.closing) {
      conn.abort()
      this.shell.kick()
      return
    }
    if (this.sockets.size >= this.maxConnections) {
      const info = { localAddress: formatIpAddress(conn.local), localPort: conn.localPort, localFamily: familyName(conn.local), remoteAddress: formatIpAddress(conn.remote), remotePort: conn.remotePort, remoteFamily: familyName(conn.remote) }
      conn.abort()
      this.shell.kick()
      process.nextTick(() => this.emit('drop', info))
      return
    }
    const socket = new StackSocket(this.shell, {
      allowHalfOpen: this.options.allowHalfOpen,
      noDelay: this.options.noDelay,
      keepAlive: this.options.keepAlive,
      keepAliveInitialDelay: this.options.keepAliveInitialDelay,
    })
    socket.attachAccepted(conn)
    this.sockets.add(socket)
    socket.once('close', () => {
      this.sockets.delete(socket)
      this.maybeClosed()
    })
    if (this.options.pauseOnConnect) socket.pause()
    process.nextTick(() => this.emit('connection', socket))
  }

  address(): SocketAddressInfo | null {
    return this.listener !== null ? this.boundAddress : null
  }

  close(callback?: (err?: Error) => void): this {
    if (callback) {
      if (this.listener === null && !this.closing) {
        const err = new Error('Server is not running.') as Error & { code: string }
        err.code = 'ERR_SERVER_NOT_RUNNING'
        process.nextTick(() => callback(err))
      } else {
        this.once('close', () => callback())
      }
    }
    if (this.listener !== null) {
      this.shell.tcp.layer.closeListener(this.listener)
      this.listener = null
      this.shell.kick()
    }
    this.closing = true
    this.dropRef()
    this.maybeClosed()
    return this
  }

  private maybeClosed(): void {
    if (this.closing && this.listener === null && this.sockets.size === 0) {
      this.closing = false
      process.nextTick(() => this.emit('close'))
    }
  }

  getConnections(callback: (err: Error | null, count: number) => void): this {
    const count = this.sockets.size
    process.nextTick(() => callback(null, count))
    return this
  }

  private takeRef(): void {
    if (!this.holdsRef) {
      this.holdsRef = true
      this.shell.ref()
    }
  }

  private dropRef(): void {
    if (this.holdsRef) {
      this.holdsRef = false
      this.shell.unref()
    }
  }

  ref(): this {
    this.refed = true
    if (this.listener !== null) this.takeRef()
    return this
  }

  unref(): this {
    this.refed = false
    this.dropRef()
    return this
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.listener === null) return
    await new Promise<void>((resolve) => this.close(() => resolve()))
  }
}

/** `stack.net`: the subset of node:net that runs over a flowstack stack. */
export interface StackNet {
  createServer(connectionListener?: (socket: StackSocket) => void): StackServer
  createServer(options: StackServerOptions, connectionListener?: (socket: StackSocket) => void): StackServer
  connect(options: StackConnectOptions, connectListener?: () => void): StackSocket
  connect(port: number, host?: string, connectListener?: () => void): StackSocket
  createConnection(options: StackConnectOptions, connectListener?: () => void): StackSocket
  createConnection(port: number, host?: string, connectListener?: () => void): StackSocket
  Socket: new (options?: StackSocketOptions) => StackSocket
  Server: new (options?: StackServerOptions, connectionListener?: (socket: StackSocket) => void) => StackServer
  isIP: typeof isIP
}

export function createStackNet(shell: StackShell): StackNet {
  function createServer(a?: StackServerOptions | ((socket: StackSocket) => void), b?: (socket: StackSocket) => void): StackServer {
    if (typeof a === 'function') return new StackServer(shell, {}, a)
    return new StackServer(shell, a ?? {}, b)
  }
  function connect(a: StackConnectOptions | number, b?: string | (() => void), c?: () => void): StackSocket {
    const options = typeof a === 'object' ? a : {}
    const socket = new StackSocket(shell, options)
    if (typeof a === 'object') return socket.connect(a, typeof b === 'function' ? b : undefined)
    if (typeof b === 'function') return socket.connect(a, undefined, b)
    return socket.connect(a, b, c)
  }
  class BoundSocket extends StackSocket {
    constructor(options?: StackSocketOptions) {
      super(shell, options)
    }
  }
  class BoundServer extends StackServer {
    constructor(options?: StackServerOptions, connectionListener?: (socket: StackSocket) => void) {
      super(shell, options, connectionListener)
    }
  }
  return {
    createServer: createServer as StackNet['createServer'],
    connect: connect as StackNet['connect'],
    createConnection: connect as StackNet['createConnection'],
    Socket: BoundSocket,
    Server: BoundServer,
    isIP,
  }
}
