// The addon on its own, driven through raw rings (no ChannelEnd on side B):
// a packet checker for what the I/O thread does with hostile descriptors, and
// for the doorbell it rings towards JavaScript.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createChannel, readLayout, SpscRing, layout } from '../../nexus/channel/index.js'
import { COUNTER_SLOTS, C_CORRUPT, C_DOORBELLS, C_RX_PACKETS, C_TX_ERRORS, C_TX_PACKETS, loadNative, type NativeDevice } from '../../nexus/ports/native.js'
import { cleanupNamespaces, createNamespace, deleteNamespace, ip } from '../helpers/netns.js'
import { ip4, udpPacket } from './native-helpers.js'
import { start } from './native-helpers-proc.js'

let ns = ''

beforeAll(() => {
  cleanupNamespaces('fs-nnat-')
  ns = createNamespace('nnat')
})

afterAll(() => {
  if (ns !== '') deleteNamespace(ns)
})

async function until(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!condition() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5))
}

function openRaw(name: string): { device: NativeDevice; sab: SharedArrayBuffer; counters: BigUint64Array; doorbells: { count: number } } {
  const { NativeDevice } = loadNative()
  const device = NativeDevice.open({ kind: 'tun', name, netnsPath: `/var/run/netns/${ns}` })
  const sab = createChannel({ bufferCount: 64, ringCapacity: 64 })
  const countersSab = new SharedArrayBuffer(COUNTER_SLOTS * 8)
  const doorbells = { count: 0 }
  device.startQueue(0, new Uint8Array(sab), new Uint8Array(countersSab), () => void doorbells.count++)
  return { device, sab, counters: new BigUint64Array(countersSab), doorbells }
}

