// TUN with IFF_VNET_HDR: a JS relay between two TUNs in two namespaces
// carries a kernel TCP transfer. The sender's kernel (A) hands us TSO
// super-packets (one read, virtio header with gso type/size set); we write
// them, GSO metadata unchanged, into the other TUN (B). B's kernel forwards
// them out of a veth with TSO/GSO turned off, so it must segment them in
// software, and the receiving socket in C gets the stream intact.
//
//   A: tun fsva0 198.51.100.1 --JS relay-- B: tun fsvb0, forwarding, veth 192.0.2.1 --- C: veth 192.0.2.2 (server)
import { createHash } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DESC_VNET_HDR, type ChannelEnd } from '../../nexus/channel/index.js'
import { openTun } from '../../nexus/ports/tun.js'
import { cleanupNamespaces, createNamespace, createVethPair, deleteNamespace, execIn, ip } from '../helpers/netns.js'
import { start } from './native-helpers-proc.js'

const VIRTIO_NET_HDR_GSO_TCPV4 = 1
const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
const TRANSFER_BYTES = 8 * 1024 * 1024

let nsA = ''
let nsB = ''
let nsC = ''

beforeAll(() => {
  cleanupNamespaces('fs-nvnet-')
  nsA = createNamespace('nvnet')
  nsB = createNamespace('nvnet')
  nsC = createNamespace('nvnet')
})

afterAll(() => {
  if (nsA !== '') deleteNamespace(nsA)
  if (nsB !== '') deleteNamespace(nsB)
  if (nsC !== '') deleteNamespace(nsC)
})

interface RelayStats {
  packets: number
  superPackets: number
  maxLength: number
  gsoSizes: Set<number>
  needsCsum: number
  drops: number
}

