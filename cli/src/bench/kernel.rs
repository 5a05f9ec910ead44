//! Kernel transports: pipes, Unix stream sockets, eventfd + shared buffer, POSIX message queues,
//! each between this process and one peer process, at every size of the plan.
//!
//! Every transport runs the same two measurements, so the rows differ only in the transport:
//! - `latency/<transport>/<size>`: ping-pong, the peer (`kernel_echo`) echoes each message;
//!   one way = round trip / 2.
//! - `throughput/<transport>/<size>`: the peer (`kernel_source`) streams bursts of numbered
//!   messages on request; the parent receives each one with the transport's own receive call
//!   and times the burst.
//!
//! A message is `size` bytes whose first 8 are a sequence number (or, from the parent, a command:
//! a burst length or `STOP`); every number is checked, so a lost, duplicated or reordered
//! message is an error. Both sides block in the kernel, as the classic uses of these transports
//! do, and every transport keeps its default buffering (a 64 KiB pipe, the default socket
//! buffers, `msg_max` queued messages), reported as `capacity_bytes` where it is a plain figure.
//!
//! The parent's calls are the plain blocking ones, with nothing added to what is measured (no
//! poll, no timer per call); message queues use their timed calls, which are the same system
//! call. A `StallGuard` bounds the rest: it owns the peer and, when the parent's count of
//! received messages stops moving for [`PEER_LIMIT`], kills the peer (a pipe or socket then reads
//! end of file) and wakes an eventfd wait with a count no peer can send.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::harness::{PEER_LIMIT, Peer};
use super::spsc_rows::capacity_for;
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step, size_name};

/// A latency and a throughput row for every transport at every size of the plan; a size a
/// transport cannot carry here (a message queue limit) gives a `skipped` row naming the limit.
pub(crate) fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for transport in Transport::ALL {
        for size in plan.sizes.iter().copied() {
            for role in [Role::Echo, Role::Source] {
                let row = format!("{}/{}/{}", role.kind(), transport.name(), size_name(size));
                steps.push(Step::new(format!("kernel/{row}"), move |ctx: &mut Ctx<'_>| {
                    let record = match measure(transport, role, size, &ctx.plan, ctx.there)? {
                        Outcome::Latency(l) => Record::latency(&row, &l)
                            .of("latency", transport.name(), size)
                            .text("wait", "sleep"),
                        Outcome::Throughput { rates, params } => {
                            let mut r = Record::throughput(&row, size, &rates)
                                .of("throughput", transport.name(), size)
                                .text("wait", "sleep");
                            for (key, value) in params {
                                r = r.num(key, value);
                            }
                            r
                        }
                        Outcome::Skipped(reason) => Record::new(&row, "")
                            .of("skipped", transport.name(), size)
                            .text("reason", &reason),
                    };
                    ctx.emit(record);
                    Ok(())
                }));
            }
        }
    }
    steps
}

pub(crate) fn child(role: &str, names: &[&str], param: &str) -> Option<Result<()>> {
    let role = Role::from_name(role)?;
    Some(peer_main(role, names, param))
}

/// Bytes at the start of every message holding its sequence number or command.
const SEQ_BYTES: usize = 8;
/// The command that ends a peer.
const STOP: u64 = u64::MAX;
/// The first burst of the throughput calibration; it doubles until it fills a tenth of the
/// budget.
const CALIBRATION_START: u64 = 64;
/// What the stall guard adds to an eventfd the parent waits on: more messages than any ring
/// holds, so the parent knows it was woken by the guard; small enough never to overflow the
/// counter (which would block the guard's write).
const STALL_KICK: u64 = 1 << 62;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// Two pipes, one each way.
    Pipe,
    /// `socketpair(AF_UNIX, SOCK_STREAM)`.
    UnixStream,
    /// A shared mapping carries the messages; eventfds say "ready" and return ring slots.
    EventfdShm,
    /// Two POSIX message queues, one each way.
    PosixMq,
}

impl Transport {
    const ALL: [Transport; 4] =
        [Transport::Pipe, Transport::UnixStream, Transport::EventfdShm, Transport::PosixMq];

    fn name(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::UnixStream => "unix_stream",
            Transport::EventfdShm => "eventfd_shm",
            Transport::PosixMq => "posix_mq",
        }
    }

    fn from_name(name: &str) -> Result<Self> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| format!("unknown transport {name:?}").into())
    }
}

/// What the peer does, and which row it serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Echoes each message back (latency rows).
    Echo,
    /// Streams bursts of numbered messages on request (throughput rows).
    Source,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Echo => "kernel_echo",
            Role::Source => "kernel_source",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Role::Echo, Role::Source].into_iter().find(|r| r.name() == name)
    }

    fn kind(self) -> &'static str {
        match self {
            Role::Echo => "latency",
            Role::Source => "throughput",
        }
    }
}

