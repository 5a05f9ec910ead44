//! MPMC channels between processes. The helper processes are this test binary re-executed with
//! `SHMCHAN_MPMC_PEER` set, running the ignored `peer_process` entry point. Every wait has a
//! timeout, every child is killed on failure ([`common::ChildGuard`]), every name is unique to the
//! test and removed.
//!
//! - `four_producers_two_consumers_exactly_once_in_order`: 4 producer processes stream sequenced
//!   messages into 2 consumer processes; per producer, the consumers' counts, sums and sums of
//!   squares add up exactly, and each consumer saw every producer's sequence strictly increasing.
//! - `producer_sigkilled_at_random_points_loses_at_most_one`: rounds of 3 producers, one of them
//!   SIGKILLed after a random delay; it loses at most the message it had claimed, the others lose
//!   nothing and are never blocked.
//! - `consumer_sigkilled_mid_stream_loses_at_most_the_message_it_was_copying`: rounds of a consumer
//!   process SIGKILLed while it copies large messages; the parent's receiver gets everything else
//!   exactly once.
//!
//! Randomness comes from a xorshift seeded from the clock (or `SHMCHAN_TEST_SEED`); the seed is
//! printed and appears in every assertion message.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ChildGuard, ShmName, TempPath};
use shmchan::mpmc::{Channel, Options, Receiver};
use shmchan::{Backing, RecvTimeoutError, TryRecvError};

const FINGERPRINT: u64 = 0x6d70_6d63_7871_7001;
/// How long any one child may run; also the bound of each round.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a receiver waits for one message before declaring the stream stalled.
const STALL: Duration = Duration::from_secs(20);

// ------------------------------------------------------------------------------------------
// Messages
// ------------------------------------------------------------------------------------------

fn check_word(producer: u64, seq: u64) -> u64 {
    !(producer.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seq.wrapping_mul(0xbf58_476d_1ce4_e5b9))
}

/// A message type carried between the processes: a producer id, a sequence number and check
/// words that reveal a torn or forged copy.
trait Wire: bytemuck::Pod + Send + 'static {
    fn make(producer: u64, seq: u64) -> Self;
    /// `(producer, seq)` if the message is intact.
    fn parse(&self) -> Option<(u64, u64)>;
}

/// A small message: 24 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
struct Small {
    producer: u64,
    seq: u64,
    check: u64,
}

impl Wire for Small {
    fn make(producer: u64, seq: u64) -> Self {
        Small { producer, seq, check: check_word(producer, seq) }
    }

    fn parse(&self) -> Option<(u64, u64)> {
        (self.check == check_word(self.producer, self.seq)).then_some((self.producer, self.seq))
    }
}

/// Large messages (1 KiB and 16 KiB): the copy in and out takes long enough that a SIGKILL at
/// a random moment often lands inside it. Id and sequence at the front, a check word at both
/// ends.
macro_rules! big_message {
    ($name:ident, $words:literal) => {
        #[repr(transparent)]
        #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
        struct $name([u64; $words]);

        impl Wire for $name {
            fn make(producer: u64, seq: u64) -> Self {
                let mut m = [0u64; $words];
                m[0] = producer;
                m[1] = seq;
                m[2] = check_word(producer, seq);
                m[$words - 1] = m[2];
                $name(m)
            }

            fn parse(&self) -> Option<(u64, u64)> {
                let m = &self.0;
                let check = check_word(m[0], m[1]);
                (m[2] == check && m[$words - 1] == check).then_some((m[0], m[1]))
            }
        }
    };
}

big_message!(Kib, 128);
big_message!(Big, 2048);

fn options() -> Options {
    Options::new().fingerprint(FINGERPRINT)
}

// ------------------------------------------------------------------------------------------
// Randomness
// ------------------------------------------------------------------------------------------

