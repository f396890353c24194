//! FedSage+ (Zhang, Yang, Chen, Yiu, Wang, Zhang & Wang, *Subgraph Federated Learning with
//! Missing Neighbor Generation*, NeurIPS 2021; FederatedScope's `gfl/fedsageplus`).
//!
//! A client's subgraph lacks the edges to the other clients' nodes. FedSage+ trains a
//! missing-neighbour generator **NeighGen** per client and *mends* each subgraph with the
//! neighbours it generates before the classifier is trained by FedAvg:
//!
//! 1. **Targets.** Each client hides a share `h` (`fedsage.hide_portion`) of its validation
//!    nodes, as FS's `HideGraph` does (`fedsage.hide_from = "all"`: of all its nodes); on the
//!    remaining *impaired* graph every node `v` has `m_v` = its number of hidden neighbours
//!    and their features `{x_u}` — what NeighGen must restore.
//! 2. **NeighGen** (paper §3.2): encoder `H = GraphSAGE(G', X)` (2 mean-aggregator layers,
//!    ReLU output); dGen `m̂_v = ReLU(w_dᵀ h_v + b)`; fGen `x̂_v = σ(W_2 ReLU(W_1 (h_v + ε)))`,
//!    `ε ~ N(0, s²)`, reshaped to `num_pred` feature vectors. Losses (eqs. 3–5): smooth-L1 on
//!    the count; the greedy feature loss `Σ_{p < min(m_v, P)} min_u ‖x̂_{v,p} − x_u‖² / F`,
//!    averaged over the generated slots.
//! 3. **Federated training** (FedSage+, eq. 5): client `i`'s generator `θ_i` is updated with
//!    `∇L_i(θ_i) + α/(K−1) Σ_{j≠i} ∇L^f_j(θ_i)`: the server relays `θ_i` to every other client
//!    `j`, which returns the gradient of its *feature* loss at `θ_i` on its own impaired graph
//!    (its raw features never leave it). Each generator steps with Adam (as FS does).
//! 4. **Mending** (paper §3.3): with its trained generator reading the impaired graph (FS's
//!    `GraphMender`; `fedsage.mend_on = "whole"`: the whole subgraph), each client attaches
//!    `round(clamp(m̂_v, 0, P))` generated nodes to every node `v` it predicted for (features
//!    the first slots of `x̂_v`, no noise, no label, in no split); the classifier is then
//!    trained by FedAvg on the mended subgraphs and evaluated by the server on the whole
//!    real graph, exactly as FedAvg is.
//!
//! Differences from FS's implementation, all configurable or stated: FS's fGen has two
//! hidden layers (256, 2048) and a tanh output; ours one hidden layer of `gen_hidden` and a
//! sigmoid (the bag-of-words features are 0/1); FS also trains a classifier jointly with the
//! generator on the impaired graph (LocSage+'s `c` term), which we leave out; FS trains the
//! generator 200 rounds, our default is 50 (`fedsage.gen_rounds`); FS pre-trains each
//! generator locally for one epoch and then freezes its encoder and count regressor, so that
//! the federated rounds train the feature generator only — ours trains all of NeighGen in
//! every round unless `fedsage.pretrain_steps` and `fedsage.freeze` ask for FS's schedule.
//! The message exchange of step 3 runs as function calls inside this process (bytes counted
//! as if sent) in [`mend_clients`], or as messages between client processes over a fabric
//! ([`super::fedsage_fabric`], `fed.runtime = "nats"`); each client's side is a
//! [`GenClient`] either way, so both give the same generators bit for bit.

