// N-API glue only: argument unpacking, object wrapping, error conversion.
// The work lives in Tracer (tracer.cc). Options arrive validated by TypeScript.
#include <napi.h>

#include <linux/types.h>
#include <malloc.h>

#include <cstring>
#include <memory>

#include "features.h"
#include "reaper.h"
#include "scanner.h"
#include "sockleak.h"
#include "tracer.h"

namespace sockleak {
namespace {

Napi::Error ToJsError(Napi::Env env, const BpfError& e) {
  Napi::Error error = Napi::Error::New(env, e.message);
  error.Set("errno", Napi::Number::New(env, e.err));
  const char* name = strerrorname_np(e.err);
  error.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  error.Set("stage", Napi::String::New(env, e.stage));
  error.Set("program", Napi::String::New(env, e.program));
  error.Set("log", Napi::String::New(env, e.log));
  return error;
}

uint32_t OptUint(const Napi::Object& o, const char* key, uint32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

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
                        InstanceMethod<&TracerWrap::TreePids>("treePids")});
  }

  // new Tracer(options, onBatch(buffer)): loaded, attached and polling on return.
  explicit TracerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TracerWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
      Napi::TypeError::New(env, "Tracer(options, onBatch)").ThrowAsJavaScriptException();
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    TracerOptions options;
    options.target_tgid = OptUint(o, "pid", 0);
    options.ring_bytes = OptUint(o, "ringBytes", options.ring_bytes);
    options.wakeup_min_bytes = OptUint(o, "wakeupBytes", options.ring_bytes / 4);
    options.poll_interval_ms = static_cast<int>(OptUint(o, "pollMs", options.poll_interval_ms));
    options.leak_mode = o.Get("leakMode").ToBoolean().Value();
    options.max_sockets = OptUint(o, "maxSockets", options.max_sockets);
    options.socket_slots = OptUint(o, "socketSlots", options.socket_slots);
    options.follow_tree = o.Get("followTree").ToBoolean().Value();
    Napi::Value creators = o.Get("trackCreators");
    if (creators.IsBoolean()) options.track_creators = creators.As<Napi::Boolean>().Value();
    options.fault_inject = static_cast<uint8_t>(OptUint(o, "faultInject", 0));
    Napi::Value btf = o.Get("btfPath");
    if (btf.IsString()) options.btf_path = btf.As<Napi::String>().Utf8Value();

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
    // Handed over, not copied: a restart's first walk is 96 bytes x every leak (19 MB at 200k).
    Batch* owned = bytes.release();
    return Napi::Buffer<uint8_t>::New(env, owned->data(), owned->size(), [](Napi::Env, uint8_t*, Batch* b) { delete b; }, owned);
  }

  // seed(buffer of sl_sock records from a scan) -> number refused by a full map.
  Napi::Value Seed(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!tracer_ || info.Length() < 1 || !info[0].IsBuffer()) return Napi::Number::New(env, 0);
    auto buf = info[0].As<Napi::Buffer<uint8_t>>();
    return Napi::Number::New(env, static_cast<double>(tracer_->Seed(buf.Data(), buf.Length())));
  }

  // follow(buffer of sl_sock records of the target pid) -> number refused by a full map.
  Napi::Value Follow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!tracer_ || info.Length() < 1 || !info[0].IsBuffer()) return Napi::Number::New(env, 0);
    auto buf = info[0].As<Napi::Buffer<uint8_t>>();
    return Napi::Number::New(env, static_cast<double>(tracer_->Follow(buf.Data(), buf.Length())));
  }

  // hooks() -> { syscalls: "tracepoint" | "tp_btf", mountedTracefs: boolean }
  Napi::Value Hooks(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    o.Set("syscalls", tracer_ ? tracer_->SyscallHooks() : "none");
    o.Set("mountedTracefs", tracer_ ? tracer_->MountedTracefs() : false);
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

// { kind: 'files'|'tcp'|'cookies'|'census', pid?, stateMask?, netnsPath? }, validated by TypeScript.
ScanRequest ParseScanRequest(const Napi::Object& o) {
  ScanRequest request;
  Napi::Value kind = o.Get("kind");
  std::string kind_name = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : "files";
  request.kind = kind_name == "tcp"       ? ScanKind::kTcp
                 : kind_name == "cookies" ? ScanKind::kCookies
                 : kind_name == "census"  ? ScanKind::kCensus
                                          : ScanKind::kFiles;
  request.target_tgid = OptUint(o, "pid", 0);
  request.state_mask = OptUint(o, "stateMask", 0);
  Napi::Value netns = o.Get("netnsPath");
  if (netns.IsString()) request.netns_path = netns.As<Napi::String>().Utf8Value();
  return request;
}

// Runs one iteration on the libuv thread pool; resolves with a Buffer of sl_sock records
// (census: one sl_port_census).
class ScanWorker : public Napi::AsyncWorker {
 public:
  ScanWorker(Napi::Env env, std::shared_ptr<Scanner> scanner, ScanRequest request)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
        scanner_(std::move(scanner)), request_(std::move(request)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { error_ = scanner_->Run(request_, bytes_.get()); }

  void OnOK() override {
    Napi::Env env = Env();
    if (!error_.ok()) {
      deferred_.Reject(ToJsError(env, error_).Value());
      return;
    }
    if (bytes_->size() == 0) {
      deferred_.Resolve(Napi::Buffer<uint8_t>::New(env, 0));
      return;
    }
    // JavaScript owns the mapping from here; its finalizer unmaps it.
    ScanBuffer* owned = bytes_.release();
    deferred_.Resolve(Napi::Buffer<uint8_t>::New(env, owned->data(), owned->size(),
                                                 [](Napi::Env, uint8_t*, ScanBuffer* b) { delete b; }, owned));
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Scanner> scanner_;  // shared: the wrap may be collected mid-scan
  ScanRequest request_;
  std::unique_ptr<ScanBuffer> bytes_ = std::make_unique<ScanBuffer>();
  BpfError error_;
};

// Loads a scanner's BPF object on the libuv thread pool ahead of its first scan;
// reports nothing (a load failure is that scan's error).
class PreloadWorker : public Napi::AsyncWorker {
 public:
  PreloadWorker(Napi::Env env, std::shared_ptr<Scanner> scanner)
      : Napi::AsyncWorker(env), scanner_(std::move(scanner)) {}

  void Execute() override { scanner_->Preload(); }

 private:
  std::shared_ptr<Scanner> scanner_;
};

class ScannerWrap : public Napi::ObjectWrap<ScannerWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Scanner", {InstanceMethod<&ScannerWrap::Scan>("scan"),
                                        InstanceMethod<&ScannerWrap::Preload>("preload"),
                                        InstanceMethod<&ScannerWrap::Close>("close")});
  }

  // new Scanner({ btfPath?, cachedBtfPath? }): the iterator programs are loaded by
  // the first scan or preload() (attaches nothing).
  explicit ScannerWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ScannerWrap>(info) {
    std::string btf_path, cached_btf_path;
    if (info.Length() > 0 && info[0].IsObject()) {
      Napi::Object o = info[0].As<Napi::Object>();
      Napi::Value btf = o.Get("btfPath");
      if (btf.IsString()) btf_path = btf.As<Napi::String>().Utf8Value();
      Napi::Value cached = o.Get("cachedBtfPath");
      if (cached.IsString()) cached_btf_path = cached.As<Napi::String>().Utf8Value();
    }
    scanner_ = std::make_shared<Scanner>(std::move(btf_path), std::move(cached_btf_path));
  }

 private:
  // scan({ kind: 'files'|'tcp'|'cookies'|'census', pid?, stateMask?, netnsPath? }) -> Promise<Buffer>
  Napi::Value Scan(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!scanner_ || info.Length() < 1 || !info[0].IsObject()) {
      Napi::TypeError::New(env, "scan(options) on an open scanner").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto* worker = new ScanWorker(env, scanner_, ParseScanRequest(info[0].As<Napi::Object>()));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  // preload(): starts loading the iterators on the pool now; returns at once.
  Napi::Value Preload(const Napi::CallbackInfo& info) {
    if (scanner_) (new PreloadWorker(info.Env(), scanner_))->Queue();
    return info.Env().Undefined();
  }

  // Unloads once no scan is running (in-flight scans keep their reference).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    scanner_.reset();
    return info.Env().Undefined();
  }

 public:
  // Null once closed.
  const std::shared_ptr<Scanner>& scanner() const { return scanner_; }

 private:
  std::shared_ptr<Scanner> scanner_;
};

