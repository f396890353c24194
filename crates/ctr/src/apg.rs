//! APG: adaptive parameter generation (Yan et al., "APG: Adaptive Parameter Generation
//! Network for Click-Through Rate Prediction", NeurIPS 2022).
//!
//! A static layer `y = x W + b` becomes `y = ((x U) S(z)) V + b`, where the K×K core
//! `S(z)` is generated per instance from a condition `z` by a small hyper-network and
//! `U ∈ R^{in×K}`, `V ∈ R^{K×out}` are shared by all instances (the paper's low-rank,
//! decomposed feed-forward: O((in + out)K + K²) per instance instead of an in×out matrix).
//! The condition is the layer's own input (self-wise), embeddings of chosen fields such as the
//! user's (group-wise), or both concatenated (mix-wise).
//!
//! Over-parameterisation (the paper's §3.3) trains `U = U_l U_r` (in×P, P×K) and
//! `V = V_l V_r` (K×P, P×out) with P ≥ K, which changes the optimisation but not the function
//! class, and [`ApgLayer::merged`] multiplies the factors out after training so serving costs
//! the same as without it.
//!
//! We generate `S(z) = I + MLP(z)` with the MLP's last layer initialised to zero, so an
//! untrained layer is exactly the static low-rank layer `x U V + b`; the hyper-network learns
//! the per-instance deviation. [`NaiveApgLayer`] generates the whole in×out matrix per instance
//! (the "regular" parameter generation APG improves on) and exists for the efficiency
//! comparison only.

use burn::module::Param;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

/// What the hyper-network sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionMode {
    /// The layer's own input.
    #[serde(rename = "self")]
    SelfWise,
    /// Embeddings of the condition fields (e.g. the user's).
    #[serde(rename = "group")]
    GroupWise,
    /// Both, concatenated.
    #[default]
    #[serde(rename = "mix")]
    MixWise,
}

impl ferrolab_core::config::ConfigValue for ConditionMode {
    fn describe_into(
        &self,
        key: &str,
        doc: &str,
        _range: &str,
        out: &mut Vec<ferrolab_core::config::KeyDoc>,
    ) {
        ferrolab_core::config::scalar_doc(self, key, doc, "`self`, `group` or `mix`", out);
    }
}

impl ConditionMode {
    /// Width of the hyper-network's input for a layer of input width `d_in`.
    pub fn condition_dim(self, d_in: usize, group_dim: usize) -> usize {
        match self {
            ConditionMode::SelfWise => d_in,
            ConditionMode::GroupWise => group_dim,
            ConditionMode::MixWise => d_in + group_dim,
        }
    }
    /// Whether group embeddings are needed.
    pub fn uses_group(self) -> bool {
        self != ConditionMode::SelfWise
    }
}

/// Configuration of an [`ApgLayer`] or [`NaiveApgLayer`].
#[derive(Config, Debug)]
pub struct ApgLayerConfig {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Condition mode.
    pub condition: ConditionMode,
    /// Width of the group condition (0 for self-wise).
    #[config(default = 0)]
    pub group_dim: usize,
    /// Rank K of the generated core.
    #[config(default = 16)]
    pub rank: usize,
    /// Over-parameterisation width P (0 = off; otherwise ≥ K).
    #[config(default = 0)]
    pub overparam: usize,
    /// Hidden width of the hyper-network.
    #[config(default = 32)]
    pub hyper_hidden: usize,
    /// Also generate a per-instance bias (added to the shared one), as FuxiCTR's APG does.
    #[config(default = true)]
    pub generate_bias: bool,
}

fn normal(std: f64) -> Initializer {
    Initializer::Normal { mean: 0.0, std }
}

/// The adaptive layer.
#[derive(Module, Debug)]
pub struct ApgLayer {
    /// Factors whose product is U (one factor when merged or not over-parameterised).
    u: Vec<Param<Tensor<2>>>,
    /// Factors whose product is V.
    v: Vec<Param<Tensor<2>>>,
    bias: Param<Tensor<1>>,
    hyper_in: Linear,
    hyper_out: Linear,
    rank: usize,
    /// Output width when the bias is generated too, else 0.
    generated_bias: usize,
    #[module(skip)]
    condition: ConditionMode,
}

