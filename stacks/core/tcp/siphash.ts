/**
 * SipHash-2-4 (Aumasson & Bernstein, 2012) in pure TypeScript, on 32-bit
 * halves so it needs neither BigInt nor any allocation. Used for RFC 6528
 * ISNs and RFC 6056 ephemeral-port offsets, both keyed with a per-stack
 * secret.
 */
let v0h = 0, v0l = 0, v1h = 0, v1l = 0, v2h = 0, v2l = 0, v3h = 0, v3l = 0

function sipRound(): void {
  let lo: number, t: number
  // v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
  lo = (v0l + v1l) >>> 0
  v0h = (v0h + v1h + (lo < v0l ? 1 : 0)) >>> 0
  v0l = lo
  t = v1h
  v1h = ((v1h << 13) | (v1l >>> 19)) >>> 0
  v1l = ((v1l << 13) | (t >>> 19)) >>> 0
  v1h = (v1h ^ v0h) >>> 0
  v1l = (v1l ^ v0l) >>> 0
  t = v0h
  v0h = v0l
  v0l = t
  // v2 += v3; v3 = rotl(v3, 16); v3 ^= v2
  lo = (v2l + v3l) >>> 0
  v2h = (v2h + v3h + (lo < v2l ? 1 : 0)) >>> 0
  v2l = lo
  t = v3h
  v3h = ((v3h << 16) | (v3l >>> 16)) >>> 0
  v3l = ((v3l << 16) | (t >>> 16)) >>> 0
  v3h = (v3h ^ v2h) >>> 0
  v3l = (v3l ^ v2l) >>> 0
  // v0 += v3; v3 = rotl(v3, 21); v3 ^= v0
  lo = (v0l + v3l) >>> 0
  v0h = (v0h + v3h + (lo < v0l ? 1 : 0)) >>> 0
  v0l = lo
  t = v3h
  v3h = ((v3h << 21) | (v3l >>> 11)) >>> 0
  v3l = ((v3l << 21) | (t >>> 11)) >>> 0
  v3h = (v3h ^ v0h) >>> 0
  v3l = (v3l ^ v0l) >>> 0
  // v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
  lo = (v2l + v1l) >>> 0
  v2h = (v2h + v1h + (lo < v2l ? 1 : 0)) >>> 0
  v2l = lo
  t = v1h
  v1h = ((v1h << 17) | (v1l >>> 15)) >>> 0
  v1l = ((v1l << 17) | (t >>> 15)) >>> 0
  v1h = (v1h ^ v2h) >>> 0
  v1l = (v1l ^ v2l) >>> 0
  t = v2h
  v2h = v2l
  v2l = t
}

function readLe32(b: Uint8Array, i: number): number {
  return (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0
}

function compress(mh: number, ml: number): void {
  v3h = (v3h ^ mh) >>> 0
  v3l = (v3l ^ ml) >>> 0
  sipRound()
  sipRound()
  v0h = (v0h ^ mh) >>> 0
  v0l = (v0l ^ ml) >>> 0
}

/** A 128-bit SipHash key as four little-endian 32-bit words. */
export class SipKey {
  readonly k0l: number
  readonly k0h: number
  readonly k1l: number
  readonly k1h: number
  constructor(key: Uint8Array) {
    if (key.length !== 16) throw new RangeError('a SipHash key is 16 bytes')
    this.k0l = readLe32(key, 0)
    this.k0h = readLe32(key, 4)
    this.k1l = readLe32(key, 8)
    this.k1h = readLe32(key, 12)
  }
}

/** The 64-bit result's high and low halves of the last sipHash24 call. */
export const sipResult = { high: 0, low: 0 }

/** SipHash-2-4 of msg[0, length); returns the low 32 bits, both halves in `sipResult`. */
export function sipHash24(key: SipKey, msg: Uint8Array, length = msg.length): number {
  v0h = (key.k0h ^ 0x736f6d65) >>> 0
  v0l = (key.k0l ^ 0x70736575) >>> 0
  v1h = (key.k1h ^ 0x646f7261) >>> 0
  v1l = (key.k1l ^ 0x6e646f6d) >>> 0
  v2h = (key.k0h ^ 0x6c796765) >>> 0
  v2l = (key.k0l ^ 0x6e657261) >>> 0
  v3h = (key.k1h ^ 0x74656462) >>> 0
  v3l = (key.k1l ^ 0x79746573) >>> 0
  const whole = length - (length & 7)
  for (let i = 0; i < whole; i += 8) compress(readLe32(msg, i + 4), readLe32(msg, i))
  // Last block: the remaining bytes, and the length's low byte in the top byte.
  let ml = 0
  let mh = ((length & 0xff) << 24) >>> 0
  for (let i = whole; i < length; i++) {
    const shift = (i - whole) * 8
    if (shift < 32) ml = (ml | (msg[i] << shift)) >>> 0
    else mh = (mh | (msg[i] << (shift - 32))) >>> 0
  }
  compress(mh, ml)
  v2l = (v2l ^ 0xff) >>> 0
  sipRound()
  sipRound()
  sipRound()
  sipRound()
  sipResult.high = (v0h ^ v1h ^ v2h ^ v3h) >>> 0
  sipResult.low = (v0l ^ v1l ^ v2l ^ v3l) >>> 0
  return sipResult.low
}
