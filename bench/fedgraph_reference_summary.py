"""Table of bench/run_fedgraph_reference.sh's runs: FederatedScope's own code on Cora (Louvain).

    python3 bench/fedgraph_reference_summary.py OUT [--markdown]

For each regime and cell: the test accuracy FS reports (its 'Final' line: the round of lowest
validation loss; FedAvg and global from the server's evaluation of the global model on the
whole graph, local as the clients' test-node-weighted average over their own subgraphs), mean
± sample std over the seeds found, the per-seed values and the validation accuracy at the same
round, which is what a grid selection by validation would read; then, per regime, the cell of
best mean validation accuracy (the grid selection). Runs not finished are listed as missing.
"""
import ast
import glob
import os
import re
import statistics
import sys


def final_line(path):
    with open(path) as f:
        for line in f:
            if "'Final'" in line:
                # FS writes numpy scalars with their repr; strip it to plain literals.
                line = re.sub(r"np\.float64\(([^()]*)\)", r"\1", line.strip())
                line = re.sub(r"\bnan\b", "None", line)
                return ast.literal_eval(line)
    return None


def scores(result):
    raw = result["Results_raw"]
    if "server_global_eval" in raw:
        d = raw["server_global_eval"]
        return d["test_acc"], d["val_acc"]
    d = raw["client_summarized_weighted_avg"]
    return d["test_acc"], d["val_acc"]


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    rows = {}
    missing = []
    for log in sorted(glob.glob(os.path.join(out, "runs", "*", "run", "eval_results.log"))):
        run_id = log.split(os.sep)[-3]
        m = re.match(r"(\w+?)_lr([\d.]+)_st(\d+)_seed(\d+)$", run_id)
        if not m:
            continue
        regime, lr, steps, seed = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
        res = final_line(log)
        if res is None:
            missing.append(run_id)
            continue
        test, val = scores(res)
        rows.setdefault((regime, lr, steps), []).append((seed, 100 * test, 100 * val))
    print("| regime | lr | steps | seeds | test (FS's figure) | per seed | val at that round |")
    print("|---|---|---|---|---|---|---|")
    for (regime, lr, steps), runs in sorted(rows.items()):
        runs.sort()
        tests = [t for _, t, _ in runs]
        vals = [v for _, _, v in runs]
        sd = statistics.stdev(tests) if len(tests) > 1 else float("nan")
        per = " / ".join(f"{t:.2f}" for t in tests)
        print(f"| {regime} | {lr} | {steps} | {','.join(str(s) for s, _, _ in runs)} | "
              f"{statistics.mean(tests):.2f} ± {sd:.2f} | {per} | {statistics.mean(vals):.2f} |")
    # The selection compares cells on the seeds every cell of the regime has, so a cell run
    # with more seeds is not favoured or penalised by them.
    best = {}
    for regime in sorted({k[0] for k in rows}):
        cells = {k: v for k, v in rows.items() if k[0] == regime}
        # A cell run on fewer seeds than the others (cut short) is left out of the selection
        # rather than shrinking every cell's comparison to its seeds.
        most = max(len(v) for v in cells.values())
        full = [v for v in cells.values() if len(v) >= min(most, 3)]
        common = set.intersection(*({s for s, _, _ in v} for v in full))
        cells = {k: v for k, v in cells.items() if common <= {s for s, _, _ in v}}
        if not common:
            continue
        for (_, lr, steps), runs in cells.items():
            kept = [r for r in runs if r[0] in common]
            val = statistics.mean(v for _, _, v in kept)
            test = statistics.mean(t for _, t, _ in kept)
            if regime not in best or val > best[regime][0]:
                best[regime] = (val, lr, steps, test, sorted(common), len(cells))
    print()
    for regime, (val, lr, steps, test, seeds, ncells) in sorted(best.items()):
        print(f"{regime}: of {ncells} cells, best mean validation accuracy on seeds "
              f"{','.join(map(str, seeds))}: lr {lr}, {steps} steps (val {val:.2f}, test {test:.2f})")
    if missing:
        print(f"\nnot finished: {', '.join(missing)}")


if __name__ == "__main__":
    main()
