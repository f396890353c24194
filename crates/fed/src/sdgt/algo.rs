//! SD-GT and its baselines as one [`Client`] and one [`Strategy`], so that every algorithm runs
//! the same code path over any [`Fabric`].
//!
//! Per global round (reference `functions/SemiFL_NN.py`, γ the step size, T local steps):
//! - **SD-GT** (`SemiFLGT2_NN`): every device runs T steps of
//!   `x^{t+½} = x^t − γ(g + y + z)`, `d = x^{t+½} − x^t + γy`,
//!   `z̃ += (d − Σ_j W_ij d_j)/(Tγ)`, `x^{t+1} = Σ_j W_ij x_j^{t+½}` (z fixed within the round,
//!   `z ← z̃` for every device at its end); `Δ = x^T − x^0 + Tγy`; the server samples s devices
//!   per subnet, `x̄ += mean Δ`, `y_c = (Δ̄_c − Δ̄)/(Tγ)` (overwritten each round); only the
//!   sampled devices receive `x̄` and `y_c`, the others keep their own x and old y.
//! - **SD-FedAvg** (`SemiFL_NN`): T steps of SGD each followed by D2D mixing; `x̄` = mean of the
//!   sampled devices' models, sent back to the sampled devices only.
//! - **SCAFFOLD** (`SCAFFOLD_NN`, single tier): s devices per subnet start from `x̄`, run T
//!   steps of `x −= γ(g − c_i + c)`, `c_i⁺ = c_i − c + (x̄ − x)/(Tγ)`; the server adds the mean
//!   model change and `|S|/N` times the mean control change. The reference sums model changes
//!   over all N devices, unsampled ones contributing their stale models; we average over the
//!   sampled devices as SCAFFOLD's paper does (global step 1).
//! - **GT** (ours, no server): DIGing-style gradient tracking over one connected D2D graph of all
//!   devices, `x⁺ = Σ W x − γv`, `v⁺ = Σ W v + g(x⁺) − g(x)`, T steps per "round"; the server
//!   only reads the models to evaluate their mean (not counted as communication).
//! - **FedAvg**: the sampled devices start from `x̄`, T SGD steps, `x̄` = their mean.
//!
//! Every mean is over device ids in ascending order with equal weights (the reference's
//! convention), so results do not depend on which fabric carried the replies.

use super::costmodel::{CostModel, Observed};
use super::model::{FlatModel, Samples};
use crate::client::{Client, ClientCtx, ClientError, FitIns, FitRes};
use crate::fabric::{ClientId, Config, ExchangeKey, Failure, Metrics};
use crate::params::Params;
use crate::strategy::{Strategy, StrategyError, mean_flat};
use crate::topology::Topology;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The algorithms, by their config and report names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Algo {
    /// Semi-decentralised gradient tracking (ours).
    SdGt,
    /// Semi-decentralised FedAvg (the paper's SD-FL baseline).
    SdFedAvg,
    /// SCAFFOLD as the reference runs it (single tier, s devices per subnet).
    Scaffold,
    /// Decentralised gradient tracking, no server.
    Gt,
    /// Plain FedAvg over s devices per subnet.
    FedAvg,
}

/// Names `fed.algorithms` accepts.
pub const ALGO_NAMES: [&str; 5] = ["sdgt", "sd_fedavg", "scaffold", "gt", "fedavg"];

impl Algo {
    /// From a config name.
    pub fn parse(s: &str) -> Option<Algo> {
        Some(match s {
            "sdgt" => Algo::SdGt,
            "sd_fedavg" => Algo::SdFedAvg,
            "scaffold" => Algo::Scaffold,
            "gt" => Algo::Gt,
            "fedavg" => Algo::FedAvg,
            _ => return None,
        })
    }
    /// Config and report name.
    pub fn key(self) -> &'static str {
        match self {
            Algo::SdGt => "sdgt",
            Algo::SdFedAvg => "sd_fedavg",
            Algo::Scaffold => "scaffold",
            Algo::Gt => "gt",
            Algo::FedAvg => "fedavg",
        }
    }
    /// Whether every device trains every round with D2D mixing (else only sampled ones, alone).
    pub fn uses_d2d(self) -> bool {
        matches!(self, Algo::SdGt | Algo::SdFedAvg | Algo::Gt)
    }
    /// Model-sized vectors each device sends each neighbour per mixing step.
    pub fn vectors_per_mix(self) -> usize {
        match self {
            Algo::SdGt | Algo::Gt => 2,
            Algo::SdFedAvg => 1,
            Algo::Scaffold | Algo::FedAvg => 0,
        }
    }
    /// Model-sized vectors the server sends each device it addresses, and receives back.
    pub fn server_vectors(self) -> (usize, usize) {
        match self {
            Algo::SdGt => (2, 1),
            Algo::SdFedAvg | Algo::FedAvg => (1, 1),
            Algo::Scaffold => (2, 2),
            Algo::Gt => (0, 0),
        }
    }
}

/// Deterministic minibatches of one device: epoch `e` visits the device's rows in a permutation
/// seeded by `(seed, device, e)`, so batch `k` depends only on `k` (resumable without RNG state).
#[derive(Debug, Clone)]
pub struct Sampler {
    rows: Vec<usize>,
    seed: u64,
    cache: Option<(u64, Vec<usize>)>,
}

impl Sampler {
    /// Batches over `rows`.
    pub fn new(rows: Vec<usize>, seed: u64, device: u32) -> Self {
        Sampler {
            rows,
            seed: ferrolab_core::seed::derive(seed, &format!("batches/{device}")),
            cache: None,
        }
    }

    /// Rows of batch `k` of size `b`.
    pub fn batch(&mut self, k: u64, b: usize) -> Vec<usize> {
        let n = self.rows.len().max(1) as u64;
        (0..b as u64)
            .map(|j| {
                let p = k * b as u64 + j;
                let (e, off) = (p / n, (p % n) as usize);
                if self.cache.as_ref().is_none_or(|(ce, _)| *ce != e) {
                    let mut perm = self.rows.clone();
                    perm.shuffle(&mut StdRng::seed_from_u64(
                        self.seed ^ e.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    ));
                    self.cache = Some((e, perm));
                }
                self.cache.as_ref().map_or(0, |(_, p)| p[off])
            })
            .collect()
    }
}

/// One device's persistent state (lives on its client across rounds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// Device id.
    pub id: u32,
    /// Local model.
    pub x: Vec<f32>,
    /// SD-GT: global tracking term y (last y_c received); GT: the gradient tracker v.
    pub y: Vec<f32>,
    /// SD-GT: subnet tracking term z.
    pub z: Vec<f32>,
    /// SCAFFOLD: control variate c_i; GT: the previous stochastic gradient.
    pub c: Vec<f32>,
    /// Minibatches drawn so far.
    pub steps: u64,
}

/// Hyper-parameters carried in every task's config.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// Algorithm.
    pub algo: Algo,
    /// Step size γ.
    pub lr: f64,
    /// Local steps (D2D rounds) per global round.
    pub t: usize,
    /// Minibatch size.
    pub batch: usize,
}

fn ids(cfg: &Config, key: &str) -> BTreeSet<u32> {
    cfg.get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64().map(|u| u as u32))
                .collect()
        })
        .unwrap_or_default()
}

/// The tensor `name` of `p`, checked to hold `dim` values (borrowed: the D2D mixing reads each
/// neighbour's vector once and must not copy it).
fn view<'a>(p: &'a Params, name: &str, dim: usize) -> Result<&'a [f32], ClientError> {
    let t = p
        .get(name)
        .ok_or_else(|| ClientError(format!("task lacks tensor `{name}`")))?;
    if t.data.len() != dim {
        return Err(ClientError(format!(
            "tensor `{name}` has {} values, expected {dim}",
            t.data.len()
        )));
    }
    Ok(&t.data)
}

/// The tensors `names` of `p`, each checked to hold `dim` values, borrowed.
fn view_all<'p>(p: &'p Params, names: &[&str], dim: usize) -> Result<Vec<&'p [f32]>, ClientError> {
    names.iter().map(|n| view(p, n, dim)).collect()
}

fn take(p: &Params, name: &str, dim: usize) -> Result<Vec<f32>, ClientError> {
    view(p, name, dim).map(<[f32]>::to_vec)
}

/// `dst ← src`, in `dst`'s own allocation when it has room.
fn refill(dst: &mut Vec<f32>, src: &[f32]) {
    dst.clear();
    dst.extend_from_slice(src);
}

/// Elements per block of the mixing sums: 8 KiB of f32, so a block of the sum stays in L1
/// while every neighbour's block is added to it.
const BLOCK: usize = 2048;

/// `Σ_j w_j v_j[i]` over the block `[s, e)` of the `(w_j, v_j)` in `terms`, into `acc`
/// (`e − s` long), accumulated per element in `terms`' order from 0: the same sum, bit for
/// bit, as one full pass per neighbour into a zeroed vector. `0.0 + w·b` is what such an
/// accumulator holds after its first term (signed zeros included), without writing zeros
/// first.
#[inline]
fn block_sum(terms: &[(f32, &[f32])], s: usize, e: usize, acc: &mut [f32]) {
    match terms.split_first() {
        Some(((w, v), rest)) => {
            for (a, b) in acc.iter_mut().zip(&v[s..e]) {
                *a = 0.0 + w * b;
            }
            for (w, v) in rest {
                for (a, b) in acc.iter_mut().zip(&v[s..e]) {
                    *a += w * b;
                }
            }
        }
        None => acc.fill(0.0),
    }
}

