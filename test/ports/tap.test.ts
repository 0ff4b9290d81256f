// TAP port against the real kernel: ARP and ICMP over Ethernet frames.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openTap } from '../../nexus/ports/tap.js'
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
import { cleanupNamespaces, createNamespace, deleteNamespace, execIn, ip } from '../helpers/netns.js'
import { echoReply, ip4, pump } from './native-helpers.js'
import { start } from './native-helpers-proc.js'

const OUR_MAC = Uint8Array.from([0x02, 0x00, 0x5e, 0x00, 0x53, 0x02])
let ns = ''

beforeAll(() => {
  cleanupNamespaces('fs-ntap-')
  ns = createNamespace('ntap')
})

afterAll(() => {
  if (ns !== '') deleteNamespace(ns)
})

describe('tap port', () => {
  it('answers the kernel ARP request, then its pings, in Ethernet frames', async () => {
    const port = await openTap({ name: 'fstap0', netns: ns })
    try {
      expect(port.info).toMatchObject({ name: 'fstap0', kind: 'tap', linkType: 'ethernet', mtu: 1500 })
      const kernelMac = port.info.mac!
      expect(kernelMac).toHaveLength(6)
      const shown = execIn(ns, ['cat', '/sys/class/net/fstap0/address']).stdout.trim()
      expect(Buffer.from(kernelMac).toString('hex').match(/../g)!.join(':')).toBe(shown)
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fstap0')

      const end = port.queues[0]
      const ping = start(ns, ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '2', '198.51.100.2'])
      let exited = false
      void ping.exited.then(() => (exited = true))
      let arpRequests = 0
      let echoes = 0
      await pump(
        end,
        (frame) => {
          const eth = parseEthernet(frame)
          if (eth instanceof WireError) return
          const out = end.alloc()
          if (out < 0) return
          const buf = end.buffer(out)
          let length = 0
          if (eth.ethertype === ETHERTYPE_ARP) {
            const arp = parseArp(frame, eth.payloadOffset, eth.payloadLength)
            if (!(arp instanceof WireError) && arp.operation === ARP_OPERATION_REQUEST && arp.targetIp === ip4('198.51.100.2')) {
              arpRequests++
              expect(Array.from(arp.senderMac)).toEqual(Array.from(kernelMac))
              emitEthernet({ dst: eth.src, src: OUR_MAC, ethertype: ETHERTYPE_ARP }, buf, 0)
              length = ETHERNET_HEADER_LENGTH + emitArp({ operation: ARP_OPERATION_REPLY, senderMac: OUR_MAC, senderIp: arp.targetIp, targetMac: arp.senderMac, targetIp: arp.senderIp }, buf, ETHERNET_HEADER_LENGTH)
            }
          } else if (eth.ethertype === ETHERTYPE_IPV4) {
            const n = echoReply(frame, eth.payloadOffset, buf, ETHERNET_HEADER_LENGTH)
            if (n > 0) {
              echoes++
              expect(Array.from(eth.dst)).toEqual(Array.from(OUR_MAC))
              emitEthernet({ dst: eth.src, src: OUR_MAC, ethertype: ETHERTYPE_IPV4 }, buf, 0)
              length = ETHERNET_HEADER_LENGTH + n
            }
          }
          if (length === 0) return end.free(out)
          expect(end.send(out, length)).toBe(true)
        },
        () => exited,
        15_000,
      )
      const result = await ping.exited
      expect(result.code).toBe(0)
      expect(result.stdout).toMatch(/3 packets transmitted, 3 received/)
      expect(arpRequests).toBeGreaterThanOrEqual(1)
      expect(echoes).toBe(3)
      // The kernel learned our MAC from the ARP reply.
      const neigh = execIn(ns, ['ip', 'neigh', 'show', '198.51.100.2', 'dev', 'fstap0']).stdout
      expect(neigh).toContain('02:00:5e:00:53:02')
      expect(port.counters().txPackets).toBe(arpRequests + 3)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('counts frames larger than the channel buffers as oversize drops', async () => {
    const port = await openTap({ name: 'fstap1', netns: ns, channel: { bufferSize: 1024, bufferCount: 64, ringCapacity: 64 } })
    try {
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fstap1')
      ip('-n', ns, 'neigh', 'add', '198.51.100.3', 'lladdr', '02:00:5e:00:53:03', 'dev', 'fstap1')
      const sent = execIn(ns, ['python3', '-c', "import socket;s=socket.socket(2,2);[s.sendto(b'y'*n,('198.51.100.3',9)) for n in (100,1400,1400,200)]"])
      expect(sent.status).toBe(0)
      const sizes: number[] = []
      await pump(port.queues[0], (frame) => {
        const eth = parseEthernet(frame)
        if (!(eth instanceof WireError) && eth.ethertype === ETHERTYPE_IPV4) sizes.push(frame.length)
      }, () => sizes.length >= 2, 5_000)
      expect(sizes).toEqual([14 + 20 + 8 + 100, 14 + 20 + 8 + 200])
      expect(port.counters().drops.oversize).toBe(2)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })
})
