//! The single-producer/single-consumer byte ring: variable-length records in one contiguous
//! data area, written and read in place through grants.
//!
//! # Layout
//! ```text
//! segment offset  size       contents
//! --------------  ---------  ------------------------------------------------------------
//!              0  128        Header (layout.rs): flavor FLAVOR_BYTES, capacity = data area
//!                            bytes, elem_size 1, elem_align 8, slot_stride 1,
//!                            extra = max_message, fingerprint BYTES_FINGERPRINT
//!            128  640        BytesControl: endpoints, tail, head, two futex words (one
//!                            128-byte line each, as the SPSC control block)
//!            768  capacity   data area (a power of two), records back to back
//!
//! Record at data offset `o` (8-aligned), position `p` (o = p & (capacity - 1)):
//!   o + 0   len    u32   payload length in bytes (DATA), or bytes after the header (PAD)
//!   o + 4   kind   u32   KIND_DATA = b"DATA" or KIND_PAD = b"PAD_"
//!   o + 8   payload       len bytes, then 0..=7 bytes to the next multiple of 8
//!
//!   ... | DATA len=5 | hello··· | DATA len=0 | PAD len=16 |...16 bytes...| <- end of area
//!   ^ 0 | DATA len=40 | 40 bytes of payload | ...            (the record that did not fit)
//! ```
//!
//! Positions are free-running `u64` byte counters, always multiples of 8; the data offset of a
//! position is `position & (capacity - 1)`. A record occupies `8 + round_up(len, 8)` bytes and is
//! always contiguous: when it does not fit before the end of the area, the producer first writes
//! a padding record covering exactly the rest of the area (at least 8 bytes, as every offset is
//! 8-aligned), and the record starts at offset 0.
//!
//! # Why `max_message` is at most half the area
//! The largest record, `8 + round_up(max_message, 8)` bytes, must fit in half the data area.
//! Padding is written only when a record of `r` bytes does not fit before the end, so the pad is
//! shorter than `r`, and pad plus record together take less than `2r <= capacity` bytes. So a
//! grant reserves its padding and its record *together*, in one check against the free space,
//! and that reservation always succeeds once the consumer has drained the ring. A refused grant
//! changes nothing in the ring; without the bound a grant near the end could need more than
//! the whole area and would have to publish its padding alone first, and wait.
//!
//! # Publish scheme: the tail, Release/Acquire
//! The producer writes the payload, the record header (and the padding header), then stores
//! `tail` (Release). The consumer loads `tail` (Acquire) and reads every record below it without
//! further synchronisation; it caches the tail and reloads it only when it has consumed
//! everything below the cached value, so a backlog of records costs one load of the producer's
//! line. The consumer releases a record by storing `head` (Release); the producer reads `head`
//! (Acquire) only when its cached copy says there is not enough room.
//!
//! The typed ring instead publishes with a stamp in each slot, so that a small message travels in
//! one cache line. That works there because a stamp word is always a stamp word: it holds either
//! this lap's or the previous lap's value. Here a header may land on bytes that were payload in
//! an earlier lap, which hold whatever the application wrote, possibly the very value a
//! position-derived stamp would take: an in-band stamp would be probabilistic, or would need
//! the consumer to clear every consumed byte. The tail is exact, costs one extra line transfer
//! per catch-up of the consumer (not per record of a backlog), and gives the consumer a hard bound
//! to validate every record against.
//!
//! # Memory ordering
//! - tail: producer `store(Release)` in `commit`, after the payload and header writes ↔ consumer
//!   `load(Acquire)` in `peek`; every byte below the tail happens-before the consumer's reads.
//! - head: consumer `store(Release)` in `release`, after its reads of the record ↔ producer
//!   `load(Acquire)` in `refresh_head`; the consumer's reads happen-before the producer's next
//!   writes into those bytes.
//! - Header words are accessed as atomics with `Relaxed` ordering in shared memory (the tail
//!   orders them); a header is loaded once and only the copy is used.
//!
//! # Untrusted peer
//! The capacity and `max_message` are private copies of the validated geometry. Every value the
//! peer can write is loaded once and checked: a tail that moves backwards, more than `capacity`
//! ahead of the head or not 8-aligned; a head that moves backwards or past the tail; a header of
//! unknown kind, a length above `max_message`, a record running past the end of the area or past
//! the published tail, a padding record that does not end exactly at the end of the area or is
//! longer than any honest padding. Any of these is corruption, reported once and remembered by
//! the handle. Payload bytes are only ever copied, never referenced, by safe code.

use crate::layout::{self, Flavor, Geometry, SpscControl};
use crate::sync::atomic::{AtomicU64, Ordering};

/// Bytes of a record header.
pub(crate) const RECORD_HEADER: u64 = 8;
/// Alignment of every record and position.
pub(crate) const RECORD_ALIGN: u64 = 8;
/// Records shorter than this get no write prefetch: the next ones land in the lines just
/// written, which the producer already owns.
const PREFETCH_MIN_RECORD: u64 = 256;
/// At most this many bytes are prefetched after a commit (a longer record is bound by copying).
const PREFETCH_MAX: u64 = 8192;
/// The line size the prefetch steps by.
const CACHE_LINE: u64 = 64;
/// Smallest data area: room for two empty records.
pub(crate) const MIN_CAPACITY: u64 = 16;
/// Largest data area (the header's length field is a `u32`, and `max_message` at most half).
pub(crate) const MAX_CAPACITY: u64 = layout::MAX_CAPACITY;
/// Header kind of a message record.
pub(crate) const KIND_DATA: u32 = u32::from_le_bytes(*b"DATA");
/// Header kind of a padding record (runs to the end of the data area).
pub(crate) const KIND_PAD: u32 = u32::from_le_bytes(*b"PAD_");
/// Length of the byte ring's control block.
/// The header's element size and alignment for a byte ring: bytes, in 8-aligned records.
pub(crate) const ELEM_SIZE: u64 = 1;
/// The type fingerprint a byte ring records: the record format, hashed.
pub(crate) const BYTES_FINGERPRINT: u64 = layout::fnv1a(
    b"shmchan byte ring: u32 len, u32 kind DATA/PAD_, payload padded to 8",
    0xcbf2_9ce4_8422_2325,
);

