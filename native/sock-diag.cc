#include "sock-diag.h"

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "sockleak.h"

namespace sockleak {
namespace {

struct DiagRequest {
  nlmsghdr header;
  inet_diag_req_v2 body;
};

// Sends one inet_diag request to the kernel.
BpfError Send(int fd, uint32_t seq, uint16_t type, uint16_t flags, const inet_diag_req_v2& body) {
  DiagRequest msg{};
  msg.header.nlmsg_len = sizeof(msg);
  msg.header.nlmsg_type = type;
  msg.header.nlmsg_flags = flags;
  msg.header.nlmsg_seq = seq;
  msg.body = body;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  if (sendto(fd, &msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&kernel), sizeof(kernel)) < 0) {
    return BpfError::From(errno, "sock_diag");
  }
  return BpfError{};
}

// Reads the answers to request `seq` (skipping late ones to earlier requests)
// into `buf`, handing each message to `visit` until it says the answer is
// over (true); `visit` may set the error returned.
template <size_t N, typename Visit>
BpfError ReadAnswers(int fd, uint32_t seq, char (&buf)[N], Visit visit) {
  for (;;) {
    ssize_t n = recv(fd, buf, N, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return BpfError::From(errno, "sock_diag");
    int len = static_cast<int>(n);
    for (auto* h = reinterpret_cast<const nlmsghdr*>(buf); NLMSG_OK(h, len); h = NLMSG_NEXT(h, len)) {
      if (h->nlmsg_seq != seq) continue;
      BpfError error;
      if (visit(h, &error)) return error;
    }
  }
}

uint64_t CookieIn(const inet_diag_msg* msg) {
  return msg->id.idiag_cookie[0] | static_cast<uint64_t>(msg->id.idiag_cookie[1]) << 32;
}

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// TCP sockets of the calling thread's netns that are hashed (every state but
// CLOSE, TIME_WAIT and requests), from a sockstat line such as "TCP6: inuse 3 ...";
// -1 when the file or the line is missing (no IPv6: sockstat6 is absent).
long InUse(const char* path, const char* prefix) {
  FILE* f = fopen(path, "re");
  if (!f) return -1;
  char line[256];
  long count = -1;
  size_t len = strlen(prefix);
  while (fgets(line, sizeof(line), f)) {
    if (strncmp(line, prefix, len) == 0 && sscanf(line + len, " inuse %ld", &count) == 1) break;
  }
  fclose(f);
  return count;
}

// The kernel's TCP states (bit = 1 << state in the masks), from bpf/sockleak.h.
enum : uint32_t {
  kEstablished = SL_TCP_ESTABLISHED,
  kSynSent = SL_TCP_SYN_SENT,
  kSynRecv = SL_TCP_SYN_RECV,
  kFinWait1 = SL_TCP_FIN_WAIT1,
  kFinWait2 = SL_TCP_FIN_WAIT2,
  kTimeWait = SL_TCP_TIME_WAIT,
  kClose = SL_TCP_CLOSE,
  kCloseWait = SL_TCP_CLOSE_WAIT,
  kLastAck = SL_TCP_LAST_ACK,
  kListen = SL_TCP_LISTEN,
  kClosing = SL_TCP_CLOSING,
  kNewSynRecv = SL_TCP_NEW_SYN_RECV,
};
// States whose sockets the in-use count covers: a dump for only these finds
// nothing in a family whose count is 0. Not TIME_WAIT nor FIN_WAIT2 (a timewait
// socket can stand for either), not SYN_RECV or NEW_SYN_RECV (request sockets),
// nor the bound-inactive pseudo-state.
constexpr uint32_t kInUseStates = (1u << kEstablished) | (1u << kSynSent) | (1u << kFinWait1) | (1u << kClose) |
                                  (1u << kCloseWait) | (1u << kLastAck) | (1u << kListen) | (1u << kClosing);

// The answer's INET_DIAG_INFO copied into *info (zero-filled past what this
// kernel sends); false when it has none (timewait and request sockets).
bool InfoOf(const inet_diag_msg* msg, size_t len, tcp_info* info) {
  int attr_len = static_cast<int>(len) - static_cast<int>(NLMSG_ALIGN(sizeof(*msg)));
  for (auto* attr = reinterpret_cast<const rtattr*>(msg + 1); RTA_OK(attr, attr_len); attr = RTA_NEXT(attr, attr_len)) {
    if (attr->rta_type != INET_DIAG_INFO) continue;
    *info = tcp_info{};
    memcpy(info, RTA_DATA(attr), std::min<size_t>(RTA_PAYLOAD(attr), sizeof(*info)));
    return true;
  }
  return false;
}

// How long the socket has been idle, as keepalive measures it.
uint64_t IdleMs(const tcp_info& info) {
  return std::min({info.tcpi_last_data_recv, info.tcpi_last_ack_recv, info.tcpi_last_data_sent});
}

}  // namespace

SockDiag::~SockDiag() {
  if (fd_ >= 0) close(fd_);
}

BpfError SockDiag::Open() {
  fd_ = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  if (fd_ < 0) return BpfError::From(errno, "sock_diag");
  timeval timeout{5, 0};  // the kernel answers at once; never hang a pool thread on it
  setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  has_ipv4_ = InUse("/proc/thread-self/net/sockstat", "TCP:") != 0;
  has_ipv6_ = InUse("/proc/thread-self/net/sockstat6", "TCP6:") != 0;
  return BpfError{};
}

BpfError SockDiag::Exchange(uint16_t type, const sl_reap_request& request, int* reply_err, uint8_t* state,
                            uint64_t* idle_ms, uint64_t* cookie) {
  inet_diag_req_v2 body{};
  body.sdiag_family = static_cast<uint8_t>(request.family);
  body.sdiag_protocol = IPPROTO_TCP;
  body.idiag_states = ~0u;
  body.idiag_ext = 1 << (INET_DIAG_INFO - 1);
  body.id.idiag_sport = htons(request.sport);
  body.id.idiag_dport = htons(request.dport);
  memcpy(body.id.idiag_src, request.saddr, sizeof(body.id.idiag_src));
  memcpy(body.id.idiag_dst, request.daddr, sizeof(body.id.idiag_dst));
  body.id.idiag_cookie[0] = static_cast<uint32_t>(request.cookie);
  body.id.idiag_cookie[1] = static_cast<uint32_t>(request.cookie >> 32);
  BpfError error = Send(fd_, ++seq_, type, NLM_F_REQUEST | (type == SOCK_DESTROY ? NLM_F_ACK : 0), body);
  if (!error.ok()) return error;
  alignas(nlmsghdr) char buf[8192];
  return ReadAnswers(fd_, seq_, buf, [&](const nlmsghdr* h, BpfError*) {
    if (h->nlmsg_type == NLMSG_ERROR) {
      *reply_err = reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
      return true;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return false;
    auto* found = reinterpret_cast<const inet_diag_msg*>(NLMSG_DATA(h));
    *reply_err = 0;
    *state = found->idiag_state;
    if (cookie) *cookie = CookieIn(found);
    tcp_info info;
    *idle_ms = InfoOf(found, h->nlmsg_len - NLMSG_HDRLEN, &info) ? IdleMs(info) : 0;
    return true;
  });
}

BpfError SockDiag::ProbeDestroy() {
  int reply = 0;
  uint8_t state = 0;
  uint64_t idle = 0;
  // 1. A TCP handler answers: an exact query finds a listener of our own. (Without
  // tcp_diag every lookup is ENOENT, which must never read as "socket not found".)
  int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  socklen_t len = sizeof(addr);
  if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) || listen(listener, 1) ||
      getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len)) {
    BpfError error = BpfError::From(errno, "sock_diag", "probe");
    if (listener >= 0) close(listener);
    return error;
  }
  sl_reap_request self{};
  self.family = AF_INET;
  self.sport = ntohs(addr.sin_port);
  self.cookie = ~0ull;  // INET_DIAG_NOCOOKIE: match by address only
  BpfError error = Exchange(SOCK_DIAG_BY_FAMILY, self, &reply, &state, &idle);
  close(listener);
  if (!error.ok()) return error;
  if (reply) {
    error = BpfError::From(-reply, "sock_diag", "tcp_diag");
    error.message = "sock_diag has no TCP handler (tcp_diag module missing or not loadable): " + error.message;
    return error;
  }
  // 2. SOCK_DESTROY exists for TCP (CONFIG_INET_DIAG_DESTROY): for no such socket it
  // says ENOENT, without it EOPNOTSUPP.
  sl_reap_request nothing{};
  nothing.family = AF_INET;  // 0.0.0.0:0 -> 0.0.0.0:0, cookie 0: no such socket
  error = Exchange(SOCK_DESTROY, nothing, &reply, &state, &idle);
  if (!error.ok()) return error;
  if (reply == -EOPNOTSUPP) return BpfError::From(EOPNOTSUPP, "sock_diag", "SOCK_DESTROY");
  return BpfError{};
}

