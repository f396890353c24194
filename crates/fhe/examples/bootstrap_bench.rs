//! One bootstrapping configuration, measured without the CLI (which links every crate):
//! `cargo run --release -p ferrolab-fhe --example bootstrap_bench -- LOG_N LEVELS SLOTS
//! real|complex REPS [insecure]`. Prints latency, worst/mean precision bits and key sizes —
//! the figures `ferrolab ckks bootstrap-bench` reports, for quick precision experiments.
//!
//! Experiment knobs (environment): `BOOT_CHAIN=q0,LxB,LxB,LxB,LxB,LxB` (q_0 bits, then user,
//! SlotToCoeff, EvalMod, CoeffToSlot and special primes as count x bits or as `B/B/…`, lowest level first; the 128-bit check
//! still applies), `BOOT_RATIO` (log message ratio), `BOOT_R` (double angles), `BOOT_K`,
//! `BOOT_MAXDEG`, `BOOT_TOL`, `BOOT_DH` (0: DFT factors modulo Q, no double hoisting),
//! `BOOT_HORNER` (1: giant steps by Horner's rule, two keys per factor), `BOOT_COMPACT` (0:
//! every diagonal stored in full), `BOOT_BABY` (the DFT plans' baby-step weight); `BOOT_DIAG=1` splits one input's error into EvalMod's share
//! and the rest (CoeffToSlot noise, the sine's deviation, SlotToCoeff) by re-encrypting
//! the exact sine of the decrypted CoeffToSlot output.

use ferrolab_fhe::bootstrap::bench::{SECRET_WEIGHT, chain_for, peak_rss_bytes, run_one_with};
use ferrolab_fhe::bootstrap::{BootChain, Bootstrapper, SlotKind};
use ferrolab_fhe::params::Context;
use ferrolab_fhe::{C64, Decryptor, Encryptor, Evaluator, KeyGenerator};
use std::f64::consts::PI;

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    let v = std::env::var(name).ok()?;
    match v.parse() {
        Ok(x) => Some(x),
        Err(_) => {
            eprintln!("error: {name}={v:?} is not valid");
            std::process::exit(2)
        }
    }
}

/// `LxB` → L copies of B; `B/B/…` → those sizes, lowest level first.
fn primes(spec: &str) -> Option<Vec<u32>> {
    if spec.contains('/') {
        return spec.split('/').map(|b| b.parse().ok()).collect();
    }
    let (l, b) = spec.split_once('x')?;
    Some(vec![b.parse().ok()?; l.parse().ok()?])
}

fn chain_override(mut c: BootChain) -> BootChain {
    let Some(spec) = std::env::var("BOOT_CHAIN").ok() else {
        return c;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let parsed = (parts.len() == 6)
        .then(|| {
            Some((
                parts[0].parse::<u32>().ok()?,
                primes(parts[1])?,
                primes(parts[2])?,
                primes(parts[3])?,
                primes(parts[4])?,
                primes(parts[5])?,
            ))
        })
        .flatten();
    let Some((q0, user, stc, em, cts, p)) = parsed else {
        eprintln!("error: BOOT_CHAIN={spec:?} must be q0,LxB,LxB,LxB,LxB,LxB");
        std::process::exit(2)
    };
    c.q0_bits = q0;
    c.levels_after = user.len();
    c.scale_bits = user.first().copied().unwrap_or(c.scale_bits);
    c.stc_bits = stc;
    c.evalmod_bits = em;
    c.cts_bits = cts;
    c.p_bits = p;
    c
}

fn stats(err: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut worst, mut sum, mut n) = (0.0f64, 0.0, 0usize);
    for e in err {
        worst = worst.max(e);
        sum += e;
        n += 1;
    }
    (-worst.log2(), -(sum / n.max(1) as f64).log2())
}

