// Per-socket kernel fallback (DESIGN.md §5): decides, in the instance's
// worker, whether a connect() goes through the instance's own stack or is
// handed to the kernel (node:net), and why. Pure: no I/O, no clock.
//
// - loopback: 127/8, ::1 and "localhost" never reach the instance's port;
// - rule: the classifier's rules send that destination to the kernel, on a
//   port that owns a wire (AF_PACKET): on TUN/TAP the kernel is the far end
//   of the port and the switch reaches it already; on a memory wire the far
//   end stands in for the kernel (the demo). The
//   switch classifies an instance's SYN as if it arrived on the instance's
//   port (local = the destination), so the same key is looked up here; the
//   source port is not chosen yet, so it is 0 (rules on remote ports do not
//   match a connect here);
// - no-route: neither an on-link prefix of the instance's addresses nor one
//   of its routes covers the destination.
import { isIPv4, isIPv6 } from 'node:net'
import { OWNER_KERNEL, RuleSet, type RuleSpec } from '../../classifier/rules.js'
import { Direction, KEY_WORDS, PROTO_TCP, W_LOCAL, parsePrefix, prefixContains, writeKey, type Prefix } from '../../classifier/key.js'
import type { RouteSpec } from '../../stacks/core/stack.js'

export const FALLBACK_REASONS = ['loopback', 'rule', 'no-route'] as const
export type FallbackReason = (typeof FALLBACK_REASONS)[number]

export interface ConnectPolicySpec {
  /** The instance's addresses (CIDR). */
  addresses: readonly string[]
  routes: readonly RouteSpec[]
  /** The classifier's rules (resolved specs, as the runtime compiled them). */
  rules: readonly RuleSpec[]
  /** Index of the instance's port in the config. */
  portIndex: number
  /** Rules saying `kernel` hand connects to node:net (ports that own a wire; see the header). */
  kernelRules?: boolean
}

export class ConnectPolicy {
  /** Connects handed to the kernel, by reason. */
  readonly counts: Record<FallbackReason, number> = { loopback: 0, rule: 0, 'no-route': 0 }
  private rules: RuleSet
  private readonly onLink: Prefix[]
  private readonly routed: Prefix[]
  private readonly defaultFamilies = new Set<4 | 6>()
  private readonly ownAddress = new Map<4 | 6, string>()
  private readonly key = new Uint32Array(KEY_WORDS)

  constructor(private readonly spec: ConnectPolicySpec) {
    this.rules = new RuleSet(spec.rules)
    this.onLink = spec.addresses.map((a) => parsePrefix(a)).filter((p): p is Prefix => p !== null)
    for (const prefix of this.onLink) if (!this.ownAddress.has(prefix.ipVersion)) this.ownAddress.set(prefix.ipVersion, addressOf(spec.addresses, prefix.ipVersion))
    this.routed = []
    for (const route of spec.routes) {
      if (route.to === 'default') {
        if (route.via !== undefined) this.defaultFamilies.add(isIPv6(route.via) ? 6 : 4)
        continue
      }
      const prefix = parsePrefix(route.to)
      if (prefix !== null) this.routed.push(prefix)
    }
  }

  /** New rules after a reload. */
  replaceRules(rules: readonly RuleSpec[]): void {
    this.rules = new RuleSet(rules)
  }

  /** Why the kernel should serve a connect to host:port, or null when the instance's stack does. */
  decide(host: string, port: number): FallbackReason | null {
    if (isLoopback(host)) return 'loopback'
    const bare = host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
    const ipVersion: 4 | 6 | 0 = isIPv4(bare) ? 4 : isIPv6(bare) ? 6 : 0
    // Names are resolved by the stack's own lookup; its answer is connected there.
    if (ipVersion === 0) return null
    const own = this.ownAddress.get(ipVersion)
    if (own === undefined) return 'no-route'
    writeKey({ ipVersion, protocol: PROTO_TCP, localAddress: bare, localPort: port, remoteAddress: own, remotePort: 0, port: this.spec.portIndex }, this.key)
    const rule = this.spec.kernelRules === true ? this.rules.lookup(this.key, Direction.In) : -1
    if (rule >= 0 && this.rules.rules[rule].owner === OWNER_KERNEL) return 'rule'
    if (this.defaultFamilies.has(ipVersion)) return null
    for (const prefix of this.onLink) if (prefix.ipVersion === ipVersion && prefixContains(prefix, this.key, W_LOCAL)) return null
    for (const prefix of this.routed) if (prefix.ipVersion === ipVersion && (prefix.length === 0 || prefixContains(prefix, this.key, W_LOCAL))) return null
    return 'no-route'
  }
}

export function isLoopback(host: string): boolean {
  if (host === 'localhost' || host === '::1' || host === '[::1]') return true
  return isIPv4(host) && host.startsWith('127.')
}

function addressOf(addresses: readonly string[], ipVersion: 4 | 6): string {
  for (const cidr of addresses) {
    const address = cidr.includes('/') ? cidr.slice(0, cidr.indexOf('/')) : cidr
    if ((ipVersion === 6) === address.includes(':')) return address
  }
  return ''
}
