import type { CongestionControl } from './types.js'

/**
 * NewReno: RFC 5681 slow start / congestion avoidance with appropriate byte
 * counting, RFC 6582 fast recovery, RFC 6928 initial window of 10 segments.
 */
export class NewReno implements CongestionControl {
  readonly name = 'newreno'
  cwnd = 0
  ssthresh = 0x7fffffff
  /** Bytes acknowledged since cwnd last grew in congestion avoidance. */
  private bytesAcked = 0

  /** `initialWindow`: segments, set by the operator (TcpSettings.initial_window); 0 = RFC 6928. */
  constructor(private readonly initialWindow = 0) {}

  init(mss: number): void {
    // RFC 6928 §2: "IW = min (10*MSS, max (2*MSS, 14600))", unless the operator chose a window.
    this.cwnd = this.initialWindow > 0 ? this.initialWindow * mss : Math.min(10 * mss, Math.max(2 * mss, 14600))
    // RFC 5681 §3.1: "The initial value of ssthresh SHOULD be set arbitrarily high".
    this.ssthresh = 0x7fffffff
    this.bytesAcked = 0
  }

  onAck(ackedBytes: number, mss: number): void {
    if (this.cwnd < this.ssthresh) {
      // RFC 5681 §3.1 eq. 2: "cwnd += min (N, SMSS)".
      this.cwnd += Math.min(ackedBytes, mss)
      return
    }
    // RFC 5681 §3.1: byte counting variant of eq. 3 — grow by one SMSS once a
    // whole cwnd's worth of bytes has been acknowledged.
    this.bytesAcked += ackedBytes
    if (this.bytesAcked >= this.cwnd) {
      this.bytesAcked -= this.cwnd
      this.cwnd += mss
    }
  }

  onFastRetransmit(flightSize: number, mss: number): void {
    // RFC 5681 §3.2 step 2 (eq. 4): "ssthresh = max (FlightSize / 2, 2*SMSS)",
    // step 3: "cwnd = ssthresh + 3*SMSS".
    this.ssthresh = Math.max(Math.floor(flightSize / 2), 2 * mss)
    this.cwnd = this.ssthresh + 3 * mss
    this.bytesAcked = 0
  }

  onRecoveryDupAck(mss: number): void {
    // RFC 5681 §3.2 step 4: "cwnd MUST be incremented by SMSS" per extra duplicate ACK.
    this.cwnd += mss
  }

  onPartialAck(ackedBytes: number, mss: number): void {
    // RFC 6582 §3.2 step 5: "deflate the congestion window by the amount of
    // new data acknowledged ... If the partial ACK acknowledges at least one
    // SMSS of new data, then add back SMSS bytes".
    this.cwnd = Math.max(this.cwnd - ackedBytes, mss)
    if (ackedBytes >= mss) this.cwnd += mss
  }

  onRecoveryExit(flightSize: number, mss: number): void {
    // RFC 6582 §3.2 step 6, option 1: "Set cwnd to min (ssthresh, max(FlightSize, SMSS) + SMSS)".
    this.cwnd = Math.min(this.ssthresh, Math.max(flightSize, mss) + mss)
    this.bytesAcked = 0
  }

  onTimeout(flightSize: number, mss: number): void {
    // RFC 5681 §3.1: ssthresh per eq. 4, and "cwnd MUST be set to no more
    // than the loss window, LW, which equals 1 full-sized segment".
    this.ssthresh = Math.max(Math.floor(flightSize / 2), 2 * mss)
    this.cwnd = mss
    this.bytesAcked = 0
  }

  onMssChange(oldMss: number, newMss: number): void {
    if (oldMss <= 0 || newMss === oldMss) return
    this.cwnd = Math.max(newMss, Math.floor((this.cwnd / oldMss) * newMss))
    if (this.ssthresh !== 0x7fffffff) this.ssthresh = Math.max(2 * newMss, Math.floor((this.ssthresh / oldMss) * newMss))
  }
}

export function newReno(): CongestionControl {
  return new NewReno()
}
