//! Per-layer compression operators on a layer's weights as plain `f32` vectors (one layer at a
//! time, pure functions, so every one is tested on hand-computed cases and is reversible by
//! writing the saved original back).
//!
//! - unstructured magnitude pruning (the fraction `s` of smallest `|w|` set to zero);
//! - structured channel pruning (the fraction `s` of output channels with the smallest L1 norm);
//! - symmetric per-output-channel fake quantisation to `b ∈ 2..=8` bits, on the weights with
//!   the following batch norm folded in first (`W·γ/√(σ²+ε)`), then unfolded, so that the
//!   network with its batch norm computes exactly the folded, quantised layer;
//! - int8 storage (per-channel scales, two's-complement codes) and a seeded bit-flip injector
//!   over the layer's `8·|W|` stored bits, by count or by bit-error rate.
//!
//! Weights are laid out output channel first (`[F, …]` for convolutions); a linear layer is
//! handed over as `[out, in]` (see [`crate::LayerParams`]).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A layer's weights, output channel first, and the batch norm that follows it (if any).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerWeights {
    /// `out_channels · fan_in` values, output channel major.
    pub weight: Vec<f32>,
    /// Output channels F (rows).
    pub out_channels: usize,
    /// Batch norm after the layer, as the scale `γ/√(σ²+ε)` per output channel.
    pub bn_scale: Option<Vec<f32>>,
}

impl LayerWeights {
    /// Weights per output channel.
    pub fn fan_in(&self) -> usize {
        self.weight.len() / self.out_channels.max(1)
    }
}

/// Why an operator cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("sparsity {0} is outside [0, 1)")]
    Sparsity(f64),
    #[error("bit-width {0} is outside 2..=8")]
    Bits(u32),
    #[error("bit-error rate {0} is outside [0, 1]")]
    Rate(f64),
    #[error("layer `{0}` does not exist")]
    Layer(String),
}

/// Checks a sparsity.
pub fn check_sparsity(s: f64) -> Result<(), OpError> {
    if (0.0..1.0).contains(&s) {
        Ok(())
    } else {
        Err(OpError::Sparsity(s))
    }
}

/// Checks a bit-width.
pub fn check_bits(b: u32) -> Result<(), OpError> {
    if (2..=8).contains(&b) {
        Ok(())
    } else {
        Err(OpError::Bits(b))
    }
}

/// Zeroes the `round(s·n)` weights of smallest magnitude (ties broken by position, so the
/// result is deterministic).
pub fn magnitude_prune(w: &[f32], s: f64) -> Result<Vec<f32>, OpError> {
    check_sparsity(s)?;
    let k = (s * w.len() as f64).round() as usize;
    Ok(prune_count(w, k))
}

/// Zeroes exactly `k` weights of smallest magnitude.
pub fn prune_count(w: &[f32], k: usize) -> Vec<f32> {
    let mut order: Vec<usize> = (0..w.len()).collect();
    order.sort_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()).then(a.cmp(&b)));
    let mut out = w.to_vec();
    for &i in order.iter().take(k.min(w.len())) {
        out[i] = 0.0;
    }
    out
}

/// Zeroes the `round(s·F)` output channels of smallest L1 norm (whole rows).
pub fn channel_prune(lw: &LayerWeights, s: f64) -> Result<Vec<f32>, OpError> {
    check_sparsity(s)?;
    let f = lw.out_channels;
    let fan = lw.fan_in();
    let k = (s * f as f64).round() as usize;
    let l1: Vec<f32> = (0..f)
        .map(|c| {
            lw.weight[c * fan..(c + 1) * fan]
                .iter()
                .map(|v| v.abs())
                .sum()
        })
        .collect();
    let mut order: Vec<usize> = (0..f).collect();
    order.sort_by(|&a, &b| l1[a].total_cmp(&l1[b]).then(a.cmp(&b)));
    let mut out = lw.weight.clone();
    for &c in order.iter().take(k) {
        out[c * fan..(c + 1) * fan].fill(0.0);
    }
    Ok(out)
}

