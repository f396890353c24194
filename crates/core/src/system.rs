//! The `System` contract: what every ferrolab system implements so that it appears in the
//! CLI, in `reproduce`, in reports and in the docs by itself.
//!
//! A system is a type implementing [`System`]: its CLI name, its configuration type (declared
//! with [`config_section!`](crate::config_section) so that defaults, range checks and docs sit
//! beside each field), its presets (TOML text embedded from `configs/<name>/`), the datasets a
//! configuration needs, its `reproduce` entries, and `run`, which receives a [`Checked`]
//! configuration and a [`RunContext`]. The CLI keeps a registry of `&'static dyn DynSystem`
//! (every `System` is one through a blanket impl) and one generic runner; adding a system is a
//! crate and one registry line.
//!
//! Errors: a system's error type implements [`Classify`] once (usage/config/data → exit 2,
//! failures while running → 1) and converts into [`SystemError`] with `?`.

use crate::config::{Checked, ConfigValue, Validate};
use crate::error::{ConfigError, CoreError};
use crate::run::{Outcome, RunDir};
use rand::rngs::StdRng;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::path::{Path, PathBuf};

/// Whether an error is the user's to fix (exit status 2) or a failure while running (1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Bad input: configuration, data, checkpoint, output folder, flags.
    Usage,
    /// Something failed while running (divergence, I/O on our own files, a bug).
    Runtime,
}

impl ErrorClass {
    /// The process exit status for this class.
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorClass::Usage => 2,
            ErrorClass::Runtime => 1,
        }
    }
}

/// Implemented once by every error type a system returns.
pub trait Classify {
    /// Usage or runtime.
    fn class(&self) -> ErrorClass;
}

impl Classify for CoreError {
    fn class(&self) -> ErrorClass {
        if self.is_usage() {
            ErrorClass::Usage
        } else {
            ErrorClass::Runtime
        }
    }
}

impl Classify for crate::backend::ThreadsError {
    fn class(&self) -> ErrorClass {
        match self {
            crate::backend::ThreadsError::OutOfRange { .. } => ErrorClass::Usage,
            crate::backend::ThreadsError::PoolStart { .. } => ErrorClass::Runtime,
        }
    }
}

impl Classify for ConfigError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Usage
    }
}

impl Classify for ferrolab_data::DataError {
    fn class(&self) -> ErrorClass {
        use ferrolab_data::DataError as D;
        match self {
            D::Io { .. } | D::Malformed { .. } | D::Missing { .. } | D::NotFound { .. } => {
                ErrorClass::Usage
            }
            D::Invalid { .. } => ErrorClass::Usage,
            #[allow(unreachable_patterns)]
            _ => ErrorClass::Runtime,
        }
    }
}

/// Any system's error, with its class decided where it was raised.
#[derive(Debug)]
pub struct SystemError {
    class: ErrorClass,
    inner: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl SystemError {
    /// A usage error with a message (exit status 2).
    pub fn usage(msg: impl Into<String>) -> Self {
        SystemError {
            class: ErrorClass::Usage,
            inner: msg.into().into(),
        }
    }
    /// A runtime failure with a message (exit status 1).
    pub fn runtime(msg: impl Into<String>) -> Self {
        SystemError {
            class: ErrorClass::Runtime,
            inner: msg.into().into(),
        }
    }
    /// Usage or runtime.
    pub fn class(&self) -> ErrorClass {
        self.class
    }
}

impl std::fmt::Display for SystemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl std::error::Error for SystemError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner.source()
    }
}

impl<E> From<E> for SystemError
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn from(e: E) -> Self {
        SystemError {
            class: e.class(),
            inner: Box::new(e),
        }
    }
}

/// Result of a system's entry points.
pub type SysResult<T> = std::result::Result<T, SystemError>;

/// A named configuration shipped with the binary (`configs/<system>/<name>.toml`).
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// `quick`, `paper` or a study's name.
    pub name: &'static str,
    /// One line: what it runs and how long it takes.
    pub about: &'static str,
    /// The TOML text layered over the defaults.
    pub toml: &'static str,
}

/// One `reproduce` entry: a preset for `--quick` and one for `--full`.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// `<cli-name>-<dataset>`, e.g. `secnn-mr`.
    pub name: &'static str,
    /// One line for report.md.
    pub what: &'static str,
    /// Preset run by `reproduce --quick` (≤ 60 s on two cores).
    pub quick: &'static str,
    /// Preset run by `reproduce --full`.
    pub full: &'static str,
}

