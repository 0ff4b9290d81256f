import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { formatIpv6Address } from '../../stacks/wire/address.js'
import {
  ETHERTYPE_IPV6,
  OUR_MAC,
  PEER_MAC,
  concat,
  decode,
  ethernet,
  fill,
  icmpv6Frame,
  icmpv6Message,
  ip,
  ipv6Packet,
  makeStack,
  udpDatagram,
  v6,
} from './harness.js'

const PEER = v6('2001:db8::1')
const US = v6('2001:db8::2')
const ROUTER_LL = v6('fe80::1')
const ALL_NODES = v6('ff02::1')

const frame6 = (packet: Uint8Array, dstMac = OUR_MAC) => ethernet(dstMac, PEER_MAC, ETHERTYPE_IPV6, packet)

/** NS body: reserved(4 after the first 8 bytes is the 'rest') target + optional SLLA. */
function nsBody(target: Uint8Array, sourceMac: Uint8Array | null): Uint8Array {
  return sourceMac === null ? target : concat(target, new Uint8Array([1, 1]), sourceMac)
}

/** A stack with DAD off (addresses usable at once) that already knows the peer's MAC. */
function ready(options: Parameters<typeof makeStack>[0] = {}) {
  const s = makeStack({ dad: false, addresses: ['2001:db8::2/64'], acceptRouterAdvertisements: false, ...options })
  s.core.input(icmpv6Frame(OUR_MAC, PEER, US, 135, 0, 0, nsBody(US, PEER_MAC)))
  s.link.take()
  return s
}

