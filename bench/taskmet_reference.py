#!/usr/bin/env python3
"""TaskMet's reference code (github.com/bamos/taskmet, LODLs/) on CubicTopK, on the CPU.

Called by bench/taskmet_harness.py (bench/run_taskmet_reference.sh). The reference is used as
published: its files are read from a materialised copy (bench/.cache/taskmet/LODLs, git-ignored,
nothing of it committed) and never edited. What it needs to run here is patched at run time,
in this process, before it is imported:

- `torch.Tensor.cuda` and `torch.nn.Module.cuda` return `self` (its MetricNN calls `.cuda()`
  unconditionally; everything else already follows `torch.cuda.is_available()`).
- `metis` is an empty stand-in module: `losses.py` and `workspace.py` import
  `BipartiteMatching.py`, which imports the METIS bindings (they need the C library at import).
  CubicTopK never calls them.
- `pandas.DataFrame.append` (removed in pandas 2) is `pandas.concat`: `utils.init_if_not_saved`
  appends to its problem cache index with it.

Timing mode (default): builds the reference's `Workspace` with its own config (main.yaml,
method/metric.yaml, problem/cubic.yaml, `seed=N`), then runs its training loop body
(workspace.py `Workspace.run`, without the validation every `valfreq` steps and without the
CSV logger): `model.update_predictor` (warm-started inner Adam, then
`make_predictor_differentiable`, the torchopt normal-CG custom root), the outer loss over a
batch of 50 instances through the soft top-k, `loss.backward()` (implicit gradient) and the
metric's Adam step. `--warmup` outer steps (the first with its 500 inner iterations) are not
timed; then `--steps` are, and the medians are printed as one JSON line. `step_ms` leaves out
what the loop body computes only for its log (the training batch's DQ through a second soft
top-k, its MSE, `loss.item()`); `step_with_logging_ms` is the loop body as written.

`--train`: runs the reference's `main.py` itself (hydra, `seed=N`, its run directory in a
temporary folder) in this process, so it trains for up to 1000 outer steps with validation and
early stopping, reloads `best.pkl` and tests; prints its normalised test DQ from
`test_stats.json` as one JSON line. main.py sets torch to one thread itself.
"""

import argparse
import json
import os
import random
import runpy
import shutil
import statistics
import sys
import tempfile
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REF = os.path.join(HERE, ".cache", "taskmet", "LODLs")


def shim():
    import pandas as pd
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    if "metis" not in sys.modules:
        sys.modules["metis"] = types.ModuleType("metis")
    if not hasattr(pd.DataFrame, "append"):
        def append(self, other, ignore_index=True, **_):
            return pd.concat([self, pd.DataFrame(other)], ignore_index=ignore_index)

        pd.DataFrame.append = append


def compose(ref, overrides):
    from hydra import compose as hcompose, initialize_config_dir

    with initialize_config_dir(config_dir=os.path.join(ref, "config"), version_base="1.1"):
        return hcompose("main.yaml", overrides=overrides)


def median(v):
    return statistics.median(v) if v else float("nan")


def time_steps(a):
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    shim()
    cfg = compose(a.ref, [f"seed={a.seed}", f"dataset_seed={a.data_seed}"])
    from workspace import Workspace
    from losses import get_loss_fn
    from models import MetricModel

    ws = Workspace(cfg)
    assert isinstance(ws.model, MetricModel)
    loss_fn = get_loss_fn("dfl", ws.problem, **dict(cfg.loss_kwargs))
    X_train, Y_train, Y_train_aux = ws.problem.get_train_data()

    # Count inner iterations: update_predictor steps its Adam once per iteration.
    inner = {"n": 0}
    opt = ws.model.predictor_optimizer
    step_fn = opt.step

    def counted(*args, **kw):
        inner["n"] += 1
        return step_fn(*args, **kw)

    opt.step = counted

    rows = []
    for it in range(a.warmup + a.steps):
        inner["n"] = 0
        log_s = 0.0
        t0 = time.perf_counter()
        # --- workspace.py Workspace.run, loop body ---
        num_iters = cfg.num_inner_iters if ws.train_iter > 0 else cfg.num_inner_iters_init
        ws.model.update_predictor(X_train, Y_train, num_iters=num_iters, verbose=cfg.verbose)
        t1 = time.perf_counter()
        losses, DQ, mse = [], [], []
        for i in random.sample(range(len(X_train)), min(cfg.batchsize, len(X_train))):
            pred = ws.model(X_train[i]).squeeze()
            losses.append(loss_fn(pred, Y_train[i], aux_data=Y_train_aux[i],
                                  partition="train", index=i))
            tl = time.perf_counter()
            Zs_pred = ws.problem.get_decision(pred, aux_data=Y_train_aux[i], isTrain=True)
            DQ.append(ws.problem.get_objective(Y_train[i], Zs_pred,
                                               aux_data=Y_train_aux[i]).item())
            mse.append((pred - Y_train[i]).pow(2).mean().item())
            log_s += time.perf_counter() - tl
        loss = torch.stack(losses).mean()
        t2 = time.perf_counter()
        ws.optimizer.zero_grad()
        loss.backward()
        t3 = time.perf_counter()
        metrics = {"outer_loss": loss.item(), "DQ": np.mean(DQ), "MSE": np.mean(mse)}
        t4 = time.perf_counter()
        log_s += t4 - t3
        ws.optimizer.step()
        ws.train_iter += 1
        t5 = time.perf_counter()
        # ---
        total = t5 - t0
        rows.append({"step": total - log_s, "with_log": total, "inner": t1 - t0,
                     "fwd": (t2 - t1) - (log_s - (t4 - t3)), "bwd": t3 - t2, "opt": t5 - t4,
                     "log": log_s, "iters": inner["n"], "loss": metrics["outer_loss"]})
        if metrics["outer_loss"] != metrics["outer_loss"]:
            raise SystemExit(f"error: outer loss is NaN at step {it}")
    timed = rows[a.warmup:]
    ms = lambda k: 1e3 * median([r[k] for r in timed])  # noqa: E731
    return {
        "step_ms": ms("step"),
        "step_with_logging_ms": ms("with_log"),
        "inner_ms": ms("inner"),
        "task_fwd_ms": ms("fwd"),
        "backward_ms": ms("bwd"),
        "metric_update_ms": ms("opt"),
        "logging_ms": ms("log"),
        "first_step_ms": 1e3 * rows[0]["step"],
        "inner_iters_median": median([r["iters"] for r in timed]),
        "threads": torch.get_num_threads(),
        "warmup": a.warmup,
        "steps": a.steps,
        "seed": a.seed,
        "data_seed": a.data_seed,
    }


