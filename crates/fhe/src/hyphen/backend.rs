//! The operations an encrypted network needs, over two backends: [`Sim`] (plaintext slot
//! vectors with the same level bookkeeping, optional CKKS-sized noise per operation) and
//! [`Ckks`] (real ciphertexts, evaluation keys only). Both count every operation, so the
//! layer code that runs on ciphertexts is the code whose counts and outputs are tested.

use crate::bootstrap::Bootstrapper;
use crate::ckks::Ciphertext;
use crate::error::{FheError, Result};
use crate::eval::Evaluator;
use crate::polyeval::Chebyshev;
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::time::Instant;

/// Operation counts and wall time per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Rotation calls the algorithm issues (a step ≡ 0 included: that is how the published
    /// loop formulas count).
    pub rot_calls: u64,
    /// Rotations by a step ≡ 0 (mod n): free, no key switch.
    pub rot_trivial: u64,
    /// Rotations that shared a hoisted decomposition (counted in `rot_calls` too).
    pub rot_hoisted: u64,
    /// Plaintext multiplications.
    pub pmult: u64,
    /// Ciphertext multiplications (relinearised).
    pub cmult: u64,
    /// Rescales.
    pub rescale: u64,
    /// Bootstraps.
    pub boot: u64,
    /// Polynomial evaluations (their products are not in `cmult`).
    pub poly: u64,
    /// Seconds in rotations.
    pub t_rot: f64,
    /// Seconds in plaintext and ciphertext multiplications, rescales, additions, encodings.
    pub t_mult: f64,
    /// Seconds in bootstrapping.
    pub t_boot: f64,
    /// Extra key switches of rotations composed from other keys' steps (a rotation whose own
    /// key was not generated: power-of-two decomposition, `hyphen.md` §3.6).
    pub rot_extra: u64,
}

impl Stats {
    /// Key-switching rotations (calls minus trivial ones).
    pub fn key_switches(&self) -> u64 {
        self.rot_calls - self.rot_trivial + self.rot_extra
    }

    /// self − before, field by field.
    pub fn since(&self, before: &Stats) -> Stats {
        Stats {
            rot_calls: self.rot_calls - before.rot_calls,
            rot_trivial: self.rot_trivial - before.rot_trivial,
            rot_hoisted: self.rot_hoisted - before.rot_hoisted,
            pmult: self.pmult - before.pmult,
            cmult: self.cmult - before.cmult,
            rescale: self.rescale - before.rescale,
            boot: self.boot - before.boot,
            poly: self.poly - before.poly,
            t_rot: self.t_rot - before.t_rot,
            t_mult: self.t_mult - before.t_mult,
            t_boot: self.t_boot - before.t_boot,
            rot_extra: self.rot_extra - before.rot_extra,
        }
    }

    /// Adds `o`.
    pub fn add(&mut self, o: &Stats) {
        self.rot_calls += o.rot_calls;
        self.rot_trivial += o.rot_trivial;
        self.rot_hoisted += o.rot_hoisted;
        self.pmult += o.pmult;
        self.cmult += o.cmult;
        self.rescale += o.rescale;
        self.boot += o.boot;
        self.poly += o.poly;
        self.t_rot += o.t_rot;
        self.t_mult += o.t_mult;
        self.t_boot += o.t_boot;
        self.rot_extra += o.rot_extra;
    }
}