impl ApgLayerConfig {
    /// Builds the layer. Initial scales make `x U V` match a default linear layer's variance.
    pub fn init(&self, device: &Device) -> ApgLayer {
        let (i, o, k, p) = (self.d_in, self.d_out, self.rank.max(1), self.overparam);
        let fi = |n: usize| (1.0 / n as f64).sqrt();
        let (u, v) = if p > 0 {
            (
                vec![
                    normal(fi(i)).init([i, p], device),
                    normal(fi(p)).init([p, k], device),
                ],
                vec![
                    normal(fi(k)).init([k, p], device),
                    normal(fi(3 * p)).init([p, o], device),
                ],
            )
        } else {
            (
                vec![normal(fi(i)).init([i, k], device)],
                vec![normal(fi(3 * k)).init([k, o], device)],
            )
        };
        let c = self.condition.condition_dim(i, self.group_dim);
        ApgLayer {
            u,
            v,
            bias: Initializer::Zeros.init([o], device),
            hyper_in: LinearConfig::new(c, self.hyper_hidden).init(device),
            hyper_out: LinearConfig::new(
                self.hyper_hidden,
                k * k + if self.generate_bias { o } else { 0 },
            )
            .with_initializer(Initializer::Zeros)
            .init(device),
            rank: k,
            generated_bias: if self.generate_bias { o } else { 0 },
            condition: self.condition,
        }
    }

    /// Builds the naive full-matrix variant with the same condition and hyper-network width.
    pub fn init_naive(&self, device: &Device) -> NaiveApgLayer {
        let c = self.condition.condition_dim(self.d_in, self.group_dim);
        NaiveApgLayer {
            hyper_in: LinearConfig::new(c, self.hyper_hidden).init(device),
            hyper_out: LinearConfig::new(self.hyper_hidden, self.d_in * self.d_out)
                .with_initializer(normal(0.01))
                .init(device),
            bias: Initializer::Zeros.init([self.d_out], device),
            d_in: self.d_in,
            d_out: self.d_out,
            condition: self.condition,
        }
    }
}

fn condition(mode: ConditionMode, x: &Tensor<2>, group: Option<Tensor<2>>) -> Tensor<2> {
    match (mode, group) {
        (ConditionMode::GroupWise, Some(g)) => g,
        (ConditionMode::MixWise, Some(g)) => Tensor::cat(vec![x.clone(), g], 1),
        // Self-wise, or a group mode called without group embeddings (a programming error
        // caught by the model tests): the input is the only condition available.
        _ => x.clone(),
    }
}

impl ApgLayer {
    /// The generated cores `S(z) [B, K, K]` and, when enabled, biases `[B, out]`.
    fn generate(&self, x: &Tensor<2>, group: Option<Tensor<2>>) -> (Tensor<3>, Option<Tensor<2>>) {
        let [b, _] = x.dims();
        let k = self.rank;
        let z = condition(self.condition, x, group);
        let g = self.hyper_out.forward(relu(self.hyper_in.forward(z)));
        let eye = Tensor::<2>::eye(k, &x.device()).unsqueeze_dim::<3>(0);
        if self.generated_bias > 0 {
            let s = g.clone().narrow(1, 0, k * k).reshape([b, k, k]) + eye;
            (s, Some(g.narrow(1, k * k, self.generated_bias)))
        } else {
            (g.reshape([b, k, k]) + eye, None)
        }
    }

    /// `x [B, in]`, group condition `[B, G]` (ignored when self-wise) → `[B, out]`.
    pub fn forward(&self, x: Tensor<2>, group: Option<Tensor<2>>) -> Tensor<2> {
        let [b, _] = x.dims();
        let k = self.rank;
        let (s, gen_bias) = self.generate(&x, group);
        let mut h = x;
        for u in &self.u {
            h = h.matmul(u.val());
        }
        // (h S)_j = Σ_i h_i S_ij as a broadcast product and a sum.
        let mut h = (h.unsqueeze_dim::<3>(2) * s).sum_dim(1).reshape([b, k]);
        for v in &self.v {
            h = h.matmul(v.val());
        }
        let h = h + self.bias.val().unsqueeze_dim::<2>(0);
        match gen_bias {
            Some(gb) => h + gb,
            None => h,
        }
    }

