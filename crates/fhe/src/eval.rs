//! Homomorphic operations: add/sub/negate, plaintext and constant operations, multiplication
//! with relinearisation, rescaling, level management, rotations (single and hoisted) and
//! conjugation.
//!
//! Scale management follows a fixed ladder ([`Context::scales`]): Δ_L = 2^log_scale and
//! Δ_{l-1} = Δ_l² / q_l. Two ciphertexts at level l with scale Δ_l multiply and rescale to
//! exactly Δ_{l-1}, so everything at one level shares one scale and additions never mix
//! scales; [`Evaluator::adjust`] brings any ciphertext onto the ladder at a lower level.

use crate::arith::Modulus;
use crate::ckks::{
    Ciphertext, EvaluationKeys, Plaintext, SwitchingKey, check_ciphertext, check_params,
    check_plaintext, conjugation_element, galois_element,
};
use crate::error::{FheError, Result};
use crate::ntt::automorphism_ntt_index;
use crate::params::Context;
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Relative scale difference below which two scales count as equal (integer rounding of
/// ladder constants leaves ~2^-40).
const SCALE_TOLERANCE: f64 = 1e-9;

/// Counts of an evaluator's expensive operations so far (profiling: which stage performs
/// how many key switches, divisions by P and rescales).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpCounts {
    /// Key switches with their own decomposition: relinearisations, single rotations and
    /// conjugations, the giant steps of linear transforms.
    pub key_switches: u64,
    /// Decompositions shared by hoisted rotations.
    pub decompositions: u64,
    /// Key products on a shared decomposition (one per hoisted rotation).
    pub hoisted_products: u64,
    /// Divisions of one polynomial by P (mod down).
    pub mod_downs: u64,
    /// Rescales of a ciphertext (each divides every part by the last prime).
    pub rescales: u64,
}

impl OpCounts {
    /// The operations performed since `earlier` (a snapshot of the same evaluator).
    pub fn since(&self, earlier: &OpCounts) -> OpCounts {
        OpCounts {
            key_switches: self.key_switches - earlier.key_switches,
            decompositions: self.decompositions - earlier.decompositions,
            hoisted_products: self.hoisted_products - earlier.hoisted_products,
            mod_downs: self.mod_downs - earlier.mod_downs,
            rescales: self.rescales - earlier.rescales,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    key_switches: AtomicU64,
    decompositions: AtomicU64,
    hoisted_products: AtomicU64,
    mod_downs: AtomicU64,
    rescales: AtomicU64,
}

fn bump(c: &AtomicU64, by: u64) {
    c.fetch_add(by, Ordering::Relaxed);
}

/// A ciphertext times P held in the extended basis Q_l·P (limbs q_0..q_l, then
/// p_0..p_{α-1}, NTT form): what a hoisted key switch produces before its division by P.
/// Sums and plaintext products of these are divided by P once (Bossuat et al., Eurocrypt
/// 2021, "double hoisting"), instead of once per rotation.
#[derive(Debug, Clone)]
pub(crate) struct ExtCiphertext {
    pub(crate) parts: [Vec<u64>; 2],
    pub(crate) level: usize,
}

/// Computes on ciphertexts with evaluation keys only (no secret).
#[derive(Debug)]
pub struct Evaluator {
    ctx: Arc<Context>,
    keys: EvaluationKeys,
    /// NTT-domain index map of each Galois key's automorphism, built once with the keys.
    perms: BTreeMap<usize, Vec<u32>>,
    counts: Counters,
}

impl Evaluator {
    /// An evaluator holding `keys`; checks that every key matches the context.
    pub fn new(ctx: &Arc<Context>, keys: EvaluationKeys) -> Result<Self> {
        if let Some(r) = &keys.relin {
            check_params(ctx, r.0.params, "relinearisation key")?;
        }
        for k in keys.galois.keys.values() {
            check_params(ctx, k.params, "Galois key")?;
        }
        let perms = keys
            .galois
            .keys
            .keys()
            .map(|&g| (g, automorphism_ntt_index(ctx.log_n, g)))
            .collect();
        Ok(Evaluator {
            ctx: ctx.clone(),
            keys,
            perms,
            counts: Counters::default(),
        })
    }

    /// The operations performed so far (a snapshot; see [`OpCounts::since`]).
    pub fn op_counts(&self) -> OpCounts {
        let c = &self.counts;
        OpCounts {
            key_switches: c.key_switches.load(Ordering::Relaxed),
            decompositions: c.decompositions.load(Ordering::Relaxed),
            hoisted_products: c.hoisted_products.load(Ordering::Relaxed),
            mod_downs: c.mod_downs.load(Ordering::Relaxed),
            rescales: c.rescales.load(Ordering::Relaxed),
        }
    }

    /// The context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    /// The evaluation keys.
    pub fn keys(&self) -> &EvaluationKeys {
        &self.keys
    }

    fn check_ct(&self, ct: &Ciphertext) -> Result<()> {
        check_ciphertext(&self.ctx, ct)
    }

    fn same_level(&self, a: &Ciphertext, b_level: usize, what: &str) -> Result<()> {
        if a.level != b_level {
            return Err(FheError::Level(format!(
                "{what}: operands are at levels {} and {b_level}; drop or adjust one first",
                a.level
            )));
        }
        Ok(())
    }

    fn same_scale(a: f64, b: f64) -> Result<()> {
        let rel = (a - b).abs() / a.max(b);
        if rel > SCALE_TOLERANCE {
            return Err(FheError::ScaleMismatch { a, b, rel });
        }
        Ok(())
    }

    fn zip_parts(
        &self,
        a: &Ciphertext,
        b: &Ciphertext,
        f: impl Fn(&crate::arith::Modulus, u64, u64) -> u64,
    ) -> Ciphertext {
        let n = self.ctx.n;
        let lq = a.level + 1;
        let size = a.size().max(b.size());
        // Written once into uninitialised capacity, limb by limb with the modulus hoisted: add
        // is memory-bound, so no zero-fill and no zero operand buffer for a missing part.
        let parts = (0..size)
            .map(|p| {
                let mut out = Vec::with_capacity(lq * n);
                for i in 0..lq {
                    let m = *self.ctx.modulus(i);
                    let lim = i * n..(i + 1) * n;
                    match (a.parts.get(p), b.parts.get(p)) {
                        (Some(x), Some(y)) => out.extend(
                            x[lim.clone()]
                                .iter()
                                .zip(&y[lim])
                                .map(|(&u, &v)| f(&m, u, v)),
                        ),
                        (Some(x), None) => out.extend(x[lim].iter().map(|&u| f(&m, u, 0))),
                        (None, Some(y)) => out.extend(y[lim].iter().map(|&v| f(&m, 0, v))),
                        (None, None) => out.resize((i + 1) * n, 0),
                    }
                }
                out
            })
            .collect();
        Ciphertext {
            parts,
            level: a.level,
            scale: a.scale,
            params: a.params,
        }
    }

    /// a + b (same level and scale).
    pub fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        self.same_level(a, b.level, "add")?;
        Self::same_scale(a.scale, b.scale)?;
        Ok(self.zip_parts(a, b, |m, x, y| m.add(x, y)))
    }

    /// a - b (same level and scale).
    pub fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        self.same_level(a, b.level, "sub")?;
        Self::same_scale(a.scale, b.scale)?;
        Ok(self.zip_parts(a, b, |m, x, y| m.sub(x, y)))
    }

