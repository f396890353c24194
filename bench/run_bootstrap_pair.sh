#!/usr/bin/env bash
# Quick back-to-back bootstrapping comparison, ferrolab (the `bootstrap_bench` example of
# ferrolab-fhe, which links only that crate) against OpenFHE's EvalBootstrap
# (bench/ckks_openfhe.py in bench/.venv-openfhe), one thread each, alternating sides per round
# so that both see the same machine state. For when the CLI (which links every crate) cannot be
# built; the full harness with disturbance checks is `BOOTSTRAP=1 bench/run_ckks_bench.sh`.
# Every line records the 1-minute load average before and after the run: on a shared machine
# (load above the core count) the times are indications, never published figures.
#
#   ROUNDS=1 SLOTS=4096 LEVELS_AFTER=9 OPENFHE_SCALE_BITS=59 bench/run_bootstrap_pair.sh
#   KINDS=complex SLOTS=4096,32768 bench/run_bootstrap_pair.sh     # complex slots (KINDS=real,complex)
#
# Every N = 2^16 run takes 8-13 GB: with BIGMEM_LOCK=/path each run (either side) holds that
# lock file (flock), so that no other big run on a shared machine overlaps it.
# SKIP_BUILD=1 uses the example as built (EX= another copy of it).
# ferrolab: N = 2^16 set n16_l<LEVELS_AFTER> (scale 2^40 for 9 levels). OpenFHE: sparse
# ternary secret, FLEXIBLEAUTO, level budget [3, 3], a (scale+1)-bit first prime and
# OPENFHE_SCALE_BITS-bit scaling primes (its own examples' 59: at ferrolab's 40 bits its
# bootstrapping returned ~1 bit), the same levels left and slot count.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${ROUNDS:-1}"
SLOTS="${SLOTS:-4096}"
KINDS="${KINDS:-real}"
LEVELS_AFTER="${LEVELS_AFTER:-9}"
SB="${OPENFHE_SCALE_BITS:-59}"
OUT="${OUT:-bench/results/bootstrap_pair.log}"
EX="${EX:-target/release/examples/bootstrap_bench}"
if [ -n "${SKIP_BUILD:-}" ]; then
    :
elif [ -n "${CARGO_LOCK:-}" ]; then
    flock "$CARGO_LOCK" cargo build --release -p ferrolab-fhe --example bootstrap_bench
else
    cargo build --release -p ferrolab-fhe --example bootstrap_bench
