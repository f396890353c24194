//! The comparison: every method trained on the seen water types with the same seeds,
//! iterations, batches and augmentation, then evaluated (COCO mAP@0.5 and mAP@[.5:.95] by the
//! foundation's pycocotools-exact evaluator) on held-out images of the seen types and of the
//! unseen ones. Each (method, seed) is one resumable unit of the run folder.

use super::config::AdodConfig;
use super::model::{AdodNet, AdodNetConfig, DomainKind, Outputs, alpha};
use super::render;
use crate::metrics::coco::{self, Category, CocoGt, GtAnnotation};
use crate::models::yolo::{Detection, YoloConfig, YoloTarget, YoloTiny};
use burn::module::Module;
use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use ferrolab_core::metrics::mean_std;
use ferrolab_core::nn::{float_tensor, to_vec_f32};
use ferrolab_core::run::{Curve, Outcome, Report};
use ferrolab_core::{Checked, RunContext, SysResult, SystemError};
use ferrolab_data::underwater::{CATEGORIES, SceneConfig, WaterType, sample};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// Rendered, labelled images of one or more water types.
#[derive(Debug, Clone)]
pub struct DetSet {
    pub size: usize,
    /// `[N, 3, S, S]` in [0, 1], row-major.
    pub pixels: Vec<f32>,
    /// The raw RGB bytes (for drawing examples).
    pub rgb: Vec<Vec<u8>>,
    pub targets: Vec<Vec<YoloTarget>>,
    pub water: Vec<WaterType>,
}

impl DetSet {
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    fn image(&self, i: usize) -> &[f32] {
        let n = 3 * self.size * self.size;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// HWC bytes → CHW floats in [0, 1].
pub fn to_chw(rgb: &[u8], size: usize) -> Vec<f32> {
    let plane = size * size;
    let mut out = vec![0f32; 3 * plane];
    for (p, px) in rgb.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + p] = f32::from(px[c]) / 255.0;
        }
    }
    out
}

/// Renders `per_type` images of each type. Training scenes differ per type; test scenes are
/// shared by all types (`shared_scenes`), so per-type test differences come from the water.
pub fn build_set(
    types: &[WaterType],
    per_type: usize,
    scene: &SceneConfig,
    seed: u64,
    shared_scenes: bool,
) -> SysResult<DetSet> {
    let jobs: Vec<(WaterType, u64)> = types
        .iter()
        .enumerate()
        .flat_map(|(ti, &t)| {
            (0..per_type).map(move |k| {
                let offset = if shared_scenes { 0 } else { ti * per_type };
                (t, seed.wrapping_add((offset + k) as u64))
            })
        })
        .collect();
    let samples: Vec<_> = jobs
        .par_iter()
        .map(|&(t, s)| sample(scene, t, s))
        .collect::<Result<_, _>>()
        .map_err(|e| SystemError::usage(format!("adod: rendering: {e}")))?;
    let size = scene.width;
    let mut set = DetSet {
        size,
        pixels: Vec::with_capacity(samples.len() * 3 * size * size),
        rgb: Vec::with_capacity(samples.len()),
        targets: Vec::with_capacity(samples.len()),
        water: Vec::with_capacity(samples.len()),
    };
    for s in samples {
        set.pixels.extend(to_chw(&s.image.rgb, size));
        set.targets.push(
            s.image
                .boxes
                .iter()
                .map(|b| YoloTarget {
                    class: b.category,
                    x1: b.bbox[0],
                    y1: b.bbox[1],
                    x2: b.bbox[0] + b.bbox[2],
                    y2: b.bbox[1] + b.bbox[3],
                })
                .collect(),
        );
        set.rgb.push(s.image.rgb);
        set.water.push(s.water_type);
    }
    Ok(set)
}

/// The network each method trains.
pub fn net_config(cfg: &AdodConfig, method: &str) -> AdodNetConfig {
    let s = cfg.data.image_size;
    let yolo = YoloConfig {
        widths: cfg.model.widths.clone(),
        ..YoloConfig::new(s, 3, CATEGORIES.len())
    };
    let (attention, domain) = match method {
        "yolo_attention" => (true, None),
        "yolo_domain" => (false, Some(DomainKind::Plain)),
        "dg_yolo" => (false, Some(DomainKind::DgYolo)),
        "adod" => (true, Some(DomainKind::Attention)),
        _ => (false, None),
    };
    AdodNetConfig {
        yolo,
        attention,
        domain,
        domains: cfg.data.seen.len(),
    }
}

