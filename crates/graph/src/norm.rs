//! Adjacency normalisations of GCN and Cluster-GCN, as edge weights with self loops added.
//!
//! - [`Normalization::Symmetric`]: `Â = D̃^-1/2 (A+I) D̃^-1/2`, `D̃ = D + I` (Kipf & Welling,
//!   ICLR 2017, eq. 2).
//! - [`Normalization::Row`]: `Â = (D+I)^-1 (A+I)` (Cluster-GCN eq. 10's `A'`).
//! - [`Normalization::DiagEnhanced`]: `Â = A' + λ diag(A')` with `A' = (D+I)^-1 (A+I)`
//!   (Cluster-GCN §3.3, eq. 11): self information is amplified in proportion to how little
//!   each node hears from its neighbours, which is what lets deep GCNs train.

use ferrolab_core::burn::prelude::Device;
use ferrolab_core::sparse::SparseAdj;

use crate::csr::CsrGraph;
use crate::error::{GraphError, Result};

/// Which normalised propagation matrix to build.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalization {
    Symmetric,
    Row,
    DiagEnhanced { lambda: f32 },
}

/// A weighted square adjacency in CSR form, self loops included (rows sorted by column).
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedCsr {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl WeightedCsr {
    pub fn num_nodes(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// All rows as a borrowed view.
    pub fn rows(&self) -> AdjRows<'_> {
        AdjRows {
            indptr: &self.indptr,
            indices: &self.indices,
            values: &self.values,
        }
    }

    /// Weight of entry `(i, j)`, 0 where absent.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        self.indices[a..b]
            .iter()
            .zip(&self.values[a..b])
            .filter(|(c, _)| **c as usize == j)
            .map(|(_, v)| *v)
            .sum()
    }

    /// Moves the matrix onto `device` for [`SparseAdj::propagate`].
    pub fn to_sparse_adj(&self, device: &Device) -> Result<SparseAdj> {
        let n = self.num_nodes();
        SparseAdj::from_csr(
            n,
            n,
            &self.indptr,
            &self.indices,
            Some(&self.values),
            device,
        )
        .map_err(GraphError::Invalid)
    }
}

/// Rows of a normalised adjacency: `indptr[i]..indptr[i + 1]` index `indices`/`values` for
/// the block's `i`-th row; columns are global node ids.
#[derive(Debug, Clone, Copy)]
pub struct AdjRows<'a> {
    pub indptr: &'a [usize],
    pub indices: &'a [u32],
    pub values: &'a [f32],
}

/// Appends row `i` of the normalised `A + I` to `indices`/`values`, sorted by column:
/// `neighbors` is row `i` of `A` (repeated entries add up, an existing self loop adds to the
/// new one) and `deg(j)` the row sum of `A + I` for node `j` (its degree plus one), needed
/// only by the symmetric normalisation.
pub(crate) fn normalize_row(
    i: u32,
    neighbors: &[u32],
    norm: Normalization,
    deg: &dyn Fn(u32) -> f32,
    scratch: &mut Vec<u32>,
    indices: &mut Vec<u32>,
    values: &mut Vec<f32>,
) {
    scratch.clear();
    scratch.extend_from_slice(neighbors);
    scratch.push(i);
    scratch.sort_unstable();
    let di = (neighbors.len() + 1) as f32;
    let start = indices.len();
    for &c in scratch.iter() {
        if indices.len() > start && indices.last() == Some(&c) {
            if let Some(v) = values.last_mut() {
                *v += 1.0;
            }
        } else {
            indices.push(c);
            values.push(1.0);
        }
    }
    for (v, &j) in values[start..].iter_mut().zip(&indices[start..]) {
        match norm {
            Normalization::Symmetric => *v /= (di * deg(j)).sqrt(),
            Normalization::Row => *v /= di,
            Normalization::DiagEnhanced { lambda } => {
                *v /= di;
                if j == i {
                    *v *= 1.0 + lambda;
                }
            }
        }
    }
}

/// The normalised propagation matrix of `g` under `norm`.
pub fn normalize(g: &CsrGraph, norm: Normalization) -> WeightedCsr {
    let n = g.num_nodes();
    let deg = |j: u32| (g.degree(j as usize) + 1) as f32;
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    let mut indices = Vec::with_capacity(g.num_edges() + n);
    let mut values = Vec::with_capacity(g.num_edges() + n);
    let mut scratch = Vec::new();
    for i in 0..n {
        normalize_row(
            i as u32,
            g.neighbors(i),
            norm,
            &deg,
            &mut scratch,
            &mut indices,
            &mut values,
        );
        indptr.push(indices.len());
    }
    WeightedCsr {
        indptr,
        indices,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The path 0 - 1 - 2: degrees of A + I are 2, 3, 2.
    fn path3() -> CsrGraph {
        CsrGraph::new(vec![0, 1, 3, 4], vec![1, 0, 2, 1]).unwrap()
    }

    fn dense(w: &WeightedCsr) -> [[f32; 3]; 3] {
        let mut m = [[0.0; 3]; 3];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, x) in row.iter_mut().enumerate() {
                *x = w.get(i, j);
            }
        }
        m
    }

    fn assert_close(got: [[f32; 3]; 3], want: [[f32; 3]; 3]) {
        for i in 0..3 {
            for j in 0..3 {
                assert!(
                    (got[i][j] - want[i][j]).abs() < 1e-6,
                    "({i},{j}): {got:?} vs {want:?}"
                );
            }
        }
    }

    #[test]
    fn symmetric_normalisation_by_hand() {
        let _serial = crate::serial_test();
        let s = 1.0 / 6f32.sqrt();
        let w = normalize(&path3(), Normalization::Symmetric);
        assert_eq!(w.indptr, vec![0, 2, 5, 7]);
        assert_eq!(w.indices, vec![0, 1, 0, 1, 2, 1, 2]);
        assert_close(dense(&w), [[0.5, s, 0.0], [s, 1.0 / 3.0, s], [0.0, s, 0.5]]);
    }

    #[test]
    fn row_normalisation_by_hand() {
        let _serial = crate::serial_test();
        let t = 1.0 / 3.0;
        let w = normalize(&path3(), Normalization::Row);
        assert_close(dense(&w), [[0.5, 0.5, 0.0], [t, t, t], [0.0, 0.5, 0.5]]);
    }

    #[test]
    fn diagonal_enhancement_by_hand() {
        let _serial = crate::serial_test();
        let t = 1.0 / 3.0;
        let w = normalize(&path3(), Normalization::DiagEnhanced { lambda: 1.0 });
        assert_close(
            dense(&w),
            [[1.0, 0.5, 0.0], [t, 2.0 * t, t], [0.0, 0.5, 1.0]],
        );
        // λ = 0 is the row normalisation.
        assert_eq!(
            normalize(&path3(), Normalization::DiagEnhanced { lambda: 0.0 }),
            normalize(&path3(), Normalization::Row)
        );
    }

    #[test]
    fn an_existing_self_loop_adds_to_the_identity() {
        let _serial = crate::serial_test();
        let g = CsrGraph::new(vec![0, 1], vec![0]).unwrap();
        let w = normalize(&g, Normalization::Row);
        assert_eq!((w.indices.clone(), w.values.clone()), (vec![0], vec![1.0]));
        let g2 = CsrGraph::new(vec![0, 2, 3], vec![0, 1, 0]).unwrap();
        // A + I = [[2, 1], [1, 1]]: row sums 3 and 2.
        let w2 = normalize(&g2, Normalization::Row);
        assert_eq!(w2.values, vec![2.0 / 3.0, 1.0 / 3.0, 0.5, 0.5]);
    }
}
