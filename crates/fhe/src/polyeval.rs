//! Polynomial evaluation in the Chebyshev basis with baby-step/giant-step, depth-optimal:
//! a degree-d polynomial consumes ⌈log2(d+1)⌉ levels (plus one if the interval is not [-1, 1]).
//!
//! p = Σ c_i T_i is divided by giant Chebyshev polynomials T_m (m = baby·2^j) with
//! T_{m+j} = 2·T_m·T_j − T_{m−j}, down to leaves of degree < baby. A leaf splits the same way
//! at its middle T_{n/2}, recursively, so that every constant rides on a factor shallow
//! enough to take it and the leaf costs no extra level, with log2(n) − 1 products per leaf
//! (the goal of Bossuat et al., Eurocrypt 2021, §4, with a different scale bookkeeping).

use crate::ckks::Ciphertext;
use crate::complex::C64;
use crate::error::{FheError, Result};
use crate::eval::Evaluator;
use std::collections::BTreeMap;

/// A polynomial Σ c_i T_i((2x − a − b)/(b − a)) on the interval [a, b].
#[derive(Debug, Clone, PartialEq)]
pub struct Chebyshev {
    /// Coefficients c_0..c_d.
    pub coeffs: Vec<f64>,
    /// Interval start.
    pub a: f64,
    /// Interval end.
    pub b: f64,
}

impl Chebyshev {
    /// Interpolates `f` at the d+1 Chebyshev nodes of [a, b].
    pub fn interpolate(f: impl Fn(f64) -> f64, degree: usize, a: f64, b: f64) -> Self {
        let n = degree + 1;
        let nodes: Vec<f64> = (0..n)
            .map(|k| (std::f64::consts::PI * (k as f64 + 0.5) / n as f64).cos())
            .collect();
        let fx: Vec<f64> = nodes
            .iter()
            .map(|&t| f(0.5 * (b - a) * t + 0.5 * (a + b)))
            .collect();
        let coeffs = (0..n)
            .map(|j| {
                let s: f64 = (0..n)
                    .map(|k| {
                        fx[k]
                            * (std::f64::consts::PI * j as f64 * (k as f64 + 0.5) / n as f64).cos()
                    })
                    .sum();
                s * 2.0 / n as f64 * if j == 0 { 0.5 } else { 1.0 }
            })
            .collect();
        Chebyshev { coeffs, a, b }
    }

    /// Degree.
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }

    /// Plaintext evaluation (Clenshaw).
    pub fn eval(&self, x: f64) -> f64 {
        let t = (2.0 * x - self.a - self.b) / (self.b - self.a);
        let (mut b1, mut b2) = (0.0, 0.0);
        for &c in self.coeffs.iter().skip(1).rev() {
            let b0 = 2.0 * t * b1 - b2 + c;
            b2 = b1;
            b1 = b0;
        }
        t * b1 - b2 + self.coeffs.first().copied().unwrap_or(0.0)
    }

    /// Levels an encrypted evaluation consumes.
    pub fn depth(&self) -> usize {
        let d = self.degree().max(1);
        let base = (usize::BITS - d.leading_zeros()) as usize; // ⌈log2(d+1)⌉
        base + usize::from(!self.is_unit_interval())
    }

    fn is_unit_interval(&self) -> bool {
        self.a == -1.0 && self.b == 1.0
    }
}

/// The degree-d Chebyshev interpolant of ReLU = max(x, 0) on [-1, 1].
pub fn relu_approx(degree: usize) -> Chebyshev {
    Chebyshev::interpolate(|x| x.max(0.0), degree, -1.0, 1.0)
}

fn is_zero(c: f64) -> bool {
    c.abs() < 1e-14
}

/// ⌈log2 i⌉ for i ≥ 1: the depth of T_i above T_1.
fn ceil_log2(i: usize) -> usize {
    (usize::BITS - i.saturating_sub(1).leading_zeros()) as usize
}

