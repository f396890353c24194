//! Bit-reproducibility of the kernels' float reductions: the same inputs must give the same
//! bits whatever the thread count and however busy the pool is. A reduction whose split
//! follows rayon's work stealing (`par_iter().sum()`, `reduce`, `fold`) or the pool size
//! sums in a different order from run to run, and a same-seed run then drifts in the last
//! bits and, over a training run, in its metrics.

use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

use super::conv2d::cpu::{Geom, bias_grad, forward_act, input_grad, weight_grad};
use super::flex_slices::{channel_sums, shifted_sums};
use super::gemm::{MatRef, matmul};
use super::hash::splitmix64;

pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed;
    (0..n)
        .map(|_| (splitmix64(&mut state) >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Runs `f` in private pools of 1, 2 and 3 threads, and in a 2-thread pool that another
/// thread keeps busy with unrelated parallel work (so stealing splits the kernel's work
/// differently each time), and asserts every result has the same bits.
pub(crate) fn assert_same_bits_in_pools(what: &str, f: impl Fn() -> Vec<f32> + Sync) {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    let want = bits(&pool(1).install(&f));
    assert!(!want.is_empty(), "{what}: empty result");
    for n in [2, 3] {
        assert_eq!(bits(&pool(n).install(&f)), want, "{what}: {n} threads");
    }
    let busy = pool(2);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                busy.install(|| {
                    (0..64u64)
                        .into_par_iter()
                        .map(|i| (0..20_000u64).fold(i, |a, b| a.wrapping_mul(31) ^ b))
                        .max()
                });
            }
        });
        for run in 0..6 {
            let got = bits(&busy.install(&f));
            if got != want {
                stop.store(true, Ordering::Relaxed);
                panic!("{what}: busy 2-thread pool, run {run}: bits differ");
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
}

fn geom(n: usize, c: usize, f: usize, k: usize, s: usize, p: usize, groups: usize) -> Geom {
    let (h, w) = (11, 9);
    Geom {
        n,
        c,
        h,
        w,
        f,
        kh: k,
        kw: k,
        sh: s,
        sw: s,
        ph: p,
        pw: p,
        groups,
        oh: (h + 2 * p - k) / s + 1,
        ow: (w + 2 * p - k) / s + 1,
    }
}

#[test]
fn conv2d_weight_and_bias_gradients_do_not_depend_on_the_pool() {
    // One group (the transposed NHWC path), grouped with stride 2, depthwise; 13 samples so
    // chunks are uneven; 2 samples, fewer chunks than threads (the GEMMs share the pool);
    // >= 32 channels each way and >= 128 tiles take the Winograd path (13 samples of 6x5
    // tiles: 390).
    for g in [
        geom(13, 6, 8, 3, 1, 1, 1),
        geom(2, 32, 32, 3, 1, 1, 1),
        geom(13, 32, 40, 3, 1, 1, 1),
        geom(13, 6, 4, 3, 2, 0, 2),
        geom(13, 6, 6, 3, 1, 1, 6),
    ] {
        let x = values(g.n * g.c * g.h * g.w, 1);
        let dy = values(g.n * g.f * g.oh * g.ow, 2);
        assert_same_bits_in_pools(&format!("conv2d weight_grad {g:?}"), || {
            weight_grad(&g, &x, &dy)
        });
        let p = g.oh * g.ow;
        assert_same_bits_in_pools("conv2d bias_grad", || bias_grad(&dy, g.n, g.f, p));
    }
}

#[test]
fn batch_inner_convolutions_do_not_depend_on_the_pool() {
    // >= 64 channels each way on an 11x9 plane with fewer than 512 Winograd tiles: all three
    // passes take the batch-inner path, whose output channels are split into as many parts
    // as the pool has threads (80 = 48 + 32 with two, 32 + 32 + 16 with three).
    // 1100 input channels: a contraction longer than one of the GEMM's depth blocks.
    for g in [geom(3, 64, 80, 3, 1, 1, 1), geom(1, 1100, 96, 3, 1, 1, 1)] {
        let x = values(g.n * g.c * g.h * g.w, 3);
        let w = values(g.f * g.c * g.kh * g.kw, 4);
        let b = values(g.f, 5);
        let dy = values(g.n * g.f * g.oh * g.ow, 6);
        assert_same_bits_in_pools("batch-inner forward", || {
            let mut out = vec![0.0; dy.len()];
            forward_act(&g, &x, &w, Some(&b), false, &mut out);
            out
        });
        assert_same_bits_in_pools("batch-inner input gradient", || {
            let mut dx = vec![0.0; x.len()];
            input_grad(&g, &w, &dy, &mut dx);
            dx
        });
        assert_same_bits_in_pools("batch-inner weight gradient", || weight_grad(&g, &x, &dy));
    }
}

#[test]
fn channel_statistics_do_not_depend_on_the_pool() {
    // Batch-norm statistics: 2 channels, so samples are split into blocks too.
    let (n, c, inner) = (37, 2, 301);
    let x = values(n * c * inner, 3);
    assert_same_bits_in_pools("channel_sums", || {
        channel_sums(
            n,
            c,
            |_, row| shifted_sums(&x[row * inner..][..inner], 0.25),
            |a, b| (a.0 + b.0, a.1 + b.1),
        )
        .into_iter()
        // Every bit of both f64 sums, carried as the two halves of each.
        .flat_map(|(s, q)| [s.to_bits(), q.to_bits()])
        .flat_map(|b| [f32::from_bits((b >> 32) as u32), f32::from_bits(b as u32)])
        .collect()
    });
}

#[test]
fn gemm_does_not_depend_on_the_pool() {
    // Large enough (m·n·k ≥ 2^18) for the gemm crate's rayon path.
    let (m, k, n) = (96, 160, 72);
    let a = values(m * k, 4);
    let b = values(k * n, 5);
    assert_same_bits_in_pools("gemm", || {
        let mut c = vec![0f32; m * n];
        matmul(MatRef::new(&a, m, k), MatRef::new(&b, k, n), &mut c, false);
        c
    });
}
