//! Devices, subnets and their D2D graphs with Metropolis mixing weights.
//!
//! The reference (`functions/graph_gen.py::get_geo_graph`) draws each subnet's graph as a
//! random geometric graph: positions N(0, 2²) in the plane, radius 0.5 + 3·U(0, 1), redrawn
//! until connected; the mixing matrix is Metropolis, `W_ij = 1 / max(deg_i + 1, deg_j + 1)` for
//! each edge and `W_ii = 1 − Σ_j W_ij`, symmetric and doubly stochastic. Devices are assigned to
//! subnets contiguously (`subnet = device / n_c`), as the reference does.

use rand::RngExt;
use rand::rngs::StdRng;

/// A topology that cannot be built or does not suit the algorithm.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TopologyError {
    /// More subnets than devices, or none.
    #[error("topology.subnets = {subnets} with {devices} devices: need 1 ≤ subnets ≤ devices")]
    Subnets {
        /// Subnets asked for.
        subnets: usize,
        /// Devices.
        devices: usize,
    },
    /// A subnet's D2D graph is not connected, and the algorithm needs it to be.
    #[error(
        "the D2D graph of subnet {subnet} is disconnected ({components} components with radius \
         {radius}): {algo} needs every subnet connected (raise topology.radius or set it to 0 \
         for the reference's resampling)"
    )]
    Disconnected {
        /// Which subnet.
        subnet: usize,
        /// Its connected components.
        components: usize,
        /// The radius used.
        radius: f64,
        /// The algorithm that needs connectivity.
        algo: String,
    },
    /// Sampling more devices than a subnet has.
    #[error("fed.s = {s} but subnet {subnet} has only {size} devices (s must be 1..={size})")]
    SampleTooLarge {
        /// Sampled per subnet.
        s: usize,
        /// Subnet.
        subnet: usize,
        /// Its size.
        size: usize,
    },
}

/// One subnet's D2D graph over its local device indices `0..n`.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Neighbours of each local device (sorted, no self loops).
    pub adj: Vec<Vec<usize>>,
    /// Mixing weights of each row: `(j, W_ij)` sorted by `j`, the self term included.
    pub w: Vec<Vec<(usize, f64)>>,
    /// The radius the graph was drawn with.
    pub radius: f64,
}

impl Graph {
    /// Graph from an adjacency list, with Metropolis weights.
    pub fn from_adjacency(adj: Vec<Vec<usize>>, radius: f64) -> Self {
        let w = metropolis(&adj);
        Graph { adj, w, radius }
    }

    /// Devices.
    pub fn len(&self) -> usize {
        self.adj.len()
    }

    /// Whether the graph has no devices.
    pub fn is_empty(&self) -> bool {
        self.adj.is_empty()
    }

    /// Number of connected components (1 = connected).
    pub fn components(&self) -> usize {
        let n = self.adj.len();
        let mut seen = vec![false; n];
        let mut count = 0;
        for s in 0..n {
            if seen[s] {
                continue;
            }
            count += 1;
            let mut stack = vec![s];
            seen[s] = true;
            while let Some(v) = stack.pop() {
                for &u in &self.adj[v] {
                    if !seen[u] {
                        seen[u] = true;
                        stack.push(u);
                    }
                }
            }
        }
        count
    }

    /// Directed D2D transmissions of one mixing step: every device sends to each neighbour.
    pub fn transmissions(&self) -> usize {
        self.adj.iter().map(Vec::len).sum()
    }

    /// `1 − λ₂`-style spectral gap proxy is not needed by the algorithms; the cost model uses the
    /// second-largest eigenvalue modulus ρ of W, computed here by power iteration on the
    /// consensus-free subspace.
    pub fn rho(&self) -> f64 {
        let n = self.len();
        if n <= 1 {
            return 0.0;
        }
        // Deterministic start vector orthogonal to 1.
        let mut v: Vec<f64> = (0..n).map(|i| (i as f64 + 1.0).sin()).collect();
        let mut lambda = 0.0;
        for _ in 0..500 {
            let mean = v.iter().sum::<f64>() / n as f64;
            v.iter_mut().for_each(|x| *x -= mean);
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-300 {
                return 0.0;
            }
            v.iter_mut().for_each(|x| *x /= norm);
            let next: Vec<f64> = self
                .w
                .iter()
                .map(|row| row.iter().map(|&(j, wij)| wij * v[j]).sum())
                .collect();
            lambda = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            v = next;
        }
        lambda
    }
}

/// Metropolis weights with the self term: `W_ij = 1/max(d_i+1, d_j+1)`, `W_ii = 1 − Σ W_ij`.
pub fn metropolis(adj: &[Vec<usize>]) -> Vec<Vec<(usize, f64)>> {
    let deg: Vec<usize> = adj.iter().map(Vec::len).collect();
    adj.iter()
        .enumerate()
        .map(|(i, nb)| {
            let mut row: Vec<(usize, f64)> = nb
                .iter()
                .map(|&j| (j, 1.0 / ((deg[i] + 1).max(deg[j] + 1)) as f64))
                .collect();
            let off: f64 = row.iter().map(|(_, w)| w).sum();
            row.push((i, 1.0 - off));
            row.sort_by_key(|(j, _)| *j);
            row
        })
        .collect()
}