/// `out ← Σ_j w_j v_j` over `terms` (every `v_j` at least `out.len()` long), a cache-sized
/// block at a time so the output is written to memory once instead of once per neighbour;
/// per element the same sum as one full pass per neighbour (see [`block_sum`]). D2D mixing
/// of a CNN-sized vector was most of an SD-GT round's runtime overhead.
fn weighted_sum(terms: &[(f32, &[f32])], out: &mut [f32]) {
    let n = out.len();
    let mut s = 0;
    while s < n {
        let e = (s + BLOCK).min(n);
        block_sum(terms, s, e, &mut out[s..e]);
        s = e;
    }
}

/// SD-GT's subnet-tracking update `z ← base + (d_i − Σ_j W_ij d_j)/(Tγ)` (`base` is the
/// device's z at the first step of a round, `z` itself after), fused with the mixing sum:
/// `Σ_j W_ij d_j` is accumulated a block at a time on the stack and used at once, so it is
/// never written to memory and read back. Per element the same operations in the same order
/// as [`weighted_sum`] followed by `z += (d − Wd)/tg`, so the same bits.
fn z_update(terms: &[(f32, &[f32])], own: &[f32], tg: f32, base: Option<&[f32]>, z: &mut [f32]) {
    let n = z.len();
    let own = &own[..n];
    let base = base.map(|b| &b[..n]);
    let mut acc = [0f32; BLOCK];
    let mut s = 0;
    while s < n {
        let e = (s + BLOCK).min(n);
        let m = &mut acc[..e - s];
        block_sum(terms, s, e, m);
        let zs = z[s..e].iter_mut().zip(&own[s..e]).zip(m.iter());
        match base {
            Some(b) => zs
                .zip(&b[s..e])
                .for_each(|(((z, d), m), b)| *z = b + (d - m) / tg),
            None => zs.for_each(|((z, d), m)| *z += (d - m) / tg),
        }
        s = e;
    }
}

/// SD-GT's half step for one device, both outputs in one pass over its vectors:
/// `xh = x − γ(g + y + z)`, `d = xh − x + γy` (the same expressions, evaluated in the same
/// order, as two separate passes).
#[inline(always)]
fn sdgt_half_step(
    x: &[f32],
    g: &[f32],
    y: &[f32],
    z: &[f32],
    gamma: f32,
    xh: &mut [f32],
    d: &mut [f32],
) {
    let n = x.len();
    let (g, y, z, xh, d) = (&g[..n], &y[..n], &z[..n], &mut xh[..n], &mut d[..n]);
    for i in 0..n {
        let h = x[i] - gamma * (g[i] + y[i] + z[i]);
        xh[i] = h;
        d[i] = h - x[i] + gamma * y[i];
    }
}

/// `out ← Σ_j w_j src_j` over `w = [(j, w_j)]`, where `src_j` is `src[j·stride ..][..len]`:
/// [`block_sum`] over one block of several devices' vectors kept side by side in a scratch
/// buffer (same order, same first term `0.0 + w·b`, so the same bits).
#[inline(always)]
fn strided_sum(w: &[(usize, f64)], src: &[f32], stride: usize, out: &mut [f32]) {
    let len = out.len();
    match w.split_first() {
        Some((&(j, wj), rest)) => {
            let wj = wj as f32;
            for (o, b) in out.iter_mut().zip(&src[j * stride..][..len]) {
                *o = 0.0 + wj * b;
            }
            for &(j, wj) in rest {
                let wj = wj as f32;
                for (o, b) in out.iter_mut().zip(&src[j * stride..][..len]) {
                    *o += wj * b;
                }
            }
        }
        None => out.fill(0.0),
    }
}

/// SD-GT's tracking terms of a subnet's devices for [`subnet_step`], by local index.
struct Trackers<'a> {
    y: &'a [&'a [f32]],
    z: &'a [&'a [f32]],
    /// z̃, written as `z + …` at the round's first step and updated in place after.
    znew: &'a mut [Vec<f32>],
    first: bool,
    tg: f32,
}

/// Elements per block of [`subnet_step`]: its scratch holds two blocks per device (xh and d),
/// which for a subnet of four stays within L1.
const SUBNET_BLOCK: usize = 4096;

// The crate is built for baseline x86-64 (SSE2, four lanes); this loop is the client's whole
// share of a round's vector work, so it is compiled again for AVX2 and AVX-512 and run at the
// widest the CPU has. Only the vector width changes (no multiply and add is ever contracted),
// so every element is the same IEEE operations in the same order and the result the same bits.
ferrolab_core::widest!(
    /// One local step, after the gradients, of a subnet whose devices all belong to this client:
    /// SD-GT's `xh_j = x_j − γ(g_j + y_j + z_j)`, `d_j = xh_j − x_j + γy_j`,
    /// `x_i ← Σ_j W_ij xh_j`, `z̃_i (+)= (d_i − Σ_j W_ij d_j)/(Tγ)` (with `trackers`), or
    /// SD-FedAvg's `x_i ← Σ_j W_ij (x_j − γg_j)` (without), a block of elements at a time for
    /// every device at once. Nothing has to cross the fabric, so xh and d live only in a
    /// cache-resident scratch block instead of being written as model-sized vectors, moved through
    /// the exchange and read back per neighbour: this step then reads each device's x, g, y, z and
    /// z̃ once and writes x and z̃ once. `w` are the subnet's Metropolis rows `(j, W_ij)` (self
    /// included) by local index, in the graph's order. Per element every value is the same
    /// expression, evaluated in the same order, as in the exchange path ([`sdgt_half_step`],
    /// [`weighted_sum`], [`z_update`]), so both give the same bits; x is overwritten block by block
    /// only after every device's xh of that block has been computed.
    fn subnet_step(
        w: &[Vec<(usize, f64)>],
        x: &mut [Vec<f32>],
        g: &[&[f32]],
        trackers: Option<Trackers<'_>>,
        gamma: f32,
        scratch: &mut Vec<f32>,
    ) => subnet_step_body
);

/// [`subnet_step`]'s loop, inlined into each of its instantiations.
#[inline(always)]
fn subnet_step_body(
    w: &[Vec<(usize, f64)>],
    x: &mut [Vec<f32>],
    g: &[&[f32]],
    mut trackers: Option<Trackers<'_>>,
    gamma: f32,
    scratch: &mut Vec<f32>,
) {
    const B: usize = SUBNET_BLOCK;
    let n = x.len();
    let dim = x.first().map_or(0, Vec::len);
    scratch.resize(2 * n * B, 0.0);
    let (hs, ds) = scratch.split_at_mut(n * B);
    let mut acc = [0f32; B];
    let mut s = 0;
    while s < dim {
        let e = (s + B).min(dim);
        let len = e - s;
        for j in 0..n {
            let h = &mut hs[j * B..][..len];
            let (xj, gj) = (&x[j][s..e], &g[j][s..e]);
            match &trackers {
                Some(t) => sdgt_half_step(
                    xj,
                    gj,
                    &t.y[j][s..e],
                    &t.z[j][s..e],
                    gamma,
                    h,
                    &mut ds[j * B..][..len],
                ),
                None => h
                    .iter_mut()
                    .zip(xj.iter().zip(gj))
                    .for_each(|(o, (x, g))| *o = x - gamma * g),
            }
        }
        for i in 0..n {
            strided_sum(&w[i], hs, B, &mut x[i][s..e]);
            if let Some(t) = &mut trackers {
                let m = &mut acc[..len];
                strided_sum(&w[i], ds, B, m);
                let own = &ds[i * B..][..len];
                let tg = t.tg;
                if t.first {
                    let zs = t.znew[i][s..e].iter_mut().zip(&t.z[i][s..e]);
                    zs.zip(own.iter().zip(m.iter()))
                        .for_each(|((zn, z), (d, m))| *zn = z + (d - m) / tg);
                } else {
                    t.znew[i][s..e]
                        .iter_mut()
                        .zip(own.iter().zip(m.iter()))
                        .for_each(|(zn, (d, m))| *zn += (d - m) / tg);
                }
            }
        }
        s = e;
    }
}

/// Model-sized vectors a client reuses from one local step to the next. A CNN round moves
/// four model-sized vectors per device and step through the exchange; allocating them afresh
/// made page faults and zeroing a sixth of a round's runtime overhead (`perf`, null model).
#[derive(Default)]
struct Pool(Vec<Vec<f32>>);

impl Pool {
    /// Most vectors kept: four per device and step are in flight, a few spare.
    const KEEP: usize = 64;

    /// A vector of `dim` values with arbitrary contents (a reused one keeps its old values):
    /// every caller overwrites all of them, so nothing is zeroed or copied first.
    fn get_full(&mut self, dim: usize) -> Vec<f32> {
        let mut v = self.0.pop().unwrap_or_default();
        if v.len() != dim {
            v.clear();
            v.resize(dim, 0.0);
        }
        v
    }

    /// A copy of `src` in a reused vector.
    fn copy(&mut self, src: &[f32]) -> Vec<f32> {
        let mut v = self.get_full(src.len());
        v.copy_from_slice(src);
        v
    }

    fn put(&mut self, v: Vec<f32>) {
        if self.0.len() < Self::KEEP && v.capacity() > 0 {
            self.0.push(v);
        }
    }
}

/// A client owning some devices; it answers fit tasks for every algorithm.
pub struct DeviceClient {
    /// This client's id.
    pub id: ClientId,
    /// Its devices, ascending ids.
    pub devices: Vec<Device>,
    samplers: Vec<Sampler>,
    model: Arc<dyn FlatModel>,
    train: Arc<Samples>,
    topo: Arc<Topology>,
    gt_topo: Arc<Topology>,
    /// How long a D2D exchange may wait for the other devices.
    pub exchange_timeout: Duration,
    pool: Pool,
    /// Contributions of gone clients' devices mixed around in the current fit.
    skipped: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for DeviceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DeviceClient({}, devices {:?})",
            self.id,
            self.devices.iter().map(|d| d.id).collect::<Vec<_>>()
        )
    }
}

