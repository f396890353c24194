//! Privacy attacks on FedAvg and the differential-privacy defence (`ferrolab fedgraph
//! privacy`, FS-G's attack/defence modules).
//!
//! - **Membership inference** on the global model's outputs: the loss-threshold attack of
//!   Yeom et al. (CSF 2018): a node whose cross-entropy under the final global model (evaluated
//!   on the whole graph, as the server does) is low is guessed to be a training node. Reported
//!   as the attack's AUC over members (the training nodes of every client) against
//!   non-members (the test nodes): 0.5 = no leak, 1 = every member ranked above every
//!   non-member. The AUC is threshold-free, so it bounds what any threshold achieves.
//! - **Property inference** on client updates (passive, by the server): the output layer's
//!   bias moves by `lr · Σ_steps mean_v (y_v − p_v)`, so the class whose bias grows most is the
//!   one over-represented among the client's training labels. The attack guesses each
//!   client's majority training label as the arg-max of its update's output-bias part, every
//!   round; its success is the fraction of (client, round) guesses that are right, beside the
//!   best constant guess (`property_attack_chance`).
//! - **Defence**: a client-side (local) Gaussian mechanism: each client clips its update
//!   `Δ = θ_local − θ_global` to L2 norm `C` (`privacy.clip`) and adds `N(0, σ² C² I)` itself
//!   before sending ([`privatize`], [`dp_update`]), so the server sees every client's noised
//!   update on its own. With `fed.runtime = "nats"` the clip and the noise happen in the
//!   client processes. Each client's noise comes from its own stream: by default
//!   ([`noise_seed`], `privacy.noise = "seeded"`) derived from its client seed, σ and the
//!   round, so a study repeats bit for bit, and a server holding the seeds could regenerate
//!   and remove it: the attacks here do not, but the ε is then no guarantee against the
//!   server; `privacy.noise = "secret"` draws it from the client's own entropy
//!   ([`noise_seed_secret`]). This is not McMahan et al.'s DP-FedAvg (ICLR 2018), where the
//!   server adds noise once to the clipped sum; with local noise the average's noise falls only as `1/√n` and no
//!   client's ε improves with more clients. Every client takes part in every round (`q = 1`),
//!   the rounds compose in Rényi DP (Mironov, CSF 2017), converted to `(ε, δ)` with the bound
//!   of Balle et al. 2020 (Prop. 12 of arXiv 2004.00010; the one Opacus and Google's
//!   `dp-accounting` use). Two adjacencies are reported:
//!   - `dp_sigma<σ>_epsilon`: client level, zero-out adjacency (the client sends a zero update
//!     instead of one computed from its data, Kairouz et al. 2021): sensitivity `C`, noise
//!     multiplier `σ`.
//!   - `dp_sigma<σ>_epsilon_node`: node level, replace-one adjacency (one node of a client
//!     changed): both clipped updates have norm ≤ `C`, so they can differ by `2C`; the
//!     effective noise multiplier is `σ/2`. This is the ε the membership and property attacks
//!     probe.
//!
//! The accountant also evaluates the Poisson-subsampled Gaussian at integer orders
//! (Mironov, Talwar & Zhang 2019) for runs that sample clients; its unit tests check both
//! against values from `dp-accounting` (`bench/fedgraph_rdp_reference.py`).

use std::collections::BTreeMap;
use std::time::Instant;

use ferrolab_core::run::{Curve, Report};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::json;

use super::FedGraphError;
use super::config::FedGraphConfig;
use super::data::{GraphSet, SeedSetup};
use super::experiment::mean_std;
use super::hpo::{Ask, Dp, Federation, InProcess, LocalHp, Trainer};
use crate::params::Params;

ferrolab_core::config_section! {
    /// Privacy keys (`ferrolab fedgraph privacy`, or `task.mode = "privacy"`).
    pub struct PrivacySection {
        /// Noise multipliers σ of the DP runs (noise std σ · clip on each client update).
        pub sigmas: Vec<f64> = vec![0.4, 0.8, 1.6], "non-empty, no duplicates, each in [0.01, 1000] (a DP noise multiplier near 0 is not a defence and its ε is not finite; a duplicate would overwrite its dp_sigma keys)" => |v: &Vec<f64>| sigmas_ok(v);
        /// L2 norm every client update is clipped to in the DP runs.
        pub clip: f64 = 1.0, "in [1e-6, 1e6]" => |v| (1e-6..=1e6).contains(v);
        /// δ of the reported (ε, δ).
        pub delta: f64 = 1e-5, "in (0, 1)" => |v| *v > 0.0 && *v < 1.0;
        /// FedAvg rounds of every run (no early stopping: the final model is attacked).
        pub rounds: usize = 50, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Client learning rate.
        pub lr: f64 = 0.25, "in (0, 100]" => |v| *v > 0.0 && *v <= 100.0;
        /// Local steps per round.
        pub local_steps: usize = 4, "1..=10000" => |v| (1..=10_000).contains(v);
        /// Seeds (each draws its own node split, client split, initialisation and noise).
        pub seeds: usize = 2, "1..=100" => |v| (1..=100).contains(v);
        /// Where each client's DP noise comes from: `seeded` (its client seed, σ and the
        /// round: the study repeats bit for bit, and the server, which knows the seeds, could
        /// regenerate and remove the noise) or `secret` (the client process's own entropy,
        /// which the server cannot know; no two runs repeat).
        pub noise: String = "seeded".into(), "`seeded` or `secret`" => |v| v == "seeded" || v == "secret";
    }
}