/// One input through the stages by hand: the final error, and the final error when EvalMod
/// is replaced by a fresh encryption of the exact sine of its decrypted input.
fn diagnose(ctx: &std::sync::Arc<Context>, bt: &Bootstrapper) -> ferrolab_fhe::Result<()> {
    let cfg = bt.config().clone();
    let mut kg = KeyGenerator::new_sparse_seeded(ctx, cfg.secret_weight, 3)?;
    let pk = kg.public_key();
    let ev = Evaluator::new(ctx, bt.generate_keys(&mut kg))?;
    let dec = Decryptor::new(ctx, kg.secret_key())?;
    let mut enc = Encryptor::new_seeded(ctx, 4);
    let full = ctx.slots();
    let mut state = 12345u64;
    let mut rnd = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        2.0 * ((state >> 11) as f64 / (1u64 << 53) as f64) - 1.0
    };
    let v: Vec<C64> = (0..cfg.slots)
        .map(|_| match cfg.kind {
            SlotKind::Real => C64::real(rnd()),
            SlotKind::Complex => C64::new(rnd(), rnd()),
        })
        .collect();
    let z: Vec<C64> = (0..full).map(|t| v[t % cfg.slots]).collect();
    let ct = enc.encrypt(&pk, &ctx.encode(&z, 0, ctx.scale_at(0))?)?;
    let k = bt.prescale_factor(ct.scale);
    let low = ev.drop_to_level(&ct, 0)?;
    let low = if k > 1.0 {
        ev.mul_int(&low, k as i64)?
    } else {
        low
    };
    let s_in = ct.scale * k;
    let raised = bt.subring_trace(&ev, &bt.mod_raise(&low)?)?;
    let xs = bt.coeff_to_slot(&ev, &raised)?;
    let ys = xs
        .iter()
        .map(|x| bt.eval_mod(&ev, x))
        .collect::<ferrolab_fhe::Result<Vec<_>>>()?;
    let out = bt.slot_to_coeff(&ev, &ys, s_in)?;
    let got = dec.decrypt_decode(&out)?;
    let (w, m) = stats(got.iter().zip(&z).map(|(g, t)| (*g - *t).abs()));
    println!("diag: end to end {w:.2} worst / {m:.2} mean bits");
    // EvalMod's own error, in sine units, and the sine of the decrypted input re-encrypted.
    let kr = bt.eval_mod_poly().k_range;
    let l_m = bt.level_evalmod_out();
    let mut ideal = Vec::new();
    for (x, y) in xs.iter().zip(&ys) {
        // Decoded at level 1 (an exact drop): the CRT value of a high level overflows f64.
        let xd = dec.decrypt_decode(&ev.drop_to_level(x, 1)?)?;
        let yd = dec.decrypt_decode(&ev.drop_to_level(y, 1)?)?;
        let exact: Vec<f64> = xd.iter().map(|v| (2.0 * PI * kr * v.re).sin()).collect();
        let (w, m) = stats(yd.iter().zip(&exact).map(|(a, b)| (a.re - b).abs()));
        let (wf, mf) = stats(
            xd.iter()
                .map(|v| (kr * v.re - (kr * v.re).round()).abs() * 2.0 * PI),
        );
        println!(
            "diag: EvalMod error {w:.2} worst / {m:.2} mean bits (sine units); |2π·frac(K·x)| {wf:.2} / {mf:.2}"
        );
        let pt = ctx.encode_real(&exact, l_m, bt.evalmod_scale(l_m))?;
        ideal.push(enc.encrypt(&pk, &pt)?);
    }
    let out2 = bt.slot_to_coeff(&ev, &ideal, s_in)?;
    let got2 = dec.decrypt_decode(&out2)?;
    let (w, m) = stats(got2.iter().zip(&z).map(|(g, t)| (*g - *t).abs()));
    println!("diag: with exact sine of the decrypted CtS output {w:.2} worst / {m:.2} mean bits");
    let mut idx: Vec<usize> = (0..full).collect();
    idx.sort_by(|&a, &b| (got2[b] - z[b]).abs().total_cmp(&(got2[a] - z[a]).abs()));
    for &t in idx.iter().take(6) {
        println!(
            "diag:   slot {t} (mod n {}) error {:.2} bits, value {:?}",
            t % cfg.slots,
            -(got2[t] - z[t]).abs().log2(),
            z[t]
        );
    }
    let (w, m) = stats(got.iter().zip(&got2).map(|(g, t)| (*g - *t).abs()));
    println!("diag: EvalMod's share {w:.2} worst / {m:.2} mean bits");
    Ok(())
}