/// Checkpoint form of a client: round + per-device steps in JSON, vectors as safetensors.
#[derive(Serialize, Deserialize)]
struct ClientMeta {
    round: u64,
    steps: BTreeMap<u32, u64>,
}

impl DeviceClient {
    /// A client for `device_ids`, every device starting at `x0` with zero y, z, c.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ClientId,
        device_ids: &[u32],
        parts: &[Vec<usize>],
        x0: &[f32],
        seed: u64,
        model: Arc<dyn FlatModel>,
        train: Arc<Samples>,
        topo: Arc<Topology>,
        gt_topo: Arc<Topology>,
    ) -> Self {
        let dim = x0.len();
        let devices = device_ids
            .iter()
            .map(|&d| Device {
                id: d,
                x: x0.to_vec(),
                y: vec![0.0; dim],
                z: vec![0.0; dim],
                c: vec![0.0; dim],
                steps: 0,
            })
            .collect();
        let samplers = device_ids
            .iter()
            .map(|&d| Sampler::new(parts[d as usize].clone(), seed, d))
            .collect();
        DeviceClient {
            id,
            devices,
            samplers,
            model,
            train,
            topo,
            gt_topo,
            exchange_timeout: Duration::from_secs(120),
            pool: Pool::default(),
            skipped: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The client's state after `round`, for [`crate::Fabric::put_state`].
    pub fn checkpoint(&self, round: u64) -> Vec<u8> {
        let meta = ClientMeta {
            round,
            steps: self.devices.iter().map(|d| (d.id, d.steps)).collect(),
        };
        let mut p = Params::new();
        for d in &self.devices {
            for (k, v) in [("x", &d.x), ("y", &d.y), ("z", &d.z), ("c", &d.c)] {
                let _ = p.insert(&format!("{}.{k}", d.id), vec![v.len()], v.clone());
            }
        }
        let json = serde_json::to_vec(&meta).unwrap_or_default();
        let mut out = (json.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&json);
        out.extend_from_slice(&p.to_safetensors());
        out
    }

    /// Restores a [`DeviceClient::checkpoint`]; returns its round.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<u64, ClientError> {
        let bad = |m: String| ClientError(format!("client {} checkpoint: {m}", self.id));
        if bytes.len() < 8 {
            return Err(bad("truncated".into()));
        }
        let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|_| bad("truncated".into()))?)
            as usize;
        if n > bytes.len() - 8 {
            return Err(bad("header length past the end".into()));
        }
        let meta: ClientMeta =
            serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(e.to_string()))?;
        let p = Params::from_safetensors(&bytes[8 + n..]).map_err(|e| bad(e.to_string()))?;
        p.check_finite().map_err(|e| bad(e.to_string()))?;
        let dim = self.model.dim();
        for d in &mut self.devices {
            d.x = take(&p, &format!("{}.x", d.id), dim)?;
            d.y = take(&p, &format!("{}.y", d.id), dim)?;
            d.z = take(&p, &format!("{}.z", d.id), dim)?;
            d.c = take(&p, &format!("{}.c", d.id), dim)?;
            d.steps = *meta
                .steps
                .get(&d.id)
                .ok_or_else(|| bad(format!("no steps for device {}", d.id)))?;
        }
        Ok(meta.round)
    }

    fn grad(&mut self, k: usize, w: &[f32], batch: usize, out: &mut [f32]) -> f64 {
        let idx = self.samplers[k].batch(self.devices[k].steps, batch);
        self.devices[k].steps += 1;
        self.model.loss_grad(w, &self.train, &idx, out)
    }

    /// The gradient at device `k`'s own model, without copying the model out first.
    fn grad_at_x(&mut self, k: usize, batch: usize, out: &mut [f32]) -> f64 {
        let x = std::mem::take(&mut self.devices[k].x);
        let loss = self.grad(k, &x, batch, out);
        self.devices[k].x = x;
        loss
    }

    /// D2D mixing of the vectors `vals[slot][name]` of this client's devices `who` (indices
    /// into `self.devices`) over `topo`'s graphs. Once a subnet's exchange is complete,
    /// `consume(slot, own, terms)` is called for each of this client's devices in it, with the
    /// device's own contribution per name and `terms[name]` = `(W_ij, v_j)` over its
    /// neighbours, self included, in the graph's order, all borrowed from the exchange's
    /// result: the caller computes what it needs from them (`Σ_j W_ij v_j`, or SD-GT's z
    /// update fused with it) without any intermediate copy. Returns the vectors that were sent,
    /// per slot and name, for reuse. They are moved into the exchange and taken back from its
    /// result (every member's contribution, ours included, except those of gone clients'
    /// devices, whose weight each device keeps itself) rather than copied: with the in-process
    /// fabric a subnet inside one client then costs no copy at all.
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn mix(
        &self,
        ctx: &ClientCtx<'_>,
        topo: &Topology,
        step: u32,
        who: &[usize],
        names: &[&str],
        vals: Vec<Vec<Vec<f32>>>,
        consume: &mut dyn FnMut(usize, &[&[f32]], &[Vec<(f32, &[f32])>]) -> Result<(), ClientError>,
    ) -> Result<Vec<Vec<Vec<f32>>>, ClientError> {
        let dim = self.model.dim();
        let mut by_subnet: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (slot, &k) in who.iter().enumerate() {
            let (c, local) = topo.locate(self.devices[k].id).ok_or_else(|| {
                ClientError(format!("device {} is in no subnet", self.devices[k].id))
            })?;
            by_subnet.entry(c).or_default().push((slot, local));
        }
        let mut back: Vec<Vec<Vec<f32>>> = vec![Vec::new(); who.len()];
        let mut vals: Vec<Option<Vec<Vec<f32>>>> = vals.into_iter().map(Some).collect();
        // Ascending subnets on every client: an exchange waits only for its own subnet, so
        // clients spanning several subnets cannot deadlock each other.
        for (c, mine) in by_subnet {
            let members = &topo.subnets[c];
            let mut outgoing: Vec<(u32, Params)> = Vec::with_capacity(mine.len());
            for &(slot, _) in &mine {
                let v = vals[slot]
                    .take()
                    .ok_or_else(|| ClientError(format!("device slot {slot} is in two subnets")))?;
                let mut p = Params::new();
                for (n, v) in names.iter().zip(v) {
                    p.insert(n, vec![v.len()], v)
                        .map_err(|e| ClientError(e.to_string()))?;
                }
                outgoing.push((self.devices[who[slot]].id, p));
            }
            let key = ExchangeKey {
                round: ctx.round,
                step,
                group: c as u32,
            };
            let mut got =
                ctx.fabric
                    .exchange_skipping_gone(key, members, outgoing, self.exchange_timeout)?;
            // Where each member's contribution sits in `got`; `None`: its client is gone.
            let mut at: Vec<Option<usize>> = vec![None; members.len()];
            for (i, (dev, _)) in got.iter().enumerate() {
                let j = members.iter().position(|m| m == dev).ok_or_else(|| {
                    ClientError(format!("exchange returned device {dev}, not a member"))
                })?;
                if at[j].replace(i).is_some() {
                    return Err(ClientError(format!("exchange returned device {dev} twice")));
                }
            }
            let absent = at.iter().filter(|a| a.is_none()).count();
            if absent > 0 {
                self.skipped
                    .fetch_add(absent, std::sync::atomic::Ordering::Relaxed);
            }
            let g = &topo.graphs[c];
            for &(slot, local) in &mine {
                let own_at = at[local].ok_or_else(|| {
                    ClientError(format!(
                        "exchange lost this client's own device {}",
                        members[local]
                    ))
                })?;
                if let Some((j, _)) = g.w[local].iter().find(|(j, _)| *j >= members.len()) {
                    return Err(ClientError(format!(
                        "subnet {c}'s graph names slot {j} of {} members",
                        members.len()
                    )));
                }
                // A gone neighbour's weight moves onto the device itself: the row still sums
                // to one, and since Metropolis weights are symmetric, so does every live
                // device's column among the live devices (the live devices' mixing stays
                // doubly stochastic, which gradient tracking needs).
                let lost: f64 = g.w[local]
                    .iter()
                    .filter(|(j, _)| at[*j].is_none())
                    .map(|(_, w)| w)
                    .sum();
                let mut terms: Vec<Vec<(f32, &[f32])>> =
                    vec![Vec::with_capacity(g.w[local].len()); names.len()];
                for &(j, wij) in &g.w[local] {
                    let Some(i) = at[j] else {
                        continue;
                    };
                    let w = if j == local { wij + lost } else { wij };
                    for (t, v) in terms.iter_mut().zip(view_all(&got[i].1, names, dim)?) {
                        t.push((w as f32, v));
                    }
                }
                let own = view_all(&got[own_at].1, names, dim)?;
                consume(slot, &own, &terms)?;
            }
            for &(slot, local) in &mine {
                let Some(i) = at[local] else { continue };
                let p = &mut got[i].1;
                back[slot] = names
                    .iter()
                    .map(|n| p.remove(n).map(|t| t.data).unwrap_or_default())
                    .collect();
            }
        }
        Ok(back)
    }

    fn fit_inner(
        &mut self,
        ins: &FitIns,
        ctx: &ClientCtx<'_>,
    ) -> Result<(Params, Metrics), ClientError> {
        // A fit that failed midway left its count behind.
        self.skipped.store(0, std::sync::atomic::Ordering::Relaxed);
        let h: Hyper = serde_json::from_value(
            ins.config
                .get("hyper")
                .cloned()
                .ok_or_else(|| ClientError("task lacks `hyper`".into()))?,
        )
        .map_err(|e| ClientError(format!("task `hyper`: {e}")))?;
        let dim = self.model.dim();
        let reset = ids(&ins.config, "reset");
        let report = ids(&ins.config, "report");
        let train = ids(&ins.config, "train");
        let gamma = h.lr as f32;
        let tg = (h.t as f64 * h.lr) as f32;
        let mut out = Params::new();
        let mut compute = 0f64;
        let topo = Arc::clone(if h.algo == Algo::Gt {
            &self.gt_topo
        } else {
            &self.topo
        });
        let mut pool = std::mem::take(&mut self.pool);
        // The gradient buffer of the single-vector paths (SD-GT and SD-FedAvg keep one per
        // device in `gs`); loss_grad overwrites it whole, so a pooled vector serves.
        let mut g = if h.algo.uses_d2d() && h.algo != Algo::Gt {
            Vec::new()
        } else {
            pool.get_full(dim)
        };
        let mut loss = 0f64;
        let mut nloss = 0usize;
        match h.algo {
            Algo::SdGt | Algo::SdFedAvg => {
                let sdgt = h.algo == Algo::SdGt;
                for k in 0..self.devices.len() {
                    if reset.contains(&self.devices[k].id) {
                        let x = view(&ins.params, "x_bar", dim)?;
                        refill(&mut self.devices[k].x, x);
                        if sdgt {
                            let (c, _) = topo.locate(self.devices[k].id).unwrap_or((0, 0));
                            let y = view(&ins.params, &format!("y_c.{c}"), dim)?;
                            refill(&mut self.devices[k].y, y);
                        }
                    }
                }
                let all: Vec<usize> = (0..self.devices.len()).collect();
                // x^0 is needed only for the Δ of the devices that report this round.
                let x0: Vec<Option<Vec<f32>>> = self
                    .devices
                    .iter()
                    .map(|d| (sdgt && report.contains(&d.id)).then(|| pool.copy(&d.x)))
                    .collect();
                // This client's devices by subnet. A subnet whose devices are all here (with
                // `ferrolab sdgt`'s layout, every one) mixes without the fabric in
                // `subnet_step`; the others exchange through it.
                let mut by_subnet: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
                for &k in &all {
                    let id = self.devices[k].id;
                    let (c, local) = topo
                        .locate(id)
                        .ok_or_else(|| ClientError(format!("device {id} is in no subnet")))?;
                    by_subnet.entry(c).or_default().push((local, k));
                }
                let mut whole: Vec<(usize, Vec<usize>)> = Vec::new();
                let mut remote: Vec<usize> = Vec::new();
                for (c, mut m) in by_subnet {
                    if m.len() == topo.subnets[c].len() {
                        m.sort_unstable();
                        whole.push((c, m.into_iter().map(|(_, k)| k).collect()));
                    } else {
                        remote.extend(m.into_iter().map(|(_, k)| k));
                    }
                }
                remote.sort_unstable();
                let mut gs: Vec<Vec<f32>> = all.iter().map(|_| pool.get_full(dim)).collect();
                let mut scratch = Vec::new();
                // z̃, written at the first step as z + (d − Wd)/(Tγ) (no copy of z first).
                let mut znew: Vec<Vec<f32>> = Vec::new();
                for t in 0..h.t {
                    let t0 = Instant::now();
                    for &k in &all {
                        loss += self.grad_at_x(k, h.batch, &mut gs[k]);
                        nloss += 1;
                    }
                    if sdgt && znew.is_empty() {
                        znew = all.iter().map(|_| pool.get_full(dim)).collect();
                    }
                    for (c, ks) in &whole {
                        let mut xs: Vec<Vec<f32>> = ks
                            .iter()
                            .map(|&k| std::mem::take(&mut self.devices[k].x))
                            .collect();
                        let mut zn: Vec<Vec<f32>> = if sdgt {
                            ks.iter().map(|&k| std::mem::take(&mut znew[k])).collect()
                        } else {
                            Vec::new()
                        };
                        {
                            let devs = &self.devices;
                            let gv: Vec<&[f32]> = ks.iter().map(|&k| gs[k].as_slice()).collect();
                            let yv: Vec<&[f32]> =
                                ks.iter().map(|&k| devs[k].y.as_slice()).collect();
                            let zv: Vec<&[f32]> =
                                ks.iter().map(|&k| devs[k].z.as_slice()).collect();
                            let tr = sdgt.then_some(Trackers {
                                y: &yv,
                                z: &zv,
                                znew: &mut zn,
                                first: t == 0,
                                tg,
                            });
                            subnet_step(&topo.graphs[*c].w, &mut xs, &gv, tr, gamma, &mut scratch);
                        }
                        for (&k, x) in ks.iter().zip(xs) {
                            self.devices[k].x = x;
                        }
                        for (&k, z) in ks.iter().zip(zn) {
                            znew[k] = z;
                        }
                    }
                    compute += t0.elapsed().as_secs_f64();
                    if remote.is_empty() {
                        continue;
                    }
                    let t0 = Instant::now();
                    let mut vals = Vec::with_capacity(remote.len());
                    for &k in &remote {
                        let (d, g) = (&self.devices[k], &gs[k]);
                        if sdgt {
                            let mut xh = pool.get_full(dim);
                            let mut dd = pool.get_full(dim);
                            sdgt_half_step(&d.x, g, &d.y, &d.z, gamma, &mut xh, &mut dd);
                            vals.push(vec![xh, dd]);
                        } else {
                            let mut xn = pool.get_full(dim);
                            xn.iter_mut()
                                .zip(d.x.iter().zip(g))
                                .for_each(|(o, (x, g))| *o = x - gamma * g);
                            vals.push(vec![xn]);
                        }
                    }
                    compute += t0.elapsed().as_secs_f64();
                    let names: &[&str] = if sdgt { &["x", "d"] } else { &["x"] };
                    let mut mixed: Vec<Vec<f32>> = vec![Vec::new(); remote.len()];
                    let mut mix_compute = 0f64;
                    let sent = {
                        let devices = &self.devices;
                        let (pool, znew) = (&mut pool, &mut znew);
                        let mut consume = |slot: usize,
                                           own: &[&[f32]],
                                           terms: &[Vec<(f32, &[f32])>]|
                         -> Result<(), ClientError> {
                            let t1 = Instant::now();
                            let mut x = pool.get_full(dim);
                            weighted_sum(&terms[0], &mut x);
                            mixed[slot] = x;
                            if sdgt {
                                let k = remote[slot];
                                let base = (t == 0).then(|| devices[k].z.as_slice());
                                z_update(&terms[1], own[1], tg, base, &mut znew[k]);
                            }
                            mix_compute += t1.elapsed().as_secs_f64();
                            Ok(())
                        };
                        self.mix(ctx, &topo, t as u32, &remote, names, vals, &mut consume)?
                    };
                    let t1 = Instant::now();
                    for (&k, x) in remote.iter().zip(mixed) {
                        if x.len() != dim {
                            return Err(ClientError(format!(
                                "device {} was not mixed",
                                self.devices[k].id
                            )));
                        }
                        pool.put(std::mem::replace(&mut self.devices[k].x, x));
                    }
                    for v in sent.into_iter().flatten() {
                        pool.put(v);
                    }
                    compute += mix_compute + t1.elapsed().as_secs_f64();
                }
                for v in gs {
                    pool.put(v);
                }
                for (k, x0) in all.into_iter().zip(x0) {
                    let d = &mut self.devices[k];
                    if let Some(z) = znew.get_mut(k) {
                        pool.put(std::mem::replace(&mut d.z, std::mem::take(z)));
                    }
                    if report.contains(&d.id) {
                        if sdgt {
                            let x0 = x0.ok_or_else(|| {
                                ClientError(format!("no x^0 kept for device {}", d.id))
                            })?;
                            let delta: Vec<f32> =
                                d.x.iter()
                                    .zip(&x0)
                                    .zip(&d.y)
                                    .map(|((x, x0), y)| x - x0 + tg * y)
                                    .collect();
                            let _ = out.insert(&format!("delta.{}", d.id), vec![dim], delta);
                            pool.put(x0);
                        } else {
                            let _ = out.insert(&format!("x.{}", d.id), vec![dim], d.x.clone());
                        }
                    }
                }
            }
            Algo::Scaffold | Algo::FedAvg => {
                for k in 0..self.devices.len() {
                    let id = self.devices[k].id;
                    if !train.contains(&id) {
                        continue;
                    }
                    let t0 = Instant::now();
                    let xbar = view(&ins.params, "x_bar", dim)?;
                    let cg = if h.algo == Algo::Scaffold {
                        take(&ins.params, "c", dim)?
                    } else {
                        vec![0.0; dim]
                    };
                    let mut x = xbar.to_vec();
                    for _ in 0..h.t {
                        loss += self.grad(k, &x, h.batch, &mut g);
                        nloss += 1;
                        let ci = &self.devices[k].c;
                        x.iter_mut()
                            .zip(g.iter().zip(ci).zip(&cg))
                            .for_each(|(x, ((g, ci), cg))| *x -= gamma * (g - ci + cg));
                    }
                    let d = &mut self.devices[k];
                    if h.algo == Algo::Scaffold {
                        let cnew: Vec<f32> =
                            d.c.iter()
                                .zip(&cg)
                                .zip(xbar.iter().zip(&x))
                                .map(|((c, cg), (xb, x))| c - cg + (xb - x) / tg)
                                .collect();
                        let dc: Vec<f32> = cnew.iter().zip(&d.c).map(|(a, b)| a - b).collect();
                        let dx: Vec<f32> = x.iter().zip(xbar).map(|(a, b)| a - b).collect();
                        let _ = out.insert(&format!("dx.{id}"), vec![dim], dx);
                        let _ = out.insert(&format!("dc.{id}"), vec![dim], dc);
                        d.c = cnew;
                    } else {
                        let _ = out.insert(&format!("x.{id}"), vec![dim], x.clone());
                    }
                    d.x = x;
                    compute += t0.elapsed().as_secs_f64();
                }
            }
            Algo::Gt => {
                let all: Vec<usize> = (0..self.devices.len()).collect();
                for &k in &all {
                    if self.devices[k].steps == 0 {
                        let x = self.devices[k].x.clone();
                        self.grad(k, &x, h.batch, &mut g);
                        self.devices[k].y = g.clone();
                        self.devices[k].c = g.clone();
                    }
                }
                for t in 0..h.t {
                    // Copies, not moves: a failed exchange must leave the devices intact.
                    let vals: Vec<Vec<Vec<f32>>> = all
                        .iter()
                        .map(|&k| {
                            vec![pool.copy(&self.devices[k].x), pool.copy(&self.devices[k].y)]
                        })
                        .collect();
                    let mut mixed: Vec<[Vec<f32>; 2]> = vec![Default::default(); all.len()];
                    let sent = {
                        let pool = &mut pool;
                        let mut consume = |slot: usize,
                                           _own: &[&[f32]],
                                           terms: &[Vec<(f32, &[f32])>]|
                         -> Result<(), ClientError> {
                            for (m, t) in mixed[slot].iter_mut().zip(terms) {
                                let mut v = pool.get_full(dim);
                                weighted_sum(t, &mut v);
                                *m = v;
                            }
                            Ok(())
                        };
                        self.mix(ctx, &topo, t as u32, &all, &["x", "v"], vals, &mut consume)?
                    };
                    for v in sent.into_iter().flatten() {
                        pool.put(v);
                    }
                    let t0 = Instant::now();
                    for &k in &all {
                        let [mx, mv] = &mixed[k];
                        if mx.len() != dim || mv.len() != dim {
                            return Err(ClientError(format!(
                                "device {} was not mixed",
                                self.devices[k].id
                            )));
                        }
                        let xn: Vec<f32> = mx
                            .iter()
                            .zip(&self.devices[k].y)
                            .map(|(m, y)| m - gamma * y)
                            .collect();
                        loss += self.grad(k, &xn, h.batch, &mut g);
                        nloss += 1;
                        let d = &mut self.devices[k];
                        d.y = mv
                            .iter()
                            .zip(&g)
                            .zip(&d.c)
                            .map(|((m, g), c)| m + g - c)
                            .collect();
                        d.c = g.clone();
                        d.x = xn;
                    }
                    for v in mixed.into_iter().flatten() {
                        pool.put(v);
                    }
                    compute += t0.elapsed().as_secs_f64();
                }
                for d in &self.devices {
                    if report.contains(&d.id) {
                        let _ = out.insert(&format!("x.{}", d.id), vec![dim], d.x.clone());
                    }
                }
            }
        }
        pool.put(g);
        self.pool = pool;
        let mut m = Metrics::new();
        m.insert("compute_seconds".into(), compute);
        let skipped = self.skipped.swap(0, std::sync::atomic::Ordering::Relaxed);
        m.insert("gone_contributions".into(), skipped as f64);
        m.insert(
            "train_loss".into(),
            if nloss > 0 {
                loss / nloss as f64
            } else {
                f64::NAN
            },
        );
        Ok((out, m))
    }
}

