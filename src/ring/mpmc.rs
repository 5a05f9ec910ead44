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
//!    640  registry: senders[max_endpoints], then receivers[max_endpoints], one line each:
//!               owner u64, then LANES intent words (max_endpoints is the header's `extra`)
//!  slots  [stamp u64][payload T], as in the SPSC ring
//! ```
//!
//! # Claims
//! Vyukov's bounded queue, as `crossbeam_queue::ArrayQueue` has it: a sender claims position
//! `p` with one CAS of `tail` from `p` to `p + 1`, having seen the slot free for `p`; it then
//! copies the payload and stores the stamp "full" (Release). A receiver claims with one CAS of
//! `head`, having seen the slot full for `p`, copies the payload out and stores "free for
//! `p + capacity`". For the slot of position `p` (index `p & mask`, capacity at least 2):
//!
//! | stamp | meaning |
//! |---|---|
//! | `p` | free: the sender that moves `tail` past `p` writes it |
//! | `p + 1` | full: the message for `p` is published |
//! | `LOST \| p` | lost: `p` was claimed by a sender that died; receivers skip it |
//! | `p + capacity` | free again, for position `p + capacity` |
//!
//! Positions are 62-bit counters (they never wrap: 2^62 messages take a century at a billion
//! per second).
//!
//! # Who holds a claim
//! A claim is a move of `tail` or `head`; the slot does not say who made it. So before each
//! claiming CAS an endpoint writes the position into its *intent* word (one per handle, a lane
//! of its registry entry's line, written only by that handle), and clears it when the CAS
//! fails. A handle finishes one claim before it starts the next, so whoever completed the CAS
//! for `p` and has not yet stored the stamp still has `p` in its lane; a stale intent names a
//! position that is finished or that someone else claimed. An endpoint that finds the slot of
//! `p` stuck (a sender's claim unpublished, or a receiver's not yet freed, with `tail`/`head`
//! past `p`) looks for the lanes holding `p` ([`Holder`]): if one of them belongs to a live
//! process it waits; if all of them belong to processes confirmed dead (pid + start time), the
//! claimer is among them, and the slot is resolved:
//! - a sender died between its claim and its publish: the stamp becomes `LOST | p` (counted in
//!   `lost_writes`), and the receiver at `head` claims and frees it like a message, delivering
//!   nothing;
//! - a receiver died between its claim and its free: the slot is freed for the next lap (the
//!   message it was copying is counted in `lost_reads`).
//!
//! A live but slow claimer is never skipped: a confirmed death is the only trigger. The intent
//! store needs no fence of its own: it precedes the claiming CAS (Release), and whoever finds
//! `tail`/`head` past `p` loaded it with Acquire, so it sees the intent or a later one, and a
//! later one is only written after the stamp store, which its re-read of the slot then sees.
//! Before a process takes over a dead endpoint's registry entry it resolves the claims its
//! lanes name ([`Ring::resolve_write`], [`Ring::resolve_read`]), so no claim outlives the
//! process that made it unseen.
//!
//! # Untrusted peers
//! Every stamp is decoded against the slot index and the caller's position; anything a
//! correct peer cannot produce is corruption. Loops retry only when another claimer moved a
//! position, and give up after [`MAX_RETRIES`] (a peer rewriting positions cannot keep us
//! here).

use crate::layout::{self, Flavor, Geometry, LINE, Line, Waiters};
use crate::ring::SlotMemory;
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Most endpoints of each role a segment can register.
pub(crate) const MAX_ENDPOINTS: u64 = 1 << 14;
/// How often a push or pop retries after losing a race before it reports Full/Empty.
pub(crate) const MAX_RETRIES: u32 = 1 << 12;
/// Intent words per registry entry: how many handles of one entry (a handle and its clones)
/// can claim at the same time; more clones share lanes, taking turns.
pub(crate) const LANES: u64 = LINE / 8 - 1;
/// An intent word naming no position.
pub(crate) const IDLE: u64 = u64::MAX;

/// The stamp bit of a lost slot.
const LOST: u64 = 1 << 63;
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
    REGISTRY_OFFSET + 2 * max_endpoints * LINE
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
            let words_per_entry = (LINE / 8) as usize;
            for entry in 0..(2 * g.extra) as usize {
                let line = registry.add(entry * words_per_entry);
                line.write(crate::layout::endpoint::VACANT);
                for lane in 1..words_per_entry {
                    line.add(lane).write(IDLE);
                }
            }
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

