//! Seabed scenes with URPC-category objects: layout (by seed), then rendering under a
//! [`Water`] state (so one layout can be re-rendered while the water drifts).
//!
//! Geometry: a pinhole camera `camera.height_m` above a flat, sloped-away seabed, pitched
//! `camera.pitch_deg` below the horizontal with vertical field of view `camera.vfov_deg`. The
//! range of the seabed along the ray through row `y` is `h / sin(a)` with `a` the ray's
//! angle below the horizontal (times the lateral ray stretch), capped at [`MAX_RANGE_M`]
//! (rays at or above the horizon see open water). Objects sit on the seabed: an object's range
//! is the seabed's at its base, its size in pixels is `f · size_m / range`, and objects lying
//! flat are foreshortened by `sin(a)`. Textures are defined in seabed coordinates, so they
//! shrink with distance.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::water::Water;

/// The five URPC categories, in COCO category-id order (id = index + 1).
pub const CATEGORIES: [&str; 5] = [
    "holothurian",
    "echinus",
    "scallop",
    "starfish",
    "waterweeds",
];

/// Rays that do not meet the seabed within this range see open water.
pub const MAX_RANGE_M: f32 = 60.0;

/// Size range (largest extent, metres) of each category, as [`CATEGORIES`].
const SIZE_M: [(f32, f32); 5] = [
    (0.20, 0.40),
    (0.10, 0.20),
    (0.10, 0.18),
    (0.15, 0.30),
    (0.25, 0.50),
];

/// What a scene looks like, independent of the water it is seen through.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SceneConfig {
    pub width: usize,
    pub height: usize,
    /// Objects per image, drawn uniformly from `min_objects..=max_objects`.
    pub min_objects: usize,
    pub max_objects: usize,
    /// Objects whose box would be smaller than this (shorter side, pixels) are not placed.
    pub min_box_px: f32,
    /// Marine-snow density (1 = about one speck per 400 pixels in clear water; 0 = none).
    pub snow: f32,
    /// Forward-scattering blur scale (Gaussian σ in pixels at full strength; 0 = none).
    pub blur: f32,
    /// Sensor noise standard deviation (linear units).
    pub noise: f32,
}

impl Default for SceneConfig {
    fn default() -> Self {
        SceneConfig {
            width: 128,
            height: 128,
            min_objects: 1,
            max_objects: 5,
            min_box_px: 8.0,
            snow: 1.0,
            blur: 1.2,
            noise: 0.01,
        }
    }
}

impl SceneConfig {
    /// Why a scene cannot be generated with these values, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        if !(16..=4096).contains(&self.width) || !(16..=4096).contains(&self.height) {
            return Err(format!(
                "scene: {}x{} pixels: each side must be in 16..=4096",
                self.width, self.height
            ));
        }
        if self.min_objects > self.max_objects || self.max_objects > 64 {
            return Err(format!(
                "scene: objects {}..={}: need min ≤ max ≤ 64",
                self.min_objects, self.max_objects
            ));
        }
        let vals = [self.min_box_px, self.snow, self.blur, self.noise];
        if vals.iter().any(|v| !v.is_finite() || *v < 0.0) {
            return Err(format!(
                "scene: min_box_px, snow, blur, noise must be finite and ≥ 0: {vals:?}"
            ));
        }
        if self.min_box_px * 2.0 > self.width.min(self.height) as f32 {
            return Err(format!(
                "scene: min_box_px {} is more than half the image side",
                self.min_box_px
            ));
        }
        Ok(())
    }
}

/// The camera above the seabed.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Camera {
    pub height_m: f32,
    pub pitch_deg: f32,
    pub vfov_deg: f32,
}

impl Camera {
    /// Focal length in pixels for an image `height` pixels tall.
    pub fn focal_px(&self, height: usize) -> f32 {
        height as f32 / 2.0 / (self.vfov_deg.to_radians() / 2.0).tan()
    }

    /// Angle below the horizontal (radians) of the ray through row `y`.
    fn ray_angle(&self, y: f32, height: usize) -> f32 {
        let f = self.focal_px(height);
        self.pitch_deg.to_radians() + ((y - height as f32 / 2.0) / f).atan()
    }

