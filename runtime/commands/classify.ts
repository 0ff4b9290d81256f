// `flowstack classify --config CONFIG [--port NAME] FILE`: the decision the
// classifier makes for every packet of a pcap/pcapng capture, taken as
// inbound on the first port (or --port), one JSON object per line:
//   {"frame":1,"action":"instance","instance":"web","rule":"web","reason":"rule"}
// then counts per action and reason on stderr. Large captures are cut into
// chunks classified by piscina workers; ChunkMerger (classifier/replay.ts)
// stitches them so the output equals a single pass, in frame order.
import { toBinary } from '@bufbuild/protobuf'
import { once } from 'node:events'
import { availableParallelism } from 'node:os'
import { Piscina } from 'piscina'
import { FlowstackError } from '../../common/errors.js'
import { workerEntry } from '../../common/worker-url.js'
import { classifierFromConfig } from '../../classifier/build.js'
import { LinkKind } from '../../classifier/extract.js'
import { OWNER_DROP, OWNER_KERNEL } from '../../classifier/rules.js'
import { REASON_NAMES } from '../../classifier/classifier.js'
import { ChunkMerger, LINK_UNSUPPORTED, classifyChunk, type ChunkResult, type FrameDecision, type ReplayChunk } from '../../classifier/replay.js'
import type { ReplayTask } from '../../classifier/replay-worker.js'
import { CaptureFormatError, CaptureReader, FileCaptureSource, LINKTYPE_ETHERNET, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_RAW } from '../../nexus/middleware/pcap.js'
import { ConfigSchema } from '../../proto/gen/flowstack_pb.js'
import { ConfigError, formatProblem, loadConfig } from '../config/load.js'

export interface ClassifyOptions {
  config: string
  port?: string
  /** Frames per chunk; captures longer than one chunk are classified by workers. */
  chunkFrames?: number
  /** Worker threads for large captures; default min(4, cores). */
  workers?: number
  stdout?: NodeJS.WritableStream
  stderr?: NodeJS.WritableStream
}

const DEFAULT_CHUNK_FRAMES = 65536
const DEFAULT_HOLD_MS = 5000

function linkKindOf(linkType: number): number {
  if (linkType === LINKTYPE_ETHERNET) return LinkKind.Ethernet
  if (linkType === LINKTYPE_RAW || linkType === LINKTYPE_IPV4 || linkType === LINKTYPE_IPV6) return LinkKind.Ip
  return LINK_UNSUPPORTED
}

/** Reads frames into chunks of up to `size` frames. */
function* readChunks(reader: CaptureReader, size: number): Generator<ReplayChunk> {
  let firstFrame = 1
  for (;;) {
    const link = new Uint8Array(size)
    const timeMs = new Float64Array(size)
    const offsets = new Uint32Array(size + 1)
    let data = new Uint8Array(Math.min(size * 128, 1 << 24))
    let count = 0
    let used = 0
    while (count < size) {
      const packet = reader.next()
      if (packet === null) break
      if (used + packet.capturedLength > data.length) {
        const grown = new Uint8Array(Math.max(data.length * 2, used + packet.capturedLength))
        grown.set(data.subarray(0, used))
        data = grown
      }
      packet.copyTo(data, used)
      link[count] = linkKindOf(packet.linkType)
      timeMs[count] = packet.seconds * 1000 + packet.nanoseconds / 1e6
      offsets[count] = used
      used += packet.capturedLength
      count++
      offsets[count] = used
    }
    if (count === 0) return
    yield { firstFrame, count, link, timeMs, offsets, data: data.subarray(0, used) }
    firstFrame += count
    if (count < size) return
  }
}