/// A batch `[B, 3, S, S]` with horizontal flips where `flip[b]`, and its targets.
fn batch(
    set: &DetSet,
    idx: &[usize],
    flip: &[bool],
    device: &Device,
) -> (Tensor<4>, Vec<Vec<YoloTarget>>) {
    let s = set.size;
    let mut x = Vec::with_capacity(idx.len() * 3 * s * s);
    let mut targets = Vec::with_capacity(idx.len());
    for (&i, &f) in idx.iter().zip(flip) {
        let img = set.image(i);
        if f {
            for row in img.chunks_exact(s) {
                x.extend(row.iter().rev());
            }
            targets.push(
                set.targets[i]
                    .iter()
                    .map(|t| YoloTarget {
                        x1: s as f32 - t.x2,
                        x2: s as f32 - t.x1,
                        ..*t
                    })
                    .collect(),
            );
        } else {
            x.extend_from_slice(img);
            targets.push(set.targets[i].clone());
        }
    }
    (float_tensor(x, [idx.len(), 3, s, s], device), targets)
}

/// IRMv1's penalty (Arjovsky et al. 2019) as DG-YOLO applies it: per domain e, the squared
/// derivative of the detection loss R_e in a dummy scale w on the classifier logits
/// (objectness and classes; box regression is not a classifier output and is left unscaled)
/// at w = 1. burn has no double backward, so the derivative is a central difference
/// `(R_e(1+ε) − R_e(1−ε)) / 2ε` (ε = 0.01), which stays differentiable in the weights.
pub fn irm_penalty(
    ops: &YoloTiny,
    out: &Outputs,
    targets: &[Vec<YoloTarget>],
    domains: &[usize],
    device: &Device,
) -> Tensor<1> {
    const EPS: f32 = 0.01;
    let ch = out.p32.dims()[1];
    let per_anchor = ch / 3;
    let scale = |w: f32| {
        let v: Vec<f32> = (0..ch)
            .map(|c| if c % per_anchor >= 4 { w } else { 1.0 })
            .collect();
        float_tensor(v, [1, ch, 1, 1], device)
    };
    let (up_s, down_s) = (scale(1.0 + EPS), scale(1.0 - EPS));
    let mut total = Tensor::<1>::zeros([1], device);
    let mut seen: Vec<usize> = domains.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for d in seen {
        let rows: Vec<usize> = (0..domains.len()).filter(|&i| domains[i] == d).collect();
        let ids: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        let sel = Tensor::<1, Int>::from_data(TensorData::new(ids, [rows.len()]), device);
        let p32 = out.p32.clone().select(0, sel.clone());
        let p16 = out.p16.clone().select(0, sel);
        let t: Vec<Vec<YoloTarget>> = rows.iter().map(|&i| targets[i].clone()).collect();
        let up = ops.loss((p32.clone() * up_s.clone(), p16.clone() * up_s.clone()), &t);
        let down = ops.loss((p32 * down_s.clone(), p16 * down_s.clone()), &t);
        let g = (up - down).div_scalar(2.0 * f64::from(EPS));
        total = total + g.square();
    }
    total
}

/// The training objective of one step, as `train` minimises it: YOLO's loss, plus (with a
/// domain classifier) `domain.weight` × the domain cross-entropy through gradient reversal
/// with coefficient `a · domain.grl`, plus (DG-YOLO) `domain.irm_weight · a` × the IRM
/// penalty. `x: [B, 3, S, S]`, `domains[b]` the domain index of image b, `a` = α(p). Public
/// so that the speed benchmark (`examples/adod_step_bench.rs`) times exactly this.
#[allow(clippy::too_many_arguments)]
pub fn step_loss(
    model: &AdodNet,
    cfg: &AdodConfig,
    method: &str,
    x: Tensor<4>,
    targets: &[Vec<YoloTarget>],
    domains: &[usize],
    a: f64,
    ce: &CrossEntropyLoss,
    device: &Device,
) -> Tensor<1> {
    let out = model.forward(x, a * cfg.domain.grl, model.has_domain_head());
    let mut loss = model
        .yolo()
        .loss((out.p32.clone(), out.p16.clone()), targets);
    if let Some(logits) = &out.domain {
        let ids: Vec<i64> = domains.iter().map(|&d| d as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(ids, [domains.len()]), device);
        loss = loss + ce.forward(logits.clone(), y).mul_scalar(cfg.domain.weight);
    }
    if method == "dg_yolo" && cfg.domain.irm_weight > 0.0 {
        let pen = irm_penalty(model.yolo(), &out, targets, domains, device);
        loss = loss + pen.mul_scalar(cfg.domain.irm_weight * a);
    }
    loss
}

