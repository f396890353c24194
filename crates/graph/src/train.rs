//! Full-batch GCN training (Kipf & Welling) and Cluster-GCN training (Chiang et al., Alg. 1)
//! with METIS or random partitions, both evaluated on the full graph layer by layer
//! ([`Gcn::infer_layerwise`]) so that evaluation stays within the training memory budget.
//!
//! The partition is the expensive, cacheable step ([`partition_cached`], PyG's
//! `ClusterData`); drawing `q` clusters per batch each epoch is cheap
//! ([`ClusterPartition::batches`], PyG's `ClusterLoader`).

use std::path::Path;
use std::time::Instant;

use ferrolab_core::backend::{device, exclusive_rng, seed_backend, train_device};
use ferrolab_core::burn::module::{ModuleVisitor, Param};
use ferrolab_core::burn::nn::loss::CrossEntropyLossConfig;
use ferrolab_core::burn::optim::decay::WeightDecayConfig;
use ferrolab_core::burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::Gradients;
use ferrolab_core::nn::int_tensor;
use ferrolab_core::sparse::SparseAdj;
use ferrolab_data::{CsrGraphData, Features, Split};
use rand::RngExt;
use rand::rngs::StdRng;
use std::path::PathBuf;

use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};
use crate::kernel::{self, values};
use crate::models::{Gcn, GcnConfig, GcnInput};
use crate::norm::{Normalization, WeightedCsr, normalize};
use crate::partition::{CacheStatus, ClusterPartition, PartitionMethod, partition_cached};
use crate::spmm::Propagation;
use crate::store::ClusterStore;
use rand::seq::SliceRandom;

/// A node-classification data set ready for training: symmetric adjacency without self loops,
/// features (sparse bag-of-words rows, or dense), labels and a split.
#[derive(Debug, Clone)]
pub struct NodeData {
    pub graph: CsrGraph,
    /// `num_nodes × num_features`; sparse rows are row-normalised when asked.
    pub features: Features,
    pub labels: Vec<usize>,
    pub num_classes: usize,
    pub split: Split,
}

impl NodeData {
    /// Symmetrises the adjacency and, with `row_normalize`, scales each feature row to sum 1
    /// (Kipf & Welling's preprocessing of non-negative bag-of-words; it makes no sense for
    /// signed features). `split` overrides the file's split; one of the two must exist.
    pub fn from_graph_data(
        g: &CsrGraphData,
        split: Option<Split>,
        row_normalize: bool,
    ) -> Result<Self> {
        let split = split.or_else(|| g.split.clone()).ok_or_else(|| {
            GraphError::Invalid("the graph has no train/val/test split and none was given".into())
        })?;
        let n = g.num_nodes;
        if let Some(bad) = [&split.train, &split.val, &split.test]
            .iter()
            .flat_map(|s| s.iter())
            .find(|&&i| i >= n)
        {
            return Err(GraphError::Invalid(format!(
                "split node {bad} out of range for {n} nodes"
            )));
        }
        if g.labels.len() != n || g.features.num_rows() != n {
            return Err(GraphError::Invalid(format!(
                "{n} nodes but {} labels and {} feature rows",
                g.labels.len(),
                g.features.num_rows()
            )));
        }
        let graph = CsrGraph::from_data(&g.symmetrize())?;
        // Bag-of-words features stay sparse (Cora: 1.3% non-zero); dense ones (the generator's)
        // stay dense, since CSR would double their memory.
        let mut features = g.features.clone();
        if let (Features::Sparse(m), true) = (&mut features, row_normalize) {
            for r in 0..m.rows {
                let (a, b) = (m.indptr[r], m.indptr[r + 1]);
                let row = &mut m.data[a..b];
                let s: f32 = row.iter().sum();
                // An all-zero row stays zero rather than becoming NaN.
                if s != 0.0 {
                    row.iter_mut().for_each(|v| *v /= s);
                }
            }
        }
        // Sparse storage of mostly non-zero features (an exported generated graph) costs twice
        // the memory and turns matrix products into gathers: densify.
        if let Features::Sparse(m) = &features
            && m.rows > 0
            && m.nnz() * 2 > m.rows * m.cols
        {
            let mut values = vec![0f32; m.rows * m.cols];
            for (r, row) in values.chunks_mut(m.cols.max(1)).enumerate() {
                m.row_dense(r, row);
            }
            features = Features::Dense {
                rows: m.rows,
                cols: m.cols,
                values,
            };
        }
        if let Features::Dense { values, .. } = &features
            && let Some(i) = values.iter().position(|v| !v.is_finite())
        {
            return Err(GraphError::Invalid(format!(
                "feature value {} of node {} is not finite",
                values[i],
                i / features.num_features().max(1)
            )));
        }
        if let Features::Sparse(m) = &features
            && let Some(i) = m.data.iter().position(|v| !v.is_finite())
        {
            return Err(GraphError::Invalid(format!(
                "stored feature value #{i} ({}) is not finite",
                m.data[i]
            )));
        }
        Ok(NodeData {
            graph,
            features,
            labels: g.labels.iter().map(|&l| l as usize).collect(),
            num_classes: g.num_classes,
            split,
        })
    }

