//! Drifting video streams for the classification task: each mobile end sees one frame per
//! simulated second drawn from a base image set (Fashion-MNIST, or a synthetic shape set) under
//! capture conditions — rotation, brightness/contrast, blur, noise, occlusion, class prior —
//! that drift at known times. Three drift types (Lu et al., TKDE 2018 terms):
//!
//! - **sudden**: the new condition from the drift's start on;
//! - **incremental**: the condition moves linearly from old to new over the drift's duration;
//! - **gradual**: each frame is from the old or the new condition, the new one with a
//!   probability that rises linearly over the duration (alternation).
//!
//! A drift is written `type:condition@start+duration` (seconds), e.g. `gradual:blur@300+120`.
//! Everything is deterministic by seed; labels are kept only for evaluation.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Image side of the base images and of uploaded frames.
pub const SIDE: usize = 28;
/// Side of the model input (2×2 average pooled).
pub const INPUT_SIDE: usize = 14;
/// Model input width.
pub const INPUT: usize = INPUT_SIDE * INPUT_SIDE;
/// Classes.
pub const CLASSES: usize = 10;

/// Names of the target conditions a drift can move to.
pub const CONDITIONS: [&str; 8] = [
    "clean", "rotate", "dark", "bright", "blur", "noise", "occlude", "prior",
];

/// Capture conditions of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Condition {
    /// Rotation, degrees.
    pub rotate_deg: f32,
    /// Added to intensities in [0, 1].
    pub brightness: f32,
    /// Contrast factor around 0.5.
    pub contrast: f32,
    /// Gaussian blur σ, pixels.
    pub blur: f32,
    /// Gaussian noise σ.
    pub noise: f32,
    /// Side of a grey occluding square as a fraction of the image side.
    pub occlusion: f32,
    /// Share of frames drawn from classes 0–2 (0 = the uniform prior).
    pub prior_skew: f32,
}

impl Default for Condition {
    fn default() -> Self {
        Condition {
            rotate_deg: 0.0,
            brightness: 0.0,
            contrast: 1.0,
            blur: 0.0,
            noise: 0.0,
            occlusion: 0.0,
            prior_skew: 0.0,
        }
    }
}

impl Condition {
    /// The named target condition at `strength` (1 = the nominal drift).
    pub fn named(name: &str, strength: f32) -> Option<Condition> {
        let c = Condition::default();
        let s = strength;
        Some(match name {
            "clean" => c,
            "rotate" => Condition {
                rotate_deg: 25.0 * s,
                ..c
            },
            "dark" => Condition {
                brightness: -0.25 * s,
                contrast: 1.0 - 0.55 * s,
                ..c
            },
            "bright" => Condition {
                brightness: 0.35 * s,
                contrast: 1.0 - 0.3 * s,
                ..c
            },
            "blur" => Condition { blur: 1.8 * s, ..c },
            "noise" => Condition {
                noise: 0.4 * s,
                ..c
            },
            "occlude" => Condition {
                occlusion: 0.5 * s,
                ..c
            },
            "prior" => Condition {
                prior_skew: (0.8 * s).min(1.0),
                noise: 0.15 * s,
                ..c
            },
            _ => return None,
        })
    }

    /// Linear interpolation (`t` = 0 → self).
    pub fn lerp(&self, o: &Condition, t: f32) -> Condition {
        let l = |a: f32, b: f32| a + (b - a) * t;
        Condition {
            rotate_deg: l(self.rotate_deg, o.rotate_deg),
            brightness: l(self.brightness, o.brightness),
            contrast: l(self.contrast, o.contrast),
            blur: l(self.blur, o.blur),
            noise: l(self.noise, o.noise),
            occlusion: l(self.occlusion, o.occlusion),
            prior_skew: l(self.prior_skew, o.prior_skew),
        }
    }
}

/// One drift of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// `sudden`, `incremental` or `gradual`.
    pub kind: String,
    /// Target condition name (see [`CONDITIONS`]).
    pub target: String,
    /// Start, seconds.
    pub start: f64,
    /// Duration, seconds (0 for sudden).
    pub duration: f64,
}

impl Drift {
    /// Parses `type:condition@start+duration` (`+duration` optional, default 0).
    pub fn parse(s: &str) -> Result<Drift, String> {
        Drift::parse_for(s, &CONDITIONS)
    }

