#!/usr/bin/env bash
# Pusher compatibility with real clients: pusher-js 8, Laravel Echo 2 and the pusher Node
# SDK 5 plus pusher-js's web build in headless Chromium (tests/pusher-js, node:test), and
# the pusher Python SDK 3 (tests/pusher-python, unittest in a venv made here). Each suite
# starts the built binary on 127.0.0.1:0. Needs node/npm, python3 with venv, chromium
# (scripts/test-all.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

cargo build --locked --bins
export WSPUSH_BIN="$PWD/target/debug/wspush"

say "pusher-js (node and Chromium), Laravel Echo and the pusher Node SDK"
(cd tests/pusher-js && npm ci --no-audit --no-fund && npm test)

say "the pusher Python SDK"
venv=tests/pusher-python/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" || {
  echo "python3 -m venv failed: install python3-venv" >&2
  exit 1
}
"$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/pusher-python/requirements.txt
"$venv/bin/python" tests/pusher-python/test_pusher.py
