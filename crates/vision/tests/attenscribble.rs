//! AttenScribble: the network with its attention block (shapes, gradients, checkpoint), the
//! whole experiment on a small generated ACDC-layout folder (report keys, predict, resume),
//! bad input, and a real-data run on `../shared/data/acdc` (ignored: needs the data).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_core::backend::{device, exclusive_rng, train_device};
use ferrolab_core::nn::gradcheck::check_input_gradient;
use ferrolab_core::nn::to_vec_f32;
use ferrolab_core::{Checked, ErrorClass, RunContext, RunDir};
use ferrolab_data::npy::npy_bytes;
use ferrolab_data::npz::write_npz;
use ferrolab_vision::attenscribble::config::AttenScribbleConfig;
use ferrolab_vision::attenscribble::model::AttenUNetSpec;
use ferrolab_vision::attenscribble::{checkpoint, experiment, predict};
use std::path::{Path, PathBuf};

/// Held by every test of this file for its whole body, so that no two run at once. The
/// resume-exactness test failed twice in CI (val Dice 0.034348 vs 0.034618): two runs of the
/// same experiment in this process diverged before the resume point while other tests trained
/// beside them. The likely cause, since fixed in core: loading a checkpoint (as two tests here
/// do, outside any experiment) read burn's lazily initialised weights, drawing them from the
/// process-wide generator in the middle of another test's seeded run. Without this lock the
/// tests passed in every run tried so far; it stays until many more CI runs agree.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tiny_spec(level: Option<usize>) -> AttenUNetSpec {
    AttenUNetSpec {
        in_channels: 1,
        classes: 4,
        widths: vec![2, 4, 4],
        dropout: vec![0.0; 3],
        attention_level: level,
        mlp_ratio: 2,
    }
}

#[test]
fn network_shapes_affinity_and_input_gradient() {
    let _serial = serial();
    let _rng = exclusive_rng();
    let dev = train_device();
    dev.seed(71);
    let net = tiny_spec(Some(1)).build(&dev).unwrap();
    let x = Tensor::<4>::random([2, 1, 8, 12], Distribution::Default, &dev);
    let out = net.forward(x);
    assert_eq!(out.logits.dims(), [2, 4, 8, 12]);
    assert_eq!(out.grid, (4, 6));
    let att = out.attention.unwrap();
    assert_eq!(att.dims(), [2, 24, 24]);
    let k = net.attention_block().unwrap().affinity(att);
    let kv = to_vec_f32(k.clone());
    assert!(kv.iter().all(|&v| v > 0.0 && v < 1.0));
    let kt = to_vec_f32(k.swap_dims(1, 2));
    let asym = kv
        .iter()
        .zip(&kt)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(asym < 1e-6, "affinity must be symmetric: {asym}");
    // Every stage can hold the block.
    for level in 0..3 {
        let n = tiny_spec(Some(level)).build(&dev).unwrap();
        let o = n.forward(Tensor::<4>::random(
            [1, 1, 8, 8],
            Distribution::Default,
            &dev,
        ));
        assert_eq!(o.attention.unwrap().dims()[1], (8 >> level) * (8 >> level));
    }
    assert!(
        tiny_spec(None)
            .build(&dev)
            .unwrap()
            .forward(Tensor::<4>::zeros([1, 1, 8, 8], &dev))
            .attention
            .is_none()
    );
    // Gradients through the whole network, attention block included (running statistics, as
    // the UNet's own check, so batch norm's batch coupling does not blur the comparison).
    let _ = net.forward(Tensor::<4>::random(
        [4, 1, 8, 8],
        Distribution::Default,
        &dev,
    ));
    let net = net.freeze();
    check_input_gradient(|x: Tensor<4>| net.forward(x).logits, [2, 1, 8, 8], 72);
    check_input_gradient(
        |x: Tensor<4>| {
            let o = net.forward(x);
            net.attention_block()
                .unwrap()
                .affinity(o.attention.unwrap())
        },
        [1, 1, 8, 8],
        73,
    );
}