    /// Parses `type:condition@start+duration` with the condition one of `conditions` (the
    /// detection task's water conditions use the same grammar).
    pub fn parse_for(s: &str, conditions: &[&str]) -> Result<Drift, String> {
        let (kind, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("drift {s:?}: expected type:condition@start+duration"))?;
        if !["sudden", "incremental", "gradual"].contains(&kind) {
            return Err(format!(
                "drift {s:?}: unknown drift type {kind:?} (known: sudden, incremental, gradual)"
            ));
        }
        let (target, when) = rest
            .split_once('@')
            .ok_or_else(|| format!("drift {s:?}: expected condition@start"))?;
        if !conditions.contains(&target) {
            return Err(format!(
                "drift {s:?}: unknown condition {target:?} (known: {})",
                conditions.join(", ")
            ));
        }
        let (start, dur) = match when.split_once('+') {
            Some((a, b)) => (a, b),
            None => (when, "0"),
        };
        let num = |v: &str| -> Result<f64, String> {
            v.trim()
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("drift {s:?}: {v:?} is not a time ≥ 0 in seconds"))
        };
        let (start, duration) = (num(start)?, num(dur)?);
        if kind != "sudden" && duration <= 0.0 {
            return Err(format!("drift {s:?}: a {kind} drift needs a duration > 0"));
        }
        Ok(Drift {
            kind: kind.to_string(),
            target: target.to_string(),
            start,
            duration: if kind == "sudden" { 0.0 } else { duration },
        })
    }

    /// End of the drift, seconds.
    pub fn end(&self) -> f64 {
        self.start + self.duration
    }
}

/// The conditions over one end's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Drifts in time order, with this end's targets and offsets applied.
    pub drifts: Vec<Drift>,
    /// Strength multiplier of this end's conditions.
    pub strength: f32,
}

impl Schedule {
    /// The condition of the frame at `t`, `u` a uniform draw in [0, 1) for gradual mixing.
    pub fn condition_at(&self, t: f64, u: f32) -> Condition {
        let mut cur = Condition::default();
        for d in &self.drifts {
            if t < d.start {
                break;
            }
            let target = Condition::named(&d.target, self.strength).unwrap_or_default();
            if t >= d.end() {
                cur = target;
                continue;
            }
            let p = ((t - d.start) / d.duration.max(1e-9)) as f32;
            cur = match d.kind.as_str() {
                "incremental" => cur.lerp(&target, p),
                "gradual" => {
                    if u < p {
                        target
                    } else {
                        cur
                    }
                }
                _ => target,
            };
            break;
        }
        cur
    }
}

/// Base images (28×28 grey) and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct BaseImages {
    /// `n × 784` grey levels.
    pub pixels: Vec<u8>,
    /// Labels.
    pub labels: Vec<u8>,
    /// Indices of each class.
    pub by_class: Vec<Vec<usize>>,
}

impl BaseImages {
    /// Wraps pixels and labels (28×28, 10 classes).
    pub fn new(pixels: Vec<u8>, labels: Vec<u8>) -> Result<BaseImages, String> {
        if labels.is_empty() || pixels.len() != labels.len() * SIDE * SIDE {
            return Err(format!(
                "base images: {} pixels for {} labels (need 28×28 each)",
                pixels.len(),
                labels.len()
            ));
        }
        let mut by_class = vec![Vec::new(); CLASSES];
        for (i, l) in labels.iter().enumerate() {
            let l = *l as usize;
            if l >= CLASSES {
                return Err(format!(
                    "base images: label {l} of image {i} is not in 0..10"
                ));
            }
            by_class[l].push(i);
        }
        if let Some(c) = by_class.iter().position(Vec::is_empty) {
            return Err(format!("base images: no image of class {c}"));
        }
        Ok(BaseImages {
            pixels,
            labels,
            by_class,
        })
    }

