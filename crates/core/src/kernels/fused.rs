//! The row-parallel passes of the hand-written GCN training step (Cluster-GCN's hot path),
//! each fusing what burn runs as several element-wise ops: dropout masks, LayerNorm + ReLU
//! forward and backward, the masked cross-entropy with its gradient, bias rows and column
//! sums.
//!
//! Why fused: profiling a Cluster-GCN step on a 10k-node batch at width 128 through burn
//! showed burn's element-wise ops (single-threaded, one allocation each: ~3 ms per 10k × 128
//! add or ReLU) and autodiff bookkeeping cost more than the propagation; here each pass is one
//! parallel sweep. Reference paths: burn's `LayerNorm` + `relu` and `CrossEntropyLoss` under
//! autodiff (tests below).
//!
//! Every reduction runs over fixed blocks whose partial sums are added in order, so results
//! do not depend on the thread count.

use crate::kernels::hash::splitmix64;
use rayon::prelude::*;

/// A dropout mask of `len` values, 1 with probability `keep` and 0 otherwise. Each block of
/// 4096 values runs its own SplitMix64 stream seeded from `(seed, layer, block)`: parallel,
/// and the same whatever the thread count (the Bernoulli draws of burn's `Dropout` cost
/// ~30 ms per 10k × 128 mask, a third of a GCN step's CPU time).
pub fn dropout_mask(len: usize, keep: f64, seed: u64, layer: u64) -> Vec<f32> {
    const BLOCK: usize = 4096;
    // Compare 32-bit draws against keep · 2³², two draws per 64-bit output.
    let threshold = (keep.clamp(0.0, 1.0) * 4_294_967_296.0) as u64;
    let mut mask = vec![0f32; len];
    mask.par_chunks_mut(BLOCK)
        .enumerate()
        .for_each(|(b, chunk)| {
            let mut state = seed ^ splitmix64(&mut (layer << 40 ^ b as u64));
            for pair in chunk.chunks_mut(2) {
                let r = splitmix64(&mut state);
                for (k, v) in pair.iter_mut().enumerate() {
                    *v = if (r >> (32 * k)) & 0xffff_ffff < threshold {
                        1.0
                    } else {
                        0.0
                    };
                }
            }
        });
    mask
}

/// A hidden layer's LayerNorm (when `gamma` is given, with `beta` and `eps`) and ReLU of `z`
/// (`n × d`, row-major): returns `x̂` (empty without LayerNorm), the rows' `1 / σ` (empty
/// without LayerNorm) and the output, which [`layer_norm_relu_backward`] needs.
pub fn layer_norm_relu(
    z: Vec<f32>,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    n: usize,
    d: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut out = vec![0f32; n * d];
    let Some(g) = gamma else {
        out.par_iter_mut()
            .zip(z.par_iter())
            .with_min_len(4096)
            .for_each(|(y, &v)| *y = v.max(0.0));
        return (Vec::new(), Vec::new(), out);
    };
    let mut xhat = z;
    let mut rstd = vec![0f32; n];
    xhat.par_chunks_mut(d)
        .zip(out.par_chunks_mut(d))
        .zip(rstd.par_iter_mut())
        .with_min_len(64)
        .for_each(|((xr, yr), r)| {
            *r = layer_norm_row(xr, eps);
            for (k, (y, &v)) in yr.iter_mut().zip(xr.iter()).enumerate() {
                let b = beta.map_or(0.0, |b| b[k]);
                *y = (v * g[k] + b).max(0.0);
            }
        });
    (xhat, rstd, out)
}

/// The backward of [`layer_norm_relu`]: `grad` (dL/d output, `n × d`) becomes dL/dz in
/// place; returns `(dγ, dβ)` (empty without LayerNorm). `xhat`, `rstd`, `out` are what the
/// forward returned.
pub fn layer_norm_relu_backward(
    grad: &mut [f32],
    gamma: Option<&[f32]>,
    xhat: &[f32],
    rstd: &[f32],
    out: &[f32],
    d: usize,
) -> (Vec<f32>, Vec<f32>) {
    let Some(g) = gamma else {
        grad.par_iter_mut()
            .zip(out.par_iter())
            .with_min_len(4096)
            .for_each(|(dv, &y)| {
                if y <= 0.0 {
                    *dv = 0.0;
                }
            });
        return (Vec::new(), Vec::new());
    };
    // dγ, dβ from the incoming gradient, before it is rewritten in place.
    let sums = block_sums(grad, d, 2, &|rows, acc| {
        let (dg, db) = acc.split_at_mut(d);
        let (gr, xr, yr) = (&grad[rows.clone()], &xhat[rows.clone()], &out[rows]);
        for ((gr, xr), yr) in gr.chunks(d).zip(xr.chunks(d)).zip(yr.chunks(d)) {
            for k in 0..d {
                let dy = if yr[k] > 0.0 { gr[k] } else { 0.0 };
                dg[k] += dy * xr[k];
                db[k] += dy;
            }
        }
    });
    grad.par_chunks_mut(d)
        .zip(xhat.par_chunks(d))
        .zip(out.par_chunks(d))
        .zip(rstd.par_iter())
        .with_min_len(64)
        .for_each(|(((gr, xr), yr), &r)| layer_norm_backward_row(gr, xr, yr, g, r));
    let (dg, db) = sums.split_at(d);
    (dg.to_vec(), db.to_vec())
}

