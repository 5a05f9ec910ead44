//! MPMC channels in one process: exactly-once delivery across threads, disconnect rules,
//! registry limits, clones, and the API conventions shared with SPSC.

mod common;

use std::time::Duration;

use common::ShmName;
use shmchan::mpmc::{Channel, Options, Receiver, Sender};
use shmchan::{Backing, OpenError, RecvError, RecvTimeoutError, TryRecvError, TrySendError};

/// Sends `per_sender` sequenced messages from each sender handle and receives them on each
/// receiver handle, every handle on its own thread; checks per-sender order on every receiver
/// and that every message arrived exactly once, and nothing was counted lost.
fn exactly_once_in_per_sender_order(
    chan: &Channel<[u64; 2]>,
    senders: Vec<Sender<[u64; 2]>>,
    receivers: Vec<Receiver<[u64; 2]>>,
    per_sender: u64,
) {
    let count = senders.len() as u64;
    let mut all = std::thread::scope(|s| {
        for (id, mut tx) in senders.into_iter().enumerate() {
            s.spawn(move || {
                for seq in 0..per_sender {
                    tx.send([id as u64, seq]).unwrap();
                }
            });
        }
        let joins: Vec<_> = receivers
            .into_iter()
            .map(|mut rx| {
                s.spawn(move || {
                    let mut last = vec![None::<u64>; count as usize];
                    let mut got = Vec::new();
                    loop {
                        match rx.recv_timeout(Duration::from_secs(30)) {
                            Ok([id, seq]) => {
                                let prev = &mut last[id as usize];
                                assert!(prev.is_none_or(|p| p < seq), "per-sender order");
                                *prev = Some(seq);
                                got.push((id, seq));
                            }
                            Err(RecvTimeoutError::Disconnected) => break got,
                            Err(e) => panic!("{e}"),
                        }
                    }
                })
            })
            .collect();
        joins.into_iter().flat_map(|j| j.join().unwrap()).collect::<Vec<_>>()
    });
    all.sort_unstable();
    let expected: Vec<_> =
        (0..count).flat_map(|id| (0..per_sender).map(move |s| (id, s))).collect();
    assert_eq!(all.len(), expected.len());
    assert_eq!(all, expected, "every message exactly once");
    assert_eq!(chan.lost_messages(), 0);
}

#[test]
fn every_message_exactly_once_across_threads_in_per_sender_order() {
    let chan =
        Channel::<[u64; 2]>::create(Backing::Anonymous, &Options::new().capacity(16)).unwrap();
    let receivers: Vec<_> = (0..3).map(|_| chan.receiver().unwrap()).collect();
    let senders: Vec<_> = (0..4).map(|_| chan.sender().unwrap()).collect();
    exactly_once_in_per_sender_order(&chan, senders, receivers, 50_000);
}

/// More clones than an entry has intent lanes: the first 15 handles of an entry claim in
/// parallel, the rest share lanes and take turns; nothing is lost, duplicated or reordered.
#[test]
fn clones_beyond_the_lanes_of_one_entry_take_turns_and_lose_nothing() {
    let opts = Options::new().capacity(8).max_endpoints(1);
    let chan = Channel::<[u64; 2]>::create(Backing::Anonymous, &opts).unwrap();
    let (tx, rx) = (chan.sender().unwrap(), chan.receiver().unwrap());
    let senders: Vec<_> = (0..20).map(|_| tx.clone()).collect();
    let receivers: Vec<_> = (0..18).map(|_| rx.clone()).collect();
    drop((tx, rx));
    assert!(matches!(chan.sender(), Err(OpenError::TooManyEndpoints { max: 1 })));
    exactly_once_in_per_sender_order(&chan, senders, receivers, 2_000);
}

#[test]
fn disconnect_waits_for_the_first_sender_and_then_for_the_last() {
    let chan = Channel::<u32>::create(Backing::Anonymous, &Options::new().capacity(4)).unwrap();
    let mut rx = chan.receiver().unwrap();
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "no sender yet: wait, not disconnect");
    let mut a = chan.sender().unwrap();
    let mut b = a.clone();
    let mut c = chan.sender().unwrap();
    a.send(1).unwrap();
    b.send(2).unwrap();
    c.send(3).unwrap();
    drop((a, c));
    assert_eq!(rx.recv(), Ok(1));
    assert_eq!(rx.try_recv(), Ok(2));
    assert_eq!(rx.try_recv(), Ok(3));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty), "a clone still holds the entry");
    drop(b);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert_eq!(rx.recv(), Err(RecvError::Disconnected));
}

#[test]
fn senders_see_disconnected_with_the_value_back() {
    let chan = Channel::<u32>::create(Backing::Anonymous, &Options::new().capacity(2)).unwrap();
    let mut tx = chan.sender().unwrap();
    tx.try_send(1).unwrap();
    let rx = chan.receiver().unwrap();
    let rx2 = rx.clone();
    tx.try_send(2).unwrap();
    assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
    drop((rx, rx2));
    assert_eq!(tx.try_send(4), Err(TrySendError::Disconnected(4)));
    assert_eq!(tx.send(5).unwrap_err().into_inner(), 5);
}