/// xorshift64*, seeded from `SHMCHAN_TEST_SEED` or the clock.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> (Self, u64) {
        let seed = std::env::var("SHMCHAN_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                (t.as_nanos() as u64) ^ u64::from(std::process::id()) << 32
            })
            .max(1);
        (Rng(seed), seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ------------------------------------------------------------------------------------------
// Helper processes
// ------------------------------------------------------------------------------------------

/// A helper process whose stdout lines are read by a thread, so it never blocks on a full pipe
/// and we can wait for a line with a timeout. Only lines carrying the `@@` marker count (libtest
/// prints around them); the marker and what precedes it are cut off.
struct Peer {
    child: ChildGuard,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn spawn(spec: &str) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = ChildGuard::spawn(
            Command::new(exe)
                .args(["--exact", "peer_process", "--ignored", "--nocapture", "--test-threads=1"])
                .env("SHMCHAN_MPMC_PEER", spec)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        );
        let out = child.0.as_mut().unwrap().stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some((_, ours)) = line.split_once("@@")
                    && tx.send(ours.to_owned()).is_err()
                {
                    return;
                }
            }
        });
        Peer { child, lines, seen: Vec::new() }
    }

    /// Waits (at most until `deadline`) for a line equal to `want`.
    fn wait_for(&mut self, want: &str, deadline: Instant) {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == want => return,
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "helper {} never printed {want:?} ({e}); saw {:?}",
                    self.pid(),
                    self.seen
                ),
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Waits for exit and returns the status and every marked line printed.
    fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.child.wait_timeout(timeout);
        // The reader ends at EOF, which follows the exit unless a grandchild holds the pipe.
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(line) =
            self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line);
        }
        (status, self.seen)
    }
}

fn wait_all_attached(peers: &mut [Peer], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    for p in peers {
        p.wait_for("attached", deadline);
    }
}

/// Per-producer tallies of what one consumer received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    count: u64,
    sum: u64,
    sum_sq: u128,
}

impl Tally {
    fn add(&mut self, seq: u64) {
        self.count += 1;
        self.sum += seq;
        self.sum_sq += u128::from(seq) * u128::from(seq);
    }

    fn merge(&mut self, o: Tally) {
        self.count += o.count;
        self.sum += o.sum;
        self.sum_sq += o.sum_sq;
    }

    /// The tally of `0..n`.
    fn expected(n: u64) -> Tally {
        let n128 = u128::from(n);
        Tally {
            count: n,
            sum: n * n.saturating_sub(1) / 2,
            sum_sq: n128.saturating_sub(1) * n128 * (2 * n128).saturating_sub(1) / 6,
        }
    }
}

/// The body of every helper process.
#[test]
#[ignore = "entry point of the helper processes the other tests spawn"]
fn peer_process() {
    let Ok(spec) = std::env::var("SHMCHAN_MPMC_PEER") else { return };
    let fields: Vec<&str> = spec.split(';').collect();
    let (role, name, kind) = (fields[0], fields[1], fields[2]);
    match (role, kind) {
        ("produce", "small") => produce::<Small>(name, &fields[3..]),
        ("produce", "kib") => produce::<Kib>(name, &fields[3..]),
        ("produce", "big") => produce::<Big>(name, &fields[3..]),
        ("consume", "small") => consume::<Small>(name, &fields[3..]),
        ("consume-log", "big") => consume_log::<Big>(name, &fields[3..]),
        ("attach-then-stall", "small") => attach_then_stall::<Small>(name, &fields[3..]),
        other => panic!("unknown helper role {other:?}"),
    }
}

/// `produce;NAME;KIND;ID;COUNT`: sends `COUNT` messages `(ID, 0..COUNT)` with blocking sends.
fn produce<T: Wire>(name: &str, args: &[&str]) {
    let id: u64 = args[0].parse().unwrap();
    let count: u64 = args[1].parse().unwrap();
    let chan = Channel::<T>::open(Backing::posix(name), &options()).unwrap();
    let mut tx = chan.sender().unwrap();
    println!("@@attached");
    for seq in 0..count {
        if let Err(e) = tx.send(T::make(id, seq)) {
            eprintln!("producer {id}: send {seq} failed: {e}");
            std::process::exit(3);
        }
    }
    drop(tx);
    println!("@@sent {count}");
}

/// `consume;NAME;KIND;PRODUCERS`: receives until `Disconnected`, checks that every producer's
/// sequence numbers strictly increase and every message is intact, then prints one summary
/// line: `summary id:count:sum:sum_sq ...`.
fn consume<T: Wire>(name: &str, args: &[&str]) {
    let producers: usize = args[0].parse().unwrap();
    let chan = Channel::<T>::open(Backing::posix(name), &options()).unwrap();
    let mut rx = chan.receiver().unwrap();
    println!("@@attached");
    let mut tallies = vec![Tally::default(); producers];
    let mut last = vec![None::<u64>; producers];
    let mut buf = vec![T::zeroed(); 256];
    loop {
        let n = match rx.recv_into(&mut buf) {
            Ok(n) => n,
            Err(shmchan::RecvError::Disconnected) => break,
            Err(e) => panic!("consumer: {e}"),
        };
        for m in &buf[..n] {
            let Some((id, seq)) = m.parse() else { panic!("damaged message") };
            let id = id as usize;
            assert!(id < producers, "unknown producer {id}");
            assert!(last[id].is_none_or(|p| p < seq), "producer {id}: {seq} after {:?}", last[id]);
            last[id] = Some(seq);
            tallies[id].add(seq);
        }
    }
    let fields: Vec<String> = tallies
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{i}:{}:{}:{}", t.count, t.sum, t.sum_sq))
        .collect();
    println!("@@summary {}", fields.join(" "));
}

