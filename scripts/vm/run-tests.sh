#!/usr/bin/env bash
# Runs sockleak's node tests once, on whatever kernel this is (the host, or a
# guest booted by scripts/vm-test.sh), and leaves in OUT_DIR:
#   kernel        uname -r
#   results.jsonl one line per finished test (scripts/vm/reporter.mjs)
#   tests.rc      node --test's exit status (124: timed out)
#   test-seconds  wall time of the test run
# Spec output goes to stdout, for people watching.
#
# --test-force-exit: a test file whose failed test left a server or child
# process behind would otherwise never exit, and the run would sit until the
# timeout. --test-timeout (node 20 applies it to each test file as a whole)
# lets one stuck file fail by name while the files after it still run.
#
# usage: run-tests.sh OUT_DIR TIMEOUT_SECONDS TEST_FILE...
# SOCKLEAK_VM_FILE_TIMEOUT: seconds one test file may take (default 600).
set -uo pipefail
out=$1 limit=$2
file_limit=${SOCKLEAK_VM_FILE_TIMEOUT:-600}
shift 2
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"

uname -r > "$out/kernel"
start=$(date +%s)
# timeout puts the runner and its children in their own process group and
# kills that group at the limit; forward an interrupt to it the same way.
timeout --kill-after=10 "$limit" node --test --test-concurrency=1 --test-force-exit --test-timeout=$((file_limit * 1000)) \
	--test-reporter=spec --test-reporter-destination=stdout \
	--test-reporter="$repo/scripts/vm/reporter.mjs" --test-reporter-destination="$out/results.jsonl" \
	"$@" &
runner=$!
trap 'kill -TERM "$runner" 2>/dev/null' INT TERM HUP
rc=0
wait "$runner" || rc=$?
# An interrupted wait returns >128 while the runner is still stopping.
while kill -0 "$runner" 2>/dev/null; do wait "$runner" || rc=$?; done
echo $(($(date +%s) - start)) > "$out/test-seconds"
echo "$rc" > "$out/tests.rc"
exit "$rc"
