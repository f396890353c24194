//! The CPU bodies of the 2-D convolution extension: f32, NCHW, dilation 1, on plain slices.
//!
//! - General case (any kernel, stride, padding, groups): per sample, tiled over output rows,
//!   an im2col tile of at most [`COL_BUDGET`] values feeds one GEMM per group. The input
//!   gradient is the transposed GEMM followed by col2im, the weight gradient a GEMM against
//!   the same tile accumulated over samples. Tiling bounds the scratch memory a training step
//!   adds (a whole-batch im2col of a ResNet's first stage would be 9x its activations) and
//!   keeps the tile in L2 while the GEMM streams it.
//! - 1x1, stride 1, no padding: the input plane already is the im2col matrix, so no copy.
//! - Stride-1 "same" layers: Winograd F(2x2, 3x3) ([`winograd`]) where the batch has enough
//!   tiles, the batch-inner per-tap GEMMs ([`batch_inner`]) for many channels on small planes,
//!   and the shifted-plane GEMMs ([`shift_conv`]) for few channels on large planes.
//! - Depthwise (groups = C_in = C_out): direct loops over planes, one kernel tap at a time,
//!   so the inner loop is a contiguous axpy (or dot product) the compiler vectorises.
//!
//! Work is split over samples (depthwise: over planes or channels) on rayon's pool, each
//! GEMM single-threaded inside; with fewer samples than threads the GEMM itself is
//! parallel instead. Weight gradients are summed per chunk of samples and the chunks added
//! in a fixed order, so results do not depend on scheduling.

use std::cell::RefCell;

use rayon::prelude::*;

/// Compiles `$body` three times — for AVX-512, for AVX2 + FMA and for the baseline — and
/// runs the widest this CPU has. The workspace is built for baseline x86-64 (SSE2), so without
/// this the Winograd transforms' adds ran four lanes wide on a machine with sixteen; the
/// GEMMs already choose their kernels at run time. Only the vector width changes: Rust never
/// contracts a multiply and an add into an FMA, so element-wise code gives the same bits in
/// every variant. Exported for the other crates' hot loops (`ferrolab_core::widest!`).
#[macro_export]
macro_rules! widest {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn wide($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn mid($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: `wide` only requires the CPU features checked just above.
                    #[allow(unsafe_code)]
                    unsafe {
                        wide($($arg),*)
                    };
                    return;
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: `mid` only requires the CPU features checked just above.
                    #[allow(unsafe_code)]
                    unsafe {
                        mid($($arg),*)
                    };
                    return;
                }
            }
            $body($($arg),*)
        }
    };
}

mod batch_inner;
mod winograd;

/// Largest im2col block (values) a worker keeps: 1 MiB.
const COL_BUDGET: usize = 1 << 18;

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
    /// Stride 1 and output size = input size ("same" padding): each tap's im2col row is
    /// then the input plane shifted by a constant offset, with a few wrapped columns zeroed.
    fn same_stride1(&self) -> bool {
        self.sh == 1
            && self.sw == 1
            && self.oh == self.h
            && self.ow == self.w
            && self.ph < self.kh
            && self.pw < self.kw
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
    assert!(m == 0 || ldc >= n, "conv gemm: output rows overlap");
    gemm_strided(m, n, k, a, b, c, (ldc, 1), accumulate, par);
}

/// [`gemm`] with the output at `c[i*ld.0 + j*ld.1]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    (rs, cs): (usize, usize),
    accumulate: bool,
    par: gemm::Parallelism,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * rs + (n - 1) * cs < c.len(),
        "conv gemm: output too short"
    );
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c[i * rs + j * cs] = 0.0;
                }
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
    // j < n, all bounded by the slice lengths (`fits`); it writes c[i*rs + j*cs] for i < m,
    // j < n, bounded by the length check above; `c` is a unique borrow distinct from a, b.
    #[allow(unsafe_code)]
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            stride(cs),
            stride(rs),
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

/// Scratch buffers of one worker, reused across its samples.
#[derive(Default)]
struct Scratch {
    /// im2col block, `[C·kh·kw, T]`.
    col: Vec<f32>,
    /// Output (or output-gradient) block gathered from several samples, `[F, T]`.
    y: Vec<f32>,
    /// Zero-padded input rows of one channel.
    pad: Vec<f32>,
    /// Zero-padded planes of one sample for [`shift_conv`], and the `(channels, plane
    /// length, pitch, rows)` they were laid out for: while it matches, the borders are still
    /// zero and only the interior is rewritten.
    shift: Vec<f32>,
    shift_layout: (usize, usize, usize, usize),
}

thread_local! {
    /// Each worker's scratch, kept between calls: a training step runs the same shapes
    /// again and again, and fresh buffers cost page faults and zeroing every time.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` on this thread's scratch in `key` (a fresh one if a GEMM running on the whole pool
/// made this thread pick up a second block while the first holds it), then `trim`s it.
fn with_thread_scratch<S: Default + 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<S>>,
    f: impl FnOnce(&mut S) -> R,
    trim: fn(&mut S),
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut guard) => {
            let r = f(&mut guard);
            trim(&mut guard);
            r
        }
        Err(_) => f(&mut S::default()),
    })
}

/// Runs `f` on this thread's [`Scratch`], then drops buffers that grew past four blocks so
/// one huge layer does not pin its scratch for the process.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    with_thread_scratch(&SCRATCH, f, |s| {
        for v in [&mut s.col, &mut s.y, &mut s.pad] {
            if v.capacity() > 4 * COL_BUDGET {
                *v = Vec::new();
            }
        }
        if s.shift.capacity() > 4 * COL_BUDGET {
            s.shift = Vec::new();
            s.shift_layout = (0, 0, 0, 0);
        }
    })
}

/// One block of output columns handed to a GEMM: whole samples `n0..n1`, or output rows
/// `r0..r1` of the single sample `n0` (then `n1 == n0 + 1`).
#[derive(Debug, Clone, Copy)]
struct Block {
    n0: usize,
    n1: usize,
    r0: usize,
    r1: usize,
}

impl Block {
    fn samples(&self) -> usize {
        self.n1 - self.n0
    }
    /// Columns: output positions in the block.
    fn cols(&self, g: &Geom) -> usize {
        self.samples() * (self.r1 - self.r0) * g.ow
    }
    /// The block is part of one sample's output plane, so GEMMs read and write the
    /// sample's tensors in place (row stride `H'·W'`) instead of gathered copies.
    fn in_place(&self) -> bool {
        self.samples() == 1
    }
}

