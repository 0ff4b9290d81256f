// The per-socket kernel fallback's decision (DESIGN.md §5): which connects an
// instance hands to the kernel, and why.
import { describe, expect, it } from 'vitest'
import { OWNER_DROP, OWNER_KERNEL, type RuleSpec } from '../../classifier/rules.js'
import { PROTO_TCP, parsePrefix } from '../../classifier/key.js'
import { ConnectPolicy } from '../../runtime/host/connect-policy.js'

const kernelRule = (name: string, prefix: string, port?: number, owner = OWNER_KERNEL): RuleSpec => ({
  name,
  priority: 10,
  protocol: PROTO_TCP,
  localPrefix: parsePrefix(prefix)!,
  ...(port !== undefined ? { localPorts: { from: port, to: port } } : {}),
  owner,
})

describe('ConnectPolicy', () => {
  it('sends loopback destinations to the kernel', () => {
    const policy = new ConnectPolicy({ addresses: ['198.51.100.7/24'], routes: [], rules: [], portIndex: 0 })
    for (const host of ['127.0.0.1', '127.9.9.9', '::1', '[::1]', 'localhost']) expect(policy.decide(host, 80)).toBe('loopback')
  })

  it('serves on-link and routed destinations from the stack, the rest from the kernel', () => {
    const policy = new ConnectPolicy({
      addresses: ['198.51.100.7/24', '2001:db8::7/64'],
      routes: [{ to: '203.0.113.0/24', via: '198.51.100.1' }],
      rules: [],
      portIndex: 0,
    })
    expect(policy.decide('198.51.100.20', 80)).toBeNull()
    expect(policy.decide('203.0.113.5', 443)).toBeNull()
    expect(policy.decide('2001:db8::99', 80)).toBeNull()
    expect(policy.decide('[2001:db8::99]', 80)).toBeNull()
    expect(policy.decide('192.0.2.1', 80)).toBe('no-route')
    expect(policy.decide('2001:db8:1::1', 80)).toBe('no-route')
    // Names are the stack's to resolve.
    expect(policy.decide('example.test', 80)).toBeNull()
  })

  it('lets a default route cover its own family only', () => {
    const policy = new ConnectPolicy({ addresses: ['198.51.100.7/24'], routes: [{ to: 'default', via: '198.51.100.1' }], rules: [], portIndex: 0 })
    expect(policy.decide('192.0.2.1', 80)).toBeNull()
    // No IPv6 address at all: nothing of the instance's can reach it.
    expect(policy.decide('2001:db8::1', 80)).toBe('no-route')
  })

  it('follows rules that say kernel (and only those), and new rules after a reload', () => {
    const policy = new ConnectPolicy({
      addresses: ['198.51.100.7/24'],
      routes: [],
      rules: [kernelRule('to-kernel', '198.51.100.1/32', 22), kernelRule('dropped', '198.51.100.2/32', undefined, OWNER_DROP)],
      portIndex: 0,
      kernelRules: true,
    })
    expect(policy.decide('198.51.100.1', 22)).toBe('rule')
    expect(policy.decide('198.51.100.1', 80)).toBeNull()
    expect(policy.decide('198.51.100.2', 22)).toBeNull()
    policy.replaceRules([kernelRule('all-kernel', '198.51.100.0/24')])
    expect(policy.decide('198.51.100.1', 80)).toBe('rule')
    expect(policy.decide('198.51.100.2', 22)).toBe('rule')
  })

  it('matches rules for another port only on that port', () => {
    const rule: RuleSpec = { ...kernelRule('other-port', '198.51.100.0/24'), port: 1 }
    expect(new ConnectPolicy({ addresses: ['198.51.100.7/24'], routes: [], rules: [rule], portIndex: 0, kernelRules: true }).decide('198.51.100.1', 80)).toBeNull()
    expect(new ConnectPolicy({ addresses: ['198.51.100.7/24'], routes: [], rules: [rule], portIndex: 1, kernelRules: true }).decide('198.51.100.1', 80)).toBe('rule')
  })

  it('leaves kernel rules to the switch on ports that do not own a wire (TUN/TAP/memory: the kernel or its stand-in is the far end)', () => {
    const policy = new ConnectPolicy({ addresses: ['198.51.100.7/24'], routes: [], rules: [kernelRule('to-kernel', '198.51.100.1/32')], portIndex: 0 })
    expect(policy.decide('198.51.100.1', 8080)).toBeNull()
  })
})
