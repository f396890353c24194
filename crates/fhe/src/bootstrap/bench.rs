//! The measurements behind `ferrolab ckks bootstrap-bench`: bootstrapping latency (median of
//! `reps` runs), precision (worst and mean slot error over every slot of every run, each run
//! on fresh uniform inputs in [−1, 1]), levels left, key-set size in memory and on the wire
//! (seed-compressed), and the process's peak resident memory.

use super::{BootChain, Bootstrapper, SlotKind};
use crate::ckks::{Decryptor, Encryptor, KeyGenerator};
use crate::complex::C64;
use crate::error::{FheError, Result};
use crate::eval::Evaluator;
use crate::params::Context;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::Instant;

/// One (slot count, slot kind) configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct BootRow {
    /// Slot count n.
    pub slots: usize,
    /// Real or complex.
    pub kind: SlotKind,
    /// Each timed run, ms.
    pub ms: Vec<f64>,
    /// −log2 of the largest slot error over all runs.
    pub precision_bits: f64,
    /// −log2 of the mean slot error.
    pub precision_bits_mean: f64,
    /// Levels left after bootstrapping.
    pub levels_after: usize,
    /// Rotation keys generated (plus conjugation and relinearisation).
    pub rotation_keys: usize,
    /// Key set in memory, bytes.
    pub key_bytes: usize,
    /// Key set on the wire, seed-compressed, bytes.
    pub key_wire_bytes: usize,
    /// Encoded DFT factors, bytes.
    pub dft_bytes: usize,
    /// Diagonals per CoeffToSlot and SlotToCoeff factor.
    pub diagonals: (Vec<usize>, Vec<usize>),
    /// EvalMod's Chebyshev degree and K.
    pub evalmod_degree: usize,
    /// The overflow bound K.
    pub k_range: f64,
    /// Key generation, ms.
    pub keygen_ms: f64,
    /// Precomputation (DFT factors, EvalMod polynomial), ms.
    pub setup_ms: f64,
    /// Stage times of the last timed run.
    pub stages: super::StageTimes,
}

