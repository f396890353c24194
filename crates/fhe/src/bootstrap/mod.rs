//! CKKS bootstrapping (Cheon, Han, Kim, Kim, Song 2018, in its full-RNS form): refreshes a
//! ciphertext at level 0 to a ciphertext with `levels_after()` levels.
//!
//! 1. **ModRaise**: the level-0 ciphertext (c_0, c_1) mod q_0, lifted centred to Q_L, decrypts
//!    to t = m + q_0·I with a small integer polynomial I (|I| ≲ 6·sqrt((h+1)/12) for a sparse
//!    secret of Hamming weight h).
//! 2. **Subring trace** (n < N/2 slots): Σ_k rot_{n·2^k}, log2(N/2n) rotations, keeps the
//!    coefficients of X^(N/2n) and multiplies them by N/2n.
//! 3. **CoeffToSlot**: the inverse special FFT, factored (see [`dft`]), puts the coefficients
//!    of t/(q_0·K) into the slots, real and imaginary parts separated by a conjugation.
//! 4. **EvalMod**: sin(2π·K·x) ≈ 2π·m/q_0 ([`evalmod`]).
//! 5. **SlotToCoeff**: the forward special FFT, with the factor q_0/(2π·Δ) folded into the
//!    ciphertext's scale label, landing on the context's scale ladder.
//!
//! Real slots ("imaginary-removing"): a message with real slots has a polynomial fixed by
//! X ↦ X^-1, so its N coefficients are determined by the low half u (n values): the slots are
//! z = 2·Re(U·u) − u_0, with U the n-point special FFT. One EvalMod of Re(CoeffToSlot) is
//! enough, and the final conjugate-and-add returns slots with exactly zero imaginary part.
//! Complex slots need Re and Im: two EvalMods when n = N/2, one when n ≤ N/4 (both halves
//! packed into 2n slots by the last CoeffToSlot factor).
//!
//! Scales: the ModRaise'd ciphertext is labelled q_0·K·2·(N/2n) (no work: a label), so that
//! CoeffToSlot outputs values in [−1, 1]; CoeffToSlot and EvalMod keep their own ladder near
//! the size of their primes (2^50..2^60 rather than the user's 2^40: the error of t/q_0 is
//! multiplied by q_0·K/Δ in the result); SlotToCoeff lands on the context's ladder.

pub mod bench;
pub mod dft;
pub mod evalmod;

use crate::ckks::{
    Ciphertext, EvaluationKeys, KeyGenerator, check_ciphertext, conjugation_element, galois_element,
};
use crate::complex::C64;
use crate::error::{FheError, Result};
use crate::eval::{Evaluator, OpCounts};
use crate::params::{Context, ParamSpec};
use dft::{Diags, PreparedLt, norm};
use evalmod::EvalModPoly;
use rayon::prelude::*;
use std::f64::consts::PI;
use std::sync::Arc;

/// Real or complex slot values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    /// Real values; the imaginary part is removed (one EvalMod).
    Real,
    /// Complex values.
    Complex,
}

/// What to build.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapConfig {
    /// Slot count n: a power of two in 2..=N/2. A ciphertext of n < N/2 slots holds its n
    /// values replicated N/2n times (period n), as encoding a repeated vector gives.
    pub slots: usize,
    /// Real or complex slots.
    pub kind: SlotKind,
    /// Levels (merged FFT factors) of CoeffToSlot.
    pub cts_levels: usize,
    /// Levels of SlotToCoeff.
    pub stc_levels: usize,
    /// Hamming weight h of the sparse ternary secret (sets the overflow bound K).
    pub secret_weight: usize,
    /// Override of K (|I| < K); default [`overflow_bound`].
    pub k_range: Option<f64>,
    /// Double-angle steps r of EvalMod.
    pub double_angle: u32,
    /// Highest Chebyshev degree EvalMod may use.
    pub max_degree: usize,
    /// log2 of q_0 over the message scale at ModRaise: a level-0 input is first multiplied
    /// by the integer 2^k (exact, no level) that brings its scale up to q_0/2^this. The
    /// absolute error of EvalMod is fixed in units of q_0, so every bit of scale gained is a
    /// bit of precision; the price is the sine's deviation from the identity,
    /// (2π·m/q_0)²/6 relative, for a coefficient m (2^-17 at a coefficient as large as the
    /// scale with 8 bits, as Lattigo's default; random slots have coefficients far smaller).
    pub log_message_ratio: u32,
    /// Target max error of EvalMod's interpolant on [−1, 1]: the lowest degree that meets it
    /// is used. 1e-13 is within a few ulps of what f64 interpolation reaches (K = 26, r = 3
    /// meets it at degree ~50); a tighter target is never met and always took `max_degree`.
    pub approx_tol: f64,
    /// Cost of a hoisted baby rotation relative to a giant one in the DFT factors' BSGS
    /// plans: lower weights take more baby steps and fewer giant ones (more rotation keys).
    /// Default 0.6, the plan with about the fewest keys. Measured at N = 2^16, 4096 real
    /// slots (CPU time, one thread): 0.15 left CoeffToSlot at 6.1 s and SlotToCoeff at
    /// 2.4 s against 5.4–6.1 s and 1.9–2.2 s, for 7.1 GB of keys instead of 4.9 GB — a baby
    /// rotation kept in the extended basis still costs a key product over every limb.
    pub baby_cost: f64,
    /// DFT factors in the extended basis Q·P (double hoisting; see [`dft`]): faster, and
    /// their diagonals take α more limbs each.
    pub double_hoisting: bool,
    /// Giant-step rotations of the DFT factors by Horner's rule: the same number of key
    /// switches, but only two rotation keys (±G) per factor for its giant steps instead of
    /// one per step (at N = 2^16 and 32768 slots, 39 rotation keys → 27). Each giant
    /// rotation then waits for the previous one, so a factor's giant steps no longer run
    /// side by side (one thread: no difference).
    pub giant_horner: bool,
    /// Diagonals whose slots repeat with a period p < N/2 (the short butterfly stages, and
    /// every diagonal of sparse slots) stored as their 2p distinct NTT values per limb (see
    /// [`dft`]): the same products, a fraction of the memory.
    pub compact_diagonals: bool,
}