/// The blocks of samples `n0..n1`: several whole samples per block when a sample's im2col
/// is small (fewer, larger GEMMs: each call packs the weight again), else row tiles of one
/// sample.
fn blocks(g: &Geom, n0: usize, n1: usize) -> Vec<Block> {
    let per_sample = g.c * g.kh * g.kw * g.p();
    let mut v = Vec::new();
    if 2 * per_sample <= COL_BUDGET {
        let s = (COL_BUDGET / per_sample.max(1)).max(1);
        let mut n = n0;
        while n < n1 {
            let e = (n + s).min(n1);
            v.push(Block {
                n0: n,
                n1: e,
                r0: 0,
                r1: g.oh,
            });
            n = e;
        }
    } else {
        let rows = g.tile_rows();
        for n in n0..n1 {
            for r0 in (0..g.oh).step_by(rows) {
                v.push(Block {
                    n0: n,
                    n1: n + 1,
                    r0,
                    r1: (r0 + rows).min(g.oh),
                });
            }
        }
    }
    v
}

/// `dst[j·dst_ld + i] = src[i·src_ld + j]` for `i < rows`, `j < cols`: a strided block
/// transposed, eight by eight. With AVX each 8x8 tile is eight vector loads, three rounds
/// of shuffles and eight vector stores; the portable tile loop it replaces compiled to a
/// scalar load and store per value (a quarter of a 512 -> 1024 layer's forward pass went
/// to transposing its weight).
pub(crate) fn transpose(
    src: &[f32],
    src_ld: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_ld: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        (rows - 1) * src_ld + cols <= src.len() && (cols - 1) * dst_ld + rows <= dst.len(),
        "transpose: a block reaches past its slice"
    );
    let (r8, c8) = (rows / 8 * 8, cols / 8 * 8);
    #[cfg(target_arch = "x86_64")]
    if r8 > 0 && c8 > 0 && std::is_x86_feature_detected!("avx") {
        // SAFETY: `transpose8_avx` needs AVX, checked just above; it reads rows `i..i+8`,
        // columns `j..j+8` of `src` and writes the mirrored block of `dst`, all inside the
        // bounds asserted above since `i + 8 <= rows` and `j + 8 <= cols`.
        #[allow(unsafe_code)]
        unsafe {
            for i in (0..r8).step_by(8) {
                for j in (0..c8).step_by(8) {
                    transpose8_avx(
                        src.as_ptr().add(i * src_ld + j),
                        src_ld,
                        dst.as_mut_ptr().add(j * dst_ld + i),
                        dst_ld,
                    );
                }
            }
        }
        transpose_edges(src, src_ld, rows, cols, dst, dst_ld, (r8, c8));
        return;
    }
    for i in (0..r8).step_by(8) {
        for j in (0..c8).step_by(8) {
            let mut tile = [[0.0f32; 8]; 8];
            for (k, t) in tile.iter_mut().enumerate() {
                t.copy_from_slice(&src[(i + k) * src_ld + j..][..8]);
            }
            for k in 0..8 {
                let out = &mut dst[(j + k) * dst_ld + i..][..8];
                for (o, t) in out.iter_mut().zip(&tile) {
                    *o = t[k];
                }
            }
        }
    }
    transpose_edges(src, src_ld, rows, cols, dst, dst_ld, (r8, c8));
}

/// The rows past `r8` and the columns past `c8` of [`transpose`], value by value.
fn transpose_edges(
    src: &[f32],
    src_ld: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_ld: usize,
    (r8, c8): (usize, usize),
) {
    for i in 0..rows {
        let from = if i < r8 { c8 } else { 0 };
        for (j, v) in src[i * src_ld..][..cols].iter().enumerate().skip(from) {
            dst[j * dst_ld + i] = *v;
        }
    }
}

/// One 8x8 tile of [`transpose`].
///
/// # Safety
/// The CPU has AVX; `src + r·src_ld + k` and `dst + r·dst_ld + k` are valid for `r, k < 8`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[allow(unsafe_code)]
unsafe fn transpose8_avx(src: *const f32, src_ld: usize, dst: *mut f32, dst_ld: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees the eight rows of eight values are in bounds.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|k| _mm256_loadu_ps(src.add(k * src_ld)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let out = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (k, v) in out.iter().enumerate() {
            _mm256_storeu_ps(dst.add(k * dst_ld), *v);
        }
    }
}

/// Copies `src` into `dst` (same length) in fixed 8-wide pieces, which compile to vector
/// moves: rows here are often 4-32 values, where a `memcpy` call costs more than the copy.
/// (Hence the element loop clippy would turn into `copy_from_slice`, i.e. `memcpy`.)
#[inline]
#[allow(clippy::manual_memcpy)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(8);
    let mut s = src.chunks_exact(8);
    for (a, b) in (&mut d).zip(&mut s) {
        for k in 0..8 {
            a[k] = b[k];
        }
    }
    for (a, b) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *a = *b;
    }
}

/// `dst += src` (same length), vectorised.
#[inline]
fn add_row(dst: &mut [f32], src: &[f32]) {
    for (a, b) in dst.iter_mut().zip(src) {
        *a += *b;
    }
}

/// Input rows a tile of output rows `r0..r1` reads, as padded-row indices
/// `r0·sh .. (r1-1)·sh + kh`, and the padded width.
fn padded_extent(g: &Geom, r0: usize, r1: usize) -> (usize, usize) {
    ((r1 - r0 - 1) * g.sh + g.kh, g.w + 2 * g.pw)
}

/// Writes the zero-padded input rows of one channel plane that the output rows `r0..r1`
/// read into `pad` (`rows × wp`).
fn pad_rows(g: &Geom, plane: &[f32], r0: usize, r1: usize, pad: &mut Vec<f32>) {
    let (rows, wp) = padded_extent(g, r0, r1);
    pad.clear();
    pad.resize(rows * wp, 0.0);
    for (pr, dst) in pad.chunks_exact_mut(wp).enumerate() {
        let ih = (r0 * g.sh + pr).wrapping_sub(g.ph);
        if ih < g.h {
            copy_row(&mut dst[g.pw..g.pw + g.w], &plane[ih * g.w..(ih + 1) * g.w]);
        }
    }
}

