#!/usr/bin/env bash
# SECNN / Kim-CNN training-step time: ferrolab divided by PyTorch, same architecture, batch,
# sentence length and threads. Uses the venv that run_step_bench.sh creates (PyTorch CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS="${THREADS:-2}"
LEN="${LEN:-22}"
VENV=bench/.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet torch
fi
cargo build --release -q -p ferrolab-text --example secnn_step_bench
# The ferrolab binary raises glibc's mmap/trim thresholds at start-up; the example gets the
# same through GLIBC_TUNABLES.
# ROUNDS alternating rounds per side; the fastest median of each is kept, since on a shared
# machine noise only ever adds time.
ROUNDS="${ROUNDS:-3}"
ours="" sparse="" dense=""
for _ in $(seq "$ROUNDS"); do
  ours+=$(GLIBC_TUNABLES=glibc.malloc.mmap_threshold=536870912:glibc.malloc.trim_threshold=1073741824 \
    target/release/examples/secnn_step_bench --threads "$THREADS" --len "$LEN" --json)$'\n'
  sparse+=$("$VENV/bin/python" bench/secnn_step.py --threads "$THREADS" --len "$LEN" --optim sparse 2>/dev/null)$'\n'
  dense+=$("$VENV/bin/python" bench/secnn_step.py --threads "$THREADS" --len "$LEN" --optim dense 2>/dev/null)$'\n'
done
python3 - "$ours" "$sparse" "$dense" "$THREADS" "$LEN" <<'PY'
import json, sys
def best(text):
    runs = [json.loads(l) for l in text.splitlines() if l.strip()]
    return {k: min(r[k] for r in runs) for k in runs[0]}
ours, sparse, dense = (best(a) for a in sys.argv[1:4])
threads, length = sys.argv[4], sys.argv[5]
lines = [f"SECNN/Kim-CNN training step, batch 50, length {length}, {threads} threads (fastest of the rounds' medians, ms; ratio = ferrolab / PyTorch)",
         "",
         "| model | ferrolab | PyTorch SparseAdam | ratio | PyTorch dense Adam | ratio |",
         "|---|---:|---:|---:|---:|---:|"]
for k, name in (("kim_cnn_ms", "Kim-CNN"), ("secnn_ms", "SECNN")):
    lines.append(f"| {name} | {ours[k]:.1f} | {sparse[k]:.1f} | {ours[k]/sparse[k]:.2f} | {dense[k]:.1f} | {ours[k]/dense[k]:.2f} |")
text = "\n".join(lines)
print(text)
open("bench/results/secnn_step_bench.md", "w").write(text + "\n")
PY
