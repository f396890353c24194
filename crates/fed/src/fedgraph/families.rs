//! `data.dataset = "graph-families"`: a **synthetic** graph-classification data set for GCFL+
//! (no TU data set is obtainable here). Every graph is a small base graph of one *family*
//! plus one planted 3-node gadget, and the label follows one rule shared by every family
//! and client: **label 1 iff the graph contains a triangle**.
//!
//! The families are all triangle-free, so the gadget alone decides the label:
//!
//! | family | base graph (n nodes, `families.min_nodes..=max_nodes`) |
//! |---|---|
//! | `cycle` | the cycle C_n (n ≥ 4) |
//! | `grid` | an r × c lattice, r ∈ 2..=4 |
//! | `tree` | a random recursive tree (each node joins a uniformly drawn earlier node) |
//! | `sbm` | a two-block stochastic block model with no edges inside a block (p_out = 3 / block size), so bipartite |
//! | `spider` | a centre with legs of 2–4 nodes |
//! | `bipartite` | a complete bipartite K_{a, n−a}, a ∈ 2..=3 |
//!
//! Gadget: a new node `w` joined to both ends of a random edge `(u, v)` (one triangle: label
//! 1), or to the two ends `u, x` of a random path `u–y–x` (a 4-cycle, no triangle: label 0).
//! Both gadgets add one node of degree 2 and raise two degrees by one, so neither the node
//! count nor the degree histogram gives the label away; what tells them apart (whether `w`'s
//! neighbours are adjacent) shows up differently against each family's degree pattern, which
//! is the non-IID part. Node features are one-hot degrees (capped), as GCFL does for graphs
//! without features.
//!
//! Clients (non-IID, as the issue asks): client `c` draws from the two families
//! `2g mod k` and `2g+1 mod k`, `g = c mod ⌈k/2⌉` (its *group*); with k = 4 and 8 clients,
//! clients 0, 2, 4, 6 hold cycles and grids and clients 1, 3, 5, 7 trees and SBM graphs. Each
//! client's graphs are half positive, shuffled, and divided into training / validation / test
//! graphs.
//!
//! GCFL's paper federates clients that each hold a *different* TU data set (molecules,
//! proteins, social networks): their graphs differ in structure, their node features in
//! meaning, and their labels answer different questions. Two switches bring those last two
//! differences into the synthetic set, between the groups of odd and even index (the graphs
//! themselves are the same draws): `families.labels = "by-group"` makes odd groups call the
//! triangle-free graph positive (a rule that contradicts the even groups'), and
//! `families.features = "by-group"` makes odd groups write degree d into one-hot column
//! `cap − d` (the same columns meaning other things). Both default to the shared rule and
//! features. Two more move the groups further apart, as different TU data sets are:
//! `families.sizes = "by-group"` draws odd groups' graphs `families.size_ratio` times larger,
//! and `families.features = "width-by-group"` gives odd groups a wider one-hot degree (17
//! columns against 9), read through each client's own input layer (`gcfl.pre`).

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::FedGraphError;

/// Names of the families in generation order (`families.k` takes the first k).
pub const FAMILY_NAMES: [&str; 6] = ["cycle", "grid", "tree", "sbm", "spider", "bipartite"];

/// Degrees at or above this share the last one-hot feature.
pub const DEGREE_CAP: usize = 8;

/// The one-hot degree cap of odd groups with `families.features = "width-by-group"`: a
/// wider feature vector of their own (17 columns against 9), as the TU social sets get a
/// one-hot degree of their own width while the molecule sets carry atom types.
pub const WIDE_DEGREE_CAP: usize = 16;

