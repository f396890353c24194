//! Errors of the graph crate.

/// Errors from graph data, configuration and training.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// A data file problem (from ferrolab-data).
    #[error(transparent)]
    Data(#[from] ferrolab_data::DataError),
    /// A core problem (config, run folder).
    #[error(transparent)]
    Core(#[from] ferrolab_core::CoreError),
    /// A parameter that cannot work, found before any work starts.
    #[error("invalid parameter {name}: {msg}")]
    Config {
        /// The parameter.
        name: &'static str,
        /// What was wrong.
        msg: String,
    },
    /// Graph data that cannot be used as given (inconsistent CSR arrays, bad node ids).
    #[error("{0}")]
    Invalid(String),
}

impl GraphError {
    pub(crate) fn config(name: &'static str, msg: impl Into<String>) -> Self {
        GraphError::Config {
            name,
            msg: msg.into(),
        }
    }

    /// True when the input, not the program, is at fault (CLI exit status 2).
    pub fn is_usage(&self) -> bool {
        match self {
            GraphError::Core(e) => e.is_usage(),
            GraphError::Data(_) | GraphError::Config { .. } | GraphError::Invalid(_) => true,
        }
    }
}

/// Result alias of the graph crate.
pub type Result<T> = std::result::Result<T, GraphError>;

impl ferrolab_core::Classify for GraphError {
    fn class(&self) -> ferrolab_core::ErrorClass {
        if self.is_usage() {
            ferrolab_core::ErrorClass::Usage
        } else {
            ferrolab_core::ErrorClass::Runtime
        }
    }
}