struct PolyState<'a> {
    ev: &'a Evaluator,
    t: BTreeMap<usize, Ciphertext>,
    /// T_i brought down to a lower level (shared by every product that needs it there).
    t_low: BTreeMap<(usize, usize), Ciphertext>,
    /// The scale every ciphertext at level l is kept at (the context's ladder, or
    /// bootstrapping's own).
    ladder: &'a [f64],
    /// Level of T_1.
    l1: usize,
    /// Evaluate a leaf as one linear combination of T_1..T_{n-1} whenever its level allows
    /// (see [`PolyState::leaf`]).
    plain_leaves: bool,
}

impl PolyState<'_> {
    /// Brings both to the lower level (on the ladder).
    fn align(&self, a: &Ciphertext, b: &Ciphertext) -> Result<(Ciphertext, Ciphertext)> {
        let l = a.level.min(b.level);
        Ok((
            self.ev.adjust_to(a, l, self.ladder[l])?,
            self.ev.adjust_to(b, l, self.ladder[l])?,
        ))
    }

    fn mul(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let (a, b) = self.align(a, b)?;
        self.ev.mul_relin_rescale(&a, &b)
    }

    fn add(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let (a, b) = self.align(a, b)?;
        self.ev.add(&a, &b)
    }

    fn sub(&self, a: &Ciphertext, b: &Ciphertext) -> Result<Ciphertext> {
        let (a, b) = self.align(a, b)?;
        self.ev.sub(&a, &b)
    }

    /// T_i at `level` (at most its own), on the ladder, cached.
    fn t_at(&mut self, i: usize, level: usize) -> Result<Ciphertext> {
        let t = self.t(i)?;
        if t.level <= level {
            return Ok(t);
        }
        if let Some(c) = self.t_low.get(&(i, level)) {
            return Ok(c.clone());
        }
        let c = self.ev.adjust_to(&t, level, self.ladder[level])?;
        self.t_low.insert((i, level), c.clone());
        Ok(c)
    }

    /// x·T_i, T_i taken at x's level when it is higher (cached).
    fn mul_t(&mut self, x: &Ciphertext, i: usize) -> Result<Ciphertext> {
        let ti = self.t_at(i, x.level)?;
        self.mul(x, &ti)
    }

    /// The level [`lin_comb`](Self::lin_comb) of `c` lands at: one below its deepest T_i.
    fn lin_comb_level(&self, c: &[f64]) -> usize {
        let top = c
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, v)| !is_zero(**v))
            .map(|(i, _)| i)
            .max()
            .unwrap_or(1);
        self.l1.saturating_sub(ceil_log2(top) + 1)
    }

    /// T_i, computed on demand from T_{⌈i/2⌉} and T_{⌊i/2⌋} (depth ⌈log2 i⌉).
    fn t(&mut self, i: usize) -> Result<Ciphertext> {
        if let Some(c) = self.t.get(&i) {
            return Ok(c.clone());
        }
        let hi = i.div_ceil(2);
        let lo = i / 2;
        let th = self.t(hi)?;
        let out = if hi == lo {
            // T_2k = 2·T_k² − 1
            let sq = self.mul(&th, &th)?;
            self.ev
                .add_const(&self.ev.mul_int(&sq, 2)?, C64::real(-1.0))?
        } else {
            // T_2k+1 = 2·T_k+1·T_k − T_1
            let tl = self.t(lo)?;
            let p = self.ev.mul_int(&self.mul(&th, &tl)?, 2)?;
            let t1 = self.t_at(1, p.level)?;
            self.sub(&p, &t1)?
        };
        self.t.insert(i, out.clone());
        Ok(out)
    }

    /// A leaf Σ_{i<n} c_i T_i (n = c.len() rounded up to a power of two) at depth log2(n),
    /// with ⌈log2 n⌉ − 1 ciphertext products: the upper half is
    /// Σ_j h_j T_{n/2+j} = T_{n/2}·(h_0 + Σ_{j≥1} 2h_j T_j) − Σ_{j≥1} h_j T_{n/2−j}
    /// (T_{a+b} = 2·T_a·T_b − T_{a−b}), its multiplicand a smaller leaf one level shallower
    /// and its correction folded into the lower half, which is a plain linear combination
    /// (its T_i are shallow enough to take a constant). Putting the constant on the
    /// shallower factor of every term instead costs a product per term.
    ///
    /// With `plain_leaves`, a leaf whose one-rescale linear combination already lands at or
    /// above `out_min` (the level its caller needs) is that linear combination, with no
    /// product: T_{n/2+1}..T_{n-1} are computed once and shared by every leaf, where the split
    /// costs log2(n) − 1 products per leaf. The split remains for leaves that must sit
    /// higher (the top of a degree-2^k − 1 polynomial).
    fn leaf(&mut self, c: &[f64], out_min: usize) -> Result<Ciphertext> {
        let n = c.len().next_power_of_two();
        if self.plain_leaves && self.lin_comb_level(c) >= out_min {
            return self.lin_comb(c, Some(out_min));
        }
        if n <= 2 {
            return self.lin_comb(c, None);
        }
        let h = n / 2;
        let mut lo = c[..h].to_vec();
        let hi = &c[h..];
        let mut inner = vec![0.0; hi.len()];
        inner[0] = hi[0];
        for j in 1..hi.len() {
            inner[j] = 2.0 * hi[j];
            lo[h - j] -= hi[j];
        }
        let at = (self.plain_leaves && self.lin_comb_level(&lo) >= out_min).then_some(out_min);
        let lower = self.lin_comb(&lo, at)?;
        if inner.iter().all(|&x| is_zero(x)) {
            return Ok(lower);
        }
        let ie = self.leaf(&inner, out_min + 1)?;
        let prod = self.mul_t(&ie, h)?;
        self.add(&prod, &lower)
    }

    /// c_0 + Σ_{i≥1} c_i T_i with one rescale: every T_i dropped to the lowest level among
    /// them (or to `at` + 1, landing the sum at `at` with no later alignment), multiplied by
    /// its constant at the scale that makes all terms equal, summed.
    fn lin_comb(&mut self, c: &[f64], at: Option<usize>) -> Result<Ciphertext> {
        let c0 = c.first().copied().unwrap_or(0.0);
        let mut terms: Vec<(usize, f64)> = c
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, v)| !is_zero(**v))
            .map(|(i, &v)| (i, v))
            .collect();
        if terms.is_empty() {
            terms.push((1, 0.0));
        }
        let ts = terms
            .iter()
            .map(|&(i, _)| self.t(i))
            .collect::<Result<Vec<_>>>()?;
        let lowest = ts.iter().map(|t| t.level).min().unwrap_or(0);
        let lvl = at.map_or(lowest, |a| (a + 1).min(lowest));
        if lvl == 0 {
            return Err(FheError::Level(
                "a polynomial term needs a level ≥ 1 for its constant".into(),
            ));
        }
        let q = self.ev.context().q[lvl] as f64;
        let target = self.ladder[lvl - 1];
        // Each T_i's limbs 0..=lvl times the integer round(c_i·target·q/scale_i), summed in
        // one pass per limb: the same residues as dropping, multiplying and adding term by
        // term, without a copy of every term (a leaf of a degree-123 EvalMod has up to 15).
        let mut ks = Vec::with_capacity(terms.len());
        for (t, &(_, v)) in ts.iter().zip(&terms) {
            let k = v * (target * q / t.scale);
            if !k.is_finite() || k.abs() >= 2f64.powi(120) {
                return Err(FheError::ScaleOverflow(format!(
                    "constant {v} × scale {:e} is too large",
                    target * q / t.scale
                )));
            }
            ks.push(k.round() as i128);
        }
        let acc = lin_comb_limbs(self.ev.context(), &ts, &ks, lvl, target * q)
            .ok_or_else(|| FheError::InvalidInput("empty polynomial leaf".into()))?;
        let mut r = self.ev.rescale(&acc)?;
        r.scale = target;
        self.ev.add_const(&r, C64::real(c0))
    }

    /// Σ c_i T_i for c.len() ≤ baby·2^g, at a level ≥ `out_min` (where the depth-optimal
    /// plan puts it).
    fn rec(&mut self, c: &[f64], baby: usize, out_min: usize) -> Result<Ciphertext> {
        if c.len() <= baby {
            return self.leaf(c, out_min);
        }
        let mut m = baby;
        while 2 * m < c.len() {
            m *= 2;
        }
        // c = q·T_m + r with deg r < m, using T_{m+j} = 2·T_m·T_j − T_{m−j}.
        let d = c.len() - 1;
        let mut q = vec![0.0; d - m + 1];
        let mut r = c[..m].to_vec();
        q[0] = c[m];
        for j in 1..=d - m {
            q[j] = 2.0 * c[m + j];
            r[m - j] -= c[m + j];
        }
        let qe = self.rec(&q, baby, out_min + 1)?;
        let prod = self.mul_t(&qe, m)?;
        if r.iter().all(|&x| is_zero(x)) {
            return Ok(prod);
        }
        let re = self.rec(&r, baby, out_min)?;
        self.add(&prod, &re)
    }
}

