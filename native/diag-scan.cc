#include "diag-scan.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <unordered_map>
#include <unordered_set>

// clang-format off
#include <linux/types.h>
#include "sockleak.h"
// clang-format on

#include "netns.h"
#include "sock-diag.h"

namespace sockleak {
namespace {

constexpr uint8_t kListen = SL_TCP_LISTEN;
constexpr uint8_t kNewSynRecv = SL_TCP_NEW_SYN_RECV;

// Closes a directory on scope exit.
struct Dir {
  DIR* dir = nullptr;
  ~Dir() {
    if (dir) closedir(dir);
  }
};

// The number in a link such as "socket:[123]" or "net:[4026531840]" after
// `prefix`; 0 when the link is something else.
uint64_t InodeIn(const char* link, size_t len, const char* prefix, size_t prefix_len) {
  if (len < prefix_len + 3 || memcmp(link, prefix, prefix_len) != 0 || link[prefix_len] != '[' || link[len - 1] != ']') {
    return 0;
  }
  uint64_t ino = 0;
  for (size_t i = prefix_len + 1; i < len - 1; i++) {
    if (link[i] < '0' || link[i] > '9') return 0;
    ino = ino * 10 + static_cast<uint64_t>(link[i] - '0');
  }
  return ino;
}

// A small number from a file of /proc/sys; `fallback` when unreadable.
uint64_t ReadSysctl(const char* path, uint64_t fallback) {
  FILE* f = fopen(path, "re");
  if (!f) return fallback;
  unsigned long long value = 0;
  bool ok = fscanf(f, "%llu", &value) == 1;
  fclose(f);
  return ok ? value : fallback;
}

// The calling thread's netns's default keepalive (its /proc/sys/net follows the
// thread's netns): what a socket without its own TCP_KEEP* uses.
SockDiag::Keepalive DefaultKeepalive() {
  SockDiag::Keepalive k;
  k.idle_ms = static_cast<uint32_t>(ReadSysctl("/proc/sys/net/ipv4/tcp_keepalive_time", 7200) * 1000);
  k.intvl_ms = static_cast<uint32_t>(ReadSysctl("/proc/sys/net/ipv4/tcp_keepalive_intvl", 75) * 1000);
  k.probes = static_cast<uint8_t>(ReadSysctl("/proc/sys/net/ipv4/tcp_keepalive_probes", 9));
  return k;
}

// Dumps the netns at `path` ("" = the caller's), whose inode is `netns_ino`:
// enters it on this thread only for the netlink socket and the sysctls, which
// answer for the netns they were opened in, and comes back before the dump.
BpfError DumpNetns(const std::string& path, uint32_t netns_ino, uint32_t state_mask, const SockDiag::SockVisitor& each) {
  SockDiag diag;
  SockDiag::Keepalive keepalive;
  {
    ScopedNetns netns;
    BpfError error = netns.Enter(path);
    if (!error.ok()) return error;
    error = diag.Open();
    if (!error.ok()) return error;
    keepalive = DefaultKeepalive();
  }
  return diag.DumpSocks(state_mask, netns_ino, keepalive, each);
}

bool AppendRecord(ScanBuffer* out, const sl_sock& sock) {
  if (!out->Reserve(sizeof(sock))) return false;
  memcpy(out->end(), &sock, sizeof(sock));
  out->Commit(sizeof(sock));
  return true;
}

// The TCP sockets of the namespaces dumped so far, by socket inode. sockfs
// numbers every socket from one counter, so an inode names one socket
// system-wide: a socket a process holds from another netns (made before a
// setns) is found once that netns is dumped too.
class SocketsByInode {
 public:
  explicit SocketsByInode(uint32_t state_mask) : state_mask_(state_mask) { by_inode_.reserve(4096); }

  // Dumps the netns (once per scan) that `path` names, whose inode is `netns_ino`.
  BpfError Add(uint32_t netns_ino, const std::string& path) {
    if (dumped_.count(netns_ino)) return BpfError{};
    BpfError error = DumpNetns(path, netns_ino, state_mask_, [this](const sl_sock& sock, uint32_t inode) {
      if (inode) by_inode_[inode] = sock;  // timewait and request sockets have none: no fd holds them
    });
    if (error.ok()) dumped_.insert(netns_ino);
    return error;
  }

