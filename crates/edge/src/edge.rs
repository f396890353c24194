//! The edge server: accepts evolution tasks, labels their frames with the teacher (ground
//! truth is never used for training), profiles them, schedules them on its limited memory and
//! compute, retrains, re-compresses and ships model versions.
//!
//! Time is the caller's: [`EdgeServer::submit`] at a task's arrival, [`EdgeServer::schedule`]
//! after every arrival or completion, and [`EdgeServer::advance`] to move the clock; the
//! running tasks share the configured throughput equally (processor sharing), so a task's
//! simulated duration is its counted FLOPs over its share. The retraining itself runs for
//! real when a task starts; its result ships when its simulated time is up. The net layer's
//! edge process drives the same calls with the wall clock.

use crate::model::{Mlp, TrainOpts, TrainStats};
use crate::profiler::{AccuracyCurve, TimeRecord, TimeRegressor, model_memory_bytes};
use crate::protocol::{ModelBlob, ProtocolError, TaskRequest, prune};
use crate::scheduler::{self, Candidate, Start, Variant};
use crate::stream::{SIDE, to_input};
use crate::teacher::Teacher;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How queued tasks are picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerKind {
    /// The knapsack DP on profiled values.
    Knapsack,
    /// First come, first served.
    Fifo,
}

impl SchedulerKind {
    /// Whether a task variant needing `memory` bytes could start on an idle edge of `total`
    /// bytes: the knapsack counts whole `unit`s, FIFO bytes.
    pub fn fits_idle(self, memory: u64, total: u64, unit: u64) -> bool {
        match self {
            SchedulerKind::Knapsack => scheduler::fits_units(memory, total, unit),
            SchedulerKind::Fifo => memory <= total,
        }
    }

    /// Refuses a task none of whose `variants` could ever start on the idle edge: queued, it
    /// would wait for ever (and under FIFO's head-of-line rule block every task behind it).
    pub fn admit(
        self,
        variants: &[Variant],
        total: u64,
        unit: u64,
        req: &TaskRequest,
    ) -> Result<(), ProtocolError> {
        if variants
            .iter()
            .any(|v| self.fits_idle(v.memory, total, unit))
        {
            return Ok(());
        }
        let need = variants.iter().map(|v| v.memory).min().unwrap_or(0);
        Err(ProtocolError::Declined(format!(
            "end {} task {}: needs {need} bytes of training memory, the edge has {total}",
            req.end, req.seq
        )))
    }
}

/// Settings of the edge.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeParams {
    /// FLOP per simulated second.
    pub throughput: f64,
    /// Training memory, bytes.
    pub memory: u64,
    /// DP memory unit, bytes.
    pub memory_unit: u64,
    /// Tasks running at once at most.
    pub max_concurrent: usize,
    /// Epoch budgets offered with the profiler.
    pub epochs: Vec<usize>,
    /// Epochs without the profiler / under FIFO.
    pub fixed_epochs: usize,
    /// Probe epochs.
    pub probe_epochs: usize,
    /// Mini-batch.
    pub batch: usize,
    /// Step size.
    pub lr: f32,
    /// Replay frames per end.
    pub replay: usize,
    /// Workspace bytes per task.
    pub workspace: u64,
    /// Pruned fraction.
    pub sparsity: f64,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Whether the profiler informs the scheduler (else worst-case memory, equal values).
    pub profiler: bool,
    /// Training seed.
    pub seed: u64,
    /// Samples of the model's original training set (the edge has it; not the ends' streams)
    /// mixed into every retraining so an evolved model does not forget the conditions the
    /// next drift may bring back.
    pub anchor: Vec<(Vec<f32>, u8)>,
    /// Anchor samples per task.
    pub anchor_per_task: usize,
    /// Shifted copies of every uploaded frame added to its task (0–4: one input pixel
    /// right, left, down, up), with the teacher's label of the frame: a hundred frames are
    /// few to learn a new condition from, and a shift keeps both the class and the condition.
    pub augment: usize,
    /// Uploaded frames the teacher labels with a lower top probability are left out of the
    /// task (its likely wrong labels would be learnt); the most confident
    /// [`MIN_LABELLED`] are kept whatever their confidence. 0 keeps every frame.
    pub label_min_confidence: f64,
    /// The model a task retrains from.
    pub base: Base,
    /// With the profiler, tasks predicted to gain less than this are declined.
    pub min_gain: f64,
}

/// The model a task retrains from (`edge.base`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    /// The end's latest evolved model: adaptations accumulate.
    Current,
    /// The end's factory model: every task adapts the original model to the new condition.
    Factory,
    /// Whichever of the two labels the task's uploaded frames more like the teacher (ties go
    /// to the current model): a model adapted to an earlier condition can be worse on the new
    /// one than the factory model was.
    Best,
}

impl Base {
    /// Parses `edge.base` (validated by the configuration).
    pub fn parse(name: &str) -> Base {
        match name {
            "factory" => Base::Factory,
            "best" => Base::Best,
            _ => Base::Current,
        }
    }
}

