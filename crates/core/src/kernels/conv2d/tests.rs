//! The extension against burn's own `conv2d` and its autodiff: forward and the gradients of
//! input, weight and bias, on shapes that reach every CPU path (general, 1x1, depthwise,
//! groups, several im2col tiles, batch 1, odd sizes, strides 1 and 2).

use super::*;
use crate::backend::{device, train_device};
use crate::kernels::hash::splitmix64;
use crate::nn::{float_tensor, to_vec_f32};
use burn::backend::ops::ModuleOps;
use burn::tensor::module;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| (splitmix64(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

/// Every element within 1e-4 of the reference, relative to the element or, where sums
/// cancel, to the reference's root-mean-square.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let rms =
        (want.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / want.len().max(1) as f64).sqrt();
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * (f64::from(w.abs()) + rms).max(1e-6);
        assert!(
            f64::from((g - w).abs()) <= tol,
            "{what}[{k}]: {g} vs {w} (rms {rms})"
        );
    }
}

struct Case {
    x: [usize; 4],
    w: [usize; 4],
    bias: bool,
    spec: Conv2dSpec,
}

fn case(x: [usize; 4], w: [usize; 4], bias: bool, spec: Conv2dSpec) -> Case {
    Case { x, w, bias, spec }
}

/// Forward and all three gradients of `L = Σ conv(x, w, b) ⊙ r`, ours and burn's.
fn check(c: &Case, seed: u64) {
    let dev = train_device();
    let numel = |s: &[usize]| s.iter().product::<usize>();
    let xv = values(numel(&c.x), seed);
    let wv = values(numel(&c.w), seed + 1);
    let bv = values(c.w[0], seed + 2);
    let g = geometry(c.x, c.w, c.bias.then_some(c.w[0]), c.spec).unwrap();
    let y_shape = [g.n, g.f, g.oh, g.ow];
    let r = float_tensor(values(numel(&y_shape), seed + 3), y_shape, &dev);
    let run = |ours: bool| {
        let x = float_tensor(xv.clone(), c.x, &dev).require_grad();
        let w = float_tensor(wv.clone(), c.w, &dev).require_grad();
        let b = c
            .bias
            .then(|| float_tensor(bv.clone(), [c.w[0]], &dev).require_grad());
        let y = if ours {
            conv2d(x.clone(), w.clone(), b.clone(), c.spec)
        } else {
            module::conv2d(x.clone(), w.clone(), b.clone(), c.spec.options())
        };
        assert_eq!(y.dims(), y_shape);
        let grads = (y.clone() * r.clone()).sum().backward();
        let dx = to_vec_f32(x.grad(&grads).unwrap());
        let dw = to_vec_f32(w.grad(&grads).unwrap());
        let db = b.map(|b| to_vec_f32(b.grad(&grads).unwrap()));
        (to_vec_f32(y), dx, dw, db)
    };
    let (y, dx, dw, db) = run(true);
    let (ry, rdx, rdw, rdb) = run(false);
    let what = |t: &str| format!("{t} for x {:?} w {:?} {:?}", c.x, c.w, c.spec);
    assert_close(&what("y"), &y, &ry);
    assert_close(&what("dx"), &dx, &rdx);
    assert_close(&what("dw"), &dw, &rdw);
    if let (Some(db), Some(rdb)) = (db, rdb) {
        assert_close(&what("db"), &db, &rdb);
    }
    // The inference device (no autodiff) takes the same kernel.
    let x = float_tensor(xv, c.x, &device());
    let w = float_tensor(wv, c.w, &device());
    let b = c.bias.then(|| float_tensor(bv, [c.w[0]], &device()));
    assert_close(
        &what("inference y"),
        &to_vec_f32(conv2d(x, w, b, c.spec)),
        &ry,
    );
}

#[test]
fn general_3x3_matches_burn_on_odd_sizes_batch_one_and_stride_two() {
    let s1 = Conv2dSpec::new(1, 1);
    let s2 = Conv2dSpec::new(2, 1);
    check(&case([2, 3, 7, 9], [4, 3, 3, 3], true, s1), 1);
    check(&case([1, 3, 7, 9], [5, 3, 3, 3], true, s1), 2);
    check(&case([1, 3, 7, 9], [5, 3, 3, 3], true, s2), 3);
    check(&case([3, 2, 8, 8], [4, 2, 3, 3], false, s2), 4);
    check(&case([9, 1, 5, 4], [3, 1, 3, 3], true, s1), 5);
}

