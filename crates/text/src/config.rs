//! `ferrolab secnn` configuration (TOML + `--set`), with Kim (2014)'s hyper-parameters as
//! defaults except the optimiser (Adam instead of Adadelta, which burn does not ship).

use ferrolab_core::config::Validate;

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct SecnnConfig {
        /// Where the sentences come from.
        pub data: DataConfig = DataConfig::default();
        /// Architecture.
        pub model: ModelConfig = ModelConfig::default();
        /// Optimisation.
        pub train: TrainConfig = TrainConfig {
            epochs: 8,
            batch_size: 50,
            lr: 1e-3,
            weight_decay: 0.0,
            patience: 2,
            seeds: 5,
        };
    }
}

ferrolab_core::config_section! {
    /// Data keys: `data.preset`, `data.train`, `data.test`, `data.dev`, `data.folds`, ….
    pub struct DataConfig {
        /// `mr` or `sst2`: files under the data folder; ignored when `train` is set.
        pub preset: String = "mr".into(), "`mr` or `sst2`" => |v| ["mr", "sst2"].contains(&v.as_str());
        /// A `label sentence` file to train on (overrides the preset).
        pub train: Option<String> = None;
        /// A `label sentence` test file (replaces the sst2 preset's own); without one a seeded
        /// `holdout` share of the training file is held out.
        pub test: Option<String> = None;
        /// A `label sentence` dev file for early stopping (replaces the sst2 preset's own);
        /// without one `dev_fraction` of the training part is used.
        pub dev: Option<String> = None;
        /// Share of the training file held out as test when there is no test file.
        pub holdout: f64 = 0.1, "in (0, 0.5)" => |v| *v > 0.0 && *v < 0.5;
        /// Share of the training part used for early stopping when there is no dev file.
        pub dev_fraction: f64 = 0.1, "in (0, 0.5)" => |v| *v > 0.0 && *v < 0.5;
        /// 1 = one held-out split; k > 1 = k-fold cross-validation over the training file (the
        /// paper protocol for MR is 10), one run per fold instead of per seed.
        pub folds: usize = 1, "1 (hold-out) or 2..=20" => |v| (1..=20).contains(v);
        /// Tokens kept per sentence (0 = all).
        pub max_len: usize = 0, "0..=1000000" => |v| *v <= 1_000_000;
        /// Minimum count of a token to enter the vocabulary.
        pub min_count: usize = 1, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Train on at most this many examples (0 = all); for quick runs.
        pub limit: usize = 0;
    }
}

ferrolab_core::config_section! {
    /// Model keys: `model.embed_dim`, `model.widths`, `model.maps`, `model.dropout`, ….
    pub struct ModelConfig {
        /// Word-vector width.
        pub embed_dim: usize = 300, "1..=2048" => |v| (1..=2048).contains(v);
        /// Convolution widths.
        pub widths: Vec<usize> = vec![3, 4, 5], "a non-empty list of widths in 1..=15" => |v| !v.is_empty() && v.iter().all(|w| (1..=15).contains(w));
        /// Feature maps per width.
        pub maps: usize = 100, "1..=4096" => |v| (1..=4096).contains(v);
        /// Dropout before the classifier.
        pub dropout: f64 = 0.5, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// SE reduction ratio r.
        pub se_reduction: usize = 16, "1..=4096" => |v| (1..=4096).contains(v);
        /// Max L2 norm of each class's output weights (0 = off).
        pub max_norm: f64 = 3.0, ">= 0 (0 = off)" => |v| *v >= 0.0;
        /// Pretrained vectors in word2vec/GloVe text format (`--embeddings FILE`).
        pub embeddings: Option<String> = None;
    }
}

/// Training keys: `train.epochs`, `train.batch_size`, `train.lr`, `train.patience`,
/// `train.seeds` (the section every system shares; `train.weight_decay` is not used here).
pub type TrainConfig = ferrolab_core::config::TrainSection;

impl SecnnConfig {
    /// Settings for `reproduce --quick`: fewer maps, epochs and seeds so both presets finish in
    /// a few minutes on two cores.
    pub fn quick(preset: &str) -> Self {
        let mut c = SecnnConfig::default();
        c.data.preset = preset.into();
        c.model.embed_dim = 128;
        c.train.epochs = 4;
        c.train.seeds = 3;
        c
    }
}

/// Whether a preset's data set comes with its own test and dev files (SST-2's given split);
/// the others hold out parts of the training file.
pub fn preset_has_splits(preset: &str) -> bool {
    preset == "sst2"
}

impl Validate for SecnnConfig {
    fn validate(&self) -> Result<(), ferrolab_core::ConfigError> {
        self.train
            .unused(&SecnnConfig::default().train, "secnn", &["weight_decay"])?;
        // Folds split the training file; with a given test file every "fold" would train on
        // the whole file and test on that file, seeded runs reported as cross-validation.
        let d = &self.data;
        let test_file = d.test.is_some() || (d.train.is_none() && preset_has_splits(&d.preset));
        ferrolab_core::config::check(
            d.folds == 1 || !test_file,
            "data.folds",
            d.folds,
            "cross-validation splits the training file, but a test file is given (data.test, or data.preset = \"sst2\"): use train.seeds for repeated runs",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::SecnnConfig;
    use ferrolab_core::config::load;

    fn loads(sets: &[&str]) -> Result<SecnnConfig, String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load::<SecnnConfig>(None, &sets).map_err(|e| e.to_string())
    }

    #[test]
    fn folds_with_a_given_test_file_are_refused_at_load() {
        for sets in [
            &["data.preset=sst2", "data.folds=10"][..],
            &["data.test=t.txt", "data.folds=5"][..],
        ] {
            let e = loads(sets).err().unwrap_or_default();
            assert!(e.contains("data.folds"), "{sets:?}: {e}");
        }
        // MR's cross-validation, SST-2's seeded runs and a custom training file with a test
        // file of its own but no folds stay valid.
        assert!(loads(&["data.preset=mr", "data.folds=10"]).is_ok());
        assert!(loads(&["data.preset=sst2"]).is_ok());
        assert!(loads(&["data.train=a.txt", "data.folds=10"]).is_ok());
        assert!(loads(&["data.train=a.txt", "data.test=t.txt"]).is_ok());
    }
}
