//! Convolution kernel benchmark: ferrolab's Flex kernels (`core::kernels::conv2d` and
//! `conv_transpose2d`) against burn's own flex ops, per layer shape of the vision models, and
//! the input of `bench/conv2d_torch.py`, which times PyTorch on the same shapes and prints the
//! ours / torch ratios.
//!
//! Shapes: ResNet-20 (32x32x1, batch 128), UNet (128x128x1, batch 8, widths 16..256, 2x2
//! stride-2 transposed convolutions) and a YOLOv3-tiny-style detector (128x128x3, batch 16,
//! 16..512 channels). Each pass (forward, input gradient, weight gradient, bias gradient) is
//! timed on its own, without autodiff, as the median of `--reps` runs after `--warmup`.
//!
//! ```text
//! cargo run --release -p ferrolab-core --example conv2d_bench -- \
//!     [--threads 2] [--reps 10] [--warmup 2] [--only resnet,unet,yolo] [--filter NAME] \
//!     [--no-burn] [--pass fwd|dx|dw|db] [--clock wall|cpu] > ours.jsonl
//! bench/.venv/bin/python bench/conv2d_torch.py --ours ours.jsonl
//! ```
//!
//! Output: one JSON object per shape on stdout (`name`, `kind` conv|convt, `x`, `w`, `stride`,
//! `padding`, `groups`, `bias`, `reps`, `warmup`, and `<impl>_<pass>_ms` for impl ours|burn and
//! pass fwd|dx|dw|db, the median, and `<impl>_<pass>_min_ms`, the fastest run); a readable
//! table of medians on stderr. `--pass` times one pass only (for profiling); `--clock cpu`
//! times CPU time instead of wall time (see [`time`]).

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ferrolab_core::backend::init_threads;
use ferrolab_core::burn;
use ferrolab_core::kernels::conv_transpose2d::ConvTranspose2x2Kernels;
use ferrolab_core::kernels::conv2d::{Conv2dKernels, Conv2dSpec, reference_bias_grad};

use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::{Flex, TensorMetadata};
use burn::prelude::*;
use burn::tensor::ops::ConvTransposeOptions;

#[derive(Debug, Clone)]
struct Layer {
    name: String,
    transposed: bool,
    x: [usize; 4],
    w: [usize; 4],
    spec: Conv2dSpec,
    bias: bool,
}

fn conv(name: &str, n: usize, c: usize, hw: usize, f: usize, k: usize, s: usize) -> Layer {
    Layer {
        name: name.to_string(),
        transposed: false,
        x: [n, c, hw, hw],
        w: [f, c, k, k],
        spec: Conv2dSpec::new(s, k / 2),
        bias: false,
    }
}

fn shapes(only: &[String]) -> Vec<Layer> {
    let mut v = Vec::new();
    let wanted = |m: &str| only.is_empty() || only.iter().any(|o| o == m);
    if wanted("resnet") {
        let n = 128;
        v.push(conv("resnet.stem_1_16_32", n, 1, 32, 16, 3, 1));
        v.push(conv("resnet.s1_16_16_32", n, 16, 32, 16, 3, 1));
        v.push(conv("resnet.s2down_16_32_32", n, 16, 32, 32, 3, 2));
        v.push(conv("resnet.s2short_1x1_16_32_32", n, 16, 32, 32, 1, 2));
        v.push(conv("resnet.s2_32_32_16", n, 32, 16, 32, 3, 1));
        v.push(conv("resnet.s3down_32_64_16", n, 32, 16, 64, 3, 2));
        v.push(conv("resnet.s3short_1x1_32_64_16", n, 32, 16, 64, 1, 2));
        v.push(conv("resnet.s3_64_64_8", n, 64, 8, 64, 3, 1));
    }
    if wanted("unet") {
        let n = 8;
        let mut enc = |c: usize, f: usize, hw: usize| {
            let mut s = conv(&format!("unet.conv_{c}_{f}_{hw}"), n, c, hw, f, 3, 1);
            s.bias = true;
            v.push(s);
        };
        enc(1, 16, 128);
        enc(16, 16, 128);
        enc(16, 32, 64);
        enc(32, 32, 64);
        enc(32, 64, 32);
        enc(64, 64, 32);
        enc(64, 128, 16);
        enc(128, 128, 16);
        enc(128, 256, 8);
        enc(256, 256, 8);
        enc(256, 128, 16);
        enc(128, 64, 32);
        enc(64, 32, 64);
        enc(32, 16, 128);
        for (c, f, hw) in [(256, 128, 8), (128, 64, 16), (64, 32, 32), (32, 16, 64)] {
            v.push(Layer {
                name: format!("unet.up2x2_{c}_{f}_{hw}"),
                transposed: true,
                x: [n, c, hw, hw],
                w: [c, f, 2, 2],
                spec: Conv2dSpec::new(2, 0),
                bias: true,
            });
        }
        let mut head = conv("unet.head_1x1_16_4_128", n, 16, 128, 4, 1, 1);
        head.bias = true;
        v.push(head);
    }
    if wanted("yolo") {
        let n = 16;
        let mut add = |c: usize, f: usize, hw: usize, k: usize, bias: bool| {
            let mut s = conv(&format!("yolo.conv{k}_{c}_{f}_{hw}"), n, c, hw, f, k, 1);
            s.bias = bias;
            v.push(s);
        };
        add(3, 16, 128, 3, false);
        add(16, 32, 64, 3, false);
        add(32, 64, 32, 3, false);
        add(64, 128, 16, 3, false);
        add(128, 256, 8, 3, false);
        add(256, 512, 4, 3, false);
        // The model's defaults (`YoloConfig::default()`): widths up to 1024, 80 classes.
        add(512, 1024, 4, 3, false);
        add(1024, 256, 4, 1, false);
        add(256, 512, 4, 3, false);
        add(512, 255, 4, 1, true);
        add(256, 128, 4, 1, false);
        add(384, 256, 8, 3, false);
        add(256, 255, 8, 1, true);
    }
    v
}

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn tensor(shape: [usize; 4], seed: u64) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values(shape.iter().product(), seed), shape))
}

