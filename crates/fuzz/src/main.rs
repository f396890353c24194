#![cfg_attr(test, allow(clippy::unwrap_used))]
//! `ferrolab-fuzz`: a seeded mutation campaign over every input ferrolab reads.
//!
//! ```text
//! cargo run --release -p ferrolab-fuzz -- --runs 300 --seed 1 [--out DIR] [--only a,b] [--jobs 2]
//! ```
//!
//! Targets: each `ferrolab_data` reader (driven in-process in a child: this binary re-executed
//! with the hidden `--one TARGET FILE`), config files and `--set` values (through
//! `ferrolab <system> --print-config`), and checkpoint folders (`secnn predict`,
//! `apg predict`, `classify predict`, `adod predict`, `attenscribble predict`), training states
//! (`classify --resume`, `attenscribble --resume` of a run stopped mid-way),
//! layer-importance runs (`layer-importance --resume`: its checkpoints and unit files),
//! job files of `fed client --system sdgt|fedgraph`
//! and the COCO JSON files of `eval coco`. Every case runs in its own process under a memory cap and a timeout; a
//! panic, an abort or other signal, a hang, or an exit status other than 0/1/2 (0/2 for config
//! cases) is a failure: the case's files, its command and its output are written under `--out`
//! (default `target/fuzz-failures`) and the campaign exits 1. Each reader must also parse at
//! least 30% of its mutants past the header, so that the campaign cannot pass on magic-byte
//! rejections alone. `--runs N` is the number of mutants per target. The `ferrolab` binary is
//! `$FERROLAB_BIN`, else the `ferrolab` next to this executable (build it first with
//! `cargo build --release -p ferrolab`).

mod child;
mod cli;
mod edge_state;
mod hcnn_file;
mod json;
mod li_dataset;
mod mutate;
mod png;
mod readers;
mod rl_checkpoint;
mod rng;
mod sdgt_state;

use child::End;
use rng::Rng;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Address space cap of a reader child; the seeds are a few KiB, so a reader that needs more
/// is amplifying a size field it did not check.
const READER_MEM_MB: u64 = 1024;
/// Address space cap of a `ferrolab` child (burn and rayon reserve more address space).
const BIN_MEM_MB: u64 = 4096;
const READER_TIMEOUT: Duration = Duration::from_secs(10);
const BIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Share of each reader's mutants that must get past the header.
const MIN_PAST_HEADER: f64 = 0.30;

const BINARY_TARGETS: &[&str] = &[
    "config",
    "set",
    "ckpt-secnn",
    "ckpt-apg",
    "ckpt-classify",
    "resume-classify",
    "ckpt-adod",
    "ckpt-attenscribble",
    "resume-attenscribble",
    "coco",
    "resume-layer-importance",
    "probe-layer-importance",
    "fed-job",
];

#[derive(Debug)]
struct Args {
    runs: usize,
    seed: u64,
    out: PathBuf,
    jobs: usize,
    only: Option<Vec<String>>,
    strict_stderr: bool,
    /// Keep binary cases that end with this exit status too (for triage).
    keep: Option<i32>,
}

