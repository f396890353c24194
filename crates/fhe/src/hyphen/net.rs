//! ResNet-20 (He et al. 2016, CIFAR variant, option-A shortcuts) on slot vectors, in both
//! packings, over any [`Backend`]: the same code counts operations in simulation and runs
//! on real ciphertexts.
//!
//! * HyPHEN [R]: the client encrypts the image replication-aligned; conv1 is an RAConv; every
//!   basic block is CAConv → HerPN on the RA ciphertexts → RAConv → (+ shortcut, same CA
//!   layout) → bootstrap when the level budget requires → HerPN. Stride-2 CAConvs write
//!   their outputs 2D-gap-packed (k doubles, the raster stays wr × wr).
//! * MPConv (Lee et al.): multiplexed layout, MPConv for every convolution, AppReLU (or HerPN
//!   for the `mpconv_aespa` row), the same shortcut and pooling code.
//!
//! Bootstrapping is placed by one rule for every packing: before an operation that needs
//! more levels than its input has left, and only ever on a single ciphertext.

use super::act::{HerPn, app_relu, app_relu_apply, app_relu_levels};
use super::backend::{Backend, Stats};
use super::conv::{ConvWeights, Gather, OpCost, PoolFc, choose_groups, per_channel, raconv};
use super::layout::{Geometry, Layout, Map};
use super::mpconv::MpConv;
use crate::error::{FheError, Result};
use rand::{RngExt, SeedableRng, rngs::StdRng};

/// An activation.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Per-channel a·x² + b·x + c (HerPN folded).
    Quad(HerPn),
    /// ReLU, evaluated encrypted as AppReLU on values scaled by 1/B.
    Relu,
}

impl Act {
    /// Levels the encrypted evaluation consumes.
    pub fn levels(&self) -> usize {
        match self {
            Act::Quad(_) => 2,
            Act::Relu => app_relu_levels(),
        }
    }

    /// Whether a per-channel activation has coefficients for `c` channels, all finite.
    pub fn fits(&self, c: usize) -> bool {
        match self {
            Act::Quad(q) => [&q.a, &q.b, &q.c]
                .iter()
                .all(|v| v.len() == c && v.iter().all(|x| x.is_finite())),
            Act::Relu => true,
        }
    }

    fn plain(&self, ch: usize, x: f64, scale: f64) -> f64 {
        match self {
            Act::Quad(q) => q.eval(ch, x),
            // The network runs on x/B; AppReLU sees x directly in those units.
            Act::Relu => app_relu(x * scale) / scale,
        }
    }
}

/// One basic block.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// First convolution (stride 1 or 2).
    pub c1: ConvWeights,
    /// Its activation.
    pub a1: Act,
    /// Second convolution.
    pub c2: ConvWeights,
    /// Activation after the residual sum.
    pub a2: Act,
}

/// ResNet-20 with folded batch norms.
#[derive(Debug, Clone, PartialEq)]
pub struct Net {
    /// Stem convolution.
    pub conv1: ConvWeights,
    /// Stem activation.
    pub a0: Act,
    /// Nine basic blocks.
    pub blocks: Vec<Block>,
    /// Fully connected [classes][64].
    pub fc: Vec<Vec<f64>>,
    /// FC bias.
    pub fc_b: Vec<f64>,
    /// Value scale the encrypted network runs at (1/B for AppReLU networks, else 1).
    pub scale: f64,
}

