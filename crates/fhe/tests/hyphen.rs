//! HyPHEN layouts and convolutions against the plaintext convolution (simulated slots and
//! real ciphertexts at small N), the baseline's rotation counts against hyphen.md §3.3, and
//! ResNet-20 end to end on the slot simulator.
#![allow(clippy::unwrap_used)]

use ferrolab_fhe::hyphen::act::{
    APP_RELU_B, APP_SIGN_EPS, APP_SIGN_MARGIN, HerPn, HerPnStats, app_relu_error, app_relu_levels,
    app_sign, app_sign_polys,
};
use ferrolab_fhe::hyphen::backend::{Backend, Ckks, Sim, SimCt};
use ferrolab_fhe::hyphen::conv::{
    ConvWeights, Gather, OpCost, ShiftConv, Split, caconv, caconv_groups, choose_groups, raconv,
};
use ferrolab_fhe::hyphen::layout::{Geometry, Kind, Layout, Map};
use ferrolab_fhe::hyphen::mpconv::MpConv;
use ferrolab_fhe::hyphen::net::{
    Net, Packing, RunOptions, encode_input, logits, run, shortcut_ref, totals,
};
use ferrolab_fhe::minimax::composite_sign;
use ferrolab_fhe::*;
use rand::{RngExt, SeedableRng, rngs::StdRng};

fn rand_map(c: usize, h: usize, seed: u64) -> Map {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Map::zeros(c, h);
    m.v.iter_mut()
        .for_each(|v| *v = 2.0 * rng.random::<f64>() - 1.0);
    m
}

fn rand_conv(ci: usize, co: usize, stride: usize, seed: u64) -> ConvWeights {
    let mut rng = StdRng::seed_from_u64(seed);
    ConvWeights {
        co,
        ci,
        kh: 3,
        stride,
        pad: 1,
        w: (0..co * ci * 9)
            .map(|_| (2.0 * rng.random::<f64>() - 1.0) / 3.0)
            .collect(),
        bias: (0..co).map(|_| rng.random::<f64>() - 0.5).collect(),
    }
}

fn sim_run(
    conv: &ferrolab_fhe::hyphen::conv::ShiftConv,
    input: &Layout,
    x: &Map,
    levels: usize,
) -> (Map, u64) {
    let mut sim = Sim::new(input.geo.n, levels);
    let cts: Vec<SimCt> = input
        .encode(x)
        .into_iter()
        .map(|v| sim.encrypt(v, levels))
        .collect();
    let out = conv.apply(&mut sim, &cts).unwrap();
    assert_eq!(out[0].level, levels - conv.levels());
    let vs: Vec<Vec<f64>> = out.into_iter().map(|c| c.v).collect();
    (conv.post.decode(&vs), sim.stats().rot_calls)
}

const SMALL: Geometry = Geometry { n: 1024, wr: 8 };

#[test]
fn layouts_round_trip() {
    let m = rand_map(8, 8, 1);
    for l in [
        Layout::ca(SMALL, 1, 8),
        Layout::ra(SMALL, 1, 8, 2),
        Layout::mp(SMALL, 1, 8),
    ] {
        assert_eq!(l.decode(&l.encode(&m)), m, "{l:?}");
    }
    let m = rand_map(16, 4, 2);
    for l in [
        Layout::ca(SMALL, 2, 16),
        Layout::ra(SMALL, 2, 16, 2),
        Layout::mp(SMALL, 2, 16),
    ] {
        assert_eq!(l.decode(&l.encode(&m)), m, "{l:?}");
    }
    assert_eq!(Layout::ca(SMALL, 1, 8).kind, Kind::Ca { rho: 2 });
    assert_eq!(Layout::mp(SMALL, 1, 8).kind, Kind::Mp { t: 8, p: 2 });
}

