//! Typed errors of the ctr crate: usage errors (config, data, prediction input) exit with 2.

use std::path::{Path, PathBuf};

/// Errors raised by ferrolab-ctr.
#[derive(Debug, thiserror::Error)]
pub enum CtrError {
    /// From the core crate (config, run folder, checkpoints).
    #[error(transparent)]
    Core(#[from] ferrolab_core::CoreError),
    /// From a data reader.
    #[error(transparent)]
    Data(#[from] ferrolab_data::DataError),
    /// A malformed input row (prediction TSV), naming its line.
    #[error("{source_name}: line {line}: {msg}")]
    Row {
        /// Where the rows came from (`stdin` or a path).
        source_name: String,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        msg: String,
    },
    /// Bad input that is not tied to one line (empty file, bad checkpoint metadata).
    #[error("{0}")]
    Invalid(String),
    /// A checkpoint folder that is missing a part, damaged, or does not describe the weights it
    /// holds (exit status 2).
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The file of the checkpoint at fault.
        path: PathBuf,
        /// What was wrong, one line.
        msg: String,
    },
    /// An I/O failure on a named path.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl CtrError {
    /// True when the caller can fix the problem by changing the input (exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            CtrError::Core(c) => c.is_usage(),
            CtrError::Data(_)
            | CtrError::Row { .. }
            | CtrError::Invalid(_)
            | CtrError::Checkpoint { .. } => true,
            CtrError::Io { .. } => false,
        }
    }

    pub(crate) fn checkpoint(path: &Path, msg: impl Into<String>) -> Self {
        CtrError::Checkpoint {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }

    /// A core error from reading a checkpoint: damage is the input's fault, so it becomes
    /// [`CtrError::Checkpoint`] (usage) rather than core's runtime class.
    pub(crate) fn from_load(e: ferrolab_core::CoreError) -> Self {
        match e {
            ferrolab_core::CoreError::Checkpoint { path, msg } => {
                CtrError::Checkpoint { path, msg }
            }
            other => CtrError::Core(other),
        }
    }

    /// Wraps an I/O error with its path.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        CtrError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of the ctr crate.
pub type Result<T> = std::result::Result<T, CtrError>;

impl ferrolab_core::Classify for CtrError {
    fn class(&self) -> ferrolab_core::ErrorClass {
        if self.is_usage() {
            ferrolab_core::ErrorClass::Usage
        } else {
            ferrolab_core::ErrorClass::Runtime
        }
    }
}