/// What one step measured.
enum Outcome {
    Latency(Latency),
    /// Rates and the transport's parameters (`capacity_bytes`...).
    Throughput {
        rates: Rates,
        params: Vec<(&'static str, f64)>,
    },
    /// This machine cannot run the measurement; the reason names the limit.
    Skipped(String),
}

/// An environment limit that turns a measurement into a `skipped` row (never a bug).
#[derive(Debug)]
struct Skip(String);

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skip {}

fn measure(
    transport: Transport,
    role: Role,
    size: usize,
    plan: &Plan,
    cpu: Option<usize>,
) -> Result<Outcome> {
    match connect_and_run(transport, role, size, plan, cpu) {
        Err(e) => match e.downcast::<Skip>() {
            Ok(skip) => Ok(Outcome::Skipped(skip.0)),
            Err(e) => Err(e),
        },
        ok => ok,
    }
}

fn connect_and_run(
    transport: Transport,
    role: Role,
    size: usize,
    plan: &Plan,
    cpu: Option<usize>,
) -> Result<Outcome> {
    if size < SEQ_BYTES {
        return Err(format!("{size}-byte messages cannot carry a sequence number").into());
    }
    match transport {
        Transport::Pipe => {
            let (end, peer) = connect_pipe(role, size, cpu)?;
            run_with_peer(end, peer, None, role, size, plan)
        }
        Transport::UnixStream => {
            let (end, peer) = connect_unix_stream(role, size, cpu)?;
            run_with_peer(end, peer, None, role, size, plan)
        }
        Transport::EventfdShm => {
            let (end, peer, kick) = connect_eventfd(role, size, cpu)?;
            run_with_peer(end, peer, Some(kick), role, size, plan)
        }
        Transport::PosixMq => {
            let (end, peer) = connect_mq(role, size, cpu)?;
            run_with_peer(end, peer, None, role, size, plan)
        }
    }
}

/// Runs the measurement of `role` under a [`StallGuard`], then waits for the peer's clean exit.
fn run_with_peer<E: Endpoint>(
    mut end: E,
    peer: Peer,
    kick: Option<File>,
    role: Role,
    size: usize,
    plan: &Plan,
) -> Result<Outcome> {
    let guard = StallGuard::watch(peer, kick)?;
    let measured = match role {
        Role::Echo => ping_pong(&mut end, size, plan, &guard.progress).map(Outcome::Latency),
        Role::Source => stream(&mut end, size, plan, &guard.progress)
            .map(|rates| Outcome::Throughput { rates, params: end.params() }),
    };
    match (measured, guard.release()) {
        (Ok(outcome), Ok(peer)) => {
            peer.finish()?;
            Ok(outcome)
        }
        (Ok(_), Err(stall)) => Err(stall),
        (Err(e), Err(stall)) => Err(format!("{stall}; then: {e}").into()),
        // Dropping the peer kills it.
        (Err(e), Ok(_peer)) => Err(e),
    }
}

// ---------------------------------------------------------------------------------------------
// The two measurements, the same for every transport.

/// One side of a transport, moving whole messages of one size each way.
trait Endpoint {
    /// Sends one message, blocking while the transport is full.
    fn send(&mut self, msg: &[u8]) -> Result<()>;
    /// Receives the next message into `buf` (exactly its length), blocking until it arrives.
    fn recv(&mut self, buf: &mut [u8]) -> Result<()>;
    /// After the last message of a burst, on both sides: settles flow control, so the next
    /// burst starts from the same state.
    fn end_burst(&mut self) -> Result<()> {
        Ok(())
    }
    /// The transport's parameters for the throughput row.
    fn params(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
}

fn set_word(msg: &mut [u8], value: u64) {
    msg[..SEQ_BYTES].copy_from_slice(&value.to_ne_bytes());
}

fn word(msg: &[u8]) -> u64 {
    u64::from_ne_bytes(msg[..SEQ_BYTES].try_into().expect("SEQ_BYTES bytes"))
}

/// Sends `seq` and waits for its echo.
fn round_trip<E: Endpoint>(
    end: &mut E,
    ping: &mut [u8],
    pong: &mut [u8],
    seq: u64,
    progress: &AtomicU64,
) -> Result<()> {
    set_word(ping, seq);
    end.send(ping)?;
    end.recv(pong)?;
    // Relaxed: the stall guard only compares successive values; nothing is published by it.
    progress.store(seq + 1, Ordering::Relaxed);
    match word(pong) {
        got if got == seq => Ok(()),
        got => Err(format!("echo {got} came back for {seq}").into()),
    }
}

/// Ping-pong latency. One round trip first (it includes the peer's start-up), a warm-up of a
/// tenth of the samples (at most a tenth of the budget), then up to `plan.sleep_samples` round
/// trips within `plan.latency_budget`, each timed from the previous reply.
fn ping_pong<E: Endpoint>(
    end: &mut E,
    size: usize,
    plan: &Plan,
    progress: &AtomicU64,
) -> Result<Latency> {
    let (mut ping, mut pong) = (vec![0u8; size], vec![0u8; size]);
    round_trip(end, &mut ping, &mut pong, 0, progress)?;
    let mut seq = 1;
    let warmup_end = Instant::now() + plan.latency_budget / 10;
    for _ in 0..plan.sleep_samples / 10 {
        if Instant::now() >= warmup_end {
            break;
        }
        round_trip(end, &mut ping, &mut pong, seq, progress)?;
        seq += 1;
    }
    let mut rtt = Vec::with_capacity(plan.sleep_samples);
    let mut prev = Instant::now();
    let deadline = prev + plan.latency_budget;
    while rtt.len() < plan.sleep_samples && prev < deadline {
        round_trip(end, &mut ping, &mut pong, seq, progress)?;
        seq += 1;
        let now = Instant::now();
        rtt.push(now.duration_since(prev).as_nanos() as u64);
        prev = now;
    }
    set_word(&mut ping, STOP);
    end.send(&ping)?;
    Ok(Latency::from_round_trips(&rtt))
}

/// Asks the peer for `n` messages and receives them, checking their numbers; returns the time
/// from the request to the last message.
fn burst<E: Endpoint>(
    end: &mut E,
    buf: &mut [u8],
    n: u64,
    progress: &AtomicU64,
    received: &mut u64,
) -> Result<Duration> {
    set_word(buf, n);
    let t0 = Instant::now();
    end.send(buf)?;
    for seq in 0..n {
        end.recv(buf)?;
        *received += 1;
        // Relaxed: as in `round_trip`.
        progress.store(*received, Ordering::Relaxed);
        let got = word(buf);
        if got != seq {
            return Err(format!("message {got} arrived where {seq} was due").into());
        }
    }
    let elapsed = t0.elapsed();
    end.end_burst()?;
    Ok(elapsed)
}

/// Throughput. A one-message burst first (the peer starts up); then bursts doubling from
/// [`CALIBRATION_START`] until one takes a tenth of `plan.throughput_budget`, whose fastest
/// rate sets the burst length that fills the budget (at most `plan.messages(size)`); then
/// `plan.reps` + 1 bursts of that length, the first uncounted (it also refines the length).
fn stream<E: Endpoint>(
    end: &mut E,
    size: usize,
    plan: &Plan,
    progress: &AtomicU64,
) -> Result<Rates> {
    let mut buf = vec![0u8; size];
    let mut received = 0;
    burst(end, &mut buf, 1, progress, &mut received)?;
    let budget = plan.throughput_budget;
    let cap = plan.messages(size) as u64;
    // Preemption only ever makes a burst look slower: the fastest estimate is the best one.
    let mut rate = 0f64;
    let mut n = CALIBRATION_START.min(cap);
    loop {
        let elapsed = burst(end, &mut buf, n, progress, &mut received)?;
        rate = rate.max(n as f64 / elapsed.as_secs_f64());
        if elapsed >= budget / 10 || n >= cap {
            break;
        }
        n = (n * 2).min(cap);
    }
    let messages_for = |rate: f64| ((rate * budget.as_secs_f64()) as u64).clamp(1, cap);
    let mut per_rep = messages_for(rate);
    // The first repetition warms caches and the scheduler and is not counted; it also refines
    // the length.
    let warmup = burst(end, &mut buf, per_rep, progress, &mut received)?;
    per_rep = messages_for(rate.max(per_rep as f64 / warmup.as_secs_f64()));
    let mut rates = Vec::with_capacity(plan.reps);
    for _ in 0..plan.reps {
        let elapsed = burst(end, &mut buf, per_rep, progress, &mut received)?;
        rates.push(per_rep as f64 / elapsed.as_secs_f64());
    }
    set_word(&mut buf, STOP);
    end.send(&buf)?;
    Ok(Rates::from(rates, per_rep as usize))
}

/// The peer's loop: echo each message, or stream the bursts asked for, until [`STOP`].
fn serve<E: Endpoint>(role: Role, mut end: E, size: usize) -> Result<()> {
    let mut buf = vec![0u8; size];
    loop {
        end.recv(&mut buf)?;
        let command = word(&buf);
        if command == STOP {
            return Ok(());
        }
        match role {
            Role::Echo => end.send(&buf)?,
            Role::Source => {
                for seq in 0..command {
                    set_word(&mut buf, seq);
                    end.send(&buf)?;
                }
                end.end_burst()?;
            }
        }
    }
}

/// The peer's side: takes the inherited descriptors or opens the named objects, then serves.
fn peer_main(role: Role, names: &[&str], param: &str) -> Result<()> {
    let mut fields = param.split(',');
    let transport = Transport::from_name(fields.next().unwrap_or(""))?;
    let size: usize = fields.next().ok_or("no message size")?.parse()?;
    let fds = fields.map(str::parse).collect::<std::result::Result<Vec<RawFd>, _>>()?;
    let mut inherited = take_inherited(&fds)?.into_iter();
    let mut next = || inherited.next().ok_or("too few descriptors");
    match transport {
        Transport::Pipe => {
            let (rx, tx) = (File::from(next()?), File::from(next()?));
            serve(role, FdStream { rx, tx }, size)
        }
        Transport::UnixStream => {
            let rx = File::from(next()?);
            let tx = rx.try_clone()?;
            serve(role, FdStream { rx, tx }, size)
        }
        Transport::EventfdShm => {
            let memfd = File::from(next()?);
            let fds = EventFds { down: next()?.into(), up: next()?.into(), freed: next()?.into() };
            serve(role, EventfdPeer::open(role, size, &memfd, fds)?, size)
        }
        Transport::PosixMq => {
            let [down, up] = names else { return Err("expected two queue names".into()) };
            serve(role, MqEnd::open(down, up, size)?, size)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Peers, descriptors, the stall guard.

/// Spawns the peer of `role`, which inherits `inherit` (their numbers go in the parameter);
/// every other descriptor of ours stays close-on-exec.
fn spawn_inheriting(
    role: Role,
    transport: Transport,
    size: usize,
    inherit: &[BorrowedFd<'_>],
    names: &[&str],
    cpu: Option<usize>,
) -> Result<Peer> {
    let fds: Vec<RawFd> = inherit.iter().map(AsRawFd::as_raw_fd).collect();
    let mut param = format!("{},{size}", transport.name());
    for fd in &fds {
        write!(param, ",{fd}")?;
    }
    let clear_cloexec = move || -> std::io::Result<()> {
        for &fd in &fds {
            // SAFETY: fcntl takes plain integers; `fd` is open in the forked child (a copy of
            // the parent's table, where the caller keeps it open across the spawn).
            if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } == -1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    };
    Peer::spawn_configured(role.name(), names, &param, cpu, |cmd| {
        // SAFETY: the closure runs in the forked child before exec; it allocates nothing (the
        // list was built before the fork) and only calls fcntl, which is async-signal-safe.
        unsafe { cmd.pre_exec(clear_cloexec) };
    })
}

/// Takes ownership of the descriptors the parent left open for this process.
fn take_inherited(fds: &[RawFd]) -> Result<Vec<OwnedFd>> {
    let mut sorted = fds.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != fds.len() {
        return Err(format!("descriptor listed twice in {fds:?}").into());
    }
    fds.iter()
        .map(|&fd| {
            // SAFETY: F_GETFD takes plain integers and only reads the descriptor's flags.
            if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } == -1 {
                return Err(format!("descriptor {fd} was not inherited").into());
            }
            // SAFETY: `fd` is open (checked above) and was left open by the parent for this
            // process alone; it is taken once (the list has no duplicates) and nothing else in
            // this process refers to it.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect()
}

fn os_error(what: &str) -> Box<dyn std::error::Error> {
    format!("{what}: {}", std::io::Error::last_os_error()).into()
}

/// A descriptor just returned by a creating call, or the error it reported.
fn owned(fd: libc::c_int, what: &str) -> Result<OwnedFd> {
    if fd < 0 {
        return Err(os_error(what));
    }
    // SAFETY: `fd` was just created by the caller's system call and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Bounds the parent's blocking calls without adding anything to them. A thread owns the peer;
/// when the parent's count of received messages (`progress`) has not moved for
/// [`PEER_LIMIT`], it kills the peer, so a pipe or socket read returns end of file and a write
/// fails, and writes [`STALL_KICK`] to `kick`, the eventfd the parent may sleep on.
struct StallGuard {
    /// Messages the parent has received so far.
    progress: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<()>>,
    /// Gives the peer back, or `None` after killing it.
    thread: Option<JoinHandle<Option<Peer>>>,
}

impl StallGuard {
    fn watch(peer: Peer, kick: Option<File>) -> Result<Self> {
        let progress = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&progress);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread =
            std::thread::Builder::new().name("kernel-stall-guard".into()).spawn(move || {
                // Relaxed: only successive values are compared, nothing is published.
                let mut last = seen.load(Ordering::Relaxed);
                loop {
                    if stopped.recv_timeout(PEER_LIMIT) != Err(RecvTimeoutError::Timeout) {
                        return Some(peer);
                    }
                    let now = seen.load(Ordering::Relaxed);
                    if now != last {
                        last = now;
                        continue;
                    }
                    // Kills and reaps it.
                    drop(peer);
                    if let Some(mut fd) = kick {
                        // Best effort: the parent's next call fails anyway if it is not
                        // sleeping on this eventfd.
                        let _ = fd.write_all(&STALL_KICK.to_ne_bytes());
                    }
                    return None;
                }
            })?;
        Ok(StallGuard { progress, stop: Some(stop), thread: Some(thread) })
    }

    /// Stops watching; gives the peer back, or fails if it was killed for stalling.
    fn release(mut self) -> Result<Peer> {
        drop(self.stop.take());
        let thread = self.thread.take().expect("present until released");
        match thread.join() {
            Ok(Some(peer)) => Ok(peer),
            Ok(None) => {
                Err(format!("the peer made no progress for {PEER_LIMIT:?}; killed it").into())
            }
            Err(_) => Err("the stall guard panicked".into()),
        }
    }
}

impl Drop for StallGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The peer it returns is dropped, which kills it.
            let _ = thread.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// pipe, unix_stream: a byte stream carrying whole messages.

/// A pipe pair (`rx` and `tx` are the two pipes) or a Unix stream socket (`tx` duplicates
/// `rx`). `read_exact`/`write_all` loop on short reads and writes (a 64 KiB message does not
/// fit a pipe holding anything) and on EINTR.
struct FdStream {
    rx: File,
    tx: File,
}

impl Endpoint for FdStream {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.tx.write_all(msg).map_err(|e| format!("write: {e}").into())
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<()> {
        self.rx.read_exact(buf).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "read: end of file (the peer is gone)".into(),
            _ => format!("read: {e}").into(),
        })
    }

    fn params(&self) -> Vec<(&'static str, f64)> {
        // SAFETY: F_GETPIPE_SZ takes plain integers; it fails (-1) on a socket.
        let pipe_bytes = unsafe { libc::fcntl(self.rx.as_raw_fd(), libc::F_GETPIPE_SZ) };
        if pipe_bytes > 0 { vec![("capacity_bytes", pipe_bytes as f64)] } else { Vec::new() }
    }
}

/// A pipe with both ends close-on-exec: (read end, write end).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is a valid out-array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_error("pipe2"));
    }
    Ok((owned(fds[0], "pipe2")?, owned(fds[1], "pipe2")?))
}

fn connect_pipe(role: Role, size: usize, cpu: Option<usize>) -> Result<(FdStream, Peer)> {
    let (down_rx, down_tx) = pipe()?;
    let (up_rx, up_tx) = pipe()?;
    let peer =
        spawn_inheriting(role, Transport::Pipe, size, &[down_rx.as_fd(), up_tx.as_fd()], &[], cpu)?;
    // Our copies of the peer's ends close here, so its exit reads as end of file.
    drop((down_rx, up_tx));
    Ok((FdStream { rx: up_rx.into(), tx: down_tx.into() }, peer))
}

fn connect_unix_stream(role: Role, size: usize, cpu: Option<usize>) -> Result<(FdStream, Peer)> {
    // Both ends close-on-exec (SOCK_CLOEXEC).
    let (ours, theirs) = UnixStream::pair()?;
    let peer = spawn_inheriting(role, Transport::UnixStream, size, &[theirs.as_fd()], &[], cpu)?;
    // As for pipes: the peer's exit then reads as end of file.
    drop(theirs);
    let rx = File::from(OwnedFd::from(ours));
    let tx = rx.try_clone()?;
    Ok((FdStream { rx, tx }, peer))
}

// ---------------------------------------------------------------------------------------------
// eventfd_shm: messages in a shared mapping, eventfds to signal them.

/// The shared mapping: the parent's message slot at offset 0, then a ring of `slots` slots for
/// the peer's messages (one for echoes; for streams as many as shmchan's throughput rings hold,
/// so both buffer the same bytes).
#[derive(Clone, Copy, Debug)]
struct RingLayout {
    size: usize,
    slots: u64,
    ring_offset: usize,
}

impl RingLayout {
    fn new(role: Role, size: usize) -> Self {
        let slots = match role {
            Role::Echo => 1,
            Role::Source => capacity_for(size) as u64,
        };
        RingLayout { size, slots, ring_offset: size.next_multiple_of(4096) }
    }

    fn len(&self) -> usize {
        self.ring_offset + self.slots as usize * self.size
    }

    fn slot(&self, seq: u64) -> usize {
        self.ring_offset + (seq % self.slots) as usize * self.size
    }
}

/// A shared read-write mapping of a memfd.
struct SharedMap {
    base: NonNull<u8>,
    len: usize,
}

impl SharedMap {
    fn new(fd: BorrowedFd<'_>, len: usize) -> Result<Self> {
        // SAFETY: a fresh shared mapping of `len` bytes of the object at an address the kernel
        // picks; it aliases no Rust object.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error("mmap"));
        }
        let base = NonNull::new(base.cast()).ok_or("mmap returned null")?;
        Ok(SharedMap { base, len })
    }

    /// Copies `msg` in at `offset`. The protocol gives the slot to this side alone until the
    /// eventfd write that publishes it.
    fn put(&self, offset: usize, msg: &[u8]) {
        assert!(offset + msg.len() <= self.len, "slot outside the mapping");
        // SAFETY: in bounds (checked); the mapping lives as long as `self`; no other process
        // touches this slot until our eventfd write publishes it, and the compiler cannot move
        // the copy past that write (the mapping escaped through mmap, so an opaque system call
        // may read it); the kernel's eventfd lock orders the copy before the peer's read.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), self.base.as_ptr().add(offset), msg.len())
        };
    }

