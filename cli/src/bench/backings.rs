//! The backings compared: is a ring in an mmap'd regular file slower than one in POSIX or
//! System V shared memory, a memfd, or an anonymous mapping shared across `fork`?
//!
//! # Steady state (between two processes, through shmchan's SPSC channel)
//!
//! Every backing carries the same rings of 64-byte messages (`[u64; 8]`, `WaitStrategy::Spin`)
//! to a peer process pinned to the other CPU. How the peer reaches the segment is the
//! backing's own way (field `peer`):
//!
//! | `backing` | created with | the peer |
//! |---|---|---|
//! | `posix_shm` | `Backing::posix` (`/dev/shm`) | a re-executed child opens the name |
//! | `file_disk` | `Backing::file` on a disk filesystem (field `fs`) | a re-executed child opens the path |
//! | `anon_fork` | `Backing::Anonymous` | a forked child (no exec) uses the inherited mapping |
//! | `memfd` | `Backing::Memfd` (sealed) | a re-executed child inherits the fd (close-on-exec cleared in its `pre_exec`) and opens it as `Backing::Fd` |
//! | `sysv_shm` | `Backing::SysV(None)` (`IPC_PRIVATE`) | a re-executed child opens `Backing::SysVId` |
//!
//! The file lives in a fresh directory under the temp dir when that is not tmpfs (statfs), else
//! under `target/` or the current directory; the filesystem type comes from
//! `/proc/self/mountinfo`.
//!
//! - `backing/latency/<backing>/64B` (`kind: backing_latency`): ping-pong over two channels,
//!   one-way latency = half the round trip, HdrHistogram percentiles; the same method and
//!   budget as `latency/shmchan_spsc_spin/64B`. `parent_minor_faults` counts the page faults
//!   the measuring thread took during the measured round trips: zero means the pages stayed
//!   resident and writable throughout (after a fork, the anon_fork parent may take a few
//!   copy-on-write faults on its own heap and stack, none on the ring).
//! - `backing/throughput/<backing>/64B` (`kind: backing_throughput`): the peer sends
//!   `plan.messages(64)` messages per repetition, one `try_send` each, as fast as the ring
//!   takes them; the parent times their arrival with `try_recv`; median of `plan.reps` after
//!   one uncounted warm-up repetition (the method of `throughput/shmchan_spsc/64B`).
//!
//! # One-off costs (in this process, on raw mappings made with libc)
//!
//! The cost of the memory kind itself, without shmchan: a fresh region of 64 MiB (8 MiB in
//! quick mode) per repetition, the object sized with `ftruncate` (sparse: no page or block
//! exists until first written), mapped `MAP_SHARED` without prefaulting. One 8-byte volatile
//! write per page touches it. Medians of `plan.reps` repetitions, at least five (`best`/`worst`
//! beside them).
//!
//! - `backing/first_touch/<backing>` (ns/page): the first write to every page. On the shmem
//!   kinds (everything but `file_disk`) the fault allocates and zeroes a page; on a file it
//!   also goes through the filesystem's `page_mkwrite` (block reservation) and dirty tracking.
//! - `backing/first_touch_after_fallocate/<backing>` (ns/page, the kinds with an fd): the same
//!   after `posix_fallocate` reserved the space, as shmchan does when it creates a segment.
//! - `backing/msync/<backing>` (ns) and `backing/msync_per_page/<backing>` (ns/page):
//!   `msync(MS_SYNC)` of the whole region right after the first touch dirtied every page. For
//!   a file that is writeback of every page plus the filesystem's sync (journal commit); the
//!   shmem kinds have no backing store and their fsync does nothing, so their figure is the
//!   bare system call (a `note` field says so).
//! - `backing/redirty_after_msync/<backing>` (ns/page): one write per page again, after the
//!   msync. Writeback leaves file pages clean and write-protected (that is how the kernel
//!   tracks dirtiness), so each write takes a write-protect fault; shmem pages stay writable.
//! - `backing/attach/<backing>` (ns): `Channel::<[u64; 8]>::open` of an existing SPSC segment
//!   (capacity 4096) then drop: open + fstat/IPC_STAT + map + header validation + unmap. For
//!   `memfd` the "open" is a `dup` of the fd (what a peer holding the received fd does). Median
//!   (`value`) and p99 of many opens. `anon_fork` has nothing to open (a child inherits the
//!   mapping in `fork`): a `skipped` row says so.
//!
//! A facility this machine lacks (SysV shm off, no memfd, no disk filesystem, a limit) turns
//! that backing's rows into `skipped` rows with the reason.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, OpenError, TryRecvError, TrySendError, WaitStrategy};

use super::harness::{self, CHILD_DEADLINE, IdleLimit, Peer, ShmName, WATCHED};
use super::spsc_rows::{capacity_for, message, recv_bounded, send_bounded};
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step, size_name};

/// The message of every steady-state row.
type Msg = [u64; 8];
const MSG_BYTES: usize = size_of::<Msg>();
/// Re-executed peer roles.
const ROLE_ECHO: &str = "backings_echo";
const ROLE_SOURCE: &str = "backings_source";

/// The backings compared, by their `backing` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    PosixShm,
    FileDisk,
    AnonFork,
    Memfd,
    SysvShm,
}

