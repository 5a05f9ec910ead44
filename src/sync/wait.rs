//! How a blocked call waits: the wait strategy and the spin-then-sleep state machine.
//!
//! ```text
//!            attempt ok                         attempt ok
//!   ┌──────────────────────── SPINNING ─────────────────────────┐
//!   │                             │ spin budget spent (Adaptive:│
//!   │                             │ or a yield ran another task)│
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

use crate::layout::{AWAKE, SLEEPING, Waiters};
use crate::sync::atomic::{AtomicU32, Ordering, spin_hint};
use crate::sync::fence::Fences;
use crate::sync::park::{self, WaitOutcome};

/// How a blocking call waits for the ring to change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Busy-wait with pause hints, yielding the core now and then (after every attempt once a
    /// yield shows the core is shared). Lowest latency; burns a core while waiting. Peer
    /// liveness and the deadline are still checked.
    Spin,
    /// Busy-wait for the given time, then sleep on the futex: short waits never pay a
    /// wake-up, long waits use no CPU.
    SpinThenSleep(Duration),
    /// Sleep on the futex at once. Best for throughput when the other side is usually the
    /// slower one, and whenever the endpoints outnumber the cores: a waiting side that spins
    /// keeps reading the very cache lines the other side is writing, while a sleeping one lets
    /// it fill (or drain) the ring undisturbed and then takes many messages per wake-up. Each
    /// wait costs a wake-up (tens of µs) in latency.
    Sleep,
    /// The default: [`SpinThenSleep`](Self::SpinThenSleep) with 50 µs while the channel's
    /// endpoints can each have a CPU of their own, [`Sleep`](Self::Sleep) when they outnumber
    /// the CPUs. A spinner on an oversubscribed machine holds a CPU the side it waits
    /// for may need; measured on 2 cores (BENCHMARKS.md), an MPMC channel with 2 sender and 2
    /// receiver processes moves 2 to 3.7 × as many messages sleeping as spinning first.
    ///
    /// It also stops spinning, and sleeps, as soon as one of its yields runs another task:
    /// the CPU is wanted, whether by a peer or by load from outside the channel (measured
    /// with two busy loops beside an MPMC 1+1 pair on 2 cores: 20–25 M msg/s against 16–18
    /// without this rule).
    ///
    /// The count is looked at when a call blocks, not before: an SPSC channel or byte ring
    /// has two endpoints; an MPMC channel counts the registry entries attached (a handle and
    /// its clones count once; an entry left by a crashed process counts until it is taken
    /// over). CPUs are those online, bounded by the CPU quota of our cgroup (cgroup v2
    /// `cpu.max`: a container's CPU limit), read once per process at its first blocking call.
    /// Not this process's affinity (endpoints pinned one per CPU still have a CPU each), and
    /// not a cpuset or a cgroup v1 quota.
    #[default]
    Adaptive,
}

/// How long [`WaitStrategy::Adaptive`] spins while the endpoints do not outnumber the CPUs.
const ADAPTIVE_SPIN: Duration = Duration::from_micros(50);

/// The longest one futex sleep lasts before the state is checked again.
pub(crate) const SLICE: Duration = Duration::from_millis(25);
/// How often a waiter looks at its peer's liveness.
pub(crate) const PEER_CHECK_INTERVAL: Duration = Duration::from_millis(25);
/// Futex returns without progress tolerated before backing off.
const FUTILE_WAKEUPS_BEFORE_BACKOFF: u32 = 16;
const BACKOFF_SLEEP: Duration = Duration::from_millis(1);
/// Attempts before a spinning waiter first yields its core.
const FIRST_YIELD_AFTER: u32 = 32;
/// Most attempts between two yields, reached while yielding finds nobody else to run.
const MAX_ATTEMPTS_PER_YIELD: u32 = 1 << 10;
/// Attempts between two looks at the clock while spinning.
const ATTEMPTS_PER_CLOCK_READ: u32 = 64;
/// A yield that took longer than this ran another task: the machine is oversubscribed, and
/// that task may be the peer we wait for. Yielding with nobody else runnable costs a system
/// call (~0.2 µs); handing the core over and getting it back costs a context switch each way.
const BUSY_YIELD: Duration = Duration::from_micros(1);

