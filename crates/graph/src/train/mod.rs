//! Full-batch GCN training (Kipf & Welling) and Cluster-GCN training (Chiang et al., Alg. 1)
//! with METIS or random partitions, both as a [`TrainStep`] on core's loop
//! ([`ferrolab_core::train::Trainer`]), which owns epochs, early stopping on validation
//! accuracy, and the per-phase timing and peak memory. Both evaluate on the full graph layer
//! by layer ([`Gcn::infer_layerwise`]) so that evaluation stays within the training memory
//! budget.
//!
//! The partition is the expensive, cacheable step ([`partition_cached`](crate::partition_cached),
//! PyG's `ClusterData`); drawing `q` clusters per batch each epoch is cheap (PyG's
//! `ClusterLoader`). Batches come from a [`ClusterSource`]: the in-memory graph
//! ([`InMemoryClusters`]) or a [`ClusterStore`](crate::store::ClusterStore) on disk, through
//! one step.
//!
//! | module | holds |
//! |---|---|
//! | [`full_batch`] | [`train_full_batch`] |
//! | [`cluster`] | [`train_cluster_gcn`], [`train_on_partition`], [`train_from_store`] |
//! | [`source`] | [`ClusterSource`] and its two implementations |
//! | `eval` | whole-graph scoring, in memory and from a store |
//! | `grad` | the two optimiser steps (autodiff gather/scatter and the CSR kernel) |

use std::collections::BTreeMap;
use std::path::PathBuf;

use ferrolab_core::CoreError;
use ferrolab_core::backend::{seed_backend, train_device};
use ferrolab_core::burn::optim::decay::WeightDecayConfig;
use ferrolab_core::burn::optim::{AdamConfig, ModuleOptimizer};
use ferrolab_core::schedule::LrSchedule;
use ferrolab_core::train::{
    EarlyStopping, Mode, PhaseMemoryMonitor, PhaseTimes, TrainStep, Trainer,
};

use crate::error::{GraphError, Result};
use crate::models::{Gcn, GcnConfig};
use crate::norm::Normalization;
use crate::partition::{CacheStatus, PartitionMethod};

pub mod cluster;
mod eval;
pub mod full_batch;
mod grad;
pub mod source;

pub use crate::node_data::NodeData;
pub use cluster::{partition_with_info, train_cluster_gcn, train_from_store, train_on_partition};
pub use eval::Scores;
pub use ferrolab_core::train::PhaseMemory;
pub use full_batch::train_full_batch;
pub use source::{ClusterBatch, ClusterSource, InMemoryClusters};

/// Hyper-parameters shared by both training procedures. Defaults are Kipf & Welling's Cora
/// settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f32,
    pub hidden: usize,
    pub layers: usize,
    pub dropout: f64,
    /// Cluster-GCN's `[ÂH ‖ H] W` + LayerNorm layer instead of the plain GCN layer.
    pub cluster_gcn_layer: bool,
    /// Stop after this many epochs without a better validation accuracy.
    pub patience: Option<usize>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 200,
            lr: 0.01,
            weight_decay: 5e-4,
            hidden: 16,
            layers: 2,
            dropout: 0.5,
            cluster_gcn_layer: false,
            patience: None,
        }
    }
}

