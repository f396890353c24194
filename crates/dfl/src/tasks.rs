//! Synthetic TaskMet tasks (the cubic top-k and budget-allocation domains of the reference,
//! `bamos/taskmet` `LODLs/`), and the reference's normalised decision quality.
//!
//! Every generator is deterministic in its seed and returns all instances in one
//! [`Instances`] with ids `0..n`; splitting into train/validation/test is the caller's. (The
//! reference draws its train and test sets from two seeds derived from one; a single stream
//! here is the same distribution.)

use crate::decision::{BudgetAllocation, DecisionError, TopK};
use crate::problem::{DecisionProblem, Instances};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rayon::prelude::*;

/// Generated instances and the decision problem that goes with them.
#[derive(Debug, Clone)]
pub struct Task<P> {
    pub data: Instances,
    pub problem: P,
}

/// `config/problem/cubic.yaml`: 400 train (half of it validation) + 400 test instances of 50
/// items, pick 1.
#[derive(Debug, Clone, PartialEq)]
pub struct CubicSpec {
    pub instances: usize,
    pub items: usize,
    pub k: usize,
    /// Soft top-k regularisation for training gradients.
    pub epsilon: f64,
}

impl Default for CubicSpec {
    fn default() -> Self {
        CubicSpec {
            instances: 800,
            items: 50,
            k: 1,
            epsilon: TopK::REFERENCE_EPSILON,
        }
    }
}

/// `CubicTopK.py`: per item one feature `x ~ U[−1, 1)` and target `y = 10(x³ − 0.65x)`
/// (`rows = items`, `d = o = 1`). A linear predictor (the reference's `layers: 1`) cannot fit
/// the cubic, which is what makes the task's metric matter: the top item is near `x = 1`, but
/// the least-squares line has slope −0.5 and ranks the `x = −1` end (the worst items) first.
pub fn cubic_topk(spec: &CubicSpec, seed: u64) -> Result<Task<TopK>, DecisionError> {
    let problem = TopK::new(spec.items, spec.k, spec.epsilon)?;
    if spec.instances == 0 {
        return Err(DecisionError::param("instances", "need at least one"));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let len = spec.instances * spec.items;
    let x: Vec<f64> = (0..len).map(|_| 2.0 * rng.random::<f64>() - 1.0).collect();
    let y = x
        .iter()
        .map(|x| 10.0 * (x.powi(3) - 0.65 * x))
        .collect::<Vec<f64>>();
    Ok(Task {
        data: Instances {
            rows: spec.items,
            d: 1,
            o: 1,
            x: x.iter().map(|&v| v as f32).collect(),
            y: y.iter().map(|&v| v as f32).collect(),
            ids: (0..spec.instances).collect(),
        },
        problem,
    })
}

/// `config/problem/advertising.yaml`: 100 train (a fifth of it validation) + 500 test
/// instances, 5 items, 10 targets, budget 2, no fake (noise) targets.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSpec {
    pub instances: usize,
    pub items: usize,
    pub targets: usize,
    pub budget: f64,
    /// Fraction of nonzero item–target reach probabilities.
    pub density: f64,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        BudgetSpec {
            instances: 600,
            items: 5,
            targets: 10,
            budget: 2.0,
            density: 0.5,
        }
    }
}

