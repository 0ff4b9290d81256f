// TLS inside the instance, over its user-space TCP (DESIGN.md §4):
// `stack.tls` and `stack.https` shaped like node:tls and node:https, with the
// instance's identity and policy (TlsDefaults) as defaults. Node's TLSSocket
// runs over a StackSocket (wrapped as a stream, not a kernel handle), so
// verification, ALPN, SNI and error codes are Node's own.
import { withDefaultAgent } from './agent-args.js'
import { constants as cryptoConstants, randomBytes } from 'node:crypto'
import { channel } from 'node:diagnostics_channel'
import { createWriteStream, type WriteStream } from 'node:fs'
import type * as http from 'node:http'
import * as httpsModule from 'node:https'
import { isIP } from 'node:net'
import type { Duplex } from 'node:stream'
import * as tls from 'node:tls'
import type { StackNet, StackServer, StackSocket } from './net.js'
import type { TlsDefaults } from './tls-config.js'
import { attachRecordSizing, type RecordSizer } from './tls-records.js'

export { loadTlsDefaults, TlsConfigError } from './tls-config.js'
export type { TlsDefaults, TlsConfigLike, TlsConfigProblem, TlsIdentity, TlsSniIdentity, TlsMinVersion, ClientCertPolicyName } from './tls-config.js'
export { RecordSizer, TLS_MAX_FRAGMENT, TLS_MIN_FRAGMENT } from './tls-records.js'

export interface StackTlsConnectOptions extends tls.ConnectionOptions {
  /** Size TLS records to the TCP connection (default true). */
  recordSizing?: boolean
  /** Local address of the TCP connection (as net.connect's). */
  localAddress?: string
  /** Keep the TLS socket writable after the peer ended (default false, as node:tls). */
  allowHalfOpen?: boolean
}

export interface StackTlsServerOptions extends tls.TlsOptions {
  recordSizing?: boolean
}

export type KeyLogListener = (line: Buffer, socket: tls.TLSSocket) => void

export interface StackTls {
  /** The instance's defaults these helpers start from. */
  readonly defaults: TlsDefaults
  createServer(listener?: (socket: tls.TLSSocket) => void): tls.Server
  createServer(options: StackTlsServerOptions, listener?: (socket: tls.TLSSocket) => void): tls.Server
  connect(options: StackTlsConnectOptions, listener?: () => void): tls.TLSSocket
  connect(port: number, host?: string, options?: StackTlsConnectOptions, listener?: () => void): tls.TLSSocket
  /** node:tls helpers, for code that expects them next to connect/createServer. */
  createSecureContext: typeof tls.createSecureContext
  checkServerIdentity: typeof tls.checkServerIdentity
  TLSSocket: typeof tls.TLSSocket
  /** Every NSS key log line of this instance's TLS connections (the runtime's capture uses it). */
  onKeyLog(listener: KeyLogListener): () => void
  /** The record sizer of a socket made here, for diagnostics and tests. */
  recordSizer(socket: tls.TLSSocket): RecordSizer | undefined
  /** @internal used by stack.fetch: a TLS connection for undici's connector. */
  connectForDispatcher(options: { hostname: string; port: string | number; servername?: string | null }, callback: (err: Error | null, socket: Duplex | null) => void): void
  /** @internal node:tls server options from the instance's defaults. */
  serverOptions(): tls.TlsOptions
  /** @internal gives a node tls.Server (or https.Server) the stack's listen, SNI certificates, ticket rotation, record sizing and key log. */
  adoptServer<T extends tls.Server>(server: T, options: { recordSizing?: boolean; SNICallback?: unknown }): T
  /** Stops ticket rotation timers and closes the key log file. */
  close(): Promise<void>
}

