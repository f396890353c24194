#!/usr/bin/env bash
# Cluster-GCN training epoch: ferrolab vs PyTorch Geometric on the same generated graph, the
# same split and the same METIS clusters (exported once by the export_graph example), the same
# model (3 x ClusterGCNConv with diagonal enhancement, LayerNorm, ReLU, hidden 128), batch of
# q clusters, THREADS threads (PyG also on 1 thread, see below). Prints seconds per epoch and
# the training phase's peak RSS of each, and their ratios (ferrolab / PyG). ferrolab runs
# twice: with the graph in memory (as PyG holds it) and out of core. Writes
# bench/results/cluster_gcn_pyg.md.
set -euo pipefail
cd "$(dirname "$0")/.."
NODES="${NODES:-100000}"
PARTS="${PARTS:-$((NODES / 1000))}"
Q="${Q:-10}"
EPOCHS="${EPOCHS:-2}"
THREADS="${THREADS:-2}"
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch_geometric" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch torch_geometric
fi
cargo build --release -q -p ferrolab -p ferrolab-graph --example export_graph
WORK=$(mktemp -d)
GRAPH="$WORK/graph.npz"
target/release/examples/export_graph "$GRAPH" "$NODES" "$PARTS"
ours() { # name extra-sets...
  local name=$1; shift
  FERROLAB_CACHE="$WORK/cache" target/release/ferrolab cluster-gcn --threads "$THREADS" \
    --set "data.path=$GRAPH" --set data.row_normalize=false \
    --set model.layer=cluster --set model.layers=3 --set model.hidden=128 --set model.dropout=0.2 \
    --set train.epochs="$EPOCHS" --set train.seeds=1 --set train.weight_decay=0 \
    --set cluster.parts="$PARTS" --set cluster.parts_per_batch="$Q" \
    --set baselines.full_batch=false --set baselines.random_partition=false \
    "$@" --out "$WORK/$name" >"$WORK/$name.log" 2>&1
}
# The machine is shared: its load average before and after goes into the results.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
ours in_memory
ours out_of_core --set cluster.out_of_core=true
# PyG trains on the clusters in the export (cluster_part): PyG's own METIS needs torch-sparse
# or pyg-lib wheels, which PyPI does not carry.
"$VENV/bin/python" bench/cluster_gcn_pyg.py --npz "$GRAPH" --layers 3 --hidden 128 --q "$Q" \
  --epochs "$EPOCHS" --threads "$THREADS" 2>/dev/null >"$WORK/pyg.json"
# PyG again on one thread: on this shared 2-core machine torch's 2-thread OpenMP kernels (the
# sort in its COO-to-CSR conversion above all) have run 10x slower than on one thread, so the
# faster of the two is the fair anchor.
"$VENV/bin/python" bench/cluster_gcn_pyg.py --npz "$GRAPH" --layers 3 --hidden 128 --q "$Q" \
  --epochs "$EPOCHS" --threads 1 2>/dev/null >"$WORK/pyg1.json"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo "?")
python3 - "$WORK" "$NODES" "$PARTS" "$Q" "$THREADS" "$LOAD_BEFORE" "$LOAD_AFTER" <<'PY' | tee bench/results/cluster_gcn_pyg.md
import json, sys
work, nodes, parts, q, threads, load_before, load_after = sys.argv[1:8]
pyg = json.load(open(f"{work}/pyg.json"))
pyg1 = json.load(open(f"{work}/pyg1.json"))
best = min(pyg["epoch_seconds"], pyg1["epoch_seconds"])
rows = []
for name in ("in_memory", "out_of_core"):
    m = json.load(open(f"{work}/{name}/report.json"))["metrics"]
    rows.append((f"ferrolab ({name.replace('_', ' ')})", m["epoch_seconds"], m["train_peak_rss_mb"]))
print(f"Cluster-GCN training epoch on a generated graph of {int(nodes):,} nodes (~20 neighbours, "
      f"128 features), {parts} METIS clusters, q = {q}, 3 layers x 128, {threads} threads; "
      f"PyTorch Geometric {pyg['torch']} (torch). Command: bench/run_cluster_gcn_pyg.sh\n")
print(f"| run | s/epoch | ratio vs PyG ({threads} threads) | ratio vs PyG's faster run | "
      f"train peak RSS (MiB) | ratio vs PyG |")
print("|---|---:|---:|---:|---:|---:|")
ref, ref_rss = pyg["epoch_seconds"], pyg["train_peak_rss_mb"]
for name, r in ((f"PyTorch Geometric, {threads} threads", pyg), ("PyTorch Geometric, 1 thread", pyg1)):
    print(f"| {name} | {r['epoch_seconds']:.2f} | {r['epoch_seconds'] / ref:.2f} | "
          f"{r['epoch_seconds'] / best:.2f} | {r['train_peak_rss_mb']:.0f} | "
          f"{r['train_peak_rss_mb'] / ref_rss:.2f} |")
for name, s, rss in rows:
    print(f"| {name} | {s:.2f} | {s / ref:.2f} | {s / best:.2f} | {rss:.0f} | {rss / ref_rss:.2f} |")
print(f"\nPyG's fastest epoch: {pyg['epoch_seconds_min']:.2f} s ({threads} threads), "
      f"{pyg1['epoch_seconds_min']:.2f} s (1 thread). Load average (1, 5, 15 min) before the "
      f"ferrolab runs: {load_before}; after the PyG runs: {load_after}.")
PY
rm -rf "$WORK"
