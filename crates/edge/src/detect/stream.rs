//! The detection task's drifting streams: a camera moving over the seabed (a new scene every
//! `frames_per_scene` frames, each frame rendered with its own noise and snow) while the water
//! drifts between named conditions at known times, with the classification task's grammar
//! (`sudden` / `incremental` — the water's coefficients interpolated, [`Water::lerp`] — /
//! `gradual` — frames alternating between the old and new water, the new one's share rising
//! linearly). Frames are rendered by `ferrolab_data::underwater`; their boxes are kept for
//! evaluation only.

use super::grid::GtBox;
use crate::stream::{Drift, Schedule};
use ferrolab_data::underwater::{Scene, SceneConfig, Water, WaterType};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Water conditions a drift can target (the stream starts in `clear`).
pub const CONDITIONS: [&str; 6] = ["clear", "coastal", "green", "turbid", "murky", "deep"];

/// The water of condition `name` (see [`CONDITIONS`]).
pub fn named_water(name: &str) -> Option<Water> {
    Some(match name {
        // Clear oceanic water (Jerlov IB), 3 m down, daylight: the factory conditions.
        "clear" => Water::of_type(WaterType::IB, 3.0),
        // Coastal type 3, 4 m: a green-blue cast and some contrast loss.
        "coastal" => Water::of_type(WaterType::C3, 4.0),
        // Coastal type 7, 3 m: strong green cast, contrast gone beyond a few metres.
        "green" => Water::of_type(WaterType::C7, 3.0),
        // Coastal type 5 twice as turbid as the table.
        "turbid" => {
            let mut w = Water::of_type(WaterType::C5, 2.0);
            w.turbidity = 2.0;
            w
        }
        // Coastal type 9 (yellow-brown), 1.5 m.
        "murky" => Water::of_type(WaterType::C9, 1.5),
        // Oceanic II, 40 m down: the sunlight is nearly gone, a camera lamp lights the scene.
        "deep" => {
            let mut w = Water::of_type(WaterType::II, 40.0);
            w.artificial_light = 1.5;
            w
        }
        _ => return None,
    })
}

/// The water of condition `name` at `strength` (the way from clear water to it; above 1
/// stays at it).
pub fn water(name: &str, strength: f32) -> Water {
    let clear = named_water("clear").unwrap_or_else(|| Water::of_type(WaterType::IB, 3.0));
    let target = named_water(name).unwrap_or(clear);
    clear.lerp(&target, strength.min(1.0))
}

/// The water at `t` on `schedule` (`u` a uniform draw for gradual mixing), and whether the
/// frame shows the latest drift's new concept.
pub fn water_at(schedule: &Schedule, t: f64, u: f32) -> (Water, bool) {
    let s = schedule.strength;
    let mut cur = water("clear", 1.0);
    let mut new_concept = false;
    for d in &schedule.drifts {
        if t < d.start {
            break;
        }
        let target = water(&d.target, s);
        if t >= d.end() {
            cur = target;
            new_concept = true;
            continue;
        }
        let p = ((t - d.start) / d.duration.max(1e-9)) as f32;
        match d.kind.as_str() {
            "incremental" => {
                cur = cur.lerp(&target, p);
                new_concept = true;
            }
            "gradual" => {
                new_concept = u < p;
                if new_concept {
                    cur = target;
                }
            }
            _ => {
                cur = target;
                new_concept = true;
            }
        }
        break;
    }
    (cur, new_concept)
}

/// A rendered frame with its evaluation-only boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct DetFrame {
    /// `side × side` RGB.
    pub rgb: Vec<u8>,
    /// Ground truth (evaluation and pre-training only).
    pub boxes: Vec<GtBox>,
    /// Whether the frame shows the latest drift's new water (gradual mixing).
    pub new_concept: bool,
}

/// The scene settings of `side`-pixel frames: 1–4 objects of at least `side/8` pixels,
/// scattering blur scaled from the renderer's 128-pixel default.
pub fn scene_config(side: usize) -> SceneConfig {
    SceneConfig {
        width: side,
        height: side,
        min_objects: 1,
        max_objects: 4,
        min_box_px: (side as f32 / 8.0).max(3.0),
        snow: 1.0,
        blur: 1.2 * side as f32 / 128.0,
        noise: 0.01,
    }
}

/// Renders scene `scene_seed` through `water` (noise from `render_seed`).
pub fn render(
    cfg: &SceneConfig,
    scene_seed: u64,
    water: &Water,
    render_seed: u64,
) -> Result<DetFrame, String> {
    let scene = Scene::generate(cfg, scene_seed)?;
    let r = scene.render(water, render_seed)?;
    Ok(DetFrame {
        rgb: r.rgb,
        boxes: r.boxes.iter().map(|b| (b.bbox, b.category)).collect(),
        new_concept: false,
    })
}

/// Frame `t` of the stream `stream_seed` (camera path: scene `t / frames_per_scene`).
pub fn draw(
    cfg: &SceneConfig,
    schedule: &Schedule,
    t: f64,
    frames_per_scene: usize,
    stream_seed: u64,
) -> Result<DetFrame, String> {
    let k = t.max(0.0) as u64;
    let mut rng = StdRng::seed_from_u64(stream_seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let u: f32 = rng.random();
    let (w, new_concept) = water_at(schedule, t, u);
    let scene_seed = stream_seed.wrapping_add(k / frames_per_scene.max(1) as u64);
    let mut f = render(cfg, scene_seed, &w, stream_seed ^ k.rotate_left(29))?;
    f.new_concept = new_concept;
    Ok(f)
}

/// A random water for the teacher's training renders: any condition at strength 0–1, half
/// of them blended with a second, turbidity ±30 %.
pub fn random_water(rng: &mut StdRng) -> Water {
    let a = CONDITIONS[rng.random_range(0..CONDITIONS.len())];
    let mut w = water(a, rng.random_range(0.0f32..1.0));
    if rng.random::<f32>() < 0.5 {
        let b = CONDITIONS[rng.random_range(0..CONDITIONS.len())];
        w = w.lerp(&water(b, rng.random_range(0.0f32..1.0)), 0.5);
    }
    w.turbidity *= rng.random_range(0.7f32..1.3);
    w
}

/// The descriptor image of a frame for drift typing and feature-space sampling: its
/// luminance average-pooled to `side/4` per side, centred (what
/// [`crate::sampling::descriptor`] reads: level, spread, gradients, fine-scale energy).
pub fn descriptor_input(rgb: &[u8], side: usize) -> Vec<f32> {
    let q = 4;
    let n = side / q;
    let mut out = vec![0f32; n * n];
    for y in 0..n * q {
        for x in 0..n * q {
            let p = (y * side + x) * 3;
            let l = 0.299 * rgb.get(p).copied().unwrap_or(0) as f32
                + 0.587 * rgb.get(p + 1).copied().unwrap_or(0) as f32
                + 0.114 * rgb.get(p + 2).copied().unwrap_or(0) as f32;
            out[(y / q) * n + x / q] += l / (255.0 * (q * q) as f32);
        }
    }
    out.iter_mut().for_each(|v| *v -= 0.5);
    out
}

/// Whether every drift's target is a water condition.
pub fn check_drifts(drifts: &[Drift]) -> Result<(), String> {
    match drifts.iter().find(|d| named_water(&d.target).is_none()) {
        Some(d) => Err(format!("unknown water condition {:?}", d.target)),
        None => Ok(()),
    }
}
