// Conversions shared by the N-API glue files (*-wrap.cc): native errors to JS
// errors with a stable code, and optional numeric options.
#pragma once

#include <napi.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "bpf-error.h"
#include "refusal.h"

namespace sockleak {

inline Napi::Error ToJsError(Napi::Env env, const BpfError& e) {
  Napi::Error error = Napi::Error::New(env, e.message);
  error.Set("errno", Napi::Number::New(env, e.err));
  const char* name = strerrorname_np(e.err);
  error.Set("code", Napi::String::New(env, name ? name : "EUNKNOWN"));
  error.Set("stage", Napi::String::New(env, e.stage));
  error.Set("program", Napi::String::New(env, e.program));
  error.Set("log", Napi::String::New(env, e.log));
  error.Set("reason", Napi::String::New(env, RefusalReason(e.log, e.err)));
  return error;
}

inline uint32_t OptUint(const Napi::Object& o, const char* key, uint32_t fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().Uint32Value() : fallback;
}

// An array of strings; anything else is empty.
inline std::vector<std::string> StringList(const Napi::Value& v) {
  std::vector<std::string> list;
  if (!v.IsArray()) return list;
  Napi::Array a = v.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value item = a.Get(i);
    if (item.IsString()) list.push_back(item.As<Napi::String>().Utf8Value());
  }
  return list;
}

// [{ program, errno, code, reason }]
inline Napi::Array RefusalList(Napi::Env env, const std::vector<Refusal>& refusals) {
  Napi::Array list = Napi::Array::New(env, refusals.size());
  for (uint32_t i = 0; i < refusals.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("program", refusals[i].program);
    o.Set("errno", refusals[i].err);
    const char* name = strerrorname_np(refusals[i].err);
    o.Set("code", name ? name : "EUNKNOWN");
    o.Set("reason", refusals[i].reason);
    list.Set(i, o);
  }
  return list;
}

}  // namespace sockleak
