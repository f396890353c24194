//! The multi-width "same" 1-D convolution of Kim-CNN and SECNN (the text convolution) as one GEMM plus shift-adds, with
//! its backward written out, on plain slices.
//!
//! A width-k filter bank is `k` matrices `W_s: [E, F]`, one per shift; its output at position t
//! is `Σ_s x[t + s − ⌊(k−1)/2⌋] W_s`. Putting every `W_s` of every width side by side gives
//! `W: [E, J]` with `J = F·Σk`, and `Z = X W` computes all shifted products at once. Two things
//! make this cheaper than a convolution over the padded sentence batch:
//! - `X` holds each *distinct* word vector of the batch once (frequent words, and every
//!   padding position, are not multiplied again), and
//! - no multiply-add is spent on zero-padded filter taps.
//!
//! The output is then a gather-and-add of rows of `Z`, which costs `B·T·J` adds — a small
//! fraction of the GEMM's `U·E·J` multiply-adds. The backward is the same three GEMM shapes
//! (`dW = Xᵀ dZ`, `dX = dZ Wᵀ`), after scattering the output gradient back into `dZ`.
//!
//! Training calls [`forward`] and [`backward`] directly (the word-vector gradient must come out
//! per distinct word for lazy Adam anyway); the burn module uses [`forward`] for inference and
//! [`reference`], the same convolution composed of burn tensor ops, wherever gradients are
//! tracked. [`reference`] is also the oracle the tests check both directions against.

use crate::kernels::gemm::{MatRef, matmul};
use burn::prelude::*;
use burn::tensor::activation;
use rayon::prelude::*;

/// Marks a padding position in the `rows` of a batch.
pub const NONE: u32 = u32::MAX;

/// The sizes of a filter bank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvShape {
    /// Filter widths (Kim: 3, 4, 5).
    pub widths: Vec<usize>,
    /// Feature maps per width (Kim: 100).
    pub maps: usize,
    /// Word-vector width E.
    pub embed: usize,
}

impl ConvShape {
    /// Columns of the stacked shift matrices, `F·Σk`.
    pub fn taps(&self) -> usize {
        self.maps * self.widths.iter().sum::<usize>()
    }

    /// Output channels, `F · widths`.
    pub fn channels(&self) -> usize {
        self.maps * self.widths.len()
    }

    /// For each width: (width k, its first column in `W`, its left padding).
    fn banks(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.widths.iter().scan(0, |col, &k| {
            let first = *col;
            *col += k * self.maps;
            Some((k, first, (k - 1) / 2))
        })
    }
}

/// The row of `Z` that shift `s` of a width with left padding `pad` reads at position `t`.
#[inline]
fn source(rows: &[u32], t: usize, s: usize, pad: usize) -> Option<usize> {
    let at = (t + s).checked_sub(pad)?;
    match rows.get(at) {
        Some(&r) if r != NONE => Some(r as usize),
        _ => None,
    }
}

/// Convolution + bias + ReLU.
///
/// `x: [U, E]` distinct word vectors; `rows: [B·T]` the row of `x` at each position (or
/// [`NONE`] for padding); `w: [E, J]`; `bias: [C]`. Returns `[B, C, T]` (channels first, as
/// the pooling and SE layers read it), zero at padding positions.
pub fn forward(
    shape: &ConvShape,
    x: &[f32],
    rows: &[u32],
    t: usize,
    w: &[f32],
    bias: &[f32],
) -> Vec<f32> {
    let (e, j, c, f) = (shape.embed, shape.taps(), shape.channels(), shape.maps);
    let u = x.len() / e.max(1);
    let mut z = vec![0.0f32; u * j];
    matmul(MatRef::new(x, u, e), MatRef::new(w, e, j), &mut z, false);
    let b = rows.len() / t.max(1);
    let mut y = vec![0.0f32; b * c * t];
    y.par_chunks_mut(c * t)
        .zip(rows.par_chunks(t))
        .for_each(|(yb, rb)| {
            let mut acc = vec![0.0f32; f];
            for pos in 0..t {
                if rb[pos] == NONE {
                    continue;
                }
                for (bank, (k, first, pad)) in shape.banks().enumerate() {
                    acc.copy_from_slice(&bias[bank * f..(bank + 1) * f]);
                    for s in 0..k {
                        if let Some(r) = source(rb, pos, s, pad) {
                            let zr = &z[r * j + first + s * f..r * j + first + (s + 1) * f];
                            acc.iter_mut().zip(zr).for_each(|(a, &v)| *a += v);
                        }
                    }
                    for (ch, &a) in acc.iter().enumerate() {
                        yb[(bank * f + ch) * t + pos] = a.max(0.0);
                    }
                }
            }
        });
    y
}

