//! The model-based soft-Q agent of the reference (`omd/cartpole/omd.py`) and its three ways
//! of training the model.
//!
//! Networks (all `hidden → ReLU → hidden → ReLU → out`, orthogonal init, final gain 1e-2):
//! two Q nets `Q_i(s) ∈ R²` with Polyak targets `Q̄_i`; the model, a next-state net
//! `ŝ'(s, a)` and a reward net `r̂(s, a)` on `[s, onehot(a)]`. The agent never learns on real
//! transitions directly: every Q update uses the *model's* transition
//! `(s, a, r̂(s, a), ŝ'(s, a))` of a replayed `(s, a)`, with the real bootstrap mask. The Q
//! loss is soft double-Q:
//!
//! `y = r + γ·m·V̄(s')`, `V̄(s') = α log Σ_a exp(min_i Q̄_i(s', a)/α)`,
//! `L_Q = ½ Σ_i mean_n (Q_i(s_n, a_n) − y_n)²`.
//!
//! What trains the model (`ModelLoss`):
//! * `Mse` (the reference's `mle` agent): `mean_n ‖ŝ' − s'‖² + (r̂ − r)²`, one Adam step on one
//!   batch, then one Q step on another batch.
//! * `TaskMet` (`metric`): one Adam step of the model on `mean_n eᵀΛφ(s)e + (r̂ − r)²`
//!   (`e = ŝ' − s'`), one Q step on the same batch through the new model, then φ descends
//!   the outer loss `L_Q(Q⁺)` on the *real* transitions, differentiated through the Q step
//!   (implicit, identity inverse Jacobian: `with_inv_jac: False`) and through the model fit
//!   (implicit, `with_inv_jac_model: True`: jaxopt's `custom_root` with `solve_normal_cg`,
//!   `cg_iters: 10`, on the joint Hessian of both model nets).
//! * `Omd`: no prediction loss at all; the model parameters descend the same outer loss
//!   through the Q step.
//!
//! Through the Q step, `dQ⁺/dT ≈ −∂_T ∇_Q L_Q^model(Q⁺, T)`, so with `g_Q = ∇_Q L_Q^real(Q⁺)`
//! and `c_n = Σ_i (J_{Q_i} g_{Q_i})(s_n)[a_n]`,
//!
//! `dL/dT = (1/N) Σ_n c_n ∂y_n/∂T`, `∂y_n/∂T = ∂r̂_n/∂T + γ m_n ∇V̄(ŝ'_n)·∂ŝ'_n/∂T`.
//!
//! TaskMet then maps that through the model fit, `T*(φ)` with `∇_T L_Λ(T*, φ) = 0`:
//! `dL/dφ = −∂_φ[uᵀ ∇_T L_Λ(T, φ)]`, `(∇²_T L_Λ) u = dL/dT`, where
//! `uᵀ∇_T L_Λ = (1/N) Σ_n 2 e_nᵀ Λ_n (J u)_n` (only the next-state net depends on φ).

use super::RlRng;
use super::cartpole::N_ACTIONS;
use super::metric::{GlobalMetric, ModelMetric, ModelMetricEval, StateMetric};
use super::nets::{Adam, init_net, input_grad, soft_update};
use super::replay::{Batch, ReplayBuffer};
use super::{AgentConfig, ModelLoss};
use crate::cg;
use crate::mlp::{Cache, Mlp};
use ferrolab_core::{CoreError, Result};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Q-learning data: `n` transitions, the rewards and next states being real or the model's.
#[derive(Debug, Clone, Copy)]
pub struct QData<'a> {
    pub n: usize,
    pub obs: &'a [f64],
    pub actions: &'a [usize],
    pub rewards: &'a [f64],
    pub next_obs: &'a [f64],
    /// Bootstrap mask (`not_done_no_max`).
    pub mask: &'a [f64],
}

/// The soft double-Q loss at given networks, with what its derivatives reuse.
#[derive(Debug, Clone)]
pub struct QLoss {
    pub loss: f64,
    /// `∇_{Q_i} L_Q`.
    pub grads: [Vec<f64>; 2],
    /// Forward caches of the Q nets at `obs`.
    pub caches: [Cache; 2],
    /// `mean_n ½(Q_1 + Q_2)(s_n, a_n)`.
    pub mean_q: f64,
}

/// `V̄(s')` per row and `∂V̄/∂Q̄_i(s', ·)` (`n × A`) for each target net.
pub fn soft_value(
    targ: &[Mlp; 2],
    next_obs: &[f64],
    n: usize,
    alpha: f64,
) -> Result<(Vec<f64>, [Vec<f64>; 2])> {
    let q1 = targ[0].predict(next_obs, n)?;
    let q2 = targ[1].predict(next_obs, n)?;
    let mut v = vec![0.0; n];
    let mut d1 = vec![0.0; n * N_ACTIONS];
    let mut d2 = vec![0.0; n * N_ACTIONS];
    for r in 0..n {
        let row = r * N_ACTIONS..(r + 1) * N_ACTIONS;
        let m: Vec<f64> = q1[row.clone()]
            .iter()
            .zip(&q2[row.clone()])
            .map(|(a, b)| a.min(*b))
            .collect();
        let mx = m.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
        let ex: Vec<f64> = m.iter().map(|x| ((x - mx) / alpha).exp()).collect();
        let z: f64 = ex.iter().sum();
        v[r] = mx + alpha * z.ln();
        for a in 0..N_ACTIONS {
            let pi = ex[a] / z;
            // The elementwise min routes the derivative to the smaller net.
            if q1[r * N_ACTIONS + a] <= q2[r * N_ACTIONS + a] {
                d1[r * N_ACTIONS + a] = pi;
            } else {
                d2[r * N_ACTIONS + a] = pi;
            }
        }
    }
    Ok((v, [d1, d2]))
}