/// `consume-log;NAME;KIND;LOG`: receives until `Disconnected` (or death), appending each
/// message's `(producer << 32 | seq) + 1` to a shared mapping of the file `LOG`, which
/// survives a SIGKILL.
fn consume_log<T: Wire>(name: &str, args: &[&str]) {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(args[0]).unwrap();
    // SAFETY: the log file is private to this test: the parent only reads it after this
    // process has exited, so nothing else changes the mapped bytes while we write them.
    let mut log = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let chan = Channel::<T>::open(Backing::posix(name), &options()).unwrap();
    let mut rx = chan.receiver().unwrap();
    println!("@@attached");
    let mut at = 0;
    loop {
        match rx.recv() {
            Ok(m) => {
                let Some((id, seq)) = m.parse() else { panic!("damaged message") };
                log[at..at + 8].copy_from_slice(&((id << 32 | seq) + 1).to_le_bytes());
                at += 8;
            }
            Err(shmchan::RecvError::Disconnected) => break,
            Err(e) => panic!("consumer: {e}"),
        }
    }
    println!("@@done");
}

/// `attach-then-stall;NAME;KIND;ROLE;SEND`: attaches a `sender` (which sends `SEND` messages)
/// or a `receiver`, says so, and sleeps until killed (at most a minute).
fn attach_then_stall<T: Wire>(name: &str, args: &[&str]) {
    let chan = Channel::<T>::open(Backing::posix(name), &options()).unwrap();
    let sender = args[0] == "sender";
    let tx = sender.then(|| chan.sender().unwrap());
    let rx = (!sender).then(|| chan.receiver().unwrap());
    if let Some(mut tx) = tx {
        let count: u64 = args[1].parse().unwrap();
        for seq in 0..count {
            tx.send(T::make(0, seq)).unwrap();
        }
        std::mem::forget(tx);
    }
    std::mem::forget(rx);
    println!("@@attached");
    std::thread::sleep(Duration::from_secs(60));
}

/// Receives in a thread until `Disconnected`; the thread returns, per producer, the sequence
/// numbers in arrival order. A stall longer than [`STALL`] panics the thread.
///
/// With `poll`, it uses `try_recv` and yields when the ring is empty. Rounds that SIGKILL a
/// producer need that: a receiver blocked in `recv`/`recv_timeout` never reports
/// `Disconnected` after the last sender died without detaching (see
/// `blocked_recv_sees_disconnected_after_the_only_sender_is_sigkilled`), while `try_recv` does.
fn collect_in_thread<T: Wire>(
    mut rx: Receiver<T>,
    producers: usize,
    poll: bool,
) -> std::thread::JoinHandle<Vec<Vec<u64>>> {
    std::thread::spawn(move || {
        let mut got = vec![Vec::new(); producers];
        let mut progress = Instant::now();
        loop {
            let r = if poll {
                match rx.try_recv() {
                    Err(TryRecvError::Empty) if progress.elapsed() < STALL => {
                        std::thread::yield_now();
                        continue;
                    }
                    Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                    Err(TryRecvError::Corrupted) => Err(RecvTimeoutError::Corrupted),
                    Ok(m) => Ok(m),
                }
            } else {
                rx.recv_timeout(STALL)
            };
            match r {
                Ok(m) => {
                    let Some((id, seq)) = m.parse() else { panic!("damaged message") };
                    got[id as usize].push(seq);
                    progress = Instant::now();
                }
                Err(RecvTimeoutError::Disconnected) => return got,
                Err(e) => {
                    panic!("receiver: {e} after {:?}", got.iter().map(Vec::len).collect::<Vec<_>>())
                }
            }
        }
    })
}

fn join_bounded<R: Send + 'static>(handle: std::thread::JoinHandle<R>, timeout: Duration) -> R {
    let deadline = Instant::now() + timeout;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "receiver thread still running after {timeout:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
    handle.join().unwrap_or_else(|_| panic!("receiver thread panicked"))
}