/// One method, one seed: what is kept of it (the unit saved for `--resume`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitResult {
    /// `map50_<type>`, `map_<type>`, `seen_map50`, `seen_map`, `unseen_map50`, `unseen_map`.
    pub metrics: BTreeMap<String, f64>,
    /// Precision at 101 recall points, IoU 0.5, mean over categories: seen, unseen.
    pub pr_seen: Vec<f64>,
    pub pr_unseen: Vec<f64>,
    pub train_seconds: f64,
    pub infer_ms_per_image: f64,
    /// Training loss every 50 steps.
    pub loss_curve: Vec<(f64, f64)>,
}

/// Trains one method with one seed; returns the trained network (inference device).
#[allow(clippy::too_many_arguments)]
pub fn train(
    cfg: &AdodConfig,
    method: &str,
    seed: u64,
    set: &DetSet,
    domain_of: &BTreeMap<WaterType, usize>,
    mut log: impl FnMut(usize, f64, f64) -> SysResult<()>,
) -> SysResult<(AdodNet, Vec<(f64, f64)>)> {
    let device = ferrolab_core::backend::train_device();
    ferrolab_core::backend::seed_backend(seed);
    let ncfg = net_config(cfg, method);
    let mut net = Some(AdodNet::new(&ncfg, &device).map_err(SystemError::usage)?);
    let mut optim = AdamConfig::new().init();
    let ce = CrossEntropyLossConfig::new().init(&device);
    // Batch order and flips from a stream of their own: the same for every method at a seed.
    let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "adod-batches"));
    let iters = cfg.train.iterations;
    let b = cfg.train.batch_size.min(set.len());
    let mut curve = Vec::new();
    let mut running = 0.0;
    for it in 0..iters {
        let p = it as f64 / iters as f64;
        let a = alpha(p);
        let lr = cfg.train.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * p).cos()));
        let idx: Vec<usize> = (0..b).map(|_| rng.random_range(0..set.len())).collect();
        let flip: Vec<bool> = (0..b).map(|_| rng.random::<bool>()).collect();
        let (x, targets) = batch(set, &idx, &flip, &device);
        let Some(model) = net.take() else {
            return Err(SystemError::runtime("adod: model lost"));
        };
        let domains: Vec<usize> = idx
            .iter()
            .map(|&i| domain_of.get(&set.water[i]).copied().unwrap_or(0))
            .collect();
        // The step runs on a pool worker (`in_pool`): its few hundred parallel loops then
        // start without waking the caller each time.
        let (value, model) = ferrolab_core::backend::in_pool(|| {
            let loss = step_loss(&model, cfg, method, x, &targets, &domains, a, &ce, &device);
            let value = f64::from(to_vec_f32(loss.clone().detach())[0]);
            if !value.is_finite() {
                return (value, None);
            }
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (value, Some(optim.step(lr, model, grads)))
        });
        let Some(model) = model else {
            return Err(SystemError::runtime(format!(
                "adod: {method} seed {seed}: loss is {value} at step {it} (lower train.lr)"
            )));
        };
        running += value;
        net = Some(model);
        if (it + 1) % 50 == 0 || it + 1 == iters {
            let n = if (it + 1) % 50 == 0 {
                50
            } else {
                (it + 1) % 50
            };
            let mean = running / n as f64;
            curve.push(((it + 1) as f64, mean));
            log(it + 1, mean, a)?;
            running = 0.0;
        }
    }
    let Some(model) = net else {
        return Err(SystemError::runtime("adod: model lost"));
    };
    Ok((model.valid(), curve))
}