fn gauss(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(1e-300);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn random_conv(rng: &mut StdRng, ci: usize, co: usize, stride: usize, gain: f64) -> ConvWeights {
    let std = gain / ((ci * 9) as f64).sqrt();
    ConvWeights {
        co,
        ci,
        kh: 3,
        stride,
        pad: 1,
        w: (0..co * ci * 9).map(|_| std * gauss(rng)).collect(),
        bias: (0..co).map(|_| 0.05 * gauss(rng)).collect(),
    }
}

/// Shapes of ResNet-20: (input channels, output channels, stride) per block.
pub fn resnet20_blocks() -> Vec<(usize, usize, usize)> {
    resnet_blocks(3, 16)
}

/// Shapes of the CIFAR ResNet-(6n+2) with `n` blocks per stage and widths w, 2w, 4w.
pub fn resnet_blocks(n: usize, w: usize) -> Vec<(usize, usize, usize)> {
    let mut v = vec![];
    for (stage, &c) in [w, 2 * w, 4 * w].iter().enumerate() {
        for i in 0..n {
            let ci = if i == 0 && stage > 0 { c / 2 } else { c };
            v.push((ci, c, if i == 0 && stage > 0 { 2 } else { 1 }));
        }
    }
    v
}

impl Net {
    /// A ResNet-20 with random weights (timing, counts and correctness checks: latency does
    /// not depend on the values). `quad`: HerPN activations, else ReLU.
    pub fn random(seed: u64, quad: bool, classes: usize) -> Self {
        Self::random_resnet(seed, quad, classes, 3, 16)
    }

    /// A random CIFAR ResNet-(6n+2) of first-stage width `w`.
    pub fn random_resnet(seed: u64, quad: bool, classes: usize, n: usize, w: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let act = |rng: &mut StdRng, c: usize| {
            if quad {
                Act::Quad(HerPn {
                    a: (0..c).map(|_| 0.08 + 0.04 * rng.random::<f64>()).collect(),
                    b: (0..c).map(|_| 0.4 + 0.2 * rng.random::<f64>()).collect(),
                    c: (0..c).map(|_| 0.05 * gauss(rng)).collect(),
                })
            } else {
                Act::Relu
            }
        };
        let conv1 = random_conv(&mut rng, 3, w, 1, 1.0);
        let a0 = act(&mut rng, w);
        let blocks = resnet_blocks(n, w)
            .into_iter()
            .map(|(ci, co, st)| Block {
                c1: random_conv(&mut rng, ci, co, st, 1.0),
                a1: act(&mut rng, co),
                c2: random_conv(&mut rng, co, co, 1, 0.5),
                a2: act(&mut rng, co),
            })
            .collect();
        let fc = (0..classes)
            .map(|_| {
                (0..4 * w)
                    .map(|_| gauss(&mut rng) / ((4 * w) as f64).sqrt())
                    .collect()
            })
            .collect();
        let fc_b = (0..classes).map(|_| 0.1 * gauss(&mut rng)).collect();
        Net {
            conv1,
            a0,
            blocks,
            fc,
            fc_b,
            scale: if quad {
                1.0
            } else {
                1.0 / super::act::APP_RELU_B
            },
        }
    }

    /// Depth of the CIFAR ResNet this network is (20 for ResNet-20).
    pub fn depth(&self) -> usize {
        2 * self.blocks.len() + 2
    }

    /// Checks the shapes against a CIFAR ResNet-(6n+2) (ResNet-20: n = 3, width 16) whose
    /// width is conv1's output channels.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(FheError::InvalidInput(format!("model: {what}")));
        let w = self.conv1.co;
        if self.conv1.ci != 3
            || w == 0
            || self.conv1.w.len() != w * 3 * 9
            || self.conv1.kh != 3
            || self.conv1.stride != 1
            || self.conv1.pad != 1
        {
            return bad(format!("conv1 must be 3→{w}, 3×3"));
        }
        if !self.a0.fits(w) {
            return bad(format!("act0 must have {w} channels"));
        }
        if self.blocks.is_empty() || !self.blocks.len().is_multiple_of(3) {
            return bad(format!(
                "{} blocks: a CIFAR ResNet has 3 stages of equal depth (ResNet-20: 9)",
                self.blocks.len()
            ));
        }
        let shapes = resnet_blocks(self.blocks.len() / 3, w);
        let fc_in = 4 * w;
        for (i, (b, (ci, co, st))) in self.blocks.iter().zip(shapes).enumerate() {
            let ok = b.c1.ci == ci
                && b.c1.co == co
                && b.c1.stride == st
                && b.c2.ci == co
                && b.c2.co == co
                && b.c1.w.len() == co * ci * 9
                && b.c2.w.len() == co * co * 9
                && [&b.c1, &b.c2].iter().all(|c| c.kh == 3 && c.pad == 1)
                && b.c2.stride == 1
                && b.a1.fits(co)
                && b.a2.fits(co);
            if !ok {
                return bad(format!("block {i} is not {ci}→{co} stride {st}"));
            }
        }
        if self.fc.is_empty()
            || self.fc.iter().any(|r| r.len() != fc_in)
            || self.fc.len() != self.fc_b.len()
        {
            return bad(format!(
                "fc must be [classes][{fc_in}] with one bias per class"
            ));
        }
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        let convs =
            std::iter::once(&self.conv1).chain(self.blocks.iter().flat_map(|b| [&b.c1, &b.c2]));
        let mut ok = self.fc.iter().all(|r| finite(r)) && finite(&self.fc_b);
        for c in convs {
            ok &= finite(&c.w) && finite(&c.bias) && c.bias.len() == c.co;
        }
        if !ok {
            return bad("a weight is not finite or a bias has the wrong length".into());
        }
        Ok(())
    }

    fn act_map(&self, a: &Act, m: &mut Map, scale: f64) {
        let hh = m.h * m.h;
        for (i, v) in m.v.iter_mut().enumerate() {
            *v = a.plain(i / hh, *v, scale);
        }
    }

    /// The plaintext network on an image (values in the units the network was trained in),
    /// with the same activation polynomials as the encrypted one.
    pub fn reference(&self, x: &Map) -> Vec<f64> {
        let inv = 1.0 / self.scale;
        let mut y = self.conv1.reference(x);
        self.act_map(&self.a0, &mut y, 1.0);
        for b in &self.blocks {
            let mut h = b.c1.reference(&y);
            self.act_map(&b.a1, &mut h, 1.0);
            let z = b.c2.reference(&h);
            let sc = shortcut_ref(&y, b.c2.co, b.c1.stride);
            let mut s = Map {
                c: z.c,
                h: z.h,
                v: z.v.iter().zip(&sc.v).map(|(a, b)| a + b).collect(),
            };
            self.act_map(&b.a2, &mut s, 1.0);
            y = s;
        }
        let _ = inv;
        let hh = (y.h * y.h) as f64;
        self.fc
            .iter()
            .zip(&self.fc_b)
            .map(|(row, b)| {
                b + row
                    .iter()
                    .enumerate()
                    .map(|(c, w)| {
                        w * (0..y.h * y.h).map(|i| y.v[c * y.h * y.h + i]).sum::<f64>() / hh
                    })
                    .sum::<f64>()
            })
            .collect()
    }

    /// The network with weights scaled for the encrypted run (biases × scale).
    fn scaled(&self) -> Net {
        let mut n = self.clone();
        let s = self.scale;
        let sc = |c: &mut ConvWeights| c.bias.iter_mut().for_each(|b| *b *= s);
        sc(&mut n.conv1);
        for b in &mut n.blocks {
            sc(&mut b.c1);
            sc(&mut b.c2);
        }
        n.fc_b.iter_mut().for_each(|b| *b *= s);
        n
    }
}

