/**
 * The pluggable congestion-control interface. The connection detects events
 * (new ACKs, the third duplicate ACK, partial ACKs, timeouts) and keeps the
 * loss-recovery bookkeeping (RFC 6582's `recover`); the algorithm owns only
 * cwnd and ssthresh. All sizes are in bytes.
 */
export interface CongestionControl {
  readonly name: string
  /** Congestion window. */
  readonly cwnd: number
  /** Slow-start threshold. */
  readonly ssthresh: number
  /** Called once the connection is synchronized and its send MSS is known. */
  init(mss: number, now: number): void
  /** New data acknowledged outside loss recovery. */
  onAck(ackedBytes: number, mss: number, now: number): void
  /** Third duplicate ACK: fast retransmit starts (RFC 5681 §3.2 steps 2-3). */
  onFastRetransmit(flightSize: number, mss: number, now: number): void
  /** A further duplicate ACK during fast recovery (RFC 5681 §3.2 step 4). */
  onRecoveryDupAck(mss: number, now: number): void
  /** An ACK that advances SND.UNA but not past `recover` (RFC 6582 §3.2 step 5). */
  onPartialAck(ackedBytes: number, mss: number, now: number): void
  /** The ACK that covers `recover`: fast recovery ends (RFC 6582 §3.2 step 6). */
  onRecoveryExit(flightSize: number, mss: number, now: number): void
  /** Retransmission timeout (RFC 5681 §3.1, eq. 4). */
  onTimeout(flightSize: number, mss: number, now: number): void
  /** The effective MSS changed (PMTU): rescale windows kept in segments. */
  onMssChange(oldMss: number, newMss: number): void
}

export type CongestionControlFactory = () => CongestionControl
