//! The measurements behind `ferrolab ckks bench`: per-operation latency (median of `reps`
//! runs, one thread) and the precision left after each operation, in bits:
//! −log2(max |decrypted − exact|) over all N/2 slots (the worst slot; the mean-error figure,
//! which libraries such as Lattigo print, is reported alongside as `_mean`).

use crate::ckks::{Decryptor, Encryptor, KeyGenerator};
use crate::complex::C64;
use crate::error::{FheError, Result};
use crate::eval::Evaluator;
use crate::params::{Context, ParamSpec};
use crate::polyeval::{Chebyshev, relu_approx};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::time::Instant;

/// One measured operation.
#[derive(Debug, Clone, PartialEq)]
pub struct OpFigure {
    /// Operation name (`mul_relin_rescale`, `rotate`, ...).
    pub op: String,
    /// Median latency in milliseconds (None for precision-only entries).
    pub ms: Option<f64>,
    /// −log2 of the worst slot error.
    pub precision_bits: Option<f64>,
    /// −log2 of the mean slot error.
    pub precision_bits_mean: Option<f64>,
}

/// Everything measured for one parameter set.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchResult {
    /// log2 N.
    pub log_n: u32,
    /// Top level L.
    pub max_level: usize,
    /// log2(QP).
    pub log_qp: f64,
    /// Digits of the key-switching gadget.
    pub dnum: usize,
    /// Key generation time (secret, public, relinearisation, 17 Galois keys), ms.
    pub keygen_ms: f64,
    /// Per-operation figures.
    pub ops: Vec<OpFigure>,
}

/// Median of `reps` timed runs of `f`, after `warmup` untimed ones.
fn median_ms(warmup: usize, reps: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warmup {
        f()?;
    }
    let mut t = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        let s = Instant::now();
        f()?;
        t.push(s.elapsed().as_secs_f64() * 1e3);
    }
    t.sort_by(|a, b| a.total_cmp(b));
    Ok(t[t.len() / 2])
}

/// (worst, mean) precision bits of `got` against `want`.
pub fn precision_bits(got: &[C64], want: &[C64]) -> (f64, f64) {
    let errs: Vec<f64> = got.iter().zip(want).map(|(a, b)| (*a - *b).abs()).collect();
    let max = errs.iter().copied().fold(0.0, f64::max).max(1e-300);
    let mean = (errs.iter().sum::<f64>() / errs.len().max(1) as f64).max(1e-300);
    (-max.log2(), -mean.log2())
}

/// Runs every benchmark for `spec` with `reps` repetitions per timed operation, on one thread.
/// Keys and randomness are seeded (reproducible, NOT secure): this is a measurement.
pub fn run(spec: ParamSpec, reps: usize, seed: u64) -> Result<BenchResult> {
    run_threads(spec, reps, seed, 1)
}

/// [`run`] on a private pool of `threads` threads (the RNS limbs of each operation spread
/// over them). Everything runs inside the pool, so with one thread the limb loops execute
/// inline on that thread, with no hand-off to another.
pub fn run_threads(spec: ParamSpec, reps: usize, seed: u64, threads: usize) -> Result<BenchResult> {
    run_warmup(spec, reps, 0, seed, threads)
}

/// [`run_threads`] with `warmup` untimed runs of every timed operation before its `reps` timed
/// ones (the comparison with SEAL and OpenFHE gives every side the same warm-up).
pub fn run_warmup(
    spec: ParamSpec,
    reps: usize,
    warmup: usize,
    seed: u64,
    threads: usize,
) -> Result<BenchResult> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .build()
        .map_err(|e| FheError::InvalidInput(format!("cannot start {threads} threads: {e}")))?;
    pool.install(|| run_inline(spec, reps, warmup, seed))
}

