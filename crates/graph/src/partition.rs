//! Node partitions for Cluster-GCN: METIS (the paper's choice) and random (its baseline,
//! §3.2 / Table 3), with an on-disk cache.
//!
//! Partitioning is the one expensive, graph-sized step; batching from a partition is cheap
//! and done every epoch ([`ClusterPartition::batches`]). So, like PyG's `ClusterData`, a
//! partition is computed once and cached in a file keyed by the graph's content hash and
//! the parameters. A cache file is never trusted blindly: its header, graph hash, sizes,
//! every cluster id and a checksum are verified, and a stale or corrupt file is reported
//! and rebuilt.

use ferrolab_core::kernels::hash::WordHasher as Hasher;
use std::fmt;
use std::path::{Path, PathBuf};

use rand::Rng;
use rand::seq::SliceRandom;

use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};

/// How nodes are assigned to clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionMethod {
    /// METIS k-way (multilevel, minimises the edge cut): clusters are dense subgraphs.
    Metis,
    /// Uniformly random, near-equal sizes: the paper's baseline partition.
    Random,
}

impl PartitionMethod {
    pub fn name(self) -> &'static str {
        match self {
            PartitionMethod::Metis => "metis",
            PartitionMethod::Random => "random",
        }
    }

    /// Parses `metis` or `random`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "metis" => Some(PartitionMethod::Metis),
            "random" => Some(PartitionMethod::Random),
            _ => None,
        }
    }

    pub fn tag(self) -> u8 {
        match self {
            PartitionMethod::Metis => 1,
            PartitionMethod::Random => 2,
        }
    }
}

impl fmt::Display for PartitionMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A partition of the nodes into clusters: `assignment[v]` is node `v`'s cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPartition {
    pub parts: Vec<Vec<usize>>,
}

impl ClusterPartition {
    /// From a per-node cluster id; every id must be below `num_parts`.
    pub fn from_assignment(assignment: &[u32], num_parts: usize) -> Result<Self> {
        let mut parts = vec![Vec::new(); num_parts];
        for (v, &p) in assignment.iter().enumerate() {
            let slot = parts.get_mut(p as usize).ok_or_else(|| {
                GraphError::Invalid(format!("node {v} assigned to cluster {p} of {num_parts}"))
            })?;
            slot.push(v);
        }
        Ok(ClusterPartition { parts })
    }

    /// Per-node cluster ids (the inverse of [`ClusterPartition::parts`]).
    pub fn assignment(&self, num_nodes: usize) -> Vec<u32> {
        let mut a = vec![0u32; num_nodes];
        for (p, nodes) in self.parts.iter().enumerate() {
            for &v in nodes {
                a[v] = p as u32;
            }
        }
        a
    }

    /// Nodes shuffled and cut into `parts` clusters of near-equal size (sizes differ by at
    /// most one): the random-partition baseline of Cluster-GCN §3.2 / Table 3.
    pub fn random(num_nodes: usize, parts: usize, rng: &mut impl Rng) -> Self {
        let mut nodes: Vec<usize> = (0..num_nodes).collect();
        nodes.shuffle(rng);
        let parts = parts.max(1);
        let parts = (0..parts)
            .map(|p| {
                let (a, b) = (p * num_nodes / parts, (p + 1) * num_nodes / parts);
                let mut v = nodes[a..b].to_vec();
                v.sort_unstable();
                v
            })
            .collect();
        ClusterPartition { parts }
    }