/// [`forward`] composed of burn tensor ops, differentiable in all three inputs: the reference
/// path. `emb: [B, T, E]` embedded tokens, `mask: [B, T]` (1 = token; padding positions
/// neither contribute nor receive output), `weight: [E, J]` the stacked shift matrices,
/// `bias: [C]` → `[B, C, T]`.
pub fn reference(
    shape: &ConvShape,
    emb: Tensor<3>,
    mask: Tensor<2>,
    weight: Tensor<2>,
    bias: Tensor<1>,
) -> Tensor<3> {
    let [b, t, e] = emb.dims();
    let (j, f) = (shape.taps(), shape.maps);
    let device = emb.device();
    let mask3 = mask.unsqueeze_dim::<3>(2); // [B, T, 1]
    let z = (emb * mask3.clone())
        .reshape([b * t, e])
        .matmul(weight)
        .reshape([b, t, j]);
    let banks: Vec<Tensor<3>> = shape
        .banks()
        .enumerate()
        .map(|(bank, (k, first, pad))| {
            let mut acc = bias
                .clone()
                .narrow(0, bank * f, f)
                .reshape([1, 1, f])
                .expand([b, t, f]);
            for s in 0..k {
                let zs = z
                    .clone()
                    .slice([0..b, 0..t, first + s * f..first + (s + 1) * f]);
                acc = acc + shift_time(zs, s as isize - pad as isize, &device);
            }
            activation::relu(acc) * mask3.clone()
        })
        .collect();
    Tensor::cat(banks, 2).swap_dims(1, 2)
}

/// `out[:, p] = z[:, p + offset]` where that exists, else 0 (`z: [B, T, F]`).
fn shift_time(z: Tensor<3>, offset: isize, device: &Device) -> Tensor<3> {
    let [b, t, f] = z.dims();
    let o = offset.unsigned_abs();
    if o == 0 {
        return z;
    }
    if o >= t {
        return Tensor::zeros([b, t, f], device);
    }
    let zeros = Tensor::zeros([b, o, f], device);
    if offset > 0 {
        Tensor::cat(vec![z.slice([0..b, o..t, 0..f]), zeros], 1)
    } else {
        Tensor::cat(vec![zeros, z.slice([0..b, 0..t - o, 0..f])], 1)
    }
}

/// Gradients of the parameters and of the distinct word vectors.
#[derive(Debug, Clone)]
pub struct ConvGrads {
    /// `[U, E]`, one row per distinct word of the batch.
    pub x: Vec<f32>,
    /// `[E, J]`.
    pub w: Vec<f32>,
    /// `[C]`.
    pub bias: Vec<f32>,
}

