//! The detection task's experiment (`ferrolab adaevo --set task.name=detection`): per seed,
//! pre-train the teacher detector (every water condition) and the factory mobile detector
//! (clear water; pruned + int8), fit the IoU regressor, render every end's drifting camera
//! path and evaluation frames once, then simulate each method on the same streams on the
//! simulated clock both tasks share ([`sim::drive`]), with the classification task's mobile
//! ends ([`MobileEnd::on_estimate`] with the frame's CLC) and methods ([`method_spec`]). Accuracy is the mAP@0.5 of the end's current
//! model on `detect.eval_frames` fresh frames of that moment (ground truth used only there);
//! QoE thresholds are 90% / 80% of the factory model's clean-water mAP@0.5.

use super::edge::{DetEdge, DetEdgeParams, Labelled};
use super::estimator::{IouRegressor, frame_clc};
use super::grid::{Grid, GtBox, model_map50, train_detector};
use super::stream::{self as dstream, DetFrame};
use crate::config::AdaEvoConfig;
use crate::estimator::{mean, pearson};
use crate::experiment::{
    Collected, MethodRun, PAIRED_KEYS, condition_at, method_spec, mobile_params_at,
    timeline_phases, world_diagnostics,
};
use crate::mobile::{FrameResult, MobileEnd, MobileParams};
use crate::model::{Mlp, TrainOpts};
use crate::protocol::{ModelBlob, TaskRequest, prune};
use crate::sim;
use crate::stream::Schedule;
use ferrolab_core::run::Report;
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, SystemError};
use ferrolab_data::underwater::{SceneConfig, Water};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::time::Instant;

/// Everything one seed's methods share.
#[derive(Debug, Clone)]
pub struct DetPrepared {
    /// The grid.
    pub grid: Grid,
    /// The edge's teacher detector.
    pub teacher: Mlp,
    /// The factory model before int8 (pruned, mask kept): the edge's copy.
    pub dense: Mlp,
    /// The factory compressed model.
    pub mobile: Mlp,
    /// The mobile end's IoU regressor (LC).
    pub iou: IouRegressor,
    /// mAP@0.5 of the factory model / the teacher on clear-water frames.
    pub clean_map: f64,
    pub teacher_map: f64,
    /// mAP@0.5 of the teacher on frames of every drift target (its labels' quality).
    pub teacher_map_drifted: f64,
    /// Each end's drift schedule.
    pub schedules: Vec<Schedule>,
    /// Each end's frames, one per second.
    pub frames: Vec<Vec<DetFrame>>,
    /// Each end's evaluation frames per tick.
    pub eval: Vec<Vec<Vec<DetFrame>>>,
    /// Clean pre-training frames with their boxes (the edge's anchor set).
    pub anchor: Vec<Labelled>,
    /// Seconds spent preparing.
    pub seconds: f64,
}

fn usage(e: String) -> SystemError {
    SystemError::usage(format!("detection stream: {e}"))
}

pub(crate) fn pairs(frames: &[DetFrame]) -> Vec<(&[u8], &[GtBox])> {
    frames
        .iter()
        .map(|f| (f.rgb.as_slice(), f.boxes.as_slice()))
        .collect()
}

/// The factory detector and what derives from it: every role of a seed needs these.
struct Factory {
    grid: Grid,
    scfg: SceneConfig,
    /// The seed's render base.
    base: u64,
    clean: Vec<DetFrame>,
    clean_samples: Vec<(Vec<f32>, super::grid::CellTarget)>,
    dense: Mlp,
    mobile: Mlp,
}

/// What the mobile side reads besides the factory detector: the IoU regressor, and the
/// clear-water held-out scenes with the factory detector's mAP@0.5 on them (the QoE base).
struct Scored {
    iou: IouRegressor,
    clean_test: Vec<DetFrame>,
    clean_map: f64,
}

fn train_opts(cfg: &AdaEvoConfig, epochs: usize, seed: u64) -> TrainOpts {
    TrainOpts {
        epochs,
        lr: cfg.detect.lr as f32,
        momentum: 0.9,
        batch: 32,
        seed,
    }
}