/// `privacy.sigmas` check: the experiment is AUC and accuracy as ε varies, so at least one
/// σ; two σ with the same key would write the same `dp_sigma…` metrics.
fn sigmas_ok(v: &[f64]) -> bool {
    !v.is_empty()
        && v.iter().all(|x| (0.01..=1000.0).contains(x))
        && v.iter()
            .enumerate()
            .all(|(i, a)| v[..i].iter().all(|b| sigma_key(*a) != sigma_key(*b)))
}

// ---------------------------------------------------------------------------------------
// Rényi-DP accountant
// ---------------------------------------------------------------------------------------

/// Opacus's default orders: 1.1 … 10.9 by 0.1, then 12 … 63.
pub fn default_orders() -> Vec<f64> {
    (1..100)
        .map(|x| 1.0 + x as f64 / 10.0)
        .chain((12..64).map(f64::from))
        .collect()
}

fn log_add(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    hi + (lo - hi).exp().ln_1p()
}

fn ln_binom(n: u64, k: u64) -> f64 {
    // Σ ln over the smaller side keeps it exact enough for n ≤ a few hundred.
    let k = k.min(n - k);
    (0..k)
        .map(|i| ((n - i) as f64).ln() - ((i + 1) as f64).ln())
        .sum()
}

/// RDP of one step of the Gaussian mechanism with noise multiplier `sigma`, Poisson-sampled
/// with probability `q`, at order `alpha`. `q = 1`: `α / (2σ²)` for any order > 1; `0 < q <
/// 1`: integer orders only (`None` otherwise), by the binomial expansion of Mironov, Talwar &
/// Zhang 2019, Sec. 3.3. `q = 0` costs nothing.
pub fn rdp_sampled_gaussian(q: f64, sigma: f64, alpha: f64) -> Option<f64> {
    if !(0.0..=1.0).contains(&q) || sigma <= 0.0 || alpha <= 1.0 {
        return None;
    }
    if q == 0.0 {
        return Some(0.0);
    }
    if q == 1.0 {
        return Some(alpha / (2.0 * sigma * sigma));
    }
    if alpha.fract() != 0.0 || alpha > 10_000.0 {
        return None;
    }
    let a = alpha as u64;
    let mut log_a = f64::NEG_INFINITY;
    for k in 0..=a {
        let t = ln_binom(a, k)
            + k as f64 * q.ln()
            + (a - k) as f64 * (-q).ln_1p()
            + ((k * k) as f64 - k as f64) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, t);
    }
    Some(log_a / (alpha - 1.0))
}

/// Smallest ε over `orders` for total RDP `rdp[i]` at `orders[i]` and target `delta`, with the
/// conversion of Balle et al. 2020, Prop. 12: `ε = r + ln(1 − 1/α) − ln(δ α)/(α − 1)`
/// (orders ≤ 1.01 skipped as numerically unstable; a KL bound small enough gives 0). Returns
/// `(ε, order)`.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

/// (ε, best order) after `steps` compositions of the `q`-sampled Gaussian mechanism with noise
/// multiplier `sigma`, at `delta`, over `orders` (orders it cannot evaluate are skipped).
pub fn epsilon(q: f64, sigma: f64, steps: usize, delta: f64, orders: &[f64]) -> (f64, f64) {
    let (os, rs): (Vec<f64>, Vec<f64>) = orders
        .iter()
        .filter_map(|&a| rdp_sampled_gaussian(q, sigma, a).map(|r| (a, r * steps as f64)))
        .unzip();
    rdp_to_epsilon(&os, &rs, delta)
}

// ---------------------------------------------------------------------------------------
// Attacks
// ---------------------------------------------------------------------------------------

/// Area under the ROC curve of scores `pos` (should be high) against `neg`, ties counted
/// half (the Mann–Whitney statistic).
/// NaN when either side is empty or any score is not finite: NaN has no rank, and ranking
/// ±inf as distinct values would give a number with no meaning.
pub fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() || pos.iter().chain(neg).any(|x| !x.is_finite()) {
        return f64::NAN;
    }
    let mut all: Vec<(f64, bool)> = pos
        .iter()
        .map(|&s| (s, true))
        .chain(neg.iter().map(|&s| (s, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties (1-based).
    let mut rank_sum_pos = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_pos += avg * all[i..=j].iter().filter(|x| x.1).count() as f64;
        i = j + 1;
    }
    let (np, nn) = (pos.len() as f64, neg.len() as f64);
    (rank_sum_pos - np * (np + 1.0) / 2.0) / (np * nn)
}

/// Per-node cross-entropy of row-major `logits` (`classes` per row).
pub fn node_losses(logits: &[f32], classes: usize, nodes: &[usize], labels: &[usize]) -> Vec<f64> {
    nodes
        .iter()
        .map(|&v| {
            let row = &logits[v * classes..(v + 1) * classes];
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = m + row.iter().map(|&z| (z as f64 - m).exp()).sum::<f64>().ln();
            lse - row[labels[v]] as f64
        })
        .collect()
}

/// The loss-threshold membership-inference AUC of the global model on the whole graph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiaAuc {
    /// Members = the training nodes, non-members = the test nodes, score = −loss.
    pub plain: f64,
    /// Over same-class (member, non-member) pairs only: PyG's split takes training nodes per
    /// class and leaves the rest for testing, so the two sets have different class mixes, and
    /// a model's per-class loss levels alone move the plain AUC off 0.5.
    pub same_class: f64,
    /// Members and non-members whose loss is not finite (±inf or NaN logits). When any is,
    /// both AUCs are NaN: such a loss has no rank.
    pub nonfinite: usize,
}

