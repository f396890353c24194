//! `--set data.coco=FILE`: a real (or any) underwater detection set in COCO format instead of
//! the rendered domains — `images[]` with `id`, `file_name` (a PNG, relative to the JSON's
//! folder), `width`, `height` and `domain` (the image's water type, a Jerlov name as
//! `ferrolab data synth-underwater` writes it); `annotations[]` with `image_id`,
//! `category_id`, `bbox` `[x, y, w, h]` in pixels; `categories[]` named after the five URPC
//! categories (holothurian, echinus, scallop, starfish, waterweeds; a subset is fine).
//!
//! The split: every image of a domain in `data.unseen` is an unseen test image; of the other
//! (seen) domains' images, every fifth by `id` order is a seen test image and the rest train.
//! Images are stretched to `data.image_size` square (nearest neighbour), boxes with them.
//! A file whose images carry no `domain` at all is read in the mAP-only mode: every fifth
//! image by `id` is a test image, there are no seen/unseen types (`data.unseen` is ignored),
//! and the run reports `map50` / `map` over the test images (see `experiment::run`). Some
//! images with a domain and some without is an error naming the first one without.
//!
//! Bad input — a box outside its image, an annotation of a missing image or an unknown
//! category id, an image file that is missing or of another size than declared, an unknown
//! water type name, a domain named in `data.unseen` that no image has — is one line naming
//! the file and the entry (exit status 2).

use super::experiment::{DetSet, to_chw};
use crate::models::yolo::YoloTarget;
use ferrolab_core::{SysResult, SystemError};
use ferrolab_data::underwater::{CATEGORIES, WaterType};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

/// Largest JSON accepted (a COCO file of a few thousand images is a few MiB).
const MAX_JSON_BYTES: u64 = 256 << 20;
/// Most images read (the budget is ≤ 6,000 training images).
const MAX_IMAGES: usize = 50_000;

#[derive(Debug, Deserialize)]
struct File {
    images: Vec<ImageEntry>,
    #[serde(default)]
    annotations: Vec<AnnEntry>,
    categories: Vec<CatEntry>,
}

