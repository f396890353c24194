//! The homomorphic DFT of CoeffToSlot and SlotToCoeff, factored.
//!
//! The decoding map of an n-slot ciphertext is the encoder's special FFT: a bit-reversal
//! followed by log2(n) butterfly stages, each of which, as a matrix on the slot vector, has
//! three nonzero generalised diagonals (offsets 0 and ±len/2). Bootstrapping never needs the
//! bit-reversal: CoeffToSlot leaves the coefficients in bit-reversed slot order, EvalMod works
//! slot by slot, and SlotToCoeff takes them back from that order. The stages are merged into a
//! few groups (one level each); a group of s stages has at most 2^(s+1) − 1 diagonals and is
//! evaluated by baby-step/giant-step with hoisted baby rotations.
//!
//! Sparse packing: n < N/2 slots are held replicated (period n) over the N/2 slots, so a
//! rotation by k acts on them as a rotation by k mod n, and every offset is reduced modulo the
//! input's period.

use crate::ckks::Ciphertext;
use crate::complex::C64;
use crate::encoder::EncoderTables;
use crate::error::{FheError, Result};
use crate::eval::{Evaluator, ExtCiphertext};
use crate::params::Context;
use rayon::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Generalised diagonals of a matrix on the N/2 slots: offset → d, with
/// (M·x)[t] = Σ_k d_k[t] · x[t + k]. Offsets are normalised into (−p/2, p/2] for the input
/// period p.
pub(crate) type Diags = BTreeMap<i64, Vec<C64>>;

/// o reduced into (−p/2, p/2].
pub(crate) fn norm(o: i64, period: usize) -> i64 {
    let p = period as i64;
    let r = o.rem_euclid(p);
    if r > p / 2 { r - p } else { r }
}

fn add_to(d: &mut Diags, k: i64, slots: usize, t: usize, v: C64) {
    let e = d.entry(k).or_insert_with(|| vec![C64::default(); slots]);
    e[t] = e[t] + v;
}

/// The butterfly stage of half-length `lenh` of the n-point special FFT (decoding direction,
/// `inverse = false`), or its exact inverse, as diagonals on the N/2 slots (period n).
pub(crate) fn stage(
    enc: &EncoderTables,
    n: usize,
    slots: usize,
    len: usize,
    inverse: bool,
) -> Diags {
    let lenh = len / 2;
    let tw = enc.stage_twiddles(len, false);
    let (up, down) = (norm(lenh as i64, n), norm(-(lenh as i64), n));
    let mut d = Diags::new();
    for t in 0..slots {
        let c = (t % n) % len;
        if c < lenh {
            if inverse {
                // a = (A + B)/2
                add_to(&mut d, 0, slots, t, C64::real(0.5));
                add_to(&mut d, up, slots, t, C64::real(0.5));
            } else {
                // A = a + w·b
                add_to(&mut d, 0, slots, t, C64::real(1.0));
                add_to(&mut d, up, slots, t, tw[c]);
            }
        } else {
            let w = tw[c - lenh];
            if inverse {
                // b = (A − B)·conj(w)/2
                add_to(&mut d, down, slots, t, w.conj().scale(0.5));
                add_to(&mut d, 0, slots, t, -w.conj().scale(0.5));
            } else {
                // B = a − w·b
                add_to(&mut d, down, slots, t, C64::real(1.0));
                add_to(&mut d, 0, slots, t, -w);
            }
        }
    }
    d
}

/// A·B (B applied first) for an input of period `period`.
pub(crate) fn product(a: &Diags, b: &Diags, slots: usize, period: usize) -> Diags {
    let mut out = Diags::new();
    for (&ka, da) in a {
        for (&kb, db) in b {
            let k = norm(ka + kb, period);
            let o = out.entry(k).or_insert_with(|| vec![C64::default(); slots]);
            for t in 0..slots {
                let s = (t as i64 + ka).rem_euclid(slots as i64) as usize;
                o[t] = o[t] + da[t] * db[s];
            }
        }
    }
    out.retain(|_, d| d.iter().any(|v| v.abs() > 1e-300));
    out
}

