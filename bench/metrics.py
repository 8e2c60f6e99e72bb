#!/usr/bin/env python3
"""Figures of a load step from snapshots of CallState's Prometheus endpoint (GET /metrics on the admin listener).

A SNAPSHOT is a file holding one scrape, or several files joined by commas (the silos of a cluster): their samples add up.
A missing or empty file gives "n/a" (the process did not answer).

    bench/metrics.py value SNAPSHOT METRIC [label=value ...]
        the sum of METRIC's samples whose labels match, e.g. the heap size after the last GC
    bench/metrics.py delta BEFORE AFTER METRIC [label=value ...] [--per N] [--scale K]
        how much a counter moved between two snapshots, times K, divided by N (rounded)
    bench/metrics.py quantiles BEFORE AFTER HISTOGRAM [label=value ...]
        "p50_ms,p99_ms" of what HISTOGRAM (seconds) recorded in between: bucket upper bounds, in milliseconds
    bench/metrics.py ratio BEFORE AFTER NUMERATOR DENOMINATOR
        delta of NUMERATOR over delta of DENOMINATOR, one decimal (writes per batch)

Metric names are the Prometheus ones (docs/operations.md, "Metrics"), e.g. callstate_sipedge_admission_duration_seconds,
dotnet_gc_heap_total_allocated_bytes_total, dotnet_gc_collections_total gc_heap_generation=gen0.
"""
import math
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?\s*$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:\\.|[^"\\])*)"')


def load(snapshot):
    """Every sample of the files in SNAPSHOT as (name, labels, value); None when one is missing or empty."""
    samples = []
    for path in snapshot.split(","):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return None
        if not text.strip():
            return None
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            if m:
                labels = dict(LABEL.findall(m.group(2) or ""))
                samples.append((m.group(1), labels, float(m.group(3))))
    return samples


def total(samples, name, wanted):
    return sum(v for n, labels, v in samples if n == name and all(labels.get(k) == w for k, w in wanted.items()))


def buckets(samples, name, wanted):
    """Cumulative bucket counts by upper bound (seconds) of histogram NAME, summed over matching series."""
    result = {}
    for n, labels, v in samples:
        if n == name + "_bucket" and all(labels.get(k) == w for k, w in wanted.items()):
            bound = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            result[bound] = result.get(bound, 0) + v
    return result


def parse_args(args):
    wanted, options, rest = {}, {}, []
    i = 0
    while i < len(args):
        if args[i].startswith("--"):
            options[args[i][2:]] = float(args[i + 1])
            i += 2
            continue
        if "=" in args[i]:
            k, v = args[i].split("=", 1)
            wanted[k] = v
        else:
            rest.append(args[i])
        i += 1
    return rest, wanted, options


def main(argv):
    command, args = argv[1], argv[2:]
    rest, wanted, options = parse_args(args)
    if command == "value":
        samples = load(rest[0])
        print("n/a" if samples is None else f"{total(samples, rest[1], wanted):.0f}")
    elif command == "delta":
        before, after = load(rest[0]), load(rest[1])
        if before is None or after is None:
            print("n/a")
            return
        moved = (total(after, rest[2], wanted) - total(before, rest[2], wanted)) * options.get("scale", 1)
        print(f"{moved / options.get('per', 1):.0f}")
    elif command == "quantiles":
        before, after = load(rest[0]), load(rest[1])
        if before is None or after is None:
            print("n/a,n/a")
            return
        b, a = buckets(before, rest[2], wanted), buckets(after, rest[2], wanted)
        bounds = sorted(a)
        cumulative = [a[x] - b.get(x, 0) for x in bounds]
        count = cumulative[-1] if cumulative else 0
        if count <= 0:
            print("n/a,n/a")
            return
        out = []
        for q in (0.5, 0.99):
            rank = math.ceil(q * count)
            # The first bound whose cumulative count reaches the rank; past the last finite bound, that bound.
            bound = next(x for x, c in zip(bounds, cumulative) if c >= rank)
            if math.isinf(bound):
                bound = bounds[-2] if len(bounds) > 1 else bound
            out.append(f"{bound * 1000:.3f}")
        print(",".join(out))
    elif command == "ratio":
        before, after = load(rest[0]), load(rest[1])
        if before is None or after is None:
            print("n/a")
            return
        num = total(after, rest[2], wanted) - total(before, rest[2], wanted)
        den = total(after, rest[3], wanted) - total(before, rest[3], wanted)
        print(f"{num / max(1, den):.1f}")
    else:
        sys.exit(f"unknown command {command}: value, delta, quantiles or ratio")


if __name__ == "__main__":
    main(sys.argv)