    /// Cora in Planetoid order with its 140/500/1000 split (`graphs/cora_planetoid.npz` under
    /// the data root: `data_dir`, else `$FERROLAB_DATA`, else `../shared/data`).
    pub fn load_cora(data_dir: Option<&Path>) -> Result<Self> {
        let path = ferrolab_data::find_dataset(data_dir, "cora_planetoid")?;
        Self::from_graph_data(&ferrolab_data::load_npz_graph(&path)?, None, true)
    }

    pub fn num_nodes(&self) -> usize {
        self.graph.num_nodes()
    }

    pub fn num_features(&self) -> usize {
        self.features.num_features()
    }

    /// Resident bytes of the adjacency, features and labels (what any method must hold).
    pub fn resident_bytes(&self) -> usize {
        let f = match &self.features {
            Features::Sparse(m) => m.indptr.len() * 8 + m.indices.len() * 8,
            Features::Dense { values, .. } => values.len() * 4,
        };
        self.graph.indptr().len() * 8 + self.graph.num_edges() * 4 + f + self.labels.len() * 8
    }
}

/// The feature rows `nodes` on `dev`: a sparse matrix for bag-of-words features, a dense
/// tensor otherwise. With `dropout` on sparse rows, each stored value is zeroed with
/// probability `p` and the rest scaled by `1 / (1 - p)` (Kipf & Welling's sparse dropout of
/// the input); dense rows get the model's own dropout instead.
fn feature_rows(
    f: &Features,
    nodes: &[usize],
    dropout: Option<(f64, &mut StdRng)>,
    dev: &Device,
) -> Result<GcnInput> {
    let f = match f {
        Features::Sparse(m) => m,
        Features::Dense { cols, values, .. } => {
            let mut block = Vec::with_capacity(nodes.len() * cols);
            for &r in nodes {
                block.extend_from_slice(&values[r * cols..(r + 1) * cols]);
            }
            return Ok(GcnInput::Dense(Box::new(Tensor::from_data(
                TensorData::new(block, [nodes.len(), *cols]),
                dev,
            ))));
        }
    };
    let mut indptr = Vec::with_capacity(nodes.len() + 1);
    indptr.push(0);
    let mut indices = Vec::new();
    let mut values = Vec::new();
    let (p, mut rng) = match dropout {
        Some((p, rng)) if p > 0.0 => (p, Some(rng)),
        _ => (0.0, None),
    };
    let scale = (1.0 / (1.0 - p)) as f32;
    for &r in nodes {
        let (idx, val) = f.row(r);
        for (&c, &v) in idx.iter().zip(val) {
            if let Some(rng) = rng.as_mut() {
                if rng.random::<f64>() < p {
                    continue;
                }
                indices.push(c);
                values.push(v * scale);
            } else {
                indices.push(c);
                values.push(v);
            }
        }
        indptr.push(indices.len());
    }
    let m = SparseAdj::from_csr(nodes.len(), f.cols, &indptr, &indices, Some(&values), dev)
        .map_err(GraphError::Invalid)?;
    Ok(GcnInput::Sparse(Box::new(m)))
}

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

    fn model(&self, d_in: usize, classes: usize) -> GcnConfig {
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

/// Peak resident memory (MiB) of training and of evaluation, measured separately: the
/// kernel's high-water mark is reset before each phase and read after it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PhaseMemory {
    /// Resident memory when training started (the loaded graph, the model, the runtime).
    pub before_mb: f64,
    /// Highest peak over the training phases of all epochs.
    pub train_peak_mb: f64,
    /// Highest peak over the evaluations.
    pub eval_peak_mb: f64,
}

