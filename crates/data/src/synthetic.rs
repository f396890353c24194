//! A deterministic contextual stochastic block model (CSBM; Deshpande et al., 2018): balanced
//! classes, edges that join two nodes of the same class with probability `p_in_ratio`
//! (edge homophily), and Gaussian features around a per-class mean.
//!
//! Built for scale: edges are drawn per chunk of nodes, each chunk from its own seeded
//! generator, on as many threads as asked, and go straight into CSR; the result depends on the
//! seed only, never on the thread count. Features are not stored: [`CsbmGraph::feature_row`]
//! recomputes any row from `(seed, node)`, so a million-node graph with 128 features needs the
//! adjacency's memory only.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::graph::{CsrGraphData, Features, sort_dedup_rows};

/// Parameters of the generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CsbmConfig {
    pub nodes: usize,
    pub classes: usize,
    /// Target mean number of neighbours per node, i.e. adjacency entries per row (an
    /// undirected edge counts at both ends). Repeated draws are merged, so the result is
    /// slightly lower on small or dense graphs.
    pub avg_degree: f64,
    /// Fraction of edges drawn inside a class (edge homophily), in [0, 1].
    pub p_in_ratio: f64,
    /// Feature dimension.
    pub features: usize,
    /// Class means have entries `±feature_signal` (random signs per class and feature).
    pub feature_signal: f32,
    /// Standard deviation of the Gaussian noise around the class mean.
    pub feature_noise: f32,
    pub seed: u64,
}

impl Default for CsbmConfig {
    fn default() -> Self {
        CsbmConfig {
            nodes: 2000,
            classes: 5,
            avg_degree: 10.0,
            p_in_ratio: 0.8,
            features: 32,
            feature_signal: 0.3,
            feature_noise: 1.0,
            seed: 0,
        }
    }
}

impl CsbmConfig {
    /// Checks every parameter; [`generate_csbm`] calls it before any work.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(DataError::invalid("CSBM config", msg));
        if self.nodes < 2 || self.nodes > u32::MAX as usize {
            return bad(format!("nodes = {} must be in 2..=2^32-1", self.nodes));
        }
        if self.classes == 0 || self.nodes / self.classes < 2 {
            return bad(format!(
                "classes = {} must be at least 1 with at least 2 nodes per class ({} nodes)",
                self.classes, self.nodes
            ));
        }
        if !(0.0..=1.0).contains(&self.p_in_ratio) {
            return bad(format!(
                "p_in_ratio = {} must be in [0, 1]",
                self.p_in_ratio
            ));
        }
        if self.classes == 1 && self.p_in_ratio < 1.0 {
            return bad("with 1 class every edge is inside it: set p_in_ratio = 1".into());
        }
        if !self.avg_degree.is_finite()
            || self.avg_degree < 0.0
            || self.avg_degree > (self.nodes / self.classes - 1) as f64
        {
            return bad(format!(
                "avg_degree = {} must be in [0, {}] (the size of a class less one)",
                self.avg_degree,
                self.nodes / self.classes - 1
            ));
        }
        if !self.feature_signal.is_finite()
            || !self.feature_noise.is_finite()
            || self.feature_noise < 0.0
        {
            return bad(format!(
                "feature_signal = {} must be finite and feature_noise = {} finite and >= 0",
                self.feature_signal, self.feature_noise
            ));
        }
        Ok(())
    }
}

/// A generated graph: symmetric CSR adjacency without self loops or repeats, balanced labels,
/// and features computed on demand.
#[derive(Debug, Clone, PartialEq)]
pub struct CsbmGraph {
    pub config: CsbmConfig,
    /// `nodes + 1` offsets into `indices`.
    pub indptr: Vec<usize>,
    /// Neighbour ids, sorted within each row.
    pub indices: Vec<u32>,
    /// Class of each node; class sizes differ by at most one.
    pub labels: Vec<u32>,
    /// `classes x features`, row-major.
    class_means: Vec<f32>,
}

const CHUNK: usize = 16_384;
const STREAM_LABELS: u64 = 1;
const STREAM_MEANS: u64 = 2;
const STREAM_FEATURES: u64 = 3;
const STREAM_EDGES: u64 = 1 << 32;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Independent seeds for the generator's streams, so changing one part (e.g. the features)
/// cannot shift the random numbers of another.
fn stream_seed(seed: u64, stream: u64) -> u64 {
    splitmix(seed ^ splitmix(stream))
}

/// A small counter-based generator for feature rows: seeding `StdRng` once per row would
/// cost more than the row itself.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix(self.0)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Generates the graph on all available cores.
pub fn generate_csbm(config: &CsbmConfig) -> Result<CsbmGraph> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    generate_csbm_threads(config, threads)
}

