//! The counting allocator installed, as the `ferrolab` binary installs it.

#![allow(clippy::unwrap_used)] // test: a panic is the failure report

use ferrolab_core::alloc::{PeakAlloc, counting, measure};

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

#[test]
fn a_phase_is_measured_by_what_it_holds_at_once() {
    assert!(counting());
    // Held at once: 1 MB and 2 MB together, then 1 MB freed before 0.5 MB comes: peak 3 MB.
    let (sum, peak) = measure(|| {
        let a = vec![1u8; 1_000_000];
        let b = vec![2u8; 2_000_000];
        let s = a.len() + b.len();
        drop(a);
        let c = vec![3u8; 500_000];
        s + c.len() + b[0] as usize
    });
    assert_eq!(sum, 3_500_002);
    let peak = peak.unwrap();
    assert!((3_000_000..3_000_000 + 4096).contains(&peak), "peak {peak}");
}

#[test]
fn memory_held_from_before_is_not_the_phases_and_nested_phases_see_their_own_peak() {
    let before = vec![0u8; 5_000_000];
    let (inner, outer) = measure(|| {
        let x = vec![1u8; 2_000_000];
        drop(x);
        let (_, inner) = measure(|| vec![2u8; 700_000].len());
        inner
    });
    let (inner, outer) = (inner.unwrap(), outer.unwrap());
    assert!((700_000..700_000 + 4096).contains(&inner), "inner {inner}");
    // The outer phase's peak is its 2 MB, not the 5 MB held before it, and not lowered by the
    // nested phase's smaller one.
    assert!(
        (2_000_000..2_000_000 + 4096).contains(&outer),
        "outer {outer}"
    );
    assert_eq!(before.len(), 5_000_000);
}

#[test]
fn growth_by_reallocation_counts_the_new_size() {
    let (_, peak) = measure(|| {
        let mut v: Vec<u8> = Vec::with_capacity(1000);
        v.resize(1_000_000, 7);
        v.shrink_to_fit();
        v.len()
    });
    // The old and new blocks may coexist for a moment inside realloc, which the counter does
    // not see; at least the grown size is counted.
    let peak = peak.unwrap();
    assert!((1_000_000..1_100_000).contains(&peak), "peak {peak}");
}
