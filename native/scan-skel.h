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
struct sl_census_sock;

enum sl_scan_prog { SL_SCAN_FILES, SL_SCAN_TCP, SL_CENSUS_TCP, SL_CENSUS_EHASH };

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

// One run of census_ehash (BPF_PROG_TEST_RUN on the calling thread, which must
// be in the namespace to walk), from *bucket on: its records are then at
// *records (*count of them, valid until the next run), *bucket is where the
// next run goes on, and *status an enum sl_walk_status. 0 or a positive errno.
int sl_scan_walk(struct sl_scan* skel, __u32 state_mask, __u32* bucket, __u32* status,
                 const struct sl_census_sock** records, __u32* count);

#ifdef __cplusplus
}
#endif