/// The folded weights `W·scale` per output channel (the layer as it is deployed).
fn fold(lw: &LayerWeights) -> Vec<f32> {
    let fan = lw.fan_in();
    match &lw.bn_scale {
        None => lw.weight.clone(),
        Some(sc) => lw
            .weight
            .iter()
            .enumerate()
            .map(|(i, &v)| v * sc[i / fan.max(1)])
            .collect(),
    }
}

/// Back from folded to the layer's own weights. A channel whose batch-norm scale is 0 outputs
/// a constant whatever its weights, so its original weights are kept.
fn unfold(lw: &LayerWeights, folded: &[f32]) -> Vec<f32> {
    let fan = lw.fan_in();
    match &lw.bn_scale {
        None => folded.to_vec(),
        Some(sc) => folded
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let s = sc[i / fan.max(1)];
                if s == 0.0 { lw.weight[i] } else { v / s }
            })
            .collect(),
    }
}

/// Per-channel symmetric quantisation of `w` (rows of `fan`) with bits per channel: the scale
/// is `max|w| / (2^{b−1} − 1)`, values rounded to nearest (ties away from zero) and clamped.
fn quantize_rows(w: &[f32], fan: usize, bits: &[u32]) -> Vec<f32> {
    let mut out = w.to_vec();
    for (c, row) in out.chunks_mut(fan.max(1)).enumerate() {
        let qmax = ((1u32 << (bits[c] - 1)) - 1) as f32;
        let m = row.iter().fold(0f32, |a, v| a.max(v.abs()));
        if m == 0.0 {
            continue;
        }
        let scale = m / qmax;
        for v in row.iter_mut() {
            *v = (*v / scale).round().clamp(-qmax, qmax) * scale;
        }
    }
    out
}

/// Fake quantisation of one layer to `bits`, batch norm folded first (the returned weights
/// are the layer's own, unfolded again).
pub fn fake_quantize(lw: &LayerWeights, bits: u32) -> Result<Vec<f32>, OpError> {
    check_bits(bits)?;
    fake_quantize_channels(lw, &vec![bits; lw.out_channels])
}

/// Fake quantisation with a bit-width per output channel (mixed precision inside a layer).
pub fn fake_quantize_channels(lw: &LayerWeights, bits: &[u32]) -> Result<Vec<f32>, OpError> {
    for &b in bits {
        check_bits(b)?;
    }
    let folded = fold(lw);
    Ok(unfold(lw, &quantize_rows(&folded, lw.fan_in(), bits)))
}

/// A layer stored as int8: two's-complement codes in `[-127, 127]` and one scale per output
/// channel, for the folded weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Layer {
    pub codes: Vec<i8>,
    pub scales: Vec<f32>,
    pub fan_in: usize,
}

impl Int8Layer {
    /// Stores `lw` (batch norm folded) as int8.
    pub fn store(lw: &LayerWeights) -> Int8Layer {
        let fan = lw.fan_in().max(1);
        let folded = fold(lw);
        let mut codes = Vec::with_capacity(folded.len());
        let mut scales = Vec::with_capacity(lw.out_channels);
        for row in folded.chunks(fan) {
            let m = row.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = if m == 0.0 { 1.0 } else { m / 127.0 };
            scales.push(scale);
            codes.extend(
                row.iter()
                    .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
            );
        }
        Int8Layer {
            codes,
            scales,
            fan_in: fan,
        }
    }

    /// Stored bits (8 per weight).
    pub fn bits(&self) -> u64 {
        8 * self.codes.len() as u64
    }

    /// Flips the listed bit positions (`8·index + bit`). A flipped sign bit can give −128,
    /// which the int8 format holds; it dequantises to `−128·scale`.
    pub fn flip(&mut self, positions: &[u64]) {
        for &p in positions {
            let (i, b) = ((p / 8) as usize, (p % 8) as u32);
            if let Some(c) = self.codes.get_mut(i) {
                *c = (*c as u8 ^ (1u8 << b)) as i8;
            }
        }
    }

