#!/usr/bin/env python3
"""PyTorch side of the convolution kernel benchmark (crates/core/examples/conv2d_bench.rs).

Reads the JSON lines the Rust benchmark printed (shapes, reps, warm-up and ferrolab's median
times per pass), times PyTorch on the same shapes with the same reps and warm-up through the
ATen ops autograd calls (F.conv2d / F.conv_transpose2d forward, aten.convolution_backward for
the input, weight and bias gradients, each alone, and all three in one call as autograd makes
it), and prints per layer ours / torch for each pass and for the whole forward + backward.

    cargo run --release -p ferrolab-core --example conv2d_bench -- [...] > ours.jsonl
    bench/.venv/bin/python bench/conv2d_torch.py --ours ours.jsonl [--threads 2] [--json]
        [--stat min] [--clock cpu] [--rerun target/release/examples/conv2d_bench]

The total compares ours fwd + dx + dw (+ db) with torch's forward + one convolution_backward
computing the gradients that layer needs. --json prints one object per layer instead of the
table. --rerun times ours again layer by layer right before torch (same load on a shared
machine; the burn column then disappears). --stat min compares the fastest runs instead of the medians (robust on a busy machine).
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F


STAT = "median"
CPU_CLOCK = False


def median_ms(fn, warmup, reps):
    """Median (or, with --stat min, fastest) milliseconds of `reps` runs after `warmup`; with
    --clock cpu, the process's CPU time over the runs divided by `reps`."""
    for _ in range(warmup):
        fn()
    if CPU_CLOCK:
        t = time.process_time()
        for _ in range(max(reps, 1)):
            fn()
        return (time.process_time() - t) * 1e3 / max(reps, 1)
    times = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return min(times) if STAT == "min" else statistics.median(times)


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


def rerun(binary, layer, threads):
    """The layer's line from a fresh run of conv2d_bench (ours only)."""
    cmd = [binary, "--filter", layer["name"], "--reps", str(layer["reps"]),
           "--warmup", str(layer["warmup"]), "--threads", str(threads), "--no-burn",
           "--clock", "cpu" if CPU_CLOCK else "wall"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fresh = json.loads(line)
        if fresh["name"] == layer["name"]:
            return fresh
    raise RuntimeError(f"{binary} printed no line for {layer['name']}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ours", required=True, help="JSON lines printed by conv2d_bench")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    p.add_argument("--rerun", metavar="BIN",
                   help="re-time ours with this conv2d_bench binary just before torch, layer by "
                        "layer, so both sides see the same load on a shared machine")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="cpu: CPU time per run (use with --threads 1 on a loaded machine; "
                        "--rerun passes it on)")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="compare medians (default) or fastest runs, which a shared, busy "
                        "machine disturbs less")
    args = p.parse_args()
    global STAT, CPU_CLOCK
    STAT = args.stat
    CPU_CLOCK = args.clock == "cpu"
    suffix = "_min_ms" if STAT == "min" else "_ms"
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    try:
        with open(args.ours) as f:
            layers = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        print(f"conv2d_torch.py: {args.ours}: {e}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {STAT} of each "
              f"side's runs; ratios are ours / torch (below 1 = ours faster)")
        print(f"{'layer':<30} {'fwd':>6} {'dx':>6} {'dw':>6} {'db':>6} | {'total':>6} "
              f"{'ours ms':>8} {'torch ms':>8} | {'burn/torch':>10}")
    sums = {"ours": 0.0, "torch": 0.0, "burn": 0.0}
    for layer in layers:
        if args.rerun:
            layer = rerun(args.rerun, layer, args.threads)
        t = bench_layer(layer)
        ours_total = sum(layer.get(f"ours_{k}{suffix}", 0.0) for k in ("fwd", "dx", "dw", "db"))
        torch_total = t["torch_fwd_ms"] + t["torch_bwd_all_ms"]
        burn_total = sum(layer.get(f"burn_{k}{suffix}", 0.0) for k in ("fwd", "dx", "dw", "db"))
        sums["ours"] += ours_total
        sums["torch"] += torch_total
        sums["burn"] += burn_total
        row = dict(layer, **t, ours_total_ms=ours_total, torch_total_ms=torch_total,
                   ratio_total=ours_total / torch_total)
        if args.json:
            print(json.dumps(row))
            continue

        def ratio(k):
            o, q = layer.get(f"ours_{k}{suffix}"), t.get(f"torch_{k}_ms")
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