def train(a):
    shim()
    main_py = os.path.join(a.ref, "main.py")
    tmp = tempfile.mkdtemp(prefix="taskmet-ref-")
    run_dir = os.path.join(tmp, "run")
    argv = [main_py, f"seed={a.seed}", f"dataset_seed={a.data_seed}",
            f"hydra.run.dir={run_dir}", *a.override]
    saved_argv, saved_cwd = sys.argv, os.getcwd()
    sys.argv = argv
    t0 = time.perf_counter()
    try:
        try:
            runpy.run_path(main_py, run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                raise SystemExit(f"error: the reference's main.py exited with {e.code}")
        wall = time.perf_counter() - t0
        with open(os.path.join(run_dir, "test_stats.json")) as fh:
            stats = json.load(fh)
        # log.csv rows: partition, iter, inner_loss, outer_loss, DQ, MSE. The checkpoint
        # main.py tests (best.pkl) is the first validation with the lowest outer loss; the
        # `best_iter` inside it was recorded before it was updated (it lags one validation).
        steps_run, best_step, best_loss = 0, None, float("inf")
        with open(os.path.join(run_dir, "log.csv")) as fh:
            for line in fh:
                p = line.strip().split(",")
                if len(p) < 4 or not p[1].isdigit():
                    continue
                if p[0] == "Train":
                    steps_run = max(steps_run, int(p[1]) + 1)
                elif p[0] == "Val" and float(p[3]) < best_loss:
                    best_step, best_loss = int(p[1]), float(p[3])
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    import torch
    return {
        "test_dq_norm": stats["test_dq_norm"],
        "test_dq": stats["test_dq_unnorm"],
        "dq_random": stats["random_dq_unnorm"],
        "dq_optimal": stats["optimal_dq_unnorm"],
        "val_dq_norm": stats["val_dq_norm"],
        "train_dq_norm": stats["train_dq_norm"],
        "best_step": best_step,
        "best_iter_recorded": stats["best_iter"],
        "steps_run": steps_run,
        "train_s": wall,
        "threads": torch.get_num_threads(),
        "seed": a.seed,
        "data_seed": a.data_seed,
        "run_dir": run_dir if a.keep else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", default=DEFAULT_REF, help="the reference's LODLs/ folder")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3,
                    help="untimed outer steps, the first (cold, 500 inner iterations) included")
    ap.add_argument("--steps", type=int, default=20, help="timed outer steps")
    ap.add_argument("--seed", type=int, default=0, help="the reference's `seed`")
    ap.add_argument("--data-seed", type=int, default=0, help="the reference's `dataset_seed`")
    ap.add_argument("--train", action="store_true",
                    help="run main.py to the end and report its normalised test DQ")
    ap.add_argument("--override", action="append", default=[],
                    help="extra hydra override for --train (e.g. iters=50), repeatable")
    ap.add_argument("--keep", action="store_true", help="keep main.py's run directory")
    a = ap.parse_args()
    if a.threads < 1 or a.warmup < 1 or a.steps < 1:
        ap.error("--threads, --warmup and --steps must be at least 1 "
                 "(the first warm-up step is the cold one)")
    a.ref = os.path.abspath(a.ref)
    if not os.path.isfile(os.path.join(a.ref, "main.py")):
        ap.error(f"no reference at {a.ref} (bench/run_taskmet_reference.sh materialises it)")
    # main.py re-executes itself with PYTHONHASHSEED=0; do the same before anything runs, so
    # both modes see the hash seed the reference's runs had.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    sys.path.insert(0, a.ref)
    # Its problem cache (utils.init_if_not_saved) lives in LODLs/models.
    os.makedirs(os.path.join(a.ref, "models"), exist_ok=True)
    import warnings
    warnings.filterwarnings("ignore")
    # The reference prints its progress to stdout; send it to stderr so that the JSON line
    # printed last is the only stdout line.
    real_stdout, sys.stdout = sys.stdout, sys.stderr
    if a.train:
        out = train(a)
    else:
        work = tempfile.mkdtemp(prefix="taskmet-ref-time-")
        cwd = os.getcwd()
        os.chdir(work)  # Workspace records os.getcwd() as its work_dir
        try:
            out = time_steps(a)
        finally:
            os.chdir(cwd)
            shutil.rmtree(work, ignore_errors=True)
    import torch
    out["torch"] = torch.__version__
    sys.stdout = real_stdout
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
