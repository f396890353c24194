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
