//! `ferrolab attenscribble predict --checkpoint DIR volume.npz --out mask.npz`: labels for
//! every slice of a volume (an npz with a 2-D or 3-D `uint8` `image`; other members are
//! ignored), written as one `uint8` array `label` of the image's shape.

use super::checkpoint;
use super::train::predict_volume;
use ferrolab_core::{SysResult, SystemError};
use ferrolab_data::npz::{Npz, npz_bytes};
use std::path::{Path, PathBuf};

/// The clap command.
pub fn command() -> clap::Command {
    clap::Command::new("predict")
        .about("Segment a volume (npz with `image`) with a trained checkpoint; writes `label` (uint8) to --out")
        .arg(clap::Arg::new("checkpoint").long("checkpoint").required(true).value_parser(clap::value_parser!(PathBuf)).help("checkpoint folder (model.safetensors + meta.json)"))
        .arg(clap::Arg::new("out").long("out").required(true).value_parser(clap::value_parser!(PathBuf)).help("output .npz (must not exist)"))
        .arg(clap::Arg::new("input").required(true).value_parser(clap::value_parser!(PathBuf)).help("volume .npz (D×H×W or H×W uint8 `image`)"))
        .arg(clap::Arg::new("max-memory").long("max-memory").value_name("SIZE").help("Refuse a volume whose estimated memory (image, labels, one batch of the network's maps) exceeds SIZE (e.g. 2G; default: 80% of this machine's memory)"))
        .arg(ferrolab_core::system::threads_arg())
}

/// Slices the network reads at once.
const BATCH: usize = 16;

/// Peak memory of segmenting a `d × h × w` volume: the image and its labels (one byte a voxel
/// each), one batch of resized slices, and one batch of the network's maps at the checkpoint's
/// size ([`super::model::maps_bytes_per_slice`], the training estimate's count).
pub fn memory_estimate(
    spec: &super::model::AttenUNetSpec,
    size: usize,
    (d, h, w): (usize, usize, usize),
) -> ferrolab_core::guard::MemoryEstimate {
    let s = size as u64;
    let voxels = (d as u64).saturating_mul(h as u64).saturating_mul(w as u64);
    let maps = super::model::maps_bytes_per_slice(&spec.widths, spec.attention_level, size);
    let batch = d.min(BATCH) as u64;
    ferrolab_core::guard::MemoryEstimate {
        setting: format!("a {d}×{h}×{w} volume at the checkpoint's size {size}"),
        bytes: voxels
            .saturating_mul(2)
            .saturating_add(batch * (s * s * 4 + maps)),
    }
}

/// Runs it.
pub fn run(m: &clap::ArgMatches) -> SysResult<()> {
    let get = |k: &str| {
        m.get_one::<PathBuf>(k)
            .cloned()
            .ok_or_else(|| SystemError::usage(format!("--{k} is required")))
    };
    ferrolab_core::backend::try_init_threads(m.get_one::<usize>("threads").copied())?;
    let (ckpt, out, input) = (get("checkpoint")?, get("out")?, get("input")?);
    ferrolab_core::run::check_out_file(&out)?;
    let limit = match m.get_one::<String>("max-memory") {
        Some(v) => ferrolab_core::guard::parse_size(v)?,
        None => ferrolab_core::guard::default_limit(),
    };
    let (model, meta) = checkpoint::load(&ckpt)?;
    let (shape, labels) = predict_file_within(&model, &meta, &input, limit)?;
    write(&out, &shape, &labels)?;
    eprintln!(
        "{}: {} slices of {}×{} segmented → {}",
        input.display(),
        labels.len() / (shape[shape.len() - 1] * shape[shape.len() - 2]),
        shape[shape.len() - 2],
        shape[shape.len() - 1],
        out.display()
    );
    Ok(())
}

/// Labels for the `image` of `path` (shape kept).
pub fn predict_file(
    model: &super::model::AttenUNet,
    size: usize,
    path: &Path,
) -> SysResult<(Vec<usize>, Vec<u8>)> {
    predict_volume_checked(model, size, path, |_| Ok(()))
}