/// A top-level flag that is shorthand for `--set key=VALUE` (e.g. `--embeddings FILE`).
#[derive(Debug, Clone, Copy)]
pub struct FlagAlias {
    /// Long flag name without dashes.
    pub flag: &'static str,
    /// The dotted config key it sets.
    pub key: &'static str,
    /// Help text.
    pub help: &'static str,
}

/// An extra sub-command of a system (`predict`, `export`, `bench`, …). The system parses its
/// own arguments with clap, so the CLI crate needs no code for it.
#[derive(Debug, Clone, Copy)]
pub struct SubCommand {
    /// Builds the clap command (its name is the sub-command's name).
    pub command: fn() -> clap::Command,
    /// Runs it with the parsed arguments.
    pub run: fn(&clap::ArgMatches) -> SysResult<()>,
}

/// A sub-command that is a run with one setting fixed (`layer-importance dataset` is
/// `layer-importance --set task.stage=dataset`): it takes every option of a run after its name
/// (`system` names the run's command in the help).
pub fn setting_command(name: &'static str, about: &'static str, system: &str) -> clap::Command {
    clap::Command::new(name).about(about).arg(
        clap::Arg::new("args")
            .num_args(0..)
            .trailing_var_arg(true)
            .allow_hyphen_values(true)
            .value_name("RUN OPTIONS")
            .help(format!(
                "The options of `ferrolab {system}` (--preset, --set, --out, --seed, --resume, ...)"
            )),
    )
}

/// The command line that runs setting sub-command `name` as a plain run: the process's
/// arguments (`argv`) without the sub-command's name, then what followed it (`rest`), then
/// `--set KEY=NAME`. `None` when `name` is not where `rest` says it is.
pub fn setting_argv(
    argv: &[std::ffi::OsString],
    rest: &[String],
    name: &str,
    key: &str,
) -> Option<Vec<std::ffi::OsString>> {
    let pos = argv.len().checked_sub(rest.len() + 1)?;
    if pos == 0 || argv[pos] != name {
        return None;
    }
    let mut out: Vec<std::ffi::OsString> = argv[1..pos].to_vec();
    out.extend(rest.iter().map(std::ffi::OsString::from));
    out.push("--set".into());
    out.push(format!("{key}={name}").into());
    Some(out)
}

/// Runs setting sub-command `name` of `system` (parsed by [`setting_command`]) by running this
/// program again with `--set KEY=NAME`, so that it has every option of a run (presets, `--out`,
/// `--resume`, the resource guard) without a second runner. On Unix the new run replaces this
/// process; elsewhere this process exits with the child's status. A `--set KEY=…` among its
/// own options is a usage error: the appended one would silently win.
pub fn run_setting_command(
    system: &str,
    name: &str,
    key: &str,
    m: &clap::ArgMatches,
) -> SysResult<()> {
    let rest: Vec<String> = m
        .get_many::<String>("args")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let sets_key = rest.iter().enumerate().any(|(i, a)| {
        let value = match a.strip_prefix("--set=") {
            Some(v) => Some(v),
            None if a == "--set" => rest.get(i + 1).map(String::as_str),
            None => None,
        };
        value.is_some_and(|v| v.split('=').next().is_some_and(|k| k.trim() == key))
    });
    if sets_key {
        return Err(SystemError::usage(format!(
            "{system} {name} sets {key} itself; drop --set {key}=… or run `ferrolab {system} --set {key}=…`"
        )));
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Some(args) = setting_argv(&argv, &rest, name, key) else {
        return Err(SystemError::usage(format!(
            "{system} {name}: could not find the sub-command among the arguments; use --set {key}={name}"
        )));
    };
    let exe = std::env::current_exe()
        .map_err(|e| SystemError::runtime(format!("cannot find this program: {e}")))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args);
    // On Unix the run replaces this process, so that a signal sent to the command (Ctrl-C, a
    // scheduler's SIGTERM) reaches the run itself instead of leaving it orphaned and running.
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let e = cmd.exec();
        Err(SystemError::runtime(format!(
            "cannot run this program again: {e}"
        )))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .map_err(|e| SystemError::runtime(format!("cannot run this program again: {e}")))?;
        std::process::exit(status.code().unwrap_or(1));
    }
}

/// Everything a run needs besides its configuration: the seed, threads, data lookup, the run
/// folder and its `metrics.jsonl`.
#[derive(Debug)]
pub struct RunContext {
    seed: u64,
    threads: usize,
    data_dir: Option<PathBuf>,
    run: RunDir,
}

