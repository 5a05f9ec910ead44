//! Cross-process tests. The helper processes are this test binary re-executed with
//! `SHMCHAN_PEER` set, running the ignored `peer_process` entry point. Every wait has a
//! timeout, every child is killed on failure ([`common::ChildGuard`]), every name is unique to the
//! test and removed.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, ShmName, TempPath};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, RecvTimeoutError, SendError, TryRecvError, WaitStrategy};

/// A sequenced message whose second word is derived from the first.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
struct Seq {
    seq: u64,
    check: u64,
}

const FINGERPRINT: u64 = 0x7365_7174_6573_7401;
const CHILD_TIMEOUT: Duration = Duration::from_secs(120);

impl Seq {
    fn new(seq: u64) -> Self {
        Seq { seq, check: !seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) }
    }

    fn is_intact(&self) -> bool {
        self.check == !self.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

fn options(wait: WaitStrategy) -> Options {
    Options::new().fingerprint(FINGERPRINT).wait_strategy(wait)
}

fn wait_name(name: &str) -> WaitStrategy {
    match name {
        "spin" => WaitStrategy::Spin,
        "sleep" => WaitStrategy::Sleep,
        _ => WaitStrategy::default(),
    }
}

/// Spawns this test binary as a helper process playing `role` (fields separated by `;`).
fn spawn_peer(spec: &str) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    ChildGuard::spawn(
        Command::new(exe)
            .args(["--exact", "peer_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env("SHMCHAN_PEER", spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
    )
}

/// Reads the child's stdout until a line equal to `want` (or panics after `timeout`).
fn wait_for_line(child: &mut ChildGuard, want: &str, timeout: Duration) {
    let out = child.0.as_mut().unwrap().stdout.take().unwrap();
    let want = want.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            // libtest prints "test peer_process ... " before the helper's first line.
            if line.ends_with(&want) {
                let _ = tx.send(());
                return;
            }
        }
    });
    rx.recv_timeout(timeout).expect("helper never printed its ready line");
}

/// Receives `count` messages and checks that they arrive in order, intact, exactly once.
fn receive_in_order(rx: &mut shmchan::spsc::Consumer<Seq>, count: u64) {
    let mut buf = vec![Seq::default(); 512];
    let mut next = 0u64;
    while next < count {
        let n = rx.recv_into_timeout(&mut buf, Duration::from_secs(30)).unwrap_or_else(|e| {
            panic!("after {next} of {count} messages: {e}");
        });
        for m in &buf[..n] {
            assert_eq!(m.seq, next, "out of order");
            assert!(m.is_intact(), "damaged message {next}");
            next += 1;
        }
    }
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Err(RecvTimeoutError::Disconnected));
}

/// The body of every helper process.
#[test]
#[ignore = "entry point of the helper processes the other tests spawn"]
fn peer_process() {
    let Ok(spec) = std::env::var("SHMCHAN_PEER") else { return };
    let fields: Vec<&str> = spec.split(';').collect();
    match fields[0] {
        "produce" => {
            let backing = open_backing(fields[1]);
            let count: u64 = fields[2].parse().unwrap();
            let wait = wait_name(fields[3]);
            let chan = Channel::<Seq>::open(backing, &options(wait)).unwrap();
            let mut tx = chan.producer().unwrap();
            println!("attached");
            let mut seq = 0;
            while count == 0 || seq < count {
                if tx.send(Seq::new(seq)).is_err() {
                    std::process::exit(3);
                }
                seq += 1;
            }
        }
        "consume-then-stall" => {
            let backing = open_backing(fields[1]);
            let take: u64 = fields[2].parse().unwrap();
            let chan = Channel::<Seq>::open(backing, &options(WaitStrategy::Sleep)).unwrap();
            let mut rx = chan.consumer().unwrap();
            for i in 0..take {
                assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), Seq::new(i));
            }
            println!("took {take}");
            loop {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "fork-pair" => fork_pair(fields[1].parse().unwrap()),
        other => panic!("unknown helper role {other}"),
    }
}