impl Client for DeviceClient {
    fn fit(&mut self, ins: &FitIns, ctx: &ClientCtx<'_>) -> Result<FitRes, ClientError> {
        if let Some(r) = ins.config.get("resume_round").and_then(|v| v.as_u64())
            && let Some(bytes) = ctx.fabric.get_state(&client_key(self.id, r))?
        {
            let got = self.restore(&bytes)?;
            if got != r {
                return Err(ClientError(format!(
                    "client {} checkpoint is of round {got}, not {r}",
                    self.id
                )));
            }
        }
        let (params, metrics) = self.fit_inner(ins, ctx)?;
        if ins.config.get("checkpoint").and_then(|v| v.as_bool()) == Some(true) {
            ctx.fabric.put_state(
                &client_key(self.id, ins.round + 1),
                &self.checkpoint(ins.round + 1),
            )?;
        }
        Ok(FitRes {
            params,
            n_examples: self.devices.len() as u64,
            metrics,
        })
    }

    fn evaluate(
        &mut self,
        ins: &FitIns,
        _ctx: &ClientCtx<'_>,
    ) -> Result<crate::client::EvaluateRes, ClientError> {
        // Evaluation is centralised on the server's test set; a client evaluates its devices'
        // own models on their training rows (used only for diagnostics).
        let _ = ins;
        let mut acc = 0.0;
        let mut loss = 0.0;
        for d in &self.devices {
            let (l, a) = self.model.evaluate(&d.x, &self.train);
            loss += l;
            acc += a;
        }
        let n = self.devices.len().max(1) as f64;
        let mut metrics = Metrics::new();
        metrics.insert("accuracy".into(), acc / n);
        Ok(crate::client::EvaluateRes {
            loss: loss / n,
            n_examples: self.devices.len() as u64,
            metrics,
        })
    }
}

