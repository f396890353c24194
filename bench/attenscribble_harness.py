#!/usr/bin/env python3
"""AttenScribble's training step, ferrolab vs PyTorch (CPU): same network, losses, batch, threads.

Called by bench/run_attenscribble_bench.sh. For each case (a preset of configs/attenscribble and a
method) ferrolab's crates/vision/examples/attenscribble_step_bench and the PyTorch twin
(bench/attenscribble_torch.py) each run as their own process with the same warm-up, timed steps
and thread count; bench/harness.py shuffles the processes per round, gives both sides the same
malloc settings and repeats a process other work disturbed (bench/README.md, "The rule").

Before timing, both sides build each case's network (`--params-only`) and the harness stops if
the parameter counts differ, and both compute the method's loss of the same fixed logits and
attention logits on the benchmark batch (`--check-loss`), which must agree to 1e-4 (relative).
"""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

METHODS = {
    "attenscribble": "AttenScribble (UNet + attention; pCE + gated CRF + attentive loss)",
    "pce": "pCE (UNet; partial CE)",
    "pce_gcrf": "pCE + gated CRF (UNet)",
    "full": "full supervision (UNet; CE + Dice)",
}
PRESETS = {"small": "64x64, batch 4", "medium": "64x64, batch 4", "paper": "128x128, batch 8",
           "quick": "64x64, batch 4"}


def ask(cmd, flag, key, env):
    p = subprocess.run(cmd + [flag], env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"error: {' '.join(cmd)} {flag} failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])[key]


def main():
    ap = H.parser(__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built attenscribble_step_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--cases", default="small:attenscribble,small:pce,small:pce_gcrf,small:full,"
                    "paper:attenscribble,paper:pce_gcrf",
                    help="comma-separated preset:method pairs")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--name", default=os.environ.get("NAME", "attenscribble_bench"),
                    help="result file name under bench/results (e.g. a rerun beside the first)")
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
        torch = [a.python, os.path.join(H.HERE, "attenscribble_torch.py"), "--preset", preset,
                 "--method", method, *common]
        params = {"ferrolab": ask(ours, "--params-only", "params", env),
                  "pytorch": ask(torch, "--params-only", "params", env)}
        if params["ferrolab"] != params["pytorch"]:
            raise SystemExit(f"error: {case}: ferrolab has {params['ferrolab']} parameters, the "
                             f"PyTorch twin {params['pytorch']}; the networks differ")
        loss = {"ferrolab": ask(ours, "--check-loss", "loss", env),
                "pytorch": ask(torch, "--check-loss", "loss", env)}
        rel = abs(loss["ferrolab"] - loss["pytorch"]) / max(abs(loss["pytorch"]), 1e-12)
        if not rel <= 1e-4:
            raise SystemExit(f"error: {case}: the loss of fixed logits is {loss['ferrolab']} in "
                             f"ferrolab and {loss['pytorch']} in the PyTorch twin; the losses "
                             "differ")
        checks[case] = {"params": params, "check_loss": loss}
        jobs.append(H.Job(case, "ferrolab", ours + ["--json"]))
        jobs.append(H.Job(case, "pytorch", torch))
    m = H.measure(a, jobs, env=env)
    rows = []
    for preset, method in cases:
        case = f"{preset}:{method}"
        label = f"{METHODS[method]}, {preset} preset ({PRESETS[preset]})"
        rows += [
            H.Row(f"training step, {label}", case, "train_ms", "ferrolab", "pytorch"),
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
            "steps of `ferrolab attenscribble`'s step (forward, the method's losses with the "
            "preset's weights and windows, loss read back, backward, SGD momentum 0.9 + weight "
            "decay 1e-4) on one fixed batch, no data loading or augmentation on either side; "
            "figures are the medians of the timed steps. ferrolab's gated CRF is a hand-written "
            "CPU loop (value and gradient in one pass); PyTorch's is the reference's `F.unfold` "
            "formulation, the way the reference code computes it. Ratio = ferrolab / PyTorch.")
    notes = ["Checked before timing, per case: parameter counts (burn's count, batch-norm running "
             "statistics included) and the loss of fixed logits / attention logits: "
             + "; ".join(f"{k}: {v['params']['ferrolab']:,} params, loss "
                         f"{v['check_loss']['ferrolab']:.6g} vs {v['check_loss']['pytorch']:.6g}"
                         for k, v in checks.items()) + "."]
    H.write(a.name, "AttenScribble training step: ferrolab vs PyTorch (CPU)", m,
            rows, versions, what, notes=notes, extra={"checks": checks})


if __name__ == "__main__":
    main()
