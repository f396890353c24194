//! The small classifiers AdaEvo moves around: the mobile end's model (dense on the edge,
//! pruned + int8 on the device), and the edge's larger teacher. Each is fully connected, with
//! an optional convolutional first block (`ferrolab_vision::tiny::ConvPool`: k×k conv, ReLU,
//! 2×2 max-pool) in front (`mobile.conv_channels`, `edge.teacher_conv_channels`).
//!
//! Plain `f32` vectors rather than burn tensors: the experiment trains hundreds of tiny models
//! (tens of thousands of weights) one sample at a time on a simulated clock, where a tensor
//! runtime's per-op overhead would dominate, and every multiply-add is counted exactly for the
//! cost model (`flops_*`). Layers are `[out, in]` row-major, ReLU between layers, softmax at
//! the end; training is SGD with momentum on the cross-entropy.

use ferrolab_vision::tiny::ConvPool;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// A multi-layer perceptron `sizes[0] → … → sizes[L]`, optionally behind a convolutional block
/// (`stem`) whose output is the perceptron's input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mlp {
    /// Widths of the fully connected part, its input first (the stem's output length where
    /// there is a stem), classes last.
    pub sizes: Vec<usize>,
    /// Per layer `[out · in]`, row-major.
    pub weights: Vec<Vec<f32>>,
    /// Per layer `[out]`.
    pub biases: Vec<Vec<f32>>,
    /// Per layer: which weights are kept (pruning mask, `None` = dense). Training keeps masked
    /// weights at zero so a pruned model stays pruned.
    pub masks: Vec<Option<Vec<bool>>>,
    /// The convolutional first block, if any (its own pruning mask inside).
    #[serde(default)]
    pub stem: Option<ConvPool>,
}

/// Outputs of one forward pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// Class probabilities.
    pub probs: Vec<f32>,
    /// The last hidden layer's activations (the frame's feature vector).
    pub feature: Vec<f32>,
}

/// Optimiser settings for [`Mlp::train`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOpts {
    /// Passes over the data.
    pub epochs: usize,
    /// Step size.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
    /// Samples per step.
    pub batch: usize,
    /// Shuffle seed.
    pub seed: u64,
}

/// What a training call cost and allocated.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TrainStats {
    /// Floating-point operations (2 per multiply-add; backward = 2× forward).
    pub flops: f64,
    /// Bytes of the buffers training allocates (parameters, gradients, momentum, the data
    /// set, one batch's activations) by their sizes: the stand-in for the measured side of the
    /// profiler's memory check when the counting allocator is not installed.
    pub peak_bytes: u64,
}

