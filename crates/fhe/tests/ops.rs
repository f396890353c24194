//! Property tests at small N (insecure, opt-in): every homomorphic operation matches its
//! plaintext counterpart for random inputs at every level.
#![allow(clippy::unwrap_used)]
mod common;
use common::*;
use ferrolab_fhe::*;

const LOG_N: u32 = 10;
const LEVELS: usize = 4;

#[test]
fn encrypt_decrypt_roundtrip_public_and_secret_key() {
    let mut s = setup(ParamSpec::insecure_test(LOG_N, LEVELS), &[], 1);
    let slots = s.ctx.slots();
    for level in 0..=LEVELS {
        let x = random_complex(slots, level as u64);
        let ct = s.encrypt(&x, level);
        let e = max_err(&s.decrypt(&ct), &x);
        assert!(e < 1e-8, "pk level {level}: {e}");
        let pt = s.ctx.encode(&x, level, s.ctx.scale_at(level)).unwrap();
        let sk = s.kg.secret_key().clone();
        let ct = s.enc.encrypt_sk(&sk, &pt).unwrap();
        let e = max_err(&s.decrypt(&ct), &x);
        assert!(e < 1e-8, "sk level {level}: {e}");
    }
    // Encoding alone is near-exact.
    let x = random_complex(slots, 99);
    let pt = s.ctx.encode(&x, 2, s.ctx.scale_at(2)).unwrap();
    assert!(max_err(&s.ctx.decode(&pt).unwrap(), &x) < 1e-10);
}

#[test]
fn linear_ops_match_plaintext_at_every_level() {
    let mut s = setup(ParamSpec::insecure_test(LOG_N, LEVELS), &[], 2);
    let slots = s.ctx.slots();
    for level in 0..=LEVELS {
        let x = random_complex(slots, 10 + level as u64);
        let y = random_complex(slots, 20 + level as u64);
        let (cx, cy) = (s.encrypt(&x, level), s.encrypt(&y, level));
        let ev = &s.ev;
        let sum: Vec<C64> = x.iter().zip(&y).map(|(a, b)| *a + *b).collect();
        let diff: Vec<C64> = x.iter().zip(&y).map(|(a, b)| *a - *b).collect();
        let neg: Vec<C64> = x.iter().map(|a| -*a).collect();
        let e = max_err(&s.decrypt(&ev.add(&cx, &cy).unwrap()), &sum);
        assert!(e < 1e-8, "level {level} add err {e}");
        assert!(max_err(&s.decrypt(&ev.sub(&cx, &cy).unwrap()), &diff) < 1e-8);
        assert!(max_err(&s.decrypt(&ev.neg(&cx).unwrap()), &neg) < 1e-8);
        let py = s.ctx.encode(&y, level, cx.scale).unwrap();
        assert!(max_err(&s.decrypt(&ev.add_plain(&cx, &py).unwrap()), &sum) < 1e-8);
        assert!(max_err(&s.decrypt(&ev.sub_plain(&cx, &py).unwrap()), &diff) < 1e-8);
        let c = C64::new(0.25, -1.5);
        let plus_c: Vec<C64> = x.iter().map(|a| *a + c).collect();
        let got = s.decrypt(&ev.add_const(&cx, c).unwrap());
        assert!(
            max_err(&got, &plus_c) < 1e-8,
            "{:?} {:?}",
            &got[..2],
            &plus_c[..2]
        );
        let times3: Vec<C64> = x.iter().map(|a| a.scale(-3.0)).collect();
        assert!(max_err(&s.decrypt(&ev.mul_int(&cx, -3).unwrap()), &times3) < 1e-8);
        if level > 0 {
            let prod: Vec<C64> = x.iter().zip(&y).map(|(a, b)| *a * *b).collect();
            let r = ev.mul_values_rescale(&cx, &y).unwrap();
            assert_eq!(r.level, level - 1);
            assert!(max_err(&s.decrypt(&r), &prod) < 1e-6);
            let r = ev.mul_const_rescale(&cx, 0.7).unwrap();
            let want: Vec<C64> = x.iter().map(|a| a.scale(0.7)).collect();
            assert!(max_err(&s.decrypt(&r), &want) < 1e-6);
            assert!((r.scale / s.ctx.scale_at(level - 1) - 1.0).abs() < 1e-9);
        }
    }
}

