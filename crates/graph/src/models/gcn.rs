//! Graph convolutional network (Kipf & Welling, ICLR 2017) and the layer variant of
//! Cluster-GCN's reference code (Chiang et al., KDD 2019).
//!
//! - GCN layer (Kipf & Welling eq. 2): `H' = σ(Â H W)`.
//! - Cluster-GCN reference layer: `H' = σ(LayerNorm([Â H ‖ H] W))`, written here as
//!   `Â (H W_n) + H W_s`, the same product with `W = [W_n; W_s]` split by rows.
//!
//! Both multiply by `W` before propagating: `Â (H W) = (Â H) W`, and on Cora the first layer
//! maps 1433 features to 16, so propagating 16 columns is ~90x cheaper than 1433.

use ferrolab_core::burn;
use ferrolab_core::burn::nn::{
    Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::activation::relu;
use ferrolab_core::nn::to_vec_f32;
use ferrolab_core::sparse::SparseAdj;
use std::ops::Range;

use crate::error::Result as GraphResult;
use crate::norm::{AdjRows, WeightedCsr};
use crate::spmm::spmm;

/// Configuration of one [`GcnLayer`].
#[derive(Config, Debug)]
pub struct GcnLayerConfig {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// Add `H W_s` (the `‖ H` half of Cluster-GCN's concatenation).
    #[config(default = false)]
    pub concat_self: bool,
}

/// One graph convolution, before its activation.
#[derive(Module, Debug)]
pub struct GcnLayer {
    neigh: Linear,
    self_loop: Option<Linear>,
}

impl GcnLayerConfig {
    pub fn init(&self, device: &Device) -> GcnLayer {
        GcnLayer {
            neigh: LinearConfig::new(self.d_in, self.d_out).init(device),
            // One bias is enough for the concatenated product.
            self_loop: self.concat_self.then(|| {
                LinearConfig::new(self.d_in, self.d_out)
                    .with_bias(false)
                    .init(device)
            }),
        }
    }
}

impl GcnLayer {
    /// `adj: n × n`, `h: [n, d_in] → [n, d_out]`. The bias is added after propagation, as in
    /// Kipf & Welling's code.
    pub fn forward(&self, adj: &SparseAdj, h: Tensor<2>) -> Tensor<2> {
        let (hw, self_part) = self.pre(h);
        self.post(adj.propagate(hw), self_part)
    }

    /// As [`forward`](Self::forward) with a sparse input `x: n × d_in` (bag-of-words
    /// features): `X W` by gather/scatter costs O(nnz · d_out) instead of O(n · d_in · d_out).
    pub fn forward_sparse(&self, adj: &SparseAdj, x: &SparseAdj) -> Tensor<2> {
        let (hw, self_part) = self.pre_sparse(x);
        self.post(adj.propagate(hw), self_part)
    }

    /// The dense products before propagation: `(H W_n, H W_s)`.
    pub(crate) fn pre(&self, h: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        let hw = h.clone().matmul(self.neigh.weight.val());
        let self_part = self.self_loop.as_ref().map(|s| s.forward(h));
        (hw, self_part)
    }

    /// [`pre`](Self::pre) for sparse input rows.
    pub(crate) fn pre_sparse(&self, x: &SparseAdj) -> (Tensor<2>, Option<Tensor<2>>) {
        let hw = x.propagate(self.neigh.weight.val());
        let self_part = self.self_loop.as_ref().map(|s| x.propagate(s.weight.val()));
        (hw, self_part)
    }

    /// The layer after propagation: `Â (H W_n)` plus the bias and `H W_s`.
    pub(crate) fn post(&self, propagated: Tensor<2>, self_part: Option<Tensor<2>>) -> Tensor<2> {
        let mut out = propagated;
        if let Some(b) = &self.neigh.bias {
            out = out + b.val().unsqueeze_dim(0);
        }
        if let Some(s) = self_part {
            out = out + s;
        }
        out
    }
}

/// The parameters of one layer: `neigh` holds `W_n` and the bias, `self_loop` `W_s`, and
/// `norm` the LayerNorm applied before the ReLU of a hidden Cluster-GCN layer.
pub(crate) struct LayerParams<'a> {
    pub neigh: &'a Linear,
    pub self_loop: Option<&'a Linear>,
    pub norm: Option<&'a LayerNorm>,
}

