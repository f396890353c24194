//! `ferrolab secnn` configuration (TOML + `--set`), with Kim (2014)'s hyper-parameters as
//! defaults except the optimiser (Adam instead of Adadelta, which burn does not ship).

use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};
use serde::{Deserialize, Serialize};

/// The whole experiment configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecnnConfig {
    /// Where the sentences come from.
    pub data: DataConfig,
    /// Architecture.
    pub model: ModelConfig,
    /// Optimisation.
    pub train: TrainConfig,
}

/// Data keys: `data.preset`, `data.train`, `data.test`, `data.dev`, `data.folds`, ….
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `mr` or `sst2`: files under the data folder; ignored when `train` is set.
    pub preset: String,
    /// A `label sentence` file to train on (overrides the preset).
    pub train: Option<String>,
    /// A `label sentence` test file; without it a seeded `holdout` share of `train` is held out.
    pub test: Option<String>,
    /// A `label sentence` dev file for early stopping; without it `dev_fraction` of the
    /// training part is used.
    pub dev: Option<String>,
    /// Share of the training file held out as test when there is no test file.
    pub holdout: f64,
    /// Share of the training part used for early stopping when there is no dev file.
    pub dev_fraction: f64,
    /// 1 = one held-out split; k > 1 = k-fold cross-validation over the training file (the
    /// paper protocol for MR is 10), one run per fold instead of per seed.
    pub folds: usize,
    /// Tokens kept per sentence (0 = all).
    pub max_len: usize,
    /// Minimum count of a token to enter the vocabulary.
    pub min_count: usize,
    /// Train on at most this many examples (0 = all); for quick runs.
    pub limit: usize,
}

/// Model keys: `model.embed_dim`, `model.widths`, `model.maps`, `model.dropout`, ….
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Word-vector width.
    pub embed_dim: usize,
    /// Convolution widths.
    pub widths: Vec<usize>,
    /// Feature maps per width.
    pub maps: usize,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// SE reduction ratio r.
    pub se_reduction: usize,
    /// Max L2 norm of each class's output weights (0 = off).
    pub max_norm: f64,
    /// Pretrained vectors in word2vec/GloVe text format (`--embeddings FILE`).
    pub embeddings: Option<String>,
}

/// Training keys: `train.epochs`, `train.batch_size`, `train.lr`, `train.patience`, `train.seeds`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Maximum epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Early-stopping patience in epochs (on dev accuracy).
    pub patience: usize,
    /// Number of seeds (runs per model) when `data.folds = 1`.
    pub seeds: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            preset: "mr".into(),
            train: None,
            test: None,
            dev: None,
            holdout: 0.1,
            dev_fraction: 0.1,
            folds: 1,
            max_len: 0,
            min_count: 1,
            limit: 0,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            embed_dim: 300,
            widths: vec![3, 4, 5],
            maps: 100,
            dropout: 0.5,
            se_reduction: 16,
            max_norm: 3.0,
            embeddings: None,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 8,
            batch_size: 50,
            lr: 1e-3,
            patience: 2,
            seeds: 5,
        }
    }
}

impl SecnnConfig {
    /// Settings for `reproduce --quick`: fewer maps, epochs and seeds so both presets finish in
    /// a few minutes on two cores.
    pub fn quick(preset: &str) -> Self {
        let mut c = SecnnConfig::default();
        c.data.preset = preset.into();
        c.model.embed_dim = 128;
        c.train.epochs = 4;
        c.train.seeds = 3;
        c
    }
}

impl Validate for SecnnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        check(
            d.train.is_some() || ["mr", "sst2"].contains(&d.preset.as_str()),
            "data.preset",
            &d.preset,
            "must be `mr` or `sst2` (or set data.train)",
        )?;
        check(
            d.holdout > 0.0 && d.holdout < 0.5,
            "data.holdout",
            d.holdout,
            "must be in (0, 0.5)",
        )?;
        check(
            d.dev_fraction > 0.0 && d.dev_fraction < 0.5,
            "data.dev_fraction",
            d.dev_fraction,
            "must be in (0, 0.5)",
        )?;
        check(
            (1..=20).contains(&d.folds),
            "data.folds",
            d.folds,
            "must be 1 (hold-out) or 2..=20",
        )?;
        check(
            d.min_count >= 1,
            "data.min_count",
            d.min_count,
            "must be >= 1",
        )?;
        let m = &self.model;
        check(
            (1..=2048).contains(&m.embed_dim),
            "model.embed_dim",
            m.embed_dim,
            "must be in 1..=2048",
        )?;
        check(
            !m.widths.is_empty() && m.widths.iter().all(|&w| (1..=15).contains(&w)),
            "model.widths",
            format!("{:?}", m.widths),
            "must be a non-empty list of widths in 1..=15",
        )?;
        check(m.maps >= 1, "model.maps", m.maps, "must be >= 1")?;
        check(
            (0.0..1.0).contains(&m.dropout),
            "model.dropout",
            m.dropout,
            "must be in [0, 1)",
        )?;
        check(
            m.se_reduction >= 1,
            "model.se_reduction",
            m.se_reduction,
            "must be >= 1",
        )?;
        check(
            m.max_norm >= 0.0,
            "model.max_norm",
            m.max_norm,
            "must be >= 0 (0 = off)",
        )?;
        let t = &self.train;
        check(t.epochs >= 1, "train.epochs", t.epochs, "must be >= 1")?;
        check(
            t.batch_size >= 1,
            "train.batch_size",
            t.batch_size,
            "must be >= 1",
        )?;
        check(
            t.lr > 0.0 && t.lr.is_finite(),
            "train.lr",
            t.lr,
            "must be > 0",
        )?;
        check(
            (1..=100).contains(&t.seeds),
            "train.seeds",
            t.seeds,
            "must be in 1..=100",
        )?;
        Ok(())
    }
}
