#!/usr/bin/env bash
# Builds the BPF objects, their libbpf skeletons (the addon embeds them) and the
# TypeScript event layout generated from the objects' BTF.
# Outputs: bpf/.output/{vmlinux.h,*.bpf.o,*.skel.h}, src/generated/layout.ts.
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
  # Up to date only if newer than its source and every shared header.
  stale=0
  for dep in "$src" bpf/*.h; do [ "$obj" -nt "$dep" ] || stale=1; done
  if [ "$stale" = 0 ] && [ -s "$out/$name.skel.h" ]; then
    continue
  fi
  clang -g -O2 -Wall -Werror -target bpf -D__TARGET_ARCH_x86 \
    -I "$out" -I bpf -c "$src" -o "$obj.tmp"
  llvm-strip -g "$obj.tmp" # drop DWARF, keep BTF
  mv "$obj.tmp" "$obj"
  bpftool gen skeleton "$obj" name "sl_$name" > "$out/$name.skel.h.tmp"
  mv "$out/$name.skel.h.tmp" "$out/$name.skel.h"
done

# The scan object's CO-RE relocations against this kernel's full BTF take ~10 ms
# of every `sockleak snapshot` (libbpf searches all of vmlinux's types). A BTF
# minimised to the types the object uses makes them ~1 ms; it is only valid
# for this kernel, so a key names the kernel it was made from, and the loader
# uses it only where the running kernel has that key (src/native-scan.ts), and
# falls back to the full BTF on any load failure with it.
rm -f "$out/scan.min.btf" "$out/scan.min.btf.key"
if [ -z "${SOCKLEAK_BUILD_BTF:-}" ] &&
  bpftool gen min_core_btf "$btf" "$out/scan.min.btf.tmp" "$out/scan.bpf.o" 2>/dev/null; then
  mv "$out/scan.min.btf.tmp" "$out/scan.min.btf"
  printf '%s\n%s\n%s\n' "$(uname -r)" "$(uname -v)" "$(stat -c %s "$btf")" > "$out/scan.min.btf.key"
else
  rm -f "$out/scan.min.btf.tmp"
fi

node scripts/gen-layout.mjs "$out/trace.bpf.o" "$out/scan.bpf.o" "$out/reap.bpf.o" > src/generated/layout.ts.tmp
mv src/generated/layout.ts.tmp src/generated/layout.ts
