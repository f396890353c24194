#!/usr/bin/env python3
"""Summarises bench/taskmet_cartpole_sweep.sh's JSON files: per (k, method) the return of each
seed (mean of its last LAST evaluations, each the mean of 10 episodes, max 500), mean ± std
over seeds (sample std), best evaluation, steady steps/s, and TaskMet's ratio to MSE and OMD.

    python3 bench/taskmet_cartpole_summary.py OUT_DIR [LAST]
"""
import glob
import json
import os
import re
import statistics
import sys


def main():
    out = sys.argv[1]
    last = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    rows = {}
    for f in sorted(glob.glob(os.path.join(out, "k*-seed*.json"))):
        for run in json.load(open(f)):
            cfg = run["config"]
            evals = run["evals"]
            tail = [e["mean_return"] for e in evals[-last:]]
            rows.setdefault((cfg["distractors"], cfg["loss"]), []).append(
                {
                    "seed": run["seed"],
                    "ret": sum(tail) / len(tail),
                    "auc": sum(e["mean_return"] for e in evals) / len(evals),
                    "to400": next((e["step"] for e in evals if e["mean_return"] >= 400), None),
                    "best": max(e["mean_return"] for e in evals),
                    "sps": run["steady_steps"] / max(run["steady_seconds"], 1e-12),
                    "secs": run["train_seconds"] + run["eval_seconds"],
                    "steps": run["steps"],
                    "cg_breakdowns": run["stats"].get("cg_breakdowns", 0),
                    "cg_solves": run["stats"].get("cg_solves", 0),
                }
            )
    # Runs without a JSON (an interrupted process) are read back from the per-evaluation
    # lines of their logs; a run that did not reach its last step is marked partial.
    have = {(k, l, r["seed"]) for (k, l), rs in rows.items() for r in rs}
    evals = {}
    done = set()
    for f in sorted(glob.glob(os.path.join(out, "k*-seed*.log"))):
        for line in open(f):
            m = re.match(r"(\w+) k=(\d+) seed=(\d+) step +(\d+) return +([\d.]+)", line)
            d = re.match(r"SUMMARY (\w+) k=(\d+) seed=(\d+):", line)
            if d:
                done.add((int(d[2]), d[1], int(d[3])))
            if m:
                key = (int(m[2]), m[1], int(m[3]))
                evals.setdefault(key, {})[int(m[4])] = float(m[5])
    for (k, loss, seed), ev in evals.items():
        if (k, loss, seed) in have:
            continue
        steps = sorted(ev)
        tail = [ev[s] for s in steps[-last:]]
        rows.setdefault((k, loss), []).append(
            {
                "seed": seed,
                "ret": sum(tail) / len(tail),
                "auc": sum(ev.values()) / len(ev),
                "to400": next((st for st in steps if ev[st] >= 400), None),
                "best": max(ev.values()),
                "sps": float("nan"),
                "secs": float("nan"),
                "steps": steps[-1],
                "partial": (k, loss, seed) not in done,
                "cg_breakdowns": 0,
                "cg_solves": 0,
            }
        )
    means = {}
    print(f"return = mean of the last {last} evaluations (10 episodes each)")
    print("| k | model | seeds | return mean ± std | per seed | best eval | steady steps/s | seconds |")
    print("|---:|---|---:|---:|---|---:|---:|---:|")
    for (k, loss) in sorted(rows, key=lambda t: (t[0], ["mse", "taskmet", "omd"].index(t[1]))):
        rs = sorted(rows[(k, loss)], key=lambda r: r["seed"])
        v = [r["ret"] for r in rs]
        m = statistics.mean(v)
        s = statistics.stdev(v) if len(v) > 1 else 0.0
        means[(k, loss)] = m
        per = " / ".join(
            f"{r['ret']:.1f}" + (f" (partial, {r['steps']} steps)" if r.get("partial") else "")
            for r in rs
        )
        best = " / ".join(f"{r['best']:.0f}" for r in rs)
        sps = statistics.mean(r["sps"] for r in rs)
        secs = sum(r["secs"] for r in rs)
        extra = ""
        if loss == "taskmet":
            bd = sum(r["cg_breakdowns"] for r in rs)
            sv = sum(r["cg_solves"] for r in rs)
            extra = f" (CG breakdowns {bd}/{sv})"
        print(f"| {k} | {loss} | {len(rs)} | {m:.1f} ± {s:.1f} | {per} | {best} | {sps:.0f} | {secs:.0f}{extra} |")
    # Also per run: the mean over *all* its evaluations (the area under the learning curve,
    # which separates agents that both end at 500 but got there at different times) and the
    # first evaluated step with a mean return >= 400.
    for (k, loss) in sorted(rows, key=lambda t: (t[0], ["mse", "taskmet", "omd"].index(t[1]))):
        rs = sorted(rows[(k, loss)], key=lambda r: r["seed"])
        a = [r["auc"] for r in rs]
        sa = statistics.stdev(a) if len(a) > 1 else 0.0
        to = " / ".join("-" if r["to400"] is None else str(r["to400"]) for r in rs)
        print(f"k={k} {loss}: mean over all evaluations {statistics.mean(a):.1f} ± {sa:.1f} "
              f"(" + " / ".join(f"{x:.1f}" for x in a) + f"); first eval >= 400 at step {to}")
    # Paired per seed: the same seed gives every model the same environment, distractor and
    # initialisation streams.
    for k in sorted({k for k, _ in rows}):
        for b in ["mse", "omd"]:
            for what in ["ret", "auc"]:
                t = {r["seed"]: r[what] for r in rows.get((k, "taskmet"), [])}
                o = {r["seed"]: r[what] for r in rows.get((k, b), [])}
                seeds = sorted(set(t) & set(o))
                if not seeds:
                    continue
                d = [t[s] - o[s] for s in seeds]
                sd = statistics.stdev(d) if len(d) > 1 else 0.0
                wins = sum(x > 0 for x in d)
                label = "last evaluations" if what == "ret" else "all evaluations"
                print(f"k={k}: TaskMet - {b.upper()} ({label}) paired {statistics.mean(d):+.1f} "
                      f"± {sd:.1f} ({wins} of {len(d)} seeds ahead: "
                      + " / ".join(f"{x:+.1f}" for x in d) + ")")
    for f in sorted(glob.glob(os.path.join(out, "k*-seed*.json"))):
        for run in json.load(open(f)):
            w = run.get("metric_weights")
            if w:
                st, nz = w[:4], w[4:]
                extra = (f"; distractors mean {statistics.mean(nz):.3f} (min {min(nz):.3f}, "
                         f"max {max(nz):.3f})") if nz else ""
                print(f"metric weights k={run['config']['distractors']} seed={run['seed']}: state "
                      + ", ".join(f"{v:.3f}" for v in st) + extra)
    for k in sorted({k for k, _ in rows}):
        t = means.get((k, "taskmet"))
        for b in ["mse", "omd"]:
            if t is not None and (k, b) in means:
                print(f"k={k}: TaskMet / {b.upper()} = {t / max(means[(k, b)], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
