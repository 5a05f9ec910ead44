//! Typed multi-producer/multi-consumer channels between processes.
//!
//! Any number of processes open the same segment and attach [`Sender`]s and [`Receiver`]s
//! (up to `max_endpoints` of each role at a time, set at creation); handles are cloneable
//! within a process. Each message is received exactly once, by one receiver.
//!
//! ```
//! use shmchan::mpmc::{Channel, Options};
//! use shmchan::Backing;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let chan = Channel::<u64>::create(Backing::Anonymous, &Options::new().capacity(64))?;
//! let (tx, mut rx) = (chan.sender()?, chan.receiver()?);
//! let mut tx2 = tx.clone();
//! std::thread::spawn(move || tx2.send(2)).join().unwrap()?;
//! drop(tx);
//! assert_eq!(rx.recv()?, 2);
//! assert_eq!(rx.recv(), Err(shmchan::RecvError::Disconnected));
//! # Ok(()) }
//! ```
//!
//! # Delivery
//! - Every message sent is received exactly once, except as below. Messages from one sender
//!   reach any one receiver in the order they were sent.
//! - A sender that dies after claiming a slot and before publishing it loses that one message:
//!   once its death is confirmed (pid + start time), receivers skip the slot and count it in
//!   [`Channel::lost_messages`]. A live sender, however slow, is never skipped.
//! - A receiver that dies while copying a message out loses that message (counted likewise);
//!   senders free its slot once its death is confirmed.
//! - Receivers see [`Disconnected`](crate::RecvError::Disconnected) once every sender that
//!   ever attached is gone (dropped or dead) and the ring is drained; senders once every
//!   receiver is gone. Before the first sender attaches, receivers wait.
//! - Positions are 63-bit: they do not wrap in practice (centuries at a billion messages/s).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::endpoint::{my_endpoint_word, owner_is_dead};
use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::layout::{self, ElementType, endpoint};
use crate::options::{Common, common_option_setters};
use crate::ring::SharedSlots;
use crate::ring::mpmc::{MAX_POSITION, MpmcControl, MpmcFlavor, Pop, Push, REGISTRY_OFFSET, Ring};
use crate::segment::{Backing, Segment, SegmentParams};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::fence::Fences;
use crate::sync::wait::{self, Attempt, PEER_CHECK_INTERVAL, WaitStrategy};

/// Options for creating or opening an MPMC channel.
#[derive(Debug, Clone)]
pub struct Options {
    capacity: usize,
    max_endpoints: u64,
    fingerprint: Option<u64>,
    common: Common,
}

impl Default for Options {
    fn default() -> Self {
        Options { capacity: 1024, max_endpoints: 64, fingerprint: None, common: Common::default() }
    }
}

impl Options {
    /// Defaults: capacity 1024, 64 endpoints of each role, mode 0600, default fingerprint,
    /// spin 50 µs then sleep, the creator removes the name on drop, 1 s open timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of slots (a power of two, at least 2). Used at creation only.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// How many senders, and how many receivers, may be attached at once (1 to 16384).
    /// Used at creation only.
    pub fn max_endpoints(mut self, max: u64) -> Self {
        self.max_endpoints = max;
        self
    }

    /// The type fingerprint every process must agree on (default: from `T`'s name and layout).
    pub fn fingerprint(mut self, fingerprint: u64) -> Self {
        self.fingerprint = Some(fingerprint);
        self
    }

    common_option_setters!();

    fn params<T>(&self) -> Result<SegmentParams, OpenError> {
        let start = self.common.start_position;
        if start >= MAX_POSITION / 2 {
            return Err(OpenError::InvalidOption {
                reason: format!("start position {start} is too large"),
            });
        }
        let element = ElementType {
            size: size_of::<T>() as u64,
            align: align_of::<T>() as u64,
            fingerprint: self.fingerprint.unwrap_or_else(layout::default_fingerprint::<T>),
        };
        Ok(self.common.segment_params(element, self.capacity as u64, self.max_endpoints))
    }
}

