//! `ferrolab attenscribble synth --out DIR`: the synthetic cardiac set
//! (`data.dataset = "synthetic"`) written in ACDC's layout, so that it can be looked at, fed to
//! `predict`, or used as `data.dir` / `data.val` / `data.test` like the real files:
//! `DIR/train/patientNNN_frame01_slice_K.npz` (2-D slices of patients 21–…),
//! `DIR/val/patientNNN_frame01.npz` (volumes of patients 11–…) and `DIR/test/` (patients 1–…),
//! each with `uint8` `image`, `label` and `scribble`.
//!
//! `--seed S` writes what `ferrolab attenscribble --seed S` generates in memory with
//! `data.dataset = "synthetic"` (both draw from the run's `data.synthetic` seed stream), so a
//! run with `--set data.dataset=acdc --set data.dir=DIR` trains on those same slices, in the
//! same order, and validates on those volumes.

use super::data::{
    SYNTHETIC_TEST_FIRST, SYNTHETIC_TRAIN_FIRST, SYNTHETIC_TRAIN_MAX, SYNTHETIC_VAL_ALL,
    SYNTHETIC_VAL_FIRST, synthetic_patient, synthetic_slice_name, synthetic_volume,
};
use ferrolab_core::{SysResult, SystemError};
use ferrolab_data::npy::npy_bytes;
use ferrolab_data::npz::write_npz;
use std::path::{Path, PathBuf};

/// The clap command.
pub fn command() -> clap::Command {
    let count = |name: &'static str, default: &'static str, help: &'static str| {
        clap::Arg::new(name)
            .long(name)
            .value_name("N")
            .default_value(default)
            .value_parser(clap::value_parser!(usize))
            .help(help)
    };
    clap::Command::new("synth")
        .about("Write generated cardiac volumes with scribbles in ACDC's layout: DIR/train (slices), DIR/val and DIR/test (volumes)")
        .arg(count("train-patients", "80", "Training patients (numbered from 21), written as slices"))
        .arg(count("val-volumes", "10", "Validation volumes (patients from 11)"))
        .arg(count("test-volumes", "10", "Test volumes (patients from 1)"))
        .arg(count("slices", "8", "Slices per volume, base to apex (1..=64)"))
        .arg(
            clap::Arg::new("shape")
                .long("shape")
                .value_name("HxW")
                .default_value("112x96")
                .help("Stored slice shape, each side 32..=1024"),
        )
        .arg(
            clap::Arg::new("seed")
                .long("seed")
                .value_name("N")
                .default_value("0")
                .value_parser(clap::value_parser!(u64))
                .help("The run seed whose generated set to write (as `ferrolab attenscribble --seed N`; another seed, other patients)"),
        )
        .arg(
            clap::Arg::new("out")
                .long("out")
                .value_name("DIR")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("Folder to create (must not exist; written whole or not at all)"),
        )
}

/// `HxW` → (h, w).
fn parse_shape(s: &str) -> SysResult<(usize, usize)> {
    let bad = || SystemError::usage(format!("--shape {s}: expected HxW, e.g. 112x96"));
    let (h, w) = s.split_once(['x', 'X']).ok_or_else(bad)?;
    let h: usize = h.trim().parse().map_err(|_| bad())?;
    let w: usize = w.trim().parse().map_err(|_| bad())?;
    Ok((h, w))
}

