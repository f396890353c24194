//! ModelZoo: shapes, gradients against finite differences, sparse/dense agreement, parameter
//! round trips and learning on a synthetic graph for every architecture; centralised Cora
//! accuracy (Planetoid split) for GCN and GAT is `#[ignore]`d (needs the data).

#![allow(clippy::unwrap_used)]

use ferrolab_core::backend::{exclusive_rng, train_device};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::nn::gradcheck::check_input_gradient;
use ferrolab_core::nn::to_vec_f32;
use ferrolab_core::sparse::SparseAdj;
use ferrolab_data::{CsbmConfig, Features, generate_csbm};
use ferrolab_graph::models::GcnInput;
use ferrolab_graph::zoo::train::{NodeTask, OptimKind, train_centralised};
use ferrolab_graph::zoo::{Arch, GraphTensors, WeightInit, ZooConfig, load_params, model_params};
use ferrolab_graph::{CsrGraph, NodeData};

/// 0-1-2-3-4-5-0 ring with chord 0-3, and isolated node 6.
fn tiny() -> CsrGraph {
    let e = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0), (0, 3)];
    let mut rows = vec![Vec::new(); 7];
    for (a, b) in e {
        rows[a].push(b as u32);
        rows[b].push(a as u32);
    }
    let mut indptr = vec![0];
    let mut indices = Vec::new();
    for mut r in rows {
        r.sort_unstable();
        indices.extend(r);
        indptr.push(indices.len());
    }
    CsrGraph::new(indptr, indices).unwrap()
}

fn small_cfg(arch: Arch) -> ZooConfig {
    ZooConfig {
        hidden: 4,
        heads: 2,
        gpr_k: 3,
        dropout: 0.0,
        ..ZooConfig::new(arch, 3, 2)
    }
}

#[test]
fn every_architecture_has_the_right_shape_and_gradient() {
    let _g = exclusive_rng();
    let dev = train_device();
    let g = GraphTensors::new(&tiny(), &dev).unwrap();
    for (k, arch) in Arch::ALL.into_iter().enumerate() {
        dev.seed(k as u64);
        let model = small_cfg(arch).init(&dev).unwrap();
        let x = Tensor::<2>::ones([7, 3], &dev);
        let y = model.forward(&g, &GcnInput::Dense(Box::new(x)), 0.0, None);
        assert_eq!(y.dims(), [7, 2], "{arch:?}");
        check_input_gradient(
            |x: Tensor<2>| model.forward(&g, &GcnInput::Dense(Box::new(x)), 0.0, None),
            [7, 3],
            10 + k as u64,
        );
    }
}

/// Autodiff's gradient of `Σ f(x) ⊙ r` with respect to every float parameter, flat, in
/// `model_params` order.
struct FlatGrads<'a> {
    grads: &'a ferrolab_core::burn::optim::GradientsParams,
    out: Vec<f32>,
}

impl ferrolab_core::burn::module::ModuleVisitor for FlatGrads<'_> {
    fn visit_float<const D: usize>(
        &mut self,
        param: &ferrolab_core::burn::module::Param<Tensor<D>>,
    ) {
        let len: usize = param.val().dims().iter().product();
        match self.grads.get::<D>(param.id) {
            Some(g) => self.out.extend(g.into_data().iter::<f32>()),
            None => self.out.extend(std::iter::repeat_n(0.0, len)),
        }
    }
}

