#include "leak-walk.h"

#include <bpf/bpf.h>

#include <cerrno>
#include <cstring>

// clang-format off
#include "sockleak.h"
// clang-format on

namespace sockleak {
namespace {

constexpr uint8_t kCloseWait = SL_TCP_CLOSE_WAIT;

// What is_reported_leak() (leaks.bpf.h) reads first, then close() follows the socket.
void MarkReported(const LeakMaps& maps, uint64_t cookie) {
  uint32_t bit = static_cast<uint32_t>(cookie) & (maps.reported_bit_count - 1);
  __atomic_fetch_or(&maps.reported_bits[bit / 64], 1ull << (bit % 64), __ATOMIC_RELAXED);
  __atomic_store_n(maps.follow_closes, 1u, __ATOMIC_RELEASE);
}

void Append(std::vector<uint8_t>* out, const sl_event& ev) {
  auto* bytes = reinterpret_cast<const uint8_t*>(&ev);
  out->insert(out->end(), bytes, bytes + sizeof(ev));
}

// The hash, as new_leaks walks it. An entry the kernel deleted between the
// lookup and the mark (the socket left CLOSE_WAIT) fails the BPF_EXIST update
// and is no leak.
BpfError WalkHash(const LeakMaps& maps, uint64_t cutoff_ns, std::vector<uint8_t>* out) {
  constexpr uint32_t kBatch = 4096;
  std::vector<uint64_t> keys(kBatch);
  std::vector<sl_event> values(kBatch);
  uint64_t in_batch = 0, out_batch = 0;  // the hash's batch token is a u32 bucket index
  bool first = true;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  for (;;) {
    uint32_t count = kBatch;
    int ret = bpf_map_lookup_batch(maps.close_wait_fd, first ? nullptr : &in_batch, &out_batch, keys.data(),
                                   values.data(), &count, &opts);
    int err = ret ? errno : 0;
    if (err && err != ENOENT) return BpfError::From(err, "leaks", "close_wait lookup batch");
    for (uint32_t i = 0; i < count; i++) {
      sl_event entry = values[i];
      if ((entry.flags & SL_F_REPORTED) || entry.ts_ns > cutoff_ns) continue;
      sl_event marked = entry;
      marked.flags |= SL_F_REPORTED;
      MarkReported(maps, entry.cookie);
      if (bpf_map_update_elem(maps.close_wait_fd, &keys[i], &marked, BPF_EXIST) != 0) continue;
      Append(out, entry);
    }
    if (err == ENOENT) return BpfError{};
    in_batch = out_batch;
    first = false;
  }
}

// The slots, as new_socket_leaks walks them: a record with no endpoints, and
// a slot reused or left CLOSE_WAIT while read is a torn record, not a leak.
void WalkSlots(const LeakMaps& maps, uint64_t cutoff_ns, std::vector<uint8_t>* out) {
  for (uint32_t i = 0; maps.slots && i < maps.slot_count; i++) {
    sl_socket* s = &maps.slots[i];
    uint64_t cookie = __atomic_load_n(&s->cookie, __ATOMIC_ACQUIRE);
    uint64_t ts_ns = __atomic_load_n(&s->close_wait_ns, __ATOMIC_RELAXED);
    if (!cookie || !ts_ns || ts_ns > cutoff_ns) continue;
    if (__atomic_load_n(&s->event_flags, __ATOMIC_RELAXED) & SL_F_REPORTED) continue;
    sl_event ev{};
    ev.ts_ns = ts_ns;
    ev.cookie = cookie;
    ev.type = SL_EV_STATE;
    ev.old_state = s->old_state;
    ev.new_state = kCloseWait;
    ev.flags = SL_F_CREATOR;
    ev.fd = -1;
    ev.cgroup_id = s->cgroup_id;
    ev.pid = s->pid;
    ev.tid = s->tid;
    ev.user_stack = s->user_stack;
    memcpy(ev.comm, s->comm, sizeof(ev.comm));
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->cookie, __ATOMIC_RELAXED) != cookie ||
        __atomic_load_n(&s->close_wait_ns, __ATOMIC_RELAXED) != ts_ns) {
      continue;
    }
    MarkReported(maps, cookie);
    __atomic_fetch_or(&s->event_flags, static_cast<uint8_t>(SL_F_REPORTED), __ATOMIC_RELAXED);
    Append(out, ev);
  }
}

}  // namespace

BpfError WalkNewLeaksFromUser(const LeakMaps& maps, uint64_t cutoff_ns, std::vector<uint8_t>* out) {
  BpfError walked = WalkHash(maps, cutoff_ns, out);
  if (walked.ok()) WalkSlots(maps, cutoff_ns, out);
  return walked;
}

}  // namespace sockleak
