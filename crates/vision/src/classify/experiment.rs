//! `ferrolab classify`'s experiment: the data, one network trained by SGD through core's loop
//! with a training-state checkpoint after every epoch, the test evaluation and the report.
//!
//! Determinism and resuming: every random choice of an epoch is drawn from a generator seeded
//! by the run's seed and the epoch (batch order) or the epoch and batch (augmentation), never
//! from a generator carried across epochs, and the model and SGD momentum are saved exactly
//! (burnpack, f32) after each epoch. A run continued with `--resume` therefore trains the
//! remaining epochs exactly as the uninterrupted run would have (a test checks the weights
//! are bit-identical). Core's loop counts epochs from 0 and applies its schedule to that
//! count, so a resumed fit runs the remaining epochs under a constant base rate and the step
//! applies the real schedule at the absolute epoch itself.

use super::checkpoint::{self, EpochRecord, Meta, TrainState};
use super::config::ClassifyConfig;
use super::model::{Net, NetSpec};
use crate::augment::{ClassifyAugment, Image};
use crate::data::{self, FASHION_CLASSES, ImageSet, Normalization, Splits};
use crate::optim::FusedSgdConfig;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use ferrolab_core::resources::Stopwatch;
use ferrolab_core::run::{Curve, Outcome, Report, RunDir};
use ferrolab_core::schedule::LrSchedule;
use ferrolab_core::train::{PhaseMemoryMonitor, StepOutput, TrainStep, Trainer};
use ferrolab_core::{Checked, RunContext, SysResult, SystemError};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The data of a run, split and with its normalisation.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Train / validation / test images.
    pub splits: Splits,
    /// Standardisation from the training images.
    pub normalization: Normalization,
    /// Dataset name in the report.
    pub dataset: String,
    /// Where the images came from and how they were split.
    pub notes: Vec<String>,
}

/// Loads and splits the configured images. Missing or malformed files are data errors
/// (exit status 2) naming the file; the validation split is seeded by `split_seed`.
pub fn prepare(
    cfg: &ClassifyConfig,
    data_dir: Option<&Path>,
    split_seed: u64,
) -> SysResult<Prepared> {
    let d = &cfg.data;
    let (train, test, source) = if d.dataset == "synthetic" {
        // Fixed data seeds: the images do not change with --seed, only the split and the
        // training draws do (as with a real data file).
        (
            data::synthetic(d.synthetic_train, 28, 1),
            data::synthetic(d.synthetic_test, 28, 2),
            "generated strokes (one orientation per class)".to_string(),
        )
    } else {
        let dir = match &d.dir {
            Some(p) => PathBuf::from(p),
            None => ferrolab_data::lookup::find_dataset(data_dir, "fashion-mnist")?,
        };
        let (train, test) = data::load_fashion_mnist(&dir)?;
        (train, test, dir.display().to_string())
    };
    if d.val_size >= train.len() {
        return Err(SystemError::usage(format!(
            "data.val_size = {} leaves no training images: the training file has {}",
            d.val_size,
            train.len()
        )));
    }
    let (train, val) = data::validation_split(&train, d.val_size, split_seed);
    let train = train.head(d.train_limit);
    let test = test.head(d.test_limit);
    let normalization = Normalization::of(&train);
    let notes = vec![format!(
        "{}: {} training, {} validation (seeded hold-out of the training file), {} test images from {source}; inputs standardised with the training images' mean {:.4} and std {:.4}",
        d.dataset,
        train.len(),
        val.len(),
        test.len(),
        normalization.mean,
        normalization.std
    )];
    Ok(Prepared {
        splits: Splits { train, val, test },
        normalization,
        dataset: d.dataset.clone(),
        notes,
    })
}

