// Builds test packets byte by byte (IPv4/IPv6, TCP/UDP/ICMP, fragments,
// Ethernet, ARP) for the classifier tests. Checksums are left zero: the
// classifier does not verify them.
import { parseIPv4, parseIPv6 } from '../../classifier/key.js'

export interface PacketSpec {
  ipVersion: 4 | 6
  protocol: number
  src: string
  dst: string
  srcPort?: number
  dstPort?: number
  payload?: number
  /** Fragment: byte offset (multiple of 8) and more-fragments flag, with an id. */
  fragment?: { offset: number; more: boolean; id: number }
  ethernet?: boolean
}

function addressBytes(address: string, ipVersion: 4 | 6): Uint8Array {
  if (ipVersion === 4) {
    const v = parseIPv4(address)
    if (v < 0) throw new Error(`bad IPv4 ${address}`)
    return Uint8Array.of(v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255)
  }
  const words = new Uint32Array(4)
  if (!parseIPv6(address, words, 0)) throw new Error(`bad IPv6 ${address}`)
  const out = new Uint8Array(16)
  for (let i = 0; i < 4; i++) new DataView(out.buffer).setUint32(4 * i, words[i])
  return out
}

function transport(spec: PacketSpec): Uint8Array {
  const payload = spec.payload ?? 8
  if (spec.protocol === 6 || spec.protocol === 17) {
    const header = spec.protocol === 6 ? 20 : 8
    const out = new Uint8Array(header + payload)
    const view = new DataView(out.buffer)
    view.setUint16(0, spec.srcPort ?? 0)
    view.setUint16(2, spec.dstPort ?? 0)
    if (spec.protocol === 6) out[12] = 5 << 4
    else view.setUint16(4, header + payload)
    return out
  }
  const out = new Uint8Array(8 + payload)
  out[0] = spec.protocol === 58 ? 128 : 8 // echo request
  return out
}

export function buildPacket(spec: PacketSpec, l4Override?: Uint8Array): Uint8Array {
  const l4 = l4Override ?? transport(spec)
  let ip: Uint8Array
  if (spec.ipVersion === 4) {
    ip = new Uint8Array(20 + l4.length)
    const view = new DataView(ip.buffer)
    ip[0] = 0x45
    view.setUint16(2, ip.length)
    if (spec.fragment !== undefined) {
      view.setUint16(4, spec.fragment.id)
      view.setUint16(6, (spec.fragment.more ? 0x2000 : 0) | (spec.fragment.offset >>> 3))
    }
    ip[8] = 64
    ip[9] = spec.protocol
    ip.set(addressBytes(spec.src, 4), 12)
    ip.set(addressBytes(spec.dst, 4), 16)
    ip.set(l4, 20)
  } else {
    const fragmentHeader = spec.fragment !== undefined ? 8 : 0
    ip = new Uint8Array(40 + fragmentHeader + l4.length)
    const view = new DataView(ip.buffer)
    ip[0] = 0x60
    view.setUint16(4, fragmentHeader + l4.length)
    ip[6] = spec.fragment !== undefined ? 44 : spec.protocol
    ip[7] = 64
    ip.set(addressBytes(spec.src, 6), 8)
    ip.set(addressBytes(spec.dst, 6), 24)
    if (spec.fragment !== undefined) {
      ip[40] = spec.protocol
      view.setUint16(42, spec.fragment.offset | (spec.fragment.more ? 1 : 0))
      view.setUint32(44, spec.fragment.id)
    }
    ip.set(l4, 40 + fragmentHeader)
  }
  if (!spec.ethernet) return ip
  const frame = new Uint8Array(14 + ip.length)
  frame.set([0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2], 0)
  frame[12] = spec.ipVersion === 4 ? 0x08 : 0x86
  frame[13] = spec.ipVersion === 4 ? 0x00 : 0xdd
  frame.set(ip, 14)
  return frame
}

/** Two fragments of one datagram: the first carries the transport header. */
export function fragmentPair(spec: PacketSpec, id: number): [Uint8Array, Uint8Array] {
  const l4 = transport({ ...spec, payload: 24 })
  const first = buildPacket({ ...spec, fragment: { offset: 0, more: true, id } }, l4.subarray(0, 16))
  const later = buildPacket({ ...spec, fragment: { offset: 16, more: false, id } }, l4.subarray(16))
  return [first, later]
}

export function arpRequest(senderIp: string, targetIp: string): Uint8Array {
  const frame = new Uint8Array(42)
  frame.fill(0xff, 0, 6)
  frame.set([0x02, 0, 0, 0, 0, 2], 6)
  frame[12] = 0x08
  frame[13] = 0x06
  const view = new DataView(frame.buffer)
  view.setUint16(14, 1)
  view.setUint16(16, 0x0800)
  frame[18] = 6
  frame[19] = 4
  view.setUint16(20, 1)
  frame.set([0x02, 0, 0, 0, 0, 2], 22)
  frame.set(addressBytes(senderIp, 4), 28)
  frame.set(addressBytes(targetIp, 4), 38)
  return frame
}
