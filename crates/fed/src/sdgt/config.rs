//! `ferrolab sdgt` configuration (TOML + `--set`), checked once before any work starts.
//!
//! Defaults are the comparison: Fashion-MNIST over 40 devices in 10 subnets of 4,
//! label-sorted (extreme non-IID) and IID splits, batch 32, T = 5, s = half of each subnet (the
//! reference's default), at most 300 rounds, multinomial logistic regression, 3 seeds, a shared
//! step-size grid per algorithm chosen by validation accuracy.

use super::algo::ALGO_NAMES;
use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check, distinct};

const RUNTIMES: [&str; 2] = ["inproc", "nats"];
const DATASETS: [&str; 2] = ["fashion-mnist", "synthetic"];
const SPLITS: [&str; 3] = ["sorted", "iid", "dirichlet"];
const ARCHS: [&str; 2] = ["logreg", "cnn"];

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct SdgtConfig {
        /// Algorithms, rounds, sampling, step sizes, runtime.
        pub fed: FedSection = FedSection::default();
        /// Devices, subnets and D2D graphs.
        pub topology: TopologySection = TopologySection::default();
        /// Data and its partition.
        pub data: DataSection = DataSection::default();
        /// The model and the target accuracy.
        pub model: ModelSection = ModelSection::default();
        /// The (s, T) co-optimisation's cost model.
        pub cost: CostSection = CostSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `fed.*`.
    pub struct FedSection {
        /// `inproc` (threads of this process over the in-process fabric) or `nats`.
        pub runtime: String = "inproc".into(), "`inproc` or `nats`" => |v| RUNTIMES.contains(&v.as_str());
        /// NATS server URL for `fed.runtime = "nats"` (empty: `$FERROLAB_NATS_URL`).
        pub nats_url: String = String::new();
        /// Algorithms to run: `sdgt` (ours; first = the headline), `sd_fedavg`, `scaffold`,
        /// `gt`, `fedavg`.
        pub algorithms: Vec<String> = ALGO_NAMES.iter().map(|s| s.to_string()).collect(), "a non-empty list of `sdgt`, `sd_fedavg`, `scaffold`, `gt`, `fedavg` without repeats, `sdgt` first" => |v: &Vec<String>| !v.is_empty() && v.iter().all(|a| ALGO_NAMES.contains(&a.as_str())) && distinct(v) && v.iter().position(|a| a == "sdgt").is_none_or(|p| p == 0);
        /// Global rounds.
        pub rounds: u64 = 300, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Local steps (D2D rounds) per global round, T.
        pub local_steps: usize = 5, "1..=1000" => |v| (1..=1000).contains(v);
        /// Devices sampled per subnet, s (0 = half of the smallest subnet, at least 1: the
        /// reference's `int(0.5 · n_c)`).
        pub s: usize = 0, "0..=100000" => |v| *v <= 100_000;
        /// Minibatch size (larger than a device's training rows is allowed: its minibatches
        /// then repeat rows, and stderr says so at the start).
        pub batch: usize = 32, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Step sizes tried for every algorithm on the first seed; the best validation
        /// accuracy picks each algorithm's.
        pub lr_grid: Vec<f64> = vec![0.01, 0.03, 0.1], "1 to 16 distinct step sizes, each in [1e-9, 1e6]" => |v: &Vec<f64>| (1..=16).contains(&v.len()) && v.iter().all(|x| (1e-9..=1e6).contains(x)) && distinct(v);
        /// Seeds per algorithm (run k's seed derives from `--seed` and `run<k>`).
        pub seeds: usize = 3, "1..=100" => |v| (1..=100).contains(v);
        /// Evaluate x̄ every this many rounds.
        pub eval_every: u64 = 5, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Devices per client thread (40 devices, 4 per client: 10 clients).
        pub devices_per_client: usize = 4, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Seconds a round waits for a client before counting it as failed.
        pub deadline_seconds: f64 = 600.0, "in (0, 86400]" => |v| *v > 0.0 && *v <= 86_400.0;
        /// Checkpoint every this many rounds (0: only whole runs are resumable).
        pub checkpoint_every: u64 = 50, "0..=100000" => |v| *v <= 100_000;
        /// Also run SD-GT with (s, T) co-optimised by the cost model every `coopt_every` rounds
        /// (0: do not).
        pub coopt_every: u64 = 20, "0..=100000" => |v| *v <= 100_000;
    }
}

ferrolab_core::config_section! {
    /// Keys `topology.*`.
    pub struct TopologySection {
        /// Devices.
        pub devices: usize = 40, "1..=10000" => |v| (1..=10_000).contains(v);
        /// Subnets (contiguous groups of devices).
        pub subnets: usize = 10, "1..=10000" => |v| (1..=10_000).contains(v);
        /// D2D radius of the random geometric graphs (positions N(0, 2²)); 0 = the reference:
        /// radius 0.5 + 3·U, redrawn until connected. A fixed radius is drawn once and a
        /// disconnected subnet is an error for the D2D algorithms.
        pub radius: f64 = 0.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
    }
}

