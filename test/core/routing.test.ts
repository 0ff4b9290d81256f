import { describe, expect, it } from 'vitest'
import { RoutingTable } from '../../stacks/core/routing.js'
import { TokenBucket } from '../../stacks/core/rate-limit.js'
import type { IpAddress } from '../../stacks/core/contracts.js'
import { parseIpAddress, formatIpAddress } from '../../stacks/wire/address.js'

const ip = (t: string): IpAddress => {
  const a = parseIpAddress(t)
  if (a === null) throw new Error(t)
  return a
}

describe('RoutingTable', () => {
  it('picks the longest matching prefix, v4 and v6 apart', () => {
    const t = new RoutingTable()
    t.add({ prefix: ip('0.0.0.0'), prefixLength: 0, via: ip('198.51.100.1') })
    t.add({ prefix: ip('198.51.100.0'), prefixLength: 24, source: 'connected' })
    t.add({ prefix: ip('203.0.113.0'), prefixLength: 24, via: ip('198.51.100.254') })
    t.add({ prefix: ip('203.0.113.128'), prefixLength: 25, via: ip('198.51.100.253') })
    t.add({ prefix: ip('::'), prefixLength: 0, via: ip('2001:db8::1') })
    t.add({ prefix: ip('2001:db8:1::'), prefixLength: 48, via: ip('2001:db8::fe') })

    expect(t.lookup(ip('198.51.100.7'))?.via).toBeNull()
    expect(formatIpAddress(t.lookup(ip('203.0.113.5'))!.via!)).toBe('198.51.100.254')
    expect(formatIpAddress(t.lookup(ip('203.0.113.200'))!.via!)).toBe('198.51.100.253')
    expect(formatIpAddress(t.lookup(ip('192.0.2.9'))!.via!)).toBe('198.51.100.1')
    expect(formatIpAddress(t.lookup(ip('2001:db8:1:2::3'))!.via!)).toBe('2001:db8::fe')
    expect(formatIpAddress(t.lookup(ip('2001:db8:2::3'))!.via!)).toBe('2001:db8::1')
  })

  it('has no route without a default, and prefers the lower metric at equal length', () => {
    const t = new RoutingTable()
    t.add({ prefix: ip('192.0.2.0'), prefixLength: 24, via: ip('198.51.100.9'), metric: 50 })
    t.add({ prefix: ip('192.0.2.0'), prefixLength: 24, via: ip('198.51.100.8'), metric: 10 })
    expect(t.lookup(ip('203.0.113.1'))).toBeNull()
    expect(t.lookup(ip('2001:db8::1'))).toBeNull()
    expect(formatIpAddress(t.lookup(ip('192.0.2.1'))!.via!)).toBe('198.51.100.8')
  })

  it('masks host bits, replaces same routes, expires RA routes and bumps the generation', () => {
    const t = new RoutingTable()
    const g0 = t.generation
    t.add({ prefix: ip('2001:db8:5::7'), prefixLength: 64, source: 'ra', expiresAt: 1000 })
    t.add({ prefix: ip('2001:db8:5::'), prefixLength: 64, source: 'ra', expiresAt: 5000 })
    expect(t.list()).toHaveLength(1)
    expect(formatIpAddress(t.list()[0].prefix)).toBe('2001:db8:5::')
    expect(t.generation).toBeGreaterThan(g0)
    expect(t.expire(4999)).toBe(5000)
    expect(t.lookup(ip('2001:db8:5::1'))).not.toBeNull()
    t.expire(5000)
    expect(t.lookup(ip('2001:db8:5::1'))).toBeNull()
    expect(t.remove(ip('2001:db8:5::'), 64, null, 'ra')).toBe(false)
  })
})

describe('TokenBucket', () => {
  it('allows a burst then the refill rate on the injected clock', () => {
    const b = new TokenBucket(10, 5, 0)
    let allowed = 0
    for (let i = 0; i < 20; i++) if (b.take(0)) allowed++
    expect(allowed).toBe(5)
    expect(b.take(50)).toBe(false) // half a token
    expect(b.take(100)).toBe(true) // one token per 100 ms
    expect(b.take(100)).toBe(false)
    allowed = 0
    for (let t = 200; t <= 10_000; t += 100) if (b.take(t)) allowed++
    expect(allowed).toBe(99)
  })
})