/// CAConv → RAConv (stride 1) and the strided pair with 2D gap packing, every split, against
/// the plaintext convolution.
#[test]
fn caconv_raconv_match_plaintext_convolution() {
    let x = rand_map(8, 8, 3);
    let input = Layout::ca(SMALL, 1, 8);
    for (stride, co) in [(1usize, 8usize), (2, 16)] {
        let w1 = rand_conv(8, co, stride, 4);
        let w2 = rand_conv(co, co, 1, 5);
        let want1 = w1.reference(&x);
        let want2 = w2.reference(&want1);
        let mut ca = caconv(&w1, input).unwrap();
        assert!(matches!(ca.post.kind, Kind::Ra { g: 2 }));
        assert_eq!(ca.post.k, stride);
        let mut ra = raconv(&w2, ca.post).unwrap();
        assert_eq!(ra.post.k, stride);
        for split in [Split::In, Split::Out, Split::Bsgs] {
            ca.split = split;
            ra.split = split;
            let (got1, rots1) = sim_run(&ca, &input, &x, 5);
            assert!(got1.max_diff(&want1) < 1e-12, "CAConv {stride} {split:?}");
            assert_eq!(
                rots1 as usize,
                ca.rotations(split),
                "CAConv count {split:?}"
            );
            let (got2, _) = sim_run(&ra, &ca.post, &want1, 5);
            assert!(got2.max_diff(&want2) < 1e-12, "RAConv {stride} {split:?}");
        }
    }
}

/// Every group count g | ρ of the CAConv output: the pair still computes both convolutions;
/// g = 1 needs no mask (one level fewer) and takes the most ciphertexts; the cost model's
/// choice is one of the valid ones and follows the activation cost.
#[test]
fn caconv_group_counts_all_match_plaintext() {
    let geo = Geometry { n: 4096, wr: 8 };
    let x = rand_map(8, 8, 11);
    let input = Layout::ca(geo, 1, 8);
    assert_eq!(input.kind, Kind::Ca { rho: 8 });
    let cost = OpCost::default();
    for (stride, co) in [(1usize, 8usize), (2, 16)] {
        let w1 = rand_conv(8, co, stride, 12);
        let w2 = rand_conv(co, co, 1, 13);
        let want1 = w1.reference(&x);
        let want2 = w2.reference(&want1);
        let mut cts = Vec::new();
        for g in [1usize, 2, 4, 8] {
            let mut ca = caconv_groups(&w1, input, g).unwrap();
            assert_eq!(ca.post.kind, Kind::Ra { g });
            ca.choose(&cost);
            let mut ra = raconv(&w2, ca.post).unwrap();
            ra.choose(&cost);
            assert_eq!(ra.levels(), 1 + usize::from(g > 1), "g = {g}");
            let (got1, _) = sim_run(&ca, &input, &x, 5);
            assert!(
                got1.max_diff(&want1) < 1e-12,
                "CAConv stride {stride} g = {g}"
            );
            let (got2, _) = sim_run(&ra, &ca.post, &want1, 5);
            assert!(
                got2.max_diff(&want2) < 1e-12,
                "RAConv stride {stride} g = {g}"
            );
            cts.push(ca.post.num_cts());
        }
        // C_out/(k²·g) ciphertexts between the two convolutions (at least one).
        let groups = co / (stride * stride);
        let want: Vec<usize> = [1, 2, 4, 8].iter().map(|g| groups.div_ceil(*g)).collect();
        assert_eq!(cts, want);
        assert!(caconv_groups(&w1, input, 3).is_err());
        assert!(caconv_groups(&w1, input, 16).is_err());
        // An expensive activation favours the fewest ciphertexts; the choice always computes
        // the same convolutions.
        let (ca, ra) = choose_groups(&w1, &w2, input, &cost, 1e6).unwrap();
        assert_eq!(ca.post.num_cts(), 1);
        let (ca0, ra0) = choose_groups(&w1, &w2, input, &cost, 0.0).unwrap();
        let score = |c: &ShiftConv, r: &ShiftConv| c.modelled_cost(&cost) + r.modelled_cost(&cost);
        assert!(score(&ca0, &ra0) <= score(&ca, &ra) + 1e-9);
        let (got, _) = sim_run(&ca0, &input, &x, 5);
        let (got, _) = sim_run(&ra0, &ca0.post, &got, 5);
        assert!(got.max_diff(&want2) < 1e-12);
        let _ = ra;
    }
}

