//! Errors of the text crate.

use std::path::{Path, PathBuf};

/// Errors from reading sentence data, embeddings or checkpoints, and from training.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// A data file problem (from ferrolab-data).
    #[error(transparent)]
    Data(#[from] ferrolab_data::DataError),
    /// A core problem (config, run folder, checkpoint).
    #[error(transparent)]
    Core(#[from] ferrolab_core::CoreError),
    /// A malformed line in a file.
    #[error("{path}, line {line}: {msg}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What was wrong.
        msg: String,
    },
    /// An I/O error on a path.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Data that cannot be used as given (e.g. a test label unseen in training).
    #[error("{0}")]
    Invalid(String),
}

impl TextError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        TextError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn bad(path: &Path, line: usize, msg: String) -> Self {
        TextError::Bad {
            path: path.to_path_buf(),
            line,
            msg,
        }
    }
    /// True when the input, not the program, is at fault (CLI exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            TextError::Core(e) => e.is_usage(),
            TextError::Data(_) | TextError::Bad { .. } | TextError::Invalid(_) => true,
            TextError::Io { .. } => true,
        }
    }
}

/// Result alias of the text crate.
pub type Result<T> = std::result::Result<T, TextError>;

impl ferrolab_core::Classify for TextError {
    fn class(&self) -> ferrolab_core::ErrorClass {
        if self.is_usage() {
            ferrolab_core::ErrorClass::Usage
        } else {
            ferrolab_core::ErrorClass::Runtime
        }
    }
}