    /// The generated cores `S(z)` `[B, K, K]` (for inspection and tests).
    pub fn cores(&self, x: Tensor<2>, group: Option<Tensor<2>>) -> Tensor<3> {
        self.generate(&x, group).0
    }

    /// True when U and V are stored as products of factors (over-parameterised, unmerged).
    pub fn is_overparameterised(&self) -> bool {
        self.u.len() > 1 || self.v.len() > 1
    }

    /// Multiplies out the over-parameterised factors: the same function with one U and one V.
    pub fn merged(self) -> Self {
        let prod = |ps: Vec<Param<Tensor<2>>>| -> Vec<Param<Tensor<2>>> {
            let mut it = ps.into_iter().map(|p| p.val());
            let first = it.next();
            let m = first.map(|f| it.fold(f, |a, b| a.matmul(b)));
            m.map(|t| Param::from_tensor(t.detach()))
                .into_iter()
                .collect()
        };
        ApgLayer {
            u: prod(self.u),
            v: prod(self.v),
            ..self
        }
    }

    /// U (merged product) `[in, K]`.
    pub fn u_matrix(&self) -> Tensor<2> {
        let mut it = self.u.iter().map(Param::val);
        let first = it
            .next()
            .unwrap_or_else(|| Tensor::zeros([1, 1], &Device::default()));
        it.fold(first, |a, b| a.matmul(b))
    }

    /// V (merged product) `[K, out]`.
    pub fn v_matrix(&self) -> Tensor<2> {
        let mut it = self.v.iter().map(Param::val);
        let first = it
            .next()
            .unwrap_or_else(|| Tensor::zeros([1, 1], &Device::default()));
        it.fold(first, |a, b| a.matmul(b))
    }

    /// The bias `[out]`.
    pub fn bias(&self) -> Tensor<1> {
        self.bias.val()
    }
}

/// Per-instance generation of the full in×out matrix (no low rank, no decomposition): the
/// baseline of the efficiency comparison.
#[derive(Module, Debug)]
pub struct NaiveApgLayer {
    hyper_in: Linear,
    hyper_out: Linear,
    bias: Param<Tensor<1>>,
    d_in: usize,
    d_out: usize,
    #[module(skip)]
    condition: ConditionMode,
}