/// Option-A shortcut: identity, or subsample by 2 and zero-pad channels on both sides.
pub fn shortcut_ref(x: &Map, co: usize, stride: usize) -> Map {
    if stride == 1 && co == x.c {
        return x.clone();
    }
    let ho = x.h / stride;
    let off = (co - x.c) / 2;
    let mut out = Map::zeros(co, ho);
    for c in 0..x.c {
        for y in 0..ho {
            for xx in 0..ho {
                *out.at_mut(c + off, y, xx) = x.at(c, y * stride, xx * stride);
            }
        }
    }
    out
}

/// Which packing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// CAConv/RAConv alternation with 2D gap packing [R].
    Hyphen,
    /// Lee et al.'s multiplexed parallel convolution.
    Mpconv,
}

/// Counts and time of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerRecord {
    /// Name, e.g. `block3.conv1`.
    pub name: String,
    /// conv | act | shortcut | add | bootstrap | poolfc.
    pub kind: &'static str,
    /// Operations and time.
    pub stats: Stats,
    /// Level after the layer.
    pub level_after: usize,
    /// Modelled rotations of each split (for convolutions: the chosen one first).
    pub note: String,
    /// Wall seconds of the whole layer (encodings, additions and bookkeeping included).
    pub wall_seconds: f64,
    /// Process CPU seconds of the layer (10 ms ticks): on a shared machine this moves far
    /// less with the load than the wall time, which also counts waiting for a core.
    pub cpu_seconds: f64,
}

/// A run's options.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Slots and raster.
    pub geo: Geometry,
    /// Cost model for the split choice.
    pub cost: OpCost,
}

/// Modelled cost of one activation on one ciphertext, in rotations (a relinearised product
/// costs about one key switch): HerPN is one square and two plaintext products; AppReLU's
/// three odd polynomials take about 4 + 4 + 7 non-scalar products and one more for x·(1 + p).
fn act_cost(a: &Act, cost: &OpCost) -> f64 {
    match a {
        Act::Quad(_) => 1.0 + 2.0 * cost.pmult,
        Act::Relu => 16.0,
    }
}

