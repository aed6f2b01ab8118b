#!/bin/bash
cd "$(dirname "$0")/.."
# Cluster fanout: redis + node B (publish target) + generator on CPU 1, node A (subscribers) on CPU 0.
# bench/cluster.sh --connections 1000 --rate max --publishers 16 --messages 20000 --duration 15 --payload 128
# bench/cluster.sh --connections 10000 --rate 100 --messages 1000 --payload 128 --drain-timeout 60
# cluster.sh CASEARGS...  : redis + node B (publish) on CPU 1, node A (subscribers) on CPU 0
RP=$((6400+RANDOM%500)); PA=$((9800+RANDOM%100)); PB=$((9900+RANDOM%90))
DIR=$(mktemp -d)
taskset -c 1 redis-server --port $RP --bind 127.0.0.1 --save '' --appendonly no --dir $DIR >/dev/null 2>&1 &
RPID=$!
sleep 0.5
taskset -c 0 ./target/release/wspush serve --listen 127.0.0.1:$PA --quiet --no-console --broker redis://127.0.0.1:$RP </dev/null >/dev/null 2>&1 &
A=$!
taskset -c 1 ./target/release/wspush serve --listen 127.0.0.1:$PB --quiet --no-console --broker redis://127.0.0.1:$RP </dev/null >/dev/null 2>&1 &
B=$!
sleep 1
taskset -c 1 ./target/release/wspush bench fanout "$@" --url "ws://127.0.0.1:$PA/ws?channels=bench" --publish-url "http://127.0.0.1:$PB/api/publish" --server-pid $A --label wspush-cluster 2>&1 | tail -1 > $DIR/out.json
python3 -c "
import json
d=json.load(open('$DIR/out.json'))
lat=d.get('latency_us') or {}
print('lost',d.get('lost'),'ooo',d.get('out_of_order'),'del/s',d.get('deliveries_per_s'),'del/nodeA-cpu',d.get('deliveries_per_server_cpu_s'),'p50',lat.get('p50'),'p99',lat.get('p99'),'max',lat.get('max'))
"
cat $DIR/out.json >> bench/results/cluster.jsonl
kill $A $B $RPID; wait 2>/dev/null; rm -rf $DIR
