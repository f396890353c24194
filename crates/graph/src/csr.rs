//! An unweighted graph in compressed-sparse-row form, and the induced subgraphs that
//! Cluster-GCN trains on.
//!
//! Cluster-GCN (Chiang et al., KDD 2019, §3.2) builds each batch from the union of q clusters
//! and keeps *every* edge among the chosen nodes, including the edges between clusters that
//! the partition cut; [`CsrGraph::induced_subgraph`] is that operation.

use ferrolab_data::CsrGraphData;

use crate::error::{GraphError, Result};

/// An unweighted directed adjacency in CSR form (an undirected graph stores both directions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrGraph {
    indptr: Vec<usize>,
    indices: Vec<u32>,
}

impl CsrGraph {
    /// From raw CSR arrays, checked: `indptr` has `n + 1` non-decreasing offsets starting at 0
    /// and ending at `indices.len()`, and every index is below `n`.
    pub fn new(indptr: Vec<usize>, indices: Vec<u32>) -> Result<Self> {
        let Some(&last) = indptr.last() else {
            return Err(GraphError::Invalid(
                "indptr is empty (it needs n + 1 entries)".into(),
            ));
        };
        let n = indptr.len() - 1;
        if indptr[0] != 0 {
            return Err(GraphError::Invalid(format!(
                "indptr starts at {}, expected 0",
                indptr[0]
            )));
        }
        if let Some(i) = indptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(GraphError::Invalid(format!("indptr decreases at row {i}")));
        }
        if last != indices.len() {
            return Err(GraphError::Invalid(format!(
                "indptr ends at {last} but there are {} indices",
                indices.len()
            )));
        }
        if let Some(bad) = indices.iter().find(|&&c| c as usize >= n) {
            return Err(GraphError::Invalid(format!(
                "neighbour id {bad} out of range for {n} nodes"
            )));
        }
        Ok(CsrGraph { indptr, indices })
    }

    /// The adjacency of a loaded graph data set (features and labels stay with the data).
    pub fn from_data(data: &CsrGraphData) -> Result<Self> {
        if data.indptr.len() != data.num_nodes + 1 {
            return Err(GraphError::Invalid(format!(
                "graph has {} nodes but {} row offsets",
                data.num_nodes,
                data.indptr.len()
            )));
        }
        Self::new(data.indptr.clone(), data.indices.clone())
    }

    pub fn num_nodes(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Stored (directed) entries.
    pub fn num_edges(&self) -> usize {
        self.indices.len()
    }

    pub fn indptr(&self) -> &[usize] {
        &self.indptr
    }

    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    pub fn neighbors(&self, node: usize) -> &[u32] {
        &self.indices[self.indptr[node]..self.indptr[node + 1]]
    }

    pub fn degree(&self, node: usize) -> usize {
        self.indptr[node + 1] - self.indptr[node]
    }

    /// The subgraph induced by `nodes`: local node `i` is global node `nodes[i]`, and every
    /// edge of `self` between two chosen nodes is kept, in the original row order.
    ///
    /// Returns the subgraph and the local→global mapping (a copy of `nodes`). Fails on an
    /// out-of-range or repeated node.
    pub fn induced_subgraph(&self, nodes: &[usize]) -> Result<(CsrGraph, Vec<usize>)> {
        let n = self.num_nodes();
        // u32::MAX marks "not chosen"; node ids fit u32 because indices are u32.
        let mut local = vec![u32::MAX; n];
        for (i, &g) in nodes.iter().enumerate() {
            if g >= n {
                return Err(GraphError::Invalid(format!(
                    "node {g} out of range for {n} nodes"
                )));
            }
            if local[g] != u32::MAX {
                return Err(GraphError::Invalid(format!("node {g} chosen twice")));
            }
            local[g] = i as u32;
        }
        let mut indptr = Vec::with_capacity(nodes.len() + 1);
        indptr.push(0);
        let mut indices = Vec::new();
        for &g in nodes {
            indices.extend(
                self.neighbors(g)
                    .iter()
                    .map(|&j| local[j as usize])
                    .filter(|&l| l != u32::MAX),
            );
            indptr.push(indices.len());
        }
        Ok((CsrGraph { indptr, indices }, nodes.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 0-1, 1-2, 2-3, 3-0, 0-2 (undirected, both directions stored).
    fn square_with_diagonal() -> CsrGraph {
        CsrGraph::new(vec![0, 3, 5, 8, 10], vec![1, 2, 3, 0, 2, 0, 1, 3, 0, 2]).unwrap()
    }

    #[test]
    fn induced_subgraph_keeps_all_edges_among_chosen_nodes() {
        let _serial = crate::serial_test();
        let g = square_with_diagonal();
        let (s, map) = g.induced_subgraph(&[2, 0, 3]).unwrap();
        assert_eq!(map, vec![2, 0, 3]);
        assert_eq!(s.num_nodes(), 3);
        // local 0 = global 2: neighbours 0, 3 (global 1 dropped) -> local 1, 2.
        assert_eq!(s.neighbors(0), &[1, 2]);
        // local 1 = global 0: neighbours 2, 3 -> local 0, 2.
        assert_eq!(s.neighbors(1), &[0, 2]);
        // local 2 = global 3: neighbours 0, 2 -> local 1, 0.
        assert_eq!(s.neighbors(2), &[1, 0]);
        assert_eq!(s.num_edges(), 6);
    }

    #[test]
    fn induced_subgraph_rejects_bad_nodes() {
        let _serial = crate::serial_test();
        let g = square_with_diagonal();
        assert!(g.induced_subgraph(&[0, 4]).is_err());
        assert!(g.induced_subgraph(&[1, 1]).is_err());
        let (s, _) = g.induced_subgraph(&[]).unwrap();
        assert_eq!(s.num_nodes(), 0);
    }

    #[test]
    fn inconsistent_arrays_are_rejected() {
        let _serial = crate::serial_test();
        // Each array refused for its own reason, named in the error.
        for (indptr, indices, says) in [
            (vec![], vec![], "indptr is empty"),
            (vec![1, 1], vec![0], "indptr starts at 1"),
            (vec![0, 2, 1], vec![0, 1], "indptr decreases at row"),
            (
                vec![0, 1],
                vec![1],
                "neighbour id 1 out of range for 1 nodes",
            ),
            (
                vec![0, 1, 1],
                vec![0, 0],
                "indptr ends at 1 but there are 2 indices",
            ),
        ] {
            let e = CsrGraph::new(indptr, indices).unwrap_err().to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
    }
}