const USAGE: &str = "usage: ferrolab-fuzz [--runs N] [--seed S] [--out DIR] [--jobs J] [--only t1,t2] [--strict-stderr] [--keep CODE]";

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        runs: 300,
        seed: 0,
        out: PathBuf::from("target/fuzz-failures"),
        jobs: 2,
        only: None,
        strict_stderr: false,
        keep: None,
    };
    while let Some(flag) = it.next() {
        if flag == "--strict-stderr" {
            a.strict_stderr = true;
            continue;
        }
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: expected a non-negative integer, found {v:?}"))
        };
        match flag.as_str() {
            "--runs" => a.runs = num(value()?)? as usize,
            "--seed" => a.seed = num(value()?)?,
            "--out" => a.out = PathBuf::from(value()?),
            "--jobs" => a.jobs = (num(value()?)? as usize).clamp(1, 64),
            "--keep" => a.keep = Some(num(value()?)? as i32),
            "--only" => a.only = Some(value()?.split(',').map(str::to_string).collect()),
            other => return Err(format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    Ok(a)
}

/// Counters of one target.
#[derive(Debug, Default, Clone)]
struct Stats {
    mutants: usize,
    ok: usize,
    past_header: usize,
    exit: BTreeMap<i32, usize>,
    failures: BTreeMap<String, usize>,
    bad_stderr: usize,
    seconds: f64,
}

/// One case's result.
#[derive(Debug)]
struct CaseResult {
    target: &'static str,
    /// Reader verdict (readers only).
    verdict: Option<readers::Verdict>,
    end: End,
    failure: Option<String>,
    bad_stderr: bool,
    seconds: f64,
}

struct Campaign {
    args: Args,
    work: PathBuf,
    me: PathBuf,
    setup: Option<cli::Setup>,
    reader_seeds: BTreeMap<&'static str, Vec<readers::Seed>>,
    failures_written: AtomicUsize,
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=,:".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Copies a failing case to `--out/<target>-<index>/` with `repro.sh`, `stdout`, `stderr`.
#[allow(clippy::too_many_arguments)] // one call site per kind of case
fn keep_failure(
    c: &Campaign,
    case_dir: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    stdin: Option<&Path>,
    o: &child::Outcome,
    why: &str,
) {
    let dest = c.args.out.join(name);
    let _ = std::fs::remove_dir_all(&dest);
    if let Err(e) = copy_dir(case_dir, &dest) {
        eprintln!(
            "warning: cannot keep failing case {name} in {}: {e}",
            dest.display()
        );
        return;
    }
    // Paths in the command point into the kept copy.
    let case_s = case_dir.display().to_string();
    let dest_s = dest.display().to_string();
    let mut cmd = shell_quote(&program.display().to_string());
    for a in args {
        cmd.push(' ');
        cmd.push_str(&shell_quote(&a.replace(&case_s, &dest_s)));
    }
    if let Some(p) = stdin {
        cmd.push_str(" < ");
        cmd.push_str(&shell_quote(
            &p.display().to_string().replace(&case_s, &dest_s),
        ));
    }
    let script = format!(
        "#!/bin/sh\n# {why}\nulimit -v {}\n{cmd}\n",
        if program == c.me {
            READER_MEM_MB
        } else {
            BIN_MEM_MB
        } * 1024
    );
    // A kept case without its script or output cannot be replayed: say so rather than count it.
    for (file, bytes) in [
        ("repro.sh", script.as_bytes()),
        ("stdout", &o.stdout[..]),
        ("stderr", &o.stderr[..]),
    ] {
        if let Err(e) = std::fs::write(dest.join(file), bytes) {
            eprintln!(
                "warning: cannot keep failing case {name}: {}: {e}",
                dest.join(file).display()
            );
            let _ = std::fs::remove_dir_all(&dest);
            return;
        }
    }
    c.failures_written.fetch_add(1, Ordering::Relaxed);
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let t = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &t)?;
        } else {
            std::fs::copy(e.path(), t)?;
        }
    }
    Ok(())
}

