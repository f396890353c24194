//! The in-process experiment `ferrolab adaevo` runs: per seed, pre-train the teacher (all
//! conditions) and the factory mobile model (clean conditions; pruned + int8), draw every
//! end's drifting stream and evaluation frames once, then simulate each method — AdaEvo, no
//! evolution, naive evolution and the four ablations — on the same streams with a simulated
//! clock (1 s per frame; task durations from counted FLOPs ÷ edge throughput). Accuracy is
//! measured every `eval_every_s` on fresh frames under that moment's conditions (ground truth
//! is used only here); QoE is the share of an end's evaluations at or above 90% / 80% of the
//! factory model's clean accuracy.

use crate::config::AdaEvoConfig;
use crate::edge::{EdgeParams, EdgeServer, SchedulerKind};
use crate::estimator::{mean, pearson};
use crate::mobile::{FrameResult, MobileEnd, MobileParams, SamplingMode, TriggerMode};
use crate::model::{Mlp, TrainOpts};
use crate::protocol::{ModelBlob, TaskRequest, prune};
use crate::sim;
use crate::stream::{self, BaseImages, Condition, Drift, Schedule, StreamFrame};
use crate::svg;
use crate::teacher::Teacher;
use crate::trigger::RodParams;
use ferrolab_core::run::{Curve, Report};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, SystemError};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

/// Reads the base images `cfg` asks for: (pre-training set, stream pool). The pre-training
/// set holds the factory's `data.pretrain_images` first, then, where `edge.teacher_images` asks
/// for more, the teacher's further images ([`teacher_images`]).
pub fn load_base(
    cfg: &AdaEvoConfig,
    data_dir: Option<&Path>,
    seed: u64,
) -> SysResult<(BaseImages, BaseImages)> {
    if cfg.data.dataset == "synthetic" {
        let all = BaseImages::synthetic(cfg.data.synthetic_images, seed);
        let n = cfg.data.pretrain_images * stream::SIDE * stream::SIDE;
        let mut pixels = all.pixels[..n].to_vec();
        let mut labels = all.labels[..cfg.data.pretrain_images].to_vec();
        let extra = cfg
            .edge
            .teacher_images
            .saturating_sub(cfg.data.pretrain_images);
        if extra > 0 {
            // Fresh shapes from another seed: the teacher's extra images never come from the
            // stream pool.
            let more = BaseImages::synthetic(extra, seed ^ 0x7EAC_4E85);
            pixels.extend_from_slice(&more.pixels);
            labels.extend_from_slice(&more.labels);
        }
        let pre = BaseImages::new(pixels, labels);
        let rest = BaseImages::new(
            all.pixels[n..].to_vec(),
            all.labels[cfg.data.pretrain_images..].to_vec(),
        );
        return match (pre, rest) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (Err(e), _) | (_, Err(e)) => Err(SystemError::usage(format!(
                "data.synthetic_images = {}: {e}",
                cfg.data.synthetic_images
            ))),
        };
    }
    let dir = match &cfg.data.dir {
        Some(d) => std::path::PathBuf::from(d),
        None => ferrolab_data::lookup::find_dataset(data_dir, "fashion-mnist")?,
    };
    let (train, test) = ferrolab_vision::data::load_fashion_mnist(&dir)?;
    if train.height != stream::SIDE || train.width != stream::SIDE {
        return Err(SystemError::usage(format!(
            "{}: images are {}×{}, AdaEvo's streams need 28×28",
            dir.display(),
            train.height,
            train.width
        )));
    }
    let k = cfg
        .data
        .pretrain_images
        .max(cfg.edge.teacher_images)
        .min(train.len());
    let pre = BaseImages::new(
        train.pixels[..k * stream::SIDE * stream::SIDE].to_vec(),
        train.labels[..k].to_vec(),
    )
    .map_err(|e| SystemError::usage(format!("{}: {e}", dir.display())))?;
    let pool = BaseImages::new(test.pixels, test.labels)
        .map_err(|e| SystemError::usage(format!("{}: {e}", dir.display())))?;
    Ok((pre, pool))
}

/// One evaluation's frames: model inputs and their labels.
pub type EvalSet = (Vec<Vec<f32>>, Vec<u8>);

/// Everything one seed's methods share.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The teacher (edge).
    pub teacher: Teacher,
    /// The factory mobile model before int8 (pruned, its mask kept): the edge's copy.
    pub dense: Mlp,
    /// The factory compressed mobile model.
    pub mobile: Mlp,
    /// The factory model's accuracy on clean frames.
    pub clean_accuracy: f64,
    /// The teacher's accuracy on clean frames.
    pub teacher_accuracy: f64,
    /// The factory model's ATC threshold on the clean frames (see
    /// [`crate::estimator::atc_threshold`]).
    pub atc_threshold: f64,
    /// Each end's drift schedule.
    pub schedules: Vec<Schedule>,
    /// Each end's frames, `stream.fps` per second in time order (see [`second`]).
    pub frames: Vec<Vec<StreamFrame>>,
    /// Each end's evaluation sets per tick: inputs and labels.
    pub eval: Vec<Vec<EvalSet>>,
    /// Clean original training samples (the edge's anchor set).
    pub anchor: Vec<(Vec<f32>, u8)>,
    /// Seconds spent preparing.
    pub seconds: f64,
}

fn random_condition(rng: &mut StdRng) -> Condition {
    let names = stream::CONDITIONS;
    let a = names[rng.random_range(0..names.len())];
    let mut c = Condition::named(a, rng.random_range(0.0f32..1.4)).unwrap_or_default();
    if rng.random::<f32>() < 0.3 {
        let b = names[rng.random_range(0..names.len())];
        let d = Condition::named(b, rng.random_range(0.0f32..1.0)).unwrap_or_default();
        c = c.lerp(&d, 0.5);
    }
    c
}

/// How many of `pre`'s images the teacher learns from: `edge.teacher_images`, or the
/// factory's pre-training images when that is 0.
pub fn teacher_images(cfg: &AdaEvoConfig, pre: &BaseImages) -> usize {
    let n = if cfg.edge.teacher_images == 0 {
        cfg.data.pretrain_images
    } else {
        cfg.edge.teacher_images
    };
    n.min(pre.len())
}