/// The input layout the client encrypts for `packing`.
/// `width`: conv1's output channels. HyPHEN's input holds two groups of the three input
/// channels when conv1's CA output has an even number of copies (RAConv needs g | ρ), else one.
pub fn input_layout(geo: Geometry, packing: Packing, width: usize) -> Layout {
    match packing {
        Packing::Hyphen => {
            let g = match Layout::ca(geo, 1, width).kind {
                super::layout::Kind::Ca { rho } if rho.is_multiple_of(2) => 2,
                _ => 1,
            };
            Layout::ra(geo, 1, 3, g)
        }
        Packing::Mpconv => Layout::mp(geo, 1, 3),
    }
}

/// Encodes an image (3 × wr × wr, trained units) into the input slot vectors.
pub fn encode_input(net: &Net, geo: Geometry, packing: Packing, x: &Map) -> Vec<Vec<f64>> {
    let mut xs = x.clone();
    xs.v.iter_mut().for_each(|v| *v *= net.scale);
    input_layout(geo, packing, net.conv1.co).encode(&xs)
}

struct Runner<'a, B: Backend> {
    be: &'a mut B,
    log: Vec<LayerRecord>,
}

impl<B: Backend> Runner<'_, B> {
    fn record<T>(
        &mut self,
        name: &str,
        kind: &'static str,
        note: String,
        f: impl FnOnce(&mut B) -> Result<T>,
        level: impl Fn(&B, &T) -> usize,
    ) -> Result<T> {
        let before = *self.be.stats();
        let (t, cpu) = (
            std::time::Instant::now(),
            crate::bootstrap::bench::process_cpu_ms(),
        );
        let out = f(self.be)?;
        let cpu_seconds = (crate::bootstrap::bench::process_cpu_ms() - cpu) / 1e3;
        let wall_seconds = t.elapsed().as_secs_f64();
        let stats = self.be.stats().since(&before);
        let level_after = level(self.be, &out);
        self.log.push(LayerRecord {
            name: name.into(),
            kind,
            stats,
            level_after,
            note,
            wall_seconds,
            cpu_seconds,
        });
        Ok(out)
    }

    fn ensure(&mut self, name: &str, x: B::Ct, need: usize) -> Result<B::Ct> {
        if self.be.level(&x) >= need {
            return Ok(x);
        }
        let y = self.record(
            &format!("{name}.bootstrap"),
            "bootstrap",
            String::new(),
            |be| be.bootstrap(&x),
            |be, y| be.level(y),
        )?;
        let have = self.be.level(&y);
        if have < need {
            return Err(FheError::ChainTooShort {
                layer: name.to_string(),
                need,
                have,
            });
        }
        Ok(y)
    }

    fn act(&mut self, name: &str, a: &Act, layout: &Layout, xs: Vec<B::Ct>) -> Result<Vec<B::Ct>> {
        // Bootstrapping is only ever placed on a single ciphertext (a CA or MP map).
        let xs = if xs.len() == 1 {
            let x = xs
                .into_iter()
                .next()
                .ok_or_else(|| FheError::InvalidInput("act".into()))?;
            vec![self.ensure(name, x, a.levels())?]
        } else {
            xs
        };
        self.record(
            name,
            "act",
            format!("{} ciphertexts", xs.len()),
            |be| {
                let mut out = Vec::with_capacity(xs.len());
                for (i, x) in xs.iter().enumerate() {
                    out.push(match a {
                        Act::Quad(q) => {
                            let av = per_channel(layout, i, |c| q.a[c]);
                            let bv = per_channel(layout, i, |c| q.b[c]);
                            let cv = per_channel(layout, i, |c| q.c[c]);
                            HerPn::apply(be, x, &av, &bv, &cv)?
                        }
                        Act::Relu => app_relu_apply(be, x)?,
                    });
                }
                Ok(out)
            },
            |be, y| be.level(&y[0]),
        )
    }
}