use ferrolab_core::backend::train_device;
use ferrolab_core::burn;
use ferrolab_core::burn::module::{ModuleVisitor, Param};
use ferrolab_core::burn::nn::{Linear, LinearConfig};
use ferrolab_core::burn::optim::GradientsParams;
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::activation::{relu, sigmoid};
use ferrolab_core::nn::{float_tensor, to_vec_f32};
use ferrolab_data::{Features, Split};
use ferrolab_graph::CsrGraph;
use ferrolab_graph::models::GcnInput;
use ferrolab_graph::zoo::train::NodeTask;
use ferrolab_graph::zoo::{
    Arch, FlatParam, GnnModel, GraphTensors, ZooConfig, load_params, model_params,
};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::FedGraphError;
use super::config::FedSageSection;
use super::data::{GraphSet, SeedSetup};

/// NeighGen: encoder, missing-count regressor (dGen) and feature generator (fGen).
#[derive(Module, Debug)]
pub struct NeighGen {
    encoder: GnnModel,
    dgen: Linear,
    fgen1: Linear,
    fgen2: Linear,
}

/// Shapes of a [`NeighGen`].
#[derive(Debug, Clone, PartialEq)]
pub struct NeighGenConfig {
    pub d_in: usize,
    pub enc_dim: usize,
    pub gen_hidden: usize,
    pub num_pred: usize,
    /// Encoder dropout (FS uses the classifier's, 0.5).
    pub dropout: f64,
}

impl NeighGenConfig {
    fn encoder(&self) -> ZooConfig {
        ZooConfig {
            hidden: self.enc_dim,
            layers: 2,
            dropout: self.dropout,
            ..ZooConfig::new(Arch::Sage, self.d_in, self.enc_dim)
        }
    }

    /// A fresh generator drawn from the backend's generator seeded with `seed`.
    pub fn init(&self, seed: u64) -> Result<NeighGen, FedGraphError> {
        ferrolab_core::backend::init_seeded(seed, |dev| {
            Ok(NeighGen {
                encoder: self.encoder().init(dev)?,
                dgen: LinearConfig::new(self.enc_dim, 1).init(dev),
                fgen1: LinearConfig::new(self.enc_dim, self.gen_hidden).init(dev),
                fgen2: LinearConfig::new(self.gen_hidden, self.num_pred * self.d_in).init(dev),
            })
        })
    }
}

impl NeighGen {
    /// Node embeddings `[n, enc_dim]` (ReLU of the encoder); dropout only with `rng`.
    pub fn embed(
        &self,
        g: &GraphTensors,
        x: &GcnInput,
        p: f64,
        rng: Option<&mut StdRng>,
    ) -> Tensor<2> {
        relu(self.encoder.forward(g, x, p, rng))
    }

    /// Predicted missing-neighbour counts `[n, 1]`.
    pub fn counts(&self, emb: Tensor<2>) -> Tensor<2> {
        relu(self.dgen.forward(emb))
    }

    /// Generated features `[n, num_pred · d_in]` (slot `p` of node `v` at columns
    /// `p·d_in..(p+1)·d_in`), each in (0, 1).
    pub fn features(&self, z: Tensor<2>) -> Tensor<2> {
        sigmoid(self.fgen2.forward(relu(self.fgen1.forward(z))))
    }
}

/// One client's generator-training data: the impaired graph and what was hidden from it,
/// and its whole subgraph (to be mended).
#[derive(Debug, Clone)]
pub struct GenData {
    /// The impaired graph (hidden nodes removed).
    pub impaired: NodeTask,
    /// Hidden neighbours per impaired node (true count, before clamping).
    pub missing_count: Vec<usize>,
    /// Their feature rows, dense, concatenated per node (`missing_count[v] · d_in` values).
    pub missing_feats: Vec<Vec<f32>>,
    /// The client's whole subgraph and its feature rows (global ids), for mending.
    pub sub: CsrGraph,
    pub nodes: Vec<usize>,
    /// Local ids (in `sub`) of the impaired graph's nodes, in its order.
    pub kept: Vec<usize>,
}

/// A mended client subgraph as plain data (shareable between threads; tasks are built
/// where they are trained).
#[derive(Debug, Clone)]
pub struct Mended {
    pub graph: CsrGraph,
    pub features: Features,
    pub labels: Vec<usize>,
    pub split: Split,
    /// Generated nodes added.
    pub added: usize,
}

