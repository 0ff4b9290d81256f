// The switch's packets per second from a port channel into an instance
// channel (classify by an exact flow, copy into the instance's pool, queue),
// next to a plain copy relay between the same two channels without the
// classifier, in the same run. One thread; the producer and the consumer are
// the benchmark itself, so the figure is the switch's own cost per packet.
//
// Second row: the runtime's real arrangement. The switch runs in its worker
// (SwitchHost); this thread writes into the far end of a memory wire and
// drains an instance channel, so every packet crosses two threads and the
// wire's pump; compared with the one-thread figure of the same run.
import { toBinary } from '@bufbuild/protobuf'
import { attachChannel, createChannel, type ChannelEnd } from '../nexus/channel/index.js'
import { attachMemoryPort } from '../nexus/ports/memory.js'
import { ConfigSchema } from '../proto/gen/flowstack_pb.js'
import { parseConfigJson } from '../runtime/config/index.js'
import { classifierFromConfig } from '../classifier/index.js'
import { Switch } from '../runtime/switch.js'
import { SwitchHost } from '../runtime/switch-host.js'
import type { BenchResult } from './types.js'

const PACKET_BYTES = 1000
const BATCH = 64

function tcpPacket(): Uint8Array {
  const p = new Uint8Array(PACKET_BYTES)
  const v = new DataView(p.buffer)
  p[0] = 0x45
  v.setUint16(2, PACKET_BYTES)
  p[8] = 64
  p[9] = 6
  p.set([192, 0, 2, 9], 12)
  p.set([198, 51, 100, 2], 16)
  v.setUint16(20, 40000)
  v.setUint16(22, 80)
  p[32] = 5 << 4
  p[33] = 0x10 // ACK
  return p
}

interface Rig {
  wire: ChannelEnd
  instance: ChannelEnd
  step: () => number
}

function switchRig(): Rig {
  const config = parseConfigJson({
    ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true } }],
    instances: [{ name: 'web', port: 'p0', addresses: ['198.51.100.2/24'] }],
  }).config
  const classifier = classifierFromConfig(config)
  classifier.registerFlow({ ipVersion: 4, protocol: 6, localAddress: '198.51.100.2', localPort: 80, remoteAddress: '192.0.2.9', remotePort: 40000, port: 0 }, 0)
  const portSab = createChannel({ bufferCount: 1024, ringCapacity: 512 })
  const wire = attachChannel(portSab, 'a')
  const sw = new Switch(classifier, [{ name: 'p0', end: attachChannel(portSab, 'b'), link: 'ip', vnetHdr: false }], [{ name: 'web', port: 0, addresses: ['198.51.100.2/24'] }])
  const instSab = createChannel({ bufferCount: 1024, ringCapacity: 512 })
  sw.attachInstance(0, instSab)
  return { wire, instance: attachChannel(instSab, 'b'), step: () => sw.pass() }
}

function copyRig(): Rig {
  const portSab = createChannel({ bufferCount: 1024, ringCapacity: 512 })
  const wire = attachChannel(portSab, 'a')
  const portEnd = attachChannel(portSab, 'b')
  const instSab = createChannel({ bufferCount: 1024, ringCapacity: 512 })
  const instA = attachChannel(instSab, 'a')
  const visit = (index: number, length: number): void => {
    const dst = instA.alloc()
    if (dst >= 0) {
      instA.buffer(dst).set(portEnd.buffer(index).subarray(0, length))
      if (!instA.send(dst, length)) instA.free(dst)
    }
    portEnd.release(index)
  }
  return {
    wire,
    instance: attachChannel(instSab, 'b'),
    step: () => {
      const n = portEnd.receive(BATCH, visit)
      portEnd.flush()
      instA.flush()
      return n
    },
  }
}

