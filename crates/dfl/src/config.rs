//! `ferrolab taskmet` configuration (TOML + `--set`), checked once before any work starts.
//!
//! Each task has its own section (its data and the reference's per-task predictor settings:
//! layers, output activation, batch size, learning rate); `learn.*` holds what the tasks share;
//! `task.name` picks the task a run trains on.

use crate::learn::{CgMode, LearnConfig, Selection};
use crate::mlp::Activation;
use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};

/// Tasks `task.name` accepts.
pub const TASKS: [&str; 4] = ["portfolio", "budget", "cubic", "cartpole"];
const ACTIVATIONS: [&str; 4] = ["none", "tanh", "relu", "sigmoid"];
/// Methods `task.methods` accepts; each task runs those that apply to it (`dfl` to the decision
/// tasks, `lodl` to the decision tasks, `omd` to CartPole) and notes the rest as skipped.
pub const METHODS: [&str; 5] = ["mse", "dfl", "taskmet", "lodl", "omd"];

fn activation_ok(v: &str) -> bool {
    ACTIVATIONS.contains(&v)
}

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct TaskmetConfig {
        /// Which task.
        pub task: TaskSection = TaskSection::default();
        /// Portfolio optimisation on S&P 500 prices (`task.name = "portfolio"`).
        pub portfolio: PortfolioSection = PortfolioSection::default();
        /// Budget allocation on synthetic reach data (`task.name = "budget"`).
        pub budget: BudgetSection = BudgetSection::default();
        /// Cubic top-k, the reference's default toy (`task.name = "cubic"`).
        pub cubic: CubicSection = CubicSection::default();
        /// Model-based RL on CartPole-v1 with distractors (`task.name = "cartpole"`).
        pub cartpole: CartpoleSection = CartpoleSection::default();
        /// Training settings every task shares.
        pub learn: LearnSection = LearnSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `task.*`.
    pub struct TaskSection {
        /// `portfolio`, `budget`, `cubic` or `cartpole`.
        pub name: String = "portfolio".into(), "`portfolio`, `budget`, `cubic` or `cartpole`" => |v| TASKS.contains(&v.as_str());
        /// Methods to train, each with the same seeds, splits and budgets (`mse`, `dfl`,
        /// `taskmet`, `lodl`, `omd`); a task runs those that apply to it (`dfl`, `lodl`: the
        /// decision tasks, `omd`: cartpole).
        pub methods: Vec<String> = METHODS.iter().map(|s| s.to_string()).collect(), "a non-empty list of `mse`, `dfl`, `taskmet`, `lodl`, `omd` without repeats" => |v| !v.is_empty() && v.iter().all(|m| METHODS.contains(&m.as_str())) && (1..v.len()).all(|i| !v[..i].contains(&v[i]));
        /// Runs per method; run i's model seed derives from `--seed` and `run<i>`.
        pub seeds: usize = 5, "1..=1000" => |v| (1..=1000).contains(v);
        /// Uniform-random predictions averaged for the normalised DQ's random baseline.
        pub random_draws: usize = 10, "1..=10000" => |v| (1..=10_000).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `portfolio.*`.
    pub struct PortfolioSection {
        /// First instance: the first trading day on or after this date with a year of history.
        pub start: String = "2005-01-01".into(), "a calendar date YYYY-MM-DD" => |v| ferrolab_data::prices::day_number(v).is_some();
        /// Training days (the reference: 200).
        pub train_days: usize = 200, "2..=5000" => |v| (2..=5000).contains(v);
        /// Validation days (200).
        pub val_days: usize = 200, "1..=5000" => |v| (1..=5000).contains(v);
        /// Test days (400).
        pub test_days: usize = 400, "1..=5000" => |v| (1..=5000).contains(v);
        /// Trading days of past returns behind each day's risk factor (`risk = "past"` only).
        pub window: usize = 250, "20..=2000" => |v| (20..=2000).contains(v);
        /// Which returns each day's risk factor is built from: `past` (the `window` trading
        /// days up to the day; no look-ahead) or `future` (the reference's: the next 2–10 days'
        /// returns, side information it gives the decision).
        pub risk: String = "past".into(), "`past` or `future`" => |v| v == "past" || v == "future";
        /// Ridge added to the risk matrix, relative to its mean diagonal (the reference's 0.1
        /// on a correlation; on a covariance 0.1 times the mean variance).
        pub reg: f64 = 0.1, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// The matrix `L` factors: `correlation` (the reference's `computeCovariance(correl=True)`)
        /// or `covariance` (the issue's wording: at daily-return scale the risk term then weighs
        /// about 10⁻⁴ of a correlation's, so decisions follow the predictions).
        pub risk_matrix: String = "correlation".into(), "`correlation` or `covariance`" => |v| v == "correlation" || v == "covariance";
        /// Risk aversion λ in `ŷᵀz − λ‖Lz‖²` (the reference's α = 0.1).
        pub lambda: f64 = 0.1, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Predictor linear layers.
        pub layers: usize = 2, "1..=8" => |v| (1..=8).contains(v);
        /// Predictor output activation (`none`, `tanh`, `relu`, `sigmoid`).
        pub output: String = "tanh".into(), "`none`, `tanh`, `relu` or `sigmoid`" => |v| activation_ok(v);
        /// Instances per outer step.
        pub batch_size: usize = 100, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Predictor Adam learning rate.
        pub pred_lr: f64 = 1e-2, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
    }
}

ferrolab_core::config_section! {
    /// Keys `budget.*`.
    pub struct BudgetSection {
        /// Training instances (the reference: 100 with 20 of them for validation).
        pub train: usize = 80, "2..=100000" => |v| (2..=100_000).contains(v);
        /// Validation instances.
        pub val: usize = 20, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Test instances (500).
        pub test: usize = 500, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Items to allocate budget to (5).
        pub items: usize = 5, "2..=1000" => |v| (2..=1000).contains(v);
        /// Targets each item may reach (10).
        pub targets: usize = 10, "1..=1000" => |v| (1..=1000).contains(v);
        /// Budget B: the allocation sums to B (2).
        pub budget: f64 = 2.0, "> 0, finite, below budget.items" => |v| *v > 0.0 && v.is_finite();
        /// Share of non-zero reach probabilities in the synthetic data.
        pub density: f64 = 0.5, "(0, 1]" => |v| *v > 0.0 && *v <= 1.0;
        /// Seed of the generated data (fixed across model seeds, as the reference's dataset_seed).
        pub data_seed: u64 = 0;
        /// Predictor linear layers.
        pub layers: usize = 2, "1..=8" => |v| (1..=8).contains(v);
        /// Predictor output activation.
        pub output: String = "relu".into(), "`none`, `tanh`, `relu` or `sigmoid`" => |v| activation_ok(v);
        /// Instances per outer step.
        pub batch_size: usize = 100, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Predictor Adam learning rate.
        pub pred_lr: f64 = 1e-4, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
    }
}

ferrolab_core::config_section! {
    /// Keys `cubic.*`.
    pub struct CubicSection {
        /// Training instances (the reference: 400 with half for validation).
        pub train: usize = 200, "2..=100000" => |v| (2..=100_000).contains(v);
        /// Validation instances.
        pub val: usize = 200, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Test instances (400).
        pub test: usize = 400, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Items per instance (50).
        pub items: usize = 50, "2..=100000" => |v| (2..=100_000).contains(v);
        /// Items chosen (1).
        pub k: usize = 1, "1..cubic.items" => |v| *v >= 1;
        /// Entropic regularisation of the soft top-k DFL trains through (0.01).
        pub epsilon: f64 = 0.01, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Seed of the generated data.
        pub data_seed: u64 = 0;
        /// Predictor linear layers (1: a linear model, as the reference).
        pub layers: usize = 1, "1..=8" => |v| (1..=8).contains(v);
        /// Predictor output activation.
        pub output: String = "none".into(), "`none`, `tanh`, `relu` or `sigmoid`" => |v| activation_ok(v);
        /// Instances per outer step.
        pub batch_size: usize = 50, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Predictor Adam learning rate.
        pub pred_lr: f64 = 0.1, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
    }
}

ferrolab_core::config_section! {
    /// Keys `cartpole.*`: the agent settings of the reference's `omd/cartpole` that a run may
    /// change; the rest are its `config/default.yaml` values (see `rl::AgentConfig`).
    pub struct CartpoleSection {
        /// Distractor dimensions k, one sweep point each (the reference: 0 to 256).
        pub distractors: Vec<usize> = vec![0, 16, 64, 256], "a non-empty list of counts in 0..=4096 without repeats" => |v| !v.is_empty() && v.iter().all(|k| *k <= 4096) && (1..v.len()).all(|i| !v[..i].contains(&v[i]));
        /// Environment steps per agent (the reference: 200000).
        pub steps: usize = 150_000, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Uniformly random steps before updates start (1000).
        pub init_steps: usize = 1000, "0..=10000000" => |v| *v <= 10_000_000;
        /// TaskMet's metric stays fixed before this step (5000).
        pub metric_warmup_steps: usize = 5000, "0..=10000000" => |v| *v <= 10_000_000;
        /// Evaluate every this many steps (1000).
        pub eval_every: usize = 1000, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Episodes per evaluation (10).
        pub eval_episodes: usize = 10, "1..=1000" => |v| (1..=1000).contains(v);
        /// Replayed transitions per update (256).
        pub batch_size: usize = 256, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Q-net, model and metric hidden width (32).
        pub hidden: usize = 32, "1..=4096" => |v| (1..=4096).contains(v);
        /// Evaluations averaged into a run's return (the last ones): one evaluation of 10
        /// episodes is a noisy figure for a policy that is still moving.
        pub final_evals: usize = 1, "1..=1000" => |v| (1..=1000).contains(v);
        /// TaskMet's metric: `global` (one weight per observation dimension, shared by all
        /// states: the form the reference's CartPole figure was made with, `rl::metric::GlobalMetric`),
        /// `full` (the state-conditioned lower-triangular `L(s)` the reference's code later
        /// defaults to, `O(o²)` per row) or `diagonal` (state-conditioned diagonal `L(s)`, `O(o)`).
        pub metric: String = "global".into(), "`global`, `full` or `diagonal`" => |v| v == "global" || v == "full" || v == "diagonal";
        /// TaskMet's model solve: `normal` (the reference's: jaxopt's `solve_normal_cg` on the
        /// joint Hessian of both model nets, no ridge, two HVPs per iteration), `plain` (CG on
        /// `H_s + 1e-5·I` for the next-state net alone, carrying on through negative curvature
        /// as `jax.scipy`'s CG does: the reference's unused `dynamics_root_solve_bwd`) or
        /// `plain_stop` (the same, stopping at negative curvature).
        pub cg: String = "normal".into(), "`plain`, `plain_stop` or `normal`" => |v| v == "plain" || v == "plain_stop" || v == "normal";
        /// TaskMet's model optimiser: `reference_stale` (the default, the reference's: its
        /// `loss_metric` hands back the incoming Adam state, so every model step is Adam's
        /// first, i.e. sign descent of size lr; so in its figure's runs too) or `carried` (Adam
        /// whose moments carry over between steps, as the reference's MSE agent has).
        pub model_adam: String = "reference_stale".into(), "`carried` or `reference_stale`" => |v| v == "carried" || v == "reference_stale";
        /// A floor under the `global` metric's per-dimension weights, in [0, 1):
        /// `λ' = floor + (1 − floor)·λ`, so no weight falls below it. 0 (the default) is the
        /// reference's metric, which at k = 0, where nothing is a distractor, can drive a real
        /// state dimension's weight to zero (crates/dfl/README.md). Only `global` has it.
        pub metric_floor: f64 = 0.0, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// Minutes of wall time between two checkpoints of an unfinished agent
        /// (`train-state/<unit>/`, which `--resume` continues from); at most DESIGN's ten.
        pub checkpoint_minutes: f64 = 10.0, "in (0, 10]" => |v| *v > 0.0 && *v <= 10.0;
    }
}

ferrolab_core::config_section! {
    /// Keys `learn.*`: the reference's `main.yaml` and `method/*.yaml` settings.
    pub struct LearnSection {
        /// Outer steps (`iters`).
        pub iters: usize = 1000, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Hidden width of the predictor (500).
        pub width: usize = 500, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Validate every this many steps (`valfreq`).
        pub val_every: usize = 10, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Steps without a better validation before stopping (0 = never stop early).
        pub patience: usize = 100;
        /// Checkpoint kept: `val_loss` (each method's own validation loss, the reference's
        /// best.pkl: MSE for two-stage, so the baseline is not picked by decision quality) or
        /// `val_dq` (best validation decision quality, for every method).
        pub selection: String = "val_loss".into(), "`val_loss` or `val_dq`" => |v| v == "val_dq" || v == "val_loss";
        /// DFL's MSE weight (`dflalpha`).
        pub dfl_alpha: f64 = 1.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Metric Adam learning rate.
        pub metric_lr: f64 = 1e-3, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Metric net hidden width.
        pub metric_hidden: usize = 200, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Inner Adam iterations of TaskMet's first solve.
        pub inner_iters_first: usize = 500, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Inner iterations of each later, warm-started solve.
        pub inner_iters: usize = 100, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// Instances per inner step.
        pub inner_batch: usize = 10, "1..=100000" => |v| (1..=100_000).contains(v);
        /// An inner solve stops once the gradient norm is below this.
        pub inner_grad_tol: f64 = 1e-3, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Inner gradient-norm clip.
        pub inner_clip: f64 = 1.0, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Instances the implicit gradient's Hessian is taken on.
        pub implicit_batch: usize = 10, "1..=100000" => |v| (1..=100_000).contains(v);
        /// `normal_cg` (the reference's, robust to an indefinite Hessian) or `cg`.
        pub cg_mode: String = "normal_cg".into(), "`normal_cg` or `cg`" => |v| v == "normal_cg" || v == "cg";
        /// CG iteration cap (5).
        pub cg_iters: usize = 5, "1..=10000" => |v| (1..=10_000).contains(v);
        /// Ridge added in the CG solve (1e-5).
        pub cg_ridge: f64 = 1e-5, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// CG relative tolerance; a solve ending above it is counted as not converged.
        pub cg_rtol: f64 = 1e-5, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// LODL: sampled predictions per instance for its local-loss fit (the reference's
        /// `numsamples`: 50000, which its weighted-MSE model, one weight per target, does not need).
        pub lodl_samples: usize = 1000, "4..=1000000" => |v| (4..=1_000_000).contains(v);
        /// LODL: σ of the sampled perturbations in units of the instance's target std.
        pub lodl_std: f64 = 1.0, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// LODL: how the weights are fitted, `adam` (the reference's: 100 Adam steps of
        /// lr 0.01 from a random start, early-stopped) or `exact` (non-negative least squares).
        pub lodl_fit: String = "adam".into(), "`adam` or `exact`" => |v| v == "adam" || v == "exact";
        /// LODL: Adam steps, or NNLS iterations with `exact`.
        pub lodl_fit_iters: usize = 100, "1..=1000000" => |v| (1..=1_000_000).contains(v);
        /// LODL: Adam rate of the fit (`losslr`).
        pub lodl_lr: f64 = 0.01, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
    }
}

fn activation(name: &str) -> Activation {
    match name {
        "tanh" => Activation::Tanh,
        "relu" => Activation::Relu,
        "sigmoid" => Activation::Sigmoid,
        _ => Activation::None,
    }
}

impl TaskmetConfig {
    /// The learner's settings for the configured task.
    pub fn learn_config(&self) -> LearnConfig {
        let l = &self.learn;
        let (layers, output, batch_size, pred_lr) = match self.task.name.as_str() {
            "budget" => {
                let b = &self.budget;
                (b.layers, &b.output, b.batch_size, b.pred_lr)
            }
            "cubic" => {
                let c = &self.cubic;
                (c.layers, &c.output, c.batch_size, c.pred_lr)
            }
            _ => {
                let p = &self.portfolio;
                (p.layers, &p.output, p.batch_size, p.pred_lr)
            }
        };
        LearnConfig {
            layers,
            width: l.width,
            output: activation(output),
            iters: l.iters,
            batch_size,
            pred_lr,
            val_every: l.val_every,
            patience: l.patience,
            early_stopping: l.patience > 0,
            selection: if l.selection == "val_loss" {
                Selection::ValLoss
            } else {
                Selection::ValDq
            },
            dfl_alpha: l.dfl_alpha,
            metric_lr: l.metric_lr,
            metric_hidden: l.metric_hidden,
            metric_identity_init: None,
            inner_iters_first: l.inner_iters_first,
            inner_iters: l.inner_iters,
            inner_batch: l.inner_batch,
            inner_grad_tol: l.inner_grad_tol,
            inner_clip: l.inner_clip,
            implicit_batch: l.implicit_batch,
            cg_mode: if l.cg_mode == "cg" {
                CgMode::Cg
            } else {
                CgMode::NormalCg
            },
            cg_iters: l.cg_iters,
            cg_ridge: l.cg_ridge,
            cg_rtol: l.cg_rtol,
            lodl: crate::lodl::LodlConfig {
                samples: l.lodl_samples,
                std_scale: l.lodl_std,
                fit: if l.lodl_fit == "exact" {
                    crate::lodl::LodlFit::Exact
                } else {
                    crate::lodl::LodlFit::Adam
                },
                fit_iters: l.lodl_fit_iters,
                lr: l.lodl_lr,
            },
        }
    }
}

impl Validate for TaskmetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let b = &self.budget;
        check(
            b.budget < b.items as f64,
            "budget.budget",
            b.budget,
            "must be below budget.items (otherwise every item gets everything)",
        )?;
        let c = &self.cubic;
        check(c.k < c.items, "cubic.k", c.k, "must be below cubic.items")?;
        let p = &self.portfolio;
        check(
            p.risk == "past" || p.window == PortfolioSection::default().window,
            "portfolio.window",
            p.window,
            "is used only with portfolio.risk = \"past\" (\"future\" takes the next 2-10 days' returns); leave it out",
        )?;
        check(
            (p.train_days + p.val_days + p.test_days) <= 8000,
            "portfolio.train_days",
            p.train_days,
            "train_days + val_days + test_days must be <= 8000 (the S&P 500 file has 8313 days)",
        )?;
        // A task runs only the methods that apply to it: a list with none would run nothing.
        let applies: Vec<&str> = if self.task.name == "cartpole" {
            crate::rl::ModelLoss::ALL.map(|m| m.name()).to_vec()
        } else {
            crate::learn::Method::ALL.map(|m| m.name()).to_vec()
        };
        check(
            self.task
                .methods
                .iter()
                .any(|m| applies.contains(&m.as_str())),
            "task.methods",
            self.task.methods.join(", "),
            &format!(
                "none of them applies to task.name = \"{}\" (its methods: {})",
                self.task.name,
                applies.join(", ")
            ),
        )?;
        let r = &self.cartpole;
        check(
            r.metric_floor == 0.0 || r.metric == "global",
            "cartpole.metric_floor",
            r.metric_floor,
            "applies to cartpole.metric = \"global\" only",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::TaskmetConfig;
    use ferrolab_core::config::load;

    fn loads(sets: &[&str]) -> Result<TaskmetConfig, String> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load::<TaskmetConfig>(None, &sets).map_err(|e| e.to_string())
    }

    #[test]
    fn a_method_list_with_nothing_for_the_task_is_refused_at_load() {
        for (task, methods) in [
            ("cartpole", r#"["dfl", "lodl"]"#),
            ("portfolio", r#"["omd"]"#),
            ("cubic", r#"["omd"]"#),
        ] {
            let e = loads(&[
                &format!("task.name={task}"),
                &format!("task.methods={methods}"),
            ])
            .err()
            .unwrap_or_default();
            assert!(
                e.contains("task.methods") && e.contains(task),
                "{task}: {e}"
            );
        }
        // One method that applies is enough; the others are skipped by the run.
        assert!(loads(&["task.name=cartpole", r#"task.methods=["dfl", "omd"]"#]).is_ok());
        assert!(loads(&["task.name=budget", r#"task.methods=["omd", "lodl"]"#]).is_ok());
    }

    #[test]
    fn the_past_window_is_refused_with_the_future_risk_it_would_not_shape() {
        assert!(loads(&["portfolio.risk=future"]).is_ok());
        assert!(loads(&["portfolio.window=100"]).is_ok());
        let e = loads(&["portfolio.risk=future", "portfolio.window=100"])
            .err()
            .unwrap_or_default();
        assert!(e.contains("portfolio.window") && e.contains("past"), "{e}");
        let e = loads(&["portfolio.risk=ahead"]).err().unwrap_or_default();
        assert!(e.contains("portfolio.risk"), "{e}");
    }
}