BpfError SockDiag::DestroyOne(const sl_reap_request& request, sl_reap_result* result) {
  *result = sl_reap_result{};
  result->cookie = request.cookie;
  result->netns_ino = request.netns_ino;
  int reply = 0;
  uint8_t state = 0;
  uint64_t idle_ms = 0;
  uint64_t now_ns = MonotonicNs();
  BpfError error = Exchange(SOCK_DIAG_BY_FAMILY, request, &reply, &state, &idle_ms);
  if (!error.ok()) return error;
  // ENOENT: no socket on that 4-tuple; ESTALE: one is there, with another cookie.
  if (reply == -ENOENT || reply == -ESTALE) {
    result->outcome = SL_REAP_SKIP_NOT_FOUND;
    return BpfError{};
  }
  if (reply) {
    result->outcome = SL_REAP_FAILED;
    result->err = reply;
    return BpfError{};
  }
  result->state = state;
  result->last_active_ns = idle_ms * 1000000ull < now_ns ? now_ns - idle_ms * 1000000ull : 0;
  if (state != request.state) {
    result->outcome = SL_REAP_SKIP_STATE;
    return BpfError{};
  }
  if (request.active_before_ns && result->last_active_ns > request.active_before_ns) {
    result->outcome = SL_REAP_SKIP_ACTIVE;
    return BpfError{};
  }
  error = Exchange(SOCK_DESTROY, request, &reply, &state, &idle_ms);
  if (!error.ok()) return error;
  if (reply == -EOPNOTSUPP) return BpfError::From(EOPNOTSUPP, "sock_diag", "SOCK_DESTROY");
  if (reply == -ENOENT || reply == -ESTALE) {
    result->outcome = SL_REAP_SKIP_NOT_FOUND;  // gone between the check and the destroy
  } else if (reply) {
    result->outcome = SL_REAP_FAILED;
    result->err = reply;
  } else {
    result->outcome = SL_REAP_DESTROYED;
  }
  return BpfError{};
}

