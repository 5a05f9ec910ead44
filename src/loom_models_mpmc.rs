//! Loom models of the MPMC ring (`ring::mpmc`) and its event-count wait path.
//!
//! ```text
//! RUSTFLAGS="--cfg shmchan_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --lib loom_models
//! ```
//!
//! The control block is built as a value and the slots on the heap ([`HeapSlots`], loom cells,
//! so a payload read racing a write fails the model), each slot's stamp set to its first
//! position as `MpmcFlavor::initialize` does. The registry is a small heap one ([`Entry`]: the
//! index, the owner word and one intent lane per endpoint, the lane initialised to [`IDLE`]),
//! in registry order. The handles mirror `src/mpmc.rs`, minus what loom cannot or need not see
//! (the mapping, `/proc`, poisoning, the rate limit of the registry lookups, lanes shared by
//! clones):
//! - send: `Ring::push` with the handle's lane, then `wait::notify(not_empty, fences, false)`;
//! - receive: `Ring::pop` with the handle's lane, then `wait::notify(not_full, fences, false)`
//!   after an item; on `Empty`, `all_gone(Sender)`'s fast path (`senders_ever != 0` loaded
//!   Relaxed, then `senders_attached == 0` loaded Acquire, as in `Liveness::all_gone`) and, if
//!   it says gone, one more pop to choose between a last message and `Disconnected`;
//! - who holds a claim: [`Shared::holder_of`], `holder_of` of `src/mpmc.rs` step for step: for
//!   every entry of the role, the owner word loaded Acquire (vacant or detached: skipped), the
//!   lane loaded Acquire; a live owner naming the position is [`Holder::Live`] at once, else
//!   [`Holder::Dead`] if a dead one named it, else [`Holder::Nobody`];
//! - liveness: an owner is dead only if it is endpoint [`DEAD`]'s original owner word and the
//!   dying thread has set `death_confirmed` (Release, its last act; read Acquire), as a `/proc`
//!   check that can only see a death after it happened;
//! - taking over a dead entry ([`attach_over_dead`], the dead branch of `Channel::attach`): the
//!   claims its lane names are resolved first (`resolve_claims_of`: `Ring::resolve_write` or
//!   `Ring::resolve_read`), then the owner word is swapped (AcqRel CAS), the lane reset to
//!   `IDLE` (Release) and the attach count raised;
//! - a sender's drop: its registry entry gains `DETACHED` (Release CAS, `endpoint::detach`),
//!   `senders_attached` is decremented (Release), then `wait::notify_unconditionally(not_empty)`;
//! - blocking calls: `wait::block` with [`WaitStrategy::Sleep`] and no deadline on the
//!   [`Waiters`] event count; under loom `park::wait` ignores timeouts, so a lost wake-up leaves
//!   a thread asleep for ever and loom reports a deadlock.
//!
//! A dying endpoint runs the real `Ring::push`/`Ring::pop` over [`DyingSlots`], whose payload
//! copy unwinds (`resume_unwind`, which runs no panic hook): the intent store, the claiming CAS
//! of `tail`/`head` happen exactly as in the crate, so its lane names the position it claimed,
//! and the publish/free store never happens (a dying sender leaves the stamp free for its
//! position). The thread catches its own unwind and stops, as a process killed between the two
//! would.
//!
//! Stale intents (a lane naming a position its endpoint did not claim) come two ways. An
//! endpoint that dies between its intent store and its CAS is set up by hand (its lane names
//! the position, `tail`/`head` did not move, its death is confirmed): no slot access lies
//! between the two for [`DyingSlots`] to stop at. A live sender overtaken between its load of
//! `tail` and its intent store is forced with [`OvertakenSlots`], whose first stamp access lets
//! a rival claim the position and die first.
//!
//! What loom shows about the orderings of the claim: weakening the Release of a claiming CAS
//! fails the stale-intent model of a dead endpoint of that role (a scan misses the live
//! claimer's intent and resolves its claim under it; for `head`, so does
//! `dead_receiver_is_freed_once_confirmed`), and a Relaxed stamp publish fails every model
//! that carries a message. Making the intent stores and the lane loads Relaxed passes every model: a
//! scan sees the claimer's intent through the claiming CAS (Release) and its own load of
//! `tail`/`head` (Acquire). Their own Release/Acquire matter when a scan reads a live
//! endpoint's newer intent (after it published the position) while a dead lane names the old
//! one: without them, the language allows the resolving CAS of the stamp to be ordered before
//! that publish. Loom orders every read-modify-write after the last store executed, so it
//! cannot produce that execution.
//!
//! Every model uses a two-slot ring. The sleep models are held at
//! [`SLEEP_MODEL_MAX_PREEMPTIONS`] like those of `loom_models` (tokio-rs/loom#254); none of the
//! models below raised a false alarm at that bound. A thread that waits either blocks as the
//! crate does or spins with `yield_now`, and at most one thread per model spins: loom schedules
//! without fairness, so two spinners can yield to each other for ever while a third thread
//! stays in mid-push (loom then stops at its branch limit).
//!
//! Two bugs these models found are kept as negative models (`should_panic`), now that the
//! crate is repaired:
//! - `negative_count_before_epoch_is_reported`: the event count's announce as commit 183e2e2
//!   had it (raise `waiters`, then read `epoch`). With two sleepers on one [`Waiters`], a waker's
//!   `swap(0)` can take a sleeper's count before that sleeper reads `epoch`; the sleeper then
//!   reads the bumped epoch, finds nothing on its re-check (the other sleeper took the
//!   message) and sleeps uncounted, so the next `notify` sees no waiter.
//! - `negative_relaxed_attached_count_is_reported`: `senders_attached` decremented and checked
//!   Relaxed: a receiver can see "no sender left" without seeing the last message, and report
//!   `Disconnected` while it sits in the ring.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use loom::sync::Arc;
use loom::thread;

use crate::layout::{Waiters, endpoint};
use crate::ring::mpmc::{Holder, IDLE, MpmcControl, Pop, Push, Resolution, Ring};
use crate::ring::{HeapSlots, SlotMemory};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::sync::fence::Fences;
use crate::sync::park::{self, WaitOutcome};
use crate::sync::wait::{self, Attempt, SLICE, Sleeper, WaitStrategy};

const CAPACITY: u64 = 2;
/// The registry index of the endpoint that dies in the dead-claim models.
const DEAD: u16 = 7;
/// The owner word a process writes when it takes over a dead entry ([`attach_over_dead`]).
const NEW_OWNER: u64 = 999;
/// The bound of the models where a side sleeps (see `loom_models::SLEEP_MODEL_MAX_PREEMPTIONS`).
const SLEEP_MODEL_MAX_PREEMPTIONS: usize = 3;
/// Yields after which a spinning thread gives up: under loom a spinner runs again only when no
/// other thread can (or through one of the few preemptions), so a correct model never comes
/// near this; past it every other thread is asleep or gone, which the models report as a lost
/// wake-up rather than let loom run into its branch limit.
const MAX_SPINS: u32 = 40;
/// The bound of the three-thread models `one_sender_two_receivers` and
/// `no_lost_wake_up_senders`: at 3 they run past the suite's three-minute budget (7.1 million
/// executions in 471 s and 769 000 in 43 s on a two-core machine, both passing); at 2 they
/// explore 236 000 and 48 000. A budget bound, not a false alarm. `two_senders_one_receiver`
/// (255 000 executions, 16 s) runs at the full bound.
const THREE_THREAD_MAX_PREEMPTIONS: usize = 2;