/// Bytes a record of `len` payload bytes occupies.
#[inline(always)]
pub(crate) const fn record_len(len: u64) -> u64 {
    RECORD_HEADER + ((len + RECORD_ALIGN - 1) & !(RECORD_ALIGN - 1))
}

/// The largest `max_message` a data area of `capacity` bytes allows.
pub(crate) const fn max_message_for(capacity: u64) -> u64 {
    capacity / 2 - RECORD_HEADER
}

#[inline(always)]
fn header(kind: u32, len: u64) -> u64 {
    len | (u64::from(kind) << 32)
}

/// The byte ring's control block is the SPSC one: endpoint words, `tail` (position after the
/// last published record; every byte below it is written), `head` (first record not yet
/// released) and the two futex words, on the same lines. Positions count bytes here.
pub(crate) type BytesControl = SpscControl;

/// The geometry of a byte ring with a data area of `capacity` bytes and records of at most
/// `max_message` payload bytes, or which input is out of range.
pub(crate) fn bytes_geometry(capacity: u64, max_message: u64) -> Result<Geometry, String> {
    if !capacity.is_power_of_two() || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&capacity) {
        return Err(format!(
            "capacity_bytes {capacity} is not a power of two in {MIN_CAPACITY}..=2^32"
        ));
    }
    if max_message > max_message_for(capacity) {
        return Err(format!(
            "max_message {max_message} exceeds {} for a data area of {capacity} bytes (a record \
             of header and padded payload may take at most half the area)",
            max_message_for(capacity)
        ));
    }
    let data_offset = layout::CONTROL_OFFSET + layout::CONTROL_LEN;
    let segment_len = (data_offset + capacity).next_multiple_of(layout::PAGE);
    Ok(Geometry {
        extra: max_message,
        capacity,
        elem_size: ELEM_SIZE,
        elem_align: RECORD_ALIGN,
        payload_offset: 0,
        slot_stride: 1,
        slots_offset: data_offset,
        segment_len,
    })
}

/// The byte ring in a segment: [`BytesControl`], then the data area.
pub(crate) struct BytesFlavor;

impl Flavor for BytesFlavor {
    const ID: u32 = layout::FLAVOR_BYTES;

    fn geometry(
        capacity: u64,
        elem_size: u64,
        elem_align: u64,
        extra: u64,
    ) -> Result<Geometry, String> {
        if elem_size != ELEM_SIZE || elem_align != RECORD_ALIGN {
            return Err(format!(
                "byte rings record element size 1 and alignment 8, found {elem_size}/{elem_align}"
            ));
        }
        bytes_geometry(capacity, extra)
    }

    unsafe fn initialize(base: *mut u8, _geometry: &Geometry, start: u64) {
        // SAFETY: the caller gives us the whole segment, unused by anyone else; the control
        // block lies at CONTROL_OFFSET (128-aligned) within it. The data area needs no
        // initial state: nothing in it is read before the tail covers it.
        unsafe {
            core::ptr::write(
                base.add(layout::CONTROL_OFFSET as usize).cast::<BytesControl>(),
                BytesControl::new(start),
            );
        }
    }
}

/// The data area of a byte ring.
///
/// # Safety
/// Implementations hold `capacity()` bytes, the start 8-aligned, valid while `self` lives.
pub(crate) unsafe trait DataMemory {
    /// Loads the 8-byte word at `offset` once (little endian).
    ///
    /// # Safety
    /// `offset` is 8-aligned and `offset + 8 <= capacity`; the ring protocol gives the caller
    /// the word (under the tail or inside its reservation).
    unsafe fn load_word(&self, offset: u64) -> u64;

    /// Stores the 8-byte word at `offset`.
    ///
    /// # Safety
    /// As [`load_word`](Self::load_word), and the caller owns the word for writing.
    unsafe fn store_word(&self, offset: u64, word: u64);

    /// Copies `src` to `offset..offset + src.len()`.
    ///
    /// # Safety
    /// The range lies within the area and inside the caller's reservation.
    unsafe fn write(&self, offset: u64, src: &[u8]);

    /// Copies `offset..offset + dst.len()` into `dst`.
    ///
    /// # Safety
    /// The range lies within the area and inside a record the caller owns for reading.
    unsafe fn read(&self, offset: u64, dst: &mut [u8]);

    /// Hints the CPU to take the cache lines of `offset..offset + len` (within the area) for
    /// writing. Reads and writes nothing; the default does nothing.
    #[inline(always)]
    fn prefetch_for_write(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}

/// The data area inside a mapped segment, reached only through raw pointers, atomics and byte
/// copies (as rust-vmm's `VolatileSlice`: a pointer and a length, never a reference).
///
/// Invariant: `base` points at `capacity` bytes of mapped memory, 8-aligned, that outlive this
/// value (the owning handle keeps the mapping); `capacity` is the private copy of the validated
/// geometry.
#[derive(Debug)]
pub(crate) struct SharedData {
    base: *mut u8,
    capacity: u64,
}

impl SharedData {
    /// # Safety
    /// `base` must satisfy the type invariant for `capacity` for as long as the value is used.
    pub(crate) unsafe fn new(base: *mut u8, capacity: u64) -> Self {
        SharedData { base, capacity }
    }

