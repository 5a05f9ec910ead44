//! Loom models of the SPSC ring and of the sleep/wake handshake.
//!
//! ```text
//! RUSTFLAGS="--cfg shmchan_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --lib loom_models
//! ```
//!
//! The control block is built as a value and the slots on the heap ([`HeapSlots`], whose payload
//! cells are loom's, so a payload read racing a write fails the model). The endpoints below
//! mirror `src/spsc.rs` step for step, minus what loom cannot or need not see (the mapping, the
//! `/proc` liveness check of a crashed peer, poisoning):
//! - send: `ProducerRing::push`, then `wake_if_sleeping` on the consumer's word;
//! - receive: `ConsumerRing::pop` + `release`, then `wake_if_sleeping` on the producer's word; on
//!   an empty ring, `empty_outcome`: load the producer's owner word (Acquire) and, if it is
//!   detached, pop once more to choose between a last message and `Disconnected`;
//! - detach: the owner word gains `DETACHED` (Release), then `wake_unconditionally` on the
//!   peer's word;
//! - blocking calls: `wait::block` with [`WaitStrategy::Sleep`] and no deadline. Under loom
//!   `park::wait` ignores timeouts, so a lost wake-up leaves a thread asleep forever and loom
//!   reports the execution as a deadlock.
//!
//! `LOOM_MAX_PREEMPTIONS` sets the preemption bound; without it the models use
//! [`DEFAULT_PREEMPTIONS`]. The models where a sleeper announces twice are held at
//! [`SLEEP_MODEL_MAX_PREEMPTIONS`], past which loom 0.7.2 raises a false alarm.
//!
//! `negative_*` models break the protocol on purpose and must fail: they show the models can
//! find lost wake-ups at the settings where the real protocol passes.

use std::mem::ManuallyDrop;
use std::ops::Deref;

use loom::sync::Arc;
use loom::thread;

use crate::layout::{AWAKE, SLEEPING, SpscControl, endpoint};
use crate::ring::HeapSlots;
use crate::ring::spsc::{ConsumerRing, Pop, ProducerRing, Push};
use crate::sync::atomic::{Ordering, fence};
use crate::sync::fence::Fences;
use crate::sync::park;
use crate::sync::wait::{self, Attempt, WaitStrategy};

/// Preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 3;

/// The highest preemption bound at which loom 0.7.2 checks a model where one side sleeps more
/// than once without false alarms.
///
/// Loom keeps each atomic's modification order as a partial order and does not place a
/// read-modify-write right after the store it read (tokio-rs/loom#254, fix proposed in #391).
/// The handshake meets this when the sleeper announces (`SLEEPING`), finds a message on its
/// re-check and stores `AWAKE`; the waker, having read the announce late, swaps the word and
/// reads that `AWAKE`; then the sleeper announces again and sleeps. The C++ model puts the swap
/// before the second announce (it read a value sequenced before it), so the waker's next load
/// after its fence must see `SLEEPING`; loom lets it return the swap's `AWAKE` and reports a lost
/// wake-up. `no_lost_wake_up_consumer_side` and `no_lost_wake_up_both_sides` hit it from bound
/// 4 on; with three messages instead of two, bound 3 suffices on either side.
const SLEEP_MODEL_MAX_PREEMPTIONS: usize = 3;

/// Runs `f` under every interleaving loom explores within the preemption bound
/// (`LOOM_MAX_PREEMPTIONS`, else [`DEFAULT_PREEMPTIONS`], lowered to `max_preemptions` if
/// given), and checks that more than one execution was explored (a model that never branches
/// checks nothing).
fn model<F: Fn() + Sync + Send + 'static>(name: &str, max_preemptions: Option<usize>, f: F) {
    let mut builder = loom::model::Builder::new();
    let mut bound = builder.preemption_bound.unwrap_or(DEFAULT_PREEMPTIONS);
    if let Some(max) = max_preemptions {
        bound = bound.min(max);
    }
    builder.preemption_bound = Some(bound);
    // Counted outside loom: every execution runs on this OS thread, one after another.
    let executions = std::sync::Arc::new(std::sync::Mutex::new(0u64));
    let counter = std::sync::Arc::clone(&executions);
    builder.check(move || {
        *counter.lock().unwrap() += 1;
        f();
    });
    let executions = *executions.lock().unwrap();
    eprintln!("{name}: {executions} executions, preemption bound {bound}");
    assert!(executions > 1, "{name}: loom explored a single execution");
}