ferrolab_core::config_section! {
    /// The synthetic generator: `families.k`, `families.graphs_per_client`, sizes and shares.
    pub struct FamiliesSection {
        /// Families in use (the first k of cycle, grid, tree, sbm, spider, bipartite).
        pub k: usize = 4, "2..=6" => |v| (2..=6).contains(v);
        /// Graphs each client holds (training + validation + test).
        pub graphs_per_client: usize = 200, "10..=100000" => |v| (10..=100_000).contains(v);
        /// Fewest nodes of a base graph (before the 1-node gadget).
        pub min_nodes: usize = 8, "4..=1000" => |v| (4..=1000).contains(v);
        /// Most nodes of a base graph.
        pub max_nodes: usize = 16, "4..=1000" => |v| (4..=1000).contains(v);
        /// Share of each client's graphs held out for validation.
        pub val_share: f64 = 0.2, "in (0, 0.5)" => |v| *v > 0.0 && *v < 0.5;
        /// Share of each client's graphs held out for testing.
        pub test_share: f64 = 0.2, "in (0, 0.5)" => |v| *v > 0.0 && *v < 0.5;
        /// Label rule: `shared` (every client: 1 iff the graph has a triangle) or `by-group`
        /// (clients of odd family groups label the other gadget 1: 1 iff *no* triangle, a
        /// rule that contradicts the even groups').
        pub labels: String = "shared".into(), "`shared` or `by-group`" => |v| v == "shared" || v == "by-group";
        /// Node features: `degree` (one-hot degree for every client) or `by-group` (clients of
        /// odd family groups put degree d in column cap − d: the same columns meaning other
        /// things, as the features of different data sets do).
        /// `width-by-group`: odd groups one-hot their degree capped at 16 (17 columns against
        /// the even groups' 9), so the groups' inputs differ in width as well as meaning;
        /// needs `gcfl.pre = true` (each client's own input layer, the reference's `pre`).
        pub features: String = "degree".into(), "`degree`, `by-group` or `width-by-group`" => |v| ["degree", "by-group", "width-by-group"].contains(&v.as_str());
        /// Graph sizes: `same`, or `by-group` (odd groups draw base graphs of
        /// `size_ratio` × `min_nodes..=max_nodes` nodes: the TU sets GCFL federates differ
        /// several-fold in graph size, e.g. MUTAG ~18 nodes, COLLAB ~74, DD ~284).
        pub sizes: String = "same".into(), "`same` or `by-group`" => |v| v == "same" || v == "by-group";
        /// Size factor of odd groups' graphs with `sizes = "by-group"`.
        pub size_ratio: f64 = 3.0, "in [1, 50]" => |v| (1.0..=50.0).contains(v);
    }
}

/// One small labelled graph: undirected edges `(a, b)`, `a < b`, each once.
#[derive(Debug, Clone, PartialEq)]
pub struct SmallGraph {
    pub nodes: usize,
    pub edges: Vec<(u32, u32)>,
    pub family: usize,
    pub label: usize,
}

impl SmallGraph {
    /// Neighbour lists.
    pub fn adjacency(&self) -> Vec<Vec<u32>> {
        let mut adj = vec![Vec::new(); self.nodes];
        for &(a, b) in &self.edges {
            adj[a as usize].push(b);
            adj[b as usize].push(a);
        }
        for l in &mut adj {
            l.sort_unstable();
        }
        adj
    }

    /// Number of triangles (each counted once).
    pub fn triangles(&self) -> usize {
        let adj = self.adjacency();
        let mut t = 0;
        for &(a, b) in &self.edges {
            let (na, nb) = (&adj[a as usize], &adj[b as usize]);
            // Common neighbours above both ends count each triangle once.
            t += na
                .iter()
                .filter(|&&c| c > a.max(b) && nb.binary_search(&c).is_ok())
                .count();
        }
        t
    }

    /// Degree of every node.
    pub fn degrees(&self) -> Vec<usize> {
        let mut d = vec![0; self.nodes];
        for &(a, b) in &self.edges {
            d[a as usize] += 1;
            d[b as usize] += 1;
        }
        d
    }
}

/// One client's graphs.
#[derive(Debug, Clone)]
pub struct ClientGraphs {
    /// The two families it draws from.
    pub families: [usize; 2],
    /// Its family group ([`client_group`]).
    pub group: usize,
    /// Whether its one-hot degree columns are reversed (`families.features = "by-group"`,
    /// odd group).
    pub reversed_degrees: bool,
    /// Its one-hot degree cap: node features are `degree_cap + 1` wide ([`DEGREE_CAP`], or
    /// [`WIDE_DEGREE_CAP`] for odd groups with `families.features = "width-by-group"`).
    pub degree_cap: usize,
    pub train: Vec<SmallGraph>,
    pub val: Vec<SmallGraph>,
    pub test: Vec<SmallGraph>,
}

/// The family group of client `c` when `k` families are in use.
pub fn client_group(c: usize, k: usize) -> usize {
    c % k.div_ceil(2)
}

