// Small address helpers the core needs on its hot paths, allocation free.
import type { IpAddress } from './contracts.js'

export function sameAddress(a: IpAddress, b: IpAddress): boolean {
  if (a.version === 4) return b.version === 4 && a.v4 === b.v4
  if (b.version !== 6) return false
  const x = a.v6
  const y = b.v6
  for (let i = 0; i < 16; i++) if (x[i] !== y[i]) return false
  return true
}

/** Whether the first `prefixLength` bits of `address` equal those of `prefix`. */
export function prefixMatches(address: IpAddress, prefix: IpAddress, prefixLength: number): boolean {
  if (address.version === 4) {
    if (prefix.version !== 4) return false
    if (prefixLength === 0) return true
    const mask = prefixLength >= 32 ? 0xffffffff : (0xffffffff << (32 - prefixLength)) >>> 0
    return ((address.v4 & mask) >>> 0) === ((prefix.v4 & mask) >>> 0)
  }
  if (prefix.version !== 6) return false
  return bytesPrefixMatch(address.v6, prefix.v6, prefixLength)
}

export function bytesPrefixMatch(a: Uint8Array, b: Uint8Array, prefixLength: number): boolean {
  const whole = prefixLength >>> 3
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false
  const rest = prefixLength & 7
  if (rest === 0) return true
  const mask = (0xff << (8 - rest)) & 0xff
  return (a[whole] & mask) === (b[whole] & mask)
}

/** The address with host bits cleared. */
export function maskAddress(address: IpAddress, prefixLength: number): IpAddress {
  if (address.version === 4) {
    const mask = prefixLength === 0 ? 0 : prefixLength >= 32 ? 0xffffffff : (0xffffffff << (32 - prefixLength)) >>> 0
    return { version: 4, v4: (address.v4 & mask) >>> 0 }
  }
  const out = new Uint8Array(16)
  for (let i = 0; i < 16; i++) {
    const bits = Math.max(0, Math.min(8, prefixLength - i * 8))
    out[i] = address.v6[i] & ((0xff << (8 - bits)) & 0xff)
  }
  return { version: 6, v6: out }
}

/** IPv4 directed broadcast of a prefix (all host bits set). */
export function ipv4Broadcast(v4: number, prefixLength: number): number {
  if (prefixLength >= 31) return 0xffffffff
  const host = (1 << (32 - prefixLength)) - 1
  return (v4 | host) >>> 0
}

export function isIpv4Multicast(v4: number): boolean {
  return v4 >>> 28 === 0xe
}

export function isIpv6Multicast(v6: Uint8Array): boolean {
  return v6[0] === 0xff
}

export function isIpv6Unspecified(v6: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (v6[i] !== 0) return false
  return true
}

export function isIpv6LinkLocal(v6: Uint8Array): boolean {
  return v6[0] === 0xfe && (v6[1] & 0xc0) === 0x80
}

/** Solicited-node multicast address ff02::1:ffXX:XXXX (RFC 4291 §2.7.1). */
export function solicitedNodeAddress(target: Uint8Array, out: Uint8Array = new Uint8Array(16)): Uint8Array {
  out.fill(0)
  out[0] = 0xff
  out[1] = 0x02
  out[11] = 0x01
  out[12] = 0xff
  out[13] = target[13]
  out[14] = target[14]
  out[15] = target[15]
  return out
}

/** Ethernet multicast MAC for an IPv6 multicast address: 33:33 + low 32 bits (RFC 2464 §7). */
export function ipv6MulticastMac(group: Uint8Array, out: Uint8Array, offset = 0): void {
  out[offset] = 0x33
  out[offset + 1] = 0x33
  out[offset + 2] = group[12]
  out[offset + 3] = group[13]
  out[offset + 4] = group[14]
  out[offset + 5] = group[15]
}

/** Ethernet multicast MAC for an IPv4 multicast group: 01:00:5e + low 23 bits (RFC 1112 §6.4). */
export function ipv4MulticastMac(group: number, out: Uint8Array, offset = 0): void {
  out[offset] = 0x01
  out[offset + 1] = 0x00
  out[offset + 2] = 0x5e
  out[offset + 3] = (group >>> 16) & 0x7f
  out[offset + 4] = (group >>> 8) & 0xff
  out[offset + 5] = group & 0xff
}

/** Modified EUI-64 interface identifier from a MAC (RFC 4291 appendix A). */
export function linkLocalFromMac(mac: Uint8Array): Uint8Array {
  const a = new Uint8Array(16)
  a[0] = 0xfe
  a[1] = 0x80
  a[8] = mac[0] ^ 0x02
  a[9] = mac[1]
  a[10] = mac[2]
  a[11] = 0xff
  a[12] = 0xfe
  a[13] = mac[3]
  a[14] = mac[4]
  a[15] = mac[5]
  return a
}

export function ipv4(v4: number): IpAddress {
  return { version: 4, v4: v4 >>> 0 }
}

export function ipv6(v6: Uint8Array): IpAddress {
  return { version: 6, v6 }
}

/** Common leading bits, for RFC 6724 rule 8-ish source selection. */
export function commonPrefixLength(a: IpAddress, b: IpAddress): number {
  if (a.version === 4 && b.version === 4) return Math.clz32((a.v4 ^ b.v4) >>> 0)
  if (a.version === 6 && b.version === 6) {
    let n = 0
    for (let i = 0; i < 16; i++) {
      const x = a.v6[i] ^ b.v6[i]
      if (x === 0) {
        n += 8
        continue
      }
      return n + Math.clz32(x) - 24
    }
    return n
  }
  return -1
}
