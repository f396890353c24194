//! A trained classifier on disk: `model.safetensors` (weights), `vocab.txt` (one token per
//! line, line i = index i) and `meta.json` (architecture, classes, tokenizer settings), all
//! written atomically. `ferrolab secnn predict --checkpoint DIR` reads it back.

use crate::config::SecnnConfig;
use crate::error::{Result, TextError};
use crate::models::{ConvEncoderConfig, KimCnn, Secnn, SentenceClassifier};
use crate::tokenize::{Vocab, tokenize};
use crate::train::{Encoded, predict_proba};
use ferrolab_core::run::{
    compare_tensor_shapes, load_checkpoint, read_safetensors_header, save_checkpoint, write_atomic,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Largest `meta.json` read (ours are under a kilobyte plus 11 bytes per class).
const MAX_META_BYTES: u64 = 16 << 20;
/// Upper bounds on a checkpoint's architecture, as in `[model]` of the config where it has one
/// (embedding width, filter widths) and generous where it has none (maps, classes), so that a
/// damaged `meta.json` is refused before anything is built. Allocation is bounded separately:
/// every shape is compared with the weights file's header before the model is built.
const MAX_EMBED_DIM: usize = 2048;
const MAX_WIDTH: usize = 15;
const MAX_WIDTHS: usize = 16;
const MAX_MAPS: usize = 4096;
const MAX_CLASSES: usize = 1 << 20;

// 2: the convolution is stored as stacked shift matrices `[E, F·Σk]` (was a masked unfold weight).
const FORMAT_VERSION: u32 = 2;

/// Which classifier a checkpoint holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The Kim (2014) baseline.
    KimCnn,
    /// SECNN.
    Secnn,
}

impl ModelKind {
    /// Name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::KimCnn => "kim_cnn",
            ModelKind::Secnn => "secnn",
        }
    }
}

/// Everything except the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    version: u32,
    /// The classifier.
    pub kind: ModelKind,
    embed_dim: usize,
    widths: Vec<usize>,
    maps: usize,
    dropout: f64,
    se_reduction: usize,
    max_len: usize,
    /// Number of classes.
    pub classes: usize,
    /// The label in the data of each class index (`class_map[i]` is what class `i` was called
    /// in the training file); empty in checkpoints written before labels were remapped, where
    /// class `i` is label `i`.
    #[serde(default)]
    class_map: Vec<u32>,
    #[serde(skip)]
    vocab: Option<Vocab>,
}

impl Checkpoint {
    /// Describes a model trained with `cfg`.
    pub fn new(kind: ModelKind, cfg: &SecnnConfig, classes: usize, vocab: Vocab) -> Self {
        Checkpoint {
            version: FORMAT_VERSION,
            kind,
            embed_dim: cfg.model.embed_dim,
            widths: cfg.model.widths.clone(),
            maps: cfg.model.maps,
            dropout: cfg.model.dropout,
            se_reduction: cfg.model.se_reduction,
            max_len: cfg.data.max_len,
            classes,
            class_map: Vec::new(),
            vocab: Some(vocab),
        }
    }

    /// Records the data label of each class index (see [`Predictor::predict`]).
    pub fn with_class_map(mut self, class_map: Vec<u32>) -> Self {
        self.class_map = class_map;
        self
    }

    /// Checks every field against the ranges a config may hold, so that nothing is built from
    /// a damaged `meta.json` (dropout 1, an empty width list or a zero width panic in burn).
    fn check(&self, meta_path: &Path) -> Result<()> {
        let bad = |msg: String| Err(TextError::checkpoint(meta_path, msg));
        if self.version != FORMAT_VERSION {
            return bad(format!(
                "checkpoint format {} is not the supported {FORMAT_VERSION}",
                self.version
            ));
        }
        if !(1..=MAX_EMBED_DIM).contains(&self.embed_dim) {
            return bad(format!(
                "embed_dim = {}: must be in 1..={MAX_EMBED_DIM}",
                self.embed_dim
            ));
        }
        if self.widths.is_empty()
            || self.widths.len() > MAX_WIDTHS
            || self.widths.iter().any(|w| !(1..=MAX_WIDTH).contains(w))
        {
            return bad(format!(
                "widths = {:?}: must be 1..={MAX_WIDTHS} widths, each in 1..={MAX_WIDTH}",
                self.widths
            ));
        }
        if !(1..=MAX_MAPS).contains(&self.maps) {
            return bad(format!("maps = {}: must be in 1..={MAX_MAPS}", self.maps));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout = {}: must be in [0, 1)", self.dropout));
        }
        if self.se_reduction == 0 {
            return bad("se_reduction = 0: must be >= 1".into());
        }
        if !(2..=MAX_CLASSES).contains(&self.classes) {
            return bad(format!(
                "classes = {}: must be in 2..={MAX_CLASSES}",
                self.classes
            ));
        }
        if !self.class_map.is_empty()
            && (self.class_map.len() != self.classes
                || self.class_map.windows(2).any(|w| w[0] >= w[1]))
        {
            return bad(format!(
                "class_map must list {} distinct labels in increasing order, found {} entries",
                self.classes,
                self.class_map.len()
            ));
        }
        Ok(())
    }

