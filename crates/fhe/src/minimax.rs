//! Minimax approximation of sgn(x) by a composite of odd polynomials (Lee, Lee, Kim, No,
//! "Minimax approximation of sign function by composite polynomial for homomorphic
//! comparison", IEEE TDSC 2021): p_1 is the degree-d_1 odd minimax approximation of sgn on
//! [−1, −ε] ∪ [ε, 1]; it maps that set into ±[1 − δ_1, 1 + δ_1], and p_2 is the degree-d_2 odd
//! minimax approximation of sgn on that image, and so on. Each stage is one Remez problem on
//! one interval [a, b] with 0 < a < b (oddness gives the negative half).
//!
//! The Remez iteration works in the basis x·T_k(s(x)), s = (2x² − a² − b²)/(b² − a²): odd by
//! construction, and as well conditioned on the narrow late-stage intervals ([0.44, 1.56],
//! [0.99, 1.01]) as on the first one ([2^-9, 1]), where the monomial or plain Chebyshev basis
//! on [−b, b] loses every digit.

use crate::error::{FheError, Result};
use crate::polyeval::Chebyshev;

/// An odd polynomial p(x) = x·Σ_k c_k T_k(s(x)), s(x) = (2x² − a² − b²)/(b² − a²), of degree
/// 2·(len − 1) + 1.
#[derive(Debug, Clone, PartialEq)]
pub struct OddPoly {
    /// Lower end of the interval the basis is built on (0 < a).
    pub a: f64,
    /// Upper end (a < b).
    pub b: f64,
    /// c_0..c_m.
    pub coeffs: Vec<f64>,
}

impl OddPoly {
    /// Degree 2m + 1.
    pub fn degree(&self) -> usize {
        2 * self.coeffs.len().saturating_sub(1) + 1
    }

    fn s(&self, x: f64) -> f64 {
        let (a2, b2) = (self.a * self.a, self.b * self.b);
        (2.0 * x * x - a2 - b2) / (b2 - a2)
    }

    /// Value at x (any real x; the basis is only well scaled on ±[a, b]).
    pub fn eval(&self, x: f64) -> f64 {
        let s = self.s(x);
        // Clenshaw on Σ c_k T_k(s).
        let (mut b1, mut b2) = (0.0, 0.0);
        for &c in self.coeffs.iter().skip(1).rev() {
            let b0 = 2.0 * s * b1 - b2 + c;
            b2 = b1;
            b1 = b0;
        }
        x * (s * b1 - b2 + self.coeffs.first().copied().unwrap_or(0.0))
    }
}

/// Solves A·x = y in place by Gaussian elimination with partial pivoting (n ≤ ~30 here).
fn solve(mut a: Vec<Vec<f64>>, mut y: Vec<f64>) -> Result<Vec<f64>> {
    let n = y.len();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        if a[piv][col].abs() < 1e-300 || !a[piv][col].is_finite() {
            return Err(FheError::InvalidInput(
                "Remez: singular reference system (points coincide)".into(),
            ));
        }
        a.swap(col, piv);
        y.swap(col, piv);
        for r in col + 1..n {
            let f = a[r][col] / a[col][col];
            if f != 0.0 {
                for k in col..n {
                    a[r][k] -= f * a[col][k];
                }
                y[r] -= f * y[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r][k] * x[k]).sum();
        x[r] = (y[r] - s) / a[r][r];
    }
    Ok(x)
}

/// Points of [a, b] at which the error is sampled: Chebyshev–Lobatto in s, so they cluster at
/// both ends, where the equioscillation points of a sign approximation cluster too.
const GRID: usize = 40_001;

fn grid(a: f64, b: f64, n: usize) -> Vec<f64> {
    let (a2, b2) = (a * a, b * b);
    (0..n)
        .map(|i| {
            let s = -(std::f64::consts::PI * i as f64 / (n - 1) as f64).cos();
            (((b2 - a2) * s + a2 + b2) / 2.0).max(a2).min(b2).sqrt()
        })
        .collect()
}

/// Basis values x·T_k(s(x)), k = 0..=m.
fn basis_row(x: f64, a: f64, b: f64, m: usize) -> Vec<f64> {
    let (a2, b2) = (a * a, b * b);
    let s = (2.0 * x * x - a2 - b2) / (b2 - a2);
    let mut row = Vec::with_capacity(m + 1);
    let (mut t0, mut t1) = (1.0, s);
    for k in 0..=m {
        let t = if k == 0 { t0 } else { t1 };
        row.push(x * t);
        if k >= 1 {
            let t2 = 2.0 * s * t1 - t0;
            t0 = t1;
            t1 = t2;
        }
    }
    row
}

