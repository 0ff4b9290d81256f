// UdpSocket: a `dgram.Socket`-shaped facade over the core UDP layer
// (stacks/core/udp.ts). Same events ('listening', 'message', 'connect',
// 'close', 'error'), the same call shapes for bind/connect/send/close, and
// errors shaped like Node's (code, errno, syscall, address, port). Addresses
// must be IP literals: the stack has no resolver of its own.
import { EventEmitter } from 'node:events'
import { lookup as dnsLookup } from 'node:dns'
import { isIP } from 'node:net'
import { FlowstackError, systemError } from '../../common/errors.js'
import type { IpAddress } from '../core/contracts.js'
import type { UdpEndpoint, UdpLayer, UdpRemoteInfo } from '../core/udp.js'
import { formatIpAddress, parseIpAddress } from '../wire/address.js'

export type UdpSocketType = 'udp4' | 'udp6'

export interface UdpSocketOptions {
  type: UdpSocketType
  reuseAddr?: boolean
  /** Resolves host names given to send(), as dgram.createSocket's `lookup` (default dns.lookup). */
  lookup?: typeof dnsLookup
}

export interface UdpSocketHost {
  readonly udp: UdpLayer
  /** Called after sends so the shell can push its TX ring out (optional). */
  flush?(): void
  /** Keeps the process alive while a ref'd socket is bound, as a bound dgram socket does (optional). */
  ref?(): void
  unref?(): void
}

export interface RemoteInfo {
  address: string
  family: 'IPv4' | 'IPv6'
  port: number
  size: number
}

export interface AddressInfo {
  address: string
  family: 'IPv4' | 'IPv6'
  port: number
}

export interface BindOptions {
  port?: number
  address?: string
  exclusive?: boolean
}

type SendCallback = (error: Error | null, bytes: number) => void
type Message = string | Uint8Array | readonly (string | Uint8Array)[]

const encoder = new TextEncoder()

export class UdpSocket extends EventEmitter {
  readonly type: UdpSocketType
  private readonly family: 4 | 6
  private endpoint: UdpEndpoint | null = null
  private state: 'unbound' | 'bound' | 'closed' = 'unbound'
  private readonly reuseAddr: boolean
  private connected: { address: IpAddress; port: number } | null = null
  private broadcast = false
  private ttl: number | undefined

  private readonly lookup: typeof dnsLookup

  constructor(
    private readonly host: UdpSocketHost,
    options: UdpSocketType | UdpSocketOptions,
    listener?: (msg: Buffer, rinfo: RemoteInfo) => void,
  ) {
    super()
    const opts: UdpSocketOptions = typeof options === 'string' ? { type: options } : options
    this.lookup = opts.lookup ?? dnsLookup
    if (opts.type !== 'udp4' && opts.type !== 'udp6') {
      throw new FlowstackError('ERR_SOCKET_BAD_TYPE', 'Bad socket type specified. Valid types are: udp4, udp6')
    }
    this.type = opts.type
    this.family = opts.type === 'udp4' ? 4 : 6
    this.reuseAddr = opts.reuseAddr === true
    if (listener !== undefined) this.on('message', listener)
  }

  bind(port?: number | BindOptions | (() => void), address?: string | (() => void), callback?: () => void): this {
    let p = 0
    let addr: string | undefined
    let cb: (() => void) | undefined
    if (typeof port === 'function') cb = port
    else if (typeof port === 'object' && port !== null) {
      p = port.port ?? 0
      addr = port.address
      cb = typeof address === 'function' ? address : callback
    } else {
      p = port ?? 0
      if (typeof address === 'function') cb = address
      else {
        addr = address
        cb = callback
      }
    }
    this.assertNotClosed()
    if (this.state === 'bound') throw new FlowstackError('ERR_SOCKET_ALREADY_BOUND', 'Socket is already bound')
    if (cb !== undefined) this.once('listening', cb)
    const error = this.bindNow(p, addr)
    if (error !== null) {
      process.nextTick(() => this.emit('error', error))
      return this
    }
    process.nextTick(() => this.emit('listening'))
    return this
  }

  connect(port: number, address?: string | (() => void), callback?: () => void): void {
    const cb = typeof address === 'function' ? address : callback
    const text = typeof address === 'string' ? address : this.family === 4 ? '127.0.0.1' : '::1'
    this.assertNotClosed()
    if (this.connected !== null) throw new FlowstackError('ERR_SOCKET_DGRAM_IS_CONNECTED', 'Already connected')
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new FlowstackError('ERR_SOCKET_BAD_PORT', `Port should be > 0 and < 65536. Received ${port}.`)
    const remote = this.parseAddress(text)
    if (remote === null) throw systemError('EINVAL', { syscall: 'connect', address: text, port })
    if (cb !== undefined) this.once('connect', cb)
    if (this.state === 'unbound') {
      const error = this.bindNow(0, undefined)
      if (error !== null) {
        process.nextTick(() => this.emit('error', error))
        return
      }
      process.nextTick(() => this.emit('listening'))
    }
    const result = this.endpoint!.connect(remote, port)
    if (result !== 'ok') {
      process.nextTick(() => this.emit('error', systemError(result, { syscall: 'connect', address: text, port })))
      return
    }
    this.connected = { address: remote, port }
    process.nextTick(() => this.emit('connect'))
  }

