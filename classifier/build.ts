// From a validated config (runtime/config) to classifier inputs. Names become
// indexes here once, so the data path never sees a string.
import { Direction as ConfigDirection, IpVersion, Protocol, type Action, type Config, type Rule } from '../proto/gen/flowstack_pb.js'
import { Classifier, type ClassifierOptions } from './classifier.js'
import { Direction, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, parsePrefix, type Prefix } from './key.js'
import { OWNER_DROP, OWNER_KERNEL, RuleSet, type RuleSpec } from './rules.js'

export interface NameIndex {
  ports: Map<string, number>
  instances: Map<string, number>
}

export function nameIndex(config: Config): NameIndex {
  return {
    ports: new Map(config.ports.map((p, i) => [p.name, i])),
    instances: new Map(config.instances.map((inst, i) => [inst.name, i])),
  }
}

export function ownerOf(action: Action | undefined, names: NameIndex, fallback: number): number {
  switch (action?.kind.case) {
    case 'instance': {
      const index = names.instances.get(action.kind.value)
      if (index === undefined) throw new RangeError(`no instance named ${JSON.stringify(action.kind.value)}`)
      return index
    }
    case 'kernel':
      return OWNER_KERNEL
    case 'drop':
      return OWNER_DROP
    default:
      return fallback
  }
}

const PROTOCOL_NUMBERS: Record<number, number> = {
  [Protocol.TCP]: PROTO_TCP,
  [Protocol.UDP]: PROTO_UDP,
  [Protocol.ICMP]: PROTO_ICMP,
  [Protocol.ICMPV6]: PROTO_ICMPV6,
}

function prefixOf(text: string): Prefix | undefined {
  if (text === '') return undefined
  const prefix = parsePrefix(text, { requireLength: true })
  if (prefix === null) throw new RangeError(`${JSON.stringify(text)} is not a CIDR prefix`)
  return prefix
}

export function ruleSpec(rule: Rule, names: NameIndex): RuleSpec {
  const match = rule.match
  const spec: RuleSpec = { name: rule.name, priority: rule.priority, owner: ownerOf(rule.action, names, OWNER_KERNEL) }
  if (match === undefined) return spec
  if (match.port !== '') {
    const port = names.ports.get(match.port)
    if (port === undefined) throw new RangeError(`no port named ${JSON.stringify(match.port)}`)
    spec.port = port
  }
  if (match.direction === ConfigDirection.IN) spec.direction = Direction.In
  if (match.direction === ConfigDirection.OUT) spec.direction = Direction.Out
  if (match.ipVersion === IpVersion.IPV4) spec.ipVersion = 4
  if (match.ipVersion === IpVersion.IPV6) spec.ipVersion = 6
  if (match.protocolMatch.case === 'protocol') spec.protocol = PROTOCOL_NUMBERS[match.protocolMatch.value]
  if (match.protocolMatch.case === 'protocolNumber') spec.protocol = match.protocolMatch.value
  spec.localPrefix = prefixOf(match.localPrefix)
  spec.remotePrefix = prefixOf(match.remotePrefix)
  for (const field of ['localPorts', 'remotePorts'] as const) {
    const range = match[field]
    if (range === undefined) continue
    // A single bound means that one port (see PortRange in the schema).
    const from = range.from ?? range.to ?? 0
    const to = range.to ?? range.from ?? 65535
    spec[field] = { from, to }
  }
  return spec
}

/** Compiles the config's rules; the config must have passed validation. */
export function compileRules(config: Config, names: NameIndex = nameIndex(config)): RuleSet {
  return new RuleSet(config.rules.map((rule) => ruleSpec(rule, names)))
}

/** A classifier for a validated config, with every instance's port and addresses set. */
export function classifierFromConfig(config: Config, options: Partial<ClassifierOptions> = {}): Classifier {
  const names = nameIndex(config)
  const settings = config.classifier
  const classifier = new Classifier({
    ports: config.ports.map((port) => ({ name: port.name, defaultOwner: ownerOf(port.defaultAction, names, OWNER_KERNEL) })),
    instances: config.instances.map((instance) => instance.name),
    rules: compileRules(config, names),
    maxFlows: settings?.maxFlows || undefined,
    instanceMaxFlows: config.instances.map((instance) => instance.limits?.maxFlows ?? 0),
    fragmentHoldPackets: settings?.fragmentHoldPackets || undefined,
    fragmentHoldMs: settings?.fragmentHoldMs || undefined,
    ...options,
  })
  config.instances.forEach((instance, i) => {
    const addresses = instance.addresses.map((text) => parsePrefix(text, { requireLength: true })).filter((p): p is Prefix => p !== null)
    classifier.setInstance(i, names.ports.get(instance.port) ?? -1, addresses)
  })
  return classifier
}
