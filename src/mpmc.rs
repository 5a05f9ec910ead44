//! Typed multi-producer/multi-consumer channels between processes.
//!
//! Any number of processes open the same segment and attach [`Sender`]s and [`Receiver`]s
//! (up to `max_endpoints` of each role at a time, set at creation); handles are cloneable
//! within a process, and a clone shares its original's registry entry. Each message is
//! received exactly once, by one receiver.
//!
//! A send or a receive is one CAS on the shared `tail` or `head` (Vyukov's bounded queue, as
//! `crossbeam_queue::ArrayQueue`); before it, the handle writes the position it claims into an
//! intent word of its own, which is how a claim left by a crashed process is told apart from
//! a slow one (see the delivery rules below). An entry has 15 intent words: up to 15 handles
//! of one entry work in parallel; further clones share one and take turns.
//!
//! The default wait strategy ([`WaitStrategy::Adaptive`]) spins briefly before it sleeps,
//! unless the registry entries attached outnumber the CPUs (online, within a cgroup CPU
//! quota): then a blocked call sleeps at once, as spinning would only hold a CPU a peer needs.
//! For throughput whatever the count, give every handle [`WaitStrategy::Sleep`] (see there
//! why).
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
//!   [`Channel::lost_messages`]. A live sender, however slow, is never skipped. A claim is
//!   looked into after it has been stuck for 1 ms, then once per 25 ms.
//! - A receiver that dies while copying a message out loses that message (counted likewise);
//!   senders free its slot once its death is confirmed.
//! - Receivers see [`Disconnected`](crate::RecvError::Disconnected) once every sender that
//!   ever attached is gone (dropped or dead) and the ring is drained; senders once every
//!   receiver is gone. Before the first sender attaches, receivers wait.
//! - Positions are 62-bit: they do not wrap in practice (a century at a billion messages/s).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytemuck::Pod;

use crate::endpoint::{my_endpoint_word, owner_is_dead};
use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError, first_try_recv, first_try_send, untimed_recv, untimed_send,
};
use crate::layout::{self, ElementType, endpoint};
use crate::options::{Common, common_option_setters};
use crate::ring::SharedSlots;
use crate::ring::mpmc::{
    Holder, IDLE, LANES, MAX_POSITION, MpmcControl, MpmcFlavor, Pop, Push, REGISTRY_OFFSET,
    Resolution, Ring,
};
use crate::segment::{Backing, Segment, SegmentParams};
use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// [`WaitStrategy::Adaptive`], the creator removes the name on drop, 1 s open timeout.
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

/// Word `word` of registry entry `index` of `role`: 0 is the owner word, 1..=LANES the
/// intent lanes.
fn registry_word(segment: &Segment, role: Role, index: u64, word: u64) -> &AtomicU64 {
    let max = segment.geometry().extra;
    assert!(index < max && word <= LANES, "registry index out of range");
    let entry = match role {
        Role::Sender => index,
        Role::Receiver => max + index,
    };
    // SAFETY: the registry holds 2 * max lines of LANES + 1 u64 words right after the fixed
    // control block, inside control_len(max) bytes that the validated geometry reserves before
    // the slots; entry < 2 * max and word <= LANES.
    unsafe {
        let control = std::ptr::from_ref(segment.control::<MpmcControl>()).cast::<u8>();
        let offset = REGISTRY_OFFSET + entry * layout::LINE + word * 8;
        &*control.add(offset as usize).cast::<AtomicU64>()
    }
}

/// The owner word of registry entry `index` of `role`.
fn registry_entry(segment: &Segment, role: Role, index: u64) -> &AtomicU64 {
    registry_word(segment, role, index, 0)
}

/// Intent lane `lane` (0-based) of registry entry `index` of `role`.
fn intent_lane(segment: &Segment, role: Role, index: u64, lane: u64) -> &AtomicU64 {
    registry_word(segment, role, index, 1 + lane)
}

