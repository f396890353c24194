//! Plumbing shared by the Flex bodies of the vision kernels ([`batchnorm`](super::batchnorm),
//! [`pool`](super::pool), [`pointwise`](super::pointwise)): reading a [`FlexTensor`] as a
//! contiguous `f32` slice, writing in place when the tensor owns its buffer, and splitting
//! row-structured work (`[rows, row_len]`, e.g. the `N·C` planes of an image batch) across
//! rayon's pool.
//!
//! burn-flex runs its own element-wise ops on one thread below 4M elements, which is where
//! every activation of the vision models sits; these helpers parallelise from ~32K up.

use burn::backend::flex::FlexTensor;
use burn::backend::{DType, TensorMetadata};
use burn::prelude::*;
use rayon::prelude::*;

/// Elements per rayon task: large enough that the task overhead (~1 µs) is noise, small
/// enough that two threads get a dozen tasks each on a ResNet-20 activation (2M elements).
pub(crate) const GRAIN: usize = 1 << 15;

/// `len` zeros written by the pool's threads. A `vec![0.0; len]` for a convolution's output
/// or input gradient ran on the calling thread while the other workers waited: the zero-fills
/// were ~10% of a ResNet-20 training step's samples, all on the main thread.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    if len < 4 * GRAIN {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0.0f32, len).with_min_len(GRAIN));
    v
}

/// Whether `t` is an `f32` tensor (the Flex bodies fall back to the composed path otherwise).
pub(crate) fn is_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32
}

/// `t` with a contiguous layout (a copy only when it is a strided view).
pub(crate) fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.layout().contiguous_offsets().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

/// The values of a contiguous `f32` tensor (see [`contiguous`]).
///
/// # Panics
/// When `t` is not contiguous or not `f32` (a bug of the caller, who checks both first).
pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .unwrap_or_else(|| panic!("flex_slices::values: expected contiguous f32, got {t:?}"))
}

/// Whether `t` can be overwritten in place: it owns its buffer and covers exactly all of it.
pub(crate) fn writable(t: &FlexTensor) -> bool {
    t.is_unique()
        && t.is_contiguous()
        && t.layout().start_offset() == 0
        && t.bytes().len() == t.layout().num_elements() * std::mem::size_of::<f32>()
}

/// A new contiguous `f32` tensor of `shape` from its values.
pub(crate) fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Rows per rayon task for rows of `row_len` elements.
pub(crate) fn rows_per_task(row_len: usize) -> usize {
    (GRAIN / row_len.max(1)).max(1)
}

/// `out[r][i] = f(r)(x[r][i])` over rows of `row_len` (the last row may be shorter), in `x`'s
/// buffer when `x` owns it.
/// `per_row(r)` builds the row's element function once, so per-row constants (a channel's
/// scale) stay in registers.
pub(crate) fn map_rows<G, F>(x: FlexTensor, row_len: usize, per_row: F) -> FlexTensor
where
    G: Fn(f32) -> f32,
    F: Fn(usize) -> G + Sync,
{
    let x = contiguous(x);
    let shape = x.shape();
    let rows_task = rows_per_task(row_len);
    if writable(&x) {
        let mut x = x;
        let buf = x.storage_mut::<f32>();
        buf.par_chunks_mut(rows_task * row_len)
            .enumerate()
            .for_each(|(t, d)| {
                for (k, row) in d.chunks_mut(row_len).enumerate() {
                    let f = per_row(t * rows_task + k);
                    row.iter_mut().for_each(|o| *o = f(*o));
                }
            });
        return x;
    }
    let src = values(&x);
    let out = collect(src.len(), rows_task * row_len, |t, d| {
        let s = &src[t * rows_task * row_len..][..d.len()];
        for (k, (dr, sr)) in d.chunks_mut(row_len).zip(s.chunks(row_len)).enumerate() {
            let f = per_row(t * rows_task + k);
            for (o, &v) in dr.iter_mut().zip(sr) {
                o.write(f(v));
            }
        }
    });
    tensor(out, shape)
}

