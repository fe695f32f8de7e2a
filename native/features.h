// What the running kernel offers of what sockleak uses, read from its BTF and
// by libbpf's probes: so a missing feature is named, never an obscure failure.
#pragma once

#include <string>
#include <vector>

namespace sockleak {

struct Feature {
  std::string name;   // stable id, e.g. "iter/tcp"
  bool available = false;
};

// Probes against the kernel BTF at `btf_path` ("" = the running kernel's).
// An unreadable BTF makes every BTF-based feature unavailable.
std::vector<Feature> ProbeFeatures(const std::string& btf_path);

// Whether the running kernel's BTF has the kfunc `name` (kfuncs resolve against
// the kernel's own BTF, whatever btf_custom_path says). Unknown counts as
// present: the load then decides.
bool KernelHasFunc(const char* name);

// Syscall tracepoints need tracefs, and a fresh machine has none mounted:
// mounts it (root may) and sets *mounted. False: not available.
bool EnsureTracefs(bool* mounted);

}  // namespace sockleak
