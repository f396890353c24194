//! Winograd F(2x2, 3x3) (Lavin & Gray 2016) for 3x3, stride-1, padding-1 convolutions with one
//! group: every 2x2 output tile is `Aᵀ [(G w Gᵀ) ⊙ (Bᵀ d B)] A` for the 4x4 input tile `d`
//! under it, so the products of a layer become 16 GEMMs (one per point ξ of the 4x4
//! transformed tile) over all tiles at once, 16 multiplications per 4 outputs instead of 36:
//! 2.25x fewer GEMM flops than im2col, and the transformed input is 4x the input where
//! im2col's matrix is 9x.
//!
//! All three passes use the same transforms:
//! - forward: `M[ξ] = V[ξ] · U[ξ]` (`V = Bᵀ d B` as `[16][T][C]` over `T` tiles,
//!   `U = G w Gᵀ` as `[16][C][F]`), then `Aᵀ M A` per tile;
//! - input gradient: the same convolution of the output gradient with the flipped,
//!   transposed weight (stride 1, "same" padding);
//! - weight gradient: the forward pass is linear in `U`, so
//!   `dw = Gᵀ [Σ_tiles (A dy Aᵀ) ⊙ (Bᵀ d B)] G`, 16 GEMMs contracting over the tiles
//!   (`K = T`, the long dimension of a weight gradient), accumulated over the batch.
//!
//! The transforms run channels last (each input row of every channel is first copied to
//! `[W][C]`): every add then acts on runs of `C` (or `F`) contiguous values, which vectorise
//! whatever the plane's width, where planar rows of 8-32 values left the transforms, not the
//! GEMMs, with most of the time. The tiles' channels-last layout is also what the GEMMs want:
//! `[T][C]` rows for the forward product and the weight gradient's right operand.
//!
//! Rounding: the transforms only add, subtract and halve, so the error stays at f32's level
//! for F(2x2, 3x3) (the larger F(4x4, 3x3) trades more of it for fewer products); the tests
//! hold this path to the same 1e-4 as the others against burn.

use super::{
    Block, Geom, Mat, add_row, flipped_transposed, gemm, inner_parallelism,
    reduce_samples_per_chunk, relu_block_samples, row_to_channels_last, samples_per_chunk,
    transposed_geom, with_thread_scratch,
};
use rayon::prelude::*;
use std::cell::RefCell;

/// Most values of one transformed block (`16 · max(C, F) · T`): 1 MiB, the size of one core's
/// L2 here, so a block's transformed input is still in cache when its 16 GEMMs read it.
const WINO_BUDGET: usize = 1 << 18;

/// Whether this convolution has the shape F(2x2, 3x3) computes.
pub(super) fn shape_ok(g: &Geom) -> bool {
    g.groups == 1
        && g.kh == 3
        && g.kw == 3
        && g.sh == 1
        && g.sw == 1
        && g.ph == 1
        && g.pw == 1
        && g.oh == g.h
        && g.ow == g.w
}

/// Tile rows and tile columns of a plane.
fn tiles(g: &Geom) -> (usize, usize) {
    (g.h.div_ceil(2), g.w.div_ceil(2))
}

/// Buffers of one worker, reused across calls (a training step repeats its shapes).
#[derive(Default)]
struct Scratch {
    /// Transformed input `[16][T][C]`.
    v: Vec<f32>,
    /// GEMM output `[16][T][F]`, or the transformed output gradient.
    m: Vec<f32>,
    /// Zero-padded channels-last input rows of the block, `[rows][2·tw + 2][C]`.
    pad: Vec<f32>,
    /// Four transformed rows (`Bᵀ d`, `A dy`, or the output transform's partial sums).
    rows: Vec<f32>,
    /// One output row, channels last, `[W][F]`.
    orow: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// [`super::with_thread_scratch`] on this module's scratch, trimmed past four blocks.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    with_thread_scratch(&SCRATCH, f, |s| {
        for v in [&mut s.v, &mut s.m, &mut s.pad] {
            if v.capacity() > 4 * WINO_BUDGET {
                *v = Vec::new();
            }
        }
    })
}

