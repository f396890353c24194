//! The CPU bodies of the 2-D convolution extension: f32, NCHW, dilation 1, on plain slices.
//!
//! - General case (any kernel, stride, padding, groups): per sample, tiled over output rows,
//!   an im2col tile of at most [`COL_BUDGET`] values feeds one GEMM per group. The input
//!   gradient is the transposed GEMM followed by col2im, the weight gradient a GEMM against
//!   the same tile accumulated over samples. Tiling bounds the scratch memory a training step
//!   adds (a whole-batch im2col of a ResNet's first stage would be 9x its activations) and
//!   keeps the tile in L2 while the GEMM streams it.
//! - 1x1, stride 1, no padding: the input plane already is the im2col matrix, so no copy.
//! - Depthwise (groups = C_in = C_out): direct loops over planes, one kernel tap at a time,
//!   so the inner loop is a contiguous axpy (or dot product) the compiler vectorises.
//!
//! Work is split over samples (depthwise: over planes or channels) on rayon's pool, each
//! GEMM single-threaded inside; with fewer samples than threads the GEMM itself is
//! parallel instead. Weight gradients are summed per chunk of samples and the chunks added
//! in a fixed order, so results do not depend on scheduling.

use rayon::prelude::*;

/// Largest im2col tile (values) a worker keeps: 256 KiB, a quarter of a core's L2 here.
const COL_BUDGET: usize = 1 << 16;

/// Shape of one convolution; built and checked by the caller ([`super::Geometry::new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub f: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub ph: usize,
    pub pw: usize,
    pub groups: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Geom {
    fn cg(&self) -> usize {
        self.c / self.groups
    }
    fn fg(&self) -> usize {
        self.f / self.groups
    }
    /// im2col rows of one group.
    fn ck(&self) -> usize {
        self.cg() * self.kh * self.kw
    }
    fn p(&self) -> usize {
        self.oh * self.ow
    }
    fn in_sample(&self) -> usize {
        self.c * self.h * self.w
    }
    fn out_sample(&self) -> usize {
        self.f * self.p()
    }
    fn pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.ph == 0 && self.pw == 0
    }
    fn depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.groups == self.f
    }
    /// Output rows per im2col tile.
    fn tile_rows(&self) -> usize {
        (COL_BUDGET / (self.c * self.kh * self.kw * self.ow).max(1)).clamp(1, self.oh.max(1))
    }
}

/// Output positions `o` in `[lo, hi)` whose input index `o*s + k - p` lies in `[0, len)`.
fn valid_range(out_len: usize, k: usize, s: usize, p: usize, len: usize) -> (usize, usize) {
    let lo = if p > k { (p - k).div_ceil(s) } else { 0 };
    let hi = if len + p > k {
        ((len - 1 + p - k) / s + 1).min(out_len)
    } else {
        0
    };
    (lo.min(hi), hi)
}

/// A strided read-only matrix: element (i, j) at `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rs: usize,
    cs: usize,
}

