//! The edge's teacher: the model that labels uploaded frames (ground truth never trains
//! anything). The paper's teacher is a large model on the edge; ours is a wider MLP (behind a
//! conv block with `edge.teacher_conv_channels`) trained on
//! renders of the pre-training images under every capture condition the edge knows of, which
//! reads each frame standardised (zero mean, unit spread over its pixels). Standardising
//! removes what a brightness or contrast change does to a frame before the network sees it;
//! the mobile model keeps the factory's plain input, so its drifts are unchanged.

use crate::model::{Mlp, TrainOpts, TrainStats, argmax};
use serde::{Deserialize, Serialize};

/// The labelling model of the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Teacher {
    /// The network.
    pub net: Mlp,
    /// Whether frames are standardised before the network.
    pub standardise: bool,
}

/// `x` shifted to zero mean and scaled to unit standard deviation (a flat frame to zeros).
pub fn standardised(x: &[f32]) -> Vec<f32> {
    let n = x.len().max(1) as f32;
    let m = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / n;
    let s = var.sqrt().max(1e-3);
    x.iter().map(|v| (v - m) / s).collect()
}

impl Teacher {
    /// A teacher around `net` (untrained or trained on inputs as `standardise` says).
    pub fn new(net: Mlp, standardise: bool) -> Teacher {
        Teacher { net, standardise }
    }

    fn prep(&self, x: &[f32]) -> Vec<f32> {
        if self.standardise {
            standardised(x)
        } else {
            x.to_vec()
        }
    }

    /// Trains on model inputs `xs` (as the mobile model sees them) and labels `ys`.
    pub fn train(&mut self, xs: &[Vec<f32>], ys: &[u8], opts: &TrainOpts) -> TrainStats {
        if self.standardise {
            let zs: Vec<Vec<f32>> = xs.iter().map(|x| standardised(x)).collect();
            self.net.train(&zs, ys, opts)
        } else {
            self.net.train(xs, ys, opts)
        }
    }

    /// Class probabilities of one model input.
    pub fn probs(&self, x: &[f32]) -> Vec<f32> {
        self.net.forward(&self.prep(x)).probs
    }

    /// The label it gives one model input.
    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.probs(x))
    }

    /// Fraction of `xs` it labels as `ys`.
    pub fn accuracy(&self, xs: &[Vec<f32>], ys: &[u8]) -> f64 {
        if xs.is_empty() {
            return 0.0;
        }
        let hit = xs
            .iter()
            .zip(ys)
            .filter(|(x, y)| self.predict(x) == **y as usize)
            .count();
        hit as f64 / xs.len() as f64
    }

    /// FLOPs of labelling one frame (the standardisation's few per pixel included).
    pub fn flops_forward(&self) -> f64 {
        self.net.flops_forward()
            + if self.standardise {
                4.0 * self.net.input() as f64
            } else {
                0.0
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standardising_undoes_brightness_and_contrast() {
        let x: Vec<f32> = (0..20).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect();
        let y: Vec<f32> = x.iter().map(|v| 0.45 * v - 0.25).collect();
        let (a, b) = (standardised(&x), standardised(&y));
        assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-4));
        let m = a.iter().sum::<f32>() / a.len() as f32;
        assert!(m.abs() < 1e-5);
        assert!(standardised(&[0.3; 5]).iter().all(|v| *v == 0.0));
    }
}
