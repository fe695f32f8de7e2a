// Tracer's leak-mode map operations (tracer.h): handing over the leaks that
// crossed the threshold (CollectLeaks), seeding the kernel with CLOSE_WAIT
// sockets a scan found (Seed), following a pid's sockets (Follow), forgetting
// leaks (Forget), the active-close counts and the process tree. Loading and
// attaching are in tracer-load.cc, the ring thread in ring-poller.cc.
#include "tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cstring>
#include <utility>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
#include "trace.skel.h"
// clang-format on

#include "leak-walk.h"

namespace sockleak {

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
  if (ring_ && ring_->Stopping()) return BpfError{};  // the poll thread is detaching
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
    if (sock.state != SL_TCP_CLOSE_WAIT) continue;
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
    if (sock.state == SL_TCP_LISTEN) {
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

bool Tracer::ReadStack(uint32_t id, std::vector<uint64_t>* frames, std::vector<uint64_t>* words) const {
  frames->clear();
  words->clear();
  if (!skel_ || !captures_stacks_) return false;
  uint64_t ips[SL_STACK_FRAMES] = {};
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.user_stacks), &id, ips)) return false;
  for (uint64_t ip : ips) {
    if (!ip) break;
    frames->push_back(ip);
  }
  sl_stack_caller caller{};
  if (bpf_map_lookup_elem(bpf_map__fd(skel_->maps.stack_callers), &id, &caller) == 0 && caller.set) {
    words->assign(caller.words, caller.words + SL_CALLER_WORDS);
  }
  return !frames->empty();
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