/// Normalises one row in place to `x̂ = (x - μ) / σ` and returns `1 / σ`,
/// `σ = sqrt(var + ε)` with the population variance (as burn and PyTorch).
fn layer_norm_row(x: &mut [f32], eps: f32) -> f32 {
    let d = x.len().max(1) as f32;
    let mean = x.iter().sum::<f32>() / d;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    let r = 1.0 / (var + eps).sqrt();
    x.iter_mut().for_each(|v| *v = (*v - mean) * r);
    r
}

/// In place: `g` from dL/d(ReLU output) to dL/d(LayerNorm input) for one row, given `x̂`,
/// the ReLU output `y`, `γ` and `1 / σ`.
fn layer_norm_backward_row(g: &mut [f32], xhat: &[f32], y: &[f32], gamma: &[f32], r: f32) {
    let d = g.len().max(1) as f32;
    // dx̂ = dy · γ, with dy zero where the ReLU was off.
    for ((gv, &yv), &gm) in g.iter_mut().zip(y).zip(gamma) {
        *gv = if yv > 0.0 { *gv * gm } else { 0.0 };
    }
    let mean_g = g.iter().sum::<f32>() / d;
    let mean_gx = g.iter().zip(xhat).map(|(a, b)| a * b).sum::<f32>() / d;
    for (gv, &xv) in g.iter_mut().zip(xhat) {
        *gv = r * (*gv - mean_g - xv * mean_gx);
    }
}

/// Mean cross-entropy of the rows `targets` of `logits` (`n × c`) against `labels` (indexed
/// by row) and its gradient with respect to all of `logits` (zero outside `targets`).
pub fn cross_entropy(
    logits: &[f32],
    c: usize,
    targets: &[usize],
    labels: &[usize],
) -> (f32, Vec<f32>) {
    let mut grad = vec![0f32; logits.len()];
    let scale = 1.0 / targets.len().max(1) as f32;
    let mut loss = 0f64;
    for &i in targets {
        let row = &logits[i * c..(i + 1) * c];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let log_z = max + sum.ln();
        let y = labels[i];
        loss += f64::from(log_z - row[y]);
        for (k, (gv, &v)) in grad[i * c..(i + 1) * c].iter_mut().zip(row).enumerate() {
            let p = (v - log_z).exp();
            *gv = (p - if k == y { 1.0 } else { 0.0 }) * scale;
        }
    }
    ((loss * f64::from(scale)) as f32, grad)
}

/// `z[i, :] += b` for every row.
pub fn add_rows(z: &mut [f32], b: &[f32]) {
    z.par_chunks_mut(b.len().max(1))
        .with_min_len(64)
        .for_each(|row| row.iter_mut().zip(b).for_each(|(v, &bv)| *v += bv));
}

/// Column sums of `m` (`· × d`, row-major).
pub fn column_sums(m: &[f32], d: usize) -> Vec<f32> {
    block_sums(m, d, 1, &|rows, acc| {
        for row in m[rows].chunks(d.max(1)) {
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
        }
    })
}

