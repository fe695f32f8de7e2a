#include "features.h"

#include <sys/mount.h>
#include <unistd.h>

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstring>

namespace sockleak {
namespace {

bool HasType(const btf* types, const char* name, int kind) {
  return types && btf__find_by_name_kind(types, name, kind) > 0;
}

// Whether one of `n` BTF items (enum values, struct members: each has a name_off) is called `name`.
template <typename Item>
bool AnyNamed(const btf* types, const Item* items, int n, const char* name) {
  for (int i = 0; i < n; i++) {
    const char* found = btf__name_by_offset(types, items[i].name_off);
    if (found && strcmp(found, name) == 0) return true;
  }
  return false;
}

// Whether struct `name` has a member `member` (CO-RE would find it).
bool HasMember(const btf* types, const char* name, const char* member) {
  int id = types ? btf__find_by_name_kind(types, name, BTF_KIND_STRUCT) : -1;
  if (id <= 0) return false;
  const btf_type* t = btf__type_by_id(types, id);
  return AnyNamed(types, btf_members(t), btf_vlen(t), member);
}

// Helpers are values of enum bpf_func_id in the kernel's BTF.
bool HasHelper(const btf* types, const char* helper) {
  int id = types ? btf__find_by_name_kind(types, "bpf_func_id", BTF_KIND_ENUM) : -1;
  if (id <= 0) return false;
  const btf_type* t = btf__type_by_id(types, id);
  return AnyNamed(types, btf_enum(t), btf_vlen(t), helper);
}

}  // namespace

bool KernelHasFunc(const char* name) {
  btf* vmlinux = btf__load_vmlinux_btf();
  if (libbpf_get_error(vmlinux)) return true;
  bool found = HasType(vmlinux, name, BTF_KIND_FUNC);
  btf__free(vmlinux);
  return found;
}

std::vector<Feature> ProbeFeatures(const std::string& btf_path) {
  btf* types = btf_path.empty() ? btf__load_vmlinux_btf() : btf__parse(btf_path.c_str(), nullptr);
  if (libbpf_get_error(types)) types = nullptr;
  std::vector<Feature> features = {
      {"btf", types != nullptr},
      {"tp_btf/inet_sock_set_state", HasType(types, "btf_trace_inet_sock_set_state", BTF_KIND_TYPEDEF)},
      {"tp_btf/sys_enter", HasType(types, "btf_trace_sys_enter", BTF_KIND_TYPEDEF)},
      {"tp_btf/softirq_entry", HasType(types, "btf_trace_softirq_entry", BTF_KIND_TYPEDEF)},
      {"tp_btf/sched_process_fork", HasType(types, "btf_trace_sched_process_fork", BTF_KIND_TYPEDEF)},
      {"ringbuf", libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr) == 1},
      {"iter/task_file", HasType(types, "bpf_iter__task_file", BTF_KIND_STRUCT)},
      {"iter/tcp", HasType(types, "bpf_iter__tcp", BTF_KIND_STRUCT)},
      {"iter/bpf_map_elem", HasType(types, "bpf_iter__bpf_map_elem", BTF_KIND_STRUCT)},
      {"helper/sock_from_file", HasHelper(types, "BPF_FUNC_sock_from_file")},
      {"helper/get_socket_cookie", HasHelper(types, "BPF_FUNC_get_socket_cookie")},
      {"helper/skc_to_tcp_sock", HasHelper(types, "BPF_FUNC_skc_to_tcp_sock")},
      {"helper/jiffies64", HasHelper(types, "BPF_FUNC_jiffies64")},
      // The scan object's light skeleton: a syscall program that has the kernel
      // relocate (struct bpf_core_ctx: kernel-side CO-RE) and look up attach targets.
      {"loader/kernel_co_re", HasType(types, "bpf_core_ctx", BTF_KIND_STRUCT) &&
                                  HasHelper(types, "BPF_FUNC_btf_find_by_name_kind")},
      // census_ehash: bpf_loop, and the established hash reachable from a namespace.
      {"census/established_hash", HasHelper(types, "BPF_FUNC_loop") &&
                                      HasMember(types, "inet_timewait_death_row", "hashinfo")},
      {"kfunc/bpf_rdonly_cast", HasType(types, "bpf_rdonly_cast", BTF_KIND_FUNC)},
      {"kfunc/bpf_sock_destroy", HasType(types, "bpf_sock_destroy", BTF_KIND_FUNC)},
  };
  btf__free(types);
  return features;
}

bool EnsureTracefs(bool* mounted) {
  if (access("/sys/kernel/tracing/events/syscalls", F_OK) == 0) return true;
  if (access("/sys/kernel/debug/tracing/events/syscalls", F_OK) == 0) return true;
  if (mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr) != 0) return false;
  *mounted = true;
  return access("/sys/kernel/tracing/events/syscalls", F_OK) == 0;
}

}  // namespace sockleak
