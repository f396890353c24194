#!/usr/bin/env python3
"""SECNN / Kim-CNN training step, ferrolab vs PyTorch (CPU), one model per process.

Called by bench/run_secnn_bench.sh. Both sides: batch 50 of random token ids (almost every word
distinct, so ferrolab's distinct-word GEMM gets no advantage), Kim's sizes, SparseAdam for the
word vectors and Adam for the rest, max-norm 3 on the output layer; the same warm-up and timed
steps; bench/harness.py shuffles the four processes per round and gives both sides the same
malloc settings.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402


def main():
    ap = H.parser(__doc__.splitlines()[0])
    ap.add_argument("--bin", required=True, help="the built secnn_step_bench example")
    ap.add_argument("--python", default=sys.executable, help="python with torch")
    ap.add_argument("--len", type=int, default=22, help="sentence length in tokens")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--name", default=os.environ.get("NAME", "secnn_step_bench"),
                    help="result file name under bench/results (e.g. a rerun beside the first)")
    a = ap.parse_args()
    H.check_args(a)
    if a.warmup < 0 or a.iters < 1 or a.len < 1:
        raise SystemExit("error: --warmup must be >= 0, --iters and --len >= 1")
    common = ["--threads", str(a.threads), "--len", str(a.len), "--warmup", str(a.warmup),
              "--iters", str(a.iters)]
    jobs = []
    for model in ("kim", "secnn"):
        jobs.append(H.Job(model, "ferrolab", [a.bin, *common, "--model", model, "--json"]))
        jobs.append(H.Job(model, "pytorch", [a.python, os.path.join(H.HERE, "secnn_step.py"),
                                             *common, "--model", model, "--optim", "sparse"]))
    m = H.measure(a, jobs)
    rows = [H.Row("training step, Kim-CNN (MR sizes)", "kim", "kim_cnn_ms", "ferrolab", "pytorch"),
            H.Row("training step, SECNN (MR sizes)", "secnn", "secnn_ms", "ferrolab", "pytorch")]
    versions = {"ferrolab": H.ferrolab_versions(),
                "pytorch": H.python_modules(a.python, ["torch", "numpy"])}
    what = (f"One step on a batch of 50 sentences of {a.len} tokens: forward, cross-entropy, "
            "backward, SparseAdam on the 18000x300 word vectors and Adam on the rest, max-norm "
            f"on the output weights; {a.warmup} warm-up steps, then the median of {a.iters} "
            "timed steps per process, one model per process. Ratio = ferrolab / PyTorch.")
    notes = ["PyTorch with dense Adam on every parameter is a different algorithm (it updates "
             "all word vectors every step) and is not compared here "
             "(`bench/secnn_step.py --optim dense` times it)."]
    H.write(a.name, "SECNN / Kim-CNN training step: ferrolab vs PyTorch (CPU)", m,
            rows, versions, what, notes=notes)


if __name__ == "__main__":
    main()
