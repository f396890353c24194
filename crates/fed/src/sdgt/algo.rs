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

fn take(p: &Params, name: &str, dim: usize) -> Result<Vec<f32>, ClientError> {
    view(p, name, dim).map(<[f32]>::to_vec)
}

/// `dst ← src`, in `dst`'s own allocation when it has room.
fn refill(dst: &mut Vec<f32>, src: &[f32]) {
    dst.clear();
    dst.extend_from_slice(src);
}

/// `Σ_j w_j v_j[ni]` over `terms`, accumulated per element in `terms`' order from 0 (so the
/// sum is the same, bit for bit, as one full pass per neighbour), but a cache-sized block at a
/// time: the block stays in L1 while every neighbour is added, so the output is written to
/// memory once instead of once per neighbour. D2D mixing of a CNN-sized vector was most of
/// an SD-GT round's runtime overhead.
fn weighted_sum(
    terms: &[(f32, Vec<&[f32]>)],
    ni: usize,
    dim: usize,
    mut out: Vec<f32>,
) -> Vec<f32> {
    const BLOCK: usize = 2048;
    out.clear();
    out.reserve(dim);
    let mut start = 0;
    while start < dim {
        let end = (start + BLOCK).min(dim);
        match terms.split_first() {
            Some(((w, vs), rest)) => {
                // `0.0 + w·b` is what an accumulator starting at zero holds after its first
                // term (bit for bit, signed zeros included), without writing the zeros first.
                out.extend(vs[ni][start..end].iter().map(|b| 0.0 + w * b));
                let block = &mut out[start..end];
                for (w, vs) in rest {
                    block
                        .iter_mut()
                        .zip(&vs[ni][start..end])
                        .for_each(|(a, b)| *a += w * b);
                }
            }
            None => out.resize(end, 0.0),
        }
        start = end;
    }
    out
}

/// Model-sized vectors a client reuses from one local step to the next. A CNN round moves
/// four model-sized vectors per device and step through the exchange; allocating them afresh
/// made page faults and zeroing a sixth of a round's runtime overhead (`perf`, null model).
#[derive(Default)]
struct Pool(Vec<Vec<f32>>);

impl Pool {
    /// Most vectors kept: four per device and step are in flight, a few spare.
    const KEEP: usize = 64;

    /// An empty vector with room for `dim` values.
    fn get(&mut self, dim: usize) -> Vec<f32> {
        let mut v = self.0.pop().unwrap_or_default();
        v.clear();
        v.reserve(dim);
        v
    }

    fn put(&mut self, v: Vec<f32>) {
        if self.0.len() < Self::KEEP && v.capacity() > 0 {
            self.0.push(v);
        }
    }
}

