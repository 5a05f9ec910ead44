//! The typed single-producer/single-consumer ring.
//!
//! # Protocol
//! Positions are free-running `u64`s; slot = position & mask. The producer owns `tail`, the
//! consumer owns `head`; each keeps its own position privately and publishes it to the control
//! block only for the other side's occasional use:
//!
//! - The producer writes the payload, then stores the slot's stamp `position + 1` (Release). The
//!   consumer decides "published?" from the stamp alone, which lives in the payload's own cache
//!   line, so a message costs one line transfer and the consumer never reads the producer's line.
//! - The consumer copies the payload out, then stores `head` (Release). The producer reads `head`
//!   only when its cached copy says the ring is full.
//!
//! # Memory ordering
//! - stamp: producer `store(Release)` after the payload copy ↔ consumer `load(Acquire)` before
//!   its copy. The consumer's copy happens-after the producer's.
//! - head: consumer `store(Release)` after its copy ↔ producer `load(Acquire)` in the full check.
//!   The producer's next write into that slot happens-after the consumer's copy.
//! - tail: producer `store(Release)` after the stamp ↔ a re-attaching producer's `load(Acquire)`
//!   (and observers). Nothing on the consumer's hot path reads it.
//!
//! # Untrusted peer
//! Every value read from the control block or a stamp is loaded once and checked against the
//! capacity held privately: a head more than `capacity` behind the tail, or a stamp that is
//! neither "published" nor "previous lap", is corruption, reported once and remembered.

use crate::layout::{self, Flavor, Geometry, SpscControl};
use crate::ring::SlotMemory;
use crate::sync::atomic::Ordering;

/// The stamp slot `position & mask` holds before the message for `position` is published: the
/// stamp of the previous lap.
#[inline(always)]
pub(crate) fn initial_stamp(position: u64, capacity: u64) -> u64 {
    position.wrapping_add(1).wrapping_sub(capacity)
}

/// The typed SPSC ring in a segment: [`SpscControl`] then stamped slots.
pub(crate) struct SpscFlavor;

impl Flavor for SpscFlavor {
    const ID: u32 = layout::FLAVOR_SPSC;

    fn geometry(
        capacity: u64,
        elem_size: u64,
        elem_align: u64,
        extra: u64,
    ) -> Result<Geometry, String> {
        if extra != 0 {
            return Err(format!("SPSC segments record no extra dimension, found {extra}"));
        }
        Geometry::new(capacity, elem_size, elem_align)
    }

    unsafe fn initialize(base: *mut u8, g: &Geometry, start: u64) {
        // SAFETY: the caller gives us the whole segment, unused by anyone else; the control
        // block lies at CONTROL_OFFSET (128-aligned) within it.
        unsafe {
            core::ptr::write(
                base.add(layout::CONTROL_OFFSET as usize).cast::<SpscControl>(),
                SpscControl::new(start),
            );
        }
        for k in 0..g.capacity {
            let position = start.wrapping_add(k);
            let index = position & g.mask();
            // SAFETY: index < capacity, so the stamp lies inside the slot array (validated
            // geometry), 8-aligned; it is written before anyone else can see the segment.
            let stamp: &crate::sync::atomic::AtomicU64 =
                unsafe { &*base.add((g.slots_offset + index * g.slot_stride) as usize).cast() };
            stamp.store(initial_stamp(position, g.capacity), Ordering::Relaxed);
        }
    }
}

/// A peer broke the protocol: the ring must not be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

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

/// The producer's private cursor.
#[derive(Debug)]
pub(crate) struct ProducerRing {
    /// Next position to write. Invariant: `tail - cached_head <= capacity` (wrapping).
    tail: u64,
    /// Last head seen; the consumer's head only moves forward, so this is a lower bound.
    cached_head: u64,
    capacity: u64,
    mask: u64,
}

