//! Convolutions on slot vectors as sums of rotated inputs times weight plaintexts.
//!
//! Every convolution here (CAConv, RAConv, the strided ones with 2D gap packing, and step 2a
//! of MPConv) has the same shape: an accumulator slot `pos` (target: output channel o, pixel
//! (yo, xo)) sums w[o][c][tap] · input slot `pos + shift` over the input channels c its
//! block holds and the kernel taps; afterwards rotate-and-add steps (`reduce`) sum the
//! blocks that hold other input channels. [`ShiftConv::build`] enumerates those terms from
//! the layouts alone, so one routine builds the weight plaintexts for every layout pair and
//! the tests compare every one against the plaintext convolution.
//!
//! Each shift splits as g + e: g = k_in·(dy·wr + dx) (the tap) and e = a phase offset
//! between the input's and the output's interleaved channels. Where a rotation is applied
//! is a free choice ([`Split`]): on the inputs (one hoisted decomposition per input
//! ciphertext), on the accumulators (Rot(Σ x ⊙ Rot(P, −s), s) = Σ Rot(x, s) ⊙ P: the weight
//! plaintext is rotated in the clear instead), or baby-step/giant-step (e on the inputs, g on
//! the accumulators). CAConv (one input, many outputs) wants the first, RAConv (many inputs,
//! one output) the second; [`ShiftConv::choose`] picks by the cost model.

use super::backend::Backend;
use super::layout::{Kind, Layout, Map};
use crate::error::{FheError, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Convolution weights [o][c][ky][kx], bias per output channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    /// Output channels.
    pub co: usize,
    /// Input channels.
    pub ci: usize,
    /// Kernel size (square).
    pub kh: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub pad: usize,
    /// Weights.
    pub w: Vec<f64>,
    /// Bias (folded batch-norm shift).
    pub bias: Vec<f64>,
}

impl ConvWeights {
    /// Weight w[o][c][ky][kx].
    pub fn at(&self, o: usize, c: usize, ky: usize, kx: usize) -> f64 {
        self.w[((o * self.ci + c) * self.kh + ky) * self.kh + kx]
    }

    /// The plaintext convolution (reference).
    pub fn reference(&self, x: &Map) -> Map {
        let ho = x.h / self.stride;
        let mut out = Map::zeros(self.co, ho);
        for o in 0..self.co {
            for yo in 0..ho {
                for xo in 0..ho {
                    let mut s = self.bias.get(o).copied().unwrap_or(0.0);
                    for c in 0..self.ci {
                        for ky in 0..self.kh {
                            for kx in 0..self.kh {
                                let yi = (yo * self.stride + ky) as i64 - self.pad as i64;
                                let xi = (xo * self.stride + kx) as i64 - self.pad as i64;
                                if yi >= 0 && xi >= 0 && (yi as usize) < x.h && (xi as usize) < x.h
                                {
                                    s += self.at(o, c, ky, kx) * x.at(c, yi as usize, xi as usize);
                                }
                            }
                        }
                    }
                    *out.at_mut(o, yo, xo) = s;
                }
            }
        }
        out
    }
}

/// Where the rotations of a [`ShiftConv`] are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// On the inputs, hoisted.
    In,
    /// On the accumulators.
    Out,
    /// Phase offsets on the inputs, tap offsets on the accumulators.
    Bsgs,
}

/// Relative op costs used to choose a [`Split`] (units of one rotation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpCost {
    /// A rotation that shares a hoisted decomposition.
    pub hoisted_rot: f64,
    /// A plaintext multiplication (with its encoding).
    pub pmult: f64,
}

impl Default for OpCost {
    fn default() -> Self {
        // README figures at N = 2^14: 16 hoisted rotations 201 ms vs 16 single ones 285 ms;
        // a plaintext product with its encoding is about a tenth of a rotation.
        OpCost {
            hoisted_rot: 0.7,
            pmult: 0.1,
        }
    }
}

/// What the accumulators hold before the reduction: output channel per (accumulator,
/// block, phase) on a raster with gap `k` and logical size `h`.
pub struct PreMap<'a> {
    /// Accumulators (output ciphertexts before the reduction).
    pub n_acc: usize,
    /// Gap of the accumulator raster.
    pub k: usize,
    /// Logical size of the computed output.
    pub h: usize,
    /// Stride between input and computed output pixels.
    pub stride: usize,
    /// Output channel at (accumulator, block, phase).
    pub chan: &'a dyn Fn(usize, usize, usize) -> Option<usize>,
}