impl BootstrapConfig {
    /// Defaults: 3 CoeffToSlot and 3 SlotToCoeff levels, r = 3, degree ≤ 63.
    pub fn new(slots: usize, kind: SlotKind, secret_weight: usize) -> Self {
        BootstrapConfig {
            slots,
            kind,
            cts_levels: 3,
            stc_levels: 3,
            secret_weight,
            k_range: None,
            double_angle: 3,
            max_degree: 63,
            log_message_ratio: 8,
            approx_tol: 1e-13,
            baby_cost: 0.6,
            double_hoisting: true,
            giant_horner: false,
            compact_diagonals: true,
        }
    }
}

/// K for a sparse ternary secret of weight h: t/q_0 − m/q_0 = I is a sum of h + 1 terms
/// uniform in [−1/2, 1/2] (c_0 and the h products c_1,j·s_j, each c/q_0 uniform), standard
/// deviation sqrt((h+1)/12); six deviations (two-sided tail 2^-29.5 per coefficient) plus one.
pub fn overflow_bound(h: usize) -> f64 {
    (6.0 * ((h + 1) as f64 / 12.0).sqrt()).ceil() + 1.0
}

/// The documented 128-bit bound for a sparse ternary secret of Hamming weight ≥ 192 at
/// N = 2^16: log2(QP) ≤ 1555 (Lee et al., ICML 2022; HEaaN's FGb preset). Taken as
/// documented there, not re-estimated here.
pub const SPARSE_H192_N16_MAX_LOG_QP: u32 = 1555;

/// The parameter chain of a bootstrapping set, from q_0 up: q_0, `levels_after` user primes
/// of `scale_bits`, SlotToCoeff primes, EvalMod primes, CoeffToSlot primes.
#[derive(Debug, Clone, PartialEq)]
pub struct BootChain {
    /// log2 N.
    pub log_n: u32,
    /// Bits of q_0 (holds the message during ModRaise; q_0/Δ sets the precision).
    pub q0_bits: u32,
    /// User levels left after bootstrapping, and their prime (= scale) bits.
    pub levels_after: usize,
    /// Bits of the user primes and of the scale Δ_0.
    pub scale_bits: u32,
    /// SlotToCoeff prime bits, one per level.
    pub stc_bits: Vec<u32>,
    /// EvalMod prime bits, one per level.
    pub evalmod_bits: Vec<u32>,
    /// CoeffToSlot prime bits, one per level.
    pub cts_bits: Vec<u32>,
    /// Special primes.
    pub p_bits: Vec<u32>,
    /// Accept parameters without a documented security level (tests).
    pub allow_insecure: bool,
    /// The configuration's [`BootstrapConfig::double_hoisting`], for every slot count.
    pub double_hoisting: bool,
    /// Double hoisting also for slot counts up to this one (where the extended diagonals and
    /// baby rotations fit the memory budget but not at every slot count).
    pub double_hoisting_max_slots: Option<usize>,
    /// The configuration's [`BootstrapConfig::double_angle`]; EvalMod takes
    /// `evalmod_bits.len()` levels, so the two must agree (see [`BootChain::config`]).
    pub double_angle: u32,
    /// The configuration's [`BootstrapConfig::max_degree`].
    pub max_degree: usize,
    /// The configuration's [`BootstrapConfig::giant_horner`].
    pub giant_horner: bool,
}

impl BootChain {
    /// The [`ParamSpec`].
    pub fn spec(&self) -> ParamSpec {
        let mut q_bits = vec![self.q0_bits];
        q_bits.extend(std::iter::repeat_n(self.scale_bits, self.levels_after));
        q_bits.extend(&self.stc_bits);
        q_bits.extend(&self.evalmod_bits);
        q_bits.extend(&self.cts_bits);
        ParamSpec {
            log_n: self.log_n,
            q_bits,
            p_bits: self.p_bits.clone(),
            log_scale: self.scale_bits,
            allow_insecure: self.allow_insecure,
        }
    }

    /// A small insecure chain for tests: N = 2^log_n, 2 levels left, 3 + 3 DFT levels.
    pub fn insecure_test(log_n: u32) -> Self {
        BootChain {
            log_n,
            q0_bits: 60,
            levels_after: 2,
            scale_bits: 40,
            stc_bits: vec![40; 3],
            evalmod_bits: vec![60; 9],
            cts_bits: vec![60; 3],
            p_bits: vec![60; 3],
            allow_insecure: true,
            double_hoisting: true,
            double_hoisting_max_slots: None,
            double_angle: 3,
            max_degree: 63,
            giant_horner: false,
        }
    }

