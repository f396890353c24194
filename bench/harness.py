"""The one measurement discipline every bench/ comparison follows (bench/README.md, "The rule").

A comparison is a list of jobs: (case, side, command). Each job is its own process that prints
one JSON object (its last stdout line) of metrics, each already the median over its own timed
iterations after its warm-up. `measure` runs every job once per round, in an order shuffled per
round from a fixed seed (so neither side always runs first, on a cold cache, or beside the
other's leftovers), waits for a quiet machine before each job and repeats a job during which
other processes used the CPUs. Both sides get the same environment, including the same glibc
malloc settings (`ALLOCATOR`). `write` reports each side's median over the rounds with min-max
and IQR, and each ratio as the median of the per-round paired ratios with their min-max, which
is the spread a rerun must land in. It records the load average before and after, the machine,
the git commit, the exact command and the versions of both sides, as Markdown and as JSON
(bench/results/<name>.{md,json}; bench/summary.py collects the JSON files).

Standard library only, so any python3 can import it.
"""

import argparse
import datetime
import json
import os
import random
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
TICK = os.sysconf("SC_CLK_TCK")
# The settings the `ferrolab` binary applies to itself at start-up (tune_allocator in
# crates/cli/src/main.rs: M_MMAP_THRESHOLD 512 MiB, M_TRIM_THRESHOLD 1 GiB). Every side of every
# comparison runs with them, so neither side's allocator is tuned and the other's not.
ALLOCATOR = "glibc.malloc.mmap_threshold=536870912:glibc.malloc.trim_threshold=1073741824"


def add_args(ap, rounds=5):
    """The options every comparison script shares."""
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", rounds)),
                    help="rounds; each runs every job once, in a shuffled order")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("THREADS", 2)))
    ap.add_argument("--order-seed", type=int, default=int(os.environ.get("ORDER_SEED", 0)),
                    help="seed of the per-round job order")
    ap.add_argument("--tries", type=int, default=int(os.environ.get("TRIES", 4)),
                    help="attempts per job that other processes disturbed")
    ap.add_argument("--max-foreign", type=float, default=float(os.environ.get("MAX_FOREIGN", 0.05)),
                    help="share of the CPUs other processes may use during a clean job")
    ap.add_argument("--idle-wait", type=float, default=float(os.environ.get("IDLE_WAIT", 120)),
                    help="seconds to wait for a quiet machine before a retry")
    ap.add_argument("--allocator", choices=["tuned", "default"],
                    default=os.environ.get("ALLOCATOR", "tuned"),
                    help="both sides with ferrolab's malloc settings, or both on glibc defaults")


def check_args(a):
    for name in ("rounds", "threads", "tries"):
        if getattr(a, name) < 1:
            raise SystemExit(f"error: --{name} must be at least 1 (got {getattr(a, name)})")


def env_for(a):
    """The environment both sides run in."""
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(a.threads)
    env["RAYON_NUM_THREADS"] = str(a.threads)
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if a.allocator == "tuned":
        env["GLIBC_TUNABLES"] = ALLOCATOR
    else:
        env.pop("GLIBC_TUNABLES", None)
    return env


class Job:
    """One process of one side for one case.

    `cmd` may contain "{tmp}", replaced by a fresh empty directory per run; `parse(stdout, tmp)`
    turns the finished run into a dict of metrics (default: the last stdout line as JSON).
    """

    def __init__(self, case, side, cmd, parse=None):
        self.case, self.side, self.cmd, self.parse = case, side, list(cmd), parse

    @property
    def key(self):
        return f"{self.case}/{self.side}"


def _busy_seconds():
    with open("/proc/stat") as fh:
        f = [int(v) for v in fh.readline().split()[1:]]
    return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) / TICK


def _children_cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def loadavg():
    try:
        with open("/proc/loadavg") as fh:
            return " ".join(fh.read().split()[:3])
    except OSError:
        return "?"


def _wait_idle(max_wait, max_foreign):
    end = time.monotonic() + max_wait
    while True:
        b0, t0 = _busy_seconds(), time.monotonic()
        time.sleep(2)
        busy = (_busy_seconds() - b0) / ((time.monotonic() - t0) * (os.cpu_count() or 1))
        if busy <= max_foreign or time.monotonic() >= end:
            return