/// Trains the edge's teacher of one seed: `edge.teacher_renders` renders of every
/// pre-training image under random conditions (any of the named ones at strength 0–1.4, a
/// third of them blended with a second; two renders left it barely better than the mobile
/// model under rotation), `edge.teacher_epochs` epochs (0: `data.pretrain_epochs`).
pub fn train_teacher(cfg: &AdaEvoConfig, pre: &BaseImages, seed: u64) -> Teacher {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xADA);
    let e = &cfg.edge;
    let mut tx = Vec::new();
    let mut ty = Vec::new();
    for i in 0..teacher_images(cfg, pre) {
        for _ in 0..e.teacher_renders {
            let c = random_condition(&mut rng);
            tx.push(stream::to_input(&stream::render(
                pre.image(i),
                &c,
                &mut rng,
            )));
            ty.push(pre.labels[i]);
        }
    }
    let epochs = if e.teacher_epochs == 0 {
        cfg.data.pretrain_epochs
    } else {
        e.teacher_epochs
    };
    let mut teacher = Teacher::new(cfg.new_teacher(seed ^ 1), e.teacher_standardise);
    teacher.train(
        &tx,
        &ty,
        &TrainOpts {
            epochs,
            lr: 0.03,
            momentum: 0.9,
            batch: 32,
            seed: seed ^ 2,
        },
    );
    teacher
}

/// The per-end drift schedules of `drifts` (targets permuted, times jittered, strength
/// jittered by seed), for either task.
pub fn schedules(cfg: &AdaEvoConfig, drifts: &[Drift], seed: u64) -> Vec<Schedule> {
    (0..cfg.stream.ends)
        .map(|k| {
            let mut r = StdRng::seed_from_u64(seed ^ 0x5C4E_D000 ^ k as u64);
            let offset = if cfg.stream.jitter_s > 0.0 {
                r.random_range(0.0..=cfg.stream.jitter_s).round()
            } else {
                0.0
            };
            let mut targets: Vec<String> = drifts.iter().map(|d| d.target.clone()).collect();
            if cfg.stream.shuffle_targets {
                let mut idx: Vec<usize> = (0..targets.len()).collect();
                crate::model::shuffle(&mut idx, &mut r);
                targets = idx.iter().map(|&i| targets[i].clone()).collect();
            }
            let j = cfg.stream.strength_jitter as f32;
            let strength = 1.0 + if j > 0.0 { r.random_range(-j..=j) } else { 0.0 };
            Schedule {
                drifts: drifts
                    .iter()
                    .zip(targets)
                    .map(|(d, target)| Drift {
                        kind: d.kind.clone(),
                        target,
                        start: d.start + offset,
                        duration: d.duration,
                    })
                    .collect(),
                strength,
            }
        })
        .collect()
}

/// The factory models of one seed, shared by every process of a run (the edge's and each end's
/// share of [`prepare`]).
struct Factory {
    dense: Mlp,
    mobile: Mlp,
    clean_accuracy: f64,
    atc_threshold: f64,
    anchor: Vec<(Vec<f32>, u8)>,
    /// The clean evaluation frames (inputs, labels) the accuracies were measured on.
    clean: EvalSet,
}

/// The factory's dense and compressed mobile models and their clean accuracy. `teacher` is
/// read only where `mobile.source = "teacher"` (the paper's deployment compresses the teacher
/// itself); every draw here has its own seed, so the result does not depend on whether the
/// teacher was trained in the same process.
fn factory(
    cfg: &AdaEvoConfig,
    pre: &BaseImages,
    pool: &BaseImages,
    seed: u64,
    teacher: Option<&Teacher>,
) -> Factory {
    debug_assert!(
        cfg.mobile.source != "teacher" || teacher.is_some(),
        "mobile.source = teacher needs the teacher"
    );
    let clean = Condition::default();
    // Clean renders of the pre-training images: the factory model's training set (and the
    // edge's anchor set). A clean render draws no randomness.
    let mut rng = StdRng::seed_from_u64(seed ^ 0xADA);
    let mut cx = Vec::new();
    let mut cy = Vec::new();
    for i in 0..pre.len().min(cfg.data.pretrain_images) {
        cx.push(stream::to_input(&stream::render(
            pre.image(i),
            &clean,
            &mut rng,
        )));
        cy.push(pre.labels[i]);
    }
    let opts = |epochs: usize, s: u64| TrainOpts {
        epochs,
        lr: 0.03,
        momentum: 0.9,
        batch: 32,
        seed: s,
    };
    let dense = match teacher {
        // The paper's deployment: the teacher itself, compressed (pruned, a one-epoch
        // fine-tune on clean frames as the factory model gets, int8).
        Some(t) if cfg.mobile.source == "teacher" => t.net.clone(),
        _ => {
            let mut m = cfg.new_mobile(seed ^ 3);
            m.train(&cx, &cy, &opts(cfg.data.pretrain_epochs, seed ^ 4));
            m
        }
    };
    let mut small = prune(&dense, cfg.mobile.sparsity).unwrap_or_else(|_| dense.clone());
    small.train(&cx, &cy, &opts(1, seed ^ 5));
    let mobile = ModelBlob::encode(0, 0, &small)
        .decode()
        .unwrap_or_else(|_| small.clone());
    // Clean accuracy on the stream pool (the QoE reference).
    let mut ex = Vec::new();
    let mut ey = Vec::new();
    let mut erng = StdRng::seed_from_u64(seed ^ 0xC1EA);
    for k in 0..1000.min(pool.len() * 4) {
        let i = (k * 7919 + erng.random_range(0..pool.len())) % pool.len();
        ex.push(stream::to_input(&stream::render(
            pool.image(i),
            &clean,
            &mut erng,
        )));
        ey.push(pool.labels[i]);
    }
    let clean_accuracy = mobile.accuracy(&ex, &ey);
    let clean_cc: Vec<f64> = ex
        .iter()
        .map(|x| crate::estimator::confidence(&mobile.forward(x).probs))
        .collect();
    let atc_threshold = crate::estimator::atc_threshold(&clean_cc, clean_accuracy);
    Factory {
        dense: small,
        mobile,
        clean_accuracy,
        atc_threshold,
        anchor: cx.into_iter().zip(cy).collect(),
        clean: (ex, ey),
    }
}