/// Whether a task with teacher-labelled `data` retrains from the end's factory model rather
/// than its `current` one under `base`.
pub fn retrain_from_factory(
    base: Base,
    current: &Mlp,
    factory: &Mlp,
    data: &[(Vec<f32>, u8)],
) -> bool {
    match base {
        Base::Current => false,
        Base::Factory => true,
        Base::Best => {
            let agree = |m: &Mlp| {
                data.iter()
                    .filter(|(x, y)| crate::model::argmax(&m.forward(x).probs) == *y as usize)
                    .count()
            };
            agree(factory) > agree(current)
        }
    }
}

/// Input-pixel shifts of the augmented copies, in the order `edge.augment` takes them.
pub const SHIFTS: [(i32, i32); 4] = [(1, 0), (-1, 0), (0, 1), (0, -1)];

/// A model input (14×14) moved by `(dx, dy)` pixels, the border row/column repeated.
pub fn shifted(x: &[f32], dx: i32, dy: i32) -> Vec<f32> {
    let n = crate::stream::INPUT_SIDE as i32;
    let mut out = Vec::with_capacity(x.len());
    for r in 0..n {
        for c in 0..n {
            let (sr, sc) = ((r - dy).clamp(0, n - 1), (c - dx).clamp(0, n - 1));
            out.push(x.get((sr * n + sc) as usize).copied().unwrap_or(0.0));
        }
    }
    out
}

/// Frames a task keeps at least after the teacher-confidence filter.
pub const MIN_LABELLED: usize = 8;

/// A task waiting for the edge; `P` is its training material (classification: [`Material`];
/// detection: its teacher-labelled frames).
#[derive(Debug, Clone)]
pub(crate) struct Queued<P> {
    pub(crate) id: usize,
    pub(crate) req: TaskRequest,
    pub(crate) arrival: f64,
    pub(crate) variants: Vec<Variant>,
    pub(crate) predicted_acc: Vec<f64>,
    pub(crate) a0: f64,
    pub(crate) label_flops: f64,
    pub(crate) probe_flops: f64,
    pub(crate) memory_pred: u64,
    pub(crate) material: P,
}

/// What a classification task trains on.
#[derive(Debug, Clone)]
struct Material {
    /// The model this task retrains from (`edge.base`), fixed when it is accepted.
    base: Mlp,
    data: Frames,
    /// Shifted copies of `data` (trained on, not replayed).
    extra: Frames,
}

/// The settings both edges schedule by.
pub(crate) struct Knobs<'a> {
    pub(crate) memory: u64,
    pub(crate) memory_unit: u64,
    pub(crate) max_concurrent: usize,
    pub(crate) profiler: bool,
    pub(crate) throughput: f64,
    pub(crate) scheduler: SchedulerKind,
    pub(crate) epochs: &'a [usize],
    pub(crate) fixed_epochs: usize,
}

/// A task the scheduler starts: the variant chosen and the accuracy gain predicted for it.
pub(crate) struct Pick<P> {
    pub(crate) q: Queued<P>,
    pub(crate) variant: Variant,
    pub(crate) predicted_gain: f64,
}

/// The body of both edges' `schedule`: their settings, queues, clocks and `start` are named
/// alike but typed apart, so one macro serves where a function would need a trait over both
/// servers.
macro_rules! schedule_step {
    ($edge:ident, $now:expr) => {{
        let p = &$edge.params;
        let knobs = $crate::edge::Knobs {
            memory: p.memory,
            memory_unit: p.memory_unit,
            max_concurrent: p.max_concurrent,
            profiler: p.profiler,
            throughput: p.throughput,
            scheduler: p.scheduler,
            epochs: &p.epochs,
            fixed_epochs: p.fixed_epochs,
        };
        let (picks, conc) = $crate::edge::pick_starts(
            &mut $edge.queue,
            &$edge.running,
            &$edge.time,
            &knobs,
            $now,
            &mut $edge.starts_total,
            &mut $edge.starts_bypassing,
        );
        for pk in picks {
            $edge.start(pk.q, pk.variant, pk.predicted_gain, $now, conc);
        }
    }};
}
pub(crate) use schedule_step;

/// A task's measured training memory: the heap peak of its training phase (with
/// [`ferrolab_core::alloc::PeakAlloc`] installed, as the `ferrolab` binary has it) plus the
/// parameters of the model it trains and the configured workspace. Without the counting
/// allocator, the buffers training allocates by their sizes stand in.
pub(crate) fn measured_memory(
    st: &TrainStats,
    heap: Option<u64>,
    model: &Mlp,
    workspace: u64,
) -> u64 {
    match heap {
        Some(h) => h + 4 * model.params() as u64 + workspace,
        None => st.peak_bytes + workspace,
    }
}

/// `edge.min_gain` (0: off): a task whose best predicted gain over the deployed model's `a0`
/// (of `metric`, as the edge scores it) is below it is declined. Shared by both edges.
pub(crate) fn check_min_gain(
    predicted: &[f64],
    a0: f64,
    min_gain: f64,
    req: &TaskRequest,
    metric: &str,
) -> Result<(), ProtocolError> {
    let best = predicted.iter().copied().fold(f64::NEG_INFINITY, f64::max) - a0;
    if min_gain > 0.0 && best < min_gain {
        return Err(ProtocolError::Declined(format!(
            "end {} task {}: predicted {metric} gain {best:.3} is below edge.min_gain {min_gain}",
            req.end, req.seq
        )));
    }
    Ok(())
}

