//! What `ferrolab classify` writes to disk.
//!
//! - The **checkpoint** `<out>/checkpoint/` that `classify predict` reads: `model.safetensors`
//!   (the weights, batch-norm statistics included) and `meta.json` (architecture, image size,
//!   normalisation, class names), written atomically, `meta.json` last. Loading checks every
//!   field of `meta.json` against the ranges a configuration may hold and compares every tensor
//!   of the weights file's header with the model before any data is read, so a damaged or
//!   foreign folder is one line naming the file (exit status 2).
//! - The **training state** `<out>/train-state/` that `--resume` continues from, written after
//!   every epoch: `epoch-NNNN/model.bpk` and `epoch-NNNN/optim.bpk` (burn's burnpack records
//!   of the model and of SGD's momentum; burnpack keeps parameter ids, which is what ties the
//!   momentum buffers to their parameters), then `state.json` naming that folder, the epochs
//!   done and the history so far, replaced atomically. A kill at any moment leaves the previous
//!   complete state in force; older epoch folders are removed after the new `state.json`.

use super::model::{Net, NetSpec};
use crate::data::{MAX_SIDE, Normalization};
use ferrolab_core::CoreError;
use ferrolab_core::burn::module::Module;
use ferrolab_core::burn::optim::ModuleOptimizer;
use ferrolab_core::run::{load_checkpoint, save_checkpoint, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Format of `meta.json`.
const FORMAT_VERSION: u32 = 1;
/// Largest `meta.json` read.
const MAX_META_BYTES: u64 = 1 << 20;
/// Most classes a checkpoint may declare.
const MAX_CLASSES: usize = 100_000;
/// Most MLP parameters a checkpoint may declare (1 GiB of f32).
const MAX_MLP_PARAMS: u128 = 1 << 28;

/// Errors of checkpoints and training state: the folder and file at fault and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A checkpoint or state file that is missing, damaged or inconsistent (the user's to fix:
    /// exit status 2).
    #[error("checkpoint {}: {msg}", path.display())]
    Bad {
        /// The file at fault.
        path: PathBuf,
        /// One line.
        msg: String,
    },
    /// Writing failed (exit status 1).
    #[error("{0}")]
    Write(String),
}

impl ferrolab_core::Classify for CheckpointError {
    fn class(&self) -> ferrolab_core::ErrorClass {
        match self {
            CheckpointError::Bad { .. } => ferrolab_core::ErrorClass::Usage,
            CheckpointError::Write(_) => ferrolab_core::ErrorClass::Runtime,
        }
    }
}

fn bad(path: &Path, msg: impl Into<String>) -> CheckpointError {
    CheckpointError::Bad {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

fn from_core(e: CoreError) -> CheckpointError {
    match e {
        CoreError::Checkpoint { path, msg } => CheckpointError::Bad { path, msg },
        other => CheckpointError::Write(other.to_string()),
    }
}

/// Everything `predict` needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    version: u32,
    /// The network.
    pub spec: NetSpec,
    /// Input standardisation of the training run.
    pub normalization: Normalization,
    /// Name of each class index.
    pub class_names: Vec<String>,
}

impl Meta {
    /// Describes a model trained on images standardised by `normalization`.
    pub fn new(spec: NetSpec, normalization: Normalization, class_names: Vec<String>) -> Self {
        Meta {
            version: FORMAT_VERSION,
            spec,
            normalization,
            class_names,
        }
    }

    fn check(&self, path: &Path) -> Result<(), CheckpointError> {
        let s = &self.spec;
        let fail = |msg: String| Err(bad(path, msg));
        if self.version != FORMAT_VERSION {
            return fail(format!(
                "format {} is not the supported {FORMAT_VERSION}",
                self.version
            ));
        }
        if !super::config::arch_ok(&s.arch) {
            return fail(format!("arch `{}` is not a known architecture", s.arch));
        }
        if !(1..=4).contains(&s.channels)
            || !(1..=MAX_SIDE).contains(&s.height)
            || !(1..=MAX_SIDE).contains(&s.width)
        {
            return fail(format!(
                "image {}x{}x{} (CxHxW): channels must be 1..=4 and sides 1..={MAX_SIDE}",
                s.channels, s.height, s.width
            ));
        }
        if !(2..=MAX_CLASSES).contains(&s.classes) || self.class_names.len() != s.classes {
            return fail(format!(
                "classes = {} with {} class names: need 2..={MAX_CLASSES} classes, one name each",
                s.classes,
                self.class_names.len()
            ));
        }
        if s.mlp_hidden.len() > 8 || s.mlp_hidden.iter().any(|w| !(1..=4096).contains(w)) {
            return fail(format!(
                "mlp_hidden = {:?}: at most 8 widths in 1..=4096",
                s.mlp_hidden
            ));
        }
        if s.mlp_params() > MAX_MLP_PARAMS {
            return fail(format!(
                "an MLP of {} parameters is more than a checkpoint may hold",
                s.mlp_params()
            ));
        }
        let n = self.normalization;
        if !(n.mean.is_finite() && n.std.is_finite() && n.std > 0.0) {
            return fail(format!(
                "normalization mean {} std {}: must be finite with std > 0",
                n.mean, n.std
            ));
        }
        Ok(())
    }
}

/// Writes `dir/{model.safetensors, meta.json}`.
pub fn save(dir: &Path, model: &Net, meta: &Meta) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CheckpointError::Write(format!("{}: {e}", dir.display())))?;
    save_checkpoint(model, &dir.join("model.safetensors")).map_err(from_core)?;
    let text = serde_json::to_string_pretty(meta)
        .map_err(|e| CheckpointError::Write(format!("meta.json: {e}")))?;
    write_atomic(&dir.join("meta.json"), text.as_bytes()).map_err(from_core)
}

