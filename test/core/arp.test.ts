import { describe, expect, it } from 'vitest'
import { ARP_OPERATION_REPLY, ARP_OPERATION_REQUEST } from '../../stacks/wire/arp.js'
import { formatIpv4Address } from '../../stacks/wire/address.js'
import type { UdpEndpoint } from '../../stacks/core/udp.js'
import { emitIpv4 } from '../../stacks/wire/ipv4.js'
import {
  BROADCAST,
  ETHERTYPE_ARP,
  OUR_MAC,
  PEER_MAC,
  arpPacket,
  arpRequestFrame,
  decode,
  ethernet,
  ip,
  makeStack,
  v4,
} from './harness.js'

const PEER = v4('198.51.100.1')
const US = v4('198.51.100.2')

function arpReplyFrame(senderIp = PEER, senderMac = PEER_MAC): Uint8Array {
  return ethernet(OUR_MAC, senderMac, ETHERTYPE_ARP, arpPacket({ operation: ARP_OPERATION_REPLY, senderMac, senderIp, targetMac: OUR_MAC, targetIp: US }))
}

function udpEndpoint(s: ReturnType<typeof makeStack>, errors: string[] = []): UdpEndpoint {
  const e = s.core.udp.bind({ family: 4, port: 5000 }, { message: () => {}, error: (code) => errors.push(code) })
  if (typeof e === 'string') throw new Error(e)
  return e
}

