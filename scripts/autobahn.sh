#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (RFC 6455 conformance) against `wspush serve --upstream echo`
# and fails unless 0 cases FAILED: the default set (1.*-10.*), then the permessage-deflate
# cases 12.* and 13.* (RFC 7692) against a second server with `--compression on`, as two
# shards run side by side (AUTOBAHN_DEFLATE=0 skips them).
# Reports: ${OUT:-target/autobahn}/index.html, and $OUT-deflate0/ and $OUT-deflate1/ for
# the deflate shards. The runner is tools/autobahn (the suite ported to Python 3); its first run
# builds a venv at ${AUTOBAHN_VENV:-target/autobahn-venv} from PyPI (and installs
# python3-venv if needed). WSPUSH=path WSPUSH_PREBUILT=1 tests that binary without a build.
set -euo pipefail
cd "$(dirname "$0")/.."
AUTOBAHN="${AUTOBAHN:-tools/autobahn}"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-$PWD/target/autobahn-venv}"
OUT="${OUT:-target/autobahn}"
WSPUSH="${WSPUSH:-target/release/wspush}"
[[ -n "${WSPUSH_PREBUILT:-}" ]] || cargo build --release --locked --bin wspush
start=$(date +%s)

servers=()
trap 'for s in "${servers[@]}"; do kill "$s" 2>/dev/null || true; done' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# serve LOG ARGS...: starts a server, sets $port once it accepts connections.
serve() {
  local log=$1; shift
  port=$(free_port)
  # The suite sends messages up to 16 MiB (cases 9.*); the default limit is 1 MiB.
  "$WSPUSH" serve --listen "127.0.0.1:$port" --upstream echo --quiet --no-console \
    --max-message-size 16777216 --queue-max-bytes 67108864 "$@" </dev/null >"$log" 2>&1 &
  servers+=($!)
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
}
# check SUMMARY CASES: 0 FAILED and every requested case run.
check() {
  grep -qE ", FAILED 0$" "$1" || { echo "Autobahn: some cases FAILED ($1)" >&2; exit 1; }
  grep -q "cases run: $2 of $2" "$1" || { echo "Autobahn: cases missing ($1)" >&2; exit 1; }
}

serve "$OUT.server.log"
rm -rf "$OUT"
"$AUTOBAHN/run.sh" "ws://127.0.0.1:$port/ws" "" "$OUT" | tee "$OUT.summary.txt"
check "$OUT.summary.txt" 301

if [[ "${AUTOBAHN_DEFLATE:-1}" != 0 ]]; then
  serve "$OUT-deflate.server.log" --compression on
  # Two shards, one wstest each (the Python client is the slower side), balanced by
  # measured time (12.2 and 12.3 carry the large data sets): 72 and 144 cases.
  shards=("12.2.*,12.3.*,12.4.*,13.1.*" "12.1.*,12.5.*,13.2.*,13.3.*,13.4.*,13.5.*,13.6.*,13.7.*")
  counts=(72 144)
  pids=()
  for i in 0 1; do
    "$AUTOBAHN/run.sh" "ws://127.0.0.1:$port/ws" "${shards[$i]}" "$OUT-deflate$i" \
      >"$OUT-deflate$i.summary.txt" 2>&1 &
    pids+=($!)
  done
  for i in 0 1; do
    wait "${pids[$i]}" || { cat "$OUT-deflate$i.summary.txt" >&2; exit 1; }
    cat "$OUT-deflate$i.summary.txt"
    check "$OUT-deflate$i.summary.txt" "${counts[$i]}"
  done
fi
echo "Autobahn: all sets passed in $(( $(date +%s) - start ))s"