function measure(rig: Rig, packets: number): number {
  const packet = tcpPacket()
  const drain = (index: number): void => rig.instance.release(index)
  let sent = 0
  let received = 0
  const started = performance.now()
  while (received < packets) {
    for (let k = 0; k < BATCH && sent < packets; k++) {
      const i = rig.wire.alloc()
      if (i < 0) break
      rig.wire.buffer(i).set(packet)
      if (!rig.wire.send(i, PACKET_BYTES)) {
        rig.wire.free(i)
        break
      }
      sent++
    }
    rig.wire.flush()
    rig.step()
    const got = rig.instance.receive(BATCH * 2, drain)
    rig.instance.flush()
    received += got
    if (got === 0 && sent === packets) {
      // Anything lost (pool exhausted) is counted once, so the loop always ends.
      if (rig.step() === 0 && rig.instance.receive(BATCH * 2, drain) === 0) break
    }
  }
  const seconds = (performance.now() - started) / 1000
  return received / seconds
}

/** Packets/s through the switch worker: memory wire far end -> switch (its worker) -> instance channel. */
async function measureWorker(packets: number, limitMs: number): Promise<number> {
  const config = parseConfigJson({
    ports: [{ name: 'p0', memory: { wire: 'w', ipOnly: true }, defaultAction: { drop: {} } }],
    instances: [{ name: 'web', port: 'p0', addresses: ['198.51.100.2/24'] }],
    rules: [{ name: 'web', priority: 1, match: { localPrefix: '198.51.100.2/32' }, action: { instance: 'web' } }],
  }).config
  const host = new SwitchHost()
  try {
    const started = await host.request({ type: 'start', config: toBinary(ConfigSchema, config) })
    const wire = attachMemoryPort(started.memoryPeers[0][1])
    const tx = wire.queues[0]
    const instSab = createChannel({ bufferCount: 1024, ringCapacity: 512 })
    host.attach(0, 1, instSab)
    await host.barrier()
    const rx = attachChannel(instSab, 'b')
    const packet = tcpPacket()
    const drain = (index: number): void => rx.release(index)
    let sent = 0
    let received = 0
    const begin = performance.now()
    let lastReceived = begin
    // Packets the switch drops (the instance's pool empty: this thread late
    // to drain) never arrive: stop once all are sent and nothing comes for 50 ms.
    while (received < packets && performance.now() - begin < limitMs && !(sent === packets && performance.now() - lastReceived > 50)) {
      let queued = 0
      for (; queued < BATCH && sent < packets; queued++) {
        const i = tx.alloc()
        if (i < 0) break
        tx.buffer(i).set(packet)
        if (!tx.send(i, PACKET_BYTES)) {
          tx.free(i)
          break
        }
        sent++
      }
      tx.flush()
      const got = rx.receive(BATCH * 2, drain)
      rx.flush()
      received += got
      if (got > 0) lastReceived = performance.now()
      // Nothing to do on this side: sleep until the switch delivers (bounded).
      if (got === 0 && queued === 0) await rx.waitForWork(5)
    }
    const seconds = (lastReceived - begin) / 1000
    await host.request({ type: 'stop' })
    rx.close()
    await wire.close()
    await host.request({ type: 'release' })
    return received / seconds
  } finally {
    await host.close()
  }
}

export default async function run(opts: { quick: boolean }): Promise<BenchResult[]> {
  const packets = opts.quick ? 100_000 : 2_000_000
  measure(switchRig(), 20_000) // JIT warm-up
  measure(copyRig(), 20_000)
  const viaSwitch = measure(switchRig(), packets)
  const viaCopy = measure(copyRig(), packets)
  await measureWorker(20_000, 2000) // warm-up of the worker's JIT
  const viaWorker = await measureWorker(opts.quick ? 100_000 : 1_000_000, opts.quick ? 1500 : 8000)
  return [
    {
      name: `switch port->instance, ${PACKET_BYTES} B, exact flow`,
      value: Math.round(viaSwitch),
      unit: 'packets/s',
      baseline: 'plain copy relay between the same channels (no classifier)',
      baselineValue: Math.round(viaCopy),
      higherIsBetter: true,
    },
    {
      name: `switch worker: memory wire -> switch thread -> instance channel, ${PACKET_BYTES} B (delivered)`,
      value: Math.round(viaWorker),
      unit: 'packets/s',
      baseline: 'the same switch in one thread, no wire pump (first row)',
      baselineValue: Math.round(viaSwitch),
      higherIsBetter: true,
    },
  ]
}
