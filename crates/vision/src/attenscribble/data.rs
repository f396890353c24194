//! ACDC for AttenScribble: training slices resized once to the training size (image bilinear,
//! label and scribble nearest), validation/test volumes kept at their stored size, and the
//! reference's augmentation (WSL4MIS `RandomGenerator`) applied jointly to image, label and
//! scribble.
//!
//! Resizing maps corners to corners, as `scipy.ndimage.zoom` (the references' resize): output
//! index `o` reads input `o·(n_in − 1)/(n_out − 1)` (nearest: rounded). The references resize
//! after augmenting; here the slices are resized once and augmented at the training size,
//! which keeps every epoch's work small and changes only where the rotation's interpolation
//! happens.

use crate::augment::{Image, Mask, SegSample};
use ferrolab_core::{SysResult, SystemError};
use ferrolab_data::acdc::{
    ACDC_UNLABELED, AcdcSlice, AcdcVolume, load_acdc_slice, load_acdc_volume,
};
use rand::{Rng, RngExt};
use std::path::{Path, PathBuf};

/// Label classes scored: right-ventricle cavity, myocardium, left-ventricle cavity.
pub const CLASSES: [i64; 3] = [1, 2, 3];
/// Classes the network predicts (background + 3).
pub const NUM_CLASSES: usize = 4;

/// Training slices at `size × size`.
#[derive(Debug, Clone)]
pub struct TrainSet {
    pub size: usize,
    /// `n · size²` intensities in [0, 1].
    pub images: Vec<f32>,
    pub labels: Vec<u8>,
    pub scribbles: Vec<u8>,
    /// Per slice: whether its scribbles hold two or more classes (the attentive loss leaves
    /// single-class slices out).
    pub multi_class: Vec<bool>,
    pub patients: usize,
}

impl TrainSet {
    /// Number of slices.
    pub fn len(&self) -> usize {
        self.multi_class.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.multi_class.is_empty()
    }

    /// Slice `i` as a joint sample: the mask holds `5·label + scribble`, so one nearest-
    /// neighbour transform moves both and the rotation's fill `4` means label 0, scribble 4.
    pub fn sample(&self, i: usize) -> SegSample {
        let n = self.size * self.size;
        let r = i * n..(i + 1) * n;
        SegSample {
            image: Image {
                channels: 1,
                height: self.size,
                width: self.size,
                data: self.images[r.clone()].to_vec(),
            },
            mask: Mask {
                height: self.size,
                width: self.size,
                data: self.labels[r.clone()]
                    .iter()
                    .zip(&self.scribbles[r])
                    .map(|(&l, &s)| 5 * l + s)
                    .collect(),
            },
        }
    }
}

/// Splits a joint mask back into (label, scribble).
pub fn split_mask(mask: &[u8]) -> (Vec<u8>, Vec<u8>) {
    mask.iter().map(|&m| (m / 5, m % 5)).unzip()
}

/// The reference's augmentation: with probability ½ a random quarter turn followed by a flip
/// on a random axis; otherwise with probability ½ a rotation by an angle uniform in
/// `[−max_degrees, max_degrees]` (image filled with 0, label 0, scribble 4).
pub fn augment<R: Rng + ?Sized>(s: &SegSample, max_degrees: f32, rng: &mut R) -> SegSample {
    if rng.random::<f64>() > 0.5 {
        let k = rng.random_range(0..4usize);
        let out = s.rot90(k);
        if rng.random_bool(0.5) {
            out.vflip()
        } else {
            out.hflip()
        }
    } else if rng.random::<f64>() > 0.5 && max_degrees > 0.0 {
        let a = rng.random_range(-max_degrees..=max_degrees);
        s.rotate(a, ACDC_UNLABELED)
    } else {
        s.clone()
    }
}

/// Source index read by output index `o` (corner-aligned).
fn src_coord(o: usize, n_in: usize, n_out: usize) -> f64 {
    if n_out <= 1 {
        0.0
    } else {
        o as f64 * (n_in - 1) as f64 / (n_out - 1) as f64
    }
}

/// Nearest-neighbour resize of a row-major `h × w` plane to `oh × ow`.
pub fn resize_nearest<T: Copy>(
    src: &[T],
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<T> {
    let cols: Vec<usize> = (0..ow)
        .map(|x| (src_coord(x, w, ow).round() as usize).min(w - 1))
        .collect();
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let sy = (src_coord(y, h, oh).round() as usize).min(h - 1);
        out.extend(cols.iter().map(|&sx| src[sy * w + sx]));
    }
    out
}

