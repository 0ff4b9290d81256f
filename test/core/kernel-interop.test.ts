// The stack core against the Linux kernel through a TAP port (Ethernet: ARP,
// NDP, DAD) and a TUN port (bare IP), each in a network namespace this test
// creates: the kernel pings us (IPv4/IPv6, with fragments both ways) and
// exchanges UDP with us. Needs root (namespaces, TAP/TUN): without it the
// test FAILS.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openTap } from '../../nexus/ports/tap.js'
import { openTun } from '../../nexus/ports/tun.js'
import type { NexusPort } from '../../nexus/ports/port.js'
import { createStackCore, type StackCore } from '../../stacks/core/stack.js'
import type { UdpEndpoint } from '../../stacks/core/udp.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, ip as ipCmd, runIn } from '../helpers/netns.js'
import { start } from '../ports/native-helpers-proc.js'
import { ChannelLink, realClock, realRandom, runShell } from './channel-link.js'
import { ip } from './harness.js'

const OUR_MAC = Uint8Array.from([0x02, 0x00, 0x5e, 0x00, 0x53, 0x12])

const UDP_CLIENT = `
import socket, sys
host, port, msg = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((host, port))
s.send(msg.encode())
try:
    print('REPLY ' + s.recv(65535).decode())
except ConnectionRefusedError:
    print('REFUSED')
except socket.timeout:
    print('TIMEOUT')
`

const UDP_SERVER = `
import socket, sys
s = socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(10)
print('ready', flush=True)
data, addr = s.recvfrom(65535)
s.sendto(data[::-1], addr)
print('echoed ' + str(len(data)), flush=True)
`

let ns = ''

beforeAll(() => {
  cleanupNamespaces('fs-core-')
  ns = createNamespace('core')
})

afterAll(() => {
  if (ns !== '') deleteNamespace(ns)
})

interface Setup {
  kind: 'tap' | 'tun'
  dev: string
  kernel4: string
  kernel6: string
  ours4: string
  ours6: string
  prefix6: number
}

const SETUPS: Setup[] = [
  { kind: 'tap', dev: 'fscore0', kernel4: '198.51.100.1', kernel6: '2001:db8::1', ours4: '198.51.100.2', ours6: '2001:db8::2', prefix6: 64 },
  { kind: 'tun', dev: 'fscore1', kernel4: '203.0.113.1', kernel6: '2001:db8:1::1', ours4: '203.0.113.2', ours6: '2001:db8:1::2', prefix6: 64 },
]

