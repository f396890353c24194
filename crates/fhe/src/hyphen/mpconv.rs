//! The baseline: Lee et al.'s multiplexed parallel convolution (ICML 2022), as read from the
//! public port of the authors' code (hyphen.md §3.2 [C]).
//!
//! 1. fh·fw − 1 input rotations (hoisted, shared by every output);
//! 2. per group of p_i outputs (one per copy): products and sum over taps, then rotate-and-add
//!    over the k × k phases (2·log2 k_i) and the t_i sheets (log2 t_i, or t_i − 1 when t_i is
//!    not a power of two), then one rotation per output channel to its multiplexed position
//!    and a 0/1 selector ("collect": c_o rotations);
//! 3. p_o − 1 rotations to fill the copies.
//!
//! Rotation calls = (fh·fw − 1) + q·(2·log2 k_i + log2 t_i) + c_o + (p_o − 1), q = ⌈c_o/p_i⌉,
//! exactly as the loop issues them ([`MpConv::formula`]); the first collect rotation has step
//! 0, so the key switches are one fewer.

use super::backend::Backend;
use super::conv::{ConvWeights, PreMap, ShiftConv, Split, per_channel};
use super::layout::{Kind, Layout};
use crate::error::{FheError, Result};

/// One MPConv layer.
#[derive(Debug, Clone)]
pub struct MpConv {
    /// Products of step 2a (one accumulator per output group).
    pub products: ShiftConv,
    /// Step 2b rotate-and-add steps (power-of-two part).
    pub accumulate: Vec<i64>,
    /// Step 2b plain sheet rotations when t_i is not a power of two.
    pub sheets_plain: Vec<i64>,
    /// Step 2c: per output channel, (group, rotation, selector).
    pub collect: Vec<(usize, i64, Vec<f64>)>,
    /// Step 3 copy rotations.
    pub copies: Vec<i64>,
    /// Output layout.
    pub post: Layout,
    /// Bias in the output layout.
    pub bias: Vec<f64>,
}

fn log2(x: usize) -> usize {
    x.trailing_zeros() as usize
}

impl MpConv {
    /// Builds the layer for an MP input.
    pub fn build(w: &ConvWeights, input: Layout) -> Result<Self> {
        let Kind::Mp { t: ti, p: pi } = input.kind else {
            return Err(FheError::InvalidInput("MPConv needs an MP input".into()));
        };
        let geo = input.geo;
        let (ki, hi) = (input.k, input.h());
        let ko = ki * w.stride;
        let post = Layout::mp(geo, ko, w.co);
        let q = w.co.div_ceil(pi);
        let per_copy = geo.blocks() / pi;
        let chan = move |a: usize, j: usize, _ph: usize| {
            let o = j / per_copy + pi * a;
            (j / per_copy < pi).then_some(o)
        };
        let pre = PreMap {
            n_acc: q,
            k: ki,
            h: hi,
            stride: 1,
            chan: &chan,
        };
        let mut products = ShiftConv::build(w, input, &pre, false)?;
        products.split = Split::In;
        let (s, wr, n) = (geo.s(), geo.wr, geo.n);
        let mut accumulate: Vec<i64> = (0..log2(ki)).map(|x| 1i64 << x).collect();
        accumulate.extend((0..log2(ki)).map(|x| ((1usize << x) * wr) as i64));
        let mut sheets_plain = vec![];
        if ti.is_power_of_two() {
            accumulate.extend((0..log2(ti)).map(|x| ((1usize << x) * s) as i64));
        } else {
            sheets_plain = (1..ti).map(|u| (u * s) as i64).collect();
        }
        let Kind::Mp { p: po, .. } = post.kind else {
            unreachable!("Layout::mp builds an MP layout")
        };
        let ho = post.h();
        let mut collect = Vec::with_capacity(w.co);
        for j4 in 0..w.co {
            let group = j4 / pi;
            let rot = (n / pi) * (j4 % pi)
                - j4 % ko
                - (j4 / (ko * ko)) * s
                - ((j4 % (ko * ko)) / ko) * wr;
            let mut sel = vec![0.0; n];
            let (u, ph) = (j4 / (ko * ko), j4 % (ko * ko));
            for y in 0..ho {
                for x in 0..ho {
                    sel[u * s + post.pos(y, x, ph)] = 1.0;
                }
            }
            collect.push((group, rot as i64, sel));
        }
        let copies = (1..po).map(|u| -((u * n / po) as i64)).collect();
        let bias = per_channel(&post, 0, |c| w.bias.get(c).copied().unwrap_or(0.0));
        Ok(MpConv {
            products,
            accumulate,
            sheets_plain,
            collect,
            copies,
            post,
            bias,
        })
    }

    /// The rotation-count formula of hyphen.md §3.2 for this layer.
    pub fn formula(w: &ConvWeights, input: &Layout) -> usize {
        let Kind::Mp { t: ti, p: pi } = input.kind else {
            return 0;
        };
        let post = Layout::mp(input.geo, input.k * w.stride, w.co);
        let Kind::Mp { p: po, .. } = post.kind else {
            return 0;
        };
        let q = w.co.div_ceil(pi);
        let sheets = if ti.is_power_of_two() {
            log2(ti)
        } else {
            ti - 1
        };
        (w.kh * w.kh - 1) + q * (2 * log2(input.k) + sheets) + w.co + (po - 1)
    }

    /// Rotation calls this layer issues.
    pub fn rotations(&self) -> usize {
        let q = self.collect.iter().map(|c| c.0).max().map_or(0, |g| g + 1);
        self.products.rotations(Split::In)
            + q * (self.accumulate.len() + self.sheets_plain.len())
            + self.collect.len()
            + self.copies.len()
    }

    /// Every rotation step used.
    pub fn rotation_steps(&self) -> std::collections::BTreeSet<i64> {
        let mut out = self.products.rotation_steps();
        out.extend(&self.accumulate);
        out.extend(&self.sheets_plain);
        out.extend(self.collect.iter().map(|c| c.1));
        out.extend(&self.copies);
        out.remove(&0);
        out
    }

    /// Runs it (2 levels).
    pub fn apply<B: Backend>(&self, be: &mut B, x: &B::Ct) -> Result<B::Ct> {
        // Step 1 and 2a: the shift-conv machinery without its own reduction.
        let accs = self.products.apply(be, std::slice::from_ref(x))?;
        let mut summed = Vec::with_capacity(accs.len());
        for acc in accs {
            let mut y = acc;
            for &st in &self.accumulate {
                let r = be.rotate(&y, st)?;
                y = be.add(&y, &r)?;
            }
            if !self.sheets_plain.is_empty() {
                let base = y.clone();
                for &st in &self.sheets_plain {
                    let r = be.rotate(&base, st)?;
                    y = be.add(&y, &r)?;
                }
            }
            summed.push(y);
        }
        let mut out: Option<B::Ct> = None;
        for (group, rot, sel) in &self.collect {
            let r = be.rotate(&summed[*group], *rot)?;
            let p = be.mul_plain(&r, sel)?;
            out = Some(match out {
                None => p,
                Some(a) => be.add(&a, &p)?,
            });
        }
        let out = out.ok_or_else(|| FheError::InvalidInput("MPConv with no outputs".into()))?;
        let mut y = be.rescale(&out)?;
        let base = y.clone();
        for &st in &self.copies {
            let r = be.rotate(&base, st)?;
            y = be.add(&y, &r)?;
        }
        be.add_plain(&y, &self.bias)
    }
}
