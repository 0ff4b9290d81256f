// pcapng tap: wraps any NexusPort and records every packet through it, both
// directions, to one pcapng file: one interface per queue, received packets
// flagged inbound and sent ones outbound (epb_flags), wall-clock timestamps.
//
// Shape (as the impairment middleware): for each queue of the wrapped port a
// new channel; the caller gets its side B, the tap holds its side A and the
// wrapped port's side B and copies packets across, recording each on the way:
//
//   user <-B- outer -A-> [rx: inner.receive -> record inbound  -> copy -> outer send]
//                        [tx: outer.receive -> record outbound -> copy -> inner send]
//
// Channels never share buffers, so the tap copies once per packet (as any
// wrapper must). It never drops what it could deliver: without a free buffer
// on the destination it stops taking from the source until one comes back.
import { FlowstackError } from '../../common/errors.js'
import { DESC_VNET_HDR, VIRTIO_NET_HDR_BYTES, type ChannelEnd, type PoolAccounting } from '../channel/index.js'
import { copyPacket, type CopyEnd } from '../ports/memory-copy.js'
import { wallClock } from '../ports/pcap.js'
import type { NexusPort, PortCounters, PortInfo } from '../ports/port.js'
import { drainWrapperQueues, openWrapperQueues, refillStash, runPumpLoop, totalCounters } from './wrapper.js'
import { FileCaptureSink, LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapngWriter, type CaptureSink, type PacketDirection } from './pcap.js'

export interface PcapTapOptions {
  /** Where the pcapng goes: a path, or a sink the tap then owns. */
  output: string | CaptureSink
  /** Packets moved per step and direction (default 64). */
  batchSize?: number
  /** Bytes recorded per packet (default 262144: whole packets). */
  snaplen?: number
}

export interface TapCounters {
  recordedInbound: number
  recordedOutbound: number
  /** Packets larger than the destination's buffers (recorded, not delivered). */
  oversize: number
  ringFull: number
  /** Why recording stopped (the sink failed: disk full, closed stream); packets still flow. */
  writeError?: string
}

/** Shared by a tap's directions: one writer, so one failure stops recording for all. */
interface TapRecording {
  error: Error | undefined
}

export interface TappedPort extends NexusPort {
  readonly inner: NexusPort
  tapCounters(): TapCounters
  poolReport(): Array<{ device: PoolAccounting; user: PoolAccounting }>
}

class TapDirection {
  recorded = 0
  delivered = 0
  deliveredBytes = 0
  oversize = 0
  ringFull = 0
  private readonly stash: Int32Array
  private stashCount = 0
  private stopped = false
  private readonly done: Promise<void>
  private readonly now = new Float64Array(2)

  constructor(
    private readonly source: CopyEnd,
    private readonly destination: CopyEnd,
    private readonly writer: PcapngWriter,
    private readonly interfaceId: number,
    private readonly direction: PacketDirection,
    batch: number,
    private readonly recording: TapRecording,
  ) {
    this.stash = new Int32Array(batch)
    this.done = runPumpLoop(() => this.step(), source.end, destination.end, () => this.stopped)
  }

  /** Moves one batch; > 0 packets taken, 0 source empty, -1 no destination buffer. */
  step(): number {
    const dst = this.destination.end
    this.stashCount = refillStash(dst, this.stash, this.stashCount)
    if (this.stashCount === 0) {
      this.source.end.flush()
      return -1
    }
    const taken = this.source.end.receive(this.stashCount, this.visit)
    dst.flush()
    this.source.end.flush()
    return taken
  }

  private readonly visit = (index: number, length: number, flags: number, aux: number): void => {
    const src = this.source.end
    const skip = (flags & DESC_VNET_HDR) !== 0 ? VIRTIO_NET_HDR_BYTES : 0
    if (this.recording.error === undefined) {
      // A sink that fails (disk full) stops the recording, never the traffic.
      try {
        wallClock(this.now)
        this.writer.writePacketBytes(this.interfaceId, src.buffer(index), skip, length - skip, this.now[0], this.now[1], this.direction)
        this.recorded++
      } catch (err) {
        this.recording.error = err instanceof Error ? err : new Error(String(err))
      }
    }
    const dst = this.destination.end
    if (length > dst.bufferSize) {
      this.oversize++
    } else {
      const out = this.stash[--this.stashCount]
      copyPacket(this.source, index, this.destination, out, length)
      if (dst.send(out, length, flags, aux)) {
        this.delivered++
        this.deliveredBytes += length
      } else {
        dst.free(out)
        this.ringFull++
      }
    }
    src.release(index)
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.source.end.wake()
    this.destination.end.wake()
    await this.done
    // What is already queued is recorded and delivered before the tap goes away.
    for (let round = 0; round < 64 && this.step() > 0; round++);
    const dst = this.destination.end
    while (this.stashCount > 0) dst.free(this.stash[--this.stashCount])
    dst.flush()
  }
}

