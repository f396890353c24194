//! Full-batch training of a zoo network on one graph (a whole data set or one client's
//! subgraph): [`NodeTask`] holds the graph's tensors and its labelled nodes, and runs
//! optimiser steps and evaluations; [`train_centralised`] is the early-stopped loop of the
//! centralised accuracy checks.

use ferrolab_core::burn::optim::{
    AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig,
};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::nn::{int_tensor, to_vec_f32};
use ferrolab_data::{Features, Split};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{GnnModel, GraphTensors, ZooConfig, accuracy, masked_cross_entropy};
use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};
use crate::models::GcnInput;
use crate::node_data::feature_rows;

/// Which optimiser a [`NodeTask`] steps with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimKind {
    /// Plain SGD (FS-G's default), L2 weight decay added to the gradient.
    Sgd { weight_decay: f64 },
    /// Adam (the GCN and GAT papers), L2 weight decay added to the gradient.
    Adam { weight_decay: f64 },
}

impl OptimKind {
    pub fn init(self) -> ModuleOptimizer {
        match self {
            OptimKind::Sgd { weight_decay } => SgdConfig::new()
                .with_weight_decay(
                    (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
                )
                .init(),
            OptimKind::Adam { weight_decay } => AdamConfig::new()
                .with_weight_decay(
                    (weight_decay > 0.0).then(|| WeightDecayConfig::new(weight_decay as f32)),
                )
                .init(),
        }
    }
}

/// Accuracies and losses of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalResult {
    pub train_accuracy: f64,
    pub val_accuracy: f64,
    pub test_accuracy: f64,
    pub val_loss: f64,
    pub test_loss: f64,
}

/// One graph's node-classification problem, resident on a device.
#[derive(Debug, Clone)]
pub struct NodeTask {
    pub graph: GraphTensors,
    /// Features without dropout.
    pub x: GcnInput,
    features: Features,
    nodes: Vec<usize>,
    pub labels: Vec<usize>,
    pub classes: usize,
    /// Local node ids.
    pub split: Split,
    train_idx: Tensor<1, Int>,
    train_y: Tensor<1, Int>,
}

fn idx(v: &[usize], dev: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    int_tensor(&v, dev)
}

/// Mean cross-entropy of row-major logits on `nodes`.
fn ce(logits: &[f32], c: usize, nodes: &[usize], labels: &[usize]) -> f64 {
    if nodes.is_empty() {
        return 0.0;
    }
    let mut s = 0f64;
    for &v in nodes {
        let row = &logits[v * c..(v + 1) * c];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
        s += lse - row[labels[v]] as f64;
    }
    s / nodes.len() as f64
}

impl NodeTask {
    /// `graph`'s node `i` has feature row `rows[i]` of `features` and label `labels[i]`;
    /// `split` holds local ids.
    pub fn new(
        graph: &CsrGraph,
        features: &Features,
        rows: &[usize],
        labels: Vec<usize>,
        classes: usize,
        split: Split,
        dev: &Device,
    ) -> Result<Self> {
        let n = graph.num_nodes();
        if rows.len() != n || labels.len() != n {
            return Err(GraphError::Invalid(format!(
                "{n} nodes but {} feature rows and {} labels",
                rows.len(),
                labels.len()
            )));
        }
        if let Some(&bad) = labels.iter().find(|&&l| l >= classes) {
            return Err(GraphError::Invalid(format!(
                "label {bad} out of range for {classes} classes"
            )));
        }
        if let Some(&bad) = [&split.train, &split.val, &split.test]
            .iter()
            .flat_map(|s| s.iter())
            .find(|&&v| v >= n)
        {
            return Err(GraphError::Invalid(format!(
                "split node {bad} out of range for {n} nodes"
            )));
        }
        let x = feature_rows(features, rows, None, dev)?;
        let train_y: Vec<usize> = split.train.iter().map(|&v| labels[v]).collect();
        Ok(NodeTask {
            graph: GraphTensors::new(graph, dev)?,
            x,
            features: features.clone(),
            nodes: rows.to_vec(),
            train_idx: idx(&split.train, dev),
            train_y: idx(&train_y, dev),
            labels,
            classes,
            split,
        })
    }

