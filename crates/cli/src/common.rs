//! Arguments every system command shares, and the error → exit-code mapping.

use clap::Args;
use ferrolab_core::{CoreError, RunDir};
use std::path::{Path, PathBuf};

/// `[--data-dir DIR] [--seed N] [--threads N]`: shared by every system and `reproduce`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Folder holding the real datasets (else $FERROLAB_DATA, else ../shared/data).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Master seed driving every random source.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads for the tensor backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// `[--config FILE] [--set key=value]... [--data-dir DIR] [--out DIR] [--seed N] [--threads N]`.
#[derive(Args, Debug, Clone, Default)]
pub struct CommonArgs {
    /// TOML file layered over the built-in defaults.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one key, e.g. `--set train.epochs=5` (repeatable; unknown keys are errors).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// Output folder for report.json, config.toml, metrics.jsonl and checkpoints
    /// (default: runs/<system>-<unix time>); a folder that already holds a report is refused.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl CommonArgs {
    /// The output folder, created now (refusing one that holds a finished run).
    pub fn run_dir(&self, system: &str) -> Result<RunDir, CoreError> {
        let out = self.out.clone().unwrap_or_else(|| default_out(system));
        RunDir::create(out)
    }
}

/// `runs/<system>-<unix seconds>`.
pub fn default_out(system: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Path::new("runs").join(format!("{system}-{secs}"))
}

/// A usage error raised by the CLI itself (bad flag combination, unknown system name).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// 2 for errors the user can fix by changing input, 1 for failures while running.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<CoreError>() {
            return if c.is_usage() { 2 } else { 1 };
        }
        if let Some(t) = cause.downcast_ref::<ferrolab_text::TextError>() {
            return if t.is_usage() { 2 } else { 1 };
        }
        if let Some(g) = cause.downcast_ref::<ferrolab_graph::GraphError>() {
            return if g.is_usage() { 2 } else { 1 };
        }
        if cause.downcast_ref::<ferrolab_data::DataError>().is_some()
            || cause.downcast_ref::<UsageError>().is_some()
        {
            return 2;
        }
    }
    1
}

/// The error and its causes on one line, skipping a cause whose text the previous message
/// already contains (typed errors often print their source inside their own message).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
