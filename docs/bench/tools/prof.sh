#!/bin/bash
# prof.sh BIN OUT RATE: a bench step of DUR (40s) with perf for 8 s from AT seconds (20) after
# the step's first progress line (the load has started).
BIN=$1; OUT=$2; RATE=$3
T=${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}
rm -rf "$OUT"
"$BIN" bench --chaincode "$T/release/examples/asset-transfer" --out "$OUT" --rate "$RATE" --duration "${DUR:-40s}" --warmup 3s > "$OUT.log" 2>&1 &
B=$!
until grep -qE "^ +[0-9]+ s +sent" "$OUT.log" 2>/dev/null || ! kill -0 $B 2>/dev/null; do sleep 0.2; done
sleep "${AT:-20}"
perf record -a -F 499 -g --call-graph dwarf,16384 -o /dev/shm/perf.data -- sleep 8 > /dev/null 2>&1
wait $B
echo "bench exit $?"
perf script -F comm,pid,tid,time,ip,sym,dso -i /dev/shm/perf.data > "/dev/shm/$(basename "$OUT").perf.txt" 2>/dev/null
rm -f /dev/shm/perf.data
python3 "$(dirname "$0")/summary.py" "$OUT"
