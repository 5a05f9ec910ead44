//! The one module that names an atomics implementation.
//!
//! Everything else in the crate imports atomics, fences and `UnsafeCell` from here, so that
//! `RUSTFLAGS="--cfg shmchan_loom"` swaps the whole crate onto loom's model checker
//! (see `src/loom_models.rs`). `.ci/run` fails if any other file under `src/` names
//! `core::sync::atomic` or `std::sync::atomic`.

#[cfg(not(shmchan_loom))]
pub(crate) use core::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, Ordering, compiler_fence, fence,
};

#[cfg(shmchan_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

/// Loom has no compiler fences: model them as the full fences they stand in for.
#[cfg(shmchan_loom)]
pub(crate) fn compiler_fence(order: Ordering) {
    loom::sync::atomic::fence(order);
}

/// A pause inside a spin loop; under loom a yield, so the model can schedule the peer.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(shmchan_loom))]
    core::hint::spin_loop();
    #[cfg(shmchan_loom)]
    loom::thread::yield_now();
}

/// `UnsafeCell` with loom's closure API, so loom can track every access to ring payloads.
#[cfg(not(shmchan_loom))]
#[derive(Debug)]
pub(crate) struct UnsafeCell<T>(core::cell::UnsafeCell<T>);

#[cfg(not(shmchan_loom))]
#[allow(dead_code)]
impl<T> UnsafeCell<T> {
    pub(crate) const fn new(value: T) -> Self {
        UnsafeCell(core::cell::UnsafeCell::new(value))
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

#[cfg(shmchan_loom)]
pub(crate) use loom::cell::UnsafeCell;
