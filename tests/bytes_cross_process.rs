//! Byte channels across processes. The helper processes are this test binary re-executed with
//! `SHMCHAN_PEER` set, running the ignored `peer_process` entry point. Every wait has a
//! timeout, every child is killed on failure ([`common::ChildGuard`]), every name is unique to
//! the test and removed.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ChildGuard, ShmName};
use shmchan::bytes::{Channel, Consumer, Options};
use shmchan::{Backing, RecvTimeoutError, TryRecvError, WaitStrategy};

const CHILD_TIMEOUT: Duration = Duration::from_secs(180);
const CAPACITY: usize = 1 << 16;
const MAX: usize = 1024;

/// The length of message `seq`: 0..=MAX, spread by a multiplicative hash.
fn length_of(seq: u64) -> usize {
    ((seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % (MAX as u64 + 1)) as usize
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Message `seq` into `out`: pseudo-random bytes; from 16 bytes on, the sequence number first
/// and an FNV-1a checksum of everything before it last.
fn build(seq: u64, out: &mut Vec<u8>) {
    let len = length_of(seq);
    out.clear();
    let mut x = seq.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes()[..(len - out.len()).min(8)]);
    }
    if len >= 16 {
        out[..8].copy_from_slice(&seq.to_le_bytes());
        let sum = fnv(&out[..len - 8]);
        out[len - 8..].copy_from_slice(&sum.to_le_bytes());
    }
}

/// Checks that `got` is message `seq`: its length, its embedded sequence number and checksum,
/// and every byte.
fn check(seq: u64, got: &[u8], scratch: &mut Vec<u8>) {
    assert_eq!(got.len(), length_of(seq), "length of message {seq}");
    if got.len() >= 16 {
        assert_eq!(got[..8], seq.to_le_bytes(), "sequence number of message {seq}");
        let sum = fnv(&got[..got.len() - 8]);
        assert_eq!(got[got.len() - 8..], sum.to_le_bytes(), "checksum of message {seq}");
    }
    build(seq, scratch);
    assert!(got == &scratch[..], "content of message {seq}");
}

fn options() -> Options {
    Options::new().capacity_bytes(CAPACITY).max_message(MAX)
}

fn spawn_peer(spec: &str) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    ChildGuard::spawn(
        Command::new(exe)
            .args(["--exact", "peer_process", "--ignored", "--nocapture", "--test-threads=1"])
            .env("SHMCHAN_PEER", spec)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit()),
    )
}

/// The body of every helper process: `produce;NAME;COUNT` (0: forever) sends messages
/// `0..COUNT`, alternating copies and in-place grants committed shorter than asked.
#[test]
#[ignore = "entry point of the helper processes the other tests spawn"]
fn peer_process() {
    let Ok(spec) = std::env::var("SHMCHAN_PEER") else { return };
    let fields: Vec<&str> = spec.split(';').collect();
    assert_eq!(fields[0], "produce", "unknown helper role");
    let count: u64 = fields[2].parse().unwrap();
    let chan = Channel::open(Backing::posix(fields[1]), &Options::new()).unwrap();
    assert_eq!(chan.max_message(), MAX);
    let mut tx = chan.producer().unwrap();
    let mut msg = Vec::new();
    let mut seq = 0u64;
    while count == 0 || seq < count {
        build(seq, &mut msg);
        let sent = if seq % 2 == 0 {
            tx.send(&msg).is_ok()
        } else {
            match tx.grant(MAX) {
                Ok(mut grant) => {
                    grant.write_at(0, &msg);
                    grant.commit(msg.len());
                    true
                }
                Err(_) => false,
            }
        };
        if !sent {
            std::process::exit(3);
        }
        seq += 1;
    }
}

/// Receives message `seq` with a copy or, every third one, through a read grant.
fn receive(rx: &mut Consumer, seq: u64, buf: &mut Vec<u8>) -> Result<(), RecvTimeoutError> {
    if seq % 3 == 0 {
        let grant = rx.read_timeout(Duration::from_secs(30))?;
        buf.clear();
        buf.resize(grant.len(), 0);
        grant.copy_to(buf);
    } else {
        rx.recv_timeout(buf, Duration::from_secs(30))?;
    }
    Ok(())
}

#[test]
fn two_million_records_of_random_lengths_across_the_wrap() {
    const COUNT: u64 = 2_000_000;
    let name = ShmName::new("bytes-2m");
    let chan = Channel::create(Backing::posix(&name.0), &options()).unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut child = spawn_peer(&format!("produce;{};{COUNT}", name.0));
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut bytes = 0u64;
    for seq in 0..COUNT {
        receive(&mut rx, seq, &mut buf)
            .unwrap_or_else(|e| panic!("after {seq} of {COUNT} messages: {e}"));
        check(seq, &buf, &mut scratch);
        bytes += buf.len() as u64;
    }
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_secs(30)),
        Err(RecvTimeoutError::Disconnected)
    );
    assert!(child.wait_timeout(CHILD_TIMEOUT).success());
    // Many laps of the data area, so the wrap and its padding were crossed many times.
    assert!(bytes > 1000 * CAPACITY as u64, "{bytes} bytes");
    assert!(rx.position() > bytes);
}

#[test]
fn producer_sigkilled_mid_stream_delivers_what_it_committed() {
    let name = ShmName::new("bytes-kill");
    let chan =
        Channel::create(Backing::posix(&name.0), &options().wait_strategy(WaitStrategy::default()))
            .unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut child = spawn_peer(&format!("produce;{};0", name.0));
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut seq = 0u64;
    while seq < 100_000 {
        receive(&mut rx, seq, &mut buf).unwrap();
        check(seq, &buf, &mut scratch);
        seq += 1;
    }
    child.kill(libc::SIGKILL);
    let killed = Instant::now();
    let disconnected_after = loop {
        match receive(&mut rx, seq, &mut buf) {
            Ok(()) => {
                check(seq, &buf, &mut scratch);
                seq += 1;
            }
            Err(RecvTimeoutError::Disconnected) => break killed.elapsed(),
            Err(e) => panic!("{e}"),
        }
    };
    // Everything committed before the kill (at most a data area's worth past what we had
    // read) arrived once, in order, intact; then the death was noticed without a hang.
    assert!(seq - 100_000 <= CAPACITY as u64 / 8, "received {seq}");
    assert!(disconnected_after < Duration::from_secs(5), "{disconnected_after:?}");
    eprintln!("producer death noticed {disconnected_after:?} after SIGKILL");
    assert!(matches!(rx.try_read(), Err(TryRecvError::Disconnected)));
    let _ = child.wait_timeout(CHILD_TIMEOUT);
    // A new producer takes the dead one's endpoint over and continues the stream.
    let mut tx = chan.producer().expect("a dead producer's endpoint can be reclaimed");
    build(seq, &mut scratch);
    tx.send(&scratch).unwrap();
    receive(&mut rx, seq, &mut buf).unwrap();
    check(seq, &buf, &mut scratch);
}
