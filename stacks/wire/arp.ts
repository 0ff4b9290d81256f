/** ARP for IPv4 over Ethernet (RFC 826); other hardware/protocol pairs are 'unsupported'. */
import { inBounds, readU32, writeU32 } from './bytes.js'
import { WireError } from './error.js'

export const ARP_OPERATION_REQUEST = 1
export const ARP_OPERATION_REPLY = 2
export const ARP_HARDWARE_ETHERNET = 1
export const ARP_PACKET_LENGTH = 28

export interface ArpRepr {
  operation: number
  senderMac: Uint8Array
  senderIp: number
  targetMac: Uint8Array
  targetIp: number
}

export function arpBufferLength(_repr?: ArpRepr): number {
  return ARP_PACKET_LENGTH
}

/** Trailing bytes (Ethernet padding to 60 bytes) are ignored. */
export function parseArp(bytes: Uint8Array, offset = 0, length = bytes.length - offset): ArpRepr | WireError {
  if (!inBounds(bytes, offset, length) || length < 8) return new WireError('arp', 'truncated')
  const hardwareType = (bytes[offset] << 8) | bytes[offset + 1]
  const protocolType = (bytes[offset + 2] << 8) | bytes[offset + 3]
  const hardwareLength = bytes[offset + 4]
  const protocolLength = bytes[offset + 5]
  if (hardwareType !== ARP_HARDWARE_ETHERNET || protocolType !== 0x0800 || hardwareLength !== 6 || protocolLength !== 4) {
    return new WireError('arp', 'unsupported', `htype ${hardwareType} ptype 0x${protocolType.toString(16)} hlen ${hardwareLength} plen ${protocolLength}`)
  }
  if (length < ARP_PACKET_LENGTH) return new WireError('arp', 'truncated')
  return {
    operation: (bytes[offset + 6] << 8) | bytes[offset + 7],
    senderMac: bytes.subarray(offset + 8, offset + 14),
    senderIp: readU32(bytes, offset + 14),
    targetMac: bytes.subarray(offset + 18, offset + 24),
    targetIp: readU32(bytes, offset + 24),
  }
}

export function emitArp(repr: ArpRepr, bytes: Uint8Array, offset = 0): number {
  bytes[offset] = 0
  bytes[offset + 1] = ARP_HARDWARE_ETHERNET
  bytes[offset + 2] = 0x08
  bytes[offset + 3] = 0x00
  bytes[offset + 4] = 6
  bytes[offset + 5] = 4
  bytes[offset + 6] = repr.operation >>> 8
  bytes[offset + 7] = repr.operation & 0xff
  bytes.set(repr.senderMac.subarray(0, 6), offset + 8)
  writeU32(bytes, offset + 14, repr.senderIp)
  bytes.set(repr.targetMac.subarray(0, 6), offset + 18)
  writeU32(bytes, offset + 24, repr.targetIp)
  return ARP_PACKET_LENGTH
}

/** Zero-allocation view; `reset` checks length and the Ethernet/IPv4 shape. */
export class ArpView {
  bytes: Uint8Array = new Uint8Array(0)
  offset = 0
  reset(bytes: Uint8Array, offset = 0, length = bytes.length - offset): boolean {
    this.bytes = bytes
    this.offset = offset
    if (!inBounds(bytes, offset, length) || length < ARP_PACKET_LENGTH) return false
    return bytes[offset] === 0 && bytes[offset + 1] === 1 && bytes[offset + 2] === 8 && bytes[offset + 3] === 0 && bytes[offset + 4] === 6 && bytes[offset + 5] === 4
  }
  get operation(): number {
    return (this.bytes[this.offset + 6] << 8) | this.bytes[this.offset + 7]
  }
  get senderIp(): number {
    return readU32(this.bytes, this.offset + 14)
  }
  get targetIp(): number {
    return readU32(this.bytes, this.offset + 24)
  }
  copySenderMac(out: Uint8Array, at = 0): void {
    for (let i = 0; i < 6; i++) out[at + i] = this.bytes[this.offset + 8 + i]
  }
  copyTargetMac(out: Uint8Array, at = 0): void {
    for (let i = 0; i < 6; i++) out[at + i] = this.bytes[this.offset + 18 + i]
  }
}
