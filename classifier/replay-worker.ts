// Piscina worker for `flowstack classify`: classifies one chunk of a capture
// with a fresh classifier built from the (already validated) binary config.
import { fromBinary } from '@bufbuild/protobuf'
import { ConfigSchema } from '../proto/gen/flowstack_pb.js'
import { classifierFromConfig } from './build.js'
import { classifyChunk, type ChunkResult, type ReplayChunk } from './replay.js'

export interface ReplayTask {
  config: Uint8Array
  portIndex: number
  chunk: ReplayChunk
}

export default function classifyTask(task: ReplayTask): ChunkResult {
  const config = fromBinary(ConfigSchema, task.config)
  const clock = { now: 0 }
  const classifier = classifierFromConfig(config, { now: () => clock.now, maxFlows: task.chunk.count + 16 })
  return classifyChunk(classifier, clock, task.chunk, task.portIndex)
}