/// Who holds a claim on `position` among the endpoints of `role`: every entry held by a
/// process (not vacant, not detached) whose lanes name the position is looked at; one live
/// owner is enough for [`Holder::Live`].
fn holder_of(segment: &Segment, role: Role, position: u64, liveness: &mut Liveness) -> Holder {
    let mut dead = false;
    for index in 0..segment.geometry().extra {
        // SYNC: Acquire pairs with the owner's Release claim of the entry (`attach`).
        let owner = registry_entry(segment, role, index).load(Ordering::Acquire);
        if owner == endpoint::VACANT || endpoint::is_detached(owner) {
            continue;
        }
        // SYNC: Acquire pairs with the Release intent stores in `Ring::push`/`pop`: an intent
        // newer than the claim comes with that claim's stamp store.
        let names = |lane| intent_lane(segment, role, index, lane).load(Ordering::Acquire);
        if !(0..LANES).any(|lane| names(lane) == position) {
            continue;
        }
        if liveness.entry_gone(segment, role, index as u16) {
            dead = true;
        } else {
            return Holder::Live;
        }
    }
    if dead { Holder::Dead } else { Holder::Nobody }
}

/// How long a claim must stay unfinished before a handle looks its holder up: a claimer is
/// between two stores, so a longer stall means it was descheduled, stopped, or killed.
const STUCK_BEFORE_LOOKUP: Duration = Duration::from_millis(1);

/// Rate limit of one handle's registry lookups for a stuck claim: the first sighting of a
/// stuck position starts a clock; lookups come after [`STUCK_BEFORE_LOOKUP`], then once per
/// [`PEER_CHECK_INTERVAL`].
#[derive(Debug, Default)]
struct StuckClaim {
    position: u64,
    next_lookup: Option<Instant>,
}

impl StuckClaim {
    /// Whether to look up the holder of `position` now (always when `force`).
    fn lookup_due(&mut self, position: u64, force: bool) -> bool {
        let now = Instant::now();
        let due =
            force || (self.position == position && self.next_lookup.is_some_and(|at| now >= at));
        if due {
            self.next_lookup = Some(now + PEER_CHECK_INTERVAL);
        } else if self.position != position || self.next_lookup.is_none() {
            self.next_lookup = Some(now + STUCK_BEFORE_LOOKUP);
        }
        self.position = position;
        due
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
                    if !self.resolve_claims_of(role, index, &ring, &slots) {
                        // A claim of the dead owner is named by a live lane too (one that lost
                        // the race for it and has not cleared its intent yet): try later.
                        continue;
                    }
                    // A side blocked on a claim we just resolved need not wait for its slice.
                    wait::notify_unconditionally(&control(segment).not_empty.0);
                    wait::notify_unconditionally(&control(segment).not_full.0);
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
                for lane in 0..LANES {
                    // SYNC: Release pairs with the Acquire lane loads of `holder_of`.
                    intent_lane(segment, role, index, lane).store(IDLE, Ordering::Release);
                }
                attached.fetch_add(1, Ordering::Relaxed);
                ever.store(1, Ordering::Relaxed);
                return Ok(Arc::new(Shared {
                    segment: Arc::clone(segment),
                    ring,
                    slots,
                    role,
                    index: index as u16,
                    me,
                    lanes_in_use: Mutex::new(0),
                }));
            }
        }
        Err(OpenError::TooManyEndpoints { max })
    }

    /// Resolves the claims the lanes of dead entry `index` name, as the endpoint that meets
    /// one stuck would. False if one of them stays held (named by a live lane as well).
    fn resolve_claims_of(&self, role: Role, index: u64, ring: &Ring, slots: &SharedSlots) -> bool {
        let segment = &self.segment;
        let mut liveness = Liveness::default();
        (0..LANES).all(|lane| {
            // SYNC: Acquire pairs with the dead owner's Release intent stores.
            let position = intent_lane(segment, role, index, lane).load(Ordering::Acquire);
            if position == IDLE {
                return true;
            }
            let holding = |p| holder_of(segment, role, p, &mut liveness);
            let outcome = match role {
                Role::Sender => {
                    ring.resolve_write::<T, _>(control(segment), slots, position, holding)
                }
                Role::Receiver => {
                    ring.resolve_read::<T, _>(control(segment), slots, position, holding)
                }
            };
            outcome != Resolution::Held
        })
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
    /// Which intent lanes of the entry this process's handles hold (bit per lane).
    lanes_in_use: Mutex<u16>,
}