/// `col[(c, i, j), off + (o - r0)·W' + q]` (row stride `ld`) for output rows `r0..r1` of one
/// sample, all channels: the input read through a zero-padded copy of the rows, so every
/// output row is one straight (or strided) copy.
#[allow(clippy::too_many_arguments)]
fn im2col(
    g: &Geom,
    x: &[f32],
    r0: usize,
    r1: usize,
    col: &mut [f32],
    ld: usize,
    off: usize,
    pad: &mut Vec<f32>,
) {
    if g.sw == 2 {
        im2col_stride2(g, x, r0, r1, col, ld, off, pad);
        return;
    }
    let hw = g.h * g.w;
    let padded = g.ph > 0 || g.pw > 0;
    let wp = g.w + 2 * g.pw;
    for ch in 0..g.c {
        let plane = &x[ch * hw..(ch + 1) * hw];
        // Rows are indexed from the tile's first padded row when padded, else from row 0.
        let (src, base): (&[f32], usize) = if padded {
            pad_rows(g, plane, r0, r1, pad);
            (pad, r0 * g.sh)
        } else {
            (plane, 0)
        };
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = ((ch * g.kh + i) * g.kw + j) * ld + off;
                for o in r0..r1 {
                    let dst = &mut col[row + (o - r0) * g.ow..][..g.ow];
                    let start = (o * g.sh + i - base) * wp + j;
                    if g.sw == 1 {
                        copy_row(dst, &src[start..start + g.ow]);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src[start..].iter().step_by(g.sw)) {
                            *d = *s;
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col`] for a column stride of 2: each zero-padded row is first split into its even and
/// odd columns (`[even | odd]`, `⌈W_p/2⌉` each), after which every tap's output row is one
/// contiguous copy — tap column `j` reads phase `j mod 2` from `j / 2` on. Gathering every
/// second value per tap instead (three times per padded row and kernel row) was half of
/// ResNet-20's stride-2 forward passes in `perf`.
#[allow(clippy::too_many_arguments)]
fn im2col_stride2(
    g: &Geom,
    x: &[f32],
    r0: usize,
    r1: usize,
    col: &mut [f32],
    ld: usize,
    off: usize,
    pad: &mut Vec<f32>,
) {
    let hw = g.h * g.w;
    let (rows, wp) = padded_extent(g, r0, r1);
    let half = wp.div_ceil(2);
    let (base, odd_pad) = (g.pw / 2, g.pw % 2 == 1);
    for ch in 0..g.c {
        let plane = &x[ch * hw..(ch + 1) * hw];
        pad.clear();
        pad.resize(rows * 2 * half, 0.0);
        for (pr, dst) in pad.chunks_exact_mut(2 * half).enumerate() {
            let ih = (r0 * g.sh + pr).wrapping_sub(g.ph);
            if ih >= g.h {
                continue;
            }
            let src = &plane[ih * g.w..(ih + 1) * g.w];
            let (even, odd) = dst.split_at_mut(half);
            // Input column `xi` sits at padded column `xi + pw`: with an even `pw` pairs
            // `(2m, 2m+1)` land at even/odd `base + m`, with an odd one at odd `base + m` and
            // even `base + m + 1`.
            let (first, second) = if odd_pad {
                (&mut odd[base..], &mut even[base + 1..])
            } else {
                (&mut even[base..], &mut odd[base..])
            };
            let mut pairs = src.chunks_exact(2);
            for ((p, a), b) in (&mut pairs).zip(first.iter_mut()).zip(second.iter_mut()) {
                *a = p[0];
                *b = p[1];
            }
            if let [last] = pairs.remainder() {
                first[g.w / 2] = *last;
            }
        }
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = ((ch * g.kh + i) * g.kw + j) * ld + off;
                let phase = (j % 2) * half + j / 2;
                for o in r0..r1 {
                    let dst = &mut col[row + (o - r0) * g.ow..][..g.ow];
                    let start = (o * g.sh + i - r0 * g.sh) * 2 * half + phase;
                    copy_row(dst, &pad[start..start + g.ow]);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds the block's columns into the sample's input gradient
/// (through a zero-padded row buffer whose interior is added back).
#[allow(clippy::too_many_arguments)]
fn col2im(
    g: &Geom,
    col: &[f32],
    r0: usize,
    r1: usize,
    ld: usize,
    off: usize,
    dx: &mut [f32],
    pad: &mut Vec<f32>,
) {
    let hw = g.h * g.w;
    let (rows, wp) = padded_extent(g, r0, r1);
    let base = r0 * g.sh;
    for ch in 0..g.c {
        pad.clear();
        pad.resize(rows * wp, 0.0);
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = ((ch * g.kh + i) * g.kw + j) * ld + off;
                for o in r0..r1 {
                    let src = &col[row + (o - r0) * g.ow..][..g.ow];
                    let start = (o * g.sh + i - base) * wp + j;
                    if g.sw == 1 {
                        add_row(&mut pad[start..start + g.ow], src);
                    } else {
                        for (d, s) in pad[start..].iter_mut().step_by(g.sw).zip(src) {
                            *d += *s;
                        }
                    }
                }
            }
        }
        let plane = &mut dx[ch * hw..(ch + 1) * hw];
        for (pr, src) in pad.chunks_exact(wp).enumerate() {
            let ih = (base + pr).wrapping_sub(g.ph);
            if ih < g.h {
                add_row(&mut plane[ih * g.w..(ih + 1) * g.w], &src[g.pw..g.pw + g.w]);
            }
        }
    }
}

/// For tap `(i, j)` of a [`Geom::same_stride1`] convolution and output rows `r0..r1`: the
/// tile positions `k` in `[lo, hi)` read input `k + shift` of the channel plane; the others
/// read padding.
fn shifted_range(g: &Geom, i: usize, j: usize, r0: usize, r1: usize) -> (usize, usize, isize) {
    let (t, hw) = ((r1 - r0) * g.w, (g.h * g.w) as isize);
    let w = g.w as isize;
    let shift = ((r0 + i) as isize - g.ph as isize) * w + j as isize - g.pw as isize;
    let clamp = |v: isize| (v.max(0) as usize).min(t);
    let (lo, hi) = (clamp(-shift), clamp(hw - shift));
    (lo, hi.max(lo), shift)
}

/// Zeroes the columns of a shifted tap row that wrapped around to the neighbouring input
/// row (the left `pw - j` or right `j - pw` columns of each output row).
fn zero_wrapped(g: &Geom, j: usize, row: &mut [f32]) {
    let (a, b) = if j < g.pw {
        (0, g.pw - j)
    } else {
        (g.w - (j - g.pw).min(g.w), g.w)
    };
    // One or two columns per row for 3x3 and 5x5 kernels: a `fill` here is a libc memset call
    // per output row (thousands per sample), which `perf` showed costing more than the
    // copies around it, so the common widths store directly.
    match b.saturating_sub(a) {
        0 => {}
        1 => {
            for r in row.chunks_exact_mut(g.w) {
                r[a] = 0.0;
            }
        }
        2 => {
            for r in row.chunks_exact_mut(g.w) {
                r[a] = 0.0;
                r[a + 1] = 0.0;
            }
        }
        _ => {
            for r in row.chunks_exact_mut(g.w) {
                r[a..b].fill(0.0);
            }
        }
    }
}

/// [`im2col`] for a [`Geom::same_stride1`] convolution: one contiguous copy per tap and
/// channel instead of one per output row.
#[allow(clippy::too_many_arguments)]
fn im2col_same(g: &Geom, x: &[f32], r0: usize, r1: usize, col: &mut [f32], ld: usize, off: usize) {
    let (hw, t) = (g.h * g.w, (r1 - r0) * g.w);
    for ch in 0..g.c {
        let plane = &x[ch * hw..(ch + 1) * hw];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((ch * g.kh + i) * g.kw + j) * ld + off..][..t];
                let (lo, hi, shift) = shifted_range(g, i, j, r0, r1);
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                if lo < hi {
                    let start = (lo as isize + shift) as usize;
                    row[lo..hi].copy_from_slice(&plane[start..start + hi - lo]);
                }
                zero_wrapped(g, j, row);
            }
        }
    }
}

/// The adjoint of [`im2col_same`]: zeroes the wrapped columns of `col` (scratch) and adds
/// each tap row into the shifted input-gradient plane with one contiguous add.
#[allow(clippy::too_many_arguments)]
fn col2im_same(
    g: &Geom,
    col: &mut [f32],
    r0: usize,
    r1: usize,
    ld: usize,
    off: usize,
    dx: &mut [f32],
) {
    let (hw, t) = (g.h * g.w, (r1 - r0) * g.w);
    for ch in 0..g.c {
        let plane = &mut dx[ch * hw..(ch + 1) * hw];
        for i in 0..g.kh {
            for j in 0..g.kw {
                let row = &mut col[((ch * g.kh + i) * g.kw + j) * ld + off..][..t];
                let (lo, hi, shift) = shifted_range(g, i, j, r0, r1);
                zero_wrapped(g, j, row);
                if lo < hi {
                    let start = (lo as isize + shift) as usize;
                    add_row(&mut plane[start..start + hi - lo], &row[lo..hi]);
                }
            }
        }
    }
}

/// Fills `s.col` with the im2col matrix of block `b` (`[C·kh·kw, T]`); `x` holds the
/// samples from `first` on.
fn block_im2col(g: &Geom, b: &Block, x: &[f32], first: usize, s: &mut Scratch) {
    let t = b.cols(g);
    s.col.resize(g.c * g.kh * g.kw * t, 0.0);
    let per = (b.r1 - b.r0) * g.ow;
    for n in b.n0..b.n1 {
        let x_n = &x[(n - first) * g.in_sample()..][..g.in_sample()];
        let off = (n - b.n0) * per;
        if g.same_stride1() {
            im2col_same(g, x_n, b.r0, b.r1, &mut s.col, t, off);
        } else {
            im2col(g, x_n, b.r0, b.r1, &mut s.col, t, off, &mut s.pad);
        }
    }
}

/// Gathers block `b`'s whole-sample planes of `y` (`[F, P]` per sample, from sample
/// `first` on) into `s.y` as `[F, T]`.
fn gather(g: &Geom, b: &Block, y: &[f32], first: usize, s: &mut Scratch) {
    let (p, t) = (g.p(), b.cols(g));
    s.y.resize(g.f * t, 0.0);
    for n in b.n0..b.n1 {
        let y_n = &y[(n - first) * g.out_sample()..][..g.out_sample()];
        for f in 0..g.f {
            copy_row(
                &mut s.y[f * t + (n - b.n0) * p..][..p],
                &y_n[f * p..(f + 1) * p],
            );
        }
    }
}

/// Samples per parallel chunk: about four chunks per thread, so a thread slowed by another
/// process does not hold up the pass.
pub(crate) fn samples_per_chunk(n: usize) -> usize {
    let chunks = (4 * rayon::current_num_threads()).min(n).max(1);
    n.div_ceil(chunks).max(1)
}

/// Most partial sums a reduction over samples (a weight gradient) is split into. Fixed, not
/// derived from the thread count: the chunking sets the order of the float additions, and a
/// result that changed with `--threads` (or with the pool a caller installs) would not be
/// reproducible. Two, as the per-thread split gave on this 2-core machine: with eight, each
/// chunk's GEMM ran over a quarter of the samples and eight weight-sized accumulators (19 MiB
/// each for YOLO's 512 -> 1024 3x3) were zeroed and summed, and YOLO-tiny's backward took
/// 1.35x the time (interleaved A/B, quiet machine). With more threads than chunks the GEMMs
/// share the pool.
pub(crate) const REDUCE_CHUNKS: usize = 2;

/// Samples per chunk of a reduction over `n` samples: at most [`REDUCE_CHUNKS`] chunks,
/// whatever the pool.
pub(crate) fn reduce_samples_per_chunk(n: usize) -> usize {
    n.div_ceil(REDUCE_CHUNKS.min(n).max(1)).max(1)
}

/// Output positions of a sample (counting the junk columns) from which [`shift_conv`] is
/// used: below it the junk columns' share of the work grows (8x8: 20 %) and a GEMM over one
/// sample's plane is too narrow, and im2col over several samples per GEMM wins.
const SHIFT_MIN_COLS: usize = 1024;

/// Most values of one band's accumulator in [`shift_conv`]: 512 KiB, half of this
/// machine's L2 (bands of 128 KiB made the GEMMs too narrow for 32x32 and 64x64 planes).
const SHIFT_BAND: usize = 1 << 17;

/// Whether [`shift_conv`] can compute this convolution (and, the roles swapped, its input
/// gradient). Where it is used is narrower, from per-layer A/B runs of
/// `examples/conv2d_bench.rs` against im2col: it saves writing and re-reading the im2col
/// matrix, which costs most next to a GEMM with few output rows, and costs the `kh·kw`
/// passes over its accumulator; so the forward pass takes it for at most 16 output
/// channels (20 % faster on UNet's 32 -> 16 layer at 128x128, but 5-9 % slower with 32 or 64
/// output channels at 32x32 and 64x64), the input gradient for at most 16 input channels or
/// planes of 64x64 and more (8-20 % faster; 5-12 % slower at 32x32 with 32-64 channels).
/// Requirements: one group, stride 1, odd kernel with "same" padding, a plane wide enough (see
/// [`SHIFT_MIN_COLS`]) and at least 16 input and output channels — with fewer, the GEMMs'
/// `K = C` (or `M = F`) is too small to keep the micro-kernel busy (a 1- or 3-channel first
/// layer took 1.5–3x im2col's time this way).
fn shift_ok(g: &Geom) -> bool {
    g.groups == 1
        && g.c >= 16
        && g.f >= 16
        && g.sh == 1
        && g.sw == 1
        && g.kh == 2 * g.ph + 1
        && g.kw == 2 * g.pw + 1
        && g.kh * g.kw > 1
        && g.h * (g.w + 2 * g.pw) >= SHIFT_MIN_COLS
}

/// The forward pass takes [`shift_conv`] (see [`shift_ok`] for why so narrowly).
fn shift_forward(g: &Geom) -> bool {
    shift_ok(g) && g.f <= 16
}

/// The input gradient takes [`shift_conv`] (see [`shift_ok`]).
fn shift_input_grad(g: &Geom) -> bool {
    shift_ok(g) && (g.c <= 16 || g.h * g.w >= 4096)
}

/// Channels (input and output) from which the Winograd path ([`winograd`]) is taken for 3x3
/// "same" layers. From per-layer A/B runs of `examples/conv2d_bench.rs` against the paths
/// below (two threads): with 16 channels its transforms, not the GEMMs, took most of the time
/// and every pass was 15-25 % slower; with 32-128 channels on planes of 8x8 to 64x64 the
/// forward pass and the input gradient took 0.57-0.94x and the weight gradient 0.49-1.0x.
const WINO_MIN_CHANNELS: usize = 32;

/// Tiles over the batch (`N·⌈H/2⌉·⌈W/2⌉`) from which the forward pass and the input gradient
/// take [`winograd`]: below it (YOLO-tiny's 256-512 channels on 4x4 and 8x8 planes) the
/// GEMMs have too few rows for the `C x F` transformed weight they pack, and the weight
/// transform itself is a large share; those layers ran 1.15-4x slower.
const WINO_MIN_TILES: usize = 512;

/// The same for the weight gradient, which contracts over the tiles: it gained from 128
/// tiles (UNet's 256 channels at 8x8, 0.67x; YOLO-tiny's 8x8 layers 0.82x) but lost with 64
/// (YOLO-tiny's 512-channel 4x4 layers, 1.26-1.33x CPU time on one thread: a `16·C·F`
/// accumulator per chunk against little work).
const WINO_MIN_TILES_WEIGHT_GRAD: usize = 128;

/// Tiles of the whole batch.
fn wino_tiles(g: &Geom) -> usize {
    g.n * g.h.div_ceil(2) * g.w.div_ceil(2)
}

/// Whether the weight gradient takes [`winograd`].
fn wino_weight_grad(g: &Geom) -> bool {
    winograd::shape_ok(g)
        && g.c >= WINO_MIN_CHANNELS
        && g.f >= WINO_MIN_CHANNELS
        && wino_tiles(g) >= WINO_MIN_TILES_WEIGHT_GRAD
}

/// Whether the forward pass and the input gradient take [`winograd`].
fn wino_forward(g: &Geom) -> bool {
    wino_weight_grad(g) && wino_tiles(g) >= WINO_MIN_TILES
}

/// Channels (input and output) from which the batch-inner path ([`batch_inner`]) is taken.
const BATCH_INNER_MIN_CHANNELS: usize = 64;

/// Largest plane (positions) the batch-inner path is taken for.
const BATCH_INNER_MAX_PLANE: usize = 256;

/// Whether all three passes take the batch-inner path: stride-1 "same" layers with many
/// channels on small planes, where the Winograd forward pass has too few tiles (see
/// [`WINO_MIN_TILES`]). Per-layer A/B against the paths it replaced (`T=1 python3
/// bench/conv_ab.py OLD NEW 3 --only yolo,unet --clock cpu`, OLD built from 0550746 with this
/// tree's `examples/conv2d_bench.rs`; figures in `crates/vision/README.md`): YOLO-tiny's 4x4
/// layers 0.61-0.99x, its 8x8 layers 0.83-0.89x forward / input gradient, UNet's 8x8 layers
/// 0.83-0.97x. The weight gradient of YOLO-tiny's 8x8 layers (256 tiles) was 1.05-1.13x of
/// Winograd's on one thread but 0.90-0.96x at two (quiet), so it stays here; with 512 tiles and
/// more (UNet's 16x16 layers, ResNet-20's 8x8 at batch 128) Winograd is taken.
fn batch_inner(g: &Geom) -> bool {
    batch_inner::shape_ok(g)
        && g.c >= BATCH_INNER_MIN_CHANNELS
        && g.f >= BATCH_INNER_MIN_CHANNELS
        && g.h * g.w <= BATCH_INNER_MAX_PLANE
        && wino_tiles(g) < WINO_MIN_TILES
}

/// One sample of a stride-1 "same" convolution without im2col: the input is copied once
/// into zero-padded planes of row pitch `W + kw − 1`, where the tap `(i, j)`'s im2col row of
/// every channel is the padded plane read from offset `i·pitch + j` — a plain strided
/// matrix the GEMM packs directly. So the output, in padded coordinates (`kw − 1` junk
/// columns per row), is the sum of `kh·kw` GEMMs `w[:, :, i, j] · shifted planes`, and only
/// the valid columns are copied out. Against im2col + one GEMM this skips writing and
/// re-reading the `kh·kw`-times larger im2col matrix, at the price of the junk columns and
/// of GEMMs with `K = C` instead of `C·kh·kw`.
///
/// `w` is `[F, C, kh, kw]`; `out_n` (`[F, H, W]`) is overwritten.
#[allow(clippy::too_many_arguments)]
fn shift_conv(
    g: &Geom,
    x_n: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out_n: &mut [f32],
    s: &mut Scratch,
    par: gemm::Parallelism,
) {
    let pitch = g.w + 2 * g.pw;
    let rows = g.h + 2 * g.ph;
    // The last tap reads `2·pw` values past the last padded row's end.
    let plane = rows * pitch + 2 * g.pw;
    let layout = (g.c, plane, pitch, rows);
    if s.shift_layout != layout {
        s.shift.clear();
        s.shift.resize(g.c * plane, 0.0);
        s.shift_layout = layout;
    }
    let hw = g.h * g.w;
    for ch in 0..g.c {
        let src = &x_n[ch * hw..(ch + 1) * hw];
        let dst = &mut s.shift[ch * plane..(ch + 1) * plane];
        for (r, row) in src.chunks_exact(g.w).enumerate() {
            let at = (r + g.ph) * pitch + g.pw;
            copy_row(&mut dst[at..at + g.w], row);
        }
    }
    // Output rows per band: the band's `[F, rows·pitch]` accumulator takes all `kh·kw`
    // GEMMs in turn, so it is kept small enough to stay in L2 (a whole 128x128 plane's,
    // re-read and re-written from L3 by every tap, ate the gain).
    let most = (SHIFT_BAND / (g.f * pitch).max(1)).clamp(1, g.h);
    let band = g.h.div_ceil(g.h.div_ceil(most));
    let (kk, ck) = (g.kh * g.kw, g.ck());
    s.y.resize(g.f * band * pitch, 0.0);
    for r0 in (0..g.h).step_by(band) {
        let r1 = (r0 + band).min(g.h);
        let cols = (r1 - r0) * pitch;
        let acc = &mut s.y[..g.f * cols];
        if let Some(b) = b {
            for (row, &bf) in acc.chunks_exact_mut(cols).zip(b) {
                row.fill(bf);
            }
        }
        for i in 0..g.kh {
            for j in 0..g.kw {
                let tap = i * g.kw + j;
                let a = Mat {
                    data: &w[tap..],
                    rs: ck,
                    cs: kk,
                };
                let bm = Mat {
                    data: &s.shift[(r0 + i) * pitch + j..],
                    rs: plane,
                    cs: 1,
                };
                gemm(
                    g.f,
                    cols,
                    g.c,
                    a,
                    bm,
                    acc,
                    cols,
                    tap > 0 || b.is_some(),
                    par,
                );
            }
        }
        for (f, src) in acc.chunks_exact(cols).enumerate() {
            let dst = &mut out_n[f * hw + r0 * g.w..f * hw + r1 * g.w];
            for (d, r) in dst.chunks_exact_mut(g.w).zip(src.chunks_exact(pitch)) {
                copy_row(d, &r[..g.w]);
            }
        }
    }
}

/// The weight of the convolution whose forward pass is this one's input gradient (for a
/// stride-1 "same" convolution): `w'[c, f, i, j] = w[f, c, kh−1−i, kw−1−j]`.
fn flipped_transposed(g: &Geom, w: &[f32]) -> Vec<f32> {
    let (kk, c) = (g.kh * g.kw, g.c);
    let mut out = vec![0.0f32; g.f * c * kk];
    for f in 0..g.f {
        for ch in 0..c {
            let src = &w[(f * c + ch) * kk..][..kk];
            let dst = &mut out[(ch * g.f + f) * kk..][..kk];
            for (d, v) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *v;
            }
        }
    }
    out
}

/// `g` with input and output channels swapped: the geometry of the input gradient as a
/// forward convolution (stride 1, "same" padding, so the plane is unchanged).
fn transposed_geom(g: &Geom) -> Geom {
    Geom {
        c: g.f,
        f: g.c,
        ..*g
    }
}

/// `max(v, 0)` in place (NaN stays NaN, as the ReLU kernel's).
fn relu_in_place(v: &mut [f32]) {
    for x in v {
        *x = if *x < 0.0 { 0.0 } else { *x };
    }
}

/// Rectifies samples `blk.n0..blk.n1` of `chunk` (whose first sample is `first`): called once a
/// block has written their last rows.
fn relu_block_samples(g: &Geom, blk: &Block, chunk: &mut [f32], first: usize) {
    relu_in_place(&mut chunk[(blk.n0 - first) * g.out_sample()..(blk.n1 - first) * g.out_sample()]);
}

/// Forward: `out[n, f, p] = b[f] + Σ w[f, ·] x[n, ·]`, then a ReLU when `relu`, applied to
/// each sample as soon as it is complete, while its output is still in cache (the depthwise
/// and batch-inner paths apply it after the whole pass).
pub(crate) fn forward_act(
    g: &Geom,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
) {
    if g.n == 0 || g.out_sample() == 0 {
        return;
    }
    let after = |out: &mut [f32]| {
        if relu {
            out.par_chunks_mut(g.out_sample()).for_each(relu_in_place);
        }
    };
    if g.depthwise() {
        depthwise_forward(g, x, w, b, out);
        after(out);
        return;
    }
    if wino_forward(g) {
        winograd::forward(g, x, w, b, relu, out);
        return;
    }
    if batch_inner(g) {
        batch_inner::forward(g, x, w, b, out);
        after(out);
        return;
    }
    let par = inner_parallelism(g.n);
    let per = samples_per_chunk(g.n);
    let shift = shift_forward(g);
    out.par_chunks_mut(per * g.out_sample())
        .enumerate()
        .for_each(|(k, chunk)| {
            let first = k * per;
            let n1 = first + chunk.len() / g.out_sample();
            let x = &x[first * g.in_sample()..n1 * g.in_sample()];
            with_scratch(|s| {
                if shift {
                    for (x_n, out_n) in x
                        .chunks_exact(g.in_sample())
                        .zip(chunk.chunks_exact_mut(g.out_sample()))
                    {
                        shift_conv(g, x_n, w, b, out_n, s, par);
                        if relu {
                            relu_in_place(out_n);
                        }
                    }
                    return;
                }
                for blk in blocks(g, first, n1) {
                    forward_block(g, &blk, x, w, b, chunk, first, s, par);
                    if relu && blk.r1 == g.oh {
                        relu_block_samples(g, &blk, chunk, first);
                    }
                }
            });
        });
}

#[allow(clippy::too_many_arguments)]
fn forward_block(
    g: &Geom,
    blk: &Block,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    out: &mut [f32],
    first: usize,
    s: &mut Scratch,
    par: gemm::Parallelism,
) {
    let (p, fg, ck, t) = (g.p(), g.fg(), g.ck(), blk.cols(g));
    // A 1x1 stride-1 convolution reads the input plane as its im2col matrix.
    let direct = g.pointwise() && blk.in_place();
    if !direct {
        block_im2col(g, blk, x, first, s);
    }
    // The im2col matrix `[C·kh·kw, T]`: row stride, first column.
    let (cols, cld, coff): (&[f32], usize, usize) = if direct {
        let x_n = &x[(blk.n0 - first) * g.in_sample()..][..g.in_sample()];
        (x_n, p, blk.r0 * g.ow)
    } else {
        (&s.col, t, 0)
    };
    if blk.in_place() {
        let out_n = &mut out[(blk.n0 - first) * g.out_sample()..][..g.out_sample()];
        if let Some(b) = b {
            for (row, &bf) in out_n.chunks_exact_mut(p).zip(b) {
                row[blk.r0 * g.ow..blk.r1 * g.ow].fill(bf);
            }
        }
        for grp in 0..g.groups {
            gemm(
                fg,
                t,
                ck,
                Mat::rows(&w[grp * fg * ck..], ck),
                Mat::rows(&cols[grp * ck * cld + coff..], cld),
                &mut out_n[grp * fg * p + blk.r0 * g.ow..],
                p,
                b.is_some(),
                par,
            );
        }
        return;
    }
    s.y.resize(g.f * t, 0.0);
    for grp in 0..g.groups {
        gemm(
            fg,
            t,
            ck,
            Mat::rows(&w[grp * fg * ck..], ck),
            Mat::rows(&s.col[grp * ck * t..], t),
            &mut s.y[grp * fg * t..],
            t,
            false,
            par,
        );
    }
    for n in blk.n0..blk.n1 {
        let out_n = &mut out[(n - first) * g.out_sample()..][..g.out_sample()];
        for f in 0..g.f {
            let src = &s.y[f * t + (n - blk.n0) * p..][..p];
            let dst = &mut out_n[f * p..(f + 1) * p];
            match b {
                Some(b) => {
                    for (d, v) in dst.iter_mut().zip(src) {
                        *d = *v + b[f];
                    }
                }
                None => copy_row(dst, src),
            }
        }
    }
}

/// Input gradient: `dx[n] = Σ_f w[f, ·]ᵀ dy[n, f]`, folded back onto the input; `dx` must
/// be zero on entry.
pub(crate) fn input_grad(g: &Geom, w: &[f32], dy: &[f32], dx: &mut [f32]) {
    if g.n == 0 || g.in_sample() == 0 {
        return;
    }
    if g.depthwise() {
        depthwise_input_grad(g, w, dy, dx);
        return;
    }
    if wino_forward(g) {
        winograd::input_grad(g, w, dy, dx);
        return;
    }
    if batch_inner(g) {
        batch_inner::input_grad(g, w, dy, dx);
        return;
    }
    let par = inner_parallelism(g.n);
    let per = samples_per_chunk(g.n);
    if shift_input_grad(g) {
        // The input gradient of a stride-1 "same" convolution is itself one (flipped,
        // transposed weight), so it takes the im2col-free forward path and no col2im.
        let (gt, wt) = (transposed_geom(g), flipped_transposed(g, w));
        dx.par_chunks_mut(per * g.in_sample())
            .enumerate()
            .for_each(|(k, chunk)| {
                let first = k * per;
                with_scratch(|s| {
                    for (m, dx_n) in chunk.chunks_exact_mut(g.in_sample()).enumerate() {
                        let dy_n = &dy[(first + m) * g.out_sample()..][..g.out_sample()];
                        shift_conv(&gt, dy_n, &wt, None, dx_n, s, par);
                    }
                });
            });
        return;
    }
    dx.par_chunks_mut(per * g.in_sample())
        .enumerate()
        .for_each(|(k, chunk)| {
            let first = k * per;
            let n1 = first + chunk.len() / g.in_sample();
            let dy = &dy[first * g.out_sample()..n1 * g.out_sample()];
            with_scratch(|s| {
                for blk in blocks(g, first, n1) {
                    input_grad_block(g, &blk, w, dy, chunk, first, s, par);
                }
            });
        });
}

#[allow(clippy::too_many_arguments)]
fn input_grad_block(
    g: &Geom,
    blk: &Block,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    first: usize,
    s: &mut Scratch,
    par: gemm::Parallelism,
) {
    let (p, fg, ck, t) = (g.p(), g.fg(), g.ck(), blk.cols(g));
    if !blk.in_place() {
        gather(g, blk, dy, first, s);
    }
    // The output gradient as a `[F, T]` matrix: values, row stride, first column.
    let (dys, ld, off): (&[f32], usize, usize) = if blk.in_place() {
        let dy_n = &dy[(blk.n0 - first) * g.out_sample()..][..g.out_sample()];
        (dy_n, p, blk.r0 * g.ow)
    } else {
        (&s.y, t, 0)
    };
    if g.pointwise() && blk.in_place() {
        // The im2col matrix is the input plane itself: write its gradient in place.
        let dx_n = &mut dx[(blk.n0 - first) * g.in_sample()..][..g.in_sample()];
        for grp in 0..g.groups {
            gemm(
                ck,
                t,
                fg,
                Mat::rows(&w[grp * fg * ck..], ck).t(),
                Mat::rows(&dys[grp * fg * ld + off..], ld),
                &mut dx_n[grp * ck * p + off..],
                p,
                false,
                par,
            );
        }
        return;
    }
    s.col.resize(g.c * g.kh * g.kw * t, 0.0);
    for grp in 0..g.groups {
        gemm(
            ck,
            t,
            fg,
            Mat::rows(&w[grp * fg * ck..], ck).t(),
            Mat::rows(&dys[grp * fg * ld + off..], ld),
            &mut s.col[grp * ck * t..],
            t,
            false,
            par,
        );
    }
    let per = (blk.r1 - blk.r0) * g.ow;
    for n in blk.n0..blk.n1 {
        let dx_n = &mut dx[(n - first) * g.in_sample()..][..g.in_sample()];
        let off = (n - blk.n0) * per;
        if g.same_stride1() {
            col2im_same(g, &mut s.col, blk.r0, blk.r1, t, off, dx_n);
        } else {
            col2im(g, &s.col, blk.r0, blk.r1, t, off, dx_n, &mut s.pad);
        }
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
    if batch_inner(g) {
        return batch_inner::weight_grad(g, x, dy);
    }
    if wino_weight_grad(g) {
        return winograd::weight_grad(g, x, dy);
    }
    // A few fixed chunks, each with its own accumulator, summed in chunk order: the order of
    // the additions then depends neither on the schedule nor on the thread count. With fewer
    // chunks than threads the GEMMs share the pool (their sums over k keep one order).
    let per = reduce_samples_per_chunk(g.n);
    let chunks = g.n.div_ceil(per);
    let par = inner_parallelism(chunks);
    let partial: Vec<Vec<f32>> = (0..chunks)
        .into_par_iter()
        .map(|k| {
            let mut acc = vec![0.0f32; len];
            let (first, n1) = (k * per, ((k + 1) * per).min(g.n));
            let x = &x[first * g.in_sample()..n1 * g.in_sample()];
            let dy = &dy[first * g.out_sample()..n1 * g.out_sample()];
            with_scratch(|s| {
                for blk in blocks(g, first, n1) {
                    if g.groups == 1 {
                        weight_grad_block_t(g, &blk, x, dy, first, &mut acc, s, par);
                    } else {
                        weight_grad_block(g, &blk, x, dy, first, &mut acc, s, par);
                    }
                }
            });
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut dw = parts.next().unwrap_or_else(|| vec![0.0; len]);
    for part in parts {
        add_row(&mut dw, &part);
    }
    if g.groups > 1 {
        return dw;
    }
    // The one-group path accumulated `[F, (i, j, c)]`; the weight is `[F, (c, i, j)]`.
    let (kk, c) = (g.kh * g.kw, g.c);
    let mut out = vec![0.0f32; len];
    for (dst, src) in out.chunks_exact_mut(c * kk).zip(dw.chunks_exact(c * kk)) {
        for (tap, run) in src.chunks_exact(c).enumerate() {
            for (ch, v) in run.iter().enumerate() {
                dst[ch * kk + tap] = *v;
            }
        }
    }
    out
}

/// Fills `s.col` with block `b`'s im2col matrix transposed and channels last,
/// `[T, (i, j, c)]`: each tap row of an output position is one contiguous run of `kw·C`
/// values of an NHWC copy of the padded input rows (in `s.pad`).
///
/// The weight gradient contracts over output positions; with them as the rows of this
/// matrix the GEMM reads it in place, where the `[C·kh·kw, T]` layout made the GEMM
/// transpose it while packing, element by element at a stride of `T`, which cost more than
/// the product itself.
fn block_im2col_t(g: &Geom, b: &Block, x: &[f32], first: usize, s: &mut Scratch) {
    let ck = g.c * g.kh * g.kw;
    let (t, per) = (b.cols(g), (b.r1 - b.r0) * g.ow);
    s.col.resize(t * ck, 0.0);
    let (rows, wp) = padded_extent(g, b.r0, b.r1);
    let (hw, run) = (g.h * g.w, g.kw * g.c);
    for n in b.n0..b.n1 {
        let x_n = &x[(n - first) * g.in_sample()..][..g.in_sample()];
        s.pad.clear();
        s.pad.resize(rows * wp * g.c, 0.0);
        for pr in 0..rows {
            let ih = (b.r0 * g.sh + pr).wrapping_sub(g.ph);
            if ih >= g.h {
                continue;
            }
            let dst = &mut s.pad[(pr * wp + g.pw) * g.c..(pr * wp + g.pw + g.w) * g.c];
            row_to_channels_last(&x_n[ih * g.w..], hw, g.c, g.w, dst);
        }
        let block_rows = &mut s.col[(n - b.n0) * per * ck..][..per * ck];
        for (k, row) in block_rows.chunks_exact_mut(ck).enumerate() {
            let (o, q) = (k / g.ow, k % g.ow);
            for (i, dst) in row.chunks_exact_mut(run).enumerate() {
                let start = ((o * g.sh + i) * wp + q * g.sw) * g.c;
                copy_row(dst, &s.pad[start..start + run]);
            }
        }
    }
}

/// `dst[px·c + ch] = src[ch·plane + px]` for `px < w`, `ch < c`: one input row of every
/// channel, written channels-last. Eight channels by eight pixels at a time through a small
/// fixed-size tile, which the compiler turns into vector loads and shuffles; the
/// one-value-at-a-time loop it replaces stored at a stride of `c` and was most of the weight
/// gradient's own (non-GEMM) time in `perf`.
#[inline(always)]
fn row_to_channels_last(src: &[f32], plane: usize, c: usize, w: usize, dst: &mut [f32]) {
    let mut ch = 0;
    while ch + 8 <= c {
        let rows: [&[f32]; 8] = std::array::from_fn(|k| &src[(ch + k) * plane..][..w]);
        let mut px = 0;
        while px + 8 <= w {
            let mut tile = [[0.0f32; 8]; 8];
            for (t, r) in tile.iter_mut().zip(&rows) {
                t.copy_from_slice(&r[px..px + 8]);
            }
            for (p, out) in dst[px * c..(px + 8) * c].chunks_exact_mut(c).enumerate() {
                for (o, t) in out[ch..ch + 8].iter_mut().zip(&tile) {
                    *o = t[p];
                }
            }
            px += 8;
        }
        for px in px..w {
            for (o, r) in dst[px * c + ch..][..8].iter_mut().zip(&rows) {
                *o = r[px];
            }
        }
        ch += 8;
    }
    for ch in ch..c {
        let row = &src[ch * plane..][..w];
        for (px, v) in dst.chunks_exact_mut(c).zip(row) {
            px[ch] = *v;
        }
    }
}

/// [`weight_grad_block`] for one group, on [`block_im2col_t`]: accumulates
/// `dw[F, (i, j, c)]`.
#[allow(clippy::too_many_arguments)]
fn weight_grad_block_t(
    g: &Geom,
    blk: &Block,
    x: &[f32],
    dy: &[f32],
    first: usize,
    dw: &mut [f32],
    s: &mut Scratch,
    par: gemm::Parallelism,
) {
    let (p, ck, t) = (g.p(), g.ck(), blk.cols(g));
    block_im2col_t(g, blk, x, first, s);
    if !blk.in_place() {
        gather(g, blk, dy, first, s);
    }
    let (dys, ld, off): (&[f32], usize, usize) = if blk.in_place() {
        let dy_n = &dy[(blk.n0 - first) * g.out_sample()..][..g.out_sample()];
        (dy_n, p, blk.r0 * g.ow)
    } else {
        (&s.y, t, 0)
    };
    gemm(
        g.f,
        ck,
        t,
        Mat::rows(&dys[off..], ld),
        Mat::rows(&s.col, ck),
        dw,
        ck,
        true,
        par,
    );
}

#[allow(clippy::too_many_arguments)]
fn weight_grad_block(
    g: &Geom,
    blk: &Block,
    x: &[f32],
    dy: &[f32],
    first: usize,
    dw: &mut [f32],
    s: &mut Scratch,
    par: gemm::Parallelism,
) {
    let (p, fg, ck, t) = (g.p(), g.fg(), g.ck(), blk.cols(g));
    let direct = g.pointwise() && blk.in_place();
    if !direct {
        block_im2col(g, blk, x, first, s);
    }
    if !blk.in_place() {
        gather(g, blk, dy, first, s);
    }
    let (cols, cld, coff): (&[f32], usize, usize) = if direct {
        let x_n = &x[(blk.n0 - first) * g.in_sample()..][..g.in_sample()];
        (x_n, p, blk.r0 * g.ow)
    } else {
        (&s.col, t, 0)
    };
    let (dys, ld, off): (&[f32], usize, usize) = if blk.in_place() {
        let dy_n = &dy[(blk.n0 - first) * g.out_sample()..][..g.out_sample()];
        (dy_n, p, blk.r0 * g.ow)
    } else {
        (&s.y, t, 0)
    };
    for grp in 0..g.groups {
        gemm(
            fg,
            ck,
            t,
            Mat::rows(&dys[grp * fg * ld + off..], ld),
            Mat::rows(&cols[grp * ck * cld + coff..], cld).t(),
            &mut dw[grp * fg * ck..],
            ck,
            true,
            par,
        );
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
    fn rows_go_channels_last_for_every_block_and_remainder() {
        for (c, w) in [
            (1, 1),
            (3, 5),
            (8, 8),
            (11, 13),
            (16, 32),
            (19, 7),
            (24, 17),
        ] {
            let plane = w + 3;
            let src: Vec<f32> = (0..c * plane).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; c * w];
            row_to_channels_last(&src, plane, c, w, &mut dst);
            for px in 0..w {
                for ch in 0..c {
                    assert_eq!(dst[px * c + ch], src[ch * plane + px], "c {c} w {w}");
                }
            }
        }
    }

    #[test]
    fn transposes_every_block_and_edge() {
        for (rows, cols) in [(1, 1), (3, 5), (8, 8), (16, 24), (11, 13), (19, 7), (8, 17)] {
            let (src_ld, dst_ld) = (cols + 3, rows + 2);
            let src: Vec<f32> = (0..rows * src_ld).map(|v| v as f32).collect();
            let mut dst = vec![f32::NAN; cols * dst_ld];
            transpose(&src, src_ld, rows, cols, &mut dst, dst_ld);
            for i in 0..rows {
                for j in 0..cols {
                    assert_eq!(dst[j * dst_ld + i], src[i * src_ld + j], "{rows}x{cols}");
                }
            }
            // Padding columns of the destination are left alone.
            for j in 0..cols {
                assert!(dst[j * dst_ld + rows].is_nan());
            }
        }
    }

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