impl Kind {
    const ALL: [Kind; 5] =
        [Kind::PosixShm, Kind::FileDisk, Kind::AnonFork, Kind::Memfd, Kind::SysvShm];

    fn name(self) -> &'static str {
        match self {
            Kind::PosixShm => "posix_shm",
            Kind::FileDisk => "file_disk",
            Kind::AnonFork => "anon_fork",
            Kind::Memfd => "memfd",
            Kind::SysvShm => "sysv_shm",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| format!("backing {s}?").into())
    }

    /// How the steady-state peer reaches the segment.
    fn peer(self) -> &'static str {
        match self {
            Kind::PosixShm => "exec_opens_name",
            Kind::FileDisk => "exec_opens_path",
            Kind::AnonFork => "fork_inherits_mapping",
            Kind::Memfd => "exec_inherits_fd",
            Kind::SysvShm => "exec_opens_sysv_id",
        }
    }

    /// Whether the object is reached through an fd (and can be `posix_fallocate`d).
    fn has_fd(self) -> bool {
        matches!(self, Kind::PosixShm | Kind::FileDisk | Kind::Memfd)
    }
}

/// A steady-state row of `kind`: what it measured, the backing, how the peer reached it and
/// the faults the measuring thread took.
fn steady_row(
    row: Record,
    row_kind: &str,
    kind: Kind,
    faults: u64,
    dir: Option<&DiskDir>,
) -> Record {
    let row = row
        .text("kind", row_kind)
        .text("backing", kind.name())
        .num("size", MSG_BYTES as f64)
        .text("wait", "spin")
        .text("peer", kind.peer())
        .num("parent_minor_faults", faults as f64);
    with_fs(row, dir)
}

pub(crate) fn steps(_plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    let size = size_name(MSG_BYTES);
    for kind in Kind::ALL {
        let name = format!("backing/latency/{}/{size}", kind.name());
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            with_backing(ctx, &name, kind, |ctx, dir| {
                let (s, faults) = latency(kind, &ctx.plan, ctx.there, dir)?;
                ctx.emit(steady_row(
                    Record::latency(&name, &s),
                    "backing_latency",
                    kind,
                    faults,
                    dir,
                ));
                Ok(())
            })
        }));
    }
    for kind in Kind::ALL {
        let name = format!("backing/throughput/{}/{size}", kind.name());
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            with_backing(ctx, &name, kind, |ctx, dir| {
                let (t, faults) = throughput(kind, &ctx.plan, ctx.there, dir)?;
                ctx.emit(steady_row(
                    Record::throughput(&name, MSG_BYTES, &t),
                    "backing_throughput",
                    kind,
                    faults,
                    dir,
                ));
                Ok(())
            })
        }));
    }
    for kind in Kind::ALL {
        let name = format!("backing/costs/{}", kind.name());
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            with_backing(ctx, &name, kind, |ctx, dir| {
                for row in region_costs(kind, &ctx.plan, dir)? {
                    ctx.emit(row);
                }
                Ok(())
            })
        }));
    }
    for kind in Kind::ALL {
        let name = format!("backing/attach/{}", kind.name());
        steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
            if kind == Kind::AnonFork {
                ctx.emit(skipped(
                    &name,
                    kind,
                    "an anonymous mapping has no name or fd to open: a child inherits it \
                     across fork, so attaching is part of the fork",
                ));
                return Ok(());
            }
            with_backing(ctx, &name, kind, |ctx, dir| {
                let opens = if ctx.plan.quick { 300 } else { 3000 };
                let s = attach_cost(kind, opens, dir)?;
                let row = Record::new(&name, "ns")
                    .text("kind", "backing_cost")
                    .text("backing", kind.name())
                    .text("cost", "attach")
                    .num("value", s.p50)
                    .num("p99", s.p99)
                    .num("samples", s.samples as f64)
                    .num("capacity", capacity_for(MSG_BYTES) as f64)
                    .num("message_bytes", MSG_BYTES as f64);
                ctx.emit(with_fs(row, dir));
                Ok(())
            })
        }));
    }
    steps
}

