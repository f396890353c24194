//! Typed errors of the CKKS scheme. Parameter errors (found before any work starts) are
//! separate from errors raised by operations on keys, plaintexts and ciphertexts.

use thiserror::Error;

/// Everything that can go wrong in `ferrolab-fhe`.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum FheError {
    /// The parameters are malformed (ring degree, prime sizes, scale, ...).
    #[error("invalid CKKS parameters: {0}")]
    InvalidParams(String),
    /// The parameters are below 128-bit security per the Homomorphic Encryption Standard.
    #[error(
        "insecure CKKS parameters: log2(QP) = {log_qp} bits exceeds the HE-standard 128-bit limit of {limit} bits for N = {n} (ternary secret); use fewer/smaller primes, a larger N, or opt in with allow_insecure"
    )]
    Insecure {
        /// Ring degree.
        n: usize,
        /// Total modulus bits of the chain including special primes.
        log_qp: u32,
        /// Maximum log2(QP) of the HE standard's table for `n`.
        limit: u32,
    },
    /// Bootstrapping parameters (sparse secret) beyond their documented 128-bit bound.
    #[error(
        "insecure bootstrapping parameters: log2(QP) = {log_qp} bits exceeds {limit} bits, the 128-bit bound documented for a sparse ternary secret of Hamming weight {h} at N = {n} (Lee et al. 2022, HEaaN FGb); use fewer/smaller primes or opt in with allow_insecure"
    )]
    InsecureSparse {
        /// Ring degree.
        n: usize,
        /// Secret Hamming weight.
        h: usize,
        /// Total modulus bits including special primes.
        log_qp: u32,
        /// The documented bound.
        limit: u32,
    },
    /// No NTT-friendly prime of the requested size exists (or not enough distinct ones).
    #[error("cannot find {count} distinct NTT-friendly primes of {bits} bits for N = {n}")]
    NoPrimes {
        /// Prime size requested.
        bits: u32,
        /// How many were needed.
        count: usize,
        /// Ring degree.
        n: usize,
    },
    /// Two operands (or an operand and a key) come from different parameter sets.
    #[error("parameter mismatch: {0}")]
    ParamsMismatch(String),
    /// An operand is at a level the operation cannot use.
    #[error("level error: {0}")]
    Level(String),
    /// The scales of two operands differ (add/sub need equal scales).
    #[error(
        "scale mismatch: {a} vs {b} (relative difference {rel:.3e}); bring both to the same level of the scale ladder first"
    )]
    ScaleMismatch {
        /// Scale of the first operand.
        a: f64,
        /// Scale of the second operand.
        b: f64,
        /// |a - b| / max(a, b).
        rel: f64,
    },
    /// A value times the scale does not fit the modulus (or 2^62) at this level.
    #[error("scale overflow: {0}")]
    ScaleOverflow(String),
    /// A rotation (or conjugation) needs a Galois key that was not generated.
    #[error(
        "missing Galois key for {what} (Galois element {galois_element}); generate it with KeyGenerator::galois_keys"
    )]
    MissingGaloisKey {
        /// The rotation step or "conjugation".
        what: String,
        /// The Galois element 5^k mod 2N (or 2N - 1).
        galois_element: usize,
    },
    /// Relinearisation was asked for but no relinearisation key was supplied.
    #[error("missing relinearisation key")]
    MissingRelinKey,
    /// An operation needs a ciphertext of a given size (degree).
    #[error("ciphertext size error: {0}")]
    CiphertextSize(String),
    /// Input values are malformed (wrong length, not finite, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A layer of a network needs more levels than a bootstrap leaves: the chain (the levels
    /// after bootstrapping) is too short for that network.
    #[error(
        "invalid CKKS parameters: {layer} needs {need} levels and a bootstrap leaves {have}: the chain is too short for this network"
    )]
    ChainTooShort {
        /// The layer that needs them.
        layer: String,
        /// Levels it needs.
        need: usize,
        /// Levels a bootstrap leaves.
        have: usize,
    },
    /// A serialised object is truncated, tampered with or of the wrong kind/version.
    #[error("cannot decode {what}: {reason}")]
    Decode {
        /// What was being read (e.g. "ciphertext").
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("i/o error on {path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// The OS error text.
        message: String,
    },
}

impl FheError {
    /// True for errors the user fixes by changing input (parameters, files, arguments).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            FheError::InvalidParams(_)
                | FheError::Insecure { .. }
                | FheError::InsecureSparse { .. }
                | FheError::NoPrimes { .. }
                | FheError::Decode { .. }
                | FheError::Io { .. }
                | FheError::InvalidInput(_)
                | FheError::ChainTooShort { .. }
        )
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, FheError>;

impl ferrolab_core::Classify for FheError {
    fn class(&self) -> ferrolab_core::ErrorClass {
        if self.is_usage() {
            ferrolab_core::ErrorClass::Usage
        } else {
            ferrolab_core::ErrorClass::Runtime
        }
    }
}