/// `--clock cpu`: time by CPU time consumed instead of wall time.
static CPU_CLOCK: AtomicBool = AtomicBool::new(false);

/// CPU time of all the process's threads so far, in milliseconds (Linux schedstat).
fn cpu_ms() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return f64::NAN;
    };
    let mut ns = 0u64;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    ns as f64 / 1e6
}

/// Median and minimum milliseconds of `reps` runs after `warmup` (the minimum is the
/// figure least disturbed by other processes on a shared machine). With `--clock cpu`, the
/// CPU time of all threads over the runs divided by `reps`, twice: on a loaded machine it
/// does not count time spent waiting for a core (meant for `--threads 1`, where no worker
/// spins idle).
fn time(warmup: usize, reps: usize, mut f: impl FnMut() -> FlexTensor) -> [f64; 2] {
    if reps == 0 {
        return [f64::NAN; 2];
    }
    for _ in 0..warmup {
        std::hint::black_box(f());
    }
    if CPU_CLOCK.load(Ordering::Relaxed) {
        let start = cpu_ms();
        for _ in 0..reps {
            std::hint::black_box(f());
        }
        let per = (cpu_ms() - start) / reps as f64;
        return [per, per];
    }
    let mut ms: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    [ms[ms.len() / 2], ms[0]]
}