    /// Range (metres) to the seabed along the ray through pixel `(x, y)`.
    pub fn seabed_range(&self, x: f32, y: f32, width: usize, height: usize) -> f32 {
        let a = self.ray_angle(y, height);
        let lateral = (x - width as f32 / 2.0) / self.focal_px(height);
        let stretch = (1.0 + lateral * lateral).sqrt();
        if a <= 0.01 {
            return MAX_RANGE_M;
        }
        (self.height_m / a.sin() * stretch).min(MAX_RANGE_M)
    }
}

/// One object as laid out: where, how big, how turned, what it looks like.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SceneObject {
    /// Index into [`CATEGORIES`].
    pub category: usize,
    /// Centre (flat objects) or base (weeds) in pixels.
    pub x: f32,
    pub y: f32,
    /// Largest extent in pixels before foreshortening.
    pub size_px: f32,
    /// Vertical squash of flat objects (`sin` of the viewing angle); 1 for weeds.
    pub squash: f32,
    /// In-plane rotation, radians.
    pub angle: f32,
    /// Range from the camera, metres.
    pub range_m: f32,
    /// Base albedo (linear RGB).
    pub colour: [f32; 3],
    /// Shape and texture variation.
    pub variant: u64,
}

/// One exact box: category index and `[x, y, w, h]` in pixels (COCO order).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BoxAnnotation {
    pub category: usize,
    pub bbox: [f32; 4],
    /// Fraction of the object's pixels left visible by the objects in front of it.
    pub visible: f32,
}

/// A laid-out scene: seabed, camera and objects. Rendering it under different [`Water`]
/// states gives the same geometry and boxes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scene {
    pub config: SceneConfig,
    pub camera: Camera,
    pub sand: [f32; 3],
    pub rock: [f32; 3],
    /// Fraction of the seabed covered by rock, about.
    pub rockiness: f32,
    pub texture_seed: u64,
    /// Objects far to near (drawing order).
    pub objects: Vec<SceneObject>,
}

/// The physics of one frame in linear units, each `[y][x]` (and `[c]`) flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearFrame {
    /// `I`, RGB.
    pub observed: Vec<f32>,
    /// `z` in metres.
    pub range: Vec<f32>,
    /// `J` (albedo times illumination), RGB.
    pub radiance: Vec<f32>,
}

/// A rendered frame: 8-bit RGB (row-major, interleaved) and the boxes of its visible objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub boxes: Vec<BoxAnnotation>,
}

/// Objects less visible than this (occluded by nearer ones) get no box.
const MIN_VISIBLE: f32 = 0.3;

fn hash64(mut x: u64) -> u64 {
    // splitmix64 finaliser: a cheap, well-mixed hash for lattice noise.
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn lattice(ix: i64, iy: i64, seed: u64) -> f32 {
    let h = hash64(seed ^ hash64((ix as u64).wrapping_mul(0x1000_0000_01B3) ^ (iy as u64)));
    (h >> 40) as f32 / (1u64 << 24) as f32
}

/// Smooth value noise in [0, 1].
fn value_noise(x: f32, y: f32, seed: u64) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let (ix, iy) = (fx as i64, fy as i64);
    let a = lattice(ix, iy, seed);
    let b = lattice(ix + 1, iy, seed);
    let c = lattice(ix, iy + 1, seed);
    let d = lattice(ix + 1, iy + 1, seed);
    let top = a + (b - a) * sx;
    let bottom = c + (d - c) * sx;
    top + (bottom - top) * sy
}

/// Three octaves of value noise, in [0, 1].
fn fbm(x: f32, y: f32, seed: u64) -> f32 {
    let mut sum = 0.0;
    let mut amp = 0.5;
    let mut freq = 1.0;
    for o in 0..3u64 {
        sum += amp * value_noise(x * freq, y * freq, seed.wrapping_add(o));
        amp *= 0.5;
        freq *= 2.07;
    }
    sum / 0.875
}

fn jitter(rng: &mut StdRng, c: [f32; 3], amount: f32) -> [f32; 3] {
    c.map(|v| (v * (1.0 + rng.random_range(-amount..=amount))).clamp(0.01, 1.0))
}

