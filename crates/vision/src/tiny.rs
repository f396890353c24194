//! A convolution block for tiny on-device models, one sample at a time in plain `f32`.
//!
//! AdaEvo's mobile ends and edge train and run hundreds of models of a few thousand weights on
//! single frames; at that size a tensor runtime's per-op dispatch costs more than the
//! arithmetic, and the edge's cost model needs every multiply-add counted exactly. So this
//! block is written out directly, and the tests hold it to [`crate::layers::Conv2d`] followed
//! by ReLU and [`crate::layers::max_pool2d`]: the same function, computed by the burn path.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Largest convolution map (values) a block may make: 256 MiB of `f32` per sample.
pub const MAX_CONV_LEN: usize = 1 << 26;

/// `k×k` convolution with "same" zero padding (stride 1), ReLU, then 2×2 max-pooling with
/// stride 2 (an odd last row/column is dropped, as PyTorch's `MaxPool2d(2)` drops it).
///
/// Input `[in_channels, side, side]`, output `[out_channels, side/2, side/2]`, both
/// channel-major and row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvPool {
    /// Input channels.
    pub in_channels: usize,
    /// Input height and width.
    pub side: usize,
    /// Output channels (filters).
    pub out_channels: usize,
    /// Kernel size (odd, so "same" padding is symmetric).
    pub kernel: usize,
    /// `[out_channels, in_channels, kernel, kernel]`.
    pub weight: Vec<f32>,
    /// `[out_channels]`.
    pub bias: Vec<f32>,
    /// Which weights are kept (pruning mask; `None` = dense). Training keeps masked weights at
    /// zero.
    #[serde(default)]
    pub mask: Option<Vec<bool>>,
}

/// What a cached forward pass keeps for the backward one: for every pooled output, the index
/// of the convolution output it took (`u32::MAX` where the ReLU cut it to zero).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolCache {
    /// `[out_channels · (side/2)²]`.
    pub argmax: Vec<u32>,
}

