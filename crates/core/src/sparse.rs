//! Sparse-adjacency propagation `Y = A X` by gather/scatter, with gradients: messages
//! `X[col] * a` are gathered per non-zero and summed into their rows by `select_assign(Add)`.
//! This is what the graph systems (Cluster-GCN, FederatedScope-GNN) build their layers on.

use crate::nn::{float_tensor, int_tensor};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

/// A sparse `rows × cols` matrix in coordinate form, resident on a device.
#[derive(Debug, Clone)]
pub struct SparseAdj {
    rows: Tensor<1, Int>,
    cols: Tensor<1, Int>,
    vals: Tensor<2>,
    n_rows: usize,
    n_cols: usize,
    nnz: usize,
}

impl SparseAdj {
    /// From CSR arrays (`indptr.len() == n_rows + 1`). Values default to 1.
    ///
    /// Returns an error message if the arrays are inconsistent.
    pub fn from_csr(
        n_rows: usize,
        n_cols: usize,
        indptr: &[usize],
        indices: &[u32],
        values: Option<&[f32]>,
        device: &Device,
    ) -> Result<Self, String> {
        if indptr.len() != n_rows + 1 {
            return Err(format!(
                "indptr has {} entries, expected {}",
                indptr.len(),
                n_rows + 1
            ));
        }
        let nnz = indptr[n_rows];
        if indices.len() != nnz || values.is_some_and(|v| v.len() != nnz) {
            return Err(format!(
                "indptr ends at {nnz} but {} indices given",
                indices.len()
            ));
        }
        let mut rows = Vec::with_capacity(nnz);
        for r in 0..n_rows {
            if indptr[r + 1] < indptr[r] {
                return Err(format!("indptr decreases at row {r}"));
            }
            rows.extend(std::iter::repeat_n(r as i64, indptr[r + 1] - indptr[r]));
        }
        if let Some(bad) = indices.iter().find(|&&c| c as usize >= n_cols) {
            return Err(format!("column index {bad} out of range (cols = {n_cols})"));
        }
        let cols: Vec<i64> = indices.iter().map(|&c| i64::from(c)).collect();
        let vals = values.map_or_else(|| vec![1.0; nnz], <[f32]>::to_vec);
        Ok(SparseAdj {
            rows: int_tensor(&rows, device),
            cols: int_tensor(&cols, device),
            vals: float_tensor(vals, [nnz, 1], device),
            n_rows,
            n_cols,
            nnz,
        })
    }

    /// Number of stored entries.
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n_rows, self.n_cols)
    }

    /// `A X`: `x: [cols, F] → [rows, F]`.
    pub fn propagate(&self, x: Tensor<2>) -> Tensor<2> {
        let [n, f] = x.dims();
        assert_eq!(
            n, self.n_cols,
            "propagate: x has {n} rows, adjacency has {} columns",
            self.n_cols
        );
        let msgs = x.select(0, self.cols.clone()) * self.vals.clone();
        Tensor::<2>::zeros([self.n_rows, f], &msgs.device()).select_assign(
            0,
            self.rows.clone(),
            msgs,
            IndexingUpdateOp::Add,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::train_device;
    use crate::nn::{gradcheck::check_input_gradient, to_vec_f32};

    // 3x4 matrix:
    // [1 0 2 0]
    // [0 0 0 3]
    // [4 5 0 0]
    fn example(dev: &Device) -> SparseAdj {
        SparseAdj::from_csr(
            3,
            4,
            &[0, 2, 3, 5],
            &[0, 2, 3, 0, 1],
            Some(&[1., 2., 3., 4., 5.]),
            dev,
        )
        .unwrap()
    }

    #[test]
    fn matches_dense_product() {
        let _rng = crate::backend::exclusive_rng();
        let dev = train_device();
        let a = example(&dev);
        let x = Tensor::<2>::random([4, 3], burn::tensor::Distribution::Default, &dev);
        let dense = float_tensor(
            vec![1., 0., 2., 0., 0., 0., 0., 3., 4., 5., 0., 0.],
            [3, 4],
            &dev,
        );
        let want = to_vec_f32(dense.matmul(x.clone()));
        let got = to_vec_f32(a.propagate(x));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = train_device();
        let a = example(&dev);
        check_input_gradient(|x: Tensor<2>| a.propagate(x), [4, 2], 5);
    }

    #[test]
    fn inconsistent_csr_is_rejected() {
        let dev = train_device();
        assert!(SparseAdj::from_csr(2, 2, &[0, 1], &[0], None, &dev).is_err());
        assert!(SparseAdj::from_csr(1, 2, &[0, 1], &[5], None, &dev).is_err());
        assert!(SparseAdj::from_csr(2, 2, &[0, 2, 1], &[0, 1], None, &dev).is_err());
    }
}
