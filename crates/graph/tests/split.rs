//! Splitters: Louvain against known partitions (a ring of cliques, Zachary's karate club),
//! FS-G's client assignment invariants, the random and Dirichlet splits, the random node
//! split; the Cora checks need `graphs/cora_planetoid.npz` and are `#[ignore]`d.

#![allow(clippy::unwrap_used)]

use ferrolab_graph::CsrGraph;
use ferrolab_graph::split::{
    LOUVAIN_DELTA, dirichlet_split, louvain, louvain_split, modularity, planetoid_random_split,
    random_split,
};

fn from_edges(n: usize, edges: &[(usize, usize)]) -> CsrGraph {
    let mut rows = vec![Vec::new(); n];
    for &(a, b) in edges {
        rows[a].push(b as u32);
        rows[b].push(a as u32);
    }
    let mut indptr = vec![0];
    let mut indices = Vec::new();
    for mut r in rows {
        r.sort_unstable();
        indices.extend(r);
        indptr.push(indices.len());
    }
    CsrGraph::new(indptr, indices).unwrap()
}

/// `k` cliques of `s` nodes, clique `c`'s last node linked to clique `c+1`'s first.
fn ring_of_cliques(k: usize, s: usize) -> CsrGraph {
    let mut e = Vec::new();
    for c in 0..k {
        for a in 0..s {
            for b in a + 1..s {
                e.push((c * s + a, c * s + b));
            }
        }
        e.push((c * s + s - 1, ((c + 1) % k) * s));
    }
    from_edges(k * s, &e)
}

/// Zachary's karate club (1977), 34 members, 78 ties, 1-indexed as published.
fn karate() -> CsrGraph {
    let adj: &[(usize, &[usize])] = &[
        (1, &[2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 18, 20, 22, 32]),
        (2, &[3, 4, 8, 14, 18, 20, 22, 31]),
        (3, &[4, 8, 9, 10, 14, 28, 29, 33]),
        (4, &[8, 13, 14]),
        (5, &[7, 11]),
        (6, &[7, 11, 17]),
        (7, &[17]),
        (9, &[31, 33, 34]),
        (10, &[34]),
        (14, &[34]),
        (15, &[33, 34]),
        (16, &[33, 34]),
        (19, &[33, 34]),
        (20, &[34]),
        (21, &[33, 34]),
        (23, &[33, 34]),
        (24, &[26, 28, 30, 33, 34]),
        (25, &[26, 28, 32]),
        (26, &[32]),
        (27, &[30, 34]),
        (28, &[34]),
        (29, &[32, 34]),
        (30, &[33, 34]),
        (31, &[33, 34]),
        (32, &[33, 34]),
        (33, &[34]),
    ];
    let e: Vec<(usize, usize)> = adj
        .iter()
        .flat_map(|(a, bs)| bs.iter().map(move |b| (a - 1, b - 1)))
        .collect();
    assert_eq!(e.len(), 78);
    from_edges(34, &e)
}

#[test]
fn modularity_of_two_joined_triangles_is_five_fourteenths() {
    let g = from_edges(6, &[(0, 1), (1, 2), (0, 2), (3, 4), (4, 5), (3, 5), (2, 3)]);
    let q = modularity(&g, &[0, 0, 0, 1, 1, 1]);
    assert!((q - 5.0 / 14.0).abs() < 1e-12, "{q}");
    assert!(modularity(&g, &[0; 6]).abs() < 1e-12);
}

#[test]
fn louvain_recovers_a_ring_of_cliques() {
    let g = ring_of_cliques(10, 8);
    for seed in 0..3 {
        let comm = louvain(&g, seed);
        for c in 0..10 {
            let first = comm[c * 8];
            assert!((0..8).all(|a| comm[c * 8 + a] == first), "seed {seed}");
        }
        let ncomm = comm.iter().max().unwrap() + 1;
        assert_eq!(ncomm, 10, "seed {seed}: {comm:?}");
    }
}

#[test]
fn louvain_on_karate_club_reaches_the_known_optimum_region() {
    // The maximum modularity of the karate club is 0.4198 (Brandes et al., 2008); Louvain
    // finds 0.4188–0.4198 depending on the visiting order.
    let g = karate();
    let qs: Vec<f64> = (0..6).map(|s| modularity(&g, &louvain(&g, s))).collect();
    assert!(qs.iter().all(|&q| q > 0.40 && q <= 0.41979), "{qs:?}");
    assert!(qs.iter().any(|&q| q > 0.418), "{qs:?}");
    // Deterministic by seed.
    assert_eq!(louvain(&g, 3), louvain(&g, 3));
}

fn check_cover(split: &ferrolab_graph::split::ClientSplit, n: usize) {
    let mut seen = vec![0u8; n];
    for (c, nodes) in split.clients.iter().enumerate() {
        assert!(!nodes.is_empty());
        for &v in nodes {
            seen[v] += 1;
            assert_eq!(split.owner[v], c);
        }
    }
    assert!(seen.iter().all(|&s| s == 1));
}

