// Routing table: longest prefix match over a small array (a stack instance
// has a handful of routes; a linear scan beats a trie at that size and
// allocates nothing). Routes come from three sources: 'connected' (the
// on-link prefix of each address), 'static' (configuration) and 'ra' (IPv6
// router advertisements: default routers and on-link prefixes, with
// lifetimes).
import type { IpAddress } from './contracts.js'
import { prefixMatches, maskAddress, sameAddress } from './ip-util.js'

export type RouteSource = 'connected' | 'static' | 'ra' | 'redirect'

export interface Route {
  readonly version: 4 | 6
  readonly prefix: IpAddress
  readonly prefixLength: number
  /** Next hop; null = on-link (the destination is its own next hop). */
  readonly via: IpAddress | null
  readonly source: RouteSource
  /** Lower wins among equal prefix lengths. */
  readonly metric: number
  /** Absolute expiry time (ms) for RA-learned routes; Infinity for others. */
  expiresAt: number
}

export interface RouteInput {
  prefix: IpAddress
  prefixLength: number
  via?: IpAddress | null
  source?: RouteSource
  metric?: number
  expiresAt?: number
}

export class RoutingTable {
  private routes: Route[] = []
  /** Bumps on every change, so path caches know to re-resolve. */
  generation = 0

  list(): readonly Route[] {
    return this.routes
  }

  add(input: RouteInput): Route {
    const route: Route = {
      version: input.prefix.version,
      prefix: maskAddress(input.prefix, input.prefixLength),
      prefixLength: input.prefixLength,
      via: input.via ?? null,
      source: input.source ?? 'static',
      metric: input.metric ?? (input.source === 'connected' || input.source === 'redirect' ? 0 : input.source === 'ra' ? 1024 : 100),
      expiresAt: input.expiresAt ?? Infinity,
    }
    // Replace a route with the same prefix, next hop and source (RA refresh).
    const existing = this.find(route.prefix, route.prefixLength, route.via, route.source)
    if (existing !== -1) this.routes.splice(existing, 1)
    this.routes.push(route)
    // Longest prefix first, then metric: lookup returns the first match.
    this.routes.sort((a, b) => b.prefixLength - a.prefixLength || a.metric - b.metric)
    this.generation++
    return route
  }

  remove(prefix: IpAddress, prefixLength: number, via: IpAddress | null, source: RouteSource): boolean {
    const index = this.find(maskAddress(prefix, prefixLength), prefixLength, via, source)
    if (index === -1) return false
    this.routes.splice(index, 1)
    this.generation++
    return true
  }

  /** Longest prefix match; null when no route. */
  lookup(destination: IpAddress): Route | null {
    const routes = this.routes
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i]
      if (r.version === destination.version && prefixMatches(destination, r.prefix, r.prefixLength)) return r
    }
    return null
  }

  /** Drop expired routes; returns the earliest remaining expiry. */
  expire(now: number): number {
    let next = Infinity
    for (let i = this.routes.length - 1; i >= 0; i--) {
      const r = this.routes[i]
      if (r.expiresAt <= now) {
        this.routes.splice(i, 1)
        this.generation++
      } else if (r.expiresAt < next) next = r.expiresAt
    }
    return next
  }

  private find(prefix: IpAddress, prefixLength: number, via: IpAddress | null, source: RouteSource): number {
    return this.routes.findIndex(
      (r) =>
        r.prefixLength === prefixLength &&
        r.source === source &&
        sameAddress(r.prefix, prefix) &&
        (r.via === null ? via === null : via !== null && sameAddress(r.via, via)),
    )
  }
}
