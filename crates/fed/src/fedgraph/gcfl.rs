//! GCFL+ (Xie, Ma, Yang & Sun, *Federated Graph Classification over Non-IID Graphs*, NeurIPS
//! 2021; reference code `Oxfordblue7/GCFL`), with FedAvg, local-only and global training on
//! the same clients, for the synthetic [`families`](super::families) data set.
//!
//! Every client trains a graph-level GNN ([`GraphNet`]: its own input layer `Linear(features
//! → hidden)` (`gcfl.pre`, the reference's `pre`, never shared, so clients may read features
//! of different widths), a zoo network of [`ferrolab_graph::zoo`] for node embeddings, ReLU,
//! sum or mean pooling per graph, a hidden linear layer, dropout, a linear classifier) with
//! Adam on minibatches of its graphs, and
//! sends the update of the *shared* layers, `ΔW_i = W_i − W_cluster`. As in the reference
//! code (whose server model, `serverGIN`, holds only the GIN layers), the shared layers are
//! the message-passing ones (`gcfl.share = "gnn"`); the layers after pooling stay with each
//! client, in FedAvg as in GCFL. `gcfl.share = "all"` shares every parameter. GCFL+'s
//! server:
//!
//! - all clients start in one cluster; each cluster's shared layers move by the
//!   training-size weighted mean of its members' updates (the reference's
//!   `aggregate_clusterwise`), and each member keeps its own other layers;
//! - each client's sequence of gradient norms of its message-passing layers (GCFL+'s
//!   "gradient sequence": the norm at the last local step, `convGradsNorm` in the reference
//!   code; `gcfl.sequence = "update"` takes the norm of the round's update instead, the
//!   reference's `run_gcflplus_dWs`) grows by one per round;
//! - a cluster is bi-partitioned when its mean shared update is small but some member's is
//!   large, `‖mean_i ΔW_i‖ < ε₁` and `max_i ‖ΔW_i‖ > ε₂`, it has more than 2 members, the
//!   warm-up rounds have passed and every sequence holds `seq_length` norms: the members' last
//!   `seq_length` norms are compared by dynamic time warping ([`dtw`]), and the cluster is cut
//!   in two by a minimum cut (Stoer–Wagner, [`min_cut`]) of the similarity `max D − D`; then
//!   every sequence starts again (as the reference code resets them). Nothing stops a cut
//!   from taking off one client, in the reference code either.
//!
//! Plain GCFL (`gcfl.variant = "gcfl"`, or beside GCFL+ with `baselines.gcfl_plain`) cuts
//! on the cosine similarity of the round's shared updates, shifted by +1 as the reference's
//! `pairwise_angles` does. FedAvg is the same loop
//! with the split switched off; local only keeps every client in a cluster of its own;
//! global trains one model on all clients' training graphs, as many minibatch steps per
//! round as the federation takes together. Each client's model is evaluated on the client's
//! own validation and test graphs; the figures are the means over clients, at the round of
//! best mean validation accuracy (the reference reports the last round).
//!
//! The server's loop ([`run_clustered_on`]) talks to its clients through [`Learners`]: in
//! one process ([`run_clustered`]; the server and the clients of one run share a thread), or
//! through a fabric to client threads or `ferrolab fed client` processes over NATS
//! ([`super::gcfl_fabric`], `fed.runtime = "nats"`), bit for bit the same run. The bytes of
//! the shared layers, both ways, are counted as `server_mb` (the evaluate tasks' copies
//! down are not).

use std::collections::BTreeMap;

