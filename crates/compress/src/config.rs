//! `ferrolab layer-importance` configuration (TOML + `--set`), checked before any work starts.

use crate::zoo::arch_ok;

const DATASETS: [&str; 2] = ["fashion-mnist", "synthetic"];
const STAGES: [&str; 4] = ["all", "dataset", "benchmark", "budget"];

fn rates_ok(v: &[f64]) -> bool {
    v.iter().all(|r| r.is_finite() && *r > 0.0 && *r <= 1.0)
}

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct LayerImportanceConfig {
        /// Which part to run.
        pub task: TaskSection = TaskSection::default();
        /// Images.
        pub data: DataSection = DataSection::default();
        /// The model zoo and how each member is trained.
        pub zoo: ZooSection = ZooSection::default();
        /// The perturbation grid of the ground truth.
        pub grid: GridSection = GridSection::default();
        /// How much work the criteria do.
        pub criteria: CriteriaSection = CriteriaSection::default();
        /// The budget experiments.
        pub budget: BudgetSection = BudgetSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `task.*`.
    pub struct TaskSection {
        /// `all` (dataset, benchmark, budget in order), `dataset`, `benchmark` (dataset +
        /// benchmark) or `budget` (all three; the budget needs the benchmark's choice).
        pub stage: String = "all".into(), "`all`, `dataset`, `benchmark` or `budget`" => |v| STAGES.contains(&v.as_str());
    }
}

