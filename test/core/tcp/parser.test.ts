import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { SegmentParser } from '../../../stacks/core/tcp/transport.js'
import { WireError } from '../../../stacks/wire/error.js'
import { emitTcp, parseTcp, tcpHeaderLength, type TcpOptions } from '../../../stacks/wire/tcp.js'

const pseudo = { version: 4 as const, src: 0xc6336401, dst: 0xc6336402 }
const u32 = fc.integer({ min: 0, max: 0xffffffff })
const u16 = fc.integer({ min: 0, max: 0xffff })

const optionsArb: fc.Arbitrary<TcpOptions> = fc.record(
  {
    mss: u16,
    windowScale: fc.integer({ min: 0, max: 14 }),
    sackPermitted: fc.constant(true),
    timestamp: fc.tuple(u32, u32),
    sack: fc.array(fc.tuple(u32, u32), { minLength: 1, maxLength: 3 }),
  },
  { requiredKeys: [] },
).filter((o) => tcpHeaderLength({ options: o }) <= 60)

function build(repr: { srcPort: number; dstPort: number; seq: number; ack: number; flags: number; window: number; options: TcpOptions }, payload: Uint8Array): Uint8Array {
  const full = { ...repr, urgentPointer: 0, payloadLength: payload.length }
  const hl = tcpHeaderLength(full)
  const bytes = new Uint8Array(hl + payload.length)
  bytes.set(payload, hl)
  emitTcp(full, bytes, 0, pseudo)
  return bytes
}

describe('the zero-allocation segment parser', () => {
  it('agrees with the wire layer on every valid segment', () => {
    const parser = new SegmentParser()
    fc.assert(
      fc.property(u16.filter((p) => p > 0), u16.filter((p) => p > 0), u32, u32, fc.integer({ min: 0, max: 255 }), u16, optionsArb, fc.uint8Array({ maxLength: 64 }), (sp, dp, seq, ack, flags, window, options, payload) => {
        const bytes = build({ srcPort: sp, dstPort: dp, seq, ack, flags, window, options }, payload)
        const wire = parseTcp(bytes, 0, bytes.length, pseudo)
        if (wire instanceof WireError) throw new Error(wire.toString())
        expect(parser.parse(bytes, bytes.length, pseudo)).toBeNull()
        const s = parser.segment
        expect([s.srcPort, s.dstPort, s.seq, s.ack, s.flags, s.window]).toEqual([wire.srcPort, wire.dstPort, wire.seq, wire.ack, wire.flags, wire.window])
        expect(JSON.parse(JSON.stringify(s.options))).toEqual(JSON.parse(JSON.stringify(wire.options)))
        expect(parser.payloadOffset).toBe(wire.payloadOffset)
        expect(parser.payloadLength).toBe(wire.payloadLength)
      }),
      { numRuns: 400 },
    )
  })

  it('never throws on truncations and bit flips; refuses exactly what the wire layer refuses', () => {
    const parser = new SegmentParser()
    fc.assert(
      fc.property(optionsArb, fc.uint8Array({ maxLength: 32 }), fc.nat(), fc.nat(), fc.boolean(), (options, payload, cut, flip, truncate) => {
        const bytes = build({ srcPort: 1000, dstPort: 80, seq: 1, ack: 2, flags: 0x10, window: 100, options }, payload)
        let mutated = bytes
        if (truncate) mutated = bytes.slice(0, cut % (bytes.length + 1))
        else mutated[flip % bytes.length] ^= 1 << flip % 8
        const ours = parser.parse(mutated, mutated.length, pseudo)
        const wire = parseTcp(mutated, 0, mutated.length, pseudo)
        expect(ours === null).toBe(!(wire instanceof WireError))
      }),
      { numRuns: 600 },
    )
  })

  it('reports the reason', () => {
    const parser = new SegmentParser()
    const good = build({ srcPort: 1, dstPort: 2, seq: 0, ack: 0, flags: 0x02, window: 0, options: { mss: 1460 } }, new Uint8Array(0))
    expect(parser.parse(good, 10, pseudo)).toBe('truncated')
    const badOffset = good.slice()
    badOffset[12] = 0x40
    expect(parser.parse(badOffset, badOffset.length, pseudo)).toBe('bad-offset')
    const badSum = good.slice()
    badSum[4] ^= 1
    expect(parser.parse(badSum, badSum.length, pseudo)).toBe('bad-checksum')
  })
})