use ferrolab_core::backend::train_device;
use ferrolab_core::burn;
use ferrolab_core::burn::module::{ModuleVisitor, Param};
use ferrolab_core::burn::nn::{Linear, LinearConfig};
use ferrolab_core::burn::optim::{GradientsParams, ModuleOptimizer};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::activation::relu;
use ferrolab_core::nn::{float_tensor, int_tensor, to_vec_f32};
use ferrolab_core::sparse::SparseAdj;
use ferrolab_graph::CsrGraph;
use ferrolab_graph::models::GcnInput;
use ferrolab_graph::zoo::train::OptimKind;
use ferrolab_graph::zoo::{
    Arch, GnnModel, GraphTensors, WeightInit, ZooConfig, accuracy, dropout, load_params,
    masked_cross_entropy, model_params,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::json;

use super::FedGraphError;
use super::config::FedGraphConfig;
use super::experiment::{CellResult, Regime, RegimeResult, Table, select_cell};
use super::families::{ClientGraphs, DEGREE_CAP, FAMILY_NAMES, SmallGraph, generate};
use super::run::RunResult;

ferrolab_core::config_section! {
    /// GCFL+ keys: `gcfl.eps1`, `gcfl.eps2`, `gcfl.seq_length`, … (the learning rate and the
    /// minibatch steps per round are the grid's `fed.lrs` and `fed.local_steps`; Adam).
    pub struct GcflSection {
        /// Split only when the norm of the cluster's mean update is below ε₁.
        pub eps1: f64 = 0.05, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// … and some member's update norm is above ε₂.
        pub eps2: f64 = 0.1, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Length of the update-norm sequences compared by DTW (GCFL+'s `seq_length`).
        pub seq_length: usize = 5, "1..=10000" => |v| (1..=10_000).contains(v);
        /// No split before this round (the reference code's 20).
        pub warmup: usize = 20, "0..=100000" => |v| *v <= 100_000;
        /// Divide each sequence by its standard deviation before DTW (the reference code's
        /// `--standardize`, off by default there).
        pub standardize: bool = false;
        /// Graphs per minibatch.
        pub batch_size: usize = 32, "1..=100000" => |v| (1..=100_000).contains(v);
        /// How a cluster is cut in two: `gcfl+` (DTW distances of the update-norm sequences)
        /// or `gcfl` (the plain GCFL of the same paper: cosine similarity of this round's
        /// updates).
        pub variant: String = "gcfl+".into(), "`gcfl+` or `gcfl`" => |v| v == "gcfl+" || v == "gcfl";
        /// Readout: `sum` (GCFL's `global_add_pool`) or `mean`.
        pub readout: String = "sum".into(), "`sum` or `mean`" => |v| v == "sum" || v == "mean";
        /// What the server averages, and whose update norms and similarities drive the
        /// split: `gnn` (the message-passing layers only, as the reference code's `serverGIN`
        /// holds; each client keeps its own pooling-side layers, in FedAvg too) or `all`
        /// (every parameter, this crate's first reading).
        pub share: String = "gnn".into(), "`gnn` or `all`" => |v| v == "gnn" || v == "all";
        /// GCFL+'s sequences: `grad` (norm of the message-passing layers' gradient at the last
        /// local step, the reference code's `convGradsNorm` in `run_gcflplus`) or `update`
        /// (norm of their update over the round, `convDWsNorm` in `run_gcflplus_dWs`).
        pub sequence: String = "grad".into(), "`grad` or `update`" => |v| v == "grad" || v == "update";
        /// Fewest clients on each side of a cut. 1 is the reference (Stoer–Wagner's global
        /// minimum cut, which may take off a single client); more searches every
        /// bipartition of the cluster (clusters of at most 20 clients).
        pub min_side: usize = 1, "1..=10" => |v| (1..=10).contains(v);
        /// Clusters at the start: `one` (every client, the method) or `groups` (one cluster
        /// per family group, the generator's ground truth: an oracle that shows what
        /// clustering could gain, not a method a server could run).
        pub initial: String = "one".into(), "`one` or `groups`" => |v| v == "one" || v == "groups";
        /// Each client's own input layer, `Linear(features → model.hidden)` before the
        /// message-passing layers, never shared (the reference's `pre`: its `serverGIN`
        /// holds only the GIN layers, and clients holding different data sets read features
        /// of different widths through it). `false`: the first message-passing layer reads
        /// the one-hot features itself and is shared (this crate's first reading).
        pub pre: bool = true;
    }
}

/// Largest cluster [`min_cut_sized`] searches exhaustively.
pub const MAX_EXHAUSTIVE: usize = 20;

/// Graph classes of the generated data (triangle or not).
const CLASSES: usize = 2;

/// Width of the one-hot degree features (the default cap).
pub const FEATURES: usize = DEGREE_CAP + 1;

/// The graph-level network: the client's own input layer (`gcfl.pre`), zoo node embeddings,
/// ReLU, pooling, hidden layer, classifier. Fields in visiting order: the message-passing
/// layers come first, so the shared parameters are a prefix of the flat parameter vector.
#[derive(Module, Debug)]
pub struct GraphNet {
    gnn: GnnModel,
    pre: Option<Linear>,
    post: Linear,
    head: Linear,
}

/// Many small graphs as one block-diagonal graph, on a device.
#[derive(Debug, Clone)]
pub struct Batch {
    graph: GraphTensors,
    /// `[nodes, degree_cap + 1]` one-hot degrees.
    x: Tensor<2>,
    /// `[graphs, nodes]`: 1 (sum) or 1/n (mean) for the nodes of each graph.
    pool: SparseAdj,
    y: Tensor<1, Int>,
    all: Tensor<1, Int>,
    labels: Vec<usize>,
}

impl Batch {
    /// Node features one-hot degrees capped at `cap` (`cap + 1` columns); `reversed`:
    /// degree d goes to column `cap − d` (a client whose feature columns mean something
    /// else, `families.features = "by-group"`).
    pub fn new(
        graphs: &[&SmallGraph],
        mean: bool,
        cap: usize,
        reversed: bool,
        dev: &Device,
    ) -> Result<Self, FedGraphError> {
        let total: usize = graphs.iter().map(|g| g.nodes).sum();
        let width = cap + 1;
        let mut adj: Vec<Vec<u32>> = vec![Vec::new(); total];
        let mut feats = vec![0f32; total * width];
        let (mut pool_ptr, mut pool_idx, mut pool_val) = (vec![0usize], Vec::new(), Vec::new());
        let mut off = 0usize;
        for g in graphs {
            for (i, l) in g.adjacency().into_iter().enumerate() {
                let d = l.len().min(cap);
                let col = if reversed { cap - d } else { d };
                feats[(off + i) * width + col] = 1.0;
                adj[off + i] = l.into_iter().map(|j| j + off as u32).collect();
            }
            let w = if mean { 1.0 / g.nodes as f32 } else { 1.0 };
            for i in 0..g.nodes {
                pool_idx.push((off + i) as u32);
                pool_val.push(w);
            }
            pool_ptr.push(pool_idx.len());
            off += g.nodes;
        }
        let mut indptr = vec![0usize];
        let mut indices = Vec::new();
        for l in adj {
            indices.extend(l);
            indptr.push(indices.len());
        }
        let csr = CsrGraph::new(indptr, indices)?;
        let b = graphs.len();
        let labels: Vec<usize> = graphs.iter().map(|g| g.label).collect();
        let li: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        let all: Vec<i64> = (0..b as i64).collect();
        Ok(Batch {
            graph: GraphTensors::new(&csr, dev)?,
            x: float_tensor(feats, [total, width], dev),
            pool: SparseAdj::from_csr(b, total, &pool_ptr, &pool_idx, Some(&pool_val), dev)
                .map_err(FedGraphError::Usage)?,
            y: int_tensor(&li, dev),
            all: int_tensor(&all, dev),
            labels,
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

impl GraphNet {
    /// A fresh network drawn from the backend's generator seeded with `seed`; `pre`: an
    /// input layer `Linear(features → zoo.d_in)` (then `zoo.d_in` is `model.hidden`).
    /// The message-passing layers are drawn first, so networks of one seed share them
    /// whatever their input widths.
    pub fn init(
        zoo: &ZooConfig,
        features: usize,
        pre: bool,
        seed: u64,
    ) -> Result<Self, FedGraphError> {
        if !pre && features != zoo.d_in {
            return Err(FedGraphError::Usage(format!(
                "a client reads {features} features but the shared first layer takes {}: clients with different feature widths need gcfl.pre = true",
                zoo.d_in
            )));
        }
        ferrolab_core::backend::init_seeded(seed, |dev| {
            Ok(GraphNet {
                gnn: zoo.init(dev)?,
                pre: pre.then(|| LinearConfig::new(features, zoo.d_in).init(dev)),
                post: LinearConfig::new(zoo.hidden, zoo.hidden).init(dev),
                head: LinearConfig::new(zoo.hidden, CLASSES).init(dev),
            })
        })
    }

    /// Class logits `[graphs, 2]`; dropout is active with `rng`.
    pub fn forward(&self, b: &Batch, p: f64, mut rng: Option<&mut StdRng>) -> Tensor<2> {
        // The reference's `pre` is a bare linear map (no activation) into the hidden width.
        let x = match &self.pre {
            Some(pre) => pre.forward(b.x.clone()),
            None => b.x.clone(),
        };
        let x = GcnInput::Dense(Box::new(x));
        let h = relu(self.gnn.forward(&b.graph, &x, p, rng.as_deref_mut()));
        let z = relu(self.post.forward(b.pool.propagate(h)));
        self.head.forward(dropout(z, p, rng))
    }

    /// Parameters of the message-passing part (first in visiting order).
    fn gnn_len(&self) -> usize {
        model_params(&self.gnn).iter().map(|p| p.data.len()).sum()
    }
}

/// The zoo network of the node-embedding part (`model.*`; output width = `model.hidden`).
pub fn graph_zoo(cfg: &FedGraphConfig) -> Result<ZooConfig, FedGraphError> {
    let m = &cfg.model;
    let z = ZooConfig {
        hidden: m.hidden,
        layers: m.layers,
        dropout: m.dropout,
        heads: m.heads,
        init: WeightInit::parse(&m.init)?,
        // With an input layer per client the message-passing layers read `model.hidden`.
        ..ZooConfig::new(
            Arch::parse(&m.arch)?,
            if cfg.gcfl.pre { m.hidden } else { FEATURES },
            m.hidden,
        )
    };
    z.check()?;
    Ok(z)
}

/// Dynamic time warping distance between two sequences: the square root of the least sum
/// of squared differences along a warping path (the `dtaidistance` definition GCFL+ uses).
pub fn dtw(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return if n == m { 0.0 } else { f64::INFINITY };
    }
    let mut d = vec![f64::INFINITY; (n + 1) * (m + 1)];
    d[0] = 0.0;
    for i in 1..=n {
        for j in 1..=m {
            let c = (a[i - 1] - b[j - 1]).powi(2);
            let best = d[(i - 1) * (m + 1) + j]
                .min(d[i * (m + 1) + j - 1])
                .min(d[(i - 1) * (m + 1) + j - 1]);
            d[i * (m + 1) + j] = c + best;
        }
    }
    d[n * (m + 1) + m].sqrt()
}

/// Minimum cut of a complete weighted graph (Stoer & Wagner 1997), `w` symmetric `n × n`,
/// `n ≥ 2`: the cut weight and the vertices of one side (sorted). Ties go to the lower
/// index, so the result is deterministic.
pub fn min_cut(w: &[Vec<f64>]) -> (f64, Vec<usize>) {
    let n = w.len();
    let mut w: Vec<Vec<f64>> = w.to_vec();
    let mut groups: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
    let mut active: Vec<usize> = (0..n).collect();
    let (mut best, mut best_set) = (f64::INFINITY, vec![0]);
    while active.len() > 1 {
        let mut added = vec![false; n];
        let mut key = vec![0f64; n];
        let mut prev = active[0];
        for it in 0..active.len() {
            let mut sel = usize::MAX;
            for &v in &active {
                if !added[v] && (sel == usize::MAX || key[v] > key[sel]) {
                    sel = v;
                }
            }
            if it + 1 == active.len() {
                if key[sel] < best {
                    best = key[sel];
                    best_set = groups[sel].clone();
                }
                let moved = std::mem::take(&mut groups[sel]);
                groups[prev].extend(moved);
                for &v in &active {
                    if v != prev && v != sel {
                        let x = w[prev][v] + w[sel][v];
                        w[prev][v] = x;
                        w[v][prev] = x;
                    }
                }
                active.retain(|&v| v != sel);
            } else {
                added[sel] = true;
                for &v in &active {
                    if !added[v] {
                        key[v] += w[sel][v];
                    }
                }
                prev = sel;
            }
        }
    }
    best_set.sort_unstable();
    (best, best_set)
}

/// Minimum cut of a complete weighted graph with at least `min_side` vertices on each side
/// (fewer when the graph has fewer than `2 · min_side`): Stoer–Wagner for `min_side ≤ 1`,
/// else every bipartition, `n ≤` [`MAX_EXHAUSTIVE`] (a larger graph falls back to
/// Stoer–Wagner; [`prepare`] refuses such a configuration before a run). Returns the cut
/// weight and the side without vertex 0, sorted; ties go to the first bipartition in
/// counting order.
pub fn min_cut_sized(w: &[Vec<f64>], min_side: usize) -> (f64, Vec<usize>) {
    let n = w.len();
    if min_side <= 1 || !(2..=MAX_EXHAUSTIVE).contains(&n) {
        return min_cut(w);
    }
    let m = min_side.min(n / 2);
    let (mut best, mut best_mask) = (f64::INFINITY, 0u32);
    for mask in 1u32..(1u32 << (n - 1)) {
        // Bit i set: vertex i + 1 is on the far side; vertex 0 stays on the near one.
        let far = mask.count_ones() as usize;
        if far < m || n - far < m {
            continue;
        }
        let is_far = |v: usize| v > 0 && mask & (1 << (v - 1)) != 0;
        let mut cut = 0f64;
        for (i, row) in w.iter().enumerate() {
            for (j, &x) in row.iter().enumerate().skip(i + 1) {
                if is_far(i) != is_far(j) {
                    cut += x;
                }
            }
        }
        if cut < best {
            (best, best_mask) = (cut, mask);
        }
    }
    let side = (1..n)
        .filter(|&i| best_mask & (1 << (i - 1)) != 0)
        .collect();
    (best, side)
}

/// GCFL's split test for one cluster.
pub fn should_split(
    mean_norm: f64,
    max_norm: f64,
    members: usize,
    round: usize,
    seqs_ready: bool,
    g: &GcflSection,
) -> bool {
    mean_norm < g.eps1 && max_norm > g.eps2 && members > 2 && round > g.warmup && seqs_ready
}

/// Bi-partitions `members` by the DTW distances of their norm sequences (GCFL+), each side
/// with at least `min_side` members ([`min_cut_sized`]).
pub fn bipartition(
    members: &[usize],
    seqs: &[Vec<f64>],
    standardize: bool,
    min_side: usize,
) -> [Vec<usize>; 2] {
    let prep = |s: &Vec<f64>| -> Vec<f64> {
        if !standardize {
            return s.clone();
        }
        let n = s.len().max(1) as f64;
        let m = s.iter().sum::<f64>() / n;
        let sd = (s.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / n).sqrt();
        if sd > 0.0 {
            s.iter().map(|x| x / sd).collect()
        } else {
            s.clone()
        }
    };
    let k = members.len();
    let s: Vec<Vec<f64>> = members.iter().map(|&i| prep(&seqs[i])).collect();
    let mut d = vec![vec![0f64; k]; k];
    let mut dmax = 0f64;
    for i in 0..k {
        for j in i + 1..k {
            let x = dtw(&s[i], &s[j]);
            d[i][j] = x;
            d[j][i] = x;
            dmax = dmax.max(x);
        }
    }
    let sim: Vec<Vec<f64>> = (0..k)
        .map(|i| {
            (0..k)
                .map(|j| if i == j { 0.0 } else { dmax - d[i][j] })
                .collect()
        })
        .collect();
    let (_, side) = min_cut_sized(&sim, min_side);
    let a: Vec<usize> = side.iter().map(|&i| members[i]).collect();
    let b: Vec<usize> = (0..k)
        .filter(|i| !side.contains(i))
        .map(|i| members[i])
        .collect();
    [a, b]
}

/// Bi-partitions `members` by the cosine similarity of the first `shared` entries of their
/// updates (plain GCFL). As in the reference code the similarity is shifted to
/// `cos + 1 ∈ [0, 2]`: a minimum cut needs non-negative weights.
pub fn bipartition_cosine(
    members: &[usize],
    updates: &[Vec<f32>],
    shared: usize,
    min_side: usize,
) -> [Vec<usize>; 2] {
    let k = members.len();
    let u = |c: usize| &updates[c][..shared.min(updates[c].len())];
    let norms: Vec<f64> = members
        .iter()
        .map(|&c| norm(u(c).iter().map(|&x| f64::from(x))))
        .collect();
    let mut sim = vec![vec![0f64; k]; k];
    for i in 0..k {
        for j in i + 1..k {
            let dot: f64 = u(members[i])
                .iter()
                .zip(u(members[j]))
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            let x = dot / (norms[i] * norms[j]).max(1e-12) + 1.0;
            sim[i][j] = x;
            sim[j][i] = x;
        }
    }
    let (_, side) = min_cut_sized(&sim, min_side);
    let a: Vec<usize> = side.iter().map(|&i| members[i]).collect();
    let b: Vec<usize> = (0..k)
        .filter(|i| !side.contains(i))
        .map(|i| members[i])
        .collect();
    [a, b]
}

/// How the clients are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One cluster, split by GCFL+'s rule.
    Gcfl,
    /// One cluster, never split.
    FedAvg,
    /// Every client alone.
    Local,
    /// One model trained on every client's training graphs.
    Global,
}

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GraphSchedule {
    pub lr: f64,
    pub local_steps: usize,
    pub rounds: usize,
    pub patience: usize,
    pub weight_decay: f64,
}

pub(crate) struct ClientData {
    pub(crate) train: Vec<Batch>,
    pub(crate) val: Batch,
    pub(crate) test: Batch,
    pub(crate) n_train: usize,
}

fn client_data(
    c: &ClientGraphs,
    batch: usize,
    mean: bool,
    rng: &mut StdRng,
    dev: &Device,
) -> Result<ClientData, FedGraphError> {
    let mut order: Vec<&SmallGraph> = c.train.iter().collect();
    order.shuffle(rng);
    let train = order
        .chunks(batch)
        .map(|ch| Batch::new(ch, mean, c.degree_cap, c.reversed_degrees, dev))
        .collect::<Result<Vec<_>, _>>()?;
    let (cap, rev) = (c.degree_cap, c.reversed_degrees);
    Ok(ClientData {
        train,
        val: Batch::new(&c.val.iter().collect::<Vec<_>>(), mean, cap, rev, dev)?,
        test: Batch::new(&c.test.iter().collect::<Vec<_>>(), mean, cap, rev, dev)?,
        n_train: c.train.len(),
    })
}

/// Accuracy and mean cross-entropy on one batch, without dropout.
fn eval(net: &GraphNet, b: &Batch) -> (f64, f64) {
    let z = to_vec_f32(net.forward(b, 0.0, None).detach());
    let rows: Vec<usize> = (0..b.len()).collect();
    let acc = accuracy(&z, CLASSES, &rows, &b.labels);
    let mut loss = 0f64;
    for (r, &l) in b.labels.iter().enumerate() {
        let row = &z[r * CLASSES..(r + 1) * CLASSES];
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        loss += lse - row[l] as f64;
    }
    (acc, loss / b.len().max(1) as f64)
}

/// [`eval`] on a client's validation and on its test graphs.
pub(crate) fn eval_pair(net: &GraphNet, cd: &ClientData) -> ((f64, f64), (f64, f64)) {
    (eval(net, &cd.val), eval(net, &cd.test))
}

/// Sum of squares of the gradients of the parameters a visited module holds.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // A parameter the loss does not reach has a zero gradient.
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += g
                .into_data()
                .iter::<f32>()
                .map(|x| f64::from(x) * f64::from(x))
                .sum::<f64>();
        }
    }
}

/// One local training pass: `steps` minibatch Adam steps, batches in an order drawn by
/// `rng`. Returns the new model, the mean loss and the norm of the message-passing layers'
/// gradient at the last step (GCFL+'s `convGradsNorm`).
pub(crate) fn local_train(
    mut net: GraphNet,
    batches: &[&Batch],
    optim: &mut ModuleOptimizer,
    lr: f64,
    steps: usize,
    p: f64,
    rng: &mut StdRng,
) -> (GraphNet, f64, f64) {
    let mut total = 0f64;
    let mut grad_norm = 0f64;
    let mut order: Vec<usize> = Vec::new();
    for _ in 0..steps {
        if order.is_empty() {
            order = (0..batches.len()).collect();
            order.shuffle(rng);
        }
        let Some(i) = order.pop() else { break };
        let b = batches[i];
        let logits = net.forward(b, p, Some(rng));
        let loss = masked_cross_entropy(logits, &b.all, &b.y);
        total += f64::from(to_vec_f32(loss.clone())[0]);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let mut sq = GradSquares {
            grads: &grads,
            sum: 0.0,
        };
        net.gnn.visit(&mut sq);
        grad_norm = sq.sum.sqrt();
        net = optim.step(lr, net, grads);
    }
    (net, total / steps.max(1) as f64, grad_norm)
}

pub(crate) fn flat(net: &GraphNet) -> Vec<f32> {
    model_params(net).into_iter().flat_map(|p| p.data).collect()
}

pub(crate) fn load_flat(net: GraphNet, v: &[f32]) -> Result<GraphNet, FedGraphError> {
    let mut ps = model_params(&net);
    let mut off = 0;
    for p in &mut ps {
        let n = p.data.len();
        p.data.copy_from_slice(&v[off..off + n]);
        off += n;
    }
    Ok(load_params(net, &ps)?)
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// What one run of [`run_clustered`] did besides its accuracy.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClusterLog {
    /// `(round, the two new clusters)` for every split.
    pub splits: Vec<(usize, [Vec<usize>; 2])>,
    /// Clusters at the end.
    pub clusters: Vec<Vec<usize>>,
    /// Per round: norm of the mean update and largest update norm of the first cluster.
    pub norms: Vec<(f64, f64)>,
    /// Per round and cluster: `(round, members, ‖mean ΔW‖, max ‖ΔW‖)` — what ε₁ and ε₂
    /// are compared with, for choosing them.
    pub cluster_norms: Vec<(usize, Vec<usize>, f64, f64)>,
    /// The reference code's figure: each client's best test accuracy over the models cached
    /// at its cluster's splits and at the end (`run_gcfl(plus)`, then `_aggregate_cfl`'s
    /// max), averaged over clients; for the unclustered regimes (FedAvg, local) the last
    /// round's, as its `run_fedavg` reports. It picks on the test set, so it is logged beside
    /// the selected-round figure, never in its place.
    #[serde(with = "ferrolab_core::run::f64_or_null")]
    pub reference_test_accuracy: f64,
}

/// What one learner's local training pass gives the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Trained {
    /// The trained values of the parameters the server holds: the shared prefix (every
    /// parameter of the global baseline's one model).
    pub prefix: Vec<f32>,
    /// Mean training loss of the pass (non-finite: the learner diverged).
    pub loss: f64,
    /// Norm of the message-passing layers' gradient at the last step.
    pub grad_norm: f64,
}

