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
        .arg(ferrolab_core::system::threads_arg())
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
    let (model, meta) = checkpoint::load(&ckpt)?;
    let (shape, labels) = predict_file(&model, meta.size, &input)?;
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
    let image = image.into_u8_vec()?;
    Ok((shape, predict_volume(model, &image, (d, h, w), size, 16)))
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

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fl-predict-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
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
