//! Stride-1 "same" convolutions on small planes with many channels (YOLO-tiny's 4x4 and 8x8
//! layers, a UNet's bottom): one GEMM per kernel tap over the whole batch, on activations laid
//! out batch-inner, `[H][W][N][C]`, with no product against the zero padding.
//!
//! On a 4x4 plane im2col multiplies 144 (pixel, tap) pairs of which only 100 touch the input
//! (8x8: 576 for 484), so the padded GEMM did 1.44x (1.19x) the flops; and with several
//! samples per im2col block but a batch split across workers, the `F x 9C` weight was packed
//! again for every block (six times per pass for a 1024 x 4608 weight). Here, with the batch
//! innermost, every output pixel `(y, x)` whose tap `(oy, ox)` reads inside the plane belongs
//! to a rectangle of rows and columns, and the rows `y` of one column range `x ∈ [x0, x0+wv)`
//! are one contiguous run of `wv·N` rows per `y`. So, per column shift `ox`:
//! - the input's columns `x + ox` (and, for the weight gradient, the output's columns `x`) are
//!   copied once into a compact `[H][wv][N][·]` matrix (none for `ox = 0`);
//! - each row shift `oy` is then a row offset into it: one GEMM `[hv·wv·N, C] x [C, F]`
//!   (run transposed, output channels along the micro-kernel's vector rows), accumulated into
//!   a compact output, which is added into the full output at its columns once per `ox`.
//!
//! The output channels are split into one part per thread; each part runs all its GEMMs on
//! one thread and first transposes its own columns of the weight (`[F][C·kh·kw]` to
//! `[C·kh·kw][F]`, so every tap's `[C, F]` slice has a unit stride; read in place it had none
//! and the GEMM's packing gathered one value per cache line). No GEMM splits its contraction,
//! so results do not depend on the thread count, each weight value is packed once per pass,
//! and the transposes to and from NCHW touch the activations once. The input gradient is the
//! same convolution of the output gradient with the flipped, transposed weight; the weight
//! gradient is one GEMM per tap contracting over the valid rows, each tap's `[F, C]` block
//! written contiguously and the taps interleaved into `[F, C, kh, kw]` after.

use super::{Geom, Mat, add_row, gemm_strided, transpose, with_thread_scratch};
use rayon::prelude::*;
use std::cell::RefCell;

/// Whether this convolution has a shape the batch-inner path computes: one group, stride 1,
/// odd kernel with "same" padding (so the plane keeps its size), more than one tap (a 1x1
/// layer gains nothing here: its transposes cost more than the per-sample GEMMs they save).
pub(super) fn shape_ok(g: &Geom) -> bool {
    g.groups == 1
        && g.sh == 1
        && g.sw == 1
        && g.kh == 2 * g.ph + 1
        && g.kw == 2 * g.pw + 1
        && g.kh * g.kw > 1
        && g.oh == g.h
        && g.ow == g.w
}

/// Buffers shared by the parts of one call, kept by the calling thread between calls (a
/// training step repeats its shapes; fresh buffers cost page faults and zeroing every time).
#[derive(Default)]
struct Shared {
    /// Input (or output gradient), batch-inner `[H][W][N][C]`.
    xh: Vec<f32>,
    /// Output (or, for the weight gradient, the output gradient), batch-inner, as
    /// consecutive blocks `[H][W][N][f1 − f0]` per part.
    yh: Vec<f32>,
    /// Per column shift `j`, `xh`'s columns it reads, compact `[H][wv][N][C]` (empty for the
    /// centre column, which reads `xh` itself).
    xcols: Vec<Vec<f32>>,
    /// The weight gradient's output-gradient columns per shift, compact `[H][wv][N][F]`.
    ycols: Vec<Vec<f32>>,
}

/// Values past which a scratch buffer is dropped after the call: 16 MiB.
const KEEP: usize = 1 << 22;

thread_local! {
    static SHARED: RefCell<Shared> = RefCell::new(Shared::default());
    static PART: RefCell<Part> = RefCell::new(Part::default());
}

/// One part's buffers.
#[derive(Default)]
struct Part {
    /// Its output of a column shift, compact `[H][wv][N][f1 − f0]`.
    acc: Vec<f32>,
    /// Its columns of every tap's weight as [`Weights::fill`] lays them out; in the weight
    /// gradient, its per-tap blocks `[kh·kw][f1 − f0][C]` before they are interleaved.
    wt: Vec<f32>,
}

