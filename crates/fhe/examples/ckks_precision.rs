//! Precision of one multiplication (with relinearisation and rescale) and of one rotation over
//! several independently generated key sets and many random inputs: the ferrolab side of the
//! precision comparison in bench/ckks_harness.py (SEAL and OpenFHE: bench/ckks_seal.py and
//! bench/ckks_openfhe.py with `--precision KEYSETS INPUTS`).
//!
//! ```text
//! cargo run --release -p ferrolab-fhe --example ckks_precision -- --log-n 14 --keysets 3 --inputs 20
//! cargo run --release -p ferrolab-fhe --example ckks_precision -- --log-n 14 --params
//! ```
//!
//! Prints one JSON line. Key set k (0-based) is generated from seed `--seed` + k; its encryption
//! noise from a generator seeded (2 << 40) | key seed and its inputs from one seeded
//! (1 << 40) | key seed, so every key set and every input is distinct and the run is
//! reproducible. Inputs x, y are uniform in [-1, 1] in every slot, encoded at the top level with
//! the standard scale and encrypted with the public key. Per input the precision is
//! -log2(max over slots |Re(decrypted) - exact|) (the worst slot; the real part, which is what
//! SEAL's `decode_double` and OpenFHE's `GetRealPackedValue` return) of x*y after
//! `mul_relin_rescale`, and of x rotated left by one slot after `rotate`. The output holds
//! every figure (`[key set][input]`); the harness summarises them as every side's.
//! `--params` prints only the parameter set (the chain the other sides are given).

use clap::{Arg, Command, value_parser};
use ferrolab_fhe::{C64, Context, Decryptor, Encryptor, Evaluator, KeyGenerator, ParamSpec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::process::ExitCode;

fn command() -> Command {
    Command::new("ckks_precision")
        .about("CKKS precision over several seeded key sets and random inputs (one JSON line)")
        .arg(
            Arg::new("log-n")
                .long("log-n")
                .value_parser(value_parser!(u32).range(13..=16))
                .default_value("14")
                .help("Ring degree as log2 N (a standard parameter set: 13..=16)"),
        )
        .arg(
            Arg::new("keysets")
                .long("keysets")
                .value_parser(value_parser!(u64).range(1..=1000))
                .default_value("3")
                .help("Independently generated key sets"),
        )
        .arg(
            Arg::new("inputs")
                .long("inputs")
                .value_parser(value_parser!(u64).range(1..=100_000))
                .default_value("20")
                .help("Random inputs per key set"),
        )
        .arg(
            Arg::new("seed")
                .long("seed")
                .value_parser(value_parser!(u64).range(0..=u32::MAX as u64))
                .default_value("0")
                .help("Seed of key set 0 (key set k uses seed + k)"),
        )
        .arg(
            Arg::new("params")
                .long("params")
                .action(clap::ArgAction::SetTrue)
                .help("Print only the parameter set (q and p bit sizes, log2 scale) and exit"),
        )
}

/// -log2 of the worst slot's error in the real part.
fn worst_bits(got: &[C64], want: &[f64]) -> f64 {
    let max = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g.re - w).abs())
        .fold(0.0, f64::max)
        .max(1e-300);
    -max.log2()
}

fn measure(spec: ParamSpec, keysets: u64, inputs: u64, seed: u64) -> ferrolab_fhe::Result<String> {
    let (log_n, q_bits, p_bits, log_scale) = (
        spec.log_n,
        spec.q_bits.clone(),
        spec.p_bits.clone(),
        spec.log_scale,
    );
    let ctx = Context::new(spec)?;
    let slots = ctx.slots();
    let top = ctx.max_level();
    let scale = ctx.scale_at(top);
    let mut mrr = Vec::new();
    let mut rot = Vec::new();
    let mut key_seeds = Vec::new();
    for k in 0..keysets {
        let key_seed = seed + k;
        key_seeds.push(key_seed);
        let mut kg = KeyGenerator::new_seeded(&ctx, key_seed);
        let pk = kg.public_key();
        let keys = kg.evaluation_keys(&[1], false);
        let mut enc = Encryptor::new_seeded(&ctx, (2 << 40) | key_seed);
        let dec = Decryptor::new(&ctx, kg.secret_key())?;
        let ev = Evaluator::new(&ctx, keys)?;
        let mut rng = StdRng::seed_from_u64((1 << 40) | key_seed);
        let (mut mrr_k, mut rot_k) = (Vec::new(), Vec::new());
        for _ in 0..inputs {
            let x: Vec<f64> = (0..slots)
                .map(|_| 2.0 * rng.random::<f64>() - 1.0)
                .collect();
            let y: Vec<f64> = (0..slots)
                .map(|_| 2.0 * rng.random::<f64>() - 1.0)
                .collect();
            let cx = enc.encrypt(&pk, &ctx.encode_real(&x, top, scale)?)?;
            let cy = enc.encrypt(&pk, &ctx.encode_real(&y, top, scale)?)?;
            let prod: Vec<f64> = x.iter().zip(&y).map(|(a, b)| a * b).collect();
            let got = dec.decrypt_decode(&ev.mul_relin_rescale(&cx, &cy)?)?;
            mrr_k.push(worst_bits(&got, &prod));
            let shifted: Vec<f64> = (0..slots).map(|j| x[(j + 1) % slots]).collect();
            let got = dec.decrypt_decode(&ev.rotate(&cx, 1)?)?;
            rot_k.push(worst_bits(&got, &shifted));
        }
        eprintln!(
            "ckks_precision: N = 2^{log_n}, key set {} of {keysets} done",
            k + 1
        );
        mrr.push(mrr_k);
        rot.push(rot_k);
    }
    Ok(serde_json::json!({
        "log_n": log_n, "q_bits": q_bits, "p_bits": p_bits, "log_scale": log_scale,
        "keysets": keysets, "inputs": inputs, "key_seeds": key_seeds,
        "mul_relin_rescale": mrr, "rotate": rot,
    })
    .to_string())
}

fn main() -> ExitCode {
    let m = match command().try_get_matches() {
        Ok(m) => m,
        // Usage errors exit 2 (clap's code), --help 0.
        Err(e) => e.exit(),
    };
    let (Some(&log_n), Some(&keysets), Some(&inputs), Some(&seed)) = (
        m.get_one::<u32>("log-n"),
        m.get_one::<u64>("keysets"),
        m.get_one::<u64>("inputs"),
        m.get_one::<u64>("seed"),
    ) else {
        eprintln!("error: missing argument");
        return ExitCode::from(2);
    };
    let spec = match ParamSpec::standard(log_n) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --log-n {log_n}: {e}");
            return ExitCode::from(2);
        }
    };
    if m.get_flag("params") {
        println!(
            "{}",
            serde_json::json!({"log_n": spec.log_n, "q_bits": spec.q_bits,
                               "p_bits": spec.p_bits, "log_scale": spec.log_scale})
        );
        return ExitCode::SUCCESS;
    }
    match measure(spec, keysets, inputs, seed) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
