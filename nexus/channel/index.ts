// Shared-memory channel: a packet pool and four SPSC descriptor rings in one
// SharedArrayBuffer, shared by a device side (A) and a user side (B).
// Layout and word-level contract (also used by the C++ addon): ./layout.ts.
// Doorbell protocol and the native-peer hooks: ./ring.ts.
//
// Typical loops (one ChannelEnd per side, each in its own thread):
//
//   producer                                  consumer
//   const i = end.alloc()                     const n = end.receive(64, (i, len, flags, aux) => {
//   if (i < 0) await end.waitForBuffers()       handle(end.buffer(i).subarray(0, len))
//   end.buffer(i).set(packet)                   end.release(i)  // back to its owner
//   end.send(i, packet.length)                })
//   ... once per batch: end.flush()           if (n === 0) await end.waitForWork()
//
// A pending wait keeps the thread alive like an open socket; close() ends it.
// After the peer closes, waits resolve at once: check `peerClosed`.
export {
  drainChannelEnds,
  createChannel,
  attachChannel,
  readLayout,
  ChannelEnd,
  type ChannelSide,
  type CreateChannelOptions,
  type AttachOptions,
  type ChannelCounters,
  type CorruptDescriptorInfo,
  type PoolAccounting,
} from './channel.js'
export { SpscRing, type DescriptorVisitor, type SpscRingOptions } from './ring.js'
export * as layout from './layout.js'
export {
  CHANNEL_MAGIC,
  LAYOUT_VERSION,
  DESC_VNET_HDR,
  VIRTIO_NET_HDR_BYTES,
  RING_RX,
  RING_RX_RETURN,
  RING_TX,
  RING_TX_RETURN,
  type RingId,
  CORRUPT_INDEX_OUT_OF_RANGE,
  CORRUPT_LENGTH_TOO_LARGE,
  CORRUPT_NOT_OWNED_BY_SENDER,
  CORRUPT_DOUBLE_DELIVERY,
  CORRUPT_RING_OVERRUN,
  CORRUPT_RESERVED_FLAGS,
  CORRUPT_VNET_HDR_SHORT,
} from './layout.js'
