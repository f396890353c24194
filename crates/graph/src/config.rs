//! `ferrolab cluster-gcn` configuration (TOML + `--set`). Defaults are the Cora setting:
//! Kipf & Welling's GCN hyper-parameters, Cluster-GCN with 10 METIS clusters, 2 per batch.

use std::path::{Path, PathBuf};

use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};
use ferrolab_data::CsbmConfig;
use serde::{Deserialize, Serialize};

use crate::norm::Normalization;
use crate::partition::PartitionMethod;
use crate::train::{ClusterConfig, TrainConfig};

/// The whole experiment configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterGcnConfig {
    pub data: DataConfig,
    pub model: ModelConfig,
    pub train: TrainSection,
    pub cluster: ClusterSection,
    pub baselines: BaselineSection,
    pub depth: DepthSection,
}

/// Depth-study keys: `depth.layers` (e.g. `[2, 3, 4, 5]`; empty = no study).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DepthSection {
    pub layers: Vec<usize>,
}

/// Data keys: `data.path`, `data.preset`, `data.synthetic.*`, split sizes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `cora` (`graphs/cora_planetoid.npz` under the data folder); ignored when `path` or
    /// `synthetic` is set.
    pub preset: String,
    /// A CSR graph npz in either layout of the data README.
    pub path: Option<String>,
    /// A generated graph (contextual stochastic block model) instead of a file.
    pub synthetic: Option<CsbmConfig>,
    /// Seeded per-class split used when the graph has none: training nodes per class.
    pub train_per_class: usize,
    /// Validation nodes per class (the rest is the test set).
    pub val_per_class: usize,
    /// Scale each sparse feature row to sum 1 (Kipf & Welling; bag-of-words only).
    pub row_normalize: bool,
}

/// Model keys: `model.hidden`, `model.layers`, `model.dropout`, `model.layer`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub hidden: usize,
    pub layers: usize,
    pub dropout: f64,
    /// `gcn` (Kipf & Welling) or `cluster` (`[ÂH ‖ H] W` + LayerNorm, Cluster-GCN's code).
    pub layer: String,
}

/// Training keys: `train.epochs`, `train.lr`, `train.weight_decay`, `train.patience`,
/// `train.seeds`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSection {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f32,
    /// Early stopping on validation accuracy (0 = off).
    pub patience: usize,
    /// Runs per method, seeds `seed, seed+1, …`.
    pub seeds: usize,
}

/// Cluster keys: `cluster.parts`, `cluster.parts_per_batch`, `cluster.partition`,
/// `cluster.norm`, `cluster.lambda`, `cluster.partition_seed`, `cluster.cache_dir`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSection {
    pub parts: usize,
    pub parts_per_batch: usize,
    /// `metis` or `random`.
    pub partition: String,
    /// `diag_enhanced`, `row` or `symmetric`.
    pub norm: String,
    /// λ of the diagonal enhancement.
    pub lambda: f32,
    pub partition_seed: u64,
    /// Partition cache folder; empty = `$FERROLAB_CACHE`, else `$XDG_CACHE_HOME/ferrolab`,
    /// else `~/.cache/ferrolab`; `none` = no cache.
    pub cache_dir: String,
    /// Train from cluster stores on disk (the graph is dropped from memory first), so that
    /// training memory depends on the batch, not the graph.
    pub out_of_core: bool,
}

/// Which baselines run beside Cluster-GCN: `baselines.full_batch`,
/// `baselines.random_partition`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BaselineSection {
    pub full_batch: bool,
    pub random_partition: bool,
    /// Run the enabled baselines only, not Cluster-GCN: memory benchmarks run each method in
    /// a process of its own so that one method's peak cannot hide another's.
    pub only: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            preset: "cora".into(),
            path: None,
            synthetic: None,
            train_per_class: 20,
            val_per_class: 30,
            row_normalize: true,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            hidden: 16,
            layers: 2,
            dropout: 0.5,
            layer: "gcn".into(),
        }
    }
}

impl Default for TrainSection {
    fn default() -> Self {
        TrainSection {
            epochs: 200,
            lr: 0.01,
            weight_decay: 5e-4,
            patience: 0,
            seeds: 10,
        }
    }
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            parts: 10,
            parts_per_batch: 2,
            partition: "metis".into(),
            norm: "diag_enhanced".into(),
            lambda: 1.0,
            partition_seed: 0,
            cache_dir: String::new(),
            out_of_core: false,
        }
    }
}

impl Default for BaselineSection {
    fn default() -> Self {
        BaselineSection {
            full_batch: true,
            random_partition: true,
            only: false,
        }
    }
}

