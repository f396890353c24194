//! Dense f32 matrix products on plain slices (the GEMM wrapper), for kernels that keep their
//! own buffers (the text convolution's hand-written backward, graph propagation) and must not
//! pay for tensor construction or for materialising a transpose; and the same in f64
//! ([`MatRef64`], [`matmul_f64`]) for kernels that need double precision (the decision-focused
//! learner's exact Hessian-vector products).
//!
//! It calls the `gemm` crate that burn's CPU backend already links (no new dependency), with
//! strides, so `Aᵀ·B` and `A·Bᵀ` read the operands in place. The one `unsafe` call is guarded by
//! checking every stride and extent against the slice lengths first. Reference path: burn's
//! `Tensor::matmul` (tested below).

/// The element types the products are written for (f32, f64), with what differs between them.
pub trait Elem: Copy + Send + Sync + 'static + sealed::Sealed {
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// `m·n·k` from which a product uses rayon's threads: f64's users are small dense networks
    /// whose products only pay for the threads' start-up when larger.
    const PARALLEL_FROM: usize;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

impl Elem for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const PARALLEL_FROM: usize = 1 << 18;
}

impl Elem for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const PARALLEL_FROM: usize = 1 << 22;
}

/// A read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a, T = f32> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// The f64 view, for kernels that need f64 throughout (the hand-written gradients and
/// Hessian-vector products of small dense networks).
pub type MatRef64<'a> = MatRef<'a, f64>;

