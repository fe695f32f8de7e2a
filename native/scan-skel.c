#include "scan-skel.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sockleak.h"
#include "scan.skel.h"
#include "scan-light.lskel.h"
#include "scan-light-cast.lskel.h"

// The three builds have the same globals (only their programs differ), so one
// .bss layout serves all: the light skeleton's.
typedef struct sl_scan_light__bss scan_bss;
_Static_assert(sizeof(struct sl_scan_light__bss) == sizeof(struct sl_scan_light_cast__bss), "one .bss layout");
_Static_assert(sizeof(struct sl_scan_light__bss) == sizeof(struct sl_scan__bss), "one .bss layout");

struct sl_scan_handle {
  // Exactly one of the three is set.
  struct sl_scan_light* light;
  struct sl_scan_light_cast* light_cast;
  struct sl_scan* object;
  scan_bss* bss;
  int fds[SL_SCAN_PROGS];
};

static const char* const kProgNames[SL_SCAN_PROGS] = {"scan_files", "scan_files_cast", "scan_tcp", "census_tcp",
                                                      "census_ehash"};

// The kernel's HZ: a coarse clock's resolution is one jiffy (TICK_NSEC).
static __u32 KernelHz(void) {
  struct timespec res;
  if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) != 0 || res.tv_sec != 0 || res.tv_nsec <= 0) return 0;
  return (__u32)((1000000000L + res.tv_nsec / 2) / res.tv_nsec);
}

static struct sl_scan_handle* NewHandle(void) {
  struct sl_scan_handle* skel = calloc(1, sizeof(*skel));
  if (!skel) return NULL;
  for (int i = 0; i < SL_SCAN_PROGS; i++) skel->fds[i] = -1;
  return skel;
}

static void Loaded(struct sl_scan_handle* skel, struct sl_scan_handle** out) {
  skel->bss->kernel_hz = KernelHz();
  *out = skel;
}

// Loads one light skeleton type: on a refusal, again with the verifier's log
// (the loader program passes it on to each program it loads).
#define LOAD_LIGHT(type, skel_out, log, log_size, ret)      \
  do {                                                      \
    struct type* s = type##__open();                        \
    ret = s ? type##__load(s) : ENOMEM;                     \
    if (ret && s && log && log_size) {                      \
      type##__destroy(s);                                   \
      s = type##__open();                                   \
      if (s) {                                              \
        log[0] = '\0';                                      \
        s->ctx.log_level = 1;                               \
        s->ctx.log_buf = (__u64)(unsigned long)log;         \
        s->ctx.log_size = (__u32)log_size;                  \
        int again = type##__load(s);                        \
        (void)again; /* the first errno is the kernel's answer */ \
      }                                                     \
    }                                                       \
    if (ret && s) type##__destroy(s);                       \
    skel_out = ret ? NULL : s;                              \
  } while (0)

// A light skeleton's .bss and program fds; the two differ only in their scan_files.
#define LIGHT_LOADED(skel, light, files_prog, files)                            \
  do {                                                                        \
    (skel)->bss = (scan_bss*)(light)->bss;                                    \
    (skel)->fds[files_prog] = (light)->progs.files.prog_fd;                   \
    (skel)->fds[SL_SCAN_TCP] = (light)->progs.scan_tcp.prog_fd;               \
    (skel)->fds[SL_CENSUS_TCP] = (light)->progs.census_tcp.prog_fd;           \
    (skel)->fds[SL_CENSUS_EHASH] = (light)->progs.census_ehash.prog_fd;       \
  } while (0)

int sl_scan_load_light(int cast, char* log, size_t log_size, struct sl_scan_handle** out) {
  struct sl_scan_handle* skel = NewHandle();
  int ret = 0;
  if (!skel) return ENOMEM;
  if (cast) {
    LOAD_LIGHT(sl_scan_light_cast, skel->light_cast, log, log_size, ret);
    if (!ret) LIGHT_LOADED(skel, skel->light_cast, SL_SCAN_FILES_CAST, scan_files_cast);
  } else {
    LOAD_LIGHT(sl_scan_light, skel->light, log, log_size, ret);
    if (!ret) LIGHT_LOADED(skel, skel->light, SL_SCAN_FILES, scan_files);
  }
  if (ret) {
    free(skel);
    return ret < 0 ? -ret : ret;
  }
  Loaded(skel, out);
  return 0;
}

