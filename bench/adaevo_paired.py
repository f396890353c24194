#!/usr/bin/env python3
"""Paired difference of one method between two `ferrolab adaevo` runs on the same seeds.

Reads each run folder's metrics.jsonl (one row per method and seed), pairs the rows of
METHOD (default `adaevo`) by seed and prints, per key, B − A as mean ± sample std over seeds.

    python3 bench/adaevo_paired.py RUN_A RUN_B [--method adaevo] [--keys k1,k2,...]
"""

import argparse
import json
import os
import statistics
import sys

KEYS = "avg_qoe_t90,avg_qoe_t80,avg_accuracy,drift_type_accuracy"


def rows(folder, method):
    out = {}
    with open(os.path.join(folder, "metrics.jsonl")) as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("method") == method:
                out[r["seed"]] = r
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--method", default="adaevo")
    ap.add_argument("--keys", default=KEYS)
    args = ap.parse_args()
    a, b = rows(args.a, args.method), rows(args.b, args.method)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        sys.exit(f"need two or more seeds of {args.method} in both runs, found {seeds}")
    for k in args.keys.split(","):
        d = [b[s][k] - a[s][k] for s in seeds if k in a[s] and k in b[s]]
        if len(d) < 2:
            print(f"{k}: not in both runs")
            continue
        print(f"{k}: {statistics.mean(d):+.3f} ± {statistics.stdev(d):.3f} ({len(d)} seeds)")


if __name__ == "__main__":
    main()
