// A minimal TCP receiver for the vnet_hdr benchmark: JavaScript is the far
// end of a kernel TCP connection, so "TCP payload kernel -> JavaScript" is
// measured with one TUN, one I/O thread and one JS thread (no relay, no
// second kernel stack). A benchmark tool like bench/c/nexus_loop.c, not the
// product stack (stacks/core/tcp): one IPv4 connection at a time, no
// retransmission of its own, no SACK or timestamps.
//
// ACK policy (bench/c/nexus_loop.c `tun-sink` does exactly the same, so the
// two are comparable):
//  - SYN -> SYN-ACK with MSS and, if the peer offered it, window scale;
//  - in-order data advances RCV.NXT; an ACK goes out for every second
//    in-order packet — RFC 5681 4.2: "an ACK SHOULD be generated for at least
//    every second full-sized segment", applied to the TSO super-packets the
//    TUN hands over (what GRO would have merged; each is ~44 segments) — and
//    at the end of every receive batch, so the window keeps moving;
//  - out-of-order or duplicate data: an immediate duplicate ACK (RFC 5681
//    4.2: "SHOULD send an immediate duplicate ACK when an out-of-order
//    segment arrives");
//  - FIN in order -> ACK + our FIN; RST forgets the connection.
// The advertised window is 65535 << SINK_WINDOW_SCALE (8 MiB): nothing is
// buffered, the data is counted and dropped. Received checksums are trusted,
// as a virtio receiver trusts NEEDS_CSUM packets from the host.
//
// ACKs come from a per-connection header template (vnet header + IPv4 +
// TCP, built once with the wire layer); each ACK copies it and patches the
// acknowledgment number and the checksum incrementally (RFC 1624), so the
// data path allocates nothing.
import { VIRTIO_HDR } from '../nexus/ports/native.js'
import {
  checksumUpdate32,
  emitIpv4,
  emitTcp,
  IP_PROTOCOL_TCP,
  IPV4_HEADER_LENGTH,
  Ipv4View,
  parseTcp,
  readU16,
  readU32,
  TCP_ACK,
  TCP_FIN,
  TCP_HEADER_LENGTH,
  TCP_RST,
  TCP_SYN,
  TcpView,
  WireError,
  writeU16,
  writeU32,
  type TcpEmitRepr,
} from '../stacks/wire/index.js'

export const SINK_MSS = 1460
export const SINK_WINDOW_SCALE = 7
/** Our initial sequence number: fixed, this is a benchmark peer. */
export const SINK_ISS = 0x10000000
const SINK_WINDOW = 65535

export const REPLY_NONE = 0
export const REPLY_ACK = 1
export const REPLY_SYN_ACK = 2
export const REPLY_FIN_ACK = 3
export type SinkReply = typeof REPLY_NONE | typeof REPLY_ACK | typeof REPLY_SYN_ACK | typeof REPLY_FIN_ACK

/** Longest reply: vnet header + IPv4 + TCP with MSS and window scale options. */
export const SINK_MAX_REPLY = VIRTIO_HDR + IPV4_HEADER_LENGTH + TCP_HEADER_LENGTH + 8

const ACK_OFFSET = VIRTIO_HDR + IPV4_HEADER_LENGTH + 8
const CHECKSUM_OFFSET = VIRTIO_HDR + IPV4_HEADER_LENGTH + 16
const ACK_LENGTH = VIRTIO_HDR + IPV4_HEADER_LENGTH + TCP_HEADER_LENGTH

export class TcpAckSink {
  /** In-order TCP payload bytes received (what the benchmark reports). */
  payloadBytes = 0
  /** Packets that advanced RCV.NXT. */
  inOrderPackets = 0
  outOfOrderPackets = 0
  duplicatePackets = 0
  /** Not IPv4/TCP, or not the current connection. */
  ignoredPackets = 0
  /** Too short or with header lengths that do not fit: counted, never thrown. */
  malformedPackets = 0
  connections = 0
  repliesEmitted = 0

  private active = false
  private localAddr = 0
  private peerAddr = 0
  private localPort = 0
  private peerPort = 0
  private rcvNxt = 0
  private sndNxt = 0
  private peerScales = false
  private finSent = false
  private unackedPackets = 0
  private readonly ip = new Ipv4View()
  private readonly tcp = new TcpView()
  private readonly template = new Uint8Array(ACK_LENGTH)
  private templateAck = 0
  private templateChecksum = 0

  /** True while a connection is open (after its SYN, before RST or a new SYN). */
  get connected(): boolean {
    return this.active
  }

  /** Our FIN went out: the sender closed and we answered. */
  get finished(): boolean {
    return this.finSent
  }

  /** RCV.NXT of the current connection. */
  get receiveNext(): number {
    return this.rcvNxt
  }