/// A mapped MPMC segment of `T`. Attach handles with [`sender`](Self::sender) and
/// [`receiver`](Self::receiver).
#[derive(Debug)]
pub struct Channel<T> {
    segment: Arc<Segment>,
    wait: WaitStrategy,
    _type: PhantomData<fn(T) -> T>,
}

/// The MPMC control block of a segment created or validated as [`MpmcFlavor`].
#[inline(always)]
fn control(segment: &Segment) -> &MpmcControl {
    // SAFETY: every Segment in this module was created or validated as MpmcFlavor, whose
    // control block starts with MpmcControl (atomics only).
    unsafe { segment.control::<MpmcControl>() }
}

/// Role of an endpoint in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Sender,
    Receiver,
}

/// The owner word of registry entry `index` of `role`.
fn registry_entry(segment: &Segment, role: Role, index: u64) -> &AtomicU64 {
    let max = segment.geometry().extra;
    assert!(index < max, "registry index out of range");
    let slot = match role {
        Role::Sender => index,
        Role::Receiver => max + index,
    };
    // SAFETY: the registry holds 2 * max u64 words right after the fixed control block, inside
    // control_len(max) bytes that the validated geometry reserves before the slots; slot < 2*max.
    unsafe {
        let control = std::ptr::from_ref(segment.control::<MpmcControl>()).cast::<u8>();
        &*control.add(REGISTRY_OFFSET as usize + slot as usize * 8).cast::<AtomicU64>()
    }
}

impl<T: Pod> Channel<T> {
    /// Creates a segment of `options.capacity` slots of `T` in `backing`.
    ///
    /// # Errors
    /// As [`spsc::Channel::create`](crate::spsc::Channel::create); a capacity below 2 or
    /// `max_endpoints` outside 1..=16384 is [`OpenError::InvalidOption`].
    pub fn create(backing: Backing, options: &Options) -> Result<Self, OpenError> {
        let segment = Segment::create::<MpmcFlavor>(backing, &options.params::<T>()?)?;
        Ok(Channel { segment: Arc::new(segment), wait: options.common.wait, _type: PhantomData })
    }

    /// Opens an existing MPMC segment, validating its header against `T`.
    ///
    /// # Errors
    /// As [`spsc::Channel::open`](crate::spsc::Channel::open).
    pub fn open(backing: Backing, options: &Options) -> Result<Self, OpenError> {
        let segment = Segment::open::<MpmcFlavor>(backing, &options.params::<T>()?)?;
        Ok(Channel { segment: Arc::new(segment), wait: options.common.wait, _type: PhantomData })
    }

    /// Attaches a sender (a registry entry of its own; clone it to share that entry).
    ///
    /// # Errors
    /// [`OpenError::TooManyEndpoints`] when every sender entry is held by a live process.
    pub fn sender(&self) -> Result<Sender<T>, OpenError> {
        let shared = self.attach(Role::Sender)?;
        Ok(Sender { end: End::new(shared, self.wait), _type: PhantomData })
    }

    /// Attaches a receiver (a registry entry of its own; clone it to share that entry).
    ///
    /// # Errors
    /// [`OpenError::TooManyEndpoints`] when every receiver entry is held by a live process.
    pub fn receiver(&self) -> Result<Receiver<T>, OpenError> {
        let shared = self.attach(Role::Receiver)?;
        Ok(Receiver { end: End::new(shared, self.wait), _type: PhantomData })
    }

