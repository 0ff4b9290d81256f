// createStack: a complete flowstack stack in the calling thread, on any
// NexusPort. The runtime hands the same object to apps in their instance
// worker (DESIGN.md §4).
import { withDefaultAgent } from './agent-args.js'
import * as http from 'node:http'
import type { Duplex } from 'node:stream'
import { Agent as UndiciAgent, fetch as undiciFetch, type Dispatcher } from 'undici'
import type { NexusPort } from '../../nexus/ports/port.js'
import type { Clock, Random } from '../core/contracts.js'
import type { RouteSpec } from '../core/stack.js'
import type { StackCounters } from '../core/counters.js'
import type { TcpCounters } from '../core/tcp/types.js'
import { createStackNet, type StackConnectOptions, type StackNet, type StackSocket } from './net.js'
import { createUdpSocket, UdpSocket, type RemoteInfo, type UdpSocketOptions, type UdpSocketType } from './udp.js'
import { StackShell, type StackTcpOptions } from './shell.js'
import { createStackHttps, createStackTls, type StackHttps, type StackTls } from './tls.js'
import type { TlsDefaults } from './tls-config.js'

export interface CreateStackOptions {
  port: NexusPort
  /** Our addresses with their prefixes: '198.51.100.2/24', '2001:db8::2/64'. */
  addresses: string[]
  routes?: RouteSpec[]
  tcp?: StackTcpOptions
  /**
   * RFC 4862 duplicate address detection for IPv6 addresses on Ethernet
   * ports (default true). createStack resolves once DAD has finished, so the
   * addresses are usable; an address found duplicate is an error.
   */
  dad?: boolean
  /** The instance's TLS identity and policy: defaults of stack.tls, stack.https and https fetches. */
  tls?: TlsDefaults
  /** Injected for deterministic tests. */
  clock?: Clock
  random?: Random
}

