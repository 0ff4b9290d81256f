// UDP (RFC 768) at the core level: bind / connect / send / receive by
// callback, demultiplexing, checksums, ICMP errors to connected endpoints.
// The Node-facing dgram-like socket wraps this (stacks/sockets/udp.ts).
import type { IcmpErrorInfo, IpAddress, IpOutput, IpPacketInfo, QuotedPacket, Random, SendResult, TransportProtocol } from './contracts.js'
import { udpCounters, type UdpCounters } from './counters.js'
import { ipv4Broadcast, isIpv4Multicast, isIpv6Multicast, isIpv6Unspecified, sameAddress } from './ip-util.js'
import { checksumAccumulate, checksumFold, pseudoHeaderSumIpv4, pseudoHeaderSumIpv6 } from '../wire/checksum.js'
import { IP_PROTOCOL_UDP } from '../wire/ipv4.js'

export const EPHEMERAL_PORT_MIN = 49152
export const EPHEMERAL_PORT_MAX = 65535
const MAX_UDP_PAYLOAD = 65535 - 8

/** Where a received datagram came from. Scratch objects: valid only during the call. */
export interface UdpRemoteInfo {
  family: 4 | 6
  address: IpAddress
  port: number
  /** Our address it was sent to (a broadcast/multicast address for those). */
  localAddress: IpAddress
  /** How it was addressed. */
  dstKind: IpPacketInfo['dstKind']
}

export type UdpErrorCode = 'ECONNREFUSED' | 'EHOSTUNREACH' | 'ENETUNREACH' | 'EMSGSIZE'

export interface UdpHandler {
  /** `payload` is a view into the received packet, valid only during the call: copy what you keep. */
  message(payload: Uint8Array, remote: UdpRemoteInfo, now: number): void
  /** An ICMP error for a connected endpoint (like Linux's connected UDP sockets). */
  error?(code: UdpErrorCode, now: number): void
}

export type UdpBindError = 'EADDRINUSE' | 'EADDRNOTAVAIL' | 'EINVAL'
export type UdpSendError = 'EMSGSIZE' | 'EACCES' | 'EDESTADDRREQ' | 'EAFNOSUPPORT' | 'EADDRNOTAVAIL' | 'ENOTCONN' | 'ECLOSED'

export interface UdpBindOptions {
  family: 4 | 6
  /** null/undefined = any address of the family. */
  address?: IpAddress | null
  /** 0/undefined = an ephemeral port (RFC 6056 random). */
  port?: number
  /** SO_REUSEADDR: several endpoints on the same address and port (all get broadcasts; unicast goes to the newest). */
  reuseAddress?: boolean
}

export class UdpEndpoint {
  remote: IpAddress | null = null
  remotePort = 0
  /** SO_BROADCAST: sending to a broadcast address needs it (EACCES otherwise, as in Linux). */
  broadcast = false
  hopLimit: number | undefined = undefined
  closed = false

  constructor(
    private readonly layer: UdpLayer,
    readonly family: 4 | 6,
    readonly localAddress: IpAddress | null,
    readonly localPort: number,
    readonly reuseAddress: boolean,
    readonly handler: UdpHandler,
  ) {}

  /** Fix the remote end: only its datagrams are received, send() needs no address. */
  connect(address: IpAddress, port: number): 'ok' | UdpSendError {
    if (address.version !== this.family) return 'EAFNOSUPPORT'
    if (port < 1 || port > 65535) return 'EADDRNOTAVAIL'
    this.remote = address.version === 4 ? { version: 4, v4: address.v4 } : { version: 6, v6: address.v6.slice() }
    this.remotePort = port
    return 'ok'
  }

  disconnect(): void {
    this.remote = null
    this.remotePort = 0
  }

  /** Send `data[offset, offset+length)` to `address:port` (or the connected remote). */
  send(data: Uint8Array, offset = 0, length = data.length - offset, address?: IpAddress, port?: number): SendResult | UdpSendError {
    if (this.closed) return 'ECLOSED'
    return this.layer.sendFrom(this, data, offset, length, address ?? this.remote, address === undefined ? this.remotePort : (port ?? 0))
  }