ferrolab_core::config_section! {
    /// Keys `data.*`.
    pub struct DataSection {
        /// `fashion-mnist` (IDX files found by the data lookup or `data.dir`) or `synthetic`.
        pub dataset: String = "fashion-mnist".into(), "`fashion-mnist` or `synthetic`" => |v| DATASETS.contains(&v.as_str());
        /// A folder holding the four Fashion-MNIST IDX files (overrides the lookup).
        pub dir: Option<String> = None;
        /// Training images (the first this many of the training file).
        pub train_images: usize = 60_000, "1..=60000" => |v| (1..=60_000).contains(v);
        /// Evaluation images (the first this many of the test file), fixed for every probe.
        pub eval_images: usize = 2000, "1..=10000" => |v| (1..=10_000).contains(v);
        /// Images per evaluation batch (memory only).
        pub eval_batch: usize = 500, "1..=10000" => |v| (1..=10_000).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `zoo.*`.
    pub struct ZooSection {
        /// Architectures: `resnet<6n+2>` (≤ 56), `vgg`, `mobilenet`, `mlp`.
        pub archs: Vec<String> = vec!["resnet20".into(), "vgg".into(), "mobilenet".into(), "mlp".into()], "1 to 16 of resnet<6n+2>, vgg, mobilenet, mlp" => |v| (1..=16).contains(&v.len()) && v.iter().all(|a| arch_ok(a));
        /// Width multiplier of every hidden layer (1 = the vision crate's widths).
        pub width: f64 = 1.0, "in (0, 4]" => |v| *v > 0.0 && *v <= 4.0;
        /// Cross-domain members (one seed each): `secnn-mr` (SECNN on MR, ferrolab-text) and
        /// `gcn-cora` (the two-layer GCN on Cora, ferrolab-graph).
        pub cross_domain: Vec<String> = Vec::new(), "a subset of secnn-mr, gcn-cora" => |v| v.len() <= 2 && v.iter().all(|m| crate::crossdomain::MEMBERS.contains(&m.as_str()));
        /// Training seeds per architecture.
        pub seeds: usize = 3, "1..=20" => |v| (1..=20).contains(v);
        pub epochs: usize = 15, "1..=1000" => |v| (1..=1000).contains(v);
        /// Epochs of the MLP members when not 0 (0: `zoo.epochs`). The MLP costs seconds per
        /// epoch but needs more passes than the CNNs to reach 88% (measured: 0.879 after 2
        /// epochs on 60,000 images, 0.909 after 15), so the CNNs' budget need not bind it.
        pub mlp_epochs: usize = 0, "0 (= zoo.epochs) or 1..=1000" => |v| *v <= 1000;
        pub batch_size: usize = 128, "1..=4096" => |v| (1..=4096).contains(v);
        pub lr: f64 = 0.05, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        pub weight_decay: f64 = 5e-4, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
    }
}

ferrolab_core::config_section! {
    /// Keys `grid.*`.
    pub struct GridSection {
        /// Pruning sparsities (unstructured and channel).
        pub sparsities: Vec<f64> = vec![0.25, 0.5, 0.75, 0.9], "1 to 16 values in [0, 1)" => |v| (1..=16).contains(&v.len()) && v.iter().all(|s| (0.0..1.0).contains(s));
        /// Fake-quantisation bit-widths.
        pub bits: Vec<u32> = vec![8, 6, 4, 3, 2], "1 to 7 values in 2..=8" => |v| (1..=7).contains(&v.len()) && v.iter().all(|b| (2..=8).contains(b));
        /// Bit flips per layer, as counts.
        pub flip_counts: Vec<u64> = vec![1, 10, 100], "1 to 8 counts in 1..=1000000" => |v| (1..=8).contains(&v.len()) && v.iter().all(|c| (1..=1_000_000).contains(c));
        /// Bit flips per layer, as bit-error rates.
        pub flip_rates: Vec<f64> = vec![1e-5, 1e-4, 1e-3], "1 to 8 rates in (0, 1]" => |v| (1..=8).contains(&v.len()) && rates_ok(v);
        /// Seeds per bit-flip setting.
        pub flip_seeds: usize = 10, "1..=1000" => |v| (1..=1000).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `criteria.*`.
    pub struct CriteriaSection {
        /// Calibration images (from the training set) for gradient criteria.
        pub calib_images: usize = 512, "1..=10000" => |v| (1..=10_000).contains(v);
        /// Calibration mini-batch.
        pub batch: usize = 128, "1..=4096" => |v| (1..=4096).contains(v);
        /// Hutchinson probes of the Hessian trace.
        pub hutchinson_probes: usize = 8, "1..=1000" => |v| (1..=1000).contains(v);
        /// Steps of the integrated-gradients path.
        pub ig_steps: usize = 8, "1..=100" => |v| (1..=100).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `budget.*`.
    pub struct BudgetSection {
        /// Global sparsities of the pruning budget (report keys exist for 0.5, 0.7, 0.9).
        pub sparsities: Vec<f64> = vec![0.5, 0.7, 0.9], "1 to 8 values in [0, 1)" => |v| (1..=8).contains(&v.len()) && v.iter().all(|s| (0.0..1.0).contains(s));
        /// How strongly importance moves sparsity (`e^{−k·q}`; 0 = uniform).
        pub sharpness: f64 = 3.0, "in [0, 20]" => |v| (0.0..=20.0).contains(v);
        /// Average bit-widths of the quantisation budget.
        pub avg_bits: Vec<f64> = vec![4.5, 3.5], "1 to 8 values in [2, 8]" => |v| (1..=8).contains(&v.len()) && v.iter().all(|b| (2.0..=8.0).contains(b));
        /// Bit-error rates of the protection budget.
        pub flip_rates: Vec<f64> = vec![1e-5, 1e-4, 1e-3], "1 to 8 rates in (0, 1]" => |v| (1..=8).contains(&v.len()) && rates_ok(v);
        /// Flip seeds per rate.
        pub flip_seeds: usize = 20, "1..=1000" => |v| (1..=1000).contains(v);
        /// Fine-tune after pruning: images (the first of the training set) and epochs.
        pub finetune_images: usize = 5000, "1..=60000" => |v| (1..=60_000).contains(v);
        pub finetune_epochs: usize = 1, "1..=100" => |v| (1..=100).contains(v);
        pub finetune_lr: f64 = 0.01, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Pruning and bit budgets rank layers by score ÷ weight count (the criterion read
        /// as a layer's drop, so the ratio is the cost per pruned or coarsened weight)
        /// instead of by the score itself; the ground truth (oracle) alike. Off by default.
        pub per_weight: bool = false;
        /// Training images (the last ones of the training subset, all of it when it is smaller:
        /// a preset's value stays usable with a smaller `data.train_images`) on which the pruning and bit
        /// budgets choose how to follow the score: every `sharpness_grid` value, by score and
        /// by score per weight, is applied and the most accurate allocation kept (the evaluation
        /// images are never used for it). 0: `sharpness` and `per_weight` as given.
        pub calibrate_images: usize = 0, "0..=60000" => |v| *v <= 60_000;
        /// Candidate sharpnesses for the calibrated pruning budget (0 = uniform is not a
        /// candidate: the budget always follows the score).
        pub sharpness_grid: Vec<f64> = vec![0.25, 0.5, 1.0, 2.0, 3.0], "1 to 16 values in (0, 20]" => |v| (1..=16).contains(&v.len()) && v.iter().all(|k| *k > 0.0 && *k <= 20.0);
    }
}

impl ferrolab_core::config::Validate for LayerImportanceConfig {
    fn validate(&self) -> Result<(), ferrolab_core::ConfigError> {
        ferrolab_core::config::check(
            self.budget.finetune_images <= self.data.train_images,
            "budget.finetune_images",
            self.budget.finetune_images,
            "must not exceed data.train_images (the fine-tune reads the training subset)",
        )
    }
}
