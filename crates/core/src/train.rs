//! The training loop. A system owns its step (model, optimiser, loss, batching); this loop
//! owns epochs, the learning-rate schedule, early stopping, the progress bar and the typed
//! callbacks (burn-train's split, FederatedScope's hook points without its untyped context).
//!
//! Each epoch has two phases, [`Phase::Train`] (batching and steps) and [`Phase::Eval`]
//! (validation); callbacks see both ends of each, which is where [`PhaseMemoryMonitor`]
//! measures the peak memory of training and of evaluation separately.

use crate::error::Result;
use crate::schedule::LrSchedule;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What one optimisation step reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct StepOutput {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Examples in the batch (the weight of `loss` in the epoch mean).
    pub examples: usize,
}

/// A system's side of training: how to batch an epoch, take a step, and validate.
pub trait TrainStep {
    /// One mini-batch, as the system represents it.
    type Batch;
    /// The batches of `epoch`, already shuffled by the system's own seeded generator.
    fn batches(&mut self, epoch: usize) -> Result<Vec<Self::Batch>>;
    /// One optimisation step at learning rate `lr`.
    fn step(&mut self, batch: Self::Batch, lr: f64) -> Result<StepOutput>;
    /// Validation metrics after an epoch (empty when there is no validation data).
    fn validate(&mut self) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }
    /// Called when the monitored metric improves, so the system can keep its best weights.
    fn save_best(&mut self) {}
    /// Called at the end when early stopping kept an earlier epoch's weights.
    fn restore_best(&mut self) {}
}

/// Whether larger or smaller is better for the monitored metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Larger is better (accuracy, AUC).
    Max,
    /// Smaller is better (loss).
    Min,
}

/// Stop when `metric` has not improved for `patience` epochs, then restore the best weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Name of a metric returned by [`TrainStep::validate`].
    pub metric: String,
    /// Direction of improvement.
    pub mode: Mode,
    /// Epochs without improvement before stopping.
    pub patience: usize,
}

/// What a callback may ask of the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep going.
    Continue,
    /// End training after this epoch.
    Stop,
}

/// The end of one batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchEnd {
    /// 0-based epoch.
    pub epoch: usize,
    /// 0-based batch within the epoch.
    pub batch: usize,
    /// The step's output.
    pub output: StepOutput,
    /// Learning rate used.
    pub lr: f64,
}

/// The end of one epoch.
#[derive(Debug, Clone)]
pub struct EpochEnd {
    /// 0-based epoch.
    pub epoch: usize,
    /// Example-weighted mean training loss.
    pub train_loss: f64,
    /// Validation metrics.
    pub valid: BTreeMap<String, f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Seconds the epoch took, validation included.
    pub seconds: f64,
}

impl EpochEnd {
    /// The record written to `metrics.jsonl`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("epoch".into(), self.epoch.into());
        m.insert("train_loss".into(), json_num(self.train_loss));
        m.insert("lr".into(), json_num(self.lr));
        m.insert("epoch_seconds".into(), json_num(self.seconds));
        for (k, v) in &self.valid {
            m.insert(k.clone(), json_num(*v));
        }
        serde_json::Value::Object(m)
    }
}

fn json_num(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// The two phases of an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// [`TrainStep::batches`] and every [`TrainStep::step`] of the epoch.
    Train,
    /// [`TrainStep::validate`].
    Eval,
}

/// The start of a phase.
#[derive(Debug, Clone, Copy)]
pub struct PhaseStart {
    /// 0-based epoch.
    pub epoch: usize,
    /// Which phase.
    pub phase: Phase,
}

/// The end of a phase.
#[derive(Debug, Clone, Copy)]
pub struct PhaseEnd {
    /// 0-based epoch.
    pub epoch: usize,
    /// Which phase.
    pub phase: Phase,
    /// Seconds the phase took (the start callbacks included, the end callbacks not).
    pub seconds: f64,
}

/// Typed hooks at the loop's fixed points.
pub trait Callback {
    /// Before a phase of an epoch.
    fn on_phase_start(&mut self, _ev: &PhaseStart) {}
    /// After a phase of an epoch.
    fn on_phase_end(&mut self, _ev: &PhaseEnd) {}
    /// After every optimisation step.
    fn on_batch_end(&mut self, _ev: &BatchEnd) {}
    /// After every epoch's validation.
    fn on_epoch_end(&mut self, _ev: &EpochEnd) -> Control {
        Control::Continue
    }
}

