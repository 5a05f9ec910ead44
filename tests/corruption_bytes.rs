//! A peer that writes garbage into a byte ring: forged lengths, kinds, padding and positions
//! give `Corrupted` (for good), never a panic, an out-of-bounds access or a hang; a record
//! changed under a held read grant is still read within the length validated at first.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::ShmName;
use shmchan::bytes::{Channel, Consumer, Options, Producer, TrySendError};
use shmchan::layout;
use shmchan::{Backing, OpenError, RecvTimeoutError, TryRecvError};

const TAIL: u64 = layout::CONTROL_OFFSET + layout::LINE;
const HEAD: u64 = layout::CONTROL_OFFSET + 2 * layout::LINE;
const DATA: u64 = 768;
const DATA_KIND: u32 = u32::from_le_bytes(*b"DATA");
const PAD_KIND: u32 = u32::from_le_bytes(*b"PAD_");

fn header(kind: u32, len: u32) -> u64 {
    u64::from(len) | (u64::from(kind) << 32)
}

/// Writes `value` at `offset` of the live segment, as a peer with write access could.
fn poke(name: &ShmName, offset: u64, value: u64) {
    let file = OpenOptions::new().write(true).open(format!("/dev/shm{}", name.0)).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

/// A 256-byte ring (max message 64) with both endpoints and one 8-byte message published.
fn ring(tag: &str) -> (ShmName, Channel, Producer, Consumer) {
    let name = ShmName::new(tag);
    let opts = Options::new().capacity_bytes(256).max_message(64);
    let chan = Channel::create(Backing::posix(&name.0), &opts).unwrap();
    let mut tx = chan.producer().unwrap();
    let rx = chan.consumer().unwrap();
    tx.try_send(&[5; 8]).unwrap();
    (name, chan, tx, rx)
}

/// The consumer reports `Corrupted` now and on every later call, blocking ones included.
fn assert_poisoned(rx: &mut Consumer) {
    let mut buf = Vec::new();
    assert!(matches!(rx.try_read(), Err(TryRecvError::Corrupted)));
    assert_eq!(rx.try_recv(&mut buf), Err(TryRecvError::Corrupted));
    assert_eq!(
        rx.recv_timeout(&mut buf, Duration::from_millis(5)),
        Err(RecvTimeoutError::Corrupted)
    );
}

#[test]
fn forged_record_headers_poison_the_consumer() {
    let cases: &[(&str, u64, Option<u64>)] = &[
        ("length above max_message", header(DATA_KIND, 65), Some(256)),
        ("length u32::MAX", header(DATA_KIND, u32::MAX), Some(256)),
        ("length past the published tail", header(DATA_KIND, 9), None),
        ("unknown kind", header(7, 8), None),
        ("zero header", 0, None),
        ("padding not ending at the area's end", header(PAD_KIND, 8), Some(64)),
        ("padding of the whole area", header(PAD_KIND, 248), Some(256)),
    ];
    for (what, word, tail) in cases {
        let (name, _chan, _tx, mut rx) = ring("hdr");
        poke(&name, DATA, *word);
        if let Some(t) = tail {
            poke(&name, TAIL, *t);
        }
        assert!(matches!(rx.try_read(), Err(TryRecvError::Corrupted)), "{what}");
        // Restoring the bytes changes nothing: the handle remembers.
        poke(&name, DATA, header(DATA_KIND, 8));
        poke(&name, TAIL, 16);
        assert_poisoned(&mut rx);
    }
}

#[test]
fn a_record_that_does_not_fit_before_the_end_is_corruption() {
    // Start 16 bytes before the end of the area: an honest producer pads; forge a record there.
    let name = ShmName::new("noend");
    let opts = Options::new().capacity_bytes(256).max_message(64).start_position(240);
    let chan = Channel::create(Backing::posix(&name.0), &opts).unwrap();
    let mut rx = chan.consumer().unwrap();
    poke(&name, DATA + 240, header(DATA_KIND, 40));
    poke(&name, TAIL, 240 + 48);
    assert!(matches!(rx.try_read(), Err(TryRecvError::Corrupted)));
}

#[test]
fn forged_tails_poison_the_consumer() {
    for tail in [12u64, 1 << 20, u64::MAX - 7] {
        let (name, _chan, _tx, mut rx) = ring("tail");
        poke(&name, TAIL, tail);
        assert!(matches!(rx.try_read(), Err(TryRecvError::Corrupted)), "tail {tail}");
    }
    // A tail moving backwards, below what the consumer already saw.
    let (name, _chan, mut tx, mut rx) = ring("tail-back");
    tx.try_send(&[6; 8]).unwrap();
    assert_eq!(rx.try_read().unwrap().to_vec(), [5; 8]);
    assert_eq!(rx.try_read().unwrap().to_vec(), [6; 8]);
    poke(&name, TAIL, 16);
    assert_poisoned(&mut rx);
}

#[test]
fn a_forged_head_poisons_the_producer_and_tells_the_consumer() {
    let (name, _chan, mut tx, mut rx) = ring("head");
    for _ in 0..15 {
        tx.try_send(&[1; 8]).unwrap();
    }
    assert_eq!(tx.try_send(&[1; 8]), Err(TrySendError::Full));
    poke(&name, HEAD, 1 << 30);
    assert_eq!(tx.try_send(&[1; 8]), Err(TrySendError::Corrupted));
    poke(&name, HEAD, 0);
    assert_eq!(tx.try_send(&[1; 8]), Err(TrySendError::Corrupted), "poisoning is final");
    assert!(matches!(tx.try_grant(0), Err(TrySendError::Corrupted)));
    // Too large still says so: the argument is checked before the ring.
    assert!(matches!(tx.try_grant(65), Err(TrySendError::TooLarge { len: 65, max: 64 })));
    // The shared flag reaches the consumer once the ring is drained.
    while rx.try_read().is_ok() {}
    assert_poisoned(&mut rx);
}

#[test]
fn a_record_rewritten_under_a_read_grant_is_read_within_its_first_length() {
    let (name, _chan, _tx, mut rx) = ring("double-fetch");
    let grant = rx.try_read().unwrap();
    assert_eq!(grant.len(), 8);
    // The peer now claims a 64-byte record and rewrites the payload.
    poke(&name, DATA, header(DATA_KIND, 64));
    poke(&name, DATA + 8, u64::MAX);
    assert_eq!(grant.len(), 8, "the length was loaded once");
    assert_eq!(grant.to_vec(), [0xff; 8], "the bytes are the peer's business");
    assert_eq!(grant.read_pod::<u64>(1), None);
    let mut big = [0u8; 100];
    assert_eq!(grant.copy_to(&mut big), 8);
    drop(grant);
}

#[test]
fn impossible_positions_refuse_attach() {
    let name = ShmName::new("attach");
    let opts = Options::new().capacity_bytes(256).remove_on_drop(true);
    let chan = Channel::create(Backing::posix(&name.0), &opts).unwrap();
    poke(&name, TAIL, 1000);
    assert!(matches!(chan.consumer(), Err(OpenError::Corrupted { .. })));
    assert!(matches!(chan.producer(), Err(OpenError::Corrupted { .. })));
    poke(&name, TAIL, 4);
    poke(&name, HEAD, 4);
    assert!(matches!(chan.consumer(), Err(OpenError::Corrupted { .. })));
    poke(&name, TAIL, 0);
    poke(&name, HEAD, 0);
    chan.consumer().expect("the endpoint was released after the failed attach");
}

#[test]
fn a_damaged_max_message_in_the_header_is_refused_at_open() {
    let name = ShmName::new("extra");
    let opts = Options::new().capacity_bytes(256).max_message(64).remove_on_drop(false);
    drop(Channel::create(Backing::posix(&name.0), &opts).unwrap());
    // extra (max_message) at header offset 96: above half the area, with a valid checksum.
    let path = format!("/dev/shm{}", name.0);
    let mut image = std::fs::read(&path).unwrap();
    let mut h: layout::RawHeader = bytemuck::pod_read_unaligned(&image[..128]);
    h.extra = 200;
    h.checksum = h.compute_checksum();
    image[..128].copy_from_slice(bytemuck::bytes_of(&h));
    std::fs::write(&path, &image).unwrap();
    let quick = Options::new().open_timeout(Duration::from_millis(20));
    let err = Channel::open(Backing::posix(&name.0), &quick).unwrap_err();
    assert!(matches!(err, OpenError::Corrupted { .. }), "{err:?}");
}
