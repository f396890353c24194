//! The generic runner: one clap command and one run procedure for every registered system.
//!
//! A run is assembled in `<out>.incomplete` and renamed to `<out>` when its report is written,
//! so a killed or failed run never looks finished and never mixes with another run's files.
//! `--resume DIR` (either name) continues an incomplete run with the same resolved config,
//! `--seed` and `--threads`.

use crate::common::UsageError;
use anyhow::Context;
use clap::{Arg, ArgAction, ArgMatches, Command, value_parser};
use ferrolab_core::config::one_line;
use ferrolab_core::system::{DynSystem, Resolved, SystemError};
use ferrolab_core::{Outcome, RunContext, RunDir};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The clap command of `sys`: the shared flags, its flag aliases and its sub-commands.
pub fn command(sys: &'static dyn DynSystem) -> Command {
    let presets = sys
        .presets()
        .iter()
        .map(|p| format!("  {:<16} {}", p.name, p.about))
        .collect::<Vec<_>>()
        .join("\n");
    let mut c = Command::new(sys.name())
        .about(sys.about())
        .args_conflicts_with_subcommands(true)
        .after_help(format!(
            "Presets (--preset NAME):\n{presets}\n\nEvery key with its doc and range: \
             ferrolab {} --print-config",
            sys.name()
        ))
        .arg(
            Arg::new("preset")
                .long("preset")
                .value_name("NAME")
                .help("A shipped configuration (configs/<system>/NAME.toml, embedded): quick, paper, ..."),
        )
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(value_parser!(PathBuf))
                .help("TOML file layered over the defaults (and the preset)"),
        )
        .arg(
            Arg::new("set")
                .long("set")
                .value_name("KEY=VALUE")
                .action(ArgAction::Append)
                .help("Override one key, e.g. `--set train.epochs=5` (repeatable; unknown keys are errors)"),
        )
        .arg(
            Arg::new("print-config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the resolved configuration as TOML, each key with its doc and range, and exit"),
        )
        .arg(
            Arg::new("data-dir")
                .long("data-dir")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Folder holding the real datasets (first of: this, $FERROLAB_DATA, the per-user data folder, ../shared/data, the system location)"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .conflicts_with("resume")
                .help("Output folder for report.json, config.toml, metrics.jsonl, plots and checkpoints (default: runs/<system>-<unix time>); must not exist yet"),
        )
        .arg(
            Arg::new("resume")
                .long("resume")
                .value_name("DIR")
                .value_parser(value_parser!(PathBuf))
                .help("Continue a killed or failed run in DIR (or DIR.incomplete) with the same resolved configuration, --seed and --threads (the run's count, also when it was left at its default)"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_parser(value_parser!(u64))
                .default_value("0")
                .help("Master seed driving every random source"),
        )
        .arg(
            Arg::new("threads")
                .long("threads")
                .value_parser(value_parser!(usize))
                .help("CPU threads for the tensor backend (default: all cores)"),
        )
        .arg(
            Arg::new("max-memory")
                .long("max-memory")
                .value_name("SIZE")
                .help("Refuse a run whose estimated peak memory exceeds SIZE (8G, 8GiB, 512M or bytes; default 80% of the machine's or cgroup's memory)"),
        );
    for a in sys.flag_aliases() {
        c = c.arg(
            Arg::new(a.flag)
                .long(a.flag)
                .value_name("VALUE")
                .help(a.help),
        );
    }
    for s in sys.subcommands() {
        c = c.subcommand((s.command)());
    }
    c
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The final output folder (`None`: `runs/<name>-<time>`).
    pub out: Option<PathBuf>,
    /// Continue the incomplete run in this folder.
    pub resume: Option<PathBuf>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--seed`.
    pub seed: u64,
    /// `--threads`.
    pub threads: Option<usize>,
    /// `--max-memory` as given (parsed in [`execute`]).
    pub max_memory: Option<String>,
}

/// Runs `ferrolab <system> ...`.
pub fn run(sys: &'static dyn DynSystem, m: &ArgMatches) -> anyhow::Result<()> {
    if let Some((name, sub)) = m.subcommand() {
        let Some(s) = sys
            .subcommands()
            .into_iter()
            .find(|s| (s.command)().get_name() == name)
        else {
            return Err(UsageError(format!("unknown sub-command {name}")).into());
        };
        if sys.tune_allocator_at_start() {
            ferrolab_core::backend::tune_allocator();
        }
        return Ok((s.run)(sub)?);
    }
    let mut sets: Vec<String> = m
        .get_many::<String>("set")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    for a in sys.flag_aliases() {
        if let Some(v) = m.get_one::<String>(a.flag) {
            sets.push(format!("{}={v}", a.key));
        }
    }
    let preset = m.get_one::<String>("preset").map(String::as_str);
    let file = m.get_one::<PathBuf>("config").map(PathBuf::as_path);
    let resolved = sys.resolve(preset, file, &sets)?;
    if m.get_flag("print-config") {
        print!("{}", resolved.documented);
        return Ok(());
    }
    check_threads(m.get_one::<usize>("threads").copied())?;
    let opts = RunOptions {
        out: m.get_one::<PathBuf>("out").cloned(),
        resume: m.get_one::<PathBuf>("resume").cloned(),
        data_dir: m.get_one::<PathBuf>("data-dir").cloned(),
        seed: m.get_one::<u64>("seed").copied().unwrap_or(0),
        threads: m.get_one::<usize>("threads").copied(),
        max_memory: m.get_one::<String>("max-memory").cloned(),
    };
    let (outcome, dir) = execute(sys, &resolved, &opts)?;
    for line in sys.summary(&outcome) {
        println!("{line}");
    }
    eprintln!("wrote {}", dir.display());
    Ok(())
}

/// Refuses a `--threads` outside `1..=max_threads()` (usage error, exit 2), before any work.
pub fn check_threads(threads: Option<usize>) -> anyhow::Result<()> {
    let max = ferrolab_core::backend::max_threads();
    match threads {
        Some(n) if n == 0 || n > max => Err(UsageError(format!(
            "--threads {n}: expected 1..={max} (4 per core, at least 64)"
        ))
        .into()),
        _ => Ok(()),
    }
}

/// Starts the thread pool with `--threads`: a count out of range is a usage error (exit 2), a
/// pool that cannot be started a runtime failure (exit 1). Returns the threads in use.
pub fn start_threads(threads: Option<usize>) -> anyhow::Result<usize> {
    check_threads(threads)?;
    ferrolab_core::backend::try_init_threads(threads).map_err(|e| match e {
        ferrolab_core::backend::ThreadsError::OutOfRange { .. } => {
            anyhow::Error::from(UsageError(e.to_string()))
        }
        ferrolab_core::backend::ThreadsError::PoolStart { .. } => anyhow::Error::from(e),
    })
}

fn incomplete_name(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".incomplete");
    PathBuf::from(s)
}

/// The run procedure every system shares: check the data, assemble the run folder, run, write
/// config.toml, report.json, metrics.jsonl and plots, then give the folder its final name.
/// Returns the outcome and the finished folder.
pub fn execute(
    sys: &'static dyn DynSystem,
    resolved: &Resolved,
    opts: &RunOptions,
) -> anyhow::Result<(Outcome, PathBuf)> {
    let threads = start_threads(opts.threads)?;
    if sys.tune_allocator_at_start() {
        ferrolab_core::backend::tune_allocator();
    }
    let limit = match &opts.max_memory {
        Some(t) => ferrolab_core::guard::parse_size(t)?,
        None => ferrolab_core::guard::default_limit(),
    };
    // A `--data-dir` that is not there is a mistyped path, not a place to skip: refused
    // rather than fall through to the rest of the lookup chain.
    if let Some(p) = &opts.data_dir
        && !p.is_dir()
    {
        return Err(UsageError(format!("--data-dir {} is not a folder", p.display())).into());
    }
    for d in &resolved.datasets {
        if let Err(e) = ferrolab_data::lookup::find_dataset(opts.data_dir.as_deref(), d) {
            let hint = if opts.data_dir.is_some() {
                format!("run `ferrolab data fetch {d}`")
            } else {
                format!("run `ferrolab data fetch {d}`, or pass --data-dir")
            };
            return Err(UsageError(format!("{e} ({hint})")).into());
        }
    }
    if let Some(est) = sys.memory_estimate(resolved, opts.data_dir.as_deref())? {
        ferrolab_core::guard::check(&est, limit)?;
    }
    let (final_dir, work, run_dir, resuming) = match &opts.resume {
        Some(dir) => {
            let (final_dir, work) = if dir.to_string_lossy().ends_with(".incomplete") {
                let s = dir.to_string_lossy();
                (
                    PathBuf::from(&s[..s.len() - ".incomplete".len()]),
                    dir.clone(),
                )
            } else {
                (dir.clone(), incomplete_name(dir))
            };
            if final_dir.join("report.json").exists() {
                return Err(UsageError(format!(
                    "--resume {}: that run is complete (report.json exists)",
                    dir.display()
                ))
                .into());
            }
            let old = std::fs::read_to_string(work.join("config.toml")).map_err(|e| {
                UsageError(format!(
                    "--resume {}: no incomplete run there ({}: {e})",
                    dir.display(),
                    work.join("config.toml").display()
                ))
            })?;
            let rewrite =
                old != resolved.toml && same_config_as_started(sys, dir, &work, &old, resolved)?;
            // Units saved under one master seed, or computed at one thread count, must not
            // be mixed with runs under another (DESIGN: same seed, config and thread count,
            // same figures); neither is part of config.toml. (A run folder from before these
            // files were written is taken as it is.)
            same_as_started(dir, &work.join(SEED_FILE), "--seed", opts.seed)?;
            same_as_started(dir, &work.join(THREADS_FILE), "--threads", threads as u64)?;
            // Only once every check has passed: a refused resume leaves the folder as it was.
            if rewrite {
                ferrolab_core::run::write_atomic(
                    &work.join("config.toml"),
                    resolved.toml.as_bytes(),
                )?;
            }
            (final_dir, work.clone(), RunDir::reopen(&work)?, true)
        }
        None => {
            let final_dir = opts
                .out
                .clone()
                .unwrap_or_else(|| ferrolab_core::run::default_out(sys.name()));
            ferrolab_core::run::ensure_fresh(&final_dir)?;
            let work = incomplete_name(&final_dir);
            if work.exists() {
                return Err(UsageError(format!(
                    "{} holds an incomplete run; continue it with --resume {} or remove it",
                    work.display(),
                    final_dir.display()
                ))
                .into());
            }
            let run_dir = RunDir::create(&work)?;
            run_dir.write_config(&resolved.toml)?;
            run_dir.write_file(SEED_FILE, format!("{}\n", opts.seed).as_bytes())?;
            run_dir.write_file(THREADS_FILE, format!("{threads}\n").as_bytes())?;
            (final_dir, work, run_dir, false)
        }
    };
    let ctx = RunContext::new(opts.seed, threads, opts.data_dir.clone(), run_dir);
    match run_in(sys, resolved, ctx, opts.seed, &final_dir) {
        Ok(outcome) => Ok((outcome, final_dir)),
        Err(e) => {
            let usage = crate::common::exit_code(&e) == 2;
            if usage && !resuming {
                // Bad input found while starting: nothing worth keeping was written.
                let _ = std::fs::remove_dir_all(&work);
            } else {
                eprintln!(
                    "incomplete run kept in {}; continue it with --resume {}",
                    work.display(),
                    final_dir.display()
                );
            }
            Err(e)
        }
    }
}

/// A `--resume` whose resolved configuration is not the run's `config.toml` word for word:
/// accepted when that file, read by this binary, resolves to the same configuration — a run
/// started by an older ferrolab lacks the keys added since, which then take their defaults
/// (named on stderr; `Ok(true)`: the caller rewrites `config.toml` as this binary resolves it,
/// once its other checks pass); refused otherwise, naming the keys that differ.
fn same_config_as_started(
    sys: &'static dyn DynSystem,
    dir: &Path,
    work: &Path,
    old: &str,
    resolved: &Resolved,
) -> anyhow::Result<bool> {
    let path = work.join("config.toml");
    let refuse = |why: String| -> anyhow::Error {
        UsageError(format!(
            "--resume {}: the resolved configuration differs from the run's config.toml ({why}); \
             pass the same --preset/--config/--set as the original run",
            dir.display(),
        ))
        .into()
    };
    let keys = |text: &str| -> Result<BTreeMap<String, String>, String> {
        let t = toml::from_str::<toml::Table>(text).map_err(|e| one_line(&e))?;
        let mut out = BTreeMap::new();
        flatten_toml("", &toml::Value::Table(t), &mut out);
        Ok(out)
    };
    let before = keys(old).map_err(|e| refuse(format!("{} is not TOML: {e}", path.display())))?;
    let now = keys(&resolved.toml).map_err(|e| refuse(format!("this run's own TOML: {e}")))?;
    let differing: Vec<String> = before
        .keys()
        .chain(now.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| before.get(*k) != now.get(*k))
        .map(|k| match (before.get(k), now.get(k)) {
            (Some(a), Some(b)) => format!("{k} = {a} in the run, {b} now"),
            (Some(a), None) => format!("{k} = {a} in the run, not a key now"),
            (None, Some(b)) => format!("{k} not in the run's file, {b} now"),
            (None, None) => k.clone(),
        })
        .collect();
    match sys.resolve(None, Some(&path), &[]) {
        Ok(r) if r.toml == resolved.toml => {
            let added: Vec<String> = now
                .iter()
                .filter(|(k, _)| !before.contains_key(*k))
                .map(|(k, v)| format!("{k} = {v}"))
                .collect();
            if added.is_empty() {
                eprintln!(
                    "resume: {} is written differently but resolves to the same configuration; rewritten",
                    path.display()
                );
            } else {
                eprintln!(
                    "resume: {} was written by an older ferrolab; {} take their defaults",
                    path.display(),
                    added.join(", ")
                );
            }
            Ok(true)
        }
        Ok(_) => Err(refuse(if differing.is_empty() {
            "the same keys, resolved differently".to_string()
        } else {
            differing.join("; ")
        })),
        Err(e) if differing.is_empty() => Err(refuse(format!(
            "the file cannot be read as this system's configuration: {}",
            one_line(&e)
        ))),
        // The differing keys say more than the reason the old file no longer resolves (it
        // usually names one of them).
        Err(_) => Err(refuse(differing.join("; "))),
    }
}

/// `key.sub = value` pairs of a TOML document, values in TOML's own notation.
fn flatten_toml(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_toml(&key, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// The master seed a run was started with, beside its config.toml (checked by `--resume`).
const SEED_FILE: &str = "seed.txt";

/// The thread count a run was started with (checked by `--resume`: some systems' figures
/// depend on it).
const THREADS_FILE: &str = "threads.txt";

/// Refuses to continue run `dir` with `flag` set to `now` when `file` (written when the run
/// started) holds another value; a missing file (an older run folder) is accepted.
fn same_as_started(dir: &Path, file: &Path, flag: &str, now: u64) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(file) else {
        return Ok(());
    };
    let started = text.trim().parse::<u64>().map_err(|_| {
        UsageError(format!(
            "--resume {}: {} does not hold a number (\"{}\"); the folder is damaged",
            dir.display(),
            file.display(),
            ferrolab_core::run::first_line(&text)
        ))
    })?;
    if started != now {
        return Err(UsageError(format!(
            "--resume {}: the run was started with {flag} {started}, not {now}; pass the same {flag}",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

fn run_in(
    sys: &'static dyn DynSystem,
    resolved: &Resolved,
    mut ctx: RunContext,
    seed: u64,
    final_dir: &Path,
) -> anyhow::Result<Outcome> {
    sys.prepare(resolved, &ctx)?;
    let mut outcome = sys.run(resolved, &mut ctx)?;
    let mut run = ctx.into_run_dir();
    let r = &mut outcome.report;
    if r.system != sys.name() {
        let old = std::mem::replace(&mut r.system, sys.name().to_string());
        match &mut r.details {
            serde_json::Value::Object(m) => {
                m.insert("system_name_before_0_2".into(), old.into());
            }
            serde_json::Value::Null => {
                r.details = serde_json::json!({ "system_name_before_0_2": old });
            }
            _ => {}
        }
    }
    r.config = resolved.json.clone();
    r.seed = seed;
    write_plots(&run, &outcome)?;
    run.write_report(&outcome.report)?;
    // An empty folder given as --out (accepted before the run) is replaced by the run.
    if final_dir.is_dir() && ferrolab_core::run::is_empty_dir(final_dir) {
        let _ = std::fs::remove_dir(final_dir);
    }
    if final_dir.exists() {
        // Created by someone else while we ran: keep both, refuse to merge. A runtime
        // failure, so the finished run is kept where it is.
        return Err(SystemError::runtime(format!(
            "{} appeared while the run was going; the finished run stays in {}",
            final_dir.display(),
            run.path().display()
        ))
        .into());
    }
    run.rename(final_dir)?;
    Ok(outcome)
}

/// `curves.svg` (per-epoch curves) and one SVG per other x axis (`<y>_vs_<x>` curves:
/// `depth.svg` for layers, `curves-<x>.svg` otherwise).
fn write_plots(run: &RunDir, o: &Outcome) -> anyhow::Result<()> {
    let title = format!("{} on {}", o.report.system, o.report.dataset);
    let mut by_x: std::collections::BTreeMap<String, Vec<ferrolab_core::Curve>> =
        Default::default();
    for c in &o.curves {
        let x = c
            .y_name
            .split_once("_vs_")
            .map_or("epoch".to_string(), |(_, x)| x.to_string());
        by_x.entry(x).or_default().push(c.clone());
    }
    for (x, curves) in by_x {
        if x == "epoch" {
            crate::plot::write_curves(&run.join("curves.svg"), &curves, &title)
                .context("writing curves.svg")?;
        } else {
            let name = if x == "layers" {
                "depth.svg".to_string()
            } else {
                format!("curves-{x}.svg")
            };
            crate::plot::write_curves_x(&run.join(&name), &curves, &title, &x)
                .with_context(|| format!("writing {name}"))?;
        }
    }
    Ok(())
}
