#include "tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/mount.h>
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
#include "leak-walk.h"

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
  // (src/kernel-probe.ts) names them up front, so this loop rarely turns.
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

bool Tracer::MayHaveNewLeaks(uint64_t cutoff_ns) const {
  if (seeds_pending_) return true;               // seeded entries are not counted in the slots
  if (cutoff_ns <= last_cutoff_ns_) return false;  // the kernel's entries all entered after load
  uint64_t from = last_cutoff_ns_ >> SL_SLOT_SHIFT, to = cutoff_ns >> SL_SLOT_SHIFT;
  if (to - from >= SL_SLOTS) return true;
  for (uint64_t slot = from; slot <= to; slot++) {
    int64_t count = 0;  // the sum of the CPUs' copies (sockleak.h, SL_SLOT_STRIPES)
    for (const auto& stripe : skel_->bss->close_wait_slots) count += __atomic_load_n(&stripe[slot % SL_SLOTS], __ATOMIC_RELAXED);
    if (count != 0) return true;
  }
  return false;
}

// The close() tracepoints cost every close() on the machine two program runs;
// leak mode only needs them for reported leaks. Attached before the first walk
// that may report one (exit first: an enter without its exit would leave a
// pending close behind), so no reported leak's close() goes unseen.
BpfError Tracer::FollowCloses() {
  if (closes_followed_ || !syscall_tracepoints_) return BpfError{};
  for (auto [prog, link] : {std::pair{skel_->progs.tp_close_exit, &skel_->links.tp_close_exit},
                            std::pair{skel_->progs.tp_close_enter, &skel_->links.tp_close_enter}}) {
    ResetLibbpfLog();
    *link = bpf_program__attach(prog);
    if (!*link) return BpfError::From(errno, "attach", bpf_program__name(prog));
  }
  closes_followed_ = true;
  return BpfError{};
}

BpfError Tracer::CollectLeaks(uint64_t cutoff_ns, std::vector<uint8_t>* out) {
  if (!skel_ || !options_.leak_mode) return BpfError::From(EINVAL, "leaks");
  // Everything at or before the last cut-off was reported by the last walk.
  if (!MayHaveNewLeaks(cutoff_ns)) {
    last_cutoff_ns_ = cutoff_ns;
    return BpfError{};
  }
  if (stopping_.load(std::memory_order_acquire)) return BpfError{};  // the poll thread is detaching
  BpfError followed = FollowCloses();
  if (!followed.ok()) return followed;
  BpfError walked = WalkNewLeaks(cutoff_ns, out);
  if (walked.ok()) {
    if (cutoff_ns >= seeded_until_ns_) seeds_pending_ = false;
    last_cutoff_ns_ = cutoff_ns;
  }
  return walked;
}

// Both homes of CLOSE_WAIT entries: the slots of live sockets, and the hash of the rest.
BpfError Tracer::WalkNewLeaks(uint64_t cutoff_ns, std::vector<uint8_t>* out) {
  if (user_walk_) {
    LeakMaps maps;
    maps.close_wait_fd = bpf_map__fd(skel_->maps.close_wait);
    maps.slots = options_.track_creators ? slots_ : nullptr;
    maps.slot_count = slot_mask_ + 1;
    maps.reported_bits = skel_->bss->reported_bits;
    maps.reported_bit_count = sizeof(skel_->bss->reported_bits) * 8;
    maps.follow_closes = &skel_->bss->follow_closes;
    return WalkNewLeaksFromUser(maps, cutoff_ns, out);
  }
  skel_->bss->leak_cutoff_ns = cutoff_ns;
  BpfError walked = WalkMap(skel_->progs.new_leaks, skel_->maps.close_wait, out);
  if (!walked.ok() || !options_.track_creators) return walked;
  return WalkMap(skel_->progs.new_socket_leaks, skel_->maps.sockets, out);
}

BpfError Tracer::WalkMap(bpf_program* prog, bpf_map* map, std::vector<uint8_t>* out) {
  union bpf_iter_link_info info = {};
  info.map.map_fd = bpf_map__fd(map);
  LIBBPF_OPTS(bpf_iter_attach_opts, opts, .link_info = &info, .link_info_len = sizeof(info));
  bpf_link* link = bpf_program__attach_iter(prog, &opts);
  const char* name = bpf_program__name(prog);
  if (!link) return BpfError::From(errno, "iter", name);
  int fd = bpf_iter_create(bpf_link__fd(link));
  int create_err = errno;
  bpf_link__destroy(link);
  if (fd < 0) return BpfError::From(create_err, "iter", name);
  uint8_t chunk[64 << 10];
  for (;;) {
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int read_err = n < 0 ? errno : 0;
      close(fd);
      return read_err ? BpfError::From(read_err, "iter read", name) : BpfError{};
    }
    out->insert(out->end(), chunk, chunk + n);
  }
}

sl_socket* Tracer::SlotOf(uint64_t cookie) const {
  return slots_ && options_.track_creators ? &slots_[cookie & slot_mask_] : nullptr;
}