/// Generates the graph on `threads` threads; the result is the same for every thread count.
pub fn generate_csbm_threads(config: &CsbmConfig, threads: usize) -> Result<CsbmGraph> {
    config.validate()?;
    let c = config;
    let n = c.nodes;
    let threads = threads.max(1);

    let mut labels: Vec<u32> = (0..n).map(|i| (i % c.classes) as u32).collect();
    labels.shuffle(&mut StdRng::seed_from_u64(stream_seed(
        c.seed,
        STREAM_LABELS,
    )));
    let mut members: Vec<Vec<u32>> = vec![Vec::with_capacity(n / c.classes + 1); c.classes];
    for (i, &l) in labels.iter().enumerate() {
        members[l as usize].push(i as u32);
    }

    let mut mean_rng = StdRng::seed_from_u64(stream_seed(c.seed, STREAM_MEANS));
    let class_means: Vec<f32> = (0..c.classes * c.features)
        .map(|_| {
            if mean_rng.random_bool(0.5) {
                c.feature_signal
            } else {
                -c.feature_signal
            }
        })
        .collect();

    // Each node starts avg_degree / 2 edges (the other half of its degree comes from edges
    // other nodes start), rounded up or down at random to hit the mean.
    let half = c.avg_degree / 2.0;
    let (base, frac) = (half.floor() as usize, half.fract());
    let num_chunks = n.div_ceil(CHUNK);
    let draw_chunk = |chunk: usize| -> Vec<(u32, u32)> {
        let mut rng = StdRng::seed_from_u64(stream_seed(c.seed, STREAM_EDGES + chunk as u64));
        let (lo, hi) = (chunk * CHUNK, ((chunk + 1) * CHUNK).min(n));
        let mut pairs = Vec::with_capacity((hi - lo) * (base + 1));
        for (i, &own) in labels.iter().enumerate().take(hi).skip(lo) {
            let own = own as usize;
            let k = base + usize::from(frac > 0.0 && rng.random_bool(frac));
            for _ in 0..k {
                let j = if c.classes == 1 || rng.random_bool(c.p_in_ratio) {
                    let m = &members[own];
                    // Classes hold at least 2 nodes, so this ends quickly.
                    loop {
                        let j = m[rng.random_range(0..m.len())];
                        if j as usize != i {
                            break j;
                        }
                    }
                } else {
                    let other = (own + 1 + rng.random_range(0..c.classes - 1)) % c.classes;
                    let m = &members[other];
                    m[rng.random_range(0..m.len())]
                };
                pairs.push((i as u32, j));
            }
        }
        pairs
    };
    let mut chunks: Vec<Vec<(u32, u32)>> = vec![Vec::new(); num_chunks];
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(num_chunks))
            .map(|t| {
                let draw = &draw_chunk;
                s.spawn(move || {
                    (t..num_chunks)
                        .step_by(threads)
                        .map(|ch| (ch, draw(ch)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panic in a worker is a bug here, not a data problem; pass it on unchanged.
            for (ch, pairs) in h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)) {
                chunks[ch] = pairs;
            }
        }
    });

    let mut indptr = vec![0usize; n + 1];
    for &(i, j) in chunks.iter().flatten() {
        indptr[i as usize + 1] += 1;
        indptr[j as usize + 1] += 1;
    }
    for i in 0..n {
        indptr[i + 1] += indptr[i];
    }
    let mut cursor = indptr[..n].to_vec();
    let mut indices = vec![0u32; indptr[n]];
    for pairs in chunks {
        for (i, j) in pairs {
            indices[cursor[i as usize]] = j;
            cursor[i as usize] += 1;
            indices[cursor[j as usize]] = i;
            cursor[j as usize] += 1;
        }
    }
    drop(cursor);
    sort_dedup_rows(&mut indptr, &mut indices, threads);
    indices.shrink_to_fit();
    Ok(CsbmGraph {
        config: c.clone(),
        indptr,
        indices,
        labels,
        class_means,
    })
}

impl CsbmGraph {
    pub fn num_nodes(&self) -> usize {
        self.labels.len()
    }

    /// Adjacency entries (twice the undirected edges).
    pub fn num_edges(&self) -> usize {
        self.indices.len()
    }

    pub fn neighbors(&self, node: usize) -> &[u32] {
        &self.indices[self.indptr[node]..self.indptr[node + 1]]
    }

    /// Fraction of adjacency entries joining two nodes of the same class.
    pub fn edge_homophily(&self) -> f64 {
        let same: usize = (0..self.num_nodes())
            .map(|i| {
                self.neighbors(i)
                    .iter()
                    .filter(|&&j| self.labels[j as usize] == self.labels[i])
                    .count()
            })
            .sum();
        same as f64 / self.num_edges().max(1) as f64
    }