/// Runs `f` under every interleaving within the preemption bound (`LOOM_MAX_PREEMPTIONS`, else
/// 3, lowered to `max_preemptions` if given) and checks that more than one was explored.
fn model<F: Fn() + Sync + Send + 'static>(name: &str, max_preemptions: Option<usize>, f: F) {
    let mut builder = loom::model::Builder::new();
    let mut bound = builder.preemption_bound.unwrap_or(3);
    if let Some(max) = max_preemptions {
        bound = bound.min(max);
    }
    builder.preemption_bound = Some(bound);
    let executions = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let counter = std::sync::Arc::clone(&executions);
    let started = std::time::Instant::now();
    builder.check(move || {
        *counter.lock().unwrap() += 1;
        f();
    });
    let executions = *executions.lock().unwrap();
    let secs = started.elapsed().as_secs_f64();
    eprintln!("{name}: {executions} executions, preemption bound {bound}, {secs:.1} s");
    assert!(executions > 1, "{name}: loom explored a single execution");
}

/// Counts, across all executions of one model, how often an edge was met (outside loom: every
/// execution runs on the test's OS thread, one after another).
#[derive(Clone, Default)]
struct Seen(std::sync::Arc<std::sync::Mutex<u64>>);

impl Seen {
    fn hit(&self) {
        *self.0.lock().unwrap() += 1;
    }

    fn count(&self) -> u64 {
        *self.0.lock().unwrap()
    }
}

/// How a handle wakes the other side after it published or freed a slot. Only
/// [`Waker::Notify`] is the crate's protocol; the others are broken on purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waker {
    /// `wait::notify`: light fence, load `waiters`, bump `epoch` and wake if non-zero.
    Notify,
    /// As `wait::notify`, without the fence between publishing and loading `waiters`.
    NoFence,
    /// Never wakes anyone.
    Never,
}

/// How the last sender's detach and a receiver's "every sender is gone" check are ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disconnect {
    /// As `src/mpmc.rs`: `senders_attached.fetch_sub(1, Release)` in `Shared::drop`,
    /// `senders_attached.load(Acquire) == 0` in `Liveness::all_gone`.
    AsMpmcRs,
    /// Both Relaxed, as before the models found the lost message (broken on purpose).
    Relaxed,
}

/// The protocol a model's handles follow.
#[derive(Clone, Copy, Debug)]
struct Protocol {
    waker: Waker,
    disconnect: Disconnect,
    /// Whether a blocked call re-checks the ring after announcing itself (`wait::block`), or
    /// sleeps straight after the announce (broken on purpose).
    recheck: bool,
    /// Which announce a blocked call makes on the [`Waiters`].
    sleeper: SleeperKind,
}

/// The announce of a blocked call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SleeperKind {
    /// `impl Sleeper for Waiters` (read `epoch`, then raise `waiters`).
    Crate,
    /// [`CountFirst`]: raise `waiters`, then read `epoch` (broken on purpose).
    CountFirst,
}

/// The crate's protocol, exactly.
const CRATE: Protocol = Protocol {
    waker: Waker::Notify,
    disconnect: Disconnect::AsMpmcRs,
    recheck: true,
    sleeper: SleeperKind::Crate,
};

/// The event count's announce in the order commit 183e2e2 had: the count raised, then the
/// epoch read (the waker, the sleep and the no-op retire are the crate's). A waker's `swap(0)`
/// may take the count between the two; the sleeper then reads the epoch that waker bumped and,
/// if its re-check finds nothing, sleeps with no count left for the next waker to see.
struct CountFirst<'a>(&'a Waiters);

impl Sleeper for CountFirst<'_> {
    type Token = u32;

    fn announce(&self) -> u32 {
        // SYNC: SeqCst, as the crate's announce (`impl Sleeper for Waiters`): pairs with the
        // waker's fence and `waiters` swap in `wait::notify`; only the order of the two differs.
        self.0.waiters.fetch_add(1, Ordering::SeqCst);
        self.0.epoch.load(Ordering::SeqCst)
    }

    fn sleep(&self, epoch: u32, slice: std::time::Duration) -> WaitOutcome {
        park::wait(&self.0.epoch, epoch, slice)
    }

    fn retire(&self, _: u32) {}
}

/// Blocks until `op` finishes, on `w` as `protocol` says (`wait::block` with the sleep
/// strategy and no deadline, unless broken on purpose).
fn block_on<A: Attempt>(protocol: Protocol, op: &mut A, w: &Waiters) -> A::Output {
    let fences = Fences::for_process();
    let done = match (protocol.recheck, protocol.sleeper) {
        (false, _) => Some(block_without_recheck(op, w)),
        (true, SleeperKind::Crate) => wait::block(op, w, WaitStrategy::Sleep, fences, None),
        (true, SleeperKind::CountFirst) => {
            wait::block(op, &CountFirst(w), WaitStrategy::Sleep, fences, None)
        }
    };
    done.expect("no deadline")
}

/// The two halves of the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Sender,
    Receiver,
}

/// The owner word of endpoint `i` of `role` (any attached value will do; distinct per
/// endpoint, so the dead one's word is recognisable).
fn owner_word(role: Role, i: u16) -> u64 {
    let base = match role {
        Role::Sender => 100,
        Role::Receiver => 200,
    };
    endpoint::attached(base + u32::from(i), 1)
}

/// One registry entry (`src/mpmc.rs`: a line of owner word and intent lanes), with one lane:
/// one handle per entry in these models.
struct Entry {
    index: u16,
    owner: AtomicU64,
    lane: AtomicU64,
}

/// The shared memory of one channel, and the model's stand-in for `/proc`.
struct Shared {
    ctl: MpmcControl,
    slots: HeapSlots<u64>,
    ring: Ring,
    /// The sender entries, in registry order.
    senders: Vec<Entry>,
    /// The receiver entries, in registry order.
    receivers: Vec<Entry>,
    /// Non-zero once the death of endpoint [`DEAD`] is confirmed.
    death_confirmed: AtomicU32,
    protocol: Protocol,
    /// Counts the scans that found a live lane naming the position after a dead one did (the
    /// stale intent of a live endpoint beside a dead claim), across the model's executions.
    live_beside_dead: Seen,
}

impl Shared {
    fn entries(&self, role: Role) -> &[Entry] {
        match role {
            Role::Sender => &self.senders,
            Role::Receiver => &self.receivers,
        }
    }

    fn entry(&self, role: Role, index: u16) -> &Entry {
        let entry = self.entries(role).iter().find(|e| e.index == index);
        entry.expect("the model registered this endpoint")
    }

    /// The liveness check of an entry's owner (`Liveness::entry_gone` for an attached word).
    fn confirmed_dead(&self, owner: u64) -> bool {
        let dying =
            owner == owner_word(Role::Sender, DEAD) || owner == owner_word(Role::Receiver, DEAD);
        // SYNC: Acquire pairs with the dying thread's Release store: a death is seen only after
        // everything the dead endpoint did.
        dying && self.death_confirmed.load(Ordering::Acquire) != 0
    }

    /// `holder_of` of `src/mpmc.rs`: who holds a claim on `position` among the endpoints of
    /// `role`.
    fn holder_of(&self, role: Role, position: u64) -> Holder {
        let mut dead = false;
        for entry in self.entries(role) {
            // SYNC: Acquire pairs with the Release CAS that took the entry (`attach_over_dead`)
            // or detached it (`endpoint::detach`).
            let owner = entry.owner.load(Ordering::Acquire);
            if owner == endpoint::VACANT || endpoint::is_detached(owner) {
                continue;
            }
            // SYNC: Acquire pairs with the Release intent stores in `Ring::push`/`Ring::pop` and
            // the Release reset in `attach_over_dead`: an intent newer than a claim comes with
            // that claim's stamp store.
            if entry.lane.load(Ordering::Acquire) != position {
                continue;
            }
            if self.confirmed_dead(owner) {
                dead = true;
            } else {
                if dead {
                    self.live_beside_dead.hit();
                }
                return Holder::Live;
            }
        }
        if dead { Holder::Dead } else { Holder::Nobody }
    }

