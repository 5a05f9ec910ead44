//! Writes the seed corpus of the `mpmc_ops` fuzz target into `fuzz/corpus/mpmc_ops/`, running
//! every seed through the harness once (in this debug build, with overflow checks).
//!
//! Run from `fuzz/`: `cargo run --example gen_mpmc_corpus` (with `SEED_STATS=1`, it prints
//! each seed's counters). Re-running rewrites the named seeds with the same bytes and leaves
//! the entries the fuzzer added alone.

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

    /// Hostile: a sender or receiver that died holding a claim at the tail (head), in registry
    /// entry `entry`, intent lane `lane`, owned by `owner`, leaving the slot as `left` says;
    /// `also_named`: the last lane of the next entry names the position too (see the
    /// harness's `Peer::crash`).
    fn crash(
        mut self,
        receiver: bool,
        entry: u8,
        owner: u8,
        lane: u8,
        left: u8,
        also_named: bool,
    ) -> Self {
        let a = u8::from(receiver)
            | (owner & 3) << 1
            | (lane & 15) << 3
            | if left == BEFORE_CAS { 0x80 } else { 0 };
        let b = (entry & 15) | (left & 3) << 4 | if also_named { 0x40 } else { 0 };
        self.0.extend([o(op::RECV_BLOCKING, 0, 0), a, b]);
        self
    }

    /// Hostile: let the stuck-claim clock of every handle run out.
    fn pause(self) -> Self {
        self.op(op::OBSERVE, 3)
    }

    fn bytes(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
}

/// Owners of a crashed endpoint's entry: dead (a pid beyond pid_max, a pid beyond i32::MAX,
/// our pid with another start time), or whoever holds it now.
const DEAD: u8 = 0;
const DEAD_PID_RANGE: u8 = 1;
const DEAD_REUSED_PID: u8 = 2;
const AS_IS: u8 = 3;

/// What a crashed endpoint leaves in its slot: the claim as made, the claim finished
/// (published, or freed), a lost stamp, the stamp untouched; or nothing at all but its intent
/// (it died before its claiming CAS).
const CLAIMED: u8 = 0;
const FINISHED: u8 = 1;
const LOST_STAMP: u8 = 2;
const BEFORE_CAS: u8 = 4;

