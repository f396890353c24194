//! `ferrolab adod` configuration (TOML + `--set`), checked once before any work starts.
//!
//! Defaults: the S-UODAC-style protocol on the rendered stand-in — train on Jerlov types I,
//! IA, IB, II, 1, 3; test on their held-out images and on the unseen III, 5, 7, 9 — at 128×128
//! input, every method with the same seeds, iterations, batches and augmentation.

use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};
use ferrolab_data::underwater::WaterType;

/// The methods compared, in report order; `adod` is the one under `metrics`.
pub const METHODS: [&str; 5] = ["yolo", "yolo_attention", "yolo_domain", "dg_yolo", "adod"];

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct AdodConfig {
        /// Which images.
        pub data: DataSection = DataSection::default();
        /// Which network.
        pub model: ModelSection = ModelSection::default();
        /// Optimisation, shared by every method.
        pub train: TrainSection = TrainSection::default();
        /// The domain classifier and the IRM penalty.
        pub domain: DomainSection = DomainSection::default();
        /// Detection post-processing at evaluation.
        pub eval: EvalSection = EvalSection::default();
    }
}

fn types_ok(v: &[String]) -> bool {
    !v.is_empty() && v.iter().all(|t| t.parse::<WaterType>().is_ok())
}

ferrolab_core::config_section! {
    /// Keys `data.*`: the rendered underwater domains (`ferrolab_data::underwater`).
    pub struct DataSection {
        /// Water types trained on (Jerlov names: I, IA, IB, II, III, 1, 3, 5, 7, 9).
        pub seen: Vec<String> = ["I", "IA", "IB", "II", "1", "3"].map(String::from).to_vec(), "Jerlov type names" => |v| types_ok(v);
        /// Water types never seen in training, tested on.
        pub unseen: Vec<String> = ["III", "5", "7", "9"].map(String::from).to_vec(), "Jerlov type names" => |v| types_ok(v);
        /// Training images rendered per seen type.
        pub train_per_type: usize = 500, "1..=20000" => |v| (1..=20_000).contains(v);
        /// Test images rendered per type (seen and unseen; other scenes than training's).
        pub test_per_type: usize = 100, "1..=5000" => |v| (1..=5000).contains(v);
        /// Square input side in pixels (a multiple of 32).
        pub image_size: usize = 128, "64, 96, 128, 160, 192, 224 or 256" => |v| (64..=256).contains(v) && v % 32 == 0;
        /// Most objects per image (at least one each).
        pub max_objects: usize = 5, "1..=20" => |v| (1..=20).contains(v);
        /// A COCO detection file to train and test on instead of rendered images (PNG images,
        /// `images[].domain` the water type; see `adod::coco_input`): `seen` and the per-type
        /// image counts are then ignored, `unseen` names the held-out domains.
        pub coco: Option<String> = None;
    }
}

ferrolab_core::config_section! {
    /// Keys `model.*`.
    pub struct ModelSection {
        /// The seven backbone widths of the YOLOv3-tiny layout (darknet: 16 … 1024).
        pub widths: Vec<usize> = vec![16, 32, 48, 64, 128, 128, 256], "seven widths, each 1..=1024" => |v| v.len() == 7 && v.iter().all(|w| (1..=1024).contains(w));
    }
}

ferrolab_core::config_section! {
    /// Keys `train.*`.
    pub struct TrainSection {
        /// Optimiser steps per (method, seed).
        pub iterations: usize = 1500, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Images per step.
        pub batch_size: usize = 16, "2..=256" => |v| (2..=256).contains(v);
        /// Adam's learning rate (cosine-annealed to a tenth).
        pub lr: f64 = 2e-3, "in (0, 1]" => |v| *v > 0.0 && *v <= 1.0;
        /// Seeds per method (seed s is `--seed + s`); mean ± std over them.
        pub seeds: usize = 3, "1..=20" => |v| (1..=20).contains(v);
        /// Methods to run (`yolo`, `yolo_attention`, `yolo_domain`, `dg_yolo`, `adod`); `adod`
        /// is required (its figures are `metrics.*`).
        pub methods: Vec<String> = METHODS.map(String::from).to_vec(), "a subset of yolo, yolo_attention, yolo_domain, dg_yolo, adod that holds adod" => |v| v.iter().all(|m| METHODS.contains(&m.as_str())) && v.iter().any(|m| m == "adod");
    }
}

ferrolab_core::config_section! {
    /// Keys `domain.*`.
    pub struct DomainSection {
        /// Weight of the domain cross-entropy in the training loss.
        pub weight: f64 = 0.5, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Largest gradient-reversal coefficient; the coefficient follows
        /// `α(p) = 2/(1 + e^(−10p)) − 1` times this over training progress p.
        pub grl: f64 = 1.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Weight of DG-YOLO's IRM penalty (also ramped by α(p)); at 1.0 (and 0.1) the penalty
        /// outweighed the detection loss and drove the objectness logits to 0 here.
        pub irm_weight: f64 = 0.01, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
    }
}

ferrolab_core::config_section! {
    /// Keys `eval.*`.
    pub struct EvalSection {
        /// Detections scoring at or below this are dropped before NMS.
        pub conf: f64 = 0.005, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// NMS IoU threshold.
        pub nms_iou: f64 = 0.45, "in (0, 1]" => |v| *v > 0.0 && *v <= 1.0;
        /// Images per evaluation batch (memory only).
        pub batch: usize = 64, "1..=4096" => |v| (1..=4096).contains(v);
    }
}

impl AdodConfig {
    /// The seen types, parsed (checked by `validate`).
    pub fn seen(&self) -> Vec<WaterType> {
        self.data
            .seen
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect()
    }

    /// The unseen types, parsed.
    pub fn unseen(&self) -> Vec<WaterType> {
        self.data
            .unseen
            .iter()
            .filter_map(|t| t.parse().ok())
            .collect()
    }
}

impl Validate for AdodConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let seen = self.seen();
        let unseen = self.unseen();
        check(
            seen.len() >= 2,
            "data.seen",
            format!("{:?}", self.data.seen),
            "needs at least two water types (the domain classifier separates them)",
        )?;
        let mut all = seen.clone();
        all.extend(&unseen);
        all.sort();
        let n = all.len();
        all.dedup();
        check(
            all.len() == n,
            "data.unseen",
            format!("{:?}", self.data.unseen),
            "must not repeat a type or name one of data.seen",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use ferrolab_core::Checked;

    #[test]
    fn defaults_are_the_protocol_and_bad_values_are_named() {
        let c = Checked::new(AdodConfig::default()).unwrap();
        assert_eq!(c.seen().len(), 6);
        assert_eq!(
            c.unseen(),
            vec![WaterType::III, WaterType::C5, WaterType::C7, WaterType::C9]
        );
        let mut bad = AdodConfig::default();
        bad.data.unseen = vec!["IV".into()];
        let e = Checked::new(bad).unwrap_err().to_string();
        assert!(e.contains("data.unseen"), "{e}");
        let mut bad = AdodConfig::default();
        bad.data.unseen = vec!["I".into()];
        assert!(Checked::new(bad).is_err());
        let mut bad = AdodConfig::default();
        bad.train.methods = vec!["yolo".into()];
        assert!(Checked::new(bad).is_err());
        let mut bad = AdodConfig::default();
        bad.data.image_size = 100;
        assert!(Checked::new(bad).is_err());
    }
}