/// End `k`'s stream under `schedule`: its frames, `stream.fps` per second, and its evaluation
/// sets, one every `stream.eval_every_s`.
fn draw_end(
    cfg: &AdaEvoConfig,
    pool: &BaseImages,
    schedule: &Schedule,
    seed: u64,
    k: usize,
) -> (Vec<StreamFrame>, Vec<EvalSet>) {
    let (secs, fps) = (cfg.stream.seconds, cfg.stream.fps);
    let (every, nf) = (cfg.stream.eval_every_s, cfg.stream.eval_frames);
    let s_seed = seed ^ 0x57EA_0000 ^ (k as u64) << 20;
    let frames: Vec<StreamFrame> = (0..secs * fps)
        .map(|i| stream::draw(pool, schedule, i as f64 / fps as f64, s_seed))
        .collect();
    let eval = (0..secs)
        .step_by(every)
        .map(|t| {
            let mut xs = Vec::with_capacity(nf);
            let mut ys = Vec::with_capacity(nf);
            for j in 0..nf {
                let f = stream::draw(
                    pool,
                    schedule,
                    t as f64 + j as f64 / nf as f64,
                    s_seed ^ 0xE7A1 ^ (j as u64) << 40,
                );
                xs.push(f.input);
                ys.push(f.label);
            }
            (xs, ys)
        })
        .collect();
    (frames, eval)
}

/// Pre-trains the models and draws the streams of one seed.
pub fn prepare(cfg: &AdaEvoConfig, pre: &BaseImages, pool: &BaseImages, seed: u64) -> Prepared {
    let t0 = Instant::now();
    let teacher = train_teacher(cfg, pre, seed);
    let f = factory(cfg, pre, pool, seed, Some(&teacher));
    let teacher_accuracy = teacher.accuracy(&f.clean.0, &f.clean.1);
    let drifts: Vec<Drift> = cfg.drifts().unwrap_or_default();
    let schedules = schedules(cfg, &drifts, seed);
    let per_end: Vec<(Vec<StreamFrame>, Vec<EvalSet>)> = (0..cfg.stream.ends)
        .into_par_iter()
        .map(|k| draw_end(cfg, pool, &schedules[k], seed, k))
        .collect();
    let (frames, eval) = per_end.into_iter().unzip();
    Prepared {
        teacher,
        dense: f.dense,
        mobile: f.mobile,
        clean_accuracy: f.clean_accuracy,
        teacher_accuracy,
        atc_threshold: f.atc_threshold,
        schedules,
        frames,
        eval,
        anchor: f.anchor,
        seconds: t0.elapsed().as_secs_f64(),
    }
}

/// What the edge process of a run needs of [`prepare`]: the teacher, the factory models and
/// the anchor set, no end's stream (it sees frames only in uploads).
#[derive(Debug, Clone, PartialEq)]
pub struct EdgePrepared {
    /// The teacher.
    pub teacher: Teacher,
    /// The factory mobile model before int8 (pruned, its mask kept).
    pub dense: Mlp,
    /// The factory compressed mobile model.
    pub mobile: Mlp,
    /// Clean original training samples (the edge's anchor set).
    pub anchor: Vec<(Vec<f32>, u8)>,
    /// How many ends the run has.
    pub ends: usize,
}

/// What mobile end `end`'s process needs of [`prepare`]: the factory compressed model, its
/// clean accuracy and ATC threshold, and this end's stream only.
#[derive(Debug, Clone, PartialEq)]
pub struct EndPrepared {
    /// The end.
    pub end: usize,
    /// The factory compressed mobile model.
    pub mobile: Mlp,
    /// The factory model's accuracy on clean frames.
    pub clean_accuracy: f64,
    /// The factory model's ATC threshold on the clean frames.
    pub atc_threshold: f64,
    /// This end's drift schedule.
    pub schedule: Schedule,
    /// This end's frames, `stream.fps` per second in time order.
    pub frames: Vec<StreamFrame>,
    /// This end's evaluation sets per tick.
    pub eval: Vec<EvalSet>,
}

/// The edge's share of [`prepare`], equal to what [`Prepared::edge`] takes from it, without
/// drawing a stream.
pub fn prepare_edge(
    cfg: &AdaEvoConfig,
    pre: &BaseImages,
    pool: &BaseImages,
    seed: u64,
) -> EdgePrepared {
    let teacher = train_teacher(cfg, pre, seed);
    let f = factory(cfg, pre, pool, seed, Some(&teacher));
    EdgePrepared {
        teacher,
        dense: f.dense,
        mobile: f.mobile,
        anchor: f.anchor,
        ends: cfg.stream.ends,
    }
}

/// End `k`'s share of [`prepare`], equal to what [`Prepared::end`] takes from it: the other
/// ends' streams are not drawn, and the teacher is trained only where the mobile model is
/// made from it (`mobile.source = "teacher"`). `None` when the run has no end `k`.
pub fn prepare_end(
    cfg: &AdaEvoConfig,
    pre: &BaseImages,
    pool: &BaseImages,
    seed: u64,
    k: usize,
) -> Option<EndPrepared> {
    if k >= cfg.stream.ends {
        return None;
    }
    let teacher = (cfg.mobile.source == "teacher").then(|| train_teacher(cfg, pre, seed));
    let f = factory(cfg, pre, pool, seed, teacher.as_ref());
    let drifts: Vec<Drift> = cfg.drifts().unwrap_or_default();
    let schedule = schedules(cfg, &drifts, seed).swap_remove(k);
    let (frames, eval) = draw_end(cfg, pool, &schedule, seed, k);
    Some(EndPrepared {
        end: k,
        mobile: f.mobile,
        clean_accuracy: f.clean_accuracy,
        atc_threshold: f.atc_threshold,
        schedule,
        frames,
        eval,
    })
}

impl Prepared {
    /// The edge's share (clones).
    pub fn edge(&self) -> EdgePrepared {
        EdgePrepared {
            teacher: self.teacher.clone(),
            dense: self.dense.clone(),
            mobile: self.mobile.clone(),
            anchor: self.anchor.clone(),
            ends: self.frames.len(),
        }
    }

    /// End `k`'s share (clones); `None` when the run has no end `k`.
    pub fn end(&self, k: usize) -> Option<EndPrepared> {
        Some(EndPrepared {
            end: k,
            mobile: self.mobile.clone(),
            clean_accuracy: self.clean_accuracy,
            atc_threshold: self.atc_threshold,
            schedule: self.schedules.get(k)?.clone(),
            frames: self.frames.get(k)?.clone(),
            eval: self.eval.get(k)?.clone(),
        })
    }
}

