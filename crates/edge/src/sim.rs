//! The simulated clock both tasks' experiments run on: one loop over the stream's seconds that
//! delivers finished models, hands uploads to the edge, steps every mobile end, evaluates the
//! ends' models and advances the edge, keeping the logs the report's shared metrics come from.
//! What differs between classification and detection — how a model is scored, what an end
//! reads each second, what its estimate is — comes from a [`World`]; the edge's side from
//! [`SimEdge`].

use crate::config::AdaEvoConfig;
use crate::detect::edge::DetEdge;
use crate::edge::{Completed, EdgeServer};
use crate::estimator::{mean, pearson};
use crate::experiment::TriggerLog;
use crate::mobile::{FrameResult, MobileEnd, TriggerMode};
use crate::model::Mlp;
use crate::protocol::{DriftType, ModelBlob, ProtocolError, TaskRequest};
use crate::stream::Schedule;
use std::collections::BTreeMap;

/// The edge as the simulation drives it (the classification [`EdgeServer`] and the detection
/// [`DetEdge`]).
pub trait SimEdge {
    /// Accepts a task (an error: the task is dropped).
    fn submit(&mut self, req: TaskRequest, now: f64) -> Result<(), ProtocolError>;
    /// Starts what the scheduler picks.
    fn schedule(&mut self, now: f64);
    /// Runs the started tasks for `dt` seconds; the finished ones.
    fn advance(&mut self, now: f64, dt: f64) -> Vec<Completed>;
    /// Tasks waiting.
    fn queued(&self) -> usize;
    /// Tasks running.
    fn running(&self) -> usize;
    /// Simulated seconds with at least one task running.
    fn busy_s(&self) -> f64;
    /// Highest training memory in use at once, bytes.
    fn peak_memory(&self) -> u64;
    /// Tasks started, and those of them started out of arrival order.
    fn starts(&self) -> (usize, usize);
}

// Both edges keep the same counters under the same names and the same methods, so one body
// serves them.
macro_rules! sim_edge {
    ($t:ty) => {
        impl SimEdge for $t {
            fn submit(&mut self, req: TaskRequest, now: f64) -> Result<(), ProtocolError> {
                <$t>::submit(self, req, now)
            }
            fn schedule(&mut self, now: f64) {
                <$t>::schedule(self, now)
            }
            fn advance(&mut self, now: f64, dt: f64) -> Vec<Completed> {
                <$t>::advance(self, now, dt)
            }
            fn queued(&self) -> usize {
                <$t>::queued(self)
            }
            fn running(&self) -> usize {
                <$t>::running(self)
            }
            fn busy_s(&self) -> f64 {
                self.busy_s
            }
            fn peak_memory(&self) -> u64 {
                self.peak_memory
            }
            fn starts(&self) -> (usize, usize) {
                (self.starts_total, self.starts_bypassing)
            }
        }
    };
}

sim_edge!(EdgeServer);
sim_edge!(DetEdge);

/// What one task's simulation reads from its prepared streams.
pub trait World {
    /// Evaluation sets of end `k`.
    fn eval_len(&self, k: usize) -> usize;
    /// Accuracy of `model` on end `k`'s evaluation set `tick`.
    fn accuracy(&self, model: &Mlp, k: usize, tick: usize) -> f64;
    /// End `k` reads second `t` of its stream.
    fn second(&mut self, k: usize, t: usize, end: &mut MobileEnd) -> FrameResult;
    /// End `k` uploads `req` at `tf` (diagnostics only).
    fn uploaded(&mut self, k: usize, tf: f64, req: &TaskRequest);
    /// End `k`'s label-free estimate at evaluation second `t`, where its true accuracy is `acc`.
    fn estimate(&mut self, k: usize, t: usize, acc: f64) -> f64;
    /// End `k` installed a model at `at` that gained `gain` until its next drift.
    fn installed(&mut self, _k: usize, _at: f64, _gain: f64) {}
}

/// QoE of one end: the share of its evaluations whose accuracy is at or above `threshold`.
pub fn qoe(accuracies: &[f64], threshold: f64) -> f64 {
    accuracies.iter().filter(|a| **a >= threshold).count() as f64 / accuracies.len().max(1) as f64
}

/// Drifts of `schedule` begun by `t`: the index of the segment `t` lies in.
pub fn segment(schedule: &Schedule, t: f64) -> usize {
    schedule.drifts.iter().filter(|d| d.start <= t).count()
}