impl BootRow {
    /// Median of the timed runs.
    pub fn median_ms(&self) -> f64 {
        let mut t = self.ms.clone();
        t.sort_by(|a, b| a.total_cmp(b));
        t.get(t.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Secret Hamming weight of every bootstrapping set here.
pub const SECRET_WEIGHT: usize = 192;

/// The chain `bootstrap-bench` uses for `log_n` and the levels asked for: the documented
/// N = 2^16 sets, or (with `allow_insecure`) the insecure test chain for smaller N.
pub fn chain_for(log_n: u32, levels_after: usize, allow_insecure: bool) -> Result<BootChain> {
    match (log_n, levels_after) {
        (16, 9) => Ok(BootChain::n16_l9()),
        (16, 16) => Ok(BootChain::n16_l16()),
        (16, l) => Err(FheError::InvalidInput(format!(
            "--levels-after {l}: the N = 2^16 sets leave 9 or 16 levels"
        ))),
        (13..=15, _) if allow_insecure => {
            let mut c = BootChain::insecure_test(log_n);
            c.levels_after = levels_after;
            Ok(c)
        }
        (13..=15, _) => Err(FheError::InvalidParams(format!(
            "no 128-bit bootstrapping set at log N = {log_n} (sparse secret h = 192 is documented at N = 65536 only); pass --allow-insecure for a test run"
        ))),
        _ => Err(FheError::InvalidParams(format!(
            "log N = {log_n}: bootstrapping sets exist for 13..=16 (16 without --allow-insecure)"
        ))),
    }
}

/// CPU time (user + system) this process has used so far, ms (Linux, 10 ms ticks; 0
/// elsewhere). On a shared machine a stage's CPU time moves far less with the load than its
/// wall time, which also counts the time spent waiting for a core.
pub fn process_cpu_ms() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state (field 3).
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) * 10.0
}

/// Peak resident set size of this process so far, bytes (Linux; 0 elsewhere).
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Runs one configuration: builds the bootstrapper, generates exactly its keys, and times
/// `reps` bootstraps of fresh inputs (encrypted at level 0 with the ladder's scale).
pub fn run_one(
    ctx: &std::sync::Arc<Context>,
    chain: &BootChain,
    slots: usize,
    kind: SlotKind,
    reps: usize,
    seed: u64,
) -> Result<BootRow> {
    run_one_with(ctx, chain.config(slots, kind, SECRET_WEIGHT), reps, seed)
}

/// [`run_one`] with an explicit configuration (precision experiments: message ratio,
/// double angles, K, interpolation target).
pub fn run_one_with(
    ctx: &std::sync::Arc<Context>,
    cfg: super::BootstrapConfig,
    reps: usize,
    seed: u64,
) -> Result<BootRow> {
    let t = Instant::now();
    let bt = Bootstrapper::new(ctx, cfg)?;
    let setup_ms = t.elapsed().as_secs_f64() * 1e3;
    run_prepared(ctx, &bt, setup_ms, reps, seed)
}

/// Bytes the key set of `bt` will hold in memory, known before it is generated: one switching
/// key per rotation step plus conjugation and relinearisation, each `dnum` digits of two
/// polynomials over every ciphertext and special prime.
pub fn key_bytes_estimate(ctx: &Context, bt: &Bootstrapper) -> u64 {
    let keys = bt.rotations().len() as u64 + 2;
    let limbs = (ctx.q.len() + ctx.p.len()) as u64;
    keys * ctx.dnum as u64 * 2 * limbs * ctx.n as u64 * 8
}

/// A generous upper bound of one bootstrap-bench configuration's peak memory, for the
/// resource guard. Besides the keys and DFT factors, key switching holds hoisted digit
/// decompositions and rotated copies whose size grows with the key size; at N = 2^16 the
/// measured peak exceeded keys + DFT by 0.46x–0.78x of the key size (crates/fhe/README.md),
/// so 0.75x of the keys and 1 GiB are added on top.
pub fn peak_bytes_estimate(ctx: &Context, bt: &Bootstrapper) -> u64 {
    let keys = key_bytes_estimate(ctx, bt);
    keys + keys / 4 * 3 + bt.size_bytes() as u64 + (1 << 30)
}

/// [`run_one_with`] on a bootstrapper already prepared (`setup_ms` its precomputation time).
pub fn run_prepared(
    ctx: &std::sync::Arc<Context>,
    bt: &Bootstrapper,
    setup_ms: f64,
    reps: usize,
    seed: u64,
) -> Result<BootRow> {
    let cfg = bt.config();
    let (slots, kind, h) = (cfg.slots, cfg.kind, cfg.secret_weight);
    let t = Instant::now();
    let mut kg = KeyGenerator::new_sparse_seeded(ctx, h, seed)?;
    let pk = kg.public_key();
    let keys = bt.generate_keys(&mut kg);
    let keygen_ms = t.elapsed().as_secs_f64() * 1e3;
    let key_bytes = keys.size_bytes();
    let key_wire_bytes = keys.galois.wire_bytes_compressed()
        + keys
            .relin
            .as_ref()
            .map_or(0, |r| r.0.wire_bytes_compressed());
    let ev = Evaluator::new(ctx, keys)?;
    let dec = Decryptor::new(ctx, kg.secret_key())?;
    let mut enc = Encryptor::new_seeded(ctx, seed ^ 0x5eed);
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(slots as u64));
    let full = ctx.slots();
    let mut ms = Vec::new();
    let mut stages = super::StageTimes::default();
    let (mut worst, mut sum, mut count) = (0.0f64, 0.0f64, 0usize);
    for _ in 0..reps.max(1) {
        let v: Vec<C64> = (0..slots)
            .map(|_| {
                let re = 2.0 * rng.random::<f64>() - 1.0;
                match kind {
                    SlotKind::Real => C64::real(re),
                    SlotKind::Complex => C64::new(re, 2.0 * rng.random::<f64>() - 1.0),
                }
            })
            .collect();
        let z: Vec<C64> = (0..full).map(|t| v[t % slots]).collect();
        let ct = enc.encrypt(&pk, &ctx.encode(&z, 0, ctx.scale_at(0))?)?;
        let t = Instant::now();
        let (out, st) = bt.bootstrap_timed(&ev, &ct)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        stages = st;
        let got = dec.decrypt_decode(&out)?;
        for (g, w) in got.iter().zip(&z) {
            let e = (*g - *w).abs();
            worst = worst.max(e);
            sum += e;
            count += 1;
        }
        eprintln!(
            "  n = {slots} {kind:?}: {:.0} ms, {:.1} bits so far",
            ms.last().copied().unwrap_or(0.0),
            -worst.log2()
        );
    }
    Ok(BootRow {
        slots,
        kind,
        ms,
        precision_bits: -worst.max(1e-300).log2(),
        precision_bits_mean: -(sum / count.max(1) as f64).max(1e-300).log2(),
        levels_after: bt.levels_after(),
        rotation_keys: bt.rotations().len(),
        key_bytes,
        key_wire_bytes,
        dft_bytes: bt.size_bytes(),
        diagonals: bt.diagonals(),
        evalmod_degree: bt.eval_mod_poly().cheb.degree(),
        k_range: bt.eval_mod_poly().k_range,
        keygen_ms,
        setup_ms,
        stages,
    })
}
