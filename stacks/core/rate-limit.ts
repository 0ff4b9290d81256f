// Token bucket on an injected clock: ICMP error rate limiting (RFC 1812
// §4.3.2.8, RFC 4443 §2.4(f): "an IPv6 node MUST limit the rate of ICMPv6
// error messages it originates"; the token bucket is the suggested method).
export class TokenBucket {
  private tokens: number
  private last: number

  /** `ratePerSecond` tokens refill per second, at most `burst` held. */
  constructor(
    readonly ratePerSecond: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst
    this.last = now
  }

  /** Take one token if available. */
  take(now: number): boolean {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) * this.ratePerSecond) / 1000)
      this.last = now
    }
    if (this.tokens >= 1) {
      this.tokens -= 1
      return true
    }
    return false
  }
}