    /// (head, tail).
    fn positions(&self) -> (u64, u64) {
        // SYNC: Acquire pairs with the claiming CASes (AcqRel); the models read the positions
        // after joining the threads that moved them, so the join orders them anyway.
        (self.ctl.head.0.load(Ordering::Acquire), self.ctl.tail.0.load(Ordering::Acquire))
    }
}

/// A `loom::sync::Arc` not dropped while unwinding (see `loom_models::SharedRef`): dropping it
/// after loom reported a failure would abort the test binary.
struct SharedRef(ManuallyDrop<Arc<Shared>>);

impl SharedRef {
    fn new(shared: &Arc<Shared>) -> Self {
        SharedRef(ManuallyDrop::new(Arc::clone(shared)))
    }
}

impl Clone for SharedRef {
    fn clone(&self) -> Self {
        SharedRef::new(&self.0)
    }
}

impl Deref for SharedRef {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Drop for SharedRef {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            // SAFETY: `drop` runs once and the field is not used afterwards.
            unsafe { ManuallyDrop::drop(&mut self.0) };
        }
    }
}

/// A two-slot channel whose positions start at `start`, with the given sender and receiver
/// registry entries (indices, in registry order) attached, each lane `IDLE`.
fn channel(start: u64, senders: &[u16], receivers: &[u16], protocol: Protocol) -> SharedRef {
    channel_noting(start, senders, receivers, protocol, Seen::default())
}

/// [`channel`], with [`Shared::live_beside_dead`] counted in `live_beside_dead`.
fn channel_noting(
    start: u64,
    senders: &[u16],
    receivers: &[u16],
    protocol: Protocol,
    live_beside_dead: Seen,
) -> SharedRef {
    let slots = HeapSlots::<u64>::new(CAPACITY, start);
    for k in 0..CAPACITY {
        let p = start + k;
        SlotMemory::<u64>::stamp(&slots, p & (CAPACITY - 1)).store(p, Ordering::Relaxed);
    }
    let ctl = MpmcControl::new(start);
    let stats = &ctl.stats.0;
    stats.senders_ever.store(1, Ordering::Relaxed);
    stats.senders_attached.store(senders.len() as u32, Ordering::Relaxed);
    stats.receivers_ever.store(1, Ordering::Relaxed);
    stats.receivers_attached.store(receivers.len() as u32, Ordering::Relaxed);
    let entries = |role, indices: &[u16]| -> Vec<Entry> {
        let entry = |&index| Entry {
            index,
            owner: AtomicU64::new(owner_word(role, index)),
            lane: AtomicU64::new(IDLE),
        };
        indices.iter().map(entry).collect()
    };
    let shared = Arc::new(Shared {
        ctl,
        slots,
        ring: Ring::new(CAPACITY),
        senders: entries(Role::Sender, senders),
        receivers: entries(Role::Receiver, receivers),
        death_confirmed: AtomicU32::new(0),
        protocol,
        live_beside_dead,
    });
    SharedRef(ManuallyDrop::new(shared))
}

/// Wakes the sleepers of `w` after a publish or a free, as `protocol` says.
fn wake(w: &Waiters, fences: Fences, waker: Waker) {
    match waker {
        Waker::Notify => wait::notify(w, fences, false),
        Waker::NoFence => {
            if w.waiters.load(Ordering::Relaxed) != 0 {
                // SYNC: SeqCst, as the epoch bump of `wait::notify` (pairs with the sleeper's
                // epoch load in its announce and `park::wait`).
                w.epoch.fetch_add(1, Ordering::SeqCst);
                park::wake_one(&w.epoch);
            }
        }
        Waker::Never => {}
    }
}

/// `wait::block` without the re-check after the announce: announce, sleep, retire, attempt.
/// Broken on purpose (negative model).
fn block_without_recheck<A: Attempt>(op: &mut A, w: &Waiters) -> A::Output {
    loop {
        if let Some(done) = op.attempt() {
            return done;
        }
        let token = w.announce();
        let _ = w.sleep(token, SLICE);
        w.retire(token);
    }
}

/// A sender handle (registry index `me`; it uses the entry's lane).
struct Tx {
    s: SharedRef,
    me: u16,
    fences: Fences,
}

fn sender(s: &SharedRef, me: u16) -> Tx {
    Tx { s: s.clone(), me, fences: Fences::for_process() }
}

impl Tx {
    /// `Sender::try_send` (without the receivers-gone checks: receivers never leave here):
    /// push, then notify `not_empty`. `false` when the ring is full.
    fn try_send(&self, value: u64) -> bool {
        self.try_send_over(&self.s.slots, value)
    }

    /// [`Tx::try_send`] over `slots` (the channel's, or a wrapper around them).
    fn try_send_over<S: SlotMemory<u64>>(&self, slots: &S, value: u64) -> bool {
        let s = &*self.s;
        let lane = &s.entry(Role::Sender, self.me).lane;
        let holding = |p| s.holder_of(Role::Receiver, p);
        match s.ring.push(&s.ctl, slots, lane, &value, holding) {
            Push::Done => {
                wake(&s.ctl.not_empty.0, self.fences, s.protocol.waker);
                true
            }
            Push::Full => false,
            Push::Corrupt => panic!("sender {} saw a corrupted ring", self.me),
        }
    }

    /// Sends `value`, yielding to the model while the ring is full; counts each Full in `full`.
    /// At most one thread of a model spins: loom schedules without fairness, and two threads
    /// yielding to each other would starve a third in mid-operation for ever.
    fn send_spinning(&self, value: u64, full: &Seen) {
        let mut spins = 0;
        while !self.try_send(value) {
            full.hit();
            spins += 1;
            assert!(spins < MAX_SPINS, "sender {}: the ring stays full (lost wake-up)", self.me);
            thread::yield_now();
        }
    }

    /// `Sender::send`: blocks on `not_full` while the ring is full; counts each attempt that
    /// met a full ring in `full`.
    fn send(&self, value: u64, full: &Seen) {
        let mut op = SendOne { tx: self, value, full };
        block_on(self.s.protocol, &mut op, &self.s.ctl.not_full.0);
    }

    /// The drop of a sender's last handle (`mpmc::Shared::drop`).
    fn detach(self) {
        let s = &*self.s;
        let me = owner_word(Role::Sender, self.me);
        crate::endpoint::detach(&s.entry(Role::Sender, self.me).owner, me);
        let order = match s.protocol.disconnect {
            // SYNC: Release pairs with the Acquire load in `Rx::senders_gone` (`Shared::drop`).
            Disconnect::AsMpmcRs => Ordering::Release,
            Disconnect::Relaxed => Ordering::Relaxed,
        };
        s.ctl.stats.0.senders_attached.fetch_sub(1, order);
        wait::notify_unconditionally(&s.ctl.not_empty.0);
    }
}

struct SendOne<'a> {
    tx: &'a Tx,
    value: u64,
    full: &'a Seen,
}

impl Attempt for SendOne<'_> {
    type Output = ();

    fn attempt(&mut self) -> Option<()> {
        let sent = self.tx.try_send(self.value);
        if !sent {
            self.full.hit();
        }
        sent.then_some(())
    }

    /// Receivers never leave in these models.
    fn check_peer(&mut self) {}
}

/// What a receive attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    Item(u64),
    Empty,
    Disconnected,
}

/// A receiver handle (registry index `me`; it uses the entry's lane).
struct Rx {
    s: SharedRef,
    me: u16,
    fences: Fences,
}

fn receiver(s: &SharedRef, me: u16) -> Rx {
    Rx { s: s.clone(), me, fences: Fences::for_process() }
}

