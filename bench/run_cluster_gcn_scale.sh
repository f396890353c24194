#!/usr/bin/env bash
# Cluster-GCN memory at scale: peak resident memory of one training epoch on generated graphs
# of SIZES nodes (~20 adjacency entries per node, 128 dense features), 3-layer Cluster-GCN with
# batches of 10 METIS clusters of ~1,000 nodes (fixed batch size), trained
#   - out of core (the graph in a cluster store on disk, dropped from memory), and
#   - in memory (the graph resident in the process),
# and full-batch GCN on the same graphs in a process of its own, under a memory cap
# (FULL_CAP_GB) so that a size it cannot handle is reported as such instead of swapping.
# Every run is its own process, so one method's peak cannot hide another's.
# Writes bench/results/cluster_gcn_scale.md.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES="${SIZES:-200000 500000 1000000}"
FULL_SIZES="${FULL_SIZES:-200000 500000}"
FULL_CAP_GB="${FULL_CAP_GB:-16}"
THREADS="${THREADS:-2}"
EPOCHS="${EPOCHS:-1}"
export FERROLAB_CACHE="${FERROLAB_CACHE:-$PWD/target/ferrolab-cache}"
cargo build --release -q -p ferrolab
BIN=target/release/ferrolab
OUT=$(mktemp -d)
run() { # name nodes extra-args...
  local name=$1 n=$2; shift 2
  local parts=$((n / 1000))
  if "$BIN" cluster-gcn --config configs/cluster-gcn/scale.toml --threads "$THREADS" \
      --set "data.synthetic.nodes=$n" --set "cluster.parts=$parts" --set "train.epochs=$EPOCHS" \
      "$@" --out "$OUT/$name-$n" >"$OUT/$name-$n.log" 2>&1; then
    echo "$name $n ok"
  else
    echo "$name $n failed (exit $?): $(tail -1 "$OUT/$name-$n.log")"
    echo "failed" >"$OUT/$name-$n.failed"
  fi
}
for n in $SIZES; do
  run out_of_core "$n" --set cluster.out_of_core=true
  run in_memory "$n"
done
for n in $FULL_SIZES; do
  # Address-space cap: an allocation beyond it fails instead of pushing the machine into swap.
  ( ulimit -v $((FULL_CAP_GB * 1024 * 1024)); run full_batch "$n" --set baselines.only=true --set baselines.full_batch=true )
done
python3 - "$OUT" "$SIZES" "$FULL_SIZES" "$THREADS" "$FULL_CAP_GB" <<'PY' | tee bench/results/cluster_gcn_scale.md
import json, os, sys
out, sizes, full_sizes, threads, cap = sys.argv[1], sys.argv[2].split(), sys.argv[3].split(), sys.argv[4], sys.argv[5]
def load(name, n):
    p = os.path.join(out, f"{name}-{n}", "report.json")
    if not os.path.exists(p):
        return None
    r = json.load(open(p))
    m = r["metrics"] if name != "full_batch" else r["baselines"]["full_batch_gcn"]
    return m, r["details"]
print(f"Cluster-GCN training memory, generated graphs (CSBM, ~20 neighbours/node, 128 features), "
      f"3 layers x 128 hidden, batches of 10 METIS clusters of ~1,000 nodes, {threads} threads, "
      f"one epoch. Peak RSS in MiB (kernel VmHWM, reset before each phase). Command: bench/run_cluster_gcn_scale.sh\n")
print("| nodes | adjacency entries | method | train peak RSS | train working set | eval peak RSS | s/epoch |")
print("|---:|---:|---|---:|---:|---:|---:|")
peaks = {}
for n in sizes:
    for name in ("out_of_core", "in_memory", "full_batch"):
        if name == "full_batch" and n not in full_sizes:
            continue
        got = load(name, n)
        if got is None:
            print(f"| {int(n):,} | | {name.replace('_', ' ')} | failed (cap {cap} GiB) | | | |")
            continue
        m, d = got
        peaks.setdefault(name, {})[n] = m["train_peak_rss_mb"]
        print(f"| {int(n):,} | {d['edges']:,} | {name.replace('_', ' ')} | {m['train_peak_rss_mb']:.0f} | "
              f"{m['train_working_set_mb']:.0f} | {m['eval_peak_rss_mb']:.0f} | {m['epoch_seconds']:.1f} |")
print()
lo, hi = sizes[0], sizes[-1]
for name, p in peaks.items():
    if lo in p and hi in p:
        print(f"- {name.replace('_', ' ')}: train peak RSS at {int(hi):,} nodes / at {int(lo):,} nodes = {p[hi] / p[lo]:.2f}")
PY
rm -rf "$OUT"
