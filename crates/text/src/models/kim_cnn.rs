//! Kim-CNN (Kim, "Convolutional Neural Networks for Sentence Classification", EMNLP 2014):
//! `c_k = ReLU(W_k * x + b_k)` for widths k ∈ {3, 4, 5} with 100 maps each,
//! `z = [max_t c_3 ‖ max_t c_4 ‖ max_t c_5]`, `y = softmax(W (dropout(z)))`, with the L2 norm
//! of each class's weight vector kept ≤ 3.

use super::conv::{ConvEncoder, ConvEncoderConfig};
use super::{SentenceClassifier, max_norm_columns};
use ferrolab_core::burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use ferrolab_core::burn::prelude::*;

/// Kim's CNN for sentence classification.
#[derive(Module, Debug)]
pub struct KimCnn {
    encoder: ConvEncoder,
    dropout: Dropout,
    output: Linear,
}

impl KimCnn {
    /// Builds the model for `classes` classes.
    pub fn new(enc: &ConvEncoderConfig, classes: usize, dropout: f64, device: &Device) -> Self {
        KimCnn {
            encoder: enc.init(device),
            dropout: DropoutConfig::new(dropout).init(),
            output: LinearConfig::new(enc.channels(), classes).init(device),
        }
    }
}

impl SentenceClassifier for KimCnn {
    /// `[B, T, E]` embedded tokens and `[B, T]` mask → `[B, classes]` logits.
    fn encoder(&self) -> &ConvEncoder {
        &self.encoder
    }

    fn map_encoder(mut self, f: impl FnOnce(ConvEncoder) -> ConvEncoder) -> Self {
        self.encoder = f(self.encoder);
        self
    }

    fn forward_maps(&self, maps: Tensor<3>, _mask: Tensor<2>) -> Tensor<2> {
        // Maps are ReLU outputs, zero at padding, so padding never wins the max.
        let pooled = maps.max_dim(2).squeeze_dim::<2>(2); // [B, C]
        self.output.forward(self.dropout.forward(pooled))
    }

    fn apply_max_norm(mut self, max_norm: f64) -> Self {
        self.output.weight = self.output.weight.map(|w| max_norm_columns(w, max_norm));
        self
    }
}
