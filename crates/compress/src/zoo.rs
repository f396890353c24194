//! The model zoo of the layer-importance study and the [`LayerParams`] view the operators act
//! through.
//!
//! [`ZooNet`] is built from `ferrolab_vision::layers` (the same `ConvBn`, pooling and kernels as
//! `ferrolab_vision::models`) but as an explicit list of stages, because the ground-truth sweep
//! caches the activations entering a layer's stage and recomputes only the stages after it:
//! vision's `ResNet`/`Vgg`/`MobileNet` keep their layers private and expose only a whole
//! `forward`. The architectures follow those models (ResNet-20 with option-A shortcuts,
//! VGG's 2×(conv-BN-ReLU) + max pool per stage, MobileNet's depthwise-separable blocks), with
//! a width multiplier for the quick preset, plus an MLP.

use crate::ops::{LayerWeights, OpError};
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;
use ferrolab_core::nn::to_vec_f32;
use ferrolab_vision::layers::{
    Conv2dConfig, ConvBn, add_relu, global_avg_pool, max_pool2d, relu, shortcut_a,
};
use serde::{Deserialize, Serialize};

/// Read and write access to a model's compressible layers (convolutions and linear layers),
/// each with the batch norm that follows it. Every model of the zoo implements it; the
/// operators of [`crate::ops`] act on what [`layer`](Self::layer) returns.
pub trait LayerParams {
    /// Layer names, in forward order.
    fn layer_names(&self) -> Vec<String>;
    /// Layer `l`'s weights (output channel major) and batch-norm scale.
    fn layer(&self, l: usize) -> LayerWeights;
    /// Replaces layer `l`'s weights (same length and layout as [`layer`](Self::layer)).
    fn set_layer_weight(&mut self, l: usize, w: &[f32]);
    /// The index of the layer called `name`.
    fn find_layer(&self, name: &str) -> Result<usize, OpError> {
        self.layer_names()
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| OpError::Layer(name.to_string()))
    }
    /// Weights per layer.
    fn layer_sizes(&self) -> Vec<usize> {
        (0..self.layer_names().len())
            .map(|l| self.layer(l).weight.len())
            .collect()
    }
}

/// One stage of a [`ZooNet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// `relu(bn(conv(x)))` with `convs[conv]`.
    Conv { conv: usize },
    /// Basic residual block: `relu(bn(conv2(relu(bn(conv1(x))))) + shortcut(x))`, option A
    /// shortcut (subsample by `stride`, zero-pad `pad` channels on each side).
    Block {
        c1: usize,
        c2: usize,
        stride: usize,
        pad: usize,
    },
    /// 2×2 max pool.
    MaxPool,
    /// Global average pooling `[N, C, H, W] → [N, C]`.
    Gap,
    /// `[N, C, H, W] → [N, C·H·W]`.
    Flatten,
    /// `fcs[fc]`, then ReLU unless it is the output.
    Fc { fc: usize, relu: bool },
}

/// Activations between stages.
#[derive(Debug, Clone)]
pub enum Act {
    Map(Tensor<4>),
    Flat(Tensor<2>),
}

impl Act {
    fn map(self) -> Tensor<4> {
        match self {
            Act::Map(t) => t,
            // Plans never put a map op after a flat one (checked when built).
            Act::Flat(t) => {
                let [n, c] = t.dims();
                t.reshape([n, c, 1, 1])
            }
        }
    }
    fn flat(self) -> Tensor<2> {
        match self {
            Act::Flat(t) => t,
            Act::Map(t) => {
                let [n, c, h, w] = t.dims();
                t.reshape([n, c * h * w])
            }
        }
    }
    /// Rows (images).
    pub fn rows(&self) -> usize {
        match self {
            Act::Map(t) => t.dims()[0],
            Act::Flat(t) => t.dims()[0],
        }
    }
    /// Rows `a..b`.
    pub fn slice_rows(&self, a: usize, b: usize) -> Act {
        match self {
            Act::Map(t) => Act::Map(t.clone().slice(s![a..b])),
            Act::Flat(t) => Act::Flat(t.clone().slice(s![a..b])),
        }
    }
    /// Concatenation along rows.
    pub fn cat(parts: Vec<Act>) -> Act {
        if matches!(parts.first(), Some(Act::Flat(_))) {
            Act::Flat(Tensor::cat(parts.into_iter().map(Act::flat).collect(), 0))
        } else {
            Act::Map(Tensor::cat(parts.into_iter().map(Act::map).collect(), 0))
        }
    }
}

