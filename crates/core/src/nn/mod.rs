//! Neural-network blocks that several papers reuse, plus a finite-difference gradient checker
//! used by every layer's tests.

pub mod attention;
pub mod gradcheck;
pub mod mlp;
pub mod se;

pub use attention::{MultiHeadSelfAttention, MultiHeadSelfAttentionConfig};
pub use mlp::{Mlp, MlpConfig};
pub use se::{SqueezeExcitation, SqueezeExcitationConfig};

use burn::prelude::*;

/// Reads a float tensor back as a `Vec<f32>`, whatever its element type on the device.
pub fn to_vec_f32<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

/// Reads an int tensor back as a `Vec<i64>`.
pub fn to_vec_i64<const D: usize>(t: Tensor<D, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

/// A 1-D int tensor from indices.
pub fn int_tensor(values: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}

/// A float tensor of the given shape from row-major values.
pub fn float_tensor<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}
