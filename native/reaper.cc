#include "reaper.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cstring>
#include <unordered_map>
#include <unordered_set>

// clang-format off
#include "reap.skel.h"
// clang-format on

#include "features.h"
#include "netns.h"
#include "scoped-fd.h"
#include "sock-diag.h"

namespace sockleak {
namespace {

sl_reap_result NotFound(const sl_reap_request& request) {
  sl_reap_result result{};
  result.cookie = request.cookie;
  result.netns_ino = request.netns_ino;
  result.outcome = SL_REAP_SKIP_NOT_FOUND;
  return result;
}

}  // namespace

std::unique_ptr<Reaper> Reaper::Open(const std::string& btf_path, ReapMethod method, BpfError* error) {
  InstallLibbpfLog();
  ResetLibbpfLog();
  std::unique_ptr<Reaper> reaper(new Reaper());
  if (method != ReapMethod::kSockDiag) {
    sl_reap* skel = nullptr;
    if (!KernelHasFunc("bpf_sock_destroy")) {
      *error = BpfError::From(ENOTSUP, "load", "reap_tcp");
      error->message = "the kernel has no bpf_sock_destroy() kfunc (Linux < 6.5)";
    } else {
      LIBBPF_OPTS(bpf_object_open_opts, opts);
      if (!btf_path.empty()) opts.btf_custom_path = btf_path.c_str();
      skel = sl_reap__open_opts(&opts);
      int err = skel ? sl_reap__load(skel) : -errno;
      if (err) {
        *error = BpfError::From(err, skel ? "load" : "open", "reap_tcp");
        if (skel) sl_reap__destroy(skel);
        skel = nullptr;
      }
    }
    if (skel) {
      reaper->skel_ = skel;
      return reaper;
    }
    if (method == ReapMethod::kBpf) return nullptr;
    reaper->fallback_reason_ = error->message;
  }
  SockDiag probe;
  BpfError diag = probe.Open();
  if (diag.ok()) diag = probe.ProbeDestroy();
  if (!diag.ok()) {
    *error = diag;
    return nullptr;
  }
  *error = BpfError{};
  return reaper;
}

Reaper::~Reaper() {
  if (skel_) sl_reap__destroy(skel_);
}

BpfError Reaper::Run(const std::vector<sl_reap_request>& requests, const std::vector<std::string>& netns_paths,
                     std::vector<sl_reap_result>* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  out->clear();
  if (requests.size() > SL_REAP_MAX) return BpfError::From(E2BIG, "reap");
  return skel_ ? RunBpf(requests, netns_paths, out) : RunSockDiag(requests, netns_paths, out);
}

BpfError Reaper::RunIterator(const std::string& netns_path, std::vector<sl_reap_result>* out) {
  // iter/tcp walks the namespace current at iterator creation (see ScopedNetns).
  ScopedNetns netns;
  BpfError entered = netns.Enter(netns_path);
  if (!entered.ok()) return entered;
  bpf_link* link = bpf_program__attach_iter(skel_->progs.reap_tcp, nullptr);
  int link_err = link ? 0 : errno;
  ScopedFd iter;
  iter.fd = link ? bpf_iter_create(bpf_link__fd(link)) : -1;
  int create_err = errno;
  netns.Leave();
  if (link) bpf_link__destroy(link);  // the iterator fd keeps what it needs
  if (!link) return BpfError::From(link_err, "iter", "reap_tcp");
  if (iter.fd < 0) return BpfError::From(create_err, "iter", "reap_tcp");
  // Reading runs the program: this is where the sockets are destroyed.
  sl_reap_result buf[128];
  size_t have = 0;  // bytes of a record split across reads
  for (;;) {
    ssize_t n = read(iter.fd, reinterpret_cast<char*>(buf) + have, sizeof(buf) - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return BpfError::From(errno, "iter read", "reap_tcp");
    if (n == 0) break;
    have += static_cast<size_t>(n);
    size_t whole = have / sizeof(sl_reap_result);
    out->insert(out->end(), buf, buf + whole);
    have -= whole * sizeof(sl_reap_result);
    memmove(buf, reinterpret_cast<char*>(buf) + whole * sizeof(sl_reap_result), have);
  }
  return BpfError{};
}

BpfError Reaper::RunBpf(const std::vector<sl_reap_request>& requests, const std::vector<std::string>& netns_paths,
                        std::vector<sl_reap_result>* out) {
  int map_fd = bpf_map__fd(skel_->maps.requests);
  // Whatever happens, the map is empty again when this returns.
  struct Clear {
    int fd;
    const std::vector<sl_reap_request>& requests;
    ~Clear() {
      for (const auto& r : requests) bpf_map_delete_elem(fd, &r.cookie);
    }
  } clear{map_fd, requests};

  for (const auto& r : requests) {
    if (bpf_map_update_elem(map_fd, &r.cookie, &r, BPF_ANY)) return BpfError::From(errno, "map update", "requests");
  }
  std::unordered_set<uint32_t> visited;
  for (const auto& path : netns_paths) {
    uint32_t ino = NetnsInode(path);
    if (!ino || !visited.insert(ino).second) continue;  // gone (its sockets too), or seen
    BpfError error = RunIterator(path, out);
    if (!error.ok() && error.stage == "netns" && error.err == ENOENT) continue;  // exited meanwhile
    if (!error.ok()) return error;
  }
  std::unordered_set<uint64_t> decided;
  for (const auto& r : *out) decided.insert(r.cookie);
  for (const auto& r : requests) {
    if (!decided.count(r.cookie)) out->push_back(NotFound(r));
  }
  return BpfError{};
}

BpfError Reaper::RunSockDiag(const std::vector<sl_reap_request>& requests, const std::vector<std::string>& netns_paths,
                             std::vector<sl_reap_result>* out) {
  std::unordered_map<uint32_t, std::string> path_of;
  for (const auto& path : netns_paths) {
    uint32_t ino = NetnsInode(path);
    if (ino) path_of.emplace(ino, path);
  }
  std::unordered_map<uint32_t, std::unique_ptr<SockDiag>> sockets;  // one per namespace, opened in it
  for (const auto& r : requests) {
    auto path = path_of.find(r.netns_ino);
    if (path == path_of.end()) {
      out->push_back(NotFound(r));
      continue;
    }
    auto& diag = sockets[r.netns_ino];
    if (!diag) {
      diag = std::make_unique<SockDiag>();
      ScopedNetns netns;
      BpfError error = netns.Enter(path->second);
      if (error.ok()) error = diag->Open();
      netns.Leave();
      if (!error.ok() && error.stage == "netns" && error.err == ENOENT) {
        out->push_back(NotFound(r));
        sockets.erase(r.netns_ino);
        continue;
      }
      if (!error.ok()) return error;
    }
    sl_reap_result result;
    BpfError error = diag->DestroyOne(r, &result);
    if (!error.ok()) return error;
    out->push_back(result);
  }
  return BpfError{};
}

}  // namespace sockleak