impl PhaseMemory {
    fn start() -> Option<Self> {
        ferrolab_core::resources::release_free_memory();
        let before_mb = ferrolab_core::resources::current_rss_mb()?;
        Some(PhaseMemory {
            before_mb,
            ..Default::default()
        })
    }

    /// Runs one phase and folds its peak into `train` or `eval`.
    fn phase<T>(this: &mut Option<Self>, train: bool, f: impl FnOnce() -> T) -> T {
        if this.is_some() {
            ferrolab_core::resources::release_free_memory();
        }
        let ok = this.is_some() && ferrolab_core::resources::reset_peak_rss();
        let out = f();
        if let (true, Some(m), Some(peak)) =
            (ok, this.as_mut(), ferrolab_core::resources::peak_rss_mb())
        {
            let slot = if train {
                &mut m.train_peak_mb
            } else {
                &mut m.eval_peak_mb
            };
            *slot = slot.max(peak);
        }
        out
    }
}

/// Rows per block of layer-wise evaluation: large enough for efficient matrix products,
/// small next to the `n × d` activations a layer must hold anyway.
const EVAL_CHUNK: usize = 16_384;

/// What evaluation on the full graph needs: the normalised adjacency as CSR arrays (not as
/// device tensors, see [`Gcn::infer_layerwise`]).
struct FullGraph {
    adj: WeightedCsr,
}

impl FullGraph {
    fn new(data: &NodeData, norm: Normalization) -> Self {
        FullGraph {
            adj: normalize(&data.graph, norm),
        }
    }
}

/// Class predictions for every node, computed layer by layer in bounded memory.
fn predict(model: &Gcn, g: &FullGraph, data: &NodeData) -> Vec<usize> {
    let dev = device();
    let model = model.valid();
    let x_times = |rows: std::ops::Range<usize>, w: Tensor<2>| -> Tensor<2> {
        let nodes: Vec<usize> = rows.collect();
        match feature_rows(&data.features, &nodes, None, &dev) {
            Ok(GcnInput::Sparse(x)) => x.propagate(w),
            Ok(GcnInput::Dense(x)) => x.matmul(w),
            // The same rows were read for training; failure here is a bug, not bad input.
            Err(e) => panic!("feature rows of checked data: {e}"),
        }
    };
    let logits = model.infer_layerwise(&g.adj, EVAL_CHUNK, &x_times);
    let c = data.num_classes.max(1);
    logits
        .chunks(c)
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 { (i, v) } else { best }
                })
                .0
        })
        .collect()
}

fn accuracy_on(pred: &[usize], data: &NodeData, nodes: &[usize]) -> f64 {
    let p: Vec<usize> = nodes.iter().map(|&i| pred[i]).collect();
    let l: Vec<usize> = nodes.iter().map(|&i| data.labels[i]).collect();
    ferrolab_core::metrics::accuracy(&p, &l)
}

fn index_tensor(v: &[usize], dev: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    int_tensor(&v, dev)
}

/// One optimiser step on the nodes `targets` (local indices into `x`) of a (sub)graph, with
/// propagation by gather/scatter under autodiff (the full-batch baseline's textbook form).
fn step(
    model: Gcn,
    optim: &mut ModuleOptimizer,
    lr: f64,
    adj: &SparseAdj,
    x: &GcnInput,
    targets: &[usize],
    labels: &[usize],
) -> Gcn {
    let (_, grads) = gather_gradients(&model, adj, x, targets, labels);
    optim.step(lr, model, grads)
}

