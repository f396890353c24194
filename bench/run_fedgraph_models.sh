#!/usr/bin/env bash
# Issue 18's ModelZoo target: centralised Cora accuracy (Planetoid split) of ferrolab's
# GraphSAGE, GIN and GPR-GNN within 1.5 points of PyTorch Geometric on the same split, same
# architecture, same training recipe, same seeds count (bench/fedgraph_models_pyg.py documents
# the recipe; crates/graph/examples/zoo_cora.rs is ferrolab's side). An accuracy comparison,
# not a timing one: the seconds are printed for information only.
#
#   bench/run_fedgraph_models.sh                   # sage, gin, gpr; 10 seeds each side
#   ARCHS=gcn,sage,gat,gin,gpr SEEDS=5 bench/run_fedgraph_models.sh
#
# Cora: graphs/cora_planetoid.npz from FERROLAB_DATA (default ../shared/data).
# Writes bench/results/fedgraph_models.{json,md}.
set -euo pipefail
ARCHS="${ARCHS:-sage,gin,gpr}"
SEEDS="${SEEDS:-10}"
THREADS="${THREADS:-1}"
CARGO="${CARGO:-cargo}"
for v in SEEDS THREADS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [[ "${!v}" -lt 1 ]]; then
        echo "error: $v must be a positive integer (got '${!v}')" >&2
        exit 2
    fi
done
if ! [[ "$ARCHS" =~ ^(gcn|sage|gat|gin|gpr)(,(gcn|sage|gat|gin|gpr))*$ ]]; then
    echo "error: ARCHS must be a comma list of gcn, sage, gat, gin, gpr (got '$ARCHS')" >&2
    exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DATA="${FERROLAB_DATA:-$ROOT/../shared/data}"
NPZ="$DATA/graphs/cora_planetoid.npz"
if [ ! -f "$NPZ" ]; then
    echo "error: $NPZ not found (set FERROLAB_DATA to the folder holding graphs/cora_planetoid.npz)" >&2
    exit 2
fi
VENV=bench/.venv
PY="$VENV/bin/python"
if [ ! -x "$PY" ] || ! "$PY" -c "import torch_geometric" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$PY" -m pip install --quiet torch torch_geometric numpy
fi
$CARGO build --release -q -p ferrolab-graph --example zoo_cora
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export OMP_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS"
echo ">> ferrolab ($ARCHS, $SEEDS seeds)" >&2
target/release/examples/zoo_cora --archs "$ARCHS" --seeds "$SEEDS" --data-dir "$DATA" >"$WORK/ours.json"
echo ">> PyTorch Geometric ($ARCHS, $SEEDS seeds)" >&2
"$PY" bench/fedgraph_models_pyg.py --data "$NPZ" --archs "$ARCHS" --seeds "$SEEDS" --threads "$THREADS" >"$WORK/pyg.json"
mkdir -p bench/results
"$PY" - "$WORK/ours.json" "$WORK/pyg.json" "ARCHS=$ARCHS SEEDS=$SEEDS THREADS=$THREADS bench/run_fedgraph_models.sh" <<'PY'
import json, statistics as st, sys, torch, torch_geometric
ours, pyg, cmd = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
rows, table = {}, []
for arch in ours:
    a, b = ours[arch]["test_accuracy"], pyg[arch]["test_accuracy"]
    ma, mb = st.mean(a), st.mean(b)
    sa, sb = st.pstdev(a), st.pstdev(b)
    d = 100 * (ma - mb)
    rows[arch] = {"ferrolab": a, "pyg": b, "ferrolab_mean": ma, "ferrolab_std": sa,
                  "pyg_mean": mb, "pyg_std": sb, "diff_points": d, "within_1p5": abs(d) <= 1.5,
                  "ferrolab_seconds": ours[arch]["seconds"], "pyg_seconds": pyg[arch]["seconds"]}
    table.append(f"| {arch} | {100*ma:.2f} ± {100*sa:.2f} | {100*mb:.2f} ± {100*sb:.2f} | "
                 f"{d:+.2f} | {'yes' if abs(d) <= 1.5 else 'no'} | {ours[arch]['seconds']:.1f} / {pyg[arch]['seconds']:.1f} |")
meta = {"command": cmd, "torch": torch.__version__, "torch_geometric": torch_geometric.__version__}
json.dump({"meta": meta, "archs": rows}, open("bench/results/fedgraph_models.json", "w"), indent=1)
md = [f"# ModelZoo on Cora (Planetoid split): ferrolab vs PyTorch Geometric",
      "", f"`{cmd}` (torch {meta['torch']}, torch_geometric {meta['torch_geometric']}); test accuracy at the",
      "best validation epoch, mean ± population std over seeds 0..N-1 of each side (the seeds draw",
      "different initialisations on the two sides: the comparison is of distributions).", "",
      "| arch | ferrolab | PyG | difference (points) | within 1.5 | seconds ferrolab / PyG |",
      "|---|---|---|---|---|---|", *table]
open("bench/results/fedgraph_models.md", "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
