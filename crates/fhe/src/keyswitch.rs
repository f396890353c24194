//! Hybrid key switching (Han & Ki, CT-RSA 2020): the polynomial to switch is split into
//! dnum digits of α primes, each digit is extended to Q_l·P by fast basis conversion
//! ("mod up"), multiplied by the key, and the sum is divided by P ("mod down").
//!
//! Two shapes of the same computation:
//! - [`Context::key_switch`] (one switch: relinearisation, one rotation, conjugation) fuses
//!   mod up with the key product target limb by target limb, as SEAL does: each extended digit
//!   limb is produced, transformed and consumed while it is still in cache, so the
//!   (dnum × limbs) decomposition is never written to memory;
//! - [`Context::decompose`] + [`Context::key_product`] keep the decomposition so that many
//!   rotations of one ciphertext can share it (hoisting): in the NTT domain an automorphism is
//!   a permutation, so the rotated decomposition is read through an index map rather than
//!   recomputed.

use crate::arith::Modulus;
use crate::ckks::SwitchingKey;
use crate::params::Context;
use crate::scratch::{self, Buf};
use rayon::prelude::*;

/// The digits of one polynomial, each extended to Q_l·P, in NTT form.
#[derive(Debug, Clone)]
pub struct Decomposition {
    pub(crate) level: usize,
    pub(crate) exts: Vec<Vec<u64>>,
}

/// acc (+)= e·b and acc1 (+)= e·a over one limb, in u128 without reduction: at most
/// dnum ≤ 64 products below 2^120 are summed, below 2^128.
#[inline(always)]
fn mac_limb(first: bool, w0: &mut [u128], w1: &mut [u128], e: &[u64], kb: &[u64], ka: &[u64]) {
    let it = w0
        .iter_mut()
        .zip(w1.iter_mut())
        .zip(e.iter().zip(kb.iter().zip(ka)));
    if first {
        for ((o0, o1), (&ej, (&bj, &aj))) in it {
            *o0 = ej as u128 * bj as u128;
            *o1 = ej as u128 * aj as u128;
        }
    } else {
        for ((o0, o1), (&ej, (&bj, &aj))) in it {
            *o0 += ej as u128 * bj as u128;
            *o1 += ej as u128 * aj as u128;
        }
    }
}

/// v if v ≤ half, else v + off (wrapping): the centred lift of a residue v < 2^63 to a
/// nearby prime. Branch-free on purpose: the comparison is a coin flip per coefficient, and
/// the compiler's branch mispredicted on every other one (it cost more than the NTTs beside it).
#[inline(always)]
pub(crate) fn centred_lift(v: u64, half: u64, off: u64) -> u64 {
    let mask = ((half.wrapping_sub(v) as i64) >> 63) as u64;
    v.wrapping_add(off & mask)
}

/// Coefficients per block of an inner product: the two u128 accumulators of a block (16 KiB)
/// stay in L1 while every digit streams past, instead of a limb-sized pair being read and
/// written back once per digit.
const BLOCK: usize = 512;

/// o0 = Σ_d e_d·kb_d, o1 = Σ_d e_d·ka_d modulo m over one limb, with e_d read through `perm`
/// where given (a hoisted rotation's automorphism).
fn inner_product(
    m: &Modulus,
    e: &[&[u64]],
    perm: Option<&[u32]>,
    kb: &[&[u64]],
    ka: &[&[u64]],
    o0: &mut [u64],
    o1: &mut [u64],
) {
    let mut w0 = [0u128; BLOCK];
    let mut w1 = [0u128; BLOCK];
    let n = o0.len();
    let mut base = 0;
    while base < n {
        let len = BLOCK.min(n - base);
        let r = base..base + len;
        let (w0, w1) = (&mut w0[..len], &mut w1[..len]);
        for (d, ((&ed, &bd), &ad)) in e.iter().zip(kb).zip(ka).enumerate() {
            let (b, a) = (&bd[r.clone()], &ad[r.clone()]);
            match perm {
                None => mac_limb(d == 0, w0, w1, &ed[r.clone()], b, a),
                Some(p) => {
                    if d == 0 {
                        w0.fill(0);
                        w1.fill(0);
                    }
                    for ((o0, o1), (&pj, (&bj, &aj))) in w0
                        .iter_mut()
                        .zip(w1.iter_mut())
                        .zip(p[r.clone()].iter().zip(b.iter().zip(a)))
                    {
                        let ej = ed[pj as usize] as u128;
                        *o0 += ej * bj as u128;
                        *o1 += ej * aj as u128;
                    }
                }
            }
        }
        reduce_limb(m, &mut o0[r.clone()], &mut o1[r], w0, w1);
        base += len;
    }
}

