//! Loom models of the byte ring (`ring::bytes`) and its sleep/wake handshake.
//!
//! ```text
//! RUSTFLAGS="--cfg shmchan_loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=3 \
//!     cargo test --release --lib loom_models
//! ```
//!
//! The control block is built as a value and the data area on the heap ([`HeapData`], one loom
//! cell per 8-byte word, so a read of a record racing a write of it fails the model). The
//! endpoints mirror `src/bytes.rs`, minus the mapping, the `/proc` liveness check and poisoning:
//! - send: `ProducerRing::reserve`, copy into the reservation, `commit`, then
//!   `wake_if_sleeping` on the consumer's word;
//! - receive: `ConsumerRing::peek`, copy out, `release`, then `wake_if_sleeping` on the
//!   producer's word; on an empty ring, load the producer's owner word (Acquire) and, if it is
//!   detached, peek once more to choose between a last record and `Disconnected`;
//! - detach: the owner word gains `DETACHED` (Release), then `wake_unconditionally`;
//! - blocking: `wait::block` with [`WaitStrategy::Sleep`] and no deadline; under loom
//!   `park::wait` ignores timeouts, so a lost wake-up is reported as a deadlock.
//!
//! Every model uses a 32-byte area with `max_message` 8 (records of 8 or 16 bytes), small enough
//! for loom and large enough to wrap, pad, fill and drain.

use std::mem::ManuallyDrop;
use std::ops::Deref;

use loom::sync::Arc;
use loom::thread;

use crate::layout::endpoint;
use crate::ring::bytes::{
    BytesControl, ConsumerRing, DataMemory, HeapData, ProducerRing, Record, Refused, Reservation,
};
use crate::sync::atomic::Ordering;
use crate::sync::fence::Fences;
use crate::sync::wait::{self, Attempt, WaitStrategy};

const CAPACITY: u64 = 32;
const MAX: u64 = 8;
/// The bound above which loom 0.7.2 raises false alarms on models where a side sleeps more
/// than once (see `loom_models::SLEEP_MODEL_MAX_PREEMPTIONS`).
const SLEEP_MODEL_MAX_PREEMPTIONS: usize = 3;

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
    builder.check(move || {
        *counter.lock().unwrap() += 1;
        f();
    });
    let executions = *executions.lock().unwrap();
    eprintln!("{name}: {executions} executions, preemption bound {bound}");
    assert!(executions > 1, "{name}: loom explored a single execution");
}

struct Shared {
    ctl: BytesControl,
    data: HeapData,
}

/// A `loom::sync::Arc` not dropped while unwinding (see `loom_models::SharedRef`): dropping it
/// after loom reported a deadlock would abort the test binary.
struct SharedRef(ManuallyDrop<Arc<Shared>>);

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

const PRODUCER_WORD: u64 = 100 | (1 << 32);

/// The message with sequence number `seq`: `len` bytes derived from it.
fn msg(seq: u8, len: u64) -> Vec<u8> {
    (0..len as u8).map(|k| seq.wrapping_mul(16).wrapping_add(k)).collect()
}

struct Tx {
    s: SharedRef,
    ring: ProducerRing,
    fences: Fences,
    /// Whether a commit wakes a sleeping consumer (false only in the negative model).
    wakes: bool,
}

struct Rx {
    s: SharedRef,
    ring: ConsumerRing,
    fences: Fences,
}

fn channel(start: u64, wakes: bool) -> (Tx, Rx) {
    let shared = Arc::new(Shared { ctl: BytesControl::new(start), data: HeapData::new(CAPACITY) });
    shared.ctl.endpoints.0.producer.store(PRODUCER_WORD, Ordering::Relaxed);
    let fences = Fences::for_process();
    let p = ProducerRing::attach(&shared.ctl, CAPACITY, MAX).expect("fresh ring");
    let c = ConsumerRing::attach(&shared.ctl, CAPACITY, MAX).expect("fresh ring");
    let tx = Tx { s: SharedRef(ManuallyDrop::new(Arc::clone(&shared))), ring: p, fences, wakes };
    let rx = Rx { s: SharedRef(ManuallyDrop::new(shared)), ring: c, fences };
    (tx, rx)
}

impl Tx {
    fn try_reserve(&mut self, len: u64) -> Option<Reservation> {
        match self.ring.reserve(&self.s.ctl, len) {
            Ok(r) => Some(r),
            Err(Refused::Full) => None,
            Err(e) => panic!("the producer saw {e:?}"),
        }
    }

    /// Writes `bytes` into the reservation and commits `bytes.len()` of its bytes.
    fn commit(&mut self, r: &Reservation, bytes: &[u8]) {
        // SAFETY: within the reservation (bytes.len() <= r.max_len, checked by commit).
        unsafe { self.s.data.write(r.payload_offset, bytes) };
        self.ring.commit(&self.s.ctl, &self.s.data, r, bytes.len() as u64);
        if self.wakes {
            wait::wake_if_sleeping(&self.s.ctl.consumer_wait.0, self.fences);
        }
    }

