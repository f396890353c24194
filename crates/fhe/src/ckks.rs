//! Plaintexts, ciphertexts and keys; encoding, key generation, encryption and decryption.
//!
//! Every polynomial is stored in RNS form, limb after limb (`limbs × N` words), in the NTT
//! domain. A ciphertext at level l lives modulo Q_l = q_0 ⋯ q_l; keys live modulo Q_L·P.
//!
//! Randomness: [`KeyGenerator::new`] and [`Encryptor::new`] seed a ChaCha12 CSPRNG (`StdRng`)
//! from the operating system — use these for real data. The `*_seeded` constructors take a
//! `u64` seed and are reproducible; they exist for tests and benchmarks only and give no
//! security.

use crate::arith::Modulus;
use crate::complex::C64;
use crate::error::{FheError, Result};
use crate::ntt::automorphism_ntt_index;
use crate::params::{Context, SIGMA};
use rand::rngs::{StdRng, SysRng};
use rand::{Rng, RngExt, SeedableRng};
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An encoded message: one RNS polynomial in NTT form at `level`, scaled by `scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct Plaintext {
    pub(crate) data: Vec<u64>,
    /// Level l (the polynomial lives modulo q_0 ⋯ q_l).
    pub level: usize,
    /// The scale Δ the message was multiplied by.
    pub scale: f64,
    pub(crate) params: u64,
}

/// A CKKS ciphertext: 2 (or, before relinearisation, 3) RNS polynomials in NTT form.
#[derive(Debug, Clone, PartialEq)]
pub struct Ciphertext {
    pub(crate) parts: Vec<Vec<u64>>,
    /// Level l.
    pub level: usize,
    /// The scale Δ of the encrypted message.
    pub scale: f64,
    pub(crate) params: u64,
}

impl Ciphertext {
    /// Number of polynomials (2 after relinearisation).
    pub fn size(&self) -> usize {
        self.parts.len()
    }
}

/// The secret key s (ternary), in NTT form modulo Q_L·P.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretKey {
    pub(crate) s: Vec<u64>,
    pub(crate) params: u64,
}

/// The public key (b, a) = (-a·s + e, a) modulo Q_L·P.
#[derive(Debug, Clone, PartialEq)]
pub struct PublicKey {
    pub(crate) b: Vec<u64>,
    pub(crate) a: Vec<u64>,
    pub(crate) params: u64,
}

/// A hybrid key-switching key from s' to s: for each gadget digit d,
/// (b_d, a_d) = (-a_d·s + e_d + P·[Q/Q_d]·[(Q/Q_d)^-1]_{Q_d}·s', a_d) modulo Q_L·P.
#[derive(Debug, Clone)]
pub struct SwitchingKey {
    pub(crate) digits: Vec<(Vec<u64>, Vec<u64>)>,
    /// The 32-byte seed each digit's `a` was expanded from ([`expand_a`]), when known: the
    /// compressed wire format sends these instead of the `a` halves.
    pub(crate) seeds: Option<Vec<[u8; 32]>>,
    pub(crate) params: u64,
}

/// Equal keys are equal whether or not their seeds are known (a key read from the
/// uncompressed format has lost them).
impl PartialEq for SwitchingKey {
    fn eq(&self, other: &Self) -> bool {
        self.digits == other.digits && self.params == other.params
    }
}

impl SwitchingKey {
    /// Bytes on the wire when each `a` half travels as its 32-byte seed.
    pub fn wire_bytes_compressed(&self) -> usize {
        self.digits
            .iter()
            .map(|(b, _)| b.len() * 8 + 32)
            .sum::<usize>()
            + 4
    }

    /// Bytes held in memory (both halves of every digit).
    pub fn size_bytes(&self) -> usize {
        self.digits
            .iter()
            .map(|(b, a)| (b.len() + a.len()) * 8)
            .sum()
    }
}

/// Relinearisation key: switches s² to s.
#[derive(Debug, Clone, PartialEq)]
pub struct RelinKey(pub SwitchingKey);

/// Galois keys by Galois element (5^k mod 2N for rotations, 2N-1 for conjugation).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GaloisKeys {
    pub(crate) keys: BTreeMap<usize, SwitchingKey>,
}

impl GaloisKeys {
    /// The Galois elements present.
    pub fn elements(&self) -> Vec<usize> {
        self.keys.keys().copied().collect()
    }

    /// Bytes held in memory by all keys.
    pub fn size_bytes(&self) -> usize {
        self.keys.values().map(SwitchingKey::size_bytes).sum()
    }

    /// Bytes of the keys on the wire, seed-compressed (b halves and 32-byte seeds).
    pub fn wire_bytes_compressed(&self) -> usize {
        self.keys
            .values()
            .map(|k| k.wire_bytes_compressed() + 8)
            .sum()
    }

    /// Adds keys from `other` (same parameters), replacing any with the same element.
    pub fn extend(&mut self, other: GaloisKeys) {
        self.keys.extend(other.keys);
    }
}

impl EvaluationKeys {
    /// Bytes held in memory by all keys.
    pub fn size_bytes(&self) -> usize {
        self.relin.as_ref().map_or(0, |r| r.0.size_bytes()) + self.galois.size_bytes()
    }
}

/// What a server needs to compute: relinearisation and Galois keys, no secret.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EvaluationKeys {
    /// For ciphertext multiplication.
    pub relin: Option<RelinKey>,
    /// For rotations and conjugation.
    pub galois: GaloisKeys,
}

/// The Galois element of a left rotation by `step` slots: 5^step mod 2N (negative steps wrap).
pub fn galois_element(ctx: &Context, step: i64) -> usize {
    let slots = ctx.slots() as i64;
    let k = step.rem_euclid(slots) as u64;
    let m = Modulus::new(2 * ctx.n as u64);
    // 2N is not prime; exponentiation by squaring with plain u128 arithmetic.
    let two_n = m.q as u128;
    let (mut r, mut b, mut e) = (1u128, 5u128, k);
    while e > 0 {
        if e & 1 == 1 {
            r = r * b % two_n;
        }
        b = b * b % two_n;
        e >>= 1;
    }
    r as usize
}

/// The Galois element of complex conjugation, 2N - 1.
pub fn conjugation_element(ctx: &Context) -> usize {
    2 * ctx.n - 1
}

pub(crate) fn check_params(ctx: &Context, got: u64, what: &str) -> Result<()> {
    if got != ctx.hash {
        return Err(FheError::ParamsMismatch(format!(
            "{what} was made under parameters {got:016x}, this context is {:016x}",
            ctx.hash
        )));
    }
    Ok(())
}

/// Checks that a ciphertext's public fields (level, scale) agree with its polynomials.
pub(crate) fn check_ciphertext(ctx: &Context, ct: &Ciphertext) -> Result<()> {
    check_params(ctx, ct.params, "ciphertext")?;
    if ct.level > ctx.max_level()
        || !(2..=3).contains(&ct.parts.len())
        || ct.parts.iter().any(|p| p.len() != (ct.level + 1) * ctx.n)
    {
        return Err(FheError::Level(format!(
            "ciphertext claims level {} (size {}) but its polynomials do not match",
            ct.level,
            ct.parts.len()
        )));
    }
    if !(ct.scale.is_finite() && ct.scale >= 1.0) {
        return Err(FheError::ScaleOverflow(format!(
            "ciphertext scale {} is not a finite number ≥ 1",
            ct.scale
        )));
    }
    Ok(())
}

/// Checks that a plaintext's public fields (level, scale) agree with its polynomial.
pub(crate) fn check_plaintext(ctx: &Context, pt: &Plaintext) -> Result<()> {
    check_params(ctx, pt.params, "plaintext")?;
    if pt.level > ctx.max_level() || pt.data.len() != (pt.level + 1) * ctx.n {
        return Err(FheError::Level(format!(
            "plaintext claims level {} but its polynomial does not match",
            pt.level
        )));
    }
    if !(pt.scale.is_finite() && pt.scale >= 1.0) {
        return Err(FheError::ScaleOverflow(format!(
            "plaintext scale {} is not a finite number ≥ 1",
            pt.scale
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sampling

fn sample_ternary<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<i64> {
    (0..n).map(|_| rng.random_range(0..3i64) - 1).collect()
}

/// Exactly `h` coefficients ±1 (uniform signs) at uniformly chosen positions, the rest 0.
fn sample_sparse_ternary<R: Rng + ?Sized>(n: usize, h: usize, rng: &mut R) -> Vec<i64> {
    let mut c = vec![0i64; n];
    let mut placed = 0;
    while placed < h.min(n) {
        let j = rng.random_range(0..n);
        if c[j] == 0 {
            c[j] = if rng.random::<bool>() { 1 } else { -1 };
            placed += 1;
        }
    }
    c
}

/// The uniform `a` of an RLWE sample over every table prime (Q_L·P), expanded from a 32-byte
/// seed: a key's `a` halves can then travel as their seeds. The expansion is ChaCha12 (rand's
/// `StdRng`) with rejection sampling per prime, limb after limb.
pub fn expand_a(ctx: &Context, seed: [u8; 32]) -> Vec<u64> {
    let mut rng = StdRng::from_seed(seed);
    let n = ctx.n;
    let mut a = Vec::with_capacity(ctx.tables.len() * n);
    for i in 0..ctx.tables.len() {
        a.extend(sample_uniform(ctx.modulus(i), n, &mut rng));
    }
    a
}

/// Rounded Gaussian with σ = 3.2, tails cut at 6σ (resampled).
fn sample_gaussian<R: Rng + ?Sized>(n: usize, rng: &mut R) -> Vec<i64> {
    let bound = 6.0 * SIGMA;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let u1: f64 = rng.random::<f64>();
        let u2: f64 = rng.random::<f64>();
        if u1 <= f64::MIN_POSITIVE {
            continue;
        }
        let r = (-2.0 * u1.ln()).sqrt() * SIGMA;
        let t = 2.0 * std::f64::consts::PI * u2;
        for z in [r * t.cos(), r * t.sin()] {
            if z.abs() <= bound && out.len() < n {
                out.push(z.round() as i64);
            }
        }
    }
    out
}

fn sample_uniform<R: Rng + ?Sized>(m: &Modulus, n: usize, rng: &mut R) -> Vec<u64> {
    let bits = 64 - m.q.leading_zeros();
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let x = rng.random::<u64>() >> (64 - bits);
        if x < m.q {
            out.push(x);
        }
    }
    out
}

impl Context {
    /// Small signed coefficients → NTT-form RNS limbs for table indices `idx`.
    pub(crate) fn small_to_ntt(&self, c: &[i64], idx: &[usize]) -> Vec<u64> {
        let n = self.n;
        let mut out = vec![0u64; idx.len() * n];
        for (k, &i) in idx.iter().enumerate() {
            let t = &self.tables[i];
            let limb = &mut out[k * n..(k + 1) * n];
            for (o, &x) in limb.iter_mut().zip(c) {
                *o = t.m.from_i64(x);
            }
            t.forward(limb);
        }
        out
    }

    /// Table indices of Q_l.
    pub(crate) fn q_idx(&self, level: usize) -> Vec<usize> {
        (0..=level).collect()
    }

    /// Table indices of Q_l ∪ P.
    pub(crate) fn qp_idx(&self, level: usize) -> Vec<usize> {
        (0..=level)
            .chain((0..self.p.len()).map(|j| self.p_index(j)))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Encoding

    /// Encodes up to N/2 complex values at `level` with scale `scale` (missing slots are 0).
    pub fn encode(&self, values: &[C64], level: usize, scale: f64) -> Result<Plaintext> {
        let slots = self.slots();
        if values.len() > slots {
            return Err(FheError::InvalidInput(format!(
                "{} values do not fit the {slots} slots of N = {}",
                values.len(),
                self.n
            )));
        }
        if level > self.max_level() {
            return Err(FheError::Level(format!(
                "level {level} is above the top level {}",
                self.max_level()
            )));
        }
        if !(scale.is_finite() && scale >= 1.0) {
            return Err(FheError::InvalidInput(format!(
                "scale {scale} must be finite and ≥ 1"
            )));
        }
        if let Some(v) = values
            .iter()
            .find(|v| !(v.re.is_finite() && v.im.is_finite()))
        {
            return Err(FheError::InvalidInput(format!("value {v:?} is not finite")));
        }
        let mut v = Vec::with_capacity(slots);
        v.extend_from_slice(values);
        v.resize(slots, C64::default());
        let coeffs = self.encoder().slots_to_coeffs_owned(v);
        self.encode_coeffs(&coeffs, level, scale)
    }

    /// Encodes real values.
    pub fn encode_real(&self, values: &[f64], level: usize, scale: f64) -> Result<Plaintext> {
        let v: Vec<C64> = values.iter().map(|&x| C64::real(x)).collect();
        self.encode(&v, level, scale)
    }

    /// Unscaled real coefficients → plaintext (rounds coefficient·scale to integers).
    pub(crate) fn encode_coeffs(
        &self,
        coeffs: &[f64],
        level: usize,
        scale: f64,
    ) -> Result<Plaintext> {
        let data = self.encode_coeffs_on(coeffs, level, scale, &self.q_idx(level))?;
        Ok(Plaintext {
            data,
            level,
            scale,
            params: self.hash,
        })
    }

    /// [`encode`](Self::encode) over the extended basis Q_l·P (limbs q_0..q_l, then
    /// p_0..p_{α-1}): the same integer polynomial, for products with ciphertexts held in that
    /// basis between a hoisted key switch and its division by P.
    pub(crate) fn encode_ext(&self, values: &[C64], level: usize, scale: f64) -> Result<Vec<u64>> {
        let pt = self.encode(values, level, scale)?;
        // The P limbs from the same rounded coefficients (the plaintext holds them only
        // modulo Q_l; the values are validated by `encode` above).
        let slots = self.slots();
        let mut v = Vec::with_capacity(slots);
        v.extend_from_slice(values);
        v.resize(slots, C64::default());
        let coeffs = self.encoder().slots_to_coeffs_owned(v);
        let idx: Vec<usize> = (0..self.p.len()).map(|j| self.p_index(j)).collect();
        let p_limbs = self.encode_coeffs_on(&coeffs, level, scale, &idx)?;
        let mut data = pt.data;
        data.extend_from_slice(&p_limbs);
        Ok(data)
    }

    /// The rounded coefficients·scale as NTT-form residues modulo the table primes `idx`,
    /// checked to fit Q_level.
    pub(crate) fn encode_coeffs_on(
        &self,
        coeffs: &[f64],
        level: usize,
        scale: f64,
        idx: &[usize],
    ) -> Result<Vec<u64>> {
        let n = self.n;
        let log_q: f64 = self.q[..=level].iter().map(|&x| (x as f64).log2()).sum();
        let max = coeffs.iter().fold(0.0f64, |m, c| m.max((c * scale).abs()));
        // The rounded coefficients must stay below Q_l/2 (and within i128 for conversion).
        if max >= 2f64.powf(log_q.min(126.0) - 1.0) {
            return Err(FheError::ScaleOverflow(format!(
                "a coefficient of magnitude 2^{:.1} (value × scale 2^{:.1}) does not fit level {level} (Q_l = 2^{:.1})",
                max.log2(),
                scale.log2(),
                log_q
            )));
        }
        let mut data = vec![0u64; idx.len() * n];
        if max < 2f64.powi(62) {
            // The common case: every coefficient fits an i64, and a magnitude below 2^62 is
            // below q² for every prime of 31 bits or more, so one Barrett step reduces it
            // (an i128 remainder per residue cost more than the NTTs).
            let rounded: Vec<i64> = coeffs.iter().map(|c| (c * scale).round() as i64).collect();
            data.par_chunks_mut(n).zip(idx).for_each(|(limb, &i)| {
                let t = &self.tables[i];
                let m = &t.m;
                let barrett = m.q >= 1 << 31;
                for (o, &x) in limb.iter_mut().zip(&rounded) {
                    let mag = x.unsigned_abs();
                    let r = if mag < m.q {
                        mag
                    } else if barrett {
                        m.reduce_u128(mag as u128)
                    } else {
                        mag % m.q
                    };
                    *o = if x < 0 { m.neg(r) } else { r };
                }
                t.forward(limb);
            });
        } else {
            let rounded: Vec<i128> = coeffs.iter().map(|c| (c * scale).round() as i128).collect();
            for (limb, &i) in data.chunks_exact_mut(n).zip(idx) {
                let t = &self.tables[i];
                for (o, &x) in limb.iter_mut().zip(&rounded) {
                    *o = t.m.from_i128(x);
                }
                t.forward(limb);
            }
        }
        Ok(data)
    }

    /// Decodes a plaintext to N/2 complex slots.
    pub fn decode(&self, pt: &Plaintext) -> Result<Vec<C64>> {
        check_plaintext(self, pt)?;
        let coeffs = self.plaintext_coeffs(pt);
        Ok(self.encoder().coeffs_to_slots(&coeffs))
    }

    /// Decodes to real parts only.
    pub fn decode_real(&self, pt: &Plaintext) -> Result<Vec<f64>> {
        Ok(self.decode(pt)?.into_iter().map(|c| c.re).collect())
    }

    /// Centred CRT reconstruction of each coefficient (Garner), divided by the scale.
    fn plaintext_coeffs(&self, pt: &Plaintext) -> Vec<f64> {
        let n = self.n;
        let l = pt.level;
        let mut limbs = pt.data.clone();
        for i in 0..=l {
            self.tables[i].inverse(&mut limbs[i * n..(i + 1) * n]);
        }
        let mods: Vec<Modulus> = (0..=l).map(|i| *self.modulus(i)).collect();
        // inv_prefix[k] = (q_0 ⋯ q_{k-1})^-1 mod q_k; prefix[k][i] = q_0 ⋯ q_{i-1} mod q_k.
        let mut inv_prefix = vec![1u64; l + 1];
        let mut prefix = vec![vec![1u64; l + 1]; l + 1];
        for k in 0..=l {
            let m = &mods[k];
            let mut acc = 1 % m.q;
            for i in 0..k {
                prefix[k][i] = acc;
                acc = m.mul(acc, self.q[i] % m.q);
            }
            prefix[k][k] = acc;
            inv_prefix[k] = m.inv(acc);
        }
        // W_k = q_0 ⋯ q_{k-1} as f64.
        let mut w = vec![1.0f64; l + 1];
        for k in 1..=l {
            w[k] = w[k - 1] * self.q[k - 1] as f64;
        }
        // Shoup companions: a digit below a larger prime needs no separate reduction (a `%`
        // per digit pair was most of the decode).
        let prefix_shoup: Vec<Vec<u64>> = (0..=l)
            .map(|k| prefix[k].iter().map(|&x| mods[k].shoup(x)).collect())
            .collect();
        let mut digits = vec![0u64; l + 1];
        let mut out = vec![0.0f64; n];
        for j in 0..n {
            for k in 0..=l {
                let m = &mods[k];
                // value of the lower digits mod q_k
                let mut acc = 0u64;
                for i in 0..k {
                    acc = m.add(
                        acc,
                        m.mul_shoup(digits[i], prefix[k][i], prefix_shoup[k][i]),
                    );
                }
                digits[k] = m.mul(m.sub(limbs[k * n + j], acc), inv_prefix[k]);
            }
            let negative = digits[l] > self.q[l] / 2;
            let mut v = 0.0f64;
            for k in (0..=l).rev() {
                let d = if negative {
                    (self.q[k] - 1 - digits[k]) as f64
                } else {
                    digits[k] as f64
                };
                v += d * w[k];
            }
            out[j] = if negative { -(v + 1.0) } else { v } / pt.scale;
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Keys

/// Generates the secret key and, from it, every other key.
#[derive(Debug)]
pub struct KeyGenerator {
    ctx: Arc<Context>,
    sk: SecretKey,
    rng: StdRng,
}

impl KeyGenerator {
    /// A key generator seeded from the operating system's entropy (use this for real keys).
    pub fn new(ctx: &Arc<Context>) -> Result<Self> {
        let rng = StdRng::try_from_rng(&mut SysRng)
            .map_err(|e| FheError::InvalidInput(format!("the OS entropy source failed: {e}")))?;
        Ok(Self::with_rng(ctx, rng))
    }

    /// A reproducible key generator. NOT SECURE: for tests and benchmarks only.
    pub fn new_seeded(ctx: &Arc<Context>, seed: u64) -> Self {
        Self::with_rng(ctx, StdRng::seed_from_u64(seed))
    }

    /// A key generator with a sparse ternary secret of Hamming weight `h` (exactly h nonzero
    /// coefficients), seeded from the OS. Bootstrapping parameters assume such a secret: it
    /// bounds the integer overflow I of ModRaise by about 6·sqrt((h+1)/12).
    pub fn new_sparse(ctx: &Arc<Context>, h: usize) -> Result<Self> {
        Self::check_weight(ctx, h)?;
        let mut rng = StdRng::try_from_rng(&mut SysRng)
            .map_err(|e| FheError::InvalidInput(format!("the OS entropy source failed: {e}")))?;
        let s = sample_sparse_ternary(ctx.n, h, &mut rng);
        Ok(Self::with_secret(ctx, &s, rng))
    }

    /// A reproducible sparse-secret key generator. NOT SECURE: for tests and benchmarks only.
    pub fn new_sparse_seeded(ctx: &Arc<Context>, h: usize, seed: u64) -> Result<Self> {
        Self::check_weight(ctx, h)?;
        let mut rng = StdRng::seed_from_u64(seed);
        let s = sample_sparse_ternary(ctx.n, h, &mut rng);
        Ok(Self::with_secret(ctx, &s, rng))
    }

    fn check_weight(ctx: &Context, h: usize) -> Result<()> {
        if h == 0 || h > ctx.n {
            return Err(FheError::InvalidInput(format!(
                "secret Hamming weight {h} must be in 1..={} (N)",
                ctx.n
            )));
        }
        Ok(())
    }

    fn with_rng(ctx: &Arc<Context>, mut rng: StdRng) -> Self {
        let s_coeffs = sample_ternary(ctx.n, &mut rng);
        Self::with_secret(ctx, &s_coeffs, rng)
    }

    fn with_secret(ctx: &Arc<Context>, s_coeffs: &[i64], rng: StdRng) -> Self {
        let all: Vec<usize> = (0..ctx.tables.len()).collect();
        let s = ctx.small_to_ntt(s_coeffs, &all);
        KeyGenerator {
            ctx: ctx.clone(),
            sk: SecretKey {
                s,
                params: ctx.hash,
            },
            rng,
        }
    }

    /// The secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.sk
    }

    /// (-a·s + e, a) over all of Q_L·P with `a` expanded from a fresh 32-byte seed; returns
    /// (b, a, seed).
    fn rlwe_sample(&mut self) -> (Vec<u64>, Vec<u64>, [u8; 32]) {
        let ctx = &self.ctx;
        let n = ctx.n;
        let all: Vec<usize> = (0..ctx.tables.len()).collect();
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let a = expand_a(ctx, seed);
        let e = sample_gaussian(n, &mut self.rng);
        let mut b = ctx.small_to_ntt(&e, &all);
        for &i in &all {
            let m = *ctx.modulus(i);
            let (bl, sl) = (&mut b[i * n..(i + 1) * n], &self.sk.s[i * n..(i + 1) * n]);
            let al = &a[i * n..(i + 1) * n];
            for k in 0..n {
                bl[k] = m.sub(bl[k], m.mul(al[k], sl[k]));
            }
        }
        (b, a, seed)
    }

    /// The public key.
    pub fn public_key(&mut self) -> PublicKey {
        let (b, a, _) = self.rlwe_sample();
        PublicKey {
            b,
            a,
            params: self.ctx.hash,
        }
    }

    /// A switching key from `s_prime` (NTT form over Q_L, at least) to s.
    fn switching_key(&mut self, s_prime: &[u64]) -> SwitchingKey {
        let ctx = self.ctx.clone();
        let n = ctx.n;
        let mut digits = Vec::with_capacity(ctx.dnum);
        let mut seeds = Vec::with_capacity(ctx.dnum);
        for (st, en) in ctx.digits(ctx.max_level()) {
            let (mut b, a, seed) = self.rlwe_sample();
            seeds.push(seed);
            for i in st..en {
                let m = ctx.modulus(i);
                let pm = ctx.p_mod_q[i];
                let bl = &mut b[i * n..(i + 1) * n];
                for k in 0..n {
                    bl[k] = m.add(bl[k], m.mul(pm, s_prime[i * n + k]));
                }
            }
            digits.push((b, a));
        }
        SwitchingKey {
            digits,
            seeds: Some(seeds),
            params: ctx.hash,
        }
    }

    /// The relinearisation key (s² → s).
    pub fn relin_key(&mut self) -> RelinKey {
        let ctx = self.ctx.clone();
        let n = ctx.n;
        let mut s2 = vec![0u64; (ctx.max_level() + 1) * n];
        for i in 0..=ctx.max_level() {
            let m = ctx.modulus(i);
            for k in 0..n {
                let s = self.sk.s[i * n + k];
                s2[i * n + k] = m.mul(s, s);
            }
        }
        RelinKey(self.switching_key(&s2))
    }

    /// The key switching φ_g(s) → s for Galois element g.
    fn galois_key(&mut self, g: usize) -> SwitchingKey {
        let ctx = self.ctx.clone();
        let n = ctx.n;
        let perm = automorphism_ntt_index(ctx.log_n, g);
        let mut sg = vec![0u64; (ctx.max_level() + 1) * n];
        for i in 0..=ctx.max_level() {
            for k in 0..n {
                sg[i * n + k] = self.sk.s[i * n + perm[k] as usize];
            }
        }
        self.switching_key(&sg)
    }

    /// Galois keys for left rotations by each of `steps` (negative = right) and, if asked,
    /// conjugation.
    pub fn galois_keys(&mut self, steps: &[i64], conjugation: bool) -> GaloisKeys {
        let mut keys = BTreeMap::new();
        let mut elts: Vec<usize> = steps
            .iter()
            .map(|&s| galois_element(&self.ctx, s))
            .filter(|&g| g != 1)
            .collect();
        if conjugation {
            elts.push(conjugation_element(&self.ctx));
        }
        elts.sort();
        elts.dedup();
        for g in elts {
            let k = self.galois_key(g);
            keys.insert(g, k);
        }
        GaloisKeys { keys }
    }

    /// Relinearisation key plus Galois keys for `steps` (and conjugation).
    pub fn evaluation_keys(&mut self, steps: &[i64], conjugation: bool) -> EvaluationKeys {
        EvaluationKeys {
            relin: Some(self.relin_key()),
            galois: self.galois_keys(steps, conjugation),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encryption and decryption

/// Encrypts under the public key (or, with [`Encryptor::encrypt_sk`], the secret key).
#[derive(Debug)]
pub struct Encryptor {
    ctx: Arc<Context>,
    rng: StdRng,
}

impl Encryptor {
    /// An encryptor whose randomness comes from the OS (use this for real data).
    pub fn new(ctx: &Arc<Context>) -> Result<Self> {
        let rng = StdRng::try_from_rng(&mut SysRng)
            .map_err(|e| FheError::InvalidInput(format!("the OS entropy source failed: {e}")))?;
        Ok(Encryptor {
            ctx: ctx.clone(),
            rng,
        })
    }

    /// A reproducible encryptor. NOT SECURE: for tests and benchmarks only.
    pub fn new_seeded(ctx: &Arc<Context>, seed: u64) -> Self {
        Encryptor {
            ctx: ctx.clone(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// Public-key encryption. The encryption of zero is formed modulo Q_l·P and divided by P
    /// (as SEAL does), so the fresh noise is the rounding noise of one mod-down, not u·e.
    pub fn encrypt(&mut self, pk: &PublicKey, pt: &Plaintext) -> Result<Ciphertext> {
        let ctx = self.ctx.clone();
        check_params(&ctx, pk.params, "public key")?;
        check_plaintext(&ctx, pt)?;
        let n = ctx.n;
        let l = pt.level;
        let lq = l + 1;
        let idx = ctx.qp_idx(l);
        let u = sample_ternary(n, &mut self.rng);
        let u = ctx.small_to_ntt(&u, &idx);
        let mut parts = Vec::with_capacity(2);
        let mut conv = vec![0u64; n];
        for (part, key) in [&pk.b, &pk.a].into_iter().enumerate() {
            let e = sample_gaussian(n, &mut self.rng);
            // c = u·key + e modulo Q_l·P, divided by P with rounding. The division needs c's
            // P limbs in coefficient form, where e is added as it is; on each q_i limb e and
            // the rounded [c]_P enter through one NTT of (e - [c]_P): half the transforms of
            // bringing e into the NTT domain on every limb and then dividing.
            let mut y = vec![0u64; ctx.p.len() * n];
            for (j, yj) in y.chunks_exact_mut(n).enumerate() {
                let pi = ctx.p_index(j);
                let m = ctx.modulus(pi);
                let (ul, kl) = (
                    &u[(lq + j) * n..(lq + j + 1) * n],
                    &key[pi * n..(pi + 1) * n],
                );
                for ((o, &a), &b) in yj.iter_mut().zip(ul).zip(kl) {
                    *o = m.mul(a, b);
                }
            }
            ctx.p_limbs_to_digits(&mut y, Some(&e));
            let mut c = Vec::with_capacity(lq * n);
            for i in 0..lq {
                let t = &ctx.tables[i];
                let m = &t.m;
                ctx.p_digits_to_q(&y, i, &mut conv);
                for (cv, &x) in conv.iter_mut().zip(&e) {
                    *cv = m.sub(m.from_i64(x), *cv);
                }
                t.forward(&mut conv);
                let (pinv, pinvs) = ctx.p_inv_mod_q[i];
                let lim = i * n..(i + 1) * n;
                let (ul, kl) = (&u[lim.clone()], &key[lim.clone()]);
                let msg = &pt.data[lim];
                c.extend(
                    ul.iter()
                        .zip(kl)
                        .zip(&conv)
                        .zip(msg)
                        .map(|(((&a, &b), &d), &p)| {
                            let v = m.mul_shoup(m.add(m.mul(a, b), d), pinv, pinvs);
                            // The message joins c_0 after the division.
                            if part == 0 { m.add(v, p) } else { v }
                        }),
                );
            }
            parts.push(c);
        }
        Ok(Ciphertext {
            parts,
            level: l,
            scale: pt.scale,
            params: ctx.hash,
        })
    }

    /// Secret-key encryption: (-a·s + e + m, a) modulo Q_l.
    pub fn encrypt_sk(&mut self, sk: &SecretKey, pt: &Plaintext) -> Result<Ciphertext> {
        let ctx = self.ctx.clone();
        check_params(&ctx, sk.params, "secret key")?;
        check_plaintext(&ctx, pt)?;
        let n = ctx.n;
        let l = pt.level;
        let e = sample_gaussian(n, &mut self.rng);
        let mut c0 = ctx.small_to_ntt(&e, &ctx.q_idx(l));
        let mut c1 = vec![0u64; (l + 1) * n];
        for i in 0..=l {
            let m = *ctx.modulus(i);
            let a = sample_uniform(&m, n, &mut self.rng);
            for j in 0..n {
                let x = i * n + j;
                c0[x] = m.add(m.sub(c0[x], m.mul(a[j], sk.s[x])), pt.data[x]);
                c1[x] = a[j];
            }
        }
        Ok(Ciphertext {
            parts: vec![c0, c1],
            level: l,
            scale: pt.scale,
            params: ctx.hash,
        })
    }
}

/// Decrypts with the secret key.
#[derive(Debug)]
pub struct Decryptor {
    ctx: Arc<Context>,
    sk: SecretKey,
}

impl Decryptor {
    /// A decryptor for `sk`.
    pub fn new(ctx: &Arc<Context>, sk: &SecretKey) -> Result<Self> {
        check_params(ctx, sk.params, "secret key")?;
        Ok(Decryptor {
            ctx: ctx.clone(),
            sk: sk.clone(),
        })
    }

    /// c_0 + c_1·s (+ c_2·s²) modulo Q_l.
    pub fn decrypt(&self, ct: &Ciphertext) -> Result<Plaintext> {
        let ctx = &self.ctx;
        check_ciphertext(ctx, ct)?;
        let n = ctx.n;
        let l = ct.level;
        let mut out = ct.parts[0].clone();
        for i in 0..=l {
            let m = ctx.modulus(i);
            let s = &self.sk.s[i * n..(i + 1) * n];
            for j in 0..n {
                let mut acc = 0u64;
                for p in ct.parts[1..].iter().rev() {
                    acc = m.mul(m.add(acc, p[i * n + j]), s[j]);
                }
                out[i * n + j] = m.add(out[i * n + j], acc);
            }
        }
        Ok(Plaintext {
            data: out,
            level: l,
            scale: ct.scale,
            params: ctx.hash,
        })
    }

    /// Decrypts and decodes.
    pub fn decrypt_decode(&self, ct: &Ciphertext) -> Result<Vec<C64>> {
        let pt = self.decrypt(ct)?;
        self.ctx.decode(&pt)
    }
}

#[cfg(test)]
mod noise_tests {
    use super::*;
    use crate::params::ParamSpec;

    fn coeff_max(ctx: &Context, pt: &Plaintext) -> f64 {
        let n = ctx.n;
        let mut l0 = pt.data[..n].to_vec();
        ctx.tables[0].inverse(&mut l0);
        let q = ctx.q[0];
        l0.iter()
            .map(|&v| if v > q / 2 { (q - v) as f64 } else { v as f64 })
            .fold(0.0, f64::max)
    }

    #[test]
    fn fresh_noise_is_small() {
        let ctx = Context::new(ParamSpec::insecure_test(12, 1)).unwrap();
        let mut kg = KeyGenerator::new_seeded(&ctx, 1);
        let pk = kg.public_key();
        let mut enc = Encryptor::new_seeded(&ctx, 2);
        let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
        let zero = ctx.encode_coeffs(&vec![0.0; ctx.n], 0, 1.0).unwrap();
        let ct = enc.encrypt(&pk, &zero).unwrap();
        let pk_noise = coeff_max(&ctx, &dec.decrypt(&ct).unwrap());
        let sk = kg.secret_key().clone();
        let ct = enc.encrypt_sk(&sk, &zero).unwrap();
        let sk_noise = coeff_max(&ctx, &dec.decrypt(&ct).unwrap());
        // sk: a Gaussian with σ = 3.2 (max ≈ 4σ); pk: the rounding noise of one mod-down,
        // ≈ sqrt(N/9)·(|s|) per coefficient.
        println!("pk {pk_noise} sk {sk_noise}");
        assert!(sk_noise <= 6.0 * SIGMA);
        assert!(pk_noise < 4.0 * (ctx.n as f64 / 4.0).sqrt(), "{pk_noise}");
    }
}
