// Malformed input never throws out of the stack core, never leaks a TX
// buffer and never grows state past its bounds: valid frames of every kind
// the core handles, mutated and truncated at random, fed in random order.
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import {
  ETHERTYPE_IPV4,
  ETHERTYPE_IPV6,
  OUR_MAC,
  PEER_MAC,
  arpRequestFrame,
  concat,
  ethernet,
  fill,
  icmpv4Echo,
  icmpv4Message,
  icmpv6Frame,
  icmpv6Message,
  ipv4Packet,
  ipv6Packet,
  makeStack,
  udpDatagram,
  v4,
  v6,
} from './harness.js'

const P4 = v4('198.51.100.1')
const U4 = v4('198.51.100.2')
const P6 = v6('2001:db8::1')
const U6 = v6('2001:db8::2')

function corpus(): Uint8Array[] {
  const f4 = (p: Uint8Array) => ethernet(OUR_MAC, PEER_MAC, ETHERTYPE_IPV4, p)
  const f6 = (p: Uint8Array) => ethernet(OUR_MAC, PEER_MAC, ETHERTYPE_IPV6, p)
  const udp4 = udpDatagram({ version: 4, v4: P4 }, { version: 4, v4: U4 }, 1000, 7, fill(40))
  const udp6 = udpDatagram({ version: 6, v6: P6 }, { version: 6, v6: U6 }, 1000, 7, fill(40))
  const prefix = new Uint8Array(32)
  prefix.set([3, 4, 64, 0xc0, 0, 0, 1, 0, 0, 0, 0, 100], 0)
  prefix.set(v6('2001:db8:5::'), 16)
  return [
    arpRequestFrame(PEER_MAC, P4, U4),
    f4(ipv4Packet({ src: P4, dst: U4, protocol: 1 }, icmpv4Echo(8, 1, 2, fill(32)))),
    f4(ipv4Packet({ src: P4, dst: U4, protocol: 17 }, udp4)),
    f4(ipv4Packet({ src: P4, dst: U4, protocol: 17, id: 3, moreFragments: true }, udp4.subarray(0, 24))),
    f4(ipv4Packet({ src: P4, dst: U4, protocol: 17, id: 3, fragmentOffset: 24 }, udp4.subarray(24))),
    f4(ipv4Packet({ src: P4, dst: U4, protocol: 1 }, icmpv4Message(3, 4, 1200, ipv4Packet({ src: U4, dst: P4, protocol: 6 }, fill(20))))),
    f6(ipv6Packet(P6, U6, 17, udp6)),
    f6(ipv6Packet(P6, U6, 58, icmpv6Message(P6, U6, 128, 0, 7, fill(16)))),
    f6(ipv6Packet(P6, U6, 44, concat(new Uint8Array([17, 0, 0, 1, 0, 0, 0, 9]), udp6.subarray(0, 24)))),
    f6(ipv6Packet(P6, U6, 0, concat(new Uint8Array([17, 0, 0x9e, 2, 0, 0, 1, 0]), udp6))),
    icmpv6Frame(OUR_MAC, P6, v6('ff02::1:ff00:2'), 135, 0, 0, concat(U6, new Uint8Array([1, 1]), PEER_MAC)),
    icmpv6Frame(OUR_MAC, P6, U6, 136, 0, 0x60000000, concat(P6, new Uint8Array([2, 1]), PEER_MAC)),
    icmpv6Frame(OUR_MAC, v6('fe80::1'), v6('ff02::1'), 134, 0, (64 << 24) | 1800, concat(new Uint8Array(8), new Uint8Array([1, 1]), PEER_MAC, prefix)),
    f6(ipv6Packet(P6, U6, 58, icmpv6Message(P6, U6, 2, 0, 1300, ipv6Packet(U6, P6, 6, fill(40))))),
  ]
}

describe('stack core under malformed input (property)', () => {
  it('never throws, returns every TX buffer and stays within its bounds', () => {
    const frames = corpus()
    const mutation = fc.record({
      which: fc.nat(frames.length - 1),
      flips: fc.array(fc.record({ at: fc.nat(200), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 4 }),
      cut: fc.option(fc.nat(200), { nil: undefined }),
      advanceMs: fc.integer({ min: 0, max: 20_000 }),
    })
    fc.assert(
      fc.property(fc.array(mutation, { minLength: 1, maxLength: 30 }), (steps) => {
        const s = makeStack({ dad: false, reassembly: { maxDatagrams: 4, maxBytes: 8192 } })
        for (const step of steps) {
          const frame = frames[step.which].slice()
          for (const f of step.flips) frame[f.at % frame.length] = f.value
          const input = step.cut === undefined ? frame : frame.subarray(0, step.cut % (frame.length + 1))
          s.core.input(input)
          s.clock.advance(step.advanceMs)
          s.core.poll()
          expect(s.link.poolFree).toBe(64)
          expect(s.core.reassembly.activeDatagrams).toBeLessThanOrEqual(4)
          expect(s.core.reassembly.bytesHeld).toBeLessThanOrEqual(8192)
          expect(s.core.neighbors.pendingByteCount).toBeLessThanOrEqual(1024 * 1024)
        }
        s.link.take()
      }),
      { numRuns: 150 },
    )
  })
})
