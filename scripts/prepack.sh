#!/usr/bin/env bash
# npm's prepack step (npm pack, npm publish): makes what the tarball ships
# current, so that the machine that installs it needs no compiler. The BPF
# objects are built here once (CO-RE: one build for every kernel with BTF) and
# embedded in the addon, which is built here for linux-x64 (N-API: one build
# for every Node the package supports); then the TypeScript. Each step is
# incremental where its tool is (build-bpf.sh, make), so a pack after a build
# only checks. Needs the full toolchain (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "prepack: $*" >&2; }

# The BPF objects are built for x86 (-D__TARGET_ARCH_x86) and package.json says cpu x64.
[ "$(uname -m)" = x86_64 ] || { say "the package's prebuilt addon is linux-x64; this machine is $(uname -m)"; exit 69; }

node_gyp() {
  if [ -n "${npm_config_node_gyp:-}" ]; then node "$npm_config_node_gyp" "$@"; else node-gyp "$@"; fi
}

bash scripts/build-bpf.sh
[ -f build/Makefile ] || node_gyp configure >/dev/null
node_gyp build >/dev/null
npm run --silent build:ts

# The addon the tarball ships must load and agree with the generated layout
# and with the BPF objects just built (a stale build would decode garbage).
built=$(node -e "process.stdout.write(require('./dist/src/kernel/addon').loadAddon().programsId())")
want=$(sed -n 's/^#define SL_PROGRAMS_ID "\(.*\)"$/\1/p' bpf/.output/programs-id.h)
[ "$built" = "$want" ] || { say "build/Release/sockleak.node embeds BPF objects $built, bpf/.output has $want"; exit 70; }
say "addon $(sha256sum build/Release/sockleak.node | cut -c1-16), BPF objects $want"
