//! Writes the seed corpus of the `mpmc_ops` fuzz target into `fuzz/corpus/mpmc_ops/`, running
//! every seed through the harness once (in this debug build, with overflow checks), and the
//! reproducers of known bugs into `fuzz/artifacts/mpmc_ops/` (not run: they panic).
//!
//! Run from `fuzz/`: `cargo run --example gen_mpmc_corpus`. Re-running rewrites the named seeds
//! with the same bytes and leaves the entries the fuzzer added alone.

#[allow(dead_code)] // the generator uses part of the harness
#[path = "../harness/mod.rs"]
mod harness;

use std::path::Path;

use harness::mpmc::{MpmcStats, flag, kind, mpmc_ops, op, target};

/// A small, fixed pseudo-random generator (xorshift64*), so the seeds are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

/// The config byte for a capacity of `2 << cap_code` and `max` endpoints per role.
fn config(cap_code: u8, max: u8) -> u8 {
    (0..=255u8)
        .find(|c| c % 6 == cap_code && 1 + (c >> 5) % 4 == max)
        .expect("every capacity and max has a config byte")
}

/// An op byte: code, handle `h`, second handle `j`.
fn o(code: u8, h: u8, j: u8) -> u8 {
    code | (h & 3) << 4 | (j & 3) << 6
}

/// An input under construction.
struct Seed(Vec<u8>);

impl Seed {
    fn model(cap_code: u8, max: u8, flags: u8) -> Self {
        Seed(vec![config(cap_code, max), flags & !flag::HOSTILE])
    }

    fn hostile(cap_code: u8, max: u8, flags: u8) -> Self {
        Seed(vec![config(cap_code, max), flags | flag::HOSTILE])
    }

    fn op(mut self, code: u8, h: u8) -> Self {
        self.0.push(o(code, h, 0));
        self
    }

    fn op_arg(mut self, code: u8, h: u8, arg: u8) -> Self {
        self.0.extend([o(code, h, 0), arg]);
        self
    }

    fn clone_to(mut self, code: u8, h: u8, j: u8) -> Self {
        self.0.push(o(code, h, j));
        self
    }

    fn times(mut self, n: usize, code: u8, h: u8) -> Self {
        for _ in 0..n {
            self.0.push(o(code, h, 0));
        }
        self
    }

    /// Hostile: a peer write of `target[index]` with a forged value of `kind` and its args.
    fn poke(mut self, t: u8, index: u8, k: u8, args: &[u8]) -> Self {
        self.0.extend([o(op::SEND_BLOCKING, 0, 0), t, index, k]);
        self.0.extend_from_slice(args);
        self
    }

    /// Hostile: a raw 8-byte value.
    fn poke_raw(self, t: u8, index: u8, value: u64) -> Self {
        let mut args = vec![0];
        args.extend_from_slice(&value.to_le_bytes());
        self.poke(t, index, kind::RAW, &args)
    }

