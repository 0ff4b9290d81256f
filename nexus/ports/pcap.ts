// The pcap port: a NexusPort whose "wire" is files. Packets of a pcap or
// pcapng file are replayed as received traffic (as fast as the user takes
// them, or at the capture's own pace), and what the user sends is recorded to
// a pcapng file (direction: outbound). No privileges; the port for tests,
// reproductions ("replay this capture into a stack") and offline analysis.
//
// One queue. The port holds side A of its channel; `queues[0]` is side B.
// Backpressure, never loss: when the pool is out of buffers the replay waits
// for the user to return some instead of dropping.
import { setImmediate as yieldToEventLoop, setTimeout as sleep } from 'node:timers/promises'
import { FlowstackError } from '../../common/errors.js'
import { attachChannel, createChannel, DESC_VNET_HDR, drainChannelEnds, VIRTIO_NET_HDR_BYTES, type ChannelEnd, type PoolAccounting } from '../channel/index.js'
import {
  CaptureReader,
  FileCaptureSink,
  LINKTYPE_ETHERNET,
  LINKTYPE_IPV4,
  LINKTYPE_IPV6,
  LINKTYPE_RAW,
  PcapngWriter,
  type CaptureSink,
} from '../middleware/pcap.js'
import type { LinkType, NexusPort, PortCounters, PortInfo, PortQueueCounters } from './port.js'

export interface PcapPortOptions {
  name?: string
  /** A pcap/pcapng file (path or bytes) replayed as received traffic. */
  replay?: string | Uint8Array
  /** 'fast' (default): as fast as the user takes packets; 'capture': at the capture's timing. */
  pace?: 'fast' | 'capture'
  /** With pace 'capture': 2 replays twice as fast (default 1). */
  speed?: number
  /** Where to record what the user sends (pcapng): a path, or a sink the port then owns. */
  record?: string | CaptureSink
  /** Default: from the replay file's first interface, else 'ethernet'. */
  linkType?: LinkType
  /** Default 1500. Replayed packets larger than the pool buffers are dropped as oversize. */
  mtu?: number
  bufferCount?: number
  ringCapacity?: number
}

export interface PcapReplayReport {
  /** Packets delivered to the user. */
  replayed: number
  /** Packets of another link type than the port's (e.g. Linux cooked capture on an Ethernet port). */
  skippedLinkType: number
  oversize: number
  ringFull: number
  /** Set when the file turned out malformed part way: what was before it was replayed. */
  error?: FlowstackError
}

export interface PcapPort extends NexusPort {
  /** Resolves when the whole replay file has been delivered (at once when there is none). */
  readonly replayDone: Promise<PcapReplayReport>
  /** Packets recorded so far. */
  readonly recorded: number
  poolReport(): { device: PoolAccounting; user: PoolAccounting }
}

const BATCH = 64

function linkTypeOf(captureLinkType: number): LinkType | undefined {
  if (captureLinkType === LINKTYPE_ETHERNET) return 'ethernet'
  if (captureLinkType === LINKTYPE_RAW || captureLinkType === LINKTYPE_IPV4 || captureLinkType === LINKTYPE_IPV6) return 'ip'
  return undefined
}

/** Wall-clock time split into seconds and nanoseconds, without allocating. */
export function wallClock(out: Float64Array): void {
  const ms = performance.timeOrigin + performance.now()
  const seconds = Math.floor(ms / 1000)
  out[0] = seconds
  out[1] = Math.min(999_999_999, Math.round((ms - seconds * 1000) * 1e6))
}