    /// -a.
    pub fn neg(&self, a: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        let n = self.ctx.n;
        let mut out = a.clone();
        for p in out.parts.iter_mut() {
            for i in 0..=a.level {
                let m = self.ctx.modulus(i);
                for x in p[i * n..(i + 1) * n].iter_mut() {
                    *x = m.neg(*x);
                }
            }
        }
        Ok(out)
    }

    fn check_pt(&self, ct: &Ciphertext, pt: &Plaintext, what: &str) -> Result<()> {
        check_plaintext(&self.ctx, pt)?;
        self.same_level(ct, pt.level, what)
    }

    /// ct + pt (same level and scale).
    pub fn add_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.plain_elementwise(ct, pt, "add_plain", |m, a, b| m.add(a, b))
    }

    /// ct - pt (same level and scale).
    pub fn sub_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.plain_elementwise(ct, pt, "sub_plain", |m, a, b| m.sub(a, b))
    }

    /// Applies `op` residue by residue to ct's first part and pt (same level and scale).
    fn plain_elementwise(
        &self,
        ct: &Ciphertext,
        pt: &Plaintext,
        what: &str,
        op: impl Fn(&Modulus, u64, u64) -> u64,
    ) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        self.check_pt(ct, pt, what)?;
        Self::same_scale(ct.scale, pt.scale)?;
        let n = self.ctx.n;
        let mut out = ct.clone();
        for i in 0..=ct.level {
            let m = self.ctx.modulus(i);
            for j in i * n..(i + 1) * n {
                out.parts[0][j] = op(m, out.parts[0][j], pt.data[j]);
            }
        }
        Ok(out)
    }

    /// ct ⊙ pt (no rescale; the scale becomes ct.scale · pt.scale).
    pub fn mul_plain(&self, ct: &Ciphertext, pt: &Plaintext) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        self.check_pt(ct, pt, "mul_plain")?;
        let n = self.ctx.n;
        let mut out = ct.clone();
        for p in out.parts.iter_mut() {
            for i in 0..=ct.level {
                let m = self.ctx.modulus(i);
                for j in i * n..(i + 1) * n {
                    p[j] = m.mul(p[j], pt.data[j]);
                }
            }
        }
        out.scale = ct.scale * pt.scale;
        Ok(out)
    }

    /// Encodes `values` at the scale that makes ct ⊙ pt land on the ladder after one rescale,
    /// multiplies and rescales.
    pub fn mul_values_rescale(&self, ct: &Ciphertext, values: &[crate::C64]) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        if ct.level == 0 {
            return Err(FheError::Level(
                "mul_values_rescale needs a level ≥ 1".into(),
            ));
        }
        let pt = self.ctx.encode(values, ct.level, self.rescale_target(ct))?;
        self.rescale(&self.mul_plain(ct, &pt)?)
    }

    /// The plaintext scale that brings `ct` to Δ_{l-1} after a product and one rescale.
    pub fn rescale_target(&self, ct: &Ciphertext) -> f64 {
        let l = ct.level;
        self.ctx.scale_at(l.saturating_sub(1)) * self.ctx.q[l] as f64 / ct.scale
    }

    /// ct + c for a complex constant c (encoded at the ciphertext's scale).
    pub fn add_const(&self, ct: &Ciphertext, c: crate::C64) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let n = self.ctx.n;
        let mut coeffs = vec![0.0; n];
        // The constant polynomial re + im·X^(N/2) has every slot equal to re + i·im.
        coeffs[0] = c.re;
        coeffs[n / 2] = c.im;
        let pt = self.ctx.encode_coeffs(&coeffs, ct.level, ct.scale)?;
        self.add_plain(ct, &pt)
    }

    /// ct · k for an integer k (exact; scale unchanged).
    pub fn mul_int(&self, ct: &Ciphertext, k: i64) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let n = self.ctx.n;
        let mut out = ct.clone();
        for i in 0..=ct.level {
            let m = self.ctx.modulus(i);
            let w = m.from_i64(k);
            let ws = m.shoup(w);
            for p in out.parts.iter_mut() {
                for x in p[i * n..(i + 1) * n].iter_mut() {
                    *x = m.mul_shoup(*x, w, ws);
                }
            }
        }
        Ok(out)
    }

    /// ct · round(c · const_scale), scale multiplied by const_scale (no rescale).
    pub fn mul_const(&self, ct: &Ciphertext, c: f64, const_scale: f64) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let v = c * const_scale;
        if !v.is_finite() || v.abs() >= 2f64.powi(120) {
            return Err(FheError::ScaleOverflow(format!(
                "constant {c} × scale {const_scale:e} is too large"
            )));
        }
        let k = v.round() as i128;
        let n = self.ctx.n;
        let mut out = ct.clone();
        for i in 0..=ct.level {
            let m = self.ctx.modulus(i);
            let w = m.from_i128(k);
            let ws = m.shoup(w);
            for p in out.parts.iter_mut() {
                for x in p[i * n..(i + 1) * n].iter_mut() {
                    *x = m.mul_shoup(*x, w, ws);
                }
            }
        }
        out.scale = ct.scale * const_scale;
        Ok(out)
    }

    /// ct · c, rescaled onto the ladder (consumes one level).
    pub fn mul_const_rescale(&self, ct: &Ciphertext, c: f64) -> Result<Ciphertext> {
        if ct.level == 0 {
            return Err(FheError::Level(
                "mul_const_rescale needs a level ≥ 1".into(),
            ));
        }
        let t = self.rescale_target(ct);
        self.rescale(&self.mul_const(ct, c, t)?)
    }

    /// ct · c rescaled so that the result has scale `target` (consumes one level).
    pub fn mul_const_rescale_to(&self, ct: &Ciphertext, c: f64, target: f64) -> Result<Ciphertext> {
        if ct.level == 0 {
            return Err(FheError::Level(
                "mul_const_rescale_to needs a level ≥ 1".into(),
            ));
        }
        let t = target * self.ctx.q[ct.level] as f64 / ct.scale;
        self.rescale(&self.mul_const(ct, c, t)?)
    }

    /// The tensor product (size 3, no relinearisation; scale a.scale · b.scale).
    pub fn mul_no_relin(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(a)?;
        self.check_ct(b)?;
        self.same_level(a, b.level, "mul")?;
        if a.size() != 2 || b.size() != 2 {
            return Err(FheError::CiphertextSize(format!(
                "mul needs two size-2 ciphertexts, got sizes {} and {}; relinearise first",
                a.size(),
                b.size()
            )));
        }
        let scale = a.scale * b.scale;
        let log_q: f64 = self.ctx.q[..=a.level]
            .iter()
            .map(|&x| (x as f64).log2())
            .sum();
        if scale.log2() >= log_q - 1.0 {
            return Err(FheError::ScaleOverflow(format!(
                "the product scale 2^{:.1} reaches the modulus 2^{log_q:.1} at level {}; rescale first",
                scale.log2(),
                a.level
            )));
        }
        let n = self.ctx.n;
        let len = (a.level + 1) * n;
        let (mut d0, mut d1, mut d2) = (vec![0u64; len], vec![0u64; len], vec![0u64; len]);
        d0.par_chunks_mut(n)
            .zip(d1.par_chunks_mut(n))
            .zip(d2.par_chunks_mut(n))
            .enumerate()
            .for_each(|(i, ((o0, o1), o2))| {
                let m = self.ctx.modulus(i);
                let lim = i * n..(i + 1) * n;
                let (a0, a1) = (&a.parts[0][lim.clone()], &a.parts[1][lim.clone()]);
                let (b0, b1) = (&b.parts[0][lim.clone()], &b.parts[1][lim]);
                for j in 0..n {
                    o0[j] = m.mul(a0[j], b0[j]);
                    o1[j] = m
                        .reduce_wide(a0[j] as u128 * b1[j] as u128 + a1[j] as u128 * b0[j] as u128);
                    o2[j] = m.mul(a1[j], b1[j]);
                }
            });
        Ok(Ciphertext {
            parts: vec![d0, d1, d2],
            level: a.level,
            scale,
            params: a.params,
        })
    }

    /// Size 3 → size 2 with the relinearisation key.
    pub fn relinearize(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        if ct.size() == 2 {
            return Ok(ct.clone());
        }
        if ct.size() != 3 {
            return Err(FheError::CiphertextSize(format!(
                "relinearize handles size 3, got {}",
                ct.size()
            )));
        }
        let rlk = self.keys.relin.as_ref().ok_or(FheError::MissingRelinKey)?;
        bump(&self.counts.key_switches, 1);
        bump(&self.counts.mod_downs, 2);
        let (mut k0, mut k1) = self.ctx.key_switch(&ct.parts[2], ct.level, &rlk.0);
        let n = self.ctx.n;
        for i in 0..=ct.level {
            let m = self.ctx.modulus(i);
            let lim = i * n..(i + 1) * n;
            for (o, &x) in k0[lim.clone()].iter_mut().zip(&ct.parts[0][lim.clone()]) {
                *o = m.add(*o, x);
            }
            for (o, &x) in k1[lim.clone()].iter_mut().zip(&ct.parts[1][lim]) {
                *o = m.add(*o, x);
            }
        }
        Ok(Ciphertext {
            parts: vec![k0, k1],
            level: ct.level,
            scale: ct.scale,
            params: ct.params,
        })
    }

    /// a · b with relinearisation (no rescale).
    pub fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        self.relinearize(&self.mul_no_relin(a, b)?)
    }

    /// a · b, relinearised and rescaled.
    pub fn mul_relin_rescale(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let t = self.mul_no_relin(a, b)?;
        if t.level == 0 {
            return self.rescale(&self.relinearize(&t)?);
        }
        let rlk = self.keys.relin.as_ref().ok_or(FheError::MissingRelinKey)?;
        let l = t.level;
        // The relinearisation's division by P and the rescale's by q_l as one rounded
        // division by P·q_l (see `Context::mod_down_rescale`).
        bump(&self.counts.key_switches, 1);
        bump(&self.counts.mod_downs, 2);
        bump(&self.counts.rescales, 1);
        let (x0, x1) = self.ctx.key_switch_raw(&t.parts[2], l, &rlk.0);
        let parts = if self.ctx.p.len() == 1 {
            vec![
                self.ctx.mod_down_rescale(x0, &t.parts[0], l),
                self.ctx.mod_down_rescale(x1, &t.parts[1], l),
            ]
        } else {
            vec![
                self.ctx.mod_down_rescale_rns(x0, Some(&t.parts[0]), l),
                self.ctx.mod_down_rescale_rns(x1, Some(&t.parts[1]), l),
            ]
        };
        Ok(Ciphertext {
            parts,
            level: l - 1,
            scale: t.scale / self.ctx.q[l] as f64,
            params: t.params,
        })
    }

    /// a², relinearised and rescaled.
    pub fn square_rescale(&self, a: &Ciphertext) -> Result<Ciphertext> {
        self.mul_relin_rescale(a, a)
    }

    /// Divides by the last prime q_l (rounding) and drops it: level l → l-1, scale / q_l.
    pub fn rescale(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        let l = ct.level;
        if l == 0 {
            return Err(FheError::Level(
                "cannot rescale a ciphertext at level 0 (no prime left to divide by)".into(),
            ));
        }
        bump(&self.counts.rescales, 1);
        let n = self.ctx.n;
        let ql = self.ctx.q[l];
        let half = ql >> 1;
        let mut parts = Vec::with_capacity(ct.size());
        for p in &ct.parts {
            let mut last = crate::scratch::u64s(n);
            last.copy_from_slice(&p[l * n..(l + 1) * n]);
            self.ctx.tables[l].inverse(&mut last);
            let last = &*last;
            let mut out = p[..l * n].to_vec();
            out.par_chunks_mut(n).enumerate().for_each_init(
                || crate::scratch::u64s(n),
                |r, (i, ol)| {
                    let t = &self.ctx.tables[i];
                    let m = &t.m;
                    // Centred representative of the last limb, reduced mod q_i: rounding division.
                    if ql < 2 * m.q {
                        // Both v ≤ q_l/2 and v - q_l + q_i lie in [0, q_i): a select, no reduction.
                        let off = m.q.wrapping_sub(ql);
                        for (rv, &v) in r.iter_mut().zip(last) {
                            *rv = crate::keyswitch::centred_lift(v, half, off);
                        }
                    } else {
                        let ql_mod = ql % m.q;
                        for (rv, &v) in r.iter_mut().zip(last) {
                            let x = m.reduce_u128(v as u128);
                            *rv = if v > half { m.sub(x, ql_mod) } else { x };
                        }
                    }
                    t.forward(r);
                    let (inv, invs) = self.ctx.q_inv[l][i];
                    for (o, &rv) in ol.iter_mut().zip(r.iter()) {
                        *o = m.mul_shoup(m.sub(*o, rv), inv, invs);
                    }
                },
            );
            parts.push(out);
        }
        Ok(Ciphertext {
            parts,
            level: l - 1,
            scale: ct.scale / ql as f64,
            params: ct.params,
        })
    }

    /// Drops primes down to `level` without dividing (the scale is unchanged).
    pub fn drop_to_level(&self, ct: &Ciphertext, level: usize) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        if level > ct.level {
            return Err(FheError::Level(format!(
                "cannot raise a ciphertext from level {} to {level}",
                ct.level
            )));
        }
        let n = self.ctx.n;
        Ok(Ciphertext {
            parts: ct
                .parts
                .iter()
                .map(|p| p[..(level + 1) * n].to_vec())
                .collect(),
            level,
            scale: ct.scale,
            params: ct.params,
        })
    }

    /// Brings `ct` to `level` with the ladder scale Δ_level. If it is already there, a copy;
    /// otherwise primes are dropped to level+1 and one constant product and rescale land it
    /// exactly (up to 2^-40) on Δ_level.
    pub fn adjust(&self, ct: &Ciphertext, level: usize) -> Result<Ciphertext> {
        self.adjust_to(ct, level, self.ctx.scale_at(level))
    }

    /// [`adjust`](Self::adjust) onto an arbitrary `target` scale at `level` (bootstrapping
    /// keeps its own scale ladder on primes of a different size than the user's).
    pub fn adjust_to(&self, ct: &Ciphertext, level: usize, target: f64) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        if ct.level == level && (ct.scale - target).abs() / target <= SCALE_TOLERANCE {
            return Ok(ct.clone());
        }
        if ct.level <= level {
            return Err(FheError::Level(format!(
                "cannot adjust from level {} (scale 2^{:.3}) to level {level}: a level is needed",
                ct.level,
                ct.scale.log2()
            )));
        }
        let c = self.drop_to_level(ct, level + 1)?;
        let factor = target * self.ctx.q[level + 1] as f64 / c.scale;
        let mut out = self.rescale(&self.mul_const(&c, 1.0, factor)?)?;
        // The integer constant was round(factor); record the exact scale.
        out.scale = c.scale * factor.round() / self.ctx.q[level + 1] as f64;
        Ok(out)
    }

    fn galois_key(&self, g: usize, what: impl FnOnce() -> String) -> Result<&SwitchingKey> {
        self.keys
            .galois
            .keys
            .get(&g)
            .ok_or_else(|| FheError::MissingGaloisKey {
                what: what(),
                galois_element: g,
            })
    }

    /// The NTT-domain index map of automorphism g (cached for every Galois key held).
    fn perm(&self, g: usize) -> Cow<'_, [u32]> {
        match self.perms.get(&g) {
            Some(p) => Cow::Borrowed(p),
            None => Cow::Owned(automorphism_ntt_index(self.ctx.log_n, g)),
        }
    }

    /// k0 += σ_g(c0) limb by limb, reading c0 through the index map.
    fn add_permuted(&self, k0: &mut [u64], c0: &[u64], level: usize, perm: &[u32]) {
        let n = self.ctx.n;
        for i in 0..=level {
            let m = self.ctx.modulus(i);
            let src = &c0[i * n..(i + 1) * n];
            for (o, &pj) in k0[i * n..(i + 1) * n].iter_mut().zip(perm) {
                *o = m.add(*o, src[pj as usize]);
            }
        }
    }

    /// Applies the automorphism g using a shared decomposition of c_1.
    fn apply_galois(
        &self,
        ct: &Ciphertext,
        dec: &crate::keyswitch::Decomposition,
        g: usize,
        key: &SwitchingKey,
    ) -> Ciphertext {
        let perm = self.perm(g);
        bump(&self.counts.hoisted_products, 1);
        bump(&self.counts.mod_downs, 2);
        let (mut k0, k1) = self.ctx.key_product(dec, key, Some(&perm));
        self.add_permuted(&mut k0, &ct.parts[0], ct.level, &perm);
        Ciphertext {
            parts: vec![k0, k1],
            level: ct.level,
            scale: ct.scale,
            params: ct.params,
        }
    }

    /// Applies the automorphism g to one ciphertext: σ_g commutes with the basis extension
    /// (a signed coefficient permutation of a centred lift), so c_1 is permuted first and
    /// switched by the fused path, with no decomposition kept.
    fn switch_galois(&self, ct: &Ciphertext, g: usize, key: &SwitchingKey) -> Ciphertext {
        let n = self.ctx.n;
        let perm = self.perm(g);
        let lq = ct.level + 1;
        let mut c1 = crate::scratch::u64s(lq * n);
        for (i, dst) in c1.chunks_exact_mut(n).enumerate() {
            let src = &ct.parts[1][i * n..(i + 1) * n];
            for (d, &pj) in dst.iter_mut().zip(perm.iter()) {
                *d = src[pj as usize];
            }
        }
        bump(&self.counts.key_switches, 1);
        bump(&self.counts.mod_downs, 2);
        let (mut k0, k1) = self.ctx.key_switch(&c1, ct.level, key);
        self.add_permuted(&mut k0, &ct.parts[0], ct.level, &perm);
        Ciphertext {
            parts: vec![k0, k1],
            level: ct.level,
            scale: ct.scale,
            params: ct.params,
        }
    }

    fn need_size2(ct: &Ciphertext, what: &str) -> Result<()> {
        if ct.size() != 2 {
            return Err(FheError::CiphertextSize(format!(
                "{what} needs a size-2 ciphertext, got size {}; relinearise first",
                ct.size()
            )));
        }
        Ok(())
    }

    /// Left rotation of the slots by `step` (negative = right).
    pub fn rotate(&self, ct: &Ciphertext, step: i64) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        Self::need_size2(ct, "rotate")?;
        let g = galois_element(&self.ctx, step);
        if g == 1 {
            return Ok(ct.clone());
        }
        let slots = self.ctx.slots() as i64;
        let key = self.galois_key(g, || {
            format!(
                "rotation by {step} (≡ {} mod {slots})",
                step.rem_euclid(slots)
            )
        })?;
        Ok(self.switch_galois(ct, g, key))
    }

    /// Several rotations of one ciphertext sharing one decomposition of c_1 (hoisting).
    pub fn rotate_hoisted(&self, ct: &Ciphertext, steps: &[i64]) -> Result<Vec<Ciphertext>> {
        self.check_ct(ct)?;
        Self::need_size2(ct, "rotate")?;
        let slots = self.ctx.slots() as i64;
        let mut keys = Vec::with_capacity(steps.len());
        for &s in steps {
            let g = galois_element(&self.ctx, s);
            if g == 1 {
                keys.push(None);
            } else {
                keys.push(Some((
                    g,
                    self.galois_key(g, || {
                        format!("rotation by {s} (≡ {} mod {slots})", s.rem_euclid(slots))
                    })?,
                )));
            }
        }
        if keys.iter().all(|k| k.is_none()) {
            return Ok(vec![ct.clone(); steps.len()]);
        }
        bump(&self.counts.decompositions, 1);
        let dec = self.ctx.decompose(&ct.parts[1], ct.level);
        Ok(keys
            .into_iter()
            .map(|k| match k {
                None => ct.clone(),
                Some((g, key)) => self.apply_galois(ct, &dec, g, key),
            })
            .collect())
    }

    /// The Galois keys of `steps` (None for the identity).
    fn step_keys(&self, steps: &[i64]) -> Result<Vec<Option<(usize, &SwitchingKey)>>> {
        let slots = self.ctx.slots() as i64;
        steps
            .iter()
            .map(|&s| {
                let g = galois_element(&self.ctx, s);
                if g == 1 {
                    return Ok(None);
                }
                let key = self.galois_key(g, || {
                    format!("rotation by {s} (≡ {} mod {slots})", s.rem_euclid(slots))
                })?;
                Ok(Some((g, key)))
            })
            .collect()
    }

    /// Table index of limb k of the extended basis Q_level·P.
    fn ext_table(&self, level: usize, k: usize) -> usize {
        if k <= level {
            k
        } else {
            self.ctx.p_index(k - level - 1)
        }
    }

    /// P·ct in the extended basis (its P limbs are zero).
    pub(crate) fn to_ext(&self, ct: &Ciphertext) -> ExtCiphertext {
        let n = self.ctx.n;
        let lq = ct.level + 1;
        let w = lq + self.ctx.p.len();
        let scaled = |src: &[u64]| {
            let mut out = vec![0u64; w * n];
            out[..lq * n]
                .par_chunks_mut(n)
                .zip(src.par_chunks(n))
                .enumerate()
                .for_each(|(i, (o, x))| {
                    let m = self.ctx.modulus(i);
                    let (pm, pms) = (self.ctx.p_mod_q[i], m.shoup(self.ctx.p_mod_q[i]));
                    for (o, &v) in o.iter_mut().zip(x) {
                        *o = m.mul_shoup(v, pm, pms);
                    }
                });
            out
        };
        ExtCiphertext {
            parts: [scaled(&ct.parts[0]), scaled(&ct.parts[1])],
            level: ct.level,
        }
    }

    /// Hoisted rotations left in the extended basis (see [`ExtCiphertext`]): one shared
    /// decomposition of c_1 and, per step, the key product without its division by P, plus
    /// P·σ(c_0).
    pub(crate) fn rotate_hoisted_ext(
        &self,
        ct: &Ciphertext,
        steps: &[i64],
    ) -> Result<Vec<ExtCiphertext>> {
        self.check_ct(ct)?;
        Self::need_size2(ct, "rotate")?;
        let keys = self.step_keys(steps)?;
        let n = self.ctx.n;
        let level = ct.level;
        let dec = if keys.iter().any(Option::is_some) {
            bump(&self.counts.decompositions, 1);
            Some(self.ctx.decompose(&ct.parts[1], level))
        } else {
            None
        };
        let mut out = Vec::with_capacity(steps.len());
        for k in keys {
            let (Some((g, key)), Some(dec)) = (k, dec.as_ref()) else {
                out.push(self.to_ext(ct));
                continue;
            };
            bump(&self.counts.hoisted_products, 1);
            let perm = self.perm(g);
            let (mut r0, r1) = self.ctx.key_product_raw(dec, key, Some(&perm));
            let perm = &*perm;
            r0[..(level + 1) * n]
                .par_chunks_mut(n)
                .zip(ct.parts[0].par_chunks(n))
                .enumerate()
                .for_each(|(i, (o, src))| {
                    let m = self.ctx.modulus(i);
                    let (pm, pms) = (self.ctx.p_mod_q[i], m.shoup(self.ctx.p_mod_q[i]));
                    for (o, &pj) in o.iter_mut().zip(perm) {
                        *o = m.add(*o, m.mul_shoup(src[pj as usize], pm, pms));
                    }
                });
            out.push(ExtCiphertext {
                parts: [r0, r1],
                level,
            });
        }
        Ok(out)
    }

    /// acc += x in the extended basis.
    pub(crate) fn ext_add_into(&self, acc: &mut Option<ExtCiphertext>, x: ExtCiphertext) {
        let Some(a) = acc.as_mut() else {
            *acc = Some(x);
            return;
        };
        let n = self.ctx.n;
        let level = x.level;
        for (pa, px) in a.parts.iter_mut().zip(&x.parts) {
            pa.par_chunks_mut(n)
                .zip(px.par_chunks(n))
                .enumerate()
                .for_each(|(k, (o, v))| {
                    let m = self.ctx.modulus(self.ext_table(level, k));
                    for (o, &v) in o.iter_mut().zip(v) {
                        *o = m.add(*o, v);
                    }
                });
        }
    }

    /// acc += rot_step(x) in the extended basis (see [`galois_ext_add`](Self::galois_ext_add)).
    pub(crate) fn rotate_ext_add(
        &self,
        acc: &mut Option<ExtCiphertext>,
        x: ExtCiphertext,
        step: i64,
    ) -> Result<()> {
        let Some((g, key)) = self.step_keys(&[step])?.pop().flatten() else {
            self.ext_add_into(acc, x);
            return Ok(());
        };
        self.galois_ext_add(acc, x, g, key);
        Ok(())
    }

    /// acc += conj(x) in the extended basis.
    pub(crate) fn conjugate_ext_add(
        &self,
        acc: &mut Option<ExtCiphertext>,
        x: ExtCiphertext,
    ) -> Result<()> {
        let g = conjugation_element(&self.ctx);
        let key = self.galois_key(g, || "conjugation".into())?;
        self.galois_ext_add(acc, x, g, key);
        Ok(())
    }

    /// -x in the extended basis.
    pub(crate) fn ext_neg(&self, mut x: ExtCiphertext) -> ExtCiphertext {
        let n = self.ctx.n;
        let level = x.level;
        for p in x.parts.iter_mut() {
            p.par_chunks_mut(n).enumerate().for_each(|(k, o)| {
                let m = self.ctx.modulus(self.ext_table(level, k));
                for v in o.iter_mut() {
                    *v = m.neg(*v);
                }
            });
        }
        x
    }

    /// acc += σ_g(x) in the extended basis. Only x's second part is divided by P (the key
    /// switch needs it modulo Q_l); it is permuted and switched without the division, and
    /// the first part is permuted in the extended basis as it is, so the sum is divided by
    /// P once at the end.
    fn galois_ext_add(
        &self,
        acc: &mut Option<ExtCiphertext>,
        x: ExtCiphertext,
        g: usize,
        key: &SwitchingKey,
    ) {
        let n = self.ctx.n;
        let level = x.level;
        let [x0, mut x1] = x.parts;
        bump(&self.counts.mod_downs, 1);
        self.ctx.mod_down_in_place(&mut x1, level);
        let perm = self.perm(g);
        let perm = &*perm;
        let mut c1 = crate::scratch::u64s((level + 1) * n);
        c1.par_chunks_mut(n)
            .zip(x1.par_chunks(n))
            .for_each(|(d, src)| {
                for (d, &pj) in d.iter_mut().zip(perm) {
                    *d = src[pj as usize];
                }
            });
        drop(x1);
        bump(&self.counts.key_switches, 1);
        let (mut r0, r1) = self.ctx.key_switch_raw(&c1, level, key);
        r0.par_chunks_mut(n)
            .zip(x0.par_chunks(n))
            .enumerate()
            .for_each(|(k, (o, src))| {
                let m = self.ctx.modulus(self.ext_table(level, k));
                for (o, &pj) in o.iter_mut().zip(perm) {
                    *o = m.add(*o, src[pj as usize]);
                }
            });
        self.ext_add_into(
            acc,
            ExtCiphertext {
                parts: [r0, r1],
                level,
            },
        );
    }

    /// [`ext_mod_down`](Self::ext_mod_down) and a rescale as one rounded division by
    /// P·q_l (level l → l − 1, scale / q_l).
    pub(crate) fn ext_mod_down_rescale(&self, x: ExtCiphertext, scale: f64) -> Result<Ciphertext> {
        let level = x.level;
        if level == 0 {
            return Err(FheError::Level(
                "cannot rescale a ciphertext at level 0 (no prime left to divide by)".into(),
            ));
        }
        bump(&self.counts.mod_downs, 2);
        bump(&self.counts.rescales, 1);
        let [p0, p1] = x.parts;
        Ok(Ciphertext {
            parts: vec![
                self.ctx.mod_down_rescale_rns(p0, None, level),
                self.ctx.mod_down_rescale_rns(p1, None, level),
            ],
            level: level - 1,
            scale: scale / self.ctx.q[level] as f64,
            params: self.ctx.hash,
        })
    }

    /// The ciphertext an extended one stands for (both parts divided by P), labelled `scale`
    /// (bootstrapping fuses the division with a rescale instead).
    #[cfg(test)]
    pub(crate) fn ext_mod_down(&self, x: ExtCiphertext, scale: f64) -> Ciphertext {
        let level = x.level;
        let [mut p0, mut p1] = x.parts;
        bump(&self.counts.mod_downs, 2);
        self.ctx.mod_down_in_place(&mut p0, level);
        self.ctx.mod_down_in_place(&mut p1, level);
        Ciphertext {
            parts: vec![p0, p1],
            level,
            scale,
            params: self.ctx.hash,
        }
    }

    /// Complex conjugation of every slot.
    pub fn conjugate(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        self.check_ct(ct)?;
        Self::need_size2(ct, "conjugate")?;
        let g = conjugation_element(&self.ctx);
        let key = self.galois_key(g, || "conjugation".into())?;
        Ok(self.switch_galois(ct, g, key))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::C64;
    use crate::ckks::{Decryptor, Encryptor, KeyGenerator};
    use crate::params::ParamSpec;

    struct Fixture {
        ctx: Arc<Context>,
        ev: Evaluator,
        dec: Decryptor,
        enc: Encryptor,
        pk: crate::ckks::PublicKey,
    }

    /// N = 2^12, six 40-bit levels, three special primes (α = 3, the multi-prime paths).
    fn fixture(steps: &[i64]) -> Fixture {
        let mut spec = ParamSpec::insecure_test(12, 6);
        spec.p_bits = vec![60, 60, 60];
        let ctx = Context::new(spec).unwrap();
        let mut kg = KeyGenerator::new_seeded(&ctx, 3);
        let pk = kg.public_key();
        let ev = Evaluator::new(&ctx, kg.evaluation_keys(steps, false)).unwrap();
        let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
        let enc = Encryptor::new_seeded(&ctx, 4);
        Fixture {
            ctx,
            ev,
            dec,
            enc,
            pk,
        }
    }

    fn values(n: usize, seed: u64) -> Vec<C64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                let a = (s >> 11) as f64 / (1u64 << 53) as f64;
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
                let b = (s >> 11) as f64 / (1u64 << 53) as f64;
                C64::new(2.0 * a - 1.0, 2.0 * b - 1.0)
            })
            .collect()
    }

    fn max_err(a: &[C64], b: &[C64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (*x - *y).abs())
            .fold(0.0, f64::max)
    }

    /// The fused division by P·q_l (α > 1) computes the same product as relinearising and
    /// rescaling separately, on the same ladder scale, with no larger error and no bias at
    /// slot 0 (a biased rounding shows there, ~N times the per-coefficient bias).
    #[test]
    fn fused_relinearise_rescale_matches_the_two_steps() {
        let mut f = fixture(&[]);
        let top = f.ctx.max_level();
        let (a, b) = (values(f.ctx.slots(), 1), values(f.ctx.slots(), 2));
        let s = f.ctx.scale_at(top);
        let ca = f
            .enc
            .encrypt(&f.pk, &f.ctx.encode(&a, top, s).unwrap())
            .unwrap();
        let cb = f
            .enc
            .encrypt(&f.pk, &f.ctx.encode(&b, top, s).unwrap())
            .unwrap();
        let want: Vec<C64> = a.iter().zip(&b).map(|(x, y)| *x * *y).collect();
        let c0 = f.ev.op_counts();
        let fused = f.ev.mul_relin_rescale(&ca, &cb).unwrap();
        let d = f.ev.op_counts().since(&c0);
        assert_eq!((d.key_switches, d.rescales), (1, 1));
        let two =
            f.ev.rescale(
                &f.ev
                    .relinearize(&f.ev.mul_no_relin(&ca, &cb).unwrap())
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(fused.level, two.level);
        assert!((fused.scale / two.scale - 1.0).abs() < 1e-12);
        let e_fused = max_err(&f.dec.decrypt_decode(&fused).unwrap(), &want);
        let e_two = max_err(&f.dec.decrypt_decode(&two).unwrap(), &want);
        assert!(
            e_fused < 1e-7 && e_fused < 2.0 * e_two,
            "{e_fused:e} vs {e_two:e}"
        );
        // Zero times zero at scale 1·2^40: what is left is the division's rounding only.
        let z = vec![C64::default(); f.ctx.slots()];
        let cz = f
            .enc
            .encrypt(&f.pk, &f.ctx.encode(&z, top, 1.0).unwrap())
            .unwrap();
        let one = f
            .enc
            .encrypt(&f.pk, &f.ctx.encode(&z, top, s).unwrap())
            .unwrap();
        let r = f.ev.mul_relin_rescale(&cz, &one).unwrap();
        let got = f
            .dec
            .decrypt_decode(&Ciphertext { scale: 1.0, ..r })
            .unwrap();
        let mut mags: Vec<f64> = got.iter().map(|v| v.abs()).collect();
        let slot0 = mags[0];
        mags.sort_by(f64::total_cmp);
        let median = mags[mags.len() / 2];
        assert!(
            slot0 < 6.0 * median,
            "slot 0 {slot0:.1} vs median {median:.1}"
        );
    }

    /// Hoisted rotations kept in the extended basis, a plaintext-free sum and a giant
    /// rotation added there, divided by P once: the same slots as the rotations done one by
    /// one, with one decomposition, one key switch and two divisions by P at the end.
    #[test]
    fn extended_basis_rotations_sum_to_the_rotated_slots() {
        let mut f = fixture(&[1, 3, 8]);
        let top = f.ctx.max_level();
        let n = f.ctx.slots();
        let a = values(n, 5);
        let s = f.ctx.scale_at(top);
        let ct = f
            .enc
            .encrypt(&f.pk, &f.ctx.encode(&a, top, s).unwrap())
            .unwrap();
        let c0 = f.ev.op_counts();
        let ext = f.ev.rotate_hoisted_ext(&ct, &[0, 1, 3]).unwrap();
        let mut acc = None;
        let mut inner = None;
        for x in ext {
            f.ev.ext_add_into(&mut inner, x);
        }
        // rot_8(x + rot_1 x + rot_3 x) + (x + rot_1 x + rot_3 x)
        let inner = inner.unwrap();
        f.ev.rotate_ext_add(&mut acc, inner.clone(), 8).unwrap();
        f.ev.rotate_ext_add(&mut acc, inner, 0).unwrap();
        let out = f.ev.ext_mod_down(acc.unwrap(), ct.scale);
        let d = f.ev.op_counts().since(&c0);
        assert_eq!(
            (
                d.decompositions,
                d.hoisted_products,
                d.key_switches,
                d.mod_downs
            ),
            (1, 2, 1, 3)
        );
        let sum: Vec<C64> = (0..n)
            .map(|t| a[t] + a[(t + 1) % n] + a[(t + 3) % n])
            .collect();
        let want: Vec<C64> = (0..n).map(|t| sum[(t + 8) % n] + sum[t]).collect();
        let got = f.dec.decrypt_decode(&out).unwrap();
        let err = max_err(&got, &want);
        assert!(err < 1e-7, "{err:e}");
    }
}
