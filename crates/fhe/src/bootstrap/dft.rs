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
    /// Giant steps, each with (baby index, diagonal rotated back by the giant step), the
    /// diagonals encoded over the extended basis Q_level·P (see [`ExtCiphertext`]).
    pub giants: Vec<(i64, Vec<ExtDiagonal>)>,
    /// Diagonals over Q_level·P (double hoisting) or over Q_level only.
    pub ext: bool,
}

/// A baby-step index and its diagonal's residues over Q_level·P.
pub(crate) type ExtDiagonal = (usize, Vec<u64>);

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
    terms: &[ExtDiagonal],
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
                for (bi, pt) in chunk {
                    let (b0, b1) = baby(*bi);
                    let (c0, c1) = (&b0[lim.clone()], &b1[lim.clone()]);
                    let pd = &pt[lim.clone()];
                    for j in 0..n {
                        let pv = pd[j] as u128;
                        w0[j] += c0[j] as u128 * pv;
                        w1[j] += c1[j] as u128 * pv;
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
        baby_cost: f64,
        ext: bool,
    ) -> Result<Self> {
        if level == 0 {
            return Err(FheError::Level(
                "a homomorphic DFT factor needs a level ≥ 1".into(),
            ));
        }
        let slots = ctx.slots();
        let offsets: Vec<i64> = d.keys().copied().collect();
        let (s0, g) = bsgs_plan(&offsets, period, baby_cost);
        let pt_scale = out_scale * ctx.q[level] as f64 / in_scale;
        let mut baby: Vec<i64> = offsets
            .iter()
            .map(|&o| s0 * (o / s0).rem_euclid(g))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        baby.sort_by_key(|&b| (b != 0, b));
        let mut by_giant: BTreeMap<i64, Vec<ExtDiagonal>> = BTreeMap::new();
        for (&o, dk) in d {
            let gs = norm(s0 * g * (o / s0).div_euclid(g), period);
            let b = o - s0 * g * (o / s0).div_euclid(g);
            let bi = baby.iter().position(|&x| x == b).ok_or_else(|| {
                FheError::InvalidInput(format!("internal: baby step {b} missing"))
            })?;
            // Rotated back by the giant step actually performed, so that after the giant
            // rotation the diagonal lines up with slot t again.
            let rd: Vec<C64> = (0..slots)
                .map(|t| dk[(t as i64 - gs).rem_euclid(slots as i64) as usize])
                .collect();
            let pt = if ext {
                ctx.encode_ext(&rd, level, pt_scale)?
            } else {
                ctx.encode(&rd, level, pt_scale)?.data
            };
            by_giant.entry(gs).or_default().push((bi, pt));
        }
        Ok(PreparedLt {
            level,
            pt_scale,
            baby,
            giants: by_giant.into_iter().collect(),
            ext,
        })
    }

    /// Every rotation step the factor performs.
    pub fn rotations(&self) -> Vec<i64> {
        self.baby
            .iter()
            .copied()
            .chain(self.giants.iter().map(|(g, _)| *g))
            .filter(|&s| s != 0)
            .collect()
    }

    /// Number of encoded diagonals.
    pub fn diagonals(&self) -> usize {
        self.giants.iter().map(|(_, t)| t.len()).sum()
    }

    /// Bytes held by the encoded diagonals.
    pub fn size_bytes(&self) -> usize {
        self.giants
            .iter()
            .flat_map(|(_, t)| t.iter().map(|(_, p)| p.len() * 8))
            .sum()
    }

    /// M·x: hoisted baby rotations, one fused multiply-accumulate per giant step, the giant
    /// rotations, and one rescale (fused with the division by P). The output scale is
    /// in_scale · pt_scale / q_level.
    pub fn apply(&self, ev: &Evaluator, ct: &Ciphertext) -> Result<Ciphertext> {
        let x = self.apply_ext(ev, ct)?;
        ev.ext_mod_down_rescale(x, ct.scale * self.pt_scale)
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
            let mut total: Option<Ciphertext> = None;
            for (step, terms) in &self.giants {
                let (p0, p1) = mac(ctx, level, level + 1, terms, |bi| {
                    (&rotated[bi].parts[0][..], &rotated[bi].parts[1][..])
                });
                let inner = Ciphertext {
                    parts: vec![p0, p1],
                    level,
                    scale: ct.scale * self.pt_scale,
                    params: ct.params,
                };
                let part = if *step == 0 {
                    inner
                } else {
                    ev.rotate(&inner, *step)?
                };
                total = Some(match total {
                    None => part,
                    Some(t) => ev.add(&t, &part)?,
                });
            }
            let total = total.ok_or_else(|| FheError::InvalidInput("empty DFT factor".into()))?;
            return Ok(ev.to_ext(&total));
        }
        let rotated = ev.rotate_hoisted_ext(ct, &self.baby)?;
        let w = level + 1 + ctx.p.len();
        let mut total: Option<ExtCiphertext> = None;
        for (step, terms) in &self.giants {
            let (p0, p1) = mac(ctx, level, w, terms, |bi| {
                (&rotated[bi].parts[0][..], &rotated[bi].parts[1][..])
            });
            let inner = ExtCiphertext {
                parts: [p0, p1],
                level,
            };
            ev.rotate_ext_add(&mut total, inner, *step)?;
        }
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
