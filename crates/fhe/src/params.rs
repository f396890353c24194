//! CKKS parameters: the ring degree, the RNS chain, the special primes of hybrid key switching,
//! the scale, the 128-bit security check against the Homomorphic Encryption Standard, and the
//! [`Context`] of precomputed tables every operation uses.

use crate::arith::{MAX_PRIME_BITS, Modulus, is_prime};
use crate::encoder::EncoderTables;
use crate::error::{FheError, Result};
use crate::ntt::NttTable;
use std::sync::Arc;

/// Maximum log2(QP) for 128-bit classical security with a ternary (uniform {-1,0,1}) secret
/// and σ = 3.2: Table 1 of the Homomorphic Encryption Standard (Albrecht et al. 2018) for
/// N ≤ 2^15, and the 2^16 entry OpenFHE derived with the same lattice estimator.
pub const HE_STANDARD_128: [(usize, u32); 7] = [
    (1024, 27),
    (2048, 54),
    (4096, 109),
    (8192, 218),
    (16384, 438),
    (32768, 881),
    (65536, 1747),
];

/// The HE-standard limit on log2(QP) for ring degree `n`, if the table has one.
pub fn max_log_qp_128(n: usize) -> Option<u32> {
    HE_STANDARD_128
        .iter()
        .find(|(m, _)| *m == n)
        .map(|(_, l)| *l)
}

/// The key-switching digits of a chain of q primes of `q_bits` bits with `alpha` special
/// primes: ranges [start, end) of consecutive q-indices. Grouped by count (α primes per
/// digit), the largest digit modulus D bounds the key-switching noise (∝ D/P); here each
/// digit takes as many consecutive primes as fit under that same bound, in bits. With primes
/// of one size this is the grouping by count; where they differ (a bootstrapping chain's
/// 35-bit user primes under its 52–58-bit EvalMod primes) it needs fewer digits at the same
/// noise bound, and a key switch costs one basis extension per digit.
pub fn digit_ranges(q_bits: &[u32], alpha: usize) -> Vec<(usize, usize)> {
    let alpha = alpha.max(1);
    let cap: u32 = q_bits
        .chunks(alpha)
        .map(|c| c.iter().sum())
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    let mut st = 0;
    while st < q_bits.len() {
        let mut sum = q_bits[st];
        let mut en = st + 1;
        while en < q_bits.len() && sum + q_bits[en] <= cap {
            sum += q_bits[en];
            en += 1;
        }
        out.push((st, en));
        st = en;
    }
    out
}

/// Standard deviation of the error distribution (rounded Gaussian), as in the HE standard.
pub const SIGMA: f64 = 3.2;

/// What a user chooses. Checked into a [`Context`] by [`Context::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// log2 of the ring degree N (13..=16 for real use; smaller only with `allow_insecure`).
    pub log_n: u32,
    /// Bit sizes of the ciphertext primes q_0 (first, holds the result) .. q_L (consumed first).
    pub q_bits: Vec<u32>,
    /// Bit sizes of the special primes p_0..p_{α-1} of hybrid key switching. α primes split
    /// the chain into dnum = ceil((L+1)/α) digits; α = 1 is SEAL's choice (dnum = L+1).
    pub p_bits: Vec<u32>,
    /// log2 of the default scale Δ at the top level.
    pub log_scale: u32,
    /// Accept parameters above the HE-standard 128-bit limit (tests, experiments).
    pub allow_insecure: bool,
}

impl ParamSpec {
    /// The standard set for N = 2^14: q = [56, 40 × 8], one 60-bit special prime
    /// (436 of the 438 bits allowed), scale 2^40, depth 8. q_0 < P keeps the key-switching
    /// noise of the q_0 digit (∝ q_0/P) below the encryption noise; q_0 = 2^56 leaves 16 bits
    /// of headroom above the scale for the result's magnitude.
    pub fn n14() -> Self {
        let mut q_bits = vec![56];
        q_bits.extend(std::iter::repeat_n(40, 8));
        ParamSpec {
            log_n: 14,
            q_bits,
            p_bits: vec![60],
            log_scale: 40,
            allow_insecure: false,
        }
    }