/// `L_Q` and its gradients for the Q nets `q` with targets `targ` on `d`.
pub fn q_loss(q: &[Mlp; 2], targ: &[Mlp; 2], d: &QData, gamma: f64, alpha: f64) -> Result<QLoss> {
    let n = d.n;
    let (v, _) = soft_value(targ, d.next_obs, n, alpha)?;
    let y: Vec<f64> = (0..n)
        .map(|r| d.rewards[r] + gamma * d.mask[r] * v[r])
        .collect();
    let mut loss = 0.0;
    let mut mean_q = 0.0;
    let mut out_grads = Vec::with_capacity(2);
    let mut out_caches = Vec::with_capacity(2);
    for net in q {
        let cache = net.forward(d.obs, n)?;
        let mut dy = vec![0.0; n * N_ACTIONS];
        for r in 0..n {
            let a = d.actions[r];
            let qa = cache.output()[r * N_ACTIONS + a];
            let diff = qa - y[r];
            loss += 0.5 * diff * diff / n as f64;
            mean_q += 0.5 * qa / n as f64;
            dy[r * N_ACTIONS + a] = diff / n as f64;
        }
        out_grads.push(net.backward(&cache, &dy)?.grad);
        out_caches.push(cache);
    }
    let grads: [Vec<f64>; 2] = out_grads
        .try_into()
        .map_err(|_| CoreError::Runtime("q loss: two gradients expected".into()))?;
    let caches: [Cache; 2] = out_caches
        .try_into()
        .map_err(|_| CoreError::Runtime("q loss: two caches expected".into()))?;
    Ok(QLoss {
        loss,
        grads,
        caches,
        mean_q,
    })
}

/// `c_n = Σ_i (J_{Q_i} g_i)(s_n)[a_n]`: each taken action's Q value's derivative along `g`.
pub fn q_jvp_at_actions(
    q: &[Mlp; 2],
    caches: &[Cache; 2],
    g: &[Vec<f64>; 2],
    actions: &[usize],
) -> Result<Vec<f64>> {
    let mut c = vec![0.0; actions.len()];
    for ((net, cache), gi) in q.iter().zip(caches).zip(g) {
        let rf = net.jvp(cache, gi)?;
        for (r, (cr, &a)) in c.iter_mut().zip(actions).enumerate() {
            *cr += rf.output()[r * N_ACTIONS + a];
        }
    }
    Ok(c)
}

/// `∂/∂ŝ' Σ_n w_n γ m_n V̄(ŝ'_n)` (`n × d`): how the weighted targets move with the predicted
/// next states.
pub fn value_input_grad(
    targ: &[Mlp; 2],
    next_obs: &[f64],
    n: usize,
    mask: &[f64],
    w: &[f64],
    gamma: f64,
    alpha: f64,
) -> Result<Vec<f64>> {
    let (_, dv) = soft_value(targ, next_obs, n, alpha)?;
    let mut dx = vec![0.0; next_obs.len()];
    for (net, dvi) in targ.iter().zip(&dv) {
        let mut dy = dvi.clone();
        for (r, row) in dy.chunks_exact_mut(N_ACTIONS).enumerate() {
            let c = w[r] * gamma * mask[r];
            for v in row.iter_mut() {
                *v *= c;
            }
        }
        let g = input_grad(net, next_obs, n, &dy)?;
        for (a, b) in dx.iter_mut().zip(&g) {
            *a += b;
        }
    }
    Ok(dx)
}

/// `[s, onehot(a)]` rows, the model's input.
pub fn model_input(obs: &[f64], actions: &[usize], dim: usize) -> Vec<f64> {
    let mut x = Vec::with_capacity(actions.len() * (dim + N_ACTIONS));
    for (s, &a) in obs.chunks_exact(dim).zip(actions) {
        x.extend_from_slice(s);
        for k in 0..N_ACTIONS {
            x.push(if k == a { 1.0 } else { 0.0 });
        }
    }
    x
}

/// Running sums over updates, for reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub updates: usize,
    /// Σ of the Q loss on the model's transitions (before each Q step).
    pub q_loss: f64,
    /// Σ of `mean ‖ŝ' − s'‖²` on the update's real batch (MSE of the state model, every loss).
    pub model_mse: f64,
    /// Σ of the outer loss `L_Q^real(Q⁺)` (TaskMet after warm-up, OMD).
    pub outer_loss: f64,
    pub outer_updates: usize,
    /// Σ of CG's relative residual of `H u = b` (TaskMet).
    pub cg_rel_residual: f64,
    pub cg_solves: usize,
    pub cg_breakdowns: usize,
    /// Solves that ended above `cg_rtol` (at the iteration cap), and the largest relative
    /// residual of any solve: what the run's notes report (absent from older checkpoints).
    #[serde(default)]
    pub cg_not_converged: usize,
    #[serde(default)]
    pub cg_max_residual: f64,
}

impl UpdateStats {
    /// The updates after `earlier` (a snapshot of the same run).
    pub fn since(&self, earlier: &UpdateStats) -> UpdateStats {
        UpdateStats {
            updates: self.updates.saturating_sub(earlier.updates),
            q_loss: self.q_loss - earlier.q_loss,
            model_mse: self.model_mse - earlier.model_mse,
            outer_loss: self.outer_loss - earlier.outer_loss,
            outer_updates: self.outer_updates.saturating_sub(earlier.outer_updates),
            cg_rel_residual: self.cg_rel_residual - earlier.cg_rel_residual,
            cg_solves: self.cg_solves.saturating_sub(earlier.cg_solves),
            cg_breakdowns: self.cg_breakdowns.saturating_sub(earlier.cg_breakdowns),
            cg_not_converged: self
                .cg_not_converged
                .saturating_sub(earlier.cg_not_converged),
            // A maximum does not subtract: the run's so far.
            cg_max_residual: self.cg_max_residual,
        }
    }

