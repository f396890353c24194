//! Multi-head self-attention (Vaswani et al., 2017):
//! `softmax(Q Kᵀ / √d_h) V` per head, heads concatenated and projected, with an optional
//! key-padding mask so padded positions receive no attention. The softmax is
//! [`rowwise::softmax`](crate::kernels::rowwise::softmax): one backward op instead of burn's five.

use crate::kernels::rowwise::softmax;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;

/// Configuration of [`MultiHeadSelfAttention`].
#[derive(Config, Debug)]
pub struct MultiHeadSelfAttentionConfig {
    /// Model width d (divisible by `heads`).
    pub d_model: usize,
    /// Number of heads.
    pub heads: usize,
    /// Dropout on the attention weights.
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// Self-attention over a sequence.
#[derive(Module, Debug)]
pub struct MultiHeadSelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    dropout: Dropout,
    heads: usize,
}

impl MultiHeadSelfAttentionConfig {
    /// Builds the block on `device`.
    ///
    /// # Panics
    /// If `d_model` is not divisible by `heads` (a programming error in a model definition).
    pub fn init(&self, device: &Device) -> MultiHeadSelfAttention {
        assert!(
            self.heads > 0 && self.d_model.is_multiple_of(self.heads),
            "d_model {} must be divisible by heads {}",
            self.d_model,
            self.heads
        );
        let lin = || LinearConfig::new(self.d_model, self.d_model).init(device);
        MultiHeadSelfAttention {
            q: lin(),
            k: lin(),
            v: lin(),
            out: lin(),
            dropout: DropoutConfig::new(self.dropout).init(),
            heads: self.heads,
        }
    }
}

impl MultiHeadSelfAttention {
    /// `x: [batch, T, d]`, `pad: [batch, T]` (true = padding) → `[batch, T, d]`.
    pub fn forward(&self, x: Tensor<3>, pad: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let [b, t, d] = x.dims();
        let h = self.heads;
        let dh = d / h;
        let split = |y: Tensor<3>| y.reshape([b, t, h, dh]).swap_dims(1, 2); // [b, h, t, dh]
        let q = split(self.q.forward(x.clone()));
        let k = split(self.k.forward(x.clone()));
        let v = split(self.v.forward(x));
        let mut scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dh as f64).sqrt());
        if let Some(mask) = pad {
            let mask = mask.reshape([b, 1, 1, t]).expand([b, h, t, t]);
            // A large finite value rather than -inf keeps a fully padded row finite.
            scores = scores.mask_fill(mask, -1.0e9);
        }
        let attn = self.dropout.forward(softmax(scores, 3));
        let ctx = attn.matmul(v).swap_dims(1, 2).reshape([b, t, d]);
        self.out.forward(ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Tests that seed hold `exclusive_rng`: other tests draw from the same process-global generator.
    use crate::backend::{exclusive_rng, train_device};
    use crate::nn::gradcheck::check_input_gradient;

    #[test]
    fn shape_and_padding_is_ignored() {
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(3);
        let a = MultiHeadSelfAttentionConfig::new(8, 2).init(&dev);
        let x = Tensor::<3>::random([1, 4, 8], burn::tensor::Distribution::Default, &dev);
        let pad =
            Tensor::<2, Bool>::from_data(TensorData::from([[false, false, false, true]]), &dev);
        let y = a.forward(x.clone(), Some(pad.clone()));
        assert_eq!(y.dims(), [1, 4, 8]);
        // Changing the padded position must not change the outputs at real positions.
        let x2 = x.clone().slice_assign(
            [0..1, 3..4, 0..8],
            Tensor::<3>::ones([1, 1, 8], &dev).mul_scalar(5.0),
        );
        let y2 = a.forward(x2, Some(pad));
        let d = crate::nn::to_vec_f32(
            (y.slice([0..1, 0..3, 0..8]) - y2.slice([0..1, 0..3, 0..8]))
                .abs()
                .max(),
        );
        assert!(d[0] < 1e-5, "padding leaked: {}", d[0]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(4);
        let a = MultiHeadSelfAttentionConfig::new(4, 2).init(&dev);
        check_input_gradient(|x: Tensor<3>| a.forward(x, None), [2, 3, 4], 13);
    }
}