/// Memory the running tasks hold: each its measured or predicted peak, whichever is larger.
pub(crate) fn memory_in_use<D>(running: &[Running<D>]) -> u64 {
    running
        .iter()
        .map(|r| r.memory_measured.max(r.memory_pred))
        .sum()
}

/// The tasks the scheduler starts at `now`, taken out of `queue` in start order, and the
/// concurrency they will train at. With the profiler a variant's time is the regressor's
/// prediction and its value the expected accuracy- (detection: mAP-) seconds gained over the
/// end's remaining life, doubled for an end below its QoE threshold (a floor keeps every task
/// schedulable); without it, the fixed budget. `starts_total` and `starts_bypassing` (starts
/// ahead of an earlier arrival left waiting) count the starts. Shared by both edges.
pub(crate) fn pick_starts<P, D>(
    queue: &mut Vec<Queued<P>>,
    running: &[Running<D>],
    time: &TimeRegressor,
    k: &Knobs,
    now: f64,
    starts_total: &mut usize,
    starts_bypassing: &mut usize,
) -> (Vec<Pick<P>>, f64) {
    let slots = k.max_concurrent.saturating_sub(running.len());
    if queue.is_empty() || slots == 0 {
        return (Vec::new(), 0.0);
    }
    let free = k.memory.saturating_sub(memory_in_use(running));
    let conc = (running.len() + 1) as f64;
    let cands: Vec<Candidate> = queue
        .iter()
        .map(|q| {
            let variants = q
                .variants
                .iter()
                .zip(&q.predicted_acc)
                .map(|(v, acc)| {
                    let mut v = *v;
                    if k.profiler {
                        v.seconds = time
                            .predict(v.seconds * k.throughput, conc)
                            .max(v.seconds)
                            .max(1e-3);
                        let wait = now - q.arrival;
                        let horizon = (q.req.remaining_s - wait - v.seconds).max(0.0);
                        let gain = (acc - q.a0).max(0.0);
                        let below = if q.a0 < q.req.threshold { 2.0 } else { 1.0 };
                        v.value = horizon * gain * below + 1e-3;
                    }
                    v
                })
                .collect();
            Candidate {
                id: q.id,
                arrival: q.arrival,
                variants,
            }
        })
        .collect();
    let starts: Vec<Start> = match k.scheduler {
        SchedulerKind::Knapsack => scheduler::knapsack(&cands, free, k.memory_unit, slots, 16),
        SchedulerKind::Fifo => {
            let j = k
                .epochs
                .iter()
                .position(|e| *e == k.fixed_epochs)
                .unwrap_or(0);
            let j = if k.profiler { j } else { 0 };
            scheduler::fifo(&cands, free, slots, j)
        }
    };
    let n_after = (running.len() + starts.len()) as f64;
    let left_waiting = queue
        .iter()
        .filter(|q| !starts.iter().any(|s| s.id == q.id))
        .map(|q| q.arrival)
        .fold(f64::INFINITY, f64::min);
    for s in &starts {
        let arrival = queue
            .iter()
            .find(|q| q.id == s.id)
            .map_or(f64::NEG_INFINITY, |q| q.arrival);
        *starts_total += 1;
        if left_waiting < arrival {
            *starts_bypassing += 1;
        }
    }
    let mut picks = Vec::with_capacity(starts.len());
    for s in starts {
        let Some(pos) = queue.iter().position(|q| q.id == s.id) else {
            continue;
        };
        let q = queue.remove(pos);
        let variant = cands
            .iter()
            .find(|c| c.id == s.id)
            .and_then(|c| c.variants.get(s.variant))
            .copied()
            .unwrap_or(q.variants[0]);
        let predicted_gain = q
            .predicted_acc
            .get(s.variant)
            .map_or(0.0, |a| (a - q.a0).max(0.0));
        picks.push(Pick {
            q,
            variant,
            predicted_gain,
        });
    }
    (picks, n_after)
}

/// Teacher-labelled frames: (pixels, class).
type Frames = Vec<(Vec<f32>, u8)>;

/// A task being trained; `D` is what the task hands back when it finishes (classification:
/// its teacher-labelled frames for the end's replay; detection: nothing).
#[derive(Debug, Clone)]
pub(crate) struct Running<D> {
    pub(crate) end: usize,
    pub(crate) seq: u64,
    pub(crate) arrival: f64,
    pub(crate) started: f64,
    pub(crate) remaining: f64,
    pub(crate) flops: f64,
    pub(crate) blob: ModelBlob,
    pub(crate) dense: Mlp,
    pub(crate) predicted_seconds: f64,
    pub(crate) predicted_gain: f64,
    pub(crate) concurrency: f64,
    pub(crate) memory_pred: u64,
    pub(crate) memory_measured: u64,
    pub(crate) epochs: usize,
    /// Classification: the task's teacher-labelled frames, added to the end's replay when it
    /// finishes (not at start: a persisted end state must hold only what finished tasks
    /// contributed, so a task re-queued after an edge restart does not find its own frames in
    /// the replay twice).
    pub(crate) data: D,
}

