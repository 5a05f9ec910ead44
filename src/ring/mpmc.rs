//! The typed multi-producer/multi-consumer ring.
//!
//! # Layout
//! ```text
//! offset (from the control block)   contents
//!      0  line: lost_writes u64, lost_reads u64, poisoned u32, senders_ever u32,
//!               receivers_ever u32, senders_attached u32, receivers_attached u32
//!    128  line: tail u64 (next position a sender claims)
//!    256  line: head u64 (next position a receiver claims)
//!    384  line: not_empty: Waiters (receivers sleep here)
//!    512  line: not_full:  Waiters (senders sleep here)
//!    640  registry: senders[max_endpoints] u64 owner words, then receivers[max_endpoints],
//!               padded to a line (max_endpoints is the header's `extra`)
//!  slots  [state u64][payload T], as in the SPSC ring
//! ```
//!
//! # Slot states
//! Vyukov's bounded queue keeps a sequence word per slot; this one also records *who* holds a
//! claimed slot, so that a claim left by a dead process can be resolved. For the slot of
//! position `p` (slot index `p & mask`, capacity at least 2):
//!
//! | state word | meaning |
//! |---|---|
//! | `p` | free: a sender may claim `p` |
//! | `CLAIM \| index << 48 \| p mod 2^48` | claimed for writing by sender `index` |
//! | `p + 1` | full: the message for `p` is published |
//! | `CLAIM \| READING \| index << 48 \| p mod 2^48` | claimed for reading by receiver `index` |
//! | `p + capacity` | free again, for position `p + capacity` |
//!
//! A sender claims with a CAS on the slot (free → writing), then moves `tail` on (any sender
//! that sees the claim helps, so a sender dying between the two cannot stall `tail`), copies
//! the payload, and stores full (Release). Receivers do the same with `head` (full → reading →
//! free for the next lap). Positions are 63-bit counters (they never wrap: 2^63 messages take
//! three centuries at a billion per second); `tail`/`head` only move past a position whose
//! slot shows it claimed.
//!
//! While messages stream, a sender claims with one CAS that expects the slot free for this lap
//! (`push_fast`), instead of reading the state first and then claiming: one read-for-ownership
//! of the slot's line instead of a shared read and an upgrade (receivers likewise with
//! `pop_fast`). After a Full (Empty) the handle goes back to reading first, so a waiting side
//! never takes the line from the side it waits for.
//!
//! # A dead claimer
//! A receiver stuck at a slot claimed for writing by a sender whose process is confirmed dead
//! (pid + start time, through the endpoint registry) frees the slot for the next lap: that one
//! message is lost and counted in `lost_writes`. A sender stuck at a slot claimed for reading
//! by a dead receiver frees it the same way (`lost_reads`). A live but slow claimer is never
//! skipped: liveness is the only trigger. Before a process takes over a dead endpoint's
//! registry index it resolves the index's leftover claims, so a claim never outlives the
//! process it names.
//!
//! # Untrusted peers
//! Every state word is decoded against the slot index and the caller's position; anything a
//! correct peer cannot produce is corruption. Loops retry only when another claimer moved a
//! position, and give up after [`MAX_RETRIES`] (a peer rewriting positions cannot keep us
//! here).

use crate::layout::{self, Flavor, Geometry, LINE, Line, Waiters};
use crate::ring::SlotMemory;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Most endpoints of each role a segment can register (the index must fit in 14 bits).
pub(crate) const MAX_ENDPOINTS: u64 = 1 << 14;
/// How often a push or pop retries after losing a race before it reports Full/Empty.
pub(crate) const MAX_RETRIES: u32 = 1 << 12;

const CLAIM: u64 = 1 << 63;
const READING: u64 = 1 << 62;
const INDEX_SHIFT: u32 = 48;
const INDEX_MASK: u64 = MAX_ENDPOINTS - 1;
const POS_MASK: u64 = (1 << 48) - 1;
/// Positions stay below this; a larger one read from the segment is corruption.
pub(crate) const MAX_POSITION: u64 = 1 << 62;

