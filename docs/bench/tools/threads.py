#!/usr/bin/env python3
"""threads.py OUT THREADS: the validators' CPU per committed transaction in each step of a
bench run (OUT/results.json), by thread name (threads.sh's samples in THREADS), in us/tx.

Each thread group's share of the validators' ticks between the first and the last sample
labelled with the step (5 s apart; the step's signing, when the validators idle, and its
drain included; a thread that ended before the last sample is left out) times the validators' CPU per transaction that results.json measured over
the step's window: an estimate of where that CPU went.
"""
import collections
import json
import os
import sys

out, path = sys.argv[1], sys.argv[2]
results = json.load(open(os.path.join(out, "results.json")))
# samples[label][time][(pid, tid-name)] -> ticks, summed over threads of the same name
samples = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
for line in open(path):
    parts = line.split()
    if len(parts) != 5:
        continue
    t, label, pid, name, ticks = parts
    samples[label][int(t)][(pid, name)] += int(ticks)


def group(name):
    for prefix in ("rocksdb:low", "rocksdb:high", "tokio-rt-worker"):
        if name.startswith(prefix):
            return prefix
    return name


steps = results.get("steps", [])
names = set()
rows = []
for step in steps:
    label = step["label"].replace(" ", "_")
    by_time = samples.get(label)
    if not by_time or len(by_time) < 2:
        continue
    first, last = by_time[min(by_time)], by_time[max(by_time)]
    use = collections.Counter()
    for key, ticks in last.items():
        if key in first:
            use[group(key[1])] += ticks - first[key]
    names |= set(use)
    nodes_us = 1000 * sum(
        p["cpu_ms_per_tx"] for p in step["processes"] if p["name"].startswith("validator") and "/" not in p["name"]
    )
    rows.append((step["label"], step["committed_tx_per_s"], nodes_us, use))

names = sorted(names)
print("validators' us of CPU per committed transaction, by thread name (shares from 5 s samples)")
print("step".ljust(16), "tx/s".rjust(7), *[n[:15].rjust(16) for n in names], "total".rjust(8))
for label, rate, nodes_us, use in rows:
    total = max(sum(use.values()), 1)
    print(label.ljust(16), f"{rate:7.0f}",
          *[f"{nodes_us * use[n] / total:16.1f}" for n in names], f"{nodes_us:8.1f}")
