//! The convolutional front end shared by Kim-CNN and SECNN: word embeddings, then 1-D
//! convolutions of several widths over time with "same" padding so every width keeps the
//! sentence length (SECNN needs equal-length maps to stack them as channels).
//!
//! The filters are stored as the stacked shift matrices of [`kernel`](super::kernel): `weight:
//! [E, F·Σk]`, shift `s` of width `k` in columns `F·(Σ_{k'<k} k') + s·F ..`, and one bias per
//! output channel. Without gradient tracking the computation is the hand-written
//! [`kernel::forward`](super::kernel::forward); when the embeddings, the filters or the input
//! track gradients it is [`kernel::reference`](super::kernel::reference), the same convolution
//! in burn ops, so a caller's `backward()` reaches every parameter. SECNN's training step
//! skips both and runs the kernel's explicit backward on slices (see `train.rs`).

use super::kernel::{self, ConvShape, NONE};
use ferrolab_core::burn::module::Param;
use ferrolab_core::burn::nn::{Embedding, EmbeddingConfig, Initializer};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::Distribution;
use ferrolab_core::nn::to_vec_f32;

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
    /// Stacked shift matrices `[E, F·Σk]`.
    weight: Param<Tensor<2>>,
    /// `[F · widths]`.
    bias: Param<Tensor<1>>,
    widths: Vec<usize>,
    maps: usize,
}

