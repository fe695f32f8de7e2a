#include "scanner.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
#include "scan.skel.h"
// clang-format on

#include "netns.h"

namespace sockleak {
namespace {

// Closes an fd on scope exit.
struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

}  // namespace

std::unique_ptr<Scanner> Scanner::Open(const std::string& btf_path, BpfError* error) {
  InstallLibbpfLog();
  ResetLibbpfLog();
  std::unique_ptr<Scanner> scanner(new Scanner());
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!btf_path.empty()) opts.btf_custom_path = btf_path.c_str();
  scanner->skel_ = sl_scan__open_opts(&opts);
  if (!scanner->skel_) {
    *error = BpfError::From(errno, "open");
    return nullptr;
  }
  int err = sl_scan__load(scanner->skel_);
  if (err) {
    *error = BpfError::From(err, "load");
    return nullptr;
  }
  return scanner;
}

Scanner::~Scanner() {
  if (skel_) sl_scan__destroy(skel_);
}

BpfError Scanner::CreateIterator(const ScanRequest& request, int* iter_fd) {
  skel_->bss->target_tgid = request.target_tgid;
  skel_->bss->state_mask = request.state_mask;
  bpf_program* prog = request.kind == ScanKind::kFiles  ? skel_->progs.scan_files
                      : request.kind == ScanKind::kTcp ? skel_->progs.scan_tcp
                                                       : skel_->progs.census_tcp;

  // iter/tcp walks the network namespace current at iterator creation: enter
  // the requested one on this thread only, and come back before anything else.
  ScopedNetns netns;
  BpfError entered = netns.Enter(request.netns_path);
  if (!entered.ok()) return entered;
  bpf_link* link = bpf_program__attach_iter(prog, nullptr);
  int link_err = link ? 0 : errno;
  int fd = link ? bpf_iter_create(bpf_link__fd(link)) : -1;
  int create_err = errno;
  netns.Leave();
  if (link) bpf_link__destroy(link);  // the iterator fd keeps what it needs
  if (!link) return BpfError::From(link_err, "iter", bpf_program__name(prog));
  if (fd < 0) return BpfError::From(create_err, "iter", bpf_program__name(prog));
  *iter_fd = fd;
  return BpfError{};
}

// The census writes no records: its result is in .bss once the iteration has run to the end.
BpfError Scanner::Census(const ScanRequest& request, std::vector<uint8_t>* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  memset(&skel_->bss->census, 0, sizeof(skel_->bss->census));
  memset(skel_->bss->census_used, 0, sizeof(skel_->bss->census_used));
  memset(skel_->bss->census_listening, 0, sizeof(skel_->bss->census_listening));
  Fd iter;
  BpfError error = CreateIterator(request, &iter.fd);
  if (!error.ok()) return error;
  char sink[256];
  for (;;) {
    ssize_t n = read(iter.fd, sink, sizeof(sink));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return BpfError::From(errno, "iter read");
    if (n == 0) break;
  }
  sl_port_census census;
  memcpy(&census, &skel_->bss->census, sizeof(census));
  auto* bytes = reinterpret_cast<const uint8_t*>(&census);
  out->assign(bytes, bytes + sizeof(census));
  return BpfError{};
}

BpfError Scanner::Run(const ScanRequest& request, std::vector<uint8_t>* out) {
  if (request.kind == ScanKind::kCensus) return Census(request, out);
  Fd iter;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    BpfError error = CreateIterator(request, &iter.fd);
    if (!error.ok()) return error;
  }
  out->clear();
  size_t used = 0;
  out->resize(1 << 20);
  for (;;) {
    if (out->size() - used < (64 << 10)) out->resize(out->size() * 2);
    ssize_t n = read(iter.fd, out->data() + used, out->size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return BpfError::From(errno, "iter read");
    if (n == 0) break;
    used += static_cast<size_t>(n);
  }
  out->resize(used);
  return BpfError{};
}

}  // namespace sockleak
