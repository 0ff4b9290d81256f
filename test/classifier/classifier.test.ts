import { describe, expect, it } from 'vitest'
import {
  Classifier,
  Direction,
  ExactTable,
  KEY_WORDS,
  LinkKind,
  OWNER_DROP,
  OWNER_KERNEL,
  REASON_NAMES,
  RuleSet,
  SPOOF_REASON_NAMES,
  formatAddress,
  parsePrefix,
  type Decision,
} from '../../classifier/index.js'
import { arpRequest, buildPacket, fragmentPair } from './packets.js'

function make(now: { t: number }, rules = new RuleSet([])): Classifier {
  return new Classifier({
    ports: [{ name: 'wire0', defaultOwner: OWNER_KERNEL }],
    instances: ['web', 'api'],
    rules,
    now: () => now.t,
    fragmentHoldPackets: 2,
    fragmentHoldMs: 1000,
  })
}

const webRule = () =>
  new RuleSet([
    { name: 'web', priority: 10, protocol: 6, localPorts: { from: 443, to: 443 }, owner: 0 },
    { name: 'dns6', priority: 10, protocol: 17, localPrefix: parsePrefix('2001:db8::/32')!, localPorts: { from: 53, to: 53 }, owner: 1 },
    { name: 'block', priority: 100, remotePrefix: parsePrefix('203.0.113.0/24')!, owner: OWNER_DROP },
  ])

function summary(c: Classifier, d: Decision): string {
  return `${d.owner}/${c.ruleName(d.rule)}/${REASON_NAMES[d.reason]}`
}

describe('addresses and prefixes', () => {
  it('parses and formats IPv4 and IPv6 (RFC 5952 compression)', () => {
    expect(parsePrefix('198.51.100.300/24')).toBeNull()
    expect(parsePrefix('198.51.100.1/33')).toBeNull()
    expect(parsePrefix('01.2.3.4/8')).toBeNull()
    expect(parsePrefix('2001:db8::1::2/64')).toBeNull()
    const p = parsePrefix('2001:db8:0:0:1:0:0:1/64')!
    expect(p.length).toBe(64)
    expect(formatAddress(p.addressWords, 0, 6)).toBe('2001:db8::1:0:0:1')
    expect(formatAddress(parsePrefix('::ffff:192.0.2.1')!.addressWords, 0, 6)).toBe('::ffff:c000:201')
    expect(formatAddress(parsePrefix('198.51.100.7/24')!.words, 0, 4)).toBe('198.51.100.0')
  })
})

describe('ExactTable', () => {
  it('keeps every remaining key reachable after backward-shift deletions', () => {
    const table = new ExactTable(2, 200)
    const key = new Uint32Array(2)
    for (let i = 0; i < 200; i++) {
      key[0] = i & 7
      key[1] = i
      expect(table.set(key, 0, i)).toBe(-1)
    }
    key[1] = 999
    expect(table.set(key, 0, 1)).toBe(-2)
    for (let i = 0; i < 200; i += 3) {
      key[0] = i & 7
      key[1] = i
      expect(table.delete(key, 0)).toBe(i)
    }
    for (let i = 0; i < 200; i++) {
      key[0] = i & 7
      key[1] = i
      expect(table.get(key, 0)).toBe(i % 3 === 0 ? -1 : i)
    }
    expect(table.size).toBe(200 - 67)
  })
})