impl Mended {
    pub fn task(&self, classes: usize, dev: &Device) -> Result<NodeTask, FedGraphError> {
        let rows: Vec<usize> = (0..self.graph.num_nodes()).collect();
        Ok(NodeTask::new(
            &self.graph,
            &self.features,
            &rows,
            self.labels.clone(),
            classes,
            self.split.clone(),
            dev,
        )?)
    }
}

fn dense_row(f: &Features, r: usize) -> Vec<f32> {
    let mut out = vec![0f32; f.num_features()];
    f.row_dense(r, &mut out);
    out
}

/// Which of a client's nodes may be hidden to make NeighGen's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HideFrom {
    /// A share of the client's validation nodes (FS's `HideGraph`), `⌊share · |val|⌋`.
    Val,
    /// A share of all the client's nodes, rounded.
    All,
}

/// Hides `hide` of client `c`'s nodes of the `from` pool (seeded) and records what each
/// remaining node lost.
pub fn gen_data(
    g: &GraphSet,
    setup: &SeedSetup,
    c: usize,
    (hide, from): (f64, HideFrom),
    seed: u64,
    dev: &Device,
) -> Result<GenData, FedGraphError> {
    let (sub, nodes) = setup.clients.subgraph(&g.graph, c)?;
    let n = nodes.len();
    let mut pool: Vec<usize> = match from {
        HideFrom::All => (0..n).collect(),
        HideFrom::Val => {
            let val: std::collections::HashSet<usize> = setup.split.val.iter().copied().collect();
            (0..n).filter(|&v| val.contains(&nodes[v])).collect()
        }
    };
    let mut rng = StdRng::seed_from_u64(seed);
    for i in (1..pool.len()).rev() {
        let j = ((rng.random::<f64>() * (i + 1) as f64) as usize).min(i);
        pool.swap(i, j);
    }
    let n_hide = match from {
        HideFrom::All => (pool.len() as f64 * hide).round() as usize,
        HideFrom::Val => (pool.len() as f64 * hide).floor() as usize,
    }
    .min(n.saturating_sub(1));
    let mut hidden = vec![false; n];
    for &v in &pool[..n_hide] {
        hidden[v] = true;
    }
    let kept: Vec<usize> = (0..n).filter(|&v| !hidden[v]).collect();
    let (imp, _) = sub.induced_subgraph(&kept)?;
    let mut missing_count = Vec::with_capacity(kept.len());
    let mut missing_feats = Vec::with_capacity(kept.len());
    for &v in &kept {
        let lost: Vec<usize> = sub
            .neighbors(v)
            .iter()
            .map(|&u| u as usize)
            .filter(|&u| u != v && hidden[u])
            .collect();
        missing_count.push(lost.len());
        missing_feats.push(
            lost.iter()
                .flat_map(|&u| dense_row(&g.features, nodes[u]))
                .collect(),
        );
    }
    let rows: Vec<usize> = kept.iter().map(|&v| nodes[v]).collect();
    let labels = rows.iter().map(|&v| g.labels[v]).collect();
    let impaired = NodeTask::new(
        &imp,
        &g.features,
        &rows,
        labels,
        g.classes,
        Split::default(),
        dev,
    )?;
    Ok(GenData {
        impaired,
        missing_count,
        missing_feats,
        sub,
        nodes,
        kept,
    })
}

/// Smooth-L1 (Huber, δ = 1) of `d`, mean: `0.5 d²` for `|d| < 1`, `|d| − 0.5` beyond.
fn smooth_l1(d: Tensor<2>) -> Tensor<1> {
    let a = d.abs();
    let q = a.clone().clamp_max(1.0);
    (q.clone() * (a - q * 0.5)).mean()
}

/// Standard normal draws (Box–Muller) from `rng`.
fn gaussian(n: usize, std: f64, rng: &mut StdRng) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u1 = rng.random::<f64>().max(1e-300);
            let u2 = rng.random::<f64>();
            (std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect()
}

