//! The segment layout: one format for every backing.
//!
//! ```text
//! offset  size  contents                                   written by
//! ------  ----  -----------------------------------------  -----------------------------------
//!      0   128  Header (immutable once init_state=READY)   creator, before READY
//!    128   128  Endpoints line: producer/consumer owner    attach / detach (rare)
//!              words, poison flag
//!    256   128  Producer line: tail position               producer, once per message
//!    384   128  Consumer line: head position               consumer, once per receive call
//!    512   128  Producer futex word (sleeps when full)     producer (announce), consumer (wake)
//!    640   128  Consumer futex word (sleeps when empty)    consumer (announce), producer (wake)
//!    768     -  slots[capacity], each `slot_stride` bytes, aligned to max(128, align of T)
//!
//! Header (128 bytes, little endian, native alignment):
//!      0  magic            u64  b"SHMCHAN\0"
//!      8  init_state       u32  0 until the creator has written everything, then INIT_READY
//!     12  version_major    u16  readers reject another major
//!     14  version_minor    u16  additions within reserved space
//!     16  flavor           u32  FLAVOR_SPSC
//!     20  header_len       u32  128
//!     24  segment_len      u64  total bytes the creator made (page multiple)
//!     32  capacity         u64  slots, a power of two
//!     40  elem_size        u64  size_of::<T>()
//!     48  elem_align       u64  align_of::<T>()
//!     56  slot_stride      u64  bytes per slot
//!     64  slots_offset     u64  offset of slot 0
//!     72  fingerprint      u64  type fingerprint
//!     80  creator_pid      u32
//!     84  (padding)        u32
//!     88  creator_start    u64  creator's start time, clock ticks since boot
//!     96  extra            u64  flavor-specific (0 for SPSC)
//!    104  reserved       2×u64  zero
//!    120  checksum         u64  FNV-1a over bytes 0..120 with init_state read as 0
//!
//! Slot (slot_stride bytes):
//!      0  stamp            u64  position + 1 once the message at `position` is published
//!      p  payload          T    p = max(8, align of T)
//! ```
//!
//! Positions are free-running `u64` counters; slot index = position & (capacity - 1). A slot's
//! stamp equals `position + 1` exactly when the message for `position` is published; before that
//! it holds the previous lap's stamp, `position + 1 - capacity`. Both comparisons use wrapping
//! arithmetic, so positions may start anywhere and cross `u64::MAX`.
//!
//! Small slots are rounded up to a power of two (16, 32 or 64 bytes) so that no slot straddles a
//! 64-byte cache line: the stamp and the payload travel to the consumer in one transfer.
//!
//! `CachePadded` is deliberately not used: its alignment differs between targets, and this layout
//! must not. Lines here are a fixed 128 bytes (two 64-byte lines, defeating the adjacent-line
//! prefetcher).

use crate::error::{OpenError, TypeField};
use crate::sync::atomic::{AtomicU32, AtomicU64};

/// `b"SHMCHAN\0"` read as a little-endian `u64`.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMCHAN\0");
/// The layout major version this build writes and reads.
pub const VERSION_MAJOR: u16 = 2;
/// The layout minor version this build writes.
pub const VERSION_MINOR: u16 = 0;
/// `init_state` once the creator has written the whole header and control block.
pub const INIT_READY: u32 = u32::from_le_bytes(*b"RDY!");
/// Flavor tag of a typed single-producer/single-consumer ring.
pub const FLAVOR_SPSC: u32 = 1;
/// Flavor tag of a typed multi-producer/multi-consumer ring.
pub const FLAVOR_MPMC: u32 = 2;
/// Flavor tag of a single-producer/single-consumer byte ring (variable-length records).
pub const FLAVOR_BYTES: u32 = 3;

pub const HEADER_LEN: u64 = 128;
pub const LINE: u64 = 128;
pub const CONTROL_OFFSET: u64 = HEADER_LEN;
/// Length of the SPSC control block.
pub const CONTROL_LEN: u64 = 5 * LINE;
pub const STAMP_LEN: u64 = 8;
pub const PAGE: u64 = 4096;

/// Limits fixed by this build, checked at create and at open.
pub const MAX_CAPACITY: u64 = 1 << 32;
pub const MAX_ELEM_SIZE: u64 = 1 << 24;
pub const MAX_ELEM_ALIGN: u64 = PAGE;