    /// Claims a registry entry: a vacant or cleanly detached one first, else one whose owner
    /// died, after resolving the claims that owner left in the ring.
    fn attach(&self, role: Role) -> Result<Arc<Shared>, OpenError> {
        let segment = &self.segment;
        let max = segment.geometry().extra;
        let me = my_endpoint_word()?;
        let ring = Ring::new(segment.geometry().capacity);
        let slots = self.slots();
        for dead_allowed in [false, true] {
            for index in 0..max {
                let entry = registry_entry(segment, role, index);
                // SYNC: Acquire pairs with the previous owner's Release detach.
                let current = entry.load(Ordering::Acquire);
                let free = current == endpoint::VACANT || endpoint::is_detached(current);
                let dead = !free && dead_allowed && owner_is_dead(current);
                if !free && !dead {
                    continue;
                }
                if dead {
                    ring.release_claims_of::<T, _>(
                        control(segment),
                        &slots,
                        index as u16,
                        role == Role::Receiver,
                    );
                }
                // SYNC: AcqRel: Acquire as above; Release orders our claim for later owners.
                if entry.compare_exchange(current, me, Ordering::AcqRel, Ordering::Relaxed).is_err()
                {
                    continue;
                }
                let stats = &control(segment).stats.0;
                let (ever, attached) = match role {
                    Role::Sender => (&stats.senders_ever, &stats.senders_attached),
                    Role::Receiver => (&stats.receivers_ever, &stats.receivers_attached),
                };
                attached.fetch_add(1, Ordering::Relaxed);
                ever.store(1, Ordering::Relaxed);
                return Ok(Arc::new(Shared {
                    segment: Arc::clone(segment),
                    ring,
                    slots,
                    role,
                    index: index as u16,
                    me,
                }));
            }
        }
        Err(OpenError::TooManyEndpoints { max })
    }

    fn slots(&self) -> SharedSlots {
        // SAFETY: the geometry was validated against the mapping, which every handle keeps
        // alive through its Arc<Segment> for as long as it uses these slots.
        unsafe { SharedSlots::new(self.segment.slots_base(), self.segment.geometry()) }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.segment.geometry().capacity as usize
    }

    /// How many senders, and how many receivers, may be attached at once.
    pub fn max_endpoints(&self) -> u64 {
        self.segment.geometry().extra
    }

    /// Messages in the ring now, as far as the shared positions tell (a snapshot).
    pub fn len(&self) -> usize {
        let ctl = control(&self.segment);
        let head = ctl.head.0.load(Ordering::Relaxed);
        let tail = ctl.tail.0.load(Ordering::Relaxed);
        tail.saturating_sub(head).min(self.segment.geometry().capacity) as usize
    }

    /// Whether the ring looked empty just now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Messages lost so far because a sender or a receiver died holding them.
    pub fn lost_messages(&self) -> u64 {
        let stats = &control(&self.segment).stats.0;
        stats
            .lost_writes
            .load(Ordering::Relaxed)
            .saturating_add(stats.lost_reads.load(Ordering::Relaxed))
    }

    /// The segment's fd (POSIX, file and memfd backings).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.segment.fd()
    }

    /// The System V id, for SysV backings.
    pub fn sysv_id(&self) -> Option<i32> {
        self.segment.sysv_id()
    }

    /// Writes the segment back to its file (`msync`); a no-op for memory-only backings.
    ///
    /// # Errors
    /// The error of `msync(2)`.
    pub fn flush(&self) -> std::io::Result<()> {
        self.segment.flush()
    }
}

/// A registry entry held by this process, shared by a handle and its clones; detached when the
/// last of them goes.
struct Shared {
    segment: Arc<Segment>,
    ring: Ring,
    slots: SharedSlots,
    role: Role,
    index: u16,
    me: u64,
}

// SAFETY: Shared reaches shared memory only through the Arc'd mapping and atomics; its raw
// slot pointer is tied to that mapping, not to a thread.
unsafe impl Send for Shared {}
// SAFETY: as above; every method takes `&self` and touches only atomics or copies payloads of
// slots its own claims own.
unsafe impl Sync for Shared {}