/// A task that has just finished: the shipped record, the deployed (decoded) model, the end's
/// new dense copy, the task's payload and its time for the regressor.
pub(crate) struct Finished<D> {
    completed: Completed,
    deployed: Mlp,
    dense: Mlp,
    data: D,
    time: TimeRecord,
}

impl<D> Finished<D> {
    /// Installs the task on its edge (the time recorded, the end's deployed model and dense
    /// copy replaced); returns its record and payload.
    pub(crate) fn install(
        self,
        time: &mut TimeRegressor,
        deployed: &mut BTreeMap<usize, Mlp>,
        dense: &mut BTreeMap<usize, Mlp>,
    ) -> (Completed, D) {
        let end = self.completed.end;
        time.record(self.time);
        deployed.insert(end, self.deployed);
        dense.insert(end, self.dense);
        (self.completed, self.data)
    }
}

/// Exact processor sharing of `throughput` FLOP per simulated second among `running`, from
/// `now` for `dt` seconds: the shortest remaining task finishes, then the rest re-share.
/// `busy_s` accumulates the seconds with work; `finish` receives each finished task, in
/// finishing order. Shared by the classification and detection edges.
pub(crate) fn share_processor<D>(
    running: &mut Vec<Running<D>>,
    throughput: f64,
    busy_s: &mut f64,
    now: f64,
    dt: f64,
    mut finish: impl FnMut(Finished<D>),
) {
    let mut t = now;
    let end_t = now + dt;
    while !running.is_empty() && t < end_t - 1e-12 {
        let share = throughput / running.len() as f64;
        let (k, min_rem) = running
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.remaining))
            .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
        let need = min_rem / share;
        let step = need.min(end_t - t);
        for r in running.iter_mut() {
            r.remaining -= share * step;
        }
        *busy_s += step;
        t += step;
        if step >= need - 1e-12 {
            let r = running.remove(k);
            // A blob that does not decode (it always does: it was just encoded) would leave
            // the end on its dense copy rather than on nothing.
            let deployed = r.blob.decode().unwrap_or_else(|_| r.dense.clone());
            finish(Finished {
                time: TimeRecord {
                    flops: r.flops,
                    concurrency: r.concurrency,
                    seconds: t - r.started,
                },
                completed: Completed {
                    end: r.end,
                    seq: r.seq,
                    blob: r.blob,
                    arrival: r.arrival,
                    started: r.started,
                    finished: t,
                    flops: r.flops,
                    epochs: r.epochs,
                    predicted_seconds: r.predicted_seconds,
                    predicted_gain: r.predicted_gain,
                    memory_pred: r.memory_pred,
                    memory_measured: r.memory_measured,
                },
                deployed,
                dense: r.dense,
                data: r.data,
            });
        }
    }
}

/// What the edge keeps about one end between tasks: what a restarted edge needs to continue
/// it (the net layer persists it after every finished task).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndState {
    /// End id.
    pub end: usize,
    /// The last finished (shipped) model version; 0 = the factory model.
    pub version: u64,
    /// The edge's copy of the end's model (pruned weights at zero, before int8).
    pub dense: Mlp,
    /// What the end runs after installing `version`.
    pub deployed: Mlp,
    /// Teacher-labelled frames of its earlier finished tasks.
    pub replay: Vec<(Vec<f32>, u8)>,
}

impl EndState {
    /// Whether this state can be an end of a run whose models are shaped as `reference`: both
    /// models of its layer widths and conv stem (shape, mask) with finite weights, replay
    /// frames of its input width with labels in range. A restarted edge refuses a state that
    /// is not (a damaged or foreign file would otherwise fail inside training, long after the
    /// restart).
    pub fn check_model(&self, reference: &Mlp) -> Result<(), String> {
        let (sizes, stem) = (reference.sizes.as_slice(), reference.stem.as_ref());
        for (name, m) in [("dense", &self.dense), ("deployed", &self.deployed)] {
            match (stem, &m.stem) {
                (None, None) => {}
                (Some(want), Some(got)) => {
                    if !want.same_shape(got) {
                        return Err(format!(
                            "{name} model is {}, this run's are {}×{} filters of {}×{}",
                            m.describe(),
                            want.out_channels,
                            want.in_channels,
                            want.kernel,
                            want.kernel
                        ));
                    }
                    got.check().map_err(|e| format!("{name} model: {e}"))?;
                }
                (Some(_), None) => {
                    return Err(format!(
                        "{name} model has no conv stem, this run's models have one"
                    ));
                }
                (None, Some(_)) => {
                    return Err(format!(
                        "{name} model has a conv stem, this run's models have none"
                    ));
                }
            }
            if m.sizes != sizes {
                return Err(format!(
                    "{name} model has layer widths {:?}, this run's have {sizes:?}",
                    m.sizes
                ));
            }
            let layers = sizes.len().saturating_sub(1);
            if m.weights.len() != layers || m.biases.len() != layers {
                return Err(format!(
                    "{name} model has {} weight and {} bias layers, expected {layers}",
                    m.weights.len(),
                    m.biases.len()
                ));
            }
            if m.masks.len() != layers {
                return Err(format!(
                    "{name} model has {} pruning masks, expected {layers}",
                    m.masks.len()
                ));
            }
            for l in 0..layers {
                let (i, o) = (sizes[l], sizes[l + 1]);
                if m.weights[l].len() != i * o || m.biases[l].len() != o {
                    return Err(format!(
                        "{name} model layer {l}: {} weights and {} biases, expected {} and {o}",
                        m.weights[l].len(),
                        m.biases[l].len(),
                        i * o
                    ));
                }
                if let Some(mask) = &m.masks[l]
                    && mask.len() != i * o
                {
                    return Err(format!(
                        "{name} model layer {l}: a pruning mask of {}, expected {}",
                        mask.len(),
                        i * o
                    ));
                }
            }
            if m.weights
                .iter()
                .chain(&m.biases)
                .flatten()
                .any(|v| !v.is_finite())
            {
                return Err(format!("{name} model has a weight that is not finite"));
            }
        }
        let input = match stem {
            Some(st) => Some(st.input_len()),
            None => sizes.first().copied(),
        };
        let classes = sizes.last().copied();
        for (i, (x, y)) in self.replay.iter().enumerate() {
            if Some(x.len()) != input || Some(usize::from(*y)) >= classes {
                return Err(format!(
                    "replay frame {i}: {} inputs and label {y}, expected {} inputs and a label below {}",
                    x.len(),
                    input.unwrap_or(0),
                    classes.unwrap_or(0)
                ));
            }
            if x.iter().any(|v| !v.is_finite()) {
                return Err(format!("replay frame {i} has an input that is not finite"));
            }
        }
        Ok(())
    }
}