/// Row-block reduction of `m` (`· × d`, row-major) into `width · d` sums: `f(range, acc)`
/// adds the rows in `range` (element indices of `m`) into `acc`. Blocks are fixed (not
/// chosen by rayon's work stealing) and their partial sums added in order, so the result
/// does not depend on the thread count or the schedule.
fn block_sums(
    m: &[f32],
    d: usize,
    width: usize,
    f: &(dyn Fn(std::ops::Range<usize>, &mut [f32]) + Sync),
) -> Vec<f32> {
    const ROWS: usize = 512;
    let step = ROWS * d.max(1);
    let partials: Vec<Vec<f32>> = (0..m.len().div_ceil(step))
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0f32; width * d];
            f(b * step..((b + 1) * step).min(m.len()), &mut acc);
            acc
        })
        .collect();
    let mut total = vec![0f32; width * d];
    for p in partials {
        total.iter_mut().zip(&p).for_each(|(t, v)| *t += v);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::train_device;
    use crate::nn::{float_tensor, int_tensor, to_vec_f32};
    use burn::module::Param;
    use burn::nn::LayerNormConfig;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::tensor::activation::relu;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| (splitmix64(&mut s) % 2001) as f32 / 1000.0 - 1.0)
            .collect()
    }

    fn close(name: &str, got: &[f32], want: &[f32], tol: f32) {
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < tol * (1.0 + w.abs()),
                "{name}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn dropout_masks_keep_their_share_and_depend_only_on_seed_and_layer() {
        let n = 100_003;
        let m = dropout_mask(n, 0.8, 7, 1);
        let kept = m.iter().filter(|&&v| v == 1.0).count() as f64 / n as f64;
        assert!((kept - 0.8).abs() < 0.01, "{kept}");
        assert!(m.iter().all(|&v| v == 0.0 || v == 1.0));
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| dropout_mask(n, 0.8, 7, 1));
        assert_eq!(m, one_thread);
        assert_ne!(m, dropout_mask(n, 0.8, 7, 2));
        assert_ne!(m, dropout_mask(n, 0.8, 8, 1));
        assert!(dropout_mask(10, 1.0, 7, 1).iter().all(|&v| v == 1.0));
    }

    #[test]
    fn layer_norm_relu_matches_burns_layer_norm_and_relu_both_ways() {
        let _rng = crate::backend::exclusive_rng();
        let dev = train_device();
        // More rows than one reduction block, so the blocked sums are exercised.
        let (n, d) = (1100, 6);
        let (z, g, b, dy) = (
            values(n * d, 1),
            values(d, 2),
            values(d, 3),
            values(n * d, 4),
        );
        for with_norm in [true, false] {
            let zt = float_tensor(z.clone(), [n, d], &dev).require_grad();
            let mut ln = LayerNormConfig::new(d).init(&dev);
            ln.gamma = Param::from_tensor(float_tensor(g.clone(), [d], &dev));
            ln.beta = Some(Param::from_tensor(float_tensor(b.clone(), [d], &dev)));
            let y_ref = if with_norm {
                relu(ln.forward(zt.clone()))
            } else {
                relu(zt.clone())
            };
            let grads = (y_ref.clone() * float_tensor(dy.clone(), [n, d], &dev))
                .sum()
                .backward();
            let gamma = with_norm.then_some(g.as_slice());
            let beta = with_norm.then_some(b.as_slice());
            let (xhat, rstd, out) = layer_norm_relu(z.clone(), gamma, beta, 1e-5, n, d);
            close("y", &out, &to_vec_f32(y_ref), 1e-4);
            let mut grad = dy.clone();
            let (dg, db) = layer_norm_relu_backward(&mut grad, gamma, &xhat, &rstd, &out, d);
            close("dz", &grad, &to_vec_f32(zt.grad(&grads).unwrap()), 1e-3);
            if with_norm {
                close(
                    "dgamma",
                    &dg,
                    &to_vec_f32(ln.gamma.grad(&grads).unwrap()),
                    1e-3,
                );
                let beta = ln.beta.as_ref().unwrap();
                close("dbeta", &db, &to_vec_f32(beta.grad(&grads).unwrap()), 1e-3);
            }
        }
    }

    #[test]
    fn cross_entropy_matches_burns_loss_on_the_target_rows() {
        let dev = train_device();
        let (n, c) = (7, 4);
        let logits = values(n * c, 5).iter().map(|v| 3.0 * v).collect::<Vec<_>>();
        let labels = [0, 3, 1, 2, 2, 0, 1];
        let targets = [1usize, 4, 5];
        let lt = float_tensor(logits.clone(), [n, c], &dev).require_grad();
        let rows: Vec<i64> = targets.iter().map(|&i| i as i64).collect();
        let ys: Vec<i64> = targets.iter().map(|&i| labels[i] as i64).collect();
        let loss_ref = CrossEntropyLossConfig::new().init(&dev).forward(
            lt.clone().select(0, int_tensor(&rows, &dev)),
            int_tensor(&ys, &dev),
        );
        let grads = loss_ref.clone().backward();
        let (loss, grad) = cross_entropy(&logits, c, &targets, &labels);
        close("loss", &[loss], &to_vec_f32(loss_ref), 1e-5);
        close("grad", &grad, &to_vec_f32(lt.grad(&grads).unwrap()), 1e-5);
    }

    #[test]
    fn bias_rows_and_column_sums() {
        let mut z = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        add_rows(&mut z, &[10.0, 20.0, 30.0]);
        assert_eq!(z, [11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        assert_eq!(column_sums(&z, 3), [25.0, 47.0, 69.0]);
    }
}
