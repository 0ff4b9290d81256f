/**
 * Addresses as flowstack passes them around: IPv4 as its uint32 value
 * (198.51.100.2 === 0xc6336402), IPv6 as 16 bytes, MACs as 6 bytes.
 * Text parsing is strict (returns null on anything odd); formatting follows
 * RFC 5952 for IPv6 and lowercase colon-separated hex for MACs.
 */

export type IpAddress = { readonly version: 4; readonly v4: number } | { readonly version: 6; readonly v6: Uint8Array }

const DECIMAL_OCTET = /^(?:0|[1-9][0-9]{0,2})$/

/** Dotted quad to uint32; leading zeros are rejected (they mean octal to some parsers). */
export function parseIpv4Address(text: string): number | null {
  const parts = text.split('.')
  if (parts.length !== 4) return null
  let value = 0
  for (const part of parts) {
    if (!DECIMAL_OCTET.test(part)) return null
    const octet = Number(part)
    if (octet > 255) return null
    value = value * 256 + octet
  }
  return value >>> 0
}

export function formatIpv4Address(value: number): string {
  const n = value >>> 0
  return `${n >>> 24}.${(n >>> 16) & 0xff}.${(n >>> 8) & 0xff}.${n & 0xff}`
}

const HEX_GROUP = /^[0-9a-fA-F]{1,4}$/

export function parseIpv6Address(text: string): Uint8Array | null {
  if (text.length < 2 || text.length > 45) return null
  const doubleColon = text.indexOf('::')
  if (doubleColon !== -1 && text.indexOf('::', doubleColon + 1) !== -1) return null
  const groups: number[] = []
  let tailStart = -1
  const pushGroups = (part: string, allowIpv4Tail: boolean): boolean => {
    if (part === '') return true
    const fields = part.split(':')
    for (let i = 0; i < fields.length; i++) {
      const field = fields[i]
      if (allowIpv4Tail && i === fields.length - 1 && field.includes('.')) {
        const v4 = parseIpv4Address(field)
        if (v4 === null) return false
        groups.push(v4 >>> 16, v4 & 0xffff)
      } else {
        if (!HEX_GROUP.test(field)) return false
        groups.push(parseInt(field, 16))
      }
    }
    return true
  }
  if (doubleColon === -1) {
    if (!pushGroups(text, true) || groups.length !== 8) return null
  } else {
    const head = text.slice(0, doubleColon)
    const tail = text.slice(doubleColon + 2)
    if (!pushGroups(head, false)) return null
    tailStart = groups.length
    if (!pushGroups(tail, true)) return null
    // "::" stands for at least one zero group (RFC 4291 2.2).
    if (groups.length > 7) return null
    const zeros = new Array<number>(8 - groups.length).fill(0)
    groups.splice(tailStart, 0, ...zeros)
  }
  const bytes = new Uint8Array(16)
  for (let i = 0; i < 8; i++) {
    bytes[2 * i] = groups[i] >>> 8
    bytes[2 * i + 1] = groups[i] & 0xff
  }
  return bytes
}

/** RFC 5952 canonical text: lowercase, no leading zeros, longest zero run (first on ties, length >= 2) as "::". */
export function formatIpv6Address(bytes: Uint8Array, offset = 0): string {
  const g = (i: number): number => (bytes[offset + 2 * i] << 8) | bytes[offset + 2 * i + 1]
  // IPv4-mapped (::ffff:0:0/96) is written with a dotted quad (RFC 5952 section 5).
  if (g(0) === 0 && g(1) === 0 && g(2) === 0 && g(3) === 0 && g(4) === 0 && g(5) === 0xffff) {
    return `::ffff:${bytes[offset + 12]}.${bytes[offset + 13]}.${bytes[offset + 14]}.${bytes[offset + 15]}`
  }
  let bestStart = -1
  let bestLength = 0
  for (let i = 0; i < 8; ) {
    if (g(i) !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && g(j) === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  if (bestLength < 2) bestStart = -1
  let out = ''
  for (let i = 0; i < 8; i++) {
    if (i === bestStart) {
      out += '::'
      i += bestLength - 1
      continue
    }
    if (out.length > 0 && !out.endsWith(':')) out += ':'
    out += g(i).toString(16)
  }
  return out
}

export function parseIpAddress(text: string): IpAddress | null {
  if (text.includes(':')) {
    const v6 = parseIpv6Address(text)
    return v6 === null ? null : { version: 6, v6 }
  }
  const v4 = parseIpv4Address(text)
  return v4 === null ? null : { version: 4, v4 }
}

export function formatIpAddress(address: IpAddress): string {
  return address.version === 4 ? formatIpv4Address(address.v4) : formatIpv6Address(address.v6)
}

export function ipv6AddressEquals(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 16; i++) if (a[i] !== b[i]) return false
  return true
}

export function ipAddressEquals(a: IpAddress, b: IpAddress): boolean {
  if (a.version === 4) return b.version === 4 && a.v4 >>> 0 === b.v4 >>> 0
  return b.version === 6 && ipv6AddressEquals(a.v6, b.v6)
}

/** "198.51.100.0/24" or "2001:db8::/32". The address keeps its host bits; prefix length is range-checked. */
export function parseCidr(text: string): { address: IpAddress; prefixLength: number } | null {
  const slash = text.indexOf('/')
  if (slash === -1) return null
  const address = parseIpAddress(text.slice(0, slash))
  const lengthText = text.slice(slash + 1)
  if (address === null || !/^(?:0|[1-9][0-9]{0,2})$/.test(lengthText)) return null
  const prefixLength = Number(lengthText)
  if (prefixLength > (address.version === 4 ? 32 : 128)) return null
  return { address, prefixLength }
}

const MAC_TEXT = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}$/

export function parseMac(text: string): Uint8Array | null {
  if (!MAC_TEXT.test(text)) return null
  const mac = new Uint8Array(6)
  for (let i = 0; i < 6; i++) mac[i] = parseInt(text.slice(3 * i, 3 * i + 2), 16)
  return mac
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))

export function formatMac(bytes: Uint8Array, offset = 0): string {
  return `${HEX[bytes[offset]]}:${HEX[bytes[offset + 1]]}:${HEX[bytes[offset + 2]]}:${HEX[bytes[offset + 3]]}:${HEX[bytes[offset + 4]]}:${HEX[bytes[offset + 5]]}`
}

export const BROADCAST_MAC: Uint8Array = new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff])

/** 33:33:xx:xx:xx:xx for an IPv6 multicast group (RFC 2464 section 7). */
export function ipv6MulticastMac(group: Uint8Array, out: Uint8Array = new Uint8Array(6)): Uint8Array {
  out[0] = 0x33
  out[1] = 0x33
  out[2] = group[12]
  out[3] = group[13]
  out[4] = group[14]
  out[5] = group[15]
  return out
}

/** ff02::1:ffXX:XXXX, the solicited-node group of an address (RFC 4291 2.7.1). */
export function solicitedNodeAddress(address: Uint8Array, out: Uint8Array = new Uint8Array(16)): Uint8Array {
  out.fill(0)
  out[0] = 0xff
  out[1] = 0x02
  out[11] = 0x01
  out[12] = 0xff
  out[13] = address[13]
  out[14] = address[14]
  out[15] = address[15]
  return out
}