describe('NDP (RFC 4861) and DAD (RFC 4862)', () => {
  it('runs DAD on each address before it is usable, then solicits routers', () => {
    const s = makeStack({ addresses: ['2001:db8::2/64'] })
    expect(s.core.addresses.map((a) => a.state)).toEqual(['tentative', 'tentative'])
    expect(s.core.selectSource(ip('2001:db8::1'))).toBeNull()
    // The first NS waits a random 0..1 s (RFC 4862 §5.4.2).
    const t0 = s.clock.t
    expect(s.core.nextTimeout()).toBeLessThan(t0 + 1000)
    s.clock.advance(1000)
    s.core.poll()
    const dad = s.link.take().map((f) => decode(f))
    expect(dad).toHaveLength(2)
    for (const d of dad) {
      expect(d.icmp6!.type).toBe(135)
      expect(d.ip6!.hopLimit).toBe(255)
      expect(formatIpv6Address(d.ip6!.src)).toBe('::')
      expect(d.icmp6!.ndpOptions?.sourceLinkLayerAddress).toBeUndefined()
      const target = d.icmp6!.targetAddress!
      expect(formatIpv6Address(d.ip6!.dst)).toBe(`ff02::1:ff${target[13].toString(16).padStart(2, '0')}:${((target[14] << 8) | target[15]).toString(16)}`)
      expect(d.eth!.dst.subarray(0, 2)).toEqual(new Uint8Array([0x33, 0x33]))
    }
    expect(dad.map((d) => formatIpv6Address(d.icmp6!.targetAddress!)).sort()).toEqual(['2001:db8::2', 'fe80::ff:fe00:2'])
    // RetransTimer later with no answer: preferred.
    s.clock.advance(1000)
    s.core.poll()
    expect(s.core.addresses.map((a) => a.state)).toEqual(['preferred', 'preferred'])
    expect(formatIpv6Address((s.core.selectSource(ip('2001:db8::1')) as { v6: Uint8Array }).v6)).toBe('2001:db8::2')
    expect(formatIpv6Address((s.core.selectSource(ip('fe80::1')) as { v6: Uint8Array }).v6)).toBe('fe80::ff:fe00:2')
    const [rs] = s.link.take().map((f) => decode(f))
    expect(rs.icmp6!.type).toBe(133)
    expect(formatIpv6Address(rs.ip6!.dst)).toBe('ff02::2')
    expect(rs.icmp6!.ndpOptions!.sourceLinkLayerAddress).toEqual(OUR_MAC)
  })

  it('marks an address duplicate on an NA for it, or an NS for it from ::', () => {
    const s = makeStack({ addresses: ['2001:db8::2/64', '2001:db8::3/64'] })
    s.core.input(icmpv6Frame(OUR_MAC, PEER, ALL_NODES, 136, 0, 0x20000000, concat(US, new Uint8Array([2, 1]), PEER_MAC)))
    s.core.input(icmpv6Frame(OUR_MAC, new Uint8Array(16), v6('ff02::1:ff00:3'), 135, 0, 0, nsBody(v6('2001:db8::3'), null)))
    expect(s.core.addresses.map((a) => [formatIpv6Address((a.address as { v6: Uint8Array }).v6), a.state])).toEqual([
      ['fe80::ff:fe00:2', 'tentative'],
      ['2001:db8::2', 'duplicate'],
      ['2001:db8::3', 'duplicate'],
    ])
    expect(s.core.isLocalAddress(ip('2001:db8::2'))).toBe(false)
  })

  it('drops traffic to a tentative address (other than DAD)', () => {
    const s = makeStack({ addresses: ['2001:db8::2/64'] })
    s.core.input(frame6(ipv6Packet(PEER, US, 58, icmpv6Message(PEER, US, 128, 0, 1, fill(8)))))
    s.core.input(frame6(ipv6Packet(PEER, US, 17, udpDatagram({ version: 6, v6: PEER }, { version: 6, v6: US }, 1, 2, fill(4)))))
    expect(s.link.take()).toHaveLength(0)
  })

  it('answers an NS for our address with a solicited NA carrying our MAC', () => {
    const s = makeStack({ dad: false, addresses: ['2001:db8::2/64'] })
    s.core.input(icmpv6Frame(OUR_MAC, PEER, v6('ff02::1:ff00:2'), 135, 0, 0, nsBody(US, PEER_MAC)))
    const [na] = s.link.take().map((f) => decode(f))
    expect(na.eth!.dst).toEqual(PEER_MAC)
    expect(na.icmp6!.type).toBe(136)
    expect(na.ip6!.hopLimit).toBe(255)
    expect(na.icmp6!.neighborAdvertisement).toEqual({ router: false, solicited: true, override: true })
    expect(na.icmp6!.targetAddress).toEqual(US)
    expect(na.icmp6!.ndpOptions!.targetLinkLayerAddress).toEqual(OUR_MAC)
    // Learned STALE from the NS's option (RFC 4861 §7.2.3), then DELAY because the NA used it (§7.3.3).
    expect(s.core.neighbors.get(ip('2001:db8::1'))!.state).toBe('delay')
  })

  it('ignores NDP with a hop limit other than 255 (off-link forgeries)', () => {
    const s = makeStack({ dad: false, addresses: ['2001:db8::2/64'] })
    s.core.input(icmpv6Frame(OUR_MAC, PEER, v6('ff02::1:ff00:2'), 135, 0, 0, nsBody(US, PEER_MAC), 64))
    expect(s.link.take()).toHaveLength(0)
    expect(s.core.counters.icmp6.InErrors).toBe(1)
  })

  it('resolves a neighbour with a multicast NS, queues, and flushes on the solicited NA', () => {
    const s = makeStack({ dad: false, addresses: ['2001:db8::2/64'], acceptRouterAdvertisements: false })
    const e = s.core.udp.bind({ family: 6, port: 5353 }, { message: () => {} })
    if (typeof e === 'string') throw new Error(e)
    expect(e.send(fill(10), 0, 10, ip('2001:db8::1'), 9)).toBe('queued')
    expect(e.send(fill(11), 0, 11, ip('2001:db8::1'), 9)).toBe('queued')
    const [ns] = s.link.take().map((f) => decode(f))
    expect(ns.icmp6!.type).toBe(135)
    expect(formatIpv6Address(ns.ip6!.dst)).toBe('ff02::1:ff00:1')
    expect(ns.eth!.dst).toEqual(new Uint8Array([0x33, 0x33, 0xff, 0, 0, 1]))
    expect(formatIpv6Address(ns.ip6!.src)).toBe('2001:db8::2')
    expect(ns.icmp6!.ndpOptions!.sourceLinkLayerAddress).toEqual(OUR_MAC)
    s.core.input(icmpv6Frame(OUR_MAC, PEER, US, 136, 0, 0xe0000000, concat(PEER, new Uint8Array([2, 1]), PEER_MAC)))
    const sent = s.link.take().map((f) => decode(f))
    expect(sent.map((d) => d.udp!.payloadLength)).toEqual([10, 11])
    expect(sent[0].eth!.dst).toEqual(PEER_MAC)
    expect(s.core.neighbors.get(ip('2001:db8::1'))!.state).toBe('reachable')
    expect(s.core.neighbors.get(ip('2001:db8::1'))!.isRouter).toBe(true)
  })

  it('learns the default router, on-link prefixes and the MTU from an RA; lifetime 0 removes the router', () => {
    const s = makeStack({ dad: false, addresses: ['2001:db8::2/64'] })
    const prefix = new Uint8Array(32)
    prefix[0] = 3
    prefix[1] = 4
    prefix[2] = 48
    prefix[3] = 0x80 // on-link
    prefix.set([0, 0, 0x0e, 0x10], 4) // valid 3600 s
    prefix.set(v6('2001:db8:77::'), 16)
    const mtu = new Uint8Array([5, 1, 0, 0, 0, 0, 0x05, 0x78]) // 1400
    const sll = concat(new Uint8Array([1, 1]), PEER_MAC)
    // The 4 bytes after the checksum: cur hop limit 64, flags 0, router lifetime; then reachable + retrans (8 zero bytes).
    const ra = (lifetime: number) => icmpv6Frame(OUR_MAC, ROUTER_LL, ALL_NODES, 134, 0, (64 << 24) | lifetime, concat(new Uint8Array(8), sll, mtu, prefix))
    s.core.input(ra(1800))
    expect(s.core.counters.icmp6.InRouterAdvertisements).toBe(1)
    const def = s.core.routes.lookup(ip('2001:db8:99::1'))!
    expect(formatIpv6Address((def.via as { v6: Uint8Array }).v6)).toBe('fe80::1')
    expect(def.source).toBe('ra')
    expect(s.core.routes.lookup(ip('2001:db8:77::5'))!.via).toBeNull()
    expect(s.core.mtu).toBe(1400)
    expect(s.core.neighbors.get(ip('fe80::1'))!.isRouter).toBe(true)
    // Off-link traffic goes to the router's MAC.
    const e = s.core.udp.bind({ family: 6, port: 4000 }, { message: () => {} })
    if (typeof e === 'string') throw new Error(e)
    expect(e.send(fill(4), 0, 4, ip('2001:db8:99::1'), 9)).toBe('sent')
    const [d] = s.link.take().map((f) => decode(f))
    expect(d.eth!.dst).toEqual(PEER_MAC)
    // The router's lifetime expires (RFC 4861 §6.3.5) ...
    s.clock.advance(1800_000)
    s.core.poll()
    expect(s.core.routes.lookup(ip('2001:db8:99::1'))).toBeNull()
    s.core.input(ra(1800))
    expect(s.core.routes.lookup(ip('2001:db8:99::1'))).not.toBeNull()
    // ... or a lifetime of 0 removes it at once.
    s.core.input(ra(0))
    expect(s.core.routes.lookup(ip('2001:db8:99::1'))).toBeNull()
    // RAs from non-link-local sources are ignored.
    s.core.input(icmpv6Frame(OUR_MAC, PEER, ALL_NODES, 134, 0, (64 << 24) | 1800, new Uint8Array(8)))
    expect(s.core.routes.lookup(ip('2001:db8:99::1'))).toBeNull()
  })
})

