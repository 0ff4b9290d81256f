// Single-thread tests of the channel: layout validation, the buffer
// ownership cycle, API misuse, and corrupt descriptors from a hostile peer
// (played here by a raw SpscRing writing whatever it likes).
import { subscribe, unsubscribe } from 'node:diagnostics_channel'
import fc from 'fast-check'
import { describe, expect, it, vi } from 'vitest'
import {
  attachChannel,
  CHANNEL_MAGIC,
  CORRUPT_DOUBLE_DELIVERY,
  CORRUPT_INDEX_OUT_OF_RANGE,
  CORRUPT_LENGTH_TOO_LARGE,
  CORRUPT_NOT_OWNED_BY_SENDER,
  CORRUPT_RESERVED_FLAGS,
  CORRUPT_VNET_HDR_SHORT,
  CORRUPT_RING_OVERRUN,
  createChannel,
  DESC_VNET_HDR,
  layout,
  readLayout,
  RING_RX,
  RING_TX_RETURN,
  SpscRing,
  type ChannelEnd,
  type CorruptDescriptorInfo,
} from '../../nexus/channel/index.js'

const code = (c: string) => expect.objectContaining({ code: c })

/** After every exchange: each side's view is consistent and, once quiet, the pool is whole again. */
function expectPoolsFull(a: ChannelEnd, b: ChannelEnd): void {
  a.flush()
  b.flush()
  a.reclaim()
  b.reclaim()
  const pa = a.poolAccounting()
  const pb = b.poolAccounting()
  expect(pa.held + pb.held).toBe(0)
  expect(pa.free + pb.free).toBe(pa.total)
}