/// Counters and flags, read rarely.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Stats {
    /// Messages lost because their sender died after claiming a slot.
    pub lost_writes: AtomicU64,
    /// Messages lost because their receiver died while reading them.
    pub lost_reads: AtomicU64,
    /// Non-zero once an endpoint detected an inconsistency (informational).
    pub poisoned: AtomicU32,
    /// Non-zero once any sender attached (before that, receivers wait rather than disconnect).
    pub senders_ever: AtomicU32,
    /// Non-zero once any receiver attached.
    pub receivers_ever: AtomicU32,
    /// Senders attached and not cleanly detached (a hint: crashes do not decrement it).
    pub senders_attached: AtomicU32,
    /// Receivers attached and not cleanly detached (a hint, likewise).
    pub receivers_attached: AtomicU32,
}

/// The fixed part of the MPMC control block; the endpoint registry follows it.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct MpmcControl {
    pub stats: Line<Stats>,
    pub tail: Line<AtomicU64>,
    pub head: Line<AtomicU64>,
    /// Receivers sleep here while the ring is empty.
    pub not_empty: Line<Waiters>,
    /// Senders sleep here while the ring is full.
    pub not_full: Line<Waiters>,
}

/// Offset of the registry from the start of the control block.
pub(crate) const REGISTRY_OFFSET: u64 = 5 * LINE;

#[cfg(not(shmchan_loom))]
const _: () = assert!(core::mem::size_of::<MpmcControl>() as u64 == REGISTRY_OFFSET);

impl MpmcControl {
    pub(crate) fn new(start: u64) -> Self {
        MpmcControl {
            stats: Line(Stats {
                lost_writes: AtomicU64::new(0),
                lost_reads: AtomicU64::new(0),
                poisoned: AtomicU32::new(0),
                senders_ever: AtomicU32::new(0),
                receivers_ever: AtomicU32::new(0),
                senders_attached: AtomicU32::new(0),
                receivers_attached: AtomicU32::new(0),
            }),
            tail: Line(AtomicU64::new(start)),
            head: Line(AtomicU64::new(start)),
            not_empty: Line(Waiters::new()),
            not_full: Line(Waiters::new()),
        }
    }
}

/// Bytes of control block (fixed part and registry) for `max_endpoints` of each role.
pub(crate) fn control_len(max_endpoints: u64) -> u64 {
    let registry = 2 * max_endpoints * 8;
    REGISTRY_OFFSET + registry.div_ceil(LINE) * LINE
}

/// The typed MPMC ring in a segment.
pub(crate) struct MpmcFlavor;

impl Flavor for MpmcFlavor {
    const ID: u32 = layout::FLAVOR_MPMC;

    fn geometry(
        capacity: u64,
        elem_size: u64,
        elem_align: u64,
        max_endpoints: u64,
    ) -> Result<Geometry, String> {
        if !(1..=MAX_ENDPOINTS).contains(&max_endpoints) {
            return Err(format!("max endpoints {max_endpoints} is not in 1..={MAX_ENDPOINTS}"));
        }
        if capacity < 2 {
            return Err(format!("an MPMC ring needs a capacity of at least 2, not {capacity}"));
        }
        Geometry::with_control(
            capacity,
            elem_size,
            elem_align,
            control_len(max_endpoints),
            max_endpoints,
        )
    }

    unsafe fn initialize(base: *mut u8, g: &Geometry, start: u64) {
        // SAFETY: the caller gives us the whole segment, unused by anyone else; the control
        // block lies at CONTROL_OFFSET (128-aligned) and the registry after it, within
        // control_len(extra) bytes before the slots (geometry).
        unsafe {
            let control = base.add(layout::CONTROL_OFFSET as usize);
            core::ptr::write(control.cast::<MpmcControl>(), MpmcControl::new(start));
            let registry = control.add(REGISTRY_OFFSET as usize).cast::<u64>();
            core::ptr::write_bytes(registry, 0, (2 * g.extra) as usize);
        }
        for k in 0..g.capacity {
            let position = start + k;
            let index = position & g.mask();
            // SAFETY: index < capacity, so the state word lies inside the slot array, 8-aligned;
            // written before anyone else can see the segment.
            let state: &AtomicU64 =
                unsafe { &*base.add((g.slots_offset + index * g.slot_stride) as usize).cast() };
            state.store(position, Ordering::Relaxed);
        }
    }
}

