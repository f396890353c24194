//! Drift-type classification and the frame sampling policies.
//!
//! **Type.** The confidence trajectory around the drift — from a window before the onset to
//! the trigger — is fitted by least squares with a ramp: level `a` until `τ₁`, a linear move
//! to level `b` at `τ₂`, level `b` after (a grid over `τ₁ ≤ τ₂`; `a`, `b` solved per pair). A
//! drift whose fitted transition `τ₂ − τ₁` is at most `sudden_max_s` is *sudden*. (The type
//! used to rest on the number of window slides to the trigger, which the settling test made
//! one slide for almost every drift, so every drift was typed sudden.) A longer transition
//! is told apart by its frames in the middle third of `[τ₁, τ₂]`, compared with the old
//! concept (the reference window's frames) and the new one (the last window's): when the
//! drift alternates between the two concepts (gradual, in the standard taxonomy), every middle
//! frame is close to one of them; when it moves through intermediate concepts (incremental),
//! middle frames are far from both. The statistic is the mean nearest-neighbour distance of
//! middle frames to the old∪new set over the same statistic within old∪new (leave-one-out);
//! above `alternation_ratio` → incremental, else gradual. AdaEvo.md assigns the two labels the
//! other way round while its sampling policies match the standard meanings; we decide by
//! behaviour (see `../shared/papers/adaevo.md` §4).
//!
//! **Policies.** sudden → a fixed rate over `[t₁, t₃]`; incremental → a linearly increasing
//! rate (later frames are closer to the new concept); gradual → the frames farthest
//! (Euclidean) from the old concept's centroid; fixed (naive) → a fixed rate over the last
//! `fixed_window` seconds before the trigger.

use crate::protocol::DriftType;

/// One buffered frame on the mobile end.
#[derive(Debug, Clone, PartialEq)]
pub struct Obs {
    /// Capture time, seconds.
    pub t: f64,
    /// Raw pixels (what would be uploaded).
    pub pixels: Vec<u8>,
    /// Model input (the feature space of frame distances).
    pub input: Vec<f32>,
    /// Classification confidence.
    pub cc: f64,
    /// The first frame of its second: the trigger, drift typing and estimate read these only
    /// (every frame is one at one frame per second).
    pub key: bool,
}

/// Squared Euclidean distance.
pub fn dist2(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (x - y) as f64;
            d * d
        })
        .sum()
}

fn nn_dist(x: &[f32], set: &[&[f32]], skip: Option<usize>) -> f64 {
    let mut best = f64::INFINITY;
    for (i, s) in set.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        best = best.min(dist2(x, s));
    }
    best.sqrt()
}

/// The alternation statistic (see the module doc): mean NN distance of `middle` frames to
/// `old ∪ new` over the leave-one-out mean NN distance within `old ∪ new`.
pub fn alternation_ratio(old: &[&[f32]], middle: &[&[f32]], new: &[&[f32]]) -> f64 {
    let pool: Vec<&[f32]> = old.iter().chain(new).copied().collect();
    if pool.len() < 2 || middle.is_empty() {
        return 1.0;
    }
    let within = pool
        .iter()
        .enumerate()
        .map(|(i, x)| nn_dist(x, &pool, Some(i)))
        .sum::<f64>()
        / pool.len() as f64;
    let mid = middle.iter().map(|x| nn_dist(x, &pool, None)).sum::<f64>() / middle.len() as f64;
    mid / within.max(1e-12)
}

/// A least-squares ramp fit of a confidence trajectory (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RampFit {
    /// Start of the transition, seconds.
    pub tau1: f64,
    /// End of the transition, seconds.
    pub tau2: f64,
    /// Level before.
    pub a: f64,
    /// Level after.
    pub b: f64,
}

impl RampFit {
    /// Length of the transition, seconds.
    pub fn duration(&self) -> f64 {
        self.tau2 - self.tau1
    }
}

