//! Shared objects and their mappings.
//!
//! Creation is exclusive (`O_CREAT|O_EXCL`), never follows a symlink (`O_NOFOLLOW`), sets
//! close-on-exec, and sets the mode explicitly with `fchmod` so the umask cannot loosen or tighten
//! it. Space is reserved at creation (`posix_fallocate`, or `MADV_POPULATE_WRITE` where there is
//! no fd), so a full `/dev/shm` is an error at create time instead of a `SIGBUS` later. Opening
//! checks the object with `fstat`: a regular file, owned by us unless the caller allows otherwise,
//! and mapped at exactly its real size, so a short object is an error and never a mapping past its
//! end.
//!
//! A [`Mapping`] is held as a raw pointer and length (memmap2's `MmapRaw`, or a System V
//! attachment): no `&[u8]` into shared memory is ever formed.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::ptr::NonNull;

use nix::fcntl::{FcntlArg, OFlag, SealFlag};
use nix::sys::mman;
use nix::sys::stat::{Mode, SFlag};

use crate::error::OpenError;

/// Largest segment we agree to map: far beyond any sane channel, far below address-space limits.
pub(crate) const MAX_SEGMENT_LEN: u64 = 1 << 40;

/// The seals a memfd segment must carry: its size can never change, so no peer can make our
/// mapping run past the end of the object.
pub(crate) const REQUIRED_SEALS: SealFlag = SealFlag::F_SEAL_SHRINK.union(SealFlag::F_SEAL_GROW);

/// What `open` accepts about an existing object beyond being a regular file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenPolicy {
    /// Accept an object owned by another user (one who shared it with us on purpose).
    pub allow_foreign_owner: bool,
}

/// A shared mapping, held as a raw base pointer and a length.
#[derive(Debug)]
pub(crate) struct Mapping {
    base: NonNull<u8>,
    len: usize,
    kind: MappingKind,
}

#[derive(Debug)]
enum MappingKind {
    Mmap(memmap2::MmapRaw),
    /// `MAP_SHARED|MAP_ANONYMOUS` (memmap2's anonymous maps are private, so they cannot be
    /// shared across `fork`); unmapped on drop.
    SharedAnonymous,
    SysV,
}

// SAFETY: a Mapping is an address range owned by this value until drop; it carries no
// thread-affine state, and all access to the bytes goes through raw pointers and atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only exposes the base pointer and length.
unsafe impl Sync for Mapping {}

