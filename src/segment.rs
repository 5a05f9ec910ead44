//! A mapped, validated shmchan segment: where it lives, its private geometry, and clean-up.
//!
//! Creation writes the header and control block, stamps every slot, and publishes
//! `init_state = INIT_READY` last (Release). Opening waits (bounded) for that word, copies the
//! header out once, validates the copy against the element type and the object's real size,
//! and from then on uses only the private [`Geometry`].

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::OpenError;
use crate::layout::{self, ElementType, Flavor, Geometry, RawHeader};
use crate::os::process;
use crate::os::segment::{self as os_seg, Mapping, OpenPolicy};
use crate::sync::atomic::{AtomicU32, Ordering};

/// Where a segment lives.
///
/// | backing | create | open | lifetime | choose it for |
/// |---|---|---|---|---|
/// | [`Posix`](Backing::Posix) | `shm_open` in `/dev/shm` | by name | until removed or reboot | unrelated processes that agree on a name |
/// | [`File`](Backing::File) | a regular file | by path | on disk, survives reboot | persistence, rings larger than RAM, `flush()` |
/// | [`Anonymous`](Backing::Anonymous) | `MAP_SHARED|MAP_ANONYMOUS` | inherited by `fork` | until the last process exits | a parent and the children it forks; no name to race for |
/// | [`Memfd`](Backing::Memfd) | sealed `memfd_create` | [`Fd`](Backing::Fd) from a Unix socket | until the last fd/mapping goes | untrusted peers: no name, size sealed |
/// | [`SysV`](Backing::SysV) | `shmget` | by key ([`SysV`](Backing::SysV)) or [`SysVId`](Backing::SysVId) | until removed or reboot | systems built around SysV keys |
#[derive(Debug)]
#[non_exhaustive]
pub enum Backing {
    /// A POSIX shared memory object; the name may omit the leading `/`.
    Posix(String),
    /// A regular file on any filesystem.
    File(PathBuf),
    /// An anonymous shared mapping (create only; children inherit it across `fork`).
    Anonymous,
    /// A sealed memfd (create only); pass [`Channel::fd`](crate::spsc::Channel::fd) to the peer.
    Memfd,
    /// An fd received from a peer (open only); it must be a sealed memfd.
    Fd(OwnedFd),
    /// System V shared memory with a key, or `IPC_PRIVATE` when `None` (create only).
    SysV(Option<i32>),
    /// An existing System V segment by id (open only).
    SysVId(i32),
}

impl Backing {
    /// A POSIX shm object named `name`.
    pub fn posix(name: impl Into<String>) -> Self {
        Backing::Posix(name.into())
    }

    /// A regular file at `path`.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Backing::File(path.into())
    }
}

/// What this process removes when its last handle to the segment goes.
#[derive(Debug)]
enum Cleanup {
    None,
    Posix(CString),
    File(PathBuf),
    SysV(i32),
}

/// Parameters that creation and opening share.
#[derive(Debug, Clone)]
pub(crate) struct SegmentParams {
    pub element: ElementType,
    pub capacity: u64,
    /// The flavor's extra dimension (header field `extra`).
    pub extra: u64,
    pub mode: u32,
    pub remove_on_drop: bool,
    pub allow_foreign_owner: bool,
    pub open_timeout: Duration,
    pub start_position: u64,
}

/// A mapped segment with a validated header.
#[derive(Debug)]
pub(crate) struct Segment {
    mapping: Mapping,
    geometry: Geometry,
    fd: Option<OwnedFd>,
    sysv_id: Option<i32>,
    cleanup: Cleanup,
    /// Only the creating process cleans up (a forked child inherits this value too).
    creator_pid: u32,
}