#[derive(Debug, Deserialize)]
struct ImageEntry {
    id: i64,
    file_name: String,
    width: usize,
    height: usize,
    #[serde(default)]
    domain: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AnnEntry {
    #[serde(default)]
    id: Option<i64>,
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
}

#[derive(Debug, Deserialize)]
struct CatEntry {
    id: i64,
    name: String,
}

/// The training set, the test set (seen and unseen domains), and the seen and unseen types.
#[derive(Debug)]
pub struct CocoSplit {
    pub train: DetSet,
    pub test: DetSet,
    pub seen: Vec<WaterType>,
    pub unseen: Vec<WaterType>,
    /// Whether the images carry water types; without them every image's `water` is
    /// [`NO_DOMAIN`], a placeholder nothing reads as a water type.
    pub domains: bool,
}

/// The `water` of every image of a file without domains.
pub const NO_DOMAIN: WaterType = WaterType::I;

fn bad(path: &Path, msg: impl std::fmt::Display) -> SystemError {
    SystemError::usage(format!("data.coco {}: {msg}", path.display()))
}

/// HWC bytes of any channel count → RGB `s × s`, nearest neighbour.
pub(crate) fn to_rgb_square(img: &ferrolab_data::image::Image, s: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(s * s * 3);
    for y in 0..s {
        let sy = (y * img.height / s).min(img.height - 1);
        for x in 0..s {
            let sx = (x * img.width / s).min(img.width - 1);
            let p = (sy * img.width + sx) * img.channels;
            match img.channels {
                1 | 2 => out.extend([img.data[p]; 3]),
                _ => out.extend_from_slice(&img.data[p..p + 3]),
            }
        }
    }
    out
}

/// Reads `path` and splits it (see the module documentation) at input side `size`.
pub fn load(path: &Path, size: usize, unseen_names: &[String]) -> SysResult<CocoSplit> {
    let meta = std::fs::metadata(path).map_err(|e| bad(path, e))?;
    if !meta.is_file() || meta.len() > MAX_JSON_BYTES {
        return Err(bad(path, "not a regular file of at most 256 MiB"));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, e))?;
    let file: File = serde_json::from_str(&text)
        .map_err(|e| bad(path, format!("not a COCO detection file: {e}")))?;
    if file.images.is_empty() || file.images.len() > MAX_IMAGES {
        return Err(bad(
            path,
            format!("{} images; expected 1..={MAX_IMAGES}", file.images.len()),
        ));
    }
    // COCO category id → our class index, by name.
    let mut class_of: BTreeMap<i64, usize> = BTreeMap::new();
    for (k, c) in file.categories.iter().enumerate() {
        let Some(i) = CATEGORIES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(c.name.trim()))
        else {
            return Err(bad(
                path,
                format!(
                    "categories[{k}] (id {}, \"{}\") is not one of {}",
                    c.id,
                    c.name,
                    CATEGORIES.join(", ")
                ),
            ));
        };
        if class_of.insert(c.id, i).is_some() {
            return Err(bad(path, format!("categories[{k}]: id {} repeats", c.id)));
        }
    }
    let mut index_of: BTreeMap<i64, usize> = BTreeMap::new();
    let mut water = Vec::with_capacity(file.images.len());
    let domains = file.images.iter().any(|im| im.domain.is_some());
    for (k, im) in file.images.iter().enumerate() {
        if index_of.insert(im.id, k).is_some() {
            return Err(bad(path, format!("images[{k}]: id {} repeats", im.id)));
        }
        if im.width == 0 || im.height == 0 || im.width > 16_384 || im.height > 16_384 {
            return Err(bad(
                path,
                format!(
                    "images[{k}] (id {}): size {}×{} outside 1..=16384",
                    im.id, im.width, im.height
                ),
            ));
        }
        if !domains {
            water.push(NO_DOMAIN);
            continue;
        }
        let Some(d) = &im.domain else {
            return Err(bad(
                path,
                format!(
                    "images[{k}] (id {}) has no `domain` (the water type) while other images have one; give every image one, or none for the mAP-only mode",
                    im.id
                ),
            ));
        };
        let t: WaterType = d.parse().map_err(|e| {
            bad(
                path,
                format!("images[{k}] (id {}): domain \"{d}\": {e}", im.id),
            )
        })?;
        water.push(t);
    }
    let mut targets: Vec<Vec<YoloTarget>> = vec![Vec::new(); file.images.len()];
    for (k, a) in file.annotations.iter().enumerate() {
        let what = match a.id {
            Some(id) => format!("annotations[{k}] (id {id})"),
            None => format!("annotations[{k}]"),
        };
        let Some(&i) = index_of.get(&a.image_id) else {
            return Err(bad(
                path,
                format!("{what}: image_id {} is not in images", a.image_id),
            ));
        };
        let Some(&class) = class_of.get(&a.category_id) else {
            return Err(bad(
                path,
                format!("{what}: category_id {} is not in categories", a.category_id),
            ));
        };
        let im = &file.images[i];
        let [x, y, w, h] = a.bbox;
        // Half a pixel of slack for boxes rounded outward by an annotation tool.
        let (iw, ih) = (im.width as f64 + 0.5, im.height as f64 + 0.5);
        if !a.bbox.iter().all(|v| v.is_finite())
            || w <= 0.0
            || h <= 0.0
            || x < -0.5
            || y < -0.5
            || x + w > iw
            || y + h > ih
        {
            return Err(bad(
                path,
                format!(
                    "{what}: bbox {:?} is empty or outside image {} ({}×{})",
                    a.bbox, im.id, im.width, im.height
                ),
            ));
        }
        let (fx, fy) = (
            size as f64 / im.width as f64,
            size as f64 / im.height as f64,
        );
        let s = size as f32;
        targets[i].push(YoloTarget {
            class,
            x1: ((x * fx) as f32).clamp(0.0, s),
            y1: ((y * fy) as f32).clamp(0.0, s),
            x2: (((x + w) * fx) as f32).clamp(0.0, s),
            y2: (((y + h) * fy) as f32).clamp(0.0, s),
        });
    }
    // Without domains `data.unseen` (which has a default) names nothing here.
    let unseen_names = if domains { unseen_names } else { &[] };
    let mut unseen = Vec::new();
    for name in unseen_names {
        let t: WaterType = name
            .parse()
            .map_err(|e| bad(path, format!("data.unseen \"{name}\": {e}")))?;
        if !water.contains(&t) {
            return Err(bad(
                path,
                format!("data.unseen names water type {name}, which no image has"),
            ));
        }
        unseen.push(t);
    }
    let mut seen: Vec<WaterType> = water
        .iter()
        .copied()
        .filter(|t| !unseen.contains(t))
        .collect();
    seen.sort();
    seen.dedup();
    if !domains {
        seen.clear();
    } else if seen.len() < 2 {
        return Err(bad(
            path,
            format!(
                "{} seen water type(s) after data.unseen; the domain classifier needs at least two",
                seen.len()
            ),
        ));
    }
    // Seen images by id: every fifth is a test image.
    let mut order: Vec<usize> = (0..file.images.len()).collect();
    order.sort_by_key(|&i| file.images[i].id);
    let (mut train_idx, mut test_idx) = (Vec::new(), Vec::new());
    let mut k = 0usize;
    for i in order {
        if unseen.contains(&water[i]) {
            test_idx.push(i);
        } else {
            if k % 5 == 4 {
                test_idx.push(i);
            } else {
                train_idx.push(i);
            }
            k += 1;
        }
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let read = |idx: &[usize]| -> SysResult<DetSet> {
        let mut set = DetSet {
            size,
            pixels: Vec::with_capacity(idx.len() * 3 * size * size),
            rgb: Vec::with_capacity(idx.len()),
            targets: Vec::with_capacity(idx.len()),
            water: Vec::with_capacity(idx.len()),
        };
        for &i in idx {
            let im = &file.images[i];
            let p = base.join(&im.file_name);
            let img = ferrolab_data::image::read_png(&p).map_err(|e| {
                bad(
                    path,
                    format!("images[{i}] (id {}): {}: {e}", im.id, p.display()),
                )
            })?;
            if img.width != im.width || img.height != im.height {
                return Err(bad(
                    path,
                    format!(
                        "images[{i}] (id {}): {} is {}×{}, the file declares {}×{}",
                        im.id,
                        p.display(),
                        img.width,
                        img.height,
                        im.width,
                        im.height
                    ),
                ));
            }
            let rgb = to_rgb_square(&img, size);
            set.pixels.extend(to_chw(&rgb, size));
            set.rgb.push(rgb);
            set.targets.push(targets[i].clone());
            set.water.push(water[i]);
        }
        Ok(set)
    };
    if train_idx.is_empty() {
        return Err(bad(path, "no training image (every image is a test image)"));
    }
    Ok(CocoSplit {
        train: read(&train_idx)?,
        test: read(&test_idx)?,
        seen,
        unseen,
        domains,
    })
}
