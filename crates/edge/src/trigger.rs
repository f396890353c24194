//! When to evolve: AdaEvo's sliding-window trigger, which fires when a drift has *ended*, and
//! the periodic trigger of naive evolution.
//!
//! Operational form of the paper's rule (its thresholds are not published; ours are config
//! keys): after each model swap the first `window` frames set the reference estimate `CLC₁`.
//! Every `step` frames, `ROD = (CLC₁ − CLC₂)/CLC₁` with `CLC₂` the mean of the last `window`
//! frames; `ROD > rod_threshold` marks a drift's onset `t₁` (the current window's start).
//! From then on the drift has ended at the first slide whose window is *stable*: its
//! `subwindows` sub-window means vary no more than sampling noise explains — the ratio of
//! their variance to the pooled within-sub-window variance over the sub-window length (a
//! one-way ANOVA F statistic) is below `stable_f`, and the window's linear trend is not
//! significant (|t| of its slope below `stable_t`) — while the decline still holds
//! (`ROD > rod_threshold / 2`; a recovery back above that cancels the alarm). Then the trigger
//! fires with `t₃` = now and stays quiet until [`RodTrigger::reset`] (the next model swap).
//! The reference after a swap is at least the previous reference × (1 − `rod_threshold`): an
//! evolved model that is still (or more) confused than before the drift keeps the end
//! triggering instead of becoming its new normal.
//!
//! Per-frame confidence is noisy: over one window a slow ramp (an incremental or gradual
//! drift of a hundred seconds) barely shows a trend in it, so a confidence-only test calls
//! the drift over while the inputs are still moving. A caller that also passes each frame's
//! condition descriptor ([`crate::sampling::descriptor`], [`RodTrigger::observe_described`])
//! adds a second settling test on the frames' position between the reference window's
//! concept and the current window's ([`crate::sampling::concept_axis`]): the position must
//! show no trend over the window and its ramp, fitted since a window before the onset, must
//! have ended before the window starts. Where the descriptors do not tell the two windows
//! apart (a rotation) the test passes and the confidence alone decides.

use crate::estimator::{mean, variance};
use std::collections::VecDeque;

/// Thresholds of the ROD trigger.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RodParams {
    /// Frames per window.
    pub window: usize,
    /// Sub-windows per window for the stabilisation test.
    pub subwindows: usize,
    /// Frames per slide.
    pub step: usize,
    /// ROD above which a drift has started.
    pub rod_threshold: f64,
    /// F statistic below which the window counts as stable.
    pub stable_f: f64,
    /// |t| of the window's linear trend below which it counts as stable.
    pub stable_t: f64,
    /// Slides after onset beyond which the trigger fires anyway (a drift that never settles).
    pub max_slides: usize,
}

/// A frame's condition descriptor ([`crate::sampling::descriptor`]).
pub type Descriptor = [f64; 6];

/// A fired trigger.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TriggerEvent {
    /// Estimated drift onset, seconds.
    pub t1: f64,
    /// Drift end (the trigger time), seconds.
    pub t3: f64,
    /// Window slides between onset and end.
    pub slides: usize,
    /// ROD at the trigger.
    pub rod: f64,
    /// The reference estimate `CLC₁`.
    pub reference: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Reference,
    Stable {
        reference: f64,
    },
    Drifting {
        reference: f64,
        t1: f64,
        slides: usize,
    },
    Fired {
        reference: f64,
    },
}

/// The sliding-window ROD trigger of one mobile end.
#[derive(Debug, Clone)]
pub struct RodTrigger {
    params: RodParams,
    history: VecDeque<(f64, f64)>,
    /// Longer than `history`: the frames since a window before the onset, for the ramp fit.
    /// Each frame's time, confidence and, when the caller passes it, descriptor.
    trace: VecDeque<(f64, f64, Option<Descriptor>)>,
    /// The reference window's descriptors.
    reference_desc: Vec<Descriptor>,
    since_reset: usize,
    phase: Phase,
    floor: f64,
}

impl RodTrigger {
    /// A trigger establishing its reference from the next `window` frames.
    pub fn new(params: RodParams) -> RodTrigger {
        RodTrigger {
            params,
            history: VecDeque::new(),
            trace: VecDeque::new(),
            reference_desc: Vec::new(),
            since_reset: 0,
            phase: Phase::Reference,
            floor: 0.0,
        }
    }