export interface StackHttp {
  /** An http.Agent whose connections are made on this stack (keep-alive by default). */
  Agent: new (options?: http.AgentOptions) => http.Agent
  /** A shared keep-alive agent. */
  globalAgent: http.Agent
  request(url: string | URL, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  request(url: string | URL, options?: http.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  request(options: http.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  get(url: string | URL, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  get(url: string | URL, options?: http.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  get(options: http.RequestOptions, callback?: (res: http.IncomingMessage) => void): http.ClientRequest
  /** node:http's createServer, fed with this stack's connections once listen() is called on it. */
  createServer: typeof http.createServer
}

export interface StackStats {
  ip: StackCounters
  tcp: TcpCounters
  tcpConnections: number
  malformed: Record<string, number>
  link: { txDroppedRingFull: number; rxOffloadDrops: number }
}

export interface StackDgram {
  createSocket(type: UdpSocketType | UdpSocketOptions, listener?: (msg: Buffer, rinfo: RemoteInfo) => void): UdpSocket
  Socket: typeof UdpSocket
}

export interface Stack {
  readonly net: StackNet
  /** `dgram.createSocket` over this stack: UDP sockets shaped like dgram.Socket. */
  readonly dgram: StackDgram
  readonly http: StackHttp
  /** node:tls-shaped TLS over this stack, with the instance's TLS defaults. */
  readonly tls: StackTls
  /** node:https-shaped helpers over stack.tls. */
  readonly https: StackHttps
  /** WHATWG fetch over this stack (undici with a connector on stack.net). */
  fetch(input: string | URL | Request, init?: RequestInit): Promise<Response>
  /** An undici Dispatcher whose connections use this stack, for undici.request() and friends. */
  readonly dispatcher: Dispatcher
  /** Counters in `netstat -s` families. */
  stats(): StackStats
  /** Closes every socket and server and stops the stack; the port stays open. */
  close(): Promise<void>
  /** @internal the imperative shell, for the runtime and tests. */
  readonly shell: StackShell
}

function createStackHttp(net: StackNet): StackHttp {
  class StackAgent extends http.Agent {
    constructor(options?: http.AgentOptions) {
      super({ keepAlive: true, ...options })
    }
    // Returns the socket synchronously, as net.createConnection does, so a
    // request destroyed while connecting destroys its socket at once.
    // Node's http.Agent defaults to TCP_NODELAY and hands its options
    // (noDelay, timeout, keepAlive) to createConnection; so does this one.
    override createConnection(options: http.ClientRequestArgs & { noDelay?: boolean; keepAlive?: boolean; keepAliveInitialDelay?: number }): Duplex {
      return net.connect({
        host: options.host ?? 'localhost',
        port: Number(options.port ?? 80),
        localAddress: options.localAddress,
        noDelay: options.noDelay ?? true,
        ...(options.timeout !== undefined ? { timeout: options.timeout } : {}),
        ...(options.keepAlive === true ? { keepAlive: true, keepAliveInitialDelay: options.keepAliveInitialDelay } : {}),
      })
    }
  }
  const globalAgent = new StackAgent()
  const withAgent = (args: unknown[]): unknown[] => withDefaultAgent(args, globalAgent)
  return {
    Agent: StackAgent,
    globalAgent,
    request: ((...args: unknown[]) => (http.request as (...a: unknown[]) => http.ClientRequest)(...withAgent(args))) as StackHttp['request'],
    get: ((...args: unknown[]) => (http.get as (...a: unknown[]) => http.ClientRequest)(...withAgent(args))) as StackHttp['get'],
    createServer: ((...args: unknown[]) => {
      const server = (http.createServer as (...a: unknown[]) => http.Server)(...args)
      // node:http's Server is a net.Server; feed it this stack's connections
      // instead of a kernel listener.
      // node:http servers default to TCP_NODELAY (http.Server's noDelay
      // option), applied by net.Server when it accepts; ours accepts instead.
      const httpOptions = (typeof args[0] === 'object' && args[0] !== null ? args[0] : {}) as http.ServerOptions
      const stackServer = net.createServer(
        { noDelay: httpOptions.noDelay ?? true, keepAlive: httpOptions.keepAlive, keepAliveInitialDelay: httpOptions.keepAliveInitialDelay },
        (socket: StackSocket) => server.emit('connection', socket),
      )
      // One forwarder each, however often listen() is called (a retry after EADDRINUSE).
      stackServer.on('listening', () => server.emit('listening'))
      stackServer.on('error', (err) => server.emit('error', err))
      // node:http's close() ends in net.Server#close, which sees no handle of
      // its own here: it would emit 'close' at once, before in-flight
      // responses end. The server's 'close' comes from the stack's server,
      // once its connections are gone; net.Server's own is swallowed.
      let closeFromStack = false
      const emit = server.emit.bind(server)
      server.emit = ((event: string | symbol, ...eventArgs: unknown[]) => (event === 'close' && !closeFromStack ? false : (emit as (e: string | symbol, ...a: unknown[]) => boolean)(event, ...eventArgs))) as typeof server.emit
      stackServer.on('close', () => {
        closeFromStack = true
        try {
          server.emit('close')
        } finally {
          closeFromStack = false
        }
      })
      const listen = (...listenArgs: unknown[]): http.Server => {
        ;(stackServer.listen as (...a: unknown[]) => unknown)(...listenArgs)
        return server
      }
      const closeHttp = server.close.bind(server)
      const methods: Record<string, unknown> = {
        listen,
        address: () => stackServer.address(),
        // The callback as net.Server's: ERR_SERVER_NOT_RUNNING when not listening, else on 'close'.
        close: (callback?: (err?: Error) => void) => {
          stackServer.close(callback)
          // http.Server's own part: its header-timeout timer, idle keep-alive connections.
          closeHttp()
          return server
        },
        ref: () => (stackServer.ref(), server),
        unref: () => (stackServer.unref(), server),
      }
      for (const [name, value] of Object.entries(methods)) Object.defineProperty(server, name, { value, configurable: true, writable: true })
      Object.defineProperty(server, 'listening', { get: () => stackServer.listening, configurable: true })
      return server
    }) as typeof http.createServer,
  }
}

export async function createStack(options: CreateStackOptions): Promise<Stack> {
  const shell = new StackShell({
    port: options.port,
    addresses: options.addresses,
    routes: options.routes,
    tcp: options.tcp,
    clock: options.clock,
    random: options.random,
    dad: options.dad,
  })
  await shell.addressesSettled()
  const net = createStackNet(shell)
  const httpHelpers = createStackHttp(net)
  const stackTls = createStackTls(net, options.tls)
  const httpsHelpers = createStackHttps(stackTls)
  const dispatcher = new UndiciAgent({
    connect: (connectOptions, callback) => {
      if (connectOptions.protocol === 'https:') {
        stackTls.connectForDispatcher(connectOptions, callback as (err: Error | null, socket: Duplex | null) => void)
        return
      }
      // undici's own connector sets TCP_NODELAY on every socket.
      const socket = net.connect({ host: connectOptions.hostname, port: Number(connectOptions.port || (connectOptions.protocol === 'https:' ? 443 : 80)), noDelay: true } satisfies StackConnectOptions)
      let settled = false
      socket.once('connect', () => {
        if (settled) return
        settled = true
        ;(callback as (err: Error | null, socket: unknown) => void)(null, socket)
      })
      socket.once('error', (err: Error) => {
        if (settled) return
        settled = true
        callback(err, null)
      })
    },
  })
  let closed = false
  const stack: Stack = {
    net,
    dgram: {
      createSocket: (type, listener) => createUdpSocket({ udp: shell.core.udp, flush: () => shell.kick(), ref: () => shell.ref(), unref: () => shell.unref() }, type, listener),
      Socket: UdpSocket,
    },
    http: httpHelpers,
    tls: stackTls,
    https: httpsHelpers,
    dispatcher,
    shell,
    fetch: (input, init) => undiciFetch(input as Parameters<typeof undiciFetch>[0], { ...(init as object), dispatcher } as Parameters<typeof undiciFetch>[1]) as unknown as Promise<Response>,
    stats: () => ({
      ip: shell.core.counters,
      tcp: shell.tcp.layer.counters,
      tcpConnections: shell.tcp.layer.connectionCount,
      malformed: shell.core.malformed,
      link: { txDroppedRingFull: shell.link.droppedRingFull, rxOffloadDrops: shell.rxOffloadDrops },
    }),
    close: async () => {
      if (closed) return
      closed = true
      httpHelpers.globalAgent.destroy()
      httpsHelpers.globalAgent.destroy()
      await dispatcher.close().catch(() => {})
      for (const conn of [...shell.tcp.layer.allConnections()]) conn.abort()
      shell.kick()
      await new Promise<void>((resolve) => setImmediate(resolve))
      await shell.close()
      await stackTls.close()
    },
  }
  return stack
}
