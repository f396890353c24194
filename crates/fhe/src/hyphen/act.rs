//! Activations: HerPN / AESPA (degree 2) and the baseline's AppReLU.
//!
//! HerPN (AESPA, Park et al. 2022; hyphen.md §5): ReLU's Hermite expansion truncated at
//! degree 2 with bases h0 = 1, h1 = x, h2 = (x² − 1)/√2 and coefficients f0 = 1/√(2π),
//! f1 = 1/2, f2 = 1/√(4π); each basis h1, h2 gets its own batch normalisation. For inference
//! everything folds into a·x² + b·x + c per channel ([`HerPn::fold`]); encrypted, that is one
//! square and two plaintext products: 2 levels.
//!
//! AppReLU (Lee et al. 2022, §3.5): ReLU(x) = x·(1 + sgn(x/B))/2 with sgn approximated by a
//! composite of three odd polynomials of degrees {15, 15, 27}: 4 + 4 + 5 levels, one more for
//! the final product, 14 in all. The components are Lee et al.'s composite minimax
//! polynomials of precision α = 13 ([`app_sign`], computed here by Remez in
//! [`crate::minimax`]).

use super::backend::Backend;
use crate::error::Result;
use crate::minimax::{CompositeSign, composite_sign};
use crate::polyeval::Chebyshev;
use std::sync::OnceLock;

/// Per-channel quadratic a·x² + b·x + c.
#[derive(Debug, Clone, PartialEq)]
pub struct HerPn {
    /// x² coefficients.
    pub a: Vec<f64>,
    /// x coefficients.
    pub b: Vec<f64>,
    /// Constants.
    pub c: Vec<f64>,
}

/// ReLU's normalised Hermite coefficients f0, f1, f2.
pub fn hermite_relu_coeffs() -> [f64; 3] {
    let pi = std::f64::consts::PI;
    [1.0 / (2.0 * pi).sqrt(), 0.5, 1.0 / (4.0 * pi).sqrt()]
}

/// Batch-norm statistics of one HerPN channel: γ, β and (μ, σ²) of the bases h1 and h2.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HerPnStats {
    /// Scale.
    pub gamma: f64,
    /// Shift.
    pub beta: f64,
    /// Mean of h1.
    pub mu1: f64,
    /// Variance of h1.
    pub var1: f64,
    /// Mean of h2.
    pub mu2: f64,
    /// Variance of h2.
    pub var2: f64,
}

impl HerPn {
    /// Folds γ·Σ f_i (h_i − μ_i)/s_i + β (h0 not normalised) into a·x² + b·x + c.
    pub fn fold(stats: &[HerPnStats], eps: f64) -> Self {
        let [f0, f1, f2] = hermite_relu_coeffs();
        let r2 = std::f64::consts::SQRT_2;
        let mut out = HerPn {
            a: vec![],
            b: vec![],
            c: vec![],
        };
        for s in stats {
            let s1 = (s.var1 + eps).sqrt();
            let s2 = (s.var2 + eps).sqrt();
            out.a.push(s.gamma * f2 / (r2 * s2));
            out.b.push(s.gamma * f1 / s1);
            out.c
                .push(s.gamma * (f0 - f1 * s.mu1 / s1 - f2 / (r2 * s2) - f2 * s.mu2 / s2) + s.beta);
        }
        out
    }

    /// The unfolded HerPN of one channel on a value (reference for the folding).
    pub fn unfolded(s: &HerPnStats, eps: f64, x: f64) -> f64 {
        let [f0, f1, f2] = hermite_relu_coeffs();
        let h1 = x;
        let h2 = (x * x - 1.0) / std::f64::consts::SQRT_2;
        s.gamma
            * (f0
                + f1 * (h1 - s.mu1) / (s.var1 + eps).sqrt()
                + f2 * (h2 - s.mu2) / (s.var2 + eps).sqrt())
            + s.beta
    }

    /// Value for channel `ch`.
    pub fn eval(&self, ch: usize, x: f64) -> f64 {
        (self.a[ch] * x + self.b[ch]) * x + self.c[ch]
    }

    /// Encrypted evaluation on per-slot coefficient vectors: 2 levels, one square.
    pub fn apply<B: Backend>(
        be: &mut B,
        x: &B::Ct,
        a: &[f64],
        b: &[f64],
        c: &[f64],
    ) -> Result<B::Ct> {
        let sq = be.square(x)?;
        let t1 = be.mul_plain(&sq, a)?;
        let t1 = be.rescale(&t1)?;
        let lvl = be.level(&t1);
        let t2 = be.mul_plain_to(x, b, lvl)?;
        let y = be.add(&t1, &t2)?;
        be.add_plain(&y, c)
    }
}

