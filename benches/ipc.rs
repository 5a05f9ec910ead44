//! Cross-process benchmark suite: shmchan between processes, beside the floors and thread-only
//! peers it is judged against, and the ratios to those, all measured in one run.
//!
//! Besides the SPSC rows: MPMC throughput with P sender and C receiver processes (1P1C, 2P2C,
//! 4P4C, 8-byte messages, default wait strategy) beside `crossbeam_queue::ArrayQueue` with 2+2
//! threads, and the byte ring (64 B to 64 KiB records), copying (`send`/`recv`) and zero-copy
//! (`grant` + `write_at` + `commit`; `read` + three `read_pod::<u64>` words).
//!
//! ```sh
//! cargo bench --bench ipc              # about 2 minutes
//! cargo bench --bench ipc -- --quick   # a smoke run, well under 30 s
//! ```
//!
//! Output: one JSON object per line on stdout. Latencies (`unit: "ns"`) are one-way figures,
//! half of each measured round trip, with `p50`/`p99`/`p999` taken from the sorted samples;
//! throughputs carry `value` (the median of several repetitions) and `bytes_per_s`. Ratio rows
//! print their `target` but never fail the run: on a shared VM a miss may be noise.
//!
//! The peer process is this binary re-executed with [`ROLE_ENV`] naming its role and
//! [`SEG_ENV`] naming the shared memory objects. Every child is killed and reaped when its guard
//! drops (error, panic or timeout), a watchdog kills children that overrun their deadline, and
//! every object is created under a fresh name and unlinked by its creator.

use std::ffi::CString;
use std::hint::black_box;
use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use bytemuck::Pod;
use shmchan::bytes as byte_ring;
use shmchan::mpmc;
use shmchan::spsc::{Channel, Consumer, Options, Producer};
use shmchan::{Backing, RecvError, TryRecvError, TrySendError, WaitStrategy};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The role a re-executed child plays; unset in the parent.
const ROLE_ENV: &str = "SHMCHAN_IPC_ROLE";
/// Comma-separated names of the shared memory objects the child opens.
const SEG_ENV: &str = "SHMCHAN_IPC_SEG";
/// Role parameters (message size, wait mode...).
const PARAM_ENV: &str = "SHMCHAN_IPC_PARAM";
/// The CPU the child pins itself to, if any.
const CPU_ENV: &str = "SHMCHAN_IPC_CPU";
/// How long any one child may live; the watchdog kills it after that.
const CHILD_DEADLINE: Duration = Duration::from_secs(90);
/// Slots of the throughput rings are capped so that a ring of large messages stays in L2.
const RING_BYTES: usize = 256 * 1024;
const MAX_CAPACITY: usize = 4096;
/// Messages per batch call, at most a quarter of the ring.
const BATCH: usize = 256;

/// Calls `$f::<W>(args)` with the word count of a message of `$bytes` bytes.
macro_rules! by_size {
    ($bytes:expr, $f:ident($($arg:expr),*)) => {
        match $bytes {
            8 => $f::<1>($($arg),*),
            64 => $f::<8>($($arg),*),
            1024 => $f::<128>($($arg),*),
            4096 => $f::<512>($($arg),*),
            other => Err(format!("no message type of {other} bytes").into()),
        }
    };
}

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        if let Err(e) = child_main(&role) {
            eprintln!("ipc bench child `{role}`: {e}");
            std::process::exit(1);
        }
        return;
    }
    // cargo passes `--bench`; anything we do not know is ignored.
    let quick = std::env::args().skip(1).any(|a| a == "--quick");
    if let Err(e) = parent_main(quick) {
        eprintln!("ipc bench: {e}");
        std::process::exit(1);
    }
}

// ---------------------------------------------------------------------------------------------
// Parent: the suite
// ---------------------------------------------------------------------------------------------

/// Sample counts and sizes of one run.
struct Plan {
    /// Round trips for spinning ping-pongs (~0.1-1 µs each).
    spin_samples: usize,
    /// Round trips for sleeping ping-pongs (tens of µs each).
    sleep_samples: usize,
    /// Throughput repetitions; the median is reported.
    reps: usize,
    /// Bytes moved per throughput repetition (message count = bytes / size).
    rep_bytes: usize,
    /// Time spent copying in the memcpy floor.
    memcpy_time: Duration,
    /// Messages per MPMC (and ArrayQueue) repetition, over all senders.
    mpmc_messages: usize,
    /// MPMC repetitions (each with fresh processes and segments); the median is reported.
    mpmc_reps: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                spin_samples: 100_000,
                sleep_samples: 5_000,
                reps: 3,
                rep_bytes: 16 << 20,
                memcpy_time: Duration::from_millis(200),
                mpmc_messages: 400_000,
                mpmc_reps: 3,
            }
        } else {
            Plan {
                spin_samples: 1_000_000,
                sleep_samples: 50_000,
                reps: 7,
                rep_bytes: 64 << 20,
                memcpy_time: Duration::from_secs(1),
                mpmc_messages: 2_000_000,
                mpmc_reps: 5,
            }
        }
    }

    fn messages(&self, size: usize) -> usize {
        (self.rep_bytes / size).clamp(10_000, 32_000_000)
    }
}

/// The figures the ratio rows are computed from.
#[derive(Default)]
struct Figures {
    cacheline_p50: f64,
    futex_p50: f64,
    spin_8_p50: f64,
    sleep_8_p50: f64,
    memcpy_bytes_per_s: f64,
    rtrb_per_message: f64,
    rtrb_chunked: f64,
    per_message_8: f64,
    batched_8: f64,
    bytes_4k_per_s: f64,
    plain_ring_bytes_per_s: f64,
    mpmc_2p2c: f64,
    mpmc_4p4c: f64,
    arrayqueue_2p2c: f64,
    zero_copy_4k_bytes_per_s: f64,
}

