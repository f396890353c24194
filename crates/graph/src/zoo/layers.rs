//! The message-passing layers of FederatedScope-GNN's ModelZoo, on sparse propagation
//! ([`SparseAdj::propagate`], gather/scatter with autodiff).
//!
//! - GCN (Kipf & Welling, ICLR 2017, eq. 2): `H' = Â H W + b`, `Â = D̃^-1/2 (A+I) D̃^-1/2`.
//! - GraphSAGE, mean aggregator (Hamilton et al., NeurIPS 2017; PyG's `SAGEConv`):
//!   `h'_i = W_l mean_{j∈N(i)} h_j + b + W_r h_i`.
//! - GAT (Veličković et al., ICLR 2018, eqs. 3–4): `α_ij = softmax_j LeakyReLU_0.2(a_sᵀ W h_j
//!   + a_dᵀ W h_i)` over `j ∈ N(i) ∪ {i}`, `h'_i = Σ_j α_ij W h_j`, per head.
//! - GIN (Xu et al., ICLR 2019, eq. 4.1): `h'_i = MLP((1+ε) h_i + Σ_{j∈N(i)} h_j)`, ε = 0.
//! - GPR-GNN (Chien et al., ICLR 2021, eq. 2): `Z = Σ_{k=0}^{K} γ_k Â^k H`, `γ` learned,
//!   initialised to personalised PageRank `γ_k = α(1−α)^k`, `γ_K = (1−α)^K`.
//!
//! Every first layer multiplies the input by its weight before propagating (`Â (X W)`), so a
//! sparse bag-of-words input never becomes dense.

use ferrolab_core::burn;
use ferrolab_core::burn::module::Param;
use ferrolab_core::burn::nn::{Linear, LinearConfig};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::IndexingUpdateOp;
use ferrolab_core::burn::tensor::activation::{leaky_relu, relu};
use ferrolab_core::sparse::SparseAdj;

use super::{GraphTensors, WeightInit};

/// A layer's input: sparse rows (only the first layer, bag-of-words) or a dense tensor.
// Lives for one layer call on the stack; boxing the tensor handle would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum LayerInput<'a> {
    Sparse(&'a SparseAdj),
    Dense(Tensor<2>),
}

impl LayerInput<'_> {
    /// `H W` for `w: [d_in, d_out]`.
    pub fn times(&self, w: Tensor<2>) -> Tensor<2> {
        match self {
            LayerInput::Sparse(x) => x.propagate(w),
            LayerInput::Dense(h) => h.clone().matmul(w),
        }
    }
}

/// `H W + b` of a burn `Linear` on either kind of input.
pub fn linear(l: &Linear, h: &LayerInput<'_>) -> Tensor<2> {
    let out = h.times(l.weight.val());
    match &l.bias {
        Some(b) => out + b.val().unsqueeze_dim(0),
        None => out,
    }
}

fn bias_add(t: Tensor<2>, b: &Param<Tensor<1>>) -> Tensor<2> {
    t + b.val().unsqueeze_dim(0)
}

/// GCN layer: `Â (H W) + b`.
#[derive(Module, Debug)]
pub struct GcnConv {
    lin: Linear,
    bias: Param<Tensor<1>>,
}

impl GcnConv {
    pub fn new(d_in: usize, d_out: usize, dev: &Device) -> Self {
        Self::with_init(d_in, d_out, WeightInit::FanIn, dev)
    }

    pub fn with_init(d_in: usize, d_out: usize, init: WeightInit, dev: &Device) -> Self {
        GcnConv {
            lin: init.linear(d_in, d_out, false, dev),
            bias: Param::from_tensor(Tensor::zeros([d_out], dev)),
        }
    }

    /// `h: [n, d_in] → [n, d_out]`.
    pub fn forward(&self, g: &GraphTensors, h: &LayerInput<'_>) -> Tensor<2> {
        bias_add(g.gcn.propagate(linear(&self.lin, h)), &self.bias)
    }
}

/// GraphSAGE layer, mean aggregator with root weight.
#[derive(Module, Debug)]
pub struct SageConv {
    neigh: Linear,
    root: Linear,
}

impl SageConv {
    pub fn new(d_in: usize, d_out: usize, dev: &Device) -> Self {
        SageConv {
            neigh: LinearConfig::new(d_in, d_out).init(dev),
            root: LinearConfig::new(d_in, d_out).with_bias(false).init(dev),
        }
    }

    /// `h: [n, d_in] → [n, d_out]`.
    pub fn forward(&self, g: &GraphTensors, h: &LayerInput<'_>) -> Tensor<2> {
        g.mean.propagate(h.times(self.neigh.weight.val()))
            + linear(&self.root, h)
            + match &self.neigh.bias {
                Some(b) => b.val().unsqueeze_dim(0),
                None => Tensor::zeros([1, self.neigh.weight.dims()[1]], &g.device),
            }
    }
}