    /// Copies out at `offset` into `buf`. The protocol gives the slot to this side alone from
    /// the eventfd read that announced it until the write that returns it.
    fn take(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset + buf.len() <= self.len, "slot outside the mapping");
        // SAFETY: as in `put`, with the roles swapped: the eventfd read that announced the slot
        // came first, and the writer does not touch it again until we return it.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.base.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: `base`/`len` are the mapping made in `new`, unmapped once; no reference into
        // it outlives `self` (the accessors copy).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

/// The three eventfds: `down` counts parent messages (each one waits for the peer's reply or
/// burst, so the count is always 1), `up` counts messages the peer published in the ring, and
/// `freed` counts ring slots the parent returns (streams only: an echo's slot is free again
/// once the next message comes down).
struct EventFds {
    down: File,
    up: File,
    freed: File,
}

fn eventfd_read(fd: &mut File, what: &str) -> Result<u64> {
    let mut count = [0u8; 8];
    fd.read_exact(&mut count).map_err(|e| format!("eventfd read ({what}): {e}"))?;
    Ok(u64::from_ne_bytes(count))
}

fn eventfd_add(fd: &mut File, count: u64, what: &str) -> Result<()> {
    fd.write_all(&count.to_ne_bytes()).map_err(|e| format!("eventfd write ({what}): {e}").into())
}

fn new_eventfd() -> Result<File> {
    // SAFETY: eventfd takes plain integers.
    Ok(owned(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) }, "eventfd")?.into())
}