/// Base colours of each category (linear RGB), one picked per object then jittered.
fn palette(category: usize) -> &'static [[f32; 3]] {
    match category {
        0 => &[[0.12, 0.08, 0.05], [0.25, 0.16, 0.09], [0.08, 0.08, 0.08]],
        1 => &[[0.10, 0.04, 0.12], [0.05, 0.04, 0.05], [0.20, 0.08, 0.10]],
        2 => &[[0.85, 0.75, 0.60], [0.80, 0.45, 0.25], [0.75, 0.55, 0.60]],
        3 => &[[0.90, 0.35, 0.10], [0.70, 0.12, 0.10], [0.45, 0.20, 0.50]],
        _ => &[[0.15, 0.45, 0.10], [0.35, 0.40, 0.10], [0.30, 0.20, 0.08]],
    }
}

impl Scene {
    /// Lays out a scene: camera pose, seabed and objects, all drawn from `seed`.
    pub fn generate(config: &SceneConfig, seed: u64) -> Result<Scene, String> {
        config.check()?;
        let mut rng = StdRng::seed_from_u64(hash64(seed ^ 0x5CE4E));
        let camera = Camera {
            height_m: rng.random_range(0.8..2.0),
            pitch_deg: rng.random_range(35.0..75.0),
            vfov_deg: rng.random_range(40.0..55.0),
        };
        let sand = jitter(&mut rng, [0.62, 0.55, 0.42], 0.15);
        let rock = jitter(&mut rng, [0.30, 0.29, 0.27], 0.3);
        let rockiness = rng.random_range(0.0..0.5);
        let texture_seed = rng.random::<u64>();
        let (w, h) = (config.width, config.height);
        let f = camera.focal_px(h);
        let want = rng.random_range(config.min_objects..=config.max_objects);
        let mut objects: Vec<SceneObject> = Vec::new();
        let mut boxes: Vec<[f32; 4]> = Vec::new();
        let mut tries = 0;
        while objects.len() < want && tries < 200 {
            tries += 1;
            let category = rng.random_range(0..CATEGORIES.len());
            let (lo, hi) = SIZE_M[category];
            let size_m = rng.random_range(lo..hi);
            let x = rng.random_range(0.05..0.95) * w as f32;
            let y = rng.random_range(0.2..0.97) * h as f32;
            let range_m = camera.seabed_range(x, y, w, h);
            if range_m >= MAX_RANGE_M {
                continue;
            }
            let size_px = f * size_m / range_m;
            let squash = if category == 4 {
                1.0
            } else {
                camera.ray_angle(y, h).sin().clamp(0.25, 1.0)
            };
            let b = approx_box(category, x, y, size_px, squash);
            let short = (b[2] - b[0]).min(b[3] - b[1]);
            let long = (b[2] - b[0]).max(b[3] - b[1]);
            if short < config.min_box_px || long > 0.6 * w.min(h) as f32 {
                continue;
            }
            // Keep boxes mostly inside the image and overlaps partial, so that occlusion
            // happens but an object is rarely hidden.
            let inside = (b[2].min(w as f32) - b[0].max(0.0)).max(0.0)
                * (b[3].min(h as f32) - b[1].max(0.0)).max(0.0);
            if inside < 0.8 * (b[2] - b[0]) * (b[3] - b[1]) {
                continue;
            }
            if boxes.iter().any(|o| overlap_of_smaller(o, &b) > 0.4) {
                continue;
            }
            let pal = palette(category);
            let base = pal[rng.random_range(0..pal.len())];
            let colour = jitter(&mut rng, base, 0.25);
            boxes.push(b);
            objects.push(SceneObject {
                category,
                x,
                y,
                size_px,
                squash,
                angle: rng.random_range(0.0..std::f32::consts::TAU),
                range_m,
                colour,
                variant: rng.random::<u64>(),
            });
        }
        objects.sort_by(|a, b| b.range_m.total_cmp(&a.range_m));
        Ok(Scene {
            config: config.clone(),
            camera,
            sand,
            rock,
            rockiness,
            texture_seed,
            objects,
        })
    }

