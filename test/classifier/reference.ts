// The reference classifier: the semantics of issue 5 written as plainly as
// possible, with linear scans, text keys and node:net's BlockList for prefix
// matching, sharing no code with the classifier under test. The property
// tests require the real classifier to agree with it on every packet.
import { BlockList } from 'node:net'

export type RefOwner = number | 'kernel' | 'drop'

export interface RefRule {
  name: string
  priority: number
  port?: number
  direction?: 'in' | 'out'
  ipVersion?: 4 | 6
  protocol?: number
  localPrefix?: string
  remotePrefix?: string
  localPorts?: { from: number; to: number }
  remotePorts?: { from: number; to: number }
  owner: RefOwner
}

export interface RefPacket {
  ipVersion: 4 | 6
  protocol: number
  localAddress: string
  localPort: number
  remoteAddress: string
  remotePort: number
  port: number
  direction: 'in' | 'out'
}

export interface RefDecision {
  owner: RefOwner
  rule: string | null
  reason: 'flow' | 'rule' | 'listener' | 'default'
}

interface CompiledRefRule extends RefRule {
  order: number
  local?: BlockList
  remote?: BlockList
}

/** Expands an address to a canonical text form (full IPv6 groups), independently of the code under test. */
export function canonicalAddress(address: string, ipVersion: 4 | 6): string {
  if (ipVersion === 4) return address.split('.').map(Number).join('.')
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined]
  const headGroups = head === '' ? [] : head.split(':')
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':')
  const zeros = tail === undefined ? [] : new Array(8 - headGroups.length - tailGroups.length).fill('0')
  return [...headGroups, ...zeros, ...tailGroups].map((g) => parseInt(g, 16).toString(16).padStart(4, '0')).join(':')
}

function blockListFor(prefix: string): BlockList {
  const [network, length] = prefix.split('/')
  const list = new BlockList()
  list.addSubnet(network, Number(length), network.includes(':') ? 'ipv6' : 'ipv4')
  return list
}

function prefixFamily(prefix: string): 4 | 6 {
  return prefix.includes(':') ? 6 : 4
}

const hasPorts = (protocol: number): boolean => protocol === 6 || protocol === 17

export class ReferenceClassifier {
  private rules: CompiledRefRule[] = []
  private readonly flows = new Map<string, { owner: RefOwner; rule: string | null }>()
  private readonly listeners: Array<{ ipVersion: 4 | 6; protocol: number; address: string | null; localPort: number; port: number; owner: number }> = []

  constructor(
    rules: readonly RefRule[],
    private readonly defaults: readonly RefOwner[],
  ) {
    this.replaceRules(rules)
  }

  replaceRules(rules: readonly RefRule[]): void {
    this.rules = rules.map((rule, order) => ({
      ...rule,
      order,
      local: rule.localPrefix === undefined ? undefined : blockListFor(rule.localPrefix),
      remote: rule.remotePrefix === undefined ? undefined : blockListFor(rule.remotePrefix),
    }))
  }

  private static flowKey(p: Omit<RefPacket, 'direction'>): string {
    return [p.ipVersion, p.protocol, p.port, canonicalAddress(p.localAddress, p.ipVersion), p.localPort, canonicalAddress(p.remoteAddress, p.ipVersion), p.remotePort].join('|')
  }

  registerFlow(p: Omit<RefPacket, 'direction'>, owner: number): void {
    this.flows.set(ReferenceClassifier.flowKey(p), { owner, rule: null })
  }

  releaseFlow(p: Omit<RefPacket, 'direction'>): void {
    this.flows.delete(ReferenceClassifier.flowKey(hasPorts(p.protocol) ? p : { ...p, localPort: 0, remotePort: 0 }))
  }

  registerListener(l: { ipVersion: 4 | 6; protocol: number; localAddress: string | null; localPort: number; port: number }, owner: number): void {
    const address = l.localAddress === null ? null : canonicalAddress(l.localAddress, l.ipVersion)
    const existing = this.listeners.findIndex((x) => x.ipVersion === l.ipVersion && x.protocol === l.protocol && x.address === address && x.localPort === l.localPort && x.port === l.port)
    if (existing >= 0) this.listeners.splice(existing, 1)
    this.listeners.push({ ipVersion: l.ipVersion, protocol: l.protocol, address, localPort: l.localPort, port: l.port, owner })
  }

  private ruleMatches(rule: CompiledRefRule, p: RefPacket): boolean {
    if (rule.port !== undefined && rule.port !== p.port) return false
    if (rule.direction !== undefined && rule.direction !== p.direction) return false
    if (rule.ipVersion !== undefined && rule.ipVersion !== p.ipVersion) return false
    if (rule.protocol !== undefined && rule.protocol !== p.protocol) return false
    const family = p.ipVersion === 4 ? 'ipv4' : 'ipv6'
    if (rule.localPrefix !== undefined && (prefixFamily(rule.localPrefix) !== p.ipVersion || !rule.local!.check(p.localAddress, family))) return false
    if (rule.remotePrefix !== undefined && (prefixFamily(rule.remotePrefix) !== p.ipVersion || !rule.remote!.check(p.remoteAddress, family))) return false
    if (rule.localPorts !== undefined || rule.remotePorts !== undefined) {
      if (!hasPorts(p.protocol)) return false
      if (rule.localPorts !== undefined && (p.localPort < rule.localPorts.from || p.localPort > rule.localPorts.to)) return false
      if (rule.remotePorts !== undefined && (p.remotePort < rule.remotePorts.from || p.remotePort > rule.remotePorts.to)) return false
    }
    return true
  }

  classify(p: RefPacket): RefDecision {
    // Ports are only part of the key for protocols that carry them.
    const keyed = hasPorts(p.protocol) ? p : { ...p, localPort: 0, remotePort: 0 }
    const key = ReferenceClassifier.flowKey(keyed)
    const flow = this.flows.get(key)
    if (flow !== undefined) return { owner: flow.owner, rule: flow.rule, reason: 'flow' }
    let decision: RefDecision | undefined
    let best: CompiledRefRule | undefined
    for (const rule of this.rules) {
      if (!this.ruleMatches(rule, keyed)) continue
      if (best === undefined || rule.priority > best.priority) best = rule
    }
    if (best !== undefined) decision = { owner: best.owner, rule: best.name, reason: 'rule' }
    if (decision === undefined) {
      const local = canonicalAddress(keyed.localAddress, keyed.ipVersion)
      const candidates = this.listeners.filter((l) => l.ipVersion === keyed.ipVersion && l.protocol === keyed.protocol && l.localPort === keyed.localPort && l.port === keyed.port)
      const listener = candidates.find((l) => l.address === local) ?? candidates.find((l) => l.address === null)
      if (listener !== undefined) decision = { owner: listener.owner, rule: null, reason: 'listener' }
    }
    decision ??= { owner: this.defaults[keyed.port], rule: null, reason: 'default' }
    this.flows.set(key, { owner: decision.owner, rule: decision.rule })
    return decision
  }
}