/// The header as plain integers: what the creator writes and what an opener copies out.
///
/// The `init_state` field shares its bytes with the atomic the creator publishes last; the copy
/// is taken only after an `Acquire` load of that atomic has seen [`INIT_READY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct RawHeader {
    pub magic: u64,
    pub init_state: u32,
    pub version_major: u16,
    pub version_minor: u16,
    pub flavor: u32,
    pub header_len: u32,
    pub segment_len: u64,
    pub capacity: u64,
    pub elem_size: u64,
    pub elem_align: u64,
    pub slot_stride: u64,
    pub slots_offset: u64,
    pub fingerprint: u64,
    pub creator_pid: u32,
    pub _pad0: u32,
    pub creator_start: u64,
    pub extra: u64,
    pub reserved: [u64; 2],
    pub checksum: u64,
}

const _: () = {
    assert!(core::mem::size_of::<RawHeader>() as u64 == HEADER_LEN);
    assert!(core::mem::offset_of!(RawHeader, init_state) == 8);
    assert!(core::mem::offset_of!(RawHeader, segment_len) == 24);
    assert!(core::mem::offset_of!(RawHeader, fingerprint) == 72);
    assert!(core::mem::offset_of!(RawHeader, creator_start) == 88);
    assert!(core::mem::offset_of!(RawHeader, checksum) == 120);
};

impl RawHeader {
    /// FNV-1a over the header bytes before `checksum`, with `init_state` counted as zero (the
    /// creator computes it before publishing READY).
    pub fn compute_checksum(&self) -> u64 {
        let mut copy = *self;
        copy.init_state = 0;
        fnv1a(&bytemuck::bytes_of(&copy)[..120], FNV_OFFSET)
    }
}

/// Byte offset of the `init_state` word within the header.
pub const INIT_STATE_OFFSET: u64 = 8;

/// A 128-byte aligned, 128-byte sized line of the control block.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Line<T>(pub T);

/// Owner words and the poison flag, read on every send/receive, written only on attach/detach.
#[repr(C)]
#[derive(Debug)]
pub struct Endpoints {
    /// Owner word of the producer (see [`endpoint`]).
    pub producer: AtomicU64,
    /// Owner word of the consumer (see [`endpoint`]).
    pub consumer: AtomicU64,
    /// Non-zero once an endpoint detected an inconsistency (informational: each endpoint also
    /// remembers it privately, so a peer clearing it changes nothing).
    pub poisoned: AtomicU32,
}

/// The shared control block of a typed SPSC ring. Every field is an atomic: it may be referenced
/// as `&SpscControl` in shared memory (interior mutability, no `&mut` ever formed).
#[repr(C)]
#[derive(Debug)]
pub struct SpscControl {
    pub endpoints: Line<Endpoints>,
    /// Next position the producer will write; published after the slot's stamp.
    pub tail: Line<AtomicU64>,
    /// Next position the consumer will read; everything before it has been copied out.
    pub head: Line<AtomicU64>,
    /// The producer's futex word: [`AWAKE`] or [`SLEEPING`] (waiting for space).
    pub producer_wait: Line<AtomicU32>,
    /// The consumer's futex word: [`AWAKE`] or [`SLEEPING`] (waiting for data).
    pub consumer_wait: Line<AtomicU32>,
}

/// Sleepers of one side of a ring with many waiters (an event count): `waiters` counts the
/// announced sleepers, `epoch` is the futex word they sleep on and every wake-up bumps.
#[repr(C)]
#[derive(Debug)]
pub struct Waiters {
    pub waiters: AtomicU32,
    pub epoch: AtomicU32,
}

impl Waiters {
    pub fn new() -> Self {
        Waiters { waiters: AtomicU32::new(0), epoch: AtomicU32::new(0) }
    }
}

impl Default for Waiters {
    fn default() -> Self {
        Self::new()
    }
}

/// Futex word values.
pub const AWAKE: u32 = 0;
pub const SLEEPING: u32 = 1;

impl SpscControl {
    /// A control block for positions starting at `start`, as the creator initialises it (loom
    /// models and heap rings build it as a value; in a segment the creator writes it in place).
    pub fn new(start: u64) -> Self {
        SpscControl {
            endpoints: Line(Endpoints {
                producer: AtomicU64::new(endpoint::VACANT),
                consumer: AtomicU64::new(endpoint::VACANT),
                poisoned: AtomicU32::new(0),
            }),
            tail: Line(AtomicU64::new(start)),
            head: Line(AtomicU64::new(start)),
            producer_wait: Line(AtomicU32::new(AWAKE)),
            consumer_wait: Line(AtomicU32::new(AWAKE)),
        }
    }
}