/// A finished task.
#[derive(Debug, Clone)]
pub struct Completed {
    /// End id.
    pub end: usize,
    /// The end's task number.
    pub seq: u64,
    /// The new model version.
    pub blob: ModelBlob,
    /// Arrival, start and finish times.
    pub arrival: f64,
    pub started: f64,
    pub finished: f64,
    /// FLOPs charged.
    pub flops: f64,
    /// Epochs trained.
    pub epochs: usize,
    /// The profiler's predicted duration and accuracy gain (teacher-labelled holdout).
    pub predicted_seconds: f64,
    pub predicted_gain: f64,
    /// Predicted (analytic) and measured training memory, bytes.
    pub memory_pred: u64,
    pub memory_measured: u64,
}

/// One scheduling decision, for the timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleEvent {
    /// When.
    pub t: f64,
    /// Which end's task started.
    pub end: usize,
    /// With how many epochs.
    pub epochs: usize,
}

/// The edge server.
#[derive(Debug, Clone)]
pub struct EdgeServer {
    params: EdgeParams,
    teacher: Teacher,
    dense: BTreeMap<usize, Mlp>,
    factory: BTreeMap<usize, Mlp>,
    deployed: BTreeMap<usize, Mlp>,
    versions: BTreeMap<usize, u64>,
    replay: BTreeMap<usize, Frames>,
    queue: Vec<Queued<Material>>,
    running: Vec<Running<Frames>>,
    next_id: usize,
    time: TimeRegressor,
    /// Scheduling decisions so far.
    pub log: Vec<ScheduleEvent>,
    /// Busy simulated seconds (at least one task running).
    pub busy_s: f64,
    /// Highest measured memory in use at once, bytes.
    pub peak_memory: u64,
    /// Tasks started so far, and those of them started while a task that had arrived earlier
    /// stayed queued (what sets the knapsack's order apart from FIFO's).
    pub starts_total: usize,
    pub starts_bypassing: usize,
    /// Tasks declined: too small a predicted gain (`edge.min_gain`), or more training memory
    /// than the whole edge has.
    pub declined: usize,
}

impl EdgeServer {
    /// An edge with `teacher`, serving ends whose factory dense model is `dense` and deployed
    /// (compressed) model `deployed`.
    pub fn new(params: EdgeParams, teacher: Teacher) -> EdgeServer {
        let time = TimeRegressor::new(params.throughput);
        EdgeServer {
            params,
            teacher,
            dense: BTreeMap::new(),
            factory: BTreeMap::new(),
            deployed: BTreeMap::new(),
            versions: BTreeMap::new(),
            replay: BTreeMap::new(),
            queue: Vec::new(),
            running: Vec::new(),
            next_id: 0,
            time,
            log: Vec::new(),
            busy_s: 0.0,
            peak_memory: 0,
            starts_total: 0,
            starts_bypassing: 0,
            declined: 0,
        }
    }

    /// Registers end `end` with its factory models.
    pub fn register(&mut self, end: usize, dense: Mlp, deployed: Mlp) {
        self.factory.insert(end, dense.clone());
        self.dense.insert(end, dense);
        self.deployed.insert(end, deployed);
        self.versions.insert(end, 0);
    }

