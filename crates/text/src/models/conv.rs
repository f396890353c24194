//! The convolutional front end shared by Kim-CNN and SECNN: word embeddings, then 1-D
//! convolutions of several widths over time with "same" padding so every width keeps the
//! sentence length (SECNN needs equal-length maps to stack them as channels).
//!
//! A width-k convolution is computed by shifting outputs rather than unfolding inputs: one
//! matrix product projects every position onto all (width, offset) filter slices at once,
//! `Z = X W` with `W: [E, Σ_k k·F]`, and then `y_k[t] = Σ_j Z_{k,j}[t + j - ⌊(k-1)/2⌋] + b_k`.
//! That is the same arithmetic as a convolution, done as a single large GEMM (which the CPU
//! backend runs far faster than a direct convolution kernel or one unfold per width) plus a
//! few cheap shifted additions on `[B, T, F]` slices; autodiff of matmul, slice and add gives
//! the gradient.

use ferrolab_core::burn::module::Param;
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
    proj: Linear,
    biases: Vec<Param<Tensor<1>>>,
    widths: Vec<usize>,
    maps: usize,
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
            // PyTorch's Conv1d default, U(±1/√fan_in), with fan_in = k·E of the mean width.
            proj: {
                let mean_k = self.widths.iter().sum::<usize>() as f64 / self.widths.len().max(1) as f64;
                let bound = 1.0 / (mean_k * self.embed_dim as f64).sqrt();
                LinearConfig::new(self.embed_dim, self.widths.iter().sum::<usize>() * self.maps)
                    .with_bias(false)
                    .with_initializer(Initializer::Uniform { min: -bound, max: bound })
                    .init(device)
            },
            biases: self
                .widths
                .iter()
                .map(|_| Param::from_tensor(Tensor::<1>::zeros([self.maps], device)))
                .collect(),
            widths: self.widths.clone(),
            maps: self.maps,
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
        let device = emb.device();
        let f = self.maps;
        let z = self.proj.forward(emb); // [B, T, Σk·F]
        let width_all = z.dims()[2];
        let pad = self.widths.iter().map(|&k| (k - 1) / 2).chain(self.widths.iter().map(|&k| k / 2)).max().unwrap_or(0);
        let z = if pad > 0 {
            let zeros = Tensor::<3>::zeros([b, pad, width_all], &device);
            Tensor::cat(vec![zeros.clone(), z, zeros], 1)
        } else {
            z
        };
        let mut col = 0;
        let maps: Vec<Tensor<3>> = self
            .widths
            .iter()
            .zip(&self.biases)
            .map(|(&k, bias)| {
                let left = (k - 1) / 2;
                let mut acc: Option<Tensor<3>> = None;
                for j in 0..k {
                    let start = j + pad - left;
                    let part = z.clone().slice([0..b, start..start + t, col..col + f]);
                    acc = Some(match acc {
                        Some(a) => a + part,
                        None => part,
                    });
                    col += f;
                }
                let y = acc.unwrap_or_else(|| Tensor::zeros([b, t, f], &device));
                relu(y + bias.val().reshape([1, 1, f]))
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