/// The LayerNorm epsilon [`GcnConfig::init`] builds with (`LayerNormConfig`'s default, which
/// `LayerNorm` does not expose).
pub(crate) const LAYER_NORM_EPSILON: f32 = 1e-5;

/// Node features entering the first layer.
#[derive(Debug, Clone)]
pub enum GcnInput {
    /// Sparse rows (bag-of-words): products cost O(nnz · d_out).
    Sparse(Box<SparseAdj>),
    /// Dense rows.
    Dense(Box<Tensor<2>>),
}

/// Configuration of a [`Gcn`].
#[derive(Config, Debug)]
pub struct GcnConfig {
    /// Input features.
    pub d_in: usize,
    /// Classes.
    pub d_out: usize,
    /// Width of every hidden layer.
    #[config(default = 16)]
    pub hidden: usize,
    /// Graph convolutions (≥ 1).
    #[config(default = 2)]
    pub layers: usize,
    /// Dropout before every layer, the input included (Kipf & Welling).
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Cluster-GCN's reference layer: `[Â H ‖ H] W` and LayerNorm on hidden layers.
    #[config(default = false)]
    pub cluster_gcn_layer: bool,
}

/// An `L`-layer GCN that outputs class logits per node.
#[derive(Module, Debug)]
pub struct Gcn {
    layers: Vec<GcnLayer>,
    norms: Vec<LayerNorm>,
    dropout: Dropout,
}