/// Runs `body` with the disk directory the file backing needs (`None` for the others); a
/// facility this machine lacks becomes a `skipped` row instead of an error.
fn with_backing(
    ctx: &mut Ctx<'_>,
    name: &str,
    kind: Kind,
    body: impl FnOnce(&mut Ctx<'_>, Option<&DiskDir>) -> Result<()>,
) -> Result<()> {
    let dir = match kind {
        Kind::FileDisk => Some(DiskDir::create()),
        _ => None,
    };
    let result = match dir.transpose() {
        Ok(dir) => body(ctx, dir.as_ref()),
        Err(e) => Err(e),
    };
    match result {
        Err(e) => match e.downcast_ref::<Unavailable>() {
            Some(Unavailable(reason)) => {
                ctx.emit(skipped(name, kind, reason));
                Ok(())
            }
            None => Err(e),
        },
        ok => ok,
    }
}

fn skipped(name: &str, kind: Kind, reason: &str) -> Record {
    Record::new(name, "")
        .text("kind", "skipped")
        .text("backing", kind.name())
        .text("reason", reason)
}

/// Adds the filesystem of the file backing's directory.
fn with_fs(row: Record, dir: Option<&DiskDir>) -> Record {
    match dir {
        Some(d) => row.text("fs", &d.fs).text("dir", &d.base.to_string_lossy()),
        None => row,
    }
}

/// A failure that says something about this machine (a missing facility, a limit, no room),
/// not about this code: it becomes a `skipped` row.
#[derive(Debug)]
struct Unavailable(String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// errnos that mean "not on this machine" (facility off, limit reached, no room, no right).
fn environmental(errno: Option<i32>) -> bool {
    matches!(
        errno,
        Some(
            libc::ENOSYS
                | libc::ENOMEM
                | libc::ENOSPC
                | libc::EPERM
                | libc::EACCES
                | libc::EOPNOTSUPP
                | libc::EMFILE
                | libc::ENFILE
        )
    )
}

/// The error of a failed libc call `op` (errno `errno`): [`Unavailable`] when environmental.
fn os_failure(kind: Kind, op: &str, errno: i32) -> Box<dyn std::error::Error> {
    let e = std::io::Error::from_raw_os_error(errno);
    // shmget says EINVAL when the size is beyond the kernel's SHMMAX/SHMALL limits.
    let limit = op == "shmget" && errno == libc::EINVAL;
    if environmental(Some(errno)) || limit {
        Unavailable(format!("{}: {op}: {e}", kind.name())).into()
    } else {
        format!("{}: {op}: {e}", kind.name()).into()
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The error of a failed `Channel::create`: [`Unavailable`] when environmental.
fn creation_failure(kind: Kind, e: OpenError) -> Box<dyn std::error::Error> {
    let env = match &e {
        OpenError::PermissionDenied | OpenError::NoSpace { .. } | OpenError::NotFound => true,
        OpenError::Io { source, .. } => environmental(source.raw_os_error()),
        _ => false,
    };
    let text = format!("{}: create: {e}", kind.name());
    if env { Unavailable(text).into() } else { text.into() }
}

// ---------------------------------------------------------------------------------------------
// The disk directory of the file backing.

const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// A fresh directory on a disk filesystem (not tmpfs or ramfs), removed with its contents
/// when dropped.
struct DiskDir {
    /// The fresh directory.
    path: PathBuf,
    /// The existing directory it was made in.
    base: PathBuf,
    /// The filesystem type, e.g. `ext4`.
    fs: String,
}

impl DiskDir {
    /// In the temp dir if it is on disk, else in `target/`, else in the current directory.
    fn create() -> Result<Self> {
        let mut candidates = vec![std::env::temp_dir()];
        if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
            candidates.push(PathBuf::from(t));
        }
        if let Ok(exe) = std::env::current_exe() {
            if let Some(t) = exe.ancestors().find(|a| a.file_name().is_some_and(|n| n == "target"))
            {
                candidates.push(t.to_owned());
            }
        }
        if let Ok(cwd) = std::env::current_dir() {
            candidates.push(cwd);
        }
        let mut seen = Vec::new();
        for base in candidates {
            let Ok(magic) = fs_magic(&base) else { continue };
            if magic == TMPFS_MAGIC || magic == RAMFS_MAGIC {
                seen.push(format!("{} ({})", base.display(), fs_type(&base).unwrap_or_default()));
                continue;
            }
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("shmchan-backings-{}-{n}", std::process::id()));
            if std::fs::create_dir(&path).is_err() {
                seen.push(format!("{} (not writable)", base.display()));
                continue;
            }
            let fs = fs_type(&path).unwrap_or_else(|| format!("magic {magic:#x}"));
            return Ok(DiskDir { path, base, fs });
        }
        Err(Unavailable(format!("no writable disk filesystem: {}", seen.join(", "))).into())
    }

    /// A path in the directory that nothing uses yet.
    fn fresh_path(&self, tag: &str) -> Result<String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = self.path.join(format!("{tag}-{n}"));
        match path.to_str() {
            // A peer receives its paths comma-separated, as UTF-8.
            Some(p) if !p.contains(',') => Ok(p.to_owned()),
            _ => Err(Unavailable(format!("{} is not a UTF-8 path without commas", path.display()))
                .into()),
        }
    }
}

impl Drop for DiskDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `statfs(2)`'s `f_type` of the filesystem holding `dir`.
fn fs_magic(dir: &Path) -> Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer, both live for the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    // f_type is signed on some targets; the magic numbers are 32-bit.
    Ok(st.f_type as u64 & 0xffff_ffff)
}