    fn mean(sum: f64, n: usize) -> f64 {
        if n == 0 { f64::NAN } else { sum / n as f64 }
    }

    pub fn mean_q_loss(&self) -> f64 {
        Self::mean(self.q_loss, self.updates)
    }

    pub fn mean_model_mse(&self) -> f64 {
        Self::mean(self.model_mse, self.updates)
    }

    pub fn mean_outer_loss(&self) -> f64 {
        Self::mean(self.outer_loss, self.outer_updates)
    }

    pub fn mean_cg_residual(&self) -> f64 {
        Self::mean(self.cg_rel_residual, self.cg_solves)
    }
}

/// An agent's learned state, as a checkpoint saves it ([`Agent::snapshot`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    q: [Mlp; 2],
    q_targ: [Mlp; 2],
    q_opt: [Adam; 2],
    model_s: Mlp,
    model_r: Mlp,
    opt_s: Adam,
    opt_r: Adam,
    metric: Option<(ModelMetric, Adam)>,
    stats: UpdateStats,
}

/// The agent: Q nets and targets, the model, and (TaskMet) the metric, with their optimisers.
#[derive(Debug, Clone)]
pub struct Agent {
    cfg: AgentConfig,
    dim: usize,
    q: [Mlp; 2],
    q_targ: [Mlp; 2],
    q_opt: [Adam; 2],
    model_s: Mlp,
    model_r: Mlp,
    opt_s: Adam,
    opt_r: Adam,
    metric: Option<(ModelMetric, Adam)>,
    stats: UpdateStats,
}

impl Agent {
    /// A fresh agent for observations of size `dim`, initialised from `rng`.
    pub fn new(cfg: &AgentConfig, dim: usize, rng: &mut RlRng) -> Result<Self> {
        cfg.validate()?;
        let (h, mh) = (cfg.hidden, cfg.model_hidden);
        let q1 = init_net(dim, N_ACTIONS, 3, h, 1e-2, None, rng)?;
        let q2 = init_net(dim, N_ACTIONS, 3, h, 1e-2, None, rng)?;
        let model_s = init_net(dim + N_ACTIONS, dim, 3, mh, 1e-2, None, rng)?;
        let model_r = init_net(dim + N_ACTIONS, 1, 3, mh, 1e-2, None, rng)?;
        let metric = match cfg.loss {
            ModelLoss::TaskMet => {
                let m = if cfg.global_metric {
                    ModelMetric::Global(GlobalMetric::with_floor(dim, cfg.metric_floor)?)
                } else if cfg.diagonal_metric {
                    ModelMetric::State(StateMetric::diagonal(dim, h, rng)?)
                } else {
                    ModelMetric::State(StateMetric::new(dim, h, rng)?)
                };
                let opt = Adam::new(m.n_params(), cfg.metric_lr);
                Some((m, opt))
            }
            _ => None,
        };
        let nq = q1.n_params();
        Ok(Agent {
            cfg: cfg.clone(),
            dim,
            q_targ: [q1.clone(), q2.clone()],
            q: [q1, q2],
            q_opt: [Adam::new(nq, cfg.inner_lr), Adam::new(nq, cfg.inner_lr)],
            opt_s: Adam::new(model_s.n_params(), cfg.lr),
            opt_r: Adam::new(model_r.n_params(), cfg.lr),
            model_s,
            model_r,
            metric,
            stats: UpdateStats::default(),
        })
    }

    /// What a checkpoint keeps of the agent.
    pub fn snapshot(&self) -> AgentState {
        AgentState {
            q: self.q.clone(),
            q_targ: self.q_targ.clone(),
            q_opt: self.q_opt.clone(),
            model_s: self.model_s.clone(),
            model_r: self.model_r.clone(),
            opt_s: self.opt_s.clone(),
            opt_r: self.opt_r.clone(),
            metric: self.metric.clone(),
            stats: self.stats.clone(),
        }
    }

    /// The agent a checkpoint saved, for a run of `cfg` on observations of size `dim`. Every
    /// net, optimiser and the metric must have the shapes `cfg` gives (a state read from a
    /// file is not trusted to): otherwise an error saying which part differs.
    pub fn restore(cfg: &AgentConfig, dim: usize, st: AgentState) -> Result<Self> {
        // Shapes only: the fresh agent's weights are thrown away.
        let fresh = Agent::new(cfg, dim, &mut RlRng::seed_from_u64(0))?;
        let net = |a: &Mlp, b: &Mlp| {
            a.sizes() == b.sizes()
                && a.theta().len() == b.theta().len()
                && a.output_activation() == b.output_activation()
        };
        let mut wrong = Vec::new();
        for i in 0..2 {
            if !net(&st.q[i], &fresh.q[i]) || !st.q_opt[i].fits(fresh.q[i].n_params()) {
                wrong.push(format!("Q net {i}"));
            }
            if !net(&st.q_targ[i], &fresh.q_targ[i]) {
                wrong.push(format!("target Q net {i}"));
            }
        }
        if !net(&st.model_s, &fresh.model_s) || !st.opt_s.fits(fresh.model_s.n_params()) {
            wrong.push("next-state model".into());
        }
        if !net(&st.model_r, &fresh.model_r) || !st.opt_r.fits(fresh.model_r.n_params()) {
            wrong.push("reward model".into());
        }
        let metric_ok = match (&st.metric, &fresh.metric) {
            (None, None) => true,
            (Some((m, opt)), Some((f, _))) => m.same_shape(f) && opt.fits(f.n_params()),
            _ => false,
        };
        if !metric_ok {
            wrong.push("metric".into());
        }
        if !wrong.is_empty() {
            return Err(CoreError::Data(format!(
                "agent state: {} not of this configuration's shape",
                wrong.join(", ")
            )));
        }
        Ok(Agent {
            cfg: cfg.clone(),
            dim,
            q: st.q,
            q_targ: st.q_targ,
            q_opt: st.q_opt,
            model_s: st.model_s,
            model_r: st.model_r,
            opt_s: st.opt_s,
            opt_r: st.opt_r,
            metric: st.metric,
            stats: st.stats,
        })
    }