impl ConvPool {
    /// He-uniform weights (variance 2 / fan-in), zero biases, deterministic by `seed`.
    pub fn new(
        in_channels: usize,
        side: usize,
        out_channels: usize,
        kernel: usize,
        seed: u64,
    ) -> ConvPool {
        let fan_in = (in_channels * kernel * kernel).max(1);
        let bound = (6.0 / fan_in as f32).sqrt();
        let mut rng = StdRng::seed_from_u64(seed);
        let weight = (0..out_channels * fan_in)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * bound)
            .collect();
        ConvPool {
            in_channels,
            side,
            out_channels,
            kernel,
            weight,
            bias: vec![0.0; out_channels],
            mask: None,
        }
    }

    /// Checks that the shape fields are usable and the buffers match them: what a decoder or a
    /// state reader calls before running a block it did not build.
    pub fn check(&self) -> Result<(), String> {
        if self.in_channels == 0 || self.out_channels == 0 {
            return Err("conv block with zero channels".into());
        }
        if self.kernel == 0 || self.kernel.is_multiple_of(2) || self.kernel > 15 {
            return Err(format!("conv kernel {} is not odd in 1..=15", self.kernel));
        }
        if !(2..=1024).contains(&self.side) {
            return Err(format!("conv input side {} outside 2..=1024", self.side));
        }
        if self.in_channels > 4096 || self.out_channels > 4096 {
            return Err("conv block with more than 4096 channels".into());
        }
        // The pool's argmax indices are u32, and the maps are allocated per sample.
        if self.conv_len() > MAX_CONV_LEN {
            return Err(format!(
                "conv block of {} filters on {}×{} makes maps of {} values, more than {MAX_CONV_LEN}",
                self.out_channels,
                self.side,
                self.side,
                self.conv_len()
            ));
        }
        let nw = self.out_channels * self.in_channels * self.kernel * self.kernel;
        if self.weight.len() != nw || self.bias.len() != self.out_channels {
            return Err(format!(
                "conv block holds {} weights and {} biases, its shape needs {nw} and {}",
                self.weight.len(),
                self.bias.len(),
                self.out_channels
            ));
        }
        if let Some(m) = &self.mask
            && m.len() != nw
        {
            return Err(format!(
                "conv pruning mask of {} entries for {nw} weights",
                m.len()
            ));
        }
        if !self.weight.iter().chain(&self.bias).all(|v| v.is_finite()) {
            return Err("conv block holds a non-finite weight".into());
        }
        Ok(())
    }

    /// Whether two blocks have the same shape (weights aside).
    pub fn same_shape(&self, o: &ConvPool) -> bool {
        (self.in_channels, self.side, self.out_channels, self.kernel)
            == (o.in_channels, o.side, o.out_channels, o.kernel)
    }

    /// Input length `in_channels · side²`.
    pub fn input_len(&self) -> usize {
        self.in_channels * self.side * self.side
    }

    /// Output side `side / 2`.
    pub fn pooled_side(&self) -> usize {
        self.side / 2
    }

    /// Output length `out_channels · (side/2)²`.
    pub fn output_len(&self) -> usize {
        self.out_channels * self.pooled_side() * self.pooled_side()
    }

    /// Weights and biases.
    pub fn params(&self) -> usize {
        self.weight.len() + self.bias.len()
    }

    /// Multiply-adds of one forward pass, counted dense (as a dense kernel would run it; the
    /// border's zero padding counted too).
    pub fn macs(&self) -> usize {
        self.weight.len() * self.side * self.side
    }

    /// Convolution output length (before pooling), `out_channels · side²`.
    pub fn conv_len(&self) -> usize {
        self.out_channels * self.side * self.side
    }

    /// Pre-activation convolution output `[out_channels, side, side]`.
    fn conv(&self, x: &[f32]) -> Vec<f32> {
        let (s, k, ci) = (self.side, self.kernel, self.in_channels);
        let p = k / 2;
        let plane = s * s;
        let mut out = vec![0f32; self.out_channels * plane];
        for (oc, o) in out.chunks_mut(plane).enumerate() {
            o.iter_mut().for_each(|v| *v = self.bias[oc]);
            for ic in 0..ci {
                let xin = &x[ic * plane..(ic + 1) * plane];
                for ky in 0..k {
                    for kx in 0..k {
                        let w = self.weight[((oc * ci + ic) * k + ky) * k + kx];
                        if w == 0.0 {
                            // Pruned weights cost nothing here (the cost model still counts them).
                            continue;
                        }
                        // Output rows/cols whose tap (y + ky − p, x + kx − p) is inside the input.
                        let y0 = p.saturating_sub(ky);
                        let y1 = (s + p).saturating_sub(ky).min(s);
                        let x0 = p.saturating_sub(kx);
                        let x1 = (s + p).saturating_sub(kx).min(s);
                        if x0 >= x1 {
                            continue;
                        }
                        for y in y0..y1 {
                            let iy = y + ky - p;
                            let orow = &mut o[y * s + x0..y * s + x1];
                            let irow = &xin[iy * s + x0 + kx - p..iy * s + x1 + kx - p];
                            for (ov, iv) in orow.iter_mut().zip(irow) {
                                *ov += w * iv;
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// Forward pass of one sample: the pooled, rectified feature map.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_cached(x).0
    }

    /// Forward pass keeping what [`accumulate_grad`](Self::accumulate_grad) needs.
    pub fn forward_cached(&self, x: &[f32]) -> (Vec<f32>, PoolCache) {
        let conv = self.conv(x);
        let (s, ps) = (self.side, self.pooled_side());
        let mut out = Vec::with_capacity(self.output_len());
        let mut argmax = Vec::with_capacity(self.output_len());
        for oc in 0..self.out_channels {
            let base = oc * s * s;
            for py in 0..ps {
                for px in 0..ps {
                    let mut best = base + 2 * py * s + 2 * px;
                    for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                        let i = base + (2 * py + dy) * s + 2 * px + dx;
                        if conv[i] > conv[best] {
                            best = i;
                        }
                    }
                    if conv[best] > 0.0 {
                        out.push(conv[best]);
                        argmax.push(best as u32);
                    } else {
                        out.push(0.0);
                        argmax.push(u32::MAX);
                    }
                }
            }
        }
        (out, PoolCache { argmax })
    }

    /// Adds the gradient of the loss with respect to the weights (`gw`, the layout of
    /// `weight`) and biases (`gb`) given the gradient `dout` with respect to the block's output
    /// for input `x`. The input's own gradient is not formed: this block is a model's first
    /// layer.
    pub fn accumulate_grad(
        &self,
        x: &[f32],
        cache: &PoolCache,
        dout: &[f32],
        gw: &mut [f32],
        gb: &mut [f32],
    ) {
        let (s, k, ci) = (self.side, self.kernel, self.in_channels);
        let p = k / 2;
        let plane = s * s;
        for (&idx, &d) in cache.argmax.iter().zip(dout) {
            if idx == u32::MAX || d == 0.0 {
                continue;
            }
            let idx = idx as usize;
            let oc = idx / plane;
            let (y, xo) = ((idx % plane) / s, idx % s);
            gb[oc] += d;
            for ic in 0..ci {
                let xin = &x[ic * plane..(ic + 1) * plane];
                for ky in 0..k {
                    let Some(iy) = (y + ky).checked_sub(p).filter(|v| *v < s) else {
                        continue;
                    };
                    let g =
                        &mut gw[((oc * ci + ic) * k + ky) * k..((oc * ci + ic) * k + ky + 1) * k];
                    for (kx, gv) in g.iter_mut().enumerate() {
                        if let Some(ix) = (xo + kx).checked_sub(p).filter(|v| *v < s) {
                            *gv += d * xin[iy * s + ix];
                        }
                    }
                }
            }
        }
    }

    /// Zeroes the weights the mask removes.
    pub fn apply_mask(&mut self) {
        if let Some(mask) = &self.mask {
            for (w, keep) in self.weight.iter_mut().zip(mask) {
                if !keep {
                    *w = 0.0;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::layers::{Conv2dConfig, max_pool2d, relu};
    use burn::module::Param;
    use ferrolab_core::backend::device;
    use ferrolab_core::nn::{float_tensor, to_vec_f32};

    fn input(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..len).map(|_| rng.random::<f32>() * 2.0 - 1.0).collect()
    }

    /// The block equals the burn path (`layers::Conv2d` with padding k/2, ReLU, 2×2 max-pool)
    /// over kernel sizes, channel counts, odd sides and a pruned weight set.
    #[test]
    fn forward_matches_the_burn_layers() {
        let dev = device();
        for (ci, co, k, s, prune) in [
            (1, 4, 3, 14, false),
            (2, 3, 5, 9, false),
            (3, 2, 1, 6, false),
            (1, 6, 3, 7, true),
        ] {
            let mut b = ConvPool::new(ci, s, co, k, 11 + k as u64);
            b.bias = input(co, 5);
            if prune {
                b.mask = Some((0..b.weight.len()).map(|i| i % 3 != 0).collect());
                b.apply_mask();
            }
            let x = input(b.input_len(), 3);
            let mut conv = Conv2dConfig::new(ci, co, k).with_padding(k / 2).init(&dev);
            conv.weight = Param::from_tensor(float_tensor(b.weight.clone(), [co, ci, k, k], &dev));
            conv.bias = Some(Param::from_tensor(float_tensor(b.bias.clone(), [co], &dev)));
            let xt = float_tensor(x.clone(), [1, ci, s, s], &dev);
            let want = to_vec_f32(max_pool2d(relu(conv.forward(xt)), 2, 2));
            let got = b.forward(&x);
            assert_eq!(got.len(), want.len(), "{ci} {co} {k} {s}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
            }
        }
    }

    /// Weight and bias gradients of `Σ c_i out_i` against central differences.
    #[test]
    fn gradients_match_finite_differences() {
        let mut b = ConvPool::new(2, 7, 3, 3, 4);
        b.bias = vec![0.3, -0.1, 0.2];
        let x = input(b.input_len(), 9);
        let c = input(b.output_len(), 10);
        let loss = |b: &ConvPool| -> f64 {
            b.forward(&x)
                .iter()
                .zip(&c)
                .map(|(o, c)| (*o as f64) * (*c as f64))
                .sum()
        };
        let (_, cache) = b.forward_cached(&x);
        let mut gw = vec![0.0; b.weight.len()];
        let mut gb = vec![0.0; b.bias.len()];
        b.accumulate_grad(&x, &cache, &c, &mut gw, &mut gb);
        let h = 1e-3f32;
        let mut checked = 0;
        for i in (0..b.weight.len()).step_by(5) {
            let mut p = b.clone();
            p.weight[i] += h;
            let mut m = b.clone();
            m.weight[i] -= h;
            let num = (loss(&p) - loss(&m)) / (2.0 * h as f64);
            assert!(
                (num - gw[i] as f64).abs() < 2e-2 * (1.0 + num.abs()),
                "weight {i}: {num} vs {}",
                gw[i]
            );
            checked += 1;
        }
        for (o, g) in gb.iter().enumerate() {
            let mut p = b.clone();
            p.bias[o] += h;
            let mut m = b.clone();
            m.bias[o] -= h;
            let num = (loss(&p) - loss(&m)) / (2.0 * h as f64);
            assert!((num - *g as f64).abs() < 2e-2 * (1.0 + num.abs()));
        }
        assert!(checked > 5);
        assert!(gw.iter().any(|g| *g != 0.0));
    }

    #[test]
    fn check_names_what_is_wrong() {
        let mut b = ConvPool::new(1, 14, 4, 3, 1);
        assert_eq!(b.check(), Ok(()));
        assert_eq!(b.output_len(), 4 * 49);
        assert_eq!(b.macs(), 36 * 196);
        b.kernel = 4;
        assert!(b.check().unwrap_err().contains("not odd"));
        b.kernel = 3;
        b.weight.pop();
        assert!(b.check().unwrap_err().contains("35 weights"));
        b.weight.push(f32::NAN);
        assert!(b.check().unwrap_err().contains("non-finite"));
    }
}