/// The odd polynomial of degree `degree` closest to 1 in max norm on [a, b] (0 < a < b): the
/// minimax approximation of sgn on [−b, −a] ∪ [a, b]. Returns it with its error measured on
/// a dense grid of [a, b] (not the levelled error of the last reference, so the figure is what
/// the polynomial does).
pub fn remez_sign(degree: usize, a: f64, b: f64) -> Result<(OddPoly, f64)> {
    if degree.is_multiple_of(2) {
        return Err(FheError::InvalidInput(format!(
            "an odd approximation of sgn needs an odd degree, got {degree}"
        )));
    }
    if !(a.is_finite() && b.is_finite() && 0.0 < a && a < b) {
        return Err(FheError::InvalidInput(format!(
            "Remez interval [{a}, {b}] must satisfy 0 < a < b"
        )));
    }
    let m = (degree - 1) / 2;
    let n = m + 2;
    let pts = grid(a, b, GRID);
    let rows: Vec<Vec<f64>> = pts.iter().map(|&x| basis_row(x, a, b, m)).collect();
    // Initial reference: the Chebyshev–Lobatto points of s.
    let mut reference = grid(a, b, n);
    let mut best: Option<(OddPoly, f64)> = None;
    for _ in 0..100 {
        let sys: Vec<Vec<f64>> = reference
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let mut r = basis_row(x, a, b, m);
                r.push(if i % 2 == 0 { 1.0 } else { -1.0 });
                r
            })
            .collect();
        let sol = solve(sys, vec![1.0; n])?;
        let coeffs = sol[..=m].to_vec();
        let err: Vec<f64> = rows
            .iter()
            .map(|r| r.iter().zip(&coeffs).map(|(u, c)| u * c).sum::<f64>() - 1.0)
            .collect();
        let emax = err.iter().fold(0.0f64, |acc, e| acc.max(e.abs()));
        if !emax.is_finite() {
            break;
        }
        let poly = OddPoly { a, b, coeffs };
        if best.as_ref().is_none_or(|(_, e)| emax < *e) {
            best = Some((poly, emax));
        }
        // At rounding level there is nothing left to level.
        if emax < 1e-14 {
            break;
        }
        // Local extrema of the error (the ends included), merged into an alternating
        // sequence that keeps the largest |e| of each same-sign run.
        let mut alt: Vec<usize> = Vec::new();
        for i in 0..err.len() {
            let is_ext = i == 0
                || i + 1 == err.len()
                || (err[i] - err[i - 1]) * (err[i + 1] - err[i]) <= 0.0;
            if !is_ext {
                continue;
            }
            match alt.last_mut() {
                Some(last) if (err[*last] >= 0.0) == (err[i] >= 0.0) => {
                    if err[i].abs() > err[*last].abs() {
                        *last = i;
                    }
                }
                _ => alt.push(i),
            }
        }
        if alt.len() < n {
            // Fewer alternations than a minimax solution has: the error is at the grid's
            // resolution or at rounding level; the best polynomial so far stands.
            break;
        }
        while alt.len() > n {
            if err[alt[0]].abs() < err[alt[alt.len() - 1]].abs() {
                alt.remove(0);
            } else {
                alt.pop();
            }
        }
        let emin = alt
            .iter()
            .fold(f64::INFINITY, |acc, &i| acc.min(err[i].abs()));
        reference = alt.iter().map(|&i| pts[i]).collect();
        if emax - emin <= 1e-9 * emax {
            break;
        }
    }
    best.ok_or_else(|| FheError::InvalidInput("Remez did not produce a finite polynomial".into()))
}

/// A composite minimax approximation of sgn: `stages[k]` is applied to the output of
/// `stages[k − 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CompositeSign {
    /// The component polynomials, first applied first.
    pub stages: Vec<OddPoly>,
    /// max |p_k(x)| over |x| ≤ bound[k − 1] (bound[−1] = 1): what each stage can output on
    /// any input of [−1, 1], the gap (−ε, ε) included.
    pub bounds: Vec<f64>,
    /// Each stage's minimax error on its own interval (`stages[k].a..=stages[k].b`).
    pub stage_errors: Vec<f64>,
    /// The input gap ε.
    pub eps: f64,
    /// Largest |p(x) − sgn(x)| over ε ≤ |x| ≤ 1 (sampled).
    pub error: f64,
}

impl CompositeSign {
    /// p_K(…p_1(x)).
    pub fn eval(&self, x: f64) -> f64 {
        self.stages.iter().fold(x, |v, p| p.eval(v))
    }

    /// The stages in the Chebyshev basis on [−1, 1], each rescaled so that its input and
    /// (but for the last) its output lie in [−1, 1]: q_k(v) = p_k(R_{k−1}·v)/R_k with R_k the
    /// stage bounds, q_K(v) = p_K(R_{K−1}·v). q_K(…q_1(x)) = p(x), and no stage needs the
    /// extra level an interval other than [−1, 1] costs in [`Chebyshev::depth`].
    pub fn chebyshev_stages(&self) -> Vec<Chebyshev> {
        let k = self.stages.len();
        (0..k)
            .map(|i| {
                let r_in = if i == 0 { 1.0 } else { self.bounds[i - 1] };
                let r_out = if i + 1 == k { 1.0 } else { self.bounds[i] };
                let p = &self.stages[i];
                Chebyshev::interpolate(|v| p.eval(r_in * v) / r_out, p.degree(), -1.0, 1.0)
            })
            .collect()
    }
}

