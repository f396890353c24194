//! `ferrolab taskmet`'s experiment: the configured task's data and decision problem, every
//! method over the same seeds, splits and budgets, and the report.

use crate::config::TaskmetConfig;
use crate::decision::{BudgetAllocation, Portfolio};
use crate::finance::{self, PortfolioDataSpec};
use crate::learn::{self, Method};
use crate::problem::{DecisionProblem, Instances};
use crate::tasks::{self, BudgetSpec, CubicSpec};
use ferrolab_core::metrics::mean_std;
use ferrolab_core::run::{Curve, Outcome, Report};
use ferrolab_core::{Checked, RunContext, SysResult, SystemError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A task ready to train on.
pub struct Prepared {
    pub problem: Box<dyn DecisionProblem>,
    pub train: Instances,
    pub val: Instances,
    pub test: Instances,
    /// Dataset name in the report.
    pub dataset: String,
    pub notes: Vec<String>,
}

fn split(all: Instances, a: usize, b: usize) -> (Instances, Instances, Instances) {
    let n = all.len();
    (all.range(0, a), all.range(a, a + b), all.range(a + b, n))
}

/// Builds the configured task's data and decision problem. Bad data or settings that only the
/// data can refute (too few rows, a price series that makes a singular risk matrix) are usage
/// errors.
pub fn prepare(cfg: &TaskmetConfig, data_dir: Option<&Path>) -> SysResult<Prepared> {
    match cfg.task.name.as_str() {
        "portfolio" => {
            let p = &cfg.portfolio;
            let path = ferrolab_data::lookup::find_dataset(data_dir, "sp500")?;
            let table = ferrolab_data::prices::load_price_csv_gz(&path)?;
            let spec = PortfolioDataSpec {
                start: p.start.clone(),
                train_days: p.train_days,
                val_days: p.val_days,
                test_days: p.test_days,
                window: p.window,
                future_risk: p.risk == "future",
                reg: p.reg,
                covariance: p.risk_matrix == "covariance",
            };
            let data = finance::build(&table, &spec)
                .map_err(|e| SystemError::usage(format!("{}: {e}", path.display())))?;
            let first = data.dates.first().cloned().unwrap_or_default();
            let last = data.dates.last().cloned().unwrap_or_default();
            let problem = Portfolio::new(p.lambda, data.factors)
                .map_err(|e| SystemError::usage(format!("portfolio: {e}")))?;
            Ok(Prepared {
                problem: Box::new(problem),
                train: data.train,
                val: data.val,
                test: data.test,
                dataset: "sp500".into(),
                notes: vec![format!(
                    "portfolio: {} stocks, trading days {first} to {last} ({} train / {} val / {} test, chronological); {} (the {}'s factor, ridge {} of its mean diagonal)",
                    data.symbols.len(),
                    p.train_days,
                    p.val_days,
                    p.test_days,
                    if p.risk == "future" {
                        "risk factor from the next 2-10 days' returns after each instance (the reference's look-ahead)".to_string()
                    } else {
                        format!(
                            "risk factor from the {} days up to each instance (no look-ahead)",
                            p.window
                        )
                    },
                    p.risk_matrix,
                    p.reg
                )],
            })
        }
        "budget" => {
            let b = &cfg.budget;
            let spec = BudgetSpec {
                instances: b.train + b.val + b.test,
                items: b.items,
                targets: b.targets,
                budget: b.budget,
                density: b.density,
            };
            let task = tasks::budget_allocation(&spec, b.data_seed)
                .map_err(|e| SystemError::usage(format!("budget: {e}")))?;
            let problem: BudgetAllocation = task.problem;
            let (train, val, test) = split(task.data, b.train, b.val);
            Ok(Prepared {
                problem: Box::new(problem),
                train,
                val,
                test,
                dataset: "synthetic-budget".into(),
                notes: vec![format!(
                    "budget: synthetic reach probabilities (density {}, data seed {}), {} items x {} targets, budget {}",
                    b.density, b.data_seed, b.items, b.targets, b.budget
                )],
            })
        }
        _ => {
            let c = &cfg.cubic;
            let spec = CubicSpec {
                instances: c.train + c.val + c.test,
                items: c.items,
                k: c.k,
                epsilon: c.epsilon,
            };
            let task = tasks::cubic_topk(&spec, c.data_seed)
                .map_err(|e| SystemError::usage(format!("cubic: {e}")))?;
            let (train, val, test) = split(task.data, c.train, c.val);
            Ok(Prepared {
                problem: Box::new(task.problem),
                train,
                val,
                test,
                dataset: "synthetic-cubic".into(),
                notes: vec![format!(
                    "cubic: y = 10(x^3 - 0.65x), {} items, top-{}",
                    c.items, c.k
                )],
            })
        }
    }
}

/// One trained method on one seed, as saved in `units/<method>-run<i>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub method: String,
    pub run: usize,
    pub seed: u64,
    /// Normalised test decision quality `(DQ − DQ_random) / (DQ_optimal − DQ_random)`.
    pub test_dq: f64,
    /// Unnormalised mean test decision quality.
    pub test_dq_raw: f64,
    pub test_mse: f64,
    pub val_dq: f64,
    pub best_step: usize,
    pub steps_run: usize,
    pub seconds: f64,
    pub cg_solves: usize,
    pub cg_not_converged: usize,
    pub cg_max_rel_residual: f64,
    /// Validation DQ (raw) by step, for the curves.
    pub val_curve: Vec<(f64, f64)>,
    pub notes: Vec<String>,
}