    /// Pointer to `offset` (`offset <= capacity`).
    #[inline(always)]
    pub(crate) fn ptr(&self, offset: u64) -> *mut u8 {
        assert!(offset <= self.capacity, "offset {offset} beyond the data area");
        // SAFETY: offset <= capacity: within (or one past) the area the invariant guarantees.
        unsafe { self.base.add(offset as usize) }
    }

    /// Sets `offset..offset + len` to `byte`.
    ///
    /// # Safety
    /// As [`DataMemory::write`].
    pub(crate) unsafe fn fill(&self, offset: u64, len: usize, byte: u8) {
        debug_assert!(offset + len as u64 <= self.capacity);
        // SAFETY: the range is inside the area (caller); raw writes form no reference.
        unsafe { core::ptr::write_bytes(self.ptr(offset), byte, len) };
    }
}

// SAFETY: the invariant on `SharedData` gives `capacity` bytes from an 8-aligned base.
unsafe impl DataMemory for SharedData {
    #[inline(always)]
    unsafe fn load_word(&self, offset: u64) -> u64 {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.capacity);
        // SAFETY: the word is 8-aligned inside the mapping (caller); an atomic load tolerates a
        // peer writing it concurrently and reads it exactly once.
        let word: &AtomicU64 = unsafe { &*self.ptr(offset).cast::<AtomicU64>() };
        u64::from_le(word.load(Ordering::Relaxed))
    }

    #[inline(always)]
    unsafe fn store_word(&self, offset: u64, value: u64) {
        debug_assert!(offset % 8 == 0 && offset + 8 <= self.capacity);
        // SAFETY: as in `load_word`.
        let word: &AtomicU64 = unsafe { &*self.ptr(offset).cast::<AtomicU64>() };
        word.store(value.to_le(), Ordering::Relaxed);
    }

    #[inline(always)]
    unsafe fn write(&self, offset: u64, src: &[u8]) {
        debug_assert!(offset + src.len() as u64 <= self.capacity);
        // SAFETY: the range is inside the area (caller); a raw byte copy forms no reference
        // into shared memory.
        unsafe { core::ptr::copy_nonoverlapping(src.as_ptr(), self.ptr(offset), src.len()) };
    }

    #[inline(always)]
    unsafe fn read(&self, offset: u64, dst: &mut [u8]) {
        debug_assert!(offset + dst.len() as u64 <= self.capacity);
        // SAFETY: as in `write`; the bytes land in private memory and are used from there.
        unsafe { core::ptr::copy_nonoverlapping(self.ptr(offset), dst.as_mut_ptr(), dst.len()) };
    }

    #[inline(always)]
    fn prefetch_for_write(&self, offset: u64, len: u64) {
        // Bounds checked once; a prefetch never dereferences, so the steps need no checks.
        let end = self.ptr(offset + len);
        let mut line = self.ptr(offset & !(CACHE_LINE - 1));
        while line < end {
            crate::sync::prefetch::for_write(line);
            line = line.wrapping_add(CACHE_LINE as usize);
        }
    }
}

/// A data area on the heap, for unit tests and loom models: one cell per 8-byte word (loom's
/// under loom, so a read racing a write of the same word fails the model).
#[cfg(any(test, shmchan_loom))]
pub(crate) struct HeapData {
    words: Vec<crate::sync::atomic::UnsafeCell<u64>>,
}

#[cfg(any(test, shmchan_loom))]
impl HeapData {
    pub(crate) fn new(capacity: u64) -> Self {
        assert!(capacity.is_power_of_two() && capacity >= MIN_CAPACITY);
        let words = (0..capacity / 8).map(|_| crate::sync::atomic::UnsafeCell::new(0u64)).collect();
        HeapData { words }
    }

    /// Overwrites a word as a misbehaving peer would (tests only).
    #[cfg(test)]
    pub(crate) fn forge_word(&self, offset: u64, value: u64) {
        // SAFETY: single-threaded tests; the index is bounds-checked by the Vec.
        self.words[(offset / 8) as usize].with_mut(|p| unsafe { *p = value });
    }
}

// SAFETY: `capacity / 8` words owned by the Vec for the life of the value.
#[cfg(any(test, shmchan_loom))]
unsafe impl DataMemory for HeapData {
    unsafe fn load_word(&self, offset: u64) -> u64 {
        // SAFETY: the ring protocol gives the caller this word now.
        self.words[(offset / 8) as usize].with(|p| unsafe { *p })
    }

    unsafe fn store_word(&self, offset: u64, value: u64) {
        // SAFETY: the ring protocol gives the caller this word now.
        self.words[(offset / 8) as usize].with_mut(|p| unsafe { *p = value });
    }

    unsafe fn write(&self, offset: u64, src: &[u8]) {
        for (k, &b) in src.iter().enumerate() {
            let at = offset + k as u64;
            let cell = &self.words[(at / 8) as usize];
            let shift = (at % 8) * 8;
            // SAFETY: the ring protocol gives the producer these words now.
            cell.with_mut(|p| unsafe { *p = (*p & !(0xff << shift)) | (u64::from(b) << shift) });
        }
    }