/// Key of a client's checkpoint: alternating slots, so the previous checkpoint survives a crash
/// in the middle of writing the next one.
pub fn client_key(client: ClientId, round: u64) -> String {
    format!("client/{client}/slot{}", round % 2)
}

/// Communication so far, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Comm {
    /// Directed D2D transmissions × vector bytes.
    pub d2d_bytes: f64,
    /// Device ↔ server transfers × vector bytes.
    pub server_bytes: f64,
    /// The cost model's running cost (the reference's `energy_count`).
    pub cost: f64,
}

/// The server side of every algorithm.
#[derive(Debug, Clone)]
pub struct DeviceStrategy {
    /// Hyper-parameters.
    pub hyper: Hyper,
    /// Devices sampled per subnet (s).
    pub s: usize,
    topo: Arc<Topology>,
    gt_topo: Arc<Topology>,
    /// Devices of each client.
    pub clients: BTreeMap<ClientId, Vec<u32>>,
    seed: u64,
    dim: usize,
    /// SD-GT: y_c per subnet.
    pub y_c: Vec<Vec<f32>>,
    /// SCAFFOLD: global control variate.
    pub c: Vec<f32>,
    /// Devices that receive x̄ (and y_c) with the next task.
    pub reset: BTreeSet<u32>,
    sampled: BTreeSet<u32>,
    /// Communication counters.
    pub comm: Comm,
    /// Sampled devices whose reply did not arrive, over the run.
    pub lost_devices: u64,
    /// D2D contributions of gone clients' devices that live devices mixed around (their
    /// weight kept on themselves), over the run, as the replies report them.
    pub gone_contributions: u64,
    /// The cost model, and with `Some(k)` the co-optimisation of (s, T) every k rounds.
    pub cost_model: Option<(CostModel, Option<u64>)>,
    y_c_old: Vec<Vec<f32>>,
    /// (round, s, T) each time the co-optimisation chose.
    pub choices: Vec<(u64, usize, usize)>,
}

/// What a [`DeviceStrategy`] checkpoint holds besides x̄.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategyState {
    /// Devices to reset at the next round.
    pub reset: Vec<u32>,
    /// Communication so far.
    pub comm: Comm,
    /// y_c per subnet and c, as one flat vector each.
    pub y_c: Vec<Vec<f32>>,
    /// SCAFFOLD's c.
    pub c: Vec<f32>,
    /// Lost replies so far.
    pub lost_devices: u64,
    /// Gone contributions mixed around so far (absent in checkpoints of older builds).
    #[serde(default)]
    pub gone_contributions: u64,
    /// Current s and T (the co-optimisation changes them).
    pub s: usize,
    /// Current T.
    pub t: usize,
    /// Co-optimisation choices so far.
    pub choices: Vec<(u64, usize, usize)>,
}

impl DeviceStrategy {
    /// A strategy for `clients` (client → its devices) over `topo`.
    pub fn new(
        hyper: Hyper,
        s: usize,
        topo: Arc<Topology>,
        gt_topo: Arc<Topology>,
        clients: BTreeMap<ClientId, Vec<u32>>,
        seed: u64,
        dim: usize,
    ) -> Self {
        let n_sub = topo.subnets.len();
        // Round 0: every device receives the initial model (counted like any broadcast).
        let reset = if hyper.algo == Algo::Gt {
            BTreeSet::new()
        } else {
            clients.values().flatten().copied().collect()
        };
        DeviceStrategy {
            hyper,
            s,
            topo,
            gt_topo,
            clients,
            seed,
            dim,
            y_c: vec![vec![0.0; dim]; n_sub],
            c: vec![0.0; dim],
            reset,
            sampled: BTreeSet::new(),
            comm: Comm::default(),
            lost_devices: 0,
            gone_contributions: 0,
            cost_model: None,
            y_c_old: vec![vec![0.0; dim]; n_sub],
            choices: Vec::new(),
        }
    }

    /// Checkpoint state.
    pub fn state(&self) -> StrategyState {
        StrategyState {
            reset: self.reset.iter().copied().collect(),
            comm: self.comm,
            y_c: self.y_c.clone(),
            c: self.c.clone(),
            lost_devices: self.lost_devices,
            gone_contributions: self.gone_contributions,
            s: self.s,
            t: self.hyper.t,
            choices: self.choices.clone(),
        }
    }