/// Cross-entropy on `targets` of a whole-network autodiff forward, and its gradients.
fn gather_gradients(
    model: &Gcn,
    adj: &SparseAdj,
    x: &GcnInput,
    targets: &[usize],
    labels: &[usize],
) -> (f32, GradientsParams) {
    let logits = model.forward_input(adj, x);
    let dev = logits.device();
    let loss = cross_entropy(logits, targets, labels, &dev);
    let loss_value = values(loss.clone()).first().copied().unwrap_or(f32::NAN);
    (
        loss_value,
        GradientsParams::from_grads(loss.backward(), model),
    )
}

fn cross_entropy(
    logits: Tensor<2>,
    targets: &[usize],
    labels: &[usize],
    dev: &Device,
) -> Tensor<1> {
    let logits = logits.select(0, index_tensor(targets, dev));
    let y: Vec<i64> = targets.iter().map(|&i| labels[i] as i64).collect();
    CrossEntropyLossConfig::new()
        .init(dev)
        .forward(logits, int_tensor(&y, dev))
}

/// One Cluster-GCN training batch: its propagation matrix, features, the local indices of
/// its labelled nodes and every node's label.
struct TrainBatch<'a> {
    adj: &'a Propagation,
    x: &'a GcnInput,
    targets: &'a [usize],
    labels: &'a [usize],
    /// Seeds the dropout masks of the dense-feature kernel.
    mask_seed: u64,
}

/// Cluster-GCN's optimiser step: the hand-written kernel for dense features
/// ([`kernel::dense_gradients`]), else [`batch_gradients`]; then Adam.
fn step_csr(model: Gcn, optim: &mut ModuleOptimizer, lr: f64, b: &TrainBatch<'_>) -> Gcn {
    let (_, grads) = match b.x {
        GcnInput::Dense(x) => kernel::dense_gradients(
            &model,
            b.adj,
            &values((**x).clone()),
            x.dims()[1],
            b.targets,
            b.labels,
            b.mask_seed,
        ),
        GcnInput::Sparse(_) => batch_gradients(&model, b.adj, b.x, b.targets, b.labels),
    };
    optim.step(lr, model, grads)
}

/// Cross-entropy on `targets` and the parameter gradients of one batch, with every `Â`
/// product done by the CSR kernel ([`Propagation`]) outside autodiff: the same values as
/// [`step`]'s gather/scatter, without its per-entry messages.
///
/// burn cannot record a user-defined op, so the network is cut at each propagation into
/// burn segments: segment 0 computes layer 0's `(X W_n, X W_s)`; segment `l` starts from
/// leaves `P = Â (H W_n)` and `S = H W_s` of layer `l - 1` and ends with layer `l`'s
/// products (the last one with the loss). The backward runs the segments in reverse: a
/// segment's leaf gradient `dP` becomes `Âᵀ dP`, the gradient of the previous segment's
/// `H W_n`, which is backpropagated there through the surrogate `sum(H W_n ⊙ Âᵀ dP) + sum(S ⊙ dS)`.
/// Every parameter lives in exactly one segment, but the merge adds up in case one does not.
fn batch_gradients(
    model: &Gcn,
    adj: &Propagation,
    x: &GcnInput,
    targets: &[usize],
    labels: &[usize],
) -> (f32, GradientsParams) {
    let layers = model.num_layers();
    // Per layer: its products before propagation (outputs of the previous segment) and the
    // leaves that stand for them in the next.
    let mut products = Vec::with_capacity(layers);
    let mut leaves = Vec::with_capacity(layers);
    let mut next = Some(model.input_pre(x));
    let mut logits = None;
    for l in 0..layers {
        let Some((hw, self_part)) = next.take() else {
            break;
        };
        let ([n, d], dev) = (hw.dims(), hw.device());
        let p = adj.apply(&values(hw.clone()), d);
        let p = Tensor::<2>::from_data(TensorData::new(p, [n, d]), &dev).require_grad();
        let s = self_part.clone().map(|s| s.detach().require_grad());
        let out = model.layer_post(l, p.clone(), s.clone());
        products.push((hw, self_part));
        leaves.push((p, s));
        if l + 1 < layers {
            next = Some(model.layer_pre(l + 1, out));
        } else {
            logits = Some(out);
        }
    }
    let Some(logits) = logits else {
        return (0.0, GradientsParams::new());
    };
    let dev = logits.device();
    let loss = cross_entropy(logits, targets, labels, &dev);
    let loss_value = values(loss.clone()).first().copied().unwrap_or(f32::NAN);
    let mut segments = Vec::with_capacity(layers + 1);
    let mut grads = Some(loss.backward());
    for ((hw, self_part), (p, s)) in products.iter().zip(&leaves).rev() {
        let Some(mut g) = grads.take() else { break };
        let mut surrogate: Option<Tensor<1>> = None;
        if let Some(dp) = p.grad_remove(&mut g) {
            let [n, d] = dp.dims();
            let dhw = adj.apply_t(&values(dp), d);
            let dhw = Tensor::<2>::from_data(TensorData::new(dhw, [n, d]), &dev);
            surrogate = Some((hw.clone() * dhw).sum());
        }
        if let (Some(s), Some(self_part)) = (s, self_part)
            && let Some(ds) = s.grad_remove(&mut g)
        {
            // `ds` has no autodiff association: a constant in this product.
            let t = (self_part.clone() * ds).sum();
            surrogate = Some(match surrogate {
                Some(a) => a + t,
                None => t,
            });
        }
        segments.push(g);
        grads = surrogate.filter(Tensor::is_tracked).map(|t| t.backward());
    }
    segments.extend(grads);
    let mut merge = MergeGrads {
        segments: &mut segments,
        out: GradientsParams::new(),
    };
    model.visit(&mut merge);
    (loss_value, merge.out)
}