impl ProducerRing {
    /// Takes over the producer side at the position the control block records. A previous
    /// producer that died between publishing a stamp and storing `tail` left `tail` one behind
    /// its last message: the stamp shows it, and we resume after it.
    pub(crate) fn attach<T: Copy, S: SlotMemory<T>>(
        ctl: &SpscControl,
        slots: &S,
        capacity: u64,
    ) -> Result<Self, Corrupt> {
        let mask = capacity - 1;
        // SYNC: Acquire pairs with the previous producer's tail store(Release) in `publish`.
        let mut tail = ctl.tail.0.load(Ordering::Acquire);
        // SYNC: Acquire pairs with the consumer's head store(Release) in `ConsumerRing::release`.
        let head = ctl.head.0.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > capacity {
            return Err(Corrupt);
        }
        // SYNC: Acquire pairs with the previous producer's stamp store(Release).
        if slots.stamp(tail & mask).load(Ordering::Acquire) == tail.wrapping_add(1) {
            tail = tail.wrapping_add(1);
            if tail.wrapping_sub(head) > capacity {
                return Err(Corrupt);
            }
        }
        ctl.tail.0.store(tail, Ordering::Release);
        Ok(ProducerRing { tail, cached_head: head, capacity, mask })
    }

    /// Free slots as far as the cached head tells (a lower bound).
    #[inline(always)]
    fn cached_free(&self) -> u64 {
        self.capacity - self.tail.wrapping_sub(self.cached_head)
    }

    /// Reloads the consumer's head; returns the free slot count, or corruption.
    #[inline(never)]
    fn refresh_head(&mut self, ctl: &SpscControl) -> Result<u64, Corrupt> {
        // SYNC: Acquire pairs with the consumer's head store(Release) in `ConsumerRing::release`,
        // so the consumer's copies out of the slots it released happen-before our next writes.
        let head = ctl.head.0.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        // The head may only move forward, never past the tail.
        if used > self.tail.wrapping_sub(self.cached_head) {
            return Err(Corrupt);
        }
        self.cached_head = head;
        Ok(self.capacity - used)
    }

    /// Free slots now (reloading the head if the cache says full).
    #[inline]
    pub(crate) fn free(&mut self, ctl: &SpscControl) -> Result<u64, Corrupt> {
        match self.cached_free() {
            0 => self.refresh_head(ctl),
            n => Ok(n),
        }
    }

    /// Writes `value` if there is room.
    #[inline(always)]
    pub(crate) fn push<T: Copy, S: SlotMemory<T>>(
        &mut self,
        ctl: &SpscControl,
        slots: &S,
        value: &T,
    ) -> Push {
        match self.free(ctl) {
            Ok(0) => return Push::Full,
            Ok(_) => {}
            Err(Corrupt) => return Push::Corrupt,
        }
        self.write(slots, value);
        self.publish(ctl);
        Push::Done
    }

    /// Writes as many of `values` as fit, publishing the tail once; returns how many.
    #[inline]
    pub(crate) fn push_slice<T: Copy, S: SlotMemory<T>>(
        &mut self,
        ctl: &SpscControl,
        slots: &S,
        values: &[T],
    ) -> Result<usize, Corrupt> {
        let mut free = self.cached_free();
        if (free as usize) < values.len() {
            free = self.refresh_head(ctl)?;
        }
        let n = values.len().min(free as usize);
        for value in &values[..n] {
            self.write(slots, value);
        }
        if n > 0 {
            self.publish(ctl);
        }
        Ok(n)
    }

    /// Copies `value` into the slot at `tail` and stamps it published. Requires a free slot.
    #[inline(always)]
    fn write<T: Copy, S: SlotMemory<T>>(&mut self, slots: &S, value: &T) {
        let pos = self.tail;
        let index = pos & self.mask;
        // SAFETY: index < capacity; the slot is free (pos - head < capacity), so the consumer
        // has finished with it and will not read it before the stamp below.
        unsafe { slots.write(index, value) };
        // SYNC: Release pairs with the consumer's stamp load(Acquire) in `ConsumerRing::pop`:
        // the payload copy above happens-before the consumer's copy out.
        slots.stamp(index).store(pos.wrapping_add(1), Ordering::Release);
        self.tail = pos.wrapping_add(1);
    }

    /// Records the tail in the control block, for a re-attaching producer and observers.
    #[inline(always)]
    fn publish(&self, ctl: &SpscControl) {
        // SYNC: Release pairs with the Acquire load in `attach` (and the consumer's attach).
        ctl.tail.0.store(self.tail, Ordering::Release);
    }

    pub(crate) fn position(&self) -> u64 {
        self.tail
    }
}

/// The consumer's private cursor.
#[derive(Debug)]
pub(crate) struct ConsumerRing {
    /// Next position to read.
    head: u64,
    capacity: u64,
    mask: u64,
}

