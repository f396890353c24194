//! `ferrolab apg` configuration (TOML + `--set`), checked once before any work starts.

use crate::apg::ConditionMode;
use crate::data::SyntheticConfig;
use crate::model::BaseModel;
use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct ApgExperimentConfig {
        /// Which data.
        pub data: DataConfig = DataConfig::default();
        /// Base-model architecture.
        pub model: ModelConfig = ModelConfig::default();
        /// APG settings.
        pub apg: ApgConfig = ApgConfig::default();
        /// Optimisation.
        pub train: TrainConfig = TrainConfig {
            epochs: 6,
            batch_size: 256,
            lr: 1e-3,
            weight_decay: 0.0,
            patience: 1,
            seeds: 5,
        };
        /// Time/memory comparison of one layer: plain vs APG vs naive generation.
        pub efficiency: EfficiencyConfig = EfficiencyConfig::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `data.*`.
    pub struct DataConfig {
        /// `movielens` (ml-100k under the data folder) or `synthetic`.
        pub dataset: String = "movielens".into(), "`movielens` or `synthetic`" => |v| ["movielens", "synthetic"].contains(&v.as_str());
        /// Synthetic training rows.
        pub train_rows: usize = 200_000, "100..=100000000" => |v| (100..=100_000_000).contains(v);
        /// Synthetic validation rows.
        pub valid_rows: usize = 25_000, "100..=100000000" => |v| (100..=100_000_000).contains(v);
        /// Synthetic test rows.
        pub test_rows: usize = 50_000, "100..=100000000" => |v| (100..=100_000_000).contains(v);
        /// Synthetic generator settings.
        pub synthetic: SyntheticConfig = SyntheticConfig::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `model.*`.
    pub struct ModelConfig {
        /// Base models to compare (`wide_deep`, `deepfm`, `dcnv2`).
        pub models: Vec<String> = vec!["wide_deep".into(), "deepfm".into(), "dcnv2".into()], "a non-empty list of `wide_deep`, `deepfm`, `dcnv2`" => |v| !v.is_empty() && v.iter().all(|x| BaseModel::parse(x).is_some());
        /// Field embedding width.
        pub embed_dim: usize = 16, "1..=512" => |v| (1..=512).contains(v);
        /// Hidden widths of the deep tower.
        pub hidden: Vec<usize> = vec![128, 64], "a non-empty list of widths in 1..=4096" => |v| !v.is_empty() && v.iter().all(|h| (1..=4096).contains(h));
        /// DCNv2 cross layers.
        pub cross_layers: usize = 2, "0..=16" => |v| *v <= 16;
    }
}

ferrolab_core::config_section! {
    /// Keys `apg.*`.
    pub struct ApgConfig {
        /// `self`, `group` or `mix`.
        pub condition: ConditionMode = ConditionMode::MixWise;
        /// Condition fields (empty = the dataset's default: `user` for MovieLens, `C1` synthetic).
        pub condition_fields: Vec<String> = Vec::new();
        /// Rank K of the generated core.
        pub rank: usize = 32, "1..=256" => |v| (1..=256).contains(v);
        /// Over-parameterisation width P (0 = off, else ≥ rank); merged after training.
        pub overparam: usize = 64, "0 (off) or apg.rank..=4096" => |v| *v <= 4096;
        /// Hyper-network hidden width.
        pub hyper_hidden: usize = 64, "1..=4096" => |v| (1..=4096).contains(v);
        /// Also generate a per-instance bias of each APG layer.
        pub generate_bias: bool = true;
    }
}

/// Keys `train.*` (the section every system shares; `train.weight_decay` is not used here).
pub type TrainConfig = ferrolab_core::config::TrainSection;

ferrolab_core::config_section! {
    /// Keys `efficiency.*`.
    pub struct EfficiencyConfig {
        /// Run the layer comparison.
        pub enabled: bool = true;
        /// Batch size of the measured steps.
        pub batch_size: usize = 512, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Layer input width.
        pub d_in: usize = 256, "1..=65536" => |v| (1..=65536).contains(v);
        /// Layer output width.
        pub d_out: usize = 256, "1..=65536" => |v| (1..=65536).contains(v);
        /// Timed steps per variant (after 2 warm-up steps).
        pub steps: usize = 10, "1..=100000" => |v| (1..=100_000).contains(v);
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
        self.train.unused(
            &ApgExperimentConfig::default().train,
            "apg",
            &["weight_decay"],
        )?;
        let a = &self.apg;
        check(
            a.overparam == 0 || a.overparam >= a.rank,
            "apg.overparam",
            a.overparam,
            "must be 0 (off) or >= apg.rank",
        )?;
        let e = &self.efficiency;
        check(
            (e.batch_size as u128) * (e.d_in as u128) * (e.d_out as u128) <= 200_000_000,
            "efficiency.batch_size",
            e.batch_size,
            "batch_size * d_in * d_out must be <= 2e8 (the naive variant stores that many floats)",
        )?;
        Ok(())
    }
}
