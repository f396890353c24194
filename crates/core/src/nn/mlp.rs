//! Multi-layer perceptron: `Linear → ReLU → Dropout` repeated, then a final `Linear`.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Widths from input to output, e.g. `[784, 256, 10]` (at least two entries).
    pub dims: Vec<usize>,
    /// Dropout after each hidden activation.
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// A stack of fully connected layers with ReLU between them.
#[derive(Module, Debug)]
pub struct Mlp {
    layers: Vec<Linear>,
    dropout: Dropout,
}

impl MlpConfig {
    /// Builds the MLP on `device`.
    ///
    /// # Panics
    /// If `dims` has fewer than two entries (a programming error, not user input).
    pub fn init(&self, device: &Device) -> Mlp {
        assert!(
            self.dims.len() >= 2,
            "MlpConfig::dims needs input and output widths"
        );
        Mlp {
            layers: self
                .dims
                .windows(2)
                .map(|w| LinearConfig::new(w[0], w[1]).init(device))
                .collect(),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl Mlp {
    /// `[batch, dims[0]] → [batch, dims.last()]` (any leading dimensions work).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let last = self.layers.len() - 1;
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(h);
            if i < last {
                h = self.dropout.forward(relu(h));
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    // Tests that seed hold `exclusive_rng`: other tests draw from the same process-global generator.
    use crate::backend::{exclusive_rng, train_device};
    use crate::nn::gradcheck::check_input_gradient;

    #[test]
    fn shape() {
        let _rng = crate::backend::exclusive_rng();
        let dev = train_device();
        let m = MlpConfig::new(vec![5, 7, 3]).init(&dev);
        let y = m.forward(Tensor::<2>::zeros([4, 5], &dev));
        assert_eq!(y.dims(), [4, 3]);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let dev = train_device();
        let _rng = exclusive_rng();
        dev.seed(1);
        let m = MlpConfig::new(vec![4, 6, 3]).init(&dev);
        check_input_gradient(|x: Tensor<2>| m.forward(x), [3, 4], 11);
    }
}