impl Drop for Shared {
    fn drop(&mut self) {
        let entry = registry_entry(&self.segment, self.role, u64::from(self.index));
        crate::endpoint::detach(entry, self.me);
        let ctl = control(&self.segment);
        let attached = match self.role {
            Role::Sender => &ctl.stats.0.senders_attached,
            Role::Receiver => &ctl.stats.0.receivers_attached,
        };
        // SYNC: Release pairs with the Acquire load in `Liveness::all_gone`: a peer that sees
        // the count drop to zero also sees every message we published before leaving.
        attached.fetch_sub(1, Ordering::Release);
        // The other side may be waiting to learn that we are gone.
        match self.role {
            Role::Sender => wait::notify_unconditionally(&ctl.not_empty.0),
            Role::Receiver => wait::notify_unconditionally(&ctl.not_full.0),
        }
    }
}

/// Liveness verdicts about registry entries, cached: a death is final, a sign of life is
/// trusted for [`PEER_CHECK_INTERVAL`].
#[derive(Debug, Default)]
struct Liveness {
    verdicts: HashMap<(bool, u16), (u64, Instant, bool)>,
    polls: u32,
    /// When the last full scan ran, and whether it found every endpoint gone; reused until
    /// the next scan is due.
    last_scan: Option<(Instant, bool)>,
}

impl Liveness {
    /// Whether the owner of entry `index` of `role` is gone (vacant, detached, or dead).
    fn entry_gone(&mut self, segment: &Segment, role: Role, index: u16) -> bool {
        if u64::from(index) >= segment.geometry().extra {
            return true;
        }
        let word = registry_entry(segment, role, u64::from(index)).load(Ordering::Acquire);
        if word == endpoint::VACANT || endpoint::is_detached(word) {
            return true;
        }
        let key = (role == Role::Receiver, index);
        let now = Instant::now();
        if let Some(&(seen, at, dead)) = self.verdicts.get(&key)
            && seen == word
            && (dead || now.duration_since(at) < PEER_CHECK_INTERVAL)
        {
            return dead;
        }
        let dead = owner_is_dead(word);
        self.verdicts.insert(key, (word, now, dead));
        dead
    }

    /// Whether every endpoint of `role` is gone. Cheap when the attach count says so; a scan
    /// for dead owners runs at most once per interval unless `force`.
    fn all_gone(&mut self, segment: &Segment, role: Role, force: bool) -> bool {
        let stats = &control(segment).stats.0;
        let (ever, attached) = match role {
            Role::Sender => (&stats.senders_ever, &stats.senders_attached),
            Role::Receiver => (&stats.receivers_ever, &stats.receivers_attached),
        };
        if ever.load(Ordering::Relaxed) == 0 {
            return false;
        }
        // SYNC: Acquire pairs with the Release decrement in `Shared::drop`.
        if attached.load(Ordering::Acquire) == 0 {
            return true;
        }
        if !force && let Some((at, verdict)) = self.last_scan {
            // Keep failed polls cheap: read the clock once per 256 of them.
            self.polls = self.polls.wrapping_add(1);
            if self.polls % 256 != 0 || Instant::now().duration_since(at) < PEER_CHECK_INTERVAL {
                return verdict;
            }
        }
        let verdict =
            (0..segment.geometry().extra).all(|i| self.entry_gone(segment, role, i as u16));
        self.last_scan = Some((Instant::now(), verdict));
        verdict
    }
}

/// What a sender and a receiver have in common: the shared entry and private state.
struct End {
    shared: Arc<Shared>,
    liveness: Liveness,
    fences: Fences,
    wait: WaitStrategy,
    poisoned: bool,
    /// The last operation succeeded, so the next one tries the one-CAS claim first (see
    /// `Ring::push_fast`); after a Full or Empty, the next one reads before it claims.
    streaming: bool,
}

impl End {
    fn new(shared: Arc<Shared>, wait: WaitStrategy) -> Self {
        End {
            shared,
            liveness: Liveness::default(),
            fences: Fences::for_process(),
            wait,
            poisoned: false,
            streaming: true,
        }
    }

