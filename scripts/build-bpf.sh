#!/usr/bin/env bash
# Builds the BPF objects, their libbpf skeletons (the addon embeds them) and the
# TypeScript event layout generated from the objects' BTF.
# Outputs: bpf/.output/{vmlinux.h,*.bpf.o,*.skel.h,scan.lskel.h}, src/generated/layout.ts.
# One build runs on every kernel with BTF (CO-RE); vmlinux.h only supplies types.
set -euo pipefail
cd "$(dirname "$0")/.."

out=bpf/.output
mkdir -p "$out" src/generated
btf=${SOCKLEAK_BUILD_BTF:-/sys/kernel/btf/vmlinux}

for tool in clang llvm-strip bpftool; do
  command -v "$tool" >/dev/null || { echo "build-bpf: $tool not found; run scripts/setup.sh" >&2; exit 69; }
done

if [ ! -s "$out/vmlinux.h" ]; then
  [ -r "$btf" ] || { echo "build-bpf: no kernel BTF at $btf (set SOCKLEAK_BUILD_BTF)" >&2; exit 69; }
  bpftool btf dump file "$btf" format c > "$out/vmlinux.h.tmp"
  mv "$out/vmlinux.h.tmp" "$out/vmlinux.h"
fi

# build NAME SRC SKELETON_FLAGS [CFLAGS...]: bpf/.output/NAME.bpf.o and its skeleton
# (NAME.skel.h, or NAME.lskel.h for a light one), unless newer than SRC and every header.
build() {
  local name=$1 src=$2 light=$3
  shift 3
  local obj="$out/$name.bpf.o" skel="$out/$name.${light:+l}skel.h" stale=0 dep
  for dep in "$src" bpf/*.h; do [ "$obj" -nt "$dep" ] || stale=1; done
  [ "$stale" = 0 ] && [ -s "$skel" ] && return 0
  clang -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_x86 \
    -I "$out" -I bpf "$@" -c "$src" -o "$obj.tmp"
  llvm-strip -g "$obj.tmp" # drop DWARF, keep BTF
  mv "$obj.tmp" "$obj"
  bpftool gen skeleton $light "$obj" name "sl_${name//-/_}" > "$skel.tmp"
  mv "$skel.tmp" "$skel"
}

build trace bpf/trace.bpf.c ""
build reap bpf/reap.bpf.c ""
# The scan object three times. Two light skeletons (bpf_load_and_run: CO-RE
# relocation and attach-target lookup done by the kernel against its own BTF),
# one per scan_files variant: libbpf's loader parses all of vmlinux's BTF
# first, ~10 ms of every `sockleak snapshot`, but a light skeleton loads all
# of its programs or none. So the libbpf object with both variants is the
# fallback where the kernel refuses a program of each light one (native/scan-skel.c).
# Light skeletons are C only: native/scan-skel.c wraps them.
build scan bpf/scan.bpf.c ""
build scan-light bpf/scan.bpf.c -L -DSL_SCAN_FILES_CAST=0
build scan-light-cast bpf/scan.bpf.c -L -DSL_SCAN_FILES_TRUSTED=0

# What earlier builds made for the scan object: a minimised BTF, its light skeleton's old name.
rm -f "$out/scan.min.btf" "$out/scan.min.btf.key" "$out/scan.lskel.h"

node scripts/gen-layout.mjs "$out/trace.bpf.o" "$out/scan.bpf.o" "$out/reap.bpf.o" > src/generated/layout.ts.tmp
mv src/generated/layout.ts.tmp src/generated/layout.ts
