//! The convolutional front end shared by Kim-CNN and SECNN: word embeddings, then 1-D
//! convolutions of several widths over time with "same" padding so every width keeps the
//! sentence length (SECNN needs equal-length maps to stack them as channels).
//!
//! All widths are computed by one matrix product over a shared unfold: the embedded sentence
//! is zero-padded and its `K = max width` time-shifted copies are concatenated along features,
//! `U: [B, T, K·E]`; then `Y = U (W ⊙ M) + b` with `W: [K·E, widths·F]` and a constant 0/1
//! mask `M` that keeps, for each width k, only the k shifts a width-k filter sees. This is
//! exactly the three convolutions (the masked weights stay zero because their gradient is
//! masked too), done as one large GEMM, which the CPU backend runs far faster than a direct
//! convolution kernel or one unfold per width; it costs K·widths/Σk (here 15/12) of the
//! multiply-adds of separate convolutions but only K slice copies of the input.

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
    /// 0/1 mask of `proj`'s weight (not trained; rebuilt from `widths` on load).
    mask: Param<Tensor<2>>,
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
                let mean_k =
                    self.widths.iter().sum::<usize>() as f64 / self.widths.len().max(1) as f64;
                let bound = 1.0 / (mean_k * self.embed_dim as f64).sqrt();
                LinearConfig::new(self.max_width() * self.embed_dim, self.channels())
                    .with_initializer(Initializer::Uniform {
                        min: -bound,
                        max: bound,
                    })
                    .init(device)
            },
            mask: Param::from_tensor(self.mask(device)).set_require_grad(false),
            widths: self.widths.clone(),
            maps: self.maps,
        }
    }

    /// Total channels of the stacked maps.
    pub fn channels(&self) -> usize {
        self.widths.len() * self.maps
    }

    fn max_width(&self) -> usize {
        self.widths.iter().copied().max().unwrap_or(1)
    }

    /// Left zero-padding of the shared unfold: "same" convolutions of width k pad
    /// ⌊(k-1)/2⌋ on the left, so the largest left pad decides where shift 0 sits.
    fn left_pad(&self) -> usize {
        self.widths.iter().map(|&k| (k - 1) / 2).max().unwrap_or(0)
    }

    /// Row block s (shift s - left_pad) of the weight is live for width k's columns when
    /// that width's window covers it.
    fn mask(&self, device: &Device) -> Tensor<2> {
        let (kmax, e, f, lp) = (self.max_width(), self.embed_dim, self.maps, self.left_pad());
        let cols = self.channels();
        let mut m = vec![0f32; kmax * e * cols];
        for (w, &k) in self.widths.iter().enumerate() {
            let first = lp - (k - 1) / 2; // first shift block this width uses
            for s in first..first + k {
                for r in s * e..(s + 1) * e {
                    m[r * cols + w * f..r * cols + (w + 1) * f].fill(1.0);
                }
            }
        }
        Tensor::from_data(TensorData::new(m, [kmax * e, cols]), device)
    }
}

impl ConvEncoder {
    /// `tokens: [B, T]`, `mask: [B, T]` → stacked maps `[B, T, C]` (C = widths × maps),
    /// zero at padded positions.
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        self.forward_embedded(self.embedding.forward(tokens), mask)
    }

    /// As [`forward`](Self::forward) from already embedded tokens `[B, T, E]` (training looks
    /// the rows up itself so that the embedding gradient stays sparse).
    pub fn forward_embedded(&self, emb: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let [b, t, e] = emb.dims();
        let m3 = mask.reshape([b, t, 1]);
        // Padded positions contribute zeros to neighbouring windows, as zero padding does.
        let emb = emb * m3.clone();
        let device = emb.device();
        let kmax = self.widths.iter().copied().max().unwrap_or(1);
        let left = self.widths.iter().map(|&k| (k - 1) / 2).max().unwrap_or(0);
        let right = kmax - 1 - left;
        let mut parts = Vec::with_capacity(3);
        if left > 0 {
            parts.push(Tensor::<3>::zeros([b, left, e], &device));
        }
        parts.push(emb);
        if right > 0 {
            parts.push(Tensor::<3>::zeros([b, right, e], &device));
        }
        let padded = Tensor::cat(parts, 1);
        let unfolded = if kmax == 1 {
            padded
        } else {
            Tensor::cat(
                (0..kmax)
                    .map(|s| padded.clone().slice([0..b, s..s + t, 0..e]))
                    .collect(),
                2,
            )
        };
        let c = self.widths.len() * self.maps;
        let w = self.proj.weight.val() * self.mask.val();
        let mut y = unfolded
            .reshape([b * t, kmax * e])
            .matmul(w)
            .reshape([b, t, c]);
        if let Some(bias) = &self.proj.bias {
            y = y + bias.val().reshape([1, 1, c]);
        }
        relu(y) * m3
    }

    /// Replaces the embedding matrix with `t: [vocab, E]`, keeping its trainability.
    pub fn set_embedding_tensor(mut self, t: Tensor<2>) -> Self {
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
        // Width 3 (columns 0..3) must not see shift blocks 0 and 4 of a max width of 5.
        let m = ferrolab_core::nn::to_vec_f32(enc.mask.val());
        assert_eq!(m.len(), 5 * 4 * 9);
        assert_eq!(m[0], 0.0); // shift 0 (t-2), width 3
        assert_eq!(m[4 * 9], 1.0); // shift 1 (t-1), width 3
        assert_eq!(m[6], 1.0); // shift 0, width 5
        assert_eq!(m[4 * 4 * 9 + 3], 1.0); // shift 4 (t+2), width 4
        assert_eq!(m[4 * 4 * 9], 0.0); // shift 4, width 3
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
        // proj rows are (shift s, embedding dim): with E = 1, row s is W_s of the only map.
        let w = ferrolab_core::nn::to_vec_f32(enc.proj.weight.val());
        let bias = enc
            .proj
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
        let at = |i: isize| {
            usize::try_from(i)
                .ok()
                .and_then(|i| x.get(i))
                .copied()
                .unwrap_or(0.0)
        };
        for (t, &g) in got.iter().enumerate() {
            let ti = t as isize;
            let want = (w[0] * at(ti - 1) + w[1] * at(ti) + w[2] * at(ti + 1) + bias).max(0.0);
            assert!((g - want).abs() < 1e-5, "t={t}: {g} vs {want}");
        }
    }
}