/// The two families client `c` draws from when `k` are in use.
pub fn client_families(c: usize, k: usize) -> [usize; 2] {
    let g = client_group(c, k);
    [(2 * g) % k, (2 * g + 1) % k]
}

struct Builder {
    n: usize,
    edges: Vec<(u32, u32)>,
}

impl Builder {
    fn new(n: usize) -> Self {
        Builder {
            n,
            edges: Vec::new(),
        }
    }
    fn add(&mut self, a: usize, b: usize) {
        if a != b {
            self.edges.push((a.min(b) as u32, a.max(b) as u32));
        }
    }
}

/// A triangle-free base graph of `family` with about `n` nodes (grids round to r × c).
fn base(family: usize, n: usize, rng: &mut StdRng) -> Builder {
    match family {
        0 => {
            let mut b = Builder::new(n);
            for i in 0..n {
                b.add(i, (i + 1) % n);
            }
            b
        }
        1 => {
            let r = rng.random_range(2..=4usize);
            let c = (n / r).max(2);
            let mut b = Builder::new(r * c);
            for i in 0..r {
                for j in 0..c {
                    if j + 1 < c {
                        b.add(i * c + j, i * c + j + 1);
                    }
                    if i + 1 < r {
                        b.add(i * c + j, (i + 1) * c + j);
                    }
                }
            }
            b
        }
        2 => {
            let mut b = Builder::new(n);
            for i in 1..n {
                let p = rng.random_range(0..i);
                b.add(p, i);
            }
            b
        }
        3 => {
            let a = n / 2;
            let p = (3.0 / a.max(1) as f64).min(1.0);
            let mut b = Builder::new(n);
            for i in 0..a {
                for j in a..n {
                    if rng.random::<f64>() < p {
                        b.add(i, j);
                    }
                }
            }
            b
        }
        4 => {
            let mut b = Builder::new(n);
            let mut next = 1;
            while next < n {
                let len = rng.random_range(2..=4usize).min(n - next);
                b.add(0, next);
                for i in 1..len {
                    b.add(next + i - 1, next + i);
                }
                next += len;
            }
            b
        }
        _ => {
            let a = rng.random_range(2..=3usize).min(n - 1);
            let mut b = Builder::new(n);
            for i in 0..a {
                for j in a..n {
                    b.add(i, j);
                }
            }
            b
        }
    }
}

/// Plants the gadget; `None` when the base has no edge (or no 2-path) to plant it on.
fn plant(mut b: Builder, positive: bool, rng: &mut StdRng) -> Option<Builder> {
    let w = b.n;
    if positive {
        let &(u, v) = b.edges.get(rng.random_range(0..b.edges.len().max(1)))?;
        b.n += 1;
        b.add(u as usize, w);
        b.add(v as usize, w);
    } else {
        let mut adj = vec![Vec::new(); b.n];
        for &(x, y) in &b.edges {
            adj[x as usize].push(y as usize);
            adj[y as usize].push(x as usize);
        }
        let centres: Vec<usize> = (0..b.n).filter(|&y| adj[y].len() >= 2).collect();
        let &y = centres.get(rng.random_range(0..centres.len().max(1)))?;
        let i = rng.random_range(0..adj[y].len());
        let mut j = rng.random_range(0..adj[y].len() - 1);
        if j >= i {
            j += 1;
        }
        let (u, x) = (adj[y][i], adj[y][j]);
        b.n += 1;
        b.add(u, w);
        b.add(x, w);
    }
    Some(b)
}

/// One labelled graph of `family`.
pub fn sample_graph(
    family: usize,
    positive: bool,
    cfg: &FamiliesSection,
    rng: &mut StdRng,
) -> SmallGraph {
    loop {
        let n = rng.random_range(cfg.min_nodes..=cfg.max_nodes.max(cfg.min_nodes));
        // A sparse SBM draw can lack an edge or a 2-path; draw again.
        if let Some(mut b) = plant(base(family, n, rng), positive, rng) {
            b.edges.sort_unstable();
            b.edges.dedup();
            return SmallGraph {
                nodes: b.n,
                edges: b.edges,
                family,
                label: usize::from(positive),
            };
        }
    }
}

/// Validation and test graphs per client (at least one each).
pub fn held_out(cfg: &FamiliesSection) -> (usize, usize) {
    let n = cfg.graphs_per_client as f64;
    let share = |s: f64| ((n * s).round() as usize).max(1);
    (share(cfg.val_share), share(cfg.test_share))
}

