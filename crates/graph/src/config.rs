//! `ferrolab cluster-gcn` configuration (TOML + `--set`). Defaults are the Cora setting:
//! Kipf & Welling's GCN hyper-parameters, Cluster-GCN with 10 METIS clusters, 2 per batch.

use std::path::{Path, PathBuf};

use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};
use ferrolab_data::CsbmConfig;

use crate::norm::Normalization;
use crate::partition::PartitionMethod;
use crate::train::{ClusterConfig, TrainConfig};

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct ClusterGcnConfig {
        /// The graph and its split.
        pub data: DataConfig = DataConfig::default();
        /// The GCN.
        pub model: ModelConfig = ModelConfig::default();
        /// Optimisation.
        pub train: TrainSection = TrainSection {
            epochs: 200,
            batch_size: 64,
            lr: 0.01,
            weight_decay: 5e-4,
            patience: 0,
            seeds: 10,
        };
        /// Cluster-GCN's partition and batching.
        pub cluster: ClusterSection = ClusterSection::default();
        /// Which baselines run beside Cluster-GCN.
        pub baselines: BaselineSection = BaselineSection::default();
        /// The depth study.
        pub depth: DepthSection = DepthSection::default();
    }
}

ferrolab_core::config_section! {
    /// Depth-study keys: `depth.layers` (e.g. `[2, 3, 4, 5]`; empty = no study).
    pub struct DepthSection {
        /// Depths to train with and without diagonal enhancement (empty = no study).
        pub layers: Vec<usize> = Vec::new(), "each in 1..=16" => |v| v.iter().all(|l| (1..=16).contains(l));
    }
}

ferrolab_core::config_section! {
    /// Data keys: `data.path`, `data.preset`, `data.synthetic.*`, split sizes.
    pub struct DataConfig {
        /// `cora` (`graphs/cora_planetoid.npz` under the data folder); ignored when `path` or
        /// `synthetic` is set.
        pub preset: String = "cora".into(), "`cora`" => |v| v == "cora";
        /// A CSR graph npz in either layout of the data README.
        pub path: Option<String> = None;
        /// A generated graph (contextual stochastic block model) instead of a file.
        pub synthetic: Option<SyntheticSection> = None;
        /// Seeded per-class split used when the graph has none: training nodes per class.
        pub train_per_class: usize = 20, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Validation nodes per class (the rest is the test set).
        pub val_per_class: usize = 30, "1..=10000000 (validation picks the reported epoch)" => |v| (1..=10_000_000).contains(v);
        /// Scale each sparse feature row to sum 1 (Kipf & Welling; bag-of-words only).
        pub row_normalize: bool = true;
    }
}

ferrolab_core::config_section! {
    /// A generated graph: `data.synthetic.*` (contextual stochastic block model).
    pub struct SyntheticSection {
        /// Nodes.
        pub nodes: usize = 2000, "2..=2^32-1" => |v| (2..=u32::MAX as usize).contains(v);
        /// Classes (blocks).
        pub classes: usize = 5, "1..=65536" => |v| (1..=65536).contains(v);
        /// Target mean number of neighbours per node.
        pub avg_degree: f64 = 10.0, "in (0, 10000]" => |v| *v > 0.0 && *v <= 10_000.0;
        /// Fraction of edges drawn inside a class (edge homophily).
        pub p_in_ratio: f64 = 0.8, "in [0, 1]" => |v| (0.0..=1.0).contains(v);
        /// Feature dimension.
        pub features: usize = 32, "1..=65536" => |v| (1..=65536).contains(v);
        /// Class means have entries `±feature_signal`.
        pub feature_signal: f32 = 0.3, "finite" => |v| v.is_finite();
        /// Standard deviation of the Gaussian noise around the class mean.
        pub feature_noise: f32 = 1.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Graph number: the generator's seed is derived from `--seed` and this.
        pub seed: u64 = 0;
    }
}

impl SyntheticSection {
    /// The generator's settings; its seed comes from the run's master seed (the one
    /// derivation rule of [`ferrolab_core::RunContext::seed_for`]) and `graph`.
    pub fn csbm(&self, master_seed: u64) -> CsbmConfig {
        CsbmConfig {
            nodes: self.nodes,
            classes: self.classes,
            avg_degree: self.avg_degree,
            p_in_ratio: self.p_in_ratio,
            features: self.features,
            feature_signal: self.feature_signal,
            feature_noise: self.feature_noise,
            seed: ferrolab_core::seed::derive(
                master_seed,
                &format!("data.synthetic/{}", self.seed),
            ),
        }
    }
}

