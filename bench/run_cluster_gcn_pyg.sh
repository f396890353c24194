#!/usr/bin/env bash
# Cluster-GCN training epoch: ferrolab vs PyTorch Geometric, like for like, under the shared
# discipline of bench/harness.py (each run its own process, order shuffled per round, both
# sides with the same malloc settings and threads, disturbed runs repeated, medians over rounds
# with min-max). Writes bench/results/cluster_gcn_pyg.{md,json}.
#
#   bench/run_cluster_gcn_pyg.sh                      # 100k nodes, q 10, 3 epochs, 5 rounds
#   NODES=20000 ROUNDS=1 bench/run_cluster_gcn_pyg.sh # a quick try
#   TRIES=2 IDLE_WAIT=20 bench/run_cluster_gcn_pyg.sh # on a machine other work also uses
#
# Both sides train on the same generated graph, split and METIS clusters (written once by the
# export_graph example; ferrolab partitions the same graph with the same seed, and the edge cut
# both sides report is compared), the same model (3 x Cluster-GCN conv with diagonal
# enhancement lambda 1, LayerNorm, ReLU, hidden 128, dropout 0.2, Adam), q clusters a batch.
# PyG builds its batches with its own ClusterData / ClusterLoader, fed the exported partition
# (its METIS needs torch-sparse or pyg-lib, which PyPI does not carry). Sides:
#   ferrolab in memory / out of core      `ferrolab cluster-gcn`, graph in RAM / cluster store
#   PyG transform-first                    ClusterGCNConv's parameters and normalisation,
#                                          Â (x W) + b + x W_root: ferrolab's algebraic order
#   PyG propagate-first (literal)          PyG's ClusterGCNConv as it is, lin_out(Â x) + ...
# bench/cluster_gcn_pyg.py --check verifies first that the two PyG orders agree (and that the
# batches are the induced subgraphs). Epoch time is the mean over all epochs on both sides
# (ferrolab's epoch_seconds; neither excludes a warm-up epoch). Memory: the training phase's
# peak RSS, and what training added to the RSS it started with.
set -euo pipefail
NODES="${NODES:-100000}"
PARTS="${PARTS:-$((NODES / 1000))}"
Q="${Q:-10}"
EPOCHS="${EPOCHS:-3}"
THREADS="${THREADS:-2}"
ROUNDS="${ROUNDS:-5}"
CARGO="${CARGO:-cargo}" # e.g. CARGO="flock /tmp/cargo.lock cargo" where builds must not overlap
for v in NODES PARTS Q EPOCHS THREADS ROUNDS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [[ "${!v}" -lt 1 ]]; then
        echo "error: $v must be a positive integer (got '${!v}')" >&2
        exit 2
    fi
done
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV=bench/.venv
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c "import torch_geometric" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet torch torch_geometric numpy
fi
echo ">> building ferrolab and the export_graph example (release)" >&2
$CARGO build --release -q -p ferrolab -p ferrolab-graph --example export_graph
echo ">> checking that PyG's two orders agree" >&2
"$PY" bench/cluster_gcn_pyg.py --check 2>&1 | grep -E '^(ok|error|conv|model|batch)' >&2
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
GRAPH="$WORK/graph.npz"
target/release/examples/export_graph "$GRAPH" "$NODES" "$PARTS"

BENCH_COMMAND="${BENCH_COMMAND:-NODES=$NODES Q=$Q EPOCHS=$EPOCHS THREADS=$THREADS ROUNDS=$ROUNDS bench/run_cluster_gcn_pyg.sh}" \
"$PY" - --graph "$GRAPH" --nodes "$NODES" --parts "$PARTS" --q "$Q" --epochs "$EPOCHS" \
    --threads "$THREADS" --rounds "$ROUNDS" --python "$PY" --bin target/release/ferrolab <<'PY'
import json
import os
import sys

sys.path.insert(0, "bench")
import harness as H

ap = H.parser("Cluster-GCN epoch, ferrolab vs PyTorch Geometric")
for k in ("graph", "python", "bin"):
    ap.add_argument(f"--{k}", required=True)