#[test]
fn checkpoint_roundtrip_and_foreign_checkpoints_are_refused() {
    let _serial = serial();
    let _rng = exclusive_rng();
    let dev = device();
    dev.seed(74);
    let spec = tiny_spec(Some(1));
    let net = spec.build(&dev).unwrap();
    let dir = tmp("ckpt");
    checkpoint::save(
        &dir,
        &net,
        &checkpoint::meta(spec.clone(), 16, "attenscribble"),
    )
    .unwrap();
    drop(_rng);
    let (loaded, meta) = checkpoint::load(&dir).unwrap();
    assert_eq!(meta.size, 16);
    let x = Tensor::<4>::random([1, 1, 16, 16], Distribution::Default, &dev);
    let (a, b) = (
        to_vec_f32(net.forward(x.clone()).logits),
        to_vec_f32(loaded.forward(x).logits),
    );
    assert_eq!(a, b);
    // A checkpoint for another input size (not a multiple of the network's 4).
    let mut m = meta.clone();
    m.size = 18;
    std::fs::write(dir.join("meta.json"), serde_json::to_string(&m).unwrap()).unwrap();
    let e = checkpoint::load(&dir).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage);
    assert!(
        e.to_string().contains("meta.json") && e.to_string().contains("18"),
        "{e}"
    );
    assert!(!e.to_string().contains('\n'));
    std::fs::remove_dir_all(&dir).ok();
}

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ferrolab-attenscribble-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A disc of class 3 inside a ring of class 2 beside a blob of class 1, brighter than the
/// background, with scribbles along the middle row of each structure.
fn synthetic(shape: (usize, usize), shift: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let (h, w) = shape;
    let (mut image, mut label, mut scribble) =
        (vec![20u8; h * w], vec![0u8; h * w], vec![4u8; h * w]);
    let (cy, cx) = (h as f64 / 2.0, w as f64 / 2.0 + shift as f64);
    for y in 0..h {
        for x in 0..w {
            let d = ((y as f64 - cy).powi(2) + (x as f64 - cx).powi(2)).sqrt();
            let d1 = ((y as f64 - cy).powi(2) + (x as f64 - cx + 7.0).powi(2)).sqrt();
            let (l, v) = if d < 3.0 {
                (3, 220)
            } else if d < 5.0 {
                (2, 120)
            } else if d1 < 2.5 {
                (1, 180)
            } else {
                (0, 20)
            };
            label[y * w + x] = l;
            image[y * w + x] = v + ((x * 7 + y * 3) % 11) as u8;
            if y == cy as usize || (l == 0 && (y == 1 || y + 2 == h)) {
                scribble[y * w + x] = l;
            }
        }
    }
    (image, label, scribble)
}

fn write(path: &Path, shape: &[usize], image: &[u8], label: &[u8], scribble: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    // A scribble of another length gets a 1-D shape (the "shapes differ" case).
    let sshape = if scribble.len() == label.len() {
        shape.to_vec()
    } else {
        vec![scribble.len()]
    };
    write_npz(
        path,
        &[
            ("image", npy_bytes("|u1", shape, false, image)),
            ("label", npy_bytes("|u1", shape, false, label)),
            ("scribble", npy_bytes("|u1", &sshape, false, scribble)),
        ],
        true,
    )
    .unwrap();
}

fn acdc_like(root: &Path) {
    for p in 21..25 {
        for k in 0..3 {
            let (i, l, s) = synthetic((20, 24), (p + k) % 3);
            write(
                &root.join(format!("train/patient{p:03}_frame01_slice_{k}.npz")),
                &[20, 24],
                &i,
                &l,
                &s,
            );
        }
    }
    for p in 11..13 {
        let (mut iv, mut lv, mut sv) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..3 {
            let (i, l, s) = synthetic((18, 22), k % 2);
            iv.extend(i);
            lv.extend(l);
            sv.extend(s);
        }
        write(
            &root.join(format!("val/patient{p:03}_frame01.npz")),
            &[3, 18, 22],
            &iv,
            &lv,
            &sv,
        );
    }
}

/// [`acdc_like`] with every validation label passed through `relabel`.
fn acdc_like_val_relabelled(root: &Path, relabel: fn(u8) -> u8) {
    acdc_like(root);
    for p in 11..13 {
        let path = root.join(format!("val/patient{p:03}_frame01.npz"));
        let (mut iv, mut lv, mut sv) = (Vec::new(), Vec::new(), Vec::new());
        for k in 0..3 {
            let (i, l, s) = synthetic((18, 22), k % 2);
            iv.extend(i);
            lv.extend(l.into_iter().map(relabel));
            sv.extend(s);
        }
        write(&path, &[3, 18, 22], &iv, &lv, &sv);
    }
}