/// One client's evaluation of its model: validation accuracy, validation loss, test accuracy.
pub type Eval = (f64, f64, f64);

/// Where the learners of [`run_clustered_on`] train and are evaluated. The server holds
/// only each learner's shared prefix; every learner keeps the rest of its model (and its
/// Adam state, its batches, its random stream) itself.
pub trait Learners {
    /// Trains every learner `l` from `prefixes[l]` for round `round`; `None` for a learner
    /// whose pass did not come back (it is left out of the round).
    fn train(
        &mut self,
        round: usize,
        prefixes: &[Vec<f32>],
    ) -> Result<Vec<Option<Trained>>, FedGraphError>;

    /// Evaluates every client's model (its learner's prefix `prefixes[l]`, its own other
    /// layers) after round `round` (0: the initial models); `None` for an evaluation that did
    /// not come back.
    fn evaluate(
        &mut self,
        round: usize,
        prefixes: &[Vec<f32>],
    ) -> Result<Vec<Option<Eval>>, FedGraphError>;
}

/// Client `c`'s data: its graphs batched as [`run_clustered`] batches them, the batch order
/// drawn from the run's one `batches` stream after clients `0..c` drew theirs.
pub(crate) fn client_data_of(
    data: &[ClientGraphs],
    c: usize,
    g: &GcflSection,
    seed: u64,
    dev: &Device,
) -> Result<ClientData, FedGraphError> {
    let mut drng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "batches"));
    for d in &data[..c] {
        // Only the stream's position matters: a shuffle draws by length alone.
        let mut skip: Vec<usize> = (0..d.train.len()).collect();
        skip.shuffle(&mut drng);
    }
    client_data(&data[c], g.batch_size, g.readout == "mean", &mut drng, dev)
}