    /// METIS k-way partition of a symmetric graph without self loops into `parts` clusters,
    /// seeded so the same graph and seed give the same clusters.
    pub fn metis(graph: &CsrGraph, parts: usize, seed: u64) -> Result<Self> {
        let n = graph.num_nodes();
        if parts == 0 || parts > n {
            return Err(GraphError::config(
                "parts",
                format!("{parts} clusters for {n} nodes: need 1..={n}"),
            ));
        }
        if parts == 1 {
            return Ok(ClusterPartition {
                parts: vec![(0..n).collect()],
            });
        }
        let too_large = || {
            GraphError::Invalid(format!(
                "graph with {n} nodes and {} edges exceeds METIS's 32-bit index range",
                graph.num_edges()
            ))
        };
        let xadj = graph
            .indptr()
            .iter()
            .map(|&o| metis::Idx::try_from(o))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| too_large())?;
        let adjncy = graph
            .indices()
            .iter()
            .map(|&c| metis::Idx::try_from(c))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| too_large())?;
        let nparts = metis::Idx::try_from(parts).map_err(|_| too_large())?;
        let mut part = vec![0 as metis::Idx; n];
        // METIS seeds with a C int; fold the 64-bit seed into it.
        let metis_seed = ((seed ^ (seed >> 32)) & 0x7fff_ffff) as metis::Idx;
        // METIS draws from one process-wide C random state: two partitions computed at once
        // (parallel tests, a user's threads) would race on it and lose determinism.
        let _one_at_a_time = METIS_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        metis::Graph::new(1, nparts, &xadj, &adjncy)
            .map_err(|e| GraphError::Invalid(format!("METIS rejected the graph: {e}")))?
            .set_option(metis::option::Seed(metis_seed))
            .part_kway(&mut part)
            .map_err(|e| GraphError::Invalid(format!("METIS failed: {e}")))?;
        let assignment: Vec<u32> = part.iter().map(|&p| p.max(0) as u32).collect();
        Self::from_assignment(&assignment, parts)
    }

    /// One epoch of batches: the clusters in random order, `q` at a time, each batch the
    /// sorted union of its clusters' nodes (the last batch may hold fewer clusters).
    pub fn batches(&self, q: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.parts.len()).collect();
        order.shuffle(rng);
        order
            .chunks(q.max(1))
            .map(|group| {
                let mut nodes: Vec<usize> = group
                    .iter()
                    .flat_map(|&p| self.parts[p].iter().copied())
                    .collect();
                nodes.sort_unstable();
                nodes
            })
            .collect()
    }

    /// Fraction of (directed) edges whose endpoints lie in different clusters.
    pub fn edge_cut_fraction(&self, graph: &CsrGraph) -> f64 {
        let a = self.assignment(graph.num_nodes());
        let indptr = graph.indptr();
        let cut: usize = (0..graph.num_nodes())
            .map(|v| {
                graph.indices()[indptr[v]..indptr[v + 1]]
                    .iter()
                    .filter(|&&u| a[u as usize] != a[v])
                    .count()
            })
            .sum();
        cut as f64 / graph.num_edges().max(1) as f64
    }
}

/// A 64-bit content hash of the adjacency (FNV-style mixing over 64-bit words): the cache
/// key, so an edited graph never meets an old partition.
pub fn graph_hash(graph: &CsrGraph) -> u64 {
    let mut h = Hasher::new();
    h.word(graph.num_nodes() as u64);
    for &o in graph.indptr() {
        h.word(o as u64);
    }
    for pair in graph.indices().chunks(2) {
        h.word(u64::from(pair[0]) | (u64::from(*pair.get(1).unwrap_or(&u32::MAX)) << 32));
    }
    h.finish()
}

static METIS_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

const MAGIC: &[u8; 8] = b"FLPART\0\x01";
const HEADER: usize = 8 + 8 + 8 + 8 + 8 + 8;

/// What happened to the cache on one lookup (for logs and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// No cache directory configured: computed, not stored.
    Disabled,
    /// Loaded from this file.
    Hit(PathBuf),
    /// Not there: computed and stored.
    Miss(PathBuf),
    /// There but unusable (the reason): computed again and replaced.
    Rebuilt(PathBuf, String),
}

