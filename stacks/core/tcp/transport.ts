// The TCP layer bound to the IP layer: a TransportProtocol (stacks/core/
// contracts.ts) that parses segments with the wire layer and a TcpOutput that
// emits them through IpOutput.sendIp.
import type { IcmpErrorInfo, IpOutput, IpPacketInfo, QuotedPacket, TransportProtocol } from '../contracts.js'
import { checksumAccumulate, checksumFold, pseudoHeaderSum, pseudoHeaderSumIpv4, pseudoHeaderSumIpv6 } from '../../wire/checksum.js'
import { emitTcp, tcpHeaderLength, type TcpEmitRepr } from '../../wire/tcp.js'
import { TcpLayer } from './layer.js'
import type { TcpConnection } from './connection.js'
import { TcpError, type ConnectOptions, type IpAddress, type SegmentOwner, type TcpConfig, type TcpErrorCode, type TcpOutput, type TcpPayload, type TcpSegment } from './types.js'

const DEFAULT_HOP_LIMIT = 64

/**
 * A connection's prebuilt link + IP header (DESIGN.md §2 "Header
 * templates"). Per segment only the IP lengths, the IPv4 id and the
 * checksums change: the IPv4 header checksum is the constant part's sum plus
 * the two changing words, the TCP checksum starts from the pseudo-header sum
 * of the fixed addresses. Valid while the IP layer's path generation is
 * unchanged (next-hop MAC, route, PMTU).
 */
export class HeaderTemplate {
  generation = -1
  /** False while the next hop is unresolved or the path is not templatable: use sendIp. */
  usable = false
  mtu = 0
  linkLength = 0
  ipLength = 20
  version: 4 | 6 = 4
  /** Link header + IP header with zeroed lengths, id and checksum. */
  readonly prefix = new Uint8Array(14 + 40)
  prefixLength = 0
  /** Partial sum of the constant IPv4 header words. */
  ipv4ConstantSum = 0
  /** Partial sum of the pseudo-header without the length. */
  pseudoSum = 0
}

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
const MAX_SACK_BLOCKS = 4

/** Why a received segment was refused (counted per reason in TcpTransport.inputErrors). */
export type TcpInputError = 'truncated' | 'bad-offset' | 'bad-checksum' | 'bad-option' | 'not-unicast'

/**
 * Parses a segment into reused objects: the receive path allocates nothing
 * per segment (the wire layer's parseTcp returns fresh objects, which suits
 * tools and tests). Same checks as parseTcp: header and data offset within
 * the bytes, checksum over the pseudo-header, option lengths; unknown options
 * are skipped by length.
 */
export class SegmentParser {
  readonly segment: TcpSegment = { srcPort: 0, dstPort: 0, seq: 0, ack: 0, flags: 0, window: 0, urgentPointer: 0, options: {} }
  private readonly timestamp: [number, number] = [0, 0]
  private readonly sackPool: [number, number][] = [
    [0, 0],
    [0, 0],
    [0, 0],
    [0, 0],
  ]
  private readonly sack: [number, number][] = []
  payloadOffset = 0
  payloadLength = 0

