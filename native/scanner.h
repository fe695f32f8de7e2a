// Snapshots by BPF iterator: loads bpf/scan.bpf.c once (nothing is attached
// permanently) and runs one of its iterators on demand, returning the raw
// struct sl_sock records (kCensus: one struct sl_port_census). Knows nothing
// of N-API; thread-safe.
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
// sockets in the requested states of one netns (u64 each, no records);
// kCensus: iter/tcp of one netns writing no records, one struct sl_port_census.
enum class ScanKind { kFiles, kTcp, kCookies, kCensus };

struct ScanRequest {
  ScanKind kind = ScanKind::kFiles;
  uint32_t target_tgid = 0;        // kFiles: 0 = every process
  uint32_t state_mask = 0;         // bit (1 << tcp state); 0 = every state
  std::string netns_path;          // kTcp, kCookies, kCensus: this netns ("" = the caller's)
};

class Scanner {
 public:
  // Loads nothing yet: the BPF object is loaded by the first iterator scan, on
  // the thread that runs it (a pool thread), so that a sock_diag census and
  // whatever the caller does meanwhile overlap the ~20 ms of CO-RE relocation
  // and verification. A load failure is that scan's error, and every later one's.
  // `cached_btf_path`: a BTF minimised for this object and made from the
  // running kernel's (scripts/build-bpf.sh), tried first because relocating
  // against it is ~10 ms faster; any load failure with it falls back to
  // `btf_path` ("" = the kernel's own).
  Scanner(std::string btf_path, std::string cached_btf_path);
  ~Scanner();

  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // Loads the BPF object now, on the calling thread, unless it is loaded: a
  // caller that knows a scan is coming starts the ~20 ms early. A failure is
  // kept and returned by every scan.
  void Preload();

  // Runs one iteration to the end into `out`. Safe from any thread; iterator
  // creations are serialised.
  BpfError Run(const ScanRequest& request, ScanBuffer* out);

 private:
  // Call with mutex_ held.
  BpfError LoadLocked();
  BpfError CreateIterator(const ScanRequest& request, int* iter_fd);
  BpfError Census(const ScanRequest& request, ScanBuffer* out);
  static BpfError DumpCookies(const ScanRequest& request, ScanBuffer* out);

  // Loads with `btf` as the CO-RE target ("" = the kernel's own).
  BpfError LoadWith(const std::string& btf, sl_scan** out);

  const std::string btf_path_;
  const std::string cached_btf_path_;
  // Guards loading, the .bss filters between setting them and creating the
  // iterator, and the census (.bss too) for a whole census run.
  std::mutex mutex_;
  sl_scan* skel_ = nullptr;  // owned; null until loaded (under mutex_)
  BpfError load_error_;      // a failed load, returned by every scan (under mutex_)
};

}  // namespace sockleak
