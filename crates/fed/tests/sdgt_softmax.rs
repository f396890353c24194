//! SD-GT on a strongly convex softmax regression with the reference's extreme label skew
//! (rows sorted by label, contiguous chunks: every device holds one class, the two subnets
//! hold disjoint classes) and full-batch gradients, with the schedule (T = 5 D2D
//! steps per round, s = half of each subnet, x̄ and y_c to the sampled devices only).
//! Nothing is stochastic, so the centralised optimum x* is a fixed point of gradient tracking:
//! SD-GT and GT must converge to it, SD-FedAvg must not (its fixed point is biased by the
//! heterogeneity). Unlike the quadratic test (`sdgt_quadratic.rs`) the device Hessians differ
//! and depend on x, as in the Fashion-MNIST runs.

#![allow(clippy::unwrap_used)]

use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::sdgt::algo::{Algo, Hyper};
use ferrolab_fed::sdgt::costmodel::CostModel;
use ferrolab_fed::sdgt::driver::{RunData, RunSpec, run};
use ferrolab_fed::sdgt::model::{FlatModel, Logistic, Samples};
use ferrolab_fed::topology::Topology;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::sync::Arc;

const DEVICES: usize = 8;
const SUBNETS: usize = 2;
const CLASSES: usize = 4;
const FEATURES: usize = 6;
const ROWS: usize = 16;

fn model() -> Logistic {
    Logistic {
        dim_in: FEATURES,
        classes: CLASSES,
        l2: 0.05,
    }
}

/// Gaussian classes; rows in label order, so device d (rows d·ROWS..) holds class d / 2.
fn problem() -> RunData {
    let mut rng = StdRng::seed_from_u64(3);
    let means: Vec<Vec<f32>> = (0..CLASSES)
        .map(|_| {
            (0..FEATURES)
                .map(|_| rng.random::<f32>() * 2.0 - 1.0)
                .collect()
        })
        .collect();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for d in 0..DEVICES {
        let c = d * CLASSES / DEVICES;
        for _ in 0..ROWS {
            for m in &means[c] {
                x.push(m + 0.8 * (rng.random::<f32>() - 0.5));
            }
            y.push(c as u8);
        }
    }
    let data = Arc::new(Samples {
        x,
        y,
        dim: FEATURES,
        classes: CLASSES,
    });
    let mut trng = StdRng::seed_from_u64(7);
    let topo = Topology::build(DEVICES, SUBNETS, None, &mut trng).unwrap();
    let gt = Topology::build(DEVICES, 1, None, &mut trng).unwrap();
    RunData {
        model: Arc::new(model()),
        train: Arc::clone(&data),
        parts: Arc::new(
            (0..DEVICES)
                .map(|d| (d * ROWS..(d + 1) * ROWS).collect())
                .collect(),
        ),
        val: Arc::clone(&data),
        test: data,
        topo: Arc::new(topo),
        gt_topo: Arc::new(gt),
        x0: Arc::new(vec![0.0; model().dim()]),
        state_dir: None,
    }
}

/// x* by gradient descent on the pooled rows (equal chunks: the pooled mean is the mean of
/// the devices' means), to a gradient norm far below what the assertions resolve.
fn optimum(data: &RunData) -> Vec<f32> {
    let m = model();
    let rows: Vec<usize> = (0..DEVICES * ROWS).collect();
    let mut x = vec![0f32; m.dim()];
    let mut g = vec![0f32; m.dim()];
    for _ in 0..20_000 {
        m.loss_grad(&x, &data.train, &rows, &mut g);
        x.iter_mut().zip(&g).for_each(|(a, b)| *a -= 0.5 * b);
    }
    m.loss_grad(&x, &data.train, &rows, &mut g);
    let gn = g.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(gn < 1e-5, "centralised GD did not converge: ‖∇f‖ = {gn}");
    x
}

fn spec(algo: Algo, lr: f64, rounds: u64) -> RunSpec {
    RunSpec {
        hyper: Hyper {
            algo,
            lr,
            t: 5,
            batch: ROWS,
        },
        s: 2,
        rounds,
        seed: 5,
        eval_every: rounds,
        checkpoint_every: 0,
        devices_per_client: 2,
        deadline_seconds: 30.0,
        cost: CostModel {
            lambda: [1.0, 1.0, 0.05],
            energy: 1.0,
            delta: 0.02,
            max_t: 49,
        },
        coopt_every: 0,
    }
}

fn rel_dist(w: &[f32], xs: &[f32]) -> f64 {
    let d: f64 = w
        .iter()
        .zip(xs)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let n: f64 = xs.iter().map(|b| (*b as f64).powi(2)).sum();
    (d / n).sqrt()
}

fn dist(data: &RunData, xs: &[f32], algo: Algo, lr: f64, rounds: u64) -> f64 {
    let out = run(
        &spec(algo, lr, rounds),
        data,
        Arc::new(InProcFabric::new()),
        &mut |_| {},
    )
    .unwrap();
    rel_dist(&out.final_params, xs)
}

#[test]
fn label_sorted_softmax_sdgt_reaches_the_centralised_optimum() {
    let data = problem();
    let xs = optimum(&data);
    let sdgt = dist(&data, &xs, Algo::SdGt, 0.2, 400);
    let fedavg = dist(&data, &xs, Algo::SdFedAvg, 0.2, 400);
    let gt = dist(&data, &xs, Algo::Gt, 0.2, 400);
    assert!(sdgt < 1e-3, "SD-GT should reach x*: ‖x̄ − x*‖/‖x*‖ = {sdgt}");
    assert!(gt < 1e-3, "GT should reach x*: ‖x̄ − x*‖/‖x*‖ = {gt}");
    assert!(
        fedavg > 1e-2,
        "SD-FedAvg should stall away from x* under label skew: {fedavg}"
    );
}

/// A step size so large that every device's local iterate overflows within a round: every
/// reply is non-finite, which is the run diverging (so the grid search records it and moves
/// on), not a federation whose clients all failed.
#[test]
fn a_step_size_that_overflows_every_device_is_divergence() {
    let data = problem();
    for algo in [Algo::SdGt, Algo::SdFedAvg, Algo::Scaffold] {
        let e = run(
            &spec(algo, 1e30, 3),
            &data,
            Arc::new(InProcFabric::new()),
            &mut |_| {},
        )
        .err()
        .unwrap();
        assert!(
            matches!(
                e,
                ferrolab_fed::sdgt::driver::RunError::Diverged { round: 0, .. }
            ),
            "{algo:?}: {e}"
        );
    }
}