type Terms = BTreeMap<(i64, i64), BTreeMap<usize, Vec<f64>>>;

/// (phase shift e, input ciphertext, weight plaintext) under one giant step.
type BabyTerm<'a> = (i64, usize, &'a Vec<f64>);

/// Copy index of a block, first block of a copy.
type BlockFn = Box<dyn Fn(usize) -> usize>;

/// A convolution as rotations, weight plaintexts and rotate-and-add steps.
#[derive(Debug, Clone)]
pub struct ShiftConv {
    /// Input layout.
    pub input: Layout,
    /// Output layout (after reduction, mask and replication).
    pub post: Layout,
    /// Per accumulator: (g, e) → input ciphertext → weight plaintext.
    terms: Vec<Terms>,
    /// Rotate-and-add steps after the products.
    pub reduce: Vec<i64>,
    /// Optional 0/1 mask after the reduction (one more level).
    pub mask: Option<Vec<f64>>,
    /// Rotate-and-add steps after the mask.
    pub replicate: Vec<i64>,
    /// Bias per output ciphertext, in the output layout.
    pub bias: Vec<Vec<f64>>,
    /// Where the rotations go.
    pub split: Split,
}

/// Slot vector of `layout` with each channel's value `f(c)` on all its slots.
pub fn per_channel(layout: &Layout, ct: usize, f: impl Fn(usize) -> f64) -> Vec<f64> {
    let s = layout.geo.s();
    (0..layout.geo.n)
        .map(|i| {
            let (y, x, ph) = layout.unpos(i % s);
            let _ = (y, x);
            layout.channel(ct, i / s, ph).map_or(0.0, &f)
        })
        .collect()
}

fn rot_vec(v: &[f64], step: i64) -> Vec<f64> {
    let n = v.len();
    let s = step.rem_euclid(n as i64) as usize;
    let mut out = Vec::with_capacity(n);
    out.extend_from_slice(&v[s..]);
    out.extend_from_slice(&v[..s]);
    out
}