impl RunContext {
    /// A context writing into `run`.
    pub fn new(seed: u64, threads: usize, data_dir: Option<PathBuf>, run: RunDir) -> Self {
        RunContext {
            seed,
            threads,
            data_dir,
            run,
        }
    }

    /// The master seed (`--seed`).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The seed of the random stream `name`. This is the one derivation rule for every random
    /// source of a run (splits, initialisation, dropout, synthetic generators): adding a stream
    /// never shifts the numbers another one sees.
    pub fn seed_for(&self, name: &str) -> u64 {
        crate::seed::derive(self.seed, name)
    }

    /// A generator for the stream `name`.
    pub fn rng(&self, name: &str) -> StdRng {
        crate::seed::rng(self.seed, name)
    }

    /// Threads of the compute pool.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// `--data-dir`, if given.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Where the dataset `name` is (the first location of the lookup chain that holds it), or
    /// a data error listing the places searched.
    pub fn dataset(&self, name: &str) -> SysResult<PathBuf> {
        Ok(ferrolab_data::lookup::find_dataset(
            self.data_dir.as_deref(),
            name,
        )?)
    }

    /// The run folder.
    pub fn run_dir(&mut self) -> &mut RunDir {
        &mut self.run
    }

    /// Appends one record to `metrics.jsonl`.
    pub fn log_metrics(&mut self, record: &serde_json::Value) -> SysResult<()> {
        Ok(self.run.log_metrics(record)?)
    }

    /// The data folder, the master seed and the run folder at once, for experiment functions
    /// that take them as separate arguments.
    pub fn parts(&mut self) -> (Option<&Path>, u64, &mut RunDir) {
        (self.data_dir.as_deref(), self.seed, &mut self.run)
    }

    /// Runs one unit of work (a seed, a fold, a method) once; see [`RunDir::unit`]: a run
    /// continued with `--resume` returns the saved result of each finished unit.
    pub fn unit<T, F>(&mut self, name: &str, f: F) -> SysResult<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce(&mut RunContext) -> SysResult<T>,
    {
        // The closure needs the whole context; the unit bookkeeping only the folder. Lines the
        // unit logs go through the context's own folder, which is told which unit runs.
        let mut dir = RunDir::reopen(self.run.path())?;
        dir.unit(name, |_| {
            let outer = self.run.begin_unit(name);
            let v = f(self);
            self.run.end_unit(outer);
            v
        })
    }

    /// The saved result of unit `name` when a resumed run already finished it; see
    /// [`RunDir::saved_unit`].
    pub fn saved_unit<T: DeserializeOwned>(&self, name: &str) -> Option<T> {
        self.run.saved_unit(name)
    }

    /// Takes the run folder back (the runner writes the report into it).
    pub fn into_run_dir(self) -> RunDir {
        self.run
    }
}

/// The bound every system configuration meets.
pub trait SystemConfig:
    Serialize
    + DeserializeOwned
    + Default
    + Validate
    + ConfigValue
    + Clone
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
}

impl<T> SystemConfig for T where
    T: Serialize
        + DeserializeOwned
        + Default
        + Validate
        + ConfigValue
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// One system: what the registry, the generic runner and `reproduce` need of it.
pub trait System: Send + Sync + 'static {
    /// The experiment configuration.
    type Config: SystemConfig;
    /// CLI sub-command name (kebab case), also `system` in report.json.
    fn name(&self) -> &'static str;
    /// One line for `--help`.
    fn about(&self) -> &'static str;
    /// The presets shipped with the binary; must include `quick` and `paper`.
    fn presets(&self) -> Vec<Preset>;
    /// `reproduce` entries.
    fn entries(&self) -> Vec<Entry>;
    /// Names of the datasets (as `ferrolab data` lists them) that `cfg` reads; empty when it
    /// runs on generated data only.
    fn datasets(&self, cfg: &Self::Config) -> Vec<&'static str>;
    /// Checks what can be checked before the run folder is created (e.g. that the data files
    /// parse), so a data error leaves nothing behind.
    fn prepare(&self, _cfg: &Checked<Self::Config>, _ctx: &RunContext) -> SysResult<()> {
        Ok(())
    }
    /// Runs the experiment; the returned report is written by the runner.
    fn run(&self, cfg: &Checked<Self::Config>, ctx: &mut RunContext) -> SysResult<Outcome>;
    /// Lines printed to stdout after a run (default: headline metrics vs each baseline).
    fn summary(&self, outcome: &Outcome) -> Vec<String> {
        default_summary(outcome)
    }
    /// An upper bound of the run's peak memory and the setting that drives it, computed
    /// from the configuration (and the data's size where known) before anything is
    /// allocated; the runner refuses the run when it exceeds `--max-memory`.
    fn memory_estimate(
        &self,
        _cfg: &Self::Config,
        _data_dir: Option<&Path>,
    ) -> Option<crate::guard::MemoryEstimate> {
        None
    }
    /// Extra sub-commands.
    fn subcommands(&self) -> Vec<SubCommand> {
        Vec::new()
    }
    /// Top-level flags that are shorthand for `--set`.
    fn flag_aliases(&self) -> Vec<FlagAlias> {
        Vec::new()
    }
    /// Whether the runner tunes the allocator at start-up (Cluster-GCN does it itself when
    /// training starts, after dropping the loaded graph).
    fn tune_allocator_at_start(&self) -> bool {
        true
    }
}

