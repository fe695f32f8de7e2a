// Snapshots by BPF iterator: loads bpf/scan.bpf.c once (nothing is attached
// permanently) and runs one of its iterators on demand, returning the raw
// struct sl_sock records (kCensus: one struct sl_port_census). Knows nothing
// of N-API; thread-safe.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include <vector>

#include "bpf-error.h"
#include "refusal.h"
#include "scan-buffer.h"

struct sl_scan_handle;

namespace sockleak {

// kFiles: iter/task_file (sockets held by processes, all namespaces); kTcp:
// iter/tcp (every socket of one netns); kCookies: sock_diag's cookies of the
// sockets in the requested states of one netns (u64 each, no records);
// kEhash: the same census from census_ehash, one struct sl_census_sock per
// socket (endpoints too: a socket may have no cookie yet), EAGAIN when the walk
// cannot vouch for it and EINVAL for states it cannot see (LISTEN, CLOSE);
// kCensus: iter/tcp of one netns writing no records, one struct sl_port_census.
enum class ScanKind { kFiles, kTcp, kCookies, kEhash, kCensus };

struct ScanRequest {
  ScanKind kind = ScanKind::kFiles;
  uint32_t target_tgid = 0;        // kFiles: 0 = every process
  uint32_t state_mask = 0;         // bit (1 << tcp state); 0 = every state
  std::string netns_path;          // kTcp, kCookies, kEhash, kCensus: this netns ("" = the caller's)
};

struct ScannerOptions {
  // Programs of bpf/scan.bpf.c not to load (the probe's cache, SOCKLEAK_REFUSE);
  // "bpf": no BPF at all (every scan from sock_diag and /proc); "light": not the
  // light skeletons.
  std::vector<std::string> refused;
  std::string btf_path;  // kernel BTF for the libbpf object ("" = the running kernel's)
};

// How the scan object was loaded, and what the kernel refused on the way.
struct ScanLoadReport {
  std::string loader;  // "light", "light-cast", "libbpf", "none" (no BPF)
  std::vector<Refusal> refusals;
  std::vector<std::string> programs;  // the programs loaded
};

class Scanner {
 public:
  // Loads nothing yet: the BPF object is loaded by the first iterator scan, on
  // the thread that runs it (a pool thread), so that a sock_diag census and
  // whatever the caller does meanwhile overlap the load. The load tries the
  // light skeletons, then the libbpf object without each program the kernel
  // refuses; scans whose program is refused come from sock_diag and /proc
  // (diag-scan.h). Only a failure of every way is a scan's error.
  explicit Scanner(ScannerOptions options = {});
  ~Scanner();

  Scanner(const Scanner&) = delete;
  Scanner& operator=(const Scanner&) = delete;

  // Loads the BPF object now, on the calling thread, unless it is loaded: a
  // caller that knows a scan is coming starts the load early. A failure is
  // kept and returned by every scan.
  void Preload();

  // Runs one iteration to the end into `out`. Safe from any thread; iterator
  // creations are serialised.
  BpfError Run(const ScanRequest& request, ScanBuffer* out);

  // Creates the iterator of a kFiles or kTcp request (in its netns) for a
  // ScanCursor; *iter_fd is the caller's to close.
  BpfError Open(const ScanRequest& request, int* iter_fd);

  // Loads (if not yet) and says how.
  ScanLoadReport LoadReport();

  // Gives the records among `bytes` (whole struct sl_sock) that scan_files_cast
  // wrote without a cookie (the socket had none yet) their cookie, from an exact
  // sock_diag query in their netns, and drops the few no query finds (gone, or
  // not hashed: a socket never bound). Returns the bytes kept.
  static size_t FillMissingCookies(uint8_t* bytes, size_t size);

  // Whether kFiles/kTcp requests have an iterator; else ScanCursor reads the
  // sock_diag scan's records.
  bool HasIterator(ScanKind kind);

  // The records of a request without its iterator (diag-scan.h).
  static BpfError RunWithoutBpf(const ScanRequest& request, ScanBuffer* out);

 private:
  // Call with mutex_ held.
  BpfError LoadLocked();
  // The program a kFiles, kTcp or kCensus request runs; -1 if it is not loaded.
  int ProgramFd(ScanKind kind) const;
  BpfError CreateIterator(const ScanRequest& request, int* iter_fd);
  BpfError Census(const ScanRequest& request, ScanBuffer* out);
  static BpfError DumpCookies(const ScanRequest& request, ScanBuffer* out);
  BpfError WalkEhash(const ScanRequest& request, ScanBuffer* out);

  // Guards loading, the .bss filters between setting them and creating the
  // iterator, and the census (.bss too) for a whole census run. The programs
  // read the filters while the iterator is read, not when it is created: one
  // Scanner runs one filtered iteration at a time (each of sockleak's scanning
  // classes opens its own Scanner and runs its passes one after another).
  std::mutex mutex_;
  // census_ehash's .bss (walk_*), for a whole walk. Not mutex_: the census runs
  // beside the iter/task_file scan it is compared with.
  std::mutex walk_mutex_;
  const ScannerOptions options_;
  bool loaded_ = false;             // the load was tried (under mutex_)
  sl_scan_handle* skel_ = nullptr;  // owned; null until loaded, or when nothing loaded (under mutex_)
  BpfError load_error_;             // why nothing loaded (under mutex_)
  std::vector<Refusal> refusals_;   // what the kernel refused on the way (under mutex_)
};

// One kFiles or kTcp iteration read a chunk at a time into the caller's
// memory: a scan of 200k sockets never has all its 22 MB of records in memory
// at once, and nothing is allocated per scan. The iterator is created by the
// first Read (on the thread that runs it, like Scanner::Run). One Read at a
// time; the owner of the cursor serialises them (`reading` marks one in flight).
class ScanCursor {
 public:
  ScanCursor(std::shared_ptr<Scanner> scanner, ScanRequest request)
      : scanner_(std::move(scanner)), request_(std::move(request)) {}
  ~ScanCursor();

  ScanCursor(const ScanCursor&) = delete;
  ScanCursor& operator=(const ScanCursor&) = delete;

  // Fills dst with whole struct sl_sock records, as many as `cap` holds (the
  // kernel hands out at most one seq_file page per read(2), so it loops);
  // *n = 0 once the iteration is over.
  BpfError Read(uint8_t* dst, size_t cap, size_t* n);

  std::atomic<bool> reading{false};

 private:
  std::shared_ptr<Scanner> scanner_;  // keeps the programs loaded while the iterator runs
  const ScanRequest request_;
  int fd_ = -1;  // the iterator, once created
  bool done_ = false;
  // Without an iterator: the whole scan from sock_diag, handed out a chunk at a time.
  std::unique_ptr<ScanBuffer> records_;
  size_t handed_ = 0;
};

}  // namespace sockleak
