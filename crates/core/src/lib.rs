//! # ferrolab-core
//!
//! The ground every ferrolab system stands on:
//! - [`system`]: the `System` contract every system implements (name, checked configuration
//!   and presets, datasets, `reproduce` entries, sub-commands, `run(&Checked<C>, &mut
//!   RunContext)`), the error classification (usage → exit 2, runtime → 1) and `RunContext`
//!   (seed derivation, threads, data lookup, run folder, `metrics.jsonl`, resumable units).
//! - [`config`]: TOML configuration with presets, `--set` overrides and `--print-config`;
//!   `config_section!` declares each field's default, range check and doc in one place, and
//!   [`Checked`] is the only configuration a library entry point accepts.
//! - [`kernels`]: the hand-written hot paths, each tested against a reference built from burn
//!   tensor ops; new custom ops are burn backend extensions.
//! - [`backend`] (the one place the backend is chosen), [`error`], [`seed`], [`train`] and
//!   [`schedule`] (the loop with typed callbacks and LR schedules), [`metrics`], [`run`] (the
//!   run folder, `report.json`, atomic writes, safetensors checkpoints), [`resources`] (time and
//!   memory), [`progress`], [`nn`] (shared blocks), [`sparse`] and [`linalg`] (re-exports of
//!   kernels kept for existing callers).

pub mod alloc;
pub mod backend;
pub mod config;
pub mod error;
pub mod guard;
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

pub use config::Checked;
pub use error::{ConfigError, CoreError, Result};
pub use run::{Curve, Outcome, PaperFigure, Report, RunDir};
pub use system::{Classify, ErrorClass, RunContext, SysResult, System, SystemError};

/// Re-exported so that systems use exactly the burn this crate was built against.
pub use burn;