    /// End `end`'s state as of its last finished task (a task still running is not in it:
    /// its version is not counted, its frames not in the replay). `None` for an unknown end.
    pub fn end_state(&self, end: usize) -> Option<EndState> {
        let running = self.running.iter().any(|r| r.end == end);
        let version = self.versions.get(&end).copied()?;
        Some(EndState {
            end,
            version: if running {
                version.saturating_sub(1)
            } else {
                version
            },
            dense: self.dense.get(&end)?.clone(),
            deployed: self.deployed.get(&end)?.clone(),
            replay: self.replay.get(&end).cloned().unwrap_or_default(),
        })
    }

    /// Puts back an end's persisted state (after [`register`](Self::register) with its factory
    /// models): its next task ships version `state.version + 1`.
    pub fn restore_end(&mut self, state: EndState) {
        let end = state.end;
        self.dense.insert(end, state.dense);
        self.deployed.insert(end, state.deployed);
        self.versions.insert(end, state.version);
        self.replay.insert(end, state.replay);
    }

    /// Task ids (which seed each task's training) continue from at least `next`, so that
    /// tasks accepted by a restarted edge do not reuse the seeds of earlier ones.
    pub fn reserve_ids(&mut self, next: usize) {
        self.next_id = self.next_id.max(next);
    }

    /// Tasks accepted so far (the next task's id).
    pub fn next_id(&self) -> usize {
        self.next_id
    }

