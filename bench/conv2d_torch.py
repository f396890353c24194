#!/usr/bin/env python3
"""PyTorch side of the convolution kernel benchmark (crates/core/examples/conv2d_bench.rs).

Reads the JSON lines the Rust benchmark printed (shapes, reps, warm-up and ferrolab's median
times per pass), times PyTorch on the same shapes with the same reps and warm-up through the
ATen ops autograd calls (F.conv2d / F.conv_transpose2d forward, aten.convolution_backward for
the input, weight and bias gradients, each alone, and all three in one call as autograd makes
it), and prints per layer ours / torch for each pass and for the whole forward + backward.

    cargo run --release -p ferrolab-core --example conv2d_bench -- [...] > ours.jsonl
    bench/.venv/bin/python bench/conv2d_torch.py --ours ours.jsonl [--threads 2] [--json]

The total compares ours fwd + dx + dw (+ db) with torch's forward + one convolution_backward
computing the gradients that layer needs. --json prints one object per layer instead of the
table.
"""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def rand(shape):
    return torch.rand(shape) * 2 - 1


def bench_layer(layer):
    aten = torch.ops.aten
    warmup, reps = layer["warmup"], layer["reps"]
    x, w = rand(layer["x"]), rand(layer["w"])
    transposed = layer["kind"] == "convt"
    stride, padding, groups = layer["stride"], layer["padding"], layer["groups"]
    f_out = w.shape[1] * groups if transposed else w.shape[0]
    b = rand([f_out]) if layer["bias"] else None
    if transposed:
        y = F.conv_transpose2d(x, w, b, stride=stride, padding=padding, groups=groups)
    else:
        y = F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups)
    dy = rand(list(y.shape))

    def bwd(mask):
        return aten.convolution_backward(
            dy, x, w, [f_out] if b is not None else None, stride, padding, [1, 1],
            transposed, [0, 0], groups, mask,
        )

    out = {}
    with torch.no_grad():
        if transposed:
            out["torch_fwd_ms"] = median_ms(
                lambda: F.conv_transpose2d(x, w, b, stride=stride, padding=padding, groups=groups),
                warmup, reps)
        else:
            out["torch_fwd_ms"] = median_ms(
                lambda: F.conv2d(x, w, b, stride=stride, padding=padding, groups=groups),
                warmup, reps)
        out["torch_dx_ms"] = median_ms(lambda: bwd([True, False, False]), warmup, reps)
        out["torch_dw_ms"] = median_ms(lambda: bwd([False, True, False]), warmup, reps)
        if b is not None:
            out["torch_db_ms"] = median_ms(lambda: bwd([False, False, True]), warmup, reps)
        out["torch_bwd_all_ms"] = median_ms(lambda: bwd([True, True, b is not None]), warmup, reps)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ours", required=True, help="JSON lines printed by conv2d_bench")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    try:
        with open(args.ours) as f:
            layers = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        print(f"conv2d_torch.py: {args.ours}: {e}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
              f"ratios are ours / torch (below 1 = ours faster)")
        print(f"{'layer':<30} {'fwd':>6} {'dx':>6} {'dw':>6} {'db':>6} | {'total':>6} "
              f"{'ours ms':>8} {'torch ms':>8} | {'burn/torch':>10}")
    sums = {"ours": 0.0, "torch": 0.0, "burn": 0.0}
    for layer in layers:
        t = bench_layer(layer)
        ours_total = sum(layer.get(f"ours_{k}_ms", 0.0) for k in ("fwd", "dx", "dw", "db"))
        torch_total = t["torch_fwd_ms"] + t["torch_bwd_all_ms"]
        burn_total = sum(layer.get(f"burn_{k}_ms", 0.0) for k in ("fwd", "dx", "dw", "db"))
        sums["ours"] += ours_total
        sums["torch"] += torch_total
        sums["burn"] += burn_total
        row = dict(layer, **t, ours_total_ms=ours_total, torch_total_ms=torch_total,
                   ratio_total=ours_total / torch_total)
        if args.json:
            print(json.dumps(row))
            continue

        def ratio(k):
            o, q = layer.get(f"ours_{k}_ms"), t.get(f"torch_{k}_ms")
            return f"{o / q:6.2f}" if o is not None and q else f"{'-':>6}"

        burn = f"{burn_total / torch_total:10.2f}" if burn_total else f"{'-':>10}"
        print(f"{layer['name']:<30} {ratio('fwd')} {ratio('dx')} {ratio('dw')} {ratio('db')} | "
              f"{ours_total / torch_total:6.2f} {ours_total:8.2f} {torch_total:8.2f} | {burn}")
    if not args.json and sums["torch"]:
        burn = f"{sums['burn'] / sums['torch']:10.2f}" if sums["burn"] else f"{'-':>10}"
        print(f"{'sum':<30} {'':>6} {'':>6} {'':>6} {'':>6} | {sums['ours'] / sums['torch']:6.2f} "
              f"{sums['ours']:8.2f} {sums['torch']:8.2f} | {burn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