impl Segment {
    pub(crate) fn create<F: Flavor>(
        backing: Backing,
        params: &SegmentParams,
    ) -> Result<Self, OpenError> {
        let e = &params.element;
        let geometry = F::geometry(params.capacity, e.size, e.align, params.extra)
            .map_err(|reason| OpenError::InvalidOption { reason })?;
        if params.mode & !0o777 != 0 {
            return Err(OpenError::InvalidOption { reason: format!("mode {:o}", params.mode) });
        }
        let len = geometry.segment_len;
        let keep = |c: Cleanup| if params.remove_on_drop { c } else { Cleanup::None };
        let (mapping, fd, sysv_id, cleanup) = match backing {
            Backing::Posix(name) => {
                let name = os_seg::posix_name(&name)?;
                let fd = os_seg::create_posix(&name, len, params.mode)?;
                let mapping = os_seg::map_fd(&fd, len, false).inspect_err(|_| {
                    let _ = os_seg::unlink_posix(&name);
                })?;
                (mapping, Some(fd), None, keep(Cleanup::Posix(name)))
            }
            Backing::File(path) => {
                let fd = os_seg::create_file(&path, len, params.mode)?;
                let mapping = os_seg::map_fd(&fd, len, false).inspect_err(|_| {
                    let _ = std::fs::remove_file(&path);
                })?;
                (mapping, Some(fd), None, keep(Cleanup::File(path)))
            }
            Backing::Anonymous => (os_seg::map_anonymous(len)?, None, None, Cleanup::None),
            Backing::Memfd => {
                let fd = os_seg::create_memfd("shmchan", len)?;
                (os_seg::map_fd(&fd, len, false)?, Some(fd), None, Cleanup::None)
            }
            Backing::SysV(key) => {
                let (id, mapping) = os_seg::create_sysv(key, len, params.mode)?;
                (mapping, None, Some(id), keep(Cleanup::SysV(id)))
            }
            Backing::Fd(_) | Backing::SysVId(_) => {
                return Err(OpenError::InvalidOption {
                    reason: "an fd or SysV id names an existing segment: open it instead".into(),
                });
            }
        };
        debug_assert!(mapping.len() as u64 >= geometry.segment_len);
        let segment =
            Segment { mapping, geometry, fd, sysv_id, cleanup, creator_pid: std::process::id() };
        segment.initialize::<F>(params)?;
        Ok(segment)
    }

    /// Writes header, control block and slots, then publishes READY.
    fn initialize<F: Flavor>(&self, params: &SegmentParams) -> Result<(), OpenError> {
        let g = &self.geometry;
        let me =
            process::current().map_err(|e| OpenError::Io { op: "/proc/self/stat", source: e })?;
        let mut header = RawHeader {
            magic: layout::MAGIC,
            init_state: 0,
            version_major: layout::VERSION_MAJOR,
            version_minor: layout::VERSION_MINOR,
            flavor: F::ID,
            header_len: layout::HEADER_LEN as u32,
            segment_len: g.segment_len,
            capacity: g.capacity,
            elem_size: g.elem_size,
            elem_align: g.elem_align,
            slot_stride: g.slot_stride,
            slots_offset: g.slots_offset,
            fingerprint: params.element.fingerprint,
            creator_pid: me.pid,
            _pad0: 0,
            creator_start: me.start_ticks,
            extra: g.extra,
            reserved: [0; 2],
            checksum: 0,
        };
        header.checksum = header.compute_checksum();
        let base = self.mapping.base().as_ptr();
        // SAFETY: the mapping is at least segment_len >= HEADER_LEN bytes and page aligned. A
        // volatile write forms no reference; openers read these bytes only after READY.
        unsafe { std::ptr::write_volatile(base.cast::<RawHeader>(), header) };
        // SAFETY: the mapping holds segment_len bytes, page aligned; no peer uses the control
        // block or slots before READY below.
        unsafe { F::initialize(base, g, params.start_position) };
        // SYNC: Release pairs with the opener's Acquire load in `wait_ready`: everything above
        // is visible to whoever sees READY.
        self.init_state().store(layout::INIT_READY, Ordering::Release);
        Ok(())
    }

