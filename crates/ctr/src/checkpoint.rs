//! A trained model on disk: `model.safetensors` (weights, over-parameterised APG factors
//! already merged) and `meta.json` (architecture and the field schema with every vocabulary).
//! `ferrolab apg predict --checkpoint DIR < rows.tsv` reads it back.

use crate::error::{CtrError, Result};
use crate::model::{BaseModel, CtrNet, ModelSpec};
use crate::schema::{Encoded, Layout, Schema};
use ferrolab_core::run::{
    compare_tensor_shapes, load_checkpoint, read_safetensors_header, save_checkpoint, write_atomic,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

/// Largest `meta.json` read (it holds every category of every field).
const MAX_META_BYTES: u64 = 1 << 30;
/// Most values a multi-hot field may keep per row in a checkpoint.
const MAX_FIELD_LEN: usize = 4096;

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

impl CheckpointMeta {
    /// Checks the architecture against the config's ranges (`[model]`, `[apg]`), so nothing is
    /// built from a damaged `meta.json`.
    fn check(&self, meta_path: &Path) -> Result<()> {
        let bad = |msg: String| Err(CtrError::checkpoint(meta_path, msg));
        let s = &self.spec;
        if !(1..=512).contains(&s.embed_dim) {
            return bad(format!(
                "spec.embed_dim = {}: must be in 1..=512",
                s.embed_dim
            ));
        }
        if s.hidden.is_empty()
            || s.hidden.len() > 16
            || s.hidden.iter().any(|h| !(1..=4096).contains(h))
        {
            return bad(format!(
                "spec.hidden = {:?}: must be 1..=16 widths, each in 1..=4096",
                s.hidden
            ));
        }
        if s.cross_layers > 16 {
            return bad(format!(
                "spec.cross_layers = {}: must be in 0..=16",
                s.cross_layers
            ));
        }
        if let Some(a) = &s.apg {
            if !(1..=256).contains(&a.rank) {
                return bad(format!("spec.apg.rank = {}: must be in 1..=256", a.rank));
            }
            if a.overparam != 0 {
                return bad(format!(
                    "spec.apg.overparam = {}: a checkpoint holds merged factors (0)",
                    a.overparam
                ));
            }
            if !(1..=4096).contains(&a.hyper_hidden) {
                return bad(format!(
                    "spec.apg.hyper_hidden = {}: must be in 1..=4096",
                    a.hyper_hidden
                ));
            }
        }
        if let Some(f) = self
            .schema
            .fields
            .iter()
            .find(|f| !(1..=MAX_FIELD_LEN).contains(&f.max_len))
        {
            return bad(format!(
                "schema field `{}`: max_len = {} must be in 1..={MAX_FIELD_LEN}",
                f.name, f.max_len
            ));
        }
        Ok(())
    }

    /// The shape of every tensor of the model described here, by the name burn-store gives it,
    /// computed without building the model (a test checks it against built models).
    fn expected_shapes(&self, layout: &Layout) -> BTreeMap<String, Vec<usize>> {
        let s = &self.spec;
        let d = s.embed_dim;
        let rows = layout.rows();
        let flat = layout.num_fields() * d;
        let mut m = BTreeMap::new();
        let mut put = |k: String, v: Vec<usize>| {
            m.insert(k, v);
        };
        put("emb.weight".into(), vec![rows, d]);
        put("lin.weight".into(), vec![rows, 1]);
        put("bias".into(), vec![1]);
        let mut width = flat;
        for (i, &h) in s.hidden.iter().enumerate() {
            match &s.apg {
                Some(a) => {
                    let k = a.rank.max(1);
                    let group = if a.condition.uses_group() {
                        a.condition_fields.len() * d
                    } else {
                        0
                    };
                    let c = a.condition.condition_dim(width, group);
                    let gen_out = k * k + if a.generate_bias { h } else { 0 };
                    put(format!("apg.{i}.u.0"), vec![width, k]);
                    put(format!("apg.{i}.v.0"), vec![k, h]);
                    put(format!("apg.{i}.bias"), vec![h]);
                    put(format!("apg.{i}.hyper_in.weight"), vec![c, a.hyper_hidden]);
                    put(format!("apg.{i}.hyper_in.bias"), vec![a.hyper_hidden]);
                    put(
                        format!("apg.{i}.hyper_out.weight"),
                        vec![a.hyper_hidden, gen_out],
                    );
                    put(format!("apg.{i}.hyper_out.bias"), vec![gen_out]);
                }
                None => {
                    put(format!("plain.{i}.weight"), vec![width, h]);
                    put(format!("plain.{i}.bias"), vec![h]);
                }
            }
            width = h;
        }
        match s.base {
            BaseModel::WideDeep | BaseModel::Deepfm => {
                put("deep_out.weight".into(), vec![width, 1]);
                put("deep_out.bias".into(), vec![1]);
            }
            BaseModel::Dcnv2 => {
                for j in 0..s.cross_layers {
                    put(format!("cross.{j}.w.weight"), vec![flat, flat]);
                    put(format!("cross.{j}.w.bias"), vec![flat]);
                }
                put("head.weight".into(), vec![flat + width, 1]);
                put("head.bias".into(), vec![1]);
            }
        }
        m
    }
}

/// Reads `meta.json`: a missing part, one that is not a regular file (a FIFO would block) or
/// one larger than [`MAX_META_BYTES`] is a checkpoint error.
fn read_meta(path: &Path) -> Result<String> {
    let hint = "(expected a checkpoint folder written by `ferrolab apg`)";
    let m =
        std::fs::metadata(path).map_err(|e| CtrError::checkpoint(path, format!("{e} {hint}")))?;
    if !m.is_file() {
        return Err(CtrError::checkpoint(
            path,
            format!("not a regular file {hint}"),
        ));
    }
    if m.len() > MAX_META_BYTES {
        return Err(CtrError::checkpoint(
            path,
            format!(
                "{} bytes is more than the {MAX_META_BYTES} a meta.json may hold",
                m.len()
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| CtrError::checkpoint(path, e.to_string()))
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
        // A missing, unreadable or damaged checkpoint is the user's to fix (exit status 2).
        let text = read_meta(&meta_path)?;
        let meta: CheckpointMeta = serde_json::from_str(&text).map_err(|e| {
            CtrError::checkpoint(&meta_path, format!("not a ferrolab apg checkpoint: {e}"))
        })?;
        if meta.version != FORMAT_VERSION {
            return Err(CtrError::checkpoint(
                &meta_path,
                format!(
                    "checkpoint format {} is not the supported {FORMAT_VERSION}",
                    meta.version
                ),
            ));
        }
        meta.check(&meta_path)?;
        let layout = Layout::new(meta.schema.clone()).map_err(|e| match e {
            CtrError::Invalid(msg) => CtrError::checkpoint(&meta_path, msg),
            other => other,
        })?;
        // Every shape is compared with the weights file's header before anything is built, so
        // a meta.json describing a huge model fails here, not in an allocation.
        let weights = dir.join("model.safetensors");
        let header = read_safetensors_header(&weights).map_err(CtrError::from_load)?;
        compare_tensor_shapes(
            &weights,
            &header,
            &meta.expected_shapes(&layout),
            "meta.json",
        )
        .map_err(CtrError::from_load)?;
        let dev = ferrolab_core::backend::device();
        let net = CtrNet::new(&meta.spec, &layout, &dev).map_err(|e| match e {
            CtrError::Invalid(msg) => CtrError::checkpoint(&meta_path, msg),
            other => other,
        })?;
        let model = load_checkpoint(net, &weights).map_err(CtrError::from_load)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apg::ConditionMode;
    use crate::model::ApgSpec;
    use crate::schema::Field;
    use burn::store::ModuleSnapshot;

    #[test]
    fn expected_shapes_are_those_of_the_built_models() {
        let schema = Schema {
            fields: vec![
                Field::categorical("a", vec!["x".into(), "y".into()]),
                Field::categorical("b", vec!["u".into(), "v".into(), "w".into()]),
            ],
        };
        let layout = Layout::new(schema.clone()).unwrap();
        let dev = ferrolab_core::backend::device();
        for base in [BaseModel::WideDeep, BaseModel::Deepfm, BaseModel::Dcnv2] {
            for (condition, bias) in [
                (None, true),
                (Some(ConditionMode::SelfWise), true),
                (Some(ConditionMode::GroupWise), false),
                (Some(ConditionMode::MixWise), true),
            ] {
                let spec = ModelSpec {
                    base,
                    embed_dim: 3,
                    hidden: vec![5, 4],
                    cross_layers: 2,
                    apg: condition.map(|condition| ApgSpec {
                        rank: 2,
                        overparam: 0,
                        condition,
                        condition_fields: vec!["b".into()],
                        hyper_hidden: 6,
                        generate_bias: bias,
                    }),
                };
                let meta = CheckpointMeta {
                    version: FORMAT_VERSION,
                    spec: spec.clone(),
                    schema: schema.clone(),
                    dataset: "t".into(),
                };
                let built: BTreeMap<String, Vec<usize>> = CtrNet::new(&spec, &layout, &dev)
                    .unwrap()
                    .collect(None, None, false)
                    .into_iter()
                    .map(|t| (t.name.clone(), t.shape.to_vec()))
                    .collect();
                assert_eq!(meta.expected_shapes(&layout), built, "{spec:?}");
            }
        }
    }
}