/// Where a layer lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Slot {
    Conv(usize),
    Fc(usize),
}

/// A zoo network: convolutions (each with its batch norm) and linear layers run by a plan.
#[derive(Module, Debug)]
pub struct ZooNet {
    pub convs: Vec<ConvBn>,
    pub fcs: Vec<Linear>,
    #[module(skip)]
    pub plan: Vec<Op>,
    /// Layer names and slots, forward order.
    #[module(skip)]
    pub layers: Vec<(String, Slot)>,
}

/// What a zoo member is built from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooSpec {
    /// `resnet<6n+2>`, `vgg`, `mobilenet` or `mlp`.
    pub arch: String,
    /// Width multiplier of every hidden layer (1 = the vision crate's widths).
    pub width: f64,
    pub classes: usize,
    /// Image side (square, one channel).
    pub side: usize,
}

/// Architectures [`ZooSpec::build`] knows besides `resnet<6n+2>`.
pub fn arch_ok(a: &str) -> bool {
    resnet_depth(a).is_some() || ["vgg", "mobilenet", "mlp"].contains(&a)
}

fn resnet_depth(a: &str) -> Option<usize> {
    let d: usize = a.strip_prefix("resnet")?.parse().ok()?;
    ((8..=56).contains(&d) && (d - 2).is_multiple_of(6)).then_some(d)
}

struct Builder<'a> {
    convs: Vec<ConvBn>,
    fcs: Vec<Linear>,
    plan: Vec<Op>,
    layers: Vec<(String, Slot)>,
    device: &'a Device,
}

impl Builder<'_> {
    fn conv(&mut self, name: String, cfg: Conv2dConfig) -> usize {
        self.convs.push(ConvBn::new(cfg, self.device));
        let i = self.convs.len() - 1;
        self.layers.push((name, Slot::Conv(i)));
        i
    }
    fn fc(&mut self, name: String, din: usize, dout: usize, relu: bool) {
        self.fcs
            .push(LinearConfig::new(din, dout).init(self.device));
        let j = self.fcs.len() - 1;
        self.layers.push((name, Slot::Fc(j)));
        self.plan.push(Op::Fc { fc: j, relu });
    }
}

impl ZooSpec {
    fn w(&self, c: usize) -> usize {
        ((c as f64 * self.width).round() as usize).max(2)
    }

