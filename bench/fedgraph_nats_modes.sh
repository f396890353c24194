#!/usr/bin/env bash
# fedgraph's hpo, privacy, node-table, FedSage+ and GCFL+ (graph-families table) runs in-process
# and over NATS, back to back with the same
# binary (crates/fed/FEDGRAPH.md, "Over NATS"): for each mode, both runs' wall time and peak
# RSS (of the server process: the clients are its children, started after it), and whether
# the two reports are the same (every metric and baseline, timing keys aside).
#
#   FERROLAB_NATS_URL=nats://127.0.0.1:4222 FERROLAB_DATA=../shared/data \
#     bench/fedgraph_nats_modes.sh [FERROLAB_BIN] [OUT_DIR] [THREADS=2]
# MODES="gcfl" (any of hpo privacy table fedsage fedsage-grid gcfl; default all but
# fedsage-grid) runs only those.
set -euo pipefail
BIN=${1:-target/release/ferrolab}
OUT=${2:-$(mktemp -d)}
THREADS=${3:-2}
: "${FERROLAB_NATS_URL:?set FERROLAB_NATS_URL to a nats-server -js}"
mkdir -p "$OUT"
run() { # NAME MODE-ARGS...
    local name=$1; shift
    for rt in inproc nats; do
        rm -rf "$OUT/$name-$rt"
        /usr/bin/time -f "%e %M" -o "$OUT/$name-$rt.time" \
            "$BIN" fedgraph "$@" --threads "$THREADS" --set "fed.runtime=$rt" \
            --out "$OUT/$name-$rt" >"$OUT/$name-$rt.log" 2>&1
    done
    python3 - "$OUT" "$name" <<'PY'
import json, sys
out, name = sys.argv[1], sys.argv[2]
def load(rt):
    r = json.load(open(f"{out}/{name}-{rt}/report.json"))
    strip = lambda m: {k: v for k, v in m.items() if "seconds" not in k}
    secs, kb = open(f"{out}/{name}-{rt}.time").read().split()
    return strip(r["metrics"]), {k: strip(v) for k, v in r["baselines"].items()}, float(secs), int(kb) / 1024
a, b = load("inproc"), load("nats")
print(f"{name:8} in-process {a[2]:6.1f} s {a[3]:5.0f} MiB | nats {b[2]:6.1f} s {b[3]:5.0f} MiB | "
      f"ratio {b[2] / a[2]:.2f}x | same report: {a[0] == b[0] and a[1] == b[1]}")
PY
}
for mode in ${MODES:-hpo privacy table fedsage gcfl}; do
    case $mode in
        hpo) run hpo --preset hpo --set task.mode=hpo ;;
        privacy) run privacy --preset privacy --set task.mode=privacy ;;
        table) run table --preset quick ;;
        # The quick preset's FedSage+ with 10 generator rounds (50 by default).
        fedsage) run fedsage --preset quick --set fed.algo=fedsage --set fedsage.gen_rounds=10 ;;
        # Two grid cells of one seed: over NATS one generator stage serves both.
        fedsage-grid) run fedsage-grid --preset quick --set fed.algo=fedsage --set fedsage.gen_rounds=10 \
            --set 'fed.lrs=[0.25,0.05]' --set fed.seeds=1 ;;
        gcfl) run gcfl --preset gcfl ;;
        *) echo "unknown mode $mode (hpo, privacy, table, fedsage, fedsage-grid, gcfl)" >&2; exit 2 ;;
    esac
done
