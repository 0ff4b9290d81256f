// AF_PACKET port (TPACKET_V3 RX ring, sendmmsg TX) on one end of a veth pair;
// the kernel of another namespace sits on the other end.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openAfPacket } from '../../nexus/ports/afpacket.js'
import {
  ARP_OPERATION_REPLY,
  ARP_OPERATION_REQUEST,
  emitArp,
  emitEthernet,
  ETHERNET_HEADER_LENGTH,
  ETHERTYPE_ARP,
  ETHERTYPE_IPV4,
  parseArp,
  parseEthernet,
  WireError,
} from '../../stacks/wire/index.js'
import { cleanupNamespaces, createNamespace, createVethPair, deleteNamespace, execIn, ip } from '../helpers/netns.js'
import { allocBuffer, ip4, pump, udpPacket, udpPayload, udpReceiverScript } from './native-helpers.js'
import { start } from './native-helpers-proc.js'

let nsA = ''
let nsB = ''
let peerMac = new Uint8Array(6)

beforeAll(() => {
  cleanupNamespaces('fs-npkt-')
  nsA = createNamespace('npkt')
  nsB = createNamespace('npkt')
  createVethPair(nsA, 'fspa', 'fspb', nsB)
  ip('-n', nsB, 'addr', 'add', '198.51.100.2/24', 'dev', 'fspb')
  ip('-n', nsB, 'link', 'set', 'fspb', 'up')
  // veth offloads checksums: without this the peer's frames reach the ring
  // with partial (not yet computed) UDP checksums, as TP_STATUS_CSUMNOTREADY.
  expect(execIn(nsB, ['ethtool', '-K', 'fspb', 'tx', 'off']).status).toBe(0)
  const text = execIn(nsB, ['cat', '/sys/class/net/fspb/address']).stdout.trim()
  peerMac = Uint8Array.from(text.split(':').map((h) => parseInt(h, 16)))
})

afterAll(() => {
  if (nsA !== '') deleteNamespace(nsA)
  if (nsB !== '') deleteNamespace(nsB)
})