    unsafe fn read(&self, offset: u64, dst: &mut [u8]) {
        for (k, b) in dst.iter_mut().enumerate() {
            let at = offset + k as u64;
            // SAFETY: the ring protocol gives the consumer these words now.
            let word = self.words[(at / 8) as usize].with(|p| unsafe { *p });
            *b = (word >> ((at % 8) * 8)) as u8;
        }
    }
}

// SAFETY: words are only accessed by the side the ring protocol hands them to, ordered by the
// tail's and head's Release/Acquire pairs.
#[cfg(any(test, shmchan_loom))]
unsafe impl Sync for HeapData {}

/// A peer broke the protocol: the ring must not be used again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// Why a reservation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not enough room now.
    Full,
    /// More than `max_message` bytes.
    TooLarge,
    /// The consumer's head is inconsistent.
    Corrupt,
}

/// Room for one record of up to `max_len` payload bytes, not yet published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reservation {
    /// The producer's tail when it was made (a reservation is valid until the next commit).
    position: u64,
    /// Padding bytes before the record (0, or the rest of the area up to its end).
    pad: u64,
    /// Data offset of the payload.
    pub(crate) payload_offset: u64,
    /// Largest payload this reservation holds.
    pub(crate) max_len: u64,
}

/// The producer's private cursor.
#[derive(Debug)]
pub(crate) struct ProducerRing {
    /// Next position to write. Invariant: `tail - cached_head <= capacity`, both multiples of 8.
    tail: u64,
    /// Last head seen: a lower bound of the consumer's head.
    cached_head: u64,
    capacity: u64,
    max_message: u64,
}

impl ProducerRing {
    /// Takes over the producer side at the positions the control block records.
    pub(crate) fn attach(
        ctl: &BytesControl,
        capacity: u64,
        max_message: u64,
    ) -> Result<Self, Corrupt> {
        // SYNC: Acquire pairs with the previous producer's tail store(Release) in `commit`.
        let tail = ctl.tail.0.load(Ordering::Acquire);
        // SYNC: Acquire pairs with the consumer's head store(Release) in `release`.
        let head = ctl.head.0.load(Ordering::Acquire);
        if tail % RECORD_ALIGN != 0 || head % RECORD_ALIGN != 0 {
            return Err(Corrupt);
        }
        if tail.wrapping_sub(head) > capacity {
            return Err(Corrupt);
        }
        Ok(ProducerRing { tail, cached_head: head, capacity, max_message })
    }

    /// Reloads the consumer's head; returns the free byte count, or corruption.
    #[inline(never)]
    fn refresh_head(&mut self, ctl: &BytesControl) -> Result<u64, Corrupt> {
        // SYNC: Acquire pairs with the consumer's head store(Release) in `release`: its reads
        // of the released records happen-before our next writes into them.
        let head = ctl.head.0.load(Ordering::Acquire);
        let used = self.tail.wrapping_sub(head);
        // The head only moves forward, never past the tail, in steps of whole records.
        if used > self.tail.wrapping_sub(self.cached_head) || head % RECORD_ALIGN != 0 {
            return Err(Corrupt);
        }
        self.cached_head = head;
        Ok(self.capacity - used)
    }

    /// Reserves room for a record of up to `len` payload bytes, with the padding it needs.
    /// Changes nothing in shared memory: dropping the reservation abandons it.
    #[inline]
    pub(crate) fn reserve(&mut self, ctl: &BytesControl, len: u64) -> Result<Reservation, Refused> {
        if len > self.max_message {
            return Err(Refused::TooLarge);
        }
        let rec = record_len(len);
        let offset = self.tail & (self.capacity - 1);
        let to_end = self.capacity - offset;
        let pad = if rec <= to_end { 0 } else { to_end };
        let need = pad + rec;
        let mut free = self.capacity - self.tail.wrapping_sub(self.cached_head);
        if free < need {
            free = self.refresh_head(ctl).map_err(|Corrupt| Refused::Corrupt)?;
            if free < need {
                return Err(Refused::Full);
            }
        }
        let record_offset = if pad == 0 { offset } else { 0 };
        Ok(Reservation {
            position: self.tail,
            pad,
            payload_offset: record_offset + RECORD_HEADER,
            max_len: len,
        })
    }

    /// Publishes the record of `len <= reservation.max_len` payload bytes, which the caller has
    /// written at `reservation.payload_offset`, with its padding.
    ///
    /// # Panics
    /// If `len` exceeds the reservation, or the reservation is stale (made before another
    /// commit): both are bugs of the caller, not of the peer.
    #[inline]
    pub(crate) fn commit<D: DataMemory>(
        &mut self,
        ctl: &BytesControl,
        data: &D,
        reservation: &Reservation,
        len: u64,
    ) {
        assert!(len <= reservation.max_len, "commit of {len} bytes exceeds the grant");
        assert_eq!(reservation.position, self.tail, "stale reservation");
        let r = reservation;
        if r.pad > 0 {
            let offset = self.tail & (self.capacity - 1);
            // SAFETY: the padding header lies at the tail, 8-aligned, inside the reserved room
            // (pad >= 8 because every offset is a multiple of 8).
            unsafe { data.store_word(offset, header(KIND_PAD, r.pad - RECORD_HEADER)) };
        }
        // SAFETY: the record header lies just before the payload, inside the reserved room.
        unsafe { data.store_word(r.payload_offset - RECORD_HEADER, header(KIND_DATA, len)) };
        let rec = record_len(len);
        self.tail = self.tail.wrapping_add(r.pad + rec);
        // SYNC: Release pairs with the consumer's tail load(Acquire) in `available`: the payload
        // and headers written above happen-before the consumer reads them.
        ctl.tail.0.store(self.tail, Ordering::Release);
        if rec >= PREFETCH_MIN_RECORD {
            self.prefetch_next(data, rec);
        }
    }

