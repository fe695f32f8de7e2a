// NETLINK_SOCK_DIAG, what `ss` uses. Two jobs: the reap fallback where
// bpf_sock_destroy() is missing (Linux < 6.5), sock_diag SOCK_DESTROY, what `ss -K`
// uses (needs CONFIG_INET_DIAG_DESTROY); and the scanner's quick census of
// the cookies in some states (the kernel filters by state under the bucket
// lock, several times cheaper per socket than iter/tcp, which locks each one).
// The kernel looks the socket up by its 4-tuple and
// refuses it unless the cookie matches, so a port reused by a new socket is never
// touched; state and idleness are re-checked by an exact query just before, not
// under the socket lock as the BPF path does. Knows nothing of N-API.
#pragma once

#include <linux/types.h>

#include <cstdint>
#include <functional>

#include "bpf-error.h"
#include "scan-buffer.h"
#include "sockleak.h"

struct inet_diag_msg;  // <linux/inet_diag.h>

namespace sockleak {

// One NETLINK_SOCK_DIAG socket, bound to the network namespace current on the
// calling thread when it is opened. Used by one thread at a time.
class SockDiag {
 public:
  SockDiag() = default;
  ~SockDiag();

  SockDiag(const SockDiag&) = delete;
  SockDiag& operator=(const SockDiag&) = delete;

  // Also notes which families have TCP sockets in the netns (see DumpCookies).
  BpfError Open();

  // Whether this kernel can destroy TCP sockets through sock_diag: an error with
  // program "tcp_diag" when sock_diag has no TCP handler (module not loadable), EOPNOTSUPP
  // when SOCK_DESTROY is not built in (CONFIG_INET_DIAG_DESTROY off); ok when it can.
  BpfError ProbeDestroy();

  // Re-checks one requested socket and destroys it if it is still as listed.
  // Fills `result`; returns an error only for failures of the whole method
  // (netlink I/O, SOCK_DESTROY unsupported), never for one socket's outcome.
  BpfError DestroyOne(const sl_reap_request& request, sl_reap_result* result);

  // Appends the cookie (u64, host order) of every TCP socket, IPv4 and IPv6,
  // whose state bit is in `state_mask` (0 = every state), in this socket's netns.
  // A family with no hashed TCP socket at Open() is not dumped when the states
  // asked are all ones the kernel's in-use count covers: each dump walks the
  // whole established hash, TIME_WAIT included (docs/benchmarks.md).
  BpfError DumpCookies(uint32_t state_mask, ScanBuffer* out);

  // Every TCP socket, IPv4 and IPv6, of this socket's netns as iter/tcp sees it
  // (scan_tcp's struct sl_sock, fd -1, `netns_ino` set; a request socket has
  // state TCP_NEW_SYN_RECV, a timewait socket TIME_WAIT whatever its substate),
  // in the states of `state_mask` (0 = every state), with its inode (0 for
  // timewait and request sockets), in the kernel's order (listeners first).
  // What differs from the iterator: last_active_ns is estimated from tcp_info's
  // ms counters; keepalive is seen only while its timer is pending, with the
  // netns's default settings (`keepalive`, read by the caller in the netns: the
  // socket's own TCP_KEEP* are not in sock_diag's answer).
  struct Keepalive {
    uint32_t idle_ms = 0, intvl_ms = 0;
    uint8_t probes = 0;
  };
  using SockVisitor = std::function<void(const sl_sock& sock, uint32_t inode)>;
  BpfError DumpSocks(uint32_t state_mask, uint32_t netns_ino, const Keepalive& keepalive, const SockVisitor& each);

  // The cookie of the socket on `sock`'s endpoints (an exact query, which gives
  // a socket without one its cookie, as any sock_diag answer does); 0 when no
  // socket is there.
  BpfError CookieOf(const sl_sock& sock, uint64_t* cookie);

 private:
  // Sends one inet_diag request; *reply_err is the kernel's -errno (0 = ok),
  // and for a query *state / *idle_ms describe the socket found.
  BpfError Exchange(uint16_t type, const sl_reap_request& request, int* reply_err, uint8_t* state,
                    uint64_t* idle_ms, uint64_t* cookie = nullptr);

  // Dumps one family's sockets in `kernel_states` (sock_diag's state bits),
  // calling `each` per answer with its length (attributes included); `ext`:
  // inet_diag_req_v2.idiag_ext. The loop DumpCookies and DumpSocks share.
  using MsgVisitor = std::function<bool(const ::inet_diag_msg* msg, size_t len)>;
  BpfError Dump(uint8_t family, uint32_t kernel_states, uint8_t ext, const MsgVisitor& each);

  int fd_ = -1;
  uint32_t seq_ = 0;
  // From /proc/thread-self/net/sockstat{,6} at Open(): false only when the count
  // was read and is 0 (unreadable counts as true).
  bool has_ipv4_ = true;
  bool has_ipv6_ = true;
};

}  // namespace sockleak
