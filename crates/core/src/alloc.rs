//! Measured heap peaks: a global allocator that counts the bytes each thread has allocated
//! and not freed, so a phase of work can be measured by what it really allocates rather than
//! by a formula of what it should (AdaEvo's profiler checks its memory prediction this way).
//!
//! The `ferrolab` binary installs [`PeakAlloc`]; a library user who wants measurements
//! installs it too:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: ferrolab_core::alloc::PeakAlloc = ferrolab_core::alloc::PeakAlloc;
//! ```
//!
//! Without it, [`measure`] still runs its closure and returns `None`. Counting is per thread
//! (no shared atomics, so allocation-heavy parallel code pays nothing for contention): a phase
//! measured with [`measure`] must allocate on its own thread; memory it hands to other threads,
//! or frees that other threads make, is not attributed to it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialised and without a destructor: usable from inside the allocator (no lazy
    // registration that would itself allocate).
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn add(bytes: i64) {
    // `try_with`: during a thread's teardown the slots may be gone; those bytes go uncounted.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + bytes;
        l.set(v);
        let _ = PEAK.try_with(|p| {
            if v > p.get() {
                p.set(v);
            }
        });
    });
}

/// The system allocator, counting each thread's live bytes and their high-water mark.
pub struct PeakAlloc;

#[allow(unsafe_code)]
// SAFETY: every call is forwarded to `System` with the caller's layout and pointer unchanged;
// the counters are plain thread-local cells that never allocate.
unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator (hence `System`) with `layout`.
        unsafe { System.dealloc(ptr, layout) };
        add(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as `dealloc` for `ptr`/`layout`; `new_size` as the caller gave it.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Whether [`PeakAlloc`] is this process's allocator (an allocation moves the counter).
pub fn counting() -> bool {
    let before = LIVE.try_with(Cell::get).unwrap_or(0);
    let probe = std::hint::black_box(Box::new(0u64));
    let after = LIVE.try_with(Cell::get).unwrap_or(0);
    drop(probe);
    after != before
}

/// Runs `f` and returns its result with the most heap memory it held at once on this thread,
/// above what the thread held when `f` started (bytes); `None` when [`PeakAlloc`] is not the
/// allocator. Nested measurements each see their own peak.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Option<u64>) {
    if !counting() {
        return (f(), None);
    }
    let start = LIVE.with(Cell::get);
    let outer_peak = PEAK.with(|p| p.replace(start));
    let r = f();
    let peak = PEAK.with(Cell::get);
    // The enclosing measurement keeps the higher of its own peak and this one.
    PEAK.with(|p| p.set(outer_peak.max(peak)));
    (r, Some((peak - start).max(0) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The unit-test binary does not install the allocator: measurement reports `None` and still
    // runs the closure. (`crates/core/tests/alloc.rs` installs it and checks the figures.)
    #[test]
    fn without_the_allocator_nothing_is_measured_and_the_work_still_runs() {
        assert!(!counting());
        let (v, peak) = measure(|| vec![1u8; 1000].len());
        assert_eq!(v, 1000);
        assert_eq!(peak, None);
    }
}
