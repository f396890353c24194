//! The one place where ferrolab chooses its tensor backend.
//!
//! burn 0.22 carries the backend in the [`Device`] rather than in the tensor type, so every
//! model in ferrolab is written against `burn::prelude::*` and the choice below is the only
//! backend-specific code. Building with `--features cuda` or `--features wgpu` switches every
//! system to that GPU backend; the default is burn's pure-Rust `flex` CPU backend.

use burn::prelude::Device;

/// Name of the backend compiled in, for reports.
pub const BACKEND_NAME: &str = if cfg!(feature = "cuda") {
    "burn-cuda"
} else if cfg!(feature = "wgpu") {
    "burn-wgpu"
} else {
    "burn-flex"
};

/// The device for inference and evaluation (no autodiff graph is recorded).
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    {
        Device::cuda(0)
    }
    #[cfg(all(feature = "wgpu", not(feature = "cuda")))]
    {
        Device::wgpu(Default::default())
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu")))]
    {
        Device::flex()
    }
}

/// The device for training: the same backend with autodiff enabled.
pub fn train_device() -> Device {
    device().autodiff()
}

/// Sets the number of CPU threads used by the backend's kernels and by ferrolab's own
/// parallel code. Must be called before any tensor work; later calls are ignored because
/// rayon's global pool can only be built once per process.
///
/// Returns the number of threads actually in use. The CLI uses [`try_init_threads`], which
/// bounds the count and reports a failed start.
pub fn init_threads(threads: Option<usize>) -> usize {
    if let Some(n) = threads {
        // Err means a pool already exists (e.g. a second experiment in the same process);
        // the existing pool is then kept, which is what the returned count reports.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global();
    }
    rayon::current_num_threads()
}

/// Runs `f` on one of the thread pool's workers, the caller waiting, and returns its result
/// (in place when the caller already is a worker).
///
/// A parallel loop started from outside the pool (the main thread) posts its work, wakes the
/// workers and puts the caller to sleep on a latch until they are done: a few context
/// switches and a wake-up latency per loop. A CNN training step runs several hundred such
/// loops (one or more per op): on two threads that was 900 context switches per ADOD step
/// and 6–8 % of its time. Started on a worker, a loop begins on the calling thread at once
/// and only the idle workers are woken. Wrap whole steps, not single ops: each call crosses
/// into the pool once.
///
/// `f` must not wait on a lock or a thread that other pool work may need, at any pool size:
/// a worker waiting inside one of `f`'s parallel loops may run unrelated queued work, and with
/// one worker nothing else runs. In particular `f` must not take [`exclusive_rng`] (nor call
/// what does: `init_seeded`, the gradient checker) when its caller may hold it — the guard's
/// re-entry check is per thread, and `f` runs on another. Pure tensor work (forward, loss,
/// backward, optimiser step, decoding) is what it is for.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    rayon::scope(|_| f())
}

/// The largest `--threads` accepted: four threads per core the machine reports, at least 64
/// (what any machine can start) and at most 1024. More threads than that only add scheduling
/// overhead, and a huge count would fail to start or exhaust memory with thread stacks.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    cores.saturating_mul(4).clamp(64, 1024)
}

/// Why [`try_init_threads`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// The requested count is outside `1..=max_threads()` (the user's to fix).
    #[error("--threads {requested}: expected 1..={max}")]
    OutOfRange { requested: usize, max: usize },
    /// The thread pool could not be started (a failure while running).
    #[error("cannot start a pool of {requested} threads: {msg}")]
    PoolStart { requested: usize, msg: String },
}

/// [`init_threads`] with the count checked and a failed pool start reported: `Some(n)` must be
/// in `1..=`[`max_threads`]; when a global pool already exists (a second experiment in the
/// same process) it must have `n` threads. Returns the number of threads in use.
pub fn try_init_threads(threads: Option<usize>) -> Result<usize, ThreadsError> {
    let Some(n) = threads else {
        return Ok(rayon::current_num_threads());
    };
    let max = max_threads();
    if n == 0 || n > max {
        return Err(ThreadsError::OutOfRange { requested: n, max });
    }
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        // Either a pool exists already (fine if it has the count asked for) or the threads
        // could not be spawned; rayon does not say which, the count does.
        let have = rayon::current_num_threads();
        if have != n {
            return Err(ThreadsError::PoolStart {
                requested: n,
                msg: format!("{e} (a pool of {have} threads is in use)"),
            });
        }
    }
    Ok(rayon::current_num_threads())
}