/// A vector of `n` values written in parallel, chunk by chunk, without zeroing it first (a
/// memset of the output cost ~30% of an activation's time). `fill(t, dst)` receives chunk `t`
/// (`dst` = slots `t·chunk ..`, `chunk` long but the last) and must write every slot of it;
/// the callers here zip `dst` element by element with a source chunk of the same length.
#[allow(unsafe_code)]
fn collect<F>(n: usize, chunk: usize, fill: F) -> Vec<f32>
where
    F: Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync,
{
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(t, d)| fill(t, d));
    // SAFETY: the chunks partition slots 0..n and `fill` wrote every slot of its chunk (each
    // caller writes `dst` through a zip with source slices of the same length: rows that tile
    // it exactly, `chunks(row_len)` of both sides, or flat slices cut to `dst.len()`; a short
    // source would panic, which leaves the length 0).
    unsafe { out.set_len(n) };
    out
}

/// `out[r][i] = f(r)(a[r][i], b[r][i])` over rows of `row_len`, in `a`'s buffer when `a` owns
/// it (the usual case for an incoming gradient).
///
/// # Panics
/// When `a` and `b` differ in size (a bug of the caller).
pub(crate) fn zip_rows<G, F>(a: FlexTensor, b: &[f32], row_len: usize, per_row: F) -> FlexTensor
where
    G: Fn(f32, f32) -> f32,
    F: Fn(usize) -> G + Sync,
{
    let a = contiguous(a);
    let shape = a.shape();
    assert_eq!(shape.num_elements(), b.len(), "zip_rows: sizes differ");
    let rows_task = rows_per_task(row_len);
    let chunk = rows_task * row_len;
    if writable(&a) {
        let mut a = a;
        let buf = a.storage_mut::<f32>();
        buf.par_chunks_mut(chunk)
            .zip(b.par_chunks(chunk))
            .enumerate()
            .for_each(|(t, (d, sb))| {
                for (k, (row, rb)) in d.chunks_mut(row_len).zip(sb.chunks(row_len)).enumerate() {
                    let f = per_row(t * rows_task + k);
                    for (o, &v) in row.iter_mut().zip(rb) {
                        *o = f(*o, v);
                    }
                }
            });
        return a;
    }
    let sa = values(&a);
    let out = collect(sa.len(), chunk, |t, d| {
        let (ra, rb) = (&sa[t * chunk..][..d.len()], &b[t * chunk..][..d.len()]);
        let rows = d
            .chunks_mut(row_len)
            .zip(ra.chunks(row_len).zip(rb.chunks(row_len)));
        for (k, (dr, (xa, xb))) in rows.enumerate() {
            let f = per_row(t * rows_task + k);
            for ((o, &u), &v) in dr.iter_mut().zip(xa).zip(xb) {
                o.write(f(u, v));
            }
        }
    });
    tensor(out, shape)
}

/// `out[i] = f(x[i])` over all elements, in `x`'s buffer when `x` owns it.
pub(crate) fn map_elems(x: FlexTensor, f: impl Fn(f32) -> f32 + Sync) -> FlexTensor {
    let n = x.shape().num_elements();
    map_rows(x, GRAIN.min(n.max(1)), |_| &f)
}

