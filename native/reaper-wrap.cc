// N-API glue for Reaper (reaper.cc, `sockleak reap`): reap() runs on the libuv
// thread pool.
#include <napi.h>

#include <linux/types.h>

#include <memory>
#include <string>
#include <vector>

#include "napi-util.h"
#include "reaper.h"
#include "sockleak.h"
#include "wraps.h"

namespace sockleak {
namespace {

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
      btf_path = OptString(o, "btfPath");
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

}  // namespace

Napi::Function DefineReaper(Napi::Env env) { return ReaperWrap::Define(env); }

}  // namespace sockleak