/// Runs it.
pub fn run(m: &clap::ArgMatches) -> SysResult<()> {
    let n = |k: &str| m.get_one::<usize>(k).copied().unwrap_or(0);
    let (train, val, test, slices) = (
        n("train-patients"),
        n("val-volumes"),
        n("test-volumes"),
        n("slices"),
    );
    // Patient numbers keep ACDC's roles: 1–10 test, 11–20 validation, 21+ training.
    // Test patients run up to the first validation patient.
    let test_max = (SYNTHETIC_VAL_FIRST - SYNTHETIC_TEST_FIRST) as usize;
    if val > SYNTHETIC_VAL_ALL || test > test_max {
        return Err(SystemError::usage(format!(
            "--val-volumes {val} / --test-volumes {test}: at most {SYNTHETIC_VAL_ALL} and {test_max} (patients 11–20 and 1–10)"
        )));
    }
    if !(1..=SYNTHETIC_TRAIN_MAX).contains(&train) {
        return Err(SystemError::usage(format!(
            "--train-patients {train}: must be in 1..={SYNTHETIC_TRAIN_MAX} (patients 21–999)"
        )));
    }
    let shape = parse_shape(m.get_one::<String>("shape").map_or("", String::as_str))?;
    let master = m.get_one::<u64>("seed").copied().unwrap_or(0);
    let seed = ferrolab_core::seed::derive(master, super::experiment::SYNTHETIC_STREAM);
    let Some(out) = m.get_one::<PathBuf>("out") else {
        return Err(SystemError::usage("attenscribble synth needs --out DIR"));
    };
    // Shape and slice errors before the folder exists.
    ferrolab_data::synthetic_acdc_volume(seed, 0, slices, shape.0, shape.1)
        .map_err(|e| SystemError::usage(format!("--slices / --shape: {e}")))?;
    let files = ferrolab_core::run::fill_fresh_folder(out, |dir| {
        write_set(dir, seed, (train, val, test), slices, shape)
    })?;
    eprintln!(
        "attenscribble synth: {files} files ({train} training patients × {slices} slices, {val} validation and {test} test volumes of {}×{}) in {}",
        shape.0,
        shape.1,
        out.display()
    );
    Ok(())
}

fn members(
    image: &[u8],
    label: &[u8],
    scribble: &[u8],
    shape: &[usize],
) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("image", npy_bytes("|u1", shape, false, image)),
        ("label", npy_bytes("|u1", shape, false, label)),
        ("scribble", npy_bytes("|u1", shape, false, scribble)),
    ]
}

/// Writes the volumes of patients `first, …` (`count`) into `dir`, one at a time (memory: one
/// volume); nothing, not even the folder, when `count` is 0.
fn write_volumes(
    dir: &Path,
    seed: u64,
    (first, count): (u32, usize),
    slices: usize,
    shape: (usize, usize),
) -> SysResult<usize> {
    if count == 0 {
        return Ok(0);
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| SystemError::from(ferrolab_core::CoreError::io(dir, e)))?;
    for k in 0..count {
        let patient = synthetic_patient(first, k)?;
        let x = synthetic_volume(seed, patient, slices, shape)?.volume;
        let m = members(&x.image, &x.label, &x.scribble, &[x.d, x.h, x.w]);
        write_npz(
            &dir.join(format!("patient{patient:03}_frame01.npz")),
            &m,
            true,
        )?;
    }
    Ok(count)
}

/// Writes the set under `dir`, one patient at a time; returns the number of files.
pub fn write_set(
    dir: &Path,
    seed: u64,
    (train, val, test): (usize, usize, usize),
    slices: usize,
    shape: (usize, usize),
) -> SysResult<usize> {
    let mut files = write_volumes(
        &dir.join("val"),
        seed,
        (SYNTHETIC_VAL_FIRST, val),
        slices,
        shape,
    )?;
    files += write_volumes(
        &dir.join("test"),
        seed,
        (SYNTHETIC_TEST_FIRST, test),
        slices,
        shape,
    )?;
    let tdir = dir.join("train");
    std::fs::create_dir_all(&tdir)
        .map_err(|e| SystemError::from(ferrolab_core::CoreError::io(&tdir, e)))?;
    for k in 0..train {
        let patient = synthetic_patient(SYNTHETIC_TRAIN_FIRST, k)?;
        let v = synthetic_volume(seed, patient, slices, shape)?.volume;
        for j in 0..v.d {
            let s = v.slice(j);
            let m = members(&s.image, &s.label, &s.scribble, &[s.h, s.w]);
            write_npz(&tdir.join(synthetic_slice_name(patient, j)), &m, true)?;
            files += 1;
        }
    }
    Ok(files)
}