/// The accumulated products of one limb, reduced.
#[inline(always)]
fn reduce_limb(m: &Modulus, o0: &mut [u64], o1: &mut [u64], w0: &[u128], w1: &[u128]) {
    for ((o0, o1), (&x0, &x1)) in o0.iter_mut().zip(o1.iter_mut()).zip(w0.iter().zip(w1)) {
        *o0 = m.reduce_wide(x0);
        *o1 = m.reduce_wide(x1);
    }
}

impl Context {
    /// (x - [x]_P) / P in place: x holds Q_l·P (NTT, limbs q_0..q_l then p_0..p_{α-1}) and
    /// is left holding Q_l (NTT), truncated.
    pub(crate) fn mod_down_in_place(&self, x: &mut Vec<u64>, level: usize) {
        let n = self.n;
        let alpha = self.p.len();
        let lq = level + 1;
        debug_assert_eq!(x.len(), (lq + alpha) * n);
        let (xq, y) = x.split_at_mut(lq * n);
        self.p_limbs_to_digits(y, None);
        let y = &*y;
        xq.par_chunks_mut(n).enumerate().for_each_init(
            || scratch::u64s(n),
            |conv, (i, xl)| {
                let t = &self.tables[i];
                let m = &t.m;
                self.p_digits_to_q(y, i, conv);
                t.forward(conv);
                let (pinv, pinvs) = self.p_inv_mod_q[i];
                for (o, &c) in xl.iter_mut().zip(conv.iter()) {
                    *o = m.mul_shoup(m.sub(*o, c), pinv, pinvs);
                }
            },
        );
        x.truncate(lq * n);
    }

    /// First half of the division by P: the P limbs `y` (NTT) become, in coefficient form,
    /// ([y + e + (P-1)/2]_{p_j} · (P/p_j)^-1) mod p_j, ready for [`p_digits_to_q`]. `e`, a
    /// small coefficient-form term added before the rounding, serves public-key encryption.
    pub(crate) fn p_limbs_to_digits(&self, y: &mut [u64], e: Option<&[i64]>) {
        let n = self.n;
        for j in 0..self.p.len() {
            let t = &self.tables[self.p_index(j)];
            let m = &t.m;
            let yl = &mut y[j * n..(j + 1) * n];
            t.inverse(yl);
            if let Some(e) = e {
                for (v, &x) in yl.iter_mut().zip(e) {
                    *v = m.add(*v, m.from_i64(x));
                }
            }
            // Rounding rather than flooring: divide x + (P-1)/2, which removes a 1/2 bias per
            // coefficient that the canonical embedding would amplify by up to N/π.
            let half = self.half_p_mod[self.p_index(j)];
            let (h, hs) = self.p_hat_inv[j];
            for v in yl.iter_mut() {
                *v = m.mul_shoup(m.add(*v, half), h, hs);
            }
        }
    }

