// The zero-allocation views read the same values the checked parsers do, and
// the TcpView setters plus RFC 1624 updates keep a segment's checksum valid
// (the header-template path: patch fields, never rebuild).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { KERNEL_FRAMES } from '../fixtures/wire/kernel-frames.js'
import { SYNTHETIC_FRAMES } from '../fixtures/wire/synthetic-frames.js'
import {
  ArpView,
  checksumUpdate16,
  checksumUpdate32,
  emitTcp,
  EthernetView,
  formatIpv6Address,
  IcmpView,
  Ipv4View,
  Ipv6View,
  parseTcp,
  TcpView,
  tcpHeaderLength,
  UdpView,
  WireError,
} from '../../stacks/wire/index.js'
import { pseudoHeader, tcpRepr, u16, u32 } from './arbitraries.js'
import { dissectFrame, fromHex } from './dissect.js'

describe('views agree with parsed Reprs on every recorded frame', () => {
  const eth = new EthernetView()
  const arp = new ArpView()
  const v4 = new Ipv4View()
  const v6 = new Ipv6View()
  const tcp = new TcpView()
  const udp = new UdpView()
  const icmp = new IcmpView()
  for (const frame of [...KERNEL_FRAMES, ...SYNTHETIC_FRAMES]) {
    it(`${frame.tshark['frame.protocols'][0]} (${frame.frame})`, () => {
      const bytes = fromHex(frame.hex)
      const d = dissectFrame(bytes)
      expect(eth.reset(bytes)).toBe(true)
      expect(eth.ethertype).toBe(d.ethernet!.ethertype)
      expect(eth.payloadOffset).toBe(d.ethernet!.payloadOffset)
      expect(eth.vlanId).toBe(d.ethernet!.vlan?.id ?? -1)
      if (d.arp !== undefined) {
        expect(arp.reset(bytes, eth.payloadOffset, eth.payloadLength)).toBe(true)
        expect([arp.operation, arp.senderIp, arp.targetIp]).toEqual([d.arp.operation, d.arp.senderIp, d.arp.targetIp])
      }
      let upperOffset = -1
      let upperLength = 0
      if (d.ipv4 !== undefined) {
        expect(v4.reset(bytes, eth.payloadOffset, eth.payloadLength)).toBe(true)
        const r = d.ipv4
        expect([v4.src, v4.dst, v4.protocol, v4.ttl, v4.id, v4.fragmentOffset, v4.moreFragments, v4.dontFragment, v4.payloadOffset, v4.payloadLength]).toEqual([
          r.src, r.dst, r.protocol, r.ttl, r.id, r.fragmentOffset, r.moreFragments, r.dontFragment, r.payloadOffset, r.payloadLength,
        ])
        expect(v4.headerChecksumValid()).toBe(true)
        upperOffset = v4.payloadOffset
        upperLength = v4.payloadLength
      }
      if (d.ipv6 !== undefined) {
        expect(v6.reset(bytes, eth.payloadOffset, eth.payloadLength)).toBe(true)
        const r = d.ipv6
        expect([v6.upperProtocol, v6.upperOffset, v6.upperLength, v6.hopLimit, v6.flowLabel, v6.payloadLength]).toEqual([
          r.upperProtocol, r.upperOffset, r.upperLength, r.hopLimit, r.flowLabel, r.payloadLength,
        ])
        expect(v6.fragmentOffset).toBe(r.fragment?.offset ?? -1)
        expect(v6.isFragment).toBe(r.fragment !== undefined && (r.fragment.offset !== 0 || r.fragment.moreFragments))
        const src = new Uint8Array(16)
        v6.copySrc(src)
        expect(formatIpv6Address(src)).toBe(formatIpv6Address(r.src))
        upperOffset = v6.upperOffset
        upperLength = v6.upperLength
      }
      if (d.tcp !== undefined) {
        expect(tcp.reset(bytes, upperOffset, upperLength)).toBe(true)
        expect([tcp.srcPort, tcp.dstPort, tcp.seq, tcp.ack, tcp.flags, tcp.window, tcp.headerLength, tcp.urgentPointer]).toEqual([
          d.tcp.srcPort, d.tcp.dstPort, d.tcp.seq, d.tcp.ack, d.tcp.flags, d.tcp.window, d.tcp.headerLength, d.tcp.urgentPointer,
        ])
      }
      if (d.udp !== undefined) {
        expect(udp.reset(bytes, upperOffset, upperLength)).toBe(true)
        expect([udp.srcPort, udp.dstPort, udp.length]).toEqual([d.udp.srcPort, d.udp.dstPort, d.udp.length])
      }
      const message = d.icmpv4 ?? d.icmpv6
      if (message !== undefined) {
        expect(icmp.reset(bytes, upperOffset, upperLength)).toBe(true)
        expect([icmp.type, icmp.code]).toEqual([message.type, message.code])
        if (message.identifier !== undefined) expect([icmp.identifier, icmp.sequence]).toEqual([message.identifier, message.sequence])
      }
    })
  }
  it('reset refuses what does not fit', () => {
    const bytes = new Uint8Array(30)
    expect(eth.reset(bytes, 0, 13)).toBe(false)
    expect(eth.reset(bytes, 20, 14)).toBe(false)
    expect(v4.reset(bytes, 0, 20)).toBe(false) // version 0
    bytes[0] = 0x4f // IHL 15 = 60 bytes > 30
    expect(v4.reset(bytes, 0, 30)).toBe(false)
    bytes[0] = 0x60
    expect(v6.reset(bytes, 0, 30)).toBe(false)
    expect(tcp.reset(bytes, 0, 19)).toBe(false)
    expect(udp.reset(bytes, 25, 8)).toBe(false)
    expect(icmp.reset(bytes, -1, 8)).toBe(false)
  })
})

describe('TcpView patching with incremental checksums', () => {
  it('patching seq, ack and window with RFC 1624 updates keeps the checksum valid', () => {
    fc.assert(
      fc.property(tcpRepr, pseudoHeader, u32, u32, u16, (repr, ip, seq, ack, window) => {
        const header = tcpHeaderLength(repr)
        const length = header + repr.payloadLength
        const bytes = new Uint8Array(length).fill(0x5a)
        emitTcp(repr, bytes, 0, ip)
        const view = new TcpView()
        expect(view.reset(bytes, 0, length)).toBe(true)
        let checksum = view.checksum
        checksum = checksumUpdate32(checksum, view.seq, seq)
        view.seq = seq
        checksum = checksumUpdate32(checksum, view.ack, ack)
        view.ack = ack
        checksum = checksumUpdate16(checksum, view.window, window)
        view.window = window
        view.checksum = checksum
        const parsed = parseTcp(bytes, 0, length, ip)
        if (parsed instanceof WireError) throw new Error(parsed.toString())
        expect([parsed.seq, parsed.ack, parsed.window, parsed.checksumValid]).toEqual([seq, ack, window, true])
      }),
      { numRuns: 500 },
    )
  })
})
