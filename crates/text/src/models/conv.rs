//! The convolutional front end shared by Kim-CNN and SECNN: word embeddings, then 1-D
//! convolutions of several widths over time with "same" padding so every width keeps the
//! sentence length (SECNN needs equal-length maps to stack them as channels).
//!
//! A width-k convolution is computed as an unfold (k time-shifted copies of the embedded
//! sentence, concatenated along features) followed by one matrix product, `[B·T, k·E] ×
//! [k·E, F]`: the product runs on the backend's GEMM, which is faster on CPU than a direct
//! convolution kernel for these shapes, and its gradient comes from autodiff of slice, cat
//! and matmul.

use ferrolab_core::burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::activation::relu;

/// Configuration of the [`ConvEncoder`].
#[derive(Config, Debug)]
pub struct ConvEncoderConfig {
    /// Vocabulary size (including padding and OOV).
    pub vocab: usize,
    /// Embedding width E (Kim: 300).
    #[config(default = 300)]
    pub embed_dim: usize,
    /// Filter widths (Kim: 3, 4, 5).
    #[config(default = "vec![3, 4, 5]")]
    pub widths: Vec<usize>,
    /// Feature maps per width (Kim: 100).
    #[config(default = 100)]
    pub maps: usize,
}

/// Embedding + multi-width same-length 1-D convolutions + ReLU.
#[derive(Module, Debug)]
pub struct ConvEncoder {
    /// Word vectors `[vocab, E]`.
    pub embedding: Embedding,
    convs: Vec<Linear>,
    widths: Vec<usize>,
}

impl ConvEncoderConfig {
    /// Builds the encoder; embeddings are U(-0.25, 0.25) as in Kim's "rand" setting.
    pub fn init(&self, device: &Device) -> ConvEncoder {
        ConvEncoder {
            embedding: EmbeddingConfig::new(self.vocab, self.embed_dim)
                .with_initializer(Initializer::Uniform {
                    min: -0.25,
                    max: 0.25,
                })
                .init(device),
            convs: self
                .widths
                .iter()
                .map(|&k| LinearConfig::new(k * self.embed_dim, self.maps).init(device))
                .collect(),
            widths: self.widths.clone(),
        }
    }

    /// Total channels of the stacked maps.
    pub fn channels(&self) -> usize {
        self.widths.len() * self.maps
    }
}

impl ConvEncoder {
    /// `tokens: [B, T]`, `mask: [B, T]` → stacked maps `[B, T, C]` (C = widths × maps),
    /// zero at padded positions.
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t] = tokens.dims();
        let m3 = mask.reshape([b, t, 1]);
        // Padded positions contribute zeros to neighbouring windows, as zero padding does.
        let emb = self.embedding.forward(tokens) * m3.clone();
        let e = emb.dims()[2];
        let device = emb.device();
        let maps: Vec<Tensor<3>> = self
            .convs
            .iter()
            .zip(&self.widths)
            .map(|(conv, &k)| {
                let (left, right) = ((k - 1) / 2, k / 2);
                let mut parts = Vec::with_capacity(3);
                if left > 0 {
                    parts.push(Tensor::<3>::zeros([b, left, e], &device));
                }
                parts.push(emb.clone());
                if right > 0 {
                    parts.push(Tensor::<3>::zeros([b, right, e], &device));
                }
                let padded = Tensor::cat(parts, 1);
                let windows: Vec<Tensor<3>> = (0..k)
                    .map(|j| padded.clone().slice([0..b, j..j + t, 0..e]))
                    .collect();
                relu(conv.forward(Tensor::cat(windows, 2)))
            })
            .collect();
        Tensor::cat(maps, 2) * m3
    }

    /// Replaces the embedding matrix (`[vocab, E]`, row-major) with pretrained vectors.
    pub fn set_embeddings(mut self, values: Vec<f32>, device: &Device) -> Self {
        let [v, e] = self.embedding.weight.val().dims();
        let t = Tensor::<2>::from_data(TensorData::new(values, [v, e]), device);
        self.embedding.weight = self.embedding.weight.map(|old| {
            if old.is_require_grad() {
                t.require_grad()
            } else {
                t
            }
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::backend::train_device;

    #[test]
    fn same_length_maps_and_padding_is_zero() {
        let dev = train_device();
        let enc = ConvEncoderConfig::new(10)
            .with_embed_dim(4)
            .with_maps(3)
            .init(&dev);
        let tokens = Tensor::<2, Int>::from_data(TensorData::from([[2i64, 3, 4, 0, 0]]), &dev);
        let mask = Tensor::<2>::from_data(TensorData::from([[1.0f32, 1., 1., 0., 0.]]), &dev);
        let y = enc.forward(tokens, mask);
        assert_eq!(y.dims(), [1, 5, 9]);
        let pad = ferrolab_core::nn::to_vec_f32(y.slice([0..1, 3..5, 0..9]).abs().sum());
        assert_eq!(pad[0], 0.0);
    }

    #[test]
    fn unfold_equals_a_direct_convolution() {
        // Width 3, E = 1, one map: y[t] = relu(w0 x[t-1] + w1 x[t] + w2 x[t+1] + b).
        let dev = ferrolab_core::backend::device();
        let enc = ConvEncoderConfig::new(6)
            .with_embed_dim(1)
            .with_maps(1)
            .with_widths(vec![3])
            .init(&dev);
        let emb = ferrolab_core::nn::to_vec_f32(enc.embedding.weight.val());
        let w = ferrolab_core::nn::to_vec_f32(enc.convs[0].weight.val());
        let bias = enc.convs[0]
            .bias
            .as_ref()
            .map_or(0.0, |b| ferrolab_core::nn::to_vec_f32(b.val())[0]);
        let ids = [2usize, 5, 3, 4];
        let x: Vec<f32> = ids.iter().map(|&i| emb[i]).collect();
        let tokens = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, 4]),
            &dev,
        );
        let got = ferrolab_core::nn::to_vec_f32(enc.forward(tokens, Tensor::ones([1, 4], &dev)));
        for t in 0..4 {
            let at = |i: isize| if i < 0 || i >= 4 { 0.0 } else { x[i as usize] };
            let ti = t as isize;
            let want = (w[0] * at(ti - 1) + w[1] * at(ti) + w[2] * at(ti + 1) + bias).max(0.0);
            assert!((got[t] - want).abs() < 1e-5, "t={t}: {} vs {want}", got[t]);
        }
    }
}
