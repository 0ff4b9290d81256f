// Classifier counters and flows as the schema's stats records (ClassifierStats,
// FlowRecord) for the control socket (`flowstack stat`, `flowstack flows`).
// Built on request, never on the data path.
import { create } from '@bufbuild/protobuf'
import { ClassifierStatsSchema, CounterSchema, FlowKeySchema, FlowRecordSchema, IpVersion, type ClassifierStats, type Counter, type FlowRecord } from '../proto/gen/flowstack_pb.js'
import { OWNER_WIRE, REASON_NAMES, SPOOF_REASON_NAMES, type Classifier } from './classifier.js'
import { OWNER_DROP, OWNER_KERNEL } from './rules.js'

function counter(name: string, value: number): Counter {
  return create(CounterSchema, { name, value: BigInt(value) })
}

export function ownerName(classifier: Classifier, owner: number): string {
  if (owner === OWNER_KERNEL) return 'kernel'
  if (owner === OWNER_DROP) return 'drop'
  if (owner === OWNER_WIRE) return 'wire'
  return classifier.instances[owner] ?? `instance#${owner}`
}

export function classifierStats(classifier: Classifier): ClassifierStats {
  const actions = new Map<string, number>([
    ['kernel', classifier.ownerCounts[0]],
    ['drop', classifier.ownerCounts[1]],
    // An instance's sends that nothing behind its port claimed: they left on the port.
    ['wire', classifier.ownerCounts[2]],
    ['instance', 0],
  ])
  for (let i = 3; i < classifier.ownerCounts.length; i++) actions.set('instance', actions.get('instance')! + classifier.ownerCounts[i])
  const rules = classifier.ruleSet
  return create(ClassifierStatsSchema, {
    reasons: REASON_NAMES.map((name, i) => counter(name, classifier.reasonCounts[i])),
    actions: [...actions].map(([name, value]) => counter(name, value)),
    spoofed: SPOOF_REASON_NAMES.map((name, i) => counter(name, classifier.spoofCounts[i])),
    rules: rules.rules.map((rule, i) => counter(rule.name, rules.hits[i])),
    flows: BigInt(classifier.flowCount),
    ruleGeneration: BigInt(classifier.ruleGeneration),
  })
}

/** The flow table as records, optionally only one owner's ("kernel", "drop", "wire" or an instance name). */
export function flowRecords(classifier: Classifier, options: { owner?: string; limit?: number } = {}): FlowRecord[] {
  const out: FlowRecord[] = []
  for (const flow of classifier.listFlows()) {
    const owner = ownerName(classifier, flow.owner)
    if (options.owner !== undefined && options.owner !== '' && owner !== options.owner) continue
    out.push(
      create(FlowRecordSchema, {
        key: create(FlowKeySchema, {
          ipVersion: flow.key.ipVersion === 4 ? IpVersion.IPV4 : IpVersion.IPV6,
          protocol: flow.key.protocol,
          localAddress: flow.key.localAddress,
          localPort: flow.key.localPort,
          remoteAddress: flow.key.remoteAddress,
          remotePort: flow.key.remotePort,
          port: classifier.ports[flow.key.port]?.name ?? String(flow.key.port),
        }),
        owner,
        state: flow.state,
        packets: BigInt(flow.packets),
        bytes: BigInt(flow.bytes),
        rule: flow.rule ?? '',
      }),
    )
    if (options.limit !== undefined && options.limit > 0 && out.length >= options.limit) break
  }
  return out
}