impl ConsumerRing {
    /// Takes over the consumer side at the head the control block records.
    pub(crate) fn attach(ctl: &SpscControl, capacity: u64) -> Result<Self, Corrupt> {
        // SYNC: Acquire pairs with the previous consumer's head store(Release) in `release`.
        let head = ctl.head.0.load(Ordering::Acquire);
        // SYNC: Acquire pairs with the producer's tail store(Release) in `publish`.
        let tail = ctl.tail.0.load(Ordering::Acquire);
        // The tail may lag the last published stamp by one (producer died in between).
        let behind = tail.wrapping_sub(head);
        if behind > capacity && behind != u64::MAX {
            return Err(Corrupt);
        }
        Ok(ConsumerRing { head, capacity, mask: capacity - 1 })
    }

    /// Copies out the message at `head` if it is published. Does not release the slot: call
    /// [`release`](Self::release) after one or more pops.
    #[inline(always)]
    pub(crate) fn pop<T: Copy, S: SlotMemory<T>>(&mut self, slots: &S) -> Pop<T> {
        let pos = self.head;
        let index = pos & self.mask;
        // SYNC: Acquire pairs with the producer's stamp store(Release) in `ProducerRing::write`.
        let stamp = slots.stamp(index).load(Ordering::Acquire);
        if stamp == pos.wrapping_add(1) {
            // SAFETY: index < capacity; the stamp says the producer finished writing this slot,
            // and it will not write it again before we release it.
            let value = unsafe { slots.read(index) };
            self.head = pos.wrapping_add(1);
            Pop::Item(value)
        } else if stamp == initial_stamp(pos, self.capacity) {
            Pop::Empty
        } else {
            Pop::Corrupt
        }
    }

    /// Copies out up to `out.len()` published messages; returns how many, and whether a stamp
    /// was corrupt (the messages before it are valid). Does not release.
    ///
    /// The batch is bounded by the producer's published `tail`, read once, so the consumer
    /// never pulls in a slot line the producer is still filling: one line transfer per line of
    /// messages rather than per message. The producer stores `tail` (Release) after every stamp
    /// below it, so within the batch only the last stamp is checked, as a protocol check; the
    /// others cannot be stale unless the peer misbehaves, and then they only yield forged bytes,
    /// which `T: Pod` makes harmless. When `tail` shows nothing (or lags by one after a producer
    /// crash) a single slot is examined by its stamp, as `pop` does.
    #[inline]
    pub(crate) fn pop_many<T: Copy, S: SlotMemory<T>>(
        &mut self,
        ctl: &SpscControl,
        slots: &S,
        out: &mut [T],
    ) -> (usize, bool) {
        // SYNC: Acquire pairs with the producer's tail store(Release) in `publish`, which
        // follows the payloads and stamps of every message below it.
        let ready = ctl.tail.0.load(Ordering::Acquire).wrapping_sub(self.head);
        if !(1..=self.capacity).contains(&ready) || out.is_empty() {
            return match (out.first_mut(), self.pop(slots)) {
                (Some(slot), Pop::Item(value)) => {
                    *slot = value;
                    (1, false)
                }
                (_, Pop::Corrupt) => (0, true),
                _ => (0, false),
            };
        }
        let n = out.len().min(ready as usize);
        let last = self.head.wrapping_add(n as u64 - 1);
        // SYNC: Acquire pairs with the producer's stamp store(Release) (redundant with the tail
        // for an honest producer; here it checks the protocol).
        if slots.stamp(last & self.mask).load(Ordering::Acquire) != last.wrapping_add(1) {
            return (0, true);
        }
        for (k, slot) in out[..n].iter_mut().enumerate() {
            let index = self.head.wrapping_add(k as u64) & self.mask;
            // SAFETY: index < capacity; the position is below the published tail, so the
            // producer finished writing it and will not write it again before we release it.
            *slot = unsafe { slots.read(index) };
        }
        self.head = self.head.wrapping_add(n as u64);
        (n, false)
    }

    /// Hands every slot popped so far back to the producer.
    #[inline(always)]
    pub(crate) fn release(&self, ctl: &SpscControl) {
        // SYNC: Release pairs with the producer's head load(Acquire) in `refresh_head`: our
        // copies out of the released slots happen-before the producer overwrites them.
        ctl.head.0.store(self.head, Ordering::Release);
    }

    pub(crate) fn position(&self) -> u64 {
        self.head
    }
}

