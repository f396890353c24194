//! Word-size modular arithmetic for primes below 2^60: Barrett reduction of 128-bit products,
//! Shoup multiplication by precomputed constants (the NTT's workhorse), Miller–Rabin, and the
//! generation of NTT-friendly primes q ≡ 1 (mod 2N).

/// A prime modulus with its Barrett constant. Every prime used here has at most 60 bits, so
/// lazy values in [0, 4q) fit a u64 with room to spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Modulus {
    /// The prime.
    pub q: u64,
    /// Its bit length k.
    bits: u32,
    /// floor(2^(2k) / q), used with the shifts k-1 and k+1 (classic Barrett).
    mu: u64,
    /// floor(2^128 / q) as (high, low) words, for reducing any u128 (lazy sums of products).
    ratio: (u64, u64),
}

/// Largest prime size this crate accepts (SEAL's limit too): lazy NTT outputs < 4q < 2^62,
/// and up to 64 lazy products (< 4q·q < 2^122) still fit a u128 accumulator.
pub const MAX_PRIME_BITS: u32 = 60;

impl Modulus {
    /// Precomputes the Barrett constant of `q` (2 ≤ q < 2^60).
    pub fn new(q: u64) -> Self {
        debug_assert!((2..(1 << MAX_PRIME_BITS)).contains(&q));
        let bits = 64 - q.leading_zeros();
        let mu = ((1u128 << (2 * bits)) / q as u128) as u64;
        // floor(2^128 / q) = floor((2^128 - 1) / q) since q is not a power of two.
        let r = u128::MAX / q as u128;
        Modulus {
            q,
            bits,
            mu,
            ratio: ((r >> 64) as u64, r as u64),
        }
    }

    /// x mod q for x < q^2 (in particular any product of two residues).
    #[inline(always)]
    pub fn reduce_u128(&self, x: u128) -> u64 {
        let k = self.bits;
        let est = (((x >> (k - 1)) as u64 as u128 * self.mu as u128) >> (k + 1)) as u64;
        let r = (x as u64).wrapping_sub(est.wrapping_mul(self.q));
        self.reduce_once(self.reduce_once(r))
    }

    /// x - q if x ≥ q, else x, for x < 2q. Branch-free: in the hot loops the comparison is
    /// a coin flip per residue, and a mispredicted branch costs more than the arithmetic.
    #[inline(always)]
    pub fn reduce_once(&self, x: u64) -> u64 {
        let t = x.wrapping_sub(self.q);
        t.wrapping_add(self.q & (((t as i64) >> 63) as u64))
    }

    /// x mod q for any u128 (Barrett with a 128-bit constant; used on lazy sums of products).
    #[inline(always)]
    pub fn reduce_wide(&self, x: u128) -> u64 {
        let (r1, r0) = self.ratio;
        let x0 = x as u64;
        let x1 = (x >> 64) as u64;
        // floor(x · ratio / 2^128), dropping the lowest partial product's low word.
        let carry = ((x0 as u128 * r0 as u128) >> 64) as u64;
        let t = x0 as u128 * r1 as u128 + carry as u128;
        let u = x1 as u128 * r0 as u128 + (t as u64) as u128;
        let quot = x1
            .wrapping_mul(r1)
            .wrapping_add((t >> 64) as u64)
            .wrapping_add((u >> 64) as u64);
        let mut r = x0.wrapping_sub(quot.wrapping_mul(self.q));
        while r >= self.q {
            r -= self.q;
        }
        r
    }

    /// a * b mod q for a, b < q.
    #[inline(always)]
    pub fn mul(&self, a: u64, b: u64) -> u64 {
        self.reduce_u128(a as u128 * b as u128)
    }

    /// x mod q for any u64.
    #[inline(always)]
    pub fn reduce(&self, x: u64) -> u64 {
        if x < self.q { x } else { x % self.q }
    }

    /// a + b mod q.
    #[inline(always)]
    pub fn add(&self, a: u64, b: u64) -> u64 {
        self.reduce_once(a + b)
    }

    /// a - b mod q.
    #[inline(always)]
    pub fn sub(&self, a: u64, b: u64) -> u64 {
        let d = a.wrapping_sub(b);
        d.wrapping_add(self.q & (((d as i64) >> 63) as u64))
    }

    /// -a mod q.
    #[inline(always)]
    pub fn neg(&self, a: u64) -> u64 {
        if a == 0 { 0 } else { self.q - a }
    }

    /// Reduces a signed integer.
    #[inline(always)]
    pub fn from_i64(&self, x: i64) -> u64 {
        if x.unsigned_abs() < self.q {
            // Small values (noise, ternary secrets) skip the division; x + q for negative x,
            // without a branch on the sign, which is a coin flip for noise.
            (x as u64).wrapping_add(self.q & ((x >> 63) as u64))
        } else {
            x.rem_euclid(self.q as i64) as u64
        }
    }

    /// Reduces a signed 128-bit integer.
    pub fn from_i128(&self, x: i128) -> u64 {
        x.rem_euclid(self.q as i128) as u64
    }

    /// base^e mod q.
    pub fn pow(&self, mut base: u64, mut e: u64) -> u64 {
        let mut r = 1 % self.q;
        base %= self.q;
        while e > 0 {
            if e & 1 == 1 {
                r = self.mul(r, base);
            }
            base = self.mul(base, base);
            e >>= 1;
        }
        r
    }