/// The parent's side: sends into the down slot, consumes the ring.
struct EventfdParent {
    map: SharedMap,
    layout: RingLayout,
    fds: EventFds,
    streaming: bool,
    /// Messages announced on `up` and not read yet.
    announced: u64,
    /// Sequence of the next ring slot to read.
    next: u64,
    /// Ring slots read and not returned on `freed` yet (streams).
    unreturned: u64,
}

impl EventfdParent {
    fn return_slots(&mut self) -> Result<()> {
        if self.unreturned > 0 {
            eventfd_add(&mut self.fds.freed, self.unreturned, "freed")?;
            self.unreturned = 0;
        }
        Ok(())
    }
}

impl Endpoint for EventfdParent {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.map.put(0, msg);
        eventfd_add(&mut self.fds.down, 1, "down")
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<()> {
        if self.announced == 0 {
            // Return what we hold before sleeping, or a peer waiting for slots never wakes us.
            self.return_slots()?;
            let count = eventfd_read(&mut self.fds.up, "up")?;
            if count >= STALL_KICK {
                return Err("woken by the stall guard".into());
            }
            if count > self.layout.slots {
                return Err(
                    format!("{count} messages announced in {} slots", self.layout.slots).into()
                );
            }
            self.announced = count;
        }
        self.announced -= 1;
        self.map.take(self.layout.slot(self.next), buf);
        self.next += 1;
        if self.streaming {
            self.unreturned += 1;
            // Half a ring at a time: the peer rarely waits, and the parent rarely writes.
            if self.unreturned >= self.layout.slots / 2 {
                self.return_slots()?;
            }
        }
        Ok(())
    }