impl Mlp {
    /// He-initialised network.
    pub fn new(sizes: &[usize], seed: u64) -> Mlp {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut weights = Vec::new();
        let mut biases = Vec::new();
        for w in sizes.windows(2) {
            let (i, o) = (w[0], w[1]);
            let scale = (2.0 / i as f32).sqrt();
            weights.push(
                (0..i * o)
                    .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * scale * 1.7)
                    .collect(),
            );
            biases.push(vec![0.0; o]);
        }
        let masks = vec![None; weights.len()];
        Mlp {
            sizes: sizes.to_vec(),
            weights,
            biases,
            masks,
            stem: None,
        }
    }

    /// A convolutional block on an `in_channels × side × side` input (`channels` filters of
    /// `kernel × kernel`, ReLU, 2×2 max-pool), then fully connected layers of the widths
    /// `hidden` (classes last).
    pub fn with_stem(
        in_channels: usize,
        side: usize,
        channels: usize,
        kernel: usize,
        hidden: &[usize],
        seed: u64,
    ) -> Mlp {
        let (stem, sizes) = Mlp::stem_shape(in_channels, side, channels, kernel, hidden, seed);
        let mut m = Mlp::new(&sizes, seed);
        m.stem = Some(stem);
        m
    }

    /// The conv block and the fully connected widths of [`with_stem`](Self::with_stem)
    /// without the perceptron's weights (the block's are few): what a memory estimate reads.
    pub fn stem_shape(
        in_channels: usize,
        side: usize,
        channels: usize,
        kernel: usize,
        hidden: &[usize],
        seed: u64,
    ) -> (ConvPool, Vec<usize>) {
        let stem = ConvPool::new(in_channels, side, channels, kernel, seed ^ 0x57E4);
        let mut sizes = vec![stem.output_len()];
        sizes.extend_from_slice(hidden);
        (stem, sizes)
    }

    /// Input width (the stem's input where there is one).
    pub fn input(&self) -> usize {
        match &self.stem {
            Some(s) => s.input_len(),
            None => self.sizes[0],
        }
    }

    /// Whether `o` has this model's architecture (widths and stem shape; weights aside).
    pub fn same_shape(&self, o: &Mlp) -> bool {
        self.sizes == o.sizes
            && match (&self.stem, &o.stem) {
                (None, None) => true,
                (Some(a), Some(b)) => a.same_shape(b),
                _ => false,
            }
    }

    /// The architecture in words, for error messages: `conv 8×3×3 on 14×14 → 392–32–10`.
    pub fn describe(&self) -> String {
        let fc = self
            .sizes
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("–");
        match &self.stem {
            Some(s) => format!(
                "conv {}×{}×{} on {}×{} → {fc}",
                s.out_channels, s.kernel, s.kernel, s.side, s.side
            ),
            None => fc,
        }
    }

    /// Classes.
    pub fn classes(&self) -> usize {
        *self.sizes.last().unwrap_or(&0)
    }

    /// Parameters (weights and biases).
    pub fn params(&self) -> usize {
        self.sizes
            .windows(2)
            .map(|w| w[0] * w[1] + w[1])
            .sum::<usize>()
            + self.stem.as_ref().map_or(0, ConvPool::params)
    }

    /// Multiply-adds of one forward pass (dense count: the cost model charges pruned weights
    /// too, as a dense kernel would).
    pub fn macs(&self) -> usize {
        self.sizes.windows(2).map(|w| w[0] * w[1]).sum::<usize>()
            + self.stem.as_ref().map_or(0, ConvPool::macs)
    }

    /// FLOPs of one forward pass.
    pub fn flops_forward(&self) -> f64 {
        2.0 * self.macs() as f64
    }

    /// FLOPs of one training sample (forward + backward ≈ 3× forward). A conv stem is charged
    /// the same 3×, although its backward pass forms no input gradient (≈ 2× would do): the
    /// cost model errs towards slower CNN tasks on the simulated clock.
    pub fn flops_train_sample(&self) -> f64 {
        3.0 * self.flops_forward()
    }

    /// Activations of every layer, input included (the last is the raw output, before softmax).
    pub(crate) fn activations(&self, x: &[f32]) -> Vec<Vec<f32>> {
        let first = match &self.stem {
            Some(s) => s.forward(x),
            None => x.to_vec(),
        };
        self.activations_from(first)
    }

    /// [`activations`](Self::activations) of the fully connected part from its input.
    fn activations_from(&self, first: Vec<f32>) -> Vec<Vec<f32>> {
        let mut acts = vec![first];
        let n = self.weights.len();
        for l in 0..n {
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            let a = &acts[l];
            let w = &self.weights[l];
            let mut z = self.biases[l].clone();
            for (r, zr) in z.iter_mut().enumerate().take(o) {
                let row = &w[r * i..(r + 1) * i];
                *zr += dot(row, a);
            }
            if l + 1 < n {
                for v in z.iter_mut() {
                    *v = v.max(0.0);
                }
            }
            acts.push(z);
        }
        acts
    }

    /// Forward pass of one input.
    pub fn forward(&self, x: &[f32]) -> Forward {
        let mut acts = self.activations(x);
        let logits = acts.pop().unwrap_or_default();
        let feature = acts.pop().unwrap_or_default();
        Forward {
            probs: softmax(&logits),
            feature,
        }
    }

    /// The raw outputs (logits) of one input: the detection head reads class logits and box
    /// offsets from one output vector.
    pub fn outputs(&self, x: &[f32]) -> Vec<f32> {
        self.activations(x).pop().unwrap_or_default()
    }

    /// The arg-max class of `x`.
    pub fn predict(&self, x: &[f32]) -> usize {
        argmax(&self.forward(x).probs)
    }

    /// Fraction of `xs` classified as `ys`.
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

    /// Trains on `(xs, ys)` with mini-batch SGD + momentum and softmax cross-entropy; masked
    /// weights stay zero.
    pub fn train(&mut self, xs: &[Vec<f32>], ys: &[u8], opts: &TrainOpts) -> TrainStats {
        self.train_with(
            xs,
            |s, out| {
                let mut delta = softmax(out);
                let y = ys[s] as usize;
                if y < delta.len() {
                    delta[y] -= 1.0;
                }
                delta
            },
            opts,
        )
    }

    /// Mini-batch SGD + momentum on `xs` with the output-layer error `delta(i, outputs)` of
    /// sample `i` (the gradient of its loss with respect to the raw outputs); masked weights stay
    /// zero. [`Mlp::train`] is this with softmax cross-entropy; the detection task's detector
    /// (class + box) and IoU regressor (sigmoid) pass their own losses.
    pub fn train_with<F>(&mut self, xs: &[Vec<f32>], delta_of: F, opts: &TrainOpts) -> TrainStats
    where
        F: Fn(usize, &[f32]) -> Vec<f32>,
    {
        let n = xs.len();
        if n == 0 || opts.epochs == 0 {
            return TrainStats::default();
        }
        let mut rng = StdRng::seed_from_u64(opts.seed);
        let mut vel_w: Vec<Vec<f32>> = self.weights.iter().map(|w| vec![0.0; w.len()]).collect();
        let mut vel_b: Vec<Vec<f32>> = self.biases.iter().map(|b| vec![0.0; b.len()]).collect();
        let mut grad_w: Vec<Vec<f32>> = vel_w.clone();
        let mut grad_b: Vec<Vec<f32>> = vel_b.clone();
        let stem_len = self
            .stem
            .as_ref()
            .map_or((0, 0), |s| (s.weight.len(), s.bias.len()));
        let mut vel_sw = vec![0f32; stem_len.0];
        let mut vel_sb = vec![0f32; stem_len.1];
        let mut grad_sw = vec![0f32; stem_len.0];
        let mut grad_sb = vec![0f32; stem_len.1];
        let mut order: Vec<usize> = (0..n).collect();
        let batch = opts.batch.max(1);
        let act_floats: usize = self.sizes.iter().sum::<usize>() * 2;
        // The stem's maps exist for one sample at a time (see `profiler::model_memory_bytes`).
        let stem_floats = self
            .stem
            .as_ref()
            .map_or(0, |s| s.conv_len() + 2 * s.output_len());
        let p = self.params() as u64;
        let data_bytes: u64 = xs.iter().map(|x| x.len() as u64 * 4 + 1).sum();
        let peak = 4 * p * 3 + data_bytes + (batch * act_floats + stem_floats) as u64 * 4;
        let nl = self.weights.len();
        for _ in 0..opts.epochs {
            shuffle(&mut order, &mut rng);
            for chunk in order.chunks(batch) {
                grad_w
                    .iter_mut()
                    .for_each(|g| g.iter_mut().for_each(|v| *v = 0.0));
                grad_b
                    .iter_mut()
                    .for_each(|g| g.iter_mut().for_each(|v| *v = 0.0));
                grad_sw.iter_mut().for_each(|v| *v = 0.0);
                grad_sb.iter_mut().for_each(|v| *v = 0.0);
                for &s in chunk {
                    let (acts, cache) = match &self.stem {
                        Some(st) => {
                            let (o, c) = st.forward_cached(&xs[s]);
                            (self.activations_from(o), Some(c))
                        }
                        None => (self.activations(&xs[s]), None),
                    };
                    let mut delta = delta_of(s, &acts[nl]);
                    for l in (0..nl).rev() {
                        let (i, o) = (self.sizes[l], self.sizes[l + 1]);
                        let a = &acts[l];
                        for r in 0..o {
                            let d = delta[r];
                            grad_b[l][r] += d;
                            if d != 0.0 {
                                let g = &mut grad_w[l][r * i..(r + 1) * i];
                                for (gv, av) in g.iter_mut().zip(a) {
                                    *gv += d * av;
                                }
                            }
                        }
                        if l > 0 || cache.is_some() {
                            let w = &self.weights[l];
                            let mut prev = vec![0.0f32; i];
                            for (r, &d) in delta.iter().enumerate().take(o) {
                                if d != 0.0 {
                                    let row = &w[r * i..(r + 1) * i];
                                    for (pv, wv) in prev.iter_mut().zip(row) {
                                        *pv += d * wv;
                                    }
                                }
                            }
                            for (pv, av) in prev.iter_mut().zip(a) {
                                if *av <= 0.0 {
                                    *pv = 0.0;
                                }
                            }
                            delta = prev;
                        }
                    }
                    if let (Some(st), Some(c)) = (&self.stem, &cache) {
                        st.accumulate_grad(&xs[s], c, &delta, &mut grad_sw, &mut grad_sb);
                    }
                }
                let scale = opts.lr / chunk.len() as f32;
                for l in 0..nl {
                    for ((w, v), g) in self.weights[l]
                        .iter_mut()
                        .zip(vel_w[l].iter_mut())
                        .zip(&grad_w[l])
                    {
                        *v = opts.momentum * *v - scale * g;
                        *w += *v;
                    }
                    for ((b, v), g) in self.biases[l]
                        .iter_mut()
                        .zip(vel_b[l].iter_mut())
                        .zip(&grad_b[l])
                    {
                        *v = opts.momentum * *v - scale * g;
                        *b += *v;
                    }
                    if let Some(mask) = &self.masks[l] {
                        for (w, keep) in self.weights[l].iter_mut().zip(mask) {
                            if !keep {
                                *w = 0.0;
                            }
                        }
                    }
                }
                if let Some(st) = &mut self.stem {
                    for ((w, v), g) in st.weight.iter_mut().zip(&mut vel_sw).zip(&grad_sw) {
                        *v = opts.momentum * *v - scale * g;
                        *w += *v;
                    }
                    for ((b, v), g) in st.bias.iter_mut().zip(&mut vel_sb).zip(&grad_sb) {
                        *v = opts.momentum * *v - scale * g;
                        *b += *v;
                    }
                    st.apply_mask();
                }
            }
        }
        TrainStats {
            flops: self.flops_train_sample() * (n * opts.epochs) as f64,
            peak_bytes: peak,
        }
    }

    /// Fraction of weights that are exactly zero.
    pub fn sparsity(&self) -> f64 {
        let stem = self.stem.as_ref().map(|s| &s.weight);
        let total: usize = self.weights.iter().chain(stem).map(Vec::len).sum();
        let zeros: usize = self
            .weights
            .iter()
            .chain(stem)
            .map(|w| w.iter().filter(|v| **v == 0.0).count())
            .sum();
        zeros as f64 / total.max(1) as f64
    }
}

