// Every recorded frame, parsed by the wire layer, must agree with tshark's
// dissection of the same bytes field by field (fixtures: test/fixtures/wire,
// recorded by record.sh from real kernel traffic in test namespaces, plus
// frames built by build-synthetic.ts where the kernel could not be made to
// send them).
import { describe, expect, it } from 'vitest'
import { KERNEL_FRAMES } from '../fixtures/wire/kernel-frames.js'
import { SYNTHETIC_FRAMES } from '../fixtures/wire/synthetic-frames.js'
import type { FixtureFrame } from '../fixtures/wire/types.js'
import {
  formatIpv4Address,
  formatIpv6Address,
  formatMac,
  IPV6_EXT_DESTINATION_OPTIONS,
  IPV6_EXT_FRAGMENT,
  IPV6_EXT_HOP_BY_HOP,
  IPV6_EXT_ROUTING,
  TCP_OPTION_SACK_PERMITTED,
  parseIpv6Address,
} from '../../stacks/wire/index.js'
import { dissectFrame, fromHex, type IpLayers } from './dissect.js'

type Fields = Record<string, string[]>

const num = (s: string): number => (s.startsWith('0x') ? parseInt(s, 16) : Number(s))
const bool = (s: string): boolean => s === '1' || s === 'True' || s === 'true'
/** tshark checksum.status: 0 bad, 1 good, 2 unverified, 3 not present. */
const checksumStatus = (s: string | undefined): boolean | null => (s === '1' ? true : s === '0' ? false : null)
const ipv6Text = (s: string): string => formatIpv6Address(parseIpv6Address(s)!)

/** Extension headers in order, from tshark's protocol chain ("eth:ethertype:ipv6:ipv6.hopopts:icmpv6"). */
function tsharkExtensions(protocols: string): number[] {
  const names: Record<string, number> = {
    'ipv6.hopopts': IPV6_EXT_HOP_BY_HOP,
    'ipv6.routing': IPV6_EXT_ROUTING,
    'ipv6.fraghdr': IPV6_EXT_FRAGMENT,
    'ipv6.dstopts': IPV6_EXT_DESTINATION_OPTIONS,
  }
  const chain = protocols.split(':')
  const start = chain.indexOf('ipv6')
  const out: number[] = []
  for (let i = start + 1; i < chain.length && names[chain[i]] !== undefined; i++) out.push(names[chain[i]])
  return out
}

/** Counts how many fields of each frame were compared, so a silent no-op cannot pass. */
let compared = 0
function same(actual: unknown, expected: unknown, what: string): void {
  expect(actual, what).toEqual(expected)
  compared++
}

function checkIp(layers: IpLayers, f: Fields, i: number, protocols: string): void {
  if (layers.ipv4 !== undefined) {
    const ip = layers.ipv4
    same(formatIpv4Address(ip.src), f['ip.src'][i], 'ip.src')
    same(formatIpv4Address(ip.dst), f['ip.dst'][i], 'ip.dst')
    same(ip.headerLength, num(f['ip.hdr_len'][i]), 'ip.hdr_len')
    same(ip.totalLength, num(f['ip.len'][i]), 'ip.len')
    same(ip.id, num(f['ip.id'][i]), 'ip.id')
    same(ip.ttl, num(f['ip.ttl'][i]), 'ip.ttl')
    same(ip.protocol, num(f['ip.proto'][i]), 'ip.proto')
    same(ip.dscp, num(f['ip.dsfield.dscp'][i]), 'ip.dsfield.dscp')
    same(ip.ecn, num(f['ip.dsfield.ecn'][i]), 'ip.dsfield.ecn')
    same(ip.dontFragment, bool(f['ip.flags.df'][i]), 'ip.flags.df')
    same(ip.moreFragments, bool(f['ip.flags.mf'][i]), 'ip.flags.mf')
    same(ip.fragmentOffset, num(f['ip.frag_offset'][i]) * 8, 'ip.frag_offset')
    if (i === 0) same(ip.checksumValid, checksumStatus(f['ip.checksum.status']?.[i]), 'ip.checksum.status')
  }
  if (layers.ipv6 !== undefined) {
    const ip = layers.ipv6
    same(formatIpv6Address(ip.src), ipv6Text(f['ipv6.src'][i]), 'ipv6.src')
    same(formatIpv6Address(ip.dst), ipv6Text(f['ipv6.dst'][i]), 'ipv6.dst')
    same(ip.payloadLength, num(f['ipv6.plen'][i]), 'ipv6.plen')
    same(ip.nextHeader, num(f['ipv6.nxt'][i]), 'ipv6.nxt')
    same(ip.hopLimit, num(f['ipv6.hlim'][i]), 'ipv6.hlim')
    same(ip.flowLabel, num(f['ipv6.flow'][i]), 'ipv6.flow')
    same(ip.trafficClass, num(f['ipv6.tclass'][i]), 'ipv6.tclass')
    if (i === 0) {
      same(ip.extensions, tsharkExtensions(protocols), 'ipv6 extension chain')
      if (f['ipv6.fraghdr.offset'] !== undefined) {
        same(ip.fragment?.offset, num(f['ipv6.fraghdr.offset'][0]) * 8, 'ipv6.fraghdr.offset')
        same(ip.fragment?.moreFragments, bool(f['ipv6.fraghdr.more'][0]), 'ipv6.fraghdr.more')
        same(ip.fragment?.id, num(f['ipv6.fraghdr.ident'][0]), 'ipv6.fraghdr.ident')
        same(ip.upperProtocol, num(f['ipv6.fraghdr.nxt'][0]), 'ipv6.fraghdr.nxt')
      } else {
        same(ip.fragment, undefined, 'no ipv6 fragment header')
      }
    }
  }
}

