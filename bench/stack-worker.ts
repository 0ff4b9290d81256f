// One stack in its own worker thread, for bench/stack.bench.ts: it attaches
// the memory port handed over in workerData, creates a stack on it, and then
// obeys the commands the main thread posts (start the servers, run one
// workload, close), answering each with one message.
import { parentPort, workerData } from 'node:worker_threads'
import { attachMemoryPort, type MemoryPortHandle } from '../nexus/ports/memory.js'
import { createStack } from '../stacks/sockets/stack.js'
import { runBulk, runConnections, runPingPong, startServers, type BenchServers, type NetLike } from './stack-roles.js'

export interface StackWorkerData {
  handle: MemoryPortHandle
  address: string
}

export type StackWorkerCommand =
  | { cmd: 'serve' }
  | { cmd: 'bulk'; host: string; bytes: number; timeoutMs: number }
  | { cmd: 'pingpong'; host: string; durationMs: number; warmupMs: number; maxRounds: number }
  | { cmd: 'connections'; host: string; durationMs: number; concurrency: number; maxConnections: number }
  | { cmd: 'close' }

export type StackWorkerReply = { ok: true; value: number } | { ok: false; error: string }

async function main(): Promise<void> {
  const data = workerData as StackWorkerData
  const port = attachMemoryPort(data.handle)
  const stack = await createStack({ port, addresses: [data.address], dad: false })
  const net = stack.net as unknown as NetLike
  let servers: BenchServers | null = null
  const reply = (message: StackWorkerReply): void => parentPort!.postMessage(message)
  parentPort!.on('message', (command: StackWorkerCommand) => {
    const work = async (): Promise<number> => {
      switch (command.cmd) {
        case 'serve':
          servers = await startServers(net, data.address.split('/')[0])
          return 0
        case 'bulk':
          return runBulk(net, command.host, command.bytes, command.timeoutMs)
        case 'pingpong':
          return runPingPong(net, command.host, command.durationMs, command.warmupMs, command.maxRounds)
        case 'connections':
          return runConnections(net, command.host, command.durationMs, command.concurrency, command.maxConnections)
        case 'close':
          await servers?.close()
          await stack.close()
          await port.close()
          return 0
      }
    }
    work()
      .then(
        (value) => reply({ ok: true, value }),
        (err: unknown) => reply({ ok: false, error: err instanceof Error ? err.message : String(err) }),
      )
      // The last reply is out; closing the port lets the worker's event loop end.
      .finally(() => {
        if (command.cmd === 'close') parentPort!.close()
      })
  })
  reply({ ok: true, value: 0 })
}

main().catch((err: unknown) => parentPort!.postMessage({ ok: false, error: err instanceof Error ? err.message : String(err) } satisfies StackWorkerReply))