fn parent_main(quick: bool) -> Result<()> {
    let cpus = allowed_cpus();
    let (here, there) = match cpus.as_slice() {
        [a, b, ..] => (Some(*a), Some(*b)),
        _ => (None, None),
    };
    start_watchdog();
    // Pinned after the watchdog starts, so it keeps every CPU (it sleeps almost always).
    if let Some(cpu) = here {
        pin_to(cpu);
    }
    let plan = Plan::new(quick);
    let mut fig = Figures::default();
    let started = Instant::now();
    let load_start = loadavg();

    // Floors.
    let s = cacheline_floor(&plan, there, false)?;
    fig.cacheline_p50 = s.p50;
    emit_latency("floor/cacheline_pingpong", &s);
    let s = cacheline_floor(&plan, there, true)?;
    emit_latency("floor/cacheline_pingpong_pause", &s);
    let s = futex_floor(&plan, there)?;
    fig.futex_p50 = s.p50;
    emit_latency("floor/futex_pingpong", &s);
    let (copies, bytes) = memcpy_floor(&plan);
    fig.memcpy_bytes_per_s = bytes;
    Json::new("floor/memcpy_4KiB", "copies/s")
        .num("value", copies)
        .num("bytes_per_s", bytes)
        .emit();

    let t = plain_ring_floor(&plan, here, there);
    fig.plain_ring_bytes_per_s = t.median * 4096.0;
    emit_throughput("floor/plain_ring_threads/4KiB", 4096, &t);

    // Thread-only peer.
    let t = rtrb_threads(&plan, false, here, there);
    fig.rtrb_per_message = t.median;
    emit_throughput("rtrb_threads/per_message/8B", 8, &t);
    let t = rtrb_threads(&plan, true, here, there);
    fig.rtrb_chunked = t.median;
    emit_throughput("rtrb_threads/chunked/8B", 8, &t);

    // shmchan latency.
    for (mode, samples) in [
        (Mode::Spin, plan.spin_samples),
        (Mode::Sleep, plan.sleep_samples),
        (Mode::SpinThenSleep, plan.spin_samples),
    ] {
        for size in [8, 64] {
            let s = by_size!(size, shmchan_latency(mode, samples, there))?;
            if size == 8 {
                match mode {
                    Mode::Spin => fig.spin_8_p50 = s.p50,
                    Mode::Sleep => fig.sleep_8_p50 = s.p50,
                    _ => {}
                }
            }
            emit_latency(&format!("latency/shmchan/{}/{}", mode.name(), size_name(size)), &s);
        }
    }
    // Diagnostic: the non-blocking calls in a spin loop, without the blocking wrapper.
    let s = by_size!(8, shmchan_latency(Mode::TrySpin, plan.spin_samples, there))?;
    emit_latency("latency/shmchan/try_spin/8B", &s);

    // shmchan throughput.
    for batched in [false, true] {
        for size in [8, 64, 1024, 4096] {
            let t = by_size!(size, shmchan_throughput(&plan, batched, there))?;
            match (size, batched) {
                (8, false) => fig.per_message_8 = t.median,
                (8, true) => fig.batched_8 = t.median,
                (4096, false) => fig.bytes_4k_per_s = t.median * 4096.0,
                _ => {}
            }
            let kind = if batched { "batched" } else { "per_message" };
            emit_throughput(&format!("throughput/shmchan/{kind}/{}", size_name(size)), size, &t);
        }
    }

    // MPMC across processes (each sender and receiver its own process), and its thread-only
    // peer with the same message count.
    for (senders, receivers) in [(1, 1), (2, 2), (4, 4)] {
        let t = mpmc_throughput(&plan, senders, receivers, &cpus)?;
        match senders {
            2 => fig.mpmc_2p2c = t.median,
            4 => fig.mpmc_4p4c = t.median,
            _ => {}
        }
        throughput_json(&format!("throughput/mpmc/{senders}p{receivers}c/8B"), 8, &t)
            .text("wait", "spin_then_sleep")
            .emit();
    }
    let t = arrayqueue_threads(&plan, 2, 2, &cpus);
    fig.arrayqueue_2p2c = t.median;
    emit_throughput("arrayqueue_threads/2p2c/8B", 8, &t);

    // The byte ring across processes.
    for zero_copy in [false, true] {
        for size in BYTES_SIZES {
            let t = bytes_throughput(&plan, size, zero_copy, there)?;
            if zero_copy && size == 4096 {
                fig.zero_copy_4k_bytes_per_s = t.median * 4096.0;
            }
            let (kind, consume) = if zero_copy {
                ("zero_copy", "read_pod_3_words")
            } else {
                ("copy", "recv_into_vec")
            };
            throughput_json(&format!("throughput/bytes/{kind}/{}", size_name(size)), size, &t)
                .text("consume", consume)
                .emit();
        }
    }

    // Ratios, from the figures above.
    let ratios = [
        ("spin_latency_vs_cacheline_floor", fig.spin_8_p50 / fig.cacheline_p50, "<=", 1.25),
        ("futex_latency_vs_futex_floor", fig.sleep_8_p50 / fig.futex_p50, "<=", 1.1),
        ("per_message_8B_vs_rtrb", fig.per_message_8 / fig.rtrb_per_message, ">=", 1.0),
        ("batched_8B_vs_rtrb_chunked", fig.batched_8 / fig.rtrb_chunked, ">=", 0.5),
        ("bytes_4KiB_vs_memcpy", fig.bytes_4k_per_s / fig.memcpy_bytes_per_s, ">=", 0.25),
        // What a copying ring can reach on this machine: a plain index ring moving 4 KiB
        // between two cores, with no checks at all.
        ("bytes_4KiB_vs_plain_ring", fig.bytes_4k_per_s / fig.plain_ring_bytes_per_s, ">=", 0.8),
        ("mpmc_2p2c_vs_arrayqueue_2p2c", fig.mpmc_2p2c / fig.arrayqueue_2p2c, ">=", 1.0),
        ("mpmc_4p4c_vs_mpmc_2p2c", fig.mpmc_4p4c / fig.mpmc_2p2c, ">=", 0.5),
        (
            "bytes_zero_copy_4KiB_vs_memcpy",
            fig.zero_copy_4k_bytes_per_s / fig.memcpy_bytes_per_s,
            ">=",
            0.4,
        ),
        (
            "bytes_zero_copy_4KiB_vs_plain_ring",
            fig.zero_copy_4k_bytes_per_s / fig.plain_ring_bytes_per_s,
            ">=",
            0.8,
        ),
    ];
    for (name, value, cmp, target) in ratios {
        let met = if cmp == "<=" { value <= target } else { value >= target };
        Json::new(&format!("ratio/{name}"), "x")
            .num("value", value)
            .text("target", &format!("{cmp}{target}"))
            .boolean("met", met)
            .emit();
    }
    // The load average says how much the other tenants of the machine disturbed the figures.
    Json::new("run", "s")
        .num("value", started.elapsed().as_secs_f64())
        .boolean("quick", quick)
        .num("cpus", cpus.len() as f64)
        .text("loadavg_start", &load_start)
        .text("loadavg_end", &loadavg())
        .emit();
    Ok(())
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

fn size_name(bytes: usize) -> String {
    if bytes >= 1024 { format!("{}KiB", bytes / 1024) } else { format!("{bytes}B") }
}

// ---------------------------------------------------------------------------------------------
// Statistics and output
// ---------------------------------------------------------------------------------------------

/// One-way latency percentiles (ns) from round-trip samples.
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
    samples: usize,
}

impl Latency {
    fn from_round_trips(mut rtt_ns: Vec<u64>) -> Self {
        rtt_ns.sort_unstable();
        let n = rtt_ns.len().max(1);
        let at = |q: f64| {
            let i = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            rtt_ns.get(i).copied().unwrap_or(0) as f64 / 2.0
        };
        let mean = rtt_ns.iter().map(|&v| v as f64).sum::<f64>() / n as f64 / 2.0;
        Latency {
            p50: at(0.5),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
            mean,
            samples: rtt_ns.len(),
        }
    }
}

