// What every port wrapper (impairment, pcapng tap) shares: per queue of the
// wrapped port a new channel whose side B the caller gets and whose side A
// the wrapper holds next to the wrapped port's side B; a pump loop per
// direction; the totals of per-queue counters; and the drain at close that
// gives every buffer back to its pool.
//
//   user <-B- outer -A-> [rx: inner -> (wrapper work) -> outer]
//                        [tx: outer -> (wrapper work) -> inner]
import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import { attachChannel, createChannel, drainChannelEnds, type ChannelEnd } from '../channel/index.js'
import { copyEndOf, type CopyEnd } from '../ports/memory-copy.js'
import { sumQueueCounters, type NexusPort, type PortCounters, type PortQueueCounters } from '../ports/port.js'

export interface WrapperQueue {
  /** Side A of the outer channel: where the wrapper delivers RX and takes TX. */
  readonly device: ChannelEnd
  /** Side B of the outer channel: what the wrapper's user gets as the queue. */
  readonly user: ChannelEnd
  readonly innerCopy: CopyEnd
  readonly deviceCopy: CopyEnd
}

/** One outer channel per queue of `port`, at least as large as the inner one (and never under 256 buffers/slots). */
export function openWrapperQueues(port: NexusPort, bufferCount?: number): WrapperQueue[] {
  return port.queues.map((inner) => {
    const sab = createChannel({
      bufferSize: inner.bufferSize,
      bufferCount: bufferCount ?? Math.max(256, inner.bufferCount),
      ringCapacity: Math.max(256, inner.ringCapacity),
    })
    const device = attachChannel(sab, 'a')
    // The pumps serve the wrapper's user: it (its sockets, servers) decides
    // whether the process lives, not a pump waiting on either side.
    device.setWaitsKeepAlive(false)
    inner.setWaitsKeepAlive(false)
    return { device, user: attachChannel(sab, 'b'), innerCopy: copyEndOf(inner), deviceCopy: copyEndOf(device) }
  })
}

/**
 * Runs `step` until `stopped()`: `step` moves one batch and returns the
 * packets taken (> 0), 0 when the source was empty, or -1 when it is blocked
 * on destination buffers. Busy bursts yield to the event loop every 16
 * batches so timers and other pumps of this thread run; idle, it sleeps on
 * the right doorbell instead of polling.
 */
export async function runPumpLoop(step: () => number, source: ChannelEnd, destination: ChannelEnd, stopped: () => boolean): Promise<void> {
  let burst = 0
  while (!stopped()) {
    const moved = step()
    if (moved > 0) {
      if (++burst >= 16) {
        burst = 0
        await yieldToEventLoop()
      }
      continue
    }
    burst = 0
    // A peer that closed its side answers every doorbell at once: stop
    // rather than spin. The wrapper's close drains what is left.
    if (source.peerClosed || destination.peerClosed) break
    if (moved < 0) await destination.waitForBuffers()
    else await source.waitForWork()
  }
}

/** Fills `stash` from `destination`'s free buffers up to its length; returns the new count. */
export function refillStash(destination: ChannelEnd, stash: Int32Array, count: number): number {
  while (count < stash.length) {
    const index = destination.alloc()
    if (index < 0) break
    stash[count++] = index
  }
  return count
}

/** Per-queue counters and their sum; `syscalls` is the wrapped port's own (the wrapper makes none). */
export function totalCounters(perQueue: PortQueueCounters[], inner: NexusPort): PortCounters {
  const total = sumQueueCounters(perQueue)
  total.syscalls = inner.counters().syscalls
  return total
}

/**
 * After the pumps stopped: what the user never read goes back to the pool,
 * and what the user sent that nobody took goes back too (bounded rounds).
 * Call before reading the final pool accounting and closing the ends.
 */
export function drainWrapperQueues(queues: readonly WrapperQueue[]): void {
  for (const { user, device } of queues) drainChannelEnds(user, device)
}
