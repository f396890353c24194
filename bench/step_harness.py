#!/usr/bin/env python3
"""Training step, ferrolab vs PyTorch (CPU): MLP, small CNN, self-attention block.

Called by bench/run_step_bench.sh (which sets up bench/.venv and builds the Rust example); by
hand:

    bench/.venv/bin/python bench/step_harness.py --bin target/release/examples/train_step_bench

Each (round, model, side) is its own process (`--only <model> --breakdown`) with the same
warm-up and timed steps on both sides; bench/harness.py shuffles their order per round, gives
both sides the same malloc settings, repeats disturbed runs, and reports medians over rounds
with their spread. `--ops` adds one process per side and round that times the single kernels
of the CNN and attention steps without autodiff (not a headline ratio: kernels compared within
one run).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

MODELS = ("mlp", "cnn", "attention")
NAMES = {
    "mlp": "training step, MLP 784-256-256-10, batch 128",
    "cnn": "training step, small CNN [64,1,28,28]",
    "attention": "training step, self-attention block [32,64,128], 4 heads",
}
PHASES = (("forward", "forward + loss"), ("backward", "backward"), ("optim", "optimizer"))


def main():
    ap = H.parser(__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built train_step_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--ops", action="store_true", help="also compare single kernels")
    a = ap.parse_args()
    H.check_args(a)
    if a.warmup < 0 or a.iters < 1:
        raise SystemExit("error: --warmup must be >= 0 and --iters >= 1")
    common = ["--threads", str(a.threads), "--warmup", str(a.warmup), "--iters", str(a.iters),
              "--json"]
    sides = {"ferrolab": [a.bin], "pytorch": [a.python, os.path.join(H.HERE, "pytorch_step.py")]}
    jobs = [H.Job(m, side, cmd + common + ["--only", m, "--breakdown"])
            for m in MODELS for side, cmd in sides.items()]
    if a.ops:
        jobs += [H.Job("ops", side, cmd + common + ["--ops"]) for side, cmd in sides.items()]
    m = H.measure(a, jobs)

    rows = [H.Row(NAMES[k], k, f"{k}_ms", "ferrolab", "pytorch") for k in MODELS]
    rows += [H.Row(f"{k}: {label}", k, f"{k}_{ph}_ms", "ferrolab", "pytorch", headline=False)
             for k in MODELS for ph, label in PHASES]
    if a.ops:
        names = [k for k in m.values["ops/ferrolab"][0] if k in m.values["ops/pytorch"][0]]
        rows += [H.Row(f"kernel {k}", "ops", k, "ferrolab", "pytorch", headline=False)
                 for k in names]
    versions = {
        "ferrolab": H.ferrolab_versions(),
        "pytorch": H.python_modules(a.python, ["torch", "numpy"]),
    }
    what = ("One step = forward + cross-entropy + backward + Adam step (lr 1e-3, eps 1e-8) on a "
            f"fixed random batch; each process times {a.warmup} warm-up steps, then reports the "
            f"median of {a.iters} timed steps. Ratio = ferrolab / PyTorch (above 1: ferrolab is "
            "slower). Phase rows split the same steps (not published ratios).")
    H.write("step_bench", "Training step: ferrolab (burn flex) vs PyTorch (CPU)", m, rows,
            versions, what)


if __name__ == "__main__":
    main()
