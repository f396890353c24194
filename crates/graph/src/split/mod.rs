//! Splitting one graph among federated clients, as FederatedScope-GNN's DataZoo does
//! (Wang et al., KDD 2022, §4.1; `federatedscope/core/splitters/graph`), and the random
//! node split of the node-classification task.
//!
//! - [`louvain_split`]: Louvain communities ([`louvain::louvain`]), communities larger than
//!   `⌊N/K⌋ − δ` chopped into pieces of that size, pieces assigned largest first, round-robin,
//!   skipping a client that would exceed `⌊N/K⌋ + δ` (FS-G's `LouvainSplitter`, δ = 20).
//! - [`random_split`]: a seeded permutation cut into `K` equal slices (FS-G's
//!   `RandomSplitter` without overlap).
//! - [`dirichlet_split`]: label skew, each class's nodes divided among clients in proportions
//!   drawn from `Dir(α)` (the LDA splitter of FS-G and of Hsu et al., 2019).
//!
//! Every client keeps the subgraph its nodes induce; edges between clients are dropped (and
//! counted in [`ClientSplit::cross_edges`]). [`planetoid_random_split`] is PyG's
//! `RandomNodeSplit(split="random")` that FS-G applies before splitting.

pub mod louvain;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};
use ferrolab_data::Split;

pub use louvain::{louvain, modularity};

/// FS-G's default slack δ of the Louvain assignment.
pub const LOUVAIN_DELTA: usize = 20;

/// Which nodes each client holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSplit {
    /// Client `c`'s nodes, ascending global ids; every node is in exactly one client.
    pub clients: Vec<Vec<usize>>,
    /// The client of every node.
    pub owner: Vec<usize>,
    /// Undirected edges whose ends lie in different clients (dropped from the clients'
    /// subgraphs).
    pub cross_edges: usize,
}

impl ClientSplit {
    /// From each node's client, checked: `k ≥ 1` and no client is empty.
    pub fn from_owner(g: &CsrGraph, owner: Vec<usize>, k: usize) -> Result<Self> {
        if owner.len() != g.num_nodes() {
            return Err(GraphError::Invalid(format!(
                "{} owners for {} nodes",
                owner.len(),
                g.num_nodes()
            )));
        }
        let mut clients = vec![Vec::new(); k];
        for (i, &c) in owner.iter().enumerate() {
            let Some(list) = clients.get_mut(c) else {
                return Err(GraphError::Invalid(format!(
                    "node {i} assigned to client {c} of {k}"
                )));
            };
            list.push(i);
        }
        if let Some(c) = clients.iter().position(Vec::is_empty) {
            return Err(GraphError::config(
                "fed.clients",
                format!("client {c} of {k} received no node"),
            ));
        }
        let mut directed = 0usize;
        for i in 0..g.num_nodes() {
            directed += g
                .neighbors(i)
                .iter()
                .filter(|&&j| owner[j as usize] != owner[i])
                .count();
        }
        Ok(ClientSplit {
            clients,
            owner,
            cross_edges: directed / 2,
        })
    }

    pub fn num_clients(&self) -> usize {
        self.clients.len()
    }

    /// Client `c`'s subgraph (cross-client edges dropped) and its local→global node map.
    pub fn subgraph(&self, g: &CsrGraph, c: usize) -> Result<(CsrGraph, Vec<usize>)> {
        let nodes = self
            .clients
            .get(c)
            .ok_or_else(|| GraphError::Invalid(format!("client {c} of {}", self.clients.len())))?;
        g.induced_subgraph(nodes)
    }

    /// The partition as community ids (for [`modularity`]).
    pub fn as_communities(&self) -> &[usize] {
        &self.owner
    }
}

fn check_clients(n: usize, k: usize) -> Result<()> {
    if k == 0 {
        return Err(GraphError::config("fed.clients", "must be at least 1"));
    }
    if k > n {
        return Err(GraphError::config(
            "fed.clients",
            format!("{k} clients for a graph of {n} nodes"),
        ));
    }
    Ok(())
}

/// FS-G's Louvain split of `g` (symmetric) into `k` clients with slack `delta`.
///
/// Fails when `⌊N/K⌋ ≤ δ` (no piece size is left), when a piece fits no client under the
/// cap, or when fewer pieces than clients exist (a client would be empty).
pub fn louvain_split(g: &CsrGraph, k: usize, delta: usize, seed: u64) -> Result<ClientSplit> {
    let n = g.num_nodes();
    check_clients(n, k)?;
    let max_len = (n / k).checked_sub(delta).filter(|&m| m > 0).ok_or_else(|| {
        GraphError::config(
            "fed.clients",
            format!(
                "{k} clients leave {} nodes per client, not more than the Louvain slack δ = {delta}",
                n / k
            ),
        )
    })?;
    let cap = n / k + delta;
    let comm = louvain(g, seed);
    let ncomm = comm.iter().max().map_or(0, |m| m + 1);
    let mut clusters: Vec<Vec<usize>> = vec![Vec::new(); ncomm];
    for (i, &c) in comm.iter().enumerate() {
        clusters[c].push(i);
    }
    // Chop oversized communities front to back; the pieces go after the originals.
    let mut pieces = Vec::new();
    for cl in &mut clusters {
        while cl.len() > max_len {
            let rest = cl.split_off(max_len);
            pieces.push(std::mem::replace(cl, rest));
        }
    }
    clusters.extend(pieces);
    if clusters.len() < k {
        return Err(GraphError::config(
            "fed.clients",
            format!(
                "{k} clients but Louvain found only {} communities (after chopping)",
                clusters.len()
            ),
        ));
    }
    // Stable: equal sizes keep community order, as Python's sorted does.
    clusters.sort_by_key(|c| std::cmp::Reverse(c.len()));
    let mut owner = vec![usize::MAX; n];
    let mut sizes = vec![0usize; k];
    let mut idx = 0usize;
    for cl in &clusters {
        let mut tries = 0;
        while cl.len() + sizes[idx] > cap {
            idx = (idx + 1) % k;
            tries += 1;
            if tries > k {
                return Err(GraphError::config(
                    "fed.clients",
                    format!(
                        "a community piece of {} nodes fits no client under the cap of {cap}",
                        cl.len()
                    ),
                ));
            }
        }
        for &v in cl {
            owner[v] = idx;
        }
        sizes[idx] += cl.len();
        idx = (idx + 1) % k;
    }
    ClientSplit::from_owner(g, owner, k)
}

