//! How much any per-layer budget can gain over uniform on a three-layer member (the MLP): every
//! allocation on a grid at one global sparsity (the second and third layers' sparsities in steps
//! of 0.05, the first takes the rest) or one average bit-width (steps of 0.25 bits, channels of a
//! layer split between the two neighbouring widths), each scored on the budget stage's
//! calibration images and on the evaluation images; at a sparsity, uniform and the five best by
//! each are also fine-tuned as the budget stage does. Reads a finished run folder; writes
//! nothing.
//!
//!   mlp_budget_scan RUN_DIR MEMBER SPARSITY|AVG_BITS [DATA_DIR] > scan.txt
//!
//! `CALIB=test` scores on the 2000 test images after the evaluation's instead (never trained
//! on), the calibration set a held-out split would give. Fashion-MNIST runs only.

use burn::module::Module;
use ferrolab_compress::budget;
use ferrolab_compress::experiment::{self, members};
use ferrolab_compress::ops;
use ferrolab_compress::train::{self, EvalSet, TrainSettings, to_train};
use ferrolab_compress::zoo::{LayerParams, ZooNet};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 4 {
        eprintln!("usage: mlp_budget_scan RUN_DIR MEMBER SPARSITY|AVG_BITS [DATA_DIR]");
        std::process::exit(2);
    }
    let dir = PathBuf::from(&a[1]);
    let id = &a[2];
    // A sparsity below 1, or an average bit-width (≥ 2) for the bit scan.
    let s: f64 = a[3].parse()?;
    if !((0.0..1.0).contains(&s) || (2.0..=8.0).contains(&s)) {
        return Err(format!("{s}: neither a sparsity in [0, 1) nor a bit-width in [2, 8]").into());
    }
    let data_dir = a.get(4).map(PathBuf::from);
    let (cfg, master) = ferrolab_compress::probe::run_settings(&dir)?;
    let zoo = members(&cfg, master);
    let member = zoo
        .iter()
        .find(|z| &z.id == id)
        .ok_or_else(|| format!("{id}: not a member of this run"))?;
    let dev = ferrolab_core::backend::device();
    let net = member.spec.build(&dev)?;
    let net = ferrolab_core::run::load_checkpoint(
        net,
        &dir.join("models").join(format!("{id}.safetensors")),
    )?;
    let data = experiment::load(&cfg, data_dir.as_deref())?;
    let eval = EvalSet::new(&data.eval, data.norm, cfg.data.eval_batch);
    let Some(stage_calib) = experiment::calibration_set(&cfg, &data) else {
        return Err(
            "the run has budget.calibrate_images = 0: no calibration images to score".into(),
        );
    };
    let calib = if std::env::var("CALIB").as_deref() == Ok("test") {
        if cfg.data.dataset != "fashion-mnist" {
            return Err("CALIB=test needs a Fashion-MNIST run".into());
        }
        let dir = match &cfg.data.dir {
            Some(p) => PathBuf::from(p),
            None => ferrolab_data::lookup::find_dataset(data_dir.as_deref(), "fashion-mnist")?,
        };
        let (_, test) = ferrolab_vision::data::load_fashion_mnist(&dir)?;
        let lo = cfg.data.eval_images;
        if lo + 2000 > test.len() {
            return Err(format!(
                "CALIB=test: {} test images leave none after the evaluation's {lo}",
                test.len()
            )
            .into());
        }
        let held: Vec<usize> = (lo..lo + 2000).collect();
        EvalSet::new(&test.subset(&held), data.norm, cfg.data.eval_batch)
    } else {
        stage_calib
    };
    let sizes = net.layer_sizes();
    if sizes.len() != 3 {
        return Err(format!("{id} has {} layers; the scan takes three", sizes.len()).into());
    }
    let total: usize = sizes.iter().sum();
    let target = (s * total as f64).round() as usize;
    if s >= 2.0 {
        println!("sizes {sizes:?} average bits {s}");
        return bit_scan(&net, &sizes, s, &calib, &eval);
    }
    println!("sizes {sizes:?} weights pruned {target}");
    let prune = |counts: &[usize]| {
        let mut m = net.clone();
        let masks = experiment::prune_model(&mut m, counts);
        (m, masks)
    };
    // The budget stage's fine-tune (same images, settings and seed), pruned weights held at 0.
    let ft_set = data.train.head(cfg.budget.finetune_images);
    let ft = TrainSettings {
        epochs: cfg.budget.finetune_epochs,
        batch_size: cfg.zoo.batch_size,
        lr: cfg.budget.finetune_lr,
        weight_decay: cfg.zoo.weight_decay,
    };
    let tuned = |(m, masks): &(ZooNet, Vec<Option<Vec<bool>>>)| {
        let t = train::fit(
            to_train(m),
            &ft_set,
            data.norm,
            &ft,
            member.seed,
            Some(masks),
        )
        .valid();
        eval.accuracy(&t)
    };
    let mut scored: Vec<(f64, f64, [usize; 3])> = Vec::new();
    // The budget stage's uniform allocation (exactly round(s·N) weights).
    let uni = budget::prune_counts(&sizes, &[0.0; 3], s, 0.0);
    let mu = prune(&uni);
    println!(
        "uniform {:?} calib {:.4} eval {:.4} tuned {:.4}",
        uni,
        calib.accuracy(&mu.0),
        eval.accuracy(&mu.0),
        tuned(&mu)
    );
    // Layers after the first on a grid of sparsities; the first takes the rest.
    let grid: Vec<f64> = (0..=19).map(|i| i as f64 * 0.05).collect();
    for &s2 in &grid {
        for &s3 in &grid {
            let c2 = (s2 * sizes[1] as f64).round() as usize;
            let c3 = (s3 * sizes[2] as f64).round() as usize;
            let Some(c1) = target.checked_sub(c2 + c3) else {
                continue;
            };
            if c1 > sizes[0] * 98 / 100 {
                continue;
            }
            let (m, _) = prune(&[c1, c2, c3]);
            let (c, e) = (calib.accuracy(&m), eval.accuracy(&m));
            println!(
                "s1 {:.3} s2 {s2:.2} s3 {s3:.2} calib {c:.4} eval {e:.4}",
                c1 as f64 / sizes[0] as f64,
            );
            scored.push((c, e, [c1, c2, c3]));
        }
    }
    // Fine-tuned: the calibration's five best and the evaluation's five best (a ceiling).
    let top = |key: fn(&(f64, f64, [usize; 3])) -> f64| {
        let mut v = scored.clone();
        v.sort_by(|a, b| key(b).total_cmp(&key(a)));
        v.truncate(5);
        v
    };
    for (who, list) in [("calib-top", top(|r| r.0)), ("eval-top", top(|r| r.1))] {
        for (c, e, counts) in list {
            println!(
                "{who} {:?} calib {c:.4} eval {e:.4} tuned {:.4}",
                counts,
                tuned(&prune(&counts))
            );
        }
    }
    Ok(())
}

