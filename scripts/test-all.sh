#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with the Rust toolchain:
# installs what the tests need (chromium, redis-server, node/npm, playwright-core,
# the Autobahn|Testsuite venv, cargo-deb, cargo-fuzz), then runs lints, the layering
# check, Rust tests, browser tests, Autobahn, the fuzz targets, and checks the install
# paths (cargo install, the Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -q "${need[@]}"
fi

say "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings

say "module layering (no import cycles, no front below the fronts, no file over 600 lines)"
python3 scripts/layers.py

say "Rust tests (real server, real sockets on 127.0.0.1)"
cargo build --locked --bins
cargo test --locked

say "wspush.js library tests (node:test against the real server)"
(cd tests/js && npm ci --no-audit --no-fund && WSPUSH_BIN="$PWD/../../target/debug/wspush" npm test)

say "browser tests (headless Chromium via playwright-core)"
(cd tests/browser && npm ci --no-audit --no-fund && WSPUSH_BIN="$PWD/../../target/debug/wspush" npm test)

say "Pusher clients: pusher-js (node + Chromium), Laravel Echo, Node and Python SDKs"
scripts/test-pusher.sh

say "Autobahn|Testsuite against wspush serve --upstream echo"
scripts/autobahn.sh

say "fuzzing: every parser's target for 30 s (crashes fail the run)"
scripts/fuzz.sh 30

say "install: cargo install --locked --path . into a temporary root, wspush --version"
scripts/check-install.sh

say "Debian package: cargo deb, its contents, systemd-analyze verify, the packaged binary"
scripts/check-package.sh

say "all tests passed"
