// Shared pieces of the kernel port tests: a bounded receive loop, and packet
// builders over the wire layer (stacks/wire) that write straight into pool
// buffers.
import type { ChannelEnd } from '../../nexus/channel/index.js'
import {
  emitIcmpv4,
  emitIpv4,
  emitUdp,
  ICMPV4_ECHO_REPLY,
  ICMPV4_ECHO_REQUEST,
  IP_PROTOCOL_ICMP,
  IP_PROTOCOL_UDP,
  IPV4_HEADER_LENGTH,
  parseIcmpv4,
  parseIpv4,
  parseUdp,
  UDP_HEADER_LENGTH,
  WireError,
} from '../../stacks/wire/index.js'

export const ip4 = (text: string): number => text.split('.').reduce((acc, part) => ((acc << 8) | Number(part)) >>> 0, 0)

/**
 * Receives from `end` until `done()` says so or `timeoutMs` passes, calling
 * `visit` for every packet (the buffer is released afterwards).
 */
export async function pump(
  end: ChannelEnd,
  visit: (packet: Uint8Array, flags: number) => void,
  done: () => boolean,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!done() && Date.now() < deadline) {
    await end.waitForWork(Math.max(1, Math.min(200, deadline - Date.now())))
    end.receive(256, (index, length, flags) => {
      visit(end.buffer(index).subarray(0, length), flags)
      end.release(index)
    })
    end.flush()
  }
}

/** Allocates a pool buffer, waiting (bounded) for tx buffers to come back. */
export async function allocBuffer(end: ChannelEnd): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const index = end.alloc()
    if (index >= 0) return index
    await end.waitForBuffers(20)
  }
  throw new Error('no free tx buffer within 2 s')
}

/**
 * If `packet` (at `offset`) is an IPv4 ICMP echo request, writes the echo
 * reply into `out` at `outOffset` and returns its length; 0 otherwise.
 */
export function echoReply(packet: Uint8Array, offset: number, out: Uint8Array, outOffset: number): number {
  const ip = parseIpv4(packet, offset, packet.length - offset)
  if (ip instanceof WireError || ip.protocol !== IP_PROTOCOL_ICMP) return 0
  const icmp = parseIcmpv4(packet, ip.payloadOffset, ip.payloadLength)
  if (icmp instanceof WireError || icmp.type !== ICMPV4_ECHO_REQUEST) return 0
  const payloadAt = outOffset + IPV4_HEADER_LENGTH + 8
  out.set(packet.subarray(icmp.payloadOffset, icmp.payloadOffset + icmp.payloadLength), payloadAt)
  emitIcmpv4(
    { type: ICMPV4_ECHO_REPLY, code: 0, identifier: icmp.identifier, sequence: icmp.sequence, payloadLength: icmp.payloadLength },
    out,
    outOffset + IPV4_HEADER_LENGTH,
  )
  emitIpv4(
    { src: ip.dst, dst: ip.src, protocol: IP_PROTOCOL_ICMP, ttl: 64, id: 0, dontFragment: false, moreFragments: false, fragmentOffset: 0, dscp: 0, ecn: 0, payloadLength: 8 + icmp.payloadLength },
    out,
    outOffset,
  )
  return IPV4_HEADER_LENGTH + 8 + icmp.payloadLength
}

/** Writes an IPv4/UDP datagram with `payload` at `offset`; returns its length. */
export function udpPacket(out: Uint8Array, offset: number, src: number, srcPort: number, dst: number, dstPort: number, payload: Uint8Array): number {
  out.set(payload, offset + IPV4_HEADER_LENGTH + UDP_HEADER_LENGTH)
  emitUdp({ srcPort, dstPort, payloadLength: payload.length }, out, offset + IPV4_HEADER_LENGTH, { version: 4, src, dst })
  emitIpv4(
    { src, dst, protocol: IP_PROTOCOL_UDP, ttl: 64, id: 1, dontFragment: true, moreFragments: false, fragmentOffset: 0, dscp: 0, ecn: 0, payloadLength: UDP_HEADER_LENGTH + payload.length },
    out,
    offset,
  )
  return IPV4_HEADER_LENGTH + UDP_HEADER_LENGTH + payload.length
}

/** The UDP payload of an IPv4 packet at `offset`, or null. */
export function udpPayload(packet: Uint8Array, offset: number): { srcPort: number; dstPort: number; src: number; payload: Uint8Array } | null {
  const ip = parseIpv4(packet, offset, packet.length - offset)
  if (ip instanceof WireError || ip.protocol !== IP_PROTOCOL_UDP) return null
  const udp = parseUdp(packet, ip.payloadOffset, ip.payloadLength, { version: 4, src: ip.src, dst: ip.dst })
  if (udp instanceof WireError) return null
  return { srcPort: udp.srcPort, dstPort: udp.dstPort, src: ip.src, payload: packet.subarray(udp.payloadOffset, udp.payloadOffset + udp.payloadLength) }
}

/** A python3 one-shot UDP receiver: prints "<payload> <addr> <port>" of the first datagram. */
export function udpReceiverScript(address: string, port: number, timeoutS = 8): string[] {
  return [
    'python3',
    '-c',
    `import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('${address}',${port}))\ns.settimeout(${timeoutS})\nprint('ready',flush=True)\nd,a=s.recvfrom(4096)\nprint(d.decode(),a[0],a[1],flush=True)`,
  ]
}
