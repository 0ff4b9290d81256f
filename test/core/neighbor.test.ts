import { describe, expect, it } from 'vitest'
import { NeighborCache, DEFAULT_NEIGHBOR_CONFIG, type NeighborEntry } from '../../stacks/core/neighbor.js'
import type { IpAddress } from '../../stacks/core/contracts.js'

const A: IpAddress = { version: 4, v4: 0xc6336401 }
const MAC1 = new Uint8Array([2, 0, 0, 0, 0, 1])
const MAC2 = new Uint8Array([2, 0, 0, 0, 0, 2])

function harness(config = DEFAULT_NEIGHBOR_CONFIG) {
  const log: string[] = []
  const sent: Uint8Array[] = []
  const failed: Uint8Array[] = []
  const cache = new NeighborCache(config, {
    solicit: (e: NeighborEntry, unicast: boolean, now: number) => log.push(`${now}:${unicast ? 'unicast' : 'multicast'}`),
    resolved: (e: NeighborEntry) => sent.push(...e.pending),
    failed: (e: NeighborEntry) => failed.push(...e.pending),
    random: () => 0.5, // ReachableTime factor 1.0
  })
  return { cache, log, sent, failed }
}

describe('NeighborCache (RFC 4861 §7.3 state machine, also used for ARP)', () => {
  it('queues while INCOMPLETE, retransmits every RetransTimer, flushes on reply', () => {
    const { cache, log, sent } = harness()
    expect(cache.resolve(A, new Uint8Array([1]), 0)).toBe('queued')
    expect(cache.resolve(A, new Uint8Array([2]), 10)).toBe('queued')
    expect(log).toEqual(['0:multicast'])
    expect(cache.nextTimeout()).toBe(1000)
    cache.poll(1000)
    expect(log).toEqual(['0:multicast', '1000:multicast'])
    expect(cache.lookupForSend(A, 1500)).toBeNull()
    cache.learn(A, MAC1, true, true, false, 1500)
    expect(sent.map((p) => p[0])).toEqual([1, 2])
    const e = cache.lookupForSend(A, 1500)!
    expect(e.state).toBe('reachable')
    expect(e.mac).toEqual(MAC1)
  })

  it('bounds the pending queue, replacing the oldest (RFC 4861 §7.2.2), and the bytes held overall', () => {
    const { cache, sent } = harness({ ...DEFAULT_NEIGHBOR_CONFIG, maxPendingPerEntry: 8, maxPendingBytes: 20 })
    for (let i = 0; i < 12; i++) cache.resolve(A, new Uint8Array([i]), 0)
    expect(cache.counters.pendingDrops).toBe(4)
    expect(cache.pendingByteCount).toBe(8)
    expect(cache.resolve({ version: 4, v4: 7 }, new Uint8Array(13), 0)).toBe('no-buffer')
    cache.learn(A, MAC1, true, true, false, 5)
    expect(sent.map((p) => p[0])).toEqual([4, 5, 6, 7, 8, 9, 10, 11])
    expect(cache.pendingByteCount).toBe(0)
  })

  it('fails after MAX_MULTICAST_SOLICIT and hands back the queued packets', () => {
    const { cache, log, failed } = harness()
    cache.resolve(A, new Uint8Array([9]), 0)
    for (let t = 1000; t <= 3000; t += 1000) cache.poll(t)
    expect(log).toEqual(['0:multicast', '1000:multicast', '2000:multicast'])
    expect(failed.map((p) => p[0])).toEqual([9])
    expect(cache.size).toBe(0)
    expect(cache.counters.resolutionFailures).toBe(1)
  })

  it('REACHABLE → STALE → DELAY on use → PROBE with unicast solicitations → gone', () => {
    const { cache, log } = harness()
    cache.learn(A, MAC1, true, true, true, 0)
    cache.poll(29_999)
    expect(cache.get(A)!.state).toBe('reachable')
    cache.poll(30_000)
    expect(cache.get(A)!.state).toBe('stale')
    expect(cache.lookupForSend(A, 31_000)!.state).toBe('delay')
    cache.poll(36_000)
    expect(cache.get(A)!.state).toBe('probe')
    cache.poll(37_000)
    cache.poll(38_000)
    expect(log).toEqual(['36000:unicast', '37000:unicast', '38000:unicast'])
    cache.poll(39_000)
    expect(cache.get(A)).toBeNull()
  })

  it('a confirmation in PROBE returns to REACHABLE; O=0 with another MAC only marks STALE', () => {
    const { cache } = harness()
    cache.learn(A, MAC1, true, true, true, 0)
    const g = cache.generation
    cache.learn(A, MAC2, true, false, false, 10)
    expect(cache.get(A)!.state).toBe('stale')
    expect(cache.get(A)!.mac).toEqual(MAC1)
    expect(cache.generation).toBe(g)
    cache.learn(A, MAC2, false, true, false, 20)
    expect(cache.get(A)!.mac).toEqual(MAC2)
    expect(cache.generation).toBeGreaterThan(g)
    cache.lookupForSend(A, 30)
    cache.poll(5030)
    expect(cache.get(A)!.state).toBe('probe')
    cache.learn(A, MAC2, true, false, false, 5100)
    expect(cache.get(A)!.state).toBe('reachable')
  })

  it('a solicitation from an unknown neighbour creates a STALE entry; unsolicited replies do not create', () => {
    const { cache } = harness()
    cache.learn(A, MAC1, false, true, false, 0)
    expect(cache.get(A)).toBeNull()
    cache.learn(A, MAC1, false, false, true, 0)
    expect(cache.get(A)!.state).toBe('stale')
    cache.poll(60_000)
    expect(cache.get(A)).toBeNull()
  })
})
