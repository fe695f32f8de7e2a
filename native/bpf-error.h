// How native code reports failure: a value, never a C++ exception, so nothing
// unwinds across the N-API boundary. The binding turns it into a JS Error with
// a stable `code` (errno name) and `stage` that TypeScript maps to typed errors.
#pragma once

#include <cerrno>
#include <cstring>
#include <string>

#include "libbpf-log.h"

namespace sockleak {

struct BpfError {
  int err = 0;          // positive errno; 0 = success
  std::string stage;    // "open" | "load" | "attach" | "ringbuf" | "iter" | ...
  std::string program;  // the BPF program concerned, when one is
  std::string message;  // one line for people
  std::string log;      // libbpf/verifier output captured during the failing step

  bool ok() const { return err == 0; }

  static BpfError From(int err, std::string stage, std::string program = "") {
    BpfError e;
    e.err = err < 0 ? -err : err;
    if (e.err == 0) e.err = EINVAL;
    e.stage = std::move(stage);
    e.program = program.empty() ? BlamedProgram() : std::move(program);
    e.message = e.stage + (e.program.empty() ? "" : " " + e.program) + ": " + strerror(e.err);
    e.log = LibbpfLog();
    return e;
  }
};

}  // namespace sockleak