    /// Image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * SIDE * SIDE..(i + 1) * SIDE * SIDE]
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// A deterministic synthetic set: ten shape classes (disc, ring, square, frame, plus,
    /// triangle, horizontal bars, vertical bars, two dots, checker) with random size, position,
    /// stroke and texture, told apart by shape under ±25° rotation.
    pub fn synthetic(n: usize, seed: u64) -> BaseImages {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut pixels = Vec::with_capacity(n * SIDE * SIDE);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let k = i % CLASSES;
            let cx = 13.5 + rng.random_range(-2.5f32..2.5);
            let cy = 13.5 + rng.random_range(-2.5f32..2.5);
            let r = rng.random_range(6.0f32..10.0);
            let th = rng.random_range(1.5f32..3.0);
            let fg = rng.random_range(150.0f32..255.0);
            let bg = rng.random_range(0.0f32..50.0);
            let period = rng.random_range(4.0f32..6.0);
            for y in 0..SIDE {
                for x in 0..SIDE {
                    let (dx, dy) = (x as f32 - cx, y as f32 - cy);
                    let d = (dx * dx + dy * dy).sqrt();
                    let inside_sq = dx.abs() <= r && dy.abs() <= r;
                    let on = match k {
                        0 => d <= r,
                        1 => (d - r).abs() <= th * 0.6,
                        2 => dx.abs() <= r * 0.8 && dy.abs() <= r * 0.8,
                        3 => inside_sq && (dx.abs() >= r - th || dy.abs() >= r - th),
                        4 => (dx.abs() <= th && dy.abs() <= r) || (dy.abs() <= th && dx.abs() <= r),
                        5 => dy <= r * 0.8 && dy >= -r && dx.abs() <= (dy + r) * 0.55,
                        6 => inside_sq && ((dy + 20.0) % period) < period / 2.0,
                        7 => inside_sq && ((dx + 20.0) % period) < period / 2.0,
                        8 => {
                            let a = ((dx - r * 0.55).powi(2) + dy * dy).sqrt();
                            let b = ((dx + r * 0.55).powi(2) + dy * dy).sqrt();
                            a <= r * 0.35 || b <= r * 0.35
                        }
                        _ => {
                            inside_sq
                                && ((((dx + 20.0) / period) as i32 + ((dy + 20.0) / period) as i32)
                                    % 2
                                    == 0)
                        }
                    };
                    let v = if on { fg } else { bg } + rng.random_range(-15.0f32..15.0);
                    pixels.push(v.clamp(0.0, 255.0) as u8);
                }
            }
            labels.push(k as u8);
        }
        // Interleaved classes by construction; shuffle so subsets are not class-ordered.
        let mut order: Vec<usize> = (0..n).collect();
        crate::model::shuffle(&mut order, &mut rng);
        let mut p2 = Vec::with_capacity(pixels.len());
        let mut l2 = Vec::with_capacity(n);
        for &i in &order {
            p2.extend_from_slice(&pixels[i * SIDE * SIDE..(i + 1) * SIDE * SIDE]);
            l2.push(labels[i]);
        }
        // The generator always produces every class when n ≥ 10, which the caller checks.
        BaseImages::new(p2, l2).unwrap_or(BaseImages {
            pixels: Vec::new(),
            labels: Vec::new(),
            by_class: vec![Vec::new(); CLASSES],
        })
    }
}