fn with_shared<R>(f: impl FnOnce(&mut Shared) -> R) -> R {
    with_thread_scratch(&SHARED, f, |s| {
        for v in [&mut s.xh, &mut s.yh] {
            if v.capacity() > KEEP {
                *v = Vec::new();
            }
        }
        for v in s.xcols.iter_mut().chain(s.ycols.iter_mut()) {
            if v.capacity() > KEEP {
                *v = Vec::new();
            }
        }
    })
}

fn with_part<R>(f: impl FnOnce(&mut Part) -> R) -> R {
    with_thread_scratch(&PART, f, |p| {
        for v in [&mut p.acc, &mut p.wt] {
            if v.capacity() > KEEP {
                *v = Vec::new();
            }
        }
    })
}

/// A `[F, C, kh, kw]` weight, as the forward pass reads it or (`Flipped`) as the input
/// gradient does: the convolution with `w'[c, f, i, j] = w[f, c, kh−1−i, kw−1−j]`.
#[derive(Clone, Copy)]
enum Weights<'a> {
    Forward(&'a [f32]),
    Flipped(&'a [f32]),
}

impl Weights<'_> {
    /// Tap `t`'s `[oc, K]` matrix in `buf` as [`Weights::fill`] left it.
    fn tap(self, t: usize, (k, kk, oc): (usize, usize, usize), buf: &[f32]) -> Mat<'_> {
        match self {
            Weights::Forward(_) => Mat {
                data: &buf[t * oc..],
                rs: 1,
                cs: kk * oc,
            },
            Weights::Flipped(_) => Mat {
                data: &buf[t * k * oc..],
                rs: 1,
                cs: oc,
            },
        }
    }

    /// Fills `buf` with output channels `o0..o0 + oc` of every tap, the output channel
    /// fastest (`[C][kk][oc]` forward, `[kk][F][oc]` flipped), so that [`Weights::tap`] is the
    /// GEMM's left operand with its rows (output channels) contiguous. Read in place, a tap's
    /// `[K, F]` slice has no unit stride either way, and packing it gathered one value per
    /// cache line.
    fn fill(self, (f, c, kk): (usize, usize, usize), o0: usize, oc: usize, buf: &mut Vec<f32>) {
        match self {
            Weights::Forward(w) => {
                // A plain transpose of the part's rows `[oc][C·kk]` to `[C·kk][oc]`: tap `t`
                // is then every `kk`-th row from row `t` (see [`Weights::tap`]).
                buf.resize(kk * c * oc, 0.0);
                planes_to_rows(&w[o0 * c * kk..], c * kk, oc, c * kk, buf, oc);
            }
            Weights::Flipped(w) => {
                buf.resize(kk * f * oc, 0.0);
                for fi in 0..f {
                    let src = &w[(fi * c + o0) * kk..][..oc * kk];
                    for t in 0..kk {
                        let dst = &mut buf[(t * f + fi) * oc..][..oc];
                        for (d, v) in dst.iter_mut().zip(src.iter().skip(kk - 1 - t).step_by(kk)) {
                            *d = *v;
                        }
                    }
                }
            }
        }
    }
}

/// Output channels `[f0, f1)` of each part: as many parts as the pool has threads, in
/// multiples of 16 (a micro-kernel's width). Each part runs all its GEMMs on one thread
/// and packs only its own columns of the weight: left to the GEMM, a 2-thread split of
/// 144-256 rows packed each tap's `C x F` weight on both threads.
fn parts(f: usize) -> Vec<(usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    let per = (f.div_ceil(threads).div_ceil(16) * 16).max(1);
    (0..f)
        .step_by(per)
        .map(|f0| (f0, (f0 + per).min(f)))
        .collect()
}

/// One column (or row) shift of a tap: the output range `[dst0, dst0 + len)` that reads input
/// `[src0, src0 + len)` when the offset is `o` on an axis of `size` values.
#[derive(Clone, Copy)]
struct Shift {
    src0: usize,
    dst0: usize,
    len: usize,
}

fn shift(o: isize, size: usize) -> Shift {
    let a = o.unsigned_abs();
    Shift {
        src0: if o > 0 { a } else { 0 },
        dst0: if o < 0 { a } else { 0 },
        len: size.saturating_sub(a),
    }
}

