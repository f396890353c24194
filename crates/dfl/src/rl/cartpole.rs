//! CartPole-v1 written out (gym's `classic_control/cartpole.py`: Barto, Sutton & Anderson's
//! cart-pole with gym's constants, explicit Euler at τ = 0.02 s, termination at |x| > 2.4 or
//! |θ| > 12°, reward 1 on every step including the terminating one, `TimeLimit` of 500
//! steps), and the reference's `AddDistractors` wrapper, which appends `k` fresh i.i.d.
//! N(0, 1) values to every observation.
//!
//! gym keeps the state in f64 and hands out f32 copies; here the observation is the f64 state
//! itself (the learners are f64 throughout).

use super::RlRng;
use super::checkpoint::{EnvState, RngState};
use ferrolab_core::{CoreError, Result};
use rand::{RngExt, SeedableRng};

/// CartPole's observation size: cart position, cart velocity, pole angle, pole angular velocity.
pub const STATE_DIM: usize = 4;
/// Actions: 0 pushes the cart left, 1 right.
pub const N_ACTIONS: usize = 2;
/// CartPole-v1's `max_episode_steps`.
pub const MAX_EPISODE_STEPS: usize = 500;

/// gym's constants.
pub const GRAVITY: f64 = 9.8;
pub const MASS_CART: f64 = 1.0;
pub const MASS_POLE: f64 = 0.1;
pub const TOTAL_MASS: f64 = MASS_POLE + MASS_CART;
/// Half the pole's length.
pub const LENGTH: f64 = 0.5;
pub const POLE_MASS_LENGTH: f64 = MASS_POLE * LENGTH;
pub const FORCE_MAG: f64 = 10.0;
/// Seconds between state updates.
pub const TAU: f64 = 0.02;
/// 12 degrees, as gym writes it.
pub const THETA_THRESHOLD: f64 = 12.0 * 2.0 * std::f64::consts::PI / 360.0;
pub const X_THRESHOLD: f64 = 2.4;

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The next observation.
    pub obs: Vec<f64>,
    /// Always 1 (gym pays the terminating step too).
    pub reward: f64,
    /// The pole fell or the cart left the track.
    pub terminated: bool,
    /// The 500-step cap was reached without termination.
    pub truncated: bool,
}

impl Step {
    /// `terminated || truncated`: the episode is over.
    pub fn done(&self) -> bool {
        self.terminated || self.truncated
    }
}

/// The classic equations: one explicit-Euler step of `state` under `action` (0 left, 1 right).
/// Positions are advanced with the old velocities, as gym's `euler` integrator does.
pub fn dynamics(state: &[f64; STATE_DIM], action: usize) -> [f64; STATE_DIM] {
    let [x, x_dot, theta, theta_dot] = *state;
    let force = if action == 1 { FORCE_MAG } else { -FORCE_MAG };
    let (sintheta, costheta) = theta.sin_cos();
    let temp = (force + POLE_MASS_LENGTH * theta_dot * theta_dot * sintheta) / TOTAL_MASS;
    let thetaacc = (GRAVITY * sintheta - costheta * temp)
        / (LENGTH * (4.0 / 3.0 - MASS_POLE * costheta * costheta / TOTAL_MASS));
    let xacc = temp - POLE_MASS_LENGTH * thetaacc * costheta / TOTAL_MASS;
    [
        x + TAU * x_dot,
        x_dot + TAU * xacc,
        theta + TAU * theta_dot,
        theta_dot + TAU * thetaacc,
    ]
}

/// gym's termination test (strict inequalities).
pub fn is_terminal(state: &[f64; STATE_DIM]) -> bool {
    state[0] < -X_THRESHOLD
        || state[0] > X_THRESHOLD
        || state[2] < -THETA_THRESHOLD
        || state[2] > THETA_THRESHOLD
}

/// CartPole-v1 with its own seeded generator for resets (gym's `env.seed(seed)`).
#[derive(Debug)]
pub struct CartPole {
    state: [f64; STATE_DIM],
    steps: usize,
    /// Set once an episode ended; stepping again needs a reset.
    over: bool,
    rng: RlRng,
}