/// The count loss and the greedy feature loss of `model` on `d`.
fn losses(
    model: &NeighGen,
    d: &GenData,
    cfg: &NeighGenConfig,
    noise: f64,
    rng: &mut StdRng,
) -> (Tensor<1>, Tensor<1>) {
    let t = &d.impaired;
    let dev = t.graph.device.clone();
    let n = t.graph.num_nodes;
    let (p, f) = (cfg.num_pred, cfg.d_in);
    let emb = model.embed(&t.graph, &t.x, cfg.dropout, Some(rng));
    let truth: Vec<f32> = d.missing_count.iter().map(|&m| m.min(p) as f32).collect();
    let count_loss = smooth_l1(model.counts(emb.clone()) - float_tensor(truth, [n, 1], &dev));
    let z = if noise > 0.0 {
        emb + float_tensor(
            gaussian(n * cfg.enc_dim, noise, rng),
            [n, cfg.enc_dim],
            &dev,
        )
    } else {
        emb
    };
    let generated = model.features(z);
    // Greedy matching on the detached values: each generated slot is pulled towards the
    // nearest true missing neighbour (the gradient of a min is that of its argmin).
    let vals = to_vec_f32(generated.clone().detach());
    let mut target = vec![0f32; n * p * f];
    let mut mask = vec![0f32; n * p * f];
    let mut slots = 0usize;
    for v in 0..n {
        let m = d.missing_count[v];
        let feats = &d.missing_feats[v];
        for s in 0..m.min(p) {
            let off = v * p * f + s * f;
            let slot = &vals[off..off + f];
            let mut best = (f32::INFINITY, 0);
            for u in 0..m {
                let row = &feats[u * f..(u + 1) * f];
                let dist: f32 = slot.iter().zip(row).map(|(a, b)| (a - b) * (a - b)).sum();
                if dist < best.0 {
                    best = (dist, u);
                }
            }
            target[off..off + f].copy_from_slice(&feats[best.1 * f..(best.1 + 1) * f]);
            mask[off..off + f].fill(1.0);
            slots += 1;
        }
    }
    let diff = generated - float_tensor(target, [n, p * f], &dev);
    let feat_loss = (diff.clone() * diff * float_tensor(mask, [n, p * f], &dev)).sum()
        / (slots.max(1) * f) as f32;
    (count_loss, feat_loss)
}

struct Grads<'a> {
    grads: &'a GradientsParams,
    out: Vec<f32>,
}

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let len: usize = param.val().dims().iter().product();
        match self.grads.get::<D>(param.id) {
            Some(g) => self.out.extend(g.into_data().iter::<f32>()),
            // A parameter the loss does not reach has a zero gradient.
            None => self.out.extend(std::iter::repeat_n(0.0, len)),
        }
    }
}

/// The gradient of `loss` with respect to every float parameter of `model`, flat, in
/// [`model_params`] order.
fn flat_grad(model: &NeighGen, loss: Tensor<1>) -> Vec<f32> {
    let grads = GradientsParams::from_grads(loss.backward(), model);
    let mut v = Grads {
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

fn flatten(p: &[FlatParam]) -> Vec<f32> {
    p.iter().flat_map(|x| x.data.iter().copied()).collect()
}

fn unflatten(template: &[FlatParam], flat: &[f32]) -> Vec<FlatParam> {
    let mut off = 0;
    template
        .iter()
        .map(|t| {
            let n = t.data.len();
            let data = flat[off..off + n].to_vec();
            off += n;
            FlatParam {
                name: t.name.clone(),
                shape: t.shape.clone(),
                data,
            }
        })
        .collect()
}

/// Adam on a flat parameter vector (the generators step outside burn's optimiser because
/// their gradients are sums assembled from several clients).
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// One step of the parameters from index `from` on; those before it are frozen (they
    /// keep their values and moments, as parameters outside a torch optimiser do).
    fn step(&mut self, theta: &mut [f32], g: &[f32], lr: f64, from: usize) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (((th, &gi), m), v) in theta
            .iter_mut()
            .zip(g)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
            .skip(from)
        {
            *m = b1 * *m + (1.0 - b1) * gi;
            *v = b2 * *v + (1.0 - b2) * gi * gi;
            *th -= lr as f32 * (*m / c1) / ((*v / c2).sqrt() + eps);
        }
    }
}