/// A decoded slot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free(u64),
    Full(u64),
    Writing { index: u16, pos48: u64 },
    Reading { index: u16, pos48: u64 },
    Invalid,
}

fn writing(index: u16, position: u64) -> u64 {
    CLAIM | (u64::from(index) << INDEX_SHIFT) | (position & POS_MASK)
}

fn reading(index: u16, position: u64) -> u64 {
    writing(index, position) | READING
}

fn decode(word: u64, slot: u64, mask: u64) -> State {
    if word & CLAIM != 0 {
        let pos48 = word & POS_MASK;
        if pos48 & mask != slot & mask & POS_MASK {
            return State::Invalid;
        }
        let index = ((word >> INDEX_SHIFT) & INDEX_MASK) as u16;
        if word & READING != 0 {
            State::Reading { index, pos48 }
        } else {
            State::Writing { index, pos48 }
        }
    } else if word & mask == slot {
        State::Free(word)
    } else if word.wrapping_sub(1) & mask == slot {
        State::Full(word.wrapping_sub(1))
    } else {
        State::Invalid
    }
}

/// Where a claimed position stands relative to `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lap {
    Same,
    Previous,
    Later,
    Invalid,
}

fn lap_of_claim(pos48: u64, position: u64, capacity: u64) -> Lap {
    let d = pos48.wrapping_sub(position) & POS_MASK;
    if d == 0 {
        Lap::Same
    } else if d == (POS_MASK + 1 - capacity) & POS_MASK {
        Lap::Previous
    } else if d < 1 << 47 {
        Lap::Later
    } else {
        Lap::Invalid
    }
}

fn lap_of(p: u64, position: u64, capacity: u64) -> Lap {
    if p == position {
        Lap::Same
    } else if p.wrapping_add(capacity) == position {
        Lap::Previous
    } else if p > position && p < MAX_POSITION {
        Lap::Later
    } else {
        Lap::Invalid
    }
}

/// Outcome of a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    Done,
    Full,
    Corrupt,
}

/// Outcome of a pop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pop<T> {
    Item(T),
    Empty,
    Corrupt,
}

/// A sender's or receiver's view of the ring: private copies of the geometry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ring {
    capacity: u64,
    mask: u64,
}

impl Ring {
    pub(crate) fn new(capacity: u64) -> Self {
        debug_assert!(capacity.is_power_of_two() && capacity >= 2);
        Ring { capacity, mask: capacity - 1 }
    }