fi
OPY=bench/.venv-openfhe/bin/python
THREADS="${THREADS:-1}"
# The same allocator on both sides (bench/harness.py's setting, which the CLI also applies to
# itself): without it glibc maps and zeroes every multi-megabyte polynomial afresh, and the
# page faults alone were ~13% of a bootstrap's CPU time at N = 2^16.
export GLIBC_TUNABLES="${GLIBC_TUNABLES:-glibc.malloc.mmap_threshold=536870912:glibc.malloc.trim_threshold=1073741824}"
load() { cut -d' ' -f1 /proc/loadavg; }
big() { if [ -n "${BIGMEM_LOCK:-}" ]; then flock "$BIGMEM_LOCK" "$@"; else "$@"; fi; }
have_openfhe() { [ -x "$OPY" ] && "$OPY" -c "import openfhe" 2>/dev/null; }
ours() {
    local l0 line
    l0=$(load)
    line=$(RAYON_NUM_THREADS="$THREADS" big "$EX" 16 "$LEVELS_AFTER" "$1" "$3" 1 | grep '^log_n')
    echo "round $2 ferrolab threads $THREADS kind $3 load $l0->$(load): $line"
}
theirs() {
    local l0 line
    if have_openfhe; then
        l0=$(load)
        line=$(OMP_NUM_THREADS="$THREADS" big "$OPY" bench/ckks_openfhe.py 16 "$((SB + 1)),$SB" 1 \
            --bootstrap "$1" "$LEVELS_AFTER" --kind "$3" --seed "$2" 2>/dev/null | tail -1)
        echo "round $2 openfhe threads $THREADS kind $3 slots $1 load $l0->$(load): $line"
    else
        echo "round $2 openfhe: skipped (no CPython 3.10 with PyPI openfhe in bench/.venv-openfhe)"
    fi
}
# Same rounds, sides alternating which goes first (odd rounds ferrolab first), so that a
# drift in the machine's load falls on both; one process per side and round, no warm-up on
# either side (each times one bootstrap after its own key generation).
RUN_LOG=$(mktemp)
{
    echo "# $(date -u +%FT%TZ) $(nproc) cores, rounds $ROUNDS, slots $SLOTS, kinds $KINDS, levels after $LEVELS_AFTER, threads $THREADS, commit $(git rev-parse --short HEAD)$(git diff --quiet -- crates/fhe || echo +uncommitted), GLIBC_TUNABLES=$GLIBC_TUNABLES"
    for r in $(seq 1 "$ROUNDS"); do
        for k in ${KINDS//,/ }; do
            for s in ${SLOTS//,/ }; do
                if [ $((r % 2)) -eq 1 ]; then ours "$s" "$r" "$k"; theirs "$s" "$r" "$k"; else theirs "$s" "$r" "$k"; ours "$s" "$r" "$k"; fi
            done
        done
    done
} | tee "$RUN_LOG" | tee -a "$OUT"
# Median and spread (min-max) per side and slot count, and the ratio of the medians.
python3 - "$RUN_LOG" <<'PY' | tee -a "$OUT"
import json, re, statistics, sys
rows = {}
by_round = {}
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+) (ferrolab|openfhe) threads \d+ kind (\w+) .*?: (.*)$", line)
    if not m or not m.group(4).strip() or "skipped" in line:
        continue
    rnd, side, kind, rest = m.groups()
    if side == "ferrolab":
        s = int(re.search(r"slots (\d+)", rest).group(1))
        ms = float(re.search(r"median (\d+) ms", rest).group(1))
        bits = float(re.search(r"bits worst ([\d.]+)", rest).group(1))
        rss = float(re.search(r"peak RSS ([\d.]+) GB", rest).group(1))
        c = re.search(r"cpu_ms: \[([^\]]*)\]", rest)
        cpu = sum(float(x) for x in c.group(1).split(",")) if c else None
    else:
        j = json.loads(rest)
        s = int(re.search(r"slots (\d+)", line).group(1))
        ms, bits, rss = j["bootstrap_ms"], j["bootstrap_precision_bits"], j["peak_rss_mb"] / 1e3
        cpu = j.get("bootstrap_cpu_ms")
    rows.setdefault((s, kind, side), []).append((ms, bits, rss, cpu))
    by_round.setdefault((s, kind, rnd), {})[side] = (ms, cpu)
for (s, kind, side), v in sorted(rows.items()):
    t = [x[0] for x in v]
    c = [x[3] for x in v if x[3] is not None]
    cpu = f", CPU median {statistics.median(c):.0f} ms" if c else ""
    print(f"summary slots {s} {kind} {side}: median {statistics.median(t):.0f} ms (min {min(t):.0f}, max {max(t):.0f}, n {len(t)}){cpu}, worst bits min {min(x[1] for x in v):.2f}, peak RSS {max(x[2] for x in v):.2f} GB")
# Ratio ferrolab / OpenFHE per round (the two sides of one round ran back to back).
for s, kind in sorted({k[:2] for k in by_round}):
    both = [v for (s2, k2, _), v in sorted(by_round.items())
            if (s2, k2) == (s, kind) and "ferrolab" in v and "openfhe" in v]
    r = [v["ferrolab"][0] / v["openfhe"][0] for v in both]
    if r:
        print(f"summary slots {s} {kind} ratio ferrolab/openfhe: median {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, rounds {len(r)})")
    # CPU time (each process's own, during the bootstrap): on a loaded machine it moves far
    # less than wall time; OpenFHE's is process_time() around EvalBootstrap.
    rc = [v["ferrolab"][1] / v["openfhe"][1] for v in both
          if v["ferrolab"][1] and v["openfhe"][1]]
    if rc:
        print(f"summary slots {s} {kind} CPU ratio ferrolab/openfhe: median {statistics.median(rc):.2f} (min {min(rc):.2f}, max {max(rc):.2f}, rounds {len(rc)})")
PY
rm -f "$RUN_LOG"