/// Client `c`'s network at the start of a run of `seed` (every client draws the same
/// message-passing layers).
pub(crate) fn client_net(
    data: &[ClientGraphs],
    c: usize,
    zoo: &ZooConfig,
    g: &GcflSection,
    seed: u64,
) -> Result<GraphNet, FedGraphError> {
    let init_seed = ferrolab_core::seed::derive(seed, "init");
    GraphNet::init(zoo, data[c].degree_cap + 1, g.pre, init_seed)
}

/// Client `c`'s own random stream (dropout, batch order within a round).
pub(crate) fn client_rng(seed: u64, c: usize) -> StdRng {
    StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, &format!("client{c}")))
}

/// A pass's loss as the server sees it: NaN (the learner diverged) when the loss or any
/// trained parameter is not finite, so the run stops there whichever way the learners run
/// (a fabric cannot carry non-finite parameters).
pub(crate) fn diverged_loss(loss: f64, trained: &[f32]) -> f64 {
    if loss.is_finite() && trained.iter().all(|x| x.is_finite()) {
        loss
    } else {
        f64::NAN
    }
}

/// Every learner in this process: what [`run_clustered`] trains on.
struct InProcessLearners<'a> {
    clients: &'a [ClientData],
    nets: Vec<Option<GraphNet>>,
    /// Each learner's whole flat model: its prefix as last loaded, its other layers as it
    /// last trained them.
    weights: Vec<Vec<f32>>,
    optims: Vec<ModuleOptimizer>,
    rngs: Vec<StdRng>,
    global: bool,
    lr: f64,
    steps: usize,
    p: f64,
}

impl InProcessLearners<'_> {
    /// Learner `l`'s network with `prefix` loaded over its own other layers.
    fn load(&mut self, l: usize, prefix: &[f32]) -> Result<GraphNet, FedGraphError> {
        let net = self.nets[l]
            .take()
            .ok_or_else(|| FedGraphError::Usage("model lost".into()))?;
        self.weights[l][..prefix.len()].copy_from_slice(prefix);
        load_flat(net, &self.weights[l])
    }
}

