//! FederatedScope-GNN's ModelZoo for node classification (Wang et al., KDD 2022, §4.2;
//! `federatedscope/gfl/model`): GCN, GraphSAGE (mean), GAT, GIN and GPR-GNN, all with the
//! same interface so that a federated algorithm can train any of them.
//!
//! The networks follow FS-G's `*_Net` classes: `L` message-passing layers, and between two
//! layers dropout then ReLU (no dropout on the input unless [`ZooConfig::input_dropout`] is
//! set, which the GAT paper's Cora recipe uses). GPR-GNN is an MLP followed by learned
//! polynomial propagation. Dropout draws its masks from a caller-owned [`StdRng`] instead of
//! burn's process-wide generator, so clients training in parallel threads stay deterministic.
//!
//! Parameters go in and out as flat named tensors ([`model_params`], [`load_params`]) for
//! federated averaging.

pub mod layers;
pub mod train;

use ferrolab_core::burn;
use ferrolab_core::burn::module::{ModuleMapper, ModuleVisitor, Param};
use ferrolab_core::burn::nn::{Linear, LinearConfig};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::activation::{log_softmax, relu};
use ferrolab_core::nn::int_tensor;
use ferrolab_core::sparse::SparseAdj;
use rand::RngExt;
use rand::rngs::StdRng;

use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};
use crate::models::GcnInput;
use crate::norm::{Normalization, normalize};
use layers::{GatConv, GcnConv, GinConv, GprProp, LayerInput, SageConv, linear};

/// The propagation matrices every architecture may need, for one (sub)graph on one device.
#[derive(Debug, Clone)]
pub struct GraphTensors {
    pub num_nodes: usize,
    /// `D̃^-1/2 (A+I) D̃^-1/2` (GCN, GPR-GNN).
    pub gcn: SparseAdj,
    /// `D^-1 A`, no self loops; an isolated node's row is empty (GraphSAGE).
    pub mean: SparseAdj,
    /// `A` (GIN).
    pub sum: SparseAdj,
    /// Edges with one self loop per node, source and destination (GAT).
    pub src: Tensor<1, Int>,
    pub dst: Tensor<1, Int>,
    /// `att_ptr[i]..att_ptr[i+1]`: the attention edges into node i (they are stored grouped
    /// by destination), for a per-destination softmax shift.
    pub att_ptr: Vec<usize>,
    pub num_att_edges: usize,
    pub device: Device,
}

impl GraphTensors {
    /// From a symmetric graph without self loops (self loops present are dropped).
    pub fn new(g: &CsrGraph, device: &Device) -> Result<Self> {
        let n = g.num_nodes();
        let gcn = normalize(g, Normalization::Symmetric).to_sparse_adj(device)?;
        let mut indptr = vec![0usize];
        let mut indices = Vec::with_capacity(g.num_edges());
        let mut mean_vals = Vec::with_capacity(g.num_edges());
        let (mut src, mut dst) = (Vec::new(), Vec::new());
        let mut att_ptr = vec![0usize];
        for i in 0..n {
            let nb: Vec<u32> = g
                .neighbors(i)
                .iter()
                .copied()
                .filter(|&j| j as usize != i)
                .collect();
            let w = if nb.is_empty() {
                0.0
            } else {
                1.0 / nb.len() as f32
            };
            for &j in &nb {
                indices.push(j);
                mean_vals.push(w);
                src.push(i64::from(j));
                dst.push(i as i64);
            }
            src.push(i as i64);
            dst.push(i as i64);
            att_ptr.push(src.len());
            indptr.push(indices.len());
        }
        let mean = SparseAdj::from_csr(n, n, &indptr, &indices, Some(&mean_vals), device)
            .map_err(GraphError::Invalid)?;
        let sum = SparseAdj::from_csr(n, n, &indptr, &indices, None, device)
            .map_err(GraphError::Invalid)?;
        Ok(GraphTensors {
            num_nodes: n,
            gcn,
            mean,
            sum,
            num_att_edges: src.len(),
            src: int_tensor(&src, device),
            dst: int_tensor(&dst, device),
            att_ptr,
            device: device.clone(),
        })
    }
}

/// Which network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Gcn,
    Sage,
    Gat,
    Gin,
    Gpr,
}

impl Arch {
    pub const ALL: [Arch; 5] = [Arch::Gcn, Arch::Sage, Arch::Gat, Arch::Gin, Arch::Gpr];

