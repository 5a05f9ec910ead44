//! A peer that writes garbage: every header field damaged or the object truncated gives the
//! matching typed error at open; damage to a live ring gives `Corrupted` (for good), never a
//! panic, an out-of-bounds access or a hang.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::ShmName;
use shmchan::layout::{self, RawHeader};
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, OpenError, TryRecvError, TrySendError, TypeField};

fn shm_path(name: &ShmName) -> String {
    format!("/dev/shm{}", name.0)
}

fn quick_open() -> Options {
    Options::new().open_timeout(Duration::from_millis(20))
}

/// A fresh segment of `u64` with no endpoint attached, and its pristine bytes.
fn fresh_segment(name: &ShmName) -> Vec<u8> {
    let opts = Options::new().capacity(256).remove_on_drop(false);
    drop(Channel::<u64>::create(Backing::posix(&name.0), &opts).unwrap());
    std::fs::read(shm_path(name)).unwrap()
}

fn open_after_patch(name: &ShmName, offset: u64, bytes: &[u8]) -> OpenError {
    let file = OpenOptions::new().write(true).open(shm_path(name)).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    Channel::<u64>::open(Backing::posix(&name.0), &quick_open()).unwrap_err()
}

#[test]
fn every_damaged_header_field_gives_its_error() {
    let name = ShmName::new("fields");
    let pristine = fresh_segment(&name);
    let header: RawHeader = bytemuck::pod_read_unaligned(&pristine[..128]);
    let restore = || {
        let file = OpenOptions::new().write(true).open(shm_path(&name)).unwrap();
        file.write_all_at(&pristine, 0).unwrap();
    };
    type Check = fn(&OpenError) -> bool;
    let cases: &[(&str, u64, Vec<u8>, Check)] = &[
        ("magic", 0, b"NOTSHMCH".to_vec(), |e| matches!(e, OpenError::BadMagic { .. })),
        ("init_state", 8, 0u32.to_le_bytes().to_vec(), |e| matches!(e, OpenError::NotInitialized)),
        ("init_state garbage", 8, 7u32.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("version_major", 12, 9u16.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::VersionMismatch { found: (9, _), .. })
        }),
        ("flavor", 16, 77u32.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::FlavorMismatch { found: 77, .. })
        }),
        ("header_len", 20, 64u32.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("segment_len small", 24, 4096u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::TooSmall { .. } | OpenError::Corrupted { .. })
        }),
        ("segment_len huge", 24, u64::MAX.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("capacity not a power of two", 32, 15u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("capacity huge", 32, (1u64 << 40).to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("elem_size", 40, 4u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::TypeMismatch { field: TypeField::Size, .. })
        }),
        ("elem_align", 48, 4u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::TypeMismatch { field: TypeField::Align, .. })
        }),
        ("slot_stride", 56, 8u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("slots_offset", 64, 0u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("fingerprint", 72, 1u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::TypeMismatch { field: TypeField::Fingerprint, .. })
        }),
        ("creator_pid", 80, 1u32.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("creator_start", 88, 1u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("extra", 96, 1u64.to_le_bytes().to_vec(), |e| matches!(e, OpenError::Corrupted { .. })),
        ("reserved", 104, 1u64.to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
        ("checksum", 120, (!header.checksum).to_le_bytes().to_vec(), |e| {
            matches!(e, OpenError::Corrupted { .. })
        }),
    ];
    for (field, offset, bytes, expected) in cases {
        let err = open_after_patch(&name, *offset, bytes);
        assert!(expected(&err), "{field}: got {err:?}");
        restore();
    }
    Channel::<u64>::open(Backing::posix(&name.0), &quick_open()).expect("restored image opens");
}

#[test]
fn truncated_objects_are_too_small() {
    let name = ShmName::new("trunc");
    let pristine = fresh_segment(&name);
    assert_eq!(pristine.len(), 8192);
    for len in [pristine.len() as u64 - 4096, 1000, 128, 1] {
        let file = OpenOptions::new().write(true).open(shm_path(&name)).unwrap();
        file.write_all_at(&pristine, 0).unwrap();
        file.set_len(len).unwrap();
        let err = Channel::<u64>::open(Backing::posix(&name.0), &quick_open()).unwrap_err();
        assert!(matches!(err, OpenError::TooSmall { .. }), "length {len}: {err:?}");
    }
    let file = OpenOptions::new().write(true).open(shm_path(&name)).unwrap();
    file.set_len(0).unwrap();
    let err = Channel::<u64>::open(Backing::posix(&name.0), &quick_open()).unwrap_err();
    assert!(matches!(err, OpenError::TooSmall { found: 0, .. }), "empty object: {err:?}");
}

#[test]
fn zeroed_object_is_never_initialized() {
    let name = ShmName::new("zeros");
    let path = shm_path(&name);
    let file = OpenOptions::new().write(true).create_new(true).open(&path).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    file.set_len(1 << 16).unwrap();
    let err = Channel::<u64>::open(Backing::posix(&name.0), &quick_open()).unwrap_err();
    assert!(matches!(err, OpenError::NotInitialized), "{err:?}");
}

/// Writes `value` at `offset` of the live segment, as a peer with write access could.
fn poke(name: &ShmName, offset: u64, value: u64) {
    let file = OpenOptions::new().write(true).open(shm_path(name)).unwrap();
    file.write_all_at(&value.to_le_bytes(), offset).unwrap();
}

#[test]
fn a_forged_head_poisons_the_producer_for_good() {
    let name = ShmName::new("head");
    let chan =
        Channel::<u64>::create(Backing::posix(&name.0), &Options::new().capacity(4)).unwrap();
    let mut tx = chan.producer().unwrap();
    let _rx = chan.consumer().unwrap();
    for i in 0..4 {
        tx.try_send(i).unwrap();
    }
    let head_offset = layout::CONTROL_OFFSET + 2 * layout::LINE;
    poke(&name, head_offset, 1_000_000);
    assert_eq!(tx.try_send(9), Err(TrySendError::Corrupted(9)));
    poke(&name, head_offset, 0);
    assert_eq!(tx.try_send(9), Err(TrySendError::Corrupted(9)), "poisoning is final");
    assert_eq!(tx.send(10).unwrap_err().into_inner(), 10);
}

#[test]
fn a_forged_stamp_poisons_the_consumer_and_tells_the_producer() {
    let name = ShmName::new("stamp");
    let chan =
        Channel::<u64>::create(Backing::posix(&name.0), &Options::new().capacity(4)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    tx.try_send(1).unwrap();
    assert_eq!(rx.try_recv(), Ok(1));
    let slots_offset = 768;
    poke(&name, slots_offset + 16, 0xdead_beef);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Corrupted));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(10)),
        Err(shmchan::RecvTimeoutError::Corrupted)
    );
    // The shared poison flag is informational; the producer still works on its own checks,
    // while a consumer attached later sees the flag once the ring is empty.
    drop(rx);
    let mut rx2 = chan.consumer().unwrap();
    assert_eq!(rx2.try_recv(), Err(TryRecvError::Corrupted));
}

#[test]
fn a_forged_tail_beyond_the_stamps_is_corruption_in_batches() {
    let name = ShmName::new("tail");
    let chan =
        Channel::<u64>::create(Backing::posix(&name.0), &Options::new().capacity(8)).unwrap();
    let mut tx = chan.producer().unwrap();
    let mut rx = chan.consumer().unwrap();
    tx.try_send(1).unwrap();
    let tail_offset = layout::CONTROL_OFFSET + layout::LINE;
    poke(&name, tail_offset, 5);
    let mut buf = [0u64; 8];
    assert_eq!(rx.try_recv_into(&mut buf), Err(TryRecvError::Corrupted));
}

#[test]
fn an_endpoint_word_held_by_a_dead_or_recycled_process_is_reclaimed() {
    let name = ShmName::new("owner");
    let chan =
        Channel::<u64>::create(Backing::posix(&name.0), &Options::new().capacity(4)).unwrap();
    // A word naming our own pid with another start time: a recycled pid, not us, not alive.
    let me = std::process::id() as u64;
    let forged = me | (0x1234u64 << 32);
    poke(&name, layout::CONTROL_OFFSET, forged);
    chan.producer().expect("a recycled identity does not hold the endpoint");
}
