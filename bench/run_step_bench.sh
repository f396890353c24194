#!/usr/bin/env bash
# Training-step time of ferrolab (burn 0.22.1, flex CPU backend) against PyTorch (CPU) for the
# same three models, batch and thread count; prints model, ferrolab ms, PyTorch ms and the ratio
# ferrolab/PyTorch, and writes the same table to bench/results/step_bench.md.
#
#   bench/run_step_bench.sh                   # 2 threads, warmup 5, 30 timed steps, 3 rounds
#   THREADS=1 ITERS=50 ROUNDS=5 bench/run_step_bench.sh
#   OPS=1 bench/run_step_bench.sh             # also time the CNN/attention kernels one by one
#
# The first run creates bench/.venv (git-ignored) and installs PyTorch from PyPI into it. PyPI's
# default Linux wheel is the CUDA build (about 3 GB with its nvidia-* wheels); it runs on the CPU
# here and is installed once: later runs find `import torch` working and skip pip.
#
# Each round runs the Rust example and then the Python script; each reports the median step
# time over ITERS steps. The table keeps, per model and side, the fastest of the ROUNDS medians,
# which is the least disturbed by other work on a shared machine. Run it on an otherwise idle
# machine: PyTorch's OpenMP threads spin at barriers, and with another busy process on the same
# cores its step time can grow tenfold (the script warns when the load average says so).
set -euo pipefail

THREADS="${THREADS:-2}"
WARMUP="${WARMUP:-5}"
ITERS="${ITERS:-30}"
ROUNDS="${ROUNDS:-3}"
OPS="${OPS:-0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="bench/.venv"
PY="$VENV/bin/python"
OUT_DIR="bench/results"
OUT_MD="$OUT_DIR/step_bench.md"

for v in THREADS WARMUP ITERS ROUNDS; do
    if ! [[ "${!v}" =~ ^[0-9]+$ ]] || [[ "${!v}" -lt 1 && "$v" != WARMUP ]]; then
        echo "error: $v must be a positive integer (got '${!v}')" >&2
        exit 2
    fi
done

# --- Python environment (idempotent) --------------------------------------------------------
if [[ ! -x "$PY" ]]; then
    echo ">> creating $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! "$PY" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo ">> installing torch (and numpy, which it warns without) into $VENV (large download, done once)" >&2
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet torch numpy
fi

# --- Rust example ------------------------------------------------------------------------------
echo ">> building crates/core/examples/train_step_bench.rs (release)" >&2
cargo build --release --quiet -p ferrolab-core --example train_step_bench
BIN="$ROOT/target/release/examples/train_step_bench"

# --- Measure -----------------------------------------------------------------------------------
LOAD="$(cut -d' ' -f1 /proc/loadavg 2>/dev/null || echo 0)"
if awk -v l="$LOAD" 'BEGIN { exit !(l > 0.7) }'; then
    echo "warning: load average is $LOAD; other work on this machine will distort the timings" >&2
fi
RAW="$(mktemp)"
OPS_RAW="$(mktemp)"
trap 'rm -f "$RAW" "$OPS_RAW"' EXIT
COMMON=(--threads "$THREADS" --warmup "$WARMUP" --iters "$ITERS" --breakdown --json)
for ((r = 1; r <= ROUNDS; r++)); do
    echo ">> round $r/$ROUNDS: ferrolab" >&2
    printf 'ferrolab %s\n' "$("$BIN" "${COMMON[@]}")" >>"$RAW"
    echo ">> round $r/$ROUNDS: pytorch" >&2
    # OPENBLAS_* tuning variables set on some machines slow BLAS down; drop them for this run
    # only (PyTorch's x86 wheel uses its own MKL/oneDNN kernels, so this is belt and braces).
    printf 'pytorch %s\n' "$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        OMP_NUM_THREADS="$THREADS" "$PY" bench/pytorch_step.py "${COMMON[@]}")" >>"$RAW"
    if [[ "$OPS" == 1 ]]; then
        echo ">> round $r/$ROUNDS: per-op timings" >&2
        OPS_ARGS=(--threads "$THREADS" --warmup "$WARMUP" --iters "$ITERS" --ops --json)
        printf 'ferrolab %s\n' "$("$BIN" "${OPS_ARGS[@]}")" >>"$OPS_RAW"
        printf 'pytorch %s\n' "$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
            OMP_NUM_THREADS="$THREADS" "$PY" bench/pytorch_step.py "${OPS_ARGS[@]}")" >>"$OPS_RAW"
    fi
