//! # ferrolab-text
//!
//! Sentence classification with convolutional networks:
//! - **SECNN** (Yuan & He, arXiv 2312.06088; IEEE Access 2025): multi-width 1-D convolution maps
//!   stacked as channels, squeeze-and-excitation channel attention, max-over-time pooling.
//! - **Kim-CNN** (Kim, EMNLP 2014), its baseline.
//!
//! [`experiment::run`] reproduces the comparison on MR / SST-2 (or any `label sentence` file);
//! [`checkpoint::Predictor`] serves a trained model.

pub mod checkpoint;
pub mod config;
pub mod embeddings;
pub mod error;
pub mod experiment;
pub mod models;
pub mod system;
pub mod tokenize;
pub mod train;

pub use checkpoint::{ModelKind, Predictor};
pub use config::SecnnConfig;
pub use error::{Result, TextError};
pub use models::{KimCnn, Secnn, SentenceClassifier};
pub use system::SecnnSystem;
