//! The label-free accuracy estimate and how well it tracks the truth.
//!
//! For classification AdaEvo's proxy is the classification confidence `CC = max softmax`
//! averaged over a window of frames (the detector's `CLC = mean(CC·LC)` reduces to this when
//! every localisation confidence is 1). [`pearson`] measures the estimate's correlation with
//! the true windowed accuracy, which the report states.

/// Classification confidence of one prediction.
pub fn confidence(probs: &[f32]) -> f64 {
    probs.iter().fold(0f32, |a, b| a.max(*b)) as f64
}

/// The average-thresholded-confidence (ATC, Garg et al., ICLR 2022) threshold: the
/// confidence `τ` above which the same share of clean validation frames lies as the model's
/// clean accuracy. The share of frames above `τ` then estimates accuracy under drift; it
/// weighs a frame's confidence by whether it clears the level at which the model is usually
/// right instead of averaging the overconfident tail in.
pub fn atc_threshold(clean_confidences: &[f64], clean_accuracy: f64) -> f64 {
    let mut c: Vec<f64> = clean_confidences.to_vec();
    if c.is_empty() {
        return 0.0;
    }
    c.sort_by(f64::total_cmp);
    let below = ((1.0 - clean_accuracy.clamp(0.0, 1.0)) * c.len() as f64).round() as usize;
    if below == 0 {
        return c[0] - 1e-9;
    }
    c[(below - 1).min(c.len() - 1)]
}

/// Share of `confidences` above `tau`.
pub fn atc_estimate(confidences: &[f64], tau: f64) -> f64 {
    if confidences.is_empty() {
        return 0.0;
    }
    confidences.iter().filter(|c| **c > tau).count() as f64 / confidences.len() as f64
}

/// Mean of `v` (0 for empty).
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Population variance of `v`.
pub fn variance(v: &[f64]) -> f64 {
    let m = mean(v);
    if v.is_empty() {
        0.0
    } else {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64
    }
}

/// Pearson correlation of `a` and `b` (0 when either is constant).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (ma, mb) = (mean(&a[..n]), mean(&b[..n]));
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (x, y) = (a[i] - ma, b[i] - mb);
        sab += x * y;
        saa += x * x;
        sbb += y * y;
    }
    if saa <= 0.0 || sbb <= 0.0 {
        0.0
    } else {
        sab / (saa * sbb).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_signs() {
        let a = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&a, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&a, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&a, &[1.0; 4]), 0.0);
        assert!((variance(&a) - 1.25).abs() < 1e-12);
        // 10 clean confidences, 80% accuracy: τ leaves 8 above it.
        let clean: Vec<f64> = (0..10).map(|i| 0.5 + 0.05 * i as f64).collect();
        let tau = atc_threshold(&clean, 0.8);
        assert!((atc_estimate(&clean, tau) - 0.8).abs() < 1e-12);
        assert_eq!(atc_estimate(&[0.1, 0.2], tau), 0.0);
    }
}