#[test]
fn gap_packed_shortcut_matches_subsampling() {
    let x = rand_map(8, 8, 6);
    let input = Layout::ca(SMALL, 1, 8);
    let post = Layout::ca(SMALL, 2, 16);
    let g = Gather::shortcut(input, post, 4, 2).unwrap();
    let mut sim = Sim::new(SMALL.n, 3);
    let ct = sim.encrypt(input.encode(&x).remove(0), 3);
    let y = g.apply(&mut sim, &ct).unwrap();
    assert_eq!(post.decode(&[y.v]), shortcut_ref(&x, 16, 2));
}

#[test]
fn mpconv_matches_plaintext_convolution() {
    let x = rand_map(8, 8, 7);
    let input = Layout::mp(SMALL, 1, 8);
    for (stride, co) in [(1usize, 8usize), (2, 16)] {
        let w = rand_conv(8, co, stride, 8);
        let mc = MpConv::build(&w, input).unwrap();
        let mut sim = Sim::new(SMALL.n, 4);
        let ct = sim.encrypt(input.encode(&x).remove(0), 4);
        let y = mc.apply(&mut sim, &ct).unwrap();
        assert_eq!(y.level, 2);
        let got = mc.post.decode(&[y.v]);
        assert!(got.max_diff(&w.reference(&x)) < 1e-12, "stride {stride}");
        assert_eq!(sim.stats().rot_calls as usize, MpConv::formula(&w, &input));
    }
}

/// hyphen.md §3.3: the baseline's rotations per ResNet-20 convolution at n = 2^15, exactly.
#[test]
fn mpconv_rotation_counts_match_the_published_loop() {
    let geo = Geometry { n: 1 << 15, wr: 32 };
    // (input layout (k, c), conv ci→co, stride, expected rotations)
    let cases = [
        (1, 3, 16, 1, 29),
        (1, 16, 16, 1, 57),
        (1, 16, 32, 2, 107),
        (2, 32, 32, 1, 83),
        (2, 32, 64, 2, 159),
        (4, 64, 64, 1, 127),
    ];
    for (k, ci, co, stride, want) in cases {
        let input = Layout::mp(geo, k, ci);
        let w = rand_conv(ci, co, stride, 9);
        assert_eq!(MpConv::formula(&w, &input), want, "formula {ci}->{co}");
        let mc = MpConv::build(&w, input).unwrap();
        assert_eq!(mc.rotations(), want, "built {ci}->{co}");
        let mut sim = Sim::new(geo.n, 2);
        let ct = sim.encrypt(vec![0.0; geo.n], 2);
        mc.apply(&mut sim, &ct).unwrap();
        let s = sim.stats();
        assert_eq!(s.rot_calls, want as u64, "executed {ci}->{co}");
        // The first output channel's collect rotation has step 0: no key switch.
        assert_eq!(s.key_switches(), want as u64 - 1);
    }
}

#[test]
fn herpn_folding_matches_unfolded_form() {
    let st = HerPnStats {
        gamma: 1.3,
        beta: -0.2,
        mu1: 0.1,
        var1: 0.8,
        mu2: 0.3,
        var2: 1.7,
    };
    let q = HerPn::fold(&[st], 1e-5);
    for i in 0..50 {
        let x = -3.0 + 6.0 * i as f64 / 49.0;
        assert!((q.eval(0, x) - HerPn::unfolded(&st, 1e-5, x)).abs() < 1e-12);
    }
}

