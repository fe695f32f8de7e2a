// The scan object's light skeleton (bpftool gen skeleton -L) behind a small C
// interface: bpftool generates C that is not valid C++, so only scan-skel.c
// includes it. Loading it runs one BPF loader program that has the kernel do
// the CO-RE relocations and attach-target lookups against its own BTF, with
// no BTF parsed in user space. Not thread-safe; Scanner serialises.
#pragma once

#include <linux/types.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_scan;
struct sl_port_census;

enum sl_scan_prog { SL_SCAN_FILES, SL_SCAN_TCP, SL_CENSUS_TCP };

// Loads the programs; null with *err (positive errno) on failure, and the
// verifier's log in `log` when the kernel rejected a program.
struct sl_scan* sl_scan_load(char* log, size_t log_size, int* err);
void sl_scan_free(struct sl_scan* skel);

int sl_scan_prog_fd(const struct sl_scan* skel, enum sl_scan_prog prog);
const char* sl_scan_prog_name(enum sl_scan_prog prog);

// The iterators' filters, read while an iterator is read.
void sl_scan_set_filters(struct sl_scan* skel, __u32 target_tgid, __u32 state_mask);

// census_tcp's result: zero it before an iteration, read it after.
void sl_scan_reset_census(struct sl_scan* skel);
const struct sl_port_census* sl_scan_census(const struct sl_scan* skel);

#ifdef __cplusplus
}
#endif
