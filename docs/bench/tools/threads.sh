#!/bin/bash
# threads.sh LOG OUT BENCH_PID: while the bench BENCH_PID runs (writing LOG), every 5 s
# appends each of its validators' threads' CPU ticks to OUT, one line per thread: seconds
# since start, the label of the bench's latest step, pid, thread name, utime+stime (clock
# ticks). Read with threads.py.
LOG=$1; OUT=$2; BENCH=$3
: > "$OUT"
start=$(date +%s)
while kill -0 "$BENCH" 2> /dev/null; do
  now=$(( $(date +%s) - start ))
  label=$(grep -a "^step " "$LOG" 2> /dev/null | tail -1 | sed 's/^step //; s/: signing.*//' | tr ' ' '_')
  # The validators are the bench's own children (their chaincode are theirs).
  for pid in $(pgrep -P "$BENCH" -f "node start"); do
    for task in /proc/$pid/task/*; do
      stat=$(cat "$task/stat" 2>/dev/null) || continue
      name=$(cat "$task/comm" 2>/dev/null | tr ' ' '_')
      # Fields after the ")" that closes the name: utime is the 12th, stime the 13th.
      ticks=$(echo "${stat##*) }" | awk '{print $12 + $13}')
      echo "$now ${label:-none} $pid $name $ticks" >> "$OUT"
    done
  done
  sleep 5
done