/// An operation that can be attempted without blocking.
pub(crate) trait Attempt {
    type Output;
    /// Tries once; `Some` when finished (with a value, or a disconnect or corruption outcome).
    fn attempt(&mut self) -> Option<Self::Output>;
    /// Looks at the peer's liveness (may make system calls); called at most once per interval.
    fn check_peer(&mut self);
    /// How many endpoints share the channel ([`WaitStrategy::Adaptive`]); asked once per
    /// blocked call.
    fn endpoints(&self) -> u64 {
        2
    }
}

/// Where a blocked side announces itself and sleeps.
pub(crate) trait Sleeper {
    /// What `sleep` needs to know from the announcement.
    type Token: Copy;
    /// Says "I am about to sleep" (before the heavy fence and the re-check).
    fn announce(&self) -> Self::Token;
    /// Sleeps at most `slice`, unless a waker has acted since `announce`.
    fn sleep(&self, token: Self::Token, slice: Duration) -> WaitOutcome;
    /// Withdraws the announcement (after sleeping, or when the re-check succeeded).
    fn retire(&self, token: Self::Token);
}

/// One sleeper per word (SPSC): the word says `AWAKE` or `SLEEPING`.
impl Sleeper for AtomicU32 {
    type Token = ();

    fn announce(&self) {
        self.store(SLEEPING, Ordering::Relaxed);
    }

    fn sleep(&self, (): (), slice: Duration) -> WaitOutcome {
        park::wait(self, SLEEPING, slice)
    }

    fn retire(&self, (): ()) {
        self.store(AWAKE, Ordering::Relaxed);
    }
}

/// Any number of sleepers (MPMC), as an event count: a sleeper reads `epoch`, counts itself in
/// `waiters`, and sleeps while the epoch is unchanged; a waker that finds `waiters > 0` takes
/// the whole count (swapping in 0), bumps `epoch` and wakes everyone.
///
/// Each announcement is consumed by exactly one waker, so a burst of messages costs one
/// `FUTEX_WAKE` per sleep, not one per message while the woken sleepers wait for a core.
/// Sleepers never take their count back: an announcement left over by a sleeper that found
/// work on its re-check, or whose sleep timed out, costs one spurious wake later, nothing more.
impl Sleeper for Waiters {
    type Token = u32;

    fn announce(&self) -> u32 {
        // The epoch is read *before* the count is raised: a waker that takes our count bumps
        // the epoch after it, so our futex wait can only find a newer epoch (EAGAIN) or be
        // woken. (Reading it after, a waker could bump and wake between the two steps; then
        // only SeqCst's total order saves the wake-up, which loom cannot check.)
        // SYNC: SeqCst pairs with the waker's SeqCst swap of `waiters` and bump of `epoch`.
        let epoch = self.epoch.load(Ordering::SeqCst);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        epoch
    }

    fn sleep(&self, epoch: u32, slice: Duration) -> WaitOutcome {
        park::wait(&self.epoch, epoch, slice)
    }

    fn retire(&self, _: u32) {}
}

/// How long a blocked call spins before it sleeps (`None`: it never sleeps). `endpoints` and
/// `cpus` are asked only for [`WaitStrategy::Adaptive`].
fn spin_budget(
    strategy: WaitStrategy,
    endpoints: impl FnOnce() -> u64,
    cpus: impl FnOnce() -> u64,
) -> Option<Duration> {
    match strategy {
        WaitStrategy::Spin => None,
        WaitStrategy::SpinThenSleep(d) => Some(d),
        WaitStrategy::Sleep => Some(Duration::ZERO),
        WaitStrategy::Adaptive if endpoints() > cpus() => Some(Duration::ZERO),
        WaitStrategy::Adaptive => Some(ADAPTIVE_SPIN),
    }
}