/// What the generator stage did, for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenStats {
    /// Per client: final count loss and feature loss on its own impaired graph.
    pub count_loss: Vec<f64>,
    pub feat_loss: Vec<f64>,
    /// Generated nodes added per client.
    pub added: Vec<usize>,
    /// Bytes the server relayed (generators out, gradients back; float32).
    pub server_bytes: u64,
}

/// One client's side of the generator stage: its impaired graph and what was hidden from it,
/// its generator (parameters and Adam state) and its random stream. [`mend_clients`] runs
/// one per client in this process; over a fabric each lives in its client's process
/// ([`super::fedsage_fabric::FedSageClient`]), and the run is the same bit for bit.
pub struct GenClient {
    c: usize,
    k: usize,
    data: GenData,
    cfg: NeighGenConfig,
    fs: FedSageSection,
    template: Vec<FlatParam>,
    model: Option<NeighGen>,
    theta: Vec<f32>,
    adam: Adam,
    rng: StdRng,
    /// Where the trained part of the flat parameters starts (`fedsage.freeze`).
    fgen_from: usize,
    /// This round's gradient of the client's own losses at its own generator.
    own: Option<Vec<f32>>,
}

impl std::fmt::Debug for GenClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GenClient({} of {}, {} generator parameters)",
            self.c,
            self.k,
            self.theta.len()
        )
    }
}

