#!/usr/bin/env python3
"""PyTorch side of the vision-ops benchmark (crates/core/examples/vision_ops_bench.rs).

Reads the JSON lines the Rust benchmark printed (op, input shapes, reps, warm-up and ferrolab's
median times), times PyTorch on the same shapes with the same reps and warm-up, and prints per
case ours / torch for the forward (no autograd) and for a training use (forward with inputs that
require gradients + backward from a gradient of ones), then per model the time of those ops in
one training step (each case weighted by its `count`), ours and torch.

    cargo run --release -p ferrolab-core --example vision_ops_bench -- [...] > ours.jsonl
    bench/.venv/bin/python bench/vision_ops_torch.py --ours ours.jsonl [--threads 2] [--json]

Both sides run with ferrolab's malloc settings (bench/harness.py ALLOCATOR; the script re-executes
itself with GLIBC_TUNABLES set unless it is already set), as the Rust side calls tune_allocator.
"""

import argparse
import json
import os
import statistics
import sys
import time

ALLOCATOR = "glibc.malloc.mmap_threshold=536870912:glibc.malloc.trim_threshold=1073741824"
if "GLIBC_TUNABLES" not in os.environ:
    os.environ["GLIBC_TUNABLES"] = ALLOCATOR
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

EPS = 1e-5


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(reps, 1)):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def op_fn(op, params):
    """The op as a function of the input list, with the [C] parameters (gamma, beta, mean, var)."""
    g, b, m, v = params
    return {
        "bn_train": lambda xs: F.batch_norm(xs[0], None, None, g, b, training=True, eps=EPS),
        "bn_eval": lambda xs: F.batch_norm(xs[0], m, v, g, b, training=False, eps=EPS),
        "relu": lambda xs: F.relu(xs[0]),
        "leaky_relu": lambda xs: F.leaky_relu(xs[0], 0.1),
        "silu": lambda xs: F.silu(xs[0]),
        "add": lambda xs: xs[0] + xs[1],
        "max_pool2x2": lambda xs: F.max_pool2d(xs[0], 2, 2),
        "avg_pool2x2": lambda xs: F.avg_pool2d(xs[0], 2, 2),
        "global_avg_pool": lambda xs: F.adaptive_avg_pool2d(xs[0], 1),
        "up_nearest2x": lambda xs: F.interpolate(xs[0], scale_factor=2, mode="nearest"),
        "up_bilinear2x": lambda xs: F.interpolate(xs[0], scale_factor=2, mode="bilinear",
                                                  align_corners=True),
        "cat_channels": lambda xs: torch.cat(xs, 1),
        "softmax_last": lambda xs: F.softmax(xs[0], -1),
        "layer_norm_last": lambda xs: F.layer_norm(xs[0], [xs[0].shape[-1]], g, b, EPS),
        "gelu": lambda xs: F.gelu(xs[0]),
    }[op]


def bench_case(case):
    warmup, reps = case["warmup"], case["reps"]
    shapes = case["shapes"]
    xs = [torch.rand(s) * 2 - 1 for s in shapes]
    width = shapes[0][3] if case["op"] == "layer_norm_last" else shapes[0][1]
    params = [torch.rand(width) * 0.1 + o for o in (1.0, 0.0, 0.0, 1.0)]
    f = op_fn(case["op"], params)
    out = {}
    with torch.no_grad():
        out["torch_fwd_ms"] = median_ms(lambda: f(xs), warmup, reps)
    if "ours_train_ms" in case:
        leaves = [x.clone().requires_grad_(True) for x in xs]
        params[0].requires_grad_(True)
        params[1].requires_grad_(True)

        def train():
            for t in leaves + params[:2]:
                t.grad = None
            y = f(leaves)
            y.backward(torch.ones_like(y))

        out["torch_train_ms"] = median_ms(train, warmup, reps)
    return out


def warm_up(seconds=2.0):
    """Runs ops for a while first: torch's first few dozen calls after start-up run ~10x slower
    (thread-pool and heap growth), which would land on the first case otherwise."""
    x = torch.rand(128, 16, 32, 32, requires_grad=True)
    g = torch.ones(16, requires_grad=True)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        y = F.relu(F.batch_norm(x, None, None, g, None, training=True))
        y.backward(torch.ones_like(y))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ours", required=True, help="JSON lines printed by vision_ops_bench")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(7)
    try:
        with open(args.ours) as f:
            cases = [json.loads(line) for line in f if line.strip()]
    except (OSError, json.JSONDecodeError) as e:
        print(f"vision_ops_torch.py: {args.ours}: {e}", file=sys.stderr)
        return 2
    warm_up()
    if not args.json:
        print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
              f"{torch.backends.cpu.get_cpu_capability()}; ratios are ours / torch "
              f"(below 1 = ours faster); * = ferrolab kernel, burn = burn's own op / torch")
        print(f"{'case':<50} {'fwd':>6} {'train':>6} | {'ours ms':>8} {'torch ms':>8} "
              f"{'train ms':>8} {'torch ms':>8} | {'burn fwd':>8} {'burn trn':>8}")
    steps = {}
    for case in cases:
        t = bench_case(case)
        row = dict(case, **t)
        fwd_ratio = case["ours_fwd_ms"] / t["torch_fwd_ms"]
        train_ratio = (case["ours_train_ms"] / t["torch_train_ms"]
                       if "torch_train_ms" in t else None)
        row["ratio_fwd"], row["ratio_train"] = fwd_ratio, train_ratio
        if case["count"] and train_ratio is not None:
            s = steps.setdefault(case["model"], {"ours": 0.0, "torch": 0.0, "burn": 0.0})
            s["ours"] += case["count"] * case["ours_train_ms"]
            s["torch"] += case["count"] * t["torch_train_ms"]
            s["burn"] += case["count"] * case.get("burn_train_ms", case["ours_train_ms"])
        if args.json:
            print(json.dumps(row))
            continue

        def fmt(v, width=6):
            return f"{v:{width}.2f}" if v is not None else f"{'-':>{width}}"

        burn_fwd = case.get("burn_fwd_ms")
        burn_train = case.get("burn_train_ms")
        mark = "*" if case.get("replaced") else " "
        print(f"{mark}{case['name']:<49} {fmt(fwd_ratio)} {fmt(train_ratio)} | "
              f"{case['ours_fwd_ms']:8.3f} {t['torch_fwd_ms']:8.3f} "
              f"{fmt(case.get('ours_train_ms'), 8)} {fmt(t.get('torch_train_ms'), 8)} | "
              f"{fmt(burn_fwd / t['torch_fwd_ms'] if burn_fwd else None, 8)} "
              f"{fmt(burn_train / t['torch_train_ms'] if burn_train else None, 8)}")
    if not args.json:
        print("\nper training step (each case x count), forward + backward of these ops:")
        for model, s in steps.items():
            print(f"  {model:<10} ours {s['ours']:8.2f} ms  torch {s['torch']:8.2f} ms  "
                  f"ratio {s['ours'] / s['torch']:5.2f}  (all-burn {s['burn'] / s['torch']:5.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