/// Channels of layer l at `⌈b⌉` and `⌊b⌋` bits so that the layer averages `b` (to a channel).
fn mix(channels: usize, b: f64) -> Vec<u32> {
    let (lo, hi) = (b.floor() as u32, b.ceil() as u32);
    let k = (((b - lo as f64) * channels as f64).round() as usize).min(channels);
    (0..channels).map(|c| if c < k { hi } else { lo }).collect()
}

fn bit_scan(
    net: &ZooNet,
    sizes: &[usize],
    avg: f64,
    calib: &EvalSet,
    eval: &EvalSet,
) -> Result<(), Box<dyn std::error::Error>> {
    let ch: Vec<usize> = (0..sizes.len())
        .map(|l| net.layer(l).out_channels)
        .collect();
    let quant = |bits: &[f64]| -> Result<_, Box<dyn std::error::Error>> {
        let mut m = net.clone();
        for (l, &b) in bits.iter().enumerate() {
            let w = ops::fake_quantize_channels(&net.layer(l), &mix(ch[l], b))?;
            m.set_layer_weight(l, &w);
        }
        Ok(m)
    };
    let total: f64 = sizes.iter().map(|&n| n as f64).sum();
    let mu = quant(&vec![avg; sizes.len()])?;
    println!(
        "uniform calib {:.4} eval {:.4}",
        calib.accuracy(&mu),
        eval.accuracy(&mu)
    );
    let grid: Vec<f64> = (0..=24).map(|i| 2.0 + i as f64 * 0.25).collect();
    for &b2 in &grid {
        for &b3 in &grid {
            let b1 = (avg * total - b2 * sizes[1] as f64 - b3 * sizes[2] as f64) / sizes[0] as f64;
            // Whole channels of the first layer, rounded down so the budget holds.
            let b1 = (b1 * ch[0] as f64).floor() / ch[0] as f64;
            if !(2.0..=8.0).contains(&b1) {
                continue;
            }
            let m = quant(&[b1, b2, b3])?;
            println!(
                "b1 {b1:.3} b2 {b2:.2} b3 {b3:.2} calib {:.4} eval {:.4}",
                calib.accuracy(&m),
                eval.accuracy(&m)
            );
        }
    }
    Ok(())
}