    fn end_burst(&mut self) -> Result<()> {
        if self.announced != 0 {
            return Err(format!("{} messages beyond the burst", self.announced).into());
        }
        self.return_slots()
    }

    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![
            ("capacity_bytes", (self.layout.slots as usize * self.layout.size) as f64),
            ("ring_slots", self.layout.slots as f64),
        ]
    }
}

/// The peer's side: reads the down slot, publishes into the ring.
struct EventfdPeer {
    map: SharedMap,
    layout: RingLayout,
    fds: EventFds,
    streaming: bool,
    /// Ring slots this side may fill (streams).
    free: u64,
    /// Sequence of the next ring slot to fill.
    next: u64,
}

impl EventfdPeer {
    fn open(role: Role, size: usize, memfd: &File, fds: EventFds) -> Result<Self> {
        let layout = RingLayout::new(role, size);
        let len = memfd.metadata()?.len();
        if len != layout.len() as u64 {
            return Err(format!("mapping of {len} bytes, expected {}", layout.len()).into());
        }
        let map = SharedMap::new(memfd.as_fd(), layout.len())?;
        let streaming = role == Role::Source;
        Ok(EventfdPeer { map, layout, fds, streaming, free: layout.slots, next: 0 })
    }
}

impl Endpoint for EventfdPeer {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        if self.streaming {
            while self.free == 0 {
                self.free = eventfd_read(&mut self.fds.freed, "freed")?;
                if self.free > self.layout.slots {
                    return Err(
                        format!("{} slots freed of {}", self.free, self.layout.slots).into()
                    );
                }
            }
            self.free -= 1;
        }
        self.map.put(self.layout.slot(self.next), msg);
        self.next += 1;
        eventfd_add(&mut self.fds.up, 1, "up")
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<()> {
        let count = eventfd_read(&mut self.fds.down, "down")?;
        if count != 1 {
            return Err(format!("{count} parent messages announced at once").into());
        }
        self.map.take(0, buf);
        Ok(())
    }