    pub fn num_train(&self) -> usize {
        self.split.train.len()
    }

    /// `steps` optimiser steps on the training nodes; returns the model and the mean loss.
    /// A task without training nodes returns the model unchanged.
    #[allow(clippy::too_many_arguments)]
    pub fn train_steps(
        &self,
        mut model: GnnModel,
        cfg: &ZooConfig,
        optim: &mut ModuleOptimizer,
        lr: f64,
        steps: usize,
        rng: &mut StdRng,
    ) -> (GnnModel, f64) {
        if self.split.train.is_empty() {
            return (model, 0.0);
        }
        let mut total = 0f64;
        for _ in 0..steps {
            let dropped;
            let x = if cfg.input_dropout && cfg.dropout > 0.0 {
                let dev = self.graph.device.clone();
                // Sparse rows drop stored values; dense rows get the model's mask.
                dropped =
                    match feature_rows(&self.features, &self.nodes, Some((cfg.dropout, rng)), &dev)
                    {
                        Ok(GcnInput::Dense(t)) => {
                            GcnInput::Dense(Box::new(super::dropout(*t, cfg.dropout, Some(rng))))
                        }
                        Ok(other) => other,
                        Err(_) => self.x.clone(),
                    };
                &dropped
            } else {
                &self.x
            };
            let logits = model.forward(&self.graph, x, cfg.dropout, Some(rng));
            let loss = masked_cross_entropy(logits, &self.train_idx, &self.train_y);
            total += f64::from(to_vec_f32(loss.clone())[0]);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
        }
        (model, total / steps.max(1) as f64)
    }

    /// Row-major logits `[n, classes]` without dropout.
    pub fn logits(&self, model: &GnnModel) -> Vec<f32> {
        // A federated server only evaluates: with tracked parameters it grew by a hidden
        // layer per call (see `untracked`).
        let model = super::untracked(model);
        to_vec_f32(model.forward(&self.graph, &self.x, 0.0, None))
    }

    /// Accuracy and loss on the three node sets.
    pub fn evaluate(&self, model: &GnnModel) -> EvalResult {
        let z = self.logits(model);
        let c = self.classes;
        EvalResult {
            train_accuracy: accuracy(&z, c, &self.split.train, &self.labels),
            val_accuracy: accuracy(&z, c, &self.split.val, &self.labels),
            test_accuracy: accuracy(&z, c, &self.split.test, &self.labels),
            val_loss: ce(&z, c, &self.split.val, &self.labels),
            test_loss: ce(&z, c, &self.split.test, &self.labels),
        }
    }
}

/// Result of [`train_centralised`].
#[derive(Debug, Clone, PartialEq)]
pub struct CentralisedOutcome {
    /// Evaluation at the epoch of best validation accuracy.
    pub best: EvalResult,
    pub best_epoch: usize,
    pub epochs_run: usize,
}

/// Full-batch training for up to `epochs` epochs, early-stopped when validation accuracy has
/// not improved for `patience` epochs; reports the evaluation at the best one.
pub fn train_centralised(
    task: &NodeTask,
    cfg: &ZooConfig,
    optim: OptimKind,
    lr: f64,
    epochs: usize,
    patience: usize,
    seed: u64,
) -> Result<CentralisedOutcome> {
    let dev = task.graph.device.clone();
    dev.seed(seed);
    let mut model = cfg.init(&dev)?;
    let mut opt = optim.init();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut best = task.evaluate(&model);
    let (mut best_epoch, mut since) = (0, 0);
    let mut run = 0;
    for epoch in 1..=epochs {
        let (m, loss) = task.train_steps(model, cfg, &mut opt, lr, 1, &mut rng);
        model = m;
        run = epoch;
        if !loss.is_finite() {
            return Err(GraphError::Invalid(format!(
                "training loss became {loss} at epoch {epoch} (learning rate {lr} too large?)"
            )));
        }
        let e = task.evaluate(&model);
        if e.val_accuracy > best.val_accuracy {
            best = e;
            best_epoch = epoch;
            since = 0;
        } else {
            since += 1;
            if since >= patience {
                break;
            }
        }
    }
    Ok(CentralisedOutcome {
        best,
        best_epoch,
        epochs_run: run,
    })
}