    pub(crate) fn open<F: Flavor>(
        backing: Backing,
        params: &SegmentParams,
    ) -> Result<Self, OpenError> {
        let deadline = Instant::now() + params.open_timeout;
        let policy = OpenPolicy { allow_foreign_owner: params.allow_foreign_owner };
        let (mapping, object_len, fd, sysv_id) = match backing {
            Backing::Posix(name) => {
                let name = os_seg::posix_name(&name)?;
                let fd = os_seg::open_posix(&name, policy)?;
                let len = wait_for_size(&fd, deadline)?;
                (os_seg::map_fd(&fd, len, false)?, len, Some(fd), None)
            }
            Backing::File(path) => {
                let fd = os_seg::open_file(&path, policy)?;
                let len = wait_for_size(&fd, deadline)?;
                (os_seg::map_fd(&fd, len, false)?, len, Some(fd), None)
            }
            Backing::Fd(fd) => {
                let len = os_seg::check_received_fd(&fd, policy)?;
                check_min_len(len)?;
                (os_seg::map_fd(&fd, len, false)?, len, Some(fd), None)
            }
            Backing::SysV(Some(key)) => {
                let id = os_seg::sysv_id_for_key(key)?;
                let (mapping, len) = os_seg::open_sysv(id, policy)?;
                check_min_len(len)?;
                (mapping, len, None, Some(id))
            }
            Backing::SysVId(id) => {
                let (mapping, len) = os_seg::open_sysv(id, policy)?;
                check_min_len(len)?;
                (mapping, len, None, Some(id))
            }
            Backing::Anonymous | Backing::Memfd | Backing::SysV(None) => {
                return Err(OpenError::InvalidOption {
                    reason: "anonymous, memfd and IPC_PRIVATE segments have no name to open: \
                             inherit the channel, or open the passed fd or SysV id"
                        .into(),
                });
            }
        };
        let header = wait_ready(&mapping, deadline)?;
        let geometry = layout::validate_header::<F>(&header, &params.element, object_len)?;
        debug_assert!(mapping.len() as u64 >= geometry.segment_len);
        Ok(Segment {
            mapping,
            geometry,
            fd,
            sysv_id,
            cleanup: Cleanup::None,
            creator_pid: std::process::id(),
        })
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// The control block, as the flavor's type `C`.
    ///
    /// # Safety
    /// `C` must be the control block type of the flavor this segment was created or validated
    /// with (so it fits before `slots_offset`), and consist of atomics only: other processes
    /// write it at any time.
    #[inline(always)]
    pub(crate) unsafe fn control<C>(&self) -> &C {
        // SAFETY: per the contract, C lies at the 128-aligned CONTROL_OFFSET of a page-aligned
        // mapping that the validated geometry says is long enough; atomics tolerate sharing.
        unsafe { &*self.mapping.base().as_ptr().add(layout::CONTROL_OFFSET as usize).cast() }
    }

    /// Base of slot 0.
    pub(crate) fn slots_base(&self) -> *mut u8 {
        // SAFETY: slots_offset + capacity * stride <= segment_len <= mapping length (validated).
        unsafe { self.mapping.base().as_ptr().add(self.geometry.slots_offset as usize) }
    }

    fn init_state(&self) -> &AtomicU32 {
        // SAFETY: offset 8 of the header is a 4-aligned u32 inside the mapping.
        unsafe { &*self.mapping.base().as_ptr().add(layout::INIT_STATE_OFFSET as usize).cast() }
    }

    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    pub(crate) fn sysv_id(&self) -> Option<i32> {
        self.sysv_id
    }

    pub(crate) fn flush(&self) -> std::io::Result<()> {
        self.mapping.flush()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if std::process::id() != self.creator_pid {
            return;
        }
        let _ = match &self.cleanup {
            Cleanup::None => Ok(()),
            Cleanup::Posix(name) => os_seg::unlink_posix(name),
            Cleanup::File(path) => std::fs::remove_file(path),
            Cleanup::SysV(id) => os_seg::remove_sysv(*id),
        };
    }
}

/// Anything shorter cannot even hold a header.
fn check_min_len(len: u64) -> Result<(), OpenError> {
    let min = layout::HEADER_LEN;
    if len < min {
        return Err(OpenError::TooSmall { expected: min, found: len });
    }
    Ok(())
}

/// The object's size once the creator has sized it: a creator sizes a fresh object in one step
/// (from 0), so only a zero size is worth waiting for.
fn wait_for_size(fd: &OwnedFd, deadline: Instant) -> Result<u64, OpenError> {
    loop {
        let len = os_seg::object_size(fd)?;
        if len != 0 || Instant::now() >= deadline {
            check_min_len(len)?;
            return Ok(len);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (bounded) for `init_state == READY`, then copies the header out.
fn wait_ready(mapping: &Mapping, deadline: Instant) -> Result<RawHeader, OpenError> {
    let base = mapping.base().as_ptr();
    // SAFETY: the mapping is at least HEADER_LEN bytes (checked by the caller)
    // and page aligned; offset 8 is a 4-aligned u32 read atomically.
    let init_state: &AtomicU32 = unsafe { &*base.add(layout::INIT_STATE_OFFSET as usize).cast() };
    loop {
        // SYNC: Acquire pairs with the creator's Release store of READY in `initialize`.
        let state = init_state.load(Ordering::Acquire);
        // SAFETY: the header lies within the mapping; a volatile copy forms no reference and any
        // bit pattern is a valid RawHeader (all integers).
        let header = unsafe { std::ptr::read_volatile(base.cast::<RawHeader>()) };
        if header.magic != layout::MAGIC && header.magic != 0 {
            return Err(OpenError::BadMagic { found: header.magic });
        }
        if state == layout::INIT_READY {
            return Ok(header);
        }
        if Instant::now() >= deadline {
            return if state == 0 {
                Err(OpenError::NotInitialized)
            } else {
                Err(OpenError::Corrupted { reason: format!("init state {state:#x}") })
            };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