/// A decoded stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Free(u64),
    Full(u64),
    Lost(u64),
    Invalid,
}

fn decode(word: u64, index: u64, mask: u64) -> Stamp {
    if word & LOST != 0 {
        let p = word & !LOST;
        return if p < MAX_POSITION && p & mask == index { Stamp::Lost(p) } else { Stamp::Invalid };
    }
    if word >= MAX_POSITION {
        Stamp::Invalid
    } else if word & mask == index {
        Stamp::Free(word)
    } else if word.wrapping_sub(1) & mask == index && word > 0 {
        Stamp::Full(word - 1)
    } else {
        Stamp::Invalid
    }
}

/// Who holds a claim on a position, by the intent words of the registry (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Holder {
    /// A lane of a live endpoint names it (or the caller chose not to look yet).
    Live,
    /// Lanes name it, and every one belongs to a process confirmed dead.
    Dead,
    /// No lane names it.
    Nobody,
}

/// Whether a sender's claim of `p` is unfinished, by the slot's `stamp` and `tail` as loaded:
/// `tail` is past `p` and the slot is still free for it.
pub(crate) fn write_unfinished(p: u64, stamp: u64, tail: u64) -> bool {
    p < MAX_POSITION && stamp == p && tail > p
}

/// Whether a receiver's claim of `p` is unfinished, by the slot's `stamp` and `head` as loaded:
/// `head` is past `p` and the slot still holds its message (or its lost mark).
pub(crate) fn read_unfinished(p: u64, stamp: u64, head: u64) -> bool {
    p < MAX_POSITION && (stamp == p + 1 || stamp == LOST | p) && head > p
}

