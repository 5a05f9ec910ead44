//! Fuzz logic of the MPMC channel (`shmchan::mpmc`), for the `mpmc_ops` target, the seed
//! generator and the corpus replay test.
//!
//! [`mpmc_ops`] has two modes, chosen by bit 7 of the flags byte:
//! - model: an operation sequence on a healthy anonymous channel with up to four sender and
//!   four receiver handles in play (attached, cloned, dropped, re-attached) plus a pile of
//!   spare clones per role, every result checked against a model: a `VecDeque` in global send
//!   order (with one thread, MPMC is FIFO), the registry entries each handle shares with its
//!   clones, and the disconnect rules of the module docs. It reaches `Full`, `Empty`,
//!   `Disconnected` on both sides, `TooManyEndpoints`, and entries with more clones than
//!   intent lanes (clones sharing a lane, taking turns).
//! - hostile: a channel in a scratch file whose control block, registry (owner words and
//!   intent lanes) and slot stamps a "peer" overwrites between non-blocking (or tiny-timeout)
//!   operations, with raw bytes or with plausible forgeries (positions, stamps for the right or
//!   the wrong position and slot, intents, owner words), including the state a sender or a
//!   receiver leaves when it crashes mid-claim: its entry owned by a dead process, one of its
//!   lanes naming position `p`, `tail`/`head` moved past `p`, the stamp as the claim left it.
//!   Every call must return without a panic or a hang; send errors hand the value back; batch
//!   counts stay within their slices; `len()` never exceeds the capacity; `Corrupted`, once
//!   reported by a handle, stays reported by that handle. While every peer write so far is one
//!   a correct (if crashing) peer could make, more holds: no handle reports `Corrupted`, the
//!   values received are, in order, a subsequence of the values sent (nothing invented,
//!   repeated or reordered), and no message is counted lost unless a dead endpoint's claim was
//!   forged.

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
    /// Hostile: a peer write; args: target, index, kind, the kind's value bytes.
    pub const SEND_BLOCKING: u8 = 6;
    /// Model: `recv` / `recv_into` when they cannot block; arg: buffer length (mod 10).
    /// Hostile: a crashed sender or receiver; args: two bytes (see `Peer::crash`).
    pub const RECV_BLOCKING: u8 = 7;
    /// Attach a sender into handle slot `h` (dropping what was there first).
    pub const ATTACH_SENDER: u8 = 8;
    /// Attach a receiver into handle slot `h`.
    pub const ATTACH_RECEIVER: u8 = 9;
    /// Clone sender `h` into slot `j`. Model, with `j == h`: the clone goes onto the spare
    /// pile, and slot `h` swaps its handle with the oldest spare.
    pub const CLONE_SENDER: u8 = 10;
    /// Clone receiver `h` into slot `j` (model, `j == h`: as for senders).
    pub const CLONE_RECEIVER: u8 = 11;
    /// Drop sender `h`.
    pub const DROP_SENDER: u8 = 12;
    /// Drop receiver `h`.
    pub const DROP_RECEIVER: u8 = 13;
    /// Compare `len`, `is_empty`, `lost_messages`, `capacity`, `max_endpoints` and every
    /// handle's `is_disconnected` with the model (hostile: call them, check the bounds; with
    /// `h == 3`, first let `PAUSE` pass, so that a handle that met a stuck claim looks its
    /// holder up on its next try).
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
    /// A registry word: the index arg's high nibble picks the entry (mod `2 * max_endpoints`:
    /// senders, then receivers), its low nibble the word (0: owner, 1..=15: intent lanes).
    pub const REGISTRY: u8 = 11;
    /// A slot's stamp (index arg mod capacity); 12..=15 all do this.
    pub const SLOT: u8 = 12;
}