/// Σ_t k_t·x_t over the limbs 0..=`level` of every part (all x_t at `level` or above), with
/// the scale label `scale`; None without terms.
fn lin_comb_limbs(
    ctx: &crate::params::Context,
    xs: &[Ciphertext],
    ks: &[i128],
    level: usize,
    scale: f64,
) -> Option<Ciphertext> {
    use rayon::prelude::*;
    let first = xs.first()?;
    let n = ctx.n;
    let size = xs.iter().map(Ciphertext::size).max()?;
    let parts = (0..size)
        .map(|p| {
            let mut out = vec![0u64; (level + 1) * n];
            out.par_chunks_mut(n).enumerate().for_each(|(i, o)| {
                let m = ctx.modulus(i);
                for (x, &k) in xs.iter().zip(ks) {
                    let Some(part) = x.parts.get(p) else {
                        continue;
                    };
                    let w = m.from_i128(k);
                    let ws = m.shoup(w);
                    for (o, &v) in o.iter_mut().zip(&part[i * n..(i + 1) * n]) {
                        *o = m.add(*o, m.mul_shoup(v, w, ws));
                    }
                }
            });
            out
        })
        .collect();
    Some(Ciphertext {
        parts,
        level,
        scale,
        params: first.params,
    })
}

impl Evaluator {
    /// Evaluates `p` on every slot of `ct` (real slots inside [a, b]).
    pub fn eval_chebyshev(&self, ct: &Ciphertext, p: &Chebyshev) -> Result<Ciphertext> {
        let ladder = self.context().scales.clone();
        self.eval_chebyshev_on(ct, p, &ladder, false)
    }