/// Largest |p(x)| over 0 ≤ x ≤ r, sampled (p odd: the same over [−r, r]).
fn max_abs(p: &OddPoly, r: f64) -> f64 {
    (0..=GRID)
        .map(|i| p.eval(r * i as f64 / GRID as f64).abs())
        .fold(0.0, f64::max)
}

/// The composite minimax approximation of sgn with component degrees `degrees` on
/// [−1, −ε] ∪ [ε, 1]. Each stage after the first is fitted on its input's range widened by
/// `margin` on both sides (room for the CKKS error of the stage before; Lee et al. use 2^-15).
pub fn composite_sign(degrees: &[usize], eps: f64, margin: f64) -> Result<CompositeSign> {
    if degrees.is_empty() {
        return Err(FheError::InvalidInput(
            "a composite sign approximation needs at least one degree".into(),
        ));
    }
    if !(eps.is_finite() && 0.0 < eps && eps < 1.0) {
        return Err(FheError::InvalidInput(format!(
            "ε = {eps} must be in (0, 1)"
        )));
    }
    if !(margin.is_finite() && margin >= 0.0) {
        return Err(FheError::InvalidInput(format!(
            "margin = {margin} must be ≥ 0"
        )));
    }
    let (mut lo, mut hi) = (eps, 1.0);
    let mut stages = Vec::with_capacity(degrees.len());
    let mut bounds = Vec::with_capacity(degrees.len());
    let mut stage_errors = Vec::with_capacity(degrees.len());
    let mut r_in = 1.0;
    for (k, &d) in degrees.iter().enumerate() {
        if k > 0 {
            lo -= margin;
            hi += margin;
            if lo <= 0.0 {
                return Err(FheError::InvalidInput(format!(
                    "stage {k}'s input range reaches 0 (degrees {degrees:?} too low for ε = {eps:e})"
                )));
            }
        }
        let (p, stage_error) = remez_sign(d, lo, hi)?;
        stage_errors.push(stage_error);
        let pts = grid(lo, hi, GRID);
        let (mut mn, mut mx) = (f64::INFINITY, f64::NEG_INFINITY);
        for &x in &pts {
            let v = p.eval(x);
            mn = mn.min(v);
            mx = mx.max(v);
        }
        let r = max_abs(&p, r_in).max(mx);
        bounds.push(r);
        stages.push(p);
        r_in = r;
        lo = mn;
        hi = mx;
    }
    let error = (1.0 - lo).abs().max((hi - 1.0).abs());
    Ok(CompositeSign {
        stages,
        bounds,
        stage_errors,
        eps,
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degree_one_has_the_closed_form() {
        // c·a = 1 − E, c·b = 1 + E  ⇒  c = 2/(a + b), E = (b − a)/(b + a).
        let (p, e) = remez_sign(1, 0.25, 1.0).unwrap();
        assert!((p.eval(1.0) - 2.0 / 1.25).abs() < 1e-12);
        assert!((e - 0.75 / 1.25).abs() < 1e-9, "{e}");
    }

    #[test]
    fn degree_three_is_no_worse_than_a_brute_force_search() {
        // p(x) = c1·x + c3·x³ on [a, 1]: no (c1, c3) on a fine grid around Remez's answer
        // does better.
        let (a, b) = (0.2, 1.0);
        let (p, e) = remez_sign(3, a, b).unwrap();
        let pts = grid(a, b, 2001);
        let err = |c1: f64, c3: f64| {
            pts.iter()
                .map(|&x| (c1 * x + c3 * x * x * x - 1.0).abs())
                .fold(0.0, f64::max)
        };
        let c1 = (p.eval(1e-3) / 1e-3 * 1e6).round() / 1e6;
        let mut best = f64::INFINITY;
        for i in -50..=50 {
            for j in -50..=50 {
                let (u, v) = (c1 + i as f64 * 2e-3, (p.eval(1.0) - c1) + j as f64 * 2e-3);
                best = best.min(err(u, v));
            }
        }
        assert!(e <= best + 1e-9, "Remez {e} vs search {best}");
        assert!(p.degree() == 3);
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(remez_sign(4, 0.1, 1.0).is_err());
        assert!(remez_sign(3, 0.0, 1.0).is_err());
        assert!(remez_sign(3, 1.0, 0.5).is_err());
        assert!(composite_sign(&[], 0.1, 0.0).is_err());
        assert!(composite_sign(&[3], 1.5, 0.0).is_err());
        // Degree 1 twice cannot separate 2^-20 from 0: the second stage's range reaches 0.
        assert!(composite_sign(&[1, 1], 2f64.powi(-20), 1e-3).is_err());
    }

    #[test]
    fn solve_matches_a_hand_system() {
        let x = solve(vec![vec![2.0, 1.0], vec![1.0, 3.0]], vec![3.0, 5.0]).unwrap();
        assert!((x[0] - 0.8).abs() < 1e-12 && (x[1] - 1.4).abs() < 1e-12);
    }
}