/// Validation volumes that label no LV still select a model by the mean Dice of the classes
/// they do label (it was NaN, so the run kept its initial weights); volumes that label no
/// structure at all are a usage error before any training.
#[test]
fn a_validation_set_without_a_class_still_selects_a_model() {
    let _serial = serial();
    let root = tmp("no-lv");
    acdc_like_val_relabelled(&root, |l| if l == 3 { 0 } else { l });
    let mut c = tiny_cfg(&root).into_inner();
    c.train.seeds = 1;
    c.train.methods = vec!["pce".into()];
    let cfg = Checked::new(c.clone()).unwrap();
    let out = tmp("no-lv-run");
    let o = experiment::run(&cfg, &mut ctx(&out, true)).unwrap();
    // Ours is `metrics`; the baselines run here keep theirs under their names.
    let m = &o.report.baselines["pce"];
    let d = m.get("val_dice").copied().unwrap_or(f64::NAN);
    assert!(d.is_finite(), "{m:?}");
    let (rv, myo) = (m["val_dice_rv"], m["val_dice_myo"]);
    assert!((d - (rv + myo) / 2.0).abs() < 1e-12, "{d} vs {rv}, {myo}");
    assert!(!m.contains_key("val_dice_lv"), "{m:?}");

    let root = tmp("no-structure");
    acdc_like_val_relabelled(&root, |_| 0);
    c.data.dir = Some(root.display().to_string());
    let cfg = Checked::new(c).unwrap();
    let out = tmp("no-structure-run");
    let e = experiment::run(&cfg, &mut ctx(&out, true)).err().unwrap();
    assert_eq!(e.class(), ferrolab_core::ErrorClass::Usage);
    assert!(e.to_string().contains("data.val"), "{e}");
}

fn tiny_cfg(root: &Path) -> Checked<AttenScribbleConfig> {
    let mut c = AttenScribbleConfig::default();
    c.data.dir = Some(root.display().to_string());
    c.data.size = 16;
    c.model.widths = vec![4, 8, 8];
    c.model.dropout = vec![0.0, 0.0, 0.1];
    c.model.attention_level = 1;
    c.loss.crf_radius = 2;
    c.loss.crf_sigma_xy = 2.0;
    c.loss.attn_radius = 1;
    c.loss.attn_sigma = 1.0;
    c.train.iterations = 6;
    c.train.batch_size = 4;
    c.train.seeds = 2;
    c.train.eval_every = 3;
    c.train.checkpoint_every = 2;
    Checked::new(c).unwrap()
}

fn ctx(dir: &Path, fresh: bool) -> RunContext {
    let run = if fresh {
        RunDir::create(dir).unwrap()
    } else {
        RunDir::reopen(dir).unwrap()
    };
    RunContext::new(5, 1, None, run)
}

#[test]
fn experiment_reports_every_key_predicts_and_resumes_exactly() {
    let _serial = serial();
    // A private one-thread pool: in the shared pool, the other tests' work changes how rayon
    // splits the backend's parallel reductions, and the straight and resumed runs then differed
    // in the last bits (CI on a loaded machine: val Dice 0.034295 vs 0.034618).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(reports_predicts_and_resumes);
}

