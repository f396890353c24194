//! `ferrolab taskmet`: the [`System`] implementation.

use crate::config::TaskmetConfig;
use crate::experiment;
use ferrolab_core::system::{Entry, Preset};
use ferrolab_core::{Checked, Outcome, RunContext, SysResult, System};

/// TaskMet against two-stage MSE and DFL on portfolio, budget allocation and cubic top-k.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskmetSystem;

impl System for TaskmetSystem {
    type Config = TaskmetConfig;

    fn name(&self) -> &'static str {
        "taskmet"
    }

    fn about(&self) -> &'static str {
        "TaskMet: a prediction loss whose metric is learned from the decision task, vs two-stage MSE and DFL (portfolio, budget, cubic top-k) and vs MSE and OMD models in model-based RL (CartPole with distractors)"
    }

    fn presets(&self) -> Vec<Preset> {
        vec![
            Preset {
                name: "quick",
                about: "every task at smoke size (task.name picks one; portfolio by default), 2 seeds",
                toml: include_str!("../../../configs/taskmet/quick.toml"),
            },
            Preset {
                name: "paper",
                about: "the reference's sizes and budgets for every task (task.name picks one), 5 seeds",
                toml: include_str!("../../../configs/taskmet/paper.toml"),
            },
            Preset {
                name: "portfolio",
                about: "portfolio on S&P 500 prices at the reference's sizes, 5 seeds",
                toml: include_str!("../../../configs/taskmet/portfolio.toml"),
            },
            Preset {
                name: "budget",
                about: "budget allocation at the reference's sizes, 5 seeds",
                toml: include_str!("../../../configs/taskmet/budget.toml"),
            },
            Preset {
                name: "cubic",
                about: "cubic top-k (the reference's toy where MSE fails), 5 seeds",
                toml: include_str!("../../../configs/taskmet/cubic.toml"),
            },
            Preset {
                name: "cartpole",
                about: "model-based RL on CartPole, k = 0/16/64/256 distractors, MSE / TaskMet / OMD models, 5 seeds (hours)",
                toml: include_str!("../../../configs/taskmet/cartpole.toml"),
            },
            Preset {
                name: "quick-cartpole",
                about: "reproduce --quick: CartPole, k = 0 and 16, one seed, a few thousand steps (< 1 min)",
                toml: include_str!("../../../configs/taskmet/quick-cartpole.toml"),
            },
            Preset {
                name: "quick-portfolio",
                about: "reproduce --quick: portfolio, 2 seeds, short budgets (< 1 min)",
                toml: include_str!("../../../configs/taskmet/quick-portfolio.toml"),
            },
            Preset {
                name: "quick-budget",
                about: "reproduce --quick: budget allocation, 2 seeds, short budgets (< 1 min)",
                toml: include_str!("../../../configs/taskmet/quick-budget.toml"),
            },
        ]
    }

    fn entries(&self) -> Vec<Entry> {
        vec![
            Entry {
                name: "taskmet-portfolio",
                what: "TaskMet vs two-stage MSE vs DFL vs LODL, portfolio on S&P 500 prices (normalised test DQ)",
                quick: "quick-portfolio",
                full: "portfolio",
            },
            Entry {
                name: "taskmet-budget",
                what: "TaskMet vs two-stage MSE vs DFL vs LODL, budget allocation (normalised test DQ)",
                quick: "quick-budget",
                full: "budget",
            },
            Entry {
                name: "taskmet-cartpole",
                what: "TaskMet vs MSE vs OMD dynamics models, CartPole return vs distractor count",
                quick: "quick-cartpole",
                full: "cartpole",
            },
        ]
    }

    fn datasets(&self, cfg: &TaskmetConfig) -> Vec<&'static str> {
        if cfg.task.name == "portfolio" {
            vec!["sp500"]
        } else {
            Vec::new()
        }
    }

    fn memory_estimate(
        &self,
        cfg: &TaskmetConfig,
        data_dir: Option<&std::path::Path>,
    ) -> Option<ferrolab_core::guard::MemoryEstimate> {
        // Features and targets in f32 and f64 copies, the predictor's activations over a whole
        // split (evaluation runs every row through the width-`learn.width` hidden layers), and
        // Λ for every training row.
        let (rows, d, o, n, setting) = match cfg.task.name.as_str() {
            "budget" => {
                let b = &cfg.budget;
                let n = b.train + b.val + b.test;
                (
                    b.items,
                    b.targets,
                    b.targets,
                    n,
                    format!("budget.test={}", b.test),
                )
            }
            "cartpole" => {
                // The replay buffer (observation, next observation, action, reward, done per
                // step, in f64) dominates; the nets are a few thousand weights.
                let c = &cfg.cartpole;
                let k = c.distractors.iter().copied().max().unwrap_or(0);
                let obs = (4 + k) as u64;
                let bytes = (c.steps as u64).saturating_mul(obs * 2 * 8 + 24);
                return Some(ferrolab_core::guard::MemoryEstimate {
                    setting: format!("cartpole.steps={}", c.steps),
                    bytes,
                });
            }
            "cubic" => {
                let c = &cfg.cubic;
                let n = c.train + c.val + c.test;
                (c.items, 1, 1, n, format!("cubic.test={}", c.test))
            }
            _ => {
                let p = &cfg.portfolio;
                let n = p.train_days + p.val_days + p.test_days;
                // Every column of the price file is a stock: count them from its header (the
                // bundled S&P 500 file has 20; a missing or unreadable file is prepare's to
                // report, so the estimate falls back to that).
                let stocks = ferrolab_data::lookup::find_dataset(data_dir, "sp500")
                    .ok()
                    .and_then(|f| ferrolab_data::prices::count_assets(f).ok())
                    .unwrap_or(20)
                    .max(1);
                (
                    stocks,
                    28,
                    1,
                    n,
                    format!(
                        "portfolio.test_days={} with {stocks} stocks in the price file",
                        p.test_days
                    ),
                )
            }
        };
        let all_rows = (n as u64).saturating_mul(rows as u64);
        let data = all_rows.saturating_mul((d + o) as u64 * 12);
        let acts = all_rows.saturating_mul(cfg.learn.width as u64 * 8 * 3);
        let metric = all_rows.saturating_mul((o * o + cfg.learn.metric_hidden) as u64 * 8);
        Some(ferrolab_core::guard::MemoryEstimate {
            setting,
            bytes: data.saturating_add(acts).saturating_add(metric),
        })
    }

    fn prepare(&self, cfg: &Checked<TaskmetConfig>, ctx: &RunContext) -> SysResult<()> {
        if cfg.task.name == "cartpole" {
            // Nothing to read or generate: the environment is simulated.
            return Ok(());
        }
        experiment::prepare(cfg, ctx.data_dir())?;
        Ok(())
    }

    fn run(&self, cfg: &Checked<TaskmetConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
        experiment::run(cfg, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::System;

    /// The portfolio estimate counts the stocks of the price file it will read: a file of 500
    /// stocks costs 25× one of 20 (the estimate is linear in the stocks).
    #[test]
    fn the_portfolio_estimate_counts_the_price_files_stocks() {
        let root = std::env::temp_dir().join(format!("fl-dfl-guard-{}", std::process::id()));
        let dir = root.join("finance");
        std::fs::create_dir_all(&dir).unwrap();
        let header = |n: usize| {
            let cols: Vec<String> = (0..n).map(|i| format!("S{i}")).collect();
            format!(
                "Date,{}\n2020-01-02,{}\n",
                cols.join(","),
                vec!["1"; n].join(",")
            )
        };
        let file = dir.join("sp500_dataset.csv.gz");
        let cfg = TaskmetConfig::default();
        let mut bytes = Vec::new();
        for n in [20, 500] {
            std::fs::write(&file, header(n)).unwrap();
            let e = TaskmetSystem.memory_estimate(&cfg, Some(&root)).unwrap();
            assert!(e.setting.contains(&format!("{n} stocks")), "{}", e.setting);
            bytes.push(e.bytes);
        }
        assert_eq!(bytes[1], bytes[0] * 25);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