/// [`MiaAuc`] of `fed`'s global model.
pub fn mia_auc(fed: &Federation) -> Result<MiaAuc, FedGraphError> {
    let whole = fed.whole();
    let z = whole.logits(&fed.model()?);
    let score = |nodes: &[usize]| -> Vec<f64> {
        node_losses(&z, whole.classes, nodes, &whole.labels)
            .into_iter()
            .map(|l| -l)
            .collect()
    };
    let (members, others) = (score(&whole.split.train), score(&whole.split.test));
    let nonfinite = members
        .iter()
        .chain(&others)
        .filter(|x| !x.is_finite())
        .count();
    let plain = auc(&members, &others);
    let (mut num, mut pairs) = (0f64, 0f64);
    for c in 0..whole.classes {
        let of = |s: &[usize]| -> Vec<usize> {
            s.iter()
                .copied()
                .filter(|&v| whole.labels[v] == c)
                .collect()
        };
        let (m, n) = (of(&whole.split.train), of(&whole.split.test));
        let w = (m.len() * n.len()) as f64;
        if w > 0.0 {
            num += w * auc(&score(&m), &score(&n));
            pairs += w;
        }
    }
    Ok(MiaAuc {
        plain,
        same_class: if pairs > 0.0 { num / pairs } else { f64::NAN },
        nonfinite,
    })
}

/// Where the output layer's bias sits in the flat parameter vector: the only parameter of
/// shape `[classes]`. The parameters carry no layer names here, so an architecture with two
/// such parameters (a hidden size equal to `classes`, GPR-GNN's `temp` of length `classes`) is
/// refused rather than attacked through the wrong slice.
fn output_bias(fed: &Federation, classes: usize) -> Result<std::ops::Range<usize>, FedGraphError> {
    let mut off = 0;
    let mut found = Vec::new();
    for (_, t) in fed.params().iter() {
        let n: usize = t.shape.iter().product();
        if t.shape == [classes] {
            found.push(off..off + n);
        }
        off += n;
    }
    if found.len() > 1 {
        return Err(FedGraphError::Usage(format!(
            "privacy: the property attack reads the output layer's bias, but model.arch has {} parameters of shape [{classes}] and the output bias cannot be told apart (change model.hidden or model.arch)",
            found.len()
        )));
    }
    found.pop().ok_or_else(|| {
        FedGraphError::Usage(format!(
            "privacy: the property attack reads the output layer's bias, but model.arch has no parameter of shape [{classes}]"
        ))
    })
}

/// The majority training label of client `c` (ties: the smaller class).
fn majority_label(fed: &Federation, c: usize, classes: usize) -> usize {
    let t = fed.task(c);
    let mut count = vec![0usize; classes];
    for &v in &t.split.train {
        count[t.labels[v]] += 1;
    }
    argmax(&count.iter().map(|&x| x as f64).collect::<Vec<_>>())
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// A standard normal draw (Box–Muller; one of the pair is dropped for simplicity).
fn normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// The client-side Gaussian mechanism on one update: clips `delta` to L2 norm `clip`, then
/// adds `N(0, (sigma·clip)²)` to every coordinate. Clipping first bounds the sensitivity the
/// accountant assumes; noise before the clip would be shrunk along with the update. Returns
/// whether the clip shortened the update.
pub fn privatize(delta: &mut [f64], clip: f64, sigma: f64, rng: &mut StdRng) -> bool {
    let norm = delta.iter().map(|x| x * x).sum::<f64>().sqrt();
    let shortened = norm > clip;
    if shortened {
        let f = clip / norm;
        delta.iter_mut().for_each(|x| *x *= f);
    }
    let std = sigma * clip;
    delta.iter_mut().for_each(|x| *x += std * normal(rng));
    shortened
}

/// The seed of the DP noise client `c` adds in its round `round` of an arm with `dp`
/// (`client_seed`: the client's own stream seed): each client noises its update with its own
/// randomness, round by round, so a client process draws what the in-process client draws.
pub fn noise_seed(client_seed: u64, dp: Option<Dp>, round: usize) -> u64 {
    let sigma = dp.map_or(0.0, |d| d.sigma);
    ferrolab_core::seed::derive(client_seed, &format!("dp_noise{sigma}/round{round}"))
}

/// A noise seed from this process's own entropy (the standard library's per-thread random
/// hash keys, drawn from the operating system, mixed with the time and the process id): what
/// `privacy.noise = "secret"` clients noise with, which no other party can regenerate.
pub fn noise_seed_secret() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

/// A client's update as it leaves the client: with `dp`, `trained − global` clipped and
/// noised by [`privatize`] (the noise from `noise_seed`), added back to `global`; without,
/// `trained` unchanged. Also returns the update's L2 norm before clipping and whether the clip
/// shortened it.
pub fn dp_update(
    global: &Params,
    trained: Params,
    dp: Option<Dp>,
    noise_seed: u64,
) -> Result<(Params, f64, bool), crate::params::ParamsError> {
    let g0 = global.to_flat();
    let mut delta: Vec<f64> = trained
        .to_flat()
        .iter()
        .zip(&g0)
        .map(|(a, b)| f64::from(*a) - f64::from(*b))
        .collect();
    let norm = delta.iter().map(|x| x * x).sum::<f64>().sqrt();
    let Some(dp) = dp else {
        return Ok((trained, norm, false));
    };
    let mut rng = StdRng::seed_from_u64(noise_seed);
    let clipped = privatize(&mut delta, dp.clip, dp.sigma, &mut rng);
    let sent: Vec<f32> = g0
        .iter()
        .zip(&delta)
        .map(|(b, d)| (f64::from(*b) + d) as f32)
        .collect();
    Ok((trained.with_flat(&sent)?, norm, clipped))
}

/// One FedAvg run of the privacy experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyRun {
    /// `None`: plain FedAvg (no clipping, no noise).
    pub sigma: Option<f64>,
    /// Client level, zero-out adjacency (noise multiplier σ), over the configured rounds.
    pub epsilon: f64,
    /// Node level, replace-one adjacency (sensitivity 2·clip: noise multiplier σ/2).
    pub epsilon_node: f64,
    pub test_accuracy: f64,
    pub val_accuracy: f64,
    pub mia_auc: f64,
    /// The membership AUC over same-class pairs (see [`mia_auc`]).
    pub mia_auc_same_class: f64,
    /// Nodes whose membership score is not finite (the AUCs are NaN then).
    pub mia_nonfinite_nodes: usize,
    pub property_attack_accuracy: f64,
    /// The best constant guess of the clients' majority labels.
    pub property_attack_chance: f64,
    /// Median L2 norm of the clients' updates before clipping.
    pub update_norm_median: f64,
    /// Share of updates the clip shortened (0 without DP).
    pub clipped_fraction: f64,
    pub rounds: usize,
    /// `(round, test_accuracy)` of the global model after each round.
    pub test_curve: Vec<(usize, f64)>,
}