    /// Asks for the lines the next record will likely take (as long as this one: `rec` bytes
    /// from the tail, at most [`PREFETCH_MAX`]) for writing, ahead of the copy into them.
    ///
    /// The consumer's reads (and its hardware prefetcher) left many of those lines shared in
    /// its cache a lap ago. A store to such a line waits in the store buffer for the other copy
    /// to be invalidated, a cross-core round trip, and stores drain in order, so a copy into a
    /// dozen such lines stalls for a dozen round trips; prefetched, the invalidations overlap.
    /// (4 KiB zero-copy records between two processes: 17.5 GB/s without, 27 with, on the
    /// 2-core VM of BENCHMARKS.md.) Only free room is touched, never a line of a record the
    /// consumer may still be reading.
    #[inline]
    fn prefetch_next<D: DataMemory>(&self, data: &D, rec: u64) {
        let len = rec.min(PREFETCH_MAX).min(self.cached_free());
        let offset = self.tail & (self.capacity - 1);
        // The end of the area splits the range in two.
        let first = len.min(self.capacity - offset);
        data.prefetch_for_write(offset, first);
        if len > first {
            data.prefetch_for_write(0, len - first);
        }
    }

    /// Bytes free as far as the cached head tells (a lower bound).
    pub(crate) fn cached_free(&self) -> u64 {
        self.capacity - self.tail.wrapping_sub(self.cached_head)
    }

    pub(crate) fn position(&self) -> u64 {
        self.tail
    }
}

/// A published record, validated, not yet released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    /// Data offset of the payload.
    pub(crate) payload_offset: u64,
    /// Payload length (at most `max_message`; the payload lies within the area).
    pub(crate) len: u64,
    /// Position after the record: the head once it is released.
    next: u64,
}

/// The consumer's private cursor.
#[derive(Debug)]
pub(crate) struct ConsumerRing {
    /// First position not released. Invariant: a multiple of 8, `cached_tail - head <= capacity`.
    head: u64,
    /// Last tail seen: every byte below it is published.
    cached_tail: u64,
    capacity: u64,
    max_message: u64,
}

impl ConsumerRing {
    /// Takes over the consumer side at the head the control block records.
    pub(crate) fn attach(
        ctl: &BytesControl,
        capacity: u64,
        max_message: u64,
    ) -> Result<Self, Corrupt> {
        // SYNC: Acquire pairs with the previous consumer's head store(Release) in `release`.
        let head = ctl.head.0.load(Ordering::Acquire);
        // SYNC: Acquire pairs with the producer's tail store(Release) in `commit`.
        let tail = ctl.tail.0.load(Ordering::Acquire);
        if head % RECORD_ALIGN != 0 || tail % RECORD_ALIGN != 0 {
            return Err(Corrupt);
        }
        if tail.wrapping_sub(head) > capacity {
            return Err(Corrupt);
        }
        Ok(ConsumerRing { head, cached_tail: head, capacity, max_message })
    }

    /// Published bytes from `pos` (`head <= pos <= cached_tail`), reloading the tail when the
    /// cached one is used up.
    #[inline(always)]
    fn available(&mut self, ctl: &BytesControl, pos: u64) -> Result<u64, Corrupt> {
        let ahead = self.cached_tail.wrapping_sub(pos);
        if ahead != 0 {
            return Ok(ahead);
        }
        // SYNC: Acquire pairs with the producer's tail store(Release) in `commit`: every record
        // below the tail is fully written before we read it.
        let tail = ctl.tail.0.load(Ordering::Acquire);
        let published = tail.wrapping_sub(self.head);
        // The tail only moves forward, by whole records, at most a lap ahead of the head.
        if published > self.capacity
            || published < self.cached_tail.wrapping_sub(self.head)
            || tail % RECORD_ALIGN != 0
        {
            return Err(Corrupt);
        }
        self.cached_tail = tail;
        Ok(tail.wrapping_sub(pos))
    }

    /// The next published record, skipping a padding record before it; `None` when nothing is
    /// published. Does not release it: call [`release`](Self::release).
    #[inline]
    pub(crate) fn peek<D: DataMemory>(
        &mut self,
        ctl: &BytesControl,
        data: &D,
    ) -> Result<Option<Record>, Corrupt> {
        let mask = self.capacity - 1;
        let mut pos = self.head;
        // At most a padding record, then a message record.
        for _ in 0..2 {
            let avail = self.available(ctl, pos)?;
            if avail == 0 {
                // A padding record is always published together with the record after it.
                return if pos == self.head { Ok(None) } else { Err(Corrupt) };
            }
            let offset = pos & mask;
            // SAFETY: offset is 8-aligned (positions are) and offset + 8 <= capacity (offset is
            // a multiple of 8 below a capacity that is a multiple of 8); avail >= 8 (multiples
            // of 8), so the word lies below the published tail.
            let word = unsafe { data.load_word(offset) };
            let (len, kind) = (word & 0xffff_ffff, (word >> 32) as u32);
            match kind {
                KIND_DATA => {
                    let rec = record_len(len);
                    if len > self.max_message || rec > avail || offset + rec > self.capacity {
                        return Err(Corrupt);
                    }
                    return Ok(Some(Record {
                        payload_offset: offset + RECORD_HEADER,
                        len,
                        next: pos.wrapping_add(rec),
                    }));
                }
                KIND_PAD if pos == self.head => {
                    let total = RECORD_HEADER + len;
                    // Honest padding runs exactly to the end of the area and is shorter than
                    // the record that did not fit there.
                    if offset + total != self.capacity
                        || total > avail
                        || total >= record_len(self.max_message)
                    {
                        return Err(Corrupt);
                    }
                    pos = pos.wrapping_add(total);
                }
                _ => return Err(Corrupt),
            }
        }
        Err(Corrupt)
    }