impl Mapping {
    pub(crate) fn base(&self) -> NonNull<u8> {
        self.base
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes dirty pages back to the backing file (`msync(MS_SYNC)`); a no-op for memory
    /// without a file behind it.
    pub(crate) fn flush(&self) -> io::Result<()> {
        match &self.kind {
            MappingKind::Mmap(raw) => raw.flush(),
            MappingKind::SharedAnonymous | MappingKind::SysV => Ok(()),
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        match self.kind {
            MappingKind::Mmap(_) => {}
            MappingKind::SharedAnonymous => {
                // SAFETY: [base, base+len) is the mapping mmap returned for this value, unmapped
                // once; every handle that used it holds this Mapping alive until now.
                let _ = unsafe { mman::munmap(self.base.cast(), self.len) };
            }
            MappingKind::SysV => {
                // SAFETY: `base` is the address shmat returned for this attachment, detached once.
                unsafe { libc::shmdt(self.base.as_ptr().cast()) };
            }
        }
    }
}

/// A validated POSIX shm name: one leading `/`, no other `/`, no NUL, at most 255 bytes.
pub(crate) fn posix_name(name: &str) -> Result<CString, OpenError> {
    let trimmed = name.strip_prefix('/').unwrap_or(name);
    if trimmed.is_empty() || trimmed.len() > 254 || trimmed.contains('/') || trimmed.contains('\0')
    {
        return Err(OpenError::InvalidName { name: name.to_owned() });
    }
    Ok(CString::new(format!("/{trimmed}")).expect("checked for NUL above"))
}

fn exclusive_flags() -> OFlag {
    OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn open_flags() -> OFlag {
    OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn read_only_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens a POSIX shm object read-only, for inspection (any owner: reading changes nothing).
pub(crate) fn open_posix_read_only(name: &CString) -> Result<(OwnedFd, u64), OpenError> {
    let fd = mman::shm_open(name.as_c_str(), read_only_flags(), Mode::empty())
        .map_err(|e| OpenError::from_errno(e, "shm_open"))?;
    let len = check_object(&fd, OpenPolicy { allow_foreign_owner: true }, false)?;
    Ok((fd, len))
}

/// Opens a regular file read-only, for inspection.
pub(crate) fn open_file_read_only(path: &Path) -> Result<(OwnedFd, u64), OpenError> {
    let raw = nix::fcntl::open(path, read_only_flags(), Mode::empty())
        .map_err(|e| OpenError::from_errno(e, "open"))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len = check_object(&fd, OpenPolicy { allow_foreign_owner: true }, false)?;
    Ok((fd, len))
}

/// Creates a POSIX shm object of `len` bytes with exactly `mode`, space reserved.
/// On any failure after the name exists, the name is removed again.
pub(crate) fn create_posix(name: &CString, len: u64, mode: u32) -> Result<OwnedFd, OpenError> {
    let fd = mman::shm_open(name.as_c_str(), exclusive_flags(), Mode::from_bits_truncate(mode))
        .map_err(|e| OpenError::from_errno(e, "shm_open"))?;
    size_new_object(&fd, len, mode).inspect_err(|_| {
        let _ = mman::shm_unlink(name.as_c_str());
    })?;
    Ok(fd)
}

pub(crate) fn open_posix(name: &CString, policy: OpenPolicy) -> Result<OwnedFd, OpenError> {
    let fd = mman::shm_open(name.as_c_str(), open_flags(), Mode::empty())
        .map_err(|e| OpenError::from_errno(e, "shm_open"))?;
    check_object(&fd, policy, false)?;
    Ok(fd)
}

pub(crate) fn unlink_posix(name: &CString) -> io::Result<()> {
    mman::shm_unlink(name.as_c_str()).map_err(io::Error::from)
}

/// Creates a regular file of `len` bytes with exactly `mode`, blocks allocated.
pub(crate) fn create_file(path: &Path, len: u64, mode: u32) -> Result<OwnedFd, OpenError> {
    let raw = nix::fcntl::open(path, exclusive_flags(), Mode::from_bits_truncate(mode))
        .map_err(|e| OpenError::from_errno(e, "open"))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    size_new_object(&fd, len, mode).inspect_err(|_| {
        let _ = std::fs::remove_file(path);
    })?;
    Ok(fd)
}

pub(crate) fn open_file(path: &Path, policy: OpenPolicy) -> Result<OwnedFd, OpenError> {
    let raw = nix::fcntl::open(path, open_flags(), Mode::empty())
        .map_err(|e| OpenError::from_errno(e, "open"))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    check_object(&fd, policy, false)?;
    Ok(fd)
}

/// Creates a memfd of `len` bytes, space reserved, sealed against shrinking, growing and any
/// further seal changes; the seals are read back before the fd is handed out.
pub(crate) fn create_memfd(name: &str, len: u64) -> Result<OwnedFd, OpenError> {
    let cname = CString::new(name).map_err(|_| OpenError::InvalidName { name: name.into() })?;
    let flags = nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC
        | nix::sys::memfd::MemFdCreateFlag::MFD_ALLOW_SEALING;
    let fd = nix::sys::memfd::memfd_create(&cname, flags)
        .map_err(|e| OpenError::from_errno(e, "memfd_create"))?;
    size_new_object(&fd, len, 0o600)?;
    let seals = REQUIRED_SEALS | SealFlag::F_SEAL_SEAL;
    nix::fcntl::fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals))
        .map_err(|e| OpenError::from_errno(e, "fcntl(F_ADD_SEALS)"))?;
    let got = read_seals(&fd)?;
    if !got.contains(seals) {
        return Err(OpenError::MissingSeals { found: got.bits() as u32 });
    }
    Ok(fd)
}

/// Checks an fd received from a peer: a sealed regular file (memfd) of a plausible size.
pub(crate) fn check_received_fd(fd: &OwnedFd, policy: OpenPolicy) -> Result<u64, OpenError> {
    check_object(fd, policy, true)
}

fn read_seals(fd: &OwnedFd) -> Result<SealFlag, OpenError> {
    let bits = nix::fcntl::fcntl(fd.as_raw_fd(), FcntlArg::F_GET_SEALS)
        .map_err(|_| OpenError::MissingSeals { found: 0 })?;
    Ok(SealFlag::from_bits_truncate(bits))
}

/// Sets the exact mode, the size and reserves the space of a freshly created object.
fn size_new_object(fd: &OwnedFd, len: u64, mode: u32) -> Result<(), OpenError> {
    nix::sys::stat::fchmod(fd.as_raw_fd(), Mode::from_bits_truncate(mode))
        .map_err(|e| OpenError::from_errno(e, "fchmod"))?;
    let len_off = libc::off_t::try_from(len).map_err(|_| OpenError::InvalidOption {
        reason: format!("segment length {len} is too large"),
    })?;
    nix::fcntl::posix_fallocate(fd.as_raw_fd(), 0, len_off).map_err(|e| match e {
        nix::errno::Errno::ENOSPC => OpenError::NoSpace { requested: len },
        e => OpenError::from_errno(e, "posix_fallocate"),
    })?;
    let size = object_size(fd)?;
    if size != len {
        return Err(OpenError::Corrupted {
            reason: format!("created {len} bytes, object has {size}"),
        });
    }
    Ok(())
}

/// The current size of an object, from `fstat`.
pub(crate) fn object_size(fd: &OwnedFd) -> Result<u64, OpenError> {
    let st =
        nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| OpenError::from_errno(e, "fstat"))?;
    Ok(st.st_size.max(0) as u64)
}

/// Type, owner and (optionally) seal checks on an object we are about to map.
fn check_object(fd: &OwnedFd, policy: OpenPolicy, need_seals: bool) -> Result<u64, OpenError> {
    let st =
        nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| OpenError::from_errno(e, "fstat"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind != SFlag::S_IFREG {
        return Err(OpenError::NotASegment {
            reason: format!("not a regular file (mode {:o})", st.st_mode),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if !policy.allow_foreign_owner && st.st_uid != me {
        return Err(OpenError::ForeignOwner { uid: st.st_uid, expected: me });
    }
    if need_seals {
        let seals = read_seals(fd)?;
        if !seals.contains(REQUIRED_SEALS) {
            return Err(OpenError::MissingSeals { found: seals.bits() as u32 });
        }
    }
    Ok(st.st_size.max(0) as u64)
}

/// Maps exactly `len` bytes of `fd` shared and read-write (or read-only).
pub(crate) fn map_fd(fd: &OwnedFd, len: u64, read_only: bool) -> Result<Mapping, OpenError> {
    if len == 0 || len > MAX_SEGMENT_LEN {
        return Err(OpenError::TooSmall { expected: 1, found: len });
    }
    let mut opts = memmap2::MmapOptions::new();
    opts.len(len as usize);
    let raw = if read_only {
        // SAFETY: memmap2 asks callers of `map` to rule out concurrent modification of the
        // file; we cannot (a peer writes it), so the `Mmap` is converted to a raw mapping at
        // once and only ever read through raw pointers, volatile reads and atomics.
        unsafe { opts.map(fd.as_fd().as_raw_fd()) }.map(memmap2::MmapRaw::from)
    } else {
        opts.map_raw(fd.as_fd().as_raw_fd())
    }
    .map_err(|e| OpenError::Io { op: "mmap", source: e })?;
    Ok(Mapping { base: ptr_of(raw.as_mut_ptr()), len: raw.len(), kind: MappingKind::Mmap(raw) })
}

/// An anonymous shared mapping (`MAP_SHARED|MAP_ANONYMOUS`), inherited by children across `fork`.
pub(crate) fn map_anonymous(len: u64) -> Result<Mapping, OpenError> {
    if len == 0 || len > MAX_SEGMENT_LEN {
        return Err(OpenError::TooSmall { expected: 1, found: len });
    }
    let size = std::num::NonZeroUsize::new(len as usize).expect("checked non-zero above");
    // SAFETY: a fresh anonymous mapping at an address the kernel picks aliases nothing.
    let base = unsafe {
        mman::mmap_anonymous(
            None,
            size,
            mman::ProtFlags::PROT_READ | mman::ProtFlags::PROT_WRITE,
            mman::MapFlags::MAP_SHARED | mman::MapFlags::MAP_ANONYMOUS,
        )
    }
    .map_err(|e| OpenError::from_errno(e, "mmap"))?;
    let mapping =
        Mapping { base: base.cast(), len: len as usize, kind: MappingKind::SharedAnonymous };
    populate(mapping.base.as_ptr(), mapping.len)?;
    Ok(mapping)
}

fn ptr_of(p: *mut u8) -> NonNull<u8> {
    NonNull::new(p).expect("mmap never returns a null mapping")
}

const MADV_POPULATE_WRITE: libc::c_int = 23;

/// Faults in every page for writing now, so that running out of memory is an error here rather
/// than a `SIGBUS` on first touch. Kernels before 5.14 lack the advice: then pages are touched on
/// first use, as before.
fn populate(base: *mut u8, len: usize) -> Result<(), OpenError> {
    // SAFETY: [base, base+len) is a mapping we own; MADV_POPULATE_WRITE changes no contents.
    let rc = unsafe { libc::madvise(base.cast(), len, MADV_POPULATE_WRITE) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) => Ok(()),
        Some(libc::ENOMEM) | Some(libc::EFAULT) => {
            Err(OpenError::NoSpace { requested: len as u64 })
        }
        _ => Err(OpenError::Io { op: "madvise(MADV_POPULATE_WRITE)", source: err }),
    }
}

/// Creates a System V segment (`IPC_PRIVATE` when `key` is `None`) of `len` bytes, exclusively,
/// with exactly `mode`, attached and populated. Returns its id and the attachment.
pub(crate) fn create_sysv(
    key: Option<i32>,
    len: u64,
    mode: u32,
) -> Result<(i32, Mapping), OpenError> {
    if len == 0 || len > MAX_SEGMENT_LEN {
        return Err(OpenError::TooSmall { expected: 1, found: len });
    }
    let flags = libc::IPC_CREAT | libc::IPC_EXCL | (mode & 0o777) as libc::c_int;
    // SAFETY: shmget takes no pointers.
    let id = unsafe { libc::shmget(key.unwrap_or(libc::IPC_PRIVATE), len as usize, flags) };
    if id < 0 {
        return Err(OpenError::from_io(io::Error::last_os_error(), "shmget"));
    }
    let attach = attach_sysv(id, len as usize, false).and_then(|m| {
        populate(m.base.as_ptr(), m.len)?;
        Ok(m)
    });
    match attach {
        Ok(m) => Ok((id, m)),
        Err(e) => {
            let _ = remove_sysv(id);
            Err(e)
        }
    }
}

/// The id of the System V segment with `key`.
pub(crate) fn sysv_id_for_key(key: i32) -> Result<i32, OpenError> {
    // SAFETY: shmget takes no pointers; size 0 and no IPC_CREAT only look the key up.
    let id = unsafe { libc::shmget(key, 0, 0) };
    if id < 0 {
        return Err(OpenError::from_io(io::Error::last_os_error(), "shmget"));
    }
    Ok(id)
}

/// Attaches System V segment `id` after checking its owner and size (`IPC_STAT`).
pub(crate) fn open_sysv(id: i32, policy: OpenPolicy) -> Result<(Mapping, u64), OpenError> {
    // SAFETY: an all-zero shmid_ds is a valid value of this plain C struct.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: `ds` is a valid out-pointer for IPC_STAT.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } < 0 {
        return Err(OpenError::from_io(io::Error::last_os_error(), "shmctl(IPC_STAT)"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if !policy.allow_foreign_owner && ds.shm_perm.uid != me {
        return Err(OpenError::ForeignOwner { uid: ds.shm_perm.uid, expected: me });
    }
    let size = ds.shm_segsz as u64;
    if size == 0 || size > MAX_SEGMENT_LEN {
        return Err(OpenError::TooSmall { expected: 1, found: size });
    }
    Ok((attach_sysv(id, size as usize, false)?, size))
}

fn attach_sysv(id: i32, len: usize, read_only: bool) -> Result<Mapping, OpenError> {
    let flags = if read_only { libc::SHM_RDONLY } else { 0 };
    // SAFETY: a null address lets the kernel choose where to attach.
    let addr = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if addr as isize == -1 {
        return Err(OpenError::from_io(io::Error::last_os_error(), "shmat"));
    }
    Ok(Mapping { base: ptr_of(addr.cast()), len, kind: MappingKind::SysV })
}

/// Marks System V segment `id` for removal (it goes once the last process detaches).
pub(crate) fn remove_sysv(id: i32) -> io::Result<()> {
    // SAFETY: IPC_RMID ignores the buffer argument.
    if unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_names_are_normalised_and_checked() {
        assert_eq!(posix_name("abc").unwrap().to_str().unwrap(), "/abc");
        assert_eq!(posix_name("/abc").unwrap().to_str().unwrap(), "/abc");
        assert!(posix_name("").is_err());
        assert!(posix_name("/").is_err());
        assert!(posix_name("a/b").is_err());
        assert!(posix_name(&"x".repeat(300)).is_err());
    }
}