fn reports_predicts_and_resumes() {
    let root = tmp("data");
    acdc_like(&root);
    let cfg = tiny_cfg(&root);
    let a = tmp("straight");
    let o = experiment::run(&cfg, &mut ctx(&a, true)).unwrap();
    let r = &o.report;
    let mut want = vec!["val_dice".to_string(), "val_hd95_px".to_string()];
    for c in ["rv", "myo", "lv"] {
        want.push(format!("val_dice_{c}"));
        want.push(format!("val_hd95_px_{c}"));
    }
    for k in &want {
        for table in [
            &r.metrics,
            &r.baselines["pce"],
            &r.baselines["pce_gcrf"],
            &r.baselines["full"],
        ] {
            let d = table.get(k.as_str()).copied().or(None);
            if k.starts_with("val_dice") {
                let d = d.unwrap_or_else(|| panic!("missing {k}"));
                assert!((0.0..=1.0).contains(&d), "{k} = {d}");
                assert!(table.contains_key(&format!("{k}_std")), "missing {k}_std");
            }
        }
    }
    assert_eq!(r.metrics["seeds"], 2.0);
    // Paired by seed: the mean of the per-seed differences equals the difference of the means.
    let gain = r.metrics["val_dice_paired_gain_over_pce_gcrf"];
    let diff = r.metrics["val_dice"] - r.baselines["pce_gcrf"]["val_dice"];
    assert!((gain - diff).abs() < 1e-9, "{gain} vs {diff}");
    assert!(r.metrics.contains_key("val_dice_paired_gain_over_pce_std"));
    assert_eq!(
        r.details["paired_val_dice_gain"]["full"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert!(
        a.join("overlays/attenscribble.png").is_file() && a.join("overlays/full.png").is_file()
    );
    // predict on a validation volume: one uint8 `label` of the volume's shape.
    let (model, meta) = checkpoint::load(&a.join("checkpoint")).unwrap();
    assert_eq!(meta.method, "attenscribble");
    let (shape, labels) =
        predict::predict_file(&model, meta.size, &root.join("val/patient011_frame01.npz")).unwrap();
    assert_eq!(shape, vec![3, 18, 22]);
    assert!(labels.len() == 3 * 18 * 22 && labels.iter().all(|&l| l < 4));
    // Killed after 4 iterations of the first unit, then resumed: the same figures.
    let b = tmp("resumed");
    let e = experiment::run_with(&cfg, &mut ctx(&b, true), Some(4)).unwrap_err();
    assert!(e.to_string().contains("--resume"), "{e}");
    let resumed = experiment::run(&cfg, &mut ctx(&b, false)).unwrap();
    for (k, v) in &r.metrics {
        if k.ends_with("seconds") {
            continue;
        }
        let w = resumed.report.metrics[k];
        assert!(v == &w || (v.is_nan() && w.is_nan()), "{k}: {v} vs {w}");
    }
    for name in ["pce", "full"] {
        assert_eq!(
            r.baselines[name].get("val_dice"),
            resumed.report.baselines[name].get("val_dice")
        );
    }
    // `data.test`: any folder of volumes gets the `test_` keys under ours and every baseline.
    // Given the validation volumes themselves, the picked checkpoint scores on them exactly as
    // on val, and skips the same HD95s.
    let mut with_test = cfg.get().clone();
    with_test.data.test = Some(root.join("val").display().to_string());
    let with_test = Checked::new(with_test).unwrap();
    let t = tmp("with-test");
    let o = experiment::run(&with_test, &mut ctx(&t, true)).unwrap();
    let rt = &o.report;
    for table in [
        &rt.metrics,
        &rt.baselines["pce"],
        &rt.baselines["pce_gcrf"],
        &rt.baselines["full"],
    ] {
        for k in ["dice", "dice_rv", "dice_myo", "dice_lv"] {
            let (v, w) = (table[&format!("val_{k}")], table[&format!("test_{k}")]);
            assert_eq!(v, w, "{k}");
            assert!(table.contains_key(&format!("test_{k}_std")), "test_{k}_std");
        }
    }
    assert_eq!(rt.details["test_hd95_skipped"], rt.details["hd95_skipped"]);
    assert!(r.details["test_hd95_skipped"].is_null());
    for d in [&root, &a, &b, &t] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn bad_input_names_the_file() {
    let _serial = serial();
    let root = tmp("bad");
    acdc_like(&root);
    let cfg = tiny_cfg(&root);
    let (i, l, _) = synthetic((20, 24), 0);
    // A scribble value outside 0–4.
    let mut s = vec![4u8; 20 * 24];
    s[7] = 5;
    let f = root.join("train/patient030_frame01_slice_0.npz");
    write(&f, &[20, 24], &i, &l, &s);
    let e = experiment::run(&cfg, &mut ctx(&tmp("bad-out1"), true)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage);
    assert!(
        e.to_string().contains("patient030_frame01_slice_0.npz")
            && e.to_string().contains("scribble value 5"),
        "{e}"
    );
    // Shapes that differ.
    write(&f, &[20, 24], &i, &l, &s[..100]);
    let e = experiment::run(&cfg, &mut ctx(&tmp("bad-out2"), true)).unwrap_err();
    assert!(
        e.to_string().contains("patient030") && e.to_string().contains("shape"),
        "{e}"
    );
    // An empty training folder.
    std::fs::remove_dir_all(root.join("train")).unwrap();
    std::fs::create_dir_all(root.join("train")).unwrap();
    let e = experiment::run(&cfg, &mut ctx(&tmp("bad-out3"), true)).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Usage);
    assert!(
        e.to_string().contains("train") && e.to_string().contains("no .npz"),
        "{e}"
    );
    for t in ["bad", "bad-out1", "bad-out2", "bad-out3"] {
        std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("ferrolab-attenscribble-{t}-{}", std::process::id())),
        )
        .ok();
    }
}