#[test]
fn a_blocked_receiver_wakes_when_the_last_sender_leaves() {
    let chan = Channel::<u8>::create(
        Backing::Anonymous,
        &Options::new().wait_strategy(shmchan::WaitStrategy::Sleep),
    )
    .unwrap();
    let tx = chan.sender().unwrap();
    let mut rxs: Vec<_> = (0..3).map(|_| chan.receiver().unwrap()).collect();
    let waiters: Vec<_> =
        rxs.drain(..).map(|mut rx| std::thread::spawn(move || rx.recv())).collect();
    std::thread::sleep(Duration::from_millis(50));
    drop(tx);
    for w in waiters {
        assert_eq!(w.join().unwrap(), Err(RecvError::Disconnected));
    }
}

#[test]
fn the_registry_limits_endpoints_and_reuses_detached_entries() {
    let opts = Options::new().capacity(4).max_endpoints(2);
    let chan = Channel::<u64>::create(Backing::Anonymous, &opts).unwrap();
    let a = chan.sender().unwrap();
    let _b = chan.sender().unwrap();
    assert!(matches!(chan.sender(), Err(OpenError::TooManyEndpoints { max: 2 })));
    let _r = chan.receiver().unwrap();
    drop(a);
    chan.sender().expect("a detached entry is reused");
}

#[test]
fn options_are_validated() {
    for opts in [
        Options::new().capacity(1),
        Options::new().capacity(6),
        Options::new().max_endpoints(0),
        Options::new().max_endpoints(1 << 20),
    ] {
        assert!(matches!(
            Channel::<u64>::create(Backing::Anonymous, &opts),
            Err(OpenError::InvalidOption { .. })
        ));
    }
}

#[test]
fn posix_segments_open_by_name_and_check_the_flavor() {
    let name = ShmName::new("mpmc-open");
    let chan = Channel::<u64>::create(Backing::posix(&name.0), &Options::new()).unwrap();
    let opened = Channel::<u64>::open(Backing::posix(&name.0), &Options::new()).unwrap();
    assert_eq!(opened.capacity(), chan.capacity());
    let mut tx = opened.sender().unwrap();
    let mut rx = chan.receiver().unwrap();
    tx.send_slice(&[1, 2, 3]).unwrap();
    let mut buf = [0u64; 8];
    assert_eq!(rx.try_recv_into(&mut buf), Ok(3));
    assert_eq!(&buf[..3], &[1, 2, 3]);
    // An SPSC view of an MPMC segment is refused.
    assert!(matches!(
        shmchan::spsc::Channel::<u64>::open(
            Backing::posix(&name.0),
            &shmchan::spsc::Options::new()
        ),
        Err(OpenError::FlavorMismatch { .. })
    ));
}

#[test]
fn byte_frames_of_any_length_up_to_the_maximum() {
    use shmchan::{Frame, FrameTooLong};
    let chan =
        Channel::<Frame<300>>::create(Backing::Anonymous, &Options::new().capacity(8)).unwrap();
    assert_eq!(Frame::<300>::new(&[0; 301]).unwrap_err(), FrameTooLong { len: 301, max: 300 });
    let mut rx = chan.receiver().unwrap();
    let senders: Vec<_> = (0..2u8).map(|_| chan.sender().unwrap()).collect();
    // Frame `len` of sender `id`: its first byte names the sender, the rest follow a pattern.
    let frame_bytes = |id: u8, len: usize| -> Vec<u8> {
        (0..len).map(|i| if i == 0 { id } else { (i as u8) ^ id }).collect()
    };
    std::thread::scope(|s| {
        for (id, mut tx) in senders.into_iter().enumerate() {
            s.spawn(move || {
                for len in 1..=300usize {
                    let frame = Frame::new(&frame_bytes(id as u8, len)).unwrap();
                    // Bounded, so a failing receiver cannot leave this thread blocked.
                    tx.send_timeout(frame, Duration::from_secs(30)).unwrap();
                }
            });
        }
        let mut next = [1usize; 2];
        while next != [301, 301] {
            let frame = rx.recv_timeout(Duration::from_secs(30)).unwrap();
            let bytes = frame.bytes().expect("an intact frame");
            let id = usize::from(bytes[0]);
            assert_eq!(bytes.len(), next[id], "per-sender order");
            assert_eq!(bytes, frame_bytes(id as u8, bytes.len()), "frame contents");
            next[id] += 1;
        }
    });
    let mut tx = chan.sender().unwrap();
    tx.send(Frame::new(b"").unwrap()).unwrap();
    assert_eq!(rx.recv().unwrap().bytes(), Some(&b""[..]));
}