    /// N = 2^16, h = 192, 9 levels left, log QP ≤ 1555 (1550). q_0 is only 50 bits: the
    /// input is scaled up to q_0/2^8 at ModRaise anyway, so a larger q_0 would buy nothing,
    /// and its bits go to 60-bit CoeffToSlot and EvalMod primes, whose scale sets the
    /// precision. Five 60-bit special primes, one per five q primes (dnum = 5): a digit's
    /// modulus never exceeds P, and a key is 5 × 2 × 30 limbs (150 MB).
    pub fn n16_l9() -> Self {
        BootChain {
            log_n: 16,
            q0_bits: 50,
            levels_after: 9,
            scale_bits: 40,
            stc_bits: vec![40; 3],
            evalmod_bits: vec![60; 9],
            cts_bits: vec![60; 3],
            p_bits: vec![60; 5],
            allow_insecure: false,
            double_hoisting: true,
            double_hoisting_max_slots: None,
            double_angle: 3,
            max_degree: 63,
            giant_horner: false,
        }
    }

    /// N = 2^16, h = 192, 16 levels left, log QP ≤ 1555 (1555): 35-bit user and SlotToCoeff
    /// primes (the output's rescale noise at 2^35 is the floor of the result, ~2^-24.5 per
    /// slot), q_0 = 42 bits (message ratio 2^7), EvalMod with one double angle (a degree-123
    /// interpolant, 7 + 1 = 8 levels instead of 6 + 3 = 9: the level saved pays for larger
    /// primes, and one double angle amplifies the interpolant's noise by 2.8 instead of 8–41),
    /// EvalMod primes 53..60 bits on a descending scale ladder (2^58 at the top, where the
    /// Chebyshev basis amplifies rescaling noise ~2^8, down to 2^51 at the double angle, which
    /// hardly amplifies it; the lower output scale also raises SlotToCoeff's diagonal scale),
    /// 55-bit CoeffToSlot primes, four 60-bit special primes; key-switching digits grouped
    /// by bits under the 228-bit bound of four EvalMod primes ([`crate::params::digit_ranges`]:
    /// six 35-bit primes per user digit, dnum = 7 instead of 8 at the top and 4–6 instead of
    /// 6–7 at EvalMod's levels). Its DFT factors stay modulo Q (no double hoisting) above 4096 slots: at
    /// 32768 slots its 8.5 GB of keys leave no room for the extended diagonals (peak RSS
    /// 13.1 GB with them before the compact diagonals, over 12 GiB); at 4096 slots (compact
    /// diagonals, 0.09 GB) the extended path measured the same peak RSS (10.0 GB) and
    /// precision and ~3 s less CPU time per bootstrap. Giant steps by Horner's rule
    /// ([`BootstrapConfig::giant_horner`]): at 32768 slots 27 rotation keys instead of 39,
    /// which with the compact diagonals took the peak RSS from 17.5 GB to 11.6 GB.
    pub fn n16_l16() -> Self {
        BootChain {
            log_n: 16,
            q0_bits: 42,
            levels_after: 16,
            scale_bits: 35,
            stc_bits: vec![35; 3],
            evalmod_bits: vec![52, 53, 54, 55, 56, 57, 58, 57],
            cts_bits: vec![55; 3],
            p_bits: vec![60; 4],
            allow_insecure: false,
            double_hoisting: false,
            double_hoisting_max_slots: Some(4096),
            double_angle: 1,
            max_degree: 127,
            giant_horner: true,
        }
    }

    /// The bootstrapping configuration that matches this chain's level split.
    pub fn config(&self, slots: usize, kind: SlotKind, secret_weight: usize) -> BootstrapConfig {
        let mut c = BootstrapConfig::new(slots, kind, secret_weight);
        c.cts_levels = self.cts_bits.len();
        c.stc_levels = self.stc_bits.len();
        c.double_hoisting =
            self.double_hoisting || self.double_hoisting_max_slots.is_some_and(|m| slots <= m);
        c.double_angle = self.double_angle;
        c.max_degree = self.max_degree;
        c.giant_horner = self.giant_horner;
        c
    }
}

/// Wall time of each bootstrapping stage, ms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Drop to level 0, prescale, ModRaise.
    pub mod_raise_ms: f64,
    /// Subring trace (sparse slots).
    pub trace_ms: f64,
    /// CoeffToSlot with the Re/Im extraction.
    pub coeff_to_slot_ms: f64,
    /// EvalMod (both halves for full complex slots).
    pub eval_mod_ms: f64,
    /// SlotToCoeff (with the final conjugation for real slots).
    pub slot_to_coeff_ms: f64,
    /// Key switches, divisions by P and rescales of each stage, in the order above.
    pub ops: [OpCounts; 5],
    /// CPU time of the whole process during each stage, ms (see [`bench::process_cpu_ms`]).
    pub cpu_ms: [f64; 5],
}