/// The quick preset on the real ACDC files: every method runs end to end and scores the real
/// validation volumes. The preset is a smoke run, far too short to learn (val Dice 0.004,
/// 0.131, 0.070 and 0.000 for the four methods, seed 0), so what is checked is that the scores
/// come from real predictions: in range, and not one value shared by every method.
#[test]
#[ignore = "needs ../shared/data/acdc (run by .ci/run with --include-ignored)"]
fn quick_preset_on_real_acdc() {
    let _serial = serial();
    use ferrolab_core::System;
    use ferrolab_vision::attenscribble::AttenScribbleSystem;
    let sys = AttenScribbleSystem;
    let checked = ferrolab_core::system::resolve_config(&sys, Some("quick"), None, &[]).unwrap();
    let out = tmp("real");
    let mut c = RunContext::new(0, 2, None, RunDir::create(&out).unwrap());
    sys.prepare(&checked, &c).unwrap();
    let o = sys.run(&checked, &mut c).unwrap();
    let r = &o.report;
    assert_eq!(r.details["val_volumes"], 4);
    let mut dice = Vec::new();
    for t in [
        &r.metrics,
        &r.baselines["pce"],
        &r.baselines["pce_gcrf"],
        &r.baselines["full"],
    ] {
        let d = t["val_dice"];
        assert!(d.is_finite() && (0.0..=1.0).contains(&d), "{d}");
        dice.push(d);
    }
    assert!(
        dice.iter().any(|d| *d > 0.0) && dice.iter().any(|d| *d != dice[0]),
        "{dice:?}"
    );
    std::fs::remove_dir_all(&out).ok();
}

/// The `medium` preset scales the reference's loss weights (0.1 at 256×256, windows of radius 5,
/// σ 6) by the ratio of the kernel sums when the windows shrink to radius 2, σ 1.5: the
/// regularisers sum a kernel over a window while the partial CE is a per-pixel mean.
#[test]
fn medium_preset_scales_the_loss_weights_with_the_window() {
    let _serial = serial();
    use ferrolab_vision::attenscribble::losses::gaussian_window;
    let text = include_str!("../../../configs/attenscribble/medium.toml");
    let cfg: AttenScribbleConfig =
        ferrolab_core::config::load_layers(Some(("medium", text)), None, &[]).unwrap();
    let cfg = Checked::new(cfg).unwrap();
    // A window's full kernel sum: the row of the centre cell of a (2r+1)² grid.
    let kernel_sum = |r: usize, sigma: f64| {
        let d = 2 * r + 1;
        let w = to_vec_f32(gaussian_window(d, d, r, sigma, &device()));
        let centre = (d * d) / 2;
        w[centre * d * d..(centre + 1) * d * d]
            .iter()
            .map(|&v| f64::from(v))
            .sum::<f64>()
    };
    let reference = kernel_sum(5, 6.0);
    assert!((reference - 92.0086).abs() < 1e-3, "{reference}");
    let l = &cfg.loss;
    let crf = 0.1 * reference / kernel_sum(l.crf_radius, l.crf_sigma_xy);
    let attn = 0.1 * reference / kernel_sum(l.attn_radius, l.attn_sigma);
    assert!(
        (l.crf_weight - crf).abs() < 1e-3,
        "{} vs {crf}",
        l.crf_weight
    );
    assert!(
        (l.attn_weight - attn).abs() < 1e-3,
        "{} vs {attn}",
        l.attn_weight
    );
    assert_eq!(
        l.attn_start, 0,
        "the reference's ACDC script starts the attentive loss at once"
    );
    // The reference's step size: at 5× it the transformer block fitted worse than the plain
    // UNet (ATTENSCRIBBLE.md, fourth pass).
    assert_eq!(cfg.train.lr, 0.01);
}