/// The index arg of a registry poke: word `word` (0: owner, 1..=15: lanes) of entry `entry`
/// (senders first, then receivers).
fn reg(entry: u8, word: u8) -> u8 {
    entry << 4 | word
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
    // Piles of clones of one entry: more handles than intent lanes, sharing and taking turns;
    // the entry stays held (TooManyEndpoints) while any clone lives.
    let mut s = attached(Seed::model(1, 1, 0));
    for _ in 0..18 {
        s = s.clone_to(op::CLONE_SENDER, 0, 0).op(op::SEND, 0);
        s = s.clone_to(op::CLONE_RECEIVER, 0, 0).op(op::RECV, 0);
    }
    s = s.op(op::ATTACH_SENDER, 1).op(op::DROP_SENDER, 0).op(op::OBSERVE, 0);
    s = s.clone_to(op::CLONE_SENDER, 0, 0).clone_to(op::CLONE_SENDER, 0, 1);
    for _ in 0..8 {
        s = s.clone_to(op::CLONE_SENDER, 1, 1).op_arg(op::SEND_SLICE, 1, 3);
        s = s.op(op::DROP_SENDER, 1).clone_to(op::CLONE_SENDER, 0, 1);
        s = s.clone_to(op::CLONE_RECEIVER, 0, 2).op_arg(op::RECV_INTO, 2, 4);
    }
    s = s.op(op::ATTACH_RECEIVER, 3).op(op::DROP_RECEIVER, 0).op(op::DROP_RECEIVER, 2);
    s = s.op(op::DROP_SENDER, 1).op(op::OBSERVE, 0).op(op::RECV, 3);
    v.push(("model-clone-piles-share-lanes", s.0));
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
            // Its claim stays until the last live sender is gone; then the receiver's
            // conclusive look resolves it, skips the slot and delivers what follows.
            "hostile-crashed-sender-skipped-once-senders-are-gone",
            Seed::hostile(1, 2, 0)
                .op(op::SEND, 0)
                .crash(false, 1, DEAD, 0, CLAIMED, false)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::DROP_SENDER, 0)
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // A receiver that met the stuck claim looks its holder up after a while.
            "hostile-crashed-sender-skipped-after-a-pause",
            Seed::hostile(1, 2, 1)
                .op(op::SEND, 0)
                .crash(false, 1, DEAD_PID_RANGE, 2, CLAIMED, false)
                .times(2, op::SEND, 0)
                .times(2, op::RECV, 0)
                .pause()
                .times(2, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-crashed-sender-entry-taken-over",
            Seed::hostile(1, 2, 2)
                .crash(false, 1, DEAD_REUSED_PID, 0, CLAIMED, false)
                .op(op::SEND, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
                .times(3, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // Two handles of one dead process, the later claim first in line.
            "hostile-crashed-senders-two-lanes",
            Seed::hostile(2, 1, 3)
                .op(op::DROP_SENDER, 0)
                .crash(false, 0, DEAD, 0, CLAIMED, false)
                .crash(false, 0, DEAD, 5, CLAIMED, false)
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
                .times(2, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // The slot the dead receiver held is full from the sender's side: it looks the
            // holder up after a while and frees the slot.
            "hostile-crashed-receiver-freed-by-a-sender",
            Seed::hostile(0, 2, 0)
                .times(2, op::SEND, 0)
                .crash(true, 1, DEAD, 0, CLAIMED, false)
                .op(op::SEND, 0)
                .pause()
                .op(op::SEND, 0)
                .times(3, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-crashed-receiver-entry-taken-over",
            Seed::hostile(1, 2, 1)
                .times(2, op::SEND, 0)
                .crash(true, 1, DEAD, 3, CLAIMED, false)
                .op(op::ATTACH_RECEIVER, 1)
                .op(op::RECV, 1)
                .op(op::RECV, 0)
                .times(4, op::SEND, 0)
                .op_arg(op::RECV_INTO, 1, 5)
                .0,
        ),
        (
            // A receiver that died after freeing, and one that died skipping a lost slot.
            "hostile-crashed-receivers-freed-and-lost",
            Seed::hostile(0, 2, 0)
                .times(2, op::SEND, 0)
                .crash(true, 1, DEAD, 0, FINISHED, false)
                .crash(false, 1, DEAD, 0, LOST_STAMP, false)
                .crash(true, 1, DEAD_PID_RANGE, 1, CLAIMED, false)
                .op(op::SEND, 0)
                .pause()
                .times(2, op::SEND, 0)
                .times(3, op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // Intents left by endpoints that died before their claiming CAS name nothing
            // stuck.
            "hostile-crashed-before-the-cas",
            Seed::hostile(1, 2, 0)
                .op(op::SEND, 0)
                .crash(false, 1, DEAD, 0, BEFORE_CAS, false)
                .crash(true, 1, DEAD, 0, BEFORE_CAS, false)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::DROP_SENDER, 0)
                .times(2, op::RECV, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::ATTACH_RECEIVER, 1)
                .op(op::SEND, 1)
                .op(op::RECV, 1)
                .0,
        ),
        (
            "hostile-crashed-sender-after-publishing",
            Seed::hostile(1, 2, 0)
                .op(op::SEND, 0)
                .crash(false, 1, DEAD, 0, FINISHED, false)
                .op(op::SEND, 0)
                .times(3, op::RECV, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
                .op(op::RECV, 0)
                .0,
        ),
        (
            // A live process's handle stalled mid-claim is never skipped, however long.
            "hostile-live-stalled-sender-never-skipped",
            Seed::hostile(0, 1, 0)
                .op(op::SEND, 0)
                .crash(false, 0, AS_IS, 9, CLAIMED, false)
                .op(op::SEND, 0)
                .times(2, op::RECV, 0)
                .pause()
                .times(2, op::RECV, 0)
                .clone_to(op::CLONE_RECEIVER, 0, 1)
                .op(op::RECV, 1)
                .op(op::DROP_SENDER, 0)
                .op(op::RECV, 1)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // Nor is a live receiver's slot freed under it.
            "hostile-live-stalled-receiver-never-freed",
            Seed::hostile(0, 1, 0)
                .times(2, op::SEND, 0)
                .crash(true, 0, AS_IS, 12, CLAIMED, false)
                .op(op::SEND, 0)
                .pause()
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // The dead sender's claim is also named by a live sender's lane (one that lost
            // the race for it): not resolved, and its entry not taken over, until that one
            // is gone.
            "hostile-dead-claim-also-named-by-a-live-lane",
            Seed::hostile(1, 2, 0)
                .op(op::SEND, 0)
                .crash(false, 1, DEAD, 0, CLAIMED, true)
                .op(op::SEND, 0)
                .times(2, op::RECV, 0)
                .pause()
                .op(op::RECV, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::DROP_SENDER, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::ATTACH_SENDER, 2)
                .op(op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            "hostile-live-claim-also-named-by-a-dead-lane",
            Seed::hostile(1, 3, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 0)
                .crash(false, 2, DEAD, 0, BEFORE_CAS, false)
                .crash(false, 1, AS_IS, 6, CLAIMED, false)
                .op(op::SEND, 0)
                .times(2, op::RECV, 0)
                .pause()
                .op(op::RECV, 0)
                .op(op::DROP_SENDER, 1)
                .clone_to(op::CLONE_RECEIVER, 0, 1)
                .op(op::RECV, 1)
                .pause()
                .op(op::RECV, 1)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // Hand-forged crash state: a dead owner, an intent for the claim, a moved tail,
            // and lanes that are idle, garbage, or positions far away.
            "hostile-registry-lanes",
            Seed::hostile(1, 2, 0)
                .op(op::SEND, 0)
                .poke(target::REGISTRY, reg(1, 0), kind::OWNER, &[3])
                .poke(target::REGISTRY, reg(1, 1), kind::INTENT, &[0, 1])
                .poke(target::REGISTRY, reg(1, 2), kind::INTENT, &[0, 0])
                .poke(target::REGISTRY, reg(1, 3), kind::INTENT, &[1, 3])
                .poke(target::REGISTRY, reg(1, 4), kind::INTENT, &[0x40, 2])
                .poke(target::REGISTRY, reg(1, 15), kind::INTENT, &[0xfe, 1])
                .poke(target::TAIL, 0, kind::NUDGE, &[1])
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .pause()
                .op(op::RECV, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-registry-owner-words",
            Seed::hostile(0, 2, 0)
                .poke(target::REGISTRY, reg(1, 0), kind::OWNER, &[1])
                .op(op::ATTACH_SENDER, 1)
                .op(op::ATTACH_SENDER, 2)
                .poke(target::REGISTRY, reg(2, 0), kind::OWNER, &[2])
                .poke(target::REGISTRY, reg(3, 0), kind::OWNER, &[5])
                .op(op::ATTACH_RECEIVER, 1)
                .op(op::ATTACH_RECEIVER, 2)
                .poke(target::REGISTRY, reg(0, 0), kind::OWNER, &[6])
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::OBSERVE, 0)
                .0,
        ),
        (
            // A moved tail whose claim no lane names: nobody to resolve it, receivers wait.
            "hostile-claims-of-nobody",
            Seed::hostile(1, 1, 0)
                .op(op::SEND, 0)
                .poke(target::TAIL, 0, kind::NUDGE, &[1])
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .op(op::RECV, 0)
                .pause()
                .op(op::RECV, 0)
                .op(op::DROP_SENDER, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            // Stamps for the position the slot holds now, the next lap, and other slots.
            "hostile-stamps-right-and-wrong-slots",
            Seed::hostile(1, 1, 0)
                .op(op::SEND, 0)
                .poke(target::SLOT, 1, kind::STAMP, &[0, 1])
                .op(op::RECV, 0)
                .poke(target::SLOT, 1, kind::STAMP, &[0, 3])
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .poke(target::SLOT, 2, kind::STAMP, &[1, 5])
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .0,
        ),
        (
            // A lost stamp where receivers are: skipped without a message.
            "hostile-stamps-lost",
            Seed::hostile(1, 1, 0)
                .times(2, op::SEND, 0)
                .poke(target::SLOT, 0, kind::STAMP, &[1, 2])
                .times(2, op::RECV, 0)
                .poke(target::SLOT, 2, kind::STAMP, &[0, 2])
                .poke(target::TAIL, 0, kind::NUDGE, &[1])
                .times(2, op::RECV, 0)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            // A lost stamp of another slot: corruption.
            "hostile-stamps-lost-wrong-slot",
            Seed::hostile(1, 1, 0)
                .op(op::SEND, 0)
                .poke(target::SLOT, 0, kind::STAMP, &[2, 6])
                .op(op::RECV, 0)
                .op(op::SEND, 0)
                .0,
        ),
        (
            // A lost stamp two laps behind the tail: corruption.
            "hostile-stamps-lost-two-laps-behind",
            Seed::hostile(1, 1, 1)
                .op(op::SEND, 0)
                .op(op::RECV, 0)
                .poke(target::SLOT, 1, kind::STAMP, &[0xf8, 2])
                .times(5, op::SEND, 0)
                .op(op::RECV, 0)
                .0,
        ),
        (
            "hostile-stamp-bits-flipped",
            Seed::hostile(2, 1, 0)
                .times(3, op::SEND, 0)
                .poke(target::SLOT, 0, kind::FLIP, &[63])
                .poke(target::SLOT, 1, kind::FLIP, &[62])
                .poke(target::SLOT, 2, kind::FLIP, &[0])
                .times(3, op::RECV, 0)
                .times(2, op::SEND, 0)
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
            // Before any sender attached, a crashed one: its attach counted, its claim
            // resolved once it is the only sender there ever was.
            "hostile-crashed-sender-was-the-first",
            Seed::hostile(1, 1, flag::NO_SENDER)
                .op(op::RECV, 0)
                .crash(false, 0, DEAD, 0, CLAIMED, false)
                .times(2, op::RECV, 0)
                .op(op::ATTACH_SENDER, 1)
                .op(op::SEND, 1)
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
        (
            // Once a panic with overflow checks (`decode`: a zero stamp in the last slot
            // read as "full at position u64::MAX").
            "hostile-zero-stamp-in-last-slot",
            Seed::hostile(0, 1, 0).op(op::SEND, 0).poke_raw(target::SLOT, 1, 0).op(op::SEND, 0).0,
        ),
        (
            // Once a panic with overflow checks (resolving a dead entry's claims with the
            // tail near u64::MAX, when a new sender takes the entry over); now with the claim
            // in an intent lane.
            "hostile-dead-lane-tail-near-max",
            Seed::hostile(0, 1, 0)
                .poke(target::REGISTRY, reg(0, 0), kind::OWNER, &[3])
                .poke_raw(target::REGISTRY, reg(0, 1), (1 << 62) - 1)
                .poke_raw(target::REGISTRY, reg(0, 2), u64::MAX - 1)
                .poke_raw(target::TAIL, 0, u64::MAX)
                .op(op::ATTACH_SENDER, 1)
                .op(op::RECV, 0)
                .0,
        ),
    ];
    // Random operation streams, with every kind of peer write.
    let mut rng = Rng(0x6d70_6d63_5eed_0002);
    for i in 0..10 {
        let mut s = Seed::hostile(rng.byte() % 4, 1 + rng.byte() % 4, rng.byte() & 0x0f);
        for _ in 0..(30 + rng.byte() % 60) {
            let b = rng.byte();
            // Peer writes and crashes get their full argument lists; other ops one byte.
            s = match b % 16 {
                op::SEND_BLOCKING => {
                    let args = [rng.byte(), rng.byte(), rng.byte(), rng.byte(), rng.byte()];
                    s.poke(rng.byte(), rng.byte(), rng.byte(), &args)
                }
                op::RECV_BLOCKING => s.bytes(&[b, rng.byte(), rng.byte()]),
                _ => s.bytes(&[b, rng.byte()]),
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
    // Random streams of operations and crashes only, mostly of dead endpoints in entries of
    // their own (so the stronger checks of a correct peer apply for a while).
    let mut rng = Rng(0x6d70_6d63_5eed_0003);
    for i in 0..6 {
        let max = 2 + rng.byte() % 2;
        let mut s = Seed::hostile(rng.byte() % 3, max, rng.byte() & 0x0f);
        for _ in 0..(30 + rng.byte() % 40) {
            let code = [
                op::SEND,
                op::SEND,
                op::RECV,
                op::RECV,
                op::SEND_SLICE,
                op::RECV_INTO,
                op::RECV_BLOCKING,
                op::ATTACH_SENDER,
                op::ATTACH_RECEIVER,
                op::DROP_SENDER,
                op::OBSERVE,
                op::CLONE_RECEIVER,
            ][usize::from(rng.byte() % 12)];
            let h = rng.byte() % 2;
            s = match code {
                op::RECV_BLOCKING => {
                    let (receiver, lane) = (rng.byte().is_multiple_of(3), rng.byte());
                    let entry = 1 + rng.byte() % (max - 1);
                    let owner =
                        [DEAD, DEAD_PID_RANGE, DEAD_REUSED_PID][usize::from(rng.byte() % 3)];
                    let left =
                        [CLAIMED, CLAIMED, FINISHED, BEFORE_CAS][usize::from(rng.byte() % 4)];
                    s.crash(receiver, entry, owner, lane, left, false)
                }
                op::OBSERVE => s.op(code, 3),
                op::SEND_SLICE | op::RECV_INTO => s.op_arg(code, h, rng.byte() % 4),
                op::CLONE_RECEIVER => s.clone_to(code, 0, h),
                _ => s.op(code, h),
            };
        }
        let names = [
            "hostile-random-crashes-0",
            "hostile-random-crashes-1",
            "hostile-random-crashes-2",
            "hostile-random-crashes-3",
            "hostile-random-crashes-4",
            "hostile-random-crashes-5",
        ];
        v.push((names[i], s.0));
    }
    v
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join("corpus").join("mpmc_ops");
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    let mut stats = MpmcStats::default();
    let (mut count, mut bytes) = (0, 0);
    for (name, data) in model_seeds().into_iter().chain(hostile_seeds()) {
        let one = mpmc_ops(&data);
        if std::env::var_os("SEED_STATS").is_some() {
            println!("{name}: {one:?}");
        }
        stats.absorb(one);
        std::fs::write(dir.join(name), &data).expect("write a seed");
        count += 1;
        bytes += data.len();
    }
    println!("mpmc_ops: {count} seeds, {bytes} bytes; {stats:#?}");
}