impl Rx {
    /// `mpmc::pop`: one pop, then notify `not_full` after an item.
    fn pop(&self) -> Pop<u64> {
        let s = &*self.s;
        let lane = &s.entry(Role::Receiver, self.me).lane;
        let holding = |p| s.holder_of(Role::Sender, p);
        let outcome = s.ring.pop(&s.ctl, &s.slots, lane, holding);
        match outcome {
            Pop::Item(_) => wake(&s.ctl.not_full.0, self.fences, s.protocol.waker),
            Pop::Empty => {}
            Pop::Corrupt => panic!("receiver {} saw a corrupted ring", self.me),
        }
        outcome
    }

    /// `Liveness::all_gone(Sender)`'s fast path: some sender attached once, none is now.
    fn senders_gone(&self) -> bool {
        let stats = &self.s.ctl.stats.0;
        let order = match self.s.protocol.disconnect {
            // SYNC: Acquire pairs with the Release decrement in `Tx::detach`: a receiver that
            // sees no sender left sees every message published before the detach.
            Disconnect::AsMpmcRs => Ordering::Acquire,
            Disconnect::Relaxed => Ordering::Relaxed,
        };
        stats.senders_ever.load(Ordering::Relaxed) != 0 && stats.senders_attached.load(order) == 0
    }

    /// `Receiver::try_recv` (without poisoning).
    fn try_recv(&self) -> Recv {
        match self.pop() {
            Pop::Item(value) => Recv::Item(value),
            _ if !self.senders_gone() => Recv::Empty,
            // Every sender published before it detached: one more look is conclusive.
            _ => match self.pop() {
                Pop::Item(value) => Recv::Item(value),
                _ => Recv::Disconnected,
            },
        }
    }

    /// Receives a message, yielding to the model while the ring is empty; counts each Empty.
    /// At most one thread of a model spins (see [`Tx::send_spinning`]).
    fn recv_spinning(&self, empty: &Seen) -> u64 {
        let mut spins = 0;
        loop {
            match self.try_recv() {
                Recv::Item(value) => return value,
                Recv::Empty => {
                    empty.hit();
                    spins += 1;
                    let me = self.me;
                    assert!(
                        spins < MAX_SPINS,
                        "receiver {me}: the ring stays empty (lost wake-up)"
                    );
                    thread::yield_now();
                }
                Recv::Disconnected => panic!("receiver {}: disconnected early", self.me),
            }
        }
    }

    /// [`Rx::recv`] where a disconnect is a failure.
    fn recv_item(&self, empty: &Seen) -> u64 {
        match self.recv(empty) {
            Recv::Item(value) => value,
            other => panic!("receiver {}: {other:?}", self.me),
        }
    }

    /// `Receiver::recv`: blocks on `not_empty` while the ring is empty; counts each attempt
    /// that met an empty ring in `empty`. Never `Empty`.
    fn recv(&self, empty: &Seen) -> Recv {
        let mut op = RecvOne { rx: self, empty };
        block_on(self.s.protocol, &mut op, &self.s.ctl.not_empty.0)
    }
}

struct RecvOne<'a> {
    rx: &'a Rx,
    empty: &'a Seen,
}

impl Attempt for RecvOne<'_> {
    type Output = Recv;

    fn attempt(&mut self) -> Option<Recv> {
        match self.rx.try_recv() {
            Recv::Empty => {
                self.empty.hit();
                None
            }
            done => Some(done),
        }
    }

    /// The `/proc` scan is left out; a clean detach is read by every attempt.
    fn check_peer(&mut self) {}
}

/// `Channel::resolve_claims_of` for entry `index` of `role` (one lane): resolves the claim its
/// lane names, as an endpoint that meets it stuck would. False if it stays held (a live lane
/// names it too).
fn resolve_claims_of(s: &Shared, role: Role, index: u16) -> bool {
    // SYNC: Acquire pairs with the dead owner's Release intent stores.
    let position = s.entry(role, index).lane.load(Ordering::Acquire);
    if position == IDLE {
        return true;
    }
    let holding = |p| s.holder_of(role, p);
    let outcome = match role {
        Role::Sender => s.ring.resolve_write::<u64, _>(&s.ctl, &s.slots, position, holding),
        Role::Receiver => s.ring.resolve_read::<u64, _>(&s.ctl, &s.slots, position, holding),
    };
    outcome != Resolution::Held
}

/// The dead branch of `Channel::attach` for entry `index` of `role`: if its owner is confirmed
/// dead, resolve the claims it left, then take the entry ([`NEW_OWNER`]), reset its lane and
/// count the attach. Whether it took the entry.
fn attach_over_dead(s: &Shared, role: Role, index: u16) -> bool {
    let entry = s.entry(role, index);
    // SYNC: Acquire pairs with the previous owner's Release detach or take-over.
    let current = entry.owner.load(Ordering::Acquire);
    if !s.confirmed_dead(current) || !resolve_claims_of(s, role, index) {
        return false;
    }
    // SYNC: AcqRel: Acquire as above; Release orders our claim for later owners and scans.
    if entry
        .owner
        .compare_exchange(current, NEW_OWNER, Ordering::AcqRel, Ordering::Relaxed)
        .is_err()
    {
        return false;
    }
    // SYNC: Release pairs with the Acquire lane loads of `Shared::holder_of`.
    entry.lane.store(IDLE, Ordering::Release);
    let stats = &s.ctl.stats.0;
    let attached = match role {
        Role::Sender => &stats.senders_attached,
        Role::Receiver => &stats.receivers_attached,
    };
    attached.fetch_add(1, Ordering::Relaxed);
    true
}

/// The unwind payload that stops a dying endpoint: the message it held when it died (a dying
/// reader copied it out; a dying writer never wrote it).
struct Died(Option<u64>);

/// Slots seen by an endpoint that dies between its claim and its publish/free: the payload
/// copy unwinds with [`Died`].
struct DyingSlots<'a>(&'a HeapSlots<u64>);

// SAFETY: stamps are those of the wrapped `HeapSlots` (valid, disjoint per index); `write`
// touches no payload, `read` forwards to the wrapped slots under the caller's claim.
unsafe impl SlotMemory<u64> for DyingSlots<'_> {
    fn stamp(&self, index: u64) -> &AtomicU64 {
        SlotMemory::<u64>::stamp(self.0, index)
    }

    unsafe fn write(&self, _index: u64, _value: &u64) {
        resume_unwind(Box::new(Died(None)))
    }

    unsafe fn read(&self, index: u64) -> u64 {
        // SAFETY: forwarded: the caller's read claim gives it this slot (`read`'s contract).
        let value = unsafe { self.0.read(index) };
        resume_unwind(Box::new(Died(Some(value))))
    }
}

/// One attempt of a dying endpoint's operation: `None` while it must wait (`retry`), the
/// message [`Died`] carried once it died inside. Any other panic (a loom failure) goes on
/// unwinding.
struct UntilDeath<R, F> {
    retry: R,
    op: F,
}

impl<R: PartialEq + std::fmt::Debug, F: FnMut() -> R> Attempt for UntilDeath<R, F> {
    type Output = Option<u64>;

    fn attempt(&mut self) -> Option<Option<u64>> {
        match catch_unwind(AssertUnwindSafe(&mut self.op)) {
            Ok(outcome) if outcome == self.retry => None,
            Ok(outcome) => panic!("a dying endpoint finished its operation: {outcome:?}"),
            Err(payload) => match payload.downcast::<Died>() {
                Ok(died) => Some(died.0),
                Err(other) => resume_unwind(other),
            },
        }
    }

    fn check_peer(&mut self) {}
}

