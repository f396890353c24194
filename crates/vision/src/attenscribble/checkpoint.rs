//! The checkpoint `attenscribble predict` reads: `model.safetensors` (weights with batch-norm
//! statistics) and `meta.json` (the network and the training size), written atomically with
//! `meta.json` last. Loading checks `meta.json` and the weights file's header before anything
//! is built, so a damaged or foreign folder is one line naming the file (exit status 2).

use super::model::{AttenUNet, AttenUNetSpec};
use ferrolab_core::run::{load_checkpoint, save_checkpoint, write_atomic};
use ferrolab_core::{CoreError, SysResult, SystemError};
use serde::{Deserialize, Serialize};
use std::path::Path;

const FORMAT_VERSION: u32 = 1;

/// Everything `predict` needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub version: u32,
    pub spec: AttenUNetSpec,
    /// Training size: slices are resized to `size × size` before the network.
    pub size: usize,
    /// Which method trained it.
    pub method: String,
}

impl Meta {
    fn check(&self, path: &Path) -> SysResult<()> {
        let bad = |m: String| {
            Err(SystemError::usage(format!(
                "checkpoint {}: {m}",
                path.display()
            )))
        };
        if self.version != FORMAT_VERSION {
            return bad(format!(
                "format {} is not the supported {FORMAT_VERSION}",
                self.version
            ));
        }
        self.spec.check().or_else(bad)?;
        let m = self.spec.size_multiple();
        if !(m..=1024).contains(&self.size) || !self.size.is_multiple_of(m) {
            return bad(format!(
                "input size {} is not a multiple of {m} in {m}..=1024",
                self.size
            ));
        }
        if let Some(l) = self.spec.attention_level {
            let g = self.size >> l;
            if g * g > 4096 {
                return bad(format!(
                    "input size {} gives a {g}×{g} attention grid (at most 64×64)",
                    self.size
                ));
            }
        }
        Ok(())
    }
}

fn from_core(e: CoreError) -> SystemError {
    match e {
        CoreError::Checkpoint { path, msg } => {
            SystemError::usage(format!("checkpoint {}: {msg}", path.display()))
        }
        other => SystemError::runtime(other.to_string()),
    }
}

/// Writes `dir/{model.safetensors, meta.json}`.
pub fn save(dir: &Path, model: &AttenUNet, meta: &Meta) -> SysResult<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SystemError::runtime(format!("{}: {e}", dir.display())))?;
    save_checkpoint(model, &dir.join("model.safetensors")).map_err(from_core)?;
    let text =
        serde_json::to_string_pretty(meta).map_err(|e| SystemError::runtime(e.to_string()))?;
    write_atomic(&dir.join("meta.json"), text.as_bytes()).map_err(from_core)
}

/// A meta record for `spec` trained at `size` by `method`.
pub fn meta(spec: AttenUNetSpec, size: usize, method: &str) -> Meta {
    Meta {
        version: FORMAT_VERSION,
        spec,
        size,
        method: method.into(),
    }
}

/// Loads a checkpoint folder on the inference device.
pub fn load(dir: &Path) -> SysResult<(AttenUNet, Meta)> {
    let meta_path = dir.join("meta.json");
    let md = std::fs::metadata(&meta_path)
        .map_err(|e| SystemError::usage(format!("checkpoint {}: {e}", meta_path.display())))?;
    if !md.is_file() || md.len() > 1 << 20 {
        return Err(SystemError::usage(format!(
            "checkpoint {}: not a regular file of at most 1 MiB",
            meta_path.display()
        )));
    }
    let text = std::fs::read_to_string(&meta_path)
        .map_err(|e| SystemError::usage(format!("checkpoint {}: {e}", meta_path.display())))?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| {
        SystemError::usage(format!(
            "checkpoint {}: not an attenscribble checkpoint: {e}",
            meta_path.display()
        ))
    })?;
    meta.check(&meta_path)?;
    let weights = dir.join("model.safetensors");
    ferrolab_core::run::read_safetensors_header(&weights).map_err(from_core)?;
    let device = ferrolab_core::backend::device();
    // burn draws a parameter's initial value lazily, when the load first touches it, from the
    // process-wide generator: the guard covers the build and the load, so a training run in
    // another thread keeps its stream.
    let _rng = ferrolab_core::backend::exclusive_rng();
    let net = meta.spec.build(&device).map_err(SystemError::usage)?;
    let net = load_checkpoint(net, &weights).map_err(from_core)?;
    Ok((net, meta))
}