static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

thread_local! {
    static HOLDS_RNG: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Held use of the backend's random source; see [`exclusive_rng`].
#[must_use = "the random source is free again as soon as the guard is dropped"]
pub struct RngGuard {
    // `None` when this thread already held the lock: the outer guard releases it.
    lock: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Drop for RngGuard {
    fn drop(&mut self) {
        if self.lock.take().is_some() {
            HOLDS_RNG.with(|h| h.set(false));
        }
    }
}

/// Exclusive use of the backend's random source for one experiment.
///
/// burn keeps one random generator per backend, shared by the whole process, so two
/// experiments running at once (parallel tests, or a user's threads) would interleave their
/// draws and lose determinism. Experiments hold this guard while they run; a second one waits.
/// A thread that already holds it gets a guard that releases nothing, so library code that
/// draws (building or loading a model) can take it without knowing whether its caller did.
pub fn exclusive_rng() -> RngGuard {
    if HOLDS_RNG.with(|h| h.get()) {
        return RngGuard { lock: None };
    }
    // A panic in another experiment poisons the lock but leaves no state to repair: the next
    // holder reseeds before drawing.
    let lock = BACKEND_RNG
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    HOLDS_RNG.with(|h| h.set(true));
    RngGuard { lock: Some(lock) }
}

/// Draws every parameter of `module` that burn has not initialised yet.
///
/// burn defers a parameter's initialiser until the parameter is first read, and the draw then
/// comes from the process-global generator: a model built under [`exclusive_rng`] but first
/// read after the guard is dropped takes its values from whatever another thread seeded in
/// between (three seeded FedAvg runs at once gave two different curves, one run in three).
/// Code that releases the guard right after building a model calls this before releasing it.
/// Parameters are drawn in the module's visiting order (its fields' declaration order).
pub fn materialize<M: burn::module::Module>(module: &M) {
    struct Touch;
    impl burn::module::ModuleVisitor for Touch {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<burn::Tensor<D>>) {
            let _ = p.val();
        }
        fn visit_int<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::Tensor<D, burn::tensor::Int>>,
        ) {
            let _ = p.val();
        }
        fn visit_bool<const D: usize>(
            &mut self,
            p: &burn::module::Param<burn::Tensor<D, burn::tensor::Bool>>,
        ) {
            let _ = p.val();
        }
    }
    module.visit(&mut Touch);
}

/// A model built by `build` on the training device seeded with `seed`, every parameter drawn
/// before the backend's generator is released ([`exclusive_rng`], then [`materialize`]): the
/// way to build a seeded model without holding the guard for a whole experiment.
pub fn init_seeded<M: burn::module::Module, E>(
    seed: u64,
    build: impl FnOnce(&Device) -> Result<M, E>,
) -> Result<M, E> {
    let _g = exclusive_rng();
    let dev = train_device();
    dev.seed(seed);
    let model = build(&dev)?;
    materialize(&model);
    Ok(model)
}

/// Seeds the backend's own random source (parameter initialisation, dropout masks).
pub fn seed_backend(seed: u64) {
    device().seed(seed);
    train_device().seed(seed);
}