/// The type of the filesystem holding `dir` (e.g. `ext4`): that of the deepest mount point
/// above it in `/proc/self/mountinfo` (the last one listed when mounts are stacked).
fn fs_type(dir: &Path) -> Option<String> {
    let dir = dir.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        // "<id> <parent> <dev> <root> <mount point> <options...> - <type> <source> <options>"
        let Some((before, after)) = line.split_once(" - ") else { continue };
        let (Some(mount), Some(fstype)) = (before.split(' ').nth(4), after.split(' ').next())
        else {
            continue;
        };
        let mount = unescape_mountinfo(mount);
        if dir.starts_with(&mount) {
            let depth = Path::new(&mount).components().count();
            if best.as_ref().is_none_or(|(d, _)| depth >= *d) {
                best = Some((depth, fstype.to_owned()));
            }
        }
    }
    best.map(|(_, t)| t)
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match (bytes[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Steady state.

/// A channel this process created in one backing, and how a re-executed peer reaches it.
struct Created<T> {
    chan: Channel<T>,
    /// What the peer opens: a POSIX name, a path, an inherited fd number or a SysV id (empty
    /// for the anonymous mapping, which a forked peer inherits).
    spec: String,
    /// Removes a POSIX name left behind by a half-failed creation (the channel normally
    /// removes it first); dropped after `chan`.
    _name: Option<ShmName>,
}

impl<T: Pod> Created<T> {
    fn new(kind: Kind, dir: Option<&DiskDir>, opts: &Options) -> Result<Self> {
        let mut name = None;
        let (backing, spec) = match kind {
            Kind::PosixShm => {
                let n = ShmName::new("backing");
                let spec = n.0.clone();
                name = Some(n);
                (Backing::posix(&spec), spec)
            }
            Kind::FileDisk => {
                let path =
                    dir.ok_or("the file backing needs its disk directory")?.fresh_path("ring")?;
                (Backing::file(&path), path)
            }
            Kind::AnonFork => (Backing::Anonymous, String::new()),
            Kind::Memfd => (Backing::Memfd, String::new()),
            Kind::SysvShm => (Backing::SysV(None), String::new()),
        };
        let chan = Channel::create(backing, opts).map_err(|e| creation_failure(kind, e))?;
        let spec = match kind {
            Kind::Memfd => {
                chan.fd().ok_or("a memfd channel without an fd")?.as_raw_fd().to_string()
            }
            Kind::SysvShm => chan.sysv_id().ok_or("a SysV channel without an id")?.to_string(),
            _ => spec,
        };
        Ok(Created { chan, spec, _name: name })
    }
}

/// Opens, in a re-executed peer, the channel the parent described with `spec`.
fn open_channel<T: Pod>(kind: Kind, spec: &str, opts: &Options) -> Result<Channel<T>> {
    let backing = match kind {
        Kind::PosixShm => Backing::posix(spec),
        Kind::FileDisk => Backing::file(spec),
        Kind::Memfd => {
            let fd: RawFd = spec.parse()?;
            // SAFETY: F_GETFD only reads the flags of descriptor `fd`, if it exists.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                return Err(format!("fd {fd} was not inherited").into());
            }
            // SAFETY: `fd` is open (checked above): the parent cleared close-on-exec on its memfd
            // for us and passed its number; nothing else in this process owns it.
            Backing::Fd(unsafe { OwnedFd::from_raw_fd(fd) })
        }
        Kind::SysvShm => Backing::SysVId(spec.parse()?),
        Kind::AnonFork => return Err("an anonymous mapping is inherited across fork".into()),
    };
    Channel::open(backing, opts).map_err(|e| format!("open {spec}: {e}").into())
}

pub(crate) fn child(role: &str, names: &[&str], param: &str) -> Option<Result<()>> {
    if role != ROLE_ECHO && role != ROLE_SOURCE {
        return None;
    }
    let run = || -> Result<()> {
        let kind = Kind::parse(param)?;
        let [first, second] = names else {
            return Err(format!("two channels expected, got {names:?}").into());
        };
        let spin = Options::new().wait_strategy(WaitStrategy::Spin);
        if role == ROLE_ECHO {
            let ping = open_channel::<Msg>(kind, first, &spin)?;
            let pong = open_channel::<Msg>(kind, second, &spin)?;
            echo_loop(&ping, &pong)
        } else {
            let data = open_channel::<Msg>(kind, first, &spin)?;
            let go = open_channel::<u64>(kind, second, &Options::new())?;
            source_loop(&data, &go)
        }
    };
    Some(run())
}

/// The peer of one measurement: a re-executed child, or (anon_fork) a forked one.
enum PeerProc {
    Exec(Peer),
    Forked(Forked),
}

impl PeerProc {
    /// Starts the peer of `kind` for `role` on the channels `specs`; the anon_fork peer runs
    /// `forked_body` on the channels it inherits instead.
    fn start(
        kind: Kind,
        role: &str,
        specs: [&str; 2],
        cpu: Option<usize>,
        forked_body: impl FnOnce() -> Result<()>,
    ) -> Result<Self> {
        if kind == Kind::AnonFork {
            return Ok(PeerProc::Forked(Forked::spawn(cpu, forked_body)?));
        }
        let inherit: Vec<RawFd> = if kind == Kind::Memfd {
            specs.iter().map(|s| s.parse()).collect::<std::result::Result<_, _>>()?
        } else {
            Vec::new()
        };
        let peer = Peer::spawn_configured(role, &specs, kind.name(), cpu, move |cmd| {
            if inherit.is_empty() {
                return;
            }
            // SAFETY: the hook runs in the child between fork and exec; it only calls fcntl
            // (async-signal-safe) on the memfds, which this process keeps open until the peer
            // is done, and allocates nothing (the Vec was built before the fork).
            unsafe {
                cmd.pre_exec(move || {
                    for &fd in &inherit {
                        // Clear FD_CLOEXEC (the only descriptor flag) so the fd survives exec.
                        if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                })
            };
        })?;
        Ok(PeerProc::Exec(peer))
    }

    /// Waits (bounded) for a clean exit.
    fn finish(self) -> Result<()> {
        match self {
            PeerProc::Exec(p) => p.finish(),
            PeerProc::Forked(f) => f.finish(),
        }
    }
}

/// The anon_fork peer: a child forked from this process (no exec), which uses the anonymous
/// mappings it inherits. Watched by the harness watchdog while it runs; killed and reaped when
/// dropped unless it exited cleanly first.
struct Forked {
    pid: libc::pid_t,
    reaped: bool,
}

impl Forked {
    /// Forks; the child runs `body` pinned to `cpu` and leaves with `_exit` (status 0 on Ok).
    fn spawn(cpu: Option<usize>, body: impl FnOnce() -> Result<()>) -> Result<Self> {
        let parent = std::process::id();
        // SAFETY: fork duplicates only this thread. The child runs `body` (shmchan calls on the
        // mappings it inherited and /proc reads; glibc's fork handlers make malloc usable in
        // the child), takes none of the locks the other threads of this process use (the
        // watchdog's list, stdio), and leaves with _exit, so no destructor of the parent's
        // objects runs twice and no buffered output of the parent is written twice.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()).into());
        }
        if pid == 0 {
            forked_child(parent, cpu, body);
        }
        WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid as u32, Instant::now() + CHILD_DEADLINE));
        Ok(Forked { pid, reaped: false })
    }

    fn unwatch(&self) {
        let pid = self.pid as u32;
        WATCHED.lock().unwrap_or_else(|e| e.into_inner()).retain(|&(p, _)| p != pid);
    }

    /// Waits (bounded) for a clean exit.
    fn finish(mut self) -> Result<()> {
        // Unwatch before reaping, so the watchdog never signals a reaped (recyclable) pid.
        self.unwatch();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut status = 0;
            // SAFETY: `status` is a valid out-pointer; the pid is our unreaped child.
            let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            if rc == self.pid {
                self.reaped = true;
                return if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                    Ok(())
                } else {
                    Err(format!("forked peer ended with status {status:#x}").into())
                };
            }
            if rc < 0 {
                return Err(format!("waitpid: {}", std::io::Error::last_os_error()).into());
            }
            if Instant::now() >= deadline {
                return Err("forked peer did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        self.unwatch();
        let mut status = 0;
        // SAFETY: kill and waitpid take the pid of our child, still unreaped (reaping happens
        // only here or in `finish`, which sets `reaped`), so it names no other process;
        // `status` is a valid out-pointer.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, &mut status, 0);
        }
    }
}