    /// As [`push`](Self::push), trying first to claim the slot at `tail` with a single CAS
    /// that assumes it is free for this lap, the usual case while messages stream: one
    /// read-for-ownership of the slot's line instead of a shared read and then an upgrade.
    /// Anything else (full, claimed, a dead claimer, corruption) falls back to `push`. Callers
    /// use it while sends succeed and `push` after a `Full`, so that a sender waiting on a full
    /// ring reads the slot instead of taking its line from the receivers.
    pub(crate) fn push_fast<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        me: u16,
        value: &T,
        dead_receiver: impl FnMut(u16) -> bool,
    ) -> Push {
        // SYNC: Acquire pairs with the Release CAS that moved `tail` here.
        let pos = ctl.tail.0.load(Ordering::Acquire);
        if pos < MAX_POSITION {
            let index = pos & self.mask;
            // SYNC: Acquire on success pairs with the receiver's Release "free" store in
            // `take`: our payload write happens-after its copy out. On failure nothing was
            // read that is used: `push` loads everything again.
            let claimed = slots.stamp(index).compare_exchange(
                pos,
                writing(me, pos),
                Ordering::Acquire,
                Ordering::Relaxed,
            );
            if claimed.is_ok() {
                self.publish(ctl, slots, index, pos, value);
                return Push::Done;
            }
        }
        self.push(ctl, slots, me, value, dead_receiver)
    }

    /// With the slot of `pos` claimed by this sender: moves `tail` on, writes the payload and
    /// publishes it.
    #[inline]
    fn publish<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        index: u64,
        pos: u64,
        value: &T,
    ) {
        // SYNC: Release pairs with other senders' Acquire load of `tail`.
        let _ = ctl.tail.0.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
        // SAFETY: index < capacity; our claim gives us the slot until we publish.
        unsafe { slots.write(index, value) };
        // SYNC: Release pairs with the receiver's Acquire load (or CAS) of the state in `pop`
        // and `pop_fast`: the payload write happens-before its copy out.
        slots.stamp(index).store(pos + 1, Ordering::Release);
    }

    /// As [`pop`](Self::pop), trying first to claim the message at `head` with a single CAS
    /// that assumes it is published for this lap; anything else falls back to `pop`. Callers
    /// use it while receives succeed and `pop` after an `Empty` (see
    /// [`push_fast`](Self::push_fast)).
    pub(crate) fn pop_fast<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        me: u16,
        dead_sender: impl FnMut(u16) -> bool,
    ) -> Pop<T> {
        // SYNC: Acquire pairs with the Release CAS that moved `head` here.
        let pos = ctl.head.0.load(Ordering::Acquire);
        if pos < MAX_POSITION {
            let index = pos & self.mask;
            // SYNC: Acquire on success pairs with the sender's Release "full" store in
            // `publish`: its payload write happens-before our copy out.
            let claimed = slots.stamp(index).compare_exchange(
                pos + 1,
                reading(me, pos),
                Ordering::Acquire,
                Ordering::Relaxed,
            );
            if claimed.is_ok() {
                return Pop::Item(self.take(ctl, slots, index, pos));
            }
        }
        self.pop(ctl, slots, me, dead_sender)
    }

    /// With the message of `pos` claimed by this receiver: moves `head` on, copies the payload
    /// out and frees the slot for the next lap.
    #[inline]
    fn take<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        index: u64,
        pos: u64,
    ) -> T {
        // SYNC: Release pairs with other receivers' Acquire load of `head`.
        let _ = ctl.head.0.compare_exchange(pos, pos + 1, Ordering::Release, Ordering::Relaxed);
        // SAFETY: index < capacity; our claim gives us the slot until we free it.
        let value = unsafe { slots.read(index) };
        // SYNC: Release pairs with the sender's Acquire load or CAS of the state in `push` and
        // `push_fast`: our copy out happens-before its next write to this slot.
        slots.stamp(index).store(pos + self.capacity, Ordering::Release);
        value
    }

    /// Claims the slot at `tail` for sender `me`, writes `value` and publishes it.
    /// `dead_receiver(index)` says whether receiver `index` is confirmed dead.
    pub(crate) fn push<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        me: u16,
        value: &T,
        mut dead_receiver: impl FnMut(u16) -> bool,
    ) -> Push {
        for _ in 0..MAX_RETRIES {
            // SYNC: Acquire pairs with the Release CAS that moved `tail` here.
            let pos = ctl.tail.0.load(Ordering::Acquire);
            if pos >= MAX_POSITION {
                return Push::Corrupt;
            }
            let index = pos & self.mask;
            let slot = slots.stamp(index);
            // SYNC: Acquire pairs with the receiver's Release store of "free" in `pop`, after
            // its copy out of the slot.
            let word = slot.load(Ordering::Acquire);
            let lap = match decode(word, index, self.mask) {
                State::Free(p) => lap_of(p, pos, self.capacity),
                State::Full(p) => match lap_of(p, pos, self.capacity) {
                    Lap::Previous => return Push::Full,
                    lap => lap,
                },
                State::Writing { pos48, .. } => match lap_of_claim(pos48, pos, self.capacity) {
                    Lap::Previous => return Push::Full,
                    lap => lap,
                },
                State::Reading { index: reader, pos48 } => {
                    match lap_of_claim(pos48, pos, self.capacity) {
                        Lap::Previous if dead_receiver(reader) => {
                            // The reader died holding the previous lap's message: free the slot.
                            if slot
                                .compare_exchange(word, pos, Ordering::AcqRel, Ordering::Relaxed)
                                .is_ok()
                            {
                                ctl.stats.0.lost_reads.fetch_add(1, Ordering::Relaxed);
                            }
                            continue;
                        }
                        Lap::Previous => return Push::Full,
                        lap => lap,
                    }
                }
                State::Invalid => Lap::Invalid,
            };
            match lap {
                Lap::Same if word == pos => {
                    // SYNC: Acquire on success pairs with the receiver's Release "free" store;
                    // our payload write happens-after its copy out.
                    if slot
                        .compare_exchange(
                            word,
                            writing(me, pos),
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_err()
                    {
                        continue;
                    }
                    self.publish(ctl, slots, index, pos, value);
                    return Push::Done;
                }
                // The slot shows `pos` (or a later lap) already claimed: `tail` is behind,
                // perhaps because its claimer died before moving it. Help, then retry.
                Lap::Same | Lap::Later => {
                    let _ = ctl.tail.0.compare_exchange(
                        pos,
                        pos + 1,
                        Ordering::Release,
                        Ordering::Relaxed,
                    );
                }
                Lap::Previous | Lap::Invalid => return Push::Corrupt,
            }
        }
        Push::Full
    }

    /// Claims the message at `head` for receiver `me` and copies it out.
    /// `dead_sender(index)` says whether sender `index` is confirmed dead.
    pub(crate) fn pop<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        me: u16,
        mut dead_sender: impl FnMut(u16) -> bool,
    ) -> Pop<T> {
        for _ in 0..MAX_RETRIES {
            // SYNC: Acquire pairs with the Release CAS that moved `head` here.
            let pos = ctl.head.0.load(Ordering::Acquire);
            if pos >= MAX_POSITION {
                return Pop::Corrupt;
            }
            let index = pos & self.mask;
            let slot = slots.stamp(index);
            // SYNC: Acquire pairs with the sender's Release store of "full" in `push`.
            let word = slot.load(Ordering::Acquire);
            let lap = match decode(word, index, self.mask) {
                State::Full(p) => match lap_of(p, pos, self.capacity) {
                    Lap::Same => {
                        // SYNC: Acquire on success pairs with the sender's Release "full" store.
                        if slot
                            .compare_exchange(
                                word,
                                reading(me, pos),
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            )
                            .is_err()
                        {
                            continue;
                        }
                        return Pop::Item(self.take(ctl, slots, index, pos));
                    }
                    lap => lap,
                },
                State::Free(p) => match lap_of(p, pos, self.capacity) {
                    Lap::Same => return Pop::Empty,
                    // Free for `pos + capacity`: `pos` was consumed, `head` is behind.
                    Lap::Later if p == pos + self.capacity => Lap::Same,
                    Lap::Later => Lap::Later,
                    _ => Lap::Invalid,
                },
                State::Writing { index: writer, pos48 } => {
                    match lap_of_claim(pos48, pos, self.capacity) {
                        Lap::Same if dead_sender(writer) => {
                            // The writer died before publishing: the message is lost; free the
                            // slot for the next lap and move on.
                            if slot
                                .compare_exchange(
                                    word,
                                    pos + self.capacity,
                                    Ordering::AcqRel,
                                    Ordering::Relaxed,
                                )
                                .is_ok()
                            {
                                ctl.stats.0.lost_writes.fetch_add(1, Ordering::Relaxed);
                            }
                            continue;
                        }
                        Lap::Same => return Pop::Empty,
                        Lap::Later => Lap::Later,
                        _ => Lap::Invalid,
                    }
                }
                State::Reading { pos48, .. } => match lap_of_claim(pos48, pos, self.capacity) {
                    // A slow receiver still reads the previous lap: nothing for us yet.
                    Lap::Previous => return Pop::Empty,
                    lap => lap,
                },
                State::Invalid => Lap::Invalid,
            };
            match lap {
                // `pos` (or a later lap) is claimed or done: help `head` on, then retry.
                Lap::Same | Lap::Later => {
                    let _ = ctl.head.0.compare_exchange(
                        pos,
                        pos + 1,
                        Ordering::Release,
                        Ordering::Relaxed,
                    );
                }
                Lap::Previous | Lap::Invalid => return Pop::Corrupt,
            }
        }
        Pop::Empty
    }

    /// Resolves every claim left by endpoint `index` of the given role (its process is dead),
    /// before the index is handed to a new owner. Returns how many messages were lost.
    pub(crate) fn release_claims_of<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        index: u16,
        receiver: bool,
    ) -> u64 {
        let mut lost = 0;
        let tail = ctl.tail.0.load(Ordering::Acquire);
        if tail >= MAX_POSITION {
            return 0;
        }
        for slot_index in 0..self.capacity {
            let slot = slots.stamp(slot_index);
            let word = slot.load(Ordering::Acquire);
            let (claimer, pos48, is_read) = match decode(word, slot_index, self.mask) {
                State::Writing { index, pos48 } => (index, pos48, false),
                State::Reading { index, pos48 } => (index, pos48, true),
                _ => continue,
            };
            if claimer != index || is_read != receiver {
                continue;
            }
            // The full position: the one with these low bits at or below the tail.
            let back = tail.wrapping_sub(pos48) & POS_MASK;
            let Some(pos) = tail.checked_sub(back) else { continue };
            let counter = if receiver { &ctl.stats.0.lost_reads } else { &ctl.stats.0.lost_writes };
            if slot
                .compare_exchange(word, pos + self.capacity, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                counter.fetch_add(1, Ordering::Relaxed);
                lost += 1;
            }
        }
        lost
    }
}

