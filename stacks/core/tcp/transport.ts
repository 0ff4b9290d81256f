// The TCP layer bound to the IP layer: a TransportProtocol (stacks/core/
// contracts.ts) that parses segments with the wire layer and a TcpOutput that
// emits them through IpOutput.sendIp.
import type { IcmpErrorInfo, IpOutput, IpPacketInfo, QuotedPacket, TransportProtocol } from '../contracts.js'
import { WireError } from '../../wire/error.js'
import { emitTcp, parseTcp, tcpHeaderLength, type TcpEmitRepr } from '../../wire/tcp.js'
import { TcpLayer } from './layer.js'
import type { IpAddress, TcpConfig, TcpErrorCode, TcpOutput, TcpPayload, TcpSegment } from './types.js'

export const IP_PROTOCOL_TCP = 6

/** A mutable pseudo-header, refilled per segment (the wire type is readonly). */
interface Pseudo4 {
  version: 4
  src: number
  dst: number
}
interface Pseudo6 {
  version: 6
  src: Uint8Array
  dst: Uint8Array
}

const EMPTY = new Uint8Array(0)

export interface TcpTransportOptions extends Omit<TcpConfig, 'output' | 'secret'> {
  ip: IpOutput
  /** 16 bytes; default: drawn from `random`. */
  secret?: Uint8Array
}

/**
 * TransportProtocol for IP protocol 6. Checksums are verified here (RFC
 * 9293 3.1: a segment with a bad checksum is discarded; counted as InErrs),
 * and segments to broadcast/multicast destinations are dropped (RFC 9293
 * 3.9.1: "A TCP implementation MUST silently discard an incoming SYN segment
 * that is addressed to a broadcast or multicast address" — we drop them all).
 */
export class TcpTransport implements TransportProtocol, TcpOutput {
  readonly protocol = IP_PROTOCOL_TCP
  readonly layer: TcpLayer
  private readonly ip: IpOutput
  private readonly pseudo4: Pseudo4 = { version: 4, src: 0, dst: 0 }
  private readonly pseudo6: Pseudo6 = { version: 6, src: EMPTY, dst: EMPTY }
  private readonly emitRepr: TcpEmitRepr = { srcPort: 0, dstPort: 0, seq: 0, ack: 0, flags: 0, window: 0, urgentPointer: 0, options: {}, payloadLength: 0 }
  // The segment being written by fill(); set by sendSegment just before sendIp.
  private pendingPayload: TcpPayload | null = null
  private pendingPseudo: Pseudo4 | Pseudo6 = this.pseudo4
  private readonly fill = (bytes: Uint8Array, offset: number): void => {
    const repr = this.emitRepr
    const headerLength = tcpHeaderLength(repr)
    if (this.pendingPayload !== null) this.pendingPayload.copyTo(bytes, offset + headerLength)
    emitTcp(repr, bytes, offset, this.pendingPseudo)
  }

  constructor(options: TcpTransportOptions) {
    this.ip = options.ip
    let secret = options.secret
    if (secret === undefined) {
      secret = new Uint8Array(16)
      for (let i = 0; i < 16; i += 4) {
        const r = options.random() >>> 0
        secret[i] = r >>> 24
        secret[i + 1] = (r >>> 16) & 0xff
        secret[i + 2] = (r >>> 8) & 0xff
        secret[i + 3] = r & 0xff
      }
    }
    const { ip: _ip, secret: _secret, ...rest } = options
    void _ip
    void _secret
    this.layer = new TcpLayer({ ...rest, secret, output: this })
  }

  private setPseudo(src: IpAddress, dst: IpAddress): Pseudo4 | Pseudo6 {
    if (src.version === 4 && dst.version === 4) {
      this.pseudo4.src = src.v4
      this.pseudo4.dst = dst.v4
      return this.pseudo4
    }
    this.pseudo6.src = src.version === 6 ? src.v6 : EMPTY
    this.pseudo6.dst = dst.version === 6 ? dst.v6 : EMPTY
    return this.pseudo6
  }

  receive(packet: IpPacketInfo, payload: Uint8Array, now: number): boolean {
    const counters = this.layer.counters
    if (packet.dstKind !== 'unicast') {
      counters.inErrs++
      return true
    }
    const repr = parseTcp(payload, 0, payload.length, this.setPseudo(packet.src, packet.dst))
    if (repr instanceof WireError) {
      counters.inErrs++
      return true
    }
    const data = repr.payloadLength > 0 ? payload.subarray(repr.payloadOffset, repr.payloadOffset + repr.payloadLength) : EMPTY
    this.layer.input(packet.src, packet.dst, repr, data, now)
    return true
  }

  receiveIcmpError(error: IcmpErrorInfo, quoted: QuotedPacket, now: number): void {
    const h = quoted.transportHeader
    if (h.length < 8) return
    const localPort = (h[0] << 8) | h[1]
    const remotePort = (h[2] << 8) | h[3]
    if (error.kind === 'packet-too-big') {
      if (error.mtu !== undefined) this.layer.icmpError(quoted.src, localPort, quoted.dst, remotePort, 'packet-too-big', 'EHOSTUNREACH', error.mtu, now)
      return
    }
    let code: TcpErrorCode
    switch (error.kind) {
      case 'port-unreachable':
      case 'protocol-unreachable':
        code = 'ECONNREFUSED'
        break
      case 'net-unreachable':
        code = 'ENETUNREACH'
        break
      default:
        code = 'EHOSTUNREACH'
    }
    this.layer.icmpError(quoted.src, localPort, quoted.dst, remotePort, error.hard ? 'hard' : 'soft', code, 0, now)
  }

  poll(now: number): void {
    this.layer.poll(now)
  }

  nextTimeout(): number {
    return this.layer.nextTimeout()
  }

  // TcpOutput
  sendSegment(local: IpAddress, remote: IpAddress, segment: TcpSegment, payload: TcpPayload | null): boolean {
    const repr = this.emitRepr
    repr.srcPort = segment.srcPort
    repr.dstPort = segment.dstPort
    repr.seq = segment.seq
    repr.ack = segment.ack
    repr.flags = segment.flags
    repr.window = segment.window
    repr.urgentPointer = segment.urgentPointer
    repr.options = segment.options
    repr.payloadLength = payload === null ? 0 : payload.length
    this.pendingPayload = payload
    this.pendingPseudo = this.setPseudo(local, remote)
    const length = tcpHeaderLength(repr) + repr.payloadLength
    // TCP sets DF: RFC 1191 path MTU discovery.
    const result = this.ip.sendIp(local, remote, IP_PROTOCOL_TCP, length, this.fill, { dontFragment: true })
    this.pendingPayload = null
    return result === 'sent' || result === 'queued'
  }

  pathMtu(local: IpAddress, remote: IpAddress): number {
    return this.ip.pathMtu(local, remote)
  }
}