/// Fits the ramp `a → b` over `[τ₁, τ₂]` to `(ts, ys)` (times ascending), trying `τ₁ ≤ τ₂`
/// on a grid of at most `grid` sample times. `None` with fewer than four samples.
pub fn ramp_fit(ts: &[f64], ys: &[f64], grid: usize) -> Option<RampFit> {
    let n = ts.len().min(ys.len());
    if n < 4 {
        return None;
    }
    let stride = n.div_ceil(grid.max(2)).max(1);
    let knots: Vec<usize> = (0..n).step_by(stride).collect();
    // Prefix sums: before the ramp u = 1, after it v = 1; only the ramp's samples are summed
    // one by one. The residual follows from the same sums:
    // Σ(y − a·u − b·v)² = Σy² − 2aΣyu − 2bΣyv + a²Σuu + 2abΣuv + b²Σvv.
    let mut py = vec![0.0; n + 1];
    for k in 0..n {
        py[k + 1] = py[k] + ys[k];
    }
    let syy: f64 = ys[..n].iter().map(|y| y * y).sum();
    let mut best: Option<(f64, RampFit)> = None;
    for (i, &k1) in knots.iter().enumerate() {
        for &k2 in &knots[i..] {
            let (t1, t2) = (ts[k1], ts[k2]);
            // Samples at or before t1 are on the old level, at or after t2 on the new one.
            let before = ts[..n].partition_point(|t| *t <= t1);
            let after = ts[..n].partition_point(|t| *t < t2).max(before);
            let mut suu = before as f64;
            let mut svv = (n - after) as f64;
            let mut suv = 0.0;
            let mut syu = py[before];
            let mut syv = py[n] - py[after];
            for k in before..after {
                let g = (ts[k] - t1) / (t2 - t1);
                let (u, v) = (1.0 - g, g);
                suu += u * u;
                suv += u * v;
                svv += v * v;
                syu += ys[k] * u;
                syv += ys[k] * v;
            }
            let det = suu * svv - suv * suv;
            if det.abs() < 1e-9 {
                continue;
            }
            let a = (syu * svv - syv * suv) / det;
            let b = (syv * suu - syu * suv) / det;
            let sse =
                syy - 2.0 * a * syu - 2.0 * b * syv + a * a * suu + 2.0 * a * b * suv + b * b * svv;
            if best.is_none_or(|(s, _)| sse < s - 1e-12) {
                best = Some((
                    sse,
                    RampFit {
                        tau1: t1,
                        tau2: t2,
                        a,
                        b,
                    },
                ));
            }
        }
    }
    best.map(|b| b.1)
}

/// What a capture condition changes in a frame whatever its content: intensity level and
/// spread, edge strength along both axes, share of mid-grey pixels (occluders), fine-scale
/// energy (noise raises it, blur lowers it).
pub fn descriptor(x: &[f32]) -> [f64; 6] {
    let side = (x.len() as f64).sqrt() as usize;
    let n = x.len().max(1) as f64;
    let m = x.iter().map(|v| *v as f64).sum::<f64>() / n;
    let sd = (x.iter().map(|v| (*v as f64 - m).powi(2)).sum::<f64>() / n).sqrt();
    let (mut gx, mut gy, mut lap, mut grey) = (0.0, 0.0, 0.0, 0.0);
    let at = |r: usize, c: usize| x.get(r * side + c).copied().unwrap_or(0.0) as f64;
    for r in 0..side {
        for c in 0..side {
            let v = at(r, c);
            if v.abs() < 0.08 {
                grey += 1.0;
            }
            if c + 1 < side {
                gx += (at(r, c + 1) - v).abs();
            }
            if r + 1 < side {
                gy += (at(r + 1, c) - v).abs();
            }
            if r > 0 && c > 0 && r + 1 < side && c + 1 < side {
                let s = at(r - 1, c) + at(r + 1, c) + at(r, c - 1) + at(r, c + 1);
                lap += (s - 4.0 * v).abs();
            }
        }
    }
    [m, sd, gx / n, gy / n, grey / n, lap / n]
}

