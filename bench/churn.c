/*
 * Loopback connection churn, the workload every overhead row runs.
 *
 * One server thread accepts and closes at once; THREADS client threads connect,
 * read until the server's FIN, and close, as fast as they can, until TOTAL
 * connections are done. The server closes first, so TIME_WAIT lands on the
 * server side and the clients never run out of ephemeral ports. Each
 * connection makes 10 inet_sock_set_state hits (5 per side).
 *
 * Prints one JSON line when done; CPU is this process's getrusage (all threads,
 * including softirq work charged to it and any BPF programs run in its context)
 * over the churn only, not start-up:
 *   {"pid":..,"connections":n,"failed":n,"wallNs":..,"userNs":..,"sysNs":..}
 * Usage: churn TOTAL [THREADS]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct sockaddr_in server_addr;
static long total;
static atomic_long claimed;  /* connections handed out to client threads */
static atomic_long done;     /* connections that completed (read EOF) */
static atomic_long failed;   /* socket/connect/read failures */

static void die(const char *what) {
  fprintf(stderr, "churn: %s: %s\n", what, strerror(errno));
  exit(1);
}

static long long ns_of(struct timeval tv) { return (long long)tv.tv_sec * 1000000000LL + tv.tv_usec * 1000LL; }

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void *server_main(void *arg) {
  int lfd = *(int *)arg;
  for (;;) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EINVAL || errno == EBADF) return NULL; /* listener shut down: churn is over */
      die("accept");
    }
    close(fd);
  }
}

static void *client_main(void *arg) {
  (void)arg;
  char buf[64];
  while (atomic_fetch_add(&claimed, 1) < total) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) die("socket");
    if (connect(fd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0) {
      atomic_fetch_add(&failed, 1);
      close(fd);
      continue;
    }
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) {
    }
    if (n < 0) atomic_fetch_add(&failed, 1);
    else atomic_fetch_add(&done, 1);
    close(fd);
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: churn TOTAL [THREADS]\n");
    return 64;
  }
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  total = atol(argv[1]);
  int threads = argc > 2 ? atoi(argv[2]) : 2;
  if (total <= 0 || threads <= 0 || threads > 64) {
    fprintf(stderr, "churn: bad TOTAL or THREADS\n");
    return 64;
  }

  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) die("socket");
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  server_addr.sin_family = AF_INET;
  server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  server_addr.sin_port = 0;
  if (bind(lfd, (struct sockaddr *)&server_addr, sizeof server_addr) < 0) die("bind");
  if (listen(lfd, 4096) < 0) die("listen");
  socklen_t len = sizeof server_addr;
  if (getsockname(lfd, (struct sockaddr *)&server_addr, &len) < 0) die("getsockname");

  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  long long t0 = now_ns();

  pthread_t server, clients[64];
  if (pthread_create(&server, NULL, server_main, &lfd) != 0) die("pthread_create");
  for (int i = 0; i < threads; i++)
    if (pthread_create(&clients[i], NULL, client_main, NULL) != 0) die("pthread_create");
  for (int i = 0; i < threads; i++) pthread_join(clients[i], NULL);

  long long t1 = now_ns();
  getrusage(RUSAGE_SELF, &r1);
  /* Every client saw its server-side close, so the server has nothing left to accept. */
  shutdown(lfd, SHUT_RDWR);
  pthread_join(server, NULL);

  printf("{\"pid\":%d,\"connections\":%ld,\"failed\":%ld,\"wallNs\":%lld,\"userNs\":%lld,\"sysNs\":%lld}\n", getpid(),
         atomic_load(&done), atomic_load(&failed), t1 - t0, ns_of(r1.ru_utime) - ns_of(r0.ru_utime),
         ns_of(r1.ru_stime) - ns_of(r0.ru_stime));
  return 0;
}