/// Gathers each parameter's gradient from the segments' backward passes, summing where a
/// parameter appears in several.
struct MergeGrads<'a> {
    segments: &'a mut [Gradients],
    out: GradientsParams,
}

impl ModuleVisitor for MergeGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let t = param.val();
        let total = self
            .segments
            .iter_mut()
            .filter_map(|g| t.grad_remove(g))
            .reduce(|a, b| a + b);
        if let Some(total) = total {
            self.out.register(param.id, total);
        }
    }
}

/// Tracks the best validation accuracy and decides early stopping.
struct Monitor {
    best_val: f64,
    test_at_best: f64,
    best_epoch: usize,
    patience: Option<usize>,
    curve: Vec<(f64, f64)>,
    train_seconds: f64,
    memory: Option<PhaseMemory>,
}

impl Monitor {
    fn new(patience: Option<usize>) -> Self {
        Monitor {
            best_val: f64::NEG_INFINITY,
            test_at_best: 0.0,
            best_epoch: 0,
            patience,
            curve: Vec::new(),
            train_seconds: 0.0,
            memory: PhaseMemory::start(),
        }
    }

    /// Records an epoch; returns true when training should stop.
    fn record(&mut self, epoch: usize, val: f64, test: f64) -> bool {
        self.curve.push((val, test));
        if val > self.best_val {
            (self.best_val, self.test_at_best, self.best_epoch) = (val, test, epoch);
        }
        self.patience.is_some_and(|p| epoch - self.best_epoch >= p)
    }

    fn outcome(&self, seconds: f64, max_batch_nodes: usize) -> TrainOutcome {
        let (val, test) = self.curve.last().copied().unwrap_or((0.0, 0.0));
        let epochs_run = self.curve.len();
        TrainOutcome {
            test_accuracy: test,
            val_accuracy: val,
            test_accuracy_at_best_val: self.test_at_best,
            best_val_accuracy: self.best_val,
            best_epoch: self.best_epoch,
            epochs_run,
            train_seconds: seconds,
            epoch_seconds: self.train_seconds / epochs_run.max(1) as f64,
            max_batch_nodes,
            partition: None,
            curve: self.curve.clone(),
            memory: self.memory,
        }
    }
}

/// A freshly seeded model for `d_in` features and `classes` classes, and its optimiser.
fn init(cfg: &TrainConfig, d_in: usize, classes: usize, seed: u64) -> (Gcn, ModuleOptimizer) {
    seed_backend(ferrolab_core::seed::derive(seed, "init"));
    let model = cfg.model(d_in, classes).init(&train_device());
    let optim = AdamConfig::new()
        .with_weight_decay(Some(WeightDecayConfig::new(cfg.weight_decay)))
        .init();
    (model, optim)
}

