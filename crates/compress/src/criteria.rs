//! Cheap layer-importance criteria: one score per layer, higher = more important.
//!
//! Gradients are those of the mean cross-entropy on a small calibration set, with batch norm on
//! its running statistics (the network as it is evaluated). Per-weight scores are aggregated
//! to a layer by sum (`_sum`, favours big layers) and by mean (`_mean`, scale-free).
//!
//! | name | definition |
//! |---|---|
//! | `random` | uniform draw (control, seeded) |
//! | `depth_first` | `L − l`: earlier layers first (control) |
//! | `depth_ends` | `max(L − l, l + 1)`: first and last layers first (control) |
//! | `params`, `inv_params` | `|W_l|`, `1/|W_l|` |
//! | `mean_abs_w`, `l2_norm` | `mean |w|`, `‖W_l‖₂ / √|W_l|` |
//! | `grad_norm` | mean over calibration batches of `‖∂L/∂W_l‖₂` |
//! | `taylor_sum/_mean` | mean over batches of `Σ |w·g|` (Molchanov et al.) |
//! | `fisher_sum/_mean` | mean over batches of `Σ g²` (diagonal empirical Fisher, mini-batch gradients) |
//! | `snip_sum/_mean` | `Σ |w·ḡ|` with ḡ the gradient of the whole calibration set as one batch (SNIP's single-batch connection sensitivity) |
//! | `hessian_sum/_mean` | Hutchinson `E[v_lᵀ(Hv)_l]` with Rademacher `v` over all layers at once, `Hv` by central differences of gradients |
//! | `hawq` | `Tr(H_l)/|W_l| · ‖Q₄(W_l) − W_l‖²` (HAWQ-v2's Ω at 4 bits) |
//! | `synflow_sum/_mean` | data-free: `|w|·∂R/∂w`, `R = Σ f(𝟙)` on the network with `|w|` (BN folded into `|w|` and set to identity) |
//! | `ig_sum/_mean` | integrated gradients along `αW_l`, `α = k/m`: `Σ |w · mean_k g(αW_l)|` (SInGE-style, one calibration batch) |
//! | `output_change` | mean `‖f(x) − f^ε(x)‖₂` of the logits for a Gaussian `ε` on layer l with `‖ε‖₂ = 1` |
//! | `flip_fisher_sum/_mean` | `Σ_i F_i·E[Δw_i²]`, the Fisher-weighted squared error of one random int8 bit flip per weight ([`flip_fisher`]) |
//!
//! Models outside the image zoo (the cross-domain members) implement [`Subject`]; SynFlow is
//! computed for the zoo only.

use crate::ops;
use crate::train::{EvalSet, images, labels, to_train};
use crate::zoo::{Act, LayerParams, ZooNet};
use burn::module::{Param, RunningState};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use ferrolab_vision::data::{ImageSet, Normalization};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeMap;
use std::time::Instant;

/// Criterion names, in report order.
pub const CRITERIA: [&str; 24] = [
    "random",
    "depth_first",
    "depth_ends",
    "params",
    "inv_params",
    "mean_abs_w",
    "l2_norm",
    "grad_norm",
    "taylor_sum",
    "taylor_mean",
    "fisher_sum",
    "fisher_mean",
    "snip_sum",
    "snip_mean",
    "hessian_sum",
    "hessian_mean",
    "hawq",
    "synflow_sum",
    "synflow_mean",
    "ig_sum",
    "ig_mean",
    "output_change",
    "flip_fisher_sum",
    "flip_fisher_mean",
];

/// How much work the criteria may do.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CriteriaSettings {
    /// Calibration images (drawn from the training set).
    pub calib_images: usize,
    pub batch: usize,
    pub hutchinson_probes: usize,
    pub ig_steps: usize,
}

/// Scores per criterion and the seconds each took (criteria computed from one shared pass —
/// the gradient statistics — are each charged the whole pass).
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    pub scores: BTreeMap<String, Vec<f64>>,
    pub seconds: BTreeMap<String, f64>,
}

/// Gradients per layer of the mean loss on (x, y).
fn layer_grads(model: &ZooNet, x: Tensor<4>, y: Tensor<1, Int>) -> Vec<Vec<f32>> {
    let dev = x.device();
    let loss = CrossEntropyLossConfig::new()
        .init(&dev)
        .forward(model.forward(x), y);
    let g = loss.backward();
    (0..model.layers.len())
        .map(|l| model.weight_grad(l, &g))
        .collect()
}