/// Everything bootstrapping precomputes for one parameter set and slot layout: the encoded
/// DFT factors, the EvalMod polynomial, the scale bookkeeping. Holds no keys.
#[derive(Debug)]
pub struct Bootstrapper {
    ctx: Arc<Context>,
    cfg: BootstrapConfig,
    poly: EvalModPoly,
    cts: Vec<PreparedLt>,
    stc: Vec<PreparedLt>,
    /// EvalMod's scale ladder.
    ladder: Vec<f64>,
    /// The scale label of the ModRaise'd ciphertext.
    s_label: f64,
    /// Integer multiplier applied before each CoeffToSlot factor (the first one inside
    /// ModRaise, before the trace): see [`cts_boost`].
    cts_boost: Vec<u64>,
    /// The input scale SlotToCoeff was encoded for (Δ_0).
    s_ref: f64,
    /// NTT of X^(N/2) (multiplication of the slots by i) over q_0..q_L.
    mono_i: Vec<u64>,
    level_evalmod_in: usize,
    level_evalmod_out: usize,
    level_out: usize,
}

impl Bootstrapper {
    /// Checks the configuration against the parameters and precomputes everything.
    pub fn new(ctx: &Arc<Context>, cfg: BootstrapConfig) -> Result<Self> {
        let slots = ctx.slots();
        let n = cfg.slots;
        if !n.is_power_of_two() || n < 2 || n > slots {
            return Err(FheError::InvalidInput(format!(
                "slot count {n} must be a power of two in 2..={slots} (N/2 for N = {})",
                ctx.n
            )));
        }
        let log_slots = n.trailing_zeros() as usize;
        for (what, v) in [
            ("CoeffToSlot", cfg.cts_levels),
            ("SlotToCoeff", cfg.stc_levels),
        ] {
            if !(1..=log_slots).contains(&v) {
                return Err(FheError::InvalidInput(format!(
                    "{what} levels = {v} must be in 1..={log_slots} (log2 of the slot count)"
                )));
            }
        }
        Self::check_security(ctx, cfg.secret_weight)?;
        let k_range = cfg.k_range.unwrap_or(overflow_bound(cfg.secret_weight));
        let poly = EvalModPoly::new(k_range, cfg.double_angle, cfg.max_degree, cfg.approx_tol)?;
        let top = ctx.max_level();
        let need = cfg.cts_levels + poly.depth() + cfg.stc_levels;
        if top < need {
            return Err(FheError::Level(format!(
                "bootstrapping needs {need} levels above the output (CoeffToSlot {}, EvalMod {}, SlotToCoeff {}); the parameters have {top}",
                cfg.cts_levels,
                poly.depth(),
                cfg.stc_levels
            )));
        }
        let l_e = top - cfg.cts_levels;
        let l_m = l_e - poly.depth();
        let l_out = l_m - cfg.stc_levels;
        let mut ladder = vec![ctx.q[l_e] as f64; top + 1];
        for l in (0..l_e).rev() {
            ladder[l] = ladder[l + 1] * ladder[l + 1] / ctx.q[l + 1] as f64;
        }
        let gap = slots / n;
        let q0 = ctx.q[0] as f64;
        let base_label = q0 * k_range * 2.0 * gap as f64;
        let s_ref = ctx.scale_at(0) * prescale(q0, ctx.scale_at(0), cfg.log_message_ratio);
        let enc = ctx.encoder();
        let packed = cfg.kind == SlotKind::Complex && n < slots;
        let baby_cost = cfg.baby_cost;
        if !(baby_cost.is_finite() && baby_cost > 0.0) {
            return Err(FheError::InvalidInput(format!(
                "baby_cost = {baby_cost} must be a positive number"
            )));
        }
        let lt = dft::LtOptions {
            baby_cost,
            ext: cfg.double_hoisting,
            horner: cfg.giant_horner,
            compact: cfg.compact_diagonals,
        };

        // CoeffToSlot: from the top level down to l_e, landing on EvalMod's ladder.
        let mut cts_f = dft::coeff_to_slot_factors(enc, n, slots, cfg.cts_levels);
        if packed {
            // Rows of the upper half of each 2n block times −i: u = [w/2, −i·w/2], so that
            // u + conj(u) = [Re w, Im w] (period 2n).
            if let Some(last) = cts_f.last_mut() {
                for d in last.values_mut() {
                    for (t, v) in d.iter_mut().enumerate() {
                        if t % (2 * n) >= n {
                            *v = *v * C64::new(0.0, -1.0);
                        }
                    }
                }
            }
        }
        let mut cts = Vec::new();
        let mut boosts = Vec::new();
        let mut scale = base_label;
        let mut level = top;
        let count = cts_f.len();
        for (i, f) in cts_f.iter().enumerate() {
            let out = if i + 1 == count {
                ladder[l_e]
            } else {
                ctx.q[level - 1] as f64
            };
            let b = cts_boost(scale, out * ctx.q[level] as f64);
            boosts.push(b);
            scale *= b as f64;
            cts.push(PreparedLt::new(ctx, f, n, level, (scale, out), lt)?);
            scale = out;
            level -= 1;
        }
        let s_label = base_label * boosts.first().copied().unwrap_or(1) as f64;

        // SlotToCoeff: from l_m down to l_out, landing on the context's ladder.
        let mut stc_f = dft::slot_to_coeff_factors(enc, n, slots, cfg.stc_levels);
        let mut first_period = n;
        if let Some(first) = stc_f.first_mut() {
            match cfg.kind {
                SlotKind::Real => {
                    // v/2 = u − u_0/2·e_0 (bit-reversed order keeps index 0 at 0): the
                    // columns of slot 0 (mod n) halved.
                    for (&k, d) in first.iter_mut() {
                        for (t, v) in d.iter_mut().enumerate() {
                            let s = (t as i64 + k).rem_euclid(slots as i64) as usize;
                            if s.is_multiple_of(n) {
                                *v = v.scale(0.5);
                            }
                        }
                    }
                }
                SlotKind::Complex if packed => {
                    *first = expand_packed(first, n, slots);
                    first_period = 2 * n;
                }
                SlotKind::Complex => {}
            }
        }
        let mut stc = Vec::new();
        let mut scale = ladder[l_m] * 2.0 * PI * s_ref / q0;
        let mut level = l_m;
        let out_scale = ctx.scale_at(l_out);
        // The diagonals' encoding scale is out·q_l/in per factor. Landing on out_scale after
        // the first factor (as CoeffToSlot's ladder would) left that factor's diagonals at
        // ~2^25 — their rounding, relative 2^-25·sqrt(N), was the precision floor (17 bits
        // worst slot at N = 2^16). Equal encoding scales for every factor spread the drop.
        let stc_count = stc_f.len();
        let log_pt = ((out_scale.log2() - scale.log2())
            + (l_out + 1..=l_m)
                .map(|l| (ctx.q[l] as f64).log2())
                .sum::<f64>())
            / stc_count as f64;
        for (i, f) in stc_f.iter().enumerate() {
            let period = if i == 0 { first_period } else { n };
            let out = if i + 1 == stc_count {
                out_scale
            } else {
                scale * log_pt.exp2() / ctx.q[level] as f64
            };
            stc.push(PreparedLt::new(ctx, f, period, level, (scale, out), lt)?);
            scale = out;
            level -= 1;
        }
        let mut mono = vec![0i64; ctx.n];
        mono[ctx.n / 2] = 1;
        let mono_i = ctx.small_to_ntt(&mono, &ctx.q_idx(top));
        Ok(Bootstrapper {
            ctx: ctx.clone(),
            cfg,
            poly,
            cts,
            stc,
            ladder,
            s_label,
            cts_boost: boosts,
            s_ref,
            mono_i,
            level_evalmod_in: l_e,
            level_evalmod_out: l_m,
            level_out: l_out,
        })
    }

