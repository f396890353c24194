//! The CSR spmm `A X` as a burn backend extension: one op that keeps burn's autodiff and
//! device dispatch, with a hand-written kernel on the CPU and burn ops everywhere else.
//!
//! - `Flex` (the CPU backend): the row-parallel [`spmm`](super::spmm::spmm) on the tensor's
//!   storage, no per-entry message tensor.
//! - Any other listed backend (`Cube`: wgpu or CUDA, when ferrolab-core is built with the
//!   `wgpu` or `cuda` feature): the trait's default body, a gather/scatter of burn primitive
//!   ops ([`gather_scatter`]). It is also the test oracle.
//! - `Autodiff<B>`: the forward of `B`, and a hand-written backward `dX = Aᵀ dY`, itself this
//!   op on the transposed matrix (built once, when the operand is).
//!
//! The matrix is a constant of the op (no gradient flows to its values), which is what graph
//! propagation needs. A backend missing from the list would panic when called, so the list
//! names every backend ferrolab-core can be built with.

use std::sync::Arc;

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, FloatDType, TensorMetadata, backend_extension};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use super::spmm::{Csr, CsrRef, spmm, transpose};

/// A sparse `rows × cols` matrix prepared for [`propagate`]: its CSR arrays, those of its
/// transpose (for the backward), and the row of every entry (for the gather/scatter body).
/// Cloning shares the arrays.
#[derive(Debug, Clone)]
pub struct SparseOperand {
    shared: Arc<Both>,
    transposed: bool,
}

#[derive(Debug)]
struct Both {
    fwd: Side,
    bwd: Side,
}

#[derive(Debug)]
struct Side {
    csr: Csr,
    cols: usize,
    /// `rows[k]`: the row of entry `k`.
    rows: Vec<u32>,
}

impl Side {
    fn new(csr: Csr, cols: usize) -> Self {
        let mut rows = Vec::with_capacity(csr.indices.len());
        for r in 0..csr.indptr.len().saturating_sub(1) {
            rows.extend(std::iter::repeat_n(
                r as u32,
                csr.indptr[r + 1] - csr.indptr[r],
            ));
        }
        Side { csr, cols, rows }
    }
}

impl SparseOperand {
    /// From CSR arrays (`indptr.len() == rows + 1`, `values.len() == indices.len()`).
    ///
    /// Returns an error message if the arrays are inconsistent.
    pub fn from_csr(csr: Csr, cols: usize) -> Result<Self, String> {
        let rows = csr.indptr.len().checked_sub(1).ok_or("indptr is empty")?;
        let nnz = csr.indptr[rows];
        if csr.indices.len() != nnz || csr.values.len() != nnz {
            return Err(format!(
                "indptr ends at {nnz} but {} indices and {} values given",
                csr.indices.len(),
                csr.values.len()
            ));
        }
        if csr.indptr.windows(2).any(|w| w[1] < w[0]) {
            return Err("indptr decreases".into());
        }
        if let Some(bad) = csr.indices.iter().find(|&&c| c as usize >= cols) {
            return Err(format!("column index {bad} out of range (cols = {cols})"));
        }
        let t = transpose(csr.as_ref(), cols);
        Ok(SparseOperand {
            shared: Arc::new(Both {
                fwd: Side::new(csr, cols),
                bwd: Side::new(t, rows),
            }),
            transposed: false,
        })
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        let s = self.side();
        (s.rows(), s.cols)
    }

    /// The transpose (shares the arrays).
    pub fn t(&self) -> Self {
        SparseOperand {
            shared: self.shared.clone(),
            transposed: !self.transposed,
        }
    }

    fn side(&self) -> &Side {
        if self.transposed {
            &self.shared.bwd
        } else {
            &self.shared.fwd
        }
    }
}

impl Side {
    fn rows(&self) -> usize {
        self.csr.indptr.len() - 1
    }
}

/// `A X`: `x: [cols, F] → [rows, F]`, on any backend, differentiable in `x`.
///
/// # Panics
/// When `x` does not have `cols` rows (a shape bug of the caller).
pub fn propagate(a: &SparseOperand, x: Tensor<2>) -> Tensor<2> {
    let [n, _] = x.dims();
    let (_, cols) = a.shape();
    assert_eq!(
        n, cols,
        "propagate: x has {n} rows, the matrix {cols} columns"
    );
    Tensor::from_dispatch(<Dispatch as SparsePropagation>::sparse_propagate(
        x.into_dispatch(),
        a.clone(),
    ))
}

#[backend_extension(Flex, Cube: cfg(any(feature = "wgpu", feature = "cuda")), Autodiff)]
pub trait SparsePropagation: Backend {
    /// `A x` for `x: [cols, F]`.
    fn sparse_propagate(x: FloatTensor<Self>, a: SparseOperand) -> FloatTensor<Self> {
        gather_scatter::<Self>(x, &a)
    }
}

/// `A x` from burn primitive ops: gather `x[col] · a` per entry, scatter-add into rows. The
/// default body of [`SparsePropagation`], so the GPU path, and the reference the CPU kernel
/// is tested against.
pub fn gather_scatter<B: Backend>(x: FloatTensor<B>, a: &SparseOperand) -> FloatTensor<B> {
    let side = a.side();
    let device = x.device();
    let f = x.shape()[1];
    let nnz = side.csr.indices.len();
    let ints = |v: &[u32]| {
        let v: Vec<i64> = v.iter().map(|&i| i64::from(i)).collect();
        B::int_from_data(TensorData::new(v, [nnz]), &device)
    };
    let values = B::float_from_data(TensorData::new(side.csr.values.clone(), [nnz, 1]), &device);
    let msgs = B::float_mul(
        B::float_select(x, 0, ints(&side.csr.indices)),
        B::float_expand(values, Shape::new([nnz, f])),
    );
    let zeros = B::float_zeros(Shape::new([side.rows(), f]), &device, FloatDType::F32);
    B::float_select_assign(zeros, 0, ints(&side.rows), msgs, IndexingUpdateOp::Add)
}

