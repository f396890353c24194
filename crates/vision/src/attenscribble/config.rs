//! `ferrolab attenscribble` configuration (TOML + `--set`), checked once before any work starts.
//!
//! Defaults are the reference's recipe (AttenScribble `train_netformer.py` on WSL4MIS): UNet
//! 16/32/64/128/256 with one single-head transformer block after the second down-sampling,
//! partial cross-entropy + 0.1 × gated CRF (kernel weight 1, σ_xy 6, σ_rgb 0.1, radius 5) +
//! 0.1 × attentive loss (Gaussian window radius 5, σ 6), SGD momentum 0.9, weight decay 1e-4,
//! lr 0.01 with poly decay 0.9, batch 12, 60k iterations at 256×256. The presets scale this
//! down (see `configs/attenscribble/`).

use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};

/// Method names, in report order: ours first, then the baselines.
pub const METHODS: [&str; 4] = ["attenscribble", "pce", "pce_gcrf", "full"];

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct AttenScribbleConfig {
        /// Which data.
        pub data: DataSection = DataSection::default();
        /// The network.
        pub model: ModelSection = ModelSection::default();
        /// Loss weights and windows.
        pub loss: LossSection = LossSection::default();
        /// Optimisation and the comparison.
        pub train: TrainSection = TrainSection::default();
        /// Training-time augmentation.
        pub augment: AugmentSection = AugmentSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `data.*`.
    pub struct DataSection {
        /// `acdc` (found by the data lookup, or `data.dir`), or `synthetic`: generated
        /// short-axis cardiac volumes with scribbles in ACDC's layout
        /// (`ferrolab_data::acdc_synthetic`), no files needed.
        pub dataset: String = "acdc".into(), "`acdc` or `synthetic`" => |v| v == "acdc" || v == "synthetic";
        /// A folder with `train/` (slices) and `val/` (volumes) in the ACDC npz layout
        /// (overrides the lookup).
        pub dir: Option<String> = None;
        /// A folder of validation volumes (default: `<acdc>/val`); picks the checkpoint.
        pub val: Option<String> = None;
        /// A folder of test volumes, scored with the validation-selected checkpoint
        /// (`metrics.test_*`).
        pub test: Option<String> = None;
        /// Training size: every slice is resized to `size × size` (multiple of 16).
        pub size: usize = 256, "16..=1024, multiple of 16" => |v| (16..=1024).contains(v) && v % 16 == 0;
        /// Train on the slices of the first this many training patients (0 = all 80).
        pub train_patients: usize = 0;
        /// Validate on the first this many volumes (0 = all).
        pub val_volumes: usize = 0;
        /// `synthetic` only: slices per generated volume, base to apex (a training patient
        /// gives this many training slices).
        pub synthetic_slices: usize = 8, "1..=64" => |v| (1..=64).contains(v);
        /// `synthetic` only: stored slice shape `[height, width]` (resized to `data.size`
        /// for training, as ACDC's slices are).
        pub synthetic_shape: Vec<usize> = vec![112, 96], "[height, width], each 32..=1024" => |v| v.len() == 2 && v.iter().all(|s| (32..=1024).contains(s));
    }
}

