// The switch without workers: channels attached by the test on both sides,
// a manual pass() per step, packets built byte by byte.
import { describe, expect, it } from 'vitest'
import { attachChannel, createChannel, DESC_VNET_HDR, type ChannelEnd } from '../../nexus/channel/index.js'
import { checksumFold, internetChecksum, pseudoHeaderSumIpv4 } from '../../stacks/wire/checksum.js'
import { parseConfigJson } from '../../runtime/config/index.js'
import { classifierFromConfig } from '../../classifier/index.js'
import { Switch, SwitchDrop, TCP_FLAGS, tcpFlagsOf } from '../../runtime/switch.js'
import { buildPacket, type PacketSpec } from '../classifier/packets.js'

const config = parseConfigJson({
  ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true }, defaultAction: { kernel: {} } }],
  instances: [
    { name: 'web', port: 'p0', addresses: ['198.51.100.2/24', '2001:db8::2/64'] },
    { name: 'client', port: 'p0', addresses: ['198.51.100.3/24'] },
  ],
  rules: [
    { name: 'web-http', priority: 10, match: { protocol: 'TCP', localPrefix: '198.51.100.2/32', localPorts: { from: 80, to: 80 } }, action: { instance: 'web' } },
    { name: 'blocked', priority: 20, match: { localPrefix: '203.0.113.0/24' }, action: { drop: {} } },
  ],
}).config

function tcp(spec: Omit<PacketSpec, 'protocol'>, flags: number): Uint8Array {
  const packet = buildPacket({ ...spec, protocol: 6, payload: 0 })
  packet[(spec.ipVersion === 4 ? 20 : 40) + 13] = flags
  return packet
}

function send(end: ChannelEnd, packet: Uint8Array): void {
  const index = end.alloc()
  expect(index).toBeGreaterThanOrEqual(0)
  end.buffer(index).set(packet)
  expect(end.send(index, packet.length)).toBe(true)
  end.flush()
}

function drain(end: ChannelEnd): Uint8Array[] {
  const out: Uint8Array[] = []
  end.receive(1024, (index, length) => {
    out.push(end.buffer(index).slice(0, length))
    end.release(index)
  })
  return out
}

function setup(clock: { t: number } = { t: 0 }, instanceMaxFlows?: number[]) {
  const classifier = classifierFromConfig(config, { now: () => clock.t, ...(instanceMaxFlows !== undefined ? { instanceMaxFlows } : {}) })
  const portSab = createChannel({ bufferCount: 64, ringCapacity: 64 })
  const wire = attachChannel(portSab, 'a') // the device side: what the wire delivers and receives
  const sw = new Switch(classifier, [{ name: 'p0', end: attachChannel(portSab, 'b'), link: 'ip', vnetHdr: false }], [
    { name: 'web', port: 0, addresses: ['198.51.100.2/24', '2001:db8::2/64'] },
    { name: 'client', port: 0, addresses: ['198.51.100.3/24'] },
  ])
  const instances = [0, 1].map((i) => {
    const sab = createChannel({ bufferCount: 64, ringCapacity: 64 })
    sw.attachInstance(i, sab)
    return attachChannel(sab, 'b')
  })
  return { classifier, sw, wire, web: instances[0], client: instances[1] }
}

