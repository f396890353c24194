//! Image-classification data: Fashion-MNIST (IDX files found by the data lookup), a seeded
//! validation split carved from the training set, normalisation with the training images'
//! mean and standard deviation, a deterministic synthetic stand-in, and the image files
//! `ferrolab classify predict` reads (IDX; PNG through `ferrolab_data::image`).
//!
//! Fashion-MNIST (Xiao, Rasul & Vollgraf 2017): 60 000 training and 10 000 test images of
//! 28 × 28 grey levels in 10 classes, in the MNIST IDX layout. Debian's
//! `dataset-fashion-mnist` package installs it in `/usr/share/datasets/fashion-mnist`, which
//! the lookup tries after `--data-dir`, `$FERROLAB_DATA` and the per-user folder.

use ferrolab_data::{DataError, read_idx};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::path::{Path, PathBuf};

/// Fashion-MNIST's class names, by label.
pub const FASHION_CLASSES: [&str; 10] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// The largest side accepted for an image (a header claiming more is damaged).
pub const MAX_SIDE: usize = 4096;

/// Grey-level images of one size with a label each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// `len × height × width` grey levels, image-major.
    pub pixels: Vec<u8>,
    /// One label per image (empty for unlabelled images).
    pub labels: Vec<u8>,
}

impl ImageSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / (self.height * self.width).max(1)
    }
    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }
    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.height * self.width;
        &self.pixels[i * n..(i + 1) * n]
    }
    /// The images at `idx`, in that order.
    pub fn subset(&self, idx: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(idx.len() * self.height * self.width);
        for &i in idx {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            height: self.height,
            width: self.width,
            pixels,
            labels: if self.labels.is_empty() {
                Vec::new()
            } else {
                idx.iter().map(|&i| self.labels[i]).collect()
            },
        }
    }
    /// The first `n` images (all when `n` is 0 or larger than the set).
    pub fn head(&self, n: usize) -> ImageSet {
        if n == 0 || n >= self.len() {
            return self.clone();
        }
        self.subset(&(0..n).collect::<Vec<_>>())
    }
    /// Images per label `0..classes`.
    pub fn label_counts(&self, classes: usize) -> Vec<usize> {
        let mut c = vec![0; classes];
        for &l in &self.labels {
            if let Some(slot) = c.get_mut(usize::from(l)) {
                *slot += 1;
            }
        }
        c
    }
}

/// The three parts a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Splits {
    /// What the model is fitted on.
    pub train: ImageSet,
    /// Held out from the training file, for model selection and curves.
    pub val: ImageSet,
    /// The published test set (never seen before the final evaluation).
    pub test: ImageSet,
}

fn malformed(path: &Path, at: impl Into<String>, msg: impl Into<String>) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        at: at.into(),
        msg: msg.into(),
    }
}

/// Reads an IDX file of grey-level images: dimensions `[n, height, width]` with
/// `n ≥ 1` and sides in `1..=MAX_SIDE`.
pub fn read_idx_images(path: &Path) -> Result<ImageSet, DataError> {
    let a = read_idx(path)?;
    let [n, h, w] = a.dims[..] else {
        return Err(malformed(
            path,
            "header",
            format!(
                "an image file has 3 dimensions [count, height, width], this one has {} ({:?}); a label file given as images?",
                a.dims.len(),
                a.dims
            ),
        ));
    };
    if n == 0 || !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) {
        return Err(malformed(
            path,
            "header",
            format!(
                "dimensions [{n}, {h}, {w}]: need at least one image and sides in 1..={MAX_SIDE}"
            ),
        ));
    }
    Ok(ImageSet {
        height: h,
        width: w,
        pixels: a.data,
        labels: Vec::new(),
    })
}

/// Reads an IDX label file: one dimension, every label below `classes` (the first one that is
/// not is named by its index).
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u8>, DataError> {
    let a = read_idx(path)?;
    if a.dims.len() != 1 {
        return Err(malformed(
            path,
            "header",
            format!(
                "a label file has 1 dimension, this one has {} ({:?}); an image file given as labels?",
                a.dims.len(),
                a.dims
            ),
        ));
    }
    if let Some((i, l)) = a
        .data
        .iter()
        .enumerate()
        .find(|(_, l)| usize::from(**l) >= classes)
    {
        return Err(malformed(
            path,
            format!("label {i}"),
            format!("label {l} is not one of the {classes} classes 0..{classes}"),
        ));
    }
    Ok(a.data)
}