    fn clone_end(&self) -> Self {
        End::new(Arc::clone(&self.shared), self.wait)
    }

    #[cold]
    fn poison(&mut self) {
        self.poisoned = true;
        let ctl = control(&self.shared.segment);
        ctl.stats.0.poisoned.store(1, Ordering::Relaxed);
        wait::notify_unconditionally(&ctl.not_empty.0);
        wait::notify_unconditionally(&ctl.not_full.0);
    }
}

/// The sending end of an MPMC channel. Cloning shares the registry entry.
pub struct Sender<T> {
    end: End,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender { end: self.end.clone_end(), _type: PhantomData }
    }
}

impl<T> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("index", &self.end.shared.index).finish_non_exhaustive()
    }
}

impl<T: Pod> Sender<T> {
    /// Sends `value` if there is room now; never blocks.
    ///
    /// # Errors
    /// [`TrySendError::Full`], [`TrySendError::Disconnected`] once every receiver is gone,
    /// [`TrySendError::Corrupted`] once the ring failed a check.
    pub fn try_send(&mut self, value: T) -> Result<(), TrySendError<T>> {
        let end = &mut self.end;
        if end.poisoned {
            return Err(TrySendError::Corrupted(value));
        }
        let segment = &end.shared.segment;
        let ctl = control(segment);
        let stats = &ctl.stats.0;
        if stats.receivers_ever.load(Ordering::Relaxed) != 0
            && stats.receivers_attached.load(Ordering::Relaxed) == 0
        {
            return Err(TrySendError::Disconnected(value));
        }
        let liveness = &mut end.liveness;
        let dead_receiver = |r| liveness.entry_gone(segment, Role::Receiver, r);
        let (ring, slots, me) = (&end.shared.ring, &end.shared.slots, end.shared.index);
        let outcome = if end.streaming {
            ring.push_fast(ctl, slots, me, &value, dead_receiver)
        } else {
            ring.push(ctl, slots, me, &value, dead_receiver)
        };
        end.streaming = outcome == Push::Done;
        match outcome {
            Push::Done => {
                wait::notify(&ctl.not_empty.0, end.fences, false);
                Ok(())
            }
            Push::Full => {
                if end.liveness.all_gone(segment, Role::Receiver, false) {
                    Err(TrySendError::Disconnected(value))
                } else {
                    Err(TrySendError::Full(value))
                }
            }
            Push::Corrupt => {
                end.poison();
                Err(TrySendError::Corrupted(value))
            }
        }
    }

