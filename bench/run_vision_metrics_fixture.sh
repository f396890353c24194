#!/usr/bin/env bash
# Regenerates the reference values of ferrolab's detection and segmentation metrics: installs
# pycocotools and medpy 0.5.2 from PyPI into the git-ignored bench/.venv (created if absent),
# then runs bench/vision_metrics_fixture.py, which writes inputs and expected values into
# crates/vision/tests/fixtures/ (crates/vision/tests/metrics_reference.rs checks them without
# Python).
#
#   bench/run_vision_metrics_fixture.sh            # fixtures only (seeded: same files each run)
#   bench/run_vision_metrics_fixture.sh --bench    # also time COCO eval on 5000 images / ~50k
#                                                  # detections: pycocotools vs `ferrolab eval coco`
#
# The timing compares whole runs from the JSON files to the 12 numbers (load, evaluate,
# accumulate, summarize), best of 2 (pycocotools) and best of 5 (ferrolab), and checks that the
# 12 numbers agree to 1e-4.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=bench/.venv
BENCH_DIR=bench/.cache/vision_metrics

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import pycocotools, medpy, scipy' 2>/dev/null \
  || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("medpy"))')" != "0.5.2" ]; then
  "$VENV/bin/pip" install --quiet "pycocotools==2.0.11" "medpy==0.5.2" numpy scipy
fi

if [ "${1:-}" != "--bench" ]; then
  exec "$VENV/bin/python" bench/vision_metrics_fixture.py
fi

"$VENV/bin/python" bench/vision_metrics_fixture.py --bench "$BENCH_DIR"
flock /tmp/cargo.lock cargo build --release -p ferrolab --quiet
"$VENV/bin/python" - "$BENCH_DIR" target/release/ferrolab <<'EOF'
import json, subprocess, sys, time
d, binary = sys.argv[1], sys.argv[2]
times = []
for _ in range(5):
    t0 = time.perf_counter()
    out = subprocess.run([binary, "eval", "coco", "--gt", d + "/gt.json", "--dt", d + "/dt.json"],
                         check=True, capture_output=True).stdout
    times.append(time.perf_counter() - t0)
got = json.loads(out)
ref = json.load(open(d + "/pycocotools_stats.json"))
keys = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
        "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]
worst = max(abs(got[k] - r) for k, r in zip(keys, ref["stats"]))
fr = min(times)
print("pycocotools %.3f s, ferrolab %.3f s (best of 5): %.0fx faster; largest stats difference %.1e"
      % (ref["seconds"], fr, ref["seconds"] / fr, worst))
sys.exit(0 if worst < 1e-4 else 1)
EOF
