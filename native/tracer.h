// The live tracer: loads bpf/trace.bpf.c (embedded as a skeleton), attaches it,
// and drains its ring buffer on a thread of its own, handing raw sl_event
// records to a callback in batches. Knows nothing of N-API. One class, three
// files by concern: loading and attaching (tracer-load.cc), the lifetime, the
// poll thread (ring-poller.h) and the counters (tracer.cc), and the leak-mode
// map operations (tracer-maps.cc).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "bpf-error.h"
#include "refusal.h"
#include "ring-poller.h"

struct sl_trace;
struct sl_socket;
struct bpf_program;
struct bpf_map;

namespace sockleak {

// No defaults here: src/trace/tracer.ts owns them and validates every value,
// tracer-wrap.cc refuses an options object that lacks one. Zero-initialised
// only so that no field is ever read uninitialised.
struct TracerOptions {
  uint32_t target_tgid = 0;       // 0 = all processes
  uint32_t ring_bytes = 0;        // power of two, multiple of the page size
  uint64_t wakeup_min_bytes = 0;  // kernel wakes the reader only past this much data
  int poll_interval_ms = 0;       // the reader also drains on this timer
  bool leak_mode = false;         // SL_MODE_LEAKS: CLOSE_WAIT bookkeeping in maps
  uint32_t max_sockets = 0;       // leak mode: bound of the close_wait and creators maps
  bool follow_tree = false;       // leak mode: follow a process tree (sockleak run)
  bool track_creators = false;    // leak mode: record who connect()ed / accept()ed each socket
  bool creator_stacks = false;    // leak mode with track_creators: the user stack of each connect()
  uint32_t socket_slots = 0;      // leak mode: slots of the `sockets` array, a power of two; 0 = SL_SOCKET_SLOTS
  uint8_t fault_inject = 0;       // tests only: 1 = a program the verifier rejects
  std::string btf_path;           // "" = the running kernel's /sys/kernel/btf/vmlinux
  // Programs not to load (the probe's cache, SOCKLEAK_REFUSE); each has another
  // way (tracer-load.cc kDroppable). Open() adds those the kernel refuses.
  std::vector<std::string> refused;
};

struct Counters {
  uint64_t emitted = 0;
  uint64_t lost = 0;
  uint64_t map_full = 0;
  uint64_t missed = 0;  // program runs the kernel skipped (recursion misses)
};

struct ProgramStats {
  std::string name;
  uint32_t id = 0;
  uint64_t run_time_ns = 0;
  uint64_t run_cnt = 0;
};

class Tracer {
 public:
  // Receives a batch of whole sl_event records; called on the poll thread.
  using BatchSink = RingPoller::BatchSink;

  // Opens, loads and attaches; on failure nothing stays loaded or attached.
  static std::unique_ptr<Tracer> Open(const TracerOptions& options, BpfError* error);
  ~Tracer();

  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Starts the poll thread. Call once. `on_done` runs on the poll thread as its
  // last act, after the programs are detached and the final drain is delivered.
  BpfError Start(BatchSink sink, std::function<void()> on_done);
  // Asks the poll thread to detach, drain and finish; returns at once.
  void RequestStop();
  // RequestStop(), joins the poll thread, frees everything. Idempotent; called
  // by the destructor. Counters stay readable until then.
  void Stop();

  // Live sums over CPUs; after Stop(), the values at the moment of teardown.
  Counters ReadCounters() const;

  // How syscalls are hooked: "tracepoint" (per-syscall, leak mode with tracefs)
  // or "tp_btf" (raw sys_enter/sys_exit). And whether Open() mounted tracefs.
  const char* SyscallHooks() const { return syscall_tracepoints_ ? "tracepoint" : "tp_btf"; }
  bool MountedTracefs() const { return mounted_tracefs_; }
  std::vector<ProgramStats> ReadProgramStats() const;

  // What the kernel refused at load, each with the way taken instead.
  const std::vector<Refusal>& Refusals() const { return refusals_; }
  // Leak mode: whether leaks are handed over by user space's walk of the maps
  // (the kernel refused the map-element iterators) rather than by them.
  bool UserWalk() const { return user_walk_; }