ferrolab_core::config_section! {
    /// Keys `model.*`.
    pub struct ModelSection {
        /// Channels per UNet level.
        pub widths: Vec<usize> = vec![16, 32, 64, 128, 256], "2 to 6 widths in 1..=1024" => |v| (2..=6).contains(&v.len()) && v.iter().all(|w| (1..=1024).contains(w));
        /// Encoder dropout per level.
        pub dropout: Vec<f64> = vec![0.05, 0.1, 0.2, 0.3, 0.5], "one per level, each in [0, 1)" => |v| v.iter().all(|p| (0.0..1.0).contains(p));
        /// Encoder level whose output goes through the attention block (0 = full resolution;
        /// the reference: 2, after the second down-sampling).
        pub attention_level: usize = 2, "0..=5" => |v| *v <= 5;
        /// Hidden width of the block's MLP as a multiple of the level's width.
        pub mlp_ratio: usize = 4, "1..=16" => |v| (1..=16).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `loss.*`.
    pub struct LossSection {
        /// Weight of the gated CRF loss (`pce_gcrf` and `attenscribble`).
        pub crf_weight: f64 = 0.1, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Gated CRF window radius (pixels of the training size).
        pub crf_radius: usize = 5, "1..=16" => |v| (1..=16).contains(v);
        /// Gated CRF spatial σ (pixels).
        pub crf_sigma_xy: f64 = 6.0, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Gated CRF intensity σ (images in [0, 1]).
        pub crf_sigma_rgb: f64 = 0.1, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Weight of the gated CRF's one kernel.
        pub crf_kernel_weight: f64 = 1.0, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Weight of the attentive similarity loss (`attenscribble`).
        pub attn_weight: f64 = 0.1, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Gaussian window radius of the attentive loss (cells of the attention grid).
        pub attn_radius: usize = 5, "1..=16" => |v| (1..=16).contains(v);
        /// Gaussian window σ of the attentive loss (cells).
        pub attn_sigma: f64 = 6.0, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// The attentive loss is added after this many iterations (the reference's
        /// `cutoff_iter`: the attention first learns from the segmentation losses).
        pub attn_start: usize = 0;
    }
}

ferrolab_core::config_section! {
    /// Keys `train.*`.
    pub struct TrainSection {
        /// SGD iterations per run.
        pub iterations: usize = 60_000, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Slices per batch.
        pub batch_size: usize = 12, "1..=1024" => |v| (1..=1024).contains(v);
        /// Initial learning rate (poly decay to 0).
        pub lr: f64 = 0.01, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Poly decay exponent: `lr · (1 − it/iterations)^power`.
        pub poly_power: f64 = 0.9, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// SGD momentum.
        pub momentum: f64 = 0.9, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// Weight decay (added to the gradient, as PyTorch's SGD).
        pub weight_decay: f64 = 1e-4, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Runs per method; run i's seeds derive from `--seed` and `run<i>`.
        pub seeds: usize = 3, "1..=100" => |v| (1..=100).contains(v);
        /// Validate (and keep the best checkpoint) every this many iterations, and at the end.
        pub eval_every: usize = 200, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Save the training state for `--resume` every this many iterations, and in any case
        /// once 10 minutes have passed since the last save.
        pub checkpoint_every: usize = 500, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Methods to run: `attenscribble`, `pce`, `pce_gcrf`, `full`.
        pub methods: Vec<String> = METHODS.iter().map(|s| s.to_string()).collect(), "a non-empty subset of attenscribble, pce, pce_gcrf, full" => |v| !v.is_empty() && v.iter().all(|m| METHODS.contains(&m.as_str()));
        /// Slices per evaluation batch (memory only).
        pub eval_batch: usize = 16, "1..=1024" => |v| (1..=1024).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `augment.*`: the reference's `RandomGenerator` (half the samples get a random
    /// quarter turn and flip, half of the rest a small rotation).
    pub struct AugmentSection {
        /// Whether to augment at all.
        pub enabled: bool = true;
        /// Largest small-rotation angle in degrees (the reference: 20).
        pub max_degrees: f64 = 20.0, "0..=180" => |v| (0.0..=180.0).contains(v);
    }
}

impl DataSection {
    /// Training patients of the synthetic set (`train_patients`, 0 = all 80).
    pub fn synthetic_train_count(&self) -> usize {
        if self.train_patients == 0 {
            super::data::SYNTHETIC_TRAIN_ALL
        } else {
            self.train_patients
        }
    }

    /// Generated validation volumes of the synthetic set (`val_volumes`, 0 = all 10).
    pub fn synthetic_val_count(&self) -> usize {
        if self.val_volumes == 0 {
            super::data::SYNTHETIC_VAL_ALL
        } else {
            self.val_volumes
        }
    }
}

impl Validate for AttenScribbleConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let m = &self.model;
        check(
            m.dropout.len() == m.widths.len(),
            "model.dropout",
            format!("{:?}", m.dropout),
            "needs one rate per entry of model.widths",
        )?;
        check(
            m.attention_level < m.widths.len(),
            "model.attention_level",
            m.attention_level,
            "must name a level of model.widths",
        )?;
        let mult = 1usize << (m.widths.len() - 1);
        check(
            self.data.size.is_multiple_of(mult),
            "data.size",
            self.data.size,
            &format!("must be a multiple of {mult} (2^(levels − 1))"),
        )?;
        let grid = self.data.size >> m.attention_level;
        check(
            grid * grid <= 4096,
            "model.attention_level",
            m.attention_level,
            "gives more than 64×64 attention tokens at data.size (an hw × hw affinity per slice)",
        )?;
        if self.data.dataset == "synthetic" {
            check(
                self.data.dir.is_none(),
                "data.dir",
                self.data.dir.as_deref().unwrap_or_default(),
                "is not read with data.dataset = \"synthetic\" (the volumes are generated; data.val / data.test take folders of volumes; to train on files that `attenscribble synth` wrote, set data.dataset = \"acdc\" with data.dir)",
            )?;
            let d = &self.data;
            use super::data::{SYNTHETIC_TRAIN_MAX, SYNTHETIC_VAL_ALL};
            check(
                d.train_patients <= SYNTHETIC_TRAIN_MAX,
                "data.train_patients",
                d.train_patients,
                &format!(
                    "at most {SYNTHETIC_TRAIN_MAX} with data.dataset = \"synthetic\" (patients 21–999)"
                ),
            )?;
            check(
                d.val.is_some() || d.val_volumes <= SYNTHETIC_VAL_ALL,
                "data.val_volumes",
                d.val_volumes,
                &format!(
                    "at most {SYNTHETIC_VAL_ALL} with data.dataset = \"synthetic\" (patients 11–20; more would be training patients)"
                ),
            )?;
            let patients = d.synthetic_train_count();
            check(
                patients * d.synthetic_slices >= self.train.batch_size,
                "train.batch_size",
                self.train.batch_size,
                &format!(
                    "is more than the synthetic set's {} training slices ({patients} patients × data.synthetic_slices = {})",
                    patients * d.synthetic_slices,
                    d.synthetic_slices
                ),
            )?;
        } else {
            let d = DataSection::default();
            check(
                self.data.synthetic_slices == d.synthetic_slices
                    && self.data.synthetic_shape == d.synthetic_shape,
                "data.synthetic_slices / data.synthetic_shape",
                format!(
                    "{} / {:?}",
                    self.data.synthetic_slices, self.data.synthetic_shape
                ),
                "are read only with data.dataset = \"synthetic\"",
            )?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for name in &self.train.methods {
            check(
                seen.insert(name.as_str()),
                "train.methods",
                name,
                "is listed twice",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::Checked;

    #[test]
    fn defaults_are_the_reference_recipe_and_bad_values_are_refused() {
        let c = Checked::new(AttenScribbleConfig::default()).unwrap();
        assert_eq!(
            (c.train.batch_size, c.train.lr, c.data.size),
            (12, 0.01, 256)
        );
        let mut bad = AttenScribbleConfig::default();
        bad.model.attention_level = 0;
        let e = Checked::new(bad).unwrap_err().to_string();
        assert!(e.contains("model.attention_level"), "{e}");
        let mut bad = AttenScribbleConfig::default();
        bad.data.size = 200;
        assert!(Checked::new(bad).is_err());
        let mut bad = AttenScribbleConfig::default();
        bad.train.methods = vec!["pce".into(), "pce".into()];
        assert!(Checked::new(bad).is_err());
        let mut bad = AttenScribbleConfig::default();
        bad.train.methods = vec!["crf".into()];
        assert!(Checked::new(bad).is_err());
    }
}