/// `posix:NAME`, `file:PATH`, `sysv:ID`, or `fdsock:PATH` (receive a memfd over a Unix socket).
fn open_backing(spec: &str) -> Backing {
    let (kind, arg) = spec.split_once(':').unwrap();
    match kind {
        "posix" => Backing::posix(arg),
        "file" => Backing::file(arg),
        "sysv" => Backing::SysVId(arg.parse().unwrap()),
        "fdsock" => {
            let sock = std::os::unix::net::UnixStream::connect(arg).unwrap();
            Backing::Fd(shmchan::recv_fd(&sock).unwrap())
        }
        other => panic!("unknown backing {other}"),
    }
}

/// Anonymous shared memory: this helper forks; the child produces, the parent consumes.
fn fork_pair(count: u64) {
    let chan =
        Channel::<Seq>::create(Backing::Anonymous, &options(WaitStrategy::default())).unwrap();
    // SAFETY: the helper process is single-purpose; the child only uses the inherited mapping
    // and exits with `_exit`, never returning into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag: die with the parent, never linger.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
        let code = match chan.producer() {
            Ok(mut tx) => {
                let mut ok = true;
                for i in 0..count {
                    if tx.send(Seq::new(i)).is_err() {
                        ok = false;
                        break;
                    }
                }
                drop(tx);
                if ok { 0 } else { 3 }
            }
            Err(_) => 4,
        };
        // SAFETY: leaving the forked child without running the parent's destructors or
        // the harness.
        unsafe { libc::_exit(code) };
    }
    let mut rx = chan.consumer().unwrap();
    receive_in_order(&mut rx, count);
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child status {status}");
    println!("fork pair ok");
}

const TEN_MILLION: u64 = 10_000_000;

fn stream_from_child(chan: &Channel<Seq>, producer_backing: &str, count: u64) {
    let mut rx = chan.consumer().unwrap();
    let mut child = spawn_peer(&format!("produce;{producer_backing};{count};default"));
    receive_in_order(&mut rx, count);
    assert!(child.wait_timeout(CHILD_TIMEOUT).success());
}

#[test]
fn ten_million_in_order_over_posix() {
    let name = ShmName::new("10m-posix");
    let chan = Channel::<Seq>::create(
        Backing::posix(&name.0),
        &options(WaitStrategy::default()).capacity(4096),
    )
    .unwrap();
    stream_from_child(&chan, &format!("posix:{}", name.0), TEN_MILLION);
}

#[test]
fn ten_million_in_order_over_a_file() {
    let path = TempPath::new("10m-file");
    let chan = Channel::<Seq>::create(
        Backing::file(&path.0),
        &options(WaitStrategy::default()).capacity(4096),
    )
    .unwrap();
    stream_from_child(&chan, &format!("file:{}", path.0.display()), TEN_MILLION);
}

#[test]
fn ten_million_in_order_over_sysv() {
    let chan = Channel::<Seq>::create(
        Backing::SysV(None),
        &options(WaitStrategy::default()).capacity(4096),
    )
    .unwrap();
    let id = chan.sysv_id().unwrap();
    stream_from_child(&chan, &format!("sysv:{id}"), TEN_MILLION);
}

#[test]
fn ten_million_in_order_over_a_passed_memfd() {
    let chan =
        Channel::<Seq>::create(Backing::Memfd, &options(WaitStrategy::default()).capacity(4096))
            .unwrap();
    let sock_path = TempPath::new("memfd-sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock_path.0).unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut child =
        spawn_peer(&format!("produce;fdsock:{};{TEN_MILLION};default", sock_path.0.display()));
    listener.set_nonblocking(false).unwrap();
    let (sock, _) = listener.accept().unwrap();
    shmchan::send_fd(&sock, chan.fd().unwrap()).unwrap();
    receive_in_order(&mut rx, TEN_MILLION);
    assert!(child.wait_timeout(CHILD_TIMEOUT).success());
}

#[test]
fn ten_million_in_order_over_anonymous_after_fork() {
    let mut child = spawn_peer(&format!("fork-pair;{TEN_MILLION}"));
    let (status, out) = child.output_timeout(CHILD_TIMEOUT);
    assert!(status.success(), "{out}");
    assert!(out.contains("fork pair ok"), "{out}");
}

#[test]
fn both_sides_blocking_on_a_tiny_ring() {
    let name = ShmName::new("blocking");
    let opts = options(WaitStrategy::Sleep).capacity(2);
    let chan = Channel::<Seq>::create(Backing::posix(&name.0), &opts).unwrap();
    let mut rx = chan.consumer().unwrap();
    let count = 100_000;
    let mut child = spawn_peer(&format!("produce;posix:{};{count};sleep", name.0));
    for i in 0..count {
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(Seq::new(i)));
    }
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Err(RecvTimeoutError::Disconnected));
    assert!(child.wait_timeout(CHILD_TIMEOUT).success());
}