impl GenClient {
    /// Client `c` of the seed's `setup` (its hidden nodes drawn from `seed`), the generator
    /// as every client starts it.
    pub fn new(
        g: &GraphSet,
        setup: &SeedSetup,
        c: usize,
        fs: &FedSageSection,
        dropout: f64,
        seed: u64,
        dev: &Device,
    ) -> Result<Self, FedGraphError> {
        let k = setup.clients.num_clients();
        if c >= k {
            return Err(FedGraphError::Usage(format!(
                "client id {c}: the run has clients 0..{k}"
            )));
        }
        let cfg = NeighGenConfig {
            d_in: g.features.num_features(),
            enc_dim: fs.enc_dim,
            gen_hidden: fs.gen_hidden,
            num_pred: fs.num_pred,
            dropout,
        };
        let hide_from = if fs.hide_from == "all" {
            HideFrom::All
        } else {
            HideFrom::Val
        };
        let data = gen_data(
            g,
            setup,
            c,
            (fs.hide_portion, hide_from),
            ferrolab_core::seed::derive(seed, &format!("hide{c}")),
            dev,
        )?;
        let init = cfg.init(ferrolab_core::seed::derive(seed, "neighgen"))?;
        let template = model_params(&init);
        let theta = flatten(&template);
        // NeighGen's fields are visited in declaration order (encoder, dgen, fgen1, fgen2),
        // so the feature generator is the tail of the flat vector.
        let fgen_from = if fs.freeze {
            flatten(&model_params(&init.encoder)).len() + flatten(&model_params(&init.dgen)).len()
        } else {
            0
        };
        Ok(GenClient {
            c,
            k,
            data,
            cfg,
            fs: fs.clone(),
            template,
            model: Some(init),
            adam: Adam::new(theta.len()),
            theta,
            rng: StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, &format!("gen{c}"))),
            fgen_from,
            own: None,
        })
    }

    /// This client's generator parameters, flat.
    pub fn theta(&self) -> &[f32] {
        &self.theta
    }

    /// Whether the federated rounds relay generators between clients (FedSage+'s cross
    /// term): more than one client and `fedsage.cross_weight` > 0.
    pub fn crosses(&self) -> bool {
        self.k > 1 && self.fs.cross_weight > 0.0
    }

    /// The generator with `theta` loaded.
    fn load(&mut self, theta: &[f32]) -> Result<NeighGen, FedGraphError> {
        if theta.len() != self.theta.len() {
            return Err(FedGraphError::Usage(format!(
                "a generator of {} parameters for a generator of {}",
                theta.len(),
                self.theta.len()
            )));
        }
        let model = self
            .model
            .take()
            .ok_or_else(|| FedGraphError::Usage("generator lost by an earlier failure".into()))?;
        Ok(load_params(model, &unflatten(&self.template, theta))?)
    }

    /// The gradient at `theta` of the own losses (`own`) or of the feature loss alone.
    fn grad_at(&mut self, theta: &[f32], own: bool) -> Result<Vec<f32>, FedGraphError> {
        let model = self.load(theta)?;
        let (cl, fl) = losses(&model, &self.data, &self.cfg, self.fs.noise, &mut self.rng);
        let loss = if own {
            cl + fl * self.fs.feat_weight as f32
        } else {
            fl
        };
        let g = flat_grad(&model, loss);
        self.model = Some(model);
        if g.iter().any(|x| !x.is_finite()) {
            // Nothing a generator could be mended with; and no fabric carries it.
            return Err(FedGraphError::Usage(format!(
                "client {}'s generator diverged (non-finite gradient): lower fedsage.gen_lr",
                self.c
            )));
        }
        Ok(g)
    }

    /// FS's local pre-training: `fedsage.pretrain_steps` Adam steps on the own losses (every
    /// part of the generator); then a fresh optimiser for the federated stage, as FS builds a
    /// new trainer for it.
    pub fn pretrain(&mut self) -> Result<(), FedGraphError> {
        for _ in 0..self.fs.pretrain_steps {
            let theta = self.theta.clone();
            let g = self.grad_at(&theta, true)?;
            self.adam.step(&mut self.theta, &g, self.fs.gen_lr, 0);
            self.check_theta()?;
        }
        if self.fs.pretrain_steps > 0 {
            self.adam = Adam::new(self.theta.len());
        }
        Ok(())
    }

    /// A federated round's gradients from this client: of its own losses at its own
    /// generator (kept for [`GenClient::step`]) and, when [`GenClient::crosses`], of its
    /// feature loss at every other client's generator `others` (`(client, θ)`, by client),
    /// returned in that order. Computed in client order, own included, which fixes the
    /// random stream's use.
    pub fn round_grads(
        &mut self,
        others: &[(usize, &[f32])],
    ) -> Result<Vec<Vec<f32>>, FedGraphError> {
        let crosses = self.crosses();
        let mut out = Vec::with_capacity(others.len());
        let mut own_done = false;
        for &(i, theta) in others.iter().filter(|_| crosses) {
            if i > self.c && !own_done {
                let own = self.theta.clone();
                self.own = Some(self.grad_at(&own, true)?);
                own_done = true;
            }
            out.push(self.grad_at(theta, false)?);
        }
        if !own_done {
            let own = self.theta.clone();
            self.own = Some(self.grad_at(&own, true)?);
        }
        Ok(out)
    }

    /// The round's Adam step: the own gradient plus `α/(K−1)` times each other client's
    /// feature-loss gradient at this generator (`cross`, by client), added in that order.
    pub fn step(&mut self, cross: &[&[f32]]) -> Result<(), FedGraphError> {
        let want = if self.crosses() { self.k - 1 } else { 0 };
        if cross.len() != want || cross.iter().any(|gj| gj.len() != self.theta.len()) {
            return Err(FedGraphError::Usage(format!(
                "a generator step needs {want} relayed gradients of {} values; got {} of lengths {:?}",
                self.theta.len(),
                cross.len(),
                cross.iter().map(|g| g.len()).collect::<Vec<_>>()
            )));
        }
        let mut g = self.own.take().ok_or_else(|| {
            FedGraphError::Usage("a generator step without this round's own gradient".into())
        })?;
        if self.crosses() {
            let w = (self.fs.cross_weight * self.fs.feat_weight / (self.k - 1) as f64) as f32;
            for gj in cross {
                for (a, b) in g.iter_mut().zip(gj.iter()) {
                    *a += w * b;
                }
            }
        }
        self.adam
            .step(&mut self.theta, &g, self.fs.gen_lr, self.fgen_from);
        self.check_theta()
    }

    /// A generator with a non-finite parameter mends nothing sensibly (and no fabric carries
    /// it): an error naming the client.
    fn check_theta(&self) -> Result<(), FedGraphError> {
        if self.theta.iter().any(|x| !x.is_finite()) {
            return Err(FedGraphError::Usage(format!(
                "client {}'s generator diverged (non-finite parameters): lower fedsage.gen_lr",
                self.c
            )));
        }
        Ok(())
    }

    /// The trained generator's count and feature loss on the impaired graph (no noise, the
    /// `eval` stream of `seed`) and the client's whole subgraph mended by it.
    pub fn finish(
        &mut self,
        g: &GraphSet,
        setup: &SeedSetup,
        seed: u64,
        dev: &Device,
    ) -> Result<(Mended, f64, f64), FedGraphError> {
        let theta = self.theta.clone();
        let model = self.load(&theta)?;
        let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "eval"));
        let (cl, fl) = losses(&model, &self.data, &self.cfg, 0.0, &mut rng);
        let count = f64::from(to_vec_f32(cl.detach())[0]);
        let feat = f64::from(to_vec_f32(fl.detach())[0]);
        let whole = self.fs.mend_on == "whole";
        let m = mend(g, setup, self.c, &self.data, &model, &self.cfg, whole, dev);
        self.model = Some(model);
        Ok((m?, count, feat))
    }
}

