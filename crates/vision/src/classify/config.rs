//! `ferrolab classify` configuration (TOML + `--set`), checked once before any work starts.
//!
//! Defaults are the CIFAR ResNet recipe (He et al. 2016, §4.2) applied to Fashion-MNIST:
//! SGD with momentum 0.9 and weight decay 5e-4, batch 128, learning rate 0.1 with cosine
//! annealing, pad-and-crop (2 pixels for 28 × 28) and horizontal flips.

use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};

/// Architectures `model.arch` accepts besides `resnet<6n+2>`.
pub const ARCHS: [&str; 5] = ["resnet20", "resnet32", "vgg", "mobilenet", "mlp"];

/// Whether `name` is an architecture this system builds: `vgg`, `mobilenet`, `mlp`, or
/// `resnet<depth>` with depth `6n + 2` between 8 and 110.
pub fn arch_ok(name: &str) -> bool {
    resnet_depth(name).is_some() || ["vgg", "mobilenet", "mlp"].contains(&name)
}

/// The depth of a `resnet<depth>` name, when it is one ResNet can be built with.
pub fn resnet_depth(name: &str) -> Option<usize> {
    let d: usize = name.strip_prefix("resnet")?.parse().ok()?;
    (8..=110)
        .contains(&d)
        .then_some(d)
        .filter(|d| (d - 2) % 6 == 0)
}