#[test]
fn multiplication_relinearisation_rescale_at_every_level() {
    let mut s = setup(ParamSpec::insecure_test(LOG_N, LEVELS), &[], 3);
    let slots = s.ctx.slots();
    for level in 1..=LEVELS {
        let x = random_complex(slots, 30 + level as u64);
        let y = random_complex(slots, 40 + level as u64);
        let (cx, cy) = (s.encrypt(&x, level), s.encrypt(&y, level));
        let prod: Vec<C64> = x.iter().zip(&y).map(|(a, b)| *a * *b).collect();
        let r = s.ev.mul_relin_rescale(&cx, &cy).unwrap();
        assert_eq!((r.level, r.size()), (level - 1, 2));
        assert!((r.scale / s.ctx.scale_at(level - 1) - 1.0).abs() < 1e-12);
        let e = max_err(&s.decrypt(&r), &prod);
        assert!(e < 1e-6, "level {level}: {e}");
        // Without relinearisation the size-3 ciphertext still decrypts.
        let t = s.ev.mul_no_relin(&cx, &cy).unwrap();
        assert!(max_err(&s.decrypt(&t), &prod) < 1e-6);
    }
}

#[test]
fn fused_mul_relin_rescale_matches_relinearise_then_rescale() {
    // One special prime takes the fused division by P·q_l; two take the two-step path.
    for p_bits in [vec![60], vec![50, 50]] {
        let mut spec = ParamSpec::insecure_test(LOG_N, LEVELS);
        spec.p_bits = p_bits.clone();
        let mut s = setup(spec, &[], 5);
        let slots = s.ctx.slots();
        for level in 1..=LEVELS {
            let x = random_complex(slots, 50 + level as u64);
            let y = random_complex(slots, 60 + level as u64);
            let (cx, cy) = (s.encrypt(&x, level), s.encrypt(&y, level));
            let prod: Vec<C64> = x.iter().zip(&y).map(|(a, b)| *a * *b).collect();
            let fused = s.ev.mul_relin_rescale(&cx, &cy).unwrap();
            let two = s.ev.rescale(&s.ev.mul(&cx, &cy).unwrap()).unwrap();
            assert_eq!((fused.level, fused.size()), (two.level, two.size()));
            assert_eq!(fused.scale, two.scale);
            let (df, dt) = (s.decrypt(&fused), s.decrypt(&two));
            // Both round P·d + x to within one unit per coefficient of each other.
            assert!(max_err(&df, &dt) < 1e-7, "{p_bits:?} level {level}");
            assert!(max_err(&df, &prod) < 1e-6, "{p_bits:?} level {level}");
        }
    }
}

#[test]
fn depth_chain_and_adjust_keep_scales_on_the_ladder() {
    let mut s = setup(ParamSpec::insecure_test(LOG_N, LEVELS), &[], 4);
    let slots = s.ctx.slots();
    let x = random_real(slots, 5);
    let mut want = x.clone();
    let mut ct = s.encrypt(&x, LEVELS);
    for _ in 0..LEVELS {
        ct = s.ev.square_rescale(&ct).unwrap();
        want = want.iter().map(|a| *a * *a).collect();
    }
    assert_eq!(ct.level, 0);
    assert!(max_err(&s.decrypt(&ct), &want) < 1e-5);
    // adjust: a fresh top-level ciphertext brought to level 1 adds to one computed there.
    let top = s.encrypt(&x, LEVELS);
    let adj = s.ev.adjust(&top, 1).unwrap();
    assert_eq!(adj.level, 1);
    assert!(max_err(&s.decrypt(&adj), &x) < 1e-6);
    let c2 = s.encrypt(&x, 2);
    let lvl1 = s.ev.square_rescale(&c2).unwrap();
    let sum = s.ev.add(&adj, &lvl1).unwrap();
    let want: Vec<C64> = x.iter().map(|a| *a + *a * *a).collect();
    assert!(max_err(&s.decrypt(&sum), &want) < 1e-6);
}