/// A configuration resolved from defaults, a preset, a file and `--set`s, type-erased so the
/// registry can hold every system behind one trait object.
pub struct Resolved {
    value: Box<dyn Any + Send + Sync>,
    /// The resolved configuration as TOML (the run folder's `config.toml`).
    pub toml: String,
    /// The same with each key's doc and range as comments (`--print-config`).
    pub documented: String,
    /// The same as JSON (report.json's `config`).
    pub json: serde_json::Value,
    /// Datasets this configuration reads.
    pub datasets: Vec<&'static str>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("toml", &self.toml)
            .finish()
    }
}

/// The object-safe face of [`System`], implemented for every `System`.
pub trait DynSystem: Send + Sync {
    /// See [`System::name`].
    fn name(&self) -> &'static str;
    /// See [`System::about`].
    fn about(&self) -> &'static str;
    /// See [`System::presets`].
    fn presets(&self) -> Vec<Preset>;
    /// See [`System::entries`].
    fn entries(&self) -> Vec<Entry>;
    /// See [`System::subcommands`].
    fn subcommands(&self) -> Vec<SubCommand>;
    /// See [`System::flag_aliases`].
    fn flag_aliases(&self) -> Vec<FlagAlias>;
    /// See [`System::tune_allocator_at_start`].
    fn tune_allocator_at_start(&self) -> bool;
    /// Resolves and checks a configuration: defaults, then the preset, then the file, then
    /// the `--set`s.
    fn resolve(
        &self,
        preset: Option<&str>,
        file: Option<&Path>,
        sets: &[String],
    ) -> SysResult<Resolved>;
    /// See [`System::memory_estimate`].
    fn memory_estimate(
        &self,
        cfg: &Resolved,
        data_dir: Option<&Path>,
    ) -> SysResult<Option<crate::guard::MemoryEstimate>>;
    /// See [`System::prepare`].
    fn prepare(&self, cfg: &Resolved, ctx: &RunContext) -> SysResult<()>;
    /// See [`System::run`].
    fn run(&self, cfg: &Resolved, ctx: &mut RunContext) -> SysResult<Outcome>;
    /// See [`System::summary`].
    fn summary(&self, outcome: &Outcome) -> Vec<String>;
}

impl<S: System> DynSystem for S {
    fn name(&self) -> &'static str {
        System::name(self)
    }
    fn about(&self) -> &'static str {
        System::about(self)
    }
    fn presets(&self) -> Vec<Preset> {
        System::presets(self)
    }
    fn entries(&self) -> Vec<Entry> {
        System::entries(self)
    }
    fn subcommands(&self) -> Vec<SubCommand> {
        System::subcommands(self)
    }
    fn flag_aliases(&self) -> Vec<FlagAlias> {
        System::flag_aliases(self)
    }
    fn tune_allocator_at_start(&self) -> bool {
        System::tune_allocator_at_start(self)
    }
    fn resolve(
        &self,
        preset: Option<&str>,
        file: Option<&Path>,
        sets: &[String],
    ) -> SysResult<Resolved> {
        let checked = resolve_config(self, preset, file, sets)?;
        let toml = crate::config::to_toml(checked.get())?;
        let json = serde_json::to_value(checked.get())
            .map_err(|e| SystemError::runtime(format!("recording the config: {e}")))?;
        let documented = crate::config::to_documented_toml(checked.get());
        let datasets = System::datasets(self, checked.get());
        Ok(Resolved {
            value: Box::new(checked),
            toml,
            documented,
            json,
            datasets,
        })
    }
    fn memory_estimate(
        &self,
        cfg: &Resolved,
        data_dir: Option<&Path>,
    ) -> SysResult<Option<crate::guard::MemoryEstimate>> {
        Ok(System::memory_estimate(self, downcast::<S>(cfg)?, data_dir))
    }
    fn prepare(&self, cfg: &Resolved, ctx: &RunContext) -> SysResult<()> {
        System::prepare(self, downcast::<S>(cfg)?, ctx)
    }
    fn run(&self, cfg: &Resolved, ctx: &mut RunContext) -> SysResult<Outcome> {
        System::run(self, downcast::<S>(cfg)?, ctx)
    }
    fn summary(&self, outcome: &Outcome) -> Vec<String> {
        System::summary(self, outcome)
    }
}