def _run_once(job, env):
    with tempfile.TemporaryDirectory(prefix="ferrolab-bench-") as tmp:
        cmd = [c.replace("{tmp}", tmp) for c in job.cmd]
        b0, c0, t0 = _busy_seconds(), _children_cpu(), time.monotonic()
        p = subprocess.run(cmd, env=env, capture_output=True, text=True)
        b1, c1, t1 = _busy_seconds(), _children_cpu(), time.monotonic()
        if p.returncode != 0:
            sys.stderr.write(p.stderr[-4000:])
            raise SystemExit(f"error: {job.key} failed (exit {p.returncode}): {shlex.join(cmd)}")
        if job.parse is not None:
            out = job.parse(p.stdout, tmp)
        else:
            lines = [l for l in p.stdout.splitlines() if l.strip()]
            if not lines:
                raise SystemExit(f"error: {job.key} printed nothing: {shlex.join(cmd)}")
            out = json.loads(lines[-1])
    foreign = max(0.0, (b1 - b0) - (c1 - c0)) / (max(t1 - t0, 1e-9) * (os.cpu_count() or 1))
    return out, foreign, t1 - t0


class Measured:
    def __init__(self, a, jobs):
        self.args = a
        self.jobs = jobs
        self.values = {j.key: [] for j in jobs}  # one dict per round
        self.disturbed = {j.key: 0 for j in jobs}
        self.seconds = 0.0
        self.load_before = loadavg()
        self.load_after = None
        self.started = datetime.datetime.now().isoformat(timespec="seconds")

    def series(self, key, metric):
        return [r[metric] for r in self.values[key] if metric in r and r[metric] is not None]


def measure(a, jobs, env=None, label=""):
    """Runs every job once per round, the order shuffled per round; returns a Measured."""
    env = env_for(a) if env is None else env
    m = Measured(a, jobs)
    rng = random.Random(a.order_seed)
    t_start = time.monotonic()
    for r in range(1, a.rounds + 1):
        order = list(jobs)
        rng.shuffle(order)
        for job in order:
            print(f">> {label}round {r}/{a.rounds}: {job.key}", file=sys.stderr, flush=True)
            kept = None
            for attempt in range(1, a.tries + 1):
                _wait_idle(a.idle_wait if attempt > 1 else min(a.idle_wait, 10), a.max_foreign)
                out, foreign, _ = _run_once(job, env)
                kept = out
                if foreign <= a.max_foreign:
                    break
                last = attempt == a.tries
                print(f"   {job.key}: other processes used {foreign:.0%} of the CPUs; "
                      f"{'kept, counted as disturbed' if last else 'repeating'}",
                      file=sys.stderr, flush=True)
                if last:
                    m.disturbed[job.key] += 1
            m.values[job.key].append(kept)
    m.seconds = time.monotonic() - t_start
    m.load_after = loadavg()
    return m


def stats(values):
    v = sorted(values)
    if not v:
        return None
    q = statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else [v[0], v[0], v[0]]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q[0], "q3": q[2],
            "n": len(v), "values": values}


class Row:
    """One published ratio: metric of side `num` over the same metric of side `den`."""

    def __init__(self, label, case, metric, num, den, den_metric=None, unit="ms", headline=True):
        self.label, self.case, self.metric = label, case, metric
        self.num, self.den, self.den_metric = num, den, den_metric or metric
        # Headline rows are the ratios README publishes; bench/summary.py lists only those.
        self.unit, self.headline = unit, headline


def row_result(m, row):
    nk, dk = f"{row.case}/{row.num}", f"{row.case}/{row.den}"
    nv = [r.get(row.metric) for r in m.values[nk]]
    dv = [r.get(row.den_metric) for r in m.values[dk]]
    ratios = [n / d for n, d in zip(nv, dv) if n is not None and d not in (None, 0)]
    return {
        "label": row.label, "case": row.case, "metric": row.metric, "unit": row.unit,
        "headline": row.headline,
        "num_side": row.num, "den_side": row.den,
        "num": stats([v for v in nv if v is not None]),
        "den": stats([v for v in dv if v is not None]),
        "ratio": stats(ratios),
        "disturbed_runs": m.disturbed[nk] + m.disturbed[dk],
    }


def _fmt(v, digits):
    if v is None:
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            return next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")),
                        "unknown CPU")
    except OSError:
        return "unknown CPU"


def mem_gib():
    try:
        with open("/proc/meminfo") as fh:
            kb = int(next(l.split()[1] for l in fh if l.startswith("MemTotal")))
        return kb / 2**20
    except (OSError, StopIteration, ValueError):
        return float("nan")


def git_commit():
    try:
        c = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return c + ("+uncommitted" if dirty else "")
    except OSError:
        return "?"