#[test]
fn rotations_compose_conjugate_and_hoisting_agrees() {
    let steps = [1i64, 2, 3, 5, -1, 100];
    let mut s = setup(ParamSpec::insecure_test(LOG_N, 2), &steps, 5);
    let slots = s.ctx.slots();
    let x = random_complex(slots, 6);
    let ct = s.encrypt(&x, 2);
    let rot = |k: i64| -> Vec<C64> {
        (0..slots)
            .map(|j| x[((j as i64 + k).rem_euclid(slots as i64)) as usize])
            .collect()
    };
    for &k in &steps {
        let r = s.ev.rotate(&ct, k).unwrap();
        assert!(max_err(&s.decrypt(&r), &rot(k)) < 1e-7, "step {k}");
    }
    // rotate(2) ∘ rotate(3) = rotate(5); rotate(1) ∘ rotate(-1) = id
    let r23 = s.ev.rotate(&s.ev.rotate(&ct, 2).unwrap(), 3).unwrap();
    assert!(max_err(&s.decrypt(&r23), &rot(5)) < 1e-7);
    let id = s.ev.rotate(&s.ev.rotate(&ct, 1).unwrap(), -1).unwrap();
    assert!(max_err(&s.decrypt(&id), &x) < 1e-7);
    // hoisted = one by one
    let hs = s.ev.rotate_hoisted(&ct, &steps).unwrap();
    for (h, &k) in hs.iter().zip(&steps) {
        assert!(max_err(&s.decrypt(h), &rot(k)) < 1e-7);
    }
    let c = s.ev.conjugate(&ct).unwrap();
    let conj: Vec<C64> = x.iter().map(|a| a.conj()).collect();
    assert!(max_err(&s.decrypt(&c), &conj) < 1e-7);
    // rotation by 0 or a multiple of the slot count needs no key
    let r0 = s.ev.rotate(&ct, slots as i64).unwrap();
    assert!(max_err(&s.decrypt(&r0), &x) < 1e-7);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut s = setup(ParamSpec::insecure_test(LOG_N, 2), &[1], 7);
    let slots = s.ctx.slots();
    let x = random_real(slots, 8);
    let a = s.encrypt(&x, 2);
    let b = s.encrypt(&x, 1);
    assert!(matches!(s.ev.add(&a, &b), Err(FheError::Level(_))));
    assert!(matches!(s.ev.mul(&a, &b), Err(FheError::Level(_))));
    assert!(matches!(
        s.ev.rotate(&a, 7),
        Err(FheError::MissingGaloisKey { .. })
    ));
    let lvl0 = s.encrypt(&x, 0);
    assert!(matches!(s.ev.rescale(&lvl0), Err(FheError::Level(_))));
    // scale mismatch
    let mut c = a.clone();
    c.scale *= 1.001;
    assert!(matches!(
        s.ev.add(&a, &c),
        Err(FheError::ScaleMismatch { .. })
    ));
    // scale overflow: encoding a huge value, or multiplying without rescale until Q is full
    assert!(matches!(
        s.ctx.encode_real(&[1e30], 0, s.ctx.scale_at(0)),
        Err(FheError::ScaleOverflow(_))
    ));
    let sq = s.ev.mul(&a, &a).unwrap();
    let sq2 = s.ev.mul(&sq, &sq);
    assert!(matches!(sq2, Err(FheError::ScaleOverflow(_))), "{sq2:?}");
    // too many values, non-finite values
    assert!(s.ctx.encode_real(&vec![0.0; slots + 1], 0, 1e10).is_err());
    assert!(s.ctx.encode_real(&[f64::NAN], 0, 1e10).is_err());
    // public fields that disagree with the polynomials
    let mut bad = a.clone();
    bad.level = 1;
    assert!(matches!(s.ev.add(&bad, &bad), Err(FheError::Level(_))));
    assert!(s.dec.decrypt(&bad).is_err());
    let mut bad = a.clone();
    bad.scale = f64::NAN;
    assert!(s.ev.rescale(&bad).is_err());
    let mut pt = s.ctx.encode_real(&[0.5], 2, 1e10).unwrap();
    pt.level = 7;
    assert!(s.ctx.decode(&pt).is_err());
    assert!(s.enc.encrypt(&s.pk, &pt).is_err());
    // missing relinearisation key
    let ev = Evaluator::new(&s.ctx, EvaluationKeys::default()).unwrap();
    assert!(matches!(ev.mul(&a, &a), Err(FheError::MissingRelinKey)));
    // other parameters
    let other = setup(ParamSpec::insecure_test(LOG_N, 3), &[], 9);
    assert!(matches!(
        other.ev.add(&a, &a),
        Err(FheError::ParamsMismatch(_))
    ));
    assert!(matches!(
        other.dec.decrypt(&a),
        Err(FheError::ParamsMismatch(_))
    ));
}

