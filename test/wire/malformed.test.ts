// Malformed input never throws and never reads past the bytes it was given:
// every truncation and random bit flips of valid frames either parse or come
// back as a WireError with a known reason. Reading past `length` is detected
// by parsing the same bytes once alone and once followed by random garbage:
// the results must be identical.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { KERNEL_FRAMES } from '../fixtures/wire/kernel-frames.js'
import { SYNTHETIC_FRAMES } from '../fixtures/wire/synthetic-frames.js'
import {
  ArpView,
  EthernetView,
  IcmpView,
  Ipv4View,
  Ipv6View,
  TcpView,
  UdpView,
  WIRE_ERROR_REASONS,
  WireError,
  WireErrorCounters,
  parseArp,
  parseEthernet,
  parseIcmpv4,
  parseIcmpv6,
  parseIpv4,
  parseIpv6,
  parseTcp,
  parseUdp,
  type IpPseudoHeader,
  type ParseOptions,
} from '../../stacks/wire/index.js'
import { dissectFrame, fromHex, type Dissected, type IpLayers } from './dissect.js'

const FRAMES = [...KERNEL_FRAMES, ...SYNTHETIC_FRAMES].map((f) => fromHex(f.hex))

/** Serializes a dissection to compare two runs (Uint8Array views become hex). */
function snapshot(d: Dissected | IpLayers | WireError | object): string {
  return JSON.stringify(d, (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v instanceof WireError ? { layer: v.layer, reason: v.reason, detail: v.detail } : v))
}

/** Every Repr's payload window must lie inside the bytes it came from (plain throws: this runs ~10^5 times). */
function checkBounds(value: unknown, length: number): void {
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array) return
  const record = value as Record<string, unknown>
  // (An Ipv6Repr's payloadLength is the header field, not a window: its window is upperOffset/upperLength.)
  if (typeof record.payloadOffset === 'number' && typeof record.payloadLength === 'number' && record.version !== 6) {
    if (record.payloadOffset < 0 || record.payloadLength < 0 || record.payloadOffset + record.payloadLength > length) {
      throw new Error(`payload window ${record.payloadOffset}+${record.payloadLength} outside ${length} bytes`)
    }
  }
  if (typeof record.upperOffset === 'number' && typeof record.upperLength === 'number') {
    if (record.upperLength < 0 || record.upperOffset + record.upperLength > length) {
      throw new Error(`upper window ${record.upperOffset}+${record.upperLength} outside ${length} bytes`)
    }
  }
  for (const v of Object.values(record)) checkBounds(v, length)
}

function checkError(d: Dissected | IpLayers): void {
  for (const layers of [d, d.inner]) {
    if (layers?.error !== undefined) {
      expect(layers.error).toBeInstanceOf(WireError)
      expect(WIRE_ERROR_REASONS).toContain(layers.error.reason)
    }
  }
}

const OPTION_SETS: ParseOptions[] = [{}, { checksum: 'report' }, { checksum: 'ignore', allowTruncated: true }]
const V4: IpPseudoHeader = { version: 4, src: 0xc6336402, dst: 0xc6336401 }
const V6: IpPseudoHeader = { version: 6, src: new Uint8Array(16).fill(1), dst: new Uint8Array(16).fill(2) }