    /// Starts over (after a model swap: the new model's confidence is the new reference).
    pub fn reset(&mut self) {
        let last = match self.phase {
            Phase::Fired { reference } => Some(reference),
            _ => self.reference(),
        };
        if let Some(r) = last {
            self.floor = r * (1.0 - self.params.rod_threshold);
        }
        self.history.clear();
        self.trace.clear();
        self.reference_desc.clear();
        self.since_reset = 0;
        self.phase = Phase::Reference;
    }

    /// The reference `CLC₁`, once set.
    pub fn reference(&self) -> Option<f64> {
        match self.phase {
            Phase::Stable { reference } | Phase::Drifting { reference, .. } => Some(reference),
            _ => None,
        }
    }

    /// Whether the trigger has fired and waits for a reset.
    pub fn fired(&self) -> bool {
        matches!(self.phase, Phase::Fired { .. })
    }

    /// Feeds one frame's confidence at time `t`; returns the event when the trigger fires.
    pub fn observe(&mut self, t: f64, cc: f64) -> Option<TriggerEvent> {
        self.observe_described(t, cc, None)
    }

    /// [`RodTrigger::observe`] with the frame's condition descriptor, which the settling test
    /// reads too (module docs). Pass descriptors for every frame or for none.
    pub fn observe_described(
        &mut self,
        t: f64,
        cc: f64,
        desc: Option<Descriptor>,
    ) -> Option<TriggerEvent> {
        let p = self.params;
        self.history.push_back((t, cc));
        while self.history.len() > p.window {
            self.history.pop_front();
        }
        let keep = 2 * p.window + p.step.max(1) * p.max_slides;
        self.trace.push_back((t, cc, desc));
        while self.trace.len() > keep {
            self.trace.pop_front();
        }
        self.since_reset += 1;
        if self.history.len() < p.window {
            return None;
        }
        let vals: Vec<f64> = self.history.iter().map(|h| h.1).collect();
        let cur = mean(&vals);
        match self.phase {
            Phase::Reference => {
                self.phase = Phase::Stable {
                    reference: cur.max(self.floor),
                };
                let skip = self.trace.len().saturating_sub(p.window);
                self.reference_desc = self.trace.iter().skip(skip).filter_map(|h| h.2).collect();
                None
            }
            Phase::Fired { .. } => None,
            _ if !self.since_reset.is_multiple_of(p.step.max(1)) => None,
            Phase::Stable { reference } => {
                let rod = (reference - cur) / reference.max(1e-9);
                if rod > p.rod_threshold {
                    let k = change_point(&vals);
                    let t1 = self.history.get(k).map_or(t, |h| h.0);
                    self.phase = Phase::Drifting {
                        reference,
                        t1,
                        slides: 0,
                    };
                }
                None
            }
            Phase::Drifting {
                reference,
                t1,
                slides,
            } => {
                let slides = slides + 1;
                let rod = (reference - cur) / reference.max(1e-9);
                if rod < p.rod_threshold / 2.0 {
                    self.phase = Phase::Stable { reference };
                    return None;
                }
                let front = self.history.front().map_or(t, |h| h.0);
                let stable = front >= t1
                    && self.transition_end(t1) <= front
                    && f_statistic(&vals, p.subwindows) < p.stable_f
                    && trend_t(&vals).abs() < p.stable_t
                    && self.concept_settled(t1, front);
                if stable || slides >= p.max_slides {
                    self.phase = Phase::Fired { reference };
                    return Some(TriggerEvent {
                        t1,
                        t3: t,
                        slides,
                        rod,
                        reference,
                    });
                }
                self.phase = Phase::Drifting {
                    reference,
                    t1,
                    slides,
                };
                None
            }
        }
    }
}

impl RodTrigger {
    /// End `τ₂` of the confidence ramp fitted to the frames since a window before `t1`.
    fn transition_end(&self, t1: f64) -> f64 {
        let lead = t1 - self.params.window as f64;
        let (ts, ys): (Vec<f64>, Vec<f64>) = self
            .trace
            .iter()
            .filter(|h| h.0 >= lead)
            .map(|h| (h.0, h.1))
            .unzip();
        crate::sampling::ramp_fit(&ts, &ys, 30).map_or(t1, |f| f.tau2)
    }

