//! shmchan byte ring rows: variable-length records between two processes.
//!
//! - Latency at every size of the plan, spinning and sleeping (futex): a ping-pong of records
//!   with the copying calls, `send(&[u8])` and `recv(&mut Vec<u8>)`, the peer echoing.
//! - Throughput at every size of the plan and 4 KiB (a ratio needs it), each record copied
//!   out (`recv` into a reused Vec) or read in place (a read grant).

use std::time::{Duration, Instant};

use shmchan::bytes as byte_ring;
use shmchan::spsc::{Channel, Options};
use shmchan::{Backing, RecvTimeoutError, TryRecvError, WaitStrategy};

use super::harness::{PEER_LIMIT, Peer, ShmName};
use super::mpmc_rows::{LATENCY_WAITS, counted_messages, parse_wait, round_trips, warmup_messages};
use super::spsc_rows::RING_BYTES;
use super::{Ctx, Latency, Plan, Rates, Record, Result, Step, size_name};

pub(crate) fn steps(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for ((wait, wait_name), transport) in
        LATENCY_WAITS.into_iter().zip(["shmchan_bytes_spin", "shmchan_bytes_futex"])
    {
        for size in plan.sizes.iter().copied() {
            let name = format!("latency/{transport}/{}", size_name(size));
            steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let samples = ctx.plan.latency_samples(wait == WaitStrategy::Spin);
                let s = bytes_latency(
                    size,
                    (wait, wait_name),
                    samples,
                    ctx.plan.latency_budget,
                    ctx.there,
                )?;
                ctx.emit(
                    Record::latency(&name, &s)
                        .of("latency", transport, size)
                        .text("wait", wait_name)
                        .text("consume", "recv_into_vec")
                        .num("capacity_bytes", BYTES_CAPACITY as f64),
                );
                Ok(())
            }));
        }
    }
    let mut sizes = plan.sizes.clone();
    if !sizes.contains(&4096) {
        sizes.push(4096);
    }
    // Copying and zero-copy while spinning; copying while sleeping on the futex.
    let kinds = [(false, LATENCY_WAITS[0]), (true, LATENCY_WAITS[0]), (false, LATENCY_WAITS[1])];
    for (zero_copy, (wait, wait_name)) in kinds {
        for size in sizes.iter().copied() {
            let (transport, consume) = match (zero_copy, wait) {
                (true, _) => ("shmchan_bytes_zero_copy", "read_pod_3_words"),
                (false, WaitStrategy::Spin) => ("shmchan_bytes", "recv_into_vec"),
                (false, _) => ("shmchan_bytes_futex", "recv_into_vec"),
            };
            let name = format!("throughput/{transport}/{}", size_name(size));
            steps.push(Step::new(name.clone(), move |ctx: &mut Ctx<'_>| {
                let t = bytes_throughput(&ctx.plan, size, zero_copy, (wait, wait_name), ctx.there)?;
                if zero_copy && size == 4096 {
                    ctx.fig.zero_copy_4k_bytes_per_s = t.median * 4096.0;
                }
                ctx.emit(
                    Record::throughput(&name, size, &t)
                        .of("throughput", transport, size)
                        .text("consume", consume)
                        .text("wait", wait_name)
                        .num("capacity_bytes", BYTES_CAPACITY as f64),
                );
                Ok(())
            }));
        }
    }
    steps
}

pub(crate) fn child(role: &str, names: &[&str], param: &str) -> Option<Result<()>> {
    match role {
        "bytes_source" => {
            let mut parts = param.split(',');
            let size = parts.next().unwrap_or("").parse::<usize>();
            let zero_copy = parts.next() == Some("zero_copy");
            let wait = parse_wait(parts.next().unwrap_or(""));
            Some(size.map_err(Into::into).and_then(|size| {
                wait.and_then(|wait| bytes_source_child(names, size, zero_copy, wait))
            }))
        }
        "bytes_echo" => Some(parse_wait(param).and_then(|wait| bytes_echo_child(names, wait))),
        _ => None,
    }
}