/// Whether a spinning waiter stops spinning and goes to sleep: it spun its budget, or, for
/// [`WaitStrategy::Adaptive`], a yield showed another task waiting for this CPU (perhaps the
/// very peer it waits for, or load from outside the channel).
fn spin_is_over(
    strategy: WaitStrategy,
    spin_for: Option<Duration>,
    spun: Duration,
    core_is_shared: bool,
) -> bool {
    spin_for.is_some_and(|d| spun >= d || (core_is_shared && strategy == WaitStrategy::Adaptive))
}

/// CPUs the channel's processes share (see [`crate::os::cpus`]), asked once per process.
fn usable_cpus() -> u64 {
    static CPUS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *CPUS.get_or_init(crate::os::cpus::usable)
}

/// When a spinning waiter yields its core. It yields early, and measures each yield: one that
/// came back at once found nobody else to run, so the next comes later (the waiter keeps its
/// reaction time); one that took a context switch shows the core is shared, perhaps with the
/// very peer it waits for (four endpoints on two cores), so from then on it yields after every
/// attempt, as `crossbeam_utils::Backoff` does once its spin limit is reached.
struct YieldPacing {
    attempts_per_yield: u32,
    since_yield: u32,
    /// Time spent in yields that ran another task.
    handed_over: Duration,
}

impl YieldPacing {
    fn new() -> Self {
        YieldPacing {
            attempts_per_yield: FIRST_YIELD_AFTER,
            since_yield: 0,
            handed_over: Duration::ZERO,
        }
    }

    /// Whether a yield has run another task: something else wants this CPU.
    fn core_is_shared(&self) -> bool {
        self.handed_over > Duration::ZERO
    }

    /// How many attempts to make before the next call to `maybe_yield`.
    fn attempts_before_next(&self) -> u32 {
        (self.attempts_per_yield - self.since_yield).min(ATTEMPTS_PER_CLOCK_READ)
    }

    fn maybe_yield(&mut self) {
        self.since_yield += self.attempts_before_next();
        if self.since_yield < self.attempts_per_yield {
            return;
        }
        self.since_yield = 0;
        let before = Instant::now();
        std::thread::yield_now();
        let took = before.elapsed();
        self.attempts_per_yield = if took >= BUSY_YIELD {
            self.handed_over += took;
            1
        } else {
            (self.attempts_per_yield * 2).min(MAX_ATTEMPTS_PER_YIELD)
        };
    }
}