fn run_inline(spec: ParamSpec, reps: usize, warmup: usize, seed: u64) -> Result<BenchResult> {
    let ctx = Context::new(spec)?;
    let slots = ctx.slots();
    let top = ctx.max_level();
    let steps: Vec<i64> = (1..=16).collect();
    let t = Instant::now();
    let mut kg = KeyGenerator::new_seeded(&ctx, seed);
    let pk = kg.public_key();
    let keys = kg.evaluation_keys(&steps, true);
    let keygen_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut enc = Encryptor::new_seeded(&ctx, seed ^ 0x9e37_79b9);
    let dec = Decryptor::new(&ctx, kg.secret_key())?;
    let ev = Evaluator::new(&ctx, keys)?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut real = |n: usize| -> Vec<C64> {
        (0..n)
            .map(|_| C64::real(2.0 * rng.random::<f64>() - 1.0))
            .collect()
    };
    let x = real(slots);
    let y = real(slots);
    let mut ops = Vec::new();
    let mut push = |op: &str, ms: Option<f64>, prec: Option<(f64, f64)>| {
        ops.push(OpFigure {
            op: op.into(),
            ms,
            precision_bits: prec.map(|p| p.0),
            precision_bits_mean: prec.map(|p| p.1),
        })
    };

    let scale = ctx.scale_at(top);
    let ms = median_ms(warmup, reps, || ctx.encode(&x, top, scale).map(|_| ()))?;
    let px = ctx.encode(&x, top, scale)?;
    push(
        "encode",
        Some(ms),
        Some(precision_bits(&ctx.decode(&px)?, &x)),
    );
    let ms = median_ms(warmup, reps, || enc.encrypt(&pk, &px).map(|_| ()))?;
    let cx = enc.encrypt(&pk, &px)?;
    let cy = enc.encrypt(&pk, &ctx.encode(&y, top, scale)?)?;
    let dx = dec.decrypt_decode(&cx)?;
    push("encrypt", Some(ms), Some(precision_bits(&dx, &x)));
    let ms = median_ms(warmup, reps, || dec.decrypt_decode(&cx).map(|_| ()))?;
    push("decrypt", Some(ms), None);

    let ms = median_ms(warmup, reps, || ev.add(&cx, &cy).map(|_| ()))?;
    let sum: Vec<C64> = x.iter().zip(&y).map(|(a, b)| *a + *b).collect();
    push(
        "add",
        Some(ms),
        Some(precision_bits(
            &dec.decrypt_decode(&ev.add(&cx, &cy)?)?,
            &sum,
        )),
    );

    let prod: Vec<C64> = x.iter().zip(&y).map(|(a, b)| *a * *b).collect();
    let ms = median_ms(warmup, reps, || ev.mul(&cx, &cy).map(|_| ()))?;
    push("mul_relin", Some(ms), None);
    let m = ev.mul(&cx, &cy)?;
    let ms = median_ms(warmup, reps, || ev.rescale(&m).map(|_| ()))?;
    push("rescale", Some(ms), None);
    let ms = median_ms(warmup, reps, || ev.mul_relin_rescale(&cx, &cy).map(|_| ()))?;
    let r = ev.mul_relin_rescale(&cx, &cy)?;
    push(
        "mul_relin_rescale",
        Some(ms),
        Some(precision_bits(&dec.decrypt_decode(&r)?, &prod)),
    );

    let rot =
        |v: &[C64], k: usize| -> Vec<C64> { (0..slots).map(|j| v[(j + k) % slots]).collect() };
    let ms = median_ms(warmup, reps, || ev.rotate(&cx, 1).map(|_| ()))?;
    let r = ev.rotate(&cx, 1)?;
    push(
        "rotate",
        Some(ms),
        Some(precision_bits(&dec.decrypt_decode(&r)?, &rot(&x, 1))),
    );
    let ms = median_ms(warmup, reps, || ev.rotate_hoisted(&cx, &steps).map(|_| ()))?;
    let rs = ev.rotate_hoisted(&cx, &steps)?;
    let mut worst = (f64::INFINITY, f64::INFINITY);
    for (k, r) in rs.iter().enumerate() {
        let p = precision_bits(&dec.decrypt_decode(r)?, &rot(&x, k + 1));
        worst = (worst.0.min(p.0), worst.1.min(p.1));
    }
    push("hoisted_rotate16", Some(ms), Some(worst));
    let ms = median_ms(warmup, reps.min(3), || {
        for &s in &steps {
            ev.rotate(&cx, s)?;
        }
        Ok(())
    })?;
    push("sequential_rotate16", Some(ms), None);
    let ms = median_ms(warmup, reps, || ev.conjugate(&cx).map(|_| ()))?;
    push("conjugate", Some(ms), None);

    // Depth 8: a chain of 8 products of unit-modulus complex numbers (well conditioned: every
    // partial product keeps modulus 1, so the error measured is the scheme's, not amplified).
    if top >= 8 {
        let mut rng = StdRng::seed_from_u64(seed + 8);
        let mut unit = || -> Vec<C64> {
            (0..slots)
                .map(|_| C64::cis(2.0 * std::f64::consts::PI * rng.random::<f64>()))
                .collect()
        };
        let z0 = unit();
        let mut want = z0.clone();
        let mut acc = enc.encrypt(&pk, &ctx.encode(&z0, top, scale)?)?;
        let t = Instant::now();
        for _ in 0..8 {
            let z = unit();
            let l = acc.level;
            let cz = enc.encrypt(&pk, &ctx.encode(&z, l, ctx.scale_at(l))?)?;
            acc = ev.mul_relin_rescale(&acc, &cz)?;
            want = want.iter().zip(&z).map(|(a, b)| *a * *b).collect();
        }
        let ms = t.elapsed().as_secs_f64() * 1e3;
        push(
            "depth8",
            Some(ms),
            Some(precision_bits(&dec.decrypt_decode(&acc)?, &want)),
        );
    }

    // Degree-15 polynomial ReLU on [-1, 1]: encrypted vs the same polynomial in plaintext.
    let cheb: Chebyshev = relu_approx(15);
    if top < cheb.depth() {
        return Ok(BenchResult {
            log_n: ctx.log_n,
            max_level: top,
            log_qp: ctx.log_qp,
            dnum: ctx.dnum,
            keygen_ms,
            ops,
        });
    }
    let want: Vec<C64> = x.iter().map(|v| C64::real(cheb.eval(v.re))).collect();
    let ms = median_ms(warmup, reps.min(3), || {
        ev.eval_chebyshev(&cx, &cheb).map(|_| ())
    })?;
    let r = ev.eval_chebyshev(&cx, &cheb)?;
    push(
        "poly_relu15",
        Some(ms),
        Some(precision_bits(&dec.decrypt_decode(&r)?, &want)),
    );

    Ok(BenchResult {
        log_n: ctx.log_n,
        max_level: top,
        log_qp: ctx.log_qp,
        dnum: ctx.dnum,
        keygen_ms,
        ops,
    })
}
