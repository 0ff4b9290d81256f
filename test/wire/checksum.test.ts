// The Internet checksum against a naive reference (RFC 1071 by the book: a
// DataView-free loop over big-endian 16-bit words), on random data with odd
// lengths, odd offsets, buffers inside larger ArrayBuffers and
// SharedArrayBuffers; chained partial sums; pseudo-headers; and RFC 1624
// incremental updates against full recomputation.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  checksumAccumulate,
  checksumFold,
  checksumUpdate16,
  checksumUpdate32,
  internetChecksum,
  pseudoHeaderSum,
  pseudoHeaderSumIpv4,
  pseudoHeaderSumIpv6,
} from '../../stacks/wire/index.js'
import { ipv6Address, u16, u32, u8 } from './arbitraries.js'

/** RFC 1071 section 4.1, in TypeScript: add 16-bit words, fold carries, complement. */
function referenceChecksum(bytes: Uint8Array, offset: number, length: number, initial = 0): number {
  let sum = initial
  for (let i = 0; i + 1 < length; i += 2) sum += (bytes[offset + i] << 8) | bytes[offset + i + 1]
  if (length % 2 === 1) sum += bytes[offset + length - 1] << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000)
  return ~sum & 0xffff
}

const backing = fc.constantFrom('plain', 'shared', 'buffer-pool')

/** The data placed at `shift` bytes into a larger buffer of the given kind. */
function place(data: Uint8Array, shift: number, kind: string): Uint8Array {
  if (kind === 'shared') {
    const out = new Uint8Array(new SharedArrayBuffer(data.length + shift + 8), shift, data.length)
    out.set(data)
    return out
  }
  if (kind === 'buffer-pool') {
    // Node's small Buffers share one pool ArrayBuffer at arbitrary byteOffsets.
    const buf = Buffer.alloc(shift + data.length)
    buf.set(data, shift)
    return buf.subarray(shift)
  }
  const out = new Uint8Array(new ArrayBuffer(data.length + shift + 8), shift, data.length)
  out.set(data)
  return out
}

describe('internet checksum', () => {
  it('matches the RFC 1071 section 3 example', () => {
    // 00 01 f2 03 f4 f5 f6 f7: the sum is ddf2, so the checksum is 220d.
    const bytes = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])
    expect(checksumFold(checksumAccumulate(bytes, 0, 8))).toBe(~0xddf2 & 0xffff)
    expect(internetChecksum(bytes, 0, 8)).toBe(0x220d)
  })

  it('equals the reference on random data at any alignment, length and backing buffer', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 1600 }), fc.integer({ min: 0, max: 7 }), fc.nat(), fc.nat(), backing, (data, shift, a, b, kind) => {
        const bytes = place(data, shift, kind)
        const offset = data.length === 0 ? 0 : a % data.length
        const length = data.length === 0 ? 0 : b % (data.length - offset + 1)
        expect(internetChecksum(bytes, offset, length)).toBe(referenceChecksum(bytes, offset, length))
      }),
      { numRuns: 2000 },
    )
  })

  it('handles long runs of 0xff (maximum carries) and 64 KiB buffers', () => {
    for (const length of [63, 64, 65, 1499, 1500, 1501, 65535, 65536]) {
      for (const shift of [0, 1, 2, 3]) {
        const bytes = place(new Uint8Array(length).fill(0xff), shift, 'plain')
        expect(internetChecksum(bytes, 0, length)).toBe(referenceChecksum(bytes, 0, length))
        bytes[length >> 1] = 0x12
        expect(internetChecksum(bytes, 0, length)).toBe(referenceChecksum(bytes, 0, length))
      }
    }
  })

  it('chains: accumulating even-length pieces equals one pass', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), fc.array(fc.nat(), { maxLength: 5 }), fc.integer({ min: 0, max: 3 }), (data, cuts, shift) => {
        const bytes = place(data, shift, 'plain')
        const points = [...new Set(cuts.map((c) => (data.length === 0 ? 0 : (c % data.length) & ~1)))].sort((x, y) => x - y)
        let sum = 0
        let start = 0
        for (const p of [...points, data.length]) {
          sum = checksumAccumulate(bytes, start, p - start, sum)
          start = p
        }
        expect(checksumFold(sum)).toBe(referenceChecksum(bytes, 0, data.length))
      }),
      { numRuns: 500 },
    )
  })

  it('a packet carrying its own checksum sums to zero', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 4, maxLength: 200 }).map((d) => (d.length % 2 === 0 ? d : d.subarray(1))), (data) => {
        const bytes = data.slice()
        bytes[2] = 0
        bytes[3] = 0
        const checksum = internetChecksum(bytes, 0, bytes.length)
        bytes[2] = checksum >>> 8
        bytes[3] = checksum & 0xff
        expect(internetChecksum(bytes, 0, bytes.length)).toBe(0)
      }),
    )
  })
})