fn gauss(rng: &mut StdRng) -> f64 {
    // Box–Muller; 1 − U keeps the logarithm finite.
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// One random geometric graph on `n` points drawn N(0, 2²); `radius` None draws 0.5 + 3·U.
pub fn random_geometric(n: usize, radius: Option<f64>, rng: &mut StdRng) -> Graph {
    let pos: Vec<(f64, f64)> = (0..n)
        .map(|_| (2.0 * gauss(rng), 2.0 * gauss(rng)))
        .collect();
    let r = radius.unwrap_or_else(|| 0.5 + 3.0 * rng.random::<f64>());
    let mut adj = vec![Vec::new(); n];
    for i in 0..n {
        for j in i + 1..n {
            let (dx, dy) = (pos[i].0 - pos[j].0, pos[i].1 - pos[j].1);
            if (dx * dx + dy * dy).sqrt() <= r {
                adj[i].push(j);
                adj[j].push(i);
            }
        }
    }
    Graph::from_adjacency(adj, r)
}

/// Devices grouped into subnets, each with its D2D graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Topology {
    /// Device ids of each subnet, ascending.
    pub subnets: Vec<Vec<u32>>,
    /// Each subnet's graph (local indices follow `subnets[c]`).
    pub graphs: Vec<Graph>,
}

impl Topology {
    /// `devices` devices in `n_subnets` contiguous subnets (sizes differ by at most one).
    ///
    /// `radius = None` is the reference: draw the radius too and redraw until connected.
    /// `Some(r)` draws once with radius `r` and may give a disconnected subnet, which
    /// [`Topology::require_connected`] reports.
    pub fn build(
        devices: usize,
        n_subnets: usize,
        radius: Option<f64>,
        rng: &mut StdRng,
    ) -> Result<Topology, TopologyError> {
        if n_subnets == 0 || n_subnets > devices {
            return Err(TopologyError::Subnets {
                subnets: n_subnets,
                devices,
            });
        }
        let base = devices / n_subnets;
        let extra = devices % n_subnets;
        let mut subnets = Vec::with_capacity(n_subnets);
        let mut graphs = Vec::with_capacity(n_subnets);
        let mut next = 0u32;
        for c in 0..n_subnets {
            let size = base + usize::from(c < extra);
            subnets.push((next..next + size as u32).collect());
            next += size as u32;
            let g = match radius {
                Some(r) => random_geometric(size, Some(r), rng),
                None => loop {
                    let g = random_geometric(size, None, rng);
                    if g.components() == 1 {
                        break g;
                    }
                },
            };
            graphs.push(g);
        }
        Ok(Topology { subnets, graphs })
    }

    /// Errors naming the first disconnected subnet.
    pub fn require_connected(&self, algo: &str) -> Result<(), TopologyError> {
        for (c, g) in self.graphs.iter().enumerate() {
            let components = g.components();
            if components > 1 {
                return Err(TopologyError::Disconnected {
                    subnet: c,
                    components,
                    radius: g.radius,
                    algo: algo.to_string(),
                });
            }
        }
        Ok(())
    }

    /// Errors when `s` exceeds some subnet.
    pub fn check_sample(&self, s: usize) -> Result<(), TopologyError> {
        for (c, members) in self.subnets.iter().enumerate() {
            if s == 0 || s > members.len() {
                return Err(TopologyError::SampleTooLarge {
                    s,
                    subnet: c,
                    size: members.len(),
                });
            }
        }
        Ok(())
    }

    /// Total devices.
    pub fn devices(&self) -> usize {
        self.subnets.iter().map(Vec::len).sum()
    }

    /// `(subnet, local index)` of a device.
    pub fn locate(&self, device: u32) -> Option<(usize, usize)> {
        self.subnets
            .iter()
            .enumerate()
            .find_map(|(c, m)| m.binary_search(&device).ok().map(|k| (c, k)))
    }

    /// Directed D2D transmissions of one mixing step over all subnets.
    pub fn transmissions(&self) -> usize {
        self.graphs.iter().map(Graph::transmissions).sum()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::needless_range_loop)]
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn metropolis_is_doubly_stochastic_and_symmetric() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let g = random_geometric(7, None, &mut rng);
            let n = g.len();
            let mut m = vec![vec![0.0; n]; n];
            for (i, row) in g.w.iter().enumerate() {
                let s: f64 = row.iter().map(|(_, w)| w).sum();
                assert!((s - 1.0).abs() < 1e-12);
                for &(j, w) in row {
                    assert!(w > 0.0);
                    m[i][j] = w;
                }
            }
            for i in 0..n {
                for j in 0..n {
                    assert_eq!(m[i][j], m[j][i]);
                }
            }
        }
    }

    #[test]
    fn reference_topology_is_connected_and_contiguous() {
        let mut rng = StdRng::seed_from_u64(1);
        let t = Topology::build(40, 10, None, &mut rng).unwrap();
        assert_eq!(t.subnets[3], vec![12, 13, 14, 15]);
        t.require_connected("sdgt").unwrap();
        assert_eq!(t.locate(13), Some((3, 1)));
        assert!(t.graphs.iter().all(|g| g.rho() < 1.0));
        assert!(Topology::build(4, 5, None, &mut rng).is_err());
        assert!(t.check_sample(5).is_err());
        t.check_sample(2).unwrap();
    }

    #[test]
    fn tiny_radius_is_reported_disconnected() {
        let mut rng = StdRng::seed_from_u64(1);
        let t = Topology::build(40, 2, Some(1e-6), &mut rng).unwrap();
        let e = t.require_connected("sdgt").unwrap_err().to_string();
        assert!(e.contains("subnet 0") && e.contains("disconnected"), "{e}");
    }
}