impl Validate for ClusterGcnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.data;
        check(
            d.path.is_some() || d.synthetic.is_some() || d.preset == "cora",
            "data.preset",
            &d.preset,
            "must be `cora` (or set data.path or data.synthetic.nodes)",
        )?;
        check(
            !(d.path.is_some() && d.synthetic.is_some()),
            "data.synthetic",
            "set",
            "data.path and data.synthetic are exclusive",
        )?;
        if let Some(s) = &d.synthetic {
            s.validate().map_err(|e| ConfigError::Invalid {
                key: "data.synthetic".into(),
                value: format!("{} nodes", s.nodes),
                reason: e.to_string(),
            })?;
        }
        check(
            d.train_per_class >= 1,
            "data.train_per_class",
            d.train_per_class,
            "must be at least 1",
        )?;
        let m = &self.model;
        check(
            m.hidden >= 1,
            "model.hidden",
            m.hidden,
            "must be at least 1",
        )?;
        check(
            m.layers >= 1,
            "model.layers",
            m.layers,
            "must be at least 1",
        )?;
        check(
            (0.0..1.0).contains(&m.dropout),
            "model.dropout",
            m.dropout,
            "must be in [0, 1)",
        )?;
        check(
            ["gcn", "cluster"].contains(&m.layer.as_str()),
            "model.layer",
            &m.layer,
            "must be `gcn` or `cluster`",
        )?;
        let t = &self.train;
        check(
            t.epochs >= 1,
            "train.epochs",
            t.epochs,
            "must be at least 1",
        )?;
        check(
            t.lr > 0.0 && t.lr.is_finite(),
            "train.lr",
            t.lr,
            "must be > 0",
        )?;
        check(
            t.weight_decay >= 0.0 && t.weight_decay.is_finite(),
            "train.weight_decay",
            t.weight_decay,
            "must be ≥ 0",
        )?;
        check(t.seeds >= 1, "train.seeds", t.seeds, "must be at least 1")?;
        let b = &self.baselines;
        check(
            !b.only || b.full_batch || b.random_partition,
            "baselines.only",
            b.only,
            "needs baselines.full_batch or baselines.random_partition",
        )?;
        check(
            self.depth.layers.iter().all(|&l| (1..=16).contains(&l)),
            "depth.layers",
            format!("{:?}", self.depth.layers),
            "every depth must be in 1..=16",
        )?;
        let c = &self.cluster;
        check(c.parts >= 1, "cluster.parts", c.parts, "must be at least 1")?;
        check(
            (1..=c.parts).contains(&c.parts_per_batch),
            "cluster.parts_per_batch",
            c.parts_per_batch,
            "must be in 1..=cluster.parts",
        )?;
        check(
            PartitionMethod::parse(&c.partition).is_some(),
            "cluster.partition",
            &c.partition,
            "must be `metis` or `random`",
        )?;
        check(
            ["diag_enhanced", "row", "symmetric"].contains(&c.norm.as_str()),
            "cluster.norm",
            &c.norm,
            "must be `diag_enhanced`, `row` or `symmetric`",
        )?;
        check(
            c.lambda >= 0.0 && c.lambda.is_finite(),
            "cluster.lambda",
            c.lambda,
            "must be ≥ 0",
        )?;
        Ok(())
    }
}

impl ClusterGcnConfig {
    /// The training hyper-parameters shared by every method.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.train.epochs,
            lr: self.train.lr,
            weight_decay: self.train.weight_decay,
            hidden: self.model.hidden,
            layers: self.model.layers,
            dropout: self.model.dropout,
            cluster_gcn_layer: self.model.layer == "cluster",
            patience: (self.train.patience > 0).then_some(self.train.patience),
        }
    }

    /// Cluster-GCN's batching with the configured partition method (validated first).
    pub fn cluster_config(&self) -> ClusterConfig {
        let c = &self.cluster;
        ClusterConfig {
            parts: c.parts,
            parts_per_batch: c.parts_per_batch,
            norm: match c.norm.as_str() {
                "row" => Normalization::Row,
                "symmetric" => Normalization::Symmetric,
                _ => Normalization::DiagEnhanced { lambda: c.lambda },
            },
            method: PartitionMethod::parse(&c.partition).unwrap_or(PartitionMethod::Metis),
            partition_seed: c.partition_seed,
            cache_dir: self.cache_dir(),
        }
    }

    fn cache_dir(&self) -> Option<PathBuf> {
        match self.cluster.cache_dir.as_str() {
            "none" => None,
            "" => default_cache_dir(),
            dir => Some(PathBuf::from(dir)),
        }
    }

    /// Settings for `reproduce --quick`: three seeds on Cora.
    pub fn quick() -> Self {
        let mut c = ClusterGcnConfig::default();
        c.train.seeds = 3;
        c
    }
}

/// `$FERROLAB_CACHE`, else `$XDG_CACHE_HOME/ferrolab`, else `$HOME/.cache/ferrolab`.
pub fn default_cache_dir() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("FERROLAB_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|p| p.join("ferrolab")))
        .or_else(|| var("HOME").map(|p| Path::new(&p).join(".cache").join("ferrolab")))
        .map(|p| p.join("partitions"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keys_reach_the_config_and_bad_values_are_named() {
        let sets = [
            "data.synthetic.nodes=5000".to_string(),
            "cluster.partition=random".into(),
            "model.layers=3".into(),
        ];
        let c: ClusterGcnConfig = ferrolab_core::config::load(None, &sets).unwrap();
        assert_eq!(c.data.synthetic.as_ref().map(|s| s.nodes), Some(5000));
        assert_eq!(c.cluster_config().method, PartitionMethod::Random);
        assert_eq!(c.train_config().layers, 3);
        for (bad, key) in [
            ("cluster.partition=kmeans", "cluster.partition"),
            ("cluster.norm=l2", "cluster.norm"),
            ("model.dropout=1.0", "model.dropout"),
            ("cluster.parts_per_batch=20", "cluster.parts_per_batch"),
            ("data.synthetic.nodes=1", "data.synthetic"),
        ] {
            let e = ferrolab_core::config::load::<ClusterGcnConfig>(None, &[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{bad}: {e}");
        }
        let e = ferrolab_core::config::load::<ClusterGcnConfig>(None, &["cluster.q=2".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("cluster.q") || e.contains("`q`"), "{e}");
    }
}