/// An image file and its label file, which must hold the same number of items.
pub fn read_idx_pair(images: &Path, labels: &Path, classes: usize) -> Result<ImageSet, DataError> {
    let mut set = read_idx_images(images)?;
    let l = read_idx_labels(labels, classes)?;
    if l.len() != set.len() {
        return Err(malformed(
            labels,
            "header",
            format!(
                "{} labels for the {} images of {}",
                l.len(),
                set.len(),
                images.display()
            ),
        ));
    }
    set.labels = l;
    Ok(set)
}

/// `dir/name`, or `dir/name.gz` when only the compressed file is there.
fn part(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    let plain = dir.join(name);
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        Ok(gz)
    } else if plain.is_file() {
        Ok(plain)
    } else if let Some(p) = [&gz, &plain].into_iter().find(|p| p.exists()) {
        // Something is there, so "missing" would send the user looking for the wrong thing.
        let what = if p.is_dir() {
            "a folder"
        } else {
            "not a regular file"
        };
        Err(DataError::Invalid {
            what: "data file".into(),
            msg: format!("{} is {what}, expected the IDX file", p.display()),
        })
    } else {
        Err(DataError::Missing {
            path: dir.to_path_buf(),
            what: format!("{name}.gz (or {name})"),
        })
    }
}

/// Fashion-MNIST's published training and test sets from a folder holding the four
/// `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` files. Both must be 28 × 28.
pub fn load_fashion_mnist(dir: &Path) -> Result<(ImageSet, ImageSet), DataError> {
    let load = |prefix: &str| -> Result<ImageSet, DataError> {
        let images = part(dir, &format!("{prefix}-images-idx3-ubyte"))?;
        let labels = part(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
        let set = read_idx_pair(&images, &labels, FASHION_CLASSES.len())?;
        if (set.height, set.width) != (28, 28) {
            return Err(malformed(
                &images,
                "header",
                format!(
                    "Fashion-MNIST images are 28x28, these are {}x{}",
                    set.height, set.width
                ),
            ));
        }
        Ok(set)
    };
    Ok((load("train")?, load("t10k")?))
}

/// Carves a validation set of `val` images out of `train`: the indices are shuffled by a
/// generator seeded with `seed`, the first `val` of that order become the validation set (in
/// shuffled order) and the rest stay in the training set in their file order. The same seed
/// always holds out the same images; `val = 0` holds out nothing.
pub fn validation_split(train: &ImageSet, val: usize, seed: u64) -> (ImageSet, ImageSet) {
    let n = train.len();
    let val = val.min(n);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    let held = &order[..val];
    let mut keep: Vec<usize> = order[val..].to_vec();
    keep.sort_unstable();
    (train.subset(&keep), train.subset(held))
}

/// Per-pixel standardisation `(v / 255 − mean) / std` with the training images' statistics
/// (one mean and one standard deviation over all their pixels, as torchvision's
/// `Normalize((0.2860,), (0.3530,))` for Fashion-MNIST).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Mean grey level in `[0, 1]`.
    pub mean: f32,
    /// Standard deviation of the grey levels in `[0, 1]` (positive).
    pub std: f32,
}

impl Normalization {
    /// The statistics of `set`'s pixels (std 1 for a constant set, so nothing divides by 0).
    pub fn of(set: &ImageSet) -> Self {
        let n = set.pixels.len().max(1) as f64;
        let (mut s, mut s2) = (0f64, 0f64);
        for &p in &set.pixels {
            let v = f64::from(p) / 255.0;
            s += v;
            s2 += v * v;
        }
        let mean = s / n;
        let var = (s2 / n - mean * mean).max(0.0);
        let std = if var > 1e-12 { var.sqrt() } else { 1.0 };
        Normalization {
            mean: mean as f32,
            std: std as f32,
        }
    }

    /// Grey levels to model inputs.
    pub fn apply(&self, v: f32) -> f32 {
        (v - self.mean) / self.std
    }
}

