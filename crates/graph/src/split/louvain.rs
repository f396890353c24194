//! Louvain community detection (Blondel, Guillaume, Lambiotte & Lefebvre, J. Stat. Mech. 2008)
//! and Newman–Girvan modularity.
//!
//! With `A` the symmetric weight matrix (an undirected edge stored in both directions),
//! `k_i = Σ_j A_ij` and `2m = Σ_ij A_ij`, modularity is
//! `Q = Σ_c [ Σ_{i,j∈c} A_ij / 2m − (Σ_{i∈c} k_i / 2m)² ]`. Phase 1 visits nodes in a seeded
//! random order (as `python-louvain`, which FederatedScope calls, does) and moves each into
//! the neighbouring community of largest gain `k_{i,c} − tot_c k_i / 2m`; phase 2 collapses
//! communities into weighted super-nodes (internal weight becomes a self loop) and the two
//! repeat until no node moves.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::csr::CsrGraph;

/// A symmetric weighted graph: off-diagonal neighbour lists plus the diagonal.
struct Weighted {
    adj: Vec<Vec<(u32, f64)>>,
    self_w: Vec<f64>,
    deg: Vec<f64>,
    m2: f64,
}

impl Weighted {
    fn from_csr(g: &CsrGraph) -> Self {
        let n = g.num_nodes();
        let mut adj = Vec::with_capacity(n);
        let mut self_w = vec![0f64; n];
        for (i, sw) in self_w.iter_mut().enumerate() {
            let mut row: Vec<(u32, f64)> = Vec::with_capacity(g.degree(i));
            let mut nb: Vec<u32> = g.neighbors(i).to_vec();
            nb.sort_unstable();
            for j in nb {
                if j as usize == i {
                    *sw += 1.0;
                } else if let Some(last) = row.last_mut().filter(|l| l.0 == j) {
                    last.1 += 1.0;
                } else {
                    row.push((j, 1.0));
                }
            }
            adj.push(row);
        }
        Self::finish(adj, self_w)
    }

    fn finish(adj: Vec<Vec<(u32, f64)>>, self_w: Vec<f64>) -> Self {
        let deg: Vec<f64> = adj
            .iter()
            .zip(&self_w)
            .map(|(row, s)| row.iter().map(|e| e.1).sum::<f64>() + s)
            .collect();
        let m2 = deg.iter().sum();
        Weighted {
            adj,
            self_w,
            deg,
            m2,
        }
    }

    fn len(&self) -> usize {
        self.adj.len()
    }

    /// Phase 1: local moving from singletons. Returns each node's community (renumbered
    /// 0.. in order of first appearance) and whether any node moved.
    fn local_moves(&self, rng: &mut StdRng) -> (Vec<usize>, bool) {
        let n = self.len();
        let mut comm: Vec<usize> = (0..n).collect();
        let mut tot = self.deg.clone();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        let mut w_to = vec![0f64; n];
        let mut touched: Vec<usize> = Vec::new();
        let mut improved = false;
        // Each pass strictly increases Q, so this bound is only a guard against float ties.
        for _ in 0..1000 {
            let mut moved = false;
            for &i in &order {
                let ci = comm[i];
                let ki = self.deg[i];
                touched.clear();
                for &(j, w) in &self.adj[i] {
                    let c = comm[j as usize];
                    if w_to[c] == 0.0 {
                        touched.push(c);
                    }
                    w_to[c] += w;
                }
                tot[ci] -= ki;
                let mut best = ci;
                let mut best_gain = w_to[ci] - tot[ci] * ki / self.m2;
                for &c in &touched {
                    let gain = w_to[c] - tot[c] * ki / self.m2;
                    if gain > best_gain + 1e-12 {
                        best = c;
                        best_gain = gain;
                    }
                }
                tot[best] += ki;
                comm[i] = best;
                if best != ci {
                    moved = true;
                    improved = true;
                }
                for &c in &touched {
                    w_to[c] = 0.0;
                }
            }
            if !moved {
                break;
            }
        }
        (renumber(&comm), improved)
    }

    /// Phase 2: one super-node per community.
    fn aggregate(&self, comm: &[usize]) -> Weighted {
        let k = comm.iter().max().map_or(0, |m| m + 1);
        let mut self_w = vec![0f64; k];
        let mut rows: Vec<Vec<(u32, f64)>> = vec![Vec::new(); k];
        for i in 0..self.len() {
            let ci = comm[i];
            self_w[ci] += self.self_w[i];
            for &(j, w) in &self.adj[i] {
                let cj = comm[j as usize];
                if cj == ci {
                    self_w[ci] += w;
                } else {
                    rows[ci].push((cj as u32, w));
                }
            }
        }
        for row in &mut rows {
            row.sort_unstable_by_key(|e| e.0);
            let mut merged: Vec<(u32, f64)> = Vec::with_capacity(row.len());
            for &(j, w) in row.iter() {
                match merged.last_mut() {
                    Some(last) if last.0 == j => last.1 += w,
                    _ => merged.push((j, w)),
                }
            }
            *row = merged;
        }
        Self::finish(rows, self_w)
    }
}

/// Community ids renumbered 0.. in order of first appearance over the nodes.
fn renumber(comm: &[usize]) -> Vec<usize> {
    let mut map = vec![usize::MAX; comm.len().max(comm.iter().max().map_or(0, |m| m + 1))];
    let mut next = 0;
    comm.iter()
        .map(|&c| {
            if map[c] == usize::MAX {
                map[c] = next;
                next += 1;
            }
            map[c]
        })
        .collect()
}

/// Louvain communities of `g` (treated as undirected: store both directions), one id per
/// node, numbered 0.. in order of first appearance. Deterministic in `seed`; an isolated node
/// is its own community.
pub fn louvain(g: &CsrGraph, seed: u64) -> Vec<usize> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut level = Weighted::from_csr(g);
    let mut node_comm: Vec<usize> = (0..g.num_nodes()).collect();
    if level.m2 == 0.0 {
        return node_comm;
    }
    loop {
        let (comm, improved) = level.local_moves(&mut rng);
        if !improved {
            break;
        }
        for c in node_comm.iter_mut() {
            *c = comm[*c];
        }
        level = level.aggregate(&comm);
    }
    renumber(&node_comm)
}

/// Newman–Girvan modularity of the partition `comm` (one id per node) on `g`, every stored
/// entry weighing 1. A graph without edges has modularity 0.
pub fn modularity(g: &CsrGraph, comm: &[usize]) -> f64 {
    let n = g.num_nodes();
    let k = comm.iter().max().map_or(0, |m| m + 1);
    let mut inside = vec![0f64; k];
    let mut tot = vec![0f64; k];
    let mut m2 = 0f64;
    for i in 0..n {
        let ci = comm[i];
        for &j in g.neighbors(i) {
            m2 += 1.0;
            tot[ci] += 1.0;
            if comm[j as usize] == ci {
                inside[ci] += 1.0;
            }
        }
    }
    if m2 == 0.0 {
        return 0.0;
    }
    inside
        .iter()
        .zip(&tot)
        .map(|(a, t)| a / m2 - (t / m2) * (t / m2))
        .sum()
}
