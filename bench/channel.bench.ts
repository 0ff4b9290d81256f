// Shared-memory channel throughput between two worker threads: 1500-byte
// packets copied into pool buffers and passed as descriptors, one at a time
// and in batches of 32, next to MessagePort.postMessage of the same packets
// (one message per packet, and 32 packets packed into one message) measured
// in the same run.
//
// This file is also the worker: started with workerData.channelBench it plays
// one role (producer or consumer) and never exports results.
import { isMainThread, MessageChannel, type MessagePort, parentPort, type Worker, workerData } from 'node:worker_threads'
import { startWorker } from '../common/worker-url.js'
import { performance } from 'node:perf_hooks'
import { attachChannel, createChannel } from '../nexus/channel/index.js'
import type { BenchOptions, BenchResult } from './types.js'

const PACKET_BYTES = 1500
/** postMessage flow control: at most this many packets unacknowledged, like a 1024-buffer pool. */
const WINDOW = 1024

type Mode = 'channel' | 'postMessage'
interface RoleData {
  channelBench: 'producer' | 'consumer'
  mode: Mode
  batch: number
  count: number
  sab?: SharedArrayBuffer
  port?: MessagePort
}

/**
 * Times the stream on the consumer's clock, leaving out the first tenth of
 * the packets (worker start-up and JIT warm-up).
 */
class WarmClock {
  private readonly warmAt: number
  private startTime = -1
  private startCount = 0
  constructor(count: number) {
    this.warmAt = Math.floor(count / 10)
  }
  observe(received: number): void {
    if (this.startTime < 0 && received >= this.warmAt) {
      this.startTime = performance.now()
      this.startCount = received
    }
  }
  /** Packets per second since warm-up ended. */
  rate(received: number): number {
    return (received - this.startCount) / ((performance.now() - this.startTime) / 1000)
  }
}

function packetTemplate(): Uint8Array {
  const packet = new Uint8Array(PACKET_BYTES)
  for (let i = 0; i < PACKET_BYTES; i++) packet[i] = (i * 31 + 7) & 0xff
  return packet
}

async function channelProducer(data: RoleData): Promise<number> {
  const end = attachChannel(data.sab!, 'a')
  const packet = packetTemplate()
  let sent = 0
  while (sent < data.count) {
    const batch = Math.min(data.batch, data.count - sent)
    for (let k = 0; k < batch; ) {
      const index = end.alloc()
      if (index < 0) {
        await end.waitForBuffers()
        continue
      }
      end.buffer(index).set(packet)
      end.send(index, PACKET_BYTES)
      k++
    }
    end.flush()
    sent += batch
  }
  end.close()
  return sent
}

async function channelConsumer(data: RoleData): Promise<number> {
  const end = attachChannel(data.sab!, 'b')
  let received = 0
  let sink = 0
  const visit = (index: number, length: number): void => {
    // Touch the packet as a receiver would (first and last byte).
    const b = end.buffer(index)
    sink ^= b[0] ^ b[length - 1]
    end.release(index)
  }
  const clock = new WarmClock(data.count)
  while (received < data.count) {
    const n = end.receive(data.batch, visit)
    if (n === 0) await end.waitForWork()
    received += n
    clock.observe(received)
  }
  end.flush()
  if (sink === 0x1ff) console.log('') // keep `sink` observable
  return clock.rate(received)
}

async function postMessageProducer(data: RoleData): Promise<number> {
  const port = data.port!
  const packet = packetTemplate()
  let acknowledged = 0
  let waiting: (() => void) | null = null
  port.on('message', (count: number) => {
    acknowledged = count
    if (waiting !== null) waiting()
  })
  const packed = new Uint8Array(PACKET_BYTES * data.batch)
  let sent = 0
  while (sent < data.count) {
    while (sent - acknowledged >= WINDOW) await new Promise<void>((resolve) => (waiting = resolve))
    const batch = Math.min(data.batch, data.count - sent)
    if (data.batch === 1) {
      port.postMessage(packet) // structured clone: one copy per packet
    } else {
      for (let k = 0; k < batch; k++) packed.set(packet, k * PACKET_BYTES)
      port.postMessage(batch === data.batch ? packed : packed.subarray(0, batch * PACKET_BYTES))
    }
    sent += batch
  }
  port.close()
  return sent
}

