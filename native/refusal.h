// What the kernel refused while sockleak loaded its BPF programs, and why, in
// the kernel's own words: every loader keeps going without a refused program
// where another way exists (docs/kernels.md, "Fallbacks"), and says so.
#pragma once

#include <string>

namespace sockleak {

struct Refusal {
  std::string program;  // the BPF program, or a loader ("light skeleton")
  int err = 0;          // positive errno of the refused load
  std::string reason;   // the verifier's last words, or the errno's text
};

// The verifier's reason from a log (libbpf's framed "-- BEGIN PROG LOAD LOG --"
// block, or a bare verifier log): its last line other than the "processed N
// insns" statistics; libbpf's first line where the kernel verified nothing
// (a missing kfunc); the errno's text where the log has none (a kernel that
// refuses a program type before verifying it).
std::string RefusalReason(const std::string& log, int err);

}  // namespace sockleak