/// Collects every epoch record (for `metrics.jsonl` and the training-curve plots).
#[derive(Debug, Default, Clone)]
pub struct History {
    /// One record per epoch.
    pub epochs: Vec<EpochEnd>,
}

impl Callback for History {
    fn on_epoch_end(&mut self, ev: &EpochEnd) -> Control {
        self.epochs.push(ev.clone());
        Control::Continue
    }
}

/// Seconds spent in each phase over the whole fit.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PhaseTimes {
    /// Sum over epochs of the training phases.
    pub train_seconds: f64,
    /// Sum over epochs of the evaluations.
    pub eval_seconds: f64,
}

impl Callback for PhaseTimes {
    fn on_phase_end(&mut self, ev: &PhaseEnd) {
        match ev.phase {
            Phase::Train => self.train_seconds += ev.seconds,
            Phase::Eval => self.eval_seconds += ev.seconds,
        }
    }
}

/// Peak resident memory (MiB) of training and of evaluation, measured separately: the
/// kernel's high-water mark is reset before each phase and read after it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PhaseMemory {
    /// Resident memory when training started (the loaded data, the model, the runtime).
    pub before_mb: f64,
    /// Highest peak over the training phases of all epochs.
    pub train_peak_mb: f64,
    /// Highest peak over the evaluations.
    pub eval_peak_mb: f64,
}

/// Measures [`PhaseMemory`] as a callback: at each phase start it returns freed memory to
/// the system and resets the high-water mark, at each phase end it reads the mark. Nothing is
/// measured where the platform cannot report resident memory.
#[derive(Debug, Default, Clone)]
pub struct PhaseMemoryMonitor {
    memory: Option<PhaseMemory>,
    /// The mark was reset at the start of the current phase.
    armed: bool,
}

impl PhaseMemoryMonitor {
    /// Records the resident memory now as [`PhaseMemory::before_mb`]; create it just before
    /// [`Trainer::fit`].
    pub fn start() -> Self {
        crate::resources::release_free_memory();
        let memory = crate::resources::current_rss_mb().map(|before_mb| PhaseMemory {
            before_mb,
            ..Default::default()
        });
        PhaseMemoryMonitor {
            memory,
            armed: false,
        }
    }

    /// What was measured (`None` where resident memory is not measurable).
    pub fn memory(&self) -> Option<PhaseMemory> {
        self.memory
    }
}

impl Callback for PhaseMemoryMonitor {
    fn on_phase_start(&mut self, _ev: &PhaseStart) {
        if self.memory.is_some() {
            crate::resources::release_free_memory();
            self.armed = crate::resources::reset_peak_rss();
        }
    }

    fn on_phase_end(&mut self, ev: &PhaseEnd) {
        let armed = std::mem::take(&mut self.armed);
        if let (true, Some(m), Some(peak)) =
            (armed, self.memory.as_mut(), crate::resources::peak_rss_mb())
        {
            let slot = match ev.phase {
                Phase::Train => &mut m.train_peak_mb,
                Phase::Eval => &mut m.eval_peak_mb,
            };
            *slot = slot.max(peak);
        }
    }
}

/// Loop settings.
#[derive(Debug, Clone)]
pub struct Trainer {
    /// Maximum epochs.
    pub epochs: usize,
    /// Base learning rate.
    pub lr: f64,
    /// Schedule applied to `lr` per epoch.
    pub schedule: LrSchedule,
    /// Optional early stopping.
    pub early_stopping: Option<EarlyStopping>,
    /// Label of the progress bar.
    pub label: String,
}

/// How a fit ended.
#[derive(Debug, Clone)]
pub struct FitSummary {
    /// Epochs actually run.
    pub epochs_run: usize,
    /// Epoch whose weights were kept (the best under early stopping, else the last).
    pub best_epoch: usize,
    /// Best value of the monitored metric, when early stopping was on.
    pub best_metric: Option<f64>,
    /// Total seconds.
    pub seconds: f64,
}