#[test]
fn producer_sigkilled_mid_stream_delivers_what_it_published() {
    let name = ShmName::new("kill-producer");
    let chan = Channel::<Seq>::create(
        Backing::posix(&name.0),
        &options(WaitStrategy::default()).capacity(1024),
    )
    .unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut child = spawn_peer(&format!("produce;posix:{};0;default", name.0));
    let mut next = 0u64;
    while next < 200_000 {
        let m = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(m, Seq::new(next));
        next += 1;
    }
    child.kill(libc::SIGKILL);
    let killed = Instant::now();
    let disconnected_after = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(m) => {
                assert_eq!(m, Seq::new(next), "a published message was lost or duplicated");
                next += 1;
            }
            Err(RecvTimeoutError::Disconnected) => break killed.elapsed(),
            Err(e) => panic!("{e}"),
        }
    };
    // Everything published before the kill (at most a ring's worth past what we had read)
    // arrived once and in order; then the death was noticed, without a hang.
    assert!((200_000..=200_000 + 1024 + 1).contains(&next), "received {next}");
    assert!(disconnected_after < Duration::from_secs(5), "{disconnected_after:?}");
    eprintln!("producer death noticed {disconnected_after:?} after SIGKILL");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

#[test]
fn consumer_sigkilled_while_the_producer_blocks_on_a_full_ring() {
    let name = ShmName::new("kill-consumer");
    let chan = Channel::<Seq>::create(
        Backing::posix(&name.0),
        &options(WaitStrategy::default()).capacity(4),
    )
    .unwrap();
    let mut tx = chan.producer().unwrap();
    let mut child = spawn_peer(&format!("consume-then-stall;posix:{};2", name.0));
    // Give the consumer its two messages, then fill the ring: the 7th send blocks.
    for i in 0..6 {
        tx.send(Seq::new(i)).unwrap();
    }
    wait_for_line(&mut child, "took 2", Duration::from_secs(30));
    let pid = child.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill(2) on the helper we spawned (still unreaped: ChildGuard owns it).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        Instant::now()
    });
    let result = tx.send(Seq::new(6));
    let killed_at = killer.join().unwrap();
    assert_eq!(result, Err(SendError::Disconnected(Seq::new(6))), "the value comes back");
    let noticed = killed_at.elapsed();
    assert!(noticed < Duration::from_secs(5), "{noticed:?}");
    eprintln!("consumer death noticed {noticed:?} after SIGKILL");
    // A restarted consumer takes over the dead one's slot and resumes where it released.
    let mut rx = chan.consumer().expect("a dead consumer's slot can be reclaimed");
    for i in 2..6 {
        assert_eq!(rx.try_recv(), Ok(Seq::new(i)));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    tx.send(Seq::new(6)).unwrap();
    assert_eq!(rx.try_recv(), Ok(Seq::new(6)));
}

#[test]
fn a_live_producer_in_another_process_blocks_a_second_one() {
    let name = ShmName::new("second-producer");
    let chan = Channel::<Seq>::create(
        Backing::posix(&name.0),
        &options(WaitStrategy::default()).capacity(4),
    )
    .unwrap();
    let _rx = chan.consumer().unwrap();
    let mut child = spawn_peer(&format!("produce;posix:{};0;default", name.0));
    wait_for_line(&mut child, "attached", Duration::from_secs(30));
    match chan.producer() {
        Err(shmchan::OpenError::AlreadyAttached { pid }) => assert_eq!(pid, child.pid()),
        other => panic!("expected AlreadyAttached, got {other:?}"),
    }
    child.kill(libc::SIGKILL);
    let _ = child.wait_timeout(Duration::from_secs(30));
    chan.producer().expect("a dead producer's slot can be reclaimed");
}