    /// Sends `value`, waiting while the ring is full.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] once every receiver is gone; [`SendError::Corrupted`].
    pub fn send(&mut self, value: T) -> Result<(), SendError<T>> {
        match self.try_send(value) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(v)) => return Err(SendError::Disconnected(v)),
            Err(TrySendError::Corrupted(v)) => return Err(SendError::Corrupted(v)),
        }
        self.send_until(value, None).map_err(|e| match e {
            SendTimeoutError::Corrupted(v) => SendError::Corrupted(v),
            SendTimeoutError::Timeout(v) | SendTimeoutError::Disconnected(v) => {
                SendError::Disconnected(v)
            }
        })
    }

    /// Sends `value`, waiting at most `timeout` while the ring is full.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`], and as [`send`](Self::send).
    pub fn send_timeout(&mut self, value: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_until(value, Some(Instant::now() + timeout))
    }

    fn send_until(
        &mut self,
        value: T,
        deadline: Option<Instant>,
    ) -> Result<(), SendTimeoutError<T>> {
        let shared = Arc::clone(&self.end.shared);
        let (wait, fences) = (self.end.wait, self.end.fences);
        let mut op = SendOne { sender: self, value };
        wait::block(&mut op, &control(&shared.segment).not_full.0, wait, fences, deadline)
            .unwrap_or(Err(SendTimeoutError::Timeout(value)))
    }

    /// Sends as many of `values` as fit now, in order; returns how many.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send) when none could be sent (and `values` is not empty).
    pub fn try_send_slice(&mut self, values: &[T]) -> Result<usize, TrySendError<()>> {
        for (n, &value) in values.iter().enumerate() {
            match self.try_send(value) {
                Ok(()) => {}
                Err(_) if n > 0 => return Ok(n),
                Err(e) => return Err(unit(e)),
            }
        }
        Ok(values.len())
    }

    /// Sends all of `values` in order, waiting for room as needed.
    ///
    /// # Errors
    /// As [`send`](Self::send); the error carries how many were sent before it.
    pub fn send_slice(&mut self, values: &[T]) -> Result<(), SendError<usize>> {
        for (n, &value) in values.iter().enumerate() {
            match self.send(value) {
                Ok(()) => {}
                Err(SendError::Disconnected(_)) => return Err(SendError::Disconnected(n)),
                Err(SendError::Corrupted(_)) => return Err(SendError::Corrupted(n)),
            }
        }
        Ok(())
    }

    /// Whether every receiver is known to be gone.
    pub fn is_disconnected(&mut self) -> bool {
        self.end.liveness.all_gone(&self.end.shared.segment, Role::Receiver, true)
    }

    /// Sets how blocking calls wait from now on (this handle only).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.end.wait = wait;
    }
}

fn unit<T>(e: TrySendError<T>) -> TrySendError<()> {
    match e {
        TrySendError::Full(_) => TrySendError::Full(()),
        TrySendError::Disconnected(_) => TrySendError::Disconnected(()),
        TrySendError::Corrupted(_) => TrySendError::Corrupted(()),
    }
}

struct SendOne<'a, T> {
    sender: &'a mut Sender<T>,
    value: T,
}

impl<T: Pod> Attempt for SendOne<'_, T> {
    type Output = Result<(), SendTimeoutError<T>>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.sender.try_send(self.value) {
            Ok(()) => Some(Ok(())),
            Err(TrySendError::Full(_)) => None,
            Err(TrySendError::Disconnected(v)) => Some(Err(SendTimeoutError::Disconnected(v))),
            Err(TrySendError::Corrupted(v)) => Some(Err(SendTimeoutError::Corrupted(v))),
        }
    }

    fn check_peer(&mut self) {
        let end = &mut self.sender.end;
        end.liveness.all_gone(&end.shared.segment, Role::Receiver, true);
    }
}

/// The receiving end of an MPMC channel. Cloning shares the registry entry.
pub struct Receiver<T> {
    end: End,
    _type: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver { end: self.end.clone_end(), _type: PhantomData }
    }
}

impl<T> std::fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("index", &self.end.shared.index).finish_non_exhaustive()
    }
}