/// Homomorphic-style operations on slot vectors. Rotation: out[i] = x[i + step].
/// A plaintext product is not rescaled: products of one level add up first and are rescaled
/// once ([`rescale`](Backend::rescale)).
pub trait Backend {
    /// A (possibly encrypted) slot vector.
    type Ct: Clone;
    /// Slots.
    fn slots(&self) -> usize;
    /// Level left.
    fn level(&self, x: &Self::Ct) -> usize;
    /// The counters.
    fn stats(&self) -> &Stats;
    /// Several rotations of one input sharing one decomposition.
    fn rotate_many(&mut self, x: &Self::Ct, steps: &[i64]) -> Result<Vec<Self::Ct>>;
    /// One rotation.
    fn rotate(&mut self, x: &Self::Ct, step: i64) -> Result<Self::Ct>;
    /// a + b (the higher one is brought down to the lower level).
    fn add(&mut self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct>;
    /// x ⊙ v, not rescaled.
    fn mul_plain(&mut self, x: &Self::Ct, v: &[f64]) -> Result<Self::Ct>;
    /// Drops one level (divides by the last prime).
    fn rescale(&mut self, x: &Self::Ct) -> Result<Self::Ct>;
    /// x ⊙ v landing one level lower than `x` after a rescale, with the ladder scale of the
    /// level `level` (x is dropped first): used to line up terms of different depth.
    fn mul_plain_to(&mut self, x: &Self::Ct, v: &[f64], level: usize) -> Result<Self::Ct>;
    /// x + v (v at x's scale).
    fn add_plain(&mut self, x: &Self::Ct, v: &[f64]) -> Result<Self::Ct>;
    /// x², relinearised and rescaled.
    fn square(&mut self, x: &Self::Ct) -> Result<Self::Ct>;
    /// a ⊙ b, relinearised and rescaled (same level).
    fn mul(&mut self, a: &Self::Ct, b: &Self::Ct) -> Result<Self::Ct>;
    /// Refreshes the levels.
    fn bootstrap(&mut self, x: &Self::Ct) -> Result<Self::Ct>;
    /// p(x) slot-wise for a Chebyshev series (consumes `p.depth()` levels).
    fn poly(&mut self, x: &Self::Ct, p: &Chebyshev) -> Result<Self::Ct>;
}

/// Measured op latencies (seconds) per level, for a modelled latency on the simulator.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OpTimes {
    /// Parameter set the times were measured on.
    pub params: String,
    /// Threads.
    pub threads: usize,
    /// Levels at which each op was measured (ascending); between them, linear interpolation.
    pub levels: Vec<usize>,
    /// One rotation.
    pub rot: Vec<f64>,
    /// One rotation inside a hoisted batch (batch time / batch size).
    pub rot_hoisted: Vec<f64>,
    /// Encode + plaintext product.
    pub pmult: Vec<f64>,
    /// Rescale.
    pub rescale: Vec<f64>,
    /// Square + relinearise + rescale.
    pub cmult: Vec<f64>,
    /// Addition.
    pub add: Vec<f64>,
    /// One bootstrap.
    pub boot: f64,
    /// Polynomial evaluations: (degree, input level, seconds).
    pub poly: Vec<(usize, usize, f64)>,
}

impl OpTimes {
    fn at(&self, v: &[f64], level: usize) -> f64 {
        let ls = &self.levels;
        if ls.is_empty() || v.len() != ls.len() {
            return 0.0;
        }
        if level <= ls[0] {
            return v[0];
        }
        for i in 1..ls.len() {
            if level <= ls[i] {
                let f = (level - ls[i - 1]) as f64 / (ls[i] - ls[i - 1]) as f64;
                return v[i - 1] + f * (v[i] - v[i - 1]);
            }
        }
        v[v.len() - 1] * (level + 1) as f64 / (ls[ls.len() - 1] + 1) as f64
    }

    fn poly_time(&self, degree: usize, level: usize) -> f64 {
        self.poly
            .iter()
            .filter(|p| p.0 == degree)
            .min_by_key(|p| p.1.abs_diff(level))
            .map_or(0.0, |p| p.2 * (level + 1) as f64 / (p.1 + 1) as f64)
    }
}

/// A simulated ciphertext: slot values and a level.
#[derive(Debug, Clone, PartialEq)]
pub struct SimCt {
    /// Slot values.
    pub v: Vec<f64>,
    /// Level left.
    pub level: usize,
}

/// Plaintext simulation with the encrypted computation's level bookkeeping and optional
/// Gaussian noise of standard deviation `noise` added after every rescale, rotation and
/// bootstrap (CKKS's rounding and key-switching errors, measured in message units).
#[derive(Debug)]
pub struct Sim {
    n: usize,
    /// Level after a bootstrap.
    pub levels_after_boot: usize,
    /// Noise per operation (message units); 0 for exact arithmetic.
    pub noise: f64,
    /// Noise after a bootstrap (message units).
    pub boot_noise: f64,
    rng: StdRng,
    stats: Stats,
    /// Measured op latencies: when set, every op adds its modelled time to the stats.
    pub times: Option<OpTimes>,
    /// Every non-trivial rotation step issued, reduced to 0..n: the Galois keys a real run
    /// of the same computation needs.
    pub steps: std::collections::BTreeSet<i64>,
    /// How many rotations used each step (what the few extra keys beyond the powers of two
    /// are chosen by).
    pub step_uses: std::collections::BTreeMap<i64, u64>,
}

