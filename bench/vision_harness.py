#!/usr/bin/env python3
"""Vision models, ferrolab vs PyTorch (CPU): training step, inference and memory added by training.

Called by bench/run_vision_bench.sh. For each model (ResNet-20 on [128,1,32,32], UNet on
[8,1,128,128], YOLO-tiny on [16,3,128,128]) ferrolab's crates/vision/examples/vision_step_bench
and PyTorch's twin (bench/vision_torch.py) each run as their own process with the same warm-up,
timed iterations and thread count; bench/harness.py shuffles the processes per round, gives
both sides the same malloc settings and repeats a process other work disturbed.

Before timing, both sides build each model once (`--params-only`) and the harness stops if
their parameter counts differ: the twins must have exactly the same layers.
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


def params(cmd, env):
    p = subprocess.run(cmd + ["--params-only"], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"error: {' '.join(cmd)} --params-only failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])["params"]


def main():
    ap = H.parser(__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built vision_step_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma-separated, some of " + ", ".join(MODELS))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
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
    jobs, counts = [], {}
    for model in models:
        ours = [a.bin, "--model", model, *common]
        torch = [a.python, os.path.join(H.HERE, "vision_torch.py"), "--model", model, *common]
        counts[model] = {"ferrolab": params(ours, env), "pytorch": params(torch, env)}
        if counts[model]["ferrolab"] != counts[model]["pytorch"]:
            raise SystemExit(f"error: {model}: ferrolab has {counts[model]['ferrolab']} "
                             f"parameters, the PyTorch twin {counts[model]['pytorch']}; "
                             "the models differ")
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
            "exist (freed heap handed back first). Ratio = ferrolab / PyTorch.")
    notes = ["Parameter counts (burn's count: trainable plus batch-norm running statistics), "
             "checked equal before timing: "
             + "; ".join(f"{k} {v['ferrolab']:,}" for k, v in counts.items()) + "."]
    H.write("vision_bench", "Vision models: ferrolab vs PyTorch (CPU)", m, rows, versions, what,
            notes=notes, extra={"params": counts})


if __name__ == "__main__":
    main()