/// Budget allocation instances, `rows = items`, `d = o = targets` (see
/// [`crate::decision::budget`] for the layout).
///
/// Targets: the reference samples each instance's `items × targets` block (rows and columns
/// with replacement) from a real reach-probability matrix (`budget_allocation_data.pkl`, from
/// Wilder et al. 2019) that is not available here. Since that sampling makes entries close to
/// i.i.d. draws from the matrix's marginal, entries here are i.i.d. sparse probabilities:
/// `Y_it = U(0, 1)` with probability `density`, else 0 — an assumed stand-in for the real
/// marginal, not a fit to it.
///
/// Features, as `_generate_features` with `num_fake_targets = 0`: standardise each target
/// column over all `(instance, item)` rows (unbiased std, `+1e-10`), then apply one fixed
/// random affine map `x = W ŷ_std + b` shared by all instances, `W` (`targets × targets`) and
/// `b` drawn `U(−1/√targets, 1/√targets)` as PyTorch initialises the reference's
/// `nn.Linear`. (The reference standardises its train and test sets separately, each with its
/// own statistics; here one set gets one standardisation.)
pub fn budget_allocation(
    spec: &BudgetSpec,
    seed: u64,
) -> Result<Task<BudgetAllocation>, DecisionError> {
    let problem = BudgetAllocation::new(spec.items, spec.targets, spec.budget)?;
    if spec.instances == 0 {
        return Err(DecisionError::param("instances", "need at least one"));
    }
    if !(spec.density > 0.0 && spec.density <= 1.0) {
        return Err(DecisionError::param(
            "density",
            format!("{} not in (0, 1]", spec.density),
        ));
    }
    let (rows, nt) = (spec.instances * spec.items, spec.targets);
    let mut rng = StdRng::seed_from_u64(seed);
    let y: Vec<f64> = (0..rows * nt)
        .map(|_| {
            let on = rng.random::<f64>() < spec.density;
            let v = rng.random::<f64>();
            if on { v } else { 0.0 }
        })
        .collect();
    let bound = 1.0 / (nt as f64).sqrt();
    let w: Vec<f64> = (0..nt * nt)
        .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
        .collect();
    let b: Vec<f64> = (0..nt)
        .map(|_| bound * (2.0 * rng.random::<f64>() - 1.0))
        .collect();
    let mut mean = vec![0.0; nt];
    let mut sd = vec![0.0; nt];
    for t in 0..nt {
        let col = (0..rows).map(|r| y[r * nt + t]);
        mean[t] = col.clone().sum::<f64>() / rows as f64;
        let ss: f64 = col.map(|v| (v - mean[t]).powi(2)).sum();
        // torch.std is the unbiased estimator; one row has no spread to estimate.
        sd[t] = if rows > 1 {
            (ss / (rows - 1) as f64).sqrt()
        } else {
            0.0
        };
    }
    let mut x = Vec::with_capacity(rows * nt);
    for r in 0..rows {
        let ys: Vec<f64> = (0..nt)
            .map(|t| (y[r * nt + t] - mean[t]) / (sd[t] + 1e-10))
            .collect();
        for o in 0..nt {
            let v = b[o] + (0..nt).map(|i| w[o * nt + i] * ys[i]).sum::<f64>();
            x.push(v as f32);
        }
    }
    Ok(Task {
        data: Instances {
            rows: spec.items,
            d: nt,
            o: nt,
            x,
            y: y.iter().map(|&v| v as f32).collect(),
            ids: (0..spec.instances).collect(),
        },
        problem,
    })
}

