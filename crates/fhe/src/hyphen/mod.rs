//! HyPHEN-style encrypted CNN inference (Kim et al., IEEE Access 2024) on our CKKS, next to
//! its baseline, Lee et al.'s multiplexed parallel convolution (ICML 2022).
//!
//! The paper's text was not obtainable; the CAConv/RAConv layouts and the 2D gap packing
//! follow the reconstruction in `shared/papers/hyphen.md` §6 ([R]), not the paper's exact
//! algorithms. The baseline follows the public port of Lee et al.'s code (§3, [C]). See
//! `crates/fhe/HYPHEN.md`.
//!
//! * [`layout`]: CA / RA / MP slot layouts with k × k channel interleaving.
//! * [`conv`]: convolutions as rotations × weight plaintexts (CAConv, RAConv, strided with
//!   gap packing), the downsampling shortcut, pooling + FC.
//! * [`mpconv`]: the baseline's convolution with its exact rotation loop.
//! * [`act`]: HerPN (degree 2) and AppReLU ({15, 15, 27}).
//! * [`backend`]: the same code on simulated slot vectors or on ciphertexts, counted.
//! * [`net`]: ResNet-20 in both packings.
//! * [`train`]: the plaintext networks (HerPN or ReLU) trained with burn, folded.
//! * [`hcnn`]: `ferrolab hcnn keygen|encrypt|infer|decrypt`, the client/server split.
//! * [`system`]: `ferrolab hyphen`, both packings side by side, simulated and encrypted.

pub mod act;
pub mod backend;
pub mod conv;
pub mod hcnn;
pub mod layout;
pub mod mpconv;
pub mod net;
pub mod system;
pub mod train;