impl Shared {
    /// Takes a free intent lane of the entry, if any.
    fn take_lane(self: &Arc<Self>) -> Option<Arc<Lane>> {
        let mut in_use = self.lanes_in_use.lock().unwrap_or_else(|e| e.into_inner());
        let lane = (0..LANES as u16).find(|&l| *in_use & (1 << l) == 0)?;
        *in_use |= 1 << lane;
        let word = intent_lane(&self.segment, self.role, u64::from(self.index), u64::from(lane));
        Some(Arc::new(Lane {
            entry: Arc::clone(self),
            lane,
            word: NonNull::from(word),
            shared: AtomicBool::new(false),
            turn: Mutex::new(()),
        }))
    }
}

/// An intent lane held by one handle or, once the entry's lanes ran out, shared by several
/// clones that take turns (a lane must name at most one unfinished claim).
struct Lane {
    entry: Arc<Shared>,
    lane: u16,
    /// The lane's intent word in the registry, found once (it is used by every operation).
    word: NonNull<AtomicU64>,
    /// Set, for good, when a second handle starts using the lane. Only the lane's sole user
    /// can clone into it, and not while it is inside an operation (`&mut self`), so a user
    /// that sees it clear has the lane to itself.
    shared: AtomicBool,
    turn: Mutex<()>,
}

impl Lane {
    fn intent(&self) -> &AtomicU64 {
        // SAFETY: `word` points at an intent word inside the mapping, which `entry` (through
        // its Arc<Segment>) keeps alive as long as `self`; only atomic operations reach it.
        unsafe { self.word.as_ref() }
    }
}

// SAFETY: the only raw pointer, `word`, points at an atomic in a mapping owned through `entry`
// (not tied to a thread); the rest is Send.
unsafe impl Send for Lane {}
// SAFETY: as above; `&Lane` gives only atomic access to `word`, and `turn` is a Mutex.
unsafe impl Sync for Lane {}

impl Drop for Lane {
    fn drop(&mut self) {
        let mut in_use = self.entry.lanes_in_use.lock().unwrap_or_else(|e| e.into_inner());
        *in_use &= !(1 << self.lane);
    }
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

/// What a sender and a receiver have in common: the shared entry, an intent lane, and
/// private state.
struct End {
    shared: Arc<Shared>,
    lane: Arc<Lane>,
    liveness: Liveness,
    stuck: StuckClaim,
    fences: Fences,
    wait: WaitStrategy,
    poisoned: bool,
}

impl End {
    fn new(shared: Arc<Shared>, wait: WaitStrategy) -> Self {
        let lane = shared.take_lane().expect("a newly attached entry has every lane free");
        End::with_lane(shared, lane, wait)
    }

    fn with_lane(shared: Arc<Shared>, lane: Arc<Lane>, wait: WaitStrategy) -> Self {
        End {
            shared,
            lane,
            liveness: Liveness::default(),
            stuck: StuckClaim::default(),
            fences: Fences::for_process(),
            wait,
            poisoned: false,
        }
    }

    /// A handle on the same entry: with a lane of its own while the entry has one free, else
    /// sharing ours.
    fn clone_end(&self) -> Self {
        let lane = self.shared.take_lane().unwrap_or_else(|| {
            self.lane.shared.store(true, Ordering::Relaxed);
            Arc::clone(&self.lane)
        });
        End::with_lane(Arc::clone(&self.shared), lane, self.wait)
    }

