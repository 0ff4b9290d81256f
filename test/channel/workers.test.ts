// Cross-thread tests: a producer worker and a consumer worker on the two ends
// of one channel, with the main thread only as a watchdog.
import { Worker } from 'node:worker_threads'
import { afterEach, describe, expect, it } from 'vitest'
import { createChannel, type ChannelSide } from '../../nexus/channel/index.js'
import { startWorker } from '../../common/worker-url.js'
import type { PumpConfig, PumpResult } from './pump-worker.js'

const live = new Set<Worker>()
afterEach(async () => {
  await Promise.all([...live].map((w) => w.terminate()))
  live.clear()
})

function startPump(cfg: PumpConfig): Promise<PumpResult> {
  const worker = startWorker('./pump-worker.js', import.meta.url, { workerData: cfg })
  live.add(worker)
  return new Promise((resolve, reject) => {
    worker.once('message', (result: PumpResult) => resolve(result))
    worker.once('error', reject)
    worker.once('exit', (code) => reject(new Error(`${cfg.role} worker exited with ${code} before reporting`)))
  })
}

/** Runs producer and consumer; fails (instead of hanging) if they do not finish within watchdogMs. */
async function pump(
  options: Omit<PumpConfig, 'sab' | 'side' | 'role'> & { producerSide: ChannelSide; channel: Parameters<typeof createChannel>[0]; watchdogMs: number },
): Promise<{ producer: PumpResult; consumer: PumpResult; sab: SharedArrayBuffer }> {
  const sab = createChannel(options.channel)
  const { producerSide, channel: _channel, watchdogMs, ...rest } = options
  const consumerSide: ChannelSide = producerSide === 'a' ? 'b' : 'a'
  let timer: NodeJS.Timeout | undefined
  const watchdog = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`watchdog: no result within ${watchdogMs} ms (lost wake-up or deadlock)`)), watchdogMs)
  })
  try {
    const [producer, consumer] = await Promise.race([
      Promise.all([
        startPump({ ...rest, sab, side: producerSide, role: 'producer' }),
        startPump({ ...rest, sab, side: consumerSide, role: 'consumer' }),
      ]),
      watchdog,
    ])
    return { producer, consumer, sab }
  } finally {
    clearTimeout(timer)
  }
}

function expectCleanRun(run: { producer: PumpResult; consumer: PumpResult }, count: number): void {
  const { producer, consumer } = run
  expect(producer.errors).toEqual([])
  expect(consumer.errors).toEqual([])
  expect(producer.done).toBe(count)
  expect(consumer.done).toBe(count)
  // Exactly once: counted on both sides, and the sequence sums agree.
  expect(producer.counters.sent).toBe(count)
  expect(consumer.counters.received).toBe(count)
  expect(consumer.sequenceSum).toBe(producer.sequenceSum)
  expect(consumer.counters.corrupt).toBe(0)
  expect(producer.counters.corrupt).toBe(0)
  // Pools full again: the producer got every buffer back through the return
  // ring, the consumer holds nothing and has nothing left to return.
  expect(producer.accounting.free).toBe(producer.ownedAtStart)
  expect(producer.accounting.held).toBe(0)
  expect(consumer.accounting.held).toBe(0)
  expect(consumer.accounting.returnBacklog).toBe(0)
  expect(consumer.accounting.free).toBe(consumer.ownedAtStart)
  expect(producer.ownedAtStart + consumer.ownedAtStart).toBe(producer.accounting.total)
}

describe('channel across worker threads', () => {
  it('delivers 10 million descriptors in random batches exactly once and in order (rx: A -> B)', async () => {
    const count = 10_000_000
    const run = await pump({
      producerSide: 'a',
      channel: { bufferSize: 256, bufferCount: 512, ringCapacity: 256, rxBufferShare: 0.5 },
      count,
      seed: 0x5eed0001,
      maxBatch: 64,
      pauseChance: 0,
      pauseMaxMicros: 0,
      deadlineMs: 100_000,
      waitTimeoutMs: 1000,
      watchdogMs: 110_000,
    })
    expectCleanRun(run, count)
    // The return ring carried every buffer: A's 256 buffers cycled ~39 000 times each.
    expect(run.producer.counters.sent).toBeGreaterThan(run.producer.ownedAtStart * 1000)
  }, 120_000)

  it('delivers 1 million descriptors the other way (tx: B -> A) with a ring smaller than the pool', async () => {
    const count = 1_000_000
    const run = await pump({
      producerSide: 'b',
      channel: { bufferSize: 2048, bufferCount: 256, ringCapacity: 64, rxBufferShare: 0.25 },
      count,
      seed: 0x5eed0002,
      maxBatch: 100,
      pauseChance: 0,
      pauseMaxMicros: 0,
      deadlineMs: 50_000,
      waitTimeoutMs: 1000,
      watchdogMs: 55_000,
    })
    expectCleanRun(run, count)
    // 192 buffers behind a 64-slot ring: send() must have found it full.
    expect(run.producer.counters.ringFull).toBeGreaterThan(0)
  }, 60_000)

  it('loses no wake-up across thousands of stalls and resumes on both doorbells', async () => {
    const count = 300_000
    const run = await pump({
      producerSide: 'a',
      // A owns only 8 buffers, so the producer keeps running dry and sleeping
      // on the return ring while the consumer pauses; the consumer sleeps on
      // the rx ring while the producer pauses.
      channel: { bufferSize: 128, bufferCount: 16, ringCapacity: 16, rxBufferShare: 0.5 },
      count,
      seed: 0x5eed0003,
      maxBatch: 12,
      pauseChance: 0.05,
      pauseMaxMicros: 200,
      deadlineMs: 60_000,
      // No timeout: only the doorbell wakes a sleeper, so one lost wake-up
      // deadlocks both workers and the watchdog fails the test.
      waitTimeoutMs: undefined,
      watchdogMs: 60_000,
    })
    expectCleanRun(run, count)
    // Both sides slept and were woken many thousands of times (about 30 000
    // each in a typical run), each time by a doorbell the other side rang.
    expect(run.consumer.counters.wakeups).toBeGreaterThan(5000)
    expect(run.producer.counters.wakeups).toBeGreaterThan(5000)
    expect(run.producer.counters.doorbellsRung).toBeGreaterThan(5000)
    expect(run.consumer.counters.doorbellsRung).toBeGreaterThan(5000)
    // With no wait timeout, every wake-up was a doorbell: none can exceed the rings.
    expect(run.consumer.counters.wakeups).toBeLessThanOrEqual(run.producer.counters.doorbellsRung)
    expect(run.producer.counters.wakeups).toBeLessThanOrEqual(run.consumer.counters.doorbellsRung)
  }, 70_000)
})
