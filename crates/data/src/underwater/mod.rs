//! A physically based synthetic stand-in for underwater detection data (URPC-style
//! categories seen through the ten Jerlov water types), for ADOD's domain-generalisation
//! protocol and AdaEvo's drifting video streams.
//!
//! **What it is.** Procedural seabed scenes (textured sand and rock on a sloped-away plane
//! seen by a pitched pinhole camera) with the five URPC categories (holothurian, echinus,
//! scallop, starfish, waterweeds) drawn with shape, texture, colour, pose and scale variation
//! and partial occlusion, with exact boxes; then the revised image-formation model
//! `I_c = J_c·e^(−β^D_c z) + B^∞_c·(1 − e^(−β^B_c z))` per channel with the Jerlov types'
//! coefficients (UWCNN's table, see [`water`]), downwelling light filtered by the water
//! column, an optional camera light with `1/d²` falloff, forward-scattering blur growing with
//! range, marine snow, sensor noise, auto-exposure and gamma.
//!
//! **What it is not.** Not real underwater data: no caustics, no refraction at a port, no
//! spectral (only RGB) rendering, no backscatter from the camera light, no inter-reflection,
//! objects are flat textured cut-outs at one range, and the textures are value noise. It
//! reproduces what distinguishes the water types — the colour cast, contrast loss with range
//! and turbidity — which is what a domain-generalisation experiment needs, not the look of
//! URPC photographs. Figures on it are figures on this stand-in.
//!
//! Library use: a [`Scene`] is laid out from a seed, then rendered under any [`Water`] state
//! (deterministic by seed); [`CameraPath`] drifts water type, depth, light and turbidity over
//! frames; [`sample`] draws one labelled image of a given type; [`write_coco`] writes PNGs
//! and a COCO JSON whose `images[].domain` names each image's water type.
//!
//! ```
//! use ferrolab_data::underwater::{sample, SceneConfig, WaterType};
//!
//! let s = sample(&SceneConfig::default(), WaterType::C7, 42).unwrap();
//! assert_eq!(s.image.rgb.len(), 128 * 128 * 3);
//! assert!(s.image.boxes.iter().all(|b| b.bbox[0] + b.bbox[2] <= 128.0));
//! ```

pub mod scene;
pub mod water;

pub use scene::{
    BoxAnnotation, CATEGORIES, Camera, LinearFrame, MAX_RANGE_M, Rendered, Scene, SceneConfig,
    SceneObject,
};
pub use water::{Water, WaterType};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::fmt::Write as _;
use std::path::Path;

use crate::error::{DataError, Result};

/// One labelled image.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub water_type: WaterType,
    pub water: Water,
    pub image: Rendered,
}

/// The water of one image of type `t`: the scene lies at an optical depth of 0.3–1.5 below
/// the surface (clear oceanic water: about 3–15 m; type 9: about 0.4–1.7 m, as turbid water is
/// found near shore), turbidity ±15 % around the table, and a camera light in the deeper half.
pub fn water_for(t: WaterType, rng: &mut StdRng) -> Water {
    let b = Water::of_type(t, 0.0).beta_direct();
    let mean_beta = (b[0] + b[1] + b[2]) / 3.0;
    let optical = rng.random_range(0.3..1.5f32);
    let mut w = Water::of_type(t, optical / mean_beta);
    w.turbidity = rng.random_range(0.85..1.15);
    if optical > 0.9 {
        w.artificial_light = rng.random_range(0.5..2.0);
    }
    w
}

/// One image of water type `t`, everything drawn from `seed`: the same `(config, t, seed)`
/// always gives the same pixels and boxes, and the layout depends on `seed` alone (so one
/// seed under two types is the same scene in two waters).
pub fn sample(
    config: &SceneConfig,
    t: WaterType,
    seed: u64,
) -> std::result::Result<Sample, String> {
    let scene = Scene::generate(config, seed)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0xA7E5_0000_0000_0000 ^ (t as u64) << 8);
    let water = water_for(t, &mut rng);
    let image = scene.render(&water, seed.rotate_left(17) ^ t as u64)?;
    Ok(Sample {
        water_type: t,
        water,
        image,
    })
}

