#!/bin/bash
# 6 cluster nodes on one Redis, 17,000 idle subscribed connections each (102,000 total).
set -u
cd "$(dirname "$0")/.."
DIR=$(mktemp -d); RP=6501
redis-server --port $RP --bind 127.0.0.1 --save '' --appendonly no --dir $DIR >/dev/null 2>&1 &
RPID=$!; sleep 0.5
PIDS=(); PORTS=()
for i in 0 1 2 3 4 5; do
  P=$((9200+i)); PORTS+=($P)
  ./target/release/wspush serve --listen 127.0.0.1:$P --quiet --no-console --broker redis://127.0.0.1:$RP </dev/null >/dev/null 2>&1 &
  PIDS+=($!)
done
sleep 1
BPIDS=()
for i in 0 1 2 3 4 5; do
  ./target/release/wspush bench idle --server 127.0.0.1:${PORTS[$i]} --server-pid ${PIDS[$i]} --connections 17000 --settle 40 --source-ips 48 --label node$i > $DIR/idle$i.json 2>&1 &
  BPIDS+=($!)
  sleep 1
done
for p in "${BPIDS[@]}"; do wait $p; done
python3 - "$DIR" <<'PY'
import json,sys,glob
tot=0; kib=[]
for f in sorted(glob.glob(sys.argv[1]+'/idle*.json')):
    d=json.loads(open(f).read().strip().splitlines()[-1])
    tot+=d['open']; kib.append(d['kib_per_connection'])
    print(d['label'],'open',d['open'],'failed',d['connect_failed'],'KiB/conn',d['kib_per_connection'],'connects/s',d['connects_per_s'])
print('TOTAL open at once', tot)
PY
cat $DIR/idle*.json | grep '^{' >> bench/results/idle-cluster-100k.jsonl
kill ${PIDS[@]} $RPID; wait 2>/dev/null; rm -rf $DIR