/// Full-batch GCN: every epoch one step on all training nodes with the symmetric
/// normalisation of the whole graph (Kipf & Welling).
pub fn train_full_batch(data: &NodeData, cfg: &TrainConfig, seed: u64) -> Result<TrainOutcome> {
    cfg.validate()?;
    let _rng = exclusive_rng();
    let tdev = train_device();
    let (mut model, mut optim) = init(cfg, data.num_features(), data.num_classes, seed);
    let adj = normalize(&data.graph, Normalization::Symmetric).to_sparse_adj(&tdev)?;
    let all: Vec<usize> = (0..data.num_nodes()).collect();
    let mut drop_rng = ferrolab_core::seed::rng(seed, "dropout");
    let mut monitor = Monitor::new(cfg.patience);
    let start = Instant::now();
    for epoch in 0..cfg.epochs {
        let t = Instant::now();
        model = PhaseMemory::phase(&mut monitor.memory, true, || -> Result<Gcn> {
            let x = feature_rows(
                &data.features,
                &all,
                Some((cfg.dropout, &mut drop_rng)),
                &tdev,
            )?;
            Ok(step(
                model,
                &mut optim,
                cfg.lr,
                &adj,
                &x,
                &data.split.train,
                &data.labels,
            ))
        })?;
        monitor.train_seconds += t.elapsed().as_secs_f64();
        if evaluate_epoch(&model, Normalization::Symmetric, data, &mut monitor, epoch) {
            break;
        }
    }
    Ok(monitor.outcome(start.elapsed().as_secs_f64(), data.num_nodes()))
}

/// Scores the model on the full graph after `epoch` and tells whether early stopping ends
/// training.
fn evaluate_epoch(
    model: &Gcn,
    norm: Normalization,
    data: &NodeData,
    monitor: &mut Monitor,
    epoch: usize,
) -> bool {
    let mut memory = monitor.memory.take();
    // The normalised whole graph is rebuilt for each evaluation (O(edges), small next to the
    // layer products) rather than held through training, where it would count against the
    // bounded training memory.
    let pred = PhaseMemory::phase(&mut memory, false, || {
        predict(model, &FullGraph::new(data, norm), data)
    });
    monitor.memory = memory;
    let val = accuracy_on(&pred, data, &data.split.val);
    let test = accuracy_on(&pred, data, &data.split.test);
    monitor.record(epoch, val, test)
}

/// Cluster-GCN (Alg. 1): each step trains on the subgraph induced by `q` clusters (edges
/// between them restored), normalised on that subgraph; evaluation uses the full graph with
/// the same normalisation.
pub fn train_cluster_gcn(
    data: &NodeData,
    cfg: &TrainConfig,
    cluster: &ClusterConfig,
    seed: u64,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let (partition, info) = partition_with_info(data, cluster)?;
    let mut out = train_on_partition(data, cfg, cluster, &partition, seed)?;
    out.partition = Some(info);
    Ok(out)
}

/// The partition `cluster` asks for (from the cache when valid), and how it was obtained.
pub fn partition_with_info(
    data: &NodeData,
    cluster: &ClusterConfig,
) -> Result<(ClusterPartition, PartitionInfo)> {
    cluster.validate(data.num_nodes())?;
    let t = Instant::now();
    let (partition, cache) = partition_cached(
        &data.graph,
        cluster.method,
        cluster.parts,
        cluster.partition_seed,
        cluster.cache_dir.as_deref(),
    )?;
    if let CacheStatus::Rebuilt(path, why) = &cache {
        eprintln!("partition cache {}: {why}; rebuilt", path.display());
    }
    let info = PartitionInfo {
        method: cluster.method,
        edge_cut: partition.edge_cut_fraction(&data.graph),
        seconds: t.elapsed().as_secs_f64(),
        cache,
    };
    Ok((partition, info))
}