    /// Restores [`DeviceStrategy::state`], refusing a state that does not fit this run's
    /// subnets, devices and model size (a damaged or foreign checkpoint would otherwise index
    /// out of bounds rounds later).
    pub fn restore(&mut self, s: StrategyState) -> Result<(), String> {
        let n_sub = self.topo.subnets.len();
        if s.y_c.len() != n_sub || s.y_c.iter().any(|v| v.len() != self.dim) {
            return Err(format!(
                "y_c holds {} vectors of lengths {:?}; this run has {n_sub} subnets and {} parameters",
                s.y_c.len(),
                s.y_c.iter().map(Vec::len).collect::<BTreeSet<_>>(),
                self.dim
            ));
        }
        if s.c.len() != self.dim {
            return Err(format!(
                "c holds {} values; this run has {} parameters",
                s.c.len(),
                self.dim
            ));
        }
        if s.y_c.iter().flatten().chain(&s.c).any(|v| !v.is_finite()) {
            return Err("y_c or c holds a value that is not finite".into());
        }
        let largest = self.topo.subnets.iter().map(Vec::len).max().unwrap_or(0);
        if s.s == 0 || s.s > largest {
            return Err(format!(
                "s = {} devices per subnet; this run's subnets have at most {largest}",
                s.s
            ));
        }
        if s.t == 0 {
            return Err("T = 0 local steps".into());
        }
        let known: BTreeSet<u32> = self.clients.values().flatten().copied().collect();
        if let Some(d) = s.reset.iter().find(|d| !known.contains(d)) {
            return Err(format!(
                "device {d} is not one of this run's {}",
                known.len()
            ));
        }
        self.reset = s.reset.into_iter().collect();
        self.comm = s.comm;
        self.y_c = s.y_c;
        self.c = s.c;
        self.lost_devices = s.lost_devices;
        self.gone_contributions = s.gone_contributions;
        self.s = s.s;
        self.hyper.t = s.t;
        self.choices = s.choices;
        Ok(())
    }

    /// s devices per subnet for `round`, from a stream that depends only on (seed, round).
    pub fn sample(&self, round: u64) -> BTreeSet<u32> {
        let mut rng = ferrolab_core::seed::rng(self.seed, &format!("sample/{round}"));
        let mut out = BTreeSet::new();
        for members in &self.topo.subnets {
            let mut m = members.clone();
            m.shuffle(&mut rng);
            out.extend(m.into_iter().take(self.s));
        }
        out
    }

    /// Tensor names a client's reply must carry this round.
    pub fn expected_names(&self, client: ClientId) -> BTreeSet<String> {
        let mine = self.clients.get(&client).cloned().unwrap_or_default();
        let mut out = BTreeSet::new();
        for d in mine {
            let reports = if self.hyper.algo == Algo::Gt {
                true
            } else {
                self.sampled.contains(&d)
            };
            if !reports {
                continue;
            }
            match self.hyper.algo {
                Algo::SdGt => {
                    out.insert(format!("delta.{d}"));
                }
                Algo::SdFedAvg | Algo::FedAvg | Algo::Gt => {
                    out.insert(format!("x.{d}"));
                }
                Algo::Scaffold => {
                    out.insert(format!("dx.{d}"));
                    out.insert(format!("dc.{d}"));
                }
            }
        }
        out
    }

    /// D2D bytes of one round.
    pub fn d2d_bytes_per_round(&self) -> f64 {
        let topo = if self.hyper.algo == Algo::Gt {
            &self.gt_topo
        } else {
            &self.topo
        };
        (self.hyper.t * topo.transmissions() * self.hyper.algo.vectors_per_mix() * self.dim * 4)
            as f64
    }
}

fn flat(name: &str, v: &[f32]) -> Params {
    Params::flat(name, v.to_vec())
}

impl Strategy for DeviceStrategy {
    fn configure_fit(
        &mut self,
        round: u64,
        params: &Params,
        clients: &[ClientId],
    ) -> Vec<(ClientId, FitIns)> {
        let h = self.hyper;
        self.sampled = if h.algo == Algo::Gt {
            BTreeSet::new()
        } else {
            self.sample(round)
        };
        let xbar = params.flat_view();
        let (down, _) = h.algo.server_vectors();
        let mut out = Vec::new();
        for &cl in clients {
            let mine = self.clients.get(&cl).cloned().unwrap_or_default();
            let reset: Vec<u32> = mine
                .iter()
                .copied()
                .filter(|d| self.reset.contains(d))
                .collect();
            let report: Vec<u32> = if h.algo == Algo::Gt {
                mine.clone()
            } else {
                mine.iter()
                    .copied()
                    .filter(|d| self.sampled.contains(d))
                    .collect()
            };
            let train: Vec<u32> = if h.algo.uses_d2d() {
                mine.clone()
            } else {
                report.clone()
            };
            if train.is_empty() {
                continue;
            }
            let mut p = Params::new();
            match h.algo {
                Algo::SdGt | Algo::SdFedAvg => {
                    if !reset.is_empty() {
                        p = flat("x_bar", &xbar);
                    }
                    if h.algo == Algo::SdGt {
                        let subnets: BTreeSet<usize> = reset
                            .iter()
                            .filter_map(|&d| self.topo.locate(d).map(|(c, _)| c))
                            .collect();
                        for c in subnets {
                            let _ =
                                p.insert(&format!("y_c.{c}"), vec![self.dim], self.y_c[c].clone());
                        }
                    }
                    self.comm.server_bytes += (reset.len() * down * self.dim * 4) as f64;
                }
                Algo::Scaffold | Algo::FedAvg => {
                    p = flat("x_bar", &xbar);
                    if h.algo == Algo::Scaffold {
                        let _ = p.insert("c", vec![self.dim], self.c.clone());
                    }
                    self.comm.server_bytes += (train.len() * down * self.dim * 4) as f64;
                }
                Algo::Gt => {}
            }
            let mut config = Config::new();
            config.insert("hyper".into(), serde_json::to_value(h).unwrap_or_default());
            config.insert("reset".into(), serde_json::json!(reset));
            config.insert("report".into(), serde_json::json!(report));
            config.insert("train".into(), serde_json::json!(train));
            out.push((
                cl,
                FitIns {
                    round,
                    params: p,
                    config,
                },
            ));
        }
        self.comm.d2d_bytes += self.d2d_bytes_per_round();
        if let Some((m, _)) = &self.cost_model {
            let n_c = self.topo.subnets.iter().map(Vec::len).min().unwrap_or(1);
            self.comm.cost += m.round_cost(self.s, h.t, n_c);
        }
        self.reset.clear();
        out
    }

    fn aggregate_fit(
        &mut self,
        round: u64,
        params: &Params,
        results: Vec<(ClientId, FitRes)>,
        failures: &[Failure],
    ) -> Result<Params, StrategyError> {
        let h = self.hyper;
        let dim = self.dim;
        let (_, up) = h.algo.server_vectors();
        // Every returned vector, borrowed, keyed by (device, role), device-sorted by the
        // BTreeMap.
        let mut got: BTreeMap<(u32, &str), &[f32]> = BTreeMap::new();
        for (_, r) in &results {
            for (name, t) in r.params.iter() {
                if let Some((role, d)) = name.split_once('.')
                    && let Ok(d) = d.parse::<u32>()
                {
                    got.insert((d, role), &t.data);
                }
            }
        }
        let arrived = |role: &str| -> Vec<(u32, &[f32])> {
            got.iter()
                .filter(|((_, r), _)| *r == role)
                .map(|((d, _), v)| (*d, *v))
                .collect()
        };
        let reporting: BTreeSet<u32> = got.keys().map(|(d, _)| *d).collect();
        for (_, r) in &results {
            if let Some(n) = r
                .metrics
                .get("gone_contributions")
                .filter(|n| n.is_finite())
            {
                self.gone_contributions += n.max(0.0) as u64;
            }
        }
        let expected = if h.algo == Algo::Gt {
            self.topo.devices()
        } else {
            self.sampled.len()
        };
        self.lost_devices += expected.saturating_sub(reporting.len()) as u64;
        if reporting.is_empty() {
            return Err(StrategyError::NoResults {
                round,
                failures: failures.len(),
            });
        }
        if h.algo != Algo::Gt {
            self.comm.server_bytes += (reporting.len() * up * dim * 4) as f64;
        }
        let xbar = params.flat_view();
        let tg = (h.t as f64 * h.lr) as f32;
        let new = match h.algo {
            Algo::SdGt => {
                let deltas = arrived("delta");
                // Subnets with at least one Δ, and which Δ are theirs (device order kept).
                let (subnets, groups): (Vec<usize>, Vec<Vec<usize>>) = self
                    .topo
                    .subnets
                    .iter()
                    .enumerate()
                    .map(|(c, members)| {
                        let mine = deltas
                            .iter()
                            .enumerate()
                            .filter(|(_, (d, _))| members.binary_search(d).is_ok())
                            .map(|(i, _)| i)
                            .collect::<Vec<usize>>();
                        (c, mine)
                    })
                    .filter(|(_, mine)| !mine.is_empty())
                    .unzip();
                let (new, mean, ys) = sdgt_server_step(&xbar, &deltas, &groups, tg)?;
                for (c, y) in subnets.into_iter().zip(ys) {
                    self.y_c_old[c] = std::mem::replace(&mut self.y_c[c], y);
                }
                if let Some((m, Some(every))) = self.cost_model
                    && (round + 1).is_multiple_of(every.max(1))
                {
                    let sq = |a: &[f32], b: &[f32]| -> f64 {
                        a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum()
                    };
                    let g = deltas.iter().map(|(_, d)| sq(d, &mean)).sum::<f64>()
                        / deltas.len().max(1) as f64;
                    let y = self
                        .y_c
                        .iter()
                        .zip(&self.y_c_old)
                        .map(|(a, b)| sq(a, b))
                        .sum::<f64>()
                        / self.y_c.len().max(1) as f64;
                    let n_c = self.topo.subnets.iter().map(Vec::len).min().unwrap_or(1);
                    let o = Observed {
                        round,
                        t: h.t,
                        s: self.s,
                        n_c,
                        gamma: h.lr,
                        g,
                        y,
                    };
                    let (s_new, t_new) = m.choose(&o, self.topo.subnets.len());
                    self.s = s_new;
                    self.hyper.t = t_new;
                    self.choices.push((round + 1, s_new, t_new));
                }
                new
            }
            Algo::SdFedAvg | Algo::FedAvg | Algo::Gt => mean_flat(arrived("x")),
            Algo::Scaffold => {
                let dx = mean_flat(arrived("dx"));
                let dcs = arrived("dc");
                let frac = dcs.len() as f32 / self.topo.devices() as f32;
                let dc = mean_flat(dcs);
                for (c, d) in self.c.iter_mut().zip(&dc) {
                    *c += frac * d;
                }
                xbar.iter().zip(&dx).map(|(x, d)| x + d).collect()
            }
        };
        if h.algo.uses_d2d() && h.algo != Algo::Gt {
            // A failed client's devices take x̄ (and y_c) next round as the sampled ones do:
            // its task stopped midway (their x half-stepped) or its process died (a restarted
            // one starts them from x⁰), and either way an unsampled device would otherwise go
            // on from that state until it is next sampled. A healthy run has no failure, so
            // its bits are unchanged.
            let mut reset = reporting;
            for f in failures {
                if let Some(ds) = self.clients.get(&f.client) {
                    reset.extend(ds.iter().copied());
                }
            }
            self.reset = reset;
        }
        Ok(params.with_flat_vec(new)?)
    }
}