/// Per-slot error profile over `reps` inputs (real slots): the end-to-end error, and
/// SlotToCoeff's own error on a fresh encryption of the exact EvalMod output (the sine of
/// the message's coefficients, laid out as CoeffToSlot leaves them). Prints the slots (mod n)
/// with the largest RMS error and their ratio to the median slot's, so a systematic error at
/// particular slots stands out from noise.
fn profile(
    ctx: &std::sync::Arc<Context>,
    bt: &Bootstrapper,
    reps: usize,
) -> ferrolab_fhe::Result<()> {
    let cfg = bt.config().clone();
    let mut kg = KeyGenerator::new_sparse_seeded(ctx, cfg.secret_weight, 3)?;
    let pk = kg.public_key();
    let ev = Evaluator::new(ctx, bt.generate_keys(&mut kg))?;
    let dec = Decryptor::new(ctx, kg.secret_key())?;
    let mut enc = Encryptor::new_seeded(ctx, 4);
    let full = ctx.slots();
    let n = cfg.slots;
    let bits = n.trailing_zeros();
    let mut state = 99u64;
    let mut rnd = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        2.0 * ((state >> 11) as f64 / (1u64 << 53) as f64) - 1.0
    };
    let l_m = bt.level_evalmod_out();
    let mut acc = [
        vec![0.0f64; full],
        vec![0.0f64; full],
        vec![0.0f64; full],
        vec![0.0f64; full],
    ];
    for _ in 0..reps {
        let v: Vec<f64> = (0..n).map(|_| rnd()).collect();
        let z: Vec<C64> = (0..full).map(|t| C64::real(v[t % n])).collect();
        let ct = enc.encrypt(&pk, &ctx.encode(&z, 0, ctx.scale_at(0))?)?;
        let out = bt.bootstrap(&ev, &ct)?;
        let got = dec.decrypt_decode(&out)?;
        let k = bt.prescale_factor(ct.scale);
        let s_in = ct.scale * k;
        let q0 = ctx.q[0] as f64;
        // The message's coefficients (in units of the slot values), low half of the subring.
        let coeffs = ctx.encoder().slots_to_coeffs(&z);
        let y: Vec<f64> = (0..full)
            .map(|t| {
                let j = ferrolab_fhe::arith::bit_reverse(t % n, bits);
                (2.0 * PI * coeffs[(full / n) * j] * s_in / q0).sin()
            })
            .collect();
        let pt = ctx.encode_real(&y, l_m, bt.evalmod_scale(l_m))?;
        let stc = bt.slot_to_coeff(&ev, &[enc.encrypt(&pk, &pt)?], s_in)?;
        let got_stc = dec.decrypt_decode(&stc)?;
        // The same without the sine's deviation from its argument.
        let lin: Vec<f64> = y.iter().map(|v| v.asin()).collect();
        let pt = ctx.encode_real(&lin, l_m, bt.evalmod_scale(l_m))?;
        let stc = bt.slot_to_coeff(&ev, &[enc.encrypt(&pk, &pt)?], s_in)?;
        let got_lin = dec.decrypt_decode(&stc)?;
        for t in 0..full {
            acc[0][t] += (got[t] - z[t]).abs().powi(2);
            acc[1][t] += (got_stc[t] - z[t]).abs().powi(2);
            acc[2][t] += (got[t] - got_stc[t]).abs().powi(2);
            acc[3][t] += (got_lin[t] - z[t]).abs().powi(2);
        }
    }
    for (name, a) in [
        "end to end",
        "SlotToCoeff alone",
        "the rest (CtS, EvalMod)",
        "SlotToCoeff on the exact argument",
    ]
    .iter()
    .zip(&acc)
    {
        let rms: Vec<f64> = a.iter().map(|s| (s / reps as f64).sqrt()).collect();
        let mut sorted = rms.clone();
        sorted.sort_by(f64::total_cmp);
        let med = sorted[full / 2];
        let mut idx: Vec<usize> = (0..full).collect();
        idx.sort_by(|&a, &b| rms[b].total_cmp(&rms[a]));
        let top: Vec<String> = idx
            .iter()
            .take(8)
            .map(|&t| format!("{t}:{:.1}x", rms[t] / med))
            .collect();
        let quarter: Vec<String> = (0..4)
            .map(|q| format!("{:.1}x", rms[q * n / 4] / med))
            .collect();
        println!(
            "profile {name}: median RMS {:.2} bits; top (absolute slot:RMS/median) {}; slots 0,n/4,n/2,3n/4: {}",
            -med.log2(),
            top.join(" "),
            quarter.join(" ")
        );
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str, default: T) -> T {
    match args.get(i) {
        None => default,
        Some(s) => s.parse().unwrap_or_else(|_| {
            eprintln!("error: argument {i} ({what}) = {s:?} is not valid");
            std::process::exit(2)
        }),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let log_n: u32 = arg(&args, 0, "log N", 16);
    let levels: usize = arg(&args, 1, "levels after", 9);
    let slots: usize = arg(&args, 2, "slots", 4096);
    let kind = match args.get(3).map(String::as_str) {
        None | Some("real") => SlotKind::Real,
        Some("complex") => SlotKind::Complex,
        Some(k) => {
            eprintln!("error: argument 3 (kind) = {k:?} must be real or complex");
            std::process::exit(2)
        }
    };
    let reps: usize = arg(&args, 4, "reps", 1);
    let insecure = args.get(5).is_some_and(|s| s == "insecure");
    let run = || -> ferrolab_fhe::Result<()> {
        let chain = chain_override(chain_for(log_n, levels, insecure)?);
        let ctx = Context::new(chain.spec())?;
        let mut cfg = chain.config(slots, kind, SECRET_WEIGHT);
        if let Some(r) = env("BOOT_RATIO") {
            cfg.log_message_ratio = r;
        }
        if let Some(r) = env("BOOT_R") {
            cfg.double_angle = r;
        }
        if let Some(k) = env("BOOT_K") {
            cfg.k_range = Some(k);
        }
        if let Some(d) = env("BOOT_MAXDEG") {
            cfg.max_degree = d;
        }
        if let Some(t) = env("BOOT_TOL") {
            cfg.approx_tol = t;
        }
        if let Some(d) = env::<u32>("BOOT_DH") {
            cfg.double_hoisting = d > 0;
        }
        if let Some(d) = env::<u32>("BOOT_HORNER") {
            cfg.giant_horner = d > 0;
        }
        if let Some(d) = env::<u32>("BOOT_COMPACT") {
            cfg.compact_diagonals = d > 0;
        }
        if let Some(b) = env("BOOT_BABY") {
            cfg.baby_cost = b;
        }
        println!("chain {chain:?}");
        if env::<u32>("BOOT_DIAG").is_some_and(|d| d > 0) {
            let bt = Bootstrapper::new(&ctx, cfg.clone())?;
            println!(
                "EvalMod degree {} error {:.2e}",
                bt.eval_mod_poly().cheb.degree(),
                bt.eval_mod_poly().approx_error
            );
            diagnose(&ctx, &bt)?;
            if let Some(r) = env::<usize>("BOOT_PROFILE") {
                profile(&ctx, &bt, r)?;
            }
            if reps == 0 {
                return Ok(());
            }
        }
        let row = run_one_with(&ctx, cfg, reps, 1)?;
        println!(
            "log_n {log_n} levels_after {} slots {slots} {kind:?}: median {:.0} ms {:?}, bits worst {:.2} mean {:.2}, K {} degree {}, keys {:.2} GB (wire {:.2} GB, {} rotations), DFT {:.2} GB, keygen {:.1} s, peak RSS {:.2} GB, stages {:?}",
            row.levels_after,
            row.median_ms(),
            row.ms.iter().map(|m| m.round()).collect::<Vec<_>>(),
            row.precision_bits,
            row.precision_bits_mean,
            row.k_range,
            row.evalmod_degree,
            row.key_bytes as f64 / 1e9,
            row.key_wire_bytes as f64 / 1e9,
            row.rotation_keys,
            row.dft_bytes as f64 / 1e9,
            row.keygen_ms / 1e3,
            peak_rss_bytes() as f64 / 1e9,
            row.stages
        );
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