  disconnect(): void {
    this.assertNotClosed()
    if (this.connected === null) throw new FlowstackError('ERR_SOCKET_DGRAM_NOT_CONNECTED', 'Not connected')
    this.connected = null
    this.endpoint?.disconnect()
  }

  /**
   * send(msg[, offset, length][, port][, address][, callback]) as in dgram:
   * a connected socket takes no port/address.
   */
  send(msg: Message, callback?: SendCallback): void
  send(msg: Message, port: number, address?: string, callback?: SendCallback): void
  send(msg: Message, port: number, callback: SendCallback): void
  send(msg: Message, offset: number, length: number, port?: number, address?: string, callback?: SendCallback): void
  send(msg: Message, offset: number, length: number, callback?: SendCallback): void
  send(msg: Message, ...args: unknown[]): void {
    this.assertNotClosed()
    let callback: SendCallback | undefined
    if (typeof args[args.length - 1] === 'function') callback = args.pop() as SendCallback
    let data: Uint8Array
    if (typeof msg === 'string' || msg instanceof Uint8Array) {
      data = typeof msg === 'string' ? encoder.encode(msg) : msg
      // (msg, offset, length, ...) when the next two arguments are numbers and a port follows or we are connected.
      if (typeof args[0] === 'number' && typeof args[1] === 'number' && (args.length >= 3 || this.connected !== null)) {
        const offset = args.shift() as number
        const length = args.shift() as number
        data = data.subarray(offset, offset + length)
      }
    } else if (Array.isArray(msg)) {
      const parts = msg.map((m) => (typeof m === 'string' ? encoder.encode(m) : m))
      data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
      let at = 0
      for (const p of parts) {
        data.set(p, at)
        at += p.length
      }
    } else {
      throw new FlowstackError('ERR_INVALID_ARG_TYPE', 'The "msg" argument must be a string, Buffer, TypedArray or an array of them')
    }
    let port: number | undefined
    let address: string | undefined
    if (this.connected === null) {
      port = args[0] as number
      address = typeof args[1] === 'string' ? args[1] : this.family === 4 ? '127.0.0.1' : '::1'
      if (!Number.isInteger(port) || port < 1 || port > 65535) throw new FlowstackError('ERR_SOCKET_BAD_PORT', `Port should be > 0 and < 65536. Received ${String(port)}.`)
    } else if (args.length > 0 && args[0] !== undefined) {
      throw new FlowstackError('ERR_SOCKET_DGRAM_IS_CONNECTED', 'Already connected')
    }
    if (this.state === 'unbound') {
      const error = this.bindNow(0, undefined)
      if (error !== null) {
        this.finishSend(callback, error, 0)
        return
      }
      process.nextTick(() => this.emit('listening'))
    }
    const endpoint = this.endpoint!
    let result
    if (this.connected !== null) {
      result = endpoint.send(data, 0, data.length)
    } else {
      if (isIP(address!) === 0) {
        // A host name, as dgram.send takes: resolved first (dns.lookup, in the
        // socket's family), then sent; a lookup failure goes to the callback.
        const name = address!
        const copy = Uint8Array.from(data) // the caller may reuse its buffer before the lookup returns
        this.lookup(name, { family: this.family }, (err, resolved) => {
          if (err !== null) {
            this.finishSend(callback, err, 0)
            return
          }
          if (this.state === 'closed') {
            this.finishSend(callback, systemError('EBADF', { syscall: 'send', address: name, port }), 0)
            return
          }
          this.send(copy, port!, resolved, callback)
        })
        return
      }
      const remote = this.parseAddress(address!)
      if (remote === null) {
        this.finishSend(callback, systemError('EINVAL', { syscall: 'send', address, port }), 0)
        return
      }
      result = endpoint.send(data, 0, data.length, remote, port)
    }
    this.host.flush?.()
    if (result === 'sent' || result === 'queued') {
      this.finishSend(callback, null, data.length)
      return
    }
    const code =
      result === 'no-route' ? 'ENETUNREACH' : result === 'no-buffer' ? 'ENOBUFS' : result === 'too-big' ? 'EMSGSIZE' : result === 'ECLOSED' ? 'EBADF' : result
    const target = this.connected !== null ? formatIpAddress(this.connected.address) : address
    this.finishSend(callback, systemError(code, { syscall: 'send', address: target, port: this.connected?.port ?? port }), 0)
  }

