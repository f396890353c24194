//! Tells an algorithm defect from a step-size matter, cheaply: softmax regression on the
//! label-sorted Fashion-MNIST split (the CNN comparison's partition and topology), with every
//! device taking **full-batch** gradients, so nothing is stochastic. There the centralised
//! optimum x* of `(1/N) Σ_i f_i` is the fixed point of gradient tracking: SD-GT, GT and
//! SCAFFOLD must drive ‖x̄ − x*‖ to float precision at any step size inside their stability
//! region, while SD-FedAvg and FedAvg must stall at a distance set by the heterogeneity.
//! An SD-GT that stalls (or drifts like SD-FedAvg) here has a wrong update; one that converges
//! here but diverges above some γ·L has a smaller stable step than its baselines.
//!
//! ```text
//! cargo run --release -p ferrolab-fed --example sdgt_convex_check -- [--lrs 0.3,1,3] \
//!     [--algos sdgt,sd_fedavg,scaffold,gt] [--rounds 200] [--eval-every 10] [--t 5] [--s 2] \
//!     [--batch 0] [--train-limit 4000] [--l2 0.01] [--scale 0.0357] [--tol 2e-6] [--seed 0] [--threads 1]
//! ```
//!
//! `--batch 0` is full batch (the partition's chunks must then be equal: `--train-limit` a
//! multiple of 40). Features are the standardised pixels times `--scale` (1/28 makes ‖x‖ ≈ 1,
//! so the curvature L is O(0.1) and a few hundred rounds show linear convergence); `--l2` is
//! the strong convexity. x* comes from centralised Nesterov descent on the pooled rows (to a
//! gradient norm of `--tol`), and L from power iteration on Hessian-vector products at x*. Each evaluated
//! round prints one JSON line: `rel_dist` = ‖x̄ − x*‖ / ‖x*‖ and the test accuracy of x̄.

use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::params::Params;
use ferrolab_fed::sdgt::algo::Algo;
use ferrolab_fed::sdgt::config::SdgtConfig;
use ferrolab_fed::sdgt::data as part;
use ferrolab_fed::sdgt::driver::{self, RunData, RunError};
use ferrolab_fed::sdgt::experiment;
use ferrolab_fed::sdgt::model::{FlatModel, Logistic, Samples};
use ferrolab_vision::data::Normalization;
use std::sync::Arc;
use std::time::Instant;

fn usage(msg: &str) -> ! {
    eprintln!("error: {msg}");
    eprintln!(
        "usage: sdgt_convex_check [--lrs X,Y] [--algos A,B] [--rounds N] [--eval-every N] \
         [--t N] [--s N] [--batch N (0 = full)] [--train-limit N] [--l2 X] [--scale X] [--tol X] \
         [--split sorted|iid] [--seed N] [--threads N]"
    );
    std::process::exit(2)
}

/// Logistic regression whose `evaluate` loss is the relative distance to x* (the driver
/// reports it as `test_loss`), its accuracy the real one.
struct Tracked {
    inner: Logistic,
    xstar: Vec<f32>,
    norm: f64,
}

fn rel_dist(w: &[f32], xstar: &[f32], norm: f64) -> f64 {
    w.iter()
        .zip(xstar)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
        / norm
}