/// What a look at a possibly stuck claim found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolution {
    /// The position is not claimed-and-unfinished (published, freed, or not claimed yet).
    NotStuck,
    /// Its holder is live (or unknown yet): it stays as it is.
    Held,
    /// Its holder was dead: the slot is resolved (marked lost, or freed).
    Resolved,
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

    /// Whether `p` is the position one lap before `pos`.
    #[inline(always)]
    fn previous_lap(&self, p: u64, pos: u64) -> bool {
        p.wrapping_add(self.capacity) == pos
    }

    /// Claims the position at `tail` for the sender whose lane is `intent`, writes `value` and
    /// publishes it. `receiver_holding(p)` says who holds a receiver's claim on `p`; it is
    /// asked only about a slot a receiver claimed and has not freed.
    #[inline]
    pub(crate) fn push<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        intent: &AtomicU64,
        value: &T,
        mut receiver_holding: impl FnMut(u64) -> Holder,
    ) -> Push {
        for _ in 0..MAX_RETRIES {
            // SYNC: Acquire pairs with the AcqRel claim CAS that moved `tail` here (through
            // its release sequence): the stamp load below sees at least the stamp that claimer
            // saw, and a lane's intent for an earlier position.
            let pos = ctl.tail.0.load(Ordering::Acquire);
            if pos >= MAX_POSITION {
                return Push::Corrupt;
            }
            let index = pos & self.mask;
            let slot = slots.stamp(index);
            // SYNC: Acquire pairs with the receiver's Release "free" store after its copy out:
            // our payload write happens-after it.
            let word = slot.load(Ordering::Acquire);
            match decode(word, index, self.mask) {
                Stamp::Free(p) if p == pos => {
                    // SYNC: Release pairs with the Acquire load of our lane in the registry
                    // scan behind `Holder`: a scan that sees this intent also sees our earlier
                    // stamp stores (so it never takes a published position for a lost one).
                    intent.store(pos, Ordering::Release);
                    // SYNC: AcqRel; Release publishes our intent (above) to whoever loads
                    // `tail` past `pos` with Acquire; Acquire pairs with the previous claimer's
                    // CAS, as the load of `tail` above.
                    if ctl
                        .tail
                        .0
                        .compare_exchange(pos, pos + 1, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        // SAFETY: index < capacity; the claim gives us the slot until we
                        // publish (receivers wait for the stamp, senders for the next lap).
                        unsafe { slots.write(index, value) };
                        // SYNC: Release pairs with the receiver's Acquire load of the stamp in
                        // `pop`: our payload write happens-before its copy out.
                        slot.store(pos + 1, Ordering::Release);
                        return Push::Done;
                    }
                    // Someone else claimed `pos`: our lane must not name it.
                    // SYNC: Release, as the intent store above.
                    intent.store(IDLE, Ordering::Release);
                }
                // The previous lap's writer has not published yet: the ring is full.
                Stamp::Free(p) if self.previous_lap(p, pos) => return Push::Full,
                // The previous lap's message (or lost slot) is still there: full, unless a
                // receiver claimed it and died before freeing the slot.
                Stamp::Full(p) | Stamp::Lost(p) if self.previous_lap(p, pos) => {
                    // SYNC: Acquire pairs with the receivers' AcqRel claims of `head`, as in
                    // `resolve_read`.
                    if ctl.head.0.load(Ordering::Acquire) <= p
                        || self.resolve_read(ctl, slots, p, &mut receiver_holding)
                            == Resolution::Held
                    {
                        return Push::Full;
                    }
                    // Resolved (by us or by someone else) or freed since our load: look again.
                    // `head` never moves back, so this loop ends.
                }
                // `tail` moved on since we loaded it: retry.
                Stamp::Free(p) | Stamp::Full(p) | Stamp::Lost(p) if p >= pos => {}
                _ => return Push::Corrupt,
            }
        }
        Push::Full
    }

    /// Claims the message at `head` for the receiver whose lane is `intent` and copies it out,
    /// skipping lost slots. `sender_holding(p)` says who holds a sender's claim on `p`; it is
    /// asked only about a position claimed and not yet published.
    #[inline]
    pub(crate) fn pop<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        intent: &AtomicU64,
        mut sender_holding: impl FnMut(u64) -> Holder,
    ) -> Pop<T> {
        for _ in 0..MAX_RETRIES {
            // SYNC: Acquire pairs with the AcqRel claim CAS that moved `head` here: the stamp
            // load below sees at least what that claimer saw, and `tail` is at least `pos`.
            let pos = ctl.head.0.load(Ordering::Acquire);
            if pos >= MAX_POSITION {
                return Pop::Corrupt;
            }
            let index = pos & self.mask;
            let slot = slots.stamp(index);
            // SYNC: Acquire pairs with the sender's Release "full" store in `push`: its payload
            // write happens-before our copy out.
            let word = slot.load(Ordering::Acquire);
            match decode(word, index, self.mask) {
                Stamp::Full(p) | Stamp::Lost(p) if p == pos => {
                    // SYNC: Release pairs with the Acquire load of our lane in the registry
                    // scan behind `Holder`: a scan that sees this intent also sees our earlier
                    // stamp stores.
                    intent.store(pos, Ordering::Release);
                    // SYNC: AcqRel, as the sender's claim of `tail` in `push`.
                    if ctl
                        .head
                        .0
                        .compare_exchange(pos, pos + 1, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        let lost = word & LOST != 0;
                        // SAFETY: index < capacity; the claim gives us the slot until we free
                        // it. A lost slot's payload is never read.
                        let value = (!lost).then(|| unsafe { slots.read(index) });
                        // SYNC: Release pairs with the sender's Acquire load of the stamp in
                        // `push`: our copy out happens-before its next write to the slot.
                        slot.store(pos + self.capacity, Ordering::Release);
                        match value {
                            Some(value) => return Pop::Item(value),
                            None => continue,
                        }
                    }
                    // SYNC: Release, as the intent store above.
                    intent.store(IDLE, Ordering::Release);
                }
                Stamp::Free(p) if p == pos => {
                    // SYNC: Acquire pairs with the senders' AcqRel claims of `tail`: a lane
                    // holding `pos` is visible to `sender_holding`.
                    let tail = ctl.tail.0.load(Ordering::Acquire);
                    // Resolved (by us or, a moment ago, by someone else) or published since
                    // our load: look again. `tail` never moves back, so this loop ends.
                    if tail <= pos
                        || self.resolve_write(ctl, slots, pos, &mut sender_holding)
                            == Resolution::Held
                    {
                        return Pop::Empty;
                    }
                }
                // The previous lap's receiver has not freed the slot yet: nothing for us.
                Stamp::Full(p) | Stamp::Lost(p) if self.previous_lap(p, pos) => return Pop::Empty,
                // `head` moved on since we loaded it: retry.
                Stamp::Full(p) | Stamp::Lost(p) if p > pos => {}
                Stamp::Free(p) if p > pos => {}
                _ => return Pop::Corrupt,
            }
        }
        Pop::Empty
    }

    /// If a sender claimed `p` and has not published it, and every lane naming `p` belongs to
    /// a dead process, marks the slot lost (receivers skip it, `lost_writes` counts it).
    pub(crate) fn resolve_write<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        p: u64,
        mut sender_holding: impl FnMut(u64) -> Holder,
    ) -> Resolution {
        let slot = slots.stamp(p & self.mask);
        // SYNC: Acquire pairs with the senders' AcqRel claims: lanes naming `p` are visible.
        let (word, tail) = (slot.load(Ordering::Acquire), ctl.tail.0.load(Ordering::Acquire));
        if !write_unfinished(p, word, tail) {
            return Resolution::NotStuck;
        }
        if sender_holding(p) != Holder::Dead {
            return Resolution::Held;
        }
        // SYNC: AcqRel: Acquire as the loads above; Release so the receiver that claims the
        // lost slot (Acquire) sees it marked before it frees it.
        if slot.compare_exchange(p, LOST | p, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            ctl.stats.0.lost_writes.fetch_add(1, Ordering::Relaxed);
        }
        // Marked by us or, in a race, by another endpoint.
        Resolution::Resolved
    }

    /// If a receiver claimed `p` (a message or a lost slot) and has not freed the slot, and
    /// every lane naming `p` belongs to a dead process, frees the slot for the next lap (a
    /// message it held is counted in `lost_reads`).
    pub(crate) fn resolve_read<T: Copy, S: SlotMemory<T>>(
        &self,
        ctl: &MpmcControl,
        slots: &S,
        p: u64,
        mut receiver_holding: impl FnMut(u64) -> Holder,
    ) -> Resolution {
        let slot = slots.stamp(p & self.mask);
        // SYNC: Acquire pairs with the receivers' AcqRel claims of `head`: lanes naming `p`
        // are visible.
        let (word, head) = (slot.load(Ordering::Acquire), ctl.head.0.load(Ordering::Acquire));
        if !read_unfinished(p, word, head) {
            return Resolution::NotStuck;
        }
        if receiver_holding(p) != Holder::Dead {
            return Resolution::Held;
        }
        // SYNC: AcqRel: Release pairs with the next sender's Acquire load of the stamp.
        if slot
            .compare_exchange(word, p + self.capacity, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
            && word == p + 1
        {
            ctl.stats.0.lost_reads.fetch_add(1, Ordering::Relaxed);
        }
        Resolution::Resolved
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

    fn live(_: u64) -> Holder {
        Holder::Live
    }

    fn dead(_: u64) -> Holder {
        Holder::Dead
    }

    fn stamp(slots: &HeapSlots<u64>, p: u64, capacity: u64) -> &AtomicU64 {
        SlotMemory::<u64>::stamp(slots, p & (capacity - 1))
    }

    #[test]
    fn fifo_full_and_empty() {
        let (ctl, slots, r) = ring(4, 10);
        let lane = AtomicU64::new(IDLE);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, live), Pop::Empty);
        for v in 0..4 {
            assert_eq!(r.push(&ctl, &slots, &lane, &v, live), Push::Done);
        }
        assert_eq!(lane.load(Ordering::Relaxed), 13, "the lane names the last claim");
        assert_eq!(r.push(&ctl, &slots, &lane, &9, live), Push::Full);
        for v in 0..4 {
            assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(v));
        }
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, live), Pop::Empty);
        for round in 0..100u64 {
            assert_eq!(r.push(&ctl, &slots, &lane, &round, live), Push::Done);
            assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(round));
        }
        assert_eq!(ctl.tail.0.load(Ordering::Relaxed), ctl.head.0.load(Ordering::Relaxed));
    }

    #[test]
    fn a_dead_writer_is_skipped_and_counted_a_live_one_waits() {
        let (ctl, slots, r) = ring(4, 0);
        let lane = AtomicU64::new(IDLE);
        // A sender claimed position 0 (its lane says 0, `tail` moved) and stopped there.
        ctl.tail.0.store(1, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, &lane, &77, live), Push::Done);
        let mut asked = Vec::new();
        let mut live_and_note = |p| {
            asked.push(p);
            Holder::Live
        };
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, &mut live_and_note), Pop::Empty);
        assert_eq!(asked, [0], "only the stuck position is looked up");
        let nobody = |_| Holder::Nobody;
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, nobody), Pop::Empty, "nobody: wait");
        assert_eq!(r.pop(&ctl, &slots, &lane, dead), Pop::Item(77));
        assert_eq!(ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1);
        // The skipped slot is free for the next lap.
        for v in 0..4 {
            assert_eq!(r.push(&ctl, &slots, &lane, &v, live), Push::Done);
        }
        for v in 0..4 {
            assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(v));
        }
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, dead), Pop::Empty);
        assert_eq!(ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_dead_reader_frees_its_slot_for_senders() {
        let (ctl, slots, r) = ring(2, 0);
        let lane = AtomicU64::new(IDLE);
        assert_eq!(r.push(&ctl, &slots, &lane, &1, live), Push::Done);
        assert_eq!(r.push(&ctl, &slots, &lane, &2, live), Push::Done);
        // A receiver claimed position 0 (`head` moved) and died before freeing the slot.
        ctl.head.0.store(1, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, &lane, &3, live), Push::Full, "live reader: full");
        assert_eq!(r.push(&ctl, &slots, &lane, &3, dead), Push::Done);
        assert_eq!(ctl.stats.0.lost_reads.load(Ordering::Relaxed), 1);
        assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(2));
        assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(3));
    }

    #[test]
    fn a_reader_dying_while_skipping_a_lost_slot_loses_nothing_more() {
        let (ctl, slots, r) = ring(2, 0);
        let lane = AtomicU64::new(IDLE);
        // Position 0 was lost by its sender; a receiver claimed it and died; 1 holds a message.
        stamp(&slots, 0, 2).store(LOST, Ordering::Relaxed);
        ctl.tail.0.store(1, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, &lane, &5, live), Push::Done);
        ctl.head.0.store(1, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, &lane, &6, live), Push::Full);
        assert_eq!(r.push(&ctl, &slots, &lane, &6, dead), Push::Done);
        assert_eq!(ctl.stats.0.lost_reads.load(Ordering::Relaxed), 0, "nothing was in it");
        assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(5));
        assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(6));
    }

    #[test]
    fn resolving_needs_a_stuck_claim_and_a_confirmed_death() {
        let (ctl, slots, r) = ring(4, 0);
        let lane = AtomicU64::new(IDLE);
        // Nothing claimed at 0 yet: nothing to resolve, whatever the registry says.
        assert_eq!(r.resolve_write::<u64, _>(&ctl, &slots, 0, dead), Resolution::NotStuck);
        assert_eq!(r.resolve_read::<u64, _>(&ctl, &slots, 0, dead), Resolution::NotStuck);
        // Claimed, unpublished: only a dead holder resolves it, and only once.
        ctl.tail.0.store(1, Ordering::Relaxed);
        assert_eq!(r.resolve_write::<u64, _>(&ctl, &slots, 0, live), Resolution::Held);
        let nobody = |_| Holder::Nobody;
        assert_eq!(r.resolve_write::<u64, _>(&ctl, &slots, 0, nobody), Resolution::Held);
        assert_eq!(r.resolve_write::<u64, _>(&ctl, &slots, 0, dead), Resolution::Resolved);
        assert_eq!(r.resolve_write::<u64, _>(&ctl, &slots, 0, dead), Resolution::NotStuck);
        assert_eq!(stamp(&slots, 0, 4).load(Ordering::Relaxed), LOST);
        // A published message not yet claimed by a receiver is never resolved.
        assert_eq!(r.push(&ctl, &slots, &lane, &8, live), Push::Done);
        assert_eq!(r.resolve_write::<u64, _>(&ctl, &slots, 1, dead), Resolution::NotStuck);
        assert_eq!(r.resolve_read::<u64, _>(&ctl, &slots, 1, dead), Resolution::NotStuck);
        assert_eq!(r.pop(&ctl, &slots, &lane, live), Pop::Item(8));
        let freed = r.resolve_read::<u64, _>(&ctl, &slots, 1, dead);
        assert_eq!(freed, Resolution::NotStuck, "already freed");
        // Positions out of range are ignored.
        assert_eq!(r.resolve_write::<u64, _>(&ctl, &slots, u64::MAX, dead), Resolution::NotStuck);
        let out = r.resolve_read::<u64, _>(&ctl, &slots, MAX_POSITION, dead);
        assert_eq!(out, Resolution::NotStuck);
        assert_eq!(ctl.stats.0.lost_writes.load(Ordering::Relaxed), 1);
        assert_eq!(ctl.stats.0.lost_reads.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn forged_values_at_the_edges_of_the_range_never_overflow() {
        let (ctl, slots, r) = ring(4, 0);
        let lane = AtomicU64::new(IDLE);
        // Stamp 0 in the last slot would be "full at position u64::MAX": invalid, no panic.
        stamp(&slots, 3, 4).store(0, Ordering::Relaxed);
        ctl.head.0.store(3, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, dead), Pop::Corrupt);
        for word in [u64::MAX, LOST | (MAX_POSITION - 1), MAX_POSITION, LOST | 1] {
            let (ctl, slots, r) = ring(4, 0);
            stamp(&slots, 0, 4).store(word, Ordering::Relaxed);
            assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, dead), Pop::Corrupt, "{word:#x}");
            assert_eq!(r.push(&ctl, &slots, &lane, &1, dead), Push::Corrupt, "{word:#x}");
        }
        let (ctl, slots, r) = ring(4, 0);
        ctl.tail.0.store(u64::MAX, Ordering::Relaxed);
        ctl.head.0.store(MAX_POSITION, Ordering::Relaxed);
        assert_eq!(r.push(&ctl, &slots, &lane, &1, dead), Push::Corrupt);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, dead), Pop::Corrupt);
    }

    #[test]
    fn forged_states_and_positions_are_corruption() {
        let (ctl, slots, r) = ring(4, 8);
        let lane = AtomicU64::new(IDLE);
        // Two laps behind `head`/`tail`: no correct peer leaves that.
        stamp(&slots, 8, 4).store(0, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, live), Pop::Corrupt);
        assert_eq!(r.push(&ctl, &slots, &lane, &1, live), Push::Corrupt);
        // Free one lap behind `head`: a receiver can only have passed it by claiming it.
        let (ctl, slots, r) = ring(4, 8);
        stamp(&slots, 8, 4).store(4, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, live), Pop::Corrupt);
        // A stamp that belongs to another slot.
        let (ctl, slots, r) = ring(4, 8);
        stamp(&slots, 8, 4).store(9, Ordering::Relaxed);
        ctl.head.0.store(9, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, live), Pop::Empty, "slot 9 is free");
        ctl.head.0.store(8, Ordering::Relaxed);
        assert_eq!(r.pop::<u64, _>(&ctl, &slots, &lane, live), Pop::Item(0), "full at 8");
    }

    #[test]
    fn many_threads_deliver_everything_exactly_once() {
        let per_sender: u64 = if cfg!(miri) { 12 } else { 20_000 };
        let total = 3 * per_sender as usize;
        let (ctl, slots, r) = ring(8, 0);
        let received = std::sync::Mutex::new(Vec::new());
        let count = AtomicU64::new(0);
        std::thread::scope(|s| {
            for sender in 0..3u64 {
                let (ctl, slots) = (&ctl, &slots);
                s.spawn(move || {
                    let lane = AtomicU64::new(IDLE);
                    for i in 0..per_sender {
                        let v = sender << 32 | i;
                        while r.push(ctl, slots, &lane, &v, live) != Push::Done {
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..2 {
                let (ctl, slots, received, count) = (&ctl, &slots, &received, &count);
                s.spawn(move || {
                    let lane = AtomicU64::new(IDLE);
                    let mut mine = Vec::new();
                    let mut next = [0u64; 3];
                    while count.load(Ordering::Relaxed) < total as u64 {
                        match r.pop::<u64, _>(ctl, slots, &lane, live) {
                            Pop::Item(v) => {
                                let (sender, seq) = ((v >> 32) as usize, v & 0xffff_ffff);
                                assert!(seq >= next[sender], "out of order for its sender");
                                next[sender] = seq + 1;
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
