// JavaScript bindings of the nexus addon (node-addon-api).
//
//   const dev = NativeDevice.open({ kind, name, netns, ... })  // throws {errno, syscall}
//   dev.info()                         -> { name, ifindex, mtu, mac, queues, vnetHdr, tso4, tso6, csum }
//   dev.startQueue(q, channelView, countersView, doorbell)
//   dev.kick(q)                        // JS flushed a ring the I/O thread sleeps on
//   dev.close()                        // joins the I/O threads, closes the device
//
// channelView / countersView are Uint8Arrays over SharedArrayBuffers (N-API
// has no SharedArrayBuffer accessor in Node 20; a view's data pointer works).
#include <napi.h>

#include <cstring>
#include <memory>

#include "flow_table.h"
#include "io_thread.h"
#include "nexus.h"

namespace flowstack {
namespace {

struct QueueSlot;
void CallDoorbell(Napi::Env env, Napi::Function fn, QueueSlot* slot, void* data);
using DoorbellFn = Napi::TypedThreadSafeFunction<QueueSlot, void, CallDoorbell>;

// Everything one running queue needs. Owned by its threadsafe function from
// startQueue on: freed in the function's finalizer, after the last queued
// doorbell call ran, so a late call never touches freed memory.
struct QueueSlot {
  std::unique_ptr<IoQueue> queue;
  DoorbellFn doorbell;
  // 1 while a doorbell call is queued and has not run yet: the I/O thread then
  // skips queueing another (that queued call notifies after every sequence
  // bump that preceded it, so coalescing loses nothing).
  std::atomic<int> bell_pending{0};
  Napi::Reference<Napi::Uint8Array> channel;
  Napi::Reference<Napi::Uint8Array> counters;
};

void CallDoorbell(Napi::Env env, Napi::Function fn, QueueSlot* slot, void*) {
  slot->bell_pending.store(0, std::memory_order_release);
  if (env == nullptr || fn.IsEmpty()) return;
  try {
    fn.Call({});
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
}

void FinalizeSlot(Napi::Env, void*, QueueSlot* slot) {
  slot->channel.Reset();
  slot->counters.Reset();
  delete slot;
}

Napi::Error OsErrorToJs(Napi::Env env, const OsError& error) {
  Napi::Error err = Napi::Error::New(env, error.syscall + ": " + std::strerror(error.err));
  err.Set("errno", Napi::Number::New(env, error.err));
  err.Set("syscall", Napi::String::New(env, error.syscall));
  return err;
}

uint32_t GetU32(const Napi::Object& o, const char* key, uint32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

bool GetBool(const Napi::Object& o, const char* key, bool fallback) {
  Napi::Value v = o.Get(key);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : fallback;
}

std::string GetString(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

class NativeDevice : public Napi::ObjectWrap<NativeDevice> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeDevice",
                       {
                           StaticMethod<&NativeDevice::Open>("open"),
                           InstanceMethod<&NativeDevice::Info>("info"),
                           InstanceMethod<&NativeDevice::StartQueue>("startQueue"),
                           InstanceMethod<&NativeDevice::Kick>("kick"),
                           InstanceMethod<&NativeDevice::StopQueues>("stopQueues"),
                           InstanceMethod<&NativeDevice::Close>("close"),
                       });
  }

  explicit NativeDevice(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeDevice>(info) {}

  ~NativeDevice() override { Shutdown(); }

  static Napi::Value Open(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!info[0].IsObject()) throw Napi::TypeError::New(env, "options object expected");
    Napi::Object o = info[0].As<Napi::Object>();
    OpenOptions options;
    std::string kind = GetString(o, "kind");
    if (kind == "tun") options.kind = DeviceKind::kTun;
    else if (kind == "tap") options.kind = DeviceKind::kTap;
    else if (kind == "afpacket") options.kind = DeviceKind::kAfPacket;
    else throw Napi::TypeError::New(env, "kind must be tun, tap or afpacket");
    options.name = GetString(o, "name");
    options.netns_path = GetString(o, "netnsPath");
    options.attach = GetBool(o, "attach", false);
    options.vnet_hdr = GetBool(o, "vnetHdr", false);
    options.multi_queue = GetBool(o, "multiQueue", false);
    options.queues = GetU32(o, "queues", 1);
    options.mtu = static_cast<int>(GetU32(o, "mtu", 0));
    options.tx_queue_len = static_cast<int>(GetU32(o, "txQueueLen", 0));
    options.up = GetBool(o, "up", true);
    options.promiscuous = GetBool(o, "promiscuous", false);
    options.block_size = GetU32(o, "blockSize", 1u << 20);
    options.block_count = GetU32(o, "blockCount", 8);
    options.block_timeout_ms = GetU32(o, "blockTimeoutMs", 1);
    options.fanout_group = GetU32(o, "fanoutGroup", 0);
    options.drop_on_overflow = GetBool(o, "dropOnOverflow", false);
    if (options.queues == 0 || options.queues > 64) throw Napi::RangeError::New(env, "queues must be 1..64");
    if (options.name.size() >= 16) throw Napi::RangeError::New(env, "interface names are at most 15 bytes");

    OpenResult result;
    OsError error;
    if (!OpenDevice(options, &result, &error)) throw OsErrorToJs(env, error);
    // The class is per environment (main thread and each worker load the addon).
    Napi::Object object = env.GetInstanceData<Napi::FunctionReference>()->New({});
    NativeDevice* device = Unwrap(object);
    device->options_ = options;
    device->result_ = std::move(result);
    device->slots_.assign(device->result_.fds.size(), nullptr);
    device->open_ = true;
    device->cleanup_ = env.AddCleanupHook(&NativeDevice::ShutdownHook, device);
    return object;
  }

  static void ShutdownHook(NativeDevice* device) { device->Shutdown(); }

 private:
  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", result_.name);
    o.Set("ifindex", result_.ifindex);
    o.Set("mtu", result_.mtu);
    o.Set("queues", static_cast<uint32_t>(result_.fds.size()));
    o.Set("vnetHdr", result_.vnet_hdr);
    o.Set("tso4", result_.tso4);
    o.Set("tso6", result_.tso6);
    o.Set("csum", result_.csum);
    if (result_.has_mac) {
      Napi::Uint8Array mac = Napi::Uint8Array::New(env, 6);
      std::memcpy(mac.Data(), result_.mac, 6);
      o.Set("mac", mac);
    }
    return o;
  }