    /// The descriptor half of the settling test (module docs): whether the frames' position
    /// between the reference concept and the current window's has stopped moving by `front`,
    /// the current window's first frame. True when no descriptors were given or the two
    /// windows' descriptors do not differ.
    fn concept_settled(&self, t1: f64, front: f64) -> bool {
        let w = self.params.window;
        if self.reference_desc.len() < 2 {
            return true;
        }
        let lead = t1 - w as f64;
        let described: Vec<(f64, Descriptor)> = self
            .trace
            .iter()
            .filter_map(|h| h.2.map(|d| (h.0, d)))
            .collect();
        if described.len() < w {
            return true;
        }
        let current: Vec<Descriptor> = described[described.len() - w..]
            .iter()
            .map(|d| d.1)
            .collect();
        let (ts, span): (Vec<f64>, Vec<Descriptor>) =
            described.into_iter().filter(|d| d.0 >= lead).unzip();
        let Some((z, so, _)) = crate::sampling::concept_axis(&self.reference_desc, &current, &span)
        else {
            return true;
        };
        // The reference frames' own spread on the axis, in units of the distance moved: above
        // one, the two windows' conditions overlap and the position carries no drift signal.
        // Unlike the classifier, the current window's spread is not gated: mid-way through a
        // gradual drift it alternates between the concepts, and that is when the test matters.
        if so > 1.0 || z.len() < w {
            return true;
        }
        if trend_t(&z[z.len() - w..]).abs() >= self.params.stable_t {
            return false;
        }
        crate::sampling::ramp_fit(&ts, &z, 30).is_none_or(|f| f.tau2 <= front)
    }
}

/// The index where `vals` most likely stepped down: the split `k` maximising
/// `k(n−k)/n · (mean(vals[..k]) − mean(vals[k..]))` (the likelihood-ratio change point of a
/// mean shift under equal noise); 0 when no split shows a drop.
pub fn change_point(vals: &[f64]) -> usize {
    let n = vals.len();
    let total: f64 = vals.iter().sum();
    let mut left = 0.0;
    let (mut best, mut best_k) = (0.0, 0);
    for k in 1..n {
        left += vals[k - 1];
        let (kf, nf) = (k as f64, n as f64);
        let drop = left / kf - (total - left) / (nf - kf);
        let score = kf * (nf - kf) / nf * drop;
        if score > best {
            best = score;
            best_k = k;
        }
    }
    best_k
}

/// One-way ANOVA F statistic of `vals` cut into `k` equal sub-windows: the variance of the
/// sub-window means over what within-sub-window noise alone would give them.
pub fn f_statistic(vals: &[f64], k: usize) -> f64 {
    let k = k.max(2);
    let len = vals.len() / k;
    if len < 2 {
        return f64::INFINITY;
    }
    let subs: Vec<&[f64]> = (0..k).map(|i| &vals[i * len..(i + 1) * len]).collect();
    let means: Vec<f64> = subs.iter().map(|s| mean(s)).collect();
    let within = mean(&subs.iter().map(|s| variance(s)).collect::<Vec<_>>());
    let between = variance(&means);
    between / (within / len as f64).max(1e-12)
}

/// The t statistic of the least-squares slope of `vals` against their index: the
/// sub-window test alone misses a slow, steady decline buried in per-frame noise, which a
/// trend test over the same window sees.
pub fn trend_t(vals: &[f64]) -> f64 {
    let n = vals.len();
    if n < 3 {
        return 0.0;
    }
    let xm = (n as f64 - 1.0) / 2.0;
    let ym = mean(vals);
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in vals.iter().enumerate() {
        let dx = i as f64 - xm;
        sxy += dx * (y - ym);
        sxx += dx * dx;
    }
    let b = sxy / sxx;
    let res: f64 = vals
        .iter()
        .enumerate()
        .map(|(i, y)| {
            let r = y - ym - b * (i as f64 - xm);
            r * r
        })
        .sum();
    let s2 = res / (n as f64 - 2.0);
    let se = (s2 / sxx).sqrt();
    if se <= 1e-12 { 0.0 } else { b / se }
}

