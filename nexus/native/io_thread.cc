// The I/O thread: side A of one queue's channel.
//
// Memory ordering. Ring counters are read and written with __atomic builtins.
// A producer writes descriptors, then publishes its head counter; a consumer
// loads head with acquire (so the descriptors it then reads are complete) and
// publishes its tail with release (so the producer never overwrites a slot
// still being read). Head publication and the doorbell check use SEQ_CST:
// the sleep protocol is a Dekker handshake (consumer: store waiters, load
// head; producer: store head, load waiters) and only sequential consistency
// orders a store before a later load. That costs one fenced store per batch,
// never per packet; we trade it for a doorbell that can never be lost.
#include "io_thread.h"

#include <cerrno>
#include <cstring>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

namespace flowstack {

namespace {
constexpr uint32_t kBatch = 64;
constexpr size_t kScratchBytes = 128 * 1024;
// struct virtio_net_hdr as PACKET_VNET_HDR reads and writes it (no num_buffers).
constexpr uint32_t kPacketVnetHdrBytes = 10;
constexpr uint8_t kVirtioNetHdrFNeedsCsum = 1;
constexpr uint8_t kVirtioNetHdrGsoNone = 0;

uint32_t LoadAcquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
uint32_t LoadRelaxed(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
void StoreRelease(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
void StoreSeqCst(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
}  // namespace

std::string MapChannel(uint8_t* base, size_t length, ChannelView* view) {
  if (length < 256) return "channel shorter than its header";
  // V8 does not promise cache-line alignment for SharedArrayBuffers; the
  // atomics need only natural (4-byte) alignment, cache lines are best effort.
  if (reinterpret_cast<uintptr_t>(base) % 8 != 0) return "channel memory is not 8-byte aligned";
  uint32_t* h = reinterpret_cast<uint32_t*>(base);
  if (h[0] != kChannelMagic) return "bad channel magic";
  if (h[1] != kLayoutVersion) return "unsupported channel layout version";
  if (h[kHRingCount] != 4) return "channel must have 4 rings";
  uint32_t capacity = h[kHRingCapacity];
  if (capacity == 0 || (capacity & (capacity - 1)) != 0) return "ring capacity is not a power of two";
  uint64_t total = h[kHTotalSize];
  if (total > length) return "channel header claims more bytes than the buffer holds";
  uint64_t pool_end = static_cast<uint64_t>(h[kHPoolOffset]) + static_cast<uint64_t>(h[kHBufferSize]) * h[kHBufferCount];
  if (pool_end > total || h[kHPoolOffset] % 64 != 0) return "pool lies outside the channel";
  if (h[kHRxBufferCount] > h[kHBufferCount]) return "rx buffer count exceeds buffer count";
  view->base = base;
  view->length = length;
  view->header = h;
  view->pool = base + h[kHPoolOffset];
  view->buffer_size = h[kHBufferSize];
  view->buffer_count = h[kHBufferCount];
  view->rx_buffer_count = h[kHRxBufferCount];
  for (int r = 0; r < 4; r++) {
    uint64_t offset = h[kHRingOffset0 + r];
    if (offset % 64 != 0 || offset + kRingControlBytes + static_cast<uint64_t>(capacity) * 16 > total) return "ring lies outside the channel";
    uint8_t* ring = base + offset;
    RingView& v = view->rings[r];
    v.head = reinterpret_cast<uint32_t*>(ring + kRingHead);
    v.tail = reinterpret_cast<uint32_t*>(ring + kRingTail);
    v.waiters = reinterpret_cast<uint32_t*>(ring + kRingWaiters);
    v.sequence = reinterpret_cast<uint32_t*>(ring + kRingSequence);
    v.desc = reinterpret_cast<uint32_t*>(ring + kRingControlBytes);
    v.capacity = capacity;
    v.mask = capacity - 1;
  }
  return "";
}

IoQueue::IoQueue(const Config& config, std::function<void()> ring_doorbell)
    : config_(config), ring_doorbell_(std::move(ring_doorbell)), scratch_(kScratchBytes) {
  const ChannelView& ch = config_.channel;
  held_.assign(ch.buffer_count, 0);
  free_.reserve(ch.buffer_count);
  // Buffers [0, rxBufferCount) start owned by side A. Push in reverse so the
  // lowest index is handed out first.
  for (uint32_t i = ch.rx_buffer_count; i > 0; i--) {
    free_.push_back(i - 1);
    held_[i - 1] = 1;
  }
  rx_head_ = rx_published_ = LoadRelaxed(ch.rings[kRingRx].head);
  tx_return_head_ = tx_return_published_ = LoadRelaxed(ch.rings[kRingTxReturn].head);
}

IoQueue::~IoQueue() {
  Stop();
  if (event_fd_ >= 0) close(event_fd_);
}

std::string IoQueue::Start() {
  uint32_t* attached = &config_.channel.header[kHAttached + kSideA];
  uint32_t expected = 0;
  if (!__atomic_compare_exchange_n(attached, &expected, 1, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    return "side A of this channel is already attached";
  }
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (event_fd_ < 0) return std::string("eventfd: ") + std::strerror(errno);
  if (config_.kind == DeviceKind::kAfPacket) {
    int enabled = 0;
    socklen_t len = sizeof(enabled);
    packet_vnet_hdr_ = getsockopt(config_.fd, SOL_PACKET, PACKET_VNET_HDR, &enabled, &len) == 0 && enabled != 0;
  }
  Set(kOwnedFree, free_.size());
  thread_ = std::thread([this] { Run(); });
  started_ = true;
  return "";
}

void IoQueue::Kick() {
  if (event_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t rc = write(event_fd_, &one, sizeof(one));
  (void)rc;  // EAGAIN only when the counter is saturated: the thread is awake anyway
}

void IoQueue::Stop() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  stop_.store(true, std::memory_order_release);
  Kick();
  if (thread_.joinable()) thread_.join();
  // The thread is gone; this thread now plays side A for the last time.
  // Untransmitted tx buffers go back to side B, returned rx buffers come home.
  RingView& tx = config_.channel.rings[kRingTx];
  uint32_t head = LoadAcquire(tx.head);
  uint32_t tail = LoadRelaxed(tx.tail);
  if (head - tail <= tx.capacity) {
    while (tail != head) {
      const uint32_t* d = tx.desc + (tail & tx.mask) * 4;
      uint32_t index = d[0];
      tail++;
      if (index < config_.channel.buffer_count && !held_[index]) ProduceTxReturn(index);
    }
    StoreRelease(tx.tail, tail);
  }
  PublishTxReturn();
  DrainRxReturn();
  PublishRx();
  ReadKernelDrops();
  Set(kOwnedFree, free_.size());
  __atomic_store_n(&config_.channel.header[kHClosed + kSideA], 1u, __ATOMIC_SEQ_CST);
}

void IoQueue::Reclaim() {
  if (!stopped_) return;
  DrainRxReturn();
  Set(kOwnedFree, free_.size());
}

void IoQueue::RecordCorrupt(uint32_t reason, uint32_t detail) {
  uint32_t* error = &config_.channel.header[kHError + kSideA];
  uint32_t expected = 0;
  if (__atomic_compare_exchange_n(error, &expected, reason, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    __atomic_store_n(&config_.channel.header[kHErrorDetail + kSideA], detail, __ATOMIC_SEQ_CST);
  }
  __atomic_add_fetch(&config_.channel.header[kHCorruptCount + kSideA], 1u, __ATOMIC_SEQ_CST);
  Add(kCorrupt, 1);
}

void IoQueue::Ring(RingView& ring) {
  // Rings the bell only if the consumer announced sleep; exchanging the word
  // to 0 makes concurrent producers (there is one) ring at most once.
  if (__atomic_load_n(ring.waiters, __ATOMIC_SEQ_CST) == 0) return;
  if (__atomic_exchange_n(ring.waiters, 0u, __ATOMIC_SEQ_CST) == 0) return;
  __atomic_add_fetch(ring.sequence, 1u, __ATOMIC_SEQ_CST);
  Add(kDoorbells, 1);
  ring_doorbell_();
}

bool IoQueue::ProduceRx(uint32_t index, uint32_t length, uint32_t flags) {
  RingView& rx = config_.channel.rings[kRingRx];
  if (rx_head_ - LoadAcquire(rx.tail) >= rx.capacity) return false;
  uint32_t* d = rx.desc + (rx_head_ & rx.mask) * 4;
  d[0] = index;
  d[1] = length;
  d[2] = flags;
  d[3] = config_.queue_index;
  rx_head_++;
  held_[index] = 0;
  return true;
}

void IoQueue::PublishRx() {
  if (rx_head_ == rx_published_) return;
  RingView& rx = config_.channel.rings[kRingRx];
  StoreSeqCst(rx.head, rx_head_);
  rx_published_ = rx_head_;
  Ring(rx);
}

void IoQueue::ProduceTxReturn(uint32_t index) {
  // txReturn has the same capacity as tx and carries only buffers that came
  // in on tx, so it can never be full while the peer follows the protocol;
  // if it is (a peer that stopped draining), we wait rather than lose a buffer.
  RingView& ring = config_.channel.rings[kRingTxReturn];
  while (tx_return_head_ - LoadAcquire(ring.tail) >= ring.capacity) {
    PublishTxReturn();
    if (stop_.load(std::memory_order_acquire) && stopped_) return;
    usleep(50);
  }
  uint32_t* d = ring.desc + (tx_return_head_ & ring.mask) * 4;
  d[0] = index;
  d[1] = 0;
  d[2] = 0;
  d[3] = config_.queue_index;
  tx_return_head_++;
  held_[index] = 0;
}

void IoQueue::PublishTxReturn() {
  if (tx_return_head_ == tx_return_published_) return;
  RingView& ring = config_.channel.rings[kRingTxReturn];
  StoreSeqCst(ring.head, tx_return_head_);
  tx_return_published_ = tx_return_head_;
  Ring(ring);
}

bool IoQueue::DrainRxReturn() {
  RingView& ring = config_.channel.rings[kRingRxReturn];
  uint32_t head = LoadAcquire(ring.head);
  uint32_t tail = LoadRelaxed(ring.tail);
  if (head == tail) return false;
  if (head - tail > ring.capacity) {
    RecordCorrupt(kCorruptRingOverrun, head);
    StoreRelease(ring.tail, head);  // nothing on it can be trusted; skip it all
    return false;
  }
  while (tail != head) {
    uint32_t index = ring.desc[(tail & ring.mask) * 4];
    tail++;
    if (index >= config_.channel.buffer_count) {
      RecordCorrupt(kCorruptIndexOutOfRange, index);
    } else if (held_[index]) {
      RecordCorrupt(kCorruptNotOwnedBySender, index);
    } else {
      held_[index] = 1;
      free_.push_back(index);
    }
  }
  StoreRelease(ring.tail, tail);
  return true;
}

bool IoQueue::ServiceTx() {
  RingView& tx = config_.channel.rings[kRingTx];
  uint32_t head = LoadAcquire(tx.head);
  uint32_t tail = LoadRelaxed(tx.tail);
  if (head == tail) return false;
  if (head - tail > tx.capacity) {
    RecordCorrupt(kCorruptRingOverrun, head);
    StoreRelease(tx.tail, head);
    return false;
  }
  const ChannelView& ch = config_.channel;
  bool progressed = false;
  uint32_t budget = kBatch;
  static const uint8_t zero_vnet_hdr[kVirtioNetHdrBytes] = {};
  struct mmsghdr msgs[kBatch];
  struct iovec iovs[kBatch];
  struct iovec with_hdr[kBatch][2];
  uint32_t indices[kBatch];
  uint32_t positions[kBatch];
  while (tail != head && budget > 0) {
    // Validate a batch of descriptors; corrupt ones are consumed and counted.
    uint32_t n = 0;
    uint32_t scan = tail;
    while (scan != head && n < budget) {
      const uint32_t* d = tx.desc + (scan & tx.mask) * 4;
      uint32_t index = d[0], length = d[1], flags = d[2];
      uint32_t reason = 0;
      bool refuse = false;  // valid buffer, but not transmittable here: return it
      if (index >= ch.buffer_count) reason = kCorruptIndexOutOfRange;
      else if (held_[index]) reason = kCorruptNotOwnedBySender;
      else if (length > ch.buffer_size) reason = kCorruptLengthTooLarge;
      else if (flags & ~kDescKnownFlags) reason = kCorruptReservedFlags;
      else if ((flags & kDescVnetHdr) && length < kVirtioNetHdrBytes) reason = kCorruptVnetHdrShort;
      else if ((flags & kDescVnetHdr) && !config_.vnet_hdr) refuse = true;
      if ((reason != 0 || refuse) && n > 0) break;  // keep each send batch contiguous
      scan++;
      if (reason != 0) {
        RecordCorrupt(reason, index);
        if (reason == kCorruptLengthTooLarge || reason == kCorruptReservedFlags || reason == kCorruptVnetHdrShort) {
          held_[index] = 1;
          ProduceTxReturn(index);
        }
        tail = scan;
        continue;
      }
      if (refuse) {
        // A virtio header on a port without IFF_VNET_HDR: nothing to hand it to.
        Add(kTxErrors, 1);
        held_[index] = 1;
        ProduceTxReturn(index);
        tail = scan;
        continue;
      }
      held_[index] = 1;
      indices[n] = index;
      positions[n] = scan;
      iovs[n].iov_base = Buffer(index);
      iovs[n].iov_len = length;
      msgs[n].msg_len = flags;  // carries the flags until the send below
      n++;
    }
    if (n == 0) {
      progressed = true;
      if (scan == head) break;
      budget = budget > 1 ? budget - 1 : 0;
      continue;
    }
    uint32_t done = 0;
    if (config_.kind == DeviceKind::kAfPacket) {
      uint32_t usable = n;
      uint32_t sent_total = 0;
      while (sent_total < usable) {
        uint32_t count = usable - sent_total;
        for (uint32_t i = 0; i < count; i++) {
          std::memset(&msgs[i], 0, sizeof(msgs[i]));
          if (packet_vnet_hdr_) {
            // The socket expects a virtio_net_hdr first: "no offload".
            with_hdr[i][0].iov_base = const_cast<uint8_t*>(zero_vnet_hdr);
            with_hdr[i][0].iov_len = kPacketVnetHdrBytes;
            with_hdr[i][1] = iovs[sent_total + i];
            msgs[i].msg_hdr.msg_iov = with_hdr[i];
            msgs[i].msg_hdr.msg_iovlen = 2;
          } else {
            msgs[i].msg_hdr.msg_iov = &iovs[sent_total + i];
            msgs[i].msg_hdr.msg_iovlen = 1;
          }
        }
        Add(kSyscalls, 1);
        int rc = sendmmsg(config_.fd, msgs, count, MSG_DONTWAIT);
        if (rc < 0) {
          if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) {
            tx_blocked_ = true;
            break;
          }
          if (errno == EINTR) continue;
          Add(kTxErrors, 1);  // this one packet is refused (EMSGSIZE, ENETDOWN...)
          ProduceTxReturn(indices[sent_total]);
          sent_total++;
          continue;
        }
        for (int i = 0; i < rc; i++) {
          Add(kTxPackets, 1);
          Add(kTxBytes, iovs[sent_total + i].iov_len);
          ProduceTxReturn(indices[sent_total + i]);
        }
        sent_total += static_cast<uint32_t>(rc);
      }
      done = sent_total;
      if (done < usable) {
        // Leave the rest on the ring, re-marked as side B's, for after POLLOUT.
        for (uint32_t i = done; i < usable; i++) held_[indices[i]] = 0;
        // positions[i] - 1 is the ring slot of descriptor i: resume at the
        // first unsent one (corrupt descriptors before it stay consumed).
        tail = positions[done] - 1;
        progressed = progressed || done > 0;
        break;
      }
      tail = scan;
    } else {
      for (uint32_t i = 0; i < n; i++) {
        uint32_t flags = msgs[i].msg_len;
        struct iovec parts[2];
        int count = 0;
        if (config_.vnet_hdr && !(flags & kDescVnetHdr)) {
          // A plain packet on a vnet_hdr device: prepend "no offload".
          parts[count].iov_base = const_cast<uint8_t*>(zero_vnet_hdr);
          parts[count].iov_len = kVirtioNetHdrBytes;
          count++;
        }
        parts[count++] = iovs[i];
        Add(kSyscalls, 1);
        ssize_t rc = count == 1 ? write(config_.fd, parts[0].iov_base, parts[0].iov_len) : writev(config_.fd, parts, count);
        if (rc < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          for (uint32_t j = i; j < n; j++) held_[indices[j]] = 0;
          tail = positions[i] - 1;
          tx_blocked_ = true;
          break;
        }
        if (rc < 0) {
          Add(kTxErrors, 1);  // EINVAL (malformed), EIO (link down): the kernel refused it
        } else {
          Add(kTxPackets, 1);
          Add(kTxBytes, iovs[i].iov_len);
        }
        ProduceTxReturn(indices[i]);
        done++;
      }
      if (tx_blocked_) {
        progressed = progressed || done > 0;
        break;
      }
      tail = scan;
    }
    progressed = true;
    budget -= n;
  }
  StoreRelease(tx.tail, tail);
  PublishTxReturn();
  return progressed;
}

// True when a received packet has somewhere to go: a free buffer and a slot
// on the rx ring. Otherwise, in wait mode, marks the queue starved: reading
// stops until side B returns buffers, and the kernel queue holds the rest.
bool IoQueue::RxRoom() {
  if (free_.empty()) DrainRxReturn();
  const RingView& rx = config_.channel.rings[kRingRx];
  bool room = !free_.empty() && rx_head_ - LoadAcquire(rx.tail) < rx.capacity;
  if (!room && !config_.drop_on_overflow) {
    PublishRx();  // whatever we hold is B's to consume before it can return anything
    if (!rx_starved_) Add(kRxStalls, 1);
    rx_starved_ = true;
  }
  return room;
}

bool IoQueue::ServiceRx() {
  const ChannelView& ch = config_.channel;
  bool progressed = false;
  uint32_t flags = config_.vnet_hdr ? kDescVnetHdr : 0;
  for (uint32_t i = 0; i < kBatch; i++) {
    bool to_pool = RxRoom();
    if (!to_pool && rx_starved_) break;
    struct iovec parts[2];
    int count = 0;
    uint32_t index = 0;
    if (to_pool) {
      index = free_.back();
      // The kernel fills the 10-byte virtio_net_hdr and skips the 2-byte
      // num_buffers of the 12-byte v1 header: zero it so no stale bytes leak.
      if (config_.vnet_hdr) Buffer(index)[10] = Buffer(index)[11] = 0;
      parts[count].iov_base = Buffer(index);
      parts[count].iov_len = ch.buffer_size;
      count++;
    }
    // The scratch tail catches what does not fit in a pool buffer, so an
    // oversize packet is detected (and counted) instead of silently cut.
    parts[count].iov_base = scratch_.data();
    parts[count].iov_len = scratch_.size();
    count++;
    Add(kSyscalls, 1);
    ssize_t n = readv(config_.fd, parts, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: drained. Other errors surface through poll (POLLERR/POLLHUP).
    }
    progressed = true;
    if (!to_pool) {
      Add(free_.empty() ? kDropPoolEmpty : kDropRingFull, 1);
      continue;
    }
    if (static_cast<size_t>(n) > ch.buffer_size) {
      Add(kDropOversize, 1);
      continue;
    }
    free_.pop_back();
    ProduceRx(index, static_cast<uint32_t>(n), flags);
    Add(kRxPackets, 1);
    Add(kRxBytes, static_cast<uint64_t>(n));
  }
  PublishRx();
  return progressed;
}

bool IoQueue::ServicePacketRing() {
  const ChannelView& ch = config_.channel;
  bool progressed = false;
  for (uint32_t b = 0; b < config_.block_count; b++) {
    auto* block = reinterpret_cast<struct tpacket_block_desc*>(config_.packet_ring + static_cast<size_t>(block_cursor_) * config_.block_size);
    uint32_t status = __atomic_load_n(&block->hdr.bh1.block_status, __ATOMIC_ACQUIRE);
    if (!(status & TP_STATUS_USER)) break;
    uint32_t packets = block->hdr.bh1.num_pkts;
    if (block_packet_ == 0) block_offset_ = block->hdr.bh1.offset_to_first_pkt;
    while (block_packet_ < packets) {
      auto* frame = reinterpret_cast<struct tpacket3_hdr*>(reinterpret_cast<uint8_t*>(block) + block_offset_);
      const uint8_t* data = reinterpret_cast<const uint8_t*>(frame) + frame->tp_mac;
      uint32_t length = frame->tp_snaplen;
      // A frame the kernel left work on (partial checksum, TP_STATUS_CSUMNOTREADY;
      // or GSO) goes up with the kernel's virtio_net_hdr in front, as on a
      // vnet_hdr TUN: the consumer finishes it. Complete frames go up bare.
      const uint8_t* vnet = packet_vnet_hdr_ ? data - kPacketVnetHdrBytes : nullptr;
      bool offload = vnet != nullptr && ((vnet[0] & kVirtioNetHdrFNeedsCsum) != 0 || vnet[1] != kVirtioNetHdrGsoNone);
      uint32_t headroom = offload ? kVirtioNetHdrBytes : 0;
      bool oversize = length + headroom > ch.buffer_size || frame->tp_len > frame->tp_snaplen;
      if (!oversize) {
        bool room = RxRoom();
        if (!room && rx_starved_) {
          // Resume at this frame once side B returns buffers; the block stays ours.
          PublishRx();
          return progressed;
        }
        if (!room) {
          Add(free_.empty() ? kDropPoolEmpty : kDropRingFull, 1);
        } else {
          uint32_t index = free_.back();
          free_.pop_back();
          uint8_t* buffer = Buffer(index);
          if (offload) {
            std::memcpy(buffer, vnet, kPacketVnetHdrBytes);
            buffer[10] = buffer[11] = 0;  // num_buffers of the 12-byte v1 header
          }
          std::memcpy(buffer + headroom, data, length);
          ProduceRx(index, length + headroom, offload ? kDescVnetHdr : 0);
          Add(kRxPackets, 1);
          Add(kRxBytes, length);
        }
      } else {
        Add(kDropOversize, 1);
      }
      progressed = true;
      block_offset_ += frame->tp_next_offset;
      block_packet_++;
    }
    // Hand the block back to the kernel only after every frame was copied.
    __atomic_store_n(&block->hdr.bh1.block_status, static_cast<uint32_t>(TP_STATUS_KERNEL), __ATOMIC_RELEASE);
    block_cursor_ = (block_cursor_ + 1) % config_.block_count;
    block_packet_ = 0;
    PublishRx();  // one batch per block
    progressed = true;
  }
  return progressed;
}

void IoQueue::ReadKernelDrops() {
  if (config_.kind != DeviceKind::kAfPacket) return;
  // PACKET_STATISTICS resets on read, so the counter accumulates.
  struct tpacket_stats_v3 stats;
  socklen_t len = sizeof(stats);
  Add(kSyscalls, 1);
  if (getsockopt(config_.fd, SOL_PACKET, PACKET_STATISTICS, &stats, &len) == 0 && stats.tp_drops > 0) Add(kKernelDrops, stats.tp_drops);
}

void IoQueue::Sleep() {
  ReadKernelDrops();
  RingView& tx = config_.channel.rings[kRingTx];
  RingView& rx_return = config_.channel.rings[kRingRxReturn];
  bool want_returns = free_.empty() || rx_starved_;
  // Announce, then re-check: a producer that published before seeing our
  // announcement is caught by the re-check; one that publishes after it sees
  // waiters = 1 and kicks the eventfd (through the channel's notifier hook).
  StoreSeqCst(tx.waiters, 1);
  if (want_returns) StoreSeqCst(rx_return.waiters, 1);
  // Pending tx counts only while the device accepts writes; a blocked device
  // wakes us through POLLOUT instead (no spinning on EAGAIN).
  bool ready = (!tx_blocked_ && __atomic_load_n(tx.head, __ATOMIC_SEQ_CST) != LoadRelaxed(tx.tail)) ||
               (want_returns && __atomic_load_n(rx_return.head, __ATOMIC_SEQ_CST) != LoadRelaxed(rx_return.tail));
  if (config_.kind == DeviceKind::kAfPacket && !rx_starved_) {
    auto* block = reinterpret_cast<struct tpacket_block_desc*>(config_.packet_ring + static_cast<size_t>(block_cursor_) * config_.block_size);
    if (__atomic_load_n(&block->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) ready = true;
  }
  if (!ready && !stop_.load(std::memory_order_acquire)) {
    struct pollfd fds[2];
    fds[0].fd = event_fd_;
    fds[0].events = POLLIN;
    fds[1].fd = config_.fd;
    // A starved queue leaves the device alone (the kernel queues for us) and
    // waits for returned buffers; the 1 ms timeout covers a side B that
    // consumed the ring but holds the buffers without returning them.
    fds[1].events = static_cast<short>((rx_starved_ ? 0 : POLLIN) | (tx_blocked_ ? POLLOUT : 0));
    fds[0].revents = fds[1].revents = 0;
    Add(kSyscalls, 1);
    int rc = poll(fds, device_gone_ ? 1 : 2, rx_starved_ ? 1 : -1);
    if (rc > 0 && (fds[0].revents & POLLIN)) {
      uint64_t value;
      Add(kSyscalls, 1);
      ssize_t got = read(event_fd_, &value, sizeof(value));
      (void)got;
    }
    if (rc > 0 && (fds[1].revents & (POLLERR | POLLHUP | POLLNVAL))) {
      if (config_.kind == DeviceKind::kAfPacket && !(fds[1].revents & (POLLHUP | POLLNVAL))) {
        // A packet socket reports link events (ENETDOWN on a flap) as a
        // pending error; reading it clears it and the ring keeps working.
        int err = 0;
        socklen_t len = sizeof(err);
        Add(kSyscalls, 1);
        getsockopt(config_.fd, SOL_SOCKET, SO_ERROR, &err, &len);
      } else {
        // A detached TUN/TAP (its interface was deleted) stays in error:
        // stop polling it and wait for close.
        device_gone_ = true;
      }
    }
    if (rc > 0 && (fds[1].revents & POLLOUT)) tx_blocked_ = false;
    Add(kWakeups, 1);
  }
  __atomic_store_n(tx.waiters, 0u, __ATOMIC_SEQ_CST);
  if (want_returns) __atomic_store_n(rx_return.waiters, 0u, __ATOMIC_SEQ_CST);
}

void IoQueue::Run() {
  while (!stop_.load(std::memory_order_acquire)) {
    bool work = DrainRxReturn();
    if (rx_starved_ && !free_.empty() && rx_head_ - LoadAcquire(config_.channel.rings[kRingRx].tail) < config_.channel.rings[kRingRx].capacity) {
      rx_starved_ = false;
      work = true;
    }
    if (!tx_blocked_ && ServiceTx()) work = true;
    if (!rx_starved_ && (config_.kind == DeviceKind::kAfPacket ? ServicePacketRing() : (!device_gone_ && ServiceRx()))) work = true;
    Set(kOwnedFree, free_.size());
    if (!work) Sleep();
  }
}

}  // namespace flowstack