/// Runs a dying endpoint's operation until it dies inside it, then confirms the death.
/// While the operation must wait it blocks on `waiters` as the endpoint's own `send`/`recv`
/// would, or, with `waiters` `None`, yields to the model (the model's one spinning thread).
///
/// Peers stuck at the dead claim spin in these models: in the crate they re-check when their
/// sleep slice ends, a timeout loom's park model never lets pass.
fn run_until_death<R: PartialEq + std::fmt::Debug>(
    s: &Shared,
    waiters: Option<&Waiters>,
    retry: R,
    op: impl FnMut() -> R,
) -> Option<u64> {
    let mut attempt = UntilDeath { retry, op };
    let held = match waiters {
        Some(w) => block_on(s.protocol, &mut attempt, w),
        None => {
            let mut spins = 0;
            loop {
                if let Some(held) = attempt.attempt() {
                    break held;
                }
                spins += 1;
                assert!(spins < MAX_SPINS, "a dying endpoint waits for ever (lost wake-up)");
                thread::yield_now();
            }
        }
    };
    // SYNC: Release pairs with the Acquire in `confirmed_dead`.
    s.death_confirmed.store(1, Ordering::Release);
    held
}

/// Sender [`DEAD`] claims a slot for `value` (the intent store and the claiming CAS of `tail`
/// of the real `push`, with its own lane) and dies before writing the payload, so the stamp
/// stays free for the position its lane names; it spins while the ring is full.
fn send_and_die(s: &Shared, value: u64) {
    let dying = DyingSlots(&s.slots);
    let lane = &s.entry(Role::Sender, DEAD).lane;
    let held = run_until_death(s, None, Push::Full, || {
        s.ring.push(&s.ctl, &dying, lane, &value, |p| s.holder_of(Role::Receiver, p))
    });
    assert_eq!(held, None);
}

/// Receiver [`DEAD`] claims a message (the intent store and the claiming CAS of `head` of the
/// real `pop`), copies it out and dies before freeing the slot; it blocks on `not_empty` while
/// the ring is empty. Returns the message it took with it.
fn receive_and_die(s: &Shared) -> u64 {
    let dying = DyingSlots(&s.slots);
    let lane = &s.entry(Role::Receiver, DEAD).lane;
    let held = run_until_death(s, Some(&s.ctl.not_empty.0), Pop::Empty, || {
        s.ring.pop::<u64, _>(&s.ctl, &dying, lane, |p| s.holder_of(Role::Sender, p))
    });
    held.expect("a dying reader holds the message it claimed")
}

/// Message `seq` of sender `i`.
fn msg(i: u16, seq: u64) -> u64 {
    u64::from(i) * 100 + seq
}

/// Checks the ring is empty with both positions at `end` and works for a full lap: two pushes
/// fit, a third is Full, both come back in order, then Empty.
fn assert_drained_and_reusable(s: &SharedRef, end: u64) {
    assert_eq!(s.positions(), (end, end), "(head, tail)");
    let (tx, rx) = (sender(s, 0), receiver(s, 0));
    assert_eq!(rx.pop(), Pop::Empty);
    assert!(tx.try_send(1) && tx.try_send(2), "a drained ring takes a full lap");
    assert!(!tx.try_send(3), "a ring holding `capacity` messages is full");
    assert_eq!((rx.pop(), rx.pop(), rx.pop()), (Pop::Item(1), Pop::Item(2), Pop::Empty));
}

/// Two senders (two messages and one) and one receiver on two slots (a slot is reused): every
/// message is received exactly once, and each sender's messages in order. The senders block
/// on `not_full` when they meet a full ring; the receiver spins.
#[test]
fn two_senders_one_receiver() {
    model("mpmc: two_senders_one_receiver", None, || {
        let s = channel(0, &[0, 1], &[0], CRATE);
        let (a, b, rx) = (sender(&s, 0), sender(&s, 1), receiver(&s, 0));
        let seen = Seen::default();
        let (sa, sb) = (seen.clone(), seen.clone());
        let ta = thread::spawn(move || {
            a.send(msg(0, 0), &sa);
            a.send(msg(0, 1), &sa);
        });
        let tb = thread::spawn(move || b.send(msg(1, 0), &sb));
        let got: Vec<u64> = (0..3).map(|_| rx.recv_spinning(&seen)).collect();
        ta.join().unwrap();
        tb.join().unwrap();
        let from = |i: u16| -> Vec<u64> {
            got.iter().copied().filter(|&v| v / 100 == u64::from(i)).collect()
        };
        assert_eq!(from(0), vec![msg(0, 0), msg(0, 1)], "sender 0: once each, in order");
        assert_eq!(from(1), vec![msg(1, 0)], "sender 1: once");
        assert_eq!(s.ctl.stats.0.lost_writes.load(Ordering::Relaxed), 0);
        assert_drained_and_reusable(&s, 3);
    });
}

/// One sender (three messages, so a slot is reused) and two receivers racing for them: every
/// message is received exactly once in total, and each receiver sees them in send order. The
/// receivers block on `not_empty`; the sender spins when it meets a full ring.
#[test]
fn one_sender_two_receivers() {
    model("mpmc: one_sender_two_receivers", Some(THREE_THREAD_MAX_PREEMPTIONS), || {
        let s = channel(0, &[0], &[0, 1], CRATE);
        let (tx, r0, r1) = (sender(&s, 0), receiver(&s, 0), receiver(&s, 1));
        let seen = Seen::default();
        let (st, s1) = (seen.clone(), seen.clone());
        let sending = thread::spawn(move || {
            for seq in 0..3 {
                tx.send_spinning(seq, &st);
            }
        });
        // Receiver 1 takes one message, receiver 0 the other two: which ones is the race.
        let other = thread::spawn(move || r1.recv_item(&s1));
        let mine = [r0.recv_item(&seen), r0.recv_item(&seen)];
        let theirs = other.join().unwrap();
        sending.join().unwrap();
        assert!(mine[0] < mine[1], "one receiver sees one sender's messages in order");
        let mut all = vec![mine[0], mine[1], theirs];
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2], "each message exactly once");
        assert_eq!(s.ctl.stats.0.lost_reads.load(Ordering::Relaxed), 0);
        assert_drained_and_reusable(&s, 3);
    });
}

/// The full and empty edges of a two-slot ring: a fresh ring refuses a pop, takes two pushes
/// and refuses a third; then a sender pushes two more, blocking on `not_full` until the
/// receiver frees a slot, while the receiver takes all four, blocking on `not_empty` whenever
/// it drained the ring first. FIFO, nothing lost or duplicated, and across the executions both
/// edges were met by the concurrent calls.
#[test]
fn full_and_empty_edges() {
    let full = Seen::default();
    let empty = Seen::default();
    let (f, e) = (full.clone(), empty.clone());
    model("mpmc: full_and_empty_edges", Some(SLEEP_MODEL_MAX_PREEMPTIONS), move || {
        let s = channel(0, &[0], &[0], CRATE);
        let (tx, rx) = (sender(&s, 0), receiver(&s, 0));
        assert_eq!(rx.try_recv(), Recv::Empty, "a fresh ring is empty");
        assert!(tx.try_send(0) && tx.try_send(1), "an empty ring takes `capacity` messages");
        assert!(!tx.try_send(9), "a full ring refuses a push");
        let f = f.clone();
        let sending = thread::spawn(move || {
            tx.send(2, &f);
            tx.send(3, &f);
        });
        let got: Vec<u64> = (0..4).map(|_| rx.recv_item(&e)).collect();
        sending.join().unwrap();
        assert_eq!(got, vec![0, 1, 2, 3], "FIFO, each message exactly once");
        assert_drained_and_reusable(&s, 4);
    });
    assert!(full.count() > 0, "no execution met a full ring");
    assert!(empty.count() > 0, "no execution met an empty ring");
}