/// SD-GT's server step over the sampled devices' Δ (device-sorted), in one pass a block at a
/// time: Δ̄ = mean of all, for each of `groups` (a subnet's Δ, as indices into `deltas`)
/// `y_c = (Δ̄_c − Δ̄)/(Tγ)`, and x̄ + Δ̄. Returns (x̄ + Δ̄, Δ̄, y_c per group). Each mean is the one
/// [`mean_flat`] computes (f64 sum from 0 in device order, divided, rounded to f32) and each
/// output element the same expression as before, so the result is the same bits as computing
/// the means one vector at a time; reading each Δ from memory once instead of twice, with no
/// full-length f64 accumulators or per-subnet means written, keeps the server's share of a
/// round (the clients wait for it) small.
#[allow(clippy::type_complexity)]
fn sdgt_server_step(
    xbar: &[f32],
    deltas: &[(u32, &[f32])],
    groups: &[Vec<usize>],
    tg: f32,
) -> Result<(Vec<f32>, Vec<f32>, Vec<Vec<f32>>), StrategyError> {
    const B: usize = 1024;
    let n = xbar.len();
    if let Some((d, v)) = deltas.iter().find(|(_, v)| v.len() != n) {
        return Err(StrategyError::Params(crate::params::ParamsError::Mismatch(
            format!("Δ of device {d} has {} values, x̄ {n}", v.len()),
        )));
    }
    if groups.iter().flatten().any(|&i| i >= deltas.len()) {
        return Err(StrategyError::Params(crate::params::ParamsError::Mismatch(
            "subnet group names a Δ that did not arrive".into(),
        )));
    }
    let k = deltas.len() as f64;
    let mut new = Vec::with_capacity(n);
    let mut mean = Vec::with_capacity(n);
    let mut ys: Vec<Vec<f32>> = groups.iter().map(|_| Vec::with_capacity(n)).collect();
    let (mut acc, mut m) = ([0f64; B], [0f32; B]);
    let mut s = 0;
    while s < n {
        let e = (s + B).min(n);
        let (a, mb) = (&mut acc[..e - s], &mut m[..e - s]);
        a.fill(0.0);
        for (_, v) in deltas {
            a.iter_mut()
                .zip(&v[s..e])
                .for_each(|(a, x)| *a += *x as f64);
        }
        mb.iter_mut()
            .zip(a.iter())
            .for_each(|(m, a)| *m = (a / k) as f32);
        mean.extend_from_slice(mb);
        new.extend(xbar[s..e].iter().zip(mb.iter()).map(|(x, m)| x + m));
        for (g, y) in groups.iter().zip(&mut ys) {
            a.fill(0.0);
            for &i in g {
                a.iter_mut()
                    .zip(&deltas[i].1[s..e])
                    .for_each(|(a, x)| *a += *x as f64);
            }
            let kg = g.len() as f64;
            y.extend(
                a.iter()
                    .zip(mb.iter())
                    .map(|(a, m)| ((a / kg) as f32 - m) / tg),
            );
        }
        s = e;
    }
    Ok((new, mean, ys))
}

#[cfg(test)]
mod gone_tests {
    use super::DeviceClient;
    use crate::client::ClientCtx;
    use crate::fabric::{
        ClientId, Collected, DeviceId, ExchangeKey, Fabric, FabricError, Reply, Task, TaskKind,
        Validator,
    };
    use crate::params::Params;
    use crate::sdgt::model::{Logistic, Samples};
    use crate::topology::{Graph, Topology};
    use std::sync::Arc;
    use std::time::Duration;

    /// A fabric on which device 2's client is gone: an exchange brings the caller's own
    /// contributions and device 1's (another, live client's), never device 2's.
    struct Device2Gone;

    fn no(_: &str) -> FabricError {
        FabricError::Protocol("not used by this test".into())
    }

    impl Fabric for Device2Gone {
        fn name(&self) -> &str {
            "device-2-gone"
        }
        fn send_task(&self, _: ClientId, _: &Task) -> Result<(), FabricError> {
            Err(no("send_task"))
        }
        fn recv_task(&self, _: ClientId, _: Duration) -> Result<Option<Task>, FabricError> {
            Err(no("recv_task"))
        }
        fn send_reply(&self, _: &Reply) -> Result<(), FabricError> {
            Err(no("send_reply"))
        }
        fn collect_replies(
            &self,
            _: u64,
            _: TaskKind,
            _: &[ClientId],
            _: Duration,
            _: Validator<'_>,
        ) -> Result<Collected, FabricError> {
            Err(no("collect_replies"))
        }
        fn exchange(
            &self,
            key: ExchangeKey,
            _: &[DeviceId],
            _: Vec<(DeviceId, Params)>,
            timeout: Duration,
        ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
            Err(FabricError::Timeout {
                what: format!("exchange {key:?}: device 2 (client 9) gone"),
                after: timeout,
            })
        }
        fn exchange_skipping_gone(
            &self,
            _: ExchangeKey,
            _: &[DeviceId],
            mut outgoing: Vec<(DeviceId, Params)>,
            _: Duration,
        ) -> Result<Vec<(DeviceId, Params)>, FabricError> {
            let mut p = Params::new();
            p.insert("x", vec![4], vec![10.0; 4])
                .map_err(|e| FabricError::Protocol(e.to_string()))?;
            outgoing.push((1, p));
            outgoing.sort_by_key(|d| d.0);
            Ok(outgoing)
        }
        fn put_state(&self, _: &str, _: &[u8]) -> Result<(), FabricError> {
            Err(no("put_state"))
        }
        fn get_state(&self, _: &str) -> Result<Option<Vec<u8>>, FabricError> {
            Err(no("get_state"))
        }
    }

    /// A live device whose subnet peer's client is gone mixes with the peers that remain,
    /// the gone one's Metropolis weight kept on itself (the row still sums to one), instead of
    /// failing the client's whole task.
    #[test]
    fn a_gone_peer_s_weight_stays_with_the_device() {
        // One subnet of three devices, all linked: Metropolis weights 1/3 everywhere.
        let graph = Graph::from_adjacency(vec![vec![1, 2], vec![0, 2], vec![0, 1]], 1.0);
        let w00 = graph.w[0]
            .iter()
            .find(|(j, _)| *j == 0)
            .map_or(0.0, |p| p.1);
        let w02 = graph.w[0]
            .iter()
            .find(|(j, _)| *j == 2)
            .map_or(0.0, |p| p.1);
        let topo = Arc::new(Topology {
            subnets: vec![vec![0, 1, 2]],
            graphs: vec![graph],
        });
        let model = Arc::new(Logistic {
            dim_in: 1,
            classes: 2,
            l2: 0.0,
        });
        let train = Arc::new(Samples {
            x: vec![0.0, 1.0],
            y: vec![0, 1],
            dim: 1,
            classes: 2,
        });
        let parts = vec![vec![0], vec![1], vec![0]];
        let client = DeviceClient::new(
            0,
            &[0],
            &parts,
            &[1.0; 4],
            0,
            model,
            train,
            Arc::clone(&topo),
            topo.clone(),
        );
        let fabric = Device2Gone;
        let ctx = ClientCtx {
            client: 0,
            round: 0,
            fabric: &fabric,
        };
        let mut seen = Vec::new();
        let mut consume = |_: usize, own: &[&[f32]], terms: &[Vec<(f32, &[f32])>]| {
            seen = terms[0].iter().map(|(w, v)| (*w, v[0])).collect();
            assert_eq!(own[0], &[1.0; 4]);
            Ok(())
        };
        let back = client
            .mix(
                &ctx,
                &topo,
                0,
                &[0],
                &["x"],
                vec![vec![vec![1.0; 4]]],
                &mut consume,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, vec![vec![vec![1.0; 4]]]);
        // Itself (value 1) with its own weight plus the gone device's, device 1 (value 10).
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            (f64::from(seen[0].0) - (w00 + w02)).abs() < 1e-6,
            "{seen:?}"
        );
        assert_eq!(seen[0].1, 1.0);
        assert_eq!(seen[1].1, 10.0);
        let sum: f32 = seen.iter().map(|t| t.0).sum();
        assert!((sum - 1.0).abs() < 1e-6, "{seen:?}");
        assert_eq!(client.skipped.load(std::sync::atomic::Ordering::Relaxed), 1);
    }
}

#[cfg(test)]
mod tests {
    use super::{
        BLOCK, SUBNET_BLOCK, Trackers, sdgt_half_step, subnet_step, weighted_sum, z_update,
    };

