// Packets per second across a memory wire between two worker threads: a
// producer worker transmits on one port, the wire's pump (this thread) copies
// each packet into the other port's pool, a consumer worker receives; batches
// of 32. Baseline, measured in the same run: MessagePort.postMessage from the
// producer worker straight to the consumer worker, 32 packets packed per
// message (the faster way to use postMessage), with the same flow-control
// window as the wire's pool.
//
// This file is also the worker: started with workerData.memoryBench it plays
// one role (producer or consumer) and never exports results.
import { isMainThread, MessageChannel, type MessagePort, parentPort, type Worker, workerData } from 'node:worker_threads'
import { startWorker } from '../common/worker-url.js'
import { performance } from 'node:perf_hooks'
import { setImmediate as yieldToEventLoop } from 'node:timers/promises'
import { attachMemoryPort, createMemoryWire, type MemoryPortHandle } from '../nexus/ports/memory.js'
import { impair } from '../nexus/middleware/impair.js'
import type { NexusPort } from '../nexus/ports/port.js'
import type { BenchOptions, BenchResult } from './types.js'

const BATCH = 32
const WINDOW = 512

type Mode = 'wire' | 'postMessage'
interface RoleData {
  memoryBench: 'producer' | 'consumer'
  mode: Mode
  size: number
  count: number
  handle?: MemoryPortHandle
  port?: MessagePort
}

function now(): number {
  return performance.timeOrigin + performance.now()
}

function packetTemplate(size: number): Uint8Array {
  const packet = new Uint8Array(size)
  for (let i = 0; i < size; i++) packet[i] = (i * 31 + 7) & 0xff
  return packet
}

async function wireProducer(data: RoleData): Promise<number> {
  const port = attachMemoryPort(data.handle!)
  const end = port.queues[0]
  const packet = packetTemplate(data.size)
  const start = now()
  let sent = 0
  while (sent < data.count) {
    const batch = Math.min(BATCH, data.count - sent)
    let k = 0
    while (k < batch) {
      const index = end.alloc()
      if (index < 0) {
        end.flush()
        await end.waitForBuffers(100)
        continue
      }
      end.buffer(index).set(packet)
      if (!end.send(index, data.size)) {
        end.free(index)
        end.flush()
        await end.waitForBuffers(100)
        continue
      }
      k++
    }
    end.flush()
    sent += batch
  }
  return start
}

async function wireConsumer(data: RoleData): Promise<number> {
  const port = attachMemoryPort(data.handle!)
  const end = port.queues[0]
  let received = 0
  let sink = 0
  const visit = (index: number, length: number): void => {
    const b = end.buffer(index)
    sink ^= b[0] ^ b[length - 1]
    end.release(index)
  }
  while (received < data.count) {
    const n = end.receive(BATCH, visit)
    if (n === 0) await end.waitForWork(100)
    received += n
  }
  const finished = now()
  await port.close()
  if (sink === 0x1ff) console.log('') // keep `sink` observable
  return finished
}

async function postMessageProducer(data: RoleData): Promise<number> {
  const port = data.port!
  const packet = packetTemplate(data.size)
  let acknowledged = 0
  let waiting: (() => void) | null = null
  port.on('message', (count: number) => {
    acknowledged = count
    if (waiting !== null) waiting()
  })
  const packed = new Uint8Array(data.size * BATCH)
  const start = now()
  let sent = 0
  while (sent < data.count) {
    while (sent - acknowledged >= WINDOW) await new Promise<void>((resolve) => (waiting = resolve))
    const batch = Math.min(BATCH, data.count - sent)
    for (let k = 0; k < batch; k++) packed.set(packet, k * data.size)
    port.postMessage(batch === BATCH ? packed : packed.subarray(0, batch * data.size))
    sent += batch
  }
  port.close()
  return start
}

function postMessageConsumer(data: RoleData): Promise<number> {
  const port = data.port!
  let received = 0
  let sink = 0
  let lastAck = 0
  return new Promise((resolve) => {
    port.on('message', (message: Uint8Array) => {
      const packets = message.byteLength / data.size
      for (let k = 0; k < packets; k++) sink ^= message[k * data.size] ^ message[k * data.size + data.size - 1]
      received += packets
      if (received - lastAck >= WINDOW / 2 || received >= data.count) {
        lastAck = received
        port.postMessage(received)
      }
      if (received >= data.count) {
        if (sink === 0x1ff) console.log('')
        resolve(now())
      }
    })
  })
}

function startRole(data: RoleData, transfer: MessagePort[]): { worker: Worker; result: Promise<number> } {
  const worker = startWorker('./memory.bench.js', import.meta.url, { workerData: data, transferList: transfer })
  const result = new Promise<number>((resolve, reject) => {
    worker.once('message', (time: number) => resolve(time))
    worker.once('error', reject)
    worker.once('exit', (code) => reject(new Error(`memory bench ${data.memoryBench} exited with ${code}`)))
  })
  return { worker, result }
}