// Fills the caller's Buffer with the next records of a ScanCursor on the libuv
// thread pool; resolves with the byte count (0: the iteration is over). The
// Buffer is referenced until then, and JavaScript leaves it alone meanwhile.
class CursorReadWorker : public Napi::AsyncWorker {
 public:
  CursorReadWorker(Napi::Env env, std::shared_ptr<ScanCursor> cursor, Napi::Buffer<uint8_t> into)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), cursor_(std::move(cursor)),
        into_(Napi::Persistent(into)), data_(into.Data()), cap_(into.Length()) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { error_ = cursor_->Read(data_, cap_, &n_); }

  void OnOK() override {
    cursor_->reading = false;
    if (!error_.ok()) deferred_.Reject(ToJsError(Env(), error_).Value());
    else deferred_.Resolve(Napi::Number::New(Env(), static_cast<double>(n_)));
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<ScanCursor> cursor_;  // shared: close() may drop the wrap's reference mid-read
  Napi::Reference<Napi::Buffer<uint8_t>> into_;
  uint8_t* data_;
  size_t cap_;
  size_t n_ = 0;
  BpfError error_;
};

class ScanCursorWrap : public Napi::ObjectWrap<ScanCursorWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "ScanCursor", {InstanceMethod<&ScanCursorWrap::Read>("read"),
                                           InstanceMethod<&ScanCursorWrap::Close>("close")});
  }

  // new ScanCursor(scanner, { kind: 'files'|'tcp', pid?, stateMask?, netnsPath? }): nothing runs until read().
  explicit ScanCursorWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ScanCursorWrap>(info) {
    Napi::Env env = info.Env();
    ScannerWrap* scanner = info.Length() >= 2 && info[0].IsObject() && info[1].IsObject()
                               ? Napi::ObjectWrap<ScannerWrap>::Unwrap(info[0].As<Napi::Object>())
                               : nullptr;
    if (!scanner || !scanner->scanner()) {
      Napi::TypeError::New(env, "ScanCursor(open scanner, request)").ThrowAsJavaScriptException();
      return;
    }
    cursor_ = std::make_shared<ScanCursor>(scanner->scanner(), ParseScanRequest(info[1].As<Napi::Object>()));
  }

 private:
  // read(buffer) -> Promise<number of bytes>: whole struct sl_sock records; 0 at the end.
  Napi::Value Read(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!cursor_ || info.Length() < 1 || !info[0].IsBuffer() || cursor_->reading.exchange(true)) {
      Napi::TypeError::New(env, "read(buffer) on an open cursor, one at a time").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto* worker = new CursorReadWorker(env, cursor_, info[0].As<Napi::Buffer<uint8_t>>());
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  // Ends the iteration early; the iterator closes once no read is running.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    cursor_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<ScanCursor> cursor_;
};

