//! # ferrolab-edge: AdaEvo
//!
//! AdaEvo (Wang, Yu, Yu, Liu, Xie, Guo, Liu, "AdaEvo: Edge-Assisted Continuous and Timely DNN
//! Model Evolution for Mobile Devices", IEEE TMC 24(4), 2025, arXiv 2309.15500): one
//! resource-limited edge server keeps many mobile ends' compressed models fresh under data
//! drift, maximising the average QoE (the share of each end's life during which its model's
//! accuracy stays above a threshold).
//!
//! | module | what |
//! |---|---|
//! | [`stream`] | drifting frame streams (sudden / incremental / gradual drifts at known times) |
//! | [`model`] | the small classifiers (mobile model, teacher), exact FLOP counts |
//! | [`teacher`] | the edge's labelling model (standardised input, trained on every condition) |
//! | [`protocol`] | task requests, model blobs (int8 + SHA-256), re-compression |
//! | [`estimator`] | label-free accuracy estimate (CC), correlation with true accuracy |
//! | [`trigger`] | ROD trigger with stabilisation test, drift-type classification, periodic trigger |
//! | [`sampling`] | the three drift-aware sampling policies and fixed-rate sampling |
//! | [`profiler`] | memory (analytic vs measured), NNLS accuracy curve, time regressor |
//! | [`scheduler`] | knapsack DP over memory, FIFO |
//! | [`edge`] | the edge server: teacher labelling, profiling, scheduling, retrain, ship |
//! | [`mobile`] | the mobile end: inference, estimate, trigger, sampling, model swap |
//! | [`sim`] | the simulated clock both tasks run on: deliveries, uploads, ends, evaluations, edge |
//! | [`experiment`] | the in-process run on a simulated clock, baselines, report, SVG |
//! | [`detect`] | the detection task: underwater streams, grid detector, CLC = mean(CC·LC), its edge and run |
//!
//! The in-process experiment (`ferrolab adaevo`) is deterministic by seed: the clock is
//! simulated (task durations = counted FLOPs ÷ the configured edge throughput, shared by the
//! running tasks) while all compute runs for real.

pub mod config;
pub mod detect;
pub mod edge;
pub mod estimator;
pub mod experiment;
pub mod mobile;
pub mod model;
#[cfg(feature = "nats")]
pub mod net;
pub mod profiler;
pub mod protocol;
pub mod sampling;
pub mod scheduler;
pub mod sim;
pub mod stream;
pub mod svg;
pub mod system;
pub mod teacher;
pub mod trigger;

pub use config::AdaEvoConfig;
pub use system::AdaEvoSystem;