/// Trains FedAvg for `p.rounds` rounds (with DP when `sigma` is set), attacks every update
/// and the final model.
pub fn run_one(
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ferrolab_graph::zoo::ZooConfig,
    weight_decay: f64,
    p: &PrivacySection,
    sigma: Option<f64>,
    seed: u64,
) -> Result<PrivacyRun, FedGraphError> {
    let fed = Federation::new(g, setup, zoo, weight_decay, seed)?;
    run_federation(fed, g.classes, zoo.dropout, p, sigma, &InProcess)
}

/// [`run_one`] on a federation built beforehand (parallel arms build theirs one after another
/// on the calling thread, so model initialisation never races between threads), its clients'
/// training (and their DP) where `trainer` runs it.
pub fn run_federation(
    mut fed: Federation,
    classes: usize,
    dropout: f64,
    p: &PrivacySection,
    sigma: Option<f64>,
    trainer: &dyn Trainer,
) -> Result<PrivacyRun, FedGraphError> {
    let bias = output_bias(&fed, classes)?;
    let truth: Vec<usize> = (0..fed.num_clients())
        .map(|c| majority_label(&fed, c, classes))
        .collect();
    let hp = LocalHp {
        lr: p.lr,
        local_steps: p.local_steps,
        dropout,
    };
    let ask = Ask {
        update_norms: true,
        dp: sigma.map(|s| Dp {
            clip: p.clip,
            sigma: s,
            secret: p.noise == "secret",
        }),
        ..Ask::default()
    };
    let (mut hits, mut guesses, mut clipped) = (0usize, 0usize, 0usize);
    let mut norms = Vec::new();
    for _ in 0..p.rounds {
        if fed.diverged {
            break;
        }
        let g0 = fed.params().to_flat();
        let fits = trainer.fit_round(&fed, &vec![hp; fed.num_clients()], ask)?;
        for f in &fits {
            norms.push(f.update_norm);
            clipped += usize::from(f.clipped);
            // The server's view: the update as sent.
            let seen: Vec<f64> = f
                .params
                .to_flat()
                .iter()
                .zip(&g0)
                .map(|(a, b)| f64::from(*a) - f64::from(*b))
                .collect();
            guesses += 1;
            if argmax(&seen[bias.clone()]) == truth[f.client] {
                hits += 1;
            }
        }
        fed.apply(fits)?;
    }
    let mut counts = vec![0usize; classes];
    for &t in &truth {
        counts[t] += 1;
    }
    let chance = counts.iter().copied().max().unwrap_or(0) as f64 / truth.len().max(1) as f64;
    norms.sort_by(f64::total_cmp);
    // Over the configured rounds, not the rounds run: a run that stopped early released less,
    // so this is the worst case, and the same on every seed.
    let eps = |m: f64| match sigma {
        Some(s) => epsilon(1.0, s / m, p.rounds, p.delta, &default_orders()).0,
        None => f64::INFINITY,
    };
    let mia = mia_auc(&fed)?;
    Ok(PrivacyRun {
        sigma,
        epsilon: eps(1.0),
        epsilon_node: eps(2.0),
        test_accuracy: fed.last.test_accuracy,
        val_accuracy: fed.last.val_accuracy,
        mia_auc: mia.plain,
        mia_auc_same_class: mia.same_class,
        mia_nonfinite_nodes: mia.nonfinite,
        property_attack_accuracy: hits as f64 / guesses.max(1) as f64,
        property_attack_chance: chance,
        update_norm_median: norms.get(norms.len() / 2).copied().unwrap_or(f64::NAN),
        clipped_fraction: if sigma.is_some() {
            clipped as f64 / guesses.max(1) as f64
        } else {
            0.0
        },
        rounds: fed.round,
        test_curve: fed.curve.iter().map(|&(r, _, t)| (r, t)).collect(),
    })
}

/// `0.8` → `0p8` (a decimal point inside a key is written `p`).
pub fn sigma_key(s: f64) -> String {
    format!("{s}").replace('.', "p").replace('-', "m")
}