/// The dead-writer skip. Sender [`DEAD`] claims a position (its lane names it, `tail` moved,
/// the stamp stays free) and dies before publishing, racing a live sender that publishes the
/// other position; the receiver's registry scan says "dead" only once the death is confirmed.
/// The receiver gets the live message, once, never the dead one; the claim is marked lost
/// exactly once and counted in `lost_writes`, whether the receiver meets it before or after the
/// live message; and the ring is reusable for a full lap afterwards.
fn dead_sender_is_skipped(start: u64) {
    let s = channel(start, &[0, DEAD], &[0], CRATE);
    let (live, rx) = (sender(&s, 0), receiver(&s, 0));
    let dying = s.clone();
    let dies = thread::spawn(move || send_and_die(&dying, msg(DEAD, 0)));
    let publishes = thread::spawn(move || live.send_spinning(msg(0, 0), &Seen::default()));
    let got = rx.recv_spinning(&Seen::default());
    dies.join().unwrap();
    publishes.join().unwrap();
    assert_eq!(got, msg(0, 0), "the live message");
    // A claim behind the live message is still there: the next receive skips it.
    assert_eq!(rx.pop(), Pop::Empty);
    assert_eq!(s.ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1, "one message lost");
    assert_drained_and_reusable(&s, start + 2);
}

/// [`dead_sender_is_skipped`] from position 0.
#[test]
fn dead_sender_is_skipped_once_confirmed() {
    model("mpmc: dead_sender_is_skipped_once_confirmed", None, || dead_sender_is_skipped(0));
}

/// [`dead_sender_is_skipped`] from an odd position just below the 62-bit position limit: the
/// two claims straddle a lap boundary (slot 1, then slot 0 of the next lap), and the lost
/// stamp `LOST | p` and the free stamps of the next lap sit next to the limit the stamp decoder
/// checks.
#[test]
fn dead_sender_is_skipped_across_a_lap_boundary() {
    model("mpmc: dead_sender_is_skipped_across_a_lap_boundary", None, || {
        dead_sender_is_skipped(crate::ring::mpmc::MAX_POSITION - 7);
    });
}

/// The live counterpart of the dead-writer model: sender [`DEAD`] is merely slow (it claims,
/// and publishes in its own time) and its death is never confirmed. The receiver must wait for
/// it and receive both messages; nothing is skipped.
#[test]
fn live_slow_sender_is_never_skipped() {
    model("mpmc: live_slow_sender_is_never_skipped", None, || {
        let s = channel(0, &[0, DEAD], &[0], CRATE);
        let (slow, live, rx) = (sender(&s, DEAD), sender(&s, 0), receiver(&s, 0));
        let t1 = thread::spawn(move || slow.send_spinning(msg(DEAD, 0), &Seen::default()));
        let t2 = thread::spawn(move || live.send_spinning(msg(0, 0), &Seen::default()));
        let seen = Seen::default();
        let mut got = [rx.recv_spinning(&seen), rx.recv_spinning(&seen)];
        t1.join().unwrap();
        t2.join().unwrap();
        got.sort_unstable();
        assert_eq!(got, [msg(0, 0), msg(DEAD, 0)], "both messages, once each");
        assert_eq!(s.ctl.stats.0.lost_writes.load(Ordering::Relaxed), 0, "nothing skipped");
        assert_drained_and_reusable(&s, 2);
    });
}

/// The dead-reader case. One sender has filled the two slots and pushes a third message
/// (spinning while the ring is full); receiver [`DEAD`] claims one (its lane names it, `head`
/// moved), copies it out and dies before freeing the slot; a live receiver takes the other two
/// (both receivers block on `not_empty`). A sender that meets the dead claim frees it once the
/// death is confirmed (`lost_reads`); a claim nobody met is resolved by `resolve_claims_of`,
/// as before a new owner takes the entry. Each message is either received by the live receiver
/// (once, in order) or held by the dead one, and exactly one is lost.
#[test]
fn dead_receiver_is_freed_once_confirmed() {
    model("mpmc: dead_receiver_is_freed_once_confirmed", None, || {
        let s = channel(0, &[0], &[0, DEAD], CRATE);
        let (tx, rx) = (sender(&s, 0), receiver(&s, 0));
        assert!(tx.try_send(0) && tx.try_send(1), "fill the ring");
        let dying = s.clone();
        let dies = thread::spawn(move || receive_and_die(&dying));
        let sending = thread::spawn(move || tx.send_spinning(2, &Seen::default()));
        let seen = Seen::default();
        let got = [rx.recv_item(&seen), rx.recv_item(&seen)];
        let lost = dies.join().unwrap();
        sending.join().unwrap();
        assert!(got[0] < got[1], "the live receiver's messages in order");
        let mut all = vec![got[0], got[1], lost];
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2], "each message received or lost, once");
        let stats = &s.ctl.stats.0;
        let freed_by_sender = stats.lost_reads.load(Ordering::Relaxed);
        assert!(attach_over_dead(&s, Role::Receiver, DEAD), "nothing else holds the claim");
        let resolved = stats.lost_reads.load(Ordering::Relaxed) - freed_by_sender;
        assert_eq!(freed_by_sender + resolved, 1, "the dead claim is resolved exactly once");
        assert_drained_and_reusable(&s, 3);
    });
}

/// A dead writer's claim resolved twice at once: a new owner takes its entry over, resolving
/// the claim its lane names first (`resolve_claims_of` after confirming the death, as `attach`
/// does), while a receiver, stuck at the claim, resolves it itself. Exactly one of them marks
/// it lost and counts it; the receiver then gets the live message published behind it, once.
#[test]
fn dead_sender_claim_resolved_while_receiver_skips() {
    model("mpmc: dead_sender_claim_resolved_while_receiver_skips", None, || {
        let s = channel(0, &[0, DEAD], &[0], CRATE);
        // The dead sender claimed position 0 before anyone else ran.
        send_and_die(&s, msg(DEAD, 0));
        let (live, rx) = (sender(&s, 0), receiver(&s, 0));
        let publishes = thread::spawn(move || live.send_spinning(msg(0, 0), &Seen::default()));
        let attacher = s.clone();
        let attaches = thread::spawn(move || attach_over_dead(&attacher, Role::Sender, DEAD));
        assert_eq!(rx.recv_spinning(&Seen::default()), msg(0, 0));
        assert!(attaches.join().unwrap(), "no live lane names the dead claim");
        publishes.join().unwrap();
        assert_eq!(rx.pop(), Pop::Empty, "nothing delivered twice");
        assert_eq!(s.ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1, "counted once");
        assert_drained_and_reusable(&s, 2);
    });
}

/// A dead reader's claim resolved twice at once: receiver [`DEAD`] claimed message 0 of a full
/// ring and died; a new owner takes its entry over (resolving the claim first, as `attach`
/// does) while the sender, whose third message finds the ring full of the dead claim, frees it
/// itself. Exactly one of them frees the slot and counts it in `lost_reads`; the live receiver
/// gets messages 1 and 2, once each, in order.
#[test]
fn dead_receiver_claim_resolved_while_sender_frees() {
    model("mpmc: dead_receiver_claim_resolved_while_sender_frees", None, || {
        let s = channel(0, &[0], &[0, DEAD], CRATE);
        let (tx, rx) = (sender(&s, 0), receiver(&s, 0));
        assert!(tx.try_send(0) && tx.try_send(1), "fill the ring");
        // The dead receiver claimed message 0 before anyone else ran.
        assert_eq!(receive_and_die(&s), 0);
        let sending = thread::spawn(move || tx.send_spinning(2, &Seen::default()));
        let attacher = s.clone();
        let attaches = thread::spawn(move || attach_over_dead(&attacher, Role::Receiver, DEAD));
        let seen = Seen::default();
        let got = [rx.recv_item(&seen), rx.recv_item(&seen)];
        assert!(attaches.join().unwrap(), "no live lane names the dead claim");
        sending.join().unwrap();
        assert_eq!(got, [1, 2], "the other messages, once each, in order");
        assert_eq!(s.ctl.stats.0.lost_reads.load(Ordering::Relaxed), 1, "counted once");
        assert_drained_and_reusable(&s, 3);
    });
}