impl ConvEncoderConfig {
    /// Builds the encoder; embeddings are U(-0.25, 0.25) as in Kim's "rand" setting.
    pub fn init(&self, device: &Device) -> ConvEncoder {
        // PyTorch's Conv1d default per width: weight and bias U(±1/√(k·E)).
        let bound = |k: usize| 1.0 / ((k * self.embed_dim) as f64).sqrt();
        let weight = Tensor::cat(
            self.widths
                .iter()
                .map(|&k| {
                    let b = bound(k);
                    Tensor::<2>::random(
                        [self.embed_dim, k * self.maps],
                        Distribution::Uniform(-b, b),
                        device,
                    )
                })
                .collect(),
            1,
        );
        let bias = Tensor::cat(
            self.widths
                .iter()
                .map(|&k| {
                    let b = bound(k);
                    Tensor::<1>::random([self.maps], Distribution::Uniform(-b, b), device)
                })
                .collect(),
            0,
        );
        ConvEncoder {
            embedding: EmbeddingConfig::new(self.vocab, self.embed_dim)
                .with_initializer(Initializer::Uniform {
                    min: -0.25,
                    max: 0.25,
                })
                .init(device),
            weight: Param::from_tensor(weight),
            bias: Param::from_tensor(bias),
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
    /// The filter-bank sizes.
    pub fn shape(&self) -> ConvShape {
        ConvShape {
            widths: self.widths.clone(),
            maps: self.maps,
            embed: self.embedding.weight.dims()[1],
        }
    }

    /// `tokens: [B, T]`, `mask: [B, T]` → stacked maps `[B, C, T]` (C = widths × maps),
    /// zero at padded positions.
    pub fn forward(&self, tokens: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        self.forward_embedded(self.embedding.forward(tokens), mask)
    }

    /// As [`forward`](Self::forward) from already embedded tokens `[B, T, E]`.
    pub fn forward_embedded(&self, emb: Tensor<3>, mask: Tensor<2>) -> Tensor<3> {
        let tracked = emb.is_require_grad()
            || self.weight.val().is_require_grad()
            || self.bias.val().is_require_grad();
        if tracked {
            return kernel::reference(&self.shape(), emb, mask, self.weight.val(), self.bias.val());
        }
        let [b, t, _] = emb.dims();
        let device = emb.device();
        let rows: Vec<u32> = to_vec_f32(mask)
            .iter()
            .enumerate()
            .map(|(i, &m)| if m > 0.0 { i as u32 } else { NONE })
            .collect();
        let (w, bias) = self.conv_params();
        let shape = self.shape();
        let y = kernel::forward(&shape, &to_vec_f32(emb), &rows, t, &w, &bias);
        Tensor::from_data(TensorData::new(y, [b, shape.channels(), t]), &device)
    }

    /// The filter weights `[E, F·Σk]` and biases `[C]`, row-major.
    pub fn conv_params(&self) -> (Vec<f32>, Vec<f32>) {
        (to_vec_f32(self.weight.val()), to_vec_f32(self.bias.val()))
    }

    /// The gradients of the filter weights and biases in `grads`, when both got one (for
    /// callers that train the encoder through burn's autodiff).
    pub fn filter_gradients(
        &self,
        grads: &ferrolab_core::burn::tensor::Gradients,
    ) -> Option<(Tensor<2>, Tensor<1>)> {
        Some((self.weight.grad(grads)?, self.bias.grad(grads)?))
    }

    /// Replaces the filter weights and biases (shapes as [`conv_params`](Self::conv_params)).
    pub fn with_conv_params(mut self, weight: Vec<f32>, bias: Vec<f32>) -> Self {
        // The new tensors must be leaves (built from data, then marked), as the old ones were,
        // so that burn's autodiff would treat them as parameters again.
        fn leaf<const D: usize>(old: &Tensor<D>, v: Vec<f32>) -> Tensor<D> {
            let t = Tensor::from_data(TensorData::new(v, old.dims()), &old.device());
            if old.is_require_grad() {
                t.require_grad()
            } else {
                t
            }
        }
        self.weight = self.weight.map(|p| leaf(&p, weight));
        self.bias = self.bias.map(|p| leaf(&p, bias));
        self
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
        // Builds models: hold burn's global generator so that seeded tests beside it are not disturbed.
        let _rng = ferrolab_core::backend::exclusive_rng();
        let dev = train_device();
        let enc = ConvEncoderConfig::new(10)
            .with_embed_dim(4)
            .with_maps(3)
            .init(&dev);
        let tokens = Tensor::<2, Int>::from_data(TensorData::from([[2i64, 3, 4, 0, 0]]), &dev);
        let mask = Tensor::<2>::from_data(TensorData::from([[1.0f32, 1., 1., 0., 0.]]), &dev);
        let y = enc.forward(tokens, mask);
        assert_eq!(y.dims(), [1, 9, 5]);
        let (w, b) = enc.conv_params();
        assert_eq!((w.len(), b.len()), (4 * 3 * (3 + 4 + 5), 9));
        let pad = to_vec_f32(y.slice([0..1, 0..9, 3..5]).abs().sum());
        assert_eq!(pad[0], 0.0);
    }

    #[test]
    fn forward_equals_a_direct_convolution_and_params_round_trip() {
        // Builds models: hold burn's global generator so that seeded tests beside it are not disturbed.
        let _rng = ferrolab_core::backend::exclusive_rng();
        // Width 3, E = 1, one map: y[t] = relu(w0 x[t-1] + w1 x[t] + w2 x[t+1] + b).
        let dev = ferrolab_core::backend::device();
        let enc = ConvEncoderConfig::new(6)
            .with_embed_dim(1)
            .with_maps(1)
            .with_widths(vec![3])
            .init(&dev);
        // A positive bias keeps every output above the ReLU kink, so all taps are checked.
        let enc = enc.with_conv_params(vec![0.5, -0.25, 0.75], vec![2.0]);
        assert_eq!(enc.conv_params(), (vec![0.5, -0.25, 0.75], vec![2.0]));
        let emb = to_vec_f32(enc.embedding.weight.val());
        let ids = [2usize, 5, 3, 4];
        let x: Vec<f32> = ids.iter().map(|&i| emb[i]).collect();
        let tokens = Tensor::<2, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect(), [1, 4]),
            &dev,
        );
        let got = to_vec_f32(enc.forward(tokens, Tensor::ones([1, 4], &dev)));
        let at = |i: isize| {
            usize::try_from(i)
                .ok()
                .and_then(|i| x.get(i))
                .copied()
                .unwrap_or(0.0)
        };
        for (t, &g) in got.iter().enumerate() {
            let ti = t as isize;
            let want = (0.5 * at(ti - 1) - 0.25 * at(ti) + 0.75 * at(ti + 1) + 2.0).max(0.0);
            assert!((g - want).abs() < 1e-5, "t={t}: {g} vs {want}");
        }
    }
}