impl TrainConfig {
    /// Checks every parameter before any work starts.
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 {
            return Err(GraphError::config("epochs", "must be at least 1"));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(GraphError::config("lr", format!("{} is not > 0", self.lr)));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(GraphError::config("weight_decay", "must be ≥ 0"));
        }
        if self.hidden == 0 || self.layers == 0 {
            return Err(GraphError::config("hidden/layers", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(GraphError::config("dropout", "must be in [0, 1)"));
        }
        if self.patience == Some(0) {
            return Err(GraphError::config("patience", "must be at least 1"));
        }
        Ok(())
    }

    pub(crate) fn model(&self, d_in: usize, classes: usize) -> GcnConfig {
        GcnConfig::new(d_in, classes)
            .with_hidden(self.hidden)
            .with_layers(self.layers)
            .with_dropout(self.dropout)
            .with_cluster_gcn_layer(self.cluster_gcn_layer)
    }
}

/// Cluster-GCN's batching: `parts` clusters made by `method`, `parts_per_batch` of them per
/// step, and the normalisation used on each batch subgraph (and on the full graph for
/// evaluation).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub parts: usize,
    pub parts_per_batch: usize,
    pub norm: Normalization,
    pub method: PartitionMethod,
    /// The partition is computed once per graph and seed, not per training seed (as in the
    /// paper and PyG): seeds vary initialisation, dropout and batch order.
    pub partition_seed: u64,
    /// Where partitions are cached (`None`: recomputed every run).
    pub cache_dir: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            parts: 10,
            parts_per_batch: 2,
            norm: Normalization::DiagEnhanced { lambda: 1.0 },
            method: PartitionMethod::Metis,
            partition_seed: 0,
            cache_dir: None,
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self, num_nodes: usize) -> Result<()> {
        if self.parts == 0 || self.parts > num_nodes.max(1) {
            return Err(GraphError::config(
                "parts",
                format!(
                    "{} clusters for {num_nodes} nodes: need 1..={num_nodes}",
                    self.parts
                ),
            ));
        }
        if self.parts_per_batch == 0 || self.parts_per_batch > self.parts {
            return Err(GraphError::config(
                "parts_per_batch",
                format!("{} is not in 1..={}", self.parts_per_batch, self.parts),
            ));
        }
        if let Normalization::DiagEnhanced { lambda } = self.norm
            && !(lambda >= 0.0 && lambda.is_finite())
        {
            return Err(GraphError::config("lambda", "must be ≥ 0"));
        }
        Ok(())
    }
}

/// How a Cluster-GCN run's partition was obtained.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionInfo {
    pub method: PartitionMethod,
    /// Share of edges cut by the partition (and so dropped from every batch that does not
    /// hold both ends' clusters).
    pub edge_cut: f64,
    /// Seconds spent partitioning or loading the cache.
    pub seconds: f64,
    pub cache: CacheStatus,
}

/// What one training run achieved.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// Test accuracy of the final model.
    pub test_accuracy: f64,
    /// Validation accuracy of the final model.
    pub val_accuracy: f64,
    /// Test accuracy at the epoch of best validation accuracy (first such epoch).
    pub test_accuracy_at_best_val: f64,
    pub best_val_accuracy: f64,
    pub best_epoch: usize,
    pub epochs_run: usize,
    /// Wall time of the whole run (training and per-epoch evaluation).
    pub train_seconds: f64,
    /// Mean wall time of one training epoch (batching and optimiser steps, no evaluation).
    pub epoch_seconds: f64,
    /// Largest number of nodes in one training batch.
    pub max_batch_nodes: usize,
    /// Cluster-GCN only.
    pub partition: Option<PartitionInfo>,
    /// Validation and test accuracy after every epoch.
    pub curve: Vec<(f64, f64)>,
    /// Memory of the training phases alone (evaluation excluded), where measurable.
    pub memory: Option<PhaseMemory>,
}

/// The metric early stopping monitors.
const VAL_ACCURACY: &str = "val_accuracy";

/// What both GCN steps share on core's loop: the model and its optimiser, the scores after
/// every epoch, and the first graph error (core's loop carries its own error type, so the
/// original is kept here and returned in its place).
struct GcnState {
    /// `None` only while a step has moved it into the optimiser.
    model: Option<Gcn>,
    optim: ModuleOptimizer,
    /// Validation and test accuracy after every epoch.
    curve: Vec<(f64, f64)>,
    max_batch_nodes: usize,
    error: Option<GraphError>,
}

