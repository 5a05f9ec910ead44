//! Fuzz logic of the MPMC channel (`shmchan::mpmc`), for the `mpmc_ops` target, the seed
//! generator and the corpus replay test.
//!
//! [`mpmc_ops`] has two modes, chosen by bit 7 of the flags byte:
//! - model: an operation sequence on a healthy anonymous channel with up to four sender and
//!   four receiver handles (attached, cloned, dropped, re-attached), every result checked
//!   against a model: a `VecDeque` in global send order (with one thread, MPMC is FIFO), the
//!   registry entries each handle shares with its clones, and the disconnect rules of the module
//!   docs. It reaches `Full`, `Empty`, `Disconnected` on both sides and `TooManyEndpoints`.
//! - hostile: a channel in a scratch file whose control block, registry words and slot state
//!   words a "peer" overwrites between non-blocking (or tiny-timeout) operations, with raw
//!   bytes or with plausible forgeries (positions, claims by live, dead or unknown endpoints,
//!   owner words), including the state a crashed sender or receiver leaves behind. Every call
//!   must return without a panic or a hang; send errors hand the value back; batch counts stay
//!   within their slices; `len()` never exceeds the capacity; `Corrupted`, once reported by a
//!   handle, stays reported by that handle.

use std::collections::{HashMap, VecDeque};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use shmchan::layout::{self, RawHeader, endpoint};
use shmchan::mpmc::{Channel, Options, Receiver, Sender};
use shmchan::{
    Backing, OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError,
    TrySendError,
};

use super::{Input, RemoveOnDrop, WAITS, scratch_path, tiny_timeout};

/// Op codes (each op byte maps to `b % 16`; bits 4-5 pick handle `h`, bits 6-7 handle `j`).
pub mod op {
    /// `try_send` on sender `h`.
    pub const SEND: u8 = 0;
    /// `try_recv` on receiver `h`.
    pub const RECV: u8 = 1;
    /// `try_send_slice`; arg: count (mod 10).
    pub const SEND_SLICE: u8 = 2;
    /// `try_recv_into`; arg: buffer length (mod 10).
    pub const RECV_INTO: u8 = 3;
    /// `send_timeout`; arg: timeout byte.
    pub const SEND_TIMEOUT: u8 = 4;
    /// `recv_timeout`; arg: timeout byte.
    pub const RECV_TIMEOUT: u8 = 5;
    /// Model: `send` / `send_slice` when they cannot block; arg: count (mod 10).
    /// Hostile: a peer write; args: target, index, kind, value bytes.
    pub const SEND_BLOCKING: u8 = 6;
    /// Model: `recv` / `recv_into` when they cannot block; arg: buffer length (mod 10).
    /// Hostile: a crashed sender (arg bit 0 clear) or receiver; arg: entry, whether the
    /// position moved on.
    pub const RECV_BLOCKING: u8 = 7;
    /// Attach a sender into handle slot `h` (dropping what was there first).
    pub const ATTACH_SENDER: u8 = 8;
    /// Attach a receiver into handle slot `h`.
    pub const ATTACH_RECEIVER: u8 = 9;
    /// Clone sender `h` into slot `j`.
    pub const CLONE_SENDER: u8 = 10;
    /// Clone receiver `h` into slot `j`.
    pub const CLONE_RECEIVER: u8 = 11;
    /// Drop sender `h`.
    pub const DROP_SENDER: u8 = 12;
    /// Drop receiver `h`.
    pub const DROP_RECEIVER: u8 = 13;
    /// Compare `len`, `is_empty`, `lost_messages`, `capacity`, `max_endpoints` and every
    /// handle's `is_disconnected` with the model (hostile: call them, check the bounds).
    pub const OBSERVE: u8 = 14;
    /// Model: `set_wait_strategy` on sender and receiver `h`; arg: strategy.
    /// Hostile: open the segment again and attach through the new mapping from now on.
    pub const EXTRA: u8 = 15;
}

/// Bits of the flags byte.
pub mod flag {
    /// Bits 0..2: index into [`START_POSITIONS`](super::START_POSITIONS).
    pub const START_MASK: u8 = 3;
    /// Bits 2..4: index into `WAITS`.
    pub const WAIT_SHIFT: u8 = 2;
    /// Hostile mode: no sender at the start.
    pub const NO_SENDER: u8 = 0x10;
    /// Hostile mode: no receiver at the start.
    pub const NO_RECEIVER: u8 = 0x20;
    /// Hostile mode.
    pub const HOSTILE: u8 = 0x80;
}