/// Detections of every image (inference device), at most 100 per image.
/// Runs on a pool worker, as training does (see [`ferrolab_core::backend::in_pool`]).
pub fn detect(net: &AdodNet, set: &DetSet, cfg: &AdodConfig) -> Vec<Vec<Detection>> {
    ferrolab_core::backend::in_pool(|| {
        let device = ferrolab_core::backend::device();
        let mut all = Vec::with_capacity(set.len());
        let idx: Vec<usize> = (0..set.len()).collect();
        for chunk in idx.chunks(cfg.eval.batch) {
            let flip = vec![false; chunk.len()];
            let (x, _) = batch(set, chunk, &flip, &device);
            let out = net.forward(x, 0.0, false);
            for mut d in net.yolo().detect(
                (out.p32, out.p16),
                cfg.eval.conf as f32,
                cfg.eval.nms_iou as f32,
            ) {
                d.truncate(100);
                all.push(d);
            }
        }
        all
    })
}

/// COCO evaluation of the images `subset` of `set`.
pub fn evaluate(set: &DetSet, dets: &[Vec<Detection>], subset: &[usize]) -> coco::CocoEval {
    let mut gt = CocoGt {
        images: subset.iter().map(|&i| i as i64 + 1).collect(),
        categories: CATEGORIES
            .iter()
            .enumerate()
            .map(|(k, n)| Category {
                id: k as i64 + 1,
                name: (*n).to_string(),
            })
            .collect(),
        annotations: Vec::new(),
    };
    let mut dt = Vec::new();
    for &i in subset {
        for t in &set.targets[i] {
            let id = gt.annotations.len() as i64 + 1;
            gt.annotations.push(GtAnnotation::from_box(
                id,
                i as i64 + 1,
                t.class as i64 + 1,
                [
                    f64::from(t.x1),
                    f64::from(t.y1),
                    f64::from(t.x2 - t.x1),
                    f64::from(t.y2 - t.y1),
                ],
            ));
        }
        for d in &dets[i] {
            dt.push(coco::Detection {
                image_id: i as i64 + 1,
                category_id: d.class as i64 + 1,
                bbox: [
                    f64::from(d.x1),
                    f64::from(d.y1),
                    f64::from(d.x2 - d.x1),
                    f64::from(d.y2 - d.y1),
                ],
                score: f64::from(d.score),
            });
        }
    }
    coco::evaluate(&gt, &dt)
}

/// Precision at the 101 recall points at IoU 0.5 (area all, 100 detections), averaged over
/// the categories that have ground truth.
fn pr_curve(e: &coco::CocoEval) -> Vec<f64> {
    (0..101)
        .map(|r| {
            let v: Vec<f64> = (0..e.cat_ids.len())
                .map(|k| e.precision_at(0, r, k, 0, 2))
                .filter(|p| *p >= 0.0)
                .collect();
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        })
        .collect()
}

/// Evaluates a trained network on the test set: per water type, seen and unseen; or, for a
/// set without domains (`domains` false), `map50` and `map` over all its images.
pub fn score(
    net: &AdodNet,
    test: &DetSet,
    cfg: &AdodConfig,
    domains: bool,
) -> (UnitResult, Vec<Vec<Detection>>) {
    let t0 = Instant::now();
    let dets = detect(net, test, cfg);
    let infer_ms = t0.elapsed().as_secs_f64() * 1e3 / test.len().max(1) as f64;
    if !domains {
        let all: Vec<usize> = (0..test.len()).collect();
        let e = evaluate(test, &dets, &all);
        let metrics = BTreeMap::from([
            ("map50".to_string(), e.map50().max(0.0)),
            ("map".to_string(), e.stats[0].max(0.0)),
        ]);
        let result = UnitResult {
            metrics,
            pr_seen: pr_curve(&e),
            pr_unseen: Vec::new(),
            train_seconds: 0.0,
            infer_ms_per_image: infer_ms,
            loss_curve: Vec::new(),
        };
        return (result, dets);
    }
    let seen = cfg.seen();
    let unseen = cfg.unseen();
    let mut metrics = BTreeMap::new();
    let pick = |types: &[WaterType]| -> Vec<usize> {
        (0..test.len())
            .filter(|&i| types.contains(&test.water[i]))
            .collect()
    };
    for t in seen.iter().chain(&unseen) {
        let e = evaluate(test, &dets, &pick(&[*t]));
        metrics.insert(format!("map50_{}", t.key()), e.map50().max(0.0));
        metrics.insert(format!("map_{}", t.key()), e.stats[0].max(0.0));
    }
    let es = evaluate(test, &dets, &pick(&seen));
    let eu = evaluate(test, &dets, &pick(&unseen));
    metrics.insert("seen_map50".into(), es.map50().max(0.0));
    metrics.insert("seen_map".into(), es.stats[0].max(0.0));
    metrics.insert("unseen_map50".into(), eu.map50().max(0.0));
    metrics.insert("unseen_map".into(), eu.stats[0].max(0.0));
    (
        UnitResult {
            metrics,
            pr_seen: pr_curve(&es),
            pr_unseen: pr_curve(&eu),
            train_seconds: 0.0,
            infer_ms_per_image: infer_ms,
            loss_curve: Vec::new(),
        },
        dets,
    )
}

