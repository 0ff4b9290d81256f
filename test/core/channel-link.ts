// A minimal imperative shell for tests: binds a StackCore's LinkDevice to a
// NexusPort channel end and drives input/poll/nextTimeout with real time.
import type { ChannelEnd } from '../../nexus/channel/index.js'
import type { Clock, LinkDevice, LinkType, Random, TxBuffer } from '../../stacks/core/contracts.js'
import type { StackCore } from '../../stacks/core/stack.js'

class ReusableTx implements TxBuffer {
  bytes: Uint8Array = new Uint8Array(0)
  index = 0
}

export class ChannelLink implements LinkDevice {
  private readonly tx = new ReusableTx()
  ringFullDrops = 0

  constructor(
    private readonly end: ChannelEnd,
    readonly linkType: LinkType,
    readonly mtu: number,
    readonly mac?: Uint8Array,
  ) {}

  acquireTx(): TxBuffer | null {
    const index = this.end.alloc()
    if (index < 0) return null
    this.tx.bytes = this.end.buffer(index)
    this.tx.index = index
    return this.tx
  }

  transmit(index: number, length: number): void {
    if (!this.end.send(index, length)) {
      this.end.free(index)
      this.ringFullDrops++
    }
  }

  abortTx(index: number): void {
    this.end.free(index)
  }

  flush(): void {
    this.end.flush()
  }
}

export const realClock: Clock = { now: () => performance.now() }

export const realRandom: Random = {
  nextUint32: () => crypto.getRandomValues(new Uint32Array(1))[0],
}

/** Runs the receive → input → poll → sleep-until-next-timer loop until stop(). */
export function runShell(end: ChannelEnd, core: StackCore, clock: Clock = realClock): { stop(): Promise<void> } {
  let stopped = false
  const loop = (async () => {
    while (!stopped && !end.peerClosed) {
      end.receive(256, (index, length) => {
        core.input(end.buffer(index).subarray(0, length))
        end.release(index)
      })
      core.poll()
      end.flush()
      const wait = Math.max(1, Math.min(100, core.nextTimeout() - clock.now()))
      await end.waitForWork(wait)
    }
  })()
  return {
    async stop() {
      stopped = true
      end.wake()
      await loop
    },
  }
}