/// `out[i] = f(a[i], b[i])` over all elements, in `a`'s buffer when `a` owns it.
///
/// # Panics
/// When `a` and `b` differ in size (a bug of the caller).
pub(crate) fn zip_elems(
    a: FlexTensor,
    b: &[f32],
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> FlexTensor {
    let n = a.shape().num_elements();
    zip_rows(a, b, GRAIN.min(n.max(1)), |_| &f)
}

/// `out[i] = f(a[i], b[i], c[i])` over all elements, into a new tensor of `shape` (for a
/// backward that reads the incoming gradient and two saved operands and must keep all three).
///
/// # Panics
/// When the slices differ in length or do not fill `shape` (a bug of the caller).
pub(crate) fn zip3_elems(
    shape: Shape,
    a: &[f32],
    b: &[f32],
    c: &[f32],
    f: impl Fn(f32, f32, f32) -> f32 + Sync,
) -> FlexTensor {
    let n = shape.num_elements();
    assert!(
        a.len() == n && b.len() == n && c.len() == n,
        "zip3_elems: sizes differ"
    );
    let out = collect(n, GRAIN, |t, d| {
        let s = t * GRAIN;
        let (a, b, c) = (&a[s..][..d.len()], &b[s..][..d.len()], &c[s..][..d.len()]);
        for (((o, &x), &y), &z) in d.iter_mut().zip(a).zip(b).zip(c) {
            o.write(f(x, y, z));
        }
    });
    tensor(out, shape)
}

/// Tasks [`channel_sums`] aims for: enough to keep 16 threads busy with a few channels.
const CHANNEL_TASKS: usize = 64;

/// Per-channel sums over `[n, c, inner]` data: `fold(channel, row)` reduces one contiguous
/// row (`inner` elements of one sample and channel) to `S`, `add` merges partial results.
/// Work is split over channels and, when there are fewer than [`CHANNEL_TASKS`] channels,
/// over blocks of samples too. The split is fixed (not derived from the thread count) and
/// the partials are merged in index order, so the float result is the same for any pool and
/// any schedule.
pub(crate) fn channel_sums<S, F, A>(n: usize, c: usize, fold: F, add: A) -> Vec<S>
where
    S: Send + Default + Copy,
    F: Fn(usize, usize) -> S + Sync,
    A: Fn(S, S) -> S + Sync,
{
    let splits = CHANNEL_TASKS.div_ceil(c.max(1)).clamp(1, n.max(1));
    let per_split = n.div_ceil(splits).max(1);
    let parts: Vec<(usize, S)> = (0..c * splits)
        .into_par_iter()
        .with_min_len(1)
        .map(|task| {
            let (ch, s) = (task / splits, task % splits);
            let mut acc = S::default();
            for b in (s * per_split)..((s + 1) * per_split).min(n) {
                acc = add(acc, fold(ch, b * c + ch));
            }
            (ch, acc)
        })
        .collect();
    let mut out = vec![S::default(); c];
    for (ch, v) in parts {
        out[ch] = add(out[ch], v);
    }
    out
}

/// `Σ (x - k)` and `Σ (x - k)²` of a row, accumulated in f32 lanes over blocks of 512 and in
/// f64 across blocks.
pub(crate) fn shifted_sums(row: &[f32], k: f32) -> (f64, f64) {
    let (mut s, mut q) = (0f64, 0f64);
    for block in row.chunks(512) {
        let (a, b, ra, rb) = shifted_lanes(block, k);
        s += a.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(ra);
        q += b.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(rb);
    }
    (s, q)
}

/// The eight-lane partial sums of [`shifted_sums`] and, apart, those of the last `len % 8`
/// values. LLVM vectorises the lanes only this way: with the tail added into lane 0, or with
/// the function inlined into the rayon closures, it fell back to scalar loads (3x slower).
#[inline(never)]
fn shifted_lanes(block: &[f32], k: f32) -> ([f32; 8], [f32; 8], f32, f32) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let (chunks, rest) = block.as_chunks::<8>();
    for ch in chunks {
        for l in 0..8 {
            let d = ch[l] - k;
            a[l] += d;
            b[l] += d * d;
        }
    }
    let (mut ra, mut rb) = (0f32, 0f32);
    for &v in rest {
        let d = v - k;
        ra += d;
        rb += d * d;
    }
    (a, b, ra, rb)
}