    /// Waits until the parent has returned every slot of the burst, so the next burst starts
    /// with an empty ring and `freed` at zero.
    fn end_burst(&mut self) -> Result<()> {
        while self.free < self.layout.slots {
            self.free += eventfd_read(&mut self.fds.freed, "freed")?;
        }
        if self.free != self.layout.slots {
            return Err(format!("{} slots freed of {}", self.free, self.layout.slots).into());
        }
        Ok(())
    }
}

fn connect_eventfd(
    role: Role,
    size: usize,
    cpu: Option<usize>,
) -> Result<(EventfdParent, Peer, File)> {
    let layout = RingLayout::new(role, size);
    // SAFETY: the name is a valid C string; memfd_create takes it and plain flags.
    let memfd = File::from(owned(
        unsafe { libc::memfd_create(c"shmchan-bench-eventfd-shm".as_ptr(), libc::MFD_CLOEXEC) },
        "memfd_create",
    )?);
    memfd.set_len(layout.len() as u64)?;
    let map = SharedMap::new(memfd.as_fd(), layout.len())?;
    let fds = EventFds { down: new_eventfd()?, up: new_eventfd()?, freed: new_eventfd()? };
    let inherit = [memfd.as_fd(), fds.down.as_fd(), fds.up.as_fd(), fds.freed.as_fd()];
    let peer = spawn_inheriting(role, Transport::EventfdShm, size, &inherit, &[], cpu)?;
    let kick = fds.up.try_clone()?;
    let end = EventfdParent {
        map,
        layout,
        fds,
        streaming: role == Role::Source,
        announced: 0,
        next: 0,
        unreturned: 0,
    };
    Ok((end, peer, kick))
}