/// Splits `count` stages into `groups` runs, larger runs first.
pub(crate) fn split(count: usize, groups: usize) -> Vec<usize> {
    let groups = groups.clamp(1, count.max(1));
    (0..groups)
        .map(|g| count / groups + usize::from(g < count % groups))
        .collect()
}

/// The factors of CoeffToSlot (inverse stages, the largest first) merged into `groups`
/// matrices, in the order they are applied.
pub(crate) fn coeff_to_slot_factors(
    enc: &EncoderTables,
    n: usize,
    slots: usize,
    groups: usize,
) -> Vec<Diags> {
    let log_n = n.trailing_zeros() as usize;
    let lens: Vec<usize> = (1..=log_n).rev().map(|k| 1usize << k).collect();
    merge(enc, n, slots, &lens, groups, true)
}

/// The factors of SlotToCoeff (forward stages, the smallest first) merged into `groups`.
pub(crate) fn slot_to_coeff_factors(
    enc: &EncoderTables,
    n: usize,
    slots: usize,
    groups: usize,
) -> Vec<Diags> {
    let log_n = n.trailing_zeros() as usize;
    let lens: Vec<usize> = (1..=log_n).map(|k| 1usize << k).collect();
    merge(enc, n, slots, &lens, groups, false)
}

fn merge(
    enc: &EncoderTables,
    n: usize,
    slots: usize,
    lens: &[usize],
    groups: usize,
    inverse: bool,
) -> Vec<Diags> {
    let mut out = Vec::new();
    let mut it = lens.iter();
    for size in split(lens.len(), groups) {
        let mut m: Option<Diags> = None;
        for &len in it.by_ref().take(size) {
            let s = stage(enc, n, slots, len, inverse);
            m = Some(match m {
                None => s,
                Some(prev) => product(&s, &prev, slots, n),
            });
        }
        if let Some(m) = m {
            out.push(m);
        }
    }
    out
}

