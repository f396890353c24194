//! Per-thread reuse of the large temporary buffers of the hot loops.
//!
//! A key switch at N = 2^15 needs several megabytes of temporaries; freshly allocated, each of
//! their pages faults in (the allocator hands large blocks back to the OS between operations),
//! which measured 8% of a key switch. A buffer taken here returns to its thread's pool when
//! dropped, so the next operation on that thread finds it already mapped.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::thread::LocalKey;

/// Buffers kept per thread (a key switch holds at most two at once per thread).
const KEEP: usize = 8;

type Pool<T> = RefCell<Vec<Vec<T>>>;

thread_local! {
    static POOL_U64: Pool<u64> = const { RefCell::new(Vec::new()) };
}

/// A zeroed buffer on loan from the thread's pool.
pub(crate) struct Buf<T: Copy + Default + 'static> {
    v: Vec<T>,
    home: &'static LocalKey<Pool<T>>,
}

impl<T: Copy + Default + 'static> Buf<T> {
    fn take(home: &'static LocalKey<Pool<T>>, len: usize) -> Self {
        let mut v = home
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        v.clear();
        v.resize(len, T::default());
        Buf { v, home }
    }
}

impl<T: Copy + Default + 'static> Drop for Buf<T> {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.v);
        // During thread teardown the pool may be gone: the buffer is then simply freed.
        let _ = self.home.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEEP {
                p.push(v);
            }
        });
    }
}

impl<T: Copy + Default + 'static> Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.v
    }
}

impl<T: Copy + Default + 'static> DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.v
    }
}

/// `len` zeroed words.
pub(crate) fn u64s(len: usize) -> Buf<u64> {
    Buf::take(&POOL_U64, len)
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_come_back_zeroed_and_sized() {
        {
            let mut a = super::u64s(10);
            a.fill(7);
        }
        let b = super::u64s(20);
        assert_eq!(b.len(), 20);
        assert!(b.iter().all(|&x| x == 0));
    }
}
