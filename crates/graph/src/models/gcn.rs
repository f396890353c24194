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
use ferrolab_core::sparse::SparseAdj;

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
        let hw = h.clone().matmul(self.neigh.weight.val());
        let self_part = self.self_loop.as_ref().map(|s| s.forward(h));
        self.combine(adj, hw, self_part)
    }

    /// As [`forward`](Self::forward) with a sparse input `x: n × d_in` (bag-of-words
    /// features): `X W` by gather/scatter costs O(nnz · d_out) instead of O(n · d_in · d_out).
    pub fn forward_sparse(&self, adj: &SparseAdj, x: &SparseAdj) -> Tensor<2> {
        let hw = x.propagate(self.neigh.weight.val());
        let self_part = self.self_loop.as_ref().map(|s| x.propagate(s.weight.val()));
        self.combine(adj, hw, self_part)
    }

    fn combine(&self, adj: &SparseAdj, hw: Tensor<2>, self_part: Option<Tensor<2>>) -> Tensor<2> {
        let mut out = adj.propagate(hw);
        if let Some(b) = &self.neigh.bias {
            out = out + b.val().unsqueeze_dim(0);
        }
        if let Some(s) = self_part {
            out = out + s;
        }
        out
    }
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
        let h = self.layers[0].forward(adj, self.dropout.forward(x));
        self.hidden_layers(adj, h)
    }

    /// As [`forward`](Self::forward) with sparse input features `x: n × d_in`. No dropout is
    /// applied to `x` here: the caller drops its stored values (Kipf & Welling's sparse
    /// dropout), which a dense mask over the zeros would only make slower.
    pub fn forward_sparse(&self, adj: &SparseAdj, x: &SparseAdj) -> Tensor<2> {
        let h = self.layers[0].forward_sparse(adj, x);
        self.hidden_layers(adj, h)
    }

    /// Activation of layer 0's output, then layers 1.. .
    fn hidden_layers(&self, adj: &SparseAdj, mut h: Tensor<2>) -> Tensor<2> {
        let last = self.layers.len() - 1;
        for (l, layer) in self.layers.iter().enumerate() {
            if l > 0 {
                h = layer.forward(adj, self.dropout.forward(h));
            }
            if l < last {
                if let Some(norm) = self.norms.get(l) {
                    h = norm.forward(h);
                }
                h = relu(h);
            }
        }
        h
    }

    pub fn num_layers(&self) -> usize {
        self.layers.len()
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
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(3);
        let a = adj(&dev);
        let layer = GcnLayerConfig::new(3, 2).init(&dev);
        check_input_gradient(|x: Tensor<2>| layer.forward(&a, x), [4, 3], 11);
    }

    #[test]
    fn cluster_gcn_model_gradient_matches_finite_differences() {
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
}