/// The frames captured in second `t` of a stream drawn at `fps` frames per second (the first
/// is the key frame the trigger reads).
pub fn second(frames: &[StreamFrame], t: usize, fps: usize) -> &[StreamFrame] {
    let lo = (t * fps).min(frames.len());
    &frames[lo..(lo + fps).min(frames.len())]
}

/// The components a method uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MethodSpec {
    /// Trigger.
    pub trigger: TriggerMode,
    /// Sampling.
    pub sampling: SamplingMode,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Profiler on.
    pub profiler: bool,
}

/// The components of the method `name` (see [`crate::config::METHODS`]).
pub fn method_spec(name: &str, period: f64) -> MethodSpec {
    let ours = MethodSpec {
        trigger: TriggerMode::Rod,
        sampling: SamplingMode::DriftAware,
        scheduler: SchedulerKind::Knapsack,
        profiler: true,
    };
    match name {
        "no_evolution" => MethodSpec {
            trigger: TriggerMode::Never,
            ..ours
        },
        "naive" => MethodSpec {
            trigger: TriggerMode::Periodic(period),
            sampling: SamplingMode::Fixed,
            scheduler: SchedulerKind::Fifo,
            profiler: false,
        },
        "ablation_periodic_trigger" => MethodSpec {
            trigger: TriggerMode::Periodic(period),
            ..ours
        },
        "ablation_fixed_sampling" => MethodSpec {
            sampling: SamplingMode::Fixed,
            ..ours
        },
        "ablation_fifo_scheduler" => MethodSpec {
            scheduler: SchedulerKind::Fifo,
            ..ours
        },
        "ablation_no_profiler" => MethodSpec {
            profiler: false,
            ..ours
        },
        _ => ours,
    }
}

/// A trigger as the timeline and the detection scores see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TriggerLog {
    pub end: usize,
    pub t: f64,
    pub onset: f64,
    pub drift: String,
    pub sent: bool,
}

/// One method's run on one seed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MethodRun {
    /// Headline metrics (report keys).
    pub metrics: BTreeMap<String, f64>,
    /// Per end, `(t, accuracy, estimate)` at each evaluation.
    pub timeline: Vec<Vec<(f64, f64, f64)>>,
    /// Triggers.
    pub triggers: Vec<TriggerLog>,
    /// Task starts `(t, end, epochs)` and model installs `(t, end, version)`.
    pub starts: Vec<(f64, usize, usize)>,
    pub installs: Vec<(f64, usize, u64)>,
    /// Per-end QoE at the 90% threshold.
    pub qoe_t90_per_end: Vec<f64>,
    /// Diagnostics for `details.diagnostics`: accuracy in the settled part of each drift by
    /// its target condition (`settled_<condition>`) and by seconds since the latest drift's
    /// start in 20 s bins (`since_onset_<lo>`).
    pub diag: BTreeMap<String, f64>,
}

/// The mobile-end parameters of `method` (its trigger and sampling policy; the QoE threshold
/// at 90% of the factory model's clean accuracy) for ends living `life_s` seconds.
pub fn method_mobile_params(
    cfg: &AdaEvoConfig,
    prep: &Prepared,
    method: &str,
    life_s: f64,
) -> MobileParams {
    mobile_params_at(cfg, method, prep.clean_accuracy, life_s)
}

/// The mobile-end parameters of `method` for either task: its threshold is 90% of `clean`,
/// the factory model's clean accuracy (or mAP@0.5).
pub fn mobile_params_at(cfg: &AdaEvoConfig, method: &str, clean: f64, life_s: f64) -> MobileParams {
    let spec = method_spec(method, cfg.mobile.period_s as f64);
    let m = &cfg.mobile;
    MobileParams {
        rod: RodParams {
            window: m.window,
            subwindows: m.subwindows,
            step: m.step,
            rod_threshold: m.rod_threshold,
            stable_f: m.stable_f,
            stable_t: m.stable_t,
            max_slides: m.max_slides,
        },
        settle_on_descriptors: m.settle_on_descriptors,
        sudden_max_s: m.sudden_max_s,
        alternation_ratio: m.alternation_ratio,
        upload_budget: m.upload_budget,
        fixed_window_s: m.fixed_window_s as f64,
        trigger: spec.trigger,
        sampling: spec.sampling,
        threshold: 0.9 * clean,
        life_s,
    }
}

/// The edge parameters of `method` (its scheduler and whether the profiler is used).
pub fn method_edge_params(
    cfg: &AdaEvoConfig,
    anchor: &[(Vec<f32>, u8)],
    method: &str,
    seed: u64,
) -> EdgeParams {
    let spec = method_spec(method, cfg.mobile.period_s as f64);
    let e = &cfg.edge;
    EdgeParams {
        throughput: e.throughput_mflops * 1e6,
        memory: cfg.memory_bytes(),
        memory_unit: AdaEvoConfig::unit_bytes(e.memory_unit_kb),
        max_concurrent: e.max_concurrent,
        epochs: e.epochs.clone(),
        fixed_epochs: e.fixed_epochs,
        probe_epochs: e.probe_epochs,
        batch: e.batch,
        lr: e.lr as f32,
        replay: e.replay,
        workspace: (e.workspace_kb * 1e3) as u64,
        sparsity: cfg.mobile.sparsity,
        scheduler: spec.scheduler,
        profiler: spec.profiler,
        seed: seed ^ 0xED6E,
        anchor: anchor.to_vec(),
        anchor_per_task: e.anchor,
        label_min_confidence: e.label_min_confidence,
        augment: e.augment,
        base: crate::edge::Base::parse(&e.base),
        min_gain: e.min_gain,
    }
}

/// The classification streams as [`sim::drive`] reads them, and the diagnostics only this task
/// keeps (ground truth read here only).
struct ClsWorld<'a> {
    prep: &'a Prepared,
    fps: usize,
    window: usize,
    cc_hist: Vec<Vec<f64>>,
    atc_all: Vec<f64>,
    atc_acc: Vec<f64>,
    frames_by_type: BTreeMap<String, Vec<f64>>,
    gain_by_cond: BTreeMap<String, Vec<f64>>,
    /// Uploaded frames, those the teacher labels right and those of the end's current drift.
    label_n: usize,
    label_hits: usize,
    current_n: usize,
}

