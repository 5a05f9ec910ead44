//! Byte channels in one process: grants, copies, limits, disconnects, on every backing.

mod common;

use std::time::{Duration, Instant};

use common::{ShmName, TempPath};
use shmchan::bytes::{Channel, Options, SendError, SendTimeoutError, TrySendError};
use shmchan::{Backing, OpenError, RecvError, RecvTimeoutError, TryRecvError, WaitStrategy};

const LONG: Duration = Duration::from_secs(20);

fn message(seq: u64, max: usize) -> Vec<u8> {
    let len = (seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize % (max + 1);
    (0..len).map(|k| (seq as u8) ^ (k as u8).wrapping_mul(7)).collect()
}

/// Creates a channel in `backing`, opens a second handle where the backing has a name, and
/// runs a round trip with a disconnect after the drain.
fn round_trip(create: Backing, open: Option<Backing>) {
    let opts = Options::new().capacity_bytes(256).max_message(64);
    let chan = Channel::create(create, &opts).unwrap();
    assert_eq!((chan.capacity_bytes(), chan.max_message()), (256, 64));
    let opened = match open {
        Some(b) => Channel::open(b, &Options::new()).unwrap(),
        None => chan,
    };
    assert_eq!((opened.capacity_bytes(), opened.max_message()), (256, 64), "read from the header");
    let mut tx = opened.producer().unwrap();
    let mut rx = opened.consumer().unwrap();
    let mut buf = Vec::new();
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Empty));
    let mut sent = 0u64;
    loop {
        match tx.try_send(&message(sent, 64)) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(sent >= 4, "{sent}");
    assert!(!opened.is_empty());
    drop(tx);
    for seq in 0..sent {
        assert_eq!(rx.try_recv(&mut buf), Ok(message(seq, 64).len()));
        assert_eq!(buf, message(seq, 64));
    }
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Disconnected));
    assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
    assert!(opened.is_empty());
}

#[test]
fn round_trip_on_anonymous_memory() {
    round_trip(Backing::Anonymous, None);
}

#[test]
fn round_trip_over_posix() {
    let name = ShmName::new("bytes-rt");
    round_trip(Backing::posix(&name.0), Some(Backing::posix(&name.0)));
}

#[test]
fn round_trip_over_a_file() {
    let path = TempPath::new("bytes-rt");
    round_trip(Backing::file(&path.0), Some(Backing::file(&path.0)));
}

#[test]
fn round_trip_over_a_passed_memfd() {
    let opts = Options::new().capacity_bytes(256).max_message(64);
    let chan = Channel::create(Backing::Memfd, &opts).unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    shmchan::send_fd(&a, chan.fd().unwrap()).unwrap();
    let fd = shmchan::recv_fd(&b).unwrap();
    drop(chan);
    round_trip_opened(Channel::open(Backing::Fd(fd), &Options::new()).unwrap());
}

#[test]
fn round_trip_over_sysv() {
    let opts = Options::new().capacity_bytes(256).max_message(64);
    let chan = Channel::create(Backing::SysV(None), &opts).unwrap();
    let id = chan.sysv_id().unwrap();
    round_trip_opened(Channel::open(Backing::SysVId(id), &Options::new()).unwrap());
}

fn round_trip_opened(chan: Channel) {
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut buf = Vec::new();
    for seq in 0..1000 {
        tx.send(&message(seq, 64)).unwrap();
        assert_eq!(rx.recv(&mut buf), Ok(message(seq, 64).len()));
        assert_eq!(buf, message(seq, 64));
    }
}

#[test]
fn oversized_messages_are_refused_with_their_length() {
    let chan =
        Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(1024).max_message(100))
            .unwrap();
    let mut tx = chan.producer().unwrap();
    let big = vec![0u8; 101];
    assert_eq!(tx.try_send(&big), Err(TrySendError::TooLarge { len: 101, max: 100 }));
    assert_eq!(tx.send(&big), Err(SendError::TooLarge { len: 101, max: 100 }));
    assert_eq!(
        tx.send_timeout(&big, Duration::from_millis(5)),
        Err(SendTimeoutError::TooLarge { len: 101, max: 100 })
    );
    assert!(matches!(tx.try_grant(usize::MAX), Err(TrySendError::TooLarge { .. })));
    assert!(matches!(tx.grant(101), Err(SendError::TooLarge { len: 101, max: 100 })));
    let err = tx.try_send(&big).unwrap_err().to_string();
    assert!(err.contains("101") && err.contains("100"), "{err}");
    tx.try_send(&big[..100]).unwrap();
    assert!(chan.used_bytes() == 8 + 104);
}

#[test]
fn the_half_rule_and_other_bad_options_are_invalid() {
    for opts in [
        Options::new().capacity_bytes(1000),
        Options::new().capacity_bytes(8),
        Options::new().capacity_bytes(256).max_message(121),
        Options::new().capacity_bytes(256).start_position(4),
    ] {
        let err = Channel::create(Backing::Anonymous, &opts).unwrap_err();
        assert!(matches!(err, OpenError::InvalidOption { .. }), "{opts:?}: {err:?}");
    }
    let chan =
        Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(256).max_message(120))
            .unwrap();
    assert_eq!(chan.max_message(), 120);
    let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(256)).unwrap();
    assert_eq!(chan.max_message(), 120, "the default is the largest allowed");
}

