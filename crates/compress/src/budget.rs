//! Budgets from a layer-importance score: per-layer sparsities at a global sparsity, per-layer
//! bit-widths at an average bit-width, and which layers to protect against bit flips.
//!
//! Scores enter only through their ranks (a criterion's scale is arbitrary): `q_l ∈ [0, 1]` is
//! layer l's importance quantile (1 = most important).

use crate::bench::ranks;

/// Importance quantiles `(rank − 1)/(L − 1)` (0.5 for a single layer).
pub fn quantiles(scores: &[f64]) -> Vec<f64> {
    let l = scores.len();
    if l < 2 {
        return vec![0.5; l];
    }
    ranks(scores)
        .iter()
        .map(|r| (r - 1.0) / (l - 1) as f64)
        .collect()
}

/// Pruned weights per layer for a global sparsity `s`: layer l gets `min(0.98, c·e^{−k q_l})`
/// with `c` found by bisection so that the total matches, then counts rounded and the rounding
/// error given to the layers with room, largest first, so that exactly `round(s·N)` weights are
/// pruned. `sharpness = 0` is the uniform allocation.
pub fn prune_counts(sizes: &[usize], scores: &[f64], s: f64, sharpness: f64) -> Vec<usize> {
    let total: usize = sizes.iter().sum();
    let target = (s * total as f64).round() as usize;
    let q = quantiles(scores);
    let r: Vec<f64> = q.iter().map(|q| (-sharpness * q).exp()).collect();
    let alloc = |c: f64| -> Vec<f64> { r.iter().map(|r| (c * r).min(0.98)).collect() };
    let pruned = |c: f64| -> f64 { alloc(c).iter().zip(sizes).map(|(a, n)| a * *n as f64).sum() };
    let (mut lo, mut hi) = (0.0, 1.0);
    while pruned(hi) < target as f64 && hi < 1e6 {
        hi *= 2.0;
    }
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if pruned(mid) < target as f64 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let mut counts: Vec<usize> = alloc(hi)
        .iter()
        .zip(sizes)
        .map(|(a, n)| ((a * *n as f64).floor() as usize).min(*n))
        .collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut have: usize = counts.iter().sum();
    while have < target {
        let before = have;
        for &l in &order {
            if have < target && counts[l] < sizes[l] {
                counts[l] += 1;
                have += 1;
            }
        }
        if have == before {
            break;
        }
    }
    while have > target {
        let before = have;
        for &l in &order {
            if have > target && counts[l] > 0 {
                counts[l] -= 1;
                have -= 1;
            }
        }
        if have == before {
            break;
        }
    }
    counts
}

/// Bits per output channel of every layer for an average of `avg` bits per weight.
///
/// Uniform (`scores = None`): in every layer, a share of the channels gets `⌈avg⌉` and the rest
/// `⌊avg⌋` bits so that each layer averages `avg` (to within one channel). Budgeted: every
/// layer starts at 8 bits and the layer with the least `(0.1 + q_l)·4^{−(b_l−1)}` (importance
/// times the quantisation noise power after dropping a bit) loses one bit until the model
/// fits; the bits left over go back, one channel at a time, to the last layer lowered, so the
/// total is within one channel's weights of `avg·N` and never above it.
pub fn quant_bits(
    sizes: &[usize],
    channels: &[usize],
    scores: Option<&[f64]>,
    avg: f64,
    min_bits: u32,
) -> Vec<Vec<u32>> {
    let budget = (avg * sizes.iter().sum::<usize>() as f64).floor() as u64;
    let Some(scores) = scores else {
        let (lo, hi) = (avg.floor() as u32, avg.ceil() as u32);
        return sizes
            .iter()
            .zip(channels)
            .map(|(&n, &f)| {
                let per = n / f.max(1);
                let mut bits = vec![lo; f];
                if hi > lo {
                    // Channels at `hi` such that the layer stays within its share.
                    let extra = ((avg - lo as f64) * n as f64).floor() as usize;
                    let k = (extra / per.max(1)).min(f);
                    for b in bits.iter_mut().take(k) {
                        *b = hi;
                    }
                }
                bits
            })
            .collect();
    };
    let q = quantiles(scores);
    let mut b: Vec<u32> = vec![8; sizes.len()];
    let size = |b: &[u32]| -> u64 {
        b.iter()
            .zip(sizes)
            .map(|(b, n)| u64::from(*b) * *n as u64)
            .sum()
    };
    let mut last = None;
    while size(&b) > budget {
        let pick = (0..sizes.len())
            .filter(|&l| b[l] > min_bits)
            .min_by(|&x, &y| {
                let cx = (0.1 + q[x]) * 4f64.powi(-(b[x] as i32 - 1));
                let cy = (0.1 + q[y]) * 4f64.powi(-(b[y] as i32 - 1));
                cx.total_cmp(&cy).then(x.cmp(&y))
            });
        let Some(l) = pick else { break };
        b[l] -= 1;
        last = Some(l);
    }
    let mut out: Vec<Vec<u32>> = b.iter().zip(channels).map(|(b, &f)| vec![*b; f]).collect();
    if let Some(l) = last {
        let per = (sizes[l] / channels[l].max(1)) as u64;
        let mut spare = budget.saturating_sub(size(&b));
        for c in out[l].iter_mut() {
            if spare >= per && *c < 8 {
                *c += 1;
                spare -= per;
            }
        }
    }
    out
}