/// Every parameter's gradient (GAT's attention vectors, GPR-GNN's propagation weights, GIN's
/// ε and MLPs, …) against central differences of the same loss, element by element. A point
/// whose central difference straddles a ReLU kink is accepted when autodiff equals one of the
/// one-sided slopes; three in four points must pass outright (with 4 hidden units one unit near
/// zero puts several of GCN's 26 parameters on a kink at once).
#[test]
fn every_architecture_has_the_right_parameter_gradients() {
    use ferrolab_core::burn::optim::GradientsParams;
    use ferrolab_core::burn::tensor::Distribution;
    let _g = exclusive_rng();
    let dev = train_device();
    let g = GraphTensors::new(&tiny(), &dev).unwrap();
    for (k, arch) in Arch::ALL.into_iter().enumerate() {
        dev.seed(100 + k as u64);
        let model = small_cfg(arch).init(&dev).unwrap();
        let x = Tensor::<2>::random([7, 3], Distribution::Normal(0.0, 1.0), &dev);
        let r = Tensor::<2>::random([7, 2], Distribution::Normal(0.0, 1.0), &dev);
        let input = GcnInput::Dense(Box::new(x));
        let loss = (model.forward(&g, &input, 0.0, None) * r.clone()).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let mut v = FlatGrads {
            grads: &grads,
            out: Vec::new(),
        };
        ferrolab_core::burn::module::Module::visit(&model, &mut v);
        let analytic = v.out;
        let base = model_params(&model);
        let n: usize = base.iter().map(|p| p.data.len()).sum();
        assert_eq!(analytic.len(), n, "{arch:?}");
        let loss_with = |i: usize, h: f32| -> f64 {
            let mut p = base.clone();
            let mut i = i;
            for t in p.iter_mut() {
                if i < t.data.len() {
                    t.data[i] += h;
                    break;
                }
                i -= t.data.len();
            }
            let m = load_params(model.clone(), &p).unwrap();
            let l = (m.forward(&g, &input, 0.0, None) * r.clone()).sum();
            f64::from(to_vec_f32(l)[0])
        };
        let l0 = loss_with(0, 0.0);
        let tol = |v: f64| 2e-3 + 2e-2 * v.abs();
        let (mut outright, mut kinks) = (0usize, 0usize);
        for (i, &a) in analytic.iter().enumerate() {
            let a = f64::from(a);
            let mut ok = false;
            for h in [1e-2f32, 1e-3] {
                let (lp, lm) = (loss_with(i, h), loss_with(i, -h));
                let central = (lp - lm) / (2.0 * f64::from(h));
                if (a - central).abs() <= tol(central) {
                    outright += 1;
                    ok = true;
                    break;
                }
                let (fwd, bwd) = ((lp - l0) / f64::from(h), (l0 - lm) / f64::from(h));
                if (fwd - bwd).abs() > tol(central)
                    && ((a - fwd).abs() <= tol(fwd) || (a - bwd).abs() <= tol(bwd))
                {
                    kinks += 1;
                    ok = true;
                    break;
                }
            }
            assert!(
                ok,
                "{arch:?}: parameter element {i}: autodiff {a} vs differences"
            );
        }
        assert!(
            4 * outright >= 3 * n,
            "{arch:?}: only {outright} of {n} points passed outright ({kinks} at kinks)"
        );
        assert!(
            analytic.iter().any(|v| *v != 0.0),
            "{arch:?}: all-zero gradient"
        );
    }
}

#[test]
fn sparse_and_dense_inputs_agree_and_parameters_round_trip() {
    let _g = exclusive_rng();
    let dev = train_device();
    let g = GraphTensors::new(&tiny(), &dev).unwrap();
    // Row i has a 1 in column i % 3 and 0.5 in column (i + 1) % 3.
    let mut dense = vec![0f32; 21];
    let (mut indptr, mut indices, mut vals) = (vec![0usize], Vec::new(), Vec::new());
    for i in 0..7 {
        let (a, b) = (i % 3, (i + 1) % 3);
        dense[i * 3 + a] = 1.0;
        dense[i * 3 + b] = 0.5;
        let mut row = [(a as u32, 1.0f32), (b as u32, 0.5)];
        row.sort_by_key(|r| r.0);
        for (c, v) in row {
            indices.push(c);
            vals.push(v);
        }
        indptr.push(indices.len());
    }
    let xs = GcnInput::Sparse(Box::new(
        SparseAdj::from_csr(7, 3, &indptr, &indices, Some(&vals), &dev).unwrap(),
    ));
    let xd = GcnInput::Dense(Box::new(Tensor::from_data(
        TensorData::new(dense, [7, 3]),
        &dev,
    )));
    for arch in Arch::ALL {
        dev.seed(3);
        let m = small_cfg(arch).init(&dev).unwrap();
        let a = to_vec_f32(m.forward(&g, &xs, 0.0, None));
        let b = to_vec_f32(m.forward(&g, &xd, 0.0, None));
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-5, "{arch:?}: {a:?} vs {b:?}");
        }
        let p = model_params(&m);
        dev.seed(99);
        let other = small_cfg(arch).init(&dev).unwrap();
        let loaded = load_params(other, &p).unwrap();
        assert_eq!(model_params(&loaded), p);
        assert_eq!(to_vec_f32(loaded.forward(&g, &xd, 0.0, None)), b);
        let mut bad = p.clone();
        bad[0].shape.push(1);
        assert!(load_params(small_cfg(arch).init(&dev).unwrap(), &bad).is_err());
        assert!(load_params(small_cfg(arch).init(&dev).unwrap(), &p[1..]).is_err());
    }
}

#[test]
fn bad_configurations_are_refused() {
    let dev = train_device();
    assert!(Arch::parse("mlp").is_err());
    let mut c = small_cfg(Arch::Gat);
    c.heads = 3;
    assert!(c.init(&dev).is_err());
    let mut c = small_cfg(Arch::Gcn);
    c.layers = 0;
    assert!(c.init(&dev).is_err());
    c.layers = 2;
    c.dropout = 1.0;
    assert!(c.check().is_err());
}