    /// Renders the scene through `water` in linear radiance, with the range map: the physics
    /// before blur, snow, noise and exposure (`I`, `z`, `J`).
    pub fn render_linear(&self, water: &Water) -> Result<LinearFrame, String> {
        water.check()?;
        let (w, h) = (self.config.width, self.config.height);
        let f = self.camera.focal_px(h);
        let mut albedo = vec![0f32; w * h * 3];
        let mut range = vec![0f32; w * h];
        // Seabed albedo in seabed coordinates (metres), so the texture shrinks with range.
        for y in 0..h {
            for x in 0..w {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                let z = self.camera.seabed_range(px, py, w, h);
                range[y * w + x] = z;
                let a = self.camera.ray_angle(py, h);
                let ground = if a > 0.01 {
                    self.camera.height_m / a.tan().max(1e-3)
                } else {
                    MAX_RANGE_M
                };
                let lateral = (px - w as f32 / 2.0) / f * z;
                let (gx, gy) = (lateral * 3.0, ground * 3.0);
                let grain = fbm(gx * 8.0, gy * 8.0, self.texture_seed);
                let ripple =
                    0.5 + 0.5 * (gy * 6.0 + 2.0 * fbm(gx, gy, self.texture_seed ^ 7)).sin();
                let rockness = fbm(gx * 0.8, gy * 0.8, self.texture_seed ^ 0xAB);
                let is_rock = rockness > 1.0 - self.rockiness;
                let c = if is_rock {
                    let t = 0.6 + 0.6 * fbm(gx * 4.0, gy * 4.0, self.texture_seed ^ 3);
                    self.rock.map(|v| v * t)
                } else {
                    let t = 0.55 + 0.5 * grain + 0.15 * ripple;
                    self.sand.map(|v| v * t)
                };
                albedo[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&c);
            }
        }
        // Objects far to near, each painting its mask over what lies behind it.
        for o in &self.objects {
            let b = approx_box(o.category, o.x, o.y, o.size_px, o.squash);
            let x0 = b[0].floor().max(0.0) as usize;
            let y0 = b[1].floor().max(0.0) as usize;
            let x1 = (b[2].ceil().max(0.0) as usize).min(w);
            let y1 = (b[3].ceil().max(0.0) as usize).min(h);
            let (cs, sn) = (o.angle.cos(), o.angle.sin());
            for y in y0..y1 {
                for x in x0..x1 {
                    let (dx, dy) = (x as f32 + 0.5 - o.x, y as f32 + 0.5 - o.y);
                    if let Some(c) = shade(o, dx, dy, cs, sn) {
                        let p = y * w + x;
                        albedo[p * 3..p * 3 + 3].copy_from_slice(&c);
                        range[p] = o.range_m;
                    }
                }
            }
        }
        // Illumination: downwelling sunlight plus an optional camera light (1/d², N^d on
        // the way out, cos³ spot falloff off the optical axis).
        let ambient = water.ambient();
        let bd = water.beta_direct();
        let mut radiance = vec![0f32; w * h * 3];
        let mut observed = vec![0f32; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let p = y * w + x;
                let z = range[p];
                let (ox, oy) = (
                    (x as f32 + 0.5 - w as f32 / 2.0) / f,
                    (y as f32 + 0.5 - h as f32 / 2.0) / f,
                );
                let cos_off = 1.0 / (1.0 + ox * ox + oy * oy).sqrt();
                let mut j = [0f32; 3];
                for c in 0..3 {
                    let art = if water.artificial_light > 0.0 && z < MAX_RANGE_M {
                        water.artificial_light * cos_off.powi(3) * (-bd[c] * z).exp()
                            / (z * z).max(0.25)
                    } else {
                        0.0
                    };
                    j[c] = albedo[p * 3 + c] * (ambient[c] + art);
                }
                let i = water.observe(j, z);
                radiance[p * 3..p * 3 + 3].copy_from_slice(&j);
                observed[p * 3..p * 3 + 3].copy_from_slice(&i);
            }
        }
        Ok(LinearFrame {
            observed,
            range,
            radiance,
        })
    }

    /// Renders the scene through `water`: the physics of [`render_linear`], then forward
    /// scattering blur, marine snow, sensor noise (all drawn from `seed`), auto-exposure and
    /// sRGB-like gamma; boxes of the objects at least 30 % visible.
    ///
    /// [`render_linear`]: Self::render_linear
    pub fn render(&self, water: &Water, seed: u64) -> Result<Rendered, String> {
        let LinearFrame {
            observed: mut img,
            range,
            ..
        } = self.render_linear(water)?;
        let (w, h) = (self.config.width, self.config.height);
        let mut rng = StdRng::seed_from_u64(hash64(seed ^ 0xF0_0D));
        let bb = water.beta_backscatter();
        let mean_b = (bb[0] + bb[1] + bb[2]) / 3.0;
        // Forward scattering: each pixel blends towards a blurred copy by 1 − e^(−β·z/2).
        if self.config.blur > 0.0 {
            let sigma = self.config.blur * (0.5 + mean_b.min(2.0));
            let blurred = gaussian_blur(&img, w, h, sigma);
            for p in 0..w * h {
                let t = 1.0 - (-0.5 * mean_b * range[p]).exp();
                for c in 0..3 {
                    img[p * 3 + c] += t * (blurred[p * 3 + c] - img[p * 3 + c]);
                }
            }
        }
        // Marine snow: bright particles close to the camera, more in turbid water, each seen
        // through its own short range of water.
        let specks = (self.config.snow * (w * h) as f32 / 400.0 * (0.3 + 2.0 * mean_b)) as usize;
        let ambient = water.ambient();
        for _ in 0..specks {
            let (sx, sy) = (
                rng.random_range(0.0..w as f32),
                rng.random_range(0.0..h as f32),
            );
            let r = rng.random_range(0.3..1.3f32);
            let z = rng.random_range(0.2..2.0f32);
            let bright = rng.random_range(0.4..1.0f32);
            // Particles are lit by the same downwelling light as the seabed (and the camera
            // light, which they are close to).
            let lit = ambient.map(|e| (e + 0.3 * water.artificial_light) * bright);
            let col = water.observe(lit, z);
            let (x0, x1) = (
                (sx - r - 1.0).max(0.0) as usize,
                ((sx + r + 1.0) as usize).min(w),
            );
            let (y0, y1) = (
                (sy - r - 1.0).max(0.0) as usize,
                ((sy + r + 1.0) as usize).min(h),
            );
            for y in y0..y1 {
                for x in x0..x1 {
                    let d = ((x as f32 + 0.5 - sx).powi(2) + (y as f32 + 0.5 - sy).powi(2)).sqrt();
                    let a = (1.0 - (d - r).max(0.0)).clamp(0.0, 1.0) * 0.8;
                    if a > 0.0 {
                        let p = (y * w + x) * 3;
                        for c in 0..3 {
                            img[p + c] += a * (col[c] - img[p + c]);
                        }
                    }
                }
            }
        }
        // Auto-exposure: the 99th percentile of the brightest channel maps to 0.9.
        let mut peaks: Vec<f32> = img
            .chunks_exact(3)
            .map(|p| p[0].max(p[1]).max(p[2]))
            .collect();
        let k = (peaks.len() * 99 / 100).min(peaks.len() - 1);
        let (_, p99, _) = peaks.select_nth_unstable_by(k, f32::total_cmp);
        let gain = (0.9 / p99.max(1e-6)).clamp(0.5, 16.0);
        // Sensor noise after the gain: read noise relative to the exposed signal, with a
        // share that grows with the gain (dark scenes are noisier).
        let sigma = self.config.noise * (1.0 + 0.1 * gain);
        let rgb = img
            .iter()
            .map(|v| {
                let n = if sigma > 0.0 {
                    sigma * gaussian(&mut rng)
                } else {
                    0.0
                };
                ((v * gain + n).clamp(0.0, 1.0).powf(1.0 / 2.2) * 255.0).round() as u8
            })
            .collect();
        Ok(Rendered {
            width: w,
            height: h,
            rgb,
            boxes: self.boxes(),
        })
    }

    /// Exact boxes (`[x, y, w, h]`, pixel edges) of the objects at least 30 % visible, from
    /// the same masks the renderer paints.
    pub fn boxes(&self) -> Vec<BoxAnnotation> {
        let (w, h) = (self.config.width, self.config.height);
        let mut owner = vec![usize::MAX; w * h];
        let mut extents: Vec<Option<[usize; 4]>> = vec![None; self.objects.len()];
        let mut total = vec![0usize; self.objects.len()];
        for (i, o) in self.objects.iter().enumerate() {
            let b = approx_box(o.category, o.x, o.y, o.size_px, o.squash);
            let x0 = b[0].floor().max(0.0) as usize;
            let y0 = b[1].floor().max(0.0) as usize;
            let x1 = (b[2].ceil().max(0.0) as usize).min(w);
            let y1 = (b[3].ceil().max(0.0) as usize).min(h);
            let (cs, sn) = (o.angle.cos(), o.angle.sin());
            for y in y0..y1 {
                for x in x0..x1 {
                    let (dx, dy) = (x as f32 + 0.5 - o.x, y as f32 + 0.5 - o.y);
                    if inside(o, dx, dy, cs, sn) {
                        owner[y * w + x] = i;
                        total[i] += 1;
                        let e = extents[i].get_or_insert([x, y, x, y]);
                        e[0] = e[0].min(x);
                        e[1] = e[1].min(y);
                        e[2] = e[2].max(x);
                        e[3] = e[3].max(y);
                    }
                }
            }
        }
        let mut visible = vec![0usize; self.objects.len()];
        for &o in &owner {
            if o != usize::MAX {
                visible[o] += 1;
            }
        }
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(i, o)| {
                let e = extents[i]?;
                let vis = visible[i] as f32 / total[i].max(1) as f32;
                (vis >= MIN_VISIBLE).then(|| BoxAnnotation {
                    category: o.category,
                    bbox: [
                        e[0] as f32,
                        e[1] as f32,
                        (e[2] + 1 - e[0]) as f32,
                        (e[3] + 1 - e[1]) as f32,
                    ],
                    visible: vis,
                })
            })
            .collect()
    }
}

