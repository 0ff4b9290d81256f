// The dgram.Socket-shaped UdpSocket (stacks/sockets/udp.ts) between two stack
// cores on an in-memory IP link.
import { once } from 'node:events'
import { describe, expect, it } from 'vitest'
import { createStackCore } from '../../stacks/core/stack.js'
import { createUdpSocket, type RemoteInfo, type UdpSocketHost } from '../../stacks/sockets/udp.js'
import { FakeClock, MemoryLink, SeededRandom } from './harness.js'

function pair() {
  const clock = new FakeClock()
  const linkA = new MemoryLink('ip', 1500)
  const linkB = new MemoryLink('ip', 1500)
  const a = createStackCore({ link: linkA, clock, random: new SeededRandom(1), addresses: ['198.51.100.1/24', '2001:db8::1/64'] })
  const b = createStackCore({ link: linkB, clock, random: new SeededRandom(2), addresses: ['198.51.100.2/24', '2001:db8::2/64'] })
  const pump = () => {
    for (let i = 0; i < 1000; i++) {
      const fa = linkA.take()
      const fb = linkB.take()
      if (fa.length === 0 && fb.length === 0) return
      for (const f of fa) b.input(f)
      for (const f of fb) a.input(f)
    }
  }
  const hostA: UdpSocketHost = { udp: a.udp, flush: pump }
  const hostB: UdpSocketHost = { udp: b.udp, flush: pump }
  return { a, b, hostA, hostB }
}

describe('UdpSocket (dgram.Socket shape)', () => {
  for (const [type, server, client] of [
    ['udp4', '198.51.100.2', '198.51.100.1'],
    ['udp6', '2001:db8::2', '2001:db8::1'],
  ] as const) {
    it(`${type}: bind, listening, message with rinfo, reply to rinfo`, async () => {
      const { hostA, hostB } = pair()
      const srv = createUdpSocket(hostB, type)
      srv.on('message', (msg: Buffer, rinfo: RemoteInfo) => srv.send(Buffer.from(msg.toString().toUpperCase()), rinfo.port, rinfo.address))
      srv.bind(5353, server)
      await once(srv, 'listening')
      expect(srv.address()).toEqual({ address: server, family: type === 'udp4' ? 'IPv4' : 'IPv6', port: 5353 })
      const cli = createUdpSocket(hostA, type)
      const got = once(cli, 'message')
      const sent = new Promise<[Error | null, number]>((resolve) => cli.send('hello', 5353, server, (err, n) => resolve([err, n])))
      expect(await sent).toEqual([null, 5])
      const [msg, rinfo] = (await got) as [Buffer, RemoteInfo]
      expect(msg.toString()).toBe('HELLO')
      expect(rinfo).toEqual({ address: server, family: type === 'udp4' ? 'IPv4' : 'IPv6', port: 5353, size: 5 })
      expect(cli.address().port).toBeGreaterThanOrEqual(49152) // implicitly bound to an ephemeral port
      const closed = once(cli, 'close')
      cli.close()
      await closed
      expect(() => cli.send('x', 1, client)).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_DGRAM_NOT_RUNNING' }))
      srv.close()
    })
  }

  it('send() to a host name resolves it first (the lookup option, as dgram.createSocket), and reports a failed lookup', async () => {
    const { hostA, hostB } = pair()
    const srv = createUdpSocket(hostB, 'udp4')
    srv.bind(5354, '198.51.100.2')
    await once(srv, 'listening')
    const asked: Array<{ name: string; family: unknown }> = []
    const lookup = ((name: string, options: { family?: number }, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void) => {
      asked.push({ name, family: options.family })
      if (name === 'peer.test') callback(null, '198.51.100.2', 4)
      else callback(Object.assign(new Error(`getaddrinfo ENOTFOUND ${name}`), { code: 'ENOTFOUND' }), '', 0)
    }) as unknown as typeof import('node:dns').lookup
    const cli = createUdpSocket(hostA, { type: 'udp4', lookup })
    const got = once(srv, 'message')
    const buffer = Buffer.from('by name')
    const sent = new Promise<[Error | null, number]>((resolve) => cli.send(buffer, 5354, 'peer.test', (err, n) => resolve([err, n])))
    buffer.fill(0) // the datagram is the bytes at the time of send()
    expect(await sent).toEqual([null, 7])
    const [msg] = (await got) as [Buffer]
    expect(msg.toString()).toBe('by name')
    const failed = await new Promise<Error | null>((resolve) => cli.send('x', 5354, 'nowhere.test', (err) => resolve(err)))
    expect(failed).toMatchObject({ code: 'ENOTFOUND' })
    expect(asked).toEqual([{ name: 'peer.test', family: 4 }, { name: 'nowhere.test', family: 4 }])
    cli.close()
    srv.close()
  })

  it('connect: send without an address, remoteAddress(), ECONNREFUSED from ICMP port unreachable', async () => {
    const { hostA } = pair()
    const cli = createUdpSocket(hostA, 'udp4')
    cli.connect(9, '198.51.100.2')
    await once(cli, 'connect')
    expect(cli.remoteAddress()).toEqual({ address: '198.51.100.2', family: 'IPv4', port: 9 })
    const error = once(cli, 'error')
    cli.send('anyone?')
    const [err] = (await error) as [NodeJS.ErrnoException]
    expect(err.code).toBe('ECONNREFUSED')
    expect(err.errno).toBeLessThan(0)
    cli.disconnect()
    expect(() => cli.remoteAddress()).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_DGRAM_NOT_CONNECTED' }))
    cli.close()
  })

  it('reports EADDRINUSE and EADDRNOTAVAIL like node:dgram, and needs setBroadcast for broadcasts', async () => {
    const { hostA } = pair()
    const one = createUdpSocket(hostA, 'udp4').bind(7000)
    await once(one, 'listening')
    const two = createUdpSocket(hostA, 'udp4').bind(7000)
    const [inUse] = (await once(two, 'error')) as [NodeJS.ErrnoException & { syscall: string; port: number }]
    expect(inUse).toMatchObject({ code: 'EADDRINUSE', syscall: 'bind', port: 7000 })
    const three = createUdpSocket(hostA, 'udp4').bind(7001, '192.0.2.1')
    const [notHere] = (await once(three, 'error')) as [NodeJS.ErrnoException]
    expect(notHere.code).toBe('EADDRNOTAVAIL')
    const denied = await new Promise<Error | null>((resolve) => one.send('x', 67, '255.255.255.255', (err) => resolve(err)))
    expect(denied).toMatchObject({ code: 'EACCES', syscall: 'send' })
    one.setBroadcast(true)
    const allowed = await new Promise<Error | null>((resolve) => one.send('x', 67, '255.255.255.255', (err) => resolve(err)))
    expect(allowed).toBeNull()
    const wrongFamily = await new Promise<Error | null>((resolve) => one.send('x', 67, '2001:db8::2', (err) => resolve(err)))
    expect(wrongFamily).toMatchObject({ code: 'EINVAL' })
    one.close()
  })
})
