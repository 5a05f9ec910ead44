//! How a blocked call waits: the wait strategy and the spin-then-sleep state machine.
//!
//! ```text
//!            attempt ok                         attempt ok
//!   ┌──────────────────────── SPINNING ─────────────────────────┐
//!   │                             │ spin budget spent           │
//!   │                             ▼                             │
//!   │   word := SLEEPING; heavy fence; attempt ── ok ──► word := AWAKE, done
//!   │                             │ still blocked
//!   │                             ▼
//!   │   futex_wait(word, SLEEPING, slice) ── woken / slice over / EAGAIN
//!   │                             │
//!   │   word := AWAKE; peer liveness check once per slice; attempt ── ok ──► done
//!   └──────────────── deadline passed ──► timed out
//! ```
//!
//! The waker stores into the ring, issues the light fence, and calls `FUTEX_WAKE` only if the
//! word says `SLEEPING` (swapping it back to `AWAKE` first, so a burst of messages wakes once).
//! Sleeps are bounded slices: a lost or spurious wake-up costs at most one slice, and a dead or
//! frozen peer is looked at once per slice. A peer that keeps flipping our word cannot make us
//! spin: consecutive wake-ups without progress back off to short sleeps.

use std::time::{Duration, Instant};

use crate::layout::{AWAKE, SLEEPING};
use crate::sync::atomic::{AtomicU32, Ordering, spin_hint};
use crate::sync::fence::Fences;
use crate::sync::park::{self, WaitOutcome};

/// How a blocking call waits for the ring to change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitStrategy {
    /// Busy-wait with pause hints (yielding now and then). Lowest latency; burns a core while
    /// waiting. Peer liveness and the deadline are still checked.
    Spin,
    /// Busy-wait for the given time, then sleep on the futex. The default, with 50 µs: short
    /// waits never pay a wake-up, long waits use no CPU.
    SpinThenSleep(Duration),
    /// Sleep on the futex at once.
    Sleep,
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::SpinThenSleep(Duration::from_micros(50))
    }
}

/// The longest one futex sleep lasts before the state is checked again.
pub(crate) const SLICE: Duration = Duration::from_millis(25);
/// How often a waiter looks at its peer's liveness.
pub(crate) const PEER_CHECK_INTERVAL: Duration = Duration::from_millis(25);
/// Futex returns without progress tolerated before backing off.
const FUTILE_WAKEUPS_BEFORE_BACKOFF: u32 = 16;
const BACKOFF_SLEEP: Duration = Duration::from_millis(1);
const SPINS_PER_YIELD: u32 = 1 << 12;

/// An operation that can be attempted without blocking.
pub(crate) trait Attempt {
    type Output;
    /// Tries once; `Some` when finished (with a value, or a disconnect or corruption outcome).
    fn attempt(&mut self) -> Option<Self::Output>;
    /// Looks at the peer's liveness (may make system calls); called at most once per interval.
    fn check_peer(&mut self);
}

/// Waits until `op.attempt()` finishes or `deadline` passes (`None` then).
pub(crate) fn block<A: Attempt>(
    op: &mut A,
    word: &AtomicU32,
    strategy: WaitStrategy,
    fences: Fences,
    deadline: Option<Instant>,
) -> Option<A::Output> {
    if let Some(done) = op.attempt() {
        return Some(done);
    }
    let started = Instant::now();
    let mut last_peer_check = started;
    let spin_for = match strategy {
        WaitStrategy::Spin => None,
        WaitStrategy::SpinThenSleep(d) => Some(d),
        WaitStrategy::Sleep => Some(Duration::ZERO),
    };

    let mut spins: u32 = 0;
    loop {
        let now = Instant::now();
        if spin_for.is_some_and(|d| now.duration_since(started) >= d) {
            break;
        }
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        if now.duration_since(last_peer_check) >= PEER_CHECK_INTERVAL {
            op.check_peer();
            last_peer_check = now;
        }
        for _ in 0..64 {
            if let Some(done) = op.attempt() {
                return Some(done);
            }
            spin_hint();
        }
        spins = spins.wrapping_add(64);
        if spins % SPINS_PER_YIELD == 0 {
            std::thread::yield_now();
        }
    }

    let mut futile = 0u32;
    loop {
        let slice = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                left.min(SLICE)
            }
            None => SLICE,
        };
        // Announce, then re-check: pairs with the waker's publish + light fence + load of `word`.
        word.store(SLEEPING, Ordering::Relaxed);
        fences.heavy();
        if let Some(done) = op.attempt() {
            word.store(AWAKE, Ordering::Relaxed);
            return Some(done);
        }
        let outcome = park::wait(word, SLEEPING, slice);
        word.store(AWAKE, Ordering::Relaxed);

        let now = Instant::now();
        if now.duration_since(last_peer_check) >= PEER_CHECK_INTERVAL {
            op.check_peer();
            last_peer_check = now;
        }
        if let Some(done) = op.attempt() {
            return Some(done);
        }
        if outcome == WaitOutcome::TimedOut {
            futile = 0;
        } else {
            futile += 1;
            if futile >= FUTILE_WAKEUPS_BEFORE_BACKOFF {
                std::thread::sleep(BACKOFF_SLEEP);
            }
        }
    }
}

/// Wakes the sleeper on `word` if it announced itself. Called by the waker after it published.
#[inline(always)]
pub(crate) fn wake_if_sleeping(word: &AtomicU32, fences: Fences) {
    fences.light();
    if word.load(Ordering::Relaxed) == SLEEPING {
        wake_cold(word);
    }
}

#[cold]
#[inline(never)]
fn wake_cold(word: &AtomicU32) {
    if word.swap(AWAKE, Ordering::Relaxed) != AWAKE {
        park::wake_all(word);
    }
}

/// Wakes whoever sleeps on `word`, whatever it announced (disconnect, poisoning).
///
/// The fence comes first: it orders the caller's state change (a DETACHED owner word, the
/// poison flag) before our store of `AWAKE`, so that a sleeper which announced itself either
/// sees the change on its re-check or finds `AWAKE` in its word (`EAGAIN`), or is woken. With
/// the store before the fence, loom finds an execution where the sleeper's `SLEEPING` lands after
/// our `AWAKE` and nobody wakes it (see `loom_models::disconnect_wakes_sleeper_*`).
pub(crate) fn wake_unconditionally(word: &AtomicU32) {
    crate::sync::atomic::fence(Ordering::SeqCst);
    word.store(AWAKE, Ordering::Relaxed);
    park::wake_all(word);
}
