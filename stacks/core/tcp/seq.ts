/**
 * TCP sequence-number arithmetic modulo 2^32 (RFC 9293 §3.4: "all arithmetic
 * dealing with sequence numbers must be performed modulo 2**32"). Comparisons
 * use the signed 32-bit difference, so they are correct while the two numbers
 * are less than 2^31 apart — the windows TCP allows guarantee that.
 */
export function seqAdd(seq: number, n: number): number {
  return (seq + n) >>> 0
}

/** Signed distance a - b, in [-2^31, 2^31). */
export function seqDiff(a: number, b: number): number {
  return (a - b) | 0
}

export function seqLt(a: number, b: number): boolean {
  return ((a - b) | 0) < 0
}

export function seqLe(a: number, b: number): boolean {
  return ((a - b) | 0) <= 0
}

export function seqGt(a: number, b: number): boolean {
  return ((a - b) | 0) > 0
}

export function seqGe(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0
}

export function seqMax(a: number, b: number): number {
  return seqGt(a, b) ? a : b
}

export function seqMin(a: number, b: number): number {
  return seqLt(a, b) ? a : b
}

/** lo <= x < hi, modulo 2^32. */
export function seqInWindow(x: number, lo: number, hi: number): boolean {
  return seqLe(lo, x) && seqLt(x, hi)
}