#[cfg(all(test, not(shmchan_loom)))]
mod tests {
    use super::*;
    use crate::ring::HeapSlots;

    fn ring(
        capacity: u64,
        start: u64,
    ) -> (SpscControl, HeapSlots<u64>, ProducerRing, ConsumerRing) {
        let ctl = SpscControl::new(start);
        let slots = HeapSlots::new(capacity, start);
        let p = ProducerRing::attach(&ctl, &slots, capacity).unwrap();
        let c = ConsumerRing::attach(&ctl, capacity).unwrap();
        (ctl, slots, p, c)
    }

    #[test]
    fn fifo_across_the_u64_wrap() {
        for start in [0, u64::MAX - 3, u64::MAX, u64::MAX - 100] {
            let (ctl, slots, mut p, mut c) = ring(4, start);
            let mut next_in = 0u64;
            let mut next_out = 0u64;
            for round in 0..200u64 {
                for _ in 0..(round % 5) {
                    match p.push(&ctl, &slots, &next_in) {
                        Push::Done => next_in += 1,
                        Push::Full => break,
                        Push::Corrupt => panic!("corrupt"),
                    }
                }
                for _ in 0..(round % 3 + 1) {
                    match c.pop(&slots) {
                        Pop::Item(v) => {
                            assert_eq!(v, next_out);
                            next_out += 1;
                        }
                        Pop::Empty => break,
                        Pop::Corrupt => panic!("corrupt"),
                    }
                    c.release(&ctl);
                }
            }
            assert!(next_out > 100, "start {start}");
            assert!(p.position().wrapping_sub(start) == next_in);
        }
    }

    #[test]
    fn full_and_empty_edges() {
        let (ctl, slots, mut p, mut c) = ring(2, u64::MAX - 1);
        assert_eq!(c.pop(&slots), Pop::Empty);
        assert_eq!(p.push(&ctl, &slots, &1), Push::Done);
        assert_eq!(p.push(&ctl, &slots, &2), Push::Done);
        assert_eq!(p.push(&ctl, &slots, &3), Push::Full);
        assert_eq!(c.pop(&slots), Pop::Item(1));
        // Not released yet: still full for the producer.
        assert_eq!(p.push(&ctl, &slots, &3), Push::Full);
        c.release(&ctl);
        assert_eq!(p.push(&ctl, &slots, &3), Push::Done);
        assert_eq!(c.pop(&slots), Pop::Item(2));
        assert_eq!(c.pop(&slots), Pop::Item(3));
        assert_eq!(c.pop(&slots), Pop::Empty);
    }

    #[test]
    fn slices_fill_to_capacity() {
        let (ctl, slots, mut p, mut c) = ring(8, 5);
        let data: Vec<u64> = (0..20).collect();
        assert_eq!(p.push_slice(&ctl, &slots, &data).unwrap(), 8);
        assert_eq!(p.push_slice(&ctl, &slots, &data).unwrap(), 0);
        for i in 0..3 {
            assert_eq!(c.pop(&slots), Pop::Item(i));
        }
        c.release(&ctl);
        assert_eq!(p.push_slice(&ctl, &slots, &data[8..]).unwrap(), 3);
    }

    #[test]
    fn a_forged_head_or_stamp_is_corruption() {
        let (ctl, slots, mut p, mut c) = ring(4, 0);
        ctl.head.0.store(100, Ordering::Relaxed);
        for v in 0..4 {
            assert_eq!(p.push(&ctl, &slots, &v), Push::Done);
        }
        assert_eq!(p.push(&ctl, &slots, &9), Push::Corrupt);
        SlotMemory::<u64>::stamp(&slots, 0).store(77, Ordering::Relaxed);
        assert_eq!(c.pop(&slots), Pop::<u64>::Corrupt);
    }

    #[test]
    fn a_reattaching_producer_resumes_after_its_predecessor() {
        let (ctl, slots, mut p, mut c) = ring(4, 10);
        assert_eq!(p.push(&ctl, &slots, &1), Push::Done);
        // Simulate a crash between the stamp store and the tail store of a second message.
        assert_eq!(p.push(&ctl, &slots, &2), Push::Done);
        ctl.tail.0.store(11, Ordering::Relaxed);
        let mut p2 = ProducerRing::attach(&ctl, &slots, 4).unwrap();
        assert_eq!(p2.position(), 12);
        assert_eq!(p2.push(&ctl, &slots, &3), Push::Done);
        assert_eq!(c.pop(&slots), Pop::Item(1));
        assert_eq!(c.pop(&slots), Pop::Item(2));
        assert_eq!(c.pop(&slots), Pop::Item(3));
    }

