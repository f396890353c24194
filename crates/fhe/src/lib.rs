//! # ferrolab-fhe
//!
//! Leveled RNS-CKKS (Cheon, Kim, Kim, Song 2017; the full-RNS variant of Cheon, Han, Kim, Kim,
//! Song 2018) with hybrid key switching (Han & Ki 2020), written from the papers.

#![allow(clippy::needless_range_loop)]

pub mod arith;
pub mod bench;
pub mod bootstrap;
pub mod ckks;
pub mod complex;
pub mod encoder;
pub mod error;
pub mod eval;
pub mod hyphen;
pub mod keyswitch;
pub mod linear;
pub mod minimax;
pub mod ntt;
pub mod params;
pub mod polyeval;
mod scratch;
pub mod serial;
pub mod system;

pub use bootstrap::{BootChain, BootstrapConfig, Bootstrapper, SlotKind};
pub use ckks::{
    Ciphertext, Decryptor, Encryptor, EvaluationKeys, GaloisKeys, KeyGenerator, Plaintext,
    PublicKey, RelinKey, SecretKey, SwitchingKey,
};
pub use complex::C64;
pub use error::{FheError, Result};
pub use eval::Evaluator;
pub use linear::LinearTransform;
pub use params::{Context, ParamSpec};
pub use polyeval::{Chebyshev, relu_approx};
pub use system::{CkksConfig, CkksSystem};