impl Sim {
    /// A simulator with n slots, exact arithmetic.
    pub fn new(n: usize, levels_after_boot: usize) -> Self {
        Sim {
            n,
            levels_after_boot,
            noise: 0.0,
            boot_noise: 0.0,
            rng: StdRng::seed_from_u64(1),
            stats: Stats::default(),
            times: None,
            steps: Default::default(),
            step_uses: Default::default(),
        }
    }

    /// Sets the per-operation noise and the bootstrap noise (message units).
    pub fn with_noise(mut self, noise: f64, boot_noise: f64, seed: u64) -> Self {
        self.noise = noise;
        self.boot_noise = boot_noise;
        self.rng = StdRng::seed_from_u64(seed);
        self
    }

    /// A fresh ciphertext at `level`.
    pub fn encrypt(&self, v: Vec<f64>, level: usize) -> SimCt {
        SimCt { v, level }
    }

    fn perturb(&mut self, v: &mut [f64], sigma: f64) {
        if sigma == 0.0 {
            return;
        }
        for x in v.iter_mut() {
            // Box–Muller.
            let u1: f64 = self.rng.random::<f64>().max(1e-300);
            let u2: f64 = self.rng.random::<f64>();
            *x += sigma * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        }
    }

    /// Sets the op latencies the simulator charges.
    pub fn with_times(mut self, times: OpTimes) -> Self {
        self.times = Some(times);
        self
    }

    fn charge(&mut self, kind: u8, which: impl Fn(&OpTimes) -> &Vec<f64>, level: usize) {
        if let Some(t) = &self.times {
            let dt = t.at(which(t), level);
            match kind {
                0 => self.stats.t_rot += dt,
                _ => self.stats.t_mult += dt,
            }
        }
    }

    fn need_level(x: &SimCt, what: &str) -> Result<()> {
        if x.level == 0 {
            return Err(FheError::Level(format!("{what} needs a level ≥ 1")));
        }
        Ok(())
    }
}

fn rot_vec(v: &[f64], step: i64) -> Vec<f64> {
    let n = v.len();
    let s = step.rem_euclid(n as i64) as usize;
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(&v[s..]);
    out.extend_from_slice(&v[..s]);
    out
}

impl Sim {
    fn rotate_inner(&mut self, x: &SimCt, step: i64, hoisted: bool) -> Result<SimCt> {
        self.stats.rot_calls += 1;
        if step.rem_euclid(self.n as i64) == 0 {
            self.stats.rot_trivial += 1;
            return Ok(x.clone());
        }
        let s = step.rem_euclid(self.n as i64);
        self.steps.insert(s);
        *self.step_uses.entry(s).or_default() += 1;
        if hoisted {
            self.charge(0, |t| &t.rot_hoisted, x.level);
        } else {
            self.charge(0, |t| &t.rot, x.level);
        }
        let mut v = rot_vec(&x.v, step);
        let sigma = self.noise;
        self.perturb(&mut v, sigma);
        Ok(SimCt { v, level: x.level })
    }
}

impl Backend for Sim {
    type Ct = SimCt;

    fn slots(&self) -> usize {
        self.n
    }

