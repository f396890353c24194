//! EvalMod: x ↦ sin(2π·K·x) on slots holding x = t/(q_0·K) for t = m + q_0·I, |I| < K, which
//! is ≈ 2π·m/q_0 (the overflow I removed). A Chebyshev interpolant of the scaled cosine
//! cos(2π(K·x − 1/4)/2^r) on [−1, 1], then r double-angle steps cos 2θ = 2cos²θ − 1
//! (Han & Ki 2020; Bossuat et al. 2021); r = 0 interpolates the sine directly.

use crate::ckks::Ciphertext;
use crate::complex::C64;
use crate::error::{FheError, Result};
use crate::eval::Evaluator;
use crate::polyeval::Chebyshev;
use std::f64::consts::PI;

/// The polynomial half of EvalMod.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalModPoly {
    /// The interpolant on [−1, 1].
    pub cheb: Chebyshev,
    /// The overflow range: inputs are t/(q_0·k_range) with |t/q_0| < k_range.
    pub k_range: f64,
    /// Double-angle steps.
    pub double_angle: u32,
    /// max |interpolant − target| on a dense grid of [−1, 1].
    pub approx_error: f64,
}

/// The function the interpolant approximates.
fn target(k: f64, r: u32) -> impl Fn(f64) -> f64 {
    move |y: f64| {
        if r == 0 {
            (2.0 * PI * k * y).sin()
        } else {
            (2.0 * PI * (k * y - 0.25) / f64::from(1u32 << r)).cos()
        }
    }
}

impl EvalModPoly {
    /// The lowest degree (up to `max_degree`) whose interpolant is within `tol` of the
    /// target; the highest tried if none is.
    pub fn new(k_range: f64, double_angle: u32, max_degree: usize, tol: f64) -> Result<Self> {
        if !(k_range.is_finite() && k_range >= 1.0) || double_angle > 8 {
            return Err(FheError::InvalidInput(format!(
                "EvalMod needs K ≥ 1 and at most 8 double-angle steps (got K = {k_range}, r = {double_angle})"
            )));
        }
        let f = target(k_range, double_angle);
        let grid: Vec<f64> = (0..=8192).map(|i| -1.0 + 2.0 * i as f64 / 8192.0).collect();
        let mut best: Option<EvalModPoly> = None;
        let mut d = 7usize;
        while d <= max_degree.max(7) {
            let cheb = Chebyshev::interpolate(&f, d, -1.0, 1.0);
            let err = grid
                .iter()
                .map(|&y| (cheb.eval(y) - f(y)).abs())
                .fold(0.0, f64::max);
            let cand = EvalModPoly {
                cheb,
                k_range,
                double_angle,
                approx_error: err,
            };
            if err <= tol {
                return Ok(cand);
            }
            best = Some(cand);
            d += 2;
        }
        best.ok_or_else(|| FheError::InvalidInput("no EvalMod degree tried".into()))
    }

    /// Levels consumed.
    pub fn depth(&self) -> usize {
        self.cheb.depth() + self.double_angle as usize
    }

    /// Plaintext model of the encrypted evaluation.
    pub fn eval_plain(&self, y: f64) -> f64 {
        let mut v = self.cheb.eval(y);
        for _ in 0..self.double_angle {
            v = 2.0 * v * v - 1.0;
        }
        v
    }

    /// The encrypted evaluation on a ciphertext at the top of `ladder` (its scale is
    /// `ladder[ct.level]`); the result sits on `ladder` `depth()` levels lower.
    pub fn eval(&self, ev: &Evaluator, ct: &Ciphertext, ladder: &[f64]) -> Result<Ciphertext> {
        if ct.level < self.depth() {
            return Err(FheError::Level(format!(
                "EvalMod needs {} levels, the ciphertext has {}",
                self.depth(),
                ct.level
            )));
        }
        let mut g = ev.eval_chebyshev_on(ct, &self.cheb, ladder, true)?;
        for _ in 0..self.double_angle {
            let sq = ev.mul_relin_rescale(&g, &g)?;
            g = ev.add_const(&ev.mul_int(&sq, 2)?, C64::real(-1.0))?;
        }
        Ok(g)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_cosine_with_double_angle_is_the_modular_sine() {
        let p = EvalModPoly::new(26.0, 3, 127, 1e-14).unwrap();
        assert!(p.approx_error < 1e-12, "{}", p.approx_error);
        assert!(p.cheb.degree() < 64, "degree {}", p.cheb.degree());
        // t/q0 = I + ε: the output is sin(2πε) whatever the integer I.
        for i in -25i32..=25 {
            for eps in [-1e-3, -1e-6, 0.0, 2e-5, 3e-3] {
                let y = (f64::from(i) + eps) / 26.0;
                let got = p.eval_plain(y);
                assert!(
                    (got - (2.0 * PI * eps).sin()).abs() < 1e-10,
                    "{i} {eps} {got}"
                );
            }
        }
    }
}
