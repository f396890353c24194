//! A mobile end: runs its compressed model on every frame, keeps the label-free estimate,
//! decides when to evolve (ROD trigger or periodic), classifies the drift, samples frames for
//! the upload, and swaps in shipped model versions after checking their checksum.
//!
//! The net layer's mobile process drives the same type: [`MobileEnd::on_frame`] per frame
//! (it returns the request to publish), [`MobileEnd::install`] when a blob arrives,
//! [`MobileEnd::task_dropped`] when the edge drops its task.

use crate::estimator::confidence;
use crate::model::Mlp;
use crate::protocol::{DriftType, Frame, ModelBlob, ProtocolError, TaskRequest};
use crate::sampling::{self, Obs};
use crate::stream::StreamFrame;
use crate::trigger::{PeriodicTrigger, RodParams, RodTrigger, TriggerEvent};
use std::collections::VecDeque;

/// How an end decides to evolve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TriggerMode {
    /// AdaEvo: when a drift has ended.
    Rod,
    /// Naive: every `period` seconds.
    Periodic(f64),
    /// Never (no evolution).
    Never,
}

/// How an end picks the frames to upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplingMode {
    /// By drift type (sudden / incremental / gradual policies).
    DriftAware,
    /// A fixed rate over the last `fixed_window_s` seconds.
    Fixed,
}

/// Settings of a mobile end.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MobileParams {
    /// Trigger thresholds.
    pub rod: RodParams,
    /// Whether the trigger reads the frames' condition descriptors too.
    pub settle_on_descriptors: bool,
    /// Longest fitted confidence transition (seconds) of a sudden drift.
    pub sudden_max_s: f64,
    /// Alternation statistic threshold (incremental above, gradual below).
    pub alternation_ratio: f64,
    /// Most frames per upload.
    pub upload_budget: usize,
    /// Window of fixed-rate sampling, seconds.
    pub fixed_window_s: f64,
    /// Trigger mode.
    pub trigger: TriggerMode,
    /// Sampling mode.
    pub sampling: SamplingMode,
    /// The end's QoE threshold (accuracy).
    pub threshold: f64,
    /// Stream length, seconds (for the scheduler's horizon).
    pub life_s: f64,
}

/// What one frame produced.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameResult {
    /// The frame's classification confidence.
    pub cc: f64,
    /// The predicted class.
    pub predicted: usize,
    /// A request to publish, when the end triggered.
    pub request: Option<TaskRequest>,
    /// The trigger event behind it (ROD mode).
    pub event: Option<TriggerEvent>,
}

/// One mobile end.
#[derive(Debug, Clone)]
pub struct MobileEnd {
    /// End id.
    pub id: usize,
    /// The running (compressed) model.
    pub model: Mlp,
    /// Its version (0 = factory).
    pub version: u64,
    params: MobileParams,
    rod: RodTrigger,
    periodic: PeriodicTrigger,
    buffer: VecDeque<Obs>,
    old: Vec<Vec<f32>>,
    seq: u64,
    in_flight: bool,
}

impl MobileEnd {
    /// An end running `model` (version 0).
    pub fn new(id: usize, model: Mlp, params: MobileParams) -> MobileEnd {
        let period = match params.trigger {
            TriggerMode::Periodic(p) => p,
            _ => f64::INFINITY,
        };
        // Ends that start together would otherwise all fire in the same second, every period
        // (sixteen tasks at once for the edge's FIFO queue); independent users' schedules are
        // not in phase, so each end's phase is spread over the period by its id (golden-ratio
        // sequence: evenly spread for any number of ends). The first trigger comes after one
        // whole period, so that every upload has a full fixed-rate window to sample from.
        let phase = if period.is_finite() {
            period * (id as f64 * 0.618_033_988_749_895).fract()
        } else {
            0.0
        };
        MobileEnd {
            id,
            model,
            version: 0,
            params,
            rod: RodTrigger::new(params.rod),
            periodic: PeriodicTrigger {
                period,
                last: phase,
            },
            buffer: VecDeque::new(),
            old: Vec::new(),
            seq: 0,
            in_flight: false,
        }
    }

