//! Embeddings and the three base models, each with plain or APG layers in its deep part.
//!
//! * Wide&Deep (Cheng et al. 2016): `logit = w₀ + Σ_f w_f(x_f) + MLP(e)`; the wide part here
//!   is the first-order term over every field (no hand-made cross-product features).
//! * DeepFM (Guo et al. 2017): Wide&Deep's logit plus the factorisation-machine term
//!   `½ Σ_d [(Σ_f e_{f,d})² − Σ_f e_{f,d}²]`.
//! * DCNv2 (Wang et al. 2021), parallel form: cross layers `x_{l+1} = x₀ ⊙ (W_l x_l + b_l) + x_l`
//!   beside the deep tower, `logit = w·[x_L ; h] + b`.
//!
//! `e` is the concatenation of the F field embeddings (`[B, F·D]`); the deep tower's hidden
//! layers are `Linear → ReLU` (plain) or `APG → ReLU`, its output layer is linear.

use crate::apg::{ApgLayer, ApgLayerConfig, ConditionMode};
use crate::error::{CtrError, Result};
use crate::schema::Layout;
use burn::module::Param;
use burn::nn::{Embedding, EmbeddingConfig, Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;
use serde::{Deserialize, Serialize};

/// Which base model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaseModel {
    /// Wide&Deep.
    WideDeep,
    /// DeepFM.
    Deepfm,
    /// DCNv2 (parallel).
    Dcnv2,
}

impl BaseModel {
    /// Report key: `wide_deep`, `deepfm`, `dcnv2`.
    pub fn name(self) -> &'static str {
        match self {
            BaseModel::WideDeep => "wide_deep",
            BaseModel::Deepfm => "deepfm",
            BaseModel::Dcnv2 => "dcnv2",
        }
    }
    /// Parses a report key.
    pub fn parse(s: &str) -> Option<Self> {
        [BaseModel::WideDeep, BaseModel::Deepfm, BaseModel::Dcnv2]
            .into_iter()
            .find(|m| m.name() == s)
    }
}

/// APG settings of a model's deep layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApgSpec {
    /// Rank K of the generated core.
    pub rank: usize,
    /// Over-parameterisation width P (0 = off).
    pub overparam: usize,
    /// Condition mode.
    pub condition: ConditionMode,
    /// Fields whose embeddings form the group condition.
    pub condition_fields: Vec<String>,
    /// Hyper-network hidden width.
    pub hyper_hidden: usize,
    /// Generate a per-instance bias too.
    #[serde(default = "yes")]
    pub generate_bias: bool,
}

fn yes() -> bool {
    true
}

impl ApgSpec {
    /// The layout positions of the group condition's fields (none unless the condition uses
    /// the group); an unknown field is an error naming the fields there are.
    pub fn condition_positions(&self, layout: &Layout) -> Result<Vec<usize>> {
        if !self.condition.uses_group() {
            return Ok(Vec::new());
        }
        if self.condition_fields.is_empty() {
            return Err(CtrError::Invalid(
                "apg.condition = group or mix needs apg.condition_fields".into(),
            ));
        }
        self.condition_fields
            .iter()
            .map(|name| {
                layout.position(name).ok_or_else(|| {
                    CtrError::Invalid(format!(
                        "apg.condition_fields: `{name}` is not a field (fields: {})",
                        layout.field_names()
                    ))
                })
            })
            .collect()
    }
}

/// A model's architecture: everything needed to rebuild it (stored in checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Base model.
    pub base: BaseModel,
    /// Field embedding width D.
    pub embed_dim: usize,
    /// Hidden widths of the deep tower.
    pub hidden: Vec<usize>,
    /// Cross layers (DCNv2 only).
    pub cross_layers: usize,
    /// APG deep layers, or plain ones when `None`.
    pub apg: Option<ApgSpec>,
}

impl ModelSpec {
    /// Report key: `deepfm` or `deepfm_apg`.
    pub fn name(&self) -> String {
        match self.apg {
            Some(_) => format!("{}_apg", self.base.name()),
            None => self.base.name().to_string(),
        }
    }
}

/// One DCNv2 cross layer.
#[derive(Module, Debug)]
pub struct CrossLayer {
    w: Linear,
}

/// A CTR model: embeddings, first-order term, deep tower and the base model's extra part.
#[derive(Module, Debug)]
pub struct CtrNet {
    emb: Embedding,
    lin: Embedding,
    bias: Param<Tensor<1>>,
    plain: Vec<Linear>,
    apg: Vec<ApgLayer>,
    deep_out: Option<Linear>,
    cross: Vec<CrossLayer>,
    head: Option<Linear>,
    fm: bool,
    first_order: bool,
    num_single: usize,
    multi_lens: Vec<usize>,
    cond_fields: Vec<usize>,
}

