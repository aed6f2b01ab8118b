#!/usr/bin/env bash
# Starts a Pusher-protocol benchmark anchor in the foreground on 127.0.0.1:PORT with one
# app (id 1, key app-key, secret app-secret, client events on, limits off; see README.md)
# and prints `listening on http://127.0.0.1:PORT` once the port accepts connections.
#
#   bench/anchors/pusher/start.sh soketi PORT
#   bench/anchors/pusher/start.sh sockudo PORT
#
# The server's own output goes to stderr; stdout carries only that line. SIGTERM/SIGINT
# to this script stop the server (and this script exits when the server does).
# Install both first with install.sh. SOCKUDO_BIN overrides the sockudo binary;
# RUST_LOG (default warn) sets sockudo's log level.
set -euo pipefail

usage() { echo "usage: $0 soketi|sockudo PORT" >&2; exit 64; }
[ $# -eq 2 ] || usage
name=$1
port=$2
[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] || usage
dir=$(cd "$(dirname "$0")" && pwd)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_open "$port"; then
  echo "$0: 127.0.0.1:$port is already in use" >&2
  exit 1
fi

# 20,000 connections need more descriptors than the usual 1024/20000 default.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# A clean environment, so that generic variables (PORT, HOST, DEBUG, REDIS_URL, ...)
# of the caller cannot change the servers' configuration.
base_env=(env -i "PATH=$PATH" "HOME=${HOME:-/root}" "LANG=C.UTF-8")

case $name in
  soketi)
    main=$dir/node_modules/@soketi/soketi/bin/server.js
    [ -f "$main" ] || { echo "$0: soketi is not installed (run $dir/install.sh)" >&2; exit 1; }
    # SOKETI_METRICS_SERVER_PORT=0: soketi always opens its /usage+/metrics server; an
    # ephemeral port keeps it from clashing with anything.
    cd "$dir"
    "${base_env[@]}" SOKETI_PORT="$port" SOKETI_HOST=127.0.0.1 SOKETI_METRICS_SERVER_PORT=0 \
      node "$main" start --config="$dir/soketi.json" >&2 &
    ;;
  sockudo)
    bin=${SOCKUDO_BIN:-/opt/sockudo/bin/sockudo}
    [ -x "$bin" ] || { echo "$0: $bin not found (run $dir/install.sh)" >&2; exit 1; }
    # sockudo first reads ./config/config.toml if present; this directory has none.
    cd "$dir"
    "${base_env[@]}" SOCKUDO_BENCH_PORT="$port" RUST_LOG="${RUST_LOG:-warn}" \
      LOG_OUTPUT_FORMAT=human "$bin" --config "$dir/sockudo.toml" >&2 &
    ;;
  *) usage ;;
esac
child=$!

stop() {
  trap - TERM INT HUP
  kill -TERM "$child" 2>/dev/null || true
  wait "$child" 2>/dev/null || true
  exit 0
}
trap stop TERM INT HUP

for _ in $(seq 300); do
  if port_open "$port"; then
    echo "listening on http://127.0.0.1:$port"
    break
  fi
  if ! kill -0 "$child" 2>/dev/null; then
    wait "$child" || true
    echo "$0: $name exited before listening" >&2
    exit 1
  fi
  sleep 0.1
done
if ! port_open "$port"; then
  echo "$0: $name did not listen on 127.0.0.1:$port within 30 s" >&2
  kill -TERM "$child" 2>/dev/null || true
  exit 1
fi

set +e
wait "$child"
rc=$?
# wait returns early (>128) when a trapped signal arrives; stop() handles that case.
exit $rc