    /// Builds the network with burn's process-wide generator (seed it first).
    pub fn build(&self, device: &Device) -> Result<ZooNet, String> {
        if !(self.width > 0.0 && self.width <= 4.0) {
            return Err(format!("model width {} is outside (0, 4]", self.width));
        }
        if self.classes < 2 || self.side < 4 {
            return Err(format!(
                "{} classes of {}×{} images: need ≥ 2 classes and side ≥ 4",
                self.classes, self.side, self.side
            ));
        }
        let mut b = Builder {
            convs: Vec::new(),
            fcs: Vec::new(),
            plan: Vec::new(),
            layers: Vec::new(),
            device,
        };
        let k = self.classes;
        if let Some(depth) = resnet_depth(&self.arch) {
            let n = (depth - 2) / 6;
            // Even widths so option A pads the same number of channels on each side.
            let widths = [16, 32, 64].map(|c| self.w(c / 2) * 2);
            let c = b.conv("stem".into(), Conv2dConfig::new(1, widths[0], 3));
            b.plan.push(Op::Conv { conv: c });
            let mut cin = widths[0];
            let mut blk = 0;
            for (stage, &cout) in widths.iter().enumerate() {
                for i in 0..n {
                    let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                    let c1 = b.conv(
                        format!("block{blk}.conv1"),
                        Conv2dConfig::new(cin, cout, 3).with_stride(stride),
                    );
                    let c2 = b.conv(
                        format!("block{blk}.conv2"),
                        Conv2dConfig::new(cout, cout, 3),
                    );
                    let pad = if stride != 1 || cin != cout {
                        (cout - cin) / 2
                    } else {
                        0
                    };
                    b.plan.push(Op::Block {
                        c1,
                        c2,
                        stride,
                        pad,
                    });
                    cin = cout;
                    blk += 1;
                }
            }
            b.plan.push(Op::Gap);
            b.fc("fc".into(), cin, k, false);
        } else {
            match self.arch.as_str() {
                "vgg" => {
                    let mut cin = 1;
                    for (s, &c) in [32, 64, 128].iter().enumerate() {
                        let c = self.w(c);
                        for j in 0..2 {
                            let i = b.conv(
                                format!("conv{}_{}", s + 1, j + 1),
                                Conv2dConfig::new(cin, c, 3),
                            );
                            b.plan.push(Op::Conv { conv: i });
                            cin = c;
                        }
                        b.plan.push(Op::MaxPool);
                    }
                    b.plan.push(Op::Gap);
                    b.fc("fc".into(), cin, k, false);
                }
                "mobilenet" => {
                    let mut cin = self.w(32);
                    let i = b.conv("stem".into(), Conv2dConfig::new(1, cin, 3));
                    b.plan.push(Op::Conv { conv: i });
                    for (j, &(c, stride)) in [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1)]
                        .iter()
                        .enumerate()
                    {
                        let c = self.w(c);
                        let d = b.conv(
                            format!("block{j}.dw"),
                            Conv2dConfig::depthwise(cin, 3).with_stride(stride),
                        );
                        b.plan.push(Op::Conv { conv: d });
                        let p = b.conv(format!("block{j}.pw"), Conv2dConfig::new(cin, c, 1));
                        b.plan.push(Op::Conv { conv: p });
                        cin = c;
                    }
                    b.plan.push(Op::Gap);
                    b.fc("fc".into(), cin, k, false);
                }
                "mlp" => {
                    b.plan.push(Op::Flatten);
                    let (h1, h2) = (self.w(256), self.w(128));
                    let d = self.side * self.side;
                    b.fc("fc1".into(), d, h1, true);
                    b.fc("fc2".into(), h1, h2, true);
                    b.fc("fc3".into(), h2, k, false);
                }
                other => {
                    return Err(format!(
                        "unknown architecture `{other}` (known: resnet<6n+2> up to 56, vgg, mobilenet, mlp)"
                    ));
                }
            }
        }
        Ok(ZooNet {
            convs: b.convs,
            fcs: b.fcs,
            plan: b.plan,
            layers: b.layers,
        })
    }
}

impl ZooNet {
    fn run_op(&self, op: Op, x: Act) -> Act {
        match op {
            Op::Conv { conv } => Act::Map(self.convs[conv].forward_relu(x.map())),
            Op::Block {
                c1,
                c2,
                stride,
                pad,
            } => {
                let x = x.map();
                let y = self.convs[c1].forward_relu(x.clone());
                let y = self.convs[c2].forward(y);
                let id = shortcut_a(x, stride, pad);
                Act::Map(add_relu(y, id))
            }
            Op::MaxPool => Act::Map(max_pool2d(x.map(), 2, 2)),
            Op::Gap => Act::Flat(global_avg_pool(x.map())),
            Op::Flatten => Act::Flat(x.flat()),
            Op::Fc { fc, relu: r } => {
                let y = self.fcs[fc].forward(x.flat());
                Act::Flat(if r { relu(y) } else { y })
            }
        }
    }

    /// Runs stages `from..to` on `x` (the activations entering stage `from`).
    pub fn advance(&self, from: usize, to: usize, x: Act) -> Act {
        self.plan[from..to]
            .iter()
            .fold(x, |x, &op| self.run_op(op, x))
    }