// ------------------------------------------------------------------------------------------
// Looking into a segment while a peer is stopped
// ------------------------------------------------------------------------------------------

/// Read-only access to a channel's segment through its fd, to find the claims a stopped peer
/// holds (the layout of `src/ring/mpmc.rs`: `tail` and `head` in the second and third lines of
/// the control block, the registry after its 640 fixed bytes, one line per entry: owner word,
/// then intent lanes; slot stamps `p` free, `p + 1` full, `LOST | p` lost; payload at 8).
struct Inspector {
    file: std::fs::File,
    max: u64,
    slots_offset: u64,
    stride: u64,
    capacity: u64,
}

/// An unfinished claim: the slot's stamp and the first two payload words (for a receiver's
/// claim, the message's producer id and sequence number).
#[derive(Clone, Copy)]
struct Claim {
    word: u64,
    payload: [u64; 2],
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "claim {:#x} over payload {:?}", self.word, self.payload)
    }
}

impl Inspector {
    const CONTROL: u64 = shmchan::layout::CONTROL_OFFSET;
    const LINE: u64 = shmchan::layout::LINE;
    const REGISTRY: u64 = Self::CONTROL + 5 * Self::LINE;
    const LOST: u64 = 1 << 63;
    const IDLE: u64 = u64::MAX;

    fn new<T: Wire>(chan: &Channel<T>) -> Self {
        let file = std::fs::File::from(chan.fd().unwrap().try_clone_to_owned().unwrap());
        let mut header = [0u8; 128];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0).unwrap();
        let h: shmchan::layout::RawHeader = bytemuck::pod_read_unaligned(&header);
        assert_eq!(h.capacity, chan.capacity() as u64);
        Inspector {
            file,
            max: chan.max_endpoints(),
            slots_offset: h.slots_offset,
            stride: h.slot_stride,
            capacity: h.capacity,
        }
    }

    fn u64_at(&self, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        std::os::unix::fs::FileExt::read_exact_at(&self.file, &mut b, offset).unwrap();
        u64::from_le_bytes(b)
    }

    /// Offset of registry entry `index` of the senders (or receivers).
    fn entry(&self, index: u64, receiver: bool) -> u64 {
        let base = if receiver { self.max } else { 0 };
        Self::REGISTRY + Self::LINE * (base + index)
    }

    /// The registry index of the sender (or receiver) attached by `pid`.
    fn index_of(&self, pid: u32, receiver: bool) -> Option<u64> {
        (0..self.max).find(|&i| {
            let w = self.u64_at(self.entry(i, receiver));
            w as u32 == pid && w & shmchan::layout::endpoint::DETACHED == 0
        })
    }

    /// Unfinished claims named by the intent lanes of endpoint `index` (for reading if
    /// `receiver`): `head` (`tail`) past the position, the slot still full or lost (free).
    fn claims_of(&self, index: u64, receiver: bool) -> Vec<Claim> {
        let entry = self.entry(index, receiver);
        let moved = self.u64_at(Self::CONTROL + if receiver { 2 } else { 1 } * Self::LINE);
        (1..Self::LINE / 8)
            .map(|lane| self.u64_at(entry + 8 * lane))
            .filter(|&p| p != Self::IDLE && p < moved)
            .filter_map(|p| {
                let at = self.slots_offset + (p & (self.capacity - 1)) * self.stride;
                let word = self.u64_at(at);
                let unfinished =
                    if receiver { word == p + 1 || word == Self::LOST | p } else { word == p };
                unfinished
                    .then(|| Claim { word, payload: [self.u64_at(at + 8), self.u64_at(at + 16)] })
            })
            .collect()
    }
}

/// The state letter of `/proc/PID/stat`, or `None` once the process is gone.
fn process_state(pid: u32) -> Option<u8> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    stat.get(close + 2).copied()
}