/// Model size in bits for per-channel bit-widths.
pub fn model_bits(sizes: &[usize], bits: &[Vec<u32>]) -> u64 {
    sizes
        .iter()
        .zip(bits)
        .map(|(&n, b)| {
            let per = (n / b.len().max(1)) as u64;
            b.iter().map(|&x| u64::from(x) * per).sum::<u64>()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pruning_allocation_is_exact_and_follows_importance() {
        let sizes = [100, 1000, 10_000, 50];
        let scores = [4.0, 1.0, 2.0, 3.0];
        for s in [0.5, 0.7, 0.9] {
            let u = prune_counts(&sizes, &scores, s, 0.0);
            let b = prune_counts(&sizes, &scores, s, 2.0);
            let target = (s * 11_150.0_f64).round() as usize;
            assert_eq!(u.iter().sum::<usize>(), target);
            assert_eq!(b.iter().sum::<usize>(), target);
            // Least important layer (index 1) is pruned harder than the most important (0).
            let frac = |c: &[usize], l: usize| c[l] as f64 / sizes[l] as f64;
            assert!(frac(&b, 1) > frac(&b, 0), "{s}: {b:?}");
            assert!(
                b.iter()
                    .zip(&sizes)
                    .all(|(c, n)| *c as f64 <= 0.98 * *n as f64 + 1.0)
            );
        }
        // Uniform: every layer at s (up to rounding).
        let u = prune_counts(&[100, 200], &[1.0, 2.0], 0.5, 0.0);
        assert_eq!(u, vec![50, 100]);
    }

    #[test]
    fn bit_allocation_meets_the_average() {
        let sizes = [900, 9000, 90, 4500];
        let ch = [10, 100, 10, 50];
        let scores = [3.0, 1.0, 4.0, 2.0];
        for avg in [4.5, 3.5] {
            let budget = (avg * 14_490.0_f64).floor() as u64;
            let u = quant_bits(&sizes, &ch, None, avg, 2);
            let b = quant_bits(&sizes, &ch, Some(&scores), avg, 2);
            for bits in [&u, &b] {
                let m = model_bits(&sizes, bits);
                assert!(
                    m <= budget && budget - m < 2 * 900,
                    "{avg}: {m} vs {budget}"
                );
            }
            // The most important layer (2) keeps at least the bits of the least (1).
            assert!(b[2][0] >= b[1][0], "{b:?}");
        }
        // Uniform 4.5 on one layer of 4 channels of 10: two channels at 5, two at 4.
        assert_eq!(
            quant_bits(&[40], &[4], None, 4.5, 2),
            vec![vec![5, 5, 4, 4]]
        );
        assert_eq!(quantiles(&[5.0, 1.0, 3.0]), vec![1.0, 0.0, 0.5]);
    }
}