/// The reference's normalised decision quality (`Workspace.test` / `Workspace.DQ` in
/// `LODLs/workspace.py`): `(dq − random) / (optimal − random)`, returned as
/// `(dq_norm, dq, dq_random, dq_optimal)`, where
/// - `dq`: mean over instances of `quality(decide(ŷ_i), y_i)` for the given predictions
///   (`preds`, `len · rows · o` values in [`Instances::y`] order);
/// - `dq_random`: the same for predictions drawn `U[0, 1)` per entry (`torch.rand_like`),
///   averaged over `random_preds_draws` draws (the reference uses 10), from `seed`;
/// - `dq_optimal`: the same for the true targets as predictions. (The reference averages 10
///   repeats because its budget solver starts at a random point; decisions here are
///   deterministic, so one suffices.)
///
/// `dq_norm` is NaN when `optimal == random`. Decisions use [`DecisionProblem::decide`] (the
/// reference's test-time decisions: hard top-k for the cubic task).
pub fn normalised_dq<P: DecisionProblem + ?Sized>(
    problem: &P,
    data: &Instances,
    preds: &[f64],
    random_preds_draws: usize,
    seed: u64,
) -> Result<(f64, f64, f64, f64), DecisionError> {
    let per = data.rows * data.o;
    let n = data.len();
    if n == 0 || per == 0 {
        return Err(DecisionError::param(
            "data",
            "no instances or empty instances",
        ));
    }
    if data.y.len() != n * per {
        return Err(DecisionError::Shape {
            what: "data.y",
            expected: n * per,
            got: data.y.len(),
        });
    }
    if preds.len() != n * per {
        return Err(DecisionError::Shape {
            what: "preds",
            expected: n * per,
            got: preds.len(),
        });
    }
    if random_preds_draws == 0 {
        return Err(DecisionError::param(
            "random_preds_draws",
            "need at least one",
        ));
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let random: Vec<f64> = (0..random_preds_draws * n * per)
        .map(|_| rng.random::<f64>())
        .collect();
    let per_instance: Vec<(f64, f64, f64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let id = data.ids[i];
            let y: Vec<f64> = data.y_of(i).iter().map(|&v| f64::from(v)).collect();
            let q = |yhat: &[f64]| problem.quality(id, &problem.decide(id, yhat), &y);
            let dq = q(&preds[i * per..(i + 1) * per]);
            let rnd = (0..random_preds_draws)
                .map(|k| {
                    let s = (k * n + i) * per;
                    q(&random[s..s + per])
                })
                .sum::<f64>()
                / random_preds_draws as f64;
            (dq, rnd, q(&y))
        })
        .collect();
    let mean = |f: fn(&(f64, f64, f64)) -> f64| per_instance.iter().map(f).sum::<f64>() / n as f64;
    let (dq, random, optimal) = (mean(|v| v.0), mean(|v| v.1), mean(|v| v.2));
    let norm = if optimal == random {
        f64::NAN
    } else {
        (dq - random) / (optimal - random)
    };
    Ok((norm, dq, random, optimal))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Portfolio;

    #[test]
    fn cubic_data_follow_the_reference_formula_and_seed() {
        let spec = CubicSpec {
            instances: 20,
            ..CubicSpec::default()
        };
        let a = cubic_topk(&spec, 3).expect("valid spec");
        let b = cubic_topk(&spec, 3).expect("valid spec");
        let c = cubic_topk(&spec, 4).expect("valid spec");
        assert_eq!(a.data.x, b.data.x);
        assert_ne!(a.data.x, c.data.x);
        assert_eq!(
            (a.data.rows, a.data.d, a.data.o, a.data.len()),
            (50, 1, 1, 20)
        );
        for (x, y) in a.data.x.iter().zip(&a.data.y) {
            let x = f64::from(*x);
            assert!((-1.0..1.0).contains(&x));
            assert!((f64::from(*y) - 10.0 * (x.powi(3) - 0.65 * x)).abs() < 1e-5);
        }
        let mean = a.data.x.iter().map(|&v| f64::from(v)).sum::<f64>() / 1000.0;
        assert!(mean.abs() < 0.1, "x not centred: {mean}");
    }

    #[test]
    fn budget_features_are_a_fixed_affine_map_of_standardised_targets() {
        let spec = BudgetSpec {
            instances: 40,
            ..BudgetSpec::default()
        };
        let task = budget_allocation(&spec, 5).expect("valid spec");
        let d = &task.data;
        assert_eq!((d.rows, d.d, d.o, d.len()), (5, 10, 10, 40));
        let zeros = d.y.iter().filter(|&&v| v == 0.0).count() as f64 / d.y.len() as f64;
        assert!((zeros - 0.5).abs() < 0.08, "density off: {zeros}");
        assert!(d.y.iter().all(|v| (0.0..1.0).contains(v)));
        // The features are exactly affine in the targets: least squares of each feature on
        // (1, y) leaves no residual beyond f32 rounding.
        let rows = d.len() * d.rows;
        let mut max_resid = 0.0_f64;
        for o in 0..10 {
            // Solve the normal equations for x_o ≈ c + Σ_t a_t y_t.
            let k = 11;
            let mut ata = vec![0.0; k * k];
            let mut atb = vec![0.0; k];
            for r in 0..rows {
                let feat: Vec<f64> = std::iter::once(1.0)
                    .chain((0..10).map(|t| f64::from(d.y[r * 10 + t])))
                    .collect();
                for p in 0..k {
                    for q in 0..k {
                        ata[p * k + q] += feat[p] * feat[q];
                    }
                    atb[p] += feat[p] * f64::from(d.x[r * 10 + o]);
                }
            }
            crate::decision::linalg::lu_solve(ata, k, &mut atb).expect("full rank");
            for r in 0..rows {
                let pred = atb[0]
                    + (0..10)
                        .map(|t| atb[t + 1] * f64::from(d.y[r * 10 + t]))
                        .sum::<f64>();
                max_resid = max_resid.max((pred - f64::from(d.x[r * 10 + o])).abs());
            }
        }
        assert!(
            max_resid < 1e-4,
            "features are not affine in the targets: {max_resid}"
        );
    }

    #[test]
    fn normalised_dq_is_one_for_truth_and_zero_for_random_level_predictions() {
        let spec = CubicSpec {
            instances: 30,
            ..CubicSpec::default()
        };
        let task = cubic_topk(&spec, 1).expect("valid spec");
        let truth: Vec<f64> = task.data.y.iter().map(|&v| f64::from(v)).collect();
        let (norm, dq, random, optimal) =
            normalised_dq(&task.problem, &task.data, &truth, 10, 0).expect("valid shapes");
        assert_eq!(dq, optimal);
        assert!((norm - 1.0).abs() < 1e-12);
        // Best of 50 cubic values is large; a random pick averages near the mean of y (~0).
        assert!(
            optimal > 2.0 && random.abs() < 0.6,
            "optimal {optimal}, random {random}"
        );
        // Anti-predictions pick the worst item: far below random.
        let anti: Vec<f64> = truth.iter().map(|v| -v).collect();
        let (norm, ..) = normalised_dq(&task.problem, &task.data, &anti, 10, 0).expect("valid");
        assert!(norm < -1.0, "{norm}");
        // Draws from the random baseline itself score near 0.
        let mut rng = StdRng::seed_from_u64(99);
        let rand_preds: Vec<f64> = (0..truth.len()).map(|_| rng.random::<f64>()).collect();
        let (norm, ..) = normalised_dq(&task.problem, &task.data, &rand_preds, 10, 0).expect("ok");
        assert!(norm.abs() < 0.35, "{norm}");
        // Uses each instance's id to find its data.
        let p = Portfolio::new(0.1, vec![vec![1.0], vec![2.0]]).expect("valid");
        let single = Instances {
            rows: 1,
            d: 1,
            o: 1,
            x: vec![0.0; 2],
            y: vec![0.5, 0.5],
            ids: vec![0, 1],
        };
        let (_, dq, ..) = normalised_dq(&p, &single, &[0.0, 0.0], 1, 0).expect("valid");
        // quality = y − λ L² for z = 1: (0.5 − 0.1 + 0.5 − 0.4) / 2.
        assert!((dq - 0.25).abs() < 1e-12, "{dq}");
    }

    #[test]
    fn normalised_dq_rejects_bad_shapes() {
        let task = cubic_topk(
            &CubicSpec {
                instances: 2,
                ..CubicSpec::default()
            },
            0,
        )
        .expect("valid spec");
        assert!(normalised_dq(&task.problem, &task.data, &[0.0; 99], 10, 0).is_err());
        assert!(normalised_dq(&task.problem, &task.data, &[0.0; 100], 0, 0).is_err());
        assert!(
            budget_allocation(
                &BudgetSpec {
                    density: 0.0,
                    ..BudgetSpec::default()
                },
                0
            )
            .is_err()
        );
        assert!(
            cubic_topk(
                &CubicSpec {
                    k: 50,
                    ..CubicSpec::default()
                },
                0
            )
            .is_err()
        );
    }
}