    /// Runs one claim of the ring (`op`) with this handle's intent lane, taking turns with the
    /// clones that share it, and a lookup of who holds a stuck claim among the endpoints of
    /// role `holders` (rate-limited by [`StuckClaim`] unless `force`).
    #[inline(always)]
    fn claiming<R>(
        &mut self,
        holders: Role,
        force: bool,
        op: impl FnOnce(&Shared, &AtomicU64, &mut dyn FnMut(u64) -> Holder) -> R,
    ) -> R {
        let shared = &*self.shared;
        let (liveness, stuck) = (&mut self.liveness, &mut self.stuck);
        let mut holding = |p| {
            if stuck.lookup_due(p, force) {
                holder_of(&shared.segment, holders, p, liveness)
            } else {
                Holder::Live
            }
        };
        let lane = &*self.lane;
        let _turn = lane.shared.load(Ordering::Relaxed).then(|| lane.turn.lock());
        op(shared, lane.intent(), &mut holding)
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

/// The sending end of an MPMC channel. Cloning shares the registry entry (see the module docs).
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
        let stats = &control(&end.shared.segment).stats.0;
        if stats.receivers_ever.load(Ordering::Relaxed) != 0
            && stats.receivers_attached.load(Ordering::Relaxed) == 0
        {
            return Err(TrySendError::Disconnected(value));
        }
        let outcome = end.claiming(Role::Receiver, false, |shared, intent, holding| {
            shared.ring.push(control(&shared.segment), &shared.slots, intent, &value, holding)
        });
        match outcome {
            Push::Done => {
                wait::notify(&control(&end.shared.segment).not_empty.0, end.fences, false);
                Ok(())
            }
            Push::Full => {
                if end.liveness.all_gone(&end.shared.segment, Role::Receiver, false) {
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
        match first_try_send(self.try_send(value))? {
            None => Ok(()),
            Some(value) => self.send_until(value, None).map_err(untimed_send),
        }
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

    fn endpoints(&self) -> u64 {
        attached_endpoints(&self.sender.end.shared.segment)
    }
}

/// The receiving end of an MPMC channel. Cloning shares the registry entry (see the module docs).
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
        match pop(end, false) {
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
                // Every sender published before it detached, and a dead one's claim is resolved
                // now: one more look is conclusive.
                match pop(end, true) {
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
        match first_try_recv(self.try_recv())? {
            Some(value) => Ok(value),
            None => self.recv_until(None).map_err(untimed_recv),
        }
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

/// One pop by this receiver, with dead senders' claims resolved (looked up at once when
/// `force`) and senders woken.
fn pop<T: Pod>(end: &mut End, force: bool) -> Pop<T> {
    let outcome = end.claiming(Role::Sender, force, |shared, intent, holding| {
        shared.ring.pop(control(&shared.segment), &shared.slots, intent, holding)
    });
    let ctl = control(&end.shared.segment);
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

    fn endpoints(&self) -> u64 {
        attached_endpoints(&self.receiver.end.shared.segment)
    }
}

/// Registry entries attached, both roles, as the counts in the segment say (a hint: a peer
/// may have written anything there, and it only steers how long a waiter spins).
fn attached_endpoints(segment: &Segment) -> u64 {
    let stats = &control(segment).stats.0;
    u64::from(stats.senders_attached.load(Ordering::Relaxed))
        + u64::from(stats.receivers_attached.load(Ordering::Relaxed))
}

#[cfg(all(test, not(shmchan_loom)))]
mod tests {
    use super::*;

    /// An owner word naming a process that is gone: a reaped child, with a start time that
    /// would not match even if its pid were reused.
    fn dead_owner() -> u64 {
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let mut child = child;
        child.wait().unwrap();
        endpoint::attached(pid, 1)
    }

    fn channel(max_endpoints: u64) -> Channel<u64> {
        let opts = Options::new().capacity(4).max_endpoints(max_endpoints);
        Channel::create(Backing::Anonymous, &opts).unwrap()
    }

    /// Makes sender entry `index` look like a process that claimed the position at `tail`
    /// and was killed before publishing it.
    fn forge_dead_sender_claim(chan: &Channel<u64>, index: u64) -> u64 {
        let segment = &chan.segment;
        let ctl = control(segment);
        let p = ctl.tail.0.load(Ordering::Relaxed);
        registry_entry(segment, Role::Sender, index).store(dead_owner(), Ordering::Relaxed);
        intent_lane(segment, Role::Sender, index, 3).store(p, Ordering::Relaxed);
        ctl.stats.0.senders_attached.fetch_add(1, Ordering::Relaxed);
        ctl.stats.0.senders_ever.store(1, Ordering::Relaxed);
        ctl.tail.0.store(p + 1, Ordering::Relaxed);
        p
    }

    #[test]
    fn adaptive_waits_count_attached_entries_not_clones() {
        let chan = channel(4);
        let tx = chan.sender().unwrap();
        let tx_clone = tx.clone();
        let rx = chan.receiver().unwrap();
        assert_eq!(attached_endpoints(&chan.segment), 2);
        let second_tx = chan.sender().unwrap();
        assert_eq!(attached_endpoints(&chan.segment), 3);
        drop(tx_clone);
        assert_eq!(attached_endpoints(&chan.segment), 3, "the entry stays while a handle holds it");
        drop((second_tx, rx));
        assert_eq!(attached_endpoints(&chan.segment), 1);
        drop(tx);
        assert_eq!(attached_endpoints(&chan.segment), 0);
    }

    #[test]
    fn a_dead_entry_is_taken_over_after_its_claim_is_resolved() {
        let chan = channel(1);
        let mut rx = chan.receiver().unwrap();
        forge_dead_sender_claim(&chan, 0);
        // The only sender entry is the dead one's: attaching resolves its claim first.
        let mut tx = chan.sender().unwrap();
        assert_eq!(chan.lost_messages(), 1);
        tx.send(5).unwrap();
        assert_eq!(rx.try_recv(), Ok(5));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(chan.lost_messages(), 1);
    }

    #[test]
    fn a_receiver_skips_a_dead_senders_claim_after_a_millisecond() {
        let chan = channel(2);
        let mut rx = chan.receiver().unwrap();
        forge_dead_sender_claim(&chan, 1);
        let mut tx = chan.sender().unwrap();
        tx.send(7).unwrap();
        // Stuck just now: not looked into yet.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
        assert_eq!(chan.lost_messages(), 1);
    }

    #[test]
    fn a_live_lane_naming_the_same_position_holds_the_claim() {
        let chan = channel(2);
        let mut rx = chan.receiver().unwrap();
        let p = forge_dead_sender_claim(&chan, 1);
        let mut tx = chan.sender().unwrap();
        // Our own (live) lane names p too, as after a lost CAS not yet cleared.
        let lane = intent_lane(&chan.segment, Role::Sender, 0, 0);
        assert_eq!(tx.end.shared.index, 0);
        assert_eq!(tx.end.lane.lane, 0);
        tx.send(7).unwrap();
        lane.store(p, Ordering::Relaxed);
        assert_eq!(rx.recv_timeout(Duration::from_millis(50)), Err(RecvTimeoutError::Timeout));
        assert_eq!(chan.lost_messages(), 0, "a live holder is never skipped");
        lane.store(IDLE, Ordering::Relaxed);
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(7));
        assert_eq!(chan.lost_messages(), 1);
    }

    #[test]
    fn the_lookup_waits_for_a_claim_to_stay_stuck() {
        let mut stuck = StuckClaim::default();
        assert!(!stuck.lookup_due(9, false), "first sighting");
        assert!(!stuck.lookup_due(9, false), "within the grace period");
        std::thread::sleep(STUCK_BEFORE_LOOKUP);
        assert!(stuck.lookup_due(9, false));
        assert!(!stuck.lookup_due(9, false), "then once per interval");
        assert!(!stuck.lookup_due(10, false), "a new position starts over");
        assert!(stuck.lookup_due(10, true), "unless forced");
    }
}
