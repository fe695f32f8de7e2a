#!/usr/bin/env bash
# The acceptance tests again on each fallback path, forced with SOCKLEAK_REFUSE
# (src/kernel/fallbacks.ts): a kernel that refuses a program must get the same
# owners, fds and leaks, and creators wherever that path can know them. Runs
# on the kernel it is started on; scripts/vm-test.sh runs it on the others.
#
# usage: scripts/test-fallbacks.sh [SET...]   (default: every set below)
# Each SET is a SOCKLEAK_REFUSE value; the sets cover every program with a
# fallback, each way down to its last:
#   second ways: the cast owner scan, user space's leak walk, probe-read
#     accept(), sock_diag's census, the libbpf loader instead of the light one;
#   third ways: owners from /proc and sock_diag, tp_btf syscall hooks;
#   no BPF at all: sock_diag and /proc, leaks by successive scans (the
#     tests assert creators and closes where the path can know them).
set -uo pipefail
cd "$(dirname "$0")/.."

sets=("$@")
((${#sets[@]})) || sets=(
	"scan_files,new_leaks,tp_accept_cast,census_ehash,light"
	"scan_files,scan_files_cast,scan_tcp,census_tcp,census_ehash,tp_close_enter"
	"bpf"
)
file_limit=${SOCKLEAK_VM_FILE_TIMEOUT:-600}

rc=0
for set in "${sets[@]}"; do
	files=(dist/test/leaks.test.js dist/test/snapshot-json.test.js dist/test/kernel-paths.test.js dist/test/stacks.test.js)
	echo "test-fallbacks: SOCKLEAK_REFUSE=$set" >&2
	SOCKLEAK_REFUSE=$set node --test --test-concurrency=1 --test-force-exit --test-timeout=$((file_limit * 1000)) "${files[@]}" || rc=1
done
exit "$rc"