/// Calibration batches on the autodiff device.
#[derive(Clone)]
struct Calib {
    batches: Vec<(Tensor<4>, Tensor<1, Int>)>,
    all: (Tensor<4>, Tensor<1, Int>),
}

fn calib(set: &ImageSet, norm: Normalization, s: &CriteriaSettings, seed: u64) -> Calib {
    let dev = ferrolab_core::backend::train_device();
    let mut idx: Vec<usize> = (0..set.len()).collect();
    rand::seq::SliceRandom::shuffle(idx.as_mut_slice(), &mut StdRng::seed_from_u64(seed));
    idx.truncate(s.calib_images.min(set.len()).max(1));
    let batches = idx
        .chunks(s.batch.max(1))
        .map(|c| (images(set, c, norm, &dev), labels(set, c, &dev)))
        .collect();
    Calib {
        batches,
        all: (images(set, &idx, norm, &dev), labels(set, &idx, &dev)),
    }
}

/// What the criteria need of a model besides its layers: gradients of the loss on a
/// calibration set, the output change of a perturbed layer and (where the architecture has
/// one) SynFlow. [`LayerParams::set_layer_weight`] acts on the model the gradients are taken
/// of (Hutchinson and integrated gradients move it and put it back).
pub trait Subject: LayerParams + Clone {
    /// Calibration mini-batches.
    fn calib_batches(&self) -> usize;
    /// Per-layer gradients (laid out as [`LayerParams::layer`]) of the mean loss on
    /// calibration batch `b`, or on the whole calibration set as one batch when `b` is `None`.
    fn grads(&self, b: Option<usize>) -> Vec<Vec<f32>>;
    /// Mean `‖f(x) − f̃(x)‖₂` of the logits over a fixed evaluation batch, `f̃` the model as
    /// evaluated with layer `l`'s weights replaced by `w` (the model is left as it was).
    fn output_change(&mut self, l: usize, w: &[f32]) -> f64;
    /// SynFlow per layer, for architectures where it is defined here.
    fn synflow(&self) -> Option<Vec<f64>> {
        None
    }
}

/// A zoo network as a criteria [`Subject`]: the autodiff copy (batch norm on running
/// statistics) for gradients, the inference copy for the output change.
#[derive(Clone)]
pub struct ZooSubject {
    tm: ZooNet,
    infer: ZooNet,
    calib: Calib,
    out_batch: Vec<Tensor<4>>,
    side: (usize, usize),
}

impl ZooSubject {
    pub fn new(
        model: &ZooNet,
        train_set: &ImageSet,
        norm: Normalization,
        eval_for_output: &EvalSet,
        s: &CriteriaSettings,
        seed: u64,
    ) -> Self {
        ZooSubject {
            tm: to_train(model).freeze_batch_norm(),
            infer: model.clone(),
            calib: calib(
                train_set,
                norm,
                s,
                ferrolab_core::seed::derive(seed, "calib"),
            ),
            out_batch: eval_for_output.batches.iter().take(1).cloned().collect(),
            side: (train_set.height, train_set.width),
        }
    }
}

impl LayerParams for ZooSubject {
    fn layer_names(&self) -> Vec<String> {
        self.tm.layer_names()
    }
    fn layer(&self, l: usize) -> ops::LayerWeights {
        self.tm.layer(l)
    }
    fn set_layer_weight(&mut self, l: usize, w: &[f32]) {
        self.tm.set_layer_weight(l, w);
    }
}

impl Subject for ZooSubject {
    fn calib_batches(&self) -> usize {
        self.calib.batches.len()
    }
    fn grads(&self, b: Option<usize>) -> Vec<Vec<f32>> {
        let (x, y) = match b.and_then(|b| self.calib.batches.get(b)) {
            Some(xy) => xy.clone(),
            None => self.calib.all.clone(),
        };
        layer_grads(&self.tm, x, y)
    }
    fn output_change(&mut self, l: usize, w: &[f32]) -> f64 {
        // From the cached activations entering the layer's stage.
        let model = &self.infer;
        let st = model.stage_of(l);
        let acts: Vec<Act> = self
            .out_batch
            .iter()
            .map(|x| model.advance(0, st, Act::Map(x.clone())))
            .collect();
        let mut om = model.clone();
        om.set_layer_weight(l, w);
        let (mut tot, mut rows) = (0.0, 0usize);
        for a in &acts {
            let base = model.forward_from(st, a.clone());
            let pert = om.forward_from(st, a.clone());
            tot += logit_distance(base, pert);
            rows += a.rows();
        }
        tot / rows.max(1) as f64
    }
    fn synflow(&self) -> Option<Vec<f64>> {
        Some(synflow(&self.infer, self.side.0, self.side.1))
    }
}