/** One value per occurrence, outer packet first, then the packet quoted by an ICMP error. */
function occurrences<T>(d: IpLayers, pick: (l: IpLayers) => T | undefined): T[] {
  const out: T[] = []
  for (const layers of [d, d.inner]) {
    if (layers === undefined) continue
    const v = pick(layers)
    if (v !== undefined) out.push(v)
  }
  return out
}

function sameList(d: IpLayers, f: Fields, field: string, pick: (l: IpLayers) => number | undefined): void {
  same(occurrences(d, pick), (f[field] ?? []).map(num), field)
}

function checkTransport(d: IpLayers, f: Fields): void {
  sameList(d, f, 'udp.srcport', (l) => l.udp?.srcPort)
  sameList(d, f, 'udp.dstport', (l) => l.udp?.dstPort)
  sameList(d, f, 'udp.length', (l) => l.udp?.length)
  if (d.udp !== undefined) same(d.udp.checksumValid, checksumStatus(f['udp.checksum.status']?.[0]), 'udp.checksum.status')
  sameList(d, f, 'tcp.srcport', (l) => l.tcp?.srcPort)
  sameList(d, f, 'tcp.dstport', (l) => l.tcp?.dstPort)
  sameList(d, f, 'tcp.seq_raw', (l) => l.tcp?.seq)
  if (d.tcp !== undefined) {
    const tcp = d.tcp
    same(tcp.ack, num(f['tcp.ack_raw'][0]), 'tcp.ack_raw')
    same(tcp.flags, num(f['tcp.flags'][0]) & 0xff, 'tcp.flags')
    same(tcp.window, num(f['tcp.window_size_value'][0]), 'tcp.window_size_value')
    same(tcp.headerLength, num(f['tcp.hdr_len'][0]), 'tcp.hdr_len')
    same(tcp.payloadLength, num(f['tcp.len'][0]), 'tcp.len')
    same(tcp.urgentPointer, num(f['tcp.urgent_pointer'][0]), 'tcp.urgent_pointer')
    same(tcp.checksumValid, checksumStatus(f['tcp.checksum.status']?.[0]), 'tcp.checksum.status')
    const o = tcp.options
    same(o.mss, f['tcp.options.mss_val'] && num(f['tcp.options.mss_val'][0]), 'tcp.options.mss_val')
    same(o.windowScale, f['tcp.options.wscale.shift'] && num(f['tcp.options.wscale.shift'][0]), 'tcp.options.wscale.shift')
    same(o.sackPermitted, (f['tcp.option_kind'] ?? []).includes(String(TCP_OPTION_SACK_PERMITTED)) || undefined, 'sack permitted')
    const tsval = f['tcp.options.timestamp.tsval']
    same(o.timestamp, tsval && [num(tsval[0]), num(f['tcp.options.timestamp.tsecr'][0])], 'tcp.options.timestamp')
    const le = f['tcp.options.sack_le']
    same(o.sack, le && le.map((l, k) => [num(l), num(f['tcp.options.sack_re'][k])]), 'tcp.options.sack')
  }
  sameList(d, f, 'icmp.type', (l) => l.icmpv4?.type)
  sameList(d, f, 'icmp.code', (l) => l.icmpv4?.code)
  sameList(d, f, 'icmp.ident', (l) => l.icmpv4?.identifier)
  sameList(d, f, 'icmp.seq', (l) => l.icmpv4?.sequence)
  sameList(d, f, 'icmp.mtu', (l) => l.icmpv4?.nextHopMtu)
  if (d.icmpv4 !== undefined) same(d.icmpv4.checksumValid, checksumStatus(f['icmp.checksum.status']?.[0]), 'icmp.checksum.status')
  sameList(d, f, 'icmpv6.type', (l) => l.icmpv6?.type)
  sameList(d, f, 'icmpv6.code', (l) => l.icmpv6?.code)
  sameList(d, f, 'icmpv6.echo.identifier', (l) => l.icmpv6?.identifier)
  sameList(d, f, 'icmpv6.echo.sequence_number', (l) => l.icmpv6?.sequence)
  sameList(d, f, 'icmpv6.mtu', (l) => l.icmpv6?.mtu)
  if (d.icmpv6 !== undefined) same(d.icmpv6.checksumValid, checksumStatus(f['icmpv6.checksum.status']?.[0]), 'icmpv6.checksum.status')
}