    fn level(&self, x: &SimCt) -> usize {
        x.level
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn rotate_many(&mut self, x: &SimCt, steps: &[i64]) -> Result<Vec<SimCt>> {
        let mut out = Vec::with_capacity(steps.len());
        for &s in steps {
            let mut r = self.rotate_inner(x, s, true)?;
            if s.rem_euclid(self.n as i64) != 0 {
                self.stats.rot_hoisted += 1;
            }
            // `rotate` already added noise.
            r.level = x.level;
            out.push(r);
        }
        Ok(out)
    }

    fn rotate(&mut self, x: &SimCt, step: i64) -> Result<SimCt> {
        self.rotate_inner(x, step, false)
    }

    fn add(&mut self, a: &SimCt, b: &SimCt) -> Result<SimCt> {
        self.charge(1, |t| &t.add, a.level.min(b.level));
        Ok(SimCt {
            v: a.v.iter().zip(&b.v).map(|(x, y)| x + y).collect(),
            level: a.level.min(b.level),
        })
    }

    fn mul_plain(&mut self, x: &SimCt, v: &[f64]) -> Result<SimCt> {
        self.charge(1, |t| &t.pmult, x.level);
        self.stats.pmult += 1;
        Ok(SimCt {
            v: x.v.iter().zip(v).map(|(a, b)| a * b).collect(),
            level: x.level,
        })
    }

    fn rescale(&mut self, x: &SimCt) -> Result<SimCt> {
        Self::need_level(x, "rescale")?;
        self.charge(1, |t| &t.rescale, x.level);
        self.stats.rescale += 1;
        let mut v = x.v.clone();
        let sigma = self.noise;
        self.perturb(&mut v, sigma);
        Ok(SimCt {
            v,
            level: x.level - 1,
        })
    }

    fn mul_plain_to(&mut self, x: &SimCt, v: &[f64], level: usize) -> Result<SimCt> {
        if x.level <= level {
            return Err(FheError::Level(format!(
                "mul_plain_to level {level} from level {}",
                x.level
            )));
        }
        let p = self.mul_plain(x, v)?;
        let r = self.rescale(&p)?;
        Ok(SimCt { v: r.v, level })
    }

    fn add_plain(&mut self, x: &SimCt, v: &[f64]) -> Result<SimCt> {
        Ok(SimCt {
            v: x.v.iter().zip(v).map(|(a, b)| a + b).collect(),
            level: x.level,
        })
    }

    fn square(&mut self, x: &SimCt) -> Result<SimCt> {
        let y = x.clone();
        self.mul(x, &y)
    }

    fn mul(&mut self, a: &SimCt, b: &SimCt) -> Result<SimCt> {
        Self::need_level(a, "mul")?;
        if a.level != b.level {
            return Err(FheError::Level(format!(
                "mul: operands at levels {} and {}",
                a.level, b.level
            )));
        }
        self.charge(1, |t| &t.cmult, a.level);
        self.stats.cmult += 1;
        self.stats.rescale += 1;
        let mut v: Vec<f64> = a.v.iter().zip(&b.v).map(|(x, y)| x * y).collect();
        let sigma = self.noise;
        self.perturb(&mut v, sigma);
        Ok(SimCt {
            v,
            level: a.level - 1,
        })
    }

    fn poly(&mut self, x: &SimCt, p: &Chebyshev) -> Result<SimCt> {
        if x.level < p.depth() {
            return Err(FheError::Level(format!(
                "polynomial of degree {} needs {} levels, have {}",
                p.degree(),
                p.depth(),
                x.level
            )));
        }
        self.stats.poly += 1;
        if let Some(t) = &self.times {
            self.stats.t_mult += t.poly_time(p.degree(), x.level);
        }
        let mut v: Vec<f64> = x.v.iter().map(|&t| p.eval(t)).collect();
        let sigma = self.noise;
        self.perturb(&mut v, sigma);
        Ok(SimCt {
            v,
            level: x.level - p.depth(),
        })
    }

    fn bootstrap(&mut self, x: &SimCt) -> Result<SimCt> {
        self.stats.boot += 1;
        if let Some(t) = &self.times {
            self.stats.t_boot += t.boot;
        }
        let mut v = x.v.clone();
        let sigma = self.boot_noise;
        self.perturb(&mut v, sigma);
        Ok(SimCt {
            v,
            level: self.levels_after_boot,
        })
    }
}

/// Real CKKS ciphertexts through an [`Evaluator`] (evaluation keys only: this backend has no
/// way to decrypt) and, optionally, a [`Bootstrapper`].
pub struct Ckks<'a> {
    /// The evaluator.
    pub ev: &'a Evaluator,
    /// The bootstrapper, when the chain has one.
    pub boot: Option<&'a Bootstrapper>,
    stats: Stats,
    /// For every amount r in 0..slots, the last keyed amount of a shortest composition of r
    /// from the keyed amounts (-1: not reachable): a rotation without its own key takes the
    /// fewest key switches the keys allow (at most popcount(step) with every power of two).
    via: Vec<i64>,
}

impl<'a> Ckks<'a> {
    /// A backend over `ev` (and `boot`).
    pub fn new(ev: &'a Evaluator, boot: Option<&'a Bootstrapper>) -> Self {
        Ckks {
            ev,
            boot,
            stats: Stats::default(),
            via: shortest_compositions(ev),
        }
    }