    /// The standard set for N = 2^15: q = [56, 40 × 18], one 60-bit special prime
    /// (836 of the 881 bits allowed), scale 2^40, depth 18.
    pub fn n15() -> Self {
        let mut q_bits = vec![56];
        q_bits.extend(std::iter::repeat_n(40, 18));
        ParamSpec {
            log_n: 15,
            q_bits,
            p_bits: vec![60],
            log_scale: 40,
            allow_insecure: false,
        }
    }

    /// A standard set by log2 N (13..=16).
    pub fn standard(log_n: u32) -> Result<Self> {
        match log_n {
            13 => Ok(ParamSpec {
                log_n: 13,
                q_bits: vec![56, 40, 40],
                p_bits: vec![60],
                log_scale: 40,
                allow_insecure: false,
            }),
            14 => Ok(Self::n14()),
            15 => Ok(Self::n15()),
            16 => {
                let mut q_bits = vec![60];
                q_bits.extend(std::iter::repeat_n(40, 36));
                Ok(ParamSpec {
                    log_n: 16,
                    q_bits,
                    p_bits: vec![60, 60, 60],
                    log_scale: 40,
                    allow_insecure: false,
                })
            }
            _ => Err(FheError::InvalidParams(format!(
                "no standard parameter set for log N = {log_n} (have 13, 14, 15, 16)"
            ))),
        }
    }

    /// A small insecure set for fast tests: N = 2^log_n, `levels` 40-bit primes over a 60-bit base.
    pub fn insecure_test(log_n: u32, levels: usize) -> Self {
        let mut q_bits = vec![60];
        q_bits.extend(std::iter::repeat_n(40, levels));
        ParamSpec {
            log_n,
            q_bits,
            p_bits: vec![60],
            log_scale: 40,
            allow_insecure: true,
        }
    }

    /// Checks everything that can be checked without generating primes.
    fn check_shape(&self) -> Result<()> {
        let lo = if self.allow_insecure { 3 } else { 13 };
        if !(lo..=16).contains(&self.log_n) {
            return Err(FheError::InvalidParams(format!(
                "log N = {} is outside {lo}..=16 (below 13 only with allow_insecure)",
                self.log_n
            )));
        }
        if self.q_bits.is_empty() {
            return Err(FheError::InvalidParams("the q chain is empty".into()));
        }
        if self.p_bits.is_empty() {
            return Err(FheError::InvalidParams(
                "at least one special prime is needed for key switching".into(),
            ));
        }
        for &b in self.q_bits.iter().chain(&self.p_bits) {
            if !(20..=MAX_PRIME_BITS).contains(&b) {
                return Err(FheError::InvalidParams(format!(
                    "prime size {b} bits is outside 20..={MAX_PRIME_BITS}"
                )));
            }
        }
        if self.log_scale < 10 || self.log_scale >= self.q_bits[0] {
            return Err(FheError::InvalidParams(format!(
                "log scale {} must be in 10..{} (below the {}-bit base prime q_0, which holds the result)",
                self.log_scale, self.q_bits[0], self.q_bits[0]
            )));
        }
        Ok(())
    }
}

/// Finds `count` distinct primes q ≡ 1 (mod 2N) just below 2^bits, skipping `used`.
pub fn ntt_primes(bits: u32, count: usize, log_n: u32, used: &[u64]) -> Result<Vec<u64>> {
    let step = 2u64 << log_n;
    let mut out = Vec::with_capacity(count);
    let top = 1u64 << bits;
    let mut q = top + 1;
    let low = 1u64 << (bits - 1);
    while out.len() < count {
        if q <= step + low {
            return Err(FheError::NoPrimes {
                bits,
                count,
                n: 1 << log_n,
            });
        }
        q -= step;
        if is_prime(q) && !used.contains(&q) && !out.contains(&q) {
            out.push(q);
        }
    }
    Ok(out)
}

