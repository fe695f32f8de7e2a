// The classes the addon exports, one glue file each (N-API only: the work is in
// tracer*.cc, scanner.cc and reaper.cc); addon.cc puts them on the exports.
#pragma once

#include <napi.h>

namespace sockleak {

Napi::Function DefineTracer(Napi::Env env);      // tracer-wrap.cc
Napi::Function DefineScanner(Napi::Env env);     // scanner-wrap.cc
Napi::Function DefineScanCursor(Napi::Env env);  // scanner-wrap.cc
Napi::Function DefineReaper(Napi::Env env);      // reaper-wrap.cc

}  // namespace sockleak