/// Bilinear resize of a `u8` plane to intensities in [0, 1].
pub fn resize_bilinear(src: &[u8], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    let at = |y: usize, x: usize| f32::from(src[y * w + x]) / 255.0;
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let sy = src_coord(y, h, oh);
        let y0 = (sy.floor() as usize).min(h - 1);
        let y1 = (y0 + 1).min(h - 1);
        let fy = (sy - y0 as f64) as f32;
        for x in 0..ow {
            let sx = src_coord(x, w, ow);
            let x0 = (sx.floor() as usize).min(w - 1);
            let x1 = (x0 + 1).min(w - 1);
            let fx = (sx - x0 as f64) as f32;
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// The `.npz` files of `dir`, sorted by name; an absent or empty folder is an error naming it.
pub fn list_npz(dir: &Path, what: &str) -> SysResult<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| SystemError::usage(format!("{}: {what} folder: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "npz") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(SystemError::usage(format!(
            "{}: {what} folder holds no .npz files",
            dir.display()
        )));
    }
    Ok(files)
}

/// Patient number of a `patientNNN_…` file name.
pub fn patient_of(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let digits: String = name
        .strip_prefix("patient")?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A slice at the training size: image, label, scribble.
type Resized = (Vec<f32>, Vec<u8>, Vec<u8>);

/// Loads the training slices of `dir` (the first `patients` patients, 0 = all), resized.
pub fn load_train(dir: &Path, size: usize, patients: usize) -> SysResult<TrainSet> {
    let files = list_npz(dir, "training")?;
    let mut ids: Vec<u32> = files.iter().filter_map(|p| patient_of(p)).collect();
    ids.sort_unstable();
    ids.dedup();
    let keep: std::collections::BTreeSet<u32> = if patients == 0 {
        ids.iter().copied().collect()
    } else {
        ids.iter().copied().take(patients).collect()
    };
    let chosen: Vec<&PathBuf> = files
        .iter()
        .filter(|p| patients == 0 || patient_of(p).is_some_and(|id| keep.contains(&id)))
        .collect();
    let loaded: Vec<SysResult<Resized>> = {
        use rayon::prelude::*;
        chosen
            .par_iter()
            .map(|p| {
                let s = load_acdc_slice(p)?;
                if s.h == 0 || s.w == 0 {
                    return Err(SystemError::usage(format!("{}: empty slice", p.display())));
                }
                Ok(resize_slice(&s, size))
            })
            .collect()
    };
    let resized = loaded.into_iter().collect::<SysResult<Vec<Resized>>>()?;
    Ok(assemble(size, keep.len(), resized))
}

/// Resizes one stored slice to the training size.
fn resize_slice(s: &AcdcSlice, size: usize) -> Resized {
    let (hw, o) = ((s.h, s.w), (size, size));
    (
        resize_bilinear(&s.image, hw, o),
        resize_nearest(&s.label, hw, o),
        resize_nearest(&s.scribble, hw, o),
    )
}

/// A training set of resized slices from `patients` patients.
fn assemble(size: usize, patients: usize, slices: Vec<Resized>) -> TrainSet {
    let n = slices.len() * size * size;
    let mut set = TrainSet {
        size,
        images: Vec::with_capacity(n),
        labels: Vec::with_capacity(n),
        scribbles: Vec::with_capacity(n),
        multi_class: Vec::with_capacity(slices.len()),
        patients,
    };
    for (im, la, sc) in slices {
        let mut present = [false; 4];
        for &s in &sc {
            if s < 4 {
                present[usize::from(s)] = true;
            }
        }
        set.multi_class
            .push(present.iter().filter(|&&p| p).count() > 1);
        set.images.extend(im);
        set.labels.extend(la);
        set.scribbles.extend(sc);
    }
    set
}

/// Patient numbers of the synthetic set, mirroring ACDC's split: training patients 21–…,
/// validation 11–20, test 1–10 (so `patientNNN` names mean the same role in both).
pub const SYNTHETIC_TRAIN_FIRST: u32 = 21;
/// Training patients of the synthetic set when `data.train_patients = 0`.
pub const SYNTHETIC_TRAIN_ALL: usize = 80;
/// Most training patients: their names stay three digits (patient999), so the written files
/// sort in the order the in-memory set holds them.
pub const SYNTHETIC_TRAIN_MAX: usize = 979;
/// Validation volumes of the synthetic set when `data.val_volumes = 0`, and at most (patients
/// 11–20: more would be training patients).
pub const SYNTHETIC_VAL_ALL: usize = 10;
/// First validation patient of the synthetic set.
pub const SYNTHETIC_VAL_FIRST: u32 = 11;
/// First test patient of the synthetic set (`attenscribble synth`'s `test/`).
pub const SYNTHETIC_TEST_FIRST: u32 = 1;

/// Patient `first + k`, or an error past the three-digit names.
pub fn synthetic_patient(first: u32, k: usize) -> SysResult<u32> {
    u32::try_from(k)
        .ok()
        .and_then(|k| first.checked_add(k))
        .filter(|&p| p <= 999)
        .ok_or_else(|| {
            SystemError::usage(format!(
                "synthetic patient {first} + {k}: past patient999 (at most {SYNTHETIC_TRAIN_MAX} training patients)"
            ))
        })
}

/// One synthetic patient's volume.
pub fn synthetic_volume(
    seed: u64,
    patient: u32,
    slices: usize,
    (h, w): (usize, usize),
) -> SysResult<NamedVolume> {
    Ok(NamedVolume {
        name: format!("patient{patient:03}_synthetic"),
        volume: ferrolab_data::synthetic_acdc_volume(seed, patient, slices, h, w)?,
    })
}

/// The synthetic set's stored volumes of patients `first, first + 1, …` (`count` of them).
pub fn synthetic_volumes(
    seed: u64,
    first: u32,
    count: usize,
    slices: usize,
    shape: (usize, usize),
) -> SysResult<Vec<NamedVolume>> {
    use rayon::prelude::*;
    (0..count)
        .into_par_iter()
        .map(|k| synthetic_volume(seed, synthetic_patient(first, k)?, slices, shape))
        .collect()
}

/// The training file name of slice `k` of `patient` (what `attenscribble synth` writes).
pub fn synthetic_slice_name(patient: u32, k: usize) -> String {
    format!("patient{patient:03}_frame01_slice_{k}.npz")
}

/// Training slices of `n` synthetic training patients, resized. Each
/// volume is resized as soon as it is drawn, so the stored volumes never all exist at once.
/// Slices are held in the order their file names sort (`slice_10` before `slice_2`), which is
/// the order [`load_train`] reads the files `attenscribble synth` writes: the same set, the
/// same batches.
pub fn synthetic_train(
    seed: u64,
    size: usize,
    n: usize,
    slices: usize,
    shape: (usize, usize),
) -> SysResult<TrainSet> {
    use rayon::prelude::*;
    let per_patient: Vec<Vec<(String, Resized)>> = (0..n)
        .into_par_iter()
        .map(|k| {
            let patient = synthetic_patient(SYNTHETIC_TRAIN_FIRST, k)?;
            let v = synthetic_volume(seed, patient, slices, shape)?.volume;
            Ok((0..v.d)
                .map(|j| {
                    (
                        synthetic_slice_name(patient, j),
                        resize_slice(&v.slice(j), size),
                    )
                })
                .collect())
        })
        .collect::<SysResult<_>>()?;
    let mut named: Vec<(String, Resized)> = per_patient.into_iter().flatten().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(assemble(
        size,
        n,
        named.into_iter().map(|(_, r)| r).collect(),
    ))
}

/// A validation or test volume.
#[derive(Debug, Clone)]
pub struct NamedVolume {
    pub name: String,
    pub volume: AcdcVolume,
}

/// Loads the volumes of `dir` (the first `limit`, 0 = all).
pub fn load_volumes(dir: &Path, limit: usize) -> SysResult<Vec<NamedVolume>> {
    let mut files = list_npz(dir, "volume")?;
    if limit > 0 {
        files.truncate(limit);
    }
    use rayon::prelude::*;
    files
        .par_iter()
        .map(|p| {
            let volume = load_acdc_volume(p)?;
            if volume.d == 0 || volume.h == 0 || volume.w == 0 {
                return Err(SystemError::usage(format!("{}: empty volume", p.display())));
            }
            Ok(NamedVolume {
                name: p
                    .file_stem()
                    .map_or_else(String::new, |s| s.to_string_lossy().into_owned()),
                volume,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn resizing_maps_corners_to_corners() {
        let src: Vec<u8> = (0..6).collect(); // 2 × 3
        assert_eq!(resize_nearest(&src, (2, 3), (2, 3)), src);
        // 2×3 → 3×5: columns read 0, .5→1 (round half away), 1, 1.5→2, 2.
        assert_eq!(resize_nearest(&src, (2, 3), (3, 5))[..5], [0, 1, 1, 2, 2]);
        let up = resize_bilinear(&[0, 255], (1, 2), (1, 3));
        assert_eq!(up, vec![0.0, 0.5, 1.0]);
    }

    #[test]
    fn augmentation_moves_label_and_scribble_together_and_fills_unannotated() {
        let size = 32;
        let n = size * size;
        let set = TrainSet {
            size,
            images: (0..n).map(|i| i as f32 / n as f32).collect(),
            labels: (0..n).map(|i| (i % 4) as u8).collect(),
            scribbles: (0..n)
                .map(|i| if i % 3 == 0 { (i % 4) as u8 } else { 4 })
                .collect(),
            multi_class: vec![true],
            patients: 1,
        };
        let s = set.sample(0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut rotated = 0;
        for _ in 0..40 {
            let a = augment(&s, 20.0, &mut rng);
            let (label, scribble) = split_mask(&a.mask.data);
            assert!(label.iter().all(|&l| l <= 3) && scribble.iter().all(|&v| v <= 4));
            // Wherever a scribble survives it agrees with the label moved with it.
            for (l, sc) in label.iter().zip(&scribble) {
                assert!(*sc == 4 || sc == l, "scribble {sc} on label {l}");
            }
            // Corners filled by a small rotation are label 0, scribble 4, image 0.
            if a.image.data[0] == 0.0 && a.mask.data[0] == 4 {
                rotated += 1;
            }
        }
        assert!(rotated > 0);
    }
}
