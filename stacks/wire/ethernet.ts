/** Ethernet II frames with at most one IEEE 802.1Q tag. */
import { inBounds } from './bytes.js'
import { WireError } from './error.js'

export const ETHERTYPE_IPV4 = 0x0800
export const ETHERTYPE_ARP = 0x0806
export const ETHERTYPE_VLAN = 0x8100
export const ETHERTYPE_IPV6 = 0x86dd

export const ETHERNET_HEADER_LENGTH = 14
export const VLAN_TAG_LENGTH = 4

export interface VlanTag {
  /** Priority code point, 0..7. */
  pcp: number
  /** Drop eligible indicator. */
  dei: boolean
  /** VLAN identifier, 0..4095. */
  id: number
}

export interface EthernetRepr {
  dst: Uint8Array
  src: Uint8Array
  /** The inner ethertype (after the tag when tagged). */
  ethertype: number
  vlan?: VlanTag
  /** 14, or 18 when tagged. Ignored by emit (computed from `vlan`). */
  headerLength: number
  /** Absolute offset in the parsed bytes. Ignored by emit. */
  payloadOffset: number
  payloadLength: number
}

/** What emitEthernet needs. */
export type EthernetEmitRepr = Pick<EthernetRepr, 'dst' | 'src' | 'ethertype' | 'vlan'>

export function ethernetHeaderLength(repr: Pick<EthernetRepr, 'vlan'>): number {
  return repr.vlan === undefined ? ETHERNET_HEADER_LENGTH : ETHERNET_HEADER_LENGTH + VLAN_TAG_LENGTH
}

/**
 * Parses the header at `offset`. Values below 0x0600 in the type field are
 * 802.3 lengths, not ethertypes: 'unsupported'. A second (QinQ) tag is left
 * as the ethertype for the caller to reject.
 */
export function parseEthernet(bytes: Uint8Array, offset = 0, length = bytes.length - offset): EthernetRepr | WireError {
  if (!inBounds(bytes, offset, length) || length < ETHERNET_HEADER_LENGTH) {
    return new WireError('ethernet', 'truncated', `${length} bytes`)
  }
  let ethertype = (bytes[offset + 12] << 8) | bytes[offset + 13]
  let headerLength = ETHERNET_HEADER_LENGTH
  let vlan: VlanTag | undefined
  if (ethertype === ETHERTYPE_VLAN) {
    if (length < ETHERNET_HEADER_LENGTH + VLAN_TAG_LENGTH) return new WireError('ethernet', 'truncated', 'vlan tag')
    const tci = (bytes[offset + 14] << 8) | bytes[offset + 15]
    vlan = { pcp: tci >>> 13, dei: (tci & 0x1000) !== 0, id: tci & 0x0fff }
    ethertype = (bytes[offset + 16] << 8) | bytes[offset + 17]
    headerLength += VLAN_TAG_LENGTH
  }
  if (ethertype < 0x0600) return new WireError('ethernet', 'unsupported', `802.3 length field ${ethertype}`)
  const repr: EthernetRepr = {
    dst: bytes.subarray(offset, offset + 6),
    src: bytes.subarray(offset + 6, offset + 12),
    ethertype,
    headerLength,
    payloadOffset: offset + headerLength,
    payloadLength: length - headerLength,
  }
  if (vlan !== undefined) repr.vlan = vlan
  return repr
}

/** Writes the header at `offset`; returns the header length. Unchecked: the caller sizes the buffer. */
export function emitEthernet(repr: EthernetEmitRepr, bytes: Uint8Array, offset = 0): number {
  bytes.set(repr.dst.subarray(0, 6), offset)
  bytes.set(repr.src.subarray(0, 6), offset + 6)
  let at = offset + 12
  if (repr.vlan !== undefined) {
    bytes[at] = ETHERTYPE_VLAN >>> 8
    bytes[at + 1] = ETHERTYPE_VLAN & 0xff
    const tci = ((repr.vlan.pcp & 7) << 13) | (repr.vlan.dei ? 0x1000 : 0) | (repr.vlan.id & 0x0fff)
    bytes[at + 2] = tci >>> 8
    bytes[at + 3] = tci & 0xff
    at += 4
  }
  bytes[at] = repr.ethertype >>> 8
  bytes[at + 1] = repr.ethertype & 0xff
  return at + 2 - offset
}

/**
 * Zero-allocation view for hot paths (classifier, switch). `reset` checks
 * only that the fixed header fits; getters read straight from the buffer.
 */
export class EthernetView {
  bytes: Uint8Array = new Uint8Array(0)
  offset = 0
  length = 0
  /** 14 or 18, set by reset. */
  headerLength = ETHERNET_HEADER_LENGTH

  reset(bytes: Uint8Array, offset = 0, length = bytes.length - offset): boolean {
    this.bytes = bytes
    this.offset = offset
    this.length = length
    if (!inBounds(bytes, offset, length) || length < ETHERNET_HEADER_LENGTH) return false
    const outer = (bytes[offset + 12] << 8) | bytes[offset + 13]
    this.headerLength = outer === ETHERTYPE_VLAN ? ETHERNET_HEADER_LENGTH + VLAN_TAG_LENGTH : ETHERNET_HEADER_LENGTH
    return length >= this.headerLength
  }
  get ethertype(): number {
    const at = this.offset + this.headerLength - 2
    return (this.bytes[at] << 8) | this.bytes[at + 1]
  }
  get tagged(): boolean {
    return this.headerLength !== ETHERNET_HEADER_LENGTH
  }
  get vlanId(): number {
    return this.tagged ? ((this.bytes[this.offset + 14] << 8) | this.bytes[this.offset + 15]) & 0x0fff : -1
  }
  get payloadOffset(): number {
    return this.offset + this.headerLength
  }
  get payloadLength(): number {
    return this.length - this.headerLength
  }
  /** Copies the destination MAC into `out` (no allocation). */
  copyDst(out: Uint8Array, at = 0): void {
    for (let i = 0; i < 6; i++) out[at + i] = this.bytes[this.offset + i]
  }
  copySrc(out: Uint8Array, at = 0): void {
    for (let i = 0; i < 6; i++) out[at + i] = this.bytes[this.offset + 6 + i]
  }
  isBroadcastDst(): boolean {
    for (let i = 0; i < 6; i++) if (this.bytes[this.offset + i] !== 0xff) return false
    return true
  }
  isMulticastDst(): boolean {
    return (this.bytes[this.offset] & 1) !== 0
  }
}