    /// The shape of every tensor the model described here has, by the name burn-store gives it,
    /// computed without building the model (a test checks it against built models).
    fn expected_shapes(&self, vocab: usize) -> BTreeMap<String, Vec<usize>> {
        let (e, f) = (self.embed_dim, self.maps);
        let c = self.widths.len() * f;
        let taps: usize = self.widths.iter().sum();
        let mut m: BTreeMap<String, Vec<usize>> = [
            ("encoder.embedding.weight", vec![vocab, e]),
            ("encoder.weight", vec![e, f * taps]),
            ("encoder.bias", vec![c]),
            ("output.weight", vec![c, self.classes]),
            ("output.bias", vec![self.classes]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        if self.kind == ModelKind::Secnn {
            let h = (c / self.se_reduction).max(1);
            for (k, v) in [
                ("se.fc1.weight", vec![c, h]),
                ("se.fc1.bias", vec![h]),
                ("se.fc2.weight", vec![h, c]),
                ("se.fc2.bias", vec![c]),
            ] {
                m.insert(k.to_string(), v);
            }
        }
        m
    }

    /// Writes `dir/{model.safetensors, vocab.txt, meta.json}`.
    pub fn save<M: SentenceClassifier>(&self, model: &M, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| TextError::io(dir, e))?;
        save_checkpoint(model, &dir.join("model.safetensors"))?;
        let vocab = self
            .vocab
            .as_ref()
            .map(|v| v.tokens().join("\n"))
            .unwrap_or_default();
        write_atomic(&dir.join("vocab.txt"), vocab.as_bytes())?;
        let meta =
            serde_json::to_string_pretty(self).map_err(|e| TextError::Invalid(e.to_string()))?;
        // meta.json last: its presence marks a complete checkpoint.
        write_atomic(&dir.join("meta.json"), meta.as_bytes())?;
        Ok(())
    }

    fn encoder(&self) -> ConvEncoderConfig {
        ConvEncoderConfig::new(self.vocab.as_ref().map_or(2, Vocab::len))
            .with_embed_dim(self.embed_dim)
            .with_widths(self.widths.clone())
            .with_maps(self.maps)
    }
}

/// A loaded classifier ready to predict.
#[derive(Debug)]
pub struct Predictor {
    meta: Checkpoint,
    vocab: Vocab,
    model: Loaded,
}

#[derive(Debug)]
enum Loaded {
    Kim(Box<KimCnn>),
    Secnn(Box<Secnn>),
}

impl Predictor {
    /// Loads a checkpoint folder written by [`Checkpoint::save`].
    ///
    /// `meta.json` is checked like a config, and the shape of every tensor in
    /// `model.safetensors`'s header is compared with the shapes `meta.json` and `vocab.txt`
    /// describe before the model is built, so a damaged or mismatched folder is one line
    /// naming the file (and the tensor with both shapes), of the usage class (exit status 2).
    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("meta.json");
        let text = read_part(&meta_path, Some(MAX_META_BYTES))?;
        let mut meta: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            TextError::checkpoint(&meta_path, format!("not a ferrolab text checkpoint: {e}"))
        })?;
        meta.check(&meta_path)?;
        let vocab_path = dir.join("vocab.txt");
        let tokens: Vec<String> = read_part(&vocab_path, None)?
            .split('\n')
            .map(String::from)
            .collect();
        if tokens.len() < 2 {
            return Err(TextError::checkpoint(
                &vocab_path,
                "vocabulary is truncated",
            ));
        }
        let vocab = Vocab::from_tokens(tokens);
        meta.vocab = Some(vocab.clone());
        let weights = dir.join("model.safetensors");
        let header = read_safetensors_header(&weights).map_err(TextError::from_load)?;
        let expected = meta.expected_shapes(vocab.len());
        compare_tensor_shapes(&weights, &header, &expected, "meta.json with vocab.txt")
            .map_err(TextError::from_load)?;
        let dev = ferrolab_core::backend::device();
        let enc = meta.encoder();
        // Building the model draws initial weights (overwritten by the load) from burn's
        // process-wide generator; holding the experiment lock keeps a training run in another
        // thread of this process reproducible.
        let _rng = ferrolab_core::backend::exclusive_rng();
        let model = match meta.kind {
            ModelKind::KimCnn => Loaded::Kim(Box::new(
                load_checkpoint(
                    KimCnn::new(&enc, meta.classes, meta.dropout, &dev),
                    &weights,
                )
                .map_err(TextError::from_load)?,
            )),
            ModelKind::Secnn => Loaded::Secnn(Box::new(
                load_checkpoint(
                    Secnn::new(&enc, meta.classes, meta.dropout, meta.se_reduction, &dev),
                    &weights,
                )
                .map_err(TextError::from_load)?,
            )),
        };
        Ok(Predictor { meta, vocab, model })
    }

    /// The data label of each class index, as [`predict`](Self::predict) reports them.
    pub fn labels(&self) -> Vec<u32> {
        if self.meta.class_map.is_empty() {
            (0..self.meta.classes)
                .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
                .collect()
        } else {
            self.meta.class_map.clone()
        }
    }

    /// Which model this is.
    pub fn kind(&self) -> ModelKind {
        self.meta.kind
    }

    /// `(label, probability of that label)` for each sentence; the label is the one the
    /// training file used (the checkpoint's class map), not the class index.
    pub fn predict(&self, sentences: &[String]) -> Vec<(usize, f32)> {
        let data = Encoded {
            ids: sentences
                .iter()
                .map(|s| self.vocab.encode(&tokenize(s), self.meta.max_len))
                .collect(),
            labels: vec![0; sentences.len()],
        };
        let min_len = self.meta.widths.iter().copied().max().unwrap_or(1);
        let dev = ferrolab_core::backend::device();
        let probs = match &self.model {
            Loaded::Kim(m) => predict_proba(m.as_ref(), &data, min_len, &dev),
            Loaded::Secnn(m) => predict_proba(m.as_ref(), &data, min_len, &dev),
        };
        probs
            .iter()
            .map(|p| {
                let (i, &v) = p
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .unwrap_or((0, &0.0));
                let label = self.meta.class_map.get(i).map_or(i, |&l| l as usize);
                (label, v)
            })
            .collect()
    }
}