  /**
   * Feeds one received packet (`length` bytes: the 12-byte virtio header,
   * then IPv4). Returns the reply that must go out now, before the next
   * packet is fed (emitReply writes it).
   */
  receive(bytes: Uint8Array, length: number): SinkReply {
    const ip = this.ip
    if (length < VIRTIO_HDR + IPV4_HEADER_LENGTH || !ip.reset(bytes, VIRTIO_HDR, length - VIRTIO_HDR)) {
      if (length > VIRTIO_HDR && bytes[VIRTIO_HDR] >> 4 === 4) this.malformedPackets++
      else this.ignoredPackets++
      return REPLY_NONE
    }
    if (ip.protocol !== IP_PROTOCOL_TCP || ip.isFragment) {
      this.ignoredPackets++
      return REPLY_NONE
    }
    const tcp = this.tcp
    const segmentLength = ip.payloadLength
    if (!tcp.reset(bytes, ip.payloadOffset, segmentLength)) {
      this.malformedPackets++
      return REPLY_NONE
    }
    const flags = tcp.flags
    if ((flags & TCP_SYN) !== 0) return this.onSyn(bytes, flags, segmentLength)
    if (!this.active || ip.src !== this.peerAddr || ip.dst !== this.localAddr || tcp.srcPort !== this.peerPort || tcp.dstPort !== this.localPort) {
      this.ignoredPackets++
      return REPLY_NONE
    }
    if ((flags & TCP_RST) !== 0) {
      this.active = false
      return REPLY_NONE
    }
    const seq = tcp.seq
    const dataLength = segmentLength - tcp.headerLength
    // Sequence arithmetic modulo 2^32 (RFC 9293 3.4): signed 32-bit differences.
    const ahead = (seq - this.rcvNxt) | 0
    if (dataLength > 0) {
      const end = ahead + dataLength
      if (ahead > 0) {
        this.outOfOrderPackets++
        return REPLY_ACK
      }
      if (end <= 0) {
        this.duplicatePackets++
        return REPLY_ACK
      }
      // In order, possibly overlapping what we have: only the new bytes count.
      this.rcvNxt = (this.rcvNxt + end) >>> 0
      this.payloadBytes += end
      this.inOrderPackets++
      this.unackedPackets++
    }
    if ((flags & TCP_FIN) !== 0) {
      if (((seq + dataLength) >>> 0) !== this.rcvNxt) {
        this.outOfOrderPackets++
        return REPLY_ACK
      }
      this.rcvNxt = (this.rcvNxt + 1) >>> 0
      return this.finSent ? REPLY_ACK : REPLY_FIN_ACK
    }
    return this.unackedPackets >= 2 ? REPLY_ACK : REPLY_NONE
  }

  /** End of a receive batch: REPLY_ACK when received data is not acknowledged yet. */
  endBatch(): SinkReply {
    return this.active && this.unackedPackets > 0 ? REPLY_ACK : REPLY_NONE
  }

  /**
   * Writes `reply` (virtio header with gso_type NONE, IPv4, TCP, complete
   * checksums) at the start of `out`; returns its length (0 for REPLY_NONE
   * or without a connection). Send it with the DESC_VNET_HDR flag.
   */
  emitReply(reply: SinkReply, out: Uint8Array): number {
    if (reply === REPLY_NONE || !this.active) return 0
    this.unackedPackets = 0
    this.repliesEmitted++
    if (reply === REPLY_ACK) {
      out.set(this.template)
      writeU32(out, ACK_OFFSET, this.rcvNxt)
      writeU16(out, CHECKSUM_OFFSET, checksumUpdate32(this.templateChecksum, this.templateAck, this.rcvNxt))
      return ACK_LENGTH
    }
    if (reply === REPLY_SYN_ACK) {
      const options = this.peerScales ? { mss: SINK_MSS, windowScale: SINK_WINDOW_SCALE } : { mss: SINK_MSS }
      return this.emitSegment(out, SINK_ISS, this.rcvNxt, TCP_SYN | TCP_ACK, options)
    }
    const length = this.emitSegment(out, this.sndNxt, this.rcvNxt, TCP_FIN | TCP_ACK, {})
    this.finSent = true
    this.sndNxt = (this.sndNxt + 1) >>> 0
    this.buildTemplate()
    return length
  }

  private onSyn(bytes: Uint8Array, flags: number, segmentLength: number): SinkReply {
    if ((flags & TCP_ACK) !== 0) {
      this.ignoredPackets++
      return REPLY_NONE
    }
    // Rare (once per connection): the full parser, for the options.
    const repr = parseTcp(bytes, this.ip.payloadOffset, segmentLength)
    if (repr instanceof WireError) {
      this.malformedPackets++
      return REPLY_NONE
    }
    this.active = true
    this.connections++
    this.localAddr = this.ip.dst
    this.peerAddr = this.ip.src
    this.localPort = repr.dstPort
    this.peerPort = repr.srcPort
    this.peerScales = repr.options.windowScale !== undefined
    this.rcvNxt = (repr.seq + 1) >>> 0
    this.sndNxt = (SINK_ISS + 1) >>> 0
    this.finSent = false
    this.unackedPackets = 0
    this.buildTemplate()
    return REPLY_SYN_ACK
  }

  /** The pure-ACK template for the current SND.NXT, with its checksum for acknowledgment number 0. */
  private buildTemplate(): void {
    this.emitSegment(this.template, this.sndNxt, 0, TCP_ACK, {})
    this.templateAck = readU32(this.template, ACK_OFFSET)
    this.templateChecksum = readU16(this.template, CHECKSUM_OFFSET)
  }

  private emitSegment(out: Uint8Array, seq: number, ack: number, flags: number, options: TcpEmitRepr['options']): number {
    out.fill(0, 0, VIRTIO_HDR)
    const tcp: TcpEmitRepr = {
      srcPort: this.localPort,
      dstPort: this.peerPort,
      seq,
      ack,
      flags,
      window: SINK_WINDOW,
      urgentPointer: 0,
      options,
      payloadLength: 0,
    }
    const tcpLength = emitTcp(tcp, out, VIRTIO_HDR + IPV4_HEADER_LENGTH, { version: 4, src: this.localAddr, dst: this.peerAddr })
    emitIpv4(
      { src: this.localAddr, dst: this.peerAddr, protocol: IP_PROTOCOL_TCP, ttl: 64, id: 0, dontFragment: true, moreFragments: false, fragmentOffset: 0, dscp: 0, ecn: 0, payloadLength: tcpLength },
      out,
      VIRTIO_HDR,
    )
    return VIRTIO_HDR + IPV4_HEADER_LENGTH + tcpLength
  }
}

