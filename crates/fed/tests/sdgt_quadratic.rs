//! SD-GT and its baselines on heterogeneous quadratics `f_i(x) = a_i/2 ‖x − b_i‖²` with exact
//! gradients: SD-GT's fixed point is the global optimum `Σ a_i b_i / Σ a_i`, SD-FedAvg's drifts
//! away from it; results do not depend on how devices are spread over clients; a run resumed
//! from its checkpoint ends bit-identical to an uninterrupted one.

#![allow(clippy::unwrap_used)]

use ferrolab_fed::inproc::InProcFabric;
use ferrolab_fed::params::Params;
use ferrolab_fed::sdgt::algo::{Algo, Hyper};
use ferrolab_fed::sdgt::costmodel::CostModel;
use ferrolab_fed::sdgt::driver::{RunData, RunSpec, run};
use ferrolab_fed::sdgt::model::{FlatModel, Samples};
use ferrolab_fed::topology::Topology;
use rand::SeedableRng;
use std::sync::Arc;

const D: usize = 3;

/// Rows are `[a_i, b_i…]`; device i owns row i.
struct Quadratic;

impl FlatModel for Quadratic {
    fn name(&self) -> &str {
        "quadratic"
    }
    fn dim(&self) -> usize {
        D
    }
    fn template(&self) -> Params {
        Params::flat("x", vec![0.0; D])
    }
    fn init(&self, _seed: u64) -> Vec<f32> {
        vec![0.0; D]
    }
    fn loss_grad(&self, w: &[f32], data: &Samples, idx: &[usize], grad: &mut [f32]) -> f64 {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let mut loss = 0.0;
        for &i in idx {
            let r = data.row(i);
            for k in 0..D {
                let e = w[k] - r[1 + k];
                grad[k] += r[0] * e / idx.len() as f32;
                loss += 0.5 * (r[0] * e * e) as f64 / idx.len() as f64;
            }
        }
        loss
    }
    fn evaluate(&self, w: &[f32], data: &Samples) -> (f64, f64) {
        // "Accuracy" = 1 − distance to the optimum, so the driver's records are meaningful.
        let opt = optimum(data);
        let dist: f64 = w
            .iter()
            .zip(&opt)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        (dist, 1.0 - dist)
    }
}

fn optimum(data: &Samples) -> Vec<f32> {
    let mut num = [0f64; D];
    let mut den = 0f64;
    for i in 0..data.len() {
        let r = data.row(i);
        den += r[0] as f64;
        for k in 0..D {
            num[k] += (r[0] * r[1 + k]) as f64;
        }
    }
    num.iter().map(|n| (n / den) as f32).collect()
}