#[test]
fn grants_commit_partially_and_publish_nothing_when_dropped() {
    let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(128)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();

    // Dropped: nothing published, nothing reserved.
    {
        let mut g = tx.try_grant(56).unwrap();
        assert_eq!(g.len(), 56);
        g.fill(0, 56, 0xee);
    }
    assert!(chan.is_empty());
    assert!(matches!(rx.try_read(), Err(TryRecvError::Empty)));

    // Partial commit: 12 of 56 bytes.
    let mut g = tx.try_grant(56).unwrap();
    g.write_at(0, b"head");
    g.write_pod(4, &0x0102_0304_0506_0708u64);
    g.commit(12);
    assert_eq!(chan.used_bytes(), 8 + 16);
    {
        let m = rx.try_read().unwrap();
        assert_eq!(m.len(), 12);
        assert_eq!(m.read_pod::<u64>(4), Some(0x0102_0304_0506_0708));
        assert_eq!(m.read_pod::<u64>(5), None, "bounds-checked");
        assert_eq!(m.read_pod::<[u8; 4]>(0), Some(*b"head"));
        let mut short = [0u8; 3];
        assert_eq!(m.copy_to(&mut short), 3);
        assert_eq!(&short, b"hea");
        assert_eq!(m.copy_range_to(10, &mut [0u8; 3]), None);
        assert_eq!(m.copy_range_to(usize::MAX, &mut [0u8; 3]), None);
        // SAFETY: the producer is this thread's own handle, not writing now.
        assert_eq!(unsafe { m.as_slice() }, &m.to_vec()[..]);
    }
    assert!(chan.is_empty(), "released on drop");

    // Zero-length grants and messages are records too; explicit release.
    tx.try_grant(0).unwrap().commit(0);
    tx.try_send(b"").unwrap();
    let m = rx.try_read().unwrap();
    assert!(m.is_empty());
    m.release();
    let mut buf = vec![1, 2, 3];
    assert_eq!(rx.try_recv(&mut buf), Ok(0));
    assert!(buf.is_empty());

    // In place through the unsafe slice.
    let mut g = tx.try_grant(5).unwrap();
    // SAFETY: the consumer is this thread's own handle and reads nothing before the commit.
    unsafe { g.as_mut_slice() }.copy_from_slice(b"slice");
    g.commit(5);
    assert_eq!(rx.try_read().unwrap().to_vec(), b"slice");
}

#[test]
#[should_panic(expected = "outside a grant of 4")]
fn writing_past_a_grant_panics() {
    let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(64)).unwrap();
    let mut tx = chan.producer().unwrap();
    tx.try_grant(4).unwrap().write_at(2, b"abc");
}

#[test]
#[should_panic(expected = "exceeds a grant of 4")]
fn committing_past_a_grant_panics() {
    let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(64)).unwrap();
    let mut tx = chan.producer().unwrap();
    tx.try_grant(4).unwrap().commit(5);
}

#[test]
fn a_full_ring_refuses_until_released_and_wraps_with_padding() {
    // 64 bytes, max 24: records of 8 + 24 = 32 bytes.
    let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(64)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    tx.try_send(&[1; 24]).unwrap();
    tx.try_send(&[2; 8]).unwrap(); // 16 bytes: 16 left at the end
    assert_eq!(tx.try_send(&[3; 24]), Err(TrySendError::Full));
    {
        let held = rx.try_read().unwrap();
        assert_eq!(held.to_vec(), [1; 24]);
        assert_eq!(tx.try_send(&[3; 24]), Err(TrySendError::Full), "not released yet");
    }
    tx.try_send(&[3; 24]).unwrap(); // padding 16 + record 32 at offset 0
    assert_eq!(tx.position(), 48 + 16 + 32);
    let mut buf = Vec::new();
    rx.try_recv(&mut buf).unwrap();
    assert_eq!(buf, [2; 8]);
    rx.try_recv(&mut buf).unwrap();
    assert_eq!(buf, [3; 24]);
    assert_eq!(rx.position(), tx.position());
}

#[test]
fn positions_wrap_around_u64_max() {
    let opts = Options::new().capacity_bytes(128).start_position(u64::MAX - 71);
    let chan = Channel::create(Backing::Anonymous, &opts).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut buf = Vec::new();
    for seq in 0..200 {
        tx.send(&message(seq, 56)).unwrap();
        rx.recv(&mut buf).unwrap();
        assert_eq!(buf, message(seq, 56));
    }
    assert!(tx.position() < 100_000);
}

