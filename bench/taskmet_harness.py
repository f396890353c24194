#!/usr/bin/env python3
"""TaskMet outer step on CubicTopK: ferrolab vs the reference PyTorch code (CPU), and both sides'
normalised test decision quality per seed.

Called by bench/run_taskmet_reference.sh. Timing: one process per side and round, order shuffled
per round (bench/harness.py), the same sizes (200 training instances of 50 items, top-1), the
reference's settings (config/main.yaml, method/metric.yaml, problem/cubic.yaml) on both sides,
the same untimed warm-up steps (the first one cold, with its 500 inner iterations) and the same
number of timed outer steps, whose median each side reports. Decision quality: each side trains
to the end once per seed (ferrolab's `train(Method::TaskMet, ...)`, the reference's own main.py)
and reports its normalised test DQ; those processes run once each, also in a shuffled order and
on a quiet machine, after the timing rounds.
"""

import copy
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

DEFAULT_REF = os.path.join(H.HERE, ".cache", "taskmet", "LODLs")


def _f(v, d=3):
    return "-" if v is None else f"{v:.{d}f}"


def logged(key):
    """Parses a job's last stdout line and echoes it to stderr, so that a long run shows its
    values as they come."""
    def parse(stdout, _tmp):
        lines = [line for line in stdout.splitlines() if line.strip()]
        if not lines:
            raise SystemExit(f"error: {key} printed nothing")
        out = json.loads(lines[-1])
        print(f"   {key}: {lines[-1]}", file=sys.stderr, flush=True)
        return out
    return parse


def times(x):
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def dq_section(md, seeds):
    """Markdown and JSON for the per-seed decision quality runs."""
    rows, out = [], {}
    diffs = []
    for s in seeds:
        f = (md.values.get(f"dq-seed{s}/ferrolab") or [{}])[0]
        r = (md.values.get(f"dq-seed{s}/reference") or [{}])[0]
        out[str(s)] = {"ferrolab": f, "reference": r}
        fv, rv = f.get("test_dq_norm"), r.get("test_dq_norm")
        if fv is not None and rv is not None:
            diffs.append(fv - rv)
        rows.append(
            f"| {s} | {_f(fv, 4)} | {_f(rv, 4)} | "
            f"{'-' if fv is None or rv is None else f'{fv - rv:+.4f}'} | "
            f"{f.get('best_step', '-')} / {f.get('steps_run', '-')} | "
            f"{r.get('best_step', '-')} / {r.get('steps_run', '-')} | "
            f"{_f(f.get('train_s'), 1)} | {_f(r.get('train_s'), 1)} |")

    def ms(side):
        v = [out[str(s)][side].get("test_dq_norm") for s in seeds]
        v = [x for x in v if x is not None]
        if not v:
            return "-"
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        return f"{statistics.mean(v):.4f} ± {sd:.4f}"

    text = [
        "## Normalised test decision quality, per seed",
        "",
        "Each side trains TaskMet on CubicTopK to the end once per seed (up to 1000 outer steps, "
        "validation every 10, patience 100) and tests the checkpoint it keeps: "
        "`(DQ − DQ_random) / (DQ_optimal − DQ_random)` on its 400 test instances, random = the "
        "mean over 10 draws of U[0, 1) predictions. The reference is its own `main.py` "
        "(hydra, `seed=N`, `dataset_seed=0`; it pins torch to one thread itself); ferrolab is "
        "`taskmet_cubic_step --train` (`learn::train(Method::TaskMet, ...)` with "
        "`LearnConfig::reference(\"cubic\")`, `--threads` as above). Each side draws its own "
        "instances of the same distribution (`dataset_seed`/`--data-seed` 0).",
        "",
        "| seed | ferrolab | reference | ferrolab − reference | ferrolab best / steps run | "
        "reference best / steps run | ferrolab train s | reference train s |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Mean ± std over seeds: ferrolab {ms('ferrolab')}, reference {ms('reference')}"
        + (f"; paired difference {statistics.mean(diffs):+.4f}." if diffs else "."),
    ]
    dist = {k: v for k, v in md.disturbed.items() if v}
    if dist:
        text.append(f"Training processes during which other processes used the CPUs "
                    f"(times only; DQ is unaffected): {', '.join(sorted(dist))}.")
    return "\n".join(text), out