/// Resolves and checks `sys`'s configuration: defaults, then the named preset, then the file,
/// then the `--set`s (each layer's errors name it).
pub fn resolve_config<S: System>(
    sys: &S,
    preset: Option<&str>,
    file: Option<&Path>,
    sets: &[String],
) -> SysResult<Checked<S::Config>> {
    let base = match preset {
        None => None,
        Some(p) => {
            let all = sys.presets();
            let found = all.iter().find(|q| q.name == p).ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|q| q.name).collect();
                SystemError::usage(format!(
                    "--preset {p}: no such preset of {} (known: {})",
                    sys.name(),
                    names.join(", ")
                ))
            })?;
            Some((format!("preset {p}"), found.toml))
        }
    };
    let cfg: S::Config =
        crate::config::load_layers(base.as_ref().map(|(o, t)| (o.as_str(), *t)), file, sets)?;
    Ok(Checked::new(cfg)?)
}

fn downcast<S: System>(cfg: &Resolved) -> SysResult<&Checked<S::Config>> {
    cfg.value
        .downcast_ref::<Checked<S::Config>>()
        .ok_or_else(|| SystemError::runtime("configuration resolved for another system"))
}

/// What a sub-command that streams to stdout does with a write error: a closed pipe (`| head`)
/// ends the output quietly (exit 0); any other error is a runtime failure.
pub fn stdout_closed(e: std::io::Error) -> SysResult<()> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(SystemError::runtime(format!("writing stdout: {e}")))
    }
}

/// A sub-command's `--data-dir DIR`, refused (usage error) when it is not a folder: a
/// mistyped path is not a place to skip, so it must not fall through to the rest of the lookup
/// chain (the system commands refuse it alike).
pub fn data_dir_arg(m: &clap::ArgMatches) -> SysResult<Option<&Path>> {
    match m.get_one::<PathBuf>("data-dir") {
        Some(p) if !p.is_dir() => Err(SystemError::usage(format!(
            "--data-dir {} is not a folder",
            p.display()
        ))),
        p => Ok(p.map(PathBuf::as_path)),
    }
}

/// The `--checkpoint DIR` argument of a `predict` sub-command.
pub fn checkpoint_arg(help: &'static str) -> clap::Arg {
    clap::Arg::new("checkpoint")
        .long("checkpoint")
        .value_name("DIR")
        .required(true)
        .value_parser(clap::value_parser!(PathBuf))
        .help(help)
}

/// The `--threads N` argument of a sub-command (checked by `backend::try_init_threads`).
pub fn threads_arg() -> clap::Arg {
    clap::Arg::new("threads")
        .long("threads")
        .value_parser(clap::value_parser!(usize))
        .help("CPU threads")
}