export async function classifyCommand(file: string, options: ClassifyOptions): Promise<number> {
  const stdout = options.stdout ?? process.stdout
  const stderr = options.stderr ?? process.stderr
  let loaded
  try {
    loaded = await loadConfig(options.config)
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const problem of err.problems) stderr.write(`${formatProblem(problem)}\n`)
      return 1
    }
    throw err
  }
  const config = loaded.config
  const portIndex = options.port === undefined ? 0 : config.ports.findIndex((p) => p.name === options.port)
  if (config.ports.length === 0 || portIndex < 0) {
    stderr.write(options.port === undefined ? 'the config has no ports\n' : `no port named ${JSON.stringify(options.port)} in the config\n`)
    return 1
  }
  let reader: CaptureReader
  try {
    reader = new CaptureReader(new FileCaptureSource(file))
  } catch (err) {
    stderr.write(`cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`)
    return 1
  }
  const instanceNames = config.instances.map((i) => i.name)
  const classifier = classifierFromConfig(config, { now: () => 0 })
  const defaultOwner = classifier.ports[portIndex].defaultOwner
  const holdMs = config.classifier?.fragmentHoldMs || DEFAULT_HOLD_MS
  const merger = new ChunkMerger(holdMs, defaultOwner)
  const actionCounts = new Map<string, number>()
  const reasonCounts = new Map<string, number>()
  let frames = 0
  let pendingText = ''
  const emit = (d: FrameDecision): void => {
    const action = d.owner === OWNER_KERNEL ? 'kernel' : d.owner === OWNER_DROP ? 'drop' : 'instance'
    const reason = REASON_NAMES[d.reason]
    const rule = classifier.ruleName(d.rule)
    pendingText +=
      `{"frame":${d.frame},"action":"${action}"` +
      (action === 'instance' ? `,"instance":${JSON.stringify(instanceNames[d.owner])}` : '') +
      `,"rule":${rule === null ? 'null' : JSON.stringify(rule)},"reason":"${reason}"}\n`
    actionCounts.set(action, (actionCounts.get(action) ?? 0) + 1)
    reasonCounts.set(reason, (reasonCounts.get(reason) ?? 0) + 1)
    frames++
  }
  const flush = async (): Promise<void> => {
    if (pendingText === '') return
    const text = pendingText
    pendingText = ''
    if (!stdout.write(text)) await once(stdout, 'drain')
  }

  const chunkFrames = options.chunkFrames ?? DEFAULT_CHUNK_FRAMES
  let pool: Piscina | undefined
  try {
    const chunks = readChunks(reader, chunkFrames)
    const first = chunks.next()
    if (!first.done) {
      if (first.value.count < chunkFrames) {
        // One chunk: classify here, no worker start-up.
        const clock = { now: 0 }
        const local = classifierFromConfig(config, { now: () => clock.now, maxFlows: first.value.count + 16 })
        merger.add(first.value, classifyChunk(local, clock, first.value, portIndex), emit)
      } else {
        const entry = workerEntry('../../classifier/replay-worker.js', import.meta.url)
        const threads = Math.max(1, options.workers ?? Math.min(4, availableParallelism()))
        pool = new Piscina({ filename: entry.url.href, execArgv: entry.execArgv, minThreads: threads, maxThreads: threads })
        const configBytes = toBinary(ConfigSchema, config)
        const inFlight: Array<{ chunk: ReplayChunk; result: Promise<ChunkResult> }> = []
        const submit = (chunk: ReplayChunk): void => {
          const task: ReplayTask = { config: configBytes, portIndex, chunk }
          inFlight.push({ chunk, result: pool!.run(task) as Promise<ChunkResult> })
        }
        submit(first.value)
        for (const chunk of chunks) {
          submit(chunk)
          // Keep at most two chunks per thread queued, so memory stays bounded.
          while (inFlight.length >= threads * 2) {
            const next = inFlight.shift()!
            merger.add(next.chunk, await next.result, emit)
            await flush()
          }
        }
        while (inFlight.length > 0) {
          const next = inFlight.shift()!
          merger.add(next.chunk, await next.result, emit)
          await flush()
        }
      }
    }
    merger.finish(emit)
    await flush()
  } catch (err) {
    if (err instanceof CaptureFormatError || err instanceof FlowstackError) {
      await flush()
      stderr.write(`${file}: ${err.message}\n`)
      return 1
    }
    throw err
  } finally {
    reader.close()
    await pool?.destroy()
  }
  const list = (counts: Map<string, number>): string => [...counts].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ')
  stderr.write(`${frames} frames\nactions: ${list(actionCounts) || 'none'}\nreasons: ${list(reasonCounts) || 'none'}\n`)
  return 0
}