/// What [`DeviceClient::mix`] returns.
struct MixOut {
    /// `Σ_j W_ij v_j` per slot and name.
    mixed: Vec<Vec<Vec<f32>>>,
    /// The vectors that were sent, per slot and name, handed back.
    sent: Vec<Vec<Vec<f32>>>,
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
    /// into `self.devices`): returns `Σ_j W_ij v_j` per device and name, over `topo`'s graphs,
    /// and hands `vals` back. The vectors are moved into the exchange and read back from its
    /// result (which holds every member's contribution, ours included) rather than copied:
    /// with the in-process fabric a subnet inside one client then costs no copy at all.
    #[allow(clippy::too_many_arguments)]
    fn mix(
        &self,
        ctx: &ClientCtx<'_>,
        topo: &Topology,
        step: u32,
        who: &[usize],
        names: &[&str],
        vals: Vec<Vec<Vec<f32>>>,
        pool: &mut Pool,
    ) -> Result<MixOut, ClientError> {
        let dim = self.model.dim();
        let mut by_subnet: BTreeMap<usize, Vec<(usize, usize)>> = BTreeMap::new();
        for (slot, &k) in who.iter().enumerate() {
            let (c, local) = topo.locate(self.devices[k].id).ok_or_else(|| {
                ClientError(format!("device {} is in no subnet", self.devices[k].id))
            })?;
            by_subnet.entry(c).or_default().push((slot, local));
        }
        let mut out = vec![Vec::new(); who.len()];
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
            let mut got = ctx
                .fabric
                .exchange(key, members, outgoing, self.exchange_timeout)?;
            if got.len() != members.len() {
                return Err(ClientError(format!(
                    "exchange returned {} contributions for {} members",
                    got.len(),
                    members.len()
                )));
            }
            let g = &topo.graphs[c];
            for &(slot, local) in &mine {
                // (w_ij, v_j per name) of the neighbours, self included, in the graph's order.
                let mut terms: Vec<(f32, Vec<&[f32]>)> = Vec::with_capacity(g.w[local].len());
                for &(j, wij) in &g.w[local] {
                    let (dev, p) = &got[j];
                    if *dev != members[j] {
                        return Err(ClientError(format!(
                            "exchange returned device {dev} at slot of {}",
                            members[j]
                        )));
                    }
                    let vs = names
                        .iter()
                        .map(|n| view(p, n, dim))
                        .collect::<Result<Vec<_>, _>>()?;
                    terms.push((wij as f32, vs));
                }
                out[slot] = (0..names.len())
                    .map(|ni| weighted_sum(&terms, ni, dim, pool.get(dim)))
                    .collect();
            }
            for &(slot, local) in &mine {
                let p = &mut got[local].1;
                back[slot] = names
                    .iter()
                    .map(|n| p.remove(n).map(|t| t.data).unwrap_or_default())
                    .collect();
            }
        }
        Ok(MixOut {
            mixed: out,
            sent: back,
        })
    }

    fn fit_inner(
        &mut self,
        ins: &FitIns,
        ctx: &ClientCtx<'_>,
    ) -> Result<(Params, Metrics), ClientError> {
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
        let mut g = vec![0f32; dim];
        let mut loss = 0f64;
        let mut nloss = 0usize;
        let mut pool = std::mem::take(&mut self.pool);
        match h.algo {
            Algo::SdGt | Algo::SdFedAvg => {
                for k in 0..self.devices.len() {
                    if reset.contains(&self.devices[k].id) {
                        let x = view(&ins.params, "x_bar", dim)?;
                        refill(&mut self.devices[k].x, x);
                        if h.algo == Algo::SdGt {
                            let (c, _) = topo.locate(self.devices[k].id).unwrap_or((0, 0));
                            let y = view(&ins.params, &format!("y_c.{c}"), dim)?;
                            refill(&mut self.devices[k].y, y);
                        }
                    }
                }
                let all: Vec<usize> = (0..self.devices.len()).collect();
                let copy = |pool: &mut Pool, v: &[f32]| {
                    let mut c = pool.get(v.len());
                    c.extend_from_slice(v);
                    c
                };
                let x0: Vec<Vec<f32>> =
                    self.devices.iter().map(|d| copy(&mut pool, &d.x)).collect();
                let mut znew: Vec<Vec<f32>> =
                    self.devices.iter().map(|d| copy(&mut pool, &d.z)).collect();
                for t in 0..h.t {
                    let t0 = Instant::now();
                    let mut vals = Vec::with_capacity(all.len());
                    for &k in &all {
                        loss += self.grad_at_x(k, h.batch, &mut g);
                        nloss += 1;
                        let d = &self.devices[k];
                        if h.algo == Algo::SdGt {
                            // Zipped, not indexed: no bounds checks, so it vectorises
                            // (same expressions, same bits).
                            let mut xh = pool.get(dim);
                            xh.extend(
                                d.x.iter()
                                    .zip(&g)
                                    .zip(d.y.iter().zip(&d.z))
                                    .map(|((x, g), (y, z))| x - gamma * (g + y + z)),
                            );
                            let mut dd = pool.get(dim);
                            dd.extend(
                                xh.iter()
                                    .zip(&d.x)
                                    .zip(&d.y)
                                    .map(|((h, x), y)| h - x + gamma * y),
                            );
                            vals.push(vec![xh, dd]);
                        } else {
                            let mut xn = pool.get(dim);
                            xn.extend(d.x.iter().zip(&g).map(|(x, g)| x - gamma * g));
                            vals.push(vec![xn]);
                        }
                    }
                    compute += t0.elapsed().as_secs_f64();
                    let names: &[&str] = if h.algo == Algo::SdGt {
                        &["x", "d"]
                    } else {
                        &["x"]
                    };
                    let MixOut {
                        mut mixed,
                        sent: vals,
                    } = self.mix(ctx, &topo, t as u32, &all, names, vals, &mut pool)?;
                    let t1 = Instant::now();
                    for &k in &all {
                        if h.algo == Algo::SdGt {
                            let (dd, md) = (&vals[k][1], &mixed[k][1]);
                            if dd.len() != dim {
                                return Err(ClientError(format!(
                                    "exchange lost device {}'s own d",
                                    self.devices[k].id
                                )));
                            }
                            znew[k]
                                .iter_mut()
                                .zip(dd.iter().zip(md))
                                .for_each(|(z, (a, b))| *z += (a - b) / tg);
                        }
                        let old = std::mem::replace(
                            &mut self.devices[k].x,
                            std::mem::take(&mut mixed[k][0]),
                        );
                        pool.put(old);
                    }
                    for v in vals.into_iter().chain(mixed).flatten() {
                        pool.put(v);
                    }
                    compute += t1.elapsed().as_secs_f64();
                }
                for k in all {
                    let d = &mut self.devices[k];
                    if h.algo == Algo::SdGt {
                        pool.put(std::mem::replace(&mut d.z, std::mem::take(&mut znew[k])));
                    }
                    if report.contains(&d.id) {
                        if h.algo == Algo::SdGt {
                            let delta: Vec<f32> =
                                (0..dim).map(|i| d.x[i] - x0[k][i] + tg * d.y[i]).collect();
                            let _ = out.insert(&format!("delta.{}", d.id), vec![dim], delta);
                        } else {
                            let _ = out.insert(&format!("x.{}", d.id), vec![dim], d.x.clone());
                        }
                    }
                }
                for v in x0.into_iter().chain(znew) {
                    pool.put(v);
                }
            }
            Algo::Scaffold | Algo::FedAvg => {
                for k in 0..self.devices.len() {
                    let id = self.devices[k].id;
                    if !train.contains(&id) {
                        continue;
                    }
                    let t0 = Instant::now();
                    let xbar = take(&ins.params, "x_bar", dim)?;
                    let cg = if h.algo == Algo::Scaffold {
                        take(&ins.params, "c", dim)?
                    } else {
                        vec![0.0; dim]
                    };
                    let mut x = xbar.clone();
                    for _ in 0..h.t {
                        loss += self.grad(k, &x, h.batch, &mut g);
                        nloss += 1;
                        let ci = &self.devices[k].c;
                        for i in 0..dim {
                            x[i] -= gamma * (g[i] - ci[i] + cg[i]);
                        }
                    }
                    let d = &mut self.devices[k];
                    if h.algo == Algo::Scaffold {
                        let cnew: Vec<f32> = (0..dim)
                            .map(|i| d.c[i] - cg[i] + (xbar[i] - x[i]) / tg)
                            .collect();
                        let dc: Vec<f32> = (0..dim).map(|i| cnew[i] - d.c[i]).collect();
                        let dx: Vec<f32> = (0..dim).map(|i| x[i] - xbar[i]).collect();
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
                        .map(|&k| vec![self.devices[k].x.clone(), self.devices[k].y.clone()])
                        .collect();
                    let mixed = self
                        .mix(ctx, &topo, t as u32, &all, &["x", "v"], vals, &mut pool)?
                        .mixed;
                    let t0 = Instant::now();
                    for &k in &all {
                        let xn: Vec<f32> = (0..dim)
                            .map(|i| mixed[k][0][i] - gamma * self.devices[k].y[i])
                            .collect();
                        loss += self.grad(k, &xn, h.batch, &mut g);
                        nloss += 1;
                        let d = &mut self.devices[k];
                        d.y = (0..dim).map(|i| mixed[k][1][i] + g[i] - d.c[i]).collect();
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
        self.pool = pool;
        let mut m = Metrics::new();
        m.insert("compute_seconds".into(), compute);
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
            s: self.s,
            t: self.hyper.t,
            choices: self.choices.clone(),
        }
    }

    /// Restores [`DeviceStrategy::state`].
    pub fn restore(&mut self, s: StrategyState) {
        self.reset = s.reset.into_iter().collect();
        self.comm = s.comm;
        self.y_c = s.y_c;
        self.c = s.c;
        self.lost_devices = s.lost_devices;
        self.s = s.s;
        self.hyper.t = s.t;
        self.choices = s.choices;
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
        let xbar = params.to_flat();
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
        // Every returned vector, keyed by (device, role), device-sorted by the BTreeMap.
        let mut got: BTreeMap<(u32, String), Vec<f32>> = BTreeMap::new();
        for (_, r) in &results {
            for (name, t) in r.params.iter() {
                if let Some((role, d)) = name.split_once('.')
                    && let Ok(d) = d.parse::<u32>()
                {
                    got.insert((d, role.to_string()), t.data.clone());
                }
            }
        }
        let arrived = |role: &str| -> Vec<(u32, &[f32])> {
            got.iter()
                .filter(|((_, r), _)| r == role)
                .map(|((d, _), v)| (*d, v.as_slice()))
                .collect()
        };
        let reporting: BTreeSet<u32> = got.keys().map(|(d, _)| *d).collect();
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
        let xbar = params.to_flat();
        let tg = (h.t as f64 * h.lr) as f32;
        let new = match h.algo {
            Algo::SdGt => {
                let deltas = arrived("delta");
                let mean = mean_flat(deltas.clone());
                for (c, members) in self.topo.subnets.iter().enumerate() {
                    let mine: Vec<(u32, &[f32])> = deltas
                        .iter()
                        .filter(|(d, _)| members.binary_search(d).is_ok())
                        .cloned()
                        .collect();
                    if mine.is_empty() {
                        continue;
                    }
                    let mc = mean_flat(mine);
                    self.y_c_old[c] = std::mem::replace(
                        &mut self.y_c[c],
                        (0..dim).map(|i| (mc[i] - mean[i]) / tg).collect(),
                    );
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
                (0..dim).map(|i| xbar[i] + mean[i]).collect::<Vec<f32>>()
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
                (0..dim).map(|i| xbar[i] + dx[i]).collect()
            }
        };
        if h.algo.uses_d2d() && h.algo != Algo::Gt {
            self.reset = reporting;
        }
        Ok(params.with_flat(&new)?)
    }
}

#[cfg(test)]
mod tests {
    use super::weighted_sum;

    /// The blocked sum must equal one full pass per neighbour bit for bit (the NATS and
    /// in-process runs, and runs before this change, are compared for bit-identity), including
    /// a last block shorter than the others.
    #[test]
    fn blocked_mixing_equals_one_pass_per_neighbour() {
        let dim = 2048 * 2 + 37;
        let vecs: Vec<Vec<f32>> = (0..4)
            .map(|j| {
                (0..dim)
                    .map(|i| ((i * 7 + j * 13) as f32 * 0.37).sin() * 3.0)
                    .collect()
            })
            .collect();
        let ws = [0.25f32, 0.4, 1.0 / 3.0, 0.0166];
        let terms: Vec<(f32, Vec<&[f32]>)> = ws
            .iter()
            .zip(&vecs)
            .map(|(w, v)| (*w, vec![v.as_slice(), v.as_slice()]))
            .collect();
        let mut naive = vec![0f32; dim];
        for (w, v) in ws.iter().zip(&vecs) {
            naive.iter_mut().zip(v).for_each(|(a, b)| *a += w * b);
        }
        for ni in 0..2 {
            // A reused buffer's old contents (here longer than the result) must not leak in.
            let got = weighted_sum(&terms, ni, dim, vec![7.0; dim + 5]);
            assert_eq!(got.len(), dim);
            assert!(
                got.iter()
                    .zip(&naive)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
        assert!(weighted_sum(&terms, 0, 0, vec![1.0; 4]).is_empty());
    }
}