/// Waits until `op.attempt()` finishes or `deadline` passes (`None` then).
pub(crate) fn block<A: Attempt, S: Sleeper + ?Sized>(
    op: &mut A,
    word: &S,
    strategy: WaitStrategy,
    fences: Fences,
    deadline: Option<Instant>,
) -> Option<A::Output> {
    if let Some(done) = op.attempt() {
        return Some(done);
    }
    let started = Instant::now();
    let mut last_peer_check = started;
    let spin_for = spin_budget(strategy, || op.endpoints(), usable_cpus);

    let mut yields = YieldPacing::new();
    loop {
        let now = Instant::now();
        // The spin budget counts our own spinning, not the time other tasks ran on the core
        // we yielded: on an oversubscribed machine the peer often runs in exactly that time.
        let spun = now.duration_since(started).saturating_sub(yields.handed_over);
        if spin_is_over(strategy, spin_for, spun, yields.core_is_shared()) {
            break;
        }
        if deadline.is_some_and(|d| now >= d) {
            return None;
        }
        if now.duration_since(last_peer_check) >= PEER_CHECK_INTERVAL {
            op.check_peer();
            last_peer_check = now;
        }
        for _ in 0..yields.attempts_before_next() {
            if let Some(done) = op.attempt() {
                return Some(done);
            }
            spin_hint();
        }
        yields.maybe_yield();
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
        let token = word.announce();
        fences.heavy();
        if let Some(done) = op.attempt() {
            word.retire(token);
            return Some(done);
        }
        let outcome = word.sleep(token, slice);
        word.retire(token);

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

/// Wakes one (or, with `all`, every) sleeper counted in `w`, if any announced itself. Called by
/// the waker after it published.
#[inline(always)]
pub(crate) fn notify(w: &Waiters, fences: Fences, all: bool) {
    fences.light();
    if w.waiters.load(Ordering::Relaxed) != 0 {
        notify_cold(w, all);
    }
}

#[cold]
#[inline(never)]
fn notify_cold(w: &Waiters, _all: bool) {
    // Take every announcement at once: only one waker acts on them.
    if w.waiters.swap(0, Ordering::SeqCst) == 0 {
        return;
    }
    // SYNC: SeqCst pairs with the sleeper's SeqCst epoch load in `Waiters::announce`.
    w.epoch.fetch_add(1, Ordering::SeqCst);
    // Every sleeper counted may be woken: the count no longer says who is still asleep.
    park::wake_all(&w.epoch);
}

/// Wakes every sleeper counted in `w`, whatever the count says (disconnect, poisoning).
pub(crate) fn notify_unconditionally(w: &Waiters) {
    crate::sync::atomic::fence(Ordering::SeqCst);
    w.waiters.store(0, Ordering::Relaxed);
    w.epoch.fetch_add(1, Ordering::SeqCst);
    park::wake_all(&w.epoch);
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

#[cfg(all(test, not(shmchan_loom)))]
mod tests {
    use super::*;

    #[test]
    fn adaptive_sleeps_at_once_only_when_endpoints_outnumber_cpus() {
        let asked = std::cell::Cell::new(0);
        let count = |n: u64| {
            let asked = &asked;
            move || {
                asked.set(asked.get() + 1);
                n
            }
        };
        assert_eq!(spin_budget(WaitStrategy::Adaptive, count(2), || 2), Some(ADAPTIVE_SPIN));
        assert_eq!(spin_budget(WaitStrategy::Adaptive, count(3), || 2), Some(Duration::ZERO));
        assert_eq!(spin_budget(WaitStrategy::Adaptive, count(8), || 8), Some(ADAPTIVE_SPIN));
        assert_eq!(spin_budget(WaitStrategy::Adaptive, count(2), || 1), Some(Duration::ZERO));
        assert_eq!(asked.get(), 4);

        // The explicit strategies mean what they say, whatever the count.
        let d = Duration::from_micros(7);
        assert_eq!(spin_budget(WaitStrategy::SpinThenSleep(d), count(100), || 1), Some(d));
        assert_eq!(spin_budget(WaitStrategy::Sleep, count(1), || 64), Some(Duration::ZERO));
        assert_eq!(spin_budget(WaitStrategy::Spin, count(100), || 1), None);
        assert_eq!(asked.get(), 4, "only Adaptive looks at the count");
    }

    #[test]
    fn only_adaptive_stops_spinning_when_a_yield_ran_another_task() {
        let budget = Some(Duration::from_micros(50));
        let early = Duration::from_micros(1);
        let spent = Duration::from_micros(50);
        for strategy in [WaitStrategy::Adaptive, WaitStrategy::SpinThenSleep(spent)] {
            assert!(!spin_is_over(strategy, budget, early, false));
            assert!(spin_is_over(strategy, budget, spent, false));
        }
        assert!(spin_is_over(WaitStrategy::Adaptive, budget, early, true));
        assert!(!spin_is_over(WaitStrategy::SpinThenSleep(spent), budget, early, true));
        // `Spin` has no budget: it never stops.
        assert!(!spin_is_over(WaitStrategy::Spin, None, spent * 1000, true));
    }

    #[test]
    fn the_default_is_adaptive_and_this_host_has_a_cpu() {
        assert_eq!(WaitStrategy::default(), WaitStrategy::Adaptive);
        assert!(usable_cpus() >= 1);
    }
}
