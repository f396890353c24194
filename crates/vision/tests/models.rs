//! The model zoo through its public API, as the systems use it: each classifier learns a small
//! synthetic task in a few Adam steps; and (ignored by default) the time of one training step
//! and one inference pass at the benchmark's shapes, for quick profiling:
//! `cargo test --release -p ferrolab-vision --test models -- --ignored --nocapture`.

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use ferrolab_core::backend::{device, exclusive_rng, train_device};
use ferrolab_core::nn::to_vec_f32;
use ferrolab_vision::models::mobilenet::MobileNet;
use ferrolab_vision::models::resnet::ResNet;
use ferrolab_vision::models::unet::{UNet, UNetConfig};
use ferrolab_vision::models::vgg::Vgg;
use ferrolab_vision::models::yolo::{YoloConfig, YoloTarget, YoloTiny, nms};
use std::time::Instant;

/// 16 images of 12×12: class 1 has a bright square in the top-left quadrant, class 0 in the
/// bottom-right; labels alternate.
fn squares(dev: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let (n, s) = (16, 12);
    let mut v = vec![0f32; n * s * s];
    for i in 0..n {
        let off = if i % 2 == 1 { 1 } else { 6 };
        for y in off..off + 5 {
            for x in off..off + 5 {
                v[i * s * s + y * s + x] = 1.0;
            }
        }
    }
    let x = ferrolab_core::nn::float_tensor(v, [n, 1, s, s], dev)
        + Tensor::random([n, 1, s, s], Distribution::Normal(0.0, 0.1), dev);
    let y: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
    (x, ferrolab_core::nn::int_tensor(&y, dev))
}

/// Trains `model` with Adam on the squares for `steps` steps; returns the first and last loss.
fn fit<M>(model: M, forward: impl Fn(&M, Tensor<4>) -> Tensor<2>, steps: usize) -> (f32, f32)
where
    M: burn::module::Module + Clone,
{
    let dev = train_device();
    let (x, y) = squares(&dev);
    let ce = CrossEntropyLossConfig::new().init(&dev);
    let mut opt = AdamConfig::new().init();
    let mut model = model;
    let (mut first, mut last) = (f32::NAN, f32::NAN);
    for step in 0..steps {
        let loss = ce.forward(forward(&model, x.clone()), y.clone());
        last = to_vec_f32(loss.clone())[0];
        if step == 0 {
            first = last;
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = opt.step(1e-2, model, grads);
    }
    (first, last)
}

#[test]
fn classifiers_learn_a_small_task() {
    let _rng = exclusive_rng();
    let dev = train_device();
    dev.seed(1);
    let resnet = ResNet::new(8, 1, 2, &dev).expect("resnet-8");
    let (a, b) = fit(resnet, |m, x| m.forward(x), 15);
    assert!(b < 0.3 * a, "resnet {a} → {b}");
    let (a, b) = fit(Vgg::new(1, 2, &dev), |m, x| m.forward(x), 15);
    assert!(b < 0.3 * a, "vgg {a} → {b}");
    let (a, b) = fit(MobileNet::new(1, 2, &dev), |m, x| m.forward(x), 15);
    assert!(b < 0.3 * a, "mobilenet {a} → {b}");
}

/// Median of `reps` timings of `f`, in milliseconds, after one warm-up call.
fn time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[reps / 2]
}

#[test]
#[ignore = "timing, not a check: run by hand"]
fn step_times_at_benchmark_shapes() {
    let _rng = exclusive_rng();
    let dev = train_device();
    let inf = device();
    dev.seed(3);
    let threads = rayon::current_num_threads();

    let mut resnet = ResNet::new(20, 1, 10, &dev).expect("resnet-20");
    let x = Tensor::<4>::random([128, 1, 32, 32], Distribution::Default, &dev);
    let y = ferrolab_core::nn::int_tensor(&(0..128).map(|i| i % 10).collect::<Vec<_>>(), &dev);
    let ce = CrossEntropyLossConfig::new().init(&dev);
    let mut opt = AdamConfig::new().init();
    let train = time_ms(5, || {
        let loss = ce.forward(resnet.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &resnet);
        resnet = opt.step(1e-3, resnet.clone(), grads);
    });
    let eval = resnet.valid();
    let xi = Tensor::<4>::random([128, 1, 32, 32], Distribution::Default, &inf);
    let infer = time_ms(5, || {
        let _ = to_vec_f32(eval.forward(xi.clone()));
    });
    println!(
        "resnet-20 32x32x1 b128 ({threads} threads): train step {train:.1} ms, inference {infer:.1} ms"
    );

    let mut unet = UNet::new(&UNetConfig::default(), &dev).expect("unet");
    let x = Tensor::<4>::random([8, 1, 128, 128], Distribution::Default, &dev);
    let target = Tensor::<4>::random([8, 4, 128, 128], Distribution::Default, &dev);
    let mut opt = AdamConfig::new().init();
    let train = time_ms(3, || {
        let loss = (unet.forward(x.clone()) - target.clone()).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &unet);
        unet = opt.step(1e-3, unet.clone(), grads);
    });
    let eval = unet.valid();
    let xi = Tensor::<4>::random([8, 1, 128, 128], Distribution::Default, &inf);
    let infer = time_ms(3, || {
        let _ = to_vec_f32(eval.forward(xi.clone()));
    });
    println!("unet 128x128x1 b8: train step {train:.1} ms, inference {infer:.1} ms");

    let cfg = YoloConfig::new(128, 3, 20);
    let mut yolo = YoloTiny::new(&cfg, &dev).expect("yolo");
    let x = Tensor::<4>::random([16, 3, 128, 128], Distribution::Default, &dev);
    let targets: Vec<Vec<YoloTarget>> = (0..16)
        .map(|i| {
            let o = (i * 5) as f32;
            vec![YoloTarget {
                class: i % 20,
                x1: o,
                y1: o / 2.0,
                x2: o + 30.0,
                y2: o / 2.0 + 40.0,
            }]
        })
        .collect();
    let mut opt = AdamConfig::new().init();
    let train = time_ms(3, || {
        let loss = yolo.loss(yolo.forward(x.clone()), &targets);
        let grads = GradientsParams::from_grads(loss.backward(), &yolo);
        yolo = opt.step(1e-3, yolo.clone(), grads);
    });
    let eval = yolo.valid();
    let xi = Tensor::<4>::random([16, 3, 128, 128], Distribution::Default, &inf);
    let infer = time_ms(3, || {
        let dets = eval.decode(eval.forward(xi.clone()), 0.25);
        let _ = dets.iter().map(|d| nms(d, 0.45).len()).sum::<usize>();
    });
    println!(
        "yolo-tiny 128x128x3 b16: train step {train:.1} ms, inference+decode+nms {infer:.1} ms"
    );
}