describe('nexus addon', () => {
  it('counts corrupt tx descriptors, records the first reason, transmits only the valid one', async () => {
    const { device, sab, counters } = openRaw('fsnat0')
    try {
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fsnat0')
      const g = readLayout(sab)
      const tx = new SpscRing(sab, g.ringOffsets[layout.RING_TX], g.ringCapacity, { notifier: () => device.kick(0) })
      const txReturn = new SpscRing(sab, g.ringOffsets[layout.RING_TX_RETURN], g.ringCapacity)
      const pool = new Uint8Array(sab, g.poolOffset)
      // Side B owns [rxBufferCount, bufferCount) = [32, 64).
      expect(g.rxBufferCount).toBe(32)
      const valid = 42
      const n = udpPacket(pool.subarray(valid * g.bufferSize), 0, ip4('198.51.100.2'), 7000, ip4('198.51.100.1'), 9, Buffer.from('ok'))
      tx.push(1000, 60, 0, 0) // index out of range
      tx.push(3, 60, 0, 0) // a buffer side A owns
      tx.push(40, g.bufferSize + 1, 0, 0) // longer than a buffer
      tx.push(41, 60, 0x80, 0) // reserved flag
      tx.push(valid, n, 0, 0)
      tx.publish()
      const header = new Int32Array(sab, 0, layout.HEADER_BYTES / 4)
      const returned: number[] = []
      await until(() => {
        txReturn.pop(16, (index) => void returned.push(index))
        return returned.length >= 3
      }, 5_000)
      // Refused buffers and the transmitted one come back; the others were never B's to send.
      expect(returned.sort()).toEqual([40, 41, valid])
      expect(Number(counters[C_CORRUPT])).toBe(4)
      expect(Number(counters[C_TX_PACKETS])).toBe(1)
      expect(Number(counters[C_TX_ERRORS])).toBe(0)
      expect(header[layout.H_ERROR + layout.SIDE_A]).toBe(layout.CORRUPT_INDEX_OUT_OF_RANGE)
      expect(header[layout.H_ERROR_DETAIL + layout.SIDE_A]).toBe(1000)
      expect(header[layout.H_CORRUPT_COUNT + layout.SIDE_A]).toBe(4)
      expect(header[layout.H_ATTACHED + layout.SIDE_A]).toBe(1)
    } finally {
      device.stopQueues()
      device.close()
    }
    expect(new Int32Array(sab, 0, 64)[layout.H_CLOSED + layout.SIDE_A]).toBe(1)
  })

  it('rings the JS doorbell only when the consumer announced it sleeps', async () => {
    const { device, sab, counters, doorbells } = openRaw('fsnat1')
    try {
      ip('-n', ns, 'addr', 'add', '198.51.100.1/24', 'dev', 'fsnat1')
      const g = readLayout(sab)
      const words = new Int32Array(sab)
      const rxAt = g.ringOffsets[layout.RING_RX] / 4
      const send = (): Promise<unknown> =>
        start(ns, ['python3', '-c', "import socket;socket.socket(2,2).sendto(b'x',('198.51.100.2',9))"]).exited
      const rx = new SpscRing(sab, g.ringOffsets[layout.RING_RX], g.ringCapacity)
      const rxReturn = new SpscRing(sab, g.ringOffsets[layout.RING_RX_RETURN], g.ringCapacity)
      const drain = (): void => {
        rx.pop(64, (index) => void rxReturn.push(index, 0, 0, 0))
        rxReturn.publish()
      }
      // Awake consumer: packets arrive, no doorbell.
      await send()
      await until(() => rx.available() > 0 && Number(counters[C_RX_PACKETS]) > 0, 5_000)
      drain()
      expect(doorbells.count).toBe(0)
      expect(Number(counters[C_DOORBELLS])).toBe(0)
      // Sleeping consumer: one doorbell, the waiters word cleared, the sequence bumped.
      const sequence = Atomics.load(words, rxAt + layout.RING_SEQUENCE / 4)
      Atomics.store(words, rxAt + layout.RING_WAITERS / 4, 1)
      await send()
      await until(() => doorbells.count > 0, 5_000)
      expect(doorbells.count).toBe(1)
      expect(Number(counters[C_DOORBELLS])).toBe(1)
      expect(Atomics.load(words, rxAt + layout.RING_WAITERS / 4)).toBe(0)
      expect(Atomics.load(words, rxAt + layout.RING_SEQUENCE / 4)).toBe(sequence + 1)
      drain()
    } finally {
      device.stopQueues()
      device.close()
    }
  })

  it('refuses a second side A on one channel and a vnet_hdr queue on small buffers', () => {
    const { NativeDevice } = loadNative()
    const device = NativeDevice.open({ kind: 'tun', name: 'fsnat2', netnsPath: `/var/run/netns/${ns}`, vnetHdr: true })
    try {
      const small = createChannel({ bufferCount: 8, ringCapacity: 8 })
      const counters = new Uint8Array(new SharedArrayBuffer(COUNTER_SLOTS * 8))
      expect(() => device.startQueue(0, new Uint8Array(small), counters, () => {})).toThrow(/65548/)
      const big = createChannel({ bufferSize: 65600, bufferCount: 4, ringCapacity: 4 })
      device.startQueue(0, new Uint8Array(big), counters, () => {})
      expect(() => device.startQueue(0, new Uint8Array(big), counters, () => {})).toThrow(/already started/)
    } finally {
      device.stopQueues()
      device.close()
    }
    const other = NativeDevice.open({ kind: 'tun', name: 'fsnat3', netnsPath: `/var/run/netns/${ns}` })
    try {
      const sab = createChannel({ bufferCount: 8, ringCapacity: 8 })
      new Int32Array(sab)[layout.H_ATTACHED + layout.SIDE_A] = 1 // someone else is side A
      expect(() => other.startQueue(0, new Uint8Array(sab), new Uint8Array(new SharedArrayBuffer(COUNTER_SLOTS * 8)), () => {})).toThrow(/already attached/)
      const bad = createChannel({ bufferCount: 8, ringCapacity: 8 })
      new Int32Array(bad)[layout.H_MAGIC] = 0
      expect(() => other.startQueue(0, new Uint8Array(bad), new Uint8Array(new SharedArrayBuffer(COUNTER_SLOTS * 8)), () => {})).toThrow(/magic/)
    } finally {
      other.stopQueues()
      other.close()
    }
  })
})