/// A camera drifting over the seabed while the water changes: frame `k` of `frames`
/// interpolates the water between `from` and `to` (β linearly) and moves to a new scene
/// every `frames_per_scene` frames, so a stream shows both content and domain drift.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraPath {
    pub config: SceneConfig,
    pub from: Water,
    pub to: Water,
    pub frames: usize,
    pub frames_per_scene: usize,
    pub seed: u64,
}

impl CameraPath {
    /// Frame `k` (0-based; `k ≥ frames` stays at `to`).
    pub fn frame(&self, k: usize) -> std::result::Result<Rendered, String> {
        let t = if self.frames <= 1 {
            1.0
        } else {
            k as f32 / (self.frames - 1) as f32
        };
        let water = self.from.lerp(&self.to, t);
        let scene_seed = self
            .seed
            .wrapping_add((k / self.frames_per_scene.max(1)) as u64);
        let scene = Scene::generate(&self.config, scene_seed)?;
        scene.render(&water, self.seed ^ (k as u64).wrapping_mul(0x9E37_79B9))
    }

    /// The water at frame `k`.
    pub fn water_at(&self, k: usize) -> Water {
        let t = if self.frames <= 1 {
            1.0
        } else {
            (k as f32 / (self.frames - 1) as f32).min(1.0)
        };
        self.from.lerp(&self.to, t)
    }
}

/// Writes `per_type` images of each type in `types` as `DIR/images/<type>_<k>.png` and one
/// COCO JSON `DIR/annotations.json` (categories 1–5 as [`CATEGORIES`], `images[].domain` the
/// water type's name). Image `k` of type `t` uses seed `seed + k` (the same scenes in every
/// water type, so per-type differences come from the water alone). Returns the samples'
/// count.
pub fn write_coco(
    dir: &Path,
    types: &[WaterType],
    per_type: usize,
    config: &SceneConfig,
    seed: u64,
) -> Result<usize> {
    let images_dir = dir.join("images");
    std::fs::create_dir_all(&images_dir).map_err(|e| DataError::io(&images_dir, e))?;
    let mut images = String::new();
    let mut anns = String::new();
    let (mut image_id, mut ann_id) = (0u64, 0u64);
    for &t in types {
        for k in 0..per_type {
            let s = sample(config, t, seed.wrapping_add(k as u64))
                .map_err(|e| DataError::invalid("underwater scene", e))?;
            image_id += 1;
            let file = format!("{}_{k:05}.png", t.key());
            let img = crate::image::Image::new(s.image.width, s.image.height, 3, s.image.rgb)?;
            crate::image::write_png(images_dir.join(&file), &img)?;
            if !images.is_empty() {
                images.push_str(",\n");
            }
            // Infallible: writing to a String.
            let _ = write!(
                images,
                r#"  {{"id": {image_id}, "file_name": "images/{file}", "width": {}, "height": {}, "domain": "{}"}}"#,
                img.width,
                img.height,
                t.name()
            );
            for b in &s.image.boxes {
                ann_id += 1;
                if !anns.is_empty() {
                    anns.push_str(",\n");
                }
                let [x, y, w, h] = b.bbox;
                let _ = write!(
                    anns,
                    r#"  {{"id": {ann_id}, "image_id": {image_id}, "category_id": {}, "bbox": [{x}, {y}, {w}, {h}], "area": {}, "iscrowd": 0}}"#,
                    b.category + 1,
                    w * h
                );
            }
        }
    }
    let cats: Vec<String> = CATEGORIES
        .iter()
        .enumerate()
        .map(|(i, n)| format!(r#"  {{"id": {}, "name": "{n}"}}"#, i + 1))
        .collect();
    let json = format!(
        "{{\"images\": [\n{images}\n],\n\"annotations\": [\n{anns}\n],\n\"categories\": [\n{}\n]}}\n",
        cats.join(",\n")
    );
    crate::io::write_atomic(&dir.join("annotations.json"), json.as_bytes())?;
    Ok(image_id as usize)
}
