//! The comparison the paper makes, in one run: every method of `train.methods` (AttenScribble,
//! pCE only, pCE + gated CRF, full supervision) trained with the same seeds, iterations and
//! augmentation; each scored on whole validation volumes with its best-validation weights
//! (and on `data.test` when given); means ± std over seeds in `report.json`, overlays as PNG,
//! learning curves through the runner's SVG.
//!
//! Each (method, seed) is a unit of the run folder: a run continued with `--resume` skips the
//! finished ones and continues an interrupted one from its last training state.

use super::checkpoint;
use super::config::AttenScribbleConfig;
use super::data::{self, NamedVolume, TrainSet};
use super::model::AttenUNet;
use super::train::{self, Job, Method, RunResult, Scores, spec_for};
use ferrolab_core::resources::Stopwatch;
use ferrolab_core::run::{Curve, Outcome, Report};
use ferrolab_core::{Checked, RunContext, SysResult, SystemError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The data of a run.
#[derive(Debug)]
pub struct Prepared {
    pub train: TrainSet,
    pub val: Vec<NamedVolume>,
    pub test: Option<Vec<NamedVolume>>,
    pub root: PathBuf,
    pub val_dir: PathBuf,
    pub test_dir: Option<PathBuf>,
}

/// The ACDC root: `data.dir`, else the data lookup.
pub fn data_root(cfg: &AttenScribbleConfig, data_dir: Option<&Path>) -> SysResult<PathBuf> {
    match &cfg.data.dir {
        Some(d) => Ok(PathBuf::from(d)),
        None => Ok(ferrolab_data::lookup::find_dataset(data_dir, "acdc")?),
    }
}

/// The seed stream of the synthetic set (`RunContext::seed_for`).
pub const SYNTHETIC_STREAM: &str = "data.synthetic";

/// Whether the run generates its data (`data.dataset = "synthetic"`).
pub fn is_synthetic(cfg: &AttenScribbleConfig) -> bool {
    cfg.data.dataset == "synthetic"
}

/// The synthetic set from its data seed (the run's [`SYNTHETIC_STREAM`]: another `--seed`,
/// other patients).
fn synthetic_prepare(cfg: &AttenScribbleConfig, seed: u64) -> SysResult<Prepared> {
    let d = &cfg.data;
    let shape = (d.synthetic_shape[0], d.synthetic_shape[1]);
    // The configuration's check has made sure there are train.batch_size slices at least.
    let train = data::synthetic_train(
        seed,
        d.size,
        d.synthetic_train_count(),
        d.synthetic_slices,
        shape,
    )?;
    let (val, val_dir) = match &d.val {
        Some(dir) => (
            data::load_volumes(Path::new(dir), d.val_volumes)?,
            PathBuf::from(dir),
        ),
        None => (
            data::synthetic_volumes(
                seed,
                data::SYNTHETIC_VAL_FIRST,
                d.synthetic_val_count(),
                d.synthetic_slices,
                shape,
            )?,
            PathBuf::from("synthetic:val"),
        ),
    };
    let (test_dir, test) = test_volumes(cfg)?;
    Ok(Prepared {
        train,
        val,
        test,
        root: PathBuf::from("synthetic"),
        val_dir,
        test_dir,
    })
}

/// The `data.test` folder and its volumes, when set.
type TestSet = (Option<PathBuf>, Option<Vec<NamedVolume>>);

fn test_volumes(cfg: &AttenScribbleConfig) -> SysResult<TestSet> {
    let dir = cfg.data.test.as_ref().map(PathBuf::from);
    let volumes = match &dir {
        Some(d) => Some(data::load_volumes(d, 0)?),
        None => None,
    };
    Ok((dir, volumes))
}

/// Loads training slices and validation/test volumes (data errors name the file: exit 2);
/// with `data.dataset = "synthetic"`, generates them from `seed`.
pub fn prepare(
    cfg: &AttenScribbleConfig,
    data_dir: Option<&Path>,
    seed: u64,
) -> SysResult<Prepared> {
    if is_synthetic(cfg) {
        return synthetic_prepare(cfg, seed);
    }
    let root = data_root(cfg, data_dir)?;
    let train = data::load_train(&root.join("train"), cfg.data.size, cfg.data.train_patients)?;
    if train.len() < cfg.train.batch_size {
        return Err(SystemError::usage(format!(
            "{}: {} training slices, fewer than train.batch_size = {}",
            root.join("train").display(),
            train.len(),
            cfg.train.batch_size
        )));
    }
    let val_dir = cfg
        .data
        .val
        .as_ref()
        .map_or_else(|| root.join("val"), PathBuf::from);
    let val = data::load_volumes(&val_dir, cfg.data.val_volumes)?;
    let (test_dir, test) = test_volumes(cfg)?;
    Ok(Prepared {
        train,
        val,
        test,
        root,
        val_dir,
        test_dir,
    })
}

/// Mean and population standard deviation of the finite values (NaN when there are none).
fn mean_std(v: &[f64]) -> (f64, f64) {
    let f: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if f.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = f.iter().sum::<f64>() / f.len() as f64;
    let var = f.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / f.len() as f64;
    (m, var.sqrt())
}

/// The report keys of one method: `<split>_dice`, `<split>_dice_rv|myo|lv`,
/// `<split>_hd95_px`, `<split>_hd95_px_rv|myo|lv`, each with `_std`, over seeds.
/// A key whose mean is not finite is left out and named in `left_out`.
fn keys(
    scores: &[&Scores],
    split: &str,
    out: &mut BTreeMap<String, f64>,
    left_out: &mut Vec<String>,
) {
    if scores.is_empty() {
        return;
    }
    let mut put = |name: String, vals: Vec<f64>| {
        let (m, s) = mean_std(&vals);
        if m.is_finite() {
            out.insert(name.clone(), m);
            out.insert(format!("{name}_std"), s);
        } else {
            // JSON has no NaN: the key is left out, and the report's notes say which.
            left_out.push(name);
        }
    };
    put(
        format!("{split}_dice"),
        scores.iter().map(|s| s.mean_dice()).collect(),
    );
    put(
        format!("{split}_hd95_px"),
        scores.iter().map(|s| s.mean_hd95()).collect(),
    );
    for (ci, cname) in ["rv", "myo", "lv"].iter().enumerate() {
        put(
            format!("{split}_dice_{cname}"),
            scores.iter().map(|s| s.dice[ci]).collect(),
        );
        put(
            format!("{split}_hd95_px_{cname}"),
            scores.iter().map(|s| s.hd95[ci]).collect(),
        );
    }
}

/// The protocol stated next to the figures, for the data the run used.
fn protocol(cfg: &AttenScribbleConfig, p: &Prepared) -> String {
    if !is_synthetic(cfg) {
        return PROTOCOL.to_string();
    }
    let first = data::SYNTHETIC_TRAIN_FIRST as usize;
    let val = if cfg.data.val.is_some() {
        format!("the volumes of {}", p.val_dir.display())
    } else {
        let v0 = data::SYNTHETIC_VAL_FIRST as usize;
        format!(
            "generated volumes of patients {v0}–{}",
            v0 + p.val.len() - 1
        )
    };
    format!(
        "protocol: synthetic short-axis cardiac volumes (ferrolab_data::acdc_synthetic, drawn from the run's seed), not ACDC: trained on the slices of generated patients {first}–{} (scribbles; dense labels only for `full`), checkpoint picked by mean 3D Dice on {val}; Dice and HD95 per 3D volume, HD95 in pixels of the generated slices; figures show the methods' relative behaviour on a stand-in, not ACDC's",
        first + p.train.patients - 1
    )
}

const PROTOCOL: &str = "protocol: trained on ACDC train/ slices (patients 21–100, scribbles; dense labels only for `full`), checkpoint picked by mean 3D Dice on val/ volumes (patients 11–20, half of the references' fold-1 validation set); patients 1–10 are held out as a test set (data.test); Dice and HD95 per 3D volume, HD95 in pixels of the stored slices (no voxel spacing in the files), so not comparable with the paper's mm";

/// Runs the experiment.
pub fn run(cfg: &Checked<AttenScribbleConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    run_with(cfg, ctx, None)
}

/// Runs the experiment; `max_iterations_now` stops the first unfinished unit after that many
/// iterations (what a kill does; tests check that `--resume` changes nothing).
pub fn run_with(
    cfg: &Checked<AttenScribbleConfig>,
    ctx: &mut RunContext,
    max_iterations_now: Option<usize>,
) -> SysResult<Outcome> {
    let clock = Stopwatch::start();
    let load_clock = Stopwatch::start();
    let prepared = prepare(cfg, ctx.data_dir(), ctx.seed_for(SYNTHETIC_STREAM))?;
    let load_seconds = load_clock.seconds();
    eprintln!(
        "attenscribble: {} training slices of {} patients at {}×{}, {} validation volumes{}",
        prepared.train.len(),
        prepared.train.patients,
        cfg.data.size,
        cfg.data.size,
        prepared.val.len(),
        prepared
            .test
            .as_ref()
            .map_or(String::new(), |t| format!(", {} test volumes", t.len()))
    );
    let methods: Vec<Method> = cfg
        .train
        .methods
        .iter()
        .filter_map(|m| Method::parse(m))
        .collect();
    let mut results: Vec<RunResult> = Vec::new();
    let run_path = ctx.run_dir().path().to_path_buf();
    for k in 0..cfg.train.seeds {
        // Every method of seed k starts from the same seed: same data order and augmentation.
        let seed = ctx.seed_for(&format!("run{k}"));
        for &method in &methods {
            let unit = format!("{}-seed{k}", method.name());
            let job = Job {
                cfg,
                train: &prepared.train,
                val: &prepared.val,
                test: prepared.test.as_deref(),
                method,
                seed_index: k,
                seed,
                state_dir: run_path.join("train-state").join(&unit),
                max_iterations_now,
            };
            let r: RunResult = ctx.unit(&unit, |ctx| {
                let (r, best) = train::train_one(&job)?;
                // metrics.jsonl: one line per validation point of the finished unit (a unit
                // continued from its training state still has its whole history), inside the
                // unit so that a resumed run does not log it twice.
                for e in &r.history {
                    let mut line = serde_json::to_value(e)
                        .map_err(|e| SystemError::runtime(format!("metrics line: {e}")))?;
                    line["method"] = r.method.clone().into();
                    line["seed_index"] = k.into();
                    ctx.log_metrics(&line)?;
                }
                let dir = run_path.join("checkpoints").join(&unit);
                checkpoint::save(
                    &dir,
                    &best,
                    &checkpoint::meta(spec_for(cfg, method), cfg.data.size, method.name()),
                )?;
                if k == 0 {
                    overlay(
                        &best,
                        &prepared,
                        cfg.data.size,
                        &run_path
                            .join("overlays")
                            .join(format!("{}.png", method.name())),
                    )?;
                }
                let _ = std::fs::remove_dir_all(&job.state_dir);
                Ok(r)
            })?;
            results.push(r);
        }
    }
    // `checkpoint/` (what `predict --checkpoint` is pointed at): AttenScribble's first seed, or
    // the first method run.
    if let Some(first) = methods.first() {
        let pick = if methods.contains(&Method::AttenScribble) {
            Method::AttenScribble
        } else {
            *first
        };
        let src = run_path
            .join("checkpoints")
            .join(format!("{}-seed0", pick.name()));
        let dst = run_path.join("checkpoint");
        std::fs::create_dir_all(&dst)
            .map_err(|e| SystemError::runtime(format!("{}: {e}", dst.display())))?;
        for f in ["model.safetensors", "meta.json"] {
            std::fs::copy(src.join(f), dst.join(f))
                .map_err(|e| SystemError::runtime(format!("{}: {e}", src.join(f).display())))?;
        }
    }
    Ok(report(
        cfg,
        &prepared,
        &methods,
        &results,
        ctx.seed(),
        clock.seconds(),
        load_seconds,
    ))
}

fn report(
    cfg: &AttenScribbleConfig,
    p: &Prepared,
    methods: &[Method],
    results: &[RunResult],
    seed: u64,
    total: f64,
    load: f64,
) -> Outcome {
    let dataset = if is_synthetic(cfg) {
        "synthetic"
    } else {
        "acdc"
    };
    let mut r = Report::new("attenscribble", dataset, seed);
    let mut per_method: BTreeMap<&str, BTreeMap<String, f64>> = BTreeMap::new();
    let mut curves = Vec::new();
    for &m in methods {
        let rs: Vec<&RunResult> = results.iter().filter(|x| x.method == m.name()).collect();
        let mut out = BTreeMap::new();
        let mut left_out = Vec::new();
        let val: Vec<&Scores> = rs.iter().map(|x| &x.val).collect();
        let test: Vec<&Scores> = rs.iter().filter_map(|x| x.test.as_ref()).collect();
        keys(&val, "val", &mut out, &mut left_out);
        keys(&test, "test", &mut out, &mut left_out);
        if !left_out.is_empty() {
            r.notes.push(format!(
                "{}: {} left out — not finite (a class no evaluated label holds, or an HD95 whose class was predicted in no volume on any seed; see details.hd95_skipped)",
                m.name(),
                left_out.join(", ")
            ));
        }
        let (step, _) = mean_std(&rs.iter().map(|x| x.step_seconds).collect::<Vec<_>>());
        out.insert("step_seconds".into(), step);
        let (tr, _) = mean_std(&rs.iter().map(|x| x.train_seconds).collect::<Vec<_>>());
        out.insert("train_seconds".into(), tr);
        out.insert("seeds".into(), rs.len() as f64);
        for x in &rs {
            curves.push(Curve {
                label: format!("{} seed {}", m.name(), x.seed_index),
                y_name: "val_dice".into(),
                points: x
                    .history
                    .iter()
                    .map(|h| (h.iteration as f64, h.val_dice))
                    .collect(),
            });
            curves.push(Curve {
                label: format!("{} seed {}", m.name(), x.seed_index),
                y_name: "train_loss".into(),
                points: x
                    .history
                    .iter()
                    .map(|h| (h.iteration as f64, h.train_loss))
                    .collect(),
            });
            // Whether the attention's affinity separates structures (1 = it does not): see
            // `train::affinity_by_label`. Only AttenScribble's records carry it.
            let contrast: Vec<(f64, f64)> = x
                .history
                .iter()
                .filter_map(|h| Some((h.iteration as f64, h.k_same_label? / h.k_diff_label?)))
                .filter(|(_, c)| c.is_finite())
                .collect();
            if !contrast.is_empty() {
                curves.push(Curve {
                    label: format!("{} seed {}", m.name(), x.seed_index),
                    y_name: "affinity_contrast_vs_iteration".into(),
                    points: contrast,
                });
            }
        }
        per_method.insert(m.name(), out);
    }
    for (name, out) in per_method {
        if name == "attenscribble" {
            r.metrics = out;
        } else {
            r.baselines.insert(name.to_string(), out);
        }
    }
    if let (Some(ours), Some(pce)) = (
        r.metrics.get("val_dice"),
        r.baselines.get("pce").and_then(|b| b.get("val_dice")),
    ) {
        r.metrics
            .insert("val_dice_gain_over_pce".into(), ours - pce);
    }
    // Paired by seed: every method of seed k trains on the same data order and augmentation,
    // so the per-seed difference removes the seed's share of the spread.
    let mut paired = serde_json::Map::new();
    for base in ["pce", "pce_gcrf", "full"] {
        let diffs: Vec<f64> = results
            .iter()
            .filter(|x| x.method == "attenscribble")
            .filter_map(|ours| {
                results
                    .iter()
                    .find(|b| b.method == base && b.seed_index == ours.seed_index)
                    .map(|b| ours.val.mean_dice() - b.val.mean_dice())
            })
            .collect();
        if diffs.is_empty() {
            continue;
        }
        let (m, sd) = mean_std(&diffs);
        if base != "full" && m.is_finite() {
            r.metrics
                .insert(format!("val_dice_paired_gain_over_{base}"), m);
            r.metrics
                .insert(format!("val_dice_paired_gain_over_{base}_std"), sd);
        }
        paired.insert(base.to_string(), serde_json::json!(diffs));
    }
    if let (Some(ours), Some(full)) = (
        r.metrics.get("val_dice"),
        r.baselines.get("full").and_then(|b| b.get("val_dice")),
    ) {
        r.metrics.insert("val_dice_gap_to_full".into(), full - ours);
    }
    r.timings.insert("total_seconds".into(), total);
    r.timings.insert("load_seconds".into(), load);
    r.timings.insert(
        "train_seconds".into(),
        results.iter().map(|x| x.train_seconds).sum(),
    );
    // Per method, summed over seeds: volumes whose HD95 was left out (class never predicted).
    let skipped_by = |pick: &dyn Fn(&RunResult) -> Option<usize>| -> BTreeMap<String, usize> {
        methods
            .iter()
            .map(|m| {
                let n = results
                    .iter()
                    .filter(|x| x.method == m.name())
                    .filter_map(pick)
                    .sum();
                (m.name().to_string(), n)
            })
            .collect()
    };
    let skipped = skipped_by(&|x| Some(x.val.hd95_skipped));
    let test_skipped = p
        .test
        .as_ref()
        .map(|_| skipped_by(&|x| x.test.as_ref().map(|t| t.hd95_skipped)));
    r.details = serde_json::json!({
        "protocol": protocol(cfg, p),
        "hd95_skipped": skipped,
        "test_hd95_skipped": test_skipped,
        "train_slices": p.train.len(),
        "train_patients": p.train.patients,
        "val_volumes": p.val.len(),
        "val_dir": p.val_dir.display().to_string(),
        "test_dir": p.test_dir.as_ref().map(|d| d.display().to_string()),
        "test_volumes": p.test.as_ref().map(Vec::len),
        "data_root": p.root.display().to_string(),
        "iterations": cfg.train.iterations,
        "size": cfg.data.size,
        "batch_size": cfg.train.batch_size,
        "runs": results,
        "paired_val_dice_gain": paired,
    });
    r.notes.push(protocol(cfg, p));
    r.notes.push(format!(
        "{} iterations of batch {} at {}×{} per method and seed ({} seeds), SGD lr {} poly {}, momentum {}, weight decay {}; gated CRF weight {} (radius {}, σ_xy {}, σ_rgb {}), attentive loss weight {} (radius {}, σ {}) from iteration {}",
        cfg.train.iterations, cfg.train.batch_size, cfg.data.size, cfg.data.size, cfg.train.seeds, cfg.train.lr, cfg.train.poly_power, cfg.train.momentum, cfg.train.weight_decay,
        cfg.loss.crf_weight, cfg.loss.crf_radius, cfg.loss.crf_sigma_xy, cfg.loss.crf_sigma_rgb, cfg.loss.attn_weight, cfg.loss.attn_radius, cfg.loss.attn_sigma, cfg.loss.attn_start
    ));
    Outcome {
        report: r,
        curves,
        paper: Vec::new(),
    }
}

/// Colour of a class in the overlays (background black).
const COLOURS: [[u8; 3]; 5] = [
    [0, 0, 0],
    [230, 60, 60],
    [60, 200, 60],
    [70, 110, 240],
    [0, 0, 0],
];

/// `image | scribble | prediction | label` of the middle slice of the first validation volume.
fn overlay(model: &AttenUNet, p: &Prepared, size: usize, path: &Path) -> SysResult<()> {
    let Some(nv) = p.val.first() else {
        return Ok(());
    };
    let v = &nv.volume;
    let k = v.d / 2;
    let n = v.h * v.w;
    let image = &v.image[k * n..(k + 1) * n];
    let pred = train::predict_volume(model, image, (1, v.h, v.w), size, 1);
    let panels: [&[u8]; 3] = [
        &v.scribble[k * n..(k + 1) * n],
        &pred,
        &v.label[k * n..(k + 1) * n],
    ];
    let w4 = 4 * v.w;
    let mut rgb = vec![0u8; v.h * w4 * 3];
    for y in 0..v.h {
        for x in 0..v.w {
            let g = image[y * v.w + x];
            let put = |rgb: &mut Vec<u8>, panel: usize, c: [u8; 3]| {
                let o = (y * w4 + panel * v.w + x) * 3;
                rgb[o..o + 3].copy_from_slice(&c);
            };
            put(&mut rgb, 0, [g, g, g]);
            for (pi, m) in panels.iter().enumerate() {
                let cls = usize::from(m[y * v.w + x]).min(4);
                let c = if cls == 0 && pi == 0 {
                    // A background scribble is drawn grey so it shows against black.
                    [128, 128, 128]
                } else if cls == 0 || cls == 4 {
                    [g / 3, g / 3, g / 3]
                } else {
                    COLOURS[cls]
                };
                put(&mut rgb, pi + 1, c);
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| SystemError::runtime(format!("{}: {e}", dir.display())))?;
    }
    let img = ferrolab_data::image::Image::new(w4, v.h, 3, rgb)
        .map_err(|e| SystemError::runtime(e.to_string()))?;
    ferrolab_data::image::write_png(path, &img).map_err(|e| SystemError::runtime(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(dice: [f64; 3], hd95: [f64; 3]) -> Scores {
        Scores {
            dice,
            hd95,
            hd95_skipped: hd95.iter().filter(|h| h.is_nan()).count(),
            volumes: 2,
        }
    }

    #[test]
    fn a_class_never_predicted_leaves_its_hd95_out_and_says_so() {
        // Myo never predicted on either seed: no HD95 for it at all. LV's on one seed only:
        // the mean is over the seeds that have one (as HD95 is over volumes).
        let a = scores([0.8, 0.0, 0.9], [3.0, f64::NAN, f64::NAN]);
        let b = scores([0.6, 0.0, 0.7], [5.0, f64::NAN, 4.0]);
        let (mut out, mut left_out) = (BTreeMap::new(), Vec::new());
        keys(&[&a, &b], "val", &mut out, &mut left_out);
        assert_eq!(left_out, vec!["val_hd95_px_myo".to_string()]);
        assert!(!out.contains_key("val_hd95_px_myo") && !out.contains_key("val_hd95_px_myo_std"));
        assert!((out["val_hd95_px_lv"] - 4.0).abs() < 1e-12);
        assert!((out["val_dice_rv"] - 0.7).abs() < 1e-12);
        assert!((out["val_dice_rv_std"] - 0.1).abs() < 1e-12);
        assert!((out["val_dice"] - 0.5).abs() < 1e-12);
        // A seed's mean HD95 is over its finite classes: (3 + 4.5) / 2.
        assert!((out["val_hd95_px"] - 3.75).abs() < 1e-12);
        assert_eq!(out.len(), 14);
        let (mut out, mut left_out) = (BTreeMap::new(), Vec::new());
        keys(&[], "test", &mut out, &mut left_out);
        assert!(out.is_empty() && left_out.is_empty());
    }
}