#[test]
fn other_kernels_strides_and_paddings_match_burn() {
    check(
        &case([2, 3, 9, 7], [2, 3, 5, 5], true, Conv2dSpec::new(1, 2)),
        10,
    );
    check(
        &case([2, 3, 9, 7], [4, 3, 3, 3], false, Conv2dSpec::new(1, 0)),
        11,
    );
    let odd = Conv2dSpec {
        stride: [1, 2],
        padding: [0, 1],
        groups: 1,
    };
    check(&case([2, 2, 7, 9], [3, 2, 2, 3], true, odd), 12);
    check(
        &case([2, 2, 7, 9], [3, 2, 3, 3], true, Conv2dSpec::new(3, 1)),
        13,
    );
    // Column stride 2 with an even padding and with none (the split into even and odd
    // columns places the input differently for each parity of the padding).
    check(
        &case([2, 3, 9, 7], [2, 3, 5, 5], true, Conv2dSpec::new(2, 2)),
        14,
    );
    check(
        &case([1, 2, 8, 7], [3, 2, 3, 3], false, Conv2dSpec::new(2, 0)),
        15,
    );
}

#[test]
fn several_im2col_tiles_per_sample_match_burn() {
    // 32 channels x 9 taps x 70 columns: 13 output rows per tile, four tiles per sample.
    check(
        &case([2, 32, 40, 70], [4, 32, 3, 3], true, Conv2dSpec::new(1, 1)),
        20,
    );
    check(
        &case([1, 32, 40, 70], [4, 32, 3, 3], false, Conv2dSpec::new(2, 1)),
        21,
    );
    // A 1x1 convolution over a 64 x 4480 plane: two row tiles read in place.
    check(
        &case([2, 64, 64, 70], [3, 64, 1, 1], true, Conv2dSpec::new(1, 0)),
        22,
    );
    // Several whole samples per GEMM, and a chunk that ends inside a block.
    check(
        &case([37, 3, 6, 5], [4, 3, 3, 3], true, Conv2dSpec::new(1, 1)),
        23,
    );
    check(
        &case([37, 4, 6, 5], [6, 4, 1, 1], true, Conv2dSpec::new(1, 0)),
        24,
    );
    // 11 channels (one block of eight and three left) over rows of 13 pixels (one tile of
    // eight and five left): both paths of the channels-last copy of the weight gradient.
    check(
        &case([3, 11, 6, 13], [5, 11, 3, 3], true, Conv2dSpec::new(1, 1)),
        25,
    );
    check(
        &case([2, 16, 9, 8], [7, 16, 3, 3], false, Conv2dSpec::new(2, 1)),
        26,
    );
}

#[test]
fn im2col_free_same_convolutions_match_burn() {
    // Planes of >= 1024 padded positions with >= 16 channels each way take the shifted-plane
    // path: the forward pass with <= 16 output channels (cases 31, 33, 34), the input
    // gradient with <= 16 input channels or >= 4096 positions (30, 32, 34); odd sizes, batch
    // 1, 5x5 kernels, with and without bias.
    check(
        &case([1, 16, 33, 31], [17, 16, 3, 3], true, Conv2dSpec::new(1, 1)),
        30,
    );
    check(
        &case(
            [3, 18, 32, 32],
            [16, 18, 3, 3],
            false,
            Conv2dSpec::new(1, 1),
        ),
        31,
    );
    check(
        &case([2, 16, 29, 35], [20, 16, 5, 5], true, Conv2dSpec::new(1, 2)),
        32,
    );
    check(
        &case([1, 20, 30, 33], [16, 20, 5, 5], true, Conv2dSpec::new(1, 2)),
        33,
    );
    check(
        &case(
            [2, 24, 64, 65],
            [16, 24, 3, 3],
            false,
            Conv2dSpec::new(1, 1),
        ),
        34,
    );
}

#[test]
fn winograd_convolutions_match_burn() {
    // 3x3, stride 1, padding 1 with >= 32 channels each way: F(2x2, 3x3) for the weight
    // gradient from 128 tiles over the batch (every case), and for the forward pass and input
    // gradient from 512 (cases 60, 61, 62, 63). Odd heights and widths (partial tiles at the
    // bottom and right), batch 1, many small samples per block (62), tile-row bands of one
    // large plane (63), C != F both ways, a 1x1 plane (65), with and without bias.
    let s = Conv2dSpec::new(1, 1);
    check(&case([8, 32, 15, 17], [32, 32, 3, 3], true, s), 60);
    check(&case([1, 40, 47, 45], [32, 40, 3, 3], false, s), 61);
    check(&case([45, 32, 5, 7], [36, 32, 3, 3], true, s), 62);
    check(&case([1, 32, 70, 67], [48, 32, 3, 3], true, s), 63);
    check(&case([8, 32, 8, 8], [64, 32, 3, 3], false, s), 64);
    check(&case([130, 33, 1, 1], [32, 33, 3, 3], true, s), 65);
}

