//! Hybrid key switching (Han & Ki, CT-RSA 2020): the polynomial to switch is split into
//! dnum digits of α primes, each digit is extended to Q_l·P by fast basis conversion
//! ("mod up"), multiplied by the key, and the sum is divided by P ("mod down").
//!
//! The decomposition is kept separate from the key product so that many rotations of one
//! ciphertext can share it (hoisting): in the NTT domain an automorphism is a permutation, so
//! the rotated decomposition is read through an index map rather than recomputed.

use crate::ckks::SwitchingKey;
use crate::params::Context;

/// The digits of one polynomial, each extended to Q_l·P, in NTT form.
#[derive(Debug, Clone)]
pub struct Decomposition {
    pub(crate) level: usize,
    pub(crate) exts: Vec<Vec<u64>>,
}

impl Context {
    /// (x - [x]_P) / P: Q_l·P (NTT, limbs q_0..q_l then p_0..p_{α-1}) → Q_l (NTT).
    pub(crate) fn mod_down(&self, x: &[u64], level: usize) -> Vec<u64> {
        let n = self.n;
        let alpha = self.p.len();
        let lq = level + 1;
        let mut y = x[lq * n..(lq + alpha) * n].to_vec();
        for j in 0..alpha {
            let t = &self.tables[self.p_index(j)];
            let yl = &mut y[j * n..(j + 1) * n];
            t.inverse(yl);
            // Rounding rather than flooring: divide x + (P-1)/2, which removes a 1/2 bias per
            // coefficient that the canonical embedding would amplify by up to N/π.
            let half = self.half_p_mod[self.p_index(j)];
            let (h, hs) = self.p_hat_inv[j];
            for v in yl.iter_mut() {
                *v = t.m.mul_shoup(t.m.add(*v, half), h, hs);
            }
        }
        let mut out = x[..lq * n].to_vec();
        let mut conv = vec![0u64; n];
        for i in 0..lq {
            let t = &self.tables[i];
            let m = &t.m;
            conv.fill(0);
            for j in 0..alpha {
                let h = self.p_hat_mod_q[i][j];
                let hs = m.shoup(h);
                for (c, &v) in conv.iter_mut().zip(&y[j * n..(j + 1) * n]) {
                    *c = m.add(*c, m.mul_shoup(v, h, hs));
                }
            }
            let half = self.half_p_mod[i];
            for c in conv.iter_mut() {
                *c = m.sub(*c, half);
            }
            t.forward(&mut conv);
            let (pinv, pinvs) = self.p_inv_mod_q[i];
            for (o, &c) in out[i * n..(i + 1) * n].iter_mut().zip(&conv) {
                *o = m.mul_shoup(m.sub(*o, c), pinv, pinvs);
            }
        }
        out
    }

    /// Splits `c` (NTT, modulo Q_l) into digits and extends each to Q_l·P.
    pub(crate) fn decompose(&self, c: &[u64], level: usize) -> Decomposition {
        let n = self.n;
        let alpha = self.p.len();
        let lq = level + 1;
        let mut coeff = c[..lq * n].to_vec();
        for i in 0..lq {
            self.tables[i].inverse(&mut coeff[i * n..(i + 1) * n]);
        }
        let targets = self.qp_idx(level);
        let mut exts = Vec::new();
        for (st, en) in self.digits(level) {
            // y_k = [x_k · (D/q_k)^-1]_{q_k} for the digit's primes (D = their product).
            let mut y = coeff[st * n..en * n].to_vec();
            // With one prime per digit (α = 1) the CRT factor is 1: nothing to scale.
            for k in (st..en).filter(|_| en - st > 1) {
                let m = self.modulus(k);
                let hat = (st..en)
                    .filter(|&o| o != k)
                    .fold(1u64, |acc, o| m.mul(acc, self.q[o] % m.q));
                let inv = m.inv(hat);
                let invs = m.shoup(inv);
                for v in y[(k - st) * n..(k - st + 1) * n].iter_mut() {
                    *v = m.mul_shoup(*v, inv, invs);
                }
            }
            let mut ext = vec![0u64; (lq + alpha) * n];
            for (ti, &t) in targets.iter().enumerate() {
                let dst = &mut ext[ti * n..(ti + 1) * n];
                if (st..en).contains(&t) {
                    dst.copy_from_slice(&c[t * n..(t + 1) * n]);
                    continue;
                }
                let tab = &self.tables[t];
                let m = &tab.m;
                if en - st == 1 && self.q[st] < m.q {
                    // α = 1, smaller source prime: the centred value needs no reduction.
                    let qk = self.q[st];
                    let half = qk >> 1;
                    let off = m.q - qk;
                    for (d, &v) in dst.iter_mut().zip(&y) {
                        *d = if v > half { v + off } else { v };
                    }
                    tab.forward(dst);
                    continue;
                }
                // Centred lift: y_k > q_k/2 stands for y_k - q_k. An uncentred lift has mean
                // q_k/2 per coefficient, a bias the canonical embedding amplifies by up to N/π.
                for k in st..en {
                    let hat = (st..en)
                        .filter(|&o| o != k)
                        .fold(1u64, |acc, o| m.mul(acc, self.q[o] % m.q));
                    let hs = m.shoup(hat);
                    let qk = self.q[k];
                    let half = qk >> 1;
                    let corr = m.mul(qk % m.q, hat);
                    let yk = &y[(k - st) * n..(k - st + 1) * n];
                    let first = k == st;
                    for (d, &v) in dst.iter_mut().zip(yk) {
                        let mut term = m.mul_shoup(v, hat, hs);
                        if v > half {
                            term = m.sub(term, corr);
                        }
                        *d = if first { term } else { m.add(*d, term) };
                    }
                }
                tab.forward(dst);
            }
            exts.push(ext);
        }
        Decomposition { level, exts }
    }

