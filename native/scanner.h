// Snapshots by BPF iterator: loads bpf/scan.bpf.c once (nothing is attached
// permanently) and runs one of its iterators on demand, returning the raw
// struct sl_sock records (kCensus: one struct sl_port_census). Knows nothing
// of N-API; thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bpf-error.h"

struct sl_scan;

namespace sockleak {

enum class ScanKind { kFiles, kTcp, kCensus };

struct ScanRequest {
  ScanKind kind = ScanKind::kFiles;
  uint32_t target_tgid = 0;        // kFiles: 0 = every process
  uint32_t state_mask = 0;         // bit (1 << tcp state); 0 = every state
  std::string netns_path;          // kTcp, kCensus: iterate this netns ("" = the caller's)
};

class Scanner {
 public:
  static std::unique_ptr<Scanner> Open(const std::string& btf_path, BpfError* error);
  ~Scanner();

  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // Runs one iteration to the end. Safe from any thread; iterations are serialised.
  BpfError Run(const ScanRequest& request, std::vector<uint8_t>* out);

 private:
  Scanner() = default;
  // Call with mutex_ held.
  BpfError CreateIterator(const ScanRequest& request, int* iter_fd);
  BpfError Census(const ScanRequest& request, std::vector<uint8_t>* out);

  // Guards the .bss filters between setting them and creating the iterator,
  // and the census (.bss too) for a whole census run.
  std::mutex mutex_;
  sl_scan* skel_ = nullptr;  // owned
};

}  // namespace sockleak