describe('pseudo-headers', () => {
  it('IPv4 (RFC 793): equals the checksum over an explicit 12-byte pseudo-header', () => {
    fc.assert(
      fc.property(u32, u32, u8, u16, fc.uint8Array({ maxLength: 100 }), (src, dst, protocol, length, data) => {
        const pseudo = new Uint8Array(12 + data.length)
        const dv = new DataView(pseudo.buffer)
        dv.setUint32(0, src)
        dv.setUint32(4, dst)
        pseudo[9] = protocol
        dv.setUint16(10, length)
        pseudo.set(data, 12)
        const expected = referenceChecksum(pseudo, 0, pseudo.length)
        expect(internetChecksum(data, 0, data.length, pseudoHeaderSumIpv4(src, dst, protocol, length))).toBe(expected)
        expect(internetChecksum(data, 0, data.length, pseudoHeaderSum({ version: 4, src, dst }, protocol, length))).toBe(expected)
      }),
    )
  })

  it('IPv6 (RFC 8200 8.1): equals the checksum over an explicit 40-byte pseudo-header', () => {
    fc.assert(
      fc.property(ipv6Address, ipv6Address, u8, u32, fc.uint8Array({ maxLength: 100 }), (src, dst, next, length, data) => {
        const pseudo = new Uint8Array(40 + data.length)
        pseudo.set(src, 0)
        pseudo.set(dst, 16)
        new DataView(pseudo.buffer).setUint32(32, length)
        pseudo[39] = next
        pseudo.set(data, 40)
        const expected = referenceChecksum(pseudo, 0, pseudo.length)
        expect(internetChecksum(data, 0, data.length, pseudoHeaderSumIpv6(src, dst, next, length))).toBe(expected)
        expect(internetChecksum(data, 0, data.length, pseudoHeaderSum({ version: 6, src, dst }, next, length))).toBe(expected)
      }),
    )
  })
})

describe('incremental update (RFC 1624 eqn. 3)', () => {
  /** Random even-length data that is not all zero (the one case where ~0 and 0 differ, RFC 1624 section 3). */
  const data = fc.uint8Array({ minLength: 4, maxLength: 120 }).filter((d) => d.length % 2 === 0 && d.some((x) => x !== 0))

  it('changing one 16-bit word equals a full recomputation', () => {
    fc.assert(
      fc.property(data, fc.nat(), u16, (bytes, where, newWord) => {
        const at = (where % (bytes.length / 2)) * 2
        const before = internetChecksum(bytes, 0, bytes.length)
        const oldWord = (bytes[at] << 8) | bytes[at + 1]
        const changed = bytes.slice()
        changed[at] = newWord >>> 8
        changed[at + 1] = newWord & 0xff
        fc.pre(changed.some((x) => x !== 0))
        expect(checksumUpdate16(before, oldWord, newWord)).toBe(internetChecksum(changed, 0, changed.length))
      }),
      { numRuns: 1000 },
    )
  })

  it('changing a 32-bit field (sequence number, address) equals a full recomputation', () => {
    fc.assert(
      fc.property(data.filter((d) => d.length >= 8), fc.nat(), u32, (bytes, where, newValue) => {
        const at = (where % (bytes.length / 2 - 1)) * 2
        const before = internetChecksum(bytes, 0, bytes.length)
        const dv = new DataView(bytes.buffer, bytes.byteOffset)
        const oldValue = dv.getUint32(at)
        const changed = bytes.slice()
        new DataView(changed.buffer).setUint32(at, newValue)
        fc.pre(changed.some((x) => x !== 0))
        expect(checksumUpdate32(before, oldValue, newValue)).toBe(internetChecksum(changed, 0, changed.length))
      }),
      { numRuns: 1000 },
    )
  })

  it('RFC 1624 section 4 example: eqn. 3 gives 0x0000, where eqn. 2 would give 0xffff', () => {
    // HC = 0xdd2f, m = 0x5555 changed to m' = 0x3285: HC' = ~(0x22d0 + 0xaaaa + 0x3285) = 0x0000.
    expect(checksumUpdate16(0xdd2f, 0x5555, 0x3285)).toBe(0x0000)
  })
})

describe('buffers that change under the cached word view', () => {
  it('a resizable ArrayBuffer that grows after its first checksum', () => {
    const buffer = new ArrayBuffer(256, { maxByteLength: 4096 })
    const small = new Uint8Array(buffer)
    small.fill(0x11)
    expect(internetChecksum(small, 0, 256)).toBe(referenceChecksum(small, 0, 256))
    buffer.resize(4096)
    const large = new Uint8Array(buffer)
    for (let i = 0; i < large.length; i++) large[i] = (i * 7) & 0xff
    expect(internetChecksum(large, 1000, 3000)).toBe(referenceChecksum(large, 1000, 3000))
  })
})