describe('SLAAC (RFC 4862 §5.5.3)', () => {
  function raWithPrefix(flags: number, valid: number, preferred: number): Uint8Array {
    const prefix = new Uint8Array(32)
    prefix[0] = 3
    prefix[1] = 4
    prefix[2] = 64
    prefix[3] = flags
    prefix.set([valid >>> 24, (valid >>> 16) & 0xff, (valid >>> 8) & 0xff, valid & 0xff], 4)
    prefix.set([preferred >>> 24, (preferred >>> 16) & 0xff, (preferred >>> 8) & 0xff, preferred & 0xff], 8)
    prefix.set(v6('2001:db8:77::'), 16)
    return icmpv6Frame(OUR_MAC, ROUTER_LL, ALL_NODES, 134, 0, (64 << 24) | 1800, concat(new Uint8Array(8), prefix))
  }

  it('forms prefix + EUI-64 from an A-flag prefix, runs DAD on it, and removes it when its valid lifetime ends', () => {
    const s = makeStack({ addresses: [] })
    s.core.input(raWithPrefix(0xc0, 3600, 1800))
    const auto = s.core.addresses.find((a) => a.autoconfigured)!
    expect(formatIpv6Address((auto.address as { v6: Uint8Array }).v6)).toBe('2001:db8:77::ff:fe00:2')
    expect(auto.state).toBe('tentative')
    for (let i = 0; i < 4; i++) {
      s.clock.advance(1000)
      s.core.poll()
    }
    expect(auto.state).toBe('preferred')
    expect(s.core.isLocalAddress(ip('2001:db8:77::ff:fe00:2'))).toBe(true)
    // A later RA announcing a short lifetime is ignored while less than two hours remain ("e)" rule) ...
    s.core.input(raWithPrefix(0xc0, 60, 30))
    expect(auto.validUntil - s.clock.t).toBe(3596_000)
    // ... and a longer one extends it.
    s.core.input(raWithPrefix(0xc0, 9000, 30))
    expect(auto.validUntil - s.clock.t).toBe(9000_000)
    s.clock.advance(9000_000)
    s.core.poll()
    expect(s.core.isLocalAddress(ip('2001:db8:77::ff:fe00:2'))).toBe(false)
    expect(s.core.addresses.some((a) => a.autoconfigured)).toBe(false)
  })

  it('ignores prefixes whose preferred lifetime exceeds the valid one, and non-/64 prefixes', () => {
    const s = makeStack({ addresses: [] })
    s.core.input(raWithPrefix(0x40, 100, 200))
    expect(s.core.addresses.some((a) => a.autoconfigured)).toBe(false)
  })
})

