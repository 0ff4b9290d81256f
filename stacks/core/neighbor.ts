// Neighbour cache shared by ARP (RFC 826) and NDP (RFC 4861 §7.3): one state
// machine for both, as Linux does. ARP has no reachability states of its own;
// running it through INCOMPLETE/REACHABLE/STALE/DELAY/PROBE gives it expiry
// and re-validation for free.
import type { IpAddress } from './contracts.js'
import { sameAddress } from './ip-util.js'

export type NeighborState = 'incomplete' | 'reachable' | 'stale' | 'delay' | 'probe'

export interface NeighborConfig {
  maxEntries: number
  /**
   * Packets held per unresolved neighbour (RFC 4861 §7.2.2: "at least one").
   * Enough for a fragmented 64 KiB datagram, whose early fragments must not
   * be pushed out by its later ones.
   */
  maxPendingPerEntry: number
  /** Bytes held across all unresolved neighbours (bounds memory under a resolution flood). */
  maxPendingBytes: number
  /** RFC 4861 §10 MAX_MULTICAST_SOLICIT = 3. */
  maxMulticastSolicit: number
  /** RFC 4861 §10 MAX_UNICAST_SOLICIT = 3. */
  maxUnicastSolicit: number
  /** RFC 4861 §10 RETRANS_TIMER = 1000 ms. */
  retransTimerMs: number
  /** RFC 4861 §10 REACHABLE_TIME = 30 000 ms (randomised 0.5-1.5x per entry). */
  reachableTimeMs: number
  /** RFC 4861 §10 DELAY_FIRST_PROBE_TIME = 5 000 ms. */
  delayFirstProbeMs: number
  /** STALE entries nobody used for this long are forgotten (garbage collection). */
  staleLifetimeMs: number
}

export const DEFAULT_NEIGHBOR_CONFIG: NeighborConfig = {
  maxEntries: 512,
  maxPendingPerEntry: 64,
  maxPendingBytes: 1024 * 1024,
  maxMulticastSolicit: 3,
  maxUnicastSolicit: 3,
  retransTimerMs: 1000,
  reachableTimeMs: 30_000,
  delayFirstProbeMs: 5_000,
  staleLifetimeMs: 60_000,
}

export interface NeighborEntry {
  readonly address: IpAddress
  readonly mac: Uint8Array
  hasMac: boolean
  state: NeighborState
  /** Absolute time of the next state event. */
  timer: number
  probes: number
  isRouter: boolean
  /** IP packets (copies) waiting for resolution. */
  pending: Uint8Array[]
}

export interface NeighborHooks {
  /** Send a solicitation (ARP request / NS): multicast/broadcast when `unicast` is false. */
  solicit(entry: NeighborEntry, unicast: boolean, now: number): void
  /** The entry got a link address: send its pending packets. */
  resolved(entry: NeighborEntry, now: number): void
  /** Resolution failed; its pending packets are dropped (the caller answers host unreachable). */
  failed(entry: NeighborEntry, now: number): void
  /** A random fraction in [0, 1) for the randomised ReachableTime. */
  random(): number
}

export interface NeighborCounters {
  resolutions: number
  resolutionFailures: number
  pendingDrops: number
  tableFull: number
}

export class NeighborCache {
  private entries: NeighborEntry[] = []
  private pendingBytes = 0
  /** Bumps when a usable link address appears, changes or goes away. */
  generation = 0
  readonly counters: NeighborCounters = { resolutions: 0, resolutionFailures: 0, pendingDrops: 0, tableFull: 0 }

  constructor(
    readonly config: NeighborConfig,
    private readonly hooks: NeighborHooks,
  ) {}

  get size(): number {
    return this.entries.length
  }

  list(): readonly NeighborEntry[] {
    return this.entries
  }

  get(address: IpAddress): NeighborEntry | null {
    const entries = this.entries
    for (let i = 0; i < entries.length; i++) if (sameAddress(entries[i].address, address)) return entries[i]
    return null
  }

  /**
   * The link address to send to, or null when resolution is needed/running.
   * RFC 4861 §7.3.3: "The first time a node sends a packet to a neighbor
   * whose entry is STALE, the sender changes the state to DELAY and sets a
   * timer to expire in DELAY_FIRST_PROBE_TIME seconds."
   */
  lookupForSend(address: IpAddress, now: number): NeighborEntry | null {
    const e = this.get(address)
    if (e === null || !e.hasMac) return null
    if (e.state === 'stale') {
      e.state = 'delay'
      e.timer = now + this.config.delayFirstProbeMs
    }
    return e
  }

  /** Start resolving (or join a running resolution); queue `packet` (copied) if given. */
  resolve(address: IpAddress, packet: Uint8Array | null, now: number): 'queued' | 'no-buffer' {
    let e = this.get(address)
    if (e === null) {
      e = this.create(address, now)
      if (e === null) return 'no-buffer'
      e.state = 'incomplete'
      e.probes = 1
      e.timer = now + this.config.retransTimerMs
      this.counters.resolutions++
      this.hooks.solicit(e, false, now)
    }
    if (packet === null) return 'queued'
    if (e.pending.length >= this.config.maxPendingPerEntry) {
      // RFC 4861 §7.2.2: "If the queue overflows, the new packet SHOULD replace the oldest entry."
      this.pendingBytes -= e.pending.shift()!.length
      this.counters.pendingDrops++
    }
    if (this.pendingBytes + packet.length > this.config.maxPendingBytes) {
      this.counters.pendingDrops++
      return 'no-buffer'
    }
    e.pending.push(packet.slice())
    this.pendingBytes += packet.length
    return 'queued'
  }