impl Learners for InProcessLearners<'_> {
    fn train(
        &mut self,
        _round: usize,
        prefixes: &[Vec<f32>],
    ) -> Result<Vec<Option<Trained>>, FedGraphError> {
        let mut out = Vec::with_capacity(prefixes.len());
        for (l, prefix) in prefixes.iter().enumerate() {
            let net = self.load(l, prefix)?;
            let k = self.clients.len();
            let (batches, steps): (Vec<&Batch>, usize) = if self.global {
                (
                    self.clients.iter().flat_map(|c| c.train.iter()).collect(),
                    self.steps * k,
                )
            } else {
                (self.clients[l].train.iter().collect(), self.steps)
            };
            let (net, loss, grad_norm) = local_train(
                net,
                &batches,
                &mut self.optims[l],
                self.lr,
                steps,
                self.p,
                &mut self.rngs[l],
            );
            self.weights[l] = flat(&net);
            self.nets[l] = Some(net);
            out.push(Some(Trained {
                prefix: self.weights[l][..prefix.len()].to_vec(),
                loss: diverged_loss(loss, &self.weights[l]),
                grad_norm,
            }));
        }
        Ok(out)
    }

    fn evaluate(
        &mut self,
        _round: usize,
        prefixes: &[Vec<f32>],
    ) -> Result<Vec<Option<Eval>>, FedGraphError> {
        let mut out = Vec::with_capacity(self.clients.len());
        for (c, cd) in self.clients.iter().enumerate() {
            let l = if self.global { 0 } else { c };
            let net = self.nets[l]
                .take()
                .ok_or_else(|| FedGraphError::Usage("model lost".into()))?;
            self.weights[l][..prefixes[l].len()].copy_from_slice(&prefixes[l]);
            let net = load_flat(net, &self.weights[l])?;
            let ((a, loss), (t, _)) = eval_pair(&net, cd);
            self.nets[l] = Some(net);
            out.push(Some((a, loss, t)));
        }
        Ok(out)
    }
}

/// One run (one seed, one cell) of `mode` on the given clients' graphs, every learner in this
/// process.
pub fn run_clustered(
    data: &[ClientGraphs],
    zoo: &ZooConfig,
    g: &GcflSection,
    s: &GraphSchedule,
    mode: Mode,
    seed: u64,
) -> Result<(RunResult, ClusterLog), FedGraphError> {
    if data.is_empty() {
        return Err(FedGraphError::Usage("no clients".into()));
    }
    let dev = train_device();
    let mean = g.readout == "mean";
    let k = data.len();
    let mut drng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "batches"));
    let clients = data
        .iter()
        .map(|c| client_data(c, g.batch_size, mean, &mut drng, &dev))
        .collect::<Result<Vec<_>, _>>()?;
    // Every client's network from the same seed: the same message-passing layers (drawn
    // first) and, for equal input widths, the same everything.
    let widths: Vec<usize> = data.iter().map(|c| c.degree_cap + 1).collect();
    check_widths(&widths, mode, g)?;
    // Global: one learner over every client's batches, K × local_steps steps per round.
    let learners = if mode == Mode::Global { 1 } else { k };
    let mut nets: Vec<Option<GraphNet>> = Vec::with_capacity(learners);
    for c in 0..learners {
        nets.push(Some(client_net(data, c, zoo, g, seed)?));
    }
    let opt = OptimKind::Adam {
        weight_decay: s.weight_decay,
    };
    let mut local = InProcessLearners {
        clients: &clients,
        weights: nets.iter().flatten().map(flat).collect(),
        nets,
        optims: (0..learners).map(|_| opt.init()).collect(),
        rngs: (0..learners).map(|c| client_rng(seed, c)).collect(),
        global: mode == Mode::Global,
        lr: s.lr,
        steps: s.local_steps,
        p: zoo.dropout,
    };
    run_clustered_on(data, zoo, g, s, mode, seed, &mut local)
}

/// What no learner layout can do: one global network over different feature widths, or
/// sharing every layer among them.
fn check_widths(widths: &[usize], mode: Mode, g: &GcflSection) -> Result<(), FedGraphError> {
    let mixed = widths.iter().any(|&w| w != widths[0]);
    if mode == Mode::Global && mixed {
        return Err(FedGraphError::Usage(
            "the global baseline trains one network, which cannot read the clients' different feature widths (families.features = \"width-by-group\"): set baselines.global = false".into(),
        ));
    }
    if g.share == "all" && mixed {
        return Err(FedGraphError::Usage(
            "gcfl.share = \"all\" averages every layer, which clients of different feature widths do not have in common: use gcfl.share = \"gnn\"".into(),
        ));
    }
    Ok(())
}