export function openPcapPort(options: PcapPortOptions = {}): PcapPort {
  const name = options.name ?? 'pcap0'
  const mtu = options.mtu ?? 1500
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new FlowstackError('PORT_MTU_OUT_OF_RANGE', `mtu ${mtu} is outside [68, 65535]`)
  const speed = options.speed ?? 1
  if (!(speed > 0)) throw new FlowstackError('PORT_BAD_OPTIONS', `speed ${speed} must be positive`)

  let reader: CaptureReader | undefined
  if (options.replay !== undefined) {
    reader = typeof options.replay === 'string' ? CaptureReader.fromFile(options.replay) : CaptureReader.fromBuffer(options.replay)
    try {
      reader.open()
    } catch (err) {
      reader.close()
      throw err
    }
  }
  const fileLinkType = reader?.interfaces[0] === undefined ? undefined : linkTypeOf(reader.interfaces[0].linkType)
  const linkType: LinkType = options.linkType ?? fileLinkType ?? 'ethernet'
  // Room for the frame header (and one VLAN tag) on top of the MTU, 64-byte aligned.
  const bufferSize = Math.max(2048, Math.ceil((mtu + 18) / 64) * 64)
  const sab = createChannel({ bufferSize, bufferCount: options.bufferCount ?? 1024, ringCapacity: options.ringCapacity ?? 1024 })
  const device = attachChannel(sab, 'a')
  // Idle waits (nothing to record, the user holding every buffer) leave the
  // process's lifetime to the user; pacing timers of a replay keep it.
  device.setWaitsKeepAlive(false)
  const user = attachChannel(sab, 'b')
  const queues: readonly ChannelEnd[] = Object.freeze([user])

  let writer: PcapngWriter | undefined
  let recordInterface = 0
  if (options.record !== undefined) {
    const sink = typeof options.record === 'string' ? new FileCaptureSink(options.record) : options.record
    writer = new PcapngWriter(sink, { application: 'flowstack pcap port' })
    recordInterface = writer.addInterface({ linkType: linkType === 'ethernet' ? LINKTYPE_ETHERNET : LINKTYPE_RAW, name })
  }

  const info: PortInfo = Object.freeze({
    name,
    kind: 'pcap' as const,
    linkType,
    mtu,
    offloads: Object.freeze({ vnetHdr: false, tso4: false, tso6: false, checksum: false }),
    queues: 1,
  })
  const counts: PortQueueCounters = {
    rxPackets: 0,
    rxBytes: 0,
    txPackets: 0,
    txBytes: 0,
    drops: { ringFull: 0, poolEmpty: 0, oversize: 0 },
    syscalls: 0,
    doorbells: 0,
  }
  const report: PcapReplayReport = { replayed: 0, skippedLinkType: 0, oversize: 0, ringFull: 0 }
  let stopping = false
  /** Cuts a capture-paced wait short on close (a capture may have hours between packets). */
  const stopWaiting = new AbortController()
  let closed = false
  let closing: Promise<void> | undefined
  let finalPool: { device: PoolAccounting; user: PoolAccounting } | undefined
  const now = new Float64Array(2)

  const replayLoop = async (): Promise<PcapReplayReport> => {
    if (reader === undefined) return report
    let firstCapture = -1
    let startMs = 0
    let inBatch = 0
    try {
      for (let packet = reader.next(); packet !== null && !stopping; packet = reader.next()) {
        if (linkTypeOf(packet.linkType) !== linkType) {
          report.skippedLinkType++
          continue
        }
        if (packet.capturedLength > bufferSize) {
          report.oversize++
          counts.drops.oversize++
          continue
        }
        if (options.pace === 'capture') {
          const captureMs = packet.seconds * 1000 + packet.nanoseconds / 1e6
          if (firstCapture < 0) {
            firstCapture = captureMs
            startMs = performance.now()
          }
          const wait = startMs + (captureMs - firstCapture) / speed - performance.now()
          if (wait > 1) {
            device.flush()
            inBatch = 0
            await sleep(wait, undefined, { signal: stopWaiting.signal }).catch(() => undefined)
            if (stopping) break
          }
        }
        let index = device.alloc()
        // A user that closed its end gives nothing back: stop rather than spin on its doorbell.
        while (index < 0 && !stopping && !device.peerClosed) {
          // Out of buffers: publish what we have and wait for the user to give some back.
          device.flush()
          inBatch = 0
          await device.waitForBuffers(100)
          index = device.alloc()
        }
        if (index < 0) break
        // The reader's packet is only valid until its next(): copy before anything else.
        packet.copyTo(device.buffer(index), 0)
        if (device.send(index, packet.capturedLength, 0, 0)) {
          report.replayed++
          counts.rxPackets++
          counts.rxBytes += packet.capturedLength
        } else {
          device.free(index)
          report.ringFull++
          counts.drops.ringFull++
        }
        if (++inBatch >= BATCH) {
          device.flush()
          inBatch = 0
          await yieldToEventLoop()
        }
      }
    } catch (err) {
      if (!(err instanceof FlowstackError)) throw err
      report.error = err
    } finally {
      device.flush()
      reader.close()
    }
    return report
  }

  const recordPacket = (index: number, length: number, flags: number): void => {
    counts.txPackets++
    counts.txBytes += length
    if (writer !== undefined && recordError === undefined) {
      // A virtio_net_hdr in front of the frame is metadata, not wire bytes.
      const skip = (flags & DESC_VNET_HDR) !== 0 ? VIRTIO_NET_HDR_BYTES : 0
      // A sink that fails (disk full) ends the recording; the buffer still goes back, and close() reports it.
      try {
        wallClock(now)
        writer.writePacketBytes(recordInterface, device.buffer(index), skip, length - skip, now[0], now[1], 'outbound')
      } catch (err) {
        recordError = err instanceof Error ? err : new Error(String(err))
      }
    }
    device.release(index)
  }
  const drainTx = (): number => device.receive(device.ringCapacity, recordPacket)

  let recordError: Error | undefined
  const recordLoop = async (): Promise<void> => {
    // A user that closed its end answers every doorbell at once: close() drains what it sent.
    while (!stopping && !device.peerClosed) {
      await device.waitForWork()
      if (drainTx() > 0) device.flush()
    }
  }

  const replayDone = replayLoop()
  const recording = recordLoop()

  const port: PcapPort = {
    info,
    replayDone,
    get recorded(): number {
      return writer?.packetsWritten ?? 0
    },
    get queues(): readonly ChannelEnd[] {
      if (closed) throw new FlowstackError('PORT_CLOSED', `port ${name} is closed`)
      return queues
    },
    counters(): PortCounters {
      if (closed) throw new FlowstackError('PORT_CLOSED', `port ${name} is closed`)
      counts.doorbells = device.counters().wakeups
      const copy = (): PortQueueCounters => ({ ...counts, drops: { ...counts.drops } })
      return { ...copy(), queues: [copy()] }
    },
    poolReport() {
      return finalPool ?? { device: device.poolAccounting(), user: user.poolAccounting() }
    },
    close(): Promise<void> {
      closing ??= (async () => {
        stopping = true
        stopWaiting.abort()
        device.wake()
        await Promise.allSettled([replayDone, recording])
        // Whatever the user sent before closing is recorded; what it never read goes back.
        for (let round = 0; round < 64 && drainTx() > 0; round++) device.flush()
        drainChannelEnds(user, device)
        finalPool = { device: device.poolAccounting(), user: user.poolAccounting() }
        user.close()
        device.close()
        closed = true
        let failure = recordError
        if (writer !== undefined) await writer.close().catch((err: unknown) => (failure ??= err instanceof Error ? err : new Error(String(err))))
        if (failure !== undefined) throw new FlowstackError('PCAP_WRITE_FAILED', `recording of port ${name} failed: ${failure.message}`)
      })()
      return closing
    },
  }
  return port
}