/// `data.dataset = "synthetic"`: the whole comparison on generated volumes, no files. Scribble
/// supervision learns the structures (pCE alone at this size, seed 5: val Dice 0.66 after 50
/// iterations, 0.82 after 200, RV 0.81, Myo 0.74, LV 0.91), the report says which data it used,
/// and
/// the synthetic keys are checked against the dataset.
#[test]
fn synthetic_data_runs_the_comparison_without_files() {
    let _serial = serial();
    let mut c = AttenScribbleConfig::default();
    c.data.dataset = "synthetic".into();
    c.data.size = 32;
    c.data.train_patients = 12;
    c.data.val_volumes = 3;
    c.data.synthetic_slices = 4;
    c.data.synthetic_shape = vec![48, 48];
    c.model.widths = vec![8, 16, 32];
    c.model.dropout = vec![0.0, 0.0, 0.1];
    c.model.attention_level = 1;
    c.loss.crf_radius = 2;
    c.loss.crf_sigma_xy = 1.5;
    c.loss.attn_radius = 2;
    c.loss.attn_sigma = 1.5;
    c.train.iterations = 200;
    c.train.batch_size = 4;
    c.train.lr = 0.05;
    c.train.seeds = 1;
    c.train.eval_every = 50;
    c.train.checkpoint_every = 1000;
    c.train.methods = vec!["pce".into()];
    let cfg = Checked::new(c.clone()).unwrap();
    let out = tmp("synthetic");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let o = pool
        .install(|| experiment::run(&cfg, &mut ctx(&out, true)))
        .unwrap();
    let r = &o.report;
    assert_eq!(r.dataset, "synthetic");
    assert_eq!(r.details["train_slices"], 48);
    assert_eq!(r.details["val_volumes"], 3);
    assert!(
        r.details["protocol"]
            .as_str()
            .is_some_and(|p| p.contains("synthetic")),
        "{}",
        r.details["protocol"]
    );
    let pce = &r.baselines["pce"];
    let dice = pce["val_dice"];
    assert!(dice > 0.6, "pCE on synthetic scribbles: val Dice {dice}");
    for class in ["rv", "myo", "lv"] {
        assert!(pce[&format!("val_dice_{class}")] > 0.4, "{class}");
    }
    std::fs::remove_dir_all(&out).ok();
    // `attenscribble synth` writes the same set: trained from its files (as ACDC's), the run
    // gives the same figures.
    let files = tmp("synthetic-files");
    let seed = ferrolab_core::seed::derive(5, experiment::SYNTHETIC_STREAM);
    let written =
        ferrolab_vision::attenscribble::synth::write_set(&files, seed, (12, 3, 2), 4, (48, 48))
            .unwrap();
    assert_eq!(written, 12 * 4 + 3 + 2);
    let mut from_files = c.clone();
    from_files.data.dataset = "acdc".into();
    from_files.data.dir = Some(files.display().to_string());
    from_files.data.synthetic_slices = 8;
    from_files.data.synthetic_shape = vec![112, 96];
    let from_files = Checked::new(from_files).unwrap();
    let out2 = tmp("synthetic-from-files");
    let o2 = pool
        .install(|| experiment::run(&from_files, &mut ctx(&out2, true)))
        .unwrap();
    assert_eq!(o2.report.dataset, "acdc");
    assert_eq!(o2.report.baselines["pce"]["val_dice"], dice);
    for d in [&files, &out2] {
        std::fs::remove_dir_all(d).ok();
    }
    // data.dir is not read by the synthetic set; the synthetic keys only by it.
    let mut bad = c.clone();
    bad.data.dir = Some("/somewhere".into());
    let e = Checked::new(bad).unwrap_err().to_string();
    assert!(e.contains("data.dir") && e.contains("synthetic"), "{e}");
    let mut bad = AttenScribbleConfig::default();
    bad.data.synthetic_slices = 3;
    let e = Checked::new(bad).unwrap_err().to_string();
    assert!(e.contains("data.synthetic_slices"), "{e}");
    let mut bad = c.clone();
    bad.data.dataset = "acdc2".into();
    assert!(Checked::new(bad).is_err());
    // Validation patients stop at 20 (more would be training patients), training patients at
    // 999, and a batch needs that many slices.
    for (key, set) in [
        (
            "data.val_volumes",
            (|b: &mut AttenScribbleConfig| b.data.val_volumes = 11) as fn(&mut AttenScribbleConfig),
        ),
        ("data.train_patients", |b| b.data.train_patients = 980),
        ("train.batch_size", |b| b.train.batch_size = 49),
    ] {
        let mut bad = c.clone();
        set(&mut bad);
        let e = Checked::new(bad).unwrap_err().to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}