/// `ferrolab fedgraph privacy`: plain FedAvg and one DP run per σ, on every seed.
pub fn run(
    g: &GraphSet,
    cfg: &Checked<FedGraphConfig>,
    ctx: &mut RunContext,
) -> SysResult<Outcome> {
    let t0 = Instant::now();
    let p = &cfg.privacy;
    let zoo = super::experiment::zoo_config(cfg, g.features.num_features(), g.classes)?;
    eprintln!(
        "{}: privacy, FedAvg {} rounds (lr {}, {} steps), {} clients, sigmas {:?}, clip {}, delta {}, {} seeds",
        g.name, p.rounds, p.lr, p.local_steps, cfg.fed.clients, p.sigmas, p.clip, p.delta, p.seeds
    );
    let arms = arms(p);
    let mut runs: BTreeMap<usize, Vec<PrivacyRun>> = BTreeMap::new();
    for s in 0..p.seeds {
        let seed = ferrolab_core::seed::derive(ctx.seed(), &format!("seed{s}"));
        let setup = SeedSetup::draw(
            g,
            &cfg.data,
            cfg.fed.clients,
            ferrolab_core::seed::derive(seed, "node_split"),
            ferrolab_core::seed::derive(seed, "client_split"),
        )?;
        let results = if cfg.fed.runtime == "nats" {
            arms_over_nats(cfg, g, &setup, &zoo, &arms, seed, s, ctx)?
        } else {
            // The arms are independent runs: one thread each, up to --threads.
            run_arms(
                g,
                &setup,
                &zoo,
                cfg.fed.weight_decay,
                p,
                &arms,
                seed,
                ctx.threads(),
                &InProcess,
            )?
        };
        for (i, r) in results.into_iter().enumerate() {
            eprintln!(
                "  seed {s} sigma {}: eps {:.2} (node level {:.2}), test {:.4}, MIA AUC {:.4} (same-class {:.4}), property attack {:.3} (chance {:.3}), update norm median {:.3}, clipped {:.2}",
                r.sigma.map_or("none".into(), |x| x.to_string()),
                r.epsilon,
                r.epsilon_node,
                r.test_accuracy,
                r.mia_auc,
                r.mia_auc_same_class,
                r.property_attack_accuracy,
                r.property_attack_chance,
                r.update_norm_median,
                r.clipped_fraction
            );
            ctx.log_metrics(&json!({
                "seed": s, "sigma": r.sigma, "epsilon": if r.epsilon.is_finite() { json!(r.epsilon) } else { json!(null) },
                "epsilon_node": if r.epsilon_node.is_finite() { json!(r.epsilon_node) } else { json!(null) },
                "mia_nonfinite_nodes": r.mia_nonfinite_nodes,
                "test_accuracy": r.test_accuracy, "mia_auc": r.mia_auc,
                "mia_auc_same_class": r.mia_auc_same_class,
                "property_attack_accuracy": r.property_attack_accuracy,
                "update_norm_median": r.update_norm_median, "rounds": r.rounds,
            }))?;
            runs.entry(i).or_default().push(r);
        }
    }
    let mut report = Report::new("fedgraph", &g.name, ctx.seed());
    let mut rows = Vec::new();
    let mut mia_curve = Vec::new();
    let mut acc_curve = Vec::new();
    for (i, arm) in arms.iter().enumerate() {
        let rs = runs.get(&i).map(Vec::as_slice).unwrap_or_default();
        let col = |f: fn(&PrivacyRun) -> f64| mean_std(&rs.iter().map(f).collect::<Vec<_>>());
        let prefix = arm.map_or(String::new(), |s| format!("dp_sigma{}_", sigma_key(s)));
        let mut put = |name: &str, (m, sd): (f64, f64)| {
            report.metrics.insert(format!("{prefix}{name}"), m);
            report.metrics.insert(format!("{prefix}{name}_std"), sd);
        };
        put("mia_auc", col(|r| r.mia_auc));
        put("mia_auc_same_class", col(|r| r.mia_auc_same_class));
        put("test_accuracy", col(|r| r.test_accuracy));
        put(
            "property_attack_accuracy",
            col(|r| r.property_attack_accuracy),
        );
        report.metrics.insert(
            format!("{prefix}mia_nonfinite_nodes"),
            rs.iter().map(|r| r.mia_nonfinite_nodes as f64).sum(),
        );
        let (eps, _) = col(|r| r.epsilon);
        let (eps_node, _) = col(|r| r.epsilon_node);
        if arm.is_some() {
            // ε is the same on every seed: it is computed over the configured rounds (see
            // run_federation), from σ and δ only.
            report.metrics.insert(format!("{prefix}epsilon"), eps);
            report
                .metrics
                .insert(format!("{prefix}epsilon_node"), eps_node);
            mia_curve.push((eps, col(|r| r.mia_auc).0));
            acc_curve.push((eps, col(|r| r.test_accuracy).0));
        } else {
            report
                .metrics
                .insert("val_accuracy".into(), col(|r| r.val_accuracy).0);
            report.metrics.insert(
                "property_attack_chance".into(),
                col(|r| r.property_attack_chance).0,
            );
        }
        rows.push(json!({
            "sigma": arm, "epsilon": arm.map(|_| eps), "epsilon_node": arm.map(|_| eps_node),
            "mia_auc": col(|r| r.mia_auc).0, "mia_auc_same_class": col(|r| r.mia_auc_same_class).0,
            "test_accuracy": col(|r| r.test_accuracy).0,
            "property_attack_accuracy": col(|r| r.property_attack_accuracy).0,
            "update_norm_median": col(|r| r.update_norm_median).0,
            "clipped_fraction": col(|r| r.clipped_fraction).0,
            "per_seed": rs.iter().map(|r| json!({
                "test_accuracy": r.test_accuracy, "mia_auc": r.mia_auc,
                "mia_auc_same_class": r.mia_auc_same_class,
                "property_attack_accuracy": r.property_attack_accuracy, "rounds": r.rounds,
            })).collect::<Vec<_>>(),
        }));
    }
    report.metrics.insert("delta".into(), p.delta);
    report.details = json!({
        "table": rows,
        "attack_mia": "loss threshold (Yeom et al. 2018) on the final global model over the whole graph; members = training nodes, non-members = test nodes",
        "attack_property": "each client's majority training label guessed as the arg-max of the output-bias part of its (noised) update, every round",
        "defence": "client-side (local) Gaussian mechanism, not McMahan et al.'s central DP-FedAvg: each client clips its update to privacy.clip and adds N(0, (sigma*clip)^2) per coordinate itself; every client every round (q = 1); RDP composed over privacy.rounds, converted to (epsilon, delta) (Balle et al. 2020)",
        "noise": if p.noise == "secret" {
            "secret: each client's noise from its own process's entropy (no other party can regenerate it; runs do not repeat)"
        } else {
            "seeded: each client's noise stream from its client seed, sigma and the round (the study repeats bit for bit; a party holding the run's seeds, the server included, could regenerate it)"
        },
        "adjacency": "dp_sigma<s>_epsilon: client level, zero-out (the client's update replaced by zero; sensitivity = clip, noise multiplier sigma). dp_sigma<s>_epsilon_node: node level, replace-one node of a client (two clipped updates differ by up to 2*clip; noise multiplier sigma/2), the adjacency the attacks probe",
    });
    report
        .timings
        .insert("total_seconds".into(), t0.elapsed().as_secs_f64());
    let mut curves = vec![
        Curve {
            label: "membership-inference AUC vs epsilon".into(),
            y_name: "mia_auc".into(),
            points: mia_curve,
        },
        Curve {
            label: "test accuracy vs epsilon".into(),
            y_name: "test_accuracy".into(),
            points: acc_curve,
        },
    ];
    for (i, arm) in arms.iter().enumerate() {
        if let Some(r0) = runs.get(&i).and_then(|rs| rs.first()) {
            curves.push(Curve {
                label: format!(
                    "test accuracy per round, {} (seed 0)",
                    arm.map_or("no DP".into(), |s| format!("sigma {s}"))
                ),
                y_name: "test_accuracy".into(),
                points: r0.test_curve.iter().map(|&(r, t)| (r as f64, t)).collect(),
            });
        }
    }
    Ok(Outcome {
        report,
        curves,
        paper: Vec::new(),
    })
}