    fn send_spinning(&mut self, bytes: &[u8]) {
        loop {
            if let Some(r) = self.try_reserve(bytes.len() as u64) {
                return self.commit(&r, bytes);
            }
            thread::yield_now();
        }
    }

    /// `Producer::grant` + commit: blocks on `producer_wait` while the ring lacks room.
    fn send_blocking(&mut self, bytes: &[u8]) {
        let s = SharedRef(ManuallyDrop::new(Arc::clone(&self.s.0)));
        let mut op = ReserveOp { tx: self, len: bytes.len() as u64 };
        let fences = op.tx.fences;
        let r = wait::block(&mut op, &s.ctl.producer_wait.0, WaitStrategy::Sleep, fences, None)
            .expect("no deadline");
        self.commit(&r, bytes);
    }

    /// `Producer`'s drop.
    fn detach(self) {
        let ctl = &self.s.ctl;
        let word = PRODUCER_WORD;
        let detached = ctl.endpoints.0.producer.compare_exchange(
            word,
            word | endpoint::DETACHED,
            Ordering::Release,
            Ordering::Relaxed,
        );
        assert_eq!(detached, Ok(word));
        wait::wake_unconditionally(&ctl.consumer_wait.0);
    }
}

struct ReserveOp<'a> {
    tx: &'a mut Tx,
    len: u64,
}

impl Attempt for ReserveOp<'_> {
    type Output = Reservation;

    fn attempt(&mut self) -> Option<Reservation> {
        self.tx.try_reserve(self.len)
    }

    fn check_peer(&mut self) {}
}

#[derive(Debug, PartialEq, Eq)]
enum Recv {
    Msg(Vec<u8>),
    Empty,
    Disconnected,
}

impl Rx {
    fn try_peek(&mut self) -> Option<Record> {
        self.ring.peek(&self.s.ctl, &self.s.data).expect("the consumer saw a corrupted ring")
    }

    /// Copies the record out and releases it, as a `ReadGrant` does on drop.
    fn take(&mut self, record: &Record) -> Vec<u8> {
        let mut out = vec![0; record.len as usize];
        // SAFETY: inside a validated, published record we have not released.
        unsafe { self.s.data.read(record.payload_offset, &mut out) };
        self.ring.release(&self.s.ctl, record);
        wait::wake_if_sleeping(&self.s.ctl.producer_wait.0, self.fences);
        out
    }

    /// `Consumer::try_recv`, with `empty_outcome`.
    fn try_recv(&mut self) -> Recv {
        if let Some(r) = self.try_peek() {
            return Recv::Msg(self.take(&r));
        }
        // SYNC: Acquire pairs with the producer's Release when it marks itself detached.
        let peer = self.s.ctl.endpoints.0.producer.load(Ordering::Acquire);
        if !endpoint::is_detached(peer) {
            return Recv::Empty;
        }
        match self.try_peek() {
            Some(r) => Recv::Msg(self.take(&r)),
            None => Recv::Disconnected,
        }
    }

    fn recv_spinning(&mut self) -> Vec<u8> {
        loop {
            match self.try_recv() {
                Recv::Msg(m) => return m,
                Recv::Empty => thread::yield_now(),
                Recv::Disconnected => panic!("disconnected early"),
            }
        }
    }

    /// `Consumer::recv`: blocks on `consumer_wait` while the ring is empty.
    fn recv_blocking(&mut self) -> Recv {
        let s = SharedRef(ManuallyDrop::new(Arc::clone(&self.s.0)));
        let mut op = RecvOp { rx: self };
        let fences = op.rx.fences;
        wait::block(&mut op, &s.ctl.consumer_wait.0, WaitStrategy::Sleep, fences, None)
            .expect("no deadline")
    }
}

struct RecvOp<'a> {
    rx: &'a mut Rx,
}

impl Attempt for RecvOp<'_> {
    type Output = Recv;

    fn attempt(&mut self) -> Option<Recv> {
        match self.rx.try_recv() {
            Recv::Empty => None,
            done => Some(done),
        }
    }

    fn check_peer(&mut self) {}
}

/// Records of 8, 0 and 8 bytes from 8 bytes before the end of the area: the first and the last
/// are preceded by padding, the positions cross `u64::MAX`, and every record arrives intact, in
/// order, with no read racing a write.
#[test]
fn wrap_and_padding() {
    model("bytes: wrap_and_padding", None, || {
        let (mut tx, mut rx) = channel(u64::MAX - 7, true);
        let lens = [8, 0, 8];
        let producer = thread::spawn(move || {
            for (seq, &len) in lens.iter().enumerate() {
                tx.send_spinning(&msg(seq as u8, len));
            }
        });
        for (seq, &len) in lens.iter().enumerate() {
            assert_eq!(rx.recv_spinning(), msg(seq as u8, len));
        }
        producer.join().unwrap();
        assert_eq!(rx.try_recv(), Recv::Empty);
        // Padding 8, record 16, record 8, padding 8, record 16.
        assert_eq!(rx.ring.position(), (u64::MAX - 7).wrapping_add(56));
    });
}

