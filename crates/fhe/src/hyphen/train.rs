//! The plaintext network first: a CIFAR ResNet-(6n+2) trained with burn on Fashion-MNIST
//! (padded or pooled to a square side, grey replicated to three channels), with HE-friendly
//! HerPN activations or with batch norm + ReLU, then folded into the [`Net`] the encrypted
//! code runs.
//!
//! HerPN here normalises each Hermite basis with its own batch norm (γ_i, β_i per basis; the
//! AESPA form with one shared γ, β is the special case γ_1 = γ_2): y = f0 + f1·BN₁(x) +
//! f2·BN₂((x² − 1)/√2). Both fold into a·x² + b·x + c per channel, which is all the
//! encrypted network sees. The ReLU network puts batch norm after each convolution (before
//! the residual add, as He et al. do), so it folds into the convolution's weights.

use super::act::{HerPn, hermite_relu_coeffs};
use super::conv::ConvWeights;
use super::layout::Map;
use super::net::{Act, Block, Net};
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use ferrolab_vision::data::ImageSet;
use ferrolab_vision::layers::{
    BatchNorm2d, Conv2d, Conv2dConfig, global_avg_pool, relu, shortcut_a,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// Fashion-MNIST's pixel mean and standard deviation (of grey levels / 255).
const MEAN: f32 = 0.2860;
const STD: f32 = 0.3530;

/// A convolution, with batch norm in the ReLU network.
#[derive(Module, Debug)]
pub struct Unit {
    conv: Conv2d,
    bn: Option<BatchNorm2d>,
}

impl Unit {
    fn new(ci: usize, co: usize, stride: usize, relu_net: bool, device: &Device) -> Self {
        Unit {
            conv: Conv2dConfig::new(ci, co, 3)
                .with_stride(stride)
                .with_bias(!relu_net)
                .init(device),
            bn: relu_net.then(|| BatchNorm2d::new(co, device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.conv.forward(x);
        match &self.bn {
            Some(bn) => bn.forward(y),
            None => y,
        }
    }
}

/// HerPN (both bases' batch norms) or ReLU (none).
#[derive(Module, Debug)]
pub struct ActLayer {
    h1: Option<BatchNorm2d>,
    h2: Option<BatchNorm2d>,
}

impl ActLayer {
    fn new(c: usize, quad: bool, device: &Device) -> Self {
        ActLayer {
            h1: quad.then(|| BatchNorm2d::new(c, device)),
            h2: quad.then(|| BatchNorm2d::new(c, device)),
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match (&self.h1, &self.h2) {
            (Some(b1), Some(b2)) => {
                let [f0, f1, f2] = hermite_relu_coeffs().map(|v| v as f32);
                let h2 = (x.clone() * x.clone() - 1.0) / std::f32::consts::SQRT_2;
                b1.forward(x).mul_scalar(f1) + b2.forward(h2).mul_scalar(f2) + f0
            }
            _ => relu(x),
        }
    }
}

/// One basic block.
#[derive(Module, Debug)]
pub struct BlockM {
    c1: Unit,
    a1: ActLayer,
    c2: Unit,
    a2: ActLayer,
    stride: usize,
    pad_c: usize,
}

/// The trainable network.
#[derive(Module, Debug)]
pub struct PlainNet {
    conv1: Unit,
    a0: ActLayer,
    blocks: Vec<BlockM>,
    fc: Linear,
}

/// Shape of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arch {
    /// Blocks per stage (ResNet-20: 3).
    pub n: usize,
    /// First stage's width (ResNet-20: 16).
    pub width: usize,
    /// HerPN activations; else batch norm + ReLU.
    pub quad: bool,
    /// Classes.
    pub classes: usize,
}

impl PlainNet {
    /// A freshly initialised network.
    pub fn new(arch: Arch, device: &Device) -> Self {
        let relu_net = !arch.quad;
        let blocks = super::net::resnet_blocks(arch.n, arch.width)
            .into_iter()
            .map(|(ci, co, st)| BlockM {
                c1: Unit::new(ci, co, st, relu_net, device),
                a1: ActLayer::new(co, arch.quad, device),
                c2: Unit::new(co, co, 1, relu_net, device),
                a2: ActLayer::new(co, arch.quad, device),
                stride: st,
                pad_c: (co - ci) / 2,
            })
            .collect();
        PlainNet {
            conv1: Unit::new(3, arch.width, 1, relu_net, device),
            a0: ActLayer::new(arch.width, arch.quad, device),
            blocks,
            fc: LinearConfig::new(4 * arch.width, arch.classes).init(device),
        }
    }

    /// Logits `[B, classes]` of images `[B, 3, s, s]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let mut y = self.a0.forward(self.conv1.forward(x));
        for b in &self.blocks {
            let h = b.a1.forward(b.c1.forward(y.clone()));
            let z = b.c2.forward(h);
            let sc = shortcut_a(y, b.stride, b.pad_c);
            y = b.a2.forward(z + sc);
        }
        self.fc.forward(global_avg_pool(y))
    }
}

fn vals<const D: usize>(t: Tensor<D>) -> Vec<f64> {
    ferrolab_core::nn::to_vec_f32(t)
        .into_iter()
        .map(f64::from)
        .collect()
}

fn bn_parts(bn: &BatchNorm2d) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, f64) {
    (
        vals(bn.gamma.val()),
        vals(bn.beta.val()),
        vals(bn.running_mean.value()),
        vals(bn.running_var.value()),
        bn.epsilon,
    )
}

fn fold_unit(u: &Unit, stride: usize) -> ConvWeights {
    let w = vals(u.conv.weight.val());
    let dims = u.conv.weight.val().dims();
    let (co, ci) = (dims[0], dims[1]);
    let mut bias = match &u.conv.bias {
        Some(b) => vals(b.val()),
        None => vec![0.0; co],
    };
    let mut w = w;
    if let Some(bn) = &u.bn {
        let (g, be, mu, var, eps) = bn_parts(bn);
        for o in 0..co {
            let s = g[o] / (var[o] + eps).sqrt();
            w[o * ci * 9..(o + 1) * ci * 9]
                .iter_mut()
                .for_each(|v| *v *= s);
            bias[o] = (bias[o] - mu[o]) * s + be[o];
        }
    }
    ConvWeights {
        co,
        ci,
        kh: 3,
        stride,
        pad: 1,
        w,
        bias,
    }
}

fn fold_act(a: &ActLayer) -> Act {
    match (&a.h1, &a.h2) {
        (Some(b1), Some(b2)) => {
            let [f0, f1, f2] = hermite_relu_coeffs();
            let r2 = std::f64::consts::SQRT_2;
            let (g1, be1, mu1, v1, eps) = bn_parts(b1);
            let (g2, be2, mu2, v2, _) = bn_parts(b2);
            let mut q = HerPn {
                a: vec![],
                b: vec![],
                c: vec![],
            };
            for i in 0..g1.len() {
                let s1 = (v1[i] + eps).sqrt();
                let s2 = (v2[i] + eps).sqrt();
                q.a.push(f2 * g2[i] / (r2 * s2));
                q.b.push(f1 * g1[i] / s1);
                q.c.push(
                    f0 + f1 * (be1[i] - g1[i] * mu1[i] / s1)
                        + f2 * (be2[i] - g2[i] * (1.0 / r2 + mu2[i]) / s2),
                );
            }
            Act::Quad(q)
        }
        _ => Act::Relu,
    }
}

impl PlainNet {
    /// The inference network with batch norms and HerPN folded: what the encrypted code runs.
    pub fn fold(&self) -> Net {
        let fcw = vals(self.fc.weight.val());
        let [fin, classes] = self.fc.weight.val().dims();
        // burn's Linear weight is [in, out]; Net wants [classes][in].
        let fc = (0..classes)
            .map(|k| (0..fin).map(|i| fcw[i * classes + k]).collect())
            .collect();
        let fc_b = match &self.fc.bias {
            Some(b) => vals(b.val()),
            None => vec![0.0; classes],
        };
        let quad = self.a0.h1.is_some();
        Net {
            conv1: fold_unit(&self.conv1, 1),
            a0: fold_act(&self.a0),
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    c1: fold_unit(&b.c1, b.stride),
                    a1: fold_act(&b.a1),
                    c2: fold_unit(&b.c2, 1),
                    a2: fold_act(&b.a2),
                })
                .collect(),
            fc,
            fc_b,
            scale: if quad {
                1.0
            } else {
                1.0 / super::act::APP_RELU_B
            },
        }
    }
}