// ---------------------------------------------------------------------------------------------
// posix_mq: two message queues.

const MQ_PROC: &str = "/proc/sys/fs/mqueue";
/// What the kernel charges to RLIMIT_MSGQUEUE per queued message beyond its bytes (a
/// `struct msg_msg` and a priority tree node), rounded up.
const MQ_MSG_OVERHEAD: usize = 128;

/// A queue name, unlinked on drop unless already unlinked.
struct MqName {
    name: std::ffi::CString,
}

impl MqName {
    fn fresh(tag: &str) -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("/shmchan-ipc-bench-{}-{n}-mq-{tag}", std::process::id());
        Ok(MqName { name: std::ffi::CString::new(name)? })
    }

    fn as_str(&self) -> &str {
        self.name.to_str().expect("built from a String")
    }
}

impl Drop for MqName {
    fn drop(&mut self) {
        // SAFETY: a valid C string naming a queue we created.
        unsafe { libc::mq_unlink(self.name.as_ptr()) };
    }
}

/// An open queue descriptor, closed on drop.
struct Mq(libc::mqd_t);

impl Drop for Mq {
    fn drop(&mut self) {
        // SAFETY: the descriptor came from mq_open and is closed once.
        unsafe { libc::mq_close(self.0) };
    }
}

impl Mq {
    /// Opens `name`; with `create`, makes a fresh queue of `depth` messages of `size` bytes.
    fn open(
        name: &std::ffi::CStr,
        flags: libc::c_int,
        create: Option<(usize, usize)>,
    ) -> Result<Self> {
        let flags = flags | libc::O_CLOEXEC;
        let mqd = match create {
            Some((depth, size)) => {
                // SAFETY: all-zero is a valid mq_attr (it has private padding fields).
                let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
                attr.mq_maxmsg = depth.try_into()?;
                attr.mq_msgsize = size.try_into()?;
                // SAFETY: `name` is a valid C string; mode and attributes are the two variadic
                // arguments O_CREAT requires, `attr` outliving the call.
                unsafe {
                    libc::mq_open(
                        name.as_ptr(),
                        flags | libc::O_CREAT | libc::O_EXCL,
                        0o600 as libc::mode_t,
                        &mut attr as *mut libc::mq_attr,
                    )
                }
            }
            // SAFETY: `name` is a valid C string; no variadic arguments without O_CREAT.
            None => unsafe { libc::mq_open(name.as_ptr(), flags) },
        };
        if mqd != -1 {
            return Ok(Mq(mqd));
        }
        let e = std::io::Error::last_os_error();
        let message = format!("mq_open {name:?}: {e}");
        // Creation fails on these when the system's limits or configuration do not allow the
        // queue (a name clash would be a bug: names are fresh).
        let environment = [
            libc::EACCES,
            libc::EINVAL,
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOMEM,
            libc::ENOSPC,
            libc::ENOSYS,
            libc::EPERM,
        ];
        if create.is_some() && e.raw_os_error().is_some_and(|c| environment.contains(&c)) {
            Err(Box::new(Skip(message)))
        } else {
            Err(message.into())
        }
    }

    fn attributes(&self) -> Result<libc::mq_attr> {
        // SAFETY: all-zero is a valid mq_attr.
        let mut attr: libc::mq_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the descriptor is open; `attr` is a valid out-pointer.
        if unsafe { libc::mq_getattr(self.0, &mut attr) } != 0 {
            return Err(os_error("mq_getattr"));
        }
        Ok(attr)
    }
}

