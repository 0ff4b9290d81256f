// Seeded randomness for the impairment middleware. Nothing here touches
// Math.random: a run is replayed by giving the same seed.
//
// Two tools:
//  - `decisionHash(seed, stream, sequence)`: a counter-based generator. The
//    random number behind a decision is a pure function of (seed, which kind of
//    decision, packet sequence number), so enabling duplication does not change
//    which packets are lost, and a packet's fate does not depend on how many
//    random numbers earlier packets happened to consume.
//  - `Xoshiro128`: xoshiro128** (Blackman & Vigna), a small fast sequential
//    PRNG for callers that want a plain stream (tests, workload generators).

/** 32-bit integer finaliser with good avalanche ("lowbias32", C. Wellons). */
export function mix32(value: number): number {
  let x = value >>> 0
  x ^= x >>> 16
  x = Math.imul(x, 0x21f0aaad)
  x ^= x >>> 15
  x = Math.imul(x, 0x735a2d97)
  x ^= x >>> 15
  return x >>> 0
}

/**
 * A uniformly distributed u32 determined only by its inputs. `stream` keeps the
 * kinds of decision (loss, duplication, jitter, ...) independent of each other.
 * Sequence numbers above 2^32 wrap into the high word, so long runs stay unique.
 */
export function decisionHash(seed: number, stream: number, sequence: number): number {
  const low = sequence >>> 0
  const high = Math.floor(sequence / 0x1_0000_0000) >>> 0
  let h = mix32(seed ^ Math.imul(stream + 1, 0x9e3779b9))
  h = mix32(h ^ low)
  h = mix32(h ^ Math.imul(high + 0x632be5ab, 0x85ebca6b))
  return h
}

/** decisionHash mapped to [0, 1) with 32 bits of resolution. */
export function decisionUnit(seed: number, stream: number, sequence: number): number {
  return decisionHash(seed, stream, sequence) / 0x1_0000_0000
}

/** xoshiro128**: 128 bits of state, period 2^128 - 1, seeded through splitmix32. */
export class Xoshiro128 {
  private s0 = 0
  private s1 = 0
  private s2 = 0
  private s3 = 0

  constructor(seed: number) {
    let z = seed >>> 0
    const next = (): number => {
      z = (z + 0x9e3779b9) >>> 0
      return mix32(z)
    }
    this.s0 = next()
    this.s1 = next()
    this.s2 = next()
    this.s3 = next()
    // The all-zero state is the one state xoshiro never leaves.
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1
  }

  /** Next uniformly distributed u32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0
    const t = this.s1 << 9
    this.s2 ^= this.s0
    this.s3 ^= this.s1
    this.s1 ^= this.s2
    this.s0 ^= this.s3
    this.s2 ^= t
    this.s3 = rotl(this.s3, 11)
    return result
  }

  /** Uniform in [0, 1). */
  nextUnit(): number {
    return this.nextU32() / 0x1_0000_0000
  }

  /** Uniform integer in [0, bound) for bound >= 1 (multiply-shift, bias < 2^-32 * bound). */
  nextBelow(bound: number): number {
    return Math.floor(this.nextUnit() * bound)
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0
}
