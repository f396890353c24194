//! The two sentence classifiers: Kim's CNN (the baseline) and SECNN.

pub mod conv;
pub mod kernel;
pub mod kim_cnn;
pub mod secnn;

pub use conv::{ConvEncoder, ConvEncoderConfig};
pub use kim_cnn::KimCnn;
pub use secnn::Secnn;

use ferrolab_core::burn::prelude::*;

/// What training and prediction need of a sentence classifier.
pub trait SentenceClassifier: Module {
    /// The embedding and convolution front end.
    fn encoder(&self) -> &ConvEncoder;
    /// The model with its front end replaced by `f(front end)`.
    fn map_encoder(self, f: impl FnOnce(ConvEncoder) -> ConvEncoder) -> Self
    where
        Self: Sized;
    /// The model with its word vectors replaced by `w: [vocab, E]`.
    fn with_embedding_tensor(self, w: Tensor<2>) -> Self
    where
        Self: Sized,
    {
        self.map_encoder(|e| e.set_embedding_tensor(w))
    }
    /// The model with its word vectors replaced by row-major `values` (`vocab × E`).
    fn with_embeddings(self, values: Vec<f32>) -> Self
    where
        Self: Sized,
    {
        let weight = self.encoder().embedding.weight.val();
        let (dims, device) = (weight.dims(), weight.device());
        self.with_embedding_tensor(Tensor::from_data(TensorData::new(values, dims), &device))
    }
    /// The part after the convolutions: stacked maps `[batch, C, T]` (zero at padding) and
    /// mask `[batch, T]` → logits `[batch, classes]`. Training records only this part in
    /// burn's autodiff graph; the convolutions have their own backward.
    fn forward_maps(&self, maps: Tensor<3>, mask: Tensor<2>) -> Tensor<2>;
    /// Embedded tokens `[batch, T, E]` and mask `[batch, T]` (1 = token) → logits `[batch, classes]`.
    fn forward_embedded(&self, emb: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
        let maps = self.encoder().forward_embedded(emb, mask.clone());
        self.forward_maps(maps, mask)
    }
    /// `tokens: [batch, T]` (0 = padding), `mask: [batch, T]` (1 = token) → logits `[batch, classes]`.
    fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        self.forward_embedded(self.encoder().embedding.forward(tokens), mask)
    }
    /// Rescales the output layer's per-class weight vectors to L2 norm ≤ `max_norm` (Kim 2014).
    fn apply_max_norm(self, max_norm: f64) -> Self;
}

/// Max-norm constraint on a `[d_in, classes]` weight: column norms above `max` are scaled down.
pub(crate) fn max_norm_columns(w: Tensor<2>, max: f64) -> Tensor<2> {
    let requires = w.is_require_grad();
    let w = w.detach();
    let norms = w.clone().powi_scalar(2).sum_dim(0).sqrt(); // [1, classes]
    let scale = norms
        .clamp_min(1e-12)
        .recip()
        .mul_scalar(max)
        .clamp_max(1.0);
    let out = (w * scale).detach();
    if requires { out.require_grad() } else { out }
}
