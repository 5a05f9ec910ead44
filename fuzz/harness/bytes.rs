//! Fuzz logic of the byte ring (`shmchan::bytes`), for the `bytes_ops` target, the seed
//! generator and the corpus replay test.
//!
//! [`bytes_ops`] has two modes, chosen by bit 7 of the flags byte:
//! - model: an operation sequence on a healthy anonymous channel, every result checked against a
//!   `VecDeque<Vec<u8>>` model that also does the byte accounting the docs promise (records of
//!   `8 + round_up(len, 8)` bytes, padding to the end of the area when a record does not fit);
//! - hostile: a channel in a scratch file whose control block and data area start as an
//!   arbitrary image from the input, and which a "peer" keeps rewriting between operations,
//!   including while a read grant is held. Every call must return without a panic, an
//!   out-of-bounds access or a hang; lengths never exceed `max_message`; `Corrupted`, once
//!   reported by a handle, stays reported.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use shmchan::bytes::{Channel, Consumer, Options, Producer, SendTimeoutError, TrySendError};
use shmchan::{Backing, RecvTimeoutError, TryRecvError};

use super::{Input, RemoveOnDrop, START_POSITIONS, WAITS, scratch_path, tiny_timeout};

/// Op codes of `bytes_ops` (each byte maps to `b % 12`).
pub mod op {
    /// `try_send`; arg: length.
    pub const SEND: u8 = 0;
    /// `try_recv`.
    pub const RECV: u8 = 1;
    /// `try_grant`, write, `commit` shorter; args: grant length, commit length.
    pub const GRANT_COMMIT: u8 = 2;
    /// `try_grant`, fill, drop without commit; arg: length.
    pub const GRANT_DROP: u8 = 3;
    /// `try_read`, check through `read_pod` / `copy_range_to` / `to_vec`, release; arg: offset.
    pub const READ: u8 = 4;
    /// Drop the producer, or attach one.
    pub const TOGGLE_PRODUCER: u8 = 5;
    /// Drop the consumer, or attach one.
    pub const TOGGLE_CONSUMER: u8 = 6;
    /// `send_timeout`; args: length, timeout byte.
    pub const SEND_TIMEOUT: u8 = 7;
    /// `recv_timeout` (even arg) or `read_timeout`; arg: timeout byte.
    pub const RECV_TIMEOUT: u8 = 8;
    /// Compare `used_bytes`, `is_empty`, positions and `is_disconnected` with the model.
    pub const OBSERVE: u8 = 9;
    /// Send or grant more than `max_message`; arg: excess.
    pub const TOO_LARGE: u8 = 10;
    /// Hostile mode: peer write; args: selector u16, value u64. Model mode: `try_send`.
    pub const POKE: u8 = 11;
}

/// Bits of the flags byte.
pub mod flag {
    /// Bits 0..2: index into `START_POSITIONS` (rounded down to a multiple of 8).
    pub const START_MASK: u8 = 3;
    /// Bits 2..4: index into `WAITS`.
    pub const WAIT_SHIFT: u8 = 2;
    /// Hostile mode.
    pub const HOSTILE: u8 = 0x80;
}

/// Most operations one input runs.
pub const MAX_BYTES_OPS: usize = 1024;

/// Counters of what `bytes_ops` inputs reached.
#[derive(Debug, Default)]
pub struct BytesStats {
    pub ops: u64,
    pub sent: u64,
    pub received: u64,
    pub full: u64,
    pub empty: u64,
    pub too_large: u64,
    pub partial_commits: u64,
    pub dropped_grants: u64,
    pub paddings: u64,
    pub send_disconnected: u64,
    pub recv_disconnected: u64,
    pub corrupted: u64,
    pub pokes: u64,
    pub hostile_inputs: u64,
}

