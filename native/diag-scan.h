// Snapshots without BPF: the records the scan iterators write (struct sl_sock),
// made from sock_diag (every TCP socket of a netns, as `ss` reads them) and
// /proc (which process holds which socket inode on which fd, as `ss -p` reads
// them). The scanner's way where the kernel refuses its iterators (lockdown,
// no CAP_BPF, seccomp, no BTF, or a build that refuses one program). What it
// cannot know: last_active_ns is estimated from tcp_info, and nothing of who
// created a socket. Knows nothing of N-API.
#pragma once

#include <cstdint>
#include <string>

#include "bpf-error.h"
#include "scan-buffer.h"

namespace sockleak {

// As scan_files: one record per (process, fd) holding a TCP socket in the
// states of `state_mask` (0 = all), every netns; `target_tgid` 0 = every process.
BpfError DiagScanFiles(uint32_t target_tgid, uint32_t state_mask, ScanBuffer* out);

// As scan_tcp: one record per TCP socket of the netns at `netns_path` ("" =
// the caller's), TIME_WAIT included, no owner (fd -1).
BpfError DiagScanTcp(const std::string& netns_path, uint32_t state_mask, ScanBuffer* out);

// As census_tcp: one struct sl_port_census for the netns at `netns_path`.
BpfError DiagCensus(const std::string& netns_path, ScanBuffer* out);

}  // namespace sockleak