impl sim::World for ClsWorld<'_> {
    fn eval_len(&self, k: usize) -> usize {
        self.prep.eval[k].len()
    }

    fn accuracy(&self, model: &Mlp, k: usize, tick: usize) -> f64 {
        let (xs, ys) = &self.prep.eval[k][tick];
        model.accuracy(xs, ys)
    }

    fn second(&mut self, k: usize, t: usize, end: &mut MobileEnd) -> FrameResult {
        let r = end.on_second(t, second(&self.prep.frames[k], t, self.fps));
        self.cc_hist[k].push(r.cc);
        r
    }

    fn uploaded(&mut self, k: usize, tf: f64, req: &TaskRequest) {
        let sch = &self.prep.schedules[k];
        let now_seg = sim::segment(sch, tf);
        self.frames_by_type
            .entry(req.drift.name().to_string())
            .or_default()
            .push(req.frames.len() as f64);
        for fr in &req.frames {
            let Some(sf) = self.prep.frames[k].get((fr.t * self.fps as f64).round() as usize)
            else {
                continue;
            };
            self.label_n += 1;
            if self.prep.teacher.predict(&sf.input) == sf.label as usize {
                self.label_hits += 1;
            }
            if sim::segment(sch, fr.t) == now_seg && sf.new_concept {
                self.current_n += 1;
            }
        }
    }

    fn estimate(&mut self, k: usize, t: usize, acc: f64) -> f64 {
        let h = &self.cc_hist[k];
        let recent = &h[h.len().saturating_sub(self.window)..];
        if t > 0 {
            self.atc_all.push(crate::estimator::atc_estimate(
                recent,
                self.prep.atc_threshold,
            ));
            self.atc_acc.push(acc);
        }
        mean(recent)
    }

    fn installed(&mut self, k: usize, at: f64, gain: f64) {
        let c = condition_at(&self.prep.schedules[k], at);
        self.gain_by_cond.entry(c).or_default().push(gain);
    }
}

/// Accuracy over a run's timelines by phase (shared by both tasks).
pub(crate) struct Phases {
    /// Before the first drift.
    pub(crate) clean: Vec<f64>,
    /// The first / second half of each drift's settled part (its end to the next drift's start).
    pub(crate) early: Vec<f64>,
    pub(crate) late: Vec<f64>,
    /// Both halves, in timeline order.
    pub(crate) settled: Vec<f64>,
    /// `settled_<target condition>` and `since_onset_<20 s bin>` means (`details.diagnostics`).
    pub(crate) diag: BTreeMap<String, f64>,
}

/// Splits every end's `(t, accuracy, estimate)` timeline by phase against its schedule.
pub(crate) fn timeline_phases(
    timeline: &[Vec<(f64, f64, f64)>],
    schedules: &[Schedule],
    life: f64,
) -> Phases {
    let (mut clean, mut early, mut late, mut settled) = (vec![], vec![], vec![], vec![]);
    let mut by_cond: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut since: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (tl, sch) in timeline.iter().zip(schedules) {
        for &(t, acc, _) in tl {
            let sgi = sim::segment(sch, t);
            if sgi == 0 {
                clean.push(acc);
                continue;
            }
            let d = &sch.drifts[sgi - 1];
            since
                .entry(((t - d.start) / 20.0).floor() as usize * 20)
                .or_default()
                .push(acc);
            if t < d.end() {
                continue;
            }
            let len = (sim::next_start(sch, t, life) - d.end()).max(1e-9);
            if (t - d.end()) / len < 0.5 {
                early.push(acc);
            } else {
                late.push(acc);
            }
            settled.push(acc);
            by_cond.entry(d.target.clone()).or_default().push(acc);
        }
    }
    let mut diag = BTreeMap::new();
    for (c, v) in &by_cond {
        diag.insert(format!("settled_{c}"), mean(v));
    }
    for (b, v) in &since {
        diag.insert(format!("since_onset_{b:03}"), mean(v));
    }
    Phases {
        clean,
        early,
        late,
        settled,
        diag,
    }
}

/// Adds what a world collected during the run to `diag`: the mean gain of installs by the
/// condition they were installed in (`install_gain_<c>`, `installs_<c>`) and the mean frames
/// per upload by drift type (`upload_frames_<type>`).
pub(crate) fn world_diagnostics(
    diag: &mut BTreeMap<String, f64>,
    gain_by_cond: &BTreeMap<String, Vec<f64>>,
    frames_by_type: &BTreeMap<String, Vec<f64>>,
) {
    for (c, v) in gain_by_cond {
        diag.insert(format!("install_gain_{c}"), mean(v));
        diag.insert(format!("installs_{c}"), v.len() as f64);
    }
    for (c, v) in frames_by_type {
        diag.insert(format!("upload_frames_{c}"), mean(v));
    }
}

/// The condition end `k` is in (or drifting to) at `t`: `clean` before its first drift.
pub(crate) fn condition_at(schedule: &Schedule, t: f64) -> String {
    let i = sim::segment(schedule, t);
    if i == 0 {
        "clean".to_string()
    } else {
        schedule.drifts[i - 1].target.clone()
    }
}