/// Model inputs `[n, 1, h, w]` for the images `idx` of `set`, standardised.
fn input(set: &ImageSet, idx: &[usize], norm: Normalization, device: &Device) -> Tensor<4> {
    let mut v = Vec::with_capacity(idx.len() * set.height * set.width);
    for &i in idx {
        v.extend(
            set.image(i)
                .iter()
                .map(|&p| norm.apply(f32::from(p) / 255.0)),
        );
    }
    Tensor::from_data(
        TensorData::new(v, [idx.len(), 1, set.height, set.width]),
        device,
    )
}

/// Class probabilities `[n][classes]` of `set` under `model` (evaluation mode, no autodiff).
pub fn predict_proba(
    model: &Net,
    set: &ImageSet,
    norm: Normalization,
    batch: usize,
) -> Vec<Vec<f32>> {
    let device = ferrolab_core::backend::device();
    let all: Vec<usize> = (0..set.len()).collect();
    let mut out = Vec::with_capacity(set.len());
    for chunk in all.chunks(batch.max(1)) {
        let logits = model.forward(input(set, chunk, norm, &device));
        let classes = logits.dims()[1];
        let p = ferrolab_core::nn::to_vec_f32(burn::tensor::activation::softmax(logits, 1));
        out.extend(p.chunks(classes).map(<[f32]>::to_vec));
    }
    out
}

fn argmax(p: &[f32]) -> usize {
    p.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Accuracy of `model` (in evaluation mode) on a labelled set.
pub fn accuracy(model: &Net, set: &ImageSet, norm: Normalization, batch: usize) -> f64 {
    let pred: Vec<usize> = predict_proba(model, set, norm, batch)
        .iter()
        .map(|p| argmax(p))
        .collect();
    let labels: Vec<usize> = set.labels.iter().map(|&l| usize::from(l)).collect();
    ferrolab_core::metrics::accuracy(&pred, &labels)
}

/// SGD as configured (PyTorch semantics: no dampening, weight decay added to the gradient),
/// one fused pass per parameter; its record is burn `Sgd`'s, so older checkpoints resume.
fn optimizer(cfg: &ClassifyConfig) -> ModuleOptimizer {
    FusedSgdConfig::default()
        .with_momentum(cfg.optim.momentum.max(0.0))
        .with_nesterov(cfg.optim.nesterov && cfg.optim.momentum > 0.0)
        .with_weight_decay(cfg.train.weight_decay.max(0.0))
        .init()
}

/// The system's side of core's loop.
struct Fit<'a> {
    model: Option<Net>,
    optim: ModuleOptimizer,
    data: &'a Prepared,
    augment: ClassifyAugment,
    batch_size: usize,
    eval_batch: usize,
    seed: u64,
    /// Epochs finished before this fit (a resumed run).
    start: usize,
    /// Absolute epoch being trained.
    epoch: usize,
    schedule: LrSchedule,
    base_lr: f64,
    device: Device,
    epoch_clock: Option<Stopwatch>,
    loss_sum: f64,
    correct: usize,
    seen: usize,
    state: TrainState,
    run: &'a mut RunDir,
}

impl Fit<'_> {
    fn lr(&self) -> f64 {
        self.schedule.lr(self.base_lr, self.epoch)
    }
}

