// The scan object behind a small C interface, loaded one of three ways
// (scripts/build-bpf.sh builds them): a light skeleton (bpftool gen skeleton
// -L) with scan_files, the same with scan_files_cast, or the libbpf object
// with both. A light skeleton runs one BPF loader program that has the kernel
// do the CO-RE relocations and attach-target lookups against its own BTF, with
// no BTF parsed in user space, but it loads all of its programs or none; the
// libbpf object loads the programs it is told to. bpftool generates C that is
// not valid C++, so only scan-skel.c includes the skeletons. Not thread-safe;
// Scanner serialises.
#pragma once

#include <linux/types.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_scan_handle;
struct sl_port_census;
struct sl_census_sock;
struct bpf_object;

// The programs of the scan object; also bits (1 << prog) of a refusal mask.
enum sl_scan_prog { SL_SCAN_FILES, SL_SCAN_FILES_CAST, SL_SCAN_TCP, SL_CENSUS_TCP, SL_CENSUS_EHASH, SL_SCAN_PROGS };

// Loads a light skeleton, with scan_files (cast = 0) or scan_files_cast: 0 or
// a positive errno. On a refusal, `log` has the verifier's log (at least
// 1 MiB: a smaller one makes the loader fail its own BTF load with ENOSPC).
int sl_scan_load_light(int cast, char* log, size_t log_size, struct sl_scan_handle** out);

// Loads the libbpf object without the programs whose bit is in `refused`, and
// without scan_files_cast unless scan_files is refused: 0 or a positive errno
// (libbpf's log names the program the kernel refused). `btf_path`: the kernel
// BTF to relocate against (NULL = the running kernel's).
int sl_scan_load_object(unsigned refused, const char* btf_path, struct sl_scan_handle** out);

void sl_scan_free(struct sl_scan_handle* skel);

// The libbpf object opened, not loaded, for the probe (probe.cc), which sets
// each program's autoload and loads *obj itself; close with sl_scan_close_object.
void* sl_scan_open_object(const char* btf_path, struct bpf_object** obj);
void sl_scan_close_object(void* opened);


// "light", "light-cast" or "libbpf": how `skel` was loaded.
const char* sl_scan_loader(const struct sl_scan_handle* skel);

// -1 where the program is not loaded.
int sl_scan_prog_fd(const struct sl_scan_handle* skel, enum sl_scan_prog prog);
const char* sl_scan_prog_name(enum sl_scan_prog prog);
// The program called `name`, or SL_SCAN_PROGS.
enum sl_scan_prog sl_scan_prog_of(const char* name);

// The iterators' filters, read while an iterator is read.
void sl_scan_set_filters(struct sl_scan_handle* skel, __u32 target_tgid, __u32 state_mask);

// census_tcp's result: zero it before an iteration, read it after.
void sl_scan_reset_census(struct sl_scan_handle* skel);
const struct sl_port_census* sl_scan_census(const struct sl_scan_handle* skel);

// One run of census_ehash (BPF_PROG_TEST_RUN on the calling thread, which must
// be in the namespace to walk), from *bucket on: its records are then at
// *records (*count of them, valid until the next run), *bucket is where the
// next run goes on, and *status an enum sl_walk_status. 0 or a positive errno.
int sl_scan_walk(struct sl_scan_handle* skel, __u32 state_mask, __u32* bucket, __u32* status,
                 const struct sl_census_sock** records, __u32* count);

#ifdef __cplusplus
}
#endif