    /// Σ_d ext_d ⊙ key_d over Q_l·P, optionally reading ext through an automorphism index map,
    /// then divided by P: returns (d_0, d_1) modulo Q_l with d_0 + d_1·s ≈ x·s'.
    pub(crate) fn key_product(
        &self,
        dec: &Decomposition,
        key: &SwitchingKey,
        perm: Option<&[u32]>,
    ) -> (Vec<u64>, Vec<u64>) {
        let n = self.n;
        let level = dec.level;
        let targets = self.qp_idx(level);
        let len = targets.len() * n;
        // Lazy accumulation: at most dnum ≤ 64 products below 4q·q < 2^122 per word, below
        // 2^128, reduced once at the end. Limb-outer order keeps the accumulators in cache.
        let mut acc0 = vec![0u64; len];
        let mut acc1 = vec![0u64; len];
        let mut w0 = vec![0u128; n];
        let mut w1 = vec![0u128; n];
        for (ti, &t) in targets.iter().enumerate() {
            w0.fill(0);
            w1.fill(0);
            for (d, ext) in dec.exts.iter().enumerate() {
                let (b, a) = &key.digits[d];
                let e = &ext[ti * n..(ti + 1) * n];
                let kb = &b[t * n..(t + 1) * n];
                let ka = &a[t * n..(t + 1) * n];
                match perm {
                    None => {
                        for ((((o0, o1), &ej), &bj), &aj) in
                            w0.iter_mut().zip(w1.iter_mut()).zip(e).zip(kb).zip(ka)
                        {
                            *o0 += ej as u128 * bj as u128;
                            *o1 += ej as u128 * aj as u128;
                        }
                    }
                    Some(p) => {
                        for ((((o0, o1), &pj), &bj), &aj) in
                            w0.iter_mut().zip(w1.iter_mut()).zip(p).zip(kb).zip(ka)
                        {
                            let ej = e[pj as usize] as u128;
                            *o0 += ej * bj as u128;
                            *o1 += ej * aj as u128;
                        }
                    }
                }
            }
            let m = self.modulus(t);
            for ((o, &x), (o1, &y)) in acc0[ti * n..(ti + 1) * n]
                .iter_mut()
                .zip(&w0)
                .zip(acc1[ti * n..(ti + 1) * n].iter_mut().zip(&w1))
            {
                *o = m.reduce_wide(x);
                *o1 = m.reduce_wide(y);
            }
        }
        (self.mod_down(&acc0, level), self.mod_down(&acc1, level))
    }
}

#[cfg(test)]
mod speed {
    use crate::ckks::*;
    use crate::params::*;
    use std::time::Instant;

    #[test]
    #[ignore = "timing breakdown, run by hand"]
    fn keyswitch_breakdown() {
        let ctx = Context::new(ParamSpec::n14()).unwrap();
        let mut kg = KeyGenerator::new_seeded(&ctx, 1);
        let rlk = kg.relin_key();
        let l = ctx.max_level();
        let n = ctx.n;
        let c: Vec<u64> = (0..(l + 1) * n)
            .map(|i| (i as u64 * 7919) % ctx.q[i / n])
            .collect();
        let reps = 10;
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(ctx.decompose(&c, l));
        }
        println!(
            "decompose {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
        let dec = ctx.decompose(&c, l);
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(ctx.key_product(&dec, &rlk.0, None));
        }
        println!(
            "key_product+mod_down {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
        let x: Vec<u64> = (0..(l + 2) * n).map(|i| (i as u64 * 31) % 1000).collect();
        let t = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(ctx.mod_down(&x, l));
        }
        println!(
            "mod_down {:.2} ms",
            t.elapsed().as_secs_f64() * 1e3 / reps as f64
        );
        let mut a = c[..n].to_vec();
        let t = Instant::now();
        for _ in 0..100 {
            ctx.tables[0].forward(&mut a);
        }
        println!("ntt {:.1} us", t.elapsed().as_secs_f64() * 1e6 / 100.0);
        let t = Instant::now();
        for _ in 0..100 {
            ctx.tables[0].inverse(&mut a);
        }
        println!("intt {:.1} us", t.elapsed().as_secs_f64() * 1e6 / 100.0);
    }
}
