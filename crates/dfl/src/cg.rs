//! Conjugate gradient for TaskMet's implicit gradient, `(H + ridge·I) v = b`, with `H` given
//! only as a Hessian-vector product.
//!
//! Two forms, as torchopt offers them: plain CG (needs `H + ridge·I` positive definite), and
//! CG on the normal equations `(H² + ridge·I) v = H b` (what the reference uses,
//! `torchopt.linear_solve.solve_normal_cg(maxiter=5, atol=0, ridge=1e-5)`), which also works
//! when `H` is indefinite (an MLP's Hessian away from a minimum) at the price of squaring the
//! condition number and two HVPs per iteration. Both start from `v = 0`, as torchopt does.
//!
//! A capped solve is not an error: it returns what it has with its residual, and the learner
//! counts and reports it.

use ferrolab_core::{CoreError, Result};

/// The outcome of a solve.
#[derive(Debug, Clone, PartialEq)]
pub struct CgOutcome {
    /// The solution estimate.
    pub x: Vec<f64>,
    /// Iterations run.
    pub iters: usize,
    /// `‖rhs − M x‖ / ‖rhs‖` of the system CG iterates on (`M = H + ridge·I`, `rhs = b`; for
    /// the normal form `M = H² + ridge·I`, `rhs = H b`), from CG's residual recurrence.
    pub rel_residual: f64,
    /// `‖b − H x‖ / ‖b‖`: how well `x` solves the unregularised Newton system `H x = b`, which
    /// is what the implicit function theorem asks for (tracked by linearity, no extra HVP).
    pub rel_residual_h: f64,
    /// `rel_residual ≤ rtol` (torchopt's stopping rule with `atol = 0`).
    pub converged: bool,
    /// Set when CG met a direction of non-positive curvature (plain CG on an indefinite `H`):
    /// [`cg`] stops there, [`cg_through`] carries on (only a zero or non-finite curvature
    /// stops it).
    pub breakdown: bool,
    /// Hessian-vector products spent.
    pub matvecs: usize,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn check(what: &str, b: &[f64], ridge: f64, rtol: f64) -> Result<()> {
    if !(ridge.is_finite() && ridge >= 0.0) {
        return Err(CoreError::Runtime(format!(
            "{what}: ridge {ridge} must be finite and ≥ 0"
        )));
    }
    if !(rtol.is_finite() && rtol >= 0.0) {
        return Err(CoreError::Runtime(format!(
            "{what}: rtol {rtol} must be finite and ≥ 0"
        )));
    }
    if b.iter().any(|v| !v.is_finite()) {
        return Err(CoreError::Runtime(format!(
            "{what}: right-hand side is not finite"
        )));
    }
    Ok(())
}

fn apply<F>(matvec: &mut F, p: &[f64], count: &mut usize) -> Result<Vec<f64>>
where
    F: FnMut(&[f64]) -> Result<Vec<f64>>,
{
    *count += 1;
    let q = matvec(p)?;
    if q.len() != p.len() {
        return Err(CoreError::Runtime(format!(
            "cg: the operator returned {} values for a vector of {}",
            q.len(),
            p.len()
        )));
    }
    Ok(q)
}

/// The CG iteration on `M x = rhs`, where `m_apply(p)` returns `(M p, H p)` and the solve
/// tracks `H x` alongside `x` to report the residual of `H x = b`.
fn iterate<F>(
    mut m_apply: F,
    rhs: &[f64],
    b: &[f64],
    max_iters: usize,
    rtol: f64,
    stop_on_negative: bool,
) -> Result<CgOutcome>
where
    F: FnMut(&[f64]) -> Result<(Vec<f64>, Vec<f64>)>,
{
    let n = rhs.len();
    let mut x = vec![0.0; n];
    let mut hx = vec![0.0; n];
    let mut r = rhs.to_vec();
    let mut p = r.clone();
    let mut rs = dot(&r, &r);
    let rhs_norm = rs.sqrt();
    let b_norm = norm(b);
    let tol = rtol * rhs_norm;
    let mut iters = 0;
    let mut breakdown = false;
    while iters < max_iters && rs.sqrt() > tol && rhs_norm > 0.0 {
        let (mp, hp) = m_apply(&p)?;
        let pmp = dot(&p, &mp);
        if !(pmp.is_finite() && pmp > 0.0) {
            breakdown = true;
            if stop_on_negative || !pmp.is_finite() || pmp == 0.0 {
                break;
            }
        }
        let alpha = rs / pmp;
        for k in 0..n {
            x[k] += alpha * p[k];
            hx[k] += alpha * hp[k];
            r[k] -= alpha * mp[k];
        }
        let rs_new = dot(&r, &r);
        let beta = rs_new / rs;
        rs = rs_new;
        for k in 0..n {
            p[k] = r[k] + beta * p[k];
        }
        iters += 1;
    }
    let rel = if rhs_norm > 0.0 {
        rs.sqrt() / rhs_norm
    } else {
        0.0
    };
    let rel_h = if b_norm > 0.0 {
        let d: Vec<f64> = b.iter().zip(&hx).map(|(b, h)| b - h).collect();
        norm(&d) / b_norm
    } else {
        0.0
    };
    Ok(CgOutcome {
        x,
        iters,
        rel_residual: rel,
        rel_residual_h: rel_h,
        converged: rel <= rtol && !(breakdown && stop_on_negative),
        breakdown,
        matvecs: 0,
    })
}

/// Solves `(H + ridge·I) x = b` by CG, `hvp(v) = H v`, for at most `max_iters` iterations or
/// until the relative residual is at most `rtol`.
pub fn cg<F>(hvp: F, b: &[f64], ridge: f64, max_iters: usize, rtol: f64) -> Result<CgOutcome>
where
    F: FnMut(&[f64]) -> Result<Vec<f64>>,
{
    plain(hvp, b, ridge, max_iters, rtol, true)
}

/// [`cg`] as `jax.scipy.sparse.linalg.cg` runs it: no curvature test, so on an indefinite
/// `H + ridge·I` it carries on through directions of negative curvature (the step
/// `α = rᵀr / pᵀMp` then moves against the residual's descent), stopping only at the
/// tolerance, the iteration cap, or a zero or non-finite `pᵀMp`. TaskMet's CartPole reference
/// solves its model system this way (`omd/cartpole/utils.py`, `dynamics_root_solve_bwd`).
/// Meeting negative curvature is still reported in [`CgOutcome::breakdown`].
pub fn cg_through<F>(
    hvp: F,
    b: &[f64],
    ridge: f64,
    max_iters: usize,
    rtol: f64,
) -> Result<CgOutcome>
where
    F: FnMut(&[f64]) -> Result<Vec<f64>>,
{
    plain(hvp, b, ridge, max_iters, rtol, false)
}

fn plain<F>(
    mut hvp: F,
    b: &[f64],
    ridge: f64,
    max_iters: usize,
    rtol: f64,
    stop_on_negative: bool,
) -> Result<CgOutcome>
where
    F: FnMut(&[f64]) -> Result<Vec<f64>>,
{
    check("cg", b, ridge, rtol)?;
    let mut count = 0;
    let mut out = iterate(
        |p| {
            let hp = apply(&mut hvp, p, &mut count)?;
            let mp = hp.iter().zip(p).map(|(h, p)| h + ridge * p).collect();
            Ok((mp, hp))
        },
        b,
        b,
        max_iters,
        rtol,
        stop_on_negative,
    )?;
    out.matvecs = count;
    Ok(out)
}

/// Solves the normal equations `(H² + ridge·I) x = H b` by CG for a symmetric `H` (so
/// `Hᵀ = H` and one HVP gives both products), as torchopt's `solve_normal_cg`.
pub fn normal_cg<F>(
    mut hvp: F,
    b: &[f64],
    ridge: f64,
    max_iters: usize,
    rtol: f64,
) -> Result<CgOutcome>
where
    F: FnMut(&[f64]) -> Result<Vec<f64>>,
{
    check("normal cg", b, ridge, rtol)?;
    let mut count = 0;
    let rhs = apply(&mut hvp, b, &mut count)?;
    let mut out = iterate(
        |p| {
            let hp = apply(&mut hvp, p, &mut count)?;
            let hhp = apply(&mut hvp, &hp, &mut count)?;
            let mp = hhp.iter().zip(p).map(|(h, p)| h + ridge * p).collect();
            Ok((mp, hp))
        },
        &rhs,
        b,
        max_iters,
        rtol,
        true,
    )?;
    out.matvecs = count;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// A random symmetric matrix `Q diag(eigs) Qᵀ`, Q from Gram–Schmidt.
    fn sym(eigs: &[f64], seed: u64) -> Vec<Vec<f64>> {
        let n = eigs.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < n {
            let mut v: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
            for u in &q {
                let c = dot(&v, u);
                for k in 0..n {
                    v[k] -= c * u[k];
                }
            }
            let nv = norm(&v);
            q.push(v.iter().map(|x| x / nv).collect());
        }
        (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| (0..n).map(|k| q[k][i] * eigs[k] * q[k][j]).sum())
                    .collect()
            })
            .collect()
    }

    fn mv(a: &[Vec<f64>]) -> impl FnMut(&[f64]) -> Result<Vec<f64>> + '_ {
        move |v| Ok(a.iter().map(|row| dot(row, v)).collect())
    }

    #[test]
    fn cg_solves_a_positive_definite_system() {
        let eigs: Vec<f64> = (1..=12).map(|k| k as f64 * 0.5).collect();
        let a = sym(&eigs, 1);
        let b: Vec<f64> = (0..12).map(|k| (k as f64).sin()).collect();
        let out = cg(mv(&a), &b, 0.0, 100, 1e-12).unwrap();
        assert!(out.converged && !out.breakdown);
        assert!(out.iters <= 13, "{}", out.iters);
        let ax: Vec<f64> = a.iter().map(|row| dot(row, &out.x)).collect();
        let err: f64 = ax
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(err < 1e-9);
        assert!(out.rel_residual_h < 1e-10);
        assert_eq!(out.matvecs, out.iters);
    }

    #[test]
    fn ridge_is_added() {
        let a = sym(&[1.0, 2.0, 3.0], 2);
        let b = vec![1.0, -1.0, 0.5];
        let out = cg(mv(&a), &b, 0.5, 50, 1e-13).unwrap();
        let m: Vec<f64> = a
            .iter()
            .zip(&out.x)
            .map(|(row, x)| dot(row, &out.x) + 0.5 * x)
            .collect();
        for (m, b) in m.iter().zip(&b) {
            assert!((m - b).abs() < 1e-10);
        }
        // With a ridge, x does not solve H x = b exactly, and the report says so.
        assert!(out.rel_residual_h > 0.05);
    }

    #[test]
    fn normal_cg_handles_an_indefinite_system() {
        let eigs = [-2.0, -0.7, 0.5, 1.0, 3.0, 4.0];
        let a = sym(&eigs, 3);
        let b: Vec<f64> = (0..6).map(|k| 1.0 + k as f64).collect();
        let out = normal_cg(mv(&a), &b, 0.0, 100, 1e-12).unwrap();
        assert!(out.converged);
        assert!(out.rel_residual_h < 1e-9, "{}", out.rel_residual_h);
        assert_eq!(out.matvecs, 1 + 2 * out.iters);
        // Plain CG meets negative curvature on this system, and reports it.
        let plain = cg(mv(&a), &b, 0.0, 100, 1e-12).unwrap();
        assert!(plain.breakdown && !plain.converged, "{plain:?}");
    }

    #[test]
    fn cg_through_carries_on_past_negative_curvature() {
        // Two negative eigenvalues, the others positive: the stopping form gives up at the
        // first direction of negative curvature, the jax form keeps iterating and, on an
        // indefinite but nonsingular system, still reaches the solution (CG's Krylov
        // minimisation needs no definiteness as long as no pᵀAp is zero).
        let eigs = [-2.0, -0.7, 0.5, 1.0, 3.0, 4.0];
        let a = sym(&eigs, 3);
        let b: Vec<f64> = (0..6).map(|k| 1.0 + k as f64).collect();
        let stop = cg(mv(&a), &b, 0.0, 100, 1e-10).unwrap();
        let through = cg_through(mv(&a), &b, 0.0, 100, 1e-10).unwrap();
        assert!(stop.breakdown && !stop.converged, "{stop:?}");
        assert!(through.breakdown, "negative curvature is still reported");
        assert!(through.iters > stop.iters);
        assert!(through.converged, "{through:?}");
        assert!(through.rel_residual_h < 1e-8, "{}", through.rel_residual_h);
        // On a positive definite system both forms are the same iteration.
        let spd = sym(&[0.5, 1.0, 2.0, 3.0], 5);
        let b4 = [1.0, -2.0, 0.5, 3.0];
        let x1 = cg(mv(&spd), &b4, 1e-5, 10, 1e-12).unwrap();
        let x2 = cg_through(mv(&spd), &b4, 1e-5, 10, 1e-12).unwrap();
        assert_eq!(x1, x2);
    }

    #[test]
    fn capped_solve_reports_its_residual() {
        let eigs: Vec<f64> = (0..40).map(|k| 10f64.powf(k as f64 / 10.0)).collect();
        let a = sym(&eigs, 4);
        let b = vec![1.0; 40];
        let out = normal_cg(mv(&a), &b, 1e-5, 5, 1e-5).unwrap();
        assert_eq!(out.iters, 5);
        assert!(!out.converged);
        assert!(out.rel_residual > 1e-5 && out.rel_residual.is_finite());
        assert!(out.rel_residual_h > 0.0 && out.rel_residual_h.is_finite());
    }

    #[test]
    fn zero_and_bad_inputs() {
        let a = sym(&[1.0, 2.0], 5);
        let out = cg(mv(&a), &[0.0, 0.0], 0.0, 10, 1e-6).unwrap();
        assert!(out.converged && out.iters == 0 && out.x == vec![0.0, 0.0]);
        assert!(cg(mv(&a), &[f64::NAN, 0.0], 0.0, 10, 1e-6).is_err());
        assert!(cg(mv(&a), &[1.0, 0.0], -1.0, 10, 1e-6).is_err());
        assert!(cg(|_| Ok(vec![0.0]), &[1.0, 0.0], 0.0, 10, 1e-6).is_err());
    }
}
