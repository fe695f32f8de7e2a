#include "scanner.h"

#include <bpf/bpf.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cstring>
#include <string>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
// clang-format on

#include "diag-scan.h"
#include "netns.h"
#include "scan-skel.h"
#include "scoped-fd.h"
#include "sock-diag.h"

namespace sockleak {

Scanner::Scanner(ScannerOptions options) : options_(std::move(options)) {}

BpfError Scanner::LoadLocked() {
  if (loaded_) return load_error_;
  loaded_ = true;
  auto refused = [this](const char* name) {
    for (const auto& r : options_.refused) {
      if (r == name) return true;
    }
    return false;
  };
  if (refused("bpf")) {
    load_error_ = BpfError::From(EPERM, "load", "bpf");
    load_error_.message = "BPF refused (SOCKLEAK_REFUSE=bpf)";
    return load_error_;
  }
  unsigned mask = 0;
  for (int p = 0; p < SL_SCAN_PROGS; p++) {
    if (refused(sl_scan_prog_name(static_cast<sl_scan_prog>(p)))) mask |= 1u << p;
  }
  // The light skeletons first: the fastest loader, where the kernel takes each
  // of their programs. Their log must be large: at 64 KiB the loader failed its
  // own BTF load with ENOSPC, which hid the kernel's real answer.
  if (!refused("light")) {
    std::string log(1 << 20, '\0');
    std::vector<Refusal> light;
    for (sl_scan_prog files : {SL_SCAN_FILES, SL_SCAN_FILES_CAST}) {
      if (mask & (1u << files)) continue;
      int err = sl_scan_load_light(files == SL_SCAN_FILES_CAST, log.data(), log.size(), &skel_);
      if (!err) {
        // The two differ only in their scan_files: the first one's was refused.
        if (!light.empty()) refusals_.push_back({"scan_files", light[0].err, light[0].reason});
        return BpfError{};
      }
      light.push_back({std::string("light skeleton with ") + sl_scan_prog_name(files), err, RefusalReason(log.c_str(), err)});
    }
    refusals_.insert(refusals_.end(), light.begin(), light.end());
  }
  // The libbpf object, without each program the kernel refuses (each has another way).
  InstallLibbpfLog();
  for (int attempt = 0; attempt <= SL_SCAN_PROGS; attempt++) {
    ResetLibbpfLog();
    int err = sl_scan_load_object(mask, options_.btf_path.empty() ? nullptr : options_.btf_path.c_str(), &skel_);
    if (!err) return BpfError{};
    std::string blamed = BlamedProgram();
    sl_scan_prog prog = sl_scan_prog_of(blamed.c_str());
    if (prog == SL_SCAN_PROGS || (mask & (1u << prog))) {
      load_error_ = BpfError::From(err, "load", blamed);
      refusals_.push_back({blamed.empty() ? "scan object" : blamed, err, RefusalReason(load_error_.log, err)});
      return load_error_;
    }
    refusals_.push_back({blamed, err, RefusalReason(LibbpfLog(), err)});
    mask |= 1u << prog;
  }
  load_error_ = BpfError::From(EPERM, "load", "scan");
  return load_error_;
}

void Scanner::Preload() {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadLocked();
}

ScanLoadReport Scanner::LoadReport() {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadLocked();
  ScanLoadReport report;
  report.loader = skel_ ? sl_scan_loader(skel_) : "none";
  report.refusals = refusals_;
  for (int p = 0; skel_ && p < SL_SCAN_PROGS; p++) {
    if (sl_scan_prog_fd(skel_, static_cast<sl_scan_prog>(p)) >= 0) {
      report.programs.push_back(sl_scan_prog_name(static_cast<sl_scan_prog>(p)));
    }
  }
  return report;
}

Scanner::~Scanner() {
  if (skel_) sl_scan_free(skel_);
}

int Scanner::ProgramFd(ScanKind kind) const {
  if (!skel_) return -1;
  switch (kind) {
    case ScanKind::kFiles: {
      int fd = sl_scan_prog_fd(skel_, SL_SCAN_FILES);
      return fd >= 0 ? fd : sl_scan_prog_fd(skel_, SL_SCAN_FILES_CAST);
    }
    case ScanKind::kTcp:
      return sl_scan_prog_fd(skel_, SL_SCAN_TCP);
    case ScanKind::kCensus:
      return sl_scan_prog_fd(skel_, SL_CENSUS_TCP);
    default:
      return -1;
  }
}

bool Scanner::HasIterator(ScanKind kind) {
  std::lock_guard<std::mutex> lock(mutex_);
  LoadLocked();
  return ProgramFd(kind) >= 0;
}

BpfError Scanner::RunWithoutBpf(const ScanRequest& request, ScanBuffer* out) {
  switch (request.kind) {
    case ScanKind::kFiles:
      return DiagScanFiles(request.target_tgid, request.state_mask, out);
    case ScanKind::kTcp:
      return DiagScanTcp(request.netns_path, request.state_mask, out);
    case ScanKind::kCensus:
      return DiagCensus(request.netns_path, out);
    default:
      return BpfError::From(EINVAL, "scan");
  }
}

size_t Scanner::FillMissingCookies(uint8_t* bytes, size_t size) {
  size_t kept = 0;
  // One netlink socket per netns, opened in it; records of one netns mostly come together.
  uint32_t diag_netns = 0;
  std::unique_ptr<SockDiag> diag;
  for (size_t at = 0; at + sizeof(sl_sock) <= size; at += sizeof(sl_sock)) {
    sl_sock sock;
    memcpy(&sock, bytes + at, sizeof(sock));
    if (sock.cookie == 0) {
      if (!diag || diag_netns != sock.netns_ino) {
        diag.reset();
        ScopedNetns netns;
        std::string path = "/proc/" + std::to_string(sock.pid) + "/ns/net";
        if (netns.Enter(path).ok()) {
          auto opened = std::make_unique<SockDiag>();
          if (opened->Open().ok()) diag = std::move(opened);
        }
        netns.Leave();
        diag_netns = sock.netns_ino;
      }
      uint64_t cookie = 0;
      if (!diag || !diag->CookieOf(sock, &cookie).ok() || cookie == 0) continue;
      sock.cookie = cookie;
    }
    memcpy(bytes + kept, &sock, sizeof(sock));
    kept += sizeof(sock);
  }
  return kept;
}

BpfError Scanner::CreateIterator(const ScanRequest& request, int* iter_fd) {
  LoadLocked();
  int prog_fd = ProgramFd(request.kind);
  if (prog_fd < 0) return load_error_.ok() ? BpfError::From(ENOENT, "iter", "scan") : load_error_;
  sl_scan_set_filters(skel_, request.target_tgid, request.state_mask);

  // iter/tcp walks the network namespace current at iterator creation: enter
  // the requested one on this thread only, and come back before anything else.
  ScopedNetns netns;
  BpfError entered = netns.Enter(request.netns_path);
  if (!entered.ok()) return entered;
  int link = bpf_link_create(prog_fd, 0, BPF_TRACE_ITER, nullptr);
  int link_err = link >= 0 ? 0 : errno;
  int fd = link >= 0 ? bpf_iter_create(link) : -1;
  int create_err = errno;
  netns.Leave();
  if (link >= 0) close(link);  // the iterator fd keeps what it needs
  const char* name = request.kind == ScanKind::kFiles ? "scan_files" : request.kind == ScanKind::kTcp ? "scan_tcp" : "census_tcp";
  if (link < 0) return BpfError::From(link_err, "iter", name);
  if (fd < 0) return BpfError::From(create_err, "iter", name);
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
  constexpr uint32_t kUnhashed = (1u << SL_TCP_LISTEN) | (1u << SL_TCP_CLOSE);
  if (request.state_mask == 0 || (request.state_mask & kUnhashed)) return BpfError::From(EINVAL, "census_ehash");
  std::lock_guard<std::mutex> walking(walk_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    LoadLocked();
    if (!skel_ || sl_scan_prog_fd(skel_, SL_CENSUS_EHASH) < 0) return BpfError::From(ENOENT, "census_ehash");
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
  if (!HasIterator(ScanKind::kCensus)) return RunWithoutBpf(request, out);
  std::lock_guard<std::mutex> lock(mutex_);
  ScopedFd iter;
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
  cap -= cap % sizeof(sl_sock);
  if (!records_ && fd_ < 0 && !scanner_->HasIterator(request_.kind)) {
    records_ = std::make_unique<ScanBuffer>();
    BpfError error = Scanner::RunWithoutBpf(request_, records_.get());
    if (!error.ok()) {
      done_ = true;
      return error;
    }
  }
  if (records_) {
    *n = std::min(cap, records_->size() - handed_);
    memcpy(dst, records_->data() + handed_, *n);
    handed_ += *n;
    done_ = *n == 0;
    return BpfError{};
  }
  if (fd_ < 0) {
    BpfError error = scanner_->Open(request_, &fd_);
    if (!error.ok()) {
      done_ = true;
      return error;
    }
  }
  // Only whole records: the seq_file keeps what does not fit for the next read,
  // and every read asks for a multiple of the record size.
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
  if (request_.kind == ScanKind::kFiles) *n = Scanner::FillMissingCookies(dst, *n);
  return BpfError{};
}

BpfError Scanner::Run(const ScanRequest& request, ScanBuffer* out) {
  out->Clear();
  if (request.kind == ScanKind::kCookies) return DumpCookies(request, out);
  if (request.kind == ScanKind::kEhash) return WalkEhash(request, out);
  if (request.kind == ScanKind::kCensus) return Census(request, out);
  if (!HasIterator(request.kind)) return RunWithoutBpf(request, out);
  ScopedFd iter;
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
  if (request.kind == ScanKind::kFiles) out->Truncate(FillMissingCookies(out->data(), out->size()));
  return BpfError{};
}

}  // namespace sockleak