describe('afpacket port', () => {
  it('receives the kernel frames through the TPACKET_V3 ring and sends frames a kernel socket receives', async () => {
    const port = await openAfPacket({ name: 'fspa', netns: nsA, blockSize: 1 << 16, blockCount: 4, blockTimeoutMs: 2 })
    try {
      expect(port.info).toMatchObject({ name: 'fspa', kind: 'afpacket', linkType: 'ethernet', mtu: 1500, queues: 1 })
      const ourMac = port.info.mac!
      const end = port.queues[0]
      // The peer's kernel resolves 198.51.100.1 (broadcast ARP into our ring), then sends UDP.
      const sender = start(nsB, ['python3', '-c', "import socket,time\ns=socket.socket(2,2)\nfor i in range(30):\n  s.sendto(b'over-veth',('198.51.100.1',5000)); time.sleep(0.1)"])
      let arpAnswered = 0
      let udp: ReturnType<typeof udpPayload> = null
      await pump(
        end,
        (frame) => {
          const eth = parseEthernet(frame)
          if (eth instanceof WireError) return
          if (eth.ethertype === ETHERTYPE_ARP) {
            const arp = parseArp(frame, eth.payloadOffset, eth.payloadLength)
            if (arp instanceof WireError || arp.operation !== ARP_OPERATION_REQUEST || arp.targetIp !== ip4('198.51.100.1')) return
            const out = end.alloc()
            if (out < 0) return
            const buf = end.buffer(out)
            emitEthernet({ dst: eth.src, src: ourMac, ethertype: ETHERTYPE_ARP }, buf, 0)
            const n = emitArp({ operation: ARP_OPERATION_REPLY, senderMac: ourMac, senderIp: arp.targetIp, targetMac: arp.senderMac, targetIp: arp.senderIp }, buf, ETHERNET_HEADER_LENGTH)
            end.send(out, ETHERNET_HEADER_LENGTH + n)
            arpAnswered++
          } else if (eth.ethertype === ETHERTYPE_IPV4) {
            const u = udpPayload(frame, eth.payloadOffset)
            if (u !== null && u.dstPort === 5000) {
              expect(Array.from(eth.dst)).toEqual(Array.from(ourMac))
              udp = u
            }
          }
        },
        () => udp !== null,
        8_000,
      )
      sender.child.kill('SIGKILL')
      await sender.exited
      expect(arpAnswered).toBeGreaterThanOrEqual(1)
      expect(udp).not.toBeNull()
      expect(Buffer.from(udp!.payload).toString()).toBe('over-veth')
      expect(udp!.src).toBe(ip4('198.51.100.2'))

      // Our frame, addressed to the peer's MAC, reaches a kernel UDP socket there.
      const receiver = start(nsB, udpReceiverScript('198.51.100.2', 6000))
      await receiver.printed('ready')
      const out = await allocBuffer(end)
      const buf = end.buffer(out)
      emitEthernet({ dst: peerMac, src: ourMac, ethertype: ETHERTYPE_IPV4 }, buf, 0)
      const n = udpPacket(buf, ETHERNET_HEADER_LENGTH, ip4('198.51.100.1'), 7000, ip4('198.51.100.2'), 6000, Buffer.from('from-ring'))
      expect(end.send(out, ETHERNET_HEADER_LENGTH + n)).toBe(true)
      end.flush()
      const result = await receiver.exited
      expect(result.stdout).toContain('from-ring 198.51.100.1 7000')
      const c = port.counters()
      expect(c.rxPackets).toBeGreaterThanOrEqual(2)
      expect(c.txPackets).toBe(arpAnswered + 1)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('spreads flows over PACKET_FANOUT queues, losing none', async () => {
    const port = await openAfPacket({ name: 'fspa', netns: nsA, queues: 2, blockSize: 1 << 16, blockCount: 4, blockTimeoutMs: 1 })
    try {
      expect(port.queues).toHaveLength(2)
      const mac = Buffer.from(port.info.mac!).toString('hex').match(/../g)!.join(':')
      ip('-n', nsB, 'neigh', 'replace', '198.51.100.1', 'lladdr', mac, 'dev', 'fspb')
      const flows = 200
      const sent = execIn(nsB, ['python3', '-c', `import socket\nfor i in range(${flows}):\n  s=socket.socket(2,2); s.bind(('198.51.100.2',20000+i)); s.sendto(b'flow',('198.51.100.1',9)); s.close()`])
      expect(sent.status).toBe(0)
      const perQueue = [0, 0]
      const sources = new Set<number>()
      const deadline = Date.now() + 8_000
      while (sources.size < flows && Date.now() < deadline) {
        await Promise.race(port.queues.map((q) => q.waitForWork(50)))
        port.queues.forEach((q, i) => {
          q.receive(256, (index, length) => {
            const frame = q.buffer(index).subarray(0, length)
            const eth = parseEthernet(frame)
            if (!(eth instanceof WireError) && eth.ethertype === ETHERTYPE_IPV4) {
              const u = udpPayload(frame, eth.payloadOffset)
              if (u !== null && u.dstPort === 9) {
                sources.add(u.srcPort)
                perQueue[i]++
              }
            }
            q.release(index)
          })
          q.flush()
        })
      }
      if (sources.size !== flows) console.log('fanout lost', flows - sources.size, JSON.stringify(port.errorCounters()), JSON.stringify(port.counters()))
      expect(sources.size).toBe(flows)
      expect(perQueue[0] + perQueue[1]).toBe(flows)
      expect(perQueue[0]).toBeGreaterThan(0)
      expect(perQueue[1]).toBeGreaterThan(0)
      const c = port.counters()
      expect(c.queues).toHaveLength(2)
      expect(c.queues[0].rxPackets + c.queues[1].rxPackets).toBe(c.rxPackets)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('returns every buffer when closed in the middle of a flood, with rx paused on a full pool', async () => {
    const port = await openAfPacket({ name: 'fspa', netns: nsA, blockSize: 1 << 16, blockCount: 4, channel: { bufferCount: 64, ringCapacity: 64 } })
    const mac = Buffer.from(port.info.mac!).toString('hex').match(/../g)!.join(':')
    ip('-n', nsB, 'neigh', 'replace', '198.51.100.1', 'lladdr', mac, 'dev', 'fspb')
    const flood = start(nsB, ['python3', '-c', "import socket,time\ns=socket.socket(2,2)\nt=time.time()+3\nwhile time.time()<t:\n  s.sendto(b'z'*100,('198.51.100.1',9))"])
    const end = port.queues[0]
    // Hold every buffer we receive: the I/O thread runs out and pauses.
    const held: number[] = []
    const deadline = Date.now() + 5_000
    while (held.length < 32 && Date.now() < deadline) {
      await end.waitForWork(50)
      end.receive(64, (index) => void held.push(index))
    }
    expect(held).toHaveLength(32) // all of side A's buffers (half of 64) are with us now
    const stallDeadline = Date.now() + 5_000
    while (port.errorCounters().rxStalls === 0 && Date.now() < stallDeadline) await new Promise((r) => setTimeout(r, 10))
    expect(port.errorCounters().rxStalls).toBeGreaterThan(0)
    expect(port.poolCheck()).toMatchObject({ heldByUser: 32, full: false })
    // Hand them back and close while the flood still runs.
    for (const index of held) end.release(index)
    end.flush()
    await port.close()
    flood.child.kill('SIGKILL')
    await flood.exited
    expect(port.poolCheck()).toMatchObject({ full: true, heldByUser: 0 })
  })

  it('keeps receiving across a link flap', async () => {
    const port = await openAfPacket({ name: 'fspa', netns: nsA, blockSize: 1 << 16, blockCount: 4 })
    try {
      const mac = Buffer.from(port.info.mac!).toString('hex').match(/../g)!.join(':')
      ip('-n', nsA, 'link', 'set', 'fspa', 'down')
      ip('-n', nsA, 'link', 'set', 'fspa', 'up')
      ip('-n', nsB, 'neigh', 'replace', '198.51.100.1', 'lladdr', mac, 'dev', 'fspb')
      const end = port.queues[0]
      let seen = 0
      const sender = start(nsB, ['python3', '-c', "import socket,time\ns=socket.socket(2,2)\nfor i in range(40):\n  s.sendto(b'after-flap',('198.51.100.1',5001)); time.sleep(0.05)"])
      await pump(end, (frame) => {
        const eth = parseEthernet(frame)
        if (eth instanceof WireError || eth.ethertype !== ETHERTYPE_IPV4) return
        const u = udpPayload(frame, eth.payloadOffset)
        if (u !== null && u.dstPort === 5001) seen++
      }, () => seen >= 3, 8_000)
      sender.child.kill('SIGKILL')
      await sender.exited
      expect(seen).toBeGreaterThanOrEqual(3)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('reports a missing interface as PORT_NO_DEVICE', async () => {
    await expect(openAfPacket({ name: 'fsnothere0', netns: nsA })).rejects.toMatchObject({ code: 'PORT_NO_DEVICE' })
    await expect(openAfPacket({ name: 'fspa', netns: nsA, blockSize: 1000 })).rejects.toMatchObject({ code: 'PORT_BAD_OPTIONS' })
  })
})
