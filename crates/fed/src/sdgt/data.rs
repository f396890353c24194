//! Fashion-MNIST as feature vectors, and its partitions over devices.
//!
//! Partitions (`data.split`):
//! - `sorted`: the reference's extreme label skew — the training rows sorted by label (stable)
//!   and cut into contiguous equal chunks, device `i` taking chunk `i`; with contiguous subnets
//!   this also makes the subnets' label sets disjoint or nearly so;
//! - `dirichlet`: for each class, its rows are shuffled and shared among devices in
//!   proportions drawn from Dirichlet(α) (the milder, widely used non-IID case);
//! - `iid`: a shuffle cut into equal chunks.

use super::model::Samples;
use ferrolab_vision::data::{ImageSet, Normalization};
use rand::RngExt;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Images to standardised feature vectors (`(v/255 − mean)/std` with `norm`).
pub fn to_samples(set: &ImageSet, norm: Normalization, classes: usize) -> Samples {
    let x = set
        .pixels
        .iter()
        .map(|&p| norm.apply(f32::from(p) / 255.0))
        .collect();
    Samples {
        x,
        y: set.labels.clone(),
        dim: set.height * set.width,
        classes,
    }
}

/// Splits `0..len` into `n` contiguous chunks whose sizes differ by at most one.
fn chunks(order: &[usize], n: usize) -> Vec<Vec<usize>> {
    let len = order.len();
    (0..n)
        .map(|i| order[i * len / n..(i + 1) * len / n].to_vec())
        .collect()
}

/// Label-sorted contiguous chunks (stable sort, so the file order breaks ties).
pub fn sorted(labels: &[u8], n: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| labels[i]);
    chunks(&order, n)
}

/// A shuffle cut into equal chunks.
pub fn iid(labels: &[u8], n: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.shuffle(rng);
    chunks(&order, n)
}

fn gauss(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia–Tsang (boosted by U^{1/shape} below shape 1).
fn gamma(shape: f64, rng: &mut StdRng) -> f64 {
    if shape < 1.0 {
        let u: f64 = 1.0 - rng.random::<f64>();
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = gauss(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = 1.0 - rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Dirichlet(α) shares of every class over `n` devices. Every device is guaranteed at least
/// one row (a device without data could not take a step): rows are moved from the largest.
pub fn dirichlet(
    labels: &[u8],
    classes: usize,
    n: usize,
    alpha: f64,
    rng: &mut StdRng,
) -> Vec<Vec<usize>> {
    let mut parts = vec![Vec::new(); n];
    for k in 0..classes {
        let mut rows: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] as usize == k)
            .collect();
        rows.shuffle(rng);
        let p: Vec<f64> = (0..n).map(|_| gamma(alpha, rng)).collect();
        let total: f64 = p.iter().sum::<f64>().max(1e-300);
        let mut cum = 0.0;
        let mut start = 0usize;
        for (d, pd) in p.iter().enumerate() {
            cum += pd / total;
            let end = if d + 1 == n {
                rows.len()
            } else {
                ((cum * rows.len() as f64) as usize).min(rows.len())
            };
            parts[d].extend_from_slice(&rows[start..end.max(start)]);
            start = end.max(start);
        }
    }
    for d in 0..n {
        if parts[d].is_empty() {
            let big = (0..n).max_by_key(|&j| parts[j].len()).unwrap_or(0);
            if let Some(r) = parts[big].pop() {
                parts[d].push(r);
            }
        }
    }
    for p in &mut parts {
        p.sort_unstable();
    }
    parts
}

/// Distinct labels per device (a summary of how skewed a partition is).
pub fn labels_per_device(labels: &[u8], parts: &[Vec<usize>]) -> Vec<usize> {
    parts
        .iter()
        .map(|p| {
            let mut seen = [false; 256];
            p.iter().for_each(|&i| seen[labels[i] as usize] = true);
            seen.iter().filter(|&&s| s).count()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn partitions_cover_every_row_once() {
        let labels: Vec<u8> = (0..1000).map(|i| ((i * 7) % 10) as u8).collect();
        let mut rng = StdRng::seed_from_u64(0);
        for parts in [
            sorted(&labels, 40),
            iid(&labels, 40, &mut rng),
            dirichlet(&labels, 10, 40, 0.3, &mut rng),
        ] {
            let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..1000).collect::<Vec<_>>());
            assert!(parts.iter().all(|p| !p.is_empty()));
        }
        let s = sorted(&labels, 40);
        assert!(labels_per_device(&labels, &s).iter().all(|&k| k <= 2));
        let d = iid(&labels, 10, &mut rng);
        assert!(labels_per_device(&labels, &d).iter().all(|&k| k >= 8));
    }
}