    /// [`eval_chebyshev`](Self::eval_chebyshev) keeping every intermediate at level l on
    /// `ladder[l]`, which must satisfy ladder[l-1] = ladder[l]² / q_l where it is used;
    /// `plain_leaves` trades products for the levels a polynomial leaves unused (see
    /// [`PolyState::leaf`]; the output level is the same).
    pub(crate) fn eval_chebyshev_on(
        &self,
        ct: &Ciphertext,
        p: &Chebyshev,
        ladder: &[f64],
        plain_leaves: bool,
    ) -> Result<Ciphertext> {
        if p.coeffs.is_empty() || p.coeffs.iter().any(|c| !c.is_finite()) {
            return Err(FheError::InvalidInput(
                "polynomial coefficients must be non-empty and finite".into(),
            ));
        }
        if !(p.a.is_finite() && p.b.is_finite() && p.a < p.b) {
            return Err(FheError::InvalidInput(format!(
                "interval [{}, {}] is empty or not finite",
                p.a, p.b
            )));
        }
        if ct.level < p.depth() {
            return Err(FheError::Level(format!(
                "a degree-{} polynomial needs {} levels, the ciphertext has {}",
                p.degree(),
                p.depth(),
                ct.level
            )));
        }
        if ladder.len() <= ct.level {
            return Err(FheError::InvalidInput(format!(
                "the scale ladder has {} levels, the ciphertext is at level {}",
                ladder.len(),
                ct.level
            )));
        }
        // T_1 on the ladder, mapped to [-1, 1] if needed.
        let mut x = if (ct.scale - ladder[ct.level]).abs() / ct.scale > 1e-9 {
            self.adjust_to(ct, ct.level - 1, ladder[ct.level - 1])?
        } else {
            ct.clone()
        };
        if !p.is_unit_interval() {
            let s = 2.0 / (p.b - p.a);
            x = self.mul_const_rescale_to(&x, s, ladder[x.level - 1])?;
            x = self.add_const(&x, C64::real(-(p.a + p.b) / (p.b - p.a)))?;
        }
        if p.degree() == 0 {
            let z = self.mul_const_rescale_to(&x, 0.0, ladder[x.level - 1])?;
            return self.add_const(&z, C64::real(p.coeffs[0]));
        }
        let d = p.degree();
        let log_d = (usize::BITS - d.leading_zeros()) as usize; // ⌈log2(d+1)⌉
        let baby = 1usize << log_d.div_ceil(2).max(1);
        let l1 = x.level;
        let out_min = l1.saturating_sub(log_d);
        let mut st = PolyState {
            ev: self,
            t: BTreeMap::new(),
            t_low: BTreeMap::new(),
            ladder,
            l1,
            plain_leaves,
        };
        st.t.insert(1, x);
        let r = st.rec(&p.coeffs, baby, out_min)?;
        if plain_leaves && r.level > out_min {
            // Same output level as the split plan, so callers see no difference.
            return self.adjust_to(&r, out_min, ladder[out_min]);
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chebyshev_interpolation_and_clenshaw() {
        // x^3 = (3T_1 + T_3)/4 exactly
        let p = Chebyshev::interpolate(|x| x * x * x, 3, -1.0, 1.0);
        assert!((p.coeffs[1] - 0.75).abs() < 1e-12 && (p.coeffs[3] - 0.25).abs() < 1e-12);
        for x in [-1.0, -0.3, 0.0, 0.5, 1.0] {
            assert!((p.eval(x) - x * x * x).abs() < 1e-12);
        }
        let q = Chebyshev::interpolate(|x| (x / 3.0).exp(), 12, -2.0, 4.0);
        for x in [-2.0, 0.1, 3.9] {
            assert!((q.eval(x) - (x / 3.0).exp()).abs() < 1e-10);
        }
        let r = relu_approx(15);
        assert_eq!(r.depth(), 4);
        assert!((r.eval(0.5) - 0.5).abs() < 0.05);
    }

    /// The fused linear combination gives exactly the residues of dropping each term to the
    /// level, multiplying it by its integer constant and adding (the path it replaced).
    #[test]
    fn fused_linear_combination_matches_term_by_term() {
        #![allow(clippy::unwrap_used)]
        use crate::ckks::{Encryptor, KeyGenerator};
        use crate::params::{Context, ParamSpec};
        let ctx = Context::new(ParamSpec::insecure_test(12, 6)).unwrap();
        let mut kg = KeyGenerator::new_seeded(&ctx, 3);
        let pk = kg.public_key();
        let ev = Evaluator::new(&ctx, kg.evaluation_keys(&[], false)).unwrap();
        let mut enc = Encryptor::new_seeded(&ctx, 4);
        let xs: Vec<f64> = (0..ctx.slots()).map(|i| (i as f64 * 0.01).sin()).collect();
        let cts: Vec<Ciphertext> = [6usize, 5, 4]
            .iter()
            .map(|&l| {
                enc.encrypt(&pk, &ctx.encode_real(&xs, l, ctx.scale_at(l)).unwrap())
                    .unwrap()
            })
            .collect();
        // Exactly representable in f64, as mul_const takes its constant.
        let ks = [
            3i128,
            -((1i128 << 70) + (1 << 20)),
            (1i128 << 100) + (1 << 60),
        ];
        let level = 3;
        let fused = lin_comb_limbs(&ctx, &cts, &ks, level, 7.0).unwrap();
        let mut acc: Option<Ciphertext> = None;
        for (c, &k) in cts.iter().zip(&ks) {
            let d = ev.drop_to_level(c, level).unwrap();
            let m = ev.mul_const(&d, k as f64, 1.0).unwrap();
            let m = Ciphertext { scale: 7.0, ..m };
            acc = Some(match acc {
                None => m,
                Some(a) => ev.add(&a, &m).unwrap(),
            });
        }
        let acc = acc.unwrap();
        assert_eq!(fused.level, level);
        assert_eq!(fused.scale, 7.0);
        assert!(fused.parts == acc.parts, "residues differ");
        assert!(lin_comb_limbs(&ctx, &[], &[], level, 1.0).is_none());
    }

    /// Plain leaves: the same output level and values as the split leaves, with fewer
    /// products (most where the degree leaves levels unused, 47 < 63; never more).
    #[test]
    fn plain_leaves_save_products_at_the_same_level() {
        #![allow(clippy::unwrap_used)]
        use crate::ckks::{Decryptor, Encryptor, KeyGenerator};
        use crate::params::{Context, ParamSpec};
        let mut spec = ParamSpec::insecure_test(12, 8);
        spec.p_bits = vec![60, 60];
        let ctx = Context::new(spec).unwrap();
        let mut kg = KeyGenerator::new_seeded(&ctx, 1);
        let pk = kg.public_key();
        let ev = Evaluator::new(&ctx, kg.evaluation_keys(&[], false)).unwrap();
        let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
        let mut enc = Encryptor::new_seeded(&ctx, 2);
        let slots = ctx.slots();
        let xs: Vec<f64> = (0..slots)
            .map(|i| -1.0 + 2.0 * i as f64 / slots as f64)
            .collect();
        let top = ctx.max_level();
        let ct = enc
            .encrypt(&pk, &ctx.encode_real(&xs, top, ctx.scale_at(top)).unwrap())
            .unwrap();
        let ladder = ctx.scales.clone();
        for (degree, fewer) in [(47usize, true), (63, false)] {
            let p = Chebyshev::interpolate(|x| (6.0 * x).cos() * 0.5, degree, -1.0, 1.0);
            let mut runs = Vec::new();
            for plain in [false, true] {
                let c0 = ev.op_counts();
                let r = ev.eval_chebyshev_on(&ct, &p, &ladder, plain).unwrap();
                let ks = ev.op_counts().since(&c0).key_switches;
                let got = dec.decrypt_decode(&r).unwrap();
                let err = got
                    .iter()
                    .zip(&xs)
                    .map(|(g, &x)| (g.re - p.eval(x)).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-5, "degree {degree} plain {plain}: error {err:e}");
                runs.push((r.level, ks));
            }
            assert_eq!(
                runs[0].0, runs[1].0,
                "degree {degree}: output levels differ"
            );
            assert_eq!(runs[0].0, top - p.depth());
            if fewer {
                assert!(runs[1].1 < runs[0].1, "degree {degree}: {runs:?}");
            } else {
                assert!(runs[1].1 <= runs[0].1, "degree {degree}: {runs:?}");
            }
        }
    }
}