    /// Writes the features of `node` into `out` (length `config.features`): the class mean
    /// plus Gaussian noise, a pure function of `(seed, node)`.
    pub fn feature_row(&self, node: usize, out: &mut [f32]) {
        let d = self.config.features;
        let mean = &self.class_means[self.labels[node] as usize * d..][..d];
        let mut rng =
            SplitMix(stream_seed(self.config.seed, STREAM_FEATURES) ^ splitmix(node as u64));
        let noise = f64::from(self.config.feature_noise);
        for (pair, mu) in out.chunks_mut(2).zip(mean.chunks(2)) {
            // Box-Muller: two uniforms give two independent standard normals.
            let r = (-2.0 * rng.unit().ln()).sqrt() * noise;
            let t = std::f64::consts::TAU * rng.unit();
            pair[0] = mu[0] + (r * t.cos()) as f32;
            if pair.len() > 1 {
                pair[1] = mu[1] + (r * t.sin()) as f32;
            }
        }
    }

    /// All features, `nodes x features` row-major; for graphs small enough to hold them.
    pub fn dense_features(&self) -> Vec<f32> {
        let d = self.config.features;
        let mut out = vec![0.0; self.num_nodes() * d];
        if d > 0 {
            for (i, row) in out.chunks_mut(d).enumerate() {
                self.feature_row(i, row);
            }
        }
        out
    }

    /// The graph with features materialised, in the form the real-data readers return.
    pub fn to_graph_data(&self) -> CsrGraphData {
        CsrGraphData {
            num_nodes: self.num_nodes(),
            indptr: self.indptr.clone(),
            indices: self.indices.clone(),
            features: Features::Dense {
                rows: self.num_nodes(),
                cols: self.config.features,
                values: self.dense_features(),
            },
            labels: self.labels.clone(),
            num_classes: self.config.classes,
            class_names: None,
            split: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_graph_is_symmetric_with_target_degree_and_homophily() {
        let cfg = CsbmConfig {
            nodes: 3000,
            classes: 3,
            avg_degree: 12.0,
            p_in_ratio: 0.7,
            features: 5,
            ..Default::default()
        };
        let g = generate_csbm_threads(&cfg, 2).unwrap();
        let data = g.to_graph_data();
        assert!(data.is_symmetric());
        for i in 0..g.num_nodes() {
            let row = g.neighbors(i);
            assert!(
                row.windows(2).all(|w| w[0] < w[1]),
                "row {i} sorted, no repeats"
            );
            assert!(!row.contains(&(i as u32)), "no self loop at {i}");
        }
        let deg = g.num_edges() as f64 / g.num_nodes() as f64;
        assert!((deg - 12.0).abs() < 0.3, "mean degree {deg}");
        let h = g.edge_homophily();
        assert!((h - 0.7).abs() < 0.02, "homophily {h}");
        assert_eq!(data.class_counts(), vec![1000, 1000, 1000]);
        // Features sit around their class mean.
        let x = g.dense_features();
        let mut sums = [0.0f64; 3];
        for (i, &l) in g.labels.iter().enumerate() {
            sums[l as usize] += f64::from(x[i * 5]) / 1000.0;
        }
        for (l, s) in sums.iter().enumerate() {
            assert!((s.abs() - 0.3).abs() < 0.1, "class {l} feature-0 mean {s}");
        }
    }

    #[test]
    fn deterministic_across_calls_and_thread_counts() {
        let cfg = CsbmConfig {
            nodes: 40_000,
            avg_degree: 7.3,
            seed: 9,
            ..Default::default()
        };
        let a = generate_csbm_threads(&cfg, 1).unwrap();
        let b = generate_csbm_threads(&cfg, 3).unwrap();
        assert_eq!(a, b);
        let mut r1 = vec![0.0; cfg.features];
        let mut r2 = vec![0.0; cfg.features];
        a.feature_row(123, &mut r1);
        b.feature_row(123, &mut r2);
        assert_eq!(r1, r2);
        let other = generate_csbm_threads(&CsbmConfig { seed: 10, ..cfg }, 2).unwrap();
        assert_ne!(a.indices, other.indices);
    }

    #[test]
    fn rejects_bad_configs_before_work() {
        let ok = CsbmConfig::default();
        for bad in [
            CsbmConfig {
                nodes: 1,
                ..ok.clone()
            },
            CsbmConfig {
                classes: 0,
                ..ok.clone()
            },
            CsbmConfig {
                classes: 1500,
                ..ok.clone()
            },
            CsbmConfig {
                p_in_ratio: 1.5,
                ..ok.clone()
            },
            CsbmConfig {
                classes: 1,
                p_in_ratio: 0.5,
                ..ok.clone()
            },
            CsbmConfig {
                avg_degree: f64::NAN,
                ..ok.clone()
            },
            CsbmConfig {
                avg_degree: 500.0,
                ..ok.clone()
            },
            CsbmConfig {
                feature_noise: -1.0,
                ..ok.clone()
            },
        ] {
            let e = generate_csbm(&bad).unwrap_err();
            assert!(matches!(e, DataError::Invalid { .. }), "{bad:?}");
        }
        let one = generate_csbm(&CsbmConfig {
            classes: 1,
            p_in_ratio: 1.0,
            nodes: 50,
            avg_degree: 4.0,
            ..ok
        })
        .unwrap();
        assert!((one.edge_homophily() - 1.0).abs() < 1e-12);
    }
}
