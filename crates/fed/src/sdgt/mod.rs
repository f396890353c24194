//! SD-GT (Chen, Wang, Brinton, INFOCOM 2024, arXiv 2312.04728): semi-decentralised federated
//! learning with gradient tracking at the subnet tier (z) and the global tier (y_c), against
//! semi-decentralised FedAvg, SCAFFOLD, decentralised gradient tracking and FedAvg, all on one
//! code path ([`algo`]) over the runtime's fabric ([`driver`]).
//!
//! | module | what |
//! |---|---|
//! | [`algo`] | the algorithms as one `Client` (devices) and one `Strategy` (server) |
//! | [`driver`] | a run: server loop, client threads, evaluation, checkpoints |
//! | [`costmodel`] | the paper's co-optimisation of (s, T) |
//! | [`model`], [`cnn`] | logistic regression and the reference CNN as flat-vector models |
//! | [`data`] | Fashion-MNIST features and the sorted / Dirichlet / IID partitions |
//! | [`config`], [`experiment`], [`system`] | `ferrolab sdgt` |
//! | `multiproc` (feature `nats`) | the same runs with client processes over NATS |

pub mod algo;
pub mod cnn;
pub mod config;
pub mod costmodel;
pub mod data;
pub mod driver;
pub mod experiment;
pub mod model;
#[cfg(feature = "nats")]
pub mod multiproc;
pub mod system;

pub use system::SdgtSystem;