    pub fn obs_dim(&self) -> usize {
        self.dim
    }

    pub fn stats(&self) -> &UpdateStats {
        &self.stats
    }

    /// The Q nets (online).
    pub fn q_nets(&self) -> &[Mlp; 2] {
        &self.q
    }

    /// The next-state and reward nets.
    pub fn model(&self) -> (&Mlp, &Mlp) {
        (&self.model_s, &self.model_r)
    }

    /// TaskMet's metric (`None` for the other losses).
    pub fn metric(&self) -> Option<&ModelMetric> {
        self.metric.as_ref().map(|(m, _)| m)
    }

    /// Actions for `n` observations, sampled from `softmax(½(Q_1 + Q_2)/α)` (the reference's
    /// `act` with `hard: False`).
    pub fn act_batch(&self, obs: &[f64], n: usize, rng: &mut RlRng) -> Result<Vec<usize>> {
        let q1 = self.q[0].predict(obs, n)?;
        let q2 = self.q[1].predict(obs, n)?;
        Ok((0..n)
            .map(|r| {
                let i = r * N_ACTIONS;
                let gap = 0.5 * ((q1[i + 1] + q2[i + 1]) - (q1[i] + q2[i]));
                // P(a = 1) = σ(gap/α), evaluated without overflow.
                let p1 = 1.0 / (1.0 + (-gap / self.cfg.alpha).exp());
                usize::from(rng.random::<f64>() < p1)
            })
            .collect())
    }

    /// One action for one observation.
    pub fn act(&self, obs: &[f64], rng: &mut RlRng) -> Result<usize> {
        let a = self.act_batch(obs, 1, rng)?;
        a.first()
            .copied()
            .ok_or_else(|| CoreError::Runtime("act: no action".into()))
    }

    /// One Q Adam step on `d`, then the targets' Polyak step.
    fn q_step(&mut self, d: &QData) -> Result<f64> {
        let ql = q_loss(&self.q, &self.q_targ, d, self.cfg.discount, self.cfg.alpha)?;
        for i in 0..2 {
            self.q_opt[i].step(self.q[i].theta_mut(), &ql.grads[i]);
            soft_update(&mut self.q_targ[i], &self.q[i], self.cfg.tau);
        }
        Ok(ql.loss)
    }

    /// One Adam step of both model nets on the prediction loss at `x` (state error weighted by
    /// `metric` when given, else plain squared error) plus the reward's squared error.
    fn model_fit_step(
        &mut self,
        b: &Batch,
        x: &[f64],
        metric: Option<&ModelMetricEval>,
    ) -> Result<()> {
        let n = b.n;
        let cs = self.model_s.forward(x, n)?;
        let cr = self.model_r.forward(x, n)?;
        let e: Vec<f64> = cs
            .output()
            .iter()
            .zip(&b.next_obs)
            .map(|(p, t)| p - t)
            .collect();
        self.stats.model_mse += e.iter().map(|v| v * v).sum::<f64>() / n as f64;
        let scale = 2.0 / n as f64;
        let dy_s = match metric {
            Some(ev) => ev.apply(&e, scale),
            None => e.iter().map(|v| scale * v).collect(),
        };
        let dy_r: Vec<f64> = cr
            .output()
            .iter()
            .zip(&b.rewards)
            .map(|(p, t)| scale * (p - t))
            .collect();
        let gs = self.model_s.backward(&cs, &dy_s)?.grad;
        let gr = self.model_r.backward(&cr, &dy_r)?.grad;
        if metric.is_some() && self.cfg.reference_stale_model_adam {
            // A fresh state every step (see `AgentConfig::reference_stale_model_adam`).
            Adam::new(gs.len(), self.cfg.lr).step(self.model_s.theta_mut(), &gs);
            Adam::new(gr.len(), self.cfg.lr).step(self.model_r.theta_mut(), &gr);
        } else {
            self.opt_s.step(self.model_s.theta_mut(), &gs);
            self.opt_r.step(self.model_r.theta_mut(), &gr);
        }
        Ok(())
    }

    /// `L_Q^real(Q⁺)`, and `dL/dŝ'` (`n × d`) and `dL/dr̂` (`n`) through the Q step, at the
    /// current (post-step) Q nets and targets and the model's `ŝ'` for batch `b`.
    fn outer_sensitivity(&self, b: &Batch, s_pred: &[f64]) -> Result<(f64, Vec<f64>, Vec<f64>)> {
        let (cfg, n) = (&self.cfg, b.n);
        let real = QData {
            n,
            obs: &b.obs,
            actions: &b.actions,
            rewards: &b.rewards,
            next_obs: &b.next_obs,
            mask: &b.not_done_no_max,
        };
        let out = q_loss(&self.q, &self.q_targ, &real, cfg.discount, cfg.alpha)?;
        let c = q_jvp_at_actions(&self.q, &out.caches, &out.grads, &b.actions)?;
        let w: Vec<f64> = c.iter().map(|v| v / n as f64).collect();
        let ds = value_input_grad(
            &self.q_targ,
            s_pred,
            n,
            &b.not_done_no_max,
            &w,
            cfg.discount,
            cfg.alpha,
        )?;
        Ok((out.loss, ds, w))
    }

    /// One update from the replay buffer; `update_metric`: TaskMet's metric may move (after
    /// its warm-up).
    pub fn update(
        &mut self,
        buf: &ReplayBuffer,
        rng: &mut RlRng,
        update_metric: bool,
    ) -> Result<()> {
        match self.cfg.loss {
            ModelLoss::Mse => self.update_mse(buf, rng),
            ModelLoss::Omd => self.update_omd(buf, rng),
            ModelLoss::TaskMet => self.update_taskmet(buf, rng, update_metric),
        }?;
        self.stats.updates += 1;
        Ok(())
    }