describe('channel layout', () => {
  it('writes the documented header and aligned offsets', () => {
    const sab = createChannel({ bufferSize: 2048, bufferCount: 100, ringCapacity: 64, rxBufferShare: 0.25 })
    const bytes = new Uint8Array(sab, 0, 4)
    expect([...bytes]).toEqual([0x48, 0x43, 0x53, 0x46]) // 'FSCH' as a little-endian u32
    const h = new Int32Array(sab, 0, 64)
    expect(h[layout.H_MAGIC]).toBe(CHANNEL_MAGIC)
    expect(h[layout.H_VERSION]).toBe(layout.LAYOUT_VERSION)
    expect(h[layout.H_HEADER_SIZE]).toBe(256)
    expect(h[layout.H_BUFFER_SIZE]).toBe(2048)
    expect(h[layout.H_BUFFER_COUNT]).toBe(100)
    expect(h[layout.H_RING_COUNT]).toBe(4)
    expect(h[layout.H_RING_CAPACITY]).toBe(64)
    expect(h[layout.H_RX_BUFFER_COUNT]).toBe(25)
    const g = readLayout(sab)
    expect(g.ringOffsets[0]).toBe(256)
    for (let r = 0; r < 4; r++) {
      expect(h[layout.H_RING_OFFSET0 + r]).toBe(g.ringOffsets[r])
      expect(g.ringOffsets[r] % 64).toBe(0)
      if (r > 0) expect(g.ringOffsets[r] - g.ringOffsets[r - 1]).toBe(layout.RING_CONTROL_BYTES + 64 * 16)
    }
    expect(g.poolOffset % 64).toBe(0)
    expect(g.poolOffset).toBeGreaterThanOrEqual(g.ringOffsets[3] + layout.ringBytes(64))
    expect(sab.byteLength).toBe(g.poolOffset + 100 * 2048)
    // head, tail and the doorbell each on their own cache line
    expect(layout.RING_TAIL - layout.RING_HEAD).toBe(64)
    expect(layout.RING_WAITERS - layout.RING_TAIL).toBe(64)
  })

  it('rejects bad options', () => {
    expect(() => createChannel({ bufferSize: 100 })).toThrow(code('CHANNEL_BAD_OPTIONS'))
    expect(() => createChannel({ bufferCount: 0 })).toThrow(code('CHANNEL_BAD_OPTIONS'))
    expect(() => createChannel({ ringCapacity: 1000 })).toThrow(code('CHANNEL_BAD_OPTIONS'))
    expect(() => createChannel({ rxBufferShare: 1.5 })).toThrow(code('CHANNEL_BAD_OPTIONS'))
    expect(() => createChannel({ bufferSize: 1 << 20, bufferCount: 4096 })).toThrow(code('CHANNEL_BAD_OPTIONS'))
  })

  it('rejects damaged headers with CHANNEL_BAD_LAYOUT', () => {
    const fresh = () => createChannel({ bufferSize: 256, bufferCount: 16, ringCapacity: 8 })
    const damaged = (word: number, value: number) => {
      const sab = fresh()
      new Int32Array(sab)[word] = value
      return sab
    }
    expect(() => attachChannel(damaged(layout.H_MAGIC, 0x12345678), 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    expect(() => attachChannel(damaged(layout.H_VERSION, 2), 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    expect(() => attachChannel(damaged(layout.H_BUFFER_SIZE, 300), 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    expect(() => attachChannel(damaged(layout.H_RING_CAPACITY, 6), 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    expect(() => attachChannel(damaged(layout.H_RING_OFFSET0 + 2, 4096), 'b')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    expect(() => attachChannel(damaged(layout.H_RX_BUFFER_COUNT, 17), 'b')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    // A header that promises more memory than the buffer has.
    const full = fresh()
    const short = new SharedArrayBuffer(full.byteLength - 256)
    new Uint8Array(short).set(new Uint8Array(full, 0, 256))
    expect(() => attachChannel(short, 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    expect(() => attachChannel(new SharedArrayBuffer(100), 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
    expect(() => attachChannel(new ArrayBuffer(4096) as unknown as SharedArrayBuffer, 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
  })

  it('rejects any change to any schema word (property)', () => {
    // Word 12 (rx buffer count) is excluded: any value in [0, count] is a valid split.
    const schemaWords = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]
    fc.assert(
      fc.property(fc.constantFrom(...schemaWords), fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), (word, value) => {
        // Capacity 16: rings of capacity 1, 2 and 4 all occupy one 256-byte stride,
        // so with 4 a changed capacity could still describe a consistent layout.
        const sab = createChannel({ bufferSize: 128, bufferCount: 8, ringCapacity: 16 })
        const h = new Int32Array(sab)
        fc.pre(h[word] !== value)
        h[word] = value
        expect(() => attachChannel(sab, 'a')).toThrow(code('CHANNEL_BAD_LAYOUT'))
      }),
      { numRuns: 2000 },
    )
  })

  it('attaches each side once', () => {
    const sab = createChannel({ bufferCount: 8, ringCapacity: 8 })
    attachChannel(sab, 'a')
    expect(() => attachChannel(sab, 'a')).toThrow(code('CHANNEL_SIDE_IN_USE'))
    expect(() => attachChannel(sab, 'c' as 'a')).toThrow(code('CHANNEL_BAD_SIDE'))
    attachChannel(sab, 'b')
  })
})

describe('channel end', () => {
  it('moves packets A -> B and buffers back through the return ring', () => {
    const sab = createChannel({ bufferSize: 256, bufferCount: 8, ringCapacity: 8, rxBufferShare: 0.5 })
    const a = attachChannel(sab, 'a')
    const b = attachChannel(sab, 'b')
    expect([a.freeCount(), b.freeCount()]).toEqual([4, 4])
    const sent: number[] = []
    for (let i = 0; i < 4; i++) {
      const index = a.alloc()
      expect(index).toBeGreaterThanOrEqual(0)
      expect(index).toBeLessThan(4) // A's share
      a.buffer(index).set([i, i + 1, i + 2])
      // Flagged: a 12-byte virtio_net_hdr leads (its length must leave room for it).
      expect(a.send(index, i === 0 ? 12 : 3, i === 0 ? DESC_VNET_HDR : 0, 100 + i)).toBe(true)
      sent.push(index)
    }
    expect(a.alloc()).toBe(-1)
    expect(a.counters().poolEmpty).toBe(1)
    // Not published yet.
    expect(b.receive(10, () => {})).toBe(0)
    expect(b.ringOccupancy().rx).toBe(0)
    a.flush()
    expect(b.ringOccupancy()).toEqual({ rx: 4, rxReturn: 0, tx: 0, txReturn: 0 })
    const got: number[][] = []
    expect(
      b.receive(10, (index, length, flags, aux) => {
        got.push([index, length, flags, aux, ...b.buffer(index).subarray(0, length)])
        b.release(index)
      }),
    ).toBe(4)
    expect(got).toEqual(sent.map((index, i) => [index, i === 0 ? 12 : 3, i === 0 ? DESC_VNET_HDR : 0, 100 + i, i, i + 1, i + 2, ...(i === 0 ? new Array(9).fill(0) : [])]))
    // Released buffers reach A at B's next flush; A's alloc drains the return ring.
    expect(a.alloc()).toBe(-1)
    b.flush()
    const again = a.alloc()
    expect(sent).toContain(again)
    expect(a.counters()).toMatchObject({ sent: 4, poolEmpty: 2, corrupt: 0 })
    expect(b.counters()).toMatchObject({ received: 4, corrupt: 0 })
    a.free(again)
    expectPoolsFull(a, b)
  })

  it('moves packets B -> A on tx and returns them on txReturn', () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 4, ringCapacity: 4, rxBufferShare: 0.5 })
    const a = attachChannel(sab, 'a')
    const b = attachChannel(sab, 'b')
    const index = b.alloc()
    expect(index).toBe(2)
    b.buffer(index)[0] = 0xee
    expect(b.send(index, 1)).toBe(true)
    b.flush()
    let seen = -1
    expect(a.receive(4, (i) => (seen = a.buffer(i)[0]))).toBe(1)
    expect(seen).toBe(0xee)
    a.release(index)
    a.flush()
    expect(b.reclaim()).toBe(1)
    expectPoolsFull(a, b)
  })

  it('takes any batch limit: everything, fractions, zero and negatives', () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 8, ringCapacity: 8, rxBufferShare: 1 })
    const a = attachChannel(sab, 'a')
    const b = attachChannel(sab, 'b')
    for (let k = 0; k < 6; k++) a.send(a.alloc(), 1, 0, k)
    a.flush()
    const order: number[] = []
    const visit = (index: number, _l: number, _f: number, aux: number) => {
      order.push(aux)
      b.release(index)
    }
    expect(b.receive(0, visit)).toBe(0)
    expect(b.receive(-3, visit)).toBe(0)
    expect(b.receive(2.7, visit)).toBe(2)
    expect(b.receive(Number.MAX_SAFE_INTEGER, visit)).toBe(4)
    expect(order).toEqual([0, 1, 2, 3, 4, 5])
    expectPoolsFull(a, b)
  })

  it('caches buffer views', () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 4, ringCapacity: 4 })
    const a = attachChannel(sab, 'a')
    expect(a.buffer(1)).toBe(a.buffer(1))
    expect(a.buffer(1).byteLength).toBe(128)
    expect(a.buffer(1).byteOffset).toBe(readLayout(sab).poolOffset + 128)
    expect(() => a.buffer(4)).toThrow(code('CHANNEL_BAD_INDEX'))
  })

  it('refuses to send when the ring is full and keeps the buffer held', () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 8, ringCapacity: 2, rxBufferShare: 1 })
    const a = attachChannel(sab, 'a')
    const b = attachChannel(sab, 'b')
    const x = [a.alloc(), a.alloc(), a.alloc()]
    expect(a.send(x[0], 10)).toBe(true)
    expect(a.send(x[1], 10)).toBe(true)
    expect(a.sendCapacity()).toBe(0)
    expect(a.send(x[2], 10)).toBe(false)
    expect(a.counters().ringFull).toBe(1)
    a.free(x[2])
    a.flush()
    expect(b.receive(8, (i) => b.release(i))).toBe(2)
    expectPoolsFull(a, b)
  })

  it('keeps releases in a backlog when the return ring is smaller than the pool', () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 8, ringCapacity: 2, rxBufferShare: 1 })
    const a = attachChannel(sab, 'a')
    const b = attachChannel(sab, 'b')
    const held: number[] = []
    for (let round = 0; round < 3; round++) {
      for (let k = 0; k < 2; k++) a.send(a.alloc(), 1)
      a.flush()
      b.receive(2, (i) => held.push(i))
    }
    expect(held).toHaveLength(6)
    for (const i of held) b.release(i)
    expect(b.returnBacklog()).toBe(4)
    expect(b.poolAccounting().returnBacklog).toBe(4)
    for (let k = 0; k < 4 && b.returnBacklog() > 0; k++) {
      b.flush()
      a.reclaim()
    }
    expect(b.returnBacklog()).toBe(0)
    expectPoolsFull(a, b)
    expect(a.freeCount()).toBe(8)
  })

  it('throws on local misuse with stable codes', () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 4, ringCapacity: 4, rxBufferShare: 0.5 })
    const a = attachChannel(sab, 'a')
    expect(() => a.send(0, 1)).toThrow(code('CHANNEL_NOT_OWNED')) // free, not held
    expect(() => a.send(3, 1)).toThrow(code('CHANNEL_NOT_OWNED')) // B's buffer
    expect(() => a.send(9, 1)).toThrow(code('CHANNEL_BAD_INDEX'))
    const i = a.alloc()
    expect(() => a.send(i, 129)).toThrow(code('CHANNEL_BAD_LENGTH'))
    expect(() => a.release(i + 1)).toThrow(code('CHANNEL_NOT_OWNED'))
    a.free(i)
    expect(() => a.free(i)).toThrow(code('CHANNEL_NOT_OWNED'))
    const j = a.alloc()
    a.close()
    expect(a.isClosed).toBe(true)
    expect(() => a.send(j, 1)).toThrow(code('CHANNEL_CLOSED'))
    a.close() // idempotent
  })

  it('waitForWork resolves at once with work pending, on the doorbell, and when the peer closes', async () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 4, ringCapacity: 4 })
    const a = attachChannel(sab, 'a')
    const b = attachChannel(sab, 'b')
    a.send(a.alloc(), 1)
    a.flush()
    await b.waitForWork()
    expect(b.counters().wakeups).toBe(0)
    b.receive(4, (i) => b.release(i))
    const sleeping = b.waitForWork()
    a.send(a.alloc(), 1)
    a.flush()
    await sleeping
    expect(a.counters().doorbellsRung).toBe(1)
    expect(b.counters().wakeups).toBe(1)
    b.receive(4, (i) => b.release(i))
    const closing = b.waitForWork()
    a.close()
    await closing
    expect(b.peerClosed).toBe(true)
    // With the peer gone, waits return at once instead of hanging.
    await b.waitForWork()
  })

  it('both sides in one thread: the doorbell wakes the sleeper on a later macrotask, with no V8 waiter left', async () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 4, ringCapacity: 4 })
    const b = attachChannel(sab, 'b')
    // A sleeper from before its peer attached here waits through Atomics.waitAsync ...
    const early = b.waitForWork()
    const a = attachChannel(sab, 'a')
    a.send(a.alloc(), 1)
    a.flush()
    // ... and is still woken by the (now local) doorbell.
    await early
    expect(b.receive(4, (i) => b.release(i))).toBe(1)
    const words = new Int32Array(sab)
    const waitAsync = vi.spyOn(Atomics, 'waitAsync')
    for (let round = 0; round < 3; round++) {
      let woken = false
      const sleeping = b.waitForWork().then(() => {
        woken = true
      })
      a.send(a.alloc(), 1)
      a.flush()
      // Not within the producer's microtasks: kernel-like I/O arrives on a later turn.
      for (let k = 0; k < 10; k++) await Promise.resolve()
      expect(woken).toBe(false)
      await sleeping
      expect(b.receive(4, (i) => b.release(i))).toBe(1)
      a.reclaim()
    }
    // The sleeps of a paired ring never reach V8's waiter list.
    expect(waitAsync).not.toHaveBeenCalled()
    waitAsync.mockRestore()
    expect(a.counters().doorbellsRung).toBe(4)
    expect(b.counters().wakeups).toBe(4)
    // No waiter is left in V8's list on any sequence word: a notify finds nobody.
    for (let word = 0; word < words.length; word++) expect(Atomics.notify(words, word)).toBe(0)
    // The peer's close still ends a local sleep.
    const closing = b.waitForWork()
    a.close()
    await closing
    expect(b.peerClosed).toBe(true)
  })

  it('uses the notifier hook for a native peer, and wake() ends a wait', async () => {
    const sab = createChannel({ bufferSize: 128, bufferCount: 4, ringCapacity: 4 })
    const rung: number[] = []
    const a = attachChannel(sab, 'a', { notifier: (ring) => rung.push(ring) })
    const b = attachChannel(sab, 'b')
    const sleeping = b.waitForWork()
    a.send(a.alloc(), 1)
    a.flush()
    expect(rung).toEqual([RING_RX])
    b.wake() // what the addon's threadsafe-function callback does
    await sleeping
    expect(b.receive(4, (i) => b.release(i))).toBe(1)
    expectPoolsFull(a, b)
  })
})