/// Keeps freed tensor buffers in the heap for reuse (Linux/glibc).
///
/// Training allocates and frees the same large tensors every step (activations, gradients,
/// optimiser moments). glibc hands blocks above its mmap threshold back to the kernel on
/// free, so each step paid for fresh zeroed pages: page faults were ~10% of SECNN's profile,
/// and the MLP training step ran 2.3x PyTorch's time instead of 1.0x (bench/README.md).
/// Raising the mmap and trim thresholds fixes both. It affects only blocks allocated
/// afterwards, and those stay with the process when freed, even through `malloc_trim`: call
/// it when training starts, after large data that will be dropped is built (the `ferrolab`
/// binary calls it first thing, except for `cluster-gcn`, whose experiment calls it before
/// each training method so that a dropped 1M-node graph is returned to the kernel).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn tune_allocator() {
    // SAFETY: mallopt only sets glibc malloc tunables and is thread-safe; changing the
    // thresholds affects only where future blocks come from, never existing allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// No-op where the allocator is not glibc's.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;

    /// `in_pool` runs its closure on a worker of the current pool, nests (in place when
    /// already on a worker), works in a one-thread pool, and a training-like step gives the
    /// same bits inside as outside (the kernels' sums do not depend on the calling thread).
    #[test]
    fn in_pool_runs_on_a_worker_nests_and_keeps_the_bits() {
        use burn::prelude::*;
        use burn::tensor::Distribution;
        assert!(in_pool(|| rayon::current_thread_index().is_some()));
        assert_eq!(in_pool(|| in_pool(|| 7) + 1), 8);
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool");
        let nested = one.install(|| in_pool(|| in_pool(rayon::current_num_threads)));
        assert_eq!(nested, 1);
        // Drawn here, not in the step: a step on a worker waiting for the shared generator's
        // lock could starve a one-thread pool that the lock's holder needs.
        let dev = train_device();
        let (x0, w0) = {
            let _g = exclusive_rng();
            dev.seed(11);
            (
                Tensor::<4>::random([4, 3, 9, 9], Distribution::Normal(0.0, 1.0), &dev),
                Tensor::<4>::random([5, 3, 3, 3], Distribution::Normal(0.0, 1.0), &dev),
            )
        };
        let step = || {
            let x = x0.clone().detach().require_grad();
            let w = w0.clone().detach().require_grad();
            let y = crate::kernels::conv2d::conv2d(
                x.clone(),
                w.clone(),
                None,
                crate::kernels::conv2d::Conv2dSpec::new(1, 1),
            );
            let y = crate::kernels::pointwise::residual_gate(y.clone(), y);
            let g = y.sum().backward();
            let mut v = crate::nn::to_vec_f32(x.grad(&g).expect("dx"));
            v.extend(crate::nn::to_vec_f32(w.grad(&g).expect("dw")));
            v.iter().map(|f| f.to_bits()).collect::<Vec<u32>>()
        };
        assert_eq!(in_pool(step), step());
    }

    fn weights(l: &burn::nn::Linear) -> Vec<f32> {
        l.weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    }

    #[test]
    fn the_rng_guard_is_reentrant_and_exclusive_across_threads() {
        let outer = exclusive_rng();
        // Taking it again on the same thread must not deadlock, and dropping the inner
        // guard must not release the lock the outer one holds.
        drop(exclusive_rng());
        let (tx, rx) = std::sync::mpsc::channel();
        let other = std::thread::spawn(move || {
            let _g = exclusive_rng();
            tx.send(()).ok();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(200))
                .is_err(),
            "another thread took the random source while this one held it"
        );
        drop(outer);
        assert!(
            rx.recv_timeout(std::time::Duration::from_secs(30)).is_ok(),
            "the random source was not released"
        );
        other.join().ok();
    }

    #[test]
    fn materialized_parameters_do_not_take_a_later_seed() {
        let dev = train_device();
        let _g = exclusive_rng();
        dev.seed(5);
        let want = weights(&LinearConfig::new(6, 4).init(&dev));
        dev.seed(5);
        let lazy = LinearConfig::new(6, 4).init(&dev);
        dev.seed(5);
        let eager = LinearConfig::new(6, 4).init(&dev);
        materialize(&eager);
        assert!(eager.weight.is_initialized());
        // Another experiment seeds the shared generator before these are first read.
        dev.seed(6);
        let _other = weights(&LinearConfig::new(6, 4).init(&dev));
        assert_eq!(weights(&eager), want);
        // Without `materialize` burn draws at the first read, from the other seed's stream.
        assert_ne!(weights(&lazy), want);
    }
}