fn train_one(
    cfg: &TaskmetConfig,
    prep: &Prepared,
    method: Method,
    run: usize,
    seed: u64,
) -> SysResult<RunResult> {
    let learn_cfg = cfg.learn_config();
    let label = format!("{} run {run}", method.name());
    let pb = ferrolab_core::progress::bar(learn_cfg.iters as u64, label);
    let mut curve = Vec::new();
    let trained = learn::train(
        method,
        prep.problem.as_ref(),
        &prep.train,
        &prep.val,
        &learn_cfg,
        seed,
        &mut |r| {
            pb.set_position(r.step as u64);
            curve.push((r.step as f64, r.val_dq));
        },
    )?;
    pb.finish_and_clear();
    let preds = learn::predict(&trained, &prep.test)?;
    let (dq_norm, dq, _, _) = tasks::normalised_dq(
        prep.problem.as_ref(),
        &prep.test,
        &preds,
        cfg.task.random_draws,
        seed ^ 0x5eed_d0a1,
    )
    .map_err(|e| SystemError::runtime(format!("normalised DQ: {e}")))?;
    let eval = learn::evaluate(&trained, prep.problem.as_ref(), &prep.test)?;
    // The learner's notes already report unconverged CG solves and capped inner solves, with
    // their residuals.
    let notes = trained
        .notes
        .iter()
        .map(|n| format!("{} run {run}: {n}", method.name()))
        .collect();
    Ok(RunResult {
        method: method.name().into(),
        run,
        seed,
        test_dq: dq_norm,
        test_dq_raw: dq,
        test_mse: eval.mse,
        val_dq: trained.best_val_dq,
        best_step: trained.best_step,
        steps_run: trained.steps_run,
        seconds: trained.wall_s,
        cg_solves: trained.cg.solves,
        cg_not_converged: trained.cg.not_converged,
        cg_max_rel_residual: trained.cg.max_rel_residual,
        val_curve: curve,
        notes,
    })
}

/// "met" only when the paired mean difference is positive; "within noise" when it is less than
/// two standard errors from zero, so a lucky mean over few seeds is not reported as a win.
fn verdict(mean: f64, std: f64, n: usize) -> &'static str {
    let se = std / (n.max(1) as f64).sqrt();
    if mean > 2.0 * se {
        "met"
    } else if mean > 0.0 {
        "met on the mean, within noise (< 2 standard errors)"
    } else {
        "missed"
    }
}