#[test]
fn batch_inner_convolutions_match_burn() {
    // Stride-1 "same" layers with >= 64 channels each way on planes of <= 256 positions take
    // the batch-inner path (fewer than 512 Winograd tiles over the batch for the forward pass
    // and the input gradient; the weight gradient from fewer than 128): odd planes, batch 1,
    // a 1x1 plane (centre tap only), a 5x5 kernel, output channels that split unevenly over
    // the pool's parts, with and without bias.
    let s = Conv2dSpec::new(1, 1);
    check(&case([16, 64, 4, 4], [96, 64, 3, 3], true, s), 70);
    check(&case([3, 72, 5, 7], [80, 72, 3, 3], false, s), 71);
    check(&case([1, 64, 1, 1], [65, 64, 3, 3], true, s), 72);
    check(
        &case([2, 64, 6, 5], [70, 64, 5, 5], true, Conv2dSpec::new(1, 2)),
        73,
    );
    check(&case([1, 96, 9, 3], [64, 96, 3, 3], false, s), 74);
    check(&case([4, 64, 8, 8], [64, 64, 3, 3], true, s), 75);
}

#[test]
fn pointwise_convolutions_match_burn() {
    check(
        &case([3, 4, 8, 8], [6, 4, 1, 1], true, Conv2dSpec::new(1, 0)),
        30,
    );
    check(
        &case([1, 4, 7, 9], [6, 4, 1, 1], false, Conv2dSpec::new(1, 0)),
        31,
    );
    check(
        &case([2, 4, 7, 9], [6, 4, 1, 1], true, Conv2dSpec::new(2, 0)),
        32,
    );
    check(
        &case([2, 4, 5, 5], [6, 4, 1, 1], true, Conv2dSpec::new(1, 1)),
        33,
    );
}

#[test]
fn depthwise_convolutions_match_burn() {
    let dw = |s: usize, p: usize| Conv2dSpec::new(s, p).with_groups(5);
    check(&case([2, 5, 7, 9], [5, 1, 3, 3], true, dw(1, 1)), 40);
    check(&case([2, 5, 7, 9], [5, 1, 3, 3], false, dw(2, 1)), 41);
    check(&case([1, 5, 8, 6], [5, 1, 5, 5], true, dw(1, 2)), 42);
    check(&case([3, 5, 7, 9], [5, 1, 3, 3], true, dw(1, 0)), 43);
}

#[test]
fn grouped_convolutions_match_burn() {
    let g2 = |s: usize, p: usize| Conv2dSpec::new(s, p).with_groups(2);
    check(&case([2, 4, 7, 9], [6, 2, 3, 3], true, g2(1, 1)), 50);
    check(&case([1, 4, 7, 9], [6, 2, 3, 3], false, g2(2, 1)), 51);
    check(&case([2, 4, 7, 9], [6, 2, 1, 1], true, g2(1, 0)), 52);
    // Channel multiplier 2 (groups = C_in but C_out = 2 C_in): not the depthwise path.
    check(
        &case(
            [2, 3, 7, 9],
            [6, 1, 3, 3],
            true,
            Conv2dSpec::new(1, 1).with_groups(3),
        ),
        53,
    );
}

#[test]
fn finite_differences_agree_with_the_input_gradient() {
    let dev = train_device();
    let w = float_tensor(values(3 * 2 * 9, 60), [3, 2, 3, 3], &dev);
    let b = float_tensor(values(3, 61), [3], &dev);
    let spec = Conv2dSpec::new(2, 1);
    crate::nn::gradcheck::check_input_gradient(
        |x: Tensor<4>| conv2d(x, w.clone(), Some(b.clone()), spec),
        [1, 2, 5, 6],
        7,
    );
    let wd = float_tensor(values(2 * 9, 62), [2, 1, 3, 3], &dev);
    crate::nn::gradcheck::check_input_gradient(
        |x: Tensor<4>| conv2d(x, wd.clone(), None, Conv2dSpec::new(1, 1).with_groups(2)),
        [2, 2, 4, 5],
        8,
    );
}