int sl_scan_load_object(unsigned refused, const char* btf_path, struct sl_scan_handle** out) {
  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .btf_custom_path = btf_path);
  struct sl_scan_handle* skel = NewHandle();
  if (!skel) return ENOMEM;
  struct sl_scan* obj = sl_scan__open_opts(&open_opts);
  if (!obj) {
    int err = errno;
    free(skel);
    return err ? err : ENOMEM;
  }
  struct bpf_program* progs[SL_SCAN_PROGS] = {obj->progs.scan_files, obj->progs.scan_files_cast, obj->progs.scan_tcp,
                                              obj->progs.census_tcp, obj->progs.census_ehash};
  for (int i = 0; i < SL_SCAN_PROGS; i++) bpf_program__set_autoload(progs[i], !(refused & (1u << i)));
  // One scan_files: the cast one only where the other is refused.
  if (!(refused & (1u << SL_SCAN_FILES))) bpf_program__set_autoload(progs[SL_SCAN_FILES_CAST], false);
  int ret = sl_scan__load(obj);
  if (ret) {
    sl_scan__destroy(obj);
    free(skel);
    return ret < 0 ? -ret : ret;
  }
  skel->object = obj;
  skel->bss = (scan_bss*)obj->bss;
  for (int i = 0; i < SL_SCAN_PROGS; i++) {
    if (bpf_program__autoload(progs[i])) skel->fds[i] = bpf_program__fd(progs[i]);
  }
  Loaded(skel, out);
  return 0;
}

void* sl_scan_open_object(const char* btf_path, struct bpf_object** obj) {
  LIBBPF_OPTS(bpf_object_open_opts, open_opts, .btf_custom_path = btf_path);
  struct sl_scan* skel = sl_scan__open_opts(&open_opts);
  if (skel) *obj = skel->obj;
  return skel;
}

void sl_scan_close_object(void* opened) { sl_scan__destroy((struct sl_scan*)opened); }

void sl_scan_free(struct sl_scan_handle* skel) {
  if (!skel) return;
  if (skel->light) sl_scan_light__destroy(skel->light);
  if (skel->light_cast) sl_scan_light_cast__destroy(skel->light_cast);
  if (skel->object) sl_scan__destroy(skel->object);
  free(skel);
}

const char* sl_scan_loader(const struct sl_scan_handle* skel) {
  return skel->light ? "light" : skel->light_cast ? "light-cast" : "libbpf";
}

int sl_scan_prog_fd(const struct sl_scan_handle* skel, enum sl_scan_prog prog) {
  return prog < SL_SCAN_PROGS ? skel->fds[prog] : -1;
}

const char* sl_scan_prog_name(enum sl_scan_prog prog) { return prog < SL_SCAN_PROGS ? kProgNames[prog] : ""; }

enum sl_scan_prog sl_scan_prog_of(const char* name) {
  for (int i = 0; i < SL_SCAN_PROGS; i++) {
    if (strcmp(kProgNames[i], name) == 0) return (enum sl_scan_prog)i;
  }
  return SL_SCAN_PROGS;
}

void sl_scan_set_filters(struct sl_scan_handle* skel, __u32 target_tgid, __u32 state_mask) {
  skel->bss->target_tgid = target_tgid;
  skel->bss->state_mask = state_mask;
}

void sl_scan_reset_census(struct sl_scan_handle* skel) {
  memset(&skel->bss->census, 0, sizeof(skel->bss->census));
  memset(skel->bss->census_used, 0, sizeof(skel->bss->census_used));
  memset(skel->bss->census_listening, 0, sizeof(skel->bss->census_listening));
}

const struct sl_port_census* sl_scan_census(const struct sl_scan_handle* skel) { return &skel->bss->census; }

int sl_scan_walk(struct sl_scan_handle* skel, __u32 state_mask, __u32* bucket, __u32* status,
                 const struct sl_census_sock** records, __u32* count) {
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  if (skel->fds[SL_CENSUS_EHASH] < 0) return ENOENT;
  skel->bss->walk_state_mask = state_mask;
  skel->bss->walk_bucket = *bucket;
  if (bpf_prog_test_run_opts(skel->fds[SL_CENSUS_EHASH], &opts) != 0) return errno;
  *bucket = skel->bss->walk_bucket;
  *status = skel->bss->walk_status;
  *records = skel->bss->walk_out;
  *count = skel->bss->walk_count;
  return 0;
}