    /// Second half: the basis conversion of the P digits to q_i, minus (P-1)/2, in
    /// coefficient form (the rounded [x]_P that the caller subtracts before multiplying by
    /// P^-1). The fast conversion Σ_j v_j·(P/p_j) overshoots [x]_P by u·P with u =
    /// ⌊Σ_j v_j/p_j⌋ in [0, α): left in, it is a bias of ~(α−1)/2 per coefficient after the
    /// division — a constant polynomial (times 1 + s) whose canonical embedding peaks at
    /// ~N·0.64 at slot 0 (and at the slots of the subrings), which was the worst-slot error of
    /// bootstrapping's low-scale rotations. u is computed in f64 (wrong only when Σ v_j/p_j is
    /// within ~α·2^-53 of an integer) and taken off.
    pub(crate) fn p_digits_to_q(&self, y: &[u64], i: usize, conv: &mut [u64]) {
        let n = self.n;
        let m = self.modulus(i);
        let half = self.half_p_mod[i];
        let alpha = self.p.len();
        if alpha > 1 {
            let inv: Vec<f64> = self.p.iter().map(|&p| 1.0 / p as f64).collect();
            let (pm, pms) = (self.p_mod_q[i], m.shoup(self.p_mod_q[i]));
            for (c, o) in conv.iter_mut().enumerate() {
                let s: f64 = (0..alpha).map(|j| y[j * n + c] as f64 * inv[j]).sum();
                // Seeded with −u·P mod q_i; the loop below adds the fast conversion.
                *o = m.neg(m.mul_shoup(s as u64, pm, pms));
            }
        }
        for j in 0..alpha {
            let h = self.p_hat_mod_q[i][j];
            let hs = m.shoup(h);
            let yj = &y[j * n..(j + 1) * n];
            if j == 0 && alpha == 1 {
                // The first term also takes the rounding offset off.
                for (c, &v) in conv.iter_mut().zip(yj) {
                    *c = m.sub(m.mul_shoup(v, h, hs), half);
                }
            } else if j == 0 {
                for (c, &v) in conv.iter_mut().zip(yj) {
                    *c = m.sub(m.add(*c, m.mul_shoup(v, h, hs)), half);
                }
            } else {
                for (c, &v) in conv.iter_mut().zip(yj) {
                    *c = m.add(*c, m.mul_shoup(v, h, hs));
                }
            }
        }
    }

    /// round((P·d + x) / (P·q_l)) modulo Q_{l-1} (NTT) for x modulo Q_l·P and d modulo Q_l
    /// (both NTT): a relinearisation's mod down and the following rescale as one exact
    /// rounded division by P·q_l, for one special prime (α = 1). The residue of x + ⌊P·q_l/2⌋
    /// modulo P·q_l is rebuilt exactly from its two limbs (Garner), so the two limbs are
    /// transformed back once and each remaining limb forward once: 2 + l transforms where
    /// mod down then rescale take 2 + 2l + 1, and one rounding instead of two.
    pub(crate) fn mod_down_rescale(&self, mut x: Vec<u64>, d: &[u64], level: usize) -> Vec<u64> {
        let n = self.n;
        let l = level;
        debug_assert!(l >= 1 && self.p.len() == 1);
        debug_assert_eq!(x.len(), (l + 2) * n);
        let (tq, tp) = (&self.tables[l], &self.tables[self.p_index(0)]);
        let (mq, mp) = (tq.m, tp.m);
        let (p, ql) = (self.p[0], self.q[l]);
        let h = (p as u128 * ql as u128) / 2;
        let (head, xp) = x.split_at_mut((l + 1) * n);
        let (xq_rest, xq) = head.split_at_mut(l * n);
        // The q_l limb of P·d + x, then both limbs to coefficients.
        let (pl, pls) = (p % mq.q, mq.shoup(p % mq.q));
        for (v, &dv) in xq.iter_mut().zip(&d[l * n..(l + 1) * n]) {
            *v = mq.add(*v, mq.mul_shoup(dv, pl, pls));
        }
        tq.inverse(xq);
        tp.inverse(xp);
        // Garner: v = a + p·t with a = [x + h]_p, t = ([x + h]_{q_l} - a)·p^-1 mod q_l, so
        // v = [x + h]_{P·q_l} in [0, P·q_l). xp keeps a, xq keeps t.
        let (hp, hq) = ((h % p as u128) as u64, (h % ql as u128) as u64);
        let pinv = mq.inv(p % ql);
        let (pinv, pinvs) = (pinv, mq.shoup(pinv));
        let one_q = mq.shoup(1);
        for (a, t) in xp.iter_mut().zip(xq.iter_mut()) {
            let av = mp.add(*a, hp);
            let bv = mq.add(*t, hq);
            *t = mq.mul_shoup(mq.sub(bv, mq.mul_shoup(av, 1, one_q)), pinv, pinvs);
            *a = av;
        }
        let (xp, xq) = (&*xp, &*xq);
        let mut out = vec![0u64; l * n];
        out.par_chunks_mut(n)
            .zip(xq_rest.par_chunks(n))
            .zip(d.par_chunks(n))
            .enumerate()
            .for_each_init(
                || scratch::u64s(n),
                |conv, (i, ((ol, xl), dl))| {
                    let t = &self.tables[i];
                    let m = &t.m;
                    let one = m.shoup(1);
                    let (pm, pms) = (p % m.q, m.shoup(p % m.q));
                    let hm = (h % m.q as u128) as u64;
                    // (v - h) mod q_i in coefficient form.
                    for ((c, &a), &tv) in conv.iter_mut().zip(xp).zip(xq) {
                        let v = m.add(m.mul_shoup(a, 1, one), m.mul_shoup(tv, pm, pms));
                        *c = m.sub(v, hm);
                    }
                    t.forward(conv);
                    let inv = m.inv(m.mul(pm, ql % m.q));
                    let invs = m.shoup(inv);
                    for (((o, &xv), &dv), &c) in ol.iter_mut().zip(xl).zip(dl).zip(conv.iter()) {
                        let v = m.add(xv, m.mul_shoup(dv, pm, pms));
                        *o = m.mul_shoup(m.sub(v, c), inv, invs);
                    }
                },
            );
        out
    }