    /// Whether a task of this end is in flight.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Processes the frame captured at `t` (raw `pixels`, model `input`).
    pub fn on_frame(&mut self, t: f64, pixels: &[u8], input: &[f32]) -> FrameResult {
        let fwd = self.model.forward(input);
        let cc = confidence(&fwd.probs);
        let predicted = crate::model::argmax(&fwd.probs);
        self.on_estimate(t, pixels, input, cc, predicted)
    }

    /// Processes one simulated second of frames captured from `t` on, `frames` of them evenly
    /// spaced: the first goes through [`MobileEnd::on_frame`] (trigger, estimate, drift
    /// typing), the others are only kept as upload candidates.
    pub fn on_second(&mut self, t: usize, frames: &[StreamFrame]) -> FrameResult {
        let fps = frames.len().max(1) as f64;
        let tf = t as f64;
        let Some((first, rest)) = frames.split_first() else {
            return FrameResult {
                cc: 0.0,
                predicted: 0,
                request: None,
                event: None,
            };
        };
        let out = self.on_frame(tf, &first.pixels, &first.input);
        for (j, f) in rest.iter().enumerate() {
            self.record(tf + (j + 1) as f64 / fps, &f.pixels, &f.input);
        }
        out
    }

    /// Keeps a frame captured between two key frames as an upload candidate (the trigger does
    /// not read it).
    pub fn record(&mut self, t: f64, pixels: &[u8], input: &[f32]) {
        let cc = confidence(&self.model.forward(input).probs);
        self.buffer.push_back(Obs {
            t,
            pixels: pixels.to_vec(),
            input: input.to_vec(),
            cc,
            key: false,
        });
        self.trim(t);
    }

    /// Drops frames older than the longest drift the trigger waits out plus its reference
    /// window and the fixed-rate window (seconds, counted in key frames).
    fn trim(&mut self, t: f64) {
        let keep = (self.params.rod.window * 2
            + self.params.rod.step * self.params.rod.max_slides
            + self.params.fixed_window_s as usize) as f64;
        while self.buffer.front().is_some_and(|o| o.t <= t - keep) {
            self.buffer.pop_front();
        }
    }

    /// Everything after inference: buffers the frame with its label-free estimate `cc`, runs
    /// the trigger and, when it fires, samples the upload. The detection task computes its
    /// estimate (CLC = mean CC·LC over the frame's detections) itself and enters here, so
    /// both tasks share one trigger, drift typing and sampling; `input` is then the frame's
    /// descriptor image (drift typing and feature-space sampling read it).
    pub fn on_estimate(
        &mut self,
        t: f64,
        pixels: &[u8],
        input: &[f32],
        cc: f64,
        predicted: usize,
    ) -> FrameResult {
        self.buffer.push_back(Obs {
            t,
            pixels: pixels.to_vec(),
            input: input.to_vec(),
            cc,
            key: true,
        });
        self.trim(t);
        let mut out = FrameResult {
            cc,
            predicted,
            request: None,
            event: None,
        };
        match self.params.trigger {
            TriggerMode::Never => {}
            TriggerMode::Periodic(_) => {
                if self.periodic.observe(t) && !self.in_flight {
                    let lo = t - self.params.fixed_window_s;
                    let interval: Vec<&Obs> = self.buffer.iter().filter(|o| o.t > lo).collect();
                    let idx = sampling::even(interval.len(), self.params.upload_budget);
                    out.request = Some(self.request(t, DriftType::Unknown, &interval, &idx));
                    self.sent();
                }
            }
            TriggerMode::Rod => {
                let had_ref = self.rod.reference().is_some();
                let desc = self
                    .params
                    .settle_on_descriptors
                    .then(|| sampling::descriptor(input));
                let ev = self.rod.observe_described(t, cc, desc);
                if !had_ref && self.rod.reference().is_some() {
                    let w = self.params.rod.window;
                    self.old = self
                        .buffer
                        .iter()
                        .rev()
                        .filter(|o| o.key)
                        .take(w)
                        .map(|o| o.input.clone())
                        .collect();
                }
                if let Some(e) = ev {
                    if !self.in_flight {
                        out.request = Some(self.on_trigger(&e));
                        self.sent();
                    }
                    out.event = Some(e);
                }
            }
        }
        out
    }

