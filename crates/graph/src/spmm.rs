//! The propagation matrix of a training batch, on the CSR kernel of
//! [`ferrolab_core::kernels::spmm`] (where the kernel, its ordering guarantees and its test
//! against burn's gather/scatter live).

use ferrolab_core::kernels::spmm as kernel;

use crate::norm::{AdjRows, WeightedCsr};

/// `out = A x` with `x` row-major `cols × d` and `out` row-major `rows × d` (overwritten).
///
/// # Panics
/// When `out` does not hold `rows × d` values or a column index reaches past `x`: the
/// matrices are built by this crate from checked graphs, so either is a bug.
pub fn spmm(a: AdjRows<'_>, x: &[f32], d: usize, out: &mut [f32]) {
    kernel::spmm(
        kernel::CsrRef {
            indptr: a.indptr,
            indices: a.indices,
            values: a.values,
        },
        x,
        d,
        out,
    );
}

/// `Aᵀ` of a square CSR matrix, each row's entries in increasing original row.
pub fn transpose(a: &WeightedCsr) -> WeightedCsr {
    let rows = a.rows();
    let t = kernel::transpose(
        kernel::CsrRef {
            indptr: rows.indptr,
            indices: rows.indices,
            values: rows.values,
        },
        a.num_nodes(),
    );
    WeightedCsr {
        indptr: t.indptr,
        indices: t.indices,
        values: t.values,
    }
}

/// A batch's propagation matrix `Â` for training: `Â H` forward, `Âᵀ G` backward.
#[derive(Debug, Clone)]
pub struct Propagation {
    fwd: WeightedCsr,
    /// Built even for the symmetric normalisation: it costs one pass over the entries, and
    /// then no gradient depends on the batch's graph being exactly symmetric.
    bwd: WeightedCsr,
}

impl Propagation {
    pub fn new(adj: WeightedCsr) -> Self {
        let bwd = transpose(&adj);
        Propagation { fwd: adj, bwd }
    }

    pub fn num_nodes(&self) -> usize {
        self.fwd.num_nodes()
    }

    /// `Â h`, `h` row-major `n × d`.
    pub fn apply(&self, h: &[f32], d: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.num_nodes() * d];
        spmm(self.fwd.rows(), h, d, &mut out);
        out
    }

    /// `Âᵀ g`, `g` row-major `n × d`.
    pub fn apply_t(&self, g: &[f32], d: usize) -> Vec<f32> {
        let mut out = vec![0f32; self.num_nodes() * d];
        spmm(self.bwd.rows(), g, d, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csr::CsrGraph;
    use crate::norm::{Normalization, normalize};

    fn graph() -> CsrGraph {
        // A hub (0) and a path 1-2-3, 4 isolated.
        CsrGraph::new(vec![0, 3, 5, 8, 10, 10], vec![1, 2, 3, 0, 2, 0, 1, 3, 0, 2]).unwrap()
    }

    fn dense(a: &WeightedCsr) -> Vec<Vec<f32>> {
        let n = a.num_nodes();
        (0..n)
            .map(|i| (0..n).map(|j| a.get(i, j)).collect())
            .collect()
    }

    #[test]
    fn products_match_the_dense_matrix_and_its_transpose() {
        let _serial = crate::serial_test();
        let a = normalize(&graph(), Normalization::DiagEnhanced { lambda: 1.0 });
        let m = dense(&a);
        let d = 3;
        let x: Vec<f32> = (0..5 * d).map(|k| (k as f32 * 0.37).sin()).collect();
        let p = Propagation::new(a);
        let (y, yt) = (p.apply(&x, d), p.apply_t(&x, d));
        for i in 0..5 {
            for c in 0..d {
                let want: f32 = (0..5).map(|j| m[i][j] * x[j * d + c]).sum();
                let want_t: f32 = (0..5).map(|j| m[j][i] * x[j * d + c]).sum();
                assert!((y[i * d + c] - want).abs() < 1e-6);
                assert!((yt[i * d + c] - want_t).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn transpose_twice_is_identity_and_keeps_a_symmetric_matrix() {
        let _serial = crate::serial_test();
        let a = normalize(&graph(), Normalization::Row);
        assert_eq!(transpose(&transpose(&a)), a);
        let s = normalize(&graph(), Normalization::Symmetric);
        assert_eq!(transpose(&s), s);
    }
}