impl Trainer {
    /// Runs the loop over `system`, calling `callbacks` at each fixed point.
    pub fn fit<S: TrainStep>(
        &self,
        system: &mut S,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<FitSummary> {
        let total = crate::resources::Stopwatch::start();
        let pb = crate::progress::bar(self.epochs as u64, self.label.clone());
        let mut best: Option<(usize, f64)> = None;
        let mut epochs_run = 0;
        for epoch in 0..self.epochs {
            let sw = crate::resources::Stopwatch::start();
            let lr = self.schedule.lr(self.lr, epoch);
            let phase = phase_start(callbacks, epoch, Phase::Train);
            let batches = system.batches(epoch)?;
            let (mut loss_sum, mut n) = (0.0, 0usize);
            for (b, batch) in batches.into_iter().enumerate() {
                let output = system.step(batch, lr)?;
                if !output.loss.is_finite() {
                    return Err(crate::CoreError::Runtime(format!(
                        "training diverged: loss {} at epoch {epoch}, batch {b} (try a lower learning rate)",
                        output.loss
                    )));
                }
                loss_sum += output.loss * output.examples as f64;
                n += output.examples;
                let ev = BatchEnd {
                    epoch,
                    batch: b,
                    output,
                    lr,
                };
                for cb in callbacks.iter_mut() {
                    cb.on_batch_end(&ev);
                }
            }
            phase_end(callbacks, epoch, Phase::Train, &phase);
            let phase = phase_start(callbacks, epoch, Phase::Eval);
            let valid = system.validate()?;
            phase_end(callbacks, epoch, Phase::Eval, &phase);
            epochs_run = epoch + 1;
            let ev = EpochEnd {
                epoch,
                train_loss: if n > 0 { loss_sum / n as f64 } else { f64::NAN },
                valid,
                lr,
                seconds: sw.seconds(),
            };
            let mut stop = false;
            for cb in callbacks.iter_mut() {
                stop |= cb.on_epoch_end(&ev) == Control::Stop;
            }
            if let Some(es) = &self.early_stopping {
                let value = ev.valid.get(&es.metric).copied().ok_or_else(|| {
                    crate::CoreError::Runtime(format!(
                        "early stopping monitors `{}`, which validation did not report (it reported: {:?})",
                        es.metric,
                        ev.valid.keys().collect::<Vec<_>>()
                    ))
                })?;
                let improved = match best {
                    None => true,
                    Some((_, b)) => match es.mode {
                        Mode::Max => value > b,
                        Mode::Min => value < b,
                    },
                };
                if improved {
                    best = Some((epoch, value));
                    system.save_best();
                } else if best.is_some_and(|(e, _)| epoch - e >= es.patience) {
                    stop = true;
                }
            }
            pb.set_position(epochs_run as u64);
            pb.set_message(format!("{} loss {:.4}", self.label, ev.train_loss));
            if stop {
                break;
            }
        }
        pb.finish_and_clear();
        let (best_epoch, best_metric) = match best {
            Some((e, v)) => {
                if e + 1 != epochs_run {
                    system.restore_best();
                }
                (e, Some(v))
            }
            None => (epochs_run.saturating_sub(1), None),
        };
        Ok(FitSummary {
            epochs_run,
            best_epoch,
            best_metric,
            seconds: total.seconds(),
        })
    }
}

/// Starts a phase's clock, then tells the callbacks.
fn phase_start(
    callbacks: &mut [&mut dyn Callback],
    epoch: usize,
    phase: Phase,
) -> crate::resources::Stopwatch {
    let sw = crate::resources::Stopwatch::start();
    let ev = PhaseStart { epoch, phase };
    for cb in callbacks.iter_mut() {
        cb.on_phase_start(&ev);
    }
    sw
}

fn phase_end(
    callbacks: &mut [&mut dyn Callback],
    epoch: usize,
    phase: Phase,
    sw: &crate::resources::Stopwatch,
) {
    let ev = PhaseEnd {
        epoch,
        phase,
        seconds: sw.seconds(),
    };
    for cb in callbacks.iter_mut() {
        cb.on_phase_end(&ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gradient descent on f(w) = (w - 3)^2 with a validation score that peaks at epoch 4.
    struct Quad {
        w: f64,
        epoch: usize,
        saved: Option<f64>,
        restored: bool,
    }

    impl TrainStep for Quad {
        type Batch = ();
        fn batches(&mut self, epoch: usize) -> Result<Vec<()>> {
            self.epoch = epoch;
            Ok(vec![(), ()])
        }
        fn step(&mut self, _: (), lr: f64) -> Result<StepOutput> {
            let g = 2.0 * (self.w - 3.0);
            self.w -= lr * g;
            Ok(StepOutput {
                loss: (self.w - 3.0).powi(2),
                examples: 1,
            })
        }
        fn validate(&mut self) -> Result<BTreeMap<String, f64>> {
            let score = -((self.epoch as f64) - 4.0).abs();
            Ok([("score".to_string(), score)].into())
        }
        fn save_best(&mut self) {
            self.saved = Some(self.w);
        }
        fn restore_best(&mut self) {
            self.restored = true;
            if let Some(w) = self.saved {
                self.w = w;
            }
        }
    }

    #[test]
    fn loop_trains_and_early_stops_at_the_best_epoch() {
        let mut q = Quad {
            w: 0.0,
            epoch: 0,
            saved: None,
            restored: false,
        };
        let t = Trainer {
            epochs: 50,
            lr: 0.1,
            schedule: LrSchedule::Constant,
            early_stopping: Some(EarlyStopping {
                metric: "score".into(),
                mode: Mode::Max,
                patience: 3,
            }),
            label: "test".into(),
        };
        let mut hist = History::default();
        let s = t.fit(&mut q, &mut [&mut hist]).unwrap();
        assert_eq!(s.best_epoch, 4);
        assert_eq!(s.epochs_run, 8);
        assert!(q.restored);
        assert_eq!(hist.epochs.len(), 8);
        assert!(hist.epochs[7].train_loss < hist.epochs[0].train_loss);
        assert_eq!(hist.epochs[0].to_json()["score"], -4.0);
    }

    /// Records the order of phase events.
    #[derive(Default)]
    struct Phases(Vec<(usize, Phase, bool)>);

    impl Callback for Phases {
        fn on_phase_start(&mut self, ev: &PhaseStart) {
            self.0.push((ev.epoch, ev.phase, true));
        }
        fn on_phase_end(&mut self, ev: &PhaseEnd) {
            assert!(ev.seconds >= 0.0);
            self.0.push((ev.epoch, ev.phase, false));
        }
    }

    #[test]
    fn phases_bracket_training_and_validation_of_every_epoch() {
        let mut q = Quad {
            w: 0.0,
            epoch: 0,
            saved: None,
            restored: false,
        };
        let t = Trainer {
            epochs: 2,
            lr: 0.1,
            schedule: LrSchedule::Constant,
            early_stopping: None,
            label: "test".into(),
        };
        // 25 ms after each of the 4 optimisation steps: time the train phase must hold and
        // the eval phase must not (a swap of the two would show).
        struct SlowBatches;
        impl Callback for SlowBatches {
            fn on_batch_end(&mut self, _: &BatchEnd) {
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
        }
        let (mut phases, mut times) = (Phases::default(), PhaseTimes::default());
        let mut memory = PhaseMemoryMonitor::start();
        t.fit(
            &mut q,
            &mut [&mut phases, &mut times, &mut memory, &mut SlowBatches],
        )
        .unwrap();
        use Phase::{Eval, Train};
        assert_eq!(
            phases.0,
            [
                (0, Train, true),
                (0, Train, false),
                (0, Eval, true),
                (0, Eval, false),
                (1, Train, true),
                (1, Train, false),
                (1, Eval, true),
                (1, Eval, false),
            ]
        );
        assert!(
            times.train_seconds >= 0.1 && times.eval_seconds < times.train_seconds,
            "{times:?}"
        );
        // Linux reads the kernel's high-water mark; elsewhere there is nothing to measure.
        #[cfg(target_os = "linux")]
        assert!(memory.memory().is_some_and(|m| m.before_mb > 0.0));
    }

    #[test]
    fn divergence_is_an_error_not_a_nan_report() {
        let mut q = Quad {
            w: 0.0,
            epoch: 0,
            saved: None,
            restored: false,
        };
        let t = Trainer {
            epochs: 500,
            lr: 5.0,
            schedule: LrSchedule::Constant,
            early_stopping: None,
            label: "test".into(),
        };
        let e = t.fit(&mut q, &mut []).unwrap_err().to_string();
        assert!(e.contains("diverged"), "{e}");
    }

    #[test]
    fn a_missing_monitored_metric_is_reported() {
        let mut q = Quad {
            w: 0.0,
            epoch: 0,
            saved: None,
            restored: false,
        };
        let t = Trainer {
            epochs: 3,
            lr: 0.1,
            schedule: LrSchedule::Constant,
            early_stopping: Some(EarlyStopping {
                metric: "acc".into(),
                mode: Mode::Max,
                patience: 1,
            }),
            label: "test".into(),
        };
        assert!(
            t.fit(&mut q, &mut [])
                .unwrap_err()
                .to_string()
                .contains("`acc`")
        );
    }
}
