// Snapshots by BPF iterator: loads bpf/scan.bpf.c once (nothing is attached
// permanently) and runs one of its iterators on demand, returning the raw
// struct sl_sock records. Knows nothing of N-API; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "bpf-error.h"
#include "scan-buffer.h"

struct sl_scan;

namespace sockleak {

// kFiles: iter/task_file (sockets held by processes, all namespaces); kTcp:
// iter/tcp (every socket of one netns); kCookies: sock_diag's cookies of the
// sockets in the requested states of one netns (u64 each, no records).
enum class ScanKind { kFiles, kTcp, kCookies };

struct ScanRequest {
  ScanKind kind = ScanKind::kFiles;
  uint32_t target_tgid = 0;        // kFiles: 0 = every process
  uint32_t state_mask = 0;         // bit (1 << tcp state); 0 = every state
  std::string netns_path;          // kTcp, kCookies: this netns ("" = the caller's)
};

class Scanner {
 public:
  static std::unique_ptr<Scanner> Open(const std::string& btf_path, BpfError* error);
  ~Scanner();

  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // Runs one iteration to the end into `out`. Safe from any thread; iterator
  // creations are serialised.
  BpfError Run(const ScanRequest& request, ScanBuffer* out);

 private:
  Scanner() = default;
  BpfError CreateIterator(const ScanRequest& request, int* iter_fd);
  static BpfError DumpCookies(const ScanRequest& request, ScanBuffer* out);

  std::mutex mutex_;         // guards the .bss filters between setting them and creating the iterator
  sl_scan* skel_ = nullptr;  // owned
};

}  // namespace sockleak