  close(callback?: () => void): this {
    if (this.state === 'closed') throw new FlowstackError('ERR_SOCKET_DGRAM_NOT_RUNNING', 'Not running')
    this.state = 'closed'
    this.endpoint?.close()
    this.endpoint = null
    this.dropRef()
    if (callback !== undefined) this.once('close', callback)
    process.nextTick(() => this.emit('close'))
    return this
  }

  address(): AddressInfo {
    if (this.endpoint === null) throw systemError('EBADF', { syscall: 'getsockname' })
    const local = this.endpoint.localAddress
    return {
      address: local === null ? (this.family === 4 ? '0.0.0.0' : '::') : formatIpAddress(local),
      family: this.family === 4 ? 'IPv4' : 'IPv6',
      port: this.endpoint.localPort,
    }
  }

  remoteAddress(): AddressInfo {
    if (this.connected === null) throw new FlowstackError('ERR_SOCKET_DGRAM_NOT_CONNECTED', 'Not connected')
    return { address: formatIpAddress(this.connected.address), family: this.family === 4 ? 'IPv4' : 'IPv6', port: this.connected.port }
  }

  setBroadcast(flag: boolean): void {
    this.broadcast = flag
    if (this.endpoint !== null) this.endpoint.broadcast = flag
  }

  setTTL(ttl: number): number {
    if (!Number.isInteger(ttl) || ttl < 1 || ttl > 255) throw systemError('EINVAL', { syscall: 'setTTL' })
    this.ttl = ttl
    if (this.endpoint !== null) this.endpoint.hopLimit = ttl
    return ttl
  }

  /** A bound socket keeps the process alive unless unref()'d, as dgram.Socket. */
  ref(): this {
    this.refed = true
    if (this.endpoint !== null) this.takeRef()
    return this
  }

  unref(): this {
    this.refed = false
    this.dropRef()
    return this
  }

  private refed = true
  private holdsRef = false

  private takeRef(): void {
    if (!this.refed || this.holdsRef) return
    this.holdsRef = true
    this.host.ref?.()
  }

  private dropRef(): void {
    if (!this.holdsRef) return
    this.holdsRef = false
    this.host.unref?.()
  }

  private bindNow(port: number, address: string | undefined): Error | null {
    let local: IpAddress | null = null
    if (address !== undefined && address !== '' && address !== '0.0.0.0' && address !== '::') {
      local = this.parseAddress(address)
      if (local === null) return systemError('EINVAL', { syscall: 'bind', address, port })
    }
    const result = this.host.udp.bind(
      { family: this.family, address: local, port, reuseAddress: this.reuseAddr },
      {
        message: (payload, remote) => this.deliver(payload, remote),
        error: (code) => this.emit('error', systemError(code, { syscall: 'recvmsg' })),
      },
    )
    if (typeof result === 'string') return systemError(result, { syscall: 'bind', address: address ?? (this.family === 4 ? '0.0.0.0' : '::'), port })
    this.endpoint = result
    this.takeRef()
    result.broadcast = this.broadcast
    result.hopLimit = this.ttl
    this.state = 'bound'
    return null
  }

  private deliver(payload: Uint8Array, remote: UdpRemoteInfo): void {
    // The view is only valid during the call: copy it into the Buffer we hand out.
    const msg = Buffer.from(payload)
    this.emit('message', msg, {
      address: formatIpAddress(remote.address),
      family: remote.family === 4 ? 'IPv4' : 'IPv6',
      port: remote.port,
      size: msg.length,
    } satisfies RemoteInfo)
  }

  private parseAddress(text: string): IpAddress | null {
    const expected = this.family === 4 ? 4 : 6
    if (isIP(text) !== expected) return null
    return parseIpAddress(text)
  }

  private finishSend(callback: SendCallback | undefined, error: Error | null, bytes: number): void {
    process.nextTick(() => {
      if (callback !== undefined) callback(error, bytes)
      else if (error !== null) this.emit('error', error)
    })
  }

  private assertNotClosed(): void {
    if (this.state === 'closed') throw new FlowstackError('ERR_SOCKET_DGRAM_NOT_RUNNING', 'Not running')
  }
}

/** `dgram.createSocket` over a stack. */
export function createUdpSocket(host: UdpSocketHost, options: UdpSocketType | UdpSocketOptions, listener?: (msg: Buffer, rinfo: RemoteInfo) => void): UdpSocket {
  return new UdpSocket(host, options, listener)
}