const DATASETS: [&str; 2] = ["fashion-mnist", "synthetic"];
const SCHEDULES: [&str; 3] = ["cosine", "step", "constant"];

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct ClassifyConfig {
        /// Which images.
        pub data: DataSection = DataSection::default();
        /// Which network.
        pub model: ModelSection = ModelSection::default();
        /// Training-time augmentation.
        pub augment: AugmentSection = AugmentSection::default();
        /// Optimisation (`train.seeds` and `train.patience` stay at their defaults here).
        pub train: TrainConfig = TrainConfig {
            epochs: 30,
            batch_size: 128,
            lr: 0.1,
            weight_decay: 5e-4,
            patience: 0,
            seeds: 1,
        };
        /// SGD and the learning-rate schedule.
        pub optim: OptimSection = OptimSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `data.*`.
    pub struct DataSection {
        /// `fashion-mnist` (the IDX files, found by the data lookup or `data.dir`) or `synthetic`
        /// (a generated stand-in of the same shape: one stroke orientation per class).
        pub dataset: String = "fashion-mnist".into(), "`fashion-mnist` or `synthetic`" => |v| DATASETS.contains(&v.as_str());
        /// A folder holding the four Fashion-MNIST IDX files (overrides the lookup).
        pub dir: Option<String> = None;
        /// Images held out of the training file for validation (seeded by `--seed`).
        pub val_size: usize = 5000, "0..=50000" => |v| *v <= 50_000;
        /// Train on the first this many images left after the split (0 = all); for quick runs.
        pub train_limit: usize = 0;
        /// Evaluate on the first this many test images (0 = all); for quick runs.
        pub test_limit: usize = 0;
        /// Training images generated when `dataset = "synthetic"` (before the split).
        pub synthetic_train: usize = 6000, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Test images generated when `dataset = "synthetic"`.
        pub synthetic_test: usize = 1000, "1..=1000000" => |v| (1..=1_000_000).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `model.*`.
    pub struct ModelSection {
        /// `resnet20`, `resnet32` (any `resnet<6n+2>` up to 110), `vgg`, `mobilenet` or `mlp`.
        pub arch: String = "resnet20".into(), "`resnet20`, `resnet32` (`resnet<6n+2>`), `vgg`, `mobilenet` or `mlp`" => |v| arch_ok(v);
        /// Hidden widths of the `mlp` architecture.
        pub mlp_hidden: Vec<usize> = vec![256], "1 to 8 widths, each in 1..=4096" => |v| (1..=8).contains(&v.len()) && v.iter().all(|w| (1..=4096).contains(w));
    }
}

ferrolab_core::config_section! {
    /// Keys `augment.*` (training images only).
    pub struct AugmentSection {
        /// Zero padding before a random crop back to size (0 = off; 2 for 28×28, 4 for 32×32).
        pub pad: usize = 2, "0..=16" => |v| *v <= 16;
        /// Random horizontal flips.
        pub flip: bool = true;
    }
}

ferrolab_core::config_section! {
    /// Keys `optim.*`.
    pub struct OptimSection {
        /// SGD momentum (0 = plain SGD).
        pub momentum: f64 = 0.9, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// Nesterov momentum.
        pub nesterov: bool = false;
        /// `cosine` (to `min_lr` over `train.epochs`), `step` (× `gamma` every `step_size`
        /// epochs) or `constant`.
        pub schedule: String = "cosine".into(), "`cosine`, `step` or `constant`" => |v| SCHEDULES.contains(&v.as_str());
        /// Final rate of the cosine schedule.
        pub min_lr: f64 = 0.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Epochs between decays of the step schedule.
        pub step_size: usize = 10, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Decay factor of the step schedule.
        pub gamma: f64 = 0.1, "in (0, 1]" => |v| *v > 0.0 && *v <= 1.0;
        /// Images per evaluation batch (memory only; results do not depend on it).
        pub eval_batch: usize = 500, "1..=100000" => |v| (1..=100_000).contains(v);
    }
}

/// Training keys: `train.epochs`, `train.batch_size`, `train.lr`, `train.weight_decay`.
pub type TrainConfig = ferrolab_core::config::TrainSection;

impl ClassifyConfig {
    /// The schedule `optim.schedule` names, over `train.epochs`.
    pub fn schedule(&self) -> ferrolab_core::schedule::LrSchedule {
        use ferrolab_core::schedule::LrSchedule;
        match self.optim.schedule.as_str() {
            "cosine" => LrSchedule::Cosine {
                total: self.train.epochs,
                min_lr: self.optim.min_lr,
            },
            "step" => LrSchedule::Step {
                step_size: self.optim.step_size,
                gamma: self.optim.gamma,
            },
            _ => LrSchedule::Constant,
        }
    }
}

impl Validate for ClassifyConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let d = ClassifyConfig::default();
        self.train.unused(&d.train, "classify", &["patience"])?;
        check(
            self.train.seeds == 1,
            "train.seeds",
            self.train.seeds,
            "must be 1 (classify trains one model; run again with another --seed)",
        )?;
        check(
            self.optim.min_lr <= self.train.lr,
            "optim.min_lr",
            self.optim.min_lr,
            "must not exceed train.lr",
        )?;
        if self.data.dataset == "synthetic" {
            check(
                self.data.val_size < self.data.synthetic_train,
                "data.val_size",
                self.data.val_size,
                "must be below data.synthetic_train",
            )?;
        } else {
            check(
                self.data.val_size < 60_000,
                "data.val_size",
                self.data.val_size,
                "must leave training images (Fashion-MNIST has 60000)",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ferrolab_core::Checked;

    #[test]
    fn architecture_names_are_checked() {
        for ok in [
            "resnet20",
            "resnet32",
            "resnet8",
            "resnet110",
            "vgg",
            "mobilenet",
            "mlp",
        ] {
            assert!(arch_ok(ok), "{ok}");
        }
        for bad in [
            "resnet",
            "resnet21",
            "resnet2",
            "resnet116",
            "resnetx",
            "vgg16",
            "",
        ] {
            assert!(!arch_ok(bad), "{bad}");
        }
        let mut c = ClassifyConfig::default();
        c.model.arch = "alexnet".into();
        let e = Checked::new(c).unwrap_err().to_string();
        assert!(e.contains("model.arch") && e.contains("alexnet"), "{e}");
        assert!(!e.contains('\n'));
    }

    #[test]
    fn defaults_are_the_resnet_recipe_and_cross_field_rules_hold() {
        let c = Checked::new(ClassifyConfig::default()).unwrap();
        assert_eq!(
            (c.train.batch_size, c.train.lr, c.train.weight_decay),
            (128, 0.1, 5e-4)
        );
        assert_eq!(c.optim.momentum, 0.9);
        let mut bad = ClassifyConfig::default();
        bad.train.seeds = 3;
        assert!(Checked::new(bad).is_err());
        let mut bad = ClassifyConfig::default();
        bad.train.patience = 2;
        assert!(Checked::new(bad).is_err());
        let mut bad = ClassifyConfig::default();
        bad.data.dataset = "synthetic".into();
        bad.data.val_size = 6000;
        assert!(Checked::new(bad).is_err());
    }
}
