// Memory layout of a flowstack channel: one SharedArrayBuffer shared by two
// sides (A = device side: native I/O thread, memory wire, or the switch facing
// an instance; B = user side: the switch or a stack). The C++ addon reads and
// writes the very same bytes from its I/O threads, so every offset here is part
// of a contract: change one only together with LAYOUT_VERSION and the addon.
//
// All words are little-endian 32-bit integers, accessed from JS through one
// Int32Array over the whole buffer (word index = byte offset / 4) and from C++
// with __atomic builtins on uint32_t.
//
//   0            HEADER_BYTES (256)         ring 0 .. ring 3                pool
//   +------------+---------------------------+------------------------------+-------------------------+
//   | header     | rx | rxReturn | tx | txReturn (each RING_CONTROL_BYTES +  | bufferCount x bufferSize|
//   |            |  capacity x DESCRIPTOR_BYTES, rounded up to 64: ringStride)| (64-byte aligned)       |
//   +------------+----------------------------------------------------------+-------------------------+
//
// Buffer ownership (AF_XDP style): buffers [0, rxBufferCount) start owned by
// side A, the rest by side B. A buffer changes owner only by travelling in a
// descriptor on a ring; each side keeps a local free list of what it owns and
// refills it by draining its return ring. Every ring has exactly one producer
// thread and one consumer thread:
//
//   rx        A -> B   packets received from the device
//   rxReturn  B -> A   rx buffers given back after B consumed them
//   tx        B -> A   packets to transmit
//   txReturn  A -> B   tx buffers given back after A transmitted them

/** 'FSCH' read as a little-endian u32 spells the bytes 48 43 53 46. */
export const CHANNEL_MAGIC = 0x46534348
export const LAYOUT_VERSION = 1

export const HEADER_BYTES = 256
export const CACHE_LINE_BYTES = 64

// ---- Header words (Int32 index = byte offset / 4) -------------------------
// Schema words: written once by createChannel, read-only afterwards.
/** CHANNEL_MAGIC. */
export const H_MAGIC = 0
/** LAYOUT_VERSION. */
export const H_VERSION = 1
/** HEADER_BYTES: where the first ring starts. */
export const H_HEADER_SIZE = 2
/** Bytes per pool buffer, a multiple of 64 (2048 by default; 65600 holds a 64 KiB GSO packet plus its virtio_net_hdr). */
export const H_BUFFER_SIZE = 3
/** Number of pool buffers. */
export const H_BUFFER_COUNT = 4
/** Byte offset of buffer 0; buffer i starts at poolOffset + i * bufferSize. */
export const H_POOL_OFFSET = 5
/** RING_COUNT (4). */
export const H_RING_COUNT = 6
/** Descriptors per ring, a power of two (the same for all four rings). */
export const H_RING_CAPACITY = 7
/** Byte offset of ring r's control block is word H_RING_OFFSET0 + r. */
export const H_RING_OFFSET0 = 8
/** Buffers [0, rxBufferCount) start owned by side A, the rest by side B. */
export const H_RX_BUFFER_COUNT = 12
/** Total byte length of the channel (the SharedArrayBuffer may not be shorter). */
export const H_TOTAL_SIZE = 13

// Per-side state words, on their own cache line (16..31), written at run time.
// Index with `base + side` where SIDE_A = 0 and SIDE_B = 1.
/** 1 once a side has attached (attaching the same side twice is refused). */
export const H_ATTACHED = 16
/** 1 once a side has closed its end. */
export const H_CLOSED = 18
/**
 * First corruption reason (CORRUPT_* below) that this side detected in a
 * descriptor the other side produced; 0 = none. Written with compare-exchange
 * from 0, so the first reason sticks and a supervisor can read it.
 */
export const H_ERROR = 20
/** The buffer index carried by the descriptor recorded in H_ERROR. */
export const H_ERROR_DETAIL = 22
/** Number of corrupt descriptors this side has detected (wraps at 2^32). */
export const H_CORRUPT_COUNT = 24
// Words 26..63 are reserved and zero.

export const SIDE_A = 0
export const SIDE_B = 1

// ---- Rings ----------------------------------------------------------------
export const RING_COUNT = 4
export const RING_RX = 0
export const RING_RX_RETURN = 1
export const RING_TX = 2
export const RING_TX_RETURN = 3
export type RingId = 0 | 1 | 2 | 3
export const RING_NAMES = ['rx', 'rxReturn', 'tx', 'txReturn'] as const

// Ring control block, byte offsets relative to the ring's start. Producer and
// consumer counters live on separate cache lines so the two threads do not
// bounce one line between cores on every batch.
/**
 * Producer counter: free-running u32, number of descriptors ever published.
 * Slot of descriptor n = n & (capacity - 1). Only the producer writes it.
 */
export const RING_HEAD = 0
/** Consumer counter: free-running u32, descriptors ever consumed. Only the consumer writes it. */
export const RING_TAIL = 64
/**
 * Doorbell: 1 while the consumer has announced it is going to sleep (or is
 * asleep), 0 otherwise. Set by the consumer, cleared by the consumer when it
 * wakes and by a producer that rings the bell (exchange to 0).
 */
