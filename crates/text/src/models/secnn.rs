//! SECNN (Yuan & He, "SECNN: Squeeze-and-Excitation Convolutional Neural Network for Sentence
//! Classification", arXiv 2312.06088; IEEE Access 2025).
//!
//! The maps of the width-3/4/5 convolutions (same length T thanks to "same" padding) are
//! stacked as the C channels of one representation `U ∈ R^{C×T}`; squeeze-and-excitation
//! reweights the channels, `s = σ(W₂ ReLU(W₁ mean_t U))`, `Ũ = s ⊙ U`; then max-over-time
//! pooling, dropout and the softmax classifier, as in Kim-CNN.

use super::conv::{ConvEncoder, ConvEncoderConfig};
use super::{SentenceClassifier, max_norm_columns};
use ferrolab_core::burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::nn::{SqueezeExcitation, SqueezeExcitationConfig};

/// The SECNN sentence classifier.
#[derive(Module, Debug)]
pub struct Secnn {
    encoder: ConvEncoder,
    se: SqueezeExcitation,
    dropout: Dropout,
    output: Linear,
}

impl Secnn {
    /// Builds the model for `classes` classes with SE reduction ratio `reduction`.
    pub fn new(
        enc: &ConvEncoderConfig,
        classes: usize,
        dropout: f64,
        reduction: usize,
        device: &Device,
    ) -> Self {
        Secnn {
            encoder: enc.init(device),
            se: SqueezeExcitationConfig::new(enc.channels())
                .with_reduction(reduction)
                .init(device),
            dropout: DropoutConfig::new(dropout).init(),
            output: LinearConfig::new(enc.channels(), classes).init(device),
        }
    }

    /// The SE channel weights `[B, C]` for a batch (for inspection).
    pub fn channel_weights(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<2> {
        let maps = self.encoder.forward(tokens, mask.clone());
        self.se.weights_masked(&maps, mask)
    }
}

impl SentenceClassifier for Secnn {
    /// `[B, T, E]` embedded tokens and `[B, T]` mask → `[B, classes]` logits.
    fn encoder(&self) -> &ConvEncoder {
        &self.encoder
    }

    fn map_encoder(mut self, f: impl FnOnce(ConvEncoder) -> ConvEncoder) -> Self {
        self.encoder = f(self.encoder);
        self
    }

    fn forward_maps(&self, maps: Tensor<3>, mask: Tensor<2>) -> Tensor<2> {
        let weighted = self.se.forward_masked(maps, mask); // [B, C, T]
        let pooled = weighted.max_dim(2).squeeze_dim::<2>(2); // [B, C]
        self.output.forward(self.dropout.forward(pooled))
    }

    fn apply_max_norm(mut self, max_norm: f64) -> Self {
        self.output.weight = self.output.weight.map(|w| max_norm_columns(w, max_norm));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::backend::train_device;
    use ferrolab_core::nn::gradcheck::check_input_gradient;

    fn tiny(dev: &Device) -> Secnn {
        let enc = ConvEncoderConfig::new(9)
            .with_embed_dim(3)
            .with_maps(2)
            .with_widths(vec![2, 3]);
        // No dropout: the finite differences need a deterministic function.
        Secnn::new(&enc, 3, 0.0, 2, dev)
    }

    fn batch(dev: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let tokens = Tensor::from_data(TensorData::from([[2i64, 5, 7, 1], [3, 8, 0, 0]]), dev);
        let mask = Tensor::from_data(
            TensorData::from([[1.0f32, 1., 1., 1.], [1., 1., 0., 0.]]),
            dev,
        );
        (tokens, mask)
    }

    #[test]
    fn shapes() {
        // A fixed initialisation, and burn's global generator held while drawing it.
        let _rng = ferrolab_core::backend::exclusive_rng();
        ferrolab_core::backend::seed_backend(7);
        let dev = train_device();
        let m = tiny(&dev);
        let (tokens, mask) = batch(&dev);
        assert_eq!(m.forward(tokens.clone(), mask.clone()).dims(), [2, 3]);
        assert_eq!(
            m.channel_weights(tokens.clone(), mask.clone()).dims(),
            [2, 4]
        );
        assert_eq!(m.encoder().forward(tokens, mask).dims(), [2, 4, 4]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        // A fixed initialisation, and burn's global generator held while drawing it.
        let _rng = ferrolab_core::backend::exclusive_rng();
        ferrolab_core::backend::seed_backend(7);
        let dev = train_device();
        let m = tiny(&dev);
        let (_, mask) = batch(&dev);
        check_input_gradient(
            |emb: Tensor<3>| m.forward_embedded(emb, mask.clone()),
            [2, 4, 3],
            21,
        );
    }

    #[test]
    fn forward_gives_gradients_to_word_vectors_and_filters() {
        // A fixed initialisation, and burn's global generator held while drawing it.
        let _rng = ferrolab_core::backend::exclusive_rng();
        ferrolab_core::backend::seed_backend(7);
        let dev = train_device();
        let m = tiny(&dev);
        let (tokens, mask) = batch(&dev);
        let grads = m.forward(tokens, mask).sum().backward();
        let emb = m.encoder().embedding.weight.grad(&grads);
        let emb = ferrolab_core::nn::to_vec_f32(emb.expect("word vectors get a gradient"));
        // Rows of tokens in the batch move, the others (e.g. 4, 6) do not.
        let row = |i: usize| emb[i * 3..(i + 1) * 3].iter().any(|&v| v != 0.0);
        assert!(row(2) && row(5) && row(8));
        assert!(!row(4) && !row(6));
        assert!(m.encoder().filter_gradients(&grads).is_some());
    }
}