size_t Tracer::Seed(const uint8_t* socks, size_t bytes) {
  if (!skel_ || !options_.leak_mode) return 0;
  size_t refused = 0;
  int fd = bpf_map__fd(skel_->maps.close_wait);
  for (size_t at = 0; at + sizeof(sl_sock) <= bytes; at += sizeof(sl_sock)) {
    sl_sock sock;
    memcpy(&sock, socks + at, sizeof(sock));
    if (sock.state != 8 /* TCP_CLOSE_WAIT */) continue;
    sl_event ev{};
    ev.ts_ns = sock.last_active_ns;  // last packet: the FIN, for an idle CLOSE_WAIT socket
    ev.cookie = sock.cookie;
    memcpy(ev.saddr, sock.saddr, sizeof(ev.saddr));
    memcpy(ev.daddr, sock.daddr, sizeof(ev.daddr));
    ev.netns_ino = sock.netns_ino;
    ev.fd = -1;
    ev.sport = sock.sport;
    ev.dport = sock.dport;
    ev.family = sock.family;
    ev.type = SL_EV_STATE;
    ev.new_state = sock.state;
    ev.flags = SL_F_AGE_ESTIMATED;
    // The kernel's own entry (exact time, creator) wins over an estimate: in its slot, or in the hash (NOEXIST).
    const sl_socket* slot = SlotOf(sock.cookie);
    if (slot && __atomic_load_n(&slot->cookie, __ATOMIC_ACQUIRE) == sock.cookie &&
        __atomic_load_n(&slot->close_wait_ns, __ATOMIC_RELAXED) != 0) {
      continue;
    }
    if (bpf_map_update_elem(fd, &ev.cookie, &ev, BPF_NOEXIST) && errno != EEXIST) refused++;
    // Not counted in close_wait_slots: walk until this one is past the cut-off too.
    else {
      seeds_pending_ = true;
      if (ev.ts_ns > seeded_until_ns_) seeded_until_ns_ = ev.ts_ns;
    }
  }
  return refused;
}

size_t Tracer::Follow(const uint8_t* socks, size_t bytes) {
  if (!skel_ || !options_.target_tgid) return 0;
  size_t refused = 0;
  uint8_t one = 1;
  for (size_t at = 0; at + sizeof(sl_sock) <= bytes; at += sizeof(sl_sock)) {
    sl_sock sock;
    memcpy(&sock, socks + at, sizeof(sock));
    if (bpf_map_update_elem(bpf_map__fd(skel_->maps.tracked), &sock.cookie, &one, BPF_ANY)) refused++;
    if (sock.state == 10 /* TCP_LISTEN */) {
      sl_listen_key key = {sock.netns_ino, sock.sport};
      if (bpf_map_update_elem(bpf_map__fd(skel_->maps.listening), &key, &one, BPF_ANY)) refused++;
    }
  }
  return refused;
}

void Tracer::Forget(const std::vector<uint64_t>& cookies) {
  if (!skel_ || !options_.leak_mode) return;
  int fd = bpf_map__fd(skel_->maps.close_wait);
  for (uint64_t cookie : cookies) {
    // In its slot: the CLOSE_WAIT time goes, taken as the kernel takes it (see leaks.bpf.h).
    sl_socket* slot = SlotOf(cookie);
    if (slot && __atomic_load_n(&slot->cookie, __ATOMIC_ACQUIRE) == cookie) {
      uint64_t ts = __atomic_load_n(&slot->close_wait_ns, __ATOMIC_RELAXED);
      if (ts && __atomic_compare_exchange_n(&slot->close_wait_ns, &ts, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
        __atomic_fetch_sub(&skel_->bss->close_wait_slots[0][(ts >> SL_SLOT_SHIFT) % SL_SLOTS], 1, __ATOMIC_RELAXED);
        continue;
      }
    }
    sl_event entry;
    if (bpf_map_lookup_elem(fd, &cookie, &entry) || bpf_map_delete_elem(fd, &cookie)) continue;
    if (!(entry.flags & SL_F_AGE_ESTIMATED)) {  // the kernel counted it: uncount (see leaks.bpf.h)
      __atomic_fetch_sub(&skel_->bss->close_wait_slots[0][(entry.ts_ns >> SL_SLOT_SHIFT) % SL_SLOTS], 1, __ATOMIC_RELAXED);
    }
  }
}

std::vector<uint8_t> Tracer::ReadActiveCloses() const {
  std::vector<uint8_t> out;
  if (!skel_ || !options_.leak_mode) return out;
  int fd = bpf_map__fd(skel_->maps.active_closes);
  sl_close_key key{}, next{};
  sl_close_count value{};
  const sl_close_key* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    if (bpf_map_lookup_elem(fd, &next, &value) == 0) {
      auto* k = reinterpret_cast<const uint8_t*>(&next);
      auto* v = reinterpret_cast<const uint8_t*>(&value);
      out.insert(out.end(), k, k + sizeof(next));
      out.insert(out.end(), v, v + sizeof(value));
    }
    key = next;
    prev = &key;
  }
  return out;
}

BpfError Tracer::TreeAdd(uint32_t tgid) {
  if (!skel_ || !options_.follow_tree) return BpfError::From(EINVAL, "tree");
  uint8_t one = 1;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.tree), &tgid, &one, BPF_ANY)) return BpfError::From(errno, "tree");
  return BpfError{};
}

std::vector<uint32_t> Tracer::TreePids() const {
  std::vector<uint32_t> pids;
  if (!skel_ || !options_.follow_tree) return pids;
  int fd = bpf_map__fd(skel_->maps.tree);
  uint32_t key = 0, next = 0;
  const uint32_t* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    pids.push_back(next);
    key = next;
    prev = &key;
  }
  return pids;
}

}  // namespace sockleak