    /// `gcn`, `sage`, `gat`, `gin` or `gpr`.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "gcn" => Arch::Gcn,
            "sage" => Arch::Sage,
            "gat" => Arch::Gat,
            "gin" => Arch::Gin,
            "gpr" => Arch::Gpr,
            other => {
                return Err(GraphError::config(
                    "model.arch",
                    format!("unknown architecture {other:?} (gcn, sage, gat, gin, gpr)"),
                ));
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Gcn => "gcn",
            Arch::Sage => "sage",
            Arch::Gat => "gat",
            Arch::Gin => "gin",
            Arch::Gpr => "gpr",
        }
    }
}

/// Shape and regularisation of a zoo network.
#[derive(Debug, Clone, PartialEq)]
pub struct ZooConfig {
    pub arch: Arch,
    pub d_in: usize,
    pub d_out: usize,
    /// Hidden width (for GAT: heads × per-head width).
    pub hidden: usize,
    /// Message-passing layers (GPR-GNN: MLP layers), ≥ 1.
    pub layers: usize,
    /// Dropout between layers (and on GAT's attention coefficients).
    pub dropout: f64,
    /// Also drop input features (the GAT and GPR-GNN papers' recipe; FS-G does not).
    pub input_dropout: bool,
    /// GAT heads of the hidden layers (the output layer has one).
    pub heads: usize,
    /// GPR-GNN propagation steps `K` and PageRank teleport `α`.
    pub gpr_k: usize,
    pub gpr_alpha: f64,
    /// How the message-passing weights are drawn.
    pub init: WeightInit,
}

/// Initial weights of the GCN and GAT layers' linear maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightInit {
    /// burn's `Linear` default, U(±1/√fan_in) (PyTorch's `nn.Linear` default too).
    FanIn,
    /// Glorot-uniform, U(±√(6/(fan_in + fan_out))): what PyG's `GCNConv` and `GATConv`
    /// (`weight_initializer='glorot'`) use, and so FS-G's GCN and GAT.
    Glorot,
}

impl WeightInit {
    /// `fan_in` or `glorot`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "fan_in" => Ok(WeightInit::FanIn),
            "glorot" => Ok(WeightInit::Glorot),
            other => Err(GraphError::config(
                "model.init",
                format!("unknown initialisation {other:?} (fan_in, glorot)"),
            )),
        }
    }

    pub(crate) fn linear(self, d_in: usize, d_out: usize, bias: bool, dev: &Device) -> Linear {
        let c = LinearConfig::new(d_in, d_out).with_bias(bias);
        match self {
            WeightInit::FanIn => c.init(dev),
            WeightInit::Glorot => c
                .with_initializer(burn::nn::Initializer::XavierUniform { gain: 1.0 })
                .init(dev),
        }
    }
}

impl ZooConfig {
    /// FS-G's defaults: 2 layers, hidden 64, dropout 0.5; GAT 8 heads; GPR K = 10, α = 0.1.
    pub fn new(arch: Arch, d_in: usize, d_out: usize) -> Self {
        ZooConfig {
            arch,
            d_in,
            d_out,
            hidden: 64,
            layers: 2,
            dropout: 0.5,
            input_dropout: false,
            heads: 8,
            gpr_k: 10,
            gpr_alpha: 0.1,
            init: WeightInit::FanIn,
        }
    }

