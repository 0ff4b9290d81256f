// flowstack nexus addon: shared declarations.
//
// The addon only talks to the kernel. It opens TUN/TAP devices and AF_PACKET
// sockets, runs one I/O thread per device queue, and moves packets between
// the device and a channel (nexus/channel/layout.ts) that lives in a
// SharedArrayBuffer: the I/O thread is the channel's side A. It never parses a
// packet and makes no policy decision; that is TypeScript's job.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <linux/if_packet.h>

namespace flowstack {

// ---- Channel layout (mirror of nexus/channel/layout.ts, version 1) --------
constexpr uint32_t kChannelMagic = 0x46534348;
constexpr uint32_t kLayoutVersion = 1;
constexpr int kHBufferSize = 3;
constexpr int kHBufferCount = 4;
constexpr int kHPoolOffset = 5;
constexpr int kHRingCount = 6;
constexpr int kHRingCapacity = 7;
constexpr int kHRingOffset0 = 8;
constexpr int kHRxBufferCount = 12;
constexpr int kHTotalSize = 13;
constexpr int kHAttached = 16;
constexpr int kHClosed = 18;
constexpr int kHError = 20;
constexpr int kHErrorDetail = 22;
constexpr int kHCorruptCount = 24;
constexpr int kSideA = 0;

constexpr int kRingRx = 0;
constexpr int kRingRxReturn = 1;
constexpr int kRingTx = 2;
constexpr int kRingTxReturn = 3;

constexpr uint32_t kRingHead = 0;
constexpr uint32_t kRingTail = 64;
constexpr uint32_t kRingWaiters = 128;
constexpr uint32_t kRingSequence = 132;
constexpr uint32_t kRingControlBytes = 192;

constexpr uint32_t kDescVnetHdr = 1u << 0;
constexpr uint32_t kDescKnownFlags = kDescVnetHdr;
constexpr uint32_t kVirtioNetHdrBytes = 12;

constexpr uint32_t kCorruptIndexOutOfRange = 1;
constexpr uint32_t kCorruptLengthTooLarge = 2;
constexpr uint32_t kCorruptNotOwnedBySender = 3;
constexpr uint32_t kCorruptRingOverrun = 5;
constexpr uint32_t kCorruptReservedFlags = 6;
constexpr uint32_t kCorruptVnetHdrShort = 7;

// ---- Per-queue counters (mirror of nexus/ports/native.ts) ------------------
// One block of kCounterSlots u64 per queue in a SharedArrayBuffer the JS side
// reads without calling into the addon. Only the queue's I/O thread writes its
// block (relaxed atomic stores: a reader may see counters of one batch
// partially updated, never a torn 64-bit value).
enum Counter : int {
  kRxPackets = 0,
  kRxBytes,
  kTxPackets,
  kTxBytes,
  kDropRingFull,
  kDropPoolEmpty,
  kDropOversize,
  kSyscalls,
  kDoorbells,
  kWakeups,
  kTxErrors,
  kCorrupt,
  kOwnedFree,  // gauge: buffers side A owns and has free
  kRxStalls,     // times reading paused because no buffer or ring slot was free (rx_overflow wait)
  kKernelDrops,  // AF_PACKET: frames the kernel dropped for want of ring space (PACKET_STATISTICS)
  kCounterSlots = 16,
};

enum class DeviceKind { kTun, kTap, kAfPacket };

// One SPSC ring of the channel as seen by side A.
struct RingView {
  uint32_t* head = nullptr;
  uint32_t* tail = nullptr;
  uint32_t* waiters = nullptr;
  uint32_t* sequence = nullptr;
  uint32_t* desc = nullptr;  // capacity x 4 words
  uint32_t mask = 0;
  uint32_t capacity = 0;
};

struct ChannelView {
  uint8_t* base = nullptr;
  size_t length = 0;
  uint32_t* header = nullptr;
  uint8_t* pool = nullptr;
  uint32_t buffer_size = 0;
  uint32_t buffer_count = 0;
  uint32_t rx_buffer_count = 0;
  RingView rings[4];
};

// Validates a channel header and fills `view`; returns an error text or "".
std::string MapChannel(uint8_t* base, size_t length, ChannelView* view);

struct OsError {
  int err = 0;
  std::string syscall;
};

struct OpenOptions {
  DeviceKind kind = DeviceKind::kTun;
  std::string name;
  std::string netns_path;  // empty: the calling thread's namespace
  bool attach = false;     // TUN/TAP: attach to an existing device instead of creating one
  bool vnet_hdr = false;
  bool multi_queue = false;
  uint32_t queues = 1;
  int mtu = 0;  // 0: leave as is
  int tx_queue_len = 0;
  bool up = true;
  // AF_PACKET
  bool promiscuous = false;
  uint32_t block_size = 1 << 20;
  uint32_t block_count = 8;
  uint32_t block_timeout_ms = 1;
  uint32_t fanout_group = 0;
  // When no pool buffer or rx ring slot is free: false = stop reading and let
  // the kernel's own queue absorb (and, when that is full, drop and count) the
  // packets; true = keep reading and drop them here (drops.poolEmpty/ringFull).
  bool drop_on_overflow = false;
};

struct OpenResult {
  std::vector<int> fds;
  std::string name;
  int ifindex = 0;
  int mtu = 0;
  uint8_t mac[6] = {0, 0, 0, 0, 0, 0};
  bool has_mac = false;
  bool vnet_hdr = false;
  bool tso4 = false;
  bool tso6 = false;
  bool csum = false;
  // AF_PACKET rings, one per fd
  std::vector<uint8_t*> rings;
  size_t ring_bytes = 0;
};

// Opens the device (in options.netns_path when set); on failure returns false
// and fills `error`, with every descriptor already closed.
bool OpenDevice(const OpenOptions& options, OpenResult* result, OsError* error);
void CloseDevice(OpenResult* result);

}  // namespace flowstack