impl<'a> Mat<'a> {
    pub(crate) fn rows(data: &'a [f32], rs: usize) -> Self {
        Mat { data, rs, cs: 1 }
    }
    pub(crate) fn t(self) -> Self {
        Mat {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Whether the GEMMs of one pass run on one thread (the pass is parallel over samples) or
/// use the whole pool (too few samples to share out).
pub(crate) fn inner_parallelism(samples: usize) -> gemm::Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && samples < threads {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    }
}

/// `c[i*ldc + j] ← (c +) Σ_p a(i,p)·b(p,j)` for `i < m`, `j < n`.
///
/// [`crate::kernels::gemm::matmul`] picks its own parallelism from the global pool, which
/// would nest inside the per-sample loop here; this one takes it from the caller and writes
/// with a row stride, so a tile lands in place inside a larger output plane.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && (m - 1) * ldc + n <= c.len(),
        "conv gemm: output too short"
    );
    if k == 0 {
        if !accumulate {
            for row in c.chunks_mut(ldc).take(m) {
                row[..n].fill(0.0);
            }
        }
        return;
    }
    assert!(
        a.fits(m, k) && b.fits(k, n),
        "conv gemm: a view reaches past its slice"
    );
    let stride = |s: usize| isize::try_from(s).unwrap_or(isize::MAX);
    // SAFETY: gemm reads a.data[i*rs + p*cs] for i < m, p < k and b.data likewise for p < k,
    // j < n, all bounded by the slice lengths (`fits`); it writes c[i*ldc + j] for i < m,
    // j < n, bounded by the length check above; `c` is a unique borrow distinct from a, b.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            stride(ldc),
            accumulate,
            a.data.as_ptr(),
            stride(a.cs),
            stride(a.rs),
            b.data.as_ptr(),
            stride(b.cs),
            stride(b.rs),
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `col[(c, i, j), (o - r0, ow)]` for output rows `r0..r1` of one sample, all channels.
fn im2col(g: &Geom, x: &[f32], r0: usize, r1: usize, col: &mut [f32]) {
    let t = (r1 - r0) * g.ow;
    let hw = g.h * g.w;
    for ch in 0..g.c {
        let plane = &x[ch * hw..(ch + 1) * hw];
        for i in 0..g.kh {
            let (hlo, hhi) = valid_range(g.oh, i, g.sh, g.ph, g.h);
            for j in 0..g.kw {
                let (lo, hi) = valid_range(g.ow, j, g.sw, g.pw, g.w);
                let row = &mut col[((ch * g.kh + i) * g.kw + j) * t..][..t];
                for (o, dst) in (r0..r1).zip(row.chunks_exact_mut(g.ow)) {
                    if o < hlo || o >= hhi || lo >= hi {
                        dst.fill(0.0);
                        continue;
                    }
                    let ih = o * g.sh + i - g.ph;
                    let src = &plane[ih * g.w..(ih + 1) * g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    let start = lo * g.sw + j - g.pw;
                    if g.sw == 1 {
                        dst[lo..hi].copy_from_slice(&src[start..start + hi - lo]);
                    } else {
                        for (d, s) in dst[lo..hi]
                            .iter_mut()
                            .zip(src[start..].iter().step_by(g.sw))
                        {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds `col` into the input-gradient plane set `dx`.
fn col2im(g: &Geom, col: &[f32], r0: usize, r1: usize, dx: &mut [f32]) {
    let t = (r1 - r0) * g.ow;
    let hw = g.h * g.w;
    for ch in 0..g.c {
        let plane = &mut dx[ch * hw..(ch + 1) * hw];
        for i in 0..g.kh {
            let (hlo, hhi) = valid_range(g.oh, i, g.sh, g.ph, g.h);
            for j in 0..g.kw {
                let (lo, hi) = valid_range(g.ow, j, g.sw, g.pw, g.w);
                if lo >= hi {
                    continue;
                }
                let row = &col[((ch * g.kh + i) * g.kw + j) * t..][..t];
                for (o, src) in (r0..r1).zip(row.chunks_exact(g.ow)) {
                    if o < hlo || o >= hhi {
                        continue;
                    }
                    let ih = o * g.sh + i - g.ph;
                    let dst = &mut plane[ih * g.w..(ih + 1) * g.w];
                    let start = lo * g.sw + j - g.pw;
                    if g.sw == 1 {
                        for (d, s) in dst[start..start + hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    } else {
                        for (d, s) in dst[start..].iter_mut().step_by(g.sw).zip(&src[lo..hi]) {
                            *d += *s;
                        }
                    }
                }
            }
        }
    }
}

/// Samples per parallel chunk: about four chunks per thread, so a thread slowed by another
/// process does not hold up the pass.
pub(crate) fn samples_per_chunk(n: usize) -> usize {
    let chunks = (4 * rayon::current_num_threads()).min(n).max(1);
    n.div_ceil(chunks).max(1)
}

/// Forward: `out[n, f, p] = b[f] + Σ w[f, ·] x[n, ·]`.
pub(crate) fn forward(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    if g.n == 0 || g.out_sample() == 0 {
        return;
    }
    if g.depthwise() {
        depthwise_forward(g, x, w, b, out);
        return;
    }
    let par = inner_parallelism(g.n);
    let per = samples_per_chunk(g.n);
    out.par_chunks_mut(per * g.out_sample())
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut col = Vec::new();
            for (s, out_n) in chunk.chunks_mut(g.out_sample()).enumerate() {
                let n = k * per + s;
                let x_n = &x[n * g.in_sample()..][..g.in_sample()];
                forward_sample(g, x_n, w, b, out_n, &mut col, par);
            }
        });
}

fn forward_sample(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    col: &mut Vec<f32>,
    par: gemm::Parallelism,
) {
    let (p, fg, ck) = (g.p(), g.fg(), g.ck());
    if let Some(b) = b {
        for (row, &bf) in out.chunks_exact_mut(p).zip(b) {
            row.fill(bf);
        }
    }
    let acc = b.is_some();
    if g.pointwise() {
        for grp in 0..g.groups {
            gemm(
                fg,
                p,
                ck,
                Mat::rows(&w[grp * fg * ck..], ck),
                Mat::rows(&x[grp * ck * p..], p),
                &mut out[grp * fg * p..],
                p,
                acc,
                par,
            );
        }
        return;
    }
    let rows = g.tile_rows();
    for r0 in (0..g.oh).step_by(rows) {
        let r1 = (r0 + rows).min(g.oh);
        let t = (r1 - r0) * g.ow;
        col.resize(g.groups * ck * t, 0.0);
        im2col(g, x, r0, r1, col);
        for grp in 0..g.groups {
            gemm(
                fg,
                t,
                ck,
                Mat::rows(&w[grp * fg * ck..], ck),
                Mat::rows(&col[grp * ck * t..], t),
                &mut out[grp * fg * p + r0 * g.ow..],
                p,
                acc,
                par,
            );
        }
    }
}

/// Input gradient: `dx[n] = Σ_f w[f, ·]ᵀ dy[n, f]`, folded back onto the input.
pub(crate) fn input_grad(g: &Geom, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    if g.n == 0 || g.in_sample() == 0 {
        return;
    }
    if g.depthwise() {
        depthwise_input_grad(g, w, dy, dx);
        return;
    }
    let par = inner_parallelism(g.n);
    let per = samples_per_chunk(g.n);
    dx.par_chunks_mut(per * g.in_sample())
        .enumerate()
        .for_each(|(k, chunk)| {
            let mut col = Vec::new();
            for (s, dx_n) in chunk.chunks_mut(g.in_sample()).enumerate() {
                let n = k * per + s;
                let dy_n = &dy[n * g.out_sample()..][..g.out_sample()];
                input_grad_sample(g, w, dy_n, dx_n, &mut col, par);
            }
        });
}

fn input_grad_sample(
    g: &Geom,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    col: &mut Vec<f32>,
    par: gemm::Parallelism,
) {
    let (p, fg, ck) = (g.p(), g.fg(), g.ck());
    if g.pointwise() {
        for grp in 0..g.groups {
            gemm(
                ck,
                p,
                fg,
                Mat::rows(&w[grp * fg * ck..], ck).t(),
                Mat::rows(&dy[grp * fg * p..], p),
                &mut dx[grp * ck * p..],
                p,
                false,
                par,
            );
        }
        return;
    }
    dx.fill(0.0);
    let rows = g.tile_rows();
    for r0 in (0..g.oh).step_by(rows) {
        let r1 = (r0 + rows).min(g.oh);
        let t = (r1 - r0) * g.ow;
        col.resize(g.groups * ck * t, 0.0);
        for grp in 0..g.groups {
            gemm(
                ck,
                t,
                fg,
                Mat::rows(&w[grp * fg * ck..], ck).t(),
                Mat::rows(&dy[grp * fg * p + r0 * g.ow..], p),
                &mut col[grp * ck * t..],
                t,
                false,
                par,
            );
        }
        col2im(g, col, r0, r1, dx);
    }
}

/// Weight gradient: `dw[f, ·] = Σ_n dy[n, f] x[n, ·]ᵀ` (im2col'd), `[F, C/groups, kh, kw]`.
pub(crate) fn weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let len = g.f * g.ck();
    if g.n == 0 || len == 0 {
        return vec![0.0; len];
    }
    if g.depthwise() {
        return depthwise_weight_grad(g, x, dy);
    }
    let par = inner_parallelism(g.n);
    let per = samples_per_chunk(g.n);
    let chunks = g.n.div_ceil(per);
    let partial: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|k| {
            let mut acc = vec![0.0f32; len];
            let mut col = Vec::new();
            for n in k * per..((k + 1) * per).min(g.n) {
                let x_n = &x[n * g.in_sample()..][..g.in_sample()];
                let dy_n = &dy[n * g.out_sample()..][..g.out_sample()];
                weight_grad_sample(g, x_n, dy_n, &mut acc, &mut col, par);
            }
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0.0; len]);
    for part in parts {
        for (d, s) in dw.iter_mut().zip(&part) {
            *d += *s;
        }
    }
    dw
}

fn weight_grad_sample(
    g: &Geom,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
    col: &mut Vec<f32>,
    par: gemm::Parallelism,
) {
    let (p, fg, ck) = (g.p(), g.fg(), g.ck());
    if g.pointwise() {
        for grp in 0..g.groups {
            gemm(
                fg,
                ck,
                p,
                Mat::rows(&dy[grp * fg * p..], p),
                Mat::rows(&x[grp * ck * p..], p).t(),
                &mut dw[grp * fg * ck..],
                ck,
                true,
                par,
            );
        }
        return;
    }
    let rows = g.tile_rows();
    for r0 in (0..g.oh).step_by(rows) {
        let r1 = (r0 + rows).min(g.oh);
        let t = (r1 - r0) * g.ow;
        col.resize(g.groups * ck * t, 0.0);
        im2col(g, x, r0, r1, col);
        for grp in 0..g.groups {
            gemm(
                fg,
                ck,
                t,
                Mat::rows(&dy[grp * fg * p + r0 * g.ow..], p),
                Mat::rows(&col[grp * ck * t..], t).t(),
                &mut dw[grp * fg * ck..],
                ck,
                true,
                par,
            );
        }
    }
}

/// Bias gradient: `db[f] = Σ_{n, p} dy[n, f, p]`, summed per row in f32 lanes and across
/// rows in f64.
pub(crate) fn bias_grad(dy: &[f32], n: usize, f: usize, p: usize) -> Vec<f32> {
    (0..f)
        .into_par_iter()
        .map(|fi| {
            let total: f64 = (0..n)
                .map(|ni| f64::from(sum(&dy[(ni * f + fi) * p..][..p])))
                .sum();
            total as f32
        })
        .collect()
}

/// Sum in eight independent lanes, which the compiler keeps in one vector register.
fn sum(v: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = v.chunks_exact(8);
    for c in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(c) {
            *l += *x;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// Dot product in eight independent lanes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..8 {
            lanes[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    lanes.iter().sum::<f32>() + tail
}

/// One depthwise tap `(i, j)` visits output rows `o` in `[hlo, hhi)` and columns in
/// `[lo, hi)`; input row `o*sh + i - ph`, column `q*sw + j - pw`.
struct Tap {
    hlo: usize,
    hhi: usize,
    lo: usize,
    hi: usize,
    i: usize,
    j: usize,
}

fn taps(g: &Geom) -> Vec<Tap> {
    let mut taps = Vec::with_capacity(g.kh * g.kw);
    for i in 0..g.kh {
        let (hlo, hhi) = valid_range(g.oh, i, g.sh, g.ph, g.h);
        for j in 0..g.kw {
            let (lo, hi) = valid_range(g.ow, j, g.sw, g.pw, g.w);
            if hlo < hhi && lo < hi {
                taps.push(Tap {
                    hlo,
                    hhi,
                    lo,
                    hi,
                    i,
                    j,
                });
            }
        }
    }
    taps
}

fn depthwise_forward(g: &Geom, x: &[f32], w: &[f32], b: Option<&[f32]>, out: &mut [f32]) {
    let (p, hw, kk) = (g.p(), g.h * g.w, g.kh * g.kw);
    let taps = taps(g);
    out.par_chunks_mut(p).enumerate().for_each(|(plane, y)| {
        let ch = plane % g.c;
        let xp = &x[plane * hw..][..hw];
        y.fill(b.map_or(0.0, |b| b[ch]));
        for tap in &taps {
            let wv = w[ch * kk + tap.i * g.kw + tap.j];
            let start = tap.lo * g.sw + tap.j - g.pw;
            for o in tap.hlo..tap.hhi {
                let src = &xp[(o * g.sh + tap.i - g.ph) * g.w..][..g.w];
                let dst = &mut y[o * g.ow + tap.lo..o * g.ow + tap.hi];
                if g.sw == 1 {
                    for (d, s) in dst.iter_mut().zip(&src[start..]) {
                        *d += wv * *s;
                    }
                } else {
                    for (d, s) in dst.iter_mut().zip(src[start..].iter().step_by(g.sw)) {
                        *d += wv * *s;
                    }
                }
            }
        }
    });
}

fn depthwise_input_grad(g: &Geom, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    let (p, hw, kk) = (g.p(), g.h * g.w, g.kh * g.kw);
    let taps = taps(g);
    dx.par_chunks_mut(hw).enumerate().for_each(|(plane, dxp)| {
        let ch = plane % g.c;
        let dyp = &dy[plane * p..][..p];
        dxp.fill(0.0);
        for tap in &taps {
            let wv = w[ch * kk + tap.i * g.kw + tap.j];
            let start = tap.lo * g.sw + tap.j - g.pw;
            for o in tap.hlo..tap.hhi {
                let dst = &mut dxp[(o * g.sh + tap.i - g.ph) * g.w..][..g.w];
                let src = &dyp[o * g.ow + tap.lo..o * g.ow + tap.hi];
                if g.sw == 1 {
                    for (d, s) in dst[start..].iter_mut().zip(src) {
                        *d += wv * *s;
                    }
                } else {
                    for (d, s) in dst[start..].iter_mut().step_by(g.sw).zip(src) {
                        *d += wv * *s;
                    }
                }
            }
        }
    });
}

fn depthwise_weight_grad(g: &Geom, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (p, hw, kk) = (g.p(), g.h * g.w, g.kh * g.kw);
    let taps = taps(g);
    let mut dw = vec![0.0f32; g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(ch, dwc)| {
        let mut acc = vec![0.0f64; kk];
        let mut gathered = Vec::with_capacity(g.ow);
        for n in 0..g.n {
            let plane = n * g.c + ch;
            let xp = &x[plane * hw..][..hw];
            let dyp = &dy[plane * p..][..p];
            for tap in &taps {
                let start = tap.lo * g.sw + tap.j - g.pw;
                let mut s = 0.0f32;
                for o in tap.hlo..tap.hhi {
                    let src = &xp[(o * g.sh + tap.i - g.ph) * g.w..][..g.w];
                    let d = &dyp[o * g.ow + tap.lo..o * g.ow + tap.hi];
                    if g.sw == 1 {
                        s += dot(d, &src[start..start + d.len()]);
                    } else {
                        gathered.clear();
                        gathered.extend(src[start..].iter().step_by(g.sw).take(d.len()));
                        s += dot(d, &gathered);
                    }
                }
                acc[tap.i * g.kw + tap.j] += f64::from(s);
            }
        }
        for (d, a) in dwc.iter_mut().zip(&acc) {
            *d = *a as f32;
        }
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ranges_cover_exactly_the_in_bounds_outputs() {
        for len in 1..9 {
            for k in 0..4 {
                for s in 1..4 {
                    for p in 0..3 {
                        if len + 2 * p < k + 1 {
                            continue;
                        }
                        let out_len = (len + 2 * p - (k + 1)) / s + 1;
                        let (lo, hi) = valid_range(out_len, k, s, p, len);
                        for o in 0..out_len {
                            let idx = (o * s + k) as isize - p as isize;
                            let inside = idx >= 0 && (idx as usize) < len;
                            assert_eq!(inside, o >= lo && o < hi, "len {len} k {k} s {s} p {p}");
                        }
                    }
                }
            }
        }
    }
}