/// Each frame's position between the old concept (0) and the new one (1) along the
/// diagonal linear-discriminant direction of their descriptors, with the spread of the old
/// and new frames' positions. `None` when the two concepts' descriptors do not differ.
pub fn concept_axis(
    old: &[[f64; 6]],
    new: &[[f64; 6]],
    frames: &[[f64; 6]],
) -> Option<(Vec<f64>, f64, f64)> {
    if old.len() < 2 || new.len() < 2 {
        return None;
    }
    let mean = |v: &[[f64; 6]], j: usize| v.iter().map(|d| d[j]).sum::<f64>() / v.len() as f64;
    let var = |v: &[[f64; 6]], j: usize, m: f64| {
        v.iter().map(|d| (d[j] - m).powi(2)).sum::<f64>() / v.len() as f64
    };
    let mut w = [0.0; 6];
    let mut mo = [0.0; 6];
    for j in 0..6 {
        let (a, b) = (mean(old, j), mean(new, j));
        let pooled = (var(old, j, a) + var(new, j, b)) / 2.0 + 1e-9;
        w[j] = (b - a) / pooled;
        mo[j] = a;
    }
    let proj = |d: &[f64; 6]| (0..6).map(|j| w[j] * (d[j] - mo[j])).sum::<f64>();
    let span = new.iter().map(proj).sum::<f64>() / new.len() as f64;
    if span.abs() < 1e-9 {
        return None;
    }
    let z = |d: &[f64; 6]| proj(d) / span;
    let sd = |v: &[[f64; 6]]| {
        let zs: Vec<f64> = v.iter().map(z).collect();
        let m = zs.iter().sum::<f64>() / zs.len() as f64;
        (zs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / zs.len() as f64).sqrt()
    };
    Some((frames.iter().map(z).collect(), sd(old), sd(new)))
}

fn log_normal(x: f64, m: f64, s: f64) -> f64 {
    let s = s.max(1e-3);
    -0.5 * ((x - m) / s).powi(2) - s.ln()
}

/// Mean log-likelihood gain of "each middle frame is from the old (0, spread `so`) or the
/// new concept (1, spread `sn`)" — a two-component mixture, weight fitted by EM — over "the
/// middle frames sit around one intermediate point" (one Gaussian at their mean, spread
/// between `so` and `sn`). Positive: alternation (gradual); negative: an intermediate
/// concept (incremental).
pub fn alternation_gain(middle: &[f64], so: f64, sn: f64) -> f64 {
    if middle.is_empty() {
        return 0.0;
    }
    let n = middle.len() as f64;
    let mut pi = 0.5;
    for _ in 0..30 {
        let r: f64 = middle
            .iter()
            .map(|&z| {
                let (lo, ln) = (log_normal(z, 0.0, so), log_normal(z, 1.0, sn));
                let (a, b) = ((1.0 - pi) * lo.exp(), pi * ln.exp());
                if a + b > 0.0 { b / (a + b) } else { 0.5 }
            })
            .sum();
        pi = (r / n).clamp(0.01, 0.99);
    }
    let mix = middle
        .iter()
        .map(|&z| {
            let v = (1.0 - pi) * log_normal(z, 0.0, so).exp() + pi * log_normal(z, 1.0, sn).exp();
            v.max(1e-300).ln()
        })
        .sum::<f64>()
        / n;
    let m = middle.iter().sum::<f64>() / n;
    let s = (so + sn) / 2.0;
    let one = middle.iter().map(|&z| log_normal(z, m, s)).sum::<f64>() / n;
    mix - one
}

