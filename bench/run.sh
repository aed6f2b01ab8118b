#!/usr/bin/env bash
# Runs the BENCHMARKS.md matrix: every case against wspush and the anchors, each run on a
# fresh server pinned to CPU 0 with the generator pinned to CPU 1; appends one JSON line
# per run to $OUT and prints the medians (bench/summarize.mjs).
#
#   bench/run.sh                                   # everything, 3 runs each
#   RUNS=1 SERVERS="wspush uws" CASES="fanout1k echo100" bench/run.sh
#   SERVERS="wspush-pusher soketi sockudo" CASES="fanout1k idle10k fanout10k" bench/run.sh
#   CASES="mid1k100 mid1k1500 fanout10k10 traffic10k" bench/run.sh   # issue 18's cases
#   SERVERS=wspush CASES="fanout1k fanout1k-sse fanout1k-deflate" bench/run.sh  # issue 15's
#   SERVERS="wspush" CASES="idle10k-wss fanout1k-wss" bench/run.sh      # wss (issue 18 item 5)
#
# A CASE-wss case is CASE over TLS: wspush serves a self-signed certificate made here with
# openssl (CN and SAN localhost, IP 127.0.0.1; in a temporary directory removed at exit)
# and the generator connects to wss://localhost:PORT/ws?channels=bench, publishes to
# https://localhost:PORT/api/publish and trusts that certificate (--ca-file). Only the
# wspush servers (wspush, wspush-lowmem) run the -wss cases.
#
# Servers: wspush (native /ws), wspush-lowmem (the same with mimalloc's lazy commit and
# immediate purge: MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0), ws and uws (bench/anchors), wspush-pusher (wspush's Pusher
# front: subscribe by Pusher protocol 7, publish by signed POST /apps/1/events), soketi
# and sockudo (bench/anchors/pusher, installed by its install.sh; same Pusher workload).
# echo100 is skipped for the Pusher servers (the protocol has no echo).
#
# Issue 15's transports (wspush and wspush-lowmem only; skipped for the others):
# fanout1k-sse and fanout1k-ndjson are fanout1k with Server-Sent Events (GET /sse) or
# NDJSON (GET /stream) subscribers; fanout1k-deflate is fanout1k with permessage-deflate
# (the server started with --compression on, the subscribers offering
# server_no_context_takeover: one deflate per message shared by all). Every fanout
# reports bytes on the wire per delivery, so fanout1k is the uncompressed figure beside it.
#
# Needs: a bench-bin build (the release code with line tables for perf; made here unless
# BIN is given), node 20 and `npm ci` in bench/anchors (done here).
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SERVERS=${SERVERS:-"wspush ws uws"}
CASES=${CASES:-"fanout1k idle10k idlemax fanout10k echo100"}
OUT=${OUT:-bench/results/$(date -u +%Y-%m-%d).jsonl}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
# BIN=path/to/wspush measures a binary built elsewhere (e.g. from a clean checkout of
# one commit while the work tree is being edited); otherwise the bench-bin build is made.
BIN=${BIN:-}
if [ -z "$BIN" ]; then
  cargo build --profile bench-bin --quiet
  BIN=target/bench-bin/wspush
fi
# GEN=path/to/wspush runs the generator from another build than the server (e.g. a
# server built before `wspush bench` learnt wss://).
GEN=${GEN:-$BIN}
# The Node anchors need their modules (not when only wspush is measured).
if [ ! -d bench/anchors/node_modules ] && [[ " $SERVERS " =~ \ (ws|uws)\  ]]; then
  (cd bench/anchors && npm ci --no-audit --no-fund --silent)
fi
mkdir -p "$(dirname "$OUT")"
# The certificate of the -wss cases.
CERT_DIR=$(mktemp -d)
trap 'rm -rf "$CERT_DIR"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$CERT_DIR/key.pem" -out "$CERT_DIR/cert.pem" 2>/dev/null
# How this kernel accounts softirq time (the bench splits it out of the server's CPU).
SOFTIRQ=charged
if zcat /proc/config.gz 2>/dev/null | grep -q '^CONFIG_IRQ_TIME_ACCOUNTING=y'; then
  SOFTIRQ=separate
fi