/// Taps in the order the forward pass runs them: the centre row first (it covers every
/// output row, so it may overwrite), then the others.
fn row_order(kh: usize, ph: usize) -> impl Iterator<Item = usize> {
    std::iter::once(ph).chain((0..kh).filter(move |&i| i != ph))
}

/// `dst[((p·n_all) + n)·c + ch] = x[((n·c) + ch)·p_all + p]`: NCHW to batch-inner `[P][N][C]`.
fn to_batch_inner(x: &[f32], n_all: usize, c: usize, p_all: usize, dst: &mut [f32]) {
    const PX: usize = 8;
    let block = PX * n_all * c;
    dst[..p_all * n_all * c]
        .par_chunks_mut(block)
        .enumerate()
        .for_each(|(k, out)| {
            let p0 = k * PX;
            let w = out.len() / (n_all * c);
            for n in 0..n_all {
                let src = &x[n * c * p_all + p0..];
                planes_to_rows(src, p_all, c, w, &mut out[n * c..], n_all * c);
            }
        });
}

/// The inverse: batch-inner `[P][N][F]` back to NCHW `out[N][F][P]` (the forward pass does
/// it per part, in [`conv`]).
#[cfg(test)]
fn from_batch_inner(src: &[f32], n_all: usize, f: usize, p_all: usize, out: &mut [f32]) {
    out.par_chunks_mut(f * p_all)
        .enumerate()
        .for_each(|(n, out_n)| rows_to_planes(&src[n * f..], n_all * f, f, p_all, out_n, p_all));
}

/// `dst[px·ld + ch] = src[ch·plane + px]` for `px < w`, `ch < c`.
fn planes_to_rows(src: &[f32], plane: usize, c: usize, w: usize, dst: &mut [f32], ld: usize) {
    transpose(src, plane, c, w, dst, ld);
}

/// `dst[ch·plane + px] = src[px·ld + ch]` for `px < w`, `ch < c` (the transpose of
/// [`planes_to_rows`]).
fn rows_to_planes(src: &[f32], ld: usize, c: usize, w: usize, dst: &mut [f32], plane: usize) {
    transpose(src, ld, w, c, dst, plane);
}

/// Columns `start..start + len` of every row of a batch-inner `[H][W][N][C]` tensor
/// (`nc = N·C`), compact `[H][len][N][C]`, into a reused buffer.
fn gather_columns_into(
    src: &[f32],
    h: usize,
    w: usize,
    nc: usize,
    start: usize,
    len: usize,
    dst: &mut Vec<f32>,
) {
    let run = len * nc;
    dst.clear();
    for y in 0..h {
        dst.extend_from_slice(&src[(y * w + start) * nc..][..run]);
    }
}

/// Fills `cols[j]` with the input columns column shift `j` reads (or, `of_output`, the
/// output columns it writes), compact; the centre column's stays empty.
fn gather_shifts(
    src: &[f32],
    (h, w, nc): (usize, usize, usize),
    (kw, pw): (usize, usize),
    of_output: bool,
    cols: &mut Vec<Vec<f32>>,
) {
    cols.resize_with(kw, Vec::new);
    for (j, dst) in cols.iter_mut().enumerate() {
        let sx = shift(j as isize - pw as isize, w);
        dst.clear();
        if j != pw && sx.len > 0 {
            let start = if of_output { sx.dst0 } else { sx.src0 };
            gather_columns_into(src, h, w, nc, start, sx.len, dst);
        }
    }
}

