// The addon's module: the exported classes (glue in *-wrap.cc, declared in
// wraps.h), feature probing, the malloc tuning the agent asks for, and the
// struct sizes TypeScript checks against the generated layout.
#include <napi.h>

#include <linux/types.h>
#include <malloc.h>

#include <cstring>
#include <string>
#include <vector>

#include "features.h"
#include "probe.h"
#include "sockleak.h"
#include "wraps.h"

namespace sockleak {
namespace {

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

// probePrograms(btfPath?) -> [{ object, program, loaded, errno, code, reason }]: loads now, on this thread.
Napi::Value ProbeProgramsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string btf_path = info.Length() > 0 && info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "";
  std::vector<ProgramVerdict> verdicts = ProbePrograms(btf_path);
  Napi::Array list = Napi::Array::New(env, verdicts.size());
  for (uint32_t i = 0; i < verdicts.size(); i++) {
    const ProgramVerdict& v = verdicts[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("object", v.object);
    o.Set("program", v.program);
    o.Set("loaded", v.loaded);
    o.Set("errno", v.err);
    const char* name = v.err ? strerrorname_np(v.err) : "";
    o.Set("code", name ? name : "EUNKNOWN");
    o.Set("reason", v.reason);
    list.Set(i, o);
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
  exports.Set("Tracer", DefineTracer(env));
  exports.Set("Scanner", DefineScanner(env));
  exports.Set("ScanCursor", DefineScanCursor(env));
  exports.Set("Reaper", DefineReaper(env));
  exports.Set("releaseLargeAllocations", Napi::Function::New(env, ReleaseLargeAllocations, "releaseLargeAllocations"));
  exports.Set("probeFeatures", Napi::Function::New(env, ProbeFeaturesJs, "probeFeatures"));
  exports.Set("probePrograms", Napi::Function::New(env, ProbeProgramsJs, "probePrograms"));
  exports.Set("programsId", Napi::Function::New(
                               env, [](const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), ProgramsId()); },
                               "programsId"));
  exports.Set("SOCK_SIZE", Napi::Number::New(env, sizeof(sl_sock)));
  exports.Set("PORT_CENSUS_SIZE", Napi::Number::New(env, sizeof(sl_port_census)));
  exports.Set("CENSUS_SOCK_SIZE", Napi::Number::New(env, sizeof(sl_census_sock)));
  exports.Set("CLOSE_PAIR_SIZE", Napi::Number::New(env, sizeof(sl_close_key) + sizeof(sl_close_count)));
  exports.Set("EVENT_SIZE", Napi::Number::New(env, sizeof(sl_event)));
  exports.Set("COUNTERS_SIZE", Napi::Number::New(env, sizeof(sl_counters)));
  return exports;
}

}  // namespace sockleak

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return sockleak::Init(env, exports); }

NODE_API_MODULE(NODE_GYP_MODULE_NAME, InitAddon)
