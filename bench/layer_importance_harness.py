#!/usr/bin/env python3
"""Layer importance (issue 17), ferrolab vs PyTorch (CPU): evaluation throughput on ResNet-20.

Called by bench/run_layer_importance_bench.sh. ferrolab's
crates/compress/examples/layer_importance_bench and PyTorch's twin
(bench/layer_importance_torch.py) each run as their own process with the same images, batches,
warm-up, timed passes and thread count; bench/harness.py shuffles the processes per round,
gives both sides the same malloc settings and repeats a process other work disturbed.

Before timing, both sides build the model once (`--params-only`) and the harness stops if their
parameter counts differ (the twins must have the same layers).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def params(cmd, env):
    p = subprocess.run(cmd + ["--params-only"], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"error: {' '.join(cmd)} --params-only failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])["params"]


def main():
    ap = H.parser(__doc__.splitlines()[0], rounds=3)
    ap.add_argument("--bin", required=True, help="the built layer_importance_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--sweeps", type=int, default=1)
    a = ap.parse_args()
    H.check_args(a)
    if min(a.images, a.batch, a.iters, a.sweeps) < 1 or a.warmup < 0:
        raise SystemExit("error: --images, --batch, --iters and --sweeps must be at least 1, "
                         "--warmup at least 0")
    common = ["--threads", str(a.threads), "--images", str(a.images), "--batch", str(a.batch),
              "--warmup", str(a.warmup), "--iters", str(a.iters), "--sweeps", str(a.sweeps)]
    env = H.env_for(a)
    ours = [a.bin, *common]
    torch = [a.python, os.path.join(H.HERE, "layer_importance_torch.py"), *common]
    counts = {"ferrolab": params(ours, env), "pytorch": params(torch, env)}
    if counts["ferrolab"] != counts["pytorch"]:
        raise SystemExit(f"error: ferrolab's ResNet-20 has {counts['ferrolab']} parameters, the "
                         f"PyTorch twin {counts['pytorch']}; the models differ")
    jobs = [H.Job("resnet20", "ferrolab", ours + ["--json"]),
            H.Job("resnet20", "pytorch", torch)]
    m = H.measure(a, jobs, env=env)
    shape = f"ResNet-20, {a.images} images of 1x28x28 in batches of {a.batch}"
    rows = [
        H.Row(f"full-forward evaluation, {shape}", "resnet20", "full_images_per_second",
              "ferrolab", "pytorch", unit="img/s"),
        H.Row(f"sweep, cached stage inputs (one probe per layer + base), {shape}", "resnet20",
              "sweep_images_per_second", "ferrolab", "pytorch", unit="img/s"),
        # Issue 17's target as it is worded: the sweep's throughput against PyTorch's plain
        # inference. The sweep recomputes only the stages from the probed layer on, so this is
        # a faster algorithm against a plain forward (bench/README.md rule 4: not a headline).
        H.Row(f"issue 17 target: ferrolab sweep vs PyTorch full-forward inference, {shape}",
              "resnet20", "sweep_images_per_second", "ferrolab", "pytorch",
              den_metric="full_images_per_second", unit="img/s", headline=False),
    ]
    versions = {"ferrolab": H.ferrolab_versions(),
                "pytorch": H.python_modules(a.python, ["torch"])}
    what = (f"Per side, one process: the zoo's full-width ResNet-20 (10 classes, initial weights; "
            f"dense kernels cost the same whatever the values) on {a.images} random 1x28x28 "
            f"images (Fashion-MNIST's shape) in batches of {a.batch}, as the ground-truth sweep "
            f"holds its evaluation set. **full**: {a.warmup} untimed then {a.iters} timed "
            "passes of the whole forward and the arg-max accuracy (ferrolab: the inference "
            "device, batch norm on running statistics; PyTorch: `eval()` under `no_grad`); "
            "images/s is their median. **sweep**: the sweep's own code (ferrolab: "
            "`dataset::probe` on a one-setting grid; PyTorch: the same algorithm written in "
            "torch): a base evaluation, then for each of the 20 layers in order the cached stage "
            "inputs advanced to the layer's stage, the layer fake-quantised to 4 bits (BN "
            "folded), the set evaluated from there, the weights written back; images/s = images "
            f"x (probes + 1) / seconds of the whole sweep, median over {a.sweeps} sweep(s). "
            "Ratio = ferrolab / PyTorch images per second (above 1.0: ferrolab faster).")
    notes = [f"Parameter counts (burn's count: trainable plus batch-norm running statistics), "
             f"checked equal before timing: {counts['ferrolab']:,}."]
    H.write("layer_importance_bench", "Layer importance: ResNet-20 evaluation throughput, "
            "ferrolab vs PyTorch (CPU)", m, rows, versions, what, notes=notes,
            extra={"params": counts})


if __name__ == "__main__":
    main()