    /// [`mod_down_rescale`](Self::mod_down_rescale) for any number α of special primes:
    /// round((P·d + x) / (P·q_l)) modulo Q_{l-1} (NTT), q_l taken as one more special prime
    /// of M = P·q_l. The α + 1 special limbs are transformed back once, each of the l
    /// remaining limbs forward once: α + 1 + l transforms per polynomial where the division
    /// by P and the rescale take α + 1 + 2l, and one rounding instead of two. The fast
    /// conversion's overshoot u·M is taken off as in [`p_digits_to_q`](Self::p_digits_to_q).
    /// `d = None` divides x alone (a sum kept in the extended basis, then rescaled).
    pub(crate) fn mod_down_rescale_rns(
        &self,
        mut x: Vec<u64>,
        d: Option<&[u64]>,
        level: usize,
    ) -> Vec<u64> {
        let n = self.n;
        let l = level;
        let alpha = self.p.len();
        let lq = l + 1;
        debug_assert!(l >= 1);
        debug_assert_eq!(x.len(), (lq + alpha) * n);
        let spec: Vec<usize> = std::iter::once(l)
            .chain((0..alpha).map(|j| self.p_index(j)))
            .collect();
        let (head, tail) = x.split_at_mut(lq * n);
        let (xq_rest, xl) = head.split_at_mut(l * n);
        // The q_l limb of P·d + x (P·d vanishes modulo the p_j).
        if let Some(d) = d {
            let m = self.modulus(l);
            let (pm, pms) = (self.p_mod_q[l], m.shoup(self.p_mod_q[l]));
            for (v, &dv) in xl.iter_mut().zip(&d[l * n..lq * n]) {
                *v = m.add(*v, m.mul_shoup(dv, pm, pms));
            }
        }
        // Each special limb to v_s = [(y_s + (M-1)/2)·(M/m_s)^-1]_{m_s}, coefficient form.
        let mut limbs: Vec<&mut [u64]> = std::iter::once(xl)
            .chain(tail.chunks_exact_mut(n))
            .collect();
        limbs
            .par_iter_mut()
            .zip(spec.par_iter())
            .for_each(|(limb, &t)| {
                let tab = &self.tables[t];
                let m = &tab.m;
                tab.inverse(limb);
                let hat = spec
                    .iter()
                    .filter(|&&o| o != t)
                    .fold(1u64, |a, &o| m.mul(a, self.tables[o].m.q % m.q));
                let hinv = m.inv(hat);
                let hinvs = m.shoup(hinv);
                let half = m.mul(m.q - 1, m.inv(2));
                for v in limb.iter_mut() {
                    *v = m.mul_shoup(m.add(*v, half), hinv, hinvs);
                }
            });
        let v: Vec<&[u64]> = limbs.into_iter().map(|x| x as &[u64]).collect();
        let inv_m: Vec<f64> = spec
            .iter()
            .map(|&t| 1.0 / self.tables[t].m.q as f64)
            .collect();
        let u: Vec<u64> = (0..n)
            .map(|c| {
                let s: f64 = v
                    .iter()
                    .zip(&inv_m)
                    .map(|(vs, &im)| vs[c] as f64 * im)
                    .sum();
                s as u64
            })
            .collect();
        let mut out = vec![0u64; l * n];
        out.par_chunks_mut(n)
            .zip(xq_rest.par_chunks(n))
            .enumerate()
            .for_each_init(
                || scratch::u64s(n),
                |conv, (i, (ol, xl))| {
                    let t = &self.tables[i];
                    let m = &t.m;
                    let hats: Vec<(u64, u64)> = spec
                        .iter()
                        .map(|&s| {
                            let h = spec
                                .iter()
                                .filter(|&&o| o != s)
                                .fold(1u64, |a, &o| m.mul(a, self.tables[o].m.q % m.q));
                            (h, m.shoup(h))
                        })
                        .collect();
                    let mm = spec
                        .iter()
                        .fold(1u64, |a, &o| m.mul(a, self.tables[o].m.q % m.q));
                    let (mms, half) = (m.shoup(mm), m.mul(m.sub(mm, 1), m.inv(2)));
                    // Σ_s v_s·(M/m_s) − u·M − (M-1)/2 = [y]_M rounded, centred.
                    for (c, o) in conv.iter_mut().enumerate() {
                        let neg = m.add(m.mul_shoup(u[c], mm, mms), half);
                        *o = m.neg(neg);
                    }
                    for (vs, &(h, hs)) in v.iter().zip(&hats) {
                        for (o, &x) in conv.iter_mut().zip(vs.iter()) {
                            *o = m.add(*o, m.mul_shoup(x, h, hs));
                        }
                    }
                    t.forward(conv);
                    let inv = m.inv(mm);
                    let invs = m.shoup(inv);
                    if let Some(d) = d {
                        let dl = &d[i * n..(i + 1) * n];
                        let (pm, pms) = (self.p_mod_q[i], m.shoup(self.p_mod_q[i]));
                        for (((o, &xv), &dv), &c) in ol.iter_mut().zip(xl).zip(dl).zip(conv.iter())
                        {
                            let y = m.add(xv, m.mul_shoup(dv, pm, pms));
                            *o = m.mul_shoup(m.sub(y, c), inv, invs);
                        }
                    } else {
                        for ((o, &xv), &c) in ol.iter_mut().zip(xl).zip(conv.iter()) {
                            *o = m.mul_shoup(m.sub(xv, c), inv, invs);
                        }
                    }
                },
            );
        out
    }

