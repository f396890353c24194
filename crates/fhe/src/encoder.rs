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
        EncoderTables {
            slots,
            m,
            rot_group,
            roots,
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
            let lenq = len << 2;
            let gap = self.m / lenq;
            for i in (0..n).step_by(len) {
                for j in 0..lenh {
                    // lenq is a power of two: a mask, not a division, in the inner loop.
                    let idx = (self.rot_group[j] & (lenq - 1)) * gap;
                    let u = v[i + j];
                    let w = v[i + j + lenh] * self.roots[idx];
                    v[i + j] = u + w;
                    v[i + j + lenh] = u - w;
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
            let lenq = len << 2;
            let gap = self.m / lenq;
            for i in (0..n).step_by(len) {
                for j in 0..lenh {
                    let idx = (lenq - (self.rot_group[j] & (lenq - 1))) * gap;
                    let u = v[i + j] + v[i + j + lenh];
                    let w = (v[i + j] - v[i + j + lenh]) * self.roots[idx];
                    v[i + j] = u;
                    v[i + j + lenh] = w;
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