function checkFrame(frame: FixtureFrame): void {
  const f = frame.tshark
  const protocols = f['frame.protocols'][0]
  const bytes = fromHex(frame.hex)
  const d = dissectFrame(bytes)
  expect(d.error, `frame ${frame.frame} (${protocols}) parses cleanly`).toBeUndefined()
  const eth = d.ethernet!
  same(formatMac(eth.dst), f['eth.dst'][0], 'eth.dst')
  same(formatMac(eth.src), f['eth.src'][0], 'eth.src')
  same(eth.ethertype, num((f['vlan.etype'] ?? f['eth.type'])[0]), 'ethertype')
  if (f['vlan.id'] !== undefined) {
    same(eth.vlan, { id: num(f['vlan.id'][0]), pcp: num(f['vlan.priority'][0]), dei: bool(f['vlan.dei'][0]) }, 'vlan')
  } else {
    same(eth.vlan, undefined, 'untagged')
  }
  if (f['arp.opcode'] !== undefined) {
    const arp = d.arp!
    same(arp.operation, num(f['arp.opcode'][0]), 'arp.opcode')
    same(formatMac(arp.senderMac), f['arp.src.hw_mac'][0], 'arp.src.hw_mac')
    same(formatIpv4Address(arp.senderIp), f['arp.src.proto_ipv4'][0], 'arp.src.proto_ipv4')
    same(formatMac(arp.targetMac), f['arp.dst.hw_mac'][0], 'arp.dst.hw_mac')
    same(formatIpv4Address(arp.targetIp), f['arp.dst.proto_ipv4'][0], 'arp.dst.proto_ipv4')
    return
  }
  checkIp(d, f, 0, protocols)
  checkTransport(d, f)
  if (d.icmpv6 !== undefined) {
    const icmp = d.icmpv6
    const target = f['icmpv6.nd.ns.target_address'] ?? f['icmpv6.nd.na.target_address'] ?? f['icmpv6.nd.rd.target_address']
    if (target !== undefined) same(formatIpv6Address(icmp.targetAddress!), ipv6Text(target[0]), 'nd target address')
    if (f['icmpv6.nd.na.flag.r'] !== undefined) {
      same(icmp.neighborAdvertisement, {
        router: bool(f['icmpv6.nd.na.flag.r'][0]),
        solicited: bool(f['icmpv6.nd.na.flag.s'][0]),
        override: bool(f['icmpv6.nd.na.flag.o'][0]),
      }, 'na flags')
    }
    const nd = icmp.ndpOptions
    const src = f['icmpv6.opt.src_linkaddr']
    if (src !== undefined) same(formatMac(nd!.sourceLinkLayerAddress!), src[0], 'icmpv6.opt.src_linkaddr')
    const tgt = f['icmpv6.opt.target_linkaddr']
    if (tgt !== undefined) same(formatMac(nd!.targetLinkLayerAddress!), tgt[0], 'icmpv6.opt.target_linkaddr')
    if (f['icmpv6.opt.mtu'] !== undefined) same(nd!.mtu, num(f['icmpv6.opt.mtu'][0]), 'icmpv6.opt.mtu')
    if (f['icmpv6.opt.nonce'] !== undefined) same(Buffer.from(nd!.nonce!).toString('hex'), f['icmpv6.opt.nonce'][0], 'icmpv6.opt.nonce')
    if (f['icmpv6.opt.type'] !== undefined && nd !== undefined) {
      const types = f['icmpv6.opt.type'].map(num)
      same(nd.prefixInformation?.length, types.filter((t) => t === 3).length || undefined, 'prefix information count')
      same(nd.redirectedHeader !== undefined, types.includes(4), 'redirected header present')
    }
  }
  // The packet quoted inside an ICMP error: tshark lists it as the second occurrence.
  if (d.inner !== undefined) {
    expect(d.inner.error, `frame ${frame.frame}: quoted packet`).toBeUndefined()
    checkIp(d.inner, f, 1, protocols)
  }
}

describe('recorded kernel frames agree with tshark', () => {
  it('has frames of every kind the recorder provokes', () => {
    const all = KERNEL_FRAMES.map((f) => f.tshark['frame.protocols'][0]).join(' ')
    for (const p of ['arp', 'ip:icmp', 'ipv6:icmpv6', 'ipv6.hopopts', 'ipv6.fraghdr', 'ip:udp', 'ipv6:udp', 'ip:tcp', 'ipv6:tcp']) {
      expect(all, p).toContain(p)
    }
  })
  for (const frame of KERNEL_FRAMES) {
    it(`frame ${frame.frame}: ${frame.tshark['frame.protocols'][0]}`, () => {
      const before = compared
      checkFrame(frame)
      expect(compared - before).toBeGreaterThan(5)
    })
  }
})

describe('synthetic frames (VLAN, SACK, RA/RS/redirect, extension headers, IPv4 options) agree with tshark', () => {
  for (const frame of SYNTHETIC_FRAMES) {
    it(`frame ${frame.frame}: ${frame.tshark['frame.protocols'][0]}`, () => {
      const before = compared
      checkFrame(frame)
      expect(compared - before).toBeGreaterThan(5)
    })
  }
})