    /// Tasks waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Tasks running.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Accepts a task at `now`: labels its frames with the teacher and profiles it.
    pub fn submit(&mut self, req: TaskRequest, now: f64) -> Result<(), ProtocolError> {
        req.check(SIDE)?;
        let Some(dense) = self.dense.get(&req.end).cloned() else {
            return Err(ProtocolError::BadRequest(format!(
                "unknown end {}",
                req.end
            )));
        };
        let mut scored: Vec<(f64, Vec<f32>, u8)> = req
            .frames
            .iter()
            .map(|f| {
                let x = to_input(&f.pixels);
                let p = self.teacher.probs(&x);
                let y = crate::model::argmax(&p);
                (p[y] as f64, x, y as u8)
            })
            .collect();
        let label_flops = self.teacher.flops_forward() * scored.len() as f64;
        let min_conf = self.params.label_min_confidence;
        if min_conf > 0.0 {
            let mut order: Vec<usize> = (0..scored.len()).collect();
            order.sort_by(|a, b| scored[*b].0.total_cmp(&scored[*a].0).then(a.cmp(b)));
            let keep: Vec<bool> = {
                let mut k = vec![false; scored.len()];
                for (rank, &i) in order.iter().enumerate() {
                    k[i] = rank < MIN_LABELLED || scored[i].0 >= min_conf;
                }
                k
            };
            let mut i = 0;
            scored.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
        let data: Vec<(Vec<f32>, u8)> = scored.into_iter().map(|(_, x, y)| (x, y)).collect();
        let (dense, label_flops) = self.base_model(req.end, dense, &data, label_flops);
        let replay = self
            .replay
            .get(&req.end)
            .map_or(0, Vec::len)
            .min(self.params.replay);
        let anchor = self.params.anchor_per_task.min(self.params.anchor.len());
        let extra: Vec<(Vec<f32>, u8)> = data
            .iter()
            .flat_map(|(x, y)| {
                SHIFTS
                    .iter()
                    .take(self.params.augment.min(SHIFTS.len()))
                    .map(move |&(dx, dy)| (shifted(x, dx, dy), *y))
            })
            .collect();
        let samples = data.len() + extra.len() + replay + anchor;
        let memory_pred =
            model_memory_bytes(&dense, samples, self.params.batch, 1, self.params.workspace);
        let p = &self.params;
        let (variants, predicted_acc, a0, probe_flops) = if p.profiler {
            // Probe: half the frames train a copy for a few epochs, the other half score it.
            let (tr, ho): (Vec<_>, Vec<_>) = data.iter().enumerate().partition(|(i, _)| i % 2 == 0);
            let tx: Vec<Vec<f32>> = tr.iter().map(|(_, d)| d.0.clone()).collect();
            let ty: Vec<u8> = tr.iter().map(|(_, d)| d.1).collect();
            let hx: Vec<Vec<f32>> = ho.iter().map(|(_, d)| d.0.clone()).collect();
            let hy: Vec<u8> = ho.iter().map(|(_, d)| d.1).collect();
            let deployed = self.deployed.get(&req.end).unwrap_or(&dense);
            let a0 = deployed.accuracy(&hx, &hy);
            let mut probe = dense.clone();
            let mut pts = vec![(0.0, dense.accuracy(&hx, &hy))];
            let mut flops = 0.0;
            for e in 1..=p.probe_epochs {
                let st = probe.train(
                    &tx,
                    &ty,
                    &TrainOpts {
                        epochs: 1,
                        lr: p.lr,
                        momentum: 0.9,
                        batch: p.batch,
                        seed: p.seed ^ (self.next_id as u64) << 8 ^ e as u64,
                    },
                );
                flops += st.flops + probe.flops_forward() * hx.len() as f64;
                pts.push((e as f64, probe.accuracy(&hx, &hy)));
            }
            let curve = AccuracyCurve::fit(&pts);
            // Full training sees about twice the probe's samples per epoch (plus replay).
            let scale = (samples - extra.len()) as f64 / tx.len().max(1) as f64;
            let mut vs = Vec::new();
            let mut accs = Vec::new();
            for &e in &p.epochs {
                let acc = curve.at(e as f64 * scale);
                let f = self.train_flops(&dense, samples, e) + label_flops + flops;
                let secs = self.time.predict(f, (self.running.len() + 1) as f64);
                vs.push(Variant {
                    epochs: e,
                    memory: memory_pred,
                    seconds: secs,
                    value: 0.0,
                });
                accs.push(acc);
            }
            if let Err(e) = check_min_gain(&accs, a0, p.min_gain, &req, "accuracy") {
                self.declined += 1;
                return Err(e);
            }
            (vs, accs, a0, flops)
        } else {
            // Without the profiler: the worst-case task memory, the fixed epoch budget, and no
            // gain prediction (every task is worth the same).
            let worst = model_memory_bytes(
                &dense,
                req.frames.len().max(1) * (1 + p.augment.min(SHIFTS.len()))
                    + p.replay
                    + p.anchor_per_task.min(p.anchor.len()),
                p.batch,
                1,
                p.workspace,
            )
            .max(memory_pred);
            let f = self.train_flops(&dense, samples, p.fixed_epochs) + label_flops;
            (
                vec![Variant {
                    epochs: p.fixed_epochs,
                    memory: worst,
                    seconds: f / p.throughput,
                    value: 1.0,
                }],
                vec![0.0],
                0.0,
                0.0,
            )
        };
        let p = &self.params;
        if let Err(e) = p.scheduler.admit(&variants, p.memory, p.memory_unit, &req) {
            self.declined += 1;
            return Err(e);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push(Queued {
            id,
            req,
            arrival: now,
            material: Material {
                base: dense,
                data,
                extra,
            },
            variants,
            predicted_acc,
            a0,
            label_flops,
            probe_flops,
            memory_pred,
        });
        Ok(())
    }

    /// The model task data `data` (teacher-labelled uploads) retrains from, and the labelling
    /// FLOPs plus what choosing it cost (one forward pass of each candidate per frame).
    fn base_model(
        &self,
        end: usize,
        current: Mlp,
        data: &[(Vec<f32>, u8)],
        label_flops: f64,
    ) -> (Mlp, f64) {
        let Some(factory) = self.factory.get(&end) else {
            return (current, label_flops);
        };
        let cost = match self.params.base {
            Base::Best => (current.flops_forward() + factory.flops_forward()) * data.len() as f64,
            _ => 0.0,
        };
        if retrain_from_factory(self.params.base, &current, factory, data) {
            (factory.clone(), label_flops + cost)
        } else {
            (current, label_flops + cost)
        }
    }

    fn train_flops(&self, dense: &Mlp, samples: usize, epochs: usize) -> f64 {
        dense.flops_train_sample() * (samples * epochs) as f64
    }

    /// Starts what the scheduler picks at `now` (runs their training for real).
    pub fn schedule(&mut self, now: f64) {
        schedule_step!(self, now);
    }

    fn start(&mut self, q: Queued<Material>, v: Variant, predicted_gain: f64, now: f64, conc: f64) {
        let p = self.params.clone();
        let end = q.req.end;
        let mut dense = q.material.base;
        let seed = p.seed ^ (q.id as u64).wrapping_mul(0x9E37_79B9);
        let opts = TrainOpts {
            epochs: v.epochs,
            lr: p.lr,
            momentum: 0.9,
            batch: p.batch,
            seed,
        };
        // Measured from the training set's assembly to the end of training: what the task
        // allocates beside the model it trains (counted below) and the queued upload it keeps.
        let (st, heap) = ferrolab_core::alloc::measure(|| {
            let mut data = q.material.data.clone();
            data.extend(q.material.extra.iter().cloned());
            if let Some(r) = self.replay.get(&end) {
                let k = r.len().min(p.replay);
                data.extend(r[r.len() - k..].iter().cloned());
            }
            let na = p.anchor.len();
            let k = p.anchor_per_task.min(na);
            if k > 0 {
                let off = q.id.wrapping_mul(7919) % na;
                data.extend((0..k).map(|i| p.anchor[(off + i) % na].clone()));
            }
            // Moved, not copied: one resident copy of the inputs, as the profiler predicts.
            let (xs, ys): (Vec<Vec<f32>>, Vec<u8>) = data.into_iter().unzip();
            // The edge's copy is the pruned model with its mask: retraining keeps the pruned
            // weights at zero (re-pruning a densely retrained copy from a hundred frames
            // wrecked it), then re-compression re-applies magnitude pruning at the same
            // sparsity (the same zeros) and stores int8.
            dense.train(&xs, &ys, &opts)
        });
        let small = prune(&dense, p.sparsity).unwrap_or_else(|_| dense.clone());
        let version = self.versions.get(&end).copied().unwrap_or(0) + 1;
        let blob = ModelBlob::encode(end, version, &small);
        self.versions.insert(end, version);
        let flops = st.flops + q.label_flops + q.probe_flops;
        let measured = measured_memory(&st, heap, &dense, p.workspace);
        let predicted_seconds = if p.profiler {
            self.time.predict(flops, conc)
        } else {
            v.seconds
        };
        self.log.push(ScheduleEvent {
            t: now,
            end,
            epochs: v.epochs,
        });
        self.running.push(Running {
            end,
            seq: q.req.seq,
            arrival: q.arrival,
            started: now,
            remaining: flops,
            flops,
            blob,
            dense,
            predicted_seconds,
            predicted_gain,
            concurrency: conc,
            memory_pred: q.memory_pred,
            memory_measured: measured,
            epochs: v.epochs,
            data: q.material.data,
        });
        self.peak_memory = self.peak_memory.max(memory_in_use(&self.running));
    }

    /// Moves the clock from `now` by `dt` seconds; returns the tasks that finished.
    pub fn advance(&mut self, now: f64, dt: f64) -> Vec<Completed> {
        let mut done = Vec::new();
        let keep = self.params.replay.max(1) * 4;
        share_processor(
            &mut self.running,
            self.params.throughput,
            &mut self.busy_s,
            now,
            dt,
            |f| {
                let (c, data) = f.install(&mut self.time, &mut self.deployed, &mut self.dense);
                let replay = self.replay.entry(c.end).or_default();
                replay.extend(data);
                let extra = replay.len().saturating_sub(keep);
                replay.drain(..extra);
                done.push(c);
            },
        );
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_state_check_refuses_what_training_could_not_use() {
        let m = Mlp::new(&[6, 5, 3], 1);
        let good = EndState {
            end: 0,
            version: 1,
            dense: m.clone(),
            deployed: m.clone(),
            replay: vec![(vec![0.1; 6], 2)],
        };
        assert_eq!(good.check_model(&m), Ok(()));
        let refused = |s: &EndState, what: &str| {
            let e = s.check_model(&m).unwrap_err();
            assert!(e.contains(what), "{what}: {e}");
        };
        let mut nan = good.clone();
        nan.deployed.biases[1][0] = f32::NAN;
        refused(&nan, "deployed model has a weight that is not finite");
        let mut bias = good.clone();
        bias.dense.biases[0].push(0.0);
        refused(&bias, "dense model layer 0: 30 weights and 6 biases");
        let mut layers = good.clone();
        layers.dense.weights.pop();
        refused(&layers, "1 weight and 2 bias layers");
        let mut masks = good.clone();
        masks.dense.masks.clear();
        refused(&masks, "dense model has 0 pruning masks, expected 2");
        let mut mask = good.clone();
        mask.deployed.masks[1] = Some(vec![true; 14]);
        refused(
            &mask,
            "deployed model layer 1: a pruning mask of 14, expected 15",
        );
        let mut x = good.clone();
        x.replay[0].0.push(0.0);
        refused(&x, "replay frame 0: 7 inputs");
        let mut inf = good.clone();
        inf.replay[0].0[2] = f32::INFINITY;
        refused(&inf, "replay frame 0 has an input that is not finite");
        let narrower = Mlp::new(&[6, 4, 3], 1);
        assert!(
            good.check_model(&narrower)
                .unwrap_err()
                .contains("layer widths")
        );
        // A stem the run's models do not have, and the other way round.
        let stemmed = Mlp::with_stem(1, 2, 1, 1, &[5, 3], 1);
        assert!(good.check_model(&stemmed).unwrap_err().contains("have one"));
        let mut extra = good.clone();
        extra.dense.stem = stemmed.stem.clone();
        assert!(extra.check_model(&m).unwrap_err().contains("have none"));
    }

    #[test]
    fn base_follows_the_teacher_labels() {
        let factory = Mlp::new(&[6, 5, 3], 1);
        let current = Mlp::new(&[6, 5, 3], 2);
        let xs: Vec<Vec<f32>> = (0..40)
            .map(|i| {
                (0..6)
                    .map(|j| ((i * 7 + j * 3) % 11) as f32 - 5.0)
                    .collect()
            })
            .collect();
        let labelled = |m: &Mlp| -> Vec<(Vec<f32>, u8)> {
            xs.iter()
                .map(|x| (x.clone(), crate::model::argmax(&m.forward(x).probs) as u8))
                .collect()
        };
        let by_factory = labelled(&factory);
        let by_current = labelled(&current);
        // The two random models must disagree somewhere for the choice to mean anything.
        assert!(by_factory.iter().zip(&by_current).any(|(a, b)| a.1 != b.1));
        // (rule, current, factory, uploads, retrain from the factory model?); a tie keeps the
        // current model.
        let cases = [
            (Base::Best, &current, &factory, &by_factory, true),
            (Base::Best, &current, &factory, &by_current, false),
            (Base::Best, &current, &current, &by_factory, false),
            (Base::Factory, &current, &factory, &by_current, true),
            (Base::Current, &current, &factory, &by_factory, false),
        ];
        for (i, (base, cur, fac, data, want)) in cases.into_iter().enumerate() {
            assert_eq!(retrain_from_factory(base, cur, fac, data), want, "case {i}");
        }
        assert_eq!(Base::parse("best"), Base::Best);
        assert_eq!(Base::parse("factory"), Base::Factory);
        assert_eq!(Base::parse("current"), Base::Current);
    }
}
