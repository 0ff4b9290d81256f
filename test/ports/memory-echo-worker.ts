// Worker side of the memory wire test: opens the user side of a transferred
// memory port and sends every frame it receives straight back.
import { parentPort, workerData } from 'node:worker_threads'
import { attachMemoryPort, type MemoryPortHandle } from '../../nexus/ports/memory.js'

const { handle, total } = workerData as { handle: MemoryPortHandle; total: number }
const port = attachMemoryPort(handle)
const end = port.queues[0]
const ownedAtStart = end.freeCount()
let echoed = 0
const deadline = Date.now() + 30_000
while (echoed < total && Date.now() < deadline) {
  await end.waitForWork(100)
  end.receive(64, (index, length) => {
    const out = end.alloc()
    if (out >= 0) {
      end.buffer(out).set(end.buffer(index).subarray(0, length))
      if (end.send(out, length)) echoed++
      else end.free(out)
    }
    end.release(index)
  })
  end.flush()
}
// Wait until every echo was consumed by the pump and its buffer came back.
for (let i = 0; i < 200 && end.freeCount() < ownedAtStart; i++) {
  end.reclaim()
  await new Promise((r) => setTimeout(r, 5))
}
await port.close()
parentPort?.postMessage({ echoed, accounting: port.poolAccounting() })