# start_server NAME CASE: starts it pinned; sets PID and ADDR.
start_server() {
  local log
  log=$(mktemp)
  local extra=()
  case $2 in
    echo100) extra=(--upstream echo) ;;
    *-deflate) extra=(--compression on) ;;
  esac
  is_wss "$2" && extra+=(--tls-cert "$CERT_DIR/cert.pem" --tls-key "$CERT_DIR/key.pem")
  case $1 in
    wspush)
      taskset -c "$SERVER_CPU" "$BIN" serve --listen 127.0.0.1:9100 --quiet --no-console \
        "${extra[@]}" </dev/null >"$log" 2>&1 &
      ;;
    wspush-lowmem)
      # wspush with mimalloc told to commit arena memory lazily (wspush's default since
      # issue 18) and give freed pages back at once (its default: after 1 s).
      MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0 \
        taskset -c "$SERVER_CPU" "$BIN" serve --listen 127.0.0.1:9106 --quiet --no-console \
        "${extra[@]}" </dev/null >"$log" 2>&1 &
      ;;
    wspush-pusher)
      taskset -c "$SERVER_CPU" "$BIN" serve --listen 127.0.0.1:9103 --quiet --no-console \
        --pusher-app 1:app-key:app-secret </dev/null >"$log" 2>&1 &
      ;;
    soketi) taskset -c "$SERVER_CPU" bench/anchors/pusher/start.sh soketi 9104 </dev/null >"$log" 2>&1 & ;;
    sockudo) taskset -c "$SERVER_CPU" bench/anchors/pusher/start.sh sockudo 9105 </dev/null >"$log" 2>&1 & ;;
    ws) taskset -c "$SERVER_CPU" node bench/anchors/ws-server.mjs 9101 </dev/null >"$log" 2>&1 & ;;
    uws) taskset -c "$SERVER_CPU" node bench/anchors/uws-server.mjs 9102 </dev/null >"$log" 2>&1 & ;;
    *) echo "unknown server $1" >&2; exit 64 ;;
  esac
  PID=$!
  LAUNCHER=$PID
  for _ in $(seq 300); do
    ADDR=$(sed -n 's#^listening on https\{0,1\}://##p' "$log" | head -1)
    [ -n "$ADDR" ] && break
    sleep 0.1
  done
  [ -n "$ADDR" ] || { echo "$1 did not start:" >&2; cat "$log" >&2; kill "$PID" 2>/dev/null; exit 1; }
  # A launcher script's server is the process listening on the port: measure that one.
  local listener
  listener=$(ss -ltnpH "sport = :${ADDR##*:}" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
  [ -n "$listener" ] && PID=$listener
  rm -f "$log"
}

stop_server() {
  kill "$PID" "$LAUNCHER" 2>/dev/null || true
  wait "$LAUNCHER" 2>/dev/null || true
  while kill -0 "$PID" 2>/dev/null; do sleep 0.1; done
}

# is_pusher NAME: the server speaks only the Pusher protocol.
is_pusher() {
  case $1 in wspush-pusher|soketi|sockudo) return 0 ;; *) return 1 ;; esac
}

# only_wspush CASE: the case measures a wspush transport the anchors do not have.
only_wspush() {
  case $1 in *-sse|*-ndjson|*-deflate) return 0 ;; *) return 1 ;; esac
}

# is_wss CASE: the case runs over TLS.
is_wss() {
  case $1 in *-wss) return 0 ;; *) return 1 ;; esac
}

# target_args NAME CASE: how the generator reaches this server.
target_args() {
  local sub=()
  if is_wss "$2"; then
    echo "--url wss://localhost:${ADDR##*:}/ws?channels=bench --ca-file $CERT_DIR/cert.pem"
    case $2 in
      idle*) ;;
      *) echo "--publish-url https://localhost:${ADDR##*:}/api/publish" ;;
    esac
    return
  fi
  if is_pusher "$1"; then
    echo "--server $ADDR --protocol pusher"
    return
  fi
  case $1 in
    wspush|wspush-lowmem) sub=(--server "$ADDR") ;;
    *) sub=(--url "ws://$ADDR/ws" --publish-url "http://$ADDR/publish" --publish-format raw) ;;
  esac
  # echo does not publish; idle does not either.
  case $2 in
    idle*|echo*) [[ $1 = wspush || $1 = wspush-lowmem ]] && sub=(--server "$ADDR") || sub=(--url "ws://$ADDR/ws") ;;
  esac
  echo "${sub[@]}"
}

case_args() {
  case $1 in
    *-wss) case_args "${1%-wss}" ;;
    fanout1k) echo "fanout --connections 1000 --rate max --publishers 16 --messages 20000 --duration 15 --payload 128 --drain-timeout 30" ;;
    # issue 15: the same over SSE / NDJSON streams, and with permessage-deflate.
    fanout1k-sse) echo "$(case_args fanout1k) --sse" ;;
    fanout1k-ndjson) echo "$(case_args fanout1k) --ndjson" ;;
    fanout1k-deflate) echo "$(case_args fanout1k) --compression shared" ;;
    idle10k) echo "idle --connections 10000 --settle 5" ;;
    idlemax) echo "idle --connections 19900 --settle 5 --source-ips 4" ;;
    fanout10k) echo "fanout --connections 10000 --rate 100 --messages 1000 --payload 128 --drain-timeout 60" ;;
    echo100) echo "echo --clients 100 --duration 10 --payload 128" ;;
    # issue 18: mid rates, where nothing is saturated (latency from the intended send).
    mid1k100) echo "fanout --connections 1000 --rate 100 --messages 1500 --duration 30 --payload 128 --drain-timeout 30" ;;
    mid1k1500) echo "fanout --connections 1000 --rate 1500 --messages 22500 --duration 30 --payload 128 --drain-timeout 30" ;;
    fanout10k10) echo "fanout --connections 10000 --rate 10 --messages 300 --duration 60 --payload 128 --drain-timeout 60" ;;
    # issue 18: idle memory, then memory after 1,000 messages once idle again.
    traffic10k) echo "idle --connections 10000 --settle 5 --messages 1000 --rate 100 --payload 128" ;;
    *) echo "unknown case $1" >&2; exit 64 ;;
  esac
}