fn samples_of(
    cfg: &AdaEvoConfig,
    grid: &Grid,
    frames: &[DetFrame],
    s: u64,
) -> Vec<(Vec<f32>, super::grid::CellTarget)> {
    frames
        .iter()
        .enumerate()
        .flat_map(|(i, f)| grid.samples(&f.rgb, &f.boxes, cfg.detect.bg_keep, s ^ (i as u64) << 12))
        .collect()
}

/// Held-out scenes of water `w`: the QoE reference (clear) and the drift targets.
fn held(scfg: &SceneConfig, w: &Water, s: u64) -> SysResult<Vec<DetFrame>> {
    (0..100)
        .into_par_iter()
        .map(|i| dstream::render(scfg, s.wrapping_add(i), w, s ^ i))
        .collect::<Result<_, _>>()
        .map_err(usage)
}

/// Pre-trains the factory detector (clear-water scenes; pruned, fine-tuned, int8) and fits
/// the IoU regressor. Every piece draws from its own seed, so each role's preparation gives
/// the same models as the whole one, bit for bit.
fn factory(cfg: &AdaEvoConfig, seed: u64) -> SysResult<Factory> {
    let d = &cfg.detect;
    let grid = cfg.grid();
    let scfg = dstream::scene_config(d.side);
    let clear = dstream::water("clear", 1.0);
    let base = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xDE7E;
    // Pre-training scenes in clear water: the factory model's data and the anchor set.
    let clean: Vec<DetFrame> = (0..d.pretrain_frames)
        .into_par_iter()
        .map(|i| dstream::render(&scfg, base.wrapping_add(i as u64), &clear, base ^ i as u64))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let clean_samples = samples_of(cfg, &grid, &clean, seed ^ 11);
    let mut dense = cfg.new_detector(seed ^ 3);
    train_detector(
        &mut dense,
        &clean_samples,
        &train_opts(cfg, d.pretrain_epochs, seed ^ 4),
    );
    let mut small = prune(&dense, cfg.mobile.sparsity).unwrap_or_else(|_| dense.clone());
    train_detector(&mut small, &clean_samples, &train_opts(cfg, 1, seed ^ 5));
    let mobile = ModelBlob::encode(0, 0, &small)
        .decode()
        .unwrap_or_else(|_| small.clone());
    Ok(Factory {
        grid,
        scfg,
        base,
        clean,
        clean_samples,
        dense: small,
        mobile,
    })
}

/// Fits the IoU regressor and scores the factory detector on held-out clear water (the edge
/// needs neither).
fn scored(cfg: &AdaEvoConfig, seed: u64, f: &Factory) -> SysResult<Scored> {
    let d = &cfg.detect;
    let iou = IouRegressor::fit(
        &pairs(&f.clean),
        d.side,
        d.iou_hidden,
        d.iou_jitters,
        10,
        seed,
    );
    let clean_test = held(&f.scfg, &dstream::water("clear", 1.0), f.base ^ 0xC1EA_0000)?;
    let clean_map = model_map50(&f.grid, &f.mobile, &pairs(&clean_test));
    Ok(Scored {
        iou,
        clean_test,
        clean_map,
    })
}

/// The teacher detector: trained on scenes under random water plus the clear ones.
fn teacher(cfg: &AdaEvoConfig, seed: u64, f: &Factory) -> SysResult<Mlp> {
    let d = &cfg.detect;
    let (base, renders) = (f.base, d.teacher_renders);
    let varied: Vec<DetFrame> = (0..d.pretrain_frames * renders)
        .into_par_iter()
        .map(|j| {
            let mut rng = StdRng::seed_from_u64(base ^ 0x7EAC ^ (j as u64) << 20);
            let w = dstream::random_water(&mut rng);
            dstream::render(
                &f.scfg,
                base.wrapping_add((j / renders) as u64),
                &w,
                base ^ 0x7EAD ^ j as u64,
            )
        })
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let mut teacher_samples = samples_of(cfg, &f.grid, &varied, seed ^ 12);
    drop(varied);
    teacher_samples.extend(f.clean_samples.iter().cloned());
    let mut teacher = cfg.new_detect_teacher(seed ^ 6);
    train_detector(
        &mut teacher,
        &teacher_samples,
        &train_opts(cfg, d.pretrain_epochs, seed ^ 7),
    );
    Ok(teacher)
}