/// Stops `peer` after a random delay and looks at the claims its endpoint holds; with none,
/// lets it run again and retries (up to `tries` stops), then SIGKILLs it while stopped.
/// Returns the claims it died holding (empty if it exited first).
fn stop_inspect_kill(
    peer: &mut Peer,
    inspector: &Inspector,
    receiver: bool,
    tries: usize,
    max_delay_us: u64,
    rng: &mut Rng,
) -> Vec<Claim> {
    let pid = peer.pid();
    let index = inspector.index_of(pid, receiver);
    let mut claims = Vec::new();
    for attempt in 0..tries {
        std::thread::sleep(Duration::from_micros(rng.below(max_delay_us + 1)));
        peer.child.kill(libc::SIGSTOP);
        // SIGSTOP is asynchronous: wait (bounded) until the kernel reports it stopped.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match process_state(pid) {
                Some(b'T' | b't') => break,
                None | Some(b'Z' | b'X') => return Vec::new(),
                Some(_) => {
                    assert!(Instant::now() < deadline, "helper {pid} does not stop");
                    std::thread::yield_now();
                }
            }
        }
        claims = index.map_or_else(Vec::new, |i| inspector.claims_of(i, receiver));
        if !claims.is_empty() || attempt + 1 == tries {
            break;
        }
        peer.child.kill(libc::SIGCONT);
    }
    peer.child.kill(libc::SIGKILL);
    claims
}

// ------------------------------------------------------------------------------------------
// 1. Four producers, two consumers
// ------------------------------------------------------------------------------------------

#[test]
fn four_producers_two_consumers_exactly_once_in_order() {
    const PRODUCERS: u64 = 4;
    const PER_PRODUCER: u64 = 1_000_000;
    let started = Instant::now();
    let name = ShmName::new("mpmc-4x2");
    let chan =
        Channel::<Small>::create(Backing::posix(&name.0), &options().capacity(1024)).unwrap();
    // Held until every producer attached: a producer that finishes before another attaches must
    // not let the consumers see Disconnected.
    let guard = chan.sender().unwrap();
    let mut consumers: Vec<Peer> =
        (0..2).map(|_| Peer::spawn(&format!("consume;{};small;{PRODUCERS}", name.0))).collect();
    let mut producers: Vec<Peer> = (0..PRODUCERS)
        .map(|id| Peer::spawn(&format!("produce;{};small;{id};{PER_PRODUCER}", name.0)))
        .collect();
    wait_all_attached(&mut consumers, Duration::from_secs(30));
    wait_all_attached(&mut producers, Duration::from_secs(30));
    drop(guard);
    for p in producers {
        let (status, lines) = p.finish(CHILD_TIMEOUT);
        assert!(status.success(), "producer: {status}, {lines:?}");
    }
    let mut total = vec![Tally::default(); PRODUCERS as usize];
    let mut per_consumer = Vec::new();
    for c in consumers {
        let (status, lines) = c.finish(CHILD_TIMEOUT);
        assert!(status.success(), "consumer: {status}, {lines:?}");
        let summary = lines.iter().find_map(|l| l.strip_prefix("summary ")).expect("a summary");
        let mut counts = Vec::new();
        for field in summary.split(' ') {
            let v: Vec<&str> = field.split(':').collect();
            let id: usize = v[0].parse().unwrap();
            let t = Tally {
                count: v[1].parse().unwrap(),
                sum: v[2].parse().unwrap(),
                sum_sq: v[3].parse().unwrap(),
            };
            counts.push(t.count);
            total[id].merge(t);
        }
        per_consumer.push(counts);
    }
    for (id, t) in total.iter().enumerate() {
        assert_eq!(
            *t,
            Tally::expected(PER_PRODUCER),
            "producer {id}: per consumer {per_consumer:?}"
        );
    }
    assert_eq!(chan.lost_messages(), 0);
    eprintln!(
        "4 x {PER_PRODUCER} messages into 2 consumers in {:?}; per consumer and producer: {per_consumer:?}",
        started.elapsed()
    );
}

// ------------------------------------------------------------------------------------------
// 2. A producer SIGKILLed at random points
// ------------------------------------------------------------------------------------------