impl<'a, T: Elem> MatRef<'a, T> {
    /// A row-major `rows × cols` matrix.
    ///
    /// # Panics
    /// When `data` holds fewer than `rows * cols` values.
    pub fn new(data: &'a [T], rows: usize, cols: usize) -> Self {
        assert!(
            data.len() >= rows * cols,
            "MatRef: {} values for a {rows}x{cols} matrix",
            data.len()
        );
        MatRef {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose, as a view (nothing is copied).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `c ← a·b` (or `c ← c + a·b` with `accumulate`), `c` row-major `a.rows() × b.cols()`,
/// using the threads of rayon's global pool for large products.
///
/// # Panics
/// On mismatched shapes or a `c` shorter than the product: these are programming errors of
/// the calling kernel, never user input.
pub fn matmul(a: MatRef<'_>, b: MatRef<'_>, c: &mut [f32], accumulate: bool) {
    matmul_t(a, b, c, accumulate);
}

/// [`matmul`] in f64.
///
/// # Panics
/// As [`matmul`].
pub fn matmul_f64(a: MatRef64<'_>, b: MatRef64<'_>, c: &mut [f64], accumulate: bool) {
    matmul_t(a, b, c, accumulate);
}

fn matmul_t<T: Elem>(a: MatRef<'_, T>, b: MatRef<'_, T>, c: &mut [T], accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: {m}x{k} times {}x{n}", b.rows);
    assert!(
        c.len() >= m * n,
        "matmul: output holds {} < {m}x{n}",
        c.len()
    );
    assert!(
        a.fits() && b.fits(),
        "matmul: a view reaches past its slice"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(T::ZERO);
        }
        return;
    }
    // Thread start-up costs more than it saves on small products.
    let parallelism = if m * n * k >= T::PARALLEL_FROM && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    let stride = |s: usize| isize::try_from(s).unwrap_or(isize::MAX);
    // SAFETY: every element gemm reads is a.data[i*rs + j*cs] with i < rows, j < cols, which
    // `fits` bounds by the slice length (same for b); it writes c[i*n + j] for i < m, j < n,
    // within `c` by the length check; the three slices are distinct borrows (c is &mut).
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            stride(n),
            accumulate,
            a.data.as_ptr(),
            stride(a.col_stride),
            stride(a.row_stride),
            b.data.as_ptr(),
            stride(b.col_stride),
            stride(b.row_stride),
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: MatRef<'_>, b: MatRef<'_>) -> Vec<f32> {
        let at = |m: &MatRef<'_>, i: usize, j: usize| m.data[i * m.row_stride + j * m.col_stride];
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
            }
        }
        c
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn products_with_transposed_views_match_the_naive_product() {
        // Sizes on both sides of the parallel threshold.
        for &(m, k, n) in &[(3, 4, 5), (1, 7, 1), (70, 90, 80)] {
            let a = values(m * k, 1);
            let b = values(k * n, 2);
            let at = values(k * m, 3); // holds aᵀ row-major: k × m
            let bt = values(n * k, 4); // holds bᵀ row-major: n × k
            let cases = [
                (MatRef::new(&a, m, k), MatRef::new(&b, k, n)),
                (MatRef::new(&at, k, m).t(), MatRef::new(&b, k, n)),
                (MatRef::new(&a, m, k), MatRef::new(&bt, n, k).t()),
                (MatRef::new(&at, k, m).t(), MatRef::new(&bt, n, k).t()),
            ];
            for (x, y) in cases {
                let want = naive(x, y);
                let mut got = vec![0.5; m * n];
                matmul(x, y, &mut got, false);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                        "{m}x{k}x{n}: {g} vs {w}"
                    );
                }
                let mut acc = vec![1.0; m * n];
                matmul(x, y, &mut acc, true);
                for (g, w) in acc.iter().zip(&want) {
                    assert!((g - (w + 1.0)).abs() < 1e-4 * (2.0 + w.abs()));
                }
            }
        }
    }

    #[test]
    fn products_match_burns_matmul() {
        use crate::nn::{float_tensor, to_vec_f32};
        let dev = crate::backend::device();
        let (m, k, n) = (33, 70, 21);
        let (a, b) = (values(m * k, 5), values(k * n, 6));
        let want = to_vec_f32(float_tensor(a.clone(), [m, k], &dev).matmul(float_tensor(
            b.clone(),
            [k, n],
            &dev,
        )));
        let mut got = vec![0.0; m * n];
        matmul(
            MatRef::new(&a, m, k),
            MatRef::new(&b, k, n),
            &mut got,
            false,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
        }
    }

    #[test]
    #[should_panic(expected = "times")]
    fn mismatched_inner_dimensions_are_refused() {
        let a = [0.0f32; 6];
        matmul(
            MatRef::new(&a, 2, 3),
            MatRef::new(&a, 2, 3),
            &mut [0.0; 9],
            false,
        );
    }

    fn naive64(a: MatRef64<'_>, b: MatRef64<'_>) -> Vec<f64> {
        let at = |m: &MatRef64<'_>, i: usize, j: usize| m.data[i * m.row_stride + j * m.col_stride];
        let mut c = vec![0.0; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                c[i * b.cols + j] = (0..a.cols).map(|p| at(&a, i, p) * at(&b, p, j)).sum();
            }
        }
        c
    }

    fn values64(n: usize, seed: u32) -> Vec<f64> {
        values(n, seed).into_iter().map(f64::from).collect()
    }

    #[test]
    fn f64_products_with_transposed_views_match_the_naive_product() {
        // Sizes on both sides of the parallel threshold, and the gemv / outer-product shapes
        // (one output row or column, inner dimension 1).
        for &(m, k, n) in &[
            (3, 4, 5),
            (1, 7, 1),
            (9, 1, 6),
            (1, 30, 8),
            (8, 30, 1),
            (70, 90, 80),
        ] {
            let a = values64(m * k, 1);
            let b = values64(k * n, 2);
            let at = values64(k * m, 3); // holds aᵀ row-major: k × m
            let bt = values64(n * k, 4); // holds bᵀ row-major: n × k
            let cases = [
                (MatRef64::new(&a, m, k), MatRef64::new(&b, k, n)),
                (MatRef64::new(&at, k, m).t(), MatRef64::new(&b, k, n)),
                (MatRef64::new(&a, m, k), MatRef64::new(&bt, n, k).t()),
                (MatRef64::new(&at, k, m).t(), MatRef64::new(&bt, n, k).t()),
            ];
            for (x, y) in cases {
                let want = naive64(x, y);
                let mut got = vec![0.5; m * n];
                matmul_f64(x, y, &mut got, false);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() < 1e-12 * (1.0 + w.abs()),
                        "{m}x{k}x{n}: {g} vs {w}"
                    );
                }
                let mut acc = vec![1.0; m * n];
                matmul_f64(x, y, &mut acc, true);
                for (g, w) in acc.iter().zip(&want) {
                    assert!((g - (w + 1.0)).abs() < 1e-12 * (2.0 + w.abs()));
                }
            }
        }
    }

    #[test]
    fn f64_products_match_the_f32_wrapper() {
        let (m, k, n) = (33, 70, 21);
        let (a, b) = (values(m * k, 5), values(k * n, 6));
        let mut want = vec![0.0f32; m * n];
        matmul(
            MatRef::new(&a, m, k),
            MatRef::new(&b, k, n),
            &mut want,
            false,
        );
        let (a64, b64) = (values64(m * k, 5), values64(k * n, 6));
        let mut got = vec![0.0; m * n];
        matmul_f64(
            MatRef64::new(&a64, m, k),
            MatRef64::new(&b64, k, n),
            &mut got,
            false,
        );
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - f64::from(*w)).abs() < 1e-4 * (1.0 + g.abs()),
                "{g} vs {w}"
            );
        }
    }

    #[test]
    fn f64_empty_inner_dimension_zeroes_or_keeps_the_output() {
        let a = [0.0f64; 0];
        let mut c = vec![3.0; 6];
        matmul_f64(
            MatRef64::new(&a, 2, 0),
            MatRef64::new(&a, 0, 3),
            &mut c,
            true,
        );
        assert_eq!(c, vec![3.0; 6]);
        matmul_f64(
            MatRef64::new(&a, 2, 0),
            MatRef64::new(&a, 0, 3),
            &mut c,
            false,
        );
        assert_eq!(c, vec![0.0; 6]);
    }

    #[test]
    #[should_panic(expected = "times")]
    fn f64_mismatched_inner_dimensions_are_refused() {
        let a = [0.0f64; 6];
        matmul_f64(
            MatRef64::new(&a, 2, 3),
            MatRef64::new(&a, 2, 3),
            &mut [0.0; 9],
            false,
        );
    }

    #[test]
    #[should_panic(expected = "output holds")]
    fn f64_short_outputs_are_refused() {
        let a = [0.0f64; 6];
        matmul_f64(
            MatRef64::new(&a, 2, 3),
            MatRef64::new(&a, 3, 2),
            &mut [0.0; 3],
            false,
        );
    }
}