/// Images as the network sees them: `side` × `side`, three equal channels, normalised.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Side.
    pub side: usize,
    /// `[n][3 · side · side]`.
    pub x: Vec<Vec<f32>>,
    /// Labels.
    pub y: Vec<u8>,
}

impl Prepared {
    /// Pads (side ≥ the image) or 2×2-average-pools then pads (side < the image) each image.
    pub fn new(set: &ImageSet, side: usize) -> Self {
        let (h, w) = (set.height, set.width);
        let pooled = side < h;
        let (ph, pw) = if pooled { (h / 2, w / 2) } else { (h, w) };
        let (oy, ox) = (side.saturating_sub(ph) / 2, side.saturating_sub(pw) / 2);
        let x = (0..set.len())
            .map(|i| {
                let img = set.image(i);
                let px = |y: usize, x: usize| -> f32 {
                    if pooled {
                        let s: u32 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                            .iter()
                            .map(|(a, b)| u32::from(img[(2 * y + a) * w + 2 * x + b]))
                            .sum();
                        s as f32 / (4.0 * 255.0)
                    } else {
                        f32::from(img[y * w + x]) / 255.0
                    }
                };
                let mut one = vec![(0.0 - MEAN) / STD; side * side];
                for y in 0..ph.min(side) {
                    for xx in 0..pw.min(side) {
                        one[(y + oy) * side + xx + ox] = (px(y, xx) - MEAN) / STD;
                    }
                }
                let mut three = one.clone();
                three.extend_from_slice(&one);
                three.extend_from_slice(&one);
                three
            })
            .collect();
        Prepared {
            side,
            x,
            y: set.labels.clone(),
        }
    }