impl TrainStep for Fit<'_> {
    type Batch = (usize, Vec<usize>);

    fn batches(&mut self, rel: usize) -> ferrolab_core::Result<Vec<(usize, Vec<usize>)>> {
        self.epoch = self.start + rel;
        self.epoch_clock = Some(Stopwatch::start());
        (self.loss_sum, self.correct, self.seen) = (0.0, 0, 0);
        let mut order: Vec<usize> = (0..self.data.splits.train.len()).collect();
        let s = ferrolab_core::seed::derive(self.seed, &format!("order-{}", self.epoch));
        order.shuffle(&mut StdRng::seed_from_u64(s));
        Ok(order
            .chunks(self.batch_size)
            .map(<[usize]>::to_vec)
            .enumerate()
            .collect())
    }

    fn step(
        &mut self,
        (b, idx): (usize, Vec<usize>),
        _lr: f64,
    ) -> ferrolab_core::Result<StepOutput> {
        let lr = self.lr();
        let model = self.model.take().ok_or_else(|| {
            ferrolab_core::CoreError::Runtime("model lost after a failed step".into())
        })?;
        let set = &self.data.splits.train;
        let norm = self.data.normalization;
        let (h, w) = (set.height, set.width);
        let s = ferrolab_core::seed::derive(self.seed, &format!("augment-{}-{b}", self.epoch));
        let mut rng = StdRng::seed_from_u64(s);
        let mut x = Vec::with_capacity(idx.len() * h * w);
        for &i in &idx {
            let img = Image {
                channels: 1,
                height: h,
                width: w,
                data: set.image(i).iter().map(|&p| f32::from(p) / 255.0).collect(),
            };
            // Augmenting raw grey levels pads with black, the images' own background.
            let img = self.augment.apply(&img, &mut rng);
            x.extend(img.data.iter().map(|&v| norm.apply(v)));
        }
        let x = Tensor::<4>::from_data(TensorData::new(x, [idx.len(), 1, h, w]), &self.device);
        let labels: Vec<i64> = idx.iter().map(|&i| i64::from(set.labels[i])).collect();
        let y =
            Tensor::<1, Int>::from_data(TensorData::new(labels.clone(), [idx.len()]), &self.device);
        let (device, optim) = (&self.device, &mut self.optim);
        // The step runs on a pool worker (`backend::in_pool`): its several hundred parallel
        // loops then start without waking this thread each time.
        let (pred, loss_value, model) = ferrolab_core::backend::in_pool(|| {
            let logits = model.forward(x);
            let pred = ferrolab_core::nn::to_vec_i64(logits.clone().detach().argmax(1));
            let loss = CrossEntropyLossConfig::new()
                .init(device)
                .forward(logits, y);
            let loss_value = f64::from(ferrolab_core::nn::to_vec_f32(loss.clone())[0]);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            (pred, loss_value, optim.step(lr, model, grads))
        });
        self.correct += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
        self.seen += idx.len();
        self.model = Some(model);
        self.loss_sum += loss_value * idx.len() as f64;
        Ok(StepOutput {
            loss: loss_value,
            examples: idx.len(),
        })
    }

    /// Validation accuracy, then the epoch's training state and its `metrics.jsonl` line.
    fn validate(&mut self) -> ferrolab_core::Result<BTreeMap<String, f64>> {
        let model = self.model.as_ref().ok_or_else(|| {
            ferrolab_core::CoreError::Runtime("model lost after a failed step".into())
        })?;
        let val = &self.data.splits.val;
        let val_accuracy = (!val.is_empty()).then(|| {
            accuracy(
                &model.valid(),
                val,
                self.data.normalization,
                self.eval_batch,
            )
        });
        let record = EpochRecord {
            epoch: self.epoch,
            lr: self.lr(),
            train_loss: self.loss_sum / self.seen.max(1) as f64,
            train_accuracy: self.correct as f64 / self.seen.max(1) as f64,
            val_accuracy,
            epoch_seconds: self.epoch_clock.as_ref().map_or(0.0, Stopwatch::seconds),
        };
        self.state.history.push(record.clone());
        self.state.epochs_done = self.epoch + 1;
        self.state.folder = format!("epoch-{:04}", self.epoch + 1);
        checkpoint::save_state(self.run.path(), model, &self.optim, &self.state)
            .map_err(|e| ferrolab_core::CoreError::Runtime(e.to_string()))?;
        let line = serde_json::to_value(&record)
            .map_err(|e| ferrolab_core::CoreError::Runtime(e.to_string()))?;
        self.run.log_metrics(&line)?;
        Ok(val_accuracy
            .map(|a| ("val_accuracy".to_string(), a))
            .into_iter()
            .collect())
    }
}

/// The network a configuration describes, for images of `set`'s size.
pub fn spec(cfg: &ClassifyConfig, set: &ImageSet) -> NetSpec {
    NetSpec {
        arch: cfg.model.arch.clone(),
        channels: 1,
        height: set.height,
        width: set.width,
        classes: FASHION_CLASSES.len(),
        mlp_hidden: cfg.model.mlp_hidden.clone(),
    }
}