/// A convolution with `c` input and `f` output channels on `[n, c, h, w]` planes, kernel
/// `kh x kw` with "same" padding `(ph, pw)` and weight `wts`; `out` (`[n, f, h, w]`) is
/// overwritten (bias added if given).
fn conv(
    (n, c, f, h, w): (usize, usize, usize, usize, usize),
    (kh, kw, ph, pw): (usize, usize, usize, usize),
    x: &[f32],
    wts: Weights<'_>,
    b: Option<&[f32]>,
    out: &mut [f32],
) {
    let p = h * w;
    let parts = parts(f);
    with_shared(|s| {
        let Shared { xh, yh, xcols, .. } = s;
        xh.resize(p * n * c, 0.0);
        to_batch_inner(x, n, c, p, xh);
        gather_shifts(xh, (h, w, n * c), (kw, pw), false, xcols);
        yh.resize(p * n * f, 0.0);
        let mut blocks = Vec::with_capacity(parts.len());
        let mut rest = &mut yh[..];
        for &(f0, f1) in &parts {
            let (block, r) = rest.split_at_mut(p * n * (f1 - f0));
            blocks.push((f0, f1, block));
            rest = r;
        }
        let (xh, xcols) = (&*xh, &*xcols);
        blocks.into_par_iter().for_each(|(f0, f1, yp)| {
            let fc = f1 - f0;
            if let Some(b) = b {
                for row in yp.chunks_exact_mut(fc) {
                    row.copy_from_slice(&b[f0..f1]);
                }
            }
            with_part(|Part { acc, wt }| {
                let dims = match wts {
                    Weights::Forward(_) => (f, c, kh * kw),
                    Weights::Flipped(_) => (c, f, kh * kw),
                };
                wts.fill(dims, f0, fc, wt);
                // The centre column first: it writes the part's output over every column.
                for j in std::iter::once(pw).chain((0..kw).filter(|&j| j != pw)) {
                    let sx = shift(j as isize - pw as isize, w);
                    if sx.len == 0 {
                        continue;
                    }
                    let centre = j == pw;
                    let src: &[f32] = if centre { xh } else { &xcols[j] };
                    let run = sx.len * n;
                    let dst: &mut [f32] = if centre {
                        &mut *yp
                    } else {
                        acc.resize(h * run * fc, 0.0);
                        &mut acc[..]
                    };
                    for (k, i) in row_order(kh, ph).enumerate() {
                        let sy = shift(i as isize - ph as isize, h);
                        if sy.len == 0 {
                            continue;
                        }
                        // The centre row covers the whole buffer: it overwrites, unless the
                        // buffer is the output already holding the bias.
                        let accumulate = k > 0 || (centre && b.is_some());
                        // Transposed, `out[q, o]ᵀ = wᵀ · x[q, ·]ᵀ`: both operands and the
                        // output then run along the GEMM's vector dimension in memory.
                        gemm_strided(
                            fc,
                            sy.len * run,
                            c,
                            wts.tap(i * kw + j, (c, kh * kw, fc), wt),
                            Mat {
                                data: &src[sy.src0 * run * c..],
                                rs: 1,
                                cs: c,
                            },
                            &mut dst[sy.dst0 * run * fc..],
                            (1, fc),
                            accumulate,
                            gemm::Parallelism::None,
                        );
                    }
                    if !centre {
                        let len = run * fc;
                        for (row, a) in yp.chunks_exact_mut(w * n * fc).zip(acc.chunks_exact(len)) {
                            add_row(&mut row[sx.dst0 * n * fc..][..len], a);
                        }
                    }
                }
            });
        });
        let yh = &*yh;
        out.par_chunks_mut(f * p)
            .enumerate()
            .for_each(|(ni, out_n)| {
                let mut at = 0;
                for &(f0, f1) in &parts {
                    let fc = f1 - f0;
                    let block = &yh[at..at + p * n * fc];
                    rows_to_planes(&block[ni * fc..], n * fc, fc, p, &mut out_n[f0 * p..], p);
                    at += p * n * fc;
                }
            });
    });
}

/// Forward pass: `out[n, f] = b[f] + Σ_c w[f, c] ⋆ x[n, c]`.
pub(super) fn forward(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    conv(
        (g.n, g.c, g.f, g.h, g.w),
        (g.kh, g.kw, g.ph, g.pw),
        x,
        Weights::Forward(w),
        b,
        out,
    );
}

/// Input gradient: the same convolution of `dy` with the flipped, transposed weight. `dx` is
/// overwritten.
pub(super) fn input_grad(g: &Geom, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    conv(
        (g.n, g.f, g.c, g.h, g.w),
        (g.kh, g.kw, g.ph, g.pw),
        dy,
        Weights::Flipped(w),
        None,
        dx,
    );
}