    /// Hands `record` (the one [`peek`](Self::peek) returned last) and any padding before it
    /// back to the producer.
    #[inline]
    pub(crate) fn release(&mut self, ctl: &BytesControl, record: &Record) {
        self.head = record.next;
        // SYNC: Release pairs with the producer's head load(Acquire) in `refresh_head`: our
        // reads of the record happen-before the producer overwrites it.
        ctl.head.0.store(self.head, Ordering::Release);
    }

    pub(crate) fn position(&self) -> u64 {
        self.head
    }
}

#[cfg(all(test, not(shmchan_loom)))]
mod tests {
    use super::*;

    struct Ring {
        ctl: BytesControl,
        data: HeapData,
        p: ProducerRing,
        c: ConsumerRing,
    }

    fn ring(capacity: u64, max_message: u64, start: u64) -> Ring {
        let ctl = BytesControl::new(start);
        let data = HeapData::new(capacity);
        let p = ProducerRing::attach(&ctl, capacity, max_message).unwrap();
        let c = ConsumerRing::attach(&ctl, capacity, max_message).unwrap();
        Ring { ctl, data, p, c }
    }

    impl Ring {
        fn send(&mut self, msg: &[u8]) -> Result<(), Refused> {
            let r = self.p.reserve(&self.ctl, msg.len() as u64)?;
            // SAFETY: inside the reservation.
            unsafe { self.data.write(r.payload_offset, msg) };
            self.p.commit(&self.ctl, &self.data, &r, msg.len() as u64);
            Ok(())
        }

        fn recv(&mut self) -> Result<Option<Vec<u8>>, Corrupt> {
            let Some(rec) = self.c.peek(&self.ctl, &self.data)? else { return Ok(None) };
            let mut out = vec![0; rec.len as usize];
            // SAFETY: inside a published record.
            unsafe { self.data.read(rec.payload_offset, &mut out) };
            self.c.release(&self.ctl, &rec);
            Ok(Some(out))
        }
    }

    fn message(seq: u64, len: usize) -> Vec<u8> {
        (0..len).map(|k| (seq as u8).wrapping_mul(31).wrapping_add(k as u8)).collect()
    }

    #[test]
    fn geometry_bounds_and_the_half_rule() {
        assert!(bytes_geometry(64, 24).is_ok());
        assert!(bytes_geometry(64, 25).is_err(), "record of 40 bytes > half of 64");
        assert!(bytes_geometry(48, 8).is_err());
        assert!(bytes_geometry(8, 0).is_err());
        assert!(bytes_geometry(1 << 33, 8).is_err());
        let g = bytes_geometry(4096, 100).unwrap();
        assert_eq!(g.slots_offset, 768);
        assert_eq!(g.segment_len, 8192);
        assert_eq!(g.extra, 100);
        assert!(BytesFlavor::geometry(4096, 1, 8, 100).is_ok());
        assert!(BytesFlavor::geometry(4096, 8, 8, 100).is_err());
    }

    #[test]
    fn fifo_with_wrap_and_padding_from_every_start() {
        for start in [0, 8, 40, u64::MAX - 7, u64::MAX - 63, (1 << 32) - 24] {
            let mut r = ring(64, 24, start);
            let (mut sent, mut got) = (0u64, 0u64);
            for round in 0..400u64 {
                let len = ((sent * 7) % 25) as usize;
                if r.send(&message(sent, len)).is_ok() {
                    sent += 1;
                }
                if round % 3 != 0 {
                    if let Some(m) = r.recv().unwrap() {
                        assert_eq!(m, message(got, (got * 7 % 25) as usize));
                        got += 1;
                    }
                }
            }
            while r.recv().unwrap().is_some() {
                got += 1;
            }
            assert!(got > 100, "start {start}: only {got}");
            assert_eq!(got, sent);
            assert_eq!(r.p.position(), r.c.position());
        }
    }

    #[test]
    fn padding_is_written_only_when_a_record_does_not_fit() {
        let mut r = ring(64, 24, 0);
        r.send(&[1; 24]).unwrap(); // 32 bytes at 0
        r.send(&[2; 8]).unwrap(); // 16 bytes at 32
        assert_eq!(r.p.position(), 48);
        assert_eq!(r.recv().unwrap().unwrap(), vec![1; 24]);
        // 16 bytes left before the end: a 24-byte message (32 bytes) needs 16 of padding.
        r.send(&[3; 24]).unwrap();
        assert_eq!(r.p.position(), 48 + 16 + 32);
        // SAFETY: reading back the padding header the producer wrote at offset 48.
        let pad = unsafe { r.data.load_word(48) };
        assert_eq!(pad, header(KIND_PAD, 8));
        assert_eq!(r.recv().unwrap().unwrap(), vec![2; 8]);
        assert_eq!(r.recv().unwrap().unwrap(), vec![3; 24]);
        assert_eq!(r.c.position(), 96);
        // An exact fit at the end needs no padding.
        let mut r = ring(64, 24, 32);
        r.send(&[4; 24]).unwrap();
        assert_eq!(r.p.position(), 64);
    }

