// Conversions shared by the N-API glue files (*-wrap.cc): native errors to JS
// errors with a stable code, and options (optional ones, and required ones
// whose defaults the TypeScript side owns).
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

// A string option; "" when absent.
inline std::string OptString(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  return v.IsString() ? v.As<Napi::String>().Utf8Value() : std::string();
}

// Options whose defaults TypeScript owns: a missing one is a bug on the JS
// side, thrown as a TypeError naming it (false returned) rather than filled in
// a second time here.
inline bool Require(const Napi::Object& o, const char* what, const char* key, napi_valuetype type, Napi::Value* out) {
  *out = o.Get(key);
  if (out->Type() == type) return true;
  const char* expected = type == napi_number ? " must be a number" : " must be a boolean";
  Napi::TypeError::New(o.Env(), std::string(what) + ": " + key + expected).ThrowAsJavaScriptException();
  return false;
}

inline bool RequireUint(const Napi::Object& o, const char* what, const char* key, uint32_t* out) {
  Napi::Value v;
  if (!Require(o, what, key, napi_number, &v)) return false;
  *out = v.As<Napi::Number>().Uint32Value();
  return true;
}

inline bool RequireBool(const Napi::Object& o, const char* what, const char* key, bool* out) {
  Napi::Value v;
  if (!Require(o, what, key, napi_boolean, &v)) return false;
  *out = v.As<Napi::Boolean>().Value();
  return true;
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
