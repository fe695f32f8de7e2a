// Tracer (tracer.h): opening, loading and attaching the trace object without
// the programs the kernel refuses, and the ring buffer's poll thread. The
// leak-mode map operations are in tracer-maps.cc.
#include "tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
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

Tracer::Tracer(const TracerOptions& options) : options_(options) {}

Tracer::~Tracer() { Stop(); }

namespace {

// Programs that have another way where the kernel refuses them; refusing one
// refuses the others of its group (each group is used whole or not at all).
const std::vector<std::vector<std::string>> kDroppable = {
    {"new_leaks", "new_socket_leaks"},                               // -> WalkNewLeaksFromUser (leak-walk.h)
    {"tp_accept_cast", "tp_accept4_cast"},                           // -> tp_accept_exit, tp_accept4_exit
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
    refused.insert({"tp_accept_cast", "tp_accept4_cast"});
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
  // accept() exit: one pair of the two, the one with bpf_rdonly_cast where the kernel has it.
  bool accepts = tracepoints && options.track_creators;
  bool cast = accepts && allowed(skel->progs.tp_accept_cast);
  bool probe_reads = accepts && !cast && allowed(skel->progs.tp_accept_exit);
  bpf_program__set_autoload(skel->progs.tp_accept4_exit, probe_reads);
  bpf_program__set_autoload(skel->progs.tp_accept_exit, probe_reads);
  bpf_program__set_autoload(skel->progs.tp_accept4_cast, cast);
  bpf_program__set_autoload(skel->progs.tp_accept_cast, cast);
  if (!options.leak_mode) bpf_map__set_max_entries(skel->maps.binding, 1);
  if (!options.leak_mode) {
    bpf_map__set_max_entries(skel->maps.active_closes, 1);
  }
  if (!options.follow_tree) bpf_map__set_max_entries(skel->maps.tree, 1);
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
      {skel->progs.tp_accept4_cast, &skel->links.tp_accept4_cast},
      {skel->progs.tp_accept_cast, &skel->links.tp_accept_cast},
      {skel->progs.tp_close_enter, &skel->links.tp_close_enter},
      {skel->progs.tp_close_exit, &skel->links.tp_close_exit},
      {skel->progs.tp_bind_enter, &skel->links.tp_bind_enter},
      {skel->progs.tp_bind_exit, &skel->links.tp_bind_exit},
      {skel->progs.handle_set_state, &skel->links.handle_set_state},
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

  ring_ = ring_buffer__new(bpf_map__fd(skel->maps.events), &Tracer::OnRecord, this, nullptr);
  if (!ring_) return BpfError::From(errno, "ringbuf");
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  stop_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epoll_fd_ < 0 || stop_fd_ < 0) return BpfError::From(errno, "ringbuf");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = ring_buffer__epoll_fd(ring_);
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, ev.data.fd, &ev);
  ev.data.fd = stop_fd_;
  epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, ev.data.fd, &ev);
  return BpfError{};
}

BpfError Tracer::Start(BatchSink sink, std::function<void()> on_done) {
  if (thread_.joinable() || !ring_) return BpfError::From(EALREADY, "start");
  sink_ = std::move(sink);
  on_done_ = std::move(on_done);
  batch_.reserve(options_.max_batch_bytes + sizeof(sl_event));
  thread_ = std::thread(&Tracer::PollLoop, this);
  return BpfError{};
}

int Tracer::OnRecord(void* self, void* data, size_t size) {
  auto* tracer = static_cast<Tracer*>(self);
  auto* bytes = static_cast<const uint8_t*>(data);
  tracer->batch_.insert(tracer->batch_.end(), bytes, bytes + size);
  if (tracer->batch_.size() >= tracer->options_.max_batch_bytes) tracer->Flush();
  return 0;
}

void Tracer::Flush() {
  if (batch_.empty()) return;
  std::vector<uint8_t> full;
  full.reserve(options_.max_batch_bytes + sizeof(sl_event));
  full.swap(batch_);
  sink_(std::move(full));
}

void Tracer::PollLoop() {
  epoll_event events[2];
  while (!stopping_.load(std::memory_order_acquire)) {
    int n = epoll_wait(epoll_fd_, events, 2, options_.poll_interval_ms);
    if (n < 0 && errno != EINTR) break;
    // Records are submitted without wake-ups, so drain on every tick, not only on EPOLLIN.
    ring_buffer__consume(ring_);
    Flush();
  }
  // Detach first so the final drain is complete and the counters final.
  sl_trace__detach(skel_);
  ring_buffer__consume(ring_);
  Flush();
  if (on_done_) on_done_();
}

void Tracer::RequestStop() {
  if (stopping_.exchange(true, std::memory_order_acq_rel)) return;
  uint64_t one = 1;
  ssize_t ignored = write(stop_fd_, &one, sizeof(one));
  (void)ignored;
}

void Tracer::Stop() {
  if (thread_.joinable()) {
    RequestStop();
    thread_.join();
  }
  if (ring_) ring_buffer__free(ring_);
  ring_ = nullptr;
  final_counters_ = ReadCounters();
  if (slots_) munmap(slots_, slots_bytes_);
  slots_ = nullptr;
  if (skel_) sl_trace__destroy(skel_);  // detaches every link, closes every map
  skel_ = nullptr;
  if (epoll_fd_ >= 0) close(epoll_fd_);
  if (stop_fd_ >= 0) close(stop_fd_);
  epoll_fd_ = stop_fd_ = -1;
}

Counters Tracer::ReadCounters() const {
  if (!skel_) return final_counters_;
  Counters total;
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) return total;
  std::vector<sl_counters> per_cpu(cpus);
  uint32_t zero = 0;
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.counters), &zero, per_cpu.data())) return total;
  for (const auto& c : per_cpu) {
    total.emitted += c.emitted;
    total.lost += c.lost;
    total.map_full += c.map_full;
  }
  // Runs the kernel skipped because the same program was already running on
  // that CPU (a state change nested in an interrupt): events never seen.
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel_->obj) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    int fd = bpf_program__fd(prog);
    if (fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0) total.missed += info.recursion_misses;
  }
  return total;
}

std::vector<ProgramStats> Tracer::ReadProgramStats() const {
  std::vector<ProgramStats> stats;
  if (!skel_) return stats;
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel_->obj) {
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(bpf_program__fd(prog), &info, &len)) continue;
    stats.push_back({bpf_program__name(prog), info.id, info.run_time_ns, info.run_cnt});
  }
  return stats;
}

}  // namespace sockleak
