// Flow keys as fixed-width words, so the flow table, the listener table and
// the rule tuples hash and compare them without strings or objects.
//
// Layout of one key (KEY_WORDS 32-bit words):
//   [0]    meta: ipVersion << 24 | protocol << 16 | ingress port index
//   [1..4] local address (IPv4 in word 1, words 2..4 zero)
//   [5..8] remote address
//   [9]    localPort << 16 | remotePort
// "Local" is the runtime's side: for inbound packets the destination, for
// outbound packets the source (DESIGN.md §3), so both directions of a
// connection share one key.

export const KEY_WORDS = 10
export const W_META = 0
export const W_LOCAL = 1
export const W_REMOTE = 5
export const W_PORTS = 9

export const PROTO_ICMP = 1
export const PROTO_TCP = 6
export const PROTO_UDP = 17
export const PROTO_ICMPV6 = 58

export const enum Direction {
  In = 1,
  Out = 2,
}

export function metaWord(ipVersion: number, protocol: number, portIndex: number): number {
  return ((ipVersion << 24) | ((protocol & 0xff) << 16) | (portIndex & 0xffff)) >>> 0
}

export function keyIpVersion(key: Uint32Array, off = 0): number {
  return key[off + W_META] >>> 24
}
export function keyProtocol(key: Uint32Array, off = 0): number {
  return (key[off + W_META] >>> 16) & 0xff
}
export function keyPortIndex(key: Uint32Array, off = 0): number {
  return key[off + W_META] & 0xffff
}
export function keyLocalPort(key: Uint32Array, off = 0): number {
  return key[off + W_PORTS] >>> 16
}
export function keyRemotePort(key: Uint32Array, off = 0): number {
  return key[off + W_PORTS] & 0xffff
}

/** Whether packets of this protocol carry 16-bit ports in the first 4 bytes of their header. */
export function protocolHasPorts(protocol: number): boolean {
  return protocol === PROTO_TCP || protocol === PROTO_UDP
}

/** A flow key as plain values, for registration APIs, tests and output (not for the data path). */
export interface FlowKeyFields {
  ipVersion: 4 | 6
  protocol: number
  localAddress: string
  localPort: number
  remoteAddress: string
  remotePort: number
  /** Ingress port index. */
  port: number
}

export function writeKey(fields: FlowKeyFields, out: Uint32Array, off = 0): void {
  out[off + W_META] = metaWord(fields.ipVersion, fields.protocol, fields.port)
  writeAddress(fields.localAddress, fields.ipVersion, out, off + W_LOCAL)
  writeAddress(fields.remoteAddress, fields.ipVersion, out, off + W_REMOTE)
  out[off + W_PORTS] = (((fields.localPort & 0xffff) << 16) | (fields.remotePort & 0xffff)) >>> 0
}

export function readKey(key: Uint32Array, off = 0): FlowKeyFields {
  const ipVersion = keyIpVersion(key, off) === 6 ? 6 : 4
  return {
    ipVersion,
    protocol: keyProtocol(key, off),
    localAddress: formatAddress(key, off + W_LOCAL, ipVersion),
    localPort: keyLocalPort(key, off),
    remoteAddress: formatAddress(key, off + W_REMOTE, ipVersion),
    remotePort: keyRemotePort(key, off),
    port: keyPortIndex(key, off),
  }
}

// ---------------------------------------------------------------------------
// Address text <-> words. Strict: no leading zeros in IPv4 octets, no zone ids.
// ---------------------------------------------------------------------------

const IPV4_OCTET = /^(?:0|[1-9][0-9]{0,2})$/

/** Parses an IPv4 address into one word, or returns -1. */
export function parseIPv4(text: string): number {
  const parts = text.split('.')
  if (parts.length !== 4) return -1
  let value = 0
  for (const part of parts) {
    if (!IPV4_OCTET.test(part)) return -1
    const octet = Number(part)
    if (octet > 255) return -1
    value = value * 256 + octet
  }
  return value >>> 0
}

