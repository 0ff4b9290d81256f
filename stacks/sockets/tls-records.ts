// TLS record sizing tied to the TCP connection under it. A reader can use a
// record only once all of it has arrived, so a 16 KiB record sent while the
// congestion window is ~10 segments takes two round trips before its first
// byte is usable. Small records (one MSS of payload) while the window is
// small and after idle, full 16 KiB records once the window has grown: the
// first bytes of a response leave in the first round trip, and bulk transfer
// keeps the per-record cost low.
import { performance } from 'node:perf_hooks'
import type { TLSSocket } from 'node:tls'

export const TLS_MAX_FRAGMENT = 16384
/** OpenSSL's lower bound for SSL_set_max_send_fragment. */
export const TLS_MIN_FRAGMENT = 512
/**
 * Bytes a record adds on the wire, worst case of what Node negotiates:
 * TLS 1.2 AES-GCM = 5 header + 8 explicit nonce + 16 tag; TLS 1.3 = 5 + 1
 * inner content type + 16 tag. Sizing for the larger keeps a small record
 * within one segment under both.
 */
export const TLS_RECORD_OVERHEAD = 29
/** Full records only once the window carries two of them (and that much was sent since the last restart). */
export const FULL_RECORD_WINDOW = 2 * (TLS_MAX_FRAGMENT + TLS_RECORD_OVERHEAD)
/** Idle floor: RTOs below this (fast links, memory wires) would reset after every pause of the app. */
export const MIN_IDLE_RESTART_MS = 200

/** What the sizer reads from the TCP connection. */
export interface TcpSendView {
  readonly tcpCongestionWindow: number
  readonly tcpSendMss: number
  readonly tcpRetransmitTimeout: number
}

/**
 * The sizing decision, pure: time is passed in. State is per connection:
 * `bytesSinceRestart` counts bytes handed to TLS since the connection began
 * or since it last came back from idle.
 */
export class RecordSizer {
  /** The record payload limit chosen last. */
  fragment = 0
  bytesSinceRestart = 0
  lastWriteAt = Number.NEGATIVE_INFINITY
  /** Records written at the small size, and how often the size changed (observability). */
  smallRecords = 0
  changes = 0

  /** The payload limit for the next record written at `now` (ms); call `sent` after writing. */
  next(tcp: TcpSendView, now: number): number {
    const mss = tcp.tcpSendMss
    let fragment = TLS_MAX_FRAGMENT
    if (mss > 0) {
      // RFC 5681 §4.1: after an idle period longer than an RTO the sender
      // restarts from the initial window; records restart small with it.
      if (now - this.lastWriteAt > Math.max(tcp.tcpRetransmitTimeout, MIN_IDLE_RESTART_MS)) this.bytesSinceRestart = 0
      const full = tcp.tcpCongestionWindow >= FULL_RECORD_WINDOW && this.bytesSinceRestart >= FULL_RECORD_WINDOW
      if (!full) fragment = Math.max(TLS_MIN_FRAGMENT, Math.min(TLS_MAX_FRAGMENT, mss - TLS_RECORD_OVERHEAD))
    }
    this.lastWriteAt = now
    if (fragment !== this.fragment) {
      this.fragment = fragment
      this.changes++
    }
    return fragment
  }

  sent(length: number): void {
    this.bytesSinceRestart += length
    if (this.fragment < TLS_MAX_FRAGMENT) this.smallRecords++
  }
}

type WriteCallback = (err?: Error | null) => void
type Chunk = Buffer | string
interface WritableInternals {
  _write(chunk: Chunk, encoding: BufferEncoding, callback: WriteCallback): void
  _writev?(chunks: { chunk: Chunk; encoding: BufferEncoding }[], callback: WriteCallback): void
}

/**
 * Sizes the TLS records of `tlsSocket` from the TCP connection of `tcp`.
 *
 * Why not `setMaxSendFragment`: lowering it works, but OpenSSL also lowers
 * its split_send_fragment, which Node does not expose, so raising the limit
 * again has no effect and every later record stays small. Instead the limit
 * stays at 16 KiB and, while records should be small, each write reaches
 * TLS (one SSL_write, one record) in slices of the small size, one after
 * the other; once the window has grown, writes pass through whole. The
 * methods are replaced on this one socket instance (no prototype change).
 */
export function attachRecordSizing(tlsSocket: TLSSocket, tcp: TcpSendView, now: () => number = () => performance.now()): RecordSizer {
  const sizer = new RecordSizer()
  const socket = tlsSocket as unknown as WritableInternals
  const write = socket._write

  /** Writes `data` from `offset` in record-sized slices; iterative, because the handle may complete writes synchronously. */
  const writeSized = (self: unknown, data: Buffer, callback: WriteCallback): void => {
    let offset = 0
    let syncDone = false
    let syncErr: Error | null | undefined
    let inLoop = false
    const step = (): void => {
      inLoop = true
      while (offset < data.length) {
        const fragment = sizer.next(tcp, now())
        // Full size: the rest goes in one write; OpenSSL cuts it into 16 KiB records.
        const end = fragment >= TLS_MAX_FRAGMENT ? data.length : Math.min(data.length, offset + fragment)
        const slice = offset === 0 && end === data.length ? data : data.subarray(offset, end)
        sizer.sent(end - offset)
        offset = end
        syncDone = false
        let returned = false
        write.call(self, slice, 'buffer' as BufferEncoding, (err) => {
          if (!returned) {
            syncDone = true
            syncErr = err
            return
          }
          if (err) callback(err)
          else if (!inLoop) step()
        })
        returned = true
        if (!syncDone) {
          inLoop = false
          return // the callback continues
        }
        if (syncErr) {
          inLoop = false
          callback(syncErr)
          return
        }
      }
      inLoop = false
      callback()
    }
    step()
  }

  socket._write = function (chunk, encoding, callback) {
    writeSized(this, typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk, callback)
  }
  const writev = socket._writev
  if (writev !== undefined) {
    socket._writev = function (chunks, callback) {
      if (sizer.next(tcp, now()) >= TLS_MAX_FRAGMENT) {
        let length = 0
        for (let i = 0; i < chunks.length; i++) {
          const c = chunks[i]!.chunk
          length += typeof c === 'string' ? Buffer.byteLength(c, chunks[i]!.encoding) : c.length
        }
        sizer.sent(length)
        writev.call(this, chunks, callback)
        return
      }
      // Small records: one buffer, sliced (only while the window is small, so the copy is bounded).
      const buffers = chunks.map(({ chunk, encoding }) => (typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk))
      writeSized(this, Buffer.concat(buffers), callback)
    }
  }
  return sizer
}