/// Runs every configured method over `task.seeds` runs; each (method, run) is a resumable unit.
pub fn run(cfg: &Checked<TaskmetConfig>, ctx: &mut RunContext) -> SysResult<Outcome> {
    let cfg: &TaskmetConfig = cfg;
    if cfg.task.name == "cartpole" {
        return crate::rl_experiment::run(cfg, ctx);
    }
    let prep = prepare(cfg, ctx.data_dir())?;
    let methods: Vec<Method> = cfg
        .task
        .methods
        .iter()
        .filter_map(|m| Method::parse(m))
        .collect();
    let mut results: Vec<RunResult> = Vec::new();
    for run in 0..cfg.task.seeds {
        // One seed per run, shared by the methods: the same initial predictor and batches.
        let seed = ctx.seed_for(&format!("run{run}"));
        for &m in &methods {
            let r = ctx.unit(&format!("{}-run{run}", m.name()), |ctx| {
                let r = train_one(cfg, &prep, m, run, seed)?;
                // metrics.jsonl: the validation curve (one line per evaluation), then the
                // finished run; inside the unit so that a resumed run does not log it twice.
                for &(step, val_dq_raw) in &r.val_curve {
                    ctx.log_metrics(&serde_json::json!({
                        "method": r.method, "run": run, "step": step, "val_dq_raw": val_dq_raw,
                    }))?;
                }
                ctx.log_metrics(&serde_json::json!({
                    "method": r.method, "run": run, "best_step": r.best_step,
                    "steps_run": r.steps_run, "test_dq": r.test_dq, "test_dq_raw": r.test_dq_raw,
                    "test_mse": r.test_mse, "seconds": r.seconds,
                }))?;
                Ok(r)
            })?;
            eprintln!(
                "{} {} run {run}: test DQ {:.4} (normalised), test MSE {:.3e}, {:.1} s",
                cfg.task.name, r.method, r.test_dq, r.test_mse, r.seconds
            );
            results.push(r);
        }
    }
    Ok(report(cfg, &prep, ctx.seed(), results))
}

