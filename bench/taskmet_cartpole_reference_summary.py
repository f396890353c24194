"""Summarise runs of the reference's CartPole code (bench/run_taskmet_cartpole_reference.sh).

    python3 bench/taskmet_cartpole_reference_summary.py DIR [LAST]

DIR holds one folder per run, named <agent>-s<seed>, each with the reference's eval.log (CSV:
step, episode_reward, one row per evaluation of 10 episodes) next to <agent>-s<seed>.log (its
console output). Prints per run the mean of the last LAST evaluations (default 5, as
bench/taskmet_cartpole_summary.py does for ours), the mean over all evaluations, the best one,
the first step with an evaluation >= 400, and for the metric agent the last logged metric
weights (CartPole's x, x', theta, theta' and the distractors' mean).
"""

import csv
import re
import statistics
import sys
from pathlib import Path


def evals(run: Path):
    with open(run / "eval.log") as f:
        rows = list(csv.DictReader(f))
    return [(int(float(r["step"])), float(r["episode_reward"])) for r in rows]


def last_metric(log: Path):
    if not log.exists():
        return None
    text = log.read_text(errors="replace")
    hits = re.findall(r"metric: \[([^\]]*)\]", text)
    if not hits:
        return None
    vals = [float(v) for v in hits[-1].split()]
    return vals if len(vals) >= 4 else None


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: taskmet_cartpole_reference_summary.py DIR [LAST]")
    root = Path(sys.argv[1])
    last = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    by_agent = {}
    print(f"| run | evals | last {last} | all evals | best | first >= 400 | metric x, x', th, th' / distractors |")
    print("|---|---:|---:|---:|---:|---|---|")
    for run in sorted(p for p in root.iterdir() if p.is_dir() and (p / "eval.log").exists()):
        ev = evals(run)
        if not ev:
            continue
        rets = [r for _, r in ev]
        tail = statistics.mean(rets[-last:])
        first = next((s for s, r in ev if r >= 400), None)
        m = last_metric(root / f"{run.name}.log")
        ms = "–"
        if m:
            rest = m[4:]
            mean_rest = f"{statistics.mean(rest):.2f}" if rest else "–"
            ms = ", ".join(f"{v:.3f}" for v in m[:4]) + f" / {mean_rest}"
        print(f"| {run.name} | {len(ev)} (to step {ev[-1][0]}) | {tail:.1f} | {statistics.mean(rets):.1f} "
              f"| {max(rets):.1f} | {first if first is not None else '–'} | {ms} |")
        by_agent.setdefault(run.name.rsplit("-s", 1)[0], []).append(tail)
    for agent, v in sorted(by_agent.items()):
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        print(f"{agent}: last-{last} mean {statistics.mean(v):.1f} ± {sd:.1f} over {len(v)} run(s)")


if __name__ == "__main__":
    main()
