//! ACDC cardiac MRI with scribbles, as npz files holding `image`, `label` and `scribble`
//! arrays of one shape: 2-D slices under `train/`, 3-D volumes under `val/`.

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result};
use crate::npz::Npz;

/// Largest label value: 0 background, 1 right-ventricle cavity, 2 myocardium, 3 left-ventricle
/// cavity.
pub const ACDC_MAX_LABEL: u8 = 3;
/// Scribble value meaning "not annotated"; 0..=3 are scribbles of the label classes.
pub const ACDC_UNLABELED: u8 = 4;

/// One 2-D slice, row-major `h x w`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcdcSlice {
    /// Intensity `round(255 x)` of the source's `x` in [0, 1].
    pub image: Vec<u8>,
    pub label: Vec<u8>,
    pub scribble: Vec<u8>,
    pub h: usize,
    pub w: usize,
}

/// One 3-D volume, row-major `d x h x w` (slices first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcdcVolume {
    pub image: Vec<u8>,
    pub label: Vec<u8>,
    pub scribble: Vec<u8>,
    pub d: usize,
    pub h: usize,
    pub w: usize,
}

impl AcdcVolume {
    /// Slice `k` (`0 <= k < d`) as an [`AcdcSlice`].
    pub fn slice(&self, k: usize) -> AcdcSlice {
        let n = self.h * self.w;
        let r = k * n..(k + 1) * n;
        AcdcSlice {
            image: self.image[r.clone()].to_vec(),
            label: self.label[r.clone()].to_vec(),
            scribble: self.scribble[r].to_vec(),
            h: self.h,
            w: self.w,
        }
    }
}

type Arrays = (Vec<usize>, Vec<u8>, Vec<u8>, Vec<u8>);

fn load_arrays(path: &Path, ndim: usize) -> Result<Arrays> {
    let mut npz = Npz::open(path)?;
    let image = npz.get("image")?;
    image.expect_ndim(ndim)?;
    let shape = image.shape.clone();
    let mut out = Vec::with_capacity(2);
    for (key, max) in [("label", ACDC_MAX_LABEL), ("scribble", ACDC_UNLABELED)] {
        let a = npz.get(key)?;
        if a.shape != shape {
            return Err(a.error(
                "shape",
                format!("{key} has shape {:?} but image has {shape:?}", a.shape),
            ));
        }
        let v = a.into_u8_vec()?;
        if let Some(i) = v.iter().position(|&x| x > max) {
            return Err(DataError::malformed(
                path,
                format!("member {key}.npy, element {i}"),
                format!("{key} value {} exceeds {max}", v[i]),
            ));
        }
        out.push(v);
    }
    let scribble = out.pop().unwrap_or_default();
    let label = out.pop().unwrap_or_default();
    Ok((shape, image.into_u8_vec()?, label, scribble))
}

/// Reads a 2-D slice file (`train/patientNNN_frameMM_slice_K.npz`).
pub fn load_acdc_slice(path: impl AsRef<Path>) -> Result<AcdcSlice> {
    let (s, image, label, scribble) = load_arrays(path.as_ref(), 2)?;
    Ok(AcdcSlice {
        image,
        label,
        scribble,
        h: s[0],
        w: s[1],
    })
}

/// Reads a 3-D volume file (`val/patientNNN_frameMM.npz`).
pub fn load_acdc_volume(path: impl AsRef<Path>) -> Result<AcdcVolume> {
    let (s, image, label, scribble) = load_arrays(path.as_ref(), 3)?;
    Ok(AcdcVolume {
        image,
        label,
        scribble,
        d: s[0],
        h: s[1],
        w: s[2],
    })
}

/// Compares names with digit runs taken as numbers, so `slice_2` sorts before `slice_10`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        match (x.first(), y.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, _) => return std::cmp::Ordering::Less,
            (_, None) => return std::cmp::Ordering::Greater,
            (Some(c), Some(d)) if c.is_ascii_digit() && d.is_ascii_digit() => {
                let dx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let dy = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (nx, ny) = (trim_zeros(&x[..dx]), trim_zeros(&y[..dy]));
                let ord = nx
                    .len()
                    .cmp(&ny.len())
                    .then_with(|| nx.cmp(ny))
                    .then_with(|| dx.cmp(&dy));
                if ord.is_ne() {
                    return ord;
                }
                (x, y) = (&x[dx..], &y[dy..]);
            }
            (Some(c), Some(d)) => {
                if c != d {
                    return c.cmp(d);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let z = d.iter().take_while(|&&c| c == b'0').count();
    &d[z.min(d.len().saturating_sub(1))..]
}

fn list_npz(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let p = entry.map_err(|e| DataError::io(dir, e))?.path();
        if p.extension().is_some_and(|e| e == "npz") {
            files.push(p);
        }
    }
    files.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(files)
}