    /// Logits `[N, classes]` from the activations entering stage `from`.
    pub fn forward_from(&self, from: usize, x: Act) -> Tensor<2> {
        self.advance(from, self.plan.len(), x).flat()
    }

    /// Logits `[N, classes]` for images `[N, 1, H, W]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.forward_from(0, Act::Map(x))
    }

    /// The stage that holds layer `l` (its input is what a probe of `l` starts from).
    pub fn stage_of(&self, l: usize) -> usize {
        let slot = self.layers[l].1;
        self.plan
            .iter()
            .position(|op| match (*op, slot) {
                (Op::Conv { conv }, Slot::Conv(i)) => conv == i,
                (Op::Block { c1, c2, .. }, Slot::Conv(i)) => c1 == i || c2 == i,
                (Op::Fc { fc, .. }, Slot::Fc(j)) => fc == j,
                _ => false,
            })
            .unwrap_or(0)
    }

    /// Layer `l`'s weight tensor as it is stored (for gradients).
    pub fn weight_grad(&self, l: usize, grads: &burn::tensor::Gradients) -> Vec<f32> {
        match self.layers[l].1 {
            Slot::Conv(i) => self.convs[i]
                .conv
                .weight
                .val()
                .grad(grads)
                .map(to_vec_f32)
                .unwrap_or_default(),
            Slot::Fc(j) => {
                // burn stores [in, out]; the view is [out, in].
                self.fcs[j]
                    .weight
                    .val()
                    .grad(grads)
                    .map(|g| to_vec_f32(g.transpose()))
                    .unwrap_or_default()
            }
        }
    }

    /// Turns batch norm's batch statistics off (criteria differentiate the network as it is
    /// evaluated, with running statistics, even on the autodiff device).
    pub fn freeze_batch_norm(mut self) -> Self {
        for c in &mut self.convs {
            c.bn.training = Param::from_bool(false);
        }
        self
    }
}

fn set_param<const D: usize>(p: &mut Param<Tensor<D>>, values: Vec<f32>) {
    let old = p.val();
    let dev = old.device();
    let shape = old.dims();
    let rg = old.is_require_grad();
    let t = Tensor::<D>::from_data(TensorData::new(values, shape), &dev);
    let t = if rg { t.require_grad() } else { t };
    *p = Param::initialized(p.id, t);
}

impl LayerParams for ZooNet {
    fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|(n, _)| n.clone()).collect()
    }

    fn layer(&self, l: usize) -> LayerWeights {
        match self.layers[l].1 {
            Slot::Conv(i) => {
                let c = &self.convs[i];
                let f = c.conv.out_channels();
                let gamma = to_vec_f32(c.bn.gamma.val());
                let var = to_vec_f32(c.bn.running_var.value_sync());
                let eps = c.bn.epsilon;
                let scale = gamma
                    .iter()
                    .zip(&var)
                    .map(|(g, v)| (f64::from(*g) / (f64::from(*v) + eps).sqrt()) as f32)
                    .collect();
                LayerWeights {
                    weight: to_vec_f32(c.conv.weight.val()),
                    out_channels: f,
                    bn_scale: Some(scale),
                }
            }
            Slot::Fc(j) => {
                let w = self.fcs[j].weight.val();
                let out = w.dims()[1];
                LayerWeights {
                    weight: to_vec_f32(w.transpose()),
                    out_channels: out,
                    bn_scale: None,
                }
            }
        }
    }

    fn set_layer_weight(&mut self, l: usize, w: &[f32]) {
        match self.layers[l].1 {
            Slot::Conv(i) => set_param(&mut self.convs[i].conv.weight, w.to_vec()),
            Slot::Fc(j) => {
                let [din, dout] = self.fcs[j].weight.val().dims();
                // [out, in] back to burn's [in, out].
                let mut t = vec![0f32; w.len()];
                for o in 0..dout {
                    for i in 0..din {
                        t[i * dout + o] = w[o * din + i];
                    }
                }
                set_param(&mut self.fcs[j].weight, t);
            }
        }
    }
}