/// Standard normal draw (Box–Muller).
fn gaussian(rng: &mut StdRng) -> f32 {
    let u1: f32 = rng.random_range(1e-7..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Separable Gaussian blur of an interleaved RGB float image (edges clamped).
fn gaussian_blur(img: &[f32], w: usize, h: usize, sigma: f32) -> Vec<f32> {
    let r = (sigma * 2.5).ceil() as isize;
    let kernel: Vec<f32> = (-r..=r)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let norm: f32 = kernel.iter().sum();
    let pass = |src: &[f32], horizontal: bool| {
        let mut out = vec![0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0f32; 3];
                for (k, kv) in kernel.iter().enumerate() {
                    let o = k as isize - r;
                    let (sx, sy) = if horizontal {
                        ((x as isize + o).clamp(0, w as isize - 1) as usize, y)
                    } else {
                        (x, (y as isize + o).clamp(0, h as isize - 1) as usize)
                    };
                    let p = (sy * w + sx) * 3;
                    for c in 0..3 {
                        acc[c] += kv * src[p + c];
                    }
                }
                let p = (y * w + x) * 3;
                for c in 0..3 {
                    out[p + c] = acc[c] / norm;
                }
            }
        }
        out
    };
    pass(&pass(img, true), false)
}

/// A box that surely holds the object's mask, `[x1, y1, x2, y2]`.
fn approx_box(category: usize, x: f32, y: f32, size: f32, squash: f32) -> [f32; 4] {
    let r = size / 2.0;
    if category == 4 {
        // Weeds: base at (x, y), rising `size` pixels, swaying ±0.35 size.
        [x - 0.4 * size, y - size, x + 0.4 * size, y + 1.0]
    } else {
        [x - r, y - r * squash, x + r, y + r * squash]
    }
}