impl GcnState {
    /// A freshly seeded model for `d_in` features and `classes` classes, and its optimiser.
    fn init(cfg: &TrainConfig, d_in: usize, classes: usize, seed: u64) -> Self {
        seed_backend(ferrolab_core::seed::derive(seed, "init"));
        let model = cfg.model(d_in, classes).init(&train_device());
        let optim = AdamConfig::new()
            .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay)))
            .init();
        GcnState {
            model: Some(model),
            optim,
            curve: Vec::new(),
            max_batch_nodes: 0,
            error: None,
        }
    }

    /// Keeps `e` and hands core's loop an error that stops it.
    fn fail(&mut self, e: GraphError) -> CoreError {
        let msg = e.to_string();
        self.error.get_or_insert(e);
        CoreError::Runtime(msg)
    }

    /// The model, moved out for a step (put it back with `self.model = Some(..)`).
    fn take_model(&mut self) -> ferrolab_core::Result<Gcn> {
        match self.model.take() {
            Some(m) => Ok(m),
            None => Err(self.fail(GraphError::Invalid(
                "the model was lost in an earlier failed step".into(),
            ))),
        }
    }

    /// Scores the model with `score` and records the epoch.
    fn validate(
        &mut self,
        score: impl FnOnce(&Gcn) -> Result<Scores>,
    ) -> ferrolab_core::Result<BTreeMap<String, f64>> {
        let model = self.take_model()?;
        let scores = score(&model);
        self.model = Some(model);
        self.record(scores)
    }

    /// Records an epoch's scores as the validation metrics core's loop sees.
    fn record(&mut self, scores: Result<Scores>) -> ferrolab_core::Result<BTreeMap<String, f64>> {
        let s = scores.map_err(|e| self.fail(e))?;
        self.curve.push((s.val, s.test));
        Ok([
            (VAL_ACCURACY.to_string(), s.val),
            ("test_accuracy".to_string(), s.test),
        ]
        .into())
    }

    /// The outcome: the final model's scores, and the first epoch of best validation accuracy.
    fn outcome(
        &self,
        seconds: f64,
        train_seconds: f64,
        memory: Option<PhaseMemory>,
    ) -> TrainOutcome {
        let (mut best_val, mut test_at_best, mut best_epoch) = (f64::NEG_INFINITY, 0.0, 0);
        for (epoch, &(val, test)) in self.curve.iter().enumerate() {
            if val > best_val {
                (best_val, test_at_best, best_epoch) = (val, test, epoch);
            }
        }
        let (val, test) = self.curve.last().copied().unwrap_or((0.0, 0.0));
        let epochs_run = self.curve.len();
        TrainOutcome {
            test_accuracy: test,
            val_accuracy: val,
            test_accuracy_at_best_val: test_at_best,
            best_val_accuracy: best_val,
            best_epoch,
            epochs_run,
            train_seconds: seconds,
            epoch_seconds: train_seconds / epochs_run.max(1) as f64,
            max_batch_nodes: self.max_batch_nodes,
            partition: None,
            curve: self.curve.clone(),
            memory,
        }
    }
}

/// Runs `step` on core's loop: `cfg.epochs` epochs at a constant learning rate, early
/// stopping on validation accuracy after `cfg.patience` epochs without improvement (the
/// final model is kept, not the best one: [`TrainOutcome`] reports both scores), the
/// training phases timed and the peak memory of each phase measured.
fn fit<S: TrainStep>(
    step: &mut S,
    state: fn(&mut S) -> &mut GcnState,
    cfg: &TrainConfig,
    label: &str,
) -> Result<TrainOutcome> {
    let trainer = Trainer {
        epochs: cfg.epochs,
        lr: cfg.lr,
        schedule: LrSchedule::Constant,
        early_stopping: cfg.patience.map(|patience| EarlyStopping {
            metric: VAL_ACCURACY.into(),
            mode: Mode::Max,
            patience,
        }),
        label: label.into(),
    };
    let mut times = PhaseTimes::default();
    let mut memory = PhaseMemoryMonitor::start();
    let summary = trainer.fit(step, &mut [&mut times, &mut memory]);
    let state = state(step);
    let summary = match summary {
        Ok(s) => s,
        Err(e) => return Err(state.error.take().unwrap_or(GraphError::Core(e))),
    };
    Ok(state.outcome(summary.seconds, times.train_seconds, memory.memory()))
}

#[cfg(test)]
mod tests {
    use super::grad::{batch_gradients, gather_gradients};
    use super::*;
    use crate::kernel::{self, values};
    use crate::models::GcnInput;
    use crate::node_data::feature_rows;
    use crate::norm::normalize;
    use crate::spmm::Propagation;
    use ferrolab_core::backend::exclusive_rng;
    use ferrolab_core::burn::module::{ModuleVisitor, Param};
    use ferrolab_core::burn::optim::GradientsParams;
    use ferrolab_core::burn::prelude::*;
    use ferrolab_core::sparse::SparseAdj;
    use ferrolab_data::{CsbmConfig, Features, generate_csbm};