/// GAT layer with `heads` heads of width `d_head`, concatenated or averaged.
#[derive(Module, Debug)]
pub struct GatConv {
    lin: Linear,
    /// `[heads, d_head]` each.
    att_src: Param<Tensor<2>>,
    att_dst: Param<Tensor<2>>,
    bias: Param<Tensor<1>>,
    heads: usize,
    d_head: usize,
    concat: bool,
}

impl GatConv {
    pub fn new(d_in: usize, d_head: usize, heads: usize, concat: bool, dev: &Device) -> Self {
        Self::with_init(d_in, d_head, heads, concat, WeightInit::FanIn, dev)
    }

    pub fn with_init(
        d_in: usize,
        d_head: usize,
        heads: usize,
        concat: bool,
        init: WeightInit,
        dev: &Device,
    ) -> Self {
        let heads = heads.max(1);
        // Glorot-uniform attention vectors, as PyG's reset_parameters.
        let bound = (6.0 / (1 + d_head) as f64).sqrt();
        let att = || {
            Param::from_tensor(Tensor::random(
                [heads, d_head],
                burn::tensor::Distribution::Uniform(-bound, bound),
                dev,
            ))
        };
        let d_out = if concat { heads * d_head } else { d_head };
        GatConv {
            lin: init.linear(d_in, heads * d_head, false, dev),
            att_src: att(),
            att_dst: att(),
            bias: Param::from_tensor(Tensor::zeros([d_out], dev)),
            heads,
            d_head,
            concat,
        }
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    /// `h: [n, d_in] → [n, heads·d_head]` (concat) or `[n, d_head]` (mean of heads).
    /// `att_mask: [E, H]` (edges with self loops, in [`GraphTensors`] order) multiplies the
    /// attention coefficients: the caller's dropout mask during training.
    pub fn forward(
        &self,
        g: &GraphTensors,
        h: &LayerInput<'_>,
        att_mask: Option<Tensor<2>>,
    ) -> Tensor<2> {
        let (hh, c) = (self.heads, self.d_head);
        let wh = linear(&self.lin, h); // [n, H·C]
        let n = wh.dims()[0];
        let wh3 = wh.clone().reshape([n, hh, c]);
        let e_src = (wh3.clone() * self.att_src.val().unsqueeze_dim::<3>(0)).sum_dim(2);
        let e_dst = (wh3 * self.att_dst.val().unsqueeze_dim::<3>(0)).sum_dim(2);
        let (e_src, e_dst) = (e_src.reshape([n, hh]), e_dst.reshape([n, hh]));
        // Edge scores [E, H] over the edges with self loops.
        let score = leaky_relu(
            e_src.select(0, g.src.clone()) + e_dst.select(0, g.dst.clone()),
            0.2,
        );
        // Softmax per destination. Subtracting a constant per destination and head leaves
        // each softmax unchanged; the per-head maximum keeps exp from overflowing.
        let scatter = |ex: &Tensor<2>| {
            Tensor::<2>::zeros([n, hh], &g.device).select_assign(
                0,
                g.dst.clone(),
                ex.clone(),
                IndexingUpdateOp::Add,
            )
        };
        let shift = score.clone().detach().max_dim(0);
        let mut ex = (score.clone() - shift).exp();
        let mut denom = scatter(&ex);
        // When all of a node's scores lie ~88 below the head's maximum (noisy weights, e.g.
        // under DP noise), every exp underflows and its softmax is 0/0 = NaN: then the shift
        // is taken per destination. Only then, so that earlier runs repeat bit for bit.
        let underflow = denom
            .clone()
            .into_data()
            .iter::<f32>()
            .any(|d| d.is_nan() || d <= 0.0);
        if underflow {
            let shift = per_destination_max(g, score.clone().detach(), hh);
            ex = (score - shift).exp();
            denom = scatter(&ex);
        }
        let mut alpha = ex / denom.select(0, g.dst.clone());
        if let Some(m) = att_mask {
            alpha = alpha * m;
        }
        let e = alpha.dims()[0];
        let msgs = wh.select(0, g.src.clone()).reshape([e, hh, c]) * alpha.reshape([e, hh, 1]);
        let out = Tensor::<2>::zeros([n, hh * c], &g.device).select_assign(
            0,
            g.dst.clone(),
            msgs.reshape([e, hh * c]),
            IndexingUpdateOp::Add,
        );
        let out = if self.concat {
            out
        } else {
            out.reshape([n, hh, c]).mean_dim(1).reshape([n, c])
        };
        bias_add(out, &self.bias)
    }
}

/// `[E, H]`: the maximum score into each edge's destination, per head (edges are stored
/// grouped by destination, `g.att_ptr`).
fn per_destination_max(g: &GraphTensors, score: Tensor<2>, hh: usize) -> Tensor<2> {
    let s: Vec<f32> = score.into_data().iter::<f32>().collect();
    let mut out = vec![0f32; s.len()];
    for w in g.att_ptr.windows(2) {
        for h in 0..hh {
            let m = (w[0]..w[1])
                .map(|e| s[e * hh + h])
                .fold(f32::NEG_INFINITY, f32::max);
            for e in w[0]..w[1] {
                out[e * hh + h] = m;
            }
        }
    }
    Tensor::<2>::from_data(TensorData::new(out, [s.len() / hh.max(1), hh]), &g.device)
}

/// GIN layer: a two-layer MLP on `(1+ε) h_i + Σ_j h_j`, ε = 0.
#[derive(Module, Debug)]
pub struct GinConv {
    lin1: Linear,
    lin2: Linear,
}

impl GinConv {
    pub fn new(d_in: usize, d_hidden: usize, d_out: usize, dev: &Device) -> Self {
        GinConv {
            lin1: LinearConfig::new(d_in, d_hidden).init(dev),
            lin2: LinearConfig::new(d_hidden, d_out).init(dev),
        }
    }

