//! One optimiser step of a GCN: the textbook autodiff form (full batch) and Cluster-GCN's
//! form with every propagation done by the CSR kernel outside autodiff.

use ferrolab_core::burn::module::{ModuleVisitor, Param};
use ferrolab_core::burn::nn::loss::CrossEntropyLossConfig;
use ferrolab_core::burn::optim::{GradientsParams, ModuleOptimizer};
use ferrolab_core::burn::prelude::*;
use ferrolab_core::burn::tensor::Gradients;
use ferrolab_core::nn::int_tensor;
use ferrolab_core::sparse::SparseAdj;

use crate::kernel::{self, values};
use crate::models::{Gcn, GcnInput};
use crate::spmm::Propagation;

fn index_tensor(v: &[usize], dev: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = v.iter().map(|&i| i as i64).collect();
    int_tensor(&v, dev)
}

/// One optimiser step on the nodes `targets` (local indices into `x`) of a (sub)graph, with
/// propagation by gather/scatter under autodiff (the full-batch baseline's textbook form).
/// Returns the loss before the step and the updated model.
pub(super) fn step(
    model: Gcn,
    optim: &mut ModuleOptimizer,
    lr: f64,
    adj: &SparseAdj,
    x: &GcnInput,
    targets: &[usize],
    labels: &[usize],
) -> (f32, Gcn) {
    let (loss, grads) = gather_gradients(&model, adj, x, targets, labels);
    (loss, optim.step(lr, model, grads))
}

/// Cross-entropy on `targets` of a whole-network autodiff forward, and its gradients.
pub(super) fn gather_gradients(
    model: &Gcn,
    adj: &SparseAdj,
    x: &GcnInput,
    targets: &[usize],
    labels: &[usize],
) -> (f32, GradientsParams) {
    let logits = model.forward_input(adj, x);
    let dev = logits.device();
    let loss = cross_entropy(logits, targets, labels, &dev);
    let loss_value = values(loss.clone()).first().copied().unwrap_or(f32::NAN);
    (
        loss_value,
        GradientsParams::from_grads(loss.backward(), model),
    )
}

fn cross_entropy(
    logits: Tensor<2>,
    targets: &[usize],
    labels: &[usize],
    dev: &Device,
) -> Tensor<1> {
    let logits = logits.select(0, index_tensor(targets, dev));
    let y: Vec<i64> = targets.iter().map(|&i| labels[i] as i64).collect();
    CrossEntropyLossConfig::new()
        .init(dev)
        .forward(logits, int_tensor(&y, dev))
}

/// One Cluster-GCN training batch: its propagation matrix, features, the local indices of
/// its labelled nodes and every node's label.
pub(super) struct TrainBatch<'a> {
    pub adj: &'a Propagation,
    pub x: &'a GcnInput,
    pub targets: &'a [usize],
    pub labels: &'a [usize],
    /// Seeds the dropout masks of the dense-feature kernel.
    pub mask_seed: u64,
}

/// Cluster-GCN's optimiser step: the hand-written kernel for dense features
/// ([`kernel::dense_gradients`]), else [`batch_gradients`]; then Adam.
/// Returns the loss before the step and the updated model.
pub(super) fn step_csr(
    model: Gcn,
    optim: &mut ModuleOptimizer,
    lr: f64,
    b: &TrainBatch<'_>,
) -> (f32, Gcn) {
    let (loss, grads) = match b.x {
        GcnInput::Dense(x) => kernel::dense_gradients(
            &model,
            b.adj,
            &values((**x).clone()),
            x.dims()[1],
            b.targets,
            b.labels,
            b.mask_seed,
        ),
        GcnInput::Sparse(_) => batch_gradients(&model, b.adj, b.x, b.targets, b.labels),
    };
    (loss, optim.step(lr, model, grads))
}