/// Rounds of 3 producers x 100k messages into a receiver in this process; one producer is
/// stopped after a random delay of 0-50 ms, its claims are read from the segment, and it is
/// SIGKILLed while stopped. Even rounds kill at the first stop; odd rounds stop up to 40 times
/// hunting for a moment when it holds a claim, so the lost-message path is exercised.
///
/// Checks: the others' messages all arrive, once, in order, and their processes finish (they
/// are never blocked for good); the victim's received sequence numbers are exactly `0..k`
/// (in order, no gap); `lost_messages()` is 1 if it died holding a claim (of position `k`'s
/// message) and 0 otherwise.
#[test]
fn producer_sigkilled_at_random_points_loses_at_most_one() {
    const ROUNDS: usize = 12;
    const PRODUCERS: usize = 3;
    const PER_PRODUCER: u64 = 100_000;
    let (mut rng, seed) = Rng::from_env_or_clock();
    eprintln!("producer kill rounds: seed {seed} (SHMCHAN_TEST_SEED={seed} to replay)");
    let (mut mid_stream, mut lost_rounds) = (0, 0);
    for round in 0..ROUNDS {
        let started = Instant::now();
        let ctx = format!("seed {seed}, round {round}");
        let name = ShmName::new("mpmc-kill-producer");
        let chan =
            Channel::<Kib>::create(Backing::posix(&name.0), &options().capacity(1024)).unwrap();
        let inspector = Inspector::new(&chan);
        let guard = chan.sender().unwrap();
        let receiver = collect_in_thread(chan.receiver().unwrap(), PRODUCERS, true);
        let mut producers: Vec<Peer> = (0..PRODUCERS)
            .map(|id| Peer::spawn(&format!("produce;{};kib;{id};{PER_PRODUCER}", name.0)))
            .collect();
        wait_all_attached(&mut producers, Duration::from_secs(30));
        drop(guard);
        let victim = rng.below(PRODUCERS as u64) as usize;
        let tries = if round % 2 == 0 { 1 } else { 40 };
        let max_delay = if tries == 1 { 50_000 } else { 2_000 };
        let claims = stop_inspect_kill(
            &mut producers[victim],
            &inspector,
            false,
            tries,
            max_delay,
            &mut rng,
        );
        assert!(claims.len() <= 1, "{ctx}: a sender holds {claims:?}");
        let mut victim_status = None;
        for (id, p) in producers.into_iter().enumerate() {
            let (status, lines) = p.finish(CHILD_TIMEOUT);
            if id == victim {
                victim_status = Some(status);
            } else {
                assert!(status.success(), "{ctx}: producer {id}: {status} {lines:?}");
            }
        }
        let got = join_bounded(receiver, CHILD_TIMEOUT);
        let lost = chan.lost_messages();
        for (id, seqs) in got.iter().enumerate() {
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{ctx}: producer {id} out of order");
            if id != victim {
                assert_eq!(seqs.len() as u64, PER_PRODUCER, "{ctx}: producer {id} lost messages");
            }
        }
        // The victim's messages: exactly 0..k (a sender claims its next slot only after
        // publishing the previous message), and at most the claimed one is lost.
        let seqs = &got[victim];
        let k = seqs.len() as u64;
        assert_eq!(seqs.last().map_or(0, |&last| last + 1), k, "{ctx}: victim has gaps");
        assert_eq!(lost, claims.len() as u64, "{ctx}: died holding {claims:?}");
        if claims.len() == 1 {
            assert!(k < PER_PRODUCER, "{ctx}: a claim after the last message");
        }
        let killed = victim_status.and_then(|s| std::os::unix::process::ExitStatusExt::signal(&s));
        mid_stream += usize::from(killed.is_some() && k < PER_PRODUCER);
        lost_rounds += usize::from(lost == 1);
        eprintln!(
            "{ctx}: killed producer {victim} ({} stops allowed); it delivered {k}, held {claims:?}, \
             lost {lost}; round {:?}",
            tries,
            started.elapsed()
        );
    }
    eprintln!(
        "{ROUNDS} rounds: {mid_stream} kills mid-stream, {lost_rounds} lost a claimed message"
    );
    assert!(mid_stream > 0, "seed {seed}: no kill landed mid-stream");
}

// ------------------------------------------------------------------------------------------
// 3. A consumer SIGKILLed mid-stream
// ------------------------------------------------------------------------------------------