/// Forged-value kinds (third arg of a hostile poke, mod 8), each followed by an `arg` byte;
/// where a position `p` is involved it is the tail (arg bit 0 clear) or the head, plus
/// `arg >> 1` (signed).
pub mod kind {
    /// The 8 input bytes after arg.
    pub const RAW: u8 = 0;
    /// The current value plus arg (signed).
    pub const NUDGE: u8 = 1;
    /// The tail plus arg (signed).
    pub const TAIL_REL: u8 = 2;
    /// The head plus arg (signed).
    pub const HEAD_REL: u8 = 3;
    /// An intent word; one more byte picks: idle, `p`, `p` plus `arg >> 1` laps, or a word
    /// no position has (`p` with bit 62 set).
    pub const INTENT: u8 = 4;
    /// A stamp; one more byte: bits 0-1 pick free `p`, full (`p + 1`), lost (`LOST | p`) or
    /// free for the next lap (`p + capacity`); on a slot target `p` is first moved into the
    /// targeted slot's lap position unless bit 2 is set (a stamp of another slot).
    pub const STAMP: u8 = 5;
    /// An owner word: arg picks vacant, ours, ours detached, dead, dead detached, our pid
    /// with another start time, or a pid beyond `i32::MAX`.
    pub const OWNER: u8 = 6;
    /// The current value with bit `arg % 64` flipped.
    pub const FLIP: u8 = 7;
}

/// Start positions: zero, around the 32-bit and 48-bit wraps, and near the largest start
/// the channel accepts (positions are 62-bit).
pub const START_POSITIONS: [u64; 4] = [0, (1 << 32) - 3, (1 << 48) - 5, (1 << 61) - 9];

/// Handle slots per role.
const HANDLES: usize = 4;

/// Spare clones per role kept by model mode (more than [`LANES`], so lanes run out).
const SPARES: usize = 20;

/// Most operations one input runs.
pub const MAX_MPMC_OPS: usize = 1024;

/// Intent lanes per registry entry (`src/ring/mpmc.rs`: one line, after the owner word).
pub const LANES: u64 = layout::LINE / 8 - 1;

/// How long a hostile pause lasts: past the 1 ms a handle lets a claim stay stuck before it
/// looks its holder up in the registry.
pub const PAUSE: Duration = Duration::from_micros(1100);

/// Most pauses one hostile input takes.
const MAX_PAUSES: u32 = 3;

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
    /// Model: clones made while every intent lane of their entry was in use (they share one).
    pub shared_lanes: u64,
    /// Blocking `send`/`recv` calls (made only when the model says they return at once).
    pub blocking: u64,
    pub hostile_inputs: u64,
    pub pokes: u64,
    /// Forged crashed endpoints.
    pub crashes: u64,
    /// Forged crashes made while every peer write so far was one a correct peer could make
    /// (so the stronger checks applied to what followed).
    pub realistic_crashes: u64,
    /// Handles that reported `Corrupted`.
    pub corrupted: u64,
    /// Sends or receives during which `lost_messages` grew (a dead claim was resolved).
    pub lost_resolved: u64,
    /// Receives during which `lost_writes` grew (a dead sender's claim was skipped).
    pub lost_writes_skipped: u64,
    /// Sends during which `lost_reads` grew (a dead receiver's slot was freed).
    pub lost_reads_freed: u64,
    /// Attaches during which `lost_messages` grew (a dead entry's claims were resolved
    /// before it was taken over).
    pub resolved_on_attach: u64,
    /// Hostile pauses taken.
    pub pauses: u64,
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
        self.shared_lanes += o.shared_lanes;
        self.blocking += o.blocking;
        self.hostile_inputs += o.hostile_inputs;
        self.pokes += o.pokes;
        self.crashes += o.crashes;
        self.realistic_crashes += o.realistic_crashes;
        self.corrupted += o.corrupted;
        self.lost_resolved += o.lost_resolved;
        self.lost_writes_skipped += o.lost_writes_skipped;
        self.lost_reads_freed += o.lost_reads_freed;
        self.resolved_on_attach += o.resolved_on_attach;
        self.pauses += o.pauses;
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

