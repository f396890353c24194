#!/usr/bin/env python3
"""RNS-CKKS, ferrolab vs Microsoft SEAL (tenseal.sealapi) and OpenFHE: per-operation latency and
precision on the same ring degree, modulus chain and scale, one thread each side.

Called by bench/run_ckks_bench.sh (which sets up the Python environments and builds
`ferrolab` and the `ckks_precision` example); by hand:

    LOG_N=13 ROUNDS=1 REPS=2 bench/.venv/bin/python bench/ckks_harness.py

Timing: per ring degree (case n14, n15, ...) one process per side and round: `ferrolab ckks
bench` (its report.json), bench/ckks_seal.py, and bench/ckks_openfhe.py where OPENFHE_PY names
a Python with `openfhe`. Every side runs the same --warmup untimed and --reps timed runs per op
(the 16-rotation ops min(reps, 3) timed runs on every side but ferrolab's and OpenFHE's hoisted
one, which take --reps); bench/harness.py shuffles the order per round, gives every side the
same environment and malloc settings, repeats disturbed runs and reports medians over the
rounds with their min-max. Only like-for-like rows: 16 rotations one by one against 16 rotate
calls; ferrolab's hoisted 16 rotations only against OpenFHE's hoisting (SEAL has none).

Precision: per ring degree one process per side running KEYSETS independently generated key
sets x INPUTS random inputs (uniform in [-1, 1] per slot): the worst-slot precision
-log2(max |decrypted - exact|) of x*y after multiply + relinearise + rescale and of x rotated
by one, summarised as mean and worst over all inputs and key sets and as the mean per key set.
Both parts go to bench/results/ckks_bench.{md,json}.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402

# Ops timed on every side with the same algorithm (ferrolab's metric names).
COMMON = ["encode", "encrypt", "decrypt", "add", "mul_relin", "rescale", "mul_relin_rescale",
          "rotate"]
NAMES = {
    "encode": "encode",
    "encrypt": "encrypt (public key)",
    "decrypt": "decrypt + decode",
    "add": "add",
    "mul_relin": "multiply + relinearise",
    "rescale": "rescale",
    "mul_relin_rescale": "multiply + relinearise + rescale",
    "rotate": "rotate by 1",
    "conjugate": "conjugate",
    "sequential_rotate16": "16 rotations one by one",
    "hoisted_rotate16": "16 rotations hoisted",
}
PRECISION_OPS = ("mul_relin_rescale", "rotate")
ANCHOR = {"seal": "SEAL", "openfhe": "OpenFHE"}


def env_int(name, default):
    return int(os.environ.get(name, default))


def run_json(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"error: {' '.join(cmd)} failed (exit {p.returncode})")
    return json.loads(p.stdout.strip().splitlines()[-1])


def dist_version(python, dist):
    code = ("import importlib.metadata as m, sys\n"
            f"try:\n    print(m.version({dist!r}))\nexcept Exception:\n    print('absent')")
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        return p.stdout.strip() or "?"
    except OSError:
        return "?"


def seal_version(python):
    """SEAL's major.minor as the installed tenseal build writes it into every serialized
    object's header (bytes 3 and 4); tenseal.sealapi exposes no version otherwise."""
    code = ("import os, tempfile, tenseal.sealapi as s\n"
            "fd, f = tempfile.mkstemp(); os.close(fd)\n"
            "s.EncryptionParameters(s.SCHEME_TYPE.CKKS).save(f)\n"
            "b = open(f, 'rb').read(5); os.remove(f)\n"
            "print(f'{b[3]}.{b[4]}' if b[:2] == bytes([0x5e, 0xa1]) else '?')")
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        v = p.stdout.strip()
        return f"{v}.x (serialization header)" if v and v != "?" else "?"
    except OSError:
        return "?"


def ferrolab_parse(log_n, params):
    """report.json of one `ferrolab ckks bench` run -> {op: ms}."""

    def parse(_stdout, tmp):
        with open(os.path.join(tmp, "run", "report.json")) as fh:
            rep = json.load(fh)
        cfg = rep["config"][f"n{log_n}"]
        if cfg["q_bits"] != params["q_bits"] or cfg["p_bits"] != params["p_bits"]:
            raise SystemExit(f"error: ferrolab ran chain {cfg} at N=2^{log_n}, the other sides "
                             f"{params}")
        suffix = f"_ms_n{log_n}"
        return {k[: -len(suffix)]: v for k, v in rep["metrics"].items() if k.endswith(suffix)}

    return parse