/// Simulates `method` on the prepared streams.
pub fn simulate(cfg: &AdaEvoConfig, prep: &Prepared, method: &str, seed: u64) -> MethodRun {
    let t_wall = Instant::now();
    let spec = method_spec(method, cfg.mobile.period_s as f64);
    let life = cfg.stream.seconds as f64;
    let params = method_mobile_params(cfg, prep, method, life);
    let mut edge = EdgeServer::new(
        method_edge_params(cfg, &prep.anchor, method, seed),
        prep.teacher.clone(),
    );
    let n = cfg.stream.ends;
    let mut ends: Vec<MobileEnd> = (0..n)
        .map(|k| {
            edge.register(k, prep.dense.clone(), prep.mobile.clone());
            MobileEnd::new(k, prep.mobile.clone(), params)
        })
        .collect();
    let mut world = ClsWorld {
        prep,
        fps: cfg.stream.fps,
        window: cfg.mobile.window,
        cc_hist: vec![Vec::new(); n],
        atc_all: Vec::new(),
        atc_acc: Vec::new(),
        frames_by_type: BTreeMap::new(),
        gain_by_cond: BTreeMap::new(),
        label_n: 0,
        label_hits: 0,
        current_n: 0,
    };
    let opts = sim::Options {
        profiler: spec.profiler,
        gain_sets: usize::MAX,
    };
    let log = sim::drive(
        cfg,
        &prep.schedules,
        &mut edge,
        &mut ends,
        &mut world,
        &opts,
    );
    let mut mx = BTreeMap::new();
    let q90 = log.shared_metrics(
        &mut mx,
        &prep.schedules,
        life,
        (0.9 * prep.clean_accuracy, 0.8 * prep.clean_accuracy),
        &edge,
        cfg.memory_bytes(),
        spec.trigger,
        &opts,
    );
    let Phases {
        clean: clean_ph,
        early,
        late,
        mut diag,
        ..
    } = timeline_phases(&log.timeline, &prep.schedules, life);
    world_diagnostics(&mut diag, &world.gain_by_cond, &world.frames_by_type);
    let mut put = |k: &str, v: f64| {
        mx.insert(k.to_string(), v);
    };
    put("tasks_declined", edge.declined as f64);
    put(
        "estimate_correlation_atc",
        pearson(&world.atc_all, &world.atc_acc),
    );
    put("accuracy_before_drifts", mean(&clean_ph));
    put("accuracy_settled_early", mean(&early));
    put("accuracy_settled_late", mean(&late));
    if world.label_n > 0 {
        put(
            "upload_teacher_label_accuracy",
            world.label_hits as f64 / world.label_n as f64,
        );
        put(
            "upload_current_condition_frac",
            world.current_n as f64 / world.label_n as f64,
        );
    }
    put("wall_seconds", t_wall.elapsed().as_secs_f64());
    let starts = edge.log.iter().map(|s| (s.t, s.end, s.epochs)).collect();
    MethodRun {
        metrics: mx,
        timeline: log.timeline,
        triggers: log.triggers,
        starts,
        installs: log.installs,
        qoe_t90_per_end: q90,
        diag,
    }
}