    /// `h: [n, d_in] → [n, d_out]`. The first product is taken before summing neighbours
    /// (`(h_i + Σ_j h_j) W = h_i W + Σ_j h_j W`).
    pub fn forward(&self, g: &GraphTensors, h: &LayerInput<'_>) -> Tensor<2> {
        let hw = h.times(self.lin1.weight.val());
        let mut z = hw.clone() + g.sum.propagate(hw);
        if let Some(b) = &self.lin1.bias {
            z = z + b.val().unsqueeze_dim(0);
        }
        self.lin2.forward(relu(z))
    }
}

/// GPR propagation: `Σ_k γ_k Â^k h`.
#[derive(Module, Debug)]
pub struct GprProp {
    gamma: Param<Tensor<1>>,
    k: usize,
}

impl GprProp {
    /// Personalised-PageRank initialisation with teleport `alpha`.
    pub fn new(k: usize, alpha: f64, dev: &Device) -> Self {
        let mut g: Vec<f32> = (0..=k)
            .map(|i| (alpha * (1.0 - alpha).powi(i as i32)) as f32)
            .collect();
        g[k] = (1.0 - alpha).powi(k as i32) as f32;
        GprProp {
            gamma: Param::from_tensor(Tensor::from_data(TensorData::new(g, [k + 1]), dev)),
            k,
        }
    }

    /// `h: [n, d] → [n, d]`.
    pub fn forward(&self, g: &GraphTensors, h: Tensor<2>) -> Tensor<2> {
        let gamma = self.gamma.val();
        let coef = |i: usize| gamma.clone().narrow(0, i, 1).unsqueeze_dim::<2>(0);
        let mut cur = h;
        let mut out = cur.clone() * coef(0);
        for i in 1..=self.k {
            cur = g.gcn.propagate(cur);
            out = out + cur.clone() * coef(i);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::CsrGraph;
    use ferrolab_core::backend::train_device;

    fn out(g: &CsrGraph, layer: &GatConv, x: Vec<f32>, d_in: usize) -> Vec<f32> {
        let dev = train_device();
        let gt = GraphTensors::new(g, &dev).unwrap();
        let n = g.num_nodes();
        let h = Tensor::<2>::from_data(TensorData::new(x, [n, d_in]), &dev);
        layer
            .forward(&gt, &LayerInput::Dense(h), None)
            .into_data()
            .iter::<f32>()
            .collect()
    }

    /// Two components whose attention scores lie thousands apart: with one shift per head
    /// every exp into the low component underflowed and its outputs were NaN. They are now
    /// finite and equal to the low component's outputs computed on its own.
    #[test]
    fn gat_scores_far_below_the_heads_maximum_still_give_a_softmax() {
        let dev = train_device();
        let d_in = 3;
        let layer = GatConv::new(d_in, 2, 2, true, &dev);
        let v = [0.3f32, -0.7, 0.5];
        let two = CsrGraph::new(vec![0, 1, 2, 3, 4], vec![1, 0, 3, 2]).unwrap();
        let mut x = Vec::new();
        for c in [1e4f32, 1e4, -1e4, -1.1e4] {
            x.extend(v.iter().map(|a| a * c));
        }
        let both = out(&two, &layer, x.clone(), d_in);
        assert!(both.iter().all(|y| y.is_finite()), "{both:?}");
        // Whichever component is the low one, computed alone it has no far-off maximum.
        let one = CsrGraph::new(vec![0, 1, 2], vec![1, 0]).unwrap();
        for (nodes, half) in [(0..2, &x[..6]), (2..4, &x[6..])] {
            let alone = out(&one, &layer, half.to_vec(), d_in);
            let w = alone.len() / 2;
            for (a, b) in alone.iter().zip(&both[nodes.start * w..nodes.end * w]) {
                assert!((a - b).abs() <= 1e-3 * a.abs().max(1.0), "{a} vs {b}");
            }
        }
    }
}
