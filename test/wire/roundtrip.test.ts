// Property tests: parse(emit(repr)) equals repr for random valid Reprs of
// every format, and emit(parse(bytes)) reproduces the bytes exactly.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  emitArp,
  emitEthernet,
  emitIcmpv4,
  emitIcmpv6,
  emitIpv4,
  emitIpv6,
  emitIpv6FragmentHeader,
  emitTcp,
  emitUdp,
  ethernetHeaderLength,
  icmpv6HeaderLength,
  icmpv6IsNdp,
  IPV6_EXT_FRAGMENT,
  parseArp,
  parseEthernet,
  parseIcmpv4,
  parseIcmpv6,
  parseIpv4,
  parseIpv6,
  parseTcp,
  parseUdp,
  tcpHeaderLength,
  WireError,
} from '../../stacks/wire/index.js'
import { arpRepr, ethernetRepr, icmpv4Repr, icmpv6Repr, ipv4Repr, ipv6Repr, payload, pseudoHeader, tcpRepr, u16, u32 } from './arbitraries.js'

const RUNS = { numRuns: 300 }
/** Where in a larger buffer the packet starts, so offsets are exercised too. */
const at = fc.integer({ min: 0, max: 9 })

function ok<T>(result: T | WireError): T {
  if (result instanceof WireError) throw new Error(`unexpected ${result.toString()}`)
  return result
}

/** Fills `length` bytes at `start` with a repeating pattern derived from `seed`. */
function fillPayload(bytes: Uint8Array, start: number, length: number, seed: Uint8Array): void {
  for (let i = 0; i < length; i++) bytes[start + i] = seed.length === 0 ? i & 0xff : seed[i % seed.length] ^ i
}