/** Parses an IPv6 address (RFC 4291 §2.2 text forms, incl. embedded IPv4) into 4 words, or returns false. */
export function parseIPv6(text: string, out: Uint32Array, off: number): boolean {
  if (text.length < 2 || text.length > 45) return false
  if (text.includes('.')) {
    // Embedded IPv4 ("::ffff:192.0.2.1"): rewrite the dotted tail as two hex groups.
    const lastColon = text.lastIndexOf(':')
    if (lastColon < 0) return false
    const v4 = parseIPv4(text.slice(lastColon + 1))
    if (v4 < 0) return false
    text = `${text.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`
  }
  const parseGroups = (s: string): number[] | null => {
    if (s === '') return []
    const result: number[] = []
    for (const g of s.split(':')) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null
      result.push(parseInt(g, 16))
    }
    return result
  }
  const doubleColon = text.indexOf('::')
  if (doubleColon !== text.lastIndexOf('::')) return false
  let groups: number[]
  if (doubleColon >= 0) {
    const head = parseGroups(text.slice(0, doubleColon))
    const rest = parseGroups(text.slice(doubleColon + 2))
    if (head === null || rest === null || head.length + rest.length > 7) return false
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest]
  } else {
    const all = parseGroups(text)
    if (all === null || all.length !== 8) return false
    groups = all
  }
  for (let i = 0; i < 4; i++) out[off + i] = ((groups[2 * i] << 16) | groups[2 * i + 1]) >>> 0
  return true
}

/** Writes an address of the given family into 4 words; throws on malformed text (config-time use). */
export function writeAddress(text: string, ipVersion: 4 | 6, out: Uint32Array, off: number): void {
  if (ipVersion === 4) {
    const v = parseIPv4(text)
    if (v < 0) throw new RangeError(`"${text}" is not an IPv4 address`)
    out[off] = v
    out[off + 1] = 0
    out[off + 2] = 0
    out[off + 3] = 0
  } else if (!parseIPv6(text, out, off)) {
    throw new RangeError(`"${text}" is not an IPv6 address`)
  }
}

export function formatAddress(words: Uint32Array, off: number, ipVersion: 4 | 6): string {
  if (ipVersion === 4) {
    const v = words[off]
    return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`
  }
  const groups: number[] = []
  for (let i = 0; i < 4; i++) groups.push(words[off + i] >>> 16, words[off + i] & 0xffff)
  // RFC 5952 §4.2: compress the longest run (>= 2) of zero groups, the first one on ties.
  let bestStart = -1
  let bestLength = 1
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < 8 && groups[j] === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  const hex = groups.map((g) => g.toString(16))
  if (bestStart < 0) return hex.join(':')
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLength).join(':')}`
}

export interface Prefix {
  ipVersion: 4 | 6
  /** Network address words (4), host bits cleared. */
  words: Uint32Array
  length: number
  /** The address as written, host bits kept (an interface address "198.51.100.2/24"). */
  addressWords: Uint32Array
}

/** Parses "addr/len" (or a bare address, as a host prefix); returns null when malformed. */
export function parsePrefix(text: string, options: { requireLength?: boolean } = {}): Prefix | null {
  const slash = text.indexOf('/')
  const addressText = slash < 0 ? text : text.slice(0, slash)
  const lengthText = slash < 0 ? undefined : text.slice(slash + 1)
  if (lengthText === undefined && options.requireLength) return null
  const addressWords = new Uint32Array(4)
  let ipVersion: 4 | 6
  const v4 = parseIPv4(addressText)
  if (v4 >= 0) {
    ipVersion = 4
    addressWords[0] = v4
  } else if (addressText.includes(':') && parseIPv6(addressText, addressWords, 0)) {
    ipVersion = 6
  } else {
    return null
  }
  const maxLength = ipVersion === 4 ? 32 : 128
  let length = maxLength
  if (lengthText !== undefined) {
    if (!/^(?:0|[1-9][0-9]{0,2})$/.test(lengthText)) return null
    length = Number(lengthText)
    if (length > maxLength) return null
  }
  const words = new Uint32Array(4)
  const mask = new Uint32Array(4)
  prefixMask(length, mask, 0)
  for (let i = 0; i < 4; i++) words[i] = (addressWords[i] & mask[i]) >>> 0
  return { ipVersion, words, length, addressWords }
}

/** Writes the 4-word mask of a prefix length (IPv4 uses word 0 only). */
export function prefixMask(length: number, out: Uint32Array, off: number): void {
  for (let i = 0; i < 4; i++) {
    const bits = Math.max(0, Math.min(32, length - 32 * i))
    out[off + i] = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0
  }
}

export function prefixContains(prefix: Prefix, words: Uint32Array, off: number): boolean {
  const mask = new Uint32Array(4)
  prefixMask(prefix.length, mask, 0)
  for (let i = 0; i < 4; i++) if (((words[off + i] & mask[i]) >>> 0) !== prefix.words[i]) return false
  return true
}