/// Peer-write targets (first arg of a hostile poke, mod 16).
pub mod target {
    pub const LOST_WRITES: u8 = 0;
    pub const LOST_READS: u8 = 1;
    pub const POISONED: u8 = 2;
    pub const SENDERS_EVER: u8 = 3;
    pub const RECEIVERS_EVER: u8 = 4;
    pub const SENDERS_ATTACHED: u8 = 5;
    pub const RECEIVERS_ATTACHED: u8 = 6;
    pub const TAIL: u8 = 7;
    pub const HEAD: u8 = 8;
    /// `not_empty` waiters (even index arg) or epoch.
    pub const NOT_EMPTY: u8 = 9;
    /// `not_full` waiters (even index arg) or epoch.
    pub const NOT_FULL: u8 = 10;
    /// A registry word (index arg mod `2 * max_endpoints`: senders, then receivers).
    pub const REGISTRY: u8 = 11;
    /// A slot state word (index arg mod capacity); 12..=15 all do this.
    pub const SLOT: u8 = 12;
}

/// Forged-value kinds (third arg of a hostile poke, mod 8).
pub mod kind {
    /// The next 8 input bytes.
    pub const RAW: u8 = 0;
    /// The current value plus a signed byte.
    pub const NUDGE: u8 = 1;
    /// The tail plus a signed byte.
    pub const TAIL_REL: u8 = 2;
    /// The head plus a signed byte.
    pub const HEAD_REL: u8 = 3;
    /// A claim for writing: args endpoint index byte, delta byte (bit 0: from the head).
    pub const WRITING: u8 = 4;
    /// A claim for reading, likewise.
    pub const READING: u8 = 5;
    /// An owner word: arg picks vacant, ours, ours detached, dead, dead detached, our pid
    /// with another start time, or a pid beyond `i32::MAX`.
    pub const OWNER: u8 = 6;
    /// A state word of the targeted slot: free, full or free-next-lap for a position near
    /// the head or tail; arg picks which.
    pub const SLOT_STATE: u8 = 7;
}

/// Start positions: zero, before the 32-bit wrap, before the 48-bit wrap of the positions
/// recorded in claims, and near the largest start the channel accepts.
pub const START_POSITIONS: [u64; 4] = [0, (1 << 32) - 3, (1 << 48) - 5, (1 << 61) - 9];

/// Handle slots per role.
const HANDLES: usize = 4;

/// Most operations one input runs.
pub const MAX_MPMC_OPS: usize = 1024;

/// Counters of what `mpmc_ops` inputs reached.
#[derive(Debug, Default)]
pub struct MpmcStats {
    pub ops: u64,
    pub sent: u64,
    pub received: u64,
    pub full: u64,
    pub empty: u64,
    pub send_disconnected: u64,
    pub recv_disconnected: u64,
    /// Attaches refused with `TooManyEndpoints`.
    pub too_many: u64,
    /// Attaches after some entry had been detached.
    pub reattached: u64,
    pub clones: u64,
    /// Blocking `send`/`recv` calls (made only when the model says they return at once).
    pub blocking: u64,
    pub hostile_inputs: u64,
    pub pokes: u64,
    /// Forged crashed endpoints.
    pub crashes: u64,
    /// Handles that reported `Corrupted`.
    pub corrupted: u64,
    /// Sends or receives during which `lost_messages` grew (a dead claim was resolved).
    pub lost_resolved: u64,
    /// Segments opened again in hostile mode.
    pub reopened: u64,
}

impl MpmcStats {
    pub fn absorb(&mut self, o: MpmcStats) {
        self.ops += o.ops;
        self.sent += o.sent;
        self.received += o.received;
        self.full += o.full;
        self.empty += o.empty;
        self.send_disconnected += o.send_disconnected;
        self.recv_disconnected += o.recv_disconnected;
        self.too_many += o.too_many;
        self.reattached += o.reattached;
        self.clones += o.clones;
        self.blocking += o.blocking;
        self.hostile_inputs += o.hostile_inputs;
        self.pokes += o.pokes;
        self.crashes += o.crashes;
        self.corrupted += o.corrupted;
        self.lost_resolved += o.lost_resolved;
        self.reopened += o.reopened;
    }
}

/// Runs one `mpmc_ops` input: a config byte (capacity `2 << (c % 6)`, max endpoints
/// `1 + (c >> 5) % 4`), a flags byte ([`flag`]), then [`op`] codes with their arguments.
pub fn mpmc_ops(data: &[u8]) -> MpmcStats {
    let mut input = Input::new(data);
    let config = input.byte();
    let flags = input.byte();
    let capacity = 2usize << (config % 6);
    let max = 1 + u64::from(config >> 5) % 4;
    let start = START_POSITIONS[usize::from(flags & flag::START_MASK)];
    let wait = WAITS[usize::from(flags >> flag::WAIT_SHIFT) & 3];
    let opts = Options::new()
        .capacity(capacity)
        .max_endpoints(max)
        .start_position(start)
        .wait_strategy(wait);
    if flags & flag::HOSTILE != 0 {
        hostile(&mut input, &opts, flags, capacity as u64, max)
    } else {
        modelled(&mut input, &opts, capacity, max)
    }
}