/// A deterministic stand-in for Fashion-MNIST with the same shapes: class `k` is a bright
/// stroke through the image at `18·k` degrees, of random length, thickness and position, on
/// a noisy background. Learnable in one epoch by a small network, not by a lookup of pixels.
pub fn synthetic(n: usize, side: usize, seed: u64) -> ImageSet {
    use rand::RngExt;
    let mut rng = StdRng::seed_from_u64(seed);
    let classes = FASHION_CLASSES.len();
    let mut pixels = Vec::with_capacity(n * side * side);
    let mut labels = Vec::with_capacity(n);
    let c = (side as f32 - 1.0) / 2.0;
    for i in 0..n {
        let label = i % classes;
        let angle = (label as f32 * 18.0 + rng.random_range(-4.0f32..4.0)).to_radians();
        let (dy, dx) = angle.sin_cos();
        let cy = c + rng.random_range(-2.0f32..2.0);
        let cx = c + rng.random_range(-2.0f32..2.0);
        let half = side as f32 * rng.random_range(0.25f32..0.42);
        let thick = rng.random_range(1.0f32..2.2);
        for y in 0..side {
            for x in 0..side {
                let (py, px) = (y as f32 - cy, x as f32 - cx);
                let along = py * dy + px * dx;
                let across = (py * dx - px * dy).abs();
                let on = along.abs() <= half && across <= thick;
                let base = if on { 200.0 } else { 20.0 };
                let v = base + rng.random_range(-20.0f32..20.0);
                pixels.push(v.clamp(0.0, 255.0) as u8);
            }
        }
        labels.push(label as u8);
    }
    // Interleaved classes would make every batch balanced; shuffle as a real file would be.
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    ImageSet {
        height: side,
        width: side,
        pixels,
        labels,
    }
    .subset(&order)
}

/// Whether `path` starts with the PNG signature.
pub fn is_png(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && head == *b"\x89PNG\r\n\x1a\n"
}

/// Images to classify from one file: an IDX image file (`[n, h, w]`) or a PNG (its grey
/// levels; colour becomes luma). Every image must be `height × width`; the error
/// names the file and both sizes.
pub fn read_images(path: &Path, height: usize, width: usize) -> Result<ImageSet, DataError> {
    let set = if is_png(path) {
        read_png_grey(path)?
    } else {
        read_idx_images(path)?
    };
    if (set.height, set.width) != (height, width) {
        return Err(malformed(
            path,
            "header",
            format!(
                "images are {}x{} but the model takes {height}x{width}",
                set.height, set.width
            ),
        ));
    }
    Ok(set)
}