    /// A client whose task failed gets x̄ and y_c for all its devices next round, sampled or
    /// not, where a client that answered gets them only for its sampled devices.
    #[test]
    fn a_failed_client_s_devices_take_the_global_model_next_round() {
        use super::{Algo, DeviceStrategy, FitRes, Hyper, ids};
        use crate::fabric::Failure;
        use crate::params::Params;
        use crate::strategy::Strategy;
        use rand::SeedableRng;
        use std::sync::Arc;
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let topo = Arc::new(crate::topology::Topology::build(8, 2, None, &mut rng).unwrap());
        let clients: std::collections::BTreeMap<u32, Vec<u32>> =
            [(0u32, vec![0u32, 1, 2, 3]), (1, vec![4, 5, 6, 7])]
                .into_iter()
                .collect();
        for algo in [Algo::SdGt, Algo::SdFedAvg] {
            let hyper = Hyper {
                algo,
                lr: 0.1,
                t: 2,
                batch: 4,
            };
            let mut st = DeviceStrategy::new(
                hyper,
                1,
                Arc::clone(&topo),
                Arc::clone(&topo),
                clients.clone(),
                9,
                3,
            );
            let x = Params::flat("x_bar", vec![0.5; 3]);
            let tasks = st.configure_fit(0, &x, &[0, 1]);
            assert_eq!(tasks.len(), 2);
            // Client 0 answers for its sampled device; client 1 fails.
            let sampled0: Vec<u32> = ids(&tasks[0].1.config, "report").into_iter().collect();
            assert_eq!(sampled0.len(), 1, "{algo:?}");
            let role = if algo == Algo::SdGt { "delta" } else { "x" };
            let mut p = Params::new();
            for d in &sampled0 {
                p.insert(&format!("{role}.{d}"), vec![3], vec![0.25; 3])
                    .unwrap();
            }
            let res = FitRes {
                params: p,
                n_examples: 4,
                metrics: Default::default(),
            };
            let failures = [Failure {
                client: 1,
                reason: "died".into(),
            }];
            let x = st.aggregate_fit(0, &x, vec![(0, res)], &failures).unwrap();
            let tasks = st.configure_fit(1, &x, &[0, 1]);
            let reset =
                |c: usize| -> Vec<u32> { ids(&tasks[c].1.config, "reset").into_iter().collect() };
            assert_eq!(reset(0), sampled0, "{algo:?}: the answering client");
            assert_eq!(reset(1), vec![4, 5, 6, 7], "{algo:?}: the failed client");
            assert!(tasks[1].1.params.get("x_bar").is_some(), "{algo:?}");
            if algo == Algo::SdGt {
                assert!(tasks[1].1.params.get("y_c.1").is_some());
            }
        }
    }

    fn vecs(dim: usize, k: usize) -> Vec<Vec<f32>> {
        (0..k)
            .map(|j| {
                (0..dim)
                    .map(|i| ((i * 7 + j * 13) as f32 * 0.37).sin() * 3.0)
                    .collect()
            })
            .collect()
    }

    /// One full pass per neighbour into a zeroed vector: the arithmetic the blocked and fused
    /// kernels must reproduce bit for bit (NATS and in-process runs, and runs of earlier
    /// builds, are compared for bit-identity).
    fn naive_sum(ws: &[f32], vs: &[Vec<f32>], dim: usize) -> Vec<f32> {
        let mut out = vec![0f32; dim];
        for (w, v) in ws.iter().zip(vs) {
            out.iter_mut().zip(v).for_each(|(a, b)| *a += w * b);
        }
        out
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    /// Includes a last block shorter than the others, and a reused output whose old contents
    /// must not leak in.
    #[test]
    fn blocked_mixing_equals_one_pass_per_neighbour() {
        let dim = BLOCK * 2 + 37;
        let vs = vecs(dim, 4);
        let ws = [0.25f32, 0.4, 1.0 / 3.0, 0.0166];
        let terms: Vec<(f32, &[f32])> = ws
            .iter()
            .zip(&vs)
            .map(|(w, v)| (*w, v.as_slice()))
            .collect();
        let mut got = vec![7.0; dim];
        weighted_sum(&terms, &mut got);
        assert!(same_bits(&got, &naive_sum(&ws, &vs, dim)));
        let mut none = vec![7.0; 5];
        weighted_sum(&[], &mut none);
        assert!(same_bits(&none, &[0.0; 5]));
    }

    /// The fused z update equals Σ W d into a vector, then `z += (d − Wd)/tg` (from a copy of
    /// z at the first step), bit for bit.
    #[test]
    fn fused_z_update_equals_mix_then_update() {
        let dim = BLOCK + 1000;
        let vs = vecs(dim, 3);
        let ws = [0.5f32, 0.3, 0.2];
        let terms: Vec<(f32, &[f32])> = ws
            .iter()
            .zip(&vs)
            .map(|(w, v)| (*w, v.as_slice()))
            .collect();
        let own = &vs[1];
        let z0: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.01).cos()).collect();
        let tg = 0.015f32;
        let md = naive_sum(&ws, &vs, dim);
        let mut want = z0.clone();
        want.iter_mut()
            .zip(own.iter().zip(&md))
            .for_each(|(z, (a, b))| *z += (a - b) / tg);
        let mut got = vec![9.0; dim];
        z_update(&terms, own, tg, Some(&z0), &mut got);
        assert!(same_bits(&got, &want));
        // A second step updates in place.
        want.iter_mut()
            .zip(own.iter().zip(&md))
            .for_each(|(z, (a, b))| *z += (a - b) / tg);
        z_update(&terms, own, tg, None, &mut got);
        assert!(same_bits(&got, &want));
        // And it is not a no-op that happens to match: a different own d changes z.
        let mut other = got.clone();
        z_update(&terms, &vs[0], tg, None, &mut other);
        assert!(!same_bits(&other, &want));
    }

    /// The block-wise step of a subnet held by one client (the AVX-512 build where the CPU
    /// has it) equals the exchange path's kernels applied to whole vectors, bit for bit, for
    /// SD-GT at a first and a later step and for SD-FedAvg; a round's result then does not
    /// depend on whether a subnet's devices share a client.
    #[test]
    fn subnet_step_equals_the_exchange_path() {
        let (n, dim) = (3, SUBNET_BLOCK * 2 + 77);
        let v = vecs(dim, 4 * n + 1);
        let (x, rest) = v.split_at(n);
        let (g, rest) = rest.split_at(n);
        let (y, rest) = rest.split_at(n);
        let (z, _) = rest.split_at(n);
        // Metropolis rows of a path 0 – 1 – 2, self included, not in index order.
        let w: Vec<Vec<(usize, f64)>> = vec![
            vec![(1, 1.0 / 3.0), (0, 2.0 / 3.0)],
            vec![(0, 1.0 / 3.0), (1, 1.0 / 3.0), (2, 1.0 / 3.0)],
            vec![(2, 2.0 / 3.0), (1, 1.0 / 3.0)],
        ];
        let (gamma, tg) = (0.01f32, 0.05f32);
        for (sdgt, first) in [(true, true), (true, false), (false, true)] {
            // Exchange path: xh, d per device, then Σ W xh and the z update per device.
            let (mut xh, mut dd) = (vec![vec![0f32; dim]; n], vec![vec![0f32; dim]; n]);
            for j in 0..n {
                if sdgt {
                    sdgt_half_step(&x[j], &g[j], &y[j], &z[j], gamma, &mut xh[j], &mut dd[j]);
                } else {
                    xh[j] = x[j].iter().zip(&g[j]).map(|(x, g)| x - gamma * g).collect();
                }
            }
            let zprev: Vec<Vec<f32>> = z
                .iter()
                .map(|z| z.iter().map(|v| v * 0.5).collect())
                .collect();
            let (mut want_x, mut want_z) = (vec![vec![0f32; dim]; n], zprev.clone());
            for i in 0..n {
                weighted_sum(&terms_of(&w[i], &xh), &mut want_x[i]);
                if sdgt {
                    let base = first.then_some(&z[i][..]);
                    z_update(&terms_of(&w[i], &dd), &dd[i], tg, base, &mut want_z[i]);
                }
            }
            let mut got_x = x.to_vec();
            let mut got_z = zprev.clone();
            let gv: Vec<&[f32]> = g.iter().map(Vec::as_slice).collect();
            let yv: Vec<&[f32]> = y.iter().map(Vec::as_slice).collect();
            let zv: Vec<&[f32]> = z.iter().map(Vec::as_slice).collect();
            let tr = sdgt.then_some(Trackers {
                y: &yv,
                z: &zv,
                znew: &mut got_z,
                first,
                tg,
            });
            subnet_step(&w, &mut got_x, &gv, tr, gamma, &mut Vec::new());
            for i in 0..n {
                assert!(
                    same_bits(&got_x[i], &want_x[i]),
                    "x of {i} (sdgt {sdgt}, first {first})"
                );
                assert!(
                    same_bits(&got_z[i], &want_z[i]),
                    "z of {i} (sdgt {sdgt}, first {first})"
                );
            }
            assert!(!same_bits(&got_x[0], &x[0]));
        }
    }

    fn terms_of<'v>(w: &[(usize, f64)], vs: &'v [Vec<f32>]) -> Vec<(f32, &'v [f32])> {
        w.iter().map(|&(j, wij)| (wij as f32, &vs[j][..])).collect()
    }

    /// The fused half step equals the two passes it replaced.
    #[test]
    fn fused_half_step_equals_two_passes() {
        let dim = 1001;
        let v = vecs(dim, 4);
        let (x, g, y, z) = (&v[0], &v[1], &v[2], &v[3]);
        let gamma = 0.03f32;
        let xh: Vec<f32> = (0..dim)
            .map(|i| x[i] - gamma * (g[i] + y[i] + z[i]))
            .collect();
        let dd: Vec<f32> = (0..dim).map(|i| xh[i] - x[i] + gamma * y[i]).collect();
        let (mut a, mut b) = (vec![1.0; dim], vec![2.0; dim]);
        sdgt_half_step(x, g, y, z, gamma, &mut a, &mut b);
        assert!(same_bits(&a, &xh) && same_bits(&b, &dd));
    }
}
