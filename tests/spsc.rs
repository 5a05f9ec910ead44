//! SPSC channels in one process: API conventions, every backing, attach rules, safe defaults.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{ShmName, TempPath};
use shmchan::spsc::{Channel, Options};
use shmchan::{
    Backing, OpenError, RecvError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
    WaitStrategy,
};

const LONG: Duration = Duration::from_secs(20);

fn stream_between_threads(chan: Channel<u64>, count: u64) {
    let mut rx = chan.consumer().unwrap();
    let mut tx = chan.producer().unwrap();
    let sender = std::thread::spawn(move || {
        for i in 0..count {
            tx.send(i).unwrap();
        }
    });
    for i in 0..count {
        assert_eq!(rx.recv_timeout(LONG).unwrap(), i);
    }
    sender.join().unwrap();
    assert_eq!(rx.recv_timeout(LONG), Err(RecvTimeoutError::Disconnected));
}

#[test]
fn posix_round_trip_with_disconnect_after_drain() {
    let name = ShmName::new("rt");
    let chan =
        Channel::<u64>::create(Backing::posix(&name.0), &Options::new().capacity(4)).unwrap();
    let mut rx = chan.consumer().unwrap();
    let opened = Channel::<u64>::open(Backing::posix(&name.0), &Options::new()).unwrap();
    assert_eq!(opened.capacity(), 4);
    let mut tx = opened.producer().unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    assert_eq!(tx.try_send(99), Err(TrySendError::Full(99)));
    assert_eq!(chan.len(), 4);
    drop(tx);
    for i in 0..4 {
        assert_eq!(rx.try_recv(), Ok(i));
    }
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn consumer_gone_hands_the_value_back() {
    let chan = Channel::<u32>::create(Backing::Anonymous, &Options::new().capacity(2)).unwrap();
    let mut tx = chan.producer().unwrap();
    let rx = chan.consumer().unwrap();
    drop(rx);
    assert_eq!(tx.try_send(7), Err(TrySendError::Disconnected(7)));
    assert_eq!(tx.send(8).unwrap_err().into_inner(), 8);
    assert!(matches!(
        tx.send_timeout(9, Duration::from_millis(10)),
        Err(SendTimeoutError::Disconnected(9))
    ));
}

#[test]
fn timeouts_are_bounded_and_return_the_value() {
    let chan = Channel::<u8>::create(Backing::Anonymous, &Options::new().capacity(1)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let t = Instant::now();
    assert_eq!(rx.recv_timeout(Duration::from_millis(30)), Err(RecvTimeoutError::Timeout));
    assert!(t.elapsed() >= Duration::from_millis(30));
    tx.send(1).unwrap();
    let t = Instant::now();
    assert_eq!(tx.send_timeout(2, Duration::from_millis(30)), Err(SendTimeoutError::Timeout(2)));
    assert!(t.elapsed() >= Duration::from_millis(30));
    assert_eq!(rx.recv(), Ok(1));
}

#[test]
fn million_messages_between_threads_every_strategy() {
    for wait in [
        WaitStrategy::Spin,
        WaitStrategy::Sleep,
        WaitStrategy::SpinThenSleep(Duration::from_micros(20)),
        WaitStrategy::Adaptive,
    ] {
        let opts = Options::new().capacity(64).wait_strategy(wait);
        let chan = Channel::<u64>::create(Backing::Anonymous, &opts).unwrap();
        stream_between_threads(chan, 300_000);
    }
}

#[test]
fn blocked_receiver_wakes_on_disconnect() {
    let chan = Channel::<u64>::create(
        Backing::Anonymous,
        &Options::new().wait_strategy(WaitStrategy::Sleep),
    )
    .unwrap();
    let tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        (rx.recv(), t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(50));
    drop(tx);
    let (result, _) = waiter.join().unwrap();
    assert_eq!(result, Err(RecvError::Disconnected));
}

#[test]
fn batches_round_trip() {
    let chan = Channel::<u32>::create(Backing::Anonymous, &Options::new().capacity(16)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    let data: Vec<u32> = (0..10_000).collect();
    let sender = std::thread::spawn(move || {
        assert_eq!(tx.try_send_slice(&[]).unwrap(), 0);
        tx.send_slice(&data).unwrap();
    });
    let mut got = Vec::new();
    let mut buf = [0u32; 7];
    loop {
        match rx.recv_into_timeout(&mut buf, LONG) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("{e}"),
        }
    }
    sender.join().unwrap();
    assert_eq!(got, (0..10_000).collect::<Vec<u32>>());
    assert_eq!(rx.try_recv_into(&mut buf), Err(TryRecvError::Disconnected));
}

#[test]
fn one_producer_and_one_consumer_at_a_time() {
    let chan = Channel::<u64>::create(Backing::Anonymous, &Options::new()).unwrap();
    let tx = chan.producer().unwrap();
    assert!(
        matches!(chan.producer(), Err(OpenError::AlreadyAttached { pid }) if pid == std::process::id())
    );
    let rx = chan.consumer().unwrap();
    assert!(matches!(chan.consumer(), Err(OpenError::AlreadyAttached { .. })));
    drop(tx);
    let mut tx = chan.producer().expect("a detached producer slot can be taken over");
    drop(rx);
    let mut rx = chan.consumer().unwrap();
    tx.send(5).unwrap();
    assert_eq!(rx.recv(), Ok(5));
}

#[test]
fn wrap_around_near_u64_max() {
    let opts = Options::new().capacity(8).start_position(u64::MAX - 20);
    let chan = Channel::<u64>::create(Backing::Anonymous, &opts).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    for i in 0..100u64 {
        tx.send(i).unwrap();
        assert_eq!(rx.recv(), Ok(i));
    }
    assert!(tx.position() < 100);
}

#[test]
fn file_backing_persists_and_flushes() {
    let path = TempPath::new("file");
    let opts = Options::new().capacity(8).remove_on_drop(false);
    {
        let chan = Channel::<u64>::create(Backing::file(&path.0), &opts).unwrap();
        let mut tx = chan.producer().unwrap();
        tx.send(11).unwrap();
        tx.send(12).unwrap();
        tx.flush().unwrap();
    }
    let meta = std::fs::metadata(&path.0).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let chan = Channel::<u64>::open(Backing::file(&path.0), &Options::new()).unwrap();
    let mut rx = chan.consumer().unwrap();
    assert_eq!(rx.try_recv(), Ok(11));
    assert_eq!(rx.try_recv(), Ok(12));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
}

#[test]
fn memfd_is_sealed_and_passes_over_a_socket() {
    let chan = Channel::<u64>::create(Backing::Memfd, &Options::new().capacity(8)).unwrap();
    let mut tx = chan.producer().unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    shmchan::send_fd(&a, chan.fd().unwrap()).unwrap();
    let fd = shmchan::recv_fd(&b).unwrap();
    let opened = Channel::<u64>::open(Backing::Fd(fd), &Options::new()).unwrap();
    let mut rx = opened.consumer().unwrap();
    tx.send(3).unwrap();
    assert_eq!(rx.recv(), Ok(3));
}

#[test]
fn unsealed_or_wrong_kind_fds_are_refused() {
    let path = TempPath::new("unsealed");
    let file = std::fs::File::create(&path.0).unwrap();
    file.set_len(1 << 16).unwrap();
    let err = Channel::<u64>::open(Backing::Fd(file.into()), &Options::new()).unwrap_err();
    assert!(matches!(err, OpenError::MissingSeals { .. }), "{err:?}");
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let err = Channel::<u64>::open(Backing::Fd(a.into()), &Options::new()).unwrap_err();
    assert!(matches!(err, OpenError::NotASegment { .. }), "{err:?}");
}

#[test]
fn sysv_by_key_and_by_id() {
    let key = 0x5c00_0000 | (std::process::id() as i32 & 0xffff);
    let chan =
        Channel::<u64>::create(Backing::SysV(Some(key)), &Options::new().capacity(8)).unwrap();
    let id = chan.sysv_id().unwrap();
    let mut tx = chan.producer().unwrap();
    let by_key = Channel::<u64>::open(Backing::SysV(Some(key)), &Options::new()).unwrap();
    let mut rx = by_key.consumer().unwrap();
    tx.send(1).unwrap();
    assert_eq!(rx.recv(), Ok(1));
    let by_id = Channel::<u64>::open(Backing::SysVId(id), &Options::new()).unwrap();
    assert_eq!(by_id.capacity(), 8);
    drop((tx, rx, by_key, by_id, chan));
    // The creator removed it on drop.
    assert!(matches!(
        Channel::<u64>::open(Backing::SysV(Some(key)), &Options::new()),
        Err(OpenError::NotFound)
    ));
    let private = Channel::<u64>::create(Backing::SysV(None), &Options::new()).unwrap();
    assert!(private.sysv_id().is_some());
}

#[test]
fn creation_is_exclusive_with_an_exact_mode() {
    let name = ShmName::new("excl");
    // SAFETY: umask(2) only changes this process's file creation mask.
    let old = unsafe { libc::umask(0o077) };
    let chan =
        Channel::<u64>::create(Backing::posix(&name.0), &Options::new().mode(0o640)).unwrap();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let path = format!("/dev/shm{}", name.0);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
    assert!(matches!(
        Channel::<u64>::create(Backing::posix(&name.0), &Options::new()),
        Err(OpenError::AlreadyExists)
    ));
    drop(chan);
    assert!(!std::path::Path::new(&path).exists(), "the creator removes its name on drop");
}

#[test]
fn symlinks_are_not_followed() {
    let target = TempPath::new("target");
    let link = TempPath::new("link");
    std::fs::write(&target.0, b"precious").unwrap();
    std::os::unix::fs::symlink(&target.0, &link.0).unwrap();
    assert!(Channel::<u64>::create(Backing::file(&link.0), &Options::new()).is_err());
    assert!(Channel::<u64>::open(Backing::file(&link.0), &Options::new()).is_err());
    assert_eq!(std::fs::read(&target.0).unwrap(), b"precious");
}

#[test]
fn open_errors_are_specific() {
    let name = ShmName::new("errs");
    assert!(matches!(
        Channel::<u64>::open(Backing::posix(&name.0), &Options::new()),
        Err(OpenError::NotFound)
    ));
    assert!(matches!(
        Channel::<u64>::create(Backing::posix("a/b"), &Options::new()),
        Err(OpenError::InvalidName { .. })
    ));
    assert!(matches!(
        Channel::<u64>::create(Backing::Anonymous, &Options::new().capacity(3)),
        Err(OpenError::InvalidOption { .. })
    ));
    let _chan = Channel::<u64>::create(Backing::posix(&name.0), &Options::new()).unwrap();
    assert!(matches!(
        Channel::<u32>::open(Backing::posix(&name.0), &Options::new()),
        Err(OpenError::TypeMismatch { .. })
    ));
    assert!(matches!(
        Channel::<i64>::open(Backing::posix(&name.0), &Options::new()),
        Err(OpenError::TypeMismatch { field: shmchan::TypeField::Fingerprint, .. })
    ));
    assert!(Channel::<i64>::open(Backing::posix(&name.0), &Options::new().fingerprint(1)).is_err());
}

#[test]
fn custom_fingerprint_lets_distinct_types_share_a_layout() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct A {
        x: u64,
    }
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct B {
        y: u64,
    }
    let name = ShmName::new("fp");
    let opts = Options::new().fingerprint(0xfeed);
    let chan = Channel::<A>::create(Backing::posix(&name.0), &opts).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = Channel::<B>::open(Backing::posix(&name.0), &opts).unwrap().consumer().unwrap();
    tx.send(A { x: 9 }).unwrap();
    assert_eq!(rx.recv().unwrap().y, 9);
}