#[test]
fn app_relu_is_the_published_minimax_composite() {
    assert_eq!(app_relu_levels(), 14);
    let sign = app_sign();
    for (p, e) in sign.stages.iter().zip(&sign.stage_errors) {
        eprintln!(
            "stage degree {:>2} on [{:.4}, {:.4}]: minimax error {e:.3e}",
            p.degree(),
            p.a,
            p.b
        );
    }
    eprintln!("stage output bounds {:?}", sign.bounds);
    let alpha = 2f64.powi(-13);
    // Lee et al.'s α = 13: |p(x) − sgn x| ≤ 2^-13 on 2^-9 ≤ |x| ≤ 1.
    assert!(sign.error <= alpha, "composite error {:e}", sign.error);
    let (relu_err, sign_err) = app_relu_error(APP_SIGN_EPS);
    eprintln!("AppReLU on |x| ≥ 2^-9·B: sign error {sign_err:.2e}, ReLU error {relu_err:.2e}");
    assert!(sign_err <= alpha, "sign error {sign_err}");
    // |AppReLU − ReLU| = |x|·|p − sgn|/2 ≤ B·2^-14 there.
    assert!(
        relu_err <= APP_RELU_B * alpha / 2.0,
        "relu error {relu_err}"
    );
    // The Chebyshev stages compose to the same polynomial, and every stage but the last
    // keeps [−1, 1] inside [−1, 1] (the gap (−ε, ε) included), so none needs an extra level.
    let polys = app_sign_polys();
    for i in 0..=4000 {
        let u = -1.0 + i as f64 / 2000.0;
        let v1 = polys[0].eval(u);
        let v2 = polys[1].eval(v1);
        assert!(
            v1.abs() <= 1.0 + 1e-9 && v2.abs() <= 1.0 + 1e-9,
            "u = {u}: {v1}, {v2}"
        );
        assert!((polys[2].eval(v2) - sign.eval(u)).abs() < 1e-9, "u = {u}");
    }
    // Cheaper components cannot reach α = 13 from this gap: the degrees are what it costs.
    let weaker = composite_sign(&[15, 15, 15], APP_SIGN_EPS, APP_SIGN_MARGIN).unwrap();
    assert!(weaker.error > alpha, "{:e}", weaker.error);
}

/// Both packings on the simulator (exact arithmetic): same logits as the plaintext network,
/// fewer rotations and bootstraps for HyPHEN.
#[test]
fn resnet20_both_packings_agree_with_plaintext() {
    let geo = Geometry { n: 1 << 15, wr: 32 };
    let opt = RunOptions {
        geo,
        cost: Default::default(),
    };
    let img = rand_map(3, 32, 10);
    let mut totals_by = vec![];
    for (quad, packing, levels, fresh) in [
        (true, Packing::Hyphen, 9, 9),
        (false, Packing::Mpconv, 16, 30),
    ] {
        let net = Net::random(11, quad, 10);
        let mut sim = Sim::new(geo.n, levels);
        let input = encode_input(&net, geo, packing, &img)
            .into_iter()
            .map(|v| sim.encrypt(v, fresh))
            .collect();
        let (out, pf, log) = run(&mut sim, &net, packing, input, &opt).unwrap();
        let vs: Vec<Vec<f64>> = out.into_iter().map(|c| c.v).collect();
        let got = logits(&net, &pf, &vs);
        let want = net.reference(&img);
        for (a, b) in got.iter().zip(&want) {
            assert!(
                (a - b).abs() < 1e-9 * (1.0 + b.abs()),
                "{packing:?}: {a} vs {b}"
            );
        }
        totals_by.push(totals(&log));
    }
    let (ours, base) = (totals_by[0], totals_by[1]);
    assert_eq!(base.boot, 18, "Lee et al.: two bootstraps per basic block");
    assert!(
        ours.boot <= 9,
        "at most one bootstrap per basic block: {}",
        ours.boot
    );
    assert!(
        ours.rot_calls * 2 < base.rot_calls,
        "{} vs {}",
        ours.rot_calls,
        base.rot_calls
    );
}