#[test]
fn chebyshev_polynomials_match_plaintext_and_use_optimal_depth() {
    let mut s = setup(ParamSpec::insecure_test(LOG_N, 7), &[], 12);
    let slots = s.ctx.slots();
    let x = random_real(slots, 13);
    let top = s.ctx.max_level();
    let ct = s.encrypt(&x, top);
    for (p, name) in [
        (relu_approx(15), "relu15"),
        (relu_approx(7), "relu7"),
        (
            Chebyshev::interpolate(|v| v.tanh(), 31, -1.0, 1.0),
            "tanh31",
        ),
        (
            Chebyshev::interpolate(|v| (v * 3.0).sin(), 10, -2.0, 2.0),
            "sin10 on [-2,2]",
        ),
        (
            Chebyshev::interpolate(|v| 1.0 + v * v, 2, -1.0, 1.0),
            "quadratic",
        ),
    ] {
        // Every polynomial here must fit the chain: a skipped one would drop coverage quietly.
        assert!(p.depth() <= top, "{name}: depth {} > {top}", p.depth());
        let r = s.ev.eval_chebyshev(&ct, &p).unwrap();
        assert_eq!(r.level, top - p.depth(), "{name}: depth");
        let want: Vec<C64> = x.iter().map(|v| C64::real(p.eval(v.re))).collect();
        let e = max_err(&s.decrypt(&r), &want);
        assert!(e < 1e-4, "{name}: {e}");
    }
}

#[test]
fn bsgs_linear_transform_matches_plaintext_matvec() {
    use rand::{RngExt, SeedableRng, rngs::StdRng};
    let slots = 1usize << (LOG_N - 1);
    let mut rng = StdRng::seed_from_u64(40);
    let scale = 1.0 / (slots as f64).sqrt();
    let m: Vec<Vec<C64>> = (0..slots)
        .map(|_| {
            (0..slots)
                .map(|_| C64::new((2.0 * rng.random::<f64>() - 1.0) * scale, 0.0))
                .collect()
        })
        .collect();
    let lt = LinearTransform::from_matrix(&m, slots).unwrap();
    assert_eq!(lt.baby_step(), 32);
    let mut s = setup(
        ParamSpec::insecure_test(LOG_N, 2),
        &lt.rotations_needed(),
        41,
    );
    let x = random_complex(slots, 42);
    let ct = s.encrypt(&x, 2);
    let r = s.ev.linear_transform(&ct, &lt).unwrap();
    assert_eq!(r.level, 1);
    let want = lt.apply_plain(&x);
    let direct: Vec<C64> = (0..slots)
        .map(|t| (0..slots).fold(C64::default(), |a, c| a + m[t][c] * x[c]))
        .collect();
    assert!(max_err(&want, &direct) < 1e-12);
    let e = max_err(&s.decrypt(&r), &want);
    assert!(e < 1e-5, "{e}");
    // A sparse (banded) transform needs only its own rotations.
    let mut diags = std::collections::BTreeMap::new();
    for k in [0usize, 1, 2, slots - 1] {
        diags.insert(k, random_complex(slots, 50 + k as u64));
    }
    let band = LinearTransform::from_diagonals(slots, diags).unwrap();
    let mut s2 = setup(
        ParamSpec::insecure_test(LOG_N, 2),
        &band.rotations_needed(),
        43,
    );
    let ct = s2.encrypt(&x, 2);
    let r = s2.ev.linear_transform(&ct, &band).unwrap();
    assert!(max_err(&s2.decrypt(&r), &band.apply_plain(&x)) < 1e-5);
}
