//! Decision-focused learning: TaskMet (Bansal et al., NeurIPS 2023) learns the metric of the
//! prediction loss from the downstream task, against two-stage MSE and DFL baselines.

pub mod cg;
pub mod config;
pub mod decision;
pub mod experiment;
pub mod finance;
pub mod learn;
pub mod lodl;
pub mod metric;
pub mod mlp;
pub mod optim;
pub mod problem;
pub mod rl;
pub mod rl_experiment;
pub mod system;
pub mod tasks;

pub use problem::{DecisionProblem, Instances};
pub use system::TaskmetSystem;