/// The data area: the SPSC rows' ring size, which also holds a 64 KiB record (a record may
/// take at most half the area, header included: max_message <= 128 KiB - 8).
pub(crate) const BYTES_CAPACITY: usize = RING_BYTES;
pub(crate) const BYTES_MAX_MESSAGE: usize = 64 * 1024;
const _: () = assert!(BYTES_MAX_MESSAGE <= BYTES_CAPACITY / 2 - 8);

/// The prepared message of `size` bytes; the first word carries the sequence number.
pub(crate) fn bytes_pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 131 + 7) as u8).collect()
}

/// The word at `offset` of the pattern.
pub(crate) fn pattern_word(pattern: &[u8], offset: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&pattern[offset..offset + 8]);
    u64::from_ne_bytes(w)
}

/// What a received record of `size` bytes must hold at the offsets the rows look at: its
/// length, the sequence number in the first word, and the pattern's words in the middle and
/// at the end (the sequence number again where those fall on the first word, at 8 B).
struct Expected {
    size: usize,
    mid: usize,
    end: usize,
    mid_word: u64,
    end_word: u64,
}

impl Expected {
    fn new(size: usize) -> Self {
        let pattern = bytes_pattern(size);
        let (mid, end) = ((size / 2) & !7, size - 8);
        Expected {
            size,
            mid,
            end,
            mid_word: pattern_word(&pattern, mid),
            end_word: pattern_word(&pattern, end),
        }
    }

    /// Fails unless `(len, first, middle, last word)` are those of record `seq`.
    fn check(&self, seq: u64, got: (usize, u64, u64, u64)) -> Result<()> {
        let word = |at: usize, pattern_word: u64| if at == 0 { seq } else { pattern_word };
        let want = (self.size, seq, word(self.mid, self.mid_word), word(self.end, self.end_word));
        if got != want {
            return Err(format!(
                "record {seq}: got len {} seq {} words {:#x} {:#x}",
                got.0, got.1, got.2, got.3
            )
            .into());
        }
        Ok(())
    }

    /// The length and the three words of a record copied out into `buf`.
    fn words_of_copy(&self, buf: &[u8]) -> (usize, u64, u64, u64) {
        let word = |at: usize| buf.get(at..at + 8).map_or(!0, |w| pattern_word(w, 0));
        (buf.len(), word(0), word(self.mid), word(self.end))
    }

    /// The length and the three words of a record read in place: three `read_pod::<u64>`,
    /// bounded copies of 8 bytes each (no `unsafe` volatile read is needed for that).
    fn words_in_place(&self, grant: &byte_ring::ReadGrant<'_>) -> (usize, u64, u64, u64) {
        let word = |at| grant.read_pod::<u64>(at).unwrap_or(!0);
        (grant.len(), word(0), word(self.mid), word(self.end))
    }
}

/// Copies `msg` into the ring: `try_send` first (no clock read when there is room, the common
/// case), then waiting at most [`PEER_LIMIT`] for room.
fn send_bounded(tx: &mut byte_ring::Producer, msg: &[u8]) -> Result<()> {
    match tx.try_send(msg) {
        Ok(()) => Ok(()),
        Err(byte_ring::TrySendError::Full) => {
            tx.send_timeout(msg, PEER_LIMIT).map_err(|e| format!("send: {e}").into())
        }
        Err(e) => Err(format!("send: {e}").into()),
    }
}

/// Writes `msg` in place (grant, `write_at`, commit: what `send` does) with the bounded wait
/// of [`send_bounded`].
fn write_bounded(tx: &mut byte_ring::Producer, msg: &[u8]) -> Result<()> {
    match tx.try_grant(msg.len()) {
        Ok(mut grant) => {
            grant.write_at(0, msg);
            grant.commit(msg.len());
            return Ok(());
        }
        Err(byte_ring::TrySendError::Full) => {}
        Err(e) => return Err(format!("grant: {e}").into()),
    }
    let mut grant = tx.grant_timeout(msg.len(), PEER_LIMIT).map_err(|e| format!("grant: {e}"))?;
    grant.write_at(0, msg);
    grant.commit(msg.len());
    Ok(())
}

