//! The checkpoint `adod predict` reads: `<out>/checkpoint/model.safetensors` (ADOD's weights,
//! batch-norm statistics included, seed 0) and `meta.json` (the network configuration),
//! `meta.json` written last and atomically. Loading checks `meta.json`'s ranges and the
//! weights file's header against the model before building, so a damaged or foreign folder is
//! one line naming the file (exit status 2).
//!
//! Format 2 names the detector's tensors `yolo.*` (ADOD composes
//! [`YoloTiny`](crate::models::yolo::YoloTiny)); format 1, written before, named them at the
//! top level (`backbone.0.*`, `neck.*`, …). A format-1 folder is still read, its detector
//! tensors renamed on load; the values, and so the detections, are the same.

use super::model::{AdodNet, AdodNetConfig};
use ferrolab_core::run::{load_checkpoint, save_checkpoint, write_atomic};
use ferrolab_core::{CoreError, SysResult, SystemError};
use ferrolab_data::underwater::CATEGORIES;
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT_VERSION: u32 = 2;
/// Format 1's detector modules, at the top level of the file.
const V1_DETECTOR: [&str; 7] = [
    "backbone", "neck", "head32", "out32", "route", "head16", "out16",
];
const MAX_META_BYTES: u64 = 1 << 20;

/// `meta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub version: u32,
    pub net: AdodNetConfig,
    pub categories: Vec<String>,
}

fn bad(path: &Path, msg: impl std::fmt::Display) -> SystemError {
    SystemError::usage(format!("checkpoint {}: {msg}", path.display()))
}

/// A damaged weights file is the user's input to fix (exit 2), unlike core's default for
/// checkpoints, which treats them as our own files (a failure while running).
fn user_checkpoint(e: CoreError) -> SystemError {
    match e {
        CoreError::Checkpoint { path, msg } => bad(&path, msg),
        other => other.into(),
    }
}

/// Writes the checkpoint folder `dir`.
pub fn save(dir: &Path, net: &AdodNet, cfg: &AdodNetConfig) -> SysResult<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SystemError::runtime(format!("{}: {e}", dir.display())))?;
    save_checkpoint(net, &dir.join("model.safetensors"))?;
    let meta = Meta {
        version: FORMAT_VERSION,
        net: cfg.clone(),
        categories: CATEGORIES.iter().map(|c| (*c).to_string()).collect(),
    };
    let text = serde_json::to_string_pretty(&meta)
        .map_err(|e| SystemError::runtime(format!("meta.json: {e}")))?;
    write_atomic(&dir.join("meta.json"), text.as_bytes())?;
    Ok(())
}

/// Loads a checkpoint folder on the inference device.
pub fn load(dir: &Path) -> SysResult<(AdodNet, Meta)> {
    let meta_path = dir.join("meta.json");
    let m = std::fs::metadata(&meta_path).map_err(|e| bad(&meta_path, e))?;
    if !m.is_file() || m.len() > MAX_META_BYTES {
        return Err(bad(&meta_path, "not a regular file of at most 1 MiB"));
    }
    let text = std::fs::read_to_string(&meta_path).map_err(|e| bad(&meta_path, e))?;
    let meta: Meta = serde_json::from_str(&text)
        .map_err(|e| bad(&meta_path, format!("not an adod checkpoint: {e}")))?;
    let y = &meta.net.yolo;
    if meta.version != FORMAT_VERSION && meta.version != 1 {
        return Err(bad(
            &meta_path,
            format!(
                "format {} is not one this version reads (1 or {FORMAT_VERSION}); written by another ferrolab version?",
                meta.version
            ),
        ));
    }
    if y.input_size > 1024
        || y.in_channels != 3
        || y.classes != CATEGORIES.len()
        || meta.categories.len() != y.classes
        || y.widths.iter().any(|w| *w > 1024)
        || y.widths
            .first()
            .map_or(0, |w| w * y.input_size * y.input_size)
            > 1 << 24
        || meta.net.domains > 64
    {
        // The last bound keeps the first feature map (the largest) under 64 MiB per image.
        return Err(bad(
            &meta_path,
            "input ≤ 1024 px, 3 channels, 5 categories, widths ≤ 1024 (first width × input² ≤ 2^24) and ≤ 64 domains expected",
        ));
    }
    y.check().map_err(|e| bad(&meta_path, e))?;
    let weights = dir.join("model.safetensors");
    let header = ferrolab_core::run::read_safetensors_header(&weights).map_err(user_checkpoint)?;
    let device = ferrolab_core::backend::device();
    // burn draws a parameter's initial value lazily, when the load first touches it, from the
    // process-wide generator: the guard covers the build and the load, so a training run in
    // another thread keeps its stream.
    let _rng = ferrolab_core::backend::exclusive_rng();
    let net = AdodNet::new(&meta.net, &device).map_err(|e| bad(&meta_path, e))?;
    let net = if meta.version == 1 {
        load_v1(net, &weights, header)?
    } else {
        load_checkpoint(net, &weights).map_err(user_checkpoint)?
    };
    Ok((net, meta))
}

/// Loads a format-1 weights file: the same checks as `load_checkpoint` (names and shapes
/// against the model before any data is read, every tensor present) on the renamed keys.
fn load_v1(
    net: AdodNet,
    weights: &Path,
    header: std::collections::BTreeMap<String, ferrolab_core::run::TensorInfo>,
) -> SysResult<AdodNet> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    let renamed = header.into_iter().map(|(k, v)| (v1_name(&k), v)).collect();
    let expected = net
        .collect(None, None, false)
        .iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    ferrolab_core::run::compare_tensor_shapes(weights, &renamed, &expected, "the model")
        .map_err(user_checkpoint)?;
    let mut net = net;
    let mut store = SafetensorsStore::from_file(weights)
        .with_key_remapping(format!(r"^({})\.", V1_DETECTOR.join("|")), "yolo.$1.")
        .allow_partial(true)
        .validate(false);
    let res = net
        .load_from(&mut store)
        .map_err(|e| bad(weights, ferrolab_core::run::first_line(&e.to_string())))?;
    if let Some(e) = res.errors.first() {
        return Err(bad(weights, ferrolab_core::run::first_line(&e.to_string())));
    }
    if let Some(m) = res.missing.first() {
        return Err(bad(weights, format!("tensor {} is missing", m.0)));
    }
    Ok(net)
}

/// Format 1's name of a tensor → format 2's (what the remapping in `load_v1` does).
fn v1_name(k: &str) -> String {
    let top = k.split('.').next().unwrap_or("");
    if V1_DETECTOR.contains(&top) {
        format!("yolo.{k}")
    } else {
        k.to_string()
    }
}
