#!/usr/bin/env python3
"""Runs both sides of the training-step benchmark and writes the comparison table.

Called by bench/run_step_bench.sh (which sets up bench/.venv and builds the Rust example);
it can also be run by hand:

    bench/.venv/bin/python bench/step_harness.py --bin target/release/examples/train_step_bench

Each (round, model, side) is its own process (`--only <model>`), so a disturbance costs one
re-run of one model rather than a whole round. A run counts as disturbed when the machine's
busy CPU time during it exceeds the run's own CPU time by more than --max-foreign of the
machine's capacity (other processes were running); it is repeated up to --tries times. The table
keeps, per model and side, the fastest median over the rounds that were not disturbed (or, if
every try was, the fastest of all, flagged in the output). Before each try it waits (up to
--idle-wait seconds) for the machine to go quiet.

The ferrolab side runs with the glibc malloc settings that the `ferrolab` binary applies at
start-up (crates/cli/src/main.rs, `tune_allocator`: mmap threshold 512 MiB, trim threshold
1 GiB), given here through GLIBC_TUNABLES because the example is its own binary; without them
every large tensor is a fresh mmap and each step pays for page faults (the MLP step takes about
twice as long). --no-malloc-tuning measures glibc's defaults instead. PyTorch runs as installed.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

MODELS = ("mlp", "cnn", "attention")
NAMES = {
    "mlp": "MLP 784-256-256-10, batch 128",
    "cnn": "small CNN, [64,1,28,28]",
    "attention": "self-attention block, [32,64,128], 4 heads",
}
HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
# Mirrors tune_allocator() in crates/cli/src/main.rs (M_MMAP_THRESHOLD, M_TRIM_THRESHOLD).
FERROLAB_MALLOC = "glibc.malloc.mmap_threshold=536870912:glibc.malloc.trim_threshold=1073741824"


def busy_seconds():
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    with open("/proc/stat") as fh:
        f = [int(v) for v in fh.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / TICK


def children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(cmd, env):
    """Runs cmd; returns (parsed JSON of its last stdout line, foreign CPU fraction)."""
    b0, c0, t0 = busy_seconds(), children_cpu(), time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    b1, c1, t1 = busy_seconds(), children_cpu(), time.monotonic()
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}")
    lines = [l for l in p.stdout.splitlines() if l.strip()]
    if not lines:
        raise SystemExit(f"no output from: {' '.join(cmd)}")
    foreign = max(0.0, (b1 - b0) - (c1 - c0)) / (max(t1 - t0, 1e-9) * (os.cpu_count() or 1))
    return json.loads(lines[-1]), foreign


def wait_idle(max_wait, max_foreign):
    """Waits until the CPUs were (almost) idle over a 2 s sample, at most max_wait seconds."""
    end = time.monotonic() + max_wait
    while True:
        b0, t0 = busy_seconds(), time.monotonic()
        time.sleep(2)
        busy = (busy_seconds() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))
        if busy <= max_foreign or time.monotonic() >= end:
            return


def run_quiet(cmd, env, tries, max_foreign, idle_wait, label):
    best = None
    for attempt in range(1, tries + 1):
        wait_idle(idle_wait if attempt > 1 else min(idle_wait, 10), max_foreign)
        out, foreign = run_once(cmd, env)
        if foreign <= max_foreign:
            return out, True
        print(
            f"   {label}: other processes used {foreign:.0%} of the CPUs; "
            f"{'retrying' if attempt < tries else 'keeping it, flagged'}",
            file=sys.stderr,
        )
        best = out if best is None else {k: min(v, best.get(k, v)) for k, v in out.items()}
    return best, False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built train_step_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ops", action="store_true", help="also compare single kernels")
    ap.add_argument("--tries", type=int, default=4, help="attempts per disturbed run")
    ap.add_argument("--max-foreign", type=float, default=0.05,
                    help="share of the CPUs other processes may use during a clean run")
    ap.add_argument("--idle-wait", type=float, default=120,
                    help="seconds to wait for a quiet machine before a retry")
    ap.add_argument("--no-malloc-tuning", action="store_true",
                    help="run the ferrolab side with glibc's default malloc settings")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "step_bench.md"))
    a = ap.parse_args()

    env = dict(os.environ)
    # OPENBLAS_* tuning variables set on some machines slow BLAS down; PyTorch's x86 wheel uses
    # MKL/oneDNN, so dropping them is only a precaution. OMP_NUM_THREADS matches --threads.
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    env["OMP_NUM_THREADS"] = str(a.threads)
    common = ["--threads", str(a.threads), "--warmup", str(a.warmup), "--iters", str(a.iters), "--json"]
    sides = {
        "ferrolab": [a.bin],
        "pytorch": [a.python, os.path.join(HERE, "pytorch_step.py")],
    }
    envs = {"ferrolab": dict(env), "pytorch": env}
    if not a.no_malloc_tuning:
        envs["ferrolab"]["GLIBC_TUNABLES"] = FERROLAB_MALLOC

    best = {s: {} for s in sides}
    ops = {s: {} for s in sides}
    flagged = set()

    def keep(store, side, out):
        for k, v in out.items():
            store[side][k] = min(v, store[side].get(k, float("inf")))

    for r in range(1, a.rounds + 1):
        for model in MODELS:
            for side, cmd in sides.items():
                print(f">> round {r}/{a.rounds}: {model} on {side}", file=sys.stderr)
                out, clean = run_quiet(
                    cmd + common + ["--only", model, "--breakdown"], envs[side], a.tries,
                    a.max_foreign, a.idle_wait, f"{model}/{side}",
                )
                keep(best, side, out)
                if not clean:
                    flagged.add(model)
        if a.ops:
            for side, cmd in sides.items():
                print(f">> round {r}/{a.rounds}: single kernels on {side}", file=sys.stderr)
                out, clean = run_quiet(
                    cmd + common + ["--ops"], envs[side], a.tries, a.max_foreign, a.idle_wait,
                    f"ops/{side}",
                )
                keep(ops, side, out)
                if not clean:
                    flagged.add("ops")

    torch_version = subprocess.run(
        [a.python, "-c", "import torch; print(torch.__version__)"],
        capture_output=True, text=True, env=env,
    ).stdout.strip()
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    except OSError:
        cpu = platform.processor() or cpu

    rows = []
    for m in MODELS:
        f, p = best["ferrolab"][f"{m}_ms"], best["pytorch"][f"{m}_ms"]
        rows.append((m, f, p, f / p))
    phases = ("forward", "backward", "optim")
    op_rows = [(k, ops["ferrolab"][k], ops["pytorch"][k]) for k in ops["ferrolab"] if k in ops["pytorch"]]

    mark = lambda key: " (disturbed)" if key in flagged else ""
    print(f"\n{'model':<10} {'ferrolab ms':>12} {'PyTorch ms':>11} {'ratio':>7}")
    for m, f, p, ratio in rows:
        print(f"{m:<10} {f:>12.2f} {p:>11.2f} {ratio:>7.2f}{mark(m)}")
    print("\nper phase, ms (ferrolab / PyTorch):")
    print(f"{'model':<10} {'fwd+loss':>17} {'backward':>17} {'optimizer':>17}")
    for m, *_ in rows:
        cells = [(best["ferrolab"][f"{m}_{ph}_ms"], best["pytorch"][f"{m}_{ph}_ms"]) for ph in phases]
        print(f"{m:<10} " + " ".join(f"{f:>8.2f}/{p:<8.2f}" for f, p in cells))
    if op_rows:
        print(f"\n{'single kernel (shapes as in the step)':<38} {'ferrolab ms':>12} {'PyTorch ms':>11} {'ratio':>7}")
        for k, f, p in op_rows:
            print(f"{k:<38} {f:>12.3f} {p:>11.3f} {f / p:>7.2f}")

    date = datetime.date.today().isoformat()
    md = [
        "# Training-step benchmark: ferrolab vs PyTorch (CPU)",
        "",
        f"Written by `bench/run_step_bench.sh` on {date}. Machine: {os.cpu_count()} cores, {cpu}. "
        f"{a.threads} threads on both sides; warmup {a.warmup}, median of {a.iters} timed steps, "
        f"fastest of {a.rounds} undisturbed rounds. ferrolab: burn 0.22.1, flex backend"
        + (", glibc malloc defaults" if a.no_malloc_tuning else
           ", with the `ferrolab` binary's malloc tuning (mmap/trim thresholds)")
        + f". PyTorch {torch_version} (CPU), as installed.",
        "",
        "One step = forward + cross-entropy + backward + Adam step (lr 1e-3, eps 1e-8) on a fixed "
        "random batch. Ratio = ferrolab time / PyTorch time (above 1: ferrolab is slower).",
        "",
        "| model | ferrolab ms | PyTorch ms | ratio |",
        "|---|---:|---:|---:|",
    ]
    md += [f"| {NAMES[m]}{mark(m)} | {f:.2f} | {p:.2f} | {ratio:.2f} |" for m, f, p, ratio in rows]
    md += ["", "Per phase (median ms, ferrolab / PyTorch):", "",
           "| model | forward + loss | backward | optimizer |", "|---|---:|---:|---:|"]
    for m, *_ in rows:
        cells = [(best["ferrolab"][f"{m}_{ph}_ms"], best["pytorch"][f"{m}_{ph}_ms"]) for ph in phases]
        md.append(f"| {m} | " + " | ".join(f"{f:.2f} / {p:.2f}" for f, p in cells) + " |")
    if op_rows:
        md += ["", f"Single kernels without autodiff (`OPS=1`; median ms, shapes as in the step){mark('ops')}:",
               "", "| kernel | ferrolab ms | PyTorch ms | ratio |", "|---|---:|---:|---:|"]
        md += [f"| {k} | {f:.3f} | {p:.3f} | {f / p:.2f} |" for k, f, p in op_rows]
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write("\n".join(md) + "\n")
    print(f"\nwrote {os.path.relpath(a.out)}")


if __name__ == "__main__":
    main()
