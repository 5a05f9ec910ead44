//! Read-only inspection of a live segment, for tools (`shmchan stat`, `shmchan ls`, monitoring).
//!
//! [`inspect`] maps a segment read-only (`O_RDONLY`, `PROT_READ`): it writes nothing, attaches no
//! endpoint and wakes nobody, so it never disturbs a live channel, and it needs only read
//! permission on the object. The header is copied out once and validated like an open does
//! (magic, version, flavor, geometry, checksum, length), but against the element type the
//! header itself names, since a tool does not know it. Control values are then read once each
//! (atomically) into a [`Snapshot`]; values a correct peer cannot produce are reported in
//! [`Snapshot::problems`], never trusted for anything but display.
//!
//! ```no_run
//! let snap = shmchan::inspect::inspect(&shmchan::inspect::Target::Posix("/jobs".into()))?;
//! println!("{:?}: {} of {} in use", snap.kind, snap.fill(), snap.capacity);
//! # Ok::<(), shmchan::OpenError>(())
//! ```

use std::path::PathBuf;

use crate::error::OpenError;
use crate::layout::{self, ElementType, Geometry, RawHeader, SpscControl, endpoint};
use crate::os::process::{self, Liveness};
use crate::os::segment::{self as os_seg, Mapping};
use crate::ring::bytes::BytesFlavor;
use crate::ring::mpmc::{
    LANES, MpmcControl, MpmcFlavor, REGISTRY_OFFSET, read_unfinished, write_unfinished,
};
use crate::ring::spsc::SpscFlavor;
use crate::sync::atomic::{AtomicU64, Ordering};

/// A segment to inspect: a POSIX shm name (leading `/` optional) or a file path.
#[derive(Debug, Clone)]
pub enum Target {
    /// A POSIX shm object.
    Posix(String),
    /// A regular file.
    File(PathBuf),
}

/// The kind of channel a segment holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`spsc`](crate::spsc): typed, one producer, one consumer.
    Spsc,
    /// [`mpmc`](crate::mpmc): typed, many senders and receivers.
    Mpmc,
    /// [`bytes`](crate::bytes): variable-length records, one producer, one consumer.
    Bytes,
}

impl Kind {
    /// `spsc`, `mpmc` or `bytes`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Spsc => "spsc",
            Kind::Mpmc => "mpmc",
            Kind::Bytes => "bytes",
        }
    }
}

/// The role of an endpoint slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The SPSC or byte ring producer.
    Producer,
    /// The SPSC or byte ring consumer.
    Consumer,
    /// An MPMC sender slot.
    Sender,
    /// An MPMC receiver slot.
    Receiver,
}

impl Role {
    /// `producer`, `consumer`, `sender` or `receiver`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// What an endpoint slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointState {
    /// Attached by `pid`, which still runs.
    Alive {
        /// The owner's pid.
        pid: u32,
    },
    /// Attached by `pid`, which is gone (crashed, or the pid was recycled): a reclaimable slot.
    Dead {
        /// The former owner's pid.
        pid: u32,
    },
    /// `pid` detached cleanly.
    Detached {
        /// The former owner's pid.
        pid: u32,
    },
}

/// One endpoint slot in use or once used (never-used slots are not listed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Its role.
    pub role: Role,
    /// Its index among the slots of that role (0 for SPSC and bytes).
    pub index: usize,
    /// What it holds.
    pub state: EndpointState,
    /// MPMC: the lowest position this endpoint claimed and has not finished, as its intent
    /// lanes tell (the shared `tail`/`head` is past it and the slot still shows the claim
    /// unfinished). A live endpoint holds one for nanoseconds; one that stays, or one held by
    /// a dead endpoint, is what a stalled ring waits on. `None` for SPSC and bytes.
    pub unfinished_claim: Option<u64>,
}

