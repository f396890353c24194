//! Every criterion on a network small enough to compute it by hand: a 2→2 linear softmax
//! classifier on one image of two pixels (gradients, Fisher, Taylor, SNIP, Hessian trace,
//! integrated gradients in closed form) and a two-layer ReLU network for SynFlow.

#![allow(clippy::unwrap_used)]

use burn::nn::LinearConfig;
use ferrolab_compress::criteria::{CriteriaSettings, compute, synflow};
use ferrolab_compress::ops;
use ferrolab_compress::train::EvalSet;
use ferrolab_compress::zoo::{LayerParams, Op, Slot, ZooNet};
use ferrolab_core::backend::{device, exclusive_rng};
use ferrolab_vision::data::{ImageSet, Normalization};

fn linear_net(widths: &[usize]) -> ZooNet {
    let dev = device();
    let mut plan = vec![Op::Flatten];
    let mut fcs = Vec::new();
    let mut layers = Vec::new();
    for (j, w) in widths.windows(2).enumerate() {
        let mut fc = LinearConfig::new(w[0], w[1]).init(&dev);
        fc.bias = None;
        fcs.push(fc);
        plan.push(Op::Fc {
            fc: j,
            relu: j + 2 < widths.len(),
        });
        layers.push((format!("fc{j}"), Slot::Fc(j)));
    }
    ZooNet {
        convs: Vec::new(),
        fcs,
        plan,
        layers,
    }
}

fn softmax2(z0: f64, z1: f64) -> (f64, f64) {
    let p0 = 1.0 / (1.0 + (z1 - z0).exp());
    (p0, 1.0 - p0)
}

#[test]
fn criteria_of_a_linear_softmax_by_hand() {
    let _g = exclusive_rng();
    let mut net = linear_net(&[2, 2]);
    // W (out × in) = [[0.5, −0.5], [0.25, 1]]; the image is x = (1, 0.2), label 0.
    let w = [0.5f32, -0.5, 0.25, 1.0];
    net.set_layer_weight(0, &w);
    let set = ImageSet {
        height: 1,
        width: 2,
        pixels: vec![255, 51],
        labels: vec![0],
    };
    let norm = Normalization {
        mean: 0.0,
        std: 1.0,
    };
    let x = [1.0f64, 0.2];
    let eval = EvalSet::new(&set, norm, 1);
    let s = CriteriaSettings {
        calib_images: 1,
        batch: 1,
        hutchinson_probes: 3000,
        ig_steps: 4,
    };
    let sc = compute(&net, &set, norm, &eval, &s, 1).scores;
    let one = |k: &str| sc[k][0];
    let wf: Vec<f64> = w.iter().map(|v| f64::from(*v)).collect();
    // Gradient of the cross-entropy: (p − e₀) xᵀ.
    let (p0, p1) = softmax2(0.5 - 0.1, 0.25 + 0.2);
    let g = [(p0 - 1.0) * x[0], (p0 - 1.0) * x[1], p1 * x[0], p1 * x[1]];
    let close = |a: f64, b: f64, tol: f64, what: &str| {
        assert!(
            (a - b).abs() <= tol * b.abs().max(1e-12),
            "{what}: {a} vs {b}"
        );
    };
    close(one("params"), 4.0, 0.0, "params");
    close(one("inv_params"), 0.25, 0.0, "inv_params");
    close(one("mean_abs_w"), 0.5625, 1e-9, "mean |w|");
    close(one("l2_norm"), 0.625, 1e-7, "l2");
    close(
        one("grad_norm"),
        g.iter().map(|v| v * v).sum::<f64>().sqrt(),
        1e-5,
        "grad norm",
    );
    let taylor: f64 = g.iter().zip(&wf).map(|(g, w)| (g * w).abs()).sum();
    close(one("taylor_sum"), taylor, 1e-5, "taylor");
    close(one("taylor_mean"), taylor / 4.0, 1e-5, "taylor mean");
    close(
        one("snip_sum"),
        taylor,
        1e-5,
        "snip (one batch of one image)",
    );
    let fisher: f64 = g.iter().map(|v| v * v).sum();
    close(one("fisher_sum"), fisher, 1e-5, "fisher");
    close(one("fisher_mean"), fisher / 4.0, 1e-5, "fisher mean");
    // Tr H = Σ_k p_k (1 − p_k) ‖x‖²; Hutchinson's 3000 probes land within a few percent.
    let tr = (p0 * (1.0 - p0) + p1 * (1.0 - p1)) * (x[0] * x[0] + x[1] * x[1]);
    close(one("hessian_sum"), tr, 0.05, "Hessian trace");
    close(
        one("hessian_mean"),
        one("hessian_sum") / 4.0,
        1e-9,
        "Hessian mean",
    );
    let lw = net.layer(0);
    let q4 = ops::fake_quantize(&lw, 4).unwrap();
    let qerr = ops::l2_diff(&q4, &lw.weight).powi(2);
    close(one("hawq"), one("hessian_mean") * qerr, 1e-9, "HAWQ");
    // Integrated gradients at α = k/4: w · mean_k (p(αW) − e₀) xᵀ.
    let mut ig = [0.0f64; 4];
    for k in 1..=4 {
        let a = k as f64 / 4.0;
        let (q0, q1) = softmax2(a * 0.4, a * 0.45);
        let ga = [(q0 - 1.0) * x[0], (q0 - 1.0) * x[1], q1 * x[0], q1 * x[1]];
        for i in 0..4 {
            ig[i] += ga[i] / 4.0;
        }
    }
    let ig_sum: f64 = ig.iter().zip(&wf).map(|(g, w)| (g * w).abs()).sum();
    close(one("ig_sum"), ig_sum, 1e-5, "integrated gradients");
    // A unit perturbation ε moves the logits by εx: 0 < ‖εx‖ ≤ ‖ε‖·‖x‖ = ‖x‖.
    let oc = one("output_change");
    assert!(oc > 0.0 && oc <= (1.04f64).sqrt() + 1e-6, "{oc}");
    assert_eq!(sc["depth_first"], vec![1.0]);
    assert!(sc.values().all(|v| v.len() == 1 && v[0].is_finite()));
}

#[test]
fn synflow_conserves_the_path_norm_per_layer() {
    let _g = exclusive_rng();
    let mut net = linear_net(&[2, 2, 1]);
    // |W0| = [[1, 2], [3, 0.5]], |W1| = [[2, 1]]: R = 𝟙ᵀ|W1||W0|𝟙 = 2·3 + 1·3.5 = 9.5.
    net.set_layer_weight(0, &[1.0, -2.0, 3.0, 0.5]);
    net.set_layer_weight(1, &[-2.0, 1.0]);
    let s = synflow(&net, 1, 2);
    assert!(
        (s[0] - 9.5).abs() < 1e-5 && (s[1] - 9.5).abs() < 1e-5,
        "{s:?}"
    );
}
