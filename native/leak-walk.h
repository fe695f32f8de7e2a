// Leak mode's hand-off where the kernel refuses map-element iterators (seen on
// a 6.18 build: EPERM before verification for every iter/bpf_map_elem): user
// space reads the two homes of CLOSE_WAIT entries itself, the `close_wait`
// hash by BPF_MAP_LOOKUP_BATCH and the mmapped `sockets`
// slots in place, and marks what it reports as the new_leaks and
// new_socket_leaks iterators do (leaks-progs.bpf.h): the same records, the same marks.
#pragma once

#include <linux/types.h>

#include <cstdint>
#include <vector>

#include "bpf-error.h"

struct sl_socket;

namespace sockleak {

struct LeakMaps {
  int close_wait_fd = -1;              // the `close_wait` hash
  sl_socket* slots = nullptr;          // the mmapped `sockets` array; null when creators are not tracked
  uint32_t slot_count = 0;
  __u64* reported_bits = nullptr;      // .bss reported_bits (mmapped)
  uint32_t reported_bit_count = 0;     // a power of two
  uint32_t* follow_closes = nullptr;   // .bss follow_closes (mmapped)
};

// Appends a struct sl_event per CLOSE_WAIT entry that entered at or before
// `cutoff_ns` and was not reported yet, and marks it reported.
BpfError WalkNewLeaksFromUser(const LeakMaps& maps, uint64_t cutoff_ns, std::vector<uint8_t>* out);

}  // namespace sockleak