/// Validated parameters with every precomputed table. Shared through `Arc`.
#[derive(Debug)]
pub struct Context {
    spec: ParamSpec,
    /// N.
    pub n: usize,
    /// log2 N.
    pub log_n: u32,
    /// Ciphertext primes q_0..q_L.
    pub q: Vec<u64>,
    /// Special primes p_0..p_{α-1}.
    pub p: Vec<u64>,
    /// NTT tables: index i < L+1 is q_i, index L+1+j is p_j.
    pub tables: Vec<NttTable>,
    /// α = number of special primes (primes per key-switching digit where the q primes are
    /// all of one size; see [`digit_ranges`]).
    pub alpha: usize,
    /// Number of digits of the key-switching gadget.
    pub dnum: usize,
    /// The digits: ranges [start, end) of q-indices ([`digit_ranges`]).
    pub digit_bounds: Vec<(usize, usize)>,
    /// The canonical scale of each level: Δ_L = 2^log_scale, Δ_{l-1} = Δ_l^2 / q_l, so that a
    /// product of two ciphertexts at level l lands exactly on Δ_{l-1} after rescaling.
    pub scales: Vec<f64>,
    /// q_l^-1 mod q_i (Shoup pairs), indexed [l][i] for i < l.
    pub(crate) q_inv: Vec<Vec<(u64, u64)>>,
    /// P^-1 mod q_i (Shoup pair).
    pub(crate) p_inv_mod_q: Vec<(u64, u64)>,
    /// (P/p_j)^-1 mod p_j (Shoup pair).
    pub(crate) p_hat_inv: Vec<(u64, u64)>,
    /// (P/p_j) mod q_i, indexed [i][j].
    pub(crate) p_hat_mod_q: Vec<Vec<u64>>,
    /// P mod q_i.
    pub(crate) p_mod_q: Vec<u64>,
    /// (P-1)/2 modulo every table prime (q's then p's), for rounding in mod-down.
    pub(crate) half_p_mod: Vec<u64>,
    /// log2(QP).
    pub log_qp: f64,
    /// A 64-bit fingerprint of the parameters (checked when loading serialised objects).
    pub hash: u64,
    enc: EncoderTables,
}