for k in ("nodes", "parts", "q", "epochs"):
    ap.add_argument(f"--{k}", type=int, required=True)
a = ap.parse_args()
H.check_args(a)
CASE = "epoch"
OURS_IN, OURS_OOC = "ferrolab in memory", "ferrolab out of core"
TF, LIT = "PyG transform-first", "PyG propagate-first (literal)"


def ours(*extra):
    # A fresh partition cache (and cluster store) per run: every run does the same work.
    return ["env", "FERROLAB_CACHE={tmp}/cache", a.bin, "cluster-gcn", "--threads",
            str(a.threads), "--set", f"data.path={a.graph}", "--set", "data.row_normalize=false",
            "--set", "model.layer=cluster", "--set", "model.layers=3",
            "--set", "model.hidden=128", "--set", "model.dropout=0.2",
            "--set", f"train.epochs={a.epochs}", "--set", "train.seeds=1",
            "--set", "train.weight_decay=0", "--set", f"cluster.parts={a.parts}",
            "--set", f"cluster.parts_per_batch={a.q}", "--set", "baselines.full_batch=false",
            "--set", "baselines.random_partition=false", *extra, "--out", "{tmp}/run"]


def parse_ours(stdout, tmp):
    m = json.load(open(os.path.join(tmp, "run", "report.json")))["metrics"]
    return {"epoch_seconds": m["epoch_seconds"], "train_peak_rss_mb": m["train_peak_rss_mb"],
            "rss_before_training_mb": m["rss_before_training_mb"],
            "train_added_mb": m["train_peak_rss_mb"] - m["rss_before_training_mb"],
            "edge_cut": m.get("edge_cut"), "partition_seconds": m.get("partition_seconds")}


def pyg(order):
    return [a.python, os.path.join(H.HERE, "cluster_gcn_pyg.py"), "--npz", a.graph, "--order", order,
            "--layers", "3", "--hidden", "128", "--q", str(a.q), "--epochs", str(a.epochs),
            "--threads", str(a.threads)]


jobs = [H.Job(CASE, OURS_IN, ours(), parse_ours),
        H.Job(CASE, OURS_OOC, ours("--set", "cluster.out_of_core=true"), parse_ours),
        H.Job(CASE, TF, pyg("transform-first")),
        H.Job(CASE, LIT, pyg("propagate-first"))]
m = H.measure(a, jobs)

rows = [H.Row("epoch time, ferrolab in memory / PyG transform-first", CASE, "epoch_seconds",
              OURS_IN, TF, unit="s"),
        H.Row("epoch time, ferrolab out of core / PyG transform-first", CASE, "epoch_seconds",
              OURS_OOC, TF, unit="s"),
        H.Row("epoch time, ferrolab in memory / PyG literal", CASE, "epoch_seconds",
              OURS_IN, LIT, unit="s"),
        H.Row("train peak RSS, ferrolab in memory / PyG transform-first", CASE,
              "train_peak_rss_mb", OURS_IN, TF, unit="MiB"),
        H.Row("memory added by training, ferrolab in memory / PyG transform-first", CASE,
              "train_added_mb", OURS_IN, TF, unit="MiB"),
        # Not headline ratios (bench/summary.py skips them): the out-of-core side's memory.
        H.Row("train peak RSS, ferrolab out of core / PyG transform-first", CASE,
              "train_peak_rss_mb", OURS_OOC, TF, unit="MiB", headline=False),
        H.Row("memory added by training, ferrolab out of core / PyG transform-first", CASE,
              "train_added_mb", OURS_OOC, TF, unit="MiB", headline=False)]

# Same clusters on both sides: ferrolab's METIS run and the export must cut the same edges.
cuts = {s: {round(r["edge_cut"], 9) for r in m.values[f"{CASE}/{s}"] if r.get("edge_cut")
            is not None} for s in (OURS_IN, OURS_OOC, TF, LIT)}
all_cuts = set().union(*cuts.values())
same = len(all_cuts) == 1
if not same:
    print(f"WARNING: the sides report different edge cuts {cuts}: not the same clusters",
          file=sys.stderr)


