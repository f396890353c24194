#!/usr/bin/env python3
"""Collects bench/results/*.json (written by bench/harness.py) into bench/results/summary.md.

Each headline ratio of this run is checked against the spread published for it: the JSON of the
same benchmark in bench/results/published/ (the run README quotes), else in
bench/results/previous/ (what bench/run_all.sh found before it started). A rerun "holds" when
its median ratio lies inside that min-max spread.

    python3 bench/summary.py [--against DIR] [--out FILE]
"""

import argparse
import datetime
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def load(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        try:
            with open(path) as fh:
                doc = json.load(fh)
        except (OSError, ValueError) as e:
            print(f"warning: skipping {path}: {e}", file=sys.stderr)
            continue
        if isinstance(doc, dict) and "rows" in doc and "name" in doc:
            out[doc["name"]] = doc
    return out


def key(row):
    return (row["case"], row["metric"], row["num_side"], row["den_side"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=RESULTS)
    ap.add_argument("--against", action="append",
                    help="folder(s) with the reference JSON, first match wins "
                         "(default: results/published, then results/previous)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    against = a.against or [os.path.join(a.results, "published"),
                            os.path.join(a.results, "previous")]
    refs = [(folder, load(folder)) for folder in against]
    current = load(a.results)
    if not current:
        raise SystemExit(f"error: no benchmark results (*.json from bench/harness.py) in {a.results}")
    lines = ["# Benchmark summary", "",
             f"Written by `bench/summary.py` on {datetime.date.today().isoformat()} from "
             "bench/results/*.json. Ratio = ferrolab / anchor (time or memory; below 1: "
             "ferrolab uses less). Each ratio is the median of per-round paired ratios with "
             "their min-max; \"holds\" means this run's median lies inside the reference run's "
             "min-max.", "",
             "| benchmark | ratio | this run: median (min-max) | reference: median (min-max) | "
             "holds | rounds | load before / after |",
             "|---|---|---:|---:|:---:|---:|---|"]
    held = missed = unref = 0
    for name, doc in sorted(current.items()):
        ref_doc, ref_from = None, None
        for folder, docs in refs:
            if name in docs and docs[name].get("started") != doc.get("started"):
                ref_doc, ref_from = docs[name], os.path.basename(folder)
                break
        ref_rows = {key(r): r for r in (ref_doc or {}).get("rows", [])}
        for r in doc["rows"]:
            if not r.get("headline", True) or not r.get("ratio"):
                continue
            q = r["ratio"]
            # Three decimals: small ratios (memory, 0.15) differ in the third.
            cell = f"**{q['median']:.3f}** ({q['min']:.3f}-{q['max']:.3f})"
            ref = ref_rows.get(key(r))
            if ref and ref.get("ratio"):
                p = ref["ratio"]
                inside = p["min"] <= q["median"] <= p["max"]
                held += inside
                missed += not inside
                ref_cell = f"{p['median']:.3f} ({p['min']:.3f}-{p['max']:.3f}), {ref_from}"
                verdict = "yes" if inside else "**no**"
            else:
                unref += 1
                ref_cell, verdict = "-", "-"
            disturbed = " (disturbed runs kept)" if r.get("disturbed_runs") else ""
            lines.append(f"| {name} | {r['label']}{disturbed} | {cell} | {ref_cell} | {verdict} | "
                         f"{doc['rounds']} | {doc['load_before']} / {doc['load_after']} |")
    lines += ["", f"{held} ratios held, {missed} did not, {unref} had no reference run.", ""]
    for name, doc in sorted(current.items()):
        lines.append(f"- {name}: `{doc['command']}`, started {doc['started']}, "
                     f"{doc.get('seconds', 0) / 60:.1f} min, {doc['threads']} threads, "
                     f"{doc['allocator']}.")
    text = "\n".join(lines) + "\n"
    out = a.out or os.path.join(a.results, "summary.md")
    with open(out + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(out + ".tmp", out)
    print(text)


if __name__ == "__main__":
    main()