/// One PNG as a one-image set of grey levels (colour becomes luma as PIL's `convert("L")`).
fn read_png_grey(path: &Path) -> Result<ImageSet, DataError> {
    let img = ferrolab_data::image::read_png(path)?;
    let (h, w) = (img.height, img.width);
    if !(1..=MAX_SIDE).contains(&h) || !(1..=MAX_SIDE).contains(&w) {
        return Err(malformed(
            path,
            "header",
            format!("{w}x{h} image: sides must be in 1..={MAX_SIDE}"),
        ));
    }
    Ok(ImageSet {
        height: h,
        width: w,
        pixels: img.to_gray(),
        labels: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ferrolab-vdata-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_folder_where_the_idx_file_belongs_is_named_as_such() {
        let d = tmp("partdir");
        std::fs::create_dir_all(d.join("train-images-idx3-ubyte.gz")).unwrap();
        let e = part(&d, "train-images-idx3-ubyte").unwrap_err().to_string();
        assert!(
            e.contains("is a folder") && e.contains("idx3-ubyte.gz"),
            "{e}"
        );
        let e = part(&d, "t10k-images-idx3-ubyte").unwrap_err().to_string();
        assert!(e.contains("missing t10k-images-idx3-ubyte.gz"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn pairs_are_read_and_checked_against_each_other() {
        let d = tmp("pair");
        let px: Vec<u8> = (0..3 * 2 * 2).collect();
        std::fs::write(d.join("i"), idx(&[3, 2, 2], &px)).unwrap();
        std::fs::write(d.join("l"), idx(&[3], &[0, 9, 4])).unwrap();
        let s = read_idx_pair(&d.join("i"), &d.join("l"), 10).unwrap();
        assert_eq!((s.len(), s.height, s.width), (3, 2, 2));
        assert_eq!(s.image(1), &[4, 5, 6, 7]);
        assert_eq!(s.labels, vec![0, 9, 4]);
        std::fs::write(d.join("l2"), idx(&[2], &[0, 1])).unwrap();
        let e = read_idx_pair(&d.join("i"), &d.join("l2"), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 labels for the 3 images"), "{e}");
        std::fs::write(d.join("l3"), idx(&[3], &[0, 10, 1])).unwrap();
        let e = read_idx_labels(&d.join("l3"), 10).unwrap_err().to_string();
        assert!(e.contains("label 1") && e.contains("label 10"), "{e}");
        let e = read_idx_images(&d.join("l")).unwrap_err().to_string();
        assert!(e.contains("3 dimensions"), "{e}");
        std::fs::write(d.join("bad"), b"\x00\x01\x08\x03junk").unwrap();
        let e = read_idx_images(&d.join("bad")).unwrap_err().to_string();
        assert!(e.contains("magic") && e.contains("bad"), "{e}");
        std::fs::write(d.join("short"), idx(&[3, 2, 2], &px[..10])).unwrap();
        let e = read_idx_images(&d.join("short")).unwrap_err().to_string();
        assert!(e.contains("need 12 bytes, found 10"), "{e}");
        let e = load_fashion_mnist(&d).unwrap_err().to_string();
        assert!(e.contains("train-images-idx3-ubyte"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn validation_split_is_seeded_disjoint_and_complete() {
        let s = synthetic(100, 8, 1);
        let (t, v) = validation_split(&s, 20, 7);
        assert_eq!((t.len(), v.len()), (80, 20));
        assert_eq!(validation_split(&s, 20, 7), (t.clone(), v.clone()));
        assert_ne!(validation_split(&s, 20, 8).1, v);
        // Every image ends up in exactly one part.
        let mut all: Vec<&[u8]> = (0..t.len()).map(|i| t.image(i)).collect();
        all.extend((0..v.len()).map(|i| v.image(i)));
        all.sort();
        let mut orig: Vec<&[u8]> = (0..s.len()).map(|i| s.image(i)).collect();
        orig.sort();
        assert_eq!(all, orig);
        assert_eq!(validation_split(&s, 0, 7).0, s);
    }

    #[test]
    fn normalisation_uses_the_pixel_statistics() {
        let s = ImageSet {
            height: 1,
            width: 2,
            pixels: vec![0, 255, 0, 255],
            labels: vec![0, 1],
        };
        let n = Normalization::of(&s);
        assert!(
            (n.mean - 0.5).abs() < 1e-6 && (n.std - 0.5).abs() < 1e-6,
            "{n:?}"
        );
        assert!((n.apply(1.0) - 1.0).abs() < 1e-6);
        let flat = ImageSet {
            pixels: vec![7; 4],
            ..s
        };
        assert_eq!(Normalization::of(&flat).std, 1.0);
    }

    #[test]
    fn synthetic_data_is_seeded_and_balanced() {
        let a = synthetic(200, 28, 3);
        assert_eq!(a, synthetic(200, 28, 3));
        assert_ne!(a, synthetic(200, 28, 4));
        assert_eq!(a.label_counts(10), vec![20; 10]);
        assert_eq!(a.len(), 200);
    }

    #[test]
    #[ignore = "needs the real Fashion-MNIST (dataset-fashion-mnist or ferrolab data fetch fashion-mnist)"]
    fn reads_the_real_fashion_mnist() {
        let dir = ferrolab_data::lookup::find_dataset(None, "fashion-mnist").unwrap();
        let (train, test) = load_fashion_mnist(&dir).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        // The published sets are balanced: 6000 and 1000 per class.
        assert_eq!(train.label_counts(10), vec![6000; 10]);
        assert_eq!(test.label_counts(10), vec![1000; 10]);
        let n = Normalization::of(&train);
        // torchvision's published statistics for the training set.
        assert!(
            (n.mean - 0.2860).abs() < 1e-3 && (n.std - 0.3530).abs() < 1e-3,
            "{n:?}"
        );
    }
}
