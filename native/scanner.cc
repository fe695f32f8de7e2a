#include "scanner.h"

#include <bpf/bpf.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
// clang-format on

#include "netns.h"
#include "scan-skel.h"
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

BpfError Scanner::LoadLocked() {
  if (skel_ || !load_error_.ok()) return load_error_;
  ResetLibbpfLog();  // nothing of libbpf's own is involved: keep an older log out of the error
  std::string log(64 << 10, '\0');
  int err = 0;
  skel_ = sl_scan_load(log.data(), log.size(), &err);
  if (!skel_) {
    load_error_ = BpfError::From(err, "load");
    load_error_.log = log.c_str();
  }
  return load_error_;
}

void Scanner::Preload() {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadLocked();
}

Scanner::~Scanner() {
  if (skel_) sl_scan_free(skel_);
}

BpfError Scanner::CreateIterator(const ScanRequest& request, int* iter_fd) {
  BpfError loaded = LoadLocked();
  if (!loaded.ok()) return loaded;
  sl_scan_set_filters(skel_, request.target_tgid, request.state_mask);
  sl_scan_prog prog = request.kind == ScanKind::kFiles  ? SL_SCAN_FILES
                      : request.kind == ScanKind::kTcp ? SL_SCAN_TCP
                                                       : SL_CENSUS_TCP;

  // iter/tcp walks the network namespace current at iterator creation: enter
  // the requested one on this thread only, and come back before anything else.
  ScopedNetns netns;
  BpfError entered = netns.Enter(request.netns_path);
  if (!entered.ok()) return entered;
  int link = bpf_link_create(sl_scan_prog_fd(skel_, prog), 0, BPF_TRACE_ITER, nullptr);
  int link_err = link >= 0 ? 0 : errno;
  int fd = link >= 0 ? bpf_iter_create(link) : -1;
  int create_err = errno;
  netns.Leave();
  if (link >= 0) close(link);  // the iterator fd keeps what it needs
  if (link < 0) return BpfError::From(link_err, "iter", sl_scan_prog_name(prog));
  if (fd < 0) return BpfError::From(create_err, "iter", sl_scan_prog_name(prog));
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

BpfError Scanner::WalkEhash(const ScanRequest& request, ScanBuffer* out) {
  // Listeners and unconnected sockets are not in the established hash.
  constexpr uint32_t kUnhashed = (1u << TCP_LISTEN) | (1u << TCP_CLOSE);
  if (request.state_mask == 0 || (request.state_mask & kUnhashed)) return BpfError::From(EINVAL, "census_ehash");
  std::lock_guard<std::mutex> walking(walk_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    BpfError loaded = LoadLocked();
    if (!loaded.ok()) return loaded;
  }
  // The program walks the hash of the namespace current on this thread.
  ScopedNetns netns;
  BpfError entered = netns.Enter(request.netns_path);
  if (!entered.ok()) return entered;
  uint32_t bucket = 0;
  for (;;) {
    uint32_t status = SL_WALK_UNSURE;
    uint32_t count = 0;
    const sl_census_sock* records = nullptr;
    int err = sl_scan_walk(skel_, request.state_mask, &bucket, &status, &records, &count);
    if (err) return BpfError::From(err, "census_ehash");
    if (status == SL_WALK_UNSURE) return BpfError::From(EAGAIN, "census_ehash");
    size_t bytes = static_cast<size_t>(count) * sizeof(sl_census_sock);
    if (!out->Reserve(bytes)) return BpfError::From(ENOMEM, "census_ehash");
    memcpy(out->end(), records, bytes);
    out->Commit(bytes);
    if (status == SL_WALK_DONE) return BpfError{};
  }
}

// The census writes no records: its result is in .bss once the iteration has run to the end.
BpfError Scanner::Census(const ScanRequest& request, ScanBuffer* out) {
  std::lock_guard<std::mutex> lock(mutex_);
  Fd iter;
  BpfError error = CreateIterator(request, &iter.fd);  // loads the object first
  if (!error.ok()) return error;
  sl_scan_reset_census(skel_);
  char sink[256];
  for (;;) {
    ssize_t n = read(iter.fd, sink, sizeof(sink));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return BpfError::From(errno, "iter read");
    if (n == 0) break;
  }
  if (!out->Reserve(sizeof(sl_port_census))) return BpfError::From(ENOMEM, "census");
  memcpy(out->end(), sl_scan_census(skel_), sizeof(sl_port_census));
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
  if (request.kind == ScanKind::kEhash) return WalkEhash(request, out);
  if (request.kind == ScanKind::kCensus) return Census(request, out);
  Fd iter;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    BpfError error = CreateIterator(request, &iter.fd);
    if (!error.ok()) return error;
  }
  for (;;) {
    // The kernel fills at most its seq_file buffer per read (32 KB: 292 sl_sock records).
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
