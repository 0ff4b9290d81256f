// The allocation-free parsers (one reused Repr each) give exactly what the
// allocating parse functions give, whatever came before: state from a
// previous packet (options, SACK blocks, fragment headers) never leaks.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { KERNEL_FRAMES } from '../fixtures/wire/kernel-frames.js'
import { SYNTHETIC_FRAMES } from '../fixtures/wire/synthetic-frames.js'
import {
  Ipv4Parser,
  Ipv6Parser,
  parseIpv4,
  parseIpv6,
  parseTcp,
  parseUdp,
  TcpParser,
  UdpParser,
  WireError,
  type IpPseudoHeader,
  type ParseOptions,
} from '../../stacks/wire/index.js'
import { dissectFrame, fromHex } from './dissect.js'

interface Sample {
  bytes: Uint8Array
  ipOffset: number
  ipLength: number
}

const SAMPLES: Sample[] = [...KERNEL_FRAMES, ...SYNTHETIC_FRAMES].map((f) => {
  const bytes = fromHex(f.hex)
  const eth = dissectFrame(bytes).ethernet!
  return { bytes, ipOffset: eth.payloadOffset, ipLength: eth.payloadLength }
})

function same(reused: unknown, fresh: unknown): void {
  if (fresh instanceof WireError) {
    expect(reused).toBeInstanceOf(WireError)
    expect((reused as WireError).reason).toBe(fresh.reason)
  } else {
    // toEqual treats an undefined property like a missing one, which is the reused Repr's contract.
    expect(reused).toEqual(fresh)
  }
}

const OPTIONS: ParseOptions[] = [{}, { checksum: 'report', allowTruncated: true }]

describe('reusing parsers agree with the allocating ones', () => {
  it('on every recorded frame, in random orders and with random truncations', () => {
    const v4 = new Ipv4Parser()
    const v6 = new Ipv6Parser()
    const tcp = new TcpParser()
    const udp = new UdpParser()
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: SAMPLES.length - 1 }), fc.nat(), fc.constantFrom(...OPTIONS)), { minLength: 1, maxLength: 30 }), (sequence) => {
        for (const [index, cut, options] of sequence) {
          const { bytes, ipOffset, ipLength } = SAMPLES[index]
          const length = ipLength - (cut % 3 === 0 ? cut % (ipLength + 1) : 0)
          const version = bytes[ipOffset] >>> 4
          const freshIp = version === 6 ? parseIpv6(bytes, ipOffset, length, options) : parseIpv4(bytes, ipOffset, length, options)
          const reusedIp = version === 6 ? v6.parse(bytes, ipOffset, length, options) : v4.parse(bytes, ipOffset, length, options)
          same(reusedIp, freshIp)
          if (freshIp instanceof WireError || reusedIp instanceof WireError) continue
          const pseudo: IpPseudoHeader = freshIp
          const [at, upper, protocol] = freshIp.version === 6 ? [freshIp.upperOffset, freshIp.upperLength, freshIp.upperProtocol] : [freshIp.payloadOffset, freshIp.payloadLength, freshIp.protocol]
          const transportOptions: ParseOptions = { ...options, checksum: length < ipLength ? 'ignore' : options.checksum }
          if (protocol === 6) same(tcp.parse(bytes, at, upper, pseudo, transportOptions), parseTcp(bytes, at, upper, pseudo, transportOptions))
          if (protocol === 17) same(udp.parse(bytes, at, upper, pseudo, transportOptions), parseUdp(bytes, at, upper, pseudo, transportOptions))
        }
      }),
      { numRuns: 300 },
    )
  })

  it('return the same objects every time (no allocation per packet)', () => {
    const tcp = new TcpParser()
    const v6 = new Ipv6Parser()
    const sack = SAMPLES.find((s) => dissectFrame(s.bytes).tcp?.options.sack !== undefined)!
    const d = dissectFrame(sack.bytes)
    const first = tcp.parse(sack.bytes, d.tcp!.payloadOffset - d.tcp!.headerLength, d.tcp!.headerLength + d.tcp!.payloadLength)
    const second = tcp.parse(sack.bytes, d.tcp!.payloadOffset - d.tcp!.headerLength, d.tcp!.headerLength + d.tcp!.payloadLength)
    expect(second).toBe(first)
    expect(second).toBe(tcp.repr)
    expect(tcp.repr.options.sack).toEqual(d.tcp!.options.sack)
    const blocks = tcp.repr.options.sack
    tcp.parse(sack.bytes, d.tcp!.payloadOffset - d.tcp!.headerLength, d.tcp!.headerLength + d.tcp!.payloadLength)
    expect(tcp.repr.options.sack).toBe(blocks)
    const v6Sample = SAMPLES.find((s) => s.bytes[s.ipOffset] >>> 4 === 6)!
    const a = v6.parse(v6Sample.bytes, v6Sample.ipOffset, v6Sample.ipLength)
    const src = v6.repr.src
    const b = v6.parse(v6Sample.bytes, v6Sample.ipOffset, v6Sample.ipLength)
    expect(b).toBe(a)
    expect(v6.repr.src).toBe(src)
    // The reused Repr owns its addresses: they do not change when the packet buffer is reused.
    const before = Buffer.from(src).toString('hex')
    const scratch = v6Sample.bytes.slice()
    v6.parse(scratch, v6Sample.ipOffset, v6Sample.ipLength)
    scratch.fill(0)
    expect(Buffer.from(v6.repr.src).toString('hex')).toBe(before)
  })
})