/// Classifies a drift from the frames `span` (time order: about a window before the onset
/// through the trigger) and `old`, the reference window's inputs. Each frame's position on
/// the old→new concept axis of condition descriptors ([`concept_axis`]) is fitted with a ramp
/// over time: a transition of at most `sudden_max_s` is sudden; a longer one is gradual when
/// its middle third alternates between the concepts ([`alternation_gain`] > 0), else
/// incremental. Where the descriptors do not separate the concepts (spread of either concept
/// above the distance between them: a rotation barely moves them) the frames' confidence
/// gives the ramp and the nearest-neighbour [`alternation_ratio`] above
/// `alternation_threshold` says incremental.
pub fn classify_drift(
    span: &[&Obs],
    old: &[&[f32]],
    window: usize,
    sudden_max_s: f64,
    alternation_threshold: f64,
) -> DriftType {
    let n = span.len();
    if n < 4 {
        return DriftType::Sudden;
    }
    let ts: Vec<f64> = span.iter().map(|o| o.t).collect();
    let od: Vec<[f64; 6]> = old.iter().map(|x| descriptor(x)).collect();
    let sd: Vec<[f64; 6]> = span.iter().map(|o| descriptor(&o.input)).collect();
    let nd = &sd[n.saturating_sub(window)..];
    // Spreads up to the whole distance still order the frames along the move; with no
    // condition change the fitted axis leaves them near 2 (noise between two windows of 40).
    let axis = concept_axis(&od, nd, &sd).filter(|(_, so, sn)| so.max(*sn) <= 1.0);
    let ys: Vec<f64> = match &axis {
        Some((z, _, _)) => z.clone(),
        None => span.iter().map(|o| o.cc).collect(),
    };
    let Some(fit) = ramp_fit(&ts, &ys, 60) else {
        return DriftType::Sudden;
    };
    let d = fit.duration();
    if d <= sudden_max_s {
        return DriftType::Sudden;
    }
    let (lo, hi) = (fit.tau1 + d / 3.0, fit.tau1 + 2.0 * d / 3.0);
    let mid: Vec<usize> = (0..n).filter(|&i| ts[i] >= lo && ts[i] <= hi).collect();
    if mid.len() < 3 {
        return DriftType::Sudden;
    }
    if let Some((z, so, sn)) = &axis {
        let zm: Vec<f64> = mid.iter().map(|&i| z[i]).collect();
        return if alternation_gain(&zm, *so, *sn) > 0.0 {
            DriftType::Gradual
        } else {
            DriftType::Incremental
        };
    }
    let new: Vec<&[f32]> = span[n.saturating_sub(window)..]
        .iter()
        .map(|o| o.input.as_slice())
        .collect();
    let middle: Vec<&[f32]> = mid.iter().map(|&i| span[i].input.as_slice()).collect();
    if alternation_ratio(old, &middle, &new) > alternation_threshold {
        DriftType::Incremental
    } else {
        DriftType::Gradual
    }
}

/// `k` indices evenly spread over `0..n`.
pub fn even(n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    (0..k)
        .map(|i| ((i as f64 + 0.5) * n as f64 / k as f64) as usize)
        .map(|i| i.min(n.saturating_sub(1)))
        .collect()
}

/// `k` indices over `0..n` at a rate rising linearly from 0 (systematic sampling of the
/// cumulative weight `i + 1`).
pub fn ramp(n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    if k == 0 {
        return Vec::new();
    }
    let total = (n * (n + 1)) as f64 / 2.0;
    let mut out = Vec::with_capacity(k);
    let mut cum = 0.0;
    let mut next = 0;
    for i in 0..n {
        cum += (i + 1) as f64;
        while next < k && (next as f64 + 0.5) * total / k as f64 <= cum {
            if out.last() != Some(&i) {
                out.push(i);
            }
            next += 1;
        }
    }
    // Collisions at the steep end are topped up from the latest frames not yet chosen.
    let mut j = n;
    while out.len() < k && j > 0 {
        j -= 1;
        if !out.contains(&j) {
            out.push(j);
        }
    }
    out.sort_unstable();
    out
}

/// The `k` indices of `interval` farthest from `centroid`.
pub fn farthest(interval: &[&Obs], centroid: &[f32], k: usize) -> Vec<usize> {
    let mut d: Vec<(f64, usize)> = interval
        .iter()
        .enumerate()
        .map(|(i, o)| (dist2(&o.input, centroid), i))
        .collect();
    d.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut idx: Vec<usize> = d.iter().take(k).map(|p| p.1).collect();
    idx.sort_unstable();
    idx
}