/// Reads one part of a checkpoint folder: a missing part, a part that is not a regular file (a
/// FIFO would block, a device never end) or one larger than `max` bytes is a checkpoint error.
fn read_part(path: &Path, max: Option<u64>) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| TextError::checkpoint(path, e.to_string()))?;
    if !meta.is_file() {
        return Err(TextError::checkpoint(path, "not a regular file"));
    }
    if let Some(max) = max
        && meta.len() > max
    {
        return Err(TextError::checkpoint(
            path,
            format!(
                "{} bytes is more than the {max} a checkpoint part may hold",
                meta.len()
            ),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| TextError::checkpoint(path, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::burn::store::ModuleSnapshot;

    #[test]
    fn expected_shapes_are_those_of_the_built_models() {
        // Builds models: hold burn's global generator so that seeded tests beside it are not disturbed.
        let _rng = ferrolab_core::backend::exclusive_rng();
        let mut cfg = SecnnConfig::default();
        cfg.model.embed_dim = 5;
        cfg.model.widths = vec![2, 3];
        cfg.model.maps = 7;
        cfg.model.se_reduction = 3;
        let vocab = Vocab::from_tokens((0..11).map(|i| format!("w{i}")).collect());
        let dev = ferrolab_core::backend::device();
        for kind in [ModelKind::KimCnn, ModelKind::Secnn] {
            let meta = Checkpoint::new(kind, &cfg, 4, vocab.clone());
            let enc = meta.encoder();
            let built: BTreeMap<String, Vec<usize>> = match kind {
                ModelKind::KimCnn => KimCnn::new(&enc, 4, 0.5, &dev).collect(None, None, false),
                ModelKind::Secnn => Secnn::new(&enc, 4, 0.5, 3, &dev).collect(None, None, false),
            }
            .into_iter()
            .map(|t| (t.name.clone(), t.shape.to_vec()))
            .collect();
            assert_eq!(meta.expected_shapes(11), built, "{kind:?}");
        }
    }
}