/// Mean and sample standard deviation of each key over `runs` (keys present in all).
pub fn aggregate(runs: &[&BTreeMap<String, f64>]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(first) = runs.first() else {
        return out;
    };
    for k in first.keys() {
        let v: Vec<f64> = runs.iter().filter_map(|r| r.get(k).copied()).collect();
        if v.len() != runs.len() {
            continue;
        }
        let m = mean(&v);
        let sd = if v.len() > 1 {
            (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
        } else {
            0.0
        };
        out.insert(k.clone(), m);
        out.insert(format!("{k}_std"), sd);
    }
    out
}

/// Headline keys compared seed by seed.
pub const PAIRED_KEYS: [&str; 3] = ["avg_qoe_t90", "avg_qoe_t80", "avg_accuracy"];

/// For every baseline, the per-seed difference ours − baseline of each [`PAIRED_KEYS`] key
/// (every method runs on the same seed's streams, so the difference removes what the seeds
/// share), as mean and sample std over seeds (`<key>` and `<key>_std`).
pub fn paired_differences(
    per_method: &BTreeMap<String, Vec<BTreeMap<String, f64>>>,
    methods: &[String],
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    let Some(ours) = methods.first().and_then(|m| per_method.get(m)) else {
        return out;
    };
    for m in methods.iter().skip(1) {
        let Some(theirs) = per_method.get(m) else {
            continue;
        };
        let diffs: Vec<BTreeMap<String, f64>> = ours
            .iter()
            .zip(theirs)
            .map(|(a, b)| {
                PAIRED_KEYS
                    .iter()
                    .filter_map(|k| Some((k.to_string(), a.get(*k)? - b.get(*k)?)))
                    .collect()
            })
            .collect();
        out.insert(m.clone(), aggregate(&diffs.iter().collect::<Vec<_>>()));
    }
    out
}

/// The timeline SVG of one method's run: every end's accuracy (solid) and estimate (dashed),
/// the QoE thresholds, and marks for triggers (row per end) and task starts / installs.
pub fn timeline_svg(
    run: &MethodRun,
    method: &str,
    clean: f64,
    seconds: f64,
    ends: usize,
) -> String {
    let shown = ends.min(4);
    let mut series = Vec::new();
    for k in 0..shown {
        let c = svg::colour(k);
        series.push(svg::Series {
            label: format!("end {k} accuracy"),
            points: run.timeline[k].iter().map(|p| (p.0, p.1)).collect(),
            colour: c.clone(),
            dashed: false,
        });
        series.push(svg::Series {
            label: format!("end {k} estimate (CC)"),
            points: run.timeline[k].iter().map(|p| (p.0, p.2)).collect(),
            colour: c,
            dashed: true,
        });
    }
    let mut marks = Vec::new();
    for tr in run.triggers.iter().filter(|x| x.end < shown) {
        marks.push(svg::Mark {
            x: tr.t,
            row: tr.end,
            colour: svg::colour(tr.end),
            label: format!("end {} trigger ({}), onset {}", tr.end, tr.drift, tr.onset),
        });
    }
    for (t, end, epochs) in run.starts.iter().filter(|s| s.1 < shown) {
        marks.push(svg::Mark {
            x: *t,
            row: shown + end,
            colour: svg::colour(*end),
            label: format!("end {end} task starts ({epochs} epochs)"),
        });
    }
    for (t, end, v) in run.installs.iter().filter(|s| s.1 < shown) {
        marks.push(svg::Mark {
            x: *t,
            row: 2 * shown + end,
            colour: svg::colour(*end),
            label: format!("end {end} installs version {v}"),
        });
    }
    svg::chart(
        &format!(
            "{method}: accuracy (solid) and label-free estimate (dashed) of ends 0-{}; marks: triggers, task starts, installs",
            shown - 1
        ),
        "simulated seconds",
        seconds,
        (0.0, 1.0),
        &series,
        &[
            (0.9 * clean, "QoE threshold 90%".into()),
            (0.8 * clean, "QoE threshold 80%".into()),
        ],
        &marks,
        3 * shown,
    )
}

/// What a run collects over seeds and methods, shared by the classification and detection
/// experiments: each method's headline metrics per seed (also logged to `metrics.jsonl` as
/// they come) and diagnostics, and seed 0's timelines and trigger/install logs.
pub(crate) struct Collected {
    pub(crate) per_method: BTreeMap<String, Vec<BTreeMap<String, f64>>>,
    pub(crate) diag: BTreeMap<String, Vec<BTreeMap<String, f64>>>,
    pub(crate) curves: Vec<Curve>,
    pub(crate) details: serde_json::Map<String, serde_json::Value>,
    /// The timelines' quantity: `avg_accuracy` or `avg_map50`.
    y_name: &'static str,
}

impl Collected {
    pub(crate) fn new(y_name: &'static str) -> Collected {
        Collected {
            per_method: BTreeMap::new(),
            diag: BTreeMap::new(),
            curves: Vec::new(),
            details: serde_json::Map::new(),
            y_name,
        }
    }

    /// `details.diagnostics`: per method, the mean over seeds of each diagnostic.
    pub(crate) fn insert_diagnostics(&mut self) {
        let mut dg = serde_json::Map::new();
        for (m, v) in &self.diag {
            let means: BTreeMap<String, f64> = aggregate(&v.iter().collect::<Vec<_>>())
                .into_iter()
                .filter(|(k, _)| !k.ends_with("_std"))
                .collect();
            dg.insert(m.clone(), serde_json::json!(means));
        }
        self.details
            .insert("diagnostics".into(), serde_json::Value::Object(dg));
    }

    /// Records method `m`'s run on seed `s`; on seed 0 it also draws the run's timeline
    /// (`clean`: the factory model's clean accuracy, the chart's reference).
    pub(crate) fn add(
        &mut self,
        ctx: &mut RunContext,
        cfg: &AdaEvoConfig,
        (s, m): (usize, &str),
        r: &MethodRun,
        clean: f64,
    ) -> SysResult<()> {
        let mut rec = serde_json::json!({"seed": s, "method": m});
        for (k, v) in &r.metrics {
            rec[k] = serde_json::json!(v);
        }
        ctx.log_metrics(&rec)?;
        self.per_method
            .entry(m.to_string())
            .or_default()
            .push(r.metrics.clone());
        self.diag
            .entry(m.to_string())
            .or_default()
            .push(r.diag.clone());
        if s == 0 {
            let svg = timeline_svg(r, m, clean, cfg.stream.seconds as f64, cfg.stream.ends);
            ctx.run_dir()
                .write_file(&format!("timeline_{m}.svg"), svg.as_bytes())?;
            let ticks = r.timeline.first().map_or(0, Vec::len);
            let pts = (0..ticks)
                .map(|i| {
                    let t = r.timeline[0][i].0;
                    let a = mean(&r.timeline.iter().map(|tl| tl[i].1).collect::<Vec<_>>());
                    (t, a)
                })
                .collect();
            self.curves.push(Curve {
                label: m.to_string(),
                y_name: self.y_name.into(),
                points: pts,
            });
            self.details.insert(
                format!("{m}_seed0"),
                serde_json::json!({
                    "qoe_t90_per_end": r.qoe_t90_per_end,
                    // Each end's accuracy over time, `[t, accuracy]` per evaluation, and its mean.
                    "accuracy_per_end": r
                        .timeline
                        .iter()
                        .map(|tl| tl.iter().map(|p| [p.0, p.1]).collect::<Vec<_>>())
                        .collect::<Vec<_>>(),
                    "avg_accuracy_per_end": r
                        .timeline
                        .iter()
                        .map(|tl| mean(&tl.iter().map(|p| p.1).collect::<Vec<_>>()))
                        .collect::<Vec<_>>(),
                    "triggers": r.triggers,
                    "installs": r.installs,
                }),
            );
        }
        Ok(())
    }

    /// Simulates every method of `cfg` on seed `s`'s prepared streams (the methods in
    /// parallel), records their runs ([`Collected::add`]) and keeps `about` — what the seed's
    /// preparation measured — with its drift schedules as `details.seed<s>`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_seed<P: Sync>(
        &mut self,
        ctx: &mut RunContext,
        cfg: &AdaEvoConfig,
        s: usize,
        prep: &P,
        (clean, schedules): (f64, &[Schedule]),
        simulate: impl Fn(&P, &str) -> MethodRun + Sync,
        mut about: serde_json::Value,
    ) -> SysResult<()> {
        let runs: Vec<(String, MethodRun)> = cfg
            .experiment
            .methods
            .par_iter()
            .map(|m| (m.clone(), simulate(prep, m)))
            .collect();
        for (m, r) in &runs {
            self.add(ctx, cfg, (s, m), r, clean)?;
        }
        if let Some(o) = about.as_object_mut() {
            o.insert(
                "schedules".into(),
                serde_json::json!(
                    schedules
                        .iter()
                        .map(|sc| sc
                            .drifts
                            .iter()
                            .map(|d| format!("{}:{}@{}+{}", d.kind, d.target, d.start, d.duration))
                            .collect::<Vec<_>>())
                        .collect::<Vec<_>>()
                ),
            );
            o.insert(
                "strengths".into(),
                serde_json::json!(schedules.iter().map(|sc| sc.strength).collect::<Vec<_>>()),
            );
        }
        self.details.insert(format!("seed{s}"), about);
        Ok(())
    }

    /// Draws every method's seed-0 timeline in one chart (`title`), fills `report` with
    /// `adaevo`'s aggregate as its metrics and the methods after the first as baselines, and
    /// adds the per-seed paired differences to the details.
    pub(crate) fn finish(
        &mut self,
        ctx: &mut RunContext,
        cfg: &AdaEvoConfig,
        methods: &[String],
        title: &str,
        report: &mut Report,
    ) -> SysResult<()> {
        let all: Vec<svg::Series> = self
            .curves
            .iter()
            .enumerate()
            .map(|(i, c)| svg::Series {
                label: c.label.clone(),
                points: c.points.clone(),
                colour: svg::colour(i),
                dashed: c.label != "adaevo",
            })
            .collect();
        let chart = svg::chart(
            title,
            "simulated seconds",
            cfg.stream.seconds as f64,
            (0.0, 1.0),
            &all,
            &[],
            &[],
            0,
        );
        ctx.run_dir()
            .write_file("timeline_methods.svg", chart.as_bytes())?;
        let agg = |m: &str| -> BTreeMap<String, f64> {
            let v = self
                .per_method
                .get(m)
                .map(|v| v.iter().collect::<Vec<_>>())
                .unwrap_or_default();
            aggregate(&v)
        };
        report.metrics = agg("adaevo");
        for m in methods.iter().skip(1) {
            report.baselines.insert(m.clone(), agg(m));
        }
        self.details.insert(
            "paired_differences".into(),
            serde_json::json!(paired_differences(&self.per_method, methods)),
        );
        Ok(())
    }
}

