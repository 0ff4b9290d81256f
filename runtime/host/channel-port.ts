// The worker side of an instance's channel as a NexusPort, so the instance's
// stack is built by the very same createStack apps use on any port. The
// switch holds side A; this adapter attaches side B in the instance worker.
import { attachChannel, type ChannelEnd } from '../../nexus/channel/index.js'
import { FlowstackError } from '../../common/errors.js'
import type { NexusPort, PortCounters, PortInfo, PortQueueCounters } from '../../nexus/ports/port.js'

export function channelPort(sab: SharedArrayBuffer, info: PortInfo): NexusPort {
  const end: ChannelEnd = attachChannel(sab, 'b')
  let closed = false
  const queueCounters = (): PortQueueCounters => {
    const c = end.counters()
    return {
      rxPackets: c.received,
      rxBytes: 0,
      txPackets: c.sent,
      txBytes: 0,
      drops: { ringFull: c.ringFull, poolEmpty: c.poolEmpty, oversize: 0 },
      syscalls: 0,
      doorbells: c.doorbellsRung,
    }
  }
  return {
    info,
    queues: [end],
    counters(): PortCounters {
      if (closed) throw new FlowstackError('PORT_CLOSED', `port ${info.name} is closed`)
      const q = queueCounters()
      return { ...q, queues: [q] }
    },
    async close(): Promise<void> {
      if (closed) return
      closed = true
      end.close()
    },
  }
}