/// The start of the first drift of `schedule` after `t`, or `life`.
pub fn next_start(schedule: &Schedule, t: f64, life: f64) -> f64 {
    schedule
        .drifts
        .iter()
        .map(|d| d.start)
        .find(|s| *s > t)
        .unwrap_or(life)
}

/// The logs of one method's run.
#[derive(Debug, Default)]
pub struct Log {
    /// Per end, `(t, accuracy, estimate)` at each evaluation.
    pub timeline: Vec<Vec<(f64, f64, f64)>>,
    pub triggers: Vec<TriggerLog>,
    /// Model installs `(t, end, version)`.
    pub installs: Vec<(f64, usize, u64)>,
    pub upload_bytes: usize,
    pub dropped: usize,
    /// Tasks still queued, running or uploading at the end.
    pub unfinished: usize,
    /// Profiler errors (memory and time relative, gain absolute), trigger → install latency.
    /// Memory as signed relative errors, (predicted − measured) / measured.
    pub mem_bias: Vec<f64>,
    pub time_err: Vec<f64>,
    pub gain_err: Vec<f64>,
    pub latency: Vec<f64>,
    /// Edge queue wait and training time per finished task.
    pub wait_s: Vec<f64>,
    pub train_s: Vec<f64>,
    /// Each install's gain over the model it replaced until the end's next drift, and the
    /// installs landing in a later drift segment than their trigger's.
    pub install_gain: Vec<f64>,
    pub stale: usize,
}

/// How the simulation scores installs.
pub struct Options {
    /// The method profiles its tasks (its predicted gain is scored).
    pub profiler: bool,
    /// At most this many evaluation sets enter an install's gain (detection's mAP is costly).
    pub gain_sets: usize,
}

/// Runs `ends`, drifting as `schedules` says, against `edge` for the stream's seconds
/// (`stream.seconds`; evaluations every `stream.eval_every_s`, transfers at
/// `mobile.bandwidth_mb_s`).
pub fn drive<E: SimEdge, W: World>(
    cfg: &AdaEvoConfig,
    schedules: &[Schedule],
    edge: &mut E,
    ends: &mut [MobileEnd],
    world: &mut W,
    opts: &Options,
) -> Log {
    let seconds = cfg.stream.seconds;
    let every = cfg.stream.eval_every_s;
    let life = seconds as f64;
    let n = ends.len();
    let bw = cfg.mobile.bandwidth_mb_s * 1e6;
    let mut log = Log {
        timeline: vec![Vec::new(); n],
        ..Log::default()
    };
    let mut uploads: Vec<(f64, TaskRequest)> = Vec::new();
    let mut deliveries: Vec<(f64, ModelBlob, f64, f64)> = Vec::new();
    for t in 0..seconds {
        let tf = t as f64;
        // Model versions arriving now.
        let mut i = 0;
        while i < deliveries.len() {
            if deliveries[i].0 > tf {
                i += 1;
                continue;
            }
            let (at, blob, pred_gain, trig) = deliveries.remove(i);
            let k = blob.end;
            let tick = (t / every).min(world.eval_len(k) - 1);
            let before = world.accuracy(&ends[k].model, k, tick);
            let old = ends[k].model.clone();
            if ends[k].install(&blob).is_err() {
                continue;
            }
            let after = world.accuracy(&ends[k].model, k, tick);
            let stop = next_start(&schedules[k], at, life);
            // The set of the install itself was just scored (`after − before`).
            let mut g = Vec::new();
            if ((tick * every) as f64) < stop && opts.gain_sets > 0 {
                g.push(after - before);
            }
            let mut tk = tick + 1;
            while !g.is_empty()
                && tk < world.eval_len(k)
                && ((tk * every) as f64) < stop
                && g.len() < opts.gain_sets
            {
                g.push(world.accuracy(&ends[k].model, k, tk) - world.accuracy(&old, k, tk));
                tk += 1;
            }
            let gain = if g.is_empty() {
                after - before
            } else {
                mean(&g)
            };
            log.install_gain.push(gain);
            world.installed(k, at, gain);
            if segment(&schedules[k], at) != segment(&schedules[k], trig) {
                log.stale += 1;
            }
            if opts.profiler {
                log.gain_err.push((pred_gain - (after - before)).abs());
            }
            log.latency.push(at - trig);
            log.installs.push((at, k, blob.version));
        }
        // Uploads reaching the edge.
        let mut arrived = false;
        let mut i = 0;
        while i < uploads.len() {
            if uploads[i].0 <= tf {
                let (at, req) = uploads.remove(i);
                let k = req.end;
                if edge.submit(req, at).is_err() {
                    log.dropped += 1;
                    ends[k].task_dropped();
                }
                arrived = true;
            } else {
                i += 1;
            }
        }
        if arrived {
            edge.schedule(tf);
        }
        for (k, end) in ends.iter_mut().enumerate() {
            let r = world.second(k, t, end);
            if let Some(req) = r.request {
                world.uploaded(k, tf, &req);
                let bytes = req.upload_bytes();
                log.upload_bytes += bytes;
                log.triggers.push(TriggerLog {
                    end: k,
                    t: tf,
                    onset: r.event.map_or(tf, |e| e.t1),
                    drift: req.drift.name().to_string(),
                    sent: true,
                });
                uploads.push((tf + bytes as f64 / bw, req));
            } else if let Some(ev) = r.event {
                log.triggers.push(TriggerLog {
                    end: k,
                    t: tf,
                    onset: ev.t1,
                    drift: DriftType::Unknown.name().to_string(),
                    sent: false,
                });
            }
        }
        if t % every == 0 {
            for (k, end) in ends.iter().enumerate() {
                let acc = world.accuracy(&end.model, k, t / every);
                let est = world.estimate(k, t, acc);
                log.timeline[k].push((tf, acc, est));
            }
        }
        let done = edge.advance(tf, 1.0);
        if !done.is_empty() {
            for c in &done {
                log.mem_bias.push(
                    (c.memory_pred as f64 - c.memory_measured as f64)
                        / c.memory_measured.max(1) as f64,
                );
                let actual = c.finished - c.started;
                log.wait_s.push(c.started - c.arrival);
                log.train_s.push(actual);
                log.time_err
                    .push((c.predicted_seconds - actual).abs() / actual.max(1e-9));
                let bytes = c.blob.bytes.len() as f64;
                let trig = log
                    .triggers
                    .iter()
                    .rev()
                    .find(|x| x.end == c.end && x.sent)
                    .map_or(c.arrival, |x| x.t);
                deliveries.push((
                    c.finished + bytes / bw,
                    c.blob.clone(),
                    c.predicted_gain,
                    trig,
                ));
            }
            edge.schedule(tf + 1.0);
        }
    }
    log.unfinished = edge.queued() + edge.running() + uploads.len();
    log
}