function postMessageConsumer(data: RoleData): Promise<number> {
  const port = data.port!
  let received = 0
  let sink = 0
  let lastAck = 0
  const clock = new WarmClock(data.count)
  return new Promise((resolve) => {
    port.on('message', (message: Uint8Array) => {
      const packets = message.byteLength / PACKET_BYTES
      for (let k = 0; k < packets; k++) sink ^= message[k * PACKET_BYTES] ^ message[k * PACKET_BYTES + PACKET_BYTES - 1]
      received += packets
      clock.observe(received)
      if (received - lastAck >= WINDOW / 2 || received >= data.count) {
        lastAck = received
        port.postMessage(received)
      }
      if (received >= data.count) {
        if (sink === 0x1ff) console.log('')
        resolve(clock.rate(received))
      }
    })
  })
}

function startRole(data: RoleData, transfer: MessagePort[]): { worker: Worker; result: Promise<number> } {
  const worker = startWorker('./channel.bench.js', import.meta.url, { workerData: data, transferList: transfer })
  const result = new Promise<number>((resolve, reject) => {
    worker.once('message', (value: number) => resolve(value))
    worker.once('error', reject)
    worker.once('exit', (code) => reject(new Error(`channel bench ${data.channelBench} exited with ${code}`)))
  })
  return { worker, result }
}

/** Packets per second as the consumer saw them arrive (after warm-up). */
async function measure(mode: Mode, batch: number, count: number): Promise<number> {
  let producerData: RoleData
  let consumerData: RoleData
  let transfer: [MessagePort[], MessagePort[]] = [[], []]
  if (mode === 'channel') {
    const sab = createChannel({ bufferSize: 2048, bufferCount: 1024, ringCapacity: 1024, rxBufferShare: 1 })
    producerData = { channelBench: 'producer', mode, batch, count, sab }
    consumerData = { channelBench: 'consumer', mode, batch, count, sab }
  } else {
    const { port1, port2 } = new MessageChannel()
    producerData = { channelBench: 'producer', mode, batch, count, port: port1 }
    consumerData = { channelBench: 'consumer', mode, batch, count, port: port2 }
    transfer = [[port1], [port2]]
  }
  // Consumer first so it is waiting when the producer starts.
  const consumer = startRole(consumerData, transfer[1])
  await new Promise((resolve) => setTimeout(resolve, 50))
  const producer = startRole(producerData, transfer[0])
  try {
    const [, rate] = await Promise.all([producer.result, consumer.result])
    return rate
  } finally {
    await Promise.all([producer.worker.terminate(), consumer.worker.terminate()])
  }
}

export default async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const channelCount = opts.quick ? 100_000 : 1_000_000
  const singleMessageCount = opts.quick ? 30_000 : 200_000
  const packedCount = opts.quick ? 100_000 : 1_000_000
  const results: BenchResult[] = []
  const channel1 = await measure('channel', 1, channelCount)
  const post1 = await measure('postMessage', 1, singleMessageCount)
  results.push({
    name: 'channel 1500 B, batch 1 (2 workers)',
    value: channel1,
    unit: 'packets/s',
    baseline: 'postMessage, 1 packet per message',
    baselineValue: post1,
    higherIsBetter: true,
  })
  const channel32 = await measure('channel', 32, channelCount)
  const post32 = await measure('postMessage', 32, packedCount)
  results.push({
    name: 'channel 1500 B, batch 32 (2 workers)',
    value: channel32,
    unit: 'packets/s',
    baseline: 'postMessage, 32 packets packed per message',
    baselineValue: post32,
    higherIsBetter: true,
  })
  return results
}

if (!isMainThread && (workerData as Partial<RoleData> | null)?.channelBench !== undefined) {
  const data = workerData as RoleData
  const role =
    data.mode === 'channel'
      ? data.channelBench === 'producer'
        ? channelProducer(data)
        : channelConsumer(data)
      : data.channelBench === 'producer'
        ? postMessageProducer(data)
        : postMessageConsumer(data)
  void role.then((value) => parentPort!.postMessage(value))
}