# cpu_ticks N: "busy softirq" clock ticks of CPU N so far (busy includes softirq, which
# this kernel also charges to the process it interrupted).
cpu_ticks() {
  awk -v cpu="cpu$1" '$1 == cpu { print $2 + $3 + $4 + $7 + $8 + $9, $8 }' /proc/stat
}
# secs TICKS: clock ticks (USER_HZ = 100) as seconds.
secs() {
  awk -v t="$1" 'BEGIN { printf "%.2f", t / 100 }'
}
# proc_ticks PID: utime + stime of a process so far.
proc_ticks() {
  # 0 when the process is gone (a server that died mid-run: the run's JSON says so).
  { sed 's/.*) //' "/proc/$1/stat" 2>/dev/null || echo "0 0 0 0 0 0 0 0 0 0 0 0 0"; } |
    awk '{ print $12 + $13 }'
}
# wait_quiet: waits (at most QUIET_WAIT seconds) until the machine is nearly idle, so a
# build elsewhere does not share the pinned cores with the run.
QUIET_WAIT=${QUIET_WAIT:-120}
wait_quiet() {
  local end=$((SECONDS + QUIET_WAIT)) a b
  while [ $SECONDS -lt $end ]; do
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
    sleep 1
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
    [ $((b - a)) -le 10 ] && return 0 # under 5% of two cores
  done
  echo "machine still busy after ${QUIET_WAIT}s; running anyway" >&2
}

# wait_timewait: waits (at most 70 s) for the TIME_WAIT sockets of earlier runs to expire:
# a new connection that lands on one of their 4-tuples has its SYN dropped (PAWS) and
# retried a second later, which ruins the connect rate of a big idle run.
# TIMEWAIT_MAX: how many may remain (raise it for runs far below the ephemeral port range).
TIMEWAIT_MAX=${TIMEWAIT_MAX:-1000}
wait_timewait() {
  for _ in $(seq 70); do
    [ "$(ss -tan state time-wait | wc -l)" -lt "$TIMEWAIT_MAX" ] && return 0
    sleep 1
  done
}

for case_name in $CASES; do
  for run in $(seq "$RUNS"); do
    for server in $SERVERS; do
      if [ "$case_name" = echo100 ] && is_pusher "$server"; then continue; fi
      if { only_wspush "$case_name" || is_wss "$case_name"; } && [[ $server != wspush && $server != wspush-lowmem ]]; then
        continue
      fi
      wait_timewait
      wait_quiet
      start_server "$server" "$case_name"
      read -r s_busy0 s_soft0 < <(cpu_ticks "$SERVER_CPU")
      read -r c_busy0 _ < <(cpu_ticks "$CLIENT_CPU")
      p0=$(proc_ticks "$PID")
      # shellcheck disable=SC2046
      line=$(taskset -c "$CLIENT_CPU" "$GEN" bench $(case_args "$case_name") \
        $(target_args "$server" "$case_name") --server-pid "$PID" --server-cpu "$SERVER_CPU" \
        --softirq-accounting "$SOFTIRQ" --label "$server" \
        | tee /dev/stderr | tail -1) || line='{"error":"bench failed"}'
      p1=$(proc_ticks "$PID")
      read -r s_busy1 s_soft1 < <(cpu_ticks "$SERVER_CPU")
      read -r c_busy1 _ < <(cpu_ticks "$CLIENT_CPU")
      stop_server
      # Seconds of: the server process, everything else on its core (other processes),
      # softirq on its core (loopback receive work; mostly inside the server's own time),
      # and everything on the generator's core.
      echo "{\"case\":\"$case_name\",\"server\":\"$server\",\"run\":$run,\
\"server_process_cpu_s\":$(secs $((p1 - p0))),\
\"server_core_others_s\":$(secs $((s_busy1 - s_busy0 - p1 + p0))),\
\"server_core_softirq_s\":$(secs $((s_soft1 - s_soft0))),\
\"client_core_busy_s\":$(secs $((c_busy1 - c_busy0))),\"result\":$line}" >>"$OUT"
      sleep 2
    done
  done
done

node bench/summarize.mjs "$OUT"
