//! `ferrolab apg` configuration (TOML + `--set`), checked once before any work starts.

use crate::apg::ConditionMode;
use crate::data::SyntheticConfig;
use crate::model::BaseModel;
use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};
use serde::{Deserialize, Serialize};

/// The whole experiment configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApgExperimentConfig {
    /// Which data.
    pub data: DataConfig,
    /// Base-model architecture.
    pub model: ModelConfig,
    /// APG settings.
    pub apg: ApgConfig,
    /// Optimisation.
    pub train: TrainConfig,
    /// Time/memory comparison of one layer: plain vs APG vs naive generation.
    pub efficiency: EfficiencyConfig,
}

/// Keys `data.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `movielens` (ml-100k under the data folder) or `synthetic`.
    pub dataset: String,
    /// Synthetic training rows.
    pub train_rows: usize,
    /// Synthetic validation rows.
    pub valid_rows: usize,
    /// Synthetic test rows.
    pub test_rows: usize,
    /// Synthetic generator settings.
    pub synthetic: SyntheticConfig,
}

/// Keys `model.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Base models to compare (`wide_deep`, `deepfm`, `dcnv2`).
    pub models: Vec<String>,
    /// Field embedding width.
    pub embed_dim: usize,
    /// Hidden widths of the deep tower.
    pub hidden: Vec<usize>,
    /// DCNv2 cross layers.
    pub cross_layers: usize,
}

/// Keys `apg.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApgConfig {
    /// `self`, `group` or `mix`.
    pub condition: ConditionMode,
    /// Condition fields (empty = the dataset's default: `user` for MovieLens, `C1` synthetic).
    pub condition_fields: Vec<String>,
    /// Rank K of the generated core.
    pub rank: usize,
    /// Over-parameterisation width P (0 = off, else ≥ rank); merged after training.
    pub overparam: usize,
    /// Hyper-network hidden width.
    pub hyper_hidden: usize,
    /// Also generate a per-instance bias of each APG layer.
    pub generate_bias: bool,
}

/// Keys `train.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Maximum epochs.
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Early-stopping patience on validation AUC.
    pub patience: usize,
    /// Training seeds (each model plain and APG per seed).
    pub seeds: usize,
}

/// Keys `efficiency.*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EfficiencyConfig {
    /// Run the layer comparison.
    pub enabled: bool,
    /// Batch size of the measured steps.
    pub batch_size: usize,
    /// Layer input width.
    pub d_in: usize,
    /// Layer output width.
    pub d_out: usize,
    /// Timed steps per variant (after 2 warm-up steps).
    pub steps: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: "movielens".into(),
            train_rows: 200_000,
            valid_rows: 25_000,
            test_rows: 50_000,
            synthetic: SyntheticConfig::default(),
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            models: vec!["wide_deep".into(), "deepfm".into(), "dcnv2".into()],
            embed_dim: 16,
            hidden: vec![128, 64],
            cross_layers: 2,
        }
    }
}

impl Default for ApgConfig {
    fn default() -> Self {
        ApgConfig {
            condition: ConditionMode::MixWise,
            condition_fields: Vec::new(),
            rank: 32,
            overparam: 64,
            hyper_hidden: 64,
            generate_bias: true,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 6,
            batch_size: 256,
            lr: 1e-3,
            patience: 1,
            seeds: 5,
        }
    }
}

impl Default for EfficiencyConfig {
    fn default() -> Self {
        EfficiencyConfig {
            enabled: true,
            batch_size: 512,
            d_in: 256,
            d_out: 256,
            steps: 10,
        }
    }
}

impl ApgExperimentConfig {
    /// Settings for `reproduce --quick`: fewer rows, epochs and seeds.
    pub fn quick() -> Self {
        let mut c = ApgExperimentConfig::default();
        c.train.seeds = 2;
        c.train.epochs = 3;
        c.data.train_rows = 50_000;
        c.data.valid_rows = 10_000;
        c.data.test_rows = 20_000;
        c.efficiency.steps = 5;
        c
    }

    /// The base models to run, in config order.
    pub fn base_models(&self) -> Vec<BaseModel> {
        self.model
            .models
            .iter()
            .filter_map(|m| BaseModel::parse(m))
            .collect()
    }
}

impl Validate for ApgExperimentConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        check(
            ["movielens", "synthetic"].contains(&d.dataset.as_str()),
            "data.dataset",
            &d.dataset,
            "must be `movielens` or `synthetic`",
        )?;
        check(
            d.train_rows >= 100,
            "data.train_rows",
            d.train_rows,
            "must be >= 100",
        )?;
        check(
            d.valid_rows >= 100,
            "data.valid_rows",
            d.valid_rows,
            "must be >= 100",
        )?;
        check(
            d.test_rows >= 100,
            "data.test_rows",
            d.test_rows,
            "must be >= 100",
        )?;
        let s = &d.synthetic;
        check(
            (1..=1000).contains(&s.groups),
            "data.synthetic.groups",
            s.groups,
            "must be in 1..=1000",
        )?;
        check(
            (2..=1_000_000).contains(&s.max_vocab),
            "data.synthetic.max_vocab",
            s.max_vocab,
            "must be in 2..=1000000",
        )?;
        check(
            s.heterogeneity >= 0.0 && s.heterogeneity.is_finite(),
            "data.synthetic.heterogeneity",
            s.heterogeneity,
            "must be >= 0",
        )?;
        let m = &self.model;
        check(
            !m.models.is_empty() && m.models.iter().all(|x| BaseModel::parse(x).is_some()),
            "model.models",
            format!("{:?}", m.models),
            "must be a non-empty list of `wide_deep`, `deepfm`, `dcnv2`",
        )?;
        check(
            (1..=512).contains(&m.embed_dim),
            "model.embed_dim",
            m.embed_dim,
            "must be in 1..=512",
        )?;
        check(
            !m.hidden.is_empty() && m.hidden.iter().all(|&h| (1..=4096).contains(&h)),
            "model.hidden",
            format!("{:?}", m.hidden),
            "must be a non-empty list of widths in 1..=4096",
        )?;
        check(
            m.cross_layers <= 16,
            "model.cross_layers",
            m.cross_layers,
            "must be <= 16",
        )?;
        let a = &self.apg;
        check(
            (1..=256).contains(&a.rank),
            "apg.rank",
            a.rank,
            "must be in 1..=256",
        )?;
        check(
            a.overparam == 0 || a.overparam >= a.rank,
            "apg.overparam",
            a.overparam,
            "must be 0 (off) or >= apg.rank",
        )?;
        check(
            a.hyper_hidden >= 1,
            "apg.hyper_hidden",
            a.hyper_hidden,
            "must be >= 1",
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
        let e = &self.efficiency;
        check(
            e.batch_size >= 1,
            "efficiency.batch_size",
            e.batch_size,
            "must be >= 1",
        )?;
        check(
            e.d_in >= 1 && e.d_out >= 1,
            "efficiency.d_in",
            e.d_in,
            "widths must be >= 1",
        )?;
        check(
            (e.batch_size as u128) * (e.d_in as u128) * (e.d_out as u128) <= 200_000_000,
            "efficiency.batch_size",
            e.batch_size,
            "batch_size * d_in * d_out must be <= 2e8 (the naive variant stores that many floats)",
        )?;
        check(e.steps >= 1, "efficiency.steps", e.steps, "must be >= 1")?;
        Ok(())
    }
}