/// End `k`'s camera path (one frame per second) and evaluation frames (per tick).
fn end_streams(
    cfg: &AdaEvoConfig,
    f: &Factory,
    schedule: &Schedule,
    k: usize,
) -> Result<(Vec<DetFrame>, Vec<Vec<DetFrame>>), String> {
    let d = &cfg.detect;
    let s_seed = f.base ^ 0x57EA_0000 ^ (k as u64) << 32;
    let frames = (0..cfg.stream.seconds)
        .map(|t| dstream::draw(&f.scfg, schedule, t as f64, d.frames_per_scene, s_seed))
        .collect::<Result<Vec<_>, _>>()?;
    let eval = (0..cfg.stream.seconds)
        .step_by(cfg.stream.eval_every_s)
        .map(|t| {
            (0..d.eval_frames)
                .map(|j| {
                    dstream::draw(
                        &f.scfg,
                        schedule,
                        t as f64,
                        1,
                        s_seed ^ 0xE7A1 ^ (j as u64 + 1) << 44,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((frames, eval))
}

fn schedules(cfg: &AdaEvoConfig, seed: u64) -> SysResult<Vec<Schedule>> {
    let drifts = cfg
        .detect_drifts()
        .map_err(|e| SystemError::usage(e.to_string()))?;
    Ok(crate::experiment::schedules(cfg, &drifts, seed))
}

/// Pre-trains the models and renders the streams of one seed.
pub fn prepare(cfg: &AdaEvoConfig, seed: u64) -> SysResult<DetPrepared> {
    let t0 = Instant::now();
    let f = factory(cfg, seed)?;
    let teacher = teacher(cfg, seed, &f)?;
    let sc = scored(cfg, seed, &f)?;
    let teacher_map = model_map50(&f.grid, &teacher, &pairs(&sc.clean_test));
    let drifts = cfg
        .detect_drifts()
        .map_err(|e| SystemError::usage(e.to_string()))?;
    let mut drifted = Vec::new();
    for (i, dr) in drifts.iter().enumerate() {
        drifted.extend(held(
            &f.scfg,
            &dstream::water(&dr.target, 1.0),
            f.base ^ 0xD21F_0000 ^ (i as u64) << 24,
        )?);
    }
    let teacher_map_drifted = model_map50(&f.grid, &teacher, &pairs(&drifted));
    let schedules = crate::experiment::schedules(cfg, &drifts, seed);
    type EndFrames = (Vec<DetFrame>, Vec<Vec<DetFrame>>);
    let per_end: Vec<EndFrames> = (0..cfg.stream.ends)
        .into_par_iter()
        .map(|k| end_streams(cfg, &f, &schedules[k], k))
        .collect::<Result<_, _>>()
        .map_err(usage)?;
    let (frames, eval) = per_end.into_iter().unzip();
    Ok(DetPrepared {
        grid: f.grid,
        teacher,
        dense: f.dense,
        mobile: f.mobile,
        iou: sc.iou,
        clean_map: sc.clean_map,
        teacher_map,
        teacher_map_drifted,
        schedules,
        frames,
        eval,
        anchor: f.clean.into_iter().map(|x| (x.rgb, x.boxes)).collect(),
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// What the edge process of the detection task needs: the teacher, the factory models and
/// the anchor set (no streams: the edge sees frames only in uploads).
#[derive(Debug, Clone)]
pub struct DetEdgePrepared {
    pub grid: Grid,
    pub teacher: Mlp,
    /// The factory model before int8 (the edge's copy of every end's model).
    pub dense: Mlp,
    /// The factory compressed model.
    pub mobile: Mlp,
    /// Clean pre-training frames with their boxes.
    pub anchor: Vec<Labelled>,
    /// Ends of the run.
    pub ends: usize,
}

/// What one mobile end of the detection task needs: its compressed detector, the IoU
/// regressor, its own stream and evaluation frames, and the QoE reference.
#[derive(Debug, Clone)]
pub struct DetEndPrepared {
    pub grid: Grid,
    pub mobile: Mlp,
    pub iou: IouRegressor,
    /// mAP@0.5 of the factory model on clear water (the QoE thresholds' base).
    pub clean_map: f64,
    /// The end.
    pub end: usize,
    /// Its frames, one per second.
    pub frames: Vec<DetFrame>,
    /// Its evaluation frames per tick.
    pub eval: Vec<Vec<DetFrame>>,
}

impl DetPrepared {
    /// The edge's share of this preparation.
    pub fn edge_part(&self) -> DetEdgePrepared {
        DetEdgePrepared {
            grid: self.grid,
            teacher: self.teacher.clone(),
            dense: self.dense.clone(),
            mobile: self.mobile.clone(),
            anchor: self.anchor.clone(),
            ends: self.frames.len(),
        }
    }

    /// End `k`'s share of this preparation (`None`: no such end).
    pub fn end_part(&self, k: usize) -> Option<DetEndPrepared> {
        Some(DetEndPrepared {
            grid: self.grid,
            mobile: self.mobile.clone(),
            iou: self.iou.clone(),
            clean_map: self.clean_map,
            end: k,
            frames: self.frames.get(k)?.clone(),
            eval: self.eval.get(k)?.clone(),
        })
    }
}

/// The edge's share of [`prepare`], built alone (the same models bit for bit, without the
/// ends' streams or the held-out drift scenes).
pub fn prepare_edge(cfg: &AdaEvoConfig, seed: u64) -> SysResult<DetEdgePrepared> {
    let f = factory(cfg, seed)?;
    let teacher = teacher(cfg, seed, &f)?;
    Ok(DetEdgePrepared {
        grid: f.grid,
        teacher,
        dense: f.dense,
        mobile: f.mobile,
        anchor: f.clean.into_iter().map(|x| (x.rgb, x.boxes)).collect(),
        ends: cfg.stream.ends,
    })
}

/// End `k`'s share of [`prepare`], built alone (no teacher, no other end's stream).
pub fn prepare_end(cfg: &AdaEvoConfig, seed: u64, k: usize) -> SysResult<DetEndPrepared> {
    if k >= cfg.stream.ends {
        return Err(SystemError::usage(format!(
            "end {k}: the run has stream.ends = {}",
            cfg.stream.ends
        )));
    }
    let f = factory(cfg, seed)?;
    let sc = scored(cfg, seed, &f)?;
    let schedules = schedules(cfg, seed)?;
    let (frames, eval) = end_streams(cfg, &f, &schedules[k], k).map_err(usage)?;
    Ok(DetEndPrepared {
        grid: f.grid,
        mobile: f.mobile,
        iou: sc.iou,
        clean_map: sc.clean_map,
        end: k,
        frames,
        eval,
    })
}

/// The mobile parameters of `method` (QoE threshold 90% of the factory clean mAP@0.5).
pub fn mobile_params(cfg: &AdaEvoConfig, prep: &DetPrepared, method: &str) -> MobileParams {
    mobile_params_at(cfg, method, prep.clean_map, cfg.stream.seconds as f64)
}

/// The detection edge's parameters for `method`.
pub fn edge_params(
    cfg: &AdaEvoConfig,
    prep: &DetPrepared,
    method: &str,
    seed: u64,
) -> DetEdgeParams {
    edge_params_with(cfg, prep.grid, &prep.anchor, method, seed)
}

/// [`edge_params`] from the grid and anchor set alone (what the edge process prepares).
pub fn edge_params_with(
    cfg: &AdaEvoConfig,
    grid: Grid,
    anchor: &[Labelled],
    method: &str,
    seed: u64,
) -> DetEdgeParams {
    let spec = method_spec(method, cfg.mobile.period_s as f64);
    let (e, d) = (&cfg.edge, &cfg.detect);
    DetEdgeParams {
        throughput: d.throughput_mflops * 1e6,
        memory: cfg.detect_memory_bytes(),
        memory_unit: AdaEvoConfig::unit_bytes(d.memory_unit_kb),
        max_concurrent: e.max_concurrent,
        epochs: e.epochs.clone(),
        fixed_epochs: e.fixed_epochs,
        probe_epochs: e.probe_epochs,
        batch: e.batch,
        lr: d.lr as f32,
        workspace: (e.workspace_kb * 1e3) as u64,
        sparsity: cfg.mobile.sparsity,
        scheduler: spec.scheduler,
        profiler: spec.profiler,
        seed: seed ^ 0xED6E,
        grid,
        bg_keep: d.bg_keep,
        label_score: d.label_score as f32,
        anchor: anchor.to_vec(),
        anchor_per_task: d.anchor_frames,
        min_gain: e.min_gain,
    }
}

fn end_map(prep: &DetPrepared, model: &Mlp, k: usize, tick: usize) -> f64 {
    let set = &prep.eval[k][tick.min(prep.eval[k].len() - 1)];
    model_map50(&prep.grid, model, &pairs(set))
}

/// The detection streams as [`sim::drive`] reads them.
struct DetWorld<'a> {
    prep: &'a DetPrepared,
    floor: f32,
    window: usize,
    clc_hist: Vec<Vec<f64>>,
    cc_hist: Vec<Vec<f64>>,
    cc_all: Vec<f64>,
    cc_acc: Vec<f64>,
    /// Uploaded frames, and those of the end's current drift.
    up_n: usize,
    current_n: usize,
    /// Frames per upload by drift type, install gains by the condition installed in.
    frames_by_type: BTreeMap<String, Vec<f64>>,
    gain_by_cond: BTreeMap<String, Vec<f64>>,
}

impl sim::World for DetWorld<'_> {
    fn eval_len(&self, k: usize) -> usize {
        self.prep.eval[k].len()
    }

    fn accuracy(&self, model: &Mlp, k: usize, tick: usize) -> f64 {
        end_map(self.prep, model, k, tick)
    }

    fn second(&mut self, k: usize, t: usize, end: &mut MobileEnd) -> FrameResult {
        let prep = self.prep;
        let f = &prep.frames[k][t];
        let dets = prep.grid.detect(&end.model, &f.rgb, self.floor);
        let (clc, cc) = frame_clc(&prep.iou, &f.rgb, &dets, self.floor);
        self.clc_hist[k].push(clc);
        self.cc_hist[k].push(cc);
        let desc = dstream::descriptor_input(&f.rgb, prep.grid.side);
        end.on_estimate(t as f64, &f.rgb, &desc, clc, 0)
    }

    fn uploaded(&mut self, k: usize, tf: f64, req: &TaskRequest) {
        let sch = &self.prep.schedules[k];
        let now_seg = sim::segment(sch, tf);
        self.frames_by_type
            .entry(req.drift.name().to_string())
            .or_default()
            .push(req.frames.len() as f64);
        for fr in &req.frames {
            self.up_n += 1;
            let cur = self.prep.frames[k]
                .get(fr.t as usize)
                .is_some_and(|sf| sf.new_concept);
            if sim::segment(sch, fr.t) == now_seg && cur {
                self.current_n += 1;
            }
        }
    }

    fn estimate(&mut self, k: usize, t: usize, acc: f64) -> f64 {
        let w = self.window;
        let h = &self.clc_hist[k];
        let est = mean(&h[h.len().saturating_sub(w)..]);
        let hc = &self.cc_hist[k];
        if t > 0 {
            self.cc_all.push(mean(&hc[hc.len().saturating_sub(w)..]));
            self.cc_acc.push(acc);
        }
        est
    }

    fn installed(&mut self, k: usize, at: f64, gain: f64) {
        let c = condition_at(&self.prep.schedules[k], at);
        self.gain_by_cond.entry(c).or_default().push(gain);
    }
}

/// Simulates `method` on the prepared streams.
pub fn simulate(cfg: &AdaEvoConfig, prep: &DetPrepared, method: &str, seed: u64) -> MethodRun {
    let t_wall = Instant::now();
    let spec = method_spec(method, cfg.mobile.period_s as f64);
    let life = cfg.stream.seconds as f64;
    let params = mobile_params(cfg, prep, method);
    let mut edge = DetEdge::new(edge_params(cfg, prep, method, seed), prep.teacher.clone());
    let n = cfg.stream.ends;
    let mut ends: Vec<MobileEnd> = (0..n)
        .map(|k| {
            edge.register(k, prep.dense.clone(), prep.mobile.clone());
            MobileEnd::new(k, prep.mobile.clone(), params)
        })
        .collect();
    let mut world = DetWorld {
        prep,
        floor: cfg.detect.det_score as f32,
        window: cfg.mobile.window,
        clc_hist: vec![Vec::new(); n],
        cc_hist: vec![Vec::new(); n],
        cc_all: Vec::new(),
        cc_acc: Vec::new(),
        up_n: 0,
        current_n: 0,
        frames_by_type: BTreeMap::new(),
        gain_by_cond: BTreeMap::new(),
    };
    // An install's gain over at most 8 evaluation sets: each is a mAP computation.
    let opts = sim::Options {
        profiler: spec.profiler,
        gain_sets: 8,
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
        (0.9 * prep.clean_map, 0.8 * prep.clean_map),
        &edge,
        cfg.detect_memory_bytes(),
        spec.trigger,
        &opts,
    );
    let crate::experiment::Phases {
        clean: clean_ph,
        settled,
        mut diag,
        ..
    } = timeline_phases(&log.timeline, &prep.schedules, life);
    world_diagnostics(&mut diag, &world.gain_by_cond, &world.frames_by_type);
    let avg = mx.get("avg_accuracy").copied().unwrap_or(f64::NAN);
    let mut put = |k: &str, v: f64| {
        mx.insert(k.to_string(), v);
    };
    put("avg_map50", avg);
    put(
        "estimate_correlation_cc",
        pearson(&world.cc_all, &world.cc_acc),
    );
    put("tasks_declined", edge.declined as f64);
    put("accuracy_before_drifts", mean(&clean_ph));
    put("accuracy_settled", mean(&settled));
    if world.up_n > 0 {
        put(
            "upload_current_condition_frac",
            world.current_n as f64 / world.up_n as f64,
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

/// Runs the whole detection comparison.
pub fn run(cfg: &Checked<AdaEvoConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    let cfg = cfg.get();
    let t0 = Instant::now();
    let methods = cfg.experiment.methods.clone();
    let mut col = Collected::new("avg_map50");
    let mut prep_s = 0.0;
    for s in 0..cfg.experiment.seeds {
        let seed = ctx.seed_for(&format!("seed{s}"));
        let prep = prepare(cfg, seed)?;
        prep_s += prep.seconds;
        col.run_seed(
            ctx,
            cfg,
            s,
            &prep,
            (prep.clean_map, &prep.schedules),
            |p, m| simulate(cfg, p, m, seed),
            serde_json::json!({
                "clean_map50": prep.clean_map,
                "teacher_clean_map50": prep.teacher_map,
                "teacher_drifted_map50": prep.teacher_map_drifted,
            }),
        )?;
    }
    let mut report = Report::new("adaevo", "underwater-synthetic", ctx.seed());
    col.finish(
        ctx,
        cfg,
        &methods,
        "average mAP@0.5 over the ends, every method (seed 0)",
        &mut report,
    )?;
    report.timings.insert("prepare_seconds".into(), prep_s);
    report
        .timings
        .insert("total_seconds".into(), t0.elapsed().as_secs_f64());
    col.insert_diagnostics();
    col.details
        .insert("paired_keys".into(), serde_json::json!(PAIRED_KEYS));
    report.details = serde_json::Value::Object(col.details);
    report.notes.push(format!(
        "detection task: accuracy = mAP@0.5 (COCO 101-point AP at IoU 0.5) of each end's current model on {} fresh rendered underwater frames per evaluation; QoE thresholds 90% and 80% of the factory compressed detector's clear-water mAP@0.5; estimate = CLC = mean(CC·LC) over the last {} frames; {} ends, {} s streams, {} seed(s); simulated clock (FLOPs / {} MFLOP/s shared), compute real",
        cfg.detect.eval_frames,
        cfg.mobile.window,
        cfg.stream.ends,
        cfg.stream.seconds,
        cfg.experiment.seeds,
        cfg.detect.throughput_mflops
    ));
    Ok(Outcome {
        report,
        curves: col.curves,
        paper: Vec::new(),
    })
}
