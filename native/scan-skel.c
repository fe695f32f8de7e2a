#include "scan-skel.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <string.h>
#include <time.h>

#include "sockleak.h"
#include "scan.lskel.h"

// The kernel's HZ: a coarse clock's resolution is one jiffy (TICK_NSEC).
static __u32 KernelHz(void) {
  struct timespec res;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0 || res.tv_sec != 0 || res.tv_nsec <= 0) return 0;
  return (__u32)((1000000000L + res.tv_nsec / 2) / res.tv_nsec);
}

struct sl_scan* sl_scan_load(char* log, size_t log_size, int* err) {
  struct sl_scan* skel = sl_scan__open();
  if (!skel) {
    *err = ENOMEM;
    return NULL;
  }
  int ret = sl_scan__load(skel);
  if (ret && log && log_size) {
    // Again with the verifier's log: the loader program passes it on to each
    // program it loads, so a rejected program's log ends up here.
    sl_scan__destroy(skel);
    skel = sl_scan__open();
    if (!skel) {
      *err = ENOMEM;
      return NULL;
    }
    log[0] = '\0';
    skel->ctx.log_level = 1;
    skel->ctx.log_buf = (__u64)(unsigned long)log;
    skel->ctx.log_size = (__u32)log_size;
    ret = sl_scan__load(skel);
  }
  if (ret) {
    sl_scan__destroy(skel);
    *err = ret < 0 ? -ret : ret;
    return NULL;
  }
  skel->bss->kernel_hz = KernelHz();
  return skel;
}

void sl_scan_free(struct sl_scan* skel) { sl_scan__destroy(skel); }

int sl_scan_prog_fd(const struct sl_scan* skel, enum sl_scan_prog prog) {
  switch (prog) {
    case SL_SCAN_FILES:
      return skel->progs.scan_files.prog_fd;
    case SL_SCAN_TCP:
      return skel->progs.scan_tcp.prog_fd;
    case SL_CENSUS_TCP:
      return skel->progs.census_tcp.prog_fd;
    case SL_CENSUS_EHASH:
      return skel->progs.census_ehash.prog_fd;
  }
  return -1;
}

const char* sl_scan_prog_name(enum sl_scan_prog prog) {
  switch (prog) {
    case SL_SCAN_FILES:
      return "scan_files";
    case SL_SCAN_TCP:
      return "scan_tcp";
    case SL_CENSUS_TCP:
      return "census_tcp";
    case SL_CENSUS_EHASH:
      return "census_ehash";
  }
  return "";
}

void sl_scan_set_filters(struct sl_scan* skel, __u32 target_tgid, __u32 state_mask) {
  skel->bss->target_tgid = target_tgid;
  skel->bss->state_mask = state_mask;
}

void sl_scan_reset_census(struct sl_scan* skel) {
  memset(&skel->bss->census, 0, sizeof(skel->bss->census));
  memset(skel->bss->census_used, 0, sizeof(skel->bss->census_used));
  memset(skel->bss->census_listening, 0, sizeof(skel->bss->census_listening));
}

const struct sl_port_census* sl_scan_census(const struct sl_scan* skel) { return &skel->bss->census; }

int sl_scan_walk(struct sl_scan* skel, __u32 state_mask, __u32* bucket, __u32* status,
                 const struct sl_census_sock** records, __u32* count) {
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  skel->bss->walk_state_mask = state_mask;
  skel->bss->walk_bucket = *bucket;
  if (bpf_prog_test_run_opts(skel->progs.census_ehash.prog_fd, &opts) != 0) return errno;
  *bucket = skel->bss->walk_bucket;
  *status = skel->bss->walk_status;
  *records = skel->bss->walk_out;
  *count = skel->bss->walk_count;
  return 0;
}
