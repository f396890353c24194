//! EvalMod alone on a bootstrapping set (only the relinearisation key: seconds to set up
//! where the whole bootstrap needs gigabytes of rotation keys): CPU time, key switches and
//! error against the exact sine, for A/B comparisons of the polynomial evaluation.
//! `cargo run --release -p ferrolab-fhe --example evalmod_bench -- LOG_N LEVELS REPS
//! [insecure]`.

use ferrolab_fhe::bootstrap::bench::{SECRET_WEIGHT, chain_for, process_cpu_ms};
use ferrolab_fhe::bootstrap::{Bootstrapper, SlotKind};
use ferrolab_fhe::params::Context;
use ferrolab_fhe::{Decryptor, Encryptor, Evaluator, KeyGenerator};
use std::f64::consts::PI;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (log_n, levels, reps) = (get(0, 16) as u32, get(1, 16), get(2, 2));
    let insecure = args.get(3).is_some_and(|s| s == "insecure");
    let run = || -> ferrolab_fhe::Result<()> {
        let chain = chain_for(log_n, levels, insecure)?;
        let ctx = Context::new(chain.spec())?;
        let cfg = chain.config(4096, SlotKind::Real, SECRET_WEIGHT);
        let bt = Bootstrapper::new(&ctx, cfg)?;
        let mut kg = KeyGenerator::new_sparse_seeded(&ctx, SECRET_WEIGHT, 3)?;
        let pk = kg.public_key();
        let ev = Evaluator::new(&ctx, kg.evaluation_keys(&[], false))?;
        let dec = Decryptor::new(&ctx, kg.secret_key())?;
        let mut enc = Encryptor::new_seeded(&ctx, 4);
        let k = bt.eval_mod_poly().k_range;
        let mut state = 12345u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let slots = ctx.slots();
        // x = (I + ε)/K: an integer overflow I and a small message ε, as after CoeffToSlot.
        let x: Vec<f64> = (0..slots)
            .map(|_| {
                let i = (rnd() * (2.0 * k - 1.0)).floor() - (k - 1.0);
                (i + (2.0 * rnd() - 1.0) * 2e-3) / k
            })
            .collect();
        let l = bt.level_evalmod_in();
        let ct = enc.encrypt(&pk, &ctx.encode_real(&x, l, bt.evalmod_scale(l))?)?;
        if std::env::var("OPS").is_ok() {
            let time = |what: &str,
                        f: &dyn Fn() -> ferrolab_fhe::Result<()>|
             -> ferrolab_fhe::Result<()> {
                let t0 = process_cpu_ms();
                for _ in 0..5 {
                    f()?;
                }
                println!("op {what}: {:.1} ms", (process_cpu_ms() - t0) / 5.0);
                Ok(())
            };
            let c = ev.drop_to_level(&ct, l)?;
            time("mul_relin_rescale", &|| {
                ev.mul_relin_rescale(&c, &c).map(|_| ())
            })?;
            time("mul_no_relin", &|| ev.mul_no_relin(&c, &c).map(|_| ()))?;
            let t3 = ev.mul_no_relin(&c, &c)?;
            time("relinearize", &|| ev.relinearize(&t3).map(|_| ()))?;
            time("rescale", &|| ev.rescale(&c).map(|_| ()))?;
            time("add", &|| ev.add(&c, &c).map(|_| ()))?;
            time("mul_const", &|| {
                ev.mul_const(&c, 0.3, 2f64.powi(50)).map(|_| ())
            })?;
            time("clone", &|| {
                let _x = c.clone();
                Ok(())
            })?;
        }
        for r in 0..reps {
            let c0 = ev.op_counts();
            let t0 = process_cpu_ms();
            let w = std::time::Instant::now();
            let out = bt.eval_mod(&ev, &ct)?;
            let (cpu, wall) = (process_cpu_ms() - t0, w.elapsed().as_secs_f64() * 1e3);
            let ops = ev.op_counts().since(&c0);
            let got = dec.decrypt_decode(&ev.drop_to_level(&out, 1)?)?;
            let (mut worst, mut sum) = (0.0f64, 0.0);
            for (g, &xv) in got.iter().zip(&x) {
                let e = (g.re - (2.0 * PI * k * xv).sin()).abs();
                worst = worst.max(e);
                sum += e;
            }
            println!(
                "evalmod rep {r}: cpu {cpu:.0} ms wall {wall:.0} ms, key switches {}, rescales {}, error worst {:.2} mean {:.2} bits (sine units), degree {}",
                ops.key_switches,
                ops.rescales,
                -worst.log2(),
                -(sum / slots as f64).log2(),
                bt.eval_mod_poly().cheb.degree()
            );
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}