/// The backward of [`forward`]: `y` is its output and `dy: [B, C, T]` the loss gradient there.
pub fn backward(
    shape: &ConvShape,
    x: &[f32],
    rows: &[u32],
    t: usize,
    w: &[f32],
    y: &[f32],
    dy: &[f32],
) -> ConvGrads {
    let (e, j, c, f) = (shape.embed, shape.taps(), shape.channels(), shape.maps);
    let u = x.len() / e.max(1);
    let b = rows.len() / t.max(1);
    let mut dz = vec![0.0f32; u * j];
    let mut dbias = vec![0.0f32; c];
    // Gradient through ReLU, position-major so each filter bank's F values are contiguous.
    let mut g = vec![0.0f32; c];
    for bi in 0..b {
        let rb = &rows[bi * t..(bi + 1) * t];
        for pos in 0..t {
            if rb[pos] == NONE {
                continue;
            }
            for (ch, gc) in g.iter_mut().enumerate() {
                let at = (bi * c + ch) * t + pos;
                *gc = if y[at] > 0.0 { dy[at] } else { 0.0 };
            }
            dbias.iter_mut().zip(&g).for_each(|(d, &v)| *d += v);
            for (bank, (k, first, pad)) in shape.banks().enumerate() {
                let gb = &g[bank * f..(bank + 1) * f];
                for s in 0..k {
                    if let Some(r) = source(rb, pos, s, pad) {
                        let dzr = &mut dz[r * j + first + s * f..r * j + first + (s + 1) * f];
                        dzr.iter_mut().zip(gb).for_each(|(d, &v)| *d += v);
                    }
                }
            }
        }
    }
    let mut dw = vec![0.0f32; e * j];
    matmul(
        MatRef::new(x, u, e).t(),
        MatRef::new(&dz, u, j),
        &mut dw,
        false,
    );
    let mut dx = vec![0.0f32; u * e];
    matmul(
        MatRef::new(&dz, u, j),
        MatRef::new(w, e, j).t(),
        &mut dx,
        false,
    );
    ConvGrads {
        x: dx,
        w: dw,
        bias: dbias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::hash::splitmix64;
    use burn::tensor::Tensor;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| (splitmix64(&mut s) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    /// Textbook "same" convolution over a padded batch: widths side by side, filter taps
    /// read straight from `w`'s layout.
    fn direct(
        shape: &ConvShape,
        x: &[f32],
        rows: &[u32],
        t: usize,
        w: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let (e, j, c, f) = (shape.embed, shape.taps(), shape.channels(), shape.maps);
        let b = rows.len() / t;
        let mut y = vec![0.0; b * c * t];
        let mut first = 0;
        for (bank, &k) in shape.widths.iter().enumerate() {
            let pad = (k - 1) / 2;
            for bi in 0..b {
                for pos in 0..t {
                    if rows[bi * t + pos] == NONE {
                        continue;
                    }
                    for ch in 0..f {
                        let mut v = bias[bank * f + ch];
                        for s in 0..k {
                            let src = pos as isize + s as isize - pad as isize;
                            if src < 0 || src >= t as isize {
                                continue;
                            }
                            let r = rows[bi * t + src as usize];
                            if r == NONE {
                                continue;
                            }
                            for d in 0..e {
                                v += x[r as usize * e + d] * w[d * j + first + s * f + ch];
                            }
                        }
                        y[(bi * c + bank * f + ch) * t + pos] = v.max(0.0);
                    }
                }
            }
            first += k * f;
        }
        y
    }

    fn case() -> (ConvShape, Vec<f32>, Vec<u32>, usize, Vec<f32>, Vec<f32>) {
        let shape = ConvShape {
            widths: vec![2, 3, 4, 5],
            maps: 3,
            embed: 4,
        };
        let t = 6;
        // Two sentences of lengths 6 and 3 over 5 distinct words; word 1 repeats.
        let rows = vec![0, 1, 2, 1, 3, 4, 1, 4, 0, NONE, NONE, NONE];
        let x = values(5 * shape.embed, 1);
        let w = values(shape.embed * shape.taps(), 2);
        let bias = values(shape.channels(), 3);
        (shape, x, rows, t, w, bias)
    }

    #[test]
    fn forward_equals_a_direct_convolution() {
        let (shape, x, rows, t, w, bias) = case();
        let got = forward(&shape, &x, &rows, t, &w, &bias);
        let want = direct(&shape, &x, &rows, t, &w, &bias);
        assert!(want.iter().any(|&v| v > 0.0) && want.contains(&0.0));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-5, "element {i}: {g} vs {w}");
        }
    }

    /// The batch of [`case`] as tensors: embedded tokens (zero at padding) and the mask.
    fn embedded(
        shape: &ConvShape,
        x: &[f32],
        rows: &[u32],
        t: usize,
        device: &Device,
    ) -> (Tensor<3>, Tensor<2>) {
        let e = shape.embed;
        let b = rows.len() / t;
        let mut emb = vec![0.0; b * t * e];
        for (p, &r) in rows.iter().enumerate() {
            if r != NONE {
                emb[p * e..(p + 1) * e].copy_from_slice(&x[r as usize * e..(r as usize + 1) * e]);
            }
        }
        let mask = rows
            .iter()
            .map(|&r| f32::from(u8::from(r != NONE)))
            .collect();
        (
            Tensor::from_data(TensorData::new(emb, [b, t, e]), device),
            Tensor::from_data(TensorData::new(mask, [b, t]), device),
        )
    }

    #[test]
    fn forward_and_backward_match_the_tensor_op_reference() {
        let (shape, x, rows, t, w, bias) = case();
        let dev = crate::backend::train_device();
        let (emb, mask) = embedded(&shape, &x, &rows, t, &dev);
        let emb = emb.require_grad();
        let wt = Tensor::<2>::from_data(
            TensorData::new(w.clone(), [shape.embed, shape.taps()]),
            &dev,
        )
        .require_grad();
        let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [shape.channels()]), &dev)
            .require_grad();
        let y_ref = reference(&shape, emb.clone(), mask, wt.clone(), bt.clone());
        let y = forward(&shape, &x, &rows, t, &w, &bias);
        assert_eq!(y_ref.dims(), [2, shape.channels(), t]);
        let close = |name: &str, got: &[f32], want: &[f32]| {
            assert_eq!(got.len(), want.len(), "{name}");
            for (i, (g, w)) in got.iter().zip(want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                    "{name}[{i}]: {g} vs {w}"
                );
            }
        };
        close("y", &y, &crate::nn::to_vec_f32(y_ref.clone()));

        let dy = values(y.len(), 4);
        let dy_t = Tensor::<3>::from_data(TensorData::new(dy.clone(), y_ref.dims()), &dev);
        let grads = (y_ref * dy_t).sum().backward();
        let g = backward(&shape, &x, &rows, t, &w, &y, &dy);
        close("w", &g.w, &crate::nn::to_vec_f32(wt.grad(&grads).unwrap()));
        close(
            "bias",
            &g.bias,
            &crate::nn::to_vec_f32(bt.grad(&grads).unwrap()),
        );
        // The reference's gradient is per position; the kernel's per distinct word.
        let per_position = crate::nn::to_vec_f32(emb.grad(&grads).unwrap());
        let e = shape.embed;
        let mut per_word = vec![0.0; g.x.len()];
        for (p, &r) in rows.iter().enumerate() {
            if r != NONE {
                for k in 0..e {
                    per_word[r as usize * e + k] += per_position[p * e + k];
                }
            }
        }
        close("x", &g.x, &per_word);
    }

    /// Checks every gradient of [`backward`] against central differences of `Σ dy ⊙ y`;
    /// elements whose step crosses a ReLU kink are skipped, and at least `min_checked` of each
    /// parameter's elements must be checked.
    fn check_gradients(shift: f32, min_checked: f64) {
        let (shape, x, rows, t, w, bias) = case();
        let bias: Vec<f32> = bias.iter().map(|b| b + shift).collect();
        let y = forward(&shape, &x, &rows, t, &w, &bias);
        let dy = values(y.len(), 4);
        let loss = |x: &[f32], w: &[f32], bias: &[f32]| -> f64 {
            forward(&shape, x, &rows, t, w, bias)
                .iter()
                .zip(&dy)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum()
        };
        let g = backward(&shape, &x, &rows, t, &w, &y, &dy);
        let eps = 1e-2f32;
        let check = |name: &str, base: &[f32], grad: &[f32], eval: &dyn Fn(&[f32]) -> f64| {
            let mut checked = 0;
            for i in 0..base.len() {
                let (mut up, mut down) = (base.to_vec(), base.to_vec());
                up[i] += eps;
                down[i] -= eps;
                let (lu, ld, l0) = (eval(&up), eval(&down), eval(base));
                let (right, left) = ((lu - l0) / f64::from(eps), (l0 - ld) / f64::from(eps));
                if (right - left).abs() > 1e-2 {
                    continue;
                }
                let fd = (lu - ld) / (2.0 * f64::from(eps));
                assert!(
                    (fd - f64::from(grad[i])).abs() < 2e-3 * (1.0 + fd.abs()),
                    "{name}[{i}]: finite difference {fd} vs {}",
                    grad[i]
                );
                checked += 1;
            }
            assert!(
                checked as f64 >= min_checked * base.len() as f64,
                "{name}: only {checked}/{} elements away from a kink",
                base.len()
            );
        };
        check("x", &x, &g.x, &|v| loss(v, &w, &bias));
        check("w", &w, &g.w, &|v| loss(&x, v, &bias));
        check("bias", &bias, &g.bias, &|v| loss(&x, &w, v));
    }

    #[test]
    fn backward_matches_finite_differences() {
        // Mixed active and inactive units (some steps cross kinks and are skipped) ...
        check_gradients(0.0, 0.5);
        // ... and every unit active, where every element must agree.
        check_gradients(20.0, 1.0);
    }

    #[test]
    fn inactive_units_pass_no_gradient() {
        let (shape, x, rows, t, w, bias) = case();
        let bias: Vec<f32> = bias.iter().map(|b| b - 100.0).collect();
        let y = forward(&shape, &x, &rows, t, &w, &bias);
        assert!(y.iter().all(|&v| v == 0.0));
        let g = backward(&shape, &x, &rows, t, &w, &y, &vec![1.0; y.len()]);
        assert!(g.x.iter().chain(&g.w).chain(&g.bias).all(|&v| v == 0.0));
    }
}
