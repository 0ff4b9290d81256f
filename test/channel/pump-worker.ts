// Worker used by the cross-thread channel tests: one end of a channel that
// either produces a numbered stream of packets or consumes and checks it.
// Every packet carries its sequence number in the descriptor (aux), at the
// start of its buffer, and a checksum of it at the end of its length, so loss,
// duplication, reordering and torn buffers are all visible.
import { parentPort, workerData } from 'node:worker_threads'
import { attachChannel, DESC_VNET_HDR, type ChannelSide } from '../../nexus/channel/index.js'

export interface PumpConfig {
  sab: SharedArrayBuffer
  side: ChannelSide
  role: 'producer' | 'consumer'
  count: number
  seed: number
  maxBatch: number
  /** Probability (0..1) of pausing after a batch, and the longest pause in microseconds. */
  pauseChance: number
  pauseMaxMicros: number
  /** Give up (and report) after this many milliseconds. */
  deadlineMs: number
  /**
   * Timeout for each doorbell wait; undefined waits for the doorbell alone, so
   * a lost wake-up hangs the worker and the test's watchdog fails the test.
   */
  waitTimeoutMs?: number
}

export interface PumpResult {
  role: 'producer' | 'consumer'
  done: number
  errors: string[]
  counters: ReturnType<ReturnType<typeof attachChannel>['counters']>
  accounting: ReturnType<ReturnType<typeof attachChannel>['poolAccounting']>
  ownedAtStart: number
  sleeps: number
  sequenceSum: number
}

/** mulberry32: small seeded PRNG, so a failing run can be replayed. */
function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

export function checksumOf(seq: number): number {
  return (Math.imul(seq ^ 0x5bd1e995, 0x9e3779b1) ^ (seq >>> 13)) >>> 0
}

export function lengthOf(seq: number, bufferSize: number): number {
  // Odd sequence numbers go with DESC_VNET_HDR, which needs room for its 12-byte header.
  return 12 + (checksumOf(seq) % (bufferSize - 12))
}

function putU32(b: Uint8Array, at: number, v: number): void {
  b[at] = v
  b[at + 1] = v >>> 8
  b[at + 2] = v >>> 16
  b[at + 3] = v >>> 24
}

function getU32(b: Uint8Array, at: number): number {
  return (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0
}

const sleepWord = new Int32Array(new SharedArrayBuffer(4))
function pauseMicros(us: number): void {
  // A synchronous sleep: the peer must find the ring empty (or the pool
  // exhausted) and go to sleep on the doorbell.
  Atomics.wait(sleepWord, 0, 0, us / 1000)
}

async function produce(cfg: PumpConfig): Promise<PumpResult> {
  const end = attachChannel(cfg.sab, cfg.side)
  const ownedAtStart = end.freeCount()
  const rand = prng(cfg.seed)
  const errors: string[] = []
  const deadline = Date.now() + cfg.deadlineMs
  let seq = 0
  let sleeps = 0
  let sum = 0
  while (seq < cfg.count && errors.length === 0) {
    let batch = 1 + (rand() % cfg.maxBatch)
    if (batch > cfg.count - seq) batch = cfg.count - seq
    for (let queued = 0; queued < batch; ) {
      const index = end.alloc()
      if (index < 0) {
        if (Date.now() > deadline) {
          errors.push(`producer timed out at ${seq}`)
          break
        }
        sleeps++
        await end.waitForBuffers(cfg.waitTimeoutMs)
        continue
      }
      const b = end.buffer(index)
      const length = lengthOf(seq, end.bufferSize)
      putU32(b, 0, seq)
      putU32(b, length - 4, checksumOf(seq))
      if (!end.send(index, length, seq & 1 ? DESC_VNET_HDR : 0, seq)) {
        end.free(index)
        end.flush()
        await new Promise<void>((resolve) => setImmediate(resolve))
        continue
      }
      sum = (sum + seq) % 0x7fffffff
      seq++
      queued++
    }
    end.flush()
    if (cfg.pauseChance > 0 && rand() / 0x100000000 < cfg.pauseChance) pauseMicros(rand() % (cfg.pauseMaxMicros + 1))
  }
  // Wait for every buffer to come home through the return ring.
  while (end.freeCount() < ownedAtStart && Date.now() < deadline) {
    end.reclaim()
    if (end.freeCount() < ownedAtStart) await end.waitForBuffers(200)
  }
  const result: PumpResult = {
    role: 'producer',
    done: seq,
    errors,
    counters: end.counters(),
    accounting: end.poolAccounting(),
    ownedAtStart,
    sleeps,
    sequenceSum: sum,
  }
  end.close()
  return result
}

async function consume(cfg: PumpConfig): Promise<PumpResult> {
  const end = attachChannel(cfg.sab, cfg.side, {
    onCorrupt: (info) => errors.push(`corrupt descriptor: ${info.reasonName} index ${info.bufferIndex}`),
  })
  const ownedAtStart = end.freeCount()
  const rand = prng(cfg.seed ^ 0xa5a5a5a5)
  const errors: string[] = []
  const deadline = Date.now() + cfg.deadlineMs
  const bufferSize = end.bufferSize
  let expected = 0
  let sleeps = 0
  let sum = 0
  const visit = (index: number, length: number, flags: number, aux: number): void => {
    const b = end.buffer(index)
    const seq = expected >>> 0
    if (errors.length < 10) {
      if (aux !== seq) errors.push(`descriptor ${expected}: aux ${aux}`)
      else if (getU32(b, 0) !== seq) errors.push(`descriptor ${expected}: buffer says ${getU32(b, 0)}`)
      else if (length !== lengthOf(seq, bufferSize)) errors.push(`descriptor ${expected}: length ${length}`)
      else if (getU32(b, length - 4) !== checksumOf(seq)) errors.push(`descriptor ${expected}: bad checksum`)
      else if (flags !== (seq & 1 ? DESC_VNET_HDR : 0)) errors.push(`descriptor ${expected}: flags ${flags}`)
    }
    sum = (sum + seq) % 0x7fffffff
    expected++
    end.release(index)
  }
  while (expected < cfg.count && errors.length === 0) {
    const n = end.receive(1 + (rand() % cfg.maxBatch), visit)
    if (n === 0) {
      if (end.peerClosed || Date.now() > deadline) {
        errors.push(`consumer stopped at ${expected}: ${end.peerClosed ? 'peer closed' : 'timed out'}`)
        break
      }
      sleeps++
      await end.waitForWork(cfg.waitTimeoutMs)
    } else if (cfg.pauseChance > 0 && rand() / 0x100000000 < cfg.pauseChance) {
      end.flush()
      pauseMicros(rand() % (cfg.pauseMaxMicros + 1))
    }
  }
  end.flush()
  // With a return ring smaller than the pool, some releases wait until the
  // producer reclaims; keep flushing until they are all handed back.
  while (end.returnBacklog() > 0 && Date.now() < deadline) {
    await new Promise<void>((resolve) => setTimeout(resolve, 1))
    end.flush()
  }
  const result: PumpResult = {
    role: 'consumer',
    done: expected,
    errors,
    counters: end.counters(),
    accounting: end.poolAccounting(),
    ownedAtStart,
    sleeps,
    sequenceSum: sum,
  }
  end.close()
  return result
}

const cfg = workerData as PumpConfig
const run = cfg.role === 'producer' ? produce(cfg) : consume(cfg)
run.then(
  (result) => parentPort!.postMessage(result),
  (err: unknown) => parentPort!.postMessage({ role: cfg.role, done: -1, errors: [String((err as Error)?.stack ?? err)] }),
)