impl Log {
    /// The metrics both tasks report alike, into `mx`: QoE at both thresholds, accuracy,
    /// upload, edge utilisation and memory, task counts, the estimate's correlation, drift
    /// detection (ROD methods), profiler errors, install gains, queue times; `memory_budget` is
    /// the edge's memory in bytes. Returns the per-end QoE@90%.
    #[allow(clippy::too_many_arguments)]
    pub fn shared_metrics<E: SimEdge>(
        &self,
        mx: &mut BTreeMap<String, f64>,
        schedules: &[Schedule],
        life: f64,
        thresholds: (f64, f64),
        edge: &E,
        memory_budget: u64,
        trigger: TriggerMode,
        opts: &Options,
    ) -> Vec<f64> {
        let (theta90, theta80) = thresholds;
        let mut accs = Vec::new();
        let mut q90 = Vec::new();
        let mut q80 = Vec::new();
        let (mut est_all, mut acc_all) = (Vec::new(), Vec::new());
        for tl in &self.timeline {
            let a: Vec<f64> = tl.iter().map(|p| p.1).collect();
            q90.push(qoe(&a, theta90));
            q80.push(qoe(&a, theta80));
            accs.push(mean(&a));
            for p in tl.iter().skip(1) {
                est_all.push(p.2);
                acc_all.push(p.1);
            }
        }
        // Detection scores against the true drifts, over all of them (key suffix "") and by
        // true type ("_sudden", …): (drifts, hits, typed right, latencies). Every type in the
        // schedules gets its keys, detected or not, so that seeds report the same keys.
        let mut scores: BTreeMap<String, (usize, usize, usize, Vec<f64>)> = BTreeMap::new();
        scores.insert(String::new(), Default::default());
        for (k, sch) in schedules.iter().enumerate() {
            for (j, d) in sch.drifts.iter().enumerate() {
                let next = sch.drifts.get(j + 1).map_or(life, |x| x.start);
                let hit = self
                    .triggers
                    .iter()
                    .find(|x| x.end == k && x.t >= d.start && x.t < next && x.drift != "unknown");
                for suffix in [String::new(), format!("_{}", d.kind)] {
                    let row = scores.entry(suffix).or_default();
                    row.0 += 1;
                    if let Some(tr) = hit {
                        row.1 += 1;
                        row.3.push(tr.t - d.end());
                        row.2 += usize::from(tr.drift == d.kind);
                    }
                }
            }
        }
        let mut put = |k: &str, v: f64| {
            mx.insert(k.to_string(), v);
        };
        put("avg_qoe_t90", mean(&q90));
        put("avg_qoe_t80", mean(&q80));
        put("avg_accuracy", mean(&accs));
        put("upload_mb", self.upload_bytes as f64 / 1e6);
        put("edge_utilisation", edge.busy_s() / life);
        put(
            "tasks_triggered",
            self.triggers.iter().filter(|x| x.sent).count() as f64,
        );
        put("tasks_completed", self.installs.len() as f64);
        put("tasks_unfinished", self.unfinished as f64);
        put("tasks_dropped", self.dropped as f64);
        put("evolution_latency_seconds", mean(&self.latency));
        put(
            "edge_peak_memory_frac",
            edge.peak_memory() as f64 / memory_budget as f64,
        );
        put("estimate_correlation", pearson(&est_all, &acc_all));
        if trigger == TriggerMode::Rod {
            for (suffix, (n, h, right, l)) in &scores {
                put(
                    &format!("drift_detection_rate{suffix}"),
                    *h as f64 / (*n).max(1) as f64,
                );
                put(
                    &format!("drift_type_accuracy{suffix}"),
                    *right as f64 / (*h).max(1) as f64,
                );
                put(&format!("drift_latency_seconds{suffix}"), mean(l));
            }
        }
        if opts.profiler && !self.mem_bias.is_empty() {
            let abs: Vec<f64> = self.mem_bias.iter().map(|b| b.abs()).collect();
            put("profiler_memory_error_frac", mean(&abs));
            // Signed: above 0 the prediction is larger than what training allocated.
            put("profiler_memory_bias_frac", mean(&self.mem_bias));
            // 1: "measured" is the heap peak the counting allocator saw; 0: it is the sizes
            // of the buffers training allocates (no counting allocator in this process).
            put(
                "profiler_memory_heap_measured",
                f64::from(u8::from(ferrolab_core::alloc::counting())),
            );
            put("profiler_time_error_frac", mean(&self.time_err));
            put("profiler_gain_mae", mean(&self.gain_err));
        }
        if !self.installs.is_empty() {
            put("install_gain_until_next_drift", mean(&self.install_gain));
            put(
                "installs_after_next_drift_frac",
                self.stale as f64 / self.installs.len() as f64,
            );
        }
        if !self.wait_s.is_empty() {
            put("edge_queue_wait_seconds", mean(&self.wait_s));
            put("edge_train_seconds", mean(&self.train_s));
        }
        let (started, bypassing) = edge.starts();
        if started > 0 {
            put(
                "edge_starts_out_of_order_frac",
                bypassing as f64 / started as f64,
            );
        }
        q90
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::mobile_params_at;
    use crate::stream::Drift;

    /// An edge that finishes the given tasks at their times and takes no uploads.
    struct ScriptedEdge {
        done: Vec<Completed>,
    }

    impl SimEdge for ScriptedEdge {
        fn submit(&mut self, _: TaskRequest, _: f64) -> Result<(), ProtocolError> {
            Err(ProtocolError::BadRequest("scripted".into()))
        }
        fn schedule(&mut self, _: f64) {}
        fn advance(&mut self, now: f64, dt: f64) -> Vec<Completed> {
            let (due, later) = self
                .done
                .drain(..)
                .partition(|c| c.finished >= now && c.finished < now + dt);
            self.done = later;
            due
        }
        fn queued(&self) -> usize {
            0
        }
        fn running(&self) -> usize {
            self.done.len()
        }
        fn busy_s(&self) -> f64 {
            0.0
        }
        fn peak_memory(&self) -> u64 {
            0
        }
        fn starts(&self) -> (usize, usize) {
            (0, 0)
        }
    }

    /// The factory model scores 0, any other (the shipped one, as the end decoded it) 1 on
    /// evaluation sets 0 and 1 and 0.5 after them; counts the seconds read.
    struct MarkWorld {
        factory: Mlp,
        sets: usize,
        calls: usize,
        installed: Vec<(usize, f64, f64)>,
    }

    impl World for MarkWorld {
        fn eval_len(&self, _: usize) -> usize {
            self.sets
        }
        fn accuracy(&self, model: &Mlp, _: usize, tick: usize) -> f64 {
            match (model == &self.factory, tick) {
                (true, _) => 0.0,
                (false, 0 | 1) => 1.0,
                (false, _) => 0.5,
            }
        }
        fn second(&mut self, _: usize, _: usize, _: &mut MobileEnd) -> FrameResult {
            self.calls += 1;
            FrameResult {
                cc: 0.5,
                predicted: 0,
                request: None,
                event: None,
            }
        }
        fn uploaded(&mut self, _: usize, _: f64, _: &TaskRequest) {}
        fn estimate(&mut self, _: usize, _: usize, _: f64) -> f64 {
            0.5
        }
        fn installed(&mut self, k: usize, at: f64, gain: f64) {
            self.installed.push((k, at, gain));
        }
    }

    fn completed(end: usize, version: u64, model: &Mlp, finished: f64) -> Completed {
        Completed {
            end,
            seq: version,
            blob: ModelBlob::encode(end, version, model),
            arrival: 0.0,
            started: 0.0,
            finished,
            flops: 0.0,
            epochs: 1,
            predicted_seconds: finished,
            predicted_gain: 0.25,
            memory_pred: 10,
            memory_measured: 10,
        }
    }

    #[test]
    fn drive_installs_what_an_end_accepts_and_scores_its_gain_until_the_next_drift() {
        let mut cfg = AdaEvoConfig::default();
        cfg.stream.seconds = 60;
        cfg.stream.eval_every_s = 10;
        cfg.mobile.bandwidth_mb_s = 1e9;
        let factory = cfg.new_mobile(1);
        let shipped = cfg.new_mobile(2);
        let params = mobile_params_at(&cfg, "no_evolution", 0.9, 60.0);
        let mut ends: Vec<MobileEnd> = (0..2)
            .map(|k| MobileEnd::new(k, factory.clone(), params))
            .collect();
        // End 0 gets a blob that is not newer than its running version 0 (refused), then
        // version 1, then version 1 again (refused: no longer newer). End 1 gets nothing.
        let mut edge = ScriptedEdge {
            done: vec![
                completed(0, 0, &shipped, 3.0),
                completed(0, 1, &shipped, 5.0),
                completed(0, 1, &shipped, 5.0),
            ],
        };
        let drift = Drift::parse("sudden:dark@40").unwrap();
        let schedules = vec![
            Schedule {
                drifts: vec![drift],
                strength: 1.0,
            };
            2
        ];
        let mut world = MarkWorld {
            factory: factory.clone(),
            sets: 6,
            calls: 0,
            installed: Vec::new(),
        };
        let opts = Options {
            profiler: true,
            gain_sets: 2,
        };
        let log = drive(&cfg, &schedules, &mut edge, &mut ends, &mut world, &opts);
        assert_eq!(world.calls, 2 * 60, "every end reads every second");
        assert_eq!(log.timeline[0].len(), 6);
        assert_eq!(log.installs.len(), 1);
        let (at, end, version) = log.installs[0];
        assert_eq!((end, version), (0, 1));
        assert!(
            at > 5.0 && at < 7.0,
            "delivered after the bytes' time: {at}"
        );
        assert_eq!(ends[0].version, 1);
        assert_eq!(ends[1].version, 0);
        // Gain over the sets before the next drift (0–3), capped at 2: 1 and 1, where all
        // four would give 0.75. The profiler predicted 0.25 for an immediate gain of 1.
        assert_eq!(log.install_gain, vec![1.0]);
        assert_eq!(world.installed, vec![(0, at, 1.0)]);
        assert_eq!(log.gain_err, vec![0.75]);
        assert_eq!(log.stale, 0);
        let acc0: Vec<f64> = log.timeline[0].iter().map(|p| p.1).collect();
        assert_eq!(acc0, vec![0.0, 1.0, 0.5, 0.5, 0.5, 0.5]);
        assert!(log.timeline[1].iter().all(|p| p.1 == 0.0));
        assert_eq!(log.unfinished, 0);
        let mut mx = BTreeMap::new();
        let q90 = log.shared_metrics(
            &mut mx,
            &schedules,
            60.0,
            (0.9, 0.8),
            &edge,
            1,
            TriggerMode::Never,
            &opts,
        );
        assert_eq!(q90, vec![1.0 / 6.0, 0.0]);
        assert_eq!(mx["tasks_completed"], 1.0);
        assert_eq!(mx["profiler_gain_mae"], 0.75);
        assert!(!mx.contains_key("drift_detection_rate"));
    }
}
