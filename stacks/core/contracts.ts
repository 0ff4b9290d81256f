// The cross-layer contract of the pure stack core: what the IP layer offers to
// transports (TCP, UDP) and what it expects from them, what the core expects
// from the link below it (LinkDevice) and how time and randomness are
// injected. Nothing here touches Node: the imperative shell (stacks/sockets,
// runtime) binds LinkDevice to a NexusPort channel end and drives poll(now);
// tests bind it to an in-memory link with a fake clock (netstack3's
// functional core / imperative shell).
import type { IpAddress } from '../wire/address.js'

export type { IpAddress }

// ---------------------------------------------------------------- injection

/** Milliseconds, monotonic. Tests use a fake clock they advance by hand. */
export interface Clock {
  now(): number
}

/** Randomness (IPv4 ids, ephemeral ports, DAD/RS delays, ISN secrets). */
export interface Random {
  /** A uniformly distributed unsigned 32-bit integer. */
  nextUint32(): number
}

// --------------------------------------------------------------------- link

export type LinkType = 'ethernet' | 'ip'

/** A transmit buffer lent by the link; `bytes[0]` is where the frame starts. */
export interface TxBuffer {
  /** The whole buffer; write the frame from offset 0, at most `bytes.length` bytes. */
  readonly bytes: Uint8Array
  /** Opaque handle given back to transmit() / abortTx(). */
  readonly index: number
}

/**
 * What the Interface talks to. The shell implements it over a NexusPort's
 * ChannelEnd (acquireTx = pool alloc, transmit = TX ring send); a test
 * implements it over an array and a packet checker. The link should reuse its
 * TxBuffer objects: the core does not keep them after transmit()/abortTx().
 */
export interface LinkDevice {
  readonly linkType: LinkType
  /** Link MTU: the largest IP packet the link carries (1500 on Ethernet). */
  readonly mtu: number
  /** Our MAC on Ethernet links. */
  readonly mac?: Uint8Array
  /** A free TX buffer, or null when the pool is empty (counted, packet dropped). */
  acquireTx(): TxBuffer | null
  /** Queue the first `length` bytes of buffer `index` for transmission. */
  transmit(index: number, length: number): void
  /** Give back a buffer acquired but not sent. */
  abortTx(index: number): void
  /** Optional: push queued TX descriptors out (ring the doorbell) after a batch. */
  flush?(): void
}

// ------------------------------------------------------- received IP packets

/** How the destination address of a received packet relates to us. */
export type DestinationKind = 'unicast' | 'broadcast' | 'multicast'

/**
 * A received IP packet as seen by a transport. The IP layer refills ONE
 * object per version for every packet (no allocation per packet): the object
 * and its addresses are valid only during the receive() call. Copy with
 * `copyIpAddress` what must outlive it.
 */
export interface IpPacketInfo {
  version: 4 | 6
  src: IpAddress
  dst: IpAddress
  /** TTL (IPv4) or hop limit (IPv6) as received. */
  hopLimit: number
  /** The upper-layer protocol (after IPv6 extension headers). */
  protocol: number
  dstKind: DestinationKind
  /** The 2 ECN bits of the TOS / traffic class byte. */
  ecn: number
  /** DSCP (6 bits). */
  dscp: number
  /**
   * The whole IP packet (header + payload), e.g. for quoting in an ICMP
   * error. For a reassembled packet this is the reassembly buffer.
   */
  ipPacket: Uint8Array
}

/** ICMP / ICMPv6 errors, normalised across versions. */
export type IcmpErrorKind =
  | 'net-unreachable'
  | 'host-unreachable'
  | 'protocol-unreachable'
  | 'port-unreachable'
  /** ICMPv4 3/4 (fragmentation needed and DF set) and ICMPv6 type 2. */
  | 'packet-too-big'
  | 'admin-prohibited'
  | 'source-route-failed'
  | 'address-unreachable'
  /** TTL / hop limit exceeded in transit. */
  | 'time-exceeded'
  /** Fragment reassembly time exceeded. */
  | 'reassembly-time-exceeded'
  | 'parameter-problem'

export interface IcmpErrorInfo {
  kind: IcmpErrorKind
  version: 4 | 6
  /** Raw ICMP type and code, for diagnostics. */
  type: number
  code: number
  /** Who sent the error. */
  from: IpAddress
  /**
   * For 'packet-too-big': the new path MTU, already applied to the PMTU
   * cache (and the path generation bumped) before the transport hears of it.
   */
  mtu?: number
  /**
   * RFC 1122 4.2.3.9 / RFC 5461: "hard" errors (protocol/port unreachable,
   * admin prohibited on some stacks) may abort a connection in SYN-SENT;
   * the others are soft. Which to honour is the transport's decision.
   */
  hard: boolean
}

/** The part of the offending packet quoted in an ICMP error. */
export interface QuotedPacket {
  version: 4 | 6
  /** Source and destination of the offending packet: our local and the remote address. */
  src: IpAddress
  dst: IpAddress
  protocol: number
  /** The quoted transport header (at least 8 bytes: ports and, for TCP, the sequence number). */
  transportHeader: Uint8Array
}

