//! Timing runs of the CKKS building blocks, moved out of the test suite (a timing that asserts
//! nothing is not a test). Each section prints its figures; none of them gates anything.
//!
//! ```text
//! cargo bench -p ferrolab-fhe --bench ckks                 # every section
//! cargo bench -p ferrolab-fhe --bench ckks -- ntt fft      # some of: ntt fft keyswitch ops
//! FHE_LOGN=15 FHE_REPS=9 FHE_THREADS=1 cargo bench -p ferrolab-fhe --bench ckks -- ops
//! ```
//!
//! `ops` gives the figures of `ferrolab ckks bench` without building the CLI.

use ferrolab_fhe::encoder::EncoderTables;
use ferrolab_fhe::ntt::NttTable;
use ferrolab_fhe::params::ntt_primes;
use ferrolab_fhe::{C64, Context, Encryptor, Evaluator, KeyGenerator, ParamSpec};
use std::error::Error;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

type BenchResult = Result<(), Box<dyn Error + Send + Sync>>;
type Section = (&'static str, fn() -> BenchResult);

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// On-CPU time of this thread in ns, beside the wall clock: on a shared machine the
/// scheduler's pauses inflate the latter.
fn cpu_ns() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Minimum over `rounds` of wall and CPU milliseconds of `f`.
fn min_ms(rounds: usize, f: &mut dyn FnMut()) -> (f64, f64) {
    let (mut wall, mut cpu) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        let (t, c0) = (Instant::now(), cpu_ns());
        f();
        wall = wall.min(t.elapsed().as_secs_f64() * 1e3);
        cpu = cpu.min((cpu_ns() - c0) / 1e6);
    }
    (wall, cpu)
}

/// tfhe-ntt's plan against our Harvey NTT, forward + inverse, N = 2^14, one 60-bit prime.
fn ntt() -> BenchResult {
    let q = ntt_primes(60, 1, 14, &[])?[0];
    let t = NttTable::new(q, 14).ok_or("no NTT table for the prime")?;
    let mut a: Vec<u64> = (0..1u64 << 14).map(|i| i * 7919 % q).collect();
    for _ in 0..3 {
        let (plan, _) = min_ms(1, &mut || {
            for _ in 0..200 {
                t.forward(&mut a);
                t.inverse(&mut a);
            }
        });
        let (ours, _) = min_ms(1, &mut || {
            for _ in 0..200 {
                t.forward_harvey(&mut a);
                t.inverse_harvey(&mut a);
            }
        });
        println!(
            "ntt: fwd+inv N=2^14, 60-bit prime: tfhe-ntt {:.1} us, ours {:.1} us, ratio {:.2}",
            plan * 1e3 / 200.0,
            ours * 1e3 / 200.0,
            ours / plan
        );
    }
    Ok(())
}

/// The encoder's special FFT in both directions, N = 2^14.
fn fft() -> BenchResult {
    let t = EncoderTables::new(14);
    let v: Vec<C64> = (0..8192)
        .map(|i| C64::real((f64::from(i) * 0.37).sin()))
        .collect();
    let mut c = Vec::new();
    let (enc, _) = min_ms(50, &mut || c = t.slots_to_coeffs(&v));
    let (dec, _) = min_ms(50, &mut || {
        black_box(t.coeffs_to_slots(&c));
    });
    println!(
        "fft: N=2^14 special FFT (min of 50): encode direction {enc:.3} ms, decode direction {dec:.3} ms"
    );
    Ok(())
}

/// Where a key switch spends its time, through the public API on one thread: the NTT pair
/// of one limb, relinearisation (one key switch) and a rotation (key switch + automorphism).
fn keyswitch() -> BenchResult {
    let log_n = env_or("FHE_LOGN", 14u32);
    let ctx = Arc::new(Context::new(ParamSpec::standard(log_n)?)?);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    pool.install(|| -> BenchResult {
        let mut kg = KeyGenerator::new_seeded(&ctx, 1);
        let pk = kg.public_key();
        let keys = kg.evaluation_keys(&[1], false);
        let ev = Evaluator::new(&ctx, keys)?;
        let mut enc = Encryptor::new_seeded(&ctx, 2);
        let level = ctx.max_level();
        let values: Vec<f64> = (0..ctx.n / 2).map(|i| (i as f64 * 0.1).sin()).collect();
        let pt = ctx.encode_real(&values, level, ctx.scale_at(level))?;
        let ct = enc.encrypt(&pk, &pt)?;
        let product = ev.mul_no_relin(&ct, &ct)?;
        let report = |what: &str, (wall, cpu): (f64, f64)| {
            println!(
                "keyswitch: N=2^{log_n} {what:<22} wall {wall:8.2} ms  cpu {cpu:8.2} ms (min of 8)"
            );
        };
        report(
            "relinearize",
            min_ms(8, &mut || {
                black_box(ev.relinearize(&product).ok());
            }),
        );
        report(
            "rotate by 1",
            min_ms(8, &mut || {
                black_box(ev.rotate(&ct, 1).ok());
            }),
        );
        let mut a: Vec<u64> = (0..ctx.n as u64).map(|i| i * 7919 % ctx.q[0]).collect();
        let table = &ctx.tables[0];
        report(
            "ntt + intt (one limb)",
            min_ms(8, &mut || {
                table.forward(&mut a);
                table.inverse(&mut a);
            }),
        );
        Ok(())
    })
}

/// Every operation of `ferrolab ckks bench`: latency and precision.
fn ops() -> BenchResult {
    let spec = ParamSpec::standard(env_or("FHE_LOGN", 14u32))?;
    let r = ferrolab_fhe::bench::run_threads(
        spec,
        env_or("FHE_REPS", 5usize),
        1,
        env_or("FHE_THREADS", 1usize),
    )?;
    for f in &r.ops {
        println!(
            "ops: {:<20} {:>9.3} ms  {:>6.2} bits",
            f.op,
            f.ms.unwrap_or(f64::NAN),
            f.precision_bits.unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

fn main() -> BenchResult {
    // `cargo bench` passes `--bench`; the other words choose sections.
    let chosen: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let sections: [Section; 4] = [
        ("ntt", ntt),
        ("fft", fft),
        ("keyswitch", keyswitch),
        ("ops", ops),
    ];
    for (name, run) in sections {
        if chosen.is_empty() || chosen.iter().any(|c| c == name) {
            run()?;
        }
    }
    Ok(())
}