impl NaiveApgLayer {
    /// `x [B, in]` → `[B, out]` through a generated `W(z) [B, in, out]`.
    pub fn forward(&self, x: Tensor<2>, group: Option<Tensor<2>>) -> Tensor<2> {
        let [b, _] = x.dims();
        let z = condition(self.condition, &x, group);
        let w = self
            .hyper_out
            .forward(relu(self.hyper_in.forward(z)))
            .reshape([b, self.d_in, self.d_out]);
        x.unsqueeze_dim::<3>(1).matmul(w).reshape([b, self.d_out])
            + self.bias.val().unsqueeze_dim::<2>(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use ferrolab_core::backend::{device, exclusive_rng, train_device};
    use ferrolab_core::nn::gradcheck::check_input_gradient;
    use ferrolab_core::nn::to_vec_f32;

    fn max_abs_diff(a: Tensor<2>, b: Tensor<2>) -> f32 {
        to_vec_f32((a - b).abs().max())[0]
    }

    #[test]
    fn shapes_for_every_condition() {
        let _rng = ferrolab_core::backend::exclusive_rng();
        let dev = device();
        let x = Tensor::<2>::random([5, 12], Distribution::Normal(0.0, 1.0), &dev);
        let g = Tensor::<2>::random([5, 6], Distribution::Normal(0.0, 1.0), &dev);
        for mode in [
            ConditionMode::SelfWise,
            ConditionMode::GroupWise,
            ConditionMode::MixWise,
        ] {
            let l = ApgLayerConfig::new(12, 7, mode)
                .with_group_dim(6)
                .with_rank(4)
                .init(&dev);
            assert_eq!(l.forward(x.clone(), Some(g.clone())).dims(), [5, 7]);
            let n = ApgLayerConfig::new(12, 7, mode)
                .with_group_dim(6)
                .init_naive(&dev);
            assert_eq!(n.forward(x.clone(), Some(g.clone())).dims(), [5, 7]);
        }
    }

    /// With K = in, an untrained hyper-network (S = I) and U = I, the layer is the linear
    /// layer `x V + b`.
    #[test]
    fn identity_core_reduces_to_a_linear_layer() {
        let dev = device();
        let _rng = exclusive_rng();
        dev.seed(2);
        let mut l = ApgLayerConfig::new(6, 4, ConditionMode::SelfWise)
            .with_rank(6)
            .init(&dev);
        l.u = vec![Param::from_tensor(Tensor::<2>::eye(6, &dev))];
        let x = Tensor::<2>::random([9, 6], Distribution::Normal(0.0, 1.0), &dev);
        let y = l.forward(x.clone(), None);
        let linear = x.matmul(l.v_matrix()) + l.bias().unsqueeze_dim::<2>(0);
        assert!(max_abs_diff(y, linear) < 1e-5);
    }

    /// A trained-looking (non-zero) hyper-network makes the output instance-dependent: two
    /// instances with the same x but different group conditions get different outputs.
    #[test]
    fn group_condition_changes_the_parameters() {
        let dev = device();
        let _rng = exclusive_rng();
        dev.seed(3);
        let mut l = ApgLayerConfig::new(5, 3, ConditionMode::GroupWise)
            .with_group_dim(2)
            .with_rank(3)
            .init(&dev);
        l.hyper_out = LinearConfig::new(32, 9 + 3).init(&dev);
        let x = Tensor::<2>::random([1, 5], Distribution::Normal(0.0, 1.0), &dev).repeat_dim(0, 2);
        let g = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]), &dev);
        let y = l.forward(x, Some(g));
        let v = to_vec_f32(y);
        let d: f32 = (0..3).map(|j| (v[j] - v[3 + j]).abs()).sum();
        assert!(d > 1e-3, "outputs {v:?}");
    }

    #[test]
    fn merged_overparameterised_layer_gives_the_same_outputs() {
        let dev = device();
        let _rng = exclusive_rng();
        dev.seed(4);
        let mut l = ApgLayerConfig::new(10, 6, ConditionMode::MixWise)
            .with_group_dim(4)
            .with_rank(3)
            .with_overparam(8)
            .init(&dev);
        l.hyper_out = LinearConfig::new(32, 9 + 6).init(&dev);
        assert!(l.is_overparameterised());
        let x = Tensor::<2>::random([7, 10], Distribution::Normal(0.0, 1.0), &dev);
        let g = Tensor::<2>::random([7, 4], Distribution::Normal(0.0, 1.0), &dev);
        let before = l.forward(x.clone(), Some(g.clone()));
        let params_before = burn::module::Module::num_params(&l);
        let m = l.merged();
        assert!(!m.is_overparameterised());
        assert!(burn::module::Module::num_params(&m) < params_before);
        let after = m.forward(x, Some(g));
        assert!(max_abs_diff(before, after) < 1e-4);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(5);
        let mut l = ApgLayerConfig::new(4, 3, ConditionMode::SelfWise)
            .with_rank(2)
            .with_overparam(3)
            .with_hyper_hidden(5)
            .init(&dev);
        l.hyper_out = LinearConfig::new(5, 4 + 3).init(&dev);
        check_input_gradient(|x: Tensor<2>| l.forward(x, None), [3, 4], 17);
        let n = ApgLayerConfig::new(4, 3, ConditionMode::SelfWise)
            .with_hyper_hidden(5)
            .init_naive(&dev);
        check_input_gradient(|x: Tensor<2>| n.forward(x, None), [3, 4], 18);
    }
}