#[cfg(not(shmchan_loom))]
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<SpscControl>() as u64 == CONTROL_LEN);
    assert!(offset_of!(SpscControl, tail) as u64 == LINE);
    assert!(offset_of!(SpscControl, head) as u64 == 2 * LINE);
    assert!(offset_of!(SpscControl, producer_wait) as u64 == 3 * LINE);
    assert!(offset_of!(SpscControl, consumer_wait) as u64 == 4 * LINE);
};

/// The owner word of an endpoint.
///
/// `VACANT` (0): never attached. Otherwise bits 0..32 hold the owner's pid, bits 32..63 the low
/// 31 bits of its start time, and bit 63 is set once the owner detached cleanly. A word without
/// bit 63 whose process is dead (or recycled) marks a crashed owner.
pub mod endpoint {
    pub const VACANT: u64 = 0;
    pub const DETACHED: u64 = 1 << 63;
    pub const START_MASK: u64 = (1 << 31) - 1;

    pub fn attached(pid: u32, start_ticks: u64) -> u64 {
        u64::from(pid) | ((start_ticks & START_MASK) << 32)
    }

    pub fn pid(word: u64) -> u32 {
        word as u32
    }

    pub fn start_low(word: u64) -> u64 {
        (word >> 32) & START_MASK
    }

    pub fn is_detached(word: u64) -> bool {
        word & DETACHED != 0
    }
}

/// What a kind of channel contributes to the common segment format: its flavor tag, its
/// geometry (from the header's dimensions) and the initial state of its control block and slots.
pub trait Flavor {
    /// The header's `flavor` value.
    const ID: u32;

    /// The geometry for these dimensions, or why they are out of range. Called at creation and
    /// again on every open, with the values read from the header.
    fn geometry(
        capacity: u64,
        elem_size: u64,
        elem_align: u64,
        extra: u64,
    ) -> Result<Geometry, String>;

    /// Writes the control block and the slots' initial state for positions starting at `start`.
    ///
    /// # Safety
    /// `base` must point to `geometry.segment_len` writable bytes, page aligned, that no other
    /// process uses yet (the header's init word is not READY).
    unsafe fn initialize(base: *mut u8, geometry: &Geometry, start: u64);
}

/// The geometry of a ring: every size and offset, derived from capacity and element type and
/// validated once. Private copies of it bound every access; nothing here is re-read from the
/// segment after open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Flavor-specific dimension recorded in the header's `extra` field.
    pub extra: u64,
    pub capacity: u64,
    pub elem_size: u64,
    pub elem_align: u64,
    pub payload_offset: u64,
    pub slot_stride: u64,
    pub slots_offset: u64,
    pub segment_len: u64,
}

impl Geometry {
    /// The geometry of a typed SPSC ring of `capacity` elements of `elem_size` bytes aligned to
    /// `elem_align`, or which input is out of range.
    pub fn new(capacity: u64, elem_size: u64, elem_align: u64) -> Result<Self, String> {
        Self::with_control(capacity, elem_size, elem_align, CONTROL_LEN, 0)
    }

    /// The geometry of a ring of stamped slots behind a control block of `control_len` bytes.
    pub fn with_control(
        capacity: u64,
        elem_size: u64,
        elem_align: u64,
        control_len: u64,
        extra: u64,
    ) -> Result<Self, String> {
        if !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(format!("capacity {capacity} is not a power of two in 1..=2^32"));
        }
        if elem_size > MAX_ELEM_SIZE {
            return Err(format!("element size {elem_size} exceeds {MAX_ELEM_SIZE}"));
        }
        if !elem_align.is_power_of_two() || elem_align > MAX_ELEM_ALIGN {
            return Err(format!("element alignment {elem_align} is not a power of two <= 4096"));
        }
        let slot_align = elem_align.max(STAMP_LEN);
        let payload_offset = slot_align;
        let mut slot_stride = round_up(payload_offset + elem_size, slot_align);
        if slot_stride < 64 {
            slot_stride = slot_stride.next_power_of_two();
        }
        let slots_offset = round_up(CONTROL_OFFSET + control_len, elem_align.max(LINE));
        let slots_len = capacity.checked_mul(slot_stride).ok_or("ring size overflows")?;
        let end = slots_offset.checked_add(slots_len).ok_or("ring size overflows")?;
        let segment_len = round_up(end, PAGE);
        if segment_len > crate::os::segment::MAX_SEGMENT_LEN {
            return Err(format!("segment of {segment_len} bytes is too large"));
        }
        Ok(Geometry {
            extra,
            capacity,
            elem_size,
            elem_align,
            payload_offset,
            slot_stride,
            slots_offset,
            segment_len,
        })
    }

    pub fn mask(&self) -> u64 {
        self.capacity - 1
    }
}