    /// The coefficient form of `c` (NTT, modulo Q_l) with each limb of a multi-prime digit
    /// multiplied by (D/q_k)^-1 mod q_k (D: the digit's modulus), ready for basis extension.
    fn digit_coeffs(&self, c: &[u64], level: usize) -> Buf<u64> {
        let n = self.n;
        let lq = level + 1;
        let mut y = scratch::u64s(lq * n);
        y.copy_from_slice(&c[..lq * n]);
        y.par_chunks_mut(n).enumerate().for_each(|(k, yk)| {
            self.tables[k].inverse(yk);
            // With one prime per digit (α = 1) the CRT factor is 1: nothing to scale.
            let (st, en) = self.digit_of(k, level);
            if en - st < 2 {
                return;
            }
            let m = self.modulus(k);
            let hat = (st..en)
                .filter(|&o| o != k)
                .fold(1u64, |acc, o| m.mul(acc, self.q[o] % m.q));
            let inv = m.inv(hat);
            let invs = m.shoup(inv);
            for v in yk.iter_mut() {
                *v = m.mul_shoup(*v, inv, invs);
            }
        });
        y
    }

    /// Basis extension of digit [st, en) of `y` (from [`digit_coeffs`](Self::digit_coeffs))
    /// to table prime `t` (outside the digit), in coefficient form, into `dst`.
    fn lift_digit(&self, y: &[u64], st: usize, en: usize, t: usize, dst: &mut [u64]) {
        let n = self.n;
        let m = self.modulus(t);
        if en - st == 1 {
            let qk = self.q[st];
            let half = qk >> 1;
            let yk = &y[st * n..(st + 1) * n];
            if qk < 2 * m.q {
                // Centred lift: y_k > q_k/2 stands for y_k - q_k (an uncentred lift has mean
                // q_k/2 per coefficient, a bias the canonical embedding amplifies by up to
                // N/π). With q_k < 2·q_t both y_k ≤ q_k/2 and y_k - q_k + q_t lie in [0, q_t),
                // so the lift is one select, with no reduction.
                let off = m.q.wrapping_sub(qk);
                for (d, &v) in dst.iter_mut().zip(yk) {
                    *d = centred_lift(v, half, off);
                }
            } else {
                let one_s = m.shoup(1);
                let corr = qk % m.q;
                for (d, &v) in dst.iter_mut().zip(yk) {
                    let r = m.mul_shoup(v, 1, one_s);
                    *d = if v > half { m.sub(r, corr) } else { r };
                }
            }
            return;
        }
        for k in st..en {
            let hat = (st..en)
                .filter(|&o| o != k)
                .fold(1u64, |acc, o| m.mul(acc, self.q[o] % m.q));
            let hs = m.shoup(hat);
            let qk = self.q[k];
            let half = qk >> 1;
            let corr = m.mul(qk % m.q, hat);
            let yk = &y[k * n..(k + 1) * n];
            let first = k == st;
            for (d, &v) in dst.iter_mut().zip(yk) {
                let mut term = m.mul_shoup(v, hat, hs);
                if v > half {
                    term = m.sub(term, corr);
                }
                *d = if first { term } else { m.add(*d, term) };
            }
        }
    }