describe('corrupt descriptors from a hostile peer', () => {
  function hostileA(options: { bufferCount: number; ringCapacity: number; rxBufferShare?: number }) {
    const sab = createChannel({ bufferSize: 128, ...options })
    const g = readLayout(sab)
    const events: CorruptDescriptorInfo[] = []
    const b = attachChannel(sab, 'b', { onCorrupt: (info) => events.push(info) })
    // Side A is never attached: this raw producer writes whatever it likes.
    const rx = new SpscRing(sab, g.ringOffsets[RING_RX], g.ringCapacity)
    const txReturn = new SpscRing(sab, g.ringOffsets[RING_TX_RETURN], g.ringCapacity)
    return { sab, b, rx, txReturn, events }
  }

  it('refuses a buffer it released that still waits in its own return backlog (the owner cannot have it back yet)', () => {
    const { b, rx, events } = hostileA({ bufferCount: 8, ringCapacity: 2, rxBufferShare: 0.5 })
    rx.push(0, 10, 0, 0)
    rx.push(1, 10, 0, 0)
    rx.publish()
    expect(b.receive(8, (index) => b.release(index))).toBe(2) // both returns fit the 2-slot ring
    rx.push(2, 10, 0, 0)
    rx.publish()
    expect(b.receive(8, (index) => b.release(index))).toBe(1) // the return ring is full: 2 waits in the backlog
    expect(b.returnBacklog()).toBe(1)
    rx.push(2, 10, 0, 0) // the hostile side sends it again before it could have come back
    rx.publish()
    expect(b.receive(8, () => {})).toBe(0)
    expect(events.map((e) => [e.reason, e.bufferIndex])).toEqual([[CORRUPT_NOT_OWNED_BY_SENDER, 2]])
    expect(b.poolAccounting()).toMatchObject({ held: 0, returnBacklog: 1 })
  })

  it('detects, counts and never delivers bad rx descriptors', () => {
    const { sab, b, rx, events } = hostileA({ bufferCount: 8, ringCapacity: 16, rxBufferShare: 0.5 })
    const published: unknown[] = []
    const onPublish = (message: unknown) => published.push(message)
    subscribe('flowstack:channel:corrupt', onPublish)
    try {
      rx.push(0, 10, 0, 1) // valid
      rx.push(8, 10, 0, 2) // index out of range
      rx.push(1, 129, 0, 3) // longer than a buffer
      rx.push(5, 10, 0, 4) // B's own free buffer: A does not own it
      rx.push(0, 10, 0, 5) // buffer 0 again while B still holds it
      rx.push(2, 10, 0x80, 6) // reserved flag bit
      rx.push(1, 10, DESC_VNET_HDR, 8) // says it starts with a 12-byte virtio_net_hdr, is 10 bytes long
      rx.push(3, 12, DESC_VNET_HDR, 7) // valid
      rx.publish()
      const delivered: number[] = []
      expect(b.receive(64, (_i, _l, _f, aux) => delivered.push(aux))).toBe(2)
      expect(delivered).toEqual([1, 7])
      expect(events.map((e) => [e.reason, e.bufferIndex, e.ring])).toEqual([
        [CORRUPT_INDEX_OUT_OF_RANGE, 8, 'rx'],
        [CORRUPT_LENGTH_TOO_LARGE, 1, 'rx'],
        [CORRUPT_NOT_OWNED_BY_SENDER, 5, 'rx'],
        [CORRUPT_DOUBLE_DELIVERY, 0, 'rx'],
        [CORRUPT_RESERVED_FLAGS, 2, 'rx'],
        [CORRUPT_VNET_HDR_SHORT, 1, 'rx'],
      ])
      expect(published).toHaveLength(6)
      expect(published[0]).toMatchObject({ side: 'b', reasonName: 'index-out-of-range' })
    } finally {
      unsubscribe('flowstack:channel:corrupt', onPublish)
    }
    expect(b.counters().corrupt).toBe(6)
    expect(b.counters().received).toBe(2)
    // The first reason is recorded in the header for a supervisor to read.
    expect(b.recordedError()).toEqual({ reason: CORRUPT_INDEX_OUT_OF_RANGE, reasonName: 'index-out-of-range', bufferIndex: 8, count: 6 })
    const h = new Int32Array(sab)
    expect(h[layout.H_ERROR + layout.SIDE_B]).toBe(CORRUPT_INDEX_OUT_OF_RANGE)
    expect(h[layout.H_ERROR + layout.SIDE_A]).toBe(0)
    // B's own pool was not touched by the bogus claims on it.
    const accounting = b.poolAccounting()
    expect(accounting).toMatchObject({ free: 4, held: 2, peer: 2 })
  })

  it('rejects bogus buffer returns so the free list never hands out a buffer twice', () => {
    const { b, txReturn } = hostileA({ bufferCount: 8, ringCapacity: 16, rxBufferShare: 0.5 })
    txReturn.push(4, 0, 0, 0) // B already owns 4, free
    txReturn.push(99, 0, 0, 0) // out of range
    txReturn.publish()
    expect(b.reclaim()).toBe(0)
    expect(b.counters().corrupt).toBe(2)
    const handedOut = new Set<number>()
    for (let i = b.alloc(); i >= 0; i = b.alloc()) handedOut.add(i)
    expect([...handedOut].sort()).toEqual([4, 5, 6, 7])
  })

  it('stops reading a ring whose producer counter is garbage', () => {
    const { sab, b, rx, events } = hostileA({ bufferCount: 8, ringCapacity: 4 })
    const g = readLayout(sab)
    const words = new Int32Array(sab)
    words[(g.ringOffsets[RING_RX] + layout.RING_HEAD) / 4] = 1000 // tail is 0: 1000 > capacity
    expect(b.receive(64, () => expect.unreachable())).toBe(0)
    expect(events.map((e) => e.reason)).toEqual([CORRUPT_RING_OVERRUN])
    // Even after the counter looks sane again, the ring stays poisoned.
    words[(g.ringOffsets[RING_RX] + layout.RING_HEAD) / 4] = 1
    void rx
    expect(b.receive(64, () => expect.unreachable())).toBe(0)
    expect(b.counters().corrupt).toBe(1)
  })
})
