// The switch's kernel fallback per packet, without devices: an Ethernet port
// with a host TAP, both as in-memory channels the test drives. Frames decided
// "kernel" go into the TAP; the kernel's frames leave on the wire; neighbour
// discovery about an address shared by an instance and the kernel reaches both.
import { describe, expect, it } from 'vitest'
import { attachChannel, createChannel, type ChannelEnd } from '../../nexus/channel/index.js'
import { parseConfigJson } from '../../runtime/config/index.js'
import { classifierFromConfig } from '../../classifier/index.js'
import { Switch, SwitchDrop, TCP_FLAGS } from '../../runtime/switch.js'
import { buildPacket } from '../classifier/packets.js'

const KERNEL_MAC = [0x02, 0, 0, 0, 0, 0x01]
const PEER_MAC = [0x02, 0, 0, 0, 0, 0x09]
const OTHER_MAC = [0x02, 0, 0, 0, 0, 0x03]
const BROADCAST = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]

const config = parseConfigJson({
  ports: [{ name: 'wire', afpacket: { interface: 'eth9', host: { device: 'fsh0', addresses: ['198.51.100.1/24'] } }, defaultAction: { kernel: {} } }],
  instances: [
    { name: 'shared', port: 'wire', addresses: ['198.51.100.1/24'] },
    { name: 'other', port: 'wire', addresses: ['198.51.100.3/24'] },
  ],
}).config

function ethernet(dst: number[], src: number[], ethertype: number, payload: Uint8Array): Uint8Array {
  const frame = new Uint8Array(14 + payload.length)
  frame.set(dst, 0)
  frame.set(src, 6)
  frame[12] = ethertype >> 8
  frame[13] = ethertype & 0xff
  frame.set(payload, 14)
  return frame
}

function arp(op: 1 | 2, senderMac: number[], senderIp: number[], targetIp: number[], dst: number[]): Uint8Array {
  const body = new Uint8Array(28)
  body.set([0, 1, 0x08, 0, 6, 4, 0, op], 0)
  body.set(senderMac, 8)
  body.set(senderIp, 14)
  body.set(targetIp, 24)
  return ethernet(dst, senderMac, 0x0806, body)
}

function tcpFrame(dst: number[], src: number[], srcIp: string, dstIp: string, dstPort: number): Uint8Array {
  const packet = buildPacket({ ipVersion: 4, protocol: 6, src: srcIp, dst: dstIp, srcPort: 40000, dstPort, payload: 0 })
  packet[20 + 13] = TCP_FLAGS.SYN
  return ethernet(dst, src, 0x0800, packet)
}