/// One read of a segment's header and control block.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The kind of channel.
    pub kind: Kind,
    /// Layout version (major, minor).
    pub version: (u16, u16),
    /// Slots (typed rings) or bytes of data area (byte ring).
    pub capacity: u64,
    /// Element size in bytes (typed rings); 1 for the byte ring.
    pub elem_size: u64,
    /// Element alignment.
    pub elem_align: u64,
    /// The element type fingerprint both sides agreed on.
    pub fingerprint: u64,
    /// The byte ring's largest record; `None` for typed rings.
    pub max_message: Option<u64>,
    /// MPMC: endpoint slots of each role; `None` otherwise.
    pub max_endpoints: Option<u64>,
    /// Bytes of the segment.
    pub segment_len: u64,
    /// The creating process's pid, and whether it still runs.
    pub creator_pid: u32,
    /// Whether the creating process still runs.
    pub creator_alive: bool,
    /// Next position to be written (messages for typed rings, bytes for the byte ring).
    pub tail: u64,
    /// Next position to be read.
    pub head: u64,
    /// Endpoint slots that were ever used.
    pub endpoints: Vec<Endpoint>,
    /// Processes asleep waiting for data (SPSC/bytes: 0 or 1; MPMC: the announced count).
    pub sleeping_receivers: u32,
    /// Processes asleep waiting for room.
    pub sleeping_senders: u32,
    /// MPMC: messages lost because their sender died holding a claim.
    pub lost_writes: Option<u64>,
    /// MPMC: messages lost because their receiver died holding a claim.
    pub lost_reads: Option<u64>,
    /// An endpoint flagged the segment as corrupted.
    pub poisoned: bool,
    /// Values a correct peer cannot produce, in words.
    pub problems: Vec<String>,
}

impl Snapshot {
    /// Messages (typed rings) or bytes (byte ring) written and not yet read, clamped to the
    /// capacity.
    pub fn fill(&self) -> u64 {
        self.tail.saturating_sub(self.head).min(self.capacity)
    }

    /// Whether any endpoint is attached by a running process.
    pub fn any_endpoint_alive(&self) -> bool {
        self.endpoints.iter().any(|e| matches!(e.state, EndpointState::Alive { .. }))
    }

    /// In use: the creator or an attached endpoint still runs. A segment that is not in use is
    /// garbage unless someone is about to open it by name.
    pub fn in_use(&self) -> bool {
        self.creator_alive || self.any_endpoint_alive()
    }
}