    /// a^-1 mod q (q prime, a ≠ 0 mod q).
    pub fn inv(&self, a: u64) -> u64 {
        self.pow(a, self.q - 2)
    }

    /// The Shoup companion floor(w * 2^64 / q) of a constant w < q.
    #[inline(always)]
    pub fn shoup(&self, w: u64) -> u64 {
        (((w as u128) << 64) / self.q as u128) as u64
    }

    /// x * w mod q in [0, 2q) given w' = shoup(w); x may be any u64.
    #[inline(always)]
    pub fn mul_shoup_lazy(&self, x: u64, w: u64, w_shoup: u64) -> u64 {
        let hi = ((x as u128 * w_shoup as u128) >> 64) as u64;
        x.wrapping_mul(w).wrapping_sub(hi.wrapping_mul(self.q))
    }

    /// x * w mod q in [0, q) given w' = shoup(w).
    #[inline(always)]
    pub fn mul_shoup(&self, x: u64, w: u64, w_shoup: u64) -> u64 {
        self.reduce_once(self.mul_shoup_lazy(x, w, w_shoup))
    }
}

/// Deterministic Miller–Rabin for all u64.
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    for p in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        if n.is_multiple_of(p) {
            return n == p;
        }
    }
    let mulmod = |a: u64, b: u64| ((a as u128 * b as u128) % n as u128) as u64;
    let powmod = |mut b: u64, mut e: u64| {
        let mut r = 1u64;
        while e > 0 {
            if e & 1 == 1 {
                r = mulmod(r, b);
            }
            b = mulmod(b, b);
            e >>= 1;
        }
        r
    };
    let mut d = n - 1;
    let mut s = 0;
    while d.is_multiple_of(2) {
        d /= 2;
        s += 1;
    }
    'outer: for a in [2u64, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37] {
        let mut x = powmod(a, d);
        if x == 1 || x == n - 1 {
            continue;
        }
        for _ in 1..s {
            x = mulmod(x, x);
            if x == n - 1 {
                continue 'outer;
            }
        }
        return false;
    }
    true
}

/// A primitive 2N-th root of unity mod q (q ≡ 1 mod 2N), the smallest of the form g^((q-1)/2N).
pub fn primitive_root_2n(m: &Modulus, two_n: u64) -> Option<u64> {
    let q = m.q;
    if !(q - 1).is_multiple_of(two_n) {
        return None;
    }
    // Factor q-1 is unnecessary: ψ = g^((q-1)/2N) has order exactly 2N iff ψ^N = -1.
    for g in 2..q.min(1 << 20) {
        let psi = m.pow(g, (q - 1) / two_n);
        if m.pow(psi, two_n / 2) == q - 1 {
            return Some(psi);
        }
    }
    None
}

/// Bit reversal of the low `bits` bits.
#[inline]
pub fn bit_reverse(x: usize, bits: u32) -> usize {
    if bits == 0 {
        0
    } else {
        x.reverse_bits() >> (usize::BITS - bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng, rngs::StdRng};

    #[test]
    fn barrett_and_shoup_match_u128_remainder() {
        let mut rng = StdRng::seed_from_u64(1);
        for q in [
            3u64,
            65537,
            1_152_921_504_606_830_593,
            (1 << 40) + 1 - 2 * (1 << 14),
        ] {
            let m = Modulus::new(q);
            for _ in 0..2000 {
                let a = rng.random::<u64>() % q;
                let b = rng.random::<u64>() % q;
                let want = ((a as u128 * b as u128) % q as u128) as u64;
                assert_eq!(m.mul(a, b), want);
                assert_eq!(m.mul_shoup(a, b, m.shoup(b)), want);
                let w = rng.random::<u128>();
                assert_eq!(m.reduce_wide(w), (w % q as u128) as u64);
                let small = (rng.random::<u64>() % 64) as i64 - 32;
                for v in [small, rng.random::<i64>(), i64::MIN, i64::MAX, 0] {
                    assert_eq!(m.from_i64(v), v.rem_euclid(q as i64) as u64);
                }
                let x = rng.random::<u64>();
                let lazy = m.mul_shoup_lazy(x, b, m.shoup(b));
                assert!(lazy < 2 * q);
                assert_eq!(lazy % q, ((x as u128 * b as u128) % q as u128) as u64);
            }
        }
    }

    #[test]
    fn miller_rabin_agrees_with_trial_division() {
        for n in 0u64..5000 {
            let slow = n >= 2 && (2..n).take_while(|d| d * d <= n).all(|d| n % d != 0);
            assert_eq!(is_prime(n), slow, "{n}");
        }
        assert!(is_prime(1_152_921_504_606_846_883)); // 2^60 - 93
        assert!(!is_prime(1_152_921_504_606_846_977)); // 2^60 + 1 = composite
    }

    #[test]
    fn inverse_and_roots() {
        let q = 1_152_921_504_606_748_673u64; // 2^60 - 2^18*... an NTT prime for 2N=2^15? checked below
        if is_prime(q) && (q - 1).is_multiple_of(1 << 15) {
            let m = Modulus::new(q);
            let psi = primitive_root_2n(&m, 1 << 15).unwrap();
            assert_eq!(m.pow(psi, 1 << 14), q - 1);
        }
        let m = Modulus::new(97);
        for a in 1..97 {
            assert_eq!(m.mul(a, m.inv(a)), 1);
        }
    }
}