describe('ARP (RFC 826)', () => {
  it('announces each IPv4 address with a gratuitous ARP when it is added', () => {
    const s = makeStack({ linkLocal: false, addresses: ['198.51.100.2/24'] })
    const frames = s.link.take().map((f) => decode(f))
    expect(frames).toHaveLength(1)
    const g = frames[0]
    expect(g.eth!.dst).toEqual(BROADCAST)
    expect(g.arp!.operation).toBe(ARP_OPERATION_REQUEST)
    expect(g.arp!.senderIp).toBe(US)
    expect(g.arp!.targetIp).toBe(US)
    expect(g.arp!.senderMac).toEqual(OUR_MAC)
    expect(g.frame.length).toBe(60) // padded to the Ethernet minimum
    expect(s.core.counters.arp.OutGratuitous).toBe(1)
  })

  it('answers a request for our address and learns the requester (no ARP of its own needed)', () => {
    const s = makeStack({ linkLocal: false })
    s.link.take()
    s.core.input(arpRequestFrame(PEER_MAC, PEER, US))
    const [reply] = s.link.take().map((f) => decode(f))
    expect(reply.eth!.dst).toEqual(PEER_MAC)
    expect(reply.arp!.operation).toBe(ARP_OPERATION_REPLY)
    expect(reply.arp!.senderIp).toBe(US)
    expect(reply.arp!.senderMac).toEqual(OUR_MAC)
    expect(reply.arp!.targetIp).toBe(PEER)
    expect(reply.arp!.targetMac).toEqual(PEER_MAC)
    // "Am I the target? ... add the triplet": the requester is now known.
    const e = udpEndpoint(s)
    expect(e.send(new Uint8Array(4), 0, 4, ip('198.51.100.1'), 7)).toBe('sent')
    const [udp] = s.link.take().map((f) => decode(f))
    expect(udp.eth!.dst).toEqual(PEER_MAC)
    expect(s.core.counters.arp.InRequests).toBe(1)
    expect(s.core.counters.arp.OutReplies).toBe(1)
  })

  it('ignores requests for other addresses and counts claims on our address', () => {
    const s = makeStack({ linkLocal: false })
    s.link.take()
    s.core.input(arpRequestFrame(PEER_MAC, PEER, v4('198.51.100.77')))
    expect(s.link.take()).toHaveLength(0)
    // A request from someone else saying it has our address.
    s.core.input(arpRequestFrame(PEER_MAC, US, v4('198.51.100.1')))
    expect(s.core.counters.arp.AddressConflicts).toBe(1)
    expect(s.core.neighbors.get(ip('198.51.100.2'))).toBeNull()
  })

  it('queues packets while resolving and sends them, in order, once the reply comes', () => {
    const s = makeStack({ linkLocal: false })
    s.link.take()
    const e = udpEndpoint(s)
    for (let i = 0; i < 3; i++) expect(e.send(new Uint8Array([i]), 0, 1, ip('198.51.100.1'), 9)).toBe('queued')
    const [request, ...rest] = s.link.take().map((f) => decode(f))
    expect(rest).toHaveLength(0)
    expect(request.eth!.dst).toEqual(BROADCAST)
    expect(request.arp!.operation).toBe(ARP_OPERATION_REQUEST)
    expect(request.arp!.targetIp).toBe(PEER)
    expect(request.arp!.senderIp).toBe(US)
    s.core.input(arpReplyFrame())
    const sent = s.link.take().map((f) => decode(f))
    expect(sent.map((d) => d.udp!.dstPort)).toEqual([9, 9, 9])
    expect(sent.map((d) => d.ip[d.ip4!.payloadOffset + 8])).toEqual([0, 1, 2])
    expect(sent.every((d) => d.eth!.dst.every((b, i) => b === PEER_MAC[i]))).toBe(true)
    expect(s.core.neighbors.get(ip('198.51.100.1'))!.state).toBe('reachable')
  })

  it('queues every fragment of a large datagram while resolving', () => {
    const s = makeStack({ linkLocal: false })
    s.link.take()
    const e = udpEndpoint(s)
    expect(e.send(new Uint8Array(20_000), 0, 20_000, ip('198.51.100.1'), 9)).toBe('queued')
    expect(s.link.take()).toHaveLength(1) // the ARP request
    s.core.input(arpReplyFrame())
    const frags = s.link.take().map((f) => decode(f))
    expect(frags).toHaveLength(14)
    expect(frags[0].ip4!.fragmentOffset).toBe(0)
    expect(frags[13].ip4!.moreFragments).toBe(false)
    expect(s.core.neighbors.pendingByteCount).toBe(0)
  })

  it('resolves the gateway, not the destination, for off-link traffic', () => {
    const s = makeStack({ linkLocal: false, routes: [{ to: 'default', via: '198.51.100.1' }] })
    s.link.take()
    const e = udpEndpoint(s)
    expect(e.send(new Uint8Array(1), 0, 1, ip('203.0.113.9'), 53)).toBe('queued')
    const [request] = s.link.take().map((f) => decode(f))
    expect(formatIpv4Address(request.arp!.targetIp)).toBe('198.51.100.1')
    s.core.input(arpReplyFrame())
    const [udp] = s.link.take().map((f) => decode(f))
    expect(formatIpv4Address(udp.ip4!.dst)).toBe('203.0.113.9')
    expect(udp.eth!.dst).toEqual(PEER_MAC)
  })

  it('retries every second, gives up after 3 requests and reports host unreachable to the sender', () => {
    const s = makeStack({ linkLocal: false, addresses: ['198.51.100.2/24'] })
    s.link.take()
    const errors: string[] = []
    const e = udpEndpoint(s, errors)
    e.connect(ip('198.51.100.1'), 9)
    expect(e.send(new Uint8Array(1))).toBe('queued')
    expect(s.link.take()).toHaveLength(1)
    expect(s.core.nextTimeout()).toBe(s.clock.t + 1000)
    for (let i = 0; i < 2; i++) {
      s.clock.advance(1000)
      s.core.poll()
      const [retry] = s.link.take().map((f) => decode(f))
      expect(retry.arp!.targetIp).toBe(PEER)
    }
    s.clock.advance(1000)
    s.core.poll()
    expect(s.link.take()).toHaveLength(0)
    expect(errors).toEqual(['EHOSTUNREACH'])
    expect(s.core.neighbors.counters.resolutionFailures).toBe(1)
    expect(s.core.neighbors.size).toBe(0)
  })

  it('expires entries: REACHABLE → STALE, then a unicast probe before trusting it again', () => {
    const s = makeStack({ linkLocal: false })
    s.link.take()
    const e = udpEndpoint(s)
    e.send(new Uint8Array(1), 0, 1, ip('198.51.100.1'), 9)
    s.core.input(arpReplyFrame())
    s.link.take()
    // ReachableTime is randomised in [15 s, 45 s): after 45 s the entry is STALE.
    s.clock.advance(45_000)
    s.core.poll()
    expect(s.core.neighbors.get(ip('198.51.100.1'))!.state).toBe('stale')
    // A STALE entry is still used (RFC 4861 §7.3.3) but moves to DELAY ...
    expect(e.send(new Uint8Array(1), 0, 1, ip('198.51.100.1'), 9)).toBe('sent')
    s.link.take()
    s.clock.advance(5000)
    s.core.poll()
    // ... and then PROBE: a unicast request to the cached MAC.
    const [probe] = s.link.take().map((f) => decode(f))
    expect(probe.eth!.dst).toEqual(PEER_MAC)
    expect(probe.arp!.targetIp).toBe(PEER)
    s.core.input(arpReplyFrame())
    expect(s.core.neighbors.get(ip('198.51.100.1'))!.state).toBe('reachable')
    // An upper-layer confirmation (TCP progress) also moves a STALE entry back to REACHABLE, without a probe.
    s.clock.advance(45_000)
    s.core.poll()
    expect(s.core.neighbors.get(ip('198.51.100.1'))!.state).toBe('stale')
    s.core.confirmReachable(ip('198.51.100.2'), ip('198.51.100.1'))
    expect(s.core.neighbors.get(ip('198.51.100.1'))!.state).toBe('reachable')
    expect(s.link.take()).toHaveLength(0)
    // A confirmation while REACHABLE restarts ReachableTime (Linux neigh_confirm):
    // confirmed every 10 s, a busy path never goes STALE.
    for (let i = 0; i < 10; i++) {
      s.clock.advance(10_000)
      s.core.poll()
      expect(s.core.neighbors.get(ip('198.51.100.1'))!.state).toBe('reachable')
      s.core.confirmReachable(ip('198.51.100.2'), ip('198.51.100.1'))
    }
  })

  it('counts malformed ARP and never throws on garbage', () => {
    const s = makeStack({ linkLocal: false })
    s.link.take()
    const bad = arpRequestFrame(PEER_MAC, PEER, US)
    bad[14 + 4] = 8 // hardware length 8: not Ethernet/IPv4
    s.core.input(bad)
    s.core.input(bad.subarray(0, 20))
    expect(s.core.counters.arp.InErrors).toBe(2)
    expect(s.link.take()).toHaveLength(0)
  })

  it('resolves header-template paths: pending until ARP answers, then a link header; transmitFrame sends what the transport wrote', () => {
    const s = makeStack({ linkLocal: false, addresses: ['198.51.100.2/24'] })
    s.link.take()
    const local = ip('198.51.100.2')
    const remote = ip('198.51.100.1')
    expect(s.core.resolvePath(local, remote)).toBe('pending')
    const [request] = s.link.take().map((f) => decode(f))
    expect(request.arp!.targetIp).toBe(PEER)
    expect(s.core.resolvePath(local, ip('203.0.113.1'))).toBe('unreachable')
    s.core.input(arpReplyFrame())
    const path = s.core.resolvePath(local, remote)
    if (typeof path === 'string') throw new Error(path)
    expect(path.linkHeader).toEqual(new Uint8Array([...PEER_MAC, ...OUR_MAC, 0x08, 0x00]))
    expect(path.mtu).toBe(1500)
    expect(path.generation).toBe(s.core.pathGeneration())
    // A template user writes link + IP + payload in one go.
    const ok = s.core.transmitFrame((bytes) => {
      bytes.set(path.linkHeader!, 0)
      emitIpv4(
        { src: US, dst: PEER, protocol: 253, ttl: 64, id: s.core.nextIpv4Id(), dontFragment: true, moreFragments: false, fragmentOffset: 0, dscp: 0, ecn: 0, payloadLength: 4 },
        bytes,
        14,
      )
      bytes.set([1, 2, 3, 4], 34)
      return 38
    })
    expect(ok).toBe(true)
    const [frame] = s.link.take().map((f) => decode(f))
    expect(frame.ip4!.protocol).toBe(253)
    expect(frame.eth!.dst).toEqual(PEER_MAC)
    // The neighbour changes its MAC: the generation moves, so templates rebuild.
    s.core.input(arpReplyFrame(PEER, new Uint8Array([2, 0, 0, 0, 0, 0x99])))
    expect(s.core.pathGeneration()).not.toBe(path.generation)
    const again = s.core.resolvePath(local, remote)
    if (typeof again === 'string') throw new Error(again)
    expect(again.linkHeader!.subarray(0, 6)).toEqual(new Uint8Array([2, 0, 0, 0, 0, 0x99]))
    // A writer that cancels gives its buffer back.
    const before = s.link.poolFree
    expect(s.core.transmitFrame(() => 0)).toBe(false)
    expect(s.link.poolFree).toBe(before)
  })
})