    fn on_trigger(&self, e: &TriggerEvent) -> TaskRequest {
        let interval: Vec<&Obs> = self
            .buffer
            .iter()
            .filter(|o| o.t >= e.t1 && o.t <= e.t3)
            .collect();
        let old: Vec<&[f32]> = self.old.iter().map(Vec::as_slice).collect();
        // The type is read off the confidence trajectory from a window before the onset (the
        // level it left) to the trigger.
        let lead = self.params.rod.window as f64;
        let span: Vec<&Obs> = self
            .buffer
            .iter()
            .filter(|o| o.key && o.t >= e.t1 - lead && o.t <= e.t3)
            .collect();
        let drift = sampling::classify_drift(
            &span,
            &old,
            self.params.rod.window,
            self.params.sudden_max_s,
            self.params.alternation_ratio,
        );
        let budget = self.params.upload_budget;
        match self.params.sampling {
            SamplingMode::DriftAware => {
                let c = sampling::centroid(&old);
                let idx = sampling::select(drift, &interval, &c, budget);
                self.request(e.t3, drift, &interval, &idx)
            }
            SamplingMode::Fixed => {
                let lo = e.t3 - self.params.fixed_window_s;
                let recent: Vec<&Obs> = self.buffer.iter().filter(|o| o.t > lo).collect();
                let idx = sampling::even(recent.len(), budget);
                self.request(e.t3, drift, &recent, &idx)
            }
        }
    }

    fn sent(&mut self) {
        self.seq += 1;
        self.in_flight = true;
    }

    fn request(&self, t: f64, drift: DriftType, from: &[&Obs], idx: &[usize]) -> TaskRequest {
        let recent: Vec<f64> = self
            .buffer
            .iter()
            .rev()
            .filter(|o| o.key)
            .take(self.params.rod.window)
            .map(|o| o.cc)
            .collect();
        let estimate = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        let frames: Vec<Frame> = idx
            .iter()
            .filter_map(|&i| from.get(i))
            .map(|o| Frame {
                t: o.t,
                pixels: o.pixels.clone(),
            })
            .collect();
        let seq = self.seq;
        TaskRequest {
            end: self.id,
            seq,
            model_version: self.version,
            trigger_t: t,
            drift,
            estimate,
            threshold: self.params.threshold,
            remaining_s: (self.params.life_s - t).max(0.0),
            frames,
        }
    }

    /// Installs a shipped model after verifying its checksum; a corrupt or stale blob is
    /// refused and the running model kept.
    ///
    /// A refused blob leaves the task in flight on purpose: delivery is at-least-once (the NATS
    /// runtime redelivers an unacknowledged blob, and a corrupt copy is answered "rejected"), so
    /// the next copy of the same version still installs; a caller that gives up on the task
    /// calls [`MobileEnd::task_dropped`].
    pub fn install(&mut self, blob: &ModelBlob) -> Result<(), ProtocolError> {
        if blob.end != self.id {
            return Err(ProtocolError::BadRequest(format!(
                "blob for end {} delivered to end {}",
                blob.end, self.id
            )));
        }
        let model = blob.decode()?;
        if !model.same_shape(&self.model) {
            return Err(ProtocolError::Malformed(format!(
                "blob model {}, this end runs {}",
                model.describe(),
                self.model.describe()
            )));
        }
        if blob.version <= self.version {
            return Err(ProtocolError::BadRequest(format!(
                "blob version {} is not newer than the running {}",
                blob.version, self.version
            )));
        }
        self.model = model;
        self.version = blob.version;
        self.in_flight = false;
        self.rod.reset();
        self.old.clear();
        Ok(())
    }