/// Maps `target` read-only and reads its header and control block once.
///
/// # Errors
/// The [`OpenError`] of the open (not found, permission), [`OpenError::BadMagic`] for an object
/// that is not a shmchan segment, [`OpenError::NotInitialized`] while its creator is still
/// writing it, and the header checks' errors ([`OpenError::Corrupted`],
/// [`OpenError::VersionMismatch`], [`OpenError::TooSmall`], [`OpenError::FlavorMismatch`] for
/// an unknown flavor).
pub fn inspect(target: &Target) -> Result<Snapshot, OpenError> {
    let (fd, object_len) = match target {
        Target::Posix(name) => os_seg::open_posix_read_only(&os_seg::posix_name(name)?)?,
        Target::File(path) => os_seg::open_file_read_only(path)?,
    };
    if object_len < layout::HEADER_LEN {
        return Err(OpenError::TooSmall { expected: layout::HEADER_LEN, found: object_len });
    }
    let mapping = os_seg::map_fd(&fd, object_len, true)?;
    // SAFETY: the header lies within the mapping (object_len >= HEADER_LEN, checked above); a
    // volatile copy forms no reference into memory another process may write.
    let header = unsafe { std::ptr::read_volatile(mapping.base().as_ptr().cast::<RawHeader>()) };
    if header.magic != layout::MAGIC {
        return Err(OpenError::BadMagic { found: header.magic });
    }
    if header.init_state != layout::INIT_READY {
        return Err(OpenError::NotInitialized);
    }
    let element = ElementType {
        size: header.elem_size,
        align: header.elem_align,
        fingerprint: header.fingerprint,
    };
    let (kind, geometry) = match header.flavor {
        layout::FLAVOR_SPSC => {
            (Kind::Spsc, layout::validate_header::<SpscFlavor>(&header, &element, object_len)?)
        }
        layout::FLAVOR_MPMC => {
            (Kind::Mpmc, layout::validate_header::<MpmcFlavor>(&header, &element, object_len)?)
        }
        layout::FLAVOR_BYTES => {
            (Kind::Bytes, layout::validate_header::<BytesFlavor>(&header, &element, object_len)?)
        }
        found => return Err(OpenError::FlavorMismatch { expected: 0, found }),
    };
    let creator_alive = matches!(
        process::liveness(header.creator_pid, header.creator_start, u64::MAX),
        Liveness::Alive
    );
    let mut snap = Snapshot {
        kind,
        version: (header.version_major, header.version_minor),
        capacity: geometry.capacity,
        elem_size: geometry.elem_size,
        elem_align: geometry.elem_align,
        fingerprint: header.fingerprint,
        max_message: (kind == Kind::Bytes).then_some(geometry.extra),
        max_endpoints: (kind == Kind::Mpmc).then_some(geometry.extra),
        segment_len: geometry.segment_len,
        creator_pid: header.creator_pid,
        creator_alive,
        tail: 0,
        head: 0,
        endpoints: Vec::new(),
        sleeping_receivers: 0,
        sleeping_senders: 0,
        lost_writes: None,
        lost_reads: None,
        poisoned: false,
        problems: Vec::new(),
    };
    match kind {
        Kind::Spsc | Kind::Bytes => read_spsc_control(&mapping, &mut snap),
        Kind::Mpmc => read_mpmc_control(&mapping, &geometry, &mut snap),
    }
    check_positions(&mut snap);
    Ok(snap)
}

/// Reads the SPSC control block (the byte ring shares it).
fn read_spsc_control(mapping: &Mapping, snap: &mut Snapshot) {
    // SAFETY: the validated geometry puts a SpscControl at CONTROL_OFFSET (128-aligned in a
    // page-aligned mapping at least segment_len long); it is all atomics, which may be loaded
    // from read-only shared memory, and only loads are made.
    let control = unsafe {
        &*mapping.base().as_ptr().add(layout::CONTROL_OFFSET as usize).cast::<SpscControl>()
    };
    // Relaxed throughout: a snapshot for display, ordered with nothing.
    snap.tail = control.tail.0.load(Ordering::Relaxed);
    snap.head = control.head.0.load(Ordering::Relaxed);
    snap.poisoned = control.endpoints.0.poisoned.load(Ordering::Relaxed) != 0;
    for (role, word) in [
        (Role::Producer, &control.endpoints.0.producer),
        (Role::Consumer, &control.endpoints.0.consumer),
    ] {
        if let Some(state) = endpoint_state(word.load(Ordering::Relaxed)) {
            snap.endpoints.push(Endpoint { role, index: 0, state, unfinished_claim: None });
        }
    }
    snap.sleeping_senders = u32::from(control.producer_wait.0.load(Ordering::Relaxed) != 0);
    snap.sleeping_receivers = u32::from(control.consumer_wait.0.load(Ordering::Relaxed) != 0);
}

/// Words in one MPMC registry entry (a line).
const LINE_WORDS: usize = (layout::LINE / 8) as usize;