describe('packet classification', () => {
  it('follows rules, then caches the decision as a flow', () => {
    const now = { t: 0 }
    const c = make(now, webRule())
    const syn = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.10', dst: '198.51.100.2', srcPort: 40000, dstPort: 443 })
    expect(summary(c, c.classifyPacket(syn, 0, syn.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/rule')
    expect(summary(c, c.classifyPacket(syn, 0, syn.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/flow')
    const bad = buildPacket({ ipVersion: 4, protocol: 6, src: '203.0.113.9', dst: '198.51.100.2', srcPort: 40000, dstPort: 443, ethernet: true })
    expect(summary(c, c.classifyPacket(bad, 0, bad.length, LinkKind.Ethernet, 0, Direction.In))).toBe('-2/block/rule')
    const dns = buildPacket({ ipVersion: 6, protocol: 17, src: '2001:db8::99', dst: '2001:db8::2', srcPort: 5353, dstPort: 53 })
    expect(summary(c, c.classifyPacket(dns, 0, dns.length, LinkKind.Ip, 0, Direction.In))).toBe('1/dns6/rule')
    expect(c.ruleSet.hits[0]).toBe(1)
  })

  it('reads the ports after IPv6 extension headers, and rejects an endless chain', () => {
    const c = make({ t: 0 }, webRule())
    const tcp = buildPacket({ ipVersion: 6, protocol: 6, src: '2001:db8::9', dst: '2001:db8::2', srcPort: 999, dstPort: 443 })
    const withOptions = new Uint8Array(tcp.length + 16)
    withOptions.set(tcp.subarray(0, 40), 0)
    withOptions[6] = 0 // hop-by-hop options
    withOptions[5] = tcp[5] + 16 // payload length
    withOptions[40] = 60 // next: destination options, length 0 (8 bytes)
    withOptions[48] = 6 // next: TCP
    withOptions.set(tcp.subarray(40), 56)
    expect(summary(c, c.classifyPacket(withOptions, 0, withOptions.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/rule')
    const endless = new Uint8Array(40 + 8 * 12)
    endless.set(withOptions.subarray(0, 40), 0)
    endless[4] = 0
    endless[5] = 8 * 12
    endless[6] = 60
    for (let i = 0; i < 12; i++) endless[40 + 8 * i] = 60
    expect(summary(c, c.classifyPacket(endless, 0, endless.length, LinkKind.Ip, 0, Direction.In))).toBe('-1/null/parse-error')
  })

  it('gives non-IP frames and malformed packets the default action, counted by reason', () => {
    const c = make({ t: 0 })
    const arp = arpRequest('198.51.100.1', '198.51.100.2')
    expect(summary(c, c.classifyPacket(arp, 0, arp.length, LinkKind.Ethernet, 0, Direction.In))).toBe('-1/null/not-ip')
    const truncated = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.1', dst: '198.51.100.2', srcPort: 1, dstPort: 2 }).subarray(0, 22)
    expect(summary(c, c.classifyPacket(truncated, 0, truncated.length, LinkKind.Ip, 0, Direction.In))).toBe('-1/null/parse-error')
    const garbage = Uint8Array.of(0x75, 1, 2, 3)
    expect(summary(c, c.classifyPacket(garbage, 0, garbage.length, LinkKind.Ip, 0, Direction.In))).toBe('-1/null/parse-error')
    const outOfBounds = new Uint8Array(10)
    expect(summary(c, c.classifyPacket(outOfBounds, 4, 20, LinkKind.Ip, 0, Direction.In))).toBe('-1/null/parse-error')
    expect(c.reasonCounts[4]).toBe(1)
    expect(c.reasonCounts[5]).toBe(3)
  })

  it('classifies later fragments like their first, holding those that come first', () => {
    for (const ipVersion of [4, 6] as const) {
      const now = { t: 0 }
      const c = make(now, webRule())
      const released: Array<[number, string]> = []
      c.onFragmentRelease = (token, d) => released.push([token, summary(c, d)])
      const spec = { ipVersion, protocol: 6, src: ipVersion === 4 ? '192.0.2.10' : '2001:db8::10', dst: ipVersion === 4 ? '198.51.100.2' : '2001:db8::2', srcPort: 40000, dstPort: 443 }
      const [first, later] = fragmentPair(spec, 77)
      // In order: the later fragment follows the first's decision.
      expect(summary(c, c.classifyPacket(first, 0, first.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/rule')
      expect(summary(c, c.classifyPacket(later, 0, later.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/rule')
      // Out of order: held, then released when the first arrives.
      const [first2, later2] = fragmentPair({ ...spec, srcPort: 40001 }, 78)
      expect(c.classifyPacket(later2, 0, later2.length, LinkKind.Ip, 0, Direction.In).held).toBe(true)
      expect(c.heldFragments).toBe(1)
      expect(summary(c, c.classifyPacket(first2, 0, first2.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/rule')
      expect(released).toEqual([[0, '0/web/rule']])
      // Never completed: expires with the default action after the hold time.
      const [, later3] = fragmentPair({ ...spec, srcPort: 40002 }, 79)
      expect(c.classifyPacket(later3, 0, later3.length, LinkKind.Ip, 0, Direction.In, 5).held).toBe(true)
      now.t = 1500
      c.expireFragments()
      expect(released[1]).toEqual([5, '-1/null/fragment-expired'])
      // Bounded: with 2 hold slots, a third waiting fragment is not held.
      for (let i = 0; i < 2; i++) {
        const [, l] = fragmentPair({ ...spec, srcPort: 41000 + i }, 90 + i)
        expect(c.classifyPacket(l, 0, l.length, LinkKind.Ip, 0, Direction.In).held).toBe(true)
      }
      const [, overflow] = fragmentPair({ ...spec, srcPort: 42000 }, 99)
      expect(summary(c, c.classifyPacket(overflow, 0, overflow.length, LinkKind.Ip, 0, Direction.In))).toBe('-1/null/fragment-overflow')
    }
  })

  it('prefers established flows and listeners as the issue orders them', () => {
    const c = make({ t: 0 }, webRule())
    const fields = { ipVersion: 4 as const, protocol: 6, localAddress: '198.51.100.3', localPort: 443, remoteAddress: '192.0.2.50', remotePort: 50000, port: 0 }
    c.registerFlow(fields, 1)
    const pkt = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.50', dst: '198.51.100.3', srcPort: 50000, dstPort: 443 })
    expect(summary(c, c.classifyPacket(pkt, 0, pkt.length, LinkKind.Ip, 0, Direction.In))).toBe('1/null/flow')
    c.registerListener({ ipVersion: 4, protocol: 17, localAddress: '0.0.0.0', localPort: 5000, port: 0 }, 1)
    c.registerListener({ ipVersion: 4, protocol: 17, localAddress: '198.51.100.2', localPort: 5000, port: 0 }, 0)
    const toExact = buildPacket({ ipVersion: 4, protocol: 17, src: '192.0.2.50', dst: '198.51.100.2', srcPort: 1, dstPort: 5000 })
    const toOther = buildPacket({ ipVersion: 4, protocol: 17, src: '192.0.2.50', dst: '198.51.100.9', srcPort: 1, dstPort: 5000 })
    expect(summary(c, c.classifyPacket(toExact, 0, toExact.length, LinkKind.Ip, 0, Direction.In))).toBe('0/null/listener')
    expect(summary(c, c.classifyPacket(toOther, 0, toOther.length, LinkKind.Ip, 0, Direction.In))).toBe('1/null/listener')
    expect(c.releaseInstance(1)).toBe(2) // the registered flow and the cached listener decision
  })

  it('keeps established flows across an atomic rule swap and applies the new rules to new flows', () => {
    const c = make({ t: 0 }, webRule())
    const a = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.10', dst: '198.51.100.2', srcPort: 1000, dstPort: 443 })
    expect(summary(c, c.classifyPacket(a, 0, a.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/rule')
    c.replaceRules(new RuleSet([{ name: 'moved', priority: 10, protocol: 6, localPorts: { from: 443, to: 443 }, owner: 1 }]))
    expect(summary(c, c.classifyPacket(a, 0, a.length, LinkKind.Ip, 0, Direction.In))).toBe('0/web/flow')
    const b = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.10', dst: '198.51.100.2', srcPort: 1001, dstPort: 443 })
    expect(summary(c, c.classifyPacket(b, 0, b.length, LinkKind.Ip, 0, Direction.In))).toBe('1/moved/rule')
    expect(c.ruleGeneration).toBe(1)
  })

  it('carries the hit count of a rule that comes back unchanged, and only of such a rule', () => {
    const c = make({ t: 0 }, webRule())
    for (let port = 2000; port < 2003; port++) {
      const syn = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.10', dst: '198.51.100.2', srcPort: port, dstPort: 443 })
      c.classifyPacket(syn, 0, syn.length, LinkKind.Ip, 0, Direction.In)
    }
    const blocked = buildPacket({ ipVersion: 4, protocol: 17, src: '203.0.113.9', dst: '198.51.100.2', srcPort: 1, dstPort: 9 })
    c.classifyPacket(blocked, 0, blocked.length, LinkKind.Ip, 0, Direction.In)
    const hits = (): Record<string, number> => Object.fromEntries(c.ruleSet.rules.map((r, i) => [r.name, c.ruleSet.hits[i]]))
    expect(hits()).toEqual({ web: 3, dns6: 0, block: 1 })
    // Same 'web' and 'dns6'; 'block' changes its prefix; 'new' is new. Order changes too.
    c.replaceRules(new RuleSet([
      { name: 'new', priority: 5, protocol: 17, owner: 0 },
      { name: 'block', priority: 100, remotePrefix: parsePrefix('203.0.113.0/25')!, owner: OWNER_DROP },
      { name: 'dns6', priority: 10, protocol: 17, localPrefix: parsePrefix('2001:db8::/32')!, localPorts: { from: 53, to: 53 }, owner: 1 },
      { name: 'web', priority: 10, protocol: 6, localPorts: { from: 443, to: 443 }, owner: 0 },
    ]))
    expect(hits()).toEqual({ new: 0, block: 0, dns6: 0, web: 3 })
    // A rule with the same name and a different action starts again too.
    c.replaceRules(new RuleSet([{ name: 'web', priority: 10, protocol: 6, localPorts: { from: 443, to: 443 }, owner: 1 }]))
    expect(hits()).toEqual({ web: 0 })
  })

  it('counts decisions that the full flow table could not cache, and still decides them', () => {
    const c = new Classifier({ ports: [{ name: 'w', defaultOwner: OWNER_KERNEL }], instances: [], rules: new RuleSet([]), maxFlows: 4, now: () => 0 })
    const key = new Uint32Array(KEY_WORDS)
    for (let i = 0; i < 10; i++) {
      key[0] = (4 << 24) | (6 << 16)
      key[9] = i
      expect(REASON_NAMES[c.classifyKey(key, Direction.In).reason]).toBe('default')
    }
    expect(c.flowCount).toBe(4)
    expect(c.flowTableFull).toBe(6)
  })
})

describe('anti-spoofing', () => {
  function setup(): Classifier {
    const c = make({ t: 0 })
    c.setInstance(0, 0, [parsePrefix('198.51.100.2/24')!, parsePrefix('2001:db8::2/64')!])
    c.setInstance(1, 0, [parsePrefix('198.51.100.3/24')!])
    c.registerFlow({ ipVersion: 4, protocol: 6, localAddress: '198.51.100.2', localPort: 443, remoteAddress: '192.0.2.50', remotePort: 50000, port: 0 }, 0)
    c.registerFlow({ ipVersion: 4, protocol: 6, localAddress: '198.51.100.3', localPort: 8080, remoteAddress: '192.0.2.50', remotePort: 50001, port: 0 }, 1)
    c.registerListener({ ipVersion: 6, protocol: 17, localAddress: '::', localPort: 53, port: 0 }, 0)
    return c
  }

  it('lets an instance send on its own flows and listeners from its own addresses', () => {
    const c = setup()
    const own = buildPacket({ ipVersion: 4, protocol: 6, src: '198.51.100.2', dst: '192.0.2.50', srcPort: 443, dstPort: 50000, ethernet: true })
    expect(c.checkOutbound(own, 0, own.length, LinkKind.Ethernet, 0)).toBe(true)
    const dnsReply = buildPacket({ ipVersion: 6, protocol: 17, src: '2001:db8::2', dst: '2001:db8::77', srcPort: 53, dstPort: 33000 })
    expect(c.checkOutbound(dnsReply, 0, dnsReply.length, LinkKind.Ip, 0)).toBe(true)
    const arp = arpRequest('198.51.100.2', '198.51.100.1')
    expect(c.checkOutbound(arp, 0, arp.length, LinkKind.Ethernet, 0)).toBe(true)
    expect(Array.from(c.spoofCounts)).toEqual([0, 0, 0, 0])
  })

  it("drops and counts an instance sending on another instance's flow or from its address", () => {
    const c = setup()
    // Instance 1 (api) sends from web's address on web's flow.
    const fromWebAddress = buildPacket({ ipVersion: 4, protocol: 6, src: '198.51.100.2', dst: '192.0.2.50', srcPort: 443, dstPort: 50000 })
    expect(c.checkOutbound(fromWebAddress, 0, fromWebAddress.length, LinkKind.Ip, 1)).toBe(false)
    // Instance 0 (web) sends on api's flow: its address is not web's.
    const onApiFlow = buildPacket({ ipVersion: 4, protocol: 6, src: '198.51.100.3', dst: '192.0.2.50', srcPort: 8080, dstPort: 50001 })
    expect(c.checkOutbound(onApiFlow, 0, onApiFlow.length, LinkKind.Ip, 0)).toBe(false)
    // Web from its own address but on a flow it does not hold.
    const noFlow = buildPacket({ ipVersion: 4, protocol: 6, src: '198.51.100.2', dst: '192.0.2.50', srcPort: 444, dstPort: 50000 })
    expect(c.checkOutbound(noFlow, 0, noFlow.length, LinkKind.Ip, 0)).toBe(false)
    // ARP claiming another instance's address.
    const arp = arpRequest('198.51.100.3', '198.51.100.1')
    expect(c.checkOutbound(arp, 0, arp.length, LinkKind.Ethernet, 0)).toBe(false)
    const garbage = Uint8Array.of(0x45, 0)
    expect(c.checkOutbound(garbage, 0, garbage.length, LinkKind.Ip, 0)).toBe(false)
    const counts = Object.fromEntries(SPOOF_REASON_NAMES.map((name, i) => [name, c.spoofCounts[i]]))
    expect(counts).toEqual({ address: 3, flow: 1, 'not-ip': 0, 'parse-error': 1 })
  })
})
