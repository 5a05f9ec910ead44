//! Shared futexes and the `membarrier` system call.
//!
//! The futex words live in memory mapped by several processes, so every operation is a
//! *shared* futex: the private-futex flag keys the wait queue by the process's own address
//! space and would silently never wake a waiter in another process.

use std::io;
use std::time::Duration;

/// Why a [`wait`] returned. Callers re-check their condition in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// Woken by `FUTEX_WAKE` (or spuriously: the kernel does not distinguish).
    Woken,
    /// The word did not hold `expected` when the kernel looked (`EAGAIN`).
    ValueChanged,
    /// The timeout elapsed.
    TimedOut,
}

/// Sleeps while `*word == expected`, for at most `timeout` (measured on `CLOCK_MONOTONIC`).
///
/// `EINTR` resumes the sleep with the time that remains: the deadline is absolute, so a signal
/// storm cannot stretch the wait.
///
/// # Safety
/// `word` must point to a 4-byte aligned `u32` that stays mapped for the duration of the call.
pub(crate) unsafe fn wait(word: *const u32, expected: u32, timeout: Duration) -> WaitOutcome {
    let deadline = monotonic_now().saturating_add(timeout);
    let ts = libc::timespec {
        tv_sec: deadline.as_secs() as libc::time_t,
        tv_nsec: deadline.subsec_nanos() as libc::c_long,
    };
    loop {
        // SAFETY: the caller guarantees `word` is a mapped, aligned u32. FUTEX_WAIT_BITSET with
        // an absolute CLOCK_MONOTONIC deadline only reads the word; the kernel validates `ts`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word,
                libc::FUTEX_WAIT_BITSET,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if rc == 0 {
            return WaitOutcome::Woken;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return WaitOutcome::ValueChanged,
            Some(libc::ETIMEDOUT) => return WaitOutcome::TimedOut,
            // EFAULT/EINVAL cannot happen for a valid mapped word; treat any other error as a
            // spurious wake-up so the caller re-checks its state (and its own deadline).
            _ => return WaitOutcome::Woken,
        }
    }
}

/// Wakes up to `count` waiters sleeping on `word`; returns how many were woken.
///
/// # Safety
/// `word` must point to a 4-byte aligned `u32` that stays mapped for the duration of the call.
pub(crate) unsafe fn wake(word: *const u32, count: u32) -> usize {
    // SAFETY: the caller guarantees `word` is a mapped, aligned u32; FUTEX_WAKE reads nothing.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAKE,
            count.min(i32::MAX as u32) as libc::c_int,
        )
    };
    if rc < 0 { 0 } else { rc as usize }
}

/// `CLOCK_MONOTONIC` as a duration since an arbitrary origin (the futex deadline clock).
pub(crate) fn monotonic_now() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux (vDSO).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Registers this process as a target of `MEMBARRIER_CMD_GLOBAL_EXPEDITED`.
///
/// Once registered, another process's [`membarrier_global`] forces a full memory barrier on
/// every running thread of this one, which lets our hot path get by with a compiler fence.
pub(crate) fn membarrier_register() -> bool {
    // SAFETY: membarrier takes no pointers; an unsupported command returns EINVAL.
    unsafe {
        libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0
    }
}

/// Executes a memory barrier on every running thread of every registered process.
pub(crate) fn membarrier_global() -> bool {
    // SAFETY: membarrier takes no pointers; an unsupported command returns EINVAL.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 }
}
