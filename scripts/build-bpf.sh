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

for src in bpf/*.bpf.c; do
  name=$(basename "$src" .bpf.c)
  obj="$out/$name.bpf.o"
  # The scan object gets a light skeleton (bpf_load_and_run: CO-RE relocation
  # and attach-target lookup done by the kernel against its own BTF) for the
  # one-shot scans: libbpf's loader parses all of vmlinux's BTF first, ~10 ms
  # of every `sockleak snapshot`. It is C only: native/scan-skel.c wraps it.
  light=$([ "$name" = scan ] && echo -L || true)
  skel="$out/$name.${light:+l}skel.h"
  # Up to date only if newer than its source and every shared header.
  stale=0
  for dep in "$src" bpf/*.h; do [ "$obj" -nt "$dep" ] || stale=1; done
  if [ "$stale" = 0 ] && [ -s "$skel" ]; then
    continue
  fi
  clang -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_x86 \
    -I "$out" -I bpf -c "$src" -o "$obj.tmp"
  llvm-strip -g "$obj.tmp" # drop DWARF, keep BTF
  mv "$obj.tmp" "$obj"
  bpftool gen skeleton $light "$obj" name "sl_$name" > "$skel.tmp"
  mv "$skel.tmp" "$skel"
done

# What earlier builds made for the scan object: a minimised BTF, a full skeleton.
rm -f "$out/scan.min.btf" "$out/scan.min.btf.key" "$out/scan.skel.h"

node scripts/gen-layout.mjs "$out/trace.bpf.o" "$out/scan.bpf.o" "$out/reap.bpf.o" > src/generated/layout.ts.tmp
mv src/generated/layout.ts.tmp src/generated/layout.ts
