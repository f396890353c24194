//! The one optimiser the crate's hand-written models share.

/// Adam with PyTorch's and optax's defaults (β = 0.9, 0.999, ε = 1e-8, bias-corrected, no
/// weight decay): the predictor, metric and agent optimiser of every TaskMet setting.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Adam {
    lr: f64,
    m: Vec<f64>,
    v: Vec<f64>,
    t: i32,
}

impl Adam {
    pub fn new(n: usize, lr: f64) -> Self {
        Adam {
            lr,
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
        }
    }

    /// Whether the moments are for `n` parameters (a state read back from a file may not be).
    pub fn fits(&self, n: usize) -> bool {
        self.m.len() == n && self.v.len() == n
    }

    /// One descent step of `w` along the gradient `g`.
    pub fn step(&mut self, w: &mut [f64], g: &[f64]) {
        const B1: f64 = 0.9;
        const B2: f64 = 0.999;
        const EPS: f64 = 1e-8;
        self.t = self.t.saturating_add(1);
        let c1 = 1.0 - B1.powi(self.t);
        let c2 = 1.0 - B2.powi(self.t);
        for ((w, g), (m, v)) in w
            .iter_mut()
            .zip(g)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *w -= self.lr * (*m / c1) / ((*v / c2).sqrt() + EPS);
        }
    }
}