/// Computes a partition, or loads it from `cache_dir` when a valid one for this graph and
/// these parameters is there. A write failure of the cache is not fatal: the partition is
/// still returned, and the status says it was not stored.
pub fn partition_cached(
    graph: &CsrGraph,
    method: PartitionMethod,
    parts: usize,
    seed: u64,
    cache_dir: Option<&Path>,
) -> Result<(ClusterPartition, CacheStatus)> {
    let n = graph.num_nodes();
    if parts == 0 || parts > n {
        return Err(GraphError::config(
            "parts",
            format!("{parts} clusters for {n} nodes: need 1..={n}"),
        ));
    }
    let compute = || -> Result<ClusterPartition> {
        match method {
            PartitionMethod::Metis => ClusterPartition::metis(graph, parts, seed),
            PartitionMethod::Random => {
                let mut rng = ferrolab_core::seed::rng(seed, "partition");
                Ok(ClusterPartition::random(n, parts, &mut rng))
            }
        }
    };
    let Some(dir) = cache_dir else {
        return Ok((compute()?, CacheStatus::Disabled));
    };
    let hash = graph_hash(graph);
    let path = dir.join(format!(
        "{:016x}-{}-{parts}-s{seed}.part",
        hash,
        method.name()
    ));
    let stale = match std::fs::read(&path) {
        Ok(bytes) => match decode(&bytes, n, parts, hash, method, seed) {
            Ok(p) => return Ok((p, CacheStatus::Hit(path))),
            Err(why) => Some(why),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(format!("unreadable: {e}")),
    };
    let p = compute()?;
    let stored = std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            ferrolab_core::run::write_atomic(&path, &encode(&p, n, hash, method, seed))
                .map_err(|e| e.to_string())
        });
    let status = match (stored, stale) {
        (Err(e), _) => CacheStatus::Rebuilt(path, format!("computed, but not cached: {e}")),
        (Ok(()), Some(why)) => CacheStatus::Rebuilt(path, why),
        (Ok(()), None) => CacheStatus::Miss(path),
    };
    Ok((p, status))
}

