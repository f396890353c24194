"""Set the SD-GT reference code's curves (bench/run_sdgt_reference.sh) beside ours
(`sdgt_probe` JSON lines), round by round, as a markdown table.

    python3 bench/sdgt_reference_summary.py REF_OUT SEED [OURS.jsonl ...]

REF_OUT is the OUT folder the run script wrote (REF_OUT/<algo>-s<SEED>/curve.jsonl); each
OURS file is one `sdgt_probe` run's stdout. Columns are named ref:<algo> and ours:<algo>.
"""

import json
import os
import sys


def read_lines(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path}:{n}: not JSON ({e})")
    return rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__.strip().split("\n\n")[1])
    ref, seed = sys.argv[1], sys.argv[2]
    cols = {}
    for algo in ("sdgt", "sd_fedavg", "scaffold"):
        path = os.path.join(ref, f"{algo}-s{seed}", "curve.jsonl")
        if os.path.exists(path):
            cols[f"ref:{algo}"] = {r["round"]: r for r in read_lines(path)}
    for path in sys.argv[3:]:
        rows = read_lines(path)
        if rows:
            cols[f"ours:{rows[0]['algo']}"] = {r["round"]: r for r in rows}
    if not cols:
        sys.exit(f"error: no curves under {ref} for seed {seed}")
    rounds = sorted({k for c in cols.values() for k in c if k > 0})
    names = list(cols)
    print("| round | " + " | ".join(names) + " |")
    print("|---:|" + "---:|" * len(names))
    for k in rounds:
        cells = [f"{cols[n][k]['test_accuracy']:.3f}" if k in cols[n] else "" for n in names]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print()
    for n in names:
        c = cols[n]
        done = [k for k in c if k > 0]
        if not done:
            continue
        best = max(done, key=lambda k: c[k]["test_accuracy"])
        last = max(done)
        print(f"- {n}: last round {last} {c[last]['test_accuracy']:.3f}, best {c[best]['test_accuracy']:.3f} "
              f"(round {best}), {c[last]['seconds']:.0f} s")


if __name__ == "__main__":
    main()
