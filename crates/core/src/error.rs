//! Typed errors of the core crate.
//!
//! Configuration and data errors are usage errors (the caller can fix their input; the CLI
//! exits with status 2); everything else is a runtime failure (status 1).

use std::path::PathBuf;

/// Errors raised by ferrolab-core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A configuration problem: malformed TOML, unknown key, value out of range.
    #[error("config error: {0}")]
    Config(#[from] ConfigError),
    /// Input data, or a path the user gave, is missing or malformed. The message names what
    /// and where by itself (no "data error:" prefix: for `--out` it would mislead).
    #[error("{0}")]
    Data(String),
    /// An I/O failure on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The output folder already holds a run; refusing to overwrite it.
    #[error(
        "output folder {0} already holds a run (report.json exists); choose another --out or remove it"
    )]
    RunExists(PathBuf),
    /// A checkpoint could not be written or read.
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What went wrong.
        msg: String,
    },
    /// Training diverged or another failure happened while running.
    #[error("{0}")]
    Runtime(String),
}

impl CoreError {
    /// True when the caller can fix the problem by changing the input (exit status 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CoreError::Config(_) | CoreError::Data(_) | CoreError::RunExists(_)
        )
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CoreError::Io {
            path: path.into(),
            source,
        }
    }
}

/// A configuration error, always naming where the bad value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML text could not be parsed or does not match the schema.
    #[error("{origin}: {msg}")]
    Parse {
        /// The config file path or `--set key=value`.
        origin: String,
        /// The parser's message.
        msg: String,
    },
    /// A `--set` argument is not of the form `key=value`.
    #[error("--set {0}: expected key=value")]
    BadSet(String),
    /// A value is outside its allowed range.
    #[error("{key} = {value}: {reason}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// The offending value as text.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
}

/// Result alias of the core crate.
pub type Result<T> = std::result::Result<T, CoreError>;
