//! # ferrolab-fed: a federated runtime, and SD-GT
//!
//! | piece | what | module |
//! |---|---|---|
//! | parameters | named f32 tensors, safetensors wire form with validation | [`params`] |
//! | transport | the [`Fabric`](fabric::Fabric) trait: tasks, at-least-once replies with dedup and deadlines, D2D exchange, state store | [`fabric`] |
//! | in-process fabric | threads of one process, deterministic delivery order | [`inproc`] |
//! | conformance | the checks every fabric passes (in-process here, NATS in `tests/nats_conformance.rs`) | [`conformance`] |
//! | Flower-style API | [`Client`](client::Client) (`fit`, `evaluate`), [`serve`](client::serve) | [`client`] |
//! | strategies | [`Strategy`](strategy::Strategy), FedAvg, pure aggregation functions | [`strategy`] |
//!
//! SD-GT (Chen, Wang, Brinton, INFOCOM 2024, arXiv 2312.04728) — semi-decentralised FL with
//! gradient tracking at the subnet and the global tier — is built on these pieces; see
//! `README.md`.

pub mod client;
pub mod conformance;
pub mod fabric;
pub mod fedgraph;
pub mod inproc;
pub mod mirror;
#[cfg(feature = "nats")]
pub mod nats;
pub mod params;
pub mod sdgt;
pub mod strategy;
pub mod topology;

pub use fabric::Fabric;
pub use params::Params;