/// Runs the whole comparison.
pub fn run(cfg: &Checked<AdaEvoConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    if cfg.get().task.name == "detection" {
        return crate::detect::experiment::run(cfg, ctx);
    }
    let cfg = cfg.get();
    let t0 = Instant::now();
    let methods = cfg.experiment.methods.clone();
    let mut col = Collected::new("avg_accuracy");
    let mut prep_s = 0.0;
    for s in 0..cfg.experiment.seeds {
        let seed = ctx.seed_for(&format!("seed{s}"));
        let (pre, pool) = load_base(cfg, ctx.data_dir(), seed)?;
        let prep = prepare(cfg, &pre, &pool, seed);
        prep_s += prep.seconds;
        col.run_seed(
            ctx,
            cfg,
            s,
            &prep,
            (prep.clean_accuracy, &prep.schedules),
            |p, m| simulate(cfg, p, m, seed),
            serde_json::json!({
                "clean_accuracy": prep.clean_accuracy,
                "teacher_clean_accuracy": prep.teacher_accuracy,
                "atc_threshold": prep.atc_threshold,
            }),
        )?;
    }
    let dataset = if cfg.data.dataset == "synthetic" {
        "synthetic"
    } else {
        "fashion-mnist"
    };
    let mut report = Report::new("adaevo", dataset, ctx.seed());
    // The accuracy-over-time chart of every method (seed 0).
    col.finish(
        ctx,
        cfg,
        &methods,
        "average accuracy over the ends, every method (seed 0)",
        &mut report,
    )?;
    report.timings.insert("prepare_seconds".into(), prep_s);
    report
        .timings
        .insert("total_seconds".into(), t0.elapsed().as_secs_f64());
    col.insert_diagnostics();
    report.details = serde_json::Value::Object(col.details);
    report.notes.push(format!(
        "QoE thresholds: 90% and 80% of the factory compressed model's accuracy on clean frames; {} ends, {} s streams, {} seed(s); simulated clock (FLOPs / {} MFLOP/s shared), compute real",
        cfg.stream.ends, cfg.stream.seconds, cfg.experiment.seeds, cfg.edge.throughput_mflops
    ));
    Ok(Outcome {
        report,
        curves: col.curves,
        paper: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_differences_are_per_seed() {
        let rec = |a: f64| -> BTreeMap<String, f64> {
            PAIRED_KEYS.iter().map(|k| (k.to_string(), a)).collect()
        };
        let mut per: BTreeMap<String, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
        per.insert("adaevo".into(), vec![rec(0.5), rec(0.7), rec(0.9)]);
        per.insert("naive".into(), vec![rec(0.4), rec(0.5), rec(0.8)]);
        let methods = vec!["adaevo".to_string(), "naive".to_string()];
        let d = paired_differences(&per, &methods);
        let n = &d["naive"];
        // Differences 0.1, 0.2, 0.1: mean 0.1333, sample std 0.0577 — far below either
        // arm's own spread over the seeds (0.2 and 0.2).
        assert!((n["avg_accuracy"] - 0.4 / 3.0).abs() < 1e-9);
        assert!((n["avg_accuracy_std"] - (1.0f64 / 300.0).sqrt()).abs() < 1e-9);
        assert!(!d.contains_key("adaevo"));
    }

    /// A process builds only its share (`ferrolab adaevo edge` / `mobile --id K`), and it is
    /// the share the whole run's [`prepare`] holds, bit for bit: with the factory model trained
    /// on its own (no teacher in an end's process) and made from the teacher.
    #[test]
    fn each_process_s_share_equals_the_whole_run_s() {
        let mut cfg = AdaEvoConfig::default();
        cfg.data.synthetic_images = 400;
        cfg.data.pretrain_images = 150;
        cfg.data.pretrain_epochs = 2;
        cfg.edge.teacher_epochs = 2;
        cfg.stream.ends = 3;
        cfg.stream.seconds = 40;
        cfg.stream.eval_every_s = 10;
        cfg.stream.drifts = vec!["sudden:rotate@10".into(), "gradual:blur@20+10".into()];
        let (pre, pool) = load_base(&cfg, None, 7).unwrap();
        for source in ["factory", "teacher"] {
            cfg.mobile.source = source.into();
            let whole = prepare(&cfg, &pre, &pool, 7);
            assert_eq!(prepare_edge(&cfg, &pre, &pool, 7), whole.edge(), "{source}");
            for k in 0..3 {
                let end = prepare_end(&cfg, &pre, &pool, 7, k).unwrap();
                assert_eq!(Some(&end), whole.end(k).as_ref(), "{source}: end {k}");
                assert_eq!(end.frames.len(), 40);
                assert_eq!(end.eval.len(), 4);
            }
            assert!(prepare_end(&cfg, &pre, &pool, 7, 3).is_none());
            assert!(whole.end(3).is_none());
        }
    }

    #[test]
    fn a_larger_teacher_set_leaves_the_factory_set_and_the_stream_pool_as_they_were() {
        let mut cfg = AdaEvoConfig::default();
        cfg.data.synthetic_images = 300;
        cfg.data.pretrain_images = 100;
        let (pre, pool) = load_base(&cfg, None, 3).unwrap();
        assert_eq!(pre.len(), 100);
        assert_eq!(teacher_images(&cfg, &pre), 100);
        cfg.edge.teacher_images = 250;
        let (pre2, pool2) = load_base(&cfg, None, 3).unwrap();
        assert_eq!(pre2.len(), 250);
        assert_eq!(teacher_images(&cfg, &pre2), 250);
        // The factory's images come first and are the same; the pool is untouched.
        assert_eq!(pre2.pixels[..pre.pixels.len()], pre.pixels[..]);
        assert_eq!(pool2.pixels, pool.pixels);
        // The extra images are not drawn from the pool.
        let side = stream::SIDE * stream::SIDE;
        for i in 100..250 {
            let img = &pre2.pixels[i * side..(i + 1) * side];
            assert!(!pool.pixels.chunks(side).any(|p| p == img), "image {i}");
        }
    }
}