/// Every client's graphs for one seed.
pub fn generate(
    cfg: &FamiliesSection,
    clients: usize,
    seed: u64,
) -> Result<Vec<ClientGraphs>, FedGraphError> {
    if cfg.min_nodes > cfg.max_nodes {
        return Err(FedGraphError::Usage(format!(
            "families.min_nodes ({}) exceeds families.max_nodes ({})",
            cfg.min_nodes, cfg.max_nodes
        )));
    }
    let n = cfg.graphs_per_client;
    let (n_val, n_test) = held_out(cfg);
    if n_val + n_test >= n {
        return Err(FedGraphError::Usage(format!(
            "families.graphs_per_client = {n} leaves no training graph after {n_val} validation and {n_test} test graphs"
        )));
    }
    let mut out = Vec::with_capacity(clients);
    for c in 0..clients {
        let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(
            seed,
            &format!("families-client{c}"),
        ));
        let fam = client_families(c, cfg.k);
        let group = client_group(c, cfg.k);
        let odd = group % 2 == 1;
        let flip = odd && cfg.labels == "by-group";
        // Odd groups' graphs several times larger (`sizes = "by-group"`).
        let scaled = FamiliesSection {
            min_nodes: (cfg.min_nodes as f64 * cfg.size_ratio).round() as usize,
            max_nodes: (cfg.max_nodes as f64 * cfg.size_ratio).round() as usize,
            ..cfg.clone()
        };
        let sizes = if odd && cfg.sizes == "by-group" {
            &scaled
        } else {
            cfg
        };
        let mut graphs: Vec<SmallGraph> = (0..n)
            .map(|i| {
                let f = fam[rng.random_range(0..2usize)];
                let mut g = sample_graph(f, i < n / 2, sizes, &mut rng);
                if flip {
                    g.label = 1 - g.label;
                }
                g
            })
            .collect();
        graphs.shuffle(&mut rng);
        let test = graphs.split_off(n - n_test);
        let val = graphs.split_off(n - n_test - n_val);
        out.push(ClientGraphs {
            families: fam,
            group,
            reversed_degrees: odd && cfg.features == "by-group",
            degree_cap: if odd && cfg.features == "width-by-group" {
                WIDE_DEGREE_CAP
            } else {
                DEGREE_CAP
            },
            train: graphs,
            val,
            test,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn labels_follow_the_triangle_rule_in_every_family() {
        let cfg = FamiliesSection::default();
        let mut rng = StdRng::seed_from_u64(3);
        for (f, name) in FAMILY_NAMES.iter().enumerate() {
            for i in 0..60 {
                let g = sample_graph(f, i % 2 == 0, &cfg, &mut rng);
                assert_eq!(usize::from(g.triangles() > 0), g.label, "family {name}");
                // The gadget makes exactly one triangle or none.
                assert!(g.triangles() <= 1);
                assert!(
                    g.edges
                        .iter()
                        .all(|&(a, b)| a < b && (b as usize) < g.nodes)
                );
            }
        }
    }

    #[test]
    fn families_differ_and_clients_are_non_iid() {
        let cfg = FamiliesSection::default();
        let mut rng = StdRng::seed_from_u64(5);
        // Mean degree, max degree or the share of leaves separates the families' graphs.
        let stats: Vec<(f64, f64, f64)> = (0..FAMILY_NAMES.len())
            .map(|f| {
                let gs: Vec<SmallGraph> = (0..100)
                    .map(|i| sample_graph(f, i % 2 == 0, &cfg, &mut rng))
                    .collect();
                let mean = gs
                    .iter()
                    .map(|g| 2.0 * g.edges.len() as f64 / g.nodes as f64)
                    .sum::<f64>()
                    / 100.0;
                let maxd = gs
                    .iter()
                    .map(|g| g.degrees().into_iter().max().unwrap_or(0) as f64)
                    .sum::<f64>()
                    / 100.0;
                let leaves = gs
                    .iter()
                    .map(|g| {
                        g.degrees().into_iter().filter(|&d| d == 1).count() as f64 / g.nodes as f64
                    })
                    .sum::<f64>()
                    / 100.0;
                (mean, maxd, leaves)
            })
            .collect();
        for a in 0..stats.len() {
            for b in a + 1..stats.len() {
                let (x, y) = (stats[a], stats[b]);
                assert!(
                    (x.0 - y.0).abs() > 0.1 || (x.1 - y.1).abs() > 0.5 || (x.2 - y.2).abs() > 0.05,
                    "{} and {} look alike: {x:?} {y:?}",
                    FAMILY_NAMES[a],
                    FAMILY_NAMES[b]
                );
            }
        }
        let data = generate(&cfg, 8, 9).unwrap();
        assert_eq!(data.len(), 8);
        for (c, d) in data.iter().enumerate() {
            assert_eq!(d.families, client_families(c, 4));
            let all: Vec<&SmallGraph> = d.train.iter().chain(&d.val).chain(&d.test).collect();
            assert_eq!(all.len(), cfg.graphs_per_client);
            assert!(all.iter().all(|g| d.families.contains(&g.family)));
            assert_eq!(all.iter().filter(|g| g.label == 1).count(), 100);
            assert_eq!(d.val.len(), 40);
            assert_eq!(d.test.len(), 40);
        }
        assert_eq!(data[0].families, [0, 1]);
        assert_eq!(data[1].families, [2, 3]);
        // The default rule and features leave every client on the triangle rule, unreversed.
        assert!(data.iter().all(|d| !d.reversed_degrees));
        assert_eq!(data[5].group, 1);
        // Same seed, same data; another seed, other graphs.
        let again = generate(&cfg, 8, 9).unwrap();
        assert_eq!(again[3].train, data[3].train);
        let other = generate(&cfg, 8, 10).unwrap();
        assert_ne!(other[3].train, data[3].train);
    }

    #[test]
    fn by_group_rules_contradict_and_keep_the_graphs() {
        let shared = FamiliesSection::default();
        let conflict = FamiliesSection {
            labels: "by-group".into(),
            features: "by-group".into(),
            ..Default::default()
        };
        let a = generate(&shared, 4, 7).unwrap();
        let b = generate(&conflict, 4, 7).unwrap();
        for (c, (x, y)) in a.iter().zip(&b).enumerate() {
            let odd = client_group(c, 4) % 2 == 1;
            assert_eq!(y.reversed_degrees, odd);
            let (gx, gy): (Vec<&SmallGraph>, Vec<&SmallGraph>) = (
                x.train.iter().chain(&x.val).chain(&x.test).collect(),
                y.train.iter().chain(&y.val).chain(&y.test).collect(),
            );
            for (p, q) in gx.iter().zip(&gy) {
                // Same graphs; odd groups call the triangle-free ones positive.
                assert_eq!(p.edges, q.edges);
                assert_eq!(usize::from(q.triangles() > 0) != q.label, odd, "client {c}");
            }
            assert_eq!(gy.iter().filter(|g| g.label == 1).count(), gy.len() / 2);
        }
    }

    #[test]
    fn by_group_sizes_and_widths_set_the_odd_groups_apart() {
        let base = FamiliesSection::default();
        let domains = FamiliesSection {
            sizes: "by-group".into(),
            size_ratio: 3.0,
            features: "width-by-group".into(),
            ..Default::default()
        };
        let a = generate(&base, 4, 11).unwrap();
        let b = generate(&domains, 4, 11).unwrap();
        let mean_nodes = |d: &ClientGraphs| {
            let all: Vec<&SmallGraph> = d.train.iter().chain(&d.val).chain(&d.test).collect();
            all.iter().map(|g| g.nodes as f64).sum::<f64>() / all.len() as f64
        };
        assert!(a.iter().all(|d| d.degree_cap == DEGREE_CAP));
        for (c, (x, y)) in a.iter().zip(&b).enumerate() {
            let odd = client_group(c, 4) % 2 == 1;
            assert_eq!(y.degree_cap, if odd { WIDE_DEGREE_CAP } else { DEGREE_CAP });
            if odd {
                // Base graphs of 24..=48 nodes (+1 gadget) against 8..=16.
                assert!(mean_nodes(y) > 2.5 * mean_nodes(x), "client {c}");
                let all = y.train.iter().chain(&y.val).chain(&y.test);
                assert!(all.clone().all(|g| (24..=49).contains(&g.nodes)));
                // The triangle rule still holds on the larger graphs.
                assert!(
                    all.into_iter()
                        .all(|g| usize::from(g.triangles() > 0) == g.label)
                );
            } else {
                // Even groups are drawn exactly as before.
                assert_eq!(x.train, y.train);
            }
        }
    }
}