impl FlatModel for Tracked {
    fn name(&self) -> &str {
        "logreg"
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn template(&self) -> Params {
        self.inner.template()
    }
    fn init(&self, seed: u64) -> Vec<f32> {
        self.inner.init(seed)
    }
    fn loss_grad(&self, w: &[f32], data: &Samples, idx: &[usize], grad: &mut [f32]) -> f64 {
        self.inner.loss_grad(w, data, idx, grad)
    }
    fn evaluate(&self, w: &[f32], data: &Samples) -> (f64, f64) {
        (
            rel_dist(w, &self.xstar, self.norm),
            self.inner.evaluate(w, data).1,
        )
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

/// Böhning's bound on the softmax cross-entropy curvature: `½ λmax(E[x̃x̃ᵀ]) + l2` with
/// x̃ = (1, x), λmax by power iteration on the pooled rows.
fn curvature_bound(m: &Logistic, data: &Samples, rows: &[usize]) -> f64 {
    let d = m.dim_in + 1;
    let mut v = vec![1.0f64; d];
    let mut lambda = 0.0;
    for _ in 0..50 {
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        let mut out = vec![0.0f64; d];
        for &i in rows {
            let x = data.row(i);
            let dotv = v[0]
                + x.iter()
                    .zip(&v[1..])
                    .map(|(a, b)| *a as f64 * b)
                    .sum::<f64>();
            out[0] += dotv;
            out[1..]
                .iter_mut()
                .zip(x)
                .for_each(|(o, a)| *o += dotv * *a as f64);
        }
        out.iter_mut().for_each(|o| *o /= rows.len() as f64);
        lambda = out.iter().zip(&v).map(|(a, b)| a * b).sum::<f64>();
        v = out;
    }
    0.5 * lambda + m.l2
}

/// Minimiser of the pooled objective by Nesterov's method for strongly convex functions
/// (step 1/L̂ with L̂ from [`curvature_bound`], momentum from κ = L̂/μ), to a gradient norm of
/// `tol`. Function values are not used: near x* their f32 rounding hides the decrease.
fn centralised_optimum(m: &Logistic, data: &Samples, rows: &[usize], tol: f64) -> (Vec<f32>, f64) {
    let dim = m.dim();
    let lh = curvature_bound(m, data, rows);
    let kappa = lh / m.l2.max(1e-12);
    let beta = ((kappa.sqrt() - 1.0) / (kappa.sqrt() + 1.0)) as f32;
    let eta = (1.0 / lh) as f32;
    let (mut x, mut prev) = (vec![0f32; dim], vec![0f32; dim]);
    let mut g = vec![0f32; dim];
    let mut gn = f64::INFINITY;
    for it in 0..50_000 {
        let y: Vec<f32> = x
            .iter()
            .zip(&prev)
            .map(|(a, b)| a + beta * (a - b))
            .collect();
        m.loss_grad(&y, data, rows, &mut g);
        gn = norm(&g);
        if gn < tol {
            eprintln!(
                "x*: {it} Nesterov iterations (L̂ = {lh:.4}, κ = {kappa:.0}), ‖∇f‖ = {gn:.2e}"
            );
            return (y, gn);
        }
        prev = std::mem::replace(&mut x, y.iter().zip(&g).map(|(a, b)| a - eta * b).collect());
    }
    eprintln!("x*: stopped after 50000 iterations, ‖∇f‖ = {gn:.2e}");
    (x, gn)
}

/// Largest Hessian eigenvalue at `x` by power iteration on finite-difference products.
fn curvature(m: &Logistic, data: &Samples, rows: &[usize], x: &[f32]) -> f64 {
    let dim = m.dim();
    let mut g0 = vec![0f32; dim];
    m.loss_grad(x, data, rows, &mut g0);
    let mut v: Vec<f32> = (0..dim).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
    let mut lambda = 0.0;
    let mut g1 = vec![0f32; dim];
    for _ in 0..30 {
        let n = norm(&v) as f32;
        v.iter_mut().for_each(|a| *a /= n);
        let eps = 1e-2f32;
        let xp: Vec<f32> = x.iter().zip(&v).map(|(a, b)| a + eps * b).collect();
        m.loss_grad(&xp, data, rows, &mut g1);
        let hv: Vec<f32> = g1.iter().zip(&g0).map(|(a, b)| (a - b) / eps).collect();
        lambda = hv.iter().zip(&v).map(|(a, b)| (a * b) as f64).sum::<f64>();
        v = hv;
    }
    lambda
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = SdgtConfig::default();
    cfg.data.test_limit = 2000;
    cfg.data.val_size = 1000;
    cfg.data.train_limit = 4000;
    cfg.model.l2 = 1e-2;
    cfg.fed.rounds = 200;
    cfg.fed.eval_every = 10;
    cfg.fed.checkpoint_every = 0;
    let mut lrs = vec![0.3f64, 1.0, 3.0];
    let mut algos = vec![Algo::SdGt, Algo::SdFedAvg, Algo::Scaffold, Algo::Gt];
    let (mut batch, mut scale, mut seed, mut threads) = (0usize, 1.0f32 / 28.0, 0u64, 1usize);
    let mut tol = 2e-6f64;
    let mut split = "sorted".to_string();
    let mut i = 0;
    while i < args.len() {
        let val = args
            .get(i + 1)
            .cloned()
            .unwrap_or_else(|| usage(&format!("{} needs a value", args[i])));
        let num = || -> u64 {
            val.parse()
                .unwrap_or_else(|_| usage(&format!("{} takes an integer", args[i])))
        };
        let pos = || -> f64 {
            val.parse()
                .ok()
                .filter(|x: &f64| *x > 0.0 && x.is_finite())
                .unwrap_or_else(|| usage(&format!("{} takes a positive number", args[i])))
        };
        match args[i].as_str() {
            "--lrs" => {
                lrs = val
                    .split(',')
                    .map(|s| {
                        s.parse()
                            .ok()
                            .filter(|x: &f64| *x > 0.0 && x.is_finite())
                            .unwrap_or_else(|| usage("--lrs takes positive numbers"))
                    })
                    .collect()
            }
            "--algos" => {
                algos = val
                    .split(',')
                    .map(|s| {
                        Algo::parse(s).unwrap_or_else(|| usage(&format!("unknown algorithm `{s}`")))
                    })
                    .collect()
            }
            "--rounds" => cfg.fed.rounds = num().max(1),
            "--eval-every" => cfg.fed.eval_every = num().max(1),
            "--t" => cfg.fed.local_steps = num().max(1) as usize,
            "--s" => cfg.fed.s = num() as usize,
            "--batch" => batch = num() as usize,
            "--train-limit" => cfg.data.train_limit = num() as usize,
            "--l2" => cfg.model.l2 = pos(),
            "--scale" => scale = pos() as f32,
            "--tol" => tol = pos(),
            "--split" => split = val.clone(),
            "--seed" => seed = num(),
            "--threads" => threads = num().max(1) as usize,
            other => usage(&format!("unknown argument `{other}`")),
        }
        i += 2;
    }
    if !["sorted", "iid"].contains(&split.as_str()) {
        usage("--split takes sorted or iid");
    }
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        usage(&format!("threads: {e}"));
    }
    let images = experiment::load_images(&cfg, None, ferrolab_core::seed::derive(seed, "split"))
        .unwrap_or_else(|e| usage(&e.to_string()));
    let norm_px = Normalization::of(&images.train);
    let scaled = |s: Samples| Samples {
        x: s.x.iter().map(|v| v * scale).collect(),
        ..s
    };
    let train = Arc::new(scaled(part::to_samples(&images.train, norm_px, 10)));
    let val = Arc::new(scaled(part::to_samples(&images.val, norm_px, 10)));
    let test = Arc::new(scaled(part::to_samples(&images.test, norm_px, 10)));
    let run0 = ferrolab_core::seed::derive(seed, "run0");
    let parts = experiment::partition(&cfg, &split, &train.y, run0);
    let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
    let full = *sizes.iter().max().unwrap_or(&1);
    if batch == 0 {
        if sizes.iter().any(|&n| n != full) {
            usage(&format!(
                "--batch 0 needs equal chunks: --train-limit {} over {} devices gives {:?}",
                cfg.data.train_limit, cfg.topology.devices, sizes
            ));
        }
        batch = full;
    }
    cfg.fed.batch = batch;
    let labels = part::labels_per_device(&train.y, &parts);
    eprintln!(
        "{} training rows, {} per device, labels per device {}..={}, batch {batch}",
        train.len(),
        full,
        labels.iter().min().unwrap_or(&0),
        labels.iter().max().unwrap_or(&0)
    );
    let logistic = Logistic {
        dim_in: 28 * 28,
        classes: 10,
        l2: cfg.model.l2,
    };
    // Equal chunks: the pooled mean is the mean of the devices' means, SD-GT's objective.
    let rows: Vec<usize> = parts.iter().flatten().copied().collect();
    let t0 = Instant::now();
    let (xstar, gn) = centralised_optimum(&logistic, &train, &rows, tol);
    let l = curvature(&logistic, &train, &rows, &xstar);
    let (_, acc_star) = logistic.evaluate(&xstar, &test);
    let xn = norm(&xstar);
    println!(
        "{}",
        serde_json::json!({"optimum": {"grad_norm": gn, "norm": xn, "curvature_L": l,
            "mu": cfg.model.l2, "test_accuracy": acc_star,
            "seconds": t0.elapsed().as_secs_f64()}})
    );
    let model: Arc<dyn FlatModel> = Arc::new(Tracked {
        inner: logistic,
        xstar,
        norm: xn,
    });
    let (topo, gt) =
        experiment::topologies(&cfg, run0, &algos).unwrap_or_else(|e| usage(&e.to_string()));
    let data = RunData {
        model: Arc::clone(&model),
        parts: Arc::new(parts),
        train,
        val,
        test,
        topo: Arc::new(topo),
        gt_topo: Arc::new(gt),
        x0: Arc::new(model.init(0)),
        state_dir: None,
    };
    for &lr in &lrs {
        for &algo in &algos {
            let spec = experiment::unit_spec(&cfg, algo, lr, run0, false);
            let t1 = Instant::now();
            let mut last = f64::NAN;
            let out = driver::run(&spec, &data, Arc::new(InProcFabric::new()), &mut |r| {
                last = r.test_loss;
                println!(
                    "{}",
                    serde_json::json!({"algo": algo.key(), "lr": lr, "lr_L": lr * l,
                        "round": r.round, "rel_dist": r.test_loss,
                        "test_accuracy": r.test_accuracy})
                );
            });
            let status = match out {
                Ok(_) => "ok".to_string(),
                Err(RunError::Diverged { round, .. }) => format!("diverged at round {round}"),
                Err(e) => format!("error: {e}"),
            };
            println!(
                "{}",
                serde_json::json!({"final": {"algo": algo.key(), "lr": lr, "lr_L": lr * l,
                    "rel_dist": last, "status": status,
                    "seconds": t1.elapsed().as_secs_f64()}})
            );
        }
    }
}