    fn model_q_step(&mut self, b: &Batch, s_pred: &[f64], r_pred: &[f64]) -> Result<()> {
        let d = QData {
            n: b.n,
            obs: &b.obs,
            actions: &b.actions,
            rewards: r_pred,
            next_obs: s_pred,
            mask: &b.not_done_no_max,
        };
        self.stats.q_loss += self.q_step(&d)?;
        Ok(())
    }

    fn update_mse(&mut self, buf: &ReplayBuffer, rng: &mut RlRng) -> Result<()> {
        let b1 = buf.sample(self.cfg.batch_size, rng);
        let x1 = model_input(&b1.obs, &b1.actions, self.dim);
        self.model_fit_step(&b1, &x1, None)?;
        let b2 = buf.sample(self.cfg.batch_size, rng);
        let x2 = model_input(&b2.obs, &b2.actions, self.dim);
        let s_pred = self.model_s.predict(&x2, b2.n)?;
        let r_pred = self.model_r.predict(&x2, b2.n)?;
        self.model_q_step(&b2, &s_pred, &r_pred)
    }

    fn update_omd(&mut self, buf: &ReplayBuffer, rng: &mut RlRng) -> Result<()> {
        let b = buf.sample(self.cfg.batch_size, rng);
        let x = model_input(&b.obs, &b.actions, self.dim);
        let cs = self.model_s.forward(&x, b.n)?;
        let cr = self.model_r.forward(&x, b.n)?;
        let s_pred = cs.output().to_vec();
        self.stats.model_mse += s_pred
            .iter()
            .zip(&b.next_obs)
            .map(|(p, t)| (p - t) * (p - t))
            .sum::<f64>()
            / b.n as f64;
        self.model_q_step(&b, &s_pred, cr.output())?;
        let (outer, ds, dr) = self.outer_sensitivity(&b, &s_pred)?;
        self.stats.outer_loss += outer;
        self.stats.outer_updates += 1;
        let gs = self.model_s.backward(&cs, &ds)?.grad;
        let gr = self.model_r.backward(&cr, &dr)?.grad;
        self.opt_s.step(self.model_s.theta_mut(), &gs);
        self.opt_r.step(self.model_r.theta_mut(), &gr);
        Ok(())
    }

    fn update_taskmet(
        &mut self,
        buf: &ReplayBuffer,
        rng: &mut RlRng,
        update_metric: bool,
    ) -> Result<()> {
        let b = buf.sample(self.cfg.batch_size, rng);
        let n = b.n;
        let x = model_input(&b.obs, &b.actions, self.dim);
        let ev = match &self.metric {
            Some((m, _)) => m.eval(&b.obs, n)?,
            None => return Err(CoreError::Runtime("taskmet agent without a metric".into())),
        };
        // Inner: the model's step under the current metric, then the Q step through it.
        self.model_fit_step(&b, &x, Some(&ev))?;
        let cs = self.model_s.forward(&x, n)?;
        let s_pred = cs.output().to_vec();
        let r_pred = self.model_r.predict(&x, n)?;
        self.model_q_step(&b, &s_pred, &r_pred)?;
        if !update_metric {
            return Ok(());
        }
        // Outer: dL/dθ_s through the Q step, then through the model fit by CG.
        let (outer, ds, dr) = self.outer_sensitivity(&b, &s_pred)?;
        self.stats.outer_loss += outer;
        self.stats.outer_updates += 1;
        let g_t = self.model_s.backward(&cs, &ds)?.grad;
        let scale = 2.0 / n as f64;
        let e: Vec<f64> = s_pred.iter().zip(&b.next_obs).map(|(p, t)| p - t).collect();
        let bwd = self.model_s.backward(&cs, &ev.apply(&e, scale))?;
        let model_s = &self.model_s;
        let hvp = |v: &[f64]| {
            let rf = model_s.jvp(&cs, v)?;
            let rdy = ev.apply(rf.output(), scale);
            model_s.hvp(&cs, &bwd, &rf, v, &rdy)
        };
        let sol = if self.cfg.normal_cg {
            // The reference's model parameters `params_T` are both nets (next state and
            // reward), and jaxopt's `solve_normal_cg` runs one CG on their joint, block-diagonal
            // Hessian: the blocks share CG's step sizes, so the reward block shapes the
            // next-state block's solution even though only the latter reaches φ.
            let model_r = &self.model_r;
            let cr = model_r.forward(&x, n)?;
            let dy_r: Vec<f64> = cr
                .output()
                .iter()
                .zip(&b.rewards)
                .map(|(p, t)| scale * (p - t))
                .collect();
            let bwd_r = model_r.backward(&cr, &dy_r)?;
            let g_r = model_r.backward(&cr, &dr)?.grad;
            let hvp_r = |v: &[f64]| {
                let rf = model_r.jvp(&cr, v)?;
                let rdy: Vec<f64> = rf.output().iter().map(|u| scale * u).collect();
                model_r.hvp(&cr, &bwd_r, &rf, v, &rdy)
            };
            joint_normal_cg(hvp, hvp_r, &g_t, &g_r, self.cfg.cg_iters, self.cfg.cg_rtol)?
        } else {
            // The reference's ridge: `param_func(x) + 1e-5·x` before the CG.
            if self.cfg.cg_stop_on_negative {
                cg::cg(hvp, &g_t, 1e-5, self.cfg.cg_iters, self.cfg.cg_rtol)?
            } else {
                cg::cg_through(hvp, &g_t, 1e-5, self.cfg.cg_iters, self.cfg.cg_rtol)?
            }
        };
        self.stats.cg_solves += 1;
        self.stats.cg_rel_residual += sol.rel_residual_h;
        // CG's own stopping test (on the system it solves: ridged, or the normal equations).
        if !sol.converged {
            self.stats.cg_not_converged += 1;
        }
        self.stats.cg_max_residual = self.stats.cg_max_residual.max(sol.rel_residual_h);
        if sol.breakdown {
            self.stats.cg_breakdowns += 1;
        }
        let ju = self.model_s.jvp(&cs, &sol.x)?;
        let a: Vec<f64> = e.iter().map(|v| scale * v).collect();
        if let Some((m, opt)) = self.metric.as_mut() {
            let g = m.backward_bilinear(&ev, &a, ju.output())?;
            let neg: Vec<f64> = g.iter().map(|v| -v).collect();
            let mut phi = m.params();
            opt.step(&mut phi, &neg);
            m.set_params(&phi)?;
        }
        Ok(())
    }
}