/// Renders base image `img` under `c`; `rng` draws the noise and the occluder's position.
/// Returns the 28×28 grey frame as the camera would deliver it.
pub fn render(img: &[u8], c: &Condition, rng: &mut StdRng) -> Vec<u8> {
    let n = SIDE;
    let src: Vec<f32> = img.iter().map(|v| *v as f32 / 255.0).collect();
    let mut a = if c.rotate_deg.abs() > 1e-3 {
        let (s, co) = c.rotate_deg.to_radians().sin_cos();
        let m = (n as f32 - 1.0) / 2.0;
        let mut out = vec![0f32; n * n];
        for y in 0..n {
            for x in 0..n {
                let (dx, dy) = (x as f32 - m, y as f32 - m);
                let sx = co * dx + s * dy + m;
                let sy = -s * dx + co * dy + m;
                out[y * n + x] = bilinear(&src, sx, sy);
            }
        }
        out
    } else {
        src
    };
    if c.blur > 0.05 {
        a = gaussian_blur(&a, c.blur);
    }
    if c.occlusion > 0.01 {
        let side = ((c.occlusion * n as f32).round() as usize).clamp(1, n);
        let x0 = rng.random_range(0..=n - side);
        let y0 = rng.random_range(0..=n - side);
        for y in y0..y0 + side {
            for x in x0..x0 + side {
                a[y * n + x] = 0.5;
            }
        }
    }
    a.iter()
        .map(|v| {
            let mut w = (v - 0.5) * c.contrast + 0.5 + c.brightness;
            if c.noise > 0.0 {
                w += c.noise * gauss(rng);
            }
            (w.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect()
}

/// The model input of a frame: 2×2 average pooled to 14×14, scaled to about [−1, 1].
pub fn to_input(frame: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(INPUT);
    for y in 0..INPUT_SIDE {
        for x in 0..INPUT_SIDE {
            let s: u32 = [
                (2 * y, 2 * x),
                (2 * y, 2 * x + 1),
                (2 * y + 1, 2 * x),
                (2 * y + 1, 2 * x + 1),
            ]
            .iter()
            .map(|(yy, xx)| frame[yy * SIDE + xx] as u32)
            .sum();
            out.push(s as f32 / (4.0 * 127.5) - 1.0);
        }
    }
    out
}

fn bilinear(a: &[f32], x: f32, y: f32) -> f32 {
    let n = SIDE as i32;
    let (x0, y0) = (x.floor() as i32, y.floor() as i32);
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let px = |xx: i32, yy: i32| -> f32 {
        if xx < 0 || yy < 0 || xx >= n || yy >= n {
            0.0
        } else {
            a[(yy * n + xx) as usize]
        }
    };
    px(x0, y0) * (1.0 - fx) * (1.0 - fy)
        + px(x0 + 1, y0) * fx * (1.0 - fy)
        + px(x0, y0 + 1) * (1.0 - fx) * fy
        + px(x0 + 1, y0 + 1) * fx * fy
}

fn gaussian_blur(a: &[f32], sigma: f32) -> Vec<f32> {
    let r = (3.0 * sigma).ceil() as i32;
    let k: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let ks: f32 = k.iter().sum();
    let n = SIDE as i32;
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0f32; src.len()];
        for y in 0..n {
            for x in 0..n {
                let mut s = 0.0;
                for (j, kv) in k.iter().enumerate() {
                    let o = j as i32 - r;
                    let (xx, yy) = if horizontal { (x + o, y) } else { (x, y + o) };
                    let (xx, yy) = (xx.clamp(0, n - 1), yy.clamp(0, n - 1));
                    s += kv * src[(yy * n + xx) as usize];
                }
                out[(y * n + x) as usize] = s / ks;
            }
        }
        out
    };
    pass(&pass(a, true), false)
}

/// A standard normal draw (Box–Muller).
pub fn gauss(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random::<f32>().max(1e-7);
    let u2: f32 = rng.random::<f32>();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// A drawn frame with its evaluation-only label and condition.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamFrame {
    /// Raw pixels (28×28).
    pub pixels: Vec<u8>,
    /// Model input.
    pub input: Vec<f32>,
    /// Ground-truth label (evaluation only).
    pub label: u8,
    /// Whether the frame came from the drift's new concept (gradual mixing; evaluation only).
    pub new_concept: bool,
}

/// Draws the frame of stream `stream_seed` at time `t` under `schedule`.
pub fn draw(base: &BaseImages, schedule: &Schedule, t: f64, stream_seed: u64) -> StreamFrame {
    let mut rng = StdRng::seed_from_u64(
        stream_seed
            ^ (t * 1000.0)
                .round()
                .to_bits()
                .wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let u: f32 = rng.random();
    let c = schedule.condition_at(t, u);
    let class = if c.prior_skew > 0.0 && rng.random::<f32>() < c.prior_skew {
        rng.random_range(0..3usize)
    } else {
        rng.random_range(0..CLASSES)
    };
    let pool = &base.by_class[class];
    let idx = pool[rng.random_range(0..pool.len())];
    let pixels = render(base.image(idx), &c, &mut rng);
    let input = to_input(&pixels);
    let new_concept = schedule
        .drifts
        .iter()
        .rev()
        .find(|d| t >= d.start)
        .is_some_and(|d| {
            d.kind != "gradual" || t >= d.end() || u < ((t - d.start) / d.duration) as f32
        });
    StreamFrame {
        pixels,
        input,
        label: base.labels[idx],
        new_concept,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_reject() {
        let d = Drift::parse("gradual:blur@300+120").unwrap();
        assert_eq!((d.start, d.end()), (300.0, 420.0));
        assert!(
            Drift::parse("sideways:blur@3")
                .unwrap_err()
                .contains("unknown drift type")
        );
        assert!(
            Drift::parse("sudden:fog@3")
                .unwrap_err()
                .contains("unknown condition")
        );
        assert!(Drift::parse("incremental:dark@3").is_err());
    }

    #[test]
    fn schedule_kinds() {
        let s = Schedule {
            drifts: vec![
                Drift::parse("incremental:rotate@100+100").unwrap(),
                Drift::parse("gradual:blur@300+100").unwrap(),
            ],
            strength: 1.0,
        };
        assert_eq!(s.condition_at(50.0, 0.5).rotate_deg, 0.0);
        assert!((s.condition_at(150.0, 0.5).rotate_deg - 12.5).abs() < 1e-3);
        assert_eq!(s.condition_at(250.0, 0.5).rotate_deg, 25.0);
        // Gradual: old (rotate) or new (blur), never a mixture of the two.
        let mid_old = s.condition_at(350.0, 0.9);
        let mid_new = s.condition_at(350.0, 0.1);
        assert_eq!((mid_old.rotate_deg, mid_old.blur), (25.0, 0.0));
        assert_eq!((mid_new.rotate_deg, mid_new.blur), (0.0, 1.8));
    }

    #[test]
    fn frames_are_deterministic() {
        let base = BaseImages::synthetic(50, 1);
        let s = Schedule {
            drifts: vec![Drift::parse("sudden:noise@10").unwrap()],
            strength: 1.0,
        };
        let a = draw(&base, &s, 12.0, 7);
        let b = draw(&base, &s, 12.0, 7);
        assert_eq!(a, b);
        assert_eq!(a.input.len(), INPUT);
    }
}
