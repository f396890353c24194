//! Sparse × dense products `A X` on plain CSR slices, parallel over rows (CSR spmm).
//!
//! Propagating by gather/scatter through autodiff materialises one `d`-wide message per
//! stored entry (a 130k-entry batch at width 128 is a 66 MB tensor) several times per layer,
//! forward and backward; here each output row is accumulated in place from the rows it reads,
//! so a product touches `nnz · d` floats once and allocates only its `rows × d` result.
//!
//! Each row sums its entries in stored order, starting from zero, with a separate multiply
//! and add: the same operations in the same order as the scatter-add of the reference path
//! [`SparseAdj::propagate`](crate::sparse::SparseAdj::propagate), and [`transpose`] keeps
//! entries in the original row order, as that scatter's backward does.

use rayon::prelude::*;

/// Borrowed CSR arrays of a `rows × cols` matrix (`indptr.len() == rows + 1`).
#[derive(Debug, Clone, Copy)]
pub struct CsrRef<'a> {
    pub indptr: &'a [usize],
    pub indices: &'a [u32],
    pub values: &'a [f32],
}

/// Owned CSR arrays.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Csr {
    pub indptr: Vec<usize>,
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Csr {
    pub fn as_ref(&self) -> CsrRef<'_> {
        CsrRef {
            indptr: &self.indptr,
            indices: &self.indices,
            values: &self.values,
        }
    }
}

impl CsrRef<'_> {
    /// Rows of the matrix.
    pub fn rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }
}

/// `out = A x` with `x` row-major `cols × d` and `out` row-major `rows × d` (overwritten).
///
/// # Panics
/// When `out` does not hold `rows × d` values or a column index reaches past `x`: callers
/// build the matrices from checked graphs, so either is a bug.
pub fn spmm(a: CsrRef<'_>, x: &[f32], d: usize, out: &mut [f32]) {
    let rows = a.rows();
    assert_eq!(out.len(), rows * d, "spmm: output is not {rows} x {d}");
    if d == 0 {
        return;
    }
    // Rows average ~20 entries: batches of 64 keep rayon's per-task cost negligible.
    out.par_chunks_mut(d)
        .with_min_len(64)
        .enumerate()
        .for_each(|(i, acc)| {
            acc.fill(0.0);
            let (s, e) = (a.indptr[i], a.indptr[i + 1]);
            for (&u, &w) in a.indices[s..e].iter().zip(&a.values[s..e]) {
                let u = u as usize;
                let src = &x[u * d..(u + 1) * d];
                acc.iter_mut().zip(src).for_each(|(o, v)| *o += w * v);
            }
        });
}

/// `Aᵀ` of a matrix with `cols` columns, each row's entries in increasing original row.
pub fn transpose(a: CsrRef<'_>, cols: usize) -> Csr {
    let mut indptr = vec![0usize; cols + 1];
    for &c in a.indices {
        indptr[c as usize + 1] += 1;
    }
    for i in 0..cols {
        indptr[i + 1] += indptr[i];
    }
    let mut next = indptr.clone();
    let mut indices = vec![0u32; a.indices.len()];
    let mut values = vec![0f32; a.values.len()];
    for r in 0..a.rows() {
        for k in a.indptr[r]..a.indptr[r + 1] {
            let c = a.indices[k] as usize;
            indices[next[c]] = r as u32;
            values[next[c]] = a.values[k];
            next[c] += 1;
        }
    }
    Csr {
        indptr,
        indices,
        values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::device;
    use crate::nn::{float_tensor, to_vec_f32};
    use crate::sparse::SparseAdj;
    use burn::prelude::*;

    // 3x4: [1 0 2 0; 0 0 0 3; 4 5 0 0], one empty row added below.
    fn example() -> Csr {
        Csr {
            indptr: vec![0, 2, 3, 5, 5],
            indices: vec![0, 2, 3, 0, 1],
            values: vec![1., 2., 3., 4., 5.],
        }
    }

    #[test]
    fn spmm_and_its_transpose_match_the_gather_scatter_reference() {
        let dev = device();
        let a = example();
        let (rows, cols, d) = (4, 4, 3);
        let x: Vec<f32> = (0..cols * d).map(|k| (k as f32 * 0.37).sin()).collect();
        let reference =
            SparseAdj::from_csr(rows, cols, &a.indptr, &a.indices, Some(&a.values), &dev).unwrap();
        let want = to_vec_f32(reference.propagate(float_tensor(x.clone(), [cols, d], &dev)));
        let mut got = vec![f32::NAN; rows * d];
        spmm(a.as_ref(), &x, d, &mut got);
        assert_eq!(
            got, want,
            "same operations in the same order: bit-identical"
        );

        let at = transpose(a.as_ref(), cols);
        let reference_t =
            SparseAdj::from_csr(cols, rows, &at.indptr, &at.indices, Some(&at.values), &dev)
                .unwrap();
        let dense_t = to_vec_f32(reference_t.propagate(Tensor::eye(rows, &dev)));
        // Row j of Aᵀ is column j of A.
        let dense = [
            [1., 0., 2., 0.],
            [0., 0., 0., 3.],
            [4., 5., 0., 0.],
            [0., 0., 0., 0.],
        ];
        for j in 0..cols {
            for i in 0..rows {
                assert_eq!(dense_t[j * rows + i], dense[i][j]);
            }
        }
        assert_eq!(transpose(at.as_ref(), rows), a);
    }
}