/// Reads the MPMC control block and its endpoint registry.
fn read_mpmc_control(mapping: &Mapping, geometry: &Geometry, snap: &mut Snapshot) {
    let control_ptr = mapping.base().as_ptr().wrapping_add(layout::CONTROL_OFFSET as usize);
    // SAFETY: the validated geometry puts an MpmcControl at CONTROL_OFFSET, followed by
    // 2 * max_endpoints registry lines, all within segment_len; atomics only, loads only.
    let control = unsafe { &*control_ptr.cast::<MpmcControl>() };
    let stats = &control.stats.0;
    snap.tail = control.tail.0.load(Ordering::Relaxed);
    snap.head = control.head.0.load(Ordering::Relaxed);
    snap.poisoned = stats.poisoned.load(Ordering::Relaxed) != 0;
    snap.lost_writes = Some(stats.lost_writes.load(Ordering::Relaxed));
    snap.lost_reads = Some(stats.lost_reads.load(Ordering::Relaxed));
    snap.sleeping_receivers = control.not_empty.0.waiters.load(Ordering::Relaxed);
    snap.sleeping_senders = control.not_full.0.waiters.load(Ordering::Relaxed);
    let max = geometry.extra as usize;
    let registry = control_ptr.wrapping_add(REGISTRY_OFFSET as usize).cast::<AtomicU64>();
    let stamp = |position: u64| {
        let offset = geometry.slots_offset + (position & geometry.mask()) * geometry.slot_stride;
        // SAFETY: the masked index is below the capacity, so the stamp (the first 8-aligned
        // word of its slot) lies inside the slot array the validated geometry places in the
        // mapping; loads only.
        unsafe { &*mapping.base().as_ptr().add(offset as usize).cast::<AtomicU64>() }
            .load(Ordering::Relaxed)
    };
    for (role, first) in [(Role::Sender, 0), (Role::Receiver, max)] {
        for index in 0..max {
            // SAFETY: entry first + index < 2 * max_endpoints lies in the registry (see above),
            // one line each: the owner word, then LANES intent words.
            let entry = unsafe { registry.add((first + index) * LINE_WORDS) };
            // SAFETY: as above; word 0 of the entry.
            let Some(state) = endpoint_state(unsafe { &*entry }.load(Ordering::Relaxed)) else {
                continue;
            };
            let unfinished = |p| match role {
                Role::Sender => write_unfinished(p, stamp(p), snap.tail),
                _ => read_unfinished(p, stamp(p), snap.head),
            };
            let unfinished_claim = (1..=LANES as usize)
                // SAFETY: lane words 1..=LANES of the same entry line.
                .map(|lane| unsafe { &*entry.add(lane) }.load(Ordering::Relaxed))
                .filter(|&p| unfinished(p))
                .min();
            snap.endpoints.push(Endpoint { role, index, state, unfinished_claim });
        }
    }
}

/// Decodes an owner word; `None` for a slot never used.
fn endpoint_state(word: u64) -> Option<EndpointState> {
    if word == endpoint::VACANT {
        return None;
    }
    let pid = endpoint::pid(word);
    if endpoint::is_detached(word) {
        return Some(EndpointState::Detached { pid });
    }
    Some(match process::liveness(pid, endpoint::start_low(word), endpoint::START_MASK) {
        Liveness::Alive => EndpointState::Alive { pid },
        Liveness::Dead => EndpointState::Dead { pid },
    })
}

