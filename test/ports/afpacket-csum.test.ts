// AF_PACKET next to a peer that leaves checksums to offload: a veth end whose
// peer has tx checksum offload ON (the veth default) hands over frames whose
// TCP/UDP checksum is not computed (CHECKSUM_PARTIAL, TP_STATUS_CSUMNOTREADY).
// The I/O thread passes them up with the kernel's virtio_net_hdr in front
// (DESC_VNET_HDR, NEEDS_CSUM, csum_start/csum_offset), as a vnet_hdr TUN
// does; complete frames still arrive bare. A stack on the port completes the
// checksums (stacks/sockets/shell.ts) and takes TCP and UDP from the kernel;
// with 64 KiB channel buffers it also takes the peer's TSO super-frames.
// Needs root (namespaces, veth): without it these tests FAIL.
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DESC_VNET_HDR, VIRTIO_NET_HDR_BYTES } from '../../nexus/channel/index.js'
import { openAfPacket } from '../../nexus/ports/afpacket.js'
import { GSO_BUFFER_SIZE } from '../../nexus/ports/native.js'
import { createStack } from '../../stacks/sockets/stack.js'
import {
  checksumAccumulate,
  checksumFold,
  ETHERNET_HEADER_LENGTH,
  ETHERTYPE_IPV4,
  IP_PROTOCOL_UDP,
  parseEthernet,
  parseIpv4,
  parseUdp,
  WireError,
} from '../../stacks/wire/index.js'
import { cleanupNamespaces, createNamespace, createVethPair, deleteNamespace, execIn, ip, runIn } from '../helpers/netns.js'
import { ip4, pump } from './native-helpers.js'

const VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
const OURS = '198.51.100.1'
const PEER = '198.51.100.2'

let nsA = ''
let nsB = ''

function setTxChecksumOffload(on: boolean): void {
  expect(execIn(nsB, ['ethtool', '-K', 'fspcb', 'tx', on ? 'on' : 'off']).status).toBe(0)
  expect(execIn(nsB, ['ethtool', '-k', 'fspcb']).stdout).toMatch(on ? /tx-checksumming: on/ : /tx-checksumming: off/)
}

function sendUdp(payload: string, count: number): void {
  const script = `import socket,time\ns=socket.socket(2,2)\nfor i in range(${count}):\n  s.sendto(b'${payload}',('${OURS}',5000)); time.sleep(0.05)`
  expect(execIn(nsB, ['python3', '-c', script]).status).toBe(0)
}

/** What the virtio NEEDS_CSUM contract asks of the receiver: the sum over [csum_start, end) goes at csum_start + csum_offset. */
function completeChecksum(frame: Uint8Array, start: number, offset: number): void {
  let sum = checksumFold(checksumAccumulate(frame, start, frame.length - start))
  if (sum === 0 && offset === 6) sum = 0xffff // RFC 768: a computed UDP zero is sent as all ones
  frame[start + offset] = sum >>> 8
  frame[start + offset + 1] = sum & 0xff
}

beforeAll(() => {
  cleanupNamespaces('fs-npcs-')
  nsA = createNamespace('npcs')
  nsB = createNamespace('npcs')
  createVethPair(nsA, 'fspca', 'fspcb', nsB)
  ip('-n', nsB, 'addr', 'add', `${PEER}/24`, 'dev', 'fspcb')
  ip('-n', nsB, 'link', 'set', 'fspcb', 'up')
  // Segments no larger than the MTU (TSO/GSO super-frames do not fit 2 KiB
  // channel buffers); checksum offload stays as the test sets it.
  expect(execIn(nsB, ['ethtool', '-K', 'fspcb', 'tso', 'off', 'gso', 'off']).status).toBe(0)
})

afterAll(() => {
  if (nsA !== '') deleteNamespace(nsA)
  if (nsB !== '') deleteNamespace(nsB)
})