  // Leak mode. Appends to `out` the close_wait entries (struct sl_event) that
  // entered CLOSE_WAIT at or before `cutoff_ns` and were not reported yet, and
  // marks them reported. Skips the map walk when close_wait_slots say no entry
  // can have crossed since the last call. Main thread only.
  BpfError CollectLeaks(uint64_t cutoff_ns, std::vector<uint8_t>* out);
  // Leak mode. Enters sockets found in CLOSE_WAIT by a scan (struct sl_sock
  // records) unless the kernel already has them, with an estimated entry time
  // (SL_F_AGE_ESTIMATED). Returns how many a full map refused.
  size_t Seed(const uint8_t* socks, size_t bytes);
  // Trace mode with a target pid: follows sockets the target already had
  // (struct sl_sock records from a scan): their cookies, and their listening
  // ports so connections accepted on them are followed too. Returns how many a
  // full map refused.
  size_t Follow(const uint8_t* socks, size_t bytes);

  // Leak mode. Drops close_wait entries of sockets that no longer exist.
  void Forget(const std::vector<uint64_t>& cookies);

  // Leak mode. The active_closes map as (struct sl_close_key, struct
  // sl_close_count) pairs, each pair sizeof(key) + sizeof(value) bytes.
  std::vector<uint8_t> ReadActiveCloses() const;

  // Leak mode with creator stacks. The frames of `user_stacks` entry `id`
  // (innermost first, up to the first zero) and the SL_CALLER_WORDS words at
  // the user stack pointer on entry (SL_CALLER_MIXED: differed; empty: none).
  // False when the id holds no stack. Main thread only.
  bool ReadStack(uint32_t id, std::vector<uint64_t>* frames, std::vector<uint64_t>* words) const;
  // Whether connect() stacks are captured (asked for, and the kernel took the program).
  bool CapturesStacks() const { return captures_stacks_; }

  // follow_tree: adds a root process; lists the tree's processes.
  BpfError TreeAdd(uint32_t tgid);
  std::vector<uint32_t> TreePids() const;

 private:
  explicit Tracer(const TracerOptions& options);
  // Opens and loads the skeleton without the programs in `refused`.
  BpfError LoadWithout(const std::set<std::string>& refused);
  // Attaches the loaded programs, maps the slots, sets up the ring buffer.
  BpfError Attach();
  bool MayHaveNewLeaks(uint64_t cutoff_ns) const;
  BpfError FollowCloses();
  BpfError WalkNewLeaks(uint64_t cutoff_ns, std::vector<uint8_t>* out);
  BpfError WalkMap(bpf_program* prog, bpf_map* map, std::vector<uint8_t>* out);
  // The slot of `cookie` in the mmaped `sockets` array, or nullptr.
  sl_socket* SlotOf(uint64_t cookie) const;

  const TracerOptions options_;
  sl_trace* skel_ = nullptr;          // owned; freed by Stop() on the caller's thread
  std::unique_ptr<RingPoller> ring_;  // made by Attach(); its thread detaches skel_ before its last drain
  Counters final_counters_;           // written by Stop()
  bool syscall_tracepoints_ = false;
  // CollectLeaks/Seed/Forget (main thread): the last cut-off walked or skipped
  // (load time at first: earlier entries are only seeds), seeded entries not
  // yet past a walked cut-off and the newest seeded entry time, and whether the
  // close() tracepoints are attached.
  uint64_t last_cutoff_ns_ = 0;
  bool seeds_pending_ = false;
  uint64_t seeded_until_ns_ = 0;
  bool closes_followed_ = false;
  bool mounted_tracefs_ = false;
  // Leak mode: the `sockets` array, mmaped after load (Seed and Forget read and
  // clear slots without a syscall); unmapped by Stop().
  sl_socket* slots_ = nullptr;
  size_t slots_bytes_ = 0;
  uint32_t slot_mask_ = 0;
  bool user_walk_ = false;
  bool captures_stacks_ = false;
  std::vector<Refusal> refusals_;
};

}  // namespace sockleak
