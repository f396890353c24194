//! End-to-end encrypted inference of a whole (small) ResNet in both packings on real
//! ciphertexts: the decrypted logits against the plaintext network, and the encrypted run's
//! counts against the simulator's.
#![allow(clippy::unwrap_used)]

use ferrolab_fhe::hyphen::backend::{Backend, Ckks, Sim};
use ferrolab_fhe::hyphen::layout::{Geometry, Map};
use ferrolab_fhe::hyphen::net::{Net, Packing, RunOptions, encode_input, logits, run};
use ferrolab_fhe::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn image(side: usize, seed: u64) -> Map {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Map::zeros(3, side);
    m.v.iter_mut().for_each(|v| *v = rng.random::<f64>() - 0.5);
    m
}

/// ResNet-8 (one block per stage, width 4) on an 8 × 8 input at N = 2^11 (insecure test
/// parameters), leveled: HyPHEN and MPConv (HerPN network) decrypt to the plaintext logits.
#[test]
fn encrypted_resnet8_both_packings_match_plaintext() {
    encrypted_resnet8(&[(Packing::Hyphen, true), (Packing::Mpconv, true)]);
}

/// MPConv as published (ReLU network, AppReLU: 14 levels per activation, ~113 in all) on the
/// same ResNet-8, leveled at N = 2^11: decrypts to the plaintext (AppReLU) logits.
#[test]
fn encrypted_resnet8_mpconv_app_relu_matches_plaintext() {
    encrypted_resnet8(&[(Packing::Mpconv, false)]);
}

fn encrypted_resnet8(cases: &[(Packing, bool)]) {
    let geo = Geometry { n: 1024, wr: 8 };
    let opt = RunOptions {
        geo,
        cost: Default::default(),
    };
    let x = image(8, 5);
    for &(packing, quad) in cases {
        let net = Net::random_resnet(3, quad, 10, 1, 4);
        let want = net.reference(&x);
        // Depth and Galois steps from the simulator (bootstrap-free: a deep budget).
        let mut sim = Sim::new(geo.n, 200);
        let input = encode_input(&net, geo, packing, &x)
            .into_iter()
            .map(|v| sim.encrypt(v, 200))
            .collect();
        let (out, pf, _) = run(&mut sim, &net, packing, input, &opt).unwrap();
        let vs: Vec<Vec<f64>> = out.iter().map(|c| c.v.clone()).collect();
        let sim_logits = logits(&net, &pf, &vs);
        let depth = 200 - sim.level(&out[0]);
        // The deep AppReLU chain makes every key large: there, only the powers of two
        // (the evaluator composes the other amounts, as the system's encrypted run does).
        let steps: Vec<i64> = if quad {
            sim.steps.iter().copied().collect()
        } else {
            (0..10).map(|k| 1i64 << k).collect()
        };
        let mut spec = ParamSpec::insecure_test(11, depth);
        // AppReLU's chain is ~100 levels deep: more special primes keep the key digits (and
        // the keys) few.
        spec.p_bits = vec![60; if quad { 2 } else { 12 }];
        // Non-uniform: Context anchors the scale ladder at the bottom (see system.rs).
        if let Some(top) = spec.q_bits.last_mut() {
            *top = 41;
        }
        let ctx = Context::new(spec).unwrap();
        let mut kg = KeyGenerator::new_seeded(&ctx, 1);
        let pk = kg.public_key();
        let keys = kg.evaluation_keys(&steps, false);
        let mut enc = Encryptor::new_seeded(&ctx, 2);
        let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
        let ev = Evaluator::new(&ctx, keys).unwrap();
        let top = ctx.max_level();
        let cts: Vec<Ciphertext> = encode_input(&net, geo, packing, &x)
            .iter()
            .map(|v| {
                let pt = ctx.encode_real(v, top, ctx.scale_at(top)).unwrap();
                enc.encrypt(&pk, &pt).unwrap()
            })
            .collect();
        let mut be = Ckks::new(&ev, None);
        let (out, pf, _) = run(&mut be, &net, packing, cts, &opt).unwrap();
        let vs: Vec<Vec<f64>> = out
            .iter()
            .map(|c| {
                dec.decrypt_decode(c)
                    .unwrap()
                    .iter()
                    .map(|z| z.re)
                    .collect()
            })
            .collect();
        let got = logits(&net, &pf, &vs);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let sim_err = sim_logits
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!(
            "{packing:?} (quad {quad}): depth {depth}, {} keys, {} rotations, max logit error {err:.2e} (sim {sim_err:.1e})",
            steps.len(),
            be.stats().rot_calls
        );
        assert!(sim_err < 1e-9, "{sim_err}");
        assert!(err < 1e-3, "{packing:?} (quad {quad}): {err}");
        assert_eq!(be.stats().rot_calls, sim.stats().rot_calls);
        if !quad {
            assert!(be.stats().rot_extra > 0, "no rotation was composed");
        }
    }
}
