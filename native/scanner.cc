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
#include "sock-diag.h"

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

Scanner::Scanner(std::string btf_path, std::string cached_btf_path)
    : btf_path_(std::move(btf_path)), cached_btf_path_(std::move(cached_btf_path)) {}

BpfError Scanner::LoadWith(const std::string& btf, sl_scan** out) {
  ResetLibbpfLog();
  LIBBPF_OPTS(bpf_object_open_opts, opts);
  if (!btf.empty()) opts.btf_custom_path = btf.c_str();
  sl_scan* skel = sl_scan__open_opts(&opts);
  if (!skel) return BpfError::From(errno, "open");
  int err = sl_scan__load(skel);
  if (err) {
    BpfError error = BpfError::From(err, "load");
    sl_scan__destroy(skel);
    return error;
  }
  *out = skel;
  return BpfError{};
}

BpfError Scanner::LoadLocked() {
  if (skel_ || !load_error_.ok()) return load_error_;
  InstallLibbpfLog();
  if (!cached_btf_path_.empty() && LoadWith(cached_btf_path_, &skel_).ok()) return BpfError{};
  load_error_ = LoadWith(btf_path_, &skel_);
  return load_error_;
}

void Scanner::Preload() {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadLocked();
}

Scanner::~Scanner() {
  if (skel_) sl_scan__destroy(skel_);
}

BpfError Scanner::CreateIterator(const ScanRequest& request, int* iter_fd) {
  BpfError loaded = LoadLocked();
  if (!loaded.ok()) return loaded;
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

BpfError Scanner::DumpCookies(const ScanRequest& request, ScanBuffer* out) {
  // The netlink socket answers for the netns it was created in.
  ScopedNetns netns;
  BpfError error = netns.Enter(request.netns_path);
  if (!error.ok()) return error;
  SockDiag diag;
  error = diag.Open();
  netns.Leave();
  return error.ok() ? diag.DumpCookies(request.state_mask, out) : error;
}

// The census writes no records: its result is in .bss once the iteration has run to the end.
BpfError Scanner::Census(const ScanRequest& request, ScanBuffer* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  Fd iter;
  BpfError error = CreateIterator(request, &iter.fd);  // loads the object first
  if (!error.ok()) return error;
  memset(&skel_->bss->census, 0, sizeof(skel_->bss->census));
  memset(skel_->bss->census_used, 0, sizeof(skel_->bss->census_used));
  memset(skel_->bss->census_listening, 0, sizeof(skel_->bss->census_listening));
  char sink[256];
  for (;;) {
    ssize_t n = read(iter.fd, sink, sizeof(sink));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return BpfError::From(errno, "iter read");
    if (n == 0) break;
  }
  if (!out->Reserve(sizeof(sl_port_census))) return BpfError::From(ENOMEM, "census");
  memcpy(out->end(), &skel_->bss->census, sizeof(sl_port_census));
  out->Commit(sizeof(sl_port_census));
  return BpfError{};
}

BpfError Scanner::Open(const ScanRequest& request, int* iter_fd) {
  if (request.kind != ScanKind::kFiles && request.kind != ScanKind::kTcp) return BpfError::From(EINVAL, "iter");
  std::lock_guard<std::mutex> lock(mutex_);
  return CreateIterator(request, iter_fd);
}

ScanCursor::~ScanCursor() {
  if (fd_ >= 0) close(fd_);
}

BpfError ScanCursor::Read(uint8_t* dst, size_t cap, size_t* n) {
  *n = 0;
  if (done_) return BpfError{};
  if (fd_ < 0) {
    BpfError error = scanner_->Open(request_, &fd_);
    if (!error.ok()) {
      done_ = true;
      return error;
    }
  }
  // Only whole records: the seq_file keeps what does not fit for the next read,
  // and every read asks for a multiple of the record size.
  cap -= cap % sizeof(sl_sock);
  while (cap - *n >= sizeof(sl_sock)) {
    ssize_t got = read(fd_, dst + *n, cap - *n);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return BpfError::From(errno, "iter read");
    if (got == 0) {
      done_ = true;
      close(fd_);
      fd_ = -1;
      break;
    }
    *n += static_cast<size_t>(got);
  }
  return BpfError{};
}

BpfError Scanner::Run(const ScanRequest& request, ScanBuffer* out) {
  out->Clear();
  if (request.kind == ScanKind::kCookies) return DumpCookies(request, out);
  if (request.kind == ScanKind::kCensus) return Census(request, out);
  Fd iter;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    BpfError error = CreateIterator(request, &iter.fd);
    if (!error.ok()) return error;
  }
  for (;;) {
    // The kernel fills at most one seq_file page per read (8 KB of records here).
    if (!out->Reserve(64 << 10)) return BpfError::From(ENOMEM, "iter read");
    ssize_t n = read(iter.fd, out->end(), out->room());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return BpfError::From(errno, "iter read");
    if (n == 0) break;
    out->Commit(static_cast<size_t>(n));
  }
  return BpfError{};
}

}  // namespace sockleak