/// Lee et al.'s AppReLU sign approximation: the composite minimax polynomial with component
/// degrees {15, 15, 27} and precision α = 13 (error ≤ 2^-13 on |x| ≥ 2^-9: ε = 16·2^-α, their
/// `max_factor` 16 for ReLU; margin η = 2^-15 between stages), from [`composite_sign`],
/// computed once per process.
pub fn app_sign() -> &'static CompositeSign {
    static SIGN: OnceLock<CompositeSign> = OnceLock::new();
    SIGN.get_or_init(|| {
        // Fixed, tested parameters: the Remez problems are well posed (see minimax.rs tests).
        composite_sign(&APP_SIGN_DEGREES, APP_SIGN_EPS, APP_SIGN_MARGIN)
            .expect("the published AppReLU parameters are a valid composite")
    })
}

/// Component degrees of the AppReLU sign approximation (Lee et al.).
pub const APP_SIGN_DEGREES: [usize; 3] = [15, 15, 27];

/// Margin η between the stages of the AppReLU sign approximation (Lee et al.'s 2^-15).
pub const APP_SIGN_MARGIN: f64 = 1.0 / 32768.0;

/// The input gap ε of the AppReLU sign approximation (2^-9 = 16·2^-13).
pub const APP_SIGN_EPS: f64 = 1.0 / 512.0;

/// The three sign-approximation components (degrees 15, 15, 27) in the Chebyshev basis on
/// [−1, 1], each scaled so that the next one's input lies in [−1, 1] (no extra level).
pub fn app_sign_polys() -> &'static [Chebyshev; 3] {
    static POLYS: OnceLock<[Chebyshev; 3]> = OnceLock::new();
    POLYS.get_or_init(|| {
        app_sign()
            .chebyshev_stages()
            .try_into()
            .expect("three degrees give three stages")
    })
}

/// Bound B of the AppReLU input range [−B, B] (Lee et al.: 40).
pub const APP_RELU_B: f64 = 40.0;

/// Plaintext AppReLU of x (input range [−B, B]).
pub fn app_relu(x: f64) -> f64 {
    let [p1, p2, p3] = app_sign_polys();
    let u = (x / APP_RELU_B).clamp(-1.0, 1.0);
    let s = p3.eval(p2.eval(p1.eval(u)));
    x * (1.0 + s) / 2.0
}

/// Largest |AppReLU(x) − ReLU(x)| over |x| ∈ [δ·B, B] (a grid), and the same bound for the
/// sign approximation.
pub fn app_relu_error(delta: f64) -> (f64, f64) {
    let [p1, p2, p3] = app_sign_polys();
    let mut worst = (0.0f64, 0.0f64);
    for i in 0..=20000 {
        let u = -1.0 + 2.0 * i as f64 / 20000.0;
        if u.abs() < delta {
            continue;
        }
        let s = p3.eval(p2.eval(p1.eval(u)));
        worst.1 = worst.1.max((s - u.signum()).abs());
        let x = u * APP_RELU_B;
        worst.0 = worst.0.max((app_relu(x) - x.max(0.0)).abs());
    }
    worst
}

/// Encrypted AppReLU on x' = x/B (the whole baseline network runs on values scaled by 1/B,
/// as Lee et al. scale the input: ReLU is positively homogeneous, biases are divided by B
/// and the logits multiplied back by the client). Returns x'·(1 + sgn x')/2. 14 levels.
pub fn app_relu_apply<B: Backend>(be: &mut B, xs: &B::Ct) -> Result<B::Ct> {
    let [p1, p2, p3] = app_sign_polys();
    let s = be.poly(xs, p1)?;
    let s = be.poly(&s, p2)?;
    let s = be.poly(&s, p3)?;
    let n = be.slots();
    let s1 = be.add_plain(&s, &vec![1.0; n])?;
    let lvl = be.level(&s1);
    let u = be.mul_plain_to(xs, &vec![0.5; n], lvl)?;
    be.mul(&u, &s1)
}

/// Levels AppReLU consumes.
pub fn app_relu_levels() -> usize {
    app_sign_polys().iter().map(|p| p.depth()).sum::<usize>() + 1
}
