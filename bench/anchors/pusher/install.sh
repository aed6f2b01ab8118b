#!/usr/bin/env bash
# Installs the Pusher-protocol benchmark anchors; skips what is already installed.
#
#   bench/anchors/pusher/install.sh            # both
#   bench/anchors/pusher/install.sh soketi     # only soketi (npm, seconds)
#   bench/anchors/pusher/install.sh sockudo    # only sockudo (cargo install, long build)
#
# soketi:  npm ci here (package.json pins @soketi/soketi 1.6.1; package-lock.json is
#          committed; uWebSockets.js is overridden to a registry package, see README.md).
# sockudo: cargo install sockudo 5.2.0 --locked into /opt/sockudo (SOCKUDO_ROOT overrides),
#          built at nice 19 (about 11 min on 2 cores). Needs Rust >= 1.95 (the crate's
#          rust-version); installs the Debian build packages it needs when missing.
set -euo pipefail
dir=$(cd "$(dirname "$0")" && pwd)
SOKETI_VERSION=1.6.1
SOCKUDO_VERSION=5.2.0
SOCKUDO_ROOT=${SOCKUDO_ROOT:-/opt/sockudo}
what=${1:-all}

install_soketi() {
  local installed=""
  if [ -f "$dir/node_modules/@soketi/soketi/package.json" ]; then
    installed=$(node -p "require('$dir/node_modules/@soketi/soketi/package.json').version")
  fi
  if [ "$installed" = "$SOKETI_VERSION" ] &&
    (cd "$dir" && node -e "require('uWebSockets.js')" 2>/dev/null); then
    echo "soketi $SOKETI_VERSION already installed in $dir/node_modules"
    return
  fi
  echo "installing soketi $SOKETI_VERSION (npm ci in $dir)"
  (cd "$dir" && npm ci --no-audit --no-fund)
  (cd "$dir" && node -e "require('uWebSockets.js')")
}

install_sockudo() {
  if [ -x "$SOCKUDO_ROOT/bin/sockudo" ] &&
    "$SOCKUDO_ROOT/bin/sockudo" --version 2>/dev/null | grep -qx "sockudo $SOCKUDO_VERSION"; then
    echo "sockudo $SOCKUDO_VERSION already installed in $SOCKUDO_ROOT"
    return
  fi
  # Debian packages the build needs: a C/C++ toolchain (aws-lc-sys, zstd-sys,
  # tikv-jemalloc-sys), cmake (a direct dependency of the crate), and OpenSSL headers with
  # pkg-config (openssl-sys).
  local pkgs=(build-essential cmake pkg-config libssl-dev) missing=()
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  echo "installing sockudo $SOCKUDO_VERSION into $SOCKUDO_ROOT (cargo install, a long build)"
  local start=$SECONDS
  nice -n 19 cargo install sockudo --version "$SOCKUDO_VERSION" --locked --root "$SOCKUDO_ROOT"
  echo "sockudo built in $((SECONDS - start)) s"
}

case $what in
  all) install_soketi; install_sockudo ;;
  soketi) install_soketi ;;
  sockudo) install_sockudo ;;
  *) echo "usage: $0 [all|soketi|sockudo]" >&2; exit 64 ;;
esac