/// The whole comparison.
pub fn run(cfg: &Checked<AdodConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    let _rng_guard = ferrolab_core::backend::exclusive_rng();
    let t_all = Instant::now();
    let t0 = Instant::now();
    let (cfg, train_set, test_set, domains) = match &cfg.data.coco {
        Some(file) => {
            let split = super::coco_input::load(
                std::path::Path::new(file),
                cfg.data.image_size,
                &cfg.data.unseen,
            )?;
            // The file's domains replace the configured seen/unseen types everywhere below.
            let mut c: AdodConfig = (**cfg).clone();
            c.data.seen = split.seen.iter().map(|t| t.name().to_string()).collect();
            c.data.unseen = split.unseen.iter().map(|t| t.name().to_string()).collect();
            (c, split.train, split.test, split.domains)
        }
        None => {
            let cfg: &AdodConfig = cfg;
            let scene = SceneConfig {
                width: cfg.data.image_size,
                height: cfg.data.image_size,
                max_objects: cfg.data.max_objects,
                ..SceneConfig::default()
            };
            let data_seed = ctx.seed_for("adod-data");
            let mut all_types = cfg.seen();
            all_types.extend(cfg.unseen());
            let train = build_set(
                &cfg.seen(),
                cfg.data.train_per_type,
                &scene,
                data_seed,
                false,
            )?;
            let test = build_set(
                &all_types,
                cfg.data.test_per_type,
                &scene,
                data_seed ^ 0x7E57_0000_0000,
                true,
            )?;
            (cfg.clone(), train, test, true)
        }
    };
    let cfg = &cfg;
    let seen = cfg.seen();
    let unseen = cfg.unseen();
    let mut all_types = seen.clone();
    all_types.extend(&unseen);
    if !domains {
        all_types.push(super::coco_input::NO_DOMAIN);
    }
    let render_seconds = t0.elapsed().as_secs_f64();
    let domain_of: BTreeMap<WaterType, usize> =
        seen.iter().enumerate().map(|(i, &t)| (t, i)).collect();
    // Without domains a domain classifier has nothing to learn: ADOD is then its residual-
    // attention detector (the yolo_attention network, trained once, under ADOD's name), and
    // the methods defined by their domain classifier (yolo_domain, dg_yolo) are not run.
    let methods: Vec<String> = super::config::METHODS
        .iter()
        .filter(|m| cfg.train.methods.iter().any(|x| x == *m))
        .filter(|m| domains || matches!(**m, "yolo" | "adod"))
        .map(|m| (*m).to_string())
        .collect();
    let arch_of = |method: &str| -> String {
        if !domains && method == "adod" {
            "yolo_attention".to_string()
        } else {
            method.to_string()
        }
    };
    let mut results: BTreeMap<String, Vec<UnitResult>> = BTreeMap::new();
    for s in 0..cfg.train.seeds {
        for method in &methods {
            let seed = ctx.seed().wrapping_add(s as u64);
            let unit = format!("{method}-seed{s}");
            let r: UnitResult = ctx.unit(&unit, |ctx| {
                let t = Instant::now();
                let m = method.clone();
                let arch = arch_of(method);
                let (net, curve) = train(cfg, &arch, seed, &train_set, &domain_of, |it, loss, a| {
                    ctx.log_metrics(&serde_json::json!({
                        "method": m, "seed": s, "iteration": it, "loss": loss, "alpha": a
                    }))
                })?;
                let train_seconds = t.elapsed().as_secs_f64();
                let (mut r, dets) = score(&net, &test_set, cfg, domains);
                r.train_seconds = train_seconds;
                r.loss_curve = curve;
                let got = |k: &str| r.metrics.get(k).copied().unwrap_or(f64::NAN);
                if domains {
                    eprintln!(
                        "adod: {method} seed {s}: seen mAP50 {:.3}, unseen mAP50 {:.3} ({train_seconds:.0} s)",
                        got("seen_map50"),
                        got("unseen_map50")
                    );
                } else {
                    eprintln!(
                        "adod: {method} seed {s}: mAP50 {:.3}, mAP {:.3} ({train_seconds:.0} s)",
                        got("map50"),
                        got("map")
                    );
                }
                if s == 0 {
                    let path = ctx.run_dir().join(&format!("examples_{method}.png"));
                    render::example_grid(&test_set, &dets, &all_types, 4, &path)?;
                    if method == "adod" {
                        super::checkpoint::save(
                            &ctx.run_dir().join("checkpoint"),
                            &net,
                            &net_config(cfg, &arch),
                        )?;
                    }
                }
                ctx.log_metrics(&serde_json::json!({
                    "method": method, "seed": s, "metrics": r.metrics,
                    "train_seconds": train_seconds
                }))?;
                Ok(r)
            })?;
            results.entry(method.clone()).or_default().push(r);
        }
    }
    let pr: Vec<(String, Vec<f64>, Vec<f64>)> = methods
        .iter()
        .map(|m| {
            let rs = &results[m];
            // 101 points each, or none (the unseen curve of a set without domains).
            let avg = |f: fn(&UnitResult) -> &Vec<f64>| -> Vec<f64> {
                (0..f(&rs[0]).len())
                    .map(|i| rs.iter().map(|r| f(r)[i]).sum::<f64>() / rs.len() as f64)
                    .collect()
            };
            (m.clone(), avg(|r| &r.pr_seen), avg(|r| &r.pr_unseen))
        })
        .collect();
    render::pr_plot(&pr, &ctx.run_dir().join("pr_curves.png"))?;
    let dataset = if cfg.data.coco.is_some() {
        "coco"
    } else {
        "underwater-synthetic"
    };
    let mut report = Report::new("adod", dataset, ctx.seed());
    let mut curves = Vec::new();
    for m in &methods {
        let rs = &results[m];
        let mut out = BTreeMap::new();
        let keys: Vec<String> = rs[0].metrics.keys().cloned().collect();
        for k in keys {
            let v: Vec<f64> = rs
                .iter()
                .filter_map(|r| r.metrics.get(&k).copied())
                .collect();
            let (mean, std) = mean_std(&v);
            out.insert(k.clone(), mean);
            out.insert(format!("{k}_std"), std);
        }
        let (ts, _) = mean_std(&rs.iter().map(|r| r.train_seconds).collect::<Vec<_>>());
        let (inf, _) = mean_std(&rs.iter().map(|r| r.infer_ms_per_image).collect::<Vec<_>>());
        report.timings.insert(format!("{m}_train_seconds"), ts);
        out.insert("infer_ms_per_image".into(), inf);
        out.insert("train_seconds".into(), ts);
        if m == "adod" {
            report.metrics = out;
        } else {
            report.baselines.insert(m.clone(), out);
        }
        curves.push(Curve {
            label: format!("{m} (seed 0)"),
            y_name: "training loss".into(),
            points: rs[0].loss_curve.clone(),
        });
    }
    report
        .timings
        .insert("render_seconds".into(), render_seconds);
    report
        .timings
        .insert("total_seconds".into(), t_all.elapsed().as_secs_f64());
    report.details = serde_json::json!({
        "seen": cfg.data.seen, "unseen": cfg.data.unseen, "domains": domains,
        "train_images": train_set.len(), "test_images": test_set.len(),
        "input_px": cfg.data.image_size,
        "pr_curves": pr.iter().map(|(m, s, u)| serde_json::json!({"method": m, "seen": s, "unseen": u})).collect::<Vec<_>>(),
        "pr_png_colours": render::PR_COLOURS_DOC,
    });
    if !domains {
        report.notes.push(
            "mAP-only mode: the COCO file has no images[].domain, so there are no seen/unseen water types (data.unseen is ignored); metrics.map50/map are over every fifth image by id; ADOD without domains is its residual-attention detector (its domain classifier has nothing to learn), yolo_domain and dg_yolo are not run".into(),
        );
    }
    report.notes.push(match &cfg.data.coco {
        Some(f) => format!(
            "data: {f} (COCO; domains from images[].domain; every fifth seen image by id is a test image)"
        ),
        None => "data: the physically based synthetic stand-in (ferrolab_data::underwater), not URPC; figures are on it".into(),
    });
    Ok(Outcome {
        report,
        curves,
        paper: Vec::new(),
    })
}
