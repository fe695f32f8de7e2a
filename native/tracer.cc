// Tracer (tracer.h): its lifetime around the poll thread (ring-poller.h), and
// the counters and program statistics it reads. Loading and attaching are in
// tracer-load.cc, the leak-mode map operations in tracer-maps.cc.
#include "tracer.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <sys/mman.h>

#include <utility>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
#include "trace.skel.h"
// clang-format on

namespace sockleak {
namespace {

// Calls `each(program, info)` for every loaded program of `obj`.
template <typename Each>
void ForEachProgramInfo(bpf_object* obj, Each each) {
  bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    int fd = bpf_program__fd(prog);
    bpf_prog_info info{};
    uint32_t len = sizeof(info);
    if (fd >= 0 && bpf_obj_get_info_by_fd(fd, &info, &len) == 0) each(prog, info);
  }
}

}  // namespace

Tracer::Tracer(const TracerOptions& options) : options_(options) {}

Tracer::~Tracer() { Stop(); }

BpfError Tracer::Start(BatchSink sink, std::function<void()> on_done) {
  if (!ring_) return BpfError::From(EALREADY, "start");
  // Detach first so the last drain is complete and the counters final.
  return ring_->Start(std::move(sink), [this] { sl_trace__detach(skel_); }, std::move(on_done));
}

void Tracer::RequestStop() {
  if (ring_) ring_->RequestStop();
}

void Tracer::Stop() {
  if (ring_) ring_->Stop();
  ring_.reset();
  final_counters_ = ReadCounters();
  if (slots_) munmap(slots_, slots_bytes_);
  slots_ = nullptr;
  if (skel_) sl_trace__destroy(skel_);  // detaches every link, closes every map
  skel_ = nullptr;
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
  ForEachProgramInfo(skel_->obj, [&total](bpf_program*, const bpf_prog_info& info) { total.missed += info.recursion_misses; });
  return total;
}

std::vector<ProgramStats> Tracer::ReadProgramStats() const {
  std::vector<ProgramStats> stats;
  if (!skel_) return stats;
  ForEachProgramInfo(skel_->obj, [&stats](bpf_program* prog, const bpf_prog_info& info) {
    stats.push_back({bpf_program__name(prog), info.id, info.run_time_ns, info.run_cnt});
  });
  return stats;
}

}  // namespace sockleak
