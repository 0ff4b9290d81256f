// Two stack cores on an in-memory Ethernet wire, on one fake clock: ARP, NDP
// with DAD, UDP both ways with fragmentation, and TCP (stacks/core/tcp)
// running over the IP layer contract.
import { describe, expect, it } from 'vitest'
import { createStackCore, type StackCore } from '../../stacks/core/stack.js'
import { TcpTransport } from '../../stacks/core/tcp/transport.js'
import type { TcpConnection } from '../../stacks/core/tcp/connection.js'
import { parseMac } from '../../stacks/wire/address.js'
import { FakeClock, MemoryLink, SeededRandom, decode, ethernet, fill, icmpv4Message, ip, ipv4Packet, v4, ETHERTYPE_IPV4 } from './harness.js'

interface Node {
  core: StackCore
  link: MemoryLink
  tcp: TcpTransport
}

function makePair(options: { dad?: boolean } = {}) {
  const clock = new FakeClock()
  const make = (mac: string, addresses: string[], seed: number): Node => {
    const link = new MemoryLink('ethernet', 1500, parseMac(mac)!, 256)
    const random = new SeededRandom(seed)
    const core = createStackCore({ link, clock, random, addresses, dad: options.dad })
    const tcp = new TcpTransport({ ip: core, random: () => random.nextUint32(), clock: () => clock.now() })
    core.registerTransport(tcp)
    return { core, link, tcp }
  }
  const a = make('02:00:00:00:00:0a', ['198.51.100.1/24', '2001:db8::1/64'], 11)
  const b = make('02:00:00:00:00:0b', ['198.51.100.2/24', '2001:db8::2/64'], 22)
  let frames = 0
  /** Sees every frame A sends; returning false drops it (a router that cannot forward it). */
  let tapA: (frame: Uint8Array) => boolean = () => true
  /** Deliver everything in flight, both ways, until the wire is quiet (bounded). */
  const pump = () => {
    for (let round = 0; round < 10_000; round++) {
      const fromA = a.link.take()
      const fromB = b.link.take()
      if (fromA.length === 0 && fromB.length === 0) return
      for (const f of fromA) {
        decode(f) // every frame on the wire must parse, checksums included
        if (tapA(f)) b.core.input(f)
      }
      for (const f of fromB) {
        decode(f)
        a.core.input(f)
      }
      frames += fromA.length + fromB.length
    }
    throw new Error('wire never went quiet')
  }
  /** Advance the clock to the next timer of either stack (at most `limitMs` ahead) and run it. */
  const step = (limitMs: number) => {
    const next = Math.min(a.core.nextTimeout(), b.core.nextTimeout(), clock.t + limitMs)
    clock.t = Math.max(clock.t, next)
    a.core.poll()
    b.core.poll()
    pump()
  }
  return {
    a,
    b,
    clock,
    pump,
    step,
    frames: () => frames,
    setTapA: (tap: (frame: Uint8Array) => boolean) => {
      tapA = tap
    },
  }
}