    /// The hops that make a left rotation by `step`: the step itself when its key exists,
    /// else a shortest composition of keyed amounts (rotations commute, so any order).
    pub fn hops(&self, step: i64) -> Result<Vec<i64>> {
        let n = self.slots() as i64;
        let mut left = step.rem_euclid(n);
        let mut out = Vec::new();
        while left != 0 {
            let k = self.via.get(left as usize).copied().unwrap_or(-1);
            if k <= 0 {
                return Err(FheError::MissingGaloisKey {
                    what: format!(
                        "rotation by {step} (no key for it, nor keys it can be composed from)"
                    ),
                    galois_element: crate::ckks::galois_element(self.ev.context(), step),
                });
            }
            out.push(k);
            left = (left - k).rem_euclid(n);
        }
        // The largest hop first: it is the one shared by a hoisted batch.
        out.sort_unstable_by(|a, b| b.cmp(a));
        Ok(out)
    }

    fn to_c64(v: &[f64]) -> Vec<crate::C64> {
        v.iter().map(|&x| crate::C64::real(x)).collect()
    }

    fn align(&self, a: &Ciphertext, b: &Ciphertext) -> Result<(Ciphertext, Ciphertext)> {
        use std::cmp::Ordering::*;
        Ok(match a.level.cmp(&b.level) {
            Equal => (a.clone(), b.clone()),
            Greater => (self.ev.adjust_to(a, b.level, b.scale)?, b.clone()),
            Less => (a.clone(), self.ev.adjust_to(b, a.level, a.scale)?),
        })
    }
}

/// The rotation keys a client generates for `slots` slots when it does not know the network
/// (`hyphen.md` §3.6): every power of two below `slots`, plus the `extra` amounts that `uses`
/// (step → rotations by it) says are the most frequent; every other amount is composed from
/// these by [`Ckks`]. Ascending.
pub fn key_steps(
    slots: usize,
    uses: &std::collections::BTreeMap<i64, u64>,
    extra: usize,
) -> Vec<i64> {
    let n = slots as i64;
    let mut out: Vec<i64> = (0..).map(|i| 1i64 << i).take_while(|&p| p < n).collect();
    let mut by_use: Vec<(i64, u64)> = uses
        .iter()
        .map(|(&s, &c)| (s.rem_euclid(n), c))
        .filter(|&(s, _)| s != 0 && !out.contains(&s))
        .collect();
    // Most used first; ties by step so the choice is deterministic.
    by_use.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    out.extend(by_use.into_iter().take(extra).map(|(s, _)| s));
    out.sort_unstable();
    out.dedup();
    out
}

/// Breadth-first search over Z_slots from 0 with the keyed amounts as moves: for each
/// residue, the last move of a shortest path (a rotation's key has the amount whose Galois
/// element 5^s mod 2N it holds; found by one walk of the powers of 5).
fn shortest_compositions(ev: &Evaluator) -> Vec<i64> {
    let ctx = ev.context();
    let keys = &ev.keys().galois.keys;
    let n = ctx.slots();
    let two_n = 2 * ctx.n as u64;
    let mut g = 1u64;
    let mut keyed = Vec::new();
    for s in 0..n {
        if s > 0 && keys.contains_key(&(g as usize)) {
            keyed.push(s);
        }
        g = g * 5 % two_n;
    }
    // Exact steps first: a keyed amount is always its own single hop.
    let mut via = vec![-1i64; n];
    via[0] = 0;
    let mut frontier = vec![0usize];
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for &r in &frontier {
            for &k in &keyed {
                let t = (r + k) % n;
                if via[t] < 0 {
                    via[t] = k as i64;
                    next.push(t);
                }
            }
        }
        frontier = next;
    }
    via
}