/// `Σ g` and `Σ g·(x - k)` of two rows, blocked as in [`shifted_sums`].
pub(crate) fn dot_sums(g: &[f32], x: &[f32], k: f32) -> (f64, f64) {
    let (mut s, mut q) = (0f64, 0f64);
    for (gb, xb) in g.chunks(512).zip(x.chunks(512)) {
        let (a, b, ra, rb) = dot_lanes(gb, xb, k);
        s += a.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(ra);
        q += b.iter().map(|&v| f64::from(v)).sum::<f64>() + f64::from(rb);
    }
    (s, q)
}

/// The eight-lane partial sums of [`dot_sums`] (out of line as [`shifted_lanes`]).
#[inline(never)]
fn dot_lanes(g: &[f32], x: &[f32], k: f32) -> ([f32; 8], [f32; 8], f32, f32) {
    let (mut a, mut b) = ([0f32; 8], [0f32; 8]);
    let ((gc, grest), (xc, xrest)) = (g.as_chunks::<8>(), x.as_chunks::<8>());
    for (gv, xv) in gc.iter().zip(xc) {
        for l in 0..8 {
            a[l] += gv[l];
            b[l] += gv[l] * (xv[l] - k);
        }
    }
    let (mut ra, mut rb) = (0f32, 0f32);
    for (&gv, &xv) in grest.iter().zip(xrest) {
        ra += gv;
        rb += gv * (xv - k);
    }
    (a, b, ra, rb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_sums_match_plain_f64_sums() {
        let row: Vec<f32> = (0..1037)
            .map(|i| ((i * 37 % 101) as f32) * 0.25 - 3.0)
            .collect();
        let g: Vec<f32> = (0..1037).map(|i| ((i * 13 % 7) as f32) - 2.5).collect();
        let k = 1.5f32;
        let (s, q) = shifted_sums(&row, k);
        let s0: f64 = row.iter().map(|&v| f64::from(v - k)).sum();
        let q0: f64 = row.iter().map(|&v| f64::from(v - k).powi(2)).sum();
        assert!((s - s0).abs() < 1e-6 * s0.abs().max(1.0));
        assert!((q - q0).abs() < 1e-6 * q0);
        let (a, b) = dot_sums(&g, &row, k);
        let a0: f64 = g.iter().map(|&v| f64::from(v)).sum();
        let b0: f64 = g
            .iter()
            .zip(&row)
            .map(|(&u, &v)| f64::from(u) * f64::from(v - k))
            .sum();
        assert!((a - a0).abs() < 1e-6 * a0.abs().max(1.0));
        assert!((b - b0).abs() < 1e-6 * b0.abs().max(1.0));
    }

    #[test]
    fn channel_sums_cover_every_row_once() {
        for (n, c) in [(1, 1), (3, 2), (7, 5), (128, 16), (2, 64)] {
            let got = channel_sums(n, c, |ch, row| (row, ch), |a, b| (a.0 + b.0, b.1));
            for (ch, &(sum_rows, _)) in got.iter().enumerate() {
                let want: usize = (0..n).map(|b| b * c + ch).sum();
                assert_eq!(sum_rows, want, "n={n} c={c} ch={ch}");
            }
        }
    }

    #[test]
    fn map_and_zip_rows_in_place_and_copying() {
        let vals: Vec<f32> = (0..300).map(|i| i as f32).collect();
        let t = tensor(vals.clone(), Shape::new([3, 100]));
        let shared = t.clone();
        let doubled = map_rows(t, 100, |r| move |v| v * 2.0 + r as f32);
        let d = values(&doubled).to_vec();
        for (i, &v) in d.iter().enumerate() {
            assert_eq!(v, vals[i] * 2.0 + (i / 100) as f32);
        }
        // `shared` kept the original buffer alive, so the map copied.
        assert_eq!(values(&shared), &vals[..]);
        let z = zip_rows(doubled, &vals, 100, |_| |a, b| a - b);
        let z = values(&z).to_vec();
        for (i, &v) in z.iter().enumerate() {
            assert_eq!(v, vals[i] + (i / 100) as f32);
        }
    }
}