/// Cross-entropy on `targets` and the parameter gradients of one batch, with every `Â`
/// product done by the CSR kernel ([`Propagation`]) outside autodiff: the same values as
/// [`step`]'s gather/scatter, without its per-entry messages.
///
/// burn cannot record a user-defined op, so the network is cut at each propagation into
/// burn segments: segment 0 computes layer 0's `(X W_n, X W_s)`; segment `l` starts from
/// leaves `P = Â (H W_n)` and `S = H W_s` of layer `l - 1` and ends with layer `l`'s
/// products (the last one with the loss). The backward runs the segments in reverse: a
/// segment's leaf gradient `dP` becomes `Âᵀ dP`, the gradient of the previous segment's
/// `H W_n`, which is backpropagated there through the surrogate `sum(H W_n ⊙ Âᵀ dP) + sum(S ⊙ dS)`.
/// Every parameter lives in exactly one segment, but the merge adds up in case one does not.
pub(super) fn batch_gradients(
    model: &Gcn,
    adj: &Propagation,
    x: &GcnInput,
    targets: &[usize],
    labels: &[usize],
) -> (f32, GradientsParams) {
    let layers = model.num_layers();
    // Per layer: its products before propagation (outputs of the previous segment) and the
    // leaves that stand for them in the next.
    let mut products = Vec::with_capacity(layers);
    let mut leaves = Vec::with_capacity(layers);
    let mut next = Some(model.input_pre(x));
    let mut logits = None;
    for l in 0..layers {
        let Some((hw, self_part)) = next.take() else {
            break;
        };
        let ([n, d], dev) = (hw.dims(), hw.device());
        let p = adj.apply(&values(hw.clone()), d);
        let p = Tensor::<2>::from_data(TensorData::new(p, [n, d]), &dev).require_grad();
        let s = self_part.clone().map(|s| s.detach().require_grad());
        let out = model.layer_post(l, p.clone(), s.clone());
        products.push((hw, self_part));
        leaves.push((p, s));
        if l + 1 < layers {
            next = Some(model.layer_pre(l + 1, out));
        } else {
            logits = Some(out);
        }
    }
    let Some(logits) = logits else {
        return (0.0, GradientsParams::new());
    };
    let dev = logits.device();
    let loss = cross_entropy(logits, targets, labels, &dev);
    let loss_value = values(loss.clone()).first().copied().unwrap_or(f32::NAN);
    let mut segments = Vec::with_capacity(layers + 1);
    let mut grads = Some(loss.backward());
    for ((hw, self_part), (p, s)) in products.iter().zip(&leaves).rev() {
        let Some(mut g) = grads.take() else { break };
        let mut surrogate: Option<Tensor<1>> = None;
        if let Some(dp) = p.grad_remove(&mut g) {
            let [n, d] = dp.dims();
            let dhw = adj.apply_t(&values(dp), d);
            let dhw = Tensor::<2>::from_data(TensorData::new(dhw, [n, d]), &dev);
            surrogate = Some((hw.clone() * dhw).sum());
        }
        if let (Some(s), Some(self_part)) = (s, self_part)
            && let Some(ds) = s.grad_remove(&mut g)
        {
            // `ds` has no autodiff association: a constant in this product.
            let t = (self_part.clone() * ds).sum();
            surrogate = Some(match surrogate {
                Some(a) => a + t,
                None => t,
            });
        }
        segments.push(g);
        grads = surrogate.filter(Tensor::is_tracked).map(|t| t.backward());
    }
    segments.extend(grads);
    let mut merge = MergeGrads {
        segments: &mut segments,
        out: GradientsParams::new(),
    };
    model.visit(&mut merge);
    (loss_value, merge.out)
}

/// Gathers each parameter's gradient from the segments' backward passes, summing where a
/// parameter appears in several.
struct MergeGrads<'a> {
    segments: &'a mut [Gradients],
    out: GradientsParams,
}

impl ModuleVisitor for MergeGrads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !param.is_require_grad() {
            return;
        }
        let t = param.val();
        let total = self
            .segments
            .iter_mut()
            .filter_map(|g| t.grad_remove(g))
            .reduce(|a, b| a + b);
        if let Some(total) = total {
            self.out.register(param.id, total);
        }
    }
}