    #[test]
    fn full_counts_padding_and_a_refusal_changes_nothing() {
        let mut r = ring(64, 24, 0);
        r.send(&[1; 24]).unwrap();
        r.send(&[2; 16]).unwrap(); // 24 bytes at 32: 8 left
        assert_eq!(r.p.reserve(&r.ctl, 8), Err(Refused::Full));
        assert_eq!(r.p.reserve(&r.ctl, 0).map(|x| x.pad), Ok(0));
        assert_eq!(r.p.reserve(&r.ctl, 25), Err(Refused::TooLarge));
        assert_eq!(r.ctl.tail.0.load(Ordering::Relaxed), 56);
        // Free the first record: 32 bytes at the start, but the 8 at the end must be padded.
        assert_eq!(r.recv().unwrap().unwrap(), vec![1; 24]);
        let res = r.p.reserve(&r.ctl, 24).unwrap();
        assert_eq!((res.pad, res.payload_offset), (8, 8));
        assert_eq!(r.p.reserve(&r.ctl, 24), Ok(res), "reserving twice is idempotent");
        assert_eq!(r.recv().unwrap().unwrap(), vec![2; 16]);
        assert_eq!(r.recv().unwrap(), None);
    }

    #[test]
    fn partial_commit_publishes_fewer_bytes() {
        let mut r = ring(64, 24, 0);
        let res = r.p.reserve(&r.ctl, 24).unwrap();
        // SAFETY: inside the reservation.
        unsafe { r.data.write(res.payload_offset, b"abc") };
        r.p.commit(&r.ctl, &r.data, &res, 3);
        assert_eq!(r.p.position(), 16);
        assert_eq!(r.recv().unwrap().unwrap(), b"abc");
        // A zero-length commit is a record too.
        let res = r.p.reserve(&r.ctl, 24).unwrap();
        r.p.commit(&r.ctl, &r.data, &res, 0);
        assert_eq!(r.recv().unwrap().unwrap(), b"");
        assert_eq!(r.recv().unwrap(), None);
    }

    #[test]
    #[should_panic(expected = "exceeds the grant")]
    fn committing_more_than_reserved_panics() {
        let mut r = ring(64, 24, 0);
        let res = r.p.reserve(&r.ctl, 4).unwrap();
        r.p.commit(&r.ctl, &r.data, &res, 5);
    }

    #[test]
    fn positions_cross_u64_max() {
        let start = u64::MAX - 15; // 16 bytes before the wrap of the position counter
        let mut r = ring(32, 8, start);
        for seq in 0..50u64 {
            let m = message(seq, (seq % 9) as usize);
            r.send(&m).unwrap();
            assert_eq!(r.recv().unwrap().unwrap(), m);
        }
        assert!(r.p.position() < 1000, "wrapped: {}", r.p.position());
    }

    #[test]
    fn forged_values_are_corruption() {
        // A length beyond max_message.
        let mut r = ring(64, 24, 0);
        r.send(&[1; 4]).unwrap();
        r.data.forge_word(0, header(KIND_DATA, 25));
        assert_eq!(r.recv(), Err(Corrupt));
        // A record running past the published tail.
        let mut r = ring(64, 24, 0);
        r.send(&[1; 4]).unwrap();
        r.data.forge_word(0, header(KIND_DATA, 20));
        assert_eq!(r.recv(), Err(Corrupt));
        // An unknown kind.
        let mut r = ring(64, 24, 0);
        r.send(&[1; 4]).unwrap();
        r.data.forge_word(0, 4);
        assert_eq!(r.recv(), Err(Corrupt));
        // Padding that does not end at the end of the area, or is longer than honest padding.
        for pad_len in [8, 48, 56] {
            let mut r = ring(64, 24, 0);
            r.send(&[1; 4]).unwrap();
            r.ctl.tail.0.store(64, Ordering::Relaxed);
            r.data.forge_word(0, header(KIND_PAD, pad_len));
            assert_eq!(r.recv(), Err(Corrupt), "pad {pad_len}");
        }
        // A tail more than a lap ahead, misaligned, or moving backwards.
        for tail in [65, 12, 200] {
            let mut r = ring(64, 24, 0);
            r.ctl.tail.0.store(tail, Ordering::Relaxed);
            assert_eq!(r.recv(), Err(Corrupt), "tail {tail}");
        }
        let mut r = ring(64, 24, 0);
        r.send(&[1; 4]).unwrap();
        r.send(&[1; 4]).unwrap();
        assert!(r.recv().unwrap().is_some());
        r.ctl.tail.0.store(8, Ordering::Relaxed);
        assert!(r.recv().unwrap().is_some(), "the cached tail still covers it");
        assert_eq!(r.recv(), Err(Corrupt), "a tail behind the cached one");
        // A head moving backwards or past the tail, seen by the producer.
        let mut r = ring(32, 8, 0);
        r.send(&[1; 8]).unwrap();
        r.send(&[1; 8]).unwrap();
        r.ctl.head.0.store(40, Ordering::Relaxed);
        assert_eq!(r.send(&[1; 8]), Err(Refused::Corrupt));
    }

    #[test]
    fn attach_rejects_impossible_positions() {
        for (head, tail) in [(0, 72), (4, 4), (0, 12)] {
            let ctl = BytesControl::new(0);
            ctl.head.0.store(head, Ordering::Relaxed);
            ctl.tail.0.store(tail, Ordering::Relaxed);
            assert!(ProducerRing::attach(&ctl, 64, 24).is_err(), "{head}/{tail}");
            assert!(ConsumerRing::attach(&ctl, 64, 24).is_err(), "{head}/{tail}");
        }
    }

    /// A data area that records the producer's prefetch hints.
    struct Hints {
        data: HeapData,
        ranges: std::cell::RefCell<Vec<(u64, u64)>>,
    }