/// A grant dropped without commit publishes nothing; the consumer reads a record in place
/// while the producer fills the next grant; a record is overwritten only after its release.
#[test]
fn grant_commit_release() {
    model("bytes: grant_commit_release", None, || {
        let (mut tx, mut rx) = channel(0, true);
        let producer = thread::spawn(move || {
            // Abandoned: reserved, written, never committed.
            if let Some(r) = tx.try_reserve(MAX) {
                // SAFETY: within the reservation.
                unsafe { tx.s.data.write(r.payload_offset, &[0xee; 8]) };
            }
            for seq in 0..3u8 {
                tx.send_spinning(&msg(seq, MAX));
            }
        });
        for seq in 0..3u8 {
            let record = loop {
                match rx.try_peek() {
                    Some(r) => break r,
                    None => thread::yield_now(),
                }
            };
            // Read in place, in two parts, before releasing.
            let mut head = [0u8; 4];
            // SAFETY: inside the published record.
            unsafe { rx.s.data.read(record.payload_offset, &mut head) };
            assert_eq!(head[..], msg(seq, MAX)[..4]);
            assert_eq!(rx.take(&record), msg(seq, MAX));
        }
        producer.join().unwrap();
        assert_eq!(rx.try_recv(), Recv::Empty);
    });
}

/// A grant committed shorter than reserved publishes exactly the committed bytes, and the
/// positions advance by the shorter record (plus the padding the full reservation needed).
#[test]
fn partial_commit() {
    model("bytes: partial_commit", None, || {
        let (mut tx, mut rx) = channel(16, true);
        let producer = thread::spawn(move || {
            for seq in 0..3u8 {
                let r = loop {
                    match tx.try_reserve(MAX) {
                        Some(r) => break r,
                        None => thread::yield_now(),
                    }
                };
                tx.commit(&r, &msg(seq, u64::from(seq) * 3));
            }
        });
        for seq in 0..3u8 {
            assert_eq!(rx.recv_spinning(), msg(seq, u64::from(seq) * 3));
        }
        producer.join().unwrap();
        // Record 8 (0 bytes), padding 8, record 16 (3 bytes), record 16 (6 bytes).
        assert_eq!(rx.ring.position(), 16 + 8 + 8 + 16 + 16);
    });
}

/// A consumer asleep on an empty ring is always woken by a commit.
#[test]
fn no_lost_wake_up_consumer_side() {
    model("bytes: no_lost_wake_up_consumer_side", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        let (mut tx, mut rx) = channel(0, true);
        let producer = thread::spawn(move || {
            for seq in 0..2u8 {
                tx.send_spinning(&msg(seq, 1));
            }
        });
        for seq in 0..2u8 {
            assert_eq!(rx.recv_blocking(), Recv::Msg(msg(seq, 1)));
        }
        producer.join().unwrap();
    });
}

/// A producer asleep on a full ring (two 16-byte records) is always woken by a release.
#[test]
fn no_lost_wake_up_producer_side() {
    model("bytes: no_lost_wake_up_producer_side", None, || {
        let (mut tx, mut rx) = channel(0, true);
        let producer = thread::spawn(move || {
            for seq in 0..3u8 {
                tx.send_blocking(&msg(seq, MAX));
            }
        });
        for seq in 0..3u8 {
            assert_eq!(rx.recv_spinning(), msg(seq, MAX));
        }
        producer.join().unwrap();
    });
}

/// A producer that commits a record and detaches wakes a consumer asleep on the empty ring:
/// the record first, then `Disconnected`.
#[test]
fn disconnect_after_a_record_wakes_the_sleeper() {
    model("bytes: disconnect_after_a_record_wakes_the_sleeper", None, || {
        let (mut tx, mut rx) = channel(0, true);
        let producer = thread::spawn(move || {
            tx.send_spinning(&msg(1, 5));
            tx.detach();
        });
        assert_eq!(rx.recv_blocking(), Recv::Msg(msg(1, 5)));
        assert_eq!(rx.recv_blocking(), Recv::Disconnected);
        producer.join().unwrap();
    });
}

/// Negative check: a producer that never wakes the consumer leaves it asleep, and loom reports
/// the deadlock; shows `no_lost_wake_up_consumer_side` can fail.
#[test]
#[should_panic(expected = "deadlock")]
fn negative_skipped_wake_is_reported() {
    model("bytes: negative_skipped_wake_is_reported", Some(SLEEP_MODEL_MAX_PREEMPTIONS), || {
        let (mut tx, mut rx) = channel(0, false);
        let producer = thread::spawn(move || tx.send_spinning(&msg(0, 1)));
        assert_eq!(rx.recv_blocking(), Recv::Msg(msg(0, 1)));
        producer.join().unwrap();
    });
}
