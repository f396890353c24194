//! # ferrolab-ctr
//!
//! Click-through-rate prediction with APG, adaptive parameter generation (Yan et al.,
//! "APG: Adaptive Parameter Generation Network for Click-Through Rate Prediction",
//! NeurIPS 2022, <https://arxiv.org/abs/2203.16218>), inside three base models — Wide&Deep,
//! DeepFM and DCNv2 — whose deep layers are either plain or APG layers.
//!
//! * [`schema`]: fields (categorical, multi-hot, numeric) and their encoding.
//! * [`data`]: MovieLens-100k as CTR and a streamed Criteo-shaped synthetic generator whose
//!   click function differs across instance groups.
//! * [`apg`]: the APG layer (self/group/mix conditions, low-rank core, over-parameterisation
//!   with merge) and the naive full-matrix variant.
//! * [`model`]: embeddings and the three base models.
//! * [`train`], [`experiment`], [`efficiency`], [`checkpoint`]: training, the paper's comparison,
//!   the time/memory comparison and `ferrolab apg predict`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod apg;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod efficiency;
pub mod error;
pub mod experiment;
pub mod model;
pub mod schema;
pub mod system;
pub mod train;

pub use apg::{ApgLayer, ApgLayerConfig, ConditionMode, NaiveApgLayer};
pub use checkpoint::Predictor;
pub use config::ApgExperimentConfig;
pub use error::{CtrError, Result};
pub use model::{BaseModel, CtrNet, ModelSpec};
pub use system::ApgSystem;
