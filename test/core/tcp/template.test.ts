import { describe, expect, it } from 'vitest'
import type { IpOutput, Path } from '../../../stacks/core/contracts.js'
import { TcpTransport } from '../../../stacks/core/tcp/transport.js'
import type { IpAddress } from '../../../stacks/core/tcp/types.js'
import { WireError } from '../../../stacks/wire/error.js'
import { parseEthernet } from '../../../stacks/wire/ethernet.js'
import { parseIpv4 } from '../../../stacks/wire/ipv4.js'
import { parseIpv6 } from '../../../stacks/wire/ipv6.js'
import { TCP_ACK, TCP_PSH, TCP_SYN, emitTcp, parseTcp } from '../../../stacks/wire/tcp.js'
import { LOCAL, LOCAL6, REMOTE, REMOTE6, seededRandom } from './harness.js'

const MAC_LOCAL = Uint8Array.from([2, 0, 0, 0, 0, 2])
const MAC_PEER = Uint8Array.from([2, 0, 0, 0, 0, 1])

/** An IP layer on an Ethernet link whose paths always resolve; frames are recorded. */
function ethernetIp(version: 4 | 6) {
  const frames: Uint8Array[] = []
  const state = { generation: 1, resolves: 0, sendIp: 0, id: 100 }
  const ip: IpOutput = {
    sendIp() {
      state.sendIp++
      return 'sent'
    },
    selectSource: () => (version === 4 ? LOCAL : LOCAL6),
    isLocalAddress: () => false,
    pathMtu: () => 1500,
    resolvePath(local: IpAddress, remote: IpAddress): Path {
      state.resolves++
      const linkHeader = new Uint8Array(14)
      linkHeader.set(MAC_PEER, 0)
      linkHeader.set(MAC_LOCAL, 6)
      linkHeader[12] = version === 4 ? 0x08 : 0x86
      linkHeader[13] = version === 4 ? 0x00 : 0xdd
      return { version, local, remote, mtu: 1500, linkHeader, generation: state.generation }
    },
    pathGeneration: () => state.generation,
    transmitFrame(fill) {
      const buf = new Uint8Array(2048)
      const n = fill(buf)
      frames.push(buf.slice(0, n))
      return true
    },
    nextIpv4Id: () => state.id++,
  }
  return { ip, frames, state }
}

describe('per-connection header templates (DESIGN.md §2)', () => {
  it('IPv4: frames carry the template link/IP header with fresh lengths, ids and valid checksums', () => {
    const { ip, frames, state } = ethernetIp(4)
    const t = new TcpTransport({ ip, random: seededRandom(8), clock: () => 0 })
    const conn = t.layer.connect({ local: LOCAL, remote: REMOTE, remotePort: 80, localPort: 40000 })
    expect(frames.length).toBe(1)
    // Pretend the handshake finished, then send data through the same template.
    const syn = frames[0]
    const eth = parseEthernet(syn)
    if (eth instanceof WireError) throw new Error(eth.toString())
    expect([...eth.dst]).toEqual([...MAC_PEER])
    const v4 = parseIpv4(syn, 14)
    if (v4 instanceof WireError) throw new Error(v4.toString())
    expect(v4.checksumValid).toBe(true)
    expect(v4.dontFragment).toBe(true)
    expect(v4.ttl).toBe(64)
    expect(v4.id).toBe(100)
    const tcp = parseTcp(syn, v4.payloadOffset, v4.payloadLength, v4)
    if (tcp instanceof WireError) throw new Error(tcp.toString())
    expect(tcp.checksumValid).toBe(true)
    expect(tcp.flags).toBe(TCP_SYN)
    expect(tcp.seq).toBe(conn.iss)

    // Retransmit the SYN twice: same template, new ids, no new path resolution.
    t.poll(1000)
    t.poll(3000)
    expect(frames.length).toBe(3)
    expect(state.resolves).toBe(1)
    const ids = frames.map((f) => (f[18] << 8) | f[19])
    expect(ids).toEqual([100, 101, 102])
    for (const f of frames) {
      const r = parseIpv4(f, 14)
      if (r instanceof WireError) throw new Error(r.toString())
      expect(r.checksumValid).toBe(true)
    }
    // A path change (new generation) rebuilds the template.
    state.generation++
    t.poll(7000)
    expect(state.resolves).toBe(2)
    expect(state.sendIp).toBe(0)
    expect(t.templateCounters.template).toBe(4)
  })

  it('IPv6: payload length and TCP checksum over the template pseudo-header', () => {
    const { ip, frames } = ethernetIp(6)
    const t = new TcpTransport({ ip, random: seededRandom(9), clock: () => 0 })
    const received: Uint8Array[] = []
    t.layer.listen(null, 80, 4, (c) => {
      c.setNoDelay(true)
      c.send(Uint8Array.from([9, 8, 7, 6, 5]))
      received.push(new Uint8Array(0))
    })
    // A passive open driven by segments from REMOTE6:33000, checksummed over the IPv6 pseudo-header.
    const pseudoIn = { version: 6 as const, src: (REMOTE6 as { v6: Uint8Array }).v6, dst: (LOCAL6 as { v6: Uint8Array }).v6 }
    const synBytes = new Uint8Array(20)
    emitTcp({ srcPort: 33000, dstPort: 80, seq: 1, ack: 0, flags: TCP_SYN, window: 65535, urgentPointer: 0, options: {}, payloadLength: 0 }, synBytes, 0, pseudoIn)
    const info = { version: 6 as const, src: REMOTE6, dst: LOCAL6, hopLimit: 64, protocol: 6, dstKind: 'unicast' as const, ecn: 0, dscp: 0, ipPacket: new Uint8Array(0) }
    t.receive(info, synBytes, 0)
    expect(frames.length).toBe(1)
    const synAck = frames[0]
    const v6 = parseIpv6(synAck, 14)
    if (v6 instanceof WireError) throw new Error(v6.toString())
    expect(v6.hopLimit).toBe(64)
    const tcp = parseTcp(synAck, v6.upperOffset, v6.payloadLength, v6)
    if (tcp instanceof WireError) throw new Error(tcp.toString())
    expect(tcp.checksumValid).toBe(true)
    const ackBytes = new Uint8Array(20)
    emitTcp({ srcPort: 33000, dstPort: 80, seq: 2, ack: (tcp.seq + 1) >>> 0, flags: TCP_ACK, window: 65535, urgentPointer: 0, options: {}, payloadLength: 0 }, ackBytes, 0, pseudoIn)
    t.receive(info, ackBytes, 0)
    expect(received.length).toBe(1)
    const data = frames[frames.length - 1]
    const d6 = parseIpv6(data, 14)
    if (d6 instanceof WireError) throw new Error(d6.toString())
    const dt = parseTcp(data, d6.upperOffset, d6.payloadLength, d6)
    if (dt instanceof WireError) throw new Error(dt.toString())
    expect(dt.checksumValid).toBe(true)
    expect(dt.flags & TCP_PSH).toBe(TCP_PSH)
    expect([...data.subarray(dt.payloadOffset, dt.payloadOffset + dt.payloadLength)]).toEqual([9, 8, 7, 6, 5])
  })
})

