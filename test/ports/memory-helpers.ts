// Shared helpers for the memory port and impairment tests.
import { setImmediate as tick } from 'node:timers/promises'
import type { ChannelEnd } from '../../nexus/channel/index.js'
import type { MemoryPoolReport } from '../../nexus/ports/memory.js'

/** Polls `condition` between event-loop turns; fails after `timeoutMs`. */
export async function until(condition: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await tick()
  }
}

/** An Ethernet frame: dst, src, ethertype 0x88b5 (IEEE local experimental), then a u32 sequence number and filler. */
export function writeFrame(buf: Uint8Array, dst: Uint8Array, src: Uint8Array, sequence: number, length: number): number {
  buf.set(dst, 0)
  buf.set(src, 6)
  buf[12] = 0x88
  buf[13] = 0xb5
  new DataView(buf.buffer, buf.byteOffset, buf.byteLength).setUint32(14, sequence)
  for (let i = 18; i < length; i++) buf[i] = (sequence + i) & 0xff
  return length
}

export function frameSequence(buf: Uint8Array): number {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getUint32(14)
}

export function frameIntact(buf: Uint8Array, length: number): boolean {
  const sequence = frameSequence(buf)
  for (let i = 18; i < length; i++) if (buf[i] !== ((sequence + i) & 0xff)) return false
  return true
}

/** Sends one frame built by `fill`; false when there was no buffer or no ring room. */
export function sendOne(end: ChannelEnd, fill: (buf: Uint8Array) => number): boolean {
  const index = end.alloc()
  if (index < 0) return false
  const length = fill(end.buffer(index))
  if (!end.send(index, length)) {
    end.free(index)
    return false
  }
  return true
}

export interface Received {
  sequence: number
  length: number
  intact: boolean
  src: string
  dst: string
}

export function hex(bytes: Uint8Array, from: number, to: number): string {
  return Array.from(bytes.subarray(from, to), (b) => b.toString(16).padStart(2, '0')).join(':')
}

/** Receives everything pending on `end`, records it and releases the buffers. */
export function drain(end: ChannelEnd, into: Received[]): number {
  return end.receive(1 << 16, (index, length) => {
    const buf = end.buffer(index)
    into.push({ sequence: frameSequence(buf), length, intact: frameIntact(buf, length), dst: hex(buf, 0, 6), src: hex(buf, 6, 12) })
    end.release(index)
  })
}

/** Pools are full again: every buffer is free on one side or the other. */
export function poolsFull(report: MemoryPoolReport): boolean {
  const user = report.user
  if (user === undefined) return false
  return report.device.held === 0 && user.held === 0 && report.device.free + user.free === report.total
}

export { startWorker } from '../../common/worker-url.js'