fn report(cfg: &TaskmetConfig, prep: &Prepared, seed: u64, results: Vec<RunResult>) -> Outcome {
    let mut rep = Report::new("taskmet", &prep.dataset, seed);
    rep.config = serde_json::to_value(cfg).unwrap_or_default();
    let of = |m: &str| -> Vec<&RunResult> { results.iter().filter(|r| r.method == m).collect() };
    let mut notes = prep.notes.clone();
    if cfg.task.methods.iter().any(|m| m == "omd") {
        notes.push(format!(
            "omd skipped: it applies to cartpole only, not to {}",
            cfg.task.name
        ));
    }
    for m in ["mse", "dfl", "taskmet", "lodl"] {
        let rs = of(m);
        if rs.is_empty() {
            continue;
        }
        let mut keys = std::collections::BTreeMap::new();
        let (dq, dq_s) = mean_std(&rs.iter().map(|r| r.test_dq).collect::<Vec<_>>());
        let (mse, mse_s) = mean_std(&rs.iter().map(|r| r.test_mse).collect::<Vec<_>>());
        let (raw, raw_s) = mean_std(&rs.iter().map(|r| r.test_dq_raw).collect::<Vec<_>>());
        keys.insert("test_dq".to_string(), dq);
        keys.insert("test_dq_std".to_string(), dq_s);
        keys.insert("test_mse".to_string(), mse);
        keys.insert("test_mse_std".to_string(), mse_s);
        keys.insert("test_dq_raw".to_string(), raw);
        keys.insert("test_dq_raw_std".to_string(), raw_s);
        rep.timings.insert(
            format!("{m}_seconds"),
            rs.iter().map(|r| r.seconds).sum::<f64>(),
        );
        if m == "taskmet" {
            rep.metrics.extend(keys);
        } else {
            rep.baselines.insert(m.to_string(), keys);
        }
        for r in &rs {
            notes.extend(r.notes.iter().cloned());
        }
    }
    // Paired per seed: the same run index shares the seed, splits and initial predictor.
    let paired = |a: &str, b: &str| -> Option<(f64, f64, usize)> {
        let (xa, xb) = (of(a), of(b));
        let d: Vec<f64> = xa
            .iter()
            .filter_map(|ra| {
                xb.iter()
                    .find(|rb| rb.run == ra.run)
                    .map(|rb| ra.test_dq - rb.test_dq)
            })
            .collect();
        if d.is_empty() {
            return None;
        }
        let wins = d.iter().filter(|x| **x > 0.0).count();
        let (m, s) = mean_std(&d);
        Some((m, s, wins))
    };
    if let Some((m, s, wins)) = paired("taskmet", "mse") {
        rep.metrics.insert("dq_gain_vs_mse".into(), m);
        rep.metrics.insert("dq_gain_vs_mse_std".into(), s);
        let n = of("taskmet").len();
        notes.push(format!(
            "TaskMet - two-stage MSE, normalised test DQ paired per seed: {m:+.4} ± {s:.4} (TaskMet higher in {wins} of {n}); target > 0: {}",
            verdict(m, s, n)
        ));
    }
    if let Some((m, s, wins)) = paired("taskmet", "dfl") {
        rep.metrics.insert("dq_gain_vs_dfl".into(), m);
        rep.metrics.insert("dq_gain_vs_dfl_std".into(), s);
        let dfl_std = rep
            .baselines
            .get("dfl")
            .and_then(|b| b.get("test_dq_std"))
            .copied()
            .unwrap_or(0.0);
        let n = of("taskmet").len();
        notes.push(format!(
            "TaskMet - DFL, normalised test DQ paired per seed: {m:+.4} ± {s:.4} (TaskMet higher in {wins} of {n}); target TaskMet >= DFL - one std ({dfl_std:.4}): {}",
            if m >= -dfl_std { "met" } else { "missed" }
        ));
    }
    if let Some((m, s, wins)) = paired("taskmet", "lodl") {
        rep.metrics.insert("dq_gain_vs_lodl".into(), m);
        rep.metrics.insert("dq_gain_vs_lodl_std".into(), s);
        let n = of("taskmet").len();
        notes.push(format!(
            "TaskMet - LODL (weighted MSE), normalised test DQ paired per seed: {m:+.4} ± {s:.4} (TaskMet higher in {wins} of {n})"
        ));
    }
    if let (Some(t), Some(b)) = (
        rep.metrics.get("test_mse").copied(),
        rep.baselines
            .get("mse")
            .and_then(|b| b.get("test_mse"))
            .copied(),
    ) {
        let ratio = t / b;
        rep.metrics.insert("test_mse_ratio_vs_mse".into(), ratio);
        notes.push(format!(
            "TaskMet test MSE / two-stage MSE's: {ratio:.3}; target <= 1.10: {}",
            if ratio <= 1.10 { "met" } else { "missed" }
        ));
    }
    rep.notes = notes;
    rep.details = serde_json::json!({ "runs": results });
    let curves = results
        .iter()
        .map(|r| Curve {
            label: format!("{} run {}", r.method, r.run),
            y_name: "val_dq".into(),
            points: r.val_curve.clone(),
        })
        .collect();
    Outcome {
        report: rep,
        curves,
        paper: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolab_core::run::RunDir;

    /// The reference's CubicTopK (the `cubic` preset's sizes and budgets, 2 seeds): the report
    /// carries every key the issue names, and the task does what it is for — two-stage MSE
    /// picks worse than random (a cubic fitted by a line ranks the wrong end), TaskMet and DFL
    /// pick nearly the best item.
    #[test]
    fn cubic_top_k_reports_its_keys_and_mse_fails_where_taskmet_succeeds() {
        let mut c = TaskmetConfig::default();
        c.task.name = "cubic".into();
        c.task.seeds = 2;
        c.task.methods = vec!["mse".into(), "taskmet".into(), "dfl".into()];
        c.learn.iters = 1000;
        c.learn.width = 500;
        c.learn.inner_iters_first = 500;
        c.learn.inner_iters = 100;
        let cfg = Checked::new(c).unwrap();
        let d = std::env::temp_dir().join(format!("ferrolab-taskmet-cubic-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        let mut ctx = RunContext::new(0, 1, None, RunDir::create(&d).unwrap());
        let rep = run(&cfg, &mut ctx).unwrap().report;
        for table in [&rep.metrics, &rep.baselines["mse"], &rep.baselines["dfl"]] {
            for k in ["test_dq", "test_dq_std", "test_mse", "test_mse_std"] {
                assert!(
                    table.get(k).is_some_and(|v| v.is_finite()),
                    "{k}: {table:?}"
                );
            }
        }
        for m in ["mse", "taskmet", "dfl"] {
            assert!(
                rep.timings.contains_key(&format!("{m}_seconds")),
                "{:?}",
                rep.timings
            );
        }
        let mse = rep.baselines["mse"]["test_dq"];
        assert!(mse < 0.0, "two-stage MSE should fail on the cubic: {mse}");
        assert!(rep.metrics["test_dq"] > 0.9, "{:?}", rep.metrics);
        assert!(
            rep.baselines["dfl"]["test_dq"] > 0.9,
            "{:?}",
            rep.baselines["dfl"]
        );
        std::fs::remove_dir_all(&d).ok();
    }
}
