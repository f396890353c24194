//! The edge server of the detection task: the classification edge's structure
//! ([`crate::edge::EdgeServer`]) with detection data. It labels an upload's frames with the
//! teacher detector (its detections scoring at least `label_score` become the frame's boxes;
//! ground truth is never used), profiles the task (analytic memory of its cell samples vs
//! the allocation training measures; a probe trained on half the frames' cells for a few
//! epochs and scored by mAP@0.5 against the teacher's boxes of the other half, fitted by NNLS
//! to the saturating curve; the online time regressor), schedules with the same knapsack DP
//! or FIFO, retrains the end's pruned dense copy on the task's cells plus clean anchor frames
//! of the original training set, re-prunes, stores int8 and ships a checksummed blob.

use super::grid::{Grid, GtBox, OUT, model_map50, train_detector, train_detector_split};
use crate::edge::{
    Completed, EndState, Queued, Running, ScheduleEvent, SchedulerKind, check_min_gain,
    measured_memory, memory_in_use, schedule_step, share_processor,
};
use crate::model::{Mlp, TrainOpts};
use crate::profiler::{AccuracyCurve, TimeRegressor, model_memory_bytes};
use crate::protocol::{ModelBlob, ProtocolError, TaskRequest, prune};
use crate::scheduler::Variant;
use std::collections::BTreeMap;

/// A frame with boxes (teacher labels on the edge; ground truth in the anchor set).
pub type Labelled = (Vec<u8>, Vec<GtBox>);

/// Settings of the detection edge.
#[derive(Debug, Clone, PartialEq)]
pub struct DetEdgeParams {
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
    /// Workspace bytes per task.
    pub workspace: u64,
    /// Pruned fraction.
    pub sparsity: f64,
    /// Scheduler.
    pub scheduler: SchedulerKind,
    /// Whether the profiler informs the scheduler.
    pub profiler: bool,
    /// Training seed.
    pub seed: u64,
    /// The grid.
    pub grid: Grid,
    /// Background cells kept per frame.
    pub bg_keep: f64,
    /// Teacher score from which a detection becomes a label.
    pub label_score: f32,
    /// Clean frames of the original training set with their boxes.
    pub anchor: Vec<Labelled>,
    /// Anchor frames per task.
    pub anchor_per_task: usize,
    /// With the profiler, a task whose best predicted mAP@0.5 gain is below this is declined
    /// (`edge.min_gain`, shared with the classification edge; 0: none is).
    pub min_gain: f64,
}

/// What a detection task trains on: its teacher-labelled frames and their cell-sample count.
#[derive(Debug, Clone)]
struct Material {
    labelled: Vec<Labelled>,
    samples: usize,
}

/// The detection edge server (the same calls as [`crate::edge::EdgeServer`]: `submit`,
/// `schedule`, `advance`).
#[derive(Debug, Clone)]
pub struct DetEdge {
    params: DetEdgeParams,
    teacher: Mlp,
    dense: BTreeMap<usize, Mlp>,
    deployed: BTreeMap<usize, Mlp>,
    versions: BTreeMap<usize, u64>,
    queue: Vec<Queued<Material>>,
    running: Vec<Running<()>>,
    next_id: usize,
    time: TimeRegressor,
    /// Scheduling decisions so far.
    pub log: Vec<ScheduleEvent>,
    /// Busy simulated seconds.
    pub busy_s: f64,
    /// Highest memory in use at once, bytes.
    pub peak_memory: u64,
    /// Tasks started, and those started while an earlier arrival stayed queued.
    pub starts_total: usize,
    pub starts_bypassing: usize,
    /// Tasks declined for too small a predicted gain (`edge.min_gain`).
    pub declined: usize,
}