    /// The layer's own (unfolded) weights these codes stand for.
    pub fn dequantize(&self, lw: &LayerWeights) -> Vec<f32> {
        let folded: Vec<f32> = self
            .codes
            .iter()
            .enumerate()
            .map(|(i, &q)| f32::from(q) * self.scales[i / self.fan_in])
            .collect();
        unfold(lw, &folded)
    }
}

/// `m` distinct bit positions out of `n_bits`, uniformly (seeded): Floyd's sampling, so the
/// cost is O(m) whatever the layer's size.
pub fn flip_positions_count(n_bits: u64, m: u64, seed: u64) -> Vec<u64> {
    let m = m.min(n_bits);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut chosen = std::collections::BTreeSet::new();
    for j in (n_bits - m)..n_bits {
        let t = rng.random_range(0..=j);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// Every bit flips independently with probability `ber` (seeded): the gaps between flips are
/// geometric, drawn directly, so the cost follows the number of flips, not of bits.
pub fn flip_positions_rate(n_bits: u64, ber: f64, seed: u64) -> Result<Vec<u64>, OpError> {
    if !(0.0..=1.0).contains(&ber) || ber.is_nan() {
        return Err(OpError::Rate(ber));
    }
    let mut out = Vec::new();
    if ber == 0.0 {
        return Ok(out);
    }
    if ber >= 1.0 {
        return Ok((0..n_bits).collect());
    }
    let mut rng = StdRng::seed_from_u64(seed);
    // Below ~1e-16, `1 − ber` rounds to 1 and its log to 0, which would make every gap −∞
    // (a loop that never ends): ln_1p keeps such rates exact. Larger rates keep the plain form,
    // so their draws, and the dataset's values, stay what they were.
    let ln_q = match (1.0 - ber).ln() {
        l if l < 0.0 => l,
        _ => (-ber).ln_1p(),
    };
    let mut pos: f64 = -1.0;
    loop {
        let u: f64 = rng.random::<f64>();
        // Geometric gap ≥ 1 with success probability `ber`.
        let gap = ((1.0 - u).ln() / ln_q).floor() + 1.0;
        pos += gap;
        if pos >= n_bits as f64 {
            break;
        }
        out.push(pos as u64);
    }
    Ok(out)
}

/// ‖W̃ − W‖₂.
pub fn l2_diff(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = f64::from(*x) - f64::from(*y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_rate_too_small_for_one_minus_it_still_draws_and_ends() {
        for ber in [1e-17, 1e-20, 1e-300, f64::MIN_POSITIVE] {
            let pos = flip_positions_rate(1 << 20, ber, 3).unwrap();
            assert!(pos.is_empty(), "{ber}: {pos:?}");
        }
        // At the smallest rate the plain form handles, draws are as before.
        let a = flip_positions_rate(1 << 30, 1e-7, 9).unwrap();
        assert!((50..=200).contains(&a.len()), "{}", a.len());
    }

    fn layer(w: Vec<f32>, f: usize, bn: Option<Vec<f32>>) -> LayerWeights {
        LayerWeights {
            weight: w,
            out_channels: f,
            bn_scale: bn,
        }
    }

    #[test]
    fn magnitude_pruning_by_hand() {
        let w = [0.5, -0.1, 0.3, -0.7, 0.2, 0.05];
        // s = 0.5 of 6 → the three smallest |w|: 0.05, -0.1, 0.2.
        assert_eq!(
            magnitude_prune(&w, 0.5).unwrap(),
            vec![0.5, 0.0, 0.3, -0.7, 0.0, 0.0]
        );
        assert_eq!(magnitude_prune(&w, 0.0).unwrap(), w.to_vec());
        assert!(magnitude_prune(&w, 1.0).is_err());
        assert!(magnitude_prune(&w, -0.1).is_err());
        // Ties: the earlier position goes first.
        assert_eq!(prune_count(&[1.0, -1.0, 2.0], 1), vec![0.0, -1.0, 2.0]);
    }

    #[test]
    fn channel_pruning_by_hand() {
        // Rows' L1: 3, 0.5, 2, 6 → s = 0.5 zeroes rows 1 and 2.
        let lw = layer(vec![1.0, -2.0, 0.25, 0.25, -1.0, 1.0, 3.0, 3.0], 4, None);
        assert_eq!(
            channel_prune(&lw, 0.5).unwrap(),
            vec![1.0, -2.0, 0.0, 0.0, 0.0, 0.0, 3.0, 3.0]
        );
        assert_eq!(channel_prune(&lw, 0.25).unwrap()[2..4], [0.0, 0.0]);
    }

    #[test]
    fn fake_quantization_by_hand() {
        // 2 bits: qmax 1, scale = max|w|: values → sign(w)·max when |w| ≥ max/2, else 0.
        let lw = layer(vec![0.9, -0.3, 0.5, 0.15, -0.4, 0.1], 2, None);
        let q = fake_quantize(&lw, 2).unwrap();
        assert_eq!(q, vec![0.9, 0.0, 0.9, 0.0, -0.4, 0.0]);
        // 3 bits: qmax 3, scale 0.3 for row 0: 0.9 → 3, −0.3 → −1, 0.5 → 1.67 → 2 (0.6).
        let q = fake_quantize(&lw, 3).unwrap();
        assert!((q[0] - 0.9).abs() < 1e-6 && (q[1] + 0.3).abs() < 1e-6);
        assert!((q[2] - 0.6).abs() < 1e-6);
        assert!(fake_quantize(&lw, 1).is_err() && fake_quantize(&lw, 9).is_err());
        // 8 bits is close to the original: error ≤ scale / 2.
        let q = fake_quantize(&lw, 8).unwrap();
        for (a, b) in q.iter().zip(&lw.weight) {
            assert!((a - b).abs() <= 0.9 / 127.0 / 2.0 + 1e-7);
        }
    }

    #[test]
    fn batch_norm_is_folded_before_quantization() {
        // Row 0: w = [1, 0.4], bn scale 2 → folded [2, 0.8]; 2 bits: scale 2, 0.8/2 = 0.4
        // rounds to 0 → [2, 0] → unfolded [1, 0].
        // Row 1: w = [0.4, -1], scale 0.5 → folded [0.2, -0.5] → [0, -0.5] → [0, -1].
        let lw = layer(vec![1.0, 0.4, 0.4, -1.0], 2, Some(vec![2.0, 0.5]));
        assert_eq!(fake_quantize(&lw, 2).unwrap(), vec![1.0, 0.0, 0.0, -1.0]);
        // A channel whose batch-norm scale is 0 keeps its weights.
        let z = layer(vec![0.3, 0.1], 1, Some(vec![0.0]));
        assert_eq!(fake_quantize(&z, 2).unwrap(), vec![0.3, 0.1]);
        // Mixed precision per channel.
        let m = layer(vec![0.9, -0.3, 0.9, -0.3], 2, None);
        let q = fake_quantize_channels(&m, &[2, 8]).unwrap();
        assert_eq!(q[1], 0.0);
        assert!((q[3] + 0.3).abs() < 0.004);
    }

    #[test]
    fn int8_storage_and_bit_flips_by_hand() {
        let lw = layer(vec![1.27, -0.635, 0.0, 2.54], 2, None);
        let mut s = Int8Layer::store(&lw);
        assert_eq!(s.codes, vec![127, -64, 0, 127]);
        assert!((s.scales[0] - 0.01).abs() < 1e-7 && (s.scales[1] - 0.02).abs() < 1e-7);
        assert_eq!(s.bits(), 32);
        // Bit 7 of code 0 (127 = 0b0111_1111 → 0b1111_1111 = −1); bit 0 of code 2 (0 → 1).
        s.flip(&[7, 16]);
        assert_eq!(s.codes, vec![-1, -64, 1, 127]);
        let w = s.dequantize(&lw);
        assert!((w[0] + 0.01).abs() < 1e-7 && (w[2] - 0.02).abs() < 1e-7);
        // Flipping the same bits again restores the codes.
        s.flip(&[7, 16]);
        assert_eq!(s.codes, vec![127, -64, 0, 127]);
        // The sign bit of −1 gives 127; of 0 gives −128.
        let mut t = Int8Layer {
            codes: vec![0],
            scales: vec![1.0],
            fan_in: 1,
        };
        t.flip(&[7]);
        assert_eq!(t.codes, vec![-128]);
    }

    #[test]
    fn flip_positions_are_seeded_distinct_and_in_range() {
        let a = flip_positions_count(1000, 100, 7);
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && a[99] < 1000);
        assert_eq!(a, flip_positions_count(1000, 100, 7));
        assert_ne!(a, flip_positions_count(1000, 100, 8));
        assert_eq!(flip_positions_count(5, 10, 1), vec![0, 1, 2, 3, 4]);
        // Rate: the count is binomial(n, p); at n = 1e6, p = 1e-3 the mean is 1000, std ≈ 31.6.
        let n: usize = (0..20)
            .map(|s| flip_positions_rate(1_000_000, 1e-3, s).unwrap().len())
            .sum();
        let mean = n as f64 / 20.0;
        assert!((mean - 1000.0).abs() < 30.0, "{mean}");
        assert!(flip_positions_rate(10, 1.5, 0).is_err());
        assert!(flip_positions_rate(10, 0.0, 0).unwrap().is_empty());
        assert_eq!(flip_positions_rate(4, 1.0, 0).unwrap(), vec![0, 1, 2, 3]);
        let r = flip_positions_rate(100_000, 1e-2, 3).unwrap();
        assert!(r.windows(2).all(|w| w[0] < w[1]) && *r.last().unwrap() < 100_000);
    }

    #[test]
    fn flips_hit_every_bit_alike_and_a_sign_flip_moves_one_weight_by_its_channel_maximum() {
        // The rate sampler picks bit positions uniformly, so each of the 8 bits of a code,
        // the sign bit included, takes 1/8 of the flips (80,000 flips: std of a share ≈ 0.0012).
        let pos = flip_positions_rate(8_000_000, 1e-2, 11).unwrap();
        let mut per_bit = [0usize; 8];
        for p in &pos {
            per_bit[(p % 8) as usize] += 1;
        }
        for c in per_bit {
            let share = c as f64 / pos.len() as f64;
            assert!((share - 0.125).abs() < 0.006, "{per_bit:?}");
        }
        // A batch-normed layer: codes are of the folded weights; a sign flip moves a code by
        // exactly ±128 steps, i.e. the folded weight by 128/127 of its channel's largest
        // magnitude, and the layer's own weight by that divided by the channel's BN scale.
        let lw = layer(
            vec![0.5, -0.1, 0.02, 0.3, 0.0, -0.6],
            2,
            Some(vec![2.0, 0.5]),
        );
        let s = Int8Layer::store(&lw);
        let before = s.dequantize(&lw);
        for i in 0..6 {
            let mut t = s.clone();
            t.flip(&[8 * i as u64 + 7]);
            assert_eq!(i32::from(t.codes[i]) - i32::from(s.codes[i]), {
                if s.codes[i] >= 0 { -128 } else { 128 }
            });
            let after = t.dequantize(&lw);
            let (c, bn) = (i / 3, [2.0f32, 0.5][i / 3]);
            let row_max = lw.weight[3 * c..3 * c + 3]
                .iter()
                .fold(0f32, |a, v| a.max((v * bn).abs()));
            let moved = (after[i] - before[i]).abs() * bn;
            assert!(
                (moved - row_max * 128.0 / 127.0).abs() < 1e-5,
                "{i}: {moved}"
            );
            // Only that weight changes.
            for j in (0..6).filter(|&j| j != i) {
                assert_eq!(after[j], before[j]);
            }
        }
    }

    #[test]
    fn l2_difference() {
        assert!((l2_diff(&[3.0, 0.0], &[0.0, 4.0]) - 5.0).abs() < 1e-12);
    }
}