/// Reads a regular file of at most `max` bytes as text.
fn read_small(path: &Path, max: u64) -> Result<String, CheckpointError> {
    let m = std::fs::metadata(path).map_err(|e| bad(path, e.to_string()))?;
    if !m.is_file() {
        return Err(bad(path, "not a regular file"));
    }
    if m.len() > max {
        return Err(bad(
            path,
            format!("{} bytes; at most {max} expected", m.len()),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| bad(path, e.to_string()))
}

/// Loads a checkpoint folder for inference (on the inference device).
pub fn load(dir: &Path) -> Result<(Net, Meta), CheckpointError> {
    let meta_path = dir.join("meta.json");
    let text = read_small(&meta_path, MAX_META_BYTES)?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| {
        bad(
            &meta_path,
            format!("not a ferrolab classify checkpoint: {e}"),
        )
    })?;
    meta.check(&meta_path)?;
    let weights = dir.join("model.safetensors");
    // Fail on a missing or damaged weights file before building anything.
    ferrolab_core::run::read_safetensors_header(&weights).map_err(from_core)?;
    let device = ferrolab_core::backend::device();
    // Building draws initial weights (overwritten by the load) from burn's shared generator,
    // lazily, when the load first touches each parameter: the guard covers the build and the
    // load, so a training run in another thread keeps its stream.
    let _rng = ferrolab_core::backend::exclusive_rng();
    let net = meta.spec.build(&device).map_err(|e| bad(&meta_path, e))?;
    let net = load_checkpoint(net, &weights).map_err(from_core)?;
    Ok((net, meta))
}

/// One epoch's record, as `metrics.jsonl` has it and the curves plot it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 0-based epoch.
    pub epoch: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Mean training loss.
    pub train_loss: f64,
    /// Training accuracy of the augmented batches as they were seen.
    pub train_accuracy: f64,
    /// Validation accuracy after the epoch (absent without a validation set).
    pub val_accuracy: Option<f64>,
    /// Seconds the epoch took, validation included.
    pub epoch_seconds: f64,
}

/// `train-state/state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainState {
    /// Epochs finished.
    pub epochs_done: usize,
    /// The folder under `train-state/` holding their model and optimizer.
    pub folder: String,
    /// One record per finished epoch.
    pub history: Vec<EpochRecord>,
}

/// The training-state folder of a run folder.
pub fn state_dir(run: &Path) -> PathBuf {
    run.join("train-state")
}

/// Saves the model and optimizer after `state.epochs_done` epochs (see the module page).
pub fn save_state(
    run: &Path,
    model: &Net,
    optim: &ModuleOptimizer,
    state: &TrainState,
) -> Result<(), CheckpointError> {
    let root = state_dir(run);
    let sub = root.join(&state.folder);
    let werr = |p: &Path, e: String| CheckpointError::Write(format!("{}: {e}", p.display()));
    // A folder left by a kill during an earlier save of this same epoch is discarded.
    if sub.exists() {
        std::fs::remove_dir_all(&sub).map_err(|e| werr(&sub, e.to_string()))?;
    }
    std::fs::create_dir_all(&sub).map_err(|e| werr(&sub, e.to_string()))?;
    model
        .clone()
        .save_file(sub.join("model.bpk"))
        .map_err(|e| werr(&sub.join("model.bpk"), e.to_string()))?;
    optim
        .save(sub.join("optim.bpk"))
        .map_err(|e| werr(&sub.join("optim.bpk"), e.to_string()))?;
    let text = serde_json::to_vec_pretty(state).map_err(|e| werr(&root, e.to_string()))?;
    write_atomic(&root.join("state.json"), &text).map_err(from_core)?;
    // Only the folder state.json names is needed from now on.
    if let Ok(entries) = std::fs::read_dir(&root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("epoch-") && name != state.folder {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    Ok(())
}

/// The saved state of an interrupted run, if `run` holds one: the state record, and the model
/// (built by the caller, loaded here) and optimizer continued from it.
pub fn load_state(
    run: &Path,
    model: Net,
    optim: ModuleOptimizer,
) -> Result<Option<(TrainState, Net, ModuleOptimizer)>, CheckpointError> {
    let root = state_dir(run);
    let path = root.join("state.json");
    if !path.exists() {
        return Ok(None);
    }
    let text = read_small(&path, 64 << 20)?;
    let state: TrainState = serde_json::from_str(&text)
        .map_err(|e| bad(&path, format!("not a classify training state: {e}")))?;
    let sane_folder = state.folder.starts_with("epoch-")
        && !state.folder.contains(['/', '\\'])
        && state.folder != "epoch-";
    if !sane_folder || state.history.len() != state.epochs_done {
        return Err(bad(
            &path,
            format!(
                "folder {:?} with {} history records for {} epochs",
                state.folder,
                state.history.len(),
                state.epochs_done
            ),
        ));
    }
    let sub = root.join(&state.folder);
    let model_path = sub.join("model.bpk");
    let optim_path = sub.join("optim.bpk");
    for p in [&model_path, &optim_path] {
        if !p.is_file() {
            return Err(bad(p, "missing (the training state is incomplete)"));
        }
    }
    let model = model
        .try_load_file(&model_path)
        .map_err(|e| bad(&model_path, ferrolab_core::run::first_line(&e.to_string())))?;
    let optim = crate::optim::load_optimizer_record(optim, &optim_path)
        .map_err(|m| bad(&optim_path, &m))?;
    Ok(Some((state, model, optim)))
}
