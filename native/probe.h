// What this kernel accepts of sockleak's BPF, found by loading it: every
// program of every object, and each loader. Features named in the kernel's BTF
// cannot predict a build that refuses a program type or trusts a pointer less
// (docs/kernels.md); a load can. An object is loaded with all of its programs,
// and again without each one the kernel refuses, so a probe costs one load per
// object plus one per refused program (too slow for every command; TypeScript caches the
// result per kernel build). Nothing is attached.
#pragma once

#include <string>
#include <vector>

namespace sockleak {

struct ProgramVerdict {
  std::string object;   // "trace", "scan", "reap", or "loader"
  std::string program;  // a program; for "loader": "light" or "light-cast"
  bool loaded = false;
  int err = 0;          // positive errno when refused
  std::string reason;   // the verifier's last words, when refused
};

std::vector<ProgramVerdict> ProbePrograms(const std::string& btf_path);

// A hash of the BPF objects this addon embeds (made at build time): a probe's
// result holds for them only.
std::string ProgramsId();

}  // namespace sockleak
