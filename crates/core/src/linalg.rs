//! Dense f32 matrix products on plain slices. The kernel lives in
//! [`kernels::gemm`](crate::kernels::gemm); this path is kept for existing callers.

pub use crate::kernels::gemm::{MatRef, matmul};