ferrolab_core::config_section! {
    /// Model keys: `model.hidden`, `model.layers`, `model.dropout`, `model.layer`.
    pub struct ModelConfig {
        /// Hidden width.
        pub hidden: usize = 16, "1..=65536" => |v| (1..=65536).contains(v);
        /// Graph-convolution layers.
        pub layers: usize = 2, "1..=64" => |v| (1..=64).contains(v);
        /// Dropout before each layer.
        pub dropout: f64 = 0.5, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// `gcn` (Kipf & Welling) or `cluster` (`[ÂH ‖ H] W` + LayerNorm, Cluster-GCN's code).
        pub layer: String = "gcn".into(), "`gcn` or `cluster`" => |v| ["gcn", "cluster"].contains(&v.as_str());
    }
}

/// Training keys: `train.epochs`, `train.lr`, `train.weight_decay`, `train.patience`,
/// `train.seeds` (the section every system shares; a batch is `cluster.parts_per_batch`
/// clusters, so `train.batch_size` is not used here).
pub type TrainSection = ferrolab_core::config::TrainSection;

ferrolab_core::config_section! {
    /// Cluster keys: `cluster.parts`, `cluster.parts_per_batch`, `cluster.partition`,
    /// `cluster.norm`, `cluster.lambda`, `cluster.partition_seed`, `cluster.cache_dir`.
    pub struct ClusterSection {
        /// Clusters the graph is partitioned into.
        pub parts: usize = 10, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Clusters merged into one batch.
        pub parts_per_batch: usize = 2, "1..=cluster.parts" => |v| *v >= 1;
        /// `metis` or `random`.
        pub partition: String = "metis".into(), "`metis` or `random`" => |v| PartitionMethod::parse(v).is_some();
        /// `diag_enhanced`, `row` or `symmetric`.
        pub norm: String = "diag_enhanced".into(), "`diag_enhanced`, `row` or `symmetric`" => |v| ["diag_enhanced", "row", "symmetric"].contains(&v.as_str());
        /// λ of the diagonal enhancement.
        pub lambda: f32 = 1.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Seed of the partitioner (METIS or random).
        pub partition_seed: u64 = 0;
        /// Partition cache folder; empty = `<base>/partitions` with base `$FERROLAB_CACHE`, else
        /// `$XDG_CACHE_HOME/ferrolab`, else `~/.cache/ferrolab`; `none` = no cache.
        pub cache_dir: String = String::new();
        /// Train from cluster stores on disk (the graph is dropped from memory first), so that
        /// training memory depends on the batch, not the graph.
        pub out_of_core: bool = false;
    }
}

ferrolab_core::config_section! {
    /// Which baselines run beside Cluster-GCN: `baselines.full_batch`,
    /// `baselines.random_partition`.
    pub struct BaselineSection {
        /// Full-batch GCN (Kipf & Welling).
        pub full_batch: bool = true;
        /// Cluster-GCN with random clusters of the same size.
        pub random_partition: bool = true;
        /// Run the enabled baselines only, not Cluster-GCN: memory benchmarks run each method in
        /// a process of its own so that one method's peak cannot hide another's.
        pub only: bool = false;
    }
}

impl Validate for ClusterGcnConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.train.unused(
            &ClusterGcnConfig::default().train,
            "cluster-gcn",
            &["batch_size"],
        )?;
        let d = &self.data;
        check(
            !(d.path.is_some() && d.synthetic.is_some()),
            "data.synthetic",
            "set",
            "data.path and data.synthetic are exclusive",
        )?;
        if let Some(s) = &d.synthetic {
            s.csbm(0).validate().map_err(|e| ConfigError::Invalid {
                key: "data.synthetic".into(),
                value: format!("{} nodes", s.nodes),
                reason: e.to_string(),
            })?;
        }
        let b = &self.baselines;
        check(
            !b.only || b.full_batch || b.random_partition,
            "baselines.only",
            b.only,
            "needs baselines.full_batch or baselines.random_partition",
        )?;
        let c = &self.cluster;
        check(
            (1..=c.parts).contains(&c.parts_per_batch),
            "cluster.parts_per_batch",
            c.parts_per_batch,
            "must be in 1..=cluster.parts",
        )?;
        // With a graph file the node count is known only once it is read (the run checks it);
        // a generated graph's is configuration.
        if let Some(s) = &d.synthetic {
            check(
                c.parts <= s.nodes,
                "cluster.parts",
                c.parts,
                &format!(
                    "must not exceed the generated graph's {} nodes (data.synthetic.nodes)",
                    s.nodes
                ),
            )?;
        }
        Ok(())
    }
}

impl ClusterGcnConfig {
    /// The training hyper-parameters shared by every method.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.train.epochs,
            lr: self.train.lr,
            weight_decay: self.train.weight_decay as f32,
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
        let _serial = crate::serial_test();
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
        // More clusters than generated nodes: refused at load, not once the graph is built.
        let sets = [
            "data.synthetic.nodes=300".to_string(),
            "cluster.parts=400".into(),
        ];
        let e = ferrolab_core::config::load::<ClusterGcnConfig>(None, &sets)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cluster.parts") && e.contains("300 nodes"),
            "{e}"
        );
    }
}