    fn synthetic() -> NodeData {
        let g = generate_csbm(&CsbmConfig {
            nodes: 400,
            classes: 3,
            avg_degree: 8.0,
            p_in_ratio: 0.85,
            features: 16,
            feature_signal: 0.4,
            feature_noise: 1.0,
            seed: 3,
        })
        .unwrap()
        .to_graph_data();
        let split = g.seeded_per_class_split(10, 30, 1).unwrap();
        NodeData::from_graph_data(&g, Some(split), false).unwrap()
    }

    fn quick() -> TrainConfig {
        TrainConfig {
            epochs: 60,
            ..Default::default()
        }
    }

    /// Every parameter's gradient, in visiting order.
    struct Collect<'a> {
        grads: &'a GradientsParams,
        out: Vec<Vec<f32>>,
    }

    impl ModuleVisitor for Collect<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push(
                self.grads
                    .get::<D>(param.id)
                    .map(values)
                    .unwrap_or_default(),
            );
        }
    }

    fn flat_grads(model: &Gcn, grads: &GradientsParams) -> Vec<Vec<f32>> {
        let mut c = Collect {
            grads,
            out: Vec::new(),
        };
        model.visit(&mut c);
        c.out
    }

    #[test]
    fn csr_gradients_equal_the_gather_scatter_path() {
        let _serial = crate::serial_test();
        let data = synthetic();
        let _rng = exclusive_rng();
        let tdev = train_device();
        let nodes: Vec<usize> = (0..data.num_nodes()).collect();
        let dense = feature_rows(&data.features, &nodes, None, &tdev).unwrap();
        let Features::Dense {
            cols, values: xv, ..
        } = &data.features
        else {
            panic!("the generator makes dense features")
        };
        // The same features with the small entries dropped, as sparse input.
        let (mut indptr, mut indices, mut vals) = (vec![0], Vec::new(), Vec::new());
        for row in xv.chunks(*cols) {
            for (c, &v) in row.iter().enumerate() {
                if v > 0.5 {
                    indices.push(c as u32);
                    vals.push(v);
                }
            }
            indptr.push(indices.len());
        }
        let n = data.num_nodes();
        let sparse = GcnInput::Sparse(Box::new(
            SparseAdj::from_csr(n, *cols, &indptr, &indices, Some(&vals), &tdev).unwrap(),
        ));
        for (norm, cluster_layer, x, dropout) in [
            (
                Normalization::DiagEnhanced { lambda: 1.0 },
                true,
                &dense,
                0.0,
            ),
            (
                Normalization::DiagEnhanced { lambda: 1.0 },
                true,
                &dense,
                0.3,
            ),
            (Normalization::Symmetric, false, &sparse, 0.0),
            (Normalization::Row, true, &sparse, 0.5),
        ] {
            let cfg = TrainConfig {
                layers: 3,
                hidden: 8,
                dropout,
                cluster_gcn_layer: cluster_layer,
                ..Default::default()
            };
            let model = cfg.model(data.num_features(), data.num_classes).init(&tdev);
            let w = normalize(&data.graph, norm);
            let (t, l) = (&data.split.train, &data.labels);
            let sparse_adj = w.to_sparse_adj(&tdev).unwrap();
            // Parameters initialise lazily, drawing from the generator on first use: do that
            // before seeding, so that both paths draw the same dropout masks.
            let _ = gather_gradients(&model, &sparse_adj, x, t, l);
            seed_backend(11);
            let (old_loss, old) = gather_gradients(&model, &sparse_adj, x, t, l);
            seed_backend(11);
            let (new_loss, new) = batch_gradients(&model, &Propagation::new(w), x, t, l);
            let mut results = vec![(new_loss, new, 1e-6)];
            if let GcnInput::Dense(xd) = x {
                seed_backend(11);
                let n = data.num_nodes();
                let (loss, grads) = kernel::forward_backward(
                    &model,
                    &Propagation::new(normalize(&data.graph, norm)),
                    &values((**xd).clone()),
                    *cols,
                    t,
                    l,
                    // burn's own masks, drawn as its dropout layers draw them.
                    &mut |d| {
                        (dropout > 0.0).then(|| {
                            values(Tensor::<2>::random(
                                [n, d],
                                ferrolab_core::burn::tensor::Distribution::Bernoulli(1.0 - dropout),
                                &ferrolab_core::backend::device(),
                            ))
                        })
                    },
                );
                // Products are summed in another order than burn's: rounding, not more.
                results.push((loss, grads, 1e-5));
            }
            let old = flat_grads(&model, &old);
            for (loss, grads, tol) in results {
                assert!(
                    (old_loss - loss).abs() <= tol * old_loss.abs(),
                    "{old_loss} {loss} ({norm:?}, dropout {dropout})"
                );
                let new = flat_grads(&model, &grads);
                assert_eq!(old.len(), new.len());
                for (a, b) in old.iter().zip(&new) {
                    assert!(!a.is_empty() && a.len() == b.len());
                    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
                    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                    assert!(
                        diff <= tol * scale.max(1e-3),
                        "{diff} vs {scale} ({norm:?})"
                    );
                }
            }
        }
    }

    #[test]
    fn outcome_selects_first_best_validation_epoch_and_early_stopping_uses_patience() {
        let _serial = crate::serial_test();
        let mut s = GcnState::init(&quick(), 4, 2, 0);
        s.curve = vec![(0.5, 0.4), (0.7, 0.6), (0.7, 0.9), (0.6, 0.8)];
        s.max_batch_nodes = 10;
        let o = s.outcome(1.0, 2.0, None);
        assert_eq!((o.best_epoch, o.test_accuracy_at_best_val), (1, 0.6));
        assert_eq!(
            (o.epochs_run, o.epoch_seconds, o.max_batch_nodes),
            (4, 0.5, 10)
        );
        assert_eq!((o.val_accuracy, o.test_accuracy), (0.6, 0.8));
        let data = synthetic();
        let cfg = TrainConfig {
            patience: Some(3),
            lr: 1e-9,
            ..quick()
        };
        // With a learning rate that changes nothing, validation never improves after epoch 0.
        assert_eq!(train_full_batch(&data, &cfg, 0).unwrap().epochs_run, 4);
    }

    #[test]
    fn bad_parameters_are_rejected_before_training() {
        let _serial = crate::serial_test();
        let data = synthetic();
        let bad = TrainConfig {
            dropout: 1.0,
            ..quick()
        };
        assert!(matches!(
            train_full_batch(&data, &bad, 0),
            Err(GraphError::Config {
                name: "dropout",
                ..
            })
        ));
        let cluster = ClusterConfig {
            parts: 4,
            parts_per_batch: 5,
            ..Default::default()
        };
        assert!(train_cluster_gcn(&data, &quick(), &cluster, 0).is_err());
    }

    #[test]
    fn both_methods_learn_a_synthetic_graph_deterministically() {
        let _serial = crate::serial_test();
        let data = synthetic();
        let full = train_full_batch(&data, &quick(), 7).unwrap();
        let cluster = ClusterConfig {
            parts: 8,
            parts_per_batch: 2,
            ..Default::default()
        };
        let cg = train_cluster_gcn(&data, &quick(), &cluster, 7).unwrap();
        // Three classes: chance is 1/3.
        assert!(full.test_accuracy > 0.7, "{full:?}");
        assert!(cg.test_accuracy_at_best_val > 0.7, "{cg:?}");
        // Two of eight clusters of 50; METIS allows its default 3% imbalance per cluster.
        assert!(cg.max_batch_nodes <= 103, "{cg:?}");
        let p = cg.partition.as_ref().unwrap();
        let random = ClusterConfig {
            method: PartitionMethod::Random,
            ..cluster.clone()
        };
        let rg = train_cluster_gcn(&data, &quick(), &random, 7).unwrap();
        let r = rg.partition.as_ref().unwrap();
        // Eight random clusters cut 7/8 of the edges; METIS far fewer on a clustered graph.
        assert!(r.edge_cut > 0.8 && p.edge_cut < 0.6, "{p:?} {r:?}");
        assert!(rg.test_accuracy_at_best_val > 0.7, "{rg:?}");
        let again = train_cluster_gcn(&data, &quick(), &cluster, 7).unwrap();
        assert_eq!(
            (again.test_accuracy, again.best_epoch),
            (cg.test_accuracy, cg.best_epoch)
        );
    }
}
