//! Ring algorithms: pure logic over a control block and slot memory.
//!
//! Nothing here makes a system call or knows where its memory lives: the same code runs over a
//! mapped segment ([`SharedSlots`]) and over heap memory ([`HeapSlots`]), so loom and Miri can
//! check it.

pub(crate) mod bytes;
pub(crate) mod mpmc;
pub(crate) mod spsc;

use crate::layout::Geometry;
use crate::sync::atomic::AtomicU64;

/// Slot storage of a typed ring: a stamp word and a `T`-sized payload per slot.
///
/// # Safety
/// Implementations must return, for every `index < capacity`, a stamp reference and payload
/// pointer that stay valid while `self` lives, with no two indices overlapping.
pub(crate) unsafe trait SlotMemory<T: Copy> {
    /// The publication stamp of slot `index` (`index < capacity`).
    fn stamp(&self, index: u64) -> &AtomicU64;

    /// Copies `value` into the payload of slot `index`.
    ///
    /// # Safety
    /// `index < capacity`, and the caller owns the slot for writing (the ring protocol).
    unsafe fn write(&self, index: u64, value: &T);

    /// Copies the payload of slot `index` out.
    ///
    /// # Safety
    /// `index < capacity`, and the caller owns the slot for reading (the ring protocol). When
    /// the memory is shared with an untrusted peer the bytes may be anything: `T` must be valid
    /// for every bit pattern (`bytemuck::Pod`).
    unsafe fn read(&self, index: u64) -> T;
}

/// Slots inside a mapped segment, addressed only through raw pointers and atomics.
///
/// Invariant: `base` points at `capacity * stride` bytes of mapped memory, aligned to
/// `max(8, align_of::<T>())`, that outlive this value (the owning handle keeps the mapping);
/// `payload_offset + size_of::<T>() <= stride`; `capacity` and `stride` are private copies of the
/// geometry validated at open, never re-read from the segment.
pub(crate) struct SharedSlots {
    base: *mut u8,
    stride: usize,
    payload_offset: usize,
    capacity: u64,
}

impl SharedSlots {
    /// # Safety
    /// `base` must satisfy the type invariant for `geometry` for as long as the value is used.
    pub(crate) unsafe fn new(base: *mut u8, geometry: &Geometry) -> Self {
        SharedSlots {
            base,
            stride: geometry.slot_stride as usize,
            payload_offset: geometry.payload_offset as usize,
            capacity: geometry.capacity,
        }
    }

    #[inline(always)]
    fn slot(&self, index: u64) -> *mut u8 {
        debug_assert!(index < self.capacity);
        // SAFETY: index < capacity (callers mask positions with capacity - 1), so the offset is
        // within the `capacity * stride` bytes the invariant guarantees.
        unsafe { self.base.add(index as usize * self.stride) }
    }
}

// SAFETY: the invariant on `SharedSlots` gives `capacity` disjoint slots of `stride` bytes.
unsafe impl<T: bytemuck::Pod> SlotMemory<T> for SharedSlots {
    #[inline(always)]
    fn stamp(&self, index: u64) -> &AtomicU64 {
        // SAFETY: the slot starts with an 8-aligned u64 stamp inside the mapping (invariant);
        // AtomicU64 permits concurrent access by other processes, and no `&mut` to it exists.
        unsafe { &*self.slot(index).cast::<AtomicU64>() }
    }

    #[inline(always)]
    unsafe fn write(&self, index: u64, value: &T) {
        // SAFETY: the payload lies within the slot (invariant) and is aligned for T; a byte copy
        // through raw pointers forms no reference into shared memory.
        unsafe {
            let dst = self.slot(index).add(self.payload_offset);
            core::ptr::copy_nonoverlapping((value as *const T).cast::<u8>(), dst, size_of::<T>());
        }
    }

    #[inline(always)]
    unsafe fn read(&self, index: u64) -> T {
        let mut out = core::mem::MaybeUninit::<T>::uninit();
        // SAFETY: as in `write`; the copy lands in private memory first, and T: Pod makes any
        // bytes a peer may have written a valid T.
        unsafe {
            let src = self.slot(index).add(self.payload_offset);
            core::ptr::copy_nonoverlapping(src, out.as_mut_ptr().cast::<u8>(), size_of::<T>());
            out.assume_init()
        }
    }
}

/// Slots on the heap, for in-process rings, unit tests and loom models. Payloads sit in
/// `UnsafeCell`s (loom's under loom, so it checks the ring never reads a slot being written).
#[cfg(any(test, shmchan_loom))]
pub(crate) struct HeapSlots<T> {
    stamps: Vec<AtomicU64>,
    payloads: Vec<crate::sync::atomic::UnsafeCell<T>>,
}

#[cfg(any(test, shmchan_loom))]
impl<T: Copy + Default> HeapSlots<T> {
    /// Slots for a ring whose positions start at `start`, stamped as the previous lap.
    pub(crate) fn new(capacity: u64, start: u64) -> Self {
        let mut stamps: Vec<AtomicU64> = (0..capacity).map(|_| AtomicU64::new(0)).collect();
        for k in 0..capacity {
            let p = start.wrapping_add(k);
            stamps[(p & (capacity - 1)) as usize] =
                AtomicU64::new(spsc::initial_stamp(p, capacity));
        }
        let payloads =
            (0..capacity).map(|_| crate::sync::atomic::UnsafeCell::new(T::default())).collect();
        HeapSlots { stamps, payloads }
    }
}

// SAFETY: one stamp and one cell per index, owned by the Vecs for the life of the value.
#[cfg(any(test, shmchan_loom))]
unsafe impl<T: Copy> SlotMemory<T> for HeapSlots<T> {
    fn stamp(&self, index: u64) -> &AtomicU64 {
        &self.stamps[index as usize]
    }

    unsafe fn write(&self, index: u64, value: &T) {
        // SAFETY: the ring protocol gives the producer exclusive access to this slot now.
        self.payloads[index as usize].with_mut(|p| unsafe { *p = *value });
    }

    unsafe fn read(&self, index: u64) -> T {
        // SAFETY: the ring protocol gives the consumer exclusive access to this slot now.
        self.payloads[index as usize].with(|p| unsafe { *p })
    }
}

// SAFETY: payload cells are only accessed by the side the ring protocol hands the slot to (the
// stamps' Release/Acquire pairs order the hand-over), so sharing HeapSlots between the producer's
// and the consumer's threads is sound for `T: Send`.
#[cfg(any(test, shmchan_loom))]
unsafe impl<T: Send> Sync for HeapSlots<T> {}
