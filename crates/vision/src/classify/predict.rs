//! `ferrolab classify predict --checkpoint DIR INPUT...`: class of every image in IDX image
//! files and PNG files, one line per image.

use super::checkpoint;
use super::experiment::predict_proba;
use crate::data;
use ferrolab_core::{SysResult, SystemError};
use std::io::Write;
use std::path::PathBuf;

/// The clap command.
pub fn command() -> clap::Command {
    clap::Command::new("predict")
        .about(
            "Classify images: print `file<TAB>index<TAB>label<TAB>class<TAB>probability` per image \
             (IDX image files hold many images, a PNG one)",
        )
        .arg(ferrolab_core::system::checkpoint_arg(
            "A checkpoint folder written by `ferrolab classify` (`<out>/checkpoint`)",
        ))
        .arg(
            clap::Arg::new("inputs")
                .value_name("INPUT")
                .num_args(1..)
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("IDX image files ([n, height, width], plain or gzip) or PNG files, of the size the model was trained on"),
        )
        .arg(ferrolab_core::system::threads_arg())
}

/// Runs it. Every input is read and checked before anything is printed, so a bad file among
/// good ones prints nothing but its error.
pub fn run(m: &clap::ArgMatches) -> SysResult<()> {
    let Some(dir) = m.get_one::<PathBuf>("checkpoint") else {
        return Err(SystemError::usage("predict needs --checkpoint DIR"));
    };
    ferrolab_core::backend::try_init_threads(m.get_one::<usize>("threads").copied())?;
    let inputs: Vec<PathBuf> = m
        .get_many::<PathBuf>("inputs")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    let (net, meta) = checkpoint::load(dir)?;
    let (h, w) = (meta.spec.height, meta.spec.width);
    let mut sets = Vec::with_capacity(inputs.len());
    for p in &inputs {
        sets.push(data::read_images(p, h, w)?);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for (p, set) in inputs.iter().zip(&sets) {
        for (i, probs) in predict_proba(&net, set, meta.normalization, 256)
            .iter()
            .enumerate()
        {
            let (label, prob) = probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or((0, 0.0), |(l, &v)| (l, v));
            let name = meta.class_names.get(label).map_or("?", String::as_str);
            if let Err(e) = writeln!(out, "{}\t{i}\t{label}\t{name}\t{prob:.4}", p.display()) {
                return ferrolab_core::system::stdout_closed(e);
            }
        }
    }
    if let Err(e) = out.flush() {
        return ferrolab_core::system::stdout_closed(e);
    }
    Ok(())
}