/// The producer's pid and start time in its owner word (any attached value will do).
const PRODUCER_ID: (u32, u64) = (100, 1);

/// The shared memory of one channel: control block and slots.
struct Shared {
    ctl: SpscControl,
    slots: HeapSlots<u64>,
}

/// A handle's reference to the shared memory: a `loom::sync::Arc` that is not dropped while
/// the thread unwinds. Once loom reports a failure (a deadlock) no model thread is active, and
/// dropping a loom `Arc` then panics again, inside the unwinding: the test binary aborts and the
/// other models never report. Leaking it instead lets the failure surface as a failed test.
struct SharedRef(ManuallyDrop<Arc<Shared>>);

impl SharedRef {
    fn new(shared: &Arc<Shared>) -> Self {
        SharedRef(ManuallyDrop::new(Arc::clone(shared)))
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

/// A channel of `capacity` slots whose positions start at `start`, with both rings attached and
/// the producer's owner word recorded (the consumer's is never read by these models).
fn channel(capacity: u64, start: u64, waker: Waker) -> (Tx, Rx) {
    let shared =
        Arc::new(Shared { ctl: SpscControl::new(start), slots: HeapSlots::new(capacity, start) });
    let ctl = &shared.ctl;
    let producer = endpoint::attached(PRODUCER_ID.0, PRODUCER_ID.1);
    ctl.endpoints.0.producer.store(producer, Ordering::Relaxed);
    let fences = Fences::for_process();
    let ring = ProducerRing::attach(ctl, &shared.slots, capacity).expect("fresh ring");
    let tx_state = TxState { ring, fences, waker, me: producer };
    let ring = ConsumerRing::attach(ctl, capacity).expect("fresh ring");
    let rx_state = RxState { ring, fences };
    (
        Tx { shared: SharedRef::new(&shared), state: tx_state },
        Rx { shared: SharedRef::new(&shared), state: rx_state },
    )
}

/// How the producer wakes the consumer after publishing. Only [`Waker::Handshake`] is the
/// crate's protocol; the others are deliberately broken, to show the models catch the bug.
#[derive(Clone, Copy, Debug)]
enum Waker {
    /// `wait::wake_if_sleeping`: light fence, load the word, wake if `SLEEPING`.
    Handshake,
    /// As `wake_if_sleeping`, without the fence between publishing and loading the word.
    NoFence,
    /// Never wakes the consumer.
    Never,
}

/// A producer handle: the shared memory, and everything else a send attempt needs.
struct Tx {
    shared: SharedRef,
    state: TxState,
}

struct TxState {
    ring: ProducerRing,
    fences: Fences,
    waker: Waker,
    me: u64,
}

impl TxState {
    /// `Producer::try_send` (without the consumer-gone check): push, then wake the consumer if
    /// it announced it sleeps. `false` when the ring is full.
    fn try_send(&mut self, s: &Shared, value: u64) -> bool {
        match self.ring.push(&s.ctl, &s.slots, &value) {
            Push::Done => {
                self.wake_consumer(s);
                true
            }
            Push::Full => false,
            Push::Corrupt => panic!("the producer saw a corrupted ring"),
        }
    }

    fn wake_consumer(&self, s: &Shared) {
        let word = &s.ctl.consumer_wait.0;
        match self.waker {
            Waker::Handshake => wait::wake_if_sleeping(word, self.fences),
            Waker::NoFence => {
                if word.load(Ordering::Relaxed) == SLEEPING
                    && word.swap(AWAKE, Ordering::Relaxed) != AWAKE
                {
                    park::wake_all(word);
                }
            }
            Waker::Never => {}
        }
    }
}

impl Tx {
    /// Sends `value`, yielding to the model while the ring is full.
    fn send_spinning(&mut self, value: u64) {
        while !self.state.try_send(&self.shared, value) {
            thread::yield_now();
        }
    }

    /// `Producer::send`: blocks on `producer_wait` while the ring is full.
    fn send(&mut self, value: u64) {
        let shared = &*self.shared;
        let mut op = SendOne { shared, tx: &mut self.state, value };
        let fences = op.tx.fences;
        let word = &shared.ctl.producer_wait.0;
        wait::block(&mut op, word, WaitStrategy::Sleep, fences, None)
            .expect("no deadline: block returns only when sent");
    }

    /// `Producer`'s drop: mark the owner word detached (Release, after every publish), then wake
    /// the consumer whatever its word says.
    fn detach(self, how: Detach) {
        let ctl = &self.shared.ctl;
        let me = self.state.me;
        let detached = ctl.endpoints.0.producer.compare_exchange(
            me,
            me | endpoint::DETACHED,
            Ordering::Release,
            Ordering::Relaxed,
        );
        assert_eq!(detached, Ok(me), "nobody else writes the producer's owner word");
        let word = &ctl.consumer_wait.0;
        match how {
            Detach::AsDrop => wait::wake_unconditionally(word),
            Detach::AwakeBeforeFence => {
                word.store(AWAKE, Ordering::Relaxed);
                fence(Ordering::SeqCst);
                park::wake_all(word);
            }
        }
    }
}

/// How the producer detaches.
#[derive(Clone, Copy, Debug)]
enum Detach {
    /// Exactly as `Producer`'s drop: `detach` (Release CAS), then `wake_unconditionally`
    /// (`fence(SeqCst)`, store `AWAKE`, wake all). The fence separates the owner word from the
    /// futex word: either the consumer's re-check sees the detach, or its `SLEEPING` precedes
    /// our `AWAKE` in the word's modification order and it does not sleep on it.
    AsDrop,
    /// The order `wake_unconditionally` once had: store `AWAKE`, then the fence. Nothing orders
    /// the two stores to the futex word, so `AWAKE` may land first and the consumer parks on
    /// its own `SLEEPING` (a lost wake-up on weakly ordered CPUs; loom finds it).
    AwakeBeforeFence,
}

struct SendOne<'a> {
    shared: &'a Shared,
    tx: &'a mut TxState,
    value: u64,
}

impl Attempt for SendOne<'_> {
    type Output = ();