/// CLOCK_REALTIME + `limit`: the absolute deadline the timed queue calls take.
fn realtime_deadline(limit: Duration) -> libc::timespec {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid out-pointer; CLOCK_REALTIME always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let nanos = now.tv_nsec as u64 + u64::from(limit.subsec_nanos());
    libc::timespec {
        tv_sec: now.tv_sec + (limit.as_secs() + nanos / 1_000_000_000) as libc::time_t,
        tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
    }
}

/// One side of the queue pair. The timed calls (deadline [`PEER_LIMIT`] ahead) are the same
/// system calls as `mq_send`/`mq_receive`, which glibc implements with them.
struct MqEnd {
    rx: Mq,
    tx: Mq,
    size: usize,
    depth: usize,
    /// The parent's queue names, unlinked once the peer has replied (it has both open by then).
    names: Vec<MqName>,
}

impl MqEnd {
    /// The peer's side: opens the queues the parent created.
    fn open(down: &str, up: &str, size: usize) -> Result<Self> {
        let rx = Mq::open(&std::ffi::CString::new(down)?, libc::O_RDONLY, None)?;
        let tx = Mq::open(&std::ffi::CString::new(up)?, libc::O_WRONLY, None)?;
        let attr = rx.attributes()?;
        if usize::try_from(attr.mq_msgsize) != Ok(size) {
            return Err(format!("queue of {} B messages, expected {size}", attr.mq_msgsize).into());
        }
        Ok(MqEnd { rx, tx, size, depth: attr.mq_maxmsg.try_into()?, names: Vec::new() })
    }
}

impl Endpoint for MqEnd {
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        loop {
            let deadline = realtime_deadline(PEER_LIMIT);
            // SAFETY: the descriptor is open; `msg` is readable for its length; `deadline`
            // outlives the call.
            let rc = unsafe {
                libc::mq_timedsend(self.tx.0, msg.as_ptr().cast(), msg.len(), 0, &deadline)
            };
            if rc == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(mq_error("mq_timedsend", e));
            }
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> Result<()> {
        let n = loop {
            let deadline = realtime_deadline(PEER_LIMIT);
            let mut priority = 0;
            // SAFETY: the descriptor is open; `buf` is writable for its length (the queue's
            // message size, so no message is truncated); the out-pointers outlive the call.
            let n = unsafe {
                libc::mq_timedreceive(
                    self.rx.0,
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    &mut priority,
                    &deadline,
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(mq_error("mq_timedreceive", e));
            }
        };
        if n != self.size {
            return Err(format!("a {n}-byte message in a queue of {} B messages", self.size).into());
        }
        // Dropping the names unlinks them: nothing is left behind even if we are killed later.
        self.names.clear();
        Ok(())
    }

    fn params(&self) -> Vec<(&'static str, f64)> {
        vec![("capacity_bytes", (self.depth * self.size) as f64), ("mq_maxmsg", self.depth as f64)]
    }
}

fn mq_error(call: &str, e: std::io::Error) -> Box<dyn std::error::Error> {
    if e.kind() == std::io::ErrorKind::TimedOut {
        format!("{call}: the peer was silent for {PEER_LIMIT:?}").into()
    } else {
        format!("{call}: {e}").into()
    }
}

fn read_limit(file: &str) -> std::result::Result<usize, Skip> {
    let path = format!("{MQ_PROC}/{file}");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Skip(format!("POSIX message queues unavailable ({path}: {e})")))?;
    text.trim().parse().map_err(|e| Skip(format!("{path}: {e}")))
}

/// The queue depth for `size`-byte messages: `msg_max`, lowered so the two queues fit
/// RLIMIT_MSGQUEUE; a skip when `size` exceeds `msgsize_max` or not one message fits.
fn mq_depth(size: usize) -> std::result::Result<usize, Skip> {
    let msgsize_max = read_limit("msgsize_max")?;
    if size > msgsize_max {
        return Err(Skip(format!(
            "{size} B messages exceed {MQ_PROC}/msgsize_max ({msgsize_max} B)"
        )));
    }
    let mut depth = read_limit("msg_max")?;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: `limit` is a valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MSGQUEUE, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
    {
        let fits = limit.rlim_cur as usize / (2 * (size + MQ_MSG_OVERHEAD));
        depth = depth.min(fits);
    }
    if depth == 0 {
        return Err(Skip(format!(
            "RLIMIT_MSGQUEUE or {MQ_PROC}/msg_max allows no {size} B message in two queues"
        )));
    }
    Ok(depth)
}

fn connect_mq(role: Role, size: usize, cpu: Option<usize>) -> Result<(MqEnd, Peer)> {
    let depth = mq_depth(size)?;
    let (down, up) = (MqName::fresh("down")?, MqName::fresh("up")?);
    let tx = Mq::open(&down.name, libc::O_WRONLY, Some((depth, size)))?;
    let rx = Mq::open(&up.name, libc::O_RDONLY, Some((depth, size)))?;
    let peer =
        spawn_inheriting(role, Transport::PosixMq, size, &[], &[down.as_str(), up.as_str()], cpu)?;
    Ok((MqEnd { rx, tx, size, depth, names: vec![down, up] }, peer))
}
