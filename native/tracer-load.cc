// Tracer (tracer.h): opening, loading and attaching the trace object. Which
// of its programs load depends on the mode and on what the kernel takes (the
// autoload matrix in LoadWithout); a program the kernel refuses at load or at
// attach is dropped with its group and the whole object loaded again.
#include "tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ctime>
#include <set>
#include <string>
#include <utility>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
#include "trace.skel.h"
// clang-format on

#include "features.h"

namespace sockleak {

namespace {

// The most one batch to JS holds (and one record more): a busy ring crosses
// into JS once per batch, not once per record.
constexpr size_t kMaxBatchBytes = 1u << 20;

// Programs that have another way where the kernel refuses them; refusing one
// refuses the others of its group (each group is used whole or not at all).
const std::vector<std::vector<std::string>> kDroppable = {
    {"new_leaks", "new_socket_leaks"},                               // -> WalkNewLeaksFromUser (leak-walk.h)
    {"handle_set_state_stacks"},                                     // -> handle_set_state: no creator stacks
    {"tp_accept_stacks", "tp_accept4_stacks"},                       // -> tp_accept_cast: no stacks of accepted sockets
    {"tp_accept_cast", "tp_accept4_cast"},                           // -> tp_accept_exit(_stacks), tp_accept4_exit(_stacks)
    {"tp_accept_exit_stacks", "tp_accept4_exit_stacks"},             // -> tp_accept_exit: no stacks of accepted sockets
    {"tp_accept_exit", "tp_accept4_exit"},                           // -> accepted sockets' creators unknown
    {"tp_close_enter", "tp_close_exit", "tp_bind_enter", "tp_bind_exit"},  // -> handle_sys_enter/exit
    {"handle_softirq_entry", "handle_softirq_exit"},                 // -> trace's event context unknown
};

const std::vector<std::string>* GroupOf(const std::string& program) {
  for (const auto& group : kDroppable) {
    for (const auto& name : group) {
      if (name == program) return &group;
    }
  }
  return nullptr;
}

}  // namespace

std::unique_ptr<Tracer> Tracer::Open(const TracerOptions& options, BpfError* error) {
  InstallLibbpfLog();
  std::set<std::string> refused(options.refused.begin(), options.refused.end());
  for (const auto& group : kDroppable) {
    for (const auto& name : group) {
      if (refused.count(name)) refused.insert(group.begin(), group.end());
    }
  }
  std::vector<Refusal> refusals;
  // A kernel without the kfunc refuses tp_accept_cast before it is tried.
  if (options.leak_mode && !refused.count("tp_accept_cast") && !KernelHasFunc("bpf_rdonly_cast")) {
    refusals.push_back({"tp_accept_cast", ENOENT, "the kernel has no bpf_rdonly_cast kfunc (Linux < 6.2)"});
    if (options.creator_stacks && !refused.count("tp_accept_stacks")) {
      refusals.push_back({"tp_accept_stacks", ENOENT, "the kernel has no bpf_rdonly_cast kfunc (Linux < 6.2)"});
    }
    refused.insert({"tp_accept_cast", "tp_accept4_cast", "tp_accept_stacks", "tp_accept4_stacks"});
  }
  // Each refused program costs one more open and load; the probe's cache
  // (src/kernel/kernel-probe.ts) names them up front, so this loop rarely turns.
  // A kernel may also refuse a loaded program at attach (6.1-rt refused
  // tracepoint programs that read past their record: EACCES).
  for (size_t attempt = 0; attempt <= kDroppable.size(); attempt++) {
    std::unique_ptr<Tracer> tracer(new Tracer(options));
    *error = tracer->LoadWithout(refused);
    if (error->ok()) *error = tracer->Attach();
    if (error->ok()) {
      tracer->refusals_ = std::move(refusals);
      return tracer;
    }
    const std::vector<std::string>* group = GroupOf(error->program);
    bool refusal = error->stage == "load" || error->stage == "attach";
    if (!refusal || !group || refused.count(error->program)) return nullptr;
    std::string reason = RefusalReason(error->log, error->err);
    refusals.push_back({error->program, error->err, error->stage == "attach" ? "at attach: " + reason : reason});
    refused.insert(group->begin(), group->end());
  }
  return nullptr;
}

BpfError Tracer::LoadWithout(const std::set<std::string>& refused) {
  const TracerOptions& options = options_;
  auto allowed = [&refused](const bpf_program* p) { return refused.count(bpf_program__name(p)) == 0; };
  ResetLibbpfLog();
  LIBBPF_OPTS(bpf_object_open_opts, open_opts);
  if (!options.btf_path.empty()) open_opts.btf_custom_path = options.btf_path.c_str();
  skel_ = sl_trace__open_opts(&open_opts);
  if (!skel_) return BpfError::From(errno, "open");
  sl_trace* skel = skel_;
  skel->rodata->target_tgid = options.target_tgid;
  skel->rodata->wakeup_min_bytes = options.wakeup_min_bytes;
  skel->rodata->mode = options.leak_mode ? SL_MODE_LEAKS : SL_MODE_TRACE;
  bpf_map__set_max_entries(skel->maps.close_wait, options.leak_mode ? options.max_sockets : 1);
  bpf_map__set_max_entries(skel->maps.creators, options.leak_mode ? options.max_sockets : 1);
  // Slots only when creators are tracked (they are claimed by recording one).
  uint32_t slots = !options.leak_mode || !options.track_creators ? 1
                   : options.socket_slots ? options.socket_slots
                                          : SL_SOCKET_SLOTS;
  if (slots == 0 || (slots & (slots - 1)) != 0) return BpfError::From(EINVAL, "open", "socket slots: a power of two");
  bpf_map__set_max_entries(skel->maps.sockets, slots);
  slot_mask_ = slots - 1;
  skel->rodata->socket_slot_mask = slots - 1;
  skel->rodata->follow_tree = options.follow_tree;
  skel->rodata->track_creators = options.track_creators;
  skel->rodata->fault_inject = options.fault_inject;
  // The map iterators run per walk (CollectLeaks), and only in leak mode; where
  // the kernel refuses them, user space walks the maps (leak-walk.h).
  bool iterators = options.leak_mode && allowed(skel->progs.new_leaks);
  user_walk_ = options.leak_mode && !iterators;
  bpf_program__set_autoload(skel->progs.new_leaks, iterators);
  bpf_program__set_autoload(skel->progs.new_socket_leaks, iterators);
  // The process-tree programs only when a tree is followed.
  bpf_program__set_autoload(skel->progs.handle_fork, options.follow_tree);
  bpf_program__set_autoload(skel->progs.handle_exit, options.follow_tree);
  // Leak mode must be cheap for every connection: no softirq programs, and
  // per-syscall tracepoints instead of a program on every syscall, when tracefs is there.
  syscall_tracepoints_ = options.leak_mode && allowed(skel->progs.tp_close_enter) && EnsureTracefs(&mounted_tracefs_);
  bool tracepoints = syscall_tracepoints_;
  bool softirq = !options.leak_mode && allowed(skel->progs.handle_softirq_entry);
  bpf_program__set_autoload(skel->progs.handle_softirq_entry, softirq);
  bpf_program__set_autoload(skel->progs.handle_softirq_exit, softirq);
  bpf_program__set_autoload(skel->progs.handle_sys_enter, !tracepoints);
  bpf_program__set_autoload(skel->progs.handle_sys_exit, !tracepoints);
  for (bpf_program* p : {skel->progs.tp_close_enter, skel->progs.tp_close_exit, skel->progs.tp_bind_enter,
                         skel->progs.tp_bind_exit}) {
    bpf_program__set_autoload(p, tracepoints);
  }
  // Creator stacks: the stack-capturing copy of the state-change program, or the plain one.
  captures_stacks_ = options.leak_mode && options.track_creators && options.creator_stacks &&
                     allowed(skel->progs.handle_set_state_stacks);
  // accept() exit: one pair of the four, the one with bpf_rdonly_cast where the kernel has it,
  // else by probe reads; each with the accept() caller's stack where asked and the connect()
  // stacks are captured.
  bool accepts = tracepoints && options.track_creators;
  bool cast_stacks = accepts && captures_stacks_ && allowed(skel->progs.tp_accept_stacks);
  bool cast = accepts && !cast_stacks && allowed(skel->progs.tp_accept_cast);
  bool probe_stacks = accepts && captures_stacks_ && !cast_stacks && !cast && allowed(skel->progs.tp_accept_exit_stacks);
  bool probe_reads = accepts && !cast_stacks && !cast && !probe_stacks && allowed(skel->progs.tp_accept_exit);
  bpf_program__set_autoload(skel->progs.tp_accept4_stacks, cast_stacks);
  bpf_program__set_autoload(skel->progs.tp_accept_stacks, cast_stacks);
  bpf_program__set_autoload(skel->progs.tp_accept4_exit_stacks, probe_stacks);
  bpf_program__set_autoload(skel->progs.tp_accept_exit_stacks, probe_stacks);
  bpf_program__set_autoload(skel->progs.tp_accept4_exit, probe_reads);
  bpf_program__set_autoload(skel->progs.tp_accept_exit, probe_reads);
  bpf_program__set_autoload(skel->progs.tp_accept4_cast, cast);
  bpf_program__set_autoload(skel->progs.tp_accept_cast, cast);
  if (!options.leak_mode) bpf_map__set_max_entries(skel->maps.binding, 1);
  if (!options.leak_mode) {
    bpf_map__set_max_entries(skel->maps.active_closes, 1);
  }
  if (!options.follow_tree) bpf_map__set_max_entries(skel->maps.tree, 1);
  bpf_program__set_autoload(skel->progs.handle_set_state_stacks, captures_stacks_);
  bpf_program__set_autoload(skel->progs.handle_set_state, !captures_stacks_);
  if (!captures_stacks_) {
    bpf_map__set_max_entries(skel->maps.user_stacks, 1);
    bpf_map__set_max_entries(skel->maps.stack_callers, 1);
  }
  int err = bpf_map__set_max_entries(skel->maps.events, options.ring_bytes);
  if (err) return BpfError::From(err, "open", "ring buffer size");
  err = sl_trace__load(skel);
  if (err) return BpfError::From(err, "load");  // the destructor destroys the skeleton: nothing stays loaded
  return BpfError{};
}

BpfError Tracer::Attach() {
  sl_trace* skel = skel_;
  uint32_t slots = slot_mask_ + 1;
  // Attach one by one so a failure names its program; the skeleton owns the links.
  struct {
    bpf_program* prog;
    bpf_link** link;
  } attachments[] = {
      {skel->progs.handle_softirq_entry, &skel->links.handle_softirq_entry},
      {skel->progs.handle_softirq_exit, &skel->links.handle_softirq_exit},
      {skel->progs.handle_fork, &skel->links.handle_fork},
      {skel->progs.handle_exit, &skel->links.handle_exit},
      {skel->progs.tp_accept4_exit, &skel->links.tp_accept4_exit},
      {skel->progs.tp_accept_exit, &skel->links.tp_accept_exit},
      {skel->progs.tp_accept4_exit_stacks, &skel->links.tp_accept4_exit_stacks},
      {skel->progs.tp_accept_exit_stacks, &skel->links.tp_accept_exit_stacks},
      {skel->progs.tp_accept4_cast, &skel->links.tp_accept4_cast},
      {skel->progs.tp_accept4_stacks, &skel->links.tp_accept4_stacks},
      {skel->progs.tp_accept_stacks, &skel->links.tp_accept_stacks},
      {skel->progs.tp_accept_cast, &skel->links.tp_accept_cast},
      {skel->progs.tp_close_enter, &skel->links.tp_close_enter},
      {skel->progs.tp_close_exit, &skel->links.tp_close_exit},
      {skel->progs.tp_bind_enter, &skel->links.tp_bind_enter},
      {skel->progs.tp_bind_exit, &skel->links.tp_bind_exit},
      {skel->progs.handle_set_state, &skel->links.handle_set_state},
      {skel->progs.handle_set_state_stacks, &skel->links.handle_set_state_stacks},
      {skel->progs.handle_sys_enter, &skel->links.handle_sys_enter},
      {skel->progs.handle_sys_exit, &skel->links.handle_sys_exit},
  };
  for (auto& a : attachments) {
    if (!bpf_program__autoload(a.prog)) continue;
    ResetLibbpfLog();
    *a.link = bpf_program__attach(a.prog);
    if (!*a.link) return BpfError::From(errno, "attach", bpf_program__name(a.prog));
    // Leak mode: close() matters only once a leak is reported, and FollowCloses()
    // attaches them then; attached now only to find a kernel that refuses them.
    if (a.prog == skel->progs.tp_close_enter || a.prog == skel->progs.tp_close_exit) {
      bpf_link__destroy(*a.link);
      *a.link = nullptr;
    }
  }

  if (options_.leak_mode) {
    size_t bytes = size_t(slots) * sizeof(sl_socket);
    long page = sysconf(_SC_PAGESIZE);
    bytes = (bytes + page - 1) / page * page;
    void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(skel->maps.sockets), 0);
    if (mapped == MAP_FAILED) return BpfError::From(errno, "mmap", "sockets");
    slots_ = static_cast<sl_socket*>(mapped);
    slots_bytes_ = bytes;
  }

  // Every close_wait entry the kernel makes from now on is counted in close_wait_slots.
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  last_cutoff_ns_ = uint64_t(now.tv_sec) * 1000000000ull + uint64_t(now.tv_nsec);

  BpfError error;
  ring_ = RingPoller::Open(bpf_map__fd(skel->maps.events), options_.poll_interval_ms, kMaxBatchBytes, sizeof(sl_event),
                           &error);
  return error;
}

}  // namespace sockleak