fn encode(
    p: &ClusterPartition,
    n: usize,
    hash: u64,
    method: PartitionMethod,
    seed: u64,
) -> Vec<u8> {
    let assignment = p.assignment(n);
    let mut out = Vec::with_capacity(HEADER + 4 * n + 8);
    out.extend_from_slice(MAGIC);
    for w in [
        n as u64,
        p.parts.len() as u64,
        hash,
        u64::from(method.tag()),
        seed,
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let mut h = Hasher::new();
    for &a in &assignment {
        out.extend_from_slice(&a.to_le_bytes());
        h.word(u64::from(a));
    }
    out.extend_from_slice(&h.finish().to_le_bytes());
    out
}

fn decode(
    bytes: &[u8],
    n: usize,
    parts: usize,
    hash: u64,
    method: PartitionMethod,
    seed: u64,
) -> std::result::Result<ClusterPartition, String> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a ferrolab partition file (bad header)".into());
    }
    let word = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[8 + 8 * i..16 + 8 * i]);
        u64::from_le_bytes(b)
    };
    let expected = [
        ("node count", n as u64),
        ("cluster count", parts as u64),
        ("graph hash", hash),
        ("method", u64::from(method.tag())),
        ("seed", seed),
    ];
    for (i, (what, want)) in expected.iter().enumerate() {
        if word(i) != *want {
            return Err(format!("stale: {what} is {} but {want} was asked", word(i)));
        }
    }
    if bytes.len() != HEADER + 4 * n + 8 {
        return Err(format!(
            "truncated or padded: {} bytes, expected {}",
            bytes.len(),
            HEADER + 4 * n + 8
        ));
    }
    let body = &bytes[HEADER..HEADER + 4 * n];
    let mut h = Hasher::new();
    let assignment: Vec<u32> = body
        .chunks_exact(4)
        .map(|c| {
            let a = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            h.word(u64::from(a));
            a
        })
        .collect();
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[HEADER + 4 * n..]);
    if u64::from_le_bytes(sum) != h.finish() {
        return Err("corrupt: checksum mismatch".into());
    }
    ClusterPartition::from_assignment(&assignment, parts).map_err(|e| format!("corrupt: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two 5-cliques joined by one edge: the best 2-way cut is that edge.
    fn two_cliques() -> CsrGraph {
        let mut adj: Vec<Vec<u32>> = vec![Vec::new(); 10];
        for block in [0u32, 5] {
            for a in block..block + 5 {
                for b in block..block + 5 {
                    if a != b {
                        adj[a as usize].push(b);
                    }
                }
            }
        }
        adj[4].push(5);
        adj[5].push(4);
        let mut indptr = vec![0];
        let mut indices = Vec::new();
        for mut row in adj {
            row.sort_unstable();
            indices.extend(row);
            indptr.push(indices.len());
        }
        CsrGraph::new(indptr, indices).unwrap()
    }

    #[test]
    fn metis_finds_the_minimum_cut_and_random_does_not() {
        let _serial = crate::serial_test();
        let g = two_cliques();
        let p = ClusterPartition::metis(&g, 2, 0).unwrap();
        let mut sides: Vec<Vec<usize>> = p.parts.clone();
        sides.sort();
        assert_eq!(sides, vec![vec![0, 1, 2, 3, 4], vec![5, 6, 7, 8, 9]]);
        assert!((p.edge_cut_fraction(&g) - 2.0 / 42.0).abs() < 1e-12);
        let mut rng = ferrolab_core::seed::rng(0, "t");
        let r = ClusterPartition::random(10, 2, &mut rng);
        assert!(r.edge_cut_fraction(&g) > p.edge_cut_fraction(&g));
        assert_eq!(ClusterPartition::metis(&g, 2, 0).unwrap(), p);
        assert!(ClusterPartition::metis(&g, 11, 0).is_err());
    }

    #[test]
    fn random_partition_covers_every_node_once() {
        let _serial = crate::serial_test();
        let mut rng = ferrolab_core::seed::rng(1, "t");
        let p = ClusterPartition::random(23, 5, &mut rng);
        let mut all: Vec<usize> = p.parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert!(p.parts.iter().all(|c| c.len() == 4 || c.len() == 5));
        let batches = p.batches(2, &mut rng);
        assert_eq!(batches.len(), 3);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 23);
        assert!(batches.iter().all(|b| b.windows(2).all(|w| w[0] < w[1])));
    }

    #[test]
    fn cache_hits_and_rebuilds_stale_or_corrupt_files() {
        let _serial = crate::serial_test();
        let dir = std::env::temp_dir().join(format!("ferrolab-part-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let g = two_cliques();
        let (p, s) = partition_cached(&g, PartitionMethod::Metis, 2, 3, Some(&dir)).unwrap();
        let CacheStatus::Miss(path) = s else {
            panic!("{s:?}")
        };
        let (q, s) = partition_cached(&g, PartitionMethod::Metis, 2, 3, Some(&dir)).unwrap();
        assert_eq!((&q, s), (&p, CacheStatus::Hit(path.clone())));

        // A flipped cluster id in the body: the checksum catches it.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (q, s) = partition_cached(&g, PartitionMethod::Metis, 2, 3, Some(&dir)).unwrap();
        assert_eq!(q, p);
        assert!(
            matches!(&s, CacheStatus::Rebuilt(_, why) if why.contains("checksum")),
            "{s:?}"
        );

        // Truncated.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (_, s) = partition_cached(&g, PartitionMethod::Metis, 2, 3, Some(&dir)).unwrap();
        assert!(
            matches!(&s, CacheStatus::Rebuilt(_, why) if why.contains("truncated")),
            "{s:?}"
        );

        // Same name, different content (a renamed file from another graph): stale.
        let bytes = std::fs::read(&path).unwrap();
        let mut other = bytes.clone();
        other[24..32].copy_from_slice(&7u64.to_le_bytes());
        std::fs::write(&path, &other).unwrap();
        let (_, s) = partition_cached(&g, PartitionMethod::Metis, 2, 3, Some(&dir)).unwrap();
        assert!(
            matches!(&s, CacheStatus::Rebuilt(_, why) if why.contains("graph hash")),
            "{s:?}"
        );

        // Other parameters are other files; a random partition is cached too.
        let (_, s) = partition_cached(&g, PartitionMethod::Random, 2, 3, Some(&dir)).unwrap();
        assert!(matches!(s, CacheStatus::Miss(_)));
        assert!(partition_cached(&g, PartitionMethod::Random, 11, 3, Some(&dir)).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn graph_hash_sees_one_changed_edge() {
        let _serial = crate::serial_test();
        let g = two_cliques();
        let mut indices = g.indices().to_vec();
        indices[0] = 2;
        indices[1] = 1;
        let h = CsrGraph::new(g.indptr().to_vec(), indices).unwrap();
        assert_ne!(graph_hash(&g), graph_hash(&h));
        assert_eq!(graph_hash(&g), graph_hash(&g.clone()));
    }
}
