#include "features.h"

#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include <cstring>

namespace sockleak {
namespace {

bool HasType(const btf* types, const char* name, int kind) {
  return types && btf__find_by_name_kind(types, name, kind) > 0;
}

// Whether struct `name` has a member `member` (CO-RE would find it).
bool HasMember(const btf* types, const char* name, const char* member) {
  if (!types) return false;
  int id = btf__find_by_name_kind(types, name, BTF_KIND_STRUCT);
  if (id <= 0) return false;
  const btf_type* t = btf__type_by_id(types, id);
  const struct btf_member* members = btf_members(t);
  for (int i = 0; i < btf_vlen(t); i++) {
    const char* found = btf__name_by_offset(types, members[i].name_off);
    if (found && strcmp(found, member) == 0) return true;
  }
  return false;
}

// Helpers are values of enum bpf_func_id in the kernel's BTF.
bool HasHelper(const btf* types, const char* helper) {
  if (!types) return false;
  int id = btf__find_by_name_kind(types, "bpf_func_id", BTF_KIND_ENUM);
  if (id <= 0) return false;
  const btf_type* t = btf__type_by_id(types, id);
  const struct btf_enum* values = btf_enum(t);
  for (int i = 0; i < btf_vlen(t); i++) {
    const char* value = btf__name_by_offset(types, values[i].name_off);
    if (value && strcmp(value, helper) == 0) return true;
  }
  return false;
}

}  // namespace

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
      {"kfunc/bpf_sock_destroy", HasType(types, "bpf_sock_destroy", BTF_KIND_FUNC)},
  };
  btf__free(types);
  return features;
}

}  // namespace sockleak