impl CtrNet {
    /// Builds `spec` for the fields of `layout`. The embedding tables are drawn first, so two
    /// models built after the same `seed_backend` start from the same embeddings.
    pub fn new(spec: &ModelSpec, layout: &Layout, device: &Device) -> Result<Self> {
        let d = spec.embed_dim;
        let emb = EmbeddingConfig::new(layout.rows(), d)
            .with_initializer(Initializer::Normal {
                mean: 0.0,
                std: 0.01,
            })
            .init(device);
        let lin = EmbeddingConfig::new(layout.rows(), 1)
            .with_initializer(Initializer::Zeros)
            .init(device);
        let f = layout.num_fields();
        let flat = f * d;
        let mut cond_fields = Vec::new();
        let (mut plain, mut apg) = (Vec::new(), Vec::new());
        let mut width = flat;
        if let Some(a) = &spec.apg {
            cond_fields = a.condition_positions(layout)?;
            for &h in &spec.hidden {
                apg.push(
                    ApgLayerConfig::new(width, h, a.condition)
                        .with_group_dim(cond_fields.len() * d)
                        .with_rank(a.rank)
                        .with_overparam(a.overparam)
                        .with_hyper_hidden(a.hyper_hidden)
                        .with_generate_bias(a.generate_bias)
                        .init(device),
                );
                width = h;
            }
        } else {
            for &h in &spec.hidden {
                plain.push(LinearConfig::new(width, h).init(device));
                width = h;
            }
        }
        let (deep_out, cross, head) = match spec.base {
            BaseModel::WideDeep | BaseModel::Deepfm => (
                Some(LinearConfig::new(width, 1).init(device)),
                Vec::new(),
                None,
            ),
            BaseModel::Dcnv2 => (
                None,
                (0..spec.cross_layers)
                    .map(|_| CrossLayer {
                        w: LinearConfig::new(flat, flat).init(device),
                    })
                    .collect(),
                Some(LinearConfig::new(flat + width, 1).init(device)),
            ),
        };
        Ok(CtrNet {
            emb,
            lin,
            bias: Initializer::Zeros.init([1], device),
            plain,
            apg,
            deep_out,
            cross,
            head,
            fm: spec.base == BaseModel::Deepfm,
            first_order: spec.base != BaseModel::Dcnv2,
            num_single: layout.num_single(),
            multi_lens: layout.multi_lens(),
            cond_fields,
        })
    }

    /// Field embeddings `[B, F, D]` from slot ids and weights `[B, S]`.
    pub fn fields(&self, ids: Tensor<2, Int>, w: Tensor<2>) -> Tensor<3> {
        let e = self.emb.forward(ids) * w.unsqueeze_dim::<3>(2);
        if self.multi_lens.is_empty() {
            return e;
        }
        let mut parts = Vec::with_capacity(1 + self.multi_lens.len());
        if self.num_single > 0 {
            parts.push(e.clone().narrow(1, 0, self.num_single));
        }
        let mut off = self.num_single;
        for &len in &self.multi_lens {
            parts.push(e.clone().narrow(1, off, len).sum_dim(1));
            off += len;
        }
        Tensor::cat(parts, 1)
    }

    /// Click logits `[B]` from slot ids and weights `[B, S]`.
    pub fn forward(&self, ids: Tensor<2, Int>, w: Tensor<2>) -> Tensor<1> {
        let [b, _] = ids.dims();
        let device = ids.device();
        let fields = self.fields(ids.clone(), w.clone());
        let [_, f, d] = fields.dims();
        let flat = fields.clone().reshape([b, f * d]);
        let group = (!self.cond_fields.is_empty()).then(|| {
            let idx: Vec<i64> = self.cond_fields.iter().map(|&i| i as i64).collect();
            let idx = ferrolab_core::nn::int_tensor(&idx, &device);
            fields
                .clone()
                .select(1, idx)
                .reshape([b, self.cond_fields.len() * d])
        });
        let mut h = flat.clone();
        for l in &self.plain {
            h = relu(l.forward(h));
        }
        for l in &self.apg {
            h = relu(l.forward(h, group.clone()));
        }
        let mut logit = match (&self.deep_out, &self.head) {
            (Some(out), _) => out.forward(h),
            (None, Some(head)) => {
                let mut x = flat.clone();
                for c in &self.cross {
                    x = flat.clone() * c.w.forward(x.clone()) + x;
                }
                head.forward(Tensor::cat(vec![x, h], 1))
            }
            (None, None) => Tensor::zeros([b, 1], &device),
        }
        .reshape([b]);
        if self.first_order {
            let first = (self.lin.forward(ids) * w.unsqueeze_dim::<3>(2)).sum_dim(1);
            logit = logit + first.reshape([b]) + self.bias.val();
        }
        if self.fm {
            let sum_sq = fields.clone().sum_dim(1).powi_scalar(2);
            let sq_sum = fields.powi_scalar(2).sum_dim(1);
            logit = logit + (sum_sq - sq_sum).sum_dim(2).reshape([b]) * 0.5;
        }
        logit
    }