/// The summary lines of a privacy report (`None` for other reports).
pub fn summary(o: &Outcome) -> Option<Vec<String>> {
    let r = &o.report;
    let m = &r.metrics;
    m.get("mia_auc")?;
    let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
    let mut lines = vec![
        format!("{}: FedAvg privacy (delta {})", r.dataset, get("delta")),
        format!(
            "  no DP: test {:.4}, MIA AUC {:.4} (same-class pairs {:.4}), property attack {:.3} (chance {:.3})",
            get("test_accuracy"),
            get("mia_auc"),
            get("mia_auc_same_class"),
            get("property_attack_accuracy"),
            get("property_attack_chance")
        ),
    ];
    for row in r.details.get("table")?.as_array()? {
        let Some(s) = row.get("sigma").and_then(serde_json::Value::as_f64) else {
            continue;
        };
        let p = format!("dp_sigma{}_", sigma_key(s));
        lines.push(format!(
            "  sigma {s}: epsilon {:.2} (client level, zero-out; node level {:.2}), test {:.4}, MIA AUC {:.4} (same-class pairs {:.4}), property attack {:.3}",
            get(&format!("{p}epsilon")),
            get(&format!("{p}epsilon_node")),
            get(&format!("{p}test_accuracy")),
            get(&format!("{p}mia_auc")),
            get(&format!("{p}mia_auc_same_class")),
            get(&format!("{p}property_attack_accuracy")),
        ));
    }
    Some(lines)
}