/// Slots seen by a sender whose first look at a slot (right after its first load of `tail`)
/// lets a rival run first: the rival claims that position and dies, so the sender's intent
/// store and claiming CAS that follow are for a position already taken.
struct OvertakenSlots<'a> {
    slots: &'a HeapSlots<u64>,
    rival: Cell<Option<Box<dyn FnOnce() + 'a>>>,
}

// SAFETY: forwards to the wrapped `HeapSlots` (valid, disjoint per index); the rival runs
// before any stamp is handed out and touches the slots only through the ring protocol.
unsafe impl SlotMemory<u64> for OvertakenSlots<'_> {
    fn stamp(&self, index: u64) -> &AtomicU64 {
        if let Some(rival) = self.rival.take() {
            rival();
        }
        SlotMemory::<u64>::stamp(self.slots, index)
    }

    unsafe fn write(&self, index: u64, value: &u64) {
        // SAFETY: forwarded: the caller's write claim gives it this slot (`write`'s contract).
        unsafe { self.slots.write(index, value) }
    }

    unsafe fn read(&self, index: u64) -> u64 {
        // SAFETY: forwarded, as `write`.
        unsafe { self.slots.read(index) }
    }
}

/// The stale intent of a live sender. Sender 0 loads `tail` (position `p`); before it looks at
/// the slot, sender [`DEAD`] claims `p` and dies (its own thread, which sender 0 waits for:
/// model scaffolding that forces the race). Sender 0 sees the slot free for `p`, stores its
/// intent `p`, loses the CAS, clears its lane and publishes at `p + 1`. Meanwhile the receiver
/// (blocking on `not_empty`) may scan while both lanes name `p`: the live one makes the claim
/// look held, and it must wait; once the live lane is cleared the dead claim is resolved.
/// The receiver gets the live message, the dead claim is counted once, and across the
/// executions a scan did meet the live stale intent beside the dead one. Registry order:
/// [`DEAD`] first, so the scan sees the dead lane before the live one.
#[test]
fn stale_intent_of_a_live_sender_only_delays_resolution() {
    let met = Seen::default();
    let noted = met.clone();
    model("mpmc: stale_intent_of_a_live_sender_only_delays_resolution", None, move || {
        let s = channel_noting(0, &[DEAD, 0], &[0], CRATE, noted.clone());
        let (live, rx) = (sender(&s, 0), receiver(&s, 0));
        let publishes = thread::spawn(move || {
            let dying = live.s.clone();
            let rival = move || {
                let dies = thread::spawn(move || send_and_die(&dying, msg(DEAD, 0)));
                dies.join().unwrap();
            };
            let slots =
                OvertakenSlots { slots: &live.s.slots, rival: Cell::new(Some(Box::new(rival))) };
            assert!(live.try_send_over(&slots, msg(0, 0)), "the next position is free");
            assert_eq!(live.s.positions().1, 2, "claimed after the dead one");
        });
        assert_eq!(rx.recv_item(&Seen::default()), msg(0, 0), "the live message");
        publishes.join().unwrap();
        assert_eq!(rx.pop(), Pop::Empty, "nothing delivered twice");
        assert_eq!(s.ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1, "counted once");
        assert_drained_and_reusable(&s, 2);
    });
    assert!(met.count() > 0, "no scan met the live stale intent beside the dead claim");
}

/// The stale intent of a dead sender. Sender [`DEAD`] stored its intent for position 0 and
/// died before its CAS (set up by hand: the lane names 0, `tail` did not move). Sender 0 then
/// claims 0 and publishes it, while a new owner takes the dead entry over (resolving the claim
/// its lane names first) and the receiver blocks for the message. The live claim must never be
/// taken for the dead one: the take-over finds it held or finished, nothing is counted lost,
/// and the receiver gets the message. Across the executions a scan did find the live claim
/// beside the dead lane (registry order: [`DEAD`] first).
#[test]
fn stale_intent_of_a_dead_sender_never_resolves_a_live_claim() {
    let met = Seen::default();
    let noted = met.clone();
    model("mpmc: stale_intent_of_a_dead_sender_never_resolves_a_live_claim", None, move || {
        let s = channel_noting(0, &[DEAD, 0], &[0], CRATE, noted.clone());
        s.entry(Role::Sender, DEAD).lane.store(0, Ordering::Relaxed);
        s.death_confirmed.store(1, Ordering::Relaxed);
        let (live, rx) = (sender(&s, 0), receiver(&s, 0));
        let publishes = thread::spawn(move || live.send(msg(0, 0), &Seen::default()));
        let attacher = s.clone();
        let attaches = thread::spawn(move || attach_over_dead(&attacher, Role::Sender, DEAD));
        assert_eq!(rx.recv_item(&Seen::default()), msg(0, 0), "the live message");
        attaches.join().unwrap();
        publishes.join().unwrap();
        assert_eq!(s.ctl.stats.0.lost_writes.load(Ordering::Relaxed), 0, "nothing lost");
        assert_drained_and_reusable(&s, 1);
    });
    assert!(met.count() > 0, "no scan met the live claim beside the dead lane");
}

/// The stale intent of a dead receiver. The sender filled the ring; receiver [`DEAD`] stored
/// its intent for position 0 and died before its CAS (set up by hand). Receiver 0 then claims
/// message 0 and copies it out while the sender, whose third message finds the ring full,
/// looks at the claim (spinning while it is held), and a new owner takes the dead entry over
/// (resolving the claim its lane names first). The live claim must never be freed under the
/// live reader (loom would report the payload write racing its copy): receiver 0 gets all
/// three messages in order and nothing is counted lost. Across the executions a scan did find
/// the live claim beside the dead lane (registry order: [`DEAD`] first).
#[test]
fn stale_intent_of_a_dead_receiver_never_frees_a_live_claim() {
    let met = Seen::default();
    let noted = met.clone();
    model("mpmc: stale_intent_of_a_dead_receiver_never_frees_a_live_claim", None, move || {
        let s = channel_noting(0, &[0], &[DEAD, 0], CRATE, noted.clone());
        let (tx, rx) = (sender(&s, 0), receiver(&s, 0));
        assert!(tx.try_send(0) && tx.try_send(1), "fill the ring");
        s.entry(Role::Receiver, DEAD).lane.store(0, Ordering::Relaxed);
        s.death_confirmed.store(1, Ordering::Relaxed);
        let sending = thread::spawn(move || tx.send_spinning(2, &Seen::default()));
        let attacher = s.clone();
        let attaches = thread::spawn(move || attach_over_dead(&attacher, Role::Receiver, DEAD));
        let seen = Seen::default();
        let got = [rx.recv_item(&seen), rx.recv_item(&seen), rx.recv_item(&seen)];
        attaches.join().unwrap();
        sending.join().unwrap();
        assert_eq!(got, [0, 1, 2], "every message, once, in order");
        assert_eq!(s.ctl.stats.0.lost_reads.load(Ordering::Relaxed), 0, "nothing lost");
        assert_drained_and_reusable(&s, 3);
    });
    assert!(met.count() > 0, "no scan met the live claim beside the dead lane");
}