    #[test]
    fn batches_stop_at_the_published_tail_and_check_its_stamp() {
        let (ctl, slots, mut p, mut c) = ring(8, u64::MAX - 2);
        let mut out = [0u64; 8];
        assert_eq!(c.pop_many(&ctl, &slots, &mut out), (0, false));
        assert_eq!(p.push_slice(&ctl, &slots, &[1, 2, 3, 4, 5]).unwrap(), 5);
        assert_eq!(c.pop_many(&ctl, &slots, &mut out[..3]), (3, false));
        assert_eq!(out[..3], [1, 2, 3]);
        assert_eq!(c.pop_many(&ctl, &slots, &mut out), (2, false));
        assert_eq!(out[..2], [4, 5]);
        c.release(&ctl);
        // A tail that claims more than was stamped is a protocol violation.
        ctl.tail.0.store(c.position().wrapping_add(3), Ordering::Relaxed);
        assert_eq!(c.pop_many(&ctl, &slots, &mut out), (0, true));
    }

    /// Two threads through a tiny ring: under Miri this checks the Release/Acquire hand-over of
    /// every payload for data races, not only the order.
    #[test]
    fn two_threads_hand_over_every_slot() {
        let count: u64 = if cfg!(miri) { 200 } else { 100_000 };
        let ctl = SpscControl::new(u64::MAX - 50);
        let slots = HeapSlots::<u64>::new(4, u64::MAX - 50);
        let mut p = ProducerRing::attach(&ctl, &slots, 4).unwrap();
        let mut c = ConsumerRing::attach(&ctl, 4).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut v = 0;
                while v < count {
                    match p.push(&ctl, &slots, &v) {
                        Push::Done => v += 1,
                        Push::Full => std::thread::yield_now(),
                        Push::Corrupt => panic!("corrupt"),
                    }
                }
            });
            let mut next = 0;
            let mut batch = [0u64; 3];
            while next < count {
                let (n, corrupt) = c.pop_many(&ctl, &slots, &mut batch);
                assert!(!corrupt);
                for &v in &batch[..n] {
                    assert_eq!(v, next);
                    next += 1;
                }
                if n == 0 {
                    std::thread::yield_now();
                }
                c.release(&ctl);
            }
        });
    }

    /// The shared-memory slot accessor over an ordinary buffer: pointer arithmetic, alignment
    /// and the stamp/payload split stay inside the buffer (Miri checks every access).
    #[test]
    fn shared_slots_stay_inside_their_memory() {
        use crate::layout::Geometry;
        use crate::ring::SharedSlots;
        let g = Geometry::new(8, 24, 8).unwrap();
        let mut memory = vec![0u64; (g.capacity * g.slot_stride / 8) as usize];
        // SAFETY: `memory` holds capacity * stride bytes, 8-aligned, and outlives `slots`.
        let slots = unsafe { SharedSlots::new(memory.as_mut_ptr().cast(), &g) };
        for k in 0..8u64 {
            let p = 3 + k;
            SlotMemory::<[u64; 3]>::stamp(&slots, p & 7)
                .store(initial_stamp(p, 8), Ordering::Relaxed);
        }
        let ctl = SpscControl::new(3);
        let mut p = ProducerRing::attach::<[u64; 3], _>(&ctl, &slots, 8).unwrap();
        let mut c = ConsumerRing::attach(&ctl, 8).unwrap();
        for round in 0..20u64 {
            assert_eq!(p.push(&ctl, &slots, &[round, round + 1, round + 2]), Push::Done);
            assert_eq!(c.pop(&slots), Pop::Item([round, round + 1, round + 2]));
            c.release(&ctl);
        }
    }

    #[test]
    fn attach_rejects_impossible_positions() {
        let ctl = SpscControl::new(0);
        let slots = HeapSlots::<u64>::new(4, 0);
        ctl.tail.0.store(9, Ordering::Relaxed);
        assert!(ProducerRing::attach(&ctl, &slots, 4).is_err());
        assert!(ConsumerRing::attach(&ctl, 4).is_err());
    }
}