/// Runs the experiment (see [`run_for`]).
pub fn run(cfg: &Checked<ClassifyConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    run_for(cfg, ctx, None)
}

/// Runs the experiment, continuing from the run folder's training state when it has one.
/// With `max_epochs = Some(k)` at most `k` epochs are trained in this call and a run that is
/// not finished by then ends with a runtime error, leaving its state to `--resume` (what a
/// kill does; tests use it to check that resuming changes nothing).
pub fn run_for(
    cfg: &Checked<ClassifyConfig>,
    ctx: &mut RunContext,
    max_epochs: Option<usize>,
) -> SysResult<Outcome> {
    let total_clock = Stopwatch::start();
    let seed = ctx.seed();
    let prepared = prepare(cfg, ctx.data_dir(), ctx.seed_for("split"))?;
    let spec = spec(cfg, &prepared.splits.train);
    let device = ferrolab_core::backend::train_device();
    // The whole experiment holds the backend's generator (core's rule for experiments): two
    // runs in one process (parallel tests, a user's threads) then cannot interleave.
    let _rng = ferrolab_core::backend::exclusive_rng();
    ferrolab_core::backend::seed_backend(ctx.seed_for("init"));
    let model = spec.build(&device).map_err(SystemError::usage)?;
    let params = model.num_params();
    let run_path = ctx.run_dir().path().to_path_buf();
    let (state, model, optim) =
        match checkpoint::load_state(&run_path, model.clone(), optimizer(cfg))? {
            Some((s, m, o)) => {
                eprintln!(
                    "resume: continuing after epoch {} of {} ({})",
                    s.epochs_done,
                    cfg.train.epochs,
                    checkpoint::state_dir(&run_path).display()
                );
                (s, m, o)
            }
            None => (
                TrainState {
                    epochs_done: 0,
                    folder: String::new(),
                    history: Vec::new(),
                },
                model,
                optimizer(cfg),
            ),
        };
    // A kill between saving an epoch's state and appending its `metrics.jsonl` line leaves the
    // file one line short; the state's history has every epoch, so the missing lines come back
    // from it (CI once saw 2 lines for 3 epochs after a kill and resume).
    let logged = match std::fs::read_to_string(run_path.join("metrics.jsonl")) {
        Ok(t) => t.lines().filter(|l| !l.trim().is_empty()).count(),
        Err(_) => 0,
    };
    for record in state.history.iter().skip(logged) {
        let line = serde_json::to_value(record)
            .map_err(|e| SystemError::runtime(format!("metrics.jsonl record: {e}")))?;
        ctx.run_dir().log_metrics(&line)?;
    }
    let start = state.epochs_done.min(cfg.train.epochs);
    let remaining = cfg.train.epochs - start;
    let this_call = max_epochs.map_or(remaining, |k| k.min(remaining));
    let mut memory = PhaseMemoryMonitor::start();
    let trainer = Trainer {
        epochs: this_call,
        lr: cfg.train.lr,
        schedule: LrSchedule::Constant,
        early_stopping: None,
        label: format!("classify {}", cfg.model.arch),
    };
    let (model, history) = {
        let mut fit = Fit {
            model: Some(model),
            optim,
            data: &prepared,
            augment: ClassifyAugment {
                pad: cfg.augment.pad,
                flip: cfg.augment.flip,
            },
            batch_size: cfg.train.batch_size,
            eval_batch: cfg.optim.eval_batch,
            seed,
            start,
            epoch: start,
            schedule: cfg.schedule(),
            base_lr: cfg.train.lr,
            device,
            epoch_clock: None,
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            state,
            run: ctx.run_dir(),
        };
        trainer.fit(&mut fit, &mut [&mut memory])?;
        let model = fit
            .model
            .take()
            .ok_or_else(|| SystemError::runtime("training lost its model"))?;
        (model, fit.state.history)
    };
    if start + this_call < cfg.train.epochs {
        return Err(SystemError::runtime(format!(
            "stopped after epoch {} of {}; continue with --resume {}",
            start + this_call,
            cfg.train.epochs,
            run_path.display()
        )));
    }
    let eval_clock = Stopwatch::start();
    let model = model.valid();
    let norm = prepared.normalization;
    let test_accuracy = accuracy(&model, &prepared.splits.test, norm, cfg.optim.eval_batch);
    let test_seconds = eval_clock.seconds();
    let meta = Meta::new(
        spec.clone(),
        norm,
        FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
    );
    checkpoint::save(&run_path.join("checkpoint"), &model, &meta)?;
    Ok(report(
        cfg,
        &prepared,
        &history,
        test_accuracy,
        params,
        &memory,
        seed,
        (total_clock.seconds(), test_seconds),
    ))
}

