// N-API glue for Scanner and ScanCursor (scanner.cc): scans, preloads and chunk
// reads run on the libuv thread pool and resolve promises.
#include <napi.h>

#include <memory>
#include <string>

#include "napi-util.h"
#include "scanner.h"
#include "wraps.h"

namespace sockleak {
namespace {

// { kind: 'files'|'tcp'|'cookies'|'ehash'|'census', pid?, stateMask?, netnsPath? }, validated by TypeScript.
ScanRequest ParseScanRequest(const Napi::Object& o) {
  ScanRequest request;
  Napi::Value kind = o.Get("kind");
  std::string kind_name = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : "files";
  request.kind = kind_name == "tcp"       ? ScanKind::kTcp
                 : kind_name == "cookies" ? ScanKind::kCookies
                 : kind_name == "ehash"   ? ScanKind::kEhash
                 : kind_name == "census"  ? ScanKind::kCensus
                                          : ScanKind::kFiles;
  request.target_tgid = OptUint(o, "pid", 0);
  request.state_mask = OptUint(o, "stateMask", 0);
  request.netns_path = OptString(o, "netnsPath");
  return request;
}

// Runs one iteration on the libuv thread pool; resolves with a Buffer of sl_sock records
// (cookies: u64 each; ehash: sl_census_sock records; census: one sl_port_census).
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
                                        InstanceMethod<&ScannerWrap::LoadReport>("loadReport"),
                                        InstanceMethod<&ScannerWrap::Close>("close")});
  }

  // new Scanner({ refused?: string[], btfPath? }): the iterator programs are
  // loaded by the first scan or preload() (attaches nothing).
  explicit ScannerWrap(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<ScannerWrap>(info), scanner_(std::make_shared<Scanner>(ParseOptions(info))) {}

 private:
  static ScannerOptions ParseOptions(const Napi::CallbackInfo& info) {
    ScannerOptions options;
    if (info.Length() < 1 || !info[0].IsObject()) return options;
    Napi::Object o = info[0].As<Napi::Object>();
    options.refused = StringList(o.Get("refused"));
    options.btf_path = OptString(o, "btfPath");
    return options;
  }

  // loadReport() -> { loader, programs, refusals: [{ program, errno, code, reason }] }: loads now, on this thread.
  Napi::Value LoadReport(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!scanner_) return env.Undefined();
    ScanLoadReport report = scanner_->LoadReport();
    Napi::Object o = Napi::Object::New(env);
    o.Set("loader", report.loader);
    Napi::Array programs = Napi::Array::New(env, report.programs.size());
    for (uint32_t i = 0; i < report.programs.size(); i++) programs.Set(i, report.programs[i]);
    o.Set("programs", programs);
    o.Set("refusals", RefusalList(env, report.refusals));
    return o;
  }

  // scan({ kind: 'files'|'tcp'|'cookies'|'ehash'|'census', pid?, stateMask?, netnsPath? }) -> Promise<Buffer>
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

}  // namespace

Napi::Function DefineScanner(Napi::Env env) { return ScannerWrap::Define(env); }
Napi::Function DefineScanCursor(Napi::Env env) { return ScanCursorWrap::Define(env); }

}  // namespace sockleak
