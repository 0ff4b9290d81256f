import { describe, expect, it } from 'vitest'
import { FULL_RECORD_WINDOW, MIN_IDLE_RESTART_MS, RecordSizer, TLS_MAX_FRAGMENT, TLS_RECORD_OVERHEAD } from '../../stacks/sockets/tls-records.js'

function tcp(cwnd: number, mss = 1448, rto = 1000) {
  return { tcpCongestionWindow: cwnd, tcpSendMss: mss, tcpRetransmitTimeout: rto }
}

describe('RecordSizer (pure, injected time)', () => {
  const small = 1448 - TLS_RECORD_OVERHEAD

  it('starts with one-MSS records and goes full once the window and the bytes sent both cover two full records', () => {
    const sizer = new RecordSizer()
    let now = 0
    // A large window alone is not enough: nothing has been sent since the start.
    expect(sizer.next(tcp(1_000_000), now)).toBe(small)
    let sent = 0
    while (sent < FULL_RECORD_WINDOW) {
      expect(sizer.next(tcp(1_000_000), (now += 1))).toBe(small)
      sizer.sent(small)
      sent += small
    }
    expect(sizer.next(tcp(1_000_000), (now += 1))).toBe(TLS_MAX_FRAGMENT)
    // A window that shrank below two records (loss) brings small records back.
    expect(sizer.next(tcp(20_000), (now += 1))).toBe(small)
    expect(sizer.changes).toBe(3)
  })

  it('restarts small after an idle period longer than the RTO (RFC 5681 §4.1), with a floor', () => {
    const sizer = new RecordSizer()
    sizer.next(tcp(1_000_000), 0)
    sizer.sent(10 * FULL_RECORD_WINDOW)
    expect(sizer.next(tcp(1_000_000, 1448, 1000), 900)).toBe(TLS_MAX_FRAGMENT)
    // 999 ms of quiet with an RTO of 1000 ms: still warm.
    expect(sizer.next(tcp(1_000_000, 1448, 1000), 1899)).toBe(TLS_MAX_FRAGMENT)
    // Longer than the RTO: small again, and the byte count restarts.
    expect(sizer.next(tcp(1_000_000, 1448, 1000), 2900)).toBe(small)
    expect(sizer.bytesSinceRestart).toBe(0)
    // A tiny RTO does not reset on every short pause: the floor applies.
    const fast = new RecordSizer()
    fast.next(tcp(1_000_000, 1448, 5), 0)
    fast.sent(10 * FULL_RECORD_WINDOW)
    expect(fast.next(tcp(1_000_000, 1448, 5), MIN_IDLE_RESTART_MS - 1)).toBe(TLS_MAX_FRAGMENT)
    expect(fast.next(tcp(1_000_000, 1448, 5), 2 * MIN_IDLE_RESTART_MS + 1)).toBe(small)
  })

  it('never goes below the OpenSSL minimum, and is full-size on a socket without TCP state', () => {
    expect(new RecordSizer().next(tcp(0, 300), 0)).toBe(512)
    expect(new RecordSizer().next(tcp(0, 0), 0)).toBe(TLS_MAX_FRAGMENT)
  })
})