  close(): void {
    if (this.closed) return
    this.closed = true
    this.layer.unbind(this)
  }
}

export class UdpLayer implements TransportProtocol {
  readonly protocol = IP_PROTOCOL_UDP
  private readonly ports = new Map<number, UdpEndpoint[]>()
  readonly counters: { udp: UdpCounters; udp6: UdpCounters }
  private readonly remoteInfo: UdpRemoteInfo = {
    family: 4,
    address: { version: 4, v4: 0 },
    port: 0,
    localAddress: { version: 4, v4: 0 },
    dstKind: 'unicast',
  }
  // Per-send state read by writeDatagram (one bound writer, no closure per datagram).
  private sendData: Uint8Array = new Uint8Array(0)
  private sendOffset = 0
  private sendLength = 0
  private sendSrcPort = 0
  private sendDstPort = 0
  private sendSrc: IpAddress = { version: 4, v4: 0 }
  private sendDst: IpAddress = { version: 4, v4: 0 }
  private readonly writeDatagram = (bytes: Uint8Array, at: number): void => this.write(bytes, at)

  constructor(
    private readonly ip: IpOutput,
    private readonly random: Random,
    counters?: { udp: UdpCounters; udp6: UdpCounters },
    /** IPv4 prefixes of our addresses, to recognise directed broadcasts we send to. */
    private readonly broadcastCheck: (address: IpAddress) => boolean = defaultBroadcastCheck,
  ) {
    this.counters = counters ?? { udp: udpCounters(), udp6: udpCounters() }
  }

  get endpointCount(): number {
    let n = 0
    for (const list of this.ports.values()) n += list.length
    return n
  }

  bind(options: UdpBindOptions, handler: UdpHandler): UdpEndpoint | UdpBindError {
    const address = options.address ?? null
    if (address !== null) {
      if (address.version !== options.family) return 'EINVAL'
      const wildcard = address.version === 4 ? address.v4 === 0 : isIpv6Unspecified(address.v6)
      if (!wildcard && !this.ip.isLocalAddress(address)) return 'EADDRNOTAVAIL'
    }
    const local = address === null || (address.version === 4 ? address.v4 === 0 : isIpv6Unspecified(address.v6)) ? null : address
    let port = options.port ?? 0
    if (port < 0 || port > 65535 || !Number.isInteger(port)) return 'EINVAL'
    const reuse = options.reuseAddress === true
    if (port === 0) {
      const found = this.ephemeralPort(options.family, local)
      if (found === 0) return 'EADDRINUSE'
      port = found
    } else if (this.conflicts(options.family, local, port, reuse)) {
      return 'EADDRINUSE'
    }
    const endpoint = new UdpEndpoint(this, options.family, local, port, reuse, handler)
    const list = this.ports.get(port)
    if (list === undefined) this.ports.set(port, [endpoint])
    else list.push(endpoint)
    return endpoint
  }

  /** @internal */
  unbind(endpoint: UdpEndpoint): void {
    const list = this.ports.get(endpoint.localPort)
    if (list === undefined) return
    const i = list.indexOf(endpoint)
    if (i !== -1) list.splice(i, 1)
    if (list.length === 0) this.ports.delete(endpoint.localPort)
  }

  /** @internal */
  sendFrom(endpoint: UdpEndpoint, data: Uint8Array, offset: number, length: number, dst: IpAddress | null, dstPort: number): SendResult | UdpSendError {
    const c = endpoint.family === 4 ? this.counters.udp : this.counters.udp6
    if (dst === null) return 'EDESTADDRREQ'
    if (dst.version !== endpoint.family) return 'EAFNOSUPPORT'
    if (dstPort < 1 || dstPort > 65535) return 'EADDRNOTAVAIL'
    if (length > MAX_UDP_PAYLOAD || length < 0 || offset < 0 || offset + length > data.length) return 'EMSGSIZE'
    if (dst.version === 4 && !endpoint.broadcast && this.broadcastCheck(dst)) return 'EACCES'
    const src = endpoint.localAddress ?? this.ip.selectSource(dst)
    if (src === null) return 'EADDRNOTAVAIL'
    this.sendData = data
    this.sendOffset = offset
    this.sendLength = length
    this.sendSrcPort = endpoint.localPort
    this.sendDstPort = dstPort
    this.sendSrc = src
    this.sendDst = dst
    const result = this.ip.sendIp(src, dst, IP_PROTOCOL_UDP, 8 + length, this.writeDatagram, endpoint.hopLimit === undefined ? undefined : { hopLimit: endpoint.hopLimit })
    this.sendData = EMPTY
    if (result === 'sent' || result === 'queued') c.OutDatagrams++
    else c.SndbufErrors++
    return result
  }