// --- Reaper (sockleak reap): reap() runs on the libuv thread pool. ---

// Runs one reap on the libuv thread pool; resolves with a Buffer of sl_reap_result records.
class ReapWorker : public Napi::AsyncWorker {
 public:
  ReapWorker(Napi::Env env, std::shared_ptr<Reaper> reaper, std::vector<sl_reap_request> requests,
             std::vector<std::string> netns_paths)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), reaper_(std::move(reaper)),
        requests_(std::move(requests)), netns_paths_(std::move(netns_paths)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { error_ = reaper_->Run(requests_, netns_paths_, &results_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (!error_.ok()) {
      deferred_.Reject(ToJsError(env, error_).Value());
      return;
    }
    deferred_.Resolve(Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(results_.data()),
                                                  results_.size() * sizeof(sl_reap_result)));
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Reaper> reaper_;  // shared: the wrap may be collected mid-run
  std::vector<sl_reap_request> requests_;
  std::vector<std::string> netns_paths_;
  std::vector<sl_reap_result> results_;
  BpfError error_;
};

class ReaperWrap : public Napi::ObjectWrap<ReaperWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Reaper",
                       {InstanceMethod<&ReaperWrap::Reap>("reap"), InstanceMethod<&ReaperWrap::Method>("method"),
                        InstanceMethod<&ReaperWrap::FallbackReason>("fallbackReason"),
                        InstanceMethod<&ReaperWrap::Close>("close"),
                        StaticValue("REQUEST_SIZE", Napi::Number::New(env, sizeof(sl_reap_request))),
                        StaticValue("RESULT_SIZE", Napi::Number::New(env, sizeof(sl_reap_result)))});
  }

  // new Reaper({ btfPath?, method?: 'auto'|'bpf'|'sock_diag' }): loads reap.bpf.c or falls back.
  explicit ReaperWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReaperWrap>(info) {
    Napi::Env env = info.Env();
    std::string btf_path;
    ReapMethod method = ReapMethod::kAuto;
    if (info.Length() > 0 && info[0].IsObject()) {
      Napi::Object o = info[0].As<Napi::Object>();
      Napi::Value btf = o.Get("btfPath");
      if (btf.IsString()) btf_path = btf.As<Napi::String>().Utf8Value();
      Napi::Value m = o.Get("method");
      std::string name = m.IsString() ? m.As<Napi::String>().Utf8Value() : "auto";
      if (name == "bpf") method = ReapMethod::kBpf;
      if (name == "sock_diag") method = ReapMethod::kSockDiag;
    }
    BpfError error;
    std::unique_ptr<Reaper> reaper = Reaper::Open(btf_path, method, &error);
    if (!reaper) {
      ToJsError(env, error).ThrowAsJavaScriptException();
      return;
    }
    reaper_ = std::move(reaper);
  }

 private:
  // reap(requests: Buffer of sl_reap_request, netnsPaths: string[]) -> Promise<Buffer of sl_reap_result>
  Napi::Value Reap(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!reaper_ || info.Length() < 2 || !info[0].IsBuffer() || !info[1].IsArray() ||
        info[0].As<Napi::Buffer<uint8_t>>().Length() % sizeof(sl_reap_request) != 0) {
      Napi::TypeError::New(env, "reap(requests, netnsPaths) on an open reaper").ThrowAsJavaScriptException();
      return env.Undefined();
    }
    auto buf = info[0].As<Napi::Buffer<uint8_t>>();
    std::vector<sl_reap_request> requests(buf.Length() / sizeof(sl_reap_request));
    if (!requests.empty()) memcpy(requests.data(), buf.Data(), buf.Length());
    std::vector<std::string> paths;
    Napi::Array list = info[1].As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Value v = list.Get(i);
      if (v.IsString()) paths.push_back(v.As<Napi::String>().Utf8Value());
    }
    auto* worker = new ReapWorker(env, reaper_, std::move(requests), std::move(paths));
    Napi::Promise promise = worker->Promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Method(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), reaper_ ? reaper_->method() : "");
  }

  Napi::Value FallbackReason(const Napi::CallbackInfo& info) {
    return Napi::String::New(info.Env(), reaper_ ? reaper_->fallback_reason() : "");
  }

  // Unloads once no reap is running (an in-flight reap keeps its reference).
  Napi::Value Close(const Napi::CallbackInfo& info) {
    reaper_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<Reaper> reaper_;
};