fn overlap_of_smaller(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    iw * ih / area(a).min(area(b)).max(1e-6)
}

/// Object-local coordinates: `u, v` in units of the half-size, rotated by the object's angle
/// (flat objects: un-foreshortened first).
fn local(o: &SceneObject, dx: f32, dy: f32, cs: f32, sn: f32) -> (f32, f32) {
    let r = o.size_px / 2.0;
    if o.category == 4 {
        (dx / r, dy / r)
    } else {
        let dy = dy / o.squash;
        ((dx * cs + dy * sn) / r, (-dx * sn + dy * cs) / r)
    }
}

fn variant_f(o: &SceneObject, k: u64) -> f32 {
    (hash64(o.variant ^ k.wrapping_mul(0x9E37)) >> 40) as f32 / (1u64 << 24) as f32
}

/// Whether pixel offset `(dx, dy)` from the object's anchor is inside its mask.
fn inside(o: &SceneObject, dx: f32, dy: f32, cs: f32, sn: f32) -> bool {
    let (u, v) = local(o, dx, dy, cs, sn);
    match o.category {
        0 => {
            // Holothurian: a bent cylinder along u with rounded ends.
            let bend = (variant_f(o, 1) - 0.5) * 0.6;
            let vv = v - bend * (u * u - 0.5);
            let thick = 0.28 + 0.12 * variant_f(o, 2);
            u.abs() <= 1.0 && vv.abs() <= thick * (1.0 - u * u).max(0.0).powf(0.3)
        }
        1 => {
            // Echinus: a round test (body) with spines radiating out.
            let r = (u * u + v * v).sqrt();
            if r <= 0.5 {
                return true;
            }
            if r > 1.0 {
                return false;
            }
            let n = 20.0 + (variant_f(o, 1) * 16.0).floor();
            let th = v.atan2(u);
            let k = (th / std::f32::consts::TAU * n).round();
            let spine = (k as i64).rem_euclid(n as i64) as u64;
            let len = 0.75 + 0.25 * variant_f(o, 10 + spine);
            let dth = (th - k * std::f32::consts::TAU / n).abs();
            r <= len && dth * r <= 0.07
        }
        2 => {
            // Scallop: a disc cut flat at the hinge, with two ears.
            let fan = u * u + v * v <= 0.9 && v <= 0.6;
            let ears = v > 0.5 && v <= 0.85 && u.abs() <= 0.4;
            fan || ears
        }
        3 => {
            // Starfish: five arms, r_max(θ) = r_in + (1 − r_in)·((1 + cos 5θ)/2)^2.
            let r = (u * u + v * v).sqrt();
            let th = v.atan2(u);
            let r_in = 0.28 + 0.1 * variant_f(o, 1);
            let arm = ((1.0 + (5.0 * th).cos()) / 2.0).powf(1.6);
            r <= r_in + (1.0 - r_in) * arm
        }
        _ => {
            // Waterweeds: 2–4 swaying strands rising from the base (v from 0 up to −2).
            if !(-2.0..=0.0).contains(&v) {
                return false;
            }
            let strands = 2 + (variant_f(o, 1) * 3.0) as u64;
            let t = -v / 2.0; // 0 at the base, 1 at the top
            (0..strands).any(|s| {
                let x0 = (variant_f(o, 20 + s) - 0.5) * 0.4;
                let phase = variant_f(o, 40 + s) * std::f32::consts::TAU;
                let amp = 0.15 + 0.2 * variant_f(o, 60 + s);
                let height = 0.6 + 0.4 * variant_f(o, 80 + s);
                let cx = x0 + amp * t * (3.0 * t * 2.0 + phase).sin();
                let half = 0.1 * (1.0 - 0.6 * t);
                t <= height && (u - cx).abs() <= half
            })
        }
    }
}