/// The forked child's life: pinned, dies with the parent, runs `body`, leaves with `_exit`.
fn forked_child(parent: u32, cpu: Option<usize>, body: impl FnOnce() -> Result<()>) -> ! {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers: die with the parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // SAFETY: getppid takes nothing and cannot fail.
    let orphaned = unsafe { libc::getppid() } as u32 != parent;
    let code = if orphaned {
        // The parent died before the death signal was armed.
        2
    } else {
        if let Some(c) = cpu {
            harness::pin_to(c);
        }
        // A panic must not unwind into the parent's code, which this child shares.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                let text = format!("benchmark peer (forked, anon_fork): {e}\n");
                // SAFETY: writes `text`, live for the call, to fd 2 without std's stderr lock
                // (another thread of the parent may have held it at the fork).
                unsafe { libc::write(2, text.as_ptr().cast(), text.len()) };
                1
            }
            Err(_) => 101,
        }
    };
    // SAFETY: leaves at once, running no destructor or atexit handler: everything this child
    // inherited belongs to the parent.
    unsafe { libc::_exit(code) }
}

/// Minor page faults of the calling thread so far.
fn thread_minor_faults() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer for the call.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    ru.ru_minflt as u64
}

/// The peer's side of the ping-pong: echoes every message until the parent detaches.
fn echo_loop(ping: &Channel<Msg>, pong: &Channel<Msg>) -> Result<()> {
    let mut rx = ping.consumer()?;
    let mut tx = pong.producer()?;
    while let Some(m) = recv_bounded(&mut rx)? {
        send_bounded(&mut tx, m)?;
    }
    Ok(())
}

/// The peer's side of the throughput run: `n` numbered messages whenever the parent asks.
fn source_loop(data: &Channel<Msg>, go: &Channel<u64>) -> Result<()> {
    let mut tx = data.producer()?;
    let mut go = go.consumer()?;
    while let Some(n) = recv_bounded(&mut go)? {
        let mut idle = IdleLimit::new();
        let mut seq = 0;
        while seq < n {
            match tx.try_send(message::<8>(seq)) {
                Ok(()) => {
                    seq += 1;
                    idle.progress();
                }
                Err(TrySendError::Full(_)) => {
                    idle.spin()?;
                }
                Err(e) => return Err(format!("send: {e}").into()),
            }
        }
    }
    Ok(())
}

