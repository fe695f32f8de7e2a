#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine, as root: system packages,
# npm dependencies, BPF objects, the native addon (node-gyp) and the TypeScript
# build. Safe to run again: it installs only what is missing and rebuilds
# only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "setup: $*" >&2; }

# npm test's runner flags (--test-force-exit) need Node 20.14; package.json's engines says the same.
if ! node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 20 || (a === 20 && b >= 14) ? 0 : 1)' 2>/dev/null; then
  say "need Node >= 20.14 (found $(node --version 2>/dev/null || echo none)); get it from NodeSource (https://github.com/nodesource/distributions: Node 20 or 22 for Debian) or nvm (nvm install 22)"
  exit 78
fi

# Build tools and the libbpf headers; iproute2 (ss) and util-linux (setpriv, nsenter) for tests;
# prometheus (Prometheus 2.42 and promtool) for the metrics, rules and live-scrape tests;
# protobuf-compiler: test/proto.test.ts compiles the schema with its own protoc example;
# openssl (throwaway certificates) and systemd (systemd-analyze verify of deploy/systemd) for the deploy tests;
# binutils (readelf, addr2line, c++filt) names creator stacks (docs/stacks.md); gcc and golang-go
# build test/stacks.test.ts's C and Go leakers.
packages=(clang llvm libbpf-dev bpftool libelf-dev zlib1g-dev pkg-config make g++ gcc golang-go binutils python3 iproute2 util-linux procps prometheus protobuf-compiler openssl systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { say "need root to install: ${missing[*]}"; exit 77; }
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Installed for its binaries: the tests start their own Prometheus on an ephemeral 127.0.0.1 port.
  # The packaged service, which apt starts where systemd runs, would listen on *:9090: stop it.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
fi

# npm ci runs the package's install script (BPF objects + node-gyp addon).
# Skip it when node_modules already matches the lockfile, and just rebuild.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "npm ci"
  npm ci --no-audit --no-fund
else
  say "node_modules up to date; building"
  npm run --silent build:bpf
  npm run --silent build:native >/dev/null
fi
npm run --silent build:ts
say "done: try 'bin/sockleak.js snapshot' or 'bin/sockleak.js features' as root"