    /// Refuses shapes that cannot be built.
    pub fn check(&self) -> Result<()> {
        if self.d_in == 0 || self.d_out == 0 || self.hidden == 0 {
            return Err(GraphError::config(
                "model.hidden",
                "input, output and hidden widths must be positive",
            ));
        }
        if self.layers == 0 {
            return Err(GraphError::config("model.layers", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(GraphError::config(
                "model.dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        if self.arch == Arch::Gat && (self.heads == 0 || !self.hidden.is_multiple_of(self.heads)) {
            return Err(GraphError::config(
                "model.heads",
                format!(
                    "hidden width {} must be a positive multiple of the {} heads",
                    self.hidden, self.heads
                ),
            ));
        }
        if self.init == WeightInit::Glorot && !matches!(self.arch, Arch::Gcn | Arch::Gat) {
            return Err(GraphError::config(
                "model.init",
                format!(
                    "glorot is PyG's initialisation of gcn and gat layers; {} keeps fan_in",
                    self.arch.name()
                ),
            ));
        }
        if self.arch == Arch::Gpr && !(self.gpr_alpha > 0.0 && self.gpr_alpha < 1.0) {
            return Err(GraphError::config(
                "model.gpr_alpha",
                format!("must be in (0, 1), got {}", self.gpr_alpha),
            ));
        }
        Ok(())
    }

    /// Builds the network (parameters drawn from the device's generator).
    pub fn init(&self, dev: &Device) -> Result<GnnModel> {
        self.check()?;
        let widths: Vec<(usize, usize)> = (0..self.layers)
            .map(|l| {
                let a = if l == 0 { self.d_in } else { self.hidden };
                let b = if l + 1 == self.layers {
                    self.d_out
                } else {
                    self.hidden
                };
                (a, b)
            })
            .collect();
        let last = self.layers - 1;
        Ok(match self.arch {
            Arch::Gcn => GnnModel::Gcn(
                widths
                    .iter()
                    .map(|&(a, b)| GcnConv::with_init(a, b, self.init, dev))
                    .collect(),
            ),
            Arch::Sage => GnnModel::Sage(
                widths
                    .iter()
                    .map(|&(a, b)| SageConv::new(a, b, dev))
                    .collect(),
            ),
            Arch::Gat => GnnModel::Gat(
                widths
                    .iter()
                    .enumerate()
                    .map(|(l, &(a, b))| {
                        if l == last {
                            GatConv::with_init(a, b, 1, false, self.init, dev)
                        } else {
                            GatConv::with_init(a, b / self.heads, self.heads, true, self.init, dev)
                        }
                    })
                    .collect(),
            ),
            Arch::Gin => GnnModel::Gin(
                widths
                    .iter()
                    .map(|&(a, b)| GinConv::new(a, self.hidden, b, dev))
                    .collect(),
            ),
            Arch::Gpr => GnnModel::Gpr(Gpr {
                mlp: widths
                    .iter()
                    .map(|&(a, b)| LinearConfig::new(a, b).init(dev))
                    .collect(),
                prop: GprProp::new(self.gpr_k, self.gpr_alpha, dev),
            }),
        })
    }
}

/// GPR-GNN: an MLP, then `Σ_k γ_k Â^k`.
#[derive(Module, Debug)]
pub struct Gpr {
    mlp: Vec<Linear>,
    prop: GprProp,
}

/// One of the zoo's networks.
#[derive(Module, Debug)]
pub enum GnnModel {
    Gcn(Vec<GcnConv>),
    Sage(Vec<SageConv>),
    Gat(Vec<GatConv>),
    Gin(Vec<GinConv>),
    Gpr(Gpr),
}

/// Inverted dropout with a mask from `rng`; the identity without one (evaluation) or at 0.
pub fn dropout(t: Tensor<2>, p: f64, rng: Option<&mut StdRng>) -> Tensor<2> {
    let Some(rng) = rng.filter(|_| p > 0.0) else {
        return t;
    };
    let dims = t.dims();
    let scale = (1.0 / (1.0 - p)) as f32;
    let mask: Vec<f32> = (0..dims[0] * dims[1])
        .map(|_| if rng.random::<f64>() < p { 0.0 } else { scale })
        .collect();
    let m = Tensor::from_data(TensorData::new(mask, dims), &t.device());
    t * m
}

fn layer_input(x: &GcnInput) -> LayerInput<'_> {
    match x {
        GcnInput::Sparse(m) => LayerInput::Sparse(m),
        GcnInput::Dense(t) => LayerInput::Dense((**t).clone()),
    }
}

impl GnnModel {
    /// Class logits `[n, d_out]` for features `x: [n, d_in]` on graph `g`. With `rng`,
    /// dropout is active (training); without, the network is deterministic. `p` is the
    /// dropout probability (the model does not store it, so one set of parameters serves
    /// any dropout setting, as federated tuning needs).
    pub fn forward(
        &self,
        g: &GraphTensors,
        x: &GcnInput,
        p: f64,
        mut rng: Option<&mut StdRng>,
    ) -> Tensor<2> {
        let input = layer_input(x);
        let hidden =
            |h: Tensor<2>, rng: &mut Option<&mut StdRng>| relu(dropout(h, p, rng.as_deref_mut()));
        match self {
            GnnModel::Gcn(ls) => {
                let mut h = ls[0].forward(g, &input);
                for l in &ls[1..] {
                    h = l.forward(g, &LayerInput::Dense(hidden(h, &mut rng)));
                }
                h
            }
            GnnModel::Sage(ls) => {
                let mut h = ls[0].forward(g, &input);
                for l in &ls[1..] {
                    h = l.forward(g, &LayerInput::Dense(hidden(h, &mut rng)));
                }
                h
            }
            GnnModel::Gin(ls) => {
                let mut h = ls[0].forward(g, &input);
                for l in &ls[1..] {
                    h = l.forward(g, &LayerInput::Dense(hidden(h, &mut rng)));
                }
                h
            }
            GnnModel::Gat(ls) => {
                let att = |heads: usize, rng: &mut Option<&mut StdRng>| {
                    rng.as_deref_mut().filter(|_| p > 0.0).map(|r| {
                        let ones = Tensor::<2>::ones([g.num_att_edges, heads], &g.device);
                        dropout(ones, p, Some(r))
                    })
                };
                let m = att(ls[0].heads(), &mut rng);
                let mut h = ls[0].forward(g, &input, m);
                for l in &ls[1..] {
                    // GAT's recipe: ELU between layers; FS-G's GAT_Net uses ReLU.
                    let hin = hidden(h, &mut rng);
                    let m = att(l.heads(), &mut rng);
                    h = l.forward(g, &LayerInput::Dense(hin), m);
                }
                h
            }
            GnnModel::Gpr(gpr) => {
                let mut h = linear(&gpr.mlp[0], &input);
                for l in &gpr.mlp[1..] {
                    h = l.forward(hidden(h, &mut rng));
                }
                gpr.prop.forward(g, h)
            }
        }
    }
}

/// Mean cross-entropy of `logits` over the rows `idx` with classes `labels` (one per row of
/// `idx`), as a `[1]` tensor.
pub fn masked_cross_entropy(
    logits: Tensor<2>,
    idx: &Tensor<1, Int>,
    labels: &Tensor<1, Int>,
) -> Tensor<1> {
    let m = idx.dims()[0];
    let lp = log_softmax(logits.select(0, idx.clone()), 1);
    lp.gather(1, labels.clone().reshape([m, 1])).mean().neg()
}

/// Accuracy of row-wise argmax of `logits` (row-major `n × c`) on `nodes`.
pub fn accuracy(logits: &[f32], c: usize, nodes: &[usize], labels: &[usize]) -> f64 {
    if nodes.is_empty() {
        return 0.0;
    }
    let correct = nodes
        .iter()
        .filter(|&&v| {
            let row = &logits[v * c..(v + 1) * c];
            let mut best = 0;
            for k in 1..c {
                if row[k] > row[best] {
                    best = k;
                }
            }
            best == labels[v]
        })
        .count();
    correct as f64 / nodes.len() as f64
}

/// One named parameter: shape and row-major values.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatParam {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

struct Collect(Vec<FlatParam>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        self.0.push(FlatParam {
            name: format!("p{:03}", self.0.len()),
            shape: t.dims().to_vec(),
            data: t.into_data().iter::<f32>().collect(),
        });
    }
}

/// Every float parameter in visiting order, named `p000`, `p001`, ….
pub fn model_params<M: Module>(m: &M) -> Vec<FlatParam> {
    let mut c = Collect(Vec::new());
    m.visit(&mut c);
    c.0
}

/// Replaces every float parameter by an untracked copy of its value.
struct Detach;

impl ModuleMapper for Detach {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        // A new parameter around the value: `Param::set_require_grad` on a lazily initialised
        // parameter would flip the setting its clones share (the original would then train
        // nothing), and `Param::map` re-applies the lazy setting after the map. On the tensor,
        // `set_require_grad(false)` makes an untracked leaf; `detach` would keep the leaf
        // requiring grad, and every op on it tracked.
        Param::initialized(param.id, param.val().set_require_grad(false))
    }
}

/// `m` with every float parameter untracked: a forward pass of the result records nothing in
/// the autodiff graph, and `m` is left as it was. (A forward pass of tracked parameters
/// leaves its nodes until some backward pass sweeps them; a process that only evaluates
/// never runs one.)
pub fn untracked<M: Module>(m: &M) -> M {
    m.clone().map(&mut Detach)
}

struct Load<'a> {
    params: &'a [FlatParam],
    next: usize,
    error: Option<String>,
}

