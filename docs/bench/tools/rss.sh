#!/bin/bash
# rss.sh BIN OUT: 120 s at 6,000 tx/s; every validator's VmRSS every 10 s from the first progress line.
BIN=$1; OUT=$2
bash "$(dirname "$0")/ab.sh" "$BIN" "$OUT" 6000 120s > "$OUT.ab" 2>&1 &
until grep -q " s  sent" "$OUT.log" 2>/dev/null; do sleep 1; done
echo "every node's VmRSS (kB) every 10 s from the step's first progress line ($(basename $BIN), --rate 6000 --duration 120s)" > "$OUT.rss"
for t in $(seq 0 10 120); do
  line="$t"
  for pid in $(pgrep -f "node start"); do
    line="$line $(awk '/VmRSS/{print $2}' /proc/$pid/status 2>/dev/null)"
  done
  echo "$line" >> "$OUT.rss"
  sleep 10
done
wait
cat "$OUT.ab"