    fn attempt(&mut self) -> Option<()> {
        self.tx.try_send(self.shared, self.value).then_some(())
    }

    /// The liveness check of a crashed consumer reads `/proc`, which the models leave out: the
    /// consumer here never goes away.
    fn check_peer(&mut self) {}
}

/// What a receive attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recv {
    Item(u64),
    Empty,
    Disconnected,
}

/// A consumer handle: the shared memory, and everything else a receive attempt needs.
struct Rx {
    shared: SharedRef,
    state: RxState,
}

struct RxState {
    ring: ConsumerRing,
    fences: Fences,
}

impl RxState {
    /// `Consumer::try_recv` (without poisoning): pop and release, or decide Empty/Disconnected.
    fn try_recv(&mut self, s: &Shared) -> Recv {
        match self.ring.pop(&s.slots) {
            Pop::Item(value) => {
                self.release(s);
                Recv::Item(value)
            }
            Pop::Empty => self.empty_outcome(s),
            Pop::Corrupt => panic!("the consumer saw a corrupted ring"),
        }
    }

    /// `Consumer::release`: hand the slot back, then wake the producer if it sleeps.
    fn release(&self, s: &Shared) {
        self.ring.release(&s.ctl);
        wait::wake_if_sleeping(&s.ctl.producer_wait.0, self.fences);
    }

    /// `Consumer::empty_outcome`: a detached producer published everything before detaching, so
    /// once its word reads detached one more pop is conclusive.
    fn empty_outcome(&mut self, s: &Shared) -> Recv {
        // SYNC: Acquire pairs with the producer's Release when it marks itself detached.
        let peer = s.ctl.endpoints.0.producer.load(Ordering::Acquire);
        if !endpoint::is_detached(peer) {
            return Recv::Empty;
        }
        match self.ring.pop(&s.slots) {
            Pop::Item(value) => {
                self.release(s);
                Recv::Item(value)
            }
            Pop::Empty => Recv::Disconnected,
            Pop::Corrupt => panic!("the consumer saw a corrupted ring"),
        }
    }
}

