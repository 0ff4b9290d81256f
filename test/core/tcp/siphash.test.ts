import { describe, expect, it } from 'vitest'
import { SipKey, sipHash24, sipResult } from '../../../stacks/core/tcp/siphash.js'

// Reference vectors from the SipHash paper / reference implementation:
// key = 00 01 .. 0f, message = 00 01 .. (n-1).
const key = new SipKey(Uint8Array.from({ length: 16 }, (_, i) => i))
function hashOfPrefix(n: number): string {
  const msg = Uint8Array.from({ length: n }, (_, i) => i)
  sipHash24(key, msg)
  return sipResult.high.toString(16).padStart(8, '0') + sipResult.low.toString(16).padStart(8, '0')
}

describe('SipHash-2-4', () => {
  it('matches the reference vector for the empty message', () => {
    expect(hashOfPrefix(0)).toBe('726fdb47dd0e0e31')
  })
  it('matches the paper\'s 15-byte example (Appendix A)', () => {
    expect(hashOfPrefix(15)).toBe('a129ca6149be45e5')
  })
  it('depends on every byte and on the length', () => {
    const seen = new Set<string>()
    for (let n = 0; n <= 40; n++) seen.add(hashOfPrefix(n))
    expect(seen.size).toBe(41)
  })
})