impl SparsePropagation for Flex {
    fn sparse_propagate(x: FloatTensor<Self>, a: SparseOperand) -> FloatTensor<Self> {
        let side = a.side();
        let data = x.into_data().convert::<f32>();
        let f = data.shape()[1];
        let mut out = vec![0f32; side.rows() * f];
        match data.as_slice::<f32>() {
            Ok(xs) => spmm(side.csr.as_ref(), xs, f, &mut out),
            Err(_) => {
                let xs: Vec<f32> = data.iter::<f32>().collect();
                spmm(side.csr.as_ref(), &xs, f, &mut out);
            }
        }
        FlexTensor::from_data(TensorData::new(out, [side.rows(), f]))
    }
}

#[cfg(any(feature = "wgpu", feature = "cuda"))]
impl SparsePropagation for burn::backend::Cube {}

/// The backward of [`SparsePropagation::sparse_propagate`]: `dX = Aᵀ dY`.
#[derive(Debug)]
struct PropagateBackward;

impl<B: Backend + SparsePropagation> Backward<B, 1> for PropagateBackward {
    /// The transposed operand.
    type State = SparseOperand;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = parent {
            grads.register::<B>(node.id, B::sparse_propagate(grad, ops.state));
        }
    }
}

impl<B: Backend + SparsePropagation, C: CheckpointStrategy> SparsePropagation for Autodiff<B, C> {
    fn sparse_propagate(x: FloatTensor<Self>, a: SparseOperand) -> FloatTensor<Self> {
        match PropagateBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::sparse_propagate(x.into_primitive(), a.clone());
                prep.finish(a.t(), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::sparse_propagate(x.into_primitive(), a)),
        }
    }
}

/// A borrowed view for callers that hold the forward arrays only.
impl SparseOperand {
    pub fn csr(&self) -> CsrRef<'_> {
        self.side().csr.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{device, train_device};
    use crate::nn::{float_tensor, to_vec_f32};
    use crate::sparse::SparseAdj;

    // 3x4: [1 0 2 0; 0 0 0 3; 4 5 0 0].
    fn example() -> (Csr, usize) {
        (
            Csr {
                indptr: vec![0, 2, 3, 5],
                indices: vec![0, 2, 3, 0, 1],
                values: vec![1., 2., 3., 4., 5.],
            },
            4,
        )
    }

    fn reference(dev: &Device) -> SparseAdj {
        let (c, cols) = example();
        SparseAdj::from_csr(3, cols, &c.indptr, &c.indices, Some(&c.values), dev).unwrap()
    }

    fn x_values() -> Vec<f32> {
        (0..12).map(|k| (k as f32 * 0.37).sin()).collect()
    }

    #[test]
    fn forward_on_flex_matches_the_default_body_and_the_tensor_reference() {
        let dev = device();
        let (c, cols) = example();
        let a = SparseOperand::from_csr(c, cols).unwrap();
        assert_eq!(a.shape(), (3, 4));
        let x = float_tensor(x_values(), [4, 3], &dev);
        let got = to_vec_f32(propagate(&a, x.clone()));
        let want = to_vec_f32(reference(&dev).propagate(x.clone()));
        assert_eq!(got, want, "same sums in the same order");
        let body = FlexTensor::from_data(TensorData::new(x_values(), [4, 3]));
        let body = gather_scatter::<Flex>(body, &a).into_data();
        assert_eq!(body.iter::<f32>().collect::<Vec<_>>(), want);
    }

    #[test]
    fn gradient_through_autodiff_matches_the_tensor_reference() {
        let dev = train_device();
        let (c, cols) = example();
        let a = SparseOperand::from_csr(c, cols).unwrap();
        let dy = float_tensor((0..9).map(|k| k as f32 - 4.0).collect(), [3, 3], &dev);
        let x = float_tensor(x_values(), [4, 3], &dev).require_grad();
        let grads = (propagate(&a, x.clone()) * dy.clone()).sum().backward();
        let got = to_vec_f32(x.grad(&grads).unwrap());
        let xr = float_tensor(x_values(), [4, 3], &dev).require_grad();
        let grads_r = (reference(&dev).propagate(xr.clone()) * dy)
            .sum()
            .backward();
        let want = to_vec_f32(xr.grad(&grads_r).unwrap());
        assert_eq!(got, want);
        crate::nn::gradcheck::check_input_gradient(|x: Tensor<2>| propagate(&a, x), [4, 2], 5);
    }

    #[test]
    fn inconsistent_arrays_are_rejected() {
        let bad = |indptr: Vec<usize>, indices: Vec<u32>| {
            let values = vec![1.0; indices.len()];
            SparseOperand::from_csr(
                Csr {
                    indptr,
                    indices,
                    values,
                },
                2,
            )
        };
        assert!(bad(vec![0, 2], vec![0]).is_err());
        assert!(bad(vec![0, 1], vec![5]).is_err());
        assert!(bad(vec![0, 2, 1], vec![0, 1]).is_err());
        assert!(bad(vec![], vec![]).is_err());
    }
}