/// Ping-pong over two channels of `kind`; returns the one-way latency and the minor faults
/// this thread took during the measured round trips.
fn latency(
    kind: Kind,
    plan: &Plan,
    cpu: Option<usize>,
    dir: Option<&DiskDir>,
) -> Result<(Latency, u64)> {
    let opts = Options::new().wait_strategy(WaitStrategy::Spin);
    let ping = Created::<Msg>::new(kind, dir, &opts)?;
    let pong = Created::<Msg>::new(kind, dir, &opts)?;
    let mut tx = ping.chan.producer()?;
    let mut rx = pong.chan.consumer()?;
    let peer = PeerProc::start(kind, ROLE_ECHO, [&ping.spec, &pong.spec], cpu, || {
        echo_loop(&ping.chan, &pong.chan)
    })?;

    let samples = plan.spin_samples;
    let warmup = samples / 10;
    // Written in full now (non-zero, so no page stays a lazily zeroed one), so that filling it
    // in takes no page fault inside the measured window: `parent_minor_faults` counts only the
    // rings' faults.
    let mut rtt = vec![u64::MAX; samples];
    let mut taken = 0;
    let mut faults_at_start = 0;
    let mut prev = Instant::now();
    let mut deadline = None;
    for i in 0..(warmup + samples) as u64 {
        // The budget runs from the end of the warm-up, as in the SPSC rows.
        if i == warmup as u64 {
            deadline = Some(prev + plan.latency_budget);
            faults_at_start = thread_minor_faults();
        }
        if deadline.is_some_and(|d| prev >= d) {
            break;
        }
        send_bounded(&mut tx, message::<8>(i))?;
        let back = recv_bounded(&mut rx)?.ok_or("echo peer left early")?;
        let now = Instant::now();
        if back[0] != i {
            return Err(format!("echo returned {} for {i}", back[0]).into());
        }
        if i >= warmup as u64 {
            rtt[taken] = now.duration_since(prev).as_nanos() as u64;
            taken += 1;
        }
        prev = now;
    }
    let faults = thread_minor_faults() - faults_at_start;
    rtt.truncate(taken);
    // Detaching is the stop signal: the peer's receive reports the producer gone.
    drop(tx);
    peer.finish()?;
    drop(rx);
    Ok((Latency::from_round_trips(&rtt), faults))
}

/// Per-message throughput from the peer to this process over a channel of `kind`; returns the
/// rates and the minor faults this thread took during the counted repetitions.
fn throughput(
    kind: Kind,
    plan: &Plan,
    cpu: Option<usize>,
    dir: Option<&DiskDir>,
) -> Result<(Rates, u64)> {
    let n = plan.messages(MSG_BYTES);
    let opts = Options::new().capacity(capacity_for(MSG_BYTES)).wait_strategy(WaitStrategy::Spin);
    let data = Created::<Msg>::new(kind, dir, &opts)?;
    let go = Created::<u64>::new(kind, dir, &Options::new())?;
    let mut rx = data.chan.consumer()?;
    let mut go_tx = go.chan.producer()?;
    let peer = PeerProc::start(kind, ROLE_SOURCE, [&data.spec, &go.spec], cpu, || {
        source_loop(&data.chan, &go.chan)
    })?;

    let mut rates = Vec::new();
    let mut faults_at_start = 0;
    for rep in 0..=plan.reps {
        if rep == 1 {
            faults_at_start = thread_minor_faults();
        }
        send_bounded(&mut go_tx, n as u64)?;
        let mut idle = IdleLimit::new();
        let t0 = Instant::now();
        let mut expected = 0u64;
        while expected < n as u64 {
            match rx.try_recv() {
                Ok(m) => {
                    if m[0] != expected {
                        return Err(format!("got message {} for {expected}", m[0]).into());
                    }
                    expected += 1;
                    idle.progress();
                }
                Err(TryRecvError::Empty) => {
                    idle.spin()?;
                }
                Err(e) => return Err(format!("recv: {e}").into()),
            }
        }
        let elapsed = t0.elapsed();
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    let faults = thread_minor_faults() - faults_at_start;
    drop(go_tx);
    peer.finish()?;
    Ok((Rates::from(rates, n), faults))
}

// ---------------------------------------------------------------------------------------------
// One-off costs.

/// How a raw region's object gets its size before it is mapped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sizing {
    /// `ftruncate` (or `shmget`/anonymous `mmap`): no page or block exists until written.
    Sparse,
    /// `posix_fallocate`: space reserved up front, as shmchan creates segments.
    Reserved,
}

/// A fresh shared mapping of one backing kind, made with libc alone; unmapped and its object
/// removed when dropped.
struct RawRegion {
    base: *mut u8,
    len: usize,
    /// Attached with `shmat` (detached with `shmdt`) rather than mapped with `mmap`.
    sysv: bool,
    fd: Option<OwnedFd>,
    /// The file to remove, for the file backing.
    file: Option<PathBuf>,
}

