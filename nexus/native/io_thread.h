// One I/O thread per device queue: side A of that queue's channel.
#pragma once

#include "nexus.h"

#include <functional>

namespace flowstack {

class IoQueue {
 public:
  struct Config {
    DeviceKind kind;
    int fd;
    uint8_t* packet_ring;  // AF_PACKET TPACKET_V3 RX ring, else nullptr
    uint32_t block_size;
    uint32_t block_count;
    bool vnet_hdr;
    bool drop_on_overflow;
    uint32_t queue_index;
    ChannelView channel;
    uint64_t* counters;  // kCounterSlots u64 in shared memory
  };

  // `ring_doorbell` is called from the I/O thread once per batch, only when
  // the JS consumer announced that it sleeps. It must not block.
  IoQueue(const Config& config, std::function<void()> ring_doorbell);
  ~IoQueue();

  // Returns an error text, or "" once the thread runs.
  std::string Start();
  // JS flushed a ring that this thread consumes while it announced sleep.
  void Kick();
  // Stops and joins the thread, then hands every buffer it can back: pending
  // tx descriptors go to txReturn untransmitted, rxReturn is drained into the
  // free list. Idempotent.
  void Stop();
  // After Stop(): takes in buffers side B returned since (its final drain).
  void Reclaim();

 private:
  void Run();
  bool RxRoom();
  bool ServiceRx();
  bool ServiceTx();
  bool ServicePacketRing();
  bool DrainRxReturn();
  void PublishRx();
  void PublishTxReturn();
  void Sleep();
  void ReadKernelDrops();
  void RecordCorrupt(uint32_t reason, uint32_t detail);
  void Add(Counter c, uint64_t n) {
    // Single writer: a relaxed load+store is enough; readers see whole u64s.
    __atomic_store_n(&config_.counters[c], __atomic_load_n(&config_.counters[c], __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
  }
  void Set(Counter c, uint64_t v) { __atomic_store_n(&config_.counters[c], v, __ATOMIC_RELAXED); }
  uint8_t* Buffer(uint32_t index) const { return config_.channel.pool + static_cast<size_t>(index) * config_.channel.buffer_size; }
  bool ProduceRx(uint32_t index, uint32_t length, uint32_t flags);
  void ProduceTxReturn(uint32_t index);
  void Ring(RingView& ring);

  Config config_;
  std::function<void()> ring_doorbell_;
  std::thread thread_;
  int event_fd_ = -1;
  std::atomic<bool> stop_{false};
  bool started_ = false;
  bool stopped_ = false;

  // Buffers side A owns and may fill (a stack: the most recently returned
  // buffer is the warmest in cache).
  std::vector<uint32_t> free_;
  // held_[i] = 1 while side A owns buffer i (free or in use). Descriptors from
  // side B naming a buffer A already owns are corrupt.
  std::vector<uint8_t> held_;
  // Local copies of counters this thread writes; published with release stores.
  uint32_t rx_head_ = 0;        // rx: our producer counter
  uint32_t rx_published_ = 0;
  uint32_t tx_return_head_ = 0;  // txReturn: our producer counter
  uint32_t tx_return_published_ = 0;
  bool tx_blocked_ = false;
  bool device_gone_ = false;  // the device refused a write with EAGAIN: wait for POLLOUT
  // AF_PACKET socket with PACKET_VNET_HDR: a 10-byte struct virtio_net_hdr
  // precedes every ring frame, and every sent frame must start with one.
  bool packet_vnet_hdr_ = false;
  uint32_t block_cursor_ = 0;
  // Position inside the current TPACKET_V3 block when reading paused mid-block.
  uint32_t block_packet_ = 0;
  uint32_t block_offset_ = 0;
  // Reading paused for want of buffers or ring slots (drop_on_overflow off).
  bool rx_starved_ = false;
  std::vector<uint8_t> scratch_;
};

}  // namespace flowstack