BpfError SockDiag::CookieOf(const sl_sock& sock, uint64_t* cookie) {
  sl_reap_request query{};
  query.family = sock.family;
  query.sport = sock.sport;
  query.dport = sock.dport;
  memcpy(query.saddr, sock.saddr, sizeof(query.saddr));
  memcpy(query.daddr, sock.daddr, sizeof(query.daddr));
  query.cookie = ~0ull;  // INET_DIAG_NOCOOKIE: match by address only
  int reply = 0;
  uint8_t state = 0;
  uint64_t idle_ms = 0;
  *cookie = 0;
  BpfError error = Exchange(SOCK_DIAG_BY_FAMILY, query, &reply, &state, &idle_ms, cookie);
  if (!error.ok()) return error;
  if (reply) *cookie = 0;
  return BpfError{};
}

BpfError SockDiag::Dump(uint8_t family, uint32_t kernel_states, uint8_t ext, const MsgVisitor& each) {
  inet_diag_req_v2 body{};
  body.sdiag_family = family;
  body.sdiag_protocol = IPPROTO_TCP;
  body.idiag_states = kernel_states;
  body.idiag_ext = ext;
  BpfError error = Send(fd_, ++seq_, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, body);
  if (!error.ok()) return error;
  // A dump answers in multipart datagrams of up to ~32 KB each. Late answers
  // skipped are the rest of a dump given up on (no memory).
  alignas(nlmsghdr) static thread_local char buf[64 << 10];
  return ReadAnswers(fd_, seq_, buf, [&](const nlmsghdr* h, BpfError* failed) {
    if (h->nlmsg_type == NLMSG_DONE) return true;
    if (h->nlmsg_type == NLMSG_ERROR) {
      int err = -reinterpret_cast<const nlmsgerr*>(NLMSG_DATA(h))->error;
      if (!(family == AF_INET6 && err == ENOENT)) *failed = BpfError::From(err, "sock_diag", "dump");  // else a kernel without IPv6
      return true;
    }
    if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY) return false;
    if (each(reinterpret_cast<const inet_diag_msg*>(NLMSG_DATA(h)), h->nlmsg_len - NLMSG_HDRLEN)) return false;
    *failed = BpfError::From(ENOMEM, "sock_diag");
    return true;
  });
}