// ------------------------------------------------------------------------------------------
// Model mode
// ------------------------------------------------------------------------------------------

/// A handle and the registry entry it shares with its clones.
struct Held<H> {
    handle: H,
    entry: usize,
}

/// One role's registry as the model sees it: clone counts of the entries held.
#[derive(Default)]
struct Entries {
    refs: HashMap<usize, usize>,
    ever: bool,
    detached: u64,
}

impl Entries {
    fn held(&self) -> u64 {
        self.refs.len() as u64
    }

    /// Whether this role counts as gone for the other side.
    fn gone(&self) -> bool {
        self.ever && self.refs.is_empty()
    }

    fn add_ref(&mut self, entry: usize) {
        *self.refs.entry(entry).or_default() += 1;
    }

    fn release(&mut self, entry: usize) {
        let n = self.refs.get_mut(&entry).expect("a held entry");
        *n -= 1;
        if *n == 0 {
            self.refs.remove(&entry);
            self.detached += 1;
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Sent(usize),
    Received(Vec<u64>),
    Full,
    Empty,
    Disconnected,
    Corrupted,
}

struct Model {
    queue: VecDeque<u64>,
    capacity: usize,
    next: u64,
    tx: Entries,
    rx: Entries,
    next_entry: usize,
}

impl Model {
    /// Sending up to `k` values (as many as fit), applied.
    fn send(&mut self, k: usize) -> Outcome {
        if k == 0 {
            return Outcome::Sent(0);
        }
        if self.rx.gone() {
            return Outcome::Disconnected;
        }
        let n = k.min(self.capacity - self.queue.len());
        if n == 0 {
            return Outcome::Full;
        }
        for _ in 0..n {
            self.queue.push_back(self.next);
            self.next += 1;
        }
        Outcome::Sent(n)
    }

    /// Receiving up to `k` values, applied.
    fn recv(&mut self, k: usize) -> Outcome {
        if k == 0 {
            return Outcome::Received(Vec::new());
        }
        let n = k.min(self.queue.len());
        if n > 0 {
            return Outcome::Received(self.queue.drain(..n).collect());
        }
        if self.tx.gone() { Outcome::Disconnected } else { Outcome::Empty }
    }

    fn new_entry(&mut self) -> usize {
        self.next_entry += 1;
        self.next_entry
    }
}

fn try_send_outcome(r: Result<(), TrySendError<u64>>, v: u64) -> Outcome {
    match r {
        Ok(()) => Outcome::Sent(1),
        Err(e) => {
            assert_eq!(e.into_inner(), v, "a send error hands the value back");
            match e {
                TrySendError::Full(_) => Outcome::Full,
                TrySendError::Disconnected(_) => Outcome::Disconnected,
                TrySendError::Corrupted(_) => Outcome::Corrupted,
            }
        }
    }
}

fn try_recv_outcome(e: TryRecvError) -> Outcome {
    match e {
        TryRecvError::Empty => Outcome::Empty,
        TryRecvError::Disconnected => Outcome::Disconnected,
        TryRecvError::Corrupted => Outcome::Corrupted,
    }
}

fn recv_timeout_outcome(e: RecvTimeoutError) -> Outcome {
    match e {
        RecvTimeoutError::Timeout => Outcome::Empty,
        RecvTimeoutError::Disconnected => Outcome::Disconnected,
        RecvTimeoutError::Corrupted => Outcome::Corrupted,
    }
}

fn slice_outcome(r: Result<usize, TrySendError<()>>) -> Outcome {
    match r {
        Ok(n) => Outcome::Sent(n),
        Err(TrySendError::Full(())) => Outcome::Full,
        Err(TrySendError::Disconnected(())) => Outcome::Disconnected,
        Err(TrySendError::Corrupted(())) => Outcome::Corrupted,
    }
}

fn modelled(input: &mut Input<'_>, opts: &Options, capacity: usize, max: u64) -> MpmcStats {
    let mut stats = MpmcStats::default();
    let chan = Channel::<u64>::create(Backing::Anonymous, opts).expect("create a channel");
    assert_eq!((chan.capacity(), chan.max_endpoints()), (capacity, max));
    let mut m = Model {
        queue: VecDeque::new(),
        capacity,
        next: 0,
        tx: Entries::default(),
        rx: Entries::default(),
        next_entry: 0,
    };
    let mut txs: [Option<Held<Sender<u64>>>; HANDLES] = Default::default();
    let mut rxs: [Option<Held<Receiver<u64>>>; HANDLES] = Default::default();

    for _ in 0..MAX_MPMC_OPS {
        let Some(b) = input.u8() else { break };
        stats.ops += 1;
        let code = b % 16;
        let h = usize::from(b >> 4) & 3;
        let j = usize::from(b >> 6);
        let (got, want) = match code {
            op::SEND | op::SEND_TIMEOUT => {
                let t = (code == op::SEND_TIMEOUT).then(|| tiny_timeout(input.byte()));
                let Some(tx) = txs[h].as_mut() else { continue };
                let v = m.next;
                let got = match t {
                    None => try_send_outcome(tx.handle.try_send(v), v),
                    Some(t) => match tx.handle.send_timeout(v, t) {
                        Ok(()) => Outcome::Sent(1),
                        Err(e) => {
                            assert_eq!(e.into_inner(), v, "send_timeout hands the value back");
                            match e {
                                SendTimeoutError::Timeout(_) => Outcome::Full,
                                SendTimeoutError::Disconnected(_) => Outcome::Disconnected,
                                SendTimeoutError::Corrupted(_) => Outcome::Corrupted,
                            }
                        }
                    },
                };
                (got, m.send(1))
            }
            op::RECV | op::RECV_TIMEOUT => {
                let t = (code == op::RECV_TIMEOUT).then(|| tiny_timeout(input.byte()));
                let Some(rx) = rxs[h].as_mut() else { continue };
                let r = match t {
                    None => rx.handle.try_recv().map_err(try_recv_outcome),
                    Some(t) => rx.handle.recv_timeout(t).map_err(recv_timeout_outcome),
                };
                (r.map_or_else(|e| e, |v| Outcome::Received(vec![v])), m.recv(1))
            }
            op::SEND_SLICE => {
                let k = usize::from(input.byte() % 10);
                let Some(tx) = txs[h].as_mut() else { continue };
                let values: Vec<u64> = (m.next..m.next + k as u64).collect();
                (slice_outcome(tx.handle.try_send_slice(&values)), m.send(k))
            }
            op::RECV_INTO => {
                let k = usize::from(input.byte() % 10);
                let Some(rx) = rxs[h].as_mut() else { continue };
                let mut buf = vec![u64::MAX; k];
                let got = match rx.handle.try_recv_into(&mut buf) {
                    Ok(n) if n <= k => Outcome::Received(buf[..n].to_vec()),
                    Ok(n) => panic!("received {n} into a buffer of {k}"),
                    Err(e) => try_recv_outcome(e),
                };
                (got, m.recv(k))
            }
            op::SEND_BLOCKING => {
                let k = usize::from(input.byte() % 10);
                let Some(tx) = txs[h].as_mut() else { continue };
                if !m.rx.gone() && m.queue.len() + k > capacity {
                    continue; // it would block
                }
                stats.blocking += 1;
                let got = if k == 1 {
                    let v = m.next;
                    match tx.handle.send(v) {
                        Ok(()) => Outcome::Sent(1),
                        Err(e) => {
                            assert_eq!(e.into_inner(), v, "send hands the value back");
                            match e {
                                SendError::Disconnected(_) => Outcome::Disconnected,
                                SendError::Corrupted(_) => Outcome::Corrupted,
                            }
                        }
                    }
                } else {
                    let values: Vec<u64> = (m.next..m.next + k as u64).collect();
                    match tx.handle.send_slice(&values) {
                        Ok(()) => Outcome::Sent(k),
                        Err(SendError::Disconnected(0)) => Outcome::Disconnected,
                        Err(e) => panic!("send_slice of {k}: {e:?}"),
                    }
                };
                (got, m.send(k))
            }
            op::RECV_BLOCKING => {
                let k = usize::from(input.byte() % 10);
                let Some(rx) = rxs[h].as_mut() else { continue };
                if k > 0 && m.queue.is_empty() && !m.tx.gone() {
                    continue; // it would block
                }
                stats.blocking += 1;
                let got = if k == 1 {
                    match rx.handle.recv() {
                        Ok(v) => Outcome::Received(vec![v]),
                        Err(RecvError::Disconnected) => Outcome::Disconnected,
                        Err(RecvError::Corrupted) => Outcome::Corrupted,
                    }
                } else {
                    let mut buf = vec![u64::MAX; k];
                    match rx.handle.recv_into(&mut buf) {
                        Ok(n) if n <= k => Outcome::Received(buf[..n].to_vec()),
                        Ok(n) => panic!("received {n} into a buffer of {k}"),
                        Err(RecvError::Disconnected) => Outcome::Disconnected,
                        Err(RecvError::Corrupted) => Outcome::Corrupted,
                    }
                };
                (got, m.recv(k))
            }
            op::ATTACH_SENDER => {
                if let Some(old) = txs[h].take() {
                    m.tx.release(old.entry);
                }
                let want_ok = m.tx.held() < max;
                stats.reattached += u64::from(want_ok && m.tx.detached > 0);
                match chan.sender() {
                    Ok(handle) => {
                        assert!(want_ok, "attached a sender beyond {max} entries");
                        let entry = m.new_entry();
                        m.tx.add_ref(entry);
                        m.tx.ever = true;
                        txs[h] = Some(Held { handle, entry });
                    }
                    Err(OpenError::TooManyEndpoints { max: got }) => {
                        assert!(!want_ok, "TooManyEndpoints with {} of {max} held", m.tx.held());
                        assert_eq!(got, max);
                        stats.too_many += 1;
                    }
                    Err(e) => panic!("attach a sender: {e}"),
                }
                continue;
            }
            op::ATTACH_RECEIVER => {
                if let Some(old) = rxs[h].take() {
                    m.rx.release(old.entry);
                }
                let want_ok = m.rx.held() < max;
                stats.reattached += u64::from(want_ok && m.rx.detached > 0);
                match chan.receiver() {
                    Ok(handle) => {
                        assert!(want_ok, "attached a receiver beyond {max} entries");
                        let entry = m.new_entry();
                        m.rx.add_ref(entry);
                        m.rx.ever = true;
                        rxs[h] = Some(Held { handle, entry });
                    }
                    Err(OpenError::TooManyEndpoints { max: got }) => {
                        assert!(!want_ok, "TooManyEndpoints with {} of {max} held", m.rx.held());
                        assert_eq!(got, max);
                        stats.too_many += 1;
                    }
                    Err(e) => panic!("attach a receiver: {e}"),
                }
                continue;
            }
            op::CLONE_SENDER => {
                let Some(src) = txs[h].as_ref() else { continue };
                let (handle, entry) = (src.handle.clone(), src.entry);
                m.tx.add_ref(entry);
                // The replaced handle goes after the clone exists: a shared entry stays held.
                if let Some(old) = txs[j].replace(Held { handle, entry }) {
                    let old_entry = old.entry;
                    drop(old);
                    m.tx.release(old_entry);
                }
                stats.clones += 1;
                continue;
            }
            op::CLONE_RECEIVER => {
                let Some(src) = rxs[h].as_ref() else { continue };
                let (handle, entry) = (src.handle.clone(), src.entry);
                m.rx.add_ref(entry);
                if let Some(old) = rxs[j].replace(Held { handle, entry }) {
                    let old_entry = old.entry;
                    drop(old);
                    m.rx.release(old_entry);
                }
                stats.clones += 1;
                continue;
            }
            op::DROP_SENDER => {
                if let Some(old) = txs[h].take() {
                    drop(old.handle);
                    m.tx.release(old.entry);
                }
                continue;
            }
            op::DROP_RECEIVER => {
                if let Some(old) = rxs[h].take() {
                    drop(old.handle);
                    m.rx.release(old.entry);
                }
                continue;
            }
            op::OBSERVE => {
                assert_eq!(chan.len(), m.queue.len(), "len");
                assert_eq!(chan.is_empty(), m.queue.is_empty(), "is_empty");
                assert_eq!(chan.lost_messages(), 0, "lost_messages on a healthy channel");
                assert_eq!((chan.capacity(), chan.max_endpoints()), (capacity, max));
                for tx in txs.iter_mut().flatten() {
                    assert_eq!(tx.handle.is_disconnected(), m.rx.gone(), "sender disconnected");
                }
                for rx in rxs.iter_mut().flatten() {
                    assert_eq!(rx.handle.is_disconnected(), m.tx.gone(), "receiver disconnected");
                }
                continue;
            }
            op::EXTRA => {
                let wait = WAITS[usize::from(input.byte()) % WAITS.len()];
                if let Some(tx) = txs[h].as_mut() {
                    tx.handle.set_wait_strategy(wait);
                }
                if let Some(rx) = rxs[h].as_mut() {
                    rx.handle.set_wait_strategy(wait);
                }
                continue;
            }
            _ => unreachable!("op codes are 0..16"),
        };
        match &want {
            Outcome::Sent(n) => stats.sent += *n as u64,
            Outcome::Received(v) => stats.received += v.len() as u64,
            Outcome::Full => stats.full += 1,
            Outcome::Empty => stats.empty += 1,
            Outcome::Disconnected
                if matches!(
                    code,
                    op::SEND | op::SEND_SLICE | op::SEND_TIMEOUT | op::SEND_BLOCKING
                ) =>
            {
                stats.send_disconnected += 1
            }
            Outcome::Disconnected => stats.recv_disconnected += 1,
            Outcome::Corrupted => {}
        }
        assert_eq!(got, want, "op {code} on handle {h} (capacity {capacity}, max {max})");
    }

    // Whatever the model still holds comes out, in order, through any receiver.
    if rxs.iter().all(Option::is_none) && m.rx.held() < max {
        let handle = chan.receiver().expect("a free receiver entry attaches");
        let entry = m.new_entry();
        m.rx.add_ref(entry);
        m.rx.ever = true;
        rxs[0] = Some(Held { handle, entry });
    }
    if let Some(rx) = rxs.iter_mut().flatten().next() {
        let mut rest = Vec::new();
        while let Ok(v) = rx.handle.try_recv() {
            rest.push(v);
            assert!(rest.len() <= capacity, "drained more than the capacity");
        }
        assert_eq!(rest, Vec::from(std::mem::take(&mut m.queue)), "final drain");
        let end =
            rx.handle.try_recv().map_or_else(try_recv_outcome, |v| Outcome::Received(vec![v]));
        assert_eq!(end, m.recv(1), "after the final drain");
    }
    stats
}

// ------------------------------------------------------------------------------------------
// Hostile mode
// ------------------------------------------------------------------------------------------

/// Byte offsets of the control block's words (see `src/ring/mpmc.rs`).
const CONTROL: u64 = layout::CONTROL_OFFSET;
const REGISTRY: u64 = CONTROL + 5 * layout::LINE;
const CLAIM: u64 = 1 << 63;
const READING: u64 = 1 << 62;
const POS_MASK: u64 = (1 << 48) - 1;

/// An owner word that no live process holds: a pid beyond any `pid_max`.
const DEAD_OWNER: u64 = 0x0000_0001_3fff_fff0;

/// This process's owner word, as the registry records it (pid and the low 31 bits of its
/// start time from `/proc/self/stat`).
fn my_owner_word() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    // Field 22 (start time) is the 20th after the command name.
    let start: u64 = after.split(' ').nth(19).and_then(|f| f.parse().ok()).expect("start time");
    endpoint::attached(std::process::id(), start)
}

fn claim_word(index: u64, position: u64, reading: bool) -> u64 {
    CLAIM | if reading { READING } else { 0 } | (index & 0x3fff) << 48 | (position & POS_MASK)
}

/// The segment file as the peer sees it.
struct Peer {
    file: std::fs::File,
    slots_offset: u64,
    stride: u64,
    capacity: u64,
    max: u64,
    me: u64,
}

impl Peer {
    fn read(&self, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.file.read_exact_at(&mut b, offset).expect("pread the segment");
        u64::from_le_bytes(b)
    }