struct Args {
    threads: usize,
    reps: usize,
    warmup: usize,
    only: Vec<String>,
    filter: Option<String>,
    burn: bool,
    pass: Option<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        threads: 2,
        reps: 10,
        warmup: 2,
        only: Vec::new(),
        filter: None,
        burn: true,
        pass: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{flag} {v}: {e}"));
        match flag.as_str() {
            "--threads" => a.threads = number(value()?)?,
            "--reps" => a.reps = number(value()?)?,
            "--warmup" => a.warmup = number(value()?)?,
            "--only" => a.only = value()?.split(',').map(str::to_string).collect(),
            "--filter" => a.filter = Some(value()?),
            "--no-burn" => a.burn = false,
            "--pass" => a.pass = Some(value()?),
            "--clock" => match value()?.as_str() {
                "wall" => CPU_CLOCK.store(false, Ordering::Relaxed),
                "cpu" => CPU_CLOCK.store(true, Ordering::Relaxed),
                other => return Err(format!("--clock {other}: expected wall or cpu")),
            },
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("conv2d_bench: {e}");
            return ExitCode::from(2);
        }
    };
    let threads = init_threads(Some(args.threads));
    eprintln!(
        "threads {threads}, median of {} reps after {} warm-up; ms per pass",
        args.reps, args.warmup
    );
    eprintln!(
        "{:<30} {:>8} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8}",
        "shape", "fwd", "dx", "dw", "db", "burn fwd", "burn dx", "burn dw"
    );
    let (w, reps) = (args.warmup, args.reps);
    for s in shapes(&args.only) {
        if args.filter.as_ref().is_some_and(|f| !s.name.contains(f)) {
            continue;
        }
        let x = tensor(s.x, 1);
        let wt = tensor(s.w, 2);
        let f_out = if s.transposed { s.w[1] } else { s.w[0] };
        let b = FlexTensor::from_data(TensorData::new(values(f_out, 3), [f_out]));
        let y = if s.transposed {
            Flex::conv_transpose2x2_bias(x.clone(), wt.clone(), b.clone())
        } else {
            Flex::conv2d_forward(x.clone(), wt.clone(), s.spec)
        };
        let y_shape = y.shape();
        let dy = FlexTensor::from_data(TensorData::new(
            values(y_shape.num_elements(), 4),
            y_shape.clone(),
        ));
        let mut fields: Vec<(String, [f64; 2])> = Vec::new();
        // `--pass P` times only pass P (for profiling one kernel): the others get 0 reps.
        let r_of = |pass: &str| match &args.pass {
            Some(p) if p != pass => 0,
            _ => reps,
        };
        let opts = s.spec.options();
        let t_opts = ConvTransposeOptions::new([2, 2], [0, 0], [0, 0], [1, 1], 1);
        if s.transposed {
            fields.push((
                "ours_fwd_ms".into(),
                time(w, r_of("fwd"), || {
                    Flex::conv_transpose2x2_bias(x.clone(), wt.clone(), b.clone())
                }),
            ));
            fields.push((
                "ours_dx_ms".into(),
                time(w, r_of("dx"), || {
                    Flex::conv_transpose2x2_input_grad(wt.clone(), dy.clone())
                }),
            ));
            fields.push((
                "ours_dw_ms".into(),
                time(w, r_of("dw"), || {
                    Flex::conv_transpose2x2_weight_grad(x.clone(), wt.clone(), dy.clone())
                }),
            ));
        } else {
            fields.push((
                "ours_fwd_ms".into(),
                time(w, r_of("fwd"), || {
                    if s.bias {
                        Flex::conv2d_forward_bias(x.clone(), wt.clone(), b.clone(), s.spec)
                    } else {
                        Flex::conv2d_forward(x.clone(), wt.clone(), s.spec)
                    }
                }),
            ));
            fields.push((
                "ours_dx_ms".into(),
                time(w, r_of("dx"), || {
                    Flex::conv2d_input_grad(x.clone(), wt.clone(), dy.clone(), s.spec)
                }),
            ));
            fields.push((
                "ours_dw_ms".into(),
                time(w, r_of("dw"), || {
                    Flex::conv2d_weight_grad(x.clone(), wt.clone(), dy.clone(), s.spec)
                }),
            ));
        }
        if s.bias {
            fields.push((
                "ours_db_ms".into(),
                time(w, r_of("db"), || Flex::conv2d_bias_grad(dy.clone())),
            ));
        }
        if args.burn {
            let bias = s.bias.then(|| b.clone());
            if s.transposed {
                fields.push((
                    "burn_fwd_ms".into(),
                    time(w, r_of("fwd"), || {
                        Flex::conv_transpose2d(x.clone(), wt.clone(), bias.clone(), t_opts.clone())
                    }),
                ));
                fields.push((
                    "burn_dx_ms".into(),
                    time(w, r_of("dx"), || {
                        Flex::conv_transpose2d_x_backward(wt.clone(), dy.clone(), t_opts.clone())
                    }),
                ));
                fields.push((
                    "burn_dw_ms".into(),
                    time(w, r_of("dw"), || {
                        Flex::conv_transpose2d_weight_backward(
                            x.clone(),
                            wt.clone(),
                            dy.clone(),
                            t_opts.clone(),
                        )
                    }),
                ));
            } else {
                fields.push((
                    "burn_fwd_ms".into(),
                    time(w, r_of("fwd"), || {
                        Flex::conv2d(x.clone(), wt.clone(), bias.clone(), opts.clone())
                    }),
                ));
                fields.push((
                    "burn_dx_ms".into(),
                    time(w, r_of("dx"), || {
                        Flex::conv2d_x_backward(x.clone(), wt.clone(), dy.clone(), opts.clone())
                    }),
                ));
                fields.push((
                    "burn_dw_ms".into(),
                    time(w, r_of("dw"), || {
                        Flex::conv2d_weight_backward(
                            x.clone(),
                            wt.clone(),
                            dy.clone(),
                            opts.clone(),
                        )
                    }),
                ));
            }
            if s.bias {
                fields.push((
                    "burn_db_ms".into(),
                    time(w, r_of("db"), || reference_bias_grad::<Flex>(dy.clone())),
                ));
            }
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(n, v)| n == k && v[0].is_finite())
                .map_or(String::from("-"), |(_, v)| format!("{:.2}", v[0]))
        };
        eprintln!(
            "{:<30} {:>8} {:>8} {:>8} {:>6} | {:>8} {:>8} {:>8}",
            s.name,
            get("ours_fwd_ms"),
            get("ours_dx_ms"),
            get("ours_dw_ms"),
            get("ours_db_ms"),
            get("burn_fwd_ms"),
            get("burn_dx_ms"),
            get("burn_dw_ms"),
        );
        let mut obj = serde_json::json!({
            "name": s.name,
            "kind": if s.transposed { "convt" } else { "conv" },
            "x": s.x,
            "w": s.w,
            "stride": s.spec.stride,
            "padding": s.spec.padding,
            "groups": s.spec.groups,
            "bias": s.bias,
            "reps": reps,
            "warmup": w,
            "threads": threads,
        });
        for (k, v) in fields.into_iter().filter(|(_, v)| v[0].is_finite()) {
            obj[k.replace("_ms", "_min_ms")] = serde_json::json!(v[1]);
            obj[k] = serde_json::json!(v[0]);
        }
        println!("{obj}");
    }
    ExitCode::SUCCESS
}
