//! The paper's comparison on one data set: full-batch GCN (the baseline) against Cluster-GCN
//! over several seeds, as a [`Report`].
//!
//! Both are scored two ways: the final model, and the model of the epoch with the best
//! validation accuracy (model selection on the validation split). Cluster-GCN's final model
//! carries the noise of its last small batch, so the selected figure is the one compared.

use ferrolab_core::Report;
use ferrolab_core::metrics::mean_std;

use crate::error::{GraphError, Result};
use crate::train::{
    ClusterConfig, NodeData, TrainConfig, TrainOutcome, train_cluster_gcn, train_full_batch,
};

/// What to compare, and on how many seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentConfig {
    pub train: TrainConfig,
    pub cluster: ClusterConfig,
    pub seeds: Vec<u64>,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        ExperimentConfig {
            train: TrainConfig::default(),
            cluster: ClusterConfig::default(),
            seeds: (0..10).collect(),
        }
    }
}

impl ExperimentConfig {
    pub fn validate(&self, num_nodes: usize) -> Result<()> {
        if self.seeds.is_empty() {
            return Err(GraphError::config("seeds", "at least one seed is needed"));
        }
        self.train.validate()?;
        self.cluster.validate(num_nodes)
    }
}

/// Per-seed outcomes of one method and their summary.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodResult {
    pub runs: Vec<TrainOutcome>,
}

impl MethodResult {
    /// Mean and standard deviation of the final models' test accuracy.
    pub fn test_accuracy(&self) -> (f64, f64) {
        mean_std(&self.collect(|o| o.test_accuracy))
    }

    /// Mean and standard deviation of the test accuracy at the best validation epoch.
    pub fn test_accuracy_selected(&self) -> (f64, f64) {
        mean_std(&self.collect(|o| o.test_accuracy_at_best_val))
    }

    /// Mean training seconds per run.
    pub fn train_seconds(&self) -> f64 {
        mean_std(&self.collect(|o| o.train_seconds)).0
    }

    fn collect(&self, f: impl Fn(&TrainOutcome) -> f64) -> Vec<f64> {
        self.runs.iter().map(f).collect()
    }

    fn metrics(&self) -> std::collections::BTreeMap<String, f64> {
        let (m, s) = self.test_accuracy();
        let (ms, ss) = self.test_accuracy_selected();
        [
            ("test_accuracy", ms),
            ("test_accuracy_std", ss),
            ("test_accuracy_final", m),
            ("test_accuracy_final_std", s),
            ("train_seconds", self.train_seconds()),
            (
                "max_batch_nodes",
                self.runs
                    .iter()
                    .map(|o| o.max_batch_nodes)
                    .max()
                    .unwrap_or(0) as f64,
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

/// Both methods, same seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub full_batch: MethodResult,
    pub cluster_gcn: MethodResult,
}

/// Runs full-batch GCN and Cluster-GCN (random partition) on `data` for every seed.
pub fn compare(data: &NodeData, cfg: &ExperimentConfig) -> Result<Comparison> {
    cfg.validate(data.num_nodes())?;
    let full = cfg
        .seeds
        .iter()
        .map(|&s| train_full_batch(data, &cfg.train, s))
        .collect::<Result<Vec<_>>>()?;
    let cluster = cfg
        .seeds
        .iter()
        .map(|&s| train_cluster_gcn(data, &cfg.train, &cfg.cluster, s))
        .collect::<Result<Vec<_>>>()?;
    Ok(Comparison {
        full_batch: MethodResult { runs: full },
        cluster_gcn: MethodResult { runs: cluster },
    })
}

/// [`compare`] as a report: Cluster-GCN's metrics, full-batch GCN as the baseline.
pub fn run(data: &NodeData, dataset: &str, cfg: &ExperimentConfig) -> Result<Report> {
    let c = compare(data, cfg)?;
    let mut report = Report::new(
        "cluster_gcn",
        dataset,
        cfg.seeds.first().copied().unwrap_or(0),
    );
    report.metrics = c.cluster_gcn.metrics();
    report
        .baselines
        .insert("gcn_full_batch".into(), c.full_batch.metrics());
    report.timings.insert(
        "cluster_gcn_train_seconds".into(),
        c.cluster_gcn.train_seconds(),
    );
    report.timings.insert(
        "gcn_full_batch_train_seconds".into(),
        c.full_batch.train_seconds(),
    );
    let per_seed = |m: &MethodResult| -> Vec<f64> { m.collect(|o| o.test_accuracy_at_best_val) };
    report.details = serde_json::json!({
        "seeds": cfg.seeds,
        "cluster_gcn_test_accuracy": per_seed(&c.cluster_gcn),
        "gcn_full_batch_test_accuracy": per_seed(&c.full_batch),
        "partition": "random",
        "parts": cfg.cluster.parts,
        "parts_per_batch": cfg.cluster.parts_per_batch,
        "normalization": format!("{:?}", cfg.cluster.norm),
    });
    report.notes.push(
        "test_accuracy is taken at the epoch of best validation accuracy; \
         test_accuracy_final is the last epoch's model"
            .into(),
    );
    Ok(report)
}
