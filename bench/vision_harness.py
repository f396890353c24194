#!/usr/bin/env python3
"""Vision models, ferrolab vs PyTorch (CPU): training step, inference and memory added by training.

Called by bench/run_vision_bench.sh. For each model (ResNet-20 on [128,1,32,32], UNet on
[8,1,128,128], YOLO-tiny on [16,3,128,128]) ferrolab's crates/vision/examples/vision_step_bench
and PyTorch's twin (bench/vision_torch.py) each run as their own process with the same warm-up,
timed iterations and thread count; bench/harness.py shuffles the processes per round, gives
both sides the same malloc settings and repeats a process other work disturbed.

Before timing, both sides build each model once (`--params-only`) and the harness stops if
their parameter counts differ (the twins must have exactly the same layers), and for YOLO both
compute the loss of the same fixed head outputs (`--check-loss`), which must agree to 1e-4.
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

MODELS = {
    "resnet20": "ResNet-20, [128,1,32,32], 10 classes",
    "unet": "UNet 16/32/64/128/256, [8,1,128,128], 4 classes",
    "yolo": "YOLO-tiny, [16,3,128,128]",
}


def ask(cmd, flag, key, env):
    """Runs `cmd flag` and returns `key` of the JSON line it prints."""
    p = subprocess.run(cmd + [flag], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"error: {' '.join(cmd)} {flag} failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])[key]


def main():
    ap = H.parser(__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built vision_step_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated, some of " + ", ".join(MODELS))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--no-pool", action="store_true",
                    help="run ferrolab's steps from the main thread, as training did before it "
                    "moved each step onto a pool worker (an A/B of that change)")
    ap.add_argument("--name", default=os.environ.get("NAME", "vision_bench"),
                    help="result file name under bench/results (e.g. a rerun beside the first)")
    a = ap.parse_args()
    H.check_args(a)
    models = [m for m in a.models.split(",") if m]
    bad = [m for m in models if m not in MODELS]
    if bad or not models:
        raise SystemExit(f"error: --models {a.models!r}: expected some of {', '.join(MODELS)}")
    if a.warmup < 0 or a.iters < 1:
        raise SystemExit("error: --warmup must be >= 0 and --iters >= 1")
    common = ["--threads", str(a.threads), "--warmup", str(a.warmup), "--iters", str(a.iters)]
    env = H.env_for(a)
    jobs, counts, yolo_loss = [], {}, None
    for model in models:
        # On a pool worker, as `ferrolab classify` and `ferrolab adod` run their steps.
        ours = [a.bin, "--model", model, *common] + ([] if a.no_pool else ["--in-pool"])
        torch = [a.python, os.path.join(H.HERE, "vision_torch.py"), "--model", model, *common]
        counts[model] = {"ferrolab": ask(ours, "--params-only", "params", env),
                         "pytorch": ask(torch, "--params-only", "params", env)}
        if counts[model]["ferrolab"] != counts[model]["pytorch"]:
            raise SystemExit(f"error: {model}: ferrolab has {counts[model]['ferrolab']} "
                             f"parameters, the PyTorch twin {counts[model]['pytorch']}; "
                             "the models differ")
        if model == "yolo":
            losses = {"ferrolab": ask(ours, "--check-loss", "loss", env),
                      "pytorch": ask(torch, "--check-loss", "loss", env)}
            rel = abs(losses["ferrolab"] - losses["pytorch"]) / max(abs(losses["pytorch"]), 1e-12)
            if not rel <= 1e-4:
                raise SystemExit(f"error: yolo: the loss of fixed head outputs is "
                                 f"{losses['ferrolab']} in ferrolab and {losses['pytorch']} in "
                                 "the PyTorch twin; the losses differ")
            yolo_loss = losses
        jobs.append(H.Job(model, "ferrolab", ours + ["--json"]))
        jobs.append(H.Job(model, "pytorch", torch))
    m = H.measure(a, jobs, env=env)
    rows = []
    for model in models:
        label = MODELS[model]
        rows += [
            H.Row(f"training step, {label}", model, "train_ms", "ferrolab", "pytorch"),
            H.Row(f"inference, {label}", model, "infer_ms", "ferrolab", "pytorch"),
            H.Row(f"memory added by training, {label}", model, "train_added_mb", "ferrolab",
                  "pytorch", unit="MiB"),
            H.Row(f"  forward + loss, {label}", model, "train_forward_ms", "ferrolab",
                  "pytorch", headline=False),
            H.Row(f"  backward, {label}", model, "train_backward_ms", "ferrolab", "pytorch",
                  headline=False),
            H.Row(f"  optimiser step, {label}", model, "train_optim_ms", "ferrolab", "pytorch",
                  headline=False),
            H.Row(f"  memory, first step's forward + loss, {label}", model, "forward_added_mb",
                  "ferrolab", "pytorch", unit="MiB", headline=False),
            H.Row(f"  memory, first step's backward, {label}", model, "backward_added_mb",
                  "ferrolab", "pytorch", unit="MiB", headline=False),
            H.Row(f"  memory, first step's optimiser step, {label}", model, "optim_added_mb",
                  "ferrolab", "pytorch", unit="MiB", headline=False),
            H.Row(f"  memory, later steps, {label}", model, "later_added_mb", "ferrolab",
                  "pytorch", unit="MiB", headline=False),
        ]
    versions = {"ferrolab": H.ferrolab_versions(),
                "pytorch": H.python_modules(a.python, ["torch"])}
    what = (f"Per model and side, one process: {a.warmup} untimed then {a.iters} timed training "
            "steps on one fixed random batch (forward, loss, backward, optimiser step: SGD "
            "momentum 0.9 + weight decay 5e-4 for ResNet-20 and YOLO, Adam for UNet; "
            "cross-entropy for ResNet-20 and, per pixel, for UNet), then as many inference "
            "passes (eval mode without autodiff: ferrolab's inference device, PyTorch's "
            "`no_grad`). Figures are the medians of the timed iterations. Memory added by "
            "training = peak RSS during the steps minus RSS once model, batch and optimiser "
            "exist (freed heap handed back first); the per-phase memory rows are the first "
            "step's peak per phase (the mark reset at phase boundaries) and the later steps' "
            "peak, over the same baseline. Ratio = ferrolab / PyTorch.")
    notes = ["Parameter counts (burn's count: trainable plus batch-norm running statistics), "
             "checked equal before timing: "
             + "; ".join(f"{k} {v['ferrolab']:,}" for k, v in counts.items()) + "."]
    if yolo_loss:
        notes.append("YOLO: the PyTorch twin computes ferrolab's loss (YOLOv3 assignment to the "
                     "best of six anchors, ignore rule at IoU 0.7, small-box weight, BCE "
                     "objectness and classes; targets built vectorised, as PyTorch YOLO code "
                     "does), checked on fixed head outputs before timing: "
                     f"{yolo_loss['ferrolab']:.6g} (ferrolab) vs {yolo_loss['pytorch']:.6g}.")
    H.write(a.name, "Vision models: ferrolab vs PyTorch (CPU)", m, rows, versions, what,
            notes=notes, extra={"params": counts, "yolo_check_loss": yolo_loss})


if __name__ == "__main__":
    main()