impl ModuleMapper for Load<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let k = self.next;
        self.next += 1;
        let Some(p) = self.params.get(k) else {
            self.error
                .get_or_insert_with(|| format!("only {} parameters given", self.params.len()));
            return param;
        };
        param.map(|t| {
            let dims = t.dims();
            if p.shape != dims || p.data.len() != dims.iter().product::<usize>() {
                self.error.get_or_insert_with(|| {
                    format!(
                        "parameter {} has shape {:?}, the model's is {dims:?}",
                        p.name, p.shape
                    )
                });
                return t;
            }
            let grad = t.is_require_grad();
            Tensor::<D>::from_data(TensorData::new(p.data.clone(), dims), &t.device())
                .set_require_grad(grad)
        })
    }
}

/// `m` with its parameters replaced by `params` (as [`model_params`] lists them); fails on a
/// count or shape mismatch.
pub fn load_params<M: Module>(m: M, params: &[FlatParam]) -> Result<M> {
    let mut l = Load {
        params,
        next: 0,
        error: None,
    };
    let m = m.map(&mut l);
    if let Some(e) = l.error {
        return Err(GraphError::Invalid(e));
    }
    if l.next != params.len() {
        return Err(GraphError::Invalid(format!(
            "{} parameters given, the model has {}",
            params.len(),
            l.next
        )));
    }
    Ok(m)
}
