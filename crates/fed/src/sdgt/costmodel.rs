//! The paper's co-optimisation of the subnet sampling count s and the D2D rounds T.
//!
//! Transcribed from the reference's dynamic control (`SemiFLGT2_NN`, `control == 3`): every
//! `update_rounds` rounds it measures the spread of the sampled updates
//! `G_t = mean_i ‖Δ_i − Δ̄‖²` and the drift of the global tracking terms
//! `Y_t = mean_c ‖y_c − y_c^{old}‖²`, forms the Lyapunov estimate
//! `H_t = 1/(r+1) + λ₀²(T³γ³/p² · Y_t + Tγ/p · G_t)` with `p = 1 − ((n_c − s)/n_c)²`, and picks
//! the `(s, T)` that minimise the bound-plus-cost
//!
//! `H/(1−β²)⁴·λ₀ + (λ₁H/T)^{1/2} + (λ₁H/(T(1−β²)²))^{2/3} + λ₂(1−β)·Σe + λ₂·T·δ·Σe`,
//! `β = (n_c − s)/n_c`, over `T ∈ 1..=49`, `s ∈ 1..=n_c`. Its per-round cost (the reference's
//! `energy_count`) is `Σ_c ((s/n_c)·e_c + T·δ·e_c) / n_subnets`. The reference ships neither
//! its λ nor its energies; our defaults are in the config and README.

use serde::{Deserialize, Serialize};

/// The cost model's constants.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// λ₀, λ₁, λ₂ of the objective.
    pub lambda: [f64; 3],
    /// Energy of one device↔server exchange per subnet (uniform over subnets).
    pub energy: f64,
    /// Cost of one D2D round relative to a server exchange (δ).
    pub delta: f64,
    /// Largest T searched (the reference: 49).
    pub max_t: usize,
}

/// Measurements the choice depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Rounds done.
    pub round: u64,
    /// Current T.
    pub t: usize,
    /// Current s.
    pub s: usize,
    /// Devices per subnet n_c.
    pub n_c: usize,
    /// Step size γ.
    pub gamma: f64,
    /// Spread of the sampled updates G_t.
    pub g: f64,
    /// Drift of the tracking terms Y_t.
    pub y: f64,
}

impl CostModel {
    /// `p = 1 − ((n_c − s)/n_c)²`.
    pub fn p(s: usize, n_c: usize) -> f64 {
        let b = (n_c as f64 - s as f64) / n_c as f64;
        1.0 - b * b
    }

    /// The Lyapunov estimate H_t.
    pub fn h(&self, o: &Observed) -> f64 {
        let p = Self::p(o.s, o.n_c).max(1e-12);
        let (t, g) = (o.t as f64, o.gamma);
        1.0 / (o.round as f64 + 1.0)
            + self.lambda[0].powi(2) * (t.powi(3) * g.powi(3) / (p * p) * o.y + t * g / p * o.g)
    }

    /// Bound-plus-cost of `(s, t)` at `h` with `n_sub` subnets.
    pub fn objective(&self, h: f64, s: usize, t: usize, n_c: usize, n_sub: usize) -> f64 {
        let beta = (n_c as f64 - s as f64) / n_c as f64;
        let gap = (1.0 - beta * beta).max(1e-12);
        let t = t as f64;
        let [l0, l1, l2] = self.lambda;
        let sum_e = self.energy * n_sub as f64;
        h / gap.powi(4) * l0
            + (l1 * h / t).sqrt()
            + (h * l1 / (t * gap * gap)).powf(2.0 / 3.0)
            + l2 * (1.0 - beta) * sum_e
            + l2 * t * self.delta * sum_e
    }

    /// The `(s, T)` minimising the objective (smallest T, then smallest s, on ties).
    pub fn choose(&self, o: &Observed, n_sub: usize) -> (usize, usize) {
        let h = self.h(o);
        let mut best = (o.s, o.t, f64::INFINITY);
        for t in 1..=self.max_t.max(1) {
            for s in 1..=o.n_c {
                let v = self.objective(h, s, t, o.n_c, n_sub);
                if v < best.2 {
                    best = (s, t, v);
                }
            }
        }
        (best.0, best.1)
    }

    /// Cost of one round with `(s, t)` (the reference's `energy_count` increment).
    pub fn round_cost(&self, s: usize, t: usize, n_c: usize) -> f64 {
        (s as f64 / n_c as f64) * self.energy + t as f64 * self.delta * self.energy
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn choice_trades_accuracy_against_cost() {
        let m = CostModel {
            lambda: [1.0, 1.0, 0.05],
            energy: 1.0,
            delta: 0.02,
            max_t: 49,
        };
        let o = Observed {
            round: 10,
            t: 5,
            s: 2,
            n_c: 4,
            gamma: 0.01,
            g: 1.0,
            y: 1.0,
        };
        let (s, t) = m.choose(&o, 10);
        assert!((1..=4).contains(&s) && (1..=49).contains(&t));
        // Making D2D free can only raise the chosen T; making it dear can only lower it.
        let free = CostModel { delta: 0.0, ..m }.choose(&o, 10).1;
        let dear = CostModel { delta: 10.0, ..m }.choose(&o, 10).1;
        assert!(free >= t && t >= dear, "free {free} chosen {t} dear {dear}");
        assert_eq!(dear, 1);
        // Costly server exchanges lower s.
        let s_dear = CostModel {
            lambda: [1.0, 1.0, 50.0],
            ..m
        }
        .choose(&o, 10)
        .0;
        assert!(s_dear <= s);
        assert!((CostModel::p(4, 4) - 1.0).abs() < 1e-12);
    }
}