    /// The same model with every over-parameterised APG layer merged (identical outputs).
    pub fn merged(mut self) -> Self {
        self.apg = self.apg.into_iter().map(ApgLayer::merged).collect();
        self
    }

    /// The APG layers (empty for a plain model).
    pub fn apg_layers(&self) -> &[ApgLayer] {
        &self.apg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Encoded, Field, Schema};
    use ferrolab_core::backend::{device, exclusive_rng, train_device};
    use ferrolab_core::nn::to_vec_f32;

    fn layout() -> Layout {
        Layout::new(Schema {
            fields: vec![
                Field::categorical("user", (0..5).map(|i| i.to_string()).collect()),
                Field::numeric("x"),
                Field::multi_hot("tags", (0..4).map(|i| i.to_string()).collect(), 3),
            ],
        })
        .unwrap()
    }

    fn batch(l: &Layout, dev: &Device) -> (Tensor<2, Int>, Tensor<2>) {
        let mut e = Encoded::new(l.slots());
        let mut oov = vec![0; 3];
        for row in ["1\t0.5\t0|2", "3\t-1\t1", "9\t2\t", "0\t0\t3|1|2"] {
            l.parse_row(row, &mut e, &mut oov).unwrap();
        }
        let n = e.len();
        let ids: Vec<i64> = e.ids.iter().map(|&i| i64::from(i)).collect();
        (
            Tensor::from_data(TensorData::new(ids, [n, l.slots()]), dev),
            Tensor::from_data(TensorData::new(e.w.clone(), [n, l.slots()]), dev),
        )
    }

    fn spec(base: BaseModel, apg: Option<ConditionMode>, overparam: usize) -> ModelSpec {
        ModelSpec {
            base,
            embed_dim: 4,
            hidden: vec![8, 6],
            cross_layers: 2,
            apg: apg.map(|c| ApgSpec {
                rank: 3,
                overparam,
                condition: c,
                condition_fields: vec!["user".into()],
                hyper_hidden: 5,
                generate_bias: true,
            }),
        }
    }

    #[test]
    fn every_model_and_condition_gives_one_logit_per_row() {
        let dev = device();
        let l = layout();
        let (ids, w) = batch(&l, &dev);
        assert_eq!(
            CtrNet::new(&spec(BaseModel::Deepfm, None, 0), &l, &dev)
                .unwrap()
                .fields(ids.clone(), w.clone())
                .dims(),
            [4, 3, 4]
        );
        for base in [BaseModel::WideDeep, BaseModel::Deepfm, BaseModel::Dcnv2] {
            for c in [
                None,
                Some(ConditionMode::SelfWise),
                Some(ConditionMode::GroupWise),
                Some(ConditionMode::MixWise),
            ] {
                let m = CtrNet::new(&spec(base, c, 0), &l, &dev).unwrap();
                let y = m.forward(ids.clone(), w.clone());
                assert_eq!(y.dims(), [4]);
                assert!(to_vec_f32(y).iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn unknown_condition_field_is_an_error() {
        let mut s = spec(BaseModel::Deepfm, Some(ConditionMode::GroupWise), 0);
        s.apg.as_mut().unwrap().condition_fields = vec!["nope".into()];
        let e = CtrNet::new(&s, &layout(), &device())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("user"), "{e}");
    }

    #[test]
    fn merged_model_predicts_the_same() {
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(9);
        let l = layout();
        let m = CtrNet::new(
            &spec(BaseModel::Dcnv2, Some(ConditionMode::MixWise), 6),
            &l,
            &dev,
        )
        .unwrap();
        // Give the hyper-networks non-zero outputs so the cores are not the identity.
        let m = m.map(&mut Perturb);
        let (ids, w) = batch(&l, &dev);
        let a = to_vec_f32(m.forward(ids.clone(), w.clone()));
        let merged = m.merged();
        let b = to_vec_f32(merged.forward(ids, w));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-4 * x.abs().max(1.0), "{a:?} vs {b:?}");
        }
    }

    /// Adds 0.05 to every parameter (so zero-initialised layers become non-trivial).
    struct Perturb;
    impl burn::module::ModuleMapper for Perturb {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t + 0.05)
        }
    }
}