export interface StackHttps {
  Agent: new (options?: httpsModule.AgentOptions) => httpsModule.Agent
  globalAgent: httpsModule.Agent
  request(url: string | URL, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  request(url: string | URL, options?: httpsModule.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  request(options: httpsModule.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  get(url: string | URL, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  get(url: string | URL, options?: httpsModule.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  get(options: httpsModule.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  /** node:https createServer with the instance's TLS defaults, fed with this stack's connections once listen() is called. */
  createServer(options?: httpsModule.ServerOptions, handler?: http.RequestListener): httpsModule.Server
  createServer(handler?: http.RequestListener): httpsModule.Server
}

// ------------------------------------------------------------ option mapping

function serverOptionsFrom(d: TlsDefaults): tls.TlsOptions {
  const o: tls.TlsOptions = {}
  if (d.identity !== undefined) {
    o.cert = d.identity.cert
    o.key = d.identity.key
    if (d.identity.passphrase !== undefined) o.passphrase = d.identity.passphrase
  }
  if (d.ca !== undefined) o.ca = d.ca
  if (d.alpn !== undefined && d.alpn.length > 0) o.ALPNProtocols = d.alpn
  if (d.minVersion !== undefined) o.minVersion = d.minVersion
  const policy = d.clientCertificates ?? 'none'
  o.requestCert = policy !== 'none'
  o.rejectUnauthorized = policy === 'require'
  if (d.sessionTickets !== undefined && !d.sessionTickets.enabled) o.secureOptions = cryptoConstants.SSL_OP_NO_TICKET
  return o
}

function clientOptionsFrom(d: TlsDefaults): tls.ConnectionOptions {
  const o: tls.ConnectionOptions = {}
  // The instance's certificate doubles as its client identity when a server asks for one.
  if (d.identity !== undefined) {
    o.cert = d.identity.cert
    o.key = d.identity.key
    if (d.identity.passphrase !== undefined) o.passphrase = d.identity.passphrase
  }
  if (d.ca !== undefined) o.ca = d.ca
  if (d.alpn !== undefined && d.alpn.length > 0) o.ALPNProtocols = d.alpn
  if (d.minVersion !== undefined) o.minVersion = d.minVersion
  return o
}

function stripBrackets(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}

/**
 * A TLSSocket over a stream has no kernel handle to ask for addresses; give
 * it the StackSocket's, so `req.socket.remoteAddress` and friends work.
 */
function adoptAddresses(tlsSocket: tls.TLSSocket, raw: StackSocket): void {
  const forward = (name: 'remoteAddress' | 'remotePort' | 'remoteFamily' | 'localAddress' | 'localPort'): void => {
    Object.defineProperty(tlsSocket, name, { get: () => raw[name], configurable: true })
  }
  forward('remoteAddress')
  forward('remotePort')
  forward('remoteFamily')
  forward('localAddress')
  forward('localPort')
  Object.defineProperty(tlsSocket, 'address', { value: () => raw.address(), configurable: true, writable: true })
}

function isStackSocket(value: unknown): value is StackSocket {
  return typeof value === 'object' && value !== null && 'tcpCongestionWindow' in value && 'tcpSendMss' in value
}

/**
 * The StackSocket under a server-side TLSSocket that node:tls created itself.
 * node:tls wraps a non-net.Socket stream in a JSStreamSocket, reachable as
 * `_handle._parentWrap.stream` (Node 12 to 22 internals). If that ever
 * changes, the check below fails and the socket only loses record sizing and
 * forwarded addresses; TLS itself is unaffected.
 */
function stackSocketUnder(socket: tls.TLSSocket): StackSocket | null {
  const handle = (socket as unknown as { _handle?: { _parentWrap?: { stream?: unknown } } | null })._handle
  const stream = handle?._parentWrap?.stream
  return isStackSocket(stream) ? stream : null
}

// ------------------------------------------------------------ key log

/** Published when the key log file cannot be written: `{ file, error }`. Connections are unaffected. */
export const keyLogErrorChannel = channel('flowstack:tls:keylog-error')

class KeyLog {
  private stream: WriteStream | null = null
  private readonly listeners = new Set<KeyLogListener>()
  constructor(private readonly file: string | undefined) {}

  get active(): boolean {
    return this.file !== undefined || this.listeners.size > 0
  }

  add(listener: KeyLogListener): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /** Node's keylog lines end with '\n' already (NSS key log format, one secret per line). */
  readonly write = (line: Buffer, socket: tls.TLSSocket): void => {
    if (this.file !== undefined) {
      if (this.stream === null) {
        this.stream = createWriteStream(this.file, { flags: 'a', mode: 0o600 })
        // A key log that cannot be written must not take the connection down.
        const file = this.file
        this.stream.on('error', (error) => {
          if (keyLogErrorChannel.hasSubscribers) keyLogErrorChannel.publish({ file, error })
        })
      }
      this.stream.write(line)
    }
    for (const listener of this.listeners) listener(line, socket)
  }

  async close(): Promise<void> {
    const stream = this.stream
    this.stream = null
    if (stream !== null) await new Promise<void>((resolve) => stream.end(resolve))
  }
}

// ------------------------------------------------------------ servers

/**
 * Makes a node tls.Server (or https.Server) take its connections from a
 * StackServer: listen()/address()/close() go to the stack, and each accepted
 * StackSocket is handed to the server's own TLS connection listener.
 */
function bindServerToStack(server: tls.Server, net: StackNet, onClose: () => void): void {
  let stackServer: StackServer | null = null
  const listen = (...args: unknown[]): tls.Server => {
    // Half-open at TCP level: TLS decides when its side ends (after close_notify
    // and the last records), never the raw socket on the peer's FIN.
    const s = net.createServer({ allowHalfOpen: true }, (socket: StackSocket) => {
      // Errors of the raw socket (a reset) reach the TLS socket through
      // node:tls's stream wrap; the raw socket itself must not throw them.
      socket.on('error', () => {})
      server.emit('connection', socket)
    })
    stackServer = s
    s.once('listening', () => server.emit('listening'))
    s.on('error', (err) => server.emit('error', err))
    const callback = typeof args[args.length - 1] === 'function' ? (args.pop() as () => void) : undefined
    if (callback) server.once('listening', callback)
    ;(s.listen as (...a: unknown[]) => unknown)(...args)
    return server
  }
  Object.defineProperty(server, 'listen', { value: listen, configurable: true, writable: true })
  Object.defineProperty(server, 'address', { value: () => stackServer?.address() ?? null, configurable: true, writable: true })
  Object.defineProperty(server, 'listening', { get: () => stackServer?.listening ?? false, configurable: true })
  Object.defineProperty(server, 'close', {
    value: (callback?: (err?: Error) => void) => {
      const s = stackServer
      ;(server as unknown as { closeIdleConnections?: () => void }).closeIdleConnections?.()
      if (s === null) {
        onClose()
        if (callback) {
          const err = new Error('Server is not running.') as Error & { code: string }
          err.code = 'ERR_SERVER_NOT_RUNNING'
          process.nextTick(() => callback(err))
        }
        return server
      }
      s.close((err) => {
        onClose()
        server.emit('close')
        callback?.(err)
      })
      return server
    },
    configurable: true,
    writable: true,
  })
}

export function createStackTls(net: StackNet, defaults: TlsDefaults = {}): StackTls {
  const keyLog = new KeyLog(defaults.keyLogFile)
  const sizers = new WeakMap<tls.TLSSocket, RecordSizer>()
  const rotationTimers = new Set<NodeJS.Timeout>()
  const serverDefaults = serverOptionsFrom(defaults)
  const clientDefaults = clientOptionsFrom(defaults)

  /** Everything a server made here gets: SNI contexts, ticket key rotation, record sizing, key log. */
  function equipServer<T extends tls.Server>(server: T, options: { recordSizing?: boolean; SNICallback?: unknown }): T {
    if (options.SNICallback === undefined) {
      for (const entry of defaults.sni ?? []) {
        server.addContext(entry.serverName, { cert: entry.cert, key: entry.key, passphrase: entry.passphrase })
      }
    }
    const tickets = defaults.sessionTickets
    let timer: NodeJS.Timeout | null = null
    if (tickets === undefined || tickets.enabled) {
      // Fresh random ticket keys per server, replaced every rotation period
      // (tickets issued under the previous key stop resuming: forward secrecy
      // of resumption is bounded by the period).
      server.setTicketKeys(randomBytes(48))
      const seconds = tickets?.rotationSeconds ?? 12 * 60 * 60
      timer = setInterval(() => server.setTicketKeys(randomBytes(48)), seconds * 1000)
      timer.unref()
      rotationTimers.add(timer)
    }
    bindServerToStack(server, net, () => {
      if (timer !== null) {
        clearInterval(timer)
        rotationTimers.delete(timer)
        timer = null
      }
    })
    const sizing = options.recordSizing ?? true
    server.prependListener('secureConnection', (socket: tls.TLSSocket) => {
      const raw = stackSocketUnder(socket)
      if (raw !== null) {
        socket.allowHalfOpen = (server as unknown as { allowHalfOpen?: boolean }).allowHalfOpen === true
        adoptAddresses(socket, raw)
        if (sizing) sizers.set(socket, attachRecordSizing(socket, raw))
      }
    })
    server.on('keylog', (line: Buffer, socket: tls.TLSSocket) => {
      if (keyLog.active) keyLog.write(line, socket)
    })
    return server
  }

  function createServer(a?: StackTlsServerOptions | ((socket: tls.TLSSocket) => void), b?: (socket: tls.TLSSocket) => void): tls.Server {
    const options = typeof a === 'object' ? a : {}
    const listener = typeof a === 'function' ? a : b
    const { recordSizing, ...tlsOptions } = options
    const server = tls.createServer({ ...serverDefaults, ...tlsOptions }, listener)
    return equipServer(server, { recordSizing, SNICallback: tlsOptions.SNICallback })
  }

  function connectWith(options: StackTlsConnectOptions, listener?: () => void): tls.TLSSocket {
    const { recordSizing, ...tlsOptions } = options
    let raw: StackSocket | null = null
    let merged: tls.ConnectionOptions
    if (tlsOptions.socket !== undefined) {
      merged = { ...clientDefaults, ...tlsOptions }
      if (isStackSocket(tlsOptions.socket)) raw = tlsOptions.socket
    } else {
      const host = stripBrackets(tlsOptions.host ?? 'localhost')
      const port = Number(tlsOptions.port ?? 443)
      raw = net.connect({ host, port, localAddress: tlsOptions.localAddress, timeout: tlsOptions.timeout, allowHalfOpen: true, noDelay: (tlsOptions as { noDelay?: boolean }).noDelay === true })
      // Node verifies the name in servername, else host; an IP literal is checked against IP SANs.
      const servername = tlsOptions.servername ?? (isIP(host) === 0 ? host : undefined)
      merged = { ...clientDefaults, ...tlsOptions, host, port, socket: raw }
      if (servername !== undefined) merged.servername = servername
      else delete merged.servername
    }
    const socket = tls.connect(merged, listener)
    if (raw !== null) {
      // node:tls copies allowHalfOpen from the wrapped stream, and the raw
      // socket is half-open on purpose (see bindServerToStack); the TLS
      // socket follows the caller's choice, default false as in node:tls.
      socket.allowHalfOpen = tlsOptions.allowHalfOpen === true
      adoptAddresses(socket, raw)
      // A refused or reset TCP connection reaches the TLS socket as its error
      // through node:tls's stream wrap (JSStreamSocket), as with a kernel socket.
      if (recordSizing ?? true) sizers.set(socket, attachRecordSizing(socket, raw))
    }
    if (keyLog.active) socket.on('keylog', (line: Buffer) => keyLog.write(line, socket))
    return socket
  }

  function connect(a: StackTlsConnectOptions | number, b?: string | StackTlsConnectOptions | (() => void), c?: StackTlsConnectOptions | (() => void), d?: () => void): tls.TLSSocket {
    if (typeof a === 'object') return connectWith(a, typeof b === 'function' ? b : undefined)
    let options: StackTlsConnectOptions = { port: a }
    let listener: (() => void) | undefined
    for (const arg of [b, c, d]) {
      if (typeof arg === 'string') options.host = arg
      else if (typeof arg === 'function') listener = arg
      else if (typeof arg === 'object' && arg !== null) options = { ...arg, ...options }
    }
    return connectWith(options, listener)
  }

  return {
    defaults,
    createServer: createServer as StackTls['createServer'],
    connect: connect as StackTls['connect'],
    createSecureContext: tls.createSecureContext,
    checkServerIdentity: tls.checkServerIdentity,
    TLSSocket: tls.TLSSocket,
    onKeyLog: (listener) => keyLog.add(listener),
    recordSizer: (socket) => sizers.get(socket),
    serverOptions: () => ({ ...serverDefaults }),
    adoptServer: equipServer,
    connectForDispatcher: (options, callback) => {
      const host = stripBrackets(options.hostname)
      const socket = connectWith({
        host,
        port: Number(options.port || 443),
        servername: options.servername || (isIP(host) === 0 ? host : undefined),
        // undici speaks HTTP/1.1 on these connections, and sets TCP_NODELAY on them.
        ALPNProtocols: ['http/1.1'],
        noDelay: true,
      } as StackTlsConnectOptions)
      let settled = false
      socket.once('secureConnect', () => {
        if (settled) return
        settled = true
        callback(null, socket)
      })
      socket.once('error', (err: Error) => {
        if (settled) return
        settled = true
        callback(err, null)
      })
    },
    close: async () => {
      for (const timer of rotationTimers) clearInterval(timer)
      rotationTimers.clear()
      await keyLog.close()
    },
  }
}

// ------------------------------------------------------------ https

export function createStackHttps(stackTls: StackTls): StackHttps {
  class StackHttpsAgent extends httpsModule.Agent {
    constructor(options?: httpsModule.AgentOptions) {
      super({ keepAlive: true, ...options })
    }
    override createConnection(options: http.ClientRequestArgs & tls.ConnectionOptions, callback?: (err: Error | null, socket: Duplex) => void): Duplex {
      const socket = stackTls.connect({
        ...options,
        host: options.host ?? options.hostname ?? 'localhost',
        port: Number(options.port ?? 443),
        // http's ClientRequest negotiates nothing but HTTP/1.1.
        ALPNProtocols: ['http/1.1'],
        // https.Agent, like http.Agent, defaults to TCP_NODELAY.
        noDelay: (options as { noDelay?: boolean }).noDelay ?? true,
      } as StackTlsConnectOptions)
      if (callback) {
        socket.once('secureConnect', () => callback(null, socket))
        socket.once('error', (err: Error) => callback(err, socket))
        return undefined as unknown as Duplex
      }
      return socket
    }
  }
  const globalAgent = new StackHttpsAgent()
  const withAgent = (args: unknown[]): unknown[] => withDefaultAgent(args, globalAgent)
  return {
    Agent: StackHttpsAgent,
    globalAgent,
    request: ((...args: unknown[]) => (httpsModule.request as (...a: unknown[]) => http.ClientRequest)(...withAgent(args))) as StackHttps['request'],
    get: ((...args: unknown[]) => (httpsModule.get as (...a: unknown[]) => http.ClientRequest)(...withAgent(args))) as StackHttps['get'],
    createServer: ((a?: httpsModule.ServerOptions | http.RequestListener, b?: http.RequestListener) => {
      const { recordSizing, ...options } = (typeof a === 'object' ? a : {}) as httpsModule.ServerOptions & { recordSizing?: boolean }
      const handler = typeof a === 'function' ? a : b
      const server = httpsModule.createServer({ ...stackTls.serverOptions(), ...options }, handler)
      return stackTls.adoptServer(server, { recordSizing, SNICallback: options.SNICallback })
    }) as StackHttps['createServer'],
  }
}