    /// Image `i` as a map.
    pub fn map(&self, i: usize) -> Map {
        Map {
            c: 3,
            h: self.side,
            v: self.x[i].iter().map(|&v| f64::from(v)).collect(),
        }
    }

    fn batch(&self, idx: &[usize], device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
        let s = self.side;
        let mut x = Vec::with_capacity(idx.len() * 3 * s * s);
        for &i in idx {
            x.extend_from_slice(&self.x[i]);
        }
        let y: Vec<i64> = idx.iter().map(|&i| i64::from(self.y[i])).collect();
        (
            Tensor::<4>::from_data(TensorData::new(x, [idx.len(), 3, s, s]), device),
            Tensor::<1, Int>::from_data(TensorData::new(y, [idx.len()]), device),
        )
    }
}

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Adam's learning rate (cosine-decayed to 0).
    pub lr: f64,
    /// Shuffling seed and initialisation.
    pub seed: u64,
}

/// Trains a network; returns it (inference device) and the last epoch's training loss.
pub fn train(arch: Arch, data: &Prepared, opt: &TrainOptions) -> (PlainNet, f64) {
    let device = ferrolab_core::backend::train_device();
    // The backend's generator draws the initial weights: seeded (and held exclusively while
    // they are drawn), or the same seed trained a different network each run.
    let Ok(mut model) = ferrolab_core::backend::init_seeded(opt.seed, |d| {
        Ok::<_, std::convert::Infallible>(PlainNet::new(arch, d))
    });
    let mut optim = AdamConfig::new().init();
    let mut rng = StdRng::seed_from_u64(opt.seed);
    let mut order: Vec<usize> = (0..data.x.len()).collect();
    let steps_per_epoch = data.x.len().div_ceil(opt.batch.max(1)).max(1);
    let total = (opt.epochs * steps_per_epoch).max(1);
    let mut step = 0usize;
    let mut last = f64::NAN;
    // Paper scale is an hour of one core per network: the bar shows steps and the ETA.
    let pb = ferrolab_core::progress::bar(total as u64, "hyphen train");
    for _ in 0..opt.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut seen) = (0.0, 0usize);
        for idx in order.chunks(opt.batch.max(1)) {
            let lr =
                opt.lr * 0.5 * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos());
            step += 1;
            let (x, y) = data.batch(idx, &device);
            let logits = model.forward(x);
            let loss = CrossEntropyLossConfig::new()
                .init(&device)
                .forward(logits, y);
            let lv = f64::from(
                ferrolab_core::nn::to_vec_f32(loss.clone())
                    .first()
                    .copied()
                    .unwrap_or(f32::NAN),
            );
            sum += lv * idx.len() as f64;
            seen += idx.len();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(lr, model, grads);
            pb.inc(1);
        }
        last = sum / seen.max(1) as f64;
    }
    pb.finish_and_clear();
    (model.valid(), last)
}

/// The folded network of a freshly initialised `arch` (seeded): what the encrypted code would
/// run before any training. Its levels and rotations are those of any trained network of the
/// same shape, so it answers "does this chain fit this network" without training one.
pub fn untrained(arch: Arch, seed: u64) -> Net {
    let Ok(model) = ferrolab_core::backend::init_seeded(seed, |d| {
        Ok::<_, std::convert::Infallible>(PlainNet::new(arch, d))
    });
    model.fold()
}

/// Predicted classes of the (inference-device) network on `idx`, batched.
pub fn predict(model: &PlainNet, data: &Prepared, idx: &[usize]) -> Vec<Vec<f64>> {
    let device = ferrolab_core::backend::device();
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(256) {
        let (x, _) = data.batch(chunk, &device);
        let logits = vals(model.forward(x));
        let k = logits.len() / chunk.len().max(1);
        out.extend(logits.chunks(k.max(1)).map(<[f64]>::to_vec));
    }
    out
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same seed, same data: the same trained network (initial weights included).
    #[test]
    fn training_is_deterministic_for_a_seed() {
        let n = 24;
        let set = ImageSet {
            height: 8,
            width: 8,
            pixels: (0..n * 64).map(|i| ((i * 37) % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
        };
        let data = Prepared::new(&set, 8);
        let arch = Arch {
            n: 1,
            width: 4,
            quad: true,
            classes: 10,
        };
        let opt = |seed| TrainOptions {
            epochs: 1,
            batch: 8,
            lr: 1e-2,
            seed,
        };
        let (a, la) = train(arch, &data, &opt(5));
        let (b, lb) = train(arch, &data, &opt(5));
        let (c, _) = train(arch, &data, &opt(6));
        assert_eq!(la.to_bits(), lb.to_bits());
        assert_eq!(a.fold(), b.fold());
        assert_ne!(a.fold(), c.fold());
    }
}