/// Weight gradient `[F, C, kh, kw]`: for tap `(i, j)`, `dw[·, ·, i, j] = dyᵀ · x` over the
/// output rows whose tap reads inside the plane; the output channels split into parts as in
/// [`conv`], each part's GEMMs on one thread.
pub(super) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (n, c, f, h, w) = (g.n, g.c, g.f, g.h, g.w);
    let (kh, kw, kk) = (g.kh, g.kw, g.kh * g.kw);
    let p = h * w;
    let mut dw = vec![0.0f32; f * c * kk];
    let per = parts(f).first().map_or(f, |&(f0, f1)| f1 - f0).max(1);
    with_shared(|s| {
        let Shared {
            xh,
            yh,
            xcols,
            ycols,
        } = s;
        xh.resize(p * n * c, 0.0);
        to_batch_inner(x, n, c, p, xh);
        yh.resize(p * n * f, 0.0);
        to_batch_inner(dy, n, f, p, yh);
        gather_shifts(xh, (h, w, n * c), (kw, g.pw), false, xcols);
        gather_shifts(yh, (h, w, n * f), (kw, g.pw), true, ycols);
        let (xh, yh, xcols, ycols) = (&*xh, &*yh, &*xcols, &*ycols);
        // Each tap's GEMM writes a contiguous `[fs][C]` block of a temporary, and the taps
        // are interleaved into `[F, C, kh, kw]` after: written in place, at a column stride of
        // `kh·kw`, the GEMM ran at half its speed. Blocks of output channels keep the
        // temporary near 1 M values.
        let fs = ((1usize << 20) / (kk * c).max(1)).div_ceil(16).max(1) * 16;
        dw.par_chunks_mut(per * c * kk)
            .enumerate()
            .for_each(|(part, dwp)| {
                with_part(|Part { wt: tmp, .. }| {
                    for (blk, dwb) in dwp.chunks_mut(fs * c * kk).enumerate() {
                        let (f0, fc) = (part * per + blk * fs, dwb.len() / (c * kk));
                        tmp.clear();
                        tmp.resize(kk * fc * c, 0.0);
                        for j in 0..kw {
                            let sx = shift(j as isize - g.pw as isize, w);
                            if sx.len == 0 {
                                continue;
                            }
                            let (xsrc, dsrc): (&[f32], &[f32]) = if j == g.pw {
                                (xh, yh)
                            } else {
                                (&xcols[j], &ycols[j])
                            };
                            let run = sx.len * n;
                            for i in 0..kh {
                                let sy = shift(i as isize - g.ph as isize, h);
                                if sy.len == 0 {
                                    continue;
                                }
                                gemm_strided(
                                    fc,
                                    c,
                                    sy.len * run,
                                    Mat {
                                        data: &dsrc[sy.dst0 * run * f + f0..],
                                        rs: 1,
                                        cs: f,
                                    },
                                    Mat::rows(&xsrc[sy.src0 * run * c..], c),
                                    &mut tmp[(i * kw + j) * fc * c..],
                                    (c, 1),
                                    false,
                                    gemm::Parallelism::None,
                                );
                            }
                        }
                        for fi in 0..fc {
                            transpose(&tmp[fi * c..], fc * c, kk, c, &mut dwb[fi * c * kk..], kk);
                        }
                    }
                });
            });
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_inner_layout_round_trips() {
        for (n, c, p) in [(1, 1, 1), (3, 5, 7), (2, 8, 16), (4, 11, 9), (5, 16, 64)] {
            let x: Vec<f32> = (0..n * c * p).map(|v| v as f32).collect();
            let mut h = vec![f32::NAN; n * c * p];
            to_batch_inner(&x, n, c, p, &mut h);
            for ni in 0..n {
                for ch in 0..c {
                    for px in 0..p {
                        assert_eq!(h[(px * n + ni) * c + ch], x[(ni * c + ch) * p + px]);
                    }
                }
            }
            let mut back = vec![f32::NAN; n * c * p];
            from_batch_inner(&h, n, c, p, &mut back);
            assert_eq!(back, x, "n {n} c {c} p {p}");
        }
    }

    #[test]
    fn shifts_cover_the_in_bounds_outputs() {
        for size in 1..6 {
            for o in -2isize..=2 {
                let s = shift(o, size);
                for x in 0..size {
                    let inside = (0..size as isize).contains(&(x as isize + o));
                    let covered = x >= s.dst0 && x < s.dst0 + s.len;
                    assert_eq!(inside, covered, "size {size} o {o} x {x}");
                    if covered {
                        assert_eq!((x as isize + o) as usize, s.src0 + (x - s.dst0));
                    }
                }
            }
        }
    }
}