impl GcnConfig {
    /// Panics if `layers == 0`; experiment configs check this before building.
    pub fn init(&self, device: &Device) -> Gcn {
        assert!(self.layers >= 1, "a GCN needs at least one layer");
        let mut layers = Vec::with_capacity(self.layers);
        let mut norms = Vec::new();
        for l in 0..self.layers {
            let d_in = if l == 0 { self.d_in } else { self.hidden };
            let last = l + 1 == self.layers;
            let d_out = if last { self.d_out } else { self.hidden };
            layers.push(
                GcnLayerConfig::new(d_in, d_out)
                    .with_concat_self(self.cluster_gcn_layer)
                    .init(device),
            );
            if self.cluster_gcn_layer && !last {
                norms.push(LayerNormConfig::new(d_out).init(device));
            }
        }
        Gcn {
            layers,
            norms,
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl Gcn {
    /// `adj: n × n` normalised, `x: [n, d_in] → logits [n, d_out]`.
    pub fn forward(&self, adj: &SparseAdj, x: Tensor<2>) -> Tensor<2> {
        let first = self.layer_pre(0, x);
        self.forward_from(first, &mut |hw| adj.propagate(hw))
    }

    /// As [`forward`](Self::forward) with sparse input features `x: n × d_in`. No dropout is
    /// applied to `x` here: the caller drops its stored values (Kipf & Welling's sparse
    /// dropout), which a dense mask over the zeros would only make slower.
    pub fn forward_sparse(&self, adj: &SparseAdj, x: &SparseAdj) -> Tensor<2> {
        let first = self.layers[0].pre_sparse(x);
        self.forward_from(first, &mut |hw| adj.propagate(hw))
    }

    /// [`forward`](Self::forward) or [`forward_sparse`](Self::forward_sparse), whichever
    /// `x` calls for.
    pub fn forward_input(&self, adj: &SparseAdj, x: &GcnInput) -> Tensor<2> {
        self.forward_from(self.input_pre(x), &mut |hw| adj.propagate(hw))
    }

    /// Layer 0's products before propagation ([`GcnLayer::pre`]), dropout included for dense
    /// input (sparse input comes with its values already dropped). Crate-private, with
    /// [`layer_pre`](Self::layer_pre) and [`layer_post`](Self::layer_post): the pieces the
    /// training step chains around its own propagation, not a model API.
    pub(crate) fn input_pre(&self, x: &GcnInput) -> (Tensor<2>, Option<Tensor<2>>) {
        match x {
            GcnInput::Sparse(x) => self.layers[0].pre_sparse(x),
            GcnInput::Dense(x) => self.layer_pre(0, (**x).clone()),
        }
    }

    /// Layer `l`'s products before propagation from its input `h` (the previous layer's
    /// activated output), after dropout.
    pub(crate) fn layer_pre(&self, l: usize, h: Tensor<2>) -> (Tensor<2>, Option<Tensor<2>>) {
        self.layers[l].pre(self.dropout.forward(h))
    }

    /// Layer `l` from its propagated product `Â (H W_n)` and self term: bias, and on hidden
    /// layers LayerNorm (Cluster-GCN's layer) and ReLU.
    pub(crate) fn layer_post(
        &self,
        l: usize,
        propagated: Tensor<2>,
        self_part: Option<Tensor<2>>,
    ) -> Tensor<2> {
        let mut h = self.layers[l].post(propagated, self_part);
        if l + 1 < self.layers.len() {
            if let Some(norm) = self.norms.get(l) {
                h = norm.forward(h);
            }
            h = relu(h);
        }
        h
    }

    /// The whole network from layer 0's products, `propagate` applying `Â`.
    fn forward_from(
        &self,
        first: (Tensor<2>, Option<Tensor<2>>),
        propagate: &mut dyn FnMut(Tensor<2>) -> Tensor<2>,
    ) -> Tensor<2> {
        let (hw, self_part) = first;
        let mut h = self.layer_post(0, propagate(hw), self_part);
        for l in 1..self.layers.len() {
            let (hw, self_part) = self.layer_pre(l, h);
            h = self.layer_post(l, propagate(hw), self_part);
        }
        h
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Layer `l`'s parameters, for the hand-written training kernel ([`crate::kernel`]).
    pub(crate) fn layer_params(&self, l: usize) -> LayerParams<'_> {
        let layer = &self.layers[l];
        LayerParams {
            neigh: &layer.neigh,
            self_loop: layer.self_loop.as_ref(),
            norm: (l + 1 < self.layers.len())
                .then(|| self.norms.get(l))
                .flatten(),
        }
    }

    /// Dropout probability before every layer.
    pub(crate) fn dropout_prob(&self) -> f64 {
        self.dropout.prob
    }

    /// Inference on a whole graph one layer at a time, `chunk` rows at a time, for a model
    /// without autodiff (call on `model.valid()`). Returns the `n × d_out` logits row-major.
    ///
    /// A whole-graph [`forward`](Self::forward) gathers one message per edge per layer: on
    /// 1M nodes and 20M edges that is a 20M × 128 tensor (10 GB), which would make
    /// evaluation, not training, set the memory peak and defeat Cluster-GCN's point. Here a
    /// layer holds its input and output activations (`n × d` each) and the propagation
    /// `Â (H W)` runs row by row over the CSR arrays, so memory is O(n · d), independent of
    /// the edge count. `x_times(rows, W)` returns `X[rows] W` for the input features, which
    /// may be sparse or dense.
    pub fn infer_layerwise(
        &self,
        adj: &WeightedCsr,
        chunk: usize,
        x_times: &dyn Fn(Range<usize>, Tensor<2>) -> Tensor<2>,
    ) -> Vec<f32> {
        let source = InMemory {
            adj,
            chunk: chunk.max(1),
            x_times,
        };
        // The in-memory source has no failure path.
        self.infer_layerwise_blocks(&source).unwrap_or_default()
    }

    /// [`infer_layerwise`](Self::infer_layerwise) over any source of adjacency blocks, e.g.
    /// a [`ClusterStore`](crate::store::ClusterStore) on disk.
    pub fn infer_layerwise_blocks(&self, source: &dyn LayerSource) -> GraphResult<Vec<f32>> {
        let n = source.num_nodes();
        let dev = self.layers[0].neigh.weight.val().device();
        let last = self.layers.len() - 1;
        // The previous layer's output (row-major, width); None while the input is X.
        let mut h: Option<(Vec<f32>, usize)> = None;
        for (l, layer) in self.layers.iter().enumerate() {
            let d_out = layer.neigh.weight.dims()[1];
            let times =
                |rows: &Range<usize>, x: &dyn Fn(Tensor<2>) -> Tensor<2>, w: Tensor<2>| match &h {
                    None => x(w),
                    Some((hv, d)) => {
                        let block = hv[rows.start * d..rows.end * d].to_vec();
                        Tensor::<2>::from_data(TensorData::new(block, [rows.len(), *d]), &dev)
                            .matmul(w)
                    }
                };
            let mut hw = vec![0f32; n * d_out];
            source.for_each_block(&mut |rows, _, x| {
                let v = to_vec_f32(times(&rows, x, layer.neigh.weight.val()));
                hw[rows.start * d_out..rows.end * d_out].copy_from_slice(&v);
            })?;
            let mut out = vec![0f32; n * d_out];
            source.for_each_block(&mut |rows, adj, x| {
                let mut block = vec![0f32; rows.len() * d_out];
                spmm(adj, &hw, d_out, &mut block);
                let mut t =
                    Tensor::<2>::from_data(TensorData::new(block, [rows.len(), d_out]), &dev);
                if let Some(b) = &layer.neigh.bias {
                    t = t + b.val().unsqueeze_dim(0);
                }
                if let Some(s) = &layer.self_loop {
                    t = t + times(&rows, x, s.weight.val());
                }
                if l < last {
                    if let Some(norm) = self.norms.get(l) {
                        t = norm.forward(t);
                    }
                    t = relu(t);
                }
                out[rows.start * d_out..rows.end * d_out].copy_from_slice(&to_vec_f32(t));
            })?;
            h = Some((out, d_out));
        }
        Ok(h.map(|(v, _)| v).unwrap_or_default())
    }
}

/// `X[rows] W` for one block's input features, as handed to a [`BlockFn`].
pub type InputProduct<'a> = &'a dyn Fn(Tensor<2>) -> Tensor<2>;

/// The per-block callback of [`LayerSource::for_each_block`]: rows, their normalised
/// adjacency rows, and the input product.
pub type BlockFn<'a> = dyn FnMut(Range<usize>, AdjRows<'_>, InputProduct<'_>) + 'a;

/// Where layer-wise inference reads the graph from: consecutive row blocks covering all
/// nodes in order, each with its normalised adjacency rows and its input features.
pub trait LayerSource {
    fn num_nodes(&self) -> usize;

    /// Calls `f(rows, adjacency rows, x)` per block, where `x(W)` is `X[rows] W`.
    fn for_each_block(&self, f: &mut BlockFn<'_>) -> GraphResult<()>;
}

struct InMemory<'a> {
    adj: &'a WeightedCsr,
    chunk: usize,
    x_times: &'a dyn Fn(Range<usize>, Tensor<2>) -> Tensor<2>,
}

impl LayerSource for InMemory<'_> {
    fn num_nodes(&self) -> usize {
        self.adj.num_nodes()
    }

    fn for_each_block(&self, f: &mut BlockFn<'_>) -> GraphResult<()> {
        let n = self.num_nodes();
        for start in (0..n).step_by(self.chunk) {
            let rows = start..(start + self.chunk).min(n);
            // Only the chunk's offsets are rebased (copied); its edges are borrowed.
            let ptr = &self.adj.indptr[rows.start..=rows.end];
            let base = ptr[0];
            let rel: Vec<usize> = ptr.iter().map(|&p| p - base).collect();
            let adj = AdjRows {
                indptr: &rel,
                indices: &self.adj.indices[base..ptr[ptr.len() - 1]],
                values: &self.adj.values[base..ptr[ptr.len() - 1]],
            };
            let r = rows.clone();
            f(rows, adj, &|w| (self.x_times)(r.clone(), w));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::CsrGraph;
    use crate::norm::{Normalization, normalize};
    // Tests that seed hold `exclusive_rng`: other tests draw from the same process-global generator.
    use ferrolab_core::backend::{exclusive_rng, train_device};
    use ferrolab_core::nn::gradcheck::check_input_gradient;

    fn adj(device: &Device) -> SparseAdj {
        // 0-1, 1-2, 2-3, 3-0.
        let g = CsrGraph::new(vec![0, 2, 4, 6, 8], vec![1, 3, 0, 2, 1, 3, 0, 2]).unwrap();
        normalize(&g, Normalization::Symmetric)
            .to_sparse_adj(device)
            .unwrap()
    }

    #[test]
    fn shapes() {
        let _serial = crate::serial_test();
        // Model initialisation draws from burn's global generator: hold it so that the
        // deterministic tests running beside this one see the same numbers.
        let _rng = ferrolab_core::backend::exclusive_rng();
        let dev = train_device();
        let a = adj(&dev);
        for cluster in [false, true] {
            let m = GcnConfig::new(5, 3)
                .with_hidden(4)
                .with_layers(3)
                .with_cluster_gcn_layer(cluster)
                .init(&dev);
            let x = Tensor::<2>::ones([4, 5], &dev);
            assert_eq!(m.forward(&a, x).dims(), [4, 3]);
            assert_eq!(m.num_layers(), 3);
        }
    }

    #[test]
    fn gcn_layer_gradient_matches_finite_differences() {
        let _serial = crate::serial_test();
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(3);
        let a = adj(&dev);
        let layer = GcnLayerConfig::new(3, 2).init(&dev);
        check_input_gradient(|x: Tensor<2>| layer.forward(&a, x), [4, 3], 11);
    }

    #[test]
    fn cluster_gcn_model_gradient_matches_finite_differences() {
        let _serial = crate::serial_test();
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(4);
        let a = adj(&dev);
        let m = GcnConfig::new(3, 2)
            .with_hidden(4)
            .with_dropout(0.0)
            .with_cluster_gcn_layer(true)
            .init(&dev);
        check_input_gradient(|x: Tensor<2>| m.forward(&a, x), [4, 3], 12);
    }

    #[test]
    fn sparse_input_matches_dense_input() {
        let _serial = crate::serial_test();
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(6);
        let a = adj(&dev);
        // 4 x 3 features: [1 0 2; 0 0 0; 0 3 0; 4 0 5].
        let xs = SparseAdj::from_csr(
            4,
            3,
            &[0, 2, 2, 3, 5],
            &[0, 2, 1, 0, 2],
            Some(&[1., 2., 3., 4., 5.]),
            &dev,
        )
        .unwrap();
        let xd = Tensor::<2>::from_data(
            TensorData::new(
                vec![1f32, 0., 2., 0., 0., 0., 0., 3., 0., 4., 0., 5.],
                [4, 3],
            ),
            &dev,
        );
        for cluster in [false, true] {
            let m = GcnConfig::new(3, 2)
                .with_hidden(4)
                .with_layers(3)
                .with_dropout(0.0)
                .with_cluster_gcn_layer(cluster)
                .init(&dev);
            let d = ferrolab_core::nn::to_vec_f32(
                (m.forward(&a, xd.clone()) - m.forward_sparse(&a, &xs))
                    .abs()
                    .max(),
            )[0];
            assert!(d < 1e-5, "{d}");
        }
    }

    #[test]
    fn layer_equals_dense_formula() {
        let _serial = crate::serial_test();
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(5);
        let a = adj(&dev);
        let layer = GcnLayerConfig::new(3, 2).init(&dev);
        let x = Tensor::<2>::random([4, 3], burn::tensor::Distribution::Default, &dev);
        let eye = Tensor::<2>::eye(4, &dev);
        let a_dense = a.propagate(eye);
        let want = layer.neigh.forward(a_dense.matmul(x.clone()));
        let got = layer.forward(&a, x);
        let d = ferrolab_core::nn::to_vec_f32((got - want).abs().max())[0];
        assert!(d < 1e-5, "{d}");
    }

    #[test]
    fn layerwise_inference_matches_whole_graph_forward_for_any_chunk() {
        let _serial = crate::serial_test();
        let dev = ferrolab_core::backend::device();
        let _rng = exclusive_rng();
        dev.seed(8);
        // A 7-node graph with a hub, so chunks cut through neighbourhoods.
        let g = CsrGraph::new(
            vec![0, 4, 6, 8, 9, 11, 12, 14],
            vec![1, 2, 4, 6, 0, 5, 0, 3, 2, 0, 6, 1, 0, 4],
        )
        .unwrap();
        for (norm, cluster) in [
            (Normalization::Symmetric, false),
            (Normalization::DiagEnhanced { lambda: 1.0 }, true),
        ] {
            let w = normalize(&g, norm);
            let a = w.to_sparse_adj(&dev).unwrap();
            let m = GcnConfig::new(3, 2)
                .with_hidden(5)
                .with_layers(3)
                .with_cluster_gcn_layer(cluster)
                .init(&dev);
            let x = Tensor::<2>::random([7, 3], burn::tensor::Distribution::Default, &dev);
            let want = ferrolab_core::nn::to_vec_f32(m.forward(&a, x.clone()));
            let xv = ferrolab_core::nn::to_vec_f32(x.clone());
            for chunk in [1, 3, 7, 100] {
                let got = m.infer_layerwise(&w, chunk, &|rows, wt| {
                    let block = xv[rows.start * 3..rows.end * 3].to_vec();
                    Tensor::<2>::from_data(TensorData::new(block, [rows.len(), 3]), &dev).matmul(wt)
                });
                assert_eq!(got.len(), want.len());
                let d = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(d < 1e-5, "chunk {chunk}: {d}");
            }
        }
    }
}
