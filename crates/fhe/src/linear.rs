//! Matrix–vector products on encrypted slot vectors by the diagonal method (Halevi & Shoup,
//! CRYPTO 2014) with baby-step/giant-step: for n diagonals and baby size g,
//! y = Σ_j rot_{gj}( Σ_i rot_{−gj}(d_{gj+i}) ⊙ rot_i(x) ), costing g − 1 hoisted rotations of
//! x plus ⌈n/g⌉ − 1 giant rotations instead of n − 1, and one level.

use crate::ckks::Ciphertext;
use crate::complex::C64;
use crate::error::{FheError, Result};
use crate::eval::Evaluator;
use std::collections::BTreeMap;

/// A slots × slots matrix stored by its nonzero generalised diagonals
/// d_k[t] = M[t][(t + k) mod slots].
#[derive(Debug, Clone, PartialEq)]
pub struct LinearTransform {
    slots: usize,
    diags: BTreeMap<usize, Vec<C64>>,
    baby: usize,
}

impl LinearTransform {
    /// From a dense square matrix with as many rows as there are slots.
    pub fn from_matrix(m: &[Vec<C64>], slots: usize) -> Result<Self> {
        if m.len() != slots || m.iter().any(|r| r.len() != slots) {
            return Err(FheError::InvalidInput(format!(
                "the matrix must be {slots} × {slots} (one row and column per slot)"
            )));
        }
        let mut diags = BTreeMap::new();
        for k in 0..slots {
            let d: Vec<C64> = (0..slots).map(|t| m[t][(t + k) % slots]).collect();
            if d.iter().any(|v| v.abs() > 0.0) {
                diags.insert(k, d);
            }
        }
        Self::from_diagonals(slots, diags)
    }

    /// From diagonals k → d_k (each of length `slots`).
    pub fn from_diagonals(slots: usize, diags: BTreeMap<usize, Vec<C64>>) -> Result<Self> {
        if let Some((k, d)) = diags.iter().find(|(k, d)| **k >= slots || d.len() != slots) {
            return Err(FheError::InvalidInput(format!(
                "diagonal {k} must have index < {slots} and {slots} entries (has {})",
                d.len()
            )));
        }
        let span = diags.keys().next_back().map_or(1, |&k| k + 1);
        // g ≈ sqrt(span), a power of two: balances g − 1 baby against span/g giant rotations.
        let baby = (span as f64).sqrt().ceil().max(1.0) as usize;
        let baby = baby.next_power_of_two();
        Ok(LinearTransform { slots, diags, baby })
    }

    /// The baby-step size g.
    pub fn baby_step(&self) -> usize {
        self.baby
    }

    /// Rotation steps whose Galois keys the transform needs.
    pub fn rotations_needed(&self) -> Vec<i64> {
        let g = self.baby;
        let mut v: Vec<i64> = Vec::new();
        for &k in self.diags.keys() {
            let (j, i) = (k / g, k % g);
            if i != 0 {
                v.push(i as i64);
            }
            if j != 0 {
                v.push((j * g) as i64);
            }
        }
        v.sort();
        v.dedup();
        v
    }

    /// Plaintext matrix–vector product (reference).
    pub fn apply_plain(&self, x: &[C64]) -> Vec<C64> {
        let n = self.slots;
        (0..n)
            .map(|t| {
                self.diags
                    .iter()
                    .fold(C64::default(), |acc, (&k, d)| acc + d[t] * x[(t + k) % n])
            })
            .collect()
    }
}

impl Evaluator {
    /// M·x on the slots of `ct` (consumes one level).
    pub fn linear_transform(&self, ct: &Ciphertext, lt: &LinearTransform) -> Result<Ciphertext> {
        let ctx = self.context();
        if lt.slots != ctx.slots() {
            return Err(FheError::InvalidInput(format!(
                "the transform is for {} slots, the parameters have {}",
                lt.slots,
                ctx.slots()
            )));
        }
        if ct.level == 0 {
            return Err(FheError::Level(
                "a linear transform needs a level ≥ 1".into(),
            ));
        }
        let n = lt.slots;
        let g = lt.baby;
        let babies: Vec<usize> = {
            let mut b: Vec<usize> = lt.diags.keys().map(|k| k % g).collect();
            b.sort();
            b.dedup();
            b
        };
        let steps: Vec<i64> = babies.iter().map(|&i| i as i64).collect();
        let rotated = self.rotate_hoisted(ct, &steps)?;
        let baby: BTreeMap<usize, &Ciphertext> =
            babies.iter().copied().zip(rotated.iter()).collect();
        let pt_scale = self.rescale_target(ct);
        let mut giants: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &k in lt.diags.keys() {
            giants.entry(k / g).or_default().push(k);
        }
        let mut total: Option<Ciphertext> = None;
        for (j, ks) in giants {
            let shift = j * g;
            let mut inner: Option<Ciphertext> = None;
            for k in ks {
                let d = &lt.diags[&k];
                // rot_{−shift}(d)[t] = d[(t − shift) mod n]
                let rd: Vec<C64> = (0..n).map(|t| d[(t + n - shift % n) % n]).collect();
                let pt = ctx.encode(&rd, ct.level, pt_scale)?;
                let term = self.mul_plain(baby[&(k % g)], &pt)?;
                inner = Some(match inner {
                    None => term,
                    Some(a) => self.add(&a, &term)?,
                });
            }
            let Some(inner) = inner else { continue };
            let part = if shift == 0 {
                inner
            } else {
                self.rotate(&inner, shift as i64)?
            };
            total = Some(match total {
                None => part,
                Some(a) => self.add(&a, &part)?,
            });
        }
        match total {
            Some(t) => self.rescale(&t),
            None => self.mul_const_rescale(ct, 0.0),
        }
    }
}