/** Runs every parser and view directly at offset 0 of the bytes (not only where a frame would put them). */
function everyParser(bytes: Uint8Array, length: number): unknown[] {
  const out: unknown[] = []
  for (const options of OPTION_SETS) {
    out.push(parseEthernet(bytes, 0, length), parseArp(bytes, 0, length))
    out.push(parseIpv4(bytes, 0, length, options), parseIpv6(bytes, 0, length, options), parseIcmpv4(bytes, 0, length, options))
    for (const ip of [null, V4, V6]) {
      out.push(parseUdp(bytes, 0, length, ip, options), parseTcp(bytes, 0, length, ip, options), parseIcmpv6(bytes, 0, length, ip, options))
    }
  }
  const views = { eth: new EthernetView(), arp: new ArpView(), v4: new Ipv4View(), v6: new Ipv6View(), tcp: new TcpView(), udp: new UdpView(), icmp: new IcmpView() }
  if (views.eth.reset(bytes, 0, length)) out.push(views.eth.ethertype, views.eth.payloadLength, views.eth.vlanId)
  if (views.arp.reset(bytes, 0, length)) out.push(views.arp.operation, views.arp.senderIp, views.arp.targetIp)
  if (views.v4.reset(bytes, 0, length)) out.push(views.v4.src, views.v4.dst, views.v4.protocol, views.v4.payloadLength, views.v4.fragmentOffset)
  if (views.v6.reset(bytes, 0, length)) {
    out.push(views.v6.upperProtocol, views.v6.upperOffset, views.v6.fragmentOffset, views.v6.upperLength)
    if (views.v6.upperOffset > length) throw new Error('ipv6 view upper offset past the end')
  }
  if (views.tcp.reset(bytes, 0, length)) out.push(views.tcp.seq, views.tcp.ack, views.tcp.flags, views.tcp.headerLength)
  if (views.udp.reset(bytes, 0, length)) out.push(views.udp.srcPort, views.udp.length)
  if (views.icmp.reset(bytes, 0, length)) out.push(views.icmp.type, views.icmp.identifier)
  for (const v of out) {
    if (typeof v === 'number' && Number.isNaN(v)) throw new Error('a view read past the buffer (NaN)')
    checkBounds(v, length)
  }
  return out
}

/** Returns whether the frame was refused with an error. */
function assertContained(bytes: Uint8Array, garbage: Uint8Array, everyLayerAtZero = true, compareWithGarbage = true): boolean {
  // Alone: exactly the bytes given.
  const alone = bytes.slice()
  const d = dissectFrame(alone)
  checkError(d)
  checkBounds(d, alone.length)
  if (!compareWithGarbage) return d.error !== undefined
  // Followed by garbage in the same buffer: identical results, so nothing past the end was read.
  const padded = new Uint8Array(bytes.length + garbage.length)
  padded.set(bytes)
  padded.set(garbage, bytes.length)
  const view = padded.subarray(0, bytes.length)
  const first = snapshot(d)
  const second = snapshot(dissectFrame(view))
  if (first !== second) expect(second).toBe(first)
  if (everyLayerAtZero) {
    const direct = snapshot(everyParser(alone, alone.length))
    const directPadded = snapshot(everyParser(padded, bytes.length))
    if (direct !== directPadded) expect(directPadded).toBe(direct)
  }
  return d.error !== undefined
}