/// Every float parameter and running statistic of `m`, in module order (bit-for-bit checks).
pub fn snapshot<M: Module>(m: &M) -> Vec<u32> {
    struct V(Vec<u32>);
    impl burn::module::ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0
                .extend(to_vec_f32(p.val()).iter().map(|v| v.to_bits()));
        }
    }
    let mut v = V(Vec::new());
    m.visit(&mut v);
    v.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ops;
    use burn::tensor::Distribution;
    use ferrolab_core::backend::{device, exclusive_rng, seed_backend};

    fn spec(arch: &str, width: f64) -> ZooSpec {
        ZooSpec {
            arch: arch.into(),
            width,
            classes: 10,
            side: 28,
        }
    }

    #[test]
    fn architectures_build_with_their_layer_counts() {
        let _g = exclusive_rng();
        let dev = device();
        for (arch, layers) in [
            ("resnet20", 20),
            ("resnet8", 8),
            ("vgg", 7),
            ("mobilenet", 12),
            ("mlp", 3),
        ] {
            let net = spec(arch, 0.25).build(&dev).unwrap();
            assert_eq!(net.layer_names().len(), layers, "{arch}");
            let x = Tensor::<4>::random([2, 1, 28, 28], Distribution::Default, &dev);
            assert_eq!(net.forward(x).dims(), [2, 10], "{arch}");
        }
        assert!(spec("resnet21", 1.0).build(&dev).is_err());
        assert!(spec("vgg", 0.0).build(&dev).is_err());
        // Full-width ResNet-20 on one input channel: 267,408 conv + 640 fc weights (vision's
        // 269,722 parameters for three channels count 288 more stem weights, BN and fc bias).
        let r = spec("resnet20", 1.0).build(&dev).unwrap();
        let total: usize = r.layer_sizes().iter().sum();
        assert_eq!(total, 267_408 + 640);
    }

    /// Probing from a stage's cached input gives the same logits as the whole forward, and
    /// every operator is undone bit for bit by writing the saved weights back.
    #[test]
    fn cached_probe_matches_and_restore_is_bit_exact() {
        let _g = exclusive_rng();
        seed_backend(3);
        let dev = device();
        for arch in ["resnet8", "mobilenet", "mlp"] {
            let mut net = spec(arch, 0.25).build(&dev).unwrap();
            let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Default, &dev);
            let full = to_vec_f32(net.forward(x.clone()));
            let before = snapshot(&net);
            for l in 0..net.layer_names().len() {
                let st = net.stage_of(l);
                let cached = net.advance(0, st, Act::Map(x.clone()));
                assert_eq!(to_vec_f32(net.forward_from(st, cached.clone())), full);
                let orig = net.layer(l);
                let mut int8 = ops::Int8Layer::store(&orig);
                int8.flip(&ops::flip_positions_count(int8.bits(), 10, l as u64));
                for w in [
                    ops::magnitude_prune(&orig.weight, 0.9).unwrap(),
                    ops::channel_prune(&orig, 0.5).unwrap(),
                    ops::fake_quantize(&orig, 2).unwrap(),
                    int8.dequantize(&orig),
                ] {
                    net.set_layer_weight(l, &w);
                    assert_eq!(net.layer(l).weight, w);
                    let probed = to_vec_f32(net.forward_from(st, cached.clone()));
                    assert_ne!(probed, full, "{arch} layer {l}");
                    net.set_layer_weight(l, &orig.weight);
                }
                assert_eq!(snapshot(&net), before, "{arch} layer {l}");
                assert_eq!(to_vec_f32(net.forward(x.clone())), full);
            }
        }
    }

    #[test]
    fn unknown_layer_name_is_an_error() {
        let _g = exclusive_rng();
        let net = spec("mlp", 0.25).build(&device()).unwrap();
        assert_eq!(net.find_layer("fc2").unwrap(), 1);
        assert_eq!(
            net.find_layer("fc9").unwrap_err().to_string(),
            "layer `fc9` does not exist"
        );
    }
}