/// A seeded permutation of the nodes cut into `k` consecutive slices of (nearly) equal size.
pub fn random_split(g: &CsrGraph, k: usize, seed: u64) -> Result<ClientSplit> {
    let n = g.num_nodes();
    check_clients(n, k)?;
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut StdRng::seed_from_u64(seed));
    let mut owner = vec![0usize; n];
    for c in 0..k {
        let (a, b) = (c * n / k, (c + 1) * n / k);
        for &v in &perm[a..b] {
            owner[v] = c;
        }
    }
    ClientSplit::from_owner(g, owner, k)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f64 {
    let u1 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// A `Gamma(shape, 1)` draw (Marsaglia & Tsang, 2000; shape < 1 by the `U^{1/a}` boost).
fn gamma(shape: f64, rng: &mut StdRng) -> f64 {
    if shape < 1.0 {
        let u = rng.random::<f64>().max(f64::MIN_POSITIVE);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.random::<f64>();
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// Label-skew split: for every class, a `Dir(α)` draw gives each client's share of that
/// class's (shuffled) nodes. Small `α` makes clients hold few classes. Fails on `α ≤ 0` or
/// when a client ends up empty.
pub fn dirichlet_split(
    g: &CsrGraph,
    labels: &[usize],
    k: usize,
    alpha: f64,
    seed: u64,
) -> Result<ClientSplit> {
    let n = g.num_nodes();
    check_clients(n, k)?;
    if !(alpha > 0.0 && alpha.is_finite()) {
        return Err(GraphError::config(
            "data.alpha",
            format!("Dirichlet concentration must be positive, got {alpha}"),
        ));
    }
    if labels.len() != n {
        return Err(GraphError::Invalid(format!(
            "{} labels for {n} nodes",
            labels.len()
        )));
    }
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    // As FS-G's LDA splitter, redraw until no client is empty (tiny α can starve one).
    for _ in 0..1000 {
        let mut owner = vec![0usize; n];
        let mut sizes = vec![0usize; k];
        for nodes in &mut by_class {
            nodes.shuffle(&mut rng);
            let draws: Vec<f64> = (0..k).map(|_| gamma(alpha, &mut rng)).collect();
            let total: f64 = draws.iter().sum();
            let mut acc = 0f64;
            let mut start = 0usize;
            for (c, d) in draws.iter().enumerate() {
                acc += d / total;
                let end = if c + 1 == k {
                    nodes.len()
                } else {
                    ((acc * nodes.len() as f64).round() as usize).clamp(start, nodes.len())
                };
                for &v in &nodes[start..end] {
                    owner[v] = c;
                }
                sizes[c] += end - start;
                start = end;
            }
        }
        if sizes.iter().all(|&s| s > 0) {
            return ClientSplit::from_owner(g, owner, k);
        }
    }
    Err(GraphError::config(
        "data.alpha",
        format!("1000 Dirichlet draws with α = {alpha} each left a client of {k} empty"),
    ))
}

/// PyG's random node split (`RandomNodeSplit(split="random")`, as FS-G configures it):
/// `train_per_class` random nodes of every class for training (all of a smaller class), then
/// `num_val` random nodes of the rest for validation and all remaining nodes for testing.
/// Deterministic in `seed`; fails when fewer than `num_val` nodes remain.
pub fn planetoid_random_split(
    labels: &[usize],
    train_per_class: usize,
    num_val: usize,
    seed: u64,
) -> Result<Split> {
    let n = labels.len();
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut taken = vec![false; n];
    let mut train = Vec::new();
    for c in 0..classes {
        let mut nodes: Vec<usize> = (0..n).filter(|&i| labels[i] == c).collect();
        nodes.shuffle(&mut rng);
        nodes.truncate(train_per_class);
        for &v in &nodes {
            taken[v] = true;
        }
        train.extend(nodes);
    }
    let mut rest: Vec<usize> = (0..n).filter(|&i| !taken[i]).collect();
    if rest.len() < num_val {
        return Err(GraphError::config(
            "data.num_val",
            format!(
                "{num_val} validation nodes asked but only {} remain after {} training nodes",
                rest.len(),
                train.len()
            ),
        ));
    }
    rest.shuffle(&mut rng);
    let mut val = rest[..num_val].to_vec();
    let mut test = rest[num_val..].to_vec();
    train.sort_unstable();
    val.sort_unstable();
    test.sort_unstable();
    Ok(Split { train, val, test })
}