describe('parse(emit(repr)) === repr', () => {
  it('ethernet', () => {
    fc.assert(
      fc.property(ethernetRepr, at, payload(), (repr, offset, data) => {
        const header = ethernetHeaderLength(repr)
        const bytes = new Uint8Array(offset + header + data.length)
        bytes.set(data, offset + header)
        expect(emitEthernet(repr, bytes, offset)).toBe(header)
        const parsed = ok(parseEthernet(bytes, offset))
        expect(parsed).toEqual({ ...repr, headerLength: header, payloadOffset: offset + header, payloadLength: data.length })
        const again = new Uint8Array(bytes.length)
        again.set(data, offset + header)
        emitEthernet(parsed, again, offset)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })

  it('arp', () => {
    fc.assert(
      fc.property(arpRepr, at, (repr, offset) => {
        const bytes = new Uint8Array(offset + 28)
        expect(emitArp(repr, bytes, offset)).toBe(28)
        const parsed = ok(parseArp(bytes, offset))
        expect(parsed).toEqual(repr)
        const again = new Uint8Array(bytes.length)
        emitArp(parsed, again, offset)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })

  it('ipv4', () => {
    fc.assert(
      fc.property(ipv4Repr, at, payload(8), (repr, offset, seed) => {
        const bytes = new Uint8Array(offset + 20 + repr.payloadLength)
        fillPayload(bytes, offset + 20, repr.payloadLength, seed)
        expect(emitIpv4(repr, bytes, offset)).toBe(20)
        const parsed = ok(parseIpv4(bytes, offset))
        expect(parsed).toEqual({
          version: 4,
          ...repr,
          totalLength: 20 + repr.payloadLength,
          headerLength: 20,
          checksumValid: true,
          payloadOffset: offset + 20,
        })
        const again = bytes.slice()
        again.fill(0, offset, offset + 20)
        emitIpv4(parsed, again, offset)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })

  it('ipv6, plain and with a fragment header', () => {
    fc.assert(
      fc.property(ipv6Repr, at, fc.option(fc.record({ offset: fc.integer({ min: 0, max: 8191 }).map((n) => n * 8), moreFragments: fc.boolean(), id: u32 })), (repr, offset, fragment) => {
        const extra = fragment === null ? 0 : 8
        const fixed = { ...repr, payloadLength: repr.payloadLength + extra, nextHeader: fragment === null ? repr.nextHeader : IPV6_EXT_FRAGMENT }
        const bytes = new Uint8Array(offset + 40 + fixed.payloadLength)
        fillPayload(bytes, offset + 40 + extra, repr.payloadLength, new Uint8Array([7, 9]))
        expect(emitIpv6(fixed, bytes, offset)).toBe(40)
        if (fragment !== null) emitIpv6FragmentHeader(fragment, repr.nextHeader, bytes, offset + 40)
        const parsed = ok(parseIpv6(bytes, offset))
        const expected: Record<string, unknown> = {
          version: 6,
          ...fixed,
          extensions: fragment === null ? [] : [IPV6_EXT_FRAGMENT],
          upperProtocol: repr.nextHeader,
          upperOffset: offset + 40 + extra,
          upperLength: repr.payloadLength,
          payloadOffset: offset + 40,
        }
        if (fragment !== null) expected.fragment = fragment
        expect(parsed).toEqual(expected)
        const again = bytes.slice()
        again.fill(0, offset, offset + 40)
        emitIpv6(parsed, again, offset)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })

  it('udp with its checksum over either pseudo-header', () => {
    fc.assert(
      fc.property(u16, u16, payload(), pseudoHeader, at, (srcPort, dstPort, data, ip, offset) => {
        const repr = { srcPort, dstPort, payloadLength: data.length }
        const bytes = new Uint8Array(offset + 8 + data.length)
        bytes.set(data, offset + 8)
        expect(emitUdp(repr, bytes, offset, ip)).toBe(8)
        const parsed = ok(parseUdp(bytes, offset, 8 + data.length, ip))
        expect(parsed).toEqual({ ...repr, length: 8 + data.length, checksumValid: true, payloadOffset: offset + 8 })
        const again = bytes.slice()
        again.fill(0, offset, offset + 8)
        emitUdp(parsed, again, offset, ip)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })

  it('tcp with random options', () => {
    fc.assert(
      fc.property(tcpRepr, pseudoHeader, at, (repr, ip, offset) => {
        const header = tcpHeaderLength(repr)
        const bytes = new Uint8Array(offset + header + repr.payloadLength)
        fillPayload(bytes, offset + header, repr.payloadLength, new Uint8Array([repr.seq & 0xff]))
        expect(emitTcp(repr, bytes, offset, ip)).toBe(header)
        const parsed = ok(parseTcp(bytes, offset, header + repr.payloadLength, ip))
        expect(parsed).toEqual({ ...repr, headerLength: header, checksumValid: true, payloadOffset: offset + header })
        const again = bytes.slice()
        again.fill(0, offset, offset + header)
        emitTcp(parsed, again, offset, ip)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })

  it('icmpv4', () => {
    fc.assert(
      fc.property(icmpv4Repr, at, (repr, offset) => {
        const bytes = new Uint8Array(offset + 8 + repr.payloadLength)
        fillPayload(bytes, offset + 8, repr.payloadLength, new Uint8Array([repr.type]))
        expect(emitIcmpv4(repr, bytes, offset)).toBe(8)
        const parsed = ok(parseIcmpv4(bytes, offset))
        expect(parsed).toEqual({ ...repr, checksumValid: true, payloadOffset: offset + 8 })
        const again = bytes.slice()
        again.fill(0, offset, offset + 8)
        emitIcmpv4(parsed, again, offset)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })

  it('icmpv6 including every NDP message and option', () => {
    fc.assert(
      fc.property(icmpv6Repr, pseudoHeader, at, (repr, ip, offset) => {
        const header = icmpv6HeaderLength(repr)
        const bytes = new Uint8Array(offset + header + repr.payloadLength)
        fillPayload(bytes, offset + header, repr.payloadLength, new Uint8Array([repr.code]))
        expect(emitIcmpv6(repr, bytes, offset, ip)).toBe(header)
        const parsed = ok(parseIcmpv6(bytes, offset, header + repr.payloadLength, ip))
        const ndp = icmpv6IsNdp(repr.type)
        expect(parsed).toEqual({ ...repr, checksumValid: true, payloadOffset: ndp ? offset + header : offset + 8 })
        const again = bytes.slice()
        again.fill(0, offset, offset + header)
        emitIcmpv6(parsed, again, offset, ip)
        expect(again).toEqual(bytes)
      }),
      RUNS,
    )
  })
})

describe('checksums are checked on input', () => {
  it('a flipped bit in a TCP segment is a bad-checksum error, or reported with checksum: report', () => {
    fc.assert(
      fc.property(tcpRepr, pseudoHeader, fc.nat(), fc.integer({ min: 0, max: 7 }), (repr, ip, where, bit) => {
        const header = tcpHeaderLength(repr)
        const length = header + repr.payloadLength
        const bytes = new Uint8Array(length)
        emitTcp(repr, bytes, 0, ip)
        bytes[where % length] ^= 1 << bit
        const strict = parseTcp(bytes, 0, length, ip)
        // A flip in the data offset or options may fail earlier; otherwise the checksum catches it.
        expect(strict).toBeInstanceOf(WireError)
        const reported = parseTcp(bytes, 0, length, ip, { checksum: 'report' })
        if (!(reported instanceof WireError)) expect(reported.checksumValid).toBe(false)
        const ignored = parseTcp(bytes, 0, length, ip, { checksum: 'ignore' })
        if (!(ignored instanceof WireError)) expect(ignored.checksumValid).toBeNull()
      }),
      RUNS,
    )
  })

  it('UDP checksum 0 is "not computed" over IPv4 and invalid over IPv6 (RFC 768, RFC 8200 8.1)', () => {
    const bytes = new Uint8Array(12)
    emitUdp({ srcPort: 1, dstPort: 2, payloadLength: 4 }, bytes, 0, null)
    expect(bytes[6] | bytes[7]).toBe(0)
    const v4 = ok(parseUdp(bytes, 0, 12, { version: 4, src: 0xc6336402, dst: 0xc6336401 }))
    expect(v4.checksumValid).toBeNull()
    const v6 = parseUdp(bytes, 0, 12, { version: 6, src: new Uint8Array(16), dst: new Uint8Array(16) })
    expect(v6).toBeInstanceOf(WireError)
    expect((v6 as WireError).reason).toBe('bad-checksum')
  })

  it('a UDP checksum that computes to 0 is sent as 0xffff', () => {
    // Find a payload word that makes the one's complement sum 0xffff.
    const ip = { version: 4 as const, src: 0xc6336402, dst: 0xc6336401 }
    const bytes = new Uint8Array(10)
    emitUdp({ srcPort: 1000, dstPort: 2000, payloadLength: 2 }, bytes, 0, ip)
    const checksum = (bytes[6] << 8) | bytes[7]
    // Adding `checksum` as payload drives the sum to 0xffff, so the computed checksum becomes 0.
    bytes[8] = checksum >>> 8
    bytes[9] = checksum & 0xff
    emitUdp({ srcPort: 1000, dstPort: 2000, payloadLength: 2 }, bytes, 0, ip)
    expect((bytes[6] << 8) | bytes[7]).toBe(0xffff)
    expect(ok(parseUdp(bytes, 0, 10, ip)).checksumValid).toBe(true)
  })
})