fn round_up(value: u64, align: u64) -> u64 {
    (value + align - 1) & !(align - 1)
}

/// What the opener expects of the element type.
#[derive(Clone, Copy, Debug)]
pub struct ElementType {
    pub size: u64,
    pub align: u64,
    pub fingerprint: u64,
}

/// Validates a header copy against what this build and the caller expect and against the
/// object's real length. Checks run from the most to the least specific cause, so each kind of
/// damage gets its own error. Returns the geometry to use from then on.
pub fn validate_header<F: Flavor>(
    h: &RawHeader,
    element: &ElementType,
    object_len: u64,
) -> Result<Geometry, OpenError> {
    let flavor = F::ID;
    if h.magic != MAGIC {
        return Err(OpenError::BadMagic { found: h.magic });
    }
    if h.version_major != VERSION_MAJOR {
        return Err(OpenError::VersionMismatch {
            expected: (VERSION_MAJOR, VERSION_MINOR),
            found: (h.version_major, h.version_minor),
        });
    }
    if h.flavor != flavor {
        return Err(OpenError::FlavorMismatch { expected: flavor, found: h.flavor });
    }
    let type_checks = [
        (TypeField::Size, element.size, h.elem_size),
        (TypeField::Align, element.align, h.elem_align),
        (TypeField::Fingerprint, element.fingerprint, h.fingerprint),
    ];
    for (field, expected, found) in type_checks {
        if expected != found {
            return Err(OpenError::TypeMismatch { field, expected, found });
        }
    }
    let corrupted = |reason: String| OpenError::Corrupted { reason };
    if u64::from(h.header_len) != HEADER_LEN {
        return Err(corrupted(format!("header length {}", h.header_len)));
    }
    let geometry =
        F::geometry(h.capacity, h.elem_size, h.elem_align, h.extra).map_err(corrupted)?;
    if h.segment_len < geometry.segment_len {
        return Err(OpenError::TooSmall { expected: geometry.segment_len, found: h.segment_len });
    }
    if h.segment_len != geometry.segment_len {
        return Err(corrupted(format!(
            "segment length {} does not match the geometry ({})",
            h.segment_len, geometry.segment_len
        )));
    }
    if object_len < h.segment_len {
        return Err(OpenError::TooSmall { expected: h.segment_len, found: object_len });
    }
    if h.slot_stride != geometry.slot_stride || h.slots_offset != geometry.slots_offset {
        return Err(corrupted(format!(
            "slot stride/offset {}/{} do not match the geometry ({}/{})",
            h.slot_stride, h.slots_offset, geometry.slot_stride, geometry.slots_offset
        )));
    }
    if h.checksum != h.compute_checksum() {
        return Err(corrupted("header checksum mismatch".into()));
    }
    Ok(geometry)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a, continuing from `state`.
pub const fn fnv1a(bytes: &[u8], mut state: u64) -> u64 {
    let mut i = 0;
    while i < bytes.len() {
        state ^= bytes[i] as u64;
        state = state.wrapping_mul(FNV_PRIME);
        i += 1;
    }
    state
}

/// The default type fingerprint of `T`: its type name, size and alignment. Stable across builds
/// of the same type in the same crate; processes built from different crates that share a
/// message type by layout should pass their own fingerprint instead.
pub fn default_fingerprint<T>() -> u64 {
    let mut state = fnv1a(core::any::type_name::<T>().as_bytes(), FNV_OFFSET);
    state = fnv1a(&(core::mem::size_of::<T>() as u64).to_le_bytes(), state);
    fnv1a(&(core::mem::align_of::<T>() as u64).to_le_bytes(), state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::spsc::SpscFlavor;

    fn header_for(g: &Geometry, fingerprint: u64) -> RawHeader {
        let mut h = RawHeader {
            magic: MAGIC,
            init_state: INIT_READY,
            version_major: VERSION_MAJOR,
            version_minor: VERSION_MINOR,
            flavor: FLAVOR_SPSC,
            header_len: HEADER_LEN as u32,
            segment_len: g.segment_len,
            capacity: g.capacity,
            elem_size: g.elem_size,
            elem_align: g.elem_align,
            slot_stride: g.slot_stride,
            slots_offset: g.slots_offset,
            fingerprint,
            creator_pid: 1,
            creator_start: 2,
            ..Default::default()
        };
        h.checksum = h.compute_checksum();
        h
    }

    #[test]
    fn small_slots_never_straddle_cache_lines() {
        for size in 0..=56 {
            let g = Geometry::new(8, size, 1).unwrap();
            assert!(64 % g.slot_stride == 0, "size {size} stride {}", g.slot_stride);
            assert!(g.payload_offset + size <= g.slot_stride);
        }
        assert_eq!(Geometry::new(8, 8, 8).unwrap().slot_stride, 16);
        assert_eq!(Geometry::new(8, 64, 8).unwrap().slot_stride, 72);
    }

    #[test]
    fn geometry_respects_alignment_and_pages() {
        let g = Geometry::new(4, 100, 256).unwrap();
        assert_eq!(g.payload_offset, 256);
        assert_eq!(g.slot_stride % 256, 0);
        assert_eq!(g.slots_offset % 256, 0);
        assert_eq!(g.segment_len % PAGE, 0);
        assert!(g.segment_len >= g.slots_offset + 4 * g.slot_stride);
    }

    #[test]
    fn geometry_rejects_bad_inputs() {
        assert!(Geometry::new(0, 8, 8).is_err());
        assert!(Geometry::new(3, 8, 8).is_err());
        assert!(Geometry::new(1 << 33, 8, 8).is_err());
        assert!(Geometry::new(8, 8, 3).is_err());
        assert!(Geometry::new(8, MAX_ELEM_SIZE + 1, 8).is_err());
        assert!(Geometry::new(1 << 32, MAX_ELEM_SIZE, 8).is_err());
    }

    #[test]
    fn each_damaged_field_gets_its_own_error() {
        let g = Geometry::new(64, 8, 8).unwrap();
        let el = ElementType { size: 8, align: 8, fingerprint: 7 };
        let good = header_for(&g, 7);
        assert_eq!(validate_header::<SpscFlavor>(&good, &el, g.segment_len).unwrap(), g);

        let check = |edit: &dyn Fn(&mut RawHeader), len: u64, want: &str| {
            let mut h = good;
            edit(&mut h);
            let err = validate_header::<SpscFlavor>(&h, &el, len).unwrap_err();
            let name = format!("{err:?}");
            assert!(name.starts_with(want), "{want}: got {name}");
        };
        check(&|h| h.magic ^= 1, g.segment_len, "BadMagic");
        check(&|h| h.version_major += 1, g.segment_len, "VersionMismatch");
        check(&|h| h.flavor = 9, g.segment_len, "FlavorMismatch");
        check(&|h| h.elem_size = 16, g.segment_len, "TypeMismatch { field: Size");
        check(&|h| h.elem_align = 4, g.segment_len, "TypeMismatch { field: Align");
        check(&|h| h.fingerprint = 8, g.segment_len, "TypeMismatch { field: Fingerprint");
        check(&|h| h.header_len = 64, g.segment_len, "Corrupted");
        check(&|h| h.capacity = 63, g.segment_len, "Corrupted");
        check(&|h| h.capacity = 1 << 40, g.segment_len, "Corrupted");
        check(&|h| h.segment_len = 0, g.segment_len, "TooSmall");
        check(&|h| h.segment_len += PAGE, g.segment_len + PAGE, "Corrupted");
        check(&|_| {}, g.segment_len - 1, "TooSmall");
        check(&|h| h.slot_stride = 8, g.segment_len, "Corrupted");
        check(&|h| h.slots_offset = 0, g.segment_len, "Corrupted");
        check(&|h| h.creator_pid = 99, g.segment_len, "Corrupted");
        check(&|h| h.extra = 1, g.segment_len, "Corrupted");
        check(&|h| h.reserved[1] = 1, g.segment_len, "Corrupted");
        check(&|h| h.checksum ^= 1, g.segment_len, "Corrupted");
    }

    #[test]
    fn endpoint_words_round_trip() {
        let w = endpoint::attached(4_194_303, (1 << 40) | 12345);
        assert_eq!(endpoint::pid(w), 4_194_303);
        assert_eq!(endpoint::start_low(w), 12345);
        assert!(!endpoint::is_detached(w));
        assert!(endpoint::is_detached(w | endpoint::DETACHED));
        assert_ne!(w, endpoint::VACANT);
    }

    #[test]
    fn fingerprints_differ_by_type() {
        assert_ne!(default_fingerprint::<u64>(), default_fingerprint::<i64>());
        assert_ne!(default_fingerprint::<[u8; 8]>(), default_fingerprint::<[u8; 9]>());
        assert_eq!(default_fingerprint::<u64>(), default_fingerprint::<u64>());
    }
}