#[test]
fn the_default_bodies_agree_with_the_flex_kernels() {
    // The default bodies are the GPU path: check them on Flex against the CPU kernels.
    let g = geometry(
        [2, 4, 7, 9],
        [6, 2, 3, 3],
        Some(6),
        Conv2dSpec::new(2, 1).with_groups(2),
    )
    .unwrap();
    let spec = Conv2dSpec::new(2, 1).with_groups(2);
    let t = |v: Vec<f32>, s: [usize; 4]| FlexTensor::from_data(TensorData::new(v, s));
    let x = t(values(2 * 4 * 63, 70), [2, 4, 7, 9]);
    let w = t(values(6 * 2 * 9, 71), [6, 2, 3, 3]);
    let dy = t(values(2 * 6 * g.oh * g.ow, 72), [2, 6, g.oh, g.ow]);
    let v = |t: FlexTensor| t.into_data().iter::<f32>().collect::<Vec<_>>();
    assert_close(
        "dx",
        &v(<Flex as Conv2dKernels>::conv2d_input_grad(
            x.clone(),
            w.clone(),
            dy.clone(),
            spec,
        )),
        &v(Flex::conv2d_x_backward(
            x.clone(),
            w.clone(),
            dy.clone(),
            spec.options(),
        )),
    );
    assert_close(
        "dw",
        &v(<Flex as Conv2dKernels>::conv2d_weight_grad(
            x.clone(),
            w.clone(),
            dy.clone(),
            spec,
        )),
        &v(Flex::conv2d_weight_backward(
            x,
            w,
            dy.clone(),
            spec.options(),
        )),
    );
    assert_close(
        "db",
        &v(<Flex as Conv2dKernels>::conv2d_bias_grad(dy.clone())),
        &v(reference_bias_grad::<Flex>(dy)),
    );
}

#[test]
fn mismatched_shapes_are_reported() {
    let s = Conv2dSpec::new(1, 1);
    assert!(geometry([1, 3, 5, 5], [4, 2, 3, 3], None, s).is_err());
    assert!(geometry([1, 4, 5, 5], [3, 2, 3, 3], None, s.with_groups(2)).is_err());
    assert!(geometry([1, 3, 5, 5], [4, 3, 3, 3], Some(5), s).is_err());
    assert!(geometry([1, 3, 1, 1], [4, 3, 5, 5], None, s).is_err());
    assert!(geometry([1, 3, 5, 5], [4, 3, 3, 3], None, Conv2dSpec::new(0, 1)).is_err());
    assert!(geometry([1, 3, 5, 5], [4, 3, 3, 3], None, s.with_groups(0)).is_err());
    let g = geometry([2, 3, 7, 9], [4, 3, 3, 3], Some(4), Conv2dSpec::new(2, 1)).unwrap();
    assert_eq!((g.oh, g.ow), (4, 5));
}

/// `conv2d_bias_relu` equals `relu(conv2d)` to the bit on every CPU path (Winograd,
/// shifted planes, im2col with stride 2 and with row tiles, 1x1, depthwise, batch-inner),
/// and on the training device (the composed path).
#[test]
fn fused_relu_equals_relu_of_the_convolution_on_every_path() {
    let cases = [
        case([2, 32, 32, 32], [32, 32, 3, 3], true, Conv2dSpec::new(1, 1)),
        case([3, 16, 32, 32], [16, 16, 3, 3], true, Conv2dSpec::new(1, 1)),
        case([3, 16, 17, 15], [32, 16, 3, 3], true, Conv2dSpec::new(2, 1)),
        case([1, 3, 130, 130], [8, 3, 3, 3], true, Conv2dSpec::new(1, 1)),
        case([2, 8, 9, 7], [12, 8, 1, 1], true, Conv2dSpec::new(1, 0)),
        case(
            [2, 6, 9, 8],
            [6, 1, 3, 3],
            true,
            Conv2dSpec::new(1, 1).with_groups(6),
        ),
        case([2, 64, 8, 8], [64, 64, 3, 3], true, Conv2dSpec::new(1, 1)),
    ];
    for (k, c) in cases.iter().enumerate() {
        for dev in [device(), train_device()] {
            let numel = |s: &[usize]| s.iter().product::<usize>();
            let x = float_tensor(values(numel(&c.x), 200 + k as u64), c.x, &dev);
            let w = float_tensor(values(numel(&c.w), 300 + k as u64), c.w, &dev);
            let b = float_tensor(values(c.w[0], 400 + k as u64), [c.w[0]], &dev);
            let want = to_vec_f32(crate::kernels::pointwise::relu(conv2d(
                x.clone(),
                w.clone(),
                Some(b.clone()),
                c.spec,
            )));
            let got = to_vec_f32(conv2d_bias_relu(x, w, b, c.spec));
            assert!(want.iter().any(|v| *v > 0.0) && want.contains(&0.0));
            assert_eq!(got, want, "case {k}");
        }
    }
}