BpfError SockDiag::DumpCookies(uint32_t state_mask, ScanBuffer* out) {
  bool counted = state_mask && (state_mask & ~kInUseStates) == 0;
  for (uint8_t family : {AF_INET, AF_INET6}) {
    if (counted && !(family == AF_INET ? has_ipv4_ : has_ipv6_)) continue;
    BpfError error = Dump(family, state_mask ? state_mask : ~0u, 0, [out](const inet_diag_msg* found, size_t) {
      if (!out->Reserve(sizeof(uint64_t))) return false;
      uint64_t cookie = CookieIn(found);
      memcpy(out->end(), &cookie, sizeof(cookie));
      out->Commit(sizeof(cookie));
      return true;
    });
    if (!error.ok()) return error;
  }
  return BpfError{};
}

BpfError SockDiag::DumpSocks(uint32_t state_mask, uint32_t netns_ino, const Keepalive& keepalive,
                             const SockVisitor& each) {
  // The states as iter/tcp reads skc_state (0 = all of them), and the bits
  // sock_diag needs for them: a timewait socket answers as its substate
  // (TIME_WAIT or FIN_WAIT2), a request socket as SYN_RECV.
  uint32_t wanted = state_mask ? state_mask : (1u << (kNewSynRecv + 1)) - 2;
  uint32_t kernel = wanted;
  if (wanted & (1u << kTimeWait)) kernel |= 1u << kFinWait2;
  if (wanted & (1u << kNewSynRecv)) kernel |= 1u << kSynRecv;
  bool counted = (wanted & ~kInUseStates) == 0;
  uint64_t now_ns = MonotonicNs();
  auto visit = [&](const inet_diag_msg* found, size_t len) {
    tcp_info info;
    bool full = InfoOf(found, len, &info);
    // Only timewait sockets have timer 3; only request sockets answer SYN_RECV
    // without the tcp_info every full socket has.
    bool timewait = found->idiag_timer == 3;
    uint8_t state = timewait ? static_cast<uint8_t>(kTimeWait) : found->idiag_state;
    if (state == kSynRecv && !full) state = kNewSynRecv;
    if (!(wanted & (1u << state))) return true;
    sl_sock sock{};
    sock.cookie = CookieIn(found);
    sock.family = found->idiag_family;
    sock.state = state;
    sock.sport = ntohs(found->id.idiag_sport);
    sock.dport = ntohs(found->id.idiag_dport);
    memcpy(sock.saddr, found->id.idiag_src, sock.family == AF_INET ? 4 : sizeof(sock.saddr));
    memcpy(sock.daddr, found->id.idiag_dst, sock.family == AF_INET ? 4 : sizeof(sock.daddr));
    sock.netns_ino = netns_ino;
    sock.fd = -1;
    if (timewait) {
      sock.timer_ms = found->idiag_expires;
      sock.flags |= SL_SK_TIMER;
    } else if (state != kNewSynRecv) {
      // As the iterator: the uid and queues of full sockets only (LISTEN: backlog and its max).
      sock.uid = found->idiag_uid;
      sock.recv_q = found->idiag_rqueue;
      sock.send_q = found->idiag_wqueue;
      if (full && state != kListen) {  // a listener's tcp_mstamp, which the iterator reads, stays 0
        uint64_t idle_ns = IdleMs(info) * 1000000ull;
        sock.last_active_ns = idle_ns < now_ns ? now_ns - idle_ns : 0;
      }
      if (found->idiag_timer == 2) {  // sk_timer pending: keepalive's, on a TCP socket
        sock.flags |= SL_SK_KEEPALIVE | SL_SK_TIMER;
        sock.timer_ms = found->idiag_expires;
        sock.keepalive_idle_ms = keepalive.idle_ms;
        sock.keepalive_intvl_ms = keepalive.intvl_ms;
        sock.keepalive_probes = keepalive.probes;
      }
    }
    each(sock, found->idiag_inode);
    return true;
  };
  for (uint8_t family : {AF_INET, AF_INET6}) {
    if (counted && !(family == AF_INET ? has_ipv4_ : has_ipv6_)) continue;
    BpfError error = Dump(family, kernel, 1 << (INET_DIAG_INFO - 1), visit);
    if (!error.ok()) return error;
  }
  return BpfError{};
}

}  // namespace sockleak