/// Copies the next record into `buf`: `try_recv` first, then waiting at most [`PEER_LIMIT`]
/// (which also bounds the wait for a peer that never attached). `None` once the producer is
/// gone and the ring is drained.
fn recv_bounded(rx: &mut byte_ring::Consumer, buf: &mut Vec<u8>) -> Result<Option<usize>> {
    let waited = match rx.try_recv(buf) {
        Ok(len) => return Ok(Some(len)),
        Err(TryRecvError::Empty) => rx.recv_timeout(buf, PEER_LIMIT),
        Err(TryRecvError::Disconnected) => return Ok(None),
        Err(e) => return Err(format!("recv: {e}").into()),
    };
    match waited {
        Ok(len) => Ok(Some(len)),
        Err(RecvTimeoutError::Disconnected) => Ok(None),
        Err(e) => Err(recv_timeout_error(e)),
    }
}

/// Reads the next record in place and returns `inspect` of it (the grant is released on
/// return), with the bounded wait of [`recv_bounded`]; a producer gone before it is an error.
fn read_bounded<R>(
    rx: &mut byte_ring::Consumer,
    inspect: impl Fn(&byte_ring::ReadGrant<'_>) -> R,
) -> Result<R> {
    match rx.try_read() {
        Ok(grant) => return Ok(inspect(&grant)),
        Err(TryRecvError::Empty) => {}
        Err(e) => return Err(format!("read: {e}").into()),
    }
    let grant = rx.read_timeout(PEER_LIMIT).map_err(recv_timeout_error)?;
    Ok(inspect(&grant))
}

fn recv_timeout_error(e: RecvTimeoutError) -> Box<dyn std::error::Error> {
    match e {
        RecvTimeoutError::Timeout => format!("recv: nothing from the peer in {PEER_LIMIT:?}"),
        e => format!("recv: {e}"),
    }
    .into()
}

/// One-way latency of the byte ring between two processes: this process sends a record of
/// `size` bytes with `send(&[u8])` on one ring and receives the echo with `recv(&mut Vec<u8>)`
/// from another (each ring the throughput rows' data area and maximum record), the peer
/// copying every record out and back in the same way; round trips halved. Both sides use
/// `wait` for their blocking calls. Every echo's length and first, middle and last words are
/// checked.
fn bytes_latency(
    size: usize,
    (wait, wait_name): (WaitStrategy, &str),
    samples: usize,
    budget: Duration,
    cpu: Option<usize>,
) -> Result<Latency> {
    let (ping_name, pong_name) = (ShmName::new("bytes-ping"), ShmName::new("bytes-pong"));
    let opts = byte_ring::Options::new()
        .capacity_bytes(BYTES_CAPACITY)
        .max_message(BYTES_MAX_MESSAGE)
        .wait_strategy(wait);
    let mut tx = byte_ring::Channel::create(Backing::posix(&ping_name.0), &opts)?.producer()?;
    let mut rx = byte_ring::Channel::create(Backing::posix(&pong_name.0), &opts)?.consumer()?;
    // Declared after the rings, so an error kills and reaps the child first.
    let peer = Peer::spawn("bytes_echo", &[&ping_name.0, &pong_name.0], wait_name, cpu)?;

    let expected = Expected::new(size);
    let mut msg = bytes_pattern(size);
    let mut buf = Vec::with_capacity(size);
    let rtt = round_trips(samples, budget, |seq| {
        msg[..8].copy_from_slice(&seq.to_ne_bytes());
        send_bounded(&mut tx, &msg)?;
        recv_bounded(&mut rx, &mut buf)?.ok_or("echo peer left early")?;
        expected.check(seq, expected.words_of_copy(&buf))
    })?;
    // Detaching is the stop signal: the peer's receive reports Disconnected.
    drop(tx);
    peer.finish()?;
    Ok(Latency::from_round_trips(&rtt))
}

fn bytes_echo_child(names: &[&str], wait: WaitStrategy) -> Result<()> {
    let opts = byte_ring::Options::new().wait_strategy(wait);
    let mut rx = byte_ring::Channel::open(Backing::posix(names[0]), &opts)?.consumer()?;
    let mut tx = byte_ring::Channel::open(Backing::posix(names[1]), &opts)?.producer()?;
    let mut buf = Vec::with_capacity(rx.max_message());
    while recv_bounded(&mut rx, &mut buf)?.is_some() {
        send_bounded(&mut tx, &buf)?;
    }
    Ok(())
}

/// The child produces `n` records of `size` bytes whenever the parent asks (over a `go`
/// channel), always as grant + `write_at` of a prepared buffer + commit (`send` is exactly
/// that); the parent times their arrival and consumes each one either by copying it out
/// (`recv` into a reused Vec) or in place: three `read_pod::<u64>` (first, middle and last
/// word), checked against the pattern. Both sides use the wait strategy given (`Spin` as the
/// SPSC throughput rows, or `Sleep`: every wait on the futex). One uncounted warm-up repetition, then `plan.reps` (see
/// [`counted_messages`]); the median is reported.
pub(crate) fn bytes_throughput(
    plan: &Plan,
    size: usize,
    zero_copy: bool,
    (wait, wait_name): (WaitStrategy, &str),
    cpu: Option<usize>,
) -> Result<Rates> {
    let (data_name, go_name) = (ShmName::new("bytes"), ShmName::new("go"));
    let opts = byte_ring::Options::new()
        .capacity_bytes(BYTES_CAPACITY)
        .max_message(BYTES_MAX_MESSAGE)
        .wait_strategy(wait);
    let mut rx = byte_ring::Channel::create(Backing::posix(&data_name.0), &opts)?.consumer()?;
    let mut go = Channel::<u64>::create(Backing::posix(&go_name.0), &Options::new())?.producer()?;
    let param = format!("{size},{},{wait_name}", if zero_copy { "zero_copy" } else { "copy" });
    let peer = Peer::spawn("bytes_source", &[&data_name.0, &go_name.0], &param, cpu)?;

    let expected = Expected::new(size);
    let mut buf = Vec::with_capacity(size);
    let mut n = warmup_messages(plan, size);
    let mut rates = Vec::new();
    for rep in 0..=plan.reps {
        go.send(n as u64).map_err(|e| format!("go: {e}"))?;
        let t0 = Instant::now();
        for seq in 0..n as u64 {
            let words = if zero_copy {
                read_bounded(&mut rx, |grant| expected.words_in_place(grant))?
            } else {
                recv_bounded(&mut rx, &mut buf)?.ok_or("source peer left early")?;
                expected.words_of_copy(&buf)
            };
            expected.check(seq, words)?;
        }
        let elapsed = t0.elapsed();
        // The first repetition warms caches and the scheduler and sizes the others; it is
        // not counted.
        if rep == 0 {
            n = counted_messages(plan, size, n, elapsed);
        } else {
            rates.push(n as f64 / elapsed.as_secs_f64());
        }
    }
    drop(go);
    peer.finish()?;
    Ok(Rates::from(rates, n))
}

pub(crate) fn bytes_source_child(
    names: &[&str],
    size: usize,
    zero_copy: bool,
    wait: WaitStrategy,
) -> Result<()> {
    let opts = byte_ring::Options::new().wait_strategy(wait);
    let mut tx = byte_ring::Channel::open(Backing::posix(names[0]), &opts)?.producer()?;
    let mut go = Channel::<u64>::open(Backing::posix(names[1]), &Options::new())?.consumer()?;
    let mut msg = bytes_pattern(size);
    // The parent's detach (or death, which also kills us) ends the loop.
    while let Ok(n) = go.recv() {
        for seq in 0..n {
            msg[..8].copy_from_slice(&seq.to_ne_bytes());
            if zero_copy {
                write_bounded(&mut tx, &msg)?;
            } else {
                send_bounded(&mut tx, &msg)?;
            }
        }
    }
    Ok(())
}