#[cfg(all(test, not(shmchan_loom)))]
mod tests {
    use super::*;
    use crate::ring::HeapSlots;

    /// Heap slots initialised as MPMC slots (free for positions `start..start+capacity`).
    fn ring(capacity: u64, start: u64) -> (MpmcControl, HeapSlots<u64>, Ring) {
        let slots = HeapSlots::<u64>::new(capacity, start);
        for k in 0..capacity {
            let p = start + k;
            SlotMemory::<u64>::stamp(&slots, p & (capacity - 1)).store(p, Ordering::Relaxed);
        }
        (MpmcControl::new(start), slots, Ring::new(capacity))
    }

    fn never(_: u16) -> bool {
        false
    }

    #[test]
    fn fifo_full_and_empty() {
        let (ctl, slots, r) = ring(4, 10);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, 0, never), Pop::Empty);
        for v in 0..4 {
            assert_eq!(r.push(&ctl, &slots, 1, &v, never), Push::Done);
        }
        assert_eq!(r.push(&ctl, &slots, 1, &9, never), Push::Full);
        for v in 0..4 {
            assert_eq!(r.pop(&ctl, &slots, 2, never), Pop::Item(v));
        }
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, 2, never), Pop::Empty);
        for round in 0..100u64 {
            assert_eq!(r.push(&ctl, &slots, 3, &round, never), Push::Done);
            assert_eq!(r.pop(&ctl, &slots, 0, never), Pop::Item(round));
        }
    }

    #[test]
    fn the_one_cas_claims_agree_with_the_reading_ones() {
        let (ctl, slots, r) = ring(4, 10);
        // Empty: the fast pop falls back and reports it; full: so does the fast push.
        assert_eq!(r.pop_fast::<u64, _>(&ctl, &slots, 0, never), Pop::Empty);
        for v in 0..4 {
            assert_eq!(r.push_fast(&ctl, &slots, 1, &v, never), Push::Done);
        }
        assert_eq!(r.push_fast(&ctl, &slots, 1, &9, never), Push::Full);
        for v in 0..4 {
            assert_eq!(r.pop_fast(&ctl, &slots, 2, never), Pop::Item(v));
        }
        // Mixed with the reading claims, over many laps, positions and states stay in step.
        for round in 0..100u64 {
            let push = if round % 3 == 0 { Ring::push::<u64, _> } else { Ring::push_fast };
            assert_eq!(push(&r, &ctl, &slots, 3, &round, never), Push::Done);
            let got = if round % 2 == 0 {
                r.pop_fast(&ctl, &slots, 0, never)
            } else {
                r.pop(&ctl, &slots, 0, never)
            };
            assert_eq!(got, Pop::Item(round));
        }
        assert_eq!(ctl.tail.0.load(Ordering::Relaxed), ctl.head.0.load(Ordering::Relaxed));
        // A dead writer's claim at `head` still gets skipped through the fallback.
        let pos = ctl.tail.0.load(Ordering::Relaxed);
        SlotMemory::<u64>::stamp(&slots, pos & 3).store(writing(5, pos), Ordering::Relaxed);
        ctl.tail.0.store(pos + 1, Ordering::Relaxed);
        assert_eq!(r.push_fast(&ctl, &slots, 1, &42, never), Push::Done);
        assert_eq!(r.pop_fast(&ctl, &slots, 0, |i| i == 5), Pop::Item(42));
        assert_eq!(ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_dead_writer_is_skipped_and_counted_a_live_one_waits() {
        let (ctl, slots, r) = ring(4, 0);
        // Sender 5 claimed position 0 and died; then sender 1 published position 1.
        SlotMemory::<u64>::stamp(&slots, 0).store(writing(5, 0), Ordering::Relaxed);
        ctl.tail.0.store(1, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, 1, &77, never), Push::Done);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, 0, never), Pop::Empty, "live: wait");
        assert_eq!(r.pop(&ctl, &slots, 0, |i| i == 5), Pop::Item(77));
        assert_eq!(ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1);
        // The skipped slot is free for the next lap.
        for v in 0..4 {
            assert_eq!(r.push(&ctl, &slots, 1, &v, never), Push::Done);
        }
        for v in 0..4 {
            assert_eq!(r.pop(&ctl, &slots, 0, never), Pop::Item(v));
        }
    }

    #[test]
    fn a_dead_reader_frees_its_slot_for_senders() {
        let (ctl, slots, r) = ring(2, 0);
        assert_eq!(r.push(&ctl, &slots, 0, &1, never), Push::Done);
        assert_eq!(r.push(&ctl, &slots, 0, &2, never), Push::Done);
        // Receiver 3 claims position 0 for reading and dies before freeing it.
        SlotMemory::<u64>::stamp(&slots, 0).store(reading(3, 0), Ordering::Relaxed);
        ctl.head.0.store(1, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, 0, &3, never), Push::Full, "live reader: full");
        assert_eq!(r.push(&ctl, &slots, 0, &3, |i| i == 3), Push::Done);
        assert_eq!(ctl.stats.0.lost_reads.load(Ordering::Relaxed), 1);
        assert_eq!(r.pop(&ctl, &slots, 1, never), Pop::Item(2));
        assert_eq!(r.pop(&ctl, &slots, 1, never), Pop::Item(3));
    }

    #[test]
    fn a_claimer_dying_before_moving_tail_or_head_does_not_stall() {
        let (ctl, slots, r) = ring(4, 0);
        // A sender claimed and published position 0 but died before moving `tail`.
        SlotMemory::<u64>::stamp(&slots, 0).store(1, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, 1, &8, never), Push::Done);
        assert_eq!(ctl.tail.0.load(Ordering::Relaxed), 2);
        // A receiver claimed position 0 but died before moving `head`: it is lost when resolved.
        SlotMemory::<u64>::stamp(&slots, 0).store(reading(2, 0), Ordering::Relaxed);
        assert_eq!(r.pop(&ctl, &slots, 0, never), Pop::Item(8));
    }

    #[test]
    fn released_claims_of_a_dead_index_are_freed() {
        let (ctl, slots, r) = ring(4, 0);
        for v in 0..3 {
            assert_eq!(r.push(&ctl, &slots, 0, &v, never), Push::Done);
        }
        SlotMemory::<u64>::stamp(&slots, 3).store(writing(7, 3), Ordering::Relaxed);
        ctl.tail.0.store(4, Ordering::Relaxed);
        assert_eq!(r.release_claims_of::<u64, _>(&ctl, &slots, 7, false), 1);
        assert_eq!(r.release_claims_of::<u64, _>(&ctl, &slots, 7, false), 0);
        for v in 0..3 {
            assert_eq!(r.pop(&ctl, &slots, 0, never), Pop::Item(v));
        }
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, 0, never), Pop::Empty);
        assert_eq!(ctl.head.0.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn forged_values_at_the_edges_of_the_range_never_overflow() {
        let (ctl, slots, r) = ring(4, 0);
        // State 0 in the last slot decodes as "full at position u64::MAX": invalid, no panic.
        SlotMemory::<u64>::stamp(&slots, 3).store(0, Ordering::Relaxed);
        ctl.head.0.store(3, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, 0, never), Pop::Corrupt);
        // A dead index's claim with a tail near u64::MAX: nothing to resolve, no panic.
        SlotMemory::<u64>::stamp(&slots, 1).store(writing(7, 1), Ordering::Relaxed);
        ctl.tail.0.store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(r.release_claims_of::<u64, _>(&ctl, &slots, 7, false), 0);
    }

    #[test]
    fn forged_states_and_positions_are_corruption() {
        let (ctl, slots, r) = ring(4, 0);
        SlotMemory::<u64>::stamp(&slots, 0).store(2, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, 0, never), Pop::Corrupt);
        assert_eq!(r.push(&ctl, &slots, 0, &1, never), Push::Corrupt);
        let (ctl, slots, r) = ring(4, 0);
        ctl.tail.0.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, 0, &1, never), Push::Corrupt);
        // A claim whose position does not belong to this slot.
        SlotMemory::<u64>::stamp(&slots, 1).store(writing(0, 2), Ordering::Relaxed);
        ctl.head.0.store(1, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, 0, never), Pop::Corrupt);
    }

    #[test]
    fn many_threads_deliver_everything_exactly_once() {
        let per_sender: u64 = if cfg!(miri) { 12 } else { 20_000 };
        let total = 3 * per_sender as usize;
        let (ctl, slots, r) = ring(8, 0);
        let received = std::sync::Mutex::new(Vec::new());
        let count = AtomicU64::new(0);
        std::thread::scope(|s| {
            for sender in 0..3u16 {
                let (ctl, slots) = (&ctl, &slots);
                s.spawn(move || {
                    for i in 0..per_sender {
                        let v = u64::from(sender) << 32 | i;
                        while r.push(ctl, slots, sender, &v, never) != Push::Done {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for receiver in 0..2u16 {
                let (ctl, slots, received, count) = (&ctl, &slots, &received, &count);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    while count.load(Ordering::Relaxed) < total as u64 {
                        match r.pop::<u64, _>(ctl, slots, receiver, never) {
                            Pop::Item(v) => {
                                mine.push(v);
                                count.fetch_add(1, Ordering::Relaxed);
                            }
                            Pop::Empty => std::thread::yield_now(),
                            Pop::Corrupt => panic!("corrupt"),
                        }
                    }
                    received.lock().unwrap().extend(mine);
                });
            }
        });
        let mut all = received.into_inner().unwrap();
        assert_eq!(all.len(), total);
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), total, "a message arrived twice");
    }
}
