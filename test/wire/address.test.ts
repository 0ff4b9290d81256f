import fc from 'fast-check'
import { isIPv6 } from 'node:net'
import { describe, expect, it } from 'vitest'
import {
  formatIpAddress,
  formatIpv4Address,
  formatIpv6Address,
  formatMac,
  ipAddressEquals,
  ipv6MulticastMac,
  parseCidr,
  parseIpAddress,
  parseIpv4Address,
  parseIpv6Address,
  parseMac,
  solicitedNodeAddress,
} from '../../stacks/wire/index.js'

describe('IPv4 addresses', () => {
  it('parses to the uint32 value', () => {
    expect(parseIpv4Address('198.51.100.2')).toBe(0xc6336402)
    expect(parseIpv4Address('0.0.0.0')).toBe(0)
    expect(parseIpv4Address('255.255.255.255')).toBe(0xffffffff)
    expect(formatIpv4Address(0xc6336402)).toBe('198.51.100.2')
  })
  it('rejects malformed text', () => {
    for (const bad of ['', '1.2.3', '1.2.3.4.5', '256.1.1.1', '01.2.3.4', '1.2.3.-4', '1.2.3.4 ', 'a.b.c.d', '1..2.3', '0x1.2.3.4']) {
      expect(parseIpv4Address(bad), bad).toBeNull()
    }
  })
  it('round-trips every value', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), (n) => {
        expect(parseIpv4Address(formatIpv4Address(n))).toBe(n)
      }),
    )
  })
})

describe('IPv6 addresses (RFC 4291 text, RFC 5952 canonical form)', () => {
  const canonical: [string, string][] = [
    ['2001:db8:0:0:0:0:2:1', '2001:db8::2:1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed (RFC 5952 4.2.2)
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of equal runs (4.2.3)
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // longest run (4.2.3)
    ['2001:DB8::AbCd', '2001:db8::abcd'], // lowercase (4.3)
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::', 'fe80::'],
    ['::ffff:192.0.2.1', '::ffff:192.0.2.1'], // IPv4-mapped keeps the dotted quad (section 5)
    ['0:0:0:0:0:ffff:c000:0201', '::ffff:192.0.2.1'],
    ['64:ff9b::192.0.2.33', '64:ff9b::c000:221'],
  ]
  for (const [text, expected] of canonical) {
    it(`${text} -> ${expected}`, () => {
      const bytes = parseIpv6Address(text)
      expect(bytes).not.toBeNull()
      expect(formatIpv6Address(bytes!)).toBe(expected)
    })
  }
  it('rejects malformed text', () => {
    for (const bad of ['', ':', ':::', '1::2::3', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7', '12345::', 'g::1', '::1.2.3', '::1.2.3.4.5', '1:2:3:4:5:6:7:8::', 'fe80::1%eth0', '::ffff:256.1.1.1']) {
      expect(parseIpv6Address(bad), bad).toBeNull()
    }
  })
  it('round-trips random addresses, and agrees with node:net on validity', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 16, maxLength: 16 }), (bytes) => {
        const text = formatIpv6Address(bytes)
        expect(isIPv6(text)).toBe(true)
        expect(parseIpv6Address(text)).toEqual(bytes)
      }),
      { numRuns: 1000 },
    )
  })
  it('round-trips addresses dense in zeros (compression edge cases)', () => {
    const group = fc.constantFrom(0, 0, 0, 1, 0xffff)
    fc.assert(
      fc.property(fc.array(group, { minLength: 8, maxLength: 8 }), (groups) => {
        const bytes = new Uint8Array(16)
        groups.forEach((g, i) => {
          bytes[2 * i] = g >>> 8
          bytes[2 * i + 1] = g & 0xff
        })
        const text = formatIpv6Address(bytes)
        expect(parseIpv6Address(text)).toEqual(bytes)
        expect(text).not.toMatch(/:::|(^|:)0+[0-9a-f]/)
      }),
      { numRuns: 500 },
    )
  })
})

describe('IpAddress, CIDR, MAC', () => {
  it('parses either family', () => {
    expect(parseIpAddress('198.51.100.2')).toEqual({ version: 4, v4: 0xc6336402 })
    const v6 = parseIpAddress('2001:db8::2')!
    expect(v6.version).toBe(6)
    expect(formatIpAddress(v6)).toBe('2001:db8::2')
    expect(parseIpAddress('nonsense')).toBeNull()
    expect(ipAddressEquals(v6, parseIpAddress('2001:db8:0::2')!)).toBe(true)
    expect(ipAddressEquals(v6, parseIpAddress('2001:db8::3')!)).toBe(false)
    expect(ipAddressEquals(parseIpAddress('198.51.100.2')!, v6)).toBe(false)
  })
  it('parses CIDR with range checks', () => {
    expect(parseCidr('198.51.100.0/24')).toEqual({ address: { version: 4, v4: 0xc6336400 }, prefixLength: 24 })
    expect(parseCidr('2001:db8::/32')?.prefixLength).toBe(32)
    for (const bad of ['198.51.100.0', '198.51.100.0/33', '2001:db8::/129', '198.51.100.0/-1', '198.51.100.0/024', 'x/8']) {
      expect(parseCidr(bad), bad).toBeNull()
    }
  })
  it('parses and formats MACs', () => {
    expect(parseMac('02:00:5E:10:00:01')).toEqual(Uint8Array.from([2, 0, 0x5e, 0x10, 0, 1]))
    expect(parseMac('02-00-5e-10-00-01')).toEqual(Uint8Array.from([2, 0, 0x5e, 0x10, 0, 1]))
    expect(formatMac(Uint8Array.from([2, 0, 0x5e, 0x10, 0, 0xab]))).toBe('02:00:5e:10:00:ab')
    for (const bad of ['', '02:00:5e:10:00', '02:00:5e:10:00:01:02', '02:00-5e:10:00:01', 'zz:00:5e:10:00:01']) {
      expect(parseMac(bad), bad).toBeNull()
    }
  })
  it('derives solicited-node groups and multicast MACs (RFC 4291 2.7.1, RFC 2464 7)', () => {
    const group = solicitedNodeAddress(parseIpv6Address('2001:db8::12:3456')!)
    expect(formatIpv6Address(group)).toBe('ff02::1:ff12:3456')
    expect(formatMac(ipv6MulticastMac(group))).toBe('33:33:ff:12:34:56')
  })
})