/// The server's side of one run of `mode`: clustering, aggregation, selection, with the
/// learners' training and evaluation done by `learners` (in this process, or client
/// processes over a fabric). A learner left out of a round (no reply) adds nothing to its
/// cluster's update or norms, gets the cluster's new shared layers, and its cluster is not
/// split that round (a cut needs every member's signal); a client whose evaluation is left
/// out counts with its last figures. Nothing at all coming back is an error.
pub fn run_clustered_on(
    data: &[ClientGraphs],
    zoo: &ZooConfig,
    g: &GcflSection,
    s: &GraphSchedule,
    mode: Mode,
    seed: u64,
    learners: &mut dyn Learners,
) -> Result<(RunResult, ClusterLog), FedGraphError> {
    if data.is_empty() {
        return Err(FedGraphError::Usage("no clients".into()));
    }
    let k = data.len();
    let widths: Vec<usize> = data.iter().map(|c| c.degree_cap + 1).collect();
    check_widths(&widths, mode, g)?;
    let n_learners = if mode == Mode::Global { 1 } else { k };
    let gnn_len = client_net(data, 0, zoo, g, seed)?.gnn_len();
    let mut prefixes: Vec<Vec<f32>> = Vec::with_capacity(n_learners);
    for c in 0..n_learners {
        let w = flat(&client_net(data, c, zoo, g, seed)?);
        let held = if mode == Mode::Global || g.share == "all" {
            w.len()
        } else {
            gnn_len
        };
        prefixes.push(w[..held].to_vec());
    }
    // The prefix of the flat parameters the server averages: the message-passing layers
    // come first in visiting order.
    let shared = prefixes[0].len();
    let n_train: Vec<f64> = data.iter().map(|c| c.train.len() as f64).collect();
    let mut clusters: Vec<Vec<usize>> = match mode {
        Mode::Local => (0..k).map(|c| vec![c]).collect(),
        Mode::Gcfl if g.initial == "groups" => {
            let mut by: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (c, d) in data.iter().enumerate() {
                by.entry(d.group).or_default().push(c);
            }
            by.into_values().collect()
        }
        _ => vec![(0..k).collect()],
    };
    let mut seqs: Vec<Vec<f64>> = vec![Vec::new(); k];
    let mut log = ClusterLog::default();
    let mut out = RunResult {
        whole_graph_test_accuracy: f64::NAN,
        ..Default::default()
    };
    // Each client's last evaluation, standing in for one that does not come back.
    let mut figures: Vec<Option<Eval>> = vec![None; k];
    let mut evaluate = |round: usize,
                        prefixes: &[Vec<f32>],
                        learners: &mut dyn Learners|
     -> Result<(f64, f64, f64, Vec<f64>), FedGraphError> {
        let got = learners.evaluate(round, prefixes)?;
        let (mut va, mut vl, mut ta) = (0f64, 0f64, 0f64);
        let mut per = Vec::with_capacity(k);
        for (c, fig) in figures.iter_mut().enumerate() {
            if let Some(Some(e)) = got.get(c) {
                *fig = Some(*e);
            }
            let (a, loss, t) = fig.ok_or_else(|| {
                FedGraphError::Fabric(crate::fabric::FabricError::Disconnected(format!(
                    "client {c}'s evaluation of the initial model did not come back"
                )))
            })?;
            va += a / k as f64;
            vl += loss / k as f64;
            ta += t / k as f64;
            per.push(t);
        }
        Ok((va, vl, ta, per))
    };
    let (v0, l0, t0, mut last_test) = evaluate(0, &prefixes, learners)?;
    // Per client: the best test accuracy among the models the reference code caches.
    let mut cached_best = vec![0f64; k];
    let (mut best_v, mut best_l, mut best_t, mut best_round, mut since) = (v0, l0, t0, 0, 0);
    let param_bytes = (shared * 4) as u64;
    for round in 1..=s.rounds {
        let got = learners.train(round, &prefixes)?;
        // A learner set of another layout is a bug of its own, not this loop's to index past.
        if got.len() != n_learners
            || got
                .iter()
                .flatten()
                .any(|t| t.loss.is_finite() && t.prefix.len() != prefixes[0].len())
        {
            return Err(FedGraphError::Usage(format!(
                "round {round}: the learners returned {} passes for {n_learners} learners, or a pass of the wrong size",
                got.len()
            )));
        }
        if got.iter().all(Option::is_none) {
            return Err(FedGraphError::Fabric(
                crate::fabric::FabricError::Disconnected(format!(
                    "round {round}: no learner's update came back"
                )),
            ));
        }
        if got.iter().flatten().any(|t| !t.loss.is_finite()) {
            break;
        }
        // Each learner's update of the held prefix; empty for one left out.
        let present: Vec<bool> = got.iter().map(Option::is_some).collect();
        let mut grad_norms = vec![0f64; got.len()];
        let updates: Vec<Vec<f32>> = got
            .into_iter()
            .enumerate()
            .map(|(l, t)| match t {
                Some(t) => {
                    grad_norms[l] = t.grad_norm;
                    t.prefix
                        .iter()
                        .zip(&prefixes[l])
                        .map(|(a, b)| a - b)
                        .collect()
                }
                None => Vec::new(),
            })
            .collect();
        if mode == Mode::Global {
            for (x, d) in prefixes[0].iter_mut().zip(&updates[0]) {
                *x += d;
            }
        } else {
            for (c, u) in updates.iter().enumerate() {
                if !present[c] {
                    continue;
                }
                seqs[c].push(if g.sequence == "grad" {
                    grad_norms[c]
                } else {
                    norm(u[..gnn_len].iter().map(|&x| f64::from(x)))
                });
            }
            if mode != Mode::Local {
                let back = present.iter().filter(|&&p| p).count();
                out.server_bytes += param_bytes * (k + back) as u64;
            }
            let mut next = Vec::new();
            for (ci, members) in clusters.iter().enumerate() {
                let came: Vec<usize> = members.iter().copied().filter(|&c| present[c]).collect();
                let n = came.len() as f64;
                let mut mean_u = vec![0f64; shared];
                let mut max_norm = 0f64;
                for &c in &came {
                    let u = &updates[c][..shared];
                    for (m, &x) in mean_u.iter_mut().zip(u) {
                        *m += f64::from(x) / n;
                    }
                    max_norm = max_norm.max(norm(u.iter().map(|&x| f64::from(x))));
                }
                let mean_norm = norm(mean_u.into_iter());
                if ci == 0 {
                    log.norms.push((mean_norm, max_norm));
                }
                if mode == Mode::Gcfl {
                    log.cluster_norms
                        .push((round, members.clone(), mean_norm, max_norm));
                }
                let ready = g.variant == "gcfl" || seqs.iter().all(|q| q.len() >= g.seq_length);
                if mode == Mode::Gcfl
                    && came.len() == members.len()
                    && should_split(mean_norm, max_norm, members.len(), round, ready, g)
                {
                    let tails: Vec<Vec<f64>> = seqs
                        .iter()
                        .map(|q| q[q.len().saturating_sub(g.seq_length)..].to_vec())
                        .collect();
                    let halves = if g.variant == "gcfl" {
                        bipartition_cosine(members, &updates, shared, g.min_side)
                    } else {
                        bipartition(members, &tails, g.standardize, g.min_side)
                    };
                    log.splits.push((round, halves.clone()));
                    // The reference caches the splitting cluster's model with its members'
                    // accuracies of the previous round's evaluation.
                    for &c in members {
                        cached_best[c] = cached_best[c].max(last_test[c]);
                    }
                    for q in &mut seqs {
                        q.clear();
                    }
                    next.extend(halves);
                } else {
                    next.push(members.clone());
                }
            }
            clusters = next;
            // Each cluster's shared layers move by its members' training-size weighted mean
            // update (all members started the round from the same shared layers); each
            // client keeps the rest of its model as it trained it.
            for members in &clusters {
                let came: Vec<usize> = members.iter().copied().filter(|&c| present[c]).collect();
                if came.is_empty() {
                    continue;
                }
                let total: f64 = came.iter().map(|&c| n_train[c]).sum();
                let mut acc = vec![0f64; shared];
                for &c in &came {
                    let wgt = n_train[c] / total;
                    for (a, &x) in acc.iter_mut().zip(&updates[c][..shared]) {
                        *a += wgt * f64::from(x);
                    }
                }
                let new: Vec<f32> = prefixes[members[0]][..shared]
                    .iter()
                    .zip(&acc)
                    .map(|(&b, &a)| (f64::from(b) + a) as f32)
                    .collect();
                for &c in members {
                    prefixes[c].copy_from_slice(&new);
                }
            }
        }
        out.rounds_run = round;
        let (v, vl, t, per) = evaluate(round, &prefixes, learners)?;
        last_test = per;
        out.curve.push((round, v, t));
        if v > best_v {
            (best_v, best_l, best_t, best_round, since) = (v, vl, t, round, 0);
        } else {
            since += 1;
            if s.patience > 0 && since >= s.patience {
                break;
            }
        }
    }
    out.val_accuracy = best_v;
    out.val_loss = best_l;
    out.test_accuracy = best_t;
    out.best_round = best_round;
    log.clusters = clusters;
    // The final clusters are cached too.
    log.reference_test_accuracy = cached_best
        .iter()
        .zip(&last_test)
        .map(|(&b, &t)| b.max(t))
        .sum::<f64>()
        / k as f64;
    Ok((out, log))
}

/// One federated run of the graph-families table somewhere else than in this process's
/// threads: (regime, lr, local steps, seed index, run seed, the seed's clients' graphs).
pub type RemoteRun<'a> = &'a RemoteRunFn;

/// What a [`RemoteRun`] calls.
pub type RemoteRunFn = dyn Fn(
        Regime,
        f64,
        usize,
        usize,
        u64,
        &[ClientGraphs],
    ) -> Result<(RunResult, ClusterLog), FedGraphError>
    + Sync;

/// Seed index `s` of the table seeded `master_seed`: the run seed and every client's graphs
/// (every party of a multi-process run draws them alike).
pub fn seed_data(
    cfg: &FedGraphConfig,
    master_seed: u64,
    s: usize,
) -> Result<(u64, Vec<ClientGraphs>), FedGraphError> {
    let seed = ferrolab_core::seed::derive(master_seed, &format!("seed{s}"));
    let data = generate(
        &cfg.families,
        cfg.fed.clients,
        ferrolab_core::seed::derive(seed, "families"),
    )?;
    Ok((seed, data))
}

/// What one run of `regime` at (`lr`, `steps`) uses: its GCFL section (plain GCFL beside
/// GCFL+ on the same data, initialisation and ε, as the reference runs both with one
/// EPS_1 / EPS_2), its schedule and its clustering mode.
pub fn regime_run(
    cfg: &FedGraphConfig,
    regime: Regime,
    lr: f64,
    steps: usize,
) -> (GcflSection, GraphSchedule, Mode) {
    let f = &cfg.fed;
    let section = if regime == Regime::GcflPlain {
        GcflSection {
            variant: "gcfl".into(),
            ..cfg.gcfl.clone()
        }
    } else {
        cfg.gcfl.clone()
    };
    let sched = GraphSchedule {
        lr,
        local_steps: steps,
        rounds: f.rounds,
        patience: f.patience,
        weight_decay: f.weight_decay,
    };
    let mode = match regime {
        Regime::Gcfl | Regime::GcflPlain => Mode::Gcfl,
        Regime::Local => Mode::Local,
        Regime::Global => Mode::Global,
        _ => Mode::FedAvg,
    };
    (section, sched, mode)
}