fn worst_bits(got: &Map, want: &Map) -> f64 {
    -got.max_diff(want).log2()
}

/// A CAConv → HerPN → RAConv pair on real ciphertexts (N = 2^11, insecure test parameters):
/// the decrypted map against the plaintext computation.
#[test]
fn encrypted_caconv_herpn_raconv_pair() {
    let x = rand_map(8, 8, 12);
    let input = Layout::ca(SMALL, 1, 8);
    let w1 = rand_conv(8, 8, 1, 13);
    let w2 = rand_conv(8, 8, 1, 14);
    let q = HerPn {
        a: vec![0.1; 8],
        b: vec![0.5; 8],
        c: vec![0.05; 8],
    };
    let mut ca = caconv(&w1, input).unwrap();
    ca.choose(&Default::default());
    let mut ra = raconv(&w2, ca.post).unwrap();
    ra.choose(&Default::default());
    let mut steps: Vec<i64> = ca.rotation_steps().into_iter().collect();
    steps.extend(ra.rotation_steps());
    let ctx = Context::new(ParamSpec::insecure_test(11, 6)).unwrap();
    let mut kg = KeyGenerator::new_seeded(&ctx, 1);
    let pk = kg.public_key();
    let keys = kg.evaluation_keys(&steps, false);
    let mut enc = Encryptor::new_seeded(&ctx, 2);
    let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
    let ev = Evaluator::new(&ctx, keys).unwrap();
    let top = ctx.max_level();
    let pt = ctx
        .encode_real(&input.encode(&x)[0], top, ctx.scale_at(top))
        .unwrap();
    let ct = enc.encrypt(&pk, &pt).unwrap();
    let mut be = Ckks::new(&ev, None);
    let h = ca.apply(&mut be, &[ct]).unwrap();
    let h: Vec<_> = h
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let pc =
                |f: &dyn Fn(usize) -> f64| ferrolab_fhe::hyphen::conv::per_channel(&ca.post, i, f);
            HerPn::apply(
                &mut be,
                c,
                &pc(&|ch| q.a[ch]),
                &pc(&|ch| q.b[ch]),
                &pc(&|ch| q.c[ch]),
            )
            .unwrap()
        })
        .collect();
    let y = ra.apply(&mut be, &h).unwrap();
    assert_eq!(y[0].level, top - 5);
    let vs: Vec<f64> = dec
        .decrypt_decode(&y[0])
        .unwrap()
        .iter()
        .map(|c| c.re)
        .collect();
    let got = ra.post.decode(&[vs]);
    let mut mid = w1.reference(&x);
    let hh = mid.h * mid.h;
    mid.v
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = q.eval(i / hh, *v));
    let want = w2.reference(&mid);
    let bits = worst_bits(&got, &want);
    eprintln!(
        "encrypted CAConv+HerPN+RAConv: {bits:.1} bits worst, {} rotations",
        be.stats().rot_calls
    );
    assert!(bits > 15.0, "{bits} bits");
}

/// One MPConv layer on real ciphertexts (N = 2^11).
#[test]
fn encrypted_mpconv_layer() {
    let x = rand_map(8, 8, 15);
    let input = Layout::mp(SMALL, 1, 8);
    let w = rand_conv(8, 16, 2, 16);
    let mc = MpConv::build(&w, input).unwrap();
    let steps: Vec<i64> = mc.rotation_steps().into_iter().collect();
    let ctx = Context::new(ParamSpec::insecure_test(11, 3)).unwrap();
    let mut kg = KeyGenerator::new_seeded(&ctx, 3);
    let pk = kg.public_key();
    let keys = kg.evaluation_keys(&steps, false);
    let mut enc = Encryptor::new_seeded(&ctx, 4);
    let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
    let ev = Evaluator::new(&ctx, keys).unwrap();
    let top = ctx.max_level();
    let pt = ctx
        .encode_real(&input.encode(&x)[0], top, ctx.scale_at(top))
        .unwrap();
    let ct = enc.encrypt(&pk, &pt).unwrap();
    let mut be = Ckks::new(&ev, None);
    let y = mc.apply(&mut be, &ct).unwrap();
    let vs: Vec<f64> = dec
        .decrypt_decode(&y)
        .unwrap()
        .iter()
        .map(|c| c.re)
        .collect();
    let got = mc.post.decode(&[vs]);
    let bits = worst_bits(&got, &w.reference(&x));
    eprintln!("encrypted MPConv: {bits:.1} bits worst");
    assert!(bits > 15.0, "{bits} bits");
    assert_eq!(be.stats().rot_calls as usize, MpConv::formula(&w, &input));
}

