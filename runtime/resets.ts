// TCP segments the switch writes on behalf of a stopped instance, so the
// peers of its connections learn at once that they are gone (DESIGN.md §4).
//
// The switch does not track sequence numbers per flow (that would cost a
// lookup per packet). Instead it asks the peer: a bare ACK with a sequence
// number far outside the window makes the peer answer with an ACK carrying
// its own SND.NXT in the acknowledgment field (RFC 793 §3.9 "If an incoming
// segment is not acceptable, an acknowledgment should be sent in reply";
// RFC 5961 §4 challenge ACK). The answer is then met with an RST whose
// sequence number is that acknowledgment, "the reset takes its sequence
// number from the ACK field of the segment" (RFC 793 §3.4), which is exactly
// RCV.NXT and so accepted even under RFC 5961's strict RST check.
import { checksumAccumulate, checksumFold, pseudoHeaderSumIpv4, pseudoHeaderSumIpv6 } from '../stacks/wire/checksum.js'
import { parseIpAddress } from '../stacks/wire/address.js'

export const TCP_HEADER_BYTES = 20

export interface SegmentSpec {
  ipVersion: 4 | 6
  src: string
  dst: string
  srcPort: number
  dstPort: number
  seq: number
  ack: number
  flags: number
}

/** Writes an IPv4/IPv6 + TCP segment without payload into `out`; returns its length, or 0 on a bad address. */
export function writeTcpSegment(out: Uint8Array, spec: SegmentSpec): number {
  const src = parseIpAddress(spec.src)
  const dst = parseIpAddress(spec.dst)
  if (src === null || dst === null || src.version !== spec.ipVersion || dst.version !== spec.ipVersion) return 0
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  const ipHeader = spec.ipVersion === 4 ? 20 : 40
  const length = ipHeader + TCP_HEADER_BYTES
  out.fill(0, 0, length)
  let pseudo: number
  if (src.version === 4 && dst.version === 4) {
    out[0] = 0x45
    view.setUint16(2, length)
    out[8] = 64
    out[9] = 6
    view.setUint32(12, src.v4)
    view.setUint32(16, dst.v4)
    view.setUint16(10, checksumFold(checksumAccumulate(out, 0, 20)))
    pseudo = pseudoHeaderSumIpv4(src.v4, dst.v4, 6, TCP_HEADER_BYTES)
  } else if (src.version === 6 && dst.version === 6) {
    out[0] = 0x60
    view.setUint16(4, TCP_HEADER_BYTES)
    out[6] = 6
    out[7] = 64
    out.set(src.v6, 8)
    out.set(dst.v6, 24)
    pseudo = pseudoHeaderSumIpv6(src.v6, dst.v6, 6, TCP_HEADER_BYTES)
  } else {
    return 0
  }
  const tcp = ipHeader
  view.setUint16(tcp, spec.srcPort)
  view.setUint16(tcp + 2, spec.dstPort)
  view.setUint32(tcp + 4, spec.seq >>> 0)
  view.setUint32(tcp + 8, spec.ack >>> 0)
  out[tcp + 12] = (TCP_HEADER_BYTES / 4) << 4
  out[tcp + 13] = spec.flags
  view.setUint16(tcp + 16, checksumFold(checksumAccumulate(out, tcp, TCP_HEADER_BYTES, pseudo)))
  return length
}

/** Where a TCP segment's fields are in a bare IP packet; -1 when it is not TCP. */
export function tcpOffset(buf: Uint8Array, off: number, length: number): number {
  if (length < 20) return -1
  const version = buf[off] >>> 4
  let tcp: number
  if (version === 4) {
    if (buf[off + 9] !== 6 || ((buf[off + 6] & 0x1f) | buf[off + 7]) !== 0) return -1
    tcp = (buf[off] & 0x0f) * 4
  } else if (version === 6) {
    if (length < 40 || buf[off + 6] !== 6) return -1
    tcp = 40
  } else {
    return -1
  }
  return tcp + TCP_HEADER_BYTES <= length ? off + tcp : -1
}
