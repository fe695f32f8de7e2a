// `sockleak reap`: destroys the sockets user space listed, re-checking each one
// first. Loads bpf/reap.bpf.c (iter/tcp + bpf_sock_destroy, Linux >= 6.5) and
// runs its iterator in each network namespace concerned; where the kfunc is
// missing, falls back to sock_diag SOCK_DESTROY (sock-diag.h). Returns the raw
// struct sl_reap_result records, one per request. Knows nothing of N-API.
#pragma once

#include <linux/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bpf-error.h"
#include "sockleak.h"

struct sl_reap;

namespace sockleak {

enum class ReapMethod {
  kAuto,      // bpf_sock_destroy where the kernel has it, else sock_diag
  kBpf,       // bpf_sock_destroy only (fail to open without it)
  kSockDiag,  // sock_diag SOCK_DESTROY only
};

class Reaper {
 public:
  // Fails with stage "sock_diag" when the kernel offers neither way: EOPNOTSUPP (no
  // SOCK_DESTROY), or program "tcp_diag" (sock_diag cannot look TCP sockets up).
  static std::unique_ptr<Reaper> Open(const std::string& btf_path, ReapMethod method, BpfError* error);
  ~Reaper();

  Reaper(const Reaper&) = delete;
  Reaper& operator=(const Reaper&) = delete;

  // "bpf_sock_destroy" or "sock_diag".
  const char* method() const { return skel_ ? "bpf_sock_destroy" : "sock_diag"; }
  // Why the BPF path is not used ("" when it is, or when sock_diag was asked for).
  const std::string& fallback_reason() const { return fallback_reason_; }

  // Visits each namespace in `netns_paths` (/proc/PID/ns/net) and decides on every
  // request whose socket lives there. Appends exactly one sl_reap_result per request
  // to *out: sockets in no visited namespace, or gone, are SL_REAP_SKIP_NOT_FOUND.
  // Safe from any thread; runs are serialised.
  BpfError Run(const std::vector<sl_reap_request>& requests, const std::vector<std::string>& netns_paths,
               std::vector<sl_reap_result>* out);

 private:
  Reaper() = default;
  BpfError RunBpf(const std::vector<sl_reap_request>& requests, const std::vector<std::string>& netns_paths,
                  std::vector<sl_reap_result>* out);
  BpfError RunIterator(const std::string& netns_path, std::vector<sl_reap_result>* out);
  BpfError RunSockDiag(const std::vector<sl_reap_request>& requests, const std::vector<std::string>& netns_paths,
                       std::vector<sl_reap_result>* out);

  std::mutex mutex_;         // one run at a time: the requests map is shared by all runs
  sl_reap* skel_ = nullptr;  // owned; null = sock_diag fallback
  std::string fallback_reason_;
};

}  // namespace sockleak
