/*
 * CLOSE_WAIT sockets on demand, for the snapshot benchmark (incident 1 in
 * miniature: a peer closes, the holder never does).
 *
 *   closewait listen EXPECTED ADDR...
 *     Listens on each ADDR (an IPv4 address; the port is picked by the kernel),
 *     prints {"pid":..,"listeners":["a:p",..]}, then accepts and closes every
 *     connection at once; prints {"closed":n} when n reaches EXPECTED. Runs until
 *     killed.
 *   closewait hold COUNT TRUTHFILE ADDR:PORT...
 *     Opens COUNT connections, round-robin over the destinations, and never
 *     closes them: each goes CLOSE_WAIT when the listener closes its end. Writes
 *     one "local remote fd" line per socket to TRUTHFILE, prints
 *     {"pid":..,"held":n,"failed":n}, then sleeps until killed.
 *
 * Both die with their parent (PR_SET_PDEATHSIG), so a crashed benchmark leaves
 * no sockets behind.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_ADDRS 64

static void die(const char *what) {
  fprintf(stderr, "closewait: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void format_addr(const struct sockaddr_in *a, char *out, size_t len) {
  char ip[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
  snprintf(out, len, "%s:%u", ip, ntohs(a->sin_port));
}

static int parse_addr(const char *text, struct sockaddr_in *out, int need_port) {
  char ip[64];
  const char *colon = strrchr(text, ':');
  size_t n = colon ? (size_t)(colon - text) : strlen(text);
  if (n >= sizeof ip || (need_port && !colon)) return -1;
  memcpy(ip, text, n);
  ip[n] = 0;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = colon ? htons((unsigned short)atoi(colon + 1)) : 0;
  return inet_pton(AF_INET, ip, &out->sin_addr) == 1 ? 0 : -1;
}

static int run_listen(long expected, int naddrs, char **addrs) {
  int ep = epoll_create1(0);
  if (ep < 0) die("epoll_create1");
  printf("{\"pid\":%d,\"listeners\":[", getpid());
  for (int i = 0; i < naddrs; i++) {
    struct sockaddr_in a;
    if (parse_addr(addrs[i], &a, 0) < 0) {
      fprintf(stderr, "closewait: bad address %s\n", addrs[i]);
      return 64;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
    if (listen(fd, 4096) < 0) die("listen");
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    char text[64];
    format_addr(&a, text, sizeof text);
    printf("%s\"%s\"", i ? "," : "", text);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  }
  printf("]}\n");
  fflush(stdout);

  long closed = 0;
  struct epoll_event ready[MAX_ADDRS];
  for (;;) {
    int n = epoll_wait(ep, ready, MAX_ADDRS, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_wait");
    }
    for (int i = 0; i < n; i++) {
      int fd;
      while ((fd = accept4(ready[i].data.fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
        close(fd);
        if (++closed == expected) {
          printf("{\"closed\":%ld}\n", closed);
          fflush(stdout);
        }
      }
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ECONNABORTED && errno != EINTR) die("accept4");
    }
  }
}

static int run_hold(long count, const char *truth_path, int ndest, char **dests) {
  struct sockaddr_in dest[MAX_ADDRS];
  for (int i = 0; i < ndest; i++) {
    if (parse_addr(dests[i], &dest[i], 1) < 0) {
      fprintf(stderr, "closewait: bad destination %s\n", dests[i]);
      return 64;
    }
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);

  FILE *truth = fopen(truth_path, "w");
  if (!truth) die(truth_path);
  long held = 0, failed = 0;
  for (long i = 0; i < count; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket (raise the open-file limit or use more holders)");
    const struct sockaddr_in *to = &dest[i % ndest];
    if (connect(fd, (const struct sockaddr *)to, sizeof *to) < 0) {
      failed++;
      close(fd);
      continue;
    }
    struct sockaddr_in local;
    socklen_t len = sizeof local;
    getsockname(fd, (struct sockaddr *)&local, &len);
    char l[64], r[64];
    format_addr(&local, l, sizeof l);
    format_addr(to, r, sizeof r);
    fprintf(truth, "%s %s %d\n", l, r, fd);
    held++;
  }
  if (fclose(truth) != 0) die(truth_path);
  printf("{\"pid\":%d,\"held\":%ld,\"failed\":%ld}\n", getpid(), held, failed);
  fflush(stdout);
  for (;;) pause();
}

int main(int argc, char **argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (argc >= 4 && strcmp(argv[1], "listen") == 0 && argc - 3 <= MAX_ADDRS)
    return run_listen(atol(argv[2]), argc - 3, argv + 3);
  if (argc >= 5 && strcmp(argv[1], "hold") == 0 && argc - 4 <= MAX_ADDRS)
    return run_hold(atol(argv[2]), argv[3], argc - 4, argv + 4);
  fprintf(stderr, "usage: closewait listen EXPECTED ADDR... | closewait hold COUNT TRUTHFILE ADDR:PORT...\n");
  return 64;
}