impl RawRegion {
    fn new(kind: Kind, len: usize, sizing: Sizing, dir: Option<&DiskDir>) -> Result<Self> {
        let mut region =
            RawRegion { base: std::ptr::null_mut(), len, sysv: false, fd: None, file: None };
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        match kind {
            Kind::AnonFork => {
                // SAFETY: a fresh anonymous mapping at an address the kernel picks aliases
                // nothing.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        len,
                        rw,
                        libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(os_failure(kind, "mmap", last_errno()));
                }
                region.base = p.cast();
            }
            Kind::SysvShm => {
                // SAFETY: shmget takes no pointers.
                let id = unsafe { libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600) };
                if id < 0 {
                    return Err(os_failure(kind, "shmget", last_errno()));
                }
                // SAFETY: a null address lets the kernel choose where to attach segment `id`.
                let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
                let errno = last_errno();
                // Marked for removal at once: it goes when detached, whatever happens next.
                // SAFETY: IPC_RMID ignores the buffer argument.
                unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
                if p as isize == -1 {
                    return Err(os_failure(kind, "shmat", errno));
                }
                region.base = p.cast();
                region.sysv = true;
            }
            Kind::PosixShm | Kind::FileDisk | Kind::Memfd => {
                let fd = match kind {
                    Kind::PosixShm => {
                        let name = ShmName::new("cost");
                        let c = CString::new(name.0.as_str())?;
                        let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC;
                        // SAFETY: `c` is a NUL-terminated name, live for the call.
                        let fd = unsafe { libc::shm_open(c.as_ptr(), flags, 0o600) };
                        if fd < 0 {
                            return Err(os_failure(kind, "shm_open", last_errno()));
                        }
                        // Unlinked at once: the fd keeps the object, /dev/shm keeps nothing.
                        // SAFETY: as above; removes the name just created.
                        unsafe { libc::shm_unlink(c.as_ptr()) };
                        fd
                    }
                    Kind::FileDisk => {
                        let dir = dir.ok_or("the file backing needs its disk directory")?;
                        let path = dir.fresh_path("region")?;
                        let c = CString::new(path.as_str())?;
                        let flags = libc::O_CREAT
                            | libc::O_EXCL
                            | libc::O_RDWR
                            | libc::O_CLOEXEC
                            | libc::O_NOFOLLOW;
                        // SAFETY: `c` is a NUL-terminated path, live for the call.
                        let fd = unsafe { libc::open(c.as_ptr(), flags, 0o600) };
                        if fd < 0 {
                            return Err(os_failure(kind, "open", last_errno()));
                        }
                        region.file = Some(PathBuf::from(path));
                        fd
                    }
                    _ => {
                        // SAFETY: the name is a NUL-terminated literal.
                        let fd = unsafe {
                            libc::memfd_create(c"shmchan-bench".as_ptr(), libc::MFD_CLOEXEC)
                        };
                        if fd < 0 {
                            return Err(os_failure(kind, "memfd_create", last_errno()));
                        }
                        fd
                    }
                };
                // SAFETY: `fd` was just returned by the call above and nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                let size = len as libc::off_t;
                match sizing {
                    Sizing::Sparse => {
                        // SAFETY: ftruncate on our own fresh descriptor takes no pointers.
                        if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
                            return Err(os_failure(kind, "ftruncate", last_errno()));
                        }
                    }
                    Sizing::Reserved => {
                        // SAFETY: as above; posix_fallocate returns the error number itself.
                        let rc = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, size) };
                        if rc != 0 {
                            return Err(os_failure(kind, "posix_fallocate", rc));
                        }
                    }
                }
                // SAFETY: a fresh shared mapping of the object's `len` bytes (just sized) at an
                // address the kernel picks; it aliases no Rust object.
                let p = unsafe {
                    libc::mmap(std::ptr::null_mut(), len, rw, libc::MAP_SHARED, fd.as_raw_fd(), 0)
                };
                region.fd = Some(fd);
                if p == libc::MAP_FAILED {
                    return Err(os_failure(kind, "mmap", last_errno()));
                }
                region.base = p.cast();
            }
        }
        Ok(region)
    }

    fn pages(&self) -> usize {
        self.len / page_bytes()
    }

    /// Writes 8 bytes at the start of every page; returns how long that took.
    fn write_every_page(&self, stamp: u64) -> Duration {
        let page = page_bytes();
        let t0 = Instant::now();
        for i in 0..self.pages() {
            // SAFETY: `i * page + 8 <= len`, inside the mapping `self` owns; page aligned, so
            // 8-aligned; no Rust reference into the mapping exists, and no other process has it.
            unsafe { std::ptr::write_volatile(self.base.add(i * page).cast::<u64>(), stamp) };
        }
        t0.elapsed()
    }

    /// `msync(MS_SYNC)` of the whole region; returns how long it took.
    fn msync(&self, kind: Kind) -> Result<Duration> {
        let t0 = Instant::now();
        // SAFETY: [base, base + len) is the mapping `self` owns; msync changes no contents.
        if unsafe { libc::msync(self.base.cast(), self.len, libc::MS_SYNC) } != 0 {
            return Err(os_failure(kind, "msync", last_errno()));
        }
        Ok(t0.elapsed())
    }
}

