// allocHugeBuffer(bytes) -> ArrayBuffer
//   Zeroed memory from mmap, 2 MiB aligned, with MADV_HUGEPAGE, for the
//   classifier's flow table. With 100 000 flows the table is ~16 MiB probed at
//   random: on 4 KiB pages nearly every probe also misses the TLB, and under
//   nested paging (this VM) a TLB miss is a two-dimensional page walk.
//
// flowLookupBatch(slots, buf, offsets, lengths, n, link, portIndex, inbound, out) -> hits
//   For packets i < n at buf[offsets[i] .. +lengths[i]): parse the fast-path
//   headers, hash the flow key and probe the flow table; out[i] is the slot
//   index of the flow, -1 when the flow is not in the table, -2 when the
//   packet needs the slow path (anything extractFlowKeyFast refuses). Reads
//   only: TypeScript inserts, deletes and updates counters.
//
// Both mirror TypeScript that must stay in step:
//   classifier/flow-table.ts  slot layout (16 words), hashWords, probing;
//   classifier/extract.ts     extractFlowKeyFast (what the fast path takes);
//   classifier/key.ts         key layout (10 words).
// test/classifier/native.test.ts runs both against each other.
#include "flow_table.h"

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace flowstack {
namespace {

constexpr uint32_t kKeyWords = 10;
constexpr uint32_t kSlotWords = 16;
constexpr uint32_t kSlotKey = 1;
constexpr uint32_t kWordMeta = 0;
constexpr uint32_t kWordLocal = 1;
constexpr uint32_t kWordRemote = 5;
constexpr uint32_t kWordPorts = 9;
constexpr size_t kHugePage = 2u << 20;
// Packets parsed and prefetched ahead of the probes: enough misses in flight
// to cover DRAM latency (~150-300 ns here), few enough that the prefetched
// lines are still in L1 when probed (32 x 64 B).
constexpr uint32_t kChunk = 32;

constexpr int32_t kMiss = -1;
constexpr int32_t kSlowPath = -2;

// classifier/table.ts hashWords with width = kKeyWords (uint32 arithmetic is
// Math.imul's).
inline uint32_t HashKey(const uint32_t* w) {
  uint32_t h = 0x9e3779b9u ^ kKeyWords;
  for (uint32_t i = 0; i < kKeyWords; i++) {
    h = (h ^ w[i]) * 0x85ebca6bu;
    h ^= h >> 15;
  }
  h = (h ^ (h >> 16)) * 0x7feb352du;
  h = (h ^ (h >> 15)) * 0x846ca68bu;
  return h ^ (h >> 16);
}

inline uint32_t Be16(const uint8_t* p) { return (uint32_t(p[0]) << 8) | p[1]; }
inline uint32_t Be32(const uint8_t* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }

// extractFlowKeyFast: an unfragmented IPv4 packet (any protocol, options
// allowed) or an IPv6 packet whose next header is TCP or UDP, on an IP link
// (link 1) or untagged Ethernet (link 0). Same key, same refusals.
bool ParseFast(const uint8_t* buf, size_t size, int64_t off, int64_t len, uint32_t link, uint32_t port_index, bool inbound, uint32_t* key) {
  if (off < 0 || len < 0 || static_cast<uint64_t>(off + len) > size) return false;
  int64_t at = off;
  const int64_t end = off + len;
  if (link == 0) {
    if (len < 14) return false;
    const uint32_t ethertype = Be16(buf + off + 12);
    at += 14;
    if (ethertype == 0x0800) {
      if (at >= end || (buf[at] >> 4) != 4) return false;
    } else if (ethertype == 0x86dd) {
      if (at >= end || (buf[at] >> 4) != 6) return false;
    } else {
      return false;
    }
  } else if (at >= end) {
    return false;
  }
  const uint8_t* ip = buf + at;
  const uint32_t first = ip[0];
  if ((first >> 4) == 4) {
    const int64_t header_length = (first & 0x0f) << 2;
    if (header_length < 20 || at + header_length > end) return false;
    const int64_t total_length = Be16(ip + 2);
    if (total_length < header_length || at + total_length > end) return false;
    if ((Be16(ip + 6) & 0x3fff) != 0) return false;
    const uint32_t protocol = ip[9];
    const uint32_t src = Be32(ip + 12);
    const uint32_t dst = Be32(ip + 16);
    uint32_t ports = 0;
    if (protocol == 6 || protocol == 17) {
      if (header_length + 4 > total_length) return false;
      const uint32_t sport = Be16(ip + header_length);
      const uint32_t dport = Be16(ip + header_length + 2);
      ports = inbound ? (dport << 16) | sport : (sport << 16) | dport;
    }
    key[kWordMeta] = (4u << 24) | (protocol << 16) | (port_index & 0xffff);
    key[kWordLocal] = inbound ? dst : src;
    key[kWordLocal + 1] = 0;
    key[kWordLocal + 2] = 0;
    key[kWordLocal + 3] = 0;
    key[kWordRemote] = inbound ? src : dst;
    key[kWordRemote + 1] = 0;
    key[kWordRemote + 2] = 0;
    key[kWordRemote + 3] = 0;
    key[kWordPorts] = ports;
    return true;
  }
  if ((first >> 4) != 6 || at + 40 > end) return false;
  const uint32_t protocol = ip[6];
  if (protocol != 6 && protocol != 17) return false;
  const int64_t payload_end = at + 40 + Be16(ip + 4);
  if (payload_end > end || payload_end < at + 44) return false;
  const uint8_t* local = inbound ? ip + 24 : ip + 8;
  const uint8_t* remote = inbound ? ip + 8 : ip + 24;
  for (uint32_t i = 0; i < 4; i++) {
    key[kWordLocal + i] = Be32(local + 4 * i);
    key[kWordRemote + i] = Be32(remote + 4 * i);
  }
  const uint32_t sport = Be16(ip + 40);
  const uint32_t dport = Be16(ip + 42);
  key[kWordMeta] = (6u << 24) | (protocol << 16) | (port_index & 0xffff);
  key[kWordPorts] = inbound ? (dport << 16) | sport : (sport << 16) | dport;
  return true;
}

// Linear probing from the home slot; the table keeps its load at or below
// 1/2, so a run ends at an empty slot long before `capacity` probes (the bound
// only guards against a table TypeScript filled some other way).
int32_t Probe(const uint32_t* slots, uint32_t mask, uint32_t hash, const uint32_t* key) {
  uint32_t slot = hash & mask;
  for (uint32_t probes = 0; probes <= mask; probes++) {
    const uint32_t* s = slots + static_cast<size_t>(slot) * kSlotWords;
    if (s[0] == 0) return kMiss;
    // The ports and the remote address differ first between flows.
    if (s[kSlotKey + kWordPorts] == key[kWordPorts] && s[kSlotKey + kWordRemote] == key[kWordRemote] &&
        std::memcmp(s + kSlotKey, key, kKeyWords * sizeof(uint32_t)) == 0) {
      return static_cast<int32_t>(slot);
    }
    slot = (slot + 1) & mask;
  }
  return kMiss;
}

bool GetTyped(napi_env env, napi_value value, napi_typedarray_type want, void** data, size_t* length) {
  napi_typedarray_type type;
  return napi_get_typedarray_info(env, value, &type, length, data, nullptr, nullptr) == napi_ok && type == want;
}

napi_value FlowLookupBatch(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  static const char kUsage[] =
      "flowLookupBatch(slots: Uint32Array, buf: Uint8Array, offsets: Int32Array, lengths: Int32Array, n, link, portIndex, inbound, out: Int32Array)";
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 9) {
    napi_throw_type_error(env, "NEXUS_BAD_ARGS", kUsage);
    return nullptr;
  }
  void* slots_data = nullptr;
  void* buf_data = nullptr;
  void* offsets_data = nullptr;
  void* lengths_data = nullptr;
  void* out_data = nullptr;
  size_t slot_words = 0, buf_size = 0, offsets_length = 0, lengths_length = 0, out_length = 0;
  uint32_t n = 0, link = 0, port_index = 0;
  bool inbound = false;
  if (!GetTyped(env, argv[0], napi_uint32_array, &slots_data, &slot_words) || !GetTyped(env, argv[1], napi_uint8_array, &buf_data, &buf_size) ||
      !GetTyped(env, argv[2], napi_int32_array, &offsets_data, &offsets_length) ||
      !GetTyped(env, argv[3], napi_int32_array, &lengths_data, &lengths_length) || napi_get_value_uint32(env, argv[4], &n) != napi_ok ||
      napi_get_value_uint32(env, argv[5], &link) != napi_ok || napi_get_value_uint32(env, argv[6], &port_index) != napi_ok ||
      napi_get_value_bool(env, argv[7], &inbound) != napi_ok || !GetTyped(env, argv[8], napi_int32_array, &out_data, &out_length)) {
    napi_throw_type_error(env, "NEXUS_BAD_ARGS", kUsage);
    return nullptr;
  }
  const size_t capacity = slot_words / kSlotWords;
  if (capacity == 0 || capacity * kSlotWords != slot_words || (capacity & (capacity - 1)) != 0 || capacity > (1u << 30)) {
    napi_throw_range_error(env, "NEXUS_BAD_ARGS", "flowLookupBatch: slots must hold a power-of-two number of 16-word slots");
    return nullptr;
  }
  if (n > offsets_length || n > lengths_length || n > out_length) {
    napi_throw_range_error(env, "NEXUS_BAD_ARGS", "flowLookupBatch: n exceeds a descriptor array");
    return nullptr;
  }
  const uint32_t* slots = static_cast<const uint32_t*>(slots_data);
  const uint8_t* buf = static_cast<const uint8_t*>(buf_data);
  const int32_t* offsets = static_cast<const int32_t*>(offsets_data);
  const int32_t* lengths = static_cast<const int32_t*>(lengths_data);
  int32_t* out = static_cast<int32_t*>(out_data);
  const uint32_t mask = static_cast<uint32_t>(capacity - 1);

  // Per chunk: parse and hash every packet and prefetch its home slot, then
  // probe them all. The prefetches are independent, so their cache (and TLB)
  // misses overlap instead of each lookup waiting for its own.
  uint32_t keys[kChunk][kKeyWords];
  uint32_t hashes[kChunk];
  uint32_t hits = 0;
  for (uint32_t base = 0; base < n; base += kChunk) {
    const uint32_t count = n - base < kChunk ? n - base : kChunk;
    for (uint32_t k = 0; k < count; k++) {
      const uint32_t i = base + k;
      // The next chunk's packet headers, so parsing them does not stall either.
      if (i + kChunk < n) {
        const int32_t ahead = offsets[i + kChunk];
        if (ahead >= 0 && static_cast<size_t>(ahead) < buf_size) __builtin_prefetch(buf + ahead);
      }
      if (ParseFast(buf, buf_size, offsets[i], lengths[i], link, port_index, inbound, keys[k])) {
        hashes[k] = HashKey(keys[k]);
        __builtin_prefetch(slots + static_cast<size_t>(hashes[k] & mask) * kSlotWords);
        out[i] = kMiss;
      } else {
        out[i] = kSlowPath;
      }
    }
    for (uint32_t k = 0; k < count; k++) {
      const uint32_t i = base + k;
      if (out[i] == kSlowPath) continue;
      const int32_t slot = Probe(slots, mask, hashes[k], keys[k]);
      out[i] = slot;
      if (slot >= 0) hits++;
    }
  }
  napi_value result;
  napi_create_uint32(env, hits, &result);
  return result;
}

void FreeHugeBuffer(napi_env env, void* data, void* hint) {
  const size_t mapped = reinterpret_cast<size_t>(hint);
  munmap(data, mapped);
  int64_t ignored;
  napi_adjust_external_memory(env, -static_cast<int64_t>(mapped), &ignored);
}

// The buffer is an external ArrayBuffer: V8 neither owns nor moves it, and
// frees it only through FreeHugeBuffer when the last view is collected. What
// that trades away: the memory is outside V8's heap (reported with
// napi_adjust_external_memory so GC still feels the pressure), it cannot be
// transferred or structured-cloned to another thread, and its size is fixed.
// Node 20 refuses to wrap more than 4 GiB in one ArrayBuffer (2^26 flow slots of 64 bytes).
constexpr uint64_t kMaxHugeBuffer = (1ull << 32) - 1;

napi_value AllocHugeBuffer(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  double requested = 0;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1 ||
      napi_get_value_double(env, argv[0], &requested) != napi_ok || !(requested >= 1) || requested > double(kMaxHugeBuffer)) {
    napi_throw_type_error(env, "NEXUS_BAD_ARGS", "allocHugeBuffer(bytes: number in [1, 4 GiB))");
    return nullptr;
  }
  const size_t bytes = static_cast<size_t>(requested);
  const size_t mapped = (bytes + kHugePage - 1) & ~(kHugePage - 1);
  // Over-map by one huge page and trim, so the start is 2 MiB aligned and
  // the kernel can back the range with huge pages from the first byte.
  void* raw = mmap(nullptr, mapped + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    napi_throw_error(env, "NEXUS_NO_MEMORY", "allocHugeBuffer: mmap failed");
    return nullptr;
  }
  const uintptr_t start = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t(kHugePage) - 1);
  if (aligned > start) munmap(raw, aligned - start);
  const uintptr_t tail = aligned + mapped;
  const uintptr_t raw_end = start + mapped + kHugePage;
  if (raw_end > tail) munmap(reinterpret_cast<void*>(tail), raw_end - tail);
  void* data = reinterpret_cast<void*>(aligned);
  // Advice only: with THP off the range stays on 4 KiB pages and works the same.
  madvise(data, mapped, MADV_HUGEPAGE);
  napi_value buffer;
  if (napi_create_external_arraybuffer(env, data, bytes, FreeHugeBuffer, reinterpret_cast<void*>(mapped), &buffer) != napi_ok) {
    // Node runs the finalizer itself when it cannot wrap the memory (seen
    // for sizes V8 refuses): unmapping here too would free the range twice.
    // The size bound above keeps us out of that case.
    napi_throw_error(env, "NEXUS_NO_MEMORY", "allocHugeBuffer: cannot wrap the mapping in an ArrayBuffer");
    return nullptr;
  }
  int64_t ignored;
  napi_adjust_external_memory(env, static_cast<int64_t>(mapped), &ignored);
  return buffer;
}

}  // namespace

void RegisterFlowTable(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "allocHugeBuffer", NAPI_AUTO_LENGTH, AllocHugeBuffer, nullptr, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "allocHugeBuffer", fn);
  }
  if (napi_create_function(env, "flowLookupBatch", NAPI_AUTO_LENGTH, FlowLookupBatch, nullptr, &fn) == napi_ok) {
    napi_set_named_property(env, exports, "flowLookupBatch", fn);
  }
  napi_value words;
  if (napi_create_uint32(env, kSlotWords, &words) == napi_ok) napi_set_named_property(env, exports, "flowSlotWords", words);
}

}  // namespace flowstack
