//! The multi-width "same" convolution kernel of Kim-CNN and SECNN lives in
//! [`ferrolab_core::kernels::conv1d`] with its burn-op reference and tests; this path is kept
//! for existing callers.

pub use ferrolab_core::kernels::conv1d::{
    ConvGrads, ConvShape, NONE, backward, forward, reference,
};