impl Rx {
    fn try_recv(&mut self) -> Recv {
        self.state.try_recv(&self.shared)
    }

    /// Receives the next message, yielding to the model while the ring is empty.
    fn recv_spinning(&mut self) -> Recv {
        loop {
            match self.try_recv() {
                Recv::Empty => thread::yield_now(),
                done => return done,
            }
        }
    }

    /// `Consumer::recv`: blocks on `consumer_wait` while the ring is empty. Never `Empty`.
    fn recv(&mut self) -> Recv {
        let shared = &*self.shared;
        let mut op = RecvOne { shared, rx: &mut self.state };
        let fences = op.rx.fences;
        let word = &shared.ctl.consumer_wait.0;
        wait::block(&mut op, word, WaitStrategy::Sleep, fences, None)
            .expect("no deadline: block returns only with a message or a disconnect")
    }

    /// The positions the control block records: (head, tail).
    fn positions(&self) -> (u64, u64) {
        let ctl = &self.shared.ctl;
        (ctl.head.0.load(Ordering::Acquire), ctl.tail.0.load(Ordering::Acquire))
    }
}

struct RecvOne<'a> {
    shared: &'a Shared,
    rx: &'a mut RxState,
}

impl Attempt for RecvOne<'_> {
    type Output = Recv;

    fn attempt(&mut self) -> Option<Recv> {
        match self.rx.try_recv(self.shared) {
            Recv::Empty => None,
            done => Some(done),
        }
    }

    /// The liveness check of a crashed producer reads `/proc`, which the models leave out; a
    /// clean detach is read from the owner word by every attempt (`empty_outcome`).
    fn check_peer(&mut self) {}
}

/// How each side of [`transfer`] waits.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Retry with `yield_now` (the model's spin loop).
    Spin,
    /// `wait::block` with the sleep strategy.
    Block,
}

/// Sends `0..count` through a fresh channel while the model thread receives them; checks they
/// arrive in order, exactly once, and that both positions end `count` past `start`.
fn transfer(capacity: u64, start: u64, count: u64, send: Wait, recv: Wait, waker: Waker) {
    let (mut tx, mut rx) = channel(capacity, start, waker);
    let producer = thread::spawn(move || {
        for value in 0..count {
            match send {
                Wait::Spin => tx.send_spinning(value),
                Wait::Block => tx.send(value),
            }
        }
    });
    let mut received = Vec::new();
    for _ in 0..count {
        let got = match recv {
            Wait::Spin => rx.recv_spinning(),
            Wait::Block => rx.recv(),
        };
        match got {
            Recv::Item(value) => received.push(value),
            other => panic!("expected a message, got {other:?}"),
        }
    }
    producer.join().unwrap();
    assert_eq!(received, (0..count).collect::<Vec<_>>(), "FIFO, no loss, no duplicate");
    assert_eq!(rx.try_recv(), Recv::Empty, "nothing beyond what was sent");
    let end = start.wrapping_add(count);
    assert_eq!(rx.positions(), (end, end));
}

/// FIFO order, no loss and no duplicate at the full and empty edges of a one-slot ring: every
/// message fills the ring and every receive empties it.
#[test]
fn fifo_capacity_1() {
    model("fifo_capacity_1", None, || transfer(1, 0, 4, Wait::Spin, Wait::Spin, Waker::Handshake));
}

/// FIFO order, no loss and no duplicate in a two-slot ring, where the producer can run a full
/// lap ahead and reuses a slot the consumer just released.
#[test]
fn fifo_capacity_2() {
    model("fifo_capacity_2", None, || transfer(2, 0, 5, Wait::Spin, Wait::Spin, Waker::Handshake));
}

/// A consumer asleep on an empty ring is always woken by the producer's publish (a lost
/// wake-up would leave it asleep: loom reports a deadlock).
#[test]
fn no_lost_wake_up_consumer_side() {
    model("no_lost_wake_up_consumer_side", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        transfer(2, 0, 2, Wait::Spin, Wait::Block, Waker::Handshake);
    });
}