/// CG on the normal equations of the block-diagonal system `diag(H_s, H_r) [u_s; u_r] =
/// [g_s; g_r]` (jaxopt's `solve_normal_cg` over the reference's `params_T`, both model nets,
/// no ridge); returns the outcome with `x = u_s`, the block that reaches the metric.
fn joint_normal_cg<F, G>(
    hvp_s: F,
    hvp_r: G,
    g_s: &[f64],
    g_r: &[f64],
    iters: usize,
    rtol: f64,
) -> Result<cg::CgOutcome>
where
    F: Fn(&[f64]) -> Result<Vec<f64>>,
    G: Fn(&[f64]) -> Result<Vec<f64>>,
{
    let ns = g_s.len();
    let g: Vec<f64> = g_s.iter().chain(g_r).copied().collect();
    let joint = |v: &[f64]| {
        let (vs, vr) = v.split_at(ns);
        let mut out = hvp_s(vs)?;
        out.extend(hvp_r(vr)?);
        Ok(out)
    };
    let mut out = cg::normal_cg(joint, &g, 0.0, iters, rtol)?;
    out.x.truncate(ns);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rand_vec(n: usize, rng: &mut RlRng) -> Vec<f64> {
        (0..n).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect()
    }

    fn nets(d: usize, rng: &mut RlRng) -> ([Mlp; 2], [Mlp; 2]) {
        // Larger final gains than the defaults so Q values differ and every term matters.
        let mk = |rng: &mut RlRng| init_net(d, N_ACTIONS, 3, 8, 1.0, None, rng).unwrap();
        ([mk(rng), mk(rng)], [mk(rng), mk(rng)])
    }

    /// Every loss's update runs on random-play data with distractors, moves what it should
    /// (OMD and TaskMet: the model through the outer gradient; TaskMet: the metric only once
    /// allowed) and stays finite.
    #[test]
    fn updates_move_the_right_parameters() {
        use super::super::cartpole::{CartPole, Distractors};
        let k = 3;
        let mut env = Distractors::new(CartPole::new(0), k, 1);
        let mut buf = ReplayBuffer::new(env.obs_dim(), 1000).unwrap();
        let mut rng = RlRng::seed_from_u64(2);
        let mut obs = env.reset();
        for _ in 0..400 {
            let a = rng.random_range(0..2);
            let st = env.step(a).unwrap();
            buf.add(&obs, a, st.reward, &st.obs, st.done(), st.terminated)
                .unwrap();
            obs = if st.done() { env.reset() } else { st.obs };
        }
        // TaskMet three times: the reference's joint normal-equation CG with its figure's
        // per-dimension metric (the default), the plain CG form, and the state-conditioned
        // lower-triangular metric.
        let runs = ModelLoss::ALL.into_iter().map(|l| (l, true, true)).chain([
            (ModelLoss::TaskMet, false, true),
            (ModelLoss::TaskMet, true, false),
        ]);
        for (loss, normal_cg, global_metric) in runs {
            let cfg = AgentConfig {
                loss,
                batch_size: 64,
                normal_cg,
                global_metric,
                ..AgentConfig::default()
            };
            let mut agent = Agent::new(&cfg, env.obs_dim(), &mut rng).unwrap();
            let phi0 = agent.metric().map(|m| m.params());
            let model0 = agent.model().0.theta().to_vec();
            let q0 = agent.q_nets()[0].theta().to_vec();
            for _ in 0..3 {
                agent.update(&buf, &mut rng, false).unwrap();
            }
            if let Some(phi0) = &phi0 {
                assert_eq!(
                    &agent.metric().unwrap().params(),
                    phi0,
                    "metric moved in warm-up"
                );
            }
            for _ in 0..3 {
                agent.update(&buf, &mut rng, true).unwrap();
            }
            assert_ne!(
                agent.model().0.theta(),
                &model0[..],
                "{loss:?}: model fixed"
            );
            assert_ne!(agent.q_nets()[0].theta(), &q0[..], "{loss:?}: Q fixed");
            let st = agent.stats();
            assert_eq!(st.updates, 6);
            assert!(st.mean_q_loss().is_finite() && st.mean_model_mse().is_finite());
            match loss {
                ModelLoss::Mse => assert_eq!(st.outer_updates, 0),
                ModelLoss::Omd => assert_eq!(st.outer_updates, 6),
                ModelLoss::TaskMet => {
                    assert_eq!((st.outer_updates, st.cg_solves), (3, 3));
                    assert!(st.mean_cg_residual().is_finite());
                    let phi = agent.metric().unwrap().params();
                    assert!(phi.iter().all(|v| v.is_finite()));
                    assert_ne!(Some(phi), phi0, "metric fixed after warm-up");
                }
            }
            assert!(st.mean_outer_loss().is_finite() || loss == ModelLoss::Mse);
        }
    }

    /// The joint (state, reward) normal-CG solve: converged, its state block is the state
    /// system's own solution (the blocks decouple); with no reward gradient it is the
    /// state-only solve at any iteration cap; with one, a capped solve differs (the blocks
    /// share CG's step sizes, as in the reference).
    #[test]
    fn joint_normal_cg_blocks() {
        let mut rng = RlRng::seed_from_u64(5);
        let mat = |n: usize, shift: f64, rng: &mut RlRng| -> Vec<Vec<f64>> {
            let a: Vec<Vec<f64>> = (0..n).map(|_| rand_vec(n, rng)).collect();
            (0..n)
                .map(|i| {
                    (0..n)
                        .map(|j| {
                            (0..n).map(|k| a[i][k] * a[j][k]).sum::<f64>()
                                + if i == j { shift } else { 0.0 }
                        })
                        .collect()
                })
                .collect()
        };
        let apply = |m: &Vec<Vec<f64>>, v: &[f64]| -> Result<Vec<f64>> {
            Ok(m.iter()
                .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
                .collect())
        };
        let (hs, hr) = (mat(6, 0.5, &mut rng), mat(4, 2.0, &mut rng));
        let (gs, gr) = (rand_vec(6, &mut rng), rand_vec(4, &mut rng));
        let fs = |v: &[f64]| apply(&hs, v);
        let fr = |v: &[f64]| apply(&hr, v);
        let full = joint_normal_cg(fs, fr, &gs, &gr, 200, 1e-13).unwrap();
        let hu = apply(&hs, &full.x).unwrap();
        for (a, b) in hu.iter().zip(&gs) {
            assert!((a - b).abs() < 1e-8 * (1.0 + b.abs()), "{a} vs {b}");
        }
        let zero = vec![0.0; 4];
        let alone = cg::normal_cg(fs, &gs, 0.0, 3, 0.0).unwrap();
        let joint0 = joint_normal_cg(fs, fr, &gs, &zero, 3, 0.0).unwrap();
        assert_eq!(alone.x, joint0.x);
        let coupled = joint_normal_cg(fs, fr, &gs, &gr, 3, 0.0).unwrap();
        let diff: f64 = coupled
            .x
            .iter()
            .zip(&alone.x)
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(diff > 1e-6, "capped joint solve equals the state-only one");
    }

    /// ∇_Q L_Q against central differences of L_Q.
    #[test]
    fn q_loss_gradient_matches_finite_differences() {
        let mut rng = RlRng::seed_from_u64(0);
        let (n, d) = (6, 3);
        let (mut q, targ) = nets(d, &mut rng);
        let obs = rand_vec(n * d, &mut rng);
        let next = rand_vec(n * d, &mut rng);
        let rew = rand_vec(n, &mut rng);
        let actions: Vec<usize> = (0..n).map(|r| r % 2).collect();
        let mask: Vec<f64> = (0..n).map(|r| if r == 2 { 0.0 } else { 1.0 }).collect();
        let data = |_: ()| QData {
            n,
            obs: &obs,
            actions: &actions,
            rewards: &rew,
            next_obs: &next,
            mask: &mask,
        };
        // α = 0.5 keeps the soft value smooth at this scale.
        let (gamma, alpha) = (0.9, 0.5);
        let ql = q_loss(&q, &targ, &data(()), gamma, alpha).unwrap();
        let eps = 1e-6;
        for i in 0..2 {
            for j in 0..q[i].n_params() {
                let t0 = q[i].theta().to_vec();
                q[i].theta_mut()[j] = t0[j] + eps;
                let lp = q_loss(&q, &targ, &data(()), gamma, alpha).unwrap().loss;
                q[i].theta_mut()[j] = t0[j] - eps;
                let lm = q_loss(&q, &targ, &data(()), gamma, alpha).unwrap().loss;
                q[i].set_theta(&t0).unwrap();
                let fd = (lp - lm) / (2.0 * eps);
                assert!((fd - ql.grads[i][j]).abs() < 1e-8, "net {i} param {j}");
            }
        }
    }

    /// The hypergradient through the Q step: with g fixed,
    /// `∂/∂(ŝ', r̂) [gᵀ ∇_Q L_Q(Q; r̂, ŝ')] = −(1/N)·(c_n ∂y_n/∂(ŝ', r̂))`, i.e. what
    /// `value_input_grad` and `w` give, negated. Checked by central differences in ŝ' and r̂.
    #[test]
    fn q_step_hypergradient_matches_finite_differences() {
        let mut rng = RlRng::seed_from_u64(1);
        let (n, d) = (5, 3);
        let (q, targ) = nets(d, &mut rng);
        let obs = rand_vec(n * d, &mut rng);
        let next = rand_vec(n * d, &mut rng);
        let rew = rand_vec(n, &mut rng);
        let actions: Vec<usize> = (0..n).map(|r| (r + 1) % 2).collect();
        let mask: Vec<f64> = (0..n).map(|r| if r == 0 { 0.0 } else { 1.0 }).collect();
        let g = [
            rand_vec(q[0].n_params(), &mut rng),
            rand_vec(q[1].n_params(), &mut rng),
        ];
        let (gamma, alpha) = (0.9, 0.5);
        // F(ŝ', r̂) = gᵀ ∇_Q L_Q.
        let f = |next: &[f64], rew: &[f64]| -> f64 {
            let dd = QData {
                n,
                obs: &obs,
                actions: &actions,
                rewards: rew,
                next_obs: next,
                mask: &mask,
            };
            let ql = q_loss(&q, &targ, &dd, gamma, alpha).unwrap();
            (0..2)
                .map(|i| {
                    ql.grads[i]
                        .iter()
                        .zip(&g[i])
                        .map(|(a, b)| a * b)
                        .sum::<f64>()
                })
                .sum()
        };
        let caches = [
            q[0].forward(&obs, n).unwrap(),
            q[1].forward(&obs, n).unwrap(),
        ];
        let c = q_jvp_at_actions(&q, &caches, &g, &actions).unwrap();
        let w: Vec<f64> = c.iter().map(|v| v / n as f64).collect();
        let ds = value_input_grad(&targ, &next, n, &mask, &w, gamma, alpha).unwrap();
        let eps = 1e-6;
        for j in 0..n * d {
            let mut p = next.clone();
            p[j] += eps;
            let mut m = next.clone();
            m[j] -= eps;
            let fd = (f(&p, &rew) - f(&m, &rew)) / (2.0 * eps);
            assert!((fd + ds[j]).abs() < 1e-7, "s' {j}: fd {fd} vs {}", -ds[j]);
        }
        for r in 0..n {
            let mut p = rew.clone();
            p[r] += eps;
            let mut m = rew.clone();
            m[r] -= eps;
            let fd = (f(&next, &p) - f(&next, &m)) / (2.0 * eps);
            assert!((fd + w[r]).abs() < 1e-7, "r {r}: fd {fd} vs {}", -w[r]);
        }
        assert!(ds.iter().any(|v| v.abs() > 1e-4), "trivial check");
    }

    /// The pieces of TaskMet's implicit step on the model: the metric-weighted loss's
    /// gradient and Hessian-vector product in θ_s (against differences of the loss and of
    /// the gradient), and the mixed term ∂_φ[uᵀ∇_θ L_Λ] (against differences in φ).
    #[test]
    fn taskmet_model_terms_match_finite_differences() {
        let mut rng = RlRng::seed_from_u64(2);
        let (n, d) = (6, 3);
        let mut model = init_net(d + N_ACTIONS, d, 3, 7, 1.0, None, &mut rng).unwrap();
        let mut metric = StateMetric::new(d, 5, &mut rng).unwrap();
        let mut phi = metric.params();
        for v in phi.iter_mut() {
            *v += 0.3 * (2.0 * rng.random::<f64>() - 1.0);
        }
        metric.set_params(&phi).unwrap();
        let obs = rand_vec(n * d, &mut rng);
        let actions: Vec<usize> = (0..n).map(|r| r % 2).collect();
        let target = rand_vec(n * d, &mut rng);
        let x = model_input(&obs, &actions, d);
        let scale = 2.0 / n as f64;
        let loss = |model: &Mlp, metric: &StateMetric| -> f64 {
            let ev = metric.eval(&obs, n).unwrap();
            let p = model.predict(&x, n).unwrap();
            let e: Vec<f64> = p.iter().zip(&target).map(|(a, b)| a - b).collect();
            ev.quad(&e) / n as f64
        };
        let grad = |model: &Mlp, metric: &StateMetric| -> Vec<f64> {
            let ev = metric.eval(&obs, n).unwrap();
            let c = model.forward(&x, n).unwrap();
            let e: Vec<f64> = c.output().iter().zip(&target).map(|(a, b)| a - b).collect();
            model.backward(&c, &ev.apply(&e, scale)).unwrap().grad
        };
        let g = grad(&model, &metric);
        let eps = 1e-6;
        let theta = model.theta().to_vec();
        for j in 0..theta.len() {
            let mut t = theta.clone();
            t[j] += eps;
            model.set_theta(&t).unwrap();
            let lp = loss(&model, &metric);
            t[j] -= 2.0 * eps;
            model.set_theta(&t).unwrap();
            let lm = loss(&model, &metric);
            let fd = (lp - lm) / (2.0 * eps);
            assert!((fd - g[j]).abs() < 1e-7 * (1.0 + fd.abs()), "grad {j}");
        }
        model.set_theta(&theta).unwrap();
        // HVP.
        let v = rand_vec(theta.len(), &mut rng);
        let ev = metric.eval(&obs, n).unwrap();
        let cache = model.forward(&x, n).unwrap();
        let e: Vec<f64> = cache
            .output()
            .iter()
            .zip(&target)
            .map(|(a, b)| a - b)
            .collect();
        let bwd = model.backward(&cache, &ev.apply(&e, scale)).unwrap();
        let rf = model.jvp(&cache, &v).unwrap();
        let hv = model
            .hvp(&cache, &bwd, &rf, &v, &ev.apply(rf.output(), scale))
            .unwrap();
        let eps = 1e-5;
        let tp: Vec<f64> = theta.iter().zip(&v).map(|(t, v)| t + eps * v).collect();
        let tm: Vec<f64> = theta.iter().zip(&v).map(|(t, v)| t - eps * v).collect();
        model.set_theta(&tp).unwrap();
        let gp = grad(&model, &metric);
        model.set_theta(&tm).unwrap();
        let gm = grad(&model, &metric);
        model.set_theta(&theta).unwrap();
        for j in 0..theta.len() {
            let fd = (gp[j] - gm[j]) / (2.0 * eps);
            assert!((fd - hv[j]).abs() < 1e-6 * (1.0 + fd.abs()), "hvp {j}");
        }
        // Mixed term: φ ↦ uᵀ ∇_θ L_Λ(θ, φ).
        let u = rand_vec(theta.len(), &mut rng);
        let ju = model.jvp(&cache, &u).unwrap();
        let a: Vec<f64> = e.iter().map(|v| scale * v).collect();
        let mixed = metric.backward_bilinear(&ev, &a, ju.output()).unwrap();
        let eps = 1e-6;
        for j in 0..phi.len() {
            let mut p = phi.clone();
            p[j] += eps;
            metric.set_params(&p).unwrap();
            let fp: f64 = grad(&model, &metric)
                .iter()
                .zip(&u)
                .map(|(a, b)| a * b)
                .sum();
            p[j] -= 2.0 * eps;
            metric.set_params(&p).unwrap();
            let fm: f64 = grad(&model, &metric)
                .iter()
                .zip(&u)
                .map(|(a, b)| a * b)
                .sum();
            let fd = (fp - fm) / (2.0 * eps);
            assert!(
                (fd - mixed[j]).abs() < 1e-7 * (1.0 + fd.abs()),
                "mixed {j}: {fd} vs {}",
                mixed[j]
            );
        }
    }
}