/** Moves every packet from `from` to `to`, copying it into a buffer of `to`'s pool. */
function relayBatch(from: ChannelEnd, to: ChannelEnd, stats: RelayStats | null): number {
  const moved = from.receive(64, (index, length, flags) => {
    const packet = from.buffer(index)
    if (stats !== null) {
      stats.packets++
      expect(flags & DESC_VNET_HDR).toBe(DESC_VNET_HDR)
      const gsoType = packet[1]
      const gsoSize = packet[4] | (packet[5] << 8)
      if (gsoType === VIRTIO_NET_HDR_GSO_TCPV4 && length > 1500 + 12) {
        stats.superPackets++
        stats.gsoSizes.add(gsoSize)
      }
      if (packet[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM) stats.needsCsum++
      if (length > stats.maxLength) stats.maxLength = length
    }
    let out = to.alloc()
    if (out < 0) {
      to.reclaim()
      out = to.alloc()
    }
    if (out >= 0) {
      to.buffer(out).set(packet.subarray(0, length))
      if (!to.send(out, length, flags)) {
        to.free(out)
        if (stats !== null) stats.drops++
      }
    } else if (stats !== null) {
      stats.drops++
    }
    from.release(index)
  })
  to.flush()
  from.flush()
  return moved
}

describe('tun port with vnet_hdr', () => {
  it('relays kernel TCP super-packets with their GSO metadata; the kernel segments what we write, intact', async () => {
    const portA = await openTun({ name: 'fsva0', netns: nsA, vnetHdr: true, txQueueLen: 1000 })
    const portB = await openTun({ name: 'fsvb0', netns: nsB, vnetHdr: true, txQueueLen: 1000 })
    try {
      expect(portA.info.offloads).toEqual({ vnetHdr: true, tso4: true, tso6: true, checksum: true })
      ip('-n', nsA, 'addr', 'add', '198.51.100.1/24', 'dev', 'fsva0')
      ip('-n', nsA, 'route', 'add', '192.0.2.0/24', 'dev', 'fsva0')
      ip('-n', nsB, 'route', 'add', '198.51.100.0/24', 'dev', 'fsvb0')
      expect(execIn(nsB, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']).status).toBe(0)
      createVethPair(nsB, 'fsvbv', 'fsvcv', nsC)
      ip('-n', nsB, 'addr', 'add', '192.0.2.1/24', 'dev', 'fsvbv')
      ip('-n', nsC, 'addr', 'add', '192.0.2.2/24', 'dev', 'fsvcv')
      ip('-n', nsB, 'link', 'set', 'fsvbv', 'up')
      ip('-n', nsC, 'link', 'set', 'fsvcv', 'up')
      ip('-n', nsC, 'route', 'add', 'default', 'via', '192.0.2.1')
      // No TSO/GSO on the way out of B: the kernel has to cut our super-packets itself.
      expect(execIn(nsB, ['ethtool', '-K', 'fsvbv', 'tso', 'off', 'gso', 'off']).status).toBe(0)
      expect(execIn(nsC, ['ethtool', '-K', 'fsvcv', 'gro', 'off']).status).toBe(0)
      const rxPacketsBefore = Number(execIn(nsC, ['cat', '/sys/class/net/fsvcv/statistics/rx_packets']).stdout)

      const server = start(nsC, [
        'python3',
        '-c',
        "import socket,hashlib\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('192.0.2.2',5201))\ns.listen(1)\nprint('ready',flush=True)\ns.settimeout(20)\nc,_=s.accept()\nc.settimeout(20)\nh=hashlib.sha256()\nn=0\nwhile True:\n  d=c.recv(1<<20)\n  if not d: break\n  h.update(d); n+=len(d)\nprint(n,h.hexdigest(),flush=True)",
      ])
      await server.printed('ready')
      const client = start(nsA, [
        'python3',
        '-c',
        `import socket\nd=bytes(i*7%251 for i in range(1<<20))\ns=socket.create_connection(('192.0.2.2',5201),timeout=20)\nfor _ in range(${TRANSFER_BYTES >> 20}): s.sendall(d)\ns.close()`,
      ])
      const chunk = Buffer.from(Array.from({ length: 1 << 20 }, (_, i) => (i * 7) % 251))
      const hash = createHash('sha256')
      for (let i = 0; i < TRANSFER_BYTES >> 20; i++) hash.update(chunk)
      const expected = hash.digest('hex')

      const stats: RelayStats = { packets: 0, superPackets: 0, maxLength: 0, gsoSizes: new Set(), needsCsum: 0, drops: 0 }
      let serverDone = false
      void server.exited.then(() => (serverDone = true))
      const a = portA.queues[0]
      const b = portB.queues[0]
      const deadline = Date.now() + 30_000
      while (!serverDone && Date.now() < deadline) {
        const moved = relayBatch(a, b, stats) + relayBatch(b, a, null)
        if (moved === 0) await Promise.race([a.waitForWork(20), b.waitForWork(20)])
      }
      const result = await server.exited
      await client.exited
      expect(result.stdout.trim().split('\n').pop()).toBe(`${TRANSFER_BYTES} ${expected}`)
      expect(stats.superPackets).toBeGreaterThan(0)
      expect(stats.maxLength).toBeGreaterThan(8000)
      for (const size of stats.gsoSizes) {
        // gso_size is the MSS: at most MTU - IPv4 header - TCP header.
        expect(size).toBeGreaterThan(500)
        expect(size).toBeLessThanOrEqual(1500 - 40)
      }
      expect(stats.needsCsum).toBeGreaterThan(0)
      // What reached C came as MTU-sized segments, not as our super-packets.
      const rxPackets = Number(execIn(nsC, ['cat', '/sys/class/net/fsvcv/statistics/rx_packets']).stdout) - rxPacketsBefore
      expect(rxPackets).toBeGreaterThan(TRANSFER_BYTES / 1460)
      const c = portB.counters()
      expect(c.txPackets).toBe(stats.packets - stats.drops)
      expect(portB.errorCounters().txErrors).toBe(0)
      expect(c.drops.oversize).toBe(0)
    } finally {
      await portA.close()
      await portB.close()
    }
    expect(portA.poolCheck().full).toBe(true)
    expect(portB.poolCheck().full).toBe(true)
  })

  it('needs 64 KiB channel buffers', async () => {
    await expect(openTun({ name: 'fsvc0', netns: nsA, vnetHdr: true, channel: { bufferSize: 2048 } })).rejects.toMatchObject({ code: 'PORT_BAD_OPTIONS' })
  })
})
