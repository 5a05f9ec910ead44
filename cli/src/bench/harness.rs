//! Children, CPUs and raw shared memory: what every family of rows builds on.

use std::ffi::CString;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Result;

/// The role a re-executed child plays; unset in the parent.
pub const ROLE_ENV: &str = "SHMCHAN_IPC_ROLE";
/// Comma-separated names of the shared memory objects (or paths) the child opens.
pub const SEG_ENV: &str = "SHMCHAN_IPC_SEG";
/// Role parameters (message size, wait mode...).
pub const PARAM_ENV: &str = "SHMCHAN_IPC_PARAM";
/// The CPU the child pins itself to, if any.
pub const CPU_ENV: &str = "SHMCHAN_IPC_CPU";
/// How long any one child may live; the watchdog kills it after that.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(90);
/// How long a peer may stay silent before a ping-pong gives up.
pub const PEER_LIMIT: Duration = Duration::from_secs(10);

/// What a re-executed child was given, read from its environment. Reading it also makes the
/// child die with its parent and pins it to its CPU.
pub struct ChildArgs {
    pub segments: Vec<String>,
    pub param: String,
}

impl ChildArgs {
    pub fn from_env() -> Result<Self> {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers: die with the parent.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        if let Some(cpu) = std::env::var(CPU_ENV).ok().and_then(|c| c.parse().ok()) {
            pin_to(cpu);
        }
        let segs = std::env::var(SEG_ENV)?;
        Ok(ChildArgs {
            segments: segs.split(',').map(str::to_owned).collect(),
            param: std::env::var(PARAM_ENV).unwrap_or_default(),
        })
    }
}

/// The first three fields of /proc/loadavg.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned()
}

/// The first `model name` of /proc/cpuinfo.
pub fn cpu_model() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all-zero is a valid (empty) cpu_set_t; sched_getaffinity fills at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid out-pointer of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    // SAFETY: CPU_ISSET reads inside `set` for every index below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &set) }).collect()
}