/// Parameters of one generator for a graph of `d_in` features.
pub fn gen_len(d_in: usize, fs: &FedSageSection) -> Result<usize, FedGraphError> {
    let cfg = NeighGenConfig {
        d_in,
        enc_dim: fs.enc_dim,
        gen_hidden: fs.gen_hidden,
        num_pred: fs.num_pred,
        dropout: 0.0,
    };
    Ok(flatten(&model_params(&cfg.init(0)?)).len())
}

/// Bytes one federated round of the generator stage relays through the server, as counted
/// since FedSage+ was built: per client, its generator to the `K − 1` others and their
/// gradients back, both ways (float32).
pub fn gen_round_bytes(k: usize, theta_len: usize) -> u64 {
    4 * (k as u64).saturating_sub(1) * (theta_len * 4) as u64 * k as u64
}

/// Trains one NeighGen per client federatedly (FedSage+) and mends every client's
/// subgraph. Deterministic for a seed.
pub fn mend_clients(
    g: &GraphSet,
    setup: &SeedSetup,
    fs: &FedSageSection,
    dropout: f64,
    seed: u64,
) -> Result<(Vec<Mended>, GenStats), FedGraphError> {
    let dev = train_device();
    let k = setup.clients.num_clients();
    let mut clients = (0..k)
        .map(|c| GenClient::new(g, setup, c, fs, dropout, seed, &dev))
        .collect::<Result<Vec<_>, _>>()?;
    let mut stats = GenStats::default();
    for cl in &mut clients {
        cl.pretrain()?;
    }
    for _round in 0..fs.gen_rounds {
        let thetas: Vec<Vec<f32>> = clients.iter().map(|c| c.theta.clone()).collect();
        let mut grads: Vec<Vec<Vec<f32>>> = Vec::with_capacity(k);
        for (j, cl) in clients.iter_mut().enumerate() {
            let others: Vec<(usize, &[f32])> = (0..k)
                .filter(|&i| i != j)
                .map(|i| (i, thetas[i].as_slice()))
                .collect();
            grads.push(cl.round_grads(&others)?);
        }
        if clients.first().is_some_and(GenClient::crosses) {
            stats.server_bytes += gen_round_bytes(k, thetas[0].len());
        }
        for (i, cl) in clients.iter_mut().enumerate() {
            // Client j's gradient at θ_i sits at i's place among j's others.
            let cross: Vec<&[f32]> = (0..k)
                .filter(|&j| j != i)
                .filter_map(|j| grads[j].get(if i < j { i } else { i - 1 }))
                .map(Vec::as_slice)
                .collect();
            // A client that relayed nothing (no cross term) leaves `cross` empty, which
            // `step` checks against what it expects.
            cl.step(&cross)?;
        }
    }
    let mut out = Vec::with_capacity(k);
    for cl in &mut clients {
        let (m, count, feat) = cl.finish(g, setup, seed, &dev)?;
        stats.count_loss.push(count);
        stats.feat_loss.push(feat);
        stats.added.push(m.added);
        out.push(m);
    }
    Ok((out, stats))
}