// ---------------------------------------------------------------- transports

export interface TransportProtocol {
  /** IP protocol number (6 TCP, 17 UDP). */
  readonly protocol: number
  /**
   * A packet for this protocol addressed to us. `payload` is the transport
   * segment (header + data), a view valid only during the call.
   * Return false when no socket wants it AND the IP layer should answer with
   * an ICMP port unreachable (UDP). A transport that answers by itself (TCP
   * sends RST) or drops (bad checksum, counted by the transport) returns true.
   */
  receive(packet: IpPacketInfo, payload: Uint8Array, now: number): boolean
  /** An ICMP error quoting a packet this protocol sent. */
  receiveIcmpError(error: IcmpErrorInfo, quoted: QuotedPacket, now: number): void
  /** Optional timers: run what is due at `now`. */
  poll?(now: number): void
  /** Optional: the earliest time poll() has work (ms), Infinity if none. */
  nextTimeout?(): number
}

// --------------------------------------------------------------------- output

export type SendResult =
  /** Handed to the link. */
  | 'sent'
  /** Waiting for ARP/NDP resolution (bounded queue; may still be dropped). */
  | 'queued'
  | 'no-route'
  /** No TX buffer or the resolution queue is full. */
  | 'no-buffer'
  /** Larger than the path MTU with dontFragment set (or IPv6 without fragmentation allowed). */
  | 'too-big'

/** Writes exactly `payloadLength` transport bytes at `bytes[offset...]`. */
export type PayloadWriter = (bytes: Uint8Array, offset: number) => void

export interface SendOptions {
  /** TTL / hop limit; default 64. */
  hopLimit?: number
  /** IPv4 DF. Default false for UDP-ish senders; TCP sets it (PMTU discovery). */
  dontFragment?: boolean
  /** Traffic class byte (DSCP << 2 | ECN). */
  tos?: number
}

/**
 * A resolved path for a connection's header template (DESIGN.md §2). It is
 * a snapshot: when `generation !== ip.pathGeneration()` (a neighbour's MAC,
 * a route or a PMTU changed somewhere) resolve again.
 */
export interface Path {
  readonly version: 4 | 6
  readonly local: IpAddress
  readonly remote: IpAddress
  /** Path MTU (IP packet size, header included). */
  readonly mtu: number
  /**
   * The Ethernet header (14 bytes: next-hop MAC, our MAC, ethertype) to put
   * in front of the IP header on Ethernet links; null on IP links.
   */
  readonly linkHeader: Uint8Array | null
  readonly generation: number
}

export type PathResult = Path | 'pending' | 'unreachable'

/** Writes a whole frame (link header when any + IP + transport) at bytes[0...]; returns its length, 0 to cancel. */
export type FrameWriter = (bytes: Uint8Array) => number

export interface IpOutput {
  /**
   * Build and send an IP packet: the IP layer writes the link and IP
   * headers, `fill` the transport bytes (the transport computes its own
   * checksum; it knows src and dst). IPv4 packets larger than the path MTU
   * are fragmented unless dontFragment; IPv6 packets are fragmented by the
   * source only (RFC 8200 §4.5).
   */
  sendIp(src: IpAddress, dst: IpAddress, protocol: number, payloadLength: number, fill: PayloadWriter, options?: SendOptions): SendResult
  /** Source address selection (RFC 6724 lite for v6: same prefix first, then any preferred address). */
  selectSource(dst: IpAddress): IpAddress | null
  /** Whether `address` is one of ours and usable (IPv6: DAD done). */
  isLocalAddress(address: IpAddress): boolean
  /** The path MTU towards `remote` (IP packet size), the link MTU if unknown. */
  pathMtu(local: IpAddress, remote: IpAddress): number
  /**
   * For header templates: next hop resolved → a Path; 'pending' = ARP/NDP
   * resolution started, ask again later (after a poll); 'unreachable' = no
   * route or resolution failed.
   */
  resolvePath(local: IpAddress, remote: IpAddress): PathResult
  /** Bumps whenever any neighbour entry, route or PMTU changes. */
  pathGeneration(): number
  /** Transmit a frame written by the transport (template path); false if no TX buffer. */
  transmitFrame(fill: FrameWriter): boolean
  /** The next IPv4 identification value (for templates writing their own IPv4 header). */
  nextIpv4Id(): number
  /**
   * Optional upper-layer reachability hint (RFC 4861 §7.3.1: e.g. "a TCP
   * acknowledgment of new data"): keeps the next hop REACHABLE without NUD
   * probes. Cheap; call it at most once per ACK that advances.
   */
  confirmReachable?(local: IpAddress, remote: IpAddress): void
}

// ------------------------------------------------------------------ helpers

/** Copy an address out of a per-packet scratch object. */
export function copyIpAddress(address: IpAddress): IpAddress {
  return address.version === 4 ? { version: 4, v4: address.v4 } : { version: 6, v6: address.v6.slice() }
}