/// [`predict_file`] that first refuses, as a usage error naming the volume, a volume whose
/// [`memory_estimate`] exceeds `limit` bytes (the image is read, within the npz reader's cap,
/// before its labels and the network's maps are allocated).
pub fn predict_file_within(
    model: &super::model::AttenUNet,
    meta: &checkpoint::Meta,
    path: &Path,
    limit: u64,
) -> SysResult<(Vec<usize>, Vec<u8>)> {
    predict_volume_checked(model, meta.size, path, |dims| {
        let est = memory_estimate(&meta.spec, meta.size, dims);
        ferrolab_core::guard::check(&est, limit)
            .map_err(|e| SystemError::usage(format!("{}: {e}", path.display())))
    })
}

fn predict_volume_checked(
    model: &super::model::AttenUNet,
    size: usize,
    path: &Path,
    admit: impl Fn((usize, usize, usize)) -> SysResult<()>,
) -> SysResult<(Vec<usize>, Vec<u8>)> {
    let mut npz = Npz::open(path)?;
    let image = npz.get("image")?;
    let shape = image.shape.clone();
    let (d, h, w) = match shape.as_slice() {
        [h, w] => (1, *h, *w),
        [d, h, w] => (*d, *h, *w),
        _ => {
            return Err(SystemError::usage(format!(
                "{}: image has shape {shape:?}; expected 2-D or 3-D",
                path.display()
            )));
        }
    };
    if d == 0 || h == 0 || w == 0 {
        return Err(SystemError::usage(format!(
            "{}: image has an empty shape {shape:?}",
            path.display()
        )));
    }
    admit((d, h, w))?;
    let image = image.into_u8_vec()?;
    Ok((shape, predict_volume(model, &image, (d, h, w), size, BATCH)))
}

/// Writes `label` through core's atomic writer (`out` was checked not to exist: a stop while
/// writing leaves nothing there).
fn write(out: &Path, shape: &[usize], labels: &[u8]) -> SysResult<()> {
    let npy = ferrolab_data::npy::npy_bytes("|u1", shape, false, labels);
    let bytes = npz_bytes(&[("label", npy)], true)
        .map_err(|e| SystemError::runtime(format!("cannot encode {}: {e}", out.display())))?;
    ferrolab_core::run::write_atomic(out, &bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::guard::PROCESS_BASELINE;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fl-predict-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The estimate grows with the volume and the checkpoint's size, and a limit below it is a
    /// usage error (exit 2) that names the volume and the limit, before any label is written.
    #[test]
    fn a_volume_over_the_memory_limit_is_refused_by_name() {
        let spec = super::super::model::AttenUNetSpec {
            in_channels: 1,
            classes: 4,
            widths: vec![4, 8],
            dropout: vec![0.0, 0.0],
            attention_level: Some(1),
            mlp_ratio: 2,
        };
        let small = memory_estimate(&spec, 32, (2, 40, 40));
        let big = memory_estimate(&spec, 32, (200, 400, 400));
        let wider = memory_estimate(&spec, 64, (2, 40, 40));
        assert!(big.bytes > small.bytes + 2 * 200 * 400 * 400 - 2 * 2 * 40 * 40);
        assert!(wider.bytes > small.bytes);
        assert!(small.setting.contains("2×40×40"));
        let model = spec.build(&ferrolab_core::backend::device()).unwrap();
        let meta = checkpoint::Meta {
            version: 1,
            spec: spec.clone(),
            size: 32,
            method: "test".into(),
        };
        let d = scratch("guard");
        let input = d.join("vol.npz");
        let npy = ferrolab_data::npy::npy_bytes("|u1", &[2, 40, 40], false, &[7u8; 3200]);
        std::fs::write(&input, npz_bytes(&[("image", npy)], false).unwrap()).unwrap();
        let e = predict_file_within(&model, &meta, &input, small.bytes + PROCESS_BASELINE - 1)
            .unwrap_err();
        assert_eq!(e.class().exit_code(), 2, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("vol.npz") && msg.contains("2×40×40"), "{msg}");
        let (shape, labels) =
            predict_file_within(&model, &meta, &input, small.bytes + PROCESS_BASELINE).unwrap();
        assert_eq!((shape, labels.len()), (vec![2, 40, 40], 3200));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_mask_replaces_an_old_file_whole_and_leaves_no_temporary() {
        let d = scratch("write");
        let out = d.join("mask.npz");
        std::fs::write(&out, b"old").unwrap();
        write(&out, &[2, 3], &[0, 1, 2, 3, 0, 1]).unwrap();
        let label = Npz::open(&out).unwrap().get("label").unwrap();
        assert_eq!(label.shape, vec![2, 3]);
        let names: Vec<_> = std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