def main():
    ap = H.parser(__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built taskmet_cubic_step example")
    ap.add_argument("--python", default=sys.executable,
                    help="python with torch and the reference's dependencies")
    ap.add_argument("--ref", default=DEFAULT_REF, help="the reference's LODLs/ folder")
    ap.add_argument("--ref-commit", default="?", help="the reference's git commit")
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed outer steps per process, the first (cold) one included")
    ap.add_argument("--steps", type=int, default=20, help="timed outer steps per process")
    ap.add_argument("--seed", type=int, default=0, help="model seed of the timing runs")
    ap.add_argument("--train-seeds", default=os.environ.get("TRAIN_SEEDS", "0 1 2"),
                    help="seeds of the decision-quality runs (space-separated; empty: none)")
    ap.add_argument("--train-override", action="append", default=[],
                    help="hydra override for the reference's training runs only (a smoke test, "
                         "e.g. iters=20; recorded in the result), repeatable")
    a = ap.parse_args()
    H.check_args(a)
    if a.warmup < 1 or a.steps < 1:
        raise SystemExit("error: --warmup and --steps must be at least 1")
    try:
        seeds = [int(s) for s in a.train_seeds.replace(",", " ").split()]
    except ValueError:
        raise SystemExit(f"error: --train-seeds must be integers (got {a.train_seeds!r})")
    script = os.path.join(H.HERE, "taskmet_reference.py")
    common = ["--threads", str(a.threads), "--warmup", str(a.warmup), "--steps", str(a.steps),
              "--seed", str(a.seed)]
    jobs = [H.Job("cubic", "ferrolab", [a.bin, *common, "--json"], logged("cubic/ferrolab")),
            H.Job("cubic", "reference", [a.python, script, "--ref", a.ref, *common],
                  logged("cubic/reference"))]
    m = H.measure(a, jobs)

    # The table prints ratios to two decimals; this one is far below 0.01.
    precise = ["## Ratios to three significant figures", "",
               "| what | ferrolab / reference, median (min-max) | reference / ferrolab, median |",
               "|---|---:|---:|"]
    for label, num, den in (("outer step", "step_ms", "step_ms"),
                            ("outer step vs the loop as written", "step_ms",
                             "step_with_logging_ms"),
                            ("inner solve", "inner_ms", "inner_ms")):
        r = [f[num] / g[den] for f, g in zip(m.values["cubic/ferrolab"],
                                              m.values["cubic/reference"]) if g.get(den)]
        if r:
            precise.append(f"| {label} | {statistics.median(r):.3g} ({min(r):.3g}-{max(r):.3g}) "
                           f"| {times(1 / statistics.median(r))}x |")
    extra = {"markdown": "\n".join(precise)}
    if seeds:
        once = copy.copy(a)
        once.rounds, once.tries = 1, 1
        dq_jobs = []
        for s in seeds:
            dq_jobs.append(H.Job(f"dq-seed{s}", "ferrolab",
                                 [a.bin, "--train", "--seed", str(s), "--threads",
                                  str(a.threads), "--json"], logged(f"dq-seed{s}/ferrolab")))
            dq_jobs.append(H.Job(f"dq-seed{s}", "reference",
                                 [a.python, script, "--ref", a.ref, "--train", "--seed", str(s),
                                  *[f"--override={o}" for o in a.train_override]],
                                 logged(f"dq-seed{s}/reference")))
        md = H.measure(once, dq_jobs, label="DQ ")
        text, dq = dq_section(md, seeds)
        extra = {"markdown": extra["markdown"] + "\n\n" + text, "dq": dq,
                 "dq_seconds": round(md.seconds, 1), "dq_load_after": md.load_after}

    rows = [
        H.Row("TaskMet outer step, CubicTopK (inner warm-start + task gradient + CG implicit "
              "gradient + metric Adam)", "cubic", "step_ms", "ferrolab", "reference"),
        H.Row("same, reference loop body as written (with its per-step train DQ/MSE logging)",
              "cubic", "step_ms", "ferrolab", "reference", den_metric="step_with_logging_ms",
              headline=False),
        H.Row("inner solve alone (100 warm-started Adam iterations on 10 instances)", "cubic",
              "inner_ms", "ferrolab", "reference", headline=False),
        H.Row("first (cold) step, 500 inner iterations (one sample per process)", "cubic",
              "first_step_ms", "ferrolab", "reference", headline=False),
    ]
    versions = {
        "ferrolab": H.ferrolab_versions(),
        "reference": {"taskmet": a.ref_commit,
                      **H.python_modules(a.python, ["torch", "torchopt", "hydra", "omegaconf",
                                                    "cvxpy", "cvxpylayers", "pandas",
                                                    "numpy"])},
    }
    what = (
        "One TaskMet outer step on CubicTopK at the reference's sizes (200 training instances of "
        "50 items, one feature, y = 10(x³ − 0.65x), top-1) and settings (linear predictor; metric "
        "net 1-200-1; inner Adam lr 0.1, batches of 10 instances, up to 100 warm-started "
        "iterations, stop below gradient norm 1e-3, clip 1; normal CG, 5 iterations, ridge 1e-5, "
        "on 10 instances; outer batch 50 through the entropic soft top-k, ε 0.01; metric Adam lr "
        f"1e-3). {a.warmup} untimed outer steps (the first with 500 inner iterations), then the "
        f"median of {a.steps} timed steps per process; timing seed {a.seed}. The reference is "
        "github.com/bamos/taskmet `LODLs/` at the commit named above, run unmodified on the CPU: "
        "its `Workspace` built from its own config, then the body of its training loop "
        "(`Workspace.run`) without the validation every 10 steps. Ratio = ferrolab / reference.")
    notes = [
        "The reference is not edited; bench/taskmet_reference.py patches at run time what it "
        "needs here: `torch.Tensor.cuda` / `nn.Module.cuda` return self (MetricNN calls "
        "`.cuda()` unconditionally), `metis` is an empty stand-in module (BipartiteMatching.py "
        "imports it and needs the METIS C library; CubicTopK never calls it), and "
        "`pandas.DataFrame.append` (gone in pandas 2) is `pandas.concat` for its problem cache.",
        "Reference step = `update_predictor` (inner Adam loop, then the torchopt normal-CG "
        "custom root) + the 50-instance outer loss through `TopK_custom` (200 Sinkhorn "
        "iterations each) + `loss.backward()` (implicit gradient) + the metric's Adam step. "
        "`step_ms` leaves out what its loop computes only for its log (a second soft top-k per "
        "instance for the batch DQ, the MSE, `loss.item()`); the second row keeps it.",
        "Not the same code path inside the layers: ferrolab solves the soft top-k's two-anchor "
        "transport in closed form (a scalar root by bisection; the Sinkhorn fixed point "
        "exactly) with an O(n) analytic derivative, where the reference iterates Sinkhorn 200 "
        "times and forms n×n×2 tensors in its backward; ferrolab batches the instances and uses "
        "R-operator Hessian-vector products, the reference loops over instances in Python and "
        "gets them from functorch autograd. The bilevel algorithm, sizes, batches, iteration "
        "counts and CG settings are the same.",
    ]
    if a.train_override:
        notes.append("Smoke test, not a result: the reference's training runs had the overrides "
                     f"{a.train_override}; ferrolab's did not.")
    iters = {side: m.series(f"cubic/{side}", "inner_iters_median")
             for side in ("ferrolab", "reference")}
    notes.append("Inner iterations per timed step (each process's median, over the rounds): "
                 + "; ".join(f"{side} {sorted(v)}" for side, v in iters.items())
                 + " (cap 100; an inner solve stops earlier only when the clipped gradient norm "
                 "of its 10-instance batch falls below 1e-3).")
    H.write("taskmet_reference", "TaskMet outer step on CubicTopK: ferrolab vs the reference "
            "PyTorch code (CPU)", m, rows, versions, what, notes=notes, extra=extra)


if __name__ == "__main__":
    main()