    /// Hostile: a crashed endpoint (see `op::RECV_BLOCKING`).
    fn crash(mut self, receiver: bool, entry: u8, dead_pid: bool, moved: bool) -> Self {
        let arg = u8::from(receiver)
            | u8::from(dead_pid) << 1
            | (entry & 31) << 2
            | if moved { 0 } else { 0x80 };
        self.0.extend([o(op::RECV_BLOCKING, 0, 0), arg]);
        self
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// Attach a sender and a receiver in handle slot 0.
fn attached(s: Seed) -> Seed {
    s.op(op::ATTACH_SENDER, 0).op(op::ATTACH_RECEIVER, 0)
}

fn model_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![
        (
            "model-fill-to-full-and-drain",
            attached(Seed::model(0, 1, 0))
                .times(3, op::SEND, 0)
                .op(op::OBSERVE, 0)
                .times(3, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "model-slices",
            attached(Seed::model(2, 2, 0))
                .op_arg(op::SEND_SLICE, 0, 9)
                .op_arg(op::SEND_SLICE, 0, 1)
                .op_arg(op::SEND_SLICE, 0, 0)
                .op_arg(op::RECV_INTO, 0, 5)
                .op(op::OBSERVE, 0)
                .op_arg(op::RECV_INTO, 0, 9)
                .op_arg(op::RECV_INTO, 0, 1)
                .op_arg(op::RECV_INTO, 0, 0)
                .0,
        ),
        (
            "model-receivers-gone",
            attached(Seed::model(1, 2, 0))
                .op(op::SEND, 0)
                .op(op::DROP_RECEIVER, 0)
                .op(op::SEND, 0)
                .op_arg(op::SEND_TIMEOUT, 0, 3)
                .op_arg(op::SEND_SLICE, 0, 4)
                .op_arg(op::SEND_BLOCKING, 0, 1)
                .op(op::OBSERVE, 0)
                .op(op::ATTACH_RECEIVER, 1)
                .op(op::RECV, 1)
                .op(op::SEND, 0)
                .0,
        ),
        (
            "model-senders-gone",
            attached(Seed::model(1, 2, 0))
                .times(2, op::SEND, 0)
                .op(op::DROP_SENDER, 0)
                .times(3, op::RECV, 0)
                .op_arg(op::RECV_TIMEOUT, 0, 1)
                .op_arg(op::RECV_BLOCKING, 0, 1)
                .op_arg(op::RECV_BLOCKING, 0, 4)
                .op_arg(op::RECV_INTO, 0, 3)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "model-before-any-sender",
            Seed::model(1, 1, 0)
                .op(op::ATTACH_RECEIVER, 0)
                .op(op::RECV, 0)
                .op_arg(op::RECV_TIMEOUT, 0, 2)
                .op(op::OBSERVE, 0)
                .op(op::ATTACH_SENDER, 0)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "model-before-any-receiver",
            Seed::model(0, 1, 0)
                .op(op::ATTACH_SENDER, 0)
                .times(3, op::SEND, 0)
                .op_arg(op::SEND_TIMEOUT, 0, 1)
                .op(op::OBSERVE, 0)
                .op(op::ATTACH_RECEIVER, 2)
                .times(3, op::RECV, 2)
                .0,
        ),
    ];
    for max in 1..=3u8 {
        let mut s = Seed::model(1, max, 0);
        for h in 0..=max.min(3) {
            s = s.op(op::ATTACH_SENDER, h).op(op::ATTACH_RECEIVER, h);
        }
        s = s.op(op::SEND, 0).op(op::DROP_SENDER, 0).op(op::ATTACH_SENDER, 3).op(op::RECV, 1);
        let name =
            ["model-too-many-1", "model-too-many-2", "model-too-many-3"][usize::from(max) - 1];
        v.push((name, s.0));
    }
    v.push((
        "model-clones-share-an-entry",
        Seed::model(2, 1, 0)
            .op(op::ATTACH_SENDER, 0)
            .clone_to(op::CLONE_SENDER, 0, 1)
            .clone_to(op::CLONE_SENDER, 0, 2)
            .op(op::ATTACH_SENDER, 3)
            .op(op::ATTACH_RECEIVER, 0)
            .clone_to(op::CLONE_RECEIVER, 0, 3)
            .op(op::ATTACH_RECEIVER, 1)
            .op(op::SEND, 1)
            .op(op::SEND, 2)
            .op(op::DROP_SENDER, 0)
            .op(op::DROP_SENDER, 1)
            .op(op::RECV, 3)
            .op(op::OBSERVE, 0)
            .op(op::DROP_SENDER, 2)
            .op(op::RECV, 0)
            .op(op::RECV, 3)
            .op(op::OBSERVE, 0)
            .0,
    ));
    v.push((
        "model-clone-onto-itself-and-over-another",
        Seed::model(1, 2, 0)
            .op(op::ATTACH_SENDER, 0)
            .op(op::ATTACH_SENDER, 1)
            .clone_to(op::CLONE_SENDER, 0, 0)
            .clone_to(op::CLONE_SENDER, 0, 1)
            .op(op::ATTACH_SENDER, 2)
            .op(op::ATTACH_RECEIVER, 0)
            .clone_to(op::CLONE_RECEIVER, 0, 0)
            .op(op::SEND, 2)
            .op(op::RECV, 0)
            .op(op::OBSERVE, 0)
            .0,
    ));
    v.push((
        "model-reattach",
        attached(Seed::model(0, 1, 0))
            .op(op::SEND, 0)
            .op(op::DROP_RECEIVER, 0)
            .op(op::ATTACH_RECEIVER, 1)
            .op(op::RECV, 1)
            .op(op::DROP_SENDER, 0)
            .op(op::ATTACH_SENDER, 2)
            .op(op::SEND, 2)
            .op(op::ATTACH_SENDER, 2)
            .op(op::RECV, 1)
            .0,
    ));
    v.push((
        "model-blocking-calls",
        attached(Seed::model(2, 1, 0))
            .op_arg(op::SEND_BLOCKING, 0, 1)
            .op_arg(op::SEND_BLOCKING, 0, 5)
            .op_arg(op::SEND_BLOCKING, 0, 9)
            .op_arg(op::RECV_BLOCKING, 0, 1)
            .op_arg(op::RECV_BLOCKING, 0, 9)
            .op_arg(op::RECV_BLOCKING, 0, 0)
            .op_arg(op::SEND_BLOCKING, 0, 0)
            .0,
    ));
    for (i, wait) in [0u8, 1, 2, 3].into_iter().enumerate() {
        let s = attached(Seed::model(0, 1, wait << flag::WAIT_SHIFT))
            .op_arg(op::EXTRA, 0, wait)
            .op_arg(op::RECV_TIMEOUT, 0, 3)
            .times(2, op::SEND, 0)
            .op_arg(op::SEND_TIMEOUT, 0, 3)
            .op_arg(op::RECV_TIMEOUT, 0, 0)
            .op_arg(op::RECV_BLOCKING, 0, 1);
        v.push((["model-wait-0", "model-wait-1", "model-wait-2", "model-wait-3"][i], s.0));
    }
    for start in 0..4u8 {
        // Many laps around a small ring from each start position (across 2^32, 2^48).
        let mut s = attached(Seed::model(1, 2, start)).op(op::ATTACH_RECEIVER, 1);
        for k in 0..24u8 {
            s = s.op_arg(op::SEND_SLICE, 0, 3).op(op::RECV, k & 1).op_arg(op::RECV_INTO, 1, 2);
        }
        let name = [
            "model-laps-start-0",
            "model-laps-start-1",
            "model-laps-start-2",
            "model-laps-start-3",
        ][usize::from(start)];
        v.push((name, s.op(op::OBSERVE, 0).0));
    }
    // Random operation streams.
    let mut rng = Rng(0x6d70_6d63_5eed_0001);
    for i in 0..10 {
        let mut s = Seed::model((rng.byte() % 6).min(3), 1 + rng.byte() % 4, rng.byte() & 0x0f);
        s = attached(s);
        for _ in 0..(40 + rng.byte() % 120) {
            let b = rng.byte();
            s = s.bytes(&[b, rng.byte()]);
        }
        let names = [
            "model-random-0",
            "model-random-1",
            "model-random-2",
            "model-random-3",
            "model-random-4",
            "model-random-5",
            "model-random-6",
            "model-random-7",
            "model-random-8",
            "model-random-9",
        ];
        v.push((names[i], s.0));
    }
    v
}

fn hostile_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut v = vec![
        (
            "hostile-tail-far-ahead",
            Seed::hostile(1, 1, 0)
                .op(op::SEND, 0)
                .poke_raw(target::TAIL, 0, 1 << 40)
                .op(op::SEND, 0)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-tail-beyond-max-position",
            Seed::hostile(1, 1, 0)
                .poke_raw(target::TAIL, 0, 1 << 62)
                .op(op::SEND, 0)
                .op_arg(op::SEND_TIMEOUT, 0, 1)
                .op_arg(op::SEND_SLICE, 0, 3)
                .0,
        ),
        (
            "hostile-head-ahead-of-tail",
            Seed::hostile(2, 1, 0)
                .times(2, op::SEND, 0)
                .poke(target::HEAD, 0, kind::TAIL_REL, &[5])
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .op_arg(op::RECV_INTO, 0, 4)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-head-back-a-lap",
            Seed::hostile(0, 1, 0)
                .times(2, op::SEND, 0)
                .times(2, op::RECV, 0)
                .poke(target::HEAD, 0, kind::NUDGE, &[0xfe])
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .0,
        ),
        (
            "hostile-crashed-sender-moved-tail",
            Seed::hostile(1, 2, 0)
                .op(op::SEND, 0)
                .crash(false, 1, true, true)
                .op(op::SEND, 0)
                .times(3, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-crashed-sender-before-moving-tail",
            Seed::hostile(1, 2, 0)
                .crash(false, 1, false, false)
                .op(op::SEND, 0)
                .times(3, op::RECV, 0)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-crashed-receiver-frees-for-senders",
            Seed::hostile(0, 2, 0)
                .times(2, op::SEND, 0)
                .crash(true, 1, true, true)
                .op(op::SEND, 0)
                .op(op::SEND, 0)
                .op(op::SEND, 0)
                .times(3, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-dead-entry-taken-over",
            Seed::hostile(1, 1, 0)
                .op(op::SEND, 0)
                .poke(target::REGISTRY, 0, kind::OWNER, &[3])
                .poke(target::SLOT, 1, kind::WRITING, &[0, 0])
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-registry-owner-words",
            Seed::hostile(0, 2, 0)
                .poke(target::REGISTRY, 1, kind::OWNER, &[1])
                .op(op::ATTACH_SENDER, 1)
                .op(op::ATTACH_SENDER, 2)
                .poke(target::REGISTRY, 2, kind::OWNER, &[2])
                .poke(target::REGISTRY, 3, kind::OWNER, &[5])
                .op(op::ATTACH_RECEIVER, 1)
                .op(op::ATTACH_RECEIVER, 2)
                .poke(target::REGISTRY, 0, kind::OWNER, &[6])
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-claims-of-unknown-endpoints",
            Seed::hostile(1, 1, 0)
                .op(op::SEND, 0)
                .poke(target::SLOT, 1, kind::WRITING, &[0, 2])
                .poke(target::SLOT, 0, kind::READING, &[1, 2])
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .0,
        ),
        (
            "hostile-slot-states",
            Seed::hostile(1, 1, 0)
                .op(op::SEND, 0)
                .poke(target::SLOT, 0, kind::SLOT_STATE, &[2])
                .poke(target::SLOT, 1, kind::SLOT_STATE, &[3])
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .poke(target::SLOT, 2, kind::SLOT_STATE, &[4])
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .0,
        ),
        (
            "hostile-poisoned-flag",
            Seed::hostile(0, 1, 0)
                .poke(target::POISONED, 0, kind::NUDGE, &[1])
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .clone_to(op::CLONE_RECEIVER, 0, 1)
                .op(op::RECV, 1)
                .0,
        ),
        (
            "hostile-attach-counters",
            Seed::hostile(0, 1, 0)
                .poke_raw(target::RECEIVERS_ATTACHED, 0, 0)
                .op(op::SEND, 0)
                .poke_raw(target::SENDERS_ATTACHED, 0, 0)
                .op(op::RECV, 0)
                .poke_raw(target::SENDERS_EVER, 0, 0)
                .poke_raw(target::RECEIVERS_EVER, 0, 0)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-waiters",
            Seed::hostile(0, 1, 2 << flag::WAIT_SHIFT)
                .poke_raw(target::NOT_EMPTY, 0, u64::MAX)
                .poke_raw(target::NOT_FULL, 1, 7)
                .op_arg(op::RECV_TIMEOUT, 0, 3)
                .times(2, op::SEND, 0)
                .op_arg(op::SEND_TIMEOUT, 0, 3)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-lost-counters",
            Seed::hostile(0, 1, 0)
                .poke_raw(target::LOST_WRITES, 0, u64::MAX)
                .poke_raw(target::LOST_READS, 0, 5)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-reopen-and-attach",
            Seed::hostile(1, 2, flag::NO_SENDER)
                .op(op::EXTRA, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
                .op(op::RECV, 0)
                .clone_to(op::CLONE_SENDER, 1, 2)
                .op(op::DROP_SENDER, 1)
                .op(op::SEND, 2)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-no-endpoints-then-attach-everywhere",
            Seed::hostile(0, 1, flag::NO_SENDER | flag::NO_RECEIVER)
                .op(op::ATTACH_SENDER, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::ATTACH_RECEIVER, 0)
                .op(op::ATTACH_RECEIVER, 1)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-corrupted-stays",
            Seed::hostile(1, 1, 0)
                .poke_raw(target::SLOT, 0, 2)
                .op(op::SEND, 0)
                .op(op::SEND, 0)
                .op_arg(op::SEND_SLICE, 0, 2)
                .op_arg(op::SEND_SLICE, 0, 0)
                .op_arg(op::SEND_TIMEOUT, 0, 1)
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .op_arg(op::RECV_INTO, 0, 2)
                .op_arg(op::RECV_TIMEOUT, 0, 1)
                .clone_to(op::CLONE_SENDER, 0, 1)
                .op(op::SEND, 1)
                .0,
        ),
    ];
    let mut rng = Rng(0x6d70_6d63_5eed_0002);
    for i in 0..10 {
        let mut s = Seed::hostile(rng.byte() % 4, 1 + rng.byte() % 4, rng.byte() & 0x0f);
        for _ in 0..(30 + rng.byte() % 60) {
            let b = rng.byte();
            // Peer writes get their full argument list; other ops one argument byte.
            s = if b % 16 == op::SEND_BLOCKING {
                // Nonzero forged values only: a zero in the last slot's state word trips the
                // overflow reported in `bug_reproducers`.
                s.poke(rng.byte(), rng.byte(), 1 + rng.byte() % 7, &[rng.byte(), rng.byte()])
            } else {
                s.bytes(&[b, rng.byte()])
            };
        }
        let names = [
            "hostile-random-0",
            "hostile-random-1",
            "hostile-random-2",
            "hostile-random-3",
            "hostile-random-4",
            "hostile-random-5",
            "hostile-random-6",
            "hostile-random-7",
            "hostile-random-8",
            "hostile-random-9",
        ];
        v.push((names[i], s.0));
    }
    v
}

/// Inputs that make the library panic when it is built with overflow checks (debug builds,
/// and `cargo fuzz run` by default). Kept out of the corpus.
fn bug_reproducers() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            // `decode` in src/ring/mpmc.rs: a state word of 0 in the last slot (index == mask)
            // takes the "full" branch (0 - 1 masks to the slot) and computes `word - 1`.
            "overflow-decode-zero-state-in-last-slot",
            Seed::hostile(0, 1, 0).op(op::SEND, 0).poke_raw(target::SLOT, 1, 0).op(op::SEND, 0).0,
        ),
        (
            // `release_claims_of` in src/ring/mpmc.rs: the tail is read without the
            // MAX_POSITION check, so a claim by a dead entry with the tail near u64::MAX makes
            // `pos + capacity` overflow while a new sender takes the entry over.
            "overflow-release-claims-tail-near-max",
            Seed::hostile(0, 1, 0)
                .poke(target::REGISTRY, 0, kind::OWNER, &[3])
                .poke_raw(target::SLOT, 1, (1 << 63) | ((1 << 48) - 1))
                .poke_raw(target::TAIL, 0, u64::MAX)
                .op(op::ATTACH_SENDER, 1)
                .0,
        ),
    ]
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("corpus").join("mpmc_ops");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let mut stats = MpmcStats::default();
    let (mut count, mut bytes) = (0, 0);
    for (name, data) in model_seeds().into_iter().chain(hostile_seeds()) {
        stats.absorb(mpmc_ops(&data));
        std::fs::write(dir.join(name), &data).expect("write a seed");
        count += 1;
        bytes += data.len();
    }
    println!("mpmc_ops: {count} seeds, {bytes} bytes; {stats:#?}");
    let artifacts = root.join("artifacts").join("mpmc_ops");
    std::fs::create_dir_all(&artifacts).expect("create the artifacts directory");
    for (name, data) in bug_reproducers() {
        std::fs::write(artifacts.join(name), &data).expect("write a reproducer");
        println!("reproducer: {}", artifacts.join(name).display());
    }
}