async function measure(mode: Mode, size: number, count: number): Promise<number> {
  let producerData: RoleData
  let consumerData: RoleData
  let transfer: [MessagePort[], MessagePort[]] = [[], []]
  let closeWire = async (): Promise<void> => {}
  if (mode === 'wire') {
    const [a, b] = createMemoryWire({ linkType: 'ip', channel: { bufferCount: 1024, ringCapacity: 1024 } })
    producerData = { memoryBench: 'producer', mode, size, count, handle: a.transfer() }
    consumerData = { memoryBench: 'consumer', mode, size, count, handle: b.transfer() }
    closeWire = async () => {
      await Promise.all([a.close(), b.close()])
    }
  } else {
    const { port1, port2 } = new MessageChannel()
    producerData = { memoryBench: 'producer', mode, size, count, port: port1 }
    consumerData = { memoryBench: 'consumer', mode, size, count, port: port2 }
    transfer = [[port1], [port2]]
  }
  const consumer = startRole(consumerData, transfer[1])
  await new Promise((resolve) => setTimeout(resolve, 50))
  const producer = startRole(producerData, transfer[0])
  try {
    const [start, finish] = await Promise.all([producer.result, consumer.result])
    return count / ((finish - start) / 1000)
  } finally {
    await Promise.all([producer.worker.terminate(), consumer.worker.terminate()])
    await closeWire()
  }
}

/**
 * Everything in this thread: send on `from`, receive on `to`, the pumps in
 * between. Packets per second through the whole chain (the CPU cost of the
 * wire plus whatever wraps it), in bursts of 256.
 */
async function measureInThread(from: NexusPort, to: NexusPort, size: number, count: number, dropped: () => number = () => 0): Promise<number> {
  const tx = from.queues[0]
  const rx = to.queues[0]
  const packet = packetTemplate(size)
  const release = (index: number): void => rx.release(index)
  let sent = 0
  let received = 0
  const start = performance.now()
  const deadline = start + 30_000
  // Done when every packet sent was either received or dropped on purpose.
  while (received + dropped() < count && performance.now() < deadline) {
    for (let k = 0; k < 256 && sent < count; k++) {
      const index = tx.alloc()
      if (index < 0) break
      tx.buffer(index).set(packet)
      if (!tx.send(index, size)) {
        tx.free(index)
        break
      }
      sent++
    }
    tx.flush()
    await yieldToEventLoop()
    received += rx.receive(1024, release)
  }
  return received / ((performance.now() - start) / 1000)
}

export default async function run(opts: BenchOptions): Promise<BenchResult[]> {
  const count = opts.quick ? 50_000 : 500_000
  const results: BenchResult[] = []
  for (const size of [64, 1500]) {
    const wire = await measure('wire', size, count)
    const post = await measure('postMessage', size, count)
    results.push({
      name: `memory wire ${size} B, batch ${BATCH} (2 workers + pump)`,
      value: wire,
      unit: 'packets/s',
      baseline: `postMessage worker to worker, ${BATCH} packets packed per message`,
      baselineValue: post,
      higherIsBetter: true,
    })
  }
  {
    // Impairment overhead: 1% seeded loss (every packet still goes through the
    // model, a copy and the departure heap) versus the bare wire, one thread.
    const threadCount = opts.quick ? 100_000 : 1_000_000
    const [a, b] = createMemoryWire({ linkType: 'ip' })
    const bare = await measureInThread(a, b, 64, threadCount)
    await Promise.all([a.close(), b.close()])
    const [c, d] = createMemoryWire({ linkType: 'ip' })
    const impaired = impair(c, { seed: 1, tx: { loss: 0.01 } })
    const through = await measureInThread(impaired, d, 64, threadCount, () => impaired.impairCounters().tx.lost)
    await Promise.all([impaired.close(), d.close()])
    results.push({
      name: 'impair(loss 1%) + memory wire 64 B, one thread',
      value: through,
      unit: 'packets/s',
      baseline: 'bare memory wire, one thread',
      baselineValue: bare,
      higherIsBetter: true,
    })
  }
  return results
}

if (!isMainThread && (workerData as Partial<RoleData> | null)?.memoryBench !== undefined) {
  const data = workerData as RoleData
  const role =
    data.mode === 'wire'
      ? data.memoryBench === 'producer'
        ? wireProducer(data)
        : wireConsumer(data)
      : data.memoryBench === 'producer'
        ? postMessageProducer(data)
        : postMessageConsumer(data)
  void role.then((time) => parentPort!.postMessage(time))
}