/// Rates (msg/s) of several repetitions.
struct Rates {
    median: f64,
    best: f64,
    worst: f64,
    reps: usize,
    messages: usize,
}

impl Rates {
    fn from(mut rates: Vec<f64>, messages: usize) -> Self {
        rates.sort_by(f64::total_cmp);
        Rates {
            median: rates.get(rates.len() / 2).copied().unwrap_or(f64::NAN),
            best: rates.last().copied().unwrap_or(f64::NAN),
            worst: rates.first().copied().unwrap_or(f64::NAN),
            reps: rates.len(),
            messages,
        }
    }
}

fn emit_latency(name: &str, s: &Latency) {
    Json::new(name, "ns")
        .num("p50", s.p50)
        .num("p99", s.p99)
        .num("p999", s.p999)
        .num("max", s.max)
        .num("mean", s.mean)
        .num("samples", s.samples as f64)
        .emit();
}

fn emit_throughput(name: &str, size: usize, t: &Rates) {
    throughput_json(name, size, t).emit();
}

/// A throughput row, for callers that add fields before emitting it.
fn throughput_json(name: &str, size: usize, t: &Rates) -> Json {
    Json::new(name, "msg/s")
        .num("value", t.median)
        .num("bytes_per_s", t.median * size as f64)
        .num("best", t.best)
        .num("worst", t.worst)
        .num("reps", t.reps as f64)
        .num("messages_per_rep", t.messages as f64)
}

/// A JSON object written by hand: names are ours, values numbers, short strings or booleans.
struct Json(String);

impl Json {
    fn new(name: &str, unit: &str) -> Self {
        let mut j = Json(String::from("{"));
        j.field("name", &quote(name));
        j.field("unit", &quote(unit));
        j
    }

    fn field(&mut self, key: &str, raw: &str) {
        if self.0.len() > 1 {
            self.0.push(',');
        }
        self.0.push_str(&quote(key));
        self.0.push(':');
        self.0.push_str(raw);
    }

    fn num(mut self, key: &str, v: f64) -> Self {
        // JSON has no NaN or infinity.
        let raw = if !v.is_finite() {
            "null".to_owned()
        } else if v.abs() >= 1e3 {
            format!("{v:.0}")
        } else {
            format!("{v:.3}")
        };
        self.field(key, &raw);
        self
    }

    fn text(mut self, key: &str, v: &str) -> Self {
        self.field(key, &quote(v));
        self
    }

    fn boolean(mut self, key: &str, v: bool) -> Self {
        self.field(key, if v { "true" } else { "false" });
        self
    }