  private write(bytes: Uint8Array, at: number): void {
    const length = 8 + this.sendLength
    bytes[at] = this.sendSrcPort >>> 8
    bytes[at + 1] = this.sendSrcPort & 0xff
    bytes[at + 2] = this.sendDstPort >>> 8
    bytes[at + 3] = this.sendDstPort & 0xff
    bytes[at + 4] = length >>> 8
    bytes[at + 5] = length & 0xff
    bytes[at + 6] = 0
    bytes[at + 7] = 0
    bytes.set(this.sendData.subarray(this.sendOffset, this.sendOffset + this.sendLength), at + 8)
    const src = this.sendSrc
    const dst = this.sendDst
    const pseudo =
      src.version === 4 && dst.version === 4
        ? pseudoHeaderSumIpv4(src.v4, dst.v4, IP_PROTOCOL_UDP, length)
        : pseudoHeaderSumIpv6((src as { v6: Uint8Array }).v6, (dst as { v6: Uint8Array }).v6, IP_PROTOCOL_UDP, length)
    let sum = checksumFold(checksumAccumulate(bytes, at, length, pseudo))
    // RFC 768: "If the computed checksum is zero, it is transmitted as all ones".
    if (sum === 0) sum = 0xffff
    bytes[at + 6] = sum >>> 8
    bytes[at + 7] = sum & 0xff
  }

  receive(packet: IpPacketInfo, payload: Uint8Array, now: number): boolean {
    const c = packet.version === 4 ? this.counters.udp : this.counters.udp6
    if (payload.length < 8) {
      c.InErrors++
      return true
    }
    const length = (payload[4] << 8) | payload[5]
    if (length < 8 || length > payload.length) {
      c.InErrors++
      return true
    }
    const checksum = (payload[6] << 8) | payload[7]
    if (checksum === 0) {
      // RFC 8200 §8.1: "IPv6 receivers must discard UDP packets containing a
      // zero checksum"; over IPv4 zero means "not computed" (RFC 768).
      if (packet.version === 6) {
        c.InErrors++
        c.InCsumErrors++
        return true
      }
    } else {
      const src = packet.src
      const dst = packet.dst
      const pseudo =
        src.version === 4 && dst.version === 4
          ? pseudoHeaderSumIpv4(src.v4, dst.v4, IP_PROTOCOL_UDP, length)
          : pseudoHeaderSumIpv6((src as { v6: Uint8Array }).v6, (dst as { v6: Uint8Array }).v6, IP_PROTOCOL_UDP, length)
      if (checksumFold(checksumAccumulate(payload, 0, length, pseudo)) !== 0) {
        c.InErrors++
        c.InCsumErrors++
        return true
      }
    }
    const srcPort = (payload[0] << 8) | payload[1]
    const dstPort = (payload[2] << 8) | payload[3]
    const list = this.ports.get(dstPort)
    const info = this.remoteInfo
    info.family = packet.version
    info.address = packet.src
    info.port = srcPort
    info.localAddress = packet.dst
    info.dstKind = packet.dstKind
    if (list === undefined) {
      c.NoPorts++
      return false
    }
    if (packet.dstKind !== 'unicast') {
      // RFC 1122 §4.1.3.5 / RFC 919: a broadcast goes to every endpoint bound to the port.
      let delivered = 0
      for (let i = 0; i < list.length; i++) {
        const e = list[i]
        if (e.family !== packet.version || e.localAddress !== null && !this.localMatchesBroadcast(e.localAddress, packet.dst)) continue
        if (e.remote !== null && !(sameAddress(e.remote, packet.src) && e.remotePort === srcPort)) continue
        e.handler.message(payload.subarray(8, length), info, now)
        delivered++
      }
      if (delivered === 0) c.NoPorts++
      else c.InDatagrams++
      return true
    }
    // Most specific first: connected to this remote, then bound to this address, then the wildcard.
    let best: UdpEndpoint | null = null
    let bestScore = -1
    for (let i = 0; i < list.length; i++) {
      const e = list[i]
      if (e.family !== packet.version) continue
      if (e.localAddress !== null && !sameAddress(e.localAddress, packet.dst)) continue
      let score = e.localAddress !== null ? 1 : 0
      if (e.remote !== null) {
        if (!sameAddress(e.remote, packet.src) || e.remotePort !== srcPort) continue
        score += 2
      }
      if (score >= bestScore) {
        best = e
        bestScore = score
      }
    }
    if (best === null) {
      c.NoPorts++
      return false
    }
    c.InDatagrams++
    best.handler.message(payload.subarray(8, length), info, now)
    return true
  }