describe('NDP redirects (RFC 4861 §8)', () => {
  it('take a better first hop or an on-link destination from our current router only', () => {
    const s = makeStack({ dad: false, addresses: ['2001:db8::2/64'], routes: [{ to: '::/0', via: 'fe80::1' }], acceptRouterAdvertisements: false })
    const OTHER_ROUTER = v6('fe80::2')
    const tlla = concat(new Uint8Array([2, 1]), new Uint8Array([2, 0, 0, 0, 0, 0x22]))
    const redirect = (from: Uint8Array, target: Uint8Array, destination: Uint8Array) =>
      icmpv6Frame(OUR_MAC, from, v6('fe80::ff:fe00:2'), 137, 0, 0, concat(target, destination, tlla))
    const via = (dst: string) => {
      const r = s.core.routes.lookup(ip(dst))!
      return r.via === null ? 'on-link' : formatIpv6Address((r.via as { v6: Uint8Array }).v6)
    }
    s.core.input(redirect(OTHER_ROUTER, OTHER_ROUTER, v6('2001:db8:99::5'))) // not from our router
    expect(via('2001:db8:99::5')).toBe('fe80::1')
    s.core.input(redirect(ROUTER_LL, OTHER_ROUTER, v6('2001:db8:99::5')))
    expect(via('2001:db8:99::5')).toBe('fe80::2')
    expect(s.core.neighbors.get(ip('fe80::2'))!.mac).toEqual(new Uint8Array([2, 0, 0, 0, 0, 0x22]))
    s.core.input(redirect(ROUTER_LL, v6('2001:db8:99::6'), v6('2001:db8:99::6'))) // target == destination: on-link
    expect(via('2001:db8:99::6')).toBe('on-link')
    s.core.input(redirect(ROUTER_LL, v6('2001:db8:1::7'), v6('2001:db8:99::7'))) // global target ≠ destination: invalid
    expect(via('2001:db8:99::7')).toBe('fe80::1')
    expect(s.core.counters.icmp6.InRedirects).toBe(4)
  })
})