/// Runs ResNet-20 on encrypted (or simulated) input slot vectors. Returns the logits'
/// ciphertexts, the pooling layer (to read the logits) and the per-layer records.
pub fn run<B: Backend>(
    be: &mut B,
    net: &Net,
    packing: Packing,
    input: Vec<B::Ct>,
    opt: &RunOptions,
) -> Result<(Vec<B::Ct>, PoolFc, Vec<LayerRecord>)> {
    net.check()?;
    let net = net.scaled();
    let geo = opt.geo;
    let mut r = Runner {
        be,
        log: Vec::new(),
    };
    let mut layout = input_layout(geo, packing, net.conv1.co);
    if input.len() != layout.num_cts() {
        return Err(FheError::InvalidInput(format!(
            "input: {} ciphertexts, the {packing:?} input layout has {}",
            input.len(),
            layout.num_cts()
        )));
    }
    // Stem.
    let mut y: B::Ct = match packing {
        Packing::Hyphen => {
            let mut sc = raconv(&net.conv1, layout)?;
            let split = sc.choose(&opt.cost);
            let note = format!("RAConv {split:?}");
            layout = sc.post;
            r.record(
                "conv1",
                "conv",
                note,
                |be| sc.apply(be, &input),
                |be, y| be.level(&y[0]),
            )?
            .remove(0)
        }
        Packing::Mpconv => {
            let mc = MpConv::build(&net.conv1, layout)?;
            layout = mc.post;
            r.record(
                "conv1",
                "conv",
                "MPConv".into(),
                |be| mc.apply(be, &input[0]),
                |be, y| be.level(y),
            )?
        }
    };
    y = r.act("act0", &net.a0, &layout, vec![y])?.remove(0);
    for (bi, b) in net.blocks.iter().enumerate() {
        let name = format!("block{}", bi + 1);
        let x_layout = layout;
        let (z, z_layout) = match packing {
            Packing::Hyphen => {
                let (ca, ra) = choose_groups(
                    &b.c1,
                    &b.c2,
                    x_layout,
                    &opt.cost,
                    act_cost(&b.a1, &opt.cost),
                )?;
                let need = ca.levels() + b.a1.levels() + ra.levels();
                let x = r.ensure(&name, y, need)?;
                y = x;
                let g = match ca.post.kind {
                    super::layout::Kind::Ra { g } => g,
                    _ => 0,
                };
                let h = r.record(
                    &format!("{name}.conv1"),
                    "conv",
                    format!("CAConv {:?} g={g}", ca.split),
                    |be| ca.apply(be, std::slice::from_ref(&y)),
                    |be, v| be.level(&v[0]),
                )?;
                let h = r.act(&format!("{name}.act1"), &b.a1, &ca.post, h)?;
                let z = r
                    .record(
                        &format!("{name}.conv2"),
                        "conv",
                        format!("RAConv {:?}", ra.split),
                        |be| ra.apply(be, &h),
                        |be, v| be.level(&v[0]),
                    )?
                    .remove(0);
                (z, ra.post)
            }
            Packing::Mpconv => {
                let x = r.ensure(&name, y, 2)?;
                y = x;
                let m1 = MpConv::build(&b.c1, x_layout)?;
                let h = r.record(
                    &format!("{name}.conv1"),
                    "conv",
                    "MPConv".into(),
                    |be| m1.apply(be, &y),
                    |be, v| be.level(v),
                )?;
                let h = r
                    .act(&format!("{name}.act1"), &b.a1, &m1.post, vec![h])?
                    .remove(0);
                let h = r.ensure(&format!("{name}.conv2"), h, 2)?;
                let m2 = MpConv::build(&b.c2, m1.post)?;
                let z = r.record(
                    &format!("{name}.conv2"),
                    "conv",
                    "MPConv".into(),
                    |be| m2.apply(be, &h),
                    |be, v| be.level(v),
                )?;
                (z, m2.post)
            }
        };
        let sc = if b.c1.stride != 1 || b.c1.ci != b.c1.co {
            let g = Gather::shortcut(x_layout, z_layout, (b.c1.co - b.c1.ci) / 2, b.c1.stride)?;
            r.record(
                &format!("{name}.shortcut"),
                "shortcut",
                String::new(),
                |be| g.apply(be, &y),
                |be, v| be.level(v),
            )?
        } else {
            y.clone()
        };
        let s = r.record(
            &format!("{name}.add"),
            "add",
            String::new(),
            |be| be.add(&z, &sc),
            |be, v| be.level(v),
        )?;
        layout = z_layout;
        y = r
            .act(&format!("{name}.act2"), &b.a2, &layout, vec![s])?
            .remove(0);
    }
    let y = r.ensure("poolfc", y, 1)?;
    let pf = PoolFc::build(layout, &net.fc, &net.fc_b)?;
    let out = r.record(
        "poolfc",
        "poolfc",
        String::new(),
        |be| pf.apply(be, &y),
        |be, v| be.level(&v[0]),
    )?;
    Ok((out, pf, r.log))
}

/// Logits from decrypted output vectors, back in the network's units.
pub fn logits(net: &Net, pf: &PoolFc, vs: &[Vec<f64>]) -> Vec<f64> {
    pf.logits(vs).into_iter().map(|v| v / net.scale).collect()
}

/// Sums the records by kind.
pub fn totals(log: &[LayerRecord]) -> Stats {
    let mut s = Stats::default();
    for l in log {
        s.add(&l.stats);
    }
    s
}