/// A handle, the registry entry it shares with its clones, and the intent lane it claims
/// through (numbered by the model; the library may number them differently).
struct Held<H> {
    handle: H,
    entry: usize,
    lane: usize,
}

/// A registry entry held by handles: how many, and how many use each intent lane.
#[derive(Default)]
struct Entry {
    handles: usize,
    lane_users: [usize; LANES as usize],
}

/// One role's registry as the model sees it: the entries held.
#[derive(Default)]
struct Entries {
    held: HashMap<usize, Entry>,
    ever: bool,
    detached: u64,
}

impl Entries {
    fn held(&self) -> u64 {
        self.held.len() as u64
    }

    /// Whether this role counts as gone for the other side.
    fn gone(&self) -> bool {
        self.ever && self.held.is_empty()
    }

    /// A new handle on `entry`: a lane of its own while the entry has one free, else the lane
    /// `share` of the handle it was cloned from. Returns the lane and whether it is shared.
    fn add_handle(&mut self, entry: usize, share: usize) -> (usize, bool) {
        let e = self.held.entry(entry).or_default();
        e.handles += 1;
        let free = e.lane_users.iter().position(|&n| n == 0);
        let lane = free.unwrap_or(share);
        e.lane_users[lane] += 1;
        (lane, free.is_none())
    }

    fn release(&mut self, entry: usize, lane: usize) {
        let e = self.held.get_mut(&entry).expect("a held entry");
        e.handles -= 1;
        e.lane_users[lane] -= 1;
        if e.handles == 0 {
            self.held.remove(&entry);
            self.detached += 1;
        }
    }

    /// A handle goes away (its entry detaches with its last handle).
    fn drop_held<H>(&mut self, held: Held<H>) {
        let (entry, lane) = (held.entry, held.lane);
        drop(held.handle);
        self.release(entry, lane);
    }

    /// A clone of `src`, modelled: same entry, a lane as [`add_handle`](Self::add_handle)
    /// gives it.
    fn clone_of<H: Clone>(&mut self, src: &Held<H>, stats: &mut MpmcStats) -> Held<H> {
        let handle = src.handle.clone();
        let (lane, shared) = self.add_handle(src.entry, src.lane);
        stats.clones += 1;
        stats.shared_lanes += u64::from(shared);
        Held { handle, entry: src.entry, lane }
    }