/// Client `c`'s whole subgraph with generated neighbours attached. The generator reads the
/// whole subgraph (`whole`) or, as FS's `GraphMender` does, the impaired graph it was trained
/// on, whose nodes map back to the subgraph through `d.kept` (hidden nodes get none).
#[allow(clippy::too_many_arguments)]
fn mend(
    g: &GraphSet,
    setup: &SeedSetup,
    c: usize,
    d: &GenData,
    model: &NeighGen,
    cfg: &NeighGenConfig,
    whole: bool,
    dev: &Device,
) -> Result<Mended, FedGraphError> {
    let full = setup.client_task(g, c, dev)?;
    let n = full.graph.num_nodes;
    let (p, f) = (cfg.num_pred, cfg.d_in);
    let (read, local): (&NodeTask, Vec<usize>) = if whole {
        (&full, (0..n).collect())
    } else {
        (&d.impaired, d.kept.clone())
    };
    let emb = model.embed(&read.graph, &read.x, 0.0, None);
    let read_counts = to_vec_f32(model.counts(emb.clone()).detach());
    let read_generated = to_vec_f32(model.features(emb).detach());
    // Per subgraph node: its predicted count and the row of its generated features.
    let mut counts = vec![0f32; n];
    let mut row_of = vec![0usize; n];
    for (i, &v) in local.iter().enumerate() {
        counts[v] = read_counts[i];
        row_of[v] = i;
    }
    let generated = |v: usize, s: usize| {
        let at = row_of[v] * p * f + s * f;
        &read_generated[at..at + f]
    };
    let mut values: Vec<f32> = d
        .nodes
        .iter()
        .flat_map(|&v| dense_row(&g.features, v))
        .collect();
    let mut extra: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut new_of: Vec<usize> = Vec::new();
    for v in 0..n {
        let kv = (counts[v].max(0.0).round() as usize).min(p);
        for s in 0..kv {
            let id = n + new_of.len();
            extra[v].push(id as u32);
            new_of.push(v);
            values.extend_from_slice(generated(v, s));
        }
    }
    let total = n + new_of.len();
    let mut indptr = Vec::with_capacity(total + 1);
    let mut indices = Vec::new();
    indptr.push(0);
    for (v, ex) in extra.iter().enumerate() {
        let mut nb: Vec<u32> = d.sub.neighbors(v).to_vec();
        nb.extend_from_slice(ex);
        nb.sort_unstable();
        indices.extend(nb);
        indptr.push(indices.len());
    }
    for &owner in &new_of {
        indices.push(owner as u32);
        indptr.push(indices.len());
    }
    let graph = CsrGraph::new(indptr, indices)?;
    let mut labels = full.labels.clone();
    // Generated nodes carry no label and are in no split; 0 only fills the slot.
    labels.resize(total, 0);
    Ok(Mended {
        graph,
        features: Features::Dense {
            rows: total,
            cols: f,
            values,
        },
        labels,
        split: full.split.clone(),
        added: new_of.len(),
    })
}
