//! # ferrolab-core
//!
//! The ground every ferrolab system stands on: the backend choice ([`backend`]), typed errors
//! ([`error`]), TOML configuration with `--set` overrides ([`config`]), seeding ([`seed`]), the
//! training loop with typed callbacks and LR schedules ([`train`], [`schedule`]), metrics
//! ([`metrics`]), the run folder with `report.json` and safetensors checkpoints ([`run`]),
//! time and memory measurement ([`resources`]), shared nn blocks ([`nn`]) and sparse
//! propagation for graph models ([`sparse`]).

pub mod backend;
pub mod config;
pub mod error;
pub mod kernels;
pub mod linalg;
pub mod metrics;
pub mod nn;
pub mod progress;
pub mod resources;
pub mod run;
pub mod schedule;
pub mod seed;
pub mod sparse;
pub mod system;
pub mod train;

pub use error::{ConfigError, CoreError, Result};
pub use config::Checked;
pub use run::{Curve, Outcome, PaperFigure, Report, RunDir};
pub use system::{Classify, ErrorClass, RunContext, SysResult, System, SystemError};

/// Re-exported so that systems use exactly the burn this crate was built against.
pub use burn;