done

# --- Report ------------------------------------------------------------------------------------
mkdir -p "$OUT_DIR"
"$PY" - "$RAW" "$OPS_RAW" "$OUT_MD" "$THREADS" "$WARMUP" "$ITERS" "$ROUNDS" "$LOAD" <<'EOF'
import datetime, json, os, platform, sys
import torch

raw, ops_raw, out_md, threads, warmup, iters, rounds, load = sys.argv[1:]


def fastest(path):
    best = {"ferrolab": {}, "pytorch": {}}
    for line in open(path):
        side, payload = line.split(" ", 1)
        for k, v in json.loads(payload).items():
            best[side][k] = min(v, best[side].get(k, float("inf")))
    return best


best = fastest(raw)
ops = fastest(ops_raw)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.processor() or "unknown CPU")
models = [m for m in ("mlp", "cnn", "attention") if f"{m}_ms" in best["ferrolab"]]
names = {"mlp": "MLP 784-256-256-10, batch 128",
         "cnn": "small CNN, [64,1,28,28]",
         "attention": "self-attention block, [32,64,128], 4 heads"}

rows = []
for m in models:
    f, p = best["ferrolab"][f"{m}_ms"], best["pytorch"][f"{m}_ms"]
    rows.append((m, f, p, f / p))

print(f"\n{'model':<10} {'ferrolab ms':>12} {'PyTorch ms':>11} {'ratio':>7}")
for m, f, p, r in rows:
    print(f"{m:<10} {f:>12.2f} {p:>11.2f} {r:>7.2f}")

print(f"\nper phase, ms (ferrolab / PyTorch):")
print(f"{'model':<10} {'fwd+loss':>17} {'backward':>17} {'optimizer':>17}")
phase_rows = []
for m in models:
    cells = []
    for ph in ("forward", "backward", "optim"):
        f, p = best["ferrolab"][f"{m}_{ph}_ms"], best["pytorch"][f"{m}_{ph}_ms"]
        cells.append((f, p))
    phase_rows.append((m, cells))
    print(f"{m:<10} " + " ".join(f"{f:>8.2f}/{p:<8.2f}" for f, p in cells))

op_rows = [(k, ops["ferrolab"][k], ops["pytorch"][k]) for k in ops["ferrolab"] if k in ops["pytorch"]]
if op_rows:
    print(f"\n{'kernel (same shapes as in the step)':<32} {'ferrolab ms':>12} {'PyTorch ms':>11} {'ratio':>7}")
    for k, f, p in op_rows:
        print(f"{k:<32} {f:>12.3f} {p:>11.3f} {f / p:>7.2f}")

date = datetime.date.today().isoformat()
md = [
    "# Training-step benchmark: ferrolab vs PyTorch (CPU)",
    "",
    f"Written by `bench/run_step_bench.sh` on {date}. Machine: {os.cpu_count()} cores, {cpu}. "
    f"{threads} threads on both sides; warmup {warmup}, median of {iters} timed steps, "
    f"fastest of {rounds} rounds; load average {load} at the start. ferrolab: burn 0.22.1, flex "
    f"backend. PyTorch {torch.__version__} (CPU).",
    "",
    "One step = forward + cross-entropy + backward + Adam step (lr 1e-3, eps 1e-8) on a fixed "
    "random batch. Ratio = ferrolab time / PyTorch time (lower is better for ferrolab).",
    "",
    "| model | ferrolab ms | PyTorch ms | ratio |",
    "|---|---:|---:|---:|",
]
md += [f"| {names[m]} | {f:.2f} | {p:.2f} | {r:.2f} |" for m, f, p, r in rows]
md += [
    "",
    "Per phase (median ms, ferrolab / PyTorch):",
    "",
    "| model | forward + loss | backward | optimizer |",
    "|---|---:|---:|---:|",
]
md += [f"| {m} | " + " | ".join(f"{f:.2f} / {p:.2f}" for f, p in cells) + " |"
       for m, cells in phase_rows]
if op_rows:
    md += [
        "",
        "Single kernels, no autodiff (`OPS=1`; median ms, shapes as in the step):",
        "",
        "| kernel | ferrolab ms | PyTorch ms | ratio |",
        "|---|---:|---:|---:|",
    ]
    md += [f"| {k} | {f:.3f} | {p:.3f} | {f / p:.2f} |" for k, f, p in op_rows]
with open(out_md, "w") as fh:
    fh.write("\n".join(md) + "\n")
print(f"\nwrote {out_md}")
EOF