  Napi::Value StartQueue(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!open_) throw Napi::Error::New(env, "device is closed");
    uint32_t q = info[0].As<Napi::Number>().Uint32Value();
    if (q >= slots_.size()) throw Napi::RangeError::New(env, "no such queue");
    if (slots_[q] != nullptr) throw Napi::Error::New(env, "queue already started");
    if (!info[1].IsTypedArray() || !info[2].IsTypedArray() || !info[3].IsFunction()) {
      throw Napi::TypeError::New(env, "startQueue(queue, channelView, countersView, doorbell)");
    }
    Napi::Uint8Array channel = info[1].As<Napi::Uint8Array>();
    Napi::Uint8Array counters = info[2].As<Napi::Uint8Array>();
    if (counters.ByteLength() < kCounterSlots * sizeof(uint64_t) || reinterpret_cast<uintptr_t>(counters.Data()) % 8 != 0) {
      throw Napi::RangeError::New(env, "counters view too small or misaligned");
    }
    IoQueue::Config config{};
    std::string problem = MapChannel(channel.Data(), channel.ByteLength(), &config.channel);
    if (!problem.empty()) throw Napi::Error::New(env, "bad channel: " + problem);
    if (options_.vnet_hdr && config.channel.buffer_size < 65536 + kVirtioNetHdrBytes) {
      throw Napi::RangeError::New(env, "a vnet_hdr port needs channel buffers of at least 65548 bytes");
    }
    config.kind = options_.kind;
    config.fd = result_.fds[q];
    config.packet_ring = q < result_.rings.size() ? result_.rings[q] : nullptr;
    config.block_size = options_.block_size;
    config.block_count = options_.block_count;
    config.vnet_hdr = result_.vnet_hdr;
    config.drop_on_overflow = options_.drop_on_overflow;
    config.queue_index = q;
    config.counters = reinterpret_cast<uint64_t*>(counters.Data());

    auto* slot = new QueueSlot();
    slot->channel = Napi::Reference<Napi::Uint8Array>::New(channel, 1);
    slot->counters = Napi::Reference<Napi::Uint8Array>::New(counters, 1);
    slot->doorbell = DoorbellFn::New(env, info[3].As<Napi::Function>(), "flowstack-doorbell", 0, 1, slot, FinalizeSlot, static_cast<void*>(nullptr));
    slot->queue = std::make_unique<IoQueue>(config, [slot] {
      if (slot->bell_pending.exchange(1, std::memory_order_acq_rel) != 0) return;
      if (slot->doorbell.NonBlockingCall() != napi_ok) slot->bell_pending.store(0, std::memory_order_release);
    });
    std::string failure = slot->queue->Start();
    if (!failure.empty()) {
      slot->queue.reset();
      slot->doorbell.Release();
      throw Napi::Error::New(env, failure);
    }
    // An open port alone does not keep the process alive (a waiting consumer
    // does, through its own timer), like an unref'd socket.
    slot->doorbell.Unref(env);
    slots_[q] = slot;
    return env.Undefined();
  }