    /// Splits `c` (NTT, modulo Q_l) into digits and extends each to Q_l·P.
    pub(crate) fn decompose(&self, c: &[u64], level: usize) -> Decomposition {
        let n = self.n;
        let y = self.digit_coeffs(c, level);
        let targets = self.qp_idx(level);
        let exts = self
            .digits(level)
            .into_par_iter()
            .map(|(st, en)| {
                let mut ext = vec![0u64; targets.len() * n];
                for (ti, &t) in targets.iter().enumerate() {
                    let dst = &mut ext[ti * n..(ti + 1) * n];
                    if (st..en).contains(&t) {
                        dst.copy_from_slice(&c[t * n..(t + 1) * n]);
                    } else {
                        self.lift_digit(&y, st, en, t, dst);
                        self.tables[t].forward(dst);
                    }
                }
                ext
            })
            .collect();
        Decomposition { level, exts }
    }

    /// One key switch of `c` (NTT, modulo Q_l): returns (d_0, d_1) modulo Q_l with
    /// d_0 + d_1·s ≈ c·s'. Mod up and key product fused per target limb (see the module page).
    pub(crate) fn key_switch(
        &self,
        c: &[u64],
        level: usize,
        key: &SwitchingKey,
    ) -> (Vec<u64>, Vec<u64>) {
        let (mut acc0, mut acc1) = self.key_switch_raw(c, level, key);
        self.mod_down_in_place(&mut acc0, level);
        self.mod_down_in_place(&mut acc1, level);
        (acc0, acc1)
    }