/// The object's albedo at pixel offset `(dx, dy)`, or `None` outside its mask.
fn shade(o: &SceneObject, dx: f32, dy: f32, cs: f32, sn: f32) -> Option<[f32; 3]> {
    if !inside(o, dx, dy, cs, sn) {
        return None;
    }
    let (u, v) = local(o, dx, dy, cs, sn);
    let seed = o.variant;
    let t = match o.category {
        // Papillae: bright bumps on a dark body.
        0 => 0.8 + 0.5 * (value_noise(u * 6.0, v * 6.0, seed) > 0.7) as u8 as f32,
        // Spines lighter towards their tips.
        1 => {
            let r = (u * u + v * v).sqrt();
            if r > 0.5 {
                1.0 + r
            } else {
                0.8 + 0.3 * value_noise(u * 5.0, v * 5.0, seed)
            }
        }
        // Radial ribs from the hinge.
        2 => {
            let th = (v - 0.8).atan2(u);
            0.75 + 0.25 * (th * 18.0).cos()
        }
        // Granular skin, paler centre.
        3 => {
            let r = (u * u + v * v).sqrt();
            0.75 + 0.35 * value_noise(u * 8.0, v * 8.0, seed) + 0.2 * (1.0 - r).max(0.0)
        }
        _ => 0.7 + 0.5 * value_noise(u * 3.0, v * 6.0, seed),
    };
    Some(o.colour.map(|c| (c * t).clamp(0.0, 1.0)))
}