describe('malformed input', () => {
  it('every truncation of every recorded frame parses or returns a WireError', () => {
    let errors = 0
    const garbage = Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff)
    for (const frame of FRAMES) {
      for (let length = 0; length <= frame.length; length++) {
        const cut = frame.subarray(0, length)
        // Every cut is dissected; the garbage comparison and every parser at offset 0 run on the
        // short cuts (where the headers end) and a sample of the long ones, to keep the suite quick.
        const near = length <= 160 || frame.length - length <= 16
        if (assertContained(cut, garbage, length <= 96 || length % 61 === 0, near || length % 7 === 0)) errors++
      }
    }
    // Truncations must actually have been refused somewhere.
    expect(errors).toBeGreaterThan(FRAMES.length * 10)
  })

  it('random bit flips and byte overwrites of recorded frames never throw or overread', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: FRAMES.length - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })), { minLength: 1, maxLength: 6 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }),
        fc.nat(),
        fc.uint8Array({ minLength: 1, maxLength: 64 }),
        (index, flips, overwrites, cut, garbage) => {
          const frame = FRAMES[index].slice()
          for (const [where, bit] of flips) frame[where % frame.length] ^= 1 << bit
          for (const [where, value] of overwrites) frame[where % frame.length] = value
          const length = frame.length - (cut % Math.min(frame.length, 80))
          assertContained(frame.subarray(0, length), garbage)
        },
      ),
      { numRuns: 1500 },
    )
  })

  it('random bytes never throw', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 120 }), fc.uint8Array({ minLength: 1, maxLength: 16 }), (bytes, garbage) => {
        assertContained(bytes, garbage)
      }),
      { numRuns: 1000 },
    )
  })

  it('out-of-range offsets and lengths are truncation errors, not exceptions', () => {
    const bytes = FRAMES[0]
    for (const [offset, length] of [[-1, 10], [0, bytes.length + 1], [bytes.length, 1], [1.5, 10], [0, -3], [Number.NaN, 4]]) {
      for (const result of [parseEthernet(bytes, offset, length), parseArp(bytes, offset, length), parseIpv4(bytes, offset, length), parseIpv6(bytes, offset, length), parseUdp(bytes, offset, length), parseTcp(bytes, offset, length), parseIcmpv4(bytes, offset, length), parseIcmpv6(bytes, offset, length)]) {
        expect(result).toBeInstanceOf(WireError)
        expect((result as WireError).reason).toBe('truncated')
      }
    }
  })

  it('specific malformations get specific reasons', () => {
    const reason = (r: unknown): string => (r instanceof WireError ? r.reason : 'parsed')
    // IPv4: version 6 in an IPv4 parser; IHL 4; total length below the header.
    const v4 = fromHex('450000140001000040060000c6336402c6336401')
    expect(reason(parseIpv4(Uint8Array.from([0x65, ...v4.subarray(1)]), 0, 20, { checksum: 'ignore' }))).toBe('bad-version')
    expect(reason(parseIpv4(Uint8Array.from([0x44, ...v4.subarray(1)]), 0, 20, { checksum: 'ignore' }))).toBe('bad-length')
    const short = v4.slice()
    short[3] = 10
    expect(reason(parseIpv4(short, 0, 20, { checksum: 'ignore' }))).toBe('bad-length')
    expect(reason(parseIpv4(v4, 0, 20))).toBe('bad-checksum')
    // IPv4 option whose length runs past the header.
    const withOption = Uint8Array.from([0x46, ...v4.subarray(1, 20), 0x94, 0x08, 0, 0])
    withOption[3] = 24
    expect(reason(parseIpv4(withOption, 0, 24, { checksum: 'ignore' }))).toBe('option-overrun')
    // TCP: data offset 4; an MSS option of length 3; an option running past the header.
    const tcp = new Uint8Array(24)
    tcp[12] = 0x40
    expect(reason(parseTcp(tcp, 0, 24))).toBe('bad-length')
    tcp[12] = 0x60
    tcp.set([2, 3, 0, 0], 20)
    expect(reason(parseTcp(tcp, 0, 24))).toBe('bad-option')
    tcp.set([8, 10, 0, 0], 20)
    expect(reason(parseTcp(tcp, 0, 24))).toBe('option-overrun')
    tcp.set([30, 1, 0, 0], 20)
    expect(reason(parseTcp(tcp, 0, 24))).toBe('bad-option')
    // Unknown TCP options are skipped by length.
    tcp.set([30, 4, 0xaa, 0xbb], 20)
    expect(reason(parseTcp(tcp, 0, 24))).toBe('parsed')
    // UDP length field below 8, and above the datagram.
    const udp = new Uint8Array(12)
    udp[5] = 7
    expect(reason(parseUdp(udp))).toBe('bad-length')
    udp[5] = 13
    expect(reason(parseUdp(udp))).toBe('truncated')
    // IPv6: hop-by-hop after another extension header (RFC 8200 4.1).
    const v6 = new Uint8Array(40 + 16)
    v6[0] = 0x60
    v6[5] = 16
    v6[6] = 60
    v6[40] = 0
    v6[48] = 59
    expect(reason(parseIpv6(v6))).toBe('malformed')
    // NDP option of length zero (RFC 4861 4.6).
    const ns = new Uint8Array(32)
    ns[0] = 135
    ns[24] = 1
    expect(reason(parseIcmpv6(ns))).toBe('bad-option')
  })

  it('counts errors by layer and reason', () => {
    const counters = new WireErrorCounters()
    const garbage = new Uint8Array(3)
    for (let i = 0; i < 3; i++) {
      const r = parseTcp(garbage)
      if (r instanceof WireError) counters.count(r)
    }
    const r = parseIpv4(Uint8Array.from([0x65, 0, 0, 0]))
    if (r instanceof WireError) counters.count(r)
    expect(counters.get('tcp', 'truncated')).toBe(3)
    expect(counters.get('ipv4', 'bad-version')).toBe(1)
    expect(counters.snapshot()).toEqual({ 'ipv4:bad-version': 1, 'tcp:truncated': 3 })
  })
})