/// A producer asleep on a full one-slot ring is always woken by the consumer's release.
#[test]
fn no_lost_wake_up_producer_side() {
    model("no_lost_wake_up_producer_side", None, || {
        transfer(1, 0, 2, Wait::Block, Wait::Spin, Waker::Handshake);
    });
}

/// Both sides blocking on a one-slot ring, as `send`/`recv` do: neither wake-up is lost.
#[test]
fn no_lost_wake_up_both_sides() {
    model("no_lost_wake_up_both_sides", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        transfer(1, 0, 2, Wait::Block, Wait::Block, Waker::Handshake);
    });
}

/// A producer that publishes `published` messages and detaches wakes a consumer asleep on the
/// empty ring; the consumer gets every message, then `Disconnected`, and stays disconnected.
fn disconnect_wakes_sleeper(capacity: u64, published: u64, how: Detach) {
    let (mut tx, mut rx) = channel(capacity, 0, Waker::Handshake);
    let producer = thread::spawn(move || {
        for value in 0..published {
            tx.send(value);
        }
        tx.detach(how);
    });
    let mut received = Vec::new();
    loop {
        match rx.recv() {
            Recv::Item(value) => received.push(value),
            Recv::Disconnected => break,
            Recv::Empty => unreachable!("a blocking receive never reports Empty"),
        }
    }
    producer.join().unwrap();
    assert_eq!(received, (0..published).collect::<Vec<_>>(), "everything published arrives");
    assert_eq!(rx.try_recv(), Recv::Disconnected, "a disconnect is final");
}

/// Disconnect with nothing published, detaching exactly as `Producer`'s drop does: the
/// sleeping consumer must wake and report `Disconnected`.
#[test]
fn disconnect_wakes_sleeper_after_0_messages() {
    model("disconnect_wakes_sleeper_after_0_messages", None, || {
        disconnect_wakes_sleeper(1, 0, Detach::AsDrop);
    });
}

/// Disconnect right after one message: the consumer gets the message first (never an early
/// `Disconnected`) and does not sleep through the detach.
#[test]
fn disconnect_wakes_sleeper_after_1_message() {
    model("disconnect_wakes_sleeper_after_1_message", None, || {
        disconnect_wakes_sleeper(1, 1, Detach::AsDrop);
    });
}

/// Two messages through a one-slot ring (the producer sleeps on the full ring between them),
/// then the detach: all delivered in order, then `Disconnected`.
#[test]
fn disconnect_after_2_messages_through_1_slot() {
    model("disconnect_after_2_messages_through_1_slot", None, || {
        disconnect_wakes_sleeper(1, 2, Detach::AsDrop);
    });
}

/// The detach wake-up with `AWAKE` stored before the fence loses the wake-up: loom must say so.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_awake_before_fence_is_reported() {
    model("negative_awake_before_fence_is_reported", None, || {
        disconnect_wakes_sleeper(1, 0, Detach::AwakeBeforeFence);
    });
}

/// Positions that cross `u64::MAX`: stamps and free-slot arithmetic wrap, FIFO still holds.
#[test]
fn fifo_across_position_wrap() {
    model("fifo_across_position_wrap", None, || {
        transfer(2, u64::MAX - 1, 5, Wait::Spin, Wait::Spin, Waker::Handshake);
    });
}

/// Negative check: a producer that never wakes the consumer leaves it asleep, and the model
/// reports the deadlock. Shows `no_lost_wake_up_consumer_side` can fail, at its own bound.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_skipped_wake_is_reported() {
    model("negative_skipped_wake_is_reported", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        transfer(2, 0, 2, Wait::Spin, Wait::Block, Waker::Never);
    });
}

/// Negative check: without the waker's fence nothing orders the producer's load of the
/// consumer's word after the consumer's announce, so it may return the old `AWAKE` although the
/// consumer's fenced re-check already missed the message (Dekker's pattern with one fence); loom
/// finds that execution and reports the lost wake-up as a deadlock. Shows the handshake models
/// check the waker's fence, at the same bound as `no_lost_wake_up_consumer_side`.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_missing_waker_fence_is_reported() {
    model("negative_missing_waker_fence_is_reported", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        transfer(2, 0, 2, Wait::Spin, Wait::Block, Waker::NoFence);
    });
}