impl Drop for RawRegion {
    fn drop(&mut self) {
        if !self.base.is_null() {
            if self.sysv {
                // SAFETY: `base` is the address shmat returned for this region, detached once.
                unsafe { libc::shmdt(self.base.cast()) };
            } else {
                // SAFETY: [base, base + len) is the mapping mmap returned for this region,
                // unmapped once; nothing refers into it after `self`.
                unsafe { libc::munmap(self.base.cast(), self.len) };
            }
        }
        self.fd = None;
        if let Some(path) = &self.file {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn page_bytes() -> usize {
    // SAFETY: sysconf takes no pointers.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}

/// The THP mode of shmem (`shmem_enabled`), which decides whether a shmem first touch maps a
/// 4 KiB page or a 2 MiB one.
fn shmem_thp() -> String {
    let text = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/shmem_enabled")
        .unwrap_or_default();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or("unknown")
        .to_owned()
}

/// Median, best (lowest) and worst of a few figures.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let median = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    (median, v.first().copied().unwrap_or(f64::NAN), v.last().copied().unwrap_or(f64::NAN))
}

/// first_touch, first_touch_after_fallocate, msync, msync_per_page and redirty_after_msync of
/// `kind`, each the median of at least five fresh regions (`plan.reps` if more).
fn region_costs(kind: Kind, plan: &Plan, dir: Option<&DiskDir>) -> Result<Vec<Record>> {
    let len: usize = if plan.quick { 8 << 20 } else { 64 << 20 };
    let (mut touch, mut reserved_touch, mut sync, mut redirty) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // At least five: one-off costs are cheap to repeat and noisier than steady-state figures.
    let reps = plan.reps.max(5);
    let mut pages = 0;
    for rep in 0..reps {
        let region = RawRegion::new(kind, len, Sizing::Sparse, dir)?;
        pages = region.pages();
        let per_page = |d: Duration| d.as_nanos() as f64 / pages as f64;
        touch.push(per_page(region.write_every_page(rep as u64 * 2 + 1)));
        sync.push(region.msync(kind)?.as_nanos() as f64);
        redirty.push(per_page(region.write_every_page(rep as u64 * 2 + 2)));
        drop(region);
        if kind.has_fd() {
            let region = RawRegion::new(kind, len, Sizing::Reserved, dir)?;
            reserved_touch.push(per_page(region.write_every_page(rep as u64 + 1)));
        }
    }
    let row = |cost: &str, unit: &str, figures: Vec<f64>| {
        let (median, best, worst) = spread(figures);
        let r = Record::new(&format!("backing/{cost}/{}", kind.name()), unit)
            .text("kind", "backing_cost")
            .text("backing", kind.name())
            .text("cost", cost)
            .num("value", median)
            .num("best", best)
            .num("worst", worst)
            .num("reps", reps as f64)
            .num("region_bytes", len as f64)
            .num("page_bytes", page_bytes() as f64);
        let r = if kind == Kind::FileDisk { r } else { r.text("shmem_thp", &shmem_thp()) };
        with_fs(r, dir)
    };
    let no_store = "no file behind the mapping: shmem's fsync does nothing, so this is the bare \
                    msync system call";
    let per_page_sync: Vec<f64> = sync.iter().map(|ns| ns / pages as f64).collect();
    let mut rows = vec![row("first_touch", "ns/page", touch).text("sizing", "ftruncate")];
    if kind.has_fd() {
        rows.push(
            row("first_touch_after_fallocate", "ns/page", reserved_touch)
                .text("sizing", "posix_fallocate"),
        );
    }
    let mut msync_rows =
        [row("msync", "ns", sync), row("msync_per_page", "ns/page", per_page_sync)];
    if kind != Kind::FileDisk {
        msync_rows = msync_rows.map(|r| r.text("note", no_store));
    }
    rows.extend(msync_rows);
    rows.push(row("redirty_after_msync", "ns/page", redirty));
    Ok(rows)
}

/// `Channel::open` + drop of an existing SPSC segment of `kind`, `opens` times (after a tenth
/// as many uncounted ones).
fn attach_cost(kind: Kind, opens: usize, dir: Option<&DiskDir>) -> Result<Latency> {
    let opts = Options::new().capacity(capacity_for(MSG_BYTES));
    let created = Created::<Msg>::new(kind, dir, &opts)?;
    let warmup = opens / 10;
    let mut ns = Vec::with_capacity(opens);
    for i in 0..warmup + opens {
        let t0 = Instant::now();
        let backing = match kind {
            Kind::PosixShm => Backing::posix(created.spec.as_str()),
            Kind::FileDisk => Backing::file(created.spec.as_str()),
            Kind::Memfd => {
                let fd = created.chan.fd().ok_or("a memfd channel without an fd")?;
                Backing::Fd(fd.try_clone_to_owned()?)
            }
            Kind::SysvShm => Backing::SysVId(created.spec.parse()?),
            Kind::AnonFork => return Err("an anonymous mapping has nothing to open".into()),
        };
        let chan = Channel::<Msg>::open(backing, &opts)?;
        drop(chan);
        let elapsed = t0.elapsed();
        if i >= warmup {
            ns.push(elapsed.as_nanos() as u64);
        }
    }
    Ok(Latency::from_one_way(ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mountinfo(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mountinfo(r"/trailing\04"), r"/trailing\04");
    }

    #[test]
    fn backing_names_round_trip() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()).unwrap(), kind);
        }
        assert!(Kind::parse("nfs").is_err());
    }

    #[test]
    fn the_root_filesystem_has_a_type() {
        assert!(fs_type(Path::new("/")).is_some_and(|t| !t.is_empty()));
    }
}