impl Context {
    /// Checks `spec` (shape, security) and precomputes everything.
    pub fn new(spec: ParamSpec) -> Result<Arc<Self>> {
        spec.check_shape()?;
        let log_n = spec.log_n;
        let n = 1usize << log_n;
        // Group equal sizes so that repeated sizes get distinct primes.
        let mut used: Vec<u64> = Vec::new();
        let mut pick = |bits: u32| -> Result<u64> {
            let q = ntt_primes(bits, 1, log_n, &used)?[0];
            used.push(q);
            Ok(q)
        };
        let mut q = Vec::new();
        for &b in &spec.q_bits {
            q.push(pick(b)?);
        }
        let mut p = Vec::new();
        for &b in &spec.p_bits {
            p.push(pick(b)?);
        }
        let log_qp: f64 = q.iter().chain(&p).map(|&x| (x as f64).log2()).sum();
        match max_log_qp_128(n) {
            Some(limit) if log_qp > limit as f64 && !spec.allow_insecure => {
                return Err(FheError::Insecure {
                    n,
                    log_qp: log_qp.ceil() as u32,
                    limit,
                });
            }
            None if !spec.allow_insecure => {
                return Err(FheError::InvalidParams(format!(
                    "the HE standard has no 128-bit entry for N = {n}"
                )));
            }
            _ => {}
        }
        let mut tables = Vec::new();
        for &x in q.iter().chain(&p) {
            tables.push(NttTable::new(x, log_n).ok_or_else(|| {
                FheError::InvalidParams(format!("{x} has no primitive 2N-th root of unity"))
            })?);
        }
        let l_max = q.len() - 1;
        let mut scales = vec![0.0; q.len()];
        let uniform = spec.q_bits[1..].windows(2).all(|w| w[0] == w[1]);
        if uniform {
            scales[l_max] = (spec.log_scale as f64).exp2();
            for l in (1..=l_max).rev() {
                scales[l - 1] = scales[l] * scales[l] / q[l] as f64;
            }
        } else {
            // Mixed prime sizes (bootstrapping chains: large primes on top for the
            // homomorphic DFT and EvalMod, scale-sized ones below): anchored at the bottom,
            // Δ_0 = 2^log_scale and Δ_l = sqrt(Δ_{l-1}·q_l), the same product rule run the
            // other way. Top-down, a 40-bit scale meeting 60-bit primes would square its
            // error at every level and leave the lower levels far from 2^log_scale; bottom-up
            // the relation contracts, so every level sits near its own prime size.
            scales[0] = (spec.log_scale as f64).exp2();
            for l in 1..=l_max {
                scales[l] = (scales[l - 1] * q[l] as f64).sqrt();
            }
        }
        let qm: Vec<Modulus> = q.iter().map(|&x| Modulus::new(x)).collect();
        let pm: Vec<Modulus> = p.iter().map(|&x| Modulus::new(x)).collect();
        let q_inv = (0..q.len())
            .map(|l| {
                (0..l)
                    .map(|i| {
                        let v = qm[i].inv(q[l] % q[i]);
                        (v, qm[i].shoup(v))
                    })
                    .collect()
            })
            .collect();
        let p_mod_q: Vec<u64> = qm
            .iter()
            .map(|m| p.iter().fold(1u64, |acc, &pj| m.mul(acc, pj % m.q)))
            .collect();
        let p_inv_mod_q = qm
            .iter()
            .zip(&p_mod_q)
            .map(|(m, &pm_)| {
                let v = m.inv(pm_);
                (v, m.shoup(v))
            })
            .collect();
        let p_hat_inv = pm
            .iter()
            .enumerate()
            .map(|(j, m)| {
                let hat = p
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != j)
                    .fold(1u64, |acc, (_, &pk)| m.mul(acc, pk % m.q));
                let v = m.inv(hat);
                (v, m.shoup(v))
            })
            .collect();
        let p_hat_mod_q = qm
            .iter()
            .map(|m| {
                (0..p.len())
                    .map(|j| {
                        p.iter()
                            .enumerate()
                            .filter(|(k, _)| *k != j)
                            .fold(1u64, |acc, (_, &pk)| m.mul(acc, pk % m.q))
                    })
                    .collect()
            })
            .collect();
        let half_p_mod = qm
            .iter()
            .chain(&pm)
            .map(|m| {
                let pm_ = p.iter().fold(1u64, |acc, &pj| m.mul(acc, pj % m.q));
                m.mul(m.sub(pm_, 1), m.inv(2))
            })
            .collect();
        let alpha = p.len();
        let digit_bounds = digit_ranges(&spec.q_bits, alpha);
        let dnum = digit_bounds.len();
        if dnum > 64 {
            return Err(FheError::InvalidParams(format!(
                "{dnum} key-switching digits (more than 64): use more special primes"
            )));
        }
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        let mut feed = |x: u64| {
            for b in x.to_le_bytes() {
                hash ^= b as u64;
                hash = hash.wrapping_mul(0x100_0000_01b3);
            }
        };
        feed(log_n as u64);
        feed(spec.log_scale as u64);
        for &x in q.iter() {
            feed(x);
        }
        feed(u64::MAX);
        for &x in p.iter() {
            feed(x);
        }
        Ok(Arc::new(Context {
            spec,
            n,
            log_n,
            q,
            p,
            tables,
            alpha,
            dnum,
            digit_bounds,
            scales,
            q_inv,
            p_inv_mod_q,
            p_hat_inv,
            p_hat_mod_q,
            p_mod_q,
            half_p_mod,
            log_qp,
            hash,
            enc: EncoderTables::new(log_n),
        }))
    }

    /// The encoder's FFT tables.
    pub fn encoder(&self) -> &EncoderTables {
        &self.enc
    }

    /// The spec these tables were built from.
    pub fn spec(&self) -> &ParamSpec {
        &self.spec
    }

    /// The top level L (ciphertexts start there; each rescale drops one).
    pub fn max_level(&self) -> usize {
        self.q.len() - 1
    }

    /// Number of complex slots, N/2.
    pub fn slots(&self) -> usize {
        self.n / 2
    }

    /// The canonical scale Δ_level.
    pub fn scale_at(&self, level: usize) -> f64 {
        self.scales[level]
    }

    /// The modulus of table index i (q's then p's).
    #[inline]
    pub fn modulus(&self, i: usize) -> &Modulus {
        &self.tables[i].m
    }

    /// Table index of special prime j.
    #[inline]
    pub fn p_index(&self, j: usize) -> usize {
        self.q.len() + j
    }

    /// The digits of the gadget at `level`: ranges of q-indices [start, end).
    pub fn digits(&self, level: usize) -> Vec<(usize, usize)> {
        self.digit_bounds
            .iter()
            .map(|&(s, e)| (s, e.min(level + 1)))
            .filter(|(s, e)| s < e)
            .collect()
    }

    /// The digit of q-index k at `level`.
    pub(crate) fn digit_of(&self, k: usize, level: usize) -> (usize, usize) {
        self.digit_bounds
            .iter()
            .find(|(s, e)| (*s..*e).contains(&k))
            .map_or((k, k + 1), |&(s, e)| (s, e.min(level + 1)))
    }
}