/// Cluster-GCN's training loop on a given partition.
pub fn train_on_partition(
    data: &NodeData,
    cfg: &TrainConfig,
    cluster: &ClusterConfig,
    partition: &ClusterPartition,
    seed: u64,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    cluster.validate(data.num_nodes())?;
    let _rng = exclusive_rng();
    let tdev = train_device();
    let mut batch_rng = ferrolab_core::seed::rng(seed, "batches");
    let (mut model, mut optim) = init(cfg, data.num_features(), data.num_classes, seed);
    let mut drop_rng = ferrolab_core::seed::rng(seed, "dropout");
    let mut is_train = vec![false; data.num_nodes()];
    for &i in &data.split.train {
        is_train[i] = true;
    }
    let mut monitor = Monitor::new(cfg.patience);
    let mut max_batch_nodes = 0;
    let start = Instant::now();
    for epoch in 0..cfg.epochs {
        let t = Instant::now();
        let mut memory = monitor.memory.take();
        model = PhaseMemory::phase(&mut memory, true, || -> Result<Gcn> {
            for nodes in partition.batches(cluster.parts_per_batch, &mut batch_rng) {
                let (sub, global) = data.graph.induced_subgraph(&nodes)?;
                let targets: Vec<usize> =
                    (0..global.len()).filter(|&i| is_train[global[i]]).collect();
                // A batch without labelled nodes has no loss to follow.
                if targets.is_empty() {
                    continue;
                }
                max_batch_nodes = max_batch_nodes.max(global.len());
                let labels: Vec<usize> = global.iter().map(|&g| data.labels[g]).collect();
                let adj = Propagation::new(normalize(&sub, cluster.norm));
                let x = feature_rows(
                    &data.features,
                    &global,
                    Some((cfg.dropout, &mut drop_rng)),
                    &tdev,
                )?;
                let batch = TrainBatch {
                    adj: &adj,
                    x: &x,
                    targets: &targets,
                    labels: &labels,
                    mask_seed: drop_rng.random::<u64>(),
                };
                model = step_csr(model, &mut optim, cfg.lr, &batch);
            }
            Ok(model)
        })?;
        monitor.memory = memory;
        monitor.train_seconds += t.elapsed().as_secs_f64();
        if evaluate_epoch(&model, cluster.norm, data, &mut monitor, epoch) {
            break;
        }
    }
    Ok(monitor.outcome(start.elapsed().as_secs_f64(), max_batch_nodes))
}