    fn write(&self, offset: u64, value: u64, width: usize) {
        self.file.write_all_at(&value.to_le_bytes()[..width], offset).expect("pwrite the segment");
    }

    fn slot(&self, position: u64) -> u64 {
        self.slots_offset + (position & (self.capacity - 1)) * self.stride
    }

    fn tail(&self) -> u64 {
        self.read(CONTROL + layout::LINE)
    }

    fn head(&self) -> u64 {
        self.read(CONTROL + 2 * layout::LINE)
    }

    /// Offset and width of a poke target.
    fn target(&self, t: u8, index: u8) -> (u64, usize) {
        let i = u64::from(index);
        match t % 16 {
            target::LOST_WRITES => (CONTROL, 8),
            target::LOST_READS => (CONTROL + 8, 8),
            target::POISONED => (CONTROL + 16, 4),
            target::SENDERS_EVER => (CONTROL + 20, 4),
            target::RECEIVERS_EVER => (CONTROL + 24, 4),
            target::SENDERS_ATTACHED => (CONTROL + 28, 4),
            target::RECEIVERS_ATTACHED => (CONTROL + 32, 4),
            target::TAIL => (CONTROL + layout::LINE, 8),
            target::HEAD => (CONTROL + 2 * layout::LINE, 8),
            target::NOT_EMPTY => (CONTROL + 3 * layout::LINE + 4 * (i & 1), 4),
            target::NOT_FULL => (CONTROL + 4 * layout::LINE + 4 * (i & 1), 4),
            target::REGISTRY => (REGISTRY + 8 * (i % (2 * self.max)), 8),
            _ => (self.slot(i), 8),
        }
    }

