// N-API glue for Tracer (tracer.h): options in, batches of records out through
// one thread-safe function, close() resolving after the last batch.
#include <napi.h>

#include <linux/types.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "napi-util.h"
#include "sockleak.h"
#include "tracer.h"
#include "wraps.h"

namespace sockleak {
namespace {

// A batch handed from the poll thread to JS; JS owns the bytes via the Buffer's finalizer.
using Batch = std::vector<uint8_t>;

class TracerWrap : public Napi::ObjectWrap<TracerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Tracer",
                       {InstanceMethod<&TracerWrap::Close>("close"),
                        InstanceMethod<&TracerWrap::GetCounters>("counters"),
                        InstanceMethod<&TracerWrap::GetProgramStats>("programStats"),
                        InstanceMethod<&TracerWrap::CollectLeaks>("collectLeaks"),
                        InstanceMethod<&TracerWrap::Seed>("seed"),
                        InstanceMethod<&TracerWrap::Forget>("forget"),
                        InstanceMethod<&TracerWrap::Follow>("follow"),
                        InstanceMethod<&TracerWrap::Hooks>("hooks"),
                        InstanceMethod<&TracerWrap::ActiveCloses>("activeCloses"),
                        InstanceMethod<&TracerWrap::TreeAdd>("treeAdd"),
                        InstanceMethod<&TracerWrap::TreePids>("treePids"),
                        InstanceMethod<&TracerWrap::ReadStack>("readStack")});
  }

  // new Tracer(options, onBatch(buffer)): loaded, attached and polling on return.
  explicit TracerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TracerWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "Tracer(options, onBatch)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    // Every tunable is required: src/trace/tracer.ts owns the defaults.
    TracerOptions options;
    constexpr const char* kWhat = "Tracer options";
    uint32_t wakeup_bytes = 0, poll_ms = 0, fault_inject = 0;
    if (!RequireUint(o, kWhat, "ringBytes", &options.ring_bytes) ||
        !RequireUint(o, kWhat, "wakeupBytes", &wakeup_bytes) || !RequireUint(o, kWhat, "pollMs", &poll_ms) ||
        !RequireBool(o, kWhat, "leakMode", &options.leak_mode) ||
        !RequireUint(o, kWhat, "maxSockets", &options.max_sockets) ||
        !RequireBool(o, kWhat, "followTree", &options.follow_tree) ||
        !RequireBool(o, kWhat, "trackCreators", &options.track_creators) ||
        !RequireBool(o, kWhat, "creatorStacks", &options.creator_stacks) ||
        !RequireUint(o, kWhat, "faultInject", &fault_inject)) {
      return;
    }
    options.wakeup_min_bytes = wakeup_bytes;
    options.poll_interval_ms = static_cast<int>(poll_ms);
    options.fault_inject = static_cast<uint8_t>(fault_inject);
    // Absent means none: every process, the BPF object's own slot count, the running kernel's BTF.
    options.target_tgid = OptUint(o, "pid", 0);
    options.socket_slots = OptUint(o, "socketSlots", 0);
    options.btf_path = OptString(o, "btfPath");
    options.refused = StringList(o.Get("refused"));

    BpfError error;
    tracer_ = Tracer::Open(options, &error);
    if (!tracer_) {
      ToJsError(env, error).ThrowAsJavaScriptException();
      return;
    }
    // The finalizer runs on the main thread once the poll thread has released
    // the function and every queued batch has been delivered.
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "sockleak-ringbuf",
                                          /*max queue*/ 16, /*threads*/ 1, this,
                                          [](Napi::Env, TracerWrap* self) { self->Finish(); });
    error = tracer_->Start([this](Batch&& bytes) { Deliver(std::move(bytes)); },
                          [this] { tsfn_.Release(); });
    if (!error.ok()) {
      tracer_.reset();
      tsfn_.Release();
      ToJsError(env, error).ThrowAsJavaScriptException();
      return;
    }
    Ref();  // alive while polling, whatever JS holds
    napi_add_env_cleanup_hook(env, &TracerWrap::CleanupHook, this);
    hooked_ = true;
  }

  ~TracerWrap() override { Teardown(); }

 private:
  // Process or worker exit: no event loop turns any more, so stop synchronously.
  static void CleanupHook(void* self) {
    auto* wrap = static_cast<TracerWrap*>(self);
    wrap->hooked_ = false;
    wrap->tsfn_.Abort();  // unblocks a BlockingCall in flight; later batches are dropped
    wrap->Teardown();
  }

  // Poll thread: blocks while 16 batches wait for JS, so a stalled JS thread
  // backs up into the ring buffer, whose overflow the kernel counts as lost.
  void Deliver(Batch&& bytes) {
    auto* batch = new Batch(std::move(bytes));
    napi_status status = tsfn_.BlockingCall(batch, [](Napi::Env env, Napi::Function onBatch, Batch* b) {
      auto buffer = Napi::Buffer<uint8_t>::New(env, b->data(), b->size(),
                                               [](Napi::Env, uint8_t*, Batch* owned) { delete owned; }, b);
      onBatch.Call({buffer});
    });
    if (status != napi_ok) delete batch;  // closing: JS will not see it
  }

  // Main thread, after the last batch: join, free, settle close().
  void Finish() {
    Teardown();
    if (closing_) closing_->Resolve(Env().Undefined());
    closing_.reset();
    if (!finished_) Unref();
    finished_ = true;
  }

  void Teardown() {
    if (hooked_) napi_remove_env_cleanup_hook(Env(), &TracerWrap::CleanupHook, this);
    hooked_ = false;
    if (!tracer_) return;
    tracer_->Stop();  // joins the poll thread (already done or finishing)
    last_counters_ = tracer_->ReadCounters();  // final values
    tracer_.reset();
  }

  // close(): a promise settled once every event is delivered and nothing stays attached.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (finished_ || !tracer_) {
      auto done = Napi::Promise::Deferred::New(env);
      done.Resolve(env.Undefined());
      return done.Promise();
    }
    if (!closing_) closing_ = std::make_unique<Napi::Promise::Deferred>(env);
    tracer_->RequestStop();
    return closing_->Promise();
  }

  Napi::Value GetCounters(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Counters c = tracer_ ? tracer_->ReadCounters() : last_counters_;
    Napi::Object o = Napi::Object::New(env);
    o.Set("emitted", Napi::BigInt::New(env, c.emitted));
    o.Set("lost", Napi::BigInt::New(env, c.lost));
    o.Set("mapFull", Napi::BigInt::New(env, c.map_full));
    o.Set("missed", Napi::BigInt::New(env, c.missed));
    return o;
  }

  Napi::Value GetProgramStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array list = Napi::Array::New(env);
    if (!tracer_) return list;
    uint32_t i = 0;
    for (const auto& p : tracer_->ReadProgramStats()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", p.name);
      o.Set("id", p.id);
      o.Set("runTimeNs", Napi::BigInt::New(env, p.run_time_ns));
      o.Set("runCount", Napi::BigInt::New(env, p.run_cnt));
      list.Set(i++, o);
    }
    return list;
  }

  // collectLeaks(cutoffNs: bigint) -> Buffer of sl_event records newly over the threshold.
  Napi::Value CollectLeaks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    bool lossless = true;
    uint64_t cutoff = info.Length() > 0 && info[0].IsBigInt() ? info[0].As<Napi::BigInt>().Uint64Value(&lossless) : 0;
    if (!tracer_) return Napi::Buffer<uint8_t>::New(env, 0);
    auto bytes = std::make_unique<Batch>();
    BpfError error = tracer_->CollectLeaks(cutoff, bytes.get());
    if (!error.ok()) {
      ToJsError(env, error).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    if (bytes->empty()) return Napi::Buffer<uint8_t>::New(env, 0);
    // Handed over, not copied: a restart's first walk is 104 bytes x every leak (21 MB at 200k).
    Batch* owned = bytes.release();
    return Napi::Buffer<uint8_t>::New(env, owned->data(), owned->size(), [](Napi::Env, uint8_t*, Batch* b) { delete b; }, owned);
  }

  // seed(buffer of sl_sock records from a scan) -> number refused by a full map.
  Napi::Value Seed(const Napi::CallbackInfo& info) { return WithRecords(info, &Tracer::Seed); }

  // follow(buffer of sl_sock records of the target pid) -> number refused by a full map.
  Napi::Value Follow(const Napi::CallbackInfo& info) { return WithRecords(info, &Tracer::Follow); }

  // Hands a Buffer of records to `op`; its count of refused records back to JS.
  Napi::Value WithRecords(const Napi::CallbackInfo& info, size_t (Tracer::*op)(const uint8_t*, size_t)) {
    Napi::Env env = info.Env();
    if (!tracer_ || info.Length() < 1 || !info[0].IsBuffer()) return Napi::Number::New(env, 0);
    auto buf = info[0].As<Napi::Buffer<uint8_t>>();
    return Napi::Number::New(env, static_cast<double>(((*tracer_).*op)(buf.Data(), buf.Length())));
  }

  // hooks() -> { syscalls: "tracepoint" | "tp_btf", mountedTracefs: boolean,
  //   leakWalk: "iterator" | "user" (leak mode), creatorStacks: boolean, refusals: [{ program, errno, code, reason }] }
  Napi::Value Hooks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("syscalls", tracer_ ? tracer_->SyscallHooks() : "none");
    o.Set("mountedTracefs", tracer_ ? tracer_->MountedTracefs() : false);
    o.Set("leakWalk", tracer_ && tracer_->UserWalk() ? "user" : "iterator");
    o.Set("creatorStacks", Napi::Boolean::New(env, tracer_ && tracer_->CapturesStacks()));
    o.Set("refusals", RefusalList(env, tracer_ ? tracer_->Refusals() : std::vector<Refusal>{}));
    return o;
  }

  // forget(cookies: bigint[])
  Napi::Value Forget(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!tracer_ || info.Length() < 1 || !info[0].IsArray()) return env.Undefined();
    Napi::Array list = info[0].As<Napi::Array>();
    std::vector<uint64_t> cookies;
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value v = list.Get(i);
      bool lossless = true;
      if (v.IsBigInt()) cookies.push_back(v.As<Napi::BigInt>().Uint64Value(&lossless));
    }
    tracer_->Forget(cookies);
    return env.Undefined();
  }

  // activeCloses() -> Buffer of (sl_close_key, sl_close_count) pairs.
  Napi::Value ActiveCloses(const Napi::CallbackInfo& info) {
    Batch bytes = tracer_ ? tracer_->ReadActiveCloses() : Batch{};
    return Napi::Buffer<uint8_t>::Copy(info.Env(), bytes.data(), bytes.size());
  }

  // readStack(id) -> { frames: BigUint64Array, words: BigUint64Array } | null
  Napi::Value ReadStack(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!tracer_ || info.Length() < 1 || !info[0].IsNumber()) return env.Null();
    std::vector<uint64_t> frames, words;
    if (!tracer_->ReadStack(info[0].As<Napi::Number>().Uint32Value(), &frames, &words)) return env.Null();
    auto array = [&env](const std::vector<uint64_t>& values) {
      Napi::ArrayBuffer bytes = Napi::ArrayBuffer::New(env, values.size() * sizeof(uint64_t));
      if (!values.empty()) memcpy(bytes.Data(), values.data(), values.size() * sizeof(uint64_t));
      return Napi::TypedArrayOf<uint64_t>::New(env, values.size(), bytes, 0, napi_biguint64_array);
    };
    Napi::Object out = Napi::Object::New(env);
    out.Set("frames", array(frames));
    out.Set("words", array(words));
    return out;
  }

  // treeAdd(pid)
  Napi::Value TreeAdd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!tracer_ || info.Length() < 1 || !info[0].IsNumber()) return env.Undefined();
    BpfError error = tracer_->TreeAdd(info[0].As<Napi::Number>().Uint32Value());
    if (!error.ok()) ToJsError(env, error).ThrowAsJavaScriptException();
    return env.Undefined();
  }

  // treePids() -> number[]
  Napi::Value TreePids(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Array list = Napi::Array::New(env);
    if (!tracer_) return list;
    uint32_t i = 0;
    for (uint32_t pid : tracer_->TreePids()) list.Set(i++, Napi::Number::New(env, pid));
    return list;
  }

  // Main thread owns these; the poll thread only calls tsfn_ (thread-safe by design).
  std::unique_ptr<Tracer> tracer_;
  Napi::ThreadSafeFunction tsfn_;
  std::unique_ptr<Napi::Promise::Deferred> closing_;
  Counters last_counters_;  // final values, kept after teardown
  bool hooked_ = false;
  bool finished_ = false;
};

}  // namespace

Napi::Function DefineTracer(Napi::Env env) { return TracerWrap::Define(env); }

}  // namespace sockleak