impl<T: Pod> Receiver<T> {
    /// Receives a message if one is ready; never blocks.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`], [`TryRecvError::Disconnected`] once every sender is gone and
    /// the ring is drained, [`TryRecvError::Corrupted`].
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let end = &mut self.end;
        if end.poisoned {
            return Err(TryRecvError::Corrupted);
        }
        match pop(end) {
            Pop::Item(value) => Ok(value),
            Pop::Corrupt => Err(TryRecvError::Corrupted),
            Pop::Empty => {
                let segment = &end.shared.segment;
                if control(segment).stats.0.poisoned.load(Ordering::Relaxed) != 0 {
                    end.poison();
                    return Err(TryRecvError::Corrupted);
                }
                if !end.liveness.all_gone(segment, Role::Sender, false) {
                    return Err(TryRecvError::Empty);
                }
                // Every sender published before it detached: one more look is conclusive.
                match pop(end) {
                    Pop::Item(value) => Ok(value),
                    Pop::Empty => Err(TryRecvError::Disconnected),
                    Pop::Corrupt => Err(TryRecvError::Corrupted),
                }
            }
        }
    }

    /// Receives a message, waiting until one is ready.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] once every sender is gone and the ring is drained;
    /// [`RecvError::Corrupted`].
    pub fn recv(&mut self) -> Result<T, RecvError> {
        match self.try_recv() {
            Ok(value) => return Ok(value),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => return Err(RecvError::Disconnected),
            Err(TryRecvError::Corrupted) => return Err(RecvError::Corrupted),
        }
        self.recv_until(None).map_err(|e| match e {
            RecvTimeoutError::Corrupted => RecvError::Corrupted,
            _ => RecvError::Disconnected,
        })
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`], and as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    #[inline(never)]
    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        let shared = Arc::clone(&self.end.shared);
        let (wait, fences) = (self.end.wait, self.end.fences);
        let mut op = RecvOne { receiver: self };
        wait::block(&mut op, &control(&shared.segment).not_empty.0, wait, fences, deadline)
            .unwrap_or(Err(RecvTimeoutError::Timeout))
    }

    /// Receives up to `buf.len()` ready messages; returns how many.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv) when none was ready (and `buf` is not empty).
    pub fn try_recv_into(&mut self, buf: &mut [T]) -> Result<usize, TryRecvError> {
        let len = buf.len();
        for (n, slot) in buf.iter_mut().enumerate() {
            match self.try_recv() {
                Ok(value) => *slot = value,
                Err(_) if n > 0 => return Ok(n),
                Err(e) => return Err(e),
            }
        }
        Ok(len)
    }

    /// Receives at least one message into `buf` (waiting for it), and as many more as are
    /// ready.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, buf: &mut [T]) -> Result<usize, RecvError> {
        let Some(first) = buf.first_mut() else { return Ok(0) };
        *first = self.recv()?;
        let more = self.try_recv_into(&mut buf[1..]).unwrap_or(0);
        Ok(1 + more)
    }

    /// Whether every sender is known to be gone (messages may still wait in the ring).
    pub fn is_disconnected(&mut self) -> bool {
        self.end.liveness.all_gone(&self.end.shared.segment, Role::Sender, true)
    }

    /// Sets how blocking calls wait from now on (this handle only).
    pub fn set_wait_strategy(&mut self, wait: WaitStrategy) {
        self.end.wait = wait;
    }
}

/// One pop by this receiver, with dead senders' claims resolved and senders woken.
fn pop<T: Pod>(end: &mut End) -> Pop<T> {
    let segment = &end.shared.segment;
    let ctl = control(segment);
    let liveness = &mut end.liveness;
    let dead_sender = |s| liveness.entry_gone(segment, Role::Sender, s);
    let (ring, slots, me) = (&end.shared.ring, &end.shared.slots, end.shared.index);
    let outcome = if end.streaming {
        ring.pop_fast(ctl, slots, me, dead_sender)
    } else {
        ring.pop(ctl, slots, me, dead_sender)
    };
    end.streaming = matches!(outcome, Pop::Item(_));
    match outcome {
        Pop::Item(_) => wait::notify(&ctl.not_full.0, end.fences, false),
        Pop::Corrupt => end.poison(),
        Pop::Empty => {}
    }
    outcome
}

struct RecvOne<'a, T> {
    receiver: &'a mut Receiver<T>,
}

impl<T: Pod> Attempt for RecvOne<'_, T> {
    type Output = Result<T, RecvTimeoutError>;

    fn attempt(&mut self) -> Option<Self::Output> {
        match self.receiver.try_recv() {
            Ok(value) => Some(Ok(value)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(RecvTimeoutError::Disconnected)),
            Err(TryRecvError::Corrupted) => Some(Err(RecvTimeoutError::Corrupted)),
        }
    }

    fn check_peer(&mut self) {
        let end = &mut self.receiver.end;
        end.liveness.all_gone(&end.shared.segment, Role::Sender, true);
    }
}