/// Cluster-GCN trained from a [`ClusterStore`] on disk: each step reads its `q` clusters,
/// so the process holds the model and one batch, never the graph. Evaluation streams the
/// store layer by layer ([`Gcn::infer_layerwise_blocks`]) and holds `n × d` activations.
pub fn train_from_store(
    store: &ClusterStore,
    cfg: &TrainConfig,
    cluster: &ClusterConfig,
    seed: u64,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    if cluster.parts_per_batch == 0 || cluster.parts_per_batch > store.num_clusters() {
        return Err(GraphError::config(
            "parts_per_batch",
            format!(
                "{} is not in 1..={}",
                cluster.parts_per_batch,
                store.num_clusters()
            ),
        ));
    }
    let _rng = exclusive_rng();
    let tdev = train_device();
    let mut batch_rng = ferrolab_core::seed::rng(seed, "batches");
    let (mut model, mut optim) = init(cfg, store.num_features(), store.num_classes(), seed);
    let mut drop_rng = ferrolab_core::seed::rng(seed, "dropout");
    let p = cfg.dropout;
    let scale = (1.0 / (1.0 - p)) as f32;
    let mut monitor = Monitor::new(cfg.patience);
    let mut max_batch_nodes = 0;
    let start = Instant::now();
    for epoch in 0..cfg.epochs {
        let t = Instant::now();
        let mut memory = monitor.memory.take();
        model = PhaseMemory::phase(&mut memory, true, || -> Result<Gcn> {
            let mut order: Vec<usize> = (0..store.num_clusters()).collect();
            order.shuffle(&mut batch_rng);
            for group in order.chunks(cluster.parts_per_batch) {
                let mut drop = || p > 0.0 && drop_rng.random::<f64>() < p;
                let b = store.batch(group, &mut drop, scale, &tdev)?;
                if b.targets.is_empty() {
                    continue;
                }
                max_batch_nodes = max_batch_nodes.max(b.labels.len());
                let adj = Propagation::new(normalize(&b.graph, cluster.norm));
                let batch = TrainBatch {
                    adj: &adj,
                    x: &b.features,
                    targets: &b.targets,
                    labels: &b.labels,
                    mask_seed: drop_rng.random::<u64>(),
                };
                model = step_csr(model, &mut optim, cfg.lr, &batch);
            }
            Ok(model)
        })?;
        monitor.memory = memory;
        monitor.train_seconds += t.elapsed().as_secs_f64();
        let mut memory = monitor.memory.take();
        let scores = PhaseMemory::phase(&mut memory, false, || -> Result<(f64, f64)> {
            let logits = model
                .valid()
                .infer_layerwise_blocks(&store.layer_source(cluster.norm)?)?;
            let (labels, roles) = store.labels_and_roles()?;
            let c = store.num_classes().max(1);
            let (mut hit, mut count) = ([0usize; 4], [0usize; 4]);
            for ((row, &l), &r) in logits.chunks(c).zip(&labels).zip(&roles) {
                let pred = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    )
                    .0;
                let r = usize::from(r.min(3));
                count[r] += 1;
                hit[r] += usize::from(pred == usize::from(l));
            }
            let acc = |r: usize| hit[r] as f64 / count[r].max(1) as f64;
            Ok((acc(2), acc(3)))
        })?;
        monitor.memory = memory;
        if monitor.record(epoch, scores.0, scores.1) {
            break;
        }
    }
    Ok(monitor.outcome(start.elapsed().as_secs_f64(), max_batch_nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_data::{CsbmConfig, generate_csbm};

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
    fn monitor_selects_first_best_validation_epoch_and_stops_on_patience() {
        let mut m = Monitor::new(Some(2));
        assert!(!m.record(0, 0.5, 0.4));
        assert!(!m.record(1, 0.7, 0.6));
        assert!(!m.record(2, 0.7, 0.9));
        assert!(m.record(3, 0.6, 0.8));
        let o = m.outcome(1.0, 10);
        assert_eq!((o.best_epoch, o.test_accuracy_at_best_val), (1, 0.6));
        assert_eq!(o.epochs_run, 4);
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
    fn mostly_nonzero_sparse_features_are_densified_and_nan_is_refused() {
        let mut g = generate_csbm(&CsbmConfig {
            nodes: 40,
            features: 3,
            avg_degree: 4.0,
            ..Default::default()
        })
        .unwrap()
        .to_graph_data();
        let Features::Dense { rows, cols, values } = g.features.clone() else {
            panic!("the generator makes dense features")
        };
        g.features = Features::Sparse(ferrolab_data::CsrMatrix {
            rows,
            cols,
            indptr: (0..=rows).map(|r| r * cols).collect(),
            indices: (0..rows * cols).map(|k| (k % cols) as u32).collect(),
            data: values.clone(),
        });
        let split = g.seeded_per_class_split(2, 2, 0).unwrap();
        let d = NodeData::from_graph_data(&g, Some(split.clone()), false).unwrap();
        assert!(matches!(&d.features, Features::Dense { values: v, .. } if *v == values));
        if let Features::Sparse(m) = &mut g.features {
            m.data[5] = f32::NAN;
        }
        let e = NodeData::from_graph_data(&g, Some(split), false).unwrap_err();
        assert!(e.to_string().contains("not finite"), "{e}");
    }

    #[test]
    fn bad_parameters_are_rejected_before_training() {
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
        let mut g = generate_csbm(&CsbmConfig {
            nodes: 50,
            avg_degree: 4.0,
            ..Default::default()
        })
        .unwrap()
        .to_graph_data();
        assert!(NodeData::from_graph_data(&g, None, false).is_err());
        g.split = Some(Split {
            train: vec![60],
            ..Default::default()
        });
        assert!(NodeData::from_graph_data(&g, None, false).is_err());
    }

    #[test]
    fn both_methods_learn_a_synthetic_graph_deterministically() {
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