  Napi::Value Kick(const Napi::CallbackInfo& info) {
    uint32_t q = info[0].As<Napi::Number>().Uint32Value();
    if (open_ && q < slots_.size() && slots_[q] != nullptr) slots_[q]->queue->Kick();
    return info.Env().Undefined();
  }

  // Joins every I/O thread and hands back what it can (see IoQueue::Stop);
  // the device stays open so side B can drain and return its buffers before
  // close() reclaims them.
  Napi::Value StopQueues(const Napi::CallbackInfo& info) {
    for (QueueSlot* slot : slots_) {
      if (slot != nullptr) slot->queue->Stop();
    }
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (open_) cleanup_.Remove(info.Env());
    Shutdown();
    return info.Env().Undefined();
  }

  void Shutdown() {
    if (!open_) return;
    open_ = false;
    for (QueueSlot*& slot : slots_) {
      if (slot == nullptr) continue;
      slot->queue->Stop();
      slot->queue->Reclaim();
      slot->queue.reset();
      slot->doorbell.Release();  // FinalizeSlot frees the slot later
      slot = nullptr;
    }
    CloseDevice(&result_);
  }

  OpenOptions options_;
  OpenResult result_;
  std::vector<QueueSlot*> slots_;
  bool open_ = false;
  Napi::Env::CleanupHook<void (*)(NativeDevice*), NativeDevice> cleanup_;
};

// copyBytes(dst, src, length): memcpy between two typed-array views. V8
// copies between SharedArrayBuffer-backed arrays with relaxed per-word
// atomics (TypedArray.prototype.set measured at 5-12 GB/s vs ~30 GB/s on plain
// ArrayBuffers); a relay moving 64 KiB super-packets between two channels'
// pools pays that per packet. The channel's ownership protocol guarantees no
// other thread touches either buffer meanwhile, so a plain memcpy is safe.
// Raw napi calls: this runs once per packet and the C++ wrapper's checks are
// measurable at small sizes.
napi_value CopyBytes(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 3) {
    napi_throw_type_error(env, "NEXUS_BAD_ARGS", "copyBytes(dst, src, length)");
    return nullptr;
  }
  napi_typedarray_type type;
  size_t dst_length = 0, src_length = 0;
  void* dst = nullptr;
  void* src = nullptr;
  uint32_t length = 0;
  if (napi_get_typedarray_info(env, argv[0], &type, &dst_length, &dst, nullptr, nullptr) != napi_ok || type != napi_uint8_array ||
      napi_get_typedarray_info(env, argv[1], &type, &src_length, &src, nullptr, nullptr) != napi_ok || type != napi_uint8_array ||
      napi_get_value_uint32(env, argv[2], &length) != napi_ok) {
    napi_throw_type_error(env, "NEXUS_BAD_ARGS", "copyBytes(dst: Uint8Array, src: Uint8Array, length: number)");
    return nullptr;
  }
  if (length > dst_length || length > src_length) {
    napi_throw_range_error(env, "NEXUS_BAD_ARGS", "copyBytes: length exceeds a view");
    return nullptr;
  }
  if (length > 0) memmove(dst, src, length);
  return nullptr;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = NativeDevice::Init(env);
  env.SetInstanceData<Napi::FunctionReference>(new Napi::FunctionReference(Napi::Persistent(cls)));
  exports.Set("NativeDevice", cls);
  exports.Set("counterSlots", Napi::Number::New(env, kCounterSlots));
  exports.Set("layoutVersion", Napi::Number::New(env, kLayoutVersion));
  napi_value copy;
  if (napi_create_function(env, "copyBytes", NAPI_AUTO_LENGTH, CopyBytes, nullptr, &copy) == napi_ok) exports.Set("copyBytes", Napi::Value(env, copy));
  RegisterFlowTable(env, exports);
  return exports;
}

}  // namespace flowstack

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return flowstack::Init(env, exports); }

NODE_API_MODULE(flowstack_nexus, InitAddon)