/// With only power-of-two keys (what `hcnn keygen` makes), every rotation — single or in a
/// hoisted batch — is composed from them with the fewest key switches and equals the
/// plaintext rotation; the extra hops are counted; an amount nothing composes is refused.
#[test]
fn rotations_compose_from_power_of_two_keys() {
    use ferrolab_fhe::hyphen::backend::key_steps;
    let ctx = Context::new(ParamSpec::insecure_test(11, 3)).unwrap();
    let n = ctx.slots();
    let mut uses = std::collections::BTreeMap::new();
    uses.insert(n as i64 - 1, 50u64);
    uses.insert(3, 1u64);
    let steps = key_steps(n, &uses, 1);
    // Powers of two plus the single most used amount (n − 1), not 3.
    assert_eq!(steps.len(), n.trailing_zeros() as usize + 1);
    assert!(steps.contains(&(n as i64 - 1)) && !steps.contains(&3));
    let mut kg = KeyGenerator::new_seeded(&ctx, 1);
    let pk = kg.public_key();
    let ev = Evaluator::new(&ctx, kg.evaluation_keys(&steps, false)).unwrap();
    let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
    let mut enc = Encryptor::new_seeded(&ctx, 2);
    let v: Vec<f64> = (0..n).map(|i| ((i * 7) % 13) as f64 / 13.0 - 0.5).collect();
    let top = ctx.max_level();
    let ct = enc
        .encrypt(&pk, &ctx.encode_real(&v, top, ctx.scale_at(top)).unwrap())
        .unwrap();
    let mut be = Ckks::new(&ev, None);
    // Shortest, not greedy: 7 = 8 + (n − 1) (2 hops, not 4 + 2 + 1); n − 2 = 2·(n − 1).
    assert_eq!(be.hops(7).unwrap().len(), 2);
    assert_eq!(be.hops(n as i64 - 2).unwrap().len(), 2);
    assert_eq!(be.hops(-1).unwrap(), vec![n as i64 - 1]);
    let want = |s: i64| -> Vec<f64> {
        (0..n)
            .map(|i| v[(i as i64 + s).rem_euclid(n as i64) as usize])
            .collect()
    };
    let check = |c: &Ciphertext, s: i64| {
        let got = dec.decrypt_decode(c).unwrap();
        for (g, w) in got.iter().zip(want(s)) {
            assert!((g.re - w).abs() < 1e-4, "rotation by {s}: {} vs {w}", g.re);
        }
    };
    let r = be.rotate(&ct, 7).unwrap();
    check(&r, 7);
    let many = be.rotate_many(&ct, &[0, 5, -3, 64]).unwrap();
    for (c, s) in many.iter().zip([0, 5, -3, 64]) {
        check(c, s);
    }
    // Extra hops: 7 and 5 one each, −3 = 3·(n − 1) two, 64 none.
    assert_eq!(be.stats().rot_extra, 4);
    assert!(be.stats().key_switches() > be.stats().rot_calls - be.stats().rot_trivial);
    // No rotation keys: nothing composes.
    let ev0 = Evaluator::new(&ctx, kg.evaluation_keys(&[], false)).unwrap();
    let be0 = Ckks::new(&ev0, None);
    assert!(matches!(
        be0.hops(3),
        Err(FheError::MissingGaloisKey { .. })
    ));
}