#[allow(clippy::too_many_arguments)]
fn report(
    cfg: &ClassifyConfig,
    prepared: &Prepared,
    history: &[EpochRecord],
    test_accuracy: f64,
    params: usize,
    memory: &PhaseMemoryMonitor,
    seed: u64,
    (total_seconds, test_seconds): (f64, f64),
) -> Outcome {
    let mut r = Report::new("classify", &prepared.dataset, seed);
    let m = &mut r.metrics;
    m.insert("test_accuracy".into(), test_accuracy);
    if let Some(v) = history.last().and_then(|h| h.val_accuracy) {
        m.insert("val_accuracy".into(), v);
    }
    if let Some(best) = history
        .iter()
        .filter_map(|h| h.val_accuracy)
        .max_by(f64::total_cmp)
    {
        m.insert("best_val_accuracy".into(), best);
    }
    if let Some(last) = history.last() {
        m.insert("train_loss".into(), last.train_loss);
        m.insert("train_accuracy".into(), last.train_accuracy);
    }
    let secs: Vec<f64> = history.iter().map(|h| h.epoch_seconds).collect();
    if !secs.is_empty() {
        m.insert(
            "epoch_seconds".into(),
            secs.iter().sum::<f64>() / secs.len() as f64,
        );
    }
    m.insert("epochs".into(), history.len() as f64);
    if let Some(mem) = memory.memory() {
        let peak = mem
            .train_peak_mb
            .max(mem.eval_peak_mb)
            .max(ferrolab_core::resources::peak_rss_mb().unwrap_or(0.0));
        m.insert("peak_rss_mb".into(), peak);
        m.insert("train_peak_rss_mb".into(), mem.train_peak_mb);
        m.insert("eval_peak_rss_mb".into(), mem.eval_peak_mb);
    }
    r.timings.insert("total_seconds".into(), total_seconds);
    r.timings.insert("test_seconds".into(), test_seconds);
    r.timings
        .insert("train_seconds".into(), secs.iter().sum::<f64>());
    r.details = serde_json::json!({
        "arch": cfg.model.arch,
        "params": params,
        "train_images": prepared.splits.train.len(),
        "val_images": prepared.splits.val.len(),
        "test_images": prepared.splits.test.len(),
        "normalization": prepared.normalization,
        "history": history,
    });
    r.notes = prepared.notes.clone();
    r.notes.push(format!(
        "{} ({params} parameters): SGD lr {} ({} schedule), momentum {}, weight decay {}, batch {}, {} epochs; pad-crop {} and {} flips",
        cfg.model.arch,
        cfg.train.lr,
        cfg.optim.schedule,
        cfg.optim.momentum,
        cfg.train.weight_decay,
        cfg.train.batch_size,
        cfg.train.epochs,
        cfg.augment.pad,
        if cfg.augment.flip { "horizontal" } else { "no" },
    ));
    let curve = |y: &str, f: &dyn Fn(&EpochRecord) -> Option<f64>| Curve {
        label: cfg.model.arch.clone(),
        y_name: y.into(),
        points: history
            .iter()
            .filter_map(|h| f(h).map(|v| ((h.epoch + 1) as f64, v)))
            .collect(),
    };
    let curves = vec![
        curve("val_accuracy", &|h| h.val_accuracy),
        curve("train_loss", &|h| Some(h.train_loss)),
    ];
    Outcome {
        report: r,
        curves,
        paper: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tiny(arch: &str, epochs: usize) -> Checked<ClassifyConfig> {
        let mut c = ClassifyConfig::default();
        c.data.dataset = "synthetic".into();
        c.data.synthetic_train = 700;
        c.data.synthetic_test = 200;
        c.data.val_size = 100;
        c.model.arch = arch.into();
        c.model.mlp_hidden = vec![32];
        c.train.epochs = epochs;
        c.train.batch_size = 50;
        c.train.lr = 0.05;
        Checked::new(c).unwrap()
    }

    fn tmp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("ferrolab-classify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn ctx(dir: &Path, fresh: bool) -> RunContext {
        let run = if fresh {
            RunDir::create(dir).unwrap()
        } else {
            RunDir::reopen(dir).unwrap()
        };
        RunContext::new(3, 1, None, run)
    }

    #[test]
    fn trains_well_above_chance_and_writes_a_loadable_checkpoint() {
        let d = tmp("train");
        let cfg = tiny("mlp", 3);
        let o = run(&cfg, &mut ctx(&d, true)).unwrap();
        let acc = o.report.metrics["test_accuracy"];
        assert!(acc > 0.5, "10 classes, chance 0.1: {acc}");
        assert!(o.report.metrics["epoch_seconds"] > 0.0);
        let lines = std::fs::read_to_string(d.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 3);
        let (net, meta) = checkpoint::load(&d.join("checkpoint")).unwrap();
        assert_eq!(meta.spec.arch, "mlp");
        let p = prepare(&cfg, None, 0).unwrap();
        let again = accuracy(&net, &p.splits.test, meta.normalization, 64);
        assert!((again - acc).abs() < 1e-9, "{again} {acc}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn a_resumed_run_ends_exactly_where_an_uninterrupted_one_does() {
        // A private one-thread pool: in the shared pool, other tests' work changes how rayon
        // splits the backend's parallel reductions, and the float sums then differ in the last
        // bits between the two runs (seen once in ~8 runs on a loaded machine).
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(resumed_equals_straight);
    }

    fn resumed_equals_straight() {
        // A convolutional net with batch norm: running statistics and momentum must survive.
        let cfg = tiny("resnet8", 2);
        let a = tmp("straight");
        let straight = run(&cfg, &mut ctx(&a, true)).unwrap();
        let b = tmp("resumed");
        let e = run_for(&cfg, &mut ctx(&b, true), Some(1)).unwrap_err();
        assert!(e.to_string().contains("--resume"), "{e}");
        assert!(!b.join("checkpoint").exists());
        let resumed = run(&cfg, &mut ctx(&b, false)).unwrap();
        let (sm, rm) = (&straight.report.metrics, &resumed.report.metrics);
        assert_eq!(sm["test_accuracy"], rm["test_accuracy"]);
        assert_eq!(sm["train_loss"], rm["train_loss"]);
        assert_eq!(sm["val_accuracy"], rm["val_accuracy"]);
        // Every tensor, batch-norm statistics included, bit for bit.
        let weights = |d: &Path| {
            use burn::store::ModuleSnapshot;
            let (net, _) = checkpoint::load(&d.join("checkpoint")).unwrap();
            net.collect(None, None, false)
                .into_iter()
                .map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec()))
                .collect::<BTreeMap<_, _>>()
        };
        let (wa, wb) = (weights(&a), weights(&b));
        assert!(wa.len() > 10);
        assert!(wa == wb, "weights differ after resuming");
        // Both epochs are in the resumed run's metrics, once each.
        let lines = std::fs::read_to_string(b.join("metrics.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 2, "{lines}");
        std::fs::remove_dir_all(&a).ok();
        std::fs::remove_dir_all(&b).ok();
    }
}