#[test]
fn every_architecture_learns_a_homophilous_graph() {
    let _g = exclusive_rng();
    let dev = train_device();
    let d = generate_csbm(&CsbmConfig {
        nodes: 300,
        classes: 3,
        avg_degree: 6.0,
        p_in_ratio: 0.9,
        features: 8,
        feature_signal: 0.3,
        feature_noise: 1.0,
        seed: 5,
    })
    .unwrap()
    .to_graph_data();
    let split = d.seeded_per_class_split(10, 20, 0).unwrap();
    let data = NodeData::from_graph_data(&d, Some(split.clone()), false).unwrap();
    let rows: Vec<usize> = (0..300).collect();
    let task = NodeTask::new(
        &data.graph,
        &data.features,
        &rows,
        data.labels.clone(),
        3,
        split,
        &dev,
    )
    .unwrap();
    assert!(matches!(data.features, Features::Dense { .. }));
    for arch in Arch::ALL {
        let cfg = ZooConfig {
            hidden: 16,
            ..ZooConfig::new(arch, 8, 3)
        };
        let out = train_centralised(
            &task,
            &cfg,
            OptimKind::Adam { weight_decay: 5e-4 },
            0.01,
            60,
            60,
            1,
        )
        .unwrap();
        // Features alone give ~55%; the graph's homophily lifts every model well above.
        assert!(out.best.test_accuracy > 0.75, "{arch:?}: {out:?}");
    }
}

fn cora_task(dev: &Device) -> NodeTask {
    let d = NodeData::load_cora(None).expect("Cora (graphs/cora_planetoid.npz)");
    let rows: Vec<usize> = (0..d.num_nodes()).collect();
    NodeTask::new(
        &d.graph,
        &d.features,
        &rows,
        d.labels.clone(),
        d.num_classes,
        d.split.clone(),
        dev,
    )
    .unwrap()
}

fn cora_mean(arch: Arch, cfg: ZooConfig, lr: f64, seeds: u64) -> f64 {
    let _g = exclusive_rng();
    let dev = train_device();
    let task = cora_task(&dev);
    let accs: Vec<f64> = (0..seeds)
        .map(|s| {
            train_centralised(
                &task,
                &cfg,
                OptimKind::Adam { weight_decay: 5e-4 },
                lr,
                200,
                100,
                s,
            )
            .unwrap()
            .best
            .test_accuracy
        })
        .collect();
    let mean = accs.iter().sum::<f64>() / accs.len() as f64;
    eprintln!("{arch:?} Cora Planetoid: {accs:?} mean {mean:.4}");
    mean
}

#[test]
#[ignore = "needs graphs/cora_planetoid.npz"]
fn gcn_on_cora_reaches_80_percent() {
    let cfg = ZooConfig {
        hidden: 16,
        input_dropout: true,
        ..ZooConfig::new(Arch::Gcn, 1433, 7)
    };
    assert!(cora_mean(Arch::Gcn, cfg, 0.01, 3) >= 0.80);
}

#[test]
#[ignore = "needs graphs/cora_planetoid.npz"]
fn gat_on_cora_reaches_81_5_percent() {
    let cfg = ZooConfig {
        hidden: 64,
        heads: 8,
        dropout: 0.6,
        input_dropout: true,
        ..ZooConfig::new(Arch::Gat, 1433, 7)
    };
    assert!(cora_mean(Arch::Gat, cfg, 0.005, 2) >= 0.815);
}

/// `model.init = "glorot"` draws the GCN and GAT linear maps as PyG does, U(±√(6/(in+out))),
/// which for Cora's first layer (1433 → 64) is 2.4x the fan-in default's bound 1/√1433; the
/// default stays U(±1/√fan_in).
#[test]
fn glorot_init_uses_pygs_bound_and_fan_in_stays_the_default() {
    let _g = exclusive_rng();
    let dev = train_device();
    for arch in [Arch::Gcn, Arch::Gat] {
        let (d_in, hidden) = (300, 64);
        let bounds = |init: WeightInit| {
            dev.seed(7);
            let cfg = ZooConfig {
                hidden,
                init,
                ..ZooConfig::new(arch, d_in, 5)
            };
            let params = model_params(&cfg.init(&dev).unwrap());
            // The first layer's linear map is the first parameter of `d_in · hidden` values.
            let w = params
                .iter()
                .find(|p| p.data.len() == d_in * hidden)
                .unwrap();
            w.data.iter().fold(0f32, |m, v| m.max(v.abs()))
        };
        let fan_in = bounds(WeightInit::FanIn);
        let glorot = bounds(WeightInit::Glorot);
        let want_fan_in = 1.0 / (d_in as f32).sqrt();
        let want_glorot = (6.0 / (d_in + hidden) as f32).sqrt();
        assert!(
            fan_in <= want_fan_in && fan_in > 0.95 * want_fan_in,
            "{arch:?}: {fan_in}"
        );
        assert!(
            glorot <= want_glorot && glorot > 0.95 * want_glorot,
            "{arch:?}: {glorot} vs {want_glorot}"
        );
    }
    assert_eq!(ZooConfig::new(Arch::Gcn, 3, 2).init, WeightInit::FanIn);
    assert!(WeightInit::parse("xavier").is_err());
}

#[test]
fn glorot_is_refused_where_pyg_draws_otherwise() {
    for arch in [Arch::Sage, Arch::Gin, Arch::Gpr] {
        let cfg = ZooConfig {
            init: WeightInit::Glorot,
            ..ZooConfig::new(arch, 3, 2)
        };
        let e = cfg.check().unwrap_err().to_string();
        assert!(e.contains("model.init"), "{arch:?}: {e}");
    }
}
