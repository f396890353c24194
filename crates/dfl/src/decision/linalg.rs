//! Dense solvers for the small systems the decision layers need (at most a few hundred
//! unknowns), kept here so the layers depend on nothing but std.

/// Lower Cholesky factor of a symmetric row-major `n × n` matrix, or `None` when a pivot is not
/// positive (the matrix is not numerically positive definite).
pub(crate) fn cholesky(a: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                if d.is_nan() || d <= 0.0 {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

/// Solves `L Lᵀ x = b` in place, given the factor from [`cholesky`].
pub(crate) fn cholesky_solve(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * n + i];
    }
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * n + i];
    }
}

/// Solves `A x = b` in place by LU with partial pivoting (`a` row-major `n × n`, consumed).
/// Returns `None` when a pivot is below `1e-14` times the largest entry of `A`, i.e. the system
/// is singular to working precision.
pub(crate) fn lu_solve(mut a: Vec<f64>, n: usize, b: &mut [f64]) -> Option<()> {
    let scale = a.iter().fold(0.0_f64, |m, v| m.max(v.abs()));
    if !scale.is_finite() || scale <= 0.0 {
        return None;
    }
    let tiny = 1e-14 * scale;
    for c in 0..n {
        let p = (c..n).max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))?;
        let pivot = a[p * n + c].abs();
        if pivot.is_nan() || pivot <= tiny {
            return None;
        }
        if p != c {
            for k in 0..n {
                a.swap(c * n + k, p * n + k);
            }
            b.swap(c, p);
        }
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            if f != 0.0 {
                for k in c..n {
                    a[r * n + k] -= f * a[c * n + k];
                }
                b[r] -= f * b[c];
            }
        }
    }
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| a[i * n + k] * b[k]).sum();
        b[i] = (b[i] - s) / a[i * n + i];
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_and_lu_solve_a_known_system() {
        let a = [4.0, 2.0, 0.6, 2.0, 5.0, 1.0, 0.6, 1.0, 3.0];
        let x = [1.0, -2.0, 0.5];
        let b: Vec<f64> = (0..3)
            .map(|i| (0..3).map(|j| a[i * 3 + j] * x[j]).sum())
            .collect();
        let l = cholesky(&a, 3).expect("the test matrix is SPD");
        let mut y = b.clone();
        cholesky_solve(&l, 3, &mut y);
        let mut z = b.clone();
        lu_solve(a.to_vec(), 3, &mut z).expect("the test matrix is nonsingular");
        for i in 0..3 {
            assert!((y[i] - x[i]).abs() < 1e-12, "cholesky {y:?}");
            assert!((z[i] - x[i]).abs() < 1e-12, "lu {z:?}");
        }
        assert!(cholesky(&[1.0, 2.0, 2.0, 1.0], 2).is_none());
        assert!(lu_solve(vec![1.0, 2.0, 2.0, 4.0], 2, &mut [1.0, 1.0]).is_none());
    }
}