/// Share of clients whose cluster holds only clients of their own family pair.
fn purity(clusters: &[Vec<usize>], data: &[ClientGraphs]) -> f64 {
    let k = data.len().max(1) as f64;
    let mut pure = 0usize;
    for m in clusters {
        if m.iter().all(|&c| data[c].families == data[m[0]].families) {
            pure += m.len();
        }
    }
    pure as f64 / k
}

/// The graph-families table: every regime × grid cell × seed, `workers` runs at a time, the
/// cell of best mean validation accuracy selected per regime (as the node table does).
///
/// With `remote`, the federated runs (GCFL+, plain GCFL, FedAvg) go through it instead of
/// this process's threads (`fed.runtime = "nats"`); local only and global stay here.
pub fn run_table(
    cfg: &FedGraphConfig,
    master_seed: u64,
    workers: usize,
    progress: &(dyn Fn(Regime, f64, usize, usize, &RunResult) + Sync),
    remote: Option<RemoteRun<'_>>,
    units: Option<&ferrolab_core::run::RunDir>,
) -> Result<Table, FedGraphError> {
    let zoo = graph_zoo(cfg)?;
    let f = &cfg.fed;
    let mut setups = Vec::new();
    let mut info = Vec::new();
    for s in 0..f.seeds {
        let (seed, data) = seed_data(cfg, master_seed, s)?;
        info.push(json!({
            "seed": s,
            "client_families": data.iter().map(|d| d.families.iter().map(|&x| FAMILY_NAMES[x]).collect::<Vec<_>>()).collect::<Vec<_>>(),
            "client_groups": data.iter().map(|d| d.group).collect::<Vec<_>>(),
            "labels": cfg.families.labels,
            "features": cfg.families.features,
            "share": cfg.gcfl.share,
            "initial": cfg.gcfl.initial,
            "min_side": cfg.gcfl.min_side,
            "sequence": cfg.gcfl.sequence,
            "train": data.iter().map(|d| d.train.len()).collect::<Vec<_>>(),
            "val": data.iter().map(|d| d.val.len()).collect::<Vec<_>>(),
            "test": data.iter().map(|d| d.test.len()).collect::<Vec<_>>(),
        }));
        setups.push((seed, data));
    }
    let mut regimes = if f.algo == "gcfl" {
        vec![Regime::Gcfl, Regime::FedAvg]
    } else {
        vec![Regime::FedAvg]
    };
    if f.algo == "gcfl" && cfg.gcfl.variant == "gcfl+" && cfg.baselines.gcfl_plain {
        regimes.push(Regime::GcflPlain);
    }
    if cfg.baselines.local {
        regimes.push(Regime::Local);
    }
    if cfg.baselines.global {
        regimes.push(Regime::Global);
    }
    let mut jobs = Vec::new();
    for (ri, &regime) in regimes.iter().enumerate() {
        for (li, &lr) in f.lrs.iter().enumerate() {
            for (si, &steps) in f.local_steps.iter().enumerate() {
                for k in 0..setups.len() {
                    jobs.push((ri, li, si, k, regime, lr, steps));
                }
            }
        }
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.6));
    type Key = (usize, usize, usize, usize);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: std::sync::Mutex<BTreeMap<Key, (RunResult, ClusterLog)>> =
        std::sync::Mutex::new(BTreeMap::new());
    let first_error: std::sync::Mutex<Option<FedGraphError>> = std::sync::Mutex::new(None);
    let times: std::sync::Mutex<BTreeMap<usize, f64>> = std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, jobs.len().max(1)) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&(ri, li, si, k, regime, lr, steps)) = jobs.get(i) else {
                        break;
                    };
                    if first_error.lock().map_or(true, |e| e.is_some()) {
                        break;
                    }
                    let (section, sched, mode) = regime_run(cfg, regime, lr, steps);
                    let (seed, data) = &setups[k];
                    let compute = |()| match remote {
                        Some(run) if mode != Mode::Local && mode != Mode::Global => {
                            run(regime, lr, steps, k, *seed, data)
                        }
                        _ => run_clustered(data, &zoo, &section, &sched, mode, *seed),
                    };
                    let prepare = || Ok(());
                    match super::experiment::grid_unit(
                        units,
                        (regime, lr, steps, k),
                        prepare,
                        compute,
                    ) {
                        Ok((r, seconds)) => {
                            progress(regime, lr, steps, k, &r.0);
                            if matches!(regime, Regime::Gcfl | Regime::GcflPlain) {
                                eprintln!(
                                    "    {} seed {k}: clusters {:?} (splits at rounds {:?})",
                                    regime.name(),
                                    r.1.clusters,
                                    r.1.splits.iter().map(|s| s.0).collect::<Vec<_>>()
                                );
                            }
                            if let Ok(mut t) = times.lock() {
                                *t.entry(ri).or_default() += seconds;
                            }
                            if let Ok(mut m) = results.lock() {
                                m.insert((ri, li, si, k), r);
                            }
                        }
                        Err(e) => {
                            if let Ok(mut fe) = first_error.lock() {
                                fe.get_or_insert(e);
                            }
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut results = results.into_inner().unwrap_or_default();
    let times = times.into_inner().unwrap_or_default();
    let mut out = Vec::new();
    let mut cluster_info = Vec::new();
    let mut reference = serde_json::Map::new();
    for (ri, &regime) in regimes.iter().enumerate() {
        let mut cells = Vec::new();
        let mut logs = Vec::new();
        for (li, &lr) in f.lrs.iter().enumerate() {
            for (si, &steps) in f.local_steps.iter().enumerate() {
                let mut runs = Vec::new();
                let mut cl = Vec::new();
                for k in 0..setups.len() {
                    if let Some((r, l)) = results.remove(&(ri, li, si, k)) {
                        runs.push(r);
                        cl.push((k, l));
                    }
                }
                cells.push(CellResult {
                    lr,
                    local_steps: steps,
                    runs,
                });
                logs.push(cl);
            }
        }
        let selected = select_cell(&cells, false);
        if regime != Regime::Global {
            let per: Vec<f64> = logs[selected]
                .iter()
                .map(|(_, l)| l.reference_test_accuracy)
                .collect();
            // The same spread as the table's own figures.
            let (m, sd) = super::experiment::mean_std(&per);
            reference.insert(
                regime.name().into(),
                json!({"test_accuracy": m, "test_accuracy_std": sd, "per_seed": per}),
            );
        }
        if matches!(regime, Regime::Gcfl | Regime::GcflPlain) {
            for (k, l) in &logs[selected] {
                cluster_info.push(json!({
                    "regime": regime.name(),
                    "seed": k,
                    "final_clusters": l.clusters,
                    "splits": l.splits.iter().map(|(r, h)| json!({"round": r, "clusters": h})).collect::<Vec<_>>(),
                    "family_purity": purity(&l.clusters, &setups[*k].1),
                    "update_norms_mean_max": l.norms,
                    "update_norms_by_cluster": l.cluster_norms,
                }));
            }
        }
        out.push(RegimeResult {
            regime,
            cells,
            selected,
            seconds: times.get(&ri).copied().unwrap_or(0.0),
        });
    }
    Ok(Table {
        dataset: "graph-families".into(),
        regimes: out,
        setups: info,
        fedsage: Vec::new(),
        gcfl: cluster_info,
        reference_eval: (!reference.is_empty()).then(|| {
            reference.insert(
                "how".into(),
                json!("the reference code's figures (Oxfordblue7/GCFL): GCFL/GCFL+ each client's best test accuracy over the models cached at its cluster's splits and at the end; FedAvg and local the last round's; mean over clients. Chosen on the test set, so not the reported metric"),
            );
            serde_json::Value::Object(reference)
        }),
    })
}

/// Draws seed 0's data, so a bad generator setting fails before the run.
pub fn prepare(cfg: &FedGraphConfig) -> Result<(), FedGraphError> {
    graph_zoo(cfg)?;
    if cfg.gcfl.min_side > 1 && cfg.fed.clients > MAX_EXHAUSTIVE {
        return Err(FedGraphError::Usage(format!(
            "gcfl.min_side = {} searches every bipartition, which needs fed.clients <= {MAX_EXHAUSTIVE} (got {})",
            cfg.gcfl.min_side, cfg.fed.clients
        )));
    }
    let d = generate(&cfg.families, cfg.fed.clients, 0)?;
    let mut rng = StdRng::seed_from_u64(0);
    let dev = train_device();
    if let Some(c) = d.first() {
        client_data(
            c,
            cfg.gcfl.batch_size,
            cfg.gcfl.readout == "mean",
            &mut rng,
            &dev,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn input_layer_sits_after_the_shared_prefix_and_reads_any_width() {
        let mut cfg = FedGraphConfig::default();
        cfg.model.arch = "gin".into();
        cfg.model.hidden = 8;
        cfg.model.layers = 2;
        let z = graph_zoo(&cfg).unwrap();
        assert_eq!(z.d_in, 8, "with gcfl.pre the GIN layers read model.hidden");
        let narrow = GraphNet::init(&z, 9, true, 5).unwrap();
        let wide = GraphNet::init(&z, 17, true, 5).unwrap();
        let (a, b) = (flat(&narrow), flat(&wide));
        let shared = narrow.gnn_len();
        assert_eq!(shared, wide.gnn_len());
        // The shared prefix is the message-passing layers, drawn alike for both widths; the
        // input layers (and everything after) follow it and differ in size.
        assert_eq!(a[..shared], b[..shared]);
        assert_eq!(b.len() - a.len(), (17 - 9) * 8);
        let pre_len = |n: &GraphNet| {
            n.pre
                .as_ref()
                .map_or(0, |l| model_params(l).iter().map(|p| p.data.len()).sum())
        };
        assert_eq!(pre_len(&narrow), 9 * 8 + 8);
        // Visiting order: gnn, pre, post, head.
        let first_after = model_params(narrow.pre.as_ref().unwrap())[0].data.clone();
        assert_eq!(a[shared..shared + first_after.len()], first_after[..]);
        // Each reads batches of its own width.
        let dev = train_device();
        let g = super::super::families::sample_graph(
            0,
            true,
            &Default::default(),
            &mut StdRng::seed_from_u64(1),
        );
        let bn = Batch::new(&[&g, &g], false, 8, false, &dev).unwrap();
        let bw = Batch::new(&[&g, &g], false, 16, false, &dev).unwrap();
        assert_eq!(narrow.forward(&bn, 0.0, None).dims(), [2, 2]);
        assert_eq!(wide.forward(&bw, 0.0, None).dims(), [2, 2]);
        // Without an input layer a client must read the shared layer's width.
        assert!(GraphNet::init(&z, 17, false, 5).is_err());
        cfg.gcfl.pre = false;
        let z0 = graph_zoo(&cfg).unwrap();
        assert_eq!(z0.d_in, FEATURES);
        let plain = GraphNet::init(&z0, FEATURES, false, 5).unwrap();
        assert!(plain.pre.is_none());
        assert_eq!(flat(&plain).len(), plain.gnn_len() + 8 * 8 + 8 + 8 * 2 + 2);
    }

    #[test]
    fn dtw_matches_hand_values() {
        assert_eq!(dtw(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]), 0.0);
        // A shifted copy warps onto itself except for the ends.
        assert!((dtw(&[0.0, 1.0, 2.0], &[1.0, 2.0, 2.0]) - 1.0).abs() < 1e-12);
        assert!((dtw(&[0.0, 0.0], &[3.0, 4.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn min_cut_separates_two_cliques() {
        // Two 3-cliques of weight 5 joined by one edge of weight 1.
        let mut w = vec![vec![0.0; 6]; 6];
        for (a, b, x) in [
            (0, 1, 5.0),
            (0, 2, 5.0),
            (1, 2, 5.0),
            (3, 4, 5.0),
            (3, 5, 5.0),
            (4, 5, 5.0),
            (2, 3, 1.0),
        ] {
            w[a][b] = x;
            w[b][a] = x;
        }
        let (cut, side) = min_cut(&w);
        assert_eq!(cut, 1.0);
        assert!(side == vec![0, 1, 2] || side == vec![3, 4, 5], "{side:?}");
        // The exhaustive search agrees, and sizes its sides.
        assert_eq!(min_cut_sized(&w, 2), (1.0, vec![3, 4, 5]));
        // A loosely attached vertex: the global minimum cut takes it off alone, a cut with
        // two on each side does not.
        let mut w = vec![vec![3.0; 5]; 5];
        for (i, row) in w.iter_mut().enumerate() {
            row[i] = 0.0;
            if i != 4 {
                row[4] = 0.5;
            }
        }
        w[4][..4].fill(0.5);
        let (cut, side) = min_cut(&w);
        assert_eq!(cut, 2.0);
        assert!(side == vec![4] || side == vec![0, 1, 2, 3], "{side:?}");
        let (cut, side) = min_cut_sized(&w, 2);
        assert_eq!(side.len().min(5 - side.len()), 2, "{side:?}");
        assert!(cut > 2.0);
    }

    #[test]
    fn cosine_bipartition_reads_the_shared_prefix() {
        // On the first two entries clients 0, 1 point one way and 2, 3 the other; the third
        // entry (not shared) would pair 0 with 2 and 1 with 3.
        let updates = vec![
            vec![1.0, 0.0, 5.0],
            vec![1.0, 0.2, -5.0],
            vec![-1.0, 0.0, 5.0],
            vec![-1.0, -0.2, -5.0],
        ];
        let [mut a, mut b] = bipartition_cosine(&[0, 1, 2, 3], &updates, 2, 1);
        a.sort_unstable();
        b.sort_unstable();
        let parts = [a, b];
        assert!(
            parts.contains(&vec![0, 1]) && parts.contains(&vec![2, 3]),
            "{parts:?}"
        );
        let [mut a, mut b] = bipartition_cosine(&[0, 1, 2, 3], &updates, 3, 1);
        a.sort_unstable();
        b.sort_unstable();
        let parts = [a, b];
        assert!(
            parts.contains(&vec![0, 2]) && parts.contains(&vec![1, 3]),
            "{parts:?}"
        );
    }

    #[test]
    fn split_criterion_and_dtw_bipartition() {
        let g = GcflSection::default();
        // Small mean, large max, enough members, after warm-up, sequences ready: split.
        assert!(should_split(0.01, 0.5, 4, 21, true, &g));
        // Any one condition failing keeps the cluster.
        assert!(!should_split(0.06, 0.5, 4, 21, true, &g));
        assert!(!should_split(0.01, 0.09, 4, 21, true, &g));
        assert!(!should_split(0.01, 0.5, 2, 21, true, &g));
        assert!(!should_split(0.01, 0.5, 4, 20, true, &g));
        assert!(!should_split(0.01, 0.5, 4, 21, false, &g));
        // Clients 0, 2, 4 have falling norm sequences, 1, 3, 5 rising ones.
        let seqs: Vec<Vec<f64>> = (0..6)
            .map(|c| {
                (0..5)
                    .map(|t| {
                        let jitter = 0.01 * c as f64;
                        if c % 2 == 0 {
                            1.0 - 0.15 * t as f64 + jitter
                        } else {
                            0.3 + 0.15 * t as f64 + jitter
                        }
                    })
                    .collect()
            })
            .collect();
        let [a, b] = bipartition(&[0, 1, 2, 3, 4, 5], &seqs, false, 1);
        let (mut a, mut b) = (a, b);
        a.sort_unstable();
        b.sort_unstable();
        let parts = [a, b];
        assert!(
            parts.contains(&vec![0, 2, 4]) && parts.contains(&vec![1, 3, 5]),
            "{parts:?}"
        );
    }
}