fn problem(devices: usize, subnets: usize) -> RunData {
    let mut x = Vec::new();
    for i in 0..devices {
        let a = 0.5 + 1.5 * ((i * 7) % devices) as f32 / devices as f32;
        x.push(a);
        for k in 0..D {
            // Subnet-dependent centres: strong heterogeneity between subnets.
            x.push(((i * 13 + k * 5) % 11) as f32 - 5.0 + 4.0 * (i * subnets / devices) as f32);
        }
    }
    let data = Arc::new(Samples {
        x,
        y: vec![0; devices],
        dim: D + 1,
        classes: 1,
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let topo = Topology::build(devices, subnets, None, &mut rng).unwrap();
    let gt = Topology::build(devices, 1, None, &mut rng).unwrap();
    RunData {
        model: Arc::new(Quadratic),
        train: Arc::clone(&data),
        parts: Arc::new((0..devices).map(|i| vec![i]).collect()),
        val: Arc::clone(&data),
        test: data,
        topo: Arc::new(topo),
        gt_topo: Arc::new(gt),
        x0: Arc::new(vec![0.0; D]),
        state_dir: None,
    }
}

fn spec(algo: Algo, lr: f64, s: usize, rounds: u64, per_client: usize) -> RunSpec {
    RunSpec {
        hyper: Hyper {
            algo,
            lr,
            t: 5,
            batch: 1,
        },
        s,
        rounds,
        seed: 11,
        eval_every: 10,
        checkpoint_every: 0,
        devices_per_client: per_client,
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

fn error(data: &RunData, w: &[f32]) -> f64 {
    let opt = optimum(&data.train);
    w.iter()
        .zip(&opt)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

fn go(data: &RunData, s: &RunSpec) -> Vec<f32> {
    run(s, data, Arc::new(InProcFabric::new()), &mut |_| {})
        .unwrap()
        .final_params
}

#[test]
fn sdgt_reaches_the_optimum_sd_fedavg_drifts() {
    let data = problem(8, 2);
    let gt = error(&data, &go(&data, &spec(Algo::SdGt, 0.05, 2, 400, 2)));
    let fa = error(&data, &go(&data, &spec(Algo::SdFedAvg, 0.05, 2, 400, 2)));
    assert!(
        gt < 1e-3,
        "SD-GT should converge to the optimum, error {gt}"
    );
    assert!(
        fa > 1e-2,
        "SD-FedAvg should drift under heterogeneity, error {fa}"
    );
    let dgt = error(&data, &go(&data, &spec(Algo::Gt, 0.05, 2, 400, 2)));
    assert!(dgt < 1e-3, "decentralised GT should converge, error {dgt}");
    let sc = error(&data, &go(&data, &spec(Algo::Scaffold, 0.05, 4, 400, 2)));
    assert!(
        sc < 1e-3,
        "SCAFFOLD with every device sampled should converge, error {sc}"
    );
}

#[test]
fn result_is_independent_of_client_layout() {
    let data = problem(12, 3);
    for algo in [
        Algo::SdGt,
        Algo::SdFedAvg,
        Algo::Scaffold,
        Algo::Gt,
        Algo::FedAvg,
    ] {
        let a = go(&data, &spec(algo, 0.05, 2, 30, 1));
        let b = go(&data, &spec(algo, 0.05, 2, 30, 5));
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&a),
            bits(&b),
            "{algo:?}: client layout changed the result"
        );
    }
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    let data = problem(8, 2);
    let dir = std::env::temp_dir().join(format!("fed-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for algo in [Algo::SdGt, Algo::Scaffold] {
        let mut s = spec(algo, 0.05, 2, 20, 3);
        s.checkpoint_every = 5;
        let full = go(&data, &s);
        // "Killed" after round 10: a fabric whose state store holds the round-10 checkpoint.
        let d = dir.join(algo.key());
        let first = RunSpec { rounds: 10, ..s };
        run(
            &first,
            &data,
            Arc::new(InProcFabric::with_dir(&d)),
            &mut |_| {},
        )
        .unwrap();
        let resumed = run(&s, &data, Arc::new(InProcFabric::with_dir(&d)), &mut |_| {}).unwrap();
        assert_eq!(
            resumed.history.first().map(|h| h.round),
            Some(10),
            "history kept from before the restart"
        );
        assert_eq!(full, resumed.final_params, "{algo:?}: resumed run differs");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A damaged server checkpoint (SD-GT's y_c cut short, a device that is not in the run, s
/// beyond the subnets) is refused on resume with a checkpoint error naming what is wrong,
/// instead of indexing out of bounds rounds later.
#[test]
fn a_damaged_server_checkpoint_is_refused_on_resume() {
    use ferrolab_fed::fabric::Fabric;
    use ferrolab_fed::sdgt::driver::RunError;
    let data = problem(8, 2);
    let dir = std::env::temp_dir().join(format!("fed-bad-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = spec(Algo::SdGt, 0.05, 2, 20, 3);
    s.checkpoint_every = 5;
    let first = RunSpec { rounds: 10, ..s };
    run(
        &first,
        &data,
        Arc::new(InProcFabric::with_dir(&dir)),
        &mut |_| {},
    )
    .unwrap();
    let fab = InProcFabric::with_dir(&dir);
    let good = fab.get_state("server/checkpoint").unwrap().unwrap();
    let n = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let meta: serde_json::Value = serde_json::from_slice(&good[8..8 + n]).unwrap();
    let tail = good[8 + n..].to_vec();
    type Damage = fn(&mut serde_json::Value);
    let damaged: [(&str, Damage); 3] = [
        ("y_c", |m| {
            m["strategy"]["y_c"][0].as_array_mut().unwrap().pop();
        }),
        ("device 99", |m| {
            m["strategy"]["reset"] = serde_json::json!([99]);
        }),
        ("s = 40", |m| {
            m["strategy"]["s"] = serde_json::json!(40);
        }),
    ];
    for (want, damage) in damaged {
        let mut m = meta.clone();
        damage(&mut m);
        let json = serde_json::to_vec(&m).unwrap();
        let mut bytes = (json.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(&json);
        bytes.extend_from_slice(&tail);
        fab.put_state("server/checkpoint", &bytes).unwrap();
        let e = run(
            &s,
            &data,
            Arc::new(InProcFabric::with_dir(&dir)),
            &mut |_| {},
        )
        .err()
        .unwrap_or_else(|| panic!("{want}: the damaged checkpoint was accepted"));
        assert!(
            matches!(e, RunError::Checkpoint(_)) && e.to_string().contains(want),
            "{want}: {e}"
        );
    }
    // The intact checkpoint still resumes.
    fab.put_state("server/checkpoint", &good).unwrap();
    let r = run(
        &s,
        &data,
        Arc::new(InProcFabric::with_dir(&dir)),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(r.history.first().map(|h| h.round), Some(10));
    let _ = std::fs::remove_dir_all(&dir);
}
