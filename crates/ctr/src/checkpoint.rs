//! A trained model on disk: `model.safetensors` (weights, over-parameterised APG factors
//! already merged) and `meta.json` (architecture and the field schema with every vocabulary).
//! `ferrolab apg predict --checkpoint DIR < rows.tsv` reads it back.

use crate::error::{CtrError, Result};
use crate::model::{CtrNet, ModelSpec};
use crate::schema::{Encoded, Layout, Schema};
use ferrolab_core::run::{load_checkpoint, save_checkpoint, write_atomic};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;

const FORMAT_VERSION: u32 = 1;

/// Everything except the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointMeta {
    version: u32,
    /// Architecture as served (over-parameterisation merged: `apg.overparam = 0`).
    pub spec: ModelSpec,
    /// Fields in input-column order.
    pub schema: Schema,
    /// Dataset the model was trained on.
    pub dataset: String,
}

/// Saves `model` (merging any over-parameterised APG factors first) with its metadata.
pub fn save(
    model: CtrNet,
    spec: &ModelSpec,
    layout: &Layout,
    dataset: &str,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| CtrError::io(dir, e))?;
    let merged = model.merged();
    save_checkpoint(&merged, &dir.join("model.safetensors"))?;
    let mut spec = spec.clone();
    if let Some(a) = spec.apg.as_mut() {
        a.overparam = 0;
    }
    let meta = CheckpointMeta {
        version: FORMAT_VERSION,
        spec,
        schema: layout.schema().clone(),
        dataset: dataset.into(),
    };
    let text = serde_json::to_string_pretty(&meta).map_err(|e| CtrError::Invalid(e.to_string()))?;
    // meta.json last: its presence marks a complete checkpoint.
    write_atomic(&dir.join("meta.json"), text.as_bytes())?;
    Ok(())
}

/// Scores of a batch of rows, with the unknown categories met per field.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Click probability per row, in input order.
    pub probabilities: Vec<f64>,
    /// `(field, count)` of values mapped to the out-of-vocabulary bucket (non-zero only).
    pub oov: Vec<(String, u64)>,
}

/// A loaded model ready to score rows.
#[derive(Debug)]
pub struct Predictor {
    meta: CheckpointMeta,
    layout: Layout,
    model: CtrNet,
}

impl Predictor {
    /// Loads a folder written by [`save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("meta.json");
        // A missing or unreadable checkpoint is the user's to fix (exit status 2).
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            CtrError::Invalid(format!(
                "{}: {e} (expected a checkpoint folder written by `ferrolab apg`)",
                meta_path.display()
            ))
        })?;
        let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| {
            CtrError::Invalid(format!(
                "{}: not a ferrolab apg checkpoint: {e}",
                meta_path.display()
            ))
        })?;
        if meta.version != FORMAT_VERSION {
            return Err(CtrError::Invalid(format!(
                "{}: checkpoint format {} is not the supported {FORMAT_VERSION}",
                meta_path.display(),
                meta.version
            )));
        }
        let layout = Layout::new(meta.schema.clone())?;
        let dev = ferrolab_core::backend::device();
        let model = load_checkpoint(
            CtrNet::new(&meta.spec, &layout, &dev)?,
            &dir.join("model.safetensors"),
        )?;
        Ok(Predictor {
            meta,
            layout,
            model,
        })
    }

    /// The architecture.
    pub fn spec(&self) -> &ModelSpec {
        &self.meta.spec
    }

    /// The expected columns, tab-separated (also accepted as an optional header line).
    pub fn header(&self) -> String {
        self.meta
            .schema
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join("\t")
    }

    /// Scores tab-separated rows (columns in schema order, multi-hot values joined by `|`,
    /// an optional header line). A malformed row is an error naming its line; an unknown
    /// category goes to its field's out-of-vocabulary bucket and is counted.
    pub fn score(&self, reader: impl BufRead, source_name: &str) -> Result<Scored> {
        let mut enc = Encoded::new(self.layout.slots());
        let mut oov = vec![0u64; self.layout.num_fields()];
        let header = self.header();
        let mut pending_blank: Option<usize> = None;
        for (i, line) in reader.split(b'\n').enumerate() {
            let line_no = i + 1;
            let bytes = line.map_err(|e| CtrError::Row {
                source_name: source_name.into(),
                line: line_no,
                msg: e.to_string(),
            })?;
            let text = String::from_utf8(bytes).map_err(|_| CtrError::Row {
                source_name: source_name.into(),
                line: line_no,
                msg: "not valid UTF-8".into(),
            })?;
            let text = text.trim_end_matches('\r');
            if text.trim().is_empty() {
                pending_blank.get_or_insert(line_no);
                continue;
            }
            if let Some(b) = pending_blank {
                return Err(CtrError::Row {
                    source_name: source_name.into(),
                    line: b,
                    msg: format!("empty row (expected: {})", header.replace('\t', ", ")),
                });
            }
            if line_no == 1 && text == header {
                continue;
            }
            self.layout
                .parse_row(text, &mut enc, &mut oov)
                .map_err(|msg| CtrError::Row {
                    source_name: source_name.into(),
                    line: line_no,
                    msg,
                })?;
        }
        if enc.is_empty() {
            return Err(CtrError::Invalid(format!(
                "{source_name}: no rows to score (expected tab-separated columns: {})",
                header.replace('\t', ", ")
            )));
        }
        let probabilities =
            crate::train::predict_proba(&self.model, &enc, &ferrolab_core::backend::device());
        let oov = self
            .meta
            .schema
            .fields
            .iter()
            .zip(oov)
            .filter(|(_, n)| *n > 0)
            .map(|(f, n)| (f.name.clone(), n))
            .collect();
        Ok(Scored { probabilities, oov })
    }
}
