// Runs bench/stack.bench.ts in quick mode and checks what it reports: every
// workload for both memory-wire setups plus the TUN entry (this suite runs as
// root, where the TUN entry must not be skipped), each with a finite positive
// figure and a kernel baseline measured in the same run. No timing assertions:
// benchmarks are not tests.
import { describe, expect, it } from 'vitest'
import run from '../../bench/stack.bench.js'
import { startServers, runBulk, runConnections, runPingPong, type NetLike } from '../../bench/stack-roles.js'
import * as nodeNet from 'node:net'
import { execFileSync } from 'node:child_process'

describe('bench/stack', () => {
  it('reports every workload for both setups next to a kernel baseline', async () => {
    const results = await run({ quick: true })
    const names = results.map((r) => r.name)
    const expected: [string, string, string][] = []
    for (const where of ['same thread', 'two workers']) {
      expected.push(
        [`stack TCP bulk, memory wire, ${where}`, 'Gbit/s', 'node:net over kernel loopback'],
        [`stack TCP 64 B ping-pong, memory wire, ${where}`, 'round trips/s', 'node:net over kernel loopback'],
        [`stack TCP connections (4 in flight), memory wire, ${where}`, 'connections/s', 'node:net over kernel loopback'],
      )
    }
    expected.push(
      ['stack TCP bulk to a kernel socket through TUN', 'Gbit/s', 'kernel to kernel over veth (iperf3)'],
      ['stack TCP bulk from a kernel socket through TUN', 'Gbit/s', 'kernel to kernel over veth (iperf3)'],
    )
    expect(names).toEqual(expected.map(([name]) => name))
    for (const [i, [, unit, baseline]] of expected.entries()) {
      const result = results[i]
      expect(result.unit).toBe(unit)
      expect(result.baseline).toBe(baseline)
      expect(result.higherIsBetter).toBe(true)
      expect(Number.isFinite(result.value) && result.value > 0).toBe(true)
      expect(Number.isFinite(result.baselineValue) && result.baselineValue > 0).toBe(true)
    }
    // Both memory-wire setups compare against the one loopback figure of this run.
    expect(results[0].baselineValue).toBe(results[3].baselineValue)
    expect(results[6].baselineValue).toBe(results[7].baselineValue)
    const leftovers = execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    expect(leftovers).not.toContain('fs-sbench-')
  }, 60_000)

  it('workloads fail loudly instead of reporting a figure when the peer never answers', async () => {
    // A sink that reads but never answers at EOF: the bulk run must reject at its deadline.
    const silent = nodeNet.createServer((socket) => socket.on('data', () => {}))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    const port = (silent.address() as nodeNet.AddressInfo).port
    const net: NetLike = {
      createServer: nodeNet.createServer as unknown as NetLike['createServer'],
      connect: (options) => nodeNet.connect({ host: options.host, port }) as unknown as ReturnType<NetLike['connect']>,
    }
    try {
      await expect(runBulk(net, '127.0.0.1', 1 << 20, 300)).rejects.toThrow(/did not finish within 300 ms/)
    } finally {
      silent.close()
    }
  })

  it('counts round trips and connections against real servers', async () => {
    const net = nodeNet as unknown as NetLike
    const servers = await startServers(net, '127.0.0.1')
    try {
      expect(await runPingPong(net, '127.0.0.1', 50, 10, 40)).toBeGreaterThan(0)
      expect(await runConnections(net, '127.0.0.1', 5_000, 2, 6)).toBeGreaterThan(0)
      expect(await runBulk(net, '127.0.0.1', 100_000, 5_000)).toBeGreaterThan(0)
    } finally {
      await servers.close()
    }
  })
})
