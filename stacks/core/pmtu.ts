// Path MTU cache (RFC 1191 IPv4, RFC 8201 IPv6): learned from ICMP
// fragmentation-needed / packet-too-big, aged back to the link MTU so a path
// that grew is rediscovered.
import type { IpAddress } from './contracts.js'
import { sameAddress } from './ip-util.js'

interface PmtuEntry {
  remote: IpAddress
  mtu: number
  expiresAt: number
}

export interface PmtuConfig {
  /**
   * RFC 1191 §6.3 / RFC 8201 §4: increase attempts "SHOULD NOT" happen more
   * often than every 5 minutes; the recommended timeout is 10 minutes.
   */
  agingMs: number
  /** Floor for learned IPv4 PMTUs: RFC 1191 forbids below 68; Linux uses 552 to blunt forged ICMP. */
  minIpv4Mtu: number
  maxEntries: number
}

export const DEFAULT_PMTU_CONFIG: PmtuConfig = { agingMs: 600_000, minIpv4Mtu: 552, maxEntries: 1024 }

/** RFC 1191 §7 plateau table, for routers that send a next-hop MTU of 0. */
const PLATEAUS = [65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68]

export class PmtuCache {
  private entries: PmtuEntry[] = []
  generation = 0

  constructor(readonly config: PmtuConfig = DEFAULT_PMTU_CONFIG) {}

  get(remote: IpAddress, linkMtu: number): number {
    for (let i = 0; i < this.entries.length; i++) {
      const e = this.entries[i]
      if (sameAddress(e.remote, remote)) return Math.min(e.mtu, linkMtu)
    }
    return linkMtu
  }

  /**
   * Apply a reported MTU. Returns the new PMTU when it dropped, else null.
   * `quotedTotalLength` is the total length of the quoted datagram (for the
   * plateau search when a router reports 0).
   */
  update(remote: IpAddress, reported: number, linkMtu: number, quotedTotalLength: number, now: number): number | null {
    const current = this.get(remote, linkMtu)
    let mtu = reported
    if (remote.version === 4) {
      if (mtu === 0) {
        // RFC 1191 §5: an old-style router; take the next plateau below the datagram's size.
        const size = quotedTotalLength > 0 ? quotedTotalLength : current
        mtu = PLATEAUS.find((p) => p < size) ?? 68
      }
      mtu = Math.max(mtu, this.config.minIpv4Mtu)
    } else {
      // RFC 8201 §4: "A node MUST NOT reduce its estimate of the Path MTU below the IPv6 minimum link MTU."
      mtu = Math.max(mtu, 1280)
    }
    // RFC 1191 §6.3: a report is only ever allowed to lower the estimate.
    if (mtu >= current) return null
    const existing = this.entries.find((e) => sameAddress(e.remote, remote))
    if (existing !== undefined) {
      existing.mtu = mtu
      existing.expiresAt = now + this.config.agingMs
    } else {
      if (this.entries.length >= this.config.maxEntries) this.entries.shift()
      this.entries.push({
        remote: remote.version === 4 ? { version: 4, v4: remote.v4 } : { version: 6, v6: remote.v6.slice() },
        mtu,
        expiresAt: now + this.config.agingMs,
      })
    }
    this.generation++
    return mtu
  }

  expire(now: number): void {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      if (this.entries[i].expiresAt <= now) {
        this.entries.splice(i, 1)
        this.generation++
      }
    }
  }

  nextTimeout(): number {
    let next = Infinity
    for (const e of this.entries) if (e.expiresAt < next) next = e.expiresAt
    return next
  }
}