ferrolab_core::config_section! {
    /// Keys `data.*`.
    pub struct DataSection {
        /// `fashion-mnist` (IDX files from the data lookup, or `data.dir`) or `synthetic`.
        pub dataset: String = "fashion-mnist".into(), "`fashion-mnist` or `synthetic`" => |v| DATASETS.contains(&v.as_str());
        /// Folder with the four Fashion-MNIST IDX files (overrides the lookup).
        pub dir: Option<String> = None;
        /// Partitions to compare on: `sorted` (extreme label skew, the headline), `iid`,
        /// `dirichlet`.
        pub splits: Vec<String> = vec!["sorted".into(), "iid".into()], "a non-empty list of `sorted`, `iid`, `dirichlet` without repeats" => |v: &Vec<String>| !v.is_empty() && v.iter().all(|s| SPLITS.contains(&s.as_str())) && distinct(v);
        /// Dirichlet concentration α of the `dirichlet` split.
        pub alpha: f64 = 0.5, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Training images held out for validation (step-size choice).
        pub val_size: usize = 5000, "1..=50000" => |v| (1..=50_000).contains(v);
        /// Use the first this many training images left after the split (0 = all).
        pub train_limit: usize = 0;
        /// Evaluate on the first this many test images (0 = all).
        pub test_limit: usize = 0;
        /// Images generated for `dataset = "synthetic"` (train before the split; test is a fifth).
        pub synthetic_train: usize = 6000, "100..=1000000" => |v| (100..=1_000_000).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `model.*`.
    pub struct ModelSection {
        /// `logreg` (multinomial logistic regression, strongly convex with `model.l2`) or `cnn`
        /// (the reference's: two 5×5 conv 64 + 2×2 max-pool, FC 384–192–10).
        pub arch: String = "logreg".into(), "`logreg` or `cnn`" => |v| ARCHS.contains(&v.as_str());
        /// L2 weight of the logistic regression.
        pub l2: f64 = 1e-4, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Test accuracy whose first crossing counts as reaching the target, in (0, 1]. Unset:
        /// the issue's, fixed before running: 0.75 for logistic regression, 0.80 for the CNN.
        pub target_accuracy: Option<f64> = None;
    }
}

impl ModelSection {
    /// `model.target_accuracy`, or the architecture's own when unset.
    pub fn target(&self) -> f64 {
        self.target_accuracy
            .unwrap_or(if self.arch == "cnn" { 0.80 } else { 0.75 })
    }
}

ferrolab_core::config_section! {
    /// Keys `cost.*`: the co-optimisation's objective (the reference ships no values; see README).
    pub struct CostSection {
        /// λ₀, λ₁, λ₂.
        pub lambda: Vec<f64> = vec![1.0, 1.0, 0.05], "three values, each in [0, 1e6]" => |v: &Vec<f64>| v.len() == 3 && v.iter().all(|x| (0.0..=1e6).contains(x));
        /// Energy of one device↔server exchange, per subnet.
        pub energy: f64 = 1.0, "in (0, 1e6]" => |v| *v > 0.0 && *v <= 1e6;
        /// Cost of one D2D round relative to a device↔server exchange (δ).
        pub delta: f64 = 0.02, "in [0, 1e6]" => |v| (0.0..=1e6).contains(v);
        /// Largest T the search considers (the reference: 49).
        pub max_t: usize = 49, "1..=1000" => |v| (1..=1000).contains(v);
    }
}

impl SdgtConfig {
    /// Devices in the smallest subnet.
    pub fn min_subnet(&self) -> usize {
        self.topology.devices / self.topology.subnets.max(1)
    }

    /// s after resolving 0 to half the smallest subnet.
    pub fn s(&self) -> usize {
        if self.fed.s == 0 {
            (self.min_subnet() / 2).max(1)
        } else {
            self.fed.s
        }
    }
}

impl Validate for SdgtConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(t) = self.model.target_accuracy {
            check(
                t > 0.0 && t <= 1.0,
                "model.target_accuracy",
                t,
                "must be in (0, 1]",
            )?;
        }
        check(
            self.topology.subnets <= self.topology.devices,
            "topology.subnets",
            self.topology.subnets,
            &format!("more subnets than devices ({})", self.topology.devices),
        )?;
        check(
            self.s() <= self.min_subnet(),
            "fed.s",
            self.fed.s,
            &format!(
                "larger than a subnet ({} devices in {} subnets: the smallest has {})",
                self.topology.devices,
                self.topology.subnets,
                self.min_subnet()
            ),
        )?;
        if self.data.dataset == "fashion-mnist" {
            check(
                self.data.val_size < 60_000,
                "data.val_size",
                self.data.val_size,
                "must leave training images (Fashion-MNIST has 60000)",
            )?;
        } else {
            check(
                self.data.val_size < self.data.synthetic_train,
                "data.val_size",
                self.data.val_size,
                "must be below data.synthetic_train",
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod target_tests {
    use super::*;

    #[test]
    fn the_target_follows_the_model_unless_set() {
        let mut c = SdgtConfig::default();
        assert_eq!(c.model.target(), 0.75);
        c.model.arch = "cnn".into();
        assert_eq!(c.model.target(), 0.80);
        c.model.target_accuracy = Some(0.6);
        assert_eq!(c.model.target(), 0.6);
        assert!(c.validate().is_ok());
        for bad in [0.0, 1.5, f64::NAN] {
            c.model.target_accuracy = Some(bad);
            let e = c
                .validate()
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("model.target_accuracy"), "{bad}: {e}");
        }
    }
}