impl BytesStats {
    pub fn absorb(&mut self, o: BytesStats) {
        self.ops += o.ops;
        self.sent += o.sent;
        self.received += o.received;
        self.full += o.full;
        self.empty += o.empty;
        self.too_large += o.too_large;
        self.partial_commits += o.partial_commits;
        self.dropped_grants += o.dropped_grants;
        self.paddings += o.paddings;
        self.send_disconnected += o.send_disconnected;
        self.recv_disconnected += o.recv_disconnected;
        self.corrupted += o.corrupted;
        self.pokes += o.pokes;
        self.hostile_inputs += o.hostile_inputs;
    }
}

/// Message number `seq` of `len` bytes.
fn message(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|k| (seq as u8).wrapping_mul(37) ^ (k as u8)).collect()
}

fn record_len(len: u64) -> u64 {
    8 + len.next_multiple_of(8)
}

/// Runs one `bytes_ops` input. See the module docs.
pub fn bytes_ops(data: &[u8]) -> BytesStats {
    let mut input = Input::new(data);
    let config = input.byte();
    let flags = input.byte();
    let capacity = 1u64 << (4 + config % 6); // 16..=512
    let largest = capacity / 2 - 8;
    let max = u64::from(input.byte()) % (largest + 1);
    let start = START_POSITIONS[usize::from(flags & flag::START_MASK)] & !7;
    let wait = WAITS[usize::from(flags >> flag::WAIT_SHIFT) & 3];
    let opts = Options::new()
        .capacity_bytes(capacity as usize)
        .max_message(max as usize)
        .start_position(start)
        .wait_strategy(wait);
    if flags & flag::HOSTILE != 0 {
        hostile(&mut input, &opts, capacity, max)
    } else {
        modelled(&mut input, &opts, capacity, max, start)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word {
    Attached,
    Detached,
}

/// The model: messages with the positions their records end at, the tail, the owner words.
struct Model {
    queue: VecDeque<(Vec<u8>, u64)>,
    capacity: u64,
    max: u64,
    head: u64,
    tail: u64,
    next: u64,
    producer: Word,
    consumer: Word,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent,
    Received(Vec<u8>),
    Full,
    Empty,
    TooLarge,
    Disconnected,
    Corrupted,
}

impl Model {
    /// Padding and record bytes for a grant of `len` at the tail, if it fits now.
    fn fit(&self, len: u64) -> Option<u64> {
        let rec = record_len(len);
        let offset = self.tail % self.capacity;
        let pad = if rec <= self.capacity - offset { 0 } else { self.capacity - offset };
        let used = self.tail.wrapping_sub(self.head);
        (used + pad + rec <= self.capacity).then_some(pad)
    }

    /// What granting `len` returns: `Ok(pad)` or the refusal.
    fn grant(&self, len: u64) -> Result<u64, Outcome> {
        if len > self.max {
            return Err(Outcome::TooLarge);
        }
        if self.consumer == Word::Detached {
            return Err(Outcome::Disconnected);
        }
        self.fit(len).ok_or(Outcome::Full)
    }

    /// Publishes `msg` with the padding a grant of `granted` bytes chose.
    fn commit(&mut self, pad: u64, msg: Vec<u8>) {
        self.tail = self.tail.wrapping_add(pad + record_len(msg.len() as u64));
        self.queue.push_back((msg, self.tail));
        self.next += 1;
    }

    fn recv(&mut self) -> Outcome {
        match self.queue.pop_front() {
            Some((msg, end)) => {
                self.head = end;
                Outcome::Received(msg)
            }
            None if self.producer == Word::Detached => Outcome::Disconnected,
            None => Outcome::Empty,
        }
    }

    /// The next message's length without taking it.
    fn front_len(&self) -> Option<usize> {
        self.queue.front().map(|(m, _)| m.len())
    }
}

fn try_send_outcome(r: Result<(), TrySendError>) -> Outcome {
    match r {
        Ok(()) => Outcome::Sent,
        Err(TrySendError::Full) => Outcome::Full,
        Err(TrySendError::TooLarge { .. }) => Outcome::TooLarge,
        Err(TrySendError::Disconnected) => Outcome::Disconnected,
        Err(TrySendError::Corrupted) => Outcome::Corrupted,
    }
}

fn try_recv_outcome(e: TryRecvError) -> Outcome {
    match e {
        TryRecvError::Empty => Outcome::Empty,
        TryRecvError::Disconnected => Outcome::Disconnected,
        TryRecvError::Corrupted => Outcome::Corrupted,
    }
}

fn modelled(
    input: &mut Input<'_>,
    opts: &Options,
    capacity: u64,
    max: u64,
    start: u64,
) -> BytesStats {
    let mut stats = BytesStats::default();
    let chan = Channel::create(Backing::Anonymous, opts).expect("create a byte channel");
    assert_eq!((chan.capacity_bytes() as u64, chan.max_message() as u64), (capacity, max));
    let mut m = Model {
        queue: VecDeque::new(),
        capacity,
        max,
        head: start,
        tail: start,
        next: 0,
        producer: Word::Attached,
        consumer: Word::Attached,
    };
    let mut tx = Some(chan.producer().expect("attach the producer"));
    let mut rx = Some(chan.consumer().expect("attach the consumer"));
    let mut buf = Vec::new();
    let len_arg = |b: u8| u64::from(b) % (max + 1);

    for _ in 0..MAX_BYTES_OPS {
        let Some(b) = input.u8() else { break };
        stats.ops += 1;
        let code = b % 12;
        let (got, want) = match code {
            op::SEND | op::POKE | op::SEND_TIMEOUT => {
                let len = len_arg(input.byte());
                let t = if code == op::SEND_TIMEOUT { Some(input.byte()) } else { None };
                let Some(p) = tx.as_mut() else { continue };
                let msg = message(m.next, len as usize);
                let got = match t {
                    None => try_send_outcome(p.try_send(&msg)),
                    Some(t) => match p.send_timeout(&msg, tiny_timeout(t)) {
                        Ok(()) => Outcome::Sent,
                        Err(SendTimeoutError::Timeout) => Outcome::Full,
                        Err(SendTimeoutError::TooLarge { .. }) => Outcome::TooLarge,
                        Err(SendTimeoutError::Disconnected) => Outcome::Disconnected,
                        Err(SendTimeoutError::Corrupted) => Outcome::Corrupted,
                    },
                };
                let want = match m.grant(len) {
                    Ok(pad) => {
                        stats.paddings += u64::from(pad > 0);
                        m.commit(pad, msg);
                        Outcome::Sent
                    }
                    Err(e) => e,
                };
                (got, want)
            }
            op::GRANT_COMMIT => {
                let len = len_arg(input.byte());
                let keep = u64::from(input.byte()) % (len + 1);
                let Some(p) = tx.as_mut() else { continue };
                let msg = message(m.next, keep as usize);
                let got = match p.try_grant(len as usize) {
                    Ok(mut g) => {
                        assert_eq!(g.len() as u64, len);
                        g.fill(0, len as usize, 0xa5);
                        if keep >= 8 {
                            g.write_pod(0, &u64::from_le_bytes(msg[..8].try_into().unwrap()));
                            g.write_at(8, &msg[8..]);
                        } else {
                            g.write_at(0, &msg);
                        }
                        g.commit(keep as usize);
                        Outcome::Sent
                    }
                    Err(e) => try_send_outcome(Err(e)),
                };
                let want = match m.grant(len) {
                    Ok(pad) => {
                        stats.partial_commits += u64::from(keep < len);
                        stats.paddings += u64::from(pad > 0);
                        m.commit(pad, msg);
                        Outcome::Sent
                    }
                    Err(e) => e,
                };
                (got, want)
            }
            op::GRANT_DROP => {
                let len = len_arg(input.byte());
                let Some(p) = tx.as_mut() else { continue };
                let got = match p.try_grant(len as usize) {
                    Ok(mut g) => {
                        // Filled, then abandoned: going out of scope publishes nothing.
                        g.fill(0, len as usize, 0x5a);
                        Outcome::Sent
                    }
                    Err(e) => try_send_outcome(Err(e)),
                };
                let want = match m.grant(len) {
                    Ok(_) => {
                        stats.dropped_grants += 1;
                        Outcome::Sent
                    }
                    Err(e) => e,
                };
                (got, want)
            }
            op::RECV => {
                let Some(c) = rx.as_mut() else { continue };
                let got = match c.try_recv(&mut buf) {
                    Ok(n) => {
                        assert_eq!(n, buf.len());
                        Outcome::Received(buf.clone())
                    }
                    Err(e) => try_recv_outcome(e),
                };
                (got, m.recv())
            }
            op::READ => {
                let offset = usize::from(input.byte());
                let Some(c) = rx.as_mut() else { continue };
                let front = m.front_len();
                let got = match c.try_read() {
                    Ok(g) => {
                        let all = g.to_vec();
                        assert_eq!(all.len(), g.len());
                        let pod = g.read_pod::<u32>(offset);
                        match all.get(offset..offset + 4) {
                            Some(b) => {
                                assert_eq!(pod, Some(u32::from_le_bytes(b.try_into().unwrap())))
                            }
                            None => assert_eq!(pod, None, "read_pod past the end"),
                        }
                        let mut part = vec![0; offset.min(all.len() + 1)];
                        let fits = g.copy_range_to(0, &mut part).is_some();
                        assert_eq!(fits, part.len() <= all.len());
                        g.release();
                        Outcome::Received(all)
                    }
                    Err(e) => try_recv_outcome(e),
                };
                let want = m.recv();
                if let Outcome::Received(v) = &want {
                    assert_eq!(Some(v.len()), front);
                }
                (got, want)
            }
            op::RECV_TIMEOUT => {
                let t = input.byte();
                let Some(c) = rx.as_mut() else { continue };
                let result = if t % 2 == 0 {
                    c.recv_timeout(&mut buf, tiny_timeout(t)).map(|_| buf.clone())
                } else {
                    c.read_timeout(tiny_timeout(t)).map(|g| g.to_vec())
                };
                let got = match result {
                    Ok(v) => Outcome::Received(v),
                    Err(RecvTimeoutError::Timeout) => Outcome::Empty,
                    Err(RecvTimeoutError::Disconnected) => Outcome::Disconnected,
                    Err(RecvTimeoutError::Corrupted) => Outcome::Corrupted,
                };
                (got, m.recv())
            }
            op::TOGGLE_PRODUCER => {
                if tx.take().is_some() {
                    m.producer = Word::Detached;
                } else {
                    tx = Some(chan.producer().expect("a free producer endpoint attaches"));
                    m.producer = Word::Attached;
                }
                continue;
            }
            op::TOGGLE_CONSUMER => {
                if rx.take().is_some() {
                    m.consumer = Word::Detached;
                } else {
                    rx = Some(chan.consumer().expect("a free consumer endpoint attaches"));
                    m.consumer = Word::Attached;
                }
                continue;
            }
            op::OBSERVE => {
                let used = m.tail.wrapping_sub(m.head);
                assert_eq!(chan.used_bytes() as u64, used, "used bytes");
                assert_eq!(chan.is_empty(), used == 0);
                if let Some(p) = tx.as_mut() {
                    assert_eq!(p.position(), m.tail, "producer position");
                    assert_eq!(p.is_disconnected(), m.consumer == Word::Detached);
                }
                if let Some(c) = rx.as_mut() {
                    assert_eq!(c.position(), m.head, "consumer position");
                    assert_eq!(c.is_disconnected(), m.producer == Word::Detached);
                }
                continue;
            }
            op::TOO_LARGE => {
                let len = (max + 1 + u64::from(input.byte())) as usize;
                let Some(p) = tx.as_mut() else { continue };
                let want = TrySendError::TooLarge { len, max: max as usize };
                assert_eq!(p.try_grant(len).unwrap_err(), want);
                assert_eq!(p.try_send(&vec![0; len]), Err(want));
                (Outcome::TooLarge, Outcome::TooLarge)
            }
            _ => unreachable!("op codes are 0..12"),
        };
        match &want {
            Outcome::Sent => stats.sent += 1,
            Outcome::Received(_) => stats.received += 1,
            Outcome::Full => stats.full += 1,
            Outcome::Empty => stats.empty += 1,
            Outcome::TooLarge => stats.too_large += 1,
            Outcome::Disconnected
                if code == op::RECV || code == op::READ || code == op::RECV_TIMEOUT =>
            {
                stats.recv_disconnected += 1
            }
            Outcome::Disconnected => stats.send_disconnected += 1,
            Outcome::Corrupted => stats.corrupted += 1,
        }
        assert_eq!(got, want, "op {code} (capacity {capacity}, max {max}, start {start:#x})");
    }

    if let Some(c) = rx.as_mut() {
        while let Some((msg, _)) = m.queue.pop_front() {
            assert_eq!(c.try_recv(&mut buf), Ok(msg.len()), "final drain");
            assert_eq!(buf, msg);
        }
    }
    stats
}

/// Byte offsets in the segment.
const CONTROL: u64 = 128;
const TAIL: u64 = CONTROL + 128;
const HEAD: u64 = CONTROL + 256;
const DATA: u64 = 768;

/// Maps a selector to a segment offset: the tail, the head, the owner words and poison flag,
/// the futex words, or (most selectors) an 8-aligned word of the data area.
fn target(selector: u16, capacity: u64) -> u64 {
    match selector % 16 {
        0 => TAIL,
        1 => HEAD,
        2 => CONTROL,
        3 => CONTROL + 8,
        4 => CONTROL + 16,
        5 => CONTROL + 384,
        6 => CONTROL + 512,
        _ => DATA + (u64::from(selector >> 4) * 8) % capacity,
    }
}

/// A value to write: from the input, or (selected by its low bits) a plausible record header.
fn forged_value(input: &mut Input<'_>, max: u64) -> u64 {
    let v = input.u64();
    let kind = match v & 3 {
        0 => return v >> 2,
        1 => u32::from_le_bytes(*b"DATA"),
        2 => u32::from_le_bytes(*b"PAD_"),
        _ => return v,
    };
    let len = (v >> 8) % (2 * max + 16);
    len | (u64::from(kind) << 32)
}

/// Tracks that a handle, once it reported `Corrupted`, keeps doing so.
#[derive(Default)]
struct Sticky(bool);

impl Sticky {
    fn saw(&mut self, corrupted: bool, stats: &mut BytesStats) {
        assert!(!self.0 || corrupted, "a corrupted handle recovered");
        if corrupted && !self.0 {
            stats.corrupted += 1;
        }
        self.0 |= corrupted;
    }
}

fn hostile(input: &mut Input<'_>, opts: &Options, capacity: u64, max: u64) -> BytesStats {
    let mut stats = BytesStats { hostile_inputs: 1, ..Default::default() };
    let path = scratch_path("bytes");
    let _guard = RemoveOnDrop(path.clone());
    let chan = Channel::create(Backing::File(path.clone()), &opts.clone().remove_on_drop(false))
        .expect("create a byte channel in a file");
    let file = OpenOptions::new().write(true).open(&path).expect("open the segment file");
    let poke = |offset: u64, value: u64| {
        file.write_all_at(&value.to_le_bytes(), offset).expect("pwrite into the segment");
    };
    // The initial image: positions and a prefix of the data area from the input.
    let image_len = usize::from(input.byte()) * 8 % (capacity as usize + 8);
    let image = input.take(image_len);
    file.write_all_at(image, DATA).expect("write the image");
    let positions = input.byte();
    if positions & 1 != 0 {
        // Bits 1 and 2: keep the forged tail and head 8-aligned, so attach gets further.
        let align = |v: u64, bit: u8| if positions & bit != 0 { v & !7 } else { v };
        poke(TAIL, align(input.u64(), 2));
        poke(HEAD, align(input.u64(), 4));
    }
    let mut tx: Option<Producer> = chan.producer().ok();
    let mut rx: Option<Consumer> = chan.consumer().ok();
    let (mut tx_bad, mut rx_bad) = (Sticky::default(), Sticky::default());
    let mut buf = Vec::new();

    for _ in 0..MAX_BYTES_OPS / 4 {
        let Some(b) = input.u8() else { break };
        stats.ops += 1;
        match b % 12 {
            op::POKE => {
                let at = target(input.u16().unwrap_or(0), capacity);
                poke(at, forged_value(input, max));
                stats.pokes += 1;
            }
            op::SEND | op::SEND_TIMEOUT | op::GRANT_COMMIT | op::TOO_LARGE => {
                let len = (u64::from(input.byte()) % (max + 2)) as usize;
                let Some(p) = tx.as_mut() else { continue };
                let r = match p.try_grant(len) {
                    Ok(mut g) => {
                        g.fill(0, len, 0x3c);
                        g.commit(len / 2);
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                if matches!(r, Err(TrySendError::TooLarge { .. })) {
                    assert!(len as u64 > max);
                    continue;
                }
                assert!(len as u64 <= max, "{len} > {max} accepted");
                stats.sent += u64::from(r.is_ok());
                tx_bad.saw(r == Err(TrySendError::Corrupted), &mut stats);
            }
            op::GRANT_DROP => {
                let Some(p) = tx.as_mut() else { continue };
                let msg = &[1, 2, 3][..max.min(3) as usize];
                let r = p.send_timeout(msg, tiny_timeout(input.byte()));
                tx_bad.saw(r == Err(SendTimeoutError::Corrupted), &mut stats);
            }
            op::RECV | op::RECV_TIMEOUT => {
                let Some(c) = rx.as_mut() else { continue };
                let r = c.recv_timeout(&mut buf, tiny_timeout(input.byte()));
                if let Ok(n) = r {
                    assert!(n as u64 <= max && n == buf.len(), "length {n} beyond {max}");
                    stats.received += 1;
                }
                rx_bad.saw(r == Err(RecvTimeoutError::Corrupted), &mut stats);
            }
            op::READ => {
                // Hold a grant while the peer rewrites its header and payload.
                let at = target(input.u16().unwrap_or(0), capacity);
                let value = forged_value(input, max);
                let Some(c) = rx.as_mut() else { continue };
                match c.try_read() {
                    Ok(g) => {
                        let len = g.len();
                        assert!(len as u64 <= max);
                        poke(at, value);
                        stats.pokes += 1;
                        assert_eq!(g.len(), len, "the length was loaded once");
                        let mut out = vec![0; len + 16];
                        assert_eq!(g.copy_to(&mut out), len);
                        assert_eq!(g.to_vec().len(), len);
                        assert!(g.read_pod::<u64>(len.saturating_sub(7)).is_none());
                        stats.received += 1;
                        rx_bad.saw(false, &mut stats);
                    }
                    Err(e) => rx_bad.saw(e == TryRecvError::Corrupted, &mut stats),
                }
            }
            op::TOGGLE_PRODUCER => {
                if tx.take().is_none() {
                    tx = chan.producer().ok();
                    tx_bad = Sticky::default();
                }
            }
            op::TOGGLE_CONSUMER => {
                if rx.take().is_none() {
                    rx = chan.consumer().ok();
                    rx_bad = Sticky::default();
                }
            }
            _ => {
                let _ = chan.used_bytes();
                if let Some(p) = tx.as_mut() {
                    let _ = (p.is_disconnected(), p.position());
                }
                if let Some(c) = rx.as_mut() {
                    let _ = (c.is_disconnected(), c.position());
                }
            }
        }
    }
    stats
}
