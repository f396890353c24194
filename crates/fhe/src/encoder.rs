//! The CKKS encoder: N/2 complex slots ↔ a real polynomial of degree < N through the canonical
//! embedding σ(m) = (m(ζ^(5^j)))_j, ζ = e^(iπ/N), with the "special FFT" of Cheon et al.
//! (HEAAN, 2017): an O(N log N) butterfly network whose twiddles are indexed by the powers of 5,
//! so that the automorphism X → X^5 rotates the slots by one position.

use crate::arith::bit_reverse;
use crate::complex::C64;

/// Twiddles and the rotation group for one N.
#[derive(Debug, Clone)]
pub struct EncoderTables {
    /// N/2 (slots).
    pub slots: usize,
    /// M = 2N.
    m: usize,
    /// 5^j mod 2N for j < N/2.
    rot_group: Vec<usize>,
    /// e^(2πik/M) for k ≤ M.
    roots: Vec<C64>,
    /// The twiddles of each butterfly stage of a full-length (N/2) transform, stage after
    /// stage (the stage of half-length h at offset h - 1), forward and inverse: read in order,
    /// where the index arithmetic into `roots` cost as much as the butterflies.
    fwd_tw: Vec<C64>,
    inv_tw: Vec<C64>,
}

impl EncoderTables {
    /// Tables for N = 2^log_n.
    pub fn new(log_n: u32) -> Self {
        let n = 1usize << log_n;
        let m = 2 * n;
        let slots = n / 2;
        let mut rot_group = Vec::with_capacity(slots);
        let mut g = 1usize;
        for _ in 0..slots {
            rot_group.push(g);
            g = g * 5 % m;
        }
        let roots = (0..=m)
            .map(|k| C64::cis(2.0 * std::f64::consts::PI * k as f64 / m as f64))
            .collect();
        let mut t = EncoderTables {
            slots,
            m,
            rot_group,
            roots,
            fwd_tw: Vec::new(),
            inv_tw: Vec::new(),
        };
        let mut len = 2;
        while len <= slots {
            let f = t.stage_twiddles(len, false);
            let i = t.stage_twiddles(len, true);
            t.fwd_tw.extend(f);
            t.inv_tw.extend(i);
            len <<= 1;
        }
        t
    }

    /// The twiddles of the butterfly stage of length `len` (lenq = 4·len is a power of two,
    /// so the reduction of 5^j is a mask).
    pub(crate) fn stage_twiddles(&self, len: usize, inverse: bool) -> Vec<C64> {
        let lenh = len >> 1;
        let lenq = len << 2;
        let gap = self.m / lenq;
        (0..lenh)
            .map(|j| {
                let r = self.rot_group[j] & (lenq - 1);
                self.roots[if inverse { lenq - r } else { r } * gap]
            })
            .collect()
    }

    /// The stage twiddles for a transform of length n: precomputed for n = N/2.
    fn twiddles(&self, n: usize, len: usize, inverse: bool) -> std::borrow::Cow<'_, [C64]> {
        let lenh = len >> 1;
        if n == self.slots {
            let t = if inverse { &self.inv_tw } else { &self.fwd_tw };
            std::borrow::Cow::Borrowed(&t[lenh - 1..2 * lenh - 1])
        } else {
            std::borrow::Cow::Owned(self.stage_twiddles(len, inverse))
        }
    }

    fn bit_reverse_in_place(v: &mut [C64]) {
        let n = v.len();
        let bits = n.trailing_zeros();
        for i in 0..n {
            let j = bit_reverse(i, bits);
            if i < j {
                v.swap(i, j);
            }
        }
    }

    /// Evaluates the "half" polynomial at the slot roots (decoding direction), in place.
    pub fn fft_special(&self, v: &mut [C64]) {
        let n = v.len();
        Self::bit_reverse_in_place(v);
        let mut len = 2;
        while len <= n {
            let lenh = len >> 1;
            let tw = self.twiddles(n, len, false);
            for chunk in v.chunks_exact_mut(len) {
                let (lo, hi) = chunk.split_at_mut(lenh);
                for ((a, b), &t) in lo.iter_mut().zip(hi.iter_mut()).zip(tw.iter()) {
                    let u = *a;
                    let w = *b * t;
                    *a = u + w;
                    *b = u - w;
                }
            }
            len <<= 1;
        }
    }

    /// Inverse of [`fft_special`](Self::fft_special) (encoding direction), in place.
    pub fn fft_special_inv(&self, v: &mut [C64]) {
        let n = v.len();
        let mut len = n;
        while len >= 2 {
            let lenh = len >> 1;
            let tw = self.twiddles(n, len, true);
            for chunk in v.chunks_exact_mut(len) {
                let (lo, hi) = chunk.split_at_mut(lenh);
                for ((a, b), &t) in lo.iter_mut().zip(hi.iter_mut()).zip(tw.iter()) {
                    let u = *a + *b;
                    let w = (*a - *b) * t;
                    *a = u;
                    *b = w;
                }
            }
            len >>= 1;
        }
        Self::bit_reverse_in_place(v);
        let inv = 1.0 / n as f64;
        for x in v.iter_mut() {
            *x = x.scale(inv);
        }
    }

    /// Slots (length N/2, zero-padded by the caller) → real coefficients (length N), unscaled.
    pub fn slots_to_coeffs(&self, slots: &[C64]) -> Vec<f64> {
        self.slots_to_coeffs_owned(slots.to_vec())
    }

    /// [`slots_to_coeffs`](Self::slots_to_coeffs) transforming its argument in place.
    pub fn slots_to_coeffs_owned(&self, mut v: Vec<C64>) -> Vec<f64> {
        self.fft_special_inv(&mut v);
        let h = self.slots;
        let mut c = vec![0.0; 2 * h];
        for i in 0..h {
            c[i] = v[i].re;
            c[i + h] = v[i].im;
        }
        c
    }

    /// Real coefficients (length N) → slots (length N/2).
    pub fn coeffs_to_slots(&self, c: &[f64]) -> Vec<C64> {
        let h = self.slots;
        let mut v: Vec<C64> = (0..h).map(|i| C64::new(c[i], c[i + h])).collect();
        self.fft_special(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    /// Direct O(N^2) canonical embedding: slot j = m(ζ^(5^j)).
    fn embed(c: &[f64]) -> Vec<C64> {
        let n = c.len();
        let m = 2 * n;
        let mut g = 1usize;
        let mut out = Vec::new();
        for _ in 0..n / 2 {
            let mut acc = C64::default();
            for (k, &ck) in c.iter().enumerate() {
                let e = (g * k) % m;
                acc = acc + C64::cis(std::f64::consts::PI * e as f64 / n as f64).scale(ck);
            }
            out.push(acc);
            g = g * 5 % m;
        }
        out
    }

    #[test]
    fn special_fft_is_the_canonical_embedding_and_inverts() {
        let mut rng = StdRng::seed_from_u64(11);
        for log_n in [3u32, 5, 7] {
            let t = EncoderTables::new(log_n);
            let n = 1 << log_n;
            let c: Vec<f64> = (0..n).map(|_| rng.random::<f64>() - 0.5).collect();
            let want = embed(&c);
            let got = t.coeffs_to_slots(&c);
            for (a, b) in got.iter().zip(&want) {
                assert!((*a - *b).abs() < 1e-9, "{a:?} vs {b:?}");
            }
            let back = t.slots_to_coeffs(&got);
            for (a, b) in back.iter().zip(&c) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }
}
