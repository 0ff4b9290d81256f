/**
 * Why a packet did not parse. Parsers never throw on malformed input: they
 * return a WireError (smoltcp's "checked on input" rule), and callers test
 * `result instanceof WireError` and count `layer`/`reason`.
 */
export type WireErrorReason =
  /** Fewer bytes than the header (or a length field) says are there. */
  | 'truncated'
  /** A length field is impossible (shorter than the header, longer than the datagram ...). */
  | 'bad-length'
  | 'bad-checksum'
  | 'bad-version'
  /** An option's length runs past the end of its header. */
  | 'option-overrun'
  /** A known option with an impossible length or value. */
  | 'bad-option'
  /** Well-formed, but a variant this layer does not handle (ARP over non-Ethernet, IPv6 jumbograms ...). */
  | 'unsupported'
  /** Any other structural rule broken (hop-by-hop not first, zero port where forbidden ...). */
  | 'malformed'

export const WIRE_ERROR_REASONS: readonly WireErrorReason[] = [
  'truncated',
  'bad-length',
  'bad-checksum',
  'bad-version',
  'option-overrun',
  'bad-option',
  'unsupported',
  'malformed',
]

export type WireLayer = 'ethernet' | 'arp' | 'ipv4' | 'ipv6' | 'icmpv4' | 'icmpv6' | 'udp' | 'tcp'

/**
 * Deliberately not an Error subclass: hostile traffic can make every packet a
 * parse failure, and an Error captures a stack trace on construction.
 */
export class WireError {
  readonly layer: WireLayer
  readonly reason: WireErrorReason
  readonly detail?: string
  constructor(layer: WireLayer, reason: WireErrorReason, detail?: string) {
    this.layer = layer
    this.reason = reason
    if (detail !== undefined) this.detail = detail
  }
  toString(): string {
    return `${this.layer}: ${this.reason}${this.detail === undefined ? '' : ` (${this.detail})`}`
  }
}

/**
 * Counts parse failures by layer and reason without allocating per packet
 * (one flat Float64Array, indexed by layer * reasons + reason).
 */
export class WireErrorCounters {
  static readonly layers: readonly WireLayer[] = ['ethernet', 'arp', 'ipv4', 'ipv6', 'icmpv4', 'icmpv6', 'udp', 'tcp']
  private readonly counts = new Float64Array(WireErrorCounters.layers.length * WIRE_ERROR_REASONS.length)

  count(error: WireError): void {
    const layer = WireErrorCounters.layers.indexOf(error.layer)
    const reason = WIRE_ERROR_REASONS.indexOf(error.reason)
    if (layer >= 0 && reason >= 0) this.counts[layer * WIRE_ERROR_REASONS.length + reason]++
  }

  get(layer: WireLayer, reason: WireErrorReason): number {
    const l = WireErrorCounters.layers.indexOf(layer)
    const r = WIRE_ERROR_REASONS.indexOf(reason)
    return l < 0 || r < 0 ? 0 : this.counts[l * WIRE_ERROR_REASONS.length + r]
  }

  /** Non-zero counters as `{ 'tcp:bad-checksum': 3, ... }`. */
  snapshot(): Record<string, number> {
    const out: Record<string, number> = {}
    for (let l = 0; l < WireErrorCounters.layers.length; l++) {
      for (let r = 0; r < WIRE_ERROR_REASONS.length; r++) {
        const n = this.counts[l * WIRE_ERROR_REASONS.length + r]
        if (n !== 0) out[`${WireErrorCounters.layers[l]}:${WIRE_ERROR_REASONS[r]}`] = n
      }
    }
    return out
  }
}

/** How a parser treats a checksum it could verify. */
export type ChecksumMode =
  /** Compute it; a mismatch is a WireError('bad-checksum'). The default. */
  | 'verify'
  /** Compute it and report the result in `checksumValid`, never failing on it. */
  | 'report'
  /** Do not compute it (offloaded, or a truncated capture): `checksumValid` is null. */
  | 'ignore'

export interface ParseOptions {
  checksum?: ChecksumMode
  /**
   * Accept a datagram whose length field claims more bytes than are present
   * (a capture cut at its snap length): `payloadLength` is clipped to what is
   * there and checksums that cover the missing bytes are reported as null.
   */
  allowTruncated?: boolean
}

export const DEFAULT_PARSE_OPTIONS: Readonly<ParseOptions> = Object.freeze({ checksum: 'verify', allowTruncated: false })