def cargo_lock_version(crate):
    try:
        text = open(os.path.join(ROOT, "Cargo.lock")).read()
    except OSError:
        return "?"
    m = re.search(r'name = "' + re.escape(crate) + r'"\nversion = "([^"]+)"', text)
    return m.group(1) if m else "?"


def rustc_version():
    try:
        return subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "?"


def python_modules(python, modules):
    """Versions of `modules` as `python` imports them ("absent" where it cannot)."""
    code = ("import importlib, json, sys\nout = {'python': sys.version.split()[0]}\n"
            f"for m in {list(modules)!r}:\n"
            "    try:\n        out[m] = getattr(importlib.import_module(m), '__version__', '?')\n"
            "    except Exception:\n        out[m] = 'absent'\nprint(json.dumps(out))")
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:
        return {m: "?" for m in modules}


def ferrolab_versions():
    return {"ferrolab": git_commit(), "rustc": rustc_version(), "burn": cargo_lock_version("burn")}


def write(name, title, m, rows, versions, what, command=None, notes=(), extra=None):
    """Writes bench/results/<name>.md and .json; prints the Markdown; returns the JSON dict."""
    a = m.args
    command = command or os.environ.get("BENCH_COMMAND") or shlex.join(
        [os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
    results = [row_result(m, r) for r in rows]
    doc = {
        "name": name, "title": title, "command": command, "started": m.started,
        "seconds": round(m.seconds, 1),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "mem_gib": round(mem_gib(), 1)},
        "threads": a.threads, "rounds": a.rounds, "order_seed": a.order_seed,
        "allocator": ("both sides: " + ALLOCATOR) if a.allocator == "tuned"
        else "both sides: glibc defaults",
        "load_before": m.load_before, "load_after": m.load_after,
        "versions": versions, "what": what, "notes": list(notes), "rows": results,
        "raw": m.values, "disturbed": m.disturbed,
    }
    if extra:
        doc.update(extra)
    md = [f"# {title}", "",
          f"Command: `{command}` (started {m.started}, {m.seconds / 60:.1f} min).", "",
          f"Machine: {doc['machine']['cores']} cores, {doc['machine']['cpu']}, "
          f"{doc['machine']['mem_gib']} GiB. Load average (1, 5, 15 min) before: "
          f"{m.load_before}; after: {m.load_after}.", "",
          "Versions: " + "; ".join(f"{side}: " + ", ".join(f"{k} {v}" for k, v in vs.items())
                                   for side, vs in versions.items()) + ".", "",
          f"Method (bench/README.md): {a.threads} threads each side; {a.rounds} rounds, each "
          f"running every job once as its own process in a shuffled order (seed {a.order_seed}); "
          f"allocator: {doc['allocator']}. Each side's figure is the median over rounds "
          "(min-max); the ratio is the median of the per-round ratios (min-max), which is the "
          "spread a rerun should land in.", "", what, "",
          "| what | side A | A median (min-max) | side B | B median (min-max) | ratio A/B median | "
          "ratio min-max |",
          "|---|---|---:|---|---:|---:|---:|"]
    for r in results:
        if r["ratio"] is None:
            continue
        d = 2 if r["unit"] in ("ms", "s") else 1
        n, dd, q = r["num"], r["den"], r["ratio"]
        flag = " (disturbed runs kept)" if r["disturbed_runs"] else ""
        md.append(f"| {r['label']}{flag} | {r['num_side']} | {_fmt(n['median'], d)} "
                  f"({_fmt(n['min'], d)}-{_fmt(n['max'], d)}) {r['unit']} | {r['den_side']} | "
                  f"{_fmt(dd['median'], d)} ({_fmt(dd['min'], d)}-{_fmt(dd['max'], d)}) "
                  f"{r['unit']} | **{q['median']:.2f}** | {q['min']:.2f}-{q['max']:.2f} |")
    if notes:
        md += [""] + [f"- {n}" for n in notes]
    text = "\n".join(md) + "\n"
    if extra and extra.get("markdown"):
        text += "\n" + extra["markdown"].rstrip() + "\n"
        doc.pop("markdown", None)
    os.makedirs(RESULTS, exist_ok=True)
    for suffix, content in ((".md", text), (".json", json.dumps(doc, indent=1) + "\n")):
        path = os.path.join(RESULTS, name + suffix)
        with open(path + ".tmp", "w") as fh:
            fh.write(content)
        os.replace(path + ".tmp", path)
    print(text)
    print(f"wrote bench/results/{name}.md and .json", file=sys.stderr)
    return doc


def parser(description, rounds=5):
    ap = argparse.ArgumentParser(description=description)
    add_args(ap, rounds)
    return ap