describe('Switch', () => {
  it('delivers a packet from the port to the instance a rule names, copied into its own pool', () => {
    const { sw, wire, web, client, classifier } = setup()
    const syn = tcp({ ipVersion: 4, src: '192.0.2.9', dst: '198.51.100.2', srcPort: 40000, dstPort: 80 }, TCP_FLAGS.SYN)
    send(wire, syn)
    expect(sw.pass()).toBe(1)
    const got = drain(web)
    expect(got).toHaveLength(1)
    expect([...got[0]]).toEqual([...syn])
    expect(got[0].buffer).not.toBe(wire.sab) // a copy, not the port's buffer
    expect(drain(client)).toHaveLength(0)
    expect(sw.instanceTraffic[0].rxPackets).toBe(1)
    expect(sw.portTraffic[0].rxPackets).toBe(1)
    expect(classifier.reasonCounts[1]).toBe(1) // decided by a rule
  })

  it('completes a partial checksum left by the kernel (vnet header) before delivery, and drops a GSO frame', () => {
    const { sw, wire, web } = setup()
    const syn = tcp({ ipVersion: 4, src: '192.0.2.9', dst: '198.51.100.2', srcPort: 40000, dstPort: 80 }, TCP_FLAGS.SYN)
    const segmentLength = syn.length - 20
    const pseudo = pseudoHeaderSumIpv4(0xc0000209, 0xc6336402, 6, segmentLength)
    syn[36] = 0
    syn[37] = 0
    const expected = internetChecksum(syn, 20, segmentLength, pseudo)
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum; csum_start 20, csum_offset 16.
    const partial = (~checksumFold(pseudo)) & 0xffff
    syn[36] = partial >>> 8
    syn[37] = partial & 0xff
    const header = Uint8Array.of(1, 0, 0, 0, 0, 0, 20, 0, 16, 0, 0, 0)
    const sendWithHeader = (hdr: Uint8Array): void => {
      const index = wire.alloc()
      wire.buffer(index).set(hdr)
      wire.buffer(index).set(syn, hdr.length)
      expect(wire.send(index, hdr.length + syn.length, DESC_VNET_HDR)).toBe(true)
      wire.flush()
    }
    sendWithHeader(header)
    sw.pass()
    const got = drain(web)
    expect(got).toHaveLength(1)
    expect(got[0].length).toBe(syn.length) // the vnet header stays behind
    expect((got[0][36] << 8) | got[0][37]).toBe(expected)
    expect(internetChecksum(got[0], 20, segmentLength, pseudo)).toBe(0) // verifies
    // A GSO super-frame (gso_type TCPV4) is not split for an instance: counted, dropped.
    const gso = header.slice()
    gso[1] = 1
    sendWithHeader(gso)
    sw.pass()
    expect(drain(web)).toHaveLength(0)
    expect(sw.drops[SwitchDrop.Offload]).toBe(1)
  })

  it('refuses a spoofed source address and counts it', () => {
    const { sw, wire, client } = setup()
    send(client, tcp({ ipVersion: 4, src: '198.51.100.2', dst: '192.0.2.9', srcPort: 80, dstPort: 40000 }, TCP_FLAGS.SYN | TCP_FLAGS.ACK))
    sw.pass()
    expect(drain(wire)).toHaveLength(0)
    expect(sw.drops[SwitchDrop.Spoofed]).toBe(1)
    expect(sw.learned[1].size).toBe(0)
  })

  it('learns a connect from the SYN, switches instance to instance, and routes the answer back by the flow', () => {
    const { sw, wire, web, client, classifier } = setup()
    send(client, tcp({ ipVersion: 4, src: '198.51.100.3', dst: '198.51.100.2', srcPort: 50000, dstPort: 80 }, TCP_FLAGS.SYN))
    sw.pass()
    expect(sw.learned[1].size).toBe(1)
    expect(drain(web)).toHaveLength(1) // hairpin through the web-http rule
    expect(drain(wire)).toHaveLength(0)
    send(web, tcp({ ipVersion: 4, src: '198.51.100.2', dst: '198.51.100.3', srcPort: 80, dstPort: 50000 }, TCP_FLAGS.SYN | TCP_FLAGS.ACK))
    sw.pass()
    expect(drain(client)).toHaveLength(1)
    expect(sw.drops[SwitchDrop.Spoofed]).toBe(0)
    const owners = classifier.listFlows().map((f) => `${f.key.localAddress}:${f.key.localPort} ${f.owner} ${f.state}`).sort()
    expect(owners).toEqual(['198.51.100.2:80 0 established', '198.51.100.3:50000 1 established'])
    // The worker reports no open connection: after the grace period the flows go.
    expect(sw.reconcile(1, [], -1)).toBe(1)
    expect(sw.reconcile(0, [], -1)).toBe(1)
    expect(classifier.flowCount).toBe(0)
  })

  it("counts an instance's answers to a wire peer as leaving on the wire, not as the port's default action", () => {
    const { sw, wire, web, classifier } = setup()
    send(wire, tcp({ ipVersion: 4, src: '192.0.2.9', dst: '198.51.100.2', srcPort: 40000, dstPort: 80 }, TCP_FLAGS.SYN))
    sw.pass()
    expect(drain(web)).toHaveLength(1)
    for (let i = 0; i < 3; i++) send(web, tcp({ ipVersion: 4, src: '198.51.100.2', dst: '192.0.2.9', srcPort: 80, dstPort: 40000 }, TCP_FLAGS.ACK))
    sw.pass()
    expect(drain(wire)).toHaveLength(3)
    // Port default is kernel: none of the three went there, and stat says so.
    expect([...classifier.ownerCounts]).toEqual([0, 0, 3, 1, 0]) // kernel, drop, wire, web, client
    const hairpin = classifier.listFlows().find((f) => f.key.localAddress === '192.0.2.9')!
    expect(hairpin).toMatchObject({ owner: -4, state: 'decided', packets: 3 })
    // A wire packet that happens to hit that reversed flow gets the port's default (kernel: no host TAP here).
    send(wire, tcp({ ipVersion: 4, src: '198.51.100.2', dst: '192.0.2.9', srcPort: 80, dstPort: 40000 }, TCP_FLAGS.ACK))
    sw.pass()
    expect(drain(web)).toHaveLength(0)
    expect(sw.drops[SwitchDrop.NoKernel]).toBe(1)
  })

  it('learns a datagram flow from its first packet, lets it expire when idle, and counts a refused datagram once', () => {
    const clock = { t: 1000 }
    const { sw, wire, client, classifier } = setup(clock)
    const query = (srcPort: number) => buildPacket({ ipVersion: 4, protocol: 17, src: '198.51.100.3', dst: '192.0.2.53', srcPort, dstPort: 53, payload: 20 })
    for (let port = 40000; port < 40010; port++) send(client, query(port))
    sw.pass()
    expect(drain(wire)).toHaveLength(10)
    expect(classifier.listFlows().filter((f) => f.owner === 1 && f.key.protocol === 17 && f.state === 'established')).toHaveLength(10)
    expect([...classifier.spoofCounts]).toEqual([0, 0, 0, 0]) // every first datagram's refusal was taken back
    expect(sw.learned[1].size).toBe(0) // nothing to reconcile or reset for UDP
    // The answer to one comes back to the client by its flow.
    send(wire, buildPacket({ ipVersion: 4, protocol: 17, src: '192.0.2.53', dst: '198.51.100.3', srcPort: 53, dstPort: 40003, payload: 40 }))
    sw.pass()
    expect(drain(client)).toHaveLength(1)
    // Idle past the sweep's bound: they go (a DNS client cannot fill the shared table) ...
    clock.t += 301_000
    expect(classifier.expireIdleFlows(300_000)).toBeGreaterThanOrEqual(10)
    expect(classifier.listFlows().filter((f) => f.owner === 1)).toHaveLength(0)
    // ... and the next datagram of one registers it again.
    send(client, query(40003))
    sw.pass()
    expect(drain(wire)).toHaveLength(1)
    expect(classifier.listFlows().filter((f) => f.owner === 1)).toHaveLength(1)
    // A datagram from an address the client does not own: refused, counted once.
    send(client, buildPacket({ ipVersion: 4, protocol: 17, src: '198.51.100.2', dst: '192.0.2.53', srcPort: 40100, dstPort: 53, payload: 20 }))
    sw.pass()
    expect(drain(wire)).toHaveLength(0)
    expect([...classifier.spoofCounts]).toEqual([1, 0, 0, 0])
    expect(sw.drops[SwitchDrop.Spoofed]).toBe(1)
  })

  it("holds an instance to its limits.maxFlows: new flows past it are refused and counted, the others' untouched", () => {
    const { sw, wire, web, client, classifier } = setup({ t: 0 }, [0, 2])
    const connect = (port: number) => send(client, tcp({ ipVersion: 4, src: '198.51.100.3', dst: '192.0.2.50', srcPort: port, dstPort: 443 }, TCP_FLAGS.SYN))
    connect(50001)
    connect(50002)
    connect(50003)
    sw.pass()
    expect(drain(wire)).toHaveLength(2)
    expect(sw.drops[SwitchDrop.FlowLimit]).toBe(1)
    expect(sw.drops[SwitchDrop.Spoofed]).toBe(0)
    expect([...classifier.spoofCounts]).toEqual([0, 0, 0, 0])
    expect(classifier.flowLimitRefusals[1]).toBe(1)
    expect(classifier.flowsHeldBy(1)).toBe(2)
    // The held flows keep working.
    send(client, tcp({ ipVersion: 4, src: '198.51.100.3', dst: '192.0.2.50', srcPort: 50001, dstPort: 443 }, TCP_FLAGS.ACK))
    sw.pass()
    expect(drain(wire)).toHaveLength(1)
    // web (no limit) is not affected: a peer's connection to it is accepted and answered.
    send(wire, tcp({ ipVersion: 4, src: '192.0.2.9', dst: '198.51.100.2', srcPort: 40000, dstPort: 80 }, TCP_FLAGS.SYN))
    sw.pass()
    expect(drain(web)).toHaveLength(1)
    send(web, tcp({ ipVersion: 4, src: '198.51.100.2', dst: '192.0.2.9', srcPort: 80, dstPort: 40000 }, TCP_FLAGS.SYN | TCP_FLAGS.ACK))
    sw.pass()
    expect(drain(wire)).toHaveLength(1)
    // One flow released: room for the next connect.
    expect(sw.reconcile(1, [{ ipVersion: 4, localAddress: '198.51.100.3', localPort: 50001, remoteAddress: '192.0.2.50', remotePort: 443 }], -1)).toBe(1)
    expect(classifier.flowsHeldBy(1)).toBe(1)
    connect(50004)
    sw.pass()
    expect(drain(wire)).toHaveLength(1)
    expect(sw.drops[SwitchDrop.FlowLimit]).toBe(1)
    expect(classifier.flowsHeldBy(1)).toBe(2)
  })

  it("an instance's later fragment held by a hairpin lookup is dropped, and its release touches no port buffer", () => {
    const { sw, wire, web, client } = setup()
    sw.registerListener(0, 4, '198.51.100.2', 80)
    // client -> web (hairpin): the later fragment first, then its first fragment.
    const later = buildPacket({ ipVersion: 4, protocol: 17, src: '198.51.100.3', dst: '198.51.100.2', payload: 8, fragment: { offset: 64, more: false, id: 9 } })
    const head = buildPacket({ ipVersion: 4, protocol: 17, src: '198.51.100.3', dst: '198.51.100.2', srcPort: 4000, dstPort: 80, payload: 64, fragment: { offset: 0, more: true, id: 9 } })
    send(client, later)
    sw.pass()
    send(client, head)
    expect(() => sw.pass()).not.toThrow()
    // The first fragment, unclaimed behind the port (a UDP datagram, web listens on TCP), leaves on the wire; the held one was dropped.
    expect(drain(wire).map((p) => p.length)).toEqual([head.length])
    expect(drain(web)).toHaveLength(0)
    expect(sw.drops[SwitchDrop.InstanceDown]).toBe(0)
  })

  it('sends what no instance claims to the port, drops what a drop rule names, and releases an instance', () => {
    const { sw, wire, client, classifier } = setup()
    send(client, tcp({ ipVersion: 4, src: '198.51.100.3', dst: '192.0.2.50', srcPort: 50001, dstPort: 8080 }, TCP_FLAGS.SYN))
    send(client, tcp({ ipVersion: 4, src: '198.51.100.3', dst: '203.0.113.9', srcPort: 50002, dstPort: 80 }, TCP_FLAGS.SYN))
    sw.pass()
    const out = drain(wire)
    expect(out).toHaveLength(1)
    expect(out[0][19]).toBe(50) // 192.0.2.50
    expect(classifier.ownerCounts[1]).toBe(1) // one drop decision
    expect(sw.detachInstance(1)).toBe(2)
    send(wire, tcp({ ipVersion: 4, src: '192.0.2.50', dst: '198.51.100.3', srcPort: 8080, dstPort: 50001 }, TCP_FLAGS.SYN | TCP_FLAGS.ACK))
    sw.pass()
    expect(sw.drops[SwitchDrop.NoKernel]).toBe(1) // no flow any more: the port default (kernel), and no host TAP
  })

  it('classifies a ring batch in one call and routes each packet in order, a held later fragment with its first', () => {
    const { sw, wire, web, client, classifier } = setup()
    sw.registerListener(1, 4, '198.51.100.3', 8080)
    const first = tcp({ ipVersion: 4, src: '192.0.2.9', dst: '198.51.100.2', srcPort: 40000, dstPort: 80 }, TCP_FLAGS.SYN)
    const later = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.9', dst: '198.51.100.2', payload: 8, fragment: { offset: 64, more: false, id: 7 } })
    const head = buildPacket({ ipVersion: 4, protocol: 6, src: '192.0.2.9', dst: '198.51.100.2', srcPort: 40001, dstPort: 80, payload: 64, fragment: { offset: 0, more: true, id: 7 } })
    const toClient = tcp({ ipVersion: 4, src: '192.0.2.9', dst: '198.51.100.3', srcPort: 40002, dstPort: 8080 }, TCP_FLAGS.SYN)
    const blocked = tcp({ ipVersion: 4, src: '192.0.2.9', dst: '203.0.113.5', srcPort: 40003, dstPort: 80 }, TCP_FLAGS.SYN)
    const last = tcp({ ipVersion: 4, src: '192.0.2.9', dst: '198.51.100.2', srcPort: 40004, dstPort: 80 }, TCP_FLAGS.SYN)
    // One ring batch: the later fragment comes before its first one.
    for (const packet of [first, later, toClient, blocked, head, last]) {
      const index = wire.alloc()
      wire.buffer(index).set(packet)
      expect(wire.send(index, packet.length)).toBe(true)
    }
    wire.flush()
    expect(sw.pass()).toBe(6)
    const got = drain(web).map((p) => [...p])
    // The later fragment was held, then routed with its first fragment's decision, just before it (as one packet at a time would).
    expect(got).toEqual([[...first], [...later], [...head], [...last]])
    expect(drain(client).map((p) => [...p])).toEqual([[...toClient]])
    expect(classifier.ownerCounts[1]).toBe(1) // the blocked network's drop
    expect(sw.drops[SwitchDrop.NoKernel]).toBe(0)
    // Every port buffer went back to the wire's side (none left held by the switch).
    expect(wire.poolAccounting().held).toBe(0)
    let returned = 0
    for (let i = 0; i < 64 && wire.alloc() >= 0; i++) returned++
    expect(returned).toBe(wire.bufferCount / 2)
  })

  it('reads TCP flags only from first-fragment TCP packets', () => {
    expect(tcpFlagsOf(tcp({ ipVersion: 6, src: '2001:db8::3', dst: '2001:db8::2', srcPort: 1, dstPort: 2 }, TCP_FLAGS.RST), 60)).toBe(TCP_FLAGS.RST)
    expect(tcpFlagsOf(buildPacket({ ipVersion: 4, protocol: 17, src: '198.51.100.3', dst: '198.51.100.2', srcPort: 1, dstPort: 2 }), 36)).toBe(-1)
    const later = buildPacket({ ipVersion: 4, protocol: 6, src: '198.51.100.3', dst: '198.51.100.2', fragment: { offset: 64, more: false, id: 7 } })
    expect(tcpFlagsOf(later, later.length)).toBe(-1)
    expect(tcpFlagsOf(new Uint8Array(10), 10)).toBe(-1)
  })

  it('registers a UDP flow from its first datagram and routes the answer back', () => {
    const { sw, wire, client, classifier } = setup()
    send(client, buildPacket({ ipVersion: 4, protocol: 17, src: '198.51.100.3', dst: '192.0.2.53', srcPort: 5353, dstPort: 53 }))
    sw.pass()
    expect(drain(wire)).toHaveLength(1)
    expect(sw.drops[SwitchDrop.Spoofed]).toBe(0)
    expect(classifier.spoofCounts[1]).toBe(0)
    send(wire, buildPacket({ ipVersion: 4, protocol: 17, src: '192.0.2.53', dst: '198.51.100.3', srcPort: 53, dstPort: 5353 }))
    sw.pass()
    expect(drain(client)).toHaveLength(1)
    // A datagram from an address the instance does not own is still refused.
    send(client, buildPacket({ ipVersion: 4, protocol: 17, src: '198.51.100.99', dst: '192.0.2.53', srcPort: 5353, dstPort: 53 }))
    sw.pass()
    expect(drain(wire)).toHaveLength(0)
    expect(sw.drops[SwitchDrop.Spoofed]).toBe(1)
    expect(sw.reconcile(1, [], -1)).toBe(0) // datagram flows are not released by the TCP report
  })
})