describe('two stacks on an in-memory wire', () => {
  it('finish DAD, resolve each other (ARP and NDP) and exchange UDP over IPv4 and IPv6, fragments included', () => {
    const { a, b, clock, pump, step } = makePair()
    pump()
    const start = clock.t
    while (a.core.addresses.some((x) => x.state === 'tentative') || b.core.addresses.some((x) => x.state === 'tentative')) {
      step(1000)
      if (clock.t - start > 10_000) throw new Error('DAD did not finish')
    }
    expect([...a.core.addresses, ...b.core.addresses].every((x) => x.state === 'preferred')).toBe(true)

    for (const [family, server, client] of [
      [4, '198.51.100.2', '198.51.100.1'],
      [6, '2001:db8::2', '2001:db8::1'],
    ] as const) {
      // An echo server on B.
      const echo = b.core.udp.bind({ family, port: 7 }, {
        message: (payload, remote) => {
          const r = echoEndpoint.send(payload, 0, payload.length, remote.address, remote.port)
          expect(r).toBe('sent')
        },
      })
      if (typeof echo === 'string') throw new Error(echo)
      const echoEndpoint = echo
      const replies: Uint8Array[] = []
      const client4 = a.core.udp.bind({ family }, { message: (p) => replies.push(p.slice()) })
      if (typeof client4 === 'string') throw new Error(client4)
      expect(client4.localPort).toBeGreaterThanOrEqual(49152)
      for (const size of [1, 100, 1472, 5000]) {
        const r = client4.send(fill(size, size), 0, size, ip(server), 7)
        expect(['sent', 'queued']).toContain(r)
        pump()
      }
      expect(replies).toEqual([fill(1, 1), fill(100, 100), fill(1472, 1472), fill(5000, 5000)])
      expect(a.core.neighbors.get(ip(server))!.hasMac).toBe(true)
      expect(b.core.neighbors.get(ip(client))!.hasMac).toBe(true)
      echo.close()
      client4.close()
    }
    expect(a.core.counters.ip.ReasmOKs + b.core.counters.ip.ReasmOKs).toBe(2)
    // Over IPv6, 1472 bytes of UDP payload do not fit in 1500 either (40-byte header).
    expect(a.core.counters.ip6.ReasmOKs + b.core.counters.ip6.ReasmOKs).toBe(4)
    expect(a.core.udp.endpointCount + b.core.udp.endpointCount).toBe(0)
    expect(a.link.poolFree).toBe(256)
  })

  for (const family of [4, 6] as const) {
    it(`carry a TCP transfer both ways over IPv${family} through the IP layer contract`, () => {
      const { a, b, step, pump } = makePair({ dad: false })
      pump()
      const serverAddress = family === 4 ? '198.51.100.2' : '2001:db8::2'
      const clientAddress = family === 4 ? '198.51.100.1' : '2001:db8::1'
      const size = 100_000
      const upload = fill(size, 1)
      const download = fill(size, 2)
      let serverReceived = 0
      const serverBuf = new Uint8Array(size)
      let serverConn: TcpConnection | null = null
      b.tcp.layer.listen(null, 8080, 8, (conn) => {
        serverConn = conn
        let sent = 0
        const write = () => {
          while (sent < size) {
            const n = conn.send(download, sent, size - sent)
            if (n === 0) return
            sent += n
          }
          conn.shutdownWrite()
        }
        conn.events = {
          onReadable: () => {
            serverReceived += conn.read(serverBuf, serverReceived, size - serverReceived)
          },
          onWritable: write,
        }
        write()
      })
      let clientReceived = 0
      const clientBuf = new Uint8Array(size)
      let uploaded = 0
      let peerClosed = false
      const conn: TcpConnection = a.tcp.layer.connect({
        local: ip(clientAddress),
        remote: ip(serverAddress),
        remotePort: 8080,
        events: {
          onConnected: () => push(),
          onWritable: () => push(),
          onReadable: () => {
            clientReceived += conn.read(clientBuf, clientReceived, size - clientReceived)
          },
          onPeerClosed: () => {
            peerClosed = true
          },
        },
      })
      const push = () => {
        while (uploaded < size) {
          const n = conn.send(upload, uploaded, size - uploaded)
          if (n === 0) return
          uploaded += n
        }
      }
      pump()
      for (let i = 0; i < 5000 && !(serverReceived === size && clientReceived === size && peerClosed); i++) step(50)
      expect(serverConn).not.toBeNull()
      expect(serverReceived).toBe(size)
      expect(clientReceived).toBe(size)
      expect(serverBuf).toEqual(upload)
      expect(clientBuf).toEqual(download)
      expect(peerClosed).toBe(true)
      // Segments respected the MTU: nothing was fragmented.
      const c = family === 4 ? a.core.counters.ip : a.core.counters.ip6
      expect(c.FragCreates).toBe(0)
      expect(c.ReasmReqds).toBe(0)
    })
  }

  it('lower the MSS of a running TCP connection when a router reports fragmentation needed (RFC 1191)', () => {
    const { a, b, step, pump, setTapA } = makePair({ dad: false })
    pump()
    const size = 60_000
    const data = fill(size, 5)
    const got = new Uint8Array(size)
    let received = 0
    b.tcp.layer.listen(null, 9000, 4, (conn) => {
      conn.events = {
        onReadable: () => {
          received += conn.read(got, received, size - received)
        },
      }
    })
    // A "router" on the path only carries 1280-byte packets: it
    // drops bigger ones and answers with ICMP fragmentation needed (3/4).
    const routerMtu = 1280
    let tooBig = 0
    let largestAfter = 0
    const mac = new Uint8Array([2, 0, 0, 0, 0, 0x0a])
    const routerMac = new Uint8Array([2, 0, 0, 0, 0, 0x0b])
    setTapA((frame) => {
      const d = decode(frame)
      if (d.ip4 === undefined) return true
      if (d.ip4.totalLength > routerMtu) {
        tooBig++
        const icmp = icmpv4Message(3, 4, routerMtu, d.ip.subarray(0, 28))
        a.core.input(ethernet(mac, routerMac, ETHERTYPE_IPV4, ipv4Packet({ src: v4('198.51.100.2'), dst: v4('198.51.100.1'), protocol: 1 }, icmp)))
        return false
      }
      if (tooBig > 0) largestAfter = Math.max(largestAfter, d.ip4.totalLength)
      return true
    })
    let sent = 0
    const conn: TcpConnection = a.tcp.layer.connect({
      local: ip('198.51.100.1'),
      remote: ip('198.51.100.2'),
      remotePort: 9000,
      events: { onConnected: () => push(), onWritable: () => push() },
    })
    const push = () => {
      while (sent < size) {
        const n = conn.send(data, sent, size - sent)
        if (n === 0) return
        sent += n
      }
    }
    pump()
    for (let i = 0; i < 3000 && received < size; i++) step(50)
    expect(received).toBe(size)
    expect(got).toEqual(data)
    expect(tooBig).toBeGreaterThan(0)
    expect(a.core.pathMtu(ip('198.51.100.1'), ip('198.51.100.2'))).toBe(routerMtu)
    expect(largestAfter).toBe(routerMtu)
    expect(a.core.counters.icmp.InDestUnreachs).toBe(tooBig)
  })
})