/// `name: key mean ± std` for every metric with a `_std` companion, for ours and each
/// baseline, plus the report's notes.
pub fn default_summary(o: &Outcome) -> Vec<String> {
    let r = &o.report;
    let headline: Vec<&String> = r
        .metrics
        .keys()
        .filter(|k| !k.ends_with("_std") && r.metrics.contains_key(&format!("{k}_std")))
        .collect();
    let fmt = |m: &std::collections::BTreeMap<String, f64>| {
        headline
            .iter()
            .filter_map(|k| {
                let v = m.get(*k)?;
                Some(match m.get(&format!("{k}_std")) {
                    Some(s) => format!("{k} {v:.4} ± {s:.4}"),
                    None => format!("{k} {v:.4}"),
                })
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut lines = vec![format!(
        "{} on {}: {}",
        r.system,
        r.dataset,
        fmt(&r.metrics)
    )];
    for (b, m) in &r.baselines {
        lines.push(format!("  baseline {b}: {}", fmt(m)));
    }
    lines.extend(r.notes.iter().cloned());
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Report;

    crate::config_section! {
        /// Root.
        pub struct Toy {
            /// Steps.
            pub steps: usize = 3, "1..=10" => |v| (1..=10).contains(v);
            /// Dataset.
            pub data: String = "none".into();
        }
    }
    impl Validate for Toy {}

    struct ToySystem;
    impl System for ToySystem {
        type Config = Toy;
        fn name(&self) -> &'static str {
            "toy"
        }
        fn about(&self) -> &'static str {
            "a toy"
        }
        fn presets(&self) -> Vec<Preset> {
            vec![
                Preset {
                    name: "quick",
                    about: "one step",
                    toml: "steps = 1\n",
                },
                Preset {
                    name: "paper",
                    about: "bad on purpose in one test",
                    toml: "steps = 10\n",
                },
            ]
        }
        fn entries(&self) -> Vec<Entry> {
            Vec::new()
        }
        fn datasets(&self, cfg: &Toy) -> Vec<&'static str> {
            if cfg.data == "mr" {
                vec!["mr"]
            } else {
                Vec::new()
            }
        }
        fn run(&self, cfg: &Checked<Toy>, ctx: &mut RunContext) -> SysResult<Outcome> {
            let mut report = Report::new("toy", "none", ctx.seed());
            let mut total = 0.0;
            for i in 0..cfg.steps {
                // Units: a resumed run reuses what a unit saved.
                let v: f64 = ctx.unit(&format!("step{i}"), |c| {
                    c.log_metrics(&serde_json::json!({ "step": i }))?;
                    Ok(c.seed_for(&format!("run{i}")) as f64 / u64::MAX as f64)
                })?;
                total += v;
            }
            report.metrics.insert("total".into(), total);
            Ok(Outcome {
                report,
                ..Default::default()
            })
        }
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrolab-sys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn presets_layer_under_sets_and_unknown_presets_are_usage_errors() {
        let sys: &dyn DynSystem = &ToySystem;
        let r = sys.resolve(Some("quick"), None, &[]).unwrap();
        assert!(r.toml.contains("steps = 1"), "{}", r.toml);
        let r = sys
            .resolve(Some("quick"), None, &["steps=4".into(), "data=mr".into()])
            .unwrap();
        assert!(r.toml.contains("steps = 4"));
        assert_eq!(r.datasets, vec!["mr"]);
        let e = sys.resolve(Some("nope"), None, &[]).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage);
        assert!(e.to_string().contains("quick, paper"), "{e}");
        let e = sys.resolve(None, None, &["steps=11".into()]).unwrap_err();
        assert_eq!(e.class(), ErrorClass::Usage);
        assert!(e.to_string().contains("steps"), "{e}");
        assert!(
            r.documented.contains("# Steps. [1..=10]"),
            "{}",
            r.documented
        );
    }

    #[test]
    fn units_are_saved_and_a_resumed_run_reuses_them() {
        let d = tmp("units");
        let sys: &dyn DynSystem = &ToySystem;
        let cfg = sys.resolve(None, None, &[]).unwrap();
        let mut ctx = RunContext::new(5, 1, None, RunDir::create(&d).unwrap());
        let a = sys.run(&cfg, &mut ctx).unwrap();
        assert!(d.join("units/step2.json").is_file());
        // Tamper with one saved unit: a resumed run must take it instead of recomputing.
        std::fs::write(d.join("units/step1.json"), "0.0").unwrap();
        let mut ctx = RunContext::new(5, 1, None, RunDir::reopen(&d).unwrap());
        assert_eq!(ctx.saved_unit::<f64>("step1"), Some(0.0));
        assert_eq!(ctx.saved_unit::<f64>("no-such-unit"), None);
        let b = sys.run(&cfg, &mut ctx).unwrap();
        let (ta, tb) = (a.report.metrics["total"], b.report.metrics["total"]);
        assert!(tb < ta, "{ta} {tb}");
        // Metrics of the first run are kept; nothing was logged again for saved units.
        let lines = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 3);
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn errors_keep_their_class_through_the_conversion() {
        let e: SystemError = CoreError::Runtime("x".into()).into();
        assert_eq!(e.class(), ErrorClass::Runtime);
        let e: SystemError = ConfigError::BadSet("y".into()).into();
        assert_eq!(e.class(), ErrorClass::Usage);
        assert_eq!(ErrorClass::Usage.exit_code(), 2);
        assert_eq!(ErrorClass::Runtime.exit_code(), 1);
    }
}