fn run_case(c: &Campaign, target: &'static str, index: usize) -> std::io::Result<CaseResult> {
    let start = Instant::now();
    let mut rng = Rng::for_case(c.args.seed, target, index);
    let name = format!("{target}-{index}");
    let dir = c.work.join("cases").join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let result = if let Some(seeds) = c.reader_seeds.get(target) {
        let seed = &seeds[rng.below(seeds.len())];
        let (mutant, packed) = readers::mutate(&mut rng, target, seed);
        let path = readers::write(&mut rng, &dir, &mutant, packed)?;
        let args = vec![
            "--one".to_string(),
            target.to_string(),
            path.display().to_string(),
        ];
        let o = child::run(&c.me, &args, &dir, None, READER_MEM_MB, READER_TIMEOUT)?;
        let text = String::from_utf8_lossy(&o.stdout);
        let verdict = if text.contains("verdict: ok") {
            Some(readers::Verdict::Ok)
        } else if text.contains("verdict: past-header") {
            Some(readers::Verdict::PastHeader)
        } else if text.contains("verdict: header") {
            Some(readers::Verdict::Header)
        } else {
            None
        };
        let failure = o.end.failure(&[0]);
        if let Some(f) = &failure {
            keep_failure(c, &dir, &name, &c.me, &args, None, &o, f);
        }
        CaseResult {
            target,
            verdict,
            end: o.end,
            failure,
            bad_stderr: false,
            seconds: 0.0,
        }
    } else {
        let Some(s) = &c.setup else {
            return Err(std::io::Error::other("binary targets need the setup"));
        };
        let inv = match target {
            "config" => cli::config_case(&mut rng, s, &dir)?,
            "set" => cli::set_case(&mut rng, s),
            "ckpt-secnn" => cli::checkpoint_case(&mut rng, s, &dir, "secnn")?,
            "ckpt-classify" => cli::checkpoint_case(&mut rng, s, &dir, "classify")?,
            "resume-classify" => cli::resume_case(&mut rng, s, &dir)?,
            "ckpt-adod" => cli::checkpoint_case(&mut rng, s, &dir, "adod")?,
            "ckpt-attenscribble" => cli::checkpoint_case(&mut rng, s, &dir, "attenscribble")?,
            "resume-attenscribble" => cli::attenscribble_resume_case(&mut rng, s, &dir)?,
            "coco" => cli::coco_case(&mut rng, &dir)?,
            "resume-layer-importance" => cli::li_resume_case(&mut rng, s, &dir)?,
            "probe-layer-importance" => cli::li_probe_case(&mut rng, s, &dir)?,
            "fed-job" => cli::fed_job_case(&mut rng, s, &dir)?,
            _ => cli::checkpoint_case(&mut rng, s, &dir, "apg")?,
        };
        std::fs::write(dir.join("args.txt"), inv.args.join("\n"))?;
        let o = child::run(
            &s.bin,
            &inv.args,
            &dir,
            inv.stdin.as_deref(),
            BIN_MEM_MB,
            BIN_TIMEOUT,
        )?;
        let mut failure = o.end.failure(inv.allowed);
        let bad_stderr = !child::stderr_rule_holds(&o.end, &o.stderr);
        let mut kept_args = inv.args.clone();
        if failure.is_none()
            && o.end == End::Code(0)
            && let Some(sys) = &inv.round_trip
        {
            // The printed configuration is itself a valid --config that prints the same.
            let printed = dir.join("printed.toml");
            std::fs::write(&printed, &o.stdout)?;
            let args2 = vec![
                sys.clone(),
                "--print-config".into(),
                "--config".into(),
                printed.display().to_string(),
            ];
            let o2 = child::run(&s.bin, &args2, &dir, None, BIN_MEM_MB, BIN_TIMEOUT)?;
            if o2.end != End::Code(0) || o2.stdout != o.stdout {
                failure = Some(o2.end.failure(&[0]).unwrap_or_else(|| "round-trip".into()));
                kept_args = args2;
                keep_failure(
                    c,
                    &dir,
                    &name,
                    &s.bin,
                    &kept_args,
                    None,
                    &o2,
                    "print-config output does not round-trip",
                );
            }
        } else {
            let reason = match &failure {
                Some(f) => Some(f.as_str()),
                None if bad_stderr && c.args.strict_stderr => Some("stderr rule"),
                None if c.args.keep.is_some_and(|k| o.end == End::Code(k)) => Some("kept (--keep)"),
                None => None,
            };
            if let Some(reason) = reason {
                keep_failure(
                    c,
                    &dir,
                    &name,
                    &s.bin,
                    &kept_args,
                    inv.stdin.as_deref(),
                    &o,
                    reason,
                );
            }
        }
        CaseResult {
            target,
            verdict: None,
            end: o.end,
            failure,
            bad_stderr,
            seconds: 0.0,
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    Ok(CaseResult {
        seconds: start.elapsed().as_secs_f64(),
        ..result
    })
}

fn find_ferrolab(me: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERROLAB_BIN") {
        return Some(PathBuf::from(p));
    }
    let p = me.parent()?.join("ferrolab");
    p.is_file().then_some(p)
}

fn campaign(args: Args) -> Result<bool, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let all: Vec<&'static str> = readers::READERS
        .iter()
        .chain(BINARY_TARGETS)
        .copied()
        .collect();
    let targets: Vec<&'static str> = match &args.only {
        Some(only) => {
            for o in only {
                if !all.contains(&o.as_str()) {
                    return Err(format!(
                        "unknown target {o:?} (targets: {})",
                        all.join(", ")
                    ));
                }
            }
            all.iter()
                .copied()
                .filter(|t| only.iter().any(|o| o == t))
                .collect()
        }
        None => all.clone(),
    };
    let work = std::env::temp_dir().join(format!("ferrolab-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let started = Instant::now();
    let setup = if targets.iter().any(|t| BINARY_TARGETS.contains(t)) {
        let bin = find_ferrolab(&me).ok_or_else(|| {
            format!(
                "no ferrolab binary next to {} and $FERROLAB_BIN unset; build it with `cargo build --release -p ferrolab`",
                me.display()
            )
        })?;
        eprintln!(
            "setup: seeds from {} (print-config, a tiny SECNN and APG run)",
            bin.display()
        );
        Some(cli::setup(&bin, &work)?)
    } else {
        None
    };
    let reader_seeds: BTreeMap<&'static str, Vec<readers::Seed>> = targets
        .iter()
        .filter(|t| readers::READERS.contains(t))
        .map(|t| (*t, readers::seeds(t)))
        .collect();
    // Interleaved so that both workers always have every kind of case.
    let mut cases = Vec::with_capacity(targets.len() * args.runs);
    for i in 0..args.runs {
        for t in &targets {
            cases.push((*t, i));
        }
    }
    let jobs = args.jobs;
    let c = Campaign {
        args,
        work: work.clone(),
        me,
        setup,
        reader_seeds,
        failures_written: AtomicUsize::new(0),
    };
    let next = AtomicUsize::new(0);
    let stats: Mutex<BTreeMap<&'static str, Stats>> =
        Mutex::new(targets.iter().map(|t| (*t, Stats::default())).collect());
    let errors: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&(target, index)) = cases.get(k) else {
                        break;
                    };
                    match run_case(&c, target, index) {
                        Ok(r) => {
                            let mut st = stats
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let s = st.entry(r.target).or_default();
                            s.mutants += 1;
                            s.seconds += r.seconds;
                            match r.verdict {
                                Some(readers::Verdict::Ok) => {
                                    s.ok += 1;
                                    s.past_header += 1;
                                }
                                Some(readers::Verdict::PastHeader) => s.past_header += 1,
                                _ => {}
                            }
                            if let End::Code(code) = r.end {
                                *s.exit.entry(code).or_default() += 1;
                            }
                            if let Some(f) = r.failure {
                                *s.failures.entry(f).or_default() += 1;
                            }
                            if r.bad_stderr {
                                s.bad_stderr += 1;
                            }
                        }
                        Err(e) => errors
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(format!("{target}-{index}: harness error: {e}")),
                    }
                }
            });
        }
    });
    let stats = stats
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let errors = errors
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let _ = std::fs::remove_dir_all(&work);

    let mut ok = errors.is_empty();
    println!(
        "{:<11} {:>7} {:>6} {:>12} {:>18} {:>9} {:>8}  failures",
        "target", "mutants", "ok", "past-header", "exit 0/1/2", "bad-stderr", "sec"
    );
    for t in &targets {
        let s = stats.get(t).cloned().unwrap_or_default();
        let is_reader = readers::READERS.contains(t);
        let share = if s.mutants > 0 {
            s.past_header as f64 / s.mutants as f64
        } else {
            0.0
        };
        let past = if is_reader {
            format!("{} ({:.0}%)", s.past_header, share * 100.0)
        } else {
            "-".to_string()
        };
        let ex = |k| s.exit.get(&k).copied().unwrap_or(0);
        let fails = if s.failures.is_empty() {
            "none".to_string()
        } else {
            s.failures
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut note = String::new();
        if is_reader && s.mutants > 0 && share < MIN_PAST_HEADER {
            note = format!("  BELOW {:.0}% past the header", MIN_PAST_HEADER * 100.0);
            ok = false;
        }
        if !s.failures.is_empty() || (c.args.strict_stderr && s.bad_stderr > 0) {
            ok = false;
        }
        println!(
            "{:<11} {:>7} {:>6} {:>12} {:>18} {:>9} {:>8.1}  {fails}{note}",
            t,
            s.mutants,
            if is_reader {
                s.ok.to_string()
            } else {
                "-".into()
            },
            past,
            format!("{}/{}/{}", ex(0), ex(1), ex(2)),
            if is_reader {
                "-".to_string()
            } else {
                s.bad_stderr.to_string()
            },
            s.seconds,
        );
    }
    for e in &errors {
        println!("{e}");
    }
    let kept = c.failures_written.load(Ordering::Relaxed);
    let failing: usize = stats
        .values()
        .map(|s| s.failures.values().sum::<usize>())
        .sum();
    println!(
        "{} cases in {:.1} s (seed {}, {} per target); {}",
        cases.len(),
        started.elapsed().as_secs_f64(),
        c.args.seed,
        c.args.runs,
        match (failing, kept) {
            (0, 0) => "no failing case".to_string(),
            (f, 0) => format!("{f} failing case(s), none written (see the warnings above)"),
            // Kept cases also count those kept by --keep or the stderr rule.
            (f, k) => format!(
                "{f} failing case(s); {k} case(s) written to {} (each with repro.sh)",
                c.args.out.display()
            ),
        }
    );
    Ok(ok)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "--one") {
        // Child mode: one reader call on one file.
        return match (argv.get(1), argv.get(2)) {
            (Some(t), Some(p)) => {
                readers::run_one(t, Path::new(p));
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("error: --one TARGET FILE");
                ExitCode::from(2)
            }
        };
    }
    let args = match parse_args(argv.into_iter()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match campaign(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