/// Blocks of samples `n0..n1` whose transformed tensors hold at most [`WINO_BUDGET`] values
/// (`r0..r1` are tile rows here): several whole samples, or tile-row bands of one.
fn blocks(g: &Geom, n0: usize, n1: usize) -> Vec<Block> {
    let (th, tw) = tiles(g);
    let width = 16 * g.c.max(g.f);
    let per_sample = width * th * tw;
    let mut v = Vec::new();
    if 2 * per_sample <= WINO_BUDGET {
        let s = (WINO_BUDGET / per_sample.max(1)).max(1);
        let mut n = n0;
        while n < n1 {
            let e = (n + s).min(n1);
            v.push(Block {
                n0: n,
                n1: e,
                r0: 0,
                r1: th,
            });
            n = e;
        }
    } else {
        let rows = (WINO_BUDGET / (width * tw).max(1)).clamp(1, th.max(1));
        let bands = th.div_ceil(rows);
        let rows = th.div_ceil(bands);
        for n in n0..n1 {
            for r0 in (0..th).step_by(rows) {
                v.push(Block {
                    n0: n,
                    n1: n + 1,
                    r0,
                    r1: (r0 + rows).min(th),
                });
            }
        }
    }
    v
}

/// Tiles in a block.
fn block_tiles(g: &Geom, b: &Block) -> usize {
    (b.n1 - b.n0) * (b.r1 - b.r0) * tiles(g).1
}

/// `U = G w Gᵀ` for every (c, f), as `[16][C][F]`.
fn transform_weight(g: &Geom, w: &[f32]) -> Vec<f32> {
    let (f_n, c_n) = (g.f, g.c);
    let mut u = vec![0.0f32; 16 * f_n * c_n];
    for f in 0..f_n {
        for c in 0..c_n {
            let k = &w[(f * c_n + c) * 9..][..9];
            // G k: rows (g0, (g0+g1+g2)/2, (g0−g1+g2)/2, g2) of the 3x3 kernel.
            let mut gk = [[0.0f32; 3]; 4];
            for col in 0..3 {
                let (a, b, d) = (k[col], k[3 + col], k[6 + col]);
                gk[0][col] = a;
                gk[1][col] = 0.5 * (a + b + d);
                gk[2][col] = 0.5 * (a - b + d);
                gk[3][col] = d;
            }
            for (r, row) in gk.iter().enumerate() {
                let (a, b, d) = (row[0], row[1], row[2]);
                let t = [a, 0.5 * (a + b + d), 0.5 * (a - b + d), d];
                for (col, v) in t.iter().enumerate() {
                    u[((4 * r + col) * c_n + c) * f_n + f] = *v;
                }
            }
        }
    }
    u
}

/// Splits `s` into four consecutive runs of `len` values.
#[inline(always)]
fn four(s: &mut [f32], len: usize) -> [&mut [f32]; 4] {
    let (a, rest) = s.split_at_mut(len);
    let (b, rest) = rest.split_at_mut(len);
    let (c, rest) = rest.split_at_mut(len);
    [a, b, c, &mut rest[..len]]
}

/// The runs `[ξ][t0..t0 + n][·]` of a `[16][T][width]` tensor for the four ξ = 4a..4a + 4.
#[inline(always)]
fn xi_runs(
    buf: &mut [f32],
    a: usize,
    t_all: usize,
    t0: usize,
    n: usize,
    width: usize,
) -> [&mut [f32]; 4] {
    let slab = t_all * width;
    let (_, rest) = buf.split_at_mut(4 * a * slab);
    let mut it = rest.chunks_mut(slab);
    std::array::from_fn(|_| match it.next() {
        Some(chunk) => &mut chunk[t0 * width..(t0 + n) * width],
        None => &mut [],
    })
}

