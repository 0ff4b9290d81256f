import { toJson } from '@bufbuild/protobuf'
import { describe, expect, it } from 'vitest'
import { Classifier, Direction, LinkKind, OWNER_KERNEL, RuleSet, classifierStats, flowRecords } from '../../classifier/index.js'
import { ClassifierStatsSchema, FlowRecordSchema } from '../../proto/gen/flowstack_pb.js'
import { buildPacket } from './packets.js'

describe('classifier stats records', () => {
  it('reports decisions, rule hits and flows as schema messages', () => {
    let now = 1000
    const c = new Classifier({
      ports: [{ name: 'wire0', defaultOwner: OWNER_KERNEL }],
      instances: ['web'],
      rules: new RuleSet([{ name: 'web', priority: 1, protocol: 6, localPorts: { from: 443, to: 443 }, owner: 0 }]),
      now: () => now,
    })
    const p = buildPacket({ ipVersion: 6, protocol: 6, src: '2001:db8::9', dst: '2001:db8::2', srcPort: 5000, dstPort: 443 })
    for (let i = 0; i < 3; i++) c.classifyPacket(p, 0, p.length, LinkKind.Ip, 0, Direction.In)
    const q = buildPacket({ ipVersion: 4, protocol: 17, src: '192.0.2.1', dst: '198.51.100.2', srcPort: 1, dstPort: 2 })
    c.classifyPacket(q, 0, q.length, LinkKind.Ip, 0, Direction.In)
    const stats = toJson(ClassifierStatsSchema, classifierStats(c)) as Record<string, any>
    expect(stats.reasons.filter((r: any) => r.value !== undefined)).toEqual([
      { name: 'flow', value: '2' },
      { name: 'rule', value: '1' },
      { name: 'default', value: '1' },
    ])
    expect(stats.actions).toEqual([{ name: 'kernel', value: '1' }, { name: 'drop' }, { name: 'wire' }, { name: 'instance', value: '3' }])
    expect(stats.rules).toEqual([{ name: 'web', value: '1' }])
    expect(stats.flows).toBe('2')
    const web = flowRecords(c, { owner: 'web' }).map((r) => toJson(FlowRecordSchema, r))
    expect(web).toEqual([
      {
        key: { ipVersion: 'IPV6', protocol: 6, localAddress: '2001:db8::2', localPort: 443, remoteAddress: '2001:db8::9', remotePort: 5000, port: 'wire0' },
        owner: 'web',
        state: 'decided',
        packets: '3',
        bytes: String(3 * p.length),
        rule: 'web',
      },
    ])
    now = 400_000
    expect(c.expireIdleFlows(300_000)).toBe(2)
    expect(c.flowCount).toBe(0)
  })
})