/// The `.npz` files of `root/train` and `root/val`, each sorted by name with numbers compared
/// numerically (patient, frame, slice). An empty or absent folder is an error.
pub fn list_acdc(root: impl AsRef<Path>) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let root = root.as_ref();
    let mut out = Vec::with_capacity(2);
    for sub in ["train", "val"] {
        let dir = root.join(sub);
        if !dir.is_dir() {
            return Err(DataError::missing(
                root,
                format!("folder {sub}/ of the ACDC layout"),
            ));
        }
        let files = list_npz(&dir)?;
        if files.is_empty() {
            return Err(DataError::missing(&dir, "npz files"));
        }
        out.push(files);
    }
    let val = out.pop().unwrap_or_default();
    let train = out.pop().unwrap_or_default();
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::npy_bytes;
    use crate::npz::write_npz;
    use crate::testutil::TempDir;

    fn write(dir: &TempDir, name: &str, shape: &[usize], label: &[u8], scribble: &[u8]) -> PathBuf {
        let n: usize = shape.iter().product();
        let image: Vec<u8> = (0..n).map(|i| i as u8).collect();
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let sshape = if scribble.len() == n {
            shape.to_vec()
        } else {
            vec![scribble.len()]
        };
        write_npz(
            &p,
            &[
                ("image", npy_bytes("|u1", shape, false, &image)),
                ("label", npy_bytes("|u1", shape, false, label)),
                ("scribble", npy_bytes("|u1", &sshape, false, scribble)),
            ],
            true,
        )
        .unwrap();
        p
    }

    #[test]
    fn reads_slices_volumes_and_lists_in_natural_order() {
        let dir = TempDir::new("acdc_ok");
        for k in [0, 2, 10] {
            write(
                &dir,
                &format!("train/patient021_frame01_slice_{k}.npz"),
                &[2, 3],
                &[0, 1, 2, 3, 0, 0],
                &[4, 4, 0, 3, 4, 1],
            );
        }
        let v = write(
            &dir,
            "val/patient011_frame01.npz",
            &[2, 1, 2],
            &[0, 1, 2, 3],
            &[4, 0, 1, 4],
        );
        let (train, val) = list_acdc(dir.path()).unwrap();
        let names: Vec<String> = train
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "patient021_frame01_slice_0.npz",
                "patient021_frame01_slice_2.npz",
                "patient021_frame01_slice_10.npz"
            ]
        );
        assert_eq!(val, vec![v.clone()]);
        let s = load_acdc_slice(&train[0]).unwrap();
        assert_eq!(
            (s.h, s.w, s.label[3], s.scribble[5], s.image[5]),
            (2, 3, 3, 1, 5)
        );
        let vol = load_acdc_volume(&v).unwrap();
        assert_eq!((vol.d, vol.h, vol.w), (2, 1, 2));
        assert_eq!(vol.slice(1).label, vec![2, 3]);
        // A volume is not a slice.
        assert!(
            load_acdc_slice(&v)
                .unwrap_err()
                .to_string()
                .contains("expected 2-D")
        );
    }

    #[test]
    fn bad_files_name_file_and_problem() {
        let dir = TempDir::new("acdc_bad");
        let p = write(&dir, "a.npz", &[2, 2], &[0, 4, 0, 0], &[0, 0, 0, 0]);
        let e = load_acdc_slice(&p).unwrap_err().to_string();
        assert!(
            e.contains("a.npz")
                && e.contains("member label.npy, element 1")
                && e.contains("exceeds 3"),
            "{e}"
        );
        let p = write(&dir, "b.npz", &[2, 2], &[0, 0, 0, 0], &[0, 0, 5, 0]);
        assert!(
            load_acdc_slice(&p)
                .unwrap_err()
                .to_string()
                .contains("scribble value 5")
        );
        let p = write(&dir, "c.npz", &[2, 2], &[0, 0, 0, 0], &[0, 0, 0]);
        let e = load_acdc_slice(&p).unwrap_err().to_string();
        assert!(
            e.contains("c.npz") && e.contains("scribble has shape [3]"),
            "{e}"
        );
        let e = list_acdc(dir.path()).unwrap_err().to_string();
        assert!(e.contains("train/"), "{e}");
        assert_eq!(natural_cmp("a01b", "a1b"), std::cmp::Ordering::Greater);
        assert_eq!(natural_cmp("x9", "x10"), std::cmp::Ordering::Less);
    }
}