#[allow(clippy::too_many_arguments)]
fn run_arms(
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ferrolab_graph::zoo::ZooConfig,
    weight_decay: f64,
    p: &PrivacySection,
    arms: &[Option<f64>],
    seed: u64,
    workers: usize,
    trainer: &dyn Trainer,
) -> Result<Vec<PrivacyRun>, FedGraphError> {
    if !trainer.concurrent() {
        // A fabric's collections go one round at a time: the arms take turns.
        return arms
            .iter()
            .map(|&arm| {
                let fed = Federation::new(g, setup, zoo, weight_decay, seed)?;
                run_federation(fed, g.classes, zoo.dropout, p, arm, trainer)
            })
            .collect();
    }
    let feds = arms
        .iter()
        .map(|_| {
            Federation::new(g, setup, zoo, weight_decay, seed)
                .map(|f| std::sync::Mutex::new(Some(f)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let out: std::sync::Mutex<BTreeMap<usize, Result<PrivacyRun, FedGraphError>>> =
        std::sync::Mutex::new(BTreeMap::new());
    std::thread::scope(|s| {
        for _ in 0..workers.clamp(1, arms.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(&arm) = arms.get(i) else { break };
                    let Some(fed) = feds[i].lock().ok().and_then(|mut f| f.take()) else {
                        break;
                    };
                    let r = run_federation(fed, g.classes, zoo.dropout, p, arm, trainer);
                    if let Ok(mut o) = out.lock() {
                        o.insert(i, r);
                    }
                }
            });
        }
    });
    out.into_inner().unwrap_or_default().into_values().collect()
}

/// One seed's arms with the clients as `ferrolab fed client --system fedgraph` processes over
/// NATS (`fed.runtime = "nats"`): one job per seed; each client clips and noises its own
/// update before it leaves the process, so what arrives at the server (and its attacks) is
/// the noised update (with `privacy.noise = "seeded"` the server could still regenerate the
/// noise from the job's seeds; `"secret"` closes that).
#[cfg(feature = "nats")]
#[allow(clippy::too_many_arguments)]
fn arms_over_nats(
    cfg: &FedGraphConfig,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ferrolab_graph::zoo::ZooConfig,
    arms: &[Option<f64>],
    seed: u64,
    s: usize,
    ctx: &mut RunContext,
) -> Result<Vec<PrivacyRun>, FedGraphError> {
    use super::multiproc;
    use crate::fabric::ClientId;
    let (url, exe, dir, job) = multiproc::seed_job(cfg, ctx, s)?;
    let clients: Vec<ClientId> = (0..setup.clients.num_clients() as ClientId).collect();
    multiproc::run_job_with(cfg, &job, &url, &dir, &exe, |fabric, command| {
        arms_on(cfg, g, setup, zoo, arms, seed, s, fabric, &clients, command)
    })
}

/// The server of one seed's arms over `fabric` (a NATS fabric connected as the server), the
/// clients' training (and their DP) done by the processes `command(k)` starts for `spawn`
/// (none: started by hand, `ferrolab fed client --system fedgraph` on the same job file and
/// prefix); every client is shut down after. Used by `ferrolab fedgraph privacy --set
/// fed.runtime=nats` and by `ferrolab fed server --system fedgraph` on a privacy job.
#[cfg(feature = "nats")]
#[allow(clippy::too_many_arguments)]
pub fn arms_on(
    cfg: &FedGraphConfig,
    g: &GraphSet,
    setup: &SeedSetup,
    zoo: &ferrolab_graph::zoo::ZooConfig,
    arms: &[Option<f64>],
    seed: u64,
    s: usize,
    fabric: std::sync::Arc<dyn crate::fabric::Fabric>,
    spawn: &[crate::fabric::ClientId],
    command: impl FnMut(crate::fabric::ClientId) -> std::process::Command,
) -> Result<Vec<PrivacyRun>, FedGraphError> {
    let clients = setup.clients.num_clients();
    super::multiproc::serve_search(cfg, fabric, spawn, clients, s, command, |trainer| {
        run_arms(
            g,
            setup,
            zoo,
            cfg.fed.weight_decay,
            &cfg.privacy,
            arms,
            seed,
            1,
            trainer,
        )
    })
}

/// The study's arms: no DP, then each of `privacy.sigmas`.
pub fn arms(p: &PrivacySection) -> Vec<Option<f64>> {
    std::iter::once(None)
        .chain(p.sigmas.iter().map(|&s| Some(s)))
        .collect()
}

#[cfg(not(feature = "nats"))]
#[allow(clippy::too_many_arguments)]
fn arms_over_nats(
    _: &FedGraphConfig,
    _: &GraphSet,
    _: &SeedSetup,
    _: &ferrolab_graph::zoo::ZooConfig,
    _: &[Option<f64>],
    _: u64,
    _: usize,
    _: &mut RunContext,
) -> Result<Vec<PrivacyRun>, FedGraphError> {
    Err(FedGraphError::Usage(
        "fed.runtime = nats: this build has no NATS fabric (rebuild with the `nats` feature)"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// ε from Google's `dp-accounting` 0.6.0 (`RdpAccountant`, `bench/fedgraph_rdp_reference.py`).
    #[test]
    fn epsilon_matches_dp_accounting() {
        let frac = default_orders();
        let int: Vec<f64> = (2..64).map(f64::from).collect();
        let cases = [
            (1.0, 0.4, 50, &frac, 239.1605335995, 1.3),
            (1.0, 0.8, 50, &frac, 79.7100584251, 1.5),
            (1.0, 1.6, 50, &frac, 29.6529927171, 2.1),
            (1.0, 1.0, 1, &frac, 4.7285070672, 5.4),
            (0.01, 1.1, 10000, &int, 5.6543080001, 5.0),
            (0.2, 1.6, 100, &int, 7.6163761137, 4.0),
        ];
        for (q, s, steps, orders, want, order) in cases {
            let (eps, a) = epsilon(q, s, steps, 1e-5, orders);
            assert!(
                (eps - want).abs() < 1e-6 * want.max(1.0),
                "q {q} sigma {s} steps {steps}: {eps} vs {want}"
            );
            assert!((a - order).abs() < 1e-9, "order {a} vs {order}");
        }
    }

    /// q = 1: the RDP of T Gaussian steps is T α / (2σ²), and the classic conversion
    /// min_α T α/(2σ²) + ln(1/δ)/(α − 1) has the closed form ρ + 2√(ρ ln(1/δ)) + … at its
    /// continuous optimum α* = 1 + √(ln(1/δ)/ρ), ρ = T/(2σ²).
    #[test]
    fn full_participation_gaussian_closed_form() {
        let (s, t, d) = (1.3f64, 40usize, 1e-5f64);
        for a in [1.5, 2.0, 7.0, 31.0] {
            let r = rdp_sampled_gaussian(1.0, s, a).unwrap() * t as f64;
            assert!((r - t as f64 * a / (2.0 * s * s)).abs() < 1e-12);
        }
        let rho = t as f64 / (2.0 * s * s);
        let l = (1.0 / d).ln();
        let closed = rho + 2.0 * (rho * l).sqrt();
        let orders: Vec<f64> = (1..20_000).map(|i| 1.0 + i as f64 * 1e-3).collect();
        let classic = orders
            .iter()
            .map(|&a| rho * a + l / (a - 1.0))
            .fold(f64::INFINITY, f64::min);
        assert!((classic - closed).abs() < 1e-3, "{classic} vs {closed}");
        // The improved conversion never loses to the classic one.
        let (eps, _) = epsilon(1.0, s, t, d, &orders);
        assert!(eps <= classic && eps > 0.8 * classic, "{eps} vs {classic}");
    }

    #[test]
    fn epsilon_falls_with_noise_and_grows_with_rounds() {
        let o = default_orders();
        let e = |s, t| epsilon(1.0, s, t, 1e-5, &o).0;
        assert!(e(0.4, 50) > e(0.8, 50) && e(0.8, 50) > e(1.6, 50));
        assert!(e(1.0, 10) < e(1.0, 100));
        // Sampling amplifies privacy.
        let ints: Vec<f64> = (2..64).map(f64::from).collect();
        assert!(epsilon(0.1, 1.0, 100, 1e-5, &ints).0 < epsilon(1.0, 1.0, 100, 1e-5, &ints).0);
        assert!(rdp_sampled_gaussian(0.5, 1.0, 2.5).is_none());
        assert!(rdp_sampled_gaussian(1.0, 0.0, 2.0).is_none());
    }

    #[test]
    fn auc_counts_pairs_and_ties() {
        assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auc(&[1.0], &[1.0]), 0.5);
        // pos {1, 3}, neg {2, 2}: pairs won 0 + 2 of 4.
        assert_eq!(auc(&[1.0, 3.0], &[2.0, 2.0]), 0.5);
        // pos {2, 3}, neg {2, 1}: (2 vs 2) half, (2 vs 1) win, 3 wins both: 3.5 / 4.
        assert_eq!(auc(&[2.0, 3.0], &[2.0, 1.0]), 0.875);
    }

    #[test]
    fn privatize_clips_to_the_clip_norm() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut d = vec![0.0; 100];
        d[3] = 6.0;
        d[50] = -8.0;
        assert!(privatize(&mut d, 0.1, 1e-9, &mut rng));
        let n = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((n - 0.1).abs() < 1e-6, "norm {n}");
        assert!((d[3] - 0.06).abs() < 1e-6 && (d[50] + 0.08).abs() < 1e-6);
        // Inside the ball: not shortened.
        let mut small = vec![0.01; 4];
        assert!(!privatize(&mut small, 1.0, 1e-9, &mut rng));
        assert!((small[0] - 0.01).abs() < 1e-6);
    }

    #[test]
    fn privatize_noise_std_is_sigma_times_clip() {
        let mut rng = StdRng::seed_from_u64(2);
        let n = 100_000;
        let mut d = vec![0.0; n];
        assert!(!privatize(&mut d, 0.25, 2.0, &mut rng));
        let mean = d.iter().sum::<f64>() / n as f64;
        let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        assert!((sd - 0.5).abs() < 0.01, "std {sd}, want 0.5");
        assert!(mean.abs() < 0.01, "mean {mean}");
    }

    #[test]
    fn privatize_adds_noise_after_clipping() {
        // Noise first would be clipped away with the update: norm 0.1 in all. Clip first
        // leaves the full noise: norm ≈ √d · σ · clip = 100 · 0.1 = 10.
        let mut rng = StdRng::seed_from_u64(3);
        let mut d = vec![1000.0; 10_000];
        assert!(privatize(&mut d, 0.1, 1.0, &mut rng));
        let n = d.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((n - 10.0).abs() < 0.5, "norm {n}");
        // And the clipped part (0.001 per coordinate) is still there on average.
        let mean = d.iter().sum::<f64>() / d.len() as f64;
        assert!((mean - 0.001).abs() < 0.003, "mean {mean}");
    }

    #[test]
    fn node_level_epsilon_is_the_client_level_at_half_sigma() {
        let o = default_orders();
        let e = |s| epsilon(1.0, s, 30, 1e-5, &o).0;
        assert!(e(0.4) > e(0.8));
        // The reviewer's figures (quick preset, 30 rounds): σ 1.6 node level = σ 0.8.
        assert!(
            (e(1.6) - 21.1).abs() < 0.1 && (e(0.8) - 54.6).abs() < 0.1,
            "{}",
            e(1.6)
        );
        assert!((e(0.4) - 157.9).abs() < 0.1, "{}", e(0.4));
    }

    #[test]
    fn auc_of_non_finite_scores_is_nan() {
        assert!(auc(&[f64::NEG_INFINITY, 1.0], &[0.0]).is_nan());
        assert!(auc(&[1.0], &[f64::NAN]).is_nan());
        assert!(auc(&[1.0], &[f64::INFINITY, 0.0]).is_nan());
        assert!(auc(&[1.0], &[0.0]) == 1.0);
    }

    #[test]
    fn sigmas_must_be_non_empty_positive_and_distinct() {
        assert!(sigmas_ok(&[0.4, 0.8]));
        assert!(!sigmas_ok(&[]));
        assert!(!sigmas_ok(&[0.8, 0.4, 0.8]));
        assert!(!sigmas_ok(&[0.8, 0.0]));
        assert!(!sigmas_ok(&[f64::INFINITY]));
    }

    #[test]
    fn sigma_keys_use_p_for_the_point() {
        assert_eq!(sigma_key(0.8), "0p8");
        assert_eq!(sigma_key(1.6), "1p6");
        assert_eq!(sigma_key(2.0), "2");
        assert_eq!(sigma_key(0.05), "0p05");
    }
}