impl Backend for Ckks<'_> {
    type Ct = Ciphertext;

    fn slots(&self) -> usize {
        self.ev.context().slots()
    }

    fn level(&self, x: &Ciphertext) -> usize {
        x.level
    }

    fn stats(&self) -> &Stats {
        &self.stats
    }

    fn rotate_many(&mut self, x: &Ciphertext, steps: &[i64]) -> Result<Vec<Ciphertext>> {
        let t = Instant::now();
        let n = self.slots() as i64;
        let nontrivial = steps.iter().filter(|s| s.rem_euclid(n) != 0).count() as u64;
        // The first hop of every rotation shares the hoisted decomposition; the remaining
        // hops of a composed rotation are plain key switches on its result.
        let plans = steps
            .iter()
            .map(|&s| self.hops(s))
            .collect::<Result<Vec<_>>>()?;
        let first: Vec<i64> = plans
            .iter()
            .map(|h| h.first().copied().unwrap_or(0))
            .collect();
        let mut out = self.ev.rotate_hoisted(x, &first)?;
        for (o, h) in out.iter_mut().zip(&plans) {
            for &k in h.iter().skip(1) {
                *o = self.ev.rotate(o, k)?;
                self.stats.rot_extra += 1;
            }
        }
        self.stats.rot_calls += steps.len() as u64;
        self.stats.rot_trivial += steps.len() as u64 - nontrivial;
        self.stats.rot_hoisted += nontrivial;
        self.stats.t_rot += t.elapsed().as_secs_f64();
        Ok(out)
    }

    fn rotate(&mut self, x: &Ciphertext, step: i64) -> Result<Ciphertext> {
        let t = Instant::now();
        self.stats.rot_calls += 1;
        if step.rem_euclid(self.slots() as i64) == 0 {
            self.stats.rot_trivial += 1;
            return Ok(x.clone());
        }
        let hops = self.hops(step)?;
        let mut r = self.ev.rotate(x, hops[0])?;
        for &k in &hops[1..] {
            r = self.ev.rotate(&r, k)?;
            self.stats.rot_extra += 1;
        }
        self.stats.t_rot += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn add(&mut self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let t = Instant::now();
        let (a, b) = self.align(a, b)?;
        let r = self.ev.add(&a, &b)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn mul_plain(&mut self, x: &Ciphertext, v: &[f64]) -> Result<Ciphertext> {
        let t = Instant::now();
        self.stats.pmult += 1;
        // Encoded so that one rescale lands the product on the ladder.
        let scale = self.ev.rescale_target(x);
        let pt = self.ev.context().encode(&Self::to_c64(v), x.level, scale)?;
        let r = self.ev.mul_plain(x, &pt)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn rescale(&mut self, x: &Ciphertext) -> Result<Ciphertext> {
        let t = Instant::now();
        self.stats.rescale += 1;
        let r = self.ev.rescale(x)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn mul_plain_to(&mut self, x: &Ciphertext, v: &[f64], level: usize) -> Result<Ciphertext> {
        if x.level <= level {
            return Err(FheError::Level(format!(
                "mul_plain_to level {level} from level {}",
                x.level
            )));
        }
        let t = Instant::now();
        self.stats.pmult += 1;
        self.stats.rescale += 1;
        let ctx = self.ev.context().clone();
        let d = self.ev.drop_to_level(x, level + 1)?;
        let scale = ctx.scale_at(level) * ctx.q[level + 1] as f64 / d.scale;
        let pt = ctx.encode(&Self::to_c64(v), level + 1, scale)?;
        let r = self.ev.rescale(&self.ev.mul_plain(&d, &pt)?)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn add_plain(&mut self, x: &Ciphertext, v: &[f64]) -> Result<Ciphertext> {
        let t = Instant::now();
        let pt = self
            .ev
            .context()
            .encode(&Self::to_c64(v), x.level, x.scale)?;
        let r = self.ev.add_plain(x, &pt)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn square(&mut self, x: &Ciphertext) -> Result<Ciphertext> {
        let t = Instant::now();
        self.stats.cmult += 1;
        self.stats.rescale += 1;
        let r = self.ev.square_rescale(x)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn mul(&mut self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let t = Instant::now();
        self.stats.cmult += 1;
        self.stats.rescale += 1;
        let (a, b) = self.align(a, b)?;
        let r = self.ev.mul_relin_rescale(&a, &b)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn poly(&mut self, x: &Ciphertext, p: &Chebyshev) -> Result<Ciphertext> {
        let t = Instant::now();
        self.stats.poly += 1;
        let r = self.ev.eval_chebyshev(x, p)?;
        self.stats.t_mult += t.elapsed().as_secs_f64();
        Ok(r)
    }

    fn bootstrap(&mut self, x: &Ciphertext) -> Result<Ciphertext> {
        let bt = self.boot.ok_or_else(|| {
            FheError::InvalidParams("this parameter set has no bootstrapping keys".into())
        })?;
        let t = Instant::now();
        self.stats.boot += 1;
        let r = bt.bootstrap(self.ev, x)?;
        self.stats.t_boot += t.elapsed().as_secs_f64();
        Ok(r)
    }
}
