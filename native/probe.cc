#include "probe.h"

#include <bpf/libbpf.h>

#include <cerrno>
#include <functional>
#include <set>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
#include "trace.skel.h"
#include "reap.skel.h"
#include "programs-id.h"
// clang-format on

#include "features.h"
#include "libbpf-log.h"
#include "refusal.h"
#include "scan-skel.h"

namespace sockleak {
namespace {

// Loads the object `open` makes with every program but those in `refused`,
// again without each one the kernel refuses, and records a verdict per
// program. `open` returns the object to load and a destroy function.
struct Opened {
  bpf_object* obj = nullptr;
  std::function<void()> destroy;
};

// Attaches a loaded program and detaches it at once: a kernel may refuse a
// program at attach that it loaded (6.1-rt: a tracepoint program reading past
// its record). Iterators and programs run by BPF_PROG_TEST_RUN are not attached.
int TryAttach(bpf_program* prog) {
  bpf_prog_type type = bpf_program__type(prog);
  if (type != BPF_PROG_TYPE_TRACING && type != BPF_PROG_TYPE_TRACEPOINT) return 0;
  if (bpf_program__expected_attach_type(prog) == BPF_TRACE_ITER) return 0;
  bpf_link* link = bpf_program__attach(prog);
  if (!link) return errno ? errno : EINVAL;
  bpf_link__destroy(link);
  return 0;
}

void ProbeObject(const char* object, const std::function<Opened()>& open, std::vector<ProgramVerdict>* out,
                 bool attach = false) {
  std::set<std::string> refused;
  std::vector<ProgramVerdict> refusals;
  for (int attempt = 0; attempt < 64; attempt++) {
    ResetLibbpfLog();
    Opened opened = open();
    if (!opened.obj) {
      out->push_back({object, "(open)", false, errno ? errno : EINVAL, RefusalReason(LibbpfLog(), errno)});
      return;
    }
    bpf_program* prog;
    bpf_object__for_each_program(prog, opened.obj) {
      bpf_program__set_autoload(prog, refused.count(bpf_program__name(prog)) == 0);
    }
    int err = bpf_object__load(opened.obj);
    if (err == 0) {
      bpf_object__for_each_program(prog, opened.obj) {
        if (!bpf_program__autoload(prog)) continue;
        ResetLibbpfLog();
        int refused = attach ? TryAttach(prog) : 0;
        if (refused) {
          out->push_back({object, bpf_program__name(prog), false, refused, "at attach: " + RefusalReason(LibbpfLog(), refused)});
        } else {
          out->push_back({object, bpf_program__name(prog), true, 0, ""});
        }
      }
      opened.destroy();
      out->insert(out->end(), refusals.begin(), refusals.end());
      return;
    }
    err = err < 0 ? -err : err;
    std::string blamed = BlamedProgram();
    if (blamed.empty() || refused.count(blamed)) {
      // Not one program's fault (an extern such as a kfunc the kernel lacks, a
      // map): every program still asked for is refused with the object.
      bpf_object__for_each_program(prog, opened.obj) {
        if (bpf_program__autoload(prog)) out->push_back({object, bpf_program__name(prog), false, err, RefusalReason(LibbpfLog(), err)});
      }
      opened.destroy();
      out->insert(out->end(), refusals.begin(), refusals.end());
      return;
    }
    opened.destroy();
    refused.insert(blamed);
    refusals.push_back({object, blamed, false, err, RefusalReason(LibbpfLog(), err)});
  }
}

}  // namespace

std::string ProgramsId() { return SL_PROGRAMS_ID; }

std::vector<ProgramVerdict> ProbePrograms(const std::string& btf_path) {
  InstallLibbpfLog();
  std::vector<ProgramVerdict> out;
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!btf_path.empty()) opts.btf_custom_path = btf_path.c_str();

  // The per-syscall tracepoints attach only with tracefs, as the tracer mounts it.
  bool mounted = false;
  bool tracefs = EnsureTracefs(&mounted);
  ProbeObject("trace", [&]() {
    sl_trace* skel = sl_trace__open_opts(&opts);
    if (!skel) return Opened{};
    // Smallest maps: the probe is about programs.
    for (bpf_map* map : {skel->maps.close_wait, skel->maps.creators, skel->maps.sockets, skel->maps.binding,
                         skel->maps.active_closes, skel->maps.tree}) {
      bpf_map__set_max_entries(map, 1);
    }
    bpf_map__set_max_entries(skel->maps.events, 4096);
    skel->rodata->socket_slot_mask = 0;
    return Opened{skel->obj, [skel]() { sl_trace__destroy(skel); }};
  }, &out, tracefs);

  ProbeObject("scan", [&]() {
    struct bpf_object* obj = nullptr;
    void* handle = sl_scan_open_object(opts.btf_custom_path, &obj);
    if (!handle) return Opened{};
    return Opened{obj, [handle]() { sl_scan_close_object(handle); }};
  }, &out);

  ProbeObject("reap", [&]() {
    sl_reap* skel = sl_reap__open_opts(&opts);
    if (!skel) return Opened{};
    return Opened{skel->obj, [skel]() { sl_reap__destroy(skel); }};
  }, &out);

  for (int cast : {0, 1}) {
    std::string log(1 << 20, '\0');
    struct sl_scan_handle* skel = nullptr;
    int err = sl_scan_load_light(cast, log.data(), log.size(), &skel);
    if (skel) sl_scan_free(skel);
    out.push_back({"loader", cast ? "light-cast" : "light", err == 0, err, err ? RefusalReason(log.c_str(), err) : ""});
  }
  return out;
}

}  // namespace sockleak
