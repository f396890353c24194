//! Drift typing on synthetic streams of each type: the ROD trigger and the type classifier
//! of the mobile end, fed per-frame confidences (noisy, at realistic levels) and inputs whose
//! concept moves from an old to a new one suddenly, incrementally (through intermediate
//! inputs) or gradually (alternating between the two, the new one ever more often), with the
//! trigger reading the confidences alone or the frames' condition descriptors too. Before
//! the settling test waited for a post-onset window, all three came out `sudden`.

#![allow(clippy::unwrap_used)] // test: a panic is the failure report

use ferrolab_edge::protocol::DriftType;
use ferrolab_edge::sampling::{Obs, classify_drift, descriptor};
use ferrolab_edge::stream::gauss;
use ferrolab_edge::trigger::{RodParams, RodTrigger, TriggerEvent};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

const WINDOW: usize = 40;

fn params() -> RodParams {
    RodParams {
        window: WINDOW,
        subwindows: 3,
        step: 5,
        rod_threshold: 0.05,
        stable_f: 3.0,
        stable_t: 2.0,
        max_slides: 40,
    }
}

/// One frame of a drift from concept 0 to concept 1 starting at `start`, lasting `dur`.
fn frame(kind: &str, t: f64, start: f64, dur: f64, rng: &mut StdRng) -> Obs {
    let p = if t < start {
        0.0
    } else if kind == "sudden" || t >= start + dur {
        1.0
    } else {
        (t - start) / dur
    };
    // Incremental: an intermediate concept; gradual: one of the two, the new with share p.
    let mix = match kind {
        "gradual" => {
            if rng.random::<f64>() < p {
                1.0
            } else {
                0.0
            }
        }
        _ => p,
    };
    let (old_cc, new_cc) = (0.9, 0.65);
    let cc = (old_cc + (new_cc - old_cc) * mix + 0.12 * gauss(rng) as f64).clamp(0.1, 1.0);
    // Inputs: content noise (varies frame to frame) plus the concept's offset.
    let input: Vec<f32> = (0..24)
        .map(|j| {
            let shift = if j < 8 { 3.0 * mix as f32 } else { 0.0 };
            gauss(rng) + shift
        })
        .collect();
    Obs {
        t,
        pixels: Vec::new(),
        input,
        cc,
        key: true,
    }
}

/// Runs the trigger over a stream with one drift at t = 200 and types the first firing after
/// the drift began; `described`: the trigger reads the frames' descriptors too, as the mobile
/// end's does.
fn type_of(kind: &str, dur: f64, seed: u64, described: bool) -> (DriftType, TriggerEvent) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut trig = RodTrigger::new(params());
    let mut buf: Vec<Obs> = Vec::new();
    let mut old: Vec<Vec<f32>> = Vec::new();
    for i in 0..700 {
        let o = frame(kind, i as f64, 200.0, dur, &mut rng);
        let had = trig.reference().is_some();
        let ev = trig.observe_described(o.t, o.cc, described.then(|| descriptor(&o.input)));
        buf.push(o);
        if !had && trig.reference().is_some() {
            old = buf[buf.len() - WINDOW..]
                .iter()
                .map(|o| o.input.clone())
                .collect();
        }
        if let Some(e) = ev {
            if e.t3 < 200.0 {
                // A false alarm in the noise before the drift: the end would have evolved and
                // started over, as after any served task.
                trig.reset();
                continue;
            }
            let span: Vec<&Obs> = buf
                .iter()
                .filter(|o| o.t >= e.t1 - WINDOW as f64 && o.t <= e.t3)
                .collect();
            let old: Vec<&[f32]> = old.iter().map(Vec::as_slice).collect();
            return (classify_drift(&span, &old, WINDOW, 25.0, 1.08), e);
        }
    }
    panic!("{kind} drift (seed {seed}) never fired");
}

#[test]
fn each_drift_type_is_recognised_on_synthetic_streams() {
    let seeds = 8;
    let mut wrong = [Vec::new(), Vec::new()];
    for (mode, described) in [("confidence only", false), ("descriptors", true)] {
        for (kind, dur, want) in [
            ("sudden", 0.0, DriftType::Sudden),
            ("incremental", 100.0, DriftType::Incremental),
            ("gradual", 100.0, DriftType::Gradual),
        ] {
            for seed in 0..seeds {
                let (got, e) = type_of(kind, dur, seed, described);
                eprintln!(
                    "{mode}: {kind} seed {seed}: {} (onset {:.0}, trigger {:.0})",
                    got.name(),
                    e.t1,
                    e.t3
                );
                // Never before a whole post-onset window, whichever test settles it.
                assert!(
                    e.t3 >= e.t1 + WINDOW as f64 - 1.0,
                    "{mode}: {kind} seed {seed}: fired at {}, within a window of the onset",
                    e.t3
                );
                if got != want {
                    wrong[usize::from(described)].push(format!("{kind} seed {seed}"));
                }
            }
        }
    }
    let misses = |w: &[String], k: &str| w.iter().filter(|x| x.starts_with(k)).count();
    let [alone, both] = &wrong;
    eprintln!("confidence only: wrong {alone:?}\ndescriptors: wrong {both:?}");
    // Sudden drifts are always recognised. On confidence alone a slow drift is often caught
    // before its ramp is over (over a window of noisy frames a slow decline looks settled), so
    // its frames show only part of the move and it is typed sudden; each slow type must still
    // come out right in 3 of 8 streams (before the settling test waited for a post-onset
    // window: 0 of 16). With descriptors the trigger waits for the inputs to stop moving:
    // incremental drifts 7 of 8, gradual ones 5 of 8 at least (measured: 8 and 6), and fewer
    // slow drifts mistyped than on confidence alone.
    for w in [alone, both] {
        assert_eq!(misses(w, "sudden"), 0, "{w:?}");
    }
    assert!(misses(alone, "incremental") <= 5, "{alone:?}");
    assert!(misses(alone, "gradual") <= 5, "{alone:?}");
    assert!(misses(both, "incremental") <= 1, "{both:?}");
    assert!(misses(both, "gradual") <= 3, "{both:?}");
    assert!(both.len() < alone.len(), "{both:?} vs {alone:?}");
}

#[test]
fn a_sudden_drift_fires_once_the_window_is_past_the_onset() {
    for seed in 0..8 {
        let (_, e) = type_of("sudden", 0.0, 100 + seed, true);
        assert!(
            (185.0..=215.0).contains(&e.t1),
            "seed {seed}: onset estimate {} for a drift at 200",
            e.t1
        );
        assert!(
            e.t3 - e.t1 >= WINDOW as f64 - 1.0,
            "seed {seed}: fired {} s after the onset, before a whole post-onset window",
            e.t3 - e.t1
        );
    }
}