for (const setup of SETUPS) {
  describe(`stack core ↔ Linux kernel over a ${setup.kind.toUpperCase()} port`, () => {
    let port: NexusPort | null = null
    let core: StackCore
    let shell: { stop(): Promise<void> } | null = null

    beforeAll(async () => {
      port = setup.kind === 'tap' ? await openTap({ name: setup.dev, netns: ns }) : await openTun({ name: setup.dev, netns: ns })
      ipCmd('-n', ns, 'addr', 'add', `${setup.kernel4}/24`, 'dev', setup.dev)
      ipCmd('-n', ns, 'addr', 'add', `${setup.kernel6}/${setup.prefix6}`, 'dev', setup.dev, 'nodad')
      const end = port.queues[0]
      const ethernet = setup.kind === 'tap'
      core = createStackCore({
        link: new ChannelLink(end, ethernet ? 'ethernet' : 'ip', port.info.mtu, ethernet ? OUR_MAC : undefined),
        clock: realClock,
        random: realRandom,
        addresses: [`${setup.ours4}/24`, `${setup.ours6}/${setup.prefix6}`],
      })
      for (const family of [4, 6] as const) {
        let self: UdpEndpoint | null = null
        const e = core.udp.bind({ family, port: 7 }, { message: (payload, remote) => self?.send(payload, 0, payload.length, remote.address, remote.port) })
        if (typeof e === 'string') throw new Error(e)
        self = e
      }
      shell = runShell(end, core)
      // Our IPv6 addresses must pass DAD on Ethernet (≤ 1 s random delay + 1 s RetransTimer).
      const deadline = Date.now() + 5000
      while (core.addresses.some((a) => a.state === 'tentative') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    }, 20_000)

    afterAll(async () => {
      await shell?.stop()
      await port?.close()
    })

    it('has every address usable (DAD passed on Ethernet; none needed on TUN)', () => {
      expect(core.addresses.map((a) => a.state)).toEqual(setup.kind === 'tap' ? ['preferred', 'preferred', 'preferred'] : ['preferred', 'preferred'])
    })

    it('answers the kernel’s ping over IPv4 and IPv6', async () => {
      const v4 = await runIn(ns, ['ping', '-n', '-c', '3', '-i', '0.2', '-W', '2', setup.ours4])
      expect(v4.stdout).toContain('3 received')
      const v6 = await runIn(ns, ['ping', '-6', '-n', '-c', '3', '-i', '0.2', '-W', '2', setup.ours6])
      expect(v6.stdout).toContain('3 received')
      if (setup.kind === 'tap') {
        // The kernel learned our MAC from our ARP reply and our NA.
        const neigh = (await runIn(ns, ['ip', 'neigh', 'show', 'dev', setup.dev])).stdout
        expect(neigh).toContain(`${setup.ours4} lladdr 02:00:5e:00:53:12`)
        expect(neigh).toContain(`${setup.ours6} lladdr 02:00:5e:00:53:12`)
      }
      expect(core.counters.icmp.OutEchoReps).toBeGreaterThanOrEqual(3)
      expect(core.counters.icmp6.OutEchoReps).toBeGreaterThanOrEqual(3)
    }, 20_000)

    it('reassembles the kernel’s fragmented pings and fragments its replies (IPv4 and IPv6)', async () => {
      const v4 = await runIn(ns, ['ping', '-n', '-c', '2', '-i', '0.2', '-W', '2', '-s', '3000', setup.ours4])
      expect(v4.stdout).toContain('2 received')
      const v6 = await runIn(ns, ['ping', '-6', '-n', '-c', '2', '-i', '0.2', '-W', '2', '-s', '3000', setup.ours6])
      expect(v6.stdout).toContain('2 received')
      expect(core.counters.ip.ReasmOKs).toBeGreaterThanOrEqual(2)
      expect(core.counters.ip6.ReasmOKs).toBeGreaterThanOrEqual(2)
      expect(core.counters.ip.FragCreates).toBeGreaterThanOrEqual(6)
      expect(core.counters.ip6.FragCreates).toBeGreaterThanOrEqual(6)
    }, 20_000)

    it('echoes the kernel’s UDP and refuses closed ports with ICMP port unreachable', async () => {
      for (const host of [setup.ours4, setup.ours6]) {
        const echoed = await runIn(ns, ['python3', '-c', UDP_CLIENT, host, '7', `hello ${host}`])
        expect(echoed.stdout.trim()).toBe(`REPLY hello ${host}`)
        const refused = await runIn(ns, ['python3', '-c', UDP_CLIENT, host, '9999', 'anyone?'])
        expect(refused.stdout.trim()).toBe('REFUSED')
      }
      expect(core.counters.udp.NoPorts).toBeGreaterThanOrEqual(1)
      expect(core.counters.udp6.NoPorts).toBeGreaterThanOrEqual(1)
    }, 20_000)

    it('sends UDP to a kernel server and gets its answer (IPv4 and IPv6)', async () => {
      for (const [host, family] of [
        [setup.kernel4, 4],
        [setup.kernel6, 6],
      ] as const) {
        const server = start(ns, ['python3', '-c', UDP_SERVER, host, '9000'])
        await server.printed('ready')
        const replies: string[] = []
        const client = core.udp.bind({ family }, { message: (p) => replies.push(Buffer.from(p).toString()) })
        if (typeof client === 'string') throw new Error(client)
        const message = new TextEncoder().encode(`ping over IPv${family}`)
        expect(['sent', 'queued']).toContain(client.send(message, 0, message.length, ip(host), 9000))
        const done = await server.exited
        expect(done.stdout).toContain(`echoed ${message.length}`)
        const deadline = Date.now() + 3000
        while (replies.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
        expect(replies).toEqual([`ping over IPv${family}`.split('').reverse().join('')])
        client.close()
      }
    }, 20_000)
  })
}