/// `Σ_rows ‖a − b‖₂` of two logit matrices.
pub fn logit_distance(a: Tensor<2>, b: Tensor<2>) -> f64 {
    let d = (b - a).powi_scalar(2).sum_dim(1).sqrt();
    ferrolab_core::nn::to_vec_f32(d)
        .iter()
        .map(|v| f64::from(*v))
        .sum::<f64>()
}

/// Computes every criterion for a zoo network (inference device).
pub fn compute(
    model: &ZooNet,
    train_set: &ImageSet,
    norm: Normalization,
    eval_for_output: &EvalSet,
    s: &CriteriaSettings,
    seed: u64,
) -> Scores {
    compute_for(
        &ZooSubject::new(model, train_set, norm, eval_for_output, s, seed),
        s,
        seed,
    )
}

/// Computes every criterion `model` supports (all of [`CRITERIA`], SynFlow only where
/// [`Subject::synflow`] gives it).
pub fn compute_for<S: Subject>(model: &S, s: &CriteriaSettings, seed: u64) -> Scores {
    let nl = model.layer_names().len();
    let lw: Vec<_> = (0..nl).map(|l| model.layer(l)).collect();
    let n: Vec<f64> = lw.iter().map(|w| w.weight.len() as f64).collect();
    let mut out = Scores::default();
    let mut put = |name: &str, v: Vec<f64>, secs: f64| {
        out.scores.insert(name.to_string(), v);
        out.seconds.insert(name.to_string(), secs);
    };
    let t = Instant::now();
    let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "random-criterion"));
    put(
        "random",
        (0..nl).map(|_| rng.random::<f64>()).collect(),
        0.0,
    );
    let lf = nl as f64;
    put("depth_first", (0..nl).map(|l| lf - l as f64).collect(), 0.0);
    let ends: Vec<f64> = (0..nl)
        .map(|l| (lf - l as f64).max(l as f64 + 1.0))
        .collect();
    put("depth_ends", ends, 0.0);
    put("params", n.clone(), 0.0);
    put("inv_params", n.iter().map(|v| 1.0 / v).collect(), 0.0);
    put(
        "mean_abs_w",
        lw.iter()
            .map(|w| {
                w.weight.iter().map(|v| f64::from(v.abs())).sum::<f64>() / w.weight.len() as f64
            })
            .collect(),
        t.elapsed().as_secs_f64(),
    );
    let l2: Vec<f64> = lw
        .iter()
        .map(|w| {
            ops::l2_diff(&w.weight, &vec![0.0; w.weight.len()]) / (w.weight.len() as f64).sqrt()
        })
        .collect();
    put("l2_norm", l2.clone(), 0.0);

    // Mini-batch gradient statistics; the per-weight Fisher also feeds the bit-flip
    // criterion (Fisher-weighted expected squared error of an int8 bit flip).
    let t = Instant::now();
    let (mut gn, mut ts, mut fs) = (vec![0.0; nl], vec![0.0; nl], vec![0.0; nl]);
    let mut fisher_w: Vec<Vec<f64>> = lw.iter().map(|w| vec![0.0; w.weight.len()]).collect();
    let nbatches = model.calib_batches();
    for b in 0..nbatches {
        let g = model.grads(Some(b));
        for l in 0..nl {
            let gl = &g[l];
            gn[l] += gl.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            ts[l] += gl
                .iter()
                .zip(&lw[l].weight)
                .map(|(g, w)| f64::from((g * w).abs()))
                .sum::<f64>();
            fs[l] += gl.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>();
            for (f, v) in fisher_w[l].iter_mut().zip(gl) {
                *f += f64::from(*v).powi(2);
            }
        }
    }
    let nb = nbatches.max(1) as f64;
    let secs = t.elapsed().as_secs_f64();
    let per = |v: &[f64], by_n: bool| -> Vec<f64> {
        v.iter()
            .enumerate()
            .map(|(l, x)| x / nb / if by_n { n[l] } else { 1.0 })
            .collect()
    };
    put("grad_norm", per(&gn, false), secs);
    put("taylor_sum", per(&ts, false), secs);
    put("taylor_mean", per(&ts, true), secs);
    put("fisher_sum", per(&fs, false), secs);
    put("fisher_mean", per(&fs, true), secs);
    let ff: Vec<f64> = (0..nl)
        .map(|l| flip_fisher(&lw[l], &fisher_w[l]) / nb)
        .collect();
    put(
        "flip_fisher_mean",
        ff.iter().zip(&n).map(|(a, b)| a / b).collect(),
        secs,
    );
    put("flip_fisher_sum", ff, secs);

    // SNIP: one batch made of the whole calibration set.
    let t = Instant::now();
    let g = model.grads(None);
    let snip: Vec<f64> = (0..nl)
        .map(|l| {
            g[l].iter()
                .zip(&lw[l].weight)
                .map(|(g, w)| f64::from((g * w).abs()))
                .sum::<f64>()
        })
        .collect();
    let secs = t.elapsed().as_secs_f64();
    put(
        "snip_mean",
        snip.iter().zip(&n).map(|(a, b)| a / b).collect(),
        secs,
    );
    put("snip_sum", snip, secs);

    // Hutchinson: Rademacher v over every layer, each layer's step scaled by its weights' rms.
    let t = Instant::now();
    let rms: Vec<f32> = l2.iter().map(|v| (*v as f32).max(1e-8)).collect();
    let h = 1e-2f32;
    let mut tr = vec![0.0; nl];
    let mut vrng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "hutchinson"));
    let mut probe_model = model.clone();
    for _ in 0..s.hutchinson_probes.max(1) {
        let v: Vec<Vec<f32>> = lw
            .iter()
            .map(|w| {
                (0..w.weight.len())
                    .map(|_| if vrng.random_bool(0.5) { 1.0 } else { -1.0 })
                    .collect()
            })
            .collect();
        let mut grads = Vec::new();
        for sign in [1.0f32, -1.0] {
            for l in 0..nl {
                let w: Vec<f32> = lw[l]
                    .weight
                    .iter()
                    .zip(&v[l])
                    .map(|(w, v)| w + sign * h * rms[l] * v)
                    .collect();
                probe_model.set_layer_weight(l, &w);
            }
            grads.push(probe_model.grads(None));
        }
        for l in 0..nl {
            let d = h * rms[l];
            tr[l] += grads[0][l]
                .iter()
                .zip(&grads[1][l])
                .zip(&v[l])
                .map(|((a, b), v)| f64::from((a - b) / (2.0 * d) * v))
                .sum::<f64>();
        }
    }
    let probes = s.hutchinson_probes.max(1) as f64;
    let tr: Vec<f64> = tr.iter().map(|v| v / probes).collect();
    let secs = t.elapsed().as_secs_f64();
    let tr_mean: Vec<f64> = tr.iter().zip(&n).map(|(a, b)| a / b).collect();
    let hawq = (0..nl)
        .map(|l| {
            let q = ops::fake_quantize(&lw[l], 4).unwrap_or_else(|_| lw[l].weight.clone());
            tr_mean[l] * ops::l2_diff(&q, &lw[l].weight).powi(2)
        })
        .collect();
    put("hessian_sum", tr, secs);
    put("hessian_mean", tr_mean, secs);
    put("hawq", hawq, secs);

    // SynFlow.
    let t = Instant::now();
    if let Some(syn) = model.synflow() {
        let secs = t.elapsed().as_secs_f64();
        put(
            "synflow_mean",
            syn.iter().zip(&n).map(|(a, b)| a / b).collect(),
            secs,
        );
        put("synflow_sum", syn, secs);
    }

    // Integrated gradients, one calibration batch.
    let t = Instant::now();
    let m = s.ig_steps.max(1);
    let mut ig = vec![0.0; nl];
    let mut igm = model.clone();
    for l in 0..nl {
        let mut acc = vec![0f64; lw[l].weight.len()];
        for k in 1..=m {
            let a = k as f32 / m as f32;
            let w: Vec<f32> = lw[l].weight.iter().map(|v| v * a).collect();
            igm.set_layer_weight(l, &w);
            let g = igm.grads(Some(0));
            for (s, gv) in acc.iter_mut().zip(&g[l]) {
                *s += f64::from(*gv);
            }
        }
        igm.set_layer_weight(l, &lw[l].weight);
        ig[l] = acc
            .iter()
            .zip(&lw[l].weight)
            .map(|(g, w)| (g / m as f64 * f64::from(*w)).abs())
            .sum();
    }
    let secs = t.elapsed().as_secs_f64();
    put(
        "ig_mean",
        ig.iter().zip(&n).map(|(a, b)| a / b).collect(),
        secs,
    );
    put("ig_sum", ig, secs);

    // Output change under a unit perturbation.
    let t = Instant::now();
    let mut om = model.clone();
    let mut nrng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "unit-noise"));
    let mut oc = vec![0.0; nl];
    for l in 0..nl {
        let e: Vec<f32> = (0..lw[l].weight.len())
            .map(|_| gaussian(&mut nrng) as f32)
            .collect();
        let en = ops::l2_diff(&e, &vec![0.0; e.len()]).max(1e-30) as f32;
        let w: Vec<f32> = lw[l]
            .weight
            .iter()
            .zip(&e)
            .map(|(w, e)| w + e / en)
            .collect();
        oc[l] = om.output_change(l, &w);
    }
    put("output_change", oc, t.elapsed().as_secs_f64());
    out
}