def summarise(per_keyset):
    """[[bits per input] per key set] -> mean, worst, per-key-set mean and worst."""
    flat = [b for ks in per_keyset for b in ks]
    return {
        "mean": statistics.fmean(flat), "worst": min(flat), "best": max(flat),
        "keysets": len(per_keyset), "inputs_per_keyset": [len(ks) for ks in per_keyset],
        "n": len(flat),
        "per_keyset_mean": [statistics.fmean(ks) for ks in per_keyset],
        "per_keyset_worst": [min(ks) for ks in per_keyset],
    }


def main():
    ap = H.parser(__doc__.splitlines()[0])
    # One thread each side: SEAL's evaluator is single-threaded, so this comparison is too
    # (the shared THREADS variable of the other comparisons is not read here).
    ap.set_defaults(threads=1)
    ap.add_argument("--log-n", default=os.environ.get("LOG_N", "14,15"),
                    help="ring degrees as log2 N, comma-separated (13..16)")
    ap.add_argument("--reps", type=int, default=env_int("REPS", 5),
                    help="timed runs per op on every side (the median is that run's figure)")
    ap.add_argument("--warmup", type=int, default=env_int("WARMUP", 2),
                    help="untimed runs per op on every side before the timed ones")
    ap.add_argument("--keysets", type=int, default=env_int("KEYSETS", 3),
                    help="independently generated key sets per side for the precision figures")
    ap.add_argument("--inputs", type=int, default=env_int("INPUTS", 20),
                    help="random inputs per key set for the precision figures")
    ap.add_argument("--no-precision", action="store_true", help="timing only")
    ap.add_argument("--exe", default=os.path.join(H.ROOT, "target", "release", "ferrolab"))
    ap.add_argument("--precision-exe",
                    default=os.path.join(H.ROOT, "target", "release", "examples",
                                         "ckks_precision"))
    ap.add_argument("--python", default=sys.executable, help="python with tenseal")
    ap.add_argument("--openfhe-python", default=os.environ.get("OPENFHE_PY") or None,
                    help="python with openfhe (default $OPENFHE_PY; without it no OpenFHE side)")
    ap.add_argument("--bootstrap", action="store_true",
                    default=os.environ.get("BOOTSTRAP", "") not in ("", "0"),
                    help="compare bootstrapping instead (ferrolab ckks bootstrap-bench against "
                         "OpenFHE's EvalBootstrap); $BOOTSTRAP=1")
    ap.add_argument("--slots", default=os.environ.get("SLOTS", "4096,32768"),
                    help="bootstrapping: slot counts, comma-separated")
    ap.add_argument("--kinds", default=os.environ.get("KINDS", "real"),
                    help="bootstrapping: slot kinds, comma-separated (real, complex)")
    ap.add_argument("--levels-after", type=int, default=env_int("LEVELS_AFTER", 9),
                    help="bootstrapping: levels left after bootstrapping (9 or 16 at 2^16)")
    ap.add_argument("--openfhe-scale-bits", type=int, default=env_int("OPENFHE_SCALE_BITS", 0),
                    help="bootstrapping: OpenFHE's scaling-prime bits (0: ferrolab's scale)")
    a = ap.parse_args()
    if a.bootstrap:
        return bootstrap_main(a)
    H.check_args(a)
    if a.threads != 1:
        raise SystemExit("error: this comparison runs one thread each side (SEAL's evaluator "
                         "is single-threaded); --threads must be 1")
    try:
        log_ns = [int(x) for x in a.log_n.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: --log-n {a.log_n!r}: expected comma-separated integers")
    if not log_ns or any(not 13 <= l <= 16 for l in log_ns):
        raise SystemExit(f"error: --log-n {a.log_n!r}: expected values in 13..16")
    for name in ("reps", "keysets", "inputs"):
        if getattr(a, name) < 1:
            raise SystemExit(f"error: --{name} must be at least 1")
    if a.warmup < 0:
        raise SystemExit("error: --warmup must be at least 0")
    if a.keysets < 3 or a.inputs < 20:
        print(f"note: {a.keysets} key sets x {a.inputs} inputs is below the published minimum "
              "(3 x 20)", file=sys.stderr)
    for exe in (a.exe, a.precision_exe):
        if not os.access(exe, os.X_OK):
            raise SystemExit(f"error: {exe} is not built (bench/run_ckks_bench.sh builds it)")
    here = os.path.dirname(os.path.abspath(__file__))
    seal_py, ofhe_py = os.path.join(here, "ckks_seal.py"), os.path.join(here, "ckks_openfhe.py")
    sides = ["ferrolab", "seal"] + (["openfhe"] if a.openfhe_python else [])

    # The chain every side is given: ferrolab's standard set for each N.
    params = {ln: run_json([a.precision_exe, "--log-n", str(ln), "--params"]) for ln in log_ns}

    def csv(bits):
        return ",".join(str(b) for b in bits)

    timing_jobs, precision_jobs = [], []
    w = ["--warmup", str(a.warmup)]
    for ln in log_ns:
        p, case = params[ln], f"n{ln}"
        q, pb = csv(p["q_bits"]), csv(p["p_bits"])
        timing_jobs.append(H.Job(case, "ferrolab", [
            a.exe, "ckks", "bench", "--log-n", str(ln), "--reps", str(a.reps), *w,
            "--threads", "1", "--seed", "0", "--out", "{tmp}/run"], ferrolab_parse(ln, p)))
        timing_jobs.append(H.Job(case, "seal", [
            a.python, seal_py, str(ln), q, pb, str(a.reps), *w,
            "--log-scale", str(p["log_scale"])]))
        if a.openfhe_python:
            timing_jobs.append(H.Job(case, "openfhe", [
                a.openfhe_python, ofhe_py, str(ln), q, str(a.reps), *w]))
        prec = ["--precision", str(a.keysets), str(a.inputs), "--seed", "0"]
        precision_jobs.append(H.Job(case, "ferrolab", [
            a.precision_exe, "--log-n", str(ln), "--keysets", str(a.keysets),
            "--inputs", str(a.inputs), "--seed", "0"]))
        precision_jobs.append(H.Job(case, "seal", [
            a.python, seal_py, str(ln), q, pb, "1", *prec, "--log-scale", str(p["log_scale"])]))
        if a.openfhe_python:
            precision_jobs.append(H.Job(case, "openfhe", [
                a.openfhe_python, ofhe_py, str(ln), q, "1", *prec]))

    # Precision first (one round: no timing in it), so a broken side shows before the long part.
    precision = None
    if not a.no_precision:
        pa = argparse.Namespace(**vars(a))
        pa.rounds, pa.tries = 1, 1
        pm = H.measure(pa, precision_jobs, label="precision ")
        precision = {"keysets": a.keysets, "inputs": a.inputs, "seconds": round(pm.seconds, 1),
                     "load_before": pm.load_before, "load_after": pm.load_after, "cases": {}}
        for ln in log_ns:
            case = f"n{ln}"
            precision["cases"][case] = {
                side: {op: summarise(pm.values[f"{case}/{side}"][0][op]) for op in PRECISION_OPS}
                for side in sides}
        precision["raw"] = {k: v[0] for k, v in pm.values.items()}
        print(precision_markdown(precision, log_ns, sides, params), file=sys.stderr, flush=True)

    m = H.measure(a, timing_jobs, label="timing ")

    rows = []
    for ln in log_ns:
        case = f"n{ln}"
        for op in COMMON + ["conjugate", "sequential_rotate16", "hoisted_rotate16"]:
            others = {"conjugate": ["seal"], "hoisted_rotate16": ["openfhe"]}.get(
                op, ["seal", "openfhe"])
            for den in others:
                if den in sides:
                    rows.append(H.Row(f"2^{ln} {NAMES[op]} vs {ANCHOR[den]}", case, op,
                                       "ferrolab", den))

    versions = {
        "ferrolab": {"commit": H.git_commit(), "rustc": H.rustc_version()},
        "seal": {**H.python_modules(a.python, ["tenseal", "numpy"]),
                 "SEAL": seal_version(a.python)},
    }
    if a.openfhe_python:
        v = H.python_modules(a.openfhe_python, ["openfhe", "numpy"])
        v["openfhe (PyPI package)"] = dist_version(a.openfhe_python, "openfhe")
        versions["openfhe"] = v

    chains = "; ".join(f"N=2^{ln}: q = {params[ln]['q_bits']}, p = {params[ln]['p_bits']}, "
                       f"scale 2^{params[ln]['log_scale']}" for ln in log_ns)
    what = (f"Latency in ms of each CKKS operation, ferrolab (side A) against "
            f"{' and '.join(s for s in sides if s != 'ferrolab')} (side B); below 1 ferrolab is "
            f"faster. Same ring degree, chain and scale on every side ({chains}); every side "
            f"runs {a.warmup} untimed then {a.reps} timed runs of each op in one process "
            f"(the median is that process's figure); 16 rotations one by one: min({a.reps}, 3) "
            "timed runs on every side.")
    notes = [
        "Like-for-like only: \"16 rotations one by one\" is ferrolab's sequential_rotate16 "
        "(16 rotate calls, steps 1..16) against SEAL's 16 rotate_vector calls and OpenFHE's 16 "
        "EvalRotate calls; \"16 rotations hoisted\" is ferrolab's hoisted_rotate16 (one "
        "decomposition shared by the 16) against OpenFHE's hoisting (EvalFastRotationPrecompute "
        "+ 16 EvalFastRotation) only. SEAL has no public hoisted rotation, so it has no hoisted "
        "row.",
        "ferrolab's multiply + relinearise + rescale fuses the relinearisation's division by P "
        "with the rescale's by q_l (one rounded division by P*q_l); SEAL and OpenFHE run the "
        "two steps. The steps alone are the multiply + relinearise and rescale rows.",
        "decrypt includes decoding to real numbers on every side; encrypt is public-key "
        "encryption of an encoded plaintext at the top level.",
        "OpenFHE: same N and chain shape (its own primes; dnum = L + 1; its special modulus is "
        "its own choice, and its 128-bit check is off because that choice exceeds its table at "
        "2^14), manual rescaling; no conjugation in its Python API, so conjugate is against "
        "SEAL only.",
        "The ferrolab process also times operations with no counterpart here (key generation, "
        "depth8, poly_relu15); they are not compared.",
    ]
    if not a.openfhe_python:
        notes.append("OpenFHE left out: OPENFHE_PY was not set (no CPython 3.10 with openfhe).")

    extra = {"reps": a.reps, "warmup": a.warmup, "params": {f"n{ln}": params[ln]
                                                            for ln in log_ns}}
    if precision is not None:
        extra["precision"] = precision
        extra["markdown"] = precision_markdown(precision, log_ns, sides, params)
    H.write("ckks_bench", "RNS-CKKS: ferrolab vs Microsoft SEAL and OpenFHE", m, rows, versions,
            what, notes=notes, extra=extra)


def bootstrap_parse(log_n, slots, kind="real"):
    """report.json of one `ferrolab ckks bootstrap-bench` run -> the comparison's metrics."""

    def parse(_stdout, tmp):
        with open(os.path.join(tmp, "run", "report.json")) as fh:
            rep = json.load(fh)
        m, tag = rep["metrics"], f"n{log_n}_s{slots}_{kind}"
        return {
            "bootstrap_ms": m[f"bootstrap_ms_{tag}"],
            "bootstrap_precision_bits": m[f"bootstrap_precision_bits_{tag}"],
            "bootstrap_precision_bits_mean": m[f"bootstrap_precision_bits_{tag}_mean"],
            "levels_after": m[f"levels_after_bootstrap_n{log_n}"],
            "peak_rss_mb": m[f"bootstrap_peak_rss_mb_n{log_n}"],
            "key_mb": m[f"bootstrap_key_mb_n{log_n}"],
            "q_bits": rep["config"]["q_bits"], "log_scale": rep["config"]["log_scale"],
        }

    return parse


def bootstrap_main(a):
    """ferrolab's bootstrapping (real and/or complex slots) against OpenFHE's EvalBootstrap,
    one thread each, same ring degree, slot count, slot kind and levels left; OpenFHE's scaling
    primes default to ferrolab's scale bits (--openfhe-scale-bits overrides: OpenFHE's own
    examples use 59). Besides the rows, the JSON holds the issue's report keys: `metrics`
    (ferrolab) and `baselines.openfhe`, each `bootstrap_ms_n<log N>_s<slots>_<kind>`,
    `bootstrap_precision_bits_…` (worst slot, `_mean` beside it) and
    `bootstrap_peak_rss_mb_…`, the median over rounds."""
    H.check_args(a)
    if a.threads != 1:
        raise SystemExit("error: the bootstrapping comparison runs one thread each side")
    try:
        log_ns = [int(x) for x in a.log_n.split(",") if x.strip()]
        slot_counts = [int(x) for x in a.slots.split(",") if x.strip()]
    except ValueError:
        raise SystemExit("error: --log-n and --slots take comma-separated integers")
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    if not kinds or any(k not in ("real", "complex") for k in kinds):
        raise SystemExit(f"error: --kinds {a.kinds!r}: comma-separated real, complex")
    if not os.access(a.exe, os.X_OK):
        raise SystemExit(f"error: {a.exe} is not built (bench/run_ckks_bench.sh builds it)")
    here = os.path.dirname(os.path.abspath(__file__))
    ofhe_py = os.path.join(here, "ckks_openfhe.py")
    sides = ["ferrolab"] + (["openfhe"] if a.openfhe_python else [])
    jobs, chains = [], {}
    for ln in log_ns:
        insecure = ["--allow-insecure"] if ln < 16 else []
        for kind in kinds:
            for s in slot_counts:
                case = f"boot_n{ln}_s{s}_{kind}"
                jobs.append(H.Job(case, "ferrolab", [
                    a.exe, "ckks", "bootstrap-bench", "--log-n", str(ln), "--slots", str(s),
                    "--kinds", kind, "--reps", str(a.reps), "--threads", "1", "--seed", "0",
                    "--levels-after", str(a.levels_after), *insecure, "--out", "{tmp}/run"],
                    bootstrap_parse(ln, s, kind)))
                if a.openfhe_python:
                    # The chain's first prime and scale: read from a ferrolab dry start would
                    # cost a key generation; the shapes are fixed per (log N, levels left).
                    q0, sb = (50, 40) if ln == 16 and a.levels_after == 9 else (
                        (42, 35) if ln == 16 else (60, 40))
                    sb = a.openfhe_scale_bits or sb
                    q0 = max(q0, sb + 1) if not a.openfhe_scale_bits else min(60, sb + 1)
                    chains[case] = {"openfhe_first_bits": q0, "openfhe_scale_bits": sb}
                    jobs.append(H.Job(case, "openfhe", [
                        a.openfhe_python, ofhe_py, str(ln), f"{q0},{sb}", str(a.reps),
                        "--bootstrap", str(s), str(a.levels_after), "--kind", kind,
                        "--seed", "0"]))
    m = H.measure(a, jobs, label="bootstrap ")
    rows = []
    for ln in log_ns:
        for kind in kinds:
            for s in slot_counts:
                case = f"boot_n{ln}_s{s}_{kind}"
                if "openfhe" in sides:
                    rows.append(H.Row(f"2^{ln} bootstrap {s} {kind} slots vs OpenFHE", case,
                                      "bootstrap_ms", "ferrolab", "openfhe"))
                    rows.append(H.Row(f"2^{ln} bootstrap {s} {kind} slots peak RSS vs OpenFHE",
                                      case, "peak_rss_mb", "ferrolab", "openfhe", unit="MB",
                                      headline=False))
    # The report keys, ours under `metrics` and OpenFHE's under `baselines.openfhe`.
    report = {"ferrolab": {}, "openfhe": {}}
    for key, runs in m.values.items():
        case, side = key.rsplit("/", 1)
        tag = case[len("boot_"):]
        for field, name in (("bootstrap_ms", "bootstrap_ms"),
                            ("bootstrap_precision_bits", "bootstrap_precision_bits"),
                            ("bootstrap_precision_bits_mean", "bootstrap_precision_bits"),
                            ("peak_rss_mb", "bootstrap_peak_rss_mb")):
            vals = [r[field] for r in runs if r and r.get(field) is not None]
            if vals and side in report:
                suffix = "_mean" if field.endswith("_mean") else ""
                report[side][f"{name}_{tag}{suffix}"] = statistics.median(vals)
    versions = {"ferrolab": {"commit": H.git_commit(), "rustc": H.rustc_version()}}
    if a.openfhe_python:
        v = H.python_modules(a.openfhe_python, ["openfhe", "numpy"])
        v["openfhe (PyPI package)"] = dist_version(a.openfhe_python, "openfhe")
        versions["openfhe"] = v
    prec = {}
    for key, runs in m.values.items():
        prec[key] = {k: [r.get(k) for r in runs] for k in (
            "bootstrap_precision_bits", "bootstrap_precision_bits_mean", "levels_after",
            "peak_rss_mb")}
    what = ("Bootstrapping latency in ms (median of each process's timed runs), ferrolab "
            "(side A, `ckks bootstrap-bench`; real slots by the imaginary-removing variant, "
            "complex slots with both parts) against OpenFHE's EvalBootstrap (side B, the same "
            "slot kind (CKKSDataType COMPLEX for complex), SPARSE_TERNARY secret, "
            "FLEXIBLEAUTO, level budget [3, 3]); one thread each; below 1 ferrolab is faster.")
    notes = [
        "Precision (worst and mean slot, every slot of every timed run) and levels left per "
        "side and round are under `precision` in the JSON: " + json.dumps(prec),
        "OpenFHE chains: " + json.dumps(chains) + " (first prime, scaling primes); OpenFHE "
        "sizes its own bootstrapping levels and special primes, its security check is off "
        "(HEStd_NotSet), and its bootstrapping needs the first prime at most ~11 bits above "
        "the scale.",
        "Peak RSS: the whole process (keys, precomputed factors, ciphertexts).",
    ]
    if not a.openfhe_python:
        notes.append("OpenFHE left out: OPENFHE_PY was not set (no CPython 3.10 with openfhe).")
    H.write("ckks_bootstrap", "CKKS bootstrapping: ferrolab vs OpenFHE", m, rows, versions,
            what, notes=notes, extra={"precision": prec, "reps": a.reps,
                                      "metrics": report["ferrolab"],
                                      "baselines": {"openfhe": report["openfhe"]}})


def precision_markdown(p, log_ns, sides, params):
    md = ["## Precision", "",
          f"Bits of precision, -log2(max over the N/2 slots of |decrypted - exact|) per input "
          f"(the worst slot, real parts), over {p['keysets']} independently generated key sets "
          f"x {p['inputs']} random inputs (x, y uniform in [-1, 1] per slot) per side and N; "
          "mean and worst over all of them, and the mean of each key set. Same chain and scale "
          f"as the timing. {p['seconds'] / 60:.1f} min; load average before "
          f"{p['load_before']}, after {p['load_after']}.", "",
          "| N | operation | side | mean bits | worst bits | per-key-set mean |",
          "|---|---|---|---:|---:|---|"]
    for ln in log_ns:
        for op in PRECISION_OPS:
            for side in sides:
                s = p["cases"][f"n{ln}"][side][op]
                per = ", ".join(f"{v:.2f}" for v in s["per_keyset_mean"])
                md.append(f"| 2^{ln} | {NAMES[op]} | {side} | {s['mean']:.2f} | "
                          f"{s['worst']:.2f} | {per} |")
    md += ["",
           "- ferrolab's key sets are seeded: key set k from seed k (k = 0, 1, ...), its "
           "encryption noise from (2 << 40) | k and its inputs from (1 << 40) | k "
           "(crates/fhe/examples/ckks_precision.rs), so they rerun bit for bit.",
           "- SEAL's and OpenFHE's key sets are generated freshly (new context and key "
           "generator per set) from OS randomness, so they differ on a rerun: OpenFHE's Python "
           "API takes no seed, and SEAL's seeded PRNG factory replays one stream for every "
           "generator it creates (two encryptions of one plaintext come out bit-identical), "
           "which would correlate keys and noise. Their inputs are seeded (numpy).",
           "- The JSON (`precision.raw`) holds every per-input figure."]
    return "\n".join(md)


if __name__ == "__main__":
    main()