  parse(b: Uint8Array, length: number, pseudo: Pseudo4 | Pseudo6): TcpInputError | null {
    if (length < 20 || length > b.length) return 'truncated'
    const headerLength = (b[12] >>> 4) * 4
    if (headerLength < 20 || headerLength > length) return 'bad-offset'
    if (checksumFold(checksumAccumulate(b, 0, length, pseudoHeaderSum(pseudo, IP_PROTOCOL_TCP, length))) !== 0) return 'bad-checksum'
    const seg = this.segment
    seg.srcPort = (b[0] << 8) | b[1]
    seg.dstPort = (b[2] << 8) | b[3]
    seg.seq = ((b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7]) >>> 0
    seg.ack = ((b[8] << 24) | (b[9] << 16) | (b[10] << 8) | b[11]) >>> 0
    seg.flags = b[13]
    seg.window = (b[14] << 8) | b[15]
    seg.urgentPointer = (b[18] << 8) | b[19]
    const o = seg.options
    o.mss = undefined
    o.windowScale = undefined
    o.sackPermitted = undefined
    o.sack = undefined
    o.timestamp = undefined
    let at = 20
    while (at < headerLength) {
      const kind = b[at]
      if (kind === 0) break
      if (kind === 1) {
        at++
        continue
      }
      if (at + 1 >= headerLength) return 'bad-option'
      const len = b[at + 1]
      if (len < 2 || at + len > headerLength) return 'bad-option'
      switch (kind) {
        case 2:
          if (len !== 4) return 'bad-option'
          o.mss = (b[at + 2] << 8) | b[at + 3]
          break
        case 3:
          if (len !== 3) return 'bad-option'
          o.windowScale = b[at + 2]
          break
        case 4:
          if (len !== 2) return 'bad-option'
          o.sackPermitted = true
          break
        case 5: {
          const blocks = (len - 2) / 8
          if (!Number.isInteger(blocks) || blocks < 1 || blocks > MAX_SACK_BLOCKS) return 'bad-option'
          this.sack.length = 0
          for (let k = 0; k < blocks; k++) {
            const p = at + 2 + 8 * k
            const pair = this.sackPool[k]
            pair[0] = ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0
            pair[1] = ((b[p + 4] << 24) | (b[p + 5] << 16) | (b[p + 6] << 8) | b[p + 7]) >>> 0
            this.sack.push(pair)
          }
          o.sack = this.sack
          break
        }
        case 8:
          if (len !== 10) return 'bad-option'
          this.timestamp[0] = ((b[at + 2] << 24) | (b[at + 3] << 16) | (b[at + 4] << 8) | b[at + 5]) >>> 0
          this.timestamp[1] = ((b[at + 6] << 24) | (b[at + 7] << 16) | (b[at + 8] << 8) | b[at + 9]) >>> 0
          o.timestamp = this.timestamp
          break
        default:
          break
      }
      at += len
    }
    this.payloadOffset = headerLength
    this.payloadLength = length - headerLength
    return null
  }
}

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
  /** Refused segments by reason (each also counts in layer.counters.inErrs). */
  readonly inputErrors: Record<TcpInputError, number> = { truncated: 0, 'bad-offset': 0, 'bad-checksum': 0, 'bad-option': 0, 'not-unicast': 0 }
  private readonly parser = new SegmentParser()
  private readonly ip: IpOutput
  private readonly pseudo4: Pseudo4 = { version: 4, src: 0, dst: 0 }
  private readonly pseudo6: Pseudo6 = { version: 6, src: EMPTY, dst: EMPTY }
  private readonly emitRepr: TcpEmitRepr = { srcPort: 0, dstPort: 0, seq: 0, ack: 0, flags: 0, window: 0, urgentPointer: 0, options: {}, payloadLength: 0 }
  // The segment being written by fill(); set by sendSegment just before sendIp.
  private pendingPayload: TcpPayload | null = null
  private pendingPseudo: Pseudo4 | Pseudo6 = this.pseudo4
  private pendingTemplate: HeaderTemplate | null = null
  private pendingTcpLength = 0
  /** Counts segments that left through a header template vs. through sendIp. */
  readonly templateCounters = { template: 0, sendIp: 0, rebuilt: 0 }
  private readonly frameFill = (bytes: Uint8Array): number => {
    const t = this.pendingTemplate!
    const tcpLength = this.pendingTcpLength
    // At most 54 bytes: a loop beats allocating a subarray view per segment.
    const prefix = t.prefix
    for (let i = 0; i < t.prefixLength; i++) bytes[i] = prefix[i]
    const ipAt = t.linkLength
    if (t.version === 4) {
      const total = 20 + tcpLength
      const id = this.ip.nextIpv4Id()
      bytes[ipAt + 2] = total >>> 8
      bytes[ipAt + 3] = total & 0xff
      bytes[ipAt + 4] = id >>> 8
      bytes[ipAt + 5] = id & 0xff
      const c = checksumFold(t.ipv4ConstantSum + total + id)
      bytes[ipAt + 10] = c >>> 8
      bytes[ipAt + 11] = c & 0xff
    } else {
      bytes[ipAt + 4] = tcpLength >>> 8
      bytes[ipAt + 5] = tcpLength & 0xff
    }
    const tcpAt = ipAt + t.ipLength
    const repr = this.emitRepr
    const headerLength = tcpHeaderLength(repr)
    if (this.pendingPayload !== null) this.pendingPayload.copyTo(bytes, tcpAt + headerLength)
    emitTcp(repr, bytes, tcpAt, null)
    const c = checksumFold(checksumAccumulate(bytes, tcpAt, tcpLength, t.pseudoSum + tcpLength))
    bytes[tcpAt + 16] = c >>> 8
    bytes[tcpAt + 17] = c & 0xff
    return tcpAt + tcpLength
  }
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

  /**
   * Active open with source address selection by the IP layer when `local`
   * is omitted (EADDRNOTAVAIL when it has none for this destination).
   */
  connect(options: Omit<ConnectOptions, 'local'> & { local?: IpAddress }): TcpConnection {
    const local = options.local ?? this.ip.selectSource(options.remote)
    if (local === null) throw new TcpError('EADDRNOTAVAIL', 'no local address to reach this destination')
    return this.layer.connect({ ...options, local })
  }

  receive(packet: IpPacketInfo, payload: Uint8Array, now: number): boolean {
    const counters = this.layer.counters
    const error = packet.dstKind !== 'unicast' ? 'not-unicast' : this.parser.parse(payload, payload.length, this.setPseudo(packet.src, packet.dst))
    if (error !== null) {
      counters.inErrs++
      this.inputErrors[error]++
      return true
    }
    const p = this.parser
    this.layer.input(packet.src, packet.dst, p.segment, payload, now, p.payloadOffset, p.payloadLength)
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
  sendSegment(local: IpAddress, remote: IpAddress, segment: TcpSegment, payload: TcpPayload | null, owner?: SegmentOwner | null): boolean {
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
    const length = tcpHeaderLength(repr) + repr.payloadLength
    if (owner) {
      let t = owner.outputState as HeaderTemplate | null
      const generation = this.ip.pathGeneration()
      if (!(t instanceof HeaderTemplate)) {
        t = new HeaderTemplate()
        owner.outputState = t
      }
      if (t.generation !== generation) this.buildTemplate(t, local, remote, generation)
      if (t.usable && t.ipLength + length <= t.mtu) {
        this.pendingTemplate = t
        this.pendingTcpLength = length
        const sent = this.ip.transmitFrame(this.frameFill)
        this.pendingTemplate = null
        this.pendingPayload = null
        this.templateCounters.template++
        return sent
      }
    }
    this.templateCounters.sendIp++
    this.pendingPseudo = this.setPseudo(local, remote)
    // TCP sets DF: RFC 1191 path MTU discovery.
    const result = this.ip.sendIp(local, remote, IP_PROTOCOL_TCP, length, this.fill, { dontFragment: true })
    this.pendingPayload = null
    return result === 'sent' || result === 'queued'
  }

  pathMtu(local: IpAddress, remote: IpAddress): number {
    return this.ip.pathMtu(local, remote)
  }

  confirmReachable(local: IpAddress, remote: IpAddress): void {
    this.ip.confirmReachable?.(local, remote)
  }

  /** (Re)builds a template from the IP layer's resolved path; unusable while resolution is pending. */
  private buildTemplate(t: HeaderTemplate, local: IpAddress, remote: IpAddress, generation: number): void {
    this.templateCounters.rebuilt++
    t.generation = generation
    t.usable = false
    // Traffic to one of our own addresses is looped back inside sendIp only.
    if (local.version !== remote.version || this.ip.isLocalAddress(remote)) return
    const path = this.ip.resolvePath(local, remote)
    if (path === 'pending' || path === 'unreachable') return
    const p = t.prefix
    p.fill(0)
    t.version = local.version
    t.mtu = path.mtu
    t.linkLength = path.linkHeader === null ? 0 : path.linkHeader.length
    if (path.linkHeader !== null) p.set(path.linkHeader, 0)
    const ipAt = t.linkLength
    if (local.version === 4 && remote.version === 4) {
      t.ipLength = 20
      p[ipAt] = 0x45
      // Flags: DF (RFC 1191 path MTU discovery); TTL; protocol.
      p[ipAt + 6] = 0x40
      p[ipAt + 8] = DEFAULT_HOP_LIMIT
      p[ipAt + 9] = IP_PROTOCOL_TCP
      for (let i = 0; i < 4; i++) {
        p[ipAt + 12 + i] = (local.v4 >>> (24 - 8 * i)) & 0xff
        p[ipAt + 16 + i] = (remote.v4 >>> (24 - 8 * i)) & 0xff
      }
      t.ipv4ConstantSum = checksumAccumulate(p, ipAt, 20)
      t.pseudoSum = pseudoHeaderSumIpv4(local.v4, remote.v4, IP_PROTOCOL_TCP, 0)
    } else if (local.version === 6 && remote.version === 6) {
      t.ipLength = 40
      p[ipAt] = 0x60
      p[ipAt + 6] = IP_PROTOCOL_TCP
      p[ipAt + 7] = DEFAULT_HOP_LIMIT
      p.set(local.v6, ipAt + 8)
      p.set(remote.v6, ipAt + 24)
      t.pseudoSum = pseudoHeaderSumIpv6(local.v6, remote.v6, IP_PROTOCOL_TCP, 0)
    }
    t.prefixLength = ipAt + t.ipLength
    t.usable = true
  }
}
