// Conversions shared by the N-API glue files (*-wrap.cc): native errors to JS
// errors with a stable code, and optional numeric options.
#pragma once

#include <napi.h>

#include <cstdint>
#include <cstring>

#include "bpf-error.h"

namespace sockleak {

inline Napi::Error ToJsError(Napi::Env env, const BpfError& e) {
  Napi::Error error = Napi::Error::New(env, e.message);
  error.Set("errno", Napi::Number::New(env, e.err));
  const char* name = strerrorname_np(e.err);
  error.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  error.Set("stage", Napi::String::New(env, e.stage));
  error.Set("program", Napi::String::New(env, e.program));
  error.Set("log", Napi::String::New(env, e.log));
  return error;
}

inline uint32_t OptUint(const Napi::Object& o, const char* key, uint32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

}  // namespace sockleak
