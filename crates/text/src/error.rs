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
    /// A checkpoint folder that is missing a part, damaged, or does not describe the weights it
    /// holds (exit status 2: the user passed the wrong folder or a corrupted copy).
    #[error("checkpoint {path}: {msg}")]
    Checkpoint {
        /// The file of the checkpoint at fault.
        path: PathBuf,
        /// What was wrong, one line.
        msg: String,
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
    pub(crate) fn checkpoint(path: &Path, msg: impl Into<String>) -> Self {
        TextError::Checkpoint {
            path: path.to_path_buf(),
            msg: msg.into(),
        }
    }
    /// A core error from reading a checkpoint: damage is the input's fault, so it becomes
    /// [`TextError::Checkpoint`] (usage) rather than core's runtime class.
    pub(crate) fn from_load(e: ferrolab_core::CoreError) -> Self {
        match e {
            ferrolab_core::CoreError::Checkpoint { path, msg } => {
                TextError::Checkpoint { path, msg }
            }
            other => TextError::Core(other),
        }
    }
    /// True when the input, not the program, is at fault (CLI exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            TextError::Core(e) => e.is_usage(),
            TextError::Data(_) | TextError::Bad { .. } | TextError::Invalid(_) => true,
            TextError::Io { .. } | TextError::Checkpoint { .. } => true,
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