/// Mean of the inputs.
pub fn centroid(xs: &[&[f32]]) -> Vec<f32> {
    let dim = xs.first().map_or(0, |x| x.len());
    let mut c = vec![0f32; dim];
    for x in xs {
        for (a, b) in c.iter_mut().zip(x.iter()) {
            *a += b;
        }
    }
    let n = xs.len().max(1) as f32;
    c.iter_mut().for_each(|v| *v /= n);
    c
}

/// The frames the policy for `drift` uploads from `interval` (at most `budget`).
pub fn select(
    drift: DriftType,
    interval: &[&Obs],
    old_centroid: &[f32],
    budget: usize,
) -> Vec<usize> {
    match drift {
        DriftType::Sudden | DriftType::Unknown => even(interval.len(), budget),
        DriftType::Incremental => ramp(interval.len(), budget),
        DriftType::Gradual => farthest(interval, old_centroid, budget),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_pick_what_they_promise() {
        assert_eq!(even(10, 5), vec![1, 3, 5, 7, 9]);
        let r = ramp(100, 20);
        assert_eq!(r.len(), 20);
        let late = r.iter().filter(|i| **i >= 50).count();
        assert!(late >= 14, "{r:?}");
        let obs: Vec<Obs> = (0..10)
            .map(|i| Obs {
                t: i as f64,
                pixels: vec![],
                input: vec![if i % 3 == 0 { 5.0 } else { 0.0 }],
                cc: 0.5,
                key: true,
            })
            .collect();
        let refs: Vec<&Obs> = obs.iter().collect();
        assert_eq!(farthest(&refs, &[0.0], 3), vec![0, 3, 6]);
    }

    #[test]
    fn ramp_fit_tells_a_step_from_a_ramp() {
        let jit = |i: usize| ((i * 7919) % 101) as f64 / 500.0 - 0.1;
        let ts: Vec<f64> = (0..200).map(|i| i as f64).collect();
        let step: Vec<f64> = (0..200)
            .map(|i| if i < 60 { 0.9 } else { 0.6 } + jit(i))
            .collect();
        let f = ramp_fit(&ts, &step, 60).unwrap();
        assert!(f.duration() <= 10.0, "{f:?}");
        assert!((55.0..=65.0).contains(&f.tau1), "{f:?}");
        let ramp: Vec<f64> = (0..200)
            .map(|i| 0.9 - 0.3 * ((i as f64 - 50.0) / 100.0).clamp(0.0, 1.0) + jit(i))
            .collect();
        let f = ramp_fit(&ts, &ramp, 60).unwrap();
        assert!((70.0..=130.0).contains(&f.duration()), "{f:?}");
        assert!(
            (f.a - 0.9).abs() < 0.05 && (f.b - 0.6).abs() < 0.05,
            "{f:?}"
        );
        assert!(ramp_fit(&ts[..3], &ramp[..3], 60).is_none());
    }

    fn r(v: &[Vec<f32>]) -> Vec<&[f32]> {
        v.iter().map(|x| x.as_slice()).collect()
    }

    #[test]
    fn alternation_vs_intermediate() {
        let old: Vec<Vec<f32>> = (0..20).map(|i| vec![0.0 + 0.01 * i as f32, 0.0]).collect();
        let new: Vec<Vec<f32>> = (0..20).map(|i| vec![10.0 + 0.01 * i as f32, 0.0]).collect();
        let alt: Vec<Vec<f32>> = (0..10)
            .map(|i| {
                vec![
                    if i % 2 == 0 { 0.005 } else { 10.005 } + 0.01 * i as f32,
                    0.0,
                ]
            })
            .collect();
        let mid: Vec<Vec<f32>> = (0..10).map(|i| vec![5.0 + 0.01 * i as f32, 0.0]).collect();
        assert!(alternation_ratio(&r(&old), &r(&alt), &r(&new)) < 1.5);
        assert!(alternation_ratio(&r(&old), &r(&mid), &r(&new)) > 10.0);
    }
}