export const RING_WAITERS = 128
/** Doorbell sequence: bumped (add 1) by every ring; the sleeping consumer waits on this word. */
export const RING_SEQUENCE = 132
/** Descriptors start here. */
export const RING_CONTROL_BYTES = 192

// Descriptor: four u32 words.
export const DESCRIPTOR_BYTES = 16
export const DESCRIPTOR_WORDS = 4
/** Pool buffer index. */
export const D_BUFFER_INDEX = 0
/** Bytes used in the buffer, starting at the buffer's first byte. */
export const D_LENGTH = 1
/** DESC_* flags. */
export const D_FLAGS = 2
/** Free for the producer: queue or port id, or other metadata. */
export const D_AUX = 3

/** The buffer starts with a 12-byte struct virtio_net_hdr_v1 (IFF_VNET_HDR). */
export const DESC_VNET_HDR = 1 << 0
/** Flag bits a consumer accepts; the rest are reserved and must be zero. */
export const DESC_KNOWN_FLAGS = DESC_VNET_HDR
export const VIRTIO_NET_HDR_BYTES = 12

// ---- Corruption reasons (stored in H_ERROR) --------------------------------
/** bufferIndex >= bufferCount. */
export const CORRUPT_INDEX_OUT_OF_RANGE = 1
/** length > bufferSize. */
export const CORRUPT_LENGTH_TOO_LARGE = 2
/** The buffer is not owned by the sender: the receiving side already owns it, free. */
export const CORRUPT_NOT_OWNED_BY_SENDER = 3
/** The buffer was delivered again while the receiver still holds it from an earlier delivery. */
export const CORRUPT_DOUBLE_DELIVERY = 4
/** head - tail > capacity: the producer's counter is garbage; nothing on that ring is trusted. */
export const CORRUPT_RING_OVERRUN = 5
/** Reserved flag bits were set. */
export const CORRUPT_RESERVED_FLAGS = 6
/** DESC_VNET_HDR on a descriptor shorter than the virtio_net_hdr it says it starts with. */
export const CORRUPT_VNET_HDR_SHORT = 7
export const CORRUPT_REASON_NAMES: Record<number, string> = {
  [CORRUPT_INDEX_OUT_OF_RANGE]: 'index-out-of-range',
  [CORRUPT_LENGTH_TOO_LARGE]: 'length-too-large',
  [CORRUPT_NOT_OWNED_BY_SENDER]: 'not-owned-by-sender',
  [CORRUPT_DOUBLE_DELIVERY]: 'double-delivery',
  [CORRUPT_RING_OVERRUN]: 'ring-overrun',
  [CORRUPT_RESERVED_FLAGS]: 'reserved-flags',
  [CORRUPT_VNET_HDR_SHORT]: 'vnet-header-short',
}

// ---- Defaults and limits ---------------------------------------------------
export const DEFAULT_BUFFER_SIZE = 2048
export const DEFAULT_BUFFER_COUNT = 1024
export const DEFAULT_RING_CAPACITY = 1024
/** Buffers must be a multiple of this so every buffer starts on a cache line. */
export const BUFFER_ALIGN = 64
export const MAX_BUFFER_SIZE = 1 << 20
export const MAX_BUFFER_COUNT = 1 << 20
export const MAX_RING_CAPACITY = 1 << 20
/** Offsets and sizes are stored in signed 32-bit header words. */
export const MAX_CHANNEL_BYTES = 0x7fffffff

export function ringBytes(capacity: number): number {
  return RING_CONTROL_BYTES + capacity * DESCRIPTOR_BYTES
}

/** Distance between consecutive rings: ringBytes rounded up to a cache line (matters for capacity < 4). */
export function ringStride(capacity: number): number {
  return Math.ceil(ringBytes(capacity) / CACHE_LINE_BYTES) * CACHE_LINE_BYTES
}

export interface ChannelGeometry {
  bufferSize: number
  bufferCount: number
  ringCapacity: number
  rxBufferCount: number
  ringOffsets: [number, number, number, number]
  poolOffset: number
  totalSize: number
}

/** Offsets for a channel with these sizes (inputs assumed validated). */
export function computeGeometry(bufferSize: number, bufferCount: number, ringCapacity: number, rxBufferCount: number): ChannelGeometry {
  const ringOffsets: [number, number, number, number] = [0, 0, 0, 0]
  let offset = HEADER_BYTES
  for (let r = 0; r < RING_COUNT; r++) {
    ringOffsets[r] = offset
    offset += ringStride(ringCapacity)
  }
  // Already a multiple of 64 (HEADER_BYTES and every stride are).
  const poolOffset = offset
  return {
    bufferSize,
    bufferCount,
    ringCapacity,
    rxBufferCount,
    ringOffsets,
    poolOffset,
    totalSize: poolOffset + bufferCount * bufferSize,
  }
}