    // SAFETY: delegates to `HeapData`.
    unsafe impl DataMemory for Hints {
        unsafe fn load_word(&self, offset: u64) -> u64 {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.data.load_word(offset) }
        }
        unsafe fn store_word(&self, offset: u64, word: u64) {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.data.store_word(offset, word) }
        }
        unsafe fn write(&self, offset: u64, src: &[u8]) {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.data.write(offset, src) }
        }
        unsafe fn read(&self, offset: u64, dst: &mut [u8]) {
            // SAFETY: the caller's contract, passed on.
            unsafe { self.data.read(offset, dst) }
        }
        fn prefetch_for_write(&self, offset: u64, len: u64) {
            self.ranges.borrow_mut().push((offset, len));
        }
    }

    #[test]
    fn prefetch_hints_cover_only_free_room_after_long_records() {
        let capacity = 4096;
        let ctl = BytesControl::new(0);
        let data = Hints { data: HeapData::new(capacity), ranges: Default::default() };
        let mut p = ProducerRing::attach(&ctl, capacity, 1024).unwrap();
        let mut c = ConsumerRing::attach(&ctl, capacity, 1024).unwrap();
        // Sends a record of `len` bytes; returns the hints it gave.
        let send = |p: &mut ProducerRing, len: u64| {
            let r = p.reserve(&ctl, len).unwrap();
            p.commit(&ctl, &data, &r, len);
            data.ranges.borrow_mut().drain(..).filter(|&(_, n)| n > 0).collect::<Vec<_>>()
        };
        assert_eq!(send(&mut p, 100), [], "short records get no hint");
        let (mut wrapped, mut cut) = (false, false);
        for round in 0..40 {
            if round % 3 == 0 {
                // Release one record, so the head moves and the area wraps.
                if let Some(rec) = c.peek(&ctl, &data.data).unwrap() {
                    c.release(&ctl, &rec);
                }
            }
            if p.reserve(&ctl, 1000).is_err() {
                continue;
            }
            let hints = send(&mut p, 1000);
            // From the new tail on, as long as the record, never past the free room.
            let want = 1008.min(p.cached_free());
            assert_eq!(hints.iter().map(|&(_, n)| n).sum::<u64>(), want, "{hints:?}");
            cut |= want < 1008;
            if want > 0 {
                assert_eq!(hints[0].0, p.position() % capacity, "{hints:?}");
            }
            if let [_, second] = hints[..] {
                assert_eq!(second.0, 0, "the rest continues at the start: {hints:?}");
                wrapped = true;
            }
            assert!(hints.iter().all(|&(o, n)| o + n <= capacity), "{hints:?}");
        }
        assert!(wrapped && cut, "wrapped {wrapped}, stopped at the head {cut}");
    }

    /// Two threads through a small ring: under Miri this checks the Release/Acquire hand-over
    /// of every byte for data races, not only the order.
    #[test]
    fn two_threads_hand_over_every_record() {
        let count: u64 = if cfg!(miri) { 100 } else { 50_000 };
        let ctl = BytesControl::new(u64::MAX - 255);
        let data = HeapData::new(128);
        let mut p = ProducerRing::attach(&ctl, 128, 56).unwrap();
        let mut c = ConsumerRing::attach(&ctl, 128, 56).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut seq = 0;
                while seq < count {
                    let m = message(seq, (seq % 57) as usize);
                    match p.reserve(&ctl, m.len() as u64) {
                        Ok(r) => {
                            // SAFETY: inside the reservation.
                            unsafe { data.write(r.payload_offset, &m) };
                            p.commit(&ctl, &data, &r, m.len() as u64);
                            seq += 1;
                        }
                        Err(Refused::Full) => std::thread::yield_now(),
                        Err(e) => panic!("{e:?}"),
                    }
                }
            });
            let mut seq = 0;
            while seq < count {
                match c.peek(&ctl, &data).unwrap() {
                    Some(rec) => {
                        let mut out = vec![0; rec.len as usize];
                        // SAFETY: inside a published record.
                        unsafe { data.read(rec.payload_offset, &mut out) };
                        c.release(&ctl, &rec);
                        assert_eq!(out, message(seq, (seq % 57) as usize));
                        seq += 1;
                    }
                    None => std::thread::yield_now(),
                }
            }
        });
    }

    /// The shared-memory accessor over an ordinary buffer: words and byte copies stay inside
    /// the buffer (Miri checks every access).
    #[test]
    fn shared_data_stays_inside_its_memory() {
        let mut memory = vec![0u64; 8];
        // SAFETY: `memory` holds 64 bytes, 8-aligned, and outlives `data`.
        let data = unsafe { SharedData::new(memory.as_mut_ptr().cast(), 64) };
        let ctl = BytesControl::new(0);
        let mut p = ProducerRing::attach(&ctl, 64, 24).unwrap();
        let mut c = ConsumerRing::attach(&ctl, 64, 24).unwrap();
        for seq in 0..40u64 {
            let m = message(seq, (seq % 25) as usize);
            let r = p.reserve(&ctl, m.len() as u64).unwrap();
            // SAFETY: inside the reservation.
            unsafe { data.write(r.payload_offset, &m) };
            p.commit(&ctl, &data, &r, m.len() as u64);
            let rec = c.peek(&ctl, &data).unwrap().unwrap();
            let mut out = vec![0; rec.len as usize];
            // SAFETY: inside a published record.
            unsafe { data.read(rec.payload_offset, &mut out) };
            c.release(&ctl, &rec);
            assert_eq!(out, m);
        }
    }
}
