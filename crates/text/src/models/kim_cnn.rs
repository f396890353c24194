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

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::backend::train_device;
    use ferrolab_core::nn::gradcheck::check_input_gradient;

    fn tiny(dev: &Device) -> KimCnn {
        let enc = ConvEncoderConfig::new(9)
            .with_embed_dim(3)
            .with_maps(2)
            .with_widths(vec![2, 3]);
        KimCnn::new(&enc, 2, 0.0, dev)
    }

    #[test]
    fn shapes_and_gradient_match_finite_differences() {
        // A fixed initialisation, and burn's global generator held while drawing it.
        let _rng = ferrolab_core::backend::exclusive_rng();
        ferrolab_core::backend::seed_backend(7);
        let dev = train_device();
        let m = tiny(&dev);
        let tokens = Tensor::from_data(TensorData::from([[2i64, 5, 7], [3, 0, 0]]), &dev);
        let mask = Tensor::from_data(TensorData::from([[1.0f32, 1., 1.], [1., 0., 0.]]), &dev);
        assert_eq!(m.forward(tokens.clone(), mask.clone()).dims(), [2, 2]);
        check_input_gradient(
            |emb: Tensor<3>| m.forward_embedded(emb, mask.clone()),
            [2, 3, 3],
            22,
        );
        let grads = m.forward(tokens, mask).sum().backward();
        assert!(m.encoder().embedding.weight.grad(&grads).is_some());
        assert!(m.encoder().filter_gradients(&grads).is_some());
    }

    #[test]
    fn max_norm_caps_every_class_vector() {
        // A fixed initialisation, and burn's global generator held while drawing it.
        let _rng = ferrolab_core::backend::exclusive_rng();
        ferrolab_core::backend::seed_backend(7);
        let dev = train_device();
        let m = tiny(&dev).apply_max_norm(0.01);
        let w = m.output.weight.val();
        let norms = ferrolab_core::nn::to_vec_f32(w.powi_scalar(2).sum_dim(0).sqrt());
        assert!(norms.iter().all(|&n| n <= 0.01 + 1e-6), "{norms:?}");
    }
}