describe('afpacket port with a checksum-offloading peer', () => {
  it('passes partial-checksum frames up with NEEDS_CSUM and the offsets to finish them; complete frames stay bare', async () => {
    const port = await openAfPacket({ name: 'fspca', netns: nsA, blockSize: 1 << 16, blockCount: 4, blockTimeoutMs: 1 })
    try {
      const mac = Buffer.from(port.info.mac!).toString('hex').match(/../g)!.join(':')
      ip('-n', nsB, 'neigh', 'replace', OURS, 'lladdr', mac, 'dev', 'fspcb')
      const end = port.queues[0]
      interface Seen {
        flags: number
        vnet: Uint8Array
        frame: Uint8Array
      }
      const collect = async (payload: string): Promise<Seen | null> => {
        let seen: Seen | null = null
        sendUdp(payload, 5)
        await pump(
          end,
          (bytes, flags) => {
            const skip = (flags & DESC_VNET_HDR) !== 0 ? VIRTIO_NET_HDR_BYTES : 0
            const frame = bytes.slice(skip)
            const eth = parseEthernet(frame)
            if (eth instanceof WireError || eth.ethertype !== ETHERTYPE_IPV4) return
            const ipv4 = parseIpv4(frame, eth.payloadOffset, eth.payloadLength)
            if (ipv4 instanceof WireError || ipv4.protocol !== IP_PROTOCOL_UDP) return
            const text = Buffer.from(frame.subarray(ipv4.payloadOffset + 8, ipv4.payloadOffset + ipv4.payloadLength)).toString()
            if (text === payload && seen === null) seen = { flags, vnet: bytes.slice(0, skip), frame }
          },
          () => seen !== null,
          5_000,
        )
        return seen
      }

      setTxChecksumOffload(true)
      const partial = await collect('partial-sum')
      expect(partial).not.toBeNull()
      expect(partial!.flags & DESC_VNET_HDR).toBe(DESC_VNET_HDR)
      const vnet = partial!.vnet
      expect(vnet[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM).toBe(VIRTIO_NET_HDR_F_NEEDS_CSUM)
      expect(vnet[1]).toBe(0) // gso_type NONE
      const csumStart = vnet[6] | (vnet[7] << 8)
      const csumOffset = vnet[8] | (vnet[9] << 8)
      expect(csumStart).toBe(ETHERNET_HEADER_LENGTH + 20)
      expect(csumOffset).toBe(6)
      expect([vnet[10], vnet[11]]).toEqual([0, 0])
      const frame = partial!.frame
      const ipv4 = parseIpv4(frame, ETHERNET_HEADER_LENGTH, frame.length - ETHERNET_HEADER_LENGTH)
      if (ipv4 instanceof WireError) throw new Error(ipv4.toString())
      // As handed over, the field holds only the pseudo-header sum: not a valid checksum.
      expect(parseUdp(frame, ipv4.payloadOffset, ipv4.payloadLength, ipv4)).toBeInstanceOf(WireError)
      completeChecksum(frame, csumStart, csumOffset)
      const udp = parseUdp(frame, ipv4.payloadOffset, ipv4.payloadLength, ipv4)
      if (udp instanceof WireError) throw new Error(udp.toString())
      expect(udp.checksumValid).toBe(true)
      expect(ipv4.src).toBe(ip4(PEER))

      setTxChecksumOffload(false)
      const complete = await collect('full-sum')
      expect(complete).not.toBeNull()
      expect(complete!.flags & DESC_VNET_HDR).toBe(0)
      const ipv4b = parseIpv4(complete!.frame, ETHERNET_HEADER_LENGTH, complete!.frame.length - ETHERNET_HEADER_LENGTH)
      if (ipv4b instanceof WireError) throw new Error(ipv4b.toString())
      const udpb = parseUdp(complete!.frame, ipv4b.payloadOffset, ipv4b.payloadLength, ipv4b)
      if (udpb instanceof WireError) throw new Error(udpb.toString())
      expect(udpb.checksumValid).toBe(true)
      expect(port.counters().drops.oversize).toBe(0)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  }, 20_000)

  it('a stack on the port takes TCP and UDP from the offloading kernel peer (checksums completed, none rejected)', async () => {
    setTxChecksumOffload(true)
    const port = await openAfPacket({ name: 'fspca', netns: nsA, blockSize: 1 << 16, blockCount: 8, blockTimeoutMs: 1 })
    const stack = await createStack({ port, addresses: [`${OURS}/24`], dad: false })
    try {
      const body = randomBytes(512 * 1024)
      const digest = createHash('sha256').update(body).digest('hex')
      const received: Buffer[] = []
      const server = stack.net.createServer((socket) => {
        socket.on('data', (chunk: Buffer) => received.push(chunk))
        socket.on('end', () => socket.end('done'))
      })
      server.listen(7000, OURS)
      await once(server, 'listening')
      const sendScript = [
        'import socket,sys',
        `data=sys.stdin.buffer.read()`,
        `c=socket.create_connection(('${OURS}',7000),timeout=10)`,
        'c.sendall(data); c.shutdown(socket.SHUT_WR)',
        'r=b""',
        'while True:',
        '  d=c.recv(100)',
        '  if not d: break',
        '  r+=d',
        'print(r.decode())',
      ].join('\n')
      const result = await runIn(nsB, ['python3', '-c', sendScript], 20_000, body)
      expect(result.status).toBe(0)
      expect(result.stdout.trim()).toBe('done')
      expect(createHash('sha256').update(Buffer.concat(received)).digest('hex')).toBe(digest)

      const udp = stack.dgram.createSocket('udp4')
      const got = new Promise<Buffer>((resolve) => udp.once('message', (msg: Buffer) => resolve(msg)))
      udp.bind(5000)
      await once(udp, 'listening')
      sendUdp('through-the-shell', 3)
      expect((await got).toString()).toBe('through-the-shell')
      udp.close()
      server.close()

      const stats = stack.stats()
      expect(stats.link.rxOffloadDrops).toBe(0)
      expect(stack.shell.tcp.inputErrors['bad-checksum']).toBe(0)
    } finally {
      await stack.close()
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  }, 30_000)

  it('with GSO-sized channel buffers a stack takes a TSO peer\'s super-frames whole (4 MiB over TCP, SHA-256 equal)', async () => {
    setTxChecksumOffload(true)
    expect(execIn(nsB, ['ethtool', '-K', 'fspcb', 'tso', 'on', 'gso', 'on']).status).toBe(0)
    const port = await openAfPacket({
      name: 'fspca',
      netns: nsA,
      blockSize: 1 << 20,
      blockCount: 8,
      blockTimeoutMs: 1,
      channel: { bufferSize: GSO_BUFFER_SIZE, bufferCount: 256, ringCapacity: 256 },
    })
    const stack = await createStack({ port, addresses: [`${OURS}/24`], dad: false })
    try {
      const body = randomBytes(4 * 1024 * 1024)
      const received: Buffer[] = []
      const server = stack.net.createServer((socket) => {
        socket.on('data', (chunk: Buffer) => received.push(chunk))
        socket.on('end', () => socket.end('done'))
      })
      server.listen(7001, OURS)
      await once(server, 'listening')
      const script = `import socket,sys\nd=sys.stdin.buffer.read()\nc=socket.create_connection(('${OURS}',7001),timeout=10)\nc.sendall(d); c.shutdown(socket.SHUT_WR)\nprint(c.recv(16).decode())`
      const result = await runIn(nsB, ['python3', '-c', script], 20_000, body)
      expect(result.stdout.trim()).toBe('done')
      expect(createHash('sha256').update(Buffer.concat(received)).digest('hex')).toBe(createHash('sha256').update(body).digest('hex'))
      server.close()
      const c = port.counters()
      // Super-frames: far more bytes per received frame than one 1514-byte Ethernet frame.
      expect(c.rxBytes / c.rxPackets).toBeGreaterThan(3000)
      expect(c.drops.oversize).toBe(0)
      expect(stack.stats().link.rxOffloadDrops).toBe(0)
    } finally {
      await stack.close()
      await port.close()
      execIn(nsB, ['ethtool', '-K', 'fspcb', 'tso', 'off', 'gso', 'off'])
    }
    expect(port.poolCheck().full).toBe(true)
  }, 30_000)
})