    /// Sparse secrets have no entry in the HE standard: accept only the documented setting.
    fn check_security(ctx: &Context, h: usize) -> Result<()> {
        if h == 0 || h > ctx.n {
            return Err(FheError::InvalidInput(format!(
                "secret Hamming weight {h} must be in 1..={}",
                ctx.n
            )));
        }
        if ctx.spec().allow_insecure {
            return Ok(());
        }
        if ctx.n != 1 << 16 || h < 192 {
            return Err(FheError::InvalidParams(format!(
                "no documented 128-bit bound for a sparse secret of weight {h} at N = {} (documented: N = 65536, h ≥ 192, log QP ≤ {SPARSE_H192_N16_MAX_LOG_QP}); set allow_insecure for experiments",
                ctx.n
            )));
        }
        let log_qp = ctx.log_qp.ceil() as u32;
        if log_qp > SPARSE_H192_N16_MAX_LOG_QP {
            return Err(FheError::InsecureSparse {
                n: ctx.n,
                h,
                log_qp,
                limit: SPARSE_H192_N16_MAX_LOG_QP,
            });
        }
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &BootstrapConfig {
        &self.cfg
    }

    /// The EvalMod polynomial.
    pub fn eval_mod_poly(&self) -> &EvalModPoly {
        &self.poly
    }

    /// Levels the output keeps.
    pub fn levels_after(&self) -> usize {
        self.level_out
    }

    /// The level EvalMod starts at (CoeffToSlot's output).
    pub fn level_evalmod_in(&self) -> usize {
        self.level_evalmod_in
    }

    /// The level EvalMod ends at (SlotToCoeff's input).
    pub fn level_evalmod_out(&self) -> usize {
        self.level_evalmod_out
    }

    /// EvalMod's scale at `level`.
    pub fn evalmod_scale(&self, level: usize) -> f64 {
        self.ladder[level.min(self.ladder.len() - 1)]
    }

    /// The scale label CoeffToSlot's first factor expects.
    pub fn raised_scale(&self) -> f64 {
        self.s_label
    }

    /// Bytes of the encoded DFT factors.
    pub fn size_bytes(&self) -> usize {
        self.cts
            .iter()
            .chain(&self.stc)
            .map(PreparedLt::size_bytes)
            .sum()
    }

    /// Diagonals per factor (CoeffToSlot then SlotToCoeff).
    pub fn diagonals(&self) -> (Vec<usize>, Vec<usize>) {
        (
            self.cts.iter().map(PreparedLt::diagonals).collect(),
            self.stc.iter().map(PreparedLt::diagonals).collect(),
        )
    }

    fn trace_steps(&self) -> Vec<i64> {
        let gap = self.ctx.slots() / self.cfg.slots;
        (0..gap.trailing_zeros())
            .map(|k| (self.cfg.slots << k) as i64)
            .collect()
    }

    /// Every rotation step bootstrapping performs (it also needs the conjugation key).
    pub fn rotations(&self) -> Vec<i64> {
        let slots = self.ctx.slots();
        let mut v: Vec<i64> = self
            .cts
            .iter()
            .chain(&self.stc)
            .flat_map(PreparedLt::rotations)
            .chain(self.trace_steps())
            .map(|s| norm(s, slots))
            .filter(|&s| s != 0)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Relinearisation, conjugation and exactly the rotation keys bootstrapping uses.
    pub fn generate_keys(&self, kg: &mut KeyGenerator) -> EvaluationKeys {
        kg.evaluation_keys(&self.rotations(), true)
    }

    /// Fails with the first key bootstrapping would miss.
    pub fn check_keys(&self, ev: &Evaluator) -> Result<()> {
        let keys = ev.keys();
        if keys.relin.is_none() {
            return Err(FheError::MissingRelinKey);
        }
        let have = keys.galois.elements();
        let conj = conjugation_element(&self.ctx);
        if !have.contains(&conj) {
            return Err(FheError::MissingGaloisKey {
                what: "conjugation (bootstrapping)".into(),
                galois_element: conj,
            });
        }
        for s in self.rotations() {
            let g = galois_element(&self.ctx, s);
            if !have.contains(&g) {
                return Err(FheError::MissingGaloisKey {
                    what: format!("rotation by {s} (bootstrapping)"),
                    galois_element: g,
                });
            }
        }
        Ok(())
    }

    /// Refreshes `ct` (any level; its level-0 part is used) to `levels_after()` levels. The
    /// output has the context's ladder scale at that level times ct.scale/Δ_0 (exactly the
    /// ladder when ct was on it).
    pub fn bootstrap(&self, ev: &Evaluator, ct: &Ciphertext) -> Result<Ciphertext> {
        Ok(self.bootstrap_timed(ev, ct)?.0)
    }

    /// [`bootstrap`](Self::bootstrap) with the wall time of each stage.
    pub fn bootstrap_timed(
        &self,
        ev: &Evaluator,
        ct: &Ciphertext,
    ) -> Result<(Ciphertext, StageTimes)> {
        check_ciphertext(&self.ctx, ct)?;
        if ct.size() != 2 {
            return Err(FheError::CiphertextSize(format!(
                "bootstrapping needs a size-2 ciphertext, got size {}; relinearise first",
                ct.size()
            )));
        }
        self.check_keys(ev)?;
        let mut times = StageTimes::default();
        let clock = std::time::Instant::now();
        let mut ops_since = ev.op_counts();
        let mut cpu_since = bench::process_cpu_ms();
        let mut cpu = [0.0f64; 5];
        let mut stage = 0usize;
        let mut lap = |slot: &mut f64, ops: &mut [OpCounts; 5], since: &mut f64| {
            let now = clock.elapsed().as_secs_f64() * 1e3;
            *slot = now - *since;
            *since = now;
            let c = ev.op_counts();
            ops[stage] = c.since(&ops_since);
            ops_since = c;
            let t = bench::process_cpu_ms();
            cpu[stage] = t - cpu_since;
            cpu_since = t;
            stage += 1;
        };
        let mut since = 0.0;
        let low = ev.drop_to_level(ct, 0)?;
        let k = prescale(self.ctx.q[0] as f64, ct.scale, self.cfg.log_message_ratio);
        let low = if k > 1.0 {
            ev.mul_int(&low, k as i64)?
        } else {
            low
        };
        let s_in = ct.scale * k;
        // Each stage's input is dropped as soon as the next exists: at N = 2^16 a top-level
        // ciphertext is ~30 MB, and the 16-level set's peak RSS (during EvalMod) sits within
        // tens of MB of the 12 GiB budget.
        let raised = self.mod_raise(&low)?;
        drop(low);
        lap(&mut times.mod_raise_ms, &mut times.ops, &mut since);
        let traced = self.subring_trace(ev, &raised)?;
        drop(raised);
        lap(&mut times.trace_ms, &mut times.ops, &mut since);
        let xs = self.coeff_to_slot(ev, &traced)?;
        drop(traced);
        lap(&mut times.coeff_to_slot_ms, &mut times.ops, &mut since);
        let ys = xs
            .into_iter()
            .map(|x| self.eval_mod(ev, &x))
            .collect::<Result<Vec<_>>>()?;
        lap(&mut times.eval_mod_ms, &mut times.ops, &mut since);
        let out = self.slot_to_coeff(ev, &ys, s_in)?;
        lap(&mut times.slot_to_coeff_ms, &mut times.ops, &mut since);
        times.cpu_ms = cpu;
        Ok((out, times))
    }

    /// ModRaise: the level-0 ciphertext's residues, centred, as residues of every q_i; the
    /// result is labelled with the scale CoeffToSlot expects.
    pub fn mod_raise(&self, ct: &Ciphertext) -> Result<Ciphertext> {
        let ctx = &self.ctx;
        check_ciphertext(ctx, ct)?;
        if ct.level != 0 {
            return Err(FheError::Level(format!(
                "ModRaise takes a level-0 ciphertext, got level {}",
                ct.level
            )));
        }
        let n = ctx.n;
        let top = ctx.max_level();
        let q0 = ctx.q[0];
        let parts = ct
            .parts
            .iter()
            .map(|p| {
                let mut c = p[..n].to_vec();
                ctx.tables[0].inverse(&mut c);
                let centred: Vec<i64> = c
                    .iter()
                    .map(|&v| {
                        if v > q0 / 2 {
                            v as i64 - q0 as i64
                        } else {
                            v as i64
                        }
                    })
                    .collect();
                let boost = i128::from(self.cts_boost.first().copied().unwrap_or(1));
                let mut out = vec![0u64; (top + 1) * n];
                out.par_chunks_mut(n).enumerate().for_each(|(k, limb)| {
                    let t = &ctx.tables[k];
                    for (o, &x) in limb.iter_mut().zip(&centred) {
                        *o = t.m.from_i128(i128::from(x) * boost);
                    }
                    t.forward(limb);
                });
                out
            })
            .collect();
        Ok(Ciphertext {
            parts,
            level: top,
            scale: self.s_label,
            params: ct.params,
        })
    }

    /// The trace to the subring of n slots (identity for n = N/2).
    pub fn subring_trace(&self, ev: &Evaluator, ct: &Ciphertext) -> Result<Ciphertext> {
        let mut c = ct.clone();
        for s in self.trace_steps() {
            c = ev.add(&c, &ev.rotate(&c, s)?)?;
        }
        Ok(c)
    }

    /// Slots · i (or · −i): multiplication by ±X^(N/2), exact and level-free.
    fn mul_i(&self, ct: &Ciphertext, negate: bool) -> Ciphertext {
        let ctx = &self.ctx;
        let n = ctx.n;
        let mut out = ct.clone();
        for p in out.parts.iter_mut() {
            p.par_chunks_mut(n).enumerate().for_each(|(i, limb)| {
                let m = ctx.modulus(i);
                let mono = &self.mono_i[i * n..(i + 1) * n];
                for (x, &w) in limb.iter_mut().zip(mono) {
                    let v = m.mul(*x, w);
                    *x = if negate { m.neg(v) } else { v };
                }
            });
        }
        out
    }

    /// CoeffToSlot on a ciphertext at the top level with the scale of
    /// [`raised_scale`](Self::raised_scale) (values U·w/2 for the coefficient vector w):
    /// the real slot vectors EvalMod takes — [Re w] (real), [Re w, Im w] (complex, n = N/2),
    /// or one vector with Re and Im in the halves of each 2n block (complex, n ≤ N/4).
    pub fn coeff_to_slot(&self, ev: &Evaluator, ct: &Ciphertext) -> Result<Vec<Ciphertext>> {
        let mut u = ct.clone();
        let count = self.cts.len();
        for (i, f) in self.cts.iter().enumerate() {
            if i > 0 && self.cts_boost[i] > 1 {
                let b = self.cts_boost[i];
                u = ev.mul_int(&u, b as i64)?;
                u.scale *= b as f64;
            }
            if i + 1 < count {
                u = f.apply(ev, &u)?;
                continue;
            }
            // The last factor stays unrescaled and in the extended basis: the conjugation's
            // key-switching noise then lands at ~2^120 rather than at EvalMod's 2^60, where
            // 2π·K amplified it to ~2^-24 in the result, and u + conj(u) is divided by P·q_l
            // once.
            let scale = u.scale * f.pt_scale;
            let x = f.apply_ext(ev, &u)?;
            let mut xc = None;
            ev.conjugate_ext_add(&mut xc, x.clone())?;
            let xc = xc.ok_or_else(|| FheError::InvalidInput("empty conjugation".into()))?;
            let mut re = Some(x.clone());
            ev.ext_add_into(&mut re, xc.clone());
            let re = re.ok_or_else(|| FheError::InvalidInput("empty sum".into()))?;
            let re = ev.ext_mod_down_rescale(re, scale)?;
            if self.cfg.kind == SlotKind::Complex && self.cfg.slots == self.ctx.slots() {
                let mut im = Some(x);
                ev.ext_add_into(&mut im, ev.ext_neg(xc));
                let im = im.ok_or_else(|| FheError::InvalidInput("empty difference".into()))?;
                let im = self.mul_i(&ev.ext_mod_down_rescale(im, scale)?, true);
                return Ok(vec![re, im]);
            }
            return Ok(vec![re]);
        }
        Err(FheError::InvalidInput("CoeffToSlot has no factors".into()))
    }

    /// EvalMod on one CoeffToSlot output (at EvalMod's input level and scale).
    pub fn eval_mod(&self, ev: &Evaluator, ct: &Ciphertext) -> Result<Ciphertext> {
        if ct.level != self.level_evalmod_in {
            return Err(FheError::Level(format!(
                "EvalMod starts at level {}, the ciphertext is at level {}",
                self.level_evalmod_in, ct.level
            )));
        }
        self.poly.eval(ev, ct, &self.ladder)
    }

    /// SlotToCoeff on EvalMod's outputs (values 2π·m/q_0 for a message scaled by `s_in`).
    pub fn slot_to_coeff(
        &self,
        ev: &Evaluator,
        ys: &[Ciphertext],
        s_in: f64,
    ) -> Result<Ciphertext> {
        let mut w = match ys {
            [y] => y.clone(),
            [re, im] => ev.add(re, &self.mul_i(im, false))?,
            _ => {
                return Err(FheError::InvalidInput(format!(
                    "SlotToCoeff takes one or two ciphertexts, got {}",
                    ys.len()
                )));
            }
        };
        if !(s_in.is_finite() && s_in > 0.0) {
            return Err(FheError::InvalidInput(format!(
                "input scale {s_in} must be finite and positive"
            )));
        }
        // The label that makes the values m/s_in: no arithmetic, only bookkeeping.
        w.scale *= 2.0 * PI * s_in / self.ctx.q[0] as f64;
        let count = self.stc.len();
        for (i, f) in self.stc.iter().enumerate() {
            if i + 1 == count && self.cfg.kind == SlotKind::Real {
                // Conjugate before the last rescale: its key-switching noise at the output
                // scale 2^40 was the floor of the result (~2^-23 per slot). In the extended
                // basis, v + conj(v) is divided by P·q_l once.
                let scale = w.scale * f.pt_scale;
                let v = f.apply_ext(ev, &w)?;
                let mut acc = Some(v.clone());
                ev.conjugate_ext_add(&mut acc, v)?;
                let acc = acc.ok_or_else(|| FheError::InvalidInput("empty sum".into()))?;
                return ev.ext_mod_down_rescale(acc, scale);
            }
            w = f.apply(ev, &w)?;
        }
        Ok(w)
    }

    /// The input scale SlotToCoeff was encoded for (Δ_0).
    pub fn reference_scale(&self) -> f64 {
        self.s_ref
    }

    /// The integer 2^k a level-0 input of `scale` is multiplied by before ModRaise.
    pub fn prescale_factor(&self, scale: f64) -> f64 {
        prescale(self.ctx.q[0] as f64, scale, self.cfg.log_message_ratio)
    }
}

/// The integer 2^b (b ≥ 0) a CoeffToSlot factor's input is multiplied by (exact, no level)
/// so that its input scale is ≈ sqrt(out·q_l·2^10), with `budget` = out·q_l = input scale ×
/// diagonal scale. Two errors share that budget: the key-switching noise of the baby
/// rotations (~2^17 per slot at N = 2^16, relative to the input scale) and the rounding of the
/// diagonals (~2^6 per slot, relative to their scale). Without it the rotations ran at the
/// scale 2^57..2^60 the ciphertext happened to have while the diagonals were encoded at
/// 2^60..2^63: the noise counted ~2^10 more than the rounding, and 2π·K amplifies both.
fn cts_boost(in_scale: f64, budget: f64) -> u64 {
    let target = (budget.log2() + 10.0) / 2.0;
    let b = (target - in_scale.log2()).round();
    if b >= 1.0 {
        (b.min(40.0)).exp2() as u64
    } else {
        1
    }
}

/// The power of two 2^k (k ≥ 0) that brings `scale` up to at most q_0/2^ratio.
fn prescale(q0: f64, scale: f64, ratio: u32) -> f64 {
    let k = (q0 / scale).log2().floor() - f64::from(ratio);
    if k >= 1.0 { k.min(62.0).exp2() } else { 1.0 }
}

/// The first SlotToCoeff factor for packed complex slots: its input y (period 2n) holds
/// Re w in the lower and Im w in the upper half of each 2n block, and the factor must act
/// on w[s] = y[s] + i·y[s + n] (s in a lower half) = y[s − n] + i·y[s] (upper half).
fn expand_packed(d: &Diags, n: usize, slots: usize) -> Diags {
    let mut out = Diags::new();
    let p = 2 * n;
    let i = C64::new(0.0, 1.0);
    for (&k, dk) in d {
        let (k0, k1) = (norm(k, p), norm(k + n as i64, p));
        for t in 0..slots {
            let s = (t as i64 + k).rem_euclid(p as i64) as usize;
            let (c0, c1) = if s < n {
                (dk[t], i * dk[t])
            } else {
                (i * dk[t], dk[t])
            };
            for (kk, c) in [(k0, c0), (k1, c1)] {
                let e = out.entry(kk).or_insert_with(|| vec![C64::default(); slots]);
                e[t] = e[t] + c;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ckks::{Decryptor, Encryptor};

    /// Both DFT paths (diagonals over Q·P with one division by P per factor, and modulo Q
    /// with a division per rotation) bootstrap to the same precision, the extended one with
    /// far fewer divisions by P in CoeffToSlot.
    #[test]
    fn double_hoisting_matches_the_plain_dft_path() {
        let chain = BootChain::insecure_test(13);
        let ctx = Context::new(chain.spec()).unwrap();
        let n = 512;
        let mut kg = KeyGenerator::new_sparse_seeded(&ctx, 192, 5).unwrap();
        let pk = kg.public_key();
        let dec = Decryptor::new(&ctx, kg.secret_key()).unwrap();
        let mut enc = Encryptor::new_seeded(&ctx, 6);
        let full = ctx.slots();
        let z: Vec<C64> = (0..full)
            .map(|t| C64::real(((t % n) as f64 * 0.37).sin()))
            .collect();
        let ct = enc
            .encrypt(&pk, &ctx.encode(&z, 0, ctx.scale_at(0)).unwrap())
            .unwrap();
        let mut mod_downs = Vec::new();
        for dh in [true, false] {
            let mut cfg = chain.config(n, SlotKind::Real, 192);
            cfg.double_hoisting = dh;
            let bt = Bootstrapper::new(&ctx, cfg).unwrap();
            let ev = Evaluator::new(&ctx, bt.generate_keys(&mut kg)).unwrap();
            let (out, st) = bt.bootstrap_timed(&ev, &ct).unwrap();
            assert_eq!(out.level, bt.levels_after());
            let got = dec.decrypt_decode(&out).unwrap();
            let err = got
                .iter()
                .zip(&z)
                .map(|(g, w)| (*g - *w).abs())
                .fold(0.0, f64::max);
            assert!(
                -err.log2() > 20.0,
                "double hoisting {dh}: {:.1} bits",
                -err.log2()
            );
            mod_downs.push(st.ops[2].mod_downs);
        }
        assert!(mod_downs[0] * 2 < mod_downs[1], "{mod_downs:?}");
    }
}