    /// The edge dropped this end's task: allow a new trigger.
    pub fn task_dropped(&mut self) {
        self.in_flight = false;
        self.rod.reset();
        self.old.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn periodic_params() -> MobileParams {
        MobileParams {
            rod: RodParams {
                window: 10,
                subwindows: 2,
                step: 2,
                rod_threshold: 0.05,
                stable_f: 3.0,
                stable_t: 2.0,
                max_slides: 10,
            },
            settle_on_descriptors: true,
            sudden_max_s: 25.0,
            alternation_ratio: 1.08,
            upload_budget: 8,
            fixed_window_s: 20.0,
            trigger: TriggerMode::Periodic(100.0),
            sampling: SamplingMode::Fixed,
            threshold: 0.8,
            life_s: 1000.0,
        }
    }

    #[test]
    fn periodic_ends_are_not_in_phase() {
        let params = periodic_params();
        let model = Mlp::new(&[crate::stream::INPUT, 4, crate::stream::CLASSES], 0);
        let pixels = vec![0u8; crate::stream::SIDE * crate::stream::SIDE];
        let input = vec![0f32; crate::stream::INPUT];
        let mut first = Vec::new();
        for id in 0..16 {
            let mut end = MobileEnd::new(id, model.clone(), params);
            let t = (0..=200).find(|&t| end.on_frame(t as f64, &pixels, &input).request.is_some());
            let t = t.expect("every end fires within two periods");
            assert!(t >= 100, "end {id} fired at {t}, before one whole period");
            first.push(t);
        }
        let mut distinct = first.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // 16 ends over a 100 s period: no two in the same second, as in phase they all were.
        assert_eq!(distinct.len(), 16, "{first:?}");
    }

    /// At several frames per second the trigger fires when it does at one (it reads the key
    /// frames only), and the upload samples from every frame of its window.
    #[test]
    fn frame_rate_fills_the_upload_not_the_trigger() {
        let params = MobileParams {
            upload_budget: 50,
            ..periodic_params()
        };
        let model = Mlp::new(&[crate::stream::INPUT, 4, crate::stream::CLASSES], 0);
        let frame = |t: f64| StreamFrame {
            pixels: vec![(t * 3.0) as u8; crate::stream::SIDE * crate::stream::SIDE],
            input: vec![t as f32 / 100.0; crate::stream::INPUT],
            label: 0,
            new_concept: false,
        };
        let first = |fps: usize| {
            let mut end = MobileEnd::new(3, model.clone(), params);
            (0..300).find_map(|t| {
                let frames: Vec<StreamFrame> = (0..fps)
                    .map(|j| frame(t as f64 + j as f64 / fps as f64))
                    .collect();
                end.on_second(t, &frames).request.map(|r| (t, r))
            })
        };
        let (t1, r1) = first(1).expect("fires at 1 fps");
        let (t3, r3) = first(3).expect("fires at 3 fps");
        assert_eq!(t1, t3);
        // A 20 s fixed-rate window: 20 frames at 1 fps, the 50-frame budget at 3 fps, all from
        // the window and in time order.
        assert_eq!(r1.frames.len(), 20);
        assert_eq!(r3.frames.len(), 50);
        let lo = t3 as f64 - params.fixed_window_s;
        assert!(r3.frames.iter().all(|f| f.t > lo && f.t <= t3 as f64));
        assert!(r3.frames.windows(2).all(|w| w[0].t < w[1].t));
        assert!(r3.frames.iter().any(|f| f.t.fract() != 0.0));
    }
}