/// Two receivers block on the empty ring (`wait::block` on `not_empty`) while a sender pushes
/// two messages, each followed by `wait::notify(not_empty)`: neither receiver sleeps through its
/// message (a lost wake-up is a deadlock), and each message is received once.
fn receivers_block(protocol: Protocol) {
    let s = channel(0, &[0], &[0, 1], protocol);
    let (tx, r0, r1) = (sender(&s, 0), receiver(&s, 0), receiver(&s, 1));
    let sending = thread::spawn(move || {
        tx.send_spinning(0, &Seen::default());
        tx.send_spinning(1, &Seen::default());
    });
    let other = thread::spawn(move || r1.recv_item(&Seen::default()));
    let mine = r0.recv_item(&Seen::default());
    let theirs = other.join().unwrap();
    sending.join().unwrap();
    let mut all = [mine, theirs];
    all.sort_unstable();
    assert_eq!(all, [0, 1], "each message once");
}

/// No lost wake-up on `not_empty`, with two receivers sleeping on one event count.
#[test]
fn no_lost_wake_up_receivers() {
    model("mpmc: no_lost_wake_up_receivers", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        receivers_block(CRATE);
    });
}

/// Two senders block on a full ring (`wait::block` on `not_full`) while a receiver takes the
/// two queued messages, each pop followed by `wait::notify(not_full)`: that frees a slot for
/// each sender, and neither may sleep through it (a lost wake-up is a deadlock: the receiver
/// waits for them in `join`). Then both senders' messages are in the ring, once each.
fn senders_block(protocol: Protocol) {
    let s = channel(0, &[0, 1], &[0], protocol);
    let (a, b, rx) = (sender(&s, 0), sender(&s, 1), receiver(&s, 0));
    assert!(a.try_send(0) && a.try_send(1), "fill the ring");
    let ta = thread::spawn(move || a.send(msg(0, 2), &Seen::default()));
    let tb = thread::spawn(move || b.send(msg(1, 0), &Seen::default()));
    assert_eq!((rx.pop(), rx.pop()), (Pop::Item(0), Pop::Item(1)), "the queued messages");
    ta.join().unwrap();
    tb.join().unwrap();
    let mut rest = [rx.pop(), rx.pop()].map(|p| match p {
        Pop::Item(value) => value,
        other => panic!("a blocked sender's message is missing: {other:?}"),
    });
    rest.sort_unstable();
    assert_eq!(rest, [msg(0, 2), msg(1, 0)], "each blocked sender's message once");
}

/// No lost wake-up on `not_full`, with two senders sleeping on one event count. Held at
/// [`THREE_THREAD_MAX_PREEMPTIONS`] for the suite's budget; the event count itself is checked
/// at 3 by `no_lost_wake_up_receivers` (the same `Waiters` code on the other line).
#[test]
fn no_lost_wake_up_senders() {
    model("mpmc: no_lost_wake_up_senders", Some(THREE_THREAD_MAX_PREEMPTIONS), || {
        senders_block(CRATE);
    });
}

/// The only sender detaches without sending (`notify_unconditionally` on `not_empty`) while two
/// receivers block on the empty ring: both wake and report `Disconnected`, and stay so.
#[test]
fn disconnect_wakes_every_receiver() {
    model("mpmc: disconnect_wakes_every_receiver", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        let s = channel(0, &[0], &[0, 1], CRATE);
        let (tx, r0, r1) = (sender(&s, 0), receiver(&s, 0), receiver(&s, 1));
        let detaching = thread::spawn(move || tx.detach());
        let other = thread::spawn(move || r1.recv(&Seen::default()));
        assert_eq!(r0.recv(&Seen::default()), Recv::Disconnected);
        assert_eq!(other.join().unwrap(), Recv::Disconnected);
        detaching.join().unwrap();
        assert_eq!(r0.try_recv(), Recv::Disconnected, "a disconnect is final");
    });
}

/// The last sender publishes one message and detaches while a receiver blocks: the receiver
/// must get the message, then `Disconnected` (never `Disconnected` first: the message would be
/// lost although it was published before the detach).
fn message_then_disconnect_with(disconnect: Disconnect) {
    let s = channel(0, &[0], &[0], Protocol { disconnect, ..CRATE });
    let (tx, rx) = (sender(&s, 0), receiver(&s, 0));
    let sending = thread::spawn(move || {
        tx.send_spinning(7, &Seen::default());
        tx.detach();
    });
    let first = rx.recv(&Seen::default());
    let second = rx.recv(&Seen::default());
    sending.join().unwrap();
    assert_eq!((first, second), (Recv::Item(7), Recv::Disconnected), "message, then disconnect");
}

/// [`message_then_disconnect_with`] exactly as `src/mpmc.rs` orders the detach and the check
/// (Release decrement, Acquire check).
#[test]
fn message_then_disconnect() {
    model("mpmc: message_then_disconnect", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        message_then_disconnect_with(Disconnect::AsMpmcRs);
    });
}

/// Negative check, on a bug these models found: with `senders_attached` decremented and
/// checked Relaxed, the receiver's first attempt can pop Empty (the slot's old state), read
/// the count's 0, pop Empty again and report `Disconnected`: nothing orders the sender's
/// publish before the receiver's second look. Loom finds it on the first execution it tries.
#[test]
#[should_panic(expected = "message, then disconnect")]
fn negative_relaxed_attached_count_is_reported() {
    model(
        "mpmc: negative_relaxed_attached_count_is_reported",
        Some(SLEEP_MODEL_MAX_PREEMPTIONS),
        || message_then_disconnect_with(Disconnect::Relaxed),
    );
}

/// Negative check, on a bug these models found: the event count's announce in the order of
/// commit 183e2e2 ([`CountFirst`]). Receiver 0 sleeps counted; receiver 1 raises the count;
/// the sender publishes message 0, swaps the count (2) to 0, bumps the epoch and wakes;
/// receiver 1 now reads the bumped epoch; receiver 0 takes message 0; receiver 1's re-check
/// finds nothing and it sleeps on the bumped epoch, uncounted; the sender publishes message 1,
/// finds `waiters == 0` and wakes nobody. Loom reports the deadlock.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_count_before_epoch_is_reported() {
    model(
        "mpmc: negative_count_before_epoch_is_reported",
        Some(SLEEP_MODEL_MAX_PREEMPTIONS),
        || receivers_block(Protocol { sleeper: SleeperKind::CountFirst, ..CRATE }),
    );
}

/// Negative check: a sender that never notifies leaves a blocked receiver asleep; loom reports
/// the deadlock.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_skipped_notify_is_reported() {
    model("mpmc: negative_skipped_notify_is_reported", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        receivers_block(Protocol { waker: Waker::Never, ..CRATE });
    });
}

/// Negative check: without the waker's fence between the publish and its load of `waiters`,
/// that load may return 0 although a receiver has counted itself and its fenced re-check
/// missed the message (Dekker's pattern with one fence): the wake-up is lost, loom reports the
/// deadlock. Shows `no_lost_wake_up_receivers` checks the fence, at its own bound.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_notify_without_fence_is_reported() {
    model(
        "mpmc: negative_notify_without_fence_is_reported",
        Some(SLEEP_MODEL_MAX_PREEMPTIONS),
        || {
            receivers_block(Protocol { waker: Waker::NoFence, ..CRATE });
        },
    );
}

/// Negative check: a receiver that sleeps right after counting itself, without re-checking the
/// ring, sleeps through a message published between its last attempt and its announce (the
/// sender saw no waiter); loom reports the deadlock.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_sleep_without_recheck_is_reported() {
    model(
        "mpmc: negative_sleep_without_recheck_is_reported",
        Some(SLEEP_MODEL_MAX_PREEMPTIONS),
        || {
            receivers_block(Protocol { recheck: false, ..CRATE });
        },
    );
}