    fn emit(mut self) {
        self.0.push('}');
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", self.0);
        let _ = out.flush();
    }
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            c if (c as u32) < 0x20 => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

// ---------------------------------------------------------------------------------------------
// CPUs, children, names
// ---------------------------------------------------------------------------------------------

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
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
fn pin_to(cpu: usize) {
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
static WATCHED: Mutex<Vec<(u32, Instant)>> = Mutex::new(Vec::new());

fn start_watchdog() {
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
struct Peer {
    child: Option<Child>,
}

impl Peer {
    fn spawn(role: &str, segments: &[&str], param: &str, cpu: Option<usize>) -> Result<Self> {
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
        let child = cmd.spawn()?;
        WATCHED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((child.id(), Instant::now() + CHILD_DEADLINE));
        Ok(Peer { child: Some(child) })
    }

    /// Waits (bounded) for a clean exit.
    fn finish(mut self) -> Result<()> {
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
    fn check(&self) -> Result<()> {
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
struct ShmName(String);

impl ShmName {
    fn new(tag: &str) -> Self {
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
struct RawShm {
    base: *mut u8,
    len: usize,
    /// Set in the creator, which unlinks the name on drop.
    unlink: Option<CString>,
}

const RAW_LEN: usize = 4096;
const RAW_PING: usize = 0;
const RAW_PONG: usize = 128;
const RAW_READY: usize = 256;

impl RawShm {
    fn create(name: &str) -> Result<Self> {
        Self::map(name, true)
    }

    fn open(name: &str) -> Result<Self> {
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

    fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset + 8 <= self.len && offset % 8 == 0);
        // SAFETY: in bounds and 8-aligned (checked; the base is page aligned); the mapping lives
        // as long as `self`, and other processes touch it only through atomics too.
        unsafe { &*self.base.add(offset).cast::<AtomicU64>() }
    }

    fn u32_at(&self, offset: usize) -> &AtomicU32 {
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
fn spin_until(limit: Duration, pause: bool, mut done: impl FnMut() -> bool) -> Result<()> {
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

fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
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

fn futex_wake(word: &AtomicU32) {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE reads nothing.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1) };
}

fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: as in `futex_wake`.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// CLOCK_MONOTONIC in ns: unlike `Instant`, comparable between processes of one host.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------------
// Floors
// ---------------------------------------------------------------------------------------------

const RAW_STOP: u64 = u64::MAX;
const PEER_LIMIT: Duration = Duration::from_secs(10);

/// Two processes bounce a counter through two flags on separate lines, spinning.
fn cacheline_floor(plan: &Plan, cpu: Option<usize>, pause: bool) -> Result<Latency> {
    let name = ShmName::new("cacheline");
    let shm = RawShm::create(&name.0)?;
    let peer = Peer::spawn("cacheline", &[&name.0], if pause { "pause" } else { "tight" }, cpu)?;
    let (ping, pong) = (shm.u64_at(RAW_PING), shm.u64_at(RAW_PONG));
    spin_until(PEER_LIMIT, true, || shm.u64_at(RAW_READY).load(Ordering::Acquire) == 1)?;

    let warmup = plan.spin_samples / 10;
    let mut rtt = Vec::with_capacity(plan.spin_samples);
    let mut prev = Instant::now();
    for i in 1..=(warmup + plan.spin_samples) as u64 {
        ping.store(i, Ordering::Release);
        spin_until(PEER_LIMIT, pause, || pong.load(Ordering::Acquire) == i)?;
        let now = Instant::now();
        if i > warmup as u64 {
            rtt.push(now.duration_since(prev).as_nanos() as u64);
        }
        prev = now;
    }
    ping.store(RAW_STOP, Ordering::Release);
    peer.finish()?;
    Ok(Latency::from_round_trips(rtt))
}

fn cacheline_child(shm: &RawShm, pause: bool) -> Result<()> {
    let (ping, pong) = (shm.u64_at(RAW_PING), shm.u64_at(RAW_PONG));
    shm.u64_at(RAW_READY).store(1, Ordering::Release);
    let mut next = 1u64;
    loop {
        let mut seen = 0;
        spin_until(PEER_LIMIT, pause, || {
            seen = ping.load(Ordering::Acquire);
            seen == next || seen == RAW_STOP
        })?;
        if seen == RAW_STOP {
            return Ok(());
        }
        pong.store(seen, Ordering::Release);
        next += 1;
    }
}

const FUTEX_STOP: u32 = u32::MAX;

/// Two processes bounce a counter through two shared futex words, sleeping on each wait and
/// waking on each store.
fn futex_floor(plan: &Plan, cpu: Option<usize>) -> Result<Latency> {
    let name = ShmName::new("futex");
    let shm = RawShm::create(&name.0)?;
    let peer = Peer::spawn("futex", &[&name.0], "", cpu)?;
    let (ping, pong) = (shm.u32_at(RAW_PING), shm.u32_at(RAW_PONG));
    spin_until(PEER_LIMIT, true, || shm.u64_at(RAW_READY).load(Ordering::Acquire) == 1)?;

    let warmup = plan.sleep_samples / 10;
    let mut rtt = Vec::with_capacity(plan.sleep_samples);
    let mut prev = Instant::now();
    for i in 1..=(warmup + plan.sleep_samples) as u32 {
        ping.store(i, Ordering::Release);
        futex_wake(ping);
        futex_wait_for(pong, i)?;
        let now = Instant::now();
        if i > warmup as u32 {
            rtt.push(now.duration_since(prev).as_nanos() as u64);
        }
        prev = now;
    }
    ping.store(FUTEX_STOP, Ordering::Release);
    futex_wake(ping);
    peer.finish()?;
    Ok(Latency::from_round_trips(rtt))
}

/// Sleeps on `word` until it holds `want` (or the stop value); returns what it holds.
fn futex_wait_for(word: &AtomicU32, want: u32) -> Result<u32> {
    let deadline = Instant::now() + PEER_LIMIT;
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want || v == FUTEX_STOP {
            return Ok(v);
        }
        futex_wait(word, v, Duration::from_millis(100));
        if Instant::now() >= deadline {
            return Err("peer stopped responding".into());
        }
    }
}

fn futex_child(shm: &RawShm) -> Result<()> {
    let (ping, pong) = (shm.u32_at(RAW_PING), shm.u32_at(RAW_PONG));
    shm.u64_at(RAW_READY).store(1, Ordering::Release);
    let mut next = 1u32;
    loop {
        if futex_wait_for(ping, next)? == FUTEX_STOP {
            return Ok(());
        }
        pong.store(next, Ordering::Release);
        futex_wake(pong);
        next += 1;
    }
}

/// Copies 4 KiB between two hot buffers on one thread; returns (copies/s, bytes/s).
fn memcpy_floor(plan: &Plan) -> (f64, f64) {
    const LEN: usize = 4096;
    const CHUNK: usize = 1000;
    let src = vec![0x5au8; LEN];
    let mut dst = vec![0u8; LEN];
    let mut rates = Vec::new();
    let started = Instant::now();
    while started.elapsed() < plan.memcpy_time {
        let t0 = Instant::now();
        for _ in 0..CHUNK {
            // black_box keeps the copy from being hoisted out of the loop or elided.
            let (s, d) = (black_box(src.as_ptr()), black_box(dst.as_mut_ptr()));
            // SAFETY: two distinct live allocations of LEN bytes each.
            unsafe { std::ptr::copy_nonoverlapping(s, d, LEN) };
            black_box(&mut dst);
        }
        rates.push(CHUNK as f64 / t0.elapsed().as_secs_f64());
    }
    let copies = Rates::from(rates, CHUNK).median;
    (copies, copies * LEN as f64)
}

/// The cross-core copy ceiling: a plain ring of 4 KiB buffers between two pinned threads (head
/// and tail on their own lines, one copy in, one copy out, no validation), the same ring size
/// as shmchan's 4 KiB throughput rows.
fn plain_ring_floor(plan: &Plan, here: Option<usize>, there: Option<usize>) -> Rates {
    const LEN: usize = 4096;
    const SLOTS: usize = RING_BYTES / LEN;
    #[repr(C, align(128))]
    struct Index(AtomicU64);
    let n = plan.messages(LEN) as u64;
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        let ring = vec![[0u64; LEN / 8]; SLOTS];
        let ring_ptr = ring.as_ptr() as usize;
        let (head, tail) = (Index(AtomicU64::new(0)), Index(AtomicU64::new(0)));
        let barrier = Barrier::new(2);
        let elapsed = std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(c) = there {
                    pin_to(c);
                }
                let mut src = [0u64; LEN / 8];
                barrier.wait();
                let (mut t, mut h) = (0u64, 0u64);
                while t < n {
                    while t - h >= SLOTS as u64 {
                        h = head.0.load(Ordering::Acquire);
                    }
                    src[0] = t;
                    let dst = (ring_ptr as *mut [u64; LEN / 8]).wrapping_add(t as usize % SLOTS);
                    // SAFETY: slot t % SLOTS is inside `ring`, and the consumer released it
                    // (t - head < SLOTS) before we write it.
                    unsafe { std::ptr::copy_nonoverlapping(black_box(&src), dst, 1) };
                    t += 1;
                    tail.0.store(t, Ordering::Release);
                }
            });
            if let Some(c) = here {
                pin_to(c);
            }
            let mut dst = [0u64; LEN / 8];
            barrier.wait();
            let t0 = Instant::now();
            let (mut h, mut t) = (0u64, 0u64);
            while h < n {
                while h == t {
                    t = tail.0.load(Ordering::Acquire);
                }
                let src = (ring_ptr as *const [u64; LEN / 8]).wrapping_add(h as usize % SLOTS);
                // SAFETY: slot h % SLOTS is inside `ring` and published (h < tail).
                unsafe { std::ptr::copy_nonoverlapping(src, &mut dst, 1) };
                assert_eq!(black_box(&dst)[0], h);
                h += 1;
                head.0.store(h, Ordering::Release);
            }
            t0.elapsed()
        });
        drop(ring);
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    Rates::from(rates, n as usize)
}

/// rtrb between two pinned threads of this process, 8-byte messages.
fn rtrb_threads(plan: &Plan, chunked: bool, here: Option<usize>, there: Option<usize>) -> Rates {
    let n = plan.messages(8) as u64;
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(MAX_CAPACITY);
        let barrier = Barrier::new(2);
        let elapsed = std::thread::scope(|s| {
            let producer = s.spawn(|| {
                if let Some(c) = there {
                    pin_to(c);
                }
                barrier.wait();
                let mut sent = 0;
                while sent < n {
                    if chunked {
                        let k = (n - sent).min(BATCH as u64).min(tx.slots() as u64) as usize;
                        if k == 0 {
                            std::hint::spin_loop();
                            continue;
                        }
                        let chunk = tx.write_chunk_uninit(k).expect("slots() said there was room");
                        sent += chunk.fill_from_iter(sent..sent + k as u64) as u64;
                    } else if tx.push(sent).is_ok() {
                        sent += 1;
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
            if let Some(c) = here {
                pin_to(c);
            }
            barrier.wait();
            let t0 = Instant::now();
            let mut expected = 0;
            let mut buf = [0u64; BATCH];
            while expected < n {
                if chunked {
                    let k = rx.slots().min(BATCH);
                    if k == 0 {
                        std::hint::spin_loop();
                        continue;
                    }
                    let chunk = rx.read_chunk(k).expect("slots() said these were ready");
                    let (a, b) = chunk.as_slices();
                    buf[..a.len()].copy_from_slice(a);
                    buf[a.len()..k].copy_from_slice(b);
                    chunk.commit_all();
                    for &v in &buf[..k] {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                } else if let Ok(v) = rx.pop() {
                    assert_eq!(black_box(v), expected);
                    expected += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
            let elapsed = t0.elapsed();
            producer.join().expect("producer thread");
            elapsed
        });
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    Rates::from(rates, n as usize)
}

// ---------------------------------------------------------------------------------------------
// shmchan
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `send`/`recv` with `WaitStrategy::Spin`.
    Spin,
    /// `send`/`recv` with `WaitStrategy::Sleep`.
    Sleep,
    /// `send`/`recv` with the default strategy.
    SpinThenSleep,
    /// `try_send`/`try_recv` in a spin loop (diagnostic).
    TrySpin,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Spin => "spin",
            Mode::Sleep => "sleep",
            Mode::SpinThenSleep => "spin_then_sleep",
            Mode::TrySpin => "try_spin",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        [Mode::Spin, Mode::Sleep, Mode::SpinThenSleep, Mode::TrySpin]
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode {s}").into())
    }

    fn strategy(self) -> WaitStrategy {
        match self {
            Mode::Spin | Mode::TrySpin => WaitStrategy::Spin,
            Mode::Sleep => WaitStrategy::Sleep,
            Mode::SpinThenSleep => WaitStrategy::default(),
        }
    }
}

fn send<T: Pod>(tx: &mut Producer<T>, value: T, mode: Mode) -> Result<()> {
    if mode != Mode::TrySpin {
        return tx.send(value).map_err(|e| format!("send: {e}").into());
    }
    let mut value = value;
    loop {
        match tx.try_send(value) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(v)) => {
                value = v;
                std::hint::spin_loop();
            }
            Err(e) => return Err(format!("send: {e}").into()),
        }
    }
}

/// `None` once the peer is gone and the ring drained.
fn recv<T: Pod>(rx: &mut Consumer<T>, mode: Mode) -> Result<Option<T>> {
    if mode != Mode::TrySpin {
        return match rx.recv() {
            Ok(v) => Ok(Some(v)),
            Err(RecvError::Disconnected) => Ok(None),
            Err(e) => Err(format!("recv: {e}").into()),
        };
    }
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(Some(v)),
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(TryRecvError::Disconnected) => return Ok(None),
            Err(e) => return Err(format!("recv: {e}").into()),
        }
    }
}

fn message<const W: usize>(seq: u64) -> [u64; W] {
    let mut m = [0u64; W];
    m[0] = seq;
    m
}

/// Ping-pong over two channels (one each way); the child echoes every message.
fn shmchan_latency<const W: usize>(
    mode: Mode,
    samples: usize,
    cpu: Option<usize>,
) -> Result<Latency>
where
    [u64; W]: Pod,
{
    let (ping_name, pong_name) = (ShmName::new("ping"), ShmName::new("pong"));
    let opts = Options::new().wait_strategy(mode.strategy());
    let mut tx = Channel::<[u64; W]>::create(Backing::posix(&ping_name.0), &opts)?.producer()?;
    let mut rx = Channel::<[u64; W]>::create(Backing::posix(&pong_name.0), &opts)?.consumer()?;
    let param = format!("{W},{}", mode.name());
    let peer = Peer::spawn("echo", &[&ping_name.0, &pong_name.0], &param, cpu)?;

    let warmup = samples / 10;
    let mut rtt = Vec::with_capacity(samples);
    let mut prev = Instant::now();
    for i in 0..(warmup + samples) as u64 {
        send(&mut tx, message::<W>(i), mode)?;
        let back = recv(&mut rx, mode)?.ok_or("echo peer left early")?;
        let now = Instant::now();
        if back[0] != i {
            return Err(format!("echo returned {} for {i}", back[0]).into());
        }
        if i >= warmup as u64 {
            rtt.push(now.duration_since(prev).as_nanos() as u64);
        }
        prev = now;
    }
    // Detaching is the stop signal: the child's recv reports Disconnected.
    drop(tx);
    peer.finish()?;
    drop(rx);
    Ok(Latency::from_round_trips(rtt))
}

fn echo_child<const W: usize>(names: &[&str], mode: Mode) -> Result<()>
where
    [u64; W]: Pod,
{
    let opts = Options::new().wait_strategy(mode.strategy());
    let mut rx = Channel::<[u64; W]>::open(Backing::posix(names[0]), &opts)?.consumer()?;
    let mut tx = Channel::<[u64; W]>::open(Backing::posix(names[1]), &opts)?.producer()?;
    while let Some(m) = recv(&mut rx, mode)? {
        send(&mut tx, m, mode)?;
    }
    Ok(())
}

fn capacity_for(bytes: usize) -> usize {
    (RING_BYTES / bytes).clamp(64, MAX_CAPACITY).next_power_of_two()
}

fn batch_for(capacity: usize) -> usize {
    BATCH.min(capacity / 4)
}

/// The child produces `n` messages whenever the parent asks (over a small `go` channel); the
/// parent times their arrival.
fn shmchan_throughput<const W: usize>(
    plan: &Plan,
    batched: bool,
    cpu: Option<usize>,
) -> Result<Rates>
where
    [u64; W]: Pod,
{
    let bytes = W * 8;
    let n = plan.messages(bytes);
    let capacity = capacity_for(bytes);
    let (data_name, go_name) = (ShmName::new("data"), ShmName::new("go"));
    let opts = Options::new().capacity(capacity).wait_strategy(WaitStrategy::Spin);
    let mut rx = Channel::<[u64; W]>::create(Backing::posix(&data_name.0), &opts)?.consumer()?;
    let mut go = Channel::<u64>::create(Backing::posix(&go_name.0), &Options::new())?.producer()?;
    let param = format!("{W},{}", if batched { "batched" } else { "per_message" });
    let peer = Peer::spawn("source", &[&data_name.0, &go_name.0], &param, cpu)?;

    let mut buf = vec![[0u64; W]; batch_for(capacity)];
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        go.send(n as u64).map_err(|e| format!("go: {e}"))?;
        let t0 = Instant::now();
        let mut expected = 0u64;
        while expected < n as u64 {
            let got = if batched {
                rx.try_recv_into(&mut buf)
            } else {
                rx.try_recv().map(|m| {
                    buf[0] = m;
                    1
                })
            };
            match got {
                Ok(k) => {
                    for m in &buf[..k] {
                        if m[0] != expected {
                            return Err(format!("got message {} for {expected}", m[0]).into());
                        }
                        expected += 1;
                    }
                }
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                Err(e) => return Err(format!("recv: {e}").into()),
            }
        }
        let elapsed = t0.elapsed();
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    drop(go);
    peer.finish()?;
    Ok(Rates::from(rates, n))
}

fn source_child<const W: usize>(names: &[&str], batched: bool) -> Result<()>
where
    [u64; W]: Pod,
{
    let opts = Options::new().wait_strategy(WaitStrategy::Spin);
    let mut tx = Channel::<[u64; W]>::open(Backing::posix(names[0]), &opts)?.producer()?;
    let mut go = Channel::<u64>::open(Backing::posix(names[1]), &Options::new())?.consumer()?;
    let mut batch = vec![[0u64; W]; batch_for(tx.capacity())];
    while let Ok(n) = go.recv() {
        let mut seq = 0;
        while seq < n {
            if batched {
                let k = (n - seq).min(batch.len() as u64) as usize;
                for (j, m) in batch[..k].iter_mut().enumerate() {
                    m[0] = seq + j as u64;
                }
                let mut done = 0;
                while done < k {
                    match tx.try_send_slice(&batch[done..k]) {
                        Ok(j) => done += j,
                        Err(TrySendError::Full(())) => std::hint::spin_loop(),
                        Err(e) => return Err(format!("send: {e}").into()),
                    }
                }
                seq += k as u64;
            } else {
                send(&mut tx, message::<W>(seq), Mode::TrySpin)?;
                seq += 1;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// MPMC across processes, and ArrayQueue between threads
// ---------------------------------------------------------------------------------------------

/// Control block of one MPMC repetition (a [`RawShm`]): children count themselves in at
/// `READY`, wait on the `GO` futex word, and each receiver leaves its result in its own line.
const MP_READY: usize = 512;
const MP_GO: usize = 640;
const MP_DONE: usize = 768;
const MP_RESULTS: usize = 1024;
const MP_RESULT_STRIDE: usize = 128;
/// Receivers a control block has result lines for.
const MP_MAX_RECEIVERS: usize = (RAW_LEN - MP_RESULTS) / MP_RESULT_STRIDE;
/// A message is `sender << SENDER_SHIFT | seq`.
const SENDER_SHIFT: u32 = 48;
const SEQ_MASK: u64 = (1 << SENDER_SHIFT) - 1;
/// How long one repetition may take before it counts as hung.
const MP_REP_LIMIT: Duration = Duration::from_secs(60);

/// What one receiver (process or thread) saw.
#[derive(Default, Clone, Copy)]
struct Tally {
    count: u64,
    sum: u64,
    /// Sum of `mix(message)`: a loss and a duplicate that cancel in count and sum do not
    /// cancel here.
    mixed: u64,
    /// Messages out of order for their sender (or from a sender that does not exist).
    disorder: u64,
}

impl Tally {
    fn add(&mut self, v: u64, next_seq: &mut [u64]) {
        let (sender, seq) = ((v >> SENDER_SHIFT) as usize, v & SEQ_MASK);
        match next_seq.get_mut(sender) {
            // Per sender, one receiver sees strictly increasing sequence numbers.
            Some(next) if seq >= *next => *next = seq + 1,
            _ => self.disorder += 1,
        }
        self.count += 1;
        self.sum = self.sum.wrapping_add(v);
        self.mixed = self.mixed.wrapping_add(mix(v));
    }

    fn merge(&mut self, other: &Tally) {
        self.count += other.count;
        self.sum = self.sum.wrapping_add(other.sum);
        self.mixed = self.mixed.wrapping_add(other.mixed);
        self.disorder += other.disorder;
    }

    /// What `senders` senders of `per_sender` messages each should add up to.
    fn expected(senders: usize, per_sender: u64) -> Self {
        let mut t = Tally::default();
        let mut next = vec![0; senders];
        for s in 0..senders as u64 {
            for seq in 0..per_sender {
                t.add(s << SENDER_SHIFT | seq, &mut next);
            }
        }
        t
    }

    /// Fails unless `self` is exactly `want`: nothing lost, nothing duplicated, order kept.
    fn check(&self, want: &Tally, what: &str) -> Result<()> {
        if self.disorder != 0 {
            return Err(format!("{what}: {} messages out of order", self.disorder).into());
        }
        if (self.count, self.sum, self.mixed) != (want.count, want.sum, want.mixed) {
            return Err(format!(
                "{what}: received {} messages (sum {:#x}, mix {:#x}), sent {} (sum {:#x}, mix \
                 {:#x})",
                self.count, self.sum, self.mixed, want.count, want.sum, want.mixed
            )
            .into());
        }
        Ok(())
    }
}

/// splitmix64's finaliser.
fn mix(v: u64) -> u64 {
    let mut z = v.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Where sender `s` and receiver `r` run: roles interleaved over the CPUs, so that with two
/// CPUs each has as many senders as receivers (and 1P1C puts them on different CPUs).
fn mp_cpu(cpus: &[usize], receiver: bool, k: usize) -> Option<usize> {
    if cpus.is_empty() {
        return None;
    }
    Some(cpus[(k + usize::from(receiver)) % cpus.len()])
}

/// P sender and C receiver processes over one MPMC segment of `u64`, default wait strategy.
/// Each repetition has fresh processes and segments (the end of a repetition is the senders'
/// detach); the rate runs from the parent's start signal to the last message received (each
/// receiver notes when it first found the ring empty after a message, on CLOCK_MONOTONIC).
fn mpmc_throughput(plan: &Plan, senders: usize, receivers: usize, cpus: &[usize]) -> Result<Rates> {
    assert!(receivers <= MP_MAX_RECEIVERS);
    let per_sender = (plan.mpmc_messages / senders) as u64;
    let want = Tally::expected(senders, per_sender);
    let mut rates = Vec::new();
    for rep in 0..=plan.mpmc_reps {
        let (chan_name, ctl_name) = (ShmName::new("mpmc"), ShmName::new("mpmc-ctl"));
        let opts = mpmc::Options::new()
            .capacity(MAX_CAPACITY)
            .max_endpoints(senders.max(receivers) as u64);
        let chan = mpmc::Channel::<u64>::create(Backing::posix(&chan_name.0), &opts)?;
        let ctl = RawShm::create(&ctl_name.0)?;
        let names = [chan_name.0.as_str(), ctl_name.0.as_str()];
        // Declared after the segments, so an error kills and reaps the children first.
        let mut peers = Vec::with_capacity(senders + receivers);
        for r in 0..receivers {
            let param = format!("{r},{senders}");
            peers.push(Peer::spawn("mpmc_receiver", &names, &param, mp_cpu(cpus, true, r))?);
        }
        for s in 0..senders {
            let param = format!("{s},{per_sender}");
            peers.push(Peer::spawn("mpmc_sender", &names, &param, mp_cpu(cpus, false, s))?);
        }
        let everyone = (senders + receivers) as u64;
        wait_for_peers(&peers, || ctl.u64_at(MP_READY).load(Ordering::Acquire) == everyone)?;
        let t0 = monotonic_ns();
        ctl.u32_at(MP_GO).store(1, Ordering::Release);
        futex_wake_all(ctl.u32_at(MP_GO));
        wait_for_peers(&peers, || ctl.u64_at(MP_DONE).load(Ordering::Acquire) == receivers as u64)?;
        let mut total = Tally::default();
        let mut last = t0;
        for r in 0..receivers {
            let at = MP_RESULTS + r * MP_RESULT_STRIDE;
            let word = |i: usize| ctl.u64_at(at + 8 * i).load(Ordering::Acquire);
            total.merge(&Tally { count: word(0), sum: word(1), mixed: word(2), disorder: word(3) });
            last = last.max(word(4));
        }
        for peer in peers {
            peer.finish()?;
        }
        total.check(&want, &format!("mpmc {senders}p{receivers}c"))?;
        if chan.lost_messages() != 0 {
            return Err(format!("mpmc: {} messages lost", chan.lost_messages()).into());
        }
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(want.count as f64 / ((last - t0) as f64 * 1e-9));
        }
    }
    Ok(Rates::from(rates, (per_sender * senders as u64) as usize))
}

/// Sleeps in short steps until `done()`; fails when a child failed or the time ran out.
fn wait_for_peers(peers: &[Peer], mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + MP_REP_LIMIT;
    while !done() {
        for peer in peers {
            peer.check()?;
        }
        if Instant::now() >= deadline {
            return Err("mpmc children did not finish in time".into());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    Ok(())
}

/// Counts this child in and sleeps until the parent's start signal.
fn mp_ready_and_wait(ctl: &RawShm) -> Result<()> {
    ctl.u64_at(MP_READY).fetch_add(1, Ordering::AcqRel);
    let go = ctl.u32_at(MP_GO);
    let deadline = Instant::now() + MP_REP_LIMIT;
    while go.load(Ordering::Acquire) == 0 {
        if Instant::now() >= deadline {
            return Err("no start signal".into());
        }
        futex_wait(go, 0, Duration::from_millis(100));
    }
    Ok(())
}

fn mpmc_sender_child(names: &[&str], id: u64, count: u64) -> Result<()> {
    let chan = mpmc::Channel::<u64>::open(Backing::posix(names[0]), &mpmc::Options::new())?;
    let mut tx = chan.sender()?;
    let ctl = RawShm::open(names[1])?;
    mp_ready_and_wait(&ctl)?;
    for seq in 0..count {
        // The non-blocking call first: `send` sets up a wait (and clones an Arc) per call.
        match tx.try_send(id << SENDER_SHIFT | seq) {
            Ok(()) => {}
            Err(TrySendError::Full(v)) => tx.send(v).map_err(|e| format!("send: {e}"))?,
            Err(e) => return Err(format!("send: {e}").into()),
        }
    }
    // Dropping the sender detaches it; the last detach tells the receivers to finish.
    Ok(())
}

fn mpmc_receiver_child(names: &[&str], id: usize, senders: usize) -> Result<()> {
    let chan = mpmc::Channel::<u64>::open(Backing::posix(names[0]), &mpmc::Options::new())?;
    let mut rx = chan.receiver()?;
    let ctl = RawShm::open(names[1])?;
    if id >= MP_MAX_RECEIVERS {
        return Err(format!("receiver {id} has no result line").into());
    }
    mp_ready_and_wait(&ctl)?;
    let mut tally = Tally::default();
    let mut next_seq = vec![0u64; senders];
    let mut last = monotonic_ns();
    // Whether a message arrived since `last` was taken.
    let mut fresh = false;
    loop {
        let v = match rx.try_recv() {
            Ok(v) => v,
            Err(TryRecvError::Empty) => {
                // The clock is read only when the ring runs dry, not per message.
                if fresh {
                    last = monotonic_ns();
                    fresh = false;
                }
                match rx.recv() {
                    Ok(v) => v,
                    Err(RecvError::Disconnected) => break,
                    Err(e) => return Err(format!("recv: {e}").into()),
                }
            }
            Err(TryRecvError::Disconnected) => break,
            Err(e) => return Err(format!("recv: {e}").into()),
        };
        fresh = true;
        tally.add(v, &mut next_seq);
    }
    if fresh {
        last = monotonic_ns();
    }
    let at = MP_RESULTS + id * MP_RESULT_STRIDE;
    for (i, v) in
        [tally.count, tally.sum, tally.mixed, tally.disorder, last].into_iter().enumerate()
    {
        ctl.u64_at(at + 8 * i).store(v, Ordering::Relaxed);
    }
    ctl.u64_at(MP_DONE).fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// `crossbeam_queue::ArrayQueue` of the MPMC rows' capacity, between producer and consumer
/// threads of this process pinned as the MPMC processes are, with the same message count,
/// checks and end mark. Full and empty are waited out with crossbeam's `Backoff` (spin, then
/// yield), the usual way with this queue, which has no blocking calls.
fn arrayqueue_threads(plan: &Plan, producers: usize, consumers: usize, cpus: &[usize]) -> Rates {
    use crossbeam_queue::ArrayQueue;
    use crossbeam_utils::Backoff;

    let per_producer = (plan.mpmc_messages / producers) as u64;
    let want = Tally::expected(producers, per_producer);
    let mut rates = Vec::new();
    for rep in 0..=plan.mpmc_reps {
        let queue = ArrayQueue::<u64>::new(MAX_CAPACITY);
        let finished = AtomicUsize::new(0);
        let barrier = Barrier::new(producers + consumers + 1);
        let (t0, results) = std::thread::scope(|s| {
            for p in 0..producers {
                let (queue, finished, barrier) = (&queue, &finished, &barrier);
                s.spawn(move || {
                    if let Some(c) = mp_cpu(cpus, false, p) {
                        pin_to(c);
                    }
                    barrier.wait();
                    for seq in 0..per_producer {
                        let mut v = (p as u64) << SENDER_SHIFT | seq;
                        let backoff = Backoff::new();
                        while let Err(back) = queue.push(v) {
                            v = back;
                            backoff.snooze();
                        }
                    }
                    finished.fetch_add(1, Ordering::Release);
                });
            }
            let handles: Vec<_> = (0..consumers)
                .map(|c| {
                    let (queue, finished, barrier) = (&queue, &finished, &barrier);
                    s.spawn(move || {
                        if let Some(cpu) = mp_cpu(cpus, true, c) {
                            pin_to(cpu);
                        }
                        let mut tally = Tally::default();
                        let mut next_seq = vec![0u64; producers];
                        barrier.wait();
                        let mut last = Instant::now();
                        let mut fresh = false;
                        let backoff = Backoff::new();
                        loop {
                            if let Some(v) = queue.pop() {
                                fresh = true;
                                tally.add(v, &mut next_seq);
                                backoff.reset();
                                continue;
                            }
                            if fresh {
                                last = Instant::now();
                                fresh = false;
                            }
                            // Every push happened before the count was raised: one more look
                            // after seeing it is conclusive.
                            if finished.load(Ordering::Acquire) == producers {
                                match queue.pop() {
                                    Some(v) => {
                                        fresh = true;
                                        tally.add(v, &mut next_seq);
                                        continue;
                                    }
                                    None => break,
                                }
                            }
                            backoff.snooze();
                        }
                        if fresh {
                            last = Instant::now();
                        }
                        (tally, last)
                    })
                })
                .collect();
            barrier.wait();
            let t0 = Instant::now();
            let results: Vec<_> =
                handles.into_iter().map(|h| h.join().expect("consumer thread")).collect();
            (t0, results)
        });
        let mut total = Tally::default();
        let mut last = t0;
        for (tally, at) in &results {
            total.merge(tally);
            last = last.max(*at);
        }
        if let Err(e) = total.check(&want, "arrayqueue") {
            panic!("{e}");
        }
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(want.count as f64 / last.duration_since(t0).as_secs_f64());
        }
    }
    Rates::from(rates, (per_producer * producers as u64) as usize)
}

// ---------------------------------------------------------------------------------------------
// The byte ring across processes
// ---------------------------------------------------------------------------------------------

const BYTES_SIZES: [usize; 4] = [64, 1024, 4096, 64 * 1024];
/// The data area: the SPSC rows' ring size, which also holds a 64 KiB record (a record may
/// take at most half the area, header included: max_message <= 128 KiB - 8).
const BYTES_CAPACITY: usize = RING_BYTES;
const BYTES_MAX_MESSAGE: usize = 64 * 1024;
const _: () = assert!(BYTES_MAX_MESSAGE <= BYTES_CAPACITY / 2 - 8);

/// The prepared message of `size` bytes; the first word carries the sequence number.
fn bytes_pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 131 + 7) as u8).collect()
}

/// The word at `offset` of the pattern.
fn pattern_word(pattern: &[u8], offset: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&pattern[offset..offset + 8]);
    u64::from_ne_bytes(w)
}

/// The child produces `n` records of `size` bytes whenever the parent asks (over a `go`
/// channel), always as grant + `write_at` of a prepared buffer + commit (`send` is exactly
/// that); the parent times their arrival and consumes each one either by copying it out
/// (`recv` into a reused Vec) or in place: three `read_pod::<u64>` (first, middle and last
/// word, bounded copies of 8 bytes each; no `unsafe` volatile read is needed for that), checked
/// against the pattern. Both sides use `WaitStrategy::Spin`, as the SPSC throughput rows do.
fn bytes_throughput(
    plan: &Plan,
    size: usize,
    zero_copy: bool,
    cpu: Option<usize>,
) -> Result<Rates> {
    let n = plan.messages(size);
    let (data_name, go_name) = (ShmName::new("bytes"), ShmName::new("go"));
    let opts = byte_ring::Options::new()
        .capacity_bytes(BYTES_CAPACITY)
        .max_message(BYTES_MAX_MESSAGE)
        .wait_strategy(WaitStrategy::Spin);
    let mut rx = byte_ring::Channel::create(Backing::posix(&data_name.0), &opts)?.consumer()?;
    let mut go = Channel::<u64>::create(Backing::posix(&go_name.0), &Options::new())?.producer()?;
    let param = format!("{size},{}", if zero_copy { "zero_copy" } else { "copy" });
    let peer = Peer::spawn("bytes_source", &[&data_name.0, &go_name.0], &param, cpu)?;

    let pattern = bytes_pattern(size);
    let (mid, end) = ((size / 2) & !7, size - 8);
    let (want_mid, want_end) = (pattern_word(&pattern, mid), pattern_word(&pattern, end));
    let mut buf = Vec::with_capacity(size);
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        go.send(n as u64).map_err(|e| format!("go: {e}"))?;
        let t0 = Instant::now();
        for seq in 0..n as u64 {
            let words = if zero_copy {
                let grant = rx.read().map_err(|e| format!("read: {e}"))?;
                let word = |at| grant.read_pod::<u64>(at).unwrap_or(!0);
                (grant.len(), word(0), word(mid), word(end))
            } else {
                let len = rx.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
                let word = |at| buf.get(at..at + 8).map_or(!0, |w| pattern_word(w, 0));
                (len, word(0), word(mid), word(end))
            };
            if words != (size, seq, want_mid, want_end) {
                return Err(format!(
                    "record {seq}: got len {} seq {} words {:#x} {:#x}",
                    words.0, words.1, words.2, words.3
                )
                .into());
            }
        }
        let elapsed = t0.elapsed();
        // The first repetition warms caches and the scheduler; it is not counted.
        if rep > 0 {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    drop(go);
    peer.finish()?;
    Ok(Rates::from(rates, n))
}

fn bytes_source_child(names: &[&str], size: usize, zero_copy: bool) -> Result<()> {
    let opts = byte_ring::Options::new().wait_strategy(WaitStrategy::Spin);
    let mut tx = byte_ring::Channel::open(Backing::posix(names[0]), &opts)?.producer()?;
    let mut go = Channel::<u64>::open(Backing::posix(names[1]), &Options::new())?.consumer()?;
    let mut msg = bytes_pattern(size);
    while let Ok(n) = go.recv() {
        for seq in 0..n {
            msg[..8].copy_from_slice(&seq.to_ne_bytes());
            if zero_copy {
                let mut grant = tx.grant(size).map_err(|e| format!("grant: {e}"))?;
                grant.write_at(0, &msg);
                grant.commit(size);
            } else {
                tx.send(&msg).map_err(|e| format!("send: {e}"))?;
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Child
// ---------------------------------------------------------------------------------------------

fn child_main(role: &str) -> Result<()> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers: die with the parent.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    if let Some(cpu) = std::env::var(CPU_ENV).ok().and_then(|c| c.parse().ok()) {
        pin_to(cpu);
    }
    let segs = std::env::var(SEG_ENV)?;
    let names: Vec<&str> = segs.split(',').collect();
    let param = std::env::var(PARAM_ENV).unwrap_or_default();
    let mut parts = param.split(',');
    match role {
        "cacheline" => cacheline_child(&RawShm::open(names[0])?, param == "pause"),
        "futex" => futex_child(&RawShm::open(names[0])?),
        "echo" | "source" => {
            let words: usize = parts.next().unwrap_or("").parse()?;
            let what = parts.next().unwrap_or("");
            if role == "echo" {
                let mode = Mode::parse(what)?;
                by_size!(words * 8, echo_child(&names, mode))
            } else {
                by_size!(words * 8, source_child(&names, what == "batched"))
            }
        }
        "mpmc_sender" | "mpmc_receiver" => {
            let id: usize = parts.next().unwrap_or("").parse()?;
            let n: u64 = parts.next().unwrap_or("").parse()?;
            if role == "mpmc_sender" {
                mpmc_sender_child(&names, id as u64, n)
            } else {
                mpmc_receiver_child(&names, id, n as usize)
            }
        }
        "bytes_source" => {
            let size: usize = parts.next().unwrap_or("").parse()?;
            bytes_source_child(&names, size, parts.next() == Some("zero_copy"))
        }
        other => Err(format!("unknown role {other}").into()),
    }
}