// --- end Reaper ---

// probeFeatures(btfPath?) -> [{ name, available }]
Napi::Value ProbeFeaturesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string btf_path = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  Napi::Array list = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& f : ProbeFeatures(btf_path)) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", f.name);
    o.Set("available", f.available);
    list.Set(i++, o);
  }
  return list;
}

}  // namespace

// releaseLargeAllocations(): from now on every malloc of 128 KiB or more is
// its own mapping, unmapped when freed. glibc otherwise raises that threshold
// to the largest block freed so far (up to 32 MiB), after which large,
// short-lived buffers (a leak walk, a batch) land in the heap and stay resident.
// Process-wide: only the long-running agent asks for it.
Napi::Value ReleaseLargeAllocations(const Napi::CallbackInfo& info) {
  mallopt(M_MMAP_THRESHOLD, 128 << 10);
  mallopt(M_TRIM_THRESHOLD, 1 << 20);
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Tracer", TracerWrap::Define(env));
  exports.Set("Scanner", ScannerWrap::Define(env));
  exports.Set("ScanCursor", ScanCursorWrap::Define(env));
  exports.Set("Reaper", ReaperWrap::Define(env));
  exports.Set("releaseLargeAllocations", Napi::Function::New(env, ReleaseLargeAllocations, "releaseLargeAllocations"));
  exports.Set("probeFeatures", Napi::Function::New(env, ProbeFeaturesJs, "probeFeatures"));
  exports.Set("SOCK_SIZE", Napi::Number::New(env, sizeof(sl_sock)));
  exports.Set("PORT_CENSUS_SIZE", Napi::Number::New(env, sizeof(sl_port_census)));
  exports.Set("CLOSE_PAIR_SIZE", Napi::Number::New(env, sizeof(sl_close_key) + sizeof(sl_close_count)));
  exports.Set("EVENT_SIZE", Napi::Number::New(env, sizeof(sl_event)));
  exports.Set("COUNTERS_SIZE", Napi::Number::New(env, sizeof(sl_counters)));
  return exports;
}

}  // namespace sockleak

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return sockleak::Init(env, exports); }

NODE_API_MODULE(NODE_GYP_MODULE_NAME, InitAddon)