impl CartPole {
    /// An environment whose resets draw from `seed`. It must be reset before the first step.
    pub fn new(seed: u64) -> Self {
        CartPole {
            state: [0.0; STATE_DIM],
            steps: 0,
            over: true,
            rng: RlRng::seed_from_u64(seed),
        }
    }

    /// Starts an episode from a state drawn U(−0.05, 0.05) per coordinate.
    pub fn reset(&mut self) -> [f64; STATE_DIM] {
        for v in self.state.iter_mut() {
            *v = self.rng.random_range(-0.05..0.05);
        }
        self.steps = 0;
        self.over = false;
        self.state
    }

    /// Starts an episode from a given state (tests, hand-set initial conditions).
    pub fn reset_to(&mut self, state: [f64; STATE_DIM]) {
        self.state = state;
        self.steps = 0;
        self.over = false;
    }

    /// The current state.
    pub fn state(&self) -> [f64; STATE_DIM] {
        self.state
    }

    /// Steps taken in the current episode.
    pub fn episode_steps(&self) -> usize {
        self.steps
    }

    /// One step. Errors on an action other than 0 or 1, and on a step after the episode
    /// ended (gym warns and pays 0 there; here it is the caller's bug, reported).
    pub fn step(&mut self, action: usize) -> Result<Step> {
        if action >= N_ACTIONS {
            return Err(CoreError::Data(format!(
                "cartpole: action {action} is not 0 (left) or 1 (right)"
            )));
        }
        if self.over {
            return Err(CoreError::Runtime(
                "cartpole: step after the episode ended; reset first".into(),
            ));
        }
        self.state = dynamics(&self.state, action);
        self.steps += 1;
        let terminated = is_terminal(&self.state);
        let truncated = !terminated && self.steps >= MAX_EPISODE_STEPS;
        self.over = terminated || truncated;
        Ok(Step {
            obs: self.state.to_vec(),
            reward: 1.0,
            terminated,
            truncated,
        })
    }
}