#[cfg(test)]
mod tests {
    /// Digits by bits: the grouping by count where the primes are of one size (so the
    /// leveled presets and uniform chains keep their keys), fewer digits under the same
    /// bound where they differ (the 16-level bootstrapping chain: 7 instead of 8).
    #[test]
    fn digits_by_bits_keep_the_count_bound() {
        use super::digit_ranges;
        let uniform: Vec<u32> = std::iter::once(60).chain([40; 12]).collect();
        for alpha in [1, 3, 4] {
            let by_count: Vec<(usize, usize)> = (0..uniform.len().div_ceil(alpha))
                .map(|d| (d * alpha, ((d + 1) * alpha).min(uniform.len())))
                .collect();
            assert_eq!(digit_ranges(&uniform, alpha), by_count, "alpha {alpha}");
        }
        assert_eq!(digit_ranges(&[56, 40, 40, 40], 1).len(), 4);
        let mut l16 = vec![42u32];
        l16.extend([35; 19]);
        l16.extend([52, 53, 54, 55, 56, 57, 58, 57]);
        l16.extend([55; 3]);
        let d = digit_ranges(&l16, 4);
        assert_eq!(
            d,
            vec![
                (0, 6),
                (6, 12),
                (12, 18),
                (18, 22),
                (22, 26),
                (26, 30),
                (30, 31)
            ]
        );
        let bits = |&(s, e): &(usize, usize)| l16[s..e].iter().sum::<u32>();
        assert!(d.iter().map(bits).max() <= l16.chunks(4).map(|c| c.iter().sum()).max());
    }

    use super::*;

    #[test]
    fn standard_sets_are_secure_and_primes_are_ntt_friendly() {
        for log_n in 13..=15 {
            let ctx = Context::new(ParamSpec::standard(log_n).unwrap()).unwrap();
            let limit = max_log_qp_128(ctx.n).unwrap() as f64;
            assert!(ctx.log_qp <= limit, "{} > {limit}", ctx.log_qp);
            let two_n = 2 * ctx.n as u64;
            let mut all: Vec<u64> = ctx.q.iter().chain(&ctx.p).copied().collect();
            for &x in &all {
                assert!(is_prime(x) && x % two_n == 1);
            }
            all.sort();
            all.dedup();
            assert_eq!(all.len(), ctx.q.len() + ctx.p.len());
        }
    }

    #[test]
    fn insecure_parameters_are_refused_naming_the_limit() {
        let mut spec = ParamSpec::n14();
        spec.q_bits.push(40);
        let err = Context::new(spec.clone()).unwrap_err();
        match &err {
            FheError::Insecure { n, limit, log_qp } => {
                assert_eq!((*n, *limit), (16384, 438));
                assert!(*log_qp > 438);
            }
            e => panic!("wrong error {e:?}"),
        }
        assert!(err.to_string().contains("438"));
        spec.allow_insecure = true;
        assert!(Context::new(spec).is_ok());
    }

    #[test]
    fn malformed_parameters_are_refused() {
        let mut s = ParamSpec::n14();
        s.log_n = 12;
        assert!(matches!(Context::new(s), Err(FheError::InvalidParams(_))));
        let mut s = ParamSpec::n14();
        s.p_bits.clear();
        assert!(matches!(Context::new(s), Err(FheError::InvalidParams(_))));
        let mut s = ParamSpec::n14();
        s.q_bits[1] = 61;
        assert!(matches!(Context::new(s), Err(FheError::InvalidParams(_))));
        let mut s = ParamSpec::n14();
        s.log_scale = 60;
        assert!(matches!(Context::new(s), Err(FheError::InvalidParams(_))));
    }
}