/// `Σ a_i b_i`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four partial sums let the compiler vectorise without reassociating a single chain.
    let mut s = [0f32; 4];
    let chunks = a.len() / 4;
    for k in 0..chunks {
        for j in 0..4 {
            s[j] += a[4 * k + j] * b[4 * k + j];
        }
    }
    let mut t = s[0] + s[1] + s[2] + s[3];
    for k in chunks * 4..a.len().min(b.len()) {
        t += a[k] * b[k];
    }
    t
}

/// Numerically stable softmax.
pub fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f32> = z.iter().map(|v| (v - m).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s.max(f32::MIN_POSITIVE)).collect()
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Fisher–Yates shuffle.
pub fn shuffle(v: &mut [usize], rng: &mut StdRng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i);
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let mut m = Mlp::new(&[3, 4, 2], 1);
        let x = vec![vec![0.3f32, -0.7, 1.1]];
        let y = vec![1u8];
        let loss = |m: &Mlp| -> f32 { -m.forward(&x[0]).probs[1].ln() };
        let w0 = m.weights[0][5];
        let h = 1e-3;
        m.weights[0][5] = w0 + h;
        let lp = loss(&m);
        m.weights[0][5] = w0 - h;
        let lm = loss(&m);
        m.weights[0][5] = w0;
        let numeric = (lp - lm) / (2.0 * h);
        let mut t = m.clone();
        t.train(
            &x,
            &y,
            &TrainOpts {
                epochs: 1,
                lr: 1.0,
                momentum: 0.0,
                batch: 1,
                seed: 0,
            },
        );
        let analytic = w0 - t.weights[0][5];
        assert!(
            (numeric - analytic).abs() < 1e-2 * numeric.abs().max(1e-2),
            "{numeric} vs {analytic}"
        );
    }

    /// One SGD step of a model with a conv stem moves a stem weight by −lr × its gradient from
    /// central differences of the cross-entropy, and the FC part's input is the stem's output.
    #[test]
    fn stem_gradient_matches_finite_differences() {
        let mut m = Mlp::with_stem(1, 6, 3, 3, &[5, 3], 2);
        assert_eq!(m.sizes, vec![27, 5, 3]);
        assert_eq!(m.input(), 36);
        assert!(m.describe().starts_with("conv 3×3×3 on 6×6"));
        let x: Vec<f32> = (0..36).map(|i| ((i * 7 % 13) as f32 / 6.5) - 1.0).collect();
        let xs = vec![x];
        let y = vec![2u8];
        let loss = |m: &Mlp| -> f64 { -(m.forward(&xs[0]).probs[2] as f64).ln() };
        let opts = TrainOpts {
            epochs: 1,
            lr: 1.0,
            momentum: 0.0,
            batch: 1,
            seed: 0,
        };
        let mut moved = 0;
        for i in [0usize, 4, 9, 13, 22] {
            let stem = m.stem.as_ref().map(|s| s.weight[i]).unwrap_or_default();
            let h = 1e-3f32;
            let set = |m: &mut Mlp, v: f32| {
                if let Some(s) = m.stem.as_mut() {
                    s.weight[i] = v;
                }
            };
            set(&mut m, stem + h);
            let lp = loss(&m);
            set(&mut m, stem - h);
            let lm = loss(&m);
            set(&mut m, stem);
            let numeric = (lp - lm) / (2.0 * h as f64);
            let mut t = m.clone();
            t.train(&xs, &y, &opts);
            let analytic = (stem - t.stem.as_ref().map(|s| s.weight[i]).unwrap_or_default()) as f64;
            assert!(
                (numeric - analytic).abs() < 2e-2 * numeric.abs().max(1e-2),
                "stem weight {i}: {numeric} vs {analytic}"
            );
            if analytic != 0.0 {
                moved += 1;
            }
        }
        assert!(moved >= 3, "only {moved} stem weights had a gradient");
        // Masked stem weights stay zero through training.
        if let Some(s) = m.stem.as_mut() {
            s.mask = Some((0..s.weight.len()).map(|i| i % 2 == 0).collect());
            s.apply_mask();
        }
        m.train(&xs, &y, &opts);
        let s = m
            .stem
            .as_ref()
            .map(|s| s.weight.clone())
            .unwrap_or_default();
        assert!(s.iter().skip(1).step_by(2).all(|w| *w == 0.0));
        assert!(s.iter().step_by(2).any(|w| *w != 0.0));
    }

    #[test]
    fn learns_a_separable_problem_and_masks_hold() {
        let mut m = Mlp::new(&[2, 8, 2], 3);
        m.masks[0] = Some((0..16).map(|i| i % 2 == 0).collect());
        for (w, k) in m.weights[0].iter_mut().zip(0..) {
            if k % 2 == 1 {
                *w = 0.0;
            }
        }
        let xs: Vec<Vec<f32>> = (0..200)
            .map(|i| {
                let s = if i % 2 == 0 { 1.0 } else { -1.0 };
                vec![s + 0.1 * ((i * 7 % 11) as f32 / 11.0), 0.2]
            })
            .collect();
        let ys: Vec<u8> = (0..200).map(|i| (i % 2) as u8).collect();
        m.train(
            &xs,
            &ys,
            &TrainOpts {
                epochs: 5,
                lr: 0.1,
                momentum: 0.9,
                batch: 8,
                seed: 0,
            },
        );
        assert!(m.accuracy(&xs, &ys) > 0.95);
        assert!(m.weights[0].iter().skip(1).step_by(2).all(|w| *w == 0.0));
    }
}
