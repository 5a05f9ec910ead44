//! Sleeping on a 32-bit word in shared memory, and waking its sleepers.
//!
//! Outside loom this is the shared futex of [`crate::os::futex`]. Under loom it is a model with
//! the same contract: `wait` sleeps only while the word still holds `expected`, checked under the
//! same lock that `wake` takes, so a wake-up after the check is never lost; timeouts are ignored
//! (a sleeper waits for a wake-up), which turns every lost wake-up into a deadlock loom reports.

use std::time::Duration;

use crate::sync::atomic::AtomicU32;

pub(crate) use crate::os::futex::WaitOutcome;

#[cfg(not(shmchan_loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitOutcome {
    // SAFETY: `word` is a live reference to an aligned u32-sized atomic, mapped for the call.
    unsafe { crate::os::futex::wait(word.as_ptr(), expected, timeout) }
}

#[cfg(not(shmchan_loom))]
pub(crate) fn wake_all(word: &AtomicU32) {
    // SAFETY: `word` is a live reference to an aligned u32-sized atomic, mapped for the call.
    unsafe { crate::os::futex::wake(word.as_ptr(), u32::MAX) };
}

#[cfg(shmchan_loom)]
mod model {
    use loom::sync::{Condvar, Mutex};

    loom::lazy_static! {
        pub(super) static ref PARK: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }
}

#[cfg(shmchan_loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, _timeout: Duration) -> WaitOutcome {
    use crate::sync::atomic::Ordering;
    let (lock, cond) = &*model::PARK;
    let guard = lock.lock().unwrap();
    if word.load(Ordering::SeqCst) != expected {
        return WaitOutcome::ValueChanged;
    }
    drop(cond.wait(guard).unwrap());
    WaitOutcome::Woken
}

/// The model wakes every sleeper where the real code wakes one. That hides no lost wake-up:
/// every sleeper on one word waits for the same condition, so any one woken can proceed, and
/// one that finds nothing sleeps again.
#[cfg(shmchan_loom)]
pub(crate) fn wake_one(word: &AtomicU32) {
    wake_all(word);
}

#[cfg(shmchan_loom)]
pub(crate) fn wake_all(_word: &AtomicU32) {
    let (lock, cond) = &*model::PARK;
    let _guard = lock.lock().unwrap();
    cond.notify_all();
}