    /// A forged value for the word at `at` (a slot's state word when `slot` is `Some`).
    fn forge(&self, input: &mut Input<'_>, at: u64, slot: Option<u64>) -> u64 {
        let k = input.byte();
        let arg = input.byte();
        let delta = i64::from(arg as i8);
        match k % 8 {
            kind::RAW => input.u64(),
            kind::NUDGE => self.read(at).wrapping_add_signed(delta),
            kind::TAIL_REL => self.tail().wrapping_add_signed(delta),
            kind::HEAD_REL => self.head().wrapping_add_signed(delta),
            kind::WRITING | kind::READING => {
                let index = u64::from(input.byte()) % (self.max + 2);
                let base = if arg & 1 == 0 { self.tail() } else { self.head() };
                let mut position = base.wrapping_add_signed(delta >> 1);
                if let Some(s) = slot {
                    // Keep the claim consistent with its slot, as a real peer's would be.
                    position = (position & !(self.capacity - 1)) | s;
                }
                claim_word(index, position, k % 8 == kind::READING)
            }
            kind::OWNER => match arg % 7 {
                0 => endpoint::VACANT,
                1 => self.me,
                2 => self.me | endpoint::DETACHED,
                3 => DEAD_OWNER,
                4 => DEAD_OWNER | endpoint::DETACHED,
                5 => self.me ^ (1 << 40),
                _ => 0x0000_0000_8000_0001,
            },
            kind::SLOT_STATE => {
                let base = if arg & 1 == 0 { self.tail() } else { self.head() };
                let mut position = base.wrapping_add_signed(delta >> 3);
                if let Some(s) = slot {
                    position = (position & !(self.capacity - 1)) | s;
                }
                match (arg >> 1) % 3 {
                    0 => position,
                    1 => position.wrapping_add(1),
                    _ => position.wrapping_add(self.capacity),
                }
            }
            _ => unreachable!("kinds are 0..8"),
        }
    }
}

/// Tracks that a handle, once it reported `Corrupted`, keeps doing so.
#[derive(Default)]
struct Sticky(bool);

impl Sticky {
    fn saw(&mut self, corrupted: bool, what: &str, stats: &mut MpmcStats) {
        assert!(!self.0 || corrupted, "{what} on a handle that reported Corrupted did not");
        stats.corrupted += u64::from(corrupted && !self.0);
        self.0 |= corrupted;
    }
}

struct Hostile<H> {
    handle: H,
    bad: Sticky,
}

fn hostile(input: &mut Input<'_>, opts: &Options, flags: u8, capacity: u64, max: u64) -> MpmcStats {
    let mut stats = MpmcStats { hostile_inputs: 1, ..Default::default() };
    let path = scratch_path("mpmc");
    let _guard = RemoveOnDrop(path.clone());
    let opts = opts.clone().remove_on_drop(false).open_timeout(Duration::ZERO);
    let mut chan = Channel::<u64>::create(Backing::File(path.clone()), &opts)
        .expect("create a channel in a file");
    let file = OpenOptions::new().read(true).write(true).open(&path).expect("open the segment");
    let mut header = [0u8; size_of::<RawHeader>()];
    file.read_exact_at(&mut header, 0).expect("read the header");
    let h: RawHeader = bytemuck::pod_read_unaligned(&header);
    let peer = Peer {
        file,
        slots_offset: h.slots_offset,
        stride: h.slot_stride,
        capacity,
        max,
        me: my_owner_word(),
    };

    let mut txs: [Option<Hostile<Sender<u64>>>; HANDLES] = Default::default();
    let mut rxs: [Option<Hostile<Receiver<u64>>>; HANDLES] = Default::default();
    if flags & flag::NO_SENDER == 0 {
        txs[0] = chan.sender().ok().map(|handle| Hostile { handle, bad: Sticky::default() });
    }
    if flags & flag::NO_RECEIVER == 0 {
        rxs[0] = chan.receiver().ok().map(|handle| Hostile { handle, bad: Sticky::default() });
    }
    let mut next = 0u64;

    for _ in 0..MAX_MPMC_OPS / 4 {
        let Some(b) = input.u8() else { break };
        stats.ops += 1;
        let code = b % 16;
        let h = usize::from(b >> 4) & 3;
        let j = usize::from(b >> 6);
        let lost_before = chan.lost_messages();
        match code {
            op::SEND | op::SEND_TIMEOUT => {
                let t = (code == op::SEND_TIMEOUT).then(|| tiny_timeout(input.byte()));
                let Some(tx) = txs[h].as_mut() else { continue };
                next += 1;
                let (sent, corrupted, back) = match t {
                    None => match tx.handle.try_send(next) {
                        Ok(()) => (true, false, None),
                        Err(e) => {
                            (false, matches!(e, TrySendError::Corrupted(_)), Some(e.into_inner()))
                        }
                    },
                    Some(t) => match tx.handle.send_timeout(next, t) {
                        Ok(()) => (true, false, None),
                        Err(e) => (
                            false,
                            matches!(e, SendTimeoutError::Corrupted(_)),
                            Some(e.into_inner()),
                        ),
                    },
                };
                assert!(back.is_none_or(|v| v == next), "a send error hands the value back");
                stats.sent += u64::from(sent);
                tx.bad.saw(corrupted, "send", &mut stats);
            }
            op::RECV | op::RECV_TIMEOUT => {
                let t = (code == op::RECV_TIMEOUT).then(|| tiny_timeout(input.byte()));
                let Some(rx) = rxs[h].as_mut() else { continue };
                let r = match t {
                    None => rx.handle.try_recv().map_err(|e| e == TryRecvError::Corrupted),
                    Some(t) => {
                        rx.handle.recv_timeout(t).map_err(|e| e == RecvTimeoutError::Corrupted)
                    }
                };
                stats.received += u64::from(r.is_ok());
                rx.bad.saw(r == Err(true), "recv", &mut stats);
            }
            op::SEND_SLICE => {
                let k = usize::from(input.byte() % 10);
                let Some(tx) = txs[h].as_mut() else { continue };
                let values: Vec<u64> = (next..next + k as u64).collect();
                next += k as u64;
                let r = tx.handle.try_send_slice(&values);
                if let Ok(n) = r {
                    assert!(n <= k && (n > 0 || k == 0), "try_send_slice sent {n} of {k}");
                    stats.sent += n as u64;
                }
                if k > 0 {
                    tx.bad.saw(r == Err(TrySendError::Corrupted(())), "try_send_slice", &mut stats);
                }
            }
            op::RECV_INTO => {
                let k = usize::from(input.byte() % 10);
                let Some(rx) = rxs[h].as_mut() else { continue };
                let mut buf = vec![0u64; k];
                let r = rx.handle.try_recv_into(&mut buf);
                if let Ok(n) = r {
                    assert!(n <= k && (n > 0 || k == 0), "try_recv_into got {n} into {k}");
                    stats.received += n as u64;
                }
                if k > 0 {
                    rx.bad.saw(r == Err(TryRecvError::Corrupted), "try_recv_into", &mut stats);
                }
            }
            op::SEND_BLOCKING => {
                // A peer write.
                let (t, index) = (input.byte(), input.byte());
                let (at, width) = peer.target(t, index);
                let slot = (t % 16 >= target::SLOT).then(|| u64::from(index) % capacity);
                let value = peer.forge(input, at, slot);
                peer.write(at, value, width);
                stats.pokes += 1;
            }
            op::RECV_BLOCKING => {
                // The state a crashed sender (or receiver) leaves: its owner word says dead,
                // its claim sits at the tail (head), which it may have moved on.
                let arg = input.byte();
                let receiver = arg & 1 != 0;
                let entry = u64::from(arg >> 2) % max;
                let word = if arg & 2 != 0 { DEAD_OWNER } else { 0x0000_0000_8000_0001 };
                let registry = REGISTRY + 8 * (entry + if receiver { max } else { 0 });
                peer.write(registry, word, 8);
                let position_at =
                    if receiver { CONTROL + 2 * layout::LINE } else { CONTROL + layout::LINE };
                let position = peer.read(position_at);
                peer.write(peer.slot(position), claim_word(entry, position, receiver), 8);
                if arg & 0x80 == 0 {
                    peer.write(position_at, position.wrapping_add(1), 8);
                }
                stats.crashes += 1;
                stats.pokes += 1;
            }
            op::ATTACH_SENDER => {
                txs[h] = None;
                match chan.sender() {
                    Ok(handle) => txs[h] = Some(Hostile { handle, bad: Sticky::default() }),
                    Err(e) => {
                        stats.too_many += u64::from(matches!(e, OpenError::TooManyEndpoints { .. }))
                    }
                }
            }
            op::ATTACH_RECEIVER => {
                rxs[h] = None;
                match chan.receiver() {
                    Ok(handle) => rxs[h] = Some(Hostile { handle, bad: Sticky::default() }),
                    Err(e) => {
                        stats.too_many += u64::from(matches!(e, OpenError::TooManyEndpoints { .. }))
                    }
                }
            }
            op::CLONE_SENDER => {
                let Some(src) = txs[h].as_ref() else { continue };
                let handle = src.handle.clone();
                txs[j] = Some(Hostile { handle, bad: Sticky::default() });
                stats.clones += 1;
            }
            op::CLONE_RECEIVER => {
                let Some(src) = rxs[h].as_ref() else { continue };
                let handle = src.handle.clone();
                rxs[j] = Some(Hostile { handle, bad: Sticky::default() });
                stats.clones += 1;
            }
            op::DROP_SENDER => txs[h] = None,
            op::DROP_RECEIVER => rxs[h] = None,
            op::OBSERVE => {
                assert!(chan.len() <= capacity as usize, "len {} beyond {capacity}", chan.len());
                let _ = (chan.is_empty(), chan.lost_messages());
                assert_eq!((chan.capacity() as u64, chan.max_endpoints()), (capacity, max));
                for tx in txs.iter_mut().flatten() {
                    let _ = tx.handle.is_disconnected();
                }
                for rx in rxs.iter_mut().flatten() {
                    let _ = rx.handle.is_disconnected();
                }
            }
            op::EXTRA => match Channel::<u64>::open(Backing::File(path.clone()), &opts) {
                Ok(c) => {
                    chan = c;
                    stats.reopened += 1;
                }
                Err(e) => panic!("reopening a segment whose header nobody wrote: {e}"),
            },
            _ => unreachable!("op codes are 0..16"),
        }
        if matches!(
            code,
            op::SEND
                | op::SEND_TIMEOUT
                | op::RECV
                | op::RECV_TIMEOUT
                | op::SEND_SLICE
                | op::RECV_INTO
        ) && chan.lost_messages() > lost_before
        {
            stats.lost_resolved += 1;
        }
    }
    stats
}
