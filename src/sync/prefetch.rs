//! A cache hint: take a line for writing before the stores that need it.
//!
//! A store to a line that another core holds shared waits in the store buffer until that copy
//! is invalidated, a cross-core round trip, and the store buffer drains in order, so a copy
//! into several such lines stalls for as many round trips. `PREFETCHW` requests the line in
//! exclusive state ahead of the stores, so the invalidations overlap other work.
//!
//! x86-64 only (elsewhere, and under Miri and loom, the hint is nothing). Inline assembly, since
//! `_mm_prefetch` emits `PREFETCHW` only when the build enables the `prfchw` target feature,
//! which the x86-64 baseline does not. CPUs that do not report `PRFCHW` (Intel before
//! Broadwell) execute the instruction as a no-op; it never faults.

/// Hints that the cache line holding `addr` is about to be written. Reads and writes no memory
/// and never faults, whatever `addr` is.
#[inline(always)]
pub(crate) fn for_write(addr: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(miri), not(shmchan_loom)))]
    // SAFETY: PREFETCHW changes no architectural state besides the cache, does not fault on any
    // address, and uses no stack or flags (as the options declare).
    unsafe {
        core::arch::asm!("prefetchw [{0}]", in(reg) addr, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(all(target_arch = "x86_64", not(miri), not(shmchan_loom))))]
    let _ = addr;
}