/// Rounds of 2 producer processes x 20k messages of 16 KiB into a receiver in this process and
/// a consumer process that logs what it receives into a shared file mapping (which survives
/// its death). The consumer is stopped at random moments, its claims read from the segment,
/// and SIGKILLed while stopped (odd rounds hunt for a moment when it holds a claim). After
/// the producers finish, this process sends one more lap of messages so every slot is reused.
///
/// Checks: no message arrives twice (between both consumers); per producer, each consumer saw
/// increasing sequence numbers; if the victim died holding a claim, exactly the claimed
/// message is missing and `lost_messages()` is 1 (counted when a sender lapped the slot);
/// otherwise nothing was lost in the ring (`lost_messages()` 0) and at most one message is
/// missing: one the victim had taken out of the ring but not yet logged.
#[test]
fn consumer_sigkilled_mid_stream_loses_at_most_the_message_it_was_copying() {
    const ROUNDS: usize = 10;
    const PRODUCERS: usize = 2;
    const PER_PRODUCER: u64 = 20_000;
    const CAPACITY: usize = 64;
    let (mut rng, seed) = Rng::from_env_or_clock();
    eprintln!("consumer kill rounds: seed {seed} (SHMCHAN_TEST_SEED={seed} to replay)");
    let (mut mid_stream, mut lost_rounds) = (0, 0);
    for round in 0..ROUNDS {
        let started = Instant::now();
        let ctx = format!("seed {seed}, round {round}");
        let name = ShmName::new("mpmc-kill-consumer");
        let chan =
            Channel::<Big>::create(Backing::posix(&name.0), &options().capacity(CAPACITY)).unwrap();
        let inspector = Inspector::new(&chan);
        let log_path = TempPath::new("mpmc-consumer-log");
        let log = std::fs::File::create(&log_path.0).unwrap();
        log.set_len(8 * (PRODUCERS as u64 * PER_PRODUCER + 1)).unwrap();
        drop(log);
        // Keeps the receivers from seeing Disconnected until the extra lap is sent.
        let mut lapper = chan.sender().unwrap();
        let mut victim =
            Peer::spawn(&format!("consume-log;{};big;{}", name.0, log_path.0.display()));
        wait_all_attached(std::slice::from_mut(&mut victim), Duration::from_secs(30));
        let survivor = collect_in_thread(chan.receiver().unwrap(), PRODUCERS + 1, false);
        let mut producers: Vec<Peer> = (0..PRODUCERS)
            .map(|id| Peer::spawn(&format!("produce;{};big;{id};{PER_PRODUCER}", name.0)))
            .collect();
        wait_all_attached(&mut producers, Duration::from_secs(30));
        let tries = if round % 2 == 0 { 1 } else { 40 };
        let max_delay = if tries == 1 { 30_000 } else { 3_000 };
        let claims = stop_inspect_kill(&mut victim, &inspector, true, tries, max_delay, &mut rng);
        assert!(claims.len() <= 1, "{ctx}: a receiver holds {claims:?}");
        let (victim_status, _) = victim.finish(CHILD_TIMEOUT);
        for (id, p) in producers.into_iter().enumerate() {
            let (status, lines) = p.finish(CHILD_TIMEOUT);
            assert!(status.success(), "{ctx}: producer {id}: {status} {lines:?}");
        }
        for seq in 0..CAPACITY as u64 {
            lapper.send_timeout(Big::make(PRODUCERS as u64, seq), STALL).unwrap();
        }
        drop(lapper);
        let got = join_bounded(survivor, CHILD_TIMEOUT);
        assert_eq!(got[PRODUCERS].len(), CAPACITY, "{ctx}: the extra lap");
        let lost = chan.lost_messages();

        // What the victim logged before it died, per producer, in order.
        let bytes = std::fs::read(&log_path.0).unwrap();
        let mut logged = vec![Vec::new(); PRODUCERS];
        for word in bytes.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())) {
            if word == 0 {
                break;
            }
            let (id, seq) = ((word - 1) >> 32, (word - 1) & 0xffff_ffff);
            logged[id as usize].push(seq);
        }
        let mut missing = Vec::new();
        for id in 0..PRODUCERS {
            for (who, seqs) in [("survivor", &got[id]), ("victim", &logged[id])] {
                assert!(
                    seqs.windows(2).all(|w| w[0] < w[1]),
                    "{ctx}: {who}: producer {id} out of order"
                );
            }
            let mut seen = vec![0u8; PER_PRODUCER as usize];
            for &s in got[id].iter().chain(&logged[id]) {
                seen[s as usize] += 1;
            }
            for (s, &n) in seen.iter().enumerate() {
                assert!(n <= 1, "{ctx}: producer {id} message {s} received {n} times");
                if n == 0 {
                    missing.push([id as u64, s as u64]);
                }
            }
        }
        match claims.first() {
            Some(claim) => {
                assert_eq!(missing, [claim.payload], "{ctx}: died holding {claim:?}");
                assert_eq!(lost, 1, "{ctx}: died holding {claim:?}, lost_messages");
            }
            None => {
                assert!(missing.len() <= 1, "{ctx}: missing {missing:?}");
                assert_eq!(lost, 0, "{ctx}: no claim held, lost_messages");
            }
        }
        let victim_got: usize = logged.iter().map(Vec::len).sum();
        let killed = std::os::unix::process::ExitStatusExt::signal(&victim_status).is_some();
        mid_stream += usize::from(killed && victim_got > 0);
        lost_rounds += usize::from(lost == 1);
        eprintln!(
            "{ctx}: killed the consumer ({tries} stops allowed); it took {victim_got}, held \
             {claims:?}, missing {missing:?}, lost {lost}; round {:?}",
            started.elapsed()
        );
    }
    eprintln!(
        "{ROUNDS} rounds: {mid_stream} kills mid-stream, {lost_rounds} lost a copied message"
    );
    assert!(mid_stream > 0, "seed {seed}: no kill landed mid-stream");
}

