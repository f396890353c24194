//! Arguments `reproduce` shares with the systems, and the error → exit-code mapping.

use clap::Args;
use ferrolab_core::system::{Classify, ErrorClass, SystemError};
use std::path::PathBuf;

/// `[--data-dir DIR] [--seed N] [--threads N]`.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Folder holding the real datasets (first of: this, $FERROLAB_DATA, the per-user data
    /// folder, ../shared/data, the dataset's system location).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Master seed driving every random source.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// CPU threads for the tensor backend (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Refuse an entry whose estimated peak memory exceeds SIZE (8G, 8GiB, 512M or bytes;
    /// default 80% of the machine's or cgroup's memory).
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,
}

/// A usage error raised by the CLI itself (bad flag combination, unknown system name).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl Classify for UsageError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Usage
    }
}

/// 2 for errors the user can fix by changing input, 1 for failures while running: the class
/// of the first classified error in the chain.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<SystemError>() {
            return s.class().exit_code();
        }
        if let Some(c) = cause.downcast_ref::<ferrolab_core::CoreError>() {
            return c.class().exit_code();
        }
        if let Some(c) = cause.downcast_ref::<ferrolab_core::ConfigError>() {
            return c.class().exit_code();
        }
        if let Some(d) = cause.downcast_ref::<ferrolab_data::DataError>() {
            return d.class().exit_code();
        }
        if cause.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
    }
    1
}

/// A clap usage error as one line without its `error: ` prefix. clap renders the problem, a
/// blank line and a usage hint; the lines before the first blank one say what is wrong (the
/// missing arguments, the allowed values), so they are joined rather than cut to the first.
pub fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let head: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let joined = head.join(" ");
    let what = joined.trim_start_matches("error:").trim_start();
    if what.is_empty() {
        "invalid arguments".to_string()
    } else {
        what.to_string()
    }
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
    out.replace('\n', " ")
}