/// Plaintext application (reference for tests).
#[cfg(test)]
pub(crate) fn apply_plain(d: &Diags, x: &[C64]) -> Vec<C64> {
    let slots = x.len();
    (0..slots)
        .map(|t| {
            d.iter().fold(C64::default(), |acc, (&k, dk)| {
                acc + dk[t] * x[(t as i64 + k).rem_euclid(slots as i64) as usize]
            })
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A factor ready to evaluate: its diagonals rotated for baby-step/giant-step and encoded at
/// the level and scale it will meet.
#[derive(Debug, Clone)]
pub(crate) struct PreparedLt {
    /// The level of the input ciphertext.
    pub level: usize,
    /// The scale the diagonals are encoded at.
    pub pt_scale: f64,
    /// Baby rotation steps (hoisted together; 0 first when present).
    pub baby: Vec<i64>,
    /// Giant steps in ascending order of their index j (rotation by j·G), each with its
    /// diagonals rotated back by that rotation.
    pub giants: Vec<Giant>,
    /// The giant step G (normalised to the input period): with `horner`, every giant rotation
    /// is a chain of rotations by ±G.
    pub giant_step: i64,
    /// Giant rotations by Horner's rule (two keys, ±G) instead of one key per giant step.
    pub horner: bool,
    /// Diagonals over Q_level·P (double hoisting) or over Q_level only.
    pub ext: bool,
}

/// The diagonals of one giant step.
#[derive(Debug, Clone)]
pub(crate) struct Giant {
    /// Giant index j (the rotation is j·G).
    pub index: i64,
    /// The rotation step j·G normalised to the input period.
    pub step: i64,
    /// Its diagonals.
    pub terms: Vec<EncDiag>,
}

/// One encoded diagonal: its baby-step index and its NTT residues over the factor's basis
/// (Q_level, or Q_level·P for double hoisting), limb after limb.
///
/// A diagonal whose slots repeat with period p < N/2 is a polynomial in X^(N/2p) (the fixed
/// ring of the rotation by p, whose Galois element 5^p is 1 mod 4p), so its NTT form takes
/// only 2p distinct values per limb, at positions that are the same for every prime: such a
/// diagonal keeps only those (`width` = 2p per limb) and reads them through `classes`. The
/// butterfly stages of short length have short periods: at N = 2^16 and 32768 slots, two of
/// the three factors of each DFT keep 1/32 or less of their bytes.
#[derive(Debug, Clone)]
pub(crate) struct EncDiag {
    /// Index into the factor's baby steps.
    pub baby: usize,
    /// Residues, `width` per limb.
    pub data: Vec<u64>,
    /// Values per limb: N (full) or 2p (periodic).
    pub width: usize,
    /// For periodic diagonals: NTT position → index into a limb's `width` values.
    pub classes: Option<Arc<Vec<u32>>>,
}

impl EncDiag {
    /// The full N residues of limb k (tests, and the plain reference path).
    #[cfg(test)]
    pub(crate) fn limb(&self, k: usize, n: usize) -> Vec<u64> {
        let d = &self.data[k * self.width..(k + 1) * self.width];
        match &self.classes {
            None => d.to_vec(),
            Some(c) => (0..n).map(|j| d[c[j] as usize]).collect(),
        }
    }
}

/// The NTT positions of a polynomial in X^(N/2p) grouped by the value they take: position →
/// class (2p classes), and one representative position per class. Derived from the NTT of
/// the monomial X^(N/2p) itself, whose values at the 2p distinct roots it takes are distinct,
/// so the grouping needs no knowledge of the transform's ordering.
type ClassMap = (Arc<Vec<u32>>, Vec<usize>);

fn class_map(ctx: &Context, period: usize) -> Option<ClassMap> {
    let n = ctx.n;
    let m = n / (2 * period);
    let mut mono = vec![0i64; n];
    mono[m % n] = 1;
    let v = ctx.small_to_ntt(&mono, &[0]);
    let mut ids: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
    let mut reps = Vec::new();
    let classes: Vec<u32> = v
        .iter()
        .enumerate()
        .map(|(j, &x)| {
            *ids.entry(x).or_insert_with(|| {
                reps.push(j);
                (reps.len() - 1) as u32
            })
        })
        .collect();
    (reps.len() == 2 * period).then(|| (Arc::new(classes), reps))
}

/// The smallest power-of-two period of `v` (exact equality), at most v.len().
fn slot_period(v: &[C64]) -> usize {
    let len = v.len();
    let mut p = 1;
    while p < len {
        if (p..len).all(|t| v[t] == v[t % p]) {
            return p;
        }
        p *= 2;
    }
    len
}

/// Encodes one (rotated) diagonal at `level` and `scale` over Q_level (or Q_level·P), in the
/// periodic form where its slot period allows and `compact` is set.
fn encode_diag(
    ctx: &Context,
    rd: &[C64],
    (level, scale): (usize, f64),
    ext: bool,
    compact: bool,
    maps: &mut BTreeMap<usize, Option<ClassMap>>,
) -> Result<EncDiag> {
    let n = ctx.n;
    let slots = ctx.slots();
    let full = |data: Vec<u64>| EncDiag {
        baby: 0,
        data,
        width: n,
        classes: None,
    };
    let period = if compact { slot_period(rd) } else { slots };
    let encode_full = || -> Result<Vec<u64>> {
        if ext {
            ctx.encode_ext(rd, level, scale)
        } else {
            Ok(ctx.encode(rd, level, scale)?.data)
        }
    };
    if period >= slots {
        return Ok(full(encode_full()?));
    }
    let Some((classes, reps)) = maps
        .entry(period)
        .or_insert_with(|| class_map(ctx, period))
        .clone()
    else {
        return Ok(full(encode_full()?));
    };
    // Off the subring X^(N/2p) the coefficients are the FFT's rounding noise (~2^-50 of the
    // largest): dropped, so that the encoded polynomial lies exactly in the subring. More
    // than noise there means the vector is not what its period says: keep the full form.
    let mut coeffs = ctx.encoder().slots_to_coeffs_owned(rd.to_vec());
    let m = n / (2 * period);
    let max = coeffs.iter().fold(0.0f64, |a, c| a.max(c.abs()));
    let off = coeffs
        .iter()
        .enumerate()
        .filter(|(i, _)| i % m != 0)
        .fold(0.0f64, |a, (_, c)| a.max(c.abs()));
    if off > max * 1e-9 {
        return Ok(full(encode_full()?));
    }
    for (i, c) in coeffs.iter_mut().enumerate() {
        if i % m != 0 {
            *c = 0.0;
        }
    }
    let mut idx = ctx.q_idx(level);
    if ext {
        idx.extend((0..ctx.p.len()).map(|j| ctx.p_index(j)));
    }
    let data = ctx.encode_coeffs_on(&coeffs, level, scale, &idx)?;
    let width = 2 * period;
    let mut packed = Vec::with_capacity(idx.len() * width);
    for limb in data.chunks_exact(n) {
        let start = packed.len();
        packed.extend(reps.iter().map(|&j| limb[j]));
        let vals = &packed[start..];
        // Exact by the algebra above; checked, since a mismatch would be silent otherwise.
        if !limb
            .iter()
            .zip(classes.iter())
            .all(|(&x, &c)| x == vals[c as usize])
        {
            return Ok(full(data));
        }
    }
    Ok(EncDiag {
        baby: 0,
        data: packed,
        width,
        classes: Some(classes),
    })
}

/// Baby and giant steps of a diagonal set: o = s0·(g·G + b), weighing a hoisted baby rotation
/// at `baby_cost` of a giant one (it shares the decomposition and, kept in the extended
/// basis, costs a key product and no transform; a giant step costs a full key switch). A
/// lower weight buys speed with more rotation keys.
fn bsgs_plan(offsets: &[i64], period: usize, baby_cost: f64) -> (i64, i64) {
    let s0 = offsets
        .iter()
        .fold(0u64, |acc, &o| gcd(acc, o.unsigned_abs()))
        .max(1) as i64;
    let mut best = (f64::INFINITY, 1i64);
    let mut g = 1i64;
    while (g as usize) <= period {
        let babies: BTreeSet<i64> = offsets.iter().map(|&o| (o / s0).rem_euclid(g)).collect();
        let giants: BTreeSet<i64> = offsets.iter().map(|&o| (o / s0).div_euclid(g)).collect();
        let cost = baby_cost * babies.iter().filter(|&&b| b != 0).count() as f64
            + giants.iter().filter(|&&x| x != 0).count() as f64;
        if cost < best.0 {
            best = (cost, g);
        }
        g *= 2;
    }
    (s0, best.1)
}

/// Σ_terms diagonal ⊙ baby over the first `w` limbs of the basis Q_level·P (both parts),
/// lazily in u128: products are below 2^120, so 128 of them still fit a sum.
fn mac<'a>(
    ctx: &Context,
    level: usize,
    w: usize,
    terms: &[EncDiag],
    baby: impl Fn(usize) -> (&'a [u64], &'a [u64]) + Sync,
) -> (Vec<u64>, Vec<u64>) {
    let n = ctx.n;
    let mut p0 = vec![0u64; w * n];
    let mut p1 = vec![0u64; w * n];
    p0.par_chunks_mut(n)
        .zip(p1.par_chunks_mut(n))
        .enumerate()
        .for_each(|(k, (o0, o1))| {
            let m = ctx.modulus(if k <= level {
                k
            } else {
                ctx.p_index(k - level - 1)
            });
            let lim = k * n..(k + 1) * n;
            let mut w0 = vec![0u128; n];
            let mut w1 = vec![0u128; n];
            for chunk in terms.chunks(128) {
                for t in chunk {
                    let (b0, b1) = baby(t.baby);
                    let (c0, c1) = (&b0[lim.clone()], &b1[lim.clone()]);
                    let pd = &t.data[k * t.width..(k + 1) * t.width];
                    match &t.classes {
                        None => {
                            for j in 0..n {
                                let pv = pd[j] as u128;
                                w0[j] += c0[j] as u128 * pv;
                                w1[j] += c1[j] as u128 * pv;
                            }
                        }
                        Some(cls) => {
                            for j in 0..n {
                                let pv = pd[cls[j] as usize] as u128;
                                w0[j] += c0[j] as u128 * pv;
                                w1[j] += c1[j] as u128 * pv;
                            }
                        }
                    }
                }
                for j in 0..n {
                    w0[j] = m.reduce_wide(w0[j]) as u128;
                    w1[j] = m.reduce_wide(w1[j]) as u128;
                }
            }
            for j in 0..n {
                o0[j] = w0[j] as u64;
                o1[j] = w1[j] as u64;
            }
        });
    (p0, p1)
}

/// How a factor is laid out and stored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LtOptions {
    /// See [`bsgs_plan`].
    pub baby_cost: f64,
    /// Diagonals over Q·P (double hoisting).
    pub ext: bool,
    /// Giant rotations by Horner's rule.
    pub horner: bool,
    /// Periodic diagonals in their compact form.
    pub compact: bool,
}

impl PreparedLt {
    /// Plans (see [`bsgs_plan`]) and encodes `d` (input period `period`) for an input at
    /// `level` with scale `in_scale`, so that the output (one level lower) has scale
    /// `out_scale`.
    pub fn new(
        ctx: &Context,
        d: &Diags,
        period: usize,
        level: usize,
        (in_scale, out_scale): (f64, f64),
        opt: LtOptions,
    ) -> Result<Self> {
        if level == 0 {
            return Err(FheError::Level(
                "a homomorphic DFT factor needs a level ≥ 1".into(),
            ));
        }
        let slots = ctx.slots();
        let offsets: Vec<i64> = d.keys().copied().collect();
        let (s0, g) = bsgs_plan(&offsets, period, opt.baby_cost);
        let big = s0 * g;
        let pt_scale = out_scale * ctx.q[level] as f64 / in_scale;
        let mut baby: Vec<i64> = offsets
            .iter()
            .map(|&o| s0 * (o / s0).rem_euclid(g))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        baby.sort_by_key(|&b| (b != 0, b));
        let mut maps = BTreeMap::new();
        // Keyed by the giant index j with Horner's rule (each j is its own link of the
        // chain), else by the rotation step (indices that wrap to one step share it).
        let mut by_giant: BTreeMap<i64, Giant> = BTreeMap::new();
        for (&o, dk) in d {
            let j = (o / s0).div_euclid(g);
            let gs = norm(big * j, period);
            let b = o - big * j;
            let bi = baby.iter().position(|&x| x == b).ok_or_else(|| {
                FheError::InvalidInput(format!("internal: baby step {b} missing"))
            })?;
            // Rotated back by the giant step actually performed, so that after the giant
            // rotation the diagonal lines up with slot t again.
            let rd: Vec<C64> = (0..slots)
                .map(|t| dk[(t as i64 - gs).rem_euclid(slots as i64) as usize])
                .collect();
            let mut enc =
                encode_diag(ctx, &rd, (level, pt_scale), opt.ext, opt.compact, &mut maps)?;
            enc.baby = bi;
            let key = if opt.horner { j } else { gs };
            by_giant
                .entry(key)
                .or_insert_with(|| Giant {
                    index: j,
                    step: gs,
                    terms: Vec::new(),
                })
                .terms
                .push(enc);
        }
        Ok(PreparedLt {
            level,
            pt_scale,
            baby,
            giants: by_giant.into_values().collect(),
            giant_step: norm(big, period),
            horner: opt.horner,
            ext: opt.ext,
        })
    }

    /// Every rotation step the factor performs.
    pub fn rotations(&self) -> Vec<i64> {
        let giants: Vec<i64> = if self.horner {
            let (lo, hi) = self.giant_range();
            let mut v = Vec::new();
            if hi > 0 {
                v.push(self.giant_step);
            }
            if lo < 0 {
                v.push(-self.giant_step);
            }
            v
        } else {
            self.giants.iter().map(|g| g.step).collect()
        };
        self.baby
            .iter()
            .copied()
            .chain(giants)
            .filter(|&s| s != 0)
            .collect()
    }

    /// The lowest and highest giant index.
    fn giant_range(&self) -> (i64, i64) {
        let lo = self.giants.iter().map(|g| g.index).min().unwrap_or(0);
        let hi = self.giants.iter().map(|g| g.index).max().unwrap_or(0);
        (lo.min(0), hi.max(0))
    }

    /// Number of encoded diagonals.
    pub fn diagonals(&self) -> usize {
        self.giants.iter().map(|g| g.terms.len()).sum()
    }

    /// Bytes held by the encoded diagonals (class maps shared by several diagonals counted
    /// once).
    pub fn size_bytes(&self) -> usize {
        let mut maps: Vec<*const Vec<u32>> = Vec::new();
        let mut total = 0;
        for t in self.giants.iter().flat_map(|g| &g.terms) {
            total += t.data.len() * 8;
            if let Some(c) = &t.classes {
                let p = Arc::as_ptr(c);
                if !maps.contains(&p) {
                    maps.push(p);
                    total += c.len() * 4;
                }
            }
        }
        total
    }

    /// M·x: hoisted baby rotations, one fused multiply-accumulate per giant step, the giant
    /// rotations, and one rescale (fused with the division by P). The output scale is
    /// in_scale · pt_scale / q_level.
    pub fn apply(&self, ev: &Evaluator, ct: &Ciphertext) -> Result<Ciphertext> {
        let x = self.apply_ext(ev, ct)?;
        ev.ext_mod_down_rescale(x, ct.scale * self.pt_scale)
    }

    /// The giant steps' inner sums, Σ_j rot_{j·G}(inner_j), for any representation: `rot_add`
    /// is acc += rot_step(x), `inner` gives the inner sum of a giant step. Without Horner's
    /// rule one rotation per giant step, each with its own key; with it, the positive and
    /// negative indices each run one chain, inner_J, rot_G(inner_J) + inner_{J−1}, …, so
    /// the same number of rotations use only the keys ±G (an index without diagonals still
    /// takes its link).
    fn giant_sum<T>(
        &self,
        mut inner: impl FnMut(&Giant) -> Result<T>,
        mut rot_add: impl FnMut(&mut Option<T>, T, i64) -> Result<()>,
        mut add: impl FnMut(&mut Option<T>, T) -> Result<()>,
    ) -> Result<Option<T>> {
        let mut total: Option<T> = None;
        if !self.horner {
            for g in &self.giants {
                let x = inner(g)?;
                rot_add(&mut total, x, g.step)?;
            }
            return Ok(total);
        }
        let (lo, hi) = self.giant_range();
        for sign in [1i64, -1] {
            let top = if sign > 0 { hi } else { -lo };
            let mut acc: Option<T> = None;
            for k in (1..=top).rev() {
                let mut cur = match self.giants.iter().find(|g| g.index == sign * k) {
                    Some(g) => Some(inner(g)?),
                    None => None,
                };
                if let Some(a) = acc.take() {
                    rot_add(&mut cur, a, sign * self.giant_step)?;
                }
                acc = cur;
            }
            if let Some(a) = acc {
                rot_add(&mut total, a, sign * self.giant_step)?;
            }
        }
        if let Some(g) = self.giants.iter().find(|g| g.index == 0) {
            let x = inner(g)?;
            add(&mut total, x)?;
        }
        Ok(total)
    }

    /// M·x times P in the extended basis, before any division (scale in_scale · pt_scale
    /// once divided): a key switch added here (the conjugations that follow the last
    /// factors) adds its noise at a scale ~q_level times larger than after a rescale, where
    /// it no longer counts, and shares the one division by P.
    ///
    /// Everything between the decomposition and the end stays in the extended basis Q_l·P
    /// (double hoisting): the baby rotations are not divided by P, the diagonal products are
    /// summed there, each giant step divides only its second part (the key switch needs it
    /// modulo Q_l) and adds its switched result there, and the total is divided by P once.
    /// Per factor that is one division of two polynomials instead of one per rotation, and
    /// the rounding of every rotation but the last is gone.
    pub(crate) fn apply_ext(&self, ev: &Evaluator, ct: &Ciphertext) -> Result<ExtCiphertext> {
        let ctx = ev.context();
        if ct.level != self.level {
            return Err(FheError::Level(format!(
                "this DFT factor was prepared for level {}, the ciphertext is at level {}",
                self.level, ct.level
            )));
        }
        let level = ct.level;
        if !self.ext {
            // Diagonals modulo Q only: every rotation divided by P on its own.
            let rotated = ev.rotate_hoisted(ct, &self.baby)?;
            let total = self.giant_sum(
                |g| {
                    let (p0, p1) = mac(ctx, level, level + 1, &g.terms, |bi| {
                        (&rotated[bi].parts[0][..], &rotated[bi].parts[1][..])
                    });
                    Ok(Ciphertext {
                        parts: vec![p0, p1],
                        level,
                        scale: ct.scale * self.pt_scale,
                        params: ct.params,
                    })
                },
                |acc: &mut Option<Ciphertext>, x: Ciphertext, step: i64| {
                    let part = if step == 0 { x } else { ev.rotate(&x, step)? };
                    *acc = Some(match acc.take() {
                        None => part,
                        Some(t) => ev.add(&t, &part)?,
                    });
                    Ok(())
                },
                |acc: &mut Option<Ciphertext>, x: Ciphertext| {
                    *acc = Some(match acc.take() {
                        None => x,
                        Some(t) => ev.add(&t, &x)?,
                    });
                    Ok(())
                },
            )?;
            let total = total.ok_or_else(|| FheError::InvalidInput("empty DFT factor".into()))?;
            return Ok(ev.to_ext(&total));
        }
        let rotated = ev.rotate_hoisted_ext(ct, &self.baby)?;
        let w = level + 1 + ctx.p.len();
        let total = self.giant_sum(
            |g| {
                let (p0, p1) = mac(ctx, level, w, &g.terms, |bi| {
                    (&rotated[bi].parts[0][..], &rotated[bi].parts[1][..])
                });
                Ok(ExtCiphertext {
                    parts: [p0, p1],
                    level,
                })
            },
            |acc: &mut Option<ExtCiphertext>, x: ExtCiphertext, step: i64| {
                ev.rotate_ext_add(acc, x, step)
            },
            |acc: &mut Option<ExtCiphertext>, x: ExtCiphertext| {
                ev.ext_add_into(acc, x);
                Ok(())
            },
        )?;
        total.ok_or_else(|| FheError::InvalidInput("empty DFT factor".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    fn bitrev_perm(v: &[C64]) -> Vec<C64> {
        let n = v.len();
        let bits = n.trailing_zeros();
        (0..n)
            .map(|i| v[crate::arith::bit_reverse(i, bits)])
            .collect()
    }

    use crate::bootstrap::BootChain;
    use crate::ckks::{Decryptor, Encryptor, KeyGenerator, Plaintext};

    fn opts(ext: bool, horner: bool, compact: bool) -> LtOptions {
        LtOptions {
            baby_cost: 0.6,
            ext,
            horner,
            compact,
        }
    }

    /// The compact form of a periodic diagonal is the full encoding of the same slots: every
    /// limb expands to residues that decode to the diagonal, and the short butterfly stages
    /// (CoeffToSlot's last factor, period 16 at 4096 slots) keep far fewer bytes.
    #[test]
    fn compact_diagonals_decode_to_the_full_diagonal() {
        let ctx = Context::new(BootChain::insecure_test(13).spec()).unwrap();
        let slots = ctx.slots();
        let level = ctx.max_level();
        let fs = coeff_to_slot_factors(ctx.encoder(), slots, slots, 3);
        for ext in [false, true] {
            for (fi, f) in [(0, &fs[0]), (2, &fs[2])] {
                let scales = (2f64.powi(45), 2f64.powi(45));
                let full = PreparedLt::new(&ctx, f, slots, level, scales, opts(ext, false, false))
                    .unwrap();
                let comp =
                    PreparedLt::new(&ctx, f, slots, level, scales, opts(ext, false, true)).unwrap();
                assert_eq!(full.diagonals(), comp.diagonals());
                if fi == 0 {
                    // The longest stages have (nearly) the full period: little to compact.
                    assert!(comp.size_bytes() <= full.size_bytes());
                } else {
                    assert!(
                        comp.size_bytes() * 8 < full.size_bytes(),
                        "{} vs {}",
                        comp.size_bytes(),
                        full.size_bytes()
                    );
                }
                // Decoded over q_0, q_1 (an exact drop): the CRT value over every limb
                // overflows f64.
                let limbs = 2;
                for (gf, gc) in full.giants.iter().zip(&comp.giants) {
                    for (tf, tc) in gf.terms.iter().zip(&gc.terms) {
                        let expand = |t: &EncDiag| -> Vec<C64> {
                            let data: Vec<u64> =
                                (0..limbs).flat_map(|k| t.limb(k, ctx.n)).collect();
                            let pt = Plaintext {
                                data,
                                level: 1,
                                scale: full.pt_scale,
                                params: ctx.hash,
                            };
                            ctx.decode(&pt).unwrap()
                        };
                        let (a, b) = (expand(tf), expand(tc));
                        let err = a
                            .iter()
                            .zip(&b)
                            .map(|(x, y)| (*x - *y).abs())
                            .fold(0.0, f64::max);
                        assert!(err < 1e-12, "factor {fi} ext {ext}: {err}");
                    }
                }
            }
        }
    }

    /// Horner's giant steps compute the same factor as one rotation key per giant step, with
    /// fewer keys, on both DFT paths.
    #[test]
    fn horner_giant_steps_match_one_key_per_step() {
        let chain = BootChain::insecure_test(13);
        let ctx = Context::new(chain.spec()).unwrap();
        let slots = ctx.slots();
        let level = ctx.max_level();
        let f = &coeff_to_slot_factors(ctx.encoder(), slots, slots, 3)[1];
        let scales = (2f64.powi(45), 2f64.powi(45));
        let plans: Vec<PreparedLt> = [(true, false), (true, true), (false, false), (false, true)]
            .iter()
            .map(|&(ext, horner)| {
                PreparedLt::new(&ctx, f, slots, level, scales, opts(ext, horner, true)).unwrap()
            })
            .collect();
        assert!(plans[1].rotations().len() < plans[0].rotations().len());
        assert!(plans[1].giants.len() > 3, "needs a chain to test");
        let mut steps: Vec<i64> = plans.iter().flat_map(|p| p.rotations()).collect();
        steps.sort();
        steps.dedup();
        let mut kg = KeyGenerator::new_seeded(&ctx, 1);
        let pk = kg.public_key();
        let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
        let mut enc = Encryptor::new_seeded(&ctx, 2);
        let horner_keys = plans[1].rotations();
        let ev = Evaluator::new(&ctx, kg.evaluation_keys(&steps, false)).unwrap();
        let mut rng = StdRng::seed_from_u64(5);
        let x: Vec<C64> = (0..slots)
            .map(|_| C64::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5))
            .collect();
        let want = apply_plain(f, &x);
        let ct = enc
            .encrypt(&pk, &ctx.encode(&x, level, scales.0).unwrap())
            .unwrap();
        for (i, p) in plans.iter().enumerate() {
            let got = dec.decrypt_decode(&p.apply(&ev, &ct).unwrap()).unwrap();
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (*g - *w).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-7, "plan {i}: {err}");
        }
        // Horner's plan needs only its babies and ±G.
        let g = plans[1].giant_step;
        for s in horner_keys {
            assert!(plans[1].baby.contains(&s) || s == g || s == -g, "{s}");
        }
    }

    #[test]
    fn factors_compose_to_the_special_fft_without_bit_reversal() {
        let log_n = 7u32;
        let enc = EncoderTables::new(log_n);
        let slots = 1usize << (log_n - 1);
        let mut rng = StdRng::seed_from_u64(3);
        for n in [slots, slots / 4] {
            let w: Vec<C64> = (0..n)
                .map(|_| C64::new(rng.random::<f64>() - 0.5, rng.random::<f64>() - 0.5))
                .collect();
            let mut want = w.clone();
            enc.fft_special(&mut want);
            // StC on bit-reversed input gives the FFT.
            let rep = |v: &[C64]| -> Vec<C64> { (0..slots).map(|t| v[t % n]).collect() };
            let mut x = rep(&bitrev_perm(&w));
            for groups in [1, 2, 3] {
                let mut y = x.clone();
                for f in slot_to_coeff_factors(&enc, n, slots, groups) {
                    y = apply_plain(&f, &y);
                }
                for t in 0..slots {
                    assert!((y[t] - want[t % n]).abs() < 1e-9, "n {n} groups {groups}");
                }
                // CtS inverts it back to bit-reversed order.
                let mut z = y.clone();
                for f in coeff_to_slot_factors(&enc, n, slots, groups) {
                    z = apply_plain(&f, &z);
                }
                for t in 0..slots {
                    assert!((z[t] - x[t]).abs() < 1e-9);
                }
            }
            x.clear();
        }
    }
}