// ------------------------------------------------------------------------------------------
// Blocking calls see a crashed peer's disconnect
// ------------------------------------------------------------------------------------------

/// A receiver blocked in `recv_timeout` must see `Disconnected` once the only sender died
/// (the module docs: "once every sender that ever attached is gone (dropped or dead)"), and
/// so must a `try_recv` poll. (Once a regression: the blocking path discarded the verdict of
/// its own forced scan.)
#[test]
fn blocked_recv_sees_disconnected_after_the_only_sender_is_sigkilled() {
    let name = ShmName::new("mpmc-dead-sender");
    let chan = Channel::<Small>::create(Backing::posix(&name.0), &options().capacity(16)).unwrap();
    let mut rx = chan.receiver().unwrap();
    let mut peer = Peer::spawn(&format!("attach-then-stall;{};small;sender;3", name.0));
    peer.wait_for("attached", Instant::now() + Duration::from_secs(30));
    for seq in 0..3 {
        assert_eq!(rx.recv_timeout(STALL).unwrap(), Small::make(0, seq));
    }
    peer.child.kill(libc::SIGKILL);
    let _ = peer.finish(CHILD_TIMEOUT);
    assert!(rx.is_disconnected(), "the forced scan sees the dead sender");
    let t = Instant::now();
    let blocking = rx.recv_timeout(Duration::from_secs(2));
    eprintln!("recv_timeout(2 s) after the kill: {blocking:?} after {:?}", t.elapsed());
    let t = Instant::now();
    let polled = loop {
        match rx.try_recv() {
            Err(shmchan::TryRecvError::Empty) if t.elapsed() < Duration::from_secs(2) => {
                std::thread::yield_now()
            }
            other => break other,
        }
    };
    eprintln!("try_recv polling after the kill: {polled:?} after {:?}", t.elapsed());
    assert_eq!(blocking, Err(RecvTimeoutError::Disconnected));
    assert_eq!(polled, Err(shmchan::TryRecvError::Disconnected));
}

/// The same on the sending side: a sender blocked on a full ring must see `Disconnected` once
/// the only receiver died, and so must a `try_send` poll.
#[test]
fn blocked_send_sees_disconnected_after_the_only_receiver_is_sigkilled() {
    let name = ShmName::new("mpmc-dead-receiver");
    let chan = Channel::<Small>::create(Backing::posix(&name.0), &options().capacity(4)).unwrap();
    let mut tx = chan.sender().unwrap();
    let mut peer = Peer::spawn(&format!("attach-then-stall;{};small;receiver;0", name.0));
    peer.wait_for("attached", Instant::now() + Duration::from_secs(30));
    for seq in 0..4 {
        tx.send(Small::make(0, seq)).unwrap();
    }
    peer.child.kill(libc::SIGKILL);
    let _ = peer.finish(CHILD_TIMEOUT);
    assert!(tx.is_disconnected(), "the forced scan sees the dead receiver");
    let t = Instant::now();
    let blocking = tx.send_timeout(Small::make(0, 4), Duration::from_secs(2));
    eprintln!("send_timeout(2 s) after the kill: {blocking:?} after {:?}", t.elapsed());
    let t = Instant::now();
    let polled = loop {
        match tx.try_send(Small::make(0, 4)) {
            Err(shmchan::TrySendError::Full(_)) if t.elapsed() < Duration::from_secs(2) => {
                std::thread::yield_now()
            }
            other => break other,
        }
    };
    eprintln!("try_send polling after the kill: {polled:?} after {:?}", t.elapsed());
    assert_eq!(blocking, Err(shmchan::SendTimeoutError::Disconnected(Small::make(0, 4))));
    assert_eq!(polled, Err(shmchan::TrySendError::Disconnected(Small::make(0, 4))));
}