/**
 * Wraps `port` so every packet through it is recorded to `options.output`.
 * The returned port owns the wrapped one: closing it closes both and
 * finishes the file.
 */
export function pcapTap(port: NexusPort, options: PcapTapOptions): TappedPort {
  const batch = options.batchSize ?? 64
  if (!Number.isInteger(batch) || batch < 1 || batch > 4096) throw new FlowstackError('PORT_BAD_OPTIONS', `batchSize ${batch} must be in [1, 4096]`)
  const sink = typeof options.output === 'string' ? new FileCaptureSink(options.output) : options.output
  const writer = new PcapngWriter(sink, { application: 'flowstack pcap tap' })
  const linkType = port.info.linkType === 'ethernet' ? LINKTYPE_ETHERNET : LINKTYPE_RAW

  const wrapped = openWrapperQueues(port)
  const recording: TapRecording = { error: undefined }
  const rx: TapDirection[] = []
  const tx: TapDirection[] = []
  wrapped.forEach(({ innerCopy, deviceCopy }, q) => {
    const interfaceId = writer.addInterface({
      linkType,
      name: port.queues.length === 1 ? port.info.name : `${port.info.name}/${q}`,
      snaplen: options.snaplen,
    })
    rx.push(new TapDirection(innerCopy, deviceCopy, writer, interfaceId, 'inbound', batch, recording))
    tx.push(new TapDirection(deviceCopy, innerCopy, writer, interfaceId, 'outbound', batch, recording))
  })

  const info: PortInfo = { ...port.info, name: `${port.info.name}+tap` }
  const queues: readonly ChannelEnd[] = Object.freeze(wrapped.map((w) => w.user))
  let closing: Promise<void> | undefined
  let closed = false
  let finalPool: Array<{ device: PoolAccounting; user: PoolAccounting }> | undefined
  const pool = (): Array<{ device: PoolAccounting; user: PoolAccounting }> =>
    wrapped.map(({ device, user }) => ({ device: device.poolAccounting(), user: user.poolAccounting() }))

  return {
    info,
    inner: port,
    get queues(): readonly ChannelEnd[] {
      if (closed) throw new FlowstackError('PORT_CLOSED', `port ${info.name} is closed`)
      return queues
    },
    counters(): PortCounters {
      if (closed) throw new FlowstackError('PORT_CLOSED', `port ${info.name} is closed`)
      const perQueue = rx.map((r, q) => ({
        rxPackets: r.delivered,
        rxBytes: r.deliveredBytes,
        txPackets: tx[q].delivered,
        txBytes: tx[q].deliveredBytes,
        drops: { ringFull: r.ringFull + tx[q].ringFull, poolEmpty: 0, oversize: r.oversize + tx[q].oversize },
        syscalls: 0,
        doorbells: wrapped[q].device.counters().wakeups,
      }))
      return totalCounters(perQueue, port)
    },
    tapCounters(): TapCounters {
      let recordedInbound = 0
      let recordedOutbound = 0
      let oversize = 0
      let ringFull = 0
      for (const d of rx) {
        recordedInbound += d.recorded
        oversize += d.oversize
        ringFull += d.ringFull
      }
      for (const d of tx) {
        recordedOutbound += d.recorded
        oversize += d.oversize
        ringFull += d.ringFull
      }
      return { recordedInbound, recordedOutbound, oversize, ringFull, ...(recording.error !== undefined ? { writeError: recording.error.message } : {}) }
    },
    poolReport: () => finalPool ?? pool(),
    close(): Promise<void> {
      closing ??= (async () => {
        await Promise.all([...rx, ...tx].map((d) => d.stop()))
        drainWrapperQueues(wrapped)
        finalPool = pool()
        for (const { user, device } of wrapped) {
          user.close()
          device.close()
        }
        closed = true
        let failure = recording.error
        await writer.close().catch((err: unknown) => (failure ??= err instanceof Error ? err : new Error(String(err))))
        await port.close()
        // Every buffer is home and the wrapped port closed: now say the capture failed.
        if (failure !== undefined) throw new FlowstackError('PCAP_WRITE_FAILED', `capture of ${info.name} failed: ${failure.message}`)
      })()
      return closing
    },
  }
}