/// Naive evolution's trigger: every `period` seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PeriodicTrigger {
    /// Seconds between triggers.
    pub period: f64,
    /// Time of the last trigger.
    pub last: f64,
}

impl PeriodicTrigger {
    /// Whether it fires at `t` (and records it).
    pub fn observe(&mut self, t: f64) -> bool {
        if t - self.last >= self.period {
            self.last = t;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> RodParams {
        RodParams {
            window: 30,
            subwindows: 3,
            step: 5,
            rod_threshold: 0.08,
            stable_f: 3.0,
            stable_t: 2.0,
            max_slides: 100,
        }
    }

    /// A deterministic jitter in ±0.05.
    fn jitter(i: usize) -> f64 {
        ((i * 7919) % 101) as f64 / 1000.0 - 0.05
    }

    #[test]
    fn fires_after_a_sudden_drop_settles_not_at_onset() {
        let mut tr = RodTrigger::new(params());
        let mut fired = None;
        for i in 0..300 {
            let level = if i < 100 { 0.9 } else { 0.6 };
            if let Some(e) = tr.observe(i as f64, level + jitter(i)) {
                fired = Some(e);
                break;
            }
        }
        let e = fired.expect("a 33% drop must fire");
        assert!(e.t3 >= 125.0, "fired at {} before the window settled", e.t3);
        assert!(e.t3 <= 160.0, "fired late at {}", e.t3);
        assert!(e.t1 <= 105.0 && e.t1 >= 70.0, "onset {}", e.t1);
    }

    #[test]
    fn incremental_drop_fires_after_the_ramp() {
        let mut tr = RodTrigger::new(params());
        let mut fired = None;
        for i in 0..400 {
            let p = ((i as f64 - 100.0) / 150.0).clamp(0.0, 1.0);
            if let Some(e) = tr.observe(i as f64, 0.9 - 0.35 * p + jitter(i)) {
                fired = Some(e);
                break;
            }
        }
        let e = fired.expect("fires");
        assert!(e.t3 >= 230.0, "fired at {} during the ramp", e.t3);
        assert!(e.slides > 30 / 5 + 1, "slides {}", e.slides);
    }

    /// Descriptors that stay put (a drift the conditions' descriptors cannot see, such as a
    /// rotation) leave the trigger to the confidence: it fires when `observe` does; ones that
    /// keep moving after the confidence has levelled off hold it until they stop.
    #[test]
    fn descriptors_hold_the_trigger_only_while_they_move() {
        let fire = |desc: &dyn Fn(usize) -> Option<Descriptor>| {
            let mut tr = RodTrigger::new(params());
            (0..600).find_map(|i| {
                let level = if i < 100 { 0.9 } else { 0.6 };
                tr.observe_described(i as f64, level + jitter(i), desc(i))
                    .map(|e| e.t3)
            })
        };
        let plain = fire(&|_| None).expect("fires on confidence");
        let still = |i: usize| Some([jitter(i), jitter(i + 1), 0.3, 0.3, 0.1, jitter(i + 2)]);
        assert_eq!(fire(&still), Some(plain));
        // The inputs' intensity keeps sliding until t = 260, long after the drop at 100.
        let moving = |i: usize| {
            let m = ((i as f64 - 100.0) / 160.0).clamp(0.0, 1.0);
            Some([m + 0.2 * jitter(i), 0.5, 0.3, 0.3, 0.1, 0.2])
        };
        let held = fire(&moving).expect("fires once the inputs settle");
        assert!(held > plain && held >= 260.0, "{held} vs {plain}");
    }

    #[test]
    fn change_point_finds_the_step() {
        let v: Vec<f64> = (0..40)
            .map(|i| if i < 29 { 0.9 } else { 0.6 } + jitter(i))
            .collect();
        let k = change_point(&v);
        assert!((27..=31).contains(&k), "{k}");
        assert_eq!(change_point(&[0.5; 10]), 0);
    }

    #[test]
    fn no_drift_no_trigger_and_periodic() {
        let mut tr = RodTrigger::new(params());
        assert!((0..500).all(|i| tr.observe(i as f64, 0.9 + jitter(i)).is_none()));
        let mut p = PeriodicTrigger {
            period: 60.0,
            last: 0.0,
        };
        let n = (1..=300).filter(|t| p.observe(*t as f64)).count();
        assert_eq!(n, 5);
    }
}