def med(side, key):
    v = sorted(r[key] for r in m.values[f"{CASE}/{side}"] if r.get(key) is not None)
    return v[len(v) // 2] if v else float("nan")


phase_keys = ("batch", "adjacency", "forward", "backward", "optimizer")
table = ["Where PyG's epoch goes (s per epoch, each phase's median over rounds; forward "
         "includes each layer's normalisation and COO-to-CSR conversion, which ClusterGCNConv "
         "redoes in every layer):", "",
         "| side | epoch | " + " | ".join(phase_keys) + " |",
         "|---|---:|" + "---:|" * len(phase_keys)]
for s in (TF, LIT):
    table.append(f"| {s} | {med(s, 'epoch_seconds'):.3f} | "
                 + " | ".join(f"{med(s, k + '_seconds'):.3f}" for k in phase_keys) + " |")
table += ["", "Memory before training (MiB, median): " + "; ".join(
    f"{s} {med(s, 'rss_before_training_mb'):.0f}" for s in (OURS_IN, OURS_OOC, TF, LIT)) + "."]

what = (f"One training epoch of Cluster-GCN on a generated graph of {a.nodes:,} nodes (~20 "
        f"neighbours, 128 dense features, 10 classes), {a.parts} METIS clusters, q = {a.q} "
        f"clusters per batch, 3 layers x 128 (diagonal enhancement lambda 1, LayerNorm, ReLU, "
        f"dropout 0.2, Adam), {a.epochs} epochs per process. s/epoch is the mean over all "
        "epochs of a process, the first included, on both sides (ferrolab's epoch_seconds; it "
        "logs no per-epoch time, so no warm-up epoch is excluded on either side). Ratio = "
        "ferrolab / PyG (below 1: ferrolab is faster or smaller). Train peak RSS is the "
        "process's high-water mark during the epochs; memory added by training is that peak "
        "minus the RSS just before training (both sides hand freed heap back with malloc_trim "
        "first), which leaves out torch's ~700 MiB runtime and the loaded graph.")
notes = [
    "PyG batches come from PyG's own ClusterData (run once: node permutation making clusters "
    "contiguous, permuted CSR) and ClusterLoader (per batch: the q clusters' row ranges, edges "
    "whose column is in the batch, columns relabelled), with the exported partition handed to "
    "ClusterData in place of its METIS step (torch-sparse / pyg-lib have no PyPI wheels). The "
    "batch adjacency is a torch sparse COO tensor (one spmm per layer).",
    "PyG transform-first: ClusterGCNConv's parameters and normalisation code, computing "
    "Â (x W_out) + b_out + x W_root as ferrolab does (the last layer propagates 10 columns, "
    "not 128); `bench/cluster_gcn_pyg.py --check` (run first by this script) verifies that "
    "it matches ClusterGCNConv within 1e-4 for the same weights. PyG literal: ClusterGCNConv as it is, "
    "lin_out(Â x) + lin_root(x).",
    "Both PyG convs rebuild the normalised adjacency (add_self_loops, which coalesces, degree, "
    "and COO-to-CSR in spmm) in every layer, as ClusterGCNConv does; ferrolab normalises each "
    "batch once.",
    ("Same clusters: every run of every side reports the edge cut " + ", ".join(
        f"{c:.6f}" for c in sorted(all_cuts)) + ".") if same else
    f"WARNING: the sides report different edge cuts ({cuts}); the clusters differ.",
    f"ferrolab runs partition the graph itself (METIS, same seed as the export; a fresh cache "
    f"per run, {med(OURS_IN, 'partition_seconds'):.1f} s, outside the epoch time); PyG's "
    "ClusterData set-up is outside its epoch time too.",
]
versions = {"ferrolab": H.ferrolab_versions(),
            "PyG": H.python_modules(a.python, ["torch", "torch_geometric"])}
H.write("cluster_gcn_pyg", "Cluster-GCN training epoch: ferrolab vs PyTorch Geometric", m, rows,
        versions, what, notes=notes, extra={"markdown": "\n".join(table),
                                            "edge_cuts": sorted(all_cuts)})
PY