function send(end: ChannelEnd, frame: Uint8Array): void {
  const index = end.alloc()
  expect(index).toBeGreaterThanOrEqual(0)
  end.buffer(index).set(frame)
  expect(end.send(index, frame.length)).toBe(true)
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

function setup() {
  const classifier = classifierFromConfig(config)
  const portSab = createChannel({ bufferCount: 64, ringCapacity: 64 })
  const hostSab = createChannel({ bufferCount: 64, ringCapacity: 64 })
  const wire = attachChannel(portSab, 'a')
  const kernel = attachChannel(hostSab, 'a') // the TAP's device side: what the kernel sends and gets
  const sw = new Switch(
    classifier,
    [{ name: 'wire', end: attachChannel(portSab, 'b'), link: 'ethernet', vnetHdr: false, host: { end: attachChannel(hostSab, 'b'), mac: Uint8Array.from(KERNEL_MAC), addresses: ['198.51.100.1/24'] } }],
    [
      { name: 'shared', port: 0, addresses: ['198.51.100.1/24'], mac: Uint8Array.from(KERNEL_MAC) },
      { name: 'other', port: 0, addresses: ['198.51.100.3/24'], mac: Uint8Array.from(OTHER_MAC) },
    ],
  )
  const instances = [0, 1].map((i) => {
    const sab = createChannel({ bufferCount: 64, ringCapacity: 64 })
    sw.attachInstance(i, sab)
    return attachChannel(sab, 'b')
  })
  return { sw, wire, kernel, shared: instances[0], other: instances[1] }
}

describe('Switch with a host TAP', () => {
  it('gives unclaimed traffic to the kernel through the TAP, not to the no-kernel drop', () => {
    const { sw, wire, kernel, shared } = setup()
    const ping = ethernet(KERNEL_MAC, PEER_MAC, 0x0800, buildPacket({ ipVersion: 4, protocol: 1, src: '198.51.100.9', dst: '198.51.100.1', payload: 8 }))
    send(wire, ping)
    send(wire, tcpFrame(KERNEL_MAC, PEER_MAC, '198.51.100.9', '198.51.100.1', 22))
    sw.pass()
    const got = drain(kernel)
    expect(got).toHaveLength(2)
    expect([...got[0]]).toEqual([...ping])
    expect(drain(shared)).toHaveLength(0)
    expect(sw.drops[SwitchDrop.NoKernel]).toBe(0)
    expect(sw.hostTraffic[0]!.txPackets).toBe(2)
  })

  it('still gives an instance the traffic its listener claims on the shared address', () => {
    const { sw, wire, kernel, shared } = setup()
    sw.registerListener(0, 4, '0.0.0.0', 80)
    send(wire, tcpFrame(KERNEL_MAC, PEER_MAC, '198.51.100.9', '198.51.100.1', 80))
    sw.pass()
    expect(drain(shared)).toHaveLength(1)
    expect(drain(kernel)).toHaveLength(0)
  })

  it('sends ARP about a shared address to both, about an instance-only address to that instance only', () => {
    const { sw, wire, kernel, shared, other } = setup()
    send(wire, arp(1, PEER_MAC, [198, 51, 100, 9], [198, 51, 100, 1], BROADCAST))
    sw.pass()
    expect(drain(shared)).toHaveLength(1)
    expect(drain(kernel)).toHaveLength(1)
    send(wire, arp(1, PEER_MAC, [198, 51, 100, 9], [198, 51, 100, 3], BROADCAST))
    sw.pass()
    expect(drain(other)).toHaveLength(1)
    expect(drain(kernel)).toHaveLength(0)
  })

  it('keeps wire order for an instance when neighbour discovery comes in the middle of a classified batch', () => {
    const { sw, wire, other } = setup()
    sw.registerListener(1, 4, '0.0.0.0', 80)
    const before = tcpFrame(OTHER_MAC, PEER_MAC, '198.51.100.9', '198.51.100.3', 80)
    const ask = arp(1, PEER_MAC, [198, 51, 100, 9], [198, 51, 100, 3], BROADCAST)
    const after = tcpFrame(OTHER_MAC, PEER_MAC, '198.51.100.10', '198.51.100.3', 80)
    for (const frame of [before, ask, after]) {
      const index = wire.alloc()
      wire.buffer(index).set(frame)
      expect(wire.send(index, frame.length)).toBe(true)
    }
    wire.flush()
    expect(sw.pass()).toBe(3)
    expect(drain(other).map((f) => [...f])).toEqual([[...before], [...ask], [...after]])
  })

  it('sends what the kernel writes into the TAP out on the wire, and to an instance by its MAC or address', () => {
    const { sw, wire, kernel, shared, other } = setup()
    const reply = tcpFrame(PEER_MAC, KERNEL_MAC, '198.51.100.1', '198.51.100.9', 40000)
    send(kernel, reply)
    sw.pass()
    const out = drain(wire)
    expect(out).toHaveLength(1)
    expect([...out[0]]).toEqual([...reply])
    expect(sw.hostTraffic[0]!.rxPackets).toBe(1)
    // The kernel asks for another instance's address, then talks to it by MAC.
    send(kernel, arp(1, KERNEL_MAC, [198, 51, 100, 1], [198, 51, 100, 3], BROADCAST))
    send(kernel, tcpFrame(OTHER_MAC, KERNEL_MAC, '198.51.100.1', '198.51.100.3', 80))
    sw.pass()
    expect(drain(other)).toHaveLength(2)
    expect(drain(wire)).toHaveLength(0)
    // Its own ARP about the shared address is for the wire, not for the instance sharing it.
    send(kernel, arp(2, KERNEL_MAC, [198, 51, 100, 1], [198, 51, 100, 9], PEER_MAC))
    send(kernel, arp(1, KERNEL_MAC, [198, 51, 100, 1], [198, 51, 100, 1], BROADCAST))
    sw.pass()
    expect(drain(wire)).toHaveLength(2)
    expect(drain(shared)).toHaveLength(0)
  })
})
