#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (RFC 6455 conformance) against `wspush serve --upstream echo`
# and fails unless 0 cases FAILED. Report: ${OUT:-target/autobahn}/index.html.
# The runner is tools/autobahn (the suite ported to Python 3); its first run builds a venv
# at ${AUTOBAHN_VENV:-target/autobahn-venv} from PyPI (and installs python3-venv if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
AUTOBAHN="${AUTOBAHN:-tools/autobahn}"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-$PWD/target/autobahn-venv}"
OUT="${OUT:-target/autobahn}"
cargo build --release --locked --bin wspush
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The suite sends messages up to 16 MiB (cases 9.*); the default limit is 1 MiB.
target/release/wspush serve --listen "127.0.0.1:$port" --upstream echo --quiet --no-console \
  --max-message-size 16777216 --queue-max-bytes 67108864 </dev/null >"$OUT.server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
rm -rf "$OUT"
"$AUTOBAHN/run.sh" "ws://127.0.0.1:$port/ws" "" "$OUT" | tee "$OUT.summary.txt"
grep -qE ", FAILED 0$" "$OUT.summary.txt" || { echo "Autobahn: some cases FAILED" >&2; exit 1; }
grep -q "cases run: 301 of 301" "$OUT.summary.txt" || { echo "Autobahn: cases missing" >&2; exit 1; }