impl ShiftConv {
    /// Enumerates the terms. `phase_mix`: an accumulator slot sums every input phase of its
    /// block (HyPHEN) or only its own phase (MPConv, which then sums phases by rotations).
    pub fn build(w: &ConvWeights, input: Layout, pre: &PreMap, phase_mix: bool) -> Result<Self> {
        let geo = input.geo;
        let (s, wr) = (geo.s(), geo.wr as i64);
        let h_in = input.h();
        if pre.h * pre.stride != h_in || pre.k * pre.h != geo.wr {
            return Err(FheError::InvalidInput(format!(
                "conv: output {}×{} (gap {}) with stride {} does not fit a {h_in}×{h_in} input",
                pre.h, pre.h, pre.k, pre.stride
            )));
        }
        let kin = input.k;
        let kk_in = kin * kin;
        let out_geo = Layout {
            geo,
            k: pre.k,
            c: w.co,
            kind: Kind::Ca { rho: 1 },
        };
        let mut terms: Vec<Terms> = vec![BTreeMap::new(); pre.n_acc];
        for (a, t) in terms.iter_mut().enumerate() {
            for j in 0..geo.blocks() {
                for po in 0..pre.k * pre.k {
                    let Some(o) = (pre.chan)(a, j, po) else {
                        continue;
                    };
                    if o >= w.co {
                        continue;
                    }
                    for yo in 0..pre.h {
                        for xo in 0..pre.h {
                            let pos = j * s + out_geo.pos(yo, xo, po);
                            for ky in 0..w.kh {
                                for kx in 0..w.kh {
                                    let dy = ky as i64 - w.pad as i64;
                                    let dx = kx as i64 - w.pad as i64;
                                    let yi = (yo * pre.stride) as i64 + dy;
                                    let xi = (xo * pre.stride) as i64 + dx;
                                    if yi < 0 || xi < 0 || yi >= h_in as i64 || xi >= h_in as i64 {
                                        continue;
                                    }
                                    let g = kin as i64 * (dy * wr + dx);
                                    for i in 0..input.num_cts() {
                                        let phases = if phase_mix { 0..kk_in } else { po..po + 1 };
                                        for pi in phases {
                                            let Some(c) = input.channel(i, j, pi) else {
                                                continue;
                                            };
                                            if c >= w.ci {
                                                continue;
                                            }
                                            let in_pos =
                                                j * s + input.pos(yi as usize, xi as usize, pi);
                                            let shift = in_pos as i64 - pos as i64;
                                            let v = t
                                                .entry((g, shift - g))
                                                .or_default()
                                                .entry(i)
                                                .or_insert_with(|| vec![0.0; geo.n]);
                                            v[pos] += w.at(o, c, ky, kx);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        Ok(ShiftConv {
            input,
            post: input,
            terms,
            reduce: vec![],
            mask: None,
            replicate: vec![],
            bias: vec![],
            split: Split::In,
        })
    }

    fn shifts(&self) -> BTreeSet<i64> {
        self.terms
            .iter()
            .flat_map(|t| t.keys().map(|(g, e)| g + e))
            .collect()
    }

    /// Rotations (key switches) of the product phase: (on inputs, on accumulators).
    pub fn product_rotations(&self, split: Split) -> (usize, usize) {
        let nonzero = |set: &BTreeSet<i64>| set.iter().filter(|&&x| x != 0).count();
        let n_in = self.input.num_cts();
        let n_acc = self.terms.len();
        match split {
            Split::In => (n_in * nonzero(&self.shifts()), 0),
            Split::Out => (0, n_acc * nonzero(&self.shifts())),
            Split::Bsgs => {
                let es: BTreeSet<i64> = self
                    .terms
                    .iter()
                    .flat_map(|t| t.keys().map(|k| k.1))
                    .collect();
                let gs: BTreeSet<i64> = self
                    .terms
                    .iter()
                    .flat_map(|t| t.keys().map(|k| k.0))
                    .collect();
                (n_in * nonzero(&es), n_acc * nonzero(&gs))
            }
        }
    }

    /// Plaintext products of the product phase.
    pub fn product_pmults(&self, split: Split) -> usize {
        match split {
            Split::In | Split::Out => self
                .terms
                .iter()
                .map(|t| {
                    t.iter()
                        .flat_map(|((g, e), m)| m.keys().map(move |i| (g + e, *i)))
                        .collect::<BTreeSet<_>>()
                        .len()
                })
                .sum(),
            Split::Bsgs => self
                .terms
                .iter()
                .map(|t| t.values().map(|m| m.len()).sum::<usize>())
                .sum(),
        }
    }

    /// Rotation calls of the whole convolution under `split`.
    pub fn rotations(&self, split: Split) -> usize {
        let (a, b) = self.product_rotations(split);
        let outs = self.terms.len();
        a + b + outs * (self.reduce.len() + self.replicate.len())
    }

    /// Modelled cost of the whole convolution under its current split, in units of one
    /// rotation: product rotations (hoisted ones cheaper), reduction and replication
    /// rotations, plaintext products.
    pub fn modelled_cost(&self, cost: &OpCost) -> f64 {
        let outs = self.terms.len();
        self.product_cost(self.split, cost)
            + (outs * (self.reduce.len() + self.replicate.len())) as f64
            + (usize::from(self.mask.is_some()) * outs) as f64 * cost.pmult
    }

    /// Modelled cost of the product phase under `split` (the only part a split changes).
    fn product_cost(&self, split: Split, cost: &OpCost) -> f64 {
        let (a, b) = self.product_rotations(split);
        a as f64 * cost.hoisted_rot + b as f64 + self.product_pmults(split) as f64 * cost.pmult
    }

    /// Picks the split with the lowest modelled cost.
    pub fn choose(&mut self, cost: &OpCost) -> Split {
        let score = |sp: Split| self.product_cost(sp, cost);
        let mut best = Split::In;
        for sp in [Split::Out, Split::Bsgs] {
            if score(sp) < score(best) {
                best = sp;
            }
        }
        self.split = best;
        best
    }

    /// Every rotation step this convolution uses under its split (for key generation).
    pub fn rotation_steps(&self) -> BTreeSet<i64> {
        let mut out: BTreeSet<i64> = match self.split {
            Split::In | Split::Out => self.shifts(),
            Split::Bsgs => self
                .terms
                .iter()
                .flat_map(|t| t.keys().flat_map(|&(g, e)| [g, e]))
                .collect(),
        };
        out.extend(&self.reduce);
        out.extend(&self.replicate);
        out.remove(&0);
        out
    }

    /// Levels consumed.
    pub fn levels(&self) -> usize {
        1 + usize::from(self.mask.is_some())
    }

    /// Runs the convolution.
    pub fn apply<B: Backend>(&self, be: &mut B, xs: &[B::Ct]) -> Result<Vec<B::Ct>> {
        if xs.len() != self.input.num_cts() {
            return Err(FheError::InvalidInput(format!(
                "conv expects {} input ciphertexts, got {}",
                self.input.num_cts(),
                xs.len()
            )));
        }
        let mut outs = Vec::with_capacity(self.terms.len());
        match self.split {
            Split::In => {
                let shifts: Vec<i64> = self.shifts().into_iter().collect();
                let rotated = rotate_nonzero(be, xs, &shifts)?;
                for t in &self.terms {
                    let mut merged: BTreeMap<(i64, usize), Vec<f64>> = BTreeMap::new();
                    for ((g, e), m) in t {
                        for (&i, v) in m {
                            let d = merged
                                .entry((g + e, i))
                                .or_insert_with(|| vec![0.0; v.len()]);
                            d.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                        }
                    }
                    let mut acc: Option<B::Ct> = None;
                    for ((sh, i), v) in &merged {
                        let idx = shifts.binary_search(sh).map_err(|_| {
                            FheError::InvalidInput("conv: shift missing from its own set".into())
                        })?;
                        let p = be.mul_plain(&rotated[*i][idx], v)?;
                        acc = Some(match acc {
                            None => p,
                            Some(a) => be.add(&a, &p)?,
                        });
                    }
                    outs.push(acc);
                }
            }
            Split::Out => {
                for t in &self.terms {
                    let mut by_shift: BTreeMap<i64, BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
                    for ((g, e), m) in t {
                        for (&i, v) in m {
                            let d = by_shift
                                .entry(g + e)
                                .or_default()
                                .entry(i)
                                .or_insert_with(|| vec![0.0; v.len()]);
                            d.iter_mut().zip(v).for_each(|(a, b)| *a += b);
                        }
                    }
                    let mut acc: Option<B::Ct> = None;
                    for (sh, m) in &by_shift {
                        let mut inner: Option<B::Ct> = None;
                        for (&i, v) in m {
                            let p = be.mul_plain(&xs[i], &rot_vec(v, -sh))?;
                            inner = Some(match inner {
                                None => p,
                                Some(a) => be.add(&a, &p)?,
                            });
                        }
                        let Some(inner) = inner else { continue };
                        let r = if *sh == 0 {
                            inner
                        } else {
                            be.rotate(&inner, *sh)?
                        };
                        acc = Some(match acc {
                            None => r,
                            Some(a) => be.add(&a, &r)?,
                        });
                    }
                    outs.push(acc);
                }
            }
            Split::Bsgs => {
                let es: Vec<i64> = self
                    .terms
                    .iter()
                    .flat_map(|t| t.keys().map(|k| k.1))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let rotated = rotate_nonzero(be, xs, &es)?;
                for t in &self.terms {
                    let mut by_g: BTreeMap<i64, Vec<BabyTerm>> = BTreeMap::new();
                    for ((g, e), m) in t {
                        for (&i, v) in m {
                            by_g.entry(*g).or_default().push((*e, i, v));
                        }
                    }
                    let mut acc: Option<B::Ct> = None;
                    for (g, list) in &by_g {
                        let mut inner: Option<B::Ct> = None;
                        for (e, i, v) in list {
                            let idx = es.binary_search(e).map_err(|_| {
                                FheError::InvalidInput("conv: phase shift missing".into())
                            })?;
                            let p = be.mul_plain(&rotated[*i][idx], &rot_vec(v, -g))?;
                            inner = Some(match inner {
                                None => p,
                                Some(a) => be.add(&a, &p)?,
                            });
                        }
                        let Some(inner) = inner else { continue };
                        let r = if *g == 0 {
                            inner
                        } else {
                            be.rotate(&inner, *g)?
                        };
                        acc = Some(match acc {
                            None => r,
                            Some(a) => be.add(&a, &r)?,
                        });
                    }
                    outs.push(acc);
                }
            }
        }
        let mut result = Vec::with_capacity(outs.len());
        for (idx, acc) in outs.into_iter().enumerate() {
            let acc = acc.ok_or_else(|| {
                FheError::InvalidInput(format!("conv: accumulator {idx} has no terms"))
            })?;
            let mut y = be.rescale(&acc)?;
            for &st in &self.reduce {
                let r = be.rotate(&y, st)?;
                y = be.add(&y, &r)?;
            }
            if let Some(m) = &self.mask {
                let p = be.mul_plain(&y, m)?;
                y = be.rescale(&p)?;
            }
            for &st in &self.replicate {
                let r = be.rotate(&y, st)?;
                y = be.add(&y, &r)?;
            }
            if let Some(b) = self.bias.get(idx) {
                y = be.add_plain(&y, b)?;
            }
            result.push(y);
        }
        Ok(result)
    }
}

/// Hoisted rotations of every input by every nonzero step (step 0 is the input itself, and
/// is not a rotation call).
fn rotate_nonzero<B: Backend>(be: &mut B, xs: &[B::Ct], steps: &[i64]) -> Result<Vec<Vec<B::Ct>>> {
    let nz: Vec<i64> = steps.iter().copied().filter(|&s| s != 0).collect();
    let mut out = Vec::with_capacity(xs.len());
    for x in xs {
        let mut r = if nz.is_empty() {
            vec![]
        } else {
            be.rotate_many(x, &nz)?
        };
        if let Ok(zero) = steps.binary_search(&0) {
            r.insert(zero, x.clone());
        }
        out.push(r);
    }
    Ok(out)
}

fn log2(x: usize) -> usize {
    x.trailing_zeros() as usize
}

/// CAConv (hyphen.md §6.2 [R], with 2D gap packing for stride 2): CA input → RA output with
/// g = the input's copy count. The output gap is k_in·stride.
pub fn caconv(w: &ConvWeights, input: Layout) -> Result<ShiftConv> {
    let Kind::Ca { rho } = input.kind else {
        return Err(FheError::InvalidInput("CAConv needs a CA input".into()));
    };
    caconv_groups(w, input, rho)
}

/// CAConv with g output groups per ciphertext, g a power of two dividing the input's copy
/// count ρ: blocks j and j + ρ·2^i still hold the same output group (g | ρ), so the
/// reduction over input groups is unchanged, while the output takes C_out/(k²·g)
/// ciphertexts. Smaller g: more ciphertexts (products, activations) but a cheaper RAConv
/// after it (log2 g fewer reduction and replication rotations; no mask, one level fewer, at
/// g = 1). [`choose_groups`] picks g by the cost model.
pub fn caconv_groups(w: &ConvWeights, input: Layout, g: usize) -> Result<ShiftConv> {
    let Kind::Ca { rho } = input.kind else {
        return Err(FheError::InvalidInput("CAConv needs a CA input".into()));
    };
    if g == 0 || !g.is_power_of_two() || rho % g != 0 {
        return Err(FheError::InvalidInput(format!(
            "CAConv: {g} output groups per ciphertext must be a power of two dividing the input's {rho} copies"
        )));
    }
    let geo = input.geo;
    let ko = input.k * w.stride;
    let post = Layout::ra(geo, ko, w.co, g);
    let n_acc = post.num_cts();
    let chan = move |a: usize, j: usize, ph: usize| post.channel(a, j, ph);
    let pre = PreMap {
        n_acc,
        k: ko,
        h: geo.wr / ko,
        stride: w.stride,
        chan: &chan,
    };
    let mut sc = ShiftConv::build(w, input, &pre, true)?;
    let groups = geo.blocks() / rho;
    sc.reduce = (0..log2(groups))
        .map(|i| ((1usize << i) * rho * geo.s()) as i64)
        .collect();
    sc.post = post;
    sc.bias = (0..n_acc)
        .map(|a| per_channel(&post, a, |c| w.bias.get(c).copied().unwrap_or(0.0)))
        .collect();
    Ok(sc)
}

/// RAConv (§6.3 [R]): RA input (g groups) → CA output with ρ' = blocks / output groups
/// copies (g must divide ρ'): products, residue reduction over g, mask, replication.
pub fn raconv(w: &ConvWeights, input: Layout) -> Result<ShiftConv> {
    let Kind::Ra { g } = input.kind else {
        return Err(FheError::InvalidInput("RAConv needs an RA input".into()));
    };
    let geo = input.geo;
    let ko = input.k * w.stride;
    let post = Layout::ca(geo, ko, w.co);
    let Kind::Ca { rho } = post.kind else {
        unreachable!("Layout::ca builds a CA layout")
    };
    if rho % g != 0 || !post.fits() {
        return Err(FheError::InvalidInput(format!(
            "RAConv: {g} input groups do not divide the output's {rho} copies"
        )));
    }
    let chan = move |_a: usize, j: usize, ph: usize| post.channel(0, j, ph);
    let pre = PreMap {
        n_acc: 1,
        k: ko,
        h: geo.wr / ko,
        stride: w.stride,
        chan: &chan,
    };
    let mut sc = ShiftConv::build(w, input, &pre, true)?;
    let s = geo.s();
    sc.reduce = (0..log2(g)).map(|i| ((1usize << i) * s) as i64).collect();
    if g > 1 {
        sc.mask = Some(
            (0..geo.n)
                .map(|i| if (i / s).is_multiple_of(g) { 1.0 } else { 0.0 })
                .collect(),
        );
        sc.replicate = (0..log2(g))
            .map(|i| -(((1usize << i) * s) as i64))
            .collect();
    }
    sc.post = post;
    sc.bias = vec![per_channel(&post, 0, |c| {
        w.bias.get(c).copied().unwrap_or(0.0)
    })];
    Ok(sc)
}

/// A HyPHEN block's CAConv → activation → RAConv pair with the group count g (the
/// trade-off HyPHEN searches per layer) chosen by the cost model: every power of two g that
/// divides both the CA input's copies and the RAConv output's is built, each conv with its
/// best split, and scored as both convs' modelled cost plus one activation per ciphertext in
/// between (`act_cost`, in rotations); ties go to fewer levels, then to the larger g.
pub fn choose_groups(
    c1: &ConvWeights,
    c2: &ConvWeights,
    input: Layout,
    cost: &OpCost,
    act_cost: f64,
) -> Result<(ShiftConv, ShiftConv)> {
    let Kind::Ca { rho } = input.kind else {
        return Err(FheError::InvalidInput("CAConv needs a CA input".into()));
    };
    let mut best: Option<(f64, usize, ShiftConv, ShiftConv)> = None;
    let mut g = rho;
    while g >= 1 {
        let mut ca = caconv_groups(c1, input, g)?;
        ca.choose(cost);
        // A g the RAConv output cannot take (g ∤ ρ') is skipped, not an error.
        if let Ok(mut ra) = raconv(c2, ca.post) {
            ra.choose(cost);
            let score = ca.modelled_cost(cost)
                + ra.modelled_cost(cost)
                + act_cost * ca.post.num_cts() as f64;
            let levels = ca.levels() + ra.levels();
            let better = best.as_ref().is_none_or(|(s, l, _, _)| {
                score < *s - 1e-9 || ((score - *s).abs() <= 1e-9 && levels < *l)
            });
            if better {
                best = Some((score, levels, ca, ra));
            }
        }
        g /= 2;
    }
    best.map(|(_, _, ca, ra)| (ca, ra)).ok_or_else(|| {
        FheError::InvalidInput(format!(
            "HyPHEN block: no group count divides both the input's {rho} copies and the output's"
        ))
    })
}

/// A data movement: output slot ← input slot (one source per output), as masked rotations
/// of one input ciphertext, then rotate-and-add replication. Used for the parameter-free
/// downsampling shortcut (subsample by 2, zero-pad channels).
#[derive(Debug, Clone)]
pub struct Gather {
    /// shift → 0/1 mask at the output slots fed by that shift (applied after the rotation).
    pub moves: BTreeMap<i64, Vec<f64>>,
    /// Replication steps.
    pub replicate: Vec<i64>,
    /// Output layout.
    pub post: Layout,
}

impl Gather {
    /// Shortcut from `input` to `post` with output channel o ← input channel o − offset at
    /// pixel (stride·y, stride·x). Only the first copy of `post` is filled by moves; the rest
    /// by replication. Among the input's copies each output picks the source whose shift is
    /// most common, which keeps the number of distinct rotations low.
    pub fn shortcut(input: Layout, post: Layout, offset: usize, stride: usize) -> Result<Self> {
        let geo = input.geo;
        let s = geo.s();
        let n = geo.n;
        let copies = post.copies();
        let first_copy = |j: usize| match post.kind {
            Kind::Ca { rho } => j.is_multiple_of(rho),
            Kind::Mp { p, .. } => j < geo.blocks() / p,
            Kind::Ra { .. } => true,
        };
        let mut sources: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        let (h, kin) = (input.h(), input.k);
        for j in 0..geo.blocks() {
            for ph in 0..kin * kin {
                if let Some(c) = input.channel(0, j, ph) {
                    sources
                        .entry(c)
                        .or_default()
                        .push(j * s + input.pos(0, 0, ph));
                }
            }
        }
        let mut wanted: Vec<(usize, Vec<i64>)> = Vec::new();
        let mut freq: BTreeMap<i64, usize> = BTreeMap::new();
        let ho = post.h();
        if ho * stride != h {
            return Err(FheError::InvalidInput(
                "shortcut: sizes do not match".into(),
            ));
        }
        for j in (0..geo.blocks()).filter(|&j| first_copy(j)) {
            for ph in 0..post.k * post.k {
                let Some(o) = post.channel(0, j, ph) else {
                    continue;
                };
                let Some(c) = o.checked_sub(offset).filter(|&c| c < input.c) else {
                    continue;
                };
                let Some(srcs) = sources.get(&c) else {
                    continue;
                };
                for y in 0..ho {
                    for x in 0..ho {
                        let pos = j * s + post.pos(y, x, ph);
                        let cands: Vec<i64> = srcs
                            .iter()
                            .map(|&base| {
                                let src = base + input.pos(stride * y, stride * x, 0)
                                    - input.pos(0, 0, 0);
                                src as i64 - pos as i64
                            })
                            .collect();
                        for &cnd in &cands {
                            *freq.entry(cnd).or_default() += 1;
                        }
                        wanted.push((pos, cands));
                    }
                }
            }
        }
        let mut moves: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
        for (pos, cands) in wanted {
            let best = cands
                .iter()
                .copied()
                .max_by_key(|c| (freq[c], -c.abs()))
                .ok_or_else(|| FheError::InvalidInput("shortcut: no source".into()))?;
            moves.entry(best).or_insert_with(|| vec![0.0; n])[pos] = 1.0;
        }
        let step = match post.kind {
            Kind::Ca { .. } => s,
            Kind::Mp { p, .. } => n / p,
            Kind::Ra { .. } => 0,
        };
        let replicate = (0..log2(copies))
            .map(|i| -(((1usize << i) * step) as i64))
            .collect();
        Ok(Gather {
            moves,
            replicate,
            post,
        })
    }

    /// Rotation calls.
    pub fn rotations(&self) -> usize {
        self.moves.len() + self.replicate.len()
    }

    /// Every rotation step used.
    pub fn rotation_steps(&self) -> BTreeSet<i64> {
        let mut out: BTreeSet<i64> = self.moves.keys().copied().collect();
        out.extend(&self.replicate);
        out.remove(&0);
        out
    }

    /// Runs it (1 level): hoisted rotations of the input, masks, rescale, replication.
    pub fn apply<B: Backend>(&self, be: &mut B, x: &B::Ct) -> Result<B::Ct> {
        let shifts: Vec<i64> = self.moves.keys().copied().collect();
        let rotated = be.rotate_many(x, &shifts)?;
        let mut acc: Option<B::Ct> = None;
        for (r, m) in rotated.iter().zip(self.moves.values()) {
            let p = be.mul_plain(r, m)?;
            acc = Some(match acc {
                None => p,
                Some(a) => be.add(&a, &p)?,
            });
        }
        let acc = acc.ok_or_else(|| FheError::InvalidInput("shortcut: nothing to move".into()))?;
        let mut y = be.rescale(&acc)?;
        for &st in &self.replicate {
            let r = be.rotate(&y, st)?;
            y = be.add(&y, &r)?;
        }
        Ok(y)
    }
}

/// Global average pooling fused with the fully connected layer: products by the FC weights
/// (divided by h·w) on every pixel, then rotate-and-add inside a block and over the channel
/// groups of one copy. Logit o = a·copies + r ends in accumulator a at the first slot of copy r.
#[derive(Debug, Clone)]
pub struct PoolFc {
    /// Input layout.
    pub input: Layout,
    /// Weight plaintext per accumulator.
    pub weights: Vec<Vec<f64>>,
    /// Rotate-and-add steps.
    pub reduce: Vec<i64>,
    /// Bias plaintext per accumulator.
    pub bias: Vec<Vec<f64>>,
    /// (accumulator, slot) of each logit.
    pub slots: Vec<(usize, usize)>,
}

impl PoolFc {
    /// Builds it for `fc` ([classes][channels]) and `fc_bias`.
    pub fn build(input: Layout, fc: &[Vec<f64>], fc_bias: &[f64]) -> Result<Self> {
        let geo = input.geo;
        let (s, n) = (geo.s(), geo.n);
        let h = input.h();
        let copies = input.copies();
        let (copy_of, copy_start, group_step, groups): (BlockFn, BlockFn, usize, usize) =
            match input.kind {
                Kind::Ca { rho } => (
                    Box::new(move |j| j % rho),
                    Box::new(move |r| r),
                    rho * s,
                    geo.blocks() / rho,
                ),
                Kind::Mp { p, .. } => {
                    let per = geo.blocks() / p;
                    (
                        Box::new(move |j| j / per),
                        Box::new(move |r| r * per),
                        s,
                        per,
                    )
                }
                Kind::Ra { .. } => {
                    return Err(FheError::InvalidInput(
                        "pool+FC needs a CA or MP input".into(),
                    ));
                }
            };
        let classes = fc.len();
        let n_acc = classes.div_ceil(copies);
        let mut weights = vec![vec![0.0; n]; n_acc];
        for (i, _) in (0..n).enumerate() {
            let j = i / s;
            let (y, x, ph) = input.unpos(i % s);
            if y >= h || x >= h {
                continue;
            }
            let Some(c) = input.channel(0, j, ph) else {
                continue;
            };
            let r = copy_of(j);
            for (a, wv) in weights.iter_mut().enumerate() {
                let o = a * copies + r;
                if o < classes
                    && let Some(row) = fc.get(o)
                {
                    wv[i] = row.get(c).copied().unwrap_or(0.0) / (h * h) as f64;
                }
            }
        }
        let mut reduce: Vec<i64> = (0..log2(s)).map(|i| 1i64 << i).collect();
        reduce.extend((0..log2(groups)).map(|i| ((1usize << i) * group_step) as i64));
        let mut slots = Vec::with_capacity(classes);
        let mut bias = vec![vec![0.0; n]; n_acc];
        for o in 0..classes {
            let (a, r) = (o / copies, o % copies);
            let slot = copy_start(r) * s;
            slots.push((a, slot));
            bias[a][slot] = fc_bias.get(o).copied().unwrap_or(0.0);
        }
        Ok(PoolFc {
            input,
            weights,
            reduce,
            bias,
            slots,
        })
    }

    /// Rotation calls.
    pub fn rotations(&self) -> usize {
        self.weights.len() * self.reduce.len()
    }

    /// Every rotation step used.
    pub fn rotation_steps(&self) -> BTreeSet<i64> {
        self.reduce.iter().copied().collect()
    }

    /// Runs it (1 level); returns one ciphertext per accumulator.
    pub fn apply<B: Backend>(&self, be: &mut B, x: &B::Ct) -> Result<Vec<B::Ct>> {
        let mut out = Vec::with_capacity(self.weights.len());
        for (w, b) in self.weights.iter().zip(&self.bias) {
            let p = be.mul_plain(x, w)?;
            let mut y = be.rescale(&p)?;
            for &st in &self.reduce {
                let r = be.rotate(&y, st)?;
                y = be.add(&y, &r)?;
            }
            out.push(be.add_plain(&y, b)?);
        }
        Ok(out)
    }

    /// Reads the logits from decrypted slot vectors.
    pub fn logits(&self, vs: &[Vec<f64>]) -> Vec<f64> {
        self.slots.iter().map(|&(a, s)| vs[a][s]).collect()
    }
}