/// `Σ_i F_i · E[Δw_i²]` for one int8 bit flip per stored bit: a flip of bit k of an int8
/// code moves the weight by `2^k` steps of its channel (the sign bit by 128), so the expected
/// squared move over the 8 bits of a weight is `u_c² · Σ_k 4^k / 8` with `u_c = max|w_c|/127`
/// the channel's step in the layer's own (unfolded) weights. A sum over the layer's weights:
/// at a bit-error rate, a layer's expected damage grows with its stored bits.
pub fn flip_fisher(lw: &ops::LayerWeights, fisher: &[f64]) -> f64 {
    let fan = lw.fan_in().max(1);
    let per_bit = (4f64.powi(8) - 1.0) / 3.0 / 8.0;
    lw.weight
        .chunks(fan)
        .zip(fisher.chunks(fan))
        .map(|(row, f)| {
            let u = f64::from(row.iter().fold(0f32, |a, v| a.max(v.abs()))) / 127.0;
            f.iter().sum::<f64>() * u * u * per_bit
        })
        .sum()
}

fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// SynFlow's per-layer `Σ |w·∂R/∂w|` on the `|w|` network (batch norm folded into the
/// convolutions and replaced by the identity, biases `|b|`), input all ones.
pub fn synflow(model: &ZooNet, height: usize, width: usize) -> Vec<f64> {
    let nl = model.layers.len();
    let mut m = to_train(model).freeze_batch_norm();
    let dev = ferrolab_core::backend::train_device();
    let mut folded = Vec::with_capacity(nl);
    for l in 0..nl {
        let lw = m.layer(l);
        let fan = lw.fan_in().max(1);
        let w: Vec<f32> = lw
            .weight
            .iter()
            .enumerate()
            .map(|(i, v)| (v * lw.bn_scale.as_ref().map_or(1.0, |s| s[i / fan])).abs())
            .collect();
        m.set_layer_weight(l, &w);
        folded.push(w);
    }
    let eps_comp = |e: f64| (1.0 + e).sqrt() as f32;
    for c in &mut m.convs {
        let ch = c.bn.gamma.val().dims()[0];
        let k = eps_comp(c.bn.epsilon);
        c.bn.gamma = Param::from_tensor(Tensor::full([ch], k, &dev)).set_require_grad(false);
        c.bn.beta = Param::from_tensor(Tensor::zeros([ch], &dev)).set_require_grad(false);
        c.bn.running_mean = RunningState::new(Tensor::zeros([ch], &dev));
        c.bn.running_var = RunningState::new(Tensor::ones([ch], &dev));
    }
    for f in &mut m.fcs {
        if let Some(b) = f.bias.take() {
            f.bias = Some(Param::from_tensor(b.val().abs().detach().require_grad()));
        }
    }
    let x = Tensor::<4>::ones([1, 1, height, width], &dev);
    let r = m.forward(x).sum();
    let g = r.backward();
    (0..nl)
        .map(|l| {
            let gl = m.weight_grad(l, &g);
            let s: f64 = gl
                .iter()
                .zip(&folded[l])
                .map(|(g, w)| f64::from((g * w).abs()))
                .sum();
            if s.is_finite() { s } else { f64::MAX }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two channels of two weights: `Σ_c (Σ_{i∈c} F_i)·(max|w_c|/127)²·(4⁸−1)/24`, and a
    /// channel's batch-norm scale does not enter (the step is the layer's own).
    #[test]
    fn flip_fisher_by_hand() {
        let lw = ops::LayerWeights {
            weight: vec![1.0, -0.5, 0.25, 0.125],
            out_channels: 2,
            bn_scale: Some(vec![4.0, 0.1]),
        };
        let f = [1.0, 2.0, 3.0, 4.0];
        let pb = 65535.0 / 3.0 / 8.0;
        let want = 3.0 * (1.0f64 / 127.0).powi(2) * pb + 7.0 * (0.25f64 / 127.0).powi(2) * pb;
        let got = flip_fisher(&lw, &f);
        assert!((got - want).abs() < 1e-12 * want, "{got} vs {want}");
    }
}
