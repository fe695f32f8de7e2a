#!/usr/bin/env bash
# Freezes the wire schema of a release: copies proto/sockleak/ to
# proto/released/VERSION/ (with a buf.yaml making it a module of its own), the
# baseline `buf breaking` compares the working schema with from then on
# (test/proto.test.ts takes the highest version there). Run it once per
# release, before tagging, and commit the copy; a release never rewrites an
# earlier copy. Usage: scripts/release-proto.sh [VERSION] (default: package.json's).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-$(node -p 'require("./package.json").version')}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { echo "release-proto: VERSION must be MAJOR.MINOR.PATCH, got '$version'" >&2; exit 64; }
dest=proto/released/$version
[ ! -e "$dest" ] || { echo "release-proto: $dest exists; a released schema is never rewritten" >&2; exit 73; }
node_modules/.bin/buf lint
mkdir -p "$dest"
cp -r proto/sockleak "$dest/"
printf '# The schema as released in sockleak %s (scripts/release-proto.sh). Do not edit.\nversion: v2\n' "$version" > "$dest/buf.yaml"
echo "release-proto: $dest written; commit it" >&2
