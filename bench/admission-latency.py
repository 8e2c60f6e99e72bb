#!/usr/bin/env python3
"""Admission p50/p99 over one load step, from two snapshots of an edge's GET /api/admission/latency.

    bench/admission-latency.py BEFORE.json AFTER.json   ->  "p50_ms,p99_ms" (bucket upper bounds, within 12.5%)
    bench/admission-latency.py BEFORE.json AFTER.json commitDuration
        the same for one histogram inside the snapshots (GET /api/storage/commits: commitDuration, queueWait)

Prints "n/a,n/a" when a snapshot is missing or no admission happened in between.
"""
import json
import sys


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def percentile(bounds, counts, q):
    total = sum(counts)
    rank = -(-q * total // 1)  # ceiling
    seen = 0
    for bound, count in zip(bounds, counts):
        seen += count
        if seen >= rank:
            return bound
    return bounds[-1]


before, after = load(sys.argv[1]), load(sys.argv[2])
if len(sys.argv) > 3 and before and after:
    before, after = before.get(sys.argv[3]), after.get(sys.argv[3])
if not before or not after:
    print("n/a,n/a")
    sys.exit(0)
delta = [a - b for a, b in zip(after["counts"], before["counts"])]
if sum(delta) == 0:
    print("n/a,n/a")
    sys.exit(0)
bounds = after["upperMicros"]
print(",".join(f"{percentile(bounds, delta, q) / 1000:.3f}" for q in (0.5, 0.99)))