/// Pins the calling thread to `cpu`; a failure only makes the figures noisier.
pub fn pin_to(cpu: usize) {
    // SAFETY: all-zero is a valid (empty) cpu_set_t; CPU_SET writes inside it for cpu below
    // CPU_SETSIZE (the only values `allowed_cpus` returns); pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Children the watchdog may kill: pid and deadline. A guard removes its entry before it reaps
/// the child, and the watchdog kills only under the lock, so it never signals a recycled pid.
pub static WATCHED: Mutex<Vec<(u32, Instant)>> = Mutex::new(Vec::new());

pub fn start_watchdog() {
    std::thread::spawn(|| {
        loop {
            std::thread::sleep(Duration::from_millis(50));
            let mut watched = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            watched.retain(|&(pid, deadline)| {
                if now < deadline {
                    return true;
                }
                eprintln!("ipc bench: child {pid} overran its deadline, killing it");
                // SAFETY: kill takes no pointers; the pid is an unreaped child of ours (see
                // WATCHED), so it cannot name another process.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                false
            });
        }
    });
}

/// A child process, killed and reaped when dropped unless it exited cleanly first.
pub struct Peer {
    child: Option<Child>,
}

impl Peer {
    pub fn spawn(role: &str, segments: &[&str], param: &str, cpu: Option<usize>) -> Result<Self> {
        Self::spawn_configured(role, segments, param, cpu, |_| {})
    }

    /// As [`Peer::spawn`], with `configure` adjusting the command last (standard streams,
    /// descriptors to inherit through `pre_exec`...).
    pub fn spawn_configured(
        role: &str,
        segments: &[&str],
        param: &str,
        cpu: Option<usize>,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.env(ROLE_ENV, role)
            .env(SEG_ENV, segments.join(","))
            .env(PARAM_ENV, param)
            .stdin(Stdio::null())
            // Our stdout is the JSON stream; the child has nothing to add to it.
            .stdout(Stdio::null());
        match cpu {
            Some(c) => cmd.env(CPU_ENV, c.to_string()),
            None => cmd.env_remove(CPU_ENV),
        };
        configure(&mut cmd);
        let child = cmd.spawn()?;
        WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((child.id(), Instant::now() + CHILD_DEADLINE));
        Ok(Peer { child: Some(child) })
    }

    /// Waits (bounded) for a clean exit.
    pub fn finish(mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let child = self.child.as_mut().expect("present until drop");
        loop {
            // Unwatch before try_wait can reap, so the watchdog never signals a reaped pid.
            let pid = child.id();
            WATCHED.lock().unwrap_or_else(|e| e.into_inner()).retain(|&(p, _)| p != pid);
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return if status.success() {
                    Ok(())
                } else {
                    Err(format!("child exited with {status}").into())
                };
            }
            if Instant::now() >= deadline {
                return Err("child did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl Peer {
    /// Fails if the child has already exited other than cleanly; never reaps it (WNOWAIT), so
    /// its pid stays ours for the watchdog and for `finish`/drop.
    pub fn check(&self) -> Result<()> {
        let Some(child) = &self.child else { return Ok(()) };
        // SAFETY: all-zero is a valid siginfo_t (si_pid 0 means "no event").
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid out-pointer of the right type; the pid is an unreaped child
        // of ours; WNOWAIT leaves it unreaped.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            return Err(format!("waitid: {}", std::io::Error::last_os_error()).into());
        }
        // SAFETY: waitid filled `info` for a child state change, or left it all zero.
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 || (info.si_code == libc::CLD_EXITED && status == 0) {
            Ok(())
        } else {
            Err(format!("child {pid} failed (si_code {}, status {status})", info.si_code).into())
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            WATCHED.lock().unwrap_or_else(|e| e.into_inner()).retain(|&(p, _)| p != pid);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh POSIX shm name, unlinked (if still present) when dropped: the creator normally
/// unlinks it first, this catches the paths where creation half succeeded.
pub struct ShmName(pub String);

impl ShmName {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        ShmName(format!("/shmchan-ipc-bench-{}-{n}-{tag}", std::process::id()))
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        let _ = shmchan::remove_posix(&self.0);
    }
}

/// A raw shared mapping for the floors: two flags on separate 128-byte lines plus a ready word.
pub struct RawShm {
    base: *mut u8,
    len: usize,
    /// Set in the creator, which unlinks the name on drop.
    unlink: Option<CString>,
}

pub const RAW_LEN: usize = 4096;
pub const RAW_PING: usize = 0;
pub const RAW_PONG: usize = 128;
pub const RAW_READY: usize = 256;

impl RawShm {
    pub fn create(name: &str) -> Result<Self> {
        Self::map(name, true)
    }

    pub fn open(name: &str) -> Result<Self> {
        Self::map(name, false)
    }

    fn map(name: &str, create: bool) -> Result<Self> {
        let cname = CString::new(name)?;
        let flags = if create { libc::O_CREAT | libc::O_EXCL | libc::O_RDWR } else { libc::O_RDWR };
        // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
        let fd = unsafe { libc::shm_open(cname.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
        if fd < 0 {
            return Err(format!("shm_open {name}: {}", std::io::Error::last_os_error()).into());
        }
        let unlink = || {
            if create {
                // SAFETY: as above; removes the name we just created.
                unsafe { libc::shm_unlink(cname.as_ptr()) };
            }
        };
        // SAFETY: fd is the descriptor just opened; ftruncate only resizes the fresh object.
        if create && unsafe { libc::ftruncate(fd, RAW_LEN as libc::off_t) } != 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: fd is ours and closed once.
            unsafe { libc::close(fd) };
            unlink();
            return Err(format!("ftruncate: {e}").into());
        }
        // SAFETY: a fresh shared mapping of the object's RAW_LEN bytes at an address the kernel
        // picks; it aliases no Rust object.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                RAW_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        let e = std::io::Error::last_os_error();
        // SAFETY: the mapping (if any) keeps the object alive; the fd is no longer needed.
        unsafe { libc::close(fd) };
        if base == libc::MAP_FAILED {
            unlink();
            return Err(format!("mmap: {e}").into());
        }
        Ok(RawShm { base: base.cast(), len: RAW_LEN, unlink: create.then_some(cname) })
    }

    pub fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset + 8 <= self.len && offset % 8 == 0);
        // SAFETY: in bounds and 8-aligned (checked; the base is page aligned); the mapping lives
        // as long as `self`, and other processes touch it only through atomics too.
        unsafe { &*self.base.add(offset).cast::<AtomicU64>() }
    }

    pub fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= self.len && offset % 4 == 0);
        // SAFETY: as in `u64_at`, for a 4-aligned u32.
        unsafe { &*self.base.add(offset).cast::<AtomicU32>() }
    }
}

impl Drop for RawShm {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `map`, unmapped once; no reference into
        // it outlives `self` (the accessors borrow `self`).
        unsafe { libc::munmap(self.base.cast(), self.len) };
        if let Some(name) = &self.unlink {
            // SAFETY: a valid C string naming the object we created.
            unsafe { libc::shm_unlink(name.as_ptr()) };
        }
    }
}

/// Spins until `done()` holds; fails after `limit`. The clock is read only every 64 Ki turns.
pub fn spin_until(limit: Duration, pause: bool, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    let mut turns = 0u32;
    while !done() {
        turns = turns.wrapping_add(1);
        if turns & 0xffff == 0 && Instant::now() >= deadline {
            return Err("peer stopped responding".into());
        }
        if pause {
            std::hint::spin_loop();
        }
    }
    Ok(())
}

pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned u32 in a shared mapping; FUTEX_WAIT (shared: no
    // FUTEX_PRIVATE_FLAG, the waker is another process) only reads it; `ts` outlives the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE reads nothing.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

pub fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as in `futex_wake`.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// CLOCK_MONOTONIC in ns: unlike `Instant`, comparable between processes of one host.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Bounds a polling loop by [`PEER_LIMIT`] without reading the clock on its fast path: the
/// clock is read once every [`IdleLimit::CHECK_EVERY`] fruitless turns in a row, and the loop
/// fails once such a streak has lasted [`PEER_LIMIT`].
#[derive(Default)]
pub struct IdleLimit {
    turns: u32,
    deadline: Option<Instant>,
}

impl IdleLimit {
    /// Idle turns between two looks at the clock (and at the peer, for callers that look).
    pub const CHECK_EVERY: u32 = 1024;

    pub fn new() -> Self {
        Self::default()
    }

    /// The peer made progress: the limit runs afresh from the next idle turn.
    #[inline]
    pub fn progress(&mut self) {
        if self.deadline.is_some() {
            self.deadline = None;
        }
    }

    /// One idle turn (a spin-loop pause). `Ok(true)` on the turns that read the clock, when a
    /// caller may also look whether its peer is gone; `Err` once the streak lasted
    /// [`PEER_LIMIT`].
    #[inline]
    pub fn spin(&mut self) -> std::result::Result<bool, String> {
        std::hint::spin_loop();
        self.turns = self.turns.wrapping_add(1);
        if self.turns % Self::CHECK_EVERY != 0 {
            return Ok(false);
        }
        let now = Instant::now();
        if now >= *self.deadline.get_or_insert(now + PEER_LIMIT) {
            return Err(format!("nothing from the peer for {PEER_LIMIT:?}"));
        }
        Ok(true)
    }
}