/// Notes positions a correct peer cannot produce.
fn check_positions(snap: &mut Snapshot) {
    if snap.head > snap.tail {
        snap.problems.push(format!("head {} is ahead of tail {}", snap.head, snap.tail));
    } else if snap.tail - snap.head > snap.capacity {
        snap.problems.push(format!(
            "tail {} is more than the capacity {} ahead of head {}",
            snap.tail, snap.capacity, snap.head
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Backing;

    fn name(tag: &str) -> String {
        format!("/shmchan-inspect-{}-{tag}", std::process::id())
    }

    #[test]
    fn reads_an_spsc_segment_without_disturbing_it() {
        let n = name("spsc");
        let opts = crate::spsc::Options::new().capacity(8);
        let chan = crate::spsc::Channel::<u64>::create(Backing::posix(&n), &opts).unwrap();
        let (mut tx, mut rx) = (chan.producer().unwrap(), chan.consumer().unwrap());
        for v in 0..5 {
            tx.send(v).unwrap();
        }
        assert_eq!(rx.recv().unwrap(), 0);
        let snap = inspect(&Target::Posix(n.clone())).unwrap();
        assert_eq!(snap.kind, Kind::Spsc);
        assert_eq!((snap.capacity, snap.elem_size, snap.fill()), (8, 8, 4));
        assert!(snap.creator_alive && snap.in_use() && !snap.poisoned);
        assert!(snap.problems.is_empty());
        let me = std::process::id();
        assert_eq!(snap.endpoints.len(), 2);
        assert!(snap.endpoints.iter().all(|e| e.state == EndpointState::Alive { pid: me }));
        // The channel carries on as if nobody had looked.
        for v in 1..5 {
            assert_eq!(rx.recv().unwrap(), v);
        }
        drop(tx);
        let snap = inspect(&Target::Posix(n.clone())).unwrap();
        assert!(snap.endpoints.contains(&Endpoint {
            role: Role::Producer,
            index: 0,
            state: EndpointState::Detached { pid: me },
            unfinished_claim: None,
        }));
    }

    #[test]
    fn reads_mpmc_and_byte_segments() {
        let n = name("mpmc");
        let opts = crate::mpmc::Options::new().capacity(16).max_endpoints(4);
        let chan = crate::mpmc::Channel::<u32>::create(Backing::posix(&n), &opts).unwrap();
        let (mut tx, _rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
        tx.send(7).unwrap();
        let snap = inspect(&Target::Posix(n.clone())).unwrap();
        assert_eq!((snap.kind, snap.fill(), snap.max_endpoints), (Kind::Mpmc, 1, Some(4)));
        assert_eq!((snap.lost_writes, snap.lost_reads), (Some(0), Some(0)));
        let roles: Vec<Role> = snap.endpoints.iter().map(|e| e.role).collect();
        assert_eq!(roles, [Role::Sender, Role::Receiver]);
        assert!(snap.endpoints.iter().all(|e| e.unfinished_claim.is_none()), "all finished");
        // A claim left unfinished, as by a sender killed between its claim and its publish:
        // its lane names the position at `tail`, `tail` moves past it, the slot stays free.
        let file = std::fs::OpenOptions::new().write(true).open(format!("/dev/shm{n}")).unwrap();
        let write = |offset: u64, value: u64| {
            std::os::unix::fs::FileExt::write_all_at(&file, &value.to_le_bytes(), offset).unwrap()
        };
        let control = layout::CONTROL_OFFSET;
        write(control + REGISTRY_OFFSET + 8, snap.tail);
        write(control + layout::LINE, snap.tail + 1);
        let after = inspect(&Target::Posix(n.clone())).unwrap();
        let claims: Vec<_> = after.endpoints.iter().map(|e| e.unfinished_claim).collect();
        assert_eq!(claims, [Some(snap.tail), None]);

        let n = name("bytes");
        let opts = crate::bytes::Options::new().capacity_bytes(4096).max_message(100);
        let chan = crate::bytes::Channel::create(Backing::posix(&n), &opts).unwrap();
        let mut tx = chan.producer().unwrap();
        tx.send(b"hello").unwrap();
        let snap = inspect(&Target::Posix(n)).unwrap();
        assert_eq!((snap.kind, snap.max_message, snap.fill()), (Kind::Bytes, Some(100), 16));
    }

    #[test]
    fn rejects_what_is_not_a_segment() {
        let dir = std::env::temp_dir().join(format!("shmchan-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plain");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let err = inspect(&Target::File(path.clone())).unwrap_err();
        assert!(matches!(err, OpenError::BadMagic { .. }), "{err:?}");
        std::fs::write(&path, b"short").unwrap();
        let err = inspect(&Target::File(path)).unwrap_err();
        assert!(matches!(err, OpenError::TooSmall { .. }), "{err:?}");
        let err = inspect(&Target::Posix(name("missing"))).unwrap_err();
        assert!(matches!(err, OpenError::NotFound), "{err:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