#[test]
fn louvain_split_covers_nodes_once_respects_the_cap_and_beats_random() {
    let g = ring_of_cliques(20, 10);
    let n = g.num_nodes();
    let k = 4;
    let delta = 5;
    let s = louvain_split(&g, k, delta, 0).unwrap();
    check_cover(&s, n);
    for c in &s.clients {
        assert!(c.len() <= n / k + delta);
    }
    // Whole cliques stay together: 20 cliques of 10 fit in 4 clients of ≤ 55, so only the
    // ring links can be cut.
    assert!(s.cross_edges <= 20, "{}", s.cross_edges);
    let r = random_split(&g, k, 0).unwrap();
    check_cover(&r, n);
    assert!(r.cross_edges > 3 * s.cross_edges);
    let (qs, qr) = (modularity(&g, &s.owner), modularity(&g, &r.owner));
    assert!(qs > qr + 0.3, "louvain {qs} vs random {qr}");
    assert_eq!(louvain_split(&g, k, delta, 0).unwrap(), s);
    assert_ne!(random_split(&g, k, 1).unwrap(), r);
    // Subgraphs drop exactly the cross-client edges.
    let kept: usize = (0..k)
        .map(|c| s.subgraph(&g, c).unwrap().0.num_edges())
        .sum();
    assert_eq!(kept / 2 + s.cross_edges, g.num_edges() / 2);
}

#[test]
fn impossible_splits_are_refused() {
    let g = ring_of_cliques(4, 5);
    assert!(louvain_split(&g, 0, 0, 0).is_err());
    assert!(random_split(&g, 21, 0).is_err());
    // 20 nodes / 2 clients = 10, not more than δ = 20.
    let e = louvain_split(&g, 2, LOUVAIN_DELTA, 0).unwrap_err();
    assert!(e.to_string().contains("fed.clients"), "{e}");
    // More clients than communities: a triangle cannot feed 3 clients of a 1-node slack.
    let t = from_edges(3, &[(0, 1), (1, 2), (0, 2)]);
    assert!(louvain_split(&t, 3, 0, 0).is_ok());
    assert!(dirichlet_split(&g, &[0; 20], 2, 0.0, 0).is_err());
}

#[test]
fn dirichlet_split_skews_labels_as_alpha_shrinks() {
    let g = ring_of_cliques(30, 10);
    let labels: Vec<usize> = (0..300).map(|i| i % 5).collect();
    // Mean over clients of the largest class share: near 1/5 for large α, larger for small.
    let skew = |alpha: f64| {
        let s = dirichlet_split(&g, &labels, 4, alpha, 7).unwrap();
        check_cover(&s, 300);
        s.clients
            .iter()
            .map(|nodes| {
                let mut cnt = [0usize; 5];
                nodes.iter().for_each(|&v| cnt[labels[v]] += 1);
                *cnt.iter().max().unwrap() as f64 / nodes.len() as f64
            })
            .sum::<f64>()
            / 4.0
    };
    let (lo, hi) = (skew(100.0), skew(0.1));
    assert!(lo < 0.3 && hi > 0.5, "α=100: {lo}, α=0.1: {hi}");
}

#[test]
fn random_node_split_takes_per_class_then_val_then_rest() {
    // Class sizes 5, 3, 8: 4 per class → 4 + 3 + 4 training nodes.
    let labels: Vec<usize> = [vec![0; 5], vec![1; 3], vec![2; 8]].concat();
    let s = planetoid_random_split(&labels, 4, 3, 0).unwrap();
    assert_eq!((s.train.len(), s.val.len(), s.test.len()), (11, 3, 2));
    let mut all = [s.train.clone(), s.val.clone(), s.test.clone()].concat();
    all.sort_unstable();
    assert_eq!(all, (0..16).collect::<Vec<_>>());
    assert_eq!(s.train.iter().filter(|&&v| labels[v] == 1).count(), 3);
    assert_eq!(planetoid_random_split(&labels, 4, 3, 0).unwrap(), s);
    assert_ne!(planetoid_random_split(&labels, 4, 3, 1).unwrap(), s);
    assert!(planetoid_random_split(&labels, 4, 6, 0).is_err());
}

fn cora() -> (CsrGraph, Vec<usize>) {
    let d = ferrolab_graph::NodeData::load_cora(None).expect("Cora (graphs/cora_planetoid.npz)");
    (d.graph, d.labels)
}

#[test]
#[ignore = "needs graphs/cora_planetoid.npz"]
fn cora_louvain_split_matches_fs_g_shape() {
    let (g, labels) = cora();
    let n = g.num_nodes();
    let comm = louvain(&g, 0);
    let q = modularity(&g, &comm);
    // networkx/python-louvain reach ≈ 0.80 on Cora.
    assert!(q > 0.78, "{q}");
    let s = louvain_split(&g, 5, LOUVAIN_DELTA, 0).unwrap();
    check_cover(&s, n);
    assert!(s.clients.iter().all(|c| c.len() <= n / 5 + LOUVAIN_DELTA));
    let r = random_split(&g, 5, 0).unwrap();
    let (qs, qr) = (modularity(&g, &s.owner), modularity(&g, &r.owner));
    assert!(qs > qr + 0.4, "louvain {qs} vs random {qr}");
    assert!(
        s.cross_edges < r.cross_edges / 4,
        "{} vs {}",
        s.cross_edges,
        r.cross_edges
    );
    assert_eq!(louvain_split(&g, 5, LOUVAIN_DELTA, 0).unwrap(), s);
    let ns = planetoid_random_split(&labels, 232, 542, 0).unwrap();
    assert_eq!(
        (ns.train.len(), ns.val.len(), ns.test.len()),
        (1557, 542, 609)
    );
}