describe('IPv6 input and ICMPv6 (RFC 8200, 4443)', () => {
  it('answers an echo request', () => {
    const s = ready()
    s.core.input(frame6(ipv6Packet(PEER, US, 58, icmpv6Message(PEER, US, 128, 0, (0x77 << 16) | 5, fill(32)))))
    const [reply] = s.link.take().map((f) => decode(f))
    expect(reply.icmp6!.type).toBe(129)
    expect(reply.icmp6!.identifier).toBe(0x77)
    expect(reply.icmp6!.sequence).toBe(5)
    expect(reply.ip6!.dst).toEqual(PEER)
    expect(reply.ip.subarray(reply.icmp6!.payloadOffset)).toEqual(fill(32))
  })

  it('answers UDP to a closed port with destination unreachable code 4; drops zero-checksum UDP', () => {
    const s = ready()
    const dgram = udpDatagram({ version: 6, v6: PEER }, { version: 6, v6: US }, 1111, 2222, fill(9))
    const packet = ipv6Packet(PEER, US, 17, dgram)
    s.core.input(frame6(packet))
    const [err] = s.link.take().map((f) => decode(f))
    expect([err.icmp6!.type, err.icmp6!.code]).toEqual([1, 4])
    expect(err.ip.subarray(err.icmp6!.payloadOffset)).toEqual(packet)
    const got: Uint8Array[] = []
    s.core.udp.bind({ family: 6, port: 2222 }, { message: (p) => got.push(p.slice()) })
    const zero = dgram.slice()
    zero[6] = zero[7] = 0
    s.core.input(frame6(ipv6Packet(PEER, US, 17, zero)))
    expect(got).toHaveLength(0)
    expect(s.core.counters.udp6.InCsumErrors).toBe(1)
    s.core.input(frame6(packet))
    expect(got).toEqual([fill(9)])
  })

  it('answers an unknown Next Header with parameter problem code 1 pointing at it', () => {
    const s = ready()
    s.core.input(frame6(ipv6Packet(PEER, US, 253, fill(16))))
    const [err] = s.link.take().map((f) => decode(f))
    expect([err.icmp6!.type, err.icmp6!.code, err.icmp6!.pointer]).toEqual([4, 1, 6])
  })

  it('acts on the two high bits of unknown options (RFC 8200 §4.2)', () => {
    const s = ready()
    const got: Uint8Array[] = []
    s.core.udp.bind({ family: 6, port: 2222 }, { message: (p) => got.push(p.slice()) })
    const dgram = udpDatagram({ version: 6, v6: PEER }, { version: 6, v6: US }, 1, 2222, fill(4))
    const hbh = (optionType: number) => concat(new Uint8Array([17, 0, optionType, 2, 0, 0, 1, 0]), dgram)
    s.core.input(frame6(ipv6Packet(PEER, US, 0, hbh(0x1e)))) // 00: skip
    expect(got).toHaveLength(1)
    s.core.input(frame6(ipv6Packet(PEER, US, 0, hbh(0x5e)))) // 01: discard silently
    expect(s.link.take()).toHaveLength(0)
    s.core.input(frame6(ipv6Packet(PEER, US, 0, hbh(0x9e)))) // 10: discard + parameter problem code 2
    const [err] = s.link.take().map((f) => decode(f))
    expect([err.icmp6!.type, err.icmp6!.code, err.icmp6!.pointer]).toEqual([4, 2, 42])
    expect(got).toHaveLength(1)
  })

  it('reassembles fragments in any order and rejects overlapping ones (RFC 5722)', () => {
    const s = ready()
    const got: Uint8Array[] = []
    s.core.udp.bind({ family: 6, port: 2222 }, { message: (p) => got.push(p.slice()) })
    const dgram = udpDatagram({ version: 6, v6: PEER }, { version: 6, v6: US }, 1, 2222, fill(2500, 9))
    const frag = (offset: number, end: number, more: boolean, id: number) => {
      const h = new Uint8Array(8)
      h[0] = 17
      h[2] = offset >> 8
      h[3] = (offset & 0xf8) | (more ? 1 : 0)
      h.set([0, 0, 0, id], 4)
      return frame6(ipv6Packet(PEER, US, 44, concat(h, dgram.subarray(offset, end))))
    }
    s.core.input(frag(1232, dgram.length, false, 1))
    s.core.input(frag(0, 1232, true, 1))
    expect(got).toEqual([fill(2500, 9)])
    s.core.input(frag(0, 1232, true, 2))
    s.core.input(frag(1224, dgram.length, false, 2)) // overlaps by 8 bytes
    s.core.input(frag(1232, dgram.length, false, 2)) // "including those not yet received": a new, incomplete datagram
    expect(got).toHaveLength(1)
    expect(s.core.counters.ip6.ReasmOverlaps).toBe(1)
    expect(s.core.counters.ip6.ReasmOKs).toBe(1)
  })

  it('rejects a first fragment without the whole header chain with parameter problem code 3 (RFC 7112)', () => {
    const s = ready()
    // Destination options (16 bytes) in the first fragment, then only 4 bytes of the UDP header.
    const dest = new Uint8Array(16)
    dest[0] = 17
    dest[1] = 1
    dest[2] = 1
    dest[3] = 12
    const h = new Uint8Array([60, 0, 0, 1, 0, 0, 0, 3])
    s.core.input(frame6(ipv6Packet(PEER, US, 44, concat(h, dest, fill(4)).subarray(0, 8 + 16 + 0))))
    const [err] = s.link.take().map((f) => decode(f))
    expect([err.icmp6!.type, err.icmp6!.code]).toEqual([4, 3])
  })

  it('times out reassembly after 60 s with time exceeded code 1', () => {
    const s = ready()
    const h = new Uint8Array([17, 0, 0, 1, 0, 0, 0, 4])
    s.core.input(frame6(ipv6Packet(PEER, US, 44, concat(h, fill(1024)))))
    s.clock.advance(60_000)
    s.core.poll()
    // (Neighbour probes may go out too: the peer's entry aged meanwhile.)
    const errors = s.link.take().map((f) => decode(f)).filter((d) => d.icmp6!.type < 128)
    expect(errors.map((err) => [err.icmp6!.type, err.icmp6!.code])).toEqual([[3, 1]])
    expect(s.core.counters.ip6.ReasmTimeout).toBe(1)
  })

  it('fragments large UDP on output with a Fragment header', () => {
    const s = ready()
    const e = s.core.udp.bind({ family: 6, port: 4000 }, { message: () => {} })
    if (typeof e === 'string') throw new Error(e)
    expect(e.send(fill(3000), 0, 3000, ip('2001:db8::1'), 9)).toBe('sent')
    const frags = s.link.take().map((f) => decode(f))
    expect(frags).toHaveLength(3)
    expect(frags.map((f) => f.ip6!.fragment!.offset)).toEqual([0, 1448, 2896])
    expect(frags.every((f) => f.ip.length <= 1500)).toBe(true)
    expect(new Set(frags.map((f) => f.ip6!.fragment!.id)).size).toBe(1)
    const body = concat(...frags.map((f) => f.ip.subarray(48)))
    expect(body.subarray(8)).toEqual(fill(3000))
  })

  it('takes packet too big into the PMTU cache, never below 1280', () => {
    const s = ready()
    const offending = ipv6Packet(US, v6('2001:db8::1'), 6, fill(1440))
    s.core.input(frame6(ipv6Packet(PEER, US, 58, icmpv6Message(PEER, US, 2, 0, 1400, offending.subarray(0, 1232)))))
    expect(s.core.pathMtu(ip('2001:db8::2'), ip('2001:db8::1'))).toBe(1400)
    s.core.input(frame6(ipv6Packet(PEER, US, 58, icmpv6Message(PEER, US, 2, 0, 600, offending.subarray(0, 1232)))))
    expect(s.core.pathMtu(ip('2001:db8::2'), ip('2001:db8::1'))).toBe(1280)
    expect(s.core.counters.icmp6.InPktTooBigs).toBe(2)
  })

  it('never throws on malformed IPv6 and counts it', () => {
    const s = ready()
    const good = ipv6Packet(PEER, US, 17, udpDatagram({ version: 6, v6: PEER }, { version: 6, v6: US }, 1, 2, fill(4)))
    s.core.input(frame6(good.subarray(0, 30)))
    const lying = good.slice()
    lying[5] = 200 // payload length beyond the frame
    s.core.input(frame6(lying))
    expect(s.core.counters.ip6.InTruncatedPkts + s.core.counters.ip6.InHdrErrors).toBe(2)
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 120 }), (at, value, tail) => {
        const mutated = concat(good, tail)
        mutated[at] = value
        s.core.input(frame6(mutated))
      }),
      { numRuns: 300 },
    )
  })
})