#[test]
fn the_consumer_gone_fails_sends_and_grants() {
    let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(64)).unwrap();
    let mut tx = chan.producer().unwrap();
    drop(chan.consumer().unwrap());
    assert_eq!(tx.try_send(b"x"), Err(TrySendError::Disconnected));
    assert_eq!(tx.send(b"x"), Err(SendError::Disconnected));
    assert!(matches!(
        tx.grant_timeout(1, Duration::from_millis(5)),
        Err(SendTimeoutError::Disconnected)
    ));
    assert!(tx.is_disconnected());
}

#[test]
fn timeouts_are_bounded() {
    let chan = Channel::create(Backing::Anonymous, &Options::new().capacity_bytes(64)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let mut buf = Vec::new();
    let t = Instant::now();
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_millis(30)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert!(matches!(rx.read_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout)));
    tx.send(&[0; 24]).unwrap();
    tx.send(&[0; 24]).unwrap();
    let t = Instant::now();
    assert_eq!(tx.send_timeout(b"x", Duration::from_millis(30)), Err(SendTimeoutError::Timeout));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert!(matches!(
        tx.grant_timeout(0, Duration::from_millis(1)),
        Err(SendTimeoutError::Timeout)
    ));
}

#[test]
fn a_blocked_reader_wakes_on_disconnect_and_a_blocked_granter_on_release() {
    let opts = Options::new().capacity_bytes(64).wait_strategy(WaitStrategy::Sleep);
    let chan = Channel::create(Backing::Anonymous, &opts).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    tx.send(&[7; 24]).unwrap();
    tx.send(&[8; 24]).unwrap();
    let sender = std::thread::spawn(move || {
        let mut g = tx.grant(24).unwrap(); // waits for a release
        g.fill(0, 24, 9);
        g.commit(24);
        std::thread::sleep(Duration::from_millis(50));
        drop(tx);
    });
    std::thread::sleep(Duration::from_millis(50));
    let mut buf = Vec::new();
    for want in [7, 8, 9] {
        rx.recv(&mut buf).unwrap();
        assert_eq!(buf, [want; 24]);
    }
    assert_eq!(rx.recv(&mut buf), Err(RecvError::Disconnected));
    sender.join().unwrap();
}

#[test]
fn streams_between_threads_with_every_strategy() {
    for wait in [
        WaitStrategy::Spin,
        WaitStrategy::Sleep,
        WaitStrategy::SpinThenSleep(Duration::from_micros(20)),
        WaitStrategy::Adaptive,
    ] {
        let opts = Options::new().capacity_bytes(1024).wait_strategy(wait);
        let chan = Channel::create(Backing::Anonymous, &opts).unwrap();
        let max = chan.max_message();
        let mut tx = chan.producer().unwrap();
        let mut rx = chan.consumer().unwrap();
        let count = 100_000u64;
        let sender = std::thread::spawn(move || {
            for seq in 0..count {
                let m = message(seq, max);
                if seq % 2 == 0 {
                    tx.send(&m).unwrap();
                } else {
                    let mut g = tx.grant(max).unwrap();
                    g.write_at(0, &m);
                    g.commit(m.len());
                }
            }
        });
        let mut buf = Vec::new();
        for seq in 0..count {
            if seq % 3 == 0 {
                let m = rx.read_timeout(LONG).unwrap();
                assert_eq!(m.to_vec(), message(seq, max), "{wait:?} {seq}");
            } else {
                rx.recv_timeout(&mut buf, LONG).unwrap();
                assert_eq!(buf, message(seq, max), "{wait:?} {seq}");
            }
        }
        sender.join().unwrap();
        assert_eq!(rx.recv_timeout(&mut buf, LONG), Err(RecvTimeoutError::Disconnected));
    }
}

#[test]
fn one_endpoint_of_each_kind_at_a_time() {
    let chan = Channel::create(Backing::Anonymous, &Options::new()).unwrap();
    let tx = chan.producer().unwrap();
    assert!(matches!(chan.producer(), Err(OpenError::AlreadyAttached { .. })));
    let rx = chan.consumer().unwrap();
    assert!(matches!(chan.consumer(), Err(OpenError::AlreadyAttached { .. })));
    drop((tx, rx));
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    tx.send(b"again").unwrap();
    assert_eq!(rx.try_read().unwrap().to_vec(), b"again");
}

#[test]
fn other_flavors_do_not_open_as_byte_rings() {
    let name = ShmName::new("bytes-flavor");
    let _spsc = shmchan::spsc::Channel::<u64>::create(
        Backing::posix(&name.0),
        &shmchan::spsc::Options::new(),
    )
    .unwrap();
    let err = Channel::open(Backing::posix(&name.0), &Options::new()).unwrap_err();
    assert!(matches!(err, OpenError::FlavorMismatch { expected: 3, found: 1 }), "{err:?}");
    let name2 = ShmName::new("bytes-flavor2");
    let _bytes = Channel::create(Backing::posix(&name2.0), &Options::new()).unwrap();
    let err = shmchan::spsc::Channel::<u64>::open(
        Backing::posix(&name2.0),
        &shmchan::spsc::Options::new(),
    )
    .unwrap_err();
    assert!(matches!(err, OpenError::FlavorMismatch { expected: 1, found: 3 }), "{err:?}");
}
