//! The cross-domain members: the generic parameter view on SECNN (restored bit for bit after
//! every operator, laid out output channel first), and — on the real data, `#[ignore]`d — the
//! GCN on Cora and SECNN on MR trained, swept and scored.

#![allow(clippy::unwrap_used)]

use ferrolab_compress::criteria::CriteriaSettings;
use ferrolab_compress::crossdomain::{self, Flat};
use ferrolab_compress::dataset::Grid;
use ferrolab_compress::ops;
use ferrolab_compress::zoo::{LayerParams, snapshot};
use ferrolab_core::backend::{device, exclusive_rng, seed_backend};
use ferrolab_text::Secnn;
use ferrolab_text::models::conv::ConvEncoderConfig;

#[test]
fn flat_view_of_secnn_is_reversible_and_output_major() {
    let _g = exclusive_rng();
    seed_backend(5);
    let dev = device();
    let enc = ConvEncoderConfig::new(11)
        .with_embed_dim(4)
        .with_maps(3)
        .with_widths(vec![2, 3]);
    let model = Secnn::new(&enc, 2, 0.0, 2, &dev);
    let mut net = Flat::new(model, &["embedding", "conv", "se.fc1", "se.fc2", "fc"]);
    assert_eq!(
        net.layer_names(),
        ["embedding", "conv", "se.fc1", "se.fc2", "fc"]
    );
    // Embedding 11×4, filters 4×(3·(2+3)), SE 6→3→6, output 6→2.
    assert_eq!(net.layer_sizes(), [44, 60, 18, 18, 12]);
    let fc = net.layer(4);
    assert_eq!((fc.out_channels, fc.fan_in()), (2, 6));
    let before = snapshot(&net.model);
    for l in 0..5 {
        let orig = net.layer(l);
        let mut int8 = ops::Int8Layer::store(&orig);
        int8.flip(&ops::flip_positions_count(int8.bits(), 3, l as u64));
        for w in [
            ops::magnitude_prune(&orig.weight, 0.5).unwrap(),
            ops::channel_prune(&orig, 0.5).unwrap(),
            ops::fake_quantize(&orig, 2).unwrap(),
            int8.dequantize(&orig),
        ] {
            net.set_layer_weight(l, &w);
            assert_eq!(net.layer(l).weight, w, "layer {l}");
            assert_ne!(snapshot(&net.model), before, "layer {l}");
            net.set_layer_weight(l, &orig.weight);
        }
        assert_eq!(snapshot(&net.model), before, "layer {l}");
    }
}

fn small_grid() -> Grid {
    Grid {
        sparsities: vec![0.5, 0.9],
        bits: vec![4, 2],
        flip_counts: vec![10],
        flip_rates: vec![1e-3],
        flip_seeds: 2,
    }
}

fn settings() -> CriteriaSettings {
    CriteriaSettings {
        calib_images: 128,
        batch: 64,
        hutchinson_probes: 2,
        ig_steps: 2,
    }
}

fn check_member(m: &mut crossdomain::CrossMember, min_acc: f64, layers: usize) {
    let (base, fams, probes, scores) = crossdomain::measure(m, &small_grid(), &settings(), 3);
    assert!(base >= min_acc, "{}: accuracy {base}", m.arch);
    // Per layer: 2 sparsities × 2 pruning kinds, 2 bit-widths, 2 flip settings × 2 seeds.
    assert_eq!(probes, layers * (4 + 2 + 4));
    // Pruning 90% of the last layer costs accuracy; every drop is a finite number.
    let s9 = &fams["prune"].0["s0.9"];
    assert_eq!(s9.len(), layers);
    assert!(s9[layers - 1] > 0.0, "{}: {s9:?}", m.arch);
    for (drops, _, _) in fams.values() {
        for d in drops.values() {
            assert!(d.iter().all(|v| v.is_finite()));
        }
    }
    // Every criterion but SynFlow (defined for the image zoo only).
    for c in ferrolab_compress::criteria::CRITERIA {
        let has = scores.scores.get(c);
        if c.starts_with("synflow") {
            assert!(has.is_none());
        } else {
            let v = has.unwrap_or_else(|| panic!("{c} missing"));
            assert_eq!(v.len(), layers, "{c}");
            assert!(v.iter().all(|x| x.is_finite()), "{c}: {v:?}");
        }
    }
    // The model is as trained after the sweep.
    assert_eq!(m.accuracy(), base);
}

#[test]
#[ignore = "needs graphs/cora_planetoid.npz"]
fn gcn_on_cora_trains_sweeps_and_scores() {
    let _g = exclusive_rng();
    let mut m = crossdomain::gcn_cora(None, 1).unwrap();
    check_member(&mut m, 0.75, 2);
}

#[test]
#[ignore = "needs text/rt-polarity.all"]
fn secnn_on_mr_trains_sweeps_and_scores() {
    let _g = exclusive_rng();
    let mut m = crossdomain::secnn_mr(None, 1, 128).unwrap();
    check_member(&mut m, 0.68, 5);
}
