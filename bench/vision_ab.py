#!/usr/bin/env python3
"""Interleaved A/B of two builds of `vision_step_bench` (e.g. before and after a kernel
change) on a shared, loaded machine: absolute times drift with other people's load, so each
round runs every (model, binary) pair once as its own process, in a shuffled order, and the
figure that counts is the median over rounds of the per-round ratio B/A.

    python3 bench/vision_ab.py --a /tmp/old_bench --b target/release/examples/vision_step_bench \
        --models resnet20,unet,yolo --rounds 5 [--warmup 2 --iters 5 --threads 2]

Prints one line per model and phase (training step, forward + loss, backward, optimiser step,
inference; the fastest timed step and the process's CPU seconds, which load disturbs less):
A's and B's medians over rounds and the median (min-max) of the per-round ratios B/A, and the
load average before and after. Same allocator settings as `bench/harness.py`.
"""

import argparse
import json
import os
import random
import resource
import statistics
import subprocess

ALLOCATOR = "glibc.malloc.mmap_threshold=536870912:glibc.malloc.trim_threshold=1073741824"
PHASES = [
    ("train_ms", "training step"),
    ("train_forward_ms", "forward + loss"),
    ("train_backward_ms", "backward"),
    ("train_optim_ms", "optimiser step"),
    ("infer_ms", "inference"),
    ("train_min_ms", "fastest training step"),
    ("process_cpu_s", "process CPU seconds (s)"),
]


def run(binary, model, a):
    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(a.threads)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env["GLIBC_TUNABLES"] = ALLOCATOR
    cmd = [binary, "--model", model, "--threads", str(a.threads), "--warmup", str(a.warmup),
           "--iters", str(a.iters), "--json"] + a.extra
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    d = json.loads(out.strip().splitlines()[-1])
    # Less sensitive to other people's load than wall time: the fastest timed step, and the
    # CPU seconds of the whole process (same work on both sides apart from the change).
    d["train_min_ms"] = min(d["train_ms_all"])
    d["process_cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return d


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--a", required=True)
    p.add_argument("--b", required=True)
    p.add_argument("--models", default="resnet20,unet,yolo")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra", nargs="*", default=[])
    a = p.parse_args()
    models = a.models.split(",")
    rng = random.Random(a.seed)
    res = {(m, s): [] for m in models for s in "ab"}
    load0 = os.getloadavg()
    for r in range(a.rounds):
        jobs = [(m, s) for m in models for s in "ab"]
        rng.shuffle(jobs)
        for m, s in jobs:
            res[(m, s)].append(run(a.a if s == "a" else a.b, m, a))
        print(f"round {r + 1}/{a.rounds} done, load {os.getloadavg()[0]:.2f}", flush=True)
    load1 = os.getloadavg()
    print(f"A = {a.a}\nB = {a.b}\n{a.rounds} rounds, warmup {a.warmup}, iters {a.iters}, "
          f"{a.threads} threads; load average before {load0[0]:.2f} {load0[1]:.2f}, "
          f"after {load1[0]:.2f} {load1[1]:.2f}")
    print("| model | phase | A median ms | B median ms | B/A median (min-max) |")
    print("|---|---|---:|---:|---:|")
    for m in models:
        for key, name in PHASES:
            xa = [d[key] for d in res[(m, "a")]]
            xb = [d[key] for d in res[(m, "b")]]
            ratios = [b / x for x, b in zip(xa, xb)]
            print(f"| {m} | {name} | {statistics.median(xa):.2f} | {statistics.median(xb):.2f} "
                  f"| {statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |")


if __name__ == "__main__":
    main()