impl DetEdge {
    /// An edge labelling with `teacher`.
    pub fn new(params: DetEdgeParams, teacher: Mlp) -> DetEdge {
        let time = TimeRegressor::new(params.throughput);
        DetEdge {
            params,
            teacher,
            dense: BTreeMap::new(),
            deployed: BTreeMap::new(),
            versions: BTreeMap::new(),
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
        self.dense.insert(end, dense);
        self.deployed.insert(end, deployed);
        self.versions.insert(end, 0);
    }

    /// End `end`'s state as of its last finished task, as
    /// [`EdgeServer::end_state`](crate::edge::EdgeServer::end_state) gives it (a detection
    /// edge keeps no replay frames). `None` for an unknown end.
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
            replay: Vec::new(),
        })
    }

    /// Puts back an end's persisted state (after [`register`](Self::register)).
    pub fn restore_end(&mut self, state: EndState) {
        let end = state.end;
        self.dense.insert(end, state.dense);
        self.deployed.insert(end, state.deployed);
        self.versions.insert(end, state.version);
    }

    /// Task ids (which seed each task's training and anchor frames) continue from at least
    /// `next`.
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

    /// The teacher's boxes of one frame.
    pub fn label(&self, rgb: &[u8]) -> Vec<GtBox> {
        self.params
            .grid
            .detect(&self.teacher, rgb, self.params.label_score)
            .iter()
            .map(|d| (d.bbox, d.category))
            .collect()
    }

    fn cell_samples(
        &self,
        frames: &[&Labelled],
        seed: u64,
    ) -> Vec<(Vec<f32>, super::grid::CellTarget)> {
        let g = self.params.grid;
        frames
            .iter()
            .enumerate()
            .flat_map(|(i, (rgb, b))| {
                g.samples(rgb, b, self.params.bg_keep, seed ^ (i as u64) << 16)
            })
            .collect()
    }

    fn anchor_frames(&self, id: usize) -> Vec<&Labelled> {
        let na = self.params.anchor.len();
        let k = self.params.anchor_per_task.min(na);
        if k == 0 {
            return Vec::new();
        }
        let off = id.wrapping_mul(7919) % na;
        (0..k)
            .map(|i| &self.params.anchor[(off + i) % na])
            .collect()
    }

    /// Accepts a task at `now`: labels its frames with the teacher and profiles it.
    pub fn submit(&mut self, req: TaskRequest, now: f64) -> Result<(), ProtocolError> {
        let g = self.params.grid;
        let want = g.side * g.side * 3;
        if req.frames.is_empty() {
            return Err(ProtocolError::BadRequest(format!(
                "end {} task {}: no frames",
                req.end, req.seq
            )));
        }
        if let Some(f) = req.frames.iter().find(|f| f.pixels.len() != want) {
            return Err(ProtocolError::BadRequest(format!(
                "end {} task {}: frame of {} bytes, expected {want}",
                req.end,
                req.seq,
                f.pixels.len()
            )));
        }
        let Some(dense) = self.dense.get(&req.end).cloned() else {
            return Err(ProtocolError::BadRequest(format!(
                "unknown end {}",
                req.end
            )));
        };
        let labelled: Vec<Labelled> = req
            .frames
            .iter()
            .map(|f| (f.pixels.clone(), self.label(&f.pixels)))
            .collect();
        let label_flops = g.frame_flops(&self.teacher) * labelled.len() as f64;
        let id = self.next_id;
        let p = self.params.clone();
        let mut all: Vec<&Labelled> = labelled.iter().collect();
        all.extend(self.anchor_frames(id));
        let samples = self.cell_samples(&all, p.seed ^ id as u64).len();
        let memory_pred = model_memory_bytes(&dense, samples, p.batch, 1, p.workspace);
        let (variants, predicted_acc, a0, probe_flops) = if p.profiler {
            // Probe: the even frames' cells train a copy for a few epochs; the odd frames
            // score it (mAP@0.5 against the teacher's boxes).
            let tr: Vec<&Labelled> = labelled.iter().step_by(2).collect();
            let ho: Vec<(&[u8], &[GtBox])> = labelled
                .iter()
                .skip(1)
                .step_by(2)
                .map(|(r, b)| (r.as_slice(), b.as_slice()))
                .collect();
            let deployed = self.deployed.get(&req.end).unwrap_or(&dense);
            let a0 = model_map50(&g, deployed, &ho);
            let tx = self.cell_samples(&tr, p.seed ^ (id as u64) << 4);
            let mut probe = dense.clone();
            let mut pts = vec![(0.0, model_map50(&g, &dense, &ho))];
            let eval_flops = g.frame_flops(&dense) * ho.len() as f64;
            let mut flops = 0.0;
            for e in 1..=p.probe_epochs {
                let st = train_detector(
                    &mut probe,
                    &tx,
                    &TrainOpts {
                        epochs: 1,
                        lr: p.lr,
                        momentum: 0.9,
                        batch: p.batch,
                        seed: p.seed ^ (id as u64) << 8 ^ e as u64,
                    },
                );
                flops += st.flops + eval_flops;
                pts.push((e as f64, model_map50(&g, &probe, &ho)));
            }
            let curve = AccuracyCurve::fit(&pts);
            // Full training sees the whole task's cells per epoch, the probe about half the
            // uploaded frames' (plus the anchor frames').
            let scale = samples as f64 / tx.len().max(1) as f64;
            let mut vs = Vec::new();
            let mut accs = Vec::new();
            for &e in &p.epochs {
                let f = dense.flops_train_sample() * (samples * e) as f64 + label_flops + flops;
                vs.push(Variant {
                    epochs: e,
                    memory: memory_pred,
                    seconds: self.time.predict(f, (self.running.len() + 1) as f64),
                    value: 0.0,
                });
                accs.push(curve.at(e as f64 * scale));
            }
            if let Err(e) = check_min_gain(&accs, a0, p.min_gain, &req, "mAP@0.5") {
                self.declined += 1;
                return Err(e);
            }
            (vs, accs, a0, flops)
        } else {
            // Without the profiler: worst-case memory (every cell of every frame kept), the
            // fixed epoch budget, every task worth the same.
            let worst = model_memory_bytes(
                &dense,
                (req.frames.len() + p.anchor_per_task.min(p.anchor.len())) * g.cells(),
                p.batch,
                1,
                p.workspace,
            )
            .max(memory_pred);
            let f = dense.flops_train_sample() * (samples * p.fixed_epochs) as f64 + label_flops;
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
        p.scheduler
            .admit(&variants, p.memory, p.memory_unit, &req)?;
        self.next_id += 1;
        self.queue.push(Queued {
            id,
            req,
            arrival: now,
            material: Material { labelled, samples },
            variants,
            predicted_acc,
            a0,
            label_flops,
            probe_flops,
            memory_pred,
        });
        Ok(())
    }

    /// Starts what the scheduler picks at `now` (runs their training for real).
    pub fn schedule(&mut self, now: f64) {
        schedule_step!(self, now);
    }

    fn start(&mut self, q: Queued<Material>, v: Variant, predicted_gain: f64, now: f64, conc: f64) {
        let p = self.params.clone();
        let end = q.req.end;
        let mut dense = self
            .dense
            .get(&end)
            .cloned()
            .unwrap_or_else(|| Mlp::new(&[p.grid.input(), 1, OUT], 0));
        let opts = TrainOpts {
            epochs: v.epochs,
            lr: p.lr,
            momentum: 0.9,
            batch: p.batch,
            seed: p.seed ^ (q.id as u64).wrapping_mul(0x9E37_79B9),
        };
        // Measured as the classification edge measures it: the cell samples' assembly and
        // the training, beside the model trained (counted in `measured_memory`).
        let (st, heap) = ferrolab_core::alloc::measure(|| {
            let mut all: Vec<&Labelled> = q.material.labelled.iter().collect();
            all.extend(self.anchor_frames(q.id));
            let data = self.cell_samples(&all, p.seed ^ q.id as u64);
            debug_assert_eq!(data.len(), q.material.samples);
            // As for classification: the masked (pruned) copy is retrained, so re-pruning at
            // the same sparsity keeps the same zeros; then int8.
            let (xs, targets): (Vec<Vec<f32>>, Vec<_>) = data.into_iter().unzip();
            train_detector_split(&mut dense, &xs, &targets, &opts)
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
            data: (),
        });
        self.peak_memory = self.peak_memory.max(memory_in_use(&self.running));
    }

    /// Moves the clock from `now` by `dt` seconds; returns the tasks that finished.
    pub fn advance(&mut self, now: f64, dt: f64) -> Vec<Completed> {
        let mut done = Vec::new();
        share_processor(
            &mut self.running,
            self.params.throughput,
            &mut self.busy_s,
            now,
            dt,
            |f| {
                let (c, ()) = f.install(&mut self.time, &mut self.deployed, &mut self.dense);
                done.push(c);
            },
        );
        done
    }
}