  receiveIcmpError(error: IcmpErrorInfo, quoted: QuotedPacket, now: number): void {
    const header = quoted.transportHeader
    if (header.length < 4) return
    const localPort = (header[0] << 8) | header[1]
    const remotePort = (header[2] << 8) | header[3]
    let code: UdpErrorCode | null
    switch (error.kind) {
      case 'port-unreachable':
      case 'protocol-unreachable':
        code = 'ECONNREFUSED'
        break
      case 'host-unreachable':
      case 'address-unreachable':
      case 'admin-prohibited':
        code = 'EHOSTUNREACH'
        break
      case 'net-unreachable':
        code = 'ENETUNREACH'
        break
      case 'packet-too-big':
        code = 'EMSGSIZE'
        break
      default:
        code = null
    }
    if (code === null) return
    const list = this.ports.get(localPort)
    if (list === undefined) return
    for (const e of list) {
      if (e.remote !== null && e.remotePort === remotePort && sameAddress(e.remote, quoted.dst)) e.handler.error?.(code, now)
    }
  }

  private localMatchesBroadcast(local: IpAddress, dst: IpAddress): boolean {
    if (sameAddress(local, dst)) return true
    // An endpoint bound to a specific address still hears broadcasts on its subnet (as on Linux).
    if (dst.version === 4) return dst.v4 === 0xffffffff || isIpv4Multicast(dst.v4) || this.broadcastCheck(dst)
    return isIpv6Multicast(dst.v6)
  }

  private conflicts(family: 4 | 6, local: IpAddress | null, port: number, reuse: boolean): boolean {
    const list = this.ports.get(port)
    if (list === undefined) return false
    for (const e of list) {
      if (e.family !== family) continue
      if (e.localAddress === null || local === null || sameAddress(e.localAddress, local)) {
        if (!(reuse && e.reuseAddress)) return true
      }
    }
    return false
  }

  /** RFC 6056 §3.3.1 (Algorithm 1): a random starting point, then sequential search. */
  private ephemeralPort(family: 4 | 6, local: IpAddress | null): number {
    const range = EPHEMERAL_PORT_MAX - EPHEMERAL_PORT_MIN + 1
    const start = this.random.nextUint32() % range
    for (let i = 0; i < range; i++) {
      const port = EPHEMERAL_PORT_MIN + ((start + i) % range)
      if (!this.conflicts(family, local, port, false)) return port
    }
    return 0
  }
}

const EMPTY = new Uint8Array(0)

function defaultBroadcastCheck(address: IpAddress): boolean {
  return address.version === 4 && address.v4 === 0xffffffff
}

/** A broadcast check over a stack's IPv4 addresses (limited and directed broadcast). */
export function broadcastCheckFor(addresses: () => readonly { address: IpAddress; prefixLength: number }[]): (address: IpAddress) => boolean {
  return (address) => {
    if (address.version !== 4) return false
    if (address.v4 === 0xffffffff) return true
    for (const a of addresses()) {
      if (a.address.version === 4 && a.prefixLength < 31 && ipv4Broadcast(a.address.v4, a.prefixLength) === address.v4) return true
    }
    return false
  }
}
