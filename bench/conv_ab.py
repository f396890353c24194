#!/usr/bin/env python3
"""Per-layer interleaved A/B of two builds of `examples/conv2d_bench.rs` (ferrolab-core):
each round runs both binaries (order alternating), and the figure per layer and pass is the
median over rounds of each binary's fastest repetition.

    python3 bench/conv_ab.py A_BINARY B_BINARY ROUNDS [conv2d_bench args, e.g. --only resnet --clock cpu]

Threads: T (environment, default 2). Prints `name pass A B B/A` per layer and the totals.
"""
import collections
import json
import os
import statistics
import subprocess
import sys


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    bins = sys.argv[1:3]
    rounds = int(sys.argv[3])
    extra = sys.argv[4:]
    threads = os.environ.get("T", "2")
    res = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in range(rounds):
        for b in bins if r % 2 == 0 else bins[::-1]:
            out = subprocess.run(
                [b, "--threads", threads, "--reps", "15", "--warmup", "3", "--no-burn"] + extra,
                capture_output=True, text=True, check=True,
            ).stdout
            for line in out.splitlines():
                d = json.loads(line)
                for p in ("fwd", "dx", "dw"):
                    k = f"ours_{p}_min_ms"
                    if k in d:
                        res[(d["name"], p)][b].append(d[k])
    tot = {b: 0.0 for b in bins}
    for (name, p), v in res.items():
        a, bb = statistics.median(v[bins[0]]), statistics.median(v[bins[1]])
        tot[bins[0]] += a
        tot[bins[1]] += bb
        print(f"{name:32s} {p:4s} A {a:7.2f} B {bb:7.2f} B/A {bb / a:5.2f}")
    print("total A %.1f B %.1f B/A %.3f" % (tot[bins[0]], tot[bins[1]], tot[bins[1]] / tot[bins[0]]))


if __name__ == "__main__":
    main()
