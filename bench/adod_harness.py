#!/usr/bin/env python3
"""ADOD's detectors, training step and inference, ferrolab vs PyTorch (CPU): same networks,
losses, batch and threads.

Called by bench/run_adod_bench.sh. For each case (a preset of configs/adod and a method)
ferrolab's crates/vision/examples/adod_step_bench and the PyTorch twin (bench/adod_torch.py)
each run as their own process with the same warm-up, timed steps and thread count;
bench/harness.py shuffles the processes per round, gives both sides the same malloc settings and
repeats a process other work disturbed (bench/README.md, "The rule").

Before timing, both sides build each case's network (`--params-only`) and the harness stops if
the parameter counts differ, and both compute YOLO's loss and the IRM penalty of the same fixed
head outputs against the benchmark's boxes and domains (`--check-loss`), which must agree to
1e-4 (relative).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

METHODS = {
    "yolo": "YOLOv3-tiny",
    "yolo_attention": "YOLOv3-tiny + residual attention",
    "yolo_domain": "YOLOv3-tiny + domain classifier (GRL)",
    "dg_yolo": "DG-YOLO-style (domain classifier + IRM)",
    "adod": "ADOD (attention + attention-pooled domain classifier)",
}
PRESETS = ("paper", "quick")


def preset_shape(preset):
    """The input size and batch the preset gives both sides (read, not restated, so the label
    follows the preset: it still said 96x96 after the paper preset moved to 128)."""
    import tomllib

    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    with open(os.path.join(root, "configs", "adod", f"{preset}.toml"), "rb") as f:
        t = tomllib.load(f)
    size = t.get("data", {}).get("image_size", 128)
    batch = t.get("train", {}).get("batch_size", 16)
    return f"{size}x{size}, batch {batch}"

DEFAULT_CASES = ",".join(f"paper:{m}" for m in METHODS)


def ask(cmd, flag, env):
    p = subprocess.run(cmd + [flag], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"error: {' '.join(cmd)} {flag} failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def close(a, b):
    return abs(a - b) / max(abs(b), 1e-12) <= 1e-4


def main():
    ap = H.parser(__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built adod_step_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated preset:method pairs")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--name", default=os.environ.get("NAME", "adod_bench"),
                    help="result file name under bench/results (e.g. one per thread count)")
    a = ap.parse_args()
    H.check_args(a)
    cases = [c.split(":") for c in a.cases.split(",") if c]
    if not cases or any(len(c) != 2 or c[0] not in PRESETS or c[1] not in METHODS for c in cases):
        raise SystemExit(f"error: --cases {a.cases!r}: expected preset:method pairs, presets "
                         f"{', '.join(PRESETS)}, methods {', '.join(METHODS)}")
    if a.warmup < 0 or a.iters < 1:
        raise SystemExit("error: --warmup must be >= 0 and --iters >= 1")
    common = ["--threads", str(a.threads), "--warmup", str(a.warmup), "--iters", str(a.iters)]
    env = H.env_for(a)
    jobs, checks = [], {}
    for preset, method in cases:
        case = f"{preset}:{method}"
        ours = [a.bin, "--preset", preset, "--method", method, *common]
        torch = [a.python, os.path.join(H.HERE, "adod_torch.py"), "--preset", preset,
                 "--method", method, *common]
        params = {"ferrolab": ask(ours, "--params-only", env)["params"],
                  "pytorch": ask(torch, "--params-only", env)["params"]}
        if params["ferrolab"] != params["pytorch"]:
            raise SystemExit(f"error: {case}: ferrolab has {params['ferrolab']} parameters, the "
                             f"PyTorch twin {params['pytorch']}; the networks differ")
        lo, lt = ask(ours, "--check-loss", env), ask(torch, "--check-loss", env)
        for key in ("loss", "irm"):
            if not close(lo[key], lt[key]):
                raise SystemExit(f"error: {case}: {key} of fixed head outputs is {lo[key]} in "
                                 f"ferrolab and {lt[key]} in the PyTorch twin; they differ")
        checks[case] = {"params": params, "check_loss": {"ferrolab": lo, "pytorch": lt}}
        jobs.append(H.Job(case, "ferrolab", ours + ["--json"]))
        jobs.append(H.Job(case, "pytorch", torch))
    m = H.measure(a, jobs, env=env)
    rows = []
    for preset, method in cases:
        case = f"{preset}:{method}"
        label = f"{METHODS[method]}, {preset} preset ({preset_shape(preset)})"
        rows += [
            H.Row(f"training step, {label}", case, "train_ms", "ferrolab", "pytorch"),
            H.Row(f"inference, {label}", case, "infer_ms", "ferrolab", "pytorch"),
            H.Row(f"  forward + loss, {label}", case, "train_forward_ms", "ferrolab", "pytorch",
                  headline=False),
            H.Row(f"  backward, {label}", case, "train_backward_ms", "ferrolab", "pytorch",
                  headline=False),
            H.Row(f"  optimiser step, {label}", case, "train_optim_ms", "ferrolab", "pytorch",
                  headline=False),
        ]
    versions = {"ferrolab": H.ferrolab_versions(),
                "pytorch": H.python_modules(a.python, ["torch"])}
    what = (f"Per case and side, one process: {a.warmup} untimed then {a.iters} timed training "
            "steps of `ferrolab adod`'s step (`adod::experiment::step_loss`: forward through the "
            "attention modules and the domain tap, YOLO's loss, the domain cross-entropy through "
            "gradient reversal, DG-YOLO's IRM penalty by central difference; loss read back; "
            "backward; Adam, eps 1e-5) on one fixed batch, then as many inference passes (the "
            "forward pass without the domain head, before decoding and NMS; eval mode, no "
            "autograd). On the ferrolab side each step and each inference pass runs on a pool "
            "worker, as `ferrolab adod` runs them (`backend::in_pool`), and the step's time "
            "includes that crossing. No rendering, augmentation or batch assembly on either "
            "side. Figures "
            "are the medians of the timed iterations, per batch (divide by the batch for per "
            "image). Ratio = ferrolab / PyTorch.")
    notes = ["Checked before timing, per case: parameter counts (burn's count, batch-norm running "
             "statistics included), and YOLO's loss and the IRM penalty of fixed head outputs: "
             + "; ".join(f"{k}: {v['params']['ferrolab']:,} params, loss "
                         f"{v['check_loss']['ferrolab']['loss']:.6g} vs "
                         f"{v['check_loss']['pytorch']['loss']:.6g}, IRM "
                         f"{v['check_loss']['ferrolab']['irm']:.6g} vs "
                         f"{v['check_loss']['pytorch']['irm']:.6g}"
                         for k, v in checks.items()) + "."]
    H.write(a.name, "ADOD detectors, training step and inference: ferrolab vs PyTorch (CPU)",
            m, rows, versions, what, notes=notes, extra={"checks": checks})


if __name__ == "__main__":
    main()
