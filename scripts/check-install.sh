#!/usr/bin/env bash
# `cargo install --locked --path .` into a temporary root, then the installed
# `wspush --version` must print this crate's version and the git commit of HEAD.
# (cargo install --path builds in this checkout's target/, with the release profile.)
set -euo pipefail
cd "$(dirname "$0")/.."

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
cargo install --locked --path . --root "$root"
out=$("$root/bin/wspush" --version)
echo "installed: $out"

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
want="wspush $version (commit $commit)"
[ "$out" = "$want" ] || { echo "check-install: expected '$want', got '$out'" >&2; exit 1; }
echo "check-install: ok"