  const sl_sock* Find(uint64_t inode) const {
    auto it = by_inode_.find(static_cast<uint32_t>(inode));
    return it == by_inode_.end() ? nullptr : &it->second;
  }

 private:
  const uint32_t state_mask_;
  std::unordered_set<uint32_t> dumped_;
  std::unordered_map<uint32_t, sl_sock> by_inode_;
};

// The comm of process `pid` (its thread group leader's), NUL-padded as the kernel's.
void ReadComm(int proc_dir, const char* pid, char comm[SL_COMM_LEN]) {
  memset(comm, 0, SL_COMM_LEN);
  char path[64];
  snprintf(path, sizeof(path), "%s/comm", pid);
  int fd = openat(proc_dir, path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  ssize_t n = read(fd, comm, SL_COMM_LEN);
  close(fd);
  for (ssize_t i = 0; i < n && i < SL_COMM_LEN; i++) {
    if (comm[i] == '\n') comm[i] = '\0';
  }
  comm[SL_COMM_LEN - 1] = '\0';
}

// Appends one record per fd of process `pid` that holds a socket of `sockets`;
// the process's netns is dumped first if no process before it was in it. A
// process that exits meanwhile, or whose fds we may not read, is skipped: it
// holds nothing any more, or nothing ss -p could show either.
BpfError ScanProcess(int proc_dir, const char* pid_text, uint32_t own_netns, SocketsByInode* sockets, ScanBuffer* out) {
  char path[64];
  char link[64];
  snprintf(path, sizeof(path), "%s/ns/net", pid_text);
  ssize_t n = readlinkat(proc_dir, path, link, sizeof(link));
  uint64_t netns = n > 0 ? InodeIn(link, static_cast<size_t>(n), "net:", 4) : 0;
  if (!netns) return BpfError{};  // gone, or a kernel thread
  BpfError error = sockets->Add(static_cast<uint32_t>(netns),
                                netns == own_netns ? std::string() : std::string("/proc/") + pid_text + "/ns/net");
  // ENOENT, ESRCH: the process exited since (another of its netns may come later).
  // EPERM: no CAP_SYS_ADMIN to enter its netns; the caller notes that such
  // sockets are not seen (src/scan/native-scan.ts), since the scan goes on without them.
  if (!error.ok()) return error.err == ENOENT || error.err == ESRCH || error.err == EPERM ? BpfError{} : error;

  snprintf(path, sizeof(path), "%s/fd", pid_text);
  int fds_fd = openat(proc_dir, path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fds_fd < 0) return BpfError{};
  Dir fds{fdopendir(fds_fd)};
  if (!fds.dir) {
    close(fds_fd);
    return BpfError{};
  }
  sl_sock record;
  bool have_comm = false;
  char comm[SL_COMM_LEN];
  uint32_t pid = static_cast<uint32_t>(strtoul(pid_text, nullptr, 10));
  while (dirent* entry = readdir(fds.dir)) {
    if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
    n = readlinkat(fds_fd, entry->d_name, link, sizeof(link));
    uint64_t inode = n > 0 ? InodeIn(link, static_cast<size_t>(n), "socket:", 7) : 0;
    const sl_sock* sock = inode ? sockets->Find(inode) : nullptr;
    if (!sock) continue;  // not a socket, not TCP, not in the states asked, or made after the dump
    if (!have_comm) {
      ReadComm(proc_dir, pid_text, comm);
      have_comm = true;
    }
    record = *sock;
    record.pid = pid;
    record.fd = static_cast<int32_t>(strtol(entry->d_name, nullptr, 10));
    record.flags |= SL_SK_OWNED;
    memcpy(record.comm, comm, sizeof(record.comm));
    if (!AppendRecord(out, record)) return BpfError::From(ENOMEM, "sock_diag", "files");
  }
  return BpfError{};
}

}  // namespace

BpfError DiagScanFiles(uint32_t target_tgid, uint32_t state_mask, ScanBuffer* out) {
  int proc_fd = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (proc_fd < 0) return BpfError::From(errno, "proc", "files");
  Dir proc{fdopendir(proc_fd)};
  if (!proc.dir) {
    close(proc_fd);
    return BpfError::From(errno, "proc", "files");
  }
  uint32_t own_netns = NetnsInode("");
  // scan_files never reports a request socket (no fd holds one).
  SocketsByInode sockets(state_mask & ~(1u << kNewSynRecv));
  if (target_tgid) {
    char pid_text[16];
    snprintf(pid_text, sizeof(pid_text), "%u", target_tgid);
    return ScanProcess(proc_fd, pid_text, own_netns, &sockets, out);
  }
  // /proc lists processes (thread group leaders), not threads: the fd tables scan_files walks.
  while (dirent* entry = readdir(proc.dir)) {
    if (entry->d_name[0] < '1' || entry->d_name[0] > '9') continue;
    BpfError error = ScanProcess(proc_fd, entry->d_name, own_netns, &sockets, out);
    if (!error.ok()) return error;
  }
  return BpfError{};
}

BpfError DiagScanTcp(const std::string& netns_path, uint32_t state_mask, ScanBuffer* out) {
  uint32_t netns_ino = NetnsInode(netns_path);
  if (!netns_ino) return BpfError::From(errno, "netns", netns_path);
  bool fits = true;
  BpfError error = DumpNetns(netns_path, netns_ino, state_mask, [&](const sl_sock& sock, uint32_t) {
    if (sock.state != kNewSynRecv) fits = fits && AppendRecord(out, sock);  // as scan_tcp
  });
  if (error.ok() && !fits) return BpfError::From(ENOMEM, "sock_diag", "tcp");
  return error;
}

BpfError DiagCensus(const std::string& netns_path, ScanBuffer* out) {
  uint32_t netns_ino = NetnsInode(netns_path);
  if (!netns_ino) return BpfError::From(errno, "netns", netns_path);
  // The walk of census_tcp and count_ports (bpf/port-census.bpf.h) over the
  // same sockets in the same order (listeners first), so the same census.
  std::unique_ptr<uint64_t[]> used(new uint64_t[1024]());
  std::unique_ptr<uint64_t[]> listening(new uint64_t[1024]());
  auto first_sighting = [](uint64_t* bits, uint16_t port) {
    uint64_t bit = 1ull << (port & 63);
    if (bits[port >> 6] & bit) return false;
    bits[port >> 6] |= bit;
    return true;
  };
  sl_port_census census{};
  uint32_t lo = 0, hi = 0;
  BpfError error;
  {
    ScopedNetns netns;
    error = netns.Enter(netns_path);
    if (!error.ok()) return error;
    FILE* f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");  // the netns's own, read inside it
    if (!f || fscanf(f, "%u %u", &lo, &hi) != 2) error = BpfError::From(f ? EINVAL : errno, "sysctl", "ip_local_port_range");
    if (f) fclose(f);
  }
  if (!error.ok()) return error;
  error = DumpNetns(netns_path, netns_ino, 0, [&](const sl_sock& sock, uint32_t) {
    if (!census.sockets++) {  // as the iterator, which reads the range at its first socket
      census.range_lo = lo;
      census.range_hi = hi;
    }
    uint16_t port = sock.sport;
    if (port < lo || port > hi || sock.state == kNewSynRecv) return;
    if (sock.state == kListen) {
      if (first_sighting(listening.get(), port)) census.listening_ports++;
      return;
    }
    if (listening[port >> 6] & (1ull << (port & 63))) return;
    if (first_sighting(used.get(), port)) census.ports_used++;
  });
  if (!error.ok()) return error;
  if (!out->Reserve(sizeof(census))) return BpfError::From(ENOMEM, "sock_diag", "census");
  memcpy(out->end(), &census, sizeof(census));
  out->Commit(sizeof(census));
  return BpfError{};
}

}  // namespace sockleak
