//! A trained classifier on disk: `model.safetensors` (weights), `vocab.txt` (one token per
//! line, line i = index i) and `meta.json` (architecture, classes, tokenizer settings), all
//! written atomically. `ferrolab secnn predict --checkpoint DIR` reads it back.

use crate::config::SecnnConfig;
use crate::error::{Result, TextError};
use crate::models::{ConvEncoderConfig, KimCnn, Secnn, SentenceClassifier};
use crate::tokenize::{Vocab, tokenize};
use crate::train::{Encoded, predict_proba};
use ferrolab_core::run::{load_checkpoint, save_checkpoint, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
            vocab: Some(vocab),
        }
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
    pub fn load(dir: &Path) -> Result<Self> {
        let meta_path = dir.join("meta.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| TextError::io(&meta_path, e))?;
        let mut meta: Checkpoint = serde_json::from_str(&text).map_err(|e| {
            TextError::bad(
                &meta_path,
                e.line(),
                format!("not a ferrolab text checkpoint: {e}"),
            )
        })?;
        if meta.version != FORMAT_VERSION {
            return Err(TextError::Invalid(format!(
                "{}: checkpoint format {} is not the supported {FORMAT_VERSION}",
                meta_path.display(),
                meta.version
            )));
        }
        let vocab_path = dir.join("vocab.txt");
        let tokens: Vec<String> = std::fs::read_to_string(&vocab_path)
            .map_err(|e| TextError::io(&vocab_path, e))?
            .split('\n')
            .map(String::from)
            .collect();
        if tokens.len() < 2 {
            return Err(TextError::bad(
                &vocab_path,
                1,
                "vocabulary is truncated".into(),
            ));
        }
        let vocab = Vocab::from_tokens(tokens);
        meta.vocab = Some(vocab.clone());
        let dev = ferrolab_core::backend::device();
        let weights = dir.join("model.safetensors");
        let enc = meta.encoder();
        // Building the model draws initial weights (overwritten by the load) from burn's
        // process-wide generator; holding the experiment lock keeps a training run in another
        // thread of this process reproducible.
        let _rng = ferrolab_core::backend::exclusive_rng();
        let model = match meta.kind {
            ModelKind::KimCnn => Loaded::Kim(Box::new(load_checkpoint(
                KimCnn::new(&enc, meta.classes, meta.dropout, &dev),
                &weights,
            )?)),
            ModelKind::Secnn => Loaded::Secnn(Box::new(load_checkpoint(
                Secnn::new(&enc, meta.classes, meta.dropout, meta.se_reduction, &dev),
                &weights,
            )?)),
        };
        Ok(Predictor { meta, vocab, model })
    }

    /// Which model this is.
    pub fn kind(&self) -> ModelKind {
        self.meta.kind
    }

    /// `(label, probability of that label)` for each sentence.
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
                (i, v)
            })
            .collect()
    }
}