  /**
   * Learn or confirm a link address.
   * - `solicited`: a reply to our solicitation (ARP reply, NA with S=1) → REACHABLE.
   * - `override`: NA O flag; ARP is always "override" (RFC 826 merge).
   * - `create`: make an entry if none (a solicitation addressed to us, RFC 4861 §7.2.3).
   */
  learn(address: IpAddress, mac: Uint8Array | null, solicited: boolean, override: boolean, create: boolean, now: number): void {
    let e = this.get(address)
    if (e === null) {
      if (!create || mac === null) return
      e = this.create(address, now)
      if (e === null) return
      this.setMac(e, mac)
      // RFC 4861 §7.2.3: a new entry from a solicitation's source address is STALE.
      this.enter(e, solicited ? 'reachable' : 'stale', now)
      return
    }
    if (e.state === 'incomplete') {
      if (mac === null) return
      this.setMac(e, mac)
      // RFC 4861 §7.2.5: "If the Solicited flag is set, the state of the entry
      // MUST be set to REACHABLE; otherwise, it MUST be set to STALE."
      this.enter(e, solicited ? 'reachable' : 'stale', now)
      this.hooks.resolved(e, now)
      this.releasePending(e)
      return
    }
    const differs = mac !== null && !macEquals(e.mac, mac)
    if (!override && differs) {
      // RFC 4861 §7.2.5: "If the Override flag is clear and the supplied
      // link-layer address differs ... If the state of the entry is
      // REACHABLE, set it to STALE, but do not update the entry in any other way."
      if (e.state === 'reachable') this.enter(e, 'stale', now)
      return
    }
    if (differs) this.setMac(e, mac!)
    if (solicited) this.enter(e, 'reachable', now)
    else if (differs) this.enter(e, 'stale', now)
  }

  /** Upper-layer reachability confirmation (RFC 4861 §7.3.1), e.g. TCP progress. */
  confirm(address: IpAddress, now: number): void {
    const e = this.get(address)
    if (e !== null && e.hasMac) this.enter(e, 'reachable', now)
  }

  remove(address: IpAddress): void {
    const e = this.get(address)
    if (e === null) return
    this.drop(e)
    this.releasePending(e)
  }

  poll(now: number): void {
    const c = this.config
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]
      if (e === undefined || e.timer > now) continue
      switch (e.state) {
        case 'incomplete':
          if (e.probes < c.maxMulticastSolicit) {
            e.probes++
            e.timer = now + c.retransTimerMs
            this.hooks.solicit(e, false, now)
          } else {
            this.counters.resolutionFailures++
            this.drop(e)
            this.hooks.failed(e, now)
            this.releasePending(e)
          }
          break
        case 'reachable':
          // RFC 4861 §7.3.3: after ReachableTime without confirmation → STALE.
          this.enter(e, 'stale', now)
          break
        case 'stale':
          this.drop(e)
          break
        case 'delay':
          e.state = 'probe'
          e.probes = 1
          e.timer = now + c.retransTimerMs
          this.hooks.solicit(e, true, now)
          break
        case 'probe':
          if (e.probes < c.maxUnicastSolicit) {
            e.probes++
            e.timer = now + c.retransTimerMs
            this.hooks.solicit(e, true, now)
          } else {
            this.counters.resolutionFailures++
            this.drop(e)
          }
          break
      }
    }
  }

  nextTimeout(): number {
    let next = Infinity
    for (const e of this.entries) if (e.timer < next) next = e.timer
    return next
  }

  private enter(e: NeighborEntry, state: NeighborState, now: number): void {
    e.state = state
    e.probes = 0
    if (state === 'reachable') {
      const factor = 0.5 + this.hooks.random() // RFC 4861 §6.3.2: MIN_RANDOM_FACTOR 0.5 .. MAX_RANDOM_FACTOR 1.5
      e.timer = now + Math.round(this.config.reachableTimeMs * factor)
    } else if (state === 'stale') {
      e.timer = now + this.config.staleLifetimeMs
    }
  }

  private setMac(e: NeighborEntry, mac: Uint8Array): void {
    e.mac.set(mac.subarray(0, 6))
    e.hasMac = true
    this.generation++
  }

  private create(address: IpAddress, now: number): NeighborEntry | null {
    if (this.entries.length >= this.config.maxEntries) {
      // Evict a STALE entry without pending packets, else refuse.
      const victim = this.entries.findIndex((x) => x.state === 'stale' && x.pending.length === 0)
      if (victim === -1) {
        this.counters.tableFull++
        return null
      }
      this.entries.splice(victim, 1)
    }
    const e: NeighborEntry = {
      address: address.version === 4 ? { version: 4, v4: address.v4 } : { version: 6, v6: address.v6.slice() },
      mac: new Uint8Array(6),
      hasMac: false,
      state: 'incomplete',
      timer: now,
      probes: 0,
      isRouter: false,
      pending: [],
    }
    this.entries.push(e)
    return e
  }

  private drop(e: NeighborEntry): void {
    const i = this.entries.indexOf(e)
    if (i !== -1) this.entries.splice(i, 1)
    if (e.hasMac) this.generation++
  }

  private releasePending(e: NeighborEntry): void {
    for (const p of e.pending) this.pendingBytes -= p.length
    e.pending.length = 0
  }

  /** Bytes held in pending queues. */
  get pendingByteCount(): number {
    return this.pendingBytes
  }
}

export function macEquals(a: Uint8Array, b: Uint8Array): boolean {
  for (let i = 0; i < 6; i++) if (a[i] !== b[i]) return false
  return true
}
