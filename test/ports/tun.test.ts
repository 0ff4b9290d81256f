// TUN port against the real kernel, inside a namespace this test creates.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openTun } from '../../nexus/ports/tun.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, execIn, ip } from '../helpers/netns.js'
import { allocBuffer, echoReply, ip4, pump, udpPacket, udpPayload, udpReceiverScript } from './native-helpers.js'
import { start } from './native-helpers-proc.js'

let ns = ''

beforeAll(() => {
  cleanupNamespaces('fs-ntun-')
  ns = createNamespace('ntun')
})

afterAll(() => {
  if (ns !== '') deleteNamespace(ns)
})

describe('tun port', () => {
  it('answers the kernel ICMP echo requests with replies built by the wire layer', async () => {
    const port = await openTun({ name: 'fstun0', netns: ns })
    try {
      expect(port.info).toMatchObject({ name: 'fstun0', kind: 'tun', linkType: 'ip', mtu: 1500, queues: 1 })
      expect(port.info.offloads.vnetHdr).toBe(false)
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fstun0')
      const end = port.queues[0]
      const ping = start(ns, ['ping', '-n', '-c', '5', '-i', '0.2', '-W', '2', '198.51.100.2'])
      let replies = 0
      let exited = false
      void ping.exited.then(() => (exited = true))
      await pump(
        end,
        (packet) => {
          const index = end.alloc()
          if (index < 0) return
          const n = echoReply(packet, 0, end.buffer(index), 0)
          if (n === 0) return end.free(index)
          expect(end.send(index, n)).toBe(true)
          replies++
        },
        () => exited,
        15_000,
      )
      const result = await ping.exited
      expect(result.code).toBe(0)
      expect(result.stdout).toMatch(/5 packets transmitted, 5 received/)
      expect(replies).toBe(5)
      const c = port.counters()
      expect(c.txPackets).toBe(5)
      expect(c.rxPackets).toBeGreaterThanOrEqual(5)
      expect(c.txBytes).toBe(5 * 84)
      expect(c.queues).toHaveLength(1)
      expect(c.syscalls).toBeGreaterThan(c.rxPackets)
      expect(port.errorCounters().txErrors).toBe(0)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('carries UDP both ways', async () => {
    const port = await openTun({ name: 'fstun1', netns: ns })
    try {
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fstun1')
      const end = port.queues[0]
      // kernel -> us: a kernel socket sends to an address routed into the TUN.
      const sender = execIn(ns, ['python3', '-c', "import socket;s=socket.socket(2,2);s.bind(('198.51.100.1',4000));s.sendto(b'from-kernel',('198.51.100.2',5000))"])
      expect(sender.status).toBe(0)
      let seen: ReturnType<typeof udpPayload> = null
      await pump(end, (packet) => {
        const udp = udpPayload(packet, 0)
        if (udp !== null && udp.dstPort === 5000) seen = udp
      }, () => seen !== null, 5_000)
      expect(seen).not.toBeNull()
      expect(Buffer.from(seen!.payload).toString()).toBe('from-kernel')
      expect(seen!.srcPort).toBe(4000)
      expect(seen!.src).toBe(ip4('198.51.100.1'))

      // us -> kernel: a kernel socket receives what we write.
      const receiver = start(ns, udpReceiverScript('198.51.100.1', 6000))
      await receiver.printed('ready')
      const freeBefore = end.freeCount()
      const index = await allocBuffer(end)
      const n = udpPacket(end.buffer(index), 0, ip4('198.51.100.2'), 7000, ip4('198.51.100.1'), 6000, Buffer.from('from-flowstack'))
      expect(end.send(index, n)).toBe(true)
      end.flush()
      const result = await receiver.exited
      expect(result.stdout).toContain('from-flowstack 198.51.100.2 7000')
      // The buffer comes back through txReturn once written.
      for (let i = 0; i < 100 && end.freeCount() < freeBefore; i++) {
        await end.waitForBuffers(20)
        end.reclaim()
      }
      expect(end.freeCount()).toBe(freeBefore)
      expect(port.counters()).toMatchObject({ txPackets: 1, txBytes: n })
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('returns every buffer when closed while traffic flows both ways', async () => {
    const port = await openTun({ name: 'fstun2', netns: ns, txQueueLen: 4096 })
    ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fstun2')
    const end = port.queues[0]
    // A kernel flood into the TUN that we only partly consume ...
    const flood = start(ns, ['python3', '-c', "import socket,time\ns=socket.socket(2,2)\nt=time.time()+3\nwhile time.time()<t:\n  s.sendto(b'x'*200,('198.51.100.2',9))"])
    let received = 0
    await pump(end, () => void received++, () => received >= 200, 5_000)
    expect(received).toBeGreaterThanOrEqual(200)
    // ... and a burst of our own packets still queued when we close.
    let queued = 0
    for (let i = 0; i < 300; i++) {
      const index = end.alloc()
      if (index < 0) break
      const n = udpPacket(end.buffer(index), 0, ip4('198.51.100.2'), 7000, ip4('198.51.100.1'), 9, Buffer.from('burst'))
      if (!end.send(index, n)) {
        end.free(index)
        break
      }
      queued++
    }
    end.flush()
    expect(queued).toBeGreaterThan(100)
    await port.close()
    flood.child.kill('SIGKILL')
    await flood.exited
    const pool = port.poolCheck()
    expect(pool).toMatchObject({ full: true, heldByUser: 0 })
    expect(pool.free).toBe(pool.total)
  })

  it('with dropOnOverflow, counts pool-empty drops instead of pausing', async () => {
    const port = await openTun({ name: 'fstun9', netns: ns, dropOnOverflow: true, channel: { bufferCount: 16, ringCapacity: 16 } })
    try {
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fstun9')
      const end = port.queues[0]
      const held: number[] = []
      const sender = execIn(ns, ['python3', '-c', "import socket\ns=socket.socket(2,2)\nfor i in range(40): s.sendto(b'q',('198.51.100.2',9))"])
      expect(sender.status).toBe(0)
      // Keep every buffer: side A has 8, so at least 32 of the 40 datagrams are dropped by us.
      const deadline = Date.now() + 5_000
      while (port.counters().rxPackets + port.counters().drops.poolEmpty < 40 && Date.now() < deadline) {
        await end.waitForWork(20)
        end.receive(16, (index) => void held.push(index))
      }
      end.receive(16, (index) => void held.push(index))
      const c = port.counters()
      expect(held.length).toBe(8)
      expect(c.rxPackets).toBe(8)
      expect(c.drops.poolEmpty).toBeGreaterThanOrEqual(32)
      expect(port.errorCounters().rxStalls).toBe(0)
      for (const index of held) end.release(index)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('spreads flows over IFF_MULTI_QUEUE queues, one I/O thread each', async () => {
    const port = await openTun({ name: 'fstun7', netns: ns, queues: 3 })
    try {
      expect(port.info.queues).toBe(3)
      expect(port.queues).toHaveLength(3)
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fstun7')
      const flows = 150
      const sent = execIn(ns, ['python3', '-c', `import socket\nfor i in range(${flows}):\n  s=socket.socket(2,2); s.bind(('198.51.100.1',20000+i)); s.sendto(b'flow',('198.51.100.2',9)); s.close()`])
      expect(sent.status).toBe(0)
      const perQueue = [0, 0, 0]
      const deadline = Date.now() + 8_000
      while (perQueue[0] + perQueue[1] + perQueue[2] < flows && Date.now() < deadline) {
        await Promise.race(port.queues.map((q) => q.waitForWork(50)))
        port.queues.forEach((q, i) => {
          q.receive(256, (index, length) => {
            const udp = udpPayload(q.buffer(index).subarray(0, length), 0)
            if (udp !== null && udp.dstPort === 9) perQueue[i]++
            q.release(index)
          })
          q.flush()
        })
      }
      expect(perQueue[0] + perQueue[1] + perQueue[2]).toBe(flows)
      expect(perQueue.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2)
      const c = port.counters()
      expect(c.queues.map((q) => q.rxPackets).reduce((a, b) => a + b, 0)).toBe(c.rxPackets)
    } finally {
      await port.close()
    }
    expect(port.poolCheck().full).toBe(true)
  })

  it('closes cleanly after its interface was deleted under it', async () => {
    const port = await openTun({ name: 'fstun8', netns: ns })
    const end = port.queues[0]
    ip('-n', ns, 'link', 'del', 'fstun8')
    // Transmitting into a detached device fails in the kernel, counted, buffer returned.
    const index = await allocBuffer(end)
    const n = udpPacket(end.buffer(index), 0, ip4('198.51.100.2'), 7000, ip4('198.51.100.1'), 9, Buffer.from('gone'))
    expect(end.send(index, n)).toBe(true)
    end.flush()
    const deadline = Date.now() + 5_000
    while (port.errorCounters().txErrors === 0 && Date.now() < deadline) await end.waitForBuffers(20)
    expect(port.errorCounters().txErrors).toBe(1)
    await port.close()
    expect(port.poolCheck().full).toBe(true)
  })

  it('reports stable error codes', async () => {
    const first = await openTun({ name: 'fstun3', netns: ns })
    try {
      await expect(openTun({ name: 'fstun3', netns: ns })).rejects.toMatchObject({ code: 'PORT_BUSY' })
    } finally {
      await first.close()
    }
    await expect(openTun({ name: 'fsmissing0', attach: true, netns: ns })).rejects.toMatchObject({ code: 'PORT_NO_DEVICE' })
    await expect(openTun({ name: 'fstun4', netns: 'fs-ntun-no-such-namespace' })).rejects.toMatchObject({ code: 'PORT_NO_DEVICE' })
    await expect(openTun({ name: 'fstun4', netns: ns, mtu: 40 })).rejects.toMatchObject({ code: 'PORT_BAD_MTU' })
    await expect(openTun({ name: 'fstun4', netns: ns, mtu: 9000 })).rejects.toMatchObject({ code: 'PORT_BAD_MTU' })
    // The TUN did not survive the failed open.
    expect(execIn(ns, ['ip', 'link', 'show', 'fstun4']).status).not.toBe(0)

    // Attach: a persistent device created by `ip tuntap` is opened, not created.
    ip('-n', ns, 'tuntap', 'add', 'dev', 'fstun5', 'mode', 'tun')
    const attached = await openTun({ name: 'fstun5', attach: true, netns: ns, mtu: 1400 })
    expect(attached.info).toMatchObject({ name: 'fstun5', mtu: 1400 })
    await attached.close()
    await attached.close() // a second close resolves
    expect(() => attached.counters()).toThrow(expect.objectContaining({ code: 'PORT_CLOSED' }))
    expect(attached.poolCheck().full).toBe(true)
    ip('-n', ns, 'tuntap', 'del', 'dev', 'fstun5', 'mode', 'tun')
  })

  it('maps a missing permission to PORT_PERMISSION', async () => {
    // An unprivileged child (uid nobody, no capabilities) cannot open /dev/net/tun.
    const script = "import('/work/main/nexus/ports/tun.ts').then(m=>m.openTun({name:'fstun6'})).then(()=>console.log('opened'),e=>console.log('code='+e.code))"
    const child = start(ns, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', '--bounding-set=-all', process.execPath, '--import', 'tsx', '-e', script.replace('/work/main', process.cwd())], 30_000)
    const result = await child.exited
    expect(result.stdout.trim()).toBe('code=PORT_PERMISSION')
  })
})