    /// A clone into slot `j` (dropping what was there after the clone exists, so a shared
    /// entry stays held); onto its own slot, the clone goes onto the spare `pile` (the oldest
    /// spare dropped beyond [`SPARES`]) and the slot swaps its handle with the oldest spare,
    /// so that piles of clones of one entry outnumber its lanes and take turns on them.
    fn clone_into<H: Clone>(
        &mut self,
        slots: &mut [Option<Held<H>>; HANDLES],
        pile: &mut VecDeque<Held<H>>,
        (h, j): (usize, usize),
        stats: &mut MpmcStats,
    ) {
        let Some(src) = slots[h].as_ref() else { return };
        let clone = self.clone_of(src, stats);
        if h != j {
            if let Some(old) = slots[j].replace(clone) {
                self.drop_held(old);
            }
            return;
        }
        pile.push_back(clone);
        if pile.len() > SPARES {
            let oldest = pile.pop_front().expect("a pile beyond SPARES");
            self.drop_held(oldest);
        }
        if let (Some(slot), Some(spare)) = (slots[h].as_mut(), pile.front_mut()) {
            std::mem::swap(slot, spare);
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
    let mut spare_txs: VecDeque<Held<Sender<u64>>> = VecDeque::new();
    let mut spare_rxs: VecDeque<Held<Receiver<u64>>> = VecDeque::new();

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
                    m.tx.drop_held(old);
                }
                let want_ok = m.tx.held() < max;
                stats.reattached += u64::from(want_ok && m.tx.detached > 0);
                match chan.sender() {
                    Ok(handle) => {
                        assert!(want_ok, "attached a sender beyond {max} entries");
                        let entry = m.new_entry();
                        let (lane, _) = m.tx.add_handle(entry, 0);
                        m.tx.ever = true;
                        txs[h] = Some(Held { handle, entry, lane });
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
                    m.rx.drop_held(old);
                }
                let want_ok = m.rx.held() < max;
                stats.reattached += u64::from(want_ok && m.rx.detached > 0);
                match chan.receiver() {
                    Ok(handle) => {
                        assert!(want_ok, "attached a receiver beyond {max} entries");
                        let entry = m.new_entry();
                        let (lane, _) = m.rx.add_handle(entry, 0);
                        m.rx.ever = true;
                        rxs[h] = Some(Held { handle, entry, lane });
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
                m.tx.clone_into(&mut txs, &mut spare_txs, (h, j), &mut stats);
                continue;
            }
            op::CLONE_RECEIVER => {
                m.rx.clone_into(&mut rxs, &mut spare_rxs, (h, j), &mut stats);
                continue;
            }
            op::DROP_SENDER => {
                if let Some(old) = txs[h].take() {
                    m.tx.drop_held(old);
                }
                continue;
            }
            op::DROP_RECEIVER => {
                if let Some(old) = rxs[h].take() {
                    m.rx.drop_held(old);
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
    if rxs.iter().all(Option::is_none) && spare_rxs.is_empty() && m.rx.held() < max {
        let handle = chan.receiver().expect("a free receiver entry attaches");
        let entry = m.new_entry();
        let (lane, _) = m.rx.add_handle(entry, 0);
        m.rx.ever = true;
        rxs[0] = Some(Held { handle, entry, lane });
    }
    if let Some(rx) = rxs.iter_mut().flatten().chain(&mut spare_rxs).next() {
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
const LOST_WRITES_AT: u64 = CONTROL;
const LOST_READS_AT: u64 = CONTROL + 8;
const SENDERS_EVER_AT: u64 = CONTROL + 20;
const RECEIVERS_EVER_AT: u64 = CONTROL + 24;
const SENDERS_ATTACHED_AT: u64 = CONTROL + 28;
const RECEIVERS_ATTACHED_AT: u64 = CONTROL + 32;
const TAIL_AT: u64 = CONTROL + layout::LINE;
const HEAD_AT: u64 = CONTROL + 2 * layout::LINE;
/// The registry: `2 * max_endpoints` lines (senders, then receivers), each an owner word and
/// [`LANES`] intent words.
const REGISTRY: u64 = CONTROL + 5 * layout::LINE;

/// An intent word naming no position.
pub const IDLE: u64 = u64::MAX;
/// The stamp bit of a slot whose sender died holding it.
pub const LOST: u64 = 1 << 63;
/// Positions stay below this.
const MAX_POSITION: u64 = 1 << 62;

/// An owner word that no live process holds: a pid beyond any `pid_max`.
const DEAD_OWNER: u64 = 0x0000_0001_3fff_fff0;
/// An owner word with a pid beyond `i32::MAX` (no process has it).
const BEYOND_PID_RANGE: u64 = 0x0000_0000_8000_0001;
/// XORed into our own owner word: our pid with another start time (a process that died and
/// whose pid was reused by us).
const OTHER_START: u64 = 1 << 40;

/// This process's owner word, as the registry records it (pid and the low 31 bits of its
/// start time from `/proc/self/stat`).
fn my_owner_word() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    // Field 22 (start time) is the 20th after the command name.
    let start: u64 = after.split(' ').nth(19).and_then(|f| f.parse().ok()).expect("start time");
    endpoint::attached(std::process::id(), start)
}

/// What the peer's writes so far allow the harness to check.
struct Ledger {
    /// Every peer write so far is one a correct peer that may crash could make: no raw or
    /// forged word, only crashes at the tail or head as the claim protocol leaves them, in
    /// entries held by nobody else.
    realistic: bool,
    /// A forged crash left a claim to a dead endpoint (only then may messages be lost).
    dead_claims: bool,
    /// While realistic: the values sent (or published by a forged sender), not received yet,
    /// in position order. A crashed receiver may have taken some: they never arrive.
    pending: VecDeque<u64>,
}

impl Ledger {
    fn sent(&mut self, values: impl IntoIterator<Item = u64>) {
        if self.realistic {
            self.pending.extend(values);
        }
    }

    fn received(&mut self, v: u64) {
        if !self.realistic {
            return;
        }
        while let Some(next) = self.pending.pop_front() {
            if next == v {
                return;
            }
        }
        panic!("received {v}: never sent, already received, or out of order");
    }

    /// Checks what must hold while the peer behaved.
    fn check(&self, chan: &Channel<u64>, corrupted: bool, what: &str) {
        if self.realistic {
            assert!(!corrupted, "{what} reported Corrupted, though every peer write was correct");
            if !self.dead_claims {
                assert_eq!(chan.lost_messages(), 0, "{what}: lost messages without a dead claim");
            }
        }
    }
}

/// The segment file as the peer sees it.
struct Peer {
    file: std::fs::File,
    slots_offset: u64,
    stride: u64,
    /// Offset of the payload in a slot.
    payload: u64,
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

    fn read_u32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.file.read_exact_at(&mut b, offset).expect("pread the segment");
        u32::from_le_bytes(b)
    }

    fn write(&self, offset: u64, value: u64, width: usize) {
        self.file.write_all_at(&value.to_le_bytes()[..width], offset).expect("pwrite the segment");
    }

    fn slot(&self, position: u64) -> u64 {
        self.slots_offset + (position & (self.capacity - 1)) * self.stride
    }

    fn tail(&self) -> u64 {
        self.read(TAIL_AT)
    }

    fn head(&self) -> u64 {
        self.read(HEAD_AT)
    }

    /// `lost_writes` and `lost_reads`.
    fn lost(&self) -> (u64, u64) {
        (self.read(LOST_WRITES_AT), self.read(LOST_READS_AT))
    }

    /// Offset of word `word` (0: owner, 1..=LANES: lanes) of registry entry `entry` of a role.
    fn registry(&self, receiver: bool, entry: u64, word: u64) -> u64 {
        let line = entry + if receiver { self.max } else { 0 };
        REGISTRY + line * layout::LINE + 8 * word
    }

    /// Offset of intent lane `lane` (0-based) of an entry.
    fn lane(&self, receiver: bool, entry: u64, lane: u64) -> u64 {
        self.registry(receiver, entry, 1 + lane)
    }

    /// Whether `word` is one of the owner words of dead processes the peer forges.
    fn dead(&self, word: u64) -> bool {
        word == DEAD_OWNER || word == BEYOND_PID_RANGE || word == self.me ^ OTHER_START
    }

    /// Offset and width of a poke target.
    fn target(&self, t: u8, index: u8) -> (u64, usize) {
        let i = u64::from(index);
        match t % 16 {
            target::LOST_WRITES => (LOST_WRITES_AT, 8),
            target::LOST_READS => (LOST_READS_AT, 8),
            target::POISONED => (CONTROL + 16, 4),
            target::SENDERS_EVER => (SENDERS_EVER_AT, 4),
            target::RECEIVERS_EVER => (RECEIVERS_EVER_AT, 4),
            target::SENDERS_ATTACHED => (SENDERS_ATTACHED_AT, 4),
            target::RECEIVERS_ATTACHED => (RECEIVERS_ATTACHED_AT, 4),
            target::TAIL => (TAIL_AT, 8),
            target::HEAD => (HEAD_AT, 8),
            target::NOT_EMPTY => (CONTROL + 3 * layout::LINE + 4 * (i & 1), 4),
            target::NOT_FULL => (CONTROL + 4 * layout::LINE + 4 * (i & 1), 4),
            target::REGISTRY => {
                let line = (i >> 4) % (2 * self.max);
                (REGISTRY + line * layout::LINE + 8 * (i & 15), 8)
            }
            _ => (self.slot(i), 8),
        }
    }

    /// A forged value for the word at `at` (a slot's stamp when `slot` is `Some`).
    fn forge(&self, input: &mut Input<'_>, at: u64, slot: Option<u64>) -> u64 {
        let k = input.byte() % 8;
        let arg = input.byte();
        let delta = i64::from(arg as i8);
        // A position near the tail or the head.
        let near = || {
            let base = if arg & 1 == 0 { self.tail() } else { self.head() };
            base.wrapping_add_signed(delta >> 1)
        };
        match k {
            kind::RAW => input.u64(),
            kind::NUDGE => self.read(at).wrapping_add_signed(delta),
            kind::TAIL_REL => self.tail().wrapping_add_signed(delta),
            kind::HEAD_REL => self.head().wrapping_add_signed(delta),
            kind::INTENT => match input.byte() % 4 {
                0 => IDLE,
                1 => near(),
                2 => near().wrapping_add((delta >> 1).wrapping_mul(self.capacity as i64) as u64),
                _ => near() | MAX_POSITION,
            },
            kind::STAMP => {
                let how = input.byte();
                let mut p = near();
                if let Some(s) = slot.filter(|_| how & 4 == 0) {
                    p = (p & !(self.capacity - 1)) | s;
                }
                match how % 4 {
                    0 => p,
                    1 => p.wrapping_add(1),
                    2 => LOST | p,
                    _ => p.wrapping_add(self.capacity),
                }
            }
            kind::OWNER => match arg % 7 {
                0 => endpoint::VACANT,
                1 => self.me,
                2 => self.me | endpoint::DETACHED,
                3 => DEAD_OWNER,
                4 => DEAD_OWNER | endpoint::DETACHED,
                5 => self.me ^ OTHER_START,
                _ => BEYOND_PID_RANGE,
            },
            kind::FLIP => self.read(at) ^ (1 << (arg % 64)),
            _ => unreachable!("kinds are 0..8"),
        }
    }

    /// Forges the state a sender (bit 0 of `a` clear) or a receiver leaves when it dies
    /// holding a claim on the position `p` at the tail (head):
    /// - `a` bits 1-2, the owner of its entry: dead (a pid beyond `pid_max`, a pid beyond
    ///   `i32::MAX`, our pid with another start time), or left as it is (a live owner's handle
    ///   stalled mid-claim, or another handle of a dead one). A vacant or detached entry taken
    ///   by a dead process is attached as it would have been: owner word, idle lanes, the
    ///   role's attach counters;
    /// - `a` bits 3-6, its lane (mod 15), which is set to `p`;
    /// - `a` bit 7: it died before its claiming CAS (only the intent is left); else the
    ///   tail (head) moves past `p` and the stamp is left by `b` bits 4-5: for a sender free
    ///   `p` (claimed, unpublished), published (`p + 1`, with a fresh value as payload), lost
    ///   (`LOST | p`: already resolved by someone), or untouched; for a receiver full
    ///   (claimed; `p + 1` unless the slot is lost already), freed (`p + capacity`), lost, or
    ///   untouched;
    /// - `b` bits 0-3, its entry (mod `max_endpoints`); `b` bit 6: the last lane of the next
    ///   entry names `p` too (a handle that lost the race for `p`).
    ///
    /// Updates what the ledger may still check. Returns whether the claim's owner is dead.
    fn crash(&self, a: u8, b: u8, ledger: &mut Ledger, next: &mut u64) -> bool {
        let receiver = a & 1 != 0;
        let entry = u64::from(b & 15) % self.max;
        let lane = u64::from(a >> 3 & 15) % LANES;
        let owner_at = self.registry(receiver, entry, 0);
        let current = self.read(owner_at);
        let held = current != endpoint::VACANT && !endpoint::is_detached(current);
        let dead_word = match a >> 1 & 3 {
            0 => Some(DEAD_OWNER),
            1 => Some(BEYOND_PID_RANGE),
            2 => Some(self.me ^ OTHER_START),
            _ => None,
        };
        match dead_word {
            // Another handle of the same dead process.
            Some(_) if self.dead(current) => {}
            // A live (or unknown) owner declared dead: no correct peer does that.
            Some(word) if held => {
                ledger.realistic = false;
                self.write(owner_at, word, 8);
            }
            Some(word) => {
                self.write(owner_at, word, 8);
                for l in 0..LANES {
                    self.write(self.lane(receiver, entry, l), IDLE, 8);
                }
                let (ever, attached) = if receiver {
                    (RECEIVERS_EVER_AT, RECEIVERS_ATTACHED_AT)
                } else {
                    (SENDERS_EVER_AT, SENDERS_ATTACHED_AT)
                };
                self.write(ever, 1, 4);
                self.write(attached, u64::from(self.read_u32(attached).wrapping_add(1)), 4);
            }
            // A claim by whoever holds the entry, stalled: realistic for a dead owner, and for
            // ours in a lane none of our handles uses (at most HANDLES per entry here, which
            // take the lowest free lanes). A vacant or detached entry claims nothing.
            None => {
                let stalled = lane >= HANDLES as u64 && current == self.me;
                ledger.realistic &= held && (self.dead(current) || stalled);
            }
        }
        let dead = self.dead(self.read(owner_at));
        ledger.dead_claims |= dead;

        let position_at = if receiver { HEAD_AT } else { TAIL_AT };
        let p = self.read(position_at);
        self.write(self.lane(receiver, entry, lane), p, 8);
        if b & 0x40 != 0 {
            let other = (entry + 1) % self.max;
            let owner = self.read(self.registry(receiver, other, 0));
            ledger.realistic &= owner != endpoint::VACANT && !endpoint::is_detached(owner);
            self.write(self.lane(receiver, other, LANES - 1), p, 8);
        }
        if a & 0x80 != 0 {
            return dead; // It died before its CAS: nothing else changed.
        }
        let slot = self.slot(p);
        let stamp = self.read(slot);
        let full = p.wrapping_add(1);
        self.write(position_at, full, 8);
        ledger.realistic &= p < MAX_POSITION - 1;
        if receiver {
            // A receiver claims a published message or a lost slot, behind the tail.
            let claimable = p < self.tail() && (stamp == full || stamp == LOST | p);
            ledger.realistic &= claimable;
            match b >> 4 & 3 {
                0 if stamp != LOST | p => self.write(slot, full, 8),
                1 => self.write(slot, p.wrapping_add(self.capacity), 8),
                2 => {
                    ledger.realistic &= stamp == LOST | p;
                    self.write(slot, LOST | p, 8);
                }
                _ => {}
            }
        } else {
            // A sender claims a slot free for `p`.
            ledger.realistic &= stamp == p;
            match b >> 4 & 3 {
                0 => self.write(slot, p, 8),
                1 => {
                    *next += 1;
                    self.write(slot + self.payload, *next, 8);
                    self.write(slot, full, 8);
                    ledger.sent([*next]);
                }
                2 => self.write(slot, LOST | p, 8),
                _ => {}
            }
        }
        dead
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
        payload: h.elem_align.max(8),
        capacity,
        max,
        me: my_owner_word(),
    };
    let mut ledger = Ledger { realistic: true, dead_claims: false, pending: VecDeque::new() };

    let mut txs: [Option<Hostile<Sender<u64>>>; HANDLES] = Default::default();
    let mut rxs: [Option<Hostile<Receiver<u64>>>; HANDLES] = Default::default();
    if flags & flag::NO_SENDER == 0 {
        txs[0] = chan.sender().ok().map(|handle| Hostile { handle, bad: Sticky::default() });
    }
    if flags & flag::NO_RECEIVER == 0 {
        rxs[0] = chan.receiver().ok().map(|handle| Hostile { handle, bad: Sticky::default() });
    }
    let mut next = 0u64;
    let mut pauses = 0;

    for _ in 0..MAX_MPMC_OPS / 4 {
        let Some(b) = input.u8() else { break };
        stats.ops += 1;
        let code = b % 16;
        let h = usize::from(b >> 4) & 3;
        let j = usize::from(b >> 6);
        let lost_before = chan.lost_messages();
        let (writes_before, reads_before) = peer.lost();
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
                if sent {
                    ledger.sent([next]);
                }
                tx.bad.saw(corrupted, "send", &mut stats);
                ledger.check(&chan, corrupted, "send");
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
                if let Ok(v) = r {
                    ledger.received(v);
                }
                rx.bad.saw(r == Err(true), "recv", &mut stats);
                ledger.check(&chan, r == Err(true), "recv");
            }
            op::SEND_SLICE => {
                let k = usize::from(input.byte() % 10);
                let Some(tx) = txs[h].as_mut() else { continue };
                let values: Vec<u64> = (next + 1..=next + k as u64).collect();
                next += k as u64;
                let r = tx.handle.try_send_slice(&values);
                if let Ok(n) = r {
                    assert!(n <= k && (n > 0 || k == 0), "try_send_slice sent {n} of {k}");
                    stats.sent += n as u64;
                    ledger.sent(values[..n].iter().copied());
                }
                let corrupted = r == Err(TrySendError::Corrupted(()));
                if k > 0 {
                    tx.bad.saw(corrupted, "try_send_slice", &mut stats);
                }
                ledger.check(&chan, corrupted, "try_send_slice");
            }
            op::RECV_INTO => {
                let k = usize::from(input.byte() % 10);
                let Some(rx) = rxs[h].as_mut() else { continue };
                let mut buf = vec![0u64; k];
                let r = rx.handle.try_recv_into(&mut buf);
                if let Ok(n) = r {
                    assert!(n <= k && (n > 0 || k == 0), "try_recv_into got {n} into {k}");
                    stats.received += n as u64;
                    for &v in &buf[..n] {
                        ledger.received(v);
                    }
                }
                let corrupted = r == Err(TryRecvError::Corrupted);
                if k > 0 {
                    rx.bad.saw(corrupted, "try_recv_into", &mut stats);
                }
                ledger.check(&chan, corrupted, "try_recv_into");
            }
            op::SEND_BLOCKING => {
                // A peer write.
                let (t, index) = (input.byte(), input.byte());
                let (at, width) = peer.target(t, index);
                let slot = (t % 16 >= target::SLOT).then(|| u64::from(index) % capacity);
                let value = peer.forge(input, at, slot);
                peer.write(at, value, width);
                ledger.realistic = false;
                stats.pokes += 1;
            }
            op::RECV_BLOCKING => {
                let (a, b) = (input.byte(), input.byte());
                stats.realistic_crashes += u64::from(ledger.realistic);
                peer.crash(a, b, &mut ledger, &mut next);
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
                if h == 3 && pauses < MAX_PAUSES {
                    pauses += 1;
                    stats.pauses += 1;
                    std::thread::sleep(PAUSE);
                }
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
        let (writes, reads) = peer.lost();
        let grew = chan.lost_messages() > lost_before;
        match code {
            op::SEND | op::SEND_TIMEOUT | op::SEND_SLICE => {
                stats.lost_resolved += u64::from(grew);
                stats.lost_reads_freed += u64::from(reads > reads_before);
            }
            op::RECV | op::RECV_TIMEOUT | op::RECV_INTO => {
                stats.lost_resolved += u64::from(grew);
                stats.lost_writes_skipped += u64::from(writes > writes_before);
            }
            op::ATTACH_SENDER | op::ATTACH_RECEIVER => stats.resolved_on_attach += u64::from(grew),
            _ => {}
        }
        ledger.check(&chan, false, "an operation");
    }
    stats
}