/// One N(0, 1) draw (Box–Muller; the crate has no `rand_distr`).
pub fn standard_normal(rng: &mut RlRng) -> f64 {
    // 1 − U lies in (0, 1], so the log is finite.
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The reference's `AddDistractors`: every observation (reset and step) is the CartPole state
/// followed by `k` fresh i.i.d. N(0, 1) values, drawn from a generator of their own, so they
/// carry no information about the state or the future.
#[derive(Debug)]
pub struct Distractors {
    env: CartPole,
    k: usize,
    rng: RlRng,
}

impl Distractors {
    /// Wraps `env`, with distractor noise drawn from `seed`.
    pub fn new(env: CartPole, k: usize, seed: u64) -> Self {
        Distractors {
            env,
            k,
            rng: RlRng::seed_from_u64(seed),
        }
    }

    /// Distractor dimensions.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Observation size, `4 + k`.
    pub fn obs_dim(&self) -> usize {
        STATE_DIM + self.k
    }

    /// The wrapped environment.
    pub fn inner(&self) -> &CartPole {
        &self.env
    }

    /// The state a checkpoint saves: CartPole's and both random streams' positions.
    pub fn snapshot(&self) -> EnvState {
        EnvState {
            state: self.env.state,
            steps: self.env.steps,
            over: self.env.over,
            resets: RngState::of(&self.env.rng),
            noise: RngState::of(&self.rng),
        }
    }

    /// Puts the environment back where [`Distractors::snapshot`] saw it.
    pub fn restore(&mut self, st: &EnvState) -> std::result::Result<(), String> {
        self.env.rng = st.resets.rng()?;
        self.rng = st.noise.rng()?;
        self.env.state = st.state;
        self.env.steps = st.steps;
        self.env.over = st.over;
        Ok(())
    }

    fn pad(&mut self, state: &[f64]) -> Vec<f64> {
        let mut obs = Vec::with_capacity(STATE_DIM + self.k);
        obs.extend_from_slice(state);
        for _ in 0..self.k {
            obs.push(standard_normal(&mut self.rng));
        }
        obs
    }

    /// Resets the inner environment; the observation is padded.
    pub fn reset(&mut self) -> Vec<f64> {
        let s = self.env.reset();
        self.pad(&s)
    }

    /// Steps the inner environment; the observation is padded.
    pub fn step(&mut self, action: usize) -> Result<Step> {
        let mut step = self.env.step(action)?;
        step.obs = self.pad(&step.obs);
        Ok(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One step of the equations by hand, from a state where every term is non-zero:
    /// x = 0.1, ẋ = −0.2, θ = 0.05, θ̇ = 0.3, push right.
    #[test]
    fn step_matches_hand_computed_equations() {
        let s = [0.1, -0.2, 0.05, 0.3];
        let (sin, cos) = (0.05f64.sin(), 0.05f64.cos());
        // temp = (F + m_p l θ̇² sinθ) / M = (10 + 0.05·0.09·sin 0.05) / 1.1
        let temp = (10.0 + 0.05 * 0.09 * sin) / 1.1;
        // θ̈ = (g sinθ − cosθ temp) / (l (4/3 − m_p cos²θ / M))
        let thetaacc = (9.8 * sin - cos * temp) / (0.5 * (4.0 / 3.0 - 0.1 * cos * cos / 1.1));
        // ẍ = temp − m_p l θ̈ cosθ / M
        let xacc = temp - 0.05 * thetaacc * cos / 1.1;
        let want = [
            0.1 + 0.02 * -0.2,
            -0.2 + 0.02 * xacc,
            0.05 + 0.02 * 0.3,
            0.3 + 0.02 * thetaacc,
        ];
        let mut env = CartPole::new(0);
        env.reset_to(s);
        let step = env.step(1).unwrap();
        for (g, w) in step.obs.iter().zip(&want) {
            assert!((g - w).abs() < 1e-15, "{g} vs {w}");
        }
        assert_eq!(step.reward, 1.0);
        assert!(!step.terminated && !step.truncated);
        // Numerically (evaluated independently): θ̈ ≈ −13.8252, ẍ ≈ 9.7187.
        assert!((thetaacc + 13.8252).abs() < 1e-3, "{thetaacc}");
        assert!((xacc - 9.7187).abs() < 1e-3, "{xacc}");
        // Pushing left from the upright rest state: symmetric accelerations.
        let l = dynamics(&[0.0; 4], 0);
        let r = dynamics(&[0.0; 4], 1);
        assert_eq!(l[0], 0.0);
        assert!((l[1] + r[1]).abs() < 1e-15 && (l[3] + r[3]).abs() < 1e-15);
        // From rest, θ̈ = −cos0·(F/M) / (l(4/3 − m_p/M)) = −(10/1.1)/(0.5·(4/3 − 0.1/1.1)).
        let th = -(10.0 / 1.1) / (0.5 * (4.0 / 3.0 - 0.1 / 1.1));
        assert!((r[3] - 0.02 * th).abs() < 1e-14);
    }

    #[test]
    fn termination_thresholds_and_time_limit() {
        assert!((THETA_THRESHOLD - 0.20943951023931953).abs() < 1e-16);
        // Strictly beyond the thresholds only.
        assert!(!is_terminal(&[2.4, 0.0, 0.0, 0.0]));
        assert!(is_terminal(&[2.4000001, 0.0, 0.0, 0.0]));
        assert!(is_terminal(&[-2.4000001, 0.0, 0.0, 0.0]));
        assert!(!is_terminal(&[0.0, 0.0, THETA_THRESHOLD, 0.0]));
        assert!(is_terminal(&[0.0, 0.0, -THETA_THRESHOLD - 1e-9, 0.0]));
        // A step that carries x past 2.4 terminates: x + τ ẋ = 2.39 + 0.02·1 = 2.41.
        let mut env = CartPole::new(0);
        env.reset_to([2.39, 1.0, 0.0, 0.0]);
        let s = env.step(1).unwrap();
        assert!(s.terminated && !s.truncated && s.reward == 1.0);
        assert!(env.step(0).is_err(), "stepping a finished episode");
        // θ past 12° by θ̇: 0.2 + 0.02·1 > 0.2094.
        env.reset_to([0.0, 0.0, 0.2, 1.0]);
        assert!(env.step(0).unwrap().terminated);
        assert!(env.step(2).is_err());
        // The cap: hold the state near upright by alternating pushes; the 500th step truncates.
        let mut env = CartPole::new(3);
        env.reset();
        let mut steps = 0;
        loop {
            // Push toward the side the pole leans to (a simple stabilising rule).
            let s = env.state();
            let a = usize::from(s[2] + 0.5 * s[3] > 0.0);
            let st = env.step(a).unwrap();
            steps += 1;
            if st.done() {
                assert!(st.truncated && !st.terminated, "fell at step {steps}");
                break;
            }
        }
        assert_eq!(steps, MAX_EPISODE_STEPS);
    }

    #[test]
    fn reset_is_seeded_uniform() {
        let mut a = CartPole::new(5);
        let mut b = CartPole::new(5);
        for _ in 0..200 {
            let s = a.reset();
            assert_eq!(s, b.reset());
            assert!(s.iter().all(|v| (-0.05..0.05).contains(v)));
        }
        assert_ne!(CartPole::new(6).reset(), CartPole::new(5).reset());
    }

    /// Distractor coordinates: mean 0, variance 1, uncorrelated with each other and with the
    /// state coordinates and the state's next step, and fresh on every observation.
    #[test]
    fn distractors_are_standard_normal_and_independent_of_the_state() {
        let k = 8;
        let mut env = Distractors::new(CartPole::new(1), k, 2);
        assert_eq!(env.obs_dim(), 12);
        let mut rows: Vec<Vec<f64>> = Vec::new();
        let mut obs = env.reset();
        let mut pol = RlRng::seed_from_u64(3);
        while rows.len() < 20_000 {
            assert_eq!(obs.len(), 12);
            assert_eq!(&obs[..4], &env.inner().state());
            let st = env.step(pol.random_range(0..2)).unwrap();
            let mut row = obs.clone();
            // The next state's angle: a distractor must not predict it either.
            row.push(st.obs[2]);
            rows.push(row);
            obs = if st.done() { env.reset() } else { st.obs };
        }
        let n = rows.len() as f64;
        let col = |j: usize| rows.iter().map(|r| r[j]).collect::<Vec<f64>>();
        let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
        let corr = |a: &[f64], b: &[f64]| {
            let (ma, mb) = (mean(a), mean(b));
            let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
            let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
            let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
            cov / (va * vb).sqrt()
        };
        // Standard errors at n = 20000: mean 0.007, variance 0.01, correlation 0.007.
        for j in 4..4 + k {
            let c = col(j);
            let m = mean(&c);
            let var = c.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n;
            assert!(m.abs() < 0.04, "dim {j}: mean {m}");
            assert!((var - 1.0).abs() < 0.05, "dim {j}: var {var}");
            let kurt = c.iter().map(|x| (x - m).powi(4)).sum::<f64>() / n / (var * var);
            assert!((kurt - 3.0).abs() < 0.2, "dim {j}: kurtosis {kurt}");
            for other in (0..4).chain(j + 1..4 + k + 1) {
                let r = corr(&c, &col(other));
                assert!(r.abs() < 0.04, "dims {j},{other}: corr {r}");
            }
        }
        // Fresh each observation: lag-1 autocorrelation of a distractor is ≈ 0 (the state's
        // own coordinates are strongly autocorrelated).
        let c = col(4);
        assert!(corr(&c[1..], &c[..c.len() - 1]).abs() < 0.04);
        let x = col(0);
        assert!(corr(&x[1..], &x[..x.len() - 1]) > 0.5);
        // k = 0 is CartPole itself.
        let mut plain = Distractors::new(CartPole::new(1), 0, 2);
        assert_eq!(plain.reset(), CartPole::new(1).reset().to_vec());
    }
}