    /// [`key_switch`](Self::key_switch) before the division by P: (P·d_0, P·d_1) modulo
    /// Q_l·P (NTT), for callers that fold the division into a rescale.
    pub(crate) fn key_switch_raw(
        &self,
        c: &[u64],
        level: usize,
        key: &SwitchingKey,
    ) -> (Vec<u64>, Vec<u64>) {
        let n = self.n;
        let y = self.digit_coeffs(c, level);
        let targets = self.qp_idx(level);
        let digits = self.digits(level);
        let len = targets.len() * n;
        let mut acc0 = vec![0u64; len];
        let mut acc1 = vec![0u64; len];
        // Target limbs are independent: one rayon task each (one thread unless the caller's
        // pool has more), each with its own accumulators and transform buffer.
        acc0.par_chunks_mut(n)
            .zip(acc1.par_chunks_mut(n))
            .zip(targets.par_iter())
            .for_each_init(
                || scratch::u64s(digits.len() * n),
                |ext, ((o0, o1), &t)| {
                    // This target's limb of every extended digit, then one blocked pass.
                    for (&(st, en), dst) in digits.iter().zip(ext.chunks_exact_mut(n)) {
                        if !(st..en).contains(&t) {
                            self.lift_digit(&y, st, en, t, dst);
                            self.tables[t].forward(dst);
                        }
                    }
                    let e: Vec<&[u64]> = digits
                        .iter()
                        .zip(ext.chunks_exact(n))
                        .map(|(&(st, en), x)| {
                            if (st..en).contains(&t) {
                                &c[t * n..(t + 1) * n]
                            } else {
                                x
                            }
                        })
                        .collect();
                    let lim = t * n..(t + 1) * n;
                    let kb: Vec<&[u64]> = key.digits.iter().map(|(b, _)| &b[lim.clone()]).collect();
                    let ka: Vec<&[u64]> = key.digits.iter().map(|(_, a)| &a[lim.clone()]).collect();
                    inner_product(self.modulus(t), &e, None, &kb, &ka, o0, o1);
                },
            );
        (acc0, acc1)
    }

    /// Σ_d ext_d ⊙ key_d over Q_l·P, optionally reading ext through an automorphism index map,
    /// then divided by P: returns (d_0, d_1) modulo Q_l with d_0 + d_1·s ≈ x·s'.
    pub(crate) fn key_product(
        &self,
        dec: &Decomposition,
        key: &SwitchingKey,
        perm: Option<&[u32]>,
    ) -> (Vec<u64>, Vec<u64>) {
        let level = dec.level;
        let (mut acc0, mut acc1) = self.key_product_raw(dec, key, perm);
        self.mod_down_in_place(&mut acc0, level);
        self.mod_down_in_place(&mut acc1, level);
        (acc0, acc1)
    }

    /// [`key_product`](Self::key_product) before the division by P: (P·d_0, P·d_1) modulo
    /// Q_l·P (NTT), for sums of switched ciphertexts divided by P once.
    pub(crate) fn key_product_raw(
        &self,
        dec: &Decomposition,
        key: &SwitchingKey,
        perm: Option<&[u32]>,
    ) -> (Vec<u64>, Vec<u64>) {
        let n = self.n;
        let level = dec.level;
        let targets = self.qp_idx(level);
        let len = targets.len() * n;
        // Limb-outer order keeps the u128 accumulators in cache.
        let mut acc0 = vec![0u64; len];
        let mut acc1 = vec![0u64; len];
        acc0.par_chunks_mut(n)
            .zip(acc1.par_chunks_mut(n))
            .zip(targets.par_iter().enumerate())
            .for_each(|((o0, o1), (ti, &t))| {
                let e: Vec<&[u64]> = dec.exts.iter().map(|x| &x[ti * n..(ti + 1) * n]).collect();
                let lim = t * n..(t + 1) * n;
                let kb: Vec<&[u64]> = key.digits.iter().map(|(b, _)| &b[lim.clone()]).collect();
                let ka: Vec<&[u64]> = key.digits.iter().map(|(_, a)| &a[lim.clone()]).collect();
                inner_product(self.modulus(t), &e, perm, &kb, &ka, o0, o1);
            });
        (acc0, acc1)
    }
}