/// Zero-padded channels-last copies of the input rows that tile rows `r0..r1` of sample
/// `x_n` read (padded rows `2·r0 .. 2·r1 + 2`), into `pad` as `[rows][2·tw + 2][C]`.
#[inline(always)]
fn pad_rows(g: &Geom, x_n: &[f32], r0: usize, r1: usize, pad: &mut Vec<f32>) {
    let (_, tw) = tiles(g);
    let (c_n, w, hw) = (g.c, g.w, g.h * g.w);
    let len = (2 * tw + 2) * c_n;
    let rows = 2 * (r1 - r0) + 2;
    pad.resize(rows * len, 0.0);
    for (k, row) in pad.chunks_exact_mut(len).enumerate() {
        // Padded row 2·r0 + k is input row 2·r0 + k − 1.
        match (2 * r0 + k).checked_sub(1) {
            Some(r) if r < g.h => {
                row[..c_n].fill(0.0);
                row[(w + 1) * c_n..].fill(0.0);
                row_to_channels_last(&x_n[r * w..], hw, c_n, w, &mut row[c_n..(w + 1) * c_n]);
            }
            _ => row.fill(0.0),
        }
    }
}

/// `V = Bᵀ d B` for tile rows `r0..r1` of one sample whose padded rows are in `pad`, tiles
/// numbered from `t0` in `v` (`[16][t_all][C]`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_input(
    g: &Geom,
    r0: usize,
    r1: usize,
    pad: &[f32],
    rows: &mut Vec<f32>,
    v: &mut [f32],
    t_all: usize,
    t0: usize,
) {
    let (_, tw) = tiles(g);
    let c_n = g.c;
    let len = (2 * tw + 2) * c_n;
    rows.resize(4 * len, 0.0);
    for tr in r0..r1 {
        let p = &pad[2 * (tr - r0) * len..][..4 * len];
        let (p0, p1, p2, p3) = (
            &p[..len],
            &p[len..2 * len],
            &p[2 * len..3 * len],
            &p[3 * len..],
        );
        // Bᵀ d, rows: d0 − d2, d1 + d2, d2 − d1, d1 − d3 (whole padded rows at once).
        let [a0, a1, a2, a3] = four(rows, len);
        for (((d0, d1), (d2, d3)), ((o0, o1), (o2, o3))) in
            p0.iter().zip(p1).zip(p2.iter().zip(p3)).zip(
                a0.iter_mut()
                    .zip(a1.iter_mut())
                    .zip(a2.iter_mut().zip(a3.iter_mut())),
            )
        {
            *o0 = d0 - d2;
            *o1 = d1 + d2;
            *o2 = d2 - d1;
            *o3 = d1 - d3;
        }
        // (Bᵀ d) B per row: columns (e0 − e2, e1 + e2, e2 − e1, e1 − e3) of the tile at
        // padded column 2k, each column a run of C channels.
        let t = t0 + (tr - r0) * tw;
        for a in 0..4 {
            let src = &rows[a * len..][..len];
            let [v0, v1, v2, v3] = xi_runs(v, a, t_all, t, tw, c_n);
            for (k, (((o0, o1), o2), o3)) in v0
                .chunks_exact_mut(c_n)
                .zip(v1.chunks_exact_mut(c_n))
                .zip(v2.chunks_exact_mut(c_n))
                .zip(v3.chunks_exact_mut(c_n))
                .enumerate()
            {
                let e = &src[2 * k * c_n..][..4 * c_n];
                let (e0, e1, e2, e3) = (
                    &e[..c_n],
                    &e[c_n..2 * c_n],
                    &e[2 * c_n..3 * c_n],
                    &e[3 * c_n..],
                );
                for c in 0..c_n {
                    o0[c] = e0[c] - e2[c];
                    o1[c] = e1[c] + e2[c];
                    o2[c] = e2[c] - e1[c];
                    o3[c] = e1[c] - e3[c];
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` (plus the bias) for tile rows `r0..r1` of one sample, tiles from `t0` in `m`
/// (`[16][t_all][F]`), written into the sample's planar output `out_n`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_output(
    g: &Geom,
    r0: usize,
    r1: usize,
    m: &[f32],
    t_all: usize,
    t0: usize,
    bias: Option<&[f32]>,
    out_n: &mut [f32],
    s: &mut Scratch,
) {
    let (_, tw) = tiles(g);
    let (f_n, w, hw) = (g.f, g.w, g.h * g.w);
    let run = tw * f_n;
    s.rows.resize(8 * run, 0.0);
    s.orow.resize(w * f_n, 0.0);
    for tr in r0..r1 {
        let t = t0 + (tr - r0) * tw;
        let at = |xi: usize| &m[(xi * t_all + t) * f_n..][..run];
        // M A per row a: z[a][0] = m0 + m1 + m2, z[a][1] = m1 − m2 − m3 (all tiles of the
        // row at once: the tiles' runs are consecutive).
        for a in 0..4 {
            let (m0, m1, m2, m3) = (at(4 * a), at(4 * a + 1), at(4 * a + 2), at(4 * a + 3));
            let (za, zb) = s.rows[2 * a * run..(2 * a + 2) * run].split_at_mut(run);
            for ((((za, zb), m0), m1), (m2, m3)) in za
                .iter_mut()
                .zip(zb.iter_mut())
                .zip(m0)
                .zip(m1)
                .zip(m2.iter().zip(m3))
            {
                *za = m0 + m1 + m2;
                *zb = m1 - m2 - m3;
            }
        }
        let z = &s.rows;
        let zr = |a: usize, j: usize| &z[(2 * a + j) * run..][..run];
        for i in 0..2 {
            let r = 2 * tr + i;
            if r >= g.h {
                break;
            }
            // Aᵀ (M A): output row i of the tile: z0 + z1 + z2 or z1 − z2 − z3, for the
            // tile's columns j = 0, 1, interleaved into the channels-last output row.
            for j in 0..2 {
                let (z0, z1, z2, z3) = (zr(0, j), zr(1, j), zr(2, j), zr(3, j));
                for k in 0..tw {
                    let col = 2 * k + j;
                    if col >= w {
                        break;
                    }
                    let o = &mut s.orow[col * f_n..][..f_n];
                    let sl = k * f_n..(k + 1) * f_n;
                    let (z0, z1, z2, z3) =
                        (&z0[sl.clone()], &z1[sl.clone()], &z2[sl.clone()], &z3[sl]);
                    if i == 0 {
                        for f in 0..f_n {
                            o[f] = z0[f] + z1[f] + z2[f];
                        }
                    } else {
                        for f in 0..f_n {
                            o[f] = z1[f] - z2[f] - z3[f];
                        }
                    }
                }
            }
            channels_last_to_rows(&s.orow, f_n, w, &mut out_n[r * w..], hw, bias);
        }
    }
}

/// `dst[f·plane + px] = src[px·F + f] (+ bias[f])` for `px < w`, `f < F`: one channels-last
/// row back to planar, eight by eight through a small tile (the inverse of
/// [`row_to_channels_last`]).
#[inline(always)]
fn channels_last_to_rows(
    src: &[f32],
    f_n: usize,
    w: usize,
    dst: &mut [f32],
    plane: usize,
    bias: Option<&[f32]>,
) {
    let b = |f: usize| bias.map_or(0.0, |b| b[f]);
    let mut f0 = 0;
    while f0 + 8 <= f_n {
        let bs: [f32; 8] = std::array::from_fn(|k| b(f0 + k));
        let mut px = 0;
        while px + 8 <= w {
            let mut tile = [[0.0f32; 8]; 8];
            for (p, t) in tile.iter_mut().enumerate() {
                t.copy_from_slice(&src[(px + p) * f_n + f0..][..8]);
            }
            for k in 0..8 {
                let d = &mut dst[(f0 + k) * plane + px..][..8];
                for p in 0..8 {
                    d[p] = tile[p][k] + bs[k];
                }
            }
            px += 8;
        }
        for px in px..w {
            for k in 0..8 {
                dst[(f0 + k) * plane + px] = src[px * f_n + f0 + k] + bs[k];
            }
        }
        f0 += 8;
    }
    for f in f0..f_n {
        let bf = b(f);
        for px in 0..w {
            dst[f * plane + px] = src[px * f_n + f] + bf;
        }
    }
}

/// `A dy Aᵀ` per 2x2 output-gradient tile (zero past the plane) for tile rows `r0..r1` of
/// one sample, into `m` (`[16][t_all][F]`) from tile `t0`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn transform_dy(
    g: &Geom,
    r0: usize,
    r1: usize,
    dy_n: &[f32],
    m: &mut [f32],
    t_all: usize,
    t0: usize,
    rows: &mut Vec<f32>,
) {
    let (_, tw) = tiles(g);
    let (f_n, w, hw) = (g.f, g.w, g.h * g.w);
    let len = 2 * tw * f_n;
    rows.resize(4 * len, 0.0);
    for tr in r0..r1 {
        let [q0, q1, q2, q3] = four(rows, len);
        // Channels-last rows 2·tr (into q0) and 2·tr + 1 (into q3), zero past the plane.
        q0[w * f_n..].fill(0.0);
        row_to_channels_last(&dy_n[2 * tr * w..], hw, f_n, w, &mut q0[..w * f_n]);
        if 2 * tr + 1 < g.h {
            q3[w * f_n..].fill(0.0);
            row_to_channels_last(&dy_n[(2 * tr + 1) * w..], hw, f_n, w, &mut q3[..w * f_n]);
        } else {
            q3.fill(0.0);
        }
        // A dy, rows: d0, d0 + d1, d0 − d1, −d1.
        for ((d0, d1), (p, mi)) in q0
            .iter()
            .zip(q3.iter_mut())
            .zip(q1.iter_mut().zip(q2.iter_mut()))
        {
            *p = d0 + *d1;
            *mi = d0 - *d1;
            *d1 = -*d1;
        }
        // (A dy) Aᵀ per row: (p, p + q, p − q, −q) of the column pair (2k, 2k + 1).
        let t = t0 + (tr - r0) * tw;
        for a in 0..4 {
            let src = &rows[a * len..][..len];
            let [o0, o1, o2, o3] = xi_runs(m, a, t_all, t, tw, f_n);
            for (k, (((o0, o1), o2), o3)) in o0
                .chunks_exact_mut(f_n)
                .zip(o1.chunks_exact_mut(f_n))
                .zip(o2.chunks_exact_mut(f_n))
                .zip(o3.chunks_exact_mut(f_n))
                .enumerate()
            {
                let pq = &src[2 * k * f_n..][..2 * f_n];
                let (p, q) = pq.split_at(f_n);
                for f in 0..f_n {
                    o0[f] = p[f];
                    o1[f] = p[f] + q[f];
                    o2[f] = p[f] - q[f];
                    o3[f] = -q[f];
                }
            }
        }
    }
}

/// Pads and transforms the input of every sample of `blk` into `s.v`.
#[inline(always)]
fn block_inputs_body(g: &Geom, blk: &Block, x: &[f32], t: usize, s: &mut Scratch) {
    let band = (blk.r1 - blk.r0) * tiles(g).1;
    for n in blk.n0..blk.n1 {
        let x_n = &x[n * g.in_sample()..][..g.in_sample()];
        pad_rows(g, x_n, blk.r0, blk.r1, &mut s.pad);
        let t0 = (n - blk.n0) * band;
        transform_input(g, blk.r0, blk.r1, &s.pad, &mut s.rows, &mut s.v, t, t0);
    }
}

widest!(fn block_inputs(g: &Geom, blk: &Block, x: &[f32], t: usize, s: &mut Scratch) => block_inputs_body);

/// Transforms `s.m` back into the output planes of every sample of `blk`.
#[inline(always)]
fn block_outputs_body(
    g: &Geom,
    blk: &Block,
    t: usize,
    b: Option<&[f32]>,
    chunk: &mut [f32],
    first: usize,
    s: &mut Scratch,
) {
    let band = (blk.r1 - blk.r0) * tiles(g).1;
    let m = std::mem::take(&mut s.m);
    for n in blk.n0..blk.n1 {
        let out_n = &mut chunk[(n - first) * g.out_sample()..][..g.out_sample()];
        let t0 = (n - blk.n0) * band;
        transform_output(g, blk.r0, blk.r1, &m, t, t0, b, out_n, s);
    }
    s.m = m;
}

widest!(
    #[allow(clippy::too_many_arguments)]
    fn block_outputs(
        g: &Geom,
        blk: &Block,
        t: usize,
        b: Option<&[f32]>,
        chunk: &mut [f32],
        first: usize,
        s: &mut Scratch,
    ) => block_outputs_body
);

/// Transforms the input (into `s.v`) and the output gradient (into `s.m`) of every sample
/// of `blk`.
#[inline(always)]
fn block_grads_body(g: &Geom, blk: &Block, x: &[f32], dy: &[f32], t: usize, s: &mut Scratch) {
    let band = (blk.r1 - blk.r0) * tiles(g).1;
    for n in blk.n0..blk.n1 {
        let x_n = &x[n * g.in_sample()..][..g.in_sample()];
        let dy_n = &dy[n * g.out_sample()..][..g.out_sample()];
        let t0 = (n - blk.n0) * band;
        pad_rows(g, x_n, blk.r0, blk.r1, &mut s.pad);
        transform_input(g, blk.r0, blk.r1, &s.pad, &mut s.rows, &mut s.v, t, t0);
        transform_dy(g, blk.r0, blk.r1, dy_n, &mut s.m, t, t0, &mut s.rows);
    }
}

widest!(fn block_grads(g: &Geom, blk: &Block, x: &[f32], dy: &[f32], t: usize, s: &mut Scratch) => block_grads_body);

/// Forward of a convolution [`shape_ok`] accepts: `out` is overwritten.
/// With `relu`, each sample's output is rectified as soon as its last tile row is written.
pub(super) fn forward(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    let u = transform_weight(g, w);
    let par = inner_parallelism(g.n);
    let per = samples_per_chunk(g.n);
    let (f_n, c_n) = (g.f, g.c);
    out.par_chunks_mut(per * g.out_sample())
        .enumerate()
        .for_each(|(k, chunk)| {
            let first = k * per;
            let n1 = first + chunk.len() / g.out_sample();
            with_scratch(|s| {
                for blk in blocks(g, first, n1) {
                    let t = block_tiles(g, &blk);
                    s.v.resize(16 * c_n * t, 0.0);
                    s.m.resize(16 * f_n * t, 0.0);
                    block_inputs(g, &blk, x, t, s);
                    for xi in 0..16 {
                        gemm(
                            t,
                            f_n,
                            c_n,
                            Mat::rows(&s.v[xi * t * c_n..], c_n),
                            Mat::rows(&u[xi * c_n * f_n..], f_n),
                            &mut s.m[xi * t * f_n..],
                            f_n,
                            false,
                            par,
                        );
                    }
                    block_outputs(g, &blk, t, b, chunk, first, s);
                    if relu && blk.r1 == tiles(g).0 {
                        relu_block_samples(g, &blk, chunk, first);
                    }
                }
            });
        });
}

/// Input gradient (`dx` overwritten): the forward pass of the flipped, transposed weight
/// over the output gradient.
pub(super) fn input_grad(g: &Geom, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    forward(
        &transposed_geom(g),
        dy,
        &flipped_transposed(g, w),
        None,
        false,
        dx,
    );
}

/// Weight gradient `[F, C, 3, 3]`.
pub(super) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (f_n, c_n) = (g.f, g.c);
    let len = 16 * f_n * c_n;
    // Fixed chunks summed in order, as the im2col path: the result does not depend on the
    // thread count.
    let per = reduce_samples_per_chunk(g.n);
    let chunks = g.n.div_ceil(per);
    let par = inner_parallelism(chunks);
    let partial: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|k| {
            let mut acc = vec![0.0f32; len];
            let (first, n1) = (k * per, ((k + 1) * per).min(g.n));
            with_scratch(|s| {
                for blk in blocks(g, first, n1) {
                    let t = block_tiles(g, &blk);
                    s.v.resize(16 * c_n * t, 0.0);
                    s.m.resize(16 * f_n * t, 0.0);
                    block_grads(g, &blk, x, dy, t, s);
                    // dU[ξ] (F×C) += Dy[ξ]ᵀ (F×T) · V[ξ] (T×C): the left operand read
                    // column-major, which is how the GEMM packs it anyway.
                    for xi in 0..16 {
                        gemm(
                            f_n,
                            c_n,
                            t,
                            Mat::rows(&s.m[xi * t * f_n..], f_n).t(),
                            Mat::rows(&s.v[xi * t * c_n..], c_n),
                            &mut acc[xi * f_n * c_n..],
                            c_n,
                            true,
                            par,
                        );
                    }
                }
            });
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut du = parts.next().unwrap_or_else(|| vec![0.0; len]);
    for part in parts {
        add_row(&mut du, &part);
    }
    // dw = Gᵀ dU G: rows (x0 + (x1 + x2)/2, (x1 − x2)/2, (x1 + x2)/2 + x3), then columns.
    let fc = f_n * c_n;
    let mut dw = vec![0.0f32; fc * 9];
    for (k, out) in dw.chunks_exact_mut(9).enumerate() {
        let x = |xi: usize| du[xi * fc + k];
        // Gᵀ X per column of X: three values.
        let cols: [[f32; 3]; 4] = std::array::from_fn(|col| {
            let (x0, x1, x2, x3) = (x(col), x(4 + col), x(8 + col), x(12 + col));
            [x0 + 0.5 * (x1 + x2), 0.5 * (x1 - x2), 0.5 * (x1 + x2) + x3]
        });
        for (i, o) in out.chunks_exact_mut(3).enumerate() {
            let (x0, x1, x2, x3) = (cols[0][i], cols[1][i], cols[2][i], cols[3][i]);
            o[0] = x0 + 0.5 * (x1 + x2);
            o[1] = 0.5 * (x1 - x2);
            o[2] = 0.5 * (x1 + x2) + x3;
        }
    }
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(n: usize, c: usize, f: usize, h: usize, w: usize) -> Geom {
        Geom {
            n,
            c,
            h,
            w,
            f,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 1,
            ph: 1,
            pw: 1,
            groups: 1,
            oh: h,
            ow: w,
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|k| ((k as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    #[test]
    fn the_widest_build_of_each_transform_equals_the_baseline_build() {
        // The CPU-specific builds run the same code as the baseline one: the results must be
        // bit for bit the same (only adds and subtracts, no fused multiply-adds).
        let g = geom(3, 33, 40, 9, 11);
        let x = values(g.n * g.in_sample(), 1);
        let dy = values(g.n * g.out_sample(), 2);
        for blk in blocks(&g, 0, g.n) {
            let t = block_tiles(&g, &blk);
            let fresh = || {
                let mut s = Scratch::default();
                s.v.resize(16 * g.c * t, 0.0);
                s.m.resize(16 * g.f * t, 0.0);
                s
            };
            let (mut a, mut b) = (fresh(), fresh());
            block_inputs(&g, &blk, &x, t, &mut a);
            block_inputs_body(&g, &blk, &x, t, &mut b);
            assert_eq!(a.v, b.v, "input transform");
            block_grads(&g, &blk, &x, &dy, t, &mut a);
            block_grads_body(&g, &blk, &x, &dy, t, &mut b);
            assert_eq!(a.m, b.m, "output-gradient transform");
            let mut out_a = vec![0.0f32; g.n * g.out_sample()];
            let mut out_b = out_a.clone();
            let bias = values(g.f, 3);
            block_outputs(&g, &blk, t, Some(&bias), &mut out_a, 0, &mut a);
            block_outputs_body(&g, &blk, t, Some(&bias), &mut out_b, 0, &mut b);
            assert_eq!(out_a, out_b, "output transform");
            assert!(out_a.iter().any(|v| *v != 0.0));
        }
    }
}
